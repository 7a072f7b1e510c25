//! The stream's BLAKE3 chain (every header byte, then each entry's data hash), computed on a
//! thread of its own: the writer and the reader put the bytes into batch buffers and hand a full
//! batch over, so hashing overlaps reading and writing, with one hand-off per MiB, not per entry.

use std::ops::Range;
use std::sync::mpsc::{self, Receiver, SyncSender};

use anyhow::Context;

/// Size of a batch buffer.
const BATCH: usize = 1 << 20;
/// Batches in flight: one being hashed, one being filled, one spare.
const BATCHES: usize = 3;
/// A batch with less room than this is handed over rather than filled with small reads.
const MIN_ROOM: usize = 64 << 10;
/// The chain's own input (headers, entry hashes) goes to BLAKE3 in whole pieces of this size:
/// given a block of many 1 KiB chunks at once it hashes 16 of them side by side (AVX-512), but
/// fed one 1.5 KiB header at a time it works through one 64-byte block after another, 10x slower.
const CHAIN_PIECE: usize = 64 << 10;

/// What the bytes of a batch are.
enum Item {
    Header(Range<usize>),
    Data(Range<usize>),
    EndEntry,
}

/// A buffer of [`BATCH`] bytes, the first `used` of them described by `items`.
struct Batch {
    buf: Vec<u8>,
    used: usize,
    items: Vec<Item>,
}

impl Batch {
    fn new() -> Batch {
        Batch {
            buf: vec![0; BATCH],
            used: 0,
            items: Vec::new(),
        }
    }

    fn room(&self) -> usize {
        BATCH - self.used
    }
}

enum Job {
    Hash(Batch),
    /// The chain's digest so far (at the end: the chain's hash); hashing may go on.
    Digest,
}

enum Done {
    Batch(Batch),
    Chain(blake3::Hash),
}

/// Whether hashing pays off on a thread of its own: only with a core to spare beyond the main
/// thread and `busy` other busy threads of the process (zstd's workers, a decoder). Measured on 2
/// vCPUs: ckpt-pack alone 15 % faster with the thread, a migration (zstd on both cores, ssh on the
/// same cores) slower.
pub fn core_to_spare(busy: usize) -> bool {
    std::thread::available_parallelism().map_or(1, |n| n.get()) > busy + 1
}

/// The chain of a stream. Per entry: [`Chain::header`], data through [`Chain::room`] and
/// [`Chain::filled`] (or [`Chain::data`]), then [`Chain::end_entry`].
pub struct Chain {
    batch: Batch,
    spare: Vec<Batch>,
    thread: Option<(SyncSender<Job>, Receiver<Done>)>,
    /// Hashing on the calling thread: for good after [`Chain::hash_here`] (each entry's hash is
    /// then known at its end), or until [`Chain::allow_thread`] after [`Chain::hold_thread`].
    here: Option<Hasher>,
    /// Whether `here` is held only until a thread is allowed.
    held: bool,
    /// What was hashed here before the thread was allowed, for the thread to carry on from.
    early: Option<Hasher>,
}

impl Chain {
    pub fn new() -> Chain {
        Chain {
            batch: Batch::new(),
            spare: Vec::new(),
            thread: None,
            here: None,
            held: false,
            early: None,
        }
    }

    /// Hashes on the calling thread from now on, so that [`Chain::end_entry`] returns each
    /// entry's data hash (for listings). Call it before the first batch is full.
    pub fn hash_here(&mut self) {
        debug_assert!(self.thread.is_none(), "hash_here after a hand-over");
        // Carry on from what was hashed here while a thread was held back.
        let hashed = self.here.take().or(self.early.take());
        self.here = Some(hashed.unwrap_or_default());
        self.held = false;
    }

    /// Starts no thread until [`Chain::allow_thread`]: hashes here meanwhile. For a process that
    /// must still fork (a guard) while it has a single thread.
    pub fn hold_thread(&mut self) {
        if self.thread.is_none() && self.here.is_none() {
            self.here = Some(Hasher::default());
            self.held = true;
        }
    }

    /// Lets the next full batch go to a thread of its own (unless hashing here for good), which
    /// carries on from what was hashed here so far.
    pub fn allow_thread(&mut self) {
        if self.held {
            // What the batch holds is not hashed yet: the thread will hash it after `early`.
            self.held = false;
            self.early = self.here.take();
        }
    }

