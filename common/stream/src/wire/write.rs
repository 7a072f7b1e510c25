//! Writes entries as pax tar, hashing every header byte and every content byte into the entry chain
//! that the trailer seals.

use std::io::{Read, Write};

use anyhow::Context;
use tar::{EntryType, Header};

use super::chain::Chain;
use super::{padded, pax, sparse, Entry, Kind, Seal, BLOCK, READ_CHUNK};

/// Largest value an 11-digit octal ustar field holds.
const OCTAL_11: u64 = 0o77777777777;
/// Largest value a 7-digit octal ustar field holds.
const OCTAL_7: u64 = 0o7777777;

/// Streams entries out as tar. Call [`TarWriter::finish`]: dropping it writes no trailer, which a
/// reader rejects, so a stream cut short can never pass for a complete one.
pub struct TarWriter<W: Write> {
    out: W,
    chain: Chain,
    entries: u64,
    bytes: u64,
}

impl<W: Write> TarWriter<W> {
    pub fn new(out: W) -> Self {
        TarWriter {
            out,
            chain: Chain::new(),
            entries: 0,
            bytes: 0,
        }
    }

    /// Hashes on the calling thread instead of a thread of its own (see [`super::core_to_spare`]).
    pub fn hash_here(&mut self) {
        self.chain.hash_here();
    }

    /// Writes one entry. `data` must yield at least `entry.data_size()` bytes (for a sparse file: its
    /// data segments, concatenated). The data is read straight into the chain's buffers. After an
    /// error the stream is broken: drop the writer.
    pub fn append(&mut self, entry: &Entry, data: &mut dyn Read) -> anyhow::Result<()> {
        let map = match &entry.kind {
            Kind::File {
                sparse: Some(s), ..
            } => sparse::encode_map(s),
            _ => Vec::new(),
        };
        let area = map.len() as u64 + entry.data_size();
        let headers = header_blocks(entry, area)?;
        self.out.write_all(&headers)?;
        self.chain.header(&headers)?;

        self.out.write_all(&map)?;
        self.chain.data(&map)?;
        let mut left = entry.data_size();
        while left > 0 {
            let room = self.chain.room(left.min(READ_CHUNK) as usize)?;
            let got = data.read(room)?;
            if got == 0 {
                anyhow::bail!("file shrank while being read ({left} bytes missing)");
            }
            let at = self.chain.filled(got);
            self.out.write_all(self.chain.get(at))?;
            left -= got as u64;
        }
        self.write_padding(area)?;
        self.chain.end_entry();
        self.entries += 1;
        self.bytes += area;
        Ok(())
    }

    /// Sum of the data areas written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Pushes everything written so far through every layer below (compression included).
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }

    /// Writes an entry that vouches for the chain so far and is not part of it (a seal in the
    /// middle of the stream): `mark` gets the [`Seal`] of the entries before it and returns that
    /// entry's path and data. Flushes, so that the receiver can check it now.
    pub fn interim(
        &mut self,
        mark: impl FnOnce(&Seal) -> anyhow::Result<(Vec<u8>, Vec<u8>)>,
    ) -> anyhow::Result<Seal> {
        let seal = Seal {
            entries: self.entries,
            bytes: self.bytes,
            digest: self.chain.digest_so_far()?,
        };
        let (path, data) = mark(&seal)?;
        self.write_unchained(&path, &data)?;
        self.out.flush().context("flushing the stream")?;
        Ok(seal)
    }

    /// Ends the entry chain and writes the last entry, which vouches for it and is not part of
    /// it: `last` gets the [`Seal`] and returns that entry's path and data. Then the end-of-archive
    /// blocks, a flush, and the output back.
    pub fn finish(
        mut self,
        last: impl FnOnce(&Seal) -> anyhow::Result<(Vec<u8>, Vec<u8>)>,
    ) -> anyhow::Result<(W, Seal)> {
        let seal = Seal {
            entries: self.entries,
            bytes: self.bytes,
            digest: std::mem::take(&mut self.chain).finish()?,
        };
        let (path, data) = last(&seal)?;
        self.write_unchained(&path, &data)?;
        self.out.write_all(&[0; 2 * BLOCK as usize])?;
        self.out.flush().context("flushing the stream")?;
        Ok((self.out, seal))
    }

    /// A small regular file entry outside the chain (a seal or the trailer).
    fn write_unchained(&mut self, path: &[u8], data: &[u8]) -> std::io::Result<()> {
        let header = simple_header(path, EntryType::Regular, data.len() as u64);
        self.out.write_all(header.as_bytes())?;
        self.out.write_all(data)?;
        self.write_padding(data.len() as u64)
    }

    fn write_padding(&mut self, len: u64) -> std::io::Result<()> {
        let pad = (padded(len) - len) as usize;
        self.out.write_all(&[0; BLOCK as usize][..pad])
    }
}

