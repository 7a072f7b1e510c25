//! A watchdog that finishes or undoes a migration step when its tool dies in the middle, even by
//! SIGKILL: ckpt-dump's guard restores (or, once the receiver confirmed, removes) the source
//! container; ckpt-restore's guard removes a container it had not yet reported as running. It is
//! how "never lose the container, never run it twice" survives `kill -9`.

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use ckpt_runtime::lxc::atomic::replace_file;
use ckpt_runtime::lxc::Container;
use ckpt_runtime::procs::processes;

/// How often the guard looks whether its tool is still alive.
const POLL: Duration = Duration::from_millis(50);
/// Where guards log what they did.
pub const LOG: &str = "/var/log/ckpt/guard.log";

/// The tool's side of a guard: it records the current phase in a journal file the guard reads
/// when the tool is gone.
pub struct Guard {
    journal: PathBuf,
}

impl Guard {
    /// Forks the guard. It keeps only the fds in `keep` (everything else, the stream pipes
    /// included, is closed, so a dead tool's pipes still close), waits for this process to end,
    /// and then, unless the phase is `done`, runs `recover(phase)`. Call it while this process
    /// has a single thread.
    pub fn spawn(
        journal: PathBuf,
        keep: &[RawFd],
        recover: impl FnOnce(&str),
    ) -> anyhow::Result<Guard> {
        // fork() copies only the calling thread: a lock another thread held would stay locked in
        // the guard forever. Refuse loudly rather than fork a guard that may hang.
        let threads = thread_count();
        if threads != Some(1) {
            anyhow::bail!(
                "internal error: the guard must be forked while the process has one thread, it has {}",
                threads.map_or_else(|| "an unknown number of".to_string(), |n| n.to_string())
            );
        }
        let guard = Guard { journal };
        guard.phase("start")?;
        let parent = std::process::id();
        // SAFETY: fork() in a process that has one thread (checked above); the child only runs
        // ordinary Rust code and exits with _exit.
        match unsafe { libc::fork() } {
            -1 => Err(std::io::Error::last_os_error()).context("starting the guard process"),
            0 => {
                detach(keep);
                while std::os::unix::process::parent_id() == parent {
                    std::thread::sleep(POLL);
                }
                let phase = std::fs::read_to_string(&guard.journal).unwrap_or_default();
                let phase = phase.trim();
                if !phase.is_empty() && phase != "done" {
                    log(&format!(
                        "{} ended in phase {phase}: recovering",
                        guard.journal.display()
                    ));
                    recover(phase);
                }
                let _ = std::fs::remove_file(&guard.journal);
                // SAFETY: ends the forked child without running the parent's exit handlers.
                unsafe { libc::_exit(0) }
            }
            _ => Ok(guard),
        }
    }

    /// Records the phase the tool is in (atomically and durably: the guard reads either the old
    /// or the new, even after a crash of the host).
    pub fn phase(&self, phase: &str) -> anyhow::Result<()> {
        replace_file(&self.journal, phase.as_bytes())
            .with_context(|| format!("writing {}", self.journal.display()))
    }

    /// The step completed or was undone by the tool itself: the guard has nothing to do.
    pub fn done(self) -> anyhow::Result<()> {
        self.phase("done")
    }
}

/// This process's thread count, from /proc/self/status.
fn thread_count() -> Option<usize> {
    ckpt_runtime::procs::own_status("Threads")?.parse().ok()
}

/// The journal file of `tool`'s guard for `container`, next to (not inside) its directory.
pub fn journal(container: &Container, tool: &str) -> PathBuf {
    container
        .lxcpath
        .join(format!(".{tool}-{}.journal", container.name))
}

/// In the guard: a session of its own, no terminal, stdin/stdout on /dev/null, stderr to the log,
/// and no other fd than `keep`.
fn detach(keep: &[RawFd]) {
    let _ = rustix::process::setsid();
    // Its own name, so `pkill ckpt-dump` (a user stopping the tool) does not also kill the guard.
    let _ = rustix::thread::set_name(c"ckpt-guard");
    if let Ok(null) = File::options().read(true).write(true).open("/dev/null") {
        let _ = rustix::stdio::dup2_stdin(&null);
        let _ = rustix::stdio::dup2_stdout(&null);
    }
    let _ = std::fs::create_dir_all("/var/log/ckpt");
    if let Ok(log) = File::options().create(true).append(true).open(LOG) {
        let _ = rustix::stdio::dup2_stderr(&log);
    }
    let mut keep: Vec<RawFd> = keep.to_vec();
    keep.sort_unstable();
    let mut from = 3;
    for fd in keep.into_iter().chain([RawFd::MAX]) {
        if fd > from {
            // SAFETY: closes fds this forked child does not use; nothing in it refers to them.
            unsafe { libc::syscall(libc::SYS_close_range, from as u32, (fd - 1) as u32, 0u32) };
        }
        from = fd.saturating_add(1);
    }
}

/// Appends a line to the guard log (stderr of the guard).
pub fn log(message: &str) {
    eprintln!(
        "{} ckpt guard[{}]: {message}",
        humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
        std::process::id()
    );
}

/// Waits until no process has `path` on its command line (a CRIU or lxc-checkpoint the dead tool
/// started on that image dir), for at most a minute.
pub fn settle(path: &Path) {
    settle_with(path, || {});
}

/// [`settle`], running `meanwhile` before each look (e.g. to end what cannot end by itself).
pub fn settle_with(path: &Path, meanwhile: impl Fn()) {
    let needle = path.as_os_str().as_encoded_bytes();
    for _ in 0..1200 {
        meanwhile();
        let busy = processes().any(|p| !p.is_self() && p.cmdline_contains(needle));
        if !busy {
            return;
        }
        std::thread::sleep(POLL);
    }
}

/// The raw fd of an open file, for [`Guard::spawn`]'s keep list.
pub fn raw(file: &impl AsRawFd) -> RawFd {
    file.as_raw_fd()
}
