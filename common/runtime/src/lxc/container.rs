//! One LXC container as the tools see it: a name under an lxcpath, its directory, config and
//! rootfs, and whether it is running.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{default_lxcpath, run_command, Config, LxcError};
use ckpt_stream::error::usage;

/// A container `NAME` under `LXCPATH` (`LXCPATH/NAME/config` is its config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub name: String,
    pub lxcpath: PathBuf,
}

/// A container state as `lxc-info -s` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Stopped,
    Starting,
    Running,
    Stopping,
    Aborting,
    Freezing,
    Frozen,
    Thawed,
    /// A state name this code does not know.
    Other(String),
}

impl Container {
    /// A container handle; checks only that `name` can be a container name
    /// ([`ckpt_stream::format::name_problem`]: the one rule for names).
    pub fn new(name: &str, lxcpath: impl Into<PathBuf>) -> Result<Container, LxcError> {
        if let Some(why) = ckpt_stream::format::name_problem(name) {
            return Err(LxcError::BadName {
                name: name.to_string(),
                why,
            });
        }
        Ok(Container {
            name: name.to_string(),
            lxcpath: lxcpath.into(),
        })
    }

    /// The existing container `name` under `lxcpath`, or under [`default_lxcpath`] when `None`.
    /// Errors name what is wrong: a bad name (a usage error, exit 2), no such container ("check
    /// the name and -P").
    pub fn locate(name: &str, lxcpath: Option<&Path>) -> anyhow::Result<Container> {
        let lxcpath = match lxcpath {
            Some(path) => path.to_path_buf(),
            None => default_lxcpath()?,
        };
        let container = Container::new(name, lxcpath).map_err(|err| usage(err.to_string()))?;
        container.ensure_exists()?;
        Ok(container)
    }

    /// `LXCPATH/NAME`.
    pub fn dir(&self) -> PathBuf {
        self.lxcpath.join(&self.name)
    }

    /// `LXCPATH/NAME/config`.
    pub fn config_path(&self) -> PathBuf {
        self.dir().join("config")
    }

    /// Whether the container is defined (its config file exists), as LXC decides it.
    pub fn exists(&self) -> bool {
        self.config_path().is_file()
    }

    /// [`LxcError::NoSuchContainer`] unless the container exists.
    pub fn ensure_exists(&self) -> Result<(), LxcError> {
        if self.exists() {
            return Ok(());
        }
        Err(LxcError::NoSuchContainer {
            name: self.name.clone(),
            lxcpath: self.lxcpath.clone(),
        })
    }

    /// Reads the container's config.
    pub fn load_config(&self) -> anyhow::Result<Config> {
        self.ensure_exists()?;
        Config::load(&self.config_path())
    }

    /// The rootfs directory, from the config's `lxc.rootfs.path`.
    pub fn rootfs_path(&self) -> anyhow::Result<PathBuf> {
        Ok(self.rootfs_in(&self.load_config()?)?)
    }

