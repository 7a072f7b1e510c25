//! ckpt-dump: checkpoints a running LXC container with CRIU and writes its stream to stdout.

use std::path::PathBuf;
use std::process::ExitCode;

use ckpt_cli::{CriuOptions, KeyFile, LxcPath, Quiet, StreamOut};
use ckpt_migrate::dump::{self, DumpConfig};
use ckpt_runtime::hold;
use ckpt_stream::Compression;
use clap::Parser;

/// Checkpoint a running container (through lxc-checkpoint and CRIU) and write its stream to stdout.
/// If the stream cannot be delivered, or the receiver reports failure (--ack), the container is
/// restored here.
#[derive(Parser, Debug)]
#[command(
    name = "ckpt-dump",
    version,
    after_help = "Examples:\n  ckpt-dump u1 | ssh host2 ckpt-restore\n  \
    mkfifo /tmp/ack; set -o pipefail; ckpt-dump --ack /tmp/ack u1 | ssh host2 ckpt-restore > /tmp/ack"
)]
struct Cli {
    /// Container to checkpoint.
    #[arg(value_name = "NAME", required_unless_present = "name_flag")]
    name: Option<String>,
    /// Container to checkpoint (as lxc-checkpoint spells it).
    #[arg(
        short = 'n',
        long = "name",
        value_name = "NAME",
        conflicts_with = "name"
    )]
    name_flag: Option<String>,
    #[command(flatten)]
    lxcpath: LxcPath,
    /// Keep the container running after the checkpoint (a snapshot) instead of stopping it.
    #[arg(long)]
    leave_running: bool,
    /// Leave the rootfs out of the stream (the destination already has it).
    #[arg(long)]
    no_rootfs: bool,
    /// Stop-and-copy: send the whole rootfs after the freeze, instead of copying it while the
    /// container runs and sending only its changes after the freeze.
    #[arg(long)]
    no_precopy: bool,
    /// Compression of the whole stream: none, zstd or zstd:LEVEL.
    #[arg(long, value_name = "none|zstd[:LEVEL]", default_value = "zstd:1")]
    compress: Compression,
    /// Write timings, sizes and CRIU's dump statistics as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    stats: Option<PathBuf>,
    /// Keep the CRIU images in DIR (new or empty) for a manual restore.
    #[arg(long, value_name = "DIR")]
    keep: Option<PathBuf>,
    /// After the stream, wait for ckpt-restore's result line on FILE (a fifo or /dev/fd/N): remove
    /// the source copy on success, restore it here on failure or EOF.
    #[arg(long, value_name = "FILE")]
    ack: Option<PathBuf>,
    /// Post-copy: freeze only for CRIU's dump without the memory and the restore; the memory
    /// follows while the container already runs on the destination. Needs --ack.
    #[arg(long, requires = "ack", conflicts_with_all = ["leave_running", "keep"])]
    lazy: bool,
    #[command(flatten)]
    criu: CriuOptions,
    #[command(flatten)]
    output: StreamOut,
    #[command(flatten)]
    key: KeyFile,
    #[command(flatten)]
    quiet: Quiet,
}

fn main() -> ExitCode {
    // CRIU runs ckpt-dump as its action script, to hold the source's network (see hold.rs).
    if let Ok(action) = std::env::var(hold::ACTION_ENV) {
        return ckpt_cli::run("ckpt-dump (CRIU action script)", || {
            hold::action_script(&action)
        });
    }
    if let Some(done) = ckpt_cli::gen_completions::<Cli>() {
        return done;
    }
    let cli = Cli::try_parse().unwrap_or_else(|err| {
        // A usage error must still release the --ack fifo's writer, or the pipeline hangs.
        dump::release_ack_in(std::env::args_os());
        err.exit()
    });
    let cfg = DumpConfig {
        name: cli.name.or(cli.name_flag).unwrap_or_default(),
        lxcpath: cli.lxcpath.lxcpath,
        leave_running: cli.leave_running,
        rootfs: !cli.no_rootfs,
        precopy: !cli.no_precopy,
        compression: cli.compress,
        stats: cli.stats,
        keep: cli.keep,
        ack: cli.ack,
        lazy: cli.lazy,
        criu_options: cli.criu.criu_options,
        output: cli.output.output,
        key: cli.key.key,
        quiet: cli.quiet.quiet,
    };
    ckpt_cli::run("ckpt-dump", || dump::run(&cfg))
}
