//! Receiving a stream, as every reading tool does it: unpack the rest of it into a private dir, or
//! only read and check it to its trailer.

use std::path::Path;

use anyhow::Context;

use crate::error::bad_stream;
use crate::extract::Extractor;
use crate::format::{Copied, MemoryMode, MemoryRange, Trailer, MANIFEST_PATH};
use crate::reader::{Item, StreamReader};

/// Unpacks the rest of the stream into `dir` (an empty private dir) and returns the verified
/// trailer; `on_copied` runs once everything before `copied.json` is unpacked. On error, `dir`
/// holds a partial bundle that the caller must discard.
pub fn unpack_into(
    reader: &mut StreamReader,
    dir: &Path,
    on_copied: &mut dyn FnMut(&Copied) -> anyhow::Result<()>,
) -> anyhow::Result<Trailer> {
    if !reader.manifest.memory.in_images() {
        return Err(bad_stream(
            "this stream carries the memory after the images (a ckpt-dump --ack or --lazy \
             migration stream): only ckpt-restore takes it (ckpt-unpack --check and --list read \
             it); for a bundle, stream with ckpt-dump without --ack",
        ));
    }
    unpack(reader, dir, on_copied, &mut |_, _, _| {
        Err(bad_stream(
            "memory entries in a stream with the memory in the images",
        ))
    })
}

/// What [`unpack_memory`] hands over for each memory entry: where, how many bytes, and their
/// reader (to be read to the end). The entry is vouched for only by the next seal or the trailer.
pub type OnMemory<'a> =
    dyn FnMut(MemoryRange, u64, &mut dyn std::io::Read) -> anyhow::Result<()> + 'a;

/// For a stream with the memory after the images: unpacks everything but the memory into `dir`,
/// hands each memory entry to `on_memory`, and returns the trailer, or for post-copy the first
/// seal (the memory then follows on `reader`).
pub fn unpack_memory(
    reader: &mut StreamReader,
    dir: &Path,
    on_copied: &mut dyn FnMut(&Copied) -> anyhow::Result<()>,
    on_memory: &mut OnMemory,
) -> anyhow::Result<Trailer> {
    if reader.manifest.memory.in_images() {
        return Err(bad_stream("the stream carries no memory after its images"));
    }
    unpack(reader, dir, on_copied, on_memory)
}

/// Unpacks into `dir` up to the trailer, or in a post-copy stream up to the first seal.
fn unpack(
    reader: &mut StreamReader,
    dir: &Path,
    on_copied: &mut dyn FnMut(&Copied) -> anyhow::Result<()>,
    on_memory: &mut OnMemory,
) -> anyhow::Result<Trailer> {
    let post_copy = reader.manifest.memory == MemoryMode::PostCopy;
    std::fs::write(dir.join(MANIFEST_PATH), &reader.manifest_json)
        .context("writing manifest.json")?;
    let mut extractor = Extractor::new(dir)?;
    // After the first seal only memory and seals may come, and memory only after it.
    let mut sealed = false;
    loop {
        let item = reader.next_item()?;
        let misplaced = match &item {
            Item::Entry { entry, .. } if sealed => Some(String::from_utf8_lossy(&entry.path)),
            Item::Copied(_) if sealed => Some("copied.json".into()),
            Item::Memory { range, .. } if !sealed => Some(range.path().into()),
            _ => None,
        };
        if let Some(path) = misplaced {
            return Err(bad_stream(format!(
                "{path} is on the wrong side of the images' seal"
            )));
        }
        match item {
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
            Item::Seal(seal) if post_copy => {
                extractor.finish()?;
                return Ok(seal);
            }
            Item::Seal(_) => sealed = true,
            Item::Memory { range, size } => on_memory(range, size, &mut reader.data())?,
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

    fn manifest(memory: &str) -> Manifest {
        let json = serde_json::json!({
            "format": "ckpt", "version": 1, "name": "u1", "lxcpath": "/var/lib/lxc",
            "host": "h", "kernel": "k", "arch": "x86_64", "ckpt": "0.1.0",
            "created": "2026-01-01T00:00:00Z", "include": {"rootfs": "none", "images": true},
            "memory": memory
        });
        Manifest::from_json(json.to_string().as_bytes()).unwrap()
    }

    /// A post-copy stream: container/ and images/, a seal, two runs of memory with a seal
    /// between them, the trailer.
    fn lazy_stream(key: &Key, memory: &str) -> Vec<u8> {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(src.path().join("container")).unwrap();
        std::fs::write(src.path().join("container/config"), "lxc.uts.name = u1\n").unwrap();
        std::fs::create_dir_all(src.path().join("images")).unwrap();
        std::fs::write(src.path().join("images/inventory.img"), "inv").unwrap();
        let mut w = StreamWriter::new(Vec::new(), &manifest(memory), Some(key.clone()), 0).unwrap();
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
        let mut reader = open(lazy_stream(&key, "post-copy"), &key);
        let seal = unpack_memory(&mut reader, dir.path(), &mut |_| Ok(()), &mut no_memory).unwrap();
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
        // Only ckpt-restore takes a stream with its memory after the images; ckpt-unpack says so.
        let mut reader = open(lazy_stream(&key, "post-copy"), &key);
        let err = unpack_into(&mut reader, dir.path(), &mut |_| Ok(())).unwrap_err();
        assert!(err.to_string().contains("only ckpt-restore"), "{err}");
    }

    fn no_memory(_: MemoryRange, _: u64, _: &mut dyn Read) -> anyhow::Result<()> {
        panic!("memory before the seal")
    }

    #[test]
    fn a_streamed_stream_hands_its_memory_over_up_to_the_trailer() {
        let key = Key::from_material(&[3u8; 32]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut reader = open(lazy_stream(&key, "streamed"), &key);
        let mut got = Vec::new();
        let trailer = unpack_memory(
            &mut reader,
            dir.path(),
            &mut |_| Ok(()),
            &mut |at, size, data| {
                let mut pages = Vec::new();
                data.read_to_end(&mut pages)?;
                assert_eq!(pages.len() as u64, size);
                got.push(at.vaddr);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(got, [0x10000, 0x20000]);
        assert!(trailer.mac.is_some());
    }

    #[test]
    fn altered_memory_fails_at_the_next_seal_and_memory_needs_a_lazy_manifest() {
        let key = Key::from_material(&[3u8; 32]).unwrap();
        let mut stream = lazy_stream(&key, "post-copy");
        // The first byte of the first memory run that is 7 (the pages), changed.
        let at = stream.windows(16).position(|w| w == [7u8; 16]).unwrap();
        stream[at] = 8;
        let dir = tempfile::tempdir().unwrap();
        let mut reader = open(stream, &key);
        unpack_memory(&mut reader, dir.path(), &mut |_| Ok(()), &mut no_memory).unwrap();
        assert!(matches!(reader.next_item().unwrap(), Item::Memory { .. }));
        let err = reader.next_item().unwrap_err();
        assert!(err.to_string().contains("digest mismatch"), "{err}");

        let mut reader = open(lazy_stream(&key, "images"), &key);
        let err = verify(&mut reader).unwrap_err();
        assert!(err.to_string().contains("memory in the images"), "{err}");
    }
}
