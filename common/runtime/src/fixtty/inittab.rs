//! The rootfs's `/etc/inittab`: lines that run a program on a tty or the console (busybox
//! `tty1::respawn:...`, `console::askfirst:...`, sysvinit `1:2345:respawn:/sbin/getty 38400 tty1`)
//! cannot work once the container has no ttys; lxc-fixtty comments them out, keeping a backup.

use std::ffi::OsStr;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use crate::lxc::atomic::{self, Perms};

use super::devtty::is_tty_name;
use super::problem::Problem;

/// What a commented-out line starts with.
const COMMENT: &str = "# lxc-fixtty: ";
/// Name of the backup of the original inittab, next to it.
pub(super) const BACKUP: &str = "inittab.ckpt-orig";

/// The rootfs's `/etc/inittab`, read below a directory fd that never followed a symlink.
pub(super) struct Inittab {
    etc: OwnedFd,
    /// Shown in messages: `ROOTFS/etc/inittab`.
    pub(super) path: PathBuf,
    text: Vec<u8>,
    perms: Perms,
}

/// Reads `ROOTFS/etc/inittab`; `None` when there is none, or when it or `/etc` is a symlink or not a
/// regular file (then it is not a busybox or sysvinit inittab lxc-fixtty would edit).
pub(super) fn open(rootfs: &OwnedFd, rootfs_path: &Path) -> anyhow::Result<Option<Inittab>> {
    let path = rootfs_path.join("etc/inittab");
    let dir_flags = OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC;
    let etc = match rustix::fs::openat(rootfs, "etc", dir_flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT | Errno::LOOP | Errno::NOTDIR) => return Ok(None),
        Err(err) => {
            return Err(err)
                .with_context(|| format!("cannot open {}", rootfs_path.join("etc").display()))
        }
    };
    let perms = match atomic::perms_at(&etc, OsStr::new("inittab")) {
        Ok(Some(perms)) => perms,
        Ok(None) | Err(_) => return Ok(None),
    };
    let file_flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(&etc, "inittab", file_flags, Mode::empty())
        .with_context(|| format!("cannot open {}", path.display()))?;
    let mut text = Vec::new();
    std::fs::File::from(fd)
        .read_to_end(&mut text)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Some(Inittab {
        etc,
        path,
        text,
        perms,
    }))
}

/// Finds the lines that run something on a tty or the console.
pub(super) fn survey(inittab: &Inittab, problems: &mut Vec<Problem>) {
    for (i, line) in inittab.text.split(|&b| b == b'\n').enumerate() {
        let line = String::from_utf8_lossy(line);
        if uses_tty(&line) {
            problems.push(Problem::InittabTty {
                line: i + 1,
                text: line.trim_end().to_string(),
            });
        }
    }
}

/// Comments out the given lines (1-based) after saving the original once as `inittab.ckpt-orig`.
/// Returns whether the backup was made now.
pub(super) fn apply(inittab: &Inittab, lines: &[usize]) -> anyhow::Result<bool> {
    let backup = inittab.path.with_file_name(BACKUP);
    let saved = atomic::create_at(
        &inittab.etc,
        OsStr::new(BACKUP),
        &inittab.text,
        inittab.perms,
    )
    .with_context(|| format!("cannot save {}", backup.display()))?;
    let mut out = Vec::with_capacity(inittab.text.len() + lines.len() * COMMENT.len());
    for (i, line) in inittab.text.split(|&b| b == b'\n').enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        if lines.contains(&(i + 1)) {
            out.extend_from_slice(COMMENT.as_bytes());
        }
        out.extend_from_slice(line);
    }
    atomic::replace_at(&inittab.etc, OsStr::new("inittab"), &out)
        .with_context(|| format!("cannot write {}", inittab.path.display()))?;
    Ok(saved)
}

/// Whether an inittab line (`id:runlevels:action:process`) runs on a tty or the console: its id
/// is `ttyN`/`console` (busybox uses the id as the controlling tty), or it runs a getty on one.
fn uses_tty(line: &str) -> bool {
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return false;
    }
    let fields: Vec<&str> = trimmed.splitn(4, ':').collect();
    let [id, _, _, process] = fields.as_slice() else {
        return false;
    };
    let is_tty = |word: &str| {
        let word = word.strip_prefix("/dev/").unwrap_or(word);
        word == "console" || (is_tty_name(word) && word != "tty")
    };
    if is_tty(id.trim()) {
        return true;
    }
    let mut words = process.split_whitespace();
    let runs_getty = words
        .next()
        .is_some_and(|program| program.ends_with("getty"));
    runs_getty && process.split_whitespace().skip(1).any(is_tty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busybox_and_sysvinit_tty_lines() {
        for line in [
            "tty1::respawn:/bin/getty -L tty1 115200 vt100",
            "console::askfirst:/bin/sh",
            "  tty2::askfirst:-/bin/sh",
            "/dev/tty3::respawn:/bin/sh",
            "1:2345:respawn:/sbin/getty 38400 tty1",
            "::respawn:/sbin/getty -L 115200 /dev/tty1 vt100",
            "co:2345:respawn:/sbin/agetty console 115200",
        ] {
            assert!(uses_tty(line), "{line}");
        }
    }

    #[test]
    fn other_lines_are_kept() {
        for line in [
            "::sysinit:/etc/init.d/rcS",
            "::respawn:/sbin/ckpt-counter /var/ckpt-counter",
            "::respawn:/bin/nc -ll -p 7000 -e /bin/cat",
            "# tty1::respawn:/bin/getty -L tty1 115200 vt100",
            "ttyS0::respawn:/sbin/getty -L ttyS0 115200 vt100",
            "::ctrlaltdel:/sbin/reboot",
            "id:2:initdefault:",
            "",
        ] {
            assert!(!uses_tty(line), "{line}");
        }
    }
}
