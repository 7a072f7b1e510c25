//! Writes a file so that readers see either the old or the new content, never half of it: a temp
//! file in the same directory, fsync, rename. The `_at` forms work below a directory fd and never
//! follow a symlink in the last component, for files inside a container's rootfs.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags, CWD};
use rustix::io::Errno;

/// Mode bits and owner a written file gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Perms {
    /// Permission bits, including setuid/setgid/sticky.
    pub mode: u32,
    /// `(uid, gid)`, or `None` to keep the writer's.
    pub owner: Option<(u32, u32)>,
}

impl Perms {
    /// What a new file gets when there is nothing to copy the perms from.
    pub const DEFAULT: Perms = Perms {
        mode: 0o644,
        owner: None,
    };
}

/// The perms of the regular file `name` in `dir`, or `None` when there is no such file. A symlink
/// or other non-regular file is an error: it is never followed.
pub fn perms_at(dir: impl AsFd, name: &OsStr) -> io::Result<Option<Perms>> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => Ok(Some(Perms {
            mode: st.st_mode & 0o7777,
            owner: Some((st.st_uid, st.st_gid)),
        })),
        Ok(_) => Err(io::Error::other(format!(
            "{} is not a regular file",
            Path::new(name).display()
        ))),
        Err(Errno::NOENT) => Ok(None),
        Err(err) => Err(err.into()),
    }
}

/// Replaces (or creates) `name` in `dir` atomically with `data`, keeping the perms of the file it
/// replaces ([`Perms::DEFAULT`] for a new one).
pub fn replace_at(dir: impl AsFd, name: &OsStr, data: &[u8]) -> io::Result<()> {
    let perms = perms_at(dir.as_fd(), name)?.unwrap_or(Perms::DEFAULT);
    write_renamed(dir.as_fd(), name, data, perms, false).map(|_| ())
}

/// Creates `name` in `dir` with `data` and `perms`, complete or not at all. Returns `false` and
/// writes nothing when `name` already exists (whatever it is).
pub fn create_at(dir: impl AsFd, name: &OsStr, data: &[u8], perms: Perms) -> io::Result<bool> {
    write_renamed(dir.as_fd(), name, data, perms, true)
}

/// [`replace_at`] for a path on the host; a symlink at `path` is resolved and its target replaced.
pub fn replace_file(path: &Path, data: &[u8]) -> io::Result<()> {
    let path = match std::fs::canonicalize(path) {
        Ok(real) => real,
        Err(err) if err.kind() == io::ErrorKind::NotFound => path.to_path_buf(),
        Err(err) => return Err(err),
    };
    let (dir, name) = open_parent(&path)?;
    replace_at(&dir, name, data)
}

/// [`create_at`] for a path on the host.
pub fn create_file(path: &Path, data: &[u8], perms: Perms) -> io::Result<bool> {
    let (dir, name) = open_parent(path)?;
    create_at(&dir, name, data, perms)
}

fn open_parent(path: &Path) -> io::Result<(std::os::fd::OwnedFd, &OsStr)> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} names no file", path.display()),
        )
    })?;
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dir = rustix::fs::openat(
        CWD,
        parent,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    Ok((dir, name))
}

/// Writes a temp file next to `name`, syncs it and renames it over `name` (or, with
/// `no_replace`, next to it only if `name` is free). The temp file never survives an error.
fn write_renamed(
    dir: std::os::fd::BorrowedFd<'_>,
    name: &OsStr,
    data: &[u8],
    perms: Perms,
    no_replace: bool,
) -> io::Result<bool> {
    let (file, temp) = create_temp(dir, name)?;
    let result = (|| -> io::Result<bool> {
        let mut file = file;
        file.write_all(data)?;
        if let Some((uid, gid)) = perms.owner {
            std::os::unix::fs::fchown(&file, Some(uid), Some(gid))?;
        }
        // After fchown, which clears setuid/setgid bits.
        file.set_permissions(std::fs::Permissions::from_mode(perms.mode))?;
        file.sync_all()?;
        let flags = if no_replace {
            RenameFlags::NOREPLACE
        } else {
            RenameFlags::empty()
        };
        match rustix::fs::renameat_with(dir, &temp, dir, name, flags) {
            Ok(()) => {}
            Err(Errno::EXIST) if no_replace => return Ok(false),
            Err(err) => return Err(err.into()),
        }
        // The rename is durable once the directory is synced; failing that is not worth an error.
        let _ = rustix::fs::fsync(dir);
        Ok(true)
    })();
    if !matches!(result, Ok(true)) {
        let _ = rustix::fs::unlinkat(dir, &temp, AtFlags::empty());
    }
    result
}

/// Creates a fresh temp file `.NAME.ckpt-tmp.PID.N` in `dir`, never following a symlink.
fn create_temp(
    dir: std::os::fd::BorrowedFd<'_>,
    name: &OsStr,
) -> io::Result<(File, std::ffi::OsString)> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    for n in 0..1000 {
        let mut temp = std::ffi::OsString::from(".");
        temp.push(name);
        temp.push(format!(".ckpt-tmp.{}.{n}", std::process::id()));
        match rustix::fs::openat(dir, &temp, flags, Mode::from_raw_mode(0o600)) {
            Ok(fd) => return Ok((File::from(fd), temp)),
            Err(Errno::EXIST) => continue,
            Err(err) => return Err(err.into()),
        }
    }
    Err(io::Error::other(format!(
        "cannot create a temp file for {}",
        Path::new(name).display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn create_never_replaces_and_keeps_perms() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.ckpt-orig");
        let perms = Perms {
            mode: 0o640,
            owner: None,
        };
        assert!(create_file(&path, b"one", perms).unwrap());
        assert!(!create_file(&path, b"two", perms).unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o7777, 0o640);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }

    #[test]
    fn replace_at_never_follows_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, b"keep").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("link")).unwrap();
        let fd = File::open(dir.path()).unwrap();
        let err = replace_at(&fd, OsStr::new("link"), b"evil").unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
    }

    #[test]
    fn replace_file_replaces_a_symlinks_target() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, b"old").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        replace_file(&link, b"new").unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
    }
}
