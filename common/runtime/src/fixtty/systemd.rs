//! systemd containers: what systemd sets up at boot that CRIU cannot dump (a UTS namespace of its
//! own for services with ProtectHostname=, BPF programs for IPAddressDeny=), and the seccomp
//! denials that make systemd do without: lxc-fixtty writes the container's profile with them
//! (`LXCPATH/NAME/ckpt.seccomp`: the lines of the profile the config used before, plus the
//! denials) and points `lxc.seccomp.profile` at it.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::lxc::{atomic, Config};

use super::problem::Problem;
use super::settings;

/// The profile lxc-fixtty writes, in the container dir.
pub const PROFILE: &str = "ckpt.seccomp";
/// The config key naming the profile.
const KEY: &str = "lxc.seccomp.profile";
/// Include files nested deeper than this are not read (LXC itself refuses loops).
const MAX_INCLUDE_DEPTH: usize = 8;
/// Symlinks followed inside the rootfs when resolving the init, as the kernel allows.
const MAX_SYMLINKS: usize = 40;
/// The comment before the lines lxc-fixtty adds to a profile.
const MARKER: &str =
    "# lxc-fixtty: denials that let CRIU checkpoint a systemd container (see lxc-fixtty(1))";

/// A syscall a systemd container must be denied so that CRIU can dump it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// `unshare(CLONE_NEWUTS)`: ProtectHostname= would give a service its own UTS namespace.
    NewUts,
    /// `bpf()`: IPAddressDeny=/IPAddressAllow= would make PID 1 hold BPF programs.
    Bpf,
}

impl Denial {
    pub const ALL: [Denial; 2] = [Denial::NewUts, Denial::Bpf];

    /// The line of an LXC seccomp profile (version 2) that denies it with EPERM.
    pub fn rule(self) -> &'static str {
        match self {
            Denial::NewUts => "unshare errno 1 [0,0x04000000,SCMP_CMP_MASKED_EQ,0x04000000]",
            Denial::Bpf => "bpf errno 1",
        }
    }

    /// The syscall as the messages name it.
    pub fn syscall(self) -> &'static str {
        match self {
            Denial::NewUts => "unshare(CLONE_NEWUTS)",
            Denial::Bpf => "bpf()",
        }
    }

    /// What systemd makes of the syscall that CRIU cannot dump, with CRIU's words.
    pub fn blocks(self) -> &'static str {
        match self {
            Denial::NewUts => {
                "services with ProtectHostname= (systemd-logind) get a UTS namespace of their own, \
                 which CRIU cannot dump (\"Can't dump nested uts namespace\")"
            }
            Denial::Bpf => {
                "PID 1 attaches BPF programs for IPAddressDeny=/IPAddressAllow= (systemd-journald, \
                 systemd-logind), which CRIU cannot dump (\"Can't dump file ... anon_inode:bpf-prog\")"
            }
        }
    }

    /// What the container loses once the syscall is denied.
    pub fn loss(self) -> &'static str {
        match self {
            Denial::NewUts => "ProtectHostname= is ignored (systemd skips the UTS namespace)",
            Denial::Bpf => {
                "systemd's IP sandboxing is not enforced (IPAddressDeny=/IPAddressAllow= do nothing)"
            }
        }
    }
}

/// Finds the denials a systemd container's seccomp profile lacks; nothing for another init.
pub(super) fn survey(
    config: &Config,
    rootfs: &Path,
    container_dir: &Path,
    problems: &mut Vec<Problem>,
) {
    let init = config
        .get("lxc.init.cmd")
        .and_then(|cmd| cmd.split_whitespace().next())
        .unwrap_or("/sbin/init");
    let Some(systemd) = resolve_in(rootfs, init).filter(|p| is_systemd(rootfs, p)) else {
        return;
    };
    let profile = effective_profile(config);
    let text = profile
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    for denial in Denial::ALL {
        if !denies(&text, denial) {
            problems.push(Problem::SystemdSeccomp {
                init: init.to_string(),
                systemd: systemd.clone(),
                denial,
                profile: profile.clone(),
                into: container_dir.join(PROFILE),
            });
        }
    }
}

/// The profile lxc-fixtty writes for the given problems: the lines of the profile in use (the
/// first problem's `profile`) and, after a comment, an `[all]` section with the missing denials.
/// `None` when there are no seccomp problems.
pub(super) fn new_profile(problems: &[&Problem]) -> anyhow::Result<Option<(PathBuf, String)>> {
    let mut denials = problems.iter().filter_map(|p| match p {
        Problem::SystemdSeccomp {
            denial,
            profile,
            into,
            ..
        } => Some((*denial, profile, into)),
        _ => None,
    });
    let Some((first, profile, into)) = denials.next() else {
        return Ok(None);
    };
    let mut text = match profile {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the seccomp profile {}", path.display()))?;
            if text.lines().next().map(str::trim) != Some("2") {
                anyhow::bail!(
                    "the seccomp profile {} is not version 2: lxc-fixtty can only add lines to a \
                     version 2 profile (see lxc.container.conf(5))",
                    path.display()
                );
            }
            text
        }
        None => "2\ndenylist\n".to_string(),
    };
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(MARKER);
    text.push_str("\n[all]\n");
    for denial in std::iter::once(first).chain(denials.map(|(d, _, _)| d)) {
        text.push_str(denial.rule());
        text.push('\n');
    }
    Ok(Some((into.clone(), text)))
}

/// Writes the profile atomically (keeping the mode and owner of a file it replaces).
pub(super) fn write_profile(path: &Path, text: &str) -> anyhow::Result<()> {
    atomic::replace_file(path, text.as_bytes())
        .with_context(|| format!("cannot write the seccomp profile {}", path.display()))
}

