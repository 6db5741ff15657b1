//! The checks behind the coverage-guided fuzz targets in `fuzz/` (run by `scripts/fuzz`) and the
//! regression test that replays every input saved under `fuzz/regressions/`.
//!
//! Each check feeds one parser of outside input with arbitrary bytes and asserts what must hold for
//! any input, not only "no panic": a forged reset id never opens, a vendor's answer never echoes
//! what the caller sent, a refused XML construct is never accepted. A failed assertion is a panic,
//! which is what the fuzzer reports as a crash.

use std::sync::OnceLock;

use crate::api::problem::Problem;
use crate::api::types::{parse, CompleteRequest, StartRequest, VerifyRequest};
use crate::token::{ResetClaims, TokenKeys};
use crate::vendors::{amsalem, capillary, cbss, hepsiburada};

/// What the caller sent that a vendor might quote back (a password, an OTP). The fuzz dictionary
/// and seed answers carry it, so the fuzzer places it everywhere a vendor's text can go.
pub const NEVER_ECHO: [&str; 2] = ["Zq9-Secret-Pw", "314159"];

/// A check: feeds one input to one parser and panics if what must hold does not.
pub type Check = fn(&[u8]);

/// Every check, by the name of its fuzz target and regression folder.
pub const CHECKS: [(&str, Check); 8] = [
    ("canonical_request", canonical_request),
    ("reset_id", reset_id),
    ("cbss_answer", cbss_answer),
    ("capillary_answer", capillary_answer),
    ("amsalem_answer", amsalem_answer),
    ("hepsiburada_answer", hepsiburada_answer),
    ("xml", xml),
    ("http_wire", http_wire),
];

/// A canonical request body, read as each step's request.
pub fn canonical_request(data: &[u8]) {
    let _ = parse::<StartRequest>(data);
    let _ = parse::<VerifyRequest>(data);
    let _ = parse::<CompleteRequest>(data);
}

fn token_keys() -> &'static TokenKeys {
    static KEYS: OnceLock<TokenKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        TokenKeys::parse("fuzz:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
            .expect("the fuzz key is well-formed")
    })
}

/// A reset id as a caller sends it (which must never open: forging one would take a reset over),
/// and the same bytes as the plaintext inside a genuine id (which must open to exactly what the
/// claims parser makes of them).
pub fn reset_id(data: &[u8]) {
    let keys = token_keys();
    let forged = String::from_utf8_lossy(data);
    assert!(keys.open(&forged).is_err(), "a forged reset id opened");
    let sealed = keys.seal_plaintext(data.to_vec());
    let opened = keys.open(&sealed).ok();
    let parsed = serde_json::from_slice::<ResetClaims>(data).ok();
    // Sealing pads with spaces, which JSON ignores: the two must agree.
    assert_eq!(opened, parsed, "a sealed reset id opened to other claims");
}

/// Splits fuzz input into an HTTP status (its first two bytes) and the answer's body.
fn status_and_body(data: &[u8]) -> (u16, &[u8]) {
    match data {
        [a, b, body @ ..] => (100 + u16::from_be_bytes([*a, *b]) % 500, body),
        _ => (200, data),
    }
}

/// What a caller may see of a vendor's answer must not hold what the caller sent.
fn assert_echoes_nothing(outcome: Result<String, Problem>) {
    let shown = match outcome {
        Ok(value) => value,
        Err(problem) => String::from_utf8_lossy(&problem.to_json("r", true)).into_owned(),
    };
    for secret in NEVER_ECHO {
        assert!(
            !shown.contains(secret),
            "the caller's secret was echoed: {shown}"
        );
    }
}

pub fn cbss_answer(data: &[u8]) {
    let (status, body) = status_and_body(data);
    // The number CBSS returns on success is an id, not text, and cannot quote anything.
    assert_echoes_nothing(cbss::read_answer(status, body, &NEVER_ECHO).map(|_| String::new()));
}

pub fn capillary_answer(data: &[u8]) {
    let (status, body) = status_and_body(data);
    // The session id Capillary returns on success is kept in the reset id, never shown.
    assert_echoes_nothing(capillary::read_answer(status, body, &NEVER_ECHO).map(|_| String::new()));
}

pub fn amsalem_answer(data: &[u8]) {
    let (status, body) = status_and_body(data);
    assert_echoes_nothing(amsalem::read_answer(status, body, &NEVER_ECHO).map(|()| String::new()));
}

pub fn hepsiburada_answer(data: &[u8]) {
    let (status, body) = status_and_body(data);
    assert_echoes_nothing(
        hepsiburada::read_answer(status, body, &NEVER_ECHO).map(|()| String::new()),
    );
}

