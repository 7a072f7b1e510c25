//! Tells what an input is from its first block, so that whatever is not a ckpt stream (nothing at
//! all, a plain tar, gzip, text) is refused for what it is instead of as a truncated stream.

use std::path::Path;

use tar::{EntryType, Header};

use crate::format::MANIFEST_PATH;
use crate::wire::BLOCK;

/// The zstd frame magic, little-endian 0xFD2FB528.
pub const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// How much of an input [`Start::of`] looks at: one tar header block.
pub const HEAD: usize = BLOCK as usize;

/// Other compressors, by magic: their name and the command that decompresses to stdout.
const COMPRESSORS: [(&[u8], &str, &str); 4] = [
    (&[0x1f, 0x8b], "gzip", "gzip -dc"),
    (&[0xfd, b'7', b'z', b'X', b'Z', 0], "xz", "xz -dc"),
    (b"BZh", "bzip2", "bzip2 -dc"),
    (&[0x04, 0x22, 0x4d, 0x18], "lz4", "lz4 -dc"),
];

/// What the first block of an input (or of its decompressed data) is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Not a byte.
    Empty,
    /// The zstd magic: what the data holds is judged once it is decompressed.
    Zstd,
    /// A tar header that may start a ckpt stream, or a ckpt stream's first header cut short or
    /// damaged: the tar reader judges it (and says "truncated" or "corrupted").
    Tar,
    /// A whole, valid tar header whose entry is not `manifest.json`: its path.
    OtherTar(String),
    /// Data compressed with something other than zstd: its name and how to decompress it.
    Compressed {
        name: &'static str,
        command: &'static str,
    },
    /// Zero bytes, as an empty tar archive holds.
    Zeros,
    /// Text: its start, quoted.
    Text(String),
    /// Anything else: its first bytes, in hex.
    Bytes(String),
}

impl Start {
    /// Classifies `head`, the first [`HEAD`] bytes of an input (fewer when the input is shorter).
    pub fn of(head: &[u8]) -> Start {
        if head.is_empty() {
            return Start::Empty;
        }
        if head.starts_with(&ZSTD_MAGIC) {
            return Start::Zstd;
        }
        if let Some(&(_, name, command)) = COMPRESSORS.iter().find(|(m, ..)| head.starts_with(m)) {
            return Start::Compressed { name, command };
        }
        if head.iter().all(|&b| b == 0) {
            return Start::Zeros;
        }
        let Ok(block) = <&[u8; HEAD]>::try_from(head) else {
            return match cut_header(head) {
                true => Start::Tar,
                false => describe(head),
            };
        };
        let header = Header::from_byte_slice(block);
        let named_manifest = header.as_old().name.starts_with(b"manifest.json\0");
        let magic = header.as_ustar().is_some() || header.as_gnu().is_some();
        let summed = checksum_ok(block);
        if !(magic || summed || named_manifest) {
            return describe(head);
        }
        if !summed || named_manifest {
            return Start::Tar;
        }
        let path = header.path_bytes();
        match header.entry_type() {
            // The pax header ckpt writes: the tar reader reads the entry it is for (and
            // StreamReader names that entry if it is not the manifest).
            EntryType::XHeader if *path == *b"././@PaxHeader" => Start::Tar,
            // Other writers name a pax header after its entry: DIR/PaxHeaders[.PID]/NAME.
            EntryType::XHeader => {
                let entry: Vec<&[u8]> = path
                    .split(|&b| b == b'/')
                    .filter(|part| !part.starts_with(b"PaxHeader"))
                    .collect();
                match entry.join(&b'/') {
                    entry if entry == MANIFEST_PATH.as_bytes() => Start::Tar,
                    entry => Start::OtherTar(shown(&entry)),
                }
            }
            _ => Start::OtherTar(shown(&path)),
        }
    }

