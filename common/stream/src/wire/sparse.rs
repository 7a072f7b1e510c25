//! GNU sparse format 1.0 maps: the decimal segment list that starts the data area of a sparse file,
//! so GNU tar can also extract our sparse files.

use super::{padded, Sparse};
use crate::error::bad_stream;

/// Most segments a sparse file may have in a stream; a writer stores a file with more densely.
pub const MAX_SEGMENTS: usize = 1 << 16;

/// Longest map text accepted (65536 segments of two 20-digit numbers, with slack).
pub const MAX_MAP_BYTES: usize = MAX_SEGMENTS * 48;

/// Number of lines a whole map has, from its first line (the segment count), if that parses.
pub fn needed_lines(map: &[u8]) -> Option<usize> {
    let first = map.split(|&b| b == b'\n').next()?;
    let count: usize = std::str::from_utf8(first).ok()?.parse().ok()?;
    // Past the limit: let decode_map refuse it now rather than read on.
    (count <= MAX_SEGMENTS).then_some(2 * count + 1)
}

/// The map as written at the start of the data area, padded to a block.
pub fn encode_map(sparse: &Sparse) -> Vec<u8> {
    let mut text = format!("{}\n", sparse.segments.len());
    for (offset, len) in &sparse.segments {
        text.push_str(&format!("{offset}\n{len}\n"));
    }
    let mut bytes = text.into_bytes();
    bytes.resize(padded(bytes.len() as u64) as usize, 0);
    bytes
}

/// Parses a map from the start of `buf` (whole blocks). Returns `None` while more blocks are needed,
/// or the map and the number of bytes it took.
pub fn decode_map(buf: &[u8], real_size: u64) -> anyhow::Result<Option<(Sparse, usize)>> {
    let mut numbers = Vec::new();
    let mut start = 0;
    for (i, &b) in buf.iter().enumerate() {
        if b != b'\n' {
            continue;
        }
        let text = std::str::from_utf8(&buf[start..i]).ok();
        let n: u64 = text
            .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| bad_stream("sparse map holds a non-number"))?;
        numbers.push(n);
        start = i + 1;
        let count = numbers[0];
        if count > MAX_SEGMENTS as u64 {
            return Err(bad_stream(format!(
                "sparse map has {count} segments (limit {MAX_SEGMENTS})"
            )));
        }
        if numbers.len() as u64 == 1 + 2 * count {
            let used = padded(start as u64) as usize;
            if used > buf.len() {
                return Ok(None);
            }
            if buf[start..used].iter().any(|&b| b != 0) {
                return Err(bad_stream("sparse map padding is not zero"));
            }
            let segments: Vec<(u64, u64)> = numbers[1..].chunks(2).map(|c| (c[0], c[1])).collect();
            let sparse = Sparse {
                real_size,
                segments,
            };
            check(&sparse)?;
            return Ok(Some((sparse, used)));
        }
    }
    if buf.len() > MAX_MAP_BYTES {
        return Err(bad_stream("sparse map is too long"));
    }
    Ok(None)
}

/// Segments must be sorted, disjoint and inside the file.
pub fn check(sparse: &Sparse) -> anyhow::Result<()> {
    let mut end = 0u64;
    for &(offset, len) in &sparse.segments {
        let seg_end = offset
            .checked_add(len)
            .filter(|&e| offset >= end && e <= sparse.real_size);
        end = seg_end
            .ok_or_else(|| bad_stream("sparse map segments overlap or exceed the file size"))?;
    }
    Ok(())
}

/// Number of data bytes the segments hold.
pub fn data_len(sparse: &Sparse) -> u64 {
    sparse.segments.iter().map(|(_, len)| len).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_round_trips() {
        let sparse = Sparse {
            real_size: 1 << 30,
            segments: vec![(0, 10), (4096, 512), ((1 << 30) - 1, 1)],
        };
        let bytes = encode_map(&sparse);
        assert_eq!(bytes.len() % 512, 0);
        let (back, used) = decode_map(&bytes, 1 << 30).unwrap().unwrap();
        assert_eq!(back, sparse);
        assert_eq!(used, bytes.len());
        assert!(decode_map(&bytes[..0], 1 << 30).unwrap().is_none());
    }

    #[test]
    fn bad_maps_refused() {
        let overlap = Sparse {
            real_size: 100,
            segments: vec![(0, 10), (5, 10)],
        };
        assert!(decode_map(&encode_map(&overlap), 100).is_err());
        let outside = Sparse {
            real_size: 100,
            segments: vec![(95, 10)],
        };
        assert!(decode_map(&encode_map(&outside), 100).is_err());
        let mut huge = b"99999999\n".to_vec();
        huge.resize(512, 0);
        assert!(decode_map(&huge, 100).is_err());
    }
}
