//! Unit tests of the systemd checks: finding the init inside the rootfs, the profile in use, the
//! denials in a profile, and the profile a fix writes.

use std::os::unix::fs::symlink;

use super::*;

/// LXC's common.seccomp, as Debian 12's lxc ships it.
const COMMON: &str =
    "2\ndenylist\nreject_force_umount  # comment this to allow umount -f;  not recommended\n\
                      [all]\nkexec_load errno 1\nopen_by_handle_at errno 1\ninit_module errno 1\n\
                      finit_module errno 1\ndelete_module errno 1\n";

/// A Debian 12 style rootfs: merged /usr, /sbin/init -> /lib/systemd/systemd.
fn debian_rootfs() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    std::fs::create_dir_all(root.join("usr/lib/systemd")).unwrap();
    std::fs::create_dir_all(root.join("usr/sbin")).unwrap();
    std::fs::write(root.join("usr/lib/systemd/systemd"), "").unwrap();
    symlink("usr/lib", root.join("lib")).unwrap();
    symlink("usr/sbin", root.join("sbin")).unwrap();
    symlink("/lib/systemd/systemd", root.join("usr/sbin/init")).unwrap();
    tmp
}

#[test]
fn init_resolves_inside_the_rootfs_through_every_symlink() {
    let root = debian_rootfs();
    assert_eq!(
        resolve_in(root.path(), "/sbin/init").as_deref(),
        Some("/usr/lib/systemd/systemd")
    );
    assert!(is_systemd(root.path(), "/usr/lib/systemd/systemd"));
    // `..` and absolute targets never leave the rootfs.
    symlink(
        "../../../../../usr/lib/systemd/systemd",
        root.path().join("usr/sbin/up"),
    )
    .unwrap();
    assert_eq!(
        resolve_in(root.path(), "/sbin/up").as_deref(),
        Some("/usr/lib/systemd/systemd")
    );
    assert_eq!(resolve_in(root.path(), "/sbin/missing"), None);
    symlink("loop", root.path().join("loop")).unwrap();
    assert_eq!(resolve_in(root.path(), "/loop"), None);
}

#[test]
fn an_init_that_is_systemd_only_on_the_host_is_not_systemd() {
    // /sbin/init -> /lib/systemd/systemd, but the rootfs has no such file: the host's must not count.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("sbin")).unwrap();
    symlink("/lib/systemd/systemd", tmp.path().join("sbin/init")).unwrap();
    let mut problems = Vec::new();
    survey(&Config::parse(""), tmp.path(), tmp.path(), &mut problems);
    assert_eq!(problems, []);
}

#[test]
fn a_busybox_init_is_not_systemd() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("bin")).unwrap();
    std::fs::create_dir_all(tmp.path().join("sbin")).unwrap();
    std::fs::write(tmp.path().join("bin/busybox"), "").unwrap();
    symlink("/bin/busybox", tmp.path().join("sbin/init")).unwrap();
    let mut problems = Vec::new();
    survey(&Config::parse(""), tmp.path(), tmp.path(), &mut problems);
    assert_eq!(problems, []);
}

#[test]
fn lxc_init_cmd_names_the_init() {
    let root = debian_rootfs();
    let mut problems = Vec::new();
    let config = Config::parse("lxc.init.cmd = /bin/sh -c true\n");
    survey(&config, root.path(), root.path(), &mut problems);
    assert_eq!(problems, [], "/bin/sh is no systemd");
    let config = Config::parse("lxc.init.cmd = /usr/lib/systemd/systemd --log-level=debug\n");
    survey(&config, root.path(), root.path(), &mut problems);
    assert_eq!(problems.len(), 2, "{problems:#?}");
}

#[test]
fn common_seccomp_denies_neither() {
    assert!(!denies(COMMON, Denial::NewUts));
    assert!(!denies(COMMON, Denial::Bpf));
    let fixed = format!(
        "{COMMON}[all]\n{}\n{}\n",
        Denial::NewUts.rule(),
        Denial::Bpf.rule()
    );
    assert!(denies(&fixed, Denial::NewUts));
    assert!(denies(&fixed, Denial::Bpf));
}

#[test]
fn rules_that_count_and_rules_that_do_not() {
    let p = |body: &str| format!("2\ndenylist\n{body}\n");
    // Deny rules, spelled in other ways.
    assert!(denies(
        &p("[all]\nunshare errno 1 [0, 0x04000000, SCMP_CMP_MASKED_EQ, 0x04000000]"),
        Denial::NewUts
    ));
    assert!(
        denies(&p("unshare errno 38"), Denial::NewUts),
        "every unshare denied"
    );
    assert!(denies(&p("[x86_64]\nbpf kill"), Denial::Bpf) == (std::env::consts::ARCH == "x86_64"));
    assert!(
        denies(&p("bpf"), Denial::Bpf),
        "no action in a denylist denies"
    );
    // Not denials of what systemd does.
    assert!(!denies(
        &p("unshare errno 1 [0,0x00020000,SCMP_CMP_MASKED_EQ,0x00020000]"),
        Denial::NewUts
    ));
    assert!(!denies(&p("[mips]\nbpf errno 1"), Denial::Bpf));
    assert!(!denies(&p("# bpf errno 1"), Denial::Bpf));
    assert!(
        !denies("2\nallowlist\nbpf\n", Denial::Bpf),
        "an allowlist line allows"
    );
    assert!(!denies(&p("bpf allow"), Denial::Bpf));
    assert!(!denies("", Denial::Bpf));
}

