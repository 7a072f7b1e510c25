//! Where streams come from and go to: stdin/stdout or `-i`/`-o` files, refusal to write binary to a
//! terminal, zstd compression on output and detection (by magic) on input, whose first block tells
//! whether it can be a ckpt stream at all.

use std::fs::File;
use std::io::{self, BufReader, IsTerminal, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::str::FromStr;

use anyhow::Context;

use crate::compress::ZstdSink;
use crate::decoder::Decoded;
use crate::error::{bad_stream, bad_stream_io, usage};
use crate::start::{Start, HEAD};

/// I/O buffer size for streams.
pub const STREAM_BUF: usize = 1 << 20;

/// `--compress none|zstd[:LEVEL]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Zstd(i32),
}

impl FromStr for Compression {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a compression: use none, zstd or zstd:LEVEL (1-19)");
        match s.split_once(':') {
            None if s == "none" => Ok(Compression::None),
            None if s == "zstd" => Ok(Compression::Zstd(1)),
            Some(("zstd", level)) => match level.parse() {
                Ok(n) if (1..=19).contains(&n) => Ok(Compression::Zstd(n)),
                _ => Err(bad()),
            },
            _ => Err(bad()),
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Compression::None => f.write_str("none"),
            Compression::Zstd(level) => write!(f, "zstd:{level}"),
        }
    }
}

/// Opens the stream output: `path`, or stdout, which must not be a terminal.
pub fn open_output(path: Option<&Path>) -> anyhow::Result<Box<dyn Write + Send>> {
    match path {
        Some(path) => {
            let file =
                File::create(path).with_context(|| format!("creating {}", path.display()))?;
            Ok(Box::new(file))
        }
        None => {
            if io::stdout().is_terminal() {
                return Err(usage(
                    "refusing to write a binary stream to a terminal: redirect stdout or use -o FILE",
                ));
            }
            Ok(Box::new(std_fd(io::stdout().as_fd())?))
        }
    }
}

/// A File on a duplicate of stdin or stdout, bypassing std's own buffering (we buffer ourselves).
/// A pipe gets a 1 MiB buffer: with the default 64 KiB, each of our 1 MiB writes or reads would
/// wait for the other end 16 times.
fn std_fd(fd: BorrowedFd<'_>) -> anyhow::Result<File> {
    let file = File::from(
        fd.try_clone_to_owned()
            .context("duplicating a standard stream")?,
    );
    if file.metadata().is_ok_and(|m| m.file_type().is_fifo()) {
        // Best effort: an unprivileged user may be held to a smaller pipe-max-size.
        let _ = rustix::pipe::fcntl_setpipe_size(&file, STREAM_BUF);
    }
    Ok(file)
}

/// Waits until `fd` is readable (or, for a pidfd, its process ended), at most `timeout`.
pub fn wait_readable(fd: BorrowedFd<'_>, timeout: std::time::Duration) -> bool {
    let timeout = rustix::event::Timespec {
        tv_sec: timeout.as_secs() as _,
        tv_nsec: timeout.subsec_nanos() as _,
    };
    let mut fds = [rustix::event::PollFd::from_borrowed_fd(
        fd,
        rustix::event::PollFlags::IN,
    )];
    rustix::event::poll(&mut fds, Some(&timeout)).is_ok_and(|n| n > 0)
}

/// Opens the stream input: `path`, or stdin, which must not be a terminal.
pub fn open_input(path: Option<&Path>) -> anyhow::Result<Box<dyn Read + Send>> {
    match path {
        Some(path) => {
            let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
            Ok(Box::new(file))
        }
        None => {
            if io::stdin().is_terminal() {
                return Err(usage(
                    "stdin is a terminal: pipe a ckpt stream in or use -i FILE",
                ));
            }
            Ok(Box::new(std_fd(io::stdin().as_fd())?))
        }
    }
}

/// Input buffer: headers and small files are read through it; larger reads (entry data, zstd's
/// input) bypass it and go straight from the pipe into their buffer, without a copy.
const INPUT_BUF: usize = 64 << 10;

