//! Reads a stream's tar entries as hostile input: every header checksummed, only known entry types
//! and pax keys, zero padding, sizes that agree, and the chain's count and digest handed up at the end.

use std::io::{self, BufRead, Read};
use std::ops::Range;

use tar::{EntryType, Header};

use super::chain::Chain;
use super::{padded, pax, sparse, Entry, Kind, Mtime, Seal, BLOCK, STREAM_READ};
use crate::error::{bad_stream, bad_stream_io, Error};

/// Largest pax extended header accepted (paths, links and every xattr of one entry).
const MAX_PAX: u64 = 1 << 20;
/// Largest last entry accepted (it is a small document that vouches for the chain).
const MAX_LAST: u64 = 1 << 20;

/// What [`TarReader::next_entry`] found.
#[derive(Debug)]
pub enum Next {
    /// An entry; read its data with [`TarReader::data`] before the next call (or let it be skipped).
    Entry(Entry),
    /// The last entry (see [`TarReader::new`]): what the chain of entries before it hashed to,
    /// and that entry's data, which vouches for it. The input was read to its end, and held only
    /// zeros after it; checking the seal against `data` is the caller's.
    End { seal: Seal, data: Vec<u8> },
    /// An interim seal (see [`TarReader::with_interim`]): what the chain of entries before it
    /// hashed to, and its data, which vouches for them; the chain goes on after it.
    Interim { seal: Seal, data: Vec<u8> },
}

pub struct TarReader<R: Read> {
    inner: R,
    chain: Chain,
    entries: u64,
    bytes: u64,
    /// The entry whose data is being read, if any.
    current: Option<Open>,
    ended: bool,
    /// Path of the last entry, which ends the chain.
    last: &'static [u8],
    /// Path of the interim seals, which vouch for the chain so far and are not part of it.
    interim: Option<&'static [u8]>,
}

/// Progress through the data area of the current entry.
struct Open {
    path: Vec<u8>,
    left: u64,
    area: u64,
    /// Data read into the chain's buffer and not yet consumed.
    unread: Range<usize>,
}

impl<R: Read> TarReader<R> {
    /// A reader of `inner`, whose entries form one chain ended by the entry at path `last`.
    pub fn new(inner: R, last: &'static [u8]) -> Self {
        let mut chain = Chain::new();
        chain.hold_thread();
        TarReader {
            inner,
            chain,
            entries: 0,
            bytes: 0,
            current: None,
            ended: false,
            last,
            interim: None,
        }
    }

    /// Entries at path `interim` are seals in the middle of the chain, handed up as
    /// [`Next::Interim`].
    pub fn with_interim(mut self, interim: &'static [u8]) -> Self {
        self.interim = Some(interim);
        self
    }

    /// The input, e.g. to change how it is read.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// Hashes on this thread, so that [`TarReader::finish_entry`] returns each entry's data hash
    /// (for listings; otherwise hashing runs on a thread of its own). Call it before any entry
    /// data is read.
    pub fn hash_here(&mut self) {
        self.chain.hash_here();
    }

    /// From here on, hashing may run on a thread of its own (a new reader starts none, so that a
    /// process can still fork after reading the first entries).
    pub fn allow_thread(&mut self) {
        self.chain.allow_thread();
    }

