//! Writes stream entries into a staging dir as untrusted input. Every parent path is resolved with
//! openat2 beneath its bundle root and through no symlink at all (see parents.rs), so no symlink or
//! hard link planted by the stream can redirect a write; final components are created with
//! O_EXCL-style calls that never follow links; metadata is restored exactly, directories last.

use std::ffi::OsStr;
use std::fs::File;
use std::io::BufRead;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{anyhow, Context};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;

use crate::error::bad_stream;
use crate::format::{classify, is_whiteout, EntryPath, ROOTS};
use crate::parents::{open_in_root, LastParent, Parent};
use crate::wire::{Entry, Kind};

pub struct Extractor {
    base: OwnedFd,
    roots: Vec<(&'static str, OwnedFd)>,
    /// Directories whose metadata is applied at the end, in stream order.
    dirs: Vec<(&'static str, Vec<u8>, Entry)>,
    as_root: bool,
    /// After `copied.json`: `rootfs/` entries replace what is there, whiteouts delete.
    changes: bool,
    /// The previous entry's parent directory, still open.
    last_parent: LastParent,
}

impl Extractor {
    /// An extractor writing into the (empty, private) directory `staging`.
    pub fn new(staging: &Path) -> anyhow::Result<Extractor> {
        let base = rustix::fs::open(
            staging,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("opening {}", staging.display()))?;
        Ok(Extractor {
            base,
            roots: Vec::new(),
            dirs: Vec::new(),
            as_root: rustix::process::geteuid().is_root(),
            changes: false,
            last_parent: LastParent::default(),
        })
    }

    /// The stream reached `copied.json`: later `rootfs/` entries are changes to what came before.
    pub fn begin_changes(&mut self) {
        self.changes = true;
    }

    /// Writes one entry (and its data) under bundle root `root` at relative path `rel`.
    pub fn extract(
        &mut self,
        root: &'static str,
        rel: &[u8],
        entry: &Entry,
        data: &mut dyn BufRead,
    ) -> anyhow::Result<()> {
        self.extract_inner(root, rel, entry, data)
            .with_context(|| format!("extracting {:?}", String::from_utf8_lossy(&entry.path)))
    }

    fn extract_inner(
        &mut self,
        root: &'static str,
        rel: &[u8],
        entry: &Entry,
        data: &mut dyn BufRead,
    ) -> anyhow::Result<()> {
        refuse_special_outside_rootfs(root, entry)?;
        let replacing = self.changes && root == "rootfs";
        if rel.is_empty() {
            if !replacing {
                return self.make_root(root, entry);
            }
            if entry.kind != Kind::Dir {
                return Err(bad_stream("rootfs/ itself cannot be replaced or deleted"));
            }
            let base = self.base.try_clone()?;
            return self.defer_dir(base.as_fd(), OsStr::new(root), (root, rel), entry, true);
        }
        let (parent_rel, name) = split(rel);
        let parent = match self.last_parent.take(root, parent_rel) {
            Some(kept) => kept,
            None => Parent::open(root, self.root(root)?, parent_rel)?,
        };
        let made = self.make_in(
            parent.fd(),
            OsStr::from_bytes(name),
            (root, rel),
            entry,
            data,
        );
        self.last_parent.keep(parent);
        made
    }

    /// Creates entry `name` in the already-resolved directory `parent`.
    fn make_in(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        (root, rel): (&'static str, &[u8]),
        entry: &Entry,
        data: &mut dyn BufRead,
    ) -> anyhow::Result<()> {
        let replacing = self.changes && root == "rootfs";
        if replacing && self.replace(parent, name, root, rel, entry)? {
            return Ok(());
        }
        match &entry.kind {
            Kind::File { sparse, .. } => {
                let fd = rustix::fs::openat(
                    parent,
                    name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(created)?;
                let file = File::from(fd);
                match sparse {
                    Some(map) => {
                        file.set_len(map.real_size)?;
                        for &(offset, len) in &map.segments {
                            copy_at(data, &file, offset, len)?;
                        }
                    }
                    None => copy_at(data, &file, 0, entry.data_size())?,
                }
                self.apply_fd(file.as_fd(), entry)?;
            }
            Kind::Dir => {
                rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o700)).map_err(created)?;
                self.defer_dir(parent, name, (root, rel), entry, false)?;
            }
            Kind::Symlink(target) => {
                rustix::fs::symlinkat(OsStr::from_bytes(target), parent, name).map_err(created)?;
                self.apply_at(parent, name, entry, false)?;
            }
            Kind::Hardlink(target) => {
                let target_rel = match classify(target)? {
                    EntryPath::Tree { root: r, rel } if r == root && !rel.is_empty() => rel,
                    _ => {
                        return Err(bad_stream(
                            "hard link target is outside the entry's own bundle root",
                        ))
                    }
                };
                let (target_parent, target_name) = split(&target_rel);
                let target_dir = open_in_root(self.root(root)?, target_parent)?;
                rustix::fs::linkat(
                    &target_dir,
                    OsStr::from_bytes(target_name),
                    parent,
                    name,
                    AtFlags::empty(),
                )
                .map_err(|e| match e {
                    Errno::NOENT => {
                        bad_stream("hard link to an entry that is not in the stream before it")
                    }
                    e => created(e),
                })?;
            }
            Kind::Char { major, minor } | Kind::Block { major, minor } => {
                let ty = if matches!(entry.kind, Kind::Char { .. }) {
                    FileType::CharacterDevice
                } else {
                    FileType::BlockDevice
                };
                let dev = rustix::fs::makedev(*major, *minor);
                rustix::fs::mknodat(parent, name, ty, Mode::from_raw_mode(0o600), dev)
                    .map_err(created)?;
                self.apply_at(parent, name, entry, true)?;
            }
            Kind::Fifo => {
                rustix::fs::mknodat(parent, name, FileType::Fifo, Mode::from_raw_mode(0o600), 0)
                    .map_err(created)?;
                self.apply_at(parent, name, entry, true)?;
            }
        }
        Ok(())
    }

    /// Makes way for a change to `name`: deletes it for a whiteout (true: nothing more to do),
    /// updates a directory that stays a directory (true), or removes whatever is in the way of
    /// the new entry (false: create it as usual).
    fn replace(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        root: &'static str,
        rel: &[u8],
        entry: &Entry,
    ) -> anyhow::Result<bool> {
        let existing = match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => Some(FileType::from_raw_mode(stat.st_mode)),
            Err(Errno::NOENT) => None,
            Err(e) => return Err(anyhow!(std::io::Error::from(e))),
        };
        let whiteout = is_whiteout(&entry.kind);
        match existing {
            None if whiteout => Err(bad_stream(
                "whiteout for a path that is not in the stream before it",
            )),
            None => Ok(false),
            Some(FileType::Directory) if entry.kind == Kind::Dir => {
                self.defer_dir(parent, name, (root, rel), entry, true)?;
                Ok(true)
            }
            Some(ty) => {
                remove_at(parent, name, ty)?;
                Ok(whiteout)
            }
        }
    }

    /// Applies directory metadata, deepest entries first, and returns once everything is in place.
    /// A directory sent again after the freeze gets its last metadata; one deleted then is skipped.
    pub fn finish(mut self) -> anyhow::Result<()> {
        let dirs = std::mem::take(&mut self.dirs);
        let mut done = std::collections::HashSet::new();
        for (root, rel, entry) in dirs.iter().rev() {
            if self.changes && !done.insert((*root, rel.as_slice())) {
                continue;
            }
            let root_fd = self.root(root)?;
            let dir = if rel.is_empty() {
                rustix::fs::openat(
                    &self.base,
                    *root,
                    OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )?
            } else {
                match rustix::fs::openat2(
                    root_fd,
                    OsStr::from_bytes(rel),
                    OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                    ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_SYMLINKS,
                ) {
                    Ok(dir) => dir,
                    // Deleted or replaced by a non-directory after the freeze.
                    Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) if self.changes => continue,
                    Err(e) => return Err(e.into()),
                }
            };
            self.apply_fd(dir.as_fd(), entry).with_context(|| {
                format!(
                    "setting metadata of {:?}",
                    String::from_utf8_lossy(&entry.path)
                )
            })?;
        }
        Ok(())
    }

