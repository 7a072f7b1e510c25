//! LXC wrappers shared by every tool: the container config model, a container's paths and state,
//! the host facts that decide which LXC keys work, and running lxc-* programs.

pub mod atomic;
mod command;
mod config;
mod container;
mod error;
mod idmap;
mod kernel;
mod lxcpath;
mod relocate;

use std::path::PathBuf;

pub use command::run_command;
pub use config::{in_namespace, Config, Setting};
pub use container::{Container, State};
pub use error::LxcError;
pub use idmap::RootIds;
pub use kernel::{apparmor_enabled, cgroup_version, devices_cgroup_version, CgroupVersion};
pub use lxcpath::create_lxcpath;
pub use relocate::PathRewrite;

/// Where LXC keeps containers when no `-P` is given: `lxc-config lxc.lxcpath` (which knows the
/// system config and, for a non-root user, `~/.local/share/lxc`), or `/var/lib/lxc` when LXC is
/// not installed.
pub fn default_lxcpath() -> Result<PathBuf, LxcError> {
    match run_command("lxc-config", ["lxc.lxcpath"]) {
        Ok(out) if !out.trim().is_empty() => Ok(PathBuf::from(out.trim_end_matches('\n'))),
        Ok(_) | Err(LxcError::NotInstalled { .. }) => Ok(PathBuf::from("/var/lib/lxc")),
        Err(err) => Err(err),
    }
}
