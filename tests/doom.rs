//! Root end-to-end test of the Doom demo (`scripts/doom-demo`, `make doom-demo`): a Debian
//! container running Xvfb, dsda-doom and x11vnc on host1, watched by a VNC viewer in the client
//! namespace, migrated to host2 with the ckpt one-liner. Asserts the demo's three facts from its
//! raw measurements and again from the outside: the same game process runs (same PID, heartbeat
//! never reset), the game advanced (the screenshots through VNC differ, and keep changing), and
//! the same VNC TCP connection survived (same local port, same viewer process, still receiving).
//! On failure the screenshots and logs are copied to target/doom-artifacts/.

mod util;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use util::testbed::Testbed;

const PREFIX: &str = "doome2e";
const IP: &str = "10.77.0.40";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// What the demo measured: its `result.env` (KEY=VALUE lines).
struct Results(HashMap<String, String>);

impl Results {
    fn read(path: &Path) -> Results {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        Results(
            text.lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn get(&self, key: &str) -> &str {
        self.0.get(key).map(String::as_str).unwrap_or("")
    }

    fn num(&self, key: &str) -> u64 {
        self.get(key).parse().unwrap_or(0)
    }
}

/// Pixels that differ between two PNGs, by ImageMagick's `compare -metric AE`.
fn pixels_differ(a: &Path, b: &Path) -> Result<u64, String> {
    let out = Command::new("compare")
        .args(["-metric", "AE"])
        .arg(a)
        .arg(b)
        .arg("null:")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run compare: {e}"))?;
    let text = String::from_utf8_lossy(&out.stderr);
    text.split_whitespace()
        .next()
        .and_then(|n| n.parse::<f64>().ok())
        .map(|n| n as u64)
        .ok_or_else(|| format!("compare {} {}: {text}", a.display(), b.display()))
}

/// Copies the demo's output (screenshots, logs, stats) to target/doom-artifacts/.
fn keep_artifacts(out: &Path) -> PathBuf {
    let dest = repo().join("target/doom-artifacts");
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::create_dir_all(&dest).unwrap();
    for entry in std::fs::read_dir(out).into_iter().flatten().flatten() {
        let _ = std::fs::copy(entry.path(), dest.join(entry.file_name()));
    }
    dest
}

#[test]
fn doom_demo_migrates_the_running_game_and_keeps_the_vnc_connection() {
    let tb = Testbed::up(PREFIX);
    let dir = util::Dir::new("doom");
    let out = dir.join("out");
    let bindir = util::bin("ckpt-dump").parent().unwrap().to_path_buf();
    // First run: apt packages and a debootstrap (about 2 minutes); later runs use the cached rootfs.
    let run = Command::new("timeout")
        .arg("1200")
        .arg(repo().join("scripts/doom-demo"))
        .args(["--use-testbed", "--out"])
        .arg(&out)
        .env("CKPT_TESTBED", PREFIX)
        .env("CKPT_BIN", &bindir)
        .env_remove("CKPT_DOOM_NAME")
        .stdin(Stdio::null())
        .output()
        .expect("running scripts/doom-demo");
    let log = String::from_utf8_lossy(&run.stderr).into_owned();
    eprintln!("{log}");
    let r = Results::read(&out.join("result.env"));
    let mut failures: Vec<String> = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            failures.push(what);
        }
    };

    check(
        run.status.success(),
        format!("scripts/doom-demo failed: {:?}", run.status),
    );
    check(
        r.get("RESULT") == "PASS",
        format!("the demo's verdict is {:?}", r.get("RESULT")),
    );

    // Exactly one copy, on host2, as LXC there and on host1 sees it.
    let on2 = tb.state("host2", PREFIX);
    let on1 = tb.state("host1", PREFIX);
    check(on2 == "RUNNING", format!("the container is {on2} on host2"));
    check(
        on1 == "ABSENT" || on1 == "STOPPED",
        format!("the container is {on1} on host1 too"),
    );

