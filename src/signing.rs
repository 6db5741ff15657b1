//! Signature and digest recipes: pure functions over bytes, each with a test vector.
//!
//! Vendors sign what is sent: callers pass the exact body bytes that go on the wire.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};

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
    let mut out = String::with_capacity(64);
    push_sha256_hex(&mut out, parts, case);
    out
}

/// `sha256_hex`, appended to `out`: a signature that goes into a longer string (a query) is
/// written there directly rather than made and copied.
pub fn push_sha256_hex(out: &mut String, parts: &[&[u8]], case: HexCase) {
    let digits = match case {
        HexCase::Lower => LOWER_DIGITS,
        HexCase::Upper => UPPER_DIGITS,
    };
    with_hex(&sha256_parts(parts), digits, |hex| out.push_str(hex));
}

const LOWER_DIGITS: &[u8; 16] = b"0123456789abcdef";
const UPPER_DIGITS: &[u8; 16] = b"0123456789ABCDEF";

/// Writes `bytes` as hex into `out` (twice their length), with `digits`. Filled in place:
/// pushing byte by byte checks the capacity twice per input byte. Eight bytes at a time take a
/// few word operations (`hex_of_eight`) instead of sixteen table lookups and stores; a shorter
/// tail goes through the table.
fn fill_hex(out: &mut [u8], bytes: &[u8], digits: &[u8; 16]) {
    // What a digit above 9 adds past `'0' + value`: 39 for lower case, 7 for upper.
    let letter_gap = digits[10] - b'0' - 10;
    let mut out_chunks = out.chunks_exact_mut(16);
    let mut byte_chunks = bytes.chunks_exact(8);
    for (text, chunk) in (&mut out_chunks).zip(&mut byte_chunks) {
        let eight: [u8; 8] = chunk.try_into().expect("chunks of eight");
        text.copy_from_slice(&hex_of_eight(eight, letter_gap));
    }
    let rest = out_chunks.into_remainder();
    for (pair, &b) in rest.chunks_exact_mut(2).zip(byte_chunks.remainder()) {
        pair[0] = digits[usize::from(b >> 4)];
        pair[1] = digits[usize::from(b & 0x0f)];
    }
}

/// The sixteen hex digits of eight bytes, computed in two 64-bit words (SWAR): each byte's two
/// nibbles are spread to bytes of their own, then every nibble value `v` becomes
/// `'0' + v`, plus `letter_gap` where `v > 9` (which `v + 6` carrying into bit 4 tells).
fn hex_of_eight(eight: [u8; 8], letter_gap: u8) -> [u8; 16] {
    const NIBBLES: u64 = 0x000f_000f_000f_000f;
    const ONES: u64 = 0x0101_0101_0101_0101;
    let digits_of = |four: u32| -> [u8; 8] {
        // b0 b1 b2 b3 -> each byte alone in a 16-bit lane, in the same order.
        let x = u64::from(four);
        let x = (x | (x << 16)) & 0x0000_ffff_0000_ffff;
        let x = (x | (x << 8)) & 0x00ff_00ff_00ff_00ff;
        // Each lane's high byte the high nibble, its low byte the low nibble.
        let values = (((x >> 4) & NIBBLES) << 8) | (x & NIBBLES);
        let letters = ((values + 6 * ONES) >> 4) & ONES;
        (values + u64::from(b'0') * ONES + letters * u64::from(letter_gap)).to_be_bytes()
    };
    let word = u64::from_be_bytes(eight);
    let mut text = [0u8; 16];
    text[..8].copy_from_slice(&digits_of((word >> 32) as u32));
    text[8..].copy_from_slice(&digits_of(word as u32));
    text
}

/// Lower-case hex of `bytes`. `hex::encode` goes through a `char` iterator, which costs ten
/// times as much; this runs several times per request (request ids, digests).
pub fn hex_lower(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len() * 2];
    fill_hex(&mut out, bytes, LOWER_DIGITS);
    String::from_utf8(out).unwrap_or_default()
}

