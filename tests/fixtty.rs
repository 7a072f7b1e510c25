//! lxc-fixtty from the command line, on a fake lxcpath in a temp dir: needs neither root nor LXC
//! (as root the rootfs ttys are real device nodes, otherwise symlinks). Refusing a running
//! container needs a real one: the root end-to-end tests cover that.

mod util;

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};

use util::Dir;

const NAME: &str = "u1";

/// A container as `lxc-create -t busybox` makes it, not yet checkpointable.
struct Fake {
    dir: Dir,
    lxcpath: PathBuf,
}

impl Fake {
    fn new(test: &str) -> Fake {
        let dir = Dir::new(test);
        let lxcpath = dir.join("lxc");
        let fake = Fake { dir, lxcpath };
        let rootfs = fake.rootfs();
        fs::create_dir_all(rootfs.join("dev/pts")).unwrap();
        fs::create_dir_all(rootfs.join("etc")).unwrap();
        fs::write(fake.config(), busybox_config(&rootfs)).unwrap();
        fs::write(
            rootfs.join("etc/inittab"),
            "::sysinit:/etc/init.d/rcS\ntty1::respawn:/bin/getty -L tty1 115200 vt100\nconsole::askfirst:/bin/sh\n\
             ::respawn:/sbin/ckpt-counter /var/ckpt-counter\n",
        )
        .unwrap();
        // A file outside the rootfs that a tty symlink points to: it must survive every run.
        fs::write(fake.dir.join("host-file"), "host").unwrap();
        for (name, minor) in [("tty", 0), ("tty1", 1), ("tty7", 7)] {
            make_tty(
                &rootfs.join("dev").join(name),
                minor,
                &fake.dir.join("host-file"),
            );
        }
        fs::write(rootfs.join("dev/tty2"), "").unwrap();
        fake
    }

    fn container(&self) -> PathBuf {
        self.lxcpath.join(NAME)
    }

    fn config(&self) -> PathBuf {
        self.container().join("config")
    }

    fn rootfs(&self) -> PathBuf {
        self.container().join("rootfs")
    }

    /// `lxc-fixtty -P LXCPATH ARGS... u1`.
    fn fixtty(&self, args: &[&str]) -> util::TestCommand {
        self.dir
            .cmd("lxc-fixtty")
            .arg("-P")
            .arg(&self.lxcpath)
            .args(args)
            .arg(NAME)
    }

    fn lxcpath_str(&self) -> String {
        self.lxcpath.display().to_string()
    }
}

fn busybox_config(rootfs: &Path) -> String {
    format!(
        "# Template used to create this container: /usr/share/lxc/templates/lxc-busybox\n\
         # Parameters passed to the template:\n\n\
         lxc.net.0.type = empty\n\
         lxc.apparmor.profile = generated\n\
         lxc.apparmor.allow_nesting = 1\n\
         lxc.rootfs.path = dir:{}\n\
         lxc.signal.halt = SIGUSR1\n\
         lxc.uts.name = \"{NAME}\"\n\
         lxc.autodev = 1\n\
         lxc.tty.max = 5\n\
         lxc.pty.max = 1\n\n\
         # When using LXC with apparmor, uncomment the next line to run unconfined:\n\
         #lxc.apparmor.profile = unconfined\n\n\
         lxc.mount.entry = /lib lib none ro,bind 0 0\n",
        rootfs.display()
    )
}

/// A character device 4:minor as root, else a symlink to `host_file` (outside the rootfs).
fn make_tty(path: &Path, minor: u32, host_file: &Path) {
    if util::is_root() {
        use rustix::fs::{makedev, mknodat, FileType, Mode, CWD};
        let major = if minor == 0 { 5 } else { 4 };
        if mknodat(
            CWD,
            path,
            FileType::CharacterDevice,
            Mode::from_raw_mode(0o620),
            makedev(major, minor),
        )
        .is_ok()
        {
            return;
        }
    }
    symlink(host_file, path).unwrap();
}

/// Whether this kernel has AppArmor, as lxc-fixtty decides it.
fn host_has_apparmor() -> bool {
    match fs::read_to_string("/sys/module/apparmor/parameters/enabled") {
        Ok(flag) => flag.starts_with('Y'),
        Err(_) => Path::new("/sys/kernel/security/apparmor").exists(),
    }
}

