//! Fault injection on the two-host test bed: kill -9 of each process at each phase of a
//! migration, a cut network link, a full destination disk, and CRIU itself failing (a dump it
//! cannot do, a restore it cannot do on any host, a restore that hangs). After each fault there
//! must be exactly one running copy, no staging dir, no journal and no frozen container. Prints a
//! fault → outcome table with the time until the container ran again; every row must pass.

mod util;

use std::time::{Duration, Instant};

use util::testbed::{Container, Testbed};

const NAME: &str = "ft";
/// Stalls the stream after 20 MB for 3 s: long enough to hit "mid-stream".
const STALL: &str = "| { head -c 20000000; sleep 3; cat; }";
/// Waits (on host1) until ckpt-dump's guard journal reads $1; `kill9 COMM PATTERN` kills this
/// test's processes only (other test beds may run CRIU at the same time); `has COMM PATTERN` says
/// whether one runs (unlike a bare pgrep -f, it does not find the shell whose script names it).
const WAIT_DUMP: &str = "wait_phase() { until grep -qx \"$1\" $L1/.ckpt-dump-ft.journal 2>/dev/null; do sleep 0.01; done; }; \
    kill9() { for p in $(pgrep -f \"$2\"); do [ \"$(cat /proc/$p/comm 2>/dev/null)\" = \"$1\" ] && kill -9 $p; done; true; }; \
    has() { for p in $(pgrep -f \"$2\"); do [ \"$(cat /proc/$p/comm 2>/dev/null)\" = \"$1\" ] && return 0; done; return 1; }; ";
/// Waits (on host1, looking at host2's lxcpath) until ckpt-restore's journal reads $1.
const WAIT_RESTORE: &str =
    "wait_restore() { until grep -qx \"$1\" $L2/.ckpt-restore-ft.journal 2>/dev/null; do sleep 0.01; done; }; ";

struct Fault {
    name: &'static str,
    script: String,
    /// Where the one running copy must end up (`either` when it depends on timing).
    expect: &'static str,
}