/// `f` given the lower-case hex of up to 32 bytes (a digest, an id), written on the stack: for
/// hex that goes into a longer string, or an inline one, without a `String` of its own.
pub fn with_hex_lower<R>(bytes: &[u8], f: impl FnOnce(&str) -> R) -> R {
    with_hex(bytes, LOWER_DIGITS, f)
}

fn with_hex<R>(bytes: &[u8], digits: &[u8; 16], f: impl FnOnce(&str) -> R) -> R {
    let mut text = [0u8; 64];
    let text = &mut text[..2 * bytes.len().min(32)];
    fill_hex(text, bytes, digits);
    f(std::str::from_utf8(text).expect("hex digits are ASCII"))
}

/// SHA-256 of `data`, as raw bytes (for API key hashes).
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// SHA-256 of the parts one after another, without joining them first.
pub fn sha256_parts(parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// One input of a configurable digest recipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    /// The API user name of the operator's account (the request's authentication block).
    ApiUsername,
    /// The per-request random salt, in decimal.
    Salt,
    /// The vendor-issued reset code (a temporary key).
    Key,
    NewPassword,
    /// The end user's user name.
    UserName,
    /// The end user's e-mail (empty when none).
    Email,
    /// The operator's shared secret.
    Secret,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    #[default]
    Sha256,
    Sha512,
}

/// Plain: hash the concatenated parts. Hmac: HMAC keyed by the secret over the other parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Plain,
    Hmac,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    #[default]
    Hex,
    #[serde(rename = "HEX")]
    HexUpper,
    Base64,
}

/// A digest recipe: which parts, in which order, hashed how, encoded how. Used where a vendor's
/// formula is not public and must be configuration (Amsalem's `Digest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    pub parts: Vec<Part>,
    pub algorithm: Algorithm,
    pub mode: Mode,
    pub encoding: Encoding,
}

/// The values a recipe's parts draw on.
pub struct Inputs<'a> {
    pub api_username: &'a str,
    pub salt: u64,
    pub key: &'a str,
    pub new_password: &'a str,
    pub user_name: &'a str,
    pub email: &'a str,
    pub secret: &'a str,
}

impl Recipe {
    /// The recipe vendors.md assumes for Amsalem: lower-case hex SHA-256 of
    /// UserName + Salt + User.Key + UserNewPassword + secret.
    pub fn amsalem_default() -> Recipe {
        Recipe {
            parts: vec![
                Part::ApiUsername,
                Part::Salt,
                Part::Key,
                Part::NewPassword,
                Part::Secret,
            ],
            algorithm: Algorithm::Sha256,
            mode: Mode::Plain,
            encoding: Encoding::Hex,
        }
    }

    /// Checks the recipe makes sense: parts given, and in HMAC mode the secret is the key only.
    pub fn validate(&self) -> Result<(), String> {
        if self.parts.is_empty() {
            return Err("parts must list at least one part".into());
        }
        match self.mode {
            Mode::Plain if !self.parts.contains(&Part::Secret) => {
                Err("a plain recipe must include the secret among its parts".into())
            }
            Mode::Hmac if self.parts.contains(&Part::Secret) => {
                Err("an hmac recipe keys with the secret: leave it out of the parts".into())
            }
            _ => Ok(()),
        }
    }

