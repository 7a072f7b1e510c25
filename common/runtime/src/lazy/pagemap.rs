//! Which memory a lazy dump left out of its images: the `PE_LAZY` entries of each process's
//! `pagemap-<pid>.img` (pids as the container sees them).

use std::path::Path;

use anyhow::Context;
use prost::Message;

/// `pagemap_entry.flags`: the pages can be restored lazily (CRIU's `PE_LAZY`).
const PE_LAZY: u32 = 1 << 1;

/// A run of lazy pages of one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LazyRange {
    pub pid: u32,
    pub vaddr: u64,
    pub pages: u64,
}

/// CRIU's pagemap.proto, with prost's derive.
#[derive(Clone, PartialEq, Message)]
struct PagemapEntry {
    #[prost(uint64, required, tag = "1")]
    vaddr: u64,
    #[prost(uint32, required, tag = "2")]
    compat_nr_pages: u32,
    #[prost(bool, optional, tag = "3")]
    in_parent: Option<bool>,
    #[prost(uint32, optional, tag = "4")]
    flags: Option<u32>,
    #[prost(uint64, optional, tag = "5")]
    nr_pages: Option<u64>,
}

/// Every lazy range of every process dumped into `images`, by pid then address.
pub fn lazy_ranges(images: &Path) -> anyhow::Result<Vec<LazyRange>> {
    let mut ranges = Vec::new();
    for entry in
        std::fs::read_dir(images).with_context(|| format!("reading {}", images.display()))?
    {
        let name = entry?.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("pagemap-")?.strip_suffix(".img"))
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let path = images.join(&name);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let entries =
            parse(&bytes).with_context(|| format!("{} is not a CRIU pagemap", path.display()))?;
        ranges.extend(
            entries
                .into_iter()
                .filter(|e| e.flags.unwrap_or(0) & PE_LAZY != 0)
                .map(|e| LazyRange {
                    pid,
                    vaddr: e.vaddr,
                    pages: e.nr_pages.unwrap_or(u64::from(e.compat_nr_pages)),
                }),
        );
    }
    ranges.sort_by_key(|r| (r.pid, r.vaddr));
    Ok(ranges)
}

/// A pagemap image: two magics, the head (its pages image id), then the entries, each a 32-bit
/// length and a protobuf message.
fn parse(bytes: &[u8]) -> anyhow::Result<Vec<PagemapEntry>> {
    let mut at = 8;
    let mut entries = Vec::new();
    let mut head = true;
    while at < bytes.len() {
        let len = bytes
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .context("truncated entry length")?;
        let body = bytes.get(at + 4..at + 4 + len).context("truncated entry")?;
        at += 4 + len;
        if std::mem::take(&mut head) {
            continue;
        }
        entries.push(PagemapEntry::decode(body)?);
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(entries: &[PagemapEntry]) -> Vec<u8> {
        let mut bytes = vec![0u8; 8];
        let head = [0x08u8, 0x07]; // pagemap_head { pages_id: 7 }
        bytes.extend_from_slice(&(head.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&head);
        for entry in entries {
            let body = entry.encode_to_vec();
            bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&body);
        }
        bytes
    }

    fn entry(vaddr: u64, pages: u64, flags: u32) -> PagemapEntry {
        PagemapEntry {
            vaddr,
            compat_nr_pages: pages as u32,
            in_parent: None,
            flags: Some(flags),
            nr_pages: Some(pages),
        }
    }

    #[test]
    fn only_lazy_entries_are_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let present = 1 << 2;
        std::fs::write(
            dir.path().join("pagemap-7.img"),
            image(&[
                entry(0x1000, 2, present),
                entry(0x7f00_0000, 300, PE_LAZY),
                entry(0x9000, 1, PE_LAZY),
            ]),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("pagemap-1.img"),
            image(&[entry(0x4000, 1, PE_LAZY)]),
        )
        .unwrap();
        std::fs::write(dir.path().join("pages-1.img"), b"not a pagemap").unwrap();
        let ranges = lazy_ranges(dir.path()).unwrap();
        let r = |pid, vaddr, pages| LazyRange { pid, vaddr, pages };
        assert_eq!(
            ranges,
            vec![r(1, 0x4000, 1), r(7, 0x9000, 1), r(7, 0x7f00_0000, 300)]
        );
        std::fs::write(
            dir.path().join("pagemap-2.img"),
            &image(&[entry(0, 1, PE_LAZY)])[..20],
        )
        .unwrap();
        assert!(lazy_ranges(dir.path()).is_err());
    }
}
