//! Moves a container config to another lxcpath (or container dir): rewrites every path in its
//! values that points into the old place, as ckpt-restore needs when the destination differs.

use std::path::Path;

use super::Config;

/// One value changed by [`Config::rewrite_paths`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathRewrite {
    pub key: String,
    pub old: String,
    pub new: String,
}

impl Config {
    /// Rewrites, in every value, each path that is `old` or lies below it to the same relative
    /// place below `new`: `lxc.rootfs.path = dir:/old/u1/rootfs` or a plain path,
    /// `lxc.mount.fstab`, `lxc.hook.*` command lines, `lxc.log.file`, `lxc.mount.entry` sources,
    /// overlay `lowerdir=` lists... `old`/`new` may be lxcpaths, or container dirs to rename the
    /// container at the same time. A path matches only whole components at a token boundary
    /// (start of value, or after whitespace, `:`, `=`, `,` or a quote), so `/var/lib/lxc2` is not
    /// below `/var/lib/lxc`. Returns what changed, in file order.
    pub fn rewrite_paths(&mut self, old: &Path, new: &Path) -> anyhow::Result<Vec<PathRewrite>> {
        let utf8 = |p: &Path| {
            p.to_str()
                .map(|s| s.trim_end_matches('/').to_string())
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "cannot rewrite config paths: {} is not valid UTF-8",
                        p.display()
                    )
                })
        };
        let (old, new) = (utf8(old)?, utf8(new)?);
        if old.is_empty() || old == new {
            return Ok(Vec::new());
        }
        let changed = self.edit_values(|_, value| rewrite_value(value, &old, &new));
        Ok(changed
            .into_iter()
            .map(|(key, old, new)| PathRewrite { key, old, new })
            .collect())
    }
}

/// `value` with every token-boundary occurrence of the path `old` replaced by `new`, or `None`.
fn rewrite_value(value: &str, old: &str, new: &str) -> Option<String> {
    let before_ok = |c: char| c.is_whitespace() || matches!(c, ':' | '=' | ',' | '"' | '\'');
    let after_ok = |c: char| c == '/' || before_ok(c);
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    let mut changed = false;
    while let Some(at) = rest.find(old) {
        let start_ok = match rest[..at]
            .chars()
            .next_back()
            .or_else(|| out.chars().next_back())
        {
            Some(c) => before_ok(c),
            None => true,
        };
        let end_ok = match rest[at + old.len()..].chars().next() {
            Some(c) => after_ok(c),
            None => true,
        };
        out.push_str(&rest[..at]);
        if start_ok && end_ok {
            out.push_str(new);
            changed = true;
        } else {
            out.push_str(old);
        }
        rest = &rest[at + old.len()..];
    }
    out.push_str(rest);
    changed.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(text: &str, old: &str, new: &str) -> (String, usize) {
        let mut config = Config::parse(text);
        let changed = config
            .rewrite_paths(Path::new(old), Path::new(new))
            .unwrap();
        (config.to_string(), changed.len())
    }

    #[test]
    fn rewrites_the_paths_of_a_busybox_config() {
        let text = "# Template used to create this container\n\
                    lxc.rootfs.path = dir:/var/lib/lxc/u1/rootfs\n\
                    lxc.uts.name = \"u1\"\n\
                    lxc.mount.fstab = /var/lib/lxc/u1/fstab\n\
                    lxc.hook.pre-start = /var/lib/lxc/u1/hook.sh --dir=/var/lib/lxc/u1 x\n\
                    lxc.log.file = /var/lib/lxc/u1/u1.log\n\
                    lxc.mount.entry = /var/lib/lxc/u1/data srv none bind 0 0\n\
                    lxc.mount.entry = /lib lib none ro,bind 0 0\n";
        let (out, n) = rewrite(text, "/var/lib/lxc", "/srv/lxc/");
        assert_eq!(n, 5);
        assert_eq!(
            out,
            "# Template used to create this container\n\
             lxc.rootfs.path = dir:/srv/lxc/u1/rootfs\n\
             lxc.uts.name = \"u1\"\n\
             lxc.mount.fstab = /srv/lxc/u1/fstab\n\
             lxc.hook.pre-start = /srv/lxc/u1/hook.sh --dir=/srv/lxc/u1 x\n\
             lxc.log.file = /srv/lxc/u1/u1.log\n\
             lxc.mount.entry = /srv/lxc/u1/data srv none bind 0 0\n\
             lxc.mount.entry = /lib lib none ro,bind 0 0\n"
        );
    }

    #[test]
    fn plain_rootfs_path_and_rename() {
        let (out, n) = rewrite("lxc.rootfs.path = /old/u1/rootfs\n", "/old/u1", "/new/u2");
        assert_eq!((out.as_str(), n), ("lxc.rootfs.path = /new/u2/rootfs\n", 1));
    }

    #[test]
    fn only_whole_components_at_token_boundaries() {
        let text = "lxc.mount.entry = /var/lib/lxc2/x a none bind 0 0\n\
                    lxc.hook.start = /opt/var/lib/lxc/u1/h\n\
                    lxc.mount.entry = overlay o overlay lowerdir=/var/lib/lxc/u1/a:/var/lib/lxc/u1/b 0 0\n\
                    lxc.log.file = /var/lib/lxc\n";
        let (out, n) = rewrite(text, "/var/lib/lxc", "/n");
        assert_eq!(n, 2);
        assert_eq!(
            out,
            "lxc.mount.entry = /var/lib/lxc2/x a none bind 0 0\n\
             lxc.hook.start = /opt/var/lib/lxc/u1/h\n\
             lxc.mount.entry = overlay o overlay lowerdir=/n/u1/a:/n/u1/b 0 0\n\
             lxc.log.file = /n\n"
        );
    }

    #[test]
    fn untouched_lines_stay_byte_exact() {
        let text =
            "  lxc.rootfs.path=dir:/a/u1/rootfs   \n#lxc.log.file = /a/u1/log\nlxc.tty.max =   5";
        let (out, n) = rewrite(text, "/a", "/b");
        assert_eq!(n, 1);
        assert_eq!(
            out,
            "lxc.rootfs.path = dir:/b/u1/rootfs\n#lxc.log.file = /a/u1/log\nlxc.tty.max =   5"
        );
    }

    #[test]
    fn same_or_root_path_is_a_no_op() {
        assert_eq!(rewrite("lxc.log.file = /a/x\n", "/a", "/a").1, 0);
        assert_eq!(rewrite("lxc.log.file = /a/x\n", "/", "/b").1, 0);
    }
}
