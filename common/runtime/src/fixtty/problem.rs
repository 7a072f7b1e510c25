//! What can keep CRIU from checkpointing a container, one `Problem` per thing lxc-fixtty finds,
//! with the sentence `--check` prints and the change that fixes it.

use std::fmt;
use std::path::PathBuf;

use super::systemd::Denial;

/// The devices rule that keeps the container away from /dev/console.
pub const CONSOLE_DENY: &str = "c 5:1 rwm";

/// One thing that keeps the container from being checkpointed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A single-valued config key is missing, has the wrong value, or comes before a line that
    /// may override it.
    Setting {
        key: &'static str,
        want: &'static str,
        found: Found,
    },
    /// /dev/console (c 5:1) is not denied by the devices cgroup, or allowed again later.
    ConsoleAllowed { key: &'static str, found: Found },
    /// An `lxc.apparmor.*` line, on a kernel without AppArmor.
    AppArmorKey {
        line: usize,
        key: String,
        value: String,
    },
    /// An `lxc.include` whose files set an AppArmor profile, on a kernel without AppArmor.
    AppArmorInclude { line: usize, include: String },
    /// A pre-LXC-3.0 key, which LXC no longer accepts.
    LegacyKey {
        line: usize,
        key: String,
        value: String,
        replaced_by: &'static str,
    },
    /// A rootfs `/dev/tty` or `/dev/ttyN` that is not a regular file.
    TtyNode { name: String, kind: NodeKind },
    /// Some of the rootfs's regular files `/dev/tty0`..`/dev/tty4` are missing.
    TtyMissing { names: Vec<String> },
    /// A rootfs `/etc/inittab` line that runs a program on a tty or the console.
    InittabTty { line: usize, text: String },
    /// A systemd container whose seccomp profile does not deny a syscall systemd uses for
    /// something CRIU cannot dump.
    SystemdSeccomp {
        /// The init as the config names it (`lxc.init.cmd`, or `/sbin/init`).
        init: String,
        /// What it resolves to in the rootfs (`/usr/lib/systemd/systemd`).
        systemd: String,
        denial: Denial,
        /// The profile the config uses now, if any.
        profile: Option<PathBuf>,
        /// The profile lxc-fixtty writes (`LXCPATH/NAME/ckpt.seccomp`).
        into: PathBuf,
    },
}

/// How a required config line was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Not set at all.
    Missing,
    /// Set to another value, on `line`.
    Wrong { value: String, line: usize },
    /// Set right on `line`, but `by` on the later line `by_line` may undo it.
    Overridden {
        line: usize,
        by_line: usize,
        by: String,
    },
}

/// What a rootfs tty is instead of a regular file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeKind {
    CharDevice { major: u32, minor: u32 },
    BlockDevice { major: u32, minor: u32 },
    Symlink { target: PathBuf },
    Fifo,
    Socket,
}

/// Which file a problem's fix changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Config,
    Dev,
    Inittab,
}

impl Problem {
    pub fn target(&self) -> Target {
        match self {
            Problem::Setting { .. }
            | Problem::ConsoleAllowed { .. }
            | Problem::AppArmorKey { .. }
            | Problem::AppArmorInclude { .. }
            | Problem::LegacyKey { .. }
            | Problem::SystemdSeccomp { .. } => Target::Config,
            Problem::TtyNode { .. } | Problem::TtyMissing { .. } => Target::Dev,
            Problem::InittabTty { .. } => Target::Inittab,
        }
    }

    /// The change that fixes the problem: done (`set ...`, `removed ...`) or, for `--dry-run`,
    /// to be done (`would set ...`, `would remove ...`).
    pub fn action(&self, done: bool) -> String {
        let verb = |past: &str, base: &str| {
            if done {
                past.to_string()
            } else {
                format!("would {base}")
            }
        };
        match self {
            Problem::Setting { key, want, found: Found::Wrong { value, line } } => {
                format!("{} {key} = {want} (was {value} on line {line})", verb("set", "set"))
            }
            Problem::Setting { key, want, found: Found::Overridden { by_line, .. } } => {
                format!("{} {key} = {want} to the end of the config, after line {by_line}", verb("moved", "move"))
            }
            Problem::Setting { key, want, found: Found::Missing } => format!("{} {key} = {want}", verb("set", "set")),
            Problem::ConsoleAllowed { key, .. } => {
                format!("{} {key} = {CONSOLE_DENY} at the end of the config", verb("added", "add"))
            }
            Problem::AppArmorKey { line, key, value } => {
                format!("{} {key} = {value} (line {line})", verb("removed", "remove"))
            }
            Problem::AppArmorInclude { include, .. } => format!(
                "{} an empty lxc.apparmor.profile = to clear the profile from lxc.include = {include}",
                verb("added", "add")
            ),
            Problem::LegacyKey { line, key, value, .. } => {
                format!("{} legacy {key} = {value} (line {line})", verb("removed", "remove"))
            }
            Problem::TtyNode { name, kind } => {
                format!("{} /dev/{name} ({kind}) with an empty regular file", verb("replaced", "replace"))
            }
            Problem::TtyMissing { names } => {
                format!("{} empty regular files {}", verb("created", "create"), dev_list(names))
            }
            Problem::InittabTty { line, text } => {
                format!("{} /etc/inittab line {line}: {text}", verb("commented out", "comment out"))
            }
            Problem::SystemdSeccomp { denial, into, .. } => format!(
                "{} `{}` to the seccomp profile {}: {}",
                verb("added", "add"),
                denial.rule(),
                into.display(),
                denial.loss()
            ),
        }
    }
}

