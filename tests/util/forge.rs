//! Streams built by the tests themselves: a valid manifest and trailer around any entries, so
//! only the defence under test can refuse them.
#![allow(dead_code)]

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;

use ckpt_stream::wire::{Entry, Kind, Mtime, TarWriter};

use super::Dir;

/// A manifest every reader accepts.
pub const MANIFEST: &str = r#"{"format":"ckpt","version":1,"name":"u1","lxcpath":"/var/lib/lxc","host":"h",
"kernel":"k","arch":"x86_64","ckpt":"0.1.0","created":"2026-01-01T00:00:00Z",
"include":{"rootfs":"full","images":true}}"#;

/// A root-owned 0644 entry of `kind` at `path`.
pub fn meta(path: &[u8], kind: Kind) -> Entry {
    Entry {
        path: path.to_vec(),
        kind,
        mode: 0o644,
        uid: 0,
        gid: 0,
        mtime: Mtime::default(),
        xattrs: Vec::new(),
    }
}

/// A regular file entry with its data.
pub fn file(path: &[u8], data: &[u8]) -> (Entry, Vec<u8>) {
    (
        meta(
            path,
            Kind::File {
                size: data.len() as u64,
                sparse: None,
            },
        ),
        data.to_vec(),
    )
}

/// A directory entry.
pub fn dir(path: &[u8]) -> (Entry, Vec<u8>) {
    (meta(path, Kind::Dir), Vec::new())
}

/// A valid stream: the manifest, then `entries` with their data, then the trailer.
pub fn forge(entries: &[(Entry, Vec<u8>)]) -> Vec<u8> {
    forge_into(Vec::new(), entries.iter().cloned())
}

/// The same, written into `out` (e.g. a zstd encoder) from an iterator, so that a large stream
/// need not be held in memory.
pub fn forge_into<W: Write>(out: W, entries: impl Iterator<Item = (Entry, Vec<u8>)>) -> W {
    let mut w = TarWriter::new(out);
    let (manifest, data) = file(b"manifest.json", MANIFEST.as_bytes());
    w.append(&manifest, &mut &data[..]).unwrap();
    for (entry, data) in entries {
        w.append(&entry, &mut &data[..]).unwrap();
    }
    ckpt_stream::seal(w, None).unwrap().0
}

/// A symlink entry.
pub fn symlink(path: &[u8], target: &[u8]) -> (Entry, Vec<u8>) {
    (meta(path, Kind::Symlink(target.to_vec())), Vec::new())
}

/// `copied.json`: the rootfs entries after it are changes.
pub fn copied() -> (Entry, Vec<u8>) {
    file(b"copied.json", br#"{"entries":1}"#)
}

/// A whiteout (character device 0:0): after `copied.json`, deletes `path`.
pub fn whiteout(path: &[u8]) -> (Entry, Vec<u8>) {
    (meta(path, Kind::Char { major: 0, minor: 0 }), Vec::new())
}

// ---- hostile streams ----

/// Unpacks `stream` into `t/out` and checks the refusal leaves no trace.
pub fn refused(t: &Dir, stream: Vec<u8>, needle: &str) {
    unpack_fails(t, stream, needle);
    let leftovers: Vec<_> = fs::read_dir(t.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with(".ckpt-staging"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "staging dir left behind: {leftovers:?}"
    );
    assert!(
        fs::read_dir(t.join("outside")).unwrap().next().is_none(),
        "something was written outside"
    );
}

pub fn hostile_dir(name: &str) -> Dir {
    let t = Dir::new(name);
    fs::create_dir(t.join("outside")).unwrap();
    t
}

/// Like [`refused`], for tests that keep a victim file in outside/.
pub fn refused_keep_outside(t: &Dir, stream: Vec<u8>, needle: &str) {
    unpack_fails(t, stream, needle);
    assert_eq!(fs::read_to_string(t.join("outside/x")).unwrap(), "victim");
    assert_eq!(
        fs::metadata(t.join("outside/x")).unwrap().nlink(),
        1,
        "outside file was linked"
    );
}

/// `ckpt-unpack -C out` refuses `stream` with a one-line error naming `needle`, leaving no out/.
pub fn unpack_fails(t: &Dir, stream: Vec<u8>, needle: &str) {
    t.cmd("ckpt-unpack")
        .args(["-C", "out"])
        .stdin(stream)
        .fails(1)
        .one_line_error(needle);
    assert!(!t.join("out").exists(), "a half bundle was left at out/");
}