    /// Why an input that starts this way is refused, when it is: `path` is where it came from
    /// (None: standard input), `zstd` whether this is what its zstd frames hold.
    pub fn problem(&self, path: Option<&Path>, zstd: bool) -> Option<String> {
        let input = match zstd {
            true => "the zstd-decompressed input",
            false => "the input",
        };
        let zstd_ = if zstd { "zstd-compressed " } else { "" };
        const MADE_BY: &str = "ckpt streams are made by ckpt-dump or ckpt-pack";
        Some(match self {
            Start::Zstd | Start::Tar => return None,
            Start::Empty if zstd => {
                "not a ckpt stream: the input is zstd-compressed but decompresses to nothing".into()
            }
            Start::Empty => match path {
                None => {
                    "no stream on standard input: it is empty (did the command writing it fail?)"
                        .into()
                }
                Some(path) => format!(
                    "{} is empty: no stream in it (did the command writing it fail?)",
                    path.display()
                ),
            },
            Start::OtherTar(entry) => format!(
                "a {zstd_}tar archive, but not a ckpt stream: its first entry is {entry}; \
                 ckpt streams start with {MANIFEST_PATH} and are made by ckpt-dump or ckpt-pack"
            ),
            Start::Compressed { name, command } => format!(
                "{zstd_}{name}-compressed data, not a ckpt stream: ckpt reads plain or \
                 zstd-compressed streams (if it holds one, decompress it first: {command})"
            ),
            Start::Zeros => format!(
                "not a ckpt stream: {input} starts with zero bytes, not a tar header \
                 (an empty tar archive?); {MADE_BY}"
            ),
            Start::Text(text) => format!(
                "not a ckpt stream: {input} does not start with a tar header \
                 (it starts with text {text}); {MADE_BY}"
            ),
            Start::Bytes(hex) => format!(
                "not a ckpt stream: {input} does not start with a tar header \
                 (it starts with bytes {hex}); {MADE_BY}"
            ),
        })
    }
}

/// Whether an input shorter than a block is a tar header cut short: the ustar magic where the cut
/// left it, or the name of a ckpt stream's first entry.
fn cut_header(head: &[u8]) -> bool {
    const MAGIC_AT: usize = 257;
    let name = b"manifest.json\0";
    if head.starts_with(name) || name.starts_with(head) {
        return true;
    }
    head.len() > MAGIC_AT && {
        let tail = &head[MAGIC_AT..head.len().min(MAGIC_AT + 6)];
        b"ustar\0".starts_with(tail) || b"ustar ".starts_with(tail)
    }
}

/// Whether a header's checksum field (octal, however padded) is the sum of its bytes, the field
/// itself counted as spaces.
fn checksum_ok(block: &[u8; HEAD]) -> bool {
    const FIELD: std::ops::Range<usize> = 148..156;
    let digits: Vec<u8> = block[FIELD]
        .iter()
        .copied()
        .skip_while(|&b| b == b' ')
        .take_while(|b| (b'0'..=b'7').contains(b))
        .collect();
    let Ok(stored) = u32::from_str_radix(std::str::from_utf8(&digits).unwrap_or(""), 8) else {
        return false;
    };
    let sum: u32 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| u32::from(if FIELD.contains(&i) { b' ' } else { b }))
        .sum();
    stored == sum
}

