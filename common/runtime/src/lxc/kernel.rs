//! What the running kernel offers that decides which LXC keys work here: the cgroup version (and
//! which one holds the devices controller) and whether AppArmor exists.

use std::path::Path;

/// A cgroup hierarchy version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    V1,
    V2,
}

impl CgroupVersion {
    /// The LXC key prefix for settings of this version: `lxc.cgroup` or `lxc.cgroup2`.
    pub fn key_prefix(self) -> &'static str {
        match self {
            CgroupVersion::V1 => "lxc.cgroup",
            CgroupVersion::V2 => "lxc.cgroup2",
        }
    }

    /// The key that denies a device to the container: `lxc.cgroup[2].devices.deny`.
    pub fn devices_deny_key(self) -> &'static str {
        match self {
            CgroupVersion::V1 => "lxc.cgroup.devices.deny",
            CgroupVersion::V2 => "lxc.cgroup2.devices.deny",
        }
    }

    /// The key that allows a device: `lxc.cgroup[2].devices.allow`.
    pub fn devices_allow_key(self) -> &'static str {
        match self {
            CgroupVersion::V1 => "lxc.cgroup.devices.allow",
            CgroupVersion::V2 => "lxc.cgroup2.devices.allow",
        }
    }
}

/// The host's cgroup layout: V2 when `/sys/fs/cgroup` is the unified hierarchy
/// (`/sys/fs/cgroup/cgroup.controllers` exists), else V1 (legacy or hybrid).
pub fn cgroup_version() -> CgroupVersion {
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        CgroupVersion::V2
    } else {
        CgroupVersion::V1
    }
}

/// The version whose keys control devices here: V1 when a cgroup v1 hierarchy with the devices
/// controller is mounted (legacy and hybrid hosts such as this project's), else V2.
pub fn devices_cgroup_version() -> CgroupVersion {
    match std::fs::read_to_string("/proc/self/mounts") {
        Ok(mounts) if has_v1_devices(&mounts) => CgroupVersion::V1,
        Ok(_) => CgroupVersion::V2,
        Err(_) => cgroup_version(),
    }
}

fn has_v1_devices(mounts: &str) -> bool {
    mounts.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() >= 4
            && fields[2] == "cgroup"
            && fields[3].split(',').any(|opt| opt == "devices")
    })
}

/// Whether the kernel has AppArmor enabled, the way LXC decides it: the module parameter
/// `/sys/module/apparmor/parameters/enabled` says `Y`, or (without it) securityfs shows
/// `/sys/kernel/security/apparmor`.
pub fn apparmor_enabled() -> bool {
    match std::fs::read_to_string("/sys/module/apparmor/parameters/enabled") {
        Ok(flag) => flag.trim_start().starts_with('Y'),
        Err(_) => Path::new("/sys/kernel/security/apparmor").exists(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_controller_on_v1_means_v1_keys() {
        let hybrid = "tmpfs /sys/fs/cgroup tmpfs rw 0 0\n\
                      cgroup /sys/fs/cgroup/devices cgroup rw,relatime,devices 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n";
        assert!(has_v1_devices(hybrid));
        assert!(!has_v1_devices(
            "cgroup2 /sys/fs/cgroup cgroup2 rw,nsdelegate 0 0\n"
        ));
        assert!(!has_v1_devices(
            "cgroup /sys/fs/cgroup/x cgroup rw,devicesx 0 0\n"
        ));
        assert_eq!(
            CgroupVersion::V1.devices_deny_key(),
            "lxc.cgroup.devices.deny"
        );
        assert_eq!(
            CgroupVersion::V2.devices_deny_key(),
            "lxc.cgroup2.devices.deny"
        );
    }
}
