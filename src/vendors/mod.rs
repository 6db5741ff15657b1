//! The one trait every vendor adapter implements, and the registry that builds adapters from
//! configuration.
//!
//! Invariant: adapters know nothing of pingora's server side or of the canonical HTTP layer. They
//! take canonical inputs, speak their vendor's wire format through `upstream`, and return canonical
//! results or a `Problem`. Vendor wire structs stay private to their vendor's file.

pub mod amsalem;
pub mod capillary;
pub mod cbss;
pub mod hepsiburada;
mod unescape;

/// Every vendor the gateway speaks, by the name of its connection table and its adapter.
pub const NAMES: [&str; 4] = ["cbss", "capillary", "amsalem", "hepsiburada"];

use std::borrow::Cow;
use std::time::Duration;

use async_trait::async_trait;

use crate::api::types::Identifier;
use crate::api::{ErrorCode, Problem, VendorDetail};
use crate::upstream::{UpstreamClient, UpstreamFailure, UpstreamRequest, UpstreamResponse};
use crate::wire::MediaType;

/// Per-request facts an adapter may pass on to its vendor.
#[derive(Debug)]
pub struct StepContext {
    pub request_id: crate::request_id::RequestId,
    /// The caller's language in vendor form, such as `en_US`.
    pub language: std::borrow::Cow<'static, str>,
    /// The end user's address, as the gateway sees it.
    pub client_ip: Option<std::net::IpAddr>,
    pub user_agent: Option<String>,
    /// Microseconds this request has spent in vendor calls, for its log line.
    pub upstream_us: std::sync::atomic::AtomicU64,
    /// Whether the tenant answers an unknown identifier as such (`404`) rather than with a
    /// decoy: then an adapter spends no time making that answer's timing look like a known
    /// identifier's, since the answer itself tells.
    pub reveals_unknown_identifiers: bool,
    /// When a wait for a vendor connection gives up (as `Busy`, a 503): a little before the
    /// step's `total_ms` runs out, so that the step answers that itself rather than be cut off
    /// as though the vendor were slow (`None` past the clock's range).
    pub connection_wait_ends: Option<std::time::Instant>,
}

/// `POST /reset` after validation.
#[derive(Debug, Clone)]
pub struct StartInput {
    pub identifier: Identifier,
    /// The app's device id, if it sent one. An adapter whose vendor needs one generates it when
    /// absent (only Capillary does), so the other vendors' starts do not pay for a random id.
    pub device_id: Option<String>,
}

/// `POST /reset/complete` with a vendor-issued code.
#[derive(Clone)]
pub struct CodeInput {
    pub reset_code: String,
    pub identifier: Option<Identifier>,
    pub email: Option<String>,
    pub session_id: Option<String>,
    pub new_password: String,
}

/// Never shows the code, the session or the password (see `api::types`).
impl std::fmt::Debug for CodeInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::secret::REDACTED;
        f.debug_struct("CodeInput")
            .field("reset_code", &REDACTED)
            .field("identifier", &self.identifier)
            .field("email", &self.email)
            .field("session_id", &self.session_id.as_ref().map(|_| REDACTED))
            .field("new_password", &REDACTED)
            .finish()
    }
}

/// The canonical steps, for what differs per step (such as how many vendor calls one makes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CanonicalStep {
    Start,
    Verify,
    Complete,
    CompleteWithCode,
}

impl CanonicalStep {
    pub const ALL: [CanonicalStep; 4] = [
        CanonicalStep::Start,
        CanonicalStep::Verify,
        CanonicalStep::Complete,
        CanonicalStep::CompleteWithCode,
    ];
}

/// The vendor's state for one reset, carried sealed inside the reset id.
pub type VendorState = serde_json::Value;

/// The most bytes of JSON the state of any vendor with a start (CBSS, Capillary) may take for
/// this `input`: what a start's state is padded to for a tenant that hides its vendor
/// (`vendor_details = false`), so that its reset ids are as long whichever vendor serves it.
/// (A tenant that shows its vendor names it in every problem: its ids are padded only to its own
/// adapter's `start_state_width`, which costs less to seal.)
pub fn widest_start_state(input: &StartInput) -> usize {
    cbss::START_STATE_WIDTH.max(capillary::start_state_width(input))
}

