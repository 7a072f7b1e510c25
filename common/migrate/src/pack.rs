//! ckpt-pack: streams a container (its dir, rootfs and a CRIU image dir) or an unpacked bundle.

use std::path::PathBuf;

use ckpt_runtime::lxc::Container;
use ckpt_stream::io::open_output;
use ckpt_stream::{note, summary, write_stream, Bundle, Compression, Key, Progress};

use crate::parts::container_parts;

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
