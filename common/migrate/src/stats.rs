//! The `--stats FILE` JSON of ckpt-dump and ckpt-restore, and the resource figures in them.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use ckpt_runtime::criu::{DumpStats, MountMode, RestoreStats};

use crate::ack::RestoreResult;

/// `ckpt-dump --stats FILE`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DumpReport {
    pub name: String,
    /// The phase reached: checks, precopy, checkpoint, stream, ack, done.
    pub phase: String,
    /// Why the migration failed, when it did (`phase` is where).
    pub failure: Option<Failure>,
    /// Wall-clock time (Unix ms) lxc-checkpoint was started: the downtime starts here.
    pub freeze_unix_ms: u64,
    pub phases_ms: DumpPhases,
    /// Uncompressed stream bytes (data areas).
    pub bytes: u64,
    /// Bytes written to the output, after compression.
    pub wire_bytes: u64,
    /// Of `wire_bytes`, those written before the freeze (the rootfs copied while it ran).
    pub precopy_wire_bytes: u64,
    /// Uncompressed and written bytes after the freeze: what the downtime waits for.
    pub frozen_bytes: u64,
    pub frozen_wire_bytes: u64,
    /// After-freeze throughput (uncompressed MB/s).
    pub throughput_mb_s: f64,
    /// The rootfs changes sent after the freeze (live streams).
    pub rootfs_changes: Option<RootfsChanges>,
    pub compression: String,
    /// CRIU dump options beyond ckpt's own: what the container needed and the user's.
    pub criu_options: Vec<String>,
    /// Dumps tried again after a passing failure (the container ran on meanwhile).
    pub dump_retries: u32,
    pub criu_dump: Option<DumpStats>,
    /// Where the memory went: in the images, streamed after them, or post-copy (--lazy).
    pub memory: ckpt_stream::format::MemoryMode,
    /// Memory bytes sent after the images (streamed or post-copy).
    pub memory_bytes: u64,
    /// Freeze to running on the destination: checkpoint + stream + the receiver's restore phase
    /// (known only with --ack, from the receiver's result line).
    pub downtime_ms: Option<u64>,
    pub restore: Option<RestoreResult>,
    pub outcome: String,
    /// This process's peak resident memory (VmHWM), CRIU and other children not included.
    pub peak_rss_kib: Option<u64>,
    /// CPU time and peak RSS of this process and every child it waited for (lxc-checkpoint,
    /// CRIU), as /usr/bin/time reports them for a command.
    pub usage: Option<Usage>,
}

/// A failed run: where and why.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Failure {
    pub phase: String,
    /// The error, as the tool printed it.
    pub error: String,
}

/// What changed in the rootfs between its live copy and the freeze.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct RootfsChanges {
    /// Rootfs entries sent again after the freeze (new or changed since they were copied).
    pub changed: u64,
    /// Rootfs paths deleted since they were copied (sent as whiteouts).
    pub deleted: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct DumpPhases {
    /// Manifest and the rootfs copied while the container ran (not part of the downtime).
    pub precopy: u64,
    /// Waiting, after the copy, for the receiver to have unpacked it (with --ack).
    pub receiver_catch_up: u64,
    pub checkpoint: u64,
    /// The stream after the freeze (with --lazy: up to the seal of the images).
    pub stream: u64,
    /// With --lazy: pulling the memory from CRIU into the stream, while the destination runs
    /// (streamed stop-and-copy: the part of `stream` that did).
    pub memory: u64,
    pub ack_wait: u64,
    /// After the receiver's success: ending and removing the source copy (its rootfs deleted).
    pub end_source: u64,
    pub total: u64,
}

/// `ckpt-restore --stats FILE`.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub result: RestoreResult,
    pub bytes: u64,
    pub throughput_mb_s: f64,
    pub criu_restore: Option<RestoreStats>,
    /// How CRIU restored the mounts: mount-v2 or mntns-compat-mode.
    pub mount_mode: Option<MountMode>,
    /// This process's peak resident memory (VmHWM), CRIU and other children not included.
    pub peak_rss_kib: Option<u64>,
    /// CPU time and peak RSS of this process and every child it waited for (lxc-checkpoint,
    /// CRIU), as /usr/bin/time reports them for a command.
    pub usage: Option<Usage>,
}

/// Peak resident memory of this process so far, in KiB.
pub fn peak_rss_kib() -> Option<u64> {
    let hwm = ckpt_runtime::procs::own_status("VmHWM")?;
    hwm.split_whitespace().next()?.parse().ok()
}

pub fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// Megabytes (10^6) per second.
pub fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    let secs = d.as_secs_f64();
    if secs > 0.0 {
        (bytes as f64 / 1e6 / secs * 10.0).round() / 10.0
    } else {
        0.0
    }
}

/// Writes a report as pretty JSON.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let mut json = serde_json::to_vec_pretty(value)?;
    json.push(b'\n');
    std::fs::write(path, json).with_context(|| format!("writing stats to {}", path.display()))
}

/// getrusage(2) of a process and its waited-for children.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Usage {
    pub user_ms: u64,
    pub sys_ms: u64,
    /// The largest peak RSS of this process and of any waited-for child.
    pub max_rss_kib: u64,
}

impl Usage {
    pub fn now() -> Usage {
        let (me, children) = (rusage(libc::RUSAGE_SELF), rusage(libc::RUSAGE_CHILDREN));
        let ms = |t: libc::timeval| t.tv_sec as u64 * 1000 + t.tv_usec as u64 / 1000;
        Usage {
            user_ms: ms(me.ru_utime) + ms(children.ru_utime),
            sys_ms: ms(me.ru_stime) + ms(children.ru_stime),
            max_rss_kib: me.ru_maxrss.max(children.ru_maxrss) as u64,
        }
    }
}

fn rusage(who: libc::c_int) -> libc::rusage {
    // SAFETY: rusage is plain old data, so all-zero is a valid value; getrusage only writes into
    // the struct we pass, and RUSAGE_SELF/RUSAGE_CHILDREN are always valid.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut usage);
        usage
    }
}
