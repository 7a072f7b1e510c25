//! The one reader of /proc: the processes of this pid namespace and what the tools ask of them
//! (name, command line, state and parent, mappings, namespaces), this process's own status, and
//! mount tables.

use std::path::PathBuf;

/// A process found under /proc (it may be gone by the time it is asked anything).
#[derive(Debug, Clone)]
pub struct Process {
    pub pid: u32,
    dir: PathBuf,
}

/// Every process in this pid namespace, this one included.
pub fn processes() -> impl Iterator<Item = Process> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse().ok()?;
            Some(Process {
                pid,
                dir: entry.path(),
            })
        })
}

impl Process {
    /// Its name (`comm`), as `ps -o comm` shows it.
    pub fn comm(&self) -> Option<String> {
        let comm = std::fs::read_to_string(self.dir.join("comm")).ok()?;
        Some(comm.trim_end().to_string())
    }

    /// Its command line, arguments separated by NULs.
    pub fn cmdline(&self) -> Option<Vec<u8>> {
        std::fs::read(self.dir.join("cmdline")).ok()
    }

    /// Whether its command line holds `needle` (e.g. a path it works on).
    pub fn cmdline_contains(&self, needle: &[u8]) -> bool {
        self.cmdline()
            .is_some_and(|c| c.windows(needle.len()).any(|w| w == needle))
    }

    /// Its state letter (`R`, `S`, `T`, `Z`...) and its parent's pid.
    pub fn state_and_parent(&self) -> Option<(char, u32)> {
        let stat = std::fs::read_to_string(self.dir.join("stat")).ok()?;
        // The name field may hold spaces and parentheses: the fields after it follow the last ')'.
        let mut fields = stat.rsplit(") ").next()?.split_whitespace();
        let state = fields.next()?.chars().next()?;
        let ppid = fields.next()?.parse().ok()?;
        Some((state, ppid))
    }

    /// Its memory mappings (`/proc/PID/maps`).
    pub fn maps(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.join("maps")).ok()
    }

    /// Whether it is this process.
    pub fn is_self(&self) -> bool {
        self.pid == std::process::id()
    }
}

/// The processes in the pid namespace of `pid` (a container's tasks, when `pid` is its init).
pub fn in_pid_namespace_of(pid: u32) -> Vec<Process> {
    let pidns = |pid: u32| std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
    let Some(ns) = pidns(pid) else {
        return Vec::new();
    };
    processes()
        .filter(|p| pidns(p.pid).as_ref() == Some(&ns))
        .collect()
}

/// Private anonymous memory of the processes in the pid namespace of `pid`, in bytes (their
/// `RssAnon`): about what a lazy dump leaves out of the images.
pub fn anon_memory_of(pid: u32) -> u64 {
    in_pid_namespace_of(pid)
        .iter()
        .filter_map(|p| {
            let status = std::fs::read_to_string(format!("/proc/{}/status", p.pid)).ok()?;
            let kib = status.lines().find_map(|l| l.strip_prefix("RssAnon:"))?;
            kib.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum::<u64>()
        * 1024
}

/// Whether `pid` lives in a network namespace other than this process's (an error when it is gone).
pub fn has_own_netns(pid: u32) -> std::io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let theirs = std::fs::metadata(format!("/proc/{pid}/ns/net"))?;
    let ours = std::fs::metadata("/proc/self/ns/net")?;
    Ok((theirs.dev(), theirs.ino()) != (ours.dev(), ours.ino()))
}

/// The value of `field` (e.g. `Threads`, `VmHWM`, `CapEff`) in this process's /proc/self/status.
pub fn own_status(field: &str) -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        (name == field).then(|| value.trim().to_string())
    })
}

/// One line of a mountinfo table (proc(5)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// `major:minor` of the filesystem.
    pub dev: String,
    /// The path within the filesystem that is mounted, octal escapes decoded.
    pub root: String,
    /// Where it is mounted, octal escapes decoded.
    pub target: String,
    pub fstype: String,
}

/// The mounts of a `/proc/PID/mountinfo` text, in order.
pub fn mounts(mountinfo: &str) -> Vec<Mount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let f: Vec<&str> = before.split_whitespace().collect();
            Some(Mount {
                dev: f.get(2)?.to_string(),
                root: unescape(f.get(3)?),
                target: unescape(f.get(4)?),
                fstype: after.split_whitespace().next()?.to_string(),
            })
        })
        .collect()
}

/// A mountinfo path with its octal escapes (`\040` for a space) decoded.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) => {
                out.push(d.iter().fold(0u8, |n, b| n.wrapping_mul(8) + (b - b'0')));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_this_process() {
        let me = processes()
            .find(Process::is_self)
            .expect("this process is in /proc");
        assert!(me.state_and_parent().is_some());
        assert!(me.cmdline().is_some_and(|c| !c.is_empty()));
        assert!(me.maps().is_some_and(|m| !m.is_empty()));
        assert!(in_pid_namespace_of(me.pid).iter().any(Process::is_self));
        assert!(!has_own_netns(me.pid).unwrap());
        assert!(own_status("Threads").is_some_and(|t| t.parse::<u32>().is_ok()));
    }
}