fn faults() -> Vec<Fault> {
    let pipe = |middle: &str, remote: &str| {
        format!("$BIN/ckpt-dump -q -P $L1 ft {middle} | $SSH host2 {remote} $BIN/ckpt-restore -q -P $L2")
    };
    let acked_with = |middle: &str, remote: &str, restore_args: &str| {
        format!("rm -f /tmp/ft.ack; mkfifo /tmp/ft.ack; $BIN/ckpt-dump -q -P $L1 --ack /tmp/ft.ack ft {middle} | $SSH host2 {remote} $BIN/ckpt-restore -q -P $L2 {restore_args} > /tmp/ft.ack")
    };
    let acked = |middle: &str| acked_with(middle, "", "");
    // Post-copy, memory uncompressed so that a byte count lands inside it.
    let lazy = |middle: &str| {
        format!("rm -f /tmp/ft.ack; mkfifo /tmp/ft.ack; $BIN/ckpt-dump -q -P $L1 --lazy --compress none --ack /tmp/ft.ack ft {middle} | $SSH host2 $BIN/ckpt-restore -q -P $L2 > /tmp/ft.ack")
    };
    let bg = |pipeline: String, trigger: &str| {
        format!("{WAIT_DUMP}{WAIT_RESTORE}( {pipeline} ) & {trigger}; wait; true")
    };
    vec![
        Fault {
            name: "kill -9 ckpt-dump before the freeze",
            script: format!(
                "{WAIT_DUMP}rm -f /tmp/ft.none; mkfifo /tmp/ft.none; \
                 $BIN/ckpt-dump -q -P $L1 --ack /tmp/ft.none ft > /dev/null & \
                 sleep 0.5; kill9 ckpt-dump 'ckpt-dump -q -P /var/lib/e2eflt'; wait; true"
            ),
            expect: "host1",
        },
        Fault {
            name: "kill -9 ckpt-dump copying the rootfs (before the freeze)",
            script: bg(pipe("| { head -c 100000; sleep 3; cat; }", ""), "wait_phase start; sleep 1; kill9 ckpt-dump 'ckpt-dump -q -P /var/lib/e2eflt'"),
            expect: "host1",
        },
        Fault {
            name: "kill -9 criu during the dump",
            script: bg(pipe("", ""), "until has criu 'criu dump.*ckpt-ft-'; do sleep 0.005; done; sleep 0.05; kill9 criu 'criu dump.*ckpt-ft-'"),
            expect: "host1",
        },
        Fault {
            name: "kill -9 ckpt-dump mid-stream",
            script: bg(pipe(STALL, ""), "wait_phase streaming; sleep 1; kill9 ckpt-dump 'ckpt-dump -q -P /var/lib/e2eflt'"),
            expect: "host1",
        },
        Fault {
            name: "kill -9 ssh mid-stream",
            script: bg(pipe(STALL, ""), "wait_phase streaming; sleep 1; kill9 ssh 'ssh -F /var/lib/e2eflt'"),
            expect: "host1",
        },
        Fault {
            name: "kill -9 ckpt-restore mid-stream",
            script: bg(pipe(STALL, ""), "wait_phase streaming; sleep 1; kill9 ckpt-restore 'ckpt-restore -q -P /var/lib/e2eflt'"),
            expect: "host1",
        },
        Fault {
            name: "kill -9 ckpt-dump after the trailer (awaiting the ack)",
            script: bg(acked(""), "wait_phase sent; kill9 ckpt-dump 'ckpt-dump -q -P /var/lib/e2eflt'"),
            expect: "host2",
        },
        Fault {
            name: "kill -9 ckpt-restore during the restore",
            script: bg(acked(""), "wait_restore restoring; sleep 0.1; kill9 ckpt-restore 'ckpt-restore -q -P /var/lib/e2eflt'"),
            expect: "host1",
        },
        Fault {
            // Killed before CRIU's point of no return, the restore fails and the source takes the
            // container back; killed after it, the restore completes. Either way: one copy.
            name: "kill -9 criu during the restore",
            script: bg(acked(""), "wait_restore restoring; until has criu 'criu restore.*e2eflt'; do sleep 0.01; done; kill9 criu 'criu restore.*e2eflt'"),
            expect: "either",
        },
        Fault {
            // A process holding an io_uring, which CRIU cannot dump (started in a session of its
            // own and reparented to the container's init, so that it is part of the dumped tree).
            name: "CRIU dump fails (an io_uring in the container)",
            script: format!(
                "{WAIT_DUMP}gcc -O2 -static -o $L1/ft/rootfs/uring-hold {}/tests/fixtures/uring-hold.c && \
                 lxc-attach -P $L1 -n ft -- sh -c 'setsid /uring-hold </dev/null >/dev/null 2>&1 &' \
                 </dev/null >/dev/null 2>&1 && sleep 0.5 && {}; \
                 kill9 uring-hold /uring-hold; rm -f $L1/ft/rootfs/uring-hold; true",
                env!("CARGO_MANIFEST_DIR"),
                acked("")
            ),
            expect: "host1",
        },
        Fault {
            // An option no CRIU restore takes, on any host: the old rollback, a CRIU restore
            // here, would have failed the same way.
            name: "CRIU restore fails on the destination (and would here)",
            script: acked_with("", "", "--criu-opt no-such-option"),
            expect: "host1",
        },
        Fault {
            name: "post-copy: kill -9 ckpt-restore before the container runs",
            script: bg(lazy(""), "wait_restore restoring; sleep 0.1; kill9 ckpt-restore 'ckpt-restore -q -P /var/lib/e2eflt'"),
            expect: "host1",
        },
        Fault {
            // The stream stops 40 MB in (inside the 128 MiB of memory, after the images' seal),
            // for 4 s, then ends: the destination runs the container meanwhile, on part of its
            // memory, then ends it; only then does the source resume.
            name: "post-copy: stream cut after the destination runs",
            script: lazy("| { head -c 40000000; sleep 4; }"),
            expect: "host1",
        },
        Fault {
            name: "post-copy: kill -9 ckpt-restore while the memory arrives",
            // Once CRIU's restore is done and its lazy-pages daemon still feeds the container.
            script: bg(
                lazy("| { head -c 40000000; sleep 6; cat; }"),
                "wait_restore restoring; for i in $(seq 1000); do has criu 'criu restore.*e2eflt' && break; sleep 0.01; done; \
                 for i in $(seq 1500); do has criu 'criu restore.*e2eflt' || break; sleep 0.02; done; \
                 has criu 'criu lazy-pages.*e2eflt' && kill9 ckpt-restore 'ckpt-restore -q -P /var/lib/e2eflt'",
            ),
            expect: "host1",
        },
        Fault {
            name: "CRIU restore hangs on the destination",
            script: acked_with("", &format!("PATH={HANG_DIR}:$PATH"), "--timeout 5"),
            expect: "host1",
        },
    ]
}