impl fmt::Display for Problem {
    /// The problem as `--check` lists it: what is wrong and why CRIU cares.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Setting { key, want, found } => {
                let why = match *key {
                    "lxc.tty.max" => "CRIU cannot checkpoint the ttys LXC gives a container",
                    _ => "CRIU cannot checkpoint the console pty LXC gives a container",
                };
                match found {
                    Found::Missing => write!(f, "{key} is not set, it must be {want}: {why}"),
                    Found::Wrong { value, line } => write!(f, "{key} is {value} (line {line}), it must be {want}: {why}"),
                    Found::Overridden { line, by_line, by } => {
                        write!(f, "{key} = {want} (line {line}) may be overridden by line {by_line} ({by}): it must come last")
                    }
                }
            }
            Problem::ConsoleAllowed { key, found } => match found {
                Found::Overridden { line, by_line, by } => write!(
                    f,
                    "/dev/console (c 5:1) is denied on line {line} but line {by_line} ({by}) may allow it again: \
                     {key} = {CONSOLE_DENY} must come last"
                ),
                _ => write!(f, "/dev/console (c 5:1) is not denied: the config needs {key} = {CONSOLE_DENY}"),
            },
            Problem::AppArmorKey { line, key, value } => write!(
                f,
                "{key} = {value} (line {line}): this kernel has no AppArmor, and with an AppArmor \
                 profile CRIU refuses to restore (apparmor LSM specified but apparmor not supported by kernel)"
            ),
            Problem::AppArmorInclude { line, include } => write!(
                f,
                "lxc.include = {include} (line {line}) sets an AppArmor profile: this kernel has no AppArmor, \
                 so CRIU refuses to restore"
            ),
            Problem::LegacyKey { line, key, value, replaced_by } => write!(
                f,
                "{key} = {value} (line {line}) is a legacy key LXC 3.0 and later refuse ({replaced_by} replaces it)"
            ),
            Problem::TtyNode { name, kind } => write!(
                f,
                "rootfs /dev/{name} is {kind}: CRIU needs the rootfs's /dev/tty* to be regular files"
            ),
            Problem::TtyMissing { names } => write!(
                f,
                "rootfs {} missing: the tty workaround keeps /dev/tty0../dev/tty4 as regular files",
                match names.len() {
                    1 => format!("{} is", dev_list(names)),
                    _ => format!("{} are", dev_list(names)),
                }
            ),
            Problem::InittabTty { line, text } => write!(
                f,
                "/etc/inittab line {line} runs a program on a tty or the console, which the container no longer \
                 has: {text}"
            ),
            Problem::SystemdSeccomp { init, systemd, denial, profile, .. } => {
                let init = match init == systemd {
                    true => init.clone(),
                    false => format!("{init} is {systemd}"),
                };
                let profile = match profile {
                    Some(path) => format!("its seccomp profile {}", path.display()),
                    None => "it has no seccomp profile, which".to_string(),
                };
                write!(
                    f,
                    "systemd container ({init}): {profile} allows {}: {}; the fix denies it, and the \
                     container loses this: {}",
                    denial.syscall(),
                    denial.blocks(),
                    denial.loss()
                )
            }
        }
    }
}

impl fmt::Display for NodeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeKind::CharDevice { major, minor } => {
                write!(f, "a character device {major}:{minor}")
            }
            NodeKind::BlockDevice { major, minor } => write!(f, "a block device {major}:{minor}"),
            NodeKind::Symlink { target } => write!(f, "a symlink to {}", target.display()),
            NodeKind::Fifo => f.write_str("a fifo"),
            NodeKind::Socket => f.write_str("a socket"),
        }
    }
}

/// `/dev/tty0, /dev/tty3`.
fn dev_list(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("/dev/{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}
