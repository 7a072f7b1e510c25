//! ckpt-dump: streams a running container: its rootfs while it runs, then the freeze, the rootfs
//! changes and the CRIU images. From the freeze until the destination runs the container (or,
//! without --ack, until the stream is delivered) the source copy is held, frozen and cut from the
//! network; any failure resumes it where it was, so it is never lost, and no CRIU restore is
//! involved.

mod live;
mod memory;
mod rescue;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;

use ckpt_runtime::freezer::{self, Freezer};
use ckpt_runtime::lxc::Container;
use ckpt_runtime::{checkpoint, hold};
use ckpt_stream::error::one_line;
use ckpt_stream::format::MemoryMode;
use ckpt_stream::io::open_output;
use ckpt_stream::{
    close_stream, note, open_stream, summary, Compression, Key, Outgoing, Parts, Progress,
};

use crate::ack;
use crate::guard::{journal, raw, Guard};
use crate::parts::container_parts;
use crate::stats::{mb_per_s, ms, write_json, DumpReport, Failure};
use crate::workdir::WorkDir;
use live::RootfsCopy;
use memory::{memory_mode, send_memory};
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
    /// Post-copy: the memory follows the images while the destination already runs the
    /// container (with `ack`, not with `leave_running`).
    pub lazy: bool,
    /// The user's own CRIU dump options (lines of a CRIU config file).
    pub criu_options: Vec<String>,
    pub output: Option<PathBuf>,
    pub quiet: bool,
}

pub fn run(cfg: &DumpConfig) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut report = DumpReport {
        name: cfg.name.clone(),
        compression: cfg.compression.to_string(),
        ..Default::default()
    };
    let mut ack_opened = false;
    let outcome = migrate(cfg, &mut report, &mut ack_opened);
    if let (Err(_), Some(path), false) = (&outcome, &cfg.ack, ack_opened) {
        // The other end of the --ack fifo (the shell's `> fifo`) waits for a reader: release it.
        ack::release(path);
    }
    let Some(path) = &cfg.stats else {
        return outcome;
    };
    report.phases_ms.total = ms(start.elapsed());
    report.peak_rss_kib = crate::stats::peak_rss_kib();
    report.usage = Some(crate::stats::Usage::now());
    if let Err(err) = &outcome {
        report.failure = Some(Failure {
            phase: report.phase.clone(),
            error: one_line(err),
        });
    }
    let written = write_json(path, &report);
    outcome.and(written)
}