/// Builds the pax header (when needed) and the ustar header of an entry.
fn header_blocks(entry: &Entry, area: u64) -> anyhow::Result<Vec<u8>> {
    let mut records = Vec::new();
    let mut header = Header::new_ustar();

    let mut name = entry.path.clone();
    if entry.kind == Kind::Dir {
        name.push(b'/');
    }
    if let Kind::File {
        sparse: Some(s), ..
    } = &entry.kind
    {
        pax::push_record(&mut records, b"GNU.sparse.major", b"1");
        pax::push_record(&mut records, b"GNU.sparse.minor", b"0");
        pax::push_record(&mut records, b"GNU.sparse.name", &name);
        pax::push_record(
            &mut records,
            b"GNU.sparse.realsize",
            s.real_size.to_string().as_bytes(),
        );
        let base = name.rsplit(|&b| b == b'/').next().unwrap_or_default();
        name = [&b"GNUSparseFile.0/"[..], base].concat();
    }
    if name.len() > 100 {
        pax::push_record(&mut records, b"path", &name);
    }
    set_name(&mut header, &name);

    let link = match &entry.kind {
        Kind::Symlink(target) | Kind::Hardlink(target) => Some(target),
        _ => None,
    };
    if let Some(link) = link {
        if link.len() > 100 {
            pax::push_record(&mut records, b"linkpath", link);
        }
        let field = &mut header.as_old_mut().linkname;
        let n = link.len().min(field.len());
        field[..n].copy_from_slice(&link[..n]);
    }

    header.set_mode(entry.mode & 0o7777);
    for (key, value, set) in [
        (
            &b"uid"[..],
            entry.uid,
            Header::set_uid as fn(&mut Header, u64),
        ),
        (b"gid", entry.gid, Header::set_gid),
    ] {
        if value > OCTAL_7 {
            pax::push_record(&mut records, key, value.to_string().as_bytes());
            set(&mut header, 0);
        } else {
            set(&mut header, value);
        }
    }
    let Entry { mtime, .. } = entry;
    if mtime.nsec != 0 || mtime.sec < 0 || mtime.sec as u64 > OCTAL_11 {
        pax::push_record(
            &mut records,
            b"mtime",
            pax::format_time(mtime.sec, mtime.nsec).as_bytes(),
        );
    }
    header.set_mtime(u64::try_from(mtime.sec).unwrap_or(0).min(OCTAL_11));
    if area > OCTAL_11 {
        pax::push_record(&mut records, b"size", area.to_string().as_bytes());
        header.set_size(0);
    } else {
        header.set_size(area);
    }
    for (key, value) in &entry.xattrs {
        pax::push_record(&mut records, &[&b"SCHILY.xattr."[..], key].concat(), value);
    }

    header.set_entry_type(match entry.kind {
        Kind::File { .. } => EntryType::Regular,
        Kind::Dir => EntryType::Directory,
        Kind::Symlink(_) => EntryType::Symlink,
        Kind::Hardlink(_) => EntryType::Link,
        Kind::Char { .. } => EntryType::Char,
        Kind::Block { .. } => EntryType::Block,
        Kind::Fifo => EntryType::Fifo,
    });
    if let Kind::Char { major, minor } | Kind::Block { major, minor } = entry.kind {
        header.set_device_major(major)?;
        header.set_device_minor(minor)?;
    }
    header.set_cksum();

    let mut out = Vec::with_capacity(3 * BLOCK as usize + records.len());
    if !records.is_empty() {
        let pax_header = simple_header(b"././@PaxHeader", EntryType::XHeader, records.len() as u64);
        out.extend_from_slice(pax_header.as_bytes());
        let len = records.len() as u64;
        out.extend_from_slice(&records);
        out.resize(out.len() + (padded(len) - len) as usize, 0);
    }
    out.extend_from_slice(header.as_bytes());
    Ok(out)
}

/// A root-owned 0644 header with a zero mtime, for the pax headers and the trailer.
fn simple_header(name: &[u8], kind: EntryType, size: u64) -> Header {
    let mut header = Header::new_ustar();
    set_name(&mut header, name);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_size(size);
    header.set_entry_type(kind);
    header.set_cksum();
    header
}

/// Puts (the first 100 bytes of) `name` into the ustar name field; longer names also go in pax.
fn set_name(header: &mut Header, name: &[u8]) {
    let field = &mut header.as_old_mut().name;
    let n = name.len().min(field.len());
    field[..n].copy_from_slice(&name[..n]);
}
