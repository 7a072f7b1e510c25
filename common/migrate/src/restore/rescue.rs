//! What ckpt-restore's guard undoes when ckpt-restore dies midway (even by SIGKILL): a container
//! nobody was told about must not run, and LXCPATH must be left as it was.

use std::path::PathBuf;

use ckpt_runtime::lxc::Container;

use crate::guard::{log, settle, settle_with};

/// Guard phase: the stream is being unpacked into the staging dir.
pub const UNPACKING: &str = "unpacking";
/// Guard phase: the container is being installed and restored, or runs but is not yet reported.
pub const RESTORING: &str = "restoring";

/// What ckpt-restore's guard undoes, by the phase its tool died in: a container nobody was told
/// about must not run, and LXCPATH must be left as it was.
pub fn recovery(container: Container, staging: PathBuf) -> impl FnOnce(&str) {
    move |phase| {
        if phase == RESTORING {
            // A restore fed by our page server (lazy memory) cannot finish without it: end it,
            // and whatever CRIU process lxc-checkpoint starts on it after that, rather than wait.
            let images = staging.join("images");
            match images.join(ckpt_runtime::lazy::DAEMON_LOG).exists() {
                true => settle_with(&staging, || ckpt_runtime::checkpoint::kill_criu(&images)),
                false => settle(&staging),
            }
            stop(&container);
            let _ = std::fs::remove_dir_all(container.dir());
            log(&format!(
                "{}: removed the unreported restore from {}",
                container.name,
                container.lxcpath.display()
            ));
        }
        let _ = std::fs::remove_dir_all(&staging);
    }
}

/// Kills a restored container (its directory is removed separately).
pub fn stop(container: &Container) {
    let _ = container.lxc("lxc-stop", &["-k"]);
}
