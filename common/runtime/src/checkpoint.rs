//! Dumps and restores a container through lxc-checkpoint (LXC knows its namespaces, cgroups and
//! mounts), handing CRIU per-command options through CRIU_CONFIG_FILE.

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::cgroups2;
use crate::criu::{self, MountMode, OptionsFile, DUMP_OPTIONS, RESTORE_OPTIONS};
use crate::freezer;
use crate::lxc::{Container, State};

/// How long a restored container may take to report RUNNING.
const RUNNING_TIMEOUT: Duration = Duration::from_secs(20);

/// Checkpoints `container` into `images` (an empty dir), leaving its tasks in place (frozen if
/// they were frozen before: CRIU writes the freezer state back). With `hold_script`, CRIU runs that
/// program as its action script (see [`crate::hold`]), which cuts the network after the images
/// are written. `extra`: the user's own CRIU options. The images get the modes of
/// [`crate::images::grant`], so that they can be restored as they are.
pub fn dump(
    container: &Container,
    images: &Path,
    hold_script: Option<&Path>,
    extra: &[String],
) -> anyhow::Result<()> {
    let mut options: Vec<String> = DUMP_OPTIONS.iter().map(|o| o.to_string()).collect();
    if let Some(script) = hold_script {
        options.push(format!("action-script {}", script.display()));
    }
    options.extend(extra.iter().cloned());
    let options = OptionsFile::new(&options)?;
    let log = images.join("lxc-checkpoint.log");
    let child = lxc_checkpoint(container, images, &options, &log)?
        .spawn()
        .context("running lxc-checkpoint (is LXC installed?)")?;
    let status = wait_unstuck(child, images, None)?;
    if status.is_some_and(|s| s.success()) && images.join("inventory.img").is_file() {
        // Restorable as they are (a --keep dir, a rescue), by the container's root too.
        let root = container.load_config()?.root_ids();
        return crate::images::grant(images, root);
    }
    Err(failure("dump", container, &images.join("dump.log"), &log))
}

/// A lazy dump ([`dump_lazy`]) whose images are written: CRIU now serves the lazy memory on
/// `pages` until the session ends, the tasks held (frozen, cut) meanwhile.
pub struct LazyDump {
    pub pages: crate::lazy::PageSource,
    child: std::process::Child,
    container: Container,
    images: PathBuf,
    log: PathBuf,
}

impl LazyDump {
    /// Ends the page-server session (every page pulled) and waits for CRIU to finish the dump.
    pub fn finish(self) -> anyhow::Result<()> {
        let closed = self.pages.close();
        let status = wait_unstuck(self.child, &self.images, Some(LAZY_END_TIMEOUT))?;
        closed?;
        match status {
            Some(s) if s.success() => Ok(()),
            _ => Err(failure(
                "dump",
                &self.container,
                &self.images.join("dump.log"),
                &self.log,
            )),
        }
    }

    /// Gives the dump up (the pages were not all pulled): CRIU sees the session end, and ends
    /// the dump leaving the tasks as they are.
    pub fn abandon(self) {
        drop(self.pages);
        let _ = wait_unstuck(self.child, &self.images, Some(LAZY_END_TIMEOUT));
    }
}

/// How long CRIU may take to end a lazy dump once its page-server session ended.
const LAZY_END_TIMEOUT: Duration = Duration::from_secs(30);

