//! The rootfs side of the seed's tty workaround: `/dev/tty` and `/dev/ttyN` in the container's
//! rootfs become empty regular files, and `/dev/tty0`..`/dev/tty4` exist. The rootfs belongs to
//! the container, so everything here works below a directory fd and never follows a symlink.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::problem::{NodeKind, Problem};

/// The regular files the seed creates: `/dev/tty0`..`/dev/tty4`.
const ENSURED: [&str; 5] = ["tty0", "tty1", "tty2", "tty3", "tty4"];

/// The rootfs's `/dev`, opened without following symlinks.
pub(super) struct DevDir {
    fd: OwnedFd,
    /// Shown in messages: `ROOTFS/dev`.
    path: PathBuf,
    /// Owner of `/dev`, given to the files created in it (the container's root, mapped or not).
    owner: (u32, u32),
}

/// Opens `ROOTFS/dev`; `None` when the rootfs has none (LXC's autodev then makes one at start).
pub(super) fn open(rootfs: &OwnedFd, rootfs_path: &Path) -> anyhow::Result<Option<DevDir>> {
    let path = rootfs_path.join("dev");
    let flags = OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC;
    let fd = match rustix::fs::openat(rootfs, "dev", flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(None),
        Err(Errno::LOOP | Errno::NOTDIR) => anyhow::bail!(
            "{} is not a directory (a symlink?): lxc-fixtty does not follow it; make it a directory",
            path.display()
        ),
        Err(err) => return Err(err).with_context(|| format!("cannot open {}", path.display())),
    };
    let st = rustix::fs::fstat(&fd).with_context(|| format!("cannot stat {}", path.display()))?;
    Ok(Some(DevDir {
        fd,
        path,
        owner: (st.st_uid, st.st_gid),
    }))
}

/// Finds ttys that are not regular files, and missing `/dev/tty0`..`/dev/tty4`.
pub(super) fn survey(dev: &DevDir, problems: &mut Vec<Problem>) -> anyhow::Result<()> {
    let names = tty_names(dev)?;
    for name in &names {
        if let Some(kind) = dev.kind(name)? {
            problems.push(Problem::TtyNode {
                name: name.clone(),
                kind,
            });
        }
    }
    let missing: Vec<String> = ENSURED
        .iter()
        .filter(|want| !names.iter().any(|n| n == *want))
        .map(|n| n.to_string())
        .collect();
    if !missing.is_empty() {
        problems.push(Problem::TtyMissing { names: missing });
    }
    Ok(())
}

/// Applies a /dev problem's fix.
pub(super) fn apply(dev: &DevDir, problem: &Problem) -> anyhow::Result<()> {
    match problem {
        Problem::TtyNode { name, .. } => {
            // Only what is still not a regular file is removed (never a directory).
            if dev.kind(name)?.is_some() {
                rustix::fs::unlinkat(&dev.fd, name.as_str(), AtFlags::empty())
                    .with_context(|| format!("cannot remove {}/{name}", dev.path.display()))?;
            }
            dev.create_empty(name)
        }
        Problem::TtyMissing { names } => names.iter().try_for_each(|name| dev.create_empty(name)),
        _ => Ok(()),
    }
}

/// `tty` and `ttyN` entries of /dev, sorted as tty, tty0, tty1, ..., tty10.
fn tty_names(dev: &DevDir) -> anyhow::Result<Vec<String>> {
    let context = || format!("cannot list {}", dev.path.display());
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(&dev.fd).with_context(context)? {
        let entry = entry.with_context(context)?;
        if let Some(name) = entry.file_name().to_str().ok().filter(|n| is_tty_name(n)) {
            names.push(name.to_string());
        }
    }
    names.sort_by_key(|n| (n.len(), n.clone()));
    Ok(names)
}

/// `tty` or `tty` followed by digits.
pub(super) fn is_tty_name(name: &str) -> bool {
    name.strip_prefix("tty")
        .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
}

impl DevDir {
    /// What `/dev/NAME` is when it should be a regular file; `None` for a regular file, a
    /// directory (left alone) or nothing.
    fn kind(&self, name: &str) -> anyhow::Result<Option<NodeKind>> {
        let st = match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(None),
            Err(err) => {
                return Err(err)
                    .with_context(|| format!("cannot stat {}/{name}", self.path.display()))
            }
        };
        let (major, minor) = (rustix::fs::major(st.st_rdev), rustix::fs::minor(st.st_rdev));
        Ok(match FileType::from_raw_mode(st.st_mode) {
            FileType::CharacterDevice => Some(NodeKind::CharDevice { major, minor }),
            FileType::BlockDevice => Some(NodeKind::BlockDevice { major, minor }),
            FileType::Fifo => Some(NodeKind::Fifo),
            FileType::Socket => Some(NodeKind::Socket),
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(&self.fd, name, Vec::new())
                    .with_context(|| format!("cannot read link {}/{name}", self.path.display()))?;
                Some(NodeKind::Symlink {
                    target: PathBuf::from(OsStr::from_bytes(target.as_bytes())),
                })
            }
            _ => None,
        })
    }

    /// Creates `/dev/NAME` as an empty regular file (mode 0644, owned like /dev); an existing
    /// regular file is kept.
    fn create_empty(&self, name: &str) -> anyhow::Result<()> {
        let path = || format!("{}/{name}", self.path.display());
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(&self.fd, name, flags, Mode::from_raw_mode(0o644)) {
            Ok(fd) => fd,
            Err(Errno::EXIST) if self.kind(name)?.is_none() => return Ok(()),
            Err(err) => return Err(err).with_context(|| format!("cannot create {}", path())),
        };
        let file = File::from(fd);
        let st =
            rustix::fs::fstat(file.as_fd()).with_context(|| format!("cannot stat {}", path()))?;
        if (st.st_uid, st.st_gid) != self.owner {
            std::os::unix::fs::fchown(&file, Some(self.owner.0), Some(self.owner.1))
                .with_context(|| format!("cannot chown {}", path()))?;
        }
        file.set_permissions(std::fs::Permissions::from_mode(0o644))
            .with_context(|| format!("cannot chmod {}", path()))
    }
}
