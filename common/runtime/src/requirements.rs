//! What a running container needs of this host before ckpt-dump freezes it, checked up front so
//! that a missing capability or tool is a clear refusal instead of a CRIU failure mid-freeze.

use std::path::Path;

use crate::lxc::Container;
use crate::procs::processes;

/// Bit of CAP_SYS_RESOURCE in the capability sets of /proc/PID/status.
const CAP_SYS_RESOURCE: u32 = 24;

/// Refuses, naming the problem and the fix, when this host cannot dump `container` as it runs.
pub fn check_dump(container: &Container) -> anyhow::Result<()> {
    let Some(init) = container.init_pid() else {
        anyhow::bail!("cannot find the init process of {}", container.name);
    };
    if !has_cap(CAP_SYS_RESOURCE) {
        if let Some((pid, uid, name)) = non_root_task(init) {
            anyhow::bail!(
                "{} runs {name} (pid {pid}) as uid {uid}, not as its root: CRIU dumps processes of \
                 other users only with CAP_SYS_RESOURCE, which ckpt-dump lacks here; run it as root \
                 with full capabilities",
                container.name
            );
        }
    }
    if has_own_netns(init) {
        for program in ["iptables-restore", "ip6tables-restore", "nsenter"] {
            if !on_path(program) {
                anyhow::bail!(
                    "{} has a network namespace, which CRIU locks and ckpt-dump holds with \
                     iptables, but {program} is not installed: install iptables and util-linux",
                    container.name
                );
            }
        }
    }
    Ok(())
}

/// Whether this process has capability `bit` in its effective set.
fn has_cap(bit: u32) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << bit) != 0)
}

/// A task of the container (same pid namespace as its init) running as a user other than the
/// container's root: (pid, host uid, name).
fn non_root_task(init: u32) -> Option<(u32, u32, String)> {
    let pidns = |pid: u32| std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
    let ns = pidns(init)?;
    let root = root_uid(init);
    processes()
        .filter(|p| pidns(p.pid).as_ref() == Some(&ns))
        .find_map(|p| {
            let status = std::fs::read_to_string(format!("/proc/{}/status", p.pid)).ok()?;
            let uids = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
            let odd = uids
                .split_whitespace()
                .filter_map(|u| u.parse::<u32>().ok())
                .find(|&u| u != root)?;
            Some((p.pid, odd, p.comm().unwrap_or_default()))
        })
}

/// The host uid of the container's root: 0, or where its user namespace maps uid 0.
fn root_uid(init: u32) -> u32 {
    let map = std::fs::read_to_string(format!("/proc/{init}/uid_map")).unwrap_or_default();
    map.lines()
        .find_map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
            ["0", host, _] => host.parse().ok(),
            _ => None,
        })
        .unwrap_or(0)
}

/// Whether `pid` has a network namespace other than this process's.
fn has_own_netns(pid: u32) -> bool {
    let ns = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/net")).ok();
    ns(&pid.to_string()) != ns("self")
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| Path::new(&dir).join(program).is_file())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_facts_are_read() {
        assert!(!has_own_netns(std::process::id()));
        assert!(on_path("sh"));
        assert!(!on_path("no-such-program-ckpt"));
        // This process (in the initial user namespace) maps uid 0 to 0.
        assert_eq!(root_uid(std::process::id()), 0);
    }
}
