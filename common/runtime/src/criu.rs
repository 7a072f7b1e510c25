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
/// Options for `criu restore`: mount-v2 cannot restore the busybox template's read-only binds.
pub const RESTORE_OPTIONS: &[&str] = &["tcp-established", "file-locks", "mntns-compat-mode"];

/// A CRIU options file (one option per line, without dashes), removed on drop. lxc-checkpoint
/// execs criu with its environment, so `CRIU_CONFIG_FILE` reaches CRIU without reimplementing LXC,
/// and dump and restore get different options (a restore-only option breaks every dump).
pub struct OptionsFile {
    file: tempfile::NamedTempFile,
}

impl OptionsFile {
    pub fn new(options: &[&str]) -> anyhow::Result<OptionsFile> {
        let mut file = tempfile::Builder::new()
            .prefix("ckpt-criu-")
            .suffix(".conf")
            .tempfile()?;
        for option in options {
            writeln!(file, "{option}")?;
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

/// The last line of a CRIU log that says what went wrong.
pub fn log_error(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    let mut errors = text
        .lines()
        .rev()
        .filter(|l| l.contains("Error") || l.contains("error"));
    errors
        .find(|l| !l.contains("RLIMIT_NOFILE"))
        .map(|l| l.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

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