/// The XML reader: a document it accepts has no DOCTYPE and stays inside its depth and size bounds.
pub fn xml(data: &[u8]) {
    let Ok(root) = crate::xml::parse(data) else {
        return;
    };
    assert!(!declares_doctype(data), "XML with a DOCTYPE was accepted");
    let (depth, elements) = measure(&root);
    assert!(depth <= 32, "accepted XML nests {depth} deep");
    assert!(elements <= 2_000, "accepted XML has {elements} elements");
}

/// HTTP/1.1 framing, on the same bytes read as a request head, a chunked body and an answer head.
/// An accepted request head lies within the input and its limit, parses the same from its own
/// bytes, and has one body framing only: with a `Transfer-Encoding` field it is chunked and has
/// no `Content-Length`; with `Content-Length` fields they all agree. A decoded chunked body stays
/// within its limit and decodes the same from exactly the bytes it consumed.
pub fn http_wire(data: &[u8]) {
    use crate::wire::{
        decode_chunked, decode_chunked_from, parse_request, parse_response, Chunked,
        ChunkedProgress, Framing,
    };
    if let Ok(Some(head)) = parse_request(data) {
        assert!(head.len <= data.len() && head.len <= crate::wire::MAX_REQUEST_HEAD);
        let again = parse_request(&data[..head.len]).expect("a head parses from its own bytes");
        assert_eq!(again.map(|h| h.headers), Some(head.headers.clone()));
        let fields = |name: &str| -> Vec<&[u8]> {
            head.headers
                .iter()
                .filter(|(n, _)| data[n.clone()].eq_ignore_ascii_case(name.as_bytes()))
                .map(|(_, v)| data[v.clone()].trim_ascii())
                .collect()
        };
        let (encodings, lengths) = (fields("Transfer-Encoding"), fields("Content-Length"));
        if !encodings.is_empty() {
            assert!(lengths.is_empty(), "a request framed two ways was accepted");
            assert_eq!(head.framing, Framing::Chunked);
        } else if let Some(first) = lengths.first() {
            assert!(
                lengths.iter().all(|l| l == first),
                "conflicting lengths accepted"
            );
            let declared = std::str::from_utf8(first).ok().and_then(|l| l.parse().ok());
            assert_eq!(Some(head.framing), declared.map(Framing::Length));
        } else {
            assert_eq!(head.framing, Framing::Length(0));
        }
    }
    const LIMIT: usize = 1024;
    if let Ok(Chunked::Complete { payload, consumed }) = decode_chunked(data, LIMIT) {
        assert!(payload.len() <= LIMIT && consumed <= data.len());
        let exact = decode_chunked(&data[..consumed], LIMIT);
        assert_eq!(
            exact,
            Ok(Chunked::Complete {
                payload: payload.clone(),
                consumed
            })
        );
        assert_eq!(
            decode_chunked(&data[..consumed - 1], LIMIT),
            Ok(Chunked::Incomplete)
        );
    }
    // Decoding in two reads (split where the first byte says), progress kept, agrees with
    // decoding at once.
    let split = usize::from(data.first().copied().unwrap_or(0)).min(data.len());
    let mut progress = ChunkedProgress::default();
    let first = decode_chunked_from(&data[..split], LIMIT, &mut progress);
    let whole = decode_chunked(data, LIMIT);
    if first == Ok(Chunked::Incomplete) {
        assert_eq!(decode_chunked_from(data, LIMIT, &mut progress), whole);
    } else if let Ok(Chunked::Complete { .. }) = first {
        assert_eq!(first, whole, "a body complete in a prefix is the same body");
    }
    if let Ok(Some(head)) = parse_response(data, 4096) {
        assert!(head.len <= data.len());
    }
}

/// Whether `<!DOCTYPE` appears as markup: outside processing instructions, comments, CDATA
/// sections and tags (whose quoted attribute values may hold the same characters), none of which
/// declares anything.
fn declares_doctype(data: &[u8]) -> bool {
    let mut rest = data;
    while let Some(at) = rest.iter().position(|&b| b == b'<') {
        rest = &rest[at..];
        // The end is looked for after the whole opener, as XML reads it: `<!-->` does not close
        // the comment it opens (the dashes cannot serve both), nor `<?>` its instruction.
        let skip_to = |opener: usize, end: &[u8]| {
            rest[opener..]
                .windows(end.len())
                .position(|w| w == end)
                .map(|i| opener + i + end.len())
        };
        let skipped = if rest.starts_with(b"<?") {
            skip_to(2, b"?>")
        } else if rest.starts_with(b"<!--") {
            skip_to(4, b"-->")
        } else if rest.starts_with(b"<![CDATA[") {
            skip_to(9, b"]]>")
        } else if rest.len() >= 9 && rest[..9].eq_ignore_ascii_case(b"<!DOCTYPE") {
            return true;
        } else {
            end_of_tag(rest)
        };
        match skipped {
            Some(n) => rest = &rest[n..],
            // Unterminated: the parser must have refused it, and nothing after it is markup.
            None => return false,
        }
    }
    false
}

