//! What a running container needs of this host before ckpt-dump freezes it, checked up front so
//! that a missing capability or tool is a clear refusal instead of a CRIU failure mid-freeze.

use std::path::Path;

use anyhow::Context;

use crate::lxc::Container;
use crate::procs::{has_own_netns, in_pid_namespace_of, mounts, own_status, Mount};

/// Bit of CAP_SYS_RESOURCE in the capability sets of /proc/PID/status.
const CAP_SYS_RESOURCE: u32 = 24;

/// Refuses, naming the problem and the fix, when this host cannot dump `container` as it runs.
pub fn check_dump(container: &Container) -> anyhow::Result<()> {
    let Some(init) = container.init_pid() else {
        anyhow::bail!("cannot find the init process of {}", container.name);
    };
    refuse_host_binds_in_userns(container, init)?;
    if let Some((pid, name)) = outside_init_tree(init) {
        anyhow::bail!(
            "{} runs {name} (pid {pid}), whose parent is outside the container (started by \
             lxc-attach?): CRIU dumps only the tree of the container's init, so it would be lost; \
             stop it, or start it from within the container (its init, or a shell there with \
             `setsid ... &`)",
            container.name
        );
    }
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
    if has_own_netns(init).unwrap_or(false) {
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

/// An unprivileged container (a user namespace) with a host path bind-mounted in dumps fine, but
/// CRIU cannot bind-mount that path inside the user namespace on restore (`mnt: Can't bind-mount
/// at .../usr/lib: Invalid argument`): refused here, before the freeze.
fn refuse_host_binds_in_userns(container: &Container, init: u32) -> anyhow::Result<()> {
    let read = |file: &str| {
        let path = format!("/proc/{init}/{file}");
        std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))
    };
    if !is_idmapped(&read("uid_map")?) {
        return Ok(());
    }
    let Some(bind) = host_binds(&read("mountinfo")?).into_iter().next() else {
        return Ok(());
    };
    // The config line that asks for it, if one does (LXC's targets are relative to the rootfs).
    let config = container.load_config().ok();
    let line = config.as_ref().and_then(|c| {
        c.get_all("lxc.mount.entry").into_iter().find(|e| {
            e.split_whitespace().nth(1).map(|t| t.trim_matches('/'))
                == Some(bind.target.trim_matches('/'))
        })
    });
    let remove = match line {
        Some(line) => format!("remove `lxc.mount.entry = {line}` from its config"),
        None => "remove the bind mount".to_string(),
    };
    anyhow::bail!(
        "{} is unprivileged (it runs in a user namespace) and has the host path {} ({}) \
         bind-mounted on {}: CRIU cannot bind-mount host paths inside a user namespace on \
         restore; {remove}, or copy the files into the container's rootfs",
        container.name,
        bind.source,
        bind.fstype,
        bind.target
    )
}

/// Whether a process's uid_map is a user namespace's own, not the initial namespace's identity
/// map (`0 0 4294967295`).
fn is_idmapped(uid_map: &str) -> bool {
    let lines: Vec<Vec<&str>> = uid_map
        .lines()
        .map(|l| l.split_whitespace().collect())
        .filter(|l: &Vec<&str>| !l.is_empty())
        .collect();
    lines != [vec!["0", "0", "4294967295"]]
}

/// A host path bind-mounted into a container, from its mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HostBind {
    /// The path within its filesystem that is mounted (the host path for the root filesystem).
    source: String,
    /// Where it is mounted, inside the container.
    target: String,
    fstype: String,
}

/// Filesystems that are no host path: LXC and CRIU make (or bind, like /dev/null) these
/// themselves in a user namespace.
const VIRTUAL_FS: &[&str] = &[
    "proc",
    "sysfs",
    "cgroup",
    "cgroup2",
    "tmpfs",
    "devtmpfs",
    "devpts",
    "mqueue",
    "securityfs",
    "debugfs",
    "tracefs",
    "fusectl",
    "binfmt_misc",
    "bpf",
    "hugetlbfs",
    "pstore",
    "configfs",
    "autofs",
    "efivarfs",
    "nsfs",
    "ramfs",
];

