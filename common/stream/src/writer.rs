//! Writes a ckpt stream over the tar layer: the manifest first, the bundle trees, the sealed
//! trailer last.

use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use anyhow::Context;
use walkdir::WalkDir;

use crate::auth::Key;
use crate::format::{
    Copied, Manifest, Mark, MemoryRange, Trailer, COPIED_PATH, MANIFEST_PATH, SEAL_PATH,
    TRAILER_PATH,
};
use crate::fsmeta::{self, LinkTracker};
use crate::wire::{core_to_spare, Entry, Kind, Mtime, TarWriter};

/// Writes a stream: construct it (writes the manifest), add trees, then [`StreamWriter::finish`].
pub struct StreamWriter<W: Write> {
    tar: TarWriter<W>,
    links: LinkTracker,
    key: Option<Key>,
}

impl<W: Write> StreamWriter<W> {
    /// Starts a stream; with a `key`, its trailer carries a MAC. `busy`: threads `out` keeps
    /// busy (zstd's workers), which decides where hashing runs.
    pub fn new(
        out: W,
        manifest: &Manifest,
        key: Option<Key>,
        busy: usize,
    ) -> anyhow::Result<StreamWriter<W>> {
        let mut tar = TarWriter::new(out);
        if !core_to_spare(busy) {
            tar.hash_here();
        }
        let mut stream = StreamWriter {
            tar,
            links: LinkTracker::default(),
            key,
        };
        stream
            .append_json(MANIFEST_PATH, manifest)
            .context("writing the manifest")?;
        Ok(stream)
    }

    /// Ends the live copy of the rootfs: later `rootfs/` entries replace or delete earlier ones.
    pub fn end_live_copy(&mut self, copied: &Copied) -> anyhow::Result<()> {
        // Hard links after this point only to entries sent after it.
        self.links = LinkTracker::default();
        self.append_json(COPIED_PATH, copied)
            .context("writing copied.json")
    }

    fn append_json<T: serde::Serialize>(&mut self, path: &str, value: &T) -> anyhow::Result<()> {
        let mut json = serde_json::to_vec_pretty(value)?;
        json.push(b'\n');
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let entry = Entry {
            path: path.as_bytes().to_vec(),
            kind: Kind::File {
                size: json.len() as u64,
                sparse: None,
            },
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: Mtime {
                sec: now.as_secs() as i64,
                nsec: 0,
            },
            xattrs: Vec::new(),
        };
        self.tar.append(&entry, &mut &json[..])?;
        Ok(())
    }

    /// Streams the directory `dir` as bundle root `root` (`container`, `rootfs` or `images`),
    /// parents before children, in name order, without crossing into other filesystems. Paths
    /// in `skip` (and everything under them) are left out.
    pub fn add_tree(&mut self, root: &str, dir: &Path, skip: &[&Path]) -> anyhow::Result<()> {
        let mut it = tree_walk(dir).into_iter();
        while let Some(item) = it.next() {
            let item = item.with_context(|| format!("walking {}", dir.display()))?;
            let path = item.path();
            if skip.contains(&path) {
                if item.file_type().is_dir() {
                    it.skip_current_dir();
                }
                continue;
            }
            // A unix socket file is an address, not data: like tar, leave it out (CRIU binds the
            // sockets it restores again, which creates their files).
            if item.file_type().is_socket() {
                continue;
            }
            self.add_path(path, bundle_path(root, rel_path(dir, path)))?;
        }
        Ok(())
    }