/// Everything about a tree that a change would show: type, mode, owner, device, mtime, content.
fn snapshot(root: &Path) -> Vec<String> {
    walkdir::WalkDir::new(root)
        .sort_by_file_name()
        .into_iter()
        .map(|entry| {
            let entry = entry.unwrap();
            let meta = entry.path().symlink_metadata().unwrap();
            let content = if meta.is_file() {
                format!("{:?}", fs::read(entry.path()).unwrap())
            } else if meta.file_type().is_symlink() {
                format!("-> {}", fs::read_link(entry.path()).unwrap().display())
            } else {
                String::new()
            };
            format!(
                "{} {:o} {}:{} rdev={} mtime={}.{} {content}",
                entry.path().display(),
                meta.mode(),
                meta.uid(),
                meta.gid(),
                meta.rdev(),
                meta.mtime(),
                meta.mtime_nsec()
            )
        })
        .collect()
}

fn problem_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.starts_with("lxc-fixtty: u1: "))
        .collect()
}

#[test]
fn check_lists_each_problem_and_changes_nothing() {
    let f = Fake::new("check");
    let before = snapshot(f.dir.path());
    let run = f.fixtty(&["--check"]).fails(1);
    let err = run.stderr_str();
    let mut expected = vec![
        "lxc.tty.max is 5 (line 11), it must be 0",
        "lxc.console.path is not set, it must be none",
        "/dev/console (c 5:1) is not denied",
        "rootfs /dev/tty is a",
        "rootfs /dev/tty1 is a",
        "rootfs /dev/tty7 is a",
        "rootfs /dev/tty0, /dev/tty3, /dev/tty4 are missing",
        "/etc/inittab line 2 runs a program on a tty",
        "/etc/inittab line 3 runs a program on a tty",
    ];
    if !host_has_apparmor() {
        expected.push("lxc.apparmor.profile = generated (line 5): this kernel has no AppArmor");
        expected.push("lxc.apparmor.allow_nesting = 1 (line 6)");
    }
    let lines = problem_lines(&err);
    for want in &expected {
        if !lines.iter().any(|l| l.contains(want)) {
            run.fail(&format!("no problem line contains {want:?}"));
        }
    }
    if lines.len() != expected.len() {
        run.fail(&format!("expected {} problem lines", expected.len()));
    }
    let last = err.lines().last().unwrap_or_default();
    let want = format!(
        "lxc-fixtty: error: u1 is not checkpointable: {} problems (run lxc-fixtty -P {} u1 to fix them)",
        expected.len(),
        f.lxcpath_str()
    );
    if last != want {
        run.fail(&format!("expected the last line {want:?}"));
    }
    assert_eq!(snapshot(f.dir.path()), before, "--check changed something");
}

#[test]
fn dry_run_shows_each_change_and_changes_nothing() {
    let f = Fake::new("dry-run");
    let before = snapshot(f.dir.path());
    let run = f.fixtty(&["--dry-run"]).ok();
    let err = run.stderr_str();
    for want in [
        "would save the original config as ",
        "would set lxc.tty.max = 0 (was 5 on line 11)",
        "would set lxc.console.path = none",
        "would comment out /etc/inittab line 2: tty1::respawn:/bin/getty -L tty1 115200 vt100",
        "would create empty regular files /dev/tty0, /dev/tty3, /dev/tty4",
    ] {
        if !err.contains(want) {
            run.fail(&format!("stderr lacks {want:?}"));
        }
    }
    if problem_lines(&err)
        .iter()
        .any(|l| !l.starts_with("lxc-fixtty: u1: would "))
    {
        run.fail("every --dry-run line starts with `would`");
    }
    assert_eq!(
        snapshot(f.dir.path()),
        before,
        "--dry-run changed something"
    );
}

