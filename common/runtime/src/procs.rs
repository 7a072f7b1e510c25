//! The one scanner of /proc: the processes of this pid namespace, and what the tools ask of them
//! (name, command line, state and parent, mappings).

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
    }
}