    /// Reads the next entry header, skipping (but still hashing) any unread data of the previous one.
    pub fn next_entry(&mut self) -> anyhow::Result<Next> {
        if self.ended {
            anyhow::bail!("read past the end of the stream");
        }
        self.finish_entry()?;
        let (raw, entry, pax_sparse) = self.read_header()?;
        let unchained = entry.path == self.last || Some(&entry.path[..]) == self.interim;
        if unchained
            && (raw.len() != BLOCK as usize
                || !matches!(entry.kind, Kind::File { sparse: None, .. }))
        {
            return Err(bad_stream(format!(
                "{} entry is malformed",
                String::from_utf8_lossy(&entry.path)
            )));
        }
        if entry.path == self.last {
            let end = self.read_last(entry.data_size())?;
            self.ended = true;
            return Ok(end);
        }
        if unchained {
            let data = self.read_small(&entry.path, entry.data_size())?;
            let seal = Seal {
                entries: self.entries,
                bytes: self.bytes,
                digest: self.chain.digest_so_far()?,
            };
            return Ok(Next::Interim { seal, data });
        }
        self.chain.header(&raw)?;
        let area = entry.data_size();
        self.current = Some(Open {
            path: entry.path.clone(),
            left: area,
            area,
            unread: 0..0,
        });
        match pax_sparse {
            Some(real_size) => self.read_sparse_map(entry, real_size).map(Next::Entry),
            None => Ok(Next::Entry(entry)),
        }
    }

