//! CRIU details ckpt relies on: the per-command options file handed over through CRIU_CONFIG_FILE,
//! the statistics images CRIU writes (stats-dump, stats-restore), the first error of its logs, and the
//! oldest version ckpt works with (compared by `compat`).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

/// Oldest CRIU that can dump INET sockets on kernels >= 6.16.
pub const MIN_VERSION: &str = "4.2";

/// Options for `criu dump`, beyond what lxc-checkpoint passes itself.
///
/// `file-validation filesize`: by default (`buildid`) CRIU opens every open regular file again
/// (`/proc/self/fd/N`) to read its ELF build-id. That open breaks any lease on the file, and with
/// the holder frozen it waits out `fs.lease-break-time` (45 s of freeze), then downgrades the lease
/// and the holder gets SIGIO on thaw. By size, nothing is opened: 0.48 s instead of 45.5 s, the
/// lease intact. Restore needs no option: it checks whatever the images hold (here the size), and
/// the destination's rootfs is a copy of this one anyway.
pub const DUMP_OPTIONS: &[&str] = &["tcp-established", "file-locks", "file-validation filesize"];
/// Options for `criu restore` (the mount mode is chosen per restore: [`MountMode`]).
pub const RESTORE_OPTIONS: &[&str] = &["tcp-established", "file-locks"];

/// How CRIU restores mounts. Neither works for every container here: mount-v2 (CRIU's default)
/// cannot restore the busybox template's read-only bind mounts (`Failed to move_mount ...
/// Invalid argument`), and `mntns-compat-mode` cannot restore a second mount namespace such as
/// systemd-logind's (`Can't bind-mount at .../dev/ptmx: Not a directory`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MountMode {
    MountV2,
    MntnsCompatMode,
}

impl MountMode {
    /// The modes to try for `images`, best guess first: mount-v2 when the container has more
    /// than one mount namespace (one `mountpoints-N.img` each), else the compat mode.
    pub fn order(images: &Path) -> [MountMode; 2] {
        let namespaces = std::fs::read_dir(images)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.starts_with("mountpoints-") && name.ends_with(".img")
            })
            .count();
        match namespaces > 1 {
            true => [MountMode::MountV2, MountMode::MntnsCompatMode],
            false => [MountMode::MntnsCompatMode, MountMode::MountV2],
        }
    }

    /// The line for a CRIU options file (none for CRIU's default).
    pub fn option(self) -> Option<&'static str> {
        match self {
            MountMode::MountV2 => None,
            MountMode::MntnsCompatMode => Some("mntns-compat-mode"),
        }
    }
}

/// Whether a CRIU error line is one of mounts (worth retrying in the other [`MountMode`]).
pub fn is_mount_error(line: &str) -> bool {
    line.contains("mnt") || line.contains("mount")
}

/// Whether a failed dump's error is a passing condition, worth one more try (the container runs
/// on after a failed dump): an rtnetlink socket with unread data (seen about once in six dumps
/// of a systemd container shortly after boot).
pub fn is_transient_dump_error(line: &str) -> bool {
    line.contains("The socket has data to read")
}

/// CRIU options a running container needs, with why: systemd puts service credentials on ramfs
/// (`/run/credentials/UNIT`), which CRIU refuses unless told to treat ramfs as a known
/// filesystem (they come back empty, and systemd writes them again when the unit restarts).
/// Only when every ramfs mount is such a credentials mount: other ramfs data would be lost.
pub fn needed_dump_options(mountinfo: &str) -> Vec<(&'static str, &'static str)> {
    let ramfs: Vec<String> = crate::procs::mounts(mountinfo)
        .into_iter()
        .filter(|m| m.fstype == "ramfs")
        .map(|m| m.target)
        .collect();
    let credentials_only = !ramfs.is_empty()
        && ramfs
            .iter()
            .all(|point| point.starts_with("/run/credentials/"));
    match credentials_only {
        true => vec![(
            "enable-fs ramfs",
            "systemd's credential mounts (/run/credentials) are ramfs; they are restored empty",
        )],
        false => Vec::new(),
    }
}

