//! The private directory CRIU writes a checkpoint's images into: in memory (/dev/shm) when the
//! container's memory fits there, else next to the container; or a user's --keep dir.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

use ckpt_runtime::lxc::Container;

/// Headroom kept free on /dev/shm beyond the container's memory.
const SHM_HEADROOM: u64 = 256 << 20;

/// The work dir while CRIU writes into it: root's alone, whatever the umask (under umask 022 a
/// plain mkdir in /dev/shm would let every user read the container's memory). After the dump
/// it gets the modes of [`ckpt_runtime::images::grant`].
const MODE: u32 = 0o700;

pub struct WorkDir {
    temp: Option<tempfile::TempDir>,
    kept: Option<PathBuf>,
}

impl WorkDir {
    /// A fresh work dir for checkpointing `container`, or `keep` (created; must be new or empty).
    pub fn new(container: &Container, keep: Option<&Path>) -> anyhow::Result<WorkDir> {
        if let Some(keep) = keep {
            ckpt_stream::check_destination(keep, "--keep")?;
            std::fs::create_dir_all(keep)
                .with_context(|| format!("creating {}", keep.display()))?;
            private(keep)?;
            return Ok(WorkDir {
                temp: None,
                kept: Some(keep.to_path_buf()),
            });
        }
        let parent = if fits_in_shm(container) {
            PathBuf::from("/dev/shm")
        } else {
            container.lxcpath.clone()
        };
        let temp = tempfile::Builder::new()
            .prefix(&format!(".ckpt-{}-", container.name))
            .tempdir_in(&parent)
            .with_context(|| format!("creating a work dir in {}", parent.display()))?;
        private(temp.path())?;
        Ok(WorkDir {
            temp: Some(temp),
            kept: None,
        })
    }

    pub fn path(&self) -> &Path {
        match (&self.temp, &self.kept) {
            (Some(t), _) => t.path(),
            (None, Some(k)) => k,
            (None, None) => Path::new("/nonexistent"),
        }
    }

    /// Removes a private work dir (a --keep dir stays).
    pub fn finish(mut self) -> anyhow::Result<()> {
        if let Some(temp) = self.temp.take() {
            let path = temp.path().to_path_buf();
            temp.close()
                .with_context(|| format!("removing {}", path.display()))?;
        }
        Ok(())
    }

    /// Keeps the images for a manual restore and returns where they are.
    pub fn keep_for_rescue(mut self) -> PathBuf {
        match self.temp.take() {
            Some(temp) => temp.keep(),
            None => self.kept.take().unwrap_or_default(),
        }
    }
}

fn private(dir: &Path) -> anyhow::Result<()> {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(MODE))
        .with_context(|| format!("setting the mode of {}", dir.display()))
}

/// Whether /dev/shm has room for the container's memory (its cgroup's memory.current).
fn fits_in_shm(container: &Container) -> bool {
    let Ok(stat) = rustix::fs::statvfs("/dev/shm") else {
        return false;
    };
    let free = stat.f_bavail * stat.f_frsize;
    let used = container
        .lxc("lxc-cgroup", &["memory.current"])
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    // Unknown usage: assume a generous 1 GiB.
    free > used.unwrap_or(1 << 30) + SHM_HEADROOM
}
