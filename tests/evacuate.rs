//! Load and soak on the two-host test bed (issue #13, item 5): host1 evacuated by four migrations
//! at once, scripted the way an operator would (`xargs -P4` over rollback-safe pipelines), and one
//! container moved back and forth many times with every check after each move; and an evacuation
//! in which one pipeline fails, whose container must stay on host1 until the line is run again.
//! Nothing may be lost. Only outcomes are checked (where each container runs, its state, what is left in the
//! lxcpaths), never how ckpt-dump holds the source meanwhile.
//! `CKPT_SOAK_MOVES` sets the soak's length (default 6; `bench/soak` runs 50).

mod util;

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::time::{Duration, Instant};

use util::testbed::{Before, Container, Testbed};

/// The containers of the evacuation: (name, last octet of its IP). Names are this file's own:
/// cgroup names are global on the machine, and other test beds may run at the same time.
const FLEET: [(&str, u8); 4] = [("ev1", 61), ("ev2", 62), ("ev3", 63), ("ev4", 64)];
const FLEET_MEM_MIB: u32 = 48;
const SOAK: &str = "evsoak";
const SOAK_MEM_MIB: u32 = 64;
const SOAK_MOVES_DEFAULT: usize = 6;

fn snapshot(tb: &Testbed, host: &str, c: &Container) -> Before {
    tb.workload(host, c).before()
}

fn other(host: &str) -> &'static str {
    if host == "host1" {
        "host2"
    } else {
        "host1"
    }
}

/// Makes the container checkpointable, starts it on `host` and waits for its workloads.
fn start_fixed(tb: &Testbed, host: &str, c: &Container) {
    let lxcpath = tb.lxcpath(host);
    tb.sh(
        host,
        &format!(
            "$BIN/lxc-fixtty -q -P {0} {1} && lxc-start -P {0} -n {1}",
            lxcpath.display(),
            c.name
        ),
    )
    .expect_code(0);
    tb.workload(host, c).wait_ready();
}

