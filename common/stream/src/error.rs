//! One error and exit-code policy for every tool: typed errors where callers branch, exit codes 0/1/2.

use std::process::ExitCode;

/// Errors that callers (and the exit-code policy) branch on. Everything else is an `anyhow::Error`
/// with context naming the path, fd or container.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line was wrong or the invocation cannot work (exit code 2).
    #[error("{0}")]
    Usage(String),
    /// The input is not a valid, complete ckpt stream.
    #[error("bad stream: {0}")]
    BadStream(String),
}

pub type Result<T, E = anyhow::Error> = std::result::Result<T, E>;

/// Shorthand for returning a bad-stream error from a function returning `anyhow::Result`.
pub fn bad_stream(msg: impl Into<String>) -> anyhow::Error {
    Error::BadStream(msg.into()).into()
}

/// A bad-stream error where only an `io::Error` can go (inside a `Read`): its text is the typed
/// error's.
pub fn bad_stream_io(kind: std::io::ErrorKind, msg: impl Into<String>) -> std::io::Error {
    std::io::Error::new(kind, Error::BadStream(msg.into()))
}

/// Shorthand for returning a usage error.
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    Error::Usage(msg.into()).into()
}

/// Exit codes shared by every tool (success is 0).
pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_USAGE: u8 = 2;

/// Maps an error to its exit code: usage errors are 2, everything else (broken pipes included) is 1.
pub fn exit_code(err: &anyhow::Error) -> ExitCode {
    match err.downcast_ref::<Error>() {
        Some(Error::Usage(_)) => ExitCode::from(EXIT_USAGE),
        _ => ExitCode::from(EXIT_FAILURE),
    }
}

/// Formats an error and its cause chain on one line: `outer: cause: root cause`.
pub fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for (i, cause) in err.chain().enumerate() {
        let text = cause.to_string();
        if i > 0 {
            // Skip a cause that only repeats what is already said.
            if line.ends_with(&text) {
                continue;
            }
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace('\n', " ")
}