/// Points `lxc.seccomp.profile` at `path`: in place when nothing later in the config may override
/// it, else at the end, after the lxc-fixtty comment (`marked`: see `settings::apply`).
pub(super) fn point_config(config: &mut Config, path: &Path, marked: &mut bool) {
    let value = path.display().to_string();
    let overridden = config.last(KEY).is_some_and(|s| {
        config
            .settings()
            .any(|later| later.line > s.line && later.key == "lxc.include")
    });
    if config.last(KEY).is_some() && !overridden {
        config.set(KEY, &value);
    } else {
        config.remove_matching(|s| s.key == KEY);
        settings::append(config, KEY, &value, marked);
    }
}

/// The seccomp profile LXC uses: the last `lxc.seccomp.profile` in the config and the files it
/// includes, in order (an empty value clears it).
pub(super) fn effective_profile(config: &Config) -> Option<PathBuf> {
    let mut profile = None;
    walk(config, 0, &mut profile);
    profile
}

fn walk(config: &Config, depth: usize, profile: &mut Option<PathBuf>) {
    for s in config.settings() {
        match s.key {
            KEY if s.value.is_empty() => *profile = None,
            KEY => *profile = Some(PathBuf::from(s.value)),
            "lxc.include" if depth < MAX_INCLUDE_DEPTH => {
                include(Path::new(s.value), depth + 1, profile)
            }
            _ => {}
        }
    }
}

/// Reads an include file, or every `*.conf` of an include dir in name order. Unreadable includes
/// are skipped: LXC itself fails on them.
fn include(path: &Path, depth: usize, profile: &mut Option<PathBuf>) {
    if path.is_dir() {
        let Ok(entries) = std::fs::read_dir(path) else {
            return;
        };
        let mut files: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|ext| ext == "conf"))
            .collect();
        files.sort();
        for file in files {
            include(&file, depth + 1, profile);
        }
    } else if let Ok(config) = Config::load(path) {
        walk(&config, depth, profile);
    }
}

/// Whether the profile text denies the syscall on this architecture: a rule for it with an errno,
/// kill or trap action (or none, in a denylist), with the CLONE_NEWUTS filter or no filter.
pub(super) fn denies(profile: &str, denial: Denial) -> bool {
    let mut denylist = false;
    let mut applies = true;
    for line in profile.lines().skip(1) {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        if let Some(section) = line.strip_prefix('[') {
            let arch = section.trim_end_matches(']').trim().to_ascii_lowercase();
            applies = arch == "all" || native_arch(&arch);
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        match words[0] {
            "denylist" | "blacklist" => {
                denylist = true;
                continue;
            }
            "allowlist" | "whitelist" => {
                denylist = false;
                continue;
            }
            _ => {}
        }
        if !applies {
            continue;
        }
        let args = match words.get(1).copied() {
            Some("errno") => &words[words.len().min(3)..],
            Some("kill" | "kill_process" | "trap") => &words[2..],
            Some(word) if word.starts_with('[') && denylist => &words[1..],
            None if denylist => &words[1..],
            _ => continue,
        };
        let filter = args.concat().to_ascii_uppercase();
        let matches = match denial {
            Denial::NewUts => {
                words[0] == "unshare"
                    && (filter.is_empty()
                        || filter == "[0,0X04000000,SCMP_CMP_MASKED_EQ,0X04000000]")
            }
            Denial::Bpf => words[0] == "bpf" && filter.is_empty(),
        };
        if matches {
            return true;
        }
    }
    false
}

/// Whether a profile section named `arch` applies on this machine's architecture.
fn native_arch(arch: &str) -> bool {
    match std::env::consts::ARCH {
        "x86_64" => matches!(arch, "x86_64" | "amd64"),
        "aarch64" => matches!(arch, "arm64" | "aarch64"),
        other => arch == other,
    }
}

/// Whether the resolved init (a path inside the rootfs) is systemd: a regular file named systemd.
fn is_systemd(rootfs: &Path, init: &str) -> bool {
    Path::new(init).file_name().is_some_and(|n| n == "systemd")
        && std::fs::symlink_metadata(rootfs.join(init.trim_start_matches('/')))
            .is_ok_and(|m| m.is_file())
}

/// Resolves `path` as the container sees it: every symlink inside the rootfs is read and followed
/// within it (an absolute target starts again at the rootfs, `..` never leaves it); nothing is
/// followed on the host. Returns the resolved absolute path inside the rootfs, or `None` when a
/// component is missing or there are too many symlinks.
pub(super) fn resolve_in(rootfs: &Path, path: &str) -> Option<String> {
    let mut todo: Vec<String> = components(path).rev().collect();
    let mut done: Vec<String> = Vec::new();
    let mut links = 0;
    while let Some(part) = todo.pop() {
        match part.as_str() {
            "." => continue,
            ".." => {
                done.pop();
                continue;
            }
            _ => {}
        }
        done.push(part);
        let host = rootfs.join(done.join("/"));
        let meta = std::fs::symlink_metadata(&host).ok()?;
        if !meta.file_type().is_symlink() {
            continue;
        }
        links += 1;
        if links > MAX_SYMLINKS {
            return None;
        }
        let target = std::fs::read_link(&host).ok()?;
        let target = target.to_str()?;
        done.pop();
        if target.starts_with('/') {
            done.clear();
        }
        todo.extend(components(target).rev());
    }
    Some(format!("/{}", done.join("/")))
}

fn components(path: &str) -> impl DoubleEndedIterator<Item = String> + '_ {
    path.split('/')
        .filter(|c| !c.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
#[path = "systemd_tests.rs"]
mod tests;
