//! The one entry function every tool's `main` calls: runs the tool, prints `tool: error: ...` on one
//! line, and maps the result to the exit code. A broken pipe is an ordinary failure (exit 1).

use std::process::ExitCode;

use crate::error::{exit_code, one_line};

/// Runs `body` as the tool `name`. Rust ignores SIGPIPE, so a closed downstream surfaces as an EPIPE
/// write error, which reaches here as a failure like any other: never a silent 0.
pub fn run(name: &str, body: impl FnOnce() -> anyhow::Result<()>) -> ExitCode {
    match body() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{name}: error: {}", one_line(&err));
            exit_code(&err)
        }
    }
}