/// What an adapter's start leaves for the later steps, as the reset id will carry it. Written
/// into the sealed claims as JSON text, never built as a `VendorState` (a map, and a string for
/// each member, on every start); the later steps read it back as one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartState {
    /// `{"id": n}`: CBSS's forgot id.
    Id(u64),
    /// A JSON object serde_json wrote.
    Json(String),
    /// No state: a decoy's.
    Nothing,
}

/// Room for a `StartState` written as JSON text without an allocation.
pub type StateRoom = arrayvec::ArrayString<32>;

impl StartState {
    /// The state as JSON text, written into `room` (on the caller's stack) when it has to be.
    pub fn json<'a>(&'a self, room: &'a mut StateRoom) -> &'a str {
        match self {
            StartState::Id(id) => {
                room.clear();
                // At most 27 bytes (`{"id":` and 20 digits and `}`): always fits.
                for part in ["{\"id\":", itoa::Buffer::new().format(*id), "}"] {
                    let _ = room.try_push_str(part);
                }
                room
            }
            StartState::Json(text) => text,
            StartState::Nothing => "null",
        }
    }
}

#[async_trait]
pub trait VendorAdapter: Send + Sync {
    /// The vendor's name as it appears in problems and metrics (`cbss`, `capillary`, ...).
    fn vendor(&self) -> &'static str;

    /// How long the vendor keeps a reset session open, if it says; reset ids never outlive it.
    fn session_lifetime(&self) -> Option<Duration>;

    /// How long the vendor's one-time code lives, for a vendor that answers an expired code
    /// differently from a wrong one before the reset id expires: a decoy's verification answers
    /// as an expired one past it. `None`: an expired code is answered as a wrong one (or the
    /// code outlives the reset id).
    fn code_lifetime(&self) -> Option<Duration> {
        None
    }

    /// How many vendor calls `step` makes: the outbound budget is spent before the first, all at
    /// once, so a step is never left half done for want of budget. 0 for a step it does not have.
    fn vendor_calls(&self, step: CanonicalStep) -> u32;

    /// How many bytes of JSON the state a start returns may take, at most, for this `input`: the
    /// sealed state is padded with whitespace to it, and a decoy (an identifier the vendor does
    /// not know, which carries no state) to the same, so a reset id's length does not tell a
    /// known identifier from an unknown one. It may depend on what the caller sent (which tells
    /// the caller nothing), never on what the vendor answered. 0 for adapters whose start never
    /// conceals an unknown identifier. (A tenant that hides its vendor pads to
    /// `widest_start_state` instead, and its verification's reset id keeps that width.)
    fn start_state_width(&self, input: &StartInput) -> usize;

    /// The languages the vendor's `Language` takes, for a vendor that takes a fixed set (the
    /// first is its fallback); `None` for one that takes any `ll_RR` or none at all.
    fn languages(&self) -> Option<&[&'static str]> {
        None
    }

    /// Whether the vendor has `step` at all; a step it lacks is `501 unsupported_step` once the API
    /// key is known (and counted by the per-key limit), before the body is parsed.
    fn supports(&self, step: CanonicalStep) -> bool {
        self.vendor_calls(step) > 0
    }

    /// Refuses a start this vendor could never send (an identifier kind it does not reset by),
    /// before any limit is checked or budget spent: a request the gateway answers itself must
    /// not use up what real vendor calls need.
    fn check_start(&self, _input: &StartInput) -> Result<(), Problem> {
        Ok(())
    }

    /// Likewise for a code-flow completion (a field or header the vendor needs).
    fn check_code(&self, _ctx: &StepContext, _input: &CodeInput) -> Result<(), Problem> {
        Ok(())
    }

