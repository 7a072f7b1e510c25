//! ckpt-unpack: reads a stream and unpacks it to a new bundle dir, lists it, or only verifies it.

use std::io;
use std::path::PathBuf;

use ckpt_stream::io::open_input;
use ckpt_stream::{
    check_destination, list, note, parent_of, summary, unpack_into, verify, Key, Progress,
    StagingDir, StreamReader,
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
        Action::List => {
            let mut out = io::BufWriter::new(io::stdout().lock());
            list(&mut reader, &mut out)?
        }
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
