//! zstd output that skips the compressor where it cannot win: incompressible stretches (random
//! memory, media, archives) go out as zstd raw blocks (RFC 8878, 3.1.1.2), so the stream stays one
//! ordinary sequence of zstd frames that any zstd decoder reads, at the cost of a copy instead of a
//! compression pass on the sender.

use std::io::{self, IoSlice, Write};

use zstd::zstd_safe::zstd_sys::ZSTD_EndDirective::{
    self as Directive, ZSTD_e_continue as CONTINUE, ZSTD_e_end as END, ZSTD_e_flush as FLUSH,
};
use zstd::zstd_safe::{self, CCtx, CParameter, InBuffer, OutBuffer};

/// Input is judged in segments of this size: each goes to the compressor or out as raw blocks.
const SEGMENT: usize = 1 << 20;
/// Segments shorter than this (a flush of a small tail) keep the current mode: judging them costs
/// more than it can save, and every switch ends a frame.
const SMALL_SEGMENT: usize = 64 << 10;
/// The probe compresses this many bytes from each of [`PROBES`] places spread over a segment.
const PROBE_BYTES: usize = 8 << 10;
const PROBES: usize = 4;
/// A segment whose probe saves less than 1/32 of its size is sent raw.
const MIN_SAVING_SHIFT: u32 = 5;
/// The largest raw block (RFC 8878: Block_Maximum_Size is at most 128 KiB).
const RAW_BLOCK: usize = 128 << 10;
/// A frame header with no content size, no checksum, no dictionary and a 128 KiB window
/// (descriptor 0x00, window descriptor exponent 7 = 2^17): enough for raw blocks of [`RAW_BLOCK`].
const RAW_FRAME_HEADER: [u8; 6] = [0x28, 0xb5, 0x2f, 0xfd, 0x00, 7 << 3];

/// zstd's worker threads: one per core.
pub fn workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Which frame the output is in the middle of.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Frame {
    None,
    Zstd,
    Raw,
}

/// Counts of input bytes by how they were sent, for tests and stats.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct Sent {
    pub compressed: u64,
    pub raw: u64,
}

/// A zstd writer that decides, segment by segment, between compressing and storing raw.
/// Call [`ZstdSink::finish`]: it ends the last frame.
pub struct ZstdSink<W: Write> {
    out: W,
    cctx: CCtx<'static>,
    probe: CCtx<'static>,
    pending: Vec<u8>,
    scratch: Vec<u8>,
    frame: Frame,
    sent: Sent,
}

impl<W: Write> ZstdSink<W> {
    /// A writer compressing at `level` on one worker per core, in jobs of `job_size` bytes.
    pub fn new(out: W, level: i32, job_size: u32) -> io::Result<ZstdSink<W>> {
        let mut cctx = CCtx::try_create().ok_or_else(|| io::Error::other("zstd: out of memory"))?;
        for param in [
            CParameter::CompressionLevel(level),
            CParameter::ChecksumFlag(true),
            CParameter::NbWorkers(workers() as u32),
            CParameter::JobSize(job_size),
        ] {
            cctx.set_parameter(param).map_err(zstd_error)?;
        }
        let probe = CCtx::try_create().ok_or_else(|| io::Error::other("zstd: out of memory"))?;
        Ok(ZstdSink {
            out,
            cctx,
            probe,
            pending: Vec::with_capacity(SEGMENT),
            scratch: Vec::with_capacity(CCtx::out_size().max(RAW_BLOCK)),
            frame: Frame::None,
            sent: Sent::default(),
        })
    }

    /// Input bytes so far, by how they were sent.
    pub fn sent(&self) -> Sent {
        self.sent
    }

    /// Sends what is pending and ends the open frame; the stream is then complete.
    pub fn finish(mut self) -> io::Result<W> {
        self.send_pending()?;
        match self.frame {
            Frame::Raw => self.end_raw()?,
            // An empty stream is still one (empty) zstd frame.
            Frame::Zstd | Frame::None => self.run(&[], END)?,
        }
        self.out.flush()?;
        Ok(self.out)
    }

    /// Sends the pending segment.
    fn send_pending(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let segment = std::mem::take(&mut self.pending);
        let result = self.send(&segment);
        self.pending = segment;
        self.pending.clear();
        result
    }

