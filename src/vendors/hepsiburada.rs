//! Hepsiburada: `POST api/Customer/PasswordChange`. The user arrived from a reset link carrying a
//! change-request id and sets a new password with it. The end user's address and user agent go
//! with the request.
//!
//! Answers carry `Code` (PasswordChangeResponseCode: a number in JSON, its name in XML), `Success`,
//! `IsValid` and message lists. Only 9000 (PasswordUsedBefore) is known; other codes are mapped by
//! `Success`/`IsValid` (invalid: the password was refused; valid but unsuccessful: the change
//! request was not accepted), and the vendor's code is kept in the problem's `vendor` member.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{
    exchange, unreadable, vendor_said, CanonicalStep, CodeInput, StartInput, StepContext,
    VendorAdapter, WireFormat,
};
use crate::api::{ErrorCode, Problem};
use crate::upstream::{UpstreamClient, UpstreamRequest};
use crate::xml;

const VENDOR: &str = "hepsiburada";
const PATH: &str = "api/Customer/PasswordChange";
const NS_REQUEST: &str = "http://schemas.datacontract.org/2004/07/BusinessLayer.Dto.Request";

#[derive(Debug, Clone)]
pub struct HepsiburadaSettings {
    pub format: WireFormat,
    /// The value of `RequestFromIdentityServer`.
    pub request_from_identity_server: bool,
}

pub struct Hepsiburada {
    settings: HepsiburadaSettings,
    client: UpstreamClient,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct JsonRequest<'a> {
    request_from_identity_server: bool,
    password: &'a str,
    change_request_id: &'a str,
    #[serde(rename = "IPAddress")]
    ip_address: &'a str,
    user_agent: &'a str,
    permanent_session_id: &'a str,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct JsonAnswer {
    #[serde(default)]
    code: Option<serde_json::Value>,
    success: bool,
    is_valid: bool,
    #[serde(default)]
    exception_message_list: Option<Vec<String>>,
}

/// A parsed answer, whichever format it came in.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    code: Option<String>,
    success: bool,
    is_valid: bool,
    message: Option<String>,
}

/// Reads a Hepsiburada answer to its canonical outcome. The adapter's own reader, public for
/// benchmarks and fuzzing.
pub fn read_answer(status: u16, body: &[u8], never_echo: &[&str]) -> Result<(), Problem> {
    let answer = parse_answer(body).map_err(|why| unreadable(VENDOR, status, &why))?;
    if answer.success && answer.is_valid && (200..300).contains(&status) {
        return Ok(());
    }
    let vendor = vendor_said(
        VENDOR,
        status,
        answer.code.as_deref(),
        answer.message.as_deref(),
        never_echo,
    );
    let (code, detail) = failure(&answer);
    Err(Problem::new(code, detail).with_vendor(vendor))
}

fn parse_answer(body: &[u8]) -> Result<Answer, String> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {
            let a: JsonAnswer =
                crate::json::from_body(body).map_err(|_| "bad JSON answer".to_string())?;
            let code = a.code.and_then(|c| match c {
                serde_json::Value::Number(n) => Some(n.to_string()),
                serde_json::Value::String(s) => Some(s),
                _ => None,
            });
            Ok(Answer {
                code,
                success: a.success,
                is_valid: a.is_valid,
                message: a.exception_message_list.and_then(|l| l.into_iter().next()),
            })
        }
        Some(b'<') => {
            let root = xml::parse(body).map_err(|e| e.to_string())?;
            let flag = |name: &str| match root.child_text(name) {
                Some("true") => Ok(true),
                Some("false") => Ok(false),
                _ => Err(format!("no {name} in the XML answer")),
            };
            Ok(Answer {
                code: root.child_text("Code").map(str::to_string),
                success: flag("Success")?,
                is_valid: flag("IsValid")?,
                message: root
                    .child("ExceptionMessageList")
                    .and_then(|l| l.children.first())
                    .map(|m| m.text.trim().to_string()),
            })
        }
        _ => Err("neither JSON nor XML".into()),
    }
}

/// The canonical problem for an unsuccessful answer.
fn failure(answer: &Answer) -> (ErrorCode, &'static str) {
    match answer.code.as_deref() {
        Some("9000") | Some("PasswordUsedBefore") => (
            ErrorCode::PasswordReused,
            "the new password was used before",
        ),
        _ if !answer.is_valid => (
            ErrorCode::PasswordRejected,
            "Hepsiburada found the new password invalid",
        ),
        // The request itself was valid, so what failed is the change request: wrong, spent or
        // expired, which Hepsiburada's answers do not tell apart. The code was not accepted.
        _ => (
            ErrorCode::InvalidOtp,
            "Hepsiburada did not accept this change request (wrong, spent or expired)",
        ),
    }
}

impl HepsiburadaSettings {
    /// The request body for `input` from the end user at `client_ip` with `user_agent`, built by
    /// the code a completion runs. Public for the benchmarks, which measure the adapter's own
    /// request building.
    #[doc(hidden)]
    pub fn request_body(
        &self,
        input: &CodeInput,
        client_ip: Option<std::net::IpAddr>,
        user_agent: &str,
    ) -> Vec<u8> {
        let ip = client_ip.map(|ip| ip.to_string()).unwrap_or_default();
        self.body(&JsonRequest {
            request_from_identity_server: self.request_from_identity_server,
            password: &input.new_password,
            change_request_id: &input.reset_code,
            ip_address: &ip,
            user_agent,
            permanent_session_id: input.session_id.as_deref().unwrap_or(""),
        })
    }