    /// The user a code-flow completion's code is checked against at the vendor, under whom its
    /// wrong codes are counted (code_guesses.rs). Only a user the vendor itself checks: a field
    /// it ignores would let a guesser change it at will. `None` for a vendor that finds the
    /// reset by the code alone.
    fn code_owner<'a>(&self, _input: &'a CodeInput) -> Option<&'a str> {
        None
    }

    /// Whether a refusal came before the vendor looked at the code, a one-time code at
    /// verification or a reset code in the code flow (its checks of the gateway's own request:
    /// credentials, signature or digest, clock, salt, framing). Such a refusal judged no code, so
    /// the user's cell comes back: a misconfigured connection (a rotated key, a drifting clock)
    /// must not use up every user's wrong-code allowance.
    fn refused_before_the_code(&self, _problem: &Problem) -> bool {
        false
    }

    // The step methods answer `501 unsupported_step` unless the vendor has the step. A vendor
    // declares its steps in `vendor_calls` (the flow refuses a step it lacks before calling), and
    // the conformance suite fails a vendor that declares a step it does not implement.

    /// OTP flow, step 1: ask the vendor to send a one-time code. Returns the state the later steps
    /// need. A vendor that does not know the identifier answers `identifier_not_found`.
    async fn start(&self, _ctx: &StepContext, _input: &StartInput) -> Result<StartState, Problem> {
        Err(unsupported(self.vendor(), "OTP start"))
    }

    /// OTP flow, step 2: check the code. Returns the state for completion.
    async fn verify(
        &self,
        _ctx: &StepContext,
        _state: &VendorState,
        _otp: &str,
    ) -> Result<VendorState, Problem> {
        Err(unsupported(self.vendor(), "OTP verification"))
    }

    /// OTP flow, step 3: set the new password.
    async fn complete(
        &self,
        _ctx: &StepContext,
        _state: &VendorState,
        _new_password: &str,
    ) -> Result<(), Problem> {
        Err(unsupported(self.vendor(), "reset_id completion"))
    }

    /// Code flow: set the new password with a vendor-issued reset code.
    async fn complete_with_code(
        &self,
        _ctx: &StepContext,
        _input: &CodeInput,
    ) -> Result<(), Problem> {
        Err(unsupported(self.vendor(), "reset_code completion"))
    }
}

/// The answer for a step this vendor does not have.
pub fn unsupported(vendor: &str, step: &str) -> Problem {
    Problem::new(
        ErrorCode::UnsupportedStep,
        format!("{vendor} has no {step} step for this tenant"),
    )
}

/// One vendor call: sends `request` and returns the vendor's answer, or the problem for a call
/// that failed or an answer that is about transport (throttling, 5xx, neither JSON nor XML).
pub async fn exchange(
    client: &UpstreamClient,
    vendor: &'static str,
    request: &UpstreamRequest<'_>,
) -> Result<UpstreamResponse, Problem> {
    let response = client
        .post(request)
        .await
        .map_err(|f| failure_problem(vendor, f))?;
    match status_problem(vendor, &response) {
        Some(problem) => Err(problem),
        None => Ok(response),
    }
}

/// The problem for an answer the gateway could not read.
pub fn unreadable(vendor: &'static str, status: u16, why: &str) -> Problem {
    Problem::new(
        ErrorCode::UpstreamError,
        format!("{vendor} answered something the gateway could not read ({why})"),
    )
    .with_vendor(vendor_said(vendor, status, None, None, &[]))
}

/// What the vendor said, for a problem's `vendor` member: its code and message clipped and
/// scrubbed of what the caller sent (`never_echo`).
pub fn vendor_said(
    vendor: &'static str,
    status: u16,
    code: Option<&str>,
    message: Option<&str>,
    never_echo: &[&str],
) -> VendorDetail {
    VendorDetail {
        name: vendor,
        status,
        code: code.map(|c| clip_vendor_text(c, never_echo)),
        message: message.map(|m| clip_vendor_text(m, never_echo)),
    }
}

