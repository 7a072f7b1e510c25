//! The changes section of a live stream (the `rootfs/` entries after copied.json), through the
//! real ckpt-unpack: changes replace, whiteouts delete, and neither can be turned against the host.

mod util;

use std::fs;
use std::os::unix::fs::MetadataExt;

use ckpt_stream::wire::Kind;
use util::forge::{
    copied, dir, file, forge, hostile_dir, meta, refused, refused_keep_outside, symlink, whiteout,
};
use util::Dir;

#[test]
fn changes_replace_and_whiteouts_delete() {
    let t = Dir::new("live-changes");
    let mut root_again = dir(b"rootfs");
    root_again.0.mode = 0o711;
    let mut linked = meta(b"rootfs/keep2", Kind::Hardlink(b"rootfs/keep".to_vec()));
    linked.mode = 0o644;
    let stream = forge(&[
        dir(b"rootfs"),
        file(b"rootfs/a", b"old a"),
        dir(b"rootfs/d"),
        file(b"rootfs/d/x", b"in d"),
        dir(b"rootfs/d/sub"),
        symlink(b"rootfs/l", b"a"),
        file(b"rootfs/keep", b"same"),
        file(b"rootfs/t", b"file, then dir"),
        dir(b"rootfs/u"),
        file(b"rootfs/u/y", b"dir, then file"),
        copied(),
        dir(b"container"),
        whiteout(b"rootfs/d"),
        whiteout(b"rootfs/u/y"),
        root_again,
        file(b"rootfs/a", b"new a"),
        dir(b"rootfs/l"),
        file(b"rootfs/l/z", b"was a symlink"),
        file(b"rootfs/new", b"created after the copy"),
        (linked, Vec::new()),
        dir(b"rootfs/t"),
        file(b"rootfs/u", b"now a file"),
        dir(b"images"),
    ]);
    t.cmd("ckpt-unpack").args(["-C", "out"]).stdin(stream).ok();
    let r = t.join("out/rootfs");
    assert_eq!(fs::read_to_string(r.join("a")).unwrap(), "new a");
    assert!(!r.join("d").exists(), "whiteout did not delete the tree");
    assert_eq!(fs::read_to_string(r.join("l/z")).unwrap(), "was a symlink");
    assert!(fs::symlink_metadata(r.join("l")).unwrap().is_dir());
    assert_eq!(
        fs::read_to_string(r.join("new")).unwrap(),
        "created after the copy"
    );
    assert_eq!(fs::metadata(r.join("keep")).unwrap().nlink(), 2);
    assert_eq!(fs::read_to_string(r.join("keep2")).unwrap(), "same");
    assert!(fs::metadata(r.join("t")).unwrap().is_dir());
    assert_eq!(fs::read_to_string(r.join("u")).unwrap(), "now a file");
    assert_eq!(
        fs::metadata(&r).unwrap().mode() & 0o7777,
        0o711,
        "root's new metadata"
    );

    let listing = t.cmd("ckpt-unpack").arg("--list").stdin(forge(&[
        dir(b"rootfs"),
        file(b"rootfs/a", b"1"),
        copied(),
        whiteout(b"rootfs/a"),
    ]));
    let out = listing.ok().stdout_str();
    assert!(
        out.contains("# copied: 1 rootfs entries were copied live"),
        "{out}"
    );
}

