//! Capillary Auth Engine: token/generate, otp/generate, otp/validate and password/forget, on the
//! mobile (`/auth/v1/...`) or web (`/auth/v1/web/...`) paths.
//!
//! Business errors arrive as `status.success = false` with a `status.code` (often under HTTP 200);
//! each documented 15xx code maps to the canonical problem it means. The operator's API key travels
//! in a configurable header; Capillary counts its rate limit per that key.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{
    exchange, failure_problem, unreadable, vendor_said, CanonicalStep, StartInput, StartState,
    StepContext, VendorAdapter, VendorState,
};
use crate::api::types::IdentifierKind;
use crate::api::{ErrorCode, Problem};
use crate::secret::Secret;
use crate::upstream::{Reserved, UpstreamClient, UpstreamRequest};

const VENDOR: &str = "capillary";

/// Which of Capillary's two path families a tenant uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// `auth/v1/web/...`: deviceId optional (the gateway sends one anyway).
    #[default]
    Web,
    /// `auth/v1/...`: deviceId mandatory.
    Mobile,
}

#[derive(Debug, Clone)]
pub struct CapillarySettings {
    pub brand: String,
    pub variant: Variant,
    pub api_key: Secret,
    pub api_key_header: String,
    /// Capillary's sessionId lives 15 minutes.
    pub session_lifetime: Duration,
}

pub struct Capillary {
    settings: CapillarySettings,
    client: UpstreamClient,
}

#[derive(Clone, Copy)]
enum Endpoint {
    TokenGenerate,
    OtpGenerate,
    OtpValidate,
    PasswordForget,
}

