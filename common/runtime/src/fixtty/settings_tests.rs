//! Unit tests of the config checks and fixes, with the host facts given.

use super::*;
use crate::lxc::CgroupVersion;

const V1_NO_AA: Host = Host {
    devices: CgroupVersion::V1,
    apparmor: false,
};
const V2_AA: Host = Host {
    devices: CgroupVersion::V2,
    apparmor: true,
};

const BUSYBOX: &str = "\
# Template used to create this container: /usr/share/lxc/templates/lxc-busybox
lxc.net.0.type = veth
lxc.apparmor.profile = generated
lxc.apparmor.allow_nesting = 1
lxc.rootfs.path = dir:/var/lib/lxc/u1/rootfs
lxc.tty.max = 5
lxc.pty.max = 1
#lxc.apparmor.profile = unconfined
";

fn problems(text: &str, host: &Host) -> Vec<Problem> {
    let mut problems = Vec::new();
    survey(&Config::parse(text), host, &mut problems);
    problems
}

fn fixed(text: &str, host: &Host) -> String {
    let mut config = Config::parse(text);
    let mut marked = false;
    for p in problems(text, host) {
        apply(&mut config, &p, &mut marked);
    }
    config.to_string()
}

#[test]
fn busybox_config_problems() {
    let found = problems(BUSYBOX, &V1_NO_AA);
    let text: Vec<String> = found.iter().map(|p| p.action(false)).collect();
    assert_eq!(
        text,
        [
            "would set lxc.tty.max = 0 (was 5 on line 6)",
            "would set lxc.console.path = none",
            "would add lxc.cgroup.devices.deny = c 5:1 rwm at the end of the config",
            "would remove lxc.apparmor.profile = generated (line 3)",
            "would remove lxc.apparmor.allow_nesting = 1 (line 4)",
        ]
    );
}

#[test]
fn busybox_config_fix_is_minimal_and_idempotent() {
    let once = fixed(BUSYBOX, &V1_NO_AA);
    assert_eq!(
        once,
        "\
# Template used to create this container: /usr/share/lxc/templates/lxc-busybox
lxc.net.0.type = veth
lxc.rootfs.path = dir:/var/lib/lxc/u1/rootfs
lxc.tty.max = 0
lxc.pty.max = 1
#lxc.apparmor.profile = unconfined
# lxc-fixtty: settings that let CRIU checkpoint this container (see lxc-fixtty(1))
lxc.console.path = none
lxc.cgroup.devices.deny = c 5:1 rwm
"
    );
    assert_eq!(problems(&once, &V1_NO_AA), []);
    assert_eq!(fixed(&once, &V1_NO_AA), once);
}

#[test]
fn apparmor_kept_where_the_kernel_has_it_and_cgroup2_key_on_v2() {
    let once = fixed(BUSYBOX, &V2_AA);
    assert!(
        once.contains("lxc.apparmor.profile = generated\n"),
        "{once}"
    );
    assert!(
        once.ends_with("lxc.cgroup2.devices.deny = c 5:1 rwm\n"),
        "{once}"
    );
    assert_eq!(problems(&once, &V2_AA), []);
}

#[test]
fn legacy_keys_are_removed_and_replaced() {
    let text = "lxc.rootfs.path = /r\nlxc.tty = 4\nlxc.console = none\n";
    let found = problems(text, &V1_NO_AA);
    assert_eq!(
        found[0].to_string(),
        "lxc.tty = 4 (line 2) is a legacy key LXC 3.0 and later refuse (lxc.tty.max replaces it)"
    );
    let once = fixed(text, &V1_NO_AA);
    assert!(!once.contains("lxc.tty ="), "{once}");
    assert!(!once.contains("lxc.console ="), "{once}");
    assert!(
        once.contains("lxc.tty.max = 0\nlxc.console.path = none\n"),
        "{once}"
    );
}

#[test]
fn a_later_include_or_allow_undoes_a_setting() {
    let text = "lxc.tty.max = 0\nlxc.console.path = none\nlxc.cgroup.devices.deny = c 5:1 rwm\n\
                lxc.include = /nonexistent/ckpt/common.conf\nlxc.cgroup.devices.allow = c 5:* rwm\n";
    let found = problems(text, &V1_NO_AA);
    assert_eq!(found.len(), 3, "{found:#?}");
    assert_eq!(
        found[0].to_string(),
        "lxc.tty.max = 0 (line 1) may be overridden by line 4 (lxc.include = /nonexistent/ckpt/common.conf): it must come last"
    );
    assert!(
        found[2]
            .to_string()
            .contains("line 5 (lxc.cgroup.devices.allow = c 5:* rwm) may allow it again"),
        "{}",
        found[2]
    );
    let once = fixed(text, &V1_NO_AA);
    assert!(
        once.starts_with(
            "lxc.include = /nonexistent/ckpt/common.conf\nlxc.cgroup.devices.allow = c 5:* rwm\n"
        ),
        "{once}"
    );
    assert_eq!(problems(&once, &V1_NO_AA), []);
}

#[test]
fn deny_all_counts_until_something_allows_the_console_again() {
    let base = "lxc.tty.max = 0\nlxc.console.path = none\nlxc.cgroup.devices.deny = a\n";
    assert_eq!(problems(base, &V1_NO_AA), []);
    let allowed = format!(
        "{base}lxc.cgroup.devices.allow = c 136:* rwm\nlxc.cgroup.devices.allow = c *:* m\n"
    );
    assert_eq!(
        problems(&allowed, &V1_NO_AA),
        [],
        "neither rule gives back /dev/console rw"
    );
    let again = format!("{base}lxc.cgroup.devices.allow = c 5:1 rwm\n");
    assert_eq!(problems(&again, &V1_NO_AA).len(), 1);
}

#[test]
fn an_included_apparmor_profile_is_cleared() {
    let dir = tempfile::tempdir().unwrap();
    let nesting = dir.path().join("nesting.conf");
    std::fs::write(
        &nesting,
        "lxc.apparmor.profile = lxc-container-default-with-nesting\n",
    )
    .unwrap();
    let text = format!(
        "lxc.include = {}\nlxc.tty.max = 0\nlxc.console.path = none\nlxc.cgroup.devices.deny = c 5:1 rwm\n",
        dir.path().display()
    );
    let found = problems(&text, &V1_NO_AA);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(matches!(found[0], Problem::AppArmorInclude { line: 1, .. }));
    let once = fixed(&text, &V1_NO_AA);
    assert!(once.ends_with("lxc.apparmor.profile =\n"), "{once}");
    assert_eq!(problems(&once, &V1_NO_AA), []);
}

#[test]
fn an_empty_tty_max_means_no_ttys() {
    let text = "lxc.tty.max =\nlxc.console.path = none\nlxc.cgroup.devices.deny = c 5:1 rwm\n";
    assert_eq!(problems(text, &V1_NO_AA), []);
}
