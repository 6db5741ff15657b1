//! Request ids: the caller's `X-Request-Id` when it is sane, otherwise a fresh random one.

use rand::RngCore;

/// Keeps a caller's id only if it is short and made of safe characters, so it can go into logs and
/// vendor headers unescaped.
pub fn accept_or_generate(from_caller: Option<&[u8]>) -> String {
    if let Some(raw) = from_caller {
        let sane = !raw.is_empty()
            && raw.len() <= 128
            && raw
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
        if sane {
            return String::from_utf8_lossy(raw).into_owned();
        }
    }
    generate()
}

pub fn generate() -> String {
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    crate::signing::hex_lower(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_sane_ids_and_replaces_others() {
        assert_eq!(accept_or_generate(Some(b"abc-123")), "abc-123");
        assert_ne!(accept_or_generate(Some(b"bad id\r\n")), "bad id\r\n");
        assert_eq!(accept_or_generate(None).len(), 32);
    }
}
