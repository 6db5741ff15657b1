//! The canonical request bodies, strict parsing, and input validation.
//!
//! Parsing never echoes a value from the body in an error: a wrongly typed `new_password` must not
//! come back in a problem's `detail`. Field names are echoed only when they look like field names.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use super::problem::{ErrorCode, Problem};
use crate::secret::REDACTED;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentifierKind {
    Email,
    Mobile,
    Username,
}

impl IdentifierKind {
    const NAMES: [&'static str; 3] = ["email", "mobile", "username"];

    pub fn as_str(self) -> &'static str {
        match self {
            IdentifierKind::Email => "email",
            IdentifierKind::Mobile => "mobile",
            IdentifierKind::Username => "username",
        }
    }
}

/// Read from a JSON string only. serde's derived form for an enum also takes an object naming the
/// variant (`{"email": null}`), which the contract's `"type": "email"` never is.
impl<'de> Deserialize<'de> for IdentifierKind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KindName;
        impl serde::de::Visitor<'_> for KindName {
            type Value = IdentifierKind;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("one of email, mobile, username")
            }
            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<IdentifierKind, E> {
                match name {
                    "email" => Ok(IdentifierKind::Email),
                    "mobile" => Ok(IdentifierKind::Mobile),
                    "username" => Ok(IdentifierKind::Username),
                    _ => Err(E::unknown_variant(name, &IdentifierKind::NAMES)),
                }
            }
        }
        deserializer.deserialize_str(KindName)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identifier {
    #[serde(rename = "type")]
    pub kind: IdentifierKind,
    pub value: String,
}

/// `POST /reset`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    pub identifier: Identifier,
    #[serde(default)]
    pub device_id: Option<String>,
}

/// `POST /reset/verify`
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    pub reset_id: String,
    pub otp: String,
}

/// Debug forms name what a request carries and never show a code, a reset id or a password, so a
/// request formatted into a log or a panic message leaks none of them.
impl std::fmt::Debug for VerifyRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyRequest")
            .field("reset_id", &REDACTED)
            .field("otp", &REDACTED)
            .finish()
    }
}

/// `POST /reset/complete`, in either of its two shapes: with a `reset_id` (OTP flow) or with a
/// vendor-issued `reset_code` (code flow).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompleteRequest {
    #[serde(default)]
    pub reset_id: Option<String>,
    #[serde(default)]
    pub reset_code: Option<String>,
    #[serde(default)]
    pub identifier: Option<Identifier>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub session_id: Option<String>,
    pub new_password: String,
}

impl std::fmt::Debug for CompleteRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompleteRequest")
            .field("reset_id", &self.reset_id.as_ref().map(|_| REDACTED))
            .field("reset_code", &self.reset_code.as_ref().map(|_| REDACTED))
            .field("identifier", &self.identifier)
            .field("email", &self.email)
            .field("session_id", &self.session_id.as_ref().map(|_| REDACTED))
            .field("new_password", &REDACTED)
            .finish()
    }
}

/// Parses a body strictly into `T`, then validates it.
pub fn parse<T: DeserializeOwned + Validate>(body: &[u8]) -> Result<T, Problem> {
    let value: T = crate::json::from_body(body).map_err(|e| describe_json_error(&e))?;
    if let Some((line, column)) = array_outside_strings(body) {
        return Err(invalid(format!(
            "a field has the wrong type or value (line {line}, column {column}): the request \
             bodies are JSON objects, with no arrays in them"
        )));
    }
    value.validate()?;
    Ok(value)
}

/// Where the first `[` outside a string stands in a body that parsed, as a line and a column,
/// each counted from one. serde reads a struct from an array too, by position (`["a@b.co"]` for
/// an object), past `deny_unknown_fields`; no request member is an array, so any array in a body
/// that parsed was read that way. A body with no `[` byte at all, nearly every one, is passed by
/// one search.
fn array_outside_strings(body: &[u8]) -> Option<(usize, usize)> {
    memchr::memchr(b'[', body)?;
    let (mut in_string, mut escaped) = (false, false);
    let at = body.iter().position(|&b| {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            false
        } else {
            in_string = b == b'"';
            b == b'['
        }
    })?;
    let before = &body[..at];
    let line = 1 + memchr::memchr_iter(b'\n', before).count();
    let line_start = memchr::memrchr(b'\n', before).map_or(0, |n| n + 1);
    Some((line, at - line_start + 1))
}