/// A vendor's refusal as its canonical problem: the entry for `code` in the vendor's table of
/// `(code, canonical code, detail)`, or an upstream error saying the reason is unknown (`unknown`);
/// either way carrying what the vendor said.
pub fn refusal(
    table: &[(&str, ErrorCode, &'static str)],
    code: Option<&str>,
    said: VendorDetail,
    unknown: &'static str,
) -> Problem {
    let known = code.and_then(|c| table.iter().find(|(name, _, _)| *name == c));
    match known {
        Some((_, canonical, detail)) => Problem::new(*canonical, *detail),
        None => Problem::new(ErrorCode::UpstreamError, unknown),
    }
    .with_vendor(said)
}

/// Whether `problem` is what `refusal` made from `table` for one of `codes`. Decided by the detail
/// the code mapped to, not by the code shown in the `vendor` member: that is scrubbed of what the
/// caller sent, so an OTP or a new password of "INVALID" would change INVALID_SIGNATURE.
pub fn refused_for_one_of(
    table: &[(&str, ErrorCode, &'static str)],
    codes: &[&str],
    problem: &Problem,
) -> bool {
    table
        .iter()
        .any(|(code, _, detail)| codes.contains(code) && problem.detail == *detail)
}

/// Maps a failed call to its canonical problem. The detail names the vendor, not its address.
pub fn failure_problem(vendor: &'static str, failure: UpstreamFailure) -> Problem {
    match failure {
        UpstreamFailure::Unavailable(why) => Problem::new(
            ErrorCode::UpstreamUnavailable,
            format!("{vendor} could not be reached ({why})"),
        )
        .with_retry_after(1),
        UpstreamFailure::Timeout => Problem::new(
            ErrorCode::UpstreamTimeout,
            format!("{vendor} did not answer in time"),
        ),
        UpstreamFailure::Protocol(why) => Problem::new(
            ErrorCode::UpstreamError,
            format!("{vendor} answered with broken HTTP ({why})"),
        ),
        UpstreamFailure::TooLarge => Problem::new(
            ErrorCode::UpstreamError,
            format!("{vendor} answered with an oversized body"),
        ),
        UpstreamFailure::Busy => Problem::new(
            ErrorCode::UpstreamUnavailable,
            format!(
                "every connection the gateway may open to {vendor} stayed busy; try again shortly"
            ),
        )
        .with_retry_after(1),
        UpstreamFailure::Unsendable(header) => Problem::new(
            ErrorCode::UpstreamError,
            format!(
                "the request to {vendor} was not sent: its {header} header's value holds a \
                 control character (check the connection's secrets)"
            ),
        ),
    }
}

/// The longest wait a vendor's `Retry-After` is passed on as, and the shortest: a vendor's
/// mistake (`0`, or a value of years) must not tell every client to hammer it or give up.
const MOST_VENDOR_RETRY_AFTER_SECS: u64 = 3600;

/// The canonical problem for vendor answers that are about transport, not business: HTTP 429 and
/// 503 (the vendor is throttling or down), and other 5xx. `None` means "parse the body".
pub fn status_problem(vendor: &'static str, response: &UpstreamResponse) -> Option<Problem> {
    // Made only for a failure: most answers are successes and need no detail.
    let detail = || vendor_said(vendor, response.status, None, None, &[]);
    match response.status {
        429 | 503 => Some(
            Problem::new(
                ErrorCode::UpstreamUnavailable,
                format!(
                    "{vendor} is throttling or unavailable (HTTP {})",
                    response.status
                ),
            )
            .with_vendor(detail())
            .with_retry_after(
                response
                    .retry_after
                    .unwrap_or(1)
                    .clamp(1, MOST_VENDOR_RETRY_AFTER_SECS),
            ),
        ),
        500..=599 => Some(
            Problem::new(
                ErrorCode::UpstreamError,
                format!("{vendor} failed (HTTP {})", response.status),
            )
            .with_vendor(detail()),
        ),
        _ => content_type_problem(vendor, response),
    }
}

/// Vendors answer in JSON or XML: an answer that says it is anything else (an HTML error page
/// from a load balancer, say) is refused before its body is read. A missing type is tolerated.
fn content_type_problem(vendor: &'static str, response: &UpstreamResponse) -> Option<Problem> {
    let MediaType::Other(shown) = &response.content_type else {
        return None;
    };
    Some(
        Problem::new(
            ErrorCode::UpstreamError,
            format!("{vendor} answered with Content-Type {shown}, not JSON or XML"),
        )
        .with_vendor(vendor_said(vendor, response.status, None, None, &[])),
    )
}

/// Vendor messages are shown to support staff; clip them and strip anything a user sent that
/// must never be echoed (a vendor may quote the password or code it refused).
pub fn clip_vendor_text(text: &str, never_echo: &[&str]) -> String {
    // Each secret as it was sent, and as it stood escaped inside the JSON or XML request: a
    // vendor that quotes the request it refused quotes `a\"b` or `a&amp;b`, not `a"b`.
    let mut secrets: Vec<Cow<'_, str>> = Vec::with_capacity(never_echo.len());
    for secret in never_echo.iter().copied().filter(|s| !s.is_empty()) {
        let quoted_json = serde_json::to_string(secret).unwrap_or_default();
        let in_json = quoted_json
            .strip_prefix('"')
            .and_then(|s| s.strip_suffix('"'))
            .unwrap_or_default();
        // Escaped as the gateway writes XML (quotes too), and as most serializers write text.
        let in_xml = crate::xml::escape(secret);
        let in_xml_text = quick_xml::escape::partial_escape(secret);
        let forms = [
            Cow::Borrowed(secret),
            Cow::Owned(in_json.to_owned()),
            Cow::Owned(in_xml.into_owned()),
            Cow::Owned(in_xml_text.into_owned()),
        ];
        for form in forms {
            // The text is searched with its escapes read back (below): so is each form, for a
            // secret that itself holds what reads as an escape (`pa\u0041ss`, `a\"b`).
            let read = Cow::Owned(unescape::read_escapes(&form));
            for form in [form, read] {
                if !form.is_empty() && !secrets.contains(&form) {
                    secrets.push(form);
                }
            }
        }
    }
    // The longest first: a short one (a one-character code) redacted inside a long one (the
    // connection's key) would break the long one's match and leave the rest of it shown.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    // Read back to plain characters first: a quoted request may have escaped a secret's
    // characters any way JSON or XML allows (`\u002B` for `+`), once or more. Searched in one
    // pass, longest first, so that no short secret redacted early can break a long one's escape.
    let mut out: String = unescape::read_escapes(text)
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    for secret in &secrets {
        if out.contains(secret.as_ref()) {
            out = out.replace(secret.as_ref(), crate::secret::REDACTED);
        }
    }
    // Clipped only after redaction: a secret across the cut would otherwise leave its first part.
    out.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vendors_retry_after_is_passed_on_within_a_second_and_an_hour() {
        let told = |retry_after: Option<u64>| {
            let response = UpstreamResponse {
                status: 429,
                content_type: MediaType::Unstated,
                retry_after,
                body: Vec::new(),
            };
            status_problem("CBSS", &response).unwrap().retry_after
        };
        assert_eq!(told(Some(30)), Some(30));
        assert_eq!(told(None), Some(1));
        assert_eq!(told(Some(0)), Some(1));
        assert_eq!(told(Some(u64::MAX)), Some(3600));
    }

    #[test]
    fn a_start_state_is_written_whole() {
        let mut room = StateRoom::new();
        assert_eq!(
            StartState::Id(u64::MAX).json(&mut room),
            "{\"id\":18446744073709551615}"
        );
        assert_eq!(StartState::Id(7).json(&mut room), "{\"id\":7}");
        assert_eq!(StartState::Nothing.json(&mut room), "null");
        let text = StartState::Json("{\"a\":1}".into());
        assert_eq!(text.json(&mut room), "{\"a\":1}");
    }

    #[test]
    fn dotnet_timestamps_have_seven_fraction_digits_and_the_offset() {
        let offset = chrono::FixedOffset::east_opt(8 * 3600).unwrap();
        let ts = dotnet_timestamp(&offset);
        assert_eq!(ts.len(), "2024-11-18T12:34:23.6965096+08:00".len(), "{ts}");
        assert!(ts.ends_with("+08:00"));
        assert!(chrono::DateTime::parse_from_rfc3339(&ts).is_ok());
        let west = chrono::FixedOffset::west_opt(3 * 3600 + 1800).unwrap();
        assert!(dotnet_timestamp(&west).ends_with("-03:30"));
        let utc = chrono::FixedOffset::east_opt(0).unwrap();
        let before = chrono::Utc::now();
        let written = chrono::DateTime::parse_from_rfc3339(&dotnet_timestamp(&utc)).unwrap();
        let after = chrono::Utc::now();
        // Seven fraction digits: 100 ns steps, truncated.
        assert!(written >= before - chrono::Duration::nanoseconds(100) && written <= after);
    }

    #[test]
    fn vendor_text_is_clipped_and_redacted() {
        let out = clip_vendor_text("Password Secr3t! is too weak\n", &["Secr3t!"]);
        assert_eq!(out, "Password [redacted] is too weak");
        assert_eq!(clip_vendor_text(&"x".repeat(500), &[]).len(), 200);
    }

    #[test]
    fn a_secret_quoted_inside_the_request_it_was_sent_in_is_redacted_too() {
        let password = r#"Qu"o\te&<1>"#;
        // A vendor quoting the JSON request it refused, and one quoting the XML request.
        let json = r#"Bad request: {"NewPassword":"Qu\"o\\te&<1>"}"#;
        let xml = "Bad request: <NewPassword>Qu\"o\\te&amp;&lt;1&gt;</NewPassword>";
        let xml_as_sent = "Bad request: <NewPassword>Qu&quot;o\\te&amp;&lt;1&gt;</NewPassword>";
        for quoted in [json, xml, xml_as_sent] {
            let out = clip_vendor_text(quoted, &[password]);
            assert!(out.contains("[redacted]"), "{out}");
            assert!(!out.contains("te&") && !out.contains("te&amp;"), "{out}");
        }
        assert_eq!(
            clip_vendor_text(&format!("said {password}"), &[password]),
            "said [redacted]"
        );
    }

    #[test]
    fn a_short_secret_does_not_shield_a_long_one_from_redaction() {
        // The caller's one-character code comes first in the list, and occurs inside the key.
        let out = clip_vendor_text("bad key sandbox-key-7 for code 7", &["7", "sandbox-key-7"]);
        assert_eq!(out, "bad key [redacted] for code [redacted]");
    }

    #[test]
    fn a_secret_quoted_with_its_characters_escaped_is_redacted_too() {
        let password = "Päss+w0rd<1>";
        // System.Text.Json's escaping, escaped once more inside a quoted answer, and XML's
        // character references.
        for quoted in [
            r#"bad {"NewPassword":"P\u00E4ss\u002Bw0rd\u003C1\u003E"}"#,
            r#"bad {\"NewPassword\":\"P\\u00E4ss\\u002Bw0rd\\u003C1\\u003E\"}"#,
            "bad <NewPassword>P&#228;ss&#x2B;w0rd&lt;1&gt;</NewPassword>",
        ] {
            let out = clip_vendor_text(quoted, &[password]);
            assert!(out.contains("[redacted]"), "{out}");
            assert!(!out.contains("w0rd"), "{out}");
        }
        // A one-character code beside a key quoted with escapes does not break the key's match.
        let out = clip_vendor_text(r"bad key Ab\u002Bcd/ef", &["u", "2", "Ab+cd/ef"]);
        assert!(!out.contains("cd/ef"), "{out}");
        // A secret holding an escape, quoted with escapes of its own.
        let out = clip_vendor_text(r"bad p\u002B\\u0041 here", &[r"p+\u0041"]);
        assert_eq!(out, "bad [redacted] here");
        // A secret that itself holds what reads as an escape is still found as it was sent.
        for secret in [r"pa\u0041ss", r#"pa\"ss"#, "pa&#65;ss"] {
            let out = clip_vendor_text(&format!("refused {secret} here"), &[secret]);
            assert_eq!(out, "refused [redacted] here", "{secret}");
        }
    }
}

/// Now, in .NET's round-trip form with seven fractional digits and the offset, as ASP.NET vendors
/// write `DateTime` (for example `2024-11-18T12:34:23.6965096+08:00`).
pub fn dotnet_timestamp(offset: &chrono::FixedOffset) -> String {
    crate::timestamp::dotnet_now(offset.local_minus_utc())
}

/// The body format a vendor connection speaks, for vendors that accept both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum WireFormat {
    #[default]
    Json,
    Xml,
}

impl WireFormat {
    /// The media type of a body in this format, as sent in `Content-Type` and `Accept`.
    pub fn content_type(self) -> &'static str {
        match self {
            WireFormat::Json => "application/json",
            WireFormat::Xml => "application/xml",
        }
    }
}
