//! ckpt-restore: reads a stream, checks it completely, installs the container under LXCPATH and
//! restores it running; on any failure LXCPATH is left exactly as it was. Prints one JSON result
//! line on stdout either way (ckpt-dump --ack reads it).

mod lazy;
mod rescue;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use ckpt_runtime::checkpoint;
use ckpt_runtime::criu::{MountMode, RestoreStats};
use ckpt_runtime::lazy::PageStore;
use ckpt_runtime::lxc::{default_lxcpath, Config, Container};
use ckpt_stream::error::one_line;
use ckpt_stream::format::{MemoryMode, RootfsMode};
use ckpt_stream::io::open_input;
use ckpt_stream::{
    note, unpack_into, unpack_memory, verify, Key, Manifest, Progress, StagingDir, StreamReader,
};

use crate::ack::{self, RestoreResult, RestoreTimings, State};
use crate::guard::{journal, Guard};
use crate::stats::{mb_per_s, ms, write_json, RestoreReport};
use rescue::{recovery, stop, RESTORING, UNPACKING};

const TOOL: &str = "ckpt-restore";

#[derive(Debug, Clone)]
pub struct RestoreConfig {
    pub lxcpath: Option<PathBuf>,
    pub stats: Option<PathBuf>,
    /// Verify the stream and say whether it could be restored here; change nothing.
    pub check: bool,
    pub input: Option<PathBuf>,
    /// Key file: refuse any stream without a valid MAC for it (else $CKPT_KEY, else none).
    pub key: Option<PathBuf>,
    /// The user's own CRIU restore options (lines of a CRIU config file).
    pub criu_options: Vec<String>,
    /// How long CRIU's restore may take before it is killed and the restore fails.
    pub timeout: Duration,
    pub quiet: bool,
}

pub fn run(cfg: &RestoreConfig) -> anyhow::Result<()> {
    let start = Instant::now();
    let lxcpath = match &cfg.lxcpath {
        Some(path) => path.clone(),
        None => default_lxcpath()?,
    };
    let mut result = RestoreResult {
        ok: false,
        name: String::new(),
        lxcpath: lxcpath.display().to_string(),
        host: ckpt_runtime::host::uname().host,
        state: State::Stopped,
        error: None,
        timings_ms: RestoreTimings::default(),
    };
    let outcome = restore(cfg, &lxcpath, &mut result, start);
    result.timings_ms.total = ms(start.elapsed());
    match &outcome {
        Ok(_) => result.ok = true,
        Err(err) => result.error = Some(one_line(err)),
    }
    // The result line goes out whatever happened; failing to print it is itself a failure.
    let printed = ack::send_result(&result);
    let (bytes, criu_restore, mount_mode, done) = match outcome {
        Ok(Restored {
            bytes,
            criu_restore,
            mount_mode,
            running,
        }) => (
            bytes,
            criu_restore,
            mount_mode,
            report_running(running, printed),
        ),
        Err(err) => (0, None, None, Err(err)),
    };
    if let Some(path) = &cfg.stats {
        let unpack = Duration::from_millis(result.timings_ms.unpack.max(1));
        let report = RestoreReport {
            result,
            bytes,
            throughput_mb_s: mb_per_s(bytes, unpack),
            criu_restore,
            mount_mode,
            peak_rss_kib: crate::stats::peak_rss_kib(),
            usage: Some(crate::stats::Usage::now()),
        };
        let written = write_json(path, &report);
        return done.and(written);
    }
    done
}

/// Keeps a restored container once its result line is out; removes it again when printing the
/// line failed, since nobody learned that it runs here (the sender resumes its own copy).
fn report_running(running: Option<Running>, printed: anyhow::Result<()>) -> anyhow::Result<()> {
    let Some(running) = running else {
        return printed;
    };
    match printed {
        Ok(()) => running.keep(),
        Err(err) => {
            running.remove();
            Err(err.context(
                "the restored container was removed again, as nobody learned that it runs",
            ))
        }
    }
}

/// What a successful run produced.
struct Restored {
    bytes: u64,
    criu_restore: Option<RestoreStats>,
    /// How CRIU restored the mounts (None with --check).
    mount_mode: Option<MountMode>,
    /// The running container, until its result line is out (None with --check).
    running: Option<Running>,
}