/// A CRIU options file (one option per line, without dashes), removed on drop. lxc-checkpoint
/// execs criu with its environment, so `CRIU_CONFIG_FILE` reaches CRIU without reimplementing LXC,
/// and dump and restore get different options (a restore-only option breaks every dump).
pub struct OptionsFile {
    file: tempfile::NamedTempFile,
}

impl OptionsFile {
    pub fn new(options: &[impl AsRef<str>]) -> anyhow::Result<OptionsFile> {
        let mut file = tempfile::Builder::new()
            .prefix("ckpt-criu-")
            .suffix(".conf")
            .tempfile()?;
        for option in options {
            writeln!(file, "{}", option.as_ref())?;
        }
        file.flush()?;
        Ok(OptionsFile { file })
    }

    pub fn path(&self) -> PathBuf {
        self.file.path().to_path_buf()
    }
}

/// CRIU's view of a dump, from `stats-dump` (times in microseconds).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct DumpStats {
    pub freezing_time_us: u32,
    pub frozen_time_us: u32,
    pub memdump_time_us: u32,
    pub memwrite_time_us: u32,
    pub pages_scanned: u64,
    pub pages_skipped_parent: u64,
    pub pages_written: u64,
}

/// CRIU's view of a restore, from `stats-restore` (times in microseconds).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct RestoreStats {
    pub pages_compared: u64,
    pub pages_skipped_cow: u64,
    pub forking_time_us: u32,
    pub restore_time_us: u32,
    pub pages_restored: u64,
}

