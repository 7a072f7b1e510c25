//! Unit tests of the container handle: names, rootfs kinds, monitor titles, states.

use super::*;

fn container() -> Container {
    Container::new("u1", "/var/lib/lxc").unwrap()
}

fn rootfs(value: &str) -> Result<PathBuf, LxcError> {
    container().rootfs_in(&Config::parse(&format!("lxc.rootfs.path = {value}\n")))
}

#[test]
fn paths() {
    let c = container();
    assert_eq!(c.dir(), Path::new("/var/lib/lxc/u1"));
    assert_eq!(c.config_path(), Path::new("/var/lib/lxc/u1/config"));
}

#[test]
fn bad_names_are_refused() {
    for name in ["", ".", "..", "a/b", "a\nb"] {
        let err = Container::new(name, "/x").unwrap_err();
        assert!(matches!(err, LxcError::BadName { .. }), "{name:?}: {err}");
    }
    assert!(Container::new("u1.example-2_x", "/x").is_ok());
}

#[test]
fn missing_container_error_says_what_to_do() {
    let err = Container::new("u1", "/nonexistent/ckpt")
        .unwrap()
        .ensure_exists()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "no container u1 in /nonexistent/ckpt: check the name and -P"
    );
}

#[test]
fn dir_and_plain_rootfs_are_supported() {
    assert_eq!(
        rootfs("dir:/var/lib/lxc/u1/rootfs").unwrap(),
        Path::new("/var/lib/lxc/u1/rootfs")
    );
    assert_eq!(
        rootfs("/srv/u1/rootfs").unwrap(),
        Path::new("/srv/u1/rootfs")
    );
}

#[test]
fn other_rootfs_types_are_refused_by_name() {
    for (value, kind) in [
        ("overlay:/a/rootfs:/a/delta0", "overlay"),
        ("btrfs:/var/lib/lxc/u1/rootfs", "btrfs"),
        ("lvm:/dev/vg/u1", "lvm"),
        ("zfs:pool/u1", "zfs"),
        ("rootfs", "relative path"),
    ] {
        let err = rootfs(value).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("container u1: rootfs type {kind} is not supported, only dir (lxc.rootfs.path = {value})")
        );
    }
}

#[test]
fn missing_or_legacy_rootfs_key() {
    let err = container()
        .rootfs_in(&Config::parse("lxc.uts.name = u1\n"))
        .unwrap_err();
    assert!(matches!(err, LxcError::NoRootfs { .. }), "{err}");
    let err = container()
        .rootfs_in(&Config::parse("lxc.rootfs = /a\n"))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("lxc-update-config -c /var/lib/lxc/u1/config"),
        "{err}"
    );
}

#[test]
fn monitor_titles() {
    let c = Container::new("u1", "/nonexistent/lxc").unwrap();
    assert!(c.is_monitor_title(b"[lxc monitor] /nonexistent/lxc u1\0"));
    assert!(c.is_monitor_title(b"[lxc monitor] /nonexistent/lxc/ u1\0junk"));
    assert!(!c.is_monitor_title(b"[lxc monitor] /nonexistent/lxc u10\0"));
    assert!(!c.is_monitor_title(b"[lxc monitor] /nonexistent/other u1\0"));
    assert!(!c.is_monitor_title(b"lxc-start -n u1\0"));
}

#[test]
fn states() {
    assert_eq!(State::parse("RUNNING\n"), State::Running);
    assert_eq!(State::parse("STOPPED"), State::Stopped);
    assert_eq!(State::parse("WEIRD").to_string(), "WEIRD");
}

#[test]
fn a_container_without_monitor_in_a_fake_lxcpath_is_not_running() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("u1")).unwrap();
    std::fs::write(dir.path().join("u1/config"), "lxc.tty = 0\n").unwrap();
    let c = Container::new("u1", dir.path()).unwrap();
    assert!(c.exists());
    assert!(c.monitor_pid().is_none());
    assert!(!c.is_running());
}
