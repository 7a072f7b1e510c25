//! ckpt-pack: writes the ckpt stream of a container or of an unpacked bundle to stdout.

use std::path::PathBuf;
use std::process::ExitCode;

use ckpt_cli::{KeyFile, LxcPath, Quiet, StreamOut};
use ckpt_migrate::pack::{self, PackConfig, Source};
use ckpt_stream::Compression;
use clap::Parser;

/// Write the ckpt stream of a container (its dir, rootfs and CRIU images) or of an unpacked bundle.
#[derive(Parser, Debug)]
#[command(
    name = "ckpt-pack",
    version,
    after_help = "Examples:\n  ckpt-pack /tmp/u1 | ssh host2 ckpt-restore\n  ckpt-pack -n u1 -D /tmp/checkpoint > u1.ckpt"
)]
struct Cli {
    /// Bundle directory written by ckpt-unpack (instead of -n NAME).
    #[arg(value_name = "BUNDLE", conflicts_with_all = ["name", "images", "no_rootfs"], required_unless_present = "name")]
    bundle: Option<PathBuf>,
    /// Container to stream from LXCPATH.
    #[arg(short, long, value_name = "NAME")]
    name: Option<String>,
    #[command(flatten)]
    lxcpath: LxcPath,
    /// CRIU image directory to include, such as lxc-checkpoint -D leaves.
    #[arg(
        short = 'D',
        long = "checkpoint-dir",
        value_name = "CHECKPOINT_DIR",
        requires = "name"
    )]
    images: Option<PathBuf>,
    /// Leave the rootfs out (the receiver already has it, e.g. on shared storage).
    #[arg(long, requires = "name")]
    no_rootfs: bool,
    /// Compression of the whole stream: none, zstd or zstd:LEVEL.
    #[arg(long, value_name = "none|zstd[:LEVEL]", default_value = "none")]
    compress: Compression,
    #[command(flatten)]
    output: StreamOut,
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
    let source = match (cli.bundle, cli.name) {
        (Some(dir), _) => Source::Bundle(dir),
        (None, Some(name)) => Source::Container {
            name,
            lxcpath: cli.lxcpath.lxcpath,
            images: cli.images,
            rootfs: !cli.no_rootfs,
        },
        (None, None) => unreachable!("clap requires BUNDLE or -n NAME"),
    };
    let cfg = PackConfig {
        source,
        compression: cli.compress,
        output: cli.output.output,
        key: cli.key.key,
        quiet: cli.quiet.quiet,
    };
    ckpt_cli::run("ckpt-pack", || pack::run(&cfg))
}
