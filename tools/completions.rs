//! Shell completion scripts, generated from each tool's own clap definition so that they cannot
//! drift from its flags.

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::{value_parser, Arg, Command, CommandFactory};
use clap_complete::Shell;

use crate::run;

/// `TOOL --gen-completions SHELL` prints TOOL's completion script for SHELL (bash, zsh, fish,
/// elvish, powershell), generated from the tool's own clap definition `C`, so it cannot drift;
/// `make install` and `make deb` install what it prints. Returns `None` for any other command line.
///
/// Hidden from --help and the man pages. It is checked before the tool's own parser, which would
/// demand a container name or an action (a required group that no exclusive flag can waive).
pub fn gen_completions<C: CommandFactory>() -> Option<ExitCode> {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    if args.first().is_none_or(|flag| flag != "--gen-completions") {
        return None;
    }
    let mut cmd = C::command();
    let name = cmd.get_name().to_string();
    let flag = Command::new("gen-completions")
        .bin_name(&name)
        .no_binary_name(true)
        .arg(
            Arg::new("shell")
                .long("gen-completions")
                .value_name("SHELL")
                .required(true)
                .value_parser(value_parser!(Shell)),
        )
        .get_matches_from(args);
    let shell = *flag.get_one::<Shell>("shell")?;
    Some(run(&name, || {
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut cmd, name.clone(), &mut script);
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(&script)
            .and_then(|()| stdout.flush())
            .context("cannot write the completion script to stdout")
    }))
}