    /// A reader for the current entry's data (for a sparse file: its data segments, in order).
    pub fn data(&mut self) -> Data<'_, R> {
        Data { reader: self }
    }

    /// Ends the current entry: drains unread data, checks the padding, and returns the hash of the
    /// entry's data area (after [`TarReader::hash_here`]; otherwise, or when no entry was open,
    /// None).
    pub fn finish_entry(&mut self) -> anyhow::Result<Option<blake3::Hash>> {
        if self.current.is_none() {
            return Ok(None);
        }
        // Skipped data is still read and hashed.
        loop {
            let n = self.fill()?.len();
            if n == 0 {
                break;
            }
            self.consume(n);
        }
        let Some(open) = self.current.take() else {
            return Ok(None);
        };
        let pad = padded(open.area) - open.area;
        self.read_zeros(pad as usize, "entry padding")?;
        let hash = self.chain.end_entry();
        self.entries += 1;
        self.bytes += open.area;
        Ok(hash)
    }

    /// The current entry's next data bytes, read straight into the chain's buffer; empty at
    /// the end of the entry's data.
    fn fill(&mut self) -> io::Result<&[u8]> {
        let Some(open) = self.current.as_mut() else {
            return Ok(&[]);
        };
        if open.unread.is_empty() && open.left > 0 {
            let room = self
                .chain
                .room(open.left.min(STREAM_READ) as usize)
                .map_err(io::Error::other)?;
            let got = self.inner.read(room)?;
            if got == 0 {
                let path = String::from_utf8_lossy(&open.path);
                return Err(bad_stream_io(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "truncated inside entry {path:?} ({} bytes missing)",
                        open.left
                    ),
                ));
            }
            open.unread = self.chain.filled(got);
            open.left -= got as u64;
        }
        Ok(self.chain.get(open.unread.clone()))
    }

    fn consume(&mut self, n: usize) {
        if let Some(open) = self.current.as_mut() {
            open.unread.start += n.min(open.unread.len());
        }
    }

    fn read_data(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let chunk = self.fill()?;
        let n = chunk.len().min(buf.len());
        buf[..n].copy_from_slice(&chunk[..n]);
        self.consume(n);
        Ok(n)
    }

    /// Reads header blocks up to and including the entry's own header. Returns the raw bytes (for
    /// the chain), the entry, and the real size when the entry is a GNU 1.0 sparse file.
    fn read_header(&mut self) -> anyhow::Result<(Vec<u8>, Entry, Option<u64>)> {
        let mut raw = Vec::with_capacity(BLOCK as usize);
        let mut pax_data: Option<Vec<u8>> = None;
        loop {
            let mut block = [0u8; BLOCK as usize];
            self.read_exact_or(&mut block, "stream truncated: it ends before its trailer")?;
            if block.iter().all(|&b| b == 0) {
                return Err(bad_stream(
                    "stream ends without a trailer (truncated or not a ckpt stream)",
                ));
            }
            let header = checked_header(&block)?;
            raw.extend_from_slice(&block);
            if header.entry_type() != EntryType::XHeader {
                let entry = build_entry(header, pax_data.as_deref()).map_err(as_bad_stream)?;
                return Ok((raw, entry.0, entry.1));
            }
            if pax_data.is_some() {
                return Err(bad_stream("two pax headers in a row"));
            }
            let size = header.size().map_err(|e| as_bad_stream(e.into()))?;
            if size > MAX_PAX {
                return Err(bad_stream(format!(
                    "pax header of {size} bytes is too large (limit {MAX_PAX})"
                )));
            }
            let mut data = vec![0; padded(size) as usize];
            self.read_exact_or(&mut data, "stream truncated inside a pax header")?;
            raw.extend_from_slice(&data);
            if data[size as usize..].iter().any(|&b| b != 0) {
                return Err(bad_stream("pax header padding is not zero"));
            }
            data.truncate(size as usize);
            pax_data = Some(data);
        }
    }

    fn read_sparse_map(&mut self, mut entry: Entry, real_size: u64) -> anyhow::Result<Entry> {
        let mut map = Vec::new();
        // Lines seen so far, and lines the map needs (known once its first line, the count, is
        // in): the map is parsed once it is whole, so reading it stays linear in its size.
        let (mut lines, mut need) = (0usize, None::<usize>);
        let (sparse, used) = loop {
            let mut block = [0u8; BLOCK as usize];
            let mut filled = 0;
            while filled < block.len() {
                let got = self.read_data(&mut block[filled..])?;
                if got == 0 {
                    return Err(bad_stream("sparse map is larger than its entry"));
                }
                filled += got;
            }
            map.extend_from_slice(&block);
            lines += block.iter().filter(|&&b| b == b'\n').count();
            if need.is_none() && lines > 0 {
                need = sparse::needed_lines(&map);
            }
            if need.is_some_and(|need| lines < need) && map.len() <= sparse::MAX_MAP_BYTES {
                continue;
            }
            if let Some(found) = sparse::decode_map(&map, real_size)? {
                break found;
            }
        };
        let data = entry.data_size() - used as u64;
        if sparse::data_len(&sparse) != data {
            return Err(bad_stream(
                "sparse map does not match the entry's data size",
            ));
        }
        entry.kind = Kind::File {
            size: data,
            sparse: Some(sparse),
        };
        Ok(entry)
    }

    /// The data of an entry outside the chain (a seal, the trailer), and its padding.
    fn read_small(&mut self, path: &[u8], size: u64) -> anyhow::Result<Vec<u8>> {
        let shown = String::from_utf8_lossy(path).into_owned();
        if size > MAX_LAST {
            return Err(bad_stream(format!("{shown} is too large")));
        }
        let mut data = vec![0; size as usize];
        self.read_exact_or(&mut data, &format!("stream truncated inside its {shown}"))?;
        self.read_zeros((padded(size) - size) as usize, &format!("{shown} padding"))?;
        Ok(data)
    }

    fn read_last(&mut self, size: u64) -> anyhow::Result<Next> {
        let data = self.read_small(self.last, size)?;
        let seal = Seal {
            entries: self.entries,
            bytes: self.bytes,
            digest: std::mem::take(&mut self.chain).finish()?,
        };
        self.read_end()?;
        Ok(Next::End { seal, data })
    }

    /// After the last entry: at least two zero blocks, then only zeros up to the true end of input.
    fn read_end(&mut self) -> anyhow::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        loop {
            let got = match self.inner.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(anyhow::Error::new(e).context("reading the end of the stream"))
                }
            };
            if buf[..got].iter().any(|&b| b != 0) {
                return Err(bad_stream("data after the trailer: the stream was altered"));
            }
            total += got as u64;
        }
        if total < 2 * BLOCK {
            return Err(bad_stream(
                "stream truncated after its trailer (end-of-archive blocks missing)",
            ));
        }
        Ok(())
    }

    fn read_zeros(&mut self, n: usize, what: &str) -> anyhow::Result<()> {
        let mut pad = [0u8; BLOCK as usize];
        self.read_exact_or(&mut pad[..n], &format!("stream truncated in {what}"))?;
        if pad[..n].iter().any(|&b| b != 0) {
            return Err(bad_stream(format!(
                "{what} is not zero: the stream was altered"
            )));
        }
        Ok(())
    }

    fn read_exact_or(&mut self, buf: &mut [u8], truncated: &str) -> anyhow::Result<()> {
        match self.inner.read_exact(buf) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(bad_stream(truncated)),
            Err(e) => Err(anyhow::Error::new(e).context("reading the stream")),
        }
    }
}

