//! ckpt-restore of a post-copy stream: the container is restored from the images as soon as
//! their seal is verified, while its memory still arrives; CRIU's lazy-pages daemon feeds the
//! restored tasks from the pages received so far, each used only once a seal vouched for it.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;

use ckpt_runtime::checkpoint;
use ckpt_runtime::criu::MountMode;
use ckpt_runtime::lazy::{serve, LazyDaemon, PageStore};
use ckpt_runtime::lxc::Container;
use ckpt_stream::error::{bad_stream, one_line};
use ckpt_stream::{Item, StreamReader, Trailer};

/// How long the lazy-pages daemon may take to end once every page reached it.
const DAEMON_END_TIMEOUT: Duration = Duration::from_secs(30);

/// A lazy restore under way: the container runs, its memory still arriving.
pub struct Arriving {
    receiver: JoinHandle<anyhow::Result<Trailer>>,
    server: JoinHandle<anyhow::Result<()>>,
    daemon: LazyDaemon,
    store: Arc<PageStore>,
}

/// Restores `container` from `images` with its memory read from `reader` (positioned after the
/// images' seal). Returns once the container runs; [`Arriving::complete`] waits for its memory.
pub fn restore(
    container: &Container,
    images: &Path,
    reader: StreamReader,
    extra: &[String],
    timeout: Duration,
    hook: Option<&Path>,
) -> anyhow::Result<(MountMode, Arriving)> {
    let store = Arc::new(PageStore::new());
    let receiver = {
        let store = Arc::clone(&store);
        std::thread::Builder::new()
            .name("ckpt-memory".into())
            .spawn(move || receive(reader, &store))
            .context("starting the memory receiver")?
    };
    let started = UnixStream::pair()
        .context("creating a socket pair")
        .and_then(|(ours, daemons)| {
            let daemon = LazyDaemon::start(images, daemons.into())?;
            let store = Arc::clone(&store);
            let server = std::thread::Builder::new()
                .name("ckpt-pages".into())
                .spawn(move || serve(ours, &store))
                .context("starting the page server")?;
            Ok((daemon, server))
        });
    let (daemon, server) = match started {
        Ok(started) => started,
        Err(err) => {
            store.fail("the restore did not start".into());
            return Err(err);
        }
    };
    let arriving = Arriving {
        receiver,
        server,
        daemon,
        store,
    };
    let restored = watch_memory(&arriving.store, images, || {
        checkpoint::restore_lazy(container, images, extra, timeout, hook)
    });
    match restored {
        Ok(mode) => Ok((mode, arriving)),
        Err(err) => {
            arriving.store.fail("the restore failed".into());
            match arriving.store.failure() {
                Some(why) if why.starts_with("the memory") => Err(err.context(why)),
                _ => Err(err),
            }
        }
    }
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
        let trailer = join(self.receiver, "memory receiver")?;
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
            Item::Memory { range, size } => {
                let mut pages = vec![0u8; size as usize];
                reader.data().read_exact(&mut pages)?;
                store.add(range.pid, range.vaddr, pages);
            }
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
