//! Signature and digest recipes: pure functions over bytes, each with a test vector.
//!
//! Vendors sign what is sent: callers pass the exact body bytes that go on the wire.

use sha2::{Digest, Sha256};

/// The letter case of a hex-encoded signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum HexCase {
    #[default]
    Lower,
    Upper,
}

/// SHA-256 over the concatenation of `parts`, hex-encoded in `case`.
pub fn sha256_hex(parts: &[&[u8]], case: HexCase) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    let digest = hasher.finalize();
    match case {
        HexCase::Lower => hex::encode(digest),
        HexCase::Upper => hex::encode_upper(digest),
    }
}

/// SHA-256 of `data`, as raw bytes (for API key hashes).
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_hex_matches_the_standard_vector() {
        // SHA-256("abc") from FIPS 180-2, appendix B.1, split across parts.
        let want = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(sha256_hex(&[b"a", b"bc"], HexCase::Lower), want);
        assert_eq!(
            sha256_hex(&[b"abc"], HexCase::Upper),
            want.to_ascii_uppercase()
        );
    }

    #[test]
    fn cbss_style_signature_concatenates_body_and_secrets_without_separators() {
        let body = br#"{"ClientCode":"DEMO"}"#;
        let joined = [&body[..], b"key", b"salt"].concat();
        assert_eq!(
            sha256_hex(&[body, b"key", b"salt"], HexCase::Lower),
            sha256_hex(&[&joined], HexCase::Lower)
        );
    }
}
