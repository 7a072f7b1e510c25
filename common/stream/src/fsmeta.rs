//! Reads what the stream preserves from the filesystem: type, owner, mode, nanosecond mtime,
//! xattrs, device numbers, hard links and sparse holes, and opens a file's data for streaming.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::Path;

use anyhow::Context;
use rustix::fs::SeekFrom;

use crate::wire::{sparse, Entry, Kind, Mtime, Sparse};

/// Remembers the first bundle path of every multiply-linked inode, so later links become hard links.
#[derive(Default)]
pub struct LinkTracker {
    seen: HashMap<(u64, u64), Vec<u8>>,
}

impl LinkTracker {
    /// Forgets `bundle_path` as the first link of its inode (it was not streamed after all).
    pub fn forget(&mut self, bundle_path: &[u8]) {
        self.seen.retain(|_, first| first != bundle_path);
    }
}

/// Describes the file at `path` as a stream entry named `bundle_path`.
pub fn describe(
    path: &Path,
    bundle_path: Vec<u8>,
    links: &mut LinkTracker,
) -> anyhow::Result<Entry> {
    describe_with(path, bundle_path, links, None)
}

/// [`describe`], looking for the holes of a regular file in `data` (already open, e.g. one that
/// must not be opened again) instead of opening `path`.
pub fn describe_with(
    path: &Path,
    bundle_path: Vec<u8>,
    links: &mut LinkTracker,
    data: Option<&File>,
) -> anyhow::Result<Entry> {
    let meta =
        std::fs::symlink_metadata(path).with_context(|| format!("reading {}", path.display()))?;
    let ft = meta.file_type();
    let kind = if ft.is_dir() {
        Kind::Dir
    } else if ft.is_symlink() {
        let target =
            std::fs::read_link(path).with_context(|| format!("reading link {}", path.display()))?;
        Kind::Symlink(target.as_os_str().as_bytes().to_vec())
    } else if let Some(first) = linked_before(&meta, &bundle_path, links) {
        Kind::Hardlink(first)
    } else if ft.is_file() {
        file_kind(path, &meta, data)?
    } else if ft.is_char_device() {
        let (major, minor) = device(&meta);
        Kind::Char { major, minor }
    } else if ft.is_block_device() {
        let (major, minor) = device(&meta);
        Kind::Block { major, minor }
    } else if ft.is_fifo() {
        Kind::Fifo
    } else {
        anyhow::bail!(
            "{} is a socket or an unknown file type, which a checkpoint cannot carry",
            path.display()
        );
    };
    Ok(Entry {
        path: bundle_path,
        kind,
        mode: meta.mode() & 0o7777,
        uid: meta.uid().into(),
        gid: meta.gid().into(),
        mtime: Mtime {
            sec: meta.mtime(),
            nsec: meta.mtime_nsec() as u32,
        },
        xattrs: read_xattrs(path)
            .with_context(|| format!("reading xattrs of {}", path.display()))?,
    })
}

fn linked_before(
    meta: &std::fs::Metadata,
    bundle_path: &[u8],
    links: &mut LinkTracker,
) -> Option<Vec<u8>> {
    if meta.is_dir() || meta.nlink() < 2 {
        return None;
    }
    let key = (meta.dev(), meta.ino());
    if let Some(first) = links.seen.get(&key) {
        return Some(first.clone());
    }
    links.seen.insert(key, bundle_path.to_vec());
    None
}

fn device(meta: &std::fs::Metadata) -> (u32, u32) {
    let rdev = meta.rdev();
    (rustix::fs::major(rdev), rustix::fs::minor(rdev))
}

/// A regular file, with its data segments when it has holes.
fn file_kind(path: &Path, meta: &std::fs::Metadata, data: Option<&File>) -> anyhow::Result<Kind> {
    let size = meta.len();
    if meta.blocks() * 512 >= size {
        return Ok(Kind::File { size, sparse: None });
    }
    let opened;
    let file = match data {
        Some(file) => file,
        None => {
            opened = open_noatime(path).with_context(|| format!("opening {}", path.display()))?;
            &opened
        }
    };
    let segments = data_segments(file, size)?;
    if segments.len() > sparse::MAX_SEGMENTS {
        return Ok(Kind::File { size, sparse: None });
    }
    let map = Sparse {
        real_size: size,
        segments,
    };
    Ok(Kind::File {
        size: sparse::data_len(&map),
        sparse: Some(map),
    })
}