    /// Header bytes of the next entry.
    pub fn header(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.copy(bytes, Item::Header)
    }

    /// Data bytes not read through [`Chain::room`] (a sparse map).
    pub fn data(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.copy(bytes, Item::Data)
    }

    /// Room for up to `want` (> 0) data bytes of the current entry, to read into; then call
    /// [`Chain::filled`] with how many were.
    pub fn room(&mut self, want: usize) -> anyhow::Result<&mut [u8]> {
        if self.batch.room() < want.min(MIN_ROOM) {
            self.hand_over()?;
        }
        let start = self.batch.used;
        Ok(&mut self.batch.buf[start..BATCH.min(start + want)])
    }

    /// The first `n` bytes of the last [`Chain::room`] hold data: where they are, for
    /// [`Chain::get`] (valid until the next call to `room`).
    pub fn filled(&mut self, n: usize) -> Range<usize> {
        let start = self.batch.used;
        self.batch.used += n;
        self.push(Item::Data(start..start + n));
        start..start + n
    }

    /// Bytes put in by [`Chain::filled`].
    pub fn get(&self, at: Range<usize>) -> &[u8] {
        &self.batch.buf[at]
    }

    /// Ends the current entry: its data hash goes into the chain, and is returned after
    /// [`Chain::hash_here`].
    pub fn end_entry(&mut self) -> Option<blake3::Hash> {
        self.batch.items.push(Item::EndEntry);
        let here = self.here.as_mut()?;
        here.hash(&self.batch);
        self.batch.used = 0;
        self.batch.items.clear();
        here.last
    }

    /// The chain's digest over everything put in so far, once it is hashed; the chain goes on
    /// (for a seal in the middle of a stream).
    pub fn digest_so_far(&mut self) -> anyhow::Result<blake3::Hash> {
        if let Some(here) = self.here.as_mut() {
            here.hash(&self.batch);
            self.batch.used = 0;
            self.batch.items.clear();
            return Ok(here.chain_digest());
        }
        self.hand_over()?;
        let (jobs, done) = self.thread.as_ref().ok_or_else(ended)?;
        jobs.send(Job::Digest).map_err(|_| ended())?;
        loop {
            match done.recv().map_err(|_| ended())? {
                Done::Batch(batch) => self.spare.push(batch),
                Done::Chain(hash) => return Ok(hash),
            }
        }
    }

    /// The chain's hash once every batch is hashed.
    pub fn finish(mut self) -> anyhow::Result<blake3::Hash> {
        if self.thread.is_none() {
            // Hashing here, or nothing was ever handed over: no thread is worth starting.
            let mut hasher = self.here.take().or(self.early.take()).unwrap_or_default();
            hasher.hash(&self.batch);
            return Ok(hasher.chain_digest());
        }
        // The thread ends when its channel is dropped with the chain.
        self.digest_so_far()
    }

    fn copy(&mut self, bytes: &[u8], item: fn(Range<usize>) -> Item) -> anyhow::Result<()> {
        for piece in bytes.chunks(BATCH) {
            if self.batch.room() < piece.len() {
                self.hand_over()?;
            }
            let start = self.batch.used;
            self.batch.used += piece.len();
            self.batch.buf[start..self.batch.used].copy_from_slice(piece);
            self.push(item(start..self.batch.used));
        }
        Ok(())
    }

    /// Adds an item, merging data with the data just before it.
    fn push(&mut self, item: Item) {
        if let (Item::Data(next), Some(Item::Data(last))) = (&item, self.batch.items.last_mut()) {
            if last.end == next.start {
                last.end = next.end;
                return;
            }
        }
        self.batch.items.push(item);
    }

    /// Sends the current batch to the thread (or hashes it here) and takes an empty one.
    fn hand_over(&mut self) -> anyhow::Result<()> {
        if let Some(here) = self.here.as_mut() {
            here.hash(&self.batch);
            self.batch.used = 0;
            self.batch.items.clear();
            return Ok(());
        }
        if self.thread.is_none() {
            self.thread = Some(spawn(self.early.take().unwrap_or_default())?);
            self.spare = (1..BATCHES).map(|_| Batch::new()).collect();
        }
        let (jobs, done) = self.thread.as_ref().ok_or_else(ended)?;
        let next = match self.spare.pop() {
            Some(batch) => batch,
            None => match done.recv().map_err(|_| ended())? {
                Done::Batch(batch) => batch,
                Done::Chain(_) => anyhow::bail!("internal: hashing thread out of step"),
            },
        };
        let full = std::mem::replace(&mut self.batch, next);
        jobs.send(Job::Hash(full)).map_err(|_| ended())?;
        self.batch.used = 0;
        self.batch.items.clear();
        Ok(())
    }
}

