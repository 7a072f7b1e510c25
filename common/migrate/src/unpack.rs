//! ckpt-unpack: reads a stream and unpacks it to a new bundle dir, lists it, or only verifies it.

use std::io::{self, Write};
use std::path::PathBuf;

use ckpt_stream::io::open_input;
use ckpt_stream::wire::{Entry, Kind};
use ckpt_stream::{
    check_destination, note, parent_of, summary, unpack_into, verify, Item, Key, Manifest,
    Progress, StagingDir, StreamReader, Trailer,
};

#[derive(Debug, Clone)]
pub struct UnpackConfig {
    pub input: Option<PathBuf>,
    pub action: Action,
    /// Key file: refuse any stream without a valid MAC for it (else $CKPT_KEY, else none).
    pub key: Option<PathBuf>,
    pub quiet: bool,
}

#[derive(Debug, Clone)]
pub enum Action {
    /// Unpack into this new (or empty) directory.
    Extract(PathBuf),
    /// Print the manifest summary and one line per entry on stdout.
    List,
    /// Read and check everything, write nothing.
    Verify,
}

pub fn run(cfg: &UnpackConfig) -> anyhow::Result<()> {
    if let Action::Extract(dest) = &cfg.action {
        check_destination(dest, "-C")?;
    }
    let key = Key::load(cfg.key.as_deref())?;
    let progress = Progress::new("ckpt-unpack", None, cfg.quiet);
    let input = Box::new(progress.reader(open_input(cfg.input.as_deref())?));
    let mut reader = StreamReader::open(input, key)?;
    reader.start_threads();
    let trailer = match &cfg.action {
        Action::Extract(dest) => {
            let staging = StagingDir::new_in(&parent_of(dest))?;
            let trailer = unpack_into(&mut reader, staging.path(), &mut |_| Ok(()))?;
            staging.commit(dest)?;
            trailer
        }
        Action::List => list(&mut reader)?,
        Action::Verify => verify(&mut reader)?,
    };
    progress.finish();
    note(
        cfg.quiet,
        "ckpt-unpack",
        &format!("{}, verified", summary(&reader.manifest, &trailer)),
    );
    Ok(())
}

fn list(reader: &mut StreamReader) -> anyhow::Result<Trailer> {
    reader.hash_here();
    let mut out = io::BufWriter::new(io::stdout().lock());
    write_manifest_summary(&mut out, &reader.manifest)?;
    loop {
        match reader.next_item()? {
            Item::Entry { entry, .. } => {
                io::copy(&mut reader.data(), &mut io::sink())?;
                let hash = reader
                    .finish_entry()?
                    .map(|h| h.to_hex())
                    .unwrap_or_default();
                writeln!(out, "{}", entry_line(&entry, hash.get(..16).unwrap_or("-")))?;
            }
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

fn write_manifest_summary(out: &mut dyn Write, m: &Manifest) -> io::Result<()> {
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