impl Endpoint {
    fn path(self) -> &'static str {
        match self {
            Endpoint::TokenGenerate => "token/generate",
            Endpoint::OtpGenerate => "otp/generate",
            Endpoint::OtpValidate => "otp/validate",
            Endpoint::PasswordForget => "password/forget",
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Body<'a> {
    identifier_type: &'a str,
    identifier_value: &'a str,
    device_id: &'a str,
    brand: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    otp: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    password: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    confirm_password: Option<&'a str>,
}

#[derive(Deserialize)]
struct Answer {
    status: Status,
    #[serde(default)]
    user: Option<User>,
}

#[derive(Deserialize)]
struct Status {
    success: bool,
    #[serde(default)]
    code: Option<serde_json::Value>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct User {
    #[serde(default)]
    session_id: Option<String>,
}

/// The longest session id a reset id is sized for: Capillary's are `P-` and a UUID (38
/// characters). A longer one still works; only its reset id is longer than a decoy's.
const MAX_SESSION_ID: usize = 64;

/// The length of a device id made for a reset (`request_id::generate`: 32 hex digits).
const GENERATED_DEVICE_ID: usize = 32;

/// The most JSON a start's `State` takes for `input`: `{"s":"..","d":"..","t":"..","v":".."}`,
/// that is the punctuation and names, a session id of up to MAX_SESSION_ID characters, and the
/// device id and identifier at twice their length (every character escaped, at worst;
/// validation admits no control characters, which would take six). Those two the caller sent,
/// so a width sized by them tells the caller nothing.
pub fn start_state_width(input: &StartInput) -> usize {
    let device = input
        .device_id
        .as_ref()
        .map_or(GENERATED_DEVICE_ID, |d| 2 * d.len());
    29 + MAX_SESSION_ID + device + "USERNAME".len() + 2 * input.identifier.value.len()
}

/// The reset's state at Capillary, sealed in the reset id between steps.
#[derive(Serialize, Deserialize)]
struct State {
    #[serde(rename = "s")]
    session_id: String,
    #[serde(rename = "d")]
    device_id: String,
    #[serde(rename = "t")]
    identifier_type: String,
    #[serde(rename = "v")]
    identifier_value: String,
}

/// Capillary's documented status codes and their canonical meaning.
const STATUS_CODES: &[(u32, ErrorCode, &str)] = &[
    (
        1505,
        ErrorCode::ResetExpired,
        "Capillary no longer knows this reset's session",
    ),
    (1506, ErrorCode::InvalidOtp, "the one-time code is wrong"),
    (
        1507,
        ErrorCode::UpstreamError,
        "Capillary says the identifier does not match the session",
    ),
    (
        1508,
        ErrorCode::UpstreamError,
        "Capillary says the device does not match the session",
    ),
    (
        1509,
        ErrorCode::UpstreamError,
        "Capillary says the brand does not match: check the connection's brand",
    ),
    (
        1515,
        ErrorCode::IdentifierNotFound,
        "no account has this identifier",
    ),
    (
        1518,
        ErrorCode::AttemptsExceeded,
        "too many wrong codes for this reset",
    ),
    (
        1521,
        ErrorCode::UpstreamError,
        "Capillary says the password and its confirmation differ",
    ),
    (
        1524,
        ErrorCode::UnsupportedStep,
        "passwords are not enabled for this brand at Capillary",
    ),
    (
        1527,
        ErrorCode::PasswordReused,
        "the new password equals the old one",
    ),
    (
        1528,
        ErrorCode::PasswordRejected,
        "Capillary says the password is invalid",
    ),
    (
        1529,
        ErrorCode::ResetExpired,
        "the reset's session expired at Capillary",
    ),
    (
        1530,
        ErrorCode::AttemptsExceeded,
        "too many password attempts for this reset",
    ),
    (
        1532,
        ErrorCode::UpstreamError,
        "Capillary was unable to reset the password",
    ),
    (
        1534,
        ErrorCode::RateLimited,
        "Capillary will send no more codes to this customer for now",
    ),
    (
        1542,
        ErrorCode::PasswordRejected,
        "the new password does not meet the brand's requirements",
    ),
    (
        1546,
        ErrorCode::InvalidRequest,
        "Capillary does not accept this identifier type",
    ),
];

/// The canonical problem for a Capillary status code (`None` for an unknown code).
pub fn problem_for_code(code: u32) -> Option<(ErrorCode, &'static str)> {
    STATUS_CODES
        .iter()
        .find(|(c, _, _)| *c == code)
        .map(|(_, canonical, detail)| (*canonical, *detail))
}

/// Reads a Capillary answer to its canonical outcome: the sessionId it carries on success (if
/// any), or the problem it means. Public for benchmarks and fuzzing; never panics.
pub fn read_answer(
    status: u16,
    body: &[u8],
    never_echo: &[&str],
) -> Result<Option<String>, Problem> {
    let answer = parse(status, body)?;
    judge(status, answer, never_echo).map(|a| a.user.and_then(|u| u.session_id))
}

/// Parses an answer's body; an unreadable 401/403 names the API key as the likely cause.
fn parse(status: u16, body: &[u8]) -> Result<Answer, Problem> {
    crate::json::from_body(body).map_err(|_| {
        let why = if matches!(status, 401 | 403) {
            "a refusal of the gateway's API key: check the connection's api_key_env"
        } else {
            "not Capillary's JSON"
        };
        unreadable(VENDOR, status, why)
    })
}

/// The window of Capillary's limit on codes per customer (1534): an upper bound for its
/// `Retry-After`, as Capillary names no time.
const OTP_LIMIT_WINDOW_SECS: u64 = 3600;

/// Capillary's refusal of the gateway's API key, which comes before it looks at any code.
const API_KEY_REFUSED: &str =
    "Capillary refused the gateway's API key: check the connection's api_key_env";

/// A successful answer, or the canonical problem its status code means.
fn judge(status: u16, answer: Answer, never_echo: &[&str]) -> Result<Answer, Problem> {
    if answer.status.success && (200..300).contains(&status) {
        return Ok(answer);
    }
    let code = answer.status.code.as_ref().and_then(|c| match c {
        serde_json::Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    });
    let detail = vendor_said(
        VENDOR,
        status,
        code.map(|c| c.to_string()).as_deref(),
        answer.status.message.as_deref(),
        never_echo,
    );
    Err(match code.and_then(problem_for_code) {
        // Capillary does not say when it will send this customer codes again; its count is of
        // codes per customer per hour (assumed, as its sandbox models it), so within the hour.
        Some((canonical, text)) if code == Some(1534) => Problem::new(canonical, text)
            .with_vendor(detail)
            .with_retry_after(OTP_LIMIT_WINDOW_SECS),
        Some((canonical, text)) => Problem::new(canonical, text).with_vendor(detail),
        // The key refused: 401 or 403 with no code of its own, or the status repeated as the code
        // (as Capillary's gateway answers). Any other code under them is one the gateway does not
        // know, which could hide a wrong code.
        None if matches!(status, 401 | 403) && code.is_none_or(|c| c == u32::from(status)) => {
            Problem::new(ErrorCode::UpstreamError, API_KEY_REFUSED).with_vendor(detail)
        }
        None => Problem::new(
            ErrorCode::UpstreamError,
            "capillary refused the request with a status the gateway does not know",
        )
        .with_vendor(detail),
    })
}

impl CapillarySettings {
    fn path(&self, endpoint: Endpoint) -> String {
        match self.variant {
            Variant::Web => format!("auth/v1/web/{}", endpoint.path()),
            Variant::Mobile => format!("auth/v1/{}", endpoint.path()),
        }
    }

