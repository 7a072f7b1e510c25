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

/// A systemd container configured like the fixture: common.conf-like include setting a profile,
/// the tty settings already fixed.
fn fake_systemd() -> (Fake, PathBuf) {
    let f = fake();
    let lib = f.container.dir().join("lxc-config");
    std::fs::create_dir_all(&lib).unwrap();
    let common_seccomp = lib.join("common.seccomp");
    std::fs::write(&common_seccomp, "2\ndenylist\n[all]\nkexec_load errno 1\n").unwrap();
    std::fs::write(
        lib.join("common.conf"),
        format!("lxc.seccomp.profile = {}\n", common_seccomp.display()),
    )
    .unwrap();
    std::fs::write(
        f.container.config_path(),
        format!(
            "lxc.include = {}\nlxc.mount.auto = proc:mixed sys:mixed cgroup:mixed\n\
             lxc.rootfs.path = dir:{}\nlxc.tty.max = 0\nlxc.console.path = none\n\
             lxc.cgroup.devices.deny = c 5:1 rwm\n",
            lib.join("common.conf").display(),
            f.rootfs.display()
        ),
    )
    .unwrap();
    std::fs::remove_file(f.rootfs.join("etc/inittab")).unwrap();
    std::fs::remove_dir_all(f.rootfs.join("dev")).unwrap();
    std::fs::create_dir_all(f.rootfs.join("lib/systemd")).unwrap();
    std::fs::create_dir_all(f.rootfs.join("sbin")).unwrap();
    std::fs::write(f.rootfs.join("lib/systemd/systemd"), "").unwrap();
    symlink("/lib/systemd/systemd", f.rootfs.join("sbin/init")).unwrap();
    (f, common_seccomp)
}

#[test]
fn a_systemd_container_needs_two_seccomp_denials() {
    let (f, common) = fake_systemd();
    let survey = Survey::take(&f.container, &HOST).unwrap();
    let profile = f.container.dir().join("ckpt.seccomp");
    assert_eq!(
        actions(&survey),
        [
            format!(
                "would add `unshare errno 1 [0,0x04000000,SCMP_CMP_MASKED_EQ,0x04000000]` to the seccomp profile {}: \
                 ProtectHostname= is ignored (systemd skips the UTS namespace)",
                profile.display()
            ),
            format!(
                "would add `bpf errno 1` to the seccomp profile {}: systemd's IP sandboxing is not enforced \
                 (IPAddressDeny=/IPAddressAllow= do nothing)",
                profile.display()
            ),
        ]
    );
    let text = survey.problems[0].to_string();
    assert_eq!(
        text,
        format!(
            "systemd container (/sbin/init is /lib/systemd/systemd): its seccomp profile {} allows \
             unshare(CLONE_NEWUTS): services with ProtectHostname= (systemd-logind) get a UTS namespace of \
             their own, which CRIU cannot dump (\"Can't dump nested uts namespace\"); the fix denies it, and \
             the container loses this: ProtectHostname= is ignored (systemd skips the UTS namespace)",
            common.display()
        )
    );
    assert!(
        survey.problems[1]
            .to_string()
            .contains("anon_inode:bpf-prog")
            && survey.problems[1].to_string().contains("IPAddressDeny="),
        "{}",
        survey.problems[1]
    );
    // ckpt-dump's gate counts them, with the same words.
    let err = ensure_checkpointable(&f.container).unwrap_err();
    assert!(
        format!("{err:#}").contains(&format!("is not checkpointable: {text} (and 1 more)")),
        "{err:#}"
    );
}

#[test]
fn the_systemd_fix_writes_the_profile_and_is_idempotent() {
    let (f, common) = fake_systemd();
    let config_before = std::fs::read_to_string(f.container.config_path()).unwrap();
    let said = std::cell::RefCell::new(Vec::new());
    let say = |m: &str| said.borrow_mut().push(m.to_string());
    fix(&Survey::take(&f.container, &HOST).unwrap(), &say).unwrap();
    let profile = f.container.dir().join("ckpt.seccomp");
    let said = said.into_inner();
    assert_eq!(
        said[1],
        format!(
            "wrote {} (the lines of {} plus the denials below) and set lxc.seccomp.profile = {}",
            profile.display(),
            common.display(),
            profile.display()
        ),
        "{said:#?}"
    );
    assert_eq!(said.last().unwrap(), "fixed 2 problems, checkpointable now");
    assert_eq!(
        std::fs::read_to_string(f.container.dir().join(CONFIG_BACKUP)).unwrap(),
        config_before
    );
    let written = std::fs::read_to_string(&profile).unwrap();
    assert!(
        written.starts_with("2\ndenylist\n[all]\nkexec_load errno 1\n# lxc-fixtty: ")
            && written.ends_with(
                "\n[all]\nunshare errno 1 [0,0x04000000,SCMP_CMP_MASKED_EQ,0x04000000]\nbpf errno 1\n"
            ),
        "{written}"
    );
    let config = std::fs::read_to_string(f.container.config_path()).unwrap();
    assert_eq!(
        config,
        format!(
            "{config_before}# lxc-fixtty: settings that let CRIU checkpoint this container (see lxc-fixtty(1))\n\
             lxc.seccomp.profile = {}\n",
            profile.display()
        )
    );

    // Idempotent: nothing found, nothing changes.
    let again = Survey::take(&f.container, &HOST).unwrap();
    assert_eq!(again.problems, []);
    ensure_checkpointable(&f.container).unwrap();

    // A denial removed by hand from lxc-fixtty's own profile is added back to that profile.
    std::fs::write(&profile, written.replace("bpf errno 1\n", "")).unwrap();
    let survey = Survey::take(&f.container, &HOST).unwrap();
    assert_eq!(survey.problems.len(), 1);
    fix(&survey, &|_| {}).unwrap();
    let rewritten = std::fs::read_to_string(&profile).unwrap();
    assert!(
        rewritten.starts_with(&written.replace("bpf errno 1\n", ""))
            && rewritten.ends_with("[all]\nbpf errno 1\n"),
        "{rewritten}"
    );
    assert_eq!(
        std::fs::read_to_string(f.container.config_path()).unwrap(),
        config,
        "the config already named the profile"
    );
    assert_eq!(
        std::fs::read_to_string(f.container.dir().join(CONFIG_BACKUP)).unwrap(),
        config_before,
        "the backup keeps the original"
    );

    // The config line taken out by hand comes back the same, under the one lxc-fixtty comment.
    let without: String = config
        .lines()
        .filter(|l| !l.starts_with("lxc.seccomp.profile"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(f.container.config_path(), without).unwrap();
    fix(&Survey::take(&f.container, &HOST).unwrap(), &|_| {}).unwrap();
    assert_eq!(
        std::fs::read_to_string(f.container.config_path()).unwrap(),
        config
    );
}
