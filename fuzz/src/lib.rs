//! What the fuzz targets share: the stream-only reading loop, the extraction into a watched sandbox
//! with its escape checks, and `repair`, which makes mutated headers and trailers valid again so
//! the fuzzer gets past the checksums and the digest into the extractor.
//!
//! Sandbox layout (one per fuzzing process, under `$CKPT_FUZZ_SANDBOX` or the temp dir):
//!
//! ```text
//! ckpt-fuzz-<pid>/            after every run it holds exactly:
//!     sentinel/victim         a file that must never change, gain a link or a sibling
//!     stage-XXXXXX/           the fresh staging dir of this run (removed after the checks)
//! ```
//!
//! A stream reaching `sentinel` by `../..` from `stage-*/rootfs/` shows up as a changed listing, a
//! hard link to the victim as its link count, a write through an absolute path at the top of `/`
//! as a changed listing of `/`.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Cursor};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ckpt_stream::StreamReader;

/// Largest file the extractor may write in a run (RLIMIT_FSIZE): a zstd bomb cannot fill the disk.
const MAX_FILE: u64 = 64 << 20;
const VICTIM: &[u8] = b"victim: nothing may write, link or replace this file\n";
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

struct Sandbox {
    dir: PathBuf,
    sentinel: PathBuf,
    victim: PathBuf,
    victim_meta: [i64; 7],
    /// Names at the top of `/` when the process started.
    slash: BTreeSet<std::ffi::OsString>,
}

static SANDBOX: OnceLock<Sandbox> = OnceLock::new();
static MIN_FIRST_READ: OnceLock<usize> = OnceLock::new();

/// Inode, mode, owner, group, link count and mtime of the victim file.
fn victim_meta(path: &Path) -> [i64; 7] {
    let m = fs::symlink_metadata(path).expect("ESCAPE: the victim file is gone");
    [
        m.ino() as i64,
        m.mode().into(),
        m.uid().into(),
        m.gid().into(),
        m.nlink() as i64,
        m.mtime(),
        m.mtime_nsec(),
    ]
}

fn names(dir: &Path) -> BTreeSet<std::ffi::OsString> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("harness: listing {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name())
        .collect()
}

extern "C" fn remove_sandbox() {
    if let Some(s) = SANDBOX.get() {
        let _ = force_remove(&s.dir);
    }
}

fn sandbox() -> &'static Sandbox {
    SANDBOX.get_or_init(|| {
        let base = std::env::var_os("CKPT_FUZZ_SANDBOX")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        remove_stale_sandboxes(&base);
        let dir = base.join(format!("ckpt-fuzz-{}", std::process::id()));
        let _ = force_remove(&dir);
        let sentinel = dir.join("sentinel");
        fs::create_dir_all(&sentinel).expect("harness: creating the sandbox");
        let victim = sentinel.join("victim");
        fs::write(&victim, VICTIM).unwrap();
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o644)).unwrap();
        // SAFETY: process-wide settings made once; no memory of ours is handed over.
        unsafe {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let limit = libc::rlimit {
                rlim_cur: MAX_FILE,
                rlim_max: MAX_FILE,
            };
            libc::setrlimit(libc::RLIMIT_FSIZE, &limit);
            libc::atexit(remove_sandbox);
        }
        Sandbox {
            victim_meta: victim_meta(&victim),
            slash: names(Path::new("/")),
            dir,
            sentinel,
            victim,
        }
    })
}

/// Removes the sandboxes of fuzzing processes that are gone (a crash skips the clean-up at exit).
fn remove_stale_sandboxes(base: &Path) {
    let Ok(dir) = fs::read_dir(base) else { return };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.strip_prefix("ckpt-fuzz-"))
            .and_then(|p| p.parse::<libc::pid_t>().ok());
        // SAFETY: kill with signal 0 only checks whether the process exists.
        if let Some(pid) = pid.filter(|&p| p > 0 && unsafe { libc::kill(p, 0) } != 0) {
            if io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
                let _ = force_remove(&base.join(format!("ckpt-fuzz-{pid}")));
            }
        }
    }
}

/// Removes a tree, first making its directories writable when a plain remove is refused.
fn force_remove(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            open_up(path);
            fs::remove_dir_all(path)
        }
        _ => Ok(()),
    }
}

fn open_up(path: &Path) {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return;
    };
    if meta.is_dir() {
        let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o700));
        if let Ok(rd) = fs::read_dir(path) {
            for e in rd.flatten() {
                open_up(&e.path());
            }
        }
    }
}

/// Opens `data` as ckpt-unpack opens its input when no key is given.
fn open(data: &[u8]) -> anyhow::Result<StreamReader> {
    StreamReader::open(Box::new(Cursor::new(data.to_vec())), None)
}

