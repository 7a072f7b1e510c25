//! ckpt-unpack: reads a ckpt stream and unpacks it to a new bundle dir, lists it, or verifies it.

use std::path::PathBuf;
use std::process::ExitCode;

use ckpt_cli::{KeyFile, Quiet, StreamIn};
use ckpt_migrate::unpack::{self, Action, UnpackConfig};
use clap::{ArgGroup, Parser};

/// Read a ckpt stream (plain or zstd) and unpack, list or verify it.
#[derive(Parser, Debug)]
#[command(name = "ckpt-unpack", version, group(ArgGroup::new("action").required(true).args(["dir", "list", "verify"])),
    after_help = "Examples:\n  ckpt-unpack -C /tmp/u1 < u1.ckpt\n  ssh host1 ckpt-dump u1 | ckpt-unpack --list")]
struct Cli {
    /// Unpack into DIR, which must not exist or be empty; it appears only once the stream verified.
    #[arg(short = 'C', long = "directory", value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Print the manifest and one line per entry (type, mode, owner, size, hash, path).
    #[arg(short, long)]
    list: bool,
    /// Read and check the whole stream; write nothing.
    #[arg(long)]
    verify: bool,
    #[command(flatten)]
    input: StreamIn,
    #[command(flatten)]
    key: KeyFile,
    #[command(flatten)]
    quiet: Quiet,
}

fn main() -> ExitCode {
    if let Some(done) = ckpt_cli::gen_completions::<Cli>() {
        return done;
    }
    let cli = Cli::parse();
    let action = match (cli.dir, cli.list) {
        (Some(dir), _) => Action::Extract(dir),
        (None, true) => Action::List,
        (None, false) => Action::Verify,
    };
    let cfg = UnpackConfig {
        input: cli.input.input,
        action,
        key: cli.key.key,
        quiet: cli.quiet.quiet,
    };
    ckpt_cli::run("ckpt-unpack", || unpack::run(&cfg))
}