/// A restored container that is not yet reported: its guard removes it if we die now.
struct Running {
    container: Container,
    installed: Installed,
    guard: Guard,
}

impl Running {
    fn keep(self) -> anyhow::Result<()> {
        self.installed.commit();
        self.guard.done()
    }

    fn remove(self) {
        stop(&self.container);
        drop(self.installed);
        let _ = self.guard.done();
    }
}

/// Does the work; returns the stream's byte count, CRIU's restore statistics and the container.
fn restore(
    cfg: &RestoreConfig,
    lxcpath: &Path,
    result: &mut RestoreResult,
    start: Instant,
) -> anyhow::Result<Restored> {
    let progress = Progress::new(TOOL, None, cfg.quiet);
    let input = Box::new(progress.reader(open_input(cfg.input.as_deref())?));
    let key = Key::load(cfg.key.as_deref())?;
    let mut reader = StreamReader::open_from(input, cfg.input.as_deref(), key)?;
    let manifest = reader.manifest.clone();
    result.name = manifest.name.clone();
    ckpt_runtime::compat::check(&manifest)?;
    let container = Container::new(&manifest.name, lxcpath)?;
    refuse_clash(&container)?;

    if cfg.check {
        reader.start_threads();
        let trailer = verify(&mut reader)?;
        progress.finish();
        result.state = State::Checked;
        note(
            cfg.quiet,
            TOOL,
            &format!(
                "{}: stream verified; it can be restored into {}",
                manifest.name,
                lxcpath.display()
            ),
        );
        return Ok(Restored {
            bytes: trailer.bytes,
            criu_restore: None,
            mount_mode: None,
            running: None,
        });
    }

    ckpt_runtime::lxc::create_lxcpath(lxcpath)?;
    ckpt_stream::sweep_stale(lxcpath);
    let staging = StagingDir::new_in(lxcpath)?;
    let recover = recovery(container.clone(), staging.path().to_path_buf());
    let guard = Guard::spawn(journal(&container, TOOL), &[], recover)?;
    reader.start_threads();
    guard.phase(UNPACKING)?;
    let await_copy = manifest.await_copy;
    let mut on_copied = |copied: &ckpt_stream::format::Copied| {
        if await_copy {
            ack::send_copied(copied.entries)?;
        }
        Ok(())
    };
    // Memory after the images goes to a store the restored tasks are fed from; a post-copy
    // stream is restored from its images' seal on, its memory following.
    let memory = manifest.memory;
    let store = Arc::new(PageStore::new());
    let trailer = match memory {
        MemoryMode::Images => unpack_into(&mut reader, staging.path(), &mut on_copied)?,
        _ => unpack_memory(
            &mut reader,
            staging.path(),
            &mut on_copied,
            &mut |at, size, data| lazy::store_entry(&store, at, size, data),
        )?,
    };
    if memory == MemoryMode::Streamed {
        store.complete();
    }
    if memory != MemoryMode::PostCopy {
        progress.finish();
    }
    result.timings_ms.unpack = ms(start.elapsed());
    let verified = Instant::now();

    guard.phase(RESTORING)?;
    let installed = install(&manifest, &container, staging.path())?;
    let images = staging.path().join("images");
    // CRIU runs ckpt-restore itself as its action script, for the cgroup2 directories the
    // images need (see ckpt_runtime::cgroups2).
    let hook = std::env::current_exe().ok();
    let (options, timeout, hook) = (&cfg.criu_options, cfg.timeout, hook.as_deref());
    let restored = match memory {
        MemoryMode::Images => checkpoint::restore(&container, &images, options, timeout, hook)
            .map(|mode| (mode, None)),
        MemoryMode::Streamed | MemoryMode::PostCopy => {
            let memory = match memory {
                MemoryMode::Streamed => lazy::Memory::Arrived(store, trailer.clone()),
                _ => lazy::Memory::Following(Box::new(reader)),
            };
            lazy::restore(&container, &images, memory, options, timeout, hook)
                .map(|(mode, arriving)| (mode, Some(arriving)))
        }
    };
    let (mount_mode, arriving) = match restored {
        Ok(restored) => restored,
        Err(err) => return abandon(&container, installed, guard, err),
    };
    result.timings_ms.restore = ms(verified.elapsed());
    if memory == MemoryMode::PostCopy {
        // The sender holds the bulk of the memory back until now.
        if let Err(err) = ack::send_restored(result.timings_ms.restore) {
            return abandon(&container, installed, guard, err);
        }
    }
    // Post-copy: the container runs; it is ours only once all its memory is in place.
    let trailer = match arriving.map(lazy::Arriving::complete) {
        None => trailer,
        Some(Ok(trailer)) => {
            progress.finish();
            result.timings_ms.memory = ms(start.elapsed());
            trailer
        }
        Some(Err(err)) => {
            progress.finish();
            let err = err.context(format!(
                "{} ran here before all its memory arrived and was ended again",
                container.name
            ));
            return abandon(&container, installed, guard, err);
        }
    };
    result.state = State::Running;
    note(
        cfg.quiet,
        TOOL,
        &format!(
            "{}: running in {} ({} ms after the stream ended)",
            container.name,
            lxcpath.display(),
            result.timings_ms.restore
        ),
    );
    // CRIU's statistics live in the image dir, which goes away with the staging dir.
    let criu_restore = ckpt_runtime::criu::restore_stats(&images);
    Ok(Restored {
        bytes: trailer.bytes,
        criu_restore,
        mount_mode: Some(mount_mode),
        running: Some(Running {
            container,
            installed,
            guard,
        }),
    })
}

