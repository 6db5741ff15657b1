//! Reading the escapes a vendor may have written a quoted request in, so that a secret inside it
//! is found however it was escaped.
//!
//! A vendor that quotes the request it refused writes it as its own serializer escapes text:
//! .NET's System.Text.Json writes `+`, `&`, `<`, `>`, `'`, `"` and every non-ASCII character as
//! `\u002B`, `\u00E4`, ...; an XML writer may use character references (`&#43;`, `&#xE4;`). A
//! password is redacted from a vendor's message by its text, so the message is read back to plain
//! characters first.

/// How many times the escapes are read: a request quoted inside a quoted answer is escaped twice.
const MOST_PASSES: usize = 3;

/// `text` with JSON's `\uXXXX`, `\"`, `\\` and `\/` and XML's numeric character references read
/// as the characters they stand for, pass after pass while any are left (at most `MOST_PASSES`).
/// JSON's one-letter escapes for control characters (`\n`, `\t`) are left as written: a secret
/// holds none, and a message's `C:\temp` stays as it was.
pub fn read_escapes(text: &str) -> String {
    let mut out = text.to_owned();
    for _ in 0..MOST_PASSES {
        if !out.contains(['\\', '&']) {
            break;
        }
        let read = read_once(&out);
        if read == out {
            break;
        }
        out = read;
    }
    out
}

fn read_once(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(['\\', '&']) {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let (read, taken) = if rest.starts_with('\\') {
            json_escape(rest)
        } else {
            xml_reference(rest)
        };
        match read {
            Some(c) => out.push(c),
            None => out.push_str(&rest[..taken]),
        }
        rest = &rest[taken..];
    }
    out.push_str(rest);
    out
}

/// The character a JSON escape at the start of `s` stands for, and how many bytes it took; `None`
/// (and the backslash alone taken) for one that is left as written.
fn json_escape(s: &str) -> (Option<char>, usize) {
    match s.as_bytes().get(1) {
        Some(b'"') => (Some('"'), 2),
        Some(b'\\') => (Some('\\'), 2),
        Some(b'/') => (Some('/'), 2),
        Some(b'u') => match code_unit(&s[2..]) {
            // A surrogate pair is two escapes for one character.
            Some(high @ 0xD800..=0xDBFF) => {
                let low = s[6..].strip_prefix("\\u").and_then(code_unit);
                match low {
                    Some(low @ 0xDC00..=0xDFFF) => {
                        let c = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
                        (char::from_u32(c), 12)
                    }
                    _ => (None, 1),
                }
            }
            Some(unit) => match char::from_u32(unit) {
                Some(c) => (Some(c), 6),
                None => (None, 1),
            },
            None => (None, 1),
        },
        _ => (None, 1),
    }
}

/// The four hex digits at the start of `s`, as a number.
fn code_unit(s: &str) -> Option<u32> {
    let digits = s.get(..4)?;
    if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(digits, 16).ok()
}

/// The character an XML numeric reference (`&#43;`, `&#x2B;`) at the start of `s` stands for, and
/// how many bytes it took; `None` (and the `&` alone taken) for anything else.
fn xml_reference(s: &str) -> (Option<char>, usize) {
    let Some(body) = s.strip_prefix("&#") else {
        return (None, 1);
    };
    let (digits, radix, skip) = match body.strip_prefix(['x', 'X']) {
        Some(hex) => (hex, 16, 3),
        None => (body, 10, 2),
    };
    // Looked for only as far as the longest reference reaches: a text of `&#` without `;` must
    // not be scanned to its end from each of them.
    let Some(end) = digits
        .bytes()
        .take(9)
        .position(|b| b == b';')
        .filter(|&end| end >= 1)
    else {
        return (None, 1);
    };
    match u32::from_str_radix(&digits[..end], radix)
        .ok()
        .and_then(char::from_u32)
    {
        Some(c) => (Some(c), skip + end + 1),
        None => (None, 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_unicode_escapes_are_read_as_their_characters() {
        assert_eq!(read_escapes(r"P\u00E4ss\u002Bw0rd"), "Päss+w0rd");
        assert_eq!(read_escapes(r"\u0022q\u0022 and \\ \/"), r#""q" and \ /"#);
        // An emoji is a surrogate pair.
        assert_eq!(read_escapes(r"x\uD83D\uDE00y"), "x😀y");
    }

    #[test]
    fn xml_character_references_are_read_as_their_characters() {
        assert_eq!(read_escapes("P&#228;ss&#x2B;w0rd"), "Päss+w0rd");
        // Named entities are matched by the redaction's own escaped forms, and left here.
        assert_eq!(read_escapes("a&amp;b"), "a&amp;b");
    }

    #[test]
    fn text_escaped_twice_is_read_twice() {
        assert_eq!(read_escapes(r"P\\u00E4ss"), "Päss");
    }

    #[test]
    fn what_is_no_escape_is_left_as_it_was() {
        for text in [
            r"C:\temp\new",
            r"\u12",
            r"\uZZZZ",
            r"\uD800 alone",
            "&#;",
            "&#x110000;",
            "&#12345678901;",
            "tail \\",
            "tail &",
            "a & b",
        ] {
            assert_eq!(read_escapes(text), text, "{text:?}");
        }
    }
}
