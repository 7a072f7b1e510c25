//! ckpt-pack: streams a container (its dir, rootfs and a CRIU image dir) or an unpacked bundle.
//! ckpt-dump streams through [`write_stream`] too.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::auth::Key;
use crate::bundle::Bundle;
use crate::format::{Include, Manifest, RootfsMode, Trailer};
use crate::io::{open_output, Compression, Sink};
use crate::lxc::Container;
use crate::progress::{note, Counted, Progress};
use crate::stream::StreamWriter;

/// What ckpt-pack was asked to do, free of any command-line parser.
#[derive(Debug, Clone)]
pub struct PackConfig {
    pub source: Source,
    pub compression: Compression,
    /// Key file for an authenticated stream (else $CKPT_KEY, else none).
    pub key: Option<PathBuf>,
    pub output: Option<PathBuf>,
    pub quiet: bool,
}

#[derive(Debug, Clone)]
pub enum Source {
    /// A bundle directory written by ckpt-unpack (possibly edited since).
    Bundle(PathBuf),
    /// LXCPATH/NAME plus, optionally, a CRIU image dir such as lxc-checkpoint -D leaves.
    Container {
        name: String,
        lxcpath: Option<PathBuf>,
        images: Option<PathBuf>,
        rootfs: bool,
    },
}

/// The directories that make up one stream.
#[derive(Debug, Clone)]
pub struct Parts {
    /// Goes in as `container/`; `skip` paths inside it are left out (the rootfs, when it lives there).
    pub container: PathBuf,
    pub skip: Vec<PathBuf>,
    pub rootfs: Option<PathBuf>,
    pub images: Option<PathBuf>,
}

impl Parts {
    /// The paths left out of `container/`.
    pub fn skipped(&self) -> Vec<&Path> {
        self.skip.iter().map(PathBuf::as_path).collect()
    }
}

pub fn run(cfg: &PackConfig) -> anyhow::Result<()> {
    let (manifest, parts) = match &cfg.source {
        Source::Bundle(dir) => Bundle::new(dir).parts()?,
        Source::Container {
            name,
            lxcpath,
            images,
            rootfs,
        } => {
            let container = Container::locate(name, lxcpath.as_deref())?;
            if let Some(images) = images {
                if !images.join("inventory.img").is_file() {
                    anyhow::bail!(
                        "{} holds no CRIU images (no inventory.img): give the -D dir of lxc-checkpoint",
                        images.display()
                    );
                }
            }
            container_parts(&container, images.as_deref(), *rootfs)?
        }
    };
    let key = Key::load(cfg.key.as_deref())?;
    let out = open_output(cfg.output.as_deref())?;
    let progress = Progress::new("ckpt-pack", None, cfg.quiet);
    let trailer = write_stream(out, &manifest, &parts, cfg.compression, key, &progress)?;
    progress.finish();
    note(cfg.quiet, "ckpt-pack", &summary(&manifest, &trailer));
    Ok(())
}

/// The parts and manifest of a container, with or without its rootfs and images (`images` is
/// where they are, or will be once CRIU has dumped).
pub fn container_parts(
    container: &Container,
    images: Option<&Path>,
    rootfs: bool,
) -> anyhow::Result<(Manifest, Parts)> {
    container.ensure_exists()?;
    let dir = container.dir();
    let rootfs_path = container.rootfs_path()?;
    let include = Include {
        rootfs: if rootfs {
            RootfsMode::Full
        } else {
            RootfsMode::None
        },
        images: images.is_some(),
    };
    let manifest = crate::host::manifest(
        &container.name,
        &container.lxcpath.to_string_lossy(),
        include,
    );
    let parts = Parts {
        container: dir.clone(),
        skip: vec![rootfs_path.clone()],
        rootfs: rootfs.then_some(rootfs_path),
        images: images.map(Path::to_path_buf),
    };
    Ok((manifest, parts))
}

/// Writes the whole stream of `parts` to `out` and finishes every layer, so a success here means
/// every byte reached `out`.
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
    StreamWriter::new(
        Counted::writer(sink, progress),
        manifest,
        key,
        compression.threads(),
    )
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

/// One line describing a stream: name, entries, size.
pub fn summary(manifest: &Manifest, trailer: &Trailer) -> String {
    format!(
        "{}: {} entries, {:.1} MiB",
        manifest.name,
        trailer.entries,
        trailer.bytes as f64 / (1 << 20) as f64
    )
}

/// Flushes a writer, naming what failed.
pub fn flushed<W: Write>(mut w: W, what: &str) -> anyhow::Result<W> {
    w.flush().with_context(|| format!("flushing {what}"))?;
    Ok(w)
}
