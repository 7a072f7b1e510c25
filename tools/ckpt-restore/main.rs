//! ckpt-restore: reads a ckpt stream, installs the container under LXCPATH and restores it running.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use ckpt_cli::{CriuOptions, KeyFile, LxcPath, Quiet, StreamIn};
use ckpt_migrate::restore::{self, RestoreConfig};
use ckpt_runtime::{cgroups2, hold};
use clap::Parser;

/// Read a ckpt stream from stdin, verify it completely, install the container under LXCPATH and
/// restore it running. Prints one JSON result line on stdout; exits 0 only when the container runs.
#[derive(Parser, Debug)]
#[command(
    name = "ckpt-restore",
    version,
    after_help = "Examples:\n  ckpt-dump u1 | ssh host2 ckpt-restore\n  \
    ckpt-restore -P /srv/lxc < u1.ckpt\n  ckpt-restore --check < u1.ckpt"
)]
struct Cli {
    #[command(flatten)]
    lxcpath: LxcPath,
    /// Verify the stream and say whether it could be restored here; change nothing.
    #[arg(long)]
    check: bool,
    /// Write timings, sizes and CRIU's restore statistics as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    stats: Option<PathBuf>,
    #[command(flatten)]
    criu: CriuOptions,
    /// Give up a CRIU restore that has not finished after SECONDS: kill it and fail (the sender
    /// resumes its copy).
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    timeout: u64,
    #[command(flatten)]
    input: StreamIn,
    #[command(flatten)]
    key: KeyFile,
    #[command(flatten)]
    quiet: Quiet,
}

fn main() -> ExitCode {
    // CRIU runs ckpt-restore as its action script, for the container's cgroup2 directories.
    if let Ok(action) = std::env::var(hold::ACTION_ENV) {
        return ckpt_cli::run("ckpt-restore (CRIU action script)", || {
            cgroups2::action_script(&action)
        });
    }
    if let Some(done) = ckpt_cli::gen_completions::<Cli>() {
        return done;
    }
    let cli = Cli::parse();
    let cfg = RestoreConfig {
        lxcpath: cli.lxcpath.lxcpath,
        stats: cli.stats,
        check: cli.check,
        input: cli.input.input,
        key: cli.key.key,
        criu_options: cli.criu.criu_options,
        timeout: Duration::from_secs(cli.timeout),
        quiet: cli.quiet.quiet,
    };
    ckpt_cli::run("ckpt-restore", || restore::run(&cfg))
}
