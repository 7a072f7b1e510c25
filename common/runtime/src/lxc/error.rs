//! Typed errors of the LXC wrappers, for callers that branch on them (a missing container, an
//! unsupported rootfs, LXC not installed); each message says what to do.

use std::path::PathBuf;

/// What can go wrong when looking at an LXC container.
#[derive(Debug, thiserror::Error)]
pub enum LxcError {
    /// The container name cannot name a directory under an lxcpath.
    #[error("{name:?} is not a container name ({why}): use a plain name like lxc-create -n takes")]
    BadName { name: String, why: &'static str },
    /// `LXCPATH/NAME/config` does not exist.
    #[error("no container {name} in {}: check the name and -P", lxcpath.display())]
    NoSuchContainer { name: String, lxcpath: PathBuf },
    /// The config has no `lxc.rootfs.path`, so the container would share the host's root.
    #[error("container {name} has no lxc.rootfs.path in {}: only containers with their own rootfs are supported", config.display())]
    NoRootfs { name: String, config: PathBuf },
    /// The config still uses pre-LXC-3.0 keys that LXC no longer reads.
    #[error("{} uses the legacy key {key}: convert it first with lxc-update-config -c {}", config.display(), config.display())]
    LegacyConfig { key: String, config: PathBuf },
    /// `lxc.rootfs.path` names a storage backend other than a plain directory.
    #[error("container {name}: rootfs type {kind} is not supported, only dir (lxc.rootfs.path = {value})")]
    UnsupportedRootfs {
        name: String,
        kind: String,
        value: String,
    },
    /// An lxc-* program is not on PATH.
    #[error("{program} is not installed: install LXC (Debian: apt-get install lxc)")]
    NotInstalled { program: String },
    /// An lxc-* program ran and failed; `stderr` is the last line it printed.
    #[error("`{command}` failed ({status}){}", if stderr.is_empty() { String::new() } else { format!(": {stderr}") })]
    CommandFailed {
        command: String,
        status: String,
        stderr: String,
    },
    /// An lxc-* program could not be started or read for another reason.
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
}