pub trait Validate {
    fn validate(&self) -> Result<(), Problem>;
}

fn invalid(detail: impl Into<String>) -> Problem {
    Problem::new(ErrorCode::InvalidRequest, detail)
}

impl Validate for Identifier {
    fn validate(&self) -> Result<(), Problem> {
        let v = self.value.as_str();
        let ok = match self.kind {
            IdentifierKind::Email => is_email(v),
            IdentifierKind::Mobile => is_mobile(v),
            IdentifierKind::Username => {
                !v.is_empty() && v.chars().count() <= 128 && !v.chars().any(char::is_control)
            }
        };
        if ok {
            Ok(())
        } else {
            Err(invalid(format!(
                "identifier.value is not a valid {}",
                self.kind.as_str()
            )))
        }
    }
}

impl Validate for StartRequest {
    fn validate(&self) -> Result<(), Problem> {
        self.identifier.validate()?;
        if let Some(device) = &self.device_id {
            if !is_token_like(device, 128) {
                return Err(invalid(
                    "device_id must be 1 to 128 characters of letters, digits, '.', '_', ':' or '-'",
                ));
            }
        }
        Ok(())
    }
}

impl Validate for VerifyRequest {
    fn validate(&self) -> Result<(), Problem> {
        if self.reset_id.is_empty() {
            return Err(invalid("reset_id must not be empty"));
        }
        let otp_ok = !self.otp.is_empty()
            && self.otp.len() <= 16
            && self.otp.bytes().all(|b| b.is_ascii_alphanumeric());
        if !otp_ok {
            return Err(invalid("otp must be 1 to 16 letters or digits"));
        }
        Ok(())
    }
}

impl Validate for CompleteRequest {
    fn validate(&self) -> Result<(), Problem> {
        match (&self.reset_id, &self.reset_code) {
            (Some(_), Some(_)) => {
                return Err(invalid("send either reset_id or reset_code, not both"));
            }
            (None, None) => return Err(invalid("missing field `reset_id` (or `reset_code`)")),
            (Some(id), None) => {
                if id.is_empty() {
                    return Err(invalid("reset_id must not be empty"));
                }
                if self.identifier.is_some() || self.email.is_some() || self.session_id.is_some() {
                    return Err(invalid(
                        "identifier, email and session_id go only with reset_code",
                    ));
                }
            }
            (None, Some(code)) => {
                if code.is_empty() || code.len() > 512 || code.chars().any(char::is_control) {
                    return Err(invalid(
                        "reset_code must be 1 to 512 bytes with no control characters",
                    ));
                }
                if let Some(identifier) = &self.identifier {
                    identifier.validate()?;
                }
                if let Some(email) = &self.email {
                    if !is_email(email) {
                        return Err(invalid("email is not a valid email address"));
                    }
                }
                if let Some(session) = &self.session_id {
                    if !is_token_like(session, 256) {
                        return Err(invalid("session_id must be 1 to 256 token characters"));
                    }
                }
            }
        }
        let len = self.new_password.chars().count();
        if len == 0 || len > 256 || self.new_password.chars().any(char::is_control) {
            return Err(invalid(
                "new_password must be 1 to 256 characters with no control characters",
            ));
        }
        Ok(())
    }
}

fn is_email(v: &str) -> bool {
    if v.len() > 254 {
        return false;
    }
    // ASCII (nearly every address) is checked byte by byte: its control characters and
    // whitespace are exactly the bytes up to the space and DEL.
    let has_control_or_space = if v.is_ascii() {
        v.bytes().any(|b| b <= b' ' || b == 0x7f)
    } else {
        v.chars().any(|c| c.is_control() || c.is_whitespace())
    };
    if has_control_or_space {
        return false;
    }
    // Byte searches: '@' and '.' are ASCII, so they never match inside a multi-byte character
    // (`str::rsplit_once` with a `char` pattern went through a general searcher, several times
    // the instructions for these few bytes).
    let bytes = v.as_bytes();
    match bytes.iter().rposition(|&b| b == b'@') {
        Some(at) => {
            let domain = &bytes[at + 1..];
            at > 0
                && domain.contains(&b'.')
                && domain.first() != Some(&b'.')
                && domain.last() != Some(&b'.')
        }
        None => false,
    }
}

