//! Command-line pieces shared by the tool binaries: common flags, their conversion into the plain
//! config types of the library crates (which never see clap), and the one entry function every
//! tool's `main` calls.

mod completions;

use std::path::PathBuf;
use std::process::ExitCode;

use ckpt_stream::error::{exit_code, one_line};
use clap::Args;

/// Runs `body` as the tool `name`: prints `tool: error: ...` on one line and maps the result to
/// the exit code (0, 1, or 2 for usage errors). Rust ignores SIGPIPE, so a closed downstream
/// surfaces as an EPIPE write error, which reaches here as a failure like any other: never a
/// silent 0.
pub fn run(name: &str, body: impl FnOnce() -> anyhow::Result<()>) -> ExitCode {
    match body() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{name}: error: {}", one_line(&err));
            exit_code(&err)
        }
    }
}

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

/// `--criu-opt OPTION`, for the tools that run CRIU.
#[derive(Debug, Args)]
pub struct CriuOptions {
    /// Pass OPTION to CRIU, as a line of a CRIU config file (e.g. `ext-unix-sk`, `link-remap`,
    /// `enable-fs ramfs`); repeatable. ckpt-dump passes it to the dump, ckpt-restore to the restore.
    #[arg(long = "criu-opt", value_name = "OPTION")]
    pub criu_options: Vec<String>,
}

/// `-P/--lxcpath`, as lxc-checkpoint spells it.
#[derive(Debug, Args)]
pub struct LxcPath {
    /// Container directory root [default: `lxc-config lxc.lxcpath`].
    #[arg(short = 'P', long = "lxcpath", value_name = "LXCPATH")]
    pub lxcpath: Option<PathBuf>,
}