/// Wraps `input` in a zstd decoder when it starts with the zstd magic. The decoder reads every
/// frame to the true end of input and checks frame checksums. Refuses, by its first block (plain or
/// decompressed), an input that cannot be a ckpt stream, saying what it is; `path` is where it
/// comes from, as [`open_input`] took it (None: standard input).
pub fn decompress(input: Box<dyn Read + Send>, path: Option<&Path>) -> anyhow::Result<Decoded> {
    let mut buffered = BufReader::with_capacity(INPUT_BUF, input);
    let head = read_head(&mut buffered)?;
    let start = Start::of(&head);
    if let Some(problem) = start.problem(path, false) {
        return Err(bad_stream(problem));
    }
    let buffered = io::Cursor::new(head).chain(buffered);
    if start != Start::Zstd {
        return Ok(Decoded::new(Box::new(buffered), false));
    }
    let decoder = zstd::stream::read::Decoder::with_buffer(buffered).context("starting zstd")?;
    let mut decoded = BufReader::with_capacity(STREAM_BUF, ZstdErrors(decoder));
    let head = read_head(&mut decoded)?;
    if let Some(problem) = Start::of(&head).problem(path, true) {
        return Err(bad_stream(problem));
    }
    let decoded = io::Cursor::new(head).chain(decoded);
    Ok(Decoded::new(Box::new(decoded), true))
}

/// The first block of `input` (less when it is shorter), however many reads of a pipe it takes to
/// arrive: what the input is must not depend on how it arrives.
fn read_head(input: &mut impl Read) -> anyhow::Result<Vec<u8>> {
    let mut head = vec![0u8; HEAD];
    let mut got = 0;
    while got < head.len() {
        match input.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(anyhow::Error::new(e).context("reading the stream")),
        }
    }
    head.truncate(got);
    Ok(head)
}

/// Names zstd decoding failures as stream corruption.
struct ZstdErrors<R>(R);

impl<R: Read> Read for ZstdErrors<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf).map_err(|e| {
            let kind = e.kind();
            let text = match kind {
                io::ErrorKind::UnexpectedEof => "zstd stream truncated".to_string(),
                io::ErrorKind::Other | io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput => {
                    format!("zstd data is corrupt ({e})")
                }
                _ => return e,
            };
            bad_stream_io(kind, text)
        })
    }
}

/// Input per zstd worker job: 1 MiB keeps ckpt-pack and ckpt-dump near 20 MiB RSS (the default,
/// about 2 MiB at level 1, needs 33 MiB on incompressible memory images) for the same ratio.
const ZSTD_JOB: u32 = 1 << 20;

/// The stream output, compressed or not. Call [`Sink::finish`]: it ends the zstd frame and flushes.
pub enum Sink<W: Write> {
    Plain(io::BufWriter<W>),
    Zstd(ZstdSink<io::BufWriter<W>>),
}

impl<W: Write> Sink<W> {
    pub fn new(out: W, compression: Compression) -> anyhow::Result<Sink<W>> {
        let buffered = io::BufWriter::with_capacity(STREAM_BUF, out);
        Ok(match compression {
            Compression::None => Sink::Plain(buffered),
            Compression::Zstd(level) => Sink::Zstd(ZstdSink::new(buffered, level, ZSTD_JOB)?),
        })
    }

    /// Ends compression and flushes everything; errors here mean the stream is incomplete.
    pub fn finish(self) -> anyhow::Result<W> {
        let buffered = match self {
            Sink::Plain(w) => w,
            Sink::Zstd(enc) => enc.finish().context("ending the zstd frame")?,
        };
        buffered
            .into_inner()
            .map_err(|e| e.into_error())
            .context("flushing the stream")
    }
}

impl<W: Write> Write for Sink<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Plain(w) => w.write(buf),
            Sink::Zstd(w) => w.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Sink::Plain(w) => w.write_all(buf),
            Sink::Zstd(w) => w.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Plain(w) => w.flush(),
            Sink::Zstd(w) => w.flush(),
        }
    }
}

impl Compression {
    /// Threads the compressor keeps busy besides the caller's.
    pub fn threads(&self) -> usize {
        match self {
            Compression::None => 0,
            Compression::Zstd(_) => crate::compress::workers(),
        }
    }
}