#[test]
fn fix_applies_everything_then_nothing_changes_and_check_passes() {
    let f = Fake::new("fix");
    let config_before = fs::read(f.config()).unwrap();
    let inittab_before = fs::read(f.rootfs().join("etc/inittab")).unwrap();
    let run = f.fixtty(&[]).ok();
    let err = run.stderr_str();
    if !err.ends_with("lxc-fixtty: u1: fixed 11 problems, checkpointable now\n")
        && !err.ends_with("lxc-fixtty: u1: fixed 9 problems, checkpointable now\n")
    {
        run.fail("expected the summary line last");
    }
    for want in [
        "set lxc.tty.max = 0 (was 5 on line 11)",
        "commented out /etc/inittab line 3: console::askfirst:/bin/sh",
    ] {
        if !err.contains(&format!("lxc-fixtty: u1: {want}\n")) {
            run.fail(&format!("stderr lacks {want:?}"));
        }
    }

    // Backups of the originals, byte for byte.
    assert_eq!(
        fs::read(f.container().join("config.ckpt-orig")).unwrap(),
        config_before
    );
    assert_eq!(
        fs::read(f.rootfs().join("etc/inittab.ckpt-orig")).unwrap(),
        inittab_before
    );
    // The config: minimal edits.
    let config = fs::read_to_string(f.config()).unwrap();
    assert!(
        config.contains("\nlxc.tty.max = 0\nlxc.pty.max = 1\n"),
        "{config}"
    );
    assert!(config.contains("\nlxc.console.path = none\n"), "{config}");
    assert!(config.contains(" = c 5:1 rwm\n"), "{config}");
    assert!(
        config.contains("#lxc.apparmor.profile = unconfined\n"),
        "comments stay: {config}"
    );
    assert_eq!(
        config.contains("lxc.apparmor.profile = generated"),
        host_has_apparmor(),
        "{config}"
    );
    // The rootfs.
    for tty in ["tty", "tty0", "tty1", "tty2", "tty3", "tty4", "tty7"] {
        let meta = fs::symlink_metadata(f.rootfs().join("dev").join(tty)).unwrap();
        assert!(meta.is_file() && meta.len() == 0, "/dev/{tty} is {meta:?}");
    }
    assert_eq!(
        fs::read(f.dir.join("host-file")).unwrap(),
        b"host",
        "a symlink target outside the rootfs was touched"
    );
    let inittab = fs::read_to_string(f.rootfs().join("etc/inittab")).unwrap();
    assert_eq!(
        inittab,
        "::sysinit:/etc/init.d/rcS\n# lxc-fixtty: tty1::respawn:/bin/getty -L tty1 115200 vt100\n\
         # lxc-fixtty: console::askfirst:/bin/sh\n::respawn:/sbin/ckpt-counter /var/ckpt-counter\n"
    );

    // Idempotent.
    let after_fix = snapshot(f.dir.path());
    let again = f.fixtty(&[]).ok();
    if again.stderr_str() != "lxc-fixtty: u1: already checkpointable, nothing changed\n" {
        again.fail("the second run must change nothing");
    }
    assert_eq!(
        snapshot(f.dir.path()),
        after_fix,
        "the second run changed something"
    );
    let check = f.fixtty(&["--check"]).ok();
    if check.stderr_str() != "lxc-fixtty: u1: checkpointable, no problems found\n" {
        check.fail("--check after a fix passes");
    }
}

/// Turns the fake into a systemd container (a /sbin/init symlink to /lib/systemd/systemd, inside
/// the rootfs) whose config includes a common.conf that sets LXC's stock seccomp profile.
/// Returns that profile's path.
fn make_systemd(f: &Fake) -> PathBuf {
    let rootfs = f.rootfs();
    fs::create_dir_all(rootfs.join("lib/systemd")).unwrap();
    fs::create_dir_all(rootfs.join("sbin")).unwrap();
    fs::write(rootfs.join("lib/systemd/systemd"), "").unwrap();
    symlink("/lib/systemd/systemd", rootfs.join("sbin/init")).unwrap();
    fs::remove_file(rootfs.join("etc/inittab")).unwrap();
    let seccomp = f.dir.join("common.seccomp");
    fs::write(
        &seccomp,
        "2\ndenylist\nreject_force_umount  # comment this to allow umount -f;  not recommended\n[all]\n\
         kexec_load errno 1\nopen_by_handle_at errno 1\n",
    )
    .unwrap();
    let common = f.dir.join("common.conf");
    fs::write(
        &common,
        format!("lxc.seccomp.profile = {}\n", seccomp.display()),
    )
    .unwrap();
    let config = fs::read_to_string(f.config()).unwrap();
    fs::write(
        f.config(),
        format!(
            "lxc.include = {}\nlxc.mount.auto = proc:mixed sys:mixed cgroup:mixed\n{config}",
            common.display()
        ),
    )
    .unwrap();
    seccomp
}

