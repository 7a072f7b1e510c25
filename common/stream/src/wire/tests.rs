//! Round trips and corruption checks of the tar layer.

use std::io::Read;

use super::*;

/// The last entry of the test streams: it carries the seal as text, which [`read_all`] checks,
/// as the stream layer checks its trailer.
const LAST: &[u8] = b"trailer.json";

fn seal_text(seal: &Seal) -> Vec<u8> {
    format!("{} {} {}", seal.entries, seal.bytes, seal.digest.to_hex()).into_bytes()
}

fn file(path: &str, data: &[u8]) -> Entry {
    Entry {
        path: path.as_bytes().to_vec(),
        kind: Kind::File {
            size: data.len() as u64,
            sparse: None,
        },
        mode: 0o4755,
        uid: 1000,
        gid: 1000,
        mtime: Mtime {
            sec: 1_700_000_000,
            nsec: 123_456_789,
        },
        xattrs: vec![(b"user.k".to_vec(), vec![0, 1, 2, 255])],
    }
}

fn write(entries: &[(Entry, Vec<u8>)]) -> Vec<u8> {
    let mut w = TarWriter::new(Vec::new());
    for (entry, data) in entries {
        w.append(entry, &mut &data[..]).unwrap();
    }
    w.finish(|seal| Ok((LAST.to_vec(), seal_text(seal))))
        .unwrap()
        .0
}

fn read_all(stream: &[u8]) -> anyhow::Result<Vec<(Entry, Vec<u8>)>> {
    let mut r = TarReader::new(stream, LAST);
    let mut out = Vec::new();
    loop {
        match r.next_entry()? {
            Next::Entry(e) => {
                let mut data = Vec::new();
                r.data().read_to_end(&mut data)?;
                out.push((e, data));
            }
            Next::End { seal, data } if data == seal_text(&seal) => return Ok(out),
            Next::End { .. } => anyhow::bail!("the seal does not match the entries"),
            Next::Interim { .. } => anyhow::bail!("an interim seal without with_interim"),
        }
    }
}

fn sample() -> Vec<(Entry, Vec<u8>)> {
    let long = format!("rootfs/{}/{}", "d".repeat(120), "f".repeat(200));
    let mut sparse = file("rootfs/sparse", b"");
    sparse.kind = Kind::File {
        size: 6,
        sparse: Some(Sparse {
            real_size: 1 << 40,
            segments: vec![(4096, 3), ((1 << 40) - 3, 3)],
        }),
    };
    let mut big_ids = file("rootfs/ids", b"x");
    big_ids.uid = 4_000_000_000;
    big_ids.gid = 3_000_000;
    big_ids.mtime = Mtime { sec: -100, nsec: 5 };
    let mut nonutf8 = file("rootfs/caf\u{e9}", b"");
    nonutf8.path = b"rootfs/\xff\xfe".to_vec();
    let other = |path: &str, kind: Kind| Entry {
        kind,
        ..file(path, b"")
    };
    vec![
        (file("manifest.json", b"{}"), b"{}".to_vec()),
        (other("rootfs", Kind::Dir), vec![]),
        (file(&long, b"hello"), b"hello".to_vec()),
        (sparse, b"abcxyz".to_vec()),
        (big_ids, b"x".to_vec()),
        (nonutf8, vec![]),
        (
            other(
                "rootfs/l",
                Kind::Symlink(format!("/{}", "t".repeat(150)).into_bytes()),
            ),
            vec![],
        ),
        (
            other("rootfs/h", Kind::Hardlink(long.clone().into_bytes())),
            vec![],
        ),
        (other("rootfs/c", Kind::Char { major: 1, minor: 3 }), vec![]),
        (
            other("rootfs/b", Kind::Block { major: 8, minor: 1 }),
            vec![],
        ),
        (other("rootfs/p", Kind::Fifo), vec![]),
    ]
}

#[test]
fn every_kind_round_trips() {
    let entries = sample();
    let back = read_all(&write(&entries))
        .map_err(|e| format!("{e:#}"))
        .unwrap();
    assert_eq!(back, entries);
}

#[test]
fn any_flipped_byte_is_caught() {
    let stream = write(&sample());
    // Every byte of the stream, headers, data, padding, trailer and end blocks alike.
    for i in 0..stream.len() {
        let mut bad = stream.clone();
        bad[i] ^= 0x20;
        assert!(
            read_all(&bad).is_err(),
            "flip at byte {i} of {} went unnoticed",
            stream.len()
        );
    }
}

#[test]
fn truncation_anywhere_is_caught() {
    let stream = write(&sample());
    for cut in (0..stream.len())
        .step_by(97)
        .chain([stream.len() - 1, stream.len() - 512])
    {
        let err = read_all(&stream[..cut]).unwrap_err();
        assert!(
            err.to_string().contains("truncated") || err.to_string().contains("trailer"),
            "{err}"
        );
    }
}

#[test]
fn dropped_writer_leaves_no_trailer() {
    let mut w = TarWriter::new(Vec::new());
    w.append(&file("manifest.json", b"{}"), &mut &b"{}"[..])
        .unwrap();
    let partial = std::mem::replace(&mut w, TarWriter::new(Vec::new()));
    drop(w);
    let _ = partial;
    let mut bytes = Vec::new();
    let mut w2 = TarWriter::new(&mut bytes);
    w2.append(&file("manifest.json", b"{}"), &mut &b"{}"[..])
        .unwrap();
    drop(w2);
    let err = read_all(&bytes).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
}

#[test]
fn short_data_is_an_error() {
    let mut w = TarWriter::new(Vec::new());
    let err = w
        .append(&file("rootfs/x", b"12345"), &mut &b"12"[..])
        .unwrap_err();
    assert!(err.to_string().contains("shrank"), "{err}");
}
