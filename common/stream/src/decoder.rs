//! The decoded input of a stream: read inline at first, then, once the reader calls
//! [`Decoded::decode_in_background`], decompressed by a thread of its own, so that decompression
//! overlaps with hashing and writing files on the reader's thread.

use std::io::{self, Read};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

/// Bytes per chunk handed from the decoder thread to the reader.
const CHUNK: usize = 1 << 20;
/// Chunks in flight (decoded ahead, or being decoded).
const CHUNKS: usize = 4;

pub struct Decoded {
    source: Source,
}

enum Source {
    Inline {
        reader: Box<dyn Read + Send>,
        /// Whether a thread pays off: decompression is work, a plain pipe is not.
        compressed: bool,
    },
    Thread(Chunks),
    Moving,
}

/// The reader's end of the decoder thread.
struct Chunks {
    /// Filled buffers and how many bytes of each are data.
    full: Receiver<io::Result<(Vec<u8>, usize)>>,
    empty: SyncSender<Vec<u8>>,
    chunk: Vec<u8>,
    len: usize,
    pos: usize,
    eof: bool,
}

impl Decoded {
    pub fn new(reader: Box<dyn Read + Send>, compressed: bool) -> Decoded {
        Decoded {
            source: Source::Inline { reader, compressed },
        }
    }

    /// Whether the input is compressed (and so worth a thread, see `decode_in_background`).
    pub fn is_compressed(&self) -> bool {
        matches!(
            self.source,
            Source::Inline {
                compressed: true,
                ..
            } | Source::Thread(_)
        )
    }

    /// Moves decompression to a thread from here on. Call it once this process has forked
    /// whatever it forks (a guard must be forked while the process has one thread).
    pub fn decode_in_background(&mut self) {
        let Source::Inline {
            compressed: true, ..
        } = self.source
        else {
            return;
        };
        let Source::Inline { mut reader, .. } = std::mem::replace(&mut self.source, Source::Moving)
        else {
            unreachable!("checked above");
        };
        let (full_tx, full) = sync_channel::<io::Result<(Vec<u8>, usize)>>(CHUNKS);
        let (empty, empty_rx) = sync_channel::<Vec<u8>>(CHUNKS);
        for _ in 0..CHUNKS - 1 {
            let _ = empty.send(vec![0; CHUNK]);
        }
        std::thread::spawn(move || {
            // Ends when the input ends or fails, or when the reader is gone.
            while let Ok(mut buf) = empty_rx.recv() {
                let (n, err) = fill(&mut reader, &mut buf);
                if (n > 0 || err.is_none()) && full_tx.send(Ok((buf, n))).is_err() {
                    return;
                }
                if let Some(err) = err {
                    let _ = full_tx.send(Err(err));
                    return;
                }
                if n == 0 {
                    return;
                }
            }
        });
        self.source = Source::Thread(Chunks {
            full,
            empty,
            chunk: Vec::new(),
            len: 0,
            pos: 0,
            eof: false,
        });
    }
}

/// One read into `buf` (never waiting for more than the input has: the reader must see an entry
/// as soon as it is decoded, e.g. copied.json before the sender sends more): how much was read
/// (0 at the end), or the error.
fn fill(reader: &mut dyn Read, buf: &mut [u8]) -> (usize, Option<io::Error>) {
    loop {
        match reader.read(buf) {
            Ok(n) => return (n, None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (0, Some(e)),
        }
    }
}

impl Read for Decoded {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.source {
            Source::Inline { reader, .. } => reader.read(buf),
            Source::Thread(chunks) => chunks.read(buf),
            Source::Moving => unreachable!("only during decode_in_background"),
        }
    }
}

impl Chunks {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.len {
            if self.eof {
                return Ok(0);
            }
            let used = std::mem::take(&mut self.chunk);
            if !used.is_empty() {
                let _ = self.empty.send(used);
            }
            match self.full.recv() {
                Ok(Ok((chunk, len))) => {
                    self.eof = len == 0;
                    self.chunk = chunk;
                    self.len = len;
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.eof = true;
                    return Err(e);
                }
                Err(_) => {
                    return Err(io::Error::other("the stream decoder thread ended"));
                }
            }
        }
        let n = buf.len().min(self.len - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Yields `data` in reads of at most 1000 bytes, then an error if `fail`.
    struct Dribble {
        data: Vec<u8>,
        pos: usize,
        fail: bool,
    }

    impl Read for Dribble {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.pos == self.data.len() {
                return match self.fail {
                    true => Err(io::Error::new(io::ErrorKind::InvalidData, "corrupt")),
                    false => Ok(0),
                };
            }
            let n = buf.len().min(1000).min(self.data.len() - self.pos);
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    fn decoded(data: &[u8], fail: bool) -> Decoded {
        let source = Dribble {
            data: data.to_vec(),
            pos: 0,
            fail,
        };
        Decoded::new(Box::new(source), true)
    }

    #[test]
    fn bytes_come_through_in_order_inline_then_threaded() {
        let data: Vec<u8> = (0..3 * CHUNK + 12345)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let mut d = decoded(&data, false);
        let mut head = vec![0; 1000];
        d.read_exact(&mut head).unwrap();
        d.decode_in_background();
        let mut rest = Vec::new();
        d.read_to_end(&mut rest).unwrap();
        assert_eq!([head, rest].concat(), data);
        assert_eq!(d.read(&mut [0; 8]).unwrap(), 0, "EOF stays EOF");
    }

    #[test]
    fn errors_reach_the_reader_after_the_data() {
        let mut d = decoded(&[5; 100], true);
        d.decode_in_background();
        let mut got = Vec::new();
        let err = d.read_to_end(&mut got).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(got, vec![5; 100]);
    }
}
