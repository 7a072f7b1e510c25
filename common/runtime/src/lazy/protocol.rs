//! CRIU's page-server messages (criu/page-xfer.c): a 32-byte header, `cmd` (with flags in its upper
//! 16 bits), the number of pages, the address and the destination (for a process: its pid), in
//! host byte order; a `GET` is answered by an `ADD_F` header and the pages, a `FORCE_CLOSE` by a
//! 32-bit status.

use std::io::{Read, Write};

/// Ask for pages (lazy-pages daemon to page server).
pub const GET: u32 = 7;
/// Pages follow (page server to lazy-pages daemon), with `PE_PRESENT` in the flags.
pub const ADD_F: u32 = 6;
/// The pages are present (CRIU's `PE_PRESENT`), the flag of an `ADD_F` answer.
pub const PE_PRESENT: u32 = 1 << 2;
/// End the session (sent over a `ps-socket`, which the other side may hold open).
pub const FORCE_CLOSE: u32 = 0x1024;
/// End the session (over a connection of its own).
pub const CLOSE: u32 = 0x1023;
/// The command in the low bits of `cmd`.
const CMD_MASK: u32 = 0xffff;

/// One message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Iov {
    pub cmd: u32,
    pub pages: u64,
    pub vaddr: u64,
    pub dst: u64,
}

impl Iov {
    const SIZE: usize = 32;

    /// The command, without its flags.
    pub fn command(&self) -> u32 {
        self.cmd & CMD_MASK
    }

    pub fn write(&self, out: &mut impl Write) -> std::io::Result<()> {
        let mut buf = [0u8; Iov::SIZE];
        buf[0..4].copy_from_slice(&self.cmd.to_ne_bytes());
        buf[8..16].copy_from_slice(&self.pages.to_ne_bytes());
        buf[16..24].copy_from_slice(&self.vaddr.to_ne_bytes());
        buf[24..32].copy_from_slice(&self.dst.to_ne_bytes());
        out.write_all(&buf)
    }

    /// The next header, or None at a clean end of input.
    pub fn read(input: &mut impl Read) -> std::io::Result<Option<Iov>> {
        let mut buf = [0u8; Iov::SIZE];
        let mut got = 0;
        while got < Iov::SIZE {
            match input.read(&mut buf[got..]) {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[at..at + 8]);
            u64::from_ne_bytes(b)
        };
        Ok(Some(Iov {
            cmd: u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]),
            pages: u64_at(8),
            vaddr: u64_at(16),
            dst: u64_at(24),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_is_read_back_as_written() {
        let iov = Iov {
            cmd: ADD_F | PE_PRESENT << 16,
            pages: 3,
            vaddr: 0x7f00_0000_1000,
            dst: 42,
        };
        let mut bytes = Vec::new();
        iov.write(&mut bytes).unwrap();
        assert_eq!(bytes.len(), 32);
        let back = Iov::read(&mut &bytes[..]).unwrap().unwrap();
        assert_eq!(back, iov);
        assert_eq!(back.command(), ADD_F);
        assert_eq!(Iov::read(&mut &[][..]).unwrap(), None);
        assert!(Iov::read(&mut &bytes[..5]).is_err());
    }
}
