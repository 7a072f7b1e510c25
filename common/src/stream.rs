//! A ckpt stream over the tar layer: the manifest first, the bundle roots, the sealed trailer last.

use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use anyhow::Context;
use walkdir::WalkDir;

use crate::auth::Key;
use crate::error::bad_stream;
use crate::format::{classify, EntryPath, Manifest, Trailer, MANIFEST_PATH, MAX_JSON_SIZE};
use crate::fsmeta::{self, LinkTracker};
use crate::io::decompress;
use crate::wire::{Entry, Kind, Mtime, Next, TarReader, TarWriter};

/// Writes a stream: construct it (writes the manifest), add trees, then [`StreamWriter::finish`].
pub struct StreamWriter<W: Write> {
    tar: TarWriter<W>,
    links: LinkTracker,
    key: Option<Key>,
}

impl<W: Write> StreamWriter<W> {
    /// Starts a stream; with a `key`, its trailer carries a MAC.
    pub fn new(out: W, manifest: &Manifest, key: Option<Key>) -> anyhow::Result<StreamWriter<W>> {
        let mut json = serde_json::to_vec_pretty(manifest)?;
        json.push(b'\n');
        let mut tar = TarWriter::new(out);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let entry = Entry {
            path: MANIFEST_PATH.as_bytes().to_vec(),
            kind: Kind::File {
                size: json.len() as u64,
                sparse: None,
            },
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: Mtime {
                sec: now.as_secs() as i64,
                nsec: 0,
            },
            xattrs: Vec::new(),
        };
        tar.append(&entry, &mut &json[..])
            .context("writing the manifest")?;
        Ok(StreamWriter {
            tar,
            links: LinkTracker::default(),
            key,
        })
    }

    /// Streams the directory `dir` as bundle root `root` (`container`, `rootfs` or `images`),
    /// parents before children, in name order, without crossing into other filesystems. Paths
    /// in `skip` (and everything under them) are left out.
    pub fn add_tree(&mut self, root: &str, dir: &Path, skip: &[&Path]) -> anyhow::Result<()> {
        let walk = WalkDir::new(dir)
            .sort_by_file_name()
            .same_file_system(true)
            .follow_links(false);
        let mut it = walk.into_iter();
        while let Some(item) = it.next() {
            let item = item.with_context(|| format!("walking {}", dir.display()))?;
            let path = item.path();
            if skip.contains(&path) {
                if item.file_type().is_dir() {
                    it.skip_current_dir();
                }
                continue;
            }
            let rel = path
                .strip_prefix(dir)
                .unwrap_or(path)
                .as_os_str()
                .as_bytes();
            let mut bundle_path = root.as_bytes().to_vec();
            if !rel.is_empty() {
                bundle_path.push(b'/');
                bundle_path.extend_from_slice(rel);
            }
            // A unix socket file is an address, not data: like tar, leave it out (CRIU binds the
            // sockets it restores again, which creates their files).
            if item.file_type().is_socket() {
                continue;
            }
            let entry = fsmeta::describe(path, bundle_path, &mut self.links)?;
            let mut data: Box<dyn Read> = match entry.kind {
                Kind::File { .. } => fsmeta::open_data(path, &entry)?,
                _ => Box::new(std::io::empty()),
            };
            self.tar
                .append(&entry, &mut data)
                .with_context(|| format!("streaming {}", path.display()))?;
        }
        Ok(())
    }

    /// Seals the stream with its trailer and flushes it.
    pub fn finish(self) -> anyhow::Result<(W, Trailer)> {
        self.tar.finish_with(self.key.as_ref())
    }
}

/// What [`StreamReader::next_item`] found after the manifest.
#[derive(Debug)]
pub enum Item {
    /// An entry under one of the bundle roots; `rel` is empty for the root directory itself.
    Entry {
        root: &'static str,
        rel: Vec<u8>,
        entry: Entry,
    },
    /// The verified trailer; the input was read to its end.
    End(Trailer),
}

/// Reads a stream, plain or zstd: the manifest is checked on open, the trailer at the end.
pub struct StreamReader {
    tar: TarReader<Box<dyn Read + Send>>,
    pub manifest: Manifest,
    /// The manifest exactly as it came, for writing into a bundle.
    pub manifest_json: Vec<u8>,
}

impl StreamReader {
    /// Opens a stream; with a `key`, only a stream with a valid MAC for it verifies.
    pub fn open(input: Box<dyn Read + Send>, key: Option<Key>) -> anyhow::Result<StreamReader> {
        let mut tar = TarReader::new(decompress(input)?).with_key(key);
        let entry = match tar.next_entry()? {
            Next::Entry(entry) if entry.path == MANIFEST_PATH.as_bytes() => entry,
            _ => {
                return Err(bad_stream(
                    "first entry is not manifest.json: not a ckpt stream",
                ))
            }
        };
        if !matches!(entry.kind, Kind::File { sparse: None, .. })
            || entry.data_size() > MAX_JSON_SIZE
        {
            return Err(bad_stream("manifest.json entry is malformed"));
        }
        let mut json = Vec::new();
        tar.data().read_to_end(&mut json)?;
        let manifest = Manifest::from_json(&json)?;
        Ok(StreamReader {
            tar,
            manifest,
            manifest_json: json,
        })
    }

    pub fn next_item(&mut self) -> anyhow::Result<Item> {
        match self.tar.next_entry()? {
            Next::End(trailer) => Ok(Item::End(trailer)),
            Next::Entry(entry) => match classify(&entry.path)? {
                EntryPath::Tree { root, rel } => Ok(Item::Entry { root, rel, entry }),
                EntryPath::Manifest => Err(bad_stream("manifest.json appears twice")),
                EntryPath::Trailer => Err(bad_stream("trailer.json is not the last entry")),
            },
        }
    }

    /// The current entry's data.
    pub fn data(&mut self) -> impl Read + '_ {
        self.tar.data()
    }

    /// Ends the current entry and returns the hash of its data.
    pub fn finish_entry(&mut self) -> anyhow::Result<Option<blake3::Hash>> {
        self.tar.finish_entry()
    }
}
