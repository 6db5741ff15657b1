//! Request ids: the caller's `X-Request-Id` when it is sane, otherwise a fresh random one.

use rand::RngCore;

/// The longest caller's id kept.
const MAX_LEN: usize = 128;

/// A request id, kept inline (no allocation): the request's own, copied into what its step
/// needs, and each reset's. Printable ASCII only, so it goes into logs, JSON and headers as it is.
#[derive(Clone, Copy)]
pub struct RequestId {
    len: u8,
    bytes: [u8; MAX_LEN],
}

impl RequestId {
    /// A fresh random id: 32 lower-case hex digits.
    pub fn random() -> RequestId {
        let mut random = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut random);
        let mut id = RequestId {
            len: 32,
            bytes: [0; MAX_LEN],
        };
        crate::signing::fill_hex(&mut id.bytes[..32], &random, b"0123456789abcdef");
        id
    }

    pub fn as_str(&self) -> &str {
        // Only ever ASCII (hex digits, or a caller's id checked by `accept_or_generate`).
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or_default()
    }
}

impl std::ops::Deref for RequestId {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for RequestId {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

/// Keeps a caller's id only if it is short and made of safe characters, so it can go into logs and
/// vendor headers unescaped.
pub fn accept_or_generate(from_caller: Option<&[u8]>) -> RequestId {
    if let Some(raw) = from_caller {
        let sane = !raw.is_empty()
            && raw.len() <= MAX_LEN
            && raw
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
        if sane {
            let mut id = RequestId {
                len: raw.len() as u8,
                bytes: [0; MAX_LEN],
            };
            id.bytes[..raw.len()].copy_from_slice(raw);
            return id;
        }
    }
    RequestId::random()
}

/// A fresh random id as a `String`, for ids kept on their own.
pub fn generate() -> String {
    RequestId::random().as_str().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_sane_ids_and_replaces_others() {
        assert_eq!(accept_or_generate(Some(b"abc-123")).as_str(), "abc-123");
        let longest = "a".repeat(MAX_LEN);
        assert_eq!(
            accept_or_generate(Some(longest.as_bytes())).as_str(),
            longest
        );
        let too_long = "a".repeat(MAX_LEN + 1);
        assert_eq!(accept_or_generate(Some(too_long.as_bytes())).len(), 32);
        assert_ne!(
            accept_or_generate(Some(b"bad id\r\n")).as_str(),
            "bad id\r\n"
        );
        let fresh = accept_or_generate(None);
        assert_eq!(fresh.len(), 32);
        assert!(fresh
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_ne!(fresh.as_str(), accept_or_generate(None).as_str());
        assert_eq!(generate().len(), 32);
    }
}
