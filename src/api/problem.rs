//! `Problem`: the one error type of the request path, and the one place it becomes an
//! `application/problem+json` body (RFC 9457).
//!
//! Vendor adapters, the flow and the HTTP layer all return `Problem`; nothing else renders errors.

use serde::Serialize;

use crate::limit::{LimitName, LimitState};

/// The stable machine codes of the canonical contract, each with its HTTP status and title.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    InvalidRequest,
    InvalidResetId,
    Unauthenticated,
    NotFound,
    MethodNotAllowed,
    WrongStep,
    ResetExpired,
    PayloadTooLarge,
    UnsupportedMediaType,
    InvalidOtp,
    PasswordRejected,
    PasswordReused,
    IdentifierNotFound,
    RateLimited,
    AttemptsExceeded,
    Internal,
    UnsupportedStep,
    UpstreamError,
    UpstreamUnavailable,
    UpstreamTimeout,
}

impl ErrorCode {
    /// Every code, in the order the OpenAPI document lists them.
    pub const ALL: [ErrorCode; 20] = [
        ErrorCode::InvalidRequest,
        ErrorCode::InvalidResetId,
        ErrorCode::Unauthenticated,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::WrongStep,
        ErrorCode::ResetExpired,
        ErrorCode::PayloadTooLarge,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::InvalidOtp,
        ErrorCode::PasswordRejected,
        ErrorCode::PasswordReused,
        ErrorCode::IdentifierNotFound,
        ErrorCode::RateLimited,
        ErrorCode::AttemptsExceeded,
        ErrorCode::Internal,
        ErrorCode::UnsupportedStep,
        ErrorCode::UpstreamError,
        ErrorCode::UpstreamUnavailable,
        ErrorCode::UpstreamTimeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidResetId => "invalid_reset_id",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::WrongStep => "wrong_step",
            ErrorCode::ResetExpired => "reset_expired",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::InvalidOtp => "invalid_otp",
            ErrorCode::PasswordRejected => "password_rejected",
            ErrorCode::PasswordReused => "password_reused",
            ErrorCode::IdentifierNotFound => "identifier_not_found",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::AttemptsExceeded => "attempts_exceeded",
            ErrorCode::Internal => "internal_error",
            ErrorCode::UnsupportedStep => "unsupported_step",
            ErrorCode::UpstreamError => "upstream_error",
            ErrorCode::UpstreamUnavailable => "upstream_unavailable",
            ErrorCode::UpstreamTimeout => "upstream_timeout",
        }
    }

    pub fn status(self) -> u16 {
        match self {
            ErrorCode::InvalidRequest | ErrorCode::InvalidResetId => 400,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::NotFound | ErrorCode::IdentifierNotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::WrongStep => 409,
            ErrorCode::ResetExpired => 410,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::InvalidOtp | ErrorCode::PasswordRejected | ErrorCode::PasswordReused => 422,
            ErrorCode::RateLimited | ErrorCode::AttemptsExceeded => 429,
            ErrorCode::Internal => 500,
            ErrorCode::UnsupportedStep => 501,
            ErrorCode::UpstreamError => 502,
            ErrorCode::UpstreamUnavailable => 503,
            ErrorCode::UpstreamTimeout => 504,
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "The request is malformed",
            ErrorCode::InvalidResetId => "The reset id is not valid",
            ErrorCode::Unauthenticated => "A valid API key is required",
            ErrorCode::NotFound => "No such resource",
            ErrorCode::MethodNotAllowed => "Method not allowed on this resource",
            ErrorCode::WrongStep => "The reset id is not ready for this step",
            ErrorCode::ResetExpired => "The reset has expired",
            ErrorCode::PayloadTooLarge => "The request body is too large",
            ErrorCode::UnsupportedMediaType => "The request body must be JSON",
            ErrorCode::InvalidOtp => "The one-time code is wrong",
            ErrorCode::PasswordRejected => "The new password does not meet the password policy",
            ErrorCode::PasswordReused => "The new password was used before",
            ErrorCode::IdentifierNotFound => "No account has this identifier",
            ErrorCode::RateLimited => "Too many requests",
            ErrorCode::AttemptsExceeded => "Too many wrong attempts for this reset",
            ErrorCode::Internal => "The gateway failed unexpectedly",
            ErrorCode::UnsupportedStep => "The tenant's vendor has no such step",
            ErrorCode::UpstreamError => "The vendor answered unexpectedly",
            ErrorCode::UpstreamUnavailable => "The vendor is unavailable",
            ErrorCode::UpstreamTimeout => "The vendor did not answer in time",
        }
    }
}

