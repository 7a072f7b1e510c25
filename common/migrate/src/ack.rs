//! The --ack protocol between ckpt-restore (which writes it on its stdout) and ckpt-dump (which
//! reads it back through a fifo or /dev/fd/N): at most one `{"copied":N}` line (the live copy is
//! unpacked), then exactly one result line (see man/ckpt-restore.1). Both sides are here.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// The state of the container a result line reports.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
pub enum State {
    /// Restored and running on the receiver: the only state that lets the sender give its copy up.
    Running,
    /// Not running on the receiver (the restore failed or never started).
    Stopped,
    /// `ckpt-restore --check`: verified, could be restored, nothing changed.
    Checked,
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            State::Running => "RUNNING",
            State::Stopped => "STOPPED",
            State::Checked => "CHECKED",
        })
    }
}

/// What ckpt-restore prints as its one line on stdout, success or not.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RestoreResult {
    pub ok: bool,
    pub name: String,
    pub lxcpath: String,
    pub host: String,
    /// The container's state on the receiver.
    pub state: State,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub timings_ms: RestoreTimings,
}

/// ckpt-restore's phases, in milliseconds since it started.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RestoreTimings {
    /// Start until the trailer verified (the whole stream received and unpacked).
    pub unpack: u64,
    /// Trailer verified (with --lazy: the images' seal) until the container was RUNNING: the
    /// receiver's share of the downtime.
    pub restore: u64,
    /// Post-copy: start until every page of memory was in the restored tasks.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub memory: u64,
    pub total: u64,
}

/// With [`ckpt_stream::Manifest::await_copy`], what ckpt-restore prints once it has unpacked
/// everything before `copied.json`, before its result line.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CopiedLine {
    pub copied: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// In a post-copy migration, what ckpt-restore prints once the container runs (its memory still
/// arriving), before its result line: the sender holds back the bulk of the memory until then,
/// so that sending it does not slow the restore down.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RestoredLine {
    /// Milliseconds from the images' seal until the container ran.
    pub restored: u64,
}

/// ckpt-restore's side: tells the sender the container runs (post-copy).
pub fn send_restored(ms: u64) -> anyhow::Result<()> {
    send(&RestoredLine { restored: ms }).context("telling the sender the container runs")
}

/// ckpt-restore's side: tells the sender the live copy (`entries` entries) is unpacked.
pub fn send_copied(entries: u64) -> anyhow::Result<()> {
    send(&CopiedLine { copied: entries }).context("telling the sender the live copy is unpacked")
}

/// ckpt-restore's side: prints its result line.
pub fn send_result(result: &RestoreResult) -> anyhow::Result<()> {
    send(result).context("printing the result line")
}

/// One line on stdout, flushed at once (the sender is waiting for it).
fn send(line: &impl Serialize) -> anyhow::Result<()> {
    let line = serde_json::to_string(line)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

/// ckpt-dump's side: opens the ack file now: opening a fifo waits for its writer, which the shell opens for
/// `ssh ... > fifo` at the same time as our stdout pipe.
pub fn open(path: &Path) -> anyhow::Result<BufReader<File>> {
    let file =
        File::open(path).with_context(|| format!("opening the ack file {}", path.display()))?;
    Ok(BufReader::new(file))
}

/// ckpt-dump's side, when it ends before [`open`]: opens the ack fifo so that its writer (the
/// shell's `ssh ... > fifo`, blocked until a reader comes) goes on and sees the pipeline end,
/// instead of waiting forever. The shell starts that writer at the same time as ckpt-dump, so it
/// may open the fifo only after a quick refusal: the fifo stays open until the writer has said
/// something or gone (the receiver reports its failed, empty input at once), for at most
/// [`RELEASE_GRACE`]. Anything but a fifo is left alone.
pub fn release(path: &Path) {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    if !std::fs::metadata(path).is_ok_and(|m| m.file_type().is_fifo()) {
        return;
    }
    let reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path);
    if let Ok(reader) = reader {
        ckpt_stream::io::wait_readable(reader.as_fd(), RELEASE_GRACE);
    }
}

/// How long [`release`] waits for the fifo's writer.
pub const RELEASE_GRACE: Duration = Duration::from_secs(5);

/// How long ckpt-dump waits for the receiver to unpack the live copy before it freezes anyway (a
/// stage that holds back the end of the copy until more data comes would otherwise stall it).
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(10);

/// Waits for ckpt-restore's line saying it has unpacked the live copy, so that the freeze does not
/// also wait for the receiver's backlog. A result line instead is its failure (e.g. a name clash).
pub fn await_copied(ack: &mut BufReader<File>, name: &str) -> anyhow::Result<()> {
    let arrived = arrives_within(ack, CATCH_UP_TIMEOUT);
    if !arrived {
        return Ok(()); // a slow receiver: freeze all the same
    }
    match read_line(ack)? {
        AckLine::Copied | AckLine::Restored => Ok(()),
        AckLine::Result(result) => check_result(result, name).map(|_| ()),
    }
}

/// Whether something to read is on the ack channel, or comes within `wait`.
fn arrives_within(ack: &BufReader<File>, wait: Duration) -> bool {
    !ack.buffer().is_empty() || ckpt_stream::io::wait_readable(ack.get_ref().as_fd(), wait)
}

/// A line on the --ack channel.
enum AckLine {
    /// The receiver unpacked the live copy.
    Copied,
    /// The receiver runs the container, its memory still arriving.
    Restored,
    Result(RestoreResult),
}

