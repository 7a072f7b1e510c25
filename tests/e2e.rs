//! Root end-to-end tests on the two-host test bed: real LXC containers, real CRIU, real sshd
//! between network namespaces, workloads whose state must survive. Serialized; each test brings
//! up its own test bed and tears it down even when it fails.

mod util;

use util::testbed::{Before, Container, Testbed};

/// Makes `c` checkpointable with lxc-fixtty, starts it on `host` and waits for its workloads.
fn start_fixed(tb: &Testbed, host: &str, c: &Container) {
    let fix = tb.sh(
        host,
        &format!(
            "$BIN/lxc-fixtty -q -P {} {}",
            tb.lxcpath(host).display(),
            c.name
        ),
    );
    fix.expect_code(0);
    tb.sh(
        host,
        &format!("lxc-start -P {} -n {}", tb.lxcpath(host).display(), c.name),
    )
    .expect_code(0);
    tb.workload(host, c).wait_ready();
}

/// Checks that the container moved with its state: same PIDs, counter went on, memory intact,
/// reachable at its IP from the client, and only one copy running.
fn assert_moved(tb: &Testbed, from: &str, to: &str, c: &Container, before: Before) {
    tb.workload(to, c).assert_carried(&c.name, &before);
    tb.sh("client", &format!("ping -c 1 -W 3 {}", c.ip))
        .expect_code(0);
    tb.assert_only_on(to, c);
    assert!(
        tb.strays(from, &[]).is_empty(),
        "{from} keeps {:?}",
        tb.strays(from, &[])
    );
    assert_eq!(
        tb.strays(to, &[&c.name]),
        Vec::<String>::new(),
        "leftovers in {to}'s lxcpath"
    );
}

fn snapshot(tb: &Testbed, host: &str, c: &Container) -> Before {
    tb.workload(host, c).before()
}

#[test]
fn fixtty_makes_a_fresh_container_checkpointable_with_lxc_checkpoint() {
    let tb = Testbed::up("e2efix");
    let c = tb.create("host1", "fx1", 21, 64);
    let l1 = tb.lxcpath("host1");
    let check = format!("$BIN/lxc-fixtty --check -P {} fx1", l1.display());
    let run = tb.sh("host1", &check).expect_code(1);
    assert!(
        run.stderr_str().contains("not checkpointable"),
        "{}",
        run.stderr_str()
    );
    start_fixed(&tb, "host1", &c);
    tb.sh("host1", &check).expect_code(0);
    let before = snapshot(&tb, "host1", &c);
    // The plain LXC way, with the restore options ckpt passes: the fixed container round-trips.
    let dir = "/var/lib/e2efix/images";
    tb.sh(
        "host1",
        &format!("lxc-checkpoint -P $L1 -n fx1 -s -D {dir} </dev/null >/dev/null 2>&1"),
    )
    .expect_code(0);
    assert_eq!(tb.state("host1", "fx1"), "STOPPED");
    let restore = format!(
        "echo mntns-compat-mode > /var/lib/e2efix/restore.conf; CRIU_CONFIG_FILE=/var/lib/e2efix/restore.conf \
         lxc-checkpoint -P $L1 -n fx1 -r -d -D {dir} </dev/null >/dev/null 2>&1"
    );
    tb.sh("host1", &restore).expect_code(0);
    let w = tb.workload("host1", &c);
    assert!(w.wait_counter_above(before.count) > before.count);
    assert_eq!(w.pids(), before.pids);
    assert_eq!(w.next_sum_after(w.sum().0), before.sum);
    // The test bed's ssh: host1 runs lxc-info on host2 and sees host2's view.
    let run = tb
        .sh(
            "host1",
            "$SSH host2 'echo $CKPT_TESTBED_HOST; ls $L2' </dev/null",
        )
        .expect_code(0);
    assert!(
        run.stdout_str().starts_with("host2"),
        "{}",
        run.stdout_str()
    );
}

