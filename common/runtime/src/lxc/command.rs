//! Runs an lxc-* program and captures its output, so a failure names the command and the last
//! line it printed on stderr instead of scattering LXC's own log lines over ours.

use std::ffi::OsStr;
use std::io::ErrorKind;
use std::process::{Command, Stdio};

use super::LxcError;

/// Runs `program args...` with stdin closed and returns its stdout (lossy UTF-8).
///
/// Errors: [`LxcError::NotInstalled`] when the program is not on PATH, [`LxcError::CommandFailed`]
/// (with the command line and the last non-empty stderr line) when it exits non-zero.
pub fn run_command<I, S>(program: &str, args: I) -> Result<String, LxcError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<S> = args.into_iter().collect();
    let output = Command::new(program)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|source| match source.kind() {
            ErrorKind::NotFound => LxcError::NotInstalled {
                program: program.to_string(),
            },
            _ => LxcError::Spawn {
                program: program.to_string(),
                source,
            },
        })?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let status = match output.status.code() {
        Some(code) => format!("exit status {code}"),
        None => output.status.to_string(),
    };
    Err(LxcError::CommandFailed {
        command: command_line(program, &args),
        status,
        stderr: last.to_string(),
    })
}

/// `program arg arg`, for messages.
fn command_line<S: AsRef<OsStr>>(program: &str, args: &[S]) -> String {
    let mut line = program.to_string();
    for arg in args {
        line.push(' ');
        line.push_str(&arg.as_ref().to_string_lossy());
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_program_is_not_installed() {
        let err = run_command("lxc-no-such-program-ckpt", ["-h"]).unwrap_err();
        assert!(matches!(err, LxcError::NotInstalled { .. }), "{err}");
        assert!(err.to_string().contains("apt-get install lxc"), "{err}");
    }

    #[test]
    fn failure_names_command_and_last_stderr_line() {
        let err = run_command(
            "sh",
            [
                "-c",
                "echo noise >&2; echo 'the reason' >&2; echo >&2; exit 3",
            ],
        )
        .unwrap_err();
        let text = err.to_string();
        assert_eq!(text, "`sh -c echo noise >&2; echo 'the reason' >&2; echo >&2; exit 3` failed (exit status 3): the reason");
    }

    #[test]
    fn success_returns_stdout() {
        assert_eq!(
            run_command("sh", ["-c", "echo RUNNING"]).unwrap(),
            "RUNNING\n"
        );
    }
}