/// The mounts of a container's mountinfo that bind a host path in: every mount of a filesystem
/// with files on the host, other than the container's root and binds from inside it.
fn host_binds(mountinfo: &str) -> Vec<HostBind> {
    let mounts = mounts(mountinfo);
    let rootfs = mounts.iter().rev().find(|m| m.target == "/");
    let inside_rootfs = |m: &Mount| {
        rootfs.is_some_and(|r| m.dev == r.dev && Path::new(&m.root).starts_with(Path::new(&r.root)))
    };
    mounts
        .iter()
        .filter(|m| {
            m.target != "/" && !VIRTUAL_FS.contains(&m.fstype.as_str()) && !inside_rootfs(m)
        })
        .map(|m| HostBind {
            source: m.root.clone(),
            target: m.target.clone(),
            fstype: m.fstype.clone(),
        })
        .collect()
}

/// A task of the container (same pid namespace as its init) whose parent is not: CRIU dumps the
/// tree below init, and leaves it out. (pid, name).
fn outside_init_tree(init: u32) -> Option<(u32, String)> {
    let tasks: Vec<(u32, u32, String)> = in_pid_namespace_of(init)
        .into_iter()
        .filter_map(|p| {
            let (_, ppid) = p.state_and_parent()?;
            Some((p.pid, ppid, p.comm().unwrap_or_default()))
        })
        .collect();
    let pairs: Vec<(u32, u32)> = tasks.iter().map(|(p, pp, _)| (*p, *pp)).collect();
    let orphan = first_outside(&pairs, init)?;
    tasks
        .into_iter()
        .find(|(p, _, _)| *p == orphan)
        .map(|(p, _, name)| (p, name))
}

/// Of (pid, parent) pairs of one pid namespace, the first task other than `init` whose parent is
/// not in the namespace.
fn first_outside(tasks: &[(u32, u32)], init: u32) -> Option<u32> {
    let inside: std::collections::HashSet<u32> = tasks.iter().map(|(p, _)| *p).collect();
    tasks
        .iter()
        .find(|(pid, parent)| *pid != init && !inside.contains(parent))
        .map(|(pid, _)| *pid)
}

/// The pipe size CRIU's lazy dump asks for (its page pipes grow to 4 MiB).
pub const LAZY_PIPE_SIZE: u64 = 4 << 20;

/// Where the kernel keeps the largest pipe an unprivileged process may ask for.
const PIPE_MAX_SIZE: &str = "/proc/sys/fs/pipe-max-size";

/// Where the kernel says whether processes without CAP_SYS_PTRACE may open a userfaultfd.
const UNPRIVILEGED_USERFAULTFD: &str = "/proc/sys/vm/unprivileged_userfaultfd";

/// What memory sent apart from the images (`ckpt-dump --lazy`, and a streamed `--ack`) needs
/// beyond [`check_dump`]: CRIU's page pipes of [`LAZY_PIPE_SIZE`] here, which without
/// CAP_SYS_RESOURCE only `fs.pipe-max-size` allows (CRIU ignores the refusal and fails later
/// with `page-pipe: splice: -1: Bad file descriptor`); and for an unprivileged container, a
/// userfaultfd in its user namespace on the destination (`vm.unprivileged_userfaultfd`, assumed
/// to be as here).
pub fn check_lazy(container: &Container) -> anyhow::Result<()> {
    let in_userns = container
        .init_pid()
        .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/uid_map")).ok())
        .is_some_and(|map| is_idmapped(&map));
    let uffd = std::fs::read_to_string(UNPRIVILEGED_USERFAULTFD).is_ok_and(|v| v.trim() == "1");
    if in_userns && !uffd {
        anyhow::bail!(
            "{} is unprivileged, and its restored tasks can open no userfaultfd in its user \
             namespace (vm.unprivileged_userfaultfd is 0): allow it on both hosts with \
             `sysctl -w vm.unprivileged_userfaultfd=1`",
            container.name
        );
    }
    if has_cap(CAP_SYS_RESOURCE) {
        return Ok(());
    }
    let max: u64 = std::fs::read_to_string(PIPE_MAX_SIZE)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    if max < LAZY_PIPE_SIZE {
        anyhow::bail!(
            "--lazy needs pipes of {LAZY_PIPE_SIZE} bytes for CRIU's page server, and this host \
             allows {max} (fs.pipe-max-size) to a process without CAP_SYS_RESOURCE, as ckpt-dump \
             is here: raise it with `sysctl -w fs.pipe-max-size={LAZY_PIPE_SIZE}`"
        );
    }
    Ok(())
}

/// Whether this process has capability `bit` in its effective set.
fn has_cap(bit: u32) -> bool {
    own_status("CapEff")
        .and_then(|hex| u64::from_str_radix(&hex, 16).ok())
        .is_some_and(|caps| caps & (1 << bit) != 0)
}

