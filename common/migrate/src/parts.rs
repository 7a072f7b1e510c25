//! What of a container goes into a stream: its manifest (this host's facts) and its parts.

use std::path::Path;

use ckpt_runtime::lxc::Container;
use ckpt_stream::format::{Include, RootfsMode};
use ckpt_stream::{Manifest, Parts};

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
    let manifest = ckpt_runtime::host::manifest(
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