    /// A call's path and JSON body, as they go on the wire.
    fn request(&self, endpoint: Endpoint, body: &Body<'_>) -> (String, Vec<u8>) {
        let bytes = serde_json::to_vec(body).expect("the body serializes");
        (self.path(endpoint), bytes)
    }

    /// A start's first request (token/generate: path, body) for `input`, built by the code a
    /// start runs. Public for the benchmarks, which measure the adapter's own request building.
    #[doc(hidden)]
    pub fn start_request(&self, input: &StartInput) -> (String, Vec<u8>) {
        let who = StartIdentity::of(input);
        self.request(Endpoint::TokenGenerate, &who.body(self))
    }
}

/// Whom a start asks Capillary about: the identifier as Capillary writes it, and the device the
/// session is tied to.
struct StartIdentity {
    identifier_type: &'static str,
    value: String,
    device_id: String,
}

impl StartIdentity {
    fn of(input: &StartInput) -> Self {
        let (identifier_type, value) = match input.identifier.kind {
            IdentifierKind::Email => ("EMAIL", input.identifier.value.clone()),
            // Capillary writes mobile numbers as digits with the country code and no '+'.
            IdentifierKind::Mobile => (
                "MOBILE",
                input.identifier.value.trim_start_matches('+').to_string(),
            ),
            IdentifierKind::Username => ("USERNAME", input.identifier.value.clone()),
        };
        // Capillary ties a session to a device: the app's id, or one made for this reset.
        let device_id = input
            .device_id
            .clone()
            .unwrap_or_else(crate::request_id::generate);
        StartIdentity {
            identifier_type,
            value,
            device_id,
        }
    }

    /// The body of a start's calls, before Capillary has given a session.
    fn body<'a>(&'a self, settings: &'a CapillarySettings) -> Body<'a> {
        Body {
            identifier_type: self.identifier_type,
            identifier_value: &self.value,
            device_id: &self.device_id,
            brand: &settings.brand,
            session_id: None,
            otp: None,
            password: None,
            confirm_password: None,
        }
    }
}

impl Capillary {
    pub fn new(settings: CapillarySettings, client: UpstreamClient) -> Self {
        Capillary { settings, client }
    }

    /// One call, on `connection` when the step holds one for all its calls, else on one taken
    /// for this call alone.
    async fn call(
        &self,
        ctx: &StepContext,
        connection: Option<&Reserved>,
        endpoint: Endpoint,
        body: &Body<'_>,
        caller_secret: Option<&str>,
    ) -> Result<Answer, Problem> {
        let (path, bytes) = self.settings.request(endpoint, body);
        let response = exchange(
            &self.client,
            VENDOR,
            &UpstreamRequest {
                endpoint: endpoint.path(),
                path_and_query: &path,
                content_type: "application/json",
                body: &bytes,
                headers: &[
                    (
                        self.settings.api_key_header.as_str(),
                        self.settings.api_key.expose(),
                    ),
                    ("X-Request-Id", ctx.request_id.as_str()),
                ],
                timing: Some(&ctx.upstream_us),
                deadline: ctx.connection_wait_ends,
                reserved: connection,
            },
        )
        .await?;
        let answer = parse(response.status, &response.body)?;
        // A vendor message may quote what it was sent: neither the caller's password or code,
        // nor the connection's API key, nor the session (sealed in the reset id, never shown)
        // may reach the caller.
        let never_echo = [
            caller_secret.unwrap_or(""),
            self.settings.api_key.expose(),
            body.session_id.unwrap_or(""),
        ];
        judge(response.status, answer, &never_echo)
    }

