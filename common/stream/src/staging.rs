//! A private staging directory next to the destination: a stream is unpacked there and moved into
//! place with one rename only after its trailer verified; on any failure it is removed.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// Staging dirs are named `.ckpt-staging-<pid>-<random>`.
const PREFIX: &str = ".ckpt-staging-";

/// The staging dir's mode, whatever the umask: root's alone while it holds a verified-but-not-yet
/// installed container and its CRIU images. CRIU needs no more: it opens the images dir inside
/// it once as root and then works from that fd, also as an unprivileged container's root.
const MODE: u32 = 0o700;

/// A fresh [`MODE`] directory, removed on drop unless committed.
pub struct StagingDir {
    dir: Option<tempfile::TempDir>,
}

impl StagingDir {
    /// Creates the staging dir in `parent`, so the final rename stays on one filesystem.
    pub fn new_in(parent: &Path) -> anyhow::Result<StagingDir> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{PREFIX}{}-", std::process::id()))
            .tempdir_in(parent)
            .with_context(|| format!("creating a staging dir in {}", parent.display()))?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(MODE))
            .with_context(|| format!("setting the mode of {}", dir.path().display()))?;
        Ok(StagingDir { dir: Some(dir) })
    }

    pub fn path(&self) -> &Path {
        self.dir.as_ref().map_or(Path::new(""), |d| d.path())
    }

    /// Moves the staging dir to `dest` (which must not exist, or be an empty directory).
    pub fn commit(mut self, dest: &Path) -> anyhow::Result<PathBuf> {
        let Some(dir) = self.dir.take() else {
            anyhow::bail!("staging dir already committed")
        };
        match std::fs::rename(dir.path(), dest) {
            Ok(()) => {
                let _ = dir.keep();
                Ok(dest.to_path_buf())
            }
            Err(e) => {
                self.dir = Some(dir);
                Err(e).with_context(|| format!("moving the unpacked bundle to {}", dest.display()))
            }
        }
    }
}

/// Checks that `dest`, given with the option `flag`, can receive files: it must not exist, or
/// be an empty directory.
pub fn check_destination(dest: &Path, flag: &str) -> anyhow::Result<()> {
    match std::fs::read_dir(dest) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(crate::error::usage(format!(
                    "{} exists and is not empty: give a new or empty directory to {flag}",
                    dest.display()
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("checking {}", dest.display())),
    }
}

/// The directory a destination's staging dir goes in.
pub fn parent_of(dest: &Path) -> PathBuf {
    match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Removes staging dirs in `parent` left by processes that no longer exist (killed with -9).
pub fn sweep_stale(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
