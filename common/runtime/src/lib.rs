//! The runtime layer: LXC containers and their configs, CRIU driven through lxc-checkpoint,
//! `lxc-fixtty`'s repairs, and the facts about this host that decide what can run here. It uses
//! the stream layer only for the manifest it describes a host in; it never reads or writes streams.

pub mod cgroups2;
pub mod checkpoint;
pub mod compat;
pub mod criu;
pub mod fixtty;
pub mod freezer;
pub mod hold;
pub mod host;
pub mod images;
pub mod lazy;
pub mod leases;
pub mod lxc;
pub mod procs;
pub mod requirements;

pub use lxc::{Container, State};
