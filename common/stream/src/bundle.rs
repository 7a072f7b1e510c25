//! The on-disk bundle that ckpt-unpack writes and ckpt-pack reads: manifest.json, container/,
//! rootfs/, images/; and the parts (directories) any stream is made of.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::format::{Manifest, RootfsMode, MANIFEST_PATH};

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

pub struct Bundle {
    dir: PathBuf,
}

impl Bundle {
    pub fn new(dir: &Path) -> Bundle {
        Bundle {
            dir: dir.to_path_buf(),
        }
    }

    /// Reads the manifest and finds the parts; what the manifest says is included follows what is
    /// actually in the directory (a user may have removed images/ or rootfs/).
    pub fn parts(&self) -> anyhow::Result<(Manifest, Parts)> {
        let path = self.dir.join(MANIFEST_PATH);
        let json = std::fs::read(&path).with_context(|| {
            format!(
                "reading {}: is {} a bundle written by ckpt-unpack?",
                path.display(),
                self.dir.display()
            )
        })?;
        let mut manifest =
            Manifest::from_json(&json).with_context(|| format!("in {}", path.display()))?;
        let container = self.dir.join("container");
        if !container.is_dir() {
            anyhow::bail!(
                "{} has no container/ directory: not a ckpt bundle",
                self.dir.display()
            );
        }
        let rootfs = Some(self.dir.join("rootfs")).filter(|p| p.is_dir());
        let images = Some(self.dir.join("images")).filter(|p| p.is_dir());
        manifest.include.rootfs = if rootfs.is_some() {
            RootfsMode::Full
        } else {
            RootfsMode::None
        };
        manifest.include.images = images.is_some();
        Ok((
            manifest,
            Parts {
                container,
                skip: Vec::new(),
                rootfs,
                images,
            },
        ))
    }
}
