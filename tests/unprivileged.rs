//! Root end-to-end test of an unprivileged (idmapped) container on the two-host test bed: it
//! moves host1 -> host2 -> host1 under `umask 077` on both ends with its state, owners and modes
//! intact, and one with a host bind mount is refused before the freeze (issue #14, items 4, 6).

mod util;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use util::testbed::{Before, Container, Testbed};

/// The container's root on the host, as the fixture maps it (make-container IDMAP=100000).
const ROOT: u32 = 100000;

/// The fixture's owner and mode probes in /srv/ids, as the host sees them: (file, uid, gid, mode).
const PROBES: &[(&str, u32, u32, u32)] = &[
    ("uid33", ROOT + 33, ROOT + 33, 0o100640),
    ("gid42", ROOT, ROOT + 42, 0o100604),
    ("setuid", ROOT, ROOT, 0o104755),
    ("setgid", ROOT, ROOT + 42, 0o042770),
];

/// Asserts the shifted owners and the setuid/setgid modes of the rootfs on `host`.
fn assert_owners(tb: &Testbed, host: &str, c: &Container) {
    let rootfs = tb.lxcpath(host).join(&c.name).join("rootfs");
    for &(file, uid, gid, mode) in PROBES {
        let meta = std::fs::symlink_metadata(rootfs.join("srv/ids").join(file)).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode()),
            (uid, gid, mode),
            "owner or mode of /srv/ids/{file} on {host} (uid, gid, mode {mode:o} expected)"
        );
    }
    let busybox = std::fs::symlink_metadata(rootfs.join("bin/busybox")).unwrap();
    assert_eq!((busybox.uid(), busybox.gid()), (ROOT, ROOT), "/bin/busybox");
    let rootfs_meta = std::fs::metadata(&rootfs).unwrap();
    assert_eq!(rootfs_meta.uid(), ROOT, "the rootfs itself");
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn snapshot(tb: &Testbed, host: &str, c: &Container) -> Before {
    tb.workload(host, c).before()
}

/// Moves `c` with the rollback-safe pipeline, `umask 077` in the shells on both ends, into
/// `lto`, an lxcpath that does not exist yet (ckpt-restore creates it).
fn migrate(tb: &Testbed, from: &str, to: &str, lfrom: &str, lto: &str) {
    let script = format!(
        "umask 077; rm -f /tmp/e2eunpr.ack; mkfifo /tmp/e2eunpr.ack; \
         $BIN/ckpt-dump -P {lfrom} --ack /tmp/e2eunpr.ack un1 \
         | $SSH {to} \"umask 077; $BIN/ckpt-restore -P {lto}\" > /tmp/e2eunpr.ack"
    );
    let run = tb.sh(from, &script).expect_code(0);
    assert!(
        run.stderr_str().contains("migrated"),
        "{}",
        run.stderr_str()
    );
}

/// The container moved with its state: same PIDs, counter went on, memory intact, the rootfs
/// as it wrote it, owners and modes as they were, one copy running, nothing left behind.
fn assert_moved(tb: &Testbed, from: &str, to: &str, c: &Container, before: Before) {
    tb.workload(to, c).assert_carried(&c.name, &before);
    assert_owners(tb, to, c);
    tb.assert_only_on(to, c);
    assert_eq!(tb.strays(from, &[]), Vec::<String>::new(), "{from} keeps");
    assert_eq!(
        tb.strays(to, &[&c.name]),
        Vec::<String>::new(),
        "leftovers in {to}'s lxcpath"
    );
    // The lxcpath ckpt-restore created under umask 077: passable by the container's root.
    assert_eq!(mode(&tb.lxcpath(to)), 0o711, "mode of {to}'s new lxcpath");
}

#[test]
fn unprivileged_container_moves_there_and_back_under_umask_077() {
    let tb = Testbed::up("e2eunpr");
    // No veth: this CRIU restores an unprivileged container's veth through usernsd, whose
    // RTM_NEWLINK names the container's ifindex in the host's namespace, where ifindex 2 is
    // taken (`-95 reported by netlink: Operation not supported`); the loopback is restored.
    let c = tb.create_with(
        "host1",
        "un1",
        41,
        64,
        &[("IDMAP", "100000"), ("NET", "empty")],
    );
    assert_owners(&tb, "host1", &c);
    tb.sh(
        "host1",
        "$BIN/lxc-fixtty -q -P $L1 un1 && lxc-start -P $L1 -n un1",
    )
    .expect_code(0);
    tb.workload("host1", &c).wait_ready();
    let uid_map = tb
        .sh("host1", "cat /proc/$(lxc-info -P $L1 -n un1 -pH)/uid_map")
        .expect_code(0)
        .stdout_str();
    assert_eq!(
        uid_map.split_whitespace().collect::<Vec<_>>(),
        ["0", "100000", "65536"],
        "the container must run in a user namespace"
    );

    // To host2, into an lxcpath that does not exist yet, and back, into one that no longer does.
    let before = snapshot(&tb, "host1", &c);
    std::fs::remove_dir(tb.lxcpath("host2")).unwrap();
    migrate(&tb, "host1", "host2", "$L1", "$L2");
    assert_moved(&tb, "host1", "host2", &c, before);

    let before = snapshot(&tb, "host2", &c);
    std::fs::remove_dir(tb.lxcpath("host1")).unwrap();
    migrate(&tb, "host2", "host1", "$L2", "$L1");
    assert_moved(&tb, "host2", "host1", &c, before);
}

#[test]
fn unprivileged_container_with_a_host_bind_mount_is_refused_before_the_freeze() {
    let tb = Testbed::up("e2eunpb");
    let c = tb.create_with(
        "host1",
        "unb1",
        42,
        16,
        &[("IDMAP", "100000"), ("NET", "empty")],
    );
    tb.sh(
        "host1",
        "echo 'lxc.mount.entry = /usr/lib usr/lib none ro,bind,create=dir 0 0' >> $L1/unb1/config \
         && $BIN/lxc-fixtty -q -P $L1 unb1 && lxc-start -P $L1 -n unb1",
    )
    .expect_code(0);
    let w = tb.workload("host1", &c);
    w.wait_ready();
    let Before { count, pids, .. } = snapshot(&tb, "host1", &c);
    let run = tb
        .sh(
            "host1",
            "umask 077; $BIN/ckpt-dump -P $L1 --stats /tmp/e2eunpb.stats unb1 > /dev/null",
        )
        .expect_code(1)
        .one_line_error("/usr/lib");
    let err = run.stderr_str();
    for needle in [
        "user namespace",
        "CRIU cannot bind-mount host paths",
        "lxc.mount.entry = /usr/lib usr/lib none ro,bind,create=dir 0 0",
        "copy the files into the container's rootfs",
    ] {
        assert!(err.contains(needle), "{needle:?} missing from: {err}");
    }
    let stats = std::fs::read_to_string("/tmp/e2eunpb.stats").unwrap();
    let _ = std::fs::remove_file("/tmp/e2eunpb.stats");
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["failure"]["phase"], "checks", "{stats}");
    // Untouched: still running, never frozen, the same processes counting on.
    assert_eq!(tb.state("host1", &c.name), "RUNNING");
    assert!(w.wait_counter_above(count) > count);
    assert_eq!(w.pids(), pids);
}
