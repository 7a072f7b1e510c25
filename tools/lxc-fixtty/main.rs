//! lxc-fixtty: makes an LXC container checkpointable by CRIU. Parses the command line into a
//! `FixConfig` and runs `ckpt_runtime::fixtty::run`.

use std::process::ExitCode;

use ckpt_cli::{LxcPath, Quiet};
use ckpt_runtime::fixtty::{self, FixConfig, Mode};
use clap::{ArgGroup, Parser};

/// Make an LXC container checkpointable by CRIU: no LXC ttys or console, /dev/console denied,
/// regular-file /dev/tty* in the rootfs, no getty on a tty in /etc/inittab, no AppArmor settings
/// on a kernel without AppArmor. Idempotent; keeps the original config as config.ckpt-orig.
#[derive(Debug, Parser)]
#[command(name = "lxc-fixtty", version, group(ArgGroup::new("container").required(true)))]
struct Opts {
    #[command(flatten)]
    lxcpath: LxcPath,

    /// Change nothing; exit 1 listing each problem, 0 when there is none.
    #[arg(long, conflicts_with = "dry_run")]
    check: bool,

    /// Change nothing; print each change a fix would make.
    #[arg(long)]
    dry_run: bool,

    #[command(flatten)]
    quiet: Quiet,

    /// The container, as lxc-checkpoint's -n NAME.
    #[arg(short = 'n', long = "name", value_name = "NAME", group = "container")]
    name_flag: Option<String>,

    /// The container's name.
    #[arg(value_name = "NAME", group = "container")]
    name: Option<String>,
}

impl Opts {
    fn into_config(self) -> FixConfig {
        let mode = match (self.check, self.dry_run) {
            (true, _) => Mode::Check,
            (_, true) => Mode::DryRun,
            _ => Mode::Fix,
        };
        FixConfig {
            lxcpath: self.lxcpath.lxcpath,
            // The group makes exactly one of them present.
            name: self.name.or(self.name_flag).unwrap_or_default(),
            mode,
            quiet: self.quiet.quiet,
        }
    }
}

fn main() -> ExitCode {
    if let Some(done) = ckpt_cli::gen_completions::<Opts>() {
        return done;
    }
    let cfg = Opts::parse().into_config();
    ckpt_cli::run("lxc-fixtty", || fixtty::run(&cfg))
}