    /// Like [`StreamWriter::add_path`] for a file that may change meanwhile: returns false if it
    /// vanished before its header was written, and pads its data with zeros if it shrinks.
    pub fn add_live_path(&mut self, path: &Path, bundle_path: Vec<u8>) -> anyhow::Result<bool> {
        let entry = match fsmeta::describe(path, bundle_path.clone(), &mut self.links) {
            Ok(entry) => entry,
            Err(e) if vanished(&e) => {
                self.links.forget(&bundle_path);
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        let data: Box<dyn Read> = match entry.kind {
            Kind::File { .. } => match fsmeta::open_data(path, &entry) {
                Ok(data) => data,
                // Gone since its header was made: zeros now, a whiteout after the freeze.
                Err(e) if vanished(&e) => Box::new(std::io::empty()),
                Err(e) => return Err(e),
            },
            _ => Box::new(std::io::empty()),
        };
        self.tar
            .append(&entry, &mut data.chain(std::io::repeat(0)))
            .with_context(|| format!("streaming {}", path.display()))?;
        Ok(true)
    }

    /// Streams one file, directory, link or node found at `path` as entry `bundle_path`.
    pub fn add_path(&mut self, path: &Path, bundle_path: Vec<u8>) -> anyhow::Result<()> {
        let entry = fsmeta::describe(path, bundle_path, &mut self.links)?;
        self.append(path, &entry)
    }

    /// Like [`StreamWriter::add_path`], reading a regular file's data from `data`, the file at
    /// `path` already open, instead of opening it (which can have side effects, such as breaking a
    /// lease). Reads it with positional reads only: `data` may share its offset with another process.
    pub fn add_path_from(
        &mut self,
        path: &Path,
        bundle_path: Vec<u8>,
        data: std::fs::File,
    ) -> anyhow::Result<()> {
        let entry = fsmeta::describe_with(path, bundle_path, &mut self.links, Some(&data))?;
        let mut data: Box<dyn Read> = match entry.kind {
            Kind::File { .. } => fsmeta::read_data_at(data, &entry),
            _ => Box::new(std::io::empty()),
        };
        self.tar
            .append(&entry, &mut data)
            .with_context(|| format!("streaming {}", path.display()))?;
        Ok(())
    }

    /// Streams `entry` with the data of the file at `path` (none unless it is a regular file).
    pub fn append(&mut self, path: &Path, entry: &Entry) -> anyhow::Result<()> {
        let mut data: Box<dyn Read> = match entry.kind {
            Kind::File { .. } => fsmeta::open_data(path, entry)?,
            _ => Box::new(std::io::empty()),
        };
        self.tar
            .append(entry, &mut data)
            .with_context(|| format!("streaming {}", path.display()))?;
        Ok(())
    }

    /// Adds `size` bytes (whole pages) of memory at `range`, read from `data` (lazy streams).
    pub fn add_memory(
        &mut self,
        range: MemoryRange,
        size: u64,
        data: &mut dyn Read,
    ) -> anyhow::Result<()> {
        let entry = Entry {
            path: range.path().into_bytes(),
            kind: Kind::File { size, sparse: None },
            mode: 0o600,
            uid: 0,
            gid: 0,
            mtime: Mtime::default(),
            xattrs: Vec::new(),
        };
        self.tar
            .append(&entry, data)
            .with_context(|| format!("streaming {}", range.path()))
    }

    /// Vouches for everything written so far with a `seal.json` entry (MAC'd with the key, like
    /// the trailer) and flushes it out: a receiver of a lazy stream uses nothing before its seal.
    pub fn seal(&mut self) -> anyhow::Result<Trailer> {
        let key = self.key.clone();
        let mut sealed = None;
        self.tar.interim(|seal| {
            let mark = Trailer::marking(Mark::Seal, seal, key.as_ref());
            let json = serde_json::to_vec(&mark)?;
            sealed = Some(mark);
            Ok((SEAL_PATH.as_bytes().to_vec(), json))
        })?;
        sealed.context("the seal was not written")
    }

    /// Sum of the data areas written so far.
    pub fn bytes(&self) -> u64 {
        self.tar.bytes()
    }

    /// Pushes what was written so far out to the receiver.
    pub fn flush(&mut self) -> anyhow::Result<()> {
        self.tar.flush().context("writing the stream")
    }

    /// Seals the stream with its trailer and flushes it.
    pub fn finish(self) -> anyhow::Result<(W, Trailer)> {
        seal(self.tar, self.key.as_ref())
    }
}

/// The walk every tree is streamed in: parents before children, in name order, not following
/// symlinks nor crossing into other filesystems.
pub fn tree_walk(dir: &Path) -> WalkDir {
    WalkDir::new(dir)
        .sort_by_file_name()
        .same_file_system(true)
        .follow_links(false)
}

/// `path` relative to `dir`, the directory it was found under, as bytes.
pub fn rel_path<'p>(dir: &Path, path: &'p Path) -> &'p [u8] {
    path.strip_prefix(dir)
        .unwrap_or(path)
        .as_os_str()
        .as_bytes()
}

/// `root/rel` (or `root` for the root itself).
pub fn bundle_path(root: &str, rel: &[u8]) -> Vec<u8> {
    let mut path = root.as_bytes().to_vec();
    if !rel.is_empty() {
        path.push(b'/');
        path.extend_from_slice(rel);
    }
    path
}

/// Whether an error says a file is no longer there.
fn vanished(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound)
    })
}

/// Ends a tar stream with its trailer (a MAC in it when `key` is given), the end-of-archive blocks,
/// and a flush: what makes entries written by any means a complete ckpt stream.
pub fn seal<W: Write>(tar: TarWriter<W>, key: Option<&Key>) -> anyhow::Result<(W, Trailer)> {
    let mut trailer = None;
    let (out, _) = tar.finish(|seal| {
        let sealed = Trailer::new(seal, key);
        let json = serde_json::to_vec(&sealed)?;
        trailer = Some(sealed);
        Ok((TRAILER_PATH.as_bytes().to_vec(), json))
    })?;
    let trailer = trailer.context("the trailer was not written")?;
    Ok((out, trailer))
}