    fn body(&self, req: &JsonRequest<'_>) -> Vec<u8> {
        match self.format {
            WireFormat::Json => serde_json::to_vec(req).expect("the request serializes"),
            // DataContract XML: members in alphabetical order.
            WireFormat::Xml => format!(
                "<PasswordChangeRequest xmlns:i=\"http://www.w3.org/2001/XMLSchema-instance\" xmlns=\"{NS_REQUEST}\">\
                 <ChangeRequestId>{}</ChangeRequestId><IPAddress>{}</IPAddress><Password>{}</Password>\
                 <PermanentSessionId>{}</PermanentSessionId><RequestFromIdentityServer>{}</RequestFromIdentityServer>\
                 <UserAgent>{}</UserAgent></PasswordChangeRequest>",
                xml::escape(req.change_request_id),
                xml::escape(req.ip_address),
                xml::escape(req.password),
                xml::escape(req.permanent_session_id),
                req.request_from_identity_server,
                xml::escape(req.user_agent),
            )
            .into_bytes(),
        }
    }
}

impl Hepsiburada {
    pub fn new(settings: HepsiburadaSettings, client: UpstreamClient) -> Self {
        Hepsiburada { settings, client }
    }
}

/// The end user's agent. Hepsiburada records who changed the password: without the agent there
/// is nothing true to send, so the request is refused rather than sent half filled.
fn end_users_agent(ctx: &StepContext) -> Result<&str, Problem> {
    let user_agent = ctx.user_agent.as_deref().unwrap_or("");
    if user_agent.trim().is_empty() {
        return Err(Problem::new(
            ErrorCode::InvalidRequest,
            "this tenant's vendor needs the end user's User-Agent header",
        ));
    }
    Ok(user_agent)
}

#[async_trait]
impl VendorAdapter for Hepsiburada {
    fn vendor(&self) -> &'static str {
        VENDOR
    }

    fn session_lifetime(&self) -> Option<Duration> {
        None
    }

    fn check_code(&self, ctx: &StepContext, _input: &CodeInput) -> Result<(), Problem> {
        end_users_agent(ctx).map(|_| ())
    }

    fn start_state_width(&self, _input: &StartInput) -> usize {
        // It has no OTP start, so no decoy to match.
        0
    }

    fn vendor_calls(&self, step: CanonicalStep) -> u32 {
        match step {
            CanonicalStep::CompleteWithCode => 1,
            _ => 0,
        }
    }

    async fn complete_with_code(
        &self,
        ctx: &StepContext,
        input: &CodeInput,
    ) -> Result<(), Problem> {
        let user_agent = end_users_agent(ctx)?;
        let body = self.settings.request_body(input, ctx.client_ip, user_agent);
        let content_type = self.settings.format.content_type();
        let response = exchange(
            &self.client,
            VENDOR,
            &UpstreamRequest {
                endpoint: "PasswordChange",
                path_and_query: PATH,
                content_type,
                body: &body,
                headers: &[("X-Request-Id", ctx.request_id.as_str())],
                timing: Some(&ctx.upstream_us),
                deadline: ctx.connection_wait_ends,
                reserved: None,
            },
        )
        .await?;
        // Nor the permanent session id, a credential of the end user's as the code is.
        let never_echo = [
            input.new_password.as_str(),
            input.reset_code.as_str(),
            input.session_id.as_deref().unwrap_or(""),
        ];
        read_answer(response.status, &response.body, &never_echo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_in_both_formats_and_map() {
        let json = br#"{"Email":"e","Code":9000,"ExceptionMessageList":["Used before"],"IsValid":true,"Success":false}"#;
        let a = parse_answer(json).unwrap();
        assert_eq!(a.code.as_deref(), Some("9000"));
        assert_eq!(failure(&a).0, ErrorCode::PasswordReused);
        let xml = br#"<PasswordChangeResponse xmlns="urn:x"><Code>PasswordUsedBefore</Code><ExceptionMessageList xmlns:d2p1="urn:a"><d2p1:string>Used</d2p1:string></ExceptionMessageList><IsValid>true</IsValid><Success>false</Success></PasswordChangeResponse>"#;
        let a = parse_answer(xml).unwrap();
        assert_eq!(a.message.as_deref(), Some("Used"));
        assert_eq!(failure(&a).0, ErrorCode::PasswordReused);
        let invalid = Answer {
            code: Some("9002".into()),
            success: false,
            is_valid: false,
            message: None,
        };
        assert_eq!(failure(&invalid).0, ErrorCode::PasswordRejected);
        let spent = Answer {
            is_valid: true,
            ..invalid
        };
        assert_eq!(failure(&spent).0, ErrorCode::InvalidOtp);
    }

    /// The vendor's documented success samples carry Code 9000 (PasswordUsedBefore), the enum's
    /// lowest value, beside Success and IsValid true: a success, not a reused password.
    #[test]
    fn the_documented_success_samples_are_successes_whatever_their_code() {
        let json =
            br#"{"Email":"e","Code":9000,"ExceptionMessageList":[],"IsValid":true,"Success":true}"#;
        assert!(read_answer(200, json, &[]).is_ok());
        let xml = br#"<PasswordChangeResponse xmlns="urn:x"><Code>PasswordUsedBefore</Code><ExceptionMessageList xmlns:d2p1="urn:a"/><IsValid>true</IsValid><Success>true</Success></PasswordChangeResponse>"#;
        assert!(read_answer(200, xml, &[]).is_ok());
    }

    #[test]
    fn json_requests_use_the_documented_names() {
        let r = JsonRequest {
            request_from_identity_server: true,
            password: "p",
            change_request_id: "c",
            ip_address: "203.0.113.7",
            user_agent: "ua",
            permanent_session_id: "",
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"RequestFromIdentityServer": true, "Password": "p",
                "ChangeRequestId": "c", "IPAddress": "203.0.113.7", "UserAgent": "ua",
                "PermanentSessionId": ""})
        );
    }
}