    pub fn compute(&self, inputs: &Inputs<'_>) -> String {
        let salt = inputs.salt.to_string();
        let mut message = Vec::with_capacity(128);
        for part in &self.parts {
            let value: &str = match part {
                Part::ApiUsername => inputs.api_username,
                Part::Salt => &salt,
                Part::Key => inputs.key,
                Part::NewPassword => inputs.new_password,
                Part::UserName => inputs.user_name,
                Part::Email => inputs.email,
                Part::Secret => inputs.secret,
            };
            message.extend_from_slice(value.as_bytes());
        }
        let key = inputs.secret.as_bytes();
        let digest: Vec<u8> = match (self.mode, self.algorithm) {
            (Mode::Plain, Algorithm::Sha256) => Sha256::digest(&message).to_vec(),
            (Mode::Plain, Algorithm::Sha512) => Sha512::digest(&message).to_vec(),
            (Mode::Hmac, Algorithm::Sha256) => {
                let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key");
                mac.update(&message);
                mac.finalize().into_bytes().to_vec()
            }
            (Mode::Hmac, Algorithm::Sha512) => {
                let mut mac = Hmac::<Sha512>::new_from_slice(key).expect("HMAC takes any key");
                mac.update(&message);
                mac.finalize().into_bytes().to_vec()
            }
        };
        match self.encoding {
            Encoding::Hex => hex_lower(&digest),
            Encoding::HexUpper => hex_lower(&digest).to_ascii_uppercase(),
            Encoding::Base64 => STANDARD.encode(digest),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_parts_is_sha256_of_their_concatenation() {
        let parts: [&[u8]; 4] = [b"tenant", b"\0", b"", b"somchai@example.com"];
        assert_eq!(sha256_parts(&parts), sha256(&parts.concat()));
        assert_eq!(sha256_parts(&[]), sha256(b""));
    }

    fn inputs() -> Inputs<'static> {
        Inputs {
            api_username: "api",
            salt: 123456789,
            key: "K",
            new_password: "P",
            user_name: "u",
            email: "",
            secret: "S",
        }
    }

    #[test]
    fn the_default_amsalem_recipe_hashes_the_documented_concatenation() {
        let recipe = Recipe::amsalem_default();
        recipe.validate().unwrap();
        assert_eq!(
            recipe.compute(&inputs()),
            sha256_hex(&[b"api123456789KPS"], HexCase::Lower)
        );
    }

    #[test]
    fn hmac_recipes_match_rfc_4231_test_case_2() {
        // RFC 4231, test case 2: key "Jefe", data "what do ya want for nothing?".
        let recipe = Recipe {
            parts: vec![Part::Key],
            algorithm: Algorithm::Sha256,
            mode: Mode::Hmac,
            encoding: Encoding::Hex,
        };
        let i = Inputs {
            key: "what do ya want for nothing?",
            secret: "Jefe",
            ..inputs()
        };
        assert_eq!(
            recipe.compute(&i),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let sha512 = Recipe {
            algorithm: Algorithm::Sha512,
            encoding: Encoding::HexUpper,
            ..recipe
        };
        assert!(sha512.compute(&i).starts_with("164B7A7BFCF819E2E395FBE73B56E0A387BD64222E831FD610270CD7EA2505549758BF75C05A994A6D034F65F8F0E6FDCAEAB1A34D4A6B4B636E070A38BCE737"));
    }

    #[test]
    fn recipes_are_validated() {
        let mut r = Recipe::amsalem_default();
        r.mode = Mode::Hmac;
        assert!(r.validate().is_err());
        r.parts.retain(|p| *p != Part::Secret);
        assert!(r.validate().is_ok());
        r.parts.clear();
        assert!(r.validate().is_err());
    }

    #[test]
    fn hex_lower_matches_the_hex_crate() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(hex_lower(&bytes), hex::encode(&bytes));
        assert_eq!(hex_lower(&[]), "");
        // Every length around the eight-byte steps, every byte value in every position of a
        // step, and both cases.
        for len in 0..=33u8 {
            for start in [0u8, 7, 100, 249] {
                let bytes: Vec<u8> = (0..len)
                    .map(|i| start.wrapping_add(i.wrapping_mul(37)))
                    .collect();
                assert_eq!(hex_lower(&bytes), hex::encode(&bytes), "{bytes:?}");
                with_hex(&bytes, UPPER_DIGITS, |hex| {
                    assert_eq!(hex, hex::encode_upper(&bytes[..len.min(32) as usize]))
                });
            }
        }
        for value in 0..=255u8 {
            for at in 0..8 {
                let mut eight = [0x5au8; 8];
                eight[at] = value;
                assert_eq!(hex_lower(&eight), hex::encode(eight), "{eight:?}");
            }
        }
    }

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