/// Text (printable, or whitespace; up to a NUL, as in "SQLite format 3\0") as its first line,
/// quoted; anything else as hex.
fn describe(head: &[u8]) -> Start {
    let until_nul = &head[..head.iter().position(|&b| b == 0).unwrap_or(head.len())];
    let text = match std::str::from_utf8(until_nul) {
        Ok(text) => Some(text),
        // A character cut by the end of the block is still text.
        Err(e) if e.error_len().is_none() => {
            std::str::from_utf8(&until_nul[..e.valid_up_to()]).ok()
        }
        Err(_) => None,
    };
    match text {
        Some(text)
            if !text.is_empty()
                && text
                    .chars()
                    .all(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t')) =>
        {
            let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or(text);
            Start::Text(shown(line.trim_end().as_bytes()))
        }
        _ => {
            let hex: Vec<String> = head.iter().take(8).map(|b| format!("{b:02x}")).collect();
            Start::Bytes(hex.join(" "))
        }
    }
}

/// At most 40 characters of `bytes`, quoted and escaped, so that no input can garble the line.
pub fn shown(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut cut: String = text.chars().take(40).collect();
    if cut.len() < text.len() {
        cut.push('…');
    }
    format!("{cut:?}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Entry, Kind, Mtime, TarWriter};

    fn tar_of(path: &[u8], data: &[u8]) -> Vec<u8> {
        let entry = Entry {
            path: path.to_vec(),
            kind: Kind::File {
                size: data.len() as u64,
                sparse: None,
            },
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: Mtime::default(),
            xattrs: Vec::new(),
        };
        let mut w = TarWriter::new(Vec::new());
        w.append(&entry, &mut &data[..]).unwrap();
        crate::seal(w, None).unwrap().0
    }

    /// A header as GNU tar writes it: GNU magic, and the checksum as 6 digits, NUL, space.
    fn gnu_tar_of(path: &str, kind: EntryType) -> Vec<u8> {
        let mut header = Header::new_gnu();
        header.set_path(path).unwrap();
        header.set_size(0);
        header.set_entry_type(kind);
        header.set_cksum();
        let mut block = header.as_bytes().to_vec();
        let sum = u32::from_str_radix(
            std::str::from_utf8(&block[148..155])
                .unwrap()
                .trim_end_matches('\0'),
            8,
        )
        .unwrap();
        block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        block
    }

    #[test]
    fn ckpt_streams_and_their_damaged_starts_go_to_the_tar_reader() {
        let stream = tar_of(b"manifest.json", b"{}");
        assert_eq!(Start::of(&stream[..HEAD]), Start::Tar);
        // Cut short, anywhere in the first header.
        for cut in [1, 5, 14, 100, 257, 260, 300, 511] {
            assert_eq!(Start::of(&stream[..cut]), Start::Tar, "cut at {cut}");
        }
        // A flipped bit: the tar reader reports the checksum mismatch.
        let mut flipped = stream[..HEAD].to_vec();
        flipped[120] ^= 4;
        assert_eq!(Start::of(&flipped), Start::Tar);
        assert_eq!(Start::Tar.problem(None, false), None);
        let zst = zstd::encode_all(&stream[..], 1).unwrap();
        assert_eq!(Start::of(&zst[..2]), describe(&zst[..2]));
        assert_eq!(Start::of(&zst[..4]), Start::Zstd);
        assert_eq!(Start::Zstd.problem(None, false), None);
    }

    #[test]
    fn empty_input_names_where_it_came_from() {
        assert_eq!(Start::of(b""), Start::Empty);
        assert_eq!(
            Start::Empty.problem(None, false).unwrap(),
            "no stream on standard input: it is empty (did the command writing it fail?)"
        );
        assert_eq!(
            Start::Empty
                .problem(Some(Path::new("u1.ckpt")), false)
                .unwrap(),
            "u1.ckpt is empty: no stream in it (did the command writing it fail?)"
        );
        assert!(Start::Empty
            .problem(None, true)
            .unwrap()
            .contains("zstd-compressed but decompresses to nothing"));
    }

    #[test]
    fn plain_tar_archives_name_their_first_entry() {
        let start = Start::of(&tar_of(b"etc/passwd", b"root")[..HEAD]);
        assert_eq!(start, Start::OtherTar("\"etc/passwd\"".into()));
        assert_eq!(
            start.problem(None, false).unwrap(),
            "a tar archive, but not a ckpt stream: its first entry is \"etc/passwd\"; ckpt \
             streams start with manifest.json and are made by ckpt-dump or ckpt-pack"
        );
        assert!(start
            .problem(None, true)
            .unwrap()
            .starts_with("a zstd-compressed tar archive, but"));
        // GNU tar's own format, as `tar cf` writes by default.
        assert_eq!(
            Start::of(&gnu_tar_of("./", EntryType::Directory)),
            Start::OtherTar("\"./\"".into())
        );
        // A pax archive (GNU tar --format=pax) names the entry its first header is for.
        assert_eq!(
            Start::of(&gnu_tar_of("etc/PaxHeaders/hostname", EntryType::XHeader)),
            Start::OtherTar("\"etc/hostname\"".into())
        );
        assert_eq!(
            Start::of(&gnu_tar_of(
                "PaxHeaders.12/manifest.json",
                EntryType::XHeader
            )),
            Start::Tar
        );
        // Long names are cut, and escaped.
        let long = format!("{}\n/x", "d".repeat(60));
        let Start::OtherTar(shown) = Start::of(&gnu_tar_of(&long, EntryType::Regular)) else {
            panic!("not a tar");
        };
        assert_eq!(shown, format!("\"{}…\"", "d".repeat(40)));
    }

    #[test]
    fn other_compressors_are_named_with_their_command() {
        for (head, name) in [
            (&[0x1f, 0x8b, 8, 0][..], "gzip"),
            (b"\xfd7zXZ\0\0", "xz"),
            (b"BZh91AY&SY", "bzip2"),
        ] {
            let start = Start::of(head);
            let problem = start.problem(None, false).unwrap();
            assert!(
                problem.starts_with(&format!("{name}-compressed data, not a ckpt stream")),
                "{problem}"
            );
            assert!(problem.contains(&format!("{name} -dc")), "{problem}");
        }
    }

    #[test]
    fn text_is_quoted_and_binary_shown_in_hex() {
        assert_eq!(
            Start::of(b"\n  hello world\nsecond line\n"),
            Start::Text("\"  hello world\"".into())
        );
        let problem = Start::of(b"{\"format\":\"ckpt\"}")
            .problem(None, false)
            .unwrap();
        assert_eq!(
            problem,
            "not a ckpt stream: the input does not start with a tar header (it starts with text \
             \"{\\\"format\\\":\\\"ckpt\\\"}\"); ckpt streams are made by ckpt-dump or ckpt-pack"
        );
        // UTF-8 cut in the middle of a character at the end of the block is still text.
        let mut block = "é".repeat(255).into_bytes();
        block.extend_from_slice(&"é".as_bytes()[..1]);
        assert!(matches!(Start::of(&block), Start::Text(_)));
        // Text up to a NUL, as binary formats and tar headers have it.
        assert_eq!(
            Start::of(b"SQLite format 3\0\x10\0"),
            Start::Text("\"SQLite format 3\"".into())
        );
        assert_eq!(Start::of(b"\0\x01"), Start::Bytes("00 01".into()));
        // Control characters (an escape sequence) make it binary.
        assert_eq!(
            Start::of(b"\x1b[31mred"),
            Start::Bytes("1b 5b 33 31 6d 72 65 64".into())
        );
        let elf = [&b"\x7fELF\x02\x01\x01\0"[..], &[0u8; 600]].concat();
        let start = Start::of(&elf[..HEAD]);
        assert_eq!(start, Start::Bytes("7f 45 4c 46 02 01 01 00".into()));
        assert!(start
            .problem(None, true)
            .unwrap()
            .contains("the zstd-decompressed input does not start with a tar header"));
    }

    #[test]
    fn zeros_are_an_empty_archive() {
        assert_eq!(Start::of(&[0; HEAD]), Start::Zeros);
        assert_eq!(Start::of(&[0; 3]), Start::Zeros);
        assert!(Start::Zeros
            .problem(None, false)
            .unwrap()
            .contains("starts with zero bytes"));
    }
}