/// Like [`dump`], with CRIU's `lazy-pages`: the images leave out the memory that can follow
/// later, which CRIU then serves on a socket pair. Returns once the images are written (CRIU's
/// post-dump action ran: with `hold_script` the network is cut by then) and CRIU waits with the
/// pages; `mark` is a path of ours the action creates to say so.
pub fn dump_lazy(
    container: &Container,
    images: &Path,
    hold_script: &Path,
    extra: &[String],
    mark: &Path,
) -> anyhow::Result<LazyDump> {
    let (ours, criu_end) =
        std::os::unix::net::UnixStream::pair().context("creating a socket pair")?;
    rustix::io::fcntl_setfd(&criu_end, rustix::io::FdFlags::empty())
        .context("passing a socket to CRIU")?;
    let mut options: Vec<String> = DUMP_OPTIONS.iter().map(|o| o.to_string()).collect();
    options.push(format!("action-script {}", hold_script.display()));
    options.push("lazy-pages".into());
    options.push(format!(
        "ps-socket {}",
        std::os::fd::AsRawFd::as_raw_fd(&criu_end)
    ));
    options.extend(extra.iter().cloned());
    let options = OptionsFile::new(&options)?;
    let log = images.join("lxc-checkpoint.log");
    let mut child = lxc_checkpoint(container, images, &options, &log)?
        .env(crate::hold::POST_DUMP_MARK_ENV, mark)
        .spawn()
        .context("running lxc-checkpoint (is LXC installed?)")?;
    drop(criu_end);
    loop {
        if mark.exists() {
            break;
        }
        if child.try_wait()?.is_some() {
            return Err(failure("dump", container, &images.join("dump.log"), &log));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let root = container.load_config()?.root_ids();
    crate::images::grant(images, root)?;
    Ok(LazyDump {
        pages: crate::lazy::PageSource::new(ours),
        child,
        container: container.clone(),
        images: images.to_path_buf(),
        log,
    })
}

/// How long CRIU helpers may sit stopped (their main process killed) before they are reaped.
const STUCK_GRACE: Duration = Duration::from_secs(3);

/// Waits for lxc-checkpoint. If CRIU is killed midway, a helper it forked can be left behind
/// (orphaned, or stopped) holding LXC's log pipe, and lxc-checkpoint would wait for it forever:
/// such helpers (CRIU processes working on `images` whose parent is gone, or that are all
/// stopped) are killed after a grace time.
///
/// With a `timeout`, gives up once it has passed: kills lxc-checkpoint's process group (it is
/// started in one of its own) and every CRIU process working on `images`, and returns `None`.
fn wait_unstuck(
    mut child: std::process::Child,
    images: &Path,
    timeout: Option<Duration>,
) -> anyhow::Result<Option<ExitStatus>> {
    let started = Instant::now();
    let mut stuck_since: Option<Instant> = None;
    // Woken the moment lxc-checkpoint ends (every poll costs downtime), else every 50 ms.
    let pid = rustix::process::Pid::from_child(&child);
    let exited = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let criu = criu_processes(images);
        if timeout.is_some_and(|t| started.elapsed() > t) {
            if let Some(group) = rustix::process::Pid::from_raw(child.id() as i32) {
                let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
            }
            for (pid, _, _) in criu {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
            let _ = child.wait();
            return Ok(None);
        }
        let all_stopped = !criu.is_empty()
            && criu
                .iter()
                .all(|(_, state, _)| matches!(state, 'T' | 't' | 'Z'));
        let orphaned = criu.iter().any(|(_, _, ppid)| *ppid == 1);
        match (all_stopped || orphaned, stuck_since) {
            (false, _) => stuck_since = None,
            (true, None) => stuck_since = Some(Instant::now()),
            (true, Some(since)) if since.elapsed() > STUCK_GRACE => {
                for (pid, _, _) in criu {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
            }
            (true, Some(_)) => {}
        }
        let tick = Duration::from_millis(50);
        match &exited {
            Some(pidfd) => _ = ckpt_stream::io::wait_readable(pidfd.as_fd(), tick),
            None => std::thread::sleep(tick),
        }
    }
}

/// Kills every CRIU process working on `images` (a restore that cannot finish: its lazy memory
/// will not come); lxc-checkpoint then fails.
pub fn kill_criu(images: &Path) {
    for (pid, _, _) in criu_processes(images) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
}

/// CRIU processes whose command line names `images`, with their state letter and parent pid.
fn criu_processes(images: &Path) -> Vec<(rustix::process::Pid, char, u32)> {
    let needle = images.as_os_str().as_encoded_bytes();
    crate::procs::processes()
        .filter(|p| p.comm().as_deref() == Some("criu") && p.cmdline_contains(needle))
        .filter_map(|p| {
            let (state, ppid) = p.state_and_parent()?;
            Some((rustix::process::Pid::from_raw(p.pid as i32)?, state, ppid))
        })
        .collect()
}

/// Restores `container` (installed under its lxcpath) from `images`, detached from our stdio so
/// that `ssh host ckpt-restore` returns, thaws it (images of a frozen container restore frozen),
/// waits until LXC reports it RUNNING, and announces its addresses on the LAN. The mount mode is
/// guessed from the images; a restore that fails on mounts is tried once more in the other mode.
/// A restore that has not finished after `timeout` is killed and fails. `extra`: the user's own
/// CRIU options. `hook`: the program CRIU runs as its action script to create the cgroup2
/// directories the images need (see [`crate::cgroups2`]). Returns the mount mode that worked.
/// `images` gets the modes of [`crate::images::grant`] first.
pub fn restore(
    container: &Container,
    images: &Path,
    extra: &[String],
    timeout: Duration,
    hook: Option<&Path>,
) -> anyhow::Result<MountMode> {
    let modes = restore_modes(images, extra);
    let mut failed = None;
    for mode in modes {
        if failed.is_some() {
            // The failed attempt left nothing running; make sure before trying again.
            let _ = container.lxc("lxc-stop", &["-k"]);
        }
        match restore_in(container, images, extra, timeout, hook, mode) {
            Ok(()) => return Ok(mode),
            Err(Failed { error, mounts }) => {
                let retry = mounts && failed.is_none();
                failed = Some(error);
                if !retry {
                    break;
                }
            }
        }
    }
    Err(failed.unwrap_or_else(|| anyhow::anyhow!("no restore was tried")))
}

/// The mount modes to try for `images`, best guess first (only the compat mode when the user's
/// `extra` options ask for it).
pub fn restore_modes(images: &Path, extra: &[String]) -> Vec<MountMode> {
    match extra.iter().any(|o| o.trim() == "mntns-compat-mode") {
        true => vec![MountMode::MntnsCompatMode],
        false => MountMode::order(images).to_vec(),
    }
}

/// One attempt of [`restore`] in mount mode `mode` for images whose lazy memory comes from a
/// `criu lazy-pages` daemon already running on `images` (see [`crate::lazy`]); an attempt uses
/// the daemon up.
pub fn restore_lazy(
    container: &Container,
    images: &Path,
    extra: &[String],
    timeout: Duration,
    hook: Option<&Path>,
    mode: MountMode,
) -> Result<(), Failed> {
    let mut options = vec!["lazy-pages".to_string()];
    options.extend(extra.iter().cloned());
    restore_in(container, images, &options, timeout, hook, mode)
}

/// A failed restore attempt, and whether CRIU failed on mounts (worth trying the other mode).
pub struct Failed {
    pub error: anyhow::Error,
    pub mounts: bool,
}

/// One restore attempt in mount mode `mode`.
fn restore_in(
    container: &Container,
    images: &Path,
    extra: &[String],
    timeout: Duration,
    hook: Option<&Path>,
    mode: MountMode,
) -> Result<(), Failed> {
    let failed = |error: anyhow::Error| Failed {
        error,
        mounts: false,
    };
    let mut options: Vec<String> = RESTORE_OPTIONS.iter().map(|o| o.to_string()).collect();
    options.extend(mode.option().map(str::to_string));
    let cgroup2 = hook.zip(cgroups2::restore_base(container, images));
    if let Some((hook, base)) = &cgroup2 {
        options.push(format!("cgroup-root /{}", base.display()));
        options.push(format!("action-script {}", hook.display()));
    }
    options.extend(extra.iter().cloned());
    let options = OptionsFile::new(&options).map_err(failed)?;
    // CRIU opens some images as the container's root: whatever modes the images came with.
    let ids = container.load_config().map_err(failed)?.root_ids();
    crate::images::grant(images, ids).map_err(failed)?;
    let log = images.join("lxc-checkpoint.log");
    let criu_log = images.join("restore.log");
    let mut cmd = lxc_checkpoint(container, images, &options, &log).map_err(failed)?;
    if let Some((_, base)) = &cgroup2 {
        cmd.env(cgroups2::IMAGES_ENV, images)
            .env(cgroups2::BASE_ENV, base);
    }
    let child = cmd
        .args(["-r", "-d"])
        .spawn()
        .context("running lxc-checkpoint -r (is LXC installed?)")
        .map_err(failed)?;
    match wait_unstuck(child, images, Some(timeout)).map_err(failed)? {
        Some(status) if status.success() => {}
        Some(_) => {
            let mounts = criu::log_error(&criu_log).is_some_and(|l| criu::is_mount_error(&l));
            return Err(Failed {
                error: failure("restore", container, &criu_log, &log),
                mounts,
            });
        }
        None => {
            return Err(failed(
                failure("restore", container, &criu_log, &log).context(format!(
                    "CRIU's restore of {} did not finish within {} s and was killed",
                    container.name,
                    timeout.as_secs()
                )),
            ))
        }
    }
    freezer::thaw(container);
    let start = Instant::now();
    loop {
        match container.state() {
            Ok(State::Running) => {
                announce(container);
                return Ok(());
            }
            _ if start.elapsed() > RUNNING_TIMEOUT => {
                return Err(failed(
                    failure("restore", container, &criu_log, &log).context(format!(
                        "{} is not RUNNING {}s after restore",
                        container.name,
                        RUNNING_TIMEOUT.as_secs()
                    )),
                ));
            }
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Tells the LAN where the container's addresses went: a restored container keeps its MAC and IP,
/// but switches (and bridges) still send its frames to the old host until it speaks. Sends one
/// unsolicited ARP per IPv4 address from inside its network namespace (best effort: needs the
/// host's `ip` and busybox `arping`).
pub fn announce(container: &Container) {
    let Some(pid) = container.init_pid() else {
        return;
    };
    let netns = format!("--net=/proc/{pid}/ns/net");
    let addrs = Command::new("nsenter")
        .args([
            netns.as_str(),
            "ip",
            "-o",
            "-4",
            "addr",
            "show",
            "scope",
            "global",
        ])
        .output();
    let Ok(addrs) = addrs else { return };
    for line in String::from_utf8_lossy(&addrs.stdout).lines() {
        // "2: eth0    inet 10.77.0.22/24 brd ... scope global eth0"
        let words: Vec<&str> = line.split_whitespace().collect();
        let (Some(iface), Some(ip)) =
            (words.get(1), words.get(3).and_then(|a| a.split('/').next()))
        else {
            continue;
        };
        let _ = Command::new("nsenter")
            .args([
                netns.as_str(),
                "busybox",
                "arping",
                "-U",
                "-c",
                "1",
                "-w",
                "1",
                "-I",
                iface,
                ip,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// `lxc-checkpoint -P LXCPATH -n NAME -D IMAGES`, stdin closed, stdout and stderr to `log`: the
/// monitor LXC forks on restore inherits them, and must hold no pipe of ours.
fn lxc_checkpoint(
    container: &Container,
    images: &Path,
    options: &OptionsFile,
    log: &Path,
) -> anyhow::Result<Command> {
    let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut cmd = container.lxc_command("lxc-checkpoint");
    cmd.arg("-D")
        .arg(images)
        .env("CRIU_CONFIG_FILE", options.path())
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    Ok(cmd)
}

/// An error naming the failed step, CRIU's own reason and where its full log is kept.
fn failure(action: &str, container: &Container, criu_log: &Path, lxc_log: &Path) -> anyhow::Error {
    let kept = keep_log(criu_log, &container.name, action);
    let reason = criu::log_error(criu_log)
        .or_else(|| criu::log_error(lxc_log))
        .or_else(|| last_line(lxc_log))
        .unwrap_or_else(|| "no reason logged".to_string());
    let at = kept
        .map(|p| format!(" (CRIU log: {})", p.display()))
        .unwrap_or_default();
    anyhow::anyhow!("CRIU {action} of {} failed: {reason}{at}", container.name)
}

/// Copies a CRIU log out of a work dir that is about to be removed, under a name no other
/// failure takes (a failed destination restore and a failed rollback can happen in one second).
fn keep_log(log: &Path, name: &str, action: &str) -> Option<PathBuf> {
    let dir = Path::new(LOG_DIR);
    std::fs::create_dir_all(dir).ok()?;
    let stamp = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    let dest = dir.join(format!(
        "{name}-{action}-{}-{}.log",
        stamp.replace(':', ""),
        std::process::id()
    ));
    std::fs::copy(log, &dest).ok()?;
    Some(dest)
}

/// Where CRIU logs of failed steps are kept.
pub const LOG_DIR: &str = "/var/log/ckpt";

fn last_line(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string)
}