    /// Sends one segment, compressed or raw.
    fn send(&mut self, segment: &[u8]) -> io::Result<()> {
        let raw = match self.frame {
            Frame::Zstd | Frame::Raw if segment.len() < SMALL_SEGMENT => self.frame == Frame::Raw,
            _ => self.incompressible(segment)?,
        };
        if raw {
            self.send_raw(segment)
        } else {
            self.send_compressed(segment)
        }
    }

    /// Whether `segment` is not worth compressing, judged from a few samples of it.
    fn incompressible(&mut self, segment: &[u8]) -> io::Result<bool> {
        let len = segment.len();
        let mut sample = Vec::with_capacity(PROBES * PROBE_BYTES);
        if len <= PROBES * PROBE_BYTES {
            sample.extend_from_slice(segment);
        } else {
            for i in 0..PROBES {
                let at = (len - PROBE_BYTES) * i / (PROBES - 1);
                sample.extend_from_slice(&segment[at..at + PROBE_BYTES]);
            }
        }
        self.scratch.clear();
        self.scratch
            .reserve(zstd_safe::compress_bound(sample.len()));
        let size = self
            .probe
            .compress(&mut self.scratch, &sample, 1)
            .map_err(zstd_error)?;
        Ok(size + (sample.len() >> MIN_SAVING_SHIFT) >= sample.len())
    }

    fn send_compressed(&mut self, data: &[u8]) -> io::Result<()> {
        if self.frame == Frame::Raw {
            self.end_raw()?;
        }
        self.frame = Frame::Zstd;
        self.run(data, CONTINUE)?;
        self.sent.compressed += data.len() as u64;
        Ok(())
    }

    /// Writes `data` as raw blocks with one vectored write: a whole segment is more than the
    /// output's buffer holds, so it goes straight to the pipe instead of being copied again.
    fn send_raw(&mut self, data: &[u8]) -> io::Result<()> {
        if self.frame == Frame::Zstd {
            self.run(&[], END)?;
        }
        if self.frame != Frame::Raw {
            self.out.write_all(&RAW_FRAME_HEADER)?;
            self.frame = Frame::Raw;
        }
        let headers: Vec<[u8; 3]> = data
            .chunks(RAW_BLOCK)
            .map(|block| block_header(block.len(), false))
            .collect();
        let mut slices: Vec<IoSlice<'_>> = headers
            .iter()
            .zip(data.chunks(RAW_BLOCK))
            .flat_map(|(header, block)| [IoSlice::new(header), IoSlice::new(block)])
            .collect();
        let mut slices = &mut slices[..];
        while !slices.is_empty() {
            match self.out.write_vectored(slices) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => IoSlice::advance_slices(&mut slices, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.sent.raw += data.len() as u64;
        Ok(())
    }

    /// Ends the raw frame with an empty last block, as zstd itself does.
    fn end_raw(&mut self) -> io::Result<()> {
        self.out.write_all(&block_header(0, true))?;
        self.frame = Frame::None;
        Ok(())
    }

    /// Feeds `data` to the compressor with `directive`, writing out what it produces; with flush
    /// or end, until the compressor says it has nothing left.
    fn run(&mut self, data: &[u8], directive: Directive) -> io::Result<()> {
        let mut input = InBuffer::around(data);
        loop {
            self.scratch.clear();
            let mut output = OutBuffer::around(&mut self.scratch);
            let left = self
                .cctx
                .compress_stream2(&mut output, &mut input, directive)
                .map_err(zstd_error)?;
            self.out.write_all(output.as_slice())?;
            let done = if directive == CONTINUE {
                input.pos() == data.len()
            } else {
                left == 0
            };
            if done {
                break;
            }
        }
        if directive == END {
            self.frame = Frame::None;
        }
        Ok(())
    }
}

impl<W: Write> Write for ZstdSink<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // A whole segment in one write is judged and sent where it is, without a copy.
        if buf.len() >= SEGMENT {
            self.send_pending()?;
            self.send(&buf[..SEGMENT])?;
            return Ok(SEGMENT);
        }
        let n = buf.len().min(SEGMENT - self.pending.len());
        self.pending.extend_from_slice(&buf[..n]);
        if self.pending.len() == SEGMENT {
            self.send_pending()?;
        }
        Ok(n)
    }

    /// Sends everything written so far: the receiver can decode all of it.
    fn flush(&mut self) -> io::Result<()> {
        self.send_pending()?;
        if self.frame == Frame::Zstd {
            self.run(&[], FLUSH)?;
        }
        self.out.flush()
    }
}

