//! The ckpt stream format: the manifest, the trailer, and which entry paths a stream may hold.
//! The byte-level layout is documented in man/ckpt-stream.5.

use serde::{Deserialize, Serialize};

use crate::auth::Key;
use crate::error::bad_stream;
use crate::wire::{Kind, Seal};

/// `format` field of every manifest.
pub const FORMAT_NAME: &str = "ckpt";
/// Version of the stream format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// First entry of every stream.
pub const MANIFEST_PATH: &str = "manifest.json";
/// Last entry of every stream.
pub const TRAILER_PATH: &str = "trailer.json";
/// In a live stream, ends the copy of the rootfs made while the container ran: the `rootfs/`
/// entries after it are its changes since, which replace or delete (see [`is_whiteout`]).
pub const COPIED_PATH: &str = "copied.json";
/// In a lazy stream, vouches for every entry before it (see [`Mark::Seal`]): the CRIU images
/// before the first one, then each run of memory.
pub const SEAL_PATH: &str = "seal.json";
/// In a lazy stream, the root of the memory entries after the first seal:
/// `memory/<pid>/<vaddr, 16 hex digits>`, whole pages of one process (see [`MemoryRange`]).
pub const MEMORY_ROOT: &str = "memory";
/// Size of a page of memory (x86-64, arm64 with 4 KiB pages: what CRIU's page server sends).
pub const PAGE_SIZE: u64 = 4096;
/// Largest memory entry accepted.
pub const MAX_MEMORY_ENTRY: u64 = 64 << 20;
/// The three directory roots of a bundle, in stream order.
pub const ROOTS: [&str; 3] = ["container", "rootfs", "images"];
/// Largest manifest or trailer accepted (they are small JSON documents).
pub const MAX_JSON_SIZE: u64 = 1 << 20;

/// What a stream carries: written first so a receiver can refuse it before gigabytes arrive.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    /// Container name.
    pub name: String,
    /// The lxcpath the container came from; a receiver rewrites it in the config.
    pub lxcpath: String,
    pub host: String,
    pub kernel: String,
    pub arch: String,
    /// `criu --version` of the source, when images are included.
    #[serde(default)]
    pub criu: Option<String>,
    #[serde(default)]
    pub lxc: Option<String>,
    pub ckpt: String,
    /// RFC 3339 UTC time the stream was created.
    pub created: String,
    pub include: Include,
    /// CPU feature flags of the source (from /proc/cpuinfo), checked by ckpt-restore.
    #[serde(default)]
    pub cpu_flags: Vec<String>,
    /// The sender waits for ckpt-restore's [`CopiedLine`] before it freezes the container (its
    /// `--ack` channel carries it back), so that the receiver has caught up with the live copy.
    #[serde(default)]
    pub await_copy: bool,
    /// Where the container's memory is: in the images, or after them as `memory/` entries.
    #[serde(default, skip_serializing_if = "MemoryMode::in_images")]
    pub memory: MemoryMode,
}

/// Where a stream carries the memory of the checkpointed processes.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum MemoryMode {
    /// In the CRIU images (pages-N.img), as CRIU wrote them.
    #[default]
    Images,
    /// Stop-and-copy from CRIU's page server: the images leave the lazy memory out and it follows
    /// them as `memory/` entries, after a seal; the receiver restores once the trailer checks.
    Streamed,
    /// Post-copy (`ckpt-dump --lazy`): like `Streamed`, but the receiver restores from the
    /// images' seal on and the container runs while its memory arrives.
    PostCopy,
}

impl MemoryMode {
    pub fn in_images(&self) -> bool {
        *self == MemoryMode::Images
    }
}

/// The fields of a manifest that every format version has, read before the rest.
#[derive(Deserialize)]
struct Preamble {
    format: String,
    version: u32,
    #[serde(default)]
    ckpt: Option<String>,
}

/// What parts of a container a stream includes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Include {
    /// `"full"`: the rootfs is in the stream; `"none"`: the receiver already has it.
    pub rootfs: RootfsMode,
    /// Whether CRIU images are in the stream (a running checkpoint) or not (a stopped container).
    pub images: bool,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RootfsMode {
    Full,
    None,
}

/// The `copied.json` entry (informative: the receiver trusts only the entries themselves).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Copied {
    /// Rootfs entries copied while the container ran.
    pub entries: u64,
}

/// After `copied.json`, a character device 0:0 under `rootfs/` deletes that path: the overlayfs
/// whiteout, so GNU tar and overlay-aware tools show it for what it is.
pub fn is_whiteout(kind: &Kind) -> bool {
    matches!(kind, Kind::Char { major: 0, minor: 0 })
}

