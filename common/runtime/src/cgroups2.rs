//! The container's cgroup2 directories on a hybrid host (cgroup v1 controllers, cgroup2 on
//! /sys/fs/cgroup/unified). LXC hands CRIU the v1 hierarchies to remap, not this one, so CRIU puts
//! the restored tasks back into the cgroup2 paths they had, and does not create those directories:
//! systemd watches `cgroup.events` in each (inotify), whose restore then fails (`fsnotify: Unable
//! to open .../system.slice/.../cgroup.events`). ckpt-dump records the directories next to the
//! images; ckpt-restore creates the missing ones before CRIU runs.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::freezer::container_cgroup;
use crate::lxc::Container;

/// Where ckpt-dump lists the directories, in the image dir (CRIU ignores files it does not know).
pub const DIRS_FILE: &str = "ckpt-cgroup2-dirs";
/// Where a hybrid host mounts cgroup2.
const UNIFIED: &str = "/sys/fs/cgroup/unified";

/// Records the cgroup2 directories of `container` (its own and every one below) in `images`.
/// Nothing on a host without a separate cgroup2 mount.
pub fn record(container: &Container, images: &Path) -> anyhow::Result<()> {
    let Some(pid) = container.init_pid() else {
        return Ok(());
    };
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    let Some(own) = cgroups.lines().find_map(|l| l.strip_prefix("0::")) else {
        return Ok(());
    };
    let list = subtree(Path::new(UNIFIED), &container_cgroup(own))?;
    if list.is_empty() {
        return Ok(());
    }
    let text: String = list.iter().map(|d| format!("{}\n", d.display())).collect();
    let path = images.join(DIRS_FILE);
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}

/// Creates the directories `images` lists that do not exist yet under `root` (the host's cgroup2
/// mount when None); returns the ones it created, deepest last, for [`remove`] on failure.
pub fn prepare(images: &Path, root: Option<&Path>) -> anyhow::Result<Vec<PathBuf>> {
    let root = root.unwrap_or(Path::new(UNIFIED));
    let Ok(text) = std::fs::read_to_string(images.join(DIRS_FILE)) else {
        return Ok(Vec::new());
    };
    if !root.is_dir() {
        return Ok(Vec::new());
    }
    let mut created = Vec::new();
    for rel in text.lines().map(Path::new) {
        let plain = rel
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !plain {
            anyhow::bail!(
                "{DIRS_FILE} names {:?}, which is not a plain relative path",
                rel
            );
        }
        let dir = root.join(rel);
        if !dir.is_dir() {
            std::fs::create_dir(&dir)
                .with_context(|| format!("creating the cgroup {}", dir.display()))?;
            created.push(dir);
        }
    }
    Ok(created)
}

/// Removes cgroups [`prepare`] created (deepest first); best effort.
pub fn remove(created: &[PathBuf]) {
    for dir in created.iter().rev() {
        let _ = std::fs::remove_dir(dir);
    }
}

/// `dir` (relative to `root`) and every directory below it, parents first.
fn subtree(root: &Path, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut found = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < found.len() {
        let here = root.join(&found[i]);
        let mut children: Vec<PathBuf> = std::fs::read_dir(&here)
            .with_context(|| format!("listing {}", here.display()))?
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| found[i].join(e.file_name()))
            .collect();
        children.sort();
        found.extend(children);
        i += 1;
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recorded_tree_is_created_where_missing_and_removed_again() {
        let source = tempfile::tempdir().unwrap();
        for d in [
            "lxc.payload.c/init.scope",
            "lxc.payload.c/system.slice/cron.service",
        ] {
            std::fs::create_dir_all(source.path().join(d)).unwrap();
        }
        let list = subtree(
            source.path(),
            &container_cgroup("/lxc.payload.c/init.scope"),
        )
        .unwrap();
        assert_eq!(list[0], Path::new("lxc.payload.c"));
        assert_eq!(list.len(), 4);
        let images = tempfile::tempdir().unwrap();
        let text: String = list.iter().map(|d| format!("{}\n", d.display())).collect();
        std::fs::write(images.path().join(DIRS_FILE), text).unwrap();
        let dest = tempfile::tempdir().unwrap();
        std::fs::create_dir(dest.path().join("lxc.payload.c")).unwrap();
        let created = prepare(images.path(), Some(dest.path())).unwrap();
        assert_eq!(created.len(), 3, "{created:?}");
        assert!(dest
            .path()
            .join("lxc.payload.c/system.slice/cron.service")
            .is_dir());
        remove(&created);
        assert!(!dest.path().join("lxc.payload.c/system.slice").exists());
        assert!(dest.path().join("lxc.payload.c").is_dir());
    }

    #[test]
    fn a_hostile_list_is_refused() {
        let images = tempfile::tempdir().unwrap();
        std::fs::write(images.path().join(DIRS_FILE), "../../etc\n").unwrap();
        let dest = tempfile::tempdir().unwrap();
        assert!(prepare(images.path(), Some(dest.path())).is_err());
    }
}
