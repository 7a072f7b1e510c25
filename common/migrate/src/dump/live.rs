//! Live streaming of a rootfs: copy it while the container still runs, then, once it is frozen,
//! send only what changed since (entries again, whiteouts for deleted paths), so the freeze lasts
//! for the changes and the CRIU images instead of the whole rootfs. The copy stays out of the
//! container's way: files under a lease are never opened (see [`Leases`]), reads leave atimes alone.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;

use crate::stats::RootfsChanges;
use ckpt_runtime::leases::Leases;
use ckpt_stream::format::Copied;
use ckpt_stream::wire::{Entry, Kind, Mtime};
use ckpt_stream::{bundle_path, rel_path, tree_walk, StreamWriter};

/// A file whose ctime is this close to the moment it was copied may change again within the same
/// timestamp tick, unseen: such files are always sent again after the freeze.
const RACY_NS: i128 = 1_000_000_000;

/// What one rootfs path looked like just before it was copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    mode: u32,
    size: u64,
    ctime: (i64, i64),
    mtime: (i64, i64),
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            mode: meta.mode(),
            size: meta.size(),
            ctime: (meta.ctime(), meta.ctime_nsec()),
            mtime: (meta.mtime(), meta.mtime_nsec()),
        }
    }

    /// Whether a change right after this stamp could leave the ctime as it is.
    fn racy(&self, now: i128) -> bool {
        now - (i128::from(self.ctime.0) * 1_000_000_000 + i128::from(self.ctime.1)) < RACY_NS
    }
}

/// The rootfs as it was copied into a live stream, to find what changed once the container froze.
pub struct RootfsCopy {
    dir: PathBuf,
    /// Stamp of every copied path (relative to the rootfs), `None` when it must be sent again anyway.
    copied: HashMap<Vec<u8>, Option<Stamp>>,
    /// Files some process maps shared and writable: writes through such a map need not touch the
    /// ctime, so they are always sent again.
    mapped: HashSet<(u64, u64)>,
}

/// The rootfs changes found after the freeze.
pub struct Changes {
    /// Paths deleted since they were copied; only the topmost of a deleted subtree.
    deleted: Vec<Vec<u8>>,
    /// Paths new or changed since they were copied, parents first.
    changed: Vec<PathBuf>,
}

impl RootfsCopy {
    /// Streams `dir` as `rootfs/` while the container runs. Files may change, appear or vanish
    /// meanwhile: a vanished one is left out, a shrinking one is padded; both show up in
    /// [`RootfsCopy::changes`].
    pub fn send<W: Write>(stream: &mut StreamWriter<W>, dir: &Path) -> anyhow::Result<RootfsCopy> {
        let mut copy = RootfsCopy {
            dir: dir.to_path_buf(),
            copied: HashMap::new(),
            mapped: shared_writable_mappings(),
        };
        // Opening a leased file would break the lease (SIGIO kills a holder that does not handle
        // it): such files are left out here, so `changes` finds them new and they are sent after
        // the freeze, read through their holder's descriptor. A lease taken after this read and
        // before the file's open is not seen (a narrow window).
        let leases = Leases::now();
        let mut it = tree_walk(dir).into_iter();
        while let Some(item) = it.next() {
            let Ok(item) = item else {
                continue; // a directory that vanished while being read
            };
            if item.file_type().is_socket() {
                continue;
            }
            let Ok(meta) = item.metadata() else {
                continue;
            };
            if meta.is_file() && leases.is_leased(meta.dev(), meta.ino()) {
                continue;
            }
            let rel = rel_path(dir, item.path()).to_vec();
            let stamp = Stamp::of(&meta);
            let fresh = !stamp.racy(now_ns());
            if stream.add_live_path(item.path(), bundle_path("rootfs", &rel))? {
                copy.copied.insert(rel, fresh.then_some(stamp));
            } else if item.file_type().is_dir() {
                it.skip_current_dir();
            }
        }
        copy.mapped.extend(shared_writable_mappings());
        Ok(copy)
    }

    /// What ends the copy in the stream.
    pub fn summary(&self) -> Copied {
        Copied {
            entries: self.copied.len() as u64,
        }
    }

    /// Compares the rootfs, now frozen, with what was copied.
    pub fn changes(&self) -> anyhow::Result<Changes> {
        let mut changed = Vec::new();
        let mut seen = HashSet::with_capacity(self.copied.len());
        for item in tree_walk(&self.dir) {
            let item = item.with_context(|| format!("walking {}", self.dir.display()))?;
            if item.file_type().is_socket() {
                continue;
            }
            let meta = item
                .metadata()
                .with_context(|| format!("reading {}", item.path().display()))?;
            let rel = rel_path(&self.dir, item.path()).to_vec();
            let now = Stamp::of(&meta);
            let same = match self.copied.get(&rel) {
                Some(Some(then)) => {
                    *then == now && !(meta.is_file() && self.mapped.contains(&(now.dev, now.ino)))
                }
                _ => false,
            };
            if !same {
                changed.push(item.path().to_path_buf());
            }
            seen.insert(rel);
        }
        let mut gone: Vec<&Vec<u8>> = self.copied.keys().filter(|p| !seen.contains(*p)).collect();
        gone.sort();
        let mut deleted: Vec<Vec<u8>> = Vec::new();
        for path in gone {
            let under_last = deleted
                .last()
                .is_some_and(|top| path.starts_with(top) && path.get(top.len()) == Some(&b'/'));
            if !under_last {
                deleted.push(path.clone());
            }
        }
        Ok(Changes { deleted, changed })
    }
}