    // (1) The same game process: same PID in the container, its heartbeat went on.
    let pid = r.get("GAME_PID_BEFORE");
    check(
        !pid.is_empty() && pid == r.get("GAME_PID_AFTER") && pid == r.get("GAME_PIDFILE_AFTER"),
        format!(
            "game PID before {pid:?}, after {:?} (pid file {:?}): the game was restarted, not restored",
            r.get("GAME_PID_AFTER"),
            r.get("GAME_PIDFILE_AFTER")
        ),
    );
    check(
        r.get("GAME_COMM_AFTER") == "dsda-doom",
        format!(
            "PID {pid} after the move is {:?}, not dsda-doom",
            r.get("GAME_COMM_AFTER")
        ),
    );
    let (beats0, beats1) = (r.num("BEATS_BEFORE"), r.num("BEATS_AFTER"));
    check(
        beats0 > 0 && beats1 > beats0,
        format!("heartbeat {beats0} -> {beats1}: it must go on, never reset"),
    );
    // And still alive now, read from host2's copy of the rootfs.
    let alive = std::fs::read_to_string(tb.lxcpath("host2").join(PREFIX).join("rootfs/doom/alive"))
        .unwrap_or_default();
    check(
        alive.split_whitespace().next() == Some(pid) && !alive.contains("dead"),
        format!("the game's heartbeat file on host2 says {alive:?}"),
    );

    // (2) The game advanced: the picture through VNC changed across the move and keeps changing.
    let shot = |n: &str| out.join(n);
    for (a, b, what) in [
        ("1-before.png", "2-after.png", "before and after the move"),
        (
            "2-after.png",
            "3-later.png",
            "after the move (live updates)",
        ),
    ] {
        match pixels_differ(&shot(a), &shot(b)) {
            Ok(n) => check(n > 0, format!("the screenshots {what} are identical")),
            Err(e) => check(false, e),
        }
    }
    check(
        r.num("COLORS_BEFORE") > 16,
        format!(
            "the first screenshot has {} colors: the game is not on screen",
            r.get("COLORS_BEFORE")
        ),
    );

    // (3) The same VNC connection: same local port, same viewer, more data, ESTABLISHED now.
    let port = r.get("PORT_BEFORE");
    check(
        !port.is_empty() && port == r.get("PORT_AFTER"),
        format!(
            "VNC local port {port:?} before, {:?} after",
            r.get("PORT_AFTER")
        ),
    );
    let viewer = r.get("VIEWER_PID");
    check(
        !viewer.is_empty()
            && viewer == r.get("VIEWER_PID_BEFORE")
            && viewer == r.get("VIEWER_PID_AFTER"),
        format!(
            "viewer PID {viewer:?}; on the connection before {:?}, after {:?}",
            r.get("VIEWER_PID_BEFORE"),
            r.get("VIEWER_PID_AFTER")
        ),
    );
    check(
        r.num("RX_AFTER") > r.num("RX_BEFORE"),
        format!(
            "bytes received {} -> {}",
            r.get("RX_BEFORE"),
            r.get("RX_AFTER")
        ),
    );
    let ss = tb.sh(
        "client",
        &format!("ss -Htnp state established dst {IP}:5900"),
    );
    let ss = ss.stdout_str();
    check(
        !port.is_empty() && ss.contains(&format!(":{port} ")) && ss.contains(&format!("pid={viewer},")),
        format!("now, from the client, ss shows no connection from port {port} of viewer {viewer}: {ss:?}"),
    );

    // The downtime was measured.
    let stats: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("stats.json")).unwrap_or_default())
            .unwrap_or_default();
    let downtime = stats["downtime_ms"].as_u64().unwrap_or(0);
    check(
        downtime > 0 && r.num("DOWNTIME_MS") == downtime,
        format!(
            "downtime {downtime} ms in stats.json, {:?} in result.env",
            r.get("DOWNTIME_MS")
        ),
    );

    if !failures.is_empty() {
        let kept = keep_artifacts(&out);
        panic!(
            "the Doom demo failed:\n- {}\nscreenshots, logs and result.env kept in {}\n--- scripts/doom-demo stderr (end):\n{}",
            failures.join("\n- "),
            kept.display(),
            log.lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    eprintln!(
        "doom: downtime {downtime} ms, {} of {} pixels changed across the move, rootfs build {}",
        r.get("AE_BEFORE_AFTER"),
        r.get("PIXELS"),
        r.get("ROOTFS_BUILD_S")
    );
}
