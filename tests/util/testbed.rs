//! The two-host test bed (tests/testbed/testbed) from Rust: hosts made of network namespaces with
//! their own sshd and lxcpath, busybox containers whose workloads prove continuity, and cleanup
//! on drop, so a failed test cannot poison the next.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{bin, Run};

/// Root tests share one kernel: one test bed at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub struct Testbed {
    prefix: String,
    _serial: MutexGuard<'static, ()>,
}

impl Testbed {
    /// Brings up a fresh test bed named `prefix` (tearing down any leftover of that name first).
    pub fn up(prefix: &str) -> Testbed {
        super::require_root("the end-to-end tests (network namespaces, LXC, CRIU)");
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let tb = Testbed {
            prefix: prefix.to_string(),
            _serial: serial,
        };
        let out = tb.script(&["up"]);
        if !out.status.success() {
            panic!(
                "testbed up failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        raise_pipe_max_size();
        tb
    }

    fn script(&self, args: &[&str]) -> std::process::Output {
        Command::new(repo().join("tests/testbed/testbed"))
            .args(args)
            .env("CKPT_TESTBED", &self.prefix)
            .stdin(Stdio::null())
            .output()
            .expect("running tests/testbed/testbed")
    }

    pub fn lxcpath(&self, host: &str) -> PathBuf {
        PathBuf::from(format!("/var/lib/{}/{host}", self.prefix))
    }

    pub fn ssh_config(&self) -> PathBuf {
        PathBuf::from(format!("/var/lib/{}/ssh/config", self.prefix))
    }

    /// Runs a bash script on `host` (its netns, its sysfs), with BIN set to the tools' directory,
    /// L1/L2 to the lxcpaths and SSH to `ssh -F <config>`.
    pub fn sh(&self, host: &str, script: &str) -> Run {
        let mut cmd = self.command(host, script);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let shown = format!("on {host}: {script}");
        let output = cmd.output().expect("running testbed exec");
        Run {
            output,
            shown,
            dir: self.lxcpath(host),
        }
    }

    /// Starts a bash script on `host` like [`Testbed::sh`], in the background, its output discarded.
    pub fn spawn(&self, host: &str, script: &str) -> std::process::Child {
        self.command(host, script)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("running testbed exec")
    }

    fn command(&self, host: &str, script: &str) -> Command {
        let bindir = bin("ckpt-dump").parent().unwrap().to_path_buf();
        let prelude = format!(
            "set -o pipefail; BIN={}; L1={}; L2={}; SSH='ssh -F {}'; ",
            bindir.display(),
            self.lxcpath("host1").display(),
            self.lxcpath("host2").display(),
            self.ssh_config().display()
        );
        let mut cmd = Command::new(repo().join("tests/testbed/testbed"));
        cmd.args(["exec", host, "bash", "-c"])
            .arg(format!("{prelude}{script}"))
            .env("CKPT_TESTBED", &self.prefix)
            .stdin(Stdio::null());
        cmd
    }

    /// Creates busybox container `name` on `host` with counter, memhog (`mem` MiB) and a TCP echo
    /// server at 10.77.0.`octet`; not yet checkpointable (lxc-fixtty's job).
    pub fn create(&self, host: &str, name: &str, octet: u8, mem: u32) -> Container {
        self.create_with(host, name, octet, mem, &[])
    }

    /// [`Testbed::create`] with make-container's environment knobs (`IDMAP`, `NET`, ...).
    pub fn create_with(
        &self,
        host: &str,
        name: &str,
        octet: u8,
        mem: u32,
        env: &[(&str, &str)],
    ) -> Container {
        let out = Command::new(repo().join("tests/fixtures/make-container"))
            .args([name, self.lxcpath(host).to_str().unwrap()])
            .envs(env.iter().copied())
            .arg(format!("10.77.0.{octet}/24"))
            .arg(format!("02:77:00:00:00:{octet:02x}"))
            .arg(mem.to_string())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "make-container failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Container {
            name: name.to_string(),
            ip: format!("10.77.0.{octet}"),
        }
    }

    /// Creates the Debian 12 systemd container `name` on `host` (tests/fixtures/make-systemd-container:
    /// the rootfs comes from a cache, built by debootstrap on first use) at 10.77.0.`octet`, with
    /// its root service ckpt-counter and sshd taking [`Testbed::container_key`]; configured like
    /// `lxc-create -t debian` does, not yet checkpointable (lxc-fixtty's job).
    pub fn create_systemd(&self, host: &str, name: &str, octet: u8) -> Container {
        let out = Command::new(repo().join("tests/fixtures/make-systemd-container"))
            .args([name, self.lxcpath(host).to_str().unwrap()])
            .arg(format!("10.77.0.{octet}/24"))
            .arg(format!("02:77:00:00:00:{octet:02x}"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "make-systemd-container failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        Container {
            name: name.to_string(),
            ip: format!("10.77.0.{octet}"),
        }
    }

    /// The private key root logs into systemd containers with (made by make-systemd-container).
    pub fn container_key(&self) -> PathBuf {
        PathBuf::from(format!("/var/lib/{}/ssh/container_ed25519", self.prefix))
    }

    /// Runs `command` in container `c` over ssh from the client namespace, as root with
    /// [`Testbed::container_key`] (the container's host key is in the test bed's known_hosts).
    pub fn ssh_container(&self, c: &Container, command: &str) -> Run {
        self.sh(
            "client",
            &format!(
                "$SSH -i {} {} {}",
                q(&self.container_key()),
                c.ip,
                q(Path::new(command))
            ),
        )
    }

    /// Waits (up to 120 s) until systemd in `c` on `host` has finished booting and returns what
    /// `systemctl is-system-running` says then (`running`, `degraded`, ...), with the failed units.
    pub fn systemd_state(&self, host: &str, c: &Container) -> (String, String) {
        let lxcpath = self.lxcpath(host);
        let attach = format!("lxc-attach -P {} -n {} --", q(&lxcpath), c.name);
        let run = self.sh(
            host,
            &format!(
                "for i in $(seq 240); do s=$({attach} systemctl is-system-running 2>/dev/null); \
                 case $s in running|degraded|maintenance|stopping) break;; esac; sleep 0.5; done; echo \"$s\"; \
                 {attach} systemctl --failed --no-legend --plain 2>&1"
            ),
        );
        let out = run.stdout_str();
        let mut lines = out.lines();
        let state = lines.next().unwrap_or_default().trim().to_string();
        (state, lines.collect::<Vec<_>>().join("\n"))
    }

    /// Opens a TCP connection from the client namespace to `c`'s echo server and keeps it busy:
    /// one numbered line every 0.1 s, each echoed back within 60 s, on the same connection.
    pub fn tcp_session(&self, c: &Container) -> TcpSession {
        let dir = tempfile::Builder::new()
            .prefix("ckpt-tcp-")
            .tempdir()
            .unwrap();
        let d = dir.path().display();
        let script = format!(
            "exec 3<>/dev/tcp/{ip}/7000 || exit 1; n=0; \
             while [ ! -e {d}/stop ]; do n=$((n+1)); echo $n >&3; \
               if ! read -t 60 -r line <&3; then echo \"lost at $n\" > {d}/error; exit 1; fi; \
               [ \"$line\" = \"$n\" ] || {{ echo \"echo $line for $n\" > {d}/error; exit 1; }}; \
               echo $n > {d}/count.tmp; mv {d}/count.tmp {d}/count; sleep 0.1; done",
            ip = c.ip
        );
        let child = self.spawn("client", &script);
        let session = TcpSession { dir, child };
        session.wait_count_above(3);
        session
    }

    /// Moves container `name` from `from` to `to` (host1 or host2) with `ckpt-dump OPTIONS --ack`
    /// over the test bed's ssh, which must succeed; returns ckpt-dump's `--stats`.
    pub fn move_acked(&self, name: &str, from: &str, to: &str, options: &str) -> serde_json::Value {
        let (lfrom, lto) = match from {
            "host1" => ("$L1", "$L2"),
            _ => ("$L2", "$L1"),
        };
        let (prefix, stats) = (
            &self.prefix,
            format!("/var/lib/{}/{from}.stats", self.prefix),
        );
        let script = format!(
            "rm -f /tmp/{prefix}.ack; mkfifo /tmp/{prefix}.ack; \
             $BIN/ckpt-dump {options} -P {lfrom} --ack /tmp/{prefix}.ack --stats {stats} {name} \
             | $SSH {to} $BIN/ckpt-restore -P {lto} > /tmp/{prefix}.ack"
        );
        let run = self.sh(from, &script).expect_code(0);
        assert!(
            run.stderr_str().contains("migrated"),
            "{}",
            run.stderr_str()
        );
        serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap()
    }

    /// The LXC state of `name` as `host` sees it.
    pub fn state(&self, host: &str, name: &str) -> String {
        let lxcpath = self.lxcpath(host);
        let run = self.sh(
            host,
            &format!(
                "lxc-info -P {} -n {name} -sH 2>/dev/null || echo ABSENT",
                lxcpath.display()
            ),
        );
        run.stdout_str().trim().to_string()
    }

    /// Asserts exactly one running copy: RUNNING on `on`, and absent or stopped on the other host.
    pub fn assert_only_on(&self, on: &str, c: &Container) {
        let other = if on == "host1" { "host2" } else { "host1" };
        assert_eq!(
            self.state(on, &c.name),
            "RUNNING",
            "{} is not running on {on}",
            c.name
        );
        let there = self.state(other, &c.name);
        assert!(
            there == "ABSENT" || there == "STOPPED",
            "{} is {there} on {other} too",
            c.name
        );
    }

    /// The container's workload as seen in its rootfs on `host`.
    pub fn workload(&self, host: &str, c: &Container) -> Workload {
        Workload {
            var: self.lxcpath(host).join(&c.name).join("rootfs/var"),
        }
    }

    /// Entries of an lxcpath other than the given containers (staging leftovers, half installs).
    pub fn strays(&self, host: &str, except: &[&str]) -> Vec<String> {
        let names = std::fs::read_dir(self.lxcpath(host)).map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        });
        names
            .unwrap_or_default()
            .into_iter()
            .filter(|n| !except.contains(&n.as_str()))
            .collect()
    }
}