#[test]
fn systemd_container_gets_the_seccomp_denials() {
    let f = Fake::new("systemd");
    let seccomp = make_systemd(&f);
    let profile = f.container().join("ckpt.seccomp");

    // --check names what CRIU cannot dump and what the fix costs.
    let run = f.fixtty(&["--check"]).fails(1);
    let err = run.stderr_str();
    let lines = problem_lines(&err);
    let uts = format!(
        "lxc-fixtty: u1: systemd container (/sbin/init is /lib/systemd/systemd): its seccomp profile {} \
         allows unshare(CLONE_NEWUTS): services with ProtectHostname= (systemd-logind) get a UTS namespace \
         of their own, which CRIU cannot dump (\"Can't dump nested uts namespace\"); the fix denies it, and \
         the container loses this: ProtectHostname= is ignored (systemd skips the UTS namespace)",
        seccomp.display()
    );
    if !lines.contains(&uts.as_str()) {
        run.fail(&format!("no line {uts:?}"));
    }
    let bpf = lines.iter().find(|l| l.contains("allows bpf()"));
    match bpf {
        Some(l)
            if l.contains("anon_inode:bpf-prog")
                && l.contains("IPAddressDeny=/IPAddressAllow= do nothing") => {}
        _ => run.fail("no bpf() line naming the BPF programs and the lost IP sandboxing"),
    }

    // --dry-run shows the profile, the config line and each denial, and changes nothing.
    let before = snapshot(f.dir.path());
    let run = f.fixtty(&["--dry-run"]).ok();
    let err = run.stderr_str();
    for want in [
        format!(
            "would write {} (the lines of {} plus the denials below) and set lxc.seccomp.profile = {}",
            profile.display(),
            seccomp.display(),
            profile.display()
        ),
        format!(
            "would add `unshare errno 1 [0,0x04000000,SCMP_CMP_MASKED_EQ,0x04000000]` to the seccomp profile {}",
            profile.display()
        ),
        format!("would add `bpf errno 1` to the seccomp profile {}", profile.display()),
    ] {
        if !err.contains(&want) {
            run.fail(&format!("stderr lacks {want:?}"));
        }
    }
    assert_eq!(
        snapshot(f.dir.path()),
        before,
        "--dry-run changed something"
    );

    // The fix: the old profile's lines plus the denials, the config pointing at it, a backup.
    let config_before = fs::read(f.config()).unwrap();
    let run = f.fixtty(&[]).ok();
    if !run
        .stderr_str()
        .contains(&format!("lxc-fixtty: u1: wrote {} (", profile.display()))
    {
        run.fail("the fix says it wrote the profile");
    }
    assert_eq!(
        fs::read(f.container().join("config.ckpt-orig")).unwrap(),
        config_before
    );
    let written = fs::read_to_string(&profile).unwrap();
    let old = fs::read_to_string(&seccomp).unwrap();
    assert!(
        written.starts_with(&old)
            && written.ends_with(
                "[all]\nunshare errno 1 [0,0x04000000,SCMP_CMP_MASKED_EQ,0x04000000]\nbpf errno 1\n"
            ),
        "{written}"
    );
    let config = fs::read_to_string(f.config()).unwrap();
    assert!(
        config.ends_with(&format!("\nlxc.seccomp.profile = {}\n", profile.display())),
        "{config}"
    );

    // Idempotent, and --check passes.
    let after = snapshot(f.dir.path());
    let again = f.fixtty(&[]).ok();
    if again.stderr_str() != "lxc-fixtty: u1: already checkpointable, nothing changed\n" {
        again.fail("the second run must change nothing");
    }
    assert_eq!(
        snapshot(f.dir.path()),
        after,
        "the second run changed something"
    );
    f.fixtty(&["--check"]).ok();
}

#[test]
fn a_container_that_is_not_systemd_needs_no_seccomp_denials() {
    let f = Fake::new("not-systemd");
    let rootfs = f.rootfs();
    fs::create_dir_all(rootfs.join("bin")).unwrap();
    fs::create_dir_all(rootfs.join("sbin")).unwrap();
    fs::write(rootfs.join("bin/busybox"), "").unwrap();
    symlink("/bin/busybox", rootfs.join("sbin/init")).unwrap();
    let run = f.fixtty(&["--check"]).fails(1);
    if run.stderr_str().contains("seccomp") {
        run.fail("a busybox container has no seccomp problem");
    }
}

#[test]
fn quiet_prints_only_the_error() {
    let f = Fake::new("quiet");
    let run = f.fixtty(&["--check", "-q"]).fails(1);
    let run = run.one_line_error("u1 is not checkpointable: ");
    drop(run);
    let run = f.fixtty(&["-q"]).ok();
    if !run.stderr_str().is_empty() {
        run.fail("-q prints nothing on success");
    }
}

#[test]
fn dash_n_names_the_container_like_lxc_checkpoint() {
    let f = Fake::new("dash-n");
    let run = f
        .dir
        .cmd("lxc-fixtty")
        .arg("-P")
        .arg(&f.lxcpath)
        .args(["-n", NAME, "--check"])
        .fails(1);
    if !run.stderr_str().contains("u1 is not checkpointable") {
        run.fail("-n u1 checks u1");
    }
}

