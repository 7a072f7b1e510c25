//! ckpt-restore of a stream whose memory follows the images (see
//! [`ckpt_stream::format::MemoryMode`]): the restored tasks get that memory from CRIU's
//! lazy-pages daemon, which ckpt-restore answers from the pages it received, each only once a
//! seal (or the trailer) vouched for it. Streamed: all of it arrived before the restore.
//! Post-copy: the restore starts at the images' seal and the container runs while it arrives.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;

use ckpt_runtime::checkpoint::{self, Failed};
use ckpt_runtime::criu::MountMode;
use ckpt_runtime::lazy::{serve, LazyDaemon, PageStore};
use ckpt_runtime::lxc::Container;
use ckpt_stream::error::{bad_stream, one_line};
use ckpt_stream::format::MemoryRange;
use ckpt_stream::{Item, StreamReader, Trailer};

/// How long the lazy-pages daemon may take to end once every page reached it.
const DAEMON_END_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the memory comes from.
pub enum Memory {
    /// All of it is in the store, the stream verified to its trailer.
    Arrived(Arc<PageStore>, Trailer),
    /// It follows on the stream, after the images' seal (post-copy).
    Following(Box<StreamReader>),
}

/// A restore whose memory is still being handed over: the container runs.
pub struct Arriving {
    receiver: Received,
    server: JoinHandle<anyhow::Result<()>>,
    daemon: LazyDaemon,
    store: Arc<PageStore>,
}

enum Received {
    Done(Trailer),
    Reading(JoinHandle<anyhow::Result<Trailer>>),
}

/// Stores a memory entry of the stream being unpacked (all of the memory arrives first).
pub fn store_entry(
    store: &PageStore,
    at: MemoryRange,
    size: u64,
    data: &mut dyn Read,
) -> anyhow::Result<()> {
    let mut pages = vec![0u8; size as usize];
    data.read_exact(&mut pages)?;
    store.add(at.pid, at.vaddr, pages);
    Ok(())
}

/// Restores `container` from `images` with its lazy memory from `memory`. Returns once the
/// container runs; [`Arriving::complete`] waits until all its memory is in place. Memory that
/// arrived in full allows a second attempt in the other mount mode; post-copy has one.
pub fn restore(
    container: &Container,
    images: &Path,
    memory: Memory,
    extra: &[String],
    timeout: Duration,
    hook: Option<&Path>,
) -> anyhow::Result<(MountMode, Arriving)> {
    let (store, receiver) = match memory {
        Memory::Arrived(store, trailer) => (store, Received::Done(trailer)),
        Memory::Following(reader) => {
            let store = Arc::new(PageStore::new());
            let feeding = Arc::clone(&store);
            let thread = std::thread::Builder::new()
                .name("ckpt-memory".into())
                .spawn(move || receive(*reader, &feeding))
                .context("starting the memory receiver")?;
            (store, Received::Reading(thread))
        }
    };
    let mut modes = checkpoint::restore_modes(images, extra);
    if matches!(receiver, Received::Reading(_)) {
        modes.truncate(1);
    }
    let mut failed = None;
    for (attempt, mode) in modes.iter().enumerate() {
        if attempt > 0 {
            let _ = container.lxc("lxc-stop", &["-k"]);
        }
        let (daemon, server) = match start_daemon(images, &store) {
            Ok(started) => started,
            Err(err) => {
                failed = Some(err);
                break;
            }
        };
        let restored = watch_memory(&store, images, || {
            checkpoint::restore_lazy(container, images, extra, timeout, hook, *mode)
        });
        match restored {
            Ok(()) => {
                let arriving = Arriving {
                    receiver,
                    server,
                    daemon,
                    store,
                };
                return Ok((*mode, arriving));
            }
            Err(Failed { error, mounts }) => {
                drop(daemon);
                let _ = server.join();
                failed = Some(error);
                if !mounts {
                    break;
                }
            }
        }
    }
    // A memory receiver still reading is left to end with the stream: nobody waits for it.
    store.fail("the restore failed".into());
    let err = failed.unwrap_or_else(|| anyhow::anyhow!("no restore was tried"));
    Err(match store.failure() {
        Some(why) if why.starts_with("the memory") => err.context(why),
        _ => err,
    })
}

/// Starts CRIU's lazy-pages daemon on `images` and the thread that answers it from `store`.
fn start_daemon(
    images: &Path,
    store: &Arc<PageStore>,
) -> anyhow::Result<(LazyDaemon, JoinHandle<anyhow::Result<()>>)> {
    let (ours, daemons) = UnixStream::pair().context("creating a socket pair")?;
    let daemon = LazyDaemon::start(images, daemons.into())?;
    let store = Arc::clone(store);
    let server = std::thread::Builder::new()
        .name("ckpt-pages".into())
        .spawn(move || serve(ours, &store))
        .context("starting the page server")?;
    Ok((daemon, server))
}

/// Runs `restore`; if the memory stops coming meanwhile (the restore itself touches lazy pages),
/// kills CRIU's restore rather than let it wait for pages that will not come.
fn watch_memory<T>(store: &PageStore, images: &Path, restore: impl FnOnce() -> T) -> T {
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if store.failed() {
                    checkpoint::kill_criu(images);
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let result = restore();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        result
    })
}

impl Arriving {
    /// Waits until every page is in the restored tasks and the stream's trailer is verified;
    /// returns the trailer. On failure the container may have run on incomplete memory: the
    /// caller ends it.
    pub fn complete(self) -> anyhow::Result<Trailer> {
        let served = join(self.server, "page server");
        if let Err(err) = &served {
            self.store.fail(one_line(err));
        }
        let ended = self.daemon.wait(DAEMON_END_TIMEOUT);
        // The stream's own error says more than the page server's that follows from it.
        let trailer = match self.receiver {
            Received::Done(trailer) => trailer,
            Received::Reading(thread) => join(thread, "memory receiver")?,
        };
        served?;
        ended?;
        Ok(trailer)
    }
}

fn join<T>(thread: JoinHandle<anyhow::Result<T>>, what: &str) -> anyhow::Result<T> {
    thread
        .join()
        .unwrap_or_else(|_| Err(anyhow::anyhow!("internal: the {what} panicked")))
}

/// Reads the memory entries into `store` up to the trailer; a failure fails the store too, so
/// that no page request waits for what will not come.
fn receive(mut reader: StreamReader, store: &PageStore) -> anyhow::Result<Trailer> {
    let received = receive_into(&mut reader, store);
    match &received {
        Ok(_) => store.complete(),
        Err(err) => store.fail(format!("the memory did not arrive: {}", one_line(err))),
    }
    received.context("the memory did not arrive")
}

fn receive_into(reader: &mut StreamReader, store: &PageStore) -> anyhow::Result<Trailer> {
    loop {
        match reader.next_item()? {
            Item::Memory { range, size } => store_entry(store, range, size, &mut reader.data())?,
            Item::Seal(_) => store.seal(),
            Item::End(trailer) => return Ok(trailer),
            Item::Entry { entry, .. } => {
                return Err(bad_stream(format!(
                    "{} comes after the images' seal, among the memory",
                    String::from_utf8_lossy(&entry.path)
                )))
            }
            Item::Copied(_) => return Err(bad_stream("copied.json comes among the memory")),
        }
    }
}
