//! Regression tests for what fuzzing the stream reader and the extractor found (bench/fuzz, the
//! cargo-fuzz targets in fuzz/), run against the real ckpt-unpack: every input must end in a clean
//! one-line error (exit 1) or a verified stream, in bounded time, never in a panic or a hang.

mod util;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ckpt_stream::wire::{Entry, Kind, Sparse};
use util::forge::{forge, forge_into, meta, unpack_fails};
use util::{bin, Dir};

/// Runs `ckpt-unpack ARGS` in `t`, writing `chunks` to its stdin with `pause` between them, and
/// kills it once `limit` has passed. Returns its exit code (None when killed or signalled), its
/// stderr and how long it ran.
fn run_limited(
    t: &Dir,
    args: &[&str],
    chunks: Vec<Vec<u8>>,
    pause: Duration,
    limit: Duration,
) -> (Option<i32>, String, Duration) {
    let start = Instant::now();
    let mut child = Command::new(bin("ckpt-unpack"))
        .args(args)
        .current_dir(t.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        for (i, chunk) in chunks.iter().enumerate() {
            if i > 0 {
                std::thread::sleep(pause);
            }
            // The tool may stop reading early (a refused stream): not this test's concern.
            if stdin.write_all(chunk).and_then(|()| stdin.flush()).is_err() {
                return;
            }
        }
    });
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = start.elapsed();
    writer.join().unwrap();
    (code, reader.join().unwrap(), elapsed)
}

