//! ckpt-pack and ckpt-unpack, run as real binaries: rootfs fidelity, listing, compression, filter
//! manners, and hostile or broken streams.

mod util;

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use ckpt_stream::wire::{Kind, TarWriter};
use util::forge::{dir, file, forge, hostile_dir, meta, refused, refused_keep_outside, MANIFEST};
use util::{require_root, Dir};

/// A minimal bundle dir: manifest, container config, an empty rootfs and images dir.
fn bundle(dir: &Path) {
    fs::create_dir_all(dir.join("container")).unwrap();
    fs::create_dir_all(dir.join("rootfs")).unwrap();
    fs::create_dir_all(dir.join("images")).unwrap();
    fs::write(dir.join("manifest.json"), MANIFEST).unwrap();
    fs::write(dir.join("container/config"), "lxc.uts.name = u1\n").unwrap();
    fs::write(dir.join("images/inventory.img"), [1, 2, 3]).unwrap();
}

/// The stream ckpt-pack writes with `args`, which must succeed.
fn packed(t: &Dir, args: &[&str]) -> Vec<u8> {
    t.cmd("ckpt-pack").args(args).ok().stdout().to_vec()
}

fn setxattr(path: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(path, name, value, rustix::fs::XattrFlags::empty())
        .unwrap_or_else(|e| panic!("setxattr {name} on {}: {e}", path.display()));
}