impl Changes {
    pub fn summary(&self) -> RootfsChanges {
        RootfsChanges {
            changed: self.changed.len() as u64,
            deleted: self.deleted.len() as u64,
        }
    }

    /// Streams the whiteouts, then the changed entries (after [`StreamWriter::end_live_copy`]).
    pub fn send<W: Write>(
        &self,
        stream: &mut StreamWriter<W>,
        copy: &RootfsCopy,
    ) -> anyhow::Result<()> {
        for rel in &self.deleted {
            let whiteout = Entry {
                path: bundle_path("rootfs", rel),
                kind: Kind::Char { major: 0, minor: 0 },
                mode: 0,
                uid: 0,
                gid: 0,
                mtime: Mtime::default(),
                xattrs: Vec::new(),
            };
            stream.append(&copy.dir.join(std::ffi::OsStr::from_bytes(rel)), &whiteout)?;
        }
        let leases = Leases::now();
        for path in &self.changed {
            add_unleased(
                stream,
                &leases,
                path,
                bundle_path("rootfs", rel_path(&copy.dir, path)),
            )?;
        }
        Ok(())
    }
}

/// Streams the whole rootfs `dir` after the freeze (no live copy), leases respected as in
/// [`Changes::send`].
pub fn send_rootfs<W: Write>(stream: &mut StreamWriter<W>, dir: &Path) -> anyhow::Result<()> {
    let leases = Leases::now();
    for item in tree_walk(dir) {
        let item = item.with_context(|| format!("walking {}", dir.display()))?;
        if item.file_type().is_socket() {
            continue;
        }
        let rel = rel_path(dir, item.path());
        add_unleased(stream, &leases, item.path(), bundle_path("rootfs", rel))?;
    }
    Ok(())
}

/// Streams `path`; a leased file is read through its holder's descriptor, which breaks nothing
/// and, unlike an open, does not wait `fs.lease-break-time` (45 s) for a frozen holder. Without
/// such a descriptor (the holder has it write-only), the file is opened like any other.
fn add_unleased<W: Write>(
    stream: &mut StreamWriter<W>,
    leases: &Leases,
    path: &Path,
    bundle_path: Vec<u8>,
) -> anyhow::Result<()> {
    if !leases.is_empty() {
        let meta = std::fs::symlink_metadata(path)
            .with_context(|| format!("reading {}", path.display()))?;
        if meta.is_file() {
            if let Some(file) = leases.holder_file(meta.dev(), meta.ino()) {
                return stream.add_path_from(path, bundle_path, file);
            }
        }
    }
    stream.add_path(path, bundle_path)
}

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

/// (dev, ino) of every file that some process maps shared and writable (`rw?s` in its maps).
fn shared_writable_mappings() -> HashSet<(u64, u64)> {
    ckpt_runtime::procs::processes()
        .filter_map(|p| p.maps())
        .flat_map(|maps| {
            maps.lines()
                .filter_map(parse_shared_writable)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// `start-end perms offset major:minor inode path` → (dev, ino) when perms are `?w?s`.
fn parse_shared_writable(line: &str) -> Option<(u64, u64)> {
    let mut fields = line.split_ascii_whitespace();
    let perms = fields.nth(1)?.as_bytes();
    if perms.get(1) != Some(&b'w') || perms.get(3) != Some(&b's') {
        return None;
    }
    let (major, minor) = fields.nth(1)?.split_once(':')?;
    let ino: u64 = fields.next()?.parse().ok()?;
    let dev = rustix::fs::makedev(
        u32::from_str_radix(major, 16).ok()?,
        u32::from_str_radix(minor, 16).ok()?,
    );
    (ino != 0).then_some((dev, ino))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_writable_maps_parsed() {
        let line = "7f00-7f10 rw-s 00000000 fd:01 1234 /srv/db/data.mdb";
        assert_eq!(
            parse_shared_writable(line),
            Some((rustix::fs::makedev(0xfd, 1), 1234))
        );
        assert_eq!(
            parse_shared_writable("7f00-7f10 rw-p 0 fd:01 1234 /lib/x.so"),
            None
        );
        assert_eq!(
            parse_shared_writable("7f00-7f10 r--s 0 fd:01 1234 /x"),
            None
        );
        assert_eq!(
            parse_shared_writable("7f00-7f10 rw-s 0 00:01 0 /dev/zero"),
            None
        );
    }

    #[test]
    fn racy_when_ctime_is_recent() {
        let meta = std::fs::metadata("/").unwrap();
        let stamp = Stamp::of(&meta);
        let ctime = i128::from(stamp.ctime.0) * 1_000_000_000 + i128::from(stamp.ctime.1);
        assert!(stamp.racy(ctime + 10));
        assert!(!stamp.racy(ctime + 2 * RACY_NS));
    }
}
