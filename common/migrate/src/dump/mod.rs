//! ckpt-dump: streams a running container: its rootfs while it runs, then the freeze, the rootfs
//! changes and the CRIU images. If the stream cannot be delivered, or the receiver reports failure
//! (--ack), it restores the container here, so it is never lost.

mod live;
mod rescue;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;

use ckpt_runtime::checkpoint;
use ckpt_runtime::lxc::Container;
use ckpt_stream::io::open_output;
use ckpt_stream::{
    close_stream, note, open_stream, summary, Compression, Key, Outgoing, Parts, Progress,
};

use crate::ack;
use crate::guard::{journal, raw, Guard};
use crate::parts::container_parts;
use crate::stats::{mb_per_s, ms, write_json, DumpReport};
use crate::workdir::WorkDir;
use live::RootfsCopy;
use rescue::phase;

const TOOL: &str = "ckpt-dump";

#[derive(Debug, Clone)]
pub struct DumpConfig {
    pub name: String,
    pub lxcpath: Option<PathBuf>,
    /// Keep the container running after the checkpoint (a snapshot) instead of stopping it.
    pub leave_running: bool,
    pub rootfs: bool,
    /// Copy the rootfs while the container runs and send only its changes after the freeze.
    pub precopy: bool,
    pub compression: Compression,
    /// Key file for an authenticated stream (else $CKPT_KEY, else none).
    pub key: Option<PathBuf>,
    pub stats: Option<PathBuf>,
    /// Keep the CRIU images in this dir (new or empty) instead of a private work dir.
    pub keep: Option<PathBuf>,
    /// Wait for ckpt-restore's result line on this file (a fifo, /dev/fd/N) after the stream.
    pub ack: Option<PathBuf>,
    pub output: Option<PathBuf>,
    pub quiet: bool,
}

