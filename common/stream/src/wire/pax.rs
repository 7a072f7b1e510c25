//! pax extended-header records (`"<len> <key>=<value>\n"`), encoded and decoded as raw bytes.

use crate::error::bad_stream;

/// Appends one record; `len` counts the whole record including its own digits.
pub fn push_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// Splits pax data into (key, value) records, refusing anything malformed.
pub fn parse_records(mut data: &[u8]) -> anyhow::Result<Vec<(&[u8], &[u8])>> {
    let mut records = Vec::new();
    while !data.is_empty() {
        let space = data
            .iter()
            .position(|&b| b == b' ')
            .ok_or_else(|| bad_stream("pax record without a length"))?;
        let len: usize = std::str::from_utf8(&data[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .filter(|&len| len > space + 2 && len <= data.len())
            .ok_or_else(|| bad_stream("pax record has a bad length"))?;
        let record = &data[space + 1..len];
        let record = record
            .strip_suffix(b"\n")
            .ok_or_else(|| bad_stream("pax record does not end with a newline"))?;
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(|| bad_stream("pax record without '='"))?;
        records.push((&record[..eq], &record[eq + 1..]));
        data = &data[len..];
    }
    Ok(records)
}

/// Parses a decimal unsigned number from a pax value.
pub fn parse_u64(key: &str, value: &[u8]) -> anyhow::Result<u64> {
    std::str::from_utf8(value)
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad_stream(format!("pax {key} is not a number")))
}

/// Parses a pax time `[-]sec[.fraction]` into seconds and nanoseconds.
pub fn parse_time(value: &[u8]) -> anyhow::Result<(i64, u32)> {
    let bad = || bad_stream("pax mtime is not a valid time");
    let text = std::str::from_utf8(value).map_err(|_| bad())?;
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    let negative = int.starts_with('-');
    let digits = int.strip_prefix('-').unwrap_or(int);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let sec: i64 = digits.parse().map_err(|_| bad())?;
    let nsec: u32 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().map_err(|_| bad())?
    };
    if negative {
        // -1.25 means 1.25 s before the epoch: sec -2, nsec 0.75e9.
        Ok(if nsec == 0 {
            (-sec, 0)
        } else {
            (-sec - 1, 1_000_000_000 - nsec)
        })
    } else {
        Ok((sec, nsec))
    }
}

/// Formats seconds and nanoseconds as a pax time.
pub fn format_time(sec: i64, nsec: u32) -> String {
    if nsec == 0 {
        return sec.to_string();
    }
    if sec >= 0 {
        format!("{sec}.{nsec:09}")
    } else {
        format!("-{}.{:09}", -(sec + 1), 1_000_000_000 - nsec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_length_counts_itself() {
        let mut out = Vec::new();
        push_record(&mut out, b"path", &[b'a'; 90]);
        let records = parse_records(&out).unwrap();
        assert_eq!(records, vec![(&b"path"[..], &[b'a'; 90][..])]);
        let len: usize = std::str::from_utf8(&out[..out.iter().position(|&b| b == b' ').unwrap()])
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(len, out.len());
    }

    #[test]
    fn bad_records_refused() {
        assert!(parse_records(b"5 a=b\n").is_err());
        assert!(parse_records(b"99 a=b\n").is_err());
        assert!(parse_records(b"7 ab\nx\n").is_err());
        assert!(parse_records(b"x a=b\n").is_err());
    }

    #[test]
    fn times_round_trip() {
        for (sec, nsec) in [
            (0, 0),
            (1, 5),
            (1_700_000_000, 123_456_789),
            (-1, 250_000_000),
            (-5, 0),
        ] {
            assert_eq!(
                parse_time(format_time(sec, nsec).as_bytes()).unwrap(),
                (sec, nsec)
            );
        }
        assert!(parse_time(b"1.1234567891").is_err());
        assert!(parse_time(b"x").is_err());
    }
}