/// CRIU work dirs ckpt-dump left in /dev/shm for `name`.
fn shm_leftovers(name: &str) -> Vec<String> {
    let prefix = format!(".ckpt-{name}-");
    std::fs::read_dir("/dev/shm")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

/// Waits (up to 10 s) until `host`'s lxcpath holds exactly `expected`; panics with what it holds.
fn assert_lxcpath_holds(tb: &Testbed, host: &str, expected: &[&str]) {
    let start = Instant::now();
    loop {
        let mut all = tb.strays(host, &[]);
        all.sort();
        let mut want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
        want.sort();
        if all == want {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{host}'s lxcpath holds {all:?}, not {want:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every check after a move of `c` from `from` to `to`: it runs on `to` only, with the same PIDs,
/// its counter went on, its memory checksum is intact, its rootfs is what it wrote (ckpt-churn),
/// it answers ping at its IP, and no CRIU work dir is left. The lxcpaths are checked by the
/// caller, which knows what else they should hold.
fn assert_moved(tb: &Testbed, from: &str, to: &str, c: &Container, before: &Before) {
    assert_eq!(
        tb.state(to, &c.name),
        "RUNNING",
        "{} is not running on {to}",
        c.name
    );
    assert_eq!(
        tb.state(from, &c.name),
        "ABSENT",
        "{} is still on {from}",
        c.name
    );
    tb.workload(to, c).assert_carried(&c.name, before);
    tb.sh("client", &format!("ping -c 1 -W 3 {}", c.ip))
        .expect_code(0);
    let shm = shm_leftovers(&c.name);
    assert!(shm.is_empty(), "{}: CRIU work dirs left: {shm:?}", c.name);
}

/// (downtime, total) in seconds from a `ckpt-dump --stats` file, when it has them.
fn stats_times(path: &Path) -> (Option<f64>, Option<f64>) {
    let Ok(text) = std::fs::read_to_string(path) else {
        return (None, None);
    };
    let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else {
        return (None, None);
    };
    let secs = |v: &serde_json::Value| v.as_u64().map(|ms| ms as f64 / 1000.0);
    (
        secs(&json["downtime_ms"]),
        secs(&json["phases_ms"]["total"]),
    )
}

fn shown(secs: Option<f64>) -> String {
    secs.map_or("-".to_string(), |s| format!("{s:.3}"))
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".to_string())
}

/// README's "Evacuating a host" line, run on host1: one rollback-safe pipeline per running
/// container, `parallel` at a time, fifos and `--stats` files in `work`. xargs exits 123 when any
/// of them failed; a failed one leaves its container running on host1, and the same line run
/// again retries just those.
fn evacuate_script(work: &str, parallel: usize) -> String {
    std::fs::create_dir_all(work).unwrap();
    format!(
        "cd {work} && export BIN L1 L2 SSH && \
         lxc-ls -P $L1 -1 --running | xargs -P{parallel} -I{{}} bash -c 'set -o pipefail; mkfifo {{}}.ack && \
         $BIN/ckpt-dump -P $L1 --ack {{}}.ack --stats {{}}.stats {{}} | $SSH host2 $BIN/ckpt-restore -q -P $L2 > {{}}.ack
         rc=$?; rm -f {{}}.ack; exit $rc'"
    )
}

#[test]
fn evacuating_host1_moves_four_containers_at_once_and_loses_nothing() {
    let tb = Testbed::up("e2eevac");
    let fleet: Vec<Container> = FLEET
        .iter()
        .map(|(name, octet)| tb.create("host1", name, *octet, FLEET_MEM_MIB))
        .collect();
    for c in &fleet {
        start_fixed(&tb, "host1", c);
    }
    let before: Vec<Before> = fleet.iter().map(|c| snapshot(&tb, "host1", c)).collect();
    let work = "/var/lib/e2eevac/evacuate";
    let names: Vec<&str> = FLEET.iter().map(|(name, _)| *name).collect();
    // bench/soak sets 1 for a one-after-the-other baseline.
    let parallel: usize =
        match std::env::var("CKPT_EVAC_PARALLEL") {
            Ok(v) => v.parse().ok().filter(|n| *n > 0).unwrap_or_else(|| {
                panic!("CKPT_EVAC_PARALLEL must be a positive number, not {v:?}")
            }),
            Err(_) => 4,
        };
    let started = Instant::now();
    let run = tb.sh("host1", &evacuate_script(work, parallel));
    let total = started.elapsed().as_secs_f64();
    println!("{}", run.stderr_str().trim_end());
    let run = run.expect_code(0);
    drop(run);
    for (c, before) in fleet.iter().zip(&before) {
        assert_moved(&tb, "host1", "host2", c, before);
    }
    assert_lxcpath_holds(&tb, "host1", &[]);
    assert_lxcpath_holds(&tb, "host2", &names);
    let mut slowest = 0.0f64;
    for name in &names {
        let (downtime, took) = stats_times(&Path::new(work).join(format!("{name}.stats")));
        slowest = slowest.max(took.unwrap_or(0.0));
        println!(
            "evacuate {name} host1->host2 total {} s downtime {} s ok",
            shown(took),
            shown(downtime)
        );
    }
    println!(
        "evacuate: {} containers of {FLEET_MEM_MIB} MiB, {parallel} pipelines at once: {total:.3} s in all \
         (slowest pipeline {slowest:.3} s), failures 0",
        names.len()
    );
}

#[test]
fn an_evacuation_with_one_failed_pipeline_leaves_that_container_on_host1_until_run_again() {
    let tb = Testbed::up("e2eevfail");
    let moving = tb.create("host1", "ev5", 66, 32);
    let blocked = tb.create("host1", "ev6", 67, 32);
    for c in [&moving, &blocked] {
        start_fixed(&tb, "host1", c);
    }
    let before_moving = snapshot(&tb, "host1", &moving);
    let before_blocked = snapshot(&tb, "host1", &blocked);
    // Another container named ev6 already on host2: that restore must fail, the other one not.
    tb.sh(
        "host2",
        "mkdir -p $L2/ev6 && echo 'lxc.uts.name = other' > $L2/ev6/config",
    )
    .expect_code(0);
    let evacuate = evacuate_script("/var/lib/e2eevfail/evacuate", 4);
    let run = tb.sh("host1", &evacuate).expect_code(123);
    assert!(
        run.stderr_str().contains("already exists"),
        "{}",
        run.stderr_str()
    );
    assert_moved(&tb, "host1", "host2", &moving, &before_moving);
    // ev6 stays on host1, running and unharmed; host2's ev6 is untouched.
    let w = tb.workload("host1", &blocked);
    assert_eq!(tb.state("host1", "ev6"), "RUNNING");
    assert!(w.wait_counter_above(before_blocked.count) > before_blocked.count);
    assert_eq!(w.pids(), before_blocked.pids);
    assert_eq!(w.next_sum_after(w.sum().0), before_blocked.sum);
    assert!(w.churn_after_next_round().starts_with("ok "));
    assert_lxcpath_holds(&tb, "host1", &["ev6"]);
    assert_lxcpath_holds(&tb, "host2", &["ev5", "ev6"]);
    let config = tb.sh("host2", "cat $L2/ev6/config").expect_code(0);
    assert_eq!(config.stdout_str().trim(), "lxc.uts.name = other");
    // The clash removed, the same line run again moves just what stayed.
    tb.sh("host2", "rm -r $L2/ev6").expect_code(0);
    let before_blocked = snapshot(&tb, "host1", &blocked);
    tb.sh("host1", &evacuate).expect_code(0);
    assert_moved(&tb, "host1", "host2", &blocked, &before_blocked);
    assert_lxcpath_holds(&tb, "host1", &[]);
    assert_lxcpath_holds(&tb, "host2", &["ev5", "ev6"]);
    assert_eq!(tb.state("host2", "ev5"), "RUNNING");
}

/// One back-and-forth move of the soak.
struct Move {
    from: &'static str,
    to: &'static str,
    secs: f64,
    downtime: Option<f64>,
}

/// Waits (up to 45 s) until `name` runs on exactly one host; returns it, or None if it runs nowhere.
fn where_it_runs(tb: &Testbed, name: &str) -> Option<&'static str> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(45) {
        let running: Vec<&'static str> = ["host1", "host2"]
            .into_iter()
            .filter(|h| tb.state(h, name) == "RUNNING")
            .collect();
        if running.len() == 1 {
            return Some(running[0]);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

#[test]
fn soak_moves_one_container_back_and_forth_with_every_check() {
    let moves: usize = match std::env::var("CKPT_SOAK_MOVES") {
        Ok(v) => v
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .unwrap_or_else(|| panic!("CKPT_SOAK_MOVES must be a positive number, not {v:?}")),
        Err(_) => SOAK_MOVES_DEFAULT,
    };
    let tb = Testbed::up("e2esoak");
    let c = tb.create("host1", SOAK, 65, SOAK_MEM_MIB);
    start_fixed(&tb, "host1", &c);
    let work = Path::new("/var/lib/e2esoak/soak");
    std::fs::create_dir_all(work).unwrap();
    let stats = work.join("move.stats");
    let mut at = "host1";
    let mut done: Vec<(usize, Move)> = Vec::new();
    let mut failures: Vec<(usize, String)> = Vec::new();
    for i in 1..=moves {
        let to = other(at);
        let (lfrom, lto) = if at == "host1" {
            ("$L1", "$L2")
        } else {
            ("$L2", "$L1")
        };
        let before = snapshot(&tb, at, &c);
        let _ = std::fs::remove_file(&stats);
        let script = format!(
            "cd {w} && rm -f ack && mkfifo ack && \
             $BIN/ckpt-dump -q -P {lfrom} --ack ack --stats {s} {SOAK} | $SSH {to} $BIN/ckpt-restore -q -P {lto} > ack",
            w = work.display(),
            s = stats.display()
        );
        let started = Instant::now();
        let run = tb.sh(at, &script);
        let secs = started.elapsed().as_secs_f64();
        let outcome = if run.code() == Some(0) {
            std::panic::catch_unwind(AssertUnwindSafe(|| {
                assert_moved(&tb, at, to, &c, &before);
                assert_lxcpath_holds(&tb, at, &[]);
                assert_lxcpath_holds(&tb, to, &[SOAK]);
            }))
            .map_err(|p| panic_message(p.as_ref()))
        } else {
            Err(format!(
                "the pipeline exited {:?}: {}",
                run.code(),
                run.stderr_str().trim_end()
            ))
        };
        let downtime = stats_times(&stats).0;
        match outcome {
            Ok(()) => {
                println!(
                    "soak move {i}/{moves} {at}->{to} {secs:.3} s downtime {} s ok",
                    shown(downtime)
                );
                done.push((
                    i,
                    Move {
                        from: at,
                        to,
                        secs,
                        downtime,
                    },
                ));
                at = to;
            }
            Err(why) => {
                println!("soak move {i}/{moves} {at}->{to} {secs:.3} s FAILED: {why}");
                failures.push((i, why));
                // Go on from wherever it runs now; running nowhere is the one loss there is.
                at = where_it_runs(&tb, SOAK).unwrap_or_else(|| {
                    panic!("after failed move {i}, {SOAK} runs on neither host: LOST")
                });
            }
        }
    }
    let mut secs: Vec<f64> = done.iter().map(|(_, m)| m.secs).collect();
    secs.sort_by(f64::total_cmp);
    let mut downtimes: Vec<f64> = done.iter().filter_map(|(_, m)| m.downtime).collect();
    downtimes.sort_by(f64::total_cmp);
    if let Some((i, slow)) = done.iter().max_by(|a, b| a.1.secs.total_cmp(&b.1.secs)) {
        println!(
            "soak: {moves} moves of {SOAK} ({SOAK_MEM_MIB} MiB), {} ok: mean {:.3} s, median {:.3} s, \
             slowest {:.3} s (move {i}, {}->{}); downtime median {} s, max {} s; failures {}",
            done.len(),
            secs.iter().sum::<f64>() / secs.len() as f64,
            median(&secs),
            slow.secs,
            slow.from,
            slow.to,
            shown((!downtimes.is_empty()).then(|| median(&downtimes))),
            shown(downtimes.last().copied()),
            failures.len()
        );
    }
    assert!(
        failures.is_empty(),
        "{} of {moves} moves failed: {failures:#?}",
        failures.len()
    );
}