    fn body<'a>(&'a self, state: &'a State) -> Body<'a> {
        Body {
            identifier_type: &state.identifier_type,
            identifier_value: &state.identifier_value,
            device_id: &state.device_id,
            brand: &self.settings.brand,
            session_id: Some(&state.session_id),
            otp: None,
            password: None,
            confirm_password: None,
        }
    }
}

fn open_state(state: &VendorState) -> Result<State, Problem> {
    serde_json::from_value(state.clone()).map_err(|_| {
        Problem::new(
            ErrorCode::InvalidResetId,
            "the reset id carries no session for Capillary",
        )
    })
}

#[async_trait]
impl VendorAdapter for Capillary {
    fn vendor(&self) -> &'static str {
        VENDOR
    }

    fn session_lifetime(&self) -> Option<Duration> {
        Some(self.settings.session_lifetime)
    }

    fn vendor_calls(&self, step: CanonicalStep) -> u32 {
        match step {
            CanonicalStep::Start => 2,
            CanonicalStep::Verify | CanonicalStep::Complete => 1,
            CanonicalStep::CompleteWithCode => 0,
        }
    }

    fn start_state_width(&self, input: &StartInput) -> usize {
        start_state_width(input)
    }

    fn refused_before_the_code(&self, problem: &Problem) -> bool {
        problem.detail == API_KEY_REFUSED
    }

    async fn start(&self, ctx: &StepContext, input: &StartInput) -> Result<StartState, Problem> {
        let who = StartIdentity::of(input);
        let mut body = who.body(&self.settings);
        // Both calls on one vendor connection, taken before the first: a start that waited for
        // its second call's could give up between the two (a token made and no code sent), and
        // only a known identifier's start gets that far, so its 503 would tell it from an
        // unknown one's.
        let connection = self
            .client
            .reserve(ctx.connection_wait_ends)
            .await
            .map_err(|f| failure_problem(VENDOR, f))?;
        let asked = std::time::Instant::now();
        let token = match self
            .call(ctx, Some(&connection), Endpoint::TokenGenerate, &body, None)
            .await
        {
            Err(p) if p.code == ErrorCode::IdentifierNotFound => {
                // A known identifier's start goes on to a second call (otp/generate); an
                // unknown one's ends here. Waiting as long again as this call took, about what
                // the second would have, keeps the answer's timing from telling them apart
                // (unless the tenant reveals unknown identifiers anyway). The connection is
                // free for other calls meanwhile.
                drop(connection);
                if !ctx.reveals_unknown_identifiers {
                    tokio::time::sleep(asked.elapsed()).await;
                }
                return Err(p);
            }
            answer => answer?,
        };
        let session_id = token
            .user
            .and_then(|u| u.session_id)
            // Capillary's are `P-` and a UUID. One that JSON would have to escape (quotes,
            // backslashes, control characters) is not one of theirs, and would make this reset's
            // id longer than a decoy's (`start_state_width` counts session ids unescaped).
            .filter(|s| {
                !s.is_empty()
                    && s.len() <= 256
                    && !s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20)
            })
            .ok_or_else(|| {
                Problem::new(
                    ErrorCode::UpstreamError,
                    "capillary generated a token but returned no usable sessionId",
                )
            })?;
        body.session_id = Some(&session_id);
        self.call(ctx, Some(&connection), Endpoint::OtpGenerate, &body, None)
            .await?;
        let state = State {
            session_id: session_id.clone(),
            device_id: who.device_id,
            identifier_type: who.identifier_type.to_string(),
            identifier_value: who.value,
        };
        Ok(StartState::Json(
            serde_json::to_string(&state).expect("the state serializes"),
        ))
    }

    async fn verify(
        &self,
        ctx: &StepContext,
        state: &VendorState,
        otp: &str,
    ) -> Result<VendorState, Problem> {
        let open = open_state(state)?;
        let body = Body {
            otp: Some(otp),
            ..self.body(&open)
        };
        self.call(ctx, None, Endpoint::OtpValidate, &body, Some(otp))
            .await?;
        Ok(state.clone())
    }

