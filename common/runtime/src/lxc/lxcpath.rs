//! Creating an lxcpath with modes that do not depend on the umask: under `umask 077` a plain
//! `mkdir -p` makes a dir that an unprivileged container's root (uid 100000) cannot pass, and
//! its later lxc-start fails.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::Context;

/// Mode of every dir ckpt creates on the way to an lxcpath: search (x) for everyone, so an
/// idmapped container's root can reach its container dir, but listing and writing only for
/// root (LXC's own lxcpath is 0755; nobody but root needs to list it).
pub const LXCPATH_MODE: u32 = 0o711;

/// Creates `path` and its missing parents, each with mode [`LXCPATH_MODE`] whatever the umask;
/// dirs that already exist are left as they are.
pub fn create_lxcpath(path: &Path) -> anyhow::Result<()> {
    let missing: Vec<&Path> = path.ancestors().take_while(|p| !p.exists()).collect();
    for dir in missing.into_iter().rev() {
        match std::fs::create_dir(dir) {
            Ok(()) => std::fs::set_permissions(dir, std::fs::Permissions::from_mode(LXCPATH_MODE))
                .with_context(|| format!("setting the mode of {}", dir.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
        }
    }
    if !path.is_dir() {
        anyhow::bail!("{} is not a directory", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_dirs_get_their_mode_whatever_the_umask() {
        let tmp = tempfile::tempdir().unwrap();
        // (The umask is process-wide and tests run in threads: it stays as it is; any umask
        // that leaves 0711 as is proves nothing, so the mode must differ from mkdir's 0777 &
        // ~umask, which it does for the usual 022 and for 077.)
        create_lxcpath(&tmp.path().join("a/b/lxc")).unwrap();
        for dir in ["a", "a/b", "a/b/lxc"] {
            let mode = std::fs::metadata(tmp.path().join(dir))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o7777, LXCPATH_MODE, "{dir}");
        }
        // An existing dir keeps its mode.
        std::fs::set_permissions(tmp.path().join("a"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        create_lxcpath(&tmp.path().join("a/c")).unwrap();
        let mode = std::fs::metadata(tmp.path().join("a"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o700);
        assert!(create_lxcpath(&tmp.path().join("a/c")).is_ok());
    }
}
