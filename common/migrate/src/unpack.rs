//! ckpt-unpack: reads a stream and unpacks it to a new bundle dir, lists it, or only verifies it.

use std::io::{self, Write};
use std::path::PathBuf;

use ckpt_stream::io::open_input;
use ckpt_stream::{
    check_destination, entry_line, note, parent_of, summary, unpack_into, verify, Item, Key,
    Manifest, Progress, StagingDir, StreamReader, Trailer,
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
    let mut reader = StreamReader::open_from(input, cfg.input.as_deref(), key)?;
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
