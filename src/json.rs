//! JSON text written by hand on the request path. The bodies the gateway writes on every request
//! (the CBSS envelope, a reset id's claims, the progress answer) are mostly ids, hex, step names
//! and timestamps: copied as they are, they skip serde_json's per-byte escaping pass. Bodies it
//! reads (requests, vendor answers, reset ids' claims) go through `from_body`.

/// `s` as a JSON string, byte for byte as serde_json writes it: copied between quotes when
/// nothing in it needs an escape (printable ASCII other than `"` and `\`), through serde_json
/// otherwise.
pub fn push_str(out: &mut Vec<u8>, s: &str) {
    if copies_as_is(s.as_bytes()) {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(out, s).expect("writing a string to memory does not fail");
    }
}

/// Whether a byte is written as it is: printable ASCII other than `"` and `\`.
fn byte_copies_as_is(b: u8) -> bool {
    (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\'
}

/// Whether every byte is written as it is, eight bytes per step: each word test below is exact
/// for "some byte of the word is such a byte" (a borrow or carry can only come from a byte that
/// already answers yes).
fn copies_as_is(bytes: &[u8]) -> bool {
    use crate::swar::{has_byte, HIGHS, ONES};
    let needs_escape = |x: u64| {
        let control = x.wrapping_sub(ONES * 0x20) & !x & HIGHS != 0;
        let del_or_high = (x.wrapping_add(ONES) | x) & HIGHS != 0;
        control || del_or_high || has_byte(x, b'"') || has_byte(x, b'\\')
    };
    !crate::swar::any(bytes, needs_escape, |b| !byte_copies_as_is(b))
}

/// `body` read as JSON into `T`, with the errors `serde_json::from_slice` gives. Read from bytes,
/// serde_json checks UTF-8 string by string (a call for each of the ten or so strings a request
/// path reads); read from a `str` it checks nothing, so one check of the whole body first (ASCII
/// a word at a time) does the same for less. A body that is not UTF-8 is read from bytes, so its
/// fault is reported as before, at the same line and column.
pub fn from_body<'a, T: serde::Deserialize<'a>>(body: &'a [u8]) -> serde_json::Result<T> {
    match std::str::from_utf8(body) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_read_as_from_slice_reads_them() {
        type Map = std::collections::BTreeMap<String, serde_json::Value>;
        let bodies: [&[u8]; 13] = [
            br#"{"a":"b","c":[1,2.5,null,true],"d":{"e":"\u00e9\n"}}"#,
            br#"{"a":"\ud800"}"#,
            br#"{"a":"\udc00x"}"#,
            br#"{"a":"\ud83d\ude00"}"#,
            b"{\"a\":\"tab\there\"}",
            br#"{"a":"cut"#,
            br#"{"a":"1","a":"2"}"#,
            "{\"ünï\":\"✓ 😀\"}".as_bytes(),
            b"{\"a\":\"\xff\"}",
            b"{\"a\":\"ok\",\n\"b\":\"\xc3\x28\"}",
            b"\xef\xbb\xbf{}",
            b"{\"a\":1,}",
            b"",
        ];
        // Unknown fields are skipped unread, by another path of the reader.
        #[derive(Debug, PartialEq, serde::Deserialize)]
        struct Known {
            a: Option<String>,
        }
        for body in bodies
            .into_iter()
            .chain([&br#"{"skipped":"\ud800 \u00e9","a":"x"}"#[..]])
        {
            let ours = from_body::<Map>(body).map_err(|e| e.to_string());
            let theirs = serde_json::from_slice::<Map>(body).map_err(|e| e.to_string());
            assert_eq!(ours, theirs, "{}", String::from_utf8_lossy(body));
            let ours = from_body::<Known>(body).map_err(|e| e.to_string());
            let theirs = serde_json::from_slice::<Known>(body).map_err(|e| e.to_string());
            assert_eq!(ours, theirs, "{}", String::from_utf8_lossy(body));
        }
        // Fields borrowed from the body still borrow from it.
        #[derive(serde::Deserialize)]
        struct Borrowed<'a> {
            a: &'a str,
        }
        let body = br#"{"a":"plain"}"#;
        assert_eq!(from_body::<Borrowed>(body).unwrap().a, "plain");
    }

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

    #[test]
    fn the_word_test_agrees_with_the_byte_test_for_every_byte_at_every_place() {
        for b in 0..=255u8 {
            for len in 1..=17 {
                for at in 0..len {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = b;
                    assert_eq!(
                        copies_as_is(&bytes),
                        byte_copies_as_is(b),
                        "byte {b:#04x} at {at} of {len}"
                    );
                }
            }
        }
        // Neighbours that could borrow or carry into each other.
        for pair in [[0x7f, 0x00], [0xff, 0x7e], [0x00, 0x21], [0x1f, 0x20]] {
            let mut bytes = [b'a'; 8];
            bytes[3..5].copy_from_slice(&pair);
            assert!(!copies_as_is(&bytes), "{pair:x?}");
        }
    }
}