/// The whole migration, recording in `report` what it did and the phase it is in.
fn migrate(cfg: &DumpConfig, report: &mut DumpReport, ack_opened: &mut bool) -> anyhow::Result<()> {
    report.phase = "checks".into();
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
    // Everything that can be refused is refused before the container is touched.
    ckpt_runtime::fixtty::ensure_checkpointable(&container)?;
    ckpt_runtime::requirements::check_dump(&container)?;
    if cfg.lazy {
        if cfg.ack.is_none() || cfg.leave_running {
            return Err(ckpt_stream::error::usage(
                "--lazy needs --ack (the source is ended only once all memory arrived) and \
                 cannot take --leave-running",
            ));
        }
        ckpt_runtime::requirements::check_lazy(&container)?;
    }
    let memory = memory_mode(cfg, &container);
    report.memory = memory;
    let freezer = Freezer::of(&container)
        .with_context(|| format!("cannot find the freezer cgroup of {}", container.name))?;
    let hold_script = match cfg.leave_running {
        true => None,
        false => Some(std::env::current_exe().context("finding ckpt-dump's own path")?),
    };
    let options = criu_options(&container, cfg, report);
    let key = Key::load(cfg.key.as_deref())?;
    let out = open_output(cfg.output.as_deref())?;
    let mut ack = cfg.ack.as_deref().map(ack::open).transpose()?;
    *ack_opened = true;
    let work = WorkDir::new(&container, cfg.keep.as_deref())?;

    // The guard finishes or undoes this migration if we are killed (it refuses to fork unless this
    // process has one thread: compression and hashing start theirs later).
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
    report.phase = "precopy".into();
    let t = Instant::now();
    let progress = Progress::new(TOOL, None, cfg.quiet);
    let (mut manifest, parts) = container_parts(&container, Some(work.path()), cfg.rootfs)?;
    let wire = Progress::hidden();
    let live = parts.rootfs.as_deref().filter(|_| cfg.precopy);
    manifest.await_copy = live.is_some() && ack.is_some();
    manifest.memory = memory;
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

    // The freeze: from here the container is held (or, for a snapshot, thawed right after).
    report.phase = "checkpoint".into();
    let t = Instant::now();
    report.freeze_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    guard.phase(phase::DUMPING)?;
    // Where CRIU's post-dump action says a lazy dump's images are written.
    let mark_dir = tempfile::tempdir()?;
    let mark = mark_dir.path().join("post-dump");
    let dumped = dump_held(&container, &freezer, work.path(), report, || {
        match (!memory.in_images(), hold_script.as_deref()) {
            (true, Some(script)) => {
                let _ = std::fs::remove_file(&mark);
                checkpoint::dump_lazy(&container, work.path(), script, &options, &mark).map(Some)
            }
            (_, script) => {
                checkpoint::dump(&container, work.path(), script, &options).map(|()| None)
            }
        }
    });
    let lazy = match dumped {
        Ok(lazy) => lazy,
        Err(err) => {
            progress.finish();
            let resumed = hold::resume(&container);
            guard.done()?;
            return Err(match resumed {
                Ok(()) => err.context(format!("{} was resumed and runs on here", container.name)),
                Err(e) => err.context(format!("resuming {} failed too: {e:#}", container.name)),
            });
        }
    };
    guard.phase(if cfg.leave_running {
        phase::SNAPSHOT
    } else {
        phase::STREAMING
    })?;
    report.phases_ms.checkpoint = ms(t.elapsed());
    if lazy.is_none() {
        report.criu_dump = ckpt_runtime::criu::dump_stats(work.path());
    }
    if let Err(e) = ckpt_runtime::cgroups2::record(&container, work.path()) {
        note(false, TOOL, &format!("warning: {}: {e:#}", container.name));
    }
    note(
        cfg.quiet,
        TOOL,
        &format!(
            "{}: checkpointed in {} ms",
            container.name, report.phases_ms.checkpoint
        ),
    );

    // Unless --leave-running, the container is held: frozen, its network cut, until the end. A
    // snapshot stays frozen until its rootfs is sent, so that the rootfs in the stream is the one
    // the memory image saw.
    report.phase = "stream".into();
    let t = Instant::now();
    let rootfs_sent = || {
        if cfg.leave_running {
            freezer::thaw(&container);
        }
    };
    let streamed = send_after_freeze(&mut stream, &parts, copy.as_ref(), report, rootfs_sent)
        .and_then(|()| match lazy {
            Some(dump) => {
                let post_copy = memory == MemoryMode::PostCopy;
                let restored = ack
                    .as_mut()
                    .filter(|_| post_copy)
                    .map(|a| (a, &*container.name));
                send_memory(&mut stream, dump, work.path(), report, t, restored)
            }
            None => Ok(()),
        })
        .and_then(|()| {
            let frozen_bytes = stream.bytes() - precopy_bytes;
            close_stream(stream).map(|trailer| (trailer, frozen_bytes))
        });
    progress.finish();
    if memory != MemoryMode::PostCopy {
        report.phases_ms.stream = ms(t.elapsed());
    }
    release_stdout();
    let (trailer, frozen_bytes) = match streamed {
        Ok(streamed) => streamed,
        Err(err) => {
            let err = err.context("the stream was not delivered");
            // Post-copy: the destination may run the container already. It ends its copy when
            // the stream breaks off; resuming ours before it said so would run two. Otherwise the
            // receiver's word, if it comes at once, says why better than a broken pipe.
            let ran = memory == MemoryMode::PostCopy && report.phase == "memory";
            let wait = (!ran).then_some(ack::REASON_GRACE);
            let heard = ack.and_then(|ack| ack::read_result_within(ack, &container.name, wait));
            let err = match heard {
                Some(heard) => match heard {
                    // It verified a whole stream (our error came after the last byte): the
                    // container is there, so ours must go.
                    Ok(result) => {
                        end_source(cfg, &container, true)?;
                        guard.done()?;
                        work.finish()?;
                        return Err(err.context(format!(
                            "yet {} runs on {}, so the source copy was removed",
                            container.name, result.host
                        )));
                    }
                    Err(heard) => err.context(format!("{heard:#}")),
                },
                None => err,
            };
            return rollback(cfg, &container, work, guard, err);
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

    report.phase = "ack".into();
    report.outcome = match ack {
        None if cfg.leave_running => "snapshot: container still running here".to_string(),
        None => {
            // Delivered: the held copy is ended, as the stream now stands for it.
            end_source(cfg, &container, false)?;
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
                    let t = Instant::now();
                    end_source(cfg, &container, true)?;
                    report.phases_ms.end_source = ms(t.elapsed());
                    format!("migrated: running on {} in {}", result.host, result.lxcpath)
                }
                Err(err) => return rollback(cfg, &container, work, guard, err),
            }
        }
    };
    report.phase = "done".into();
    guard.done()?;
    work.finish()?;
    Ok(())
}

/// CRIU dump options: what this container needs (say so unless quiet) and the user's own.
fn criu_options(container: &Container, cfg: &DumpConfig, report: &mut DumpReport) -> Vec<String> {
    let mountinfo = container
        .init_pid()
        .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).ok())
        .unwrap_or_default();
    let mut options = Vec::new();
    for (option, why) in ckpt_runtime::criu::needed_dump_options(&mountinfo) {
        note(
            cfg.quiet,
            TOOL,
            &format!("{}: CRIU option {option:?}: {why}", container.name),
        );
        options.push(option.to_string());
    }
    options.extend(cfg.criu_options.iter().cloned());
    report.criu_options = options.clone();
    options
}

