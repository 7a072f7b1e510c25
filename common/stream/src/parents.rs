//! Resolves the parent directory of each entry beneath its bundle root, refusing symlinks, and
//! keeps the last one open: entries come grouped by directory, so most need no lookup at all.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use anyhow::anyhow;
use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::error::bad_stream;

/// An entry's parent directory, resolved.
pub struct Parent {
    root: &'static str,
    rel: Vec<u8>,
    fd: OwnedFd,
}

impl Parent {
    /// Resolves directory `rel` in bundle root `root`, open as `root_fd` (see [`open_in_root`]).
    pub fn open(root: &'static str, root_fd: BorrowedFd<'_>, rel: &[u8]) -> anyhow::Result<Parent> {
        Ok(Parent {
            root,
            rel: rel.to_vec(),
            fd: open_in_root(root_fd, rel)?,
        })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The parent of the previous entry, kept for the next one.
///
/// Reusing it is the same as resolving the path again: in the staging dir (private to this
/// process) a path changes only through an entry that removes or replaces one of its components,
/// and an entry can only remove or replace a child of its own parent. So the entry right after
/// one with parent P resolves P to the same directory, whatever that entry did inside P; any
/// entry that could change P itself has another parent and takes the cache's place.
#[derive(Default)]
pub struct LastParent {
    kept: Option<Parent>,
}

impl LastParent {
    /// The kept directory if it is `rel` in bundle root `root`; else None (and it is closed).
    pub fn take(&mut self, root: &str, rel: &[u8]) -> Option<Parent> {
        self.kept
            .take()
            .filter(|kept| kept.root == root && kept.rel == rel)
    }

    /// Keeps `parent` for the next entry, once the entry created in it is complete.
    pub fn keep(&mut self, parent: Parent) {
        self.kept = Some(parent);
    }
}

/// Opens directory `rel` inside `root`, refusing any path that leaves `root` or goes through a
/// symlink: a writer never needs one to reach an entry's parent, so a stream that does is hostile.
pub fn open_in_root(root: BorrowedFd<'_>, rel: &[u8]) -> anyhow::Result<OwnedFd> {
    let path = if rel.is_empty() {
        OsStr::new(".")
    } else {
        OsStr::from_bytes(rel)
    };
    rustix::fs::openat2(
        root,
        path,
        OFlags::DIRECTORY | OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH
            | ResolveFlags::NO_SYMLINKS
            | ResolveFlags::NO_MAGICLINKS
            | ResolveFlags::NO_XDEV,
    )
    .map_err(|e| match e {
        Errno::NOENT | Errno::NOTDIR => bad_stream(format!(
            "parent directory {:?} is not in the stream before its entries",
            String::from_utf8_lossy(rel)
        )),
        Errno::LOOP | Errno::XDEV => bad_stream(format!(
            "path {:?} goes through a symlink or leaves its bundle root",
            String::from_utf8_lossy(rel)
        )),
        e => anyhow!(std::io::Error::from(e)).context("resolving the parent directory"),
    })
}