impl ErrorCode {
    /// The one detail a tenant with `vendor_details = false` gets for a code whose detail each
    /// vendor's adapter words its own way ("the vendor says the password is invalid" against
    /// "does not meet the vendor's policy", or naming a vendor's own settings): with the vendor's
    /// name taken out, the wording would still tell the vendors apart. `None` for codes whose
    /// details the gateway writes alike for every vendor. (A refusal by one of the gateway's own
    /// limits keeps its detail: it is worded alike for every vendor.)
    pub fn vendor_neutral_detail(self) -> Option<&'static str> {
        Some(match self {
            ErrorCode::ResetExpired => "the one-time code or the reset has expired; start again",
            ErrorCode::IdentifierNotFound => "no account has this identifier",
            ErrorCode::PasswordRejected => "the new password does not meet the password policy",
            ErrorCode::PasswordReused => "the new password was used before",
            ErrorCode::UpstreamError => {
                "the vendor answered unexpectedly: the gateway's operators can find what it said \
                 by the request_id"
            }
            _ => return None,
        })
    }
}

/// What the vendor said, carried in the problem's `vendor` member for support staff.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct VendorDetail {
    pub name: &'static str,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A canonical error, on its way to becoming a problem+json response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub code: ErrorCode,
    pub detail: String,
    pub vendor: Option<Box<VendorDetail>>,
    /// Seconds for the `Retry-After` header, when the caller should come back later.
    pub retry_after: Option<u64>,
    /// The gateway limit that refused the request, named in the body and the RateLimit fields.
    pub limit: Option<Box<LimitState>>,
}

#[derive(Serialize)]
struct ProblemBody<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'static str,
    status: u16,
    code: &'static str,
    detail: &'a str,
    request_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    vendor: Option<&'a VendorDetail>,
}

impl Problem {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Problem {
            code,
            detail: detail.into(),
            vendor: None,
            retry_after: None,
            limit: None,
        }
    }

    /// A refusal by one of the gateway's limits: `code` with `Retry-After` and the limit's state.
    pub fn limited(code: ErrorCode, detail: impl Into<String>, state: LimitState) -> Self {
        Problem {
            retry_after: Some(state.retry_after_secs()),
            limit: Some(Box::new(state)),
            ..Problem::new(code, detail)
        }
    }

    pub fn with_vendor(mut self, vendor: VendorDetail) -> Self {
        self.vendor = Some(Box::new(vendor));
        self
    }

    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn status(&self) -> u16 {
        self.code.status()
    }

    /// The RFC 9457 body. `include_vendor` is the tenant's choice to show what the vendor said.
    pub fn to_json(&self, request_id: &str, include_vendor: bool) -> Vec<u8> {
        let body = ProblemBody {
            kind: format!("/problems/{}", self.code.as_str()),
            title: self.code.title(),
            status: self.code.status(),
            code: self.code.as_str(),
            detail: &if include_vendor {
                std::borrow::Cow::Borrowed(self.detail.as_str())
            } else if let Some(neutral) = self
                .code
                .vendor_neutral_detail()
                .filter(|_| self.limit.is_none())
            {
                std::borrow::Cow::Borrowed(neutral)
            } else {
                conceal_vendor_names(&self.detail)
            },
            request_id,
            // The outbound budget is sized by the vendor's own limit: named only to a tenant
            // that shows its vendor.
            limit: self
                .limit
                .as_ref()
                .filter(|l| include_vendor || l.name != LimitName::Outbound)
                .map(|l| l.name.as_str()),
            vendor: if include_vendor {
                self.vendor.as_deref()
            } else {
                None
            },
        };
        serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec())
    }
}

/// `detail` with every vendor's name (any case, as a whole word) written as "the vendor", for a
/// tenant whose apps must not learn which vendor serves them (`vendor_details = false`).
fn conceal_vendor_names(detail: &str) -> std::borrow::Cow<'_, str> {
    // ASCII lowercasing keeps every byte where it was, so positions found in `lower` are
    // positions in `detail`.
    let lower = detail.to_ascii_lowercase();
    let mut found: Vec<(usize, usize)> = Vec::new();
    for name in crate::vendors::NAMES {
        let mut from = 0;
        while let Some(at) = lower[from..].find(name).map(|i| from + i) {
            let end = at + name.len();
            let word_before = lower[..at]
                .bytes()
                .last()
                .is_some_and(|b| b.is_ascii_alphanumeric());
            let word_after = lower[end..]
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric());
            if !word_before && !word_after {
                found.push((at, end));
            }
            from = end;
        }
    }
    if found.is_empty() {
        return std::borrow::Cow::Borrowed(detail);
    }
    found.sort_unstable();
    let mut out = String::with_capacity(detail.len() + 16);
    let mut copied = 0;
    for (at, end) in found {
        // Names that overlap (none do today) are replaced once, by the first.
        if at < copied {
            continue;
        }
        out.push_str(&detail[copied..at]);
        out.push_str("the vendor");
        copied = end;
    }
    out.push_str(&detail[copied..]);
    std::borrow::Cow::Owned(out)
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.detail)
    }
}