    async fn complete(
        &self,
        ctx: &StepContext,
        state: &VendorState,
        new_password: &str,
    ) -> Result<(), Problem> {
        let open = open_state(state)?;
        let body = Body {
            password: Some(new_password),
            confirm_password: Some(new_password),
            ..self.body(&open)
        };
        self.call(
            ctx,
            None,
            Endpoint::PasswordForget,
            &body,
            Some(new_password),
        )
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_state_fits_the_width_a_decoy_is_padded_to() {
        use crate::api::types::Identifier;
        let input = |kind, value: &str, device_id: Option<&str>| StartInput {
            identifier: Identifier {
                kind,
                value: value.to_string(),
            },
            device_id: device_id.map(str::to_string),
        };
        let long_email = format!("{}\"\\@example.com", "q".repeat(200));
        for input in [
            input(IdentifierKind::Email, "a@b.co", None),
            input(IdentifierKind::Email, &long_email, Some(&"d".repeat(128))),
            input(IdentifierKind::Mobile, "+66812345678", Some("dev-1")),
            input(IdentifierKind::Username, "somchai", None),
        ] {
            let state = State {
                session_id: "P-".to_string() + &"0".repeat(MAX_SESSION_ID - 2),
                device_id: input
                    .device_id
                    .clone()
                    .unwrap_or_else(crate::request_id::generate),
                identifier_type: "USERNAME".into(),
                identifier_value: input.identifier.value.clone(),
            };
            let json = serde_json::to_string(&state).unwrap();
            assert!(json.len() <= start_state_width(&input), "{json}");
        }
        // The bound is tight: a state whose every identifier character is escaped, with the
        // longest type, a made device id and the longest session id sized for, fills it exactly.
        let quotes = "\"".repeat(100);
        let state = State {
            session_id: "P-".to_string() + &"0".repeat(MAX_SESSION_ID - 2),
            device_id: crate::request_id::generate(),
            identifier_type: "USERNAME".into(),
            identifier_value: quotes.clone(),
        };
        let json = serde_json::to_string(&state).unwrap();
        let width = start_state_width(&input(IdentifierKind::Email, &quotes, None));
        assert_eq!(json.len(), width, "{json}");
    }

    #[test]
    fn every_documented_code_has_a_mapping() {
        for code in [
            1505, 1506, 1507, 1508, 1509, 1515, 1518, 1521, 1524, 1527, 1528, 1529, 1530, 1532,
            1534, 1542, 1546,
        ] {
            assert!(problem_for_code(code).is_some(), "{code}");
        }
        assert_eq!(problem_for_code(1506).unwrap().0, ErrorCode::InvalidOtp);
        assert_eq!(problem_for_code(1527).unwrap().0, ErrorCode::PasswordReused);
        assert!(problem_for_code(1999).is_none());
    }

    #[test]
    fn a_status_code_is_read_as_a_number_or_as_text_with_spaces_around() {
        for code in [r#"1506"#, r#""1506""#, r#"" 1506 ""#] {
            let text = format!(r#"{{"status":{{"success":false,"code":{code},"message":"m"}}}}"#);
            let answer: Answer = serde_json::from_str(&text).unwrap();
            let problem = judge(400, answer, &[]).err().unwrap();
            assert_eq!(problem.code, ErrorCode::InvalidOtp, "{code}");
            assert_eq!(
                problem.vendor.unwrap().code.as_deref(),
                Some("1506"),
                "{code}"
            );
        }
    }

    #[test]
    fn bodies_use_capillary_field_names() {
        let body = Body {
            identifier_type: "MOBILE",
            identifier_value: "919999922332",
            device_id: "d1",
            brand: "DocDemo",
            session_id: Some("P-1"),
            otp: None,
            password: Some("pw"),
            confirm_password: Some("pw"),
        };
        let v = serde_json::to_value(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"identifierType": "MOBILE", "identifierValue": "919999922332",
                "deviceId": "d1", "brand": "DocDemo", "sessionId": "P-1",
                "password": "pw", "confirmPassword": "pw"})
        );
    }
}
