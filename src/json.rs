//! JSON text written by hand on the request path. The bodies the gateway writes on every request
//! (the CBSS envelope, a reset id's claims, the progress answer) are mostly ids, hex, step names
//! and timestamps: copied as they are, they skip serde_json's per-byte escaping pass.

/// `s` as a JSON string, byte for byte as serde_json writes it: copied between quotes when
/// nothing in it needs an escape (printable ASCII other than `"` and `\`), through serde_json
/// otherwise.
pub fn push_str(out: &mut Vec<u8>, s: &str) {
    if s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(out, s).expect("writing a string to memory does not fail");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_written_as_serde_writes_them() {
        for s in [
            "",
            "demo-cbss",
            "AQJrMQ-_x9",
            "2026-11-24T07:00:00Z",
            "quote\" back\\slash",
            "tab\t nl\n nul\u{0} del\u{7f}",
            "ünïcode ✓ 😀",
        ] {
            let mut out = Vec::new();
            push_str(&mut out, s);
            assert_eq!(out, serde_json::to_vec(s).unwrap(), "{s:?}");
        }
    }
}