/// How many times a dump that failed on a passing condition is tried.
const DUMP_ATTEMPTS: u32 = 3;

/// Freezes the container and dumps it with `dump` (into `images`). A dump that failed on a
/// passing condition (see [`ckpt_runtime::criu::is_transient_dump_error`]) leaves the container
/// running: it is resumed, the work dir emptied, and the dump tried again, [`DUMP_ATTEMPTS`] times
/// in all. On failure the container is frozen still: the caller resumes it.
fn dump_held<T>(
    container: &Container,
    freezer: &Freezer,
    images: &std::path::Path,
    report: &mut DumpReport,
    mut dump: impl FnMut() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let mut attempt = 1;
    loop {
        let dumped = freezer.freeze().and_then(|()| dump());
        let err = match dumped {
            Ok(done) => return Ok(done),
            Err(err) => err,
        };
        let transient = ckpt_runtime::criu::is_transient_dump_error(&format!("{err:#}"));
        if !transient || attempt == DUMP_ATTEMPTS {
            return Err(err);
        }
        hold::resume(container)?;
        empty_dir(images)?;
        report.dump_retries += 1;
        attempt += 1;
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// Removes everything inside `dir`.
fn empty_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        match path.is_dir() {
            true => std::fs::remove_dir_all(&path)?,
            false => std::fs::remove_file(&path)?,
        }
    }
    Ok(())
}

/// For a command line that could not be parsed: releases the writer of the `--ack FILE` fifo it
/// names, if any (see [`ack::release`]).
pub fn release_ack_in(args: impl Iterator<Item = std::ffi::OsString>) {
    let args: Vec<std::ffi::OsString> = args.collect();
    for (i, arg) in args.iter().enumerate() {
        let path = match arg.to_str() {
            Some("--ack") => args.get(i + 1).map(PathBuf::from),
            Some(a) => a.strip_prefix("--ack=").map(PathBuf::from),
            None => None,
        };
        if let Some(path) = path {
            ack::release(&path);
        }
    }
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
    rootfs_sent: impl FnOnce(),
) -> anyhow::Result<()> {
    stream.add_tree("container", &parts.container, &parts.skipped())?;
    match (copy, &parts.rootfs) {
        (Some(copy), _) => {
            let changes = copy.changes()?;
            changes.send(stream, copy)?;
            report.rootfs_changes = Some(changes.summary());
        }
        // Read as the live copy reads it (leases respected).
        (None, Some(rootfs)) => live::send_rootfs(stream, rootfs)?,
        (None, None) => {}
    }
    rootfs_sent();
    if let Some(images) = &parts.images {
        stream.add_tree("images", images, &[])?;
    }
    Ok(())
}

/// The destination has the container: end the held source copy, and with `destroy` (--ack: the
/// destination confirmed it runs) remove it so its name is free.
fn end_source(cfg: &DumpConfig, container: &Container, destroy: bool) -> anyhow::Result<()> {
    if cfg.leave_running {
        return Ok(());
    }
    let name = &container.name;
    let ended = match destroy {
        true => rescue::give_up_source(container),
        false => hold::end(container),
    };
    match ended {
        Ok(()) if destroy => note(
            cfg.quiet,
            TOOL,
            &format!("{name}: migrated; the source copy was removed"),
        ),
        Ok(()) => {}
        Err(e) => note(
            false,
            TOOL,
            &format!(
                "warning: {name} is on the destination, \
                 but ending the source copy here failed: {e:#}"
            ),
        ),
    }
    Ok(())
}

/// The migration failed after the freeze: resume the held container here, then report `err`.
fn rollback(
    cfg: &DumpConfig,
    container: &Container,
    work: WorkDir,
    guard: Guard,
    err: anyhow::Error,
) -> anyhow::Result<()> {
    if cfg.leave_running {
        freezer::thaw(container);
        guard.done()?;
        work.finish()?;
        return Err(err.context(format!("{} kept running here", container.name)));
    }
    note(
        cfg.quiet,
        TOOL,
        &format!("{}: migration failed, resuming it here", container.name),
    );
    let resumed = hold::resume(container);
    guard.done()?;
    match resumed {
        Ok(()) => {
            work.finish()?;
            Err(err.context(format!(
                "{} was resumed here and runs again",
                container.name
            )))
        }
        Err(resume_err) => {
            let images = work.keep_for_rescue();
            Err(err.context(format!(
                "resuming {} here failed too ({resume_err:#}); \
                 its images are kept: restore it with {}",
                container.name,
                rescue::restore_hint(container, &images)
            )))
        }
    }
}

/// Points fd 1 at /dev/null so the receiver sees the end of the stream while we wait for its ack
/// (our own copy of stdout is already closed).
fn release_stdout() {
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = rustix::stdio::dup2_stdout(&null);
    }
}
