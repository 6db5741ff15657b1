//! Sealed reset ids: XChaCha20-Poly1305 over the reset's claims, under keys with ids so they can
//! rotate. The first key seals; every key opens.
//!
//! Wire form (base64url, no padding): `version(1) | kid_len(1) | kid | nonce(24) | ciphertext+tag`.
//! The header bytes before the nonce are the AEAD's associated data, so a key id cannot be swapped.
//! Nonces are drawn per thread in short runs under one derived subkey (`sealer`).

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};

mod sealer;
use sealer::{Sealer, NONCE_LEN};

const VERSION: u8 = 1;
/// Poly1305's tag, after the ciphertext.
const TAG_LEN: usize = 16;
/// Plaintexts are padded with JSON whitespace to a multiple of this, so small differences in
/// what a reset carries do not show in its length. (A decoy is as long as a real reset by
/// construction: see `write_claims`.)
const PAD_TO: usize = 32;
/// Room made for the claims up front: a start's are 150 to 300 bytes, Capillary's more.
const CLAIMS_ROOM: usize = 512;
/// A token longer than this is refused before any decoding: it cannot be one of ours.
pub const MAX_TOKEN_CHARS: usize = 4096;

/// The step a reset id is ready for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    #[serde(rename = "v")]
    Verify,
    #[serde(rename = "c")]
    Complete,
}

/// What a reset id carries. Field names are short because they travel in every token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResetClaims {
    /// A random id for this reset, for logs and single-use bookkeeping.
    #[serde(rename = "i")]
    pub id: String,
    #[serde(rename = "t")]
    pub tenant: String,
    /// A hash of the tenant and identifier this reset is for: the key of its wrong-code limit, so
    /// starting a new reset (a fresh code) does not reset the count.
    #[serde(rename = "u", default)]
    pub subject: String,
    #[serde(rename = "s")]
    pub step: Step,
    /// Expiry, seconds since the Unix epoch.
    #[serde(rename = "x")]
    pub expires_at: i64,
    /// True when the vendor did not know the identifier and the tenant conceals that.
    #[serde(rename = "c", default, skip_serializing_if = "std::ops::Not::not")]
    pub concealed: bool,
    /// How many bytes the vendor's state was padded to (`vendors::start_state_width`): the next
    /// step's reset id is padded to the same, so that it too is as long whichever vendor serves
    /// the tenant. 0 where nothing was padded (and in reset ids of earlier releases).
    #[serde(rename = "w", default, skip_serializing_if = "is_zero")]
    pub state_width: usize,
    /// The vendor adapter's own state (session ids, request ids), opaque to the flow.
    #[serde(rename = "v", default)]
    pub vendor: serde_json::Value,
}

/// A reset's claims as they are sealed, borrowed from wherever they are at hand: a start seals
/// its tenant's name, its subject and its vendor's answer without copying them into a
/// `ResetClaims` first. `ResetClaims::to_seal` lends an opened reset's.
#[derive(Debug, Clone, Copy)]
pub struct ClaimsToSeal<'a> {
    pub id: &'a str,
    pub tenant: &'a str,
    pub subject: &'a str,
    pub step: Step,
    pub expires_at: i64,
    pub concealed: bool,
    pub vendor: StateJson<'a>,
}

/// The vendor's state as it is sealed.
#[derive(Debug, Clone, Copy)]
pub enum StateJson<'a> {
    /// A value, such as an opened reset's state passed on to its next step.
    Value(&'a serde_json::Value),
    /// JSON text an adapter wrote (with serde_json, or numbers and fixed names only), written
    /// into the claims as it is: a start's state is never built as a `serde_json::Value`.
    Text(&'a str),
}

impl ResetClaims {
    pub fn to_seal(&self) -> ClaimsToSeal<'_> {
        ClaimsToSeal {
            id: &self.id,
            tenant: &self.tenant,
            subject: &self.subject,
            step: self.step,
            expires_at: self.expires_at,
            concealed: self.concealed,
            vendor: StateJson::Value(&self.vendor),
        }
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Not a token of ours, altered, or sealed under a key we do not hold.
    Invalid,
}

struct Key {
    id: String,
    /// Opens reset ids.
    cipher: XChaCha20Poly1305,
    /// Seals them (the first key only).
    sealer: Sealer,
}

impl Key {
    fn new(id: String, raw: [u8; 32]) -> Key {
        Key {
            id,
            cipher: XChaCha20Poly1305::new((&raw).into()),
            sealer: Sealer::new(raw),
        }
    }
}

/// The gateway's token keys.
pub struct TokenKeys {
    keys: Vec<Key>,
    ephemeral: bool,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("key_ids", &self.key_ids())
            .field("ephemeral", &self.ephemeral)
            .finish()
    }
}