#[test]
fn migration_there_and_back_keeps_state_ip_and_one_copy() {
    let tb = Testbed::up("e2emig");
    let c = tb.create("host1", "mig1", 22, 192);
    start_fixed(&tb, "host1", &c);
    let before = snapshot(&tb, "host1", &c);
    let migrate = |from: &str, to: &str, lfrom: &str, lto: &str| {
        let script = format!(
            "rm -f /tmp/e2emig.ack; mkfifo /tmp/e2emig.ack; \
             $BIN/ckpt-dump -P {lfrom} --ack /tmp/e2emig.ack --stats /var/lib/e2emig/{from}.stats mig1 \
             | $SSH {to} $BIN/ckpt-restore -P {lto} > /tmp/e2emig.ack"
        );
        let run = tb.sh(from, &script).expect_code(0);
        assert!(
            run.stderr_str().contains("migrated"),
            "{}",
            run.stderr_str()
        );
    };
    migrate("host1", "host2", "$L1", "$L2");
    assert_moved(&tb, "host1", "host2", &c, before);
    let stats: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string("/var/lib/e2emig/host1.stats").unwrap())
            .unwrap();
    assert!(stats["downtime_ms"].as_u64().unwrap() > 0, "{stats}");
    // With --ack (and the test bed's pipe-max-size) the memory went straight from CRIU's page
    // server into the stream, not through the images.
    assert_eq!(stats["memory"], "streamed", "{stats}");
    assert!(
        stats["memory_bytes"].as_u64().unwrap() >= 192 << 20,
        "{stats}"
    );
    assert!(
        stats["criu_dump"]["pages_written"].as_u64().unwrap() < 192 * 256 / 4,
        "{stats}"
    );
    // The rootfs went live: copied while running, then ckpt-churn's changes after the freeze.
    assert!(
        stats["rootfs_changes"]["changed"].as_u64().unwrap() > 0
            && stats["rootfs_changes"]["deleted"].as_u64().unwrap() > 0,
        "{stats}"
    );
    let before = snapshot(&tb, "host2", &c);
    migrate("host2", "host1", "$L2", "$L1");
    assert_moved(&tb, "host2", "host1", &c, before);
}

#[test]
fn stream_to_file_unpack_repack_and_restore() {
    let tb = Testbed::up("e2efile");
    let c = tb.create("host1", "file1", 23, 64);
    start_fixed(&tb, "host1", &c);
    // Snapshots of the churning container: each complete and verified, the container running on
    // (it stays frozen until the rootfs changes are sent, so no file vanishes under them).
    for _ in 0..3 {
        tb.sh(
            "host1",
            "$BIN/ckpt-dump -q -P $L1 --leave-running -o /var/lib/e2efile/s.ckpt file1 && \
             $BIN/ckpt-unpack -q --verify -i /var/lib/e2efile/s.ckpt && rm /var/lib/e2efile/s.ckpt",
        )
        .expect_code(0);
        assert_eq!(tb.state("host1", "file1"), "RUNNING");
    }
    let w = tb.workload("host1", &c);
    w.wait_counter_above(w.counter());
    let before = snapshot(&tb, "host1", &c);
    let run = tb.sh(
        "host1",
        "$BIN/ckpt-dump -q -P $L1 -o /var/lib/e2efile/f.ckpt file1 && \
         $BIN/ckpt-unpack -q -C /var/lib/e2efile/bundle -i /var/lib/e2efile/f.ckpt && \
         lxc-destroy -P $L1 -n file1 && \
         $BIN/ckpt-pack -q /var/lib/e2efile/bundle | $SSH host2 $BIN/ckpt-restore -q -P $L2",
    );
    let run = run.expect_code(0);
    let result: serde_json::Value = serde_json::from_str(run.stdout_str().trim()).unwrap();
    assert_eq!(result["state"], "RUNNING");
    assert_moved(&tb, "host1", "host2", &c, before);
}