    fn make_root(&mut self, root: &'static str, entry: &Entry) -> anyhow::Result<()> {
        if entry.kind != Kind::Dir {
            return Err(bad_stream(format!(
                "bundle root {root}/ is not a directory"
            )));
        }
        rustix::fs::mkdirat(&self.base, root, Mode::from_raw_mode(0o700)).map_err(created)?;
        let fd = rustix::fs::openat(
            &self.base,
            root,
            OFlags::DIRECTORY | OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        self.roots.push((root, fd));
        let base = self.base.try_clone()?;
        self.defer_dir(base.as_fd(), OsStr::new(root), (root, &[]), entry, false)
    }

    /// Sets a directory's xattrs now and keeps the rest of its metadata for [`Extractor::finish`]:
    /// what is kept per directory stays small whatever xattrs the stream carries. A directory that
    /// was already there (`existed`: sent again after the freeze) loses the xattrs it had.
    fn defer_dir(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        (root, rel): (&'static str, &[u8]),
        entry: &Entry,
        existed: bool,
    ) -> anyhow::Result<()> {
        if existed || !entry.xattrs.is_empty() {
            let dir = open_dir_at(parent, name)?;
            if existed {
                self.clear_xattrs(dir.as_fd())?;
            }
            self.set_xattrs(dir.as_fd(), entry)?;
        }
        self.push_dir(root, rel, entry);
        Ok(())
    }

    /// Removes every xattr this process may set.
    fn clear_xattrs(&self, dir: BorrowedFd<'_>) -> anyhow::Result<()> {
        let mut names = vec![0u8; 64 << 10];
        let len = rustix::fs::flistxattr(dir, &mut names).context("listing xattrs")?;
        for key in names[..len].split(|&b| b == 0).filter(|k| !k.is_empty()) {
            if self.as_root || key.starts_with(b"user.") {
                rustix::fs::fremovexattr(dir, OsStr::from_bytes(key))
                    .with_context(|| format!("removing xattr {}", String::from_utf8_lossy(key)))?;
            }
        }
        Ok(())
    }

    fn push_dir(&mut self, root: &'static str, rel: &[u8], entry: &Entry) {
        let deferred = Entry {
            xattrs: Vec::new(),
            ..entry.clone()
        };
        self.dirs.push((root, rel.to_vec(), deferred));
    }

    fn set_xattrs(&self, fd: BorrowedFd<'_>, entry: &Entry) -> anyhow::Result<()> {
        for (key, value) in self.xattrs(entry) {
            rustix::fs::fsetxattr(fd, OsStr::from_bytes(key), value, XattrFlags::empty())
                .with_context(|| format!("setting xattr {}", String::from_utf8_lossy(key)))?;
        }
        Ok(())
    }

    fn root(&self, root: &str) -> anyhow::Result<BorrowedFd<'_>> {
        debug_assert!(ROOTS.contains(&root));
        self.roots
            .iter()
            .find(|(r, _)| *r == root)
            .map(|(_, fd)| fd.as_fd())
            .ok_or_else(|| {
                bad_stream(format!(
                    "entry under {root}/ comes before the {root}/ directory entry"
                ))
            })
    }

    /// Owner, mode, xattrs and mtime through an open file or directory.
    fn apply_fd(&self, fd: BorrowedFd<'_>, entry: &Entry) -> anyhow::Result<()> {
        if self.as_root {
            rustix::fs::fchown(fd, Some(uid(entry.uid)?), Some(gid(entry.gid)?))
                .context("setting owner")?;
        }
        rustix::fs::fchmod(fd, Mode::from_raw_mode(entry.mode)).context("setting mode")?;
        self.set_xattrs(fd, entry)?;
        rustix::fs::futimens(fd, &times(entry)).context("setting mtime")?;
        Ok(())
    }

    /// The same for a symlink, device or fifo, through its parent dir without following it.
    fn apply_at(
        &self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        entry: &Entry,
        chmod: bool,
    ) -> anyhow::Result<()> {
        if self.as_root {
            rustix::fs::chownat(
                parent,
                name,
                Some(uid(entry.uid)?),
                Some(gid(entry.gid)?),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .context("setting owner")?;
        }
        if chmod {
            rustix::fs::chmodat(
                parent,
                name,
                Mode::from_raw_mode(entry.mode),
                AtFlags::empty(),
            )
            .context("setting mode")?;
        }
        // No xattr call takes (dirfd, name) on every kernel: go through the parent's fd in /proc,
        // which names the already-resolved directory; the final component is not followed.
        let via_proc = via_proc(parent, name);
        for (key, value) in self.xattrs(entry) {
            rustix::fs::lsetxattr(
                &via_proc,
                OsStr::from_bytes(key),
                value,
                XattrFlags::empty(),
            )
            .with_context(|| format!("setting xattr {}", String::from_utf8_lossy(key)))?;
        }
        rustix::fs::utimensat(parent, name, &times(entry), AtFlags::SYMLINK_NOFOLLOW)
            .context("setting mtime")?;
        Ok(())
    }

    /// The xattrs this process may set: all of them as root, only `user.*` otherwise.
    fn xattrs<'e>(&self, entry: &'e Entry) -> impl Iterator<Item = (&'e [u8], &'e [u8])> {
        let as_root = self.as_root;
        entry
            .xattrs
            .iter()
            .filter(move |(k, _)| as_root || k.starts_with(b"user."))
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
    }
}

/// `name` in the already-resolved directory `parent`, as a path through /proc/self/fd: calls
/// that take no (dirfd, name) pair can use it without resolving `parent` again.
fn via_proc(parent: BorrowedFd<'_>, name: &OsStr) -> std::path::PathBuf {
    use std::os::fd::AsRawFd;
    Path::new("/proc/self/fd")
        .join(parent.as_raw_fd().to_string())
        .join(name)
}

/// Device nodes, fifos and setuid/setgid files belong in a container's rootfs only: in container/
/// or images/ (which land directly in LXCPATH on the host) they can only be an attack.
fn refuse_special_outside_rootfs(root: &str, entry: &Entry) -> anyhow::Result<()> {
    if root == "rootfs" {
        return Ok(());
    }
    let special = matches!(
        entry.kind,
        Kind::Char { .. } | Kind::Block { .. } | Kind::Fifo
    );
    if special || entry.mode & 0o6000 != 0 {
        return Err(bad_stream(format!(
            "{root}/ holds a device node, fifo or setuid/setgid file: only rootfs/ may"
        )));
    }
    Ok(())
}

/// Opens the directory `name` in `parent`, not following a symlink.
fn open_dir_at(parent: BorrowedFd<'_>, name: &OsStr) -> anyhow::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        parent,
        name,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Deletes `name` in `parent` (of type `ty`), a whole tree if it is a directory. The tree goes
/// through std's remove_dir_all, which never follows a symlink inside it; `/proc/self/fd/N` names
/// the already-resolved parent, and the final component is not followed either.
fn remove_at(parent: BorrowedFd<'_>, name: &OsStr, ty: FileType) -> anyhow::Result<()> {
    if ty == FileType::Directory {
        std::fs::remove_dir_all(via_proc(parent, name)).context("removing a replaced directory")
    } else {
        rustix::fs::unlinkat(parent, name, AtFlags::empty()).context("removing a replaced entry")
    }
}

/// Splits `a/b/c` into (`a/b`, `c`).
fn split(rel: &[u8]) -> (&[u8], &[u8]) {
    match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (&[], rel),
    }
}

/// Names EEXIST as what it is in a stream: a duplicate entry.
fn created(e: Errno) -> anyhow::Error {
    match e {
        Errno::EXIST => bad_stream("duplicate entry: this path was already in the stream"),
        e => anyhow!(std::io::Error::from(e)),
    }
}

fn copy_at(data: &mut dyn BufRead, file: &File, offset: u64, len: u64) -> anyhow::Result<()> {
    let mut done = 0;
    while done < len {
        let chunk = data.fill_buf()?;
        if chunk.is_empty() {
            return Err(bad_stream("entry data ends early"));
        }
        let n = chunk.len().min((len - done) as usize);
        file.write_all_at(&chunk[..n], offset + done)
            .context("writing file data")?;
        data.consume(n);
        done += n as u64;
    }
    Ok(())
}

fn uid(id: u64) -> anyhow::Result<rustix::fs::Uid> {
    let id = u32::try_from(id).map_err(|_| bad_stream(format!("uid {id} is out of range")))?;
    Ok(rustix::fs::Uid::from_raw(id))
}

fn gid(id: u64) -> anyhow::Result<rustix::fs::Gid> {
    let id = u32::try_from(id).map_err(|_| bad_stream(format!("gid {id} is out of range")))?;
    Ok(rustix::fs::Gid::from_raw(id))
}

fn times(entry: &Entry) -> Timestamps {
    let t = Timespec {
        tv_sec: entry.mtime.sec,
        tv_nsec: entry.mtime.nsec.into(),
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}