/// Where the tag `rest` starts with ends, just past its `>`: quoted values may hold a `>`.
fn end_of_tag(rest: &[u8]) -> Option<usize> {
    let mut quote = None;
    for (i, &b) in rest.iter().enumerate().skip(1) {
        match (quote, b) {
            (None, b'"' | b'\'') => quote = Some(b),
            (Some(q), _) if b == q => quote = None,
            (None, b'>') => return Some(i + 1),
            _ => {}
        }
    }
    None
}

/// The depth and element count of a tree.
fn measure(element: &crate::xml::Element) -> (usize, usize) {
    element
        .children
        .iter()
        .map(measure)
        .fold((1, 1), |(depth, count), (d, c)| {
            (depth.max(d + 1), count + c)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Every input the fuzzer ever crashed on, saved under `fuzz/regressions/<check>/`, and every
    /// seed under `fuzz/seeds/<check>/`, is replayed through its check.
    #[test]
    fn saved_fuzz_inputs_pass_their_checks() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        for (name, check) in CHECKS {
            let mut seeds = 0;
            for folder in ["regressions", "seeds"] {
                // A check may have no regressions yet; every check has seeds (below).
                let Ok(entries) = std::fs::read_dir(root.join(folder).join(name)) else {
                    continue;
                };
                for entry in entries {
                    let path = entry.unwrap().path();
                    let data = std::fs::read(&path).unwrap();
                    let outcome =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&data)));
                    assert!(outcome.is_ok(), "{} fails its check", path.display());
                    seeds += usize::from(folder == "seeds");
                }
            }
            assert!(
                seeds > 0,
                "no seeds for the {name} check in fuzz/seeds/{name}"
            );
        }
    }

    #[test]
    fn doctype_is_found_as_markup_only() {
        assert!(declares_doctype(b"<?xml version=\"1.0\"?><!DOCTYPE a><a/>"));
        assert!(declares_doctype(b"<!doctype a><a/>"));
        assert!(!declares_doctype(b"<?x <!DOCTYPE a ?><a/>"));
        assert!(!declares_doctype(
            b"<a><!-- <!DOCTYPE --><![CDATA[<!DOCTYPE]]></a>"
        ));
        assert!(!declares_doctype(b"<a b=\"<!DOCTYPE x>\" c='>'/>"));
        assert!(declares_doctype(b"<a b=\">\"/><!DOCTYPE a>"));
        // `<!-->` and `<?>` do not close what they open: what follows is still inside.
        assert!(!declares_doctype(b"<a><!--><!DOCTYPE a>--></a>"));
        assert!(!declares_doctype(b"<?><!DOCTYPE a>?><a/>"));
        assert!(declares_doctype(b"<a><!----><!DOCTYPE a></a>"));
    }

    #[test]
    fn a_vendor_quoting_the_password_is_caught_by_the_check() {
        // The echo check is only worth its name if an echo fails it.
        let echoed = Err(Problem::new(
            crate::api::problem::ErrorCode::PasswordRejected,
            format!("vendor said {}", NEVER_ECHO[0]),
        ));
        let outcome = std::panic::catch_unwind(|| assert_echoes_nothing(echoed));
        assert!(outcome.is_err());
    }

    #[test]
    fn a_password_quoted_at_the_clip_boundary_leaks_no_part_of_it() {
        // A vendor message longer than the clip, with the password across the cut.
        let message = format!("{}{}", "x".repeat(195), NEVER_ECHO[0]);
        let body = format!(r#"{{"Success":false,"Message":"{message}","Extra1":"E"}}"#);
        let mut data = vec![0, 100];
        data.extend_from_slice(body.as_bytes());
        let problem = amsalem::read_answer(200, body.as_bytes(), &NEVER_ECHO).unwrap_err();
        let shown = String::from_utf8_lossy(&problem.to_json("r", true)).into_owned();
        assert!(!shown.contains(&NEVER_ECHO[0][..5]), "{shown}");
        amsalem_answer(&data);
    }
}
