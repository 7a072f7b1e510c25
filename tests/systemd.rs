//! Root end-to-end test of a systemd container (issue #14): the Debian 12 fixture
//! (tests/fixtures/make-systemd-container) boots to `running` with no failed unit, lxc-fixtty
//! names what keeps CRIU from dumping it and fixes it, ckpt-dump refuses it unfixed before
//! freezing anything, and root logs in over ssh from the client namespace; then it moves live, with
//! an ssh session into it surviving every move.

mod util;

use std::time::Instant;

use util::testbed::{Container, Testbed};

const PREFIX: &str = "e2esysd";
const NAME: &str = "sd1";
const OCTET: u8 = 60;

/// Creates the container on host1 and runs `lxc-fixtty` on it; returns the container and the
/// problem lines `--check` printed before the fix.
fn fixed_container(tb: &Testbed) -> (Container, Vec<String>) {
    let t = Instant::now();
    let c = tb.create_systemd("host1", NAME, OCTET);
    eprintln!(
        "systemd fixture: {NAME} created in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let check = tb.sh("host1", &format!("$BIN/lxc-fixtty --check -P $L1 {NAME}"));
    assert_eq!(
        check.code(),
        Some(1),
        "--check on the new container must fail:\n{}",
        check.stderr_str()
    );
    let before: Vec<String> = check
        .stderr_str()
        .lines()
        .filter(|l| l.starts_with(&format!("lxc-fixtty: {NAME}: ")))
        .map(str::to_string)
        .collect();
    tb.sh("host1", &format!("$BIN/lxc-fixtty -P $L1 {NAME}"))
        .expect_code(0);
    (c, before)
}

/// Starts the container on host1 and waits for systemd to finish booting: it must say
/// `running`, with no failed unit.
fn boot(tb: &Testbed, c: &Container) {
    tb.sh("host1", &format!("lxc-start -P $L1 -n {}", c.name))
        .expect_code(0);
    let t = Instant::now();
    let (state, failed) = tb.systemd_state("host1", c);
    assert!(
        state == "running" && failed.trim().is_empty(),
        "systemd in {} says {state:?} after {:.1} s; failed units:\n{failed}",
        c.name,
        t.elapsed().as_secs_f64()
    );
    eprintln!(
        "systemd fixture: {} running {:.1} s after lxc-start",
        c.name,
        t.elapsed().as_secs_f64()
    );
}

#[test]
fn systemd_container_boots_is_fixed_by_lxc_fixtty_and_refused_unfixed() {
    let tb = Testbed::up(PREFIX);
    let (c, before) = fixed_container(&tb);
    let dir = tb.lxcpath("host1").join(NAME);
    let profile = dir.join("ckpt.seccomp");

    // --check named both seccomp problems, with what CRIU cannot dump and what the fix costs.
    let uts = before
        .iter()
        .find(|l| l.contains("allows unshare(CLONE_NEWUTS)"))
        .unwrap_or_else(|| panic!("--check did not name the UTS namespace: {before:#?}"));
    assert!(
        uts.contains("systemd container (/sbin/init is /usr/lib/systemd/systemd)")
            && uts.contains("its seccomp profile /usr/share/lxc/config/common.seccomp")
            && uts.contains("Can't dump nested uts namespace")
            && uts.contains("ProtectHostname= is ignored"),
        "{uts}"
    );
    let bpf = before
        .iter()
        .find(|l| l.contains("allows bpf()"))
        .unwrap_or_else(|| panic!("--check did not name bpf(): {before:#?}"));
    assert!(
        bpf.contains("anon_inode:bpf-prog") && bpf.contains("IPAddressDeny=/IPAddressAllow="),
        "{bpf}"
    );
    // After the fix: --check passes, and the profile holds the denials.
    tb.sh("host1", &format!("$BIN/lxc-fixtty --check -P $L1 {NAME}"))
        .expect_code(0);
    let text = std::fs::read_to_string(&profile).unwrap();
    assert!(
        text.contains("\nunshare errno 1 [0,0x04000000,SCMP_CMP_MASKED_EQ,0x04000000]\n")
            && text.contains("\nbpf errno 1\n"),
        "{text}"
    );

    // Unfixed (the seccomp line taken out again, ttys still fixed), running: ckpt-dump refuses it
    // with --check's words, before it freezes anything.
    let config = dir.join("config");
    let fixed = std::fs::read_to_string(&config).unwrap();
    let unfixed: String = fixed
        .lines()
        .filter(|l| !l.starts_with("lxc.seccomp.profile"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&config, unfixed).unwrap();
    boot(&tb, &c);
    let work = tb.workload("host1", &c);
    let counted = work.wait_counter_above(0);
    let pid = work.pids().0;
    let dump = tb.sh(
        "host1",
        &format!("$BIN/ckpt-dump -q -P $L1 -o /dev/null {NAME}"),
    );
    let err = dump.stderr_str();
    let want = format!(
        "ckpt-dump: error: container {NAME} is not checkpointable: {} (and 1 more): stop it and run lxc-fixtty",
        uts.strip_prefix(&format!("lxc-fixtty: {NAME}: ")).unwrap()
    );
    assert!(
        dump.code() == Some(1) && err.starts_with(&want),
        "ckpt-dump of the unfixed container: exit {:?}, stderr:\n{err}\nwanted it to start with:\n{want}",
        dump.code()
    );
    assert_eq!(tb.state("host1", NAME), "RUNNING");
    work.wait_counter_above(counted + 5);
    assert_eq!(
        work.pids().0,
        pid,
        "the counter was restarted: the container was touched"
    );
    let freezer = tb.sh(
        "host1",
        &format!(
            "cat /sys/fs/cgroup/freezer/lxc.payload.{NAME}/freezer.state 2>/dev/null || echo none"
        ),
    );
    assert!(
        !freezer.stdout_str().contains("FROZEN"),
        "ckpt-dump left the container {}",
        freezer.stdout_str()
    );

    // Fixed again (stopped), booted with the denials: running, no failed unit.
    tb.sh("host1", &format!("lxc-stop -P $L1 -n {NAME}"))
        .expect_code(0);
    tb.sh("host1", &format!("$BIN/lxc-fixtty -P $L1 {NAME}"))
        .expect_code(0);
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        fixed,
        "the second fix gives the same config"
    );
    boot(&tb, &c);

    // root logs in with the key from the client namespace and finds the workload counting.
    let login = tb.ssh_container(
        &c,
        "hostname; systemctl is-system-running; systemctl is-active ckpt-counter; cat /var/ckpt-counter.pid",
    );
    let out = login.stdout_str();
    let lines: Vec<&str> = out.lines().collect();
    let pid = tb.workload("host1", &c).pids().0;
    assert!(
        login.code() == Some(0)
            && lines.len() == 4
            && lines[..3] == [NAME, "running", "active"]
            && lines[3] == pid,
        "ssh {} as root: exit {:?}\nstdout:\n{out}\nstderr:\n{}",
        c.ip,
        login.code(),
        login.stderr_str()
    );
    // On this machine CRIU can dump only root's processes (HOST-NOTES): the fixture runs none else.
    let users = tb.sh(
        "host1",
        &format!("lxc-attach -P $L1 -n {NAME} -- ps -eo user= | sort -u | tr '\\n' ' '"),
    );
    assert!(
        users.stdout_str() == "root ",
        "processes of other users in the container: {}",
        users.stdout_str()
    );
}

/// An ssh session from the client into the container, printing a counter every 0.2 s on one
/// TCP connection; the client stamps each line with its own clock.
struct SshSession {
    log: std::path::PathBuf,
    child: std::process::Child,
}

impl SshSession {
    fn start(tb: &Testbed, c: &Container, log: std::path::PathBuf) -> SshSession {
        let key = util::testbed::q(&tb.container_key());
        let script = format!(
            "$SSH -i {key} {ip} 'n=0; while :; do n=$((n+1)); echo $n; sleep 0.2; done' \
             | while read -r n; do echo \"$(date +%s.%N) $n\"; done > {log}",
            ip = c.ip,
            log = util::testbed::q(&log)
        );
        let child = tb.spawn("client", &script);
        let session = SshSession { log, child };
        session.wait_lines(5);
        session
    }

    /// (client time, counter) of every line so far.
    fn lines(&self) -> Vec<(f64, u64)> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (t, n) = l.split_once(' ')?;
                Some((t.parse().ok()?, n.parse().ok()?))
            })
            .collect()
    }

    /// Waits (up to 60 s) for more than `n` lines; they must count 1, 2, 3... with no gap or
    /// restart (one session, one shell, one connection).
    fn wait_lines(&self, n: usize) -> usize {
        let start = Instant::now();
        loop {
            let lines = self.lines();
            for (i, (_, counter)) in lines.iter().enumerate() {
                assert_eq!(*counter, i as u64 + 1, "the ssh session's counter jumped");
            }
            if lines.len() > n {
                return lines.len();
            }
            assert!(
                start.elapsed().as_secs() < 60,
                "the ssh session stalled after {} lines",
                lines.len()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// The longest time between two lines, in seconds.
    fn longest_gap(&self) -> f64 {
        self.lines()
            .windows(2)
            .map(|w| w[1].0 - w[0].0)
            .fold(0.0, f64::max)
    }
}

impl Drop for SshSession {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The local port of the client's ssh connection to `c`, as `ss` shows it ESTABLISHED.
fn ssh_port(tb: &Testbed, c: &Container) -> String {
    let run = tb.sh(
        "client",
        &format!(
            "ss -Htn state established dst {}:22 | awk '{{print $3}}'",
            c.ip
        ),
    );
    run.stdout_str().trim().to_string()
}

/// Moves `c` from `from` to `to` with the rollback-safe one-liner; returns its --stats.
fn move_container(tb: &Testbed, c: &Container, from: &str, to: &str) -> serde_json::Value {
    let (src, dst) = match from {
        "host1" => ("$L1", "$L2"),
        _ => ("$L2", "$L1"),
    };
    let stats = format!("/var/lib/{PREFIX}/dump.stats");
    let run = tb.sh(
        from,
        &format!(
            "rm -f /tmp/{PREFIX}.ack; mkfifo /tmp/{PREFIX}.ack; \
             $BIN/ckpt-dump -q -P {src} --stats {stats} --ack /tmp/{PREFIX}.ack {name} \
             | $SSH {to} $BIN/ckpt-restore -q -P {dst} > /tmp/{PREFIX}.ack",
            name = c.name
        ),
    );
    assert_eq!(
        run.code(),
        Some(0),
        "moving {} {from} -> {to} failed:\n{}",
        c.name,
        run.stderr_str()
    );
    serde_json::from_str(&std::fs::read_to_string(stats).unwrap()).unwrap()
}

/// After a move to `host`: one copy, systemd running with no failed unit, the same workload PID,
/// journald taking messages, a unit restarting, a new ssh login.
fn check_after_move(tb: &Testbed, c: &Container, host: &str, pid: &str, round: usize) {
    tb.assert_only_on(host, c);
    let (state, failed) = tb.systemd_state(host, c);
    assert!(
        state == "running" && failed.trim().is_empty(),
        "after move {round}: {state}\n{failed}"
    );
    let work = tb.workload(host, c);
    work.wait_counter_above(work.counter());
    assert_eq!(
        work.pids().0,
        pid,
        "the counter was restarted, not restored"
    );
    let marker = format!("ckpt-moved-{round}");
    let login = tb.ssh_container(
        c,
        &format!(
            "logger {marker} && sleep 0.5 && journalctl -q --no-pager -n 50 | grep -c {marker} \
             && systemctl restart cron && systemctl is-active cron"
        ),
    );
    assert_eq!(
        login.code(),
        Some(0),
        "after move {round}: a new login, journald or restarting cron failed:\n{}{}",
        login.stdout_str(),
        login.stderr_str()
    );
}

/// Issue #14: the systemd container moves host1 -> host2 -> host1 while an ssh session from the
/// client keeps printing a counter on the same TCP connection; then 10 moves in a row.
#[test]
fn systemd_container_moves_live_with_an_ssh_session() {
    let tb = Testbed::up(PREFIX);
    let (c, _) = fixed_container(&tb);
    boot(&tb, &c);
    let pid = tb.workload("host1", &c).pids().0;
    let session = SshSession::start(
        &tb,
        &c,
        std::path::PathBuf::from(format!("/var/lib/{PREFIX}/ssh-session.log")),
    );
    let port = ssh_port(&tb, &c);
    assert!(
        !port.is_empty(),
        "no ESTABLISHED ssh connection from the client"
    );
    let mut downtimes = Vec::new();
    let mut retries = 0;
    let mut here = "host1";
    for round in 1..=12 {
        let there = if here == "host1" { "host2" } else { "host1" };
        let stats = move_container(&tb, &c, here, there);
        downtimes.push(stats["downtime_ms"].as_u64().unwrap_or(0));
        retries += stats["dump_retries"].as_u64().unwrap_or(0);
        here = there;
        let seen = session.wait_lines(0);
        session.wait_lines(seen + 5);
        if round <= 2 {
            // The first moves there and back: every check.
            check_after_move(&tb, &c, here, &pid, round);
            assert_eq!(
                ssh_port(&tb, &c),
                port,
                "the ssh connection is not the same"
            );
        } else {
            tb.assert_only_on(here, &c);
            assert_eq!(tb.workload(here, &c).pids().0, pid);
        }
    }
    check_after_move(&tb, &c, here, &pid, 12);
    assert_eq!(
        ssh_port(&tb, &c),
        port,
        "the ssh connection is not the same"
    );
    downtimes.sort_unstable();
    println!(
        "systemd container: 12 moves, downtime median {} ms, max {} ms; dump retries {retries}; \
         longest gap in the ssh session {:.2} s",
        downtimes[downtimes.len() / 2],
        downtimes[downtimes.len() - 1],
        session.longest_gap()
    );
}
