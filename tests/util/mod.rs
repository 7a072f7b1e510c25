//! The one test harness: runs the real binaries in a fresh temp dir and, when a check fails,
//! prints the command line, the working dir, a listing, stdout and stderr.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A fresh temporary directory for one test, removed at the end (kept when CKPT_KEEP_TEST_DIRS is set).
/// Every tool the package builds and installs.
pub const TOOLS: [&str; 5] = [
    "ckpt-dump",
    "ckpt-pack",
    "ckpt-unpack",
    "ckpt-restore",
    "lxc-fixtty",
];

pub struct Dir {
    tmp: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl Dir {
    pub fn new(test: &str) -> Dir {
        let tmp = tempfile::Builder::new()
            .prefix(&format!("ckpt-test-{test}-"))
            .tempdir()
            .unwrap();
        let path = tmp.path().to_path_buf();
        let tmp = if std::env::var_os("CKPT_KEEP_TEST_DIRS").is_some() {
            let _ = tmp.keep();
            None
        } else {
            Some(tmp)
        };
        Dir { tmp, path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.path.join(rel)
    }

    /// A command for one of the workspace's binaries (`ckpt-pack`, ...), run inside this dir.
    pub fn cmd(&self, tool: &str) -> TestCommand {
        let mut cmd = Command::new(bin(tool));
        cmd.current_dir(&self.path);
        TestCommand {
            cmd,
            stdin: None,
            dir: self.path.clone(),
        }
    }

    /// Any program, run inside this dir.
    pub fn program(&self, program: impl AsRef<OsStr>) -> TestCommand {
        let mut cmd = Command::new(program);
        cmd.current_dir(&self.path);
        TestCommand {
            cmd,
            stdin: None,
            dir: self.path.clone(),
        }
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        drop(self.tmp.take());
    }
}

/// Path of a binary built by cargo for these tests.
pub fn bin(tool: &str) -> PathBuf {
    let var = format!("CARGO_BIN_EXE_{tool}");
    match std::env::var_os(&var) {
        Some(path) => PathBuf::from(path),
        None => {
            // Fall back to the binary next to the test executable (target/<profile>/).
            let mut path = std::env::current_exe().unwrap();
            path.pop();
            if path.ends_with("deps") {
                path.pop();
            }
            path.join(tool)
        }
    }
}

pub struct TestCommand {
    cmd: Command,
    stdin: Option<Vec<u8>>,
    dir: PathBuf,
}

impl TestCommand {
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.cmd.arg(arg);
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, args: I) -> Self {
        self.cmd.args(args);
        self
    }

    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Self {
        self.cmd.env(key, value);
        self
    }

    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(data.into());
        self
    }

    /// Runs the command to completion and returns its output.
    pub fn output(mut self) -> Run {
        self.cmd.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        self.cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let shown = format!("{:?}", self.cmd);
        let mut child = self
            .cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
        if let Some(data) = self.stdin.take() {
            let mut stdin = child.stdin.take().unwrap();
            // The tool may stop reading early (a refused stream); that is not a test failure.
            let writer = std::thread::spawn(move || {
                let _ = stdin.write_all(&data);
            });
            let output = child.wait_with_output().unwrap();
            writer.join().unwrap();
            return Run {
                output,
                shown,
                dir: self.dir,
            };
        }
        let output = child.wait_with_output().unwrap();
        Run {
            output,
            shown,
            dir: self.dir,
        }
    }

    /// Runs and asserts exit code 0; returns the output.
    pub fn ok(self) -> Run {
        self.output().expect_code(0)
    }

    /// Runs and asserts the given non-zero exit code; returns the output.
    pub fn fails(self, code: i32) -> Run {
        self.output().expect_code(code)
    }
}

pub mod forge;
pub mod testbed;

pub struct Run {
    pub output: Output,
    pub(crate) shown: String,
    pub(crate) dir: PathBuf,
}

impl Run {
    pub fn stdout(&self) -> &[u8] {
        &self.output.stdout
    }

    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    pub fn code(&self) -> Option<i32> {
        self.output.status.code()
    }

    pub fn expect_code(self, code: i32) -> Run {
        if self.output.status.code() != Some(code) {
            self.fail(&format!(
                "expected exit code {code}, got {:?}",
                self.output.status
            ));
        }
        self
    }

    /// Asserts stderr is exactly one line containing `needle`, the shape every tool error has.
    pub fn one_line_error(self, needle: &str) -> Run {
        let err = self.stderr_str();
        if err.trim_end().lines().count() != 1 || !err.contains(needle) {
            self.fail(&format!("expected one stderr line containing {needle:?}"));
        }
        if err.contains("panicked") {
            self.fail("the tool panicked");
        }
        self
    }

    /// Panics with everything needed to understand the failure.
    pub fn fail(&self, why: &str) -> ! {
        let mut msg = String::new();
        let _ = writeln!(
            msg,
            "\n==== {why}\ncommand: {}\ndir: {}",
            self.shown,
            self.dir.display()
        );
        let _ = writeln!(msg, "listing:\n{}", listing(&self.dir));
        let _ = writeln!(msg, "status: {:?}", self.output.status);
        let out = String::from_utf8_lossy(&self.output.stdout);
        let shown: String = out.chars().take(4000).collect();
        let _ = writeln!(msg, "stdout ({} bytes):\n{shown}", self.output.stdout.len());
        let _ = writeln!(msg, "stderr:\n{}", self.stderr_str());
        panic!("{msg}");
    }
}

/// `find`-style listing of a directory, for failure reports.
pub fn listing(dir: &Path) -> String {
    let mut out = String::new();
    for entry in walkdir::WalkDir::new(dir)
        .sort_by_file_name()
        .into_iter()
        .flatten()
        .take(200)
    {
        let _ = writeln!(out, "  {}", entry.path().display());
    }
    out
}

/// True when the tests run as root; root-only tests call [`require_root`] instead of skipping.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Fails (never skips) a test that needs root, saying how to run it.
pub fn require_root(what: &str) {
    assert!(
        is_root(),
        "{what} needs root: run `sudo make test` (CI runs it as root)"
    );
}
