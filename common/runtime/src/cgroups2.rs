//! The container's cgroup2 directories on a hybrid host (cgroup v1 controllers, cgroup2 on
//! /sys/fs/cgroup/unified). LXC hands CRIU the v1 hierarchies to remap, not this one, so CRIU puts
//! the restored tasks back into the cgroup2 paths they had on the source, and does not create
//! those directories: systemd watches `cgroup.events` in each (inotify), whose restore then fails
//! (`fsnotify: Unable to open .../system.slice/.../cgroup.events`). So ckpt-dump records the
//! directories below the container's cgroup next to the images; ckpt-restore points CRIU's
//! cgroup2 root at the cgroup LXC makes for the restored container (`cgroup-root`), and creates
//! the recorded directories there when CRIU runs it as its `pre-restore` action script (LXC has
//! made the container's cgroup by then; made earlier, it would make LXC pick another name).

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::freezer::container_cgroup;
use crate::lxc::Container;

/// Where ckpt-dump lists the directories, in the image dir (CRIU ignores files it does not know).
pub const DIRS_FILE: &str = "ckpt-cgroup2-dirs";
/// Where a hybrid host mounts cgroup2.
const UNIFIED: &str = "/sys/fs/cgroup/unified";
/// For the `pre-restore` action: the image dir, and the restored container's cgroup2 directory.
pub const IMAGES_ENV: &str = "CKPT_CGROUP2_IMAGES";
pub const BASE_ENV: &str = "CKPT_CGROUP2_BASE";

/// Records the cgroup2 directories below `container`'s own in `images` (relative to it).
/// Nothing on a host without a separate cgroup2 mount.
pub fn record(container: &Container, images: &Path) -> anyhow::Result<()> {
    let Some(pid) = container.init_pid() else {
        return Ok(());
    };
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    let Some(own) = cgroups.lines().find_map(|l| l.strip_prefix("0::")) else {
        return Ok(());
    };
    if !Path::new(UNIFIED).is_dir() {
        return Ok(());
    }
    let list = subtree(&Path::new(UNIFIED).join(container_cgroup(own)))?;
    if list.is_empty() {
        return Ok(());
    }
    let text: String = list.iter().map(|d| format!("{}\n", d.display())).collect();
    let path = images.join(DIRS_FILE);
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}

/// The cgroup2 directory LXC will make for the restored `container` on this host (as LXC picks
/// it: `lxc.payload.NAME`, or with `-1`, `-2`... when a hierarchy has that name already), when
/// `images` recorded cgroup2 directories; relative to the cgroup2 mount.
pub fn restore_base(container: &Container, images: &Path) -> Option<PathBuf> {
    if !images.join(DIRS_FILE).is_file() || !Path::new(UNIFIED).is_dir() {
        return None;
    }
    let hierarchies: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    (0..1000).find_map(|i| {
        let name = match i {
            0 => format!("lxc.payload.{}", container.name),
            _ => format!("lxc.payload.{}-{i}", container.name),
        };
        let taken = hierarchies.iter().any(|h| h.join(&name).exists());
        (!taken).then(|| PathBuf::from(name))
    })
}

/// What ckpt-restore does when CRIU runs it as its action script: at `pre-restore`, create the
/// recorded directories below the restored container's cgroup2 directory.
pub fn action_script(action: &str) -> anyhow::Result<()> {
    if action != "pre-restore" {
        return Ok(());
    }
    let (Some(images), Some(base)) = (std::env::var_os(IMAGES_ENV), std::env::var_os(BASE_ENV))
    else {
        return Ok(());
    };
    let base = Path::new(UNIFIED).join(base);
    std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    prepare(Path::new(&images), &base).map(drop)
}

/// Creates the directories `images` lists below `base` where missing (LXC removes them with the
/// container's cgroup); returns the ones it created, parents first.
pub fn prepare(images: &Path, base: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let Ok(text) = std::fs::read_to_string(images.join(DIRS_FILE)) else {
        return Ok(Vec::new());
    };
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
        let dir = base.join(rel);
        if !dir.is_dir() {
            std::fs::create_dir(&dir)
                .with_context(|| format!("creating the cgroup {}", dir.display()))?;
            created.push(dir);
        }
    }
    Ok(created)
}

/// Every directory below `dir`, relative to it, parents first.
fn subtree(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut found: Vec<PathBuf> = Vec::new();
    let mut i = 0;
    let mut next = vec![PathBuf::new()];
    while i < next.len() {
        let here = dir.join(&next[i]);
        let mut children: Vec<PathBuf> = std::fs::read_dir(&here)
            .with_context(|| format!("listing {}", here.display()))?
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| next[i].join(e.file_name()))
            .collect();
        children.sort();
        found.extend(children.iter().cloned());
        next.extend(children);
        i += 1;
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recorded_tree_is_created_where_missing() {
        let source = tempfile::tempdir().unwrap();
        for d in ["init.scope", "system.slice/cron.service"] {
            std::fs::create_dir_all(source.path().join(d)).unwrap();
        }
        let list = subtree(source.path()).unwrap();
        assert_eq!(
            list,
            [
                Path::new("init.scope"),
                Path::new("system.slice"),
                Path::new("system.slice/cron.service")
            ]
        );
        let images = tempfile::tempdir().unwrap();
        let text: String = list.iter().map(|d| format!("{}\n", d.display())).collect();
        std::fs::write(images.path().join(DIRS_FILE), text).unwrap();
        let dest = tempfile::tempdir().unwrap();
        std::fs::create_dir(dest.path().join("init.scope")).unwrap();
        let created = prepare(images.path(), dest.path()).unwrap();
        assert_eq!(created.len(), 2, "{created:?}");
        assert!(dest.path().join("system.slice/cron.service").is_dir());
        assert!(dest.path().join("init.scope").is_dir());
    }

    #[test]
    fn a_hostile_list_is_refused() {
        let images = tempfile::tempdir().unwrap();
        std::fs::write(images.path().join(DIRS_FILE), "../../etc\n").unwrap();
        let dest = tempfile::tempdir().unwrap();
        assert!(prepare(images.path(), dest.path()).is_err());
    }
}