/// A zstd block header: Last_Block, Block_Type Raw (0) and Block_Size, 3 bytes little-endian.
fn block_header(size: usize, last: bool) -> [u8; 3] {
    debug_assert!(size <= RAW_BLOCK);
    let word = (size as u32) << 3 | u32::from(last);
    let bytes = word.to_le_bytes();
    [bytes[0], bytes[1], bytes[2]]
}

fn zstd_error(code: usize) -> io::Error {
    io::Error::other(format!("zstd: {}", zstd_safe::get_error_name(code)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Deterministic incompressible bytes (xorshift), so a failure can be replayed.
    fn noise(len: usize, mut seed: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            out.extend_from_slice(&seed.to_le_bytes());
        }
        out.truncate(len);
        out
    }

    fn text(len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 64);
        let mut i = 0u64;
        while out.len() < len {
            out.extend_from_slice(format!("{i:08} GET /index.html 200 {}\n", i % 97).as_bytes());
            i += 1;
        }
        out.truncate(len);
        out
    }

    /// Writes `parts` in pieces of `piece` bytes, flushing after each part.
    fn encode_in(piece: usize, parts: &[&[u8]]) -> (Vec<u8>, Sent) {
        let mut sink = ZstdSink::new(Vec::new(), 1, 1 << 20).unwrap();
        for part in parts {
            for piece in part.chunks(piece) {
                sink.write_all(piece).unwrap();
            }
            sink.flush().unwrap();
        }
        let sent = sink.sent();
        (sink.finish().unwrap(), sent)
    }

    /// Writes `parts` in uneven pieces smaller than a segment, flushing after each part.
    fn encode(parts: &[&[u8]]) -> (Vec<u8>, Sent) {
        encode_in(70_001, parts)
    }

    /// Decodes with zstd's own streaming decoder, all frames.
    fn decode(stream: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        zstd::stream::read::Decoder::new(stream)?.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn noise_goes_raw_and_text_is_compressed() {
        let (noise, text) = (noise(3 << 20, 7), text(3 << 20));
        // Small writes are gathered into segments; writes of 1.5 segments are sent in place.
        for piece in [70_001, 3 << 19] {
            let (stream, sent) = encode_in(piece, &[&text, &noise, &text]);
            assert_eq!(
                decode(&stream).unwrap(),
                [&text[..], &noise, &text].concat()
            );
            assert_eq!(sent.raw, noise.len() as u64, "{piece}: {sent:?}");
            assert_eq!(sent.compressed, 2 * text.len() as u64, "{piece}: {sent:?}");
            // Both texts shrink, and the raw part costs only its block headers.
            assert!(
                stream.len() < noise.len() + text.len() / 4,
                "{}",
                stream.len()
            );
        }
    }

    #[test]
    fn small_flushes_keep_the_mode_and_decode() {
        let noise = noise(2 << 20, 3);
        let mut parts: Vec<&[u8]> = vec![&noise];
        parts.extend(std::iter::repeat_n(&b"tiny header"[..], 5));
        parts.push(&[]);
        let (stream, sent) = encode(&parts);
        assert_eq!(decode(&stream).unwrap(), parts.concat());
        assert_eq!(sent.compressed, 0, "{sent:?}");
    }

    #[test]
    fn empty_input_is_one_empty_frame() {
        let (stream, _) = encode(&[]);
        assert!(stream.starts_with(&RAW_FRAME_HEADER[..4]));
        assert!(decode(&stream).unwrap().is_empty());
    }

    #[test]
    fn every_flip_in_raw_framing_is_refused_or_harmless() {
        let noise = noise(300 << 10, 11);
        let (stream, _) = encode(&[&noise]);
        // The frame header, the first block header, and the end: the framing around raw data.
        let framing = (0..RAW_FRAME_HEADER.len() + 3).chain(stream.len() - 3..stream.len());
        for at in framing {
            for bit in 0..8 {
                let mut bad = stream.clone();
                bad[at] ^= 1 << bit;
                if let Ok(out) = decode(&bad) {
                    // Some header bits (the window size) do not change what is decoded.
                    assert_eq!(
                        out, noise,
                        "flip of bit {bit} at byte {at} changed the data"
                    );
                }
            }
        }
    }

    #[test]
    fn truncated_raw_frame_is_an_error() {
        let noise = noise(300 << 10, 5);
        let (stream, _) = encode(&[&noise]);
        for cut in [stream.len() - 1, stream.len() - 3, 200 << 10, 7] {
            assert!(decode(&stream[..cut]).is_err(), "cut at {cut} decoded");
        }
    }
}