/// A key id is 1 to 32 letters, digits, '-' or '_': it is written into every reset id sealed
/// under its key, and the spec's `,` and `:` must not appear in it.
fn check_key_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 32
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err("the key id must be 1 to 32 letters, digits, '-' or '_'".into())
    }
}

impl TokenKeys {
    /// Parses `kid:base64key[,kid:base64key...]`; each key is 32 bytes. The first one seals.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut keys = Vec::new();
        // Each key's digest, in the order of `keys` (not a second copy of the key), to find one
        // key given under two ids.
        let mut digests: Vec<[u8; 32]> = Vec::new();
        for (n, item) in spec.split(',').map(str::trim).enumerate() {
            if item.is_empty() {
                continue;
            }
            let (id, b64) = item
                .split_once(':')
                .ok_or_else(|| format!("token key #{} is not of the form kid:base64key", n + 1))?;
            check_key_id(id).map_err(|why| format!("token key #{}: {why}", n + 1))?;
            // Wiped when dropped, as the key it becomes is (`Key`): the decoded bytes are freed
            // once copied into it.
            let raw = zeroize::Zeroizing::new(
                STANDARD
                    .decode(b64)
                    .or_else(|_| URL_SAFE_NO_PAD.decode(b64))
                    .map_err(|_| format!("token key {id}: the key is not base64"))?,
            );
            if raw.len() != 32 {
                return Err(format!(
                    "token key {id}: the key must be 32 bytes, not {}",
                    raw.len()
                ));
            }
            if keys.iter().any(|k: &Key| k.id == id) {
                return Err(format!("token key {id} appears twice"));
            }
            let raw: [u8; 32] = raw
                .as_slice()
                .try_into()
                .map_err(|_| format!("token key {id}: unusable key"))?;
            // One byte 32 times ("AAAA...A=" is all zeros) is a placeholder copied from an
            // example, not a key anyone drew: whoever read the example could forge reset ids.
            if raw.iter().all(|b| *b == raw[0]) {
                return Err(format!(
                    "token key {id} is one byte repeated, a placeholder rather than a key: make \
                     one with `reset-gateway gen-token-key {id}`"
                ));
            }
            let digest = crate::signing::sha256(&raw);
            if let Some(other) = digests.iter().position(|d| *d == digest) {
                return Err(format!(
                    "token keys {} and {id} are the same key: a rotation needs a new key",
                    keys[other].id
                ));
            }
            digests.push(digest);
            keys.push(Key::new(id.to_string(), raw));
        }
        if keys.is_empty() {
            return Err("no token key given".into());
        }
        Ok(TokenKeys {
            keys,
            ephemeral: false,
        })
    }

    /// One random key that lives as long as this process.
    pub fn ephemeral() -> Self {
        let mut raw = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut raw);
        TokenKeys {
            keys: vec![Key::new("ephemeral".into(), raw)],
            ephemeral: true,
        }
    }

    /// A fresh key in the form `parse` reads, for operators (`reset-gateway gen-token-key`).
    /// Refuses an id `parse` would refuse, so that what it prints is always usable.
    pub fn generate_spec(id: &str) -> Result<String, String> {
        check_key_id(id)?;
        let mut raw = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut raw);
        Ok(format!("{id}:{}", STANDARD.encode(raw)))
    }

    pub fn is_ephemeral(&self) -> bool {
        self.ephemeral
    }

    pub fn key_ids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.id.as_str()).collect()
    }

    pub fn seal(&self, claims: &ResetClaims) -> String {
        self.sealed_text(|plaintext| {
            write_claims(plaintext, &claims.to_seal(), claims.state_width);
        })
    }

    /// Appends the sealed reset id (base64url, so nothing in it needs escaping in JSON) to
    /// `out`: the progress answer is written around it with no copy of the id in between. The
    /// vendor's state is padded to at least `state_width` bytes (see `write_claims`); false when
    /// it took more than that, and so this reset id is longer than a decoy's would be.
    pub fn seal_into(
        &self,
        claims: &ClaimsToSeal<'_>,
        state_width: usize,
        out: &mut Vec<u8>,
    ) -> bool {
        let mut fit = true;
        self.seal_with(
            |plaintext| fit = write_claims(plaintext, claims, state_width),
            out,
        );
        fit
    }

    /// Seals any bytes as a reset id. The request path seals claims (`seal_into`); the fuzz
    /// checks use this to reach the claims parser behind the AEAD, which forged ids never reach.
    pub fn seal_plaintext(&self, plaintext: Vec<u8>) -> String {
        self.sealed_text(|buf| buf.extend_from_slice(&plaintext))
    }

    /// A reset id as a `String`, for callers that keep it on its own.
    fn sealed_text(&self, write_plaintext: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        self.seal_with(write_plaintext, &mut out);
        String::from_utf8(out).expect("base64url is ASCII")
    }

    /// The token is assembled in one buffer (header, nonce, then the plaintext that
    /// `write_plaintext` appends, padded) and encrypted in place, then encoded onto `out`.
    fn seal_with(&self, write_plaintext: impl FnOnce(&mut Vec<u8>), out: &mut Vec<u8>) {
        let key = &self.keys[0];
        let header_len = 2 + key.id.len();
        let prefix_len = header_len + NONCE_LEN;
        let mut raw = Vec::with_capacity(prefix_len + CLAIMS_ROOM + TAG_LEN);
        raw.push(VERSION);
        raw.push(key.id.len() as u8);
        raw.extend_from_slice(key.id.as_bytes());
        raw.resize(prefix_len, 0);
        write_plaintext(&mut raw);
        let padded = (raw.len() - prefix_len).div_ceil(PAD_TO) * PAD_TO;
        raw.resize(prefix_len + padded, b' ');
        let (prefix, plaintext) = raw.split_at_mut(prefix_len);
        let (header, nonce) = prefix.split_at_mut(header_len);
        let nonce: &mut [u8; NONCE_LEN] =
            nonce.try_into().expect("the nonce's room was made above");
        let tag = key.sealer.seal(header, nonce, plaintext);
        raw.extend_from_slice(&tag);
        // base64-simd rather than the base64 crate: its AVX2 and SSE4.1 code, picked at run
        // time, encodes a reset id in about a quarter of the time (BENCHMARKS.md, session 10).
        // The output is the same unpadded base64url.
        base64_simd::URL_SAFE_NO_PAD.encode_append(&raw, out);
    }

    pub fn open(&self, token: &str) -> Result<ResetClaims, TokenError> {
        if token.len() > MAX_TOKEN_CHARS {
            return Err(TokenError::Invalid);
        }
        // Strict, as the base64 crate's decoder is: no padding, and nonzero bits left over in
        // the last character are an error, so each reset id has one spelling.
        let raw = base64_simd::URL_SAFE_NO_PAD
            .decode_to_vec(token)
            .map_err(|_| TokenError::Invalid)?;
        let (&version, rest) = raw.split_first().ok_or(TokenError::Invalid)?;
        let (&kid_len, rest) = rest.split_first().ok_or(TokenError::Invalid)?;
        let kid_len = kid_len as usize;
        if version != VERSION || rest.len() < kid_len + NONCE_LEN + 16 {
            return Err(TokenError::Invalid);
        }
        let (kid, rest) = rest.split_at(kid_len);
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let key = self
            .keys
            .iter()
            .find(|k| k.id.as_bytes() == kid)
            .ok_or(TokenError::Invalid)?;
        let header = &raw[..2 + kid_len];
        let plaintext = key
            .cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: header,
                },
            )
            .map_err(|_| TokenError::Invalid)?;
        crate::json::from_body(&plaintext).map_err(|_| TokenError::Invalid)
    }
}