/// The last entry: proves the stream is complete and unaltered.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Trailer {
    /// Number of entries before the trailer (manifest included).
    pub entries: u64,
    /// Sum of the content sizes of those entries.
    pub bytes: u64,
    /// `blake3:<hex>` of the entry chain (see man/ckpt-stream.5).
    pub digest: String,
    /// `blake3-keyed:<hex>` when the writer had a key (see [`crate::auth`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// What a [`Trailer`] document vouches for: the whole stream, or the stream so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// `trailer.json`: the stream is complete.
    Trailer,
    /// `seal.json`: every entry before it is intact; more follow. Its MAC is computed apart
    /// from a trailer's, so that a stream cut after a seal cannot pass for a complete one.
    Seal,
}

impl Mark {
    fn path(self) -> &'static str {
        match self {
            Mark::Trailer => TRAILER_PATH,
            Mark::Seal => SEAL_PATH,
        }
    }

    /// The text the MAC covers for a chain digest.
    fn mac_input(self, digest: &str) -> String {
        match self {
            Mark::Trailer => digest.to_string(),
            Mark::Seal => format!("seal {digest}"),
        }
    }
}

impl Trailer {
    /// The trailer that seals a chain of entries, with a MAC when the writer has a key.
    pub fn new(seal: &Seal, key: Option<&Key>) -> Trailer {
        Trailer::marking(Mark::Trailer, seal, key)
    }

    /// The document at `mark`'s path that vouches for `seal`, with a MAC when there is a key.
    pub fn marking(mark: Mark, seal: &Seal, key: Option<&Key>) -> Trailer {
        let digest = digest_text(seal);
        Trailer {
            entries: seal.entries,
            bytes: seal.bytes,
            mac: key.map(|k| k.mac(&mark.mac_input(&digest), seal.entries, seal.bytes)),
            digest,
        }
    }

    /// Parses a trailer read from a stream and checks it against the chain the reader hashed (and
    /// its MAC against `key`, when the reader has one).
    pub fn check(json: &[u8], seal: &Seal, key: Option<&Key>) -> anyhow::Result<Trailer> {
        Trailer::check_mark(Mark::Trailer, json, seal, key)
    }

    /// [`Trailer::check`] for the document at `mark`'s path.
    pub fn check_mark(
        mark: Mark,
        json: &[u8],
        seal: &Seal,
        key: Option<&Key>,
    ) -> anyhow::Result<Trailer> {
        let path = mark.path();
        let trailer: Trailer = serde_json::from_slice(json)
            .map_err(|e| bad_stream(format!("{path} is not valid: {e}")))?;
        if trailer.entries != seal.entries {
            return Err(bad_stream(format!(
                "{path} counts {} entries but the stream holds {}: entries were added or removed",
                trailer.entries, seal.entries
            )));
        }
        let digest = digest_text(seal);
        if trailer.digest != digest || trailer.bytes != seal.bytes {
            return Err(bad_stream(
                "digest mismatch: the stream was altered or corrupted in transit",
            ));
        }
        if let Some(key) = key {
            let input = mark.mac_input(&digest);
            key.verify(&input, seal.entries, seal.bytes, trailer.mac.as_deref())?;
        }
        Ok(trailer)
    }
}

/// `blake3:<hex>`, as a trailer spells a chain digest.
fn digest_text(seal: &Seal) -> String {
    format!("blake3:{}", seal.digest.to_hex())
}

/// One line describing a stream: name, entries, size.
pub fn summary(manifest: &Manifest, trailer: &Trailer) -> String {
    format!(
        "{}: {} entries, {:.1} MiB",
        manifest.name,
        trailer.entries,
        trailer.bytes as f64 / (1 << 20) as f64
    )
}

impl Manifest {
    /// Parses and checks a manifest read from a stream: its format and version first, so that a
    /// manifest from a newer ckpt is refused as such, whatever other fields it has.
    pub fn from_json(bytes: &[u8]) -> anyhow::Result<Manifest> {
        let not_valid =
            |e: serde_json::Error| bad_stream(format!("manifest.json is not valid: {e}"));
        let first: Preamble = serde_json::from_slice(bytes).map_err(not_valid)?;
        if first.format != FORMAT_NAME {
            return Err(bad_stream(format!(
                "manifest format is {:?}, not {FORMAT_NAME:?}: this is not a ckpt stream",
                first.format
            )));
        }
        if first.version > FORMAT_VERSION {
            let writer = first
                .ckpt
                .map(|v| format!(", written by ckpt {v}"))
                .unwrap_or_default();
            return Err(bad_stream(format!(
                "stream from a newer ckpt (format version {}{writer}; this ckpt {} reads version \
                 {FORMAT_VERSION}): upgrade ckpt on this host",
                first.version,
                crate::VERSION
            )));
        }
        if first.version != FORMAT_VERSION {
            return Err(bad_stream(format!(
                "stream format version {} is unknown (this ckpt {} reads version {FORMAT_VERSION})",
                first.version,
                crate::VERSION
            )));
        }
        let manifest: Manifest = serde_json::from_slice(bytes).map_err(not_valid)?;
        check_name(&manifest.name)?;
        Ok(manifest)
    }
}