/// Sparse maps were parsed again from their first byte after every 512-byte block, so reading a
/// map took time quadratic in its size: the largest map the format allows (65536 segments, about
/// 3 MiB with zero-padded numbers) cost a minute of CPU per entry in a release build, from 22 KB
/// of zstd input, before the trailer (or a MAC) could refuse the stream. This valid stream holds
/// a 65536-segment sparse file with a 1.4 MB map; checking it must take well under a second.
#[test]
fn huge_sparse_map_is_read_in_linear_time() {
    let t = Dir::new("fuzz-sparse-map");
    let segments: Vec<(u64, u64)> = (0..1u64 << 16)
        .map(|i| (1_000_000_000_000_000_000 + 2 * i, 1))
        .collect();
    let data = vec![b's'; segments.len()];
    let sparse = Entry {
        kind: Kind::File {
            size: data.len() as u64,
            sparse: Some(Sparse {
                real_size: 2_000_000_000_000_000_000,
                segments,
            }),
        },
        ..meta(b"rootfs/sparse", Kind::Dir)
    };
    let stream = forge(&[(meta(b"rootfs", Kind::Dir), Vec::new()), (sparse, data)]);
    assert!(stream.len() > 1_400_000, "the map is not as large as meant");
    let limit = Duration::from_secs(20);
    let (code, stderr, took) = run_limited(&t, &["--verify"], vec![stream], Duration::ZERO, limit);
    assert!(
        code.is_some(),
        "ckpt-unpack --verify still ran after {took:?} on one 65536-segment sparse map \
         (quadratic sparse map parsing); stderr: {stderr}"
    );
    assert_eq!(code, Some(0), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// The zstd magic was looked for in whatever the first read returned: when a pipe delivered fewer
/// than 4 bytes first (a slow or chunked sender), a valid zstd stream was read as plain tar and
/// refused as corrupted ("tar header checksum mismatch").
#[test]
fn zstd_stream_whose_first_read_is_short_is_still_zstd() {
    let t = Dir::new("fuzz-zstd-sniff");
    let dir = meta(b"rootfs", Kind::Dir);
    let stream = forge(&[(dir, Vec::new())]);
    let zst = zstd::encode_all(&stream[..], 1).unwrap();
    for first in [1, 2, 3] {
        let chunks = vec![zst[..first].to_vec(), zst[first..].to_vec()];
        let (code, stderr, _) = run_limited(
            &t,
            &["--verify"],
            chunks,
            Duration::from_millis(300),
            Duration::from_secs(60),
        );
        assert_eq!(
            code,
            Some(0),
            "a zstd stream arriving as {first} byte(s), then the rest, was refused: {stderr}"
        );
    }
}

/// The extractor kept every directory entry, with its extended attributes, until the end of the
/// stream (directory metadata is applied last): memory grew with the sum of all directories'
/// xattrs, up to 1 MiB per directory, before the trailer (or a MAC) could refuse the stream. 500
/// directories with a 1 MB xattr each, 22 KB as zstd, took 614 MB; 10 000 would take 10 GB. Here
/// 200 such directories must unpack (or be refused with one line) in 64 MiB of address space,
/// as ckpt-unpack does with 200 000 entries; before, the process died of a failed allocation.
#[test]
fn directory_xattrs_are_not_held_until_the_end() {
    let t = Dir::new("fuzz-dir-xattrs");
    let value = vec![b'v'; 1_000_000];
    let dirs = (0..200).map(|i| {
        let mut dir = meta(format!("rootfs/d{i}").as_bytes(), Kind::Dir);
        dir.xattrs = vec![(b"user.big".to_vec(), value.clone())];
        (dir, Vec::new())
    });
    let root = std::iter::once((meta(b"rootfs", Kind::Dir), Vec::new()));
    let zst = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
    let stream = forge_into(zst, root.chain(dirs)).finish().unwrap();
    assert!(stream.len() < 1 << 20, "{} bytes", stream.len());
    std::fs::write(t.join("dirs.ckpt"), &stream).unwrap();
    let script = format!(
        "ulimit -v 65536; exec {} -q -C out -i dirs.ckpt",
        bin("ckpt-unpack").display()
    );
    let run = t.program("sh").args(["-c", &script]).output();
    match run.code() {
        Some(0) => {}
        Some(1) => {
            run.one_line_error("");
        }
        _ => run.fail("ckpt-unpack died instead of unpacking or refusing the stream"),
    }
}

// ---- inputs from the fuzzing corpus that reach rarely taken error paths; all refused cleanly ----

/// Runs `ckpt-unpack -C out` on `stream` and checks the refusal: exit 1, one stderr line holding
/// `needle`, no panic, no out/ and no staging dir left.
fn refused(t: &Dir, stream: Vec<u8>, needle: &str) {
    unpack_fails(t, stream, needle);
    let left: Vec<_> = std::fs::read_dir(t.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Tiny zstd inputs from the corpus (whole files, as found): frame headers with a reserved bit, a
/// dictionary, a 2^40-byte window, or an unknown descriptor, and a frame that decodes past its
/// declared size.
#[test]
fn corrupt_zstd_frames_from_the_corpus_are_refused() {
    let t = Dir::new("fuzz-zstd-frames");
    for input in [
        &b"\x28\xb5\x2f\xfd\x28\xb5"[..],
        b"\x28\xb5\x2f\xfd\x21\xff\xff",
        b"\x28\xb5\x2f\xfd\x04\xe6\xe6\xe6\xe6\x38\x92\x48",
        b"\x28\xb5\x2f\xfd\x00\x00\x00\x00\x00\x13\x00\x00\x13\x00\x59",
        b"\x28\xb5\x2f\xfd\x04\x26\xca\x46\x40\xae\xa5\x0f\x34\x4d\x29\xdc\xd1\x39\x12\xac\x9d\x55\
          \xd2\x5c\x9a\xf4\x92\x8a\x34\x8d\xe8\x68\xfa\xbc\xcf\xd5\x32\xf6\x4e\x5f\x81\x34\x8d\x88\
          \x21\xb3\xbc\x02\x7a\x26\xaa\x81\x0b\x42\x29\xff\xff\x10\xca\xff\x5f\x2b\xa9\x74\xe4\xb4\
          \xc3\x72\x6e\x66\x9a\xa5\x77\x42\xa2\x1d\x5c\x33\xcd\x52\xa8\xde\x89\xb6\xff\x95\xf7\xde\
          \xf9\x88\x20\x5b\x29\x38\x92\x48\xbf\xda\xcd\xc9\xbd\x3e\x2b\x00\x00\x03\x37\x33\x59",
    ] {
        refused(&t, input.to_vec(), "bad stream: zstd data is corrupt");
    }
}

/// A pax `linkpath` with a NUL byte in it (a mutated long symlink target in the corpus): no
/// symlink can hold it, and the entry is refused with its name.
#[test]
fn symlink_target_with_a_nul_byte_is_refused() {
    let t = Dir::new("fuzz-nul-link");
    let target = [&b"a\0b/"[..], &[b'l'; 120]].concat();
    let stream = forge(&[
        (meta(b"rootfs", Kind::Dir), Vec::new()),
        (meta(b"rootfs/long-link", Kind::Symlink(target)), Vec::new()),
    ]);
    refused(&t, stream, "rootfs/long-link");
}

/// A hard link whose target is a directory (a mutated entry type in the corpus): the kernel
/// refuses the link and the entry is named.
#[test]
fn hard_link_to_a_directory_is_refused() {
    let t = Dir::new("fuzz-dir-link");
    let stream = forge(&[
        (meta(b"rootfs", Kind::Dir), Vec::new()),
        (meta(b"rootfs/d", Kind::Dir), Vec::new()),
        (
            meta(b"rootfs/h", Kind::Hardlink(b"rootfs/d".to_vec())),
            Vec::new(),
        ),
    ]);
    refused(&t, stream, "rootfs/h");
}

/// Garbage in a numeric ustar field (mode, uid, gid, mtime, size, device numbers: the most common
/// header mutation in the corpus that still has a valid checksum) is refused in one line naming
/// the field.
#[test]
fn garbage_in_numeric_header_fields_is_refused() {
    let t = Dir::new("fuzz-numeric");
    let good = forge(&[(meta(b"rootfs", Kind::Dir), Vec::new())]);
    let at = (0..good.len())
        .step_by(512)
        .find(|&i| good[i..].starts_with(b"rootfs/\0"))
        .unwrap();
    // Offsets and lengths of the fields in a ustar header.
    for (field, offset, len) in [
        ("mode", 100, 8),
        ("uid", 108, 8),
        ("gid", 116, 8),
        ("size", 124, 12),
        ("mtime", 136, 12),
    ] {
        let mut bad = good.clone();
        bad[at + offset..at + offset + len - 1].copy_from_slice(&b"9x9x9x9x9x9x"[..len - 1]);
        let mut header = tar::Header::from_byte_slice(&bad[at..at + 512]).clone();
        header.set_cksum();
        bad[at..at + 512].copy_from_slice(header.as_bytes());
        refused(&t, bad, field);
    }
}
