//! The shared library behind every ckpt tool: the stream format, safe extraction, and the LXC and
//! CRIU wrappers. The binaries in `tools/` only parse arguments and call one function here.

pub mod ack;
pub mod auth;
pub mod bundle;
pub mod checkpoint;
pub mod compat;
pub mod compress;
pub mod criu;
pub mod decoder;
pub mod dump;
pub mod error;
pub mod extract;
pub mod fixtty;
pub mod format;
pub mod fsmeta;
pub mod guard;
pub mod host;
pub mod io;
pub mod live;
pub mod lxc;
pub mod pack;
pub mod progress;
pub mod rescue;
pub mod restore;
pub mod staging;
pub mod stats;
pub mod stream;
pub mod tool;
pub mod unpack;
pub mod wire;
pub mod workdir;

pub use error::{Error, Result};

/// The version of ckpt itself, recorded in every manifest.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