/// Serves a stream in short reads of varying size (1 to 3 bytes first, then 1, 2, 3, 7 bytes, a few
/// hundred, a few KiB or all that is left), as a pipe does with a slow or chunky sender. The sizes are pseudo-random but fixed
/// by the input (seeded from its hash), so a finding replays.
///
/// `CKPT_FUZZ_MIN_FIRST_READ=N` makes the first read at least N bytes: with 4, a reader that sniffs
/// the zstd magic from its first read only (a known bug, see tests/fuzz_regressions.rs) is not hit
/// again and again while fuzzing for others.
struct Chunky {
    data: Cursor<Vec<u8>>,
    rng: u64,
    first: bool,
    min: usize,
}

impl io::Read for Chunky {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let max = match self.first {
            // The first read is the one that a reader sniffing the input looks at: always short.
            true => (1 + self.rng % 3) as usize,
            false => [1, 2, 3, 7, 100, 511, 4096, usize::MAX][(self.rng % 8) as usize],
        };
        self.first = false;
        let n = buf.len().min(max.max(std::mem::replace(&mut self.min, 0)));
        self.data.read(&mut buf[..n])
    }
}

/// Lists the stream as `ckpt-unpack --list` does, the listing thrown away.
fn list_from(input: Box<dyn io::Read + Send>) -> anyhow::Result<()> {
    let mut reader = StreamReader::open(input, None)?;
    ckpt_stream::list(&mut reader, &mut io::sink()).map(drop)
}

/// Lists `data` as a stream twice, from memory in one piece and through short reads (`Chunky`),
/// and checks that both end the same way (for plain input, with the same error message): how the
/// input arrives must not change the verdict. Returns how it ended.
pub fn list(data: &[u8]) -> anyhow::Result<()> {
    let whole = list_from(Box::new(Cursor::new(data.to_vec())));
    let chunky = Chunky {
        data: Cursor::new(data.to_vec()),
        rng: u64::from_le_bytes(blake3::hash(data).as_bytes()[..8].try_into().unwrap()) | 1,
        first: true,
        min: *MIN_FIRST_READ.get_or_init(|| {
            std::env::var("CKPT_FUZZ_MIN_FIRST_READ")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        }),
    };
    let pieces = list_from(Box::new(chunky));
    // Compressed input may fail differently: as input trickles in, the zstd decoder hands out the
    // blocks it has before it reaches a corrupt one, so the tar layer may refuse the stream first.
    let zstd = data.starts_with(&ZSTD_MAGIC);
    let line = |r: &anyhow::Result<()>| match r {
        Ok(()) => "ok".to_string(),
        Err(_) if zstd => "refused".to_string(),
        Err(e) => ckpt_stream::error::one_line(e),
    };
    assert_eq!(
        line(&whole),
        line(&pieces),
        "the same stream read in one piece and in short reads ended differently"
    );
    whole
}

/// Unpacks `data` into a fresh staging dir in the sandbox as ckpt-unpack does, then checks that
/// nothing outside that dir changed, and removes it. A panic here is a finding: either the code
/// under test panicked, or a stream escaped its staging dir.
pub fn unpack_checked(data: &[u8]) -> anyhow::Result<()> {
    let sb = sandbox();
    let stage = tempfile::Builder::new()
        .prefix("stage-")
        .tempdir_in(&sb.dir)
        .expect("harness: creating the staging dir");
    let result = open(data).and_then(|mut reader| {
        ckpt_stream::unpack_into(&mut reader, stage.path(), &mut |_| Ok(()))
    });
    if let Err(e) = &result {
        // The tools print exactly this line; it must be one line and say something.
        let line = ckpt_stream::error::one_line(e);
        assert!(
            !line.is_empty() && !line.contains('\n'),
            "bad error line {line:?}"
        );
    }
    check_no_escape(sb, stage.path());
    let stage = stage.keep();
    if let Err(e) = force_remove(&stage) {
        panic!("harness: cannot remove {}: {e}", stage.display());
    }
    result.map(drop)
}

fn check_no_escape(sb: &Sandbox, stage: &Path) {
    let expect: BTreeSet<_> = ["sentinel".into(), stage.file_name().unwrap().to_owned()].into();
    let found = names(&sb.dir);
    assert_eq!(
        found, expect,
        "ESCAPE: the stream created something next to its staging dir"
    );
    let found = names(&sb.sentinel);
    assert_eq!(
        found,
        ["victim".into()].into(),
        "ESCAPE: the stream created something in the sentinel dir"
    );
    assert_eq!(
        victim_meta(&sb.victim),
        sb.victim_meta,
        "ESCAPE: the victim file's inode, mode, owner, link count or mtime changed"
    );
    assert_eq!(
        fs::read(&sb.victim).unwrap(),
        VICTIM,
        "ESCAPE: the victim file was written"
    );
    let slash = names(Path::new("/"));
    if slash != sb.slash {
        let new: Vec<_> = slash.difference(&sb.slash).collect();
        assert!(new.is_empty(), "ESCAPE: the stream created {new:?} in /");
    }
}

