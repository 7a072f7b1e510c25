//! How a listing (`ckpt-unpack --list`) shows one entry: a line like `ls -l`'s.

use crate::wire::{Entry, Kind};

/// `ls -l`-like line: type+mode, uid/gid, size, data hash prefix, path (and link target).
pub fn entry_line(entry: &Entry, hash: &str) -> String {
    let path = String::from_utf8_lossy(&entry.path);
    let (size, tail) = match &entry.kind {
        Kind::File {
            sparse: Some(s), ..
        } => (s.real_size.to_string(), " (sparse)".to_string()),
        Kind::File { size, .. } => (size.to_string(), String::new()),
        Kind::Symlink(t) => ("0".into(), format!(" -> {}", String::from_utf8_lossy(t))),
        Kind::Hardlink(t) => (
            "0".into(),
            format!(" link to {}", String::from_utf8_lossy(t)),
        ),
        Kind::Char { major, minor } | Kind::Block { major, minor } => {
            (format!("{major},{minor}"), String::new())
        }
        Kind::Dir | Kind::Fifo => ("0".into(), String::new()),
    };
    format!(
        "{}{} {}/{} {:>12} {:16} {path}{tail}",
        entry.type_char(),
        mode_string(entry.mode),
        entry.uid,
        entry.gid,
        size,
        hash
    )
}

/// `rwsr-xr-t`-style permission string.
fn mode_string(mode: u32) -> String {
    let mut s = String::with_capacity(9);
    for (shift, special, set_char) in [(6, 0o4000, 's'), (3, 0o2000, 's'), (0, 0o1000, 't')] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        let exec = bits & 1 != 0;
        s.push(match (mode & special != 0, exec) {
            (true, true) => set_char,
            (true, false) => set_char.to_ascii_uppercase(),
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    s
}