/// What post-copy needs of a host whose root lacks CAP_SYS_RESOURCE (as on the CI machines):
/// CRIU's page pipes of 4 MiB. Raised here, and said so, for every test bed.
pub const PIPE_MAX_SIZE: u64 = 4 << 20;

/// Raises `fs.pipe-max-size` to [`PIPE_MAX_SIZE`] if it is lower.
pub fn raise_pipe_max_size() {
    set_pipe_max_size(PIPE_MAX_SIZE, true);
}

/// Sets `fs.pipe-max-size` to `size` (only upwards unless `!only_up`); says so when it changes.
pub fn set_pipe_max_size(size: u64, only_up: bool) {
    let path = "/proc/sys/fs/pipe-max-size";
    let now: u64 = std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    if now == size || (only_up && now > size) {
        return;
    }
    std::fs::write(path, size.to_string()).expect("setting fs.pipe-max-size");
    let why = match size >= PIPE_MAX_SIZE {
        true => " (post-copy: CRIU's page pipes need 4 MiB when root lacks CAP_SYS_RESOURCE)",
        false => "",
    };
    eprintln!("test bed: fs.pipe-max-size {now} -> {size}{why}");
}

impl Drop for Testbed {
    fn drop(&mut self) {
        if std::env::var_os("CKPT_KEEP_TESTBED").is_none() {
            let _ = self.script(&["down"]);
        }
    }
}