/// Runs a migration that must fail with an error saying one of the `|`-separated `needles`, then
/// checks the container runs on host1 only, unharmed.
fn fails_and_stays(tb: &Testbed, c: &Container, script: &str, needles: &str) {
    let before = snapshot(tb, "host1", c);
    let started = std::time::Instant::now();
    let run = tb.sh("host1", script);
    println!("{:.1} s: {script}", started.elapsed().as_secs_f64());
    let run = run.expect_code(1);
    let err = run.stderr_str();
    assert!(
        needles.split('|').any(|n| err.contains(n)),
        "stderr lacks {needles:?}:\n{err}"
    );
    assert!(
        err.contains("was resumed here and runs again")
            || err.contains("was resumed and runs on here")
            || err.contains("was not frozen and runs on here")
            || err.contains("ckpt-restore: error"),
        "{err}"
    );
    let w = tb.workload("host1", c);
    assert!(w.wait_counter_above(before.count) > before.count);
    assert_eq!(w.pids(), before.pids);
    assert_eq!(w.next_sum_after(w.sum().0), before.sum);
    tb.assert_only_on("host1", c);
}

#[test]
fn failed_migrations_leave_exactly_one_running_copy() {
    let tb = Testbed::up("e2efail");
    let c = tb.create("host1", "f1", 24, 96);
    start_fixed(&tb, "host1", &c);
    // A TCP connection from the client into the container lives through every rollback.
    let tcp = tb.tcp_session(&c);
    let clean_host2 = || {
        assert_eq!(
            tb.strays("host2", &[]),
            Vec::<String>::new(),
            "host2's lxcpath changed"
        )
    };
    let acked = |middle: &str, remote_prefix: &str| {
        format!(
            "rm -f /tmp/f.ack; mkfifo /tmp/f.ack; \
             $BIN/ckpt-dump -P $L1 --ack /tmp/f.ack f1 {middle} | $SSH host2 {remote_prefix} $BIN/ckpt-restore -P $L2 > /tmp/f.ack"
        )
    };

    // The pipe cut mid-stream.
    fails_and_stays(
        &tb,
        &c,
        "$BIN/ckpt-dump -P $L1 f1 | head -c 2000000 > /dev/null",
        "Broken pipe",
    );
    clean_host2();
    // The receiver killed mid-stream (its stdin still open: an asynchronous command of sh gets
    // /dev/null as stdin unless it is redirected, so the stream goes through fd 3).
    let killer = "rm -f /tmp/f.ack; mkfifo /tmp/f.ack; $BIN/ckpt-dump -P $L1 --ack /tmp/f.ack f1 \
        | $SSH host2 \"sh -c 'exec 3<&0; $BIN/ckpt-restore -P $L2 <&3 & p=\\$!; sleep 0.3; kill -9 \\$p'\" > /tmp/f.ack";
    fails_and_stays(
        &tb,
        &c,
        killer,
        "ended without reporting a restore|the stream was not delivered",
    );
    // Its staging dir is swept by the next ckpt-restore there (checked after the next case).
    // One corrupted byte in transit: the receiver refuses, the sender restores.
    // (stdbuf: head's stdio buffer would hold back the end of the live copy until 3 MB came.)
    let flip =
        "| { stdbuf -o0 head -c 3000000; head -c 1 | tr '\\000-\\377' '\\001-\\377\\000'; cat; }";
    fails_and_stays(&tb, &c, &acked(flip, ""), "could not restore");
    clean_host2();
    // CRIU itself fails on the destination (a criu that rejects its arguments).
    let wrapper = std::path::Path::new("/var/lib/e2efail/bin/criu");
    std::fs::create_dir_all(wrapper.parent().unwrap()).unwrap();
    std::fs::write(
        wrapper,
        "#!/bin/sh\nexec /usr/local/sbin/criu \"$@\" --no-such-option\n",
    )
    .unwrap();
    std::fs::set_permissions(wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path =
        "PATH=/var/lib/e2efail/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    fails_and_stays(
        &tb,
        &c,
        &acked("", path),
        "CRIU restore|CRIU's lazy-pages daemon did not start: /usr/local/sbin/criu: unrecognized option",
    );
    clean_host2();
    // A destination too small for the stream.
    let small = "/var/lib/e2efail/small";
    // Mounted through ssh, in the mount namespace host2's sshd (and so ckpt-restore) lives in.
    tb.sh(
        "host1",
        &format!("$SSH host2 'mkdir -p {small} && mount -t tmpfs -o size=40m tmpfs {small}'"),
    )
    .expect_code(0);
    let tiny = format!(
        "rm -f /tmp/f.ack; mkfifo /tmp/f.ack; $BIN/ckpt-dump -P $L1 --ack /tmp/f.ack f1 | $SSH host2 $BIN/ckpt-restore -P {small} > /tmp/f.ack"
    );
    fails_and_stays(&tb, &c, &tiny, "No space left");
    let left = tb
        .sh(
            "host1",
            &format!("$SSH host2 'ls -A {small}; umount {small}'"),
        )
        .expect_code(0);
    assert_eq!(
        left.stdout_str().trim(),
        "",
        "the small lxcpath was not left as it was"
    );
    // A container of that name already on the destination.
    tb.sh(
        "host2",
        "mkdir -p $L2/f1 && echo 'lxc.uts.name = other' > $L2/f1/config",
    )
    .expect_code(0);
    fails_and_stays(&tb, &c, &acked("", ""), "already exists");
    let config = tb.sh("host2", "cat $L2/f1/config").expect_code(0);
    assert_eq!(
        config.stdout_str().trim(),
        "lxc.uts.name = other",
        "the existing container was touched"
    );
    let lines = tcp.count();
    tcp.wait_count_above(lines + 10);
}

