//! Request ids: the caller's `X-Request-Id` when it is sane, otherwise a fresh random one.

use arrayvec::ArrayString;
use rand::RngCore;

/// The longest caller's id kept.
const MAX_LEN: usize = 128;

/// A request id, kept inline (no allocation): the request's own, copied into what its step
/// needs, and each reset's. Printable ASCII only, so it goes into logs, JSON and headers as it is.
/// An `ArrayString`, so reading it as a `str` checks nothing (a byte array would be checked as
/// UTF-8 at every use: about 170 instructions each for a 32-character id).
#[derive(Clone, Copy)]
pub struct RequestId(ArrayString<MAX_LEN>);

impl RequestId {
    /// A fresh random id: 32 lower-case hex digits.
    pub fn random() -> RequestId {
        let mut random = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut random);
        // 32 digits always fit.
        RequestId(crate::signing::with_hex_lower(&random, |hex| {
            ArrayString::from(hex).unwrap_or_default()
        }))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
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
            // ASCII (checked just above), at most `MAX_LEN` bytes: both always succeed.
            let text = std::str::from_utf8(raw).unwrap_or_default();
            if let Ok(id) = ArrayString::from(text) {
                return RequestId(id);
            }
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
