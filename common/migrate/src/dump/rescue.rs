//! What ckpt-dump does to keep exactly one running copy when a migration fails or when it is killed
//! midway (through its guard): restore the container here, thaw it, or give up the source once
//! the receiver confirmed.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use ckpt_runtime::checkpoint;
use ckpt_runtime::lxc::{Container, State};

use crate::ack::read_result;
use crate::guard::{log, settle};

/// Phases ckpt-dump records for its guard.
pub mod phase {
    /// lxc-checkpoint is (or may be) running.
    pub const DUMPING: &str = "dumping";
    /// The container is stopped; its stream is being written.
    pub const STREAMING: &str = "streaming";
    /// The whole stream, trailer included, was written.
    pub const SENT: &str = "sent";
    /// The receiver reported the container running: the source copy must go.
    pub const ACKED: &str = "acked";
    /// --leave-running: the container kept running; nothing to undo.
    pub const SNAPSHOT: &str = "snapshot";
}

/// Thaws a container a killed CRIU may have left frozen. CRIU freezes through the cgroup-v1
/// freezer when one is mounted, which lxc-info does not report and lxc-unfreeze (cgroup2) does not
/// undo: write THAWED there as well, for every freezer cgroup of the container's init.
pub fn thaw(container: &Container) {
    let _ = container.lxc("lxc-unfreeze", &[]);
    let Some(pid) = container.init_pid() else {
        return;
    };
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    for line in cgroups.lines() {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (
            fields.next(),
            fields.next().unwrap_or(""),
            fields.next().unwrap_or(""),
        );
        if controllers.split(',').any(|c| c == "freezer") {
            let _ = std::fs::write(
                format!("/sys/fs/cgroup/freezer{path}/freezer.state"),
                "THAWED",
            );
        }
    }
}

/// Removes the stopped source copy once the destination runs the container.
pub fn give_up_source(container: &Container) -> anyhow::Result<()> {
    container.lxc("lxc-destroy", &[])?;
    Ok(())
}

/// What to run by hand to restore `container` from the `images` kept for it.
pub fn restore_hint(container: &Container, images: &Path) -> String {
    format!(
        "lxc-checkpoint -r -d -n {} -P {} -D {}",
        container.name,
        container.lxcpath.display(),
        images.display()
    )
}

/// What ckpt-dump's guard does, by the phase its tool died in. `ack` is the guard's own copy of
/// the --ack reader; `remove_images` is false for a --keep dir.
pub fn recovery(
    container: Container,
    images: PathBuf,
    remove_images: bool,
    ack: Option<File>,
) -> impl FnOnce(&str) {
    move |phase| {
        let restore_here = || match checkpoint::restore(&container, &images) {
            Ok(()) => {
                log(&format!(
                    "{}: restored here from {}",
                    container.name,
                    images.display()
                ));
                if remove_images {
                    let _ = std::fs::remove_dir_all(&images);
                }
            }
            Err(e) => log(&format!(
                "{}: restoring here failed ({e:#}); restore it with: {}",
                container.name,
                restore_hint(&container, &images)
            )),
        };
        let discard_images = || {
            if remove_images {
                let _ = std::fs::remove_dir_all(&images);
            }
        };
        let give_up = || {
            match give_up_source(&container) {
                Ok(()) => log(&format!(
                    "{}: runs on the destination; stopped source copy removed",
                    container.name
                )),
                Err(e) => log(&format!(
                    "{}: runs on the destination; removing the source copy failed: {e}",
                    container.name
                )),
            }
            discard_images();
        };
        match (phase, ack) {
            (phase::DUMPING, _) => {
                settle(&images);
                thaw(&container);
                let stopped = matches!(container.state(), Ok(State::Stopped));
                if stopped && images.join("inventory.img").is_file() {
                    restore_here();
                }
            }
            (phase::STREAMING | phase::SENT, Some(ack)) => {
                let name = container.name.clone();
                match read_result(BufReader::new(ack), &name) {
                    Ok(_) => give_up(),
                    Err(_) => restore_here(),
                }
            }
            (phase::STREAMING, None) => restore_here(),
            (phase::SENT, None) => log(&format!(
                "{}: stream complete, left stopped here as without a guard; \
                 remove it with lxc-destroy -n {} -P {} and rm -r {} \
                 once it runs on the destination",
                container.name,
                container.name,
                container.lxcpath.display(),
                images.display()
            )),
            (phase::ACKED, _) => give_up(),
            // Killed before the freeze (or after a snapshot): the container runs; only the
            // private work dir is left to remove.
            _ => discard_images(),
        }
    }
}