#[test]
fn dump_refuses_what_it_cannot_checkpoint() {
    let tb = Testbed::up("e2eref");
    let c = tb.create("host1", "r1", 25, 0);
    tb.sh("host1", "lxc-start -P $L1 -n r1").expect_code(0);
    let run = tb
        .sh("host1", "$BIN/ckpt-dump -P $L1 r1 > /dev/null")
        .expect_code(1)
        .one_line_error("lxc-fixtty");
    drop(run);
    assert_eq!(
        tb.state("host1", &c.name),
        "RUNNING",
        "a refused dump must not stop the container"
    );
    tb.sh("host1", "$BIN/ckpt-dump -P $L1 nosuch > /dev/null")
        .expect_code(1)
        .one_line_error("no container nosuch");
    // Made checkpointable, it is still refused for a --keep dir that is not new or empty, and the
    // message names --keep; --stats records the refusal.
    tb.sh(
        "host1",
        "lxc-stop -P $L1 -n r1 -k && $BIN/lxc-fixtty -q -P $L1 r1 && lxc-start -P $L1 -n r1 && \
         mkdir -p /tmp/r1.keep && touch /tmp/r1.keep/x",
    )
    .expect_code(0);
    tb.sh(
        "host1",
        "$BIN/ckpt-dump -P $L1 --keep /tmp/r1.keep --stats /tmp/r1.stats r1 > /dev/null",
    )
    .expect_code(2)
    .one_line_error("give a new or empty directory to --keep");
    let stats = tb
        .sh("host1", "cat /tmp/r1.stats")
        .expect_code(0)
        .stdout_str();
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["failure"]["phase"], "checks", "{stats}");
    assert!(
        stats["failure"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("--keep")),
        "{stats}"
    );
    assert_eq!(tb.state("host1", &c.name), "RUNNING");
    // A process lxc-attach started is outside init's tree, which is all CRIU dumps: refused, not
    // silently lost.
    tb.sh(
        "host1",
        "{ lxc-attach -P $L1 -n r1 -- sleep 6062 </dev/null >/dev/null 2>&1 & } ; sleep 0.5; \
         $BIN/ckpt-dump -P $L1 r1 > /dev/null; rc=$?; pkill -xf 'sleep 6062'; exit $rc",
    )
    .expect_code(1)
    .one_line_error("started by lxc-attach?");
    assert_eq!(tb.state("host1", &c.name), "RUNNING");
    tb.sh(
        "host1",
        "rm -rf /tmp/r1.keep /tmp/r1.stats; lxc-stop -P $L1 -n r1 -k",
    )
    .expect_code(0);
    tb.sh("host1", "$BIN/ckpt-dump -P $L1 r1 > /dev/null")
        .expect_code(1)
        .one_line_error("not running");
}