pub struct Container {
    pub name: String,
    pub ip: String,
}

/// A TCP connection from the client namespace kept busy by [`Testbed::tcp_session`]; stopped on
/// drop.
pub struct TcpSession {
    dir: tempfile::TempDir,
    child: std::process::Child,
}

impl TcpSession {
    /// Lines echoed so far.
    pub fn count(&self) -> u64 {
        std::fs::read_to_string(self.dir.path().join("count"))
            .ok()
            .and_then(|c| c.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Waits (up to 90 s) until more than `n` lines were echoed on the same connection; panics,
    /// saying what happened to the connection, if it broke or stalled.
    pub fn wait_count_above(&self, n: u64) -> u64 {
        let start = Instant::now();
        loop {
            if let Ok(error) = std::fs::read_to_string(self.dir.path().join("error")) {
                panic!("the TCP session broke: {}", error.trim());
            }
            let now = self.count();
            if now > n {
                return now;
            }
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "the TCP session stalled at line {now}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for TcpSession {
    fn drop(&mut self) {
        let _ = std::fs::write(self.dir.path().join("stop"), "");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What must survive a move: the counter (in memory only), the workloads' PIDs, memhog's checksum.
#[derive(Debug, Clone)]
pub struct Before {
    pub count: u64,
    pub pids: (String, String),
    pub sum: String,
}

/// The files the fixture's workloads keep up to date inside the rootfs.
pub struct Workload {
    var: PathBuf,
}

impl Workload {
    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.var.join(file))
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// What must survive a move, as it is now.
    pub fn before(&self) -> Before {
        Before {
            count: self.counter(),
            pids: self.pids(),
            sum: self.start_sum(),
        }
    }

    /// The workloads of container `name` went on from `before`: its counter counts on, the same
    /// PIDs run, memhog's memory checksum is intact and ckpt-churn's rootfs is what it wrote.
    pub fn assert_carried(&self, name: &str, before: &Before) {
        let now = self.wait_counter_above(before.count);
        assert!(
            now > before.count,
            "{name}: counter did not go on: {} -> {now}",
            before.count
        );
        assert_eq!(
            self.pids(),
            before.pids,
            "{name}: workload PIDs changed: the processes were restarted, not restored"
        );
        assert_eq!(self.start_sum(), before.sum, "{name}: memhog restarted");
        let round = self.sum().0;
        assert_eq!(
            self.next_sum_after(round),
            before.sum,
            "{name}: memory checksum changed across the move"
        );
        let churn = self.churn_after_next_round();
        assert!(
            churn.starts_with("ok "),
            "{name}: the rootfs is not what the container wrote: {churn}"
        );
    }

    pub fn counter(&self) -> u64 {
        self.read("ckpt-counter").parse().unwrap_or(0)
    }

    pub fn pids(&self) -> (String, String) {
        (self.read("ckpt-counter.pid"), self.read("memhog.pid"))
    }

    /// The checksum memhog computed when it filled its memory.
    pub fn start_sum(&self) -> String {
        self.read("memhog.start")
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string()
    }

    /// memhog's latest (round, checksum) of its memory.
    pub fn sum(&self) -> (u64, String) {
        let line = self.read("memhog.sum");
        let mut parts = line.split_whitespace();
        (
            parts.next().and_then(|r| r.parse().ok()).unwrap_or(0),
            parts.next().unwrap_or_default().to_string(),
        )
    }

    /// Waits until the workloads have started (memhog filled its memory).
    pub fn wait_ready(&self) {
        self.wait_for("the workloads to start", || {
            !self.start_sum().is_empty() && self.counter() > 0
        });
    }

    /// Waits until the counter passes `n`: the container is alive and counting.
    pub fn wait_counter_above(&self, n: u64) -> u64 {
        self.wait_for(&format!("the counter to pass {n}"), || self.counter() > n);
        self.counter()
    }

    /// Waits for a memhog round after `round` and returns its checksum.
    pub fn next_sum_after(&self, round: u64) -> String {
        self.wait_for(&format!("a memhog round after {round}"), || {
            self.sum().0 > round
        });
        self.sum().1
    }

    /// ckpt-churn's (round, status line).
    pub fn churn(&self) -> (u64, String) {
        let status = self.read("churn.status");
        let round = status
            .split([' ', ':'])
            .nth(1)
            .and_then(|r| r.parse().ok())
            .unwrap_or(0);
        (round, status)
    }

    /// Waits for the next ckpt-churn round and returns its status (`ok N` unless a round ever
    /// found the files it wrote lost, changed or resurrected).
    pub fn churn_after_next_round(&self) -> String {
        let round = self.churn().0;
        self.wait_for(&format!("a churn round after {round}"), || {
            self.churn().0 > round
        });
        self.churn().1
    }

    fn wait_for(&self, what: &str, ok: impl Fn() -> bool) {
        let start = Instant::now();
        while !ok() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "timed out waiting for {what} in {}",
                self.var.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A path as a shell word (test paths have no quotes).
pub fn q(path: &Path) -> String {
    format!("'{}'", path.display())
}
