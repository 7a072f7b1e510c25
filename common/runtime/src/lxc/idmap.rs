//! Which host ids a container's root runs as: 0, or where its `lxc.idmap` lines map uid and gid
//! 0 (an unprivileged container), so that ckpt can grant that root what CRIU opens as it.

use super::Config;

/// The host uid and gid of a container's root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RootIds {
    pub uid: u32,
    pub gid: u32,
}

impl RootIds {
    /// Whether the container runs in a user namespace of its own (its root is not host root).
    pub fn is_mapped(self) -> bool {
        self != RootIds::default()
    }
}

impl Config {
    /// The host ids of the container's root, from `lxc.idmap = u|g|b NSID HOSTID RANGE` lines;
    /// 0 for a kind that no line maps (LXC's privileged containers have none).
    pub fn root_ids(&self) -> RootIds {
        let mut ids = RootIds::default();
        for value in self.get_all("lxc.idmap") {
            let Some((kind, host)) = maps_zero(value) else {
                continue;
            };
            if matches!(kind, "u" | "b") {
                ids.uid = host;
            }
            if matches!(kind, "g" | "b") {
                ids.gid = host;
            }
        }
        ids
    }
}

/// For an idmap line covering id 0 of the namespace: (its kind, the host id of 0).
fn maps_zero(value: &str) -> Option<(&str, u32)> {
    let [kind, ns, host, range] = value.split_whitespace().collect::<Vec<_>>()[..] else {
        return None;
    };
    let (ns, host, range) = (
        ns.parse::<u64>().ok()?,
        host.parse::<u64>().ok()?,
        range.parse::<u64>().ok()?,
    );
    if ns != 0 || range == 0 {
        return None;
    }
    Some((kind, u32::try_from(host).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_ids_come_from_the_lines_that_map_zero() {
        let config = Config::parse(
            "lxc.idmap = u 0 100000 65536\nlxc.idmap = g 0 200000 65536\n\
             lxc.idmap = u 70000 5000 1\n",
        );
        assert_eq!(
            config.root_ids(),
            RootIds {
                uid: 100000,
                gid: 200000
            }
        );
        assert!(config.root_ids().is_mapped());
        let both = Config::parse("lxc.idmap = b 0 300000 10\n");
        assert_eq!(both.root_ids().uid, 300000);
        assert_eq!(both.root_ids().gid, 300000);
        let privileged = Config::parse("lxc.uts.name = u1\nlxc.idmap = u 1 100000 junk\n");
        assert_eq!(privileged.root_ids(), RootIds::default());
        assert!(!privileged.root_ids().is_mapped());
    }
}
