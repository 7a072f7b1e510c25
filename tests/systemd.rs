//! Root end-to-end test of a systemd container (issue #14): the Debian 12 fixture
//! (tests/fixtures/make-systemd-container) boots to `running` with no failed unit, lxc-fixtty
//! names what keeps CRIU from dumping it and fixes it, ckpt-dump refuses it unfixed before
//! freezing anything, and root logs in over ssh from the client namespace. The migration itself
//! is in the separate, ignored test at the end (restore-side work is still open).

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

/// Issue #14, items 3-6: the live migration of the systemd container, host1 -> host2 with the
/// rollback-safe one-liner. Not yet working: the dump succeeds (with `--criu-opt "enable-fs
/// ramfs"` for systemd's ramfs credential mounts), the restore fails on host2 with
/// `mnt: Can't bind-mount at .../dev/ptmx: Not a directory` (mntns-compat-mode vs logind's mount
/// namespace) and ckpt-dump resumes the container on host1. Run it with `--ignored`.
#[test]
#[ignore = "issue #14 items 3-6: the restore side of a systemd container is still open"]
fn systemd_container_migrates_live() {
    let tb = Testbed::up(PREFIX);
    let (c, _) = fixed_container(&tb);
    boot(&tb, &c);
    let work = tb.workload("host1", &c);
    let counted = work.wait_counter_above(0);
    let pid = work.pids().0;
    let run = tb.sh(
        "host1",
        &format!(
            "rm -f /tmp/{PREFIX}.ack; mkfifo /tmp/{PREFIX}.ack; \
             $BIN/ckpt-dump -q -P $L1 --ack /tmp/{PREFIX}.ack --criu-opt 'enable-fs ramfs' {NAME} \
             | $SSH host2 $BIN/ckpt-restore -q -P $L2 > /tmp/{PREFIX}.ack"
        ),
    );
    assert_eq!(
        run.code(),
        Some(0),
        "the migration failed:\n{}",
        run.stderr_str()
    );
    tb.assert_only_on("host2", &c);
    let (state, failed) = tb.systemd_state("host2", &c);
    assert!(
        state == "running" && failed.trim().is_empty(),
        "after the move: {state}\n{failed}"
    );
    let after = tb.workload("host2", &c);
    assert!(after.wait_counter_above(counted) > counted);
    assert_eq!(
        after.pids().0,
        pid,
        "the counter was restarted, not restored"
    );
    tb.ssh_container(&c, "systemctl is-system-running")
        .expect_code(0);
}