/// The data segments of a file, found with SEEK_DATA/SEEK_HOLE.
fn data_segments(file: &File, size: u64) -> anyhow::Result<Vec<(u64, u64)>> {
    let mut segments = Vec::new();
    let mut pos = 0;
    while pos < size {
        let start = match rustix::fs::seek(file, SeekFrom::Data(pos)) {
            Ok(start) => start,
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => return Err(io::Error::from(e)).context("finding data segments"),
        };
        let end = rustix::fs::seek(file, SeekFrom::Hole(start))
            .map_err(io::Error::from)?
            .min(size);
        segments.push((start, end - start));
        pos = end;
        if segments.len() > sparse::MAX_SEGMENTS {
            break;
        }
    }
    Ok(segments)
}

fn read_xattrs(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut names = vec![0u8; 4096];
    let len = loop {
        match rustix::fs::llistxattr(path, &mut names) {
            Ok(len) => break len,
            Err(rustix::io::Errno::RANGE) => names.resize(names.len() * 4, 0),
            Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        }
    };
    let mut xattrs = Vec::new();
    for name in names[..len].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let mut value = vec![0u8; 256];
        loop {
            match rustix::fs::lgetxattr(path, name, &mut value) {
                Ok(n) => {
                    value.truncate(n);
                    break;
                }
                Err(rustix::io::Errno::RANGE) => value.resize(value.len() * 16, 0),
                Err(e) => return Err(e.into()),
            }
        }
        xattrs.push((name.to_vec(), value));
    }
    xattrs.sort();
    Ok(xattrs)
}

/// Opens a file for reading without updating its access time (O_NOATIME, which needs the file's
/// owner or CAP_FOWNER: without them, an ordinary open).
pub fn open_noatime(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let noatime = rustix::fs::OFlags::NOATIME.bits() as i32;
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(noatime)
        .open(path)
    {
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::PERM.raw_os_error()) => {
            File::open(path)
        }
        opened => opened,
    }
}

/// Opens an entry's data: the whole file, or only its data segments when it is sparse. The read
/// leaves the file's access time alone ([`open_noatime`]).
pub fn open_data(path: &Path, entry: &Entry) -> anyhow::Result<Box<dyn Read>> {
    let file = open_noatime(path).with_context(|| format!("opening {}", path.display()))?;
    Ok(read_data(file, entry))
}

/// Reads an entry's data from `file` with positional reads only, so that a descriptor shared with
/// another process (its file offset too) can be read without moving its offset.
pub fn read_data_at(file: File, entry: &Entry) -> Box<dyn Read> {
    let segments = match &entry.kind {
        Kind::File {
            sparse: Some(map), ..
        } => map.segments.clone(),
        Kind::File { size, .. } => vec![(0, *size)],
        _ => Vec::new(),
    };
    Box::new(Segments {
        file,
        segments,
        index: 0,
        done: 0,
    })
}

fn read_data(file: File, entry: &Entry) -> Box<dyn Read> {
    match &entry.kind {
        Kind::File {
            sparse: Some(map), ..
        } => Box::new(Segments {
            file,
            segments: map.segments.clone(),
            index: 0,
            done: 0,
        }),
        _ => Box::new(file),
    }
}

/// Reads the data segments of a sparse file, one after the other.
struct Segments {
    file: File,
    segments: Vec<(u64, u64)>,
    index: usize,
    done: u64,
}

impl Read for Segments {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while let Some(&(offset, len)) = self.segments.get(self.index) {
            if self.done == len {
                self.index += 1;
                self.done = 0;
                continue;
            }
            let want = (len - self.done).min(buf.len() as u64) as usize;
            let got = self.file.read_at(&mut buf[..want], offset + self.done)?;
            self.done += got as u64;
            return Ok(got);
        }
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fs::{AtFlags, Timespec, Timestamps, CWD};

    #[test]
    fn reading_data_leaves_the_atime_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"data").unwrap();
        let old = Timespec {
            tv_sec: 1_000_000_000,
            tv_nsec: 0,
        };
        let times = Timestamps {
            last_access: old,
            last_modification: old,
        };
        rustix::fs::utimensat(CWD, &path, &times, AtFlags::empty()).unwrap();
        let entry = describe(&path, b"f".to_vec(), &mut LinkTracker::default()).unwrap();
        let mut data = Vec::new();
        open_data(&path, &entry)
            .unwrap()
            .read_to_end(&mut data)
            .unwrap();
        assert_eq!(data, b"data");
        let atime = std::fs::metadata(&path).unwrap().atime();
        assert_eq!(atime, 1_000_000_000, "the read updated the atime");
    }
}
