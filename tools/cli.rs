//! Command-line pieces shared by the tool binaries: common flags and their conversion into the plain
//! config types of `ckpt_common`. Nothing in `ckpt_common` sees clap.

mod completions;

use std::path::PathBuf;

use clap::Args;

pub use ckpt_common::tool::run;
pub use completions::gen_completions;

/// `-q/--quiet`, accepted by every tool.
#[derive(Debug, Args)]
pub struct Quiet {
    /// Print no progress bar and no notes on stderr (errors are still printed).
    #[arg(short, long)]
    pub quiet: bool,
}

/// `--key FILE`, accepted by every tool that writes or reads a stream.
#[derive(Debug, Args)]
pub struct KeyFile {
    /// Authenticate the stream with the secret in FILE (its whole content, e.g. 32 random bytes or
    /// their hex); default: the secret in $CKPT_KEY, if set. A reader with a key refuses streams
    /// without a valid MAC.
    #[arg(long = "key", value_name = "FILE")]
    pub key: Option<PathBuf>,
}

/// `-o/--output FILE`, for every tool that writes a stream.
#[derive(Debug, Args)]
pub struct StreamOut {
    /// Write the stream to FILE instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// `-i/--input FILE`, for every tool that reads a stream.
#[derive(Debug, Args)]
pub struct StreamIn {
    /// Read the stream from FILE instead of stdin.
    #[arg(short, long, value_name = "FILE")]
    pub input: Option<PathBuf>,
}

/// `-P/--lxcpath`, as lxc-checkpoint spells it.
#[derive(Debug, Args)]
pub struct LxcPath {
    /// Container directory root [default: `lxc-config lxc.lxcpath`].
    #[arg(short = 'P', long = "lxcpath", value_name = "LXCPATH")]
    pub lxcpath: Option<PathBuf>,
}