impl Default for Chain {
    fn default() -> Self {
        Chain::new()
    }
}

/// The hashing state, on whichever thread hashes.
#[derive(Default)]
struct Hasher {
    chain: blake3::Hasher,
    /// Chain input not yet given to `chain`: less than a [`CHAIN_PIECE`] between calls.
    pending: Vec<u8>,
    content: blake3::Hasher,
    /// The data hash of the last entry ended.
    last: Option<blake3::Hash>,
}

impl Hasher {
    fn hash(&mut self, batch: &Batch) {
        for item in &batch.items {
            match item {
                Item::Header(r) => self.chain_input(&batch.buf[r.clone()]),
                Item::Data(r) => _ = self.content.update(&batch.buf[r.clone()]),
                Item::EndEntry => {
                    let hash = self.content.finalize();
                    self.chain_input(hash.as_bytes());
                    self.content.reset();
                    self.last = Some(hash);
                }
            }
        }
    }

    /// Adds bytes to the chain, which gets them in whole [`CHAIN_PIECE`]s (the digest is the
    /// same however the input is cut; only the speed differs).
    fn chain_input(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
        if self.pending.len() >= CHAIN_PIECE {
            let whole = self.pending.len() - self.pending.len() % CHAIN_PIECE;
            self.chain.update(&self.pending[..whole]);
            self.pending.drain(..whole);
        }
    }

    /// The chain's digest over everything added so far; more can be added after it.
    fn chain_digest(&mut self) -> blake3::Hash {
        self.chain.update(&self.pending);
        self.pending.clear();
        self.chain.finalize()
    }
}

/// Starts the hashing thread, carrying on from `hasher`.
fn spawn(mut hasher: Hasher) -> anyhow::Result<(SyncSender<Job>, Receiver<Done>)> {
    let (jobs, todo) = mpsc::sync_channel::<Job>(BATCHES);
    let (back, done) = mpsc::channel();
    std::thread::Builder::new()
        .name("ckpt-blake3".into())
        .spawn(move || {
            for job in todo {
                let reply = match job {
                    Job::Hash(batch) => {
                        hasher.hash(&batch);
                        Done::Batch(batch)
                    }
                    Job::Digest => Done::Chain(hasher.chain_digest()),
                };
                if back.send(reply).is_err() {
                    break;
                }
            }
        })
        .context("starting the hashing thread")?;
    Ok((jobs, done))
}