impl std::error::Error for Problem {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_concealed_detail_is_worded_alike_whichever_vendor_spoke() {
        let body = |code, detail: &str| {
            let json = Problem::new(code, detail).to_json("r-1", false);
            serde_json::from_slice::<serde_json::Value>(&json).unwrap()["detail"].clone()
        };
        for (code, wordings) in [
            (
                ErrorCode::PasswordRejected,
                [
                    "Capillary says the password is invalid",
                    "the new password does not meet CBSS's policy",
                ],
            ),
            (
                ErrorCode::PasswordReused,
                [
                    "the new password equals the old one",
                    "the new password was used before",
                ],
            ),
            (
                ErrorCode::UpstreamError,
                [
                    "Capillary refused the gateway's API key: check the connection's api_key_env",
                    "cbss accepted the request but returned no CustomerForgotUsernamePasswordID",
                ],
            ),
            (
                ErrorCode::ResetExpired,
                [
                    "the reset's session expired at Capillary",
                    "the reset has expired at CBSS",
                ],
            ),
        ] {
            assert_eq!(body(code, wordings[0]), body(code, wordings[1]), "{code:?}");
            // Shown as worded to a tenant that reveals its vendor.
            let shown = Problem::new(code, wordings[0]).to_json("r-1", true);
            assert!(String::from_utf8(shown).unwrap().contains(wordings[0]));
        }
        // The gateway's own details, alike for every vendor, are kept (vendor names aside).
        let own = Problem::new(ErrorCode::InvalidRequest, "missing field `otp`");
        assert!(String::from_utf8(own.to_json("r-1", false))
            .unwrap()
            .contains("missing field `otp`"));
    }

    #[test]
    fn a_concealed_detail_names_no_vendor() {
        for (detail, concealed) in [
            (
                "cbss could not be reached (ConnectRefused)",
                "the vendor could not be reached (ConnectRefused)",
            ),
            (
                "the new password does not meet CBSS's policy",
                "the new password does not meet the vendor's policy",
            ),
            (
                "Capillary says the password is invalid",
                "the vendor says the password is invalid",
            ),
            (
                "the reset's session expired at Capillary",
                "the reset's session expired at the vendor",
            ),
            ("HEPSIBURADA, then amsalem", "the vendor, then the vendor"),
            (
                "cbssx and xcapillary are other words",
                "cbssx and xcapillary are other words",
            ),
        ] {
            assert_eq!(conceal_vendor_names(detail), concealed);
        }
        let problem = Problem::new(
            ErrorCode::UpstreamUnavailable,
            "amsalem did not answer in time",
        );
        let hidden = String::from_utf8(problem.to_json("r", false)).unwrap();
        assert!(
            hidden.contains("the vendor did not answer in time"),
            "{hidden}"
        );
        let shown = String::from_utf8(problem.to_json("r", true)).unwrap();
        assert!(shown.contains("amsalem did not answer in time"), "{shown}");
    }

    #[test]
    fn body_has_the_rfc9457_members_and_hides_vendor_when_asked() {
        let p = Problem::new(ErrorCode::InvalidOtp, "wrong code").with_vendor(VendorDetail {
            name: "cbss",
            status: 200,
            code: Some("INVALID_OTP".into()),
            message: Some("Invalid OTP".into()),
        });
        let v: serde_json::Value = serde_json::from_slice(&p.to_json("r1", true)).unwrap();
        assert_eq!(v["type"], "/problems/invalid_otp");
        assert_eq!(v["status"], 422);
        assert_eq!(v["code"], "invalid_otp");
        assert_eq!(v["request_id"], "r1");
        assert_eq!(v["vendor"]["code"], "INVALID_OTP");
        let hidden: serde_json::Value = serde_json::from_slice(&p.to_json("r1", false)).unwrap();
        assert!(hidden.get("vendor").is_none());
    }

    #[test]
    fn every_code_has_a_distinct_name() {
        let mut names: Vec<_> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ErrorCode::ALL.len());
    }
}
