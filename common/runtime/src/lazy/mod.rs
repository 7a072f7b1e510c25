//! Post-copy (lazy) migration through CRIU's page server: the pieces that talk to CRIU. On the
//! source, CRIU's lazy dump keeps the memory in page pipes and serves it over a socket we hand it
//! (`ps-socket`); [`PageSource`] pulls every lazy page from it, in order, as fast as it comes. On
//! the destination, CRIU's `lazy-pages` daemon feeds the restored tasks on their page faults and in
//! the background, asking a page server for each range; [`serve`] answers it from a [`PageStore`]
//! that fills as the pages arrive. What carries the pages between the two is the caller's.

mod daemon;
mod pagemap;
mod protocol;
mod source;
mod store;

pub use daemon::{serve, LazyDaemon, DAEMON_LOG};
pub use pagemap::{lazy_ranges, LazyRange};
pub use source::PageSource;
pub use store::PageStore;

/// A page, as CRIU's page server counts them.
pub const PAGE_SIZE: u64 = 4096;
