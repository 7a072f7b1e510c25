//! The destination's pages in transit: filled from the stream as they arrive, usable once a seal
//! vouched for them, handed to CRIU's lazy-pages daemon as often as it asks, and held until the
//! store is dropped (the daemon asks again for a page a process forked off before it arrived,
//! and a failed restore attempt may be tried again).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Condvar, Mutex};

use super::PAGE_SIZE;

/// Pages by process and address, shared by the thread that reads the stream and the one that
/// answers the lazy-pages daemon.
#[derive(Default)]
pub struct PageStore {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// Runs of pages by pid, then start address.
    runs: HashMap<u32, BTreeMap<u64, Run>>,
    /// Runs added since the last seal: not usable yet.
    unsealed: Vec<(u32, u64)>,
    /// Every page arrived and was vouched for.
    complete: bool,
    /// Why no more pages will come.
    failed: Option<String>,
}

struct Run {
    data: Arc<Vec<u8>>,
    sealed: bool,
}

/// Pages handed over: `len` bytes of `data` from `at`.
pub struct Pages {
    pub data: Arc<Vec<u8>>,
    pub at: usize,
    pub len: usize,
}

impl Pages {
    pub fn bytes(&self) -> &[u8] {
        &self.data[self.at..self.at + self.len]
    }
}

impl PageStore {
    pub fn new() -> PageStore {
        PageStore::default()
    }

    /// A run of whole pages arrived (not usable before [`PageStore::seal`]).
    pub fn add(&self, pid: u32, vaddr: u64, data: Vec<u8>) {
        let mut state = self.lock();
        let run = Run {
            data: Arc::new(data),
            sealed: false,
        };
        state.runs.entry(pid).or_default().insert(vaddr, run);
        state.unsealed.push((pid, vaddr));
    }

    /// Every run added so far is vouched for.
    pub fn seal(&self) {
        let mut state = self.lock();
        for (pid, vaddr) in std::mem::take(&mut state.unsealed) {
            if let Some(run) = state.runs.get_mut(&pid).and_then(|r| r.get_mut(&vaddr)) {
                run.sealed = true;
            }
        }
        drop(state);
        self.changed.notify_all();
    }

    /// Every page arrived and is vouched for (the stream's trailer checked).
    pub fn complete(&self) {
        self.seal();
        self.lock().complete = true;
        self.changed.notify_all();
    }

    /// No more pages will come: whoever waits for one fails with `why`.
    pub fn fail(&self, why: String) {
        self.lock().failed.get_or_insert(why);
        self.changed.notify_all();
    }

    /// Whether [`PageStore::fail`] was called.
    pub fn failed(&self) -> bool {
        self.lock().failed.is_some()
    }

    /// Why it failed, if it did.
    pub fn failure(&self) -> Option<String> {
        self.lock().failed.clone()
    }

    /// Waits for up to `pages` pages of `pid` at `vaddr` (fewer where a run ends), sealed.
    pub fn take(&self, pid: u32, vaddr: u64, pages: u64) -> anyhow::Result<Pages> {
        let mut state = self.lock();
        loop {
            if let Some(pages) = state.sealed(pid, vaddr, pages) {
                return Ok(pages);
            }
            if let Some(why) = &state.failed {
                anyhow::bail!("{why}");
            }
            if state.complete {
                anyhow::bail!(
                    "CRIU asked for pages the stream does not hold (pid {pid} at {vaddr:#x})"
                );
            }
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    fn sealed(&self, pid: u32, vaddr: u64, pages: u64) -> Option<Pages> {
        let (&start, run) = self.runs.get(&pid)?.range(..=vaddr).next_back()?;
        let at = vaddr - start;
        let size = run.data.len() as u64;
        if at >= size || !run.sealed {
            return None;
        }
        Some(Pages {
            data: Arc::clone(&run.data),
            at: at as usize,
            len: (size - at).min(pages * PAGE_SIZE) as usize,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pages(n: u64, byte: u8) -> Vec<u8> {
        vec![byte; (n * PAGE_SIZE) as usize]
    }

    #[test]
    fn pages_are_handed_over_once_sealed_and_as_often_as_asked() {
        let store = Arc::new(PageStore::new());
        store.add(7, 0x10000, pages(4, 1));
        let waiter = {
            let store = Arc::clone(&store);
            std::thread::spawn(move || store.take(7, 0x11000, 8).map(|p| (p.len, p.bytes()[0])))
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!waiter.is_finished(), "handed over before the seal");
        store.seal();
        assert_eq!(waiter.join().unwrap().unwrap(), (3 * PAGE_SIZE as usize, 1));
        assert_eq!(store.take(7, 0x10000, 1).unwrap().len, PAGE_SIZE as usize);
        // A forked process asks for its parent's pages again.
        assert_eq!(store.take(7, 0x11000, 1).unwrap().bytes()[0], 1);
    }

    #[test]
    fn a_failed_or_complete_stream_ends_the_wait() {
        let store = Arc::new(PageStore::new());
        let waiter = {
            let store = Arc::clone(&store);
            std::thread::spawn(move || store.take(1, 0x1000, 1).map(|_| ()))
        };
        store.fail("the stream broke".into());
        let err = waiter.join().unwrap().unwrap_err();
        assert_eq!(err.to_string(), "the stream broke");
        let store = PageStore::new();
        store.add(1, 0x1000, pages(1, 2));
        store.complete();
        assert_eq!(store.take(1, 0x1000, 1).unwrap().bytes()[0], 2);
        assert!(store.take(1, 0x9000, 1).is_err());
    }
}