#[test]
fn the_changes_section_is_checked_like_the_rest() {
    let t = hostile_dir("live-hostile");
    let base = || vec![dir(b"rootfs"), file(b"rootfs/a", b"1")];
    let with = |tail: Vec<_>| {
        let mut entries = base();
        entries.extend(tail);
        forge(&entries)
    };
    // Before copied.json a path still comes once, and only rootfs/ is ever replaced.
    refused(&t, with(vec![file(b"rootfs/a", b"2")]), "duplicate");
    refused(
        &t,
        with(vec![dir(b"images"), copied(), dir(b"images")]),
        "duplicate",
    );
    refused(
        &t,
        with(vec![copied(), copied()]),
        "copied.json appears twice",
    );
    refused(
        &t,
        with(vec![copied(), whiteout(b"rootfs/nothing")]),
        "whiteout for a path that is not in the stream",
    );
    refused(
        &t,
        with(vec![copied(), whiteout(b"rootfs")]),
        "cannot be replaced",
    );
    refused(
        &t,
        with(vec![dir(b"images"), copied(), whiteout(b"images/x")]),
        "device node",
    );
    refused(
        &t,
        with(vec![(meta(b"copied.json", Kind::Dir), Vec::new())]),
        "copied.json entry is malformed",
    );
    refused(
        &t,
        with(vec![file(b"copied.json", b"[not json")]),
        "copied.json is not valid",
    );
}

#[test]
fn changes_never_reach_through_symlinks() {
    let t = hostile_dir("live-links");
    fs::write(t.join("outside/x"), "victim").unwrap();
    let outside = t.join("outside");
    let target = outside.as_os_str().as_encoded_bytes();
    // A symlink copied before the freeze cannot be written through, nor its target deleted.
    let via_link = forge(&[
        dir(b"rootfs"),
        symlink(b"rootfs/s", target),
        copied(),
        file(b"rootfs/s/x", b"evil"),
    ]);
    refused_keep_outside(&t, via_link, "symlink");
    let wipe_link = forge(&[
        dir(b"rootfs"),
        symlink(b"rootfs/s", target),
        copied(),
        whiteout(b"rootfs/s"),
        dir(b"images"),
    ]);
    t.cmd("ckpt-unpack")
        .args(["-C", "out"])
        .stdin(wipe_link)
        .ok();
    assert!(!t.join("out/rootfs/s").exists());
    // Replacing a directory that holds a symlink to outside removes the link, not what it names.
    fs::remove_dir_all(t.join("out")).unwrap();
    let wipe_dir = forge(&[
        dir(b"rootfs"),
        dir(b"rootfs/d"),
        symlink(b"rootfs/d/s", target),
        copied(),
        file(b"rootfs/d", b"a file now"),
    ]);
    t.cmd("ckpt-unpack")
        .args(["-C", "out"])
        .stdin(wipe_dir)
        .ok();
    assert_eq!(
        fs::read_to_string(t.join("out/rootfs/d")).unwrap(),
        "a file now"
    );
    assert_eq!(fs::read_to_string(t.join("outside/x")).unwrap(), "victim");
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 1);
}

/// ckpt-unpack keeps the previous entry's parent directory open for the next entry: a directory
/// deleted or replaced after the freeze must never be written through a stale descriptor.
#[test]
fn entries_after_their_directory_was_replaced_land_in_the_new_one() {
    let t = hostile_dir("live-parent");
    let stream = forge(&[
        dir(b"rootfs"),
        dir(b"rootfs/d"),
        file(b"rootfs/d/x", b"before the freeze"),
        copied(),
        file(b"rootfs/d/y", b"changed"),
        whiteout(b"rootfs/d"),
        dir(b"rootfs/d"),
        file(b"rootfs/d/z", b"in the new d"),
        dir(b"images"),
    ]);
    t.cmd("ckpt-unpack").args(["-C", "out"]).stdin(stream).ok();
    let d = t.join("out/rootfs/d");
    let mut names: Vec<_> = fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["z"], "the old d's files survived or z went astray");
    assert_eq!(fs::read_to_string(d.join("z")).unwrap(), "in the new d");
    // A directory replaced by a file is no parent any more, however recently it was one.
    fs::remove_dir_all(t.join("out")).unwrap();
    let replaced = forge(&[
        dir(b"rootfs"),
        dir(b"rootfs/d"),
        copied(),
        file(b"rootfs/d/y", b"changed"),
        file(b"rootfs/d", b"a file now"),
        file(b"rootfs/d/q", b"into what?"),
    ]);
    refused(&t, replaced, "parent directory");
}
