//! Command-line pieces shared by the tool binaries: common flags and their conversion into the plain
//! config types of `ckpt_common`. Nothing in `ckpt_common` sees clap.

use std::path::PathBuf;

use clap::Args;

pub use ckpt_common::tool::run;

/// `-q/--quiet`, accepted by every tool.
#[derive(Debug, Args)]
pub struct Quiet {
    /// Print no progress bar and no notes on stderr (errors are still printed).
    #[arg(short, long)]
    pub quiet: bool,
}

/// `-P/--lxcpath`, as lxc-checkpoint spells it.
#[derive(Debug, Args)]
pub struct LxcPath {
    /// Container directory root [default: `lxc-config lxc.lxcpath`].
    #[arg(short = 'P', long = "lxcpath", value_name = "LXCPATH")]
    pub lxcpath: Option<PathBuf>,
}