/// The data of the current entry.
pub struct Data<'a, R: Read> {
    reader: &'a mut TarReader<R>,
}

impl<R: Read> Read for Data<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader.read_data(buf)
    }
}

/// Without a copy: the bytes are borrowed from the buffer the chain hashes.
impl<R: Read> BufRead for Data<'_, R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.reader.fill()
    }

    fn consume(&mut self, n: usize) {
        self.reader.consume(n);
    }
}

/// The `tar` crate reports malformed numeric header fields as I/O errors: in a stream they mean
/// a bad stream, like every other malformed header.
fn as_bad_stream(err: anyhow::Error) -> anyhow::Error {
    if err.downcast_ref::<Error>().is_some() {
        err
    } else {
        bad_stream(format!("malformed tar header: {err}"))
    }
}

/// Checks a header block's checksum and ustar magic.
fn checked_header(block: &[u8; BLOCK as usize]) -> anyhow::Result<&Header> {
    let header = Header::from_byte_slice(block);
    let mut expect = header.clone();
    expect.set_cksum();
    if header.as_old().cksum != expect.as_old().cksum {
        return Err(bad_stream(
            "tar header checksum mismatch: the stream is corrupted",
        ));
    }
    if header.as_ustar().is_none() {
        return Err(bad_stream(
            "tar header is not POSIX ustar: not a ckpt stream",
        ));
    }
    Ok(header)
}

/// Pax values that apply to the next entry.
#[derive(Default)]
struct PaxFields<'a> {
    path: Option<&'a [u8]>,
    linkpath: Option<&'a [u8]>,
    size: Option<u64>,
    uid: Option<u64>,
    gid: Option<u64>,
    mtime: Option<(i64, u32)>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    sparse_name: Option<&'a [u8]>,
    sparse_real: Option<u64>,
    sparse_version: (Option<&'a [u8]>, Option<&'a [u8]>),
}

fn parse_pax(data: &[u8]) -> anyhow::Result<PaxFields<'_>> {
    let mut f = PaxFields::default();
    let mut seen: Vec<&[u8]> = Vec::new();
    for (key, value) in pax::parse_records(data)? {
        if seen.contains(&key) {
            return Err(bad_stream(format!(
                "pax key {:?} given twice",
                String::from_utf8_lossy(key)
            )));
        }
        seen.push(key);
        match key {
            b"path" => f.path = Some(value),
            b"linkpath" => f.linkpath = Some(value),
            b"size" => f.size = Some(pax::parse_u64("size", value)?),
            b"uid" => f.uid = Some(pax::parse_u64("uid", value)?),
            b"gid" => f.gid = Some(pax::parse_u64("gid", value)?),
            b"mtime" => f.mtime = Some(pax::parse_time(value)?),
            b"atime" | b"ctime" => {}
            b"GNU.sparse.major" => f.sparse_version.0 = Some(value),
            b"GNU.sparse.minor" => f.sparse_version.1 = Some(value),
            b"GNU.sparse.name" => f.sparse_name = Some(value),
            b"GNU.sparse.realsize" => f.sparse_real = Some(pax::parse_u64("realsize", value)?),
            _ => match key.strip_prefix(b"SCHILY.xattr.") {
                Some(name) if !name.is_empty() => f.xattrs.push((name.to_vec(), value.to_vec())),
                _ => {
                    return Err(bad_stream(format!(
                        "unsupported pax key {:?}",
                        String::from_utf8_lossy(key)
                    )))
                }
            },
        }
    }
    Ok(f)
}

