//! The stream layer: everything that writes, reads, verifies and unpacks a ckpt stream. It knows
//! nothing of LXC or CRIU, so it can be fuzzed, tested and reused on its own.
//!
//! Imports flow one way, bottom to top: `error`; `wire` (tar entries, the hash chain, the seal);
//! `format` (manifest, trailer, entry paths) and `auth` (the MAC); `fsmeta` and `extract` (files
//! in and out); the stream writer and reader; `send` and `receive`, the plumbing every tool shares.

pub mod error;
pub mod format;
pub mod io;
pub mod wire;

mod auth;
mod bundle;
mod compress;
mod decoder;
mod extract;
mod fsmeta;
mod listing;
mod parents;
mod progress;
mod reader;
mod receive;
mod send;
mod staging;
mod start;
mod writer;

pub use auth::{Key, KEY_ENV};
pub use bundle::{Bundle, Parts};
pub use error::{Error, Result};
pub use extract::Extractor;
pub use format::{summary, Manifest, Trailer};
pub use io::Compression;
pub use listing::{entry_line, list};
pub use progress::{note, Counted, Progress};
pub use reader::{Item, StreamReader};
pub use receive::{unpack_into, unpack_memory, verify, OnMemory};
pub use send::{add_parts, close_stream, open_stream, write_stream, Outgoing};
pub use staging::{check_destination, parent_of, sweep_stale, StagingDir};
pub use writer::{bundle_path, rel_path, seal, tree_walk, StreamWriter};

/// The version of ckpt itself, recorded in every manifest.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