/// Makes a mutated plain stream structurally valid again, so that the fuzzer's changes to header
/// fields reach the code past the checks: every header block's checksum is recomputed, and the
/// first `trailer.json` entry gets the entry count, byte count and digest of the entries before
/// it (its data is replaced; everything after it is kept as it was). zstd input is left alone.
pub fn repair(data: &[u8]) -> Vec<u8> {
    const B: usize = 512;
    let padded = |n: u64| n.div_ceil(B as u64).saturating_mul(B as u64);
    if data.starts_with(&ZSTD_MAGIC) {
        return data.to_vec();
    }
    let mut out = Vec::with_capacity(data.len() + 2 * B);
    let mut chain = blake3::Hasher::new();
    let (mut entries, mut bytes) = (0u64, 0u64);
    // Header bytes of the current entry (pax header, pax data, ustar header).
    let mut raw: Vec<u8> = Vec::new();
    let mut pax_size: Option<u64> = None;
    let mut pos = 0usize;
    while pos + B <= data.len() {
        let block = &data[pos..pos + B];
        if block.iter().all(|&b| b == 0) {
            break;
        }
        let mut header = tar::Header::from_byte_slice(block).clone();
        header.set_cksum();
        let Ok(size) = header.size() else { break };
        pos += B;
        let is_trailer = raw.is_empty() && &*header.path_bytes() == b"trailer.json";
        if is_trailer {
            let json = serde_json::json!({
                "entries": entries,
                "bytes": bytes,
                "digest": format!("blake3:{}", chain.finalize().to_hex()),
            })
            .to_string();
            header.set_size(json.len() as u64);
            header.set_cksum();
            out.extend_from_slice(header.as_bytes());
            out.extend_from_slice(json.as_bytes());
            out.resize(padded(out.len() as u64) as usize, 0);
            let skip = padded(size).min((data.len() - pos) as u64) as usize;
            out.extend_from_slice(&data[pos + skip..]);
            return out;
        }
        out.extend_from_slice(header.as_bytes());
        raw.extend_from_slice(header.as_bytes());
        let area = match header.entry_type() {
            tar::EntryType::XHeader => {
                let len = padded(size);
                if size > 1 << 20 || len > (data.len() - pos) as u64 {
                    break;
                }
                let pax = &data[pos..pos + len as usize];
                pax_size = pax_value(&pax[..size as usize], b"size")
                    .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok());
                raw.extend_from_slice(pax);
                out.extend_from_slice(pax);
                pos += len as usize;
                continue;
            }
            tar::EntryType::Regular => pax_size.take().unwrap_or(size),
            _ => {
                pax_size = None;
                0
            }
        };
        if area > (data.len() - pos) as u64 {
            break;
        }
        chain.update(&raw);
        raw.clear();
        chain.update(blake3::hash(&data[pos..pos + area as usize]).as_bytes());
        entries += 1;
        bytes += area;
        let len = padded(area).min((data.len() - pos) as u64) as usize;
        out.extend_from_slice(&data[pos..pos + len]);
        pos += len;
    }
    out.extend_from_slice(&data[pos..]);
    out
}

/// The value of `key` in pax records, read leniently (the reader itself is strict).
fn pax_value<'a>(mut data: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    while let Some(space) = data.iter().position(|&b| b == b' ') {
        let len: usize = std::str::from_utf8(&data[..space]).ok()?.parse().ok()?;
        if len <= space + 1 || len > data.len() {
            return None;
        }
        let record = data[space + 1..len].strip_suffix(b"\n")?;
        if let Some(value) = record.strip_prefix(key).and_then(|r| r.strip_prefix(b"=")) {
            return Some(value);
        }
        data = &data[len..];
    }
    None
}

/// `CKPT_FUZZ_DUMP=FILE`: the repaired target writes the stream it actually ran to FILE, so a crash
/// found by it can be replayed against the real `ckpt-unpack`.
pub fn dump(data: &[u8]) {
    if let Some(path) = std::env::var_os("CKPT_FUZZ_DUMP") {
        let mut file = fs::File::create(&path).expect("CKPT_FUZZ_DUMP");
        io::copy(&mut &data[..], &mut file).unwrap();
    }
}