/// The protobuf messages of CRIU's stats.proto, declared with prost's derive.
mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct DumpStatsEntry {
        #[prost(uint32, required, tag = "1")]
        pub freezing_time: u32,
        #[prost(uint32, required, tag = "2")]
        pub frozen_time: u32,
        #[prost(uint32, required, tag = "3")]
        pub memdump_time: u32,
        #[prost(uint32, required, tag = "4")]
        pub memwrite_time: u32,
        #[prost(uint64, required, tag = "5")]
        pub pages_scanned: u64,
        #[prost(uint64, required, tag = "6")]
        pub pages_skipped_parent: u64,
        #[prost(uint64, required, tag = "7")]
        pub pages_written: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RestoreStatsEntry {
        #[prost(uint64, required, tag = "1")]
        pub pages_compared: u64,
        #[prost(uint64, required, tag = "2")]
        pub pages_skipped_cow: u64,
        #[prost(uint32, required, tag = "3")]
        pub forking_time: u32,
        #[prost(uint32, required, tag = "4")]
        pub restore_time: u32,
        #[prost(uint64, optional, tag = "5")]
        pub pages_restored: Option<u64>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StatsEntry {
        #[prost(message, optional, tag = "1")]
        pub dump: Option<DumpStatsEntry>,
        #[prost(message, optional, tag = "2")]
        pub restore: Option<RestoreStatsEntry>,
    }
}

/// Reads a stats image: one or two 32-bit magics, then one entry (32-bit length + protobuf).
fn read_stats(path: &Path) -> anyhow::Result<proto::StatsEntry> {
    use prost::Message;
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    for header in [8usize, 4] {
        let Some(len) = bytes.get(header..header + 4) else {
            continue;
        };
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if let Some(body) = bytes.get(header + 4..header + 4 + len) {
            if let Ok(entry) = proto::StatsEntry::decode(body) {
                return Ok(entry);
            }
        }
    }
    anyhow::bail!("{} is not a CRIU stats image", path.display())
}

/// CRIU's dump statistics from an image dir, if CRIU left them.
pub fn dump_stats(images: &Path) -> Option<DumpStats> {
    let d = read_stats(&images.join("stats-dump")).ok()?.dump?;
    Some(DumpStats {
        freezing_time_us: d.freezing_time,
        frozen_time_us: d.frozen_time,
        memdump_time_us: d.memdump_time,
        memwrite_time_us: d.memwrite_time,
        pages_scanned: d.pages_scanned,
        pages_skipped_parent: d.pages_skipped_parent,
        pages_written: d.pages_written,
    })
}

/// CRIU's restore statistics from an image dir, if CRIU left them.
pub fn restore_stats(images: &Path) -> Option<RestoreStats> {
    let r = read_stats(&images.join("stats-restore")).ok()?.restore?;
    Some(RestoreStats {
        pages_compared: r.pages_compared,
        pages_skipped_cow: r.pages_skipped_cow,
        forking_time_us: r.forking_time,
        restore_time_us: r.restore_time,
        pages_restored: r.pages_restored.unwrap_or_default(),
    })
}

/// The line of a CRIU log that says what went wrong: the first `Error (` line (the later ones are
/// its consequences: `Dumping FAILED.`, `cgroupd: recv req error: ...`), else the first line that
/// mentions an error. The harmless `Can't setup RLIMIT_NOFILE` is skipped.
pub fn log_error(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    first_error(&text)
}

fn first_error(text: &str) -> Option<String> {
    let relevant = |l: &&str| !l.contains("RLIMIT_NOFILE");
    let mut lines = text.lines().filter(relevant);
    let first = text
        .lines()
        .filter(relevant)
        .find(|l| l.contains("Error ("))
        .or_else(|| lines.find(|l| l.contains("Error") || l.contains("error")))?;
    Some(first.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn ramfs_is_enabled_only_for_systemd_credentials() {
        let creds = "36 25 0:40 / /run/credentials/systemd-journald.service ro,nosuid shared:20 - ramfs ramfs ro,mode=700\n\
                     37 25 0:41 / /run shared:5 - tmpfs tmpfs rw\n";
        assert_eq!(needed_dump_options(creds).len(), 1);
        let other = format!("{creds}38 25 0:42 / /srv/cache rw - ramfs ramfs rw\n");
        assert!(needed_dump_options(&other).is_empty());
        assert!(needed_dump_options("37 25 0:41 / /run shared:5 - tmpfs tmpfs rw\n").is_empty());
    }

    #[test]
    fn mount_mode_follows_the_number_of_mount_namespaces() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("mountpoints-13.img"), "").unwrap();
        assert_eq!(MountMode::order(dir.path())[0], MountMode::MntnsCompatMode);
        std::fs::write(dir.path().join("mountpoints-14.img"), "").unwrap();
        assert_eq!(MountMode::order(dir.path())[0], MountMode::MountV2);
        assert!(is_mount_error(
            "Error (criu/mount-v2.c:1): mnt-v2: Failed to move_mount"
        ));
        assert!(is_transient_dump_error(
            "Error (criu/netlink.c:1): netlink: The socket has data to read"
        ));
    }

    #[test]
    fn the_first_error_line_names_the_cause() {
        let log = "(00.001) Warn  (criu/kerndat.c:1): rlimit: Can't setup RLIMIT_NOFILE for self\n\
                   (00.010) Error (criu/files-ext.c:96): Can't dump file 7 of that type [600]\n\
                   (00.011) Error (criu/cr-dump.c:2100): Dumping FAILED.\n\
                   (00.012) Error (criu/cgroup.c:5): cgroupd: recv req error: File exists\n";
        let line = first_error(log).unwrap();
        assert!(line.contains("Can't dump file 7"), "{line}");
        assert_eq!(
            first_error("lxc: some error happened\n").unwrap(),
            "lxc: some error happened"
        );
        assert!(first_error("all fine\n").is_none());
    }

    #[test]
    fn stats_image_is_decoded() {
        let entry = proto::StatsEntry {
            dump: Some(proto::DumpStatsEntry {
                freezing_time: 10,
                frozen_time: 2000,
                memdump_time: 300,
                memwrite_time: 400,
                pages_scanned: 5,
                pages_skipped_parent: 0,
                pages_written: 4,
            }),
            restore: None,
        };
        let body = entry.encode_to_vec();
        let mut image = vec![0x40, 0x59, 0x10, 0x55, 0x06, 0x33, 0x09, 0x57];
        image.extend_from_slice(&(body.len() as u32).to_le_bytes());
        image.extend_from_slice(&body);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("stats-dump"), image).unwrap();
        let stats = dump_stats(dir.path()).unwrap();
        assert_eq!(stats.frozen_time_us, 2000);
        assert_eq!(stats.pages_written, 4);
        assert!(restore_stats(dir.path()).is_none());
    }
}
