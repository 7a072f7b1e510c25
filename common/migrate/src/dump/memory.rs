//! Where ckpt-dump sends the memory: in the CRIU images, or after them, pulled from CRIU's page
//! server (a lazy dump) into the stream in sealed runs, for stop-and-copy (streamed) and for
//! post-copy alike.

use std::fs::File;
use std::io::BufReader;
use std::time::Instant;

use ckpt_runtime::checkpoint::LazyDump;
use ckpt_runtime::lazy::{lazy_ranges, PageSource, PAGE_SIZE};
use ckpt_runtime::lxc::Container;
use ckpt_stream::error::one_line;
use ckpt_stream::format::{MemoryMode, MemoryRange};
use ckpt_stream::{note, Outgoing};

use super::{DumpConfig, TOOL};
use crate::ack;
use crate::stats::{ms, DumpReport};

/// Below this much anonymous memory, CRIU writing it into the images is quicker than the
/// lazy-pages machinery, which serves every small range of every process one by one (measured
/// here: tests/systemd.rs's small systemd container, median downtime of 12 moves 0.99 s streamed
/// against 0.63 s in the images; a busybox container with 256 MiB 0.64-0.74 s against 0.93-0.99 s).
const STREAM_FROM: u64 = 128 << 20;

/// Where the memory goes: after the images, straight from CRIU's page server, whenever the
/// stream goes to ckpt-restore (--ack), the container has [`STREAM_FROM`] or more of it, and the
/// host lets CRIU have its page pipes (the images then hold no second copy of the memory, and
/// sending overlaps the dump); post-copy with --lazy;
/// otherwise (a stream to a file, a snapshot) in the images, where every tool can read it.
pub fn memory_mode(cfg: &DumpConfig, container: &Container) -> MemoryMode {
    if cfg.lazy {
        return MemoryMode::PostCopy;
    }
    let anon = container
        .init_pid()
        .map_or(0, ckpt_runtime::procs::anon_memory_of);
    if cfg.ack.is_none() || cfg.leave_running || cfg.keep.is_some() || anon < STREAM_FROM {
        return MemoryMode::Images;
    }
    match ckpt_runtime::requirements::check_lazy(container) {
        Ok(()) => MemoryMode::Streamed,
        Err(why) => {
            let note_text = format!(
                "{}: CRIU writes the memory into the work dir before it is sent ({})",
                container.name,
                one_line(&why)
            );
            note(cfg.quiet, TOOL, &note_text);
            MemoryMode::Images
        }
    }
}

/// Memory entries of at most this many pages (4 MiB).
const MEMORY_ENTRY_PAGES: u64 = 1024;
/// A seal after at most this many bytes of memory (see [`Sealing`]): the receiver uses pages
/// only once sealed.
const SEAL_EVERY: u64 = 32 << 20;

/// Seals what was sent (a post-copy receiver restores from it), then pulls every lazy page from
/// CRIU into the stream, sealed in runs, and ends CRIU's dump (the tasks stay held). Post-copy,
/// `restored` is the ack channel: the bulk of the memory waits until the receiver runs the
/// container, so that it does not compete with the restore for the CPUs and the link.
pub fn send_memory<W: std::io::Write>(
    stream: &mut Outgoing<W>,
    mut dump: LazyDump,
    images: &std::path::Path,
    report: &mut DumpReport,
    since: Instant,
    restored: Option<(&mut BufReader<File>, &str)>,
) -> anyhow::Result<()> {
    let sealed = stream.seal();
    report.phases_ms.stream = ms(since.elapsed());
    report.phase = "memory".into();
    let t = Instant::now();
    let pulled = sealed.and_then(|_| pull_memory(stream, &mut dump.pages, images, restored));
    let pulled = match pulled {
        Ok(bytes) => dump.finish().map(|()| bytes),
        Err(err) => {
            dump.abandon();
            Err(err)
        }
    };
    report.phases_ms.memory = ms(t.elapsed());
    report.criu_dump = ckpt_runtime::criu::dump_stats(images);
    report.memory_bytes = pulled?;
    Ok(())
}

/// Every lazy page of the dump in `images`, from `pages` into `stream`; returns the bytes sent.
fn pull_memory<W: std::io::Write>(
    stream: &mut Outgoing<W>,
    pages: &mut PageSource,
    images: &std::path::Path,
    mut restored: Option<(&mut BufReader<File>, &str)>,
) -> anyhow::Result<u64> {
    // Small ranges first (stacks, libraries' data, bits of heap: what the restore and the first
    // instructions touch), sealed at once; then the big ones, each in address order as a scan
    // reads it.
    let mut ranges = lazy_ranges(images)?;
    ranges.sort_by_key(|r| (r.pages, r.pid, r.vaddr));
    let mut seals = Sealing::new();
    for range in ranges {
        if range.pages >= MEMORY_ENTRY_PAGES {
            seals.seal(stream)?;
            if let Some((ack, name)) = restored.take() {
                stream.flush()?;
                ack::await_restored(ack, name)?;
            }
        }
        pages.pull(range, MEMORY_ENTRY_PAGES, &mut |piece, data| {
            let size = piece.pages * PAGE_SIZE;
            let at = MemoryRange {
                pid: piece.pid,
                vaddr: piece.vaddr,
            };
            stream.add_memory(at, size, data)?;
            seals.added(stream, size)
        })?;
    }
    Ok(seals.sent)
}

/// When to seal the memory sent: after [`SEAL_EVERY`] bytes or [`SEAL_AFTER`] of time, whichever
/// comes first, so that the receiver waits neither long nor for much.
struct Sealing {
    sent: u64,
    unsealed: u64,
    since: Instant,
}

/// A seal at least this soon after memory that is not sealed yet.
const SEAL_AFTER: std::time::Duration = std::time::Duration::from_millis(20);

impl Sealing {
    fn new() -> Sealing {
        Sealing {
            sent: 0,
            unsealed: 0,
            since: Instant::now(),
        }
    }

    fn added<W: std::io::Write>(
        &mut self,
        stream: &mut Outgoing<W>,
        size: u64,
    ) -> anyhow::Result<()> {
        self.sent += size;
        self.unsealed += size;
        if self.unsealed >= SEAL_EVERY || self.since.elapsed() >= SEAL_AFTER {
            self.seal(stream)?;
        }
        Ok(())
    }

    /// Seals what was sent since the last seal, if anything.
    fn seal<W: std::io::Write>(&mut self, stream: &mut Outgoing<W>) -> anyhow::Result<()> {
        if self.unsealed > 0 {
            stream.seal()?;
            self.unsealed = 0;
        }
        self.since = Instant::now();
        Ok(())
    }
}
