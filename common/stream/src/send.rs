//! Sending a stream, as every writing tool does it: open it on an output (compressed, counted for
//! the progress bar), add a bundle's parts, and close it so that success means every byte is out.

use std::io::Write;

use anyhow::Context;

use crate::auth::Key;
use crate::bundle::Parts;
use crate::format::{Manifest, Trailer};
use crate::io::{Compression, Sink};
use crate::progress::{Counted, Progress};
use crate::writer::StreamWriter;

/// An outgoing stream: entries, counted for the progress bar, compressed, written to `W`.
pub type Outgoing<W> = StreamWriter<Counted<Sink<W>>>;

/// Starts a stream on `out` (its manifest is written).
pub fn open_stream<W: Write>(
    out: W,
    manifest: &Manifest,
    compression: Compression,
    key: Option<Key>,
    progress: &Progress,
) -> anyhow::Result<Outgoing<W>> {
    let sink = Sink::new(out, compression)?;
    StreamWriter::new(progress.writer(sink), manifest, key, compression.threads())
}

/// Streams `parts` in bundle order: `container/`, `rootfs/`, `images/`.
pub fn add_parts<W: Write>(stream: &mut StreamWriter<W>, parts: &Parts) -> anyhow::Result<()> {
    stream.add_tree("container", &parts.container, &parts.skipped())?;
    if let Some(rootfs) = &parts.rootfs {
        stream.add_tree("rootfs", rootfs, &[])?;
    }
    if let Some(images) = &parts.images {
        stream.add_tree("images", images, &[])?;
    }
    Ok(())
}

/// Seals a stream and finishes every layer, so a success means every byte reached the output.
pub fn close_stream<W: Write>(stream: Outgoing<W>) -> anyhow::Result<Trailer> {
    let (counted, trailer) = stream.finish()?;
    counted
        .into_inner()
        .finish()
        .context("writing the stream")?;
    Ok(trailer)
}

/// Writes the whole stream of `parts` to `out` and finishes every layer.
pub fn write_stream<W: Write>(
    out: W,
    manifest: &Manifest,
    parts: &Parts,
    compression: Compression,
    key: Option<Key>,
    progress: &Progress,
) -> anyhow::Result<Trailer> {
    let mut stream = open_stream(out, manifest, compression, key, progress)?;
    add_parts(&mut stream, parts)?;
    close_stream(stream)
}