/// Ends a container restored here that is not to stay, removes what was installed for it, and
/// fails with `err`.
fn abandon(
    container: &Container,
    installed: Installed,
    guard: Guard,
    err: anyhow::Error,
) -> anyhow::Result<Restored> {
    stop(container);
    drop(installed);
    guard.done()?;
    Err(err)
}

/// A container of that name here would be overwritten or confused with the incoming one.
fn refuse_clash(container: &Container) -> anyhow::Result<()> {
    if container.dir().exists() {
        anyhow::bail!(
            "a container named {} already exists in {}: remove it (lxc-destroy -n {} -P {}) or restore into another -P",
            container.name,
            container.lxcpath.display(),
            container.name,
            container.lxcpath.display()
        );
    }
    Ok(())
}

/// The container dir under LXCPATH while the restore is not yet confirmed; removed on drop.
struct Installed {
    dir: Option<PathBuf>,
}

impl Installed {
    fn commit(mut self) {
        self.dir = None;
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Rewrites the config for this lxcpath and moves container/ (and rootfs/) into place.
fn install(
    manifest: &Manifest,
    container: &Container,
    staging: &Path,
) -> anyhow::Result<Installed> {
    let config_path = staging.join("container/config");
    let mut config = Config::load(&config_path)?;
    config.rewrite_paths(
        Path::new(&manifest.lxcpath).join(&manifest.name).as_path(),
        &container.dir(),
    )?;
    config.rewrite_paths(Path::new(&manifest.lxcpath), &container.lxcpath)?;
    let rootfs = container.dir().join("rootfs");
    if manifest.include.rootfs == RootfsMode::Full {
        config.set("lxc.rootfs.path", &format!("dir:{}", rootfs.display()));
    }
    config.save(&config_path)?;
    let dest = container.dir();
    std::fs::rename(staging.join("container"), &dest).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists | std::io::ErrorKind::DirectoryNotEmpty => {
            anyhow::anyhow!(
                "a container named {} appeared in {} meanwhile",
                container.name,
                container.lxcpath.display()
            )
        }
        _ => anyhow::Error::new(e).context(format!("installing {}", dest.display())),
    })?;
    let installed = Installed { dir: Some(dest) };
    match manifest.include.rootfs {
        RootfsMode::Full => {
            std::fs::rename(staging.join("rootfs"), &rootfs).context("installing the rootfs")?
        }
        RootfsMode::None => {
            let path = container.rootfs_path()?;
            if !path.is_dir() {
                anyhow::bail!("the stream has no rootfs and {} does not exist here: stream it with its rootfs", path.display());
            }
        }
    }
    Ok(installed)
}
