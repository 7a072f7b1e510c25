//! A listing of a stream (`ckpt-unpack --list`): the manifest summary, a line like `ls -l`'s per
//! entry, the trailer.

use std::io::Write;

use crate::format::{Manifest, Trailer};
use crate::reader::{Item, StreamReader};
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

/// Lists the rest of the stream on `out`, as `ckpt-unpack --list` does: the manifest summary,
/// one line per entry with the first 16 hex digits of its data hash, the trailer; checking
/// everything, writing no file.
pub fn list(reader: &mut StreamReader, out: &mut dyn Write) -> anyhow::Result<Trailer> {
    reader.hash_here();
    write_manifest_summary(out, &reader.manifest)?;
    loop {
        match reader.next_item()? {
            Item::Entry { entry, .. } => {
                std::io::copy(&mut reader.data(), &mut std::io::sink())?;
                let hash = reader
                    .finish_entry()?
                    .map(|h| h.to_hex())
                    .unwrap_or_default();
                writeln!(out, "{}", entry_line(&entry, hash.get(..16).unwrap_or("-")))?;
            }
            Item::Memory { range, size } => {
                std::io::copy(&mut reader.data(), &mut std::io::sink())?;
                let hash = reader
                    .finish_entry()?
                    .map(|h| h.to_hex())
                    .unwrap_or_default();
                let pages = size / crate::format::PAGE_SIZE;
                let hash = hash.get(..16).unwrap_or("-");
                writeln!(out, "m{pages:>21} pages {hash:16} {}", range.path())?;
            }
            Item::Seal(seal) => writeln!(
                out,
                "# seal: the {} entries ({} bytes) so far verified",
                seal.entries, seal.bytes
            )?,
            Item::Copied(copied) => writeln!(
                out,
                "# copied: {} rootfs entries were copied live; its changes since follow",
                copied.entries
            )?,
            Item::End(trailer) => {
                writeln!(
                    out,
                    "# trailer: {} entries, {} bytes, {}",
                    trailer.entries, trailer.bytes, trailer.digest
                )?;
                out.flush()?;
                return Ok(trailer);
            }
        }
    }
}

fn write_manifest_summary(out: &mut dyn Write, m: &Manifest) -> std::io::Result<()> {
    writeln!(
        out,
        "# ckpt stream v{}: container {} from {}:{}",
        m.version, m.name, m.host, m.lxcpath
    )?;
    writeln!(
        out,
        "# created {} on {} {}, criu {}, lxc {}, ckpt {}",
        m.created,
        m.kernel,
        m.arch,
        m.criu.as_deref().unwrap_or("-"),
        m.lxc.as_deref().unwrap_or("-"),
        m.ckpt
    )?;
    let rootfs = serde_json::to_value(m.include.rootfs)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string));
    writeln!(
        out,
        "# includes: rootfs {}, images {}",
        rootfs.unwrap_or_default(),
        if m.include.images { "yes" } else { "no" }
    )
}