pub fn run(cfg: &DumpConfig) -> anyhow::Result<()> {
    let start = Instant::now();
    let container = Container::locate(&cfg.name, cfg.lxcpath.as_deref())?;
    if !container.is_running() {
        anyhow::bail!(
            "container {} is not running: ckpt-dump checkpoints a running container \
             (stream a stopped one with ckpt-pack -n {} -P {})",
            container.name,
            container.name,
            container.lxcpath.display()
        );
    }
    ckpt_runtime::fixtty::ensure_checkpointable(&container)?;
    // Everything that can be refused is refused before the container is touched.
    let key = Key::load(cfg.key.as_deref())?;
    let out = open_output(cfg.output.as_deref())?;
    let mut ack = cfg.ack.as_deref().map(ack::open).transpose()?;
    let work = WorkDir::new(&container, cfg.keep.as_deref())?;
    let mut report = DumpReport {
        name: container.name.clone(),
        compression: cfg.compression.to_string(),
        ..Default::default()
    };

    // The guard finishes or undoes this migration if we are killed (spawned while single-threaded,
    // before compression starts its threads).
    let ack_copy = ack.as_ref().map(|a| a.get_ref().try_clone()).transpose()?;
    let keep_fds: Vec<_> = ack_copy.iter().map(raw).collect();
    let recover = rescue::recovery(
        container.clone(),
        work.path().to_path_buf(),
        cfg.keep.is_none(),
        ack_copy,
    );
    let guard = Guard::spawn(journal(&container, TOOL), &keep_fds, recover)?;

    // While the container runs: the manifest, then (live) a first copy of the rootfs.
    let t = Instant::now();
    let progress = Progress::new(TOOL, None, cfg.quiet);
    let (mut manifest, parts) = container_parts(&container, Some(work.path()), cfg.rootfs)?;
    let wire = Progress::hidden();
    let live = parts.rootfs.as_deref().filter(|_| cfg.precopy);
    manifest.await_copy = live.is_some() && ack.is_some();
    let precopied = open_stream(wire.writer(out), &manifest, cfg.compression, key, &progress)
        .and_then(|mut stream| {
            let copy = live
                .map(|rootfs| send_live_copy(&mut stream, rootfs))
                .transpose()?;
            Ok((stream, copy))
        })
        .context("the stream was not delivered")
        .and_then(|precopied| {
            report.phases_ms.precopy = ms(t.elapsed());
            let t = Instant::now();
            if let (true, Some(ack)) = (manifest.await_copy, ack.as_mut()) {
                ack::await_copied(ack, &container.name)?;
            }
            report.phases_ms.receiver_catch_up = ms(t.elapsed());
            Ok(precopied)
        });
    let (mut stream, copy) = match precopied {
        Ok(precopied) => precopied,
        Err(err) => {
            progress.finish();
            guard.done()?;
            return Err(err.context(format!(
                "{} was not frozen and runs on here",
                container.name
            )));
        }
    };
    report.precopy_wire_bytes = wire.bytes();
    let precopy_bytes = stream.bytes();

    let t = Instant::now();
    report.freeze_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    guard.phase(phase::DUMPING)?;
    if let Err(err) = checkpoint::dump(&container, work.path(), !cfg.leave_running) {
        progress.finish();
        rescue::thaw(&container);
        guard.done()?;
        return Err(err);
    }
    guard.phase(if cfg.leave_running {
        phase::SNAPSHOT
    } else {
        phase::STREAMING
    })?;
    report.phases_ms.checkpoint = ms(t.elapsed());
    report.criu_dump = ckpt_runtime::criu::dump_stats(work.path());
    note(
        cfg.quiet,
        TOOL,
        &format!(
            "{}: checkpointed in {} ms",
            container.name, report.phases_ms.checkpoint
        ),
    );

    // From here on, unless --leave-running, the container is stopped and only its images exist.
    let t = Instant::now();
    let streamed =
        send_after_freeze(&mut stream, &parts, copy.as_ref(), &mut report).and_then(|()| {
            let frozen_bytes = stream.bytes() - precopy_bytes;
            close_stream(stream).map(|trailer| (trailer, frozen_bytes))
        });
    progress.finish();
    report.phases_ms.stream = ms(t.elapsed());
    release_stdout();
    let (trailer, frozen_bytes) = match streamed {
        Ok(streamed) => streamed,
        Err(err) => {
            return rollback(
                cfg,
                &container,
                work,
                guard,
                err.context("the stream was not delivered"),
            )
        }
    };
    if !cfg.leave_running {
        guard.phase(phase::SENT)?;
    }
    report.bytes = trailer.bytes;
    report.wire_bytes = wire.bytes();
    report.frozen_bytes = frozen_bytes;
    report.frozen_wire_bytes = report.wire_bytes - report.precopy_wire_bytes;
    report.throughput_mb_s = mb_per_s(frozen_bytes, t.elapsed());
    note(
        cfg.quiet,
        TOOL,
        &format!(
            "{}, streamed in {} ms",
            summary(&manifest, &trailer),
            report.phases_ms.stream
        ),
    );

    report.outcome = match ack {
        None if cfg.leave_running => "snapshot: container still running here".to_string(),
        None => {
            let hint = format!(
                "{} is stopped here; once it runs on the destination remove it with: \
                 lxc-destroy -n {} -P {}",
                container.name,
                container.name,
                container.lxcpath.display()
            );
            note(cfg.quiet, TOOL, &hint);
            "streamed: container stopped here".to_string()
        }
        Some(ack) => {
            let t = Instant::now();
            let result = ack::read_result(ack, &container.name);
            report.phases_ms.ack_wait = ms(t.elapsed());
            match result {
                Ok(result) => {
                    guard.phase(phase::ACKED)?;
                    report.downtime_ms = Some(
                        report.phases_ms.checkpoint
                            + report.phases_ms.stream
                            + result.timings_ms.restore,
                    );
                    report.restore = Some(result.clone());
                    give_up_source(cfg, &container)?;
                    format!("migrated: running on {} in {}", result.host, result.lxcpath)
                }
                Err(err) => return rollback(cfg, &container, work, guard, err),
            }
        }
    };
    guard.done()?;
    report.phases_ms.total = ms(start.elapsed());
    if let Some(path) = &cfg.stats {
        report.peak_rss_kib = crate::stats::peak_rss_kib();
        report.usage = Some(crate::stats::Usage::now());
        write_json(path, &report)?;
    }
    work.finish()?;
    Ok(())
}