#[test]
fn the_profile_in_use_follows_includes_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let common = tmp.path().join("common.conf");
    let confd = tmp.path().join("common.conf.d");
    std::fs::create_dir(&confd).unwrap();
    std::fs::write(
        &common,
        format!(
            "lxc.seccomp.profile = /a.seccomp\nlxc.include = {}\n",
            confd.display()
        ),
    )
    .unwrap();
    std::fs::write(
        confd.join("10-b.conf"),
        "lxc.seccomp.profile = /b.seccomp\n",
    )
    .unwrap();
    std::fs::write(
        confd.join("20-c.conf"),
        "lxc.seccomp.profile = /c.seccomp\n",
    )
    .unwrap();
    std::fs::write(
        confd.join("30-ignored.txt"),
        "lxc.seccomp.profile = /x.seccomp\n",
    )
    .unwrap();
    let include = format!("lxc.include = {}\n", common.display());
    let profile = |text: &str| effective_profile(&Config::parse(text));
    assert_eq!(profile(&include), Some(PathBuf::from("/c.seccomp")));
    assert_eq!(
        profile(&format!("lxc.seccomp.profile = /mine\n{include}")),
        Some(PathBuf::from("/c.seccomp")),
        "an include after the container's line overrides it"
    );
    assert_eq!(
        profile(&format!("{include}lxc.seccomp.profile = /mine\n")),
        Some(PathBuf::from("/mine"))
    );
    assert_eq!(profile(&format!("{include}lxc.seccomp.profile =\n")), None);
    assert_eq!(profile(""), None);
}

#[test]
fn the_new_profile_keeps_every_line_of_the_old_one() {
    let tmp = tempfile::tempdir().unwrap();
    let old = tmp.path().join("common.seccomp");
    std::fs::write(&old, COMMON).unwrap();
    let problem = |denial| Problem::SystemdSeccomp {
        init: "/sbin/init".into(),
        systemd: "/usr/lib/systemd/systemd".into(),
        denial,
        profile: Some(old.clone()),
        into: tmp.path().join(PROFILE),
    };
    let (a, b) = (problem(Denial::NewUts), problem(Denial::Bpf));
    let (path, text) = new_profile(&[&a, &b]).unwrap().unwrap();
    assert_eq!(path, tmp.path().join("ckpt.seccomp"));
    assert_eq!(
        text,
        format!(
            "{COMMON}{MARKER}\n[all]\nunshare errno 1 [0,0x04000000,SCMP_CMP_MASKED_EQ,0x04000000]\nbpf errno 1\n"
        )
    );
    // Only what is missing.
    let (_, text) = new_profile(&[&b]).unwrap().unwrap();
    assert!(
        text.ends_with("[all]\nbpf errno 1\n") && !text.contains("unshare"),
        "{text}"
    );
    // No profile before: a denylist of its own.
    let none = Problem::SystemdSeccomp {
        init: "/sbin/init".into(),
        systemd: "/usr/lib/systemd/systemd".into(),
        denial: Denial::NewUts,
        profile: None,
        into: tmp.path().join(PROFILE),
    };
    let (_, text) = new_profile(&[&none]).unwrap().unwrap();
    assert!(text.starts_with("2\ndenylist\n# lxc-fixtty: "), "{text}");
    // A version 1 profile cannot be extended.
    std::fs::write(&old, "1\n103\n").unwrap();
    let err = new_profile(&[&a]).unwrap_err();
    assert!(format!("{err:#}").contains("is not version 2"), "{err:#}");
    assert_eq!(new_profile(&[]).unwrap(), None);
}

#[test]
fn point_config_edits_in_place_or_appends_after_includes() {
    let path = Path::new("/var/lib/lxc/sd1/ckpt.seccomp");
    let run = |text: &str| {
        let mut config = Config::parse(text);
        let mut marked = false;
        point_config(&mut config, path, &mut marked);
        config.to_string()
    };
    assert_eq!(
        run("lxc.include = /x\nlxc.seccomp.profile = /old\nlxc.uts.name = a\n"),
        "lxc.include = /x\nlxc.seccomp.profile = /var/lib/lxc/sd1/ckpt.seccomp\nlxc.uts.name = a\n"
    );
    let appended = run("lxc.seccomp.profile = /old\nlxc.include = /x\n");
    assert!(
        appended.starts_with("lxc.include = /x\n# lxc-fixtty: ")
            && appended.ends_with("\nlxc.seccomp.profile = /var/lib/lxc/sd1/ckpt.seccomp\n"),
        "{appended}"
    );
}
