//! The tar layer of the stream: one entry model, a writer and a hostile-input-safe reader built on
//! the `tar` crate's header type. The crate's own Builder/Archive are not used: they neither hash
//! every byte into a chain nor refuse what a hostile stream can put in a header.

mod chain;
mod pax;
mod read;
pub mod sparse;
mod write;

pub use chain::core_to_spare;
pub use read::{Next, TarReader};
pub use write::TarWriter;

/// The writer reads file data in pieces of this size: a piece stays in the CPU cache between
/// the read that fills it and the write that sends it on (1 MiB pieces made ckpt-pack 15 % slower).
const READ_CHUNK: u64 = 128 << 10;
/// The reader takes entry data from the stream in reads of up to this size (as much as the batch
/// has room for): a read that makes room in a full pipe wakes the writer, which then preempts the
/// reader on its core, so fewer, larger reads mean fewer switches when both ends share the cores.
const STREAM_READ: u64 = 1 << 20;

/// What a chain of entries amounts to: the writer's [`TarWriter::finish`] and the reader's
/// [`Next::End`] give it, for the layer above to seal (trailer, MAC) or to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seal {
    /// Entries in the chain.
    pub entries: u64,
    /// Sum of their data areas.
    pub bytes: u64,
    /// The chain's BLAKE3 digest (see man/ckpt-stream.5).
    pub digest: blake3::Hash,
}

/// Size of a tar block.
pub const BLOCK: u64 = 512;

/// One entry of a stream, with every piece of metadata ckpt preserves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path inside the bundle, e.g. `rootfs/etc/passwd` (directories without trailing slash).
    pub path: Vec<u8>,
    pub kind: Kind,
    /// Permission bits including setuid, setgid and sticky (`0o7777` mask).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: Mtime,
    /// Extended attributes as (name, value), `security.capability` included.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Modification time with nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mtime {
    pub sec: i64,
    pub nsec: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A regular file; `size` is the number of data bytes carried (the sum of the segments when sparse).
    File {
        size: u64,
        sparse: Option<Sparse>,
    },
    Dir,
    /// Target bytes, stored as is and never interpreted by the writer or the reader.
    Symlink(Vec<u8>),
    /// Bundle path of an earlier entry this one is a hard link to.
    Hardlink(Vec<u8>),
    Char {
        major: u32,
        minor: u32,
    },
    Block {
        major: u32,
        minor: u32,
    },
    Fifo,
}

/// The data segments of a sparse file; everything else is a hole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sparse {
    pub real_size: u64,
    /// (offset, length), sorted and non-overlapping.
    pub segments: Vec<(u64, u64)>,
}

impl Entry {
    /// Number of data bytes the caller writes or reads for this entry.
    pub fn data_size(&self) -> u64 {
        match &self.kind {
            Kind::File { size, .. } => *size,
            _ => 0,
        }
    }

    /// One-letter type, as `ls -l` shows it.
    pub fn type_char(&self) -> char {
        match self.kind {
            Kind::File { .. } => '-',
            Kind::Dir => 'd',
            Kind::Symlink(_) => 'l',
            Kind::Hardlink(_) => 'h',
            Kind::Char { .. } => 'c',
            Kind::Block { .. } => 'b',
            Kind::Fifo => 'p',
        }
    }
}

/// Rounds `n` up to a whole number of blocks.
pub fn padded(n: u64) -> u64 {
    n.div_ceil(BLOCK) * BLOCK
}

#[cfg(test)]
mod tests;
