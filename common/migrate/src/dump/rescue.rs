//! What ckpt-dump does to keep exactly one running copy when a migration fails or when it is killed
//! midway (through its guard): resume the held source copy here, or end it once the receiver
//! confirmed (or, without --ack, once the stream was delivered).

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use ckpt_runtime::lxc::{Container, State};
use ckpt_runtime::{freezer, hold};

use crate::ack::read_result;
use crate::guard::{log, settle};

/// Phases ckpt-dump records for its guard.
pub mod phase {
    /// lxc-checkpoint is (or may be) running.
    pub const DUMPING: &str = "dumping";
    /// The container is held (frozen, network cut); its stream is being written.
    pub const STREAMING: &str = "streaming";
    /// The whole stream, trailer included, was written.
    pub const SENT: &str = "sent";
    /// The receiver reported the container running: the held source copy must go.
    pub const ACKED: &str = "acked";
    /// --leave-running: the container was thawed after the dump; nothing to undo.
    pub const SNAPSHOT: &str = "snapshot";
}

/// Ends the held source copy and removes it once the destination runs the container.
pub fn give_up_source(container: &Container) -> anyhow::Result<()> {
    if !matches!(container.state(), Ok(State::Stopped)) {
        hold::end(container)?;
    }
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
        let discard_images = || {
            if remove_images {
                let _ = std::fs::remove_dir_all(&images);
            }
        };
        let resume = || {
            match hold::resume(&container) {
                Ok(()) => log(&format!("{}: resumed here", container.name)),
                Err(e) => log(&format!(
                    "{}: resuming it here failed ({e:#}); its images are in {}: {}",
                    container.name,
                    images.display(),
                    restore_hint(&container, &images)
                )),
            }
            discard_images();
        };
        let give_up = || {
            match give_up_source(&container) {
                Ok(()) => log(&format!(
                    "{}: runs on the destination; source copy removed",
                    container.name
                )),
                Err(e) => log(&format!(
                    "{}: runs on the destination; removing the source copy failed: {e:#}",
                    container.name
                )),
            }
            discard_images();
        };
        match (phase, ack) {
            (phase::DUMPING, _) => {
                settle(&images);
                resume();
            }
            (phase::STREAMING | phase::SENT, Some(ack)) => {
                let name = container.name.clone();
                match read_result(BufReader::new(ack), &name) {
                    Ok(_) => give_up(),
                    Err(_) => resume(),
                }
            }
            (phase::STREAMING, None) => resume(),
            (phase::SENT, None) => {
                if let Err(e) = hold::end(&container) {
                    log(&format!(
                        "{}: ending the source copy failed: {e:#}",
                        container.name
                    ));
                }
                log(&format!(
                    "{}: stream complete, source copy stopped as without a guard; \
                     remove it with lxc-destroy -n {} -P {} once it runs on the destination",
                    container.name,
                    container.name,
                    container.lxcpath.display()
                ));
                discard_images();
            }
            (phase::ACKED, _) => give_up(),
            (phase::SNAPSHOT, _) => {
                freezer::thaw(&container);
                discard_images();
            }
            // Killed before the freeze: the container runs; only the private work dir is left.
            _ => discard_images(),
        }
    }
}