/// Why `name` cannot be a container name, if it cannot: it must be one plain path component that
/// no command line can take for an option (no `/`, NUL or newline, not `.`, `..` or `-...`). The
/// one rule for names from streams and from users alike.
pub fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("it is empty")
    } else if name == "." || name == ".." || name.contains('/') {
        Some("it is not a single path component")
    } else if name.contains(['\0', '\n']) {
        Some("it holds a NUL or newline")
    } else if name.starts_with('-') {
        Some("it starts with '-'")
    } else {
        None
    }
}

/// A container name from a stream must pass [`name_problem`].
pub fn check_name(name: &str) -> anyhow::Result<()> {
    match name_problem(name) {
        None => Ok(()),
        Some(why) => Err(bad_stream(format!(
            "container name {name:?} is not a plain name: {why}"
        ))),
    }
}

/// Where an entry goes, once its path has been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryPath {
    Manifest,
    Trailer,
    Copied,
    Seal,
    /// A run of memory pages of process `pid` (its pid in the container) from `vaddr` on.
    Memory(MemoryRange),
    /// `root` is one of [`ROOTS`]; `rel` is empty for the root directory itself.
    Tree {
        root: &'static str,
        rel: Vec<u8>,
    },
}

/// Where a memory entry's pages go: process `pid`, from address `vaddr` (page-aligned) on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryRange {
    pub pid: u32,
    pub vaddr: u64,
}

impl MemoryRange {
    /// `memory/<pid>/<vaddr>`, as the stream names it.
    pub fn path(&self) -> String {
        format!("{MEMORY_ROOT}/{}/{:016x}", self.pid, self.vaddr)
    }

    /// Parses what follows `memory/`: exactly the form [`MemoryRange::path`] writes.
    fn parse(rel: &[u8]) -> Option<MemoryRange> {
        let rel = std::str::from_utf8(rel).ok()?;
        let (pid, vaddr) = rel.split_once('/')?;
        let digits = |s: &str, hex: bool| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (hex && (b'a'..=b'f').contains(&b)))
        };
        if !digits(pid, false) || pid.starts_with('0') || vaddr.len() != 16 || !digits(vaddr, true)
        {
            return None;
        }
        let range = MemoryRange {
            pid: pid.parse().ok()?,
            vaddr: u64::from_str_radix(vaddr, 16).ok()?,
        };
        (range.vaddr % PAGE_SIZE == 0).then_some(range)
    }
}

