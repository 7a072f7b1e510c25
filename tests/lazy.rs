//! Root end-to-end tests of post-copy (`ckpt-dump --lazy`, issue #15) on the two-host test bed: a
//! container moves there and back with its memory following after it already runs, its TCP
//! connection and every page intact (memhog checks all its memory each round); the host
//! requirement is refused before anything is frozen, and without it a stop-and-copy migration
//! keeps the memory in the images (with it, the memory is streamed from CRIU's page server).

mod util;

use util::testbed::{raise_pipe_max_size, set_pipe_max_size, Before, Container, Testbed};

const PREFIX: &str = "e2elazy";
const NAME: &str = "lz1";
const MEM_MIB: u64 = 256;

fn start(tb: &Testbed, c: &Container) {
    tb.sh(
        "host1",
        &format!("$BIN/lxc-fixtty -q -P $L1 {NAME} && lxc-start -P $L1 -n {NAME}"),
    )
    .expect_code(0);
    tb.workload("host1", c).wait_ready();
}

/// `ckpt-dump --lazy` from `from` to `to`, with --ack through the same ssh session; returns the
/// sender's stats.
fn move_lazy(tb: &Testbed, from: &str, to: &str) -> serde_json::Value {
    move_with(tb, from, to, "--lazy")
}

/// `ckpt-dump OPTIONS --ack` from `from` to `to`; returns the sender's stats.
fn move_with(tb: &Testbed, from: &str, to: &str, options: &str) -> serde_json::Value {
    tb.move_acked(NAME, from, to, options)
}

/// The move was post-copy: the memory went after the images, the receiver ran the container
/// before it had it all, and reported only once it had.
fn assert_post_copy(stats: &serde_json::Value) {
    assert_eq!(stats["memory"], "post-copy", "{stats}");
    let memory = stats["memory_bytes"].as_u64().unwrap();
    assert!(
        memory >= MEM_MIB << 20,
        "only {memory} bytes of memory: {stats}"
    );
    let timings = &stats["restore"]["timings_ms"];
    let running = timings["unpack"].as_u64().unwrap() + timings["restore"].as_u64().unwrap();
    let complete = timings["memory"].as_u64().unwrap();
    assert!(
        complete >= running,
        "memory complete before running: {stats}"
    );
    // CRIU wrote no lazy page into the images: only what a lazy dump must write there.
    let written = stats["criu_dump"]["pages_written"].as_u64().unwrap();
    assert!(
        written < (MEM_MIB << 20) / 4096 / 4,
        "{written} pages written: {stats}"
    );
}

fn assert_moved(tb: &Testbed, to: &str, c: &Container, before: &Before) {
    // memhog's next round reads every page: the checksum proves each arrived intact.
    tb.workload(to, c).assert_carried(NAME, before);
    tb.assert_only_on(to, c);
    let from = if to == "host1" { "host2" } else { "host1" };
    assert_eq!(
        tb.strays(from, &[]),
        Vec::<String>::new(),
        "{from} keeps leftovers"
    );
    assert_eq!(
        tb.strays(to, &[NAME]),
        Vec::<String>::new(),
        "{to} keeps leftovers"
    );
}

#[test]
fn post_copy_there_and_back_keeps_every_page_and_a_tcp_connection() {
    let tb = Testbed::up(PREFIX);
    let c = tb.create("host1", NAME, 70, MEM_MIB as u32);
    start(&tb, &c);

    // The host requirement: without CAP_SYS_RESOURCE and with pipes capped at 1 MiB, --lazy is
    // refused before the container is touched, naming the sysctl.
    let caps = std::fs::read_to_string("/proc/self/status").unwrap();
    let cap_eff = caps
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|h| u64::from_str_radix(h.trim(), 16).unwrap())
        .unwrap();
    if cap_eff & (1 << 24) == 0 {
        set_pipe_max_size(1 << 20, false);
        let pid = tb.workload("host1", &c).pids();
        let refused = tb.sh(
            "host1",
            &format!(
                "rm -f /tmp/{PREFIX}.none; mkfifo /tmp/{PREFIX}.none; \
                 $BIN/ckpt-dump --lazy --ack /tmp/{PREFIX}.none -P $L1 -o /dev/null {NAME}"
            ),
        );
        let refused = refused.one_line_error("sysctl -w fs.pipe-max-size=4194304");
        assert_eq!(refused.code(), Some(1), "{}", refused.stderr_str());
        assert_eq!(tb.state("host1", NAME), "RUNNING");
        assert_eq!(
            tb.workload("host1", &c).pids(),
            pid,
            "the container was touched"
        );
        // A stop-and-copy migration then keeps the memory in the CRIU images, as before; with
        // the pipes it needs, it streams the memory from CRIU's page server.
        let before = tb.workload("host1", &c).before();
        let stats = move_with(&tb, "host1", "host2", "");
        raise_pipe_max_size();
        assert_eq!(stats["memory"], "images", "{stats}");
        assert_moved(&tb, "host2", &c, &before);
        let before = tb.workload("host2", &c).before();
        let stats = move_with(&tb, "host2", "host1", "");
        assert_eq!(stats["memory"], "streamed", "{stats}");
        assert_moved(&tb, "host1", &c, &before);
    } else {
        eprintln!("lazy: this root has CAP_SYS_RESOURCE: the pipe-max-size refusal does not apply");
    }

    let session = tb.tcp_session(&c);
    let before = tb.workload("host1", &c).before();
    let stats = move_lazy(&tb, "host1", "host2");
    assert_post_copy(&stats);
    assert_moved(&tb, "host2", &c, &before);
    let echoed = session.wait_count_above(session.count() + 5);

    let before = tb.workload("host2", &c).before();
    let stats = move_lazy(&tb, "host2", "host1");
    assert_post_copy(&stats);
    assert_moved(&tb, "host1", &c, &before);
    session.wait_count_above(echoed + 5);
}
