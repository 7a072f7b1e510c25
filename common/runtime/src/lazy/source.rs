//! The source side: pulls the lazy pages out of CRIU's page server (a lazy dump that waits on
//! the `ps-socket` we gave it), one request at a time, each answer read straight into the caller.

use std::io::Read;
use std::os::unix::net::UnixStream;

use anyhow::Context;

use super::protocol::{Iov, ADD_F, FORCE_CLOSE, GET};
use super::{LazyRange, PAGE_SIZE};

/// Our end of the socket CRIU's lazy dump serves pages on.
pub struct PageSource {
    sock: UnixStream,
}

impl PageSource {
    pub fn new(sock: UnixStream) -> PageSource {
        PageSource { sock }
    }

    /// Pulls all of `range`, in pieces of at most `max_pages` (CRIU may answer with fewer):
    /// `each` gets every piece as a range and a reader of exactly its bytes, to be read to the end.
    pub fn pull(
        &mut self,
        range: LazyRange,
        max_pages: u64,
        each: &mut dyn FnMut(LazyRange, &mut dyn Read) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let mut piece = LazyRange { pages: 0, ..range };
        let end = range.vaddr + range.pages * PAGE_SIZE;
        while piece.vaddr < end {
            let want = ((end - piece.vaddr) / PAGE_SIZE).min(max_pages);
            piece.pages = self.get(piece.pid, piece.vaddr, want)?;
            let len = piece.pages * PAGE_SIZE;
            let mut data = (&self.sock).take(len);
            each(piece, &mut data)?;
            if data.limit() != 0 {
                anyhow::bail!("internal: a page-server answer was not read to its end");
            }
            piece.vaddr += len;
        }
        Ok(())
    }

    /// Asks for `pages` pages of `pid` at `vaddr`; returns how many follow (at least one).
    fn get(&mut self, pid: u32, vaddr: u64, pages: u64) -> anyhow::Result<u64> {
        let ask = Iov {
            cmd: GET,
            pages,
            vaddr,
            dst: u64::from(pid),
        };
        ask.write(&mut self.sock)
            .context("asking CRIU's page server for pages")?;
        let answer = Iov::read(&mut self.sock)
            .context("reading CRIU's page server")?
            .context("CRIU's page server hung up (see the dump log)")?;
        let fits = answer.command() == ADD_F
            && answer.vaddr == vaddr
            && answer.pages > 0
            && answer.pages <= pages;
        if !fits {
            anyhow::bail!(
                "CRIU's page server answered {answer:?} to a request for {pages} pages of pid {pid} at {vaddr:#x}"
            );
        }
        Ok(answer.pages)
    }

    /// Ends the session: CRIU's dump then finishes (and leaves the tasks as they are: frozen).
    pub fn close(mut self) -> anyhow::Result<()> {
        let bye = Iov {
            cmd: FORCE_CLOSE,
            pages: 0,
            vaddr: 0,
            dst: 0,
        };
        bye.write(&mut self.sock)
            .context("ending the page-server session")?;
        let mut status = [0u8; 4];
        self.sock
            .read_exact(&mut status)
            .context("CRIU's page server did not confirm the end of the session")?;
        match i32::from_ne_bytes(status) {
            0 => Ok(()),
            s => anyhow::bail!("CRIU's page server ended the session with status {s}"),
        }
    }
}