/// A mobile number in international form: an optional '+', then 6 to 15 digits (E.164 length).
fn is_mobile(v: &str) -> bool {
    let digits = v.strip_prefix('+').unwrap_or(v);
    (6..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
}

fn is_token_like(v: &str, max: usize) -> bool {
    !v.is_empty()
        && v.len() <= max
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Turns a serde_json error into a detail that names the problem but never a value from the body.
pub fn describe_json_error(e: &serde_json::Error) -> Problem {
    use serde_json::error::Category;
    let msg = e.to_string();
    let detail = match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => format!(
            "the body is not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        ),
        Category::Data => {
            if let Some(name) = quoted_after(&msg, "unknown field `") {
                format!("unknown field `{}`", safe_name(name))
            } else if let Some(name) = quoted_after(&msg, "missing field `") {
                format!("missing field `{}`", safe_name(name))
            } else if msg.starts_with("unknown variant") {
                "identifier.type must be one of: email, mobile, username".to_string()
            } else if msg.starts_with("duplicate field") {
                match quoted_after(&msg, "duplicate field `") {
                    Some(name) => format!("duplicate field `{}`", safe_name(name)),
                    None => "a field appears twice".to_string(),
                }
            } else {
                format!(
                    "a field has the wrong type or value (line {}, column {})",
                    e.line(),
                    e.column()
                )
            }
        }
    };
    invalid(detail)
}

fn quoted_after<'a>(msg: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = msg.strip_prefix(prefix)?;
    rest.split('`').next()
}

/// Field names come from the client: echo one only if it looks like a field name.
fn safe_name(name: &str) -> &str {
    let looks_like_a_name = !name.is_empty()
        && name.len() <= 40
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if looks_like_a_name {
        name
    } else {
        "(not shown)"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_missing_fields_are_named() {
        let e = parse::<VerifyRequest>(br#"{"reset_id":"x","otp":"1","extra":1}"#).unwrap_err();
        assert_eq!(e.detail, "unknown field `extra`");
        let e = parse::<VerifyRequest>(br#"{"reset_id":"x"}"#).unwrap_err();
        assert_eq!(e.detail, "missing field `otp`");
    }

    #[test]
    fn arrays_and_objects_for_strings_are_wrong_types() {
        // serde would read each of these by position or as a variant object.
        for body in [
            &br#"["sealed-id","424242"]"#[..],
            br#" [ "sealed-id" , "424242" ] "#,
        ] {
            let e = parse::<VerifyRequest>(body).unwrap_err();
            assert!(
                e.detail.starts_with("a field has the wrong type"),
                "{}",
                e.detail
            );
            assert!(!e.detail.contains("424242"), "{}", e.detail);
        }
        let e = parse::<StartRequest>(br#"{"identifier":["email","a@b.co"]}"#).unwrap_err();
        assert_eq!(
            e.detail,
            "a field has the wrong type or value (line 1, column 15): the request bodies are \
             JSON objects, with no arrays in them"
        );
        assert!(parse::<StartRequest>(br#"[{"type":"email","value":"a@b.co"}]"#).is_err());
        assert!(parse::<CompleteRequest>(br#"[null,"code",null,null,null,"pw-123456"]"#).is_err());
        let e =
            parse::<StartRequest>(br#"{"identifier":{"type":{"email":null},"value":"a@b.co"}}"#)
                .unwrap_err();
        assert!(
            e.detail.starts_with("a field has the wrong type"),
            "{}",
            e.detail
        );
        // An optional member sent as `null` is read as absent, as clients generated from the
        // OpenAPI document often send unset members.
        let absent: StartRequest =
            parse(br#"{"identifier":{"type":"email","value":"a@b.co"},"device_id":null}"#).unwrap();
        assert!(absent.device_id.is_none());
        // A `[` inside a string, escaped quotes included, is a character like any other, and
        // the unknown variant is still named as one.
        let ok: StartRequest =
            parse(br#"{"identifier":{"type":"username","value":"a\"[b]"},"device_id":"d-1"}"#)
                .unwrap();
        assert_eq!(ok.identifier.value, "a\"[b]");
        let e =
            parse::<StartRequest>(br#"{"identifier":{"type":"phone","value":"1"}}"#).unwrap_err();
        assert_eq!(
            e.detail,
            "identifier.type must be one of: email, mobile, username"
        );
        assert_eq!(
            array_outside_strings(b"{\n \"a\": \"[\",\n  \"b\": [1]}"),
            Some((3, 8))
        );
    }

    #[test]
    fn wrong_types_never_echo_the_value() {
        let e =
            parse::<CompleteRequest>(br#"{"reset_id":"x","new_password":12345678}"#).unwrap_err();
        assert!(!e.detail.contains("12345678"), "{}", e.detail);
        let e = parse::<VerifyRequest>(br#"{"reset_id":"x","otp":"1","hunter2 secret":1}"#)
            .unwrap_err();
        assert!(!e.detail.contains("hunter2"), "{}", e.detail);
    }

    #[test]
    fn debug_forms_show_no_code_reset_id_session_or_password() {
        let verify: VerifyRequest =
            parse(br#"{"reset_id":"sealed-id-77","otp":"424242"}"#).unwrap();
        let complete: CompleteRequest = parse(
            br#"{"reset_code":"vendor-code-99","identifier":{"type":"username","value":"somchai"},"session_id":"sess-55","new_password":"Hunter2-secret"}"#,
        )
        .unwrap();
        let input = crate::vendors::CodeInput {
            reset_code: "vendor-code-99".into(),
            identifier: complete.identifier.clone(),
            email: None,
            session_id: complete.session_id.clone(),
            new_password: complete.new_password.clone(),
        };
        let shown = format!("{verify:?} {complete:?} {input:?}");
        for secret in [
            "sealed-id-77",
            "424242",
            "vendor-code-99",
            "sess-55",
            "Hunter2-secret",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("somchai"), "{shown}");
    }

    #[test]
    fn identifiers_are_validated_by_kind() {
        let ok = |kind: IdentifierKind, value: &str| {
            Identifier {
                kind,
                value: value.into(),
            }
            .validate()
            .is_ok()
        };
        assert!(ok(IdentifierKind::Email, "a@example.com"));
        assert!(!ok(IdentifierKind::Email, "a@example"));
        assert!(ok(IdentifierKind::Mobile, "+66812345678"));
        assert!(!ok(IdentifierKind::Mobile, "0812-345"));
        assert!(!ok(IdentifierKind::Username, ""));
    }

    #[test]
    fn email_addresses_refuse_every_control_and_space_character() {
        // The ASCII path and the Unicode path must refuse the same characters.
        for c in (0u32..=0x3000).filter_map(char::from_u32) {
            let address = format!("a{c}b@example.com");
            let refused = c.is_control() || c.is_whitespace();
            assert_eq!(!is_email(&address), refused, "U+{:04X}", c as u32);
        }
    }

    #[test]
    fn email_addresses_split_at_their_last_at_sign() {
        // The byte search decides as a split at the last '@' by characters did.
        let by_chars = |v: &str| match v.rsplit_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
            }
            None => false,
        };
        for v in [
            "a@b.co",
            "@b.co",
            "a@",
            "a@.co",
            "a@co.",
            "a@co",
            "a@b@c.d",
            "a@b.c@d",
            "ü@ö.de",
            "ü@ö",
            "@",
            "a.b@c",
            "jörg@beispiel.de",
            "a@b..c",
            "ab",
            "",
            "😀@😀.😀",
            "a@😀.",
        ] {
            assert_eq!(is_email(v), by_chars(v), "{v:?}");
        }
    }

    #[test]
    fn complete_takes_exactly_one_of_reset_id_and_reset_code() {
        assert!(parse::<CompleteRequest>(br#"{"reset_id":"x","new_password":"p"}"#).is_ok());
        assert!(parse::<CompleteRequest>(br#"{"reset_code":"c","new_password":"p"}"#).is_ok());
        assert!(parse::<CompleteRequest>(br#"{"new_password":"p"}"#).is_err());
        assert!(parse::<CompleteRequest>(
            br#"{"reset_id":"x","reset_code":"c","new_password":"p"}"#
        )
        .is_err());
    }
}
