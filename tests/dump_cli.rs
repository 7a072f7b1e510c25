//! ckpt-dump's refusals as a user meets them, without LXC: one line, the exit code, and the writer
//! of an `--ack` fifo released on every early exit, so the documented pipeline never hangs.

mod util;

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use util::Dir;

/// Starts what the shell does for `ssh host2 ckpt-restore > FIFO`: a writer that opens the fifo.
fn fifo_writer(t: &Dir) -> Child {
    let fifo = t.join("ack");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success(), "mkfifo failed");
    Command::new("sh")
        .arg("-c")
        .arg(format!("echo '{{}}' > '{}'", fifo.display()))
        .spawn()
        .unwrap()
}

/// The writer must get past its open once ckpt-dump has exited.
fn assert_released(mut writer: Child) {
    let start = Instant::now();
    while writer.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(10) {
            let _ = writer.kill();
            panic!("the --ack fifo's writer still waits for a reader: the pipeline would hang");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_missing_container_releases_the_ack_fifo() {
    let t = Dir::new("dump-ack-missing");
    std::fs::create_dir(t.join("lxc")).unwrap();
    let writer = fifo_writer(&t);
    t.cmd("ckpt-dump")
        .args(["-P", "lxc", "--ack", "ack", "nosuch"])
        .fails(1)
        .one_line_error("no container nosuch");
    assert_released(writer);
}

#[test]
fn a_usage_error_releases_the_ack_fifo() {
    let t = Dir::new("dump-ack-usage");
    let writer = fifo_writer(&t);
    t.cmd("ckpt-dump")
        .args(["--ack", "ack", "--no-such-flag", "u1"])
        .fails(2);
    assert_released(writer);
    let writer = fifo_writer_again(&t);
    t.cmd("ckpt-dump")
        .args(["--ack=ack", "--compress", "lz4", "u1"])
        .fails(2);
    assert_released(writer);
}

fn fifo_writer_again(t: &Dir) -> Child {
    std::fs::remove_file(t.join("ack")).unwrap();
    fifo_writer(t)
}

#[test]
fn lazy_needs_ack_and_takes_no_snapshot() {
    let t = Dir::new("dump-lazy-usage");
    let run = t.cmd("ckpt-dump").args(["--lazy", "u1"]).fails(2);
    assert!(run.stderr_str().contains("--ack"), "{}", run.stderr_str());
    let writer = fifo_writer(&t);
    let run = t
        .cmd("ckpt-dump")
        .args(["--lazy", "--ack", "ack", "--leave-running", "u1"])
        .fails(2);
    assert!(
        run.stderr_str().contains("--leave-running"),
        "{}",
        run.stderr_str()
    );
    assert_released(writer);
}