/// Checks a path from a stream against the bundle layout. Refuses (never skips) absolute paths,
/// `.` and `..` components, empty components, NUL bytes and anything outside the bundle roots.
pub fn classify(path: &[u8]) -> anyhow::Result<EntryPath> {
    let shown = String::from_utf8_lossy(path);
    if path == MANIFEST_PATH.as_bytes() {
        return Ok(EntryPath::Manifest);
    }
    if path == TRAILER_PATH.as_bytes() {
        return Ok(EntryPath::Trailer);
    }
    if path == COPIED_PATH.as_bytes() {
        return Ok(EntryPath::Copied);
    }
    if path == SEAL_PATH.as_bytes() {
        return Ok(EntryPath::Seal);
    }
    if let Some(rel) = path.strip_prefix(format!("{MEMORY_ROOT}/").as_bytes()) {
        return MemoryRange::parse(rel)
            .map(EntryPath::Memory)
            .ok_or_else(|| bad_stream(format!("memory entry {shown:?} is not memory/PID/VADDR")));
    }
    if path.is_empty() || path.starts_with(b"/") || path.contains(&0) {
        return Err(bad_stream(format!(
            "entry path {shown:?} is absolute or empty"
        )));
    }
    let trimmed = path.strip_suffix(b"/").unwrap_or(path);
    let mut parts = trimmed.split(|&b| b == b'/');
    let first = parts.next().unwrap_or_default();
    let root = ROOTS
        .iter()
        .find(|r| r.as_bytes() == first)
        .ok_or_else(|| bad_stream(format!("entry {shown:?} is outside the bundle roots")))?;
    for part in parts.clone() {
        if part.is_empty() || part == b"." || part == b".." {
            return Err(bad_stream(format!(
                "entry path {shown:?} has a '.', '..' or empty component"
            )));
        }
    }
    let rel = trimmed.get(first.len() + 1..).unwrap_or_default().to_vec();
    Ok(EntryPath::Tree { root, rel })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(root: &'static str, rel: &str) -> EntryPath {
        EntryPath::Tree {
            root,
            rel: rel.as_bytes().to_vec(),
        }
    }

    #[test]
    fn classify_accepts_bundle_paths() {
        assert_eq!(classify(b"manifest.json").unwrap(), EntryPath::Manifest);
        assert_eq!(classify(b"trailer.json").unwrap(), EntryPath::Trailer);
        assert_eq!(classify(b"copied.json").unwrap(), EntryPath::Copied);
        assert_eq!(classify(b"rootfs/").unwrap(), tree("rootfs", ""));
        assert_eq!(classify(b"rootfs").unwrap(), tree("rootfs", ""));
        assert_eq!(
            classify(b"rootfs/etc/passwd").unwrap(),
            tree("rootfs", "etc/passwd")
        );
        assert_eq!(
            classify(b"images/pages-1.img").unwrap(),
            tree("images", "pages-1.img")
        );
        assert_eq!(
            classify(b"container/config").unwrap(),
            tree("container", "config")
        );
    }

    #[test]
    fn memory_paths_are_exactly_what_the_writer_names() {
        let range = MemoryRange {
            pid: 42,
            vaddr: 0x7f00_0000_1000,
        };
        assert_eq!(range.path(), "memory/42/00007f0000001000");
        assert_eq!(
            classify(range.path().as_bytes()).unwrap(),
            EntryPath::Memory(range)
        );
        assert_eq!(classify(b"seal.json").unwrap(), EntryPath::Seal);
        assert_refused(&[
            b"memory/42/7f0000001000",
            b"memory/042/00007f0000001000",
            b"memory/42/00007f0000001001",
            b"memory/42/00007F0000001000",
            b"memory/x/00007f0000001000",
            b"memory/42/00007f0000001000/x",
            b"memory/99999999999/00007f0000001000",
            b"memory/42",
        ]);
    }

    fn assert_refused(paths: &[&[u8]]) {
        for bad in paths {
            assert!(
                classify(bad).is_err(),
                "accepted {:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn a_seal_cannot_pass_for_a_trailer() {
        let key = Key::from_material(&[7u8; 32]).unwrap();
        let seal = Seal {
            entries: 3,
            bytes: 10,
            digest: blake3::hash(b"chain"),
        };
        let json = serde_json::to_vec(&Trailer::marking(Mark::Seal, &seal, Some(&key))).unwrap();
        Trailer::check_mark(Mark::Seal, &json, &seal, Some(&key)).unwrap();
        let err = Trailer::check(&json, &seal, Some(&key)).unwrap_err();
        assert!(err.to_string().contains("MAC mismatch"), "{err}");
    }

    #[test]
    fn classify_refuses_escapes_and_strangers() {
        assert_refused(&[
            b"/etc/passwd",
            b"../x",
            b"rootfs/../../etc",
            b"rootfs/a/../b",
            b"rootfs/./a",
            b"rootfs//a",
            b"other/file",
            b"rootfsx/a",
            b"",
            b"rootfs/a\0b",
            b"manifest.json/x",
        ]);
    }

    #[test]
    fn manifest_version_and_name_checked() {
        let mut m = serde_json::json!({
            "format": "ckpt", "version": 1, "name": "u1", "lxcpath": "/var/lib/lxc",
            "host": "h", "kernel": "k", "arch": "x86_64", "ckpt": "0.1.0",
            "created": "2026-01-01T00:00:00Z", "include": {"rootfs": "full", "images": true}
        });
        assert!(Manifest::from_json(m.to_string().as_bytes()).is_ok());
        m["version"] = 99.into();
        let err = Manifest::from_json(m.to_string().as_bytes()).unwrap_err();
        assert!(err.to_string().contains("version 99"), "{err}");
        // A newer manifest is refused for its version, not for fields it lacks or has anew.
        let newer = serde_json::json!({"format": "ckpt", "version": 2, "ckpt": "3.0.0", "x": 1});
        let err = Manifest::from_json(newer.to_string().as_bytes()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "bad stream: stream from a newer ckpt (format version 2, written by ckpt 3.0.0; \
                 this ckpt {} reads version 1): upgrade ckpt on this host",
                crate::VERSION
            )
        );
        m["version"] = 0.into();
        let err = Manifest::from_json(m.to_string().as_bytes()).unwrap_err();
        assert!(err.to_string().contains("version 0 is unknown"), "{err}");
        m["version"] = 1.into();
        m["name"] = "../evil".into();
        assert!(Manifest::from_json(m.to_string().as_bytes()).is_err());
    }
}