/// A task of the container (same pid namespace as its init) running as a user other than the
/// container's root: (pid, host uid, name).
fn non_root_task(init: u32) -> Option<(u32, u32, String)> {
    let root = root_uid(init);
    in_pid_namespace_of(init).into_iter().find_map(|p| {
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

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| Path::new(&dir).join(program).is_file())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_whose_parent_is_outside_the_namespace_is_found() {
        // init 100 with children 101, 102 (102's child 103); 104's parent 50 is on the host.
        let tasks = [(100, 1), (101, 100), (102, 100), (103, 102), (104, 50)];
        assert_eq!(first_outside(&tasks, 100), Some(104));
        assert_eq!(first_outside(&tasks[..4], 100), None);
    }

    #[test]
    fn host_facts_are_read() {
        assert!(on_path("sh"));
        assert!(!on_path("no-such-program-ckpt"));
        // This process (in the initial user namespace) maps uid 0 to 0.
        assert_eq!(root_uid(std::process::id()), 0);
        let own = std::fs::read_to_string("/proc/self/uid_map").unwrap();
        assert!(!is_idmapped(&own), "{own}");
    }

    #[test]
    fn a_user_namespace_is_told_by_its_uid_map() {
        assert!(!is_idmapped("         0          0 4294967295\n"));
        assert!(is_idmapped("         0     100000      65536\n"));
        assert!(is_idmapped("0 0 1000\n"));
    }

    /// /proc/INIT/mountinfo of the test fixture's idmapped busybox container (make-container
    /// with IDMAP=100000) with `lxc.mount.entry = /usr/lib usr/lib none ro,bind,create=dir 0 0`.
    const MOUNTINFO: &str = "\
464 245 254:0 /var/lib/t/host2/uh1/rootfs / rw,relatime shared:8 - ext4 /dev/vda rw,discard
465 464 0:47 / /dev rw,relatime shared:9 - tmpfs none rw,size=492k,mode=755,uid=100000,gid=100000
466 464 0:48 / /proc rw,nosuid,nodev,noexec,relatime shared:20 - proc proc rw
467 468 0:48 /sys/net /proc/sys/net rw,nosuid,nodev,noexec,relatime shared:22 - proc proc rw
468 466 0:48 /sys /proc/sys ro,relatime shared:21 - proc proc rw
469 464 0:49 / /sys ro,relatime shared:23 - sysfs sysfs ro
470 465 0:50 / /dev/shm rw,relatime shared:10 - tmpfs shm rw,uid=100000,gid=100000
471 465 0:44 / /dev/mqueue rw,relatime shared:11 - mqueue mqueue rw
472 464 254:0 /usr/lib /usr/lib ro,relatime shared:74 - ext4 /dev/vda rw,discard
473 465 0:6 /null /dev/null rw,relatime shared:12 - devtmpfs devtmpfs rw,size=12334460k,mode=755
479 465 0:51 / /dev/pts rw,nosuid,noexec,relatime shared:18 - devpts devpts rw,gid=100005,mode=620
480 465 0:51 /ptmx /dev/ptmx rw,nosuid,noexec,relatime shared:19 - devpts devpts rw,gid=100005
481 468 0:47 /.lxc-boot-id /proc/sys/kernel/random/boot_id ro,nosuid,nodev - tmpfs none rw
";

    #[test]
    fn host_binds_are_found_and_the_containers_own_mounts_are_not() {
        assert_eq!(
            host_binds(MOUNTINFO),
            vec![HostBind {
                source: "/usr/lib".into(),
                target: "/usr/lib".into(),
                fstype: "ext4".into(),
            }]
        );
        // Without the bind: nothing (the rootfs, LXC's /dev binds, proc, sysfs, tmpfs...).
        let without: String = MOUNTINFO
            .lines()
            .filter(|l| !l.contains("/usr/lib"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(host_binds(&without), vec![]);
    }

    #[test]
    fn binds_from_inside_the_rootfs_are_no_host_binds_and_other_disks_are() {
        let info = "\
1 0 254:0 /srv/c/rootfs / rw - ext4 /dev/vda rw
2 1 254:0 /srv/c/rootfs/data /mnt/data rw - ext4 /dev/vda rw
3 1 8:17 / /home/with\\040space rw - xfs /dev/sdb1 rw
4 1 0:60 /vol /mnt/vol rw - btrfs /dev/sdc rw
";
        let binds = host_binds(info);
        let targets: Vec<&str> = binds.iter().map(|b| b.target.as_str()).collect();
        assert_eq!(targets, ["/home/with space", "/mnt/vol"]);
        assert_eq!(binds[1].source, "/vol");
    }
}