/// How long ckpt-dump holds back the bulk of a post-copy's memory for the receiver's restore
/// (which takes 0.2-1 s here); then it sends it anyway (a stage that holds back the end of what
/// it got, such as `head -c` with its stdio buffer, would otherwise keep the seal from the
/// receiver until more comes).
const RESTORE_WAIT: Duration = Duration::from_secs(3);

/// ckpt-dump's side, post-copy: waits until the receiver says the container runs. A result line
/// instead is its failure; silence past [`RESTORE_WAIT`] is not.
pub fn await_restored(ack: &mut BufReader<File>, name: &str) -> anyhow::Result<()> {
    loop {
        let arrived = arrives_within(ack, RESTORE_WAIT);
        if !arrived {
            return Ok(());
        }
        match read_line(ack)? {
            AckLine::Copied => {}
            AckLine::Restored => return Ok(()),
            AckLine::Result(result) => return check_result(result, name).map(|_| ()),
        }
    }
}

fn read_line(ack: &mut BufReader<File>) -> anyhow::Result<AckLine> {
    let mut line = String::new();
    ack.read_line(&mut line)
        .context("reading the receiver's result")?;
    if line.trim().is_empty() {
        anyhow::bail!(
            "the receiver ended without reporting a restore (killed, or the connection was lost)"
        );
    }
    if let Ok(result) = serde_json::from_str::<RestoreResult>(line.trim()) {
        return Ok(AckLine::Result(result));
    }
    if serde_json::from_str::<RestoredLine>(line.trim()).is_ok() {
        return Ok(AckLine::Restored);
    }
    match serde_json::from_str::<CopiedLine>(line.trim()) {
        Ok(_) => Ok(AckLine::Copied),
        Err(e) => Err(anyhow::anyhow!(
            "the receiver's result is not a ckpt-restore result line ({e})"
        )),
    }
}

/// Reads ckpt-restore's result line; anything but a RUNNING container of this name is failure.
pub fn read_result(mut ack: BufReader<File>, name: &str) -> anyhow::Result<RestoreResult> {
    loop {
        if let AckLine::Result(result) = read_line(&mut ack)? {
            return check_result(result, name);
        }
    }
}

/// How long ckpt-dump waits for the receiver's reason after the stream failed.
pub const REASON_GRACE: Duration = Duration::from_secs(3);

/// [`read_result`], but gives up (None) when no line arrives within `wait` (None: no limit).
pub fn read_result_within(
    ack: BufReader<File>,
    name: &str,
    wait: Option<Duration>,
) -> Option<anyhow::Result<RestoreResult>> {
    if let Some(wait) = wait {
        let arrived = arrives_within(&ack, wait);
        if !arrived {
            return None;
        }
    }
    Some(read_result(ack, name))
}

fn check_result(result: RestoreResult, name: &str) -> anyhow::Result<RestoreResult> {
    if !result.ok || result.state != State::Running || result.name != name {
        let why = result
            .error
            .clone()
            .unwrap_or_else(|| format!("state {}", result.state));
        anyhow::bail!("the receiver could not restore {name}: {why}");
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, Write};

    fn channel(lines: &str) -> BufReader<File> {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(lines.as_bytes()).unwrap();
        file.rewind().unwrap();
        BufReader::new(file)
    }

    const RUNNING: &str = r#"{"ok":true,"name":"u1","lxcpath":"/l","host":"h2","state":"RUNNING","timings_ms":{"unpack":1,"restore":2,"total":3}}"#;

    #[test]
    fn the_copied_line_comes_before_the_result() {
        let mut ack = channel(&format!("{{\"copied\":7}}\n{RUNNING}\n"));
        await_copied(&mut ack, "u1").unwrap();
        assert_eq!(read_result(ack, "u1").unwrap().host, "h2");
        // A result that arrives while the sender waits for the copy is read all the same.
        assert_eq!(
            read_result(channel(&format!("{{\"copied\":7}}\n{RUNNING}\n")), "u1")
                .unwrap()
                .state,
            State::Running
        );
    }

    #[test]
    fn a_post_copy_receiver_says_it_runs_before_its_result() {
        let mut ack = channel(&format!(
            "{{\"copied\":7}}\n{{\"restored\":250}}\n{RUNNING}\n"
        ));
        await_copied(&mut ack, "u1").unwrap();
        await_restored(&mut ack, "u1").unwrap();
        assert_eq!(read_result(ack, "u1").unwrap().host, "h2");
        let failed = r#"{"ok":false,"name":"u1","lxcpath":"/l","host":"h2","state":"STOPPED","error":"no uffd","timings_ms":{"unpack":1,"restore":0,"total":1}}"#;
        let err = await_restored(&mut channel(&format!("{failed}\n")), "u1").unwrap_err();
        assert!(err.to_string().contains("no uffd"), "{err}");
    }

    #[test]
    fn failures_end_of_input_and_strangers_are_errors() {
        let failed = r#"{"ok":false,"name":"u1","lxcpath":"/l","host":"h2","state":"STOPPED","error":"name clash","timings_ms":{"unpack":1,"restore":0,"total":1}}"#;
        let err = await_copied(&mut channel(&format!("{failed}\n")), "u1").unwrap_err();
        assert!(
            err.to_string().contains("could not restore u1: name clash"),
            "{err}"
        );
        assert!(read_result(channel(&format!("{RUNNING}\n")), "u2").is_err());
        let err = read_result(channel(""), "u1").unwrap_err();
        assert!(err.to_string().contains("ended without reporting"), "{err}");
        assert!(read_result(channel("hello\n"), "u1").is_err());
    }
}
