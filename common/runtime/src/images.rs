//! Who may read a CRIU image dir: root, and the group of the container's root. CRIU restores an
//! unprivileged container partly from inside its user namespace, as the container's root (host
//! uid/gid 100000, say), and opens images such as tty-info.img there: a dir and files private to
//! host root fail with `Unable to open tty-info.img: Permission denied`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::Context;

use crate::lxc::RootIds;

/// The image dir: root may do anything, the container's root group may only open names in it
/// (search, no listing, no writing), everyone else nothing.
pub const DIR_MODE: u32 = 0o710;
/// An image file: root reads and writes, the container's root group only reads, others nothing.
/// Group-readable rather than owned by the container's root, so that a process of that id (in
/// this or another container sharing the map) can read the images but never change what CRIU,
/// running as host root, will parse; and not world-readable: images hold the container's memory.
pub const FILE_MODE: u32 = 0o640;

/// Gives `dir` and everything in it to host root with the group of the container's `root`
/// ([`DIR_MODE`] for dirs, [`FILE_MODE`] for files), whatever umask and owners they were
/// created with. For a privileged container (group 0) that makes the images private to root.
/// Symlinks are neither followed nor changed.
pub fn grant(dir: &Path, root: RootIds) -> anyhow::Result<()> {
    set(dir, root.gid, DIR_MODE)?;
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            grant(&path, root)?;
        } else if kind.is_file() {
            set(&path, root.gid, FILE_MODE)?;
        }
    }
    Ok(())
}

fn set(path: &Path, gid: u32, mode: u32) -> anyhow::Result<()> {
    std::os::unix::fs::lchown(path, Some(0), Some(gid))
        .with_context(|| format!("giving {} to root:{gid}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    }

    #[test]
    fn images_get_their_modes_whatever_they_had() {
        if !rustix::process::geteuid().is_root() {
            // chown needs root; the e2e test tests/unprivileged.rs covers this as root.
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("images");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("pages-1.img"), b"x").unwrap();
        std::fs::set_permissions(dir.join("pages-1.img"), PermissionsExt::from_mode(0o600))
            .unwrap();
        std::fs::write(dir.join("tty-info.img"), b"x").unwrap();
        std::fs::set_permissions(dir.join("tty-info.img"), PermissionsExt::from_mode(0o666))
            .unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.join("link")).unwrap();
        let root = RootIds {
            uid: 100000,
            gid: 100000,
        };
        grant(&dir, root).unwrap();
        assert_eq!(mode(&dir), DIR_MODE);
        for file in ["pages-1.img", "tty-info.img"] {
            let path = dir.join(file);
            assert_eq!(mode(&path), FILE_MODE, "{file}");
            let meta = std::fs::metadata(&path).unwrap();
            assert_eq!(
                (
                    std::os::unix::fs::MetadataExt::uid(&meta),
                    std::os::unix::fs::MetadataExt::gid(&meta)
                ),
                (0, 100000)
            );
        }
        assert_eq!(
            mode(Path::new("/etc/passwd")) & 0o002,
            0,
            "the link was not followed"
        );
    }
}
