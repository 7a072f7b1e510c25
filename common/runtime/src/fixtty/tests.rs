//! Unit tests of a whole survey and fix on a fake container, with the host facts given.

use std::os::unix::fs::{symlink, MetadataExt};

use super::*;

const HOST: Host = Host {
    devices: CgroupVersion::V1,
    apparmor: false,
};

struct Fake {
    _tmp: tempfile::TempDir,
    container: Container,
    rootfs: PathBuf,
}

fn fake() -> Fake {
    let tmp = tempfile::tempdir().unwrap();
    let container = Container::new("u1", tmp.path()).unwrap();
    let rootfs = container.dir().join("rootfs");
    std::fs::create_dir_all(rootfs.join("dev/pts")).unwrap();
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::write(
        container.config_path(),
        format!(
            "lxc.rootfs.path = dir:{}\nlxc.tty.max = 5\nlxc.apparmor.profile = generated\n",
            rootfs.display()
        ),
    )
    .unwrap();
    std::fs::write(rootfs.join("etc/inittab"), "::sysinit:/etc/init.d/rcS\ntty1::respawn:/bin/getty -L tty1 115200 vt100\nconsole::askfirst:/bin/sh\n").unwrap();
    symlink("/dev/pts/0", rootfs.join("dev/tty1")).unwrap();
    symlink("/dev/null", rootfs.join("dev/tty")).unwrap();
    std::fs::write(rootfs.join("dev/tty2"), "").unwrap();
    Fake {
        _tmp: tmp,
        container,
        rootfs,
    }
}

fn actions(survey: &Survey) -> Vec<String> {
    survey.problems.iter().map(|p| p.action(false)).collect()
}

#[test]
fn survey_finds_every_kind_of_problem() {
    let f = fake();
    let survey = Survey::take(&f.container, &HOST).unwrap();
    assert_eq!(
        actions(&survey),
        [
            "would set lxc.tty.max = 0 (was 5 on line 2)",
            "would set lxc.console.path = none",
            "would add lxc.cgroup.devices.deny = c 5:1 rwm at the end of the config",
            "would remove lxc.apparmor.profile = generated (line 3)",
            "would replace /dev/tty (a symlink to /dev/null) with an empty regular file",
            "would replace /dev/tty1 (a symlink to /dev/pts/0) with an empty regular file",
            "would create empty regular files /dev/tty0, /dev/tty3, /dev/tty4",
            "would comment out /etc/inittab line 2: tty1::respawn:/bin/getty -L tty1 115200 vt100",
            "would comment out /etc/inittab line 3: console::askfirst:/bin/sh",
        ]
    );
}

#[test]
fn fix_applies_everything_with_backups_and_is_idempotent() {
    let f = fake();
    let config_before = std::fs::read(f.container.config_path()).unwrap();
    let inittab_before = std::fs::read(f.rootfs.join("etc/inittab")).unwrap();
    let said = std::cell::RefCell::new(Vec::new());
    let say = |m: &str| said.borrow_mut().push(m.to_string());
    fix(&Survey::take(&f.container, &HOST).unwrap(), &say).unwrap();
    assert_eq!(
        std::fs::read(f.container.dir().join(CONFIG_BACKUP)).unwrap(),
        config_before
    );
    assert_eq!(
        std::fs::read(f.rootfs.join("etc/inittab.ckpt-orig")).unwrap(),
        inittab_before
    );
    assert_eq!(
        std::fs::read_to_string(f.rootfs.join("etc/inittab")).unwrap(),
        "::sysinit:/etc/init.d/rcS\n# lxc-fixtty: tty1::respawn:/bin/getty -L tty1 115200 vt100\n\
         # lxc-fixtty: console::askfirst:/bin/sh\n"
    );
    for tty in ["tty", "tty0", "tty1", "tty2", "tty3", "tty4"] {
        let meta = std::fs::symlink_metadata(f.rootfs.join("dev").join(tty)).unwrap();
        assert!(meta.is_file() && meta.len() == 0, "{tty}: {meta:?}");
    }
    assert_eq!(
        std::fs::symlink_metadata(f.rootfs.join("dev/tty0"))
            .unwrap()
            .mode()
            & 0o777,
        0o644
    );
    let said = said.into_inner();
    assert_eq!(said.last().unwrap(), "fixed 9 problems, checkpointable now");
    assert!(
        said[0].starts_with("saved the original config as "),
        "{said:#?}"
    );

    let again = Survey::take(&f.container, &HOST).unwrap();
    assert_eq!(again.problems, []);
    let backup = std::fs::read(f.container.dir().join(CONFIG_BACKUP)).unwrap();
    assert_eq!(
        backup, config_before,
        "the backup of the original is never overwritten"
    );
}

#[test]
fn a_dev_symlink_is_never_followed() {
    let f = fake();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("tty1"), "host file").unwrap();
    std::fs::remove_dir_all(f.rootfs.join("dev")).unwrap();
    symlink(outside.path(), f.rootfs.join("dev")).unwrap();
    let err = Survey::take(&f.container, &HOST).err().unwrap();
    assert!(
        format!("{err:#}").contains("lxc-fixtty does not follow it"),
        "{err:#}"
    );
    assert_eq!(
        std::fs::read(outside.path().join("tty1")).unwrap(),
        b"host file"
    );
}

#[test]
fn unsupported_rootfs_is_a_clear_error() {
    let f = fake();
    std::fs::write(
        f.container.config_path(),
        "lxc.rootfs.path = overlay:/a:/b\n",
    )
    .unwrap();
    let err = Survey::take(&f.container, &HOST).err().unwrap();
    assert_eq!(
        format!("{err:#}"),
        "container u1: rootfs type overlay is not supported, only dir (lxc.rootfs.path = overlay:/a:/b)"
    );
}
