//! Receiving a stream, as every reading tool does it: unpack the rest of it into a private dir, or
//! only read and check it to its trailer.

use std::path::Path;

use anyhow::Context;

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
