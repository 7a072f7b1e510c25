//! Placeholder: LXC wrappers (temporary shim by the lead so pack compiles; the lxc-fixtty helper
//! replaces this file with the real module and keeps these names or tells the lead).

use std::path::{Path, PathBuf};

pub struct Container {
    pub name: String,
    pub lxcpath: PathBuf,
}

impl Container {
    pub fn locate(name: &str, lxcpath: Option<&Path>) -> anyhow::Result<Container> {
        let lxcpath = lxcpath.map_or_else(|| PathBuf::from("/var/lib/lxc"), Path::to_path_buf);
        Ok(Container { name: name.to_string(), lxcpath })
    }
    pub fn dir(&self) -> PathBuf {
        self.lxcpath.join(&self.name)
    }
    pub fn rootfs_path(&self) -> anyhow::Result<PathBuf> {
        Ok(self.dir().join("rootfs"))
    }
}

pub fn missing(c: &Container) -> anyhow::Error {
    anyhow::anyhow!("no container {} in {}", c.name, c.lxcpath.display())
}