/// Streams the rootfs of the running container and ends the live copy; flushes, so that all of it
/// is on its way before the freeze.
fn send_live_copy<W: std::io::Write>(
    stream: &mut Outgoing<W>,
    rootfs: &std::path::Path,
) -> anyhow::Result<RootfsCopy> {
    let copy = RootfsCopy::send(stream, rootfs)?;
    stream.end_live_copy(&copy.summary())?;
    stream.flush()?;
    Ok(copy)
}

/// After the freeze: the container dir, then the rootfs (its changes since `copy`, or all of it),
/// then the CRIU images.
fn send_after_freeze<W: std::io::Write>(
    stream: &mut Outgoing<W>,
    parts: &Parts,
    copy: Option<&RootfsCopy>,
    report: &mut DumpReport,
) -> anyhow::Result<()> {
    let Some(copy) = copy else {
        // add_parts' order, with the rootfs read as the live copy reads it (leases respected).
        stream.add_tree("container", &parts.container, &parts.skipped())?;
        if let Some(rootfs) = &parts.rootfs {
            live::send_rootfs(stream, rootfs)?;
        }
        if let Some(images) = &parts.images {
            stream.add_tree("images", images, &[])?;
        }
        return Ok(());
    };
    let changes = copy.changes()?;
    stream.add_tree("container", &parts.container, &parts.skipped())?;
    changes.send(stream, copy)?;
    report.rootfs_changes = Some(changes.summary());
    if let Some(images) = &parts.images {
        stream.add_tree("images", images, &[])?;
    }
    Ok(())
}

/// The destination runs the container: remove the stopped source copy so its name is free.
fn give_up_source(cfg: &DumpConfig, container: &Container) -> anyhow::Result<()> {
    if cfg.leave_running {
        return Ok(());
    }
    let name = &container.name;
    match rescue::give_up_source(container) {
        Ok(_) => note(
            cfg.quiet,
            TOOL,
            &format!("{name}: migrated; the stopped source copy was removed"),
        ),
        Err(e) => note(
            false,
            TOOL,
            &format!(
                "warning: {name} runs on the destination, \
                 but removing the stopped copy here failed: {e}"
            ),
        ),
    }
    Ok(())
}

/// The migration failed after the checkpoint: restore the container here, then report `err`.
fn rollback(
    cfg: &DumpConfig,
    container: &Container,
    work: WorkDir,
    guard: Guard,
    err: anyhow::Error,
) -> anyhow::Result<()> {
    if cfg.leave_running {
        guard.done()?;
        work.finish()?;
        return Err(err.context(format!("{} kept running here", container.name)));
    }
    note(
        cfg.quiet,
        TOOL,
        &format!("{}: migration failed, restoring it here", container.name),
    );
    let restored = checkpoint::restore(container, work.path());
    guard.done()?;
    match restored {
        Ok(()) => {
            work.finish()?;
            Err(err.context(format!(
                "{} was restored here and runs again",
                container.name
            )))
        }
        Err(restore_err) => {
            let images = work.keep_for_rescue();
            Err(err.context(format!(
                "restoring {} here failed too ({restore_err:#}); \
                 its images are kept: restore it with {}",
                container.name,
                rescue::restore_hint(container, &images)
            )))
        }
    }
}

/// Points fd 1 at /dev/null so the receiver sees the end of the stream while we wait for its ack
/// or restore locally (our own copy of stdout is already closed).
fn release_stdout() {
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = rustix::stdio::dup2_stdout(&null);
    }
}
