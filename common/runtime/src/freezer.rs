//! A container's freezer: the cgroup-v1 freezer LXC hands CRIU (`--freeze-cgroup`) when one is
//! mounted, else cgroup2's `cgroup.freeze`. Freezing before CRIU spares its 100 ms freezer poll;
//! CRIU saves the freezer state in its images and writes it back, so every path thaws explicitly.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::lxc::Container;

/// How long a freeze may take to settle before it counts as failed.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(10);

/// The freezer cgroup of one container.
#[derive(Debug, Clone)]
pub struct Freezer {
    dir: PathBuf,
    v1: bool,
}

impl Freezer {
    /// The freezer of `container`'s cgroup (found from its init's), when it runs.
    pub fn of(container: &Container) -> Option<Freezer> {
        let pid = container.init_pid()?;
        let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        Freezer::from_cgroups(&cgroups, Path::new("/sys/fs/cgroup"))
    }

    /// From `/proc/PID/cgroup` text: the v1 freezer line if there is one, else the cgroup2 line;
    /// the container's own cgroup (`lxc.payload.NAME`), not a nested one its init sits in.
    fn from_cgroups(cgroups: &str, root: &Path) -> Option<Freezer> {
        let mut unified = None;
        for line in cgroups.lines() {
            let mut fields = line.splitn(3, ':');
            let (id, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            if controllers.split(',').any(|c| c == "freezer") {
                return Some(Freezer {
                    dir: root.join("freezer").join(container_cgroup(path)),
                    v1: true,
                });
            }
            if id == "0" && controllers.is_empty() {
                unified = Some(container_cgroup(path));
            }
        }
        let path = unified?;
        let dir = match root.join("unified").is_dir() {
            true => root.join("unified").join(&path),
            false => root.join(&path),
        };
        Some(Freezer { dir, v1: false })
    }

    /// Freezes every task of the container and waits until the kernel says they are frozen.
    pub fn freeze(&self) -> anyhow::Result<()> {
        let (file, value) = match self.v1 {
            true => ("freezer.state", "FROZEN"),
            false => ("cgroup.freeze", "1"),
        };
        let path = self.dir.join(file);
        std::fs::write(&path, value)
            .with_context(|| format!("freezing: writing {}", path.display()))?;
        let start = Instant::now();
        while !self.is_frozen() {
            if start.elapsed() > FREEZE_TIMEOUT {
                let _ = self.thaw();
                anyhow::bail!(
                    "the container did not freeze within {} s ({})",
                    FREEZE_TIMEOUT.as_secs(),
                    self.dir.display()
                );
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    /// Lets the container's tasks run again.
    pub fn thaw(&self) -> anyhow::Result<()> {
        let (file, value) = match self.v1 {
            true => ("freezer.state", "THAWED"),
            false => ("cgroup.freeze", "0"),
        };
        let path = self.dir.join(file);
        std::fs::write(&path, value).with_context(|| format!("thawing: writing {}", path.display()))
    }

    /// Whether every task is frozen.
    pub fn is_frozen(&self) -> bool {
        match self.v1 {
            true => std::fs::read_to_string(self.dir.join("freezer.state"))
                .is_ok_and(|s| s.trim() == "FROZEN"),
            false => std::fs::read_to_string(self.dir.join("cgroup.events"))
                .is_ok_and(|s| s.lines().any(|l| l == "frozen 1")),
        }
    }
}

/// `/lxc.payload.NAME` of `/lxc.payload.NAME/init.scope` (the cgroup LXC made for the container,
/// which holds every task); a path without such a component as it is.
pub(crate) fn container_cgroup(path: &str) -> PathBuf {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let end = parts
        .iter()
        .position(|p| p.starts_with("lxc.payload"))
        .map_or(parts.len(), |i| i + 1);
    parts[..end].iter().collect()
}

/// Thaws a container whatever froze it: LXC's own freezer (lxc-unfreeze) and the one CRIU was
/// given, which CRIU leaves frozen when killed and restores frozen from images of a frozen
/// container, while lxc-info still says RUNNING. Best effort: the caller checks what it needs.
pub fn thaw(container: &Container) {
    let _ = container.lxc("lxc-unfreeze", &[]);
    if let Some(freezer) = Freezer::of(container) {
        let _ = freezer.thaw();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_v1_freezer_of_the_container_cgroup_is_preferred() {
        let text = "12:freezer:/lxc.payload.u1\n11:memory:/lxc.payload.u1\n0::/lxc.payload.u1/init.scope\n";
        let f = Freezer::from_cgroups(text, Path::new("/sys/fs/cgroup")).unwrap();
        assert!(f.v1);
        assert_eq!(f.dir, Path::new("/sys/fs/cgroup/freezer/lxc.payload.u1"));
    }

    #[test]
    fn cgroup2_alone_uses_the_container_cgroup_not_a_nested_one() {
        let text = "0::/lxc.payload.u1/init.scope\n";
        let root = tempfile::tempdir().unwrap();
        let f = Freezer::from_cgroups(text, root.path()).unwrap();
        assert!(!f.v1);
        assert_eq!(f.dir, root.path().join("lxc.payload.u1"));
        std::fs::create_dir_all(root.path().join("unified")).unwrap();
        let f = Freezer::from_cgroups(text, root.path()).unwrap();
        assert_eq!(f.dir, root.path().join("unified/lxc.payload.u1"));
    }

    #[test]
    fn paths_without_lxc_payload_are_kept() {
        assert_eq!(container_cgroup("/a/b"), Path::new("a/b"));
        assert_eq!(
            container_cgroup("/x/lxc.payload.c/system.slice/cron.service"),
            Path::new("x/lxc.payload.c")
        );
    }
}