fn ended() -> anyhow::Error {
    anyhow::anyhow!("internal: the hashing thread ended")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The chain computed directly: headers, then each entry's data hash.
    fn expected(entries: &[(&[u8], &[u8])]) -> blake3::Hash {
        let mut chain = blake3::Hasher::new();
        for (header, data) in entries {
            chain.update(header);
            chain.update(blake3::hash(data).as_bytes());
        }
        chain.finalize()
    }

    /// Feeds `entries` to a Chain, reading data in pieces of at most `piece` bytes; `here`: on
    /// this thread, checking each entry's hash.
    fn chained(entries: &[(&[u8], &[u8])], piece: usize, here: bool) -> blake3::Hash {
        chained_from(Chain::new(), entries, piece, here)
    }

    fn chained_from(
        mut chain: Chain,
        entries: &[(&[u8], &[u8])],
        piece: usize,
        here: bool,
    ) -> blake3::Hash {
        if here {
            chain.hash_here();
        }
        for (header, data) in entries {
            chain.header(header).unwrap();
            for part in data.chunks(piece) {
                let room = chain.room(part.len()).unwrap();
                let n = room.len().min(part.len());
                room[..n].copy_from_slice(&part[..n]);
                let at = chain.filled(n);
                assert_eq!(chain.get(at), &part[..n]);
                if n < part.len() {
                    chain.data(&part[n..]).unwrap();
                }
            }
            let hash = chain.end_entry();
            assert_eq!(hash, here.then(|| blake3::hash(data)));
        }
        chain.finish().unwrap()
    }

    #[test]
    fn matches_the_chain_hashed_directly() {
        let big: Vec<u8> = (0..5_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let header = [b'h'; 512];
        let small: Vec<(&[u8], &[u8])> = (0..3000).map(|i| (&header[..], &big[i..i * 3])).collect();
        let cases: [Vec<(&[u8], &[u8])>; 4] = [
            vec![],
            vec![(&header, b"")],
            vec![(&header, &big), (&header, b"x"), (&header, &big[1..])],
            small,
        ];
        for entries in &cases {
            for (piece, here) in [
                (1 << 20, false),
                (100_000, false),
                (777, false),
                (777, true),
            ] {
                assert_eq!(
                    chained(entries, piece, here),
                    expected(entries),
                    "piece {piece}"
                );
            }
        }
    }

    /// Feeds `entries` to a chain (on a thread, then here), checking the digest so far after
    /// every `every`-th entry and the final one.
    fn digests_so_far_match(entries: &[(&[u8], &[u8])], every: usize) {
        for here in [false, true] {
            let mut chain = Chain::new();
            if here {
                chain.hash_here();
            }
            for (i, (header, data)) in entries.iter().enumerate() {
                chain.header(header).unwrap();
                chain.data(data).unwrap();
                chain.end_entry();
                if i % every == 0 {
                    assert_eq!(chain.digest_so_far().unwrap(), expected(&entries[..=i]));
                }
            }
            assert_eq!(chain.finish().unwrap(), expected(entries));
        }
    }

    #[test]
    fn a_digest_so_far_is_the_chain_of_the_entries_before_it() {
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 11 % 251) as u8).collect();
        let header = [b'h'; 512];
        digests_so_far_match(&[(&header, &big), (&header, b"x"), (&header, &big)], 1);
    }

    /// Digests taken while chain input waits for a whole 64 KiB piece, and the chain going on
    /// after them, pieces no longer aligned.
    #[test]
    fn digests_between_many_small_entries_match() {
        let header = [b'h'; 1536];
        let data: Vec<u8> = (0..400u32).map(|i| i as u8).collect();
        let entries: Vec<(&[u8], &[u8])> = (0..400).map(|i| (&header[..], &data[..i])).collect();
        digests_so_far_match(&entries, 97);
    }

    #[test]
    fn a_held_thread_carries_on_from_what_was_hashed_here() {
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 13 % 251) as u8).collect();
        let header = [b'h'; 512];
        let first: Vec<(&[u8], &[u8])> = vec![(&header, &big), (&header, b"manifest")];
        let rest: Vec<(&[u8], &[u8])> = vec![(&header, &big[7..]), (&header, b"x")];
        let mut chain = Chain::new();
        chain.hold_thread();
        for (header, data) in &first {
            chain.header(header).unwrap();
            chain.data(data).unwrap();
            chain.end_entry();
        }
        assert!(chain.thread.is_none(), "a thread started while held");
        chain.header(rest[0].0).unwrap();
        chain.allow_thread();
        chain.data(rest[0].1).unwrap();
        chain.end_entry();
        chain.header(rest[1].0).unwrap();
        chain.data(rest[1].1).unwrap();
        chain.end_entry();
        assert!(chain.thread.is_some(), "no thread once allowed");
        let all: Vec<_> = first.iter().chain(&rest).copied().collect();
        assert_eq!(chain.finish().unwrap(), expected(&all));
    }

    #[test]
    fn hashing_here_after_a_held_start_keeps_what_was_hashed() {
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let header = [b'h'; 512];
        let entries: Vec<(&[u8], &[u8])> = vec![(&header, &big), (&header, b"after")];
        let mut chain = Chain::new();
        chain.hold_thread();
        chain.header(entries[0].0).unwrap();
        chain.data(entries[0].1).unwrap();
        chain.allow_thread();
        chain.hash_here();
        chain.end_entry();
        chain.header(entries[1].0).unwrap();
        chain.data(entries[1].1).unwrap();
        assert_eq!(chain.end_entry(), Some(blake3::hash(b"after")));
        assert_eq!(chain.finish().unwrap(), expected(&entries));
    }
}