/// Turns a header (and the pax fields before it) into an entry, refusing ambiguous combinations.
fn build_entry(header: &Header, pax_data: Option<&[u8]>) -> anyhow::Result<(Entry, Option<u64>)> {
    let pax = match pax_data {
        Some(data) => parse_pax(data)?,
        None => PaxFields::default(),
    };
    let supported = [
        EntryType::Regular,
        EntryType::Directory,
        EntryType::Symlink,
        EntryType::Link,
        EntryType::Char,
        EntryType::Block,
        EntryType::Fifo,
    ];
    let entry_type = header.entry_type();
    if !supported.contains(&entry_type) {
        return Err(bad_stream(format!(
            "unsupported tar entry type {:?}",
            entry_type.as_byte() as char
        )));
    }
    let ustar_size = header.size()?;
    let size = match pax.size {
        Some(size) if ustar_size != 0 && ustar_size != size => {
            return Err(bad_stream("pax size and ustar size disagree"))
        }
        Some(size) => size,
        None => ustar_size,
    };
    let sparse = match pax.sparse_version {
        (None, None) if pax.sparse_name.is_none() && pax.sparse_real.is_none() => None,
        (Some(b"1"), Some(b"0")) => {
            let real = pax
                .sparse_real
                .ok_or_else(|| bad_stream("sparse file without realsize"))?;
            if pax.sparse_name.is_none() || pax.path.is_some() {
                return Err(bad_stream(
                    "sparse file needs GNU.sparse.name and no pax path",
                ));
            }
            Some(real)
        }
        _ => return Err(bad_stream("only GNU sparse format 1.0 is supported")),
    };
    let mut path = pax.sparse_name.or(pax.path).map(<[u8]>::to_vec);
    let path = path
        .take()
        .unwrap_or_else(|| header.path_bytes().into_owned());
    let link = pax
        .linkpath
        .map(<[u8]>::to_vec)
        .or_else(|| header.link_name_bytes().map(|l| l.into_owned()));
    let link = || {
        link.clone()
            .filter(|l| !l.is_empty())
            .ok_or_else(|| bad_stream("link entry without a target"))
    };
    let device = || -> anyhow::Result<(u32, u32)> {
        let major = header
            .device_major()?
            .ok_or_else(|| bad_stream("device entry without a major"))?;
        let minor = header
            .device_minor()?
            .ok_or_else(|| bad_stream("device entry without a minor"))?;
        Ok((major, minor))
    };
    let kind = match entry_type {
        EntryType::Regular => Kind::File { size, sparse: None },
        EntryType::Directory => Kind::Dir,
        EntryType::Symlink => Kind::Symlink(link()?),
        EntryType::Link => Kind::Hardlink(link()?),
        EntryType::Char => device().map(|(major, minor)| Kind::Char { major, minor })?,
        EntryType::Block => device().map(|(major, minor)| Kind::Block { major, minor })?,
        _fifo => Kind::Fifo,
    };
    if sparse.is_some() && !matches!(kind, Kind::File { .. }) {
        return Err(bad_stream("sparse header on a non-file entry"));
    }
    if !matches!(kind, Kind::File { .. }) && size != 0 {
        return Err(bad_stream("non-file entry carries data"));
    }
    let path = match (&kind, path.strip_suffix(b"/")) {
        (Kind::Dir, Some(stripped)) => stripped.to_vec(),
        (_, Some(_)) => return Err(bad_stream("non-directory entry path ends with '/'")),
        _ => path,
    };
    let (sec, nsec) = match pax.mtime {
        Some(t) => t,
        None => (header.mtime()? as i64, 0),
    };
    let entry = Entry {
        path,
        kind,
        mode: header.mode()? & 0o7777,
        uid: pax.uid.map_or_else(|| header.uid(), Ok)?,
        gid: pax.gid.map_or_else(|| header.gid(), Ok)?,
        mtime: Mtime { sec, nsec },
        xattrs: pax.xattrs,
    };
    Ok((entry, sparse))
}
