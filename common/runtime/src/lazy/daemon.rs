//! The destination side: CRIU's lazy-pages daemon, started on the images before the restore, and
//! the page server that answers it from a [`PageStore`] over a socket pair.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::protocol::{Iov, ADD_F, CLOSE, FORCE_CLOSE, GET, PE_PRESENT};
use super::PageStore;

/// The log CRIU's lazy-pages daemon writes in the image dir (a restore that is fed lazily).
pub const DAEMON_LOG: &str = "lazy-pages.log";
/// Where its standard error goes (what it says before its log is open).
const DAEMON_ERRORS: &str = "lazy-pages.err";

/// A running `criu lazy-pages` for one restore; killed on drop unless it was waited for.
pub struct LazyDaemon {
    child: Option<Child>,
    images: PathBuf,
}

impl LazyDaemon {
    /// Starts the daemon on `images` (where the restore will find its socket) and waits until it
    /// is ready; it asks for pages on `ps_socket`, the other end of the socket [`serve`] answers on.
    pub fn start(images: &Path, ps_socket: OwnedFd) -> anyhow::Result<LazyDaemon> {
        let (ready_read, ready_write) = rustix::pipe::pipe().context("creating a pipe")?;
        inheritable(&ps_socket)?;
        inheritable(&ready_write)?;
        let errors = std::fs::File::create(images.join(DAEMON_ERRORS))
            .context("creating the lazy-pages daemon's error file")?;
        let child = Command::new("criu")
            .arg("lazy-pages")
            .arg("--page-server")
            .arg("--ps-socket")
            .arg(fd_number(&ps_socket))
            .arg("--status-fd")
            .arg(fd_number(&ready_write))
            .arg("-D")
            .arg(images)
            .args(["-o", DAEMON_LOG, "-v4"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(errors)
            .spawn()
            .context("running criu lazy-pages (is CRIU installed?)")?;
        // Ours are closed now: the daemon holds the only copies.
        drop(ps_socket);
        drop(ready_write);
        let mut daemon = LazyDaemon {
            child: Some(child),
            images: images.to_path_buf(),
        };
        let mut byte = [0u8; 1];
        match std::fs::File::from(ready_read).read(&mut byte) {
            Ok(1) => Ok(daemon),
            _ => Err(daemon.failure("did not start")),
        }
    }

    /// Waits for the daemon to end, which it does once every page is in the restored tasks; gives
    /// up (and kills it) after `timeout`.
    pub fn wait(mut self, timeout: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        let Some(child) = self.child.as_mut() else {
            return Ok(());
        };
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return match status.success() {
                    true => Ok(()),
                    false => Err(self.failure("failed")),
                };
            }
            if started.elapsed() > timeout {
                return Err(self.failure(&format!("did not finish in {} s", timeout.as_secs())));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn failure(&mut self, what: &str) -> anyhow::Error {
        self.kill();
        let log = self.images.join(DAEMON_LOG);
        let errors = std::fs::read_to_string(self.images.join(DAEMON_ERRORS)).unwrap_or_default();
        let reason = crate::criu::log_error(&log)
            .or_else(|| {
                errors
                    .lines()
                    .map(str::trim)
                    .find(|l| !l.is_empty())
                    .map(str::to_string)
            })
            .unwrap_or_else(|| "no reason logged".into());
        anyhow::anyhow!(
            "CRIU's lazy-pages daemon {what}: {reason} (log: {})",
            log.display()
        )
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for LazyDaemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Answers the lazy-pages daemon on `sock` from `store` until it ends the session, which it does
/// once it has put every page in place. Fails when the store fails (the daemon, cut off, then
/// ends too) or when the daemon hangs up first.
pub fn serve(mut sock: UnixStream, store: &PageStore) -> anyhow::Result<()> {
    loop {
        let ask = Iov::read(&mut sock)
            .context("reading the lazy-pages daemon")?
            .context("CRIU's lazy-pages daemon hung up before all memory was in place")?;
        match ask.command() {
            GET => {
                let pid = u32::try_from(ask.dst).context("a page request for no process")?;
                let pages = store.take(pid, ask.vaddr, ask.pages)?;
                let answer = Iov {
                    cmd: ADD_F | PE_PRESENT << 16,
                    pages: pages.len as u64 / super::PAGE_SIZE,
                    ..ask
                };
                answer
                    .write(&mut sock)
                    .context("answering the lazy-pages daemon")?;
                sock.write_all(pages.bytes())
                    .context("sending pages to the lazy-pages daemon")?;
            }
            CLOSE | FORCE_CLOSE => {
                sock.write_all(&0i32.to_ne_bytes())
                    .context("ending the page-server session")?;
                return Ok(());
            }
            other => anyhow::bail!("the lazy-pages daemon sent an unknown command {other:#x}"),
        }
    }
}

/// Lets a child process inherit `fd` (Rust opens everything close-on-exec).
fn inheritable(fd: &impl AsFd) -> anyhow::Result<()> {
    rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())
        .context("passing a descriptor to CRIU")
}

fn fd_number(fd: &impl AsFd) -> String {
    use std::os::fd::AsRawFd;
    fd.as_fd().as_raw_fd().to_string()
}