    /// The rootfs directory named by `config`: `lxc.rootfs.path = dir:PATH` or a plain absolute
    /// path. Other storage (overlay, btrfs, zfs, lvm, loop, a block device...) is
    /// [`LxcError::UnsupportedRootfs`]; a config without a rootfs is [`LxcError::NoRootfs`].
    pub fn rootfs_in(&self, config: &Config) -> Result<PathBuf, LxcError> {
        let unsupported = |kind: &str, value: &str| LxcError::UnsupportedRootfs {
            name: self.name.clone(),
            kind: kind.to_string(),
            value: value.to_string(),
        };
        let Some(value) = config.get("lxc.rootfs.path").filter(|v| !v.is_empty()) else {
            let config_path = self.config_path();
            return Err(match config.get("lxc.rootfs") {
                Some(_) => LxcError::LegacyConfig {
                    key: "lxc.rootfs".to_string(),
                    config: config_path,
                },
                None => LxcError::NoRootfs {
                    name: self.name.clone(),
                    config: config_path,
                },
            });
        };
        let path = Path::new(value.strip_prefix("dir:").unwrap_or(value));
        if !path.is_absolute() {
            let kind = value
                .split_once(':')
                .map_or("relative path", |(kind, _)| kind);
            return Err(unsupported(kind, value));
        }
        if std::fs::metadata(path)
            .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_block_device(&m.file_type()))
        {
            return Err(unsupported("blockdev", value));
        }
        Ok(path.to_path_buf())
    }

    /// The state `lxc-info -P LXCPATH -n NAME -s -H` reports. Note that lxc-info asks the
    /// container's command socket, which is per network namespace: from another netns a running
    /// container looks STOPPED. [`Container::is_running`] also looks for the monitor process.
    pub fn state(&self) -> Result<State, LxcError> {
        let out = self.lxc("lxc-info", &["-s", "-H"])?;
        Ok(State::parse(out.trim()))
    }

    /// The pid of the container's init, as `lxc-info -p` reports it, when it runs.
    pub fn init_pid(&self) -> Option<u32> {
        self.lxc("lxc-info", &["-p", "-H"])
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Runs the LXC program `program -P LXCPATH -n NAME args...` and returns its stdout (see
    /// [`run_command`]): the one place the container's `-P`/`-n` arguments are spelled out.
    pub fn lxc(&self, program: &str, args: &[&str]) -> Result<String, LxcError> {
        let args = args.iter().map(OsString::from);
        run_command(program, self.lxc_args().into_iter().chain(args))
    }

    /// The same as a [`Command`] still to be configured (stdio, environment) and run.
    pub fn lxc_command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.args(self.lxc_args());
        cmd
    }

    fn lxc_args(&self) -> [OsString; 4] {
        [
            "-P".into(),
            self.lxcpath.clone().into_os_string(),
            "-n".into(),
            self.name.clone().into(),
        ]
    }

    /// The pid of the container's monitor process, `[lxc monitor] LXCPATH NAME`, when one runs in
    /// this pid namespace (whatever its network namespace).
    pub fn monitor_pid(&self) -> Option<u32> {
        crate::procs::processes().find_map(|p| {
            let cmdline = p.cmdline()?;
            self.is_monitor_title(&cmdline).then_some(p.pid)
        })
    }

    /// Whether the container runs (or is starting, frozen, stopping...): its monitor process
    /// exists, or lxc-info says it is not STOPPED. Without a monitor, a container whose state
    /// lxc-info cannot tell (LXC not installed, a config LXC cannot parse) is taken as stopped:
    /// LXC keeps a monitor for every daemonized container, and lxc-info does see a foreground
    /// `lxc-start -F` in the same network namespace.
    pub fn is_running(&self) -> bool {
        if self.monitor_pid().is_some() {
            return true;
        }
        matches!(self.state(), Ok(state) if state != State::Stopped)
    }

    fn is_monitor_title(&self, cmdline: &[u8]) -> bool {
        let title = cmdline.split(|&b| b == 0).next().unwrap_or_default();
        let Some(rest) = std::str::from_utf8(title)
            .ok()
            .and_then(|t| t.strip_prefix("[lxc monitor] "))
        else {
            return false;
        };
        match rest.trim_end().rsplit_once(' ') {
            Some((path, name)) => name == self.name && same_dir(Path::new(path), &self.lxcpath),
            None => false,
        }
    }
}

/// Whether two paths name the same directory (resolved when possible, else compared as text).
fn same_dir(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a.components().eq(b.components()),
    }
}

impl State {
    /// Parses `lxc-info -s -H` output (`RUNNING`, `STOPPED`...).
    pub fn parse(text: &str) -> State {
        match text.trim() {
            "STOPPED" => State::Stopped,
            "STARTING" => State::Starting,
            "RUNNING" => State::Running,
            "STOPPING" => State::Stopping,
            "ABORTING" => State::Aborting,
            "FREEZING" => State::Freezing,
            "FROZEN" => State::Frozen,
            "THAWED" => State::Thawed,
            other => State::Other(other.to_string()),
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            State::Stopped => "STOPPED",
            State::Starting => "STARTING",
            State::Running => "RUNNING",
            State::Stopping => "STOPPING",
            State::Aborting => "ABORTING",
            State::Freezing => "FREEZING",
            State::Frozen => "FROZEN",
            State::Thawed => "THAWED",
            State::Other(other) => other,
        };
        f.write_str(text)
    }
}

#[cfg(test)]
#[path = "container_tests.rs"]
mod tests;
