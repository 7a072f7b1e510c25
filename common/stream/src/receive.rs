//! Receiving a stream, as every reading tool does it: unpack the rest of it into a private dir, or
//! only read and check it to its trailer.

use std::path::Path;

use anyhow::Context;

use crate::error::bad_stream;
use crate::extract::Extractor;
use crate::format::{Copied, Trailer, MANIFEST_PATH};
use crate::reader::{Item, StreamReader};

/// Unpacks the rest of the stream into `dir` (an empty private dir) and returns the verified
/// trailer; `on_copied` runs once everything before `copied.json` is unpacked. On error, `dir`
/// holds a partial bundle that the caller must discard.
pub fn unpack_into(
    reader: &mut StreamReader,
    dir: &Path,
    on_copied: &mut dyn FnMut(&Copied) -> anyhow::Result<()>,
) -> anyhow::Result<Trailer> {
    if reader.manifest.lazy {
        return Err(bad_stream(
            "this is a post-copy (ckpt-dump --lazy) stream: its memory follows the images and \
             only ckpt-restore can take it (check it with ckpt-unpack --check or --list)",
        ));
    }
    unpack(reader, dir, on_copied)
}

/// For a lazy stream: unpacks everything before its first seal (the container, rootfs and CRIU
/// images) into `dir` and returns that seal, verified; the memory entries follow.
pub fn unpack_sealed(
    reader: &mut StreamReader,
    dir: &Path,
    on_copied: &mut dyn FnMut(&Copied) -> anyhow::Result<()>,
) -> anyhow::Result<Trailer> {
    if !reader.manifest.lazy {
        return Err(bad_stream("the stream is not a post-copy (lazy) stream"));
    }
    unpack(reader, dir, on_copied)
}

/// Unpacks into `dir` up to the trailer, or in a lazy stream up to the first seal.
fn unpack(
    reader: &mut StreamReader,
    dir: &Path,
    on_copied: &mut dyn FnMut(&Copied) -> anyhow::Result<()>,
) -> anyhow::Result<Trailer> {
    std::fs::write(dir.join(MANIFEST_PATH), &reader.manifest_json)
        .context("writing manifest.json")?;
    let mut extractor = Extractor::new(dir)?;
    loop {
        match reader.next_item()? {
            Item::Entry { root, rel, entry } => {
                extractor.extract(root, &rel, &entry, &mut reader.data())?
            }
            Item::Copied(copied) => {
                extractor.begin_changes();
                on_copied(&copied)?;
            }
            Item::End(trailer) => {
                extractor.finish()?;
                return Ok(trailer);
            }
            Item::Seal(seal) if reader.manifest.lazy => {
                extractor.finish()?;
                return Ok(seal);
            }
            Item::Seal(_) => {}
            Item::Memory { range, .. } => {
                return Err(bad_stream(format!(
                    "{} comes before the seal of the images",
                    range.path()
                )))
            }
        }
    }
}

/// Reads the rest of the stream, checking everything, writing nothing.
pub fn verify(reader: &mut StreamReader) -> anyhow::Result<Trailer> {
    loop {
        if let Item::End(trailer) = reader.next_item()? {
            return Ok(trailer);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::format::{Manifest, MemoryRange, PAGE_SIZE};
    use crate::{Key, StreamWriter};

    fn manifest(lazy: bool) -> Manifest {
        let json = serde_json::json!({
            "format": "ckpt", "version": 1, "name": "u1", "lxcpath": "/var/lib/lxc",
            "host": "h", "kernel": "k", "arch": "x86_64", "ckpt": "0.1.0",
            "created": "2026-01-01T00:00:00Z", "include": {"rootfs": "none", "images": true},
            "lazy": lazy
        });
        Manifest::from_json(json.to_string().as_bytes()).unwrap()
    }

    /// A post-copy stream: container/ and images/, a seal, two runs of memory with a seal
    /// between them, the trailer.
    fn lazy_stream(key: &Key, lazy: bool) -> Vec<u8> {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(src.path().join("container")).unwrap();
        std::fs::write(src.path().join("container/config"), "lxc.uts.name = u1\n").unwrap();
        std::fs::create_dir_all(src.path().join("images")).unwrap();
        std::fs::write(src.path().join("images/inventory.img"), "inv").unwrap();
        let mut w = StreamWriter::new(Vec::new(), &manifest(lazy), Some(key.clone()), 0).unwrap();
        w.add_tree("container", &src.path().join("container"), &[])
            .unwrap();
        w.add_tree("images", &src.path().join("images"), &[])
            .unwrap();
        w.seal().unwrap();
        let pages = vec![7u8; 2 * PAGE_SIZE as usize];
        let at = |vaddr| MemoryRange { pid: 9, vaddr };
        w.add_memory(at(0x10000), 2 * PAGE_SIZE, &mut &pages[..])
            .unwrap();
        w.seal().unwrap();
        w.add_memory(at(0x20000), 2 * PAGE_SIZE, &mut &pages[..])
            .unwrap();
        w.finish().unwrap().0
    }

    fn open(stream: Vec<u8>, key: &Key) -> StreamReader {
        StreamReader::open(Box::new(std::io::Cursor::new(stream)), Some(key.clone())).unwrap()
    }

    #[test]
    fn a_lazy_stream_is_unpacked_to_its_seal_then_read_as_sealed_memory() {
        let key = Key::from_material(&[3u8; 32]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut reader = open(lazy_stream(&key, true), &key);
        let seal = unpack_sealed(&mut reader, dir.path(), &mut |_| Ok(())).unwrap();
        assert!(seal.mac.is_some());
        assert!(dir.path().join("images/inventory.img").is_file());
        let mut seen = Vec::new();
        loop {
            match reader.next_item().unwrap() {
                Item::Memory { range, size } => {
                    let mut data = Vec::new();
                    reader.data().read_to_end(&mut data).unwrap();
                    assert_eq!(data.len() as u64, size);
                    seen.push(format!("memory {:x}", range.vaddr));
                }
                Item::Seal(_) => seen.push("seal".into()),
                Item::End(_) => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(seen, ["memory 10000", "seal", "memory 20000"]);
        // Only ckpt-restore takes a lazy stream; ckpt-unpack says so.
        let mut reader = open(lazy_stream(&key, true), &key);
        let err = unpack_into(&mut reader, dir.path(), &mut |_| Ok(())).unwrap_err();
        assert!(err.to_string().contains("post-copy"), "{err}");
    }

    #[test]
    fn altered_memory_fails_at_the_next_seal_and_memory_needs_a_lazy_manifest() {
        let key = Key::from_material(&[3u8; 32]).unwrap();
        let mut stream = lazy_stream(&key, true);
        // The first byte of the first memory run that is 7 (the pages), changed.
        let at = stream.windows(16).position(|w| w == [7u8; 16]).unwrap();
        stream[at] = 8;
        let dir = tempfile::tempdir().unwrap();
        let mut reader = open(stream, &key);
        unpack_sealed(&mut reader, dir.path(), &mut |_| Ok(())).unwrap();
        assert!(matches!(reader.next_item().unwrap(), Item::Memory { .. }));
        let err = reader.next_item().unwrap_err();
        assert!(err.to_string().contains("digest mismatch"), "{err}");

        let mut reader = open(lazy_stream(&key, false), &key);
        let err = verify(&mut reader).unwrap_err();
        assert!(err.to_string().contains("manifest is not lazy"), "{err}");
    }
}