#[test]
fn missing_container_is_one_line_exit_1() {
    let f = Fake::new("missing");
    let want = format!(
        "lxc-fixtty: error: no container nosuch in {}: check the name and -P",
        f.lxcpath_str()
    );
    f.dir
        .cmd("lxc-fixtty")
        .arg("-P")
        .arg(&f.lxcpath)
        .arg("nosuch")
        .fails(1)
        .one_line_error(&want);
}

#[test]
fn works_without_lxc_installed() {
    // No lxc-info (state: no monitor, so stopped) and no lxc-config (default lxcpath /var/lib/lxc).
    let f = Fake::new("no-lxc");
    let empty = f.dir.join("empty-path");
    fs::create_dir(&empty).unwrap();
    f.fixtty(&[]).env("PATH", &empty).ok();
    f.fixtty(&["--check"]).env("PATH", &empty).ok();
    f.dir
        .cmd("lxc-fixtty")
        .arg("ckpt-no-such-container")
        .env("PATH", &empty)
        .fails(1)
        .one_line_error(
            "no container ckpt-no-such-container in /var/lib/lxc: check the name and -P",
        );
}

#[test]
fn legacy_keys_that_lxc_cannot_parse_are_fixed() {
    // lxc-info fails on such a config ("Failed to load config"): the container counts as stopped.
    let f = Fake::new("legacy");
    let config = fs::read_to_string(f.config())
        .unwrap()
        .replace("lxc.tty.max = 5", "lxc.tty = 4\nlxc.console = none");
    fs::write(f.config(), config).unwrap();
    let run = f.fixtty(&["--check"]).fails(1);
    if !run
        .stderr_str()
        .contains("lxc.tty = 4 (line 11) is a legacy key")
    {
        run.fail("the legacy key is a problem");
    }
    f.fixtty(&[]).ok();
    let config = fs::read_to_string(f.config()).unwrap();
    assert!(
        !config.contains("lxc.tty =") && !config.contains("lxc.console ="),
        "{config}"
    );
    f.fixtty(&["--check"]).ok();
}

#[test]
fn unsupported_rootfs_is_one_line_exit_1() {
    let f = Fake::new("overlay");
    let config = fs::read_to_string(f.config()).unwrap();
    let rootfs = format!("dir:{}", f.rootfs().display());
    fs::write(
        f.config(),
        config.replace(&rootfs, "overlay:/a/rootfs:/a/delta0"),
    )
    .unwrap();
    f.fixtty(&["--check"])
        .fails(1)
        .one_line_error("container u1: rootfs type overlay is not supported, only dir (lxc.rootfs.path = overlay:/a/rootfs:/a/delta0)");
}

#[test]
fn usage_errors_exit_2() {
    let f = Fake::new("usage");
    f.fixtty(&["--check", "--dry-run"]).fails(2);
    f.dir.cmd("lxc-fixtty").fails(2);
    f.dir.cmd("lxc-fixtty").args(["-n", "u1", "u1"]).fails(2);
    f.dir
        .cmd("lxc-fixtty")
        .arg("-P")
        .arg(&f.lxcpath)
        .arg("a/b")
        .fails(2)
        .one_line_error("\"a/b\" is not a container name");
}

#[test]
fn version_and_help() {
    let f = Fake::new("version");
    let run = f.dir.cmd("lxc-fixtty").arg("--version").ok();
    if run.stdout_str() != format!("lxc-fixtty {}\n", env!("CARGO_PKG_VERSION")) {
        run.fail("--version prints the name and version");
    }
    let help = f.dir.cmd("lxc-fixtty").arg("--help").ok().stdout_str();
    for flag in [
        "--lxcpath",
        "--check",
        "--dry-run",
        "--quiet",
        "--name",
        "--version",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}

#[test]
fn man_page_documents_every_flag() {
    let page =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("man/lxc-fixtty.1")).unwrap();
    for section in [
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "OPTIONS",
        "EXIT STATUS",
        "EXAMPLES",
        "SEE ALSO",
    ] {
        assert!(
            page.contains(&format!(".SH \"{section}\""))
                || page.contains(&format!(".SH {section}")),
            "no {section}"
        );
    }
    for flag in [
        "lxcpath",
        "check",
        "dry\\-run",
        "quiet",
        "name",
        "version",
        "help",
    ] {
        assert!(
            page.contains(&format!("\\-\\-{flag}")),
            "the man page lacks --{flag}"
        );
    }
}