fn set_mtime(path: &Path, sec: i64, nsec: i64) {
    let t = rustix::fs::Timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    };
    let times = rustix::fs::Timestamps {
        last_access: t,
        last_modification: t,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &times,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

/// A rootfs with every kind of file and metadata the stream must keep.
fn rich_rootfs(root: &Path) {
    let p = |rel: &str| root.join(rel);
    fs::create_dir_all(p("etc/empty")).unwrap();
    fs::create_dir_all(p("dev")).unwrap();
    fs::write(p("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
    fs::write(p("bin"), vec![7u8; 300_000]).unwrap();
    fs::set_permissions(p("bin"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::hard_link(p("bin"), p("bin-link")).unwrap();
    fs::create_dir(p("tmp")).unwrap();
    fs::set_permissions(p("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::write(p("sgid"), "g").unwrap();
    fs::set_permissions(p("sgid"), fs::Permissions::from_mode(0o2711)).unwrap();
    symlink("/etc/passwd", p("abs-link")).unwrap();
    symlink("../etc/passwd", p("dev/rel-link")).unwrap();
    let sparse = fs::File::create(p("sparse")).unwrap();
    sparse.set_len(64 << 20).unwrap();
    std::os::unix::fs::FileExt::write_at(&sparse, b"middle", 32 << 20).unwrap();
    std::os::unix::fs::FileExt::write_at(&sparse, b"end", (64 << 20) - 3).unwrap();
    drop(sparse);
    use rustix::fs::FileType::{BlockDevice, CharacterDevice, Fifo};
    mknod(&p("fifo"), Fifo, 0o640, 0);
    mknod(
        &p("dev/null"),
        CharacterDevice,
        0o666,
        rustix::fs::makedev(1, 3),
    );
    mknod(
        &p("dev/sda1"),
        BlockDevice,
        0o660,
        rustix::fs::makedev(8, 1),
    );
    let long = "l".repeat(200);
    fs::create_dir_all(p(&format!("{long}/{long}"))).unwrap();
    fs::write(p(&format!("{long}/{long}/{long}")), "deep").unwrap();
    let odd = root.join(std::ffi::OsStr::from_bytes(b"caf\xe9-\xff"));
    fs::write(&odd, "latin1 name").unwrap();
    chown(&p("etc/passwd"), 1234, 5678);
    chown(&p("abs-link"), 42, 43);
    // CAP_NET_BIND_SERVICE, permitted + effective, vfs_cap_data revision 2.
    let cap = [1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    fs::write(p("ping"), "ping").unwrap();
    setxattr(&p("ping"), "security.capability", &cap);
    setxattr(&p("etc/passwd"), "user.note", b"\x00binary\xff");
    setxattr(&p("etc"), "user.dir", b"on a dir");
    setxattr(&p("abs-link"), "trusted.on-symlink", b"yes");
    for (i, rel) in [
        "etc/passwd",
        "etc/empty",
        "etc",
        "abs-link",
        "fifo",
        "dev/null",
        "dev",
        "sparse",
        "tmp",
    ]
    .iter()
    .enumerate()
    {
        set_mtime(&p(rel), 1_600_000_000 + i as i64, 123_456_789 + i as i64);
    }
    set_mtime(root, 1_500_000_000, 999_999_999);
}

fn mknod(path: &Path, kind: rustix::fs::FileType, mode: u32, dev: u64) {
    rustix::fs::mknodat(rustix::fs::CWD, path, kind, mode.into(), dev).unwrap();
}

/// Sets a numeric owner without following a symlink.
fn chown(path: &Path, user: u32, group: u32) {
    let nofollow = rustix::fs::AtFlags::SYMLINK_NOFOLLOW;
    rustix::fs::chownat(
        rustix::fs::CWD,
        path,
        Some(uid(user)),
        Some(gid(group)),
        nofollow,
    )
    .unwrap();
}

fn uid(n: u32) -> rustix::fs::Uid {
    rustix::fs::Uid::from_raw(n)
}

fn gid(n: u32) -> rustix::fs::Gid {
    rustix::fs::Gid::from_raw(n)
}

/// Everything compared between a source tree and its unpacked copy, for one path.
#[derive(Debug, PartialEq)]
struct Fact {
    rel: Vec<u8>,
    kind: String,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: (i64, i64),
    rdev: u64,
    nlink: u64,
    data: Option<blake3::Hash>,
    link: Option<Vec<u8>>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    sparse: bool,
}

fn facts(root: &Path) -> Vec<Fact> {
    let mut out = Vec::new();
    for entry in walkdir::WalkDir::new(root).sort_by_file_name() {
        let entry = entry.unwrap();
        let path = entry.path();
        let m = fs::symlink_metadata(path).unwrap();
        let ft = m.file_type();
        let kind = format!(
            "{:?}",
            (
                ft.is_dir(),
                ft.is_file(),
                ft.is_symlink(),
                ft.is_fifo(),
                ft.is_char_device(),
                ft.is_block_device()
            )
        );
        let mut names = vec![0u8; 65536];
        let n = rustix::fs::llistxattr(path, &mut names).unwrap_or(0);
        let mut xattrs: Vec<(Vec<u8>, Vec<u8>)> = names[..n]
            .split(|&b| b == 0)
            .filter(|k| !k.is_empty())
            .map(|k| {
                let mut v = vec![0u8; 65536];
                let len = rustix::fs::lgetxattr(path, k, &mut v).unwrap();
                (k.to_vec(), v[..len].to_vec())
            })
            .collect();
        xattrs.sort();
        out.push(Fact {
            rel: path
                .strip_prefix(root)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec(),
            kind,
            mode: m.mode(),
            uid: m.uid(),
            gid: m.gid(),
            size: if ft.is_dir() { 0 } else { m.len() },
            mtime: (m.mtime(), m.mtime_nsec()),
            rdev: m.rdev(),
            nlink: if ft.is_dir() { 0 } else { m.nlink() },
            data: ft.is_file().then(|| blake3::hash(&fs::read(path).unwrap())),
            link: ft
                .is_symlink()
                .then(|| fs::read_link(path).unwrap().as_os_str().as_bytes().to_vec()),
            xattrs,
            sparse: ft.is_file() && m.blocks() * 512 < m.len() / 2,
        });
    }
    out
}

fn assert_same_tree(src: &Path, dst: &Path) {
    let (a, b) = (facts(src), facts(dst));
    assert_eq!(
        a.len(),
        b.len(),
        "different number of files in {} and {}",
        src.display(),
        dst.display()
    );
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x, y, "{} differs", String::from_utf8_lossy(&x.rel));
    }
}

#[test]
fn rootfs_survives_pack_and_unpack_field_by_field() {
    require_root("the rootfs fidelity test (device nodes, ownership, security.* xattrs)");
    let t = Dir::new("fidelity");
    bundle(&t.join("b"));
    rich_rootfs(&t.join("b/rootfs"));
    let stream = t.cmd("ckpt-pack").arg("b").ok();
    t.cmd("ckpt-unpack")
        .args(["-C", "out"])
        .stdin(stream.stdout().to_vec())
        .ok();
    assert_same_tree(&t.join("b/rootfs"), &t.join("out/rootfs"));
    assert_same_tree(&t.join("b/container"), &t.join("out/container"));
    assert_same_tree(&t.join("b/images"), &t.join("out/images"));
    let facts = facts(&t.join("out/rootfs"));
    let sparse = facts.iter().find(|f| f.rel == b"sparse").unwrap();
    assert!(sparse.sparse, "sparse file was unpacked dense");
    let bin = facts.iter().find(|f| f.rel == b"bin").unwrap();
    assert_eq!(bin.nlink, 2, "hard link was unpacked as a copy");
}

#[test]
fn container_source_streams_dir_rootfs_and_images() {
    let t = Dir::new("container");
    fs::create_dir_all(t.join("lxc/u1/rootfs/etc")).unwrap();
    fs::write(
        t.join("lxc/u1/config"),
        format!(
            "lxc.rootfs.path = dir:{}\n",
            t.join("lxc/u1/rootfs").display()
        ),
    )
    .unwrap();
    fs::write(t.join("lxc/u1/rootfs/etc/hostname"), "u1\n").unwrap();
    fs::create_dir(t.join("ck")).unwrap();
    fs::write(t.join("ck/inventory.img"), "inv").unwrap();
    fs::write(t.join("ck/pages-1.img"), vec![9u8; 100_000]).unwrap();
    let lxcpath = t.join("lxc");
    let run = t
        .cmd("ckpt-pack")
        .args(["-n", "u1", "-P"])
        .arg(&lxcpath)
        .args(["-D", "ck", "-o", "u1.ckpt"])
        .ok();
    assert!(run.stderr_str().contains("u1:"), "no summary line");
    let list = t
        .cmd("ckpt-unpack")
        .args(["--list", "-i", "u1.ckpt"])
        .ok()
        .stdout_str();
    for needle in [
        "container/config",
        "rootfs/etc/hostname",
        "images/pages-1.img",
        "# trailer: ",
    ] {
        assert!(list.contains(needle), "--list lacks {needle}:\n{list}");
    }
    assert!(
        !list.contains("container/rootfs"),
        "rootfs streamed twice:\n{list}"
    );
    t.cmd("ckpt-unpack")
        .args(["-C", "out", "-i", "u1.ckpt"])
        .ok();
    assert_eq!(
        fs::read(t.join("out/images/pages-1.img")).unwrap(),
        vec![9u8; 100_000]
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(t.join("out/manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["name"], "u1");
    assert_eq!(manifest["lxcpath"], lxcpath.to_str().unwrap());
    // No rootfs: the manifest says so and rootfs/ is absent.
    let list = t
        .cmd("ckpt-pack")
        .args(["-n", "u1", "-P"])
        .arg(&lxcpath)
        .arg("--no-rootfs")
        .ok();
    let list = t
        .cmd("ckpt-unpack")
        .arg("--list")
        .stdin(list.stdout().to_vec())
        .ok()
        .stdout_str();
    assert!(
        list.contains("rootfs none") && !list.contains("rootfs/etc"),
        "{list}"
    );
}

#[test]
fn edited_bundle_is_repacked_with_fresh_hashes() {
    let t = Dir::new("repack");
    bundle(&t.join("b"));
    let first = t.cmd("ckpt-pack").arg("b").ok();
    t.cmd("ckpt-unpack")
        .args(["-C", "u"])
        .stdin(first.stdout().to_vec())
        .ok();
    fs::write(t.join("u/container/config"), "lxc.uts.name = edited\n").unwrap();
    let second = t.cmd("ckpt-pack").arg("u").ok();
    t.cmd("ckpt-unpack")
        .args(["-C", "v"])
        .stdin(second.stdout().to_vec())
        .ok();
    assert_eq!(
        fs::read_to_string(t.join("v/container/config")).unwrap(),
        "lxc.uts.name = edited\n"
    );
}

#[test]
fn zstd_streams_round_trip_and_are_checked() {
    let t = Dir::new("zstd");
    bundle(&t.join("b"));
    fs::write(t.join("b/rootfs/big"), "compressible ".repeat(100_000)).unwrap();
    let plain = packed(&t, &["b"]);
    let z = packed(&t, &["b", "--compress", "zstd:3"]);
    assert!(
        z.len() * 10 < plain.len(),
        "zstd did not compress: {} vs {}",
        z.len(),
        plain.len()
    );
    assert_eq!(&z[..4], &[0x28, 0xb5, 0x2f, 0xfd]);
    t.cmd("ckpt-unpack")
        .args(["-C", "out"])
        .stdin(z.clone())
        .ok();
    assert_eq!(
        fs::read(t.join("out/rootfs/big")).unwrap(),
        fs::read(t.join("b/rootfs/big")).unwrap()
    );
    // Some bits of a zstd frame are redundant (window size, unused table bits): flipping them
    // changes nothing that is decoded. Every flip must be refused unless the decoded stream is
    // byte-for-byte the original, which the trailer then proves.
    let decoded = zstd::decode_all(&z[..]).unwrap();
    let mut refused = 0;
    for i in 0..z.len() {
        let mut bad = z.clone();
        bad[i] ^= 0x01;
        let run = t
            .cmd("ckpt-unpack")
            .args(["-q", "--verify"])
            .stdin(bad.clone())
            .output();
        if run.code() == Some(0) {
            let same = zstd::decode_all(&bad[..])
                .map(|d| d == decoded)
                .unwrap_or(false);
            assert!(
                same,
                "flip at {i} changed the decoded stream yet was accepted"
            );
        } else {
            refused += 1;
            run.expect_code(1).one_line_error("bad stream");
        }
    }
    assert!(
        refused > z.len() * 9 / 10,
        "only {refused} of {} flips refused",
        z.len()
    );
    t.cmd("ckpt-unpack")
        .arg("--verify")
        .stdin(z[..z.len() - 1].to_vec())
        .fails(1)
        .one_line_error("bad stream");
    let mut trailing = z.clone();
    trailing.extend_from_slice(b"garbage");
    t.cmd("ckpt-unpack")
        .arg("--verify")
        .stdin(trailing)
        .fails(1)
        .one_line_error("zstd data is corrupt");
}

/// Deterministic incompressible bytes (xorshift), the stand-in for random memory pages.
fn noise(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..len.div_ceil(8))
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .take(len)
        .collect()
}

#[test]
fn zstd_streams_send_incompressible_data_raw_and_check_it() {
    let t = Dir::new("zstd-raw");
    bundle(&t.join("b"));
    fs::write(t.join("b/images/pages-1.img"), noise(3 << 20)).unwrap();
    fs::write(
        t.join("b/rootfs/log"),
        "GET /index.html 200\n".repeat(50_000),
    )
    .unwrap();
    let plain = packed(&t, &["b"]);
    let z = packed(&t, &["b", "--compress", "zstd"]);
    // The noise costs only raw block headers; the log still shrinks.
    let floor = 3 << 20;
    assert!(
        z.len() > floor && z.len() < floor + (plain.len() - floor) / 4,
        "zstd stream of {} bytes for {} plain",
        z.len(),
        plain.len()
    );
    // zstd's own tool reads the mixed frames.
    let decoded = t
        .program("zstd")
        .args(["-d", "-c"])
        .stdin(z.clone())
        .ok()
        .stdout()
        .to_vec();
    t.cmd("ckpt-unpack")
        .args(["--verify", "-q"])
        .stdin(decoded)
        .ok();
    t.cmd("ckpt-unpack")
        .args(["-C", "out"])
        .stdin(z.clone())
        .ok();
    assert!(fs::read(t.join("out/images/pages-1.img")).unwrap() == noise(3 << 20));
    // A flip in raw data decodes fine as zstd, so the trailer's digest is what refuses it.
    for i in (0..z.len()).step_by(z.len() / 97) {
        let mut bad = z.clone();
        bad[i] ^= 0x10;
        t.cmd("ckpt-unpack")
            .args(["-q", "--verify"])
            .stdin(bad)
            .fails(1)
            .one_line_error("bad stream");
    }
}

#[test]
fn pack_refuses_a_terminal_and_fails_on_a_broken_pipe() {
    let t = Dir::new("filter");
    bundle(&t.join("b"));
    fs::write(t.join("b/rootfs/big"), vec![1u8; 8 << 20]).unwrap();
    let master =
        rustix::pty::openpt(rustix::pty::OpenptFlags::RDWR | rustix::pty::OpenptFlags::NOCTTY)
            .unwrap();
    rustix::pty::grantpt(&master).unwrap();
    rustix::pty::unlockpt(&master).unwrap();
    let name = rustix::pty::ptsname(&master, Vec::new()).unwrap();
    let tty = fs::OpenOptions::new()
        .write(true)
        .open(name.to_str().unwrap())
        .unwrap();
    let out = std::process::Command::new(util::bin("ckpt-pack"))
        .current_dir(t.path())
        .arg("b")
        .stdout(tty)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("terminal"));

    // The reader goes away after one byte: the writer must fail, not exit 0.
    let mut child = std::process::Command::new(util::bin("ckpt-pack"))
        .current_dir(t.path())
        .arg("b")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut one = [0u8; 1];
    std::io::Read::read_exact(&mut stdout, &mut one).unwrap();
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("Broken pipe") && !err.contains("panicked"),
        "{err}"
    );
}

#[test]
fn usage_errors_exit_2() {
    let t = Dir::new("usage");
    t.cmd("ckpt-pack").fails(2);
    t.cmd("ckpt-unpack").fails(2);
    t.cmd("ckpt-pack")
        .args(["b", "--compress", "gzip"])
        .fails(2);
    fs::create_dir(t.join("full")).unwrap();
    fs::write(t.join("full/x"), "").unwrap();
    t.cmd("ckpt-unpack")
        .args(["-C", "full"])
        .stdin(Vec::new())
        .fails(2)
        .one_line_error("not empty");
    t.cmd("ckpt-pack")
        .arg("missing-bundle")
        .fails(1)
        .one_line_error("missing-bundle");
    t.cmd("ckpt-pack")
        .args(["-n", "nope", "-P"])
        .arg(t.path())
        .fails(1)
        .one_line_error("nope");
}

// ---- hostile and broken streams ----

#[test]
fn escaping_paths_are_refused() {
    let t = hostile_dir("paths");
    let outside = t.join("outside");
    let outside = outside.as_os_str().as_bytes();
    for (path, needle) in [
        (b"../x".to_vec(), "outside the bundle roots"),
        (b"rootfs/../../outside/x".to_vec(), "'..'"),
        ([b"rootfs/", outside].concat(), "'.', '..' or empty"),
        ([&b"/"[..], outside, b"/x"].concat(), "absolute"),
        (b"etc/passwd".to_vec(), "outside the bundle roots"),
        (b"rootfs/./x".to_vec(), "'.'"),
    ] {
        refused(&t, forge(&[dir(b"rootfs"), file(&path, b"evil")]), needle);
    }
}

#[test]
fn symlink_then_write_is_refused() {
    let t = hostile_dir("symlinks");
    let outside = t.join("outside").into_os_string().into_vec();
    use std::os::unix::ffi::OsStringExt;
    let link =
        |path: &[u8], target: &[u8]| (meta(path, Kind::Symlink(target.to_vec())), Vec::new());
    refused(
        &t,
        forge(&[
            dir(b"rootfs"),
            link(b"rootfs/x", &outside),
            file(b"rootfs/x/passwd", b"evil"),
        ]),
        "symlink",
    );
    refused(
        &t,
        forge(&[
            dir(b"rootfs"),
            link(b"rootfs/x", b"/etc"),
            file(b"rootfs/x/passwd", b"evil"),
        ]),
        "symlink",
    );
    let chain = [
        dir(b"rootfs"),
        link(b"rootfs/a", b".."),
        link(b"rootfs/b", b"a/.."),
        file(b"rootfs/b/outside/x", b"e"),
    ];
    refused(&t, forge(&chain), "symlink");
    refused(
        &t,
        forge(&[
            dir(b"rootfs"),
            link(b"rootfs/d", b"."),
            dir(b"rootfs/d/sub"),
        ]),
        "symlink",
    );
}

#[test]
fn hard_links_out_of_place_are_refused() {
    let t = hostile_dir("hardlinks");
    let hard =
        |path: &[u8], target: &[u8]| (meta(path, Kind::Hardlink(target.to_vec())), Vec::new());
    let outside = [t.join("outside").as_os_str().as_bytes(), b"/x"].concat();
    fs::write(t.join("outside/x"), "victim").unwrap();
    let res = std::panic::catch_unwind(|| ());
    drop(res);
    refused_keep_outside(
        &t,
        forge(&[dir(b"rootfs"), hard(b"rootfs/h", &outside)]),
        "absolute",
    );
    refused_keep_outside(
        &t,
        forge(&[dir(b"rootfs"), hard(b"rootfs/h", b"../outside/x")]),
        "outside the bundle roots",
    );
    let cross = [
        dir(b"container"),
        file(b"container/config", b"c"),
        dir(b"rootfs"),
        hard(b"rootfs/h", b"container/config"),
    ];
    refused_keep_outside(&t, forge(&cross), "bundle root");
    refused_keep_outside(
        &t,
        forge(&[dir(b"rootfs"), hard(b"rootfs/h", b"rootfs/later")]),
        "not in the stream before",
    );
}

#[test]
fn duplicates_and_misordered_entries_are_refused() {
    let t = hostile_dir("dups");
    refused(
        &t,
        forge(&[
            dir(b"rootfs"),
            file(b"rootfs/a", b"1"),
            file(b"rootfs/a", b"2"),
        ]),
        "duplicate",
    );
    refused(
        &t,
        forge(&[dir(b"rootfs"), dir(b"rootfs/d"), dir(b"rootfs/d")]),
        "duplicate",
    );
    refused(&t, forge(&[dir(b"rootfs"), dir(b"rootfs")]), "duplicate");
    refused(
        &t,
        forge(&[file(b"rootfs/a", b"1")]),
        "before the rootfs/ directory",
    );
    refused(
        &t,
        forge(&[dir(b"rootfs"), file(b"rootfs/no/such/a", b"1")]),
        "not in the stream before",
    );
    refused(
        &t,
        forge(&[file(b"rootfs", b"not a dir")]),
        "not a directory",
    );
    refused(
        &t,
        forge(&[dir(b"rootfs"), file(b"manifest.json", b"{}")]),
        "twice",
    );
}

#[test]
fn unknown_entry_types_are_refused() {
    let t = hostile_dir("types");
    let mut stream = forge(&[dir(b"rootfs"), file(b"rootfs/a", b"1")]);
    // Find rootfs/a's header and turn it into a GNU long-name ('L') entry with a valid checksum.
    let at = (0..stream.len())
        .step_by(512)
        .find(|&i| stream[i..].starts_with(b"rootfs/a\0"))
        .unwrap();
    for ty in [b'L', b'S', b'g', b'7', b'V'] {
        let mut bad = stream.clone();
        bad[at + 156] = ty;
        let header = tar::Header::from_byte_slice(&bad[at..at + 512]);
        let mut fixed = header.clone();
        fixed.set_cksum();
        bad[at..at + 512].copy_from_slice(fixed.as_bytes());
        refused(&t, bad, "unsupported");
    }
    stream.clear();
}

#[test]
fn corruption_truncation_and_forged_trailers_are_refused() {
    let t = hostile_dir("corrupt");
    let good = forge(&[
        dir(b"rootfs"),
        file(b"rootfs/a", &[5u8; 3000]),
        file(b"rootfs/b", b"bee"),
    ]);
    t.cmd("ckpt-unpack")
        .arg("--verify")
        .stdin(good.clone())
        .ok();
    for i in (0..good.len()).step_by(61) {
        let mut bad = good.clone();
        bad[i] ^= 0x04;
        refused(&t, bad, "");
    }
    // Truncated at every entry boundary and in the middle of entries (cut to nothing, it is an
    // empty input: see empty_input_is_named_as_empty).
    for cut in (512..good.len())
        .step_by(512)
        .chain([700, 2000, good.len() - 100])
    {
        refused(&t, good[..cut].to_vec(), "truncated");
    }
    // No trailer at all: the tar end blocks right after the last entry.
    let mut w = TarWriter::new(Vec::new());
    let (m, data) = file(b"manifest.json", MANIFEST.as_bytes());
    w.append(&m, &mut &data[..]).unwrap();
    let (r, _) = dir(b"rootfs");
    w.append(&r, &mut std::io::empty()).unwrap();
    let mut bytes = ckpt_stream::seal(std::mem::replace(&mut w, TarWriter::new(Vec::new())), None)
        .unwrap()
        .0;
    let trailer_at = bytes.len() - 1024 - 1024;
    bytes.truncate(trailer_at);
    bytes.extend_from_slice(&[0u8; 1024]);
    refused(&t, bytes, "without a trailer");
    // A forged trailer: right format and count, wrong digest (fixed header checksum).
    let text = String::from_utf8_lossy(&good).into_owned();
    let at = text.find("\"digest\":\"blake3:").unwrap() + 17;
    let mut forged = good.clone();
    forged[at] = if forged[at] == b'0' { b'1' } else { b'0' };
    refused(&t, forged, "digest mismatch");
    let count_at = text.find("\"entries\":").unwrap() + 10;
    let mut lying = good.clone();
    lying[count_at] += 1;
    refused(&t, lying, "entries");
}

#[test]
fn huge_declared_size_is_refused_without_allocating() {
    let t = hostile_dir("huge");
    let mut stream = forge(&[dir(b"rootfs"), file(b"rootfs/a", b"x")]);
    let at = (0..stream.len())
        .step_by(512)
        .find(|&i| stream[i..].starts_with(b"rootfs/a\0"))
        .unwrap();
    let header = tar::Header::from_byte_slice(&stream[at..at + 512]);
    let mut big = header.clone();
    big.set_size(1 << 40);
    big.set_cksum();
    stream[at..at + 512].copy_from_slice(big.as_bytes());
    stream.truncate(at + 512 + 4096);
    refused(&t, stream, "truncated");
}

// ---- inputs that are not ckpt streams (issue #16): refused for what they are ----

/// `ckpt-unpack --verify`, `ckpt-unpack --list` and `ckpt-restore --check` all refuse `input` on
/// stdin with one line holding `needle`, exit 1, and nothing on stdout but ckpt-restore's result.
fn not_a_stream(t: &Dir, input: &[u8], needle: &str) {
    // ckpt-restore gets an lxcpath of the test's own, so that the host's LXC setup plays no part.
    for (tool, args) in [
        ("ckpt-unpack", &["--verify"][..]),
        ("ckpt-unpack", &["--list"]),
        ("ckpt-restore", &["--check", "-P", "lxc"]),
    ] {
        let run = t
            .cmd(tool)
            .args(args)
            .arg("-q")
            .stdin(input.to_vec())
            .fails(1)
            .one_line_error(needle);
        if tool == "ckpt-unpack" && !run.stdout().is_empty() {
            run.fail("a refused input printed something");
        }
    }
}

#[test]
fn empty_input_is_named_as_empty() {
    let t = Dir::new("not-empty");
    not_a_stream(
        &t,
        b"",
        "bad stream: no stream on standard input: it is empty (did the command writing it fail?)",
    );
    fs::write(t.join("u1.ckpt"), b"").unwrap();
    for (tool, args) in [
        ("ckpt-unpack", &["--verify"][..]),
        ("ckpt-restore", &["--check", "-P", "lxc"]),
    ] {
        t.cmd(tool)
            .args(args)
            .args(["-i", "u1.ckpt"])
            .fails(1)
            .one_line_error("bad stream: u1.ckpt is empty: no stream in it");
    }
    // zstd of nothing holds no stream either.
    not_a_stream(
        &t,
        &zstd::encode_all(&b""[..], 1).unwrap(),
        "not a ckpt stream: the input is zstd-compressed but decompresses to nothing",
    );
}

#[test]
fn bytes_that_are_not_a_tar_header_are_named() {
    let t = Dir::new("not-tar");
    not_a_stream(
        &t,
        b"hello world\nthis is a text file\n",
        "bad stream: not a ckpt stream: the input does not start with a tar header (it starts \
         with text \"hello world\"); ckpt streams are made by ckpt-dump or ckpt-pack",
    );
    // Binary that is not a tar (an ELF header), whole blocks of it or a few bytes.
    let elf = [&b"\x7fELF\x02\x01\x01\0"[..], &noise(4000)].concat();
    for len in [3, 8, 4000] {
        let shown = ["7f", "45", "4c", "46", "02", "01", "01", "00"][..len.min(8)].join(" ");
        not_a_stream(
            &t,
            &elf[..len],
            &format!(
                "not a ckpt stream: the input does not start with a tar header (it starts with \
                 bytes {shown})"
            ),
        );
    }
    not_a_stream(
        &t,
        &[0; 10240],
        "not a ckpt stream: the input starts with zero bytes, not a tar header (an empty tar \
         archive?)",
    );
    // The same inside zstd.
    not_a_stream(
        &t,
        &zstd::encode_all(&b"hello world\n"[..], 1).unwrap(),
        "not a ckpt stream: the zstd-decompressed input does not start with a tar header (it \
         starts with text \"hello world\")",
    );
    // Other compressors are named, with the command that decompresses them.
    for (magic, name) in [
        (&b"\x1f\x8b\x08\x00"[..], "gzip"),
        (b"\xfd7zXZ\x00\x00\x04", "xz"),
        (b"BZh91AY&SY", "bzip2"),
    ] {
        not_a_stream(
            &t,
            &[magic, &noise(600)].concat(),
            &format!(
                "bad stream: {name}-compressed data, not a ckpt stream: ckpt reads plain or \
                 zstd-compressed streams (if it holds one, decompress it first: {name} -dc)"
            ),
        );
    }
}

#[test]
fn plain_tar_archive_is_named_with_its_first_entry() {
    let t = Dir::new("not-ckpt-tar");
    fs::create_dir(t.join("etc")).unwrap();
    fs::write(t.join("etc/hostname"), "h1\n").unwrap();
    let expect = "bad stream: a tar archive, but not a ckpt stream: its first entry is \
                  \"etc/hostname\"; ckpt streams start with manifest.json and are made by \
                  ckpt-dump or ckpt-pack";
    // GNU tar's default format, and pax (whose first header is a pax header for the entry).
    for format in ["gnu", "pax", "ustar"] {
        let tar = t
            .program("tar")
            .args(["--format", format, "-cf", "-", "etc/hostname"])
            .ok()
            .stdout()
            .to_vec();
        not_a_stream(&t, &tar, expect);
    }
    // ckpt's own tar writer, no manifest: plain and zstd-compressed.
    let mut w = TarWriter::new(Vec::new());
    let (f, data) = file(b"etc/hostname", b"h1\n");
    w.append(&f, &mut &data[..]).unwrap();
    let tar = ckpt_stream::seal(w, None).unwrap().0;
    not_a_stream(&t, &tar, expect);
    not_a_stream(
        &t,
        &zstd::encode_all(&tar[..], 1).unwrap(),
        &expect.replace("a tar archive", "a zstd-compressed tar archive"),
    );
    // A ckpt stream cut inside its first header is still a truncated ckpt stream.
    let good = forge(&[dir(b"rootfs")]);
    for cut in [1, 100, 300, 511] {
        not_a_stream(&t, &good[..cut], "truncated");
    }
}

#[test]
fn stream_from_a_newer_format_version_says_so() {
    let t = Dir::new("newer");
    let mut manifest: serde_json::Value = serde_json::from_str(MANIFEST).unwrap();
    manifest["version"] = 2.into();
    manifest["ckpt"] = "9.0.0".into();
    // A newer manifest may lack fields this ckpt knows: the version is what matters.
    manifest.as_object_mut().unwrap().remove("lxcpath");
    let mut w = TarWriter::new(Vec::new());
    let (m, data) = file(b"manifest.json", manifest.to_string().as_bytes());
    w.append(&m, &mut &data[..]).unwrap();
    let stream = ckpt_stream::seal(w, None).unwrap().0;
    let expect = format!(
        "bad stream: stream from a newer ckpt (format version 2, written by ckpt 9.0.0; this \
         ckpt {} reads version 1): upgrade ckpt on this host",
        env!("CARGO_PKG_VERSION")
    );
    not_a_stream(&t, &stream, &expect);
    not_a_stream(&t, &zstd::encode_all(&stream[..], 1).unwrap(), &expect);
}

// ---- authenticated streams ----

const KEY1: &str = "3f8a1c0d9b7e4a2f6c5d1e0b9a8f7e6d5c4b3a291807f6e5d4c3b2a19087f6e5";
const KEY2: &str = "0000000000000000000000000000000000000000000000000000000000000001";

fn keyed_dir(name: &str) -> Dir {
    let t = Dir::new(name);
    bundle(&t.join("b"));
    fs::write(t.join("b/rootfs/secret-free"), "data").unwrap();
    fs::write(t.join("k1"), KEY1).unwrap();
    fs::write(t.join("k2"), KEY2).unwrap();
    t
}

#[test]
fn keyed_streams_verify_only_with_their_key() {
    let t = keyed_dir("auth");
    let signed = t
        .cmd("ckpt-pack")
        .args(["b", "--key", "k1"])
        .ok()
        .stdout()
        .to_vec();
    assert!(
        !String::from_utf8_lossy(&signed).contains(KEY1),
        "the key leaked into the stream"
    );
    t.cmd("ckpt-unpack")
        .args(["--verify", "--key", "k1"])
        .stdin(signed.clone())
        .ok();
    t.cmd("ckpt-unpack")
        .args(["-C", "out", "--key", "k2"])
        .stdin(signed.clone())
        .fails(1)
        .one_line_error("MAC mismatch");
    assert!(!t.join("out").exists());
    // A reader without a key still checks integrity.
    t.cmd("ckpt-unpack")
        .arg("--verify")
        .stdin(signed.clone())
        .ok();
    // The key can come from the environment.
    t.cmd("ckpt-unpack")
        .arg("--verify")
        .env("CKPT_KEY", KEY1)
        .stdin(signed.clone())
        .ok();
    t.cmd("ckpt-unpack")
        .arg("--verify")
        .env("CKPT_KEY", KEY2)
        .stdin(signed.clone())
        .fails(1)
        .one_line_error("MAC mismatch");
    let from_env = t
        .cmd("ckpt-pack")
        .arg("b")
        .env("CKPT_KEY", KEY1)
        .ok()
        .stdout()
        .to_vec();
    t.cmd("ckpt-unpack")
        .args(["--verify", "--key", "k1"])
        .stdin(from_env)
        .ok();
    // Unauthenticated streams are refused when a key is required.
    let plain = packed(&t, &["b"]);
    t.cmd("ckpt-unpack")
        .args(["-C", "out", "--key", "k1"])
        .stdin(plain)
        .fails(1)
        .one_line_error("no MAC");
    assert!(!t.join("out").exists());
    // A short key is a usage error.
    fs::write(t.join("short"), "abc").unwrap();
    t.cmd("ckpt-pack")
        .args(["b", "--key", "short"])
        .fails(2)
        .one_line_error("shorter than 16 bytes");
}

/// Rewrites the trailer JSON of a plain stream (and its tar header), as an attacker could.
fn with_trailer(stream: &[u8], edit: impl Fn(&mut serde_json::Value)) -> Vec<u8> {
    let at = (0..stream.len())
        .step_by(512)
        .find(|&i| stream[i..].starts_with(b"trailer.json\0"))
        .unwrap();
    let header = tar::Header::from_byte_slice(&stream[at..at + 512]);
    let size = header.size().unwrap() as usize;
    let mut trailer: serde_json::Value =
        serde_json::from_slice(&stream[at + 512..at + 512 + size]).unwrap();
    edit(&mut trailer);
    let json = serde_json::to_vec(&trailer).unwrap();
    let mut h = header.clone();
    h.set_size(json.len() as u64);
    h.set_cksum();
    let mut out = stream[..at].to_vec();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(&json);
    out.resize(out.len().div_ceil(512) * 512 + 1024, 0);
    out
}

#[test]
fn stripped_or_recomputed_macs_are_refused() {
    let t = keyed_dir("auth-strip");
    let signed = t
        .cmd("ckpt-pack")
        .args(["b", "--key", "k1"])
        .ok()
        .stdout()
        .to_vec();
    let stripped = with_trailer(&signed, |tr| {
        tr.as_object_mut().unwrap().remove("mac");
    });
    t.cmd("ckpt-unpack")
        .arg("--verify")
        .stdin(stripped.clone())
        .ok();
    t.cmd("ckpt-unpack")
        .args(["--verify", "--key", "k1"])
        .stdin(stripped)
        .fails(1)
        .one_line_error("no MAC");
    let forged = with_trailer(&signed, |tr| {
        tr["mac"] = format!("blake3-keyed:{}", "ab".repeat(32)).into()
    });
    t.cmd("ckpt-unpack")
        .args(["--verify", "--key", "k1"])
        .stdin(forged)
        .fails(1)
        .one_line_error("MAC mismatch");
}

#[test]
fn entries_swapped_between_authenticated_streams_are_refused() {
    let t = keyed_dir("auth-swap");
    fs::write(t.join("b/rootfs/config"), "mode=safe").unwrap();
    let a = t
        .cmd("ckpt-pack")
        .args(["b", "--key", "k1"])
        .ok()
        .stdout()
        .to_vec();
    fs::write(t.join("b/rootfs/config"), "mode=evil").unwrap();
    let b = t
        .cmd("ckpt-pack")
        .args(["b", "--key", "k1"])
        .ok()
        .stdout()
        .to_vec();
    // Same layout, one entry's data differs: splice B's data block into A.
    let at = a.windows(9).position(|w| w == b"mode=safe").unwrap();
    assert_eq!(&b[at..at + 9], b"mode=evil");
    let mut spliced = a.clone();
    spliced[at..at + 512].copy_from_slice(&b[at..at + 512]);
    t.cmd("ckpt-unpack")
        .args(["--verify", "--key", "k1"])
        .stdin(spliced.clone())
        .fails(1)
        .one_line_error("digest mismatch");
    // An attacker who also fixes the digest (no key) is still refused: the MAC covers the digest.
    let refixed = with_trailer(&spliced, |tr| tr["digest"] = chain_digest(&spliced).into());
    t.cmd("ckpt-unpack")
        .arg("--verify")
        .stdin(refixed.clone())
        .ok();
    t.cmd("ckpt-unpack")
        .args(["--verify", "--key", "k1"])
        .stdin(refixed)
        .fails(1)
        .one_line_error("MAC mismatch");
}

// ---- adversarial corpus: header smuggling, special files, bombs ----

/// Rewrites the ustar header of the entry named `name` (first match) and fixes its checksum.
fn patch_header(stream: &mut [u8], name: &[u8], edit: impl Fn(&mut tar::Header)) {
    let mut prefix = name.to_vec();
    prefix.push(0);
    let at = (0..stream.len())
        .step_by(512)
        .find(|&i| stream[i..].starts_with(&prefix))
        .unwrap();
    let mut h = tar::Header::from_byte_slice(&stream[at..at + 512]).clone();
    edit(&mut h);
    h.set_cksum();
    stream[at..at + 512].copy_from_slice(h.as_bytes());
}

#[test]
fn header_smuggling_is_refused() {
    let t = hostile_dir("smuggle");
    // pax size and ustar size disagree (a >8 GiB-style pax size on a small entry).
    let mut big = meta(
        b"rootfs/a",
        Kind::File {
            size: 3,
            sparse: None,
        },
    );
    big.uid = 3_000_000; // forces a pax header for this entry
    let mut stream = forge(&[dir(b"rootfs"), (big, b"abc".to_vec())]);
    let pax_at = stream
        .windows(12)
        .position(|w| w == b" uid=3000000")
        .unwrap();
    // Rewrite "uid" to "size" in place (same length record: "NN uid=3000000\n" -> "NN size=300000\n").
    stream[pax_at + 1..pax_at + 12].copy_from_slice(b"size=300000");
    refused(&t, stream, "pax size and ustar size disagree");
    // A pax path that renames an entry to the trailer.
    let mut named = meta(
        b"rootfs/x",
        Kind::File {
            size: 2,
            sparse: None,
        },
    );
    named.path = format!("rootfs/{}", "p".repeat(120)).into_bytes();
    let mut stream = forge(&[dir(b"rootfs"), (named, b"{}".to_vec())]);
    let at = stream
        .windows(127)
        .position(|w| w == format!("path=rootfs/{}", "p".repeat(115)).as_bytes())
        .unwrap();
    let record_end = at + stream[at..].iter().position(|&b| b == b'\n').unwrap();
    let fake = b"path=trailer.json";
    let mut replacement = fake.to_vec();
    replacement.resize(record_end - at, b'/');
    stream[at..record_end].copy_from_slice(&replacement);
    refused(&t, stream, "");
    // Global pax headers and GNU long names are refused by type (see unknown_entry_types_are_refused);
    // a size that is not a number is refused.
    let mut stream = forge(&[dir(b"rootfs"), file(b"rootfs/n", b"x")]);
    patch_header(&mut stream, b"rootfs/n", |h| {
        h.as_old_mut().size = *b"0000000001x\0"
    });
    refused(&t, stream, "");
}

#[test]
fn special_files_outside_rootfs_are_refused() {
    let t = hostile_dir("special");
    let dev = |path: &[u8]| (meta(path, Kind::Char { major: 1, minor: 3 }), Vec::new());
    refused(
        &t,
        forge(&[dir(b"container"), dev(b"container/null")]),
        "device node",
    );
    refused(
        &t,
        forge(&[dir(b"images"), (meta(b"images/p", Kind::Fifo), Vec::new())]),
        "fifo",
    );
    let mut suid = meta(
        b"container/hook",
        Kind::File {
            size: 2,
            sparse: None,
        },
    );
    suid.mode = 0o4755;
    refused(
        &t,
        forge(&[dir(b"container"), (suid, b"#!".to_vec())]),
        "setuid",
    );
    let mut sgid_dir = meta(b"images", Kind::Dir);
    sgid_dir.mode = 0o2755;
    refused(&t, forge(&[(sgid_dir, Vec::new())]), "setuid/setgid");
}

#[test]
fn xattr_bomb_is_refused_with_bounded_memory() {
    let t = hostile_dir("xattr");
    let mut bomb = meta(
        b"rootfs/x",
        Kind::File {
            size: 0,
            sparse: None,
        },
    );
    bomb.xattrs = (0..40)
        .map(|i| (format!("user.k{i}").into_bytes(), vec![b'v'; 60_000]))
        .collect();
    refused(
        &t,
        forge(&[dir(b"rootfs"), (bomb, Vec::new())]),
        "pax header of",
    );
}

#[test]
fn many_tiny_entries_stream_in_bounded_memory() {
    let t = Dir::new("tiny");
    let mut entries = vec![dir(b"rootfs"), dir(b"rootfs/d")];
    for i in 0..200_000 {
        entries.push(file(format!("rootfs/d/{i}").as_bytes(), b""));
    }
    fs::write(t.join("many.ckpt"), forge(&entries)).unwrap();
    drop(entries);
    // 64 MiB of address space is far below what holding the stream's entries would take.
    let script = format!(
        "ulimit -v 65536; exec {} -q --verify -i many.ckpt",
        util::bin("ckpt-unpack").display()
    );
    t.program("sh").args(["-c", &script]).ok();
    let script = format!(
        "ulimit -v 65536; exec {} -q -C out -i many.ckpt",
        util::bin("ckpt-unpack").display()
    );
    t.program("sh").args(["-c", &script]).ok();
    assert_eq!(
        fs::read_dir(t.join("out/rootfs/d")).unwrap().count(),
        200_000
    );
}

#[test]
fn unix_socket_files_are_left_out_like_tar_does() {
    let t = Dir::new("socket");
    bundle(&t.join("b"));
    let _listener = std::os::unix::net::UnixListener::bind(t.join("b/rootfs/app.sock")).unwrap();
    fs::write(t.join("b/rootfs/kept"), "x").unwrap();
    let stream = packed(&t, &["b"]);
    let list = t
        .cmd("ckpt-unpack")
        .arg("--list")
        .stdin(stream)
        .ok()
        .stdout_str();
    assert!(
        list.contains("rootfs/kept") && !list.contains("app.sock"),
        "{list}"
    );
}

/// The digest a plain stream's entries really chain to, as its trailer would spell it.
fn chain_digest(stream: &[u8]) -> String {
    let mut reader = ckpt_stream::wire::TarReader::new(stream, b"trailer.json");
    loop {
        match reader.next_entry().unwrap() {
            ckpt_stream::wire::Next::Entry(_) | ckpt_stream::wire::Next::Interim { .. } => {}
            ckpt_stream::wire::Next::End { seal, .. } => {
                return format!("blake3:{}", seal.digest.to_hex())
            }
        }
    }
}
