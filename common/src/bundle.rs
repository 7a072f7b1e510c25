//! The on-disk bundle that ckpt-unpack writes and ckpt-pack reads: manifest.json, container/,
//! rootfs/, images/.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::format::{Manifest, RootfsMode, MANIFEST_PATH};
use crate::pack::Parts;

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