/// Appends the claims as JSON, written field by field: this runs on every start and
/// verification, and the derived serializer's per-field and per-string overhead was the larger
/// part of sealing's JSON work. Strings go through `json::push_str`, the vendor's state through
/// serde_json. What serde reads back is the same claims (a test holds it to that).
///
/// Two things keep a decoy's length equal to a real reset's: the concealed flag is always
/// written and as wide either way (`true ` with a space, `false`), and the vendor's state is
/// followed by spaces up to `state_width` bytes, so a decoy's `null` takes the room a real state
/// would. JSON ignores the spaces; earlier releases read these claims too. The width is written
/// too (`w`, when not 0), for the next step's reset id to keep.
///
/// Returns whether the state fit in `state_width`.
fn write_claims(out: &mut Vec<u8>, claims: &ClaimsToSeal<'_>, state_width: usize) -> bool {
    out.extend_from_slice(b"{\"i\":");
    crate::json::push_str(out, claims.id);
    out.extend_from_slice(b",\"t\":");
    crate::json::push_str(out, claims.tenant);
    out.extend_from_slice(b",\"u\":");
    crate::json::push_str(out, claims.subject);
    out.extend_from_slice(match claims.step {
        Step::Verify => b",\"s\":\"v\",\"x\":",
        Step::Complete => b",\"s\":\"c\",\"x\":",
    });
    out.extend_from_slice(itoa::Buffer::new().format(claims.expires_at).as_bytes());
    out.extend_from_slice(match claims.concealed {
        true => b",\"c\":true ",
        false => b",\"c\":false",
    });
    if state_width > 0 {
        out.extend_from_slice(b",\"w\":");
        out.extend_from_slice(itoa::Buffer::new().format(state_width).as_bytes());
    }
    out.extend_from_slice(b",\"v\":");
    let state_start = out.len();
    match claims.vendor {
        StateJson::Value(value) => {
            serde_json::to_writer(&mut *out, value).expect("a JSON value always serializes")
        }
        StateJson::Text(text) => out.extend_from_slice(text.as_bytes()),
    }
    let padded = state_start + state_width;
    let fit = out.len() <= padded;
    if fit {
        out.resize(padded, b' ');
    }
    out.push(b'}');
    fit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_read_back_as_they_were_written() {
        let base = ResetClaims {
            id: "0f1e2d3c4b5a69788796a5b4c3d2e1f0".into(),
            tenant: "demo-cbss".into(),
            subject: "00112233445566778899aabbccddeeff".into(),
            step: Step::Verify,
            expires_at: 1_795_000_000,
            concealed: false,
            state_width: 0,
            vendor: serde_json::json!({"f": 1, "s": "a\"b\\c\u{1}\u{7f}é"}),
        };
        let variants = [
            base.clone(),
            ResetClaims {
                step: Step::Complete,
                concealed: true,
                expires_at: -5,
                vendor: serde_json::Value::Null,
                ..base.clone()
            },
            ResetClaims {
                tenant: "quote\" back\\slash tab\t del\u{7f} ünïcode ✓".into(),
                subject: String::new(),
                ..base.clone()
            },
        ];
        for claims in variants {
            for width in [0, 5, 300] {
                let mut written = Vec::new();
                write_claims(&mut written, &claims.to_seal(), width);
                let read: ResetClaims = serde_json::from_slice(&written).unwrap();
                // The width is written with the claims, for the next step to keep.
                let claims = ResetClaims {
                    state_width: width,
                    ..claims.clone()
                };
                assert_eq!(read, claims, "width {width}");
                // What serde writes, but for the flag (always there, as wide either way) and the
                // state's padding.
                let text = String::from_utf8(written).unwrap();
                let inner = text.strip_suffix('}').unwrap().trim_end_matches(' ');
                let unpadded = inner
                    .replace(",\"c\":true ", ",\"c\":true")
                    .replace(",\"c\":false", "")
                    + "}";
                let serde = serde_json::to_string(&claims).unwrap();
                assert_eq!(unpadded, serde, "width {width}");
                let state = serde_json::to_string(&claims.vendor).unwrap().len();
                let flag = if claims.concealed {
                    1
                } else {
                    ",\"c\":false".len()
                };
                assert_eq!(text.len(), serde.len() + flag + width.saturating_sub(state));
            }
        }
    }

    fn claims() -> ResetClaims {
        ResetClaims {
            id: "r1".into(),
            tenant: "t".into(),
            subject: "0123456789abcdef0123456789abcdef".into(),
            step: Step::Verify,
            expires_at: 1_900_000_000,
            concealed: false,
            state_width: 0,
            vendor: serde_json::json!({"id": 7}),
        }
    }

    #[test]
    fn round_trips_and_rotates() {
        let old_spec = TokenKeys::generate_spec("old").unwrap();
        let new_spec = TokenKeys::generate_spec("new").unwrap();
        let old = TokenKeys::parse(&old_spec).unwrap();
        let old_token = old.seal(&claims());
        assert_eq!(old.open(&old_token).unwrap(), claims());

        // A gateway that has rotated: "new" seals, and the same "old" key
        // still opens what was sealed before the rotation.
        let rotated = TokenKeys::parse(&format!("{new_spec},{old_spec}")).unwrap();
        assert_eq!(rotated.open(&old_token).unwrap(), claims());
        let fresh = rotated.seal(&claims());
        assert_eq!(rotated.open(&fresh).unwrap(), claims());
        assert!(
            old.open(&fresh).is_err(),
            "a token sealed with the new key must not open with the old one alone"
        );

        // A key that merely shares the old key's name is an impostor: it
        // must not open the old tokens.
        let impostor = TokenKeys::parse(&format!(
            "{new_spec},old:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
        ))
        .unwrap();
        assert!(
            impostor.open(&old_token).is_err(),
            "a different key named 'old' must not open"
        );
    }

    #[test]
    fn placeholder_and_repeated_keys_are_refused() {
        for byte in [
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            "//////////////////////////////////////////8=",
        ] {
            let err = TokenKeys::parse(&format!("k1:{byte}")).unwrap_err();
            assert!(err.contains("placeholder"), "{err}");
        }
        let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
        assert!(TokenKeys::parse(&format!("k1:{key}")).is_ok());
        let err = TokenKeys::parse(&format!("k2:{key},k1:{key}")).unwrap_err();
        assert!(err.contains("k2 and k1 are the same key"), "{err}");
        assert!(!err.contains(key), "{err}");
    }

    #[test]
    fn sealing_appends_after_what_is_there() {
        let keys = TokenKeys::parse(&TokenKeys::generate_spec("k1").unwrap()).unwrap();
        let mut out = b"{\"reset_id\":\"".to_vec();
        keys.seal_into(&claims().to_seal(), 0, &mut out);
        let token = std::str::from_utf8(&out[13..]).unwrap();
        assert!(token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(keys.open(token).unwrap(), claims());
        // The wire form: version, key id length, key id, a 24-byte nonce, the padded
        // ciphertext and a 16-byte tag.
        let raw = URL_SAFE_NO_PAD.decode(token).unwrap();
        assert_eq!(&raw[..4], b"\x01\x02k1");
        assert_eq!((raw.len() - 4 - NONCE_LEN - TAG_LEN) % PAD_TO, 0);
    }

    #[test]
    fn any_altered_byte_is_refused() {
        let keys = TokenKeys::ephemeral();
        let token = keys.seal(&claims());
        let mut raw = URL_SAFE_NO_PAD.decode(&token).unwrap();
        for i in 0..raw.len() {
            raw[i] ^= 0x01;
            assert_eq!(
                keys.open(&URL_SAFE_NO_PAD.encode(&raw)),
                Err(TokenError::Invalid),
                "byte {i}"
            );
            raw[i] ^= 0x01;
        }
        assert!(keys.open("").is_err());
        assert!(keys.open("not a token").is_err());
    }

    #[test]
    fn a_reset_id_has_one_spelling() {
        // Key ids of three lengths make ids whose base64 leaves 4, 2 or no spare bits in the
        // last character (the claims are padded to a fixed size).
        let mut spares_seen = std::collections::BTreeSet::new();
        for kid in ["k", "k1", "k12"] {
            let keys = TokenKeys::parse(&TokenKeys::generate_spec(kid).unwrap()).unwrap();
            let token = keys.seal(&claims());
            assert!(keys.open(&token).is_ok());
            let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            let last = token.as_bytes()[token.len() - 1];
            let value = alphabet.iter().position(|&c| c == last).unwrap();
            let spare_bits = match token.len() % 4 {
                2 => 4,
                3 => 2,
                _ => 0,
            };
            spares_seen.insert(spare_bits);
            // Another character with the same significant bits decodes to the same bytes in a
            // lenient decoder; here it is refused.
            for (other, &character) in alphabet.iter().enumerate() {
                if other != value && other >> spare_bits == value >> spare_bits {
                    let mut respelled = token.clone().into_bytes();
                    *respelled.last_mut().unwrap() = character;
                    let respelled = String::from_utf8(respelled).unwrap();
                    assert_eq!(keys.open(&respelled), Err(TokenError::Invalid));
                }
            }
            assert_eq!(keys.open(&format!("{token}=")), Err(TokenError::Invalid));
            assert_eq!(keys.open(&format!("{token}==")), Err(TokenError::Invalid));
            let standard = token.replace('-', "+").replace('_', "/");
            if standard != token {
                assert_eq!(keys.open(&standard), Err(TokenError::Invalid));
            }
        }
        assert_eq!(spares_seen.len(), 3, "{spares_seen:?}");
    }

    #[test]
    fn a_decoy_seals_to_the_length_of_a_real_reset() {
        // Whatever the rest of the claims weigh (here the tenant's name, across several padding
        // boundaries), a decoy with no state and the concealed flag is exactly as long as a real
        // reset whose state fits the width.
        let keys = TokenKeys::ephemeral();
        let sealed = |claims: &ResetClaims, width| {
            let mut out = Vec::new();
            let fit = keys.seal_into(&claims.to_seal(), width, &mut out);
            (out, fit)
        };
        let with_width = |claims: ResetClaims| ResetClaims {
            state_width: 27,
            ..claims
        };
        for tenant_len in 0..300 {
            for id in [7, u64::MAX] {
                let real = ResetClaims {
                    tenant: "t".repeat(tenant_len),
                    vendor: serde_json::json!({ "id": id }),
                    ..claims()
                };
                let decoy = ResetClaims {
                    concealed: true,
                    vendor: serde_json::Value::Null,
                    ..real.clone()
                };
                let (real_id, real_fit) = sealed(&real, 27);
                let (decoy_id, decoy_fit) = sealed(&decoy, 27);
                assert!(real_fit && decoy_fit);
                assert_eq!(
                    real_id.len(),
                    decoy_id.len(),
                    "tenant of {tenant_len}, id {id}"
                );
                let opened = keys.open(std::str::from_utf8(&decoy_id).unwrap()).unwrap();
                assert_eq!(opened, with_width(decoy));
            }
        }
        // A state an adapter wrote as text seals as the same value would.
        let real = ResetClaims {
            vendor: serde_json::json!({ "id": 7 }),
            ..claims()
        };
        let mut as_text = real.to_seal();
        as_text.vendor = StateJson::Text("{\"id\":7}");
        let mut out = Vec::new();
        assert!(keys.seal_into(&as_text, 27, &mut out));
        assert_eq!(out.len(), sealed(&real, 27).0.len());
        assert_eq!(
            keys.open(std::str::from_utf8(&out).unwrap()).unwrap(),
            with_width(real.clone())
        );
        // Opened and sealed again with the width it carries (a verification's next id), a
        // reset id is as long as it was.
        let opened = keys.open(std::str::from_utf8(&out).unwrap()).unwrap();
        assert_eq!(keys.seal(&opened).len(), out.len());
        // A state wider than its room is sealed whole, and said to be.
        let (_, fit) = sealed(&claims(), 5);
        assert!(!fit);
    }

    #[test]
    fn parse_reports_bad_specs() {
        assert!(TokenKeys::parse("").is_err());
        assert!(TokenKeys::parse("k1:short").is_err());
        assert!(TokenKeys::parse("bad id:AAAA").is_err());
    }
}
