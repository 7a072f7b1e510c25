//! Authenticated streams: a shared secret key makes the trailer carry a keyed BLAKE3 MAC over the
//! entry chain digest (which covers the manifest and every entry), so a receiver holding the key
//! refuses any stream it did not expect, before anything is installed.

use std::path::Path;

use anyhow::Context;

use crate::error::{bad_stream, usage};

/// Environment variable that may hold the key material itself (for scripts), when no --key is given.
pub const KEY_ENV: &str = "CKPT_KEY";
/// Domain separation for deriving the MAC key from the user's key material.
const KDF_CONTEXT: &str = "ckpt 2026-11 stream authentication key v1";

/// A 32-byte MAC key derived from key material; never printed (Debug is redacted).
#[derive(Clone)]
pub struct Key([u8; 32]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

impl Key {
    /// Derives a key from material: the whole content of a key file (a trailing newline is
    /// ignored), e.g. 32 random bytes or their hex form.
    pub fn from_material(material: &[u8]) -> anyhow::Result<Key> {
        let material = material.strip_suffix(b"\n").unwrap_or(material);
        if material.len() < 16 {
            return Err(usage(
                "the key is shorter than 16 bytes: use e.g. `head -c 32 /dev/urandom > key`",
            ));
        }
        Ok(Key(blake3::derive_key(KDF_CONTEXT, material)))
    }

    /// The key from `--key FILE`, else from $CKPT_KEY, else none.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Option<Key>> {
        if let Some(path) = path {
            let material = std::fs::read(path)
                .with_context(|| format!("reading the key file {}", path.display()))?;
            return Key::from_material(&material).map(Some);
        }
        match std::env::var_os(KEY_ENV) {
            Some(value) => {
                use std::os::unix::ffi::OsStrExt;
                Key::from_material(value.as_bytes())
                    .with_context(|| format!("in ${KEY_ENV}"))
                    .map(Some)
            }
            None => Ok(None),
        }
    }

    /// The MAC a trailer carries: keyed BLAKE3 over the chain digest and the counts.
    pub fn mac(&self, digest: &str, entries: u64, bytes: u64) -> String {
        let mut h = blake3::Hasher::new_keyed(&self.0);
        h.update(b"ckpt-mac-v1\0");
        h.update(digest.as_bytes());
        h.update(&entries.to_le_bytes());
        h.update(&bytes.to_le_bytes());
        format!("blake3-keyed:{}", h.finalize().to_hex())
    }

    /// Checks a trailer's MAC in constant time.
    pub fn verify(
        &self,
        digest: &str,
        entries: u64,
        bytes: u64,
        mac: Option<&str>,
    ) -> anyhow::Result<()> {
        let Some(mac) = mac else {
            return Err(bad_stream(
                "the stream carries no MAC but a key was given: refusing an unauthenticated stream",
            ));
        };
        let expected = self.mac(digest, entries, bytes);
        let same = mac.len() == expected.len()
            && mac
                .bytes()
                .zip(expected.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if !same {
            return Err(bad_stream(
                "MAC mismatch: the stream was not made with this key, or was altered",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_depends_on_key_and_every_field() {
        let k1 = Key::from_material(&[1u8; 32]).unwrap();
        let k2 = Key::from_material(&[2u8; 32]).unwrap();
        let mac = k1.mac("blake3:00", 3, 100);
        k1.verify("blake3:00", 3, 100, Some(&mac)).unwrap();
        assert!(k2.verify("blake3:00", 3, 100, Some(&mac)).is_err());
        assert!(k1.verify("blake3:01", 3, 100, Some(&mac)).is_err());
        assert!(k1.verify("blake3:00", 4, 100, Some(&mac)).is_err());
        assert!(k1.verify("blake3:00", 3, 101, Some(&mac)).is_err());
        assert!(k1.verify("blake3:00", 3, 100, None).is_err());
        assert!(Key::from_material(b"short").is_err());
        assert_eq!(format!("{k1:?}"), "Key(<redacted>)");
    }

    #[test]
    fn hex_and_trailing_newline_forms() {
        let a = Key::from_material(b"00112233445566778899aabbccddeeff\n").unwrap();
        let b = Key::from_material(b"00112233445566778899aabbccddeeff").unwrap();
        assert_eq!(a.mac("d", 1, 1), b.mac("d", 1, 1));
    }
}
