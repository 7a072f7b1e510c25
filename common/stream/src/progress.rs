//! Progress on stderr: an indicatif bar when stderr is a terminal and not silenced, nothing otherwise.

use std::io::{self, IsTerminal, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A byte counter, shown as a bar (when the total is known) or a spinner with throughput.
#[derive(Clone, Default)]
pub struct Progress {
    bar: Option<ProgressBar>,
    count: Arc<AtomicU64>,
}

impl Progress {
    /// A progress display labelled `label`; hidden when `quiet` or when stderr is not a terminal.
    pub fn new(label: &str, total: Option<u64>, quiet: bool) -> Progress {
        if quiet || !io::stderr().is_terminal() {
            return Progress::hidden();
        }
        let bar = match total {
            Some(total) => ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
                .with_style(
                    ProgressStyle::with_template(
                        "{prefix} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                ),
            None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()).with_style(
                ProgressStyle::with_template("{prefix} {spinner} {bytes} {binary_bytes_per_sec} {elapsed}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            ),
        };
        bar.set_prefix(label.to_string());
        Progress {
            bar: Some(bar),
            count: Arc::default(),
        }
    }

    /// A counter that shows nothing.
    pub fn hidden() -> Progress {
        Progress::default()
    }

    pub fn inc(&self, n: u64) {
        self.count.fetch_add(n, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    /// Wraps a reader so every byte read advances the display.
    pub fn reader<R: Read>(&self, inner: R) -> Counted<R> {
        Counted {
            inner,
            progress: self.clone(),
        }
    }

    /// Wraps a writer so every byte written advances the display.
    pub fn writer<W: Write>(&self, inner: W) -> Counted<W> {
        Counted {
            inner,
            progress: self.clone(),
        }
    }

    /// Bytes counted so far (also when the display is hidden).
    pub fn bytes(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// A reader or writer that reports its bytes to a [`Progress`].
pub struct Counted<T> {
    inner: T,
    progress: Progress,
}

impl<T> Counted<T> {
    pub fn into_inner(self) -> T {
        self.inner
    }
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.inc(n as u64);
        Ok(n)
    }
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.progress.inc(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Prints a note on stderr unless quiet: `tool: message`.
pub fn note(quiet: bool, tool: &str, message: &str) {
    if !quiet {
        let _ = writeln!(io::stderr(), "{tool}: {message}");
    }
}
