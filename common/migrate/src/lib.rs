//! The migration layer: what each tool does, over the stream and runtime layers. `pack` and
//! `unpack` stream bundles; `dump` checkpoints and sends a container (live rootfs copy, freeze,
//! rollback); `restore` receives and runs it. Tools are siblings: none imports another. What keeps
//! a container from being lost lives here too: the guard a tool forks, each tool's recovery beside
//! it, and the `--ack` protocol between ckpt-dump and ckpt-restore.

pub mod ack;
pub mod dump;
pub mod pack;
pub mod restore;
pub mod unpack;

mod guard;
mod parts;
mod stats;
mod workdir;
