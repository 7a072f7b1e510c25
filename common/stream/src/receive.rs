//! Receiving a stream, as every reading tool does it: unpack the rest of it into a private dir, or
//! only read and check it to its trailer.

use std::path::Path;

use anyhow::Context;

use crate::error::bad_stream;
use crate::extract::Extractor;
use crate::format::{Copied, Trailer, MANIFEST_PATH};
use crate::reader::{Item, StreamReader};

/// Unpacks the rest of the stream into `dir` (an empty private dir) and returns the verified
/// trailer; `on_copied` runs once everything before `copied.json` is unpacked. On error, `dir`
/// holds a partial bundle that the caller must discard.
pub fn unpack_into(
    reader: &mut StreamReader,
    dir: &Path,
    on_copied: &mut dyn FnMut(&Copied) -> anyhow::Result<()>,
) -> anyhow::Result<Trailer> {
    if reader.manifest.lazy {
        return Err(bad_stream(
            "this is a post-copy (ckpt-dump --lazy) stream: its memory follows the images and \
             only ckpt-restore can take it (check it with ckpt-unpack --check or --list)",
        ));
    }
    unpack(reader, dir, on_copied)
}

/// For a lazy stream: unpacks everything before its first seal (the container, rootfs and CRIU
/// images) into `dir` and returns that seal, verified; the memory entries follow.
pub fn unpack_sealed(
    reader: &mut StreamReader,
    dir: &Path,
    on_copied: &mut dyn FnMut(&Copied) -> anyhow::Result<()>,
) -> anyhow::Result<Trailer> {
    if !reader.manifest.lazy {
        return Err(bad_stream("the stream is not a post-copy (lazy) stream"));
    }
    unpack(reader, dir, on_copied)
}

/// Unpacks into `dir` up to the trailer, or in a lazy stream up to the first seal.
fn unpack(
    reader: &mut StreamReader,
    dir: &Path,
    on_copied: &mut dyn FnMut(&Copied) -> anyhow::Result<()>,
) -> anyhow::Result<Trailer> {
    std::fs::write(dir.join(MANIFEST_PATH), &reader.manifest_json)
        .context("writing manifest.json")?;
    let mut extractor = Extractor::new(dir)?;
    loop {
        match reader.next_item()? {
            Item::Entry { root, rel, entry } => {
                extractor.extract(root, &rel, &entry, &mut reader.data())?
            }
            Item::Copied(copied) => {
                extractor.begin_changes();
                on_copied(&copied)?;
            }
            Item::End(trailer) => {
                extractor.finish()?;
                return Ok(trailer);
            }
            Item::Seal(seal) if reader.manifest.lazy => {
                extractor.finish()?;
                return Ok(seal);
            }
            Item::Seal(_) => {}
            Item::Memory { range, .. } => {
                return Err(bad_stream(format!(
                    "{} comes before the seal of the images",
                    range.path()
                )))
            }
        }
    }
}

/// Reads the rest of the stream, checking everything, writing nothing.
pub fn verify(reader: &mut StreamReader) -> anyhow::Result<Trailer> {
    loop {
        if let Item::End(trailer) = reader.next_item()? {
            return Ok(trailer);
        }
    }
}
