//! Reads a ckpt stream, plain or zstd: the manifest checked on open, each entry's path against
//! the bundle layout, the trailer (and MAC) against the chain at the end.

use std::io::{BufRead, Read};
use std::path::Path;

use crate::auth::Key;
use crate::decoder::Decoded;
use crate::error::bad_stream;
use crate::format::{
    classify, EntryPath, Manifest, Mark, MemoryRange, Trailer, MANIFEST_PATH, MAX_JSON_SIZE,
    MAX_MEMORY_ENTRY, PAGE_SIZE, SEAL_PATH, TRAILER_PATH,
};
use crate::io::decompress;
use crate::start::{self, Start};
use crate::wire::{core_to_spare, Entry, Kind, Next, TarReader};

/// What [`StreamReader::next_item`] found after the manifest.
#[derive(Debug)]
pub enum Item {
    /// An entry under one of the bundle roots; `rel` is empty for the root directory itself.
    Entry {
        root: &'static str,
        rel: Vec<u8>,
        entry: Entry,
    },
    /// `copied.json`: the `rootfs/` entries that follow are changes made since it was copied.
    Copied(crate::format::Copied),
    /// A verified seal (lazy streams): every entry before it is intact.
    Seal(Trailer),
    /// Memory pages of a lazy stream (see [`MemoryRange`]): `size` bytes, whole pages, read with
    /// [`StreamReader::data`]; they count as intact only once the next seal is read.
    Memory { range: MemoryRange, size: u64 },
    /// The verified trailer; the input was read to its end.
    End(Trailer),
}

/// Reads a stream, plain or zstd: the manifest is checked on open, the trailer at the end.
pub struct StreamReader {
    tar: TarReader<Decoded>,
    pub manifest: Manifest,
    /// The manifest exactly as it came, for writing into a bundle.
    pub manifest_json: Vec<u8>,
    /// Whether `copied.json` was read.
    copied: bool,
    /// When set, the trailer must carry a valid MAC for this key.
    key: Option<Key>,
}

impl StreamReader {
    /// Opens a stream read from standard input; with a `key`, only a stream with a valid MAC for it
    /// verifies.
    pub fn open(input: Box<dyn Read + Send>, key: Option<Key>) -> anyhow::Result<StreamReader> {
        StreamReader::open_from(input, None, key)
    }

    /// Opens a stream read from `path` (None: standard input, as [`crate::io::open_input`] takes
    /// it), which messages name; with a `key`, only a stream with a valid MAC for it verifies.
    pub fn open_from(
        input: Box<dyn Read + Send>,
        path: Option<&Path>,
        key: Option<Key>,
    ) -> anyhow::Result<StreamReader> {
        let decoded = decompress(input, path)?;
        let zstd = decoded.is_compressed();
        let busy = usize::from(zstd);
        let mut tar =
            TarReader::new(decoded, TRAILER_PATH.as_bytes()).with_interim(SEAL_PATH.as_bytes());
        if !core_to_spare(busy) {
            tar.hash_here();
        }
        let entry = match tar.next_entry()? {
            Next::Entry(entry) if entry.path == MANIFEST_PATH.as_bytes() => entry,
            // Only a tar archive that starts with a pax header gets here (see crate::start).
            Next::Entry(Entry { path, .. }) => return Err(not_ckpt(&path, zstd)),
            Next::End { .. } => return Err(not_ckpt(TRAILER_PATH.as_bytes(), zstd)),
            Next::Interim { .. } => return Err(not_ckpt(SEAL_PATH.as_bytes(), zstd)),
        };
        let json = read_json(&mut tar, &entry)?;
        let manifest = Manifest::from_json(&json)?;
        Ok(StreamReader {
            tar,
            manifest,
            manifest_json: json,
            copied: false,
            key,
        })
    }

    /// Hashes on this thread, so that [`StreamReader::finish_entry`] returns each entry's hash.
    pub fn hash_here(&mut self) {
        self.tar.hash_here();
    }

    /// Lets the reader use threads for the rest of the stream: decompression (see
    /// [`Decoded::decode_in_background`]) and hashing. A reader starts none before this, so that
    /// a tool can read the manifest and then fork its guard while it has a single thread.
    pub fn start_threads(&mut self) {
        self.tar.get_mut().decode_in_background();
        self.tar.allow_thread();
    }

    pub fn next_item(&mut self) -> anyhow::Result<Item> {
        match self.tar.next_entry()? {
            Next::End { seal, data } => {
                Trailer::check(&data, &seal, self.key.as_ref()).map(Item::End)
            }
            Next::Interim { seal, data } => {
                Trailer::check_mark(Mark::Seal, &data, &seal, self.key.as_ref()).map(Item::Seal)
            }
            Next::Entry(entry) => match classify(&entry.path)? {
                EntryPath::Tree { root, rel } => Ok(Item::Entry { root, rel, entry }),
                EntryPath::Memory(range) => self.memory(range, &entry),
                EntryPath::Manifest => Err(bad_stream("manifest.json appears twice")),
                EntryPath::Trailer => Err(bad_stream("trailer.json is not the last entry")),
                EntryPath::Seal => Err(bad_stream("seal.json entry is malformed")),
                EntryPath::Copied if self.copied => Err(bad_stream("copied.json appears twice")),
                EntryPath::Copied => {
                    self.copied = true;
                    let json = read_json(&mut self.tar, &entry)?;
                    let copied = serde_json::from_slice(&json)
                        .map_err(|e| bad_stream(format!("copied.json is not valid: {e}")))?;
                    Ok(Item::Copied(copied))
                }
            },
        }
    }

    /// A memory entry: only in a lazy stream, only whole pages, one regular file of bounded size.
    fn memory(&self, range: MemoryRange, entry: &Entry) -> anyhow::Result<Item> {
        if self.manifest.memory.in_images() {
            return Err(bad_stream(format!(
                "{} in a stream whose manifest has the memory in the images",
                range.path()
            )));
        }
        let size = entry.data_size();
        let whole = matches!(entry.kind, Kind::File { sparse: None, .. })
            && size > 0
            && size % PAGE_SIZE == 0
            && size <= MAX_MEMORY_ENTRY
            && range.vaddr.checked_add(size).is_some();
        if !whole {
            return Err(bad_stream(format!(
                "{} is not a run of whole pages",
                range.path()
            )));
        }
        Ok(Item::Memory { range, size })
    }

    /// The current entry's data.
    pub fn data(&mut self) -> impl BufRead + '_ {
        self.tar.data()
    }

    /// Ends the current entry; returns the hash of its data after [`StreamReader::hash_here`].
    pub fn finish_entry(&mut self) -> anyhow::Result<Option<blake3::Hash>> {
        self.tar.finish_entry()
    }
}

/// A tar archive (zstd-compressed or not) whose first entry is at `path`, not the manifest.
fn not_ckpt(path: &[u8], zstd: bool) -> anyhow::Error {
    let problem = Start::OtherTar(start::shown(path)).problem(None, zstd);
    bad_stream(problem.unwrap_or_default())
}

/// The data of a small JSON entry (the manifest, copied.json), refusing anything else.
fn read_json(tar: &mut TarReader<Decoded>, entry: &Entry) -> anyhow::Result<Vec<u8>> {
    if !matches!(entry.kind, Kind::File { sparse: None, .. }) || entry.data_size() > MAX_JSON_SIZE {
        return Err(bad_stream(format!(
            "{} entry is malformed",
            String::from_utf8_lossy(&entry.path)
        )));
    }
    let mut json = Vec::new();
    tar.data().read_to_end(&mut json)?;
    Ok(json)
}