/// Holds a `criu` that hangs in every restore (and is the real CRIU otherwise).
const HANG_DIR: &str = "/var/lib/e2eflt/hang";

fn install_hanging_criu() {
    let criu = std::path::Path::new(HANG_DIR).join("criu");
    std::fs::create_dir_all(HANG_DIR).unwrap();
    std::fs::write(
        &criu,
        "#!/bin/sh\ncase \" $* \" in *' restore '*) exec sleep 3600;; esac\nexec /usr/local/sbin/criu \"$@\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&criu, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

/// Waits until the container runs on `host` only (on one host only, for `either`) and nothing is
/// left behind; returns where it runs, or what is wrong.
fn settled(tb: &Testbed, expect: &str) -> Result<String, String> {
    if expect == "either" {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(45) {
            for host in ["host1", "host2"] {
                if tb.state(host, NAME) == "RUNNING" {
                    return settled(tb, host);
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        return Err("running on neither host".into());
    }
    let (host, other) = if expect == "host1" {
        ("host1", "host2")
    } else {
        ("host2", "host1")
    };
    let start = Instant::now();
    loop {
        let here = tb.state(host, NAME);
        let there = tb.state(other, NAME);
        // Staging dirs and journals in the lxcpaths, CRIU work dirs in /dev/shm.
        let work_dirs = std::fs::read_dir("/dev/shm")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".ckpt-ft-"));
        let strays: Vec<String> = ["host1", "host2"]
            .iter()
            .flat_map(|h| tb.strays(h, &[NAME]))
            .filter(|s| s.starts_with('.'))
            .chain(work_dirs)
            .chain(criu_left())
            .collect();
        let ok =
            here == "RUNNING" && (there == "ABSENT" || there == "STOPPED") && strays.is_empty();
        if ok {
            return Ok(host.to_string());
        }
        if start.elapsed() > Duration::from_secs(45) {
            return Err(format!(
                "{host}: {here}, {other}: {there}, leftovers: {strays:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// CRIU processes still working on this test bed's paths (an orphaned restore, a daemon).
fn criu_left() -> Vec<String> {
    let out = std::process::Command::new("pgrep")
        .args(["-a", "-x", "criu"])
        .output()
        .expect("running pgrep");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("e2eflt") || l.contains(".ckpt-ft-"))
        .map(|l| format!("criu {}", l.split_whitespace().next().unwrap_or("?")))
        .collect()
}

/// Moves the container back to host1 when a fault left it on host2.
fn home(tb: &Testbed) {
    if tb.state("host2", NAME) == "RUNNING" {
        let back = "rm -f /tmp/ft.back; mkfifo /tmp/ft.back; $BIN/ckpt-dump -q -P $L2 --ack /tmp/ft.back ft \
                    | $SSH host1 $BIN/ckpt-restore -q -P $L1 > /tmp/ft.back";
        tb.sh("host2", back).expect_code(0);
    }
    if tb.state("host1", NAME) == "STOPPED" {
        tb.sh("host1", "lxc-destroy -P $L2 -n ft 2>/dev/null; true");
    }
}

/// Checks the workload survived: counter goes on from where it was, memory intact.
fn intact(tb: &Testbed, host: &str, c: &Container, count: u64, sum: &str) -> Result<(), String> {
    let w = tb.workload(host, c);
    let now = w.wait_counter_above(count);
    let got = w.next_sum_after(w.sum().0);
    if got != sum {
        return Err(format!("memory checksum {got} != {sum}"));
    }
    if now <= count {
        return Err(format!("counter {count} -> {now}"));
    }
    let churn = w.churn_after_next_round();
    if !churn.starts_with("ok ") {
        return Err(format!("rootfs files lost or resurrected: {churn}"));
    }
    Ok(())
}

#[test]
fn every_fault_leaves_exactly_one_running_copy() {
    let tb = Testbed::up("e2eflt");
    let c = tb.create("host1", NAME, 30, 128);
    tb.sh(
        "host1",
        "$BIN/lxc-fixtty -q -P $L1 ft && lxc-start -P $L1 -n ft",
    )
    .expect_code(0);
    tb.workload("host1", &c).wait_ready();
    install_hanging_criu();
    let mut rows = Vec::new();
    let mut run = |name: &str, expect: &str, inject: &dyn Fn()| {
        let w = tb.workload("host1", &c);
        let (count, sum) = (w.counter(), w.start_sum());
        let started = Instant::now();
        inject();
        let outcome = settled(&tb, expect).map(|on| (on, started.elapsed()));
        let outcome =
            outcome.and_then(|(on, took)| intact(&tb, &on, &c, count, &sum).map(|()| (on, took)));
        println!("{name}: {outcome:?}");
        rows.push((name.to_string(), expect.to_string(), outcome));
        home(&tb);
        let _ = settled(&tb, "host1");
    };
    for fault in faults() {
        run(fault.name, fault.expect, &|| {
            tb.sh("host1", &fault.script);
        });
    }
    // The LAN link of host2 cut mid-stream (ssh gives up after its keepalives).
    run("network link to host2 cut mid-stream", "host1", &|| {
        let script = format!(
            "{WAIT_DUMP}$BIN/ckpt-dump -q -P $L1 ft {STALL} | ssh -F {} -o ServerAliveInterval=1 -o ServerAliveCountMax=2 \
             host2 $BIN/ckpt-restore -q -P $L2; true",
            tb.ssh_config().display()
        );
        std::thread::scope(|s| {
            let pipeline = s.spawn(|| tb.sh("host1", &script));
            std::thread::sleep(Duration::from_millis(1500));
            let link = "e2eflth2";
            let _ = std::process::Command::new("ip")
                .args(["link", "set", link, "down"])
                .status();
            let _ = pipeline.join();
            let _ = std::process::Command::new("ip")
                .args(["link", "set", link, "up"])
                .status();
        });
    });
    // The destination's disk fills up.
    run("destination disk full", "host1", &|| {
        let small = "/var/lib/e2eflt/small";
        tb.sh(
            "host1",
            &format!("$SSH host2 'mkdir -p {small} && mount -t tmpfs -o size=1m tmpfs {small}'"),
        );
        tb.sh("host1", &format!("rm -f /tmp/ft.ack; mkfifo /tmp/ft.ack; $BIN/ckpt-dump -q -P $L1 --ack /tmp/ft.ack ft | $SSH host2 $BIN/ckpt-restore -q -P {small} > /tmp/ft.ack; $SSH host2 'ls -A {small}; umount {small}'"));
    });

    println!(
        "\n{:<58} {:<8} {:>9}  outcome",
        "fault", "expect", "runs in"
    );
    for (name, expect, outcome) in &rows {
        let (took, shown) = match outcome {
            Ok((on, took)) => (
                format!("{:.1} s", took.as_secs_f64()),
                format!("PASS: one running copy (on {on}), state intact, nothing left behind"),
            ),
            Err(e) => ("-".to_string(), format!("FAIL: {e}")),
        };
        println!("{name:<58} {expect:<8} {took:>9}  {shown}");
    }
    let failed: Vec<_> = rows
        .iter()
        .filter(|r| r.2.is_err())
        .map(|r| r.0.clone())
        .collect();
    assert!(
        failed.is_empty(),
        "faults not survived: {failed:?} (table above)"
    );
}
