//! Amsalem: `POST api/Customers/ChangePassword`, "new user must change password". The user holds a
//! vendor-issued key (a temporary credential) and sets a new password with it.
//!
//! Every request carries the vendor's authentication block: the operator's API user name, a fresh
//! random salt of at least 9 digits, and a digest whose recipe is configuration (the vendor's
//! formula is not public). JSON, or XML with UserName, Salt and Digest as root attributes.

use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::{
    exchange, refusal, unreadable, vendor_said, CanonicalStep, CodeInput, StartInput, StepContext,
    VendorAdapter, WireFormat,
};
use crate::api::types::IdentifierKind;
use crate::api::{ErrorCode, Problem};
use crate::secret::Secret;
use crate::signing::{Inputs, Recipe};
use crate::upstream::{UpstreamClient, UpstreamRequest};
use crate::xml;

const VENDOR: &str = "amsalem";
const PATH: &str = "api/Customers/ChangePassword";

#[derive(Debug, Clone)]
pub struct AmsalemSettings {
    /// The operator's API user name: the `UserName` of the authentication block.
    pub api_username: String,
    pub secret: Secret,
    pub format: WireFormat,
    pub recipe: Recipe,
    pub salt: SaltWidth,
}

/// The integer type the vendor reads `Salt` into. Its documentation says "integer" and "at least 9
/// digits", which a .NET service may mean as a 32-bit `int` or a 64-bit `long`: a salt past
/// `int`'s range would fail to bind on a service that reads an `int`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SaltWidth {
    /// 12 to 15 digits (the default: about 2^50 values, so salts do not repeat in practice).
    #[default]
    Int64,
    /// 9 or 10 digits, at most 2,147,483,647 (about 2^31 values).
    Int32,
}

pub struct Amsalem {
    settings: AmsalemSettings,
    client: UpstreamClient,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct JsonUser<'a> {
    user_name: &'a str,
    email: &'a str,
    key: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct JsonRequest<'a> {
    user: JsonUser<'a>,
    user_new_password: &'a str,
    user_name: &'a str,
    salt: u64,
    digest: &'a str,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct JsonAnswer {
    success: bool,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    extra1: Option<String>,
}

/// Amsalem's failure codes, carried in `Extra1` (assumed: the excerpt does not list them).
const CODES: &[(&str, ErrorCode, &str)] = &[
    ("INVALID_KEY", ErrorCode::InvalidOtp, "the reset code is wrong"),
    ("USER_MISMATCH", ErrorCode::InvalidOtp, "the reset code is wrong"),
    ("KEY_EXPIRED", ErrorCode::ResetExpired, "the reset code has expired"),
    ("PASSWORD_POLICY", ErrorCode::PasswordRejected, "the new password does not meet Amsalem's policy"),
    ("PASSWORD_REUSED", ErrorCode::PasswordReused, "the new password equals the current one"),
    (
        "INVALID_DIGEST",
        ErrorCode::UpstreamError,
        "Amsalem refused the request digest: check the connection's api_username, secret and digest recipe",
    ),
    (
        "UNKNOWN_API_USER",
        ErrorCode::UpstreamError,
        "Amsalem does not know the connection's api_username",
    ),
    ("SALT_REUSED", ErrorCode::UpstreamError, "Amsalem refused a reused salt"),
    ("INVALID_REQUEST", ErrorCode::UpstreamError, "Amsalem refused the request as malformed"),
];

/// Amsalem's refusals of the gateway's own request, which come before it looks at the key.
const REFUSED_BEFORE_THE_KEY: &[&str] = &[
    "INVALID_DIGEST",
    "UNKNOWN_API_USER",
    "SALT_REUSED",
    "INVALID_REQUEST",
];

/// The user whose password changes: Amsalem's key belongs to one user name.
fn user_name(input: &CodeInput) -> Result<&str, Problem> {
    match &input.identifier {
        Some(id) if id.kind == IdentifierKind::Username => Ok(id.value.as_str()),
        _ => Err(Problem::new(
            ErrorCode::InvalidRequest,
            "this tenant's vendor needs identifier {\"type\": \"username\", ...} with reset_code",
        )),
    }
}

/// A fresh salt from the OS-seeded CSPRNG of at least 9 digits (the vendor's minimum) that fits
/// the integer type the vendor reads it into.
fn fresh_salt(width: SaltWidth) -> u64 {
    let range = match width {
        SaltWidth::Int64 => 100_000_000_000..=999_999_999_999_999,
        SaltWidth::Int32 => 100_000_000..=i32::MAX as u64,
    };
    rand::thread_rng().gen_range(range)
}

impl AmsalemSettings {
    /// The request body for `input` (with a fresh salt and its digest), built by the code a
    /// completion runs. Public for the benchmarks, which measure the adapter's own request
    /// building.
    #[doc(hidden)]
    pub fn request_body(&self, input: &CodeInput) -> Result<Vec<u8>, Problem> {
        self.signed_body(input).map(|(body, _digest)| body)
    }

    /// The request body for `input` and the digest it carries: the digest signs the request, so
    /// it is kept out of any vendor text the gateway passes on.
    fn signed_body(&self, input: &CodeInput) -> Result<(Vec<u8>, String), Problem> {
        let user_name = user_name(input)?;
        let email = input.email.as_deref().unwrap_or("");
        Ok(self.body(
            user_name,
            email,
            &input.reset_code,
            &input.new_password,
            fresh_salt(self.salt),
        ))
    }

    fn body(
        &self,
        user_name: &str,
        email: &str,
        key: &str,
        password: &str,
        salt: u64,
    ) -> (Vec<u8>, String) {
        let digest = self.recipe.compute(&Inputs {
            api_username: &self.api_username,
            salt,
            key,
            new_password: password,
            user_name,
            email,
            secret: self.secret.expose(),
        });
        let body = match self.format {
            WireFormat::Json => serde_json::to_vec(&JsonRequest {
                user: JsonUser {
                    user_name,
                    email,
                    key,
                },
                user_new_password: password,
                user_name: &self.api_username,
                salt,
                digest: &digest,
            })
            .expect("the request serializes"),
            WireFormat::Xml => format!(
                "<ChangePasswordRequest xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" \
                 xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" UserName=\"{}\" Salt=\"{salt}\" \
                 Digest=\"{}\"><User><UserName>{}</UserName><Email>{}</Email><Key>{}</Key></User>\
                 <UserNewPassword>{}</UserNewPassword></ChangePasswordRequest>",
                xml::escape(&self.api_username),
                xml::escape(&digest),
                xml::escape(user_name),
                xml::escape(email),
                xml::escape(key),
                xml::escape(password),
            )
            .into_bytes(),
        };
        (body, digest)
    }
}

impl Amsalem {
    pub fn new(settings: AmsalemSettings, client: UpstreamClient) -> Self {
        Amsalem { settings, client }
    }
}

/// Reads an Amsalem answer to its canonical outcome. The adapter's own reader, public for
/// benchmarks and fuzzing.
pub fn read_answer(status: u16, body: &[u8], never_echo: &[&str]) -> Result<(), Problem> {
    let (success, message, code) =
        parse_answer(body).map_err(|why| unreadable(VENDOR, status, &why))?;
    if success && (200..300).contains(&status) {
        return Ok(());
    }
    let vendor = vendor_said(
        VENDOR,
        status,
        code.as_deref(),
        message.as_deref(),
        never_echo,
    );
    Err(refusal(
        CODES,
        code.as_deref(),
        vendor,
        "amsalem refused the request with a reason the gateway does not know",
    ))
}

/// `(Success, Message, Extra1)` from either format.
fn parse_answer(body: &[u8]) -> Result<(bool, Option<String>, Option<String>), String> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {
            let a: JsonAnswer =
                crate::json::from_body(body).map_err(|_| "bad JSON answer".to_string())?;
            Ok((a.success, a.message, a.extra1))
        }
        Some(b'<') => {
            let root = xml::parse(body).map_err(|e| e.to_string())?;
            let success = match root.child_text("Success") {
                Some("true") => true,
                Some("false") => false,
                _ => return Err("no Success in the XML answer".into()),
            };
            let text = |name: &str| {
                root.child(name)
                    .filter(|c| !c.is_nil())
                    .map(|c| c.text.trim().to_string())
                    .filter(|t| !t.is_empty())
            };
            Ok((success, text("Message"), text("Extra1")))
        }
        _ => Err("neither JSON nor XML".into()),
    }
}

#[async_trait]
impl VendorAdapter for Amsalem {
    fn vendor(&self) -> &'static str {
        VENDOR
    }

    fn session_lifetime(&self) -> Option<Duration> {
        None
    }

    fn check_code(&self, _ctx: &StepContext, input: &CodeInput) -> Result<(), Problem> {
        user_name(input).map(|_| ())
    }

    fn code_owner<'a>(&self, input: &'a CodeInput) -> Option<&'a str> {
        user_name(input).ok()
    }

    fn refused_before_the_code(&self, problem: &Problem) -> bool {
        // Assumed, as the sandbox does: the authentication block and the request's form are
        // checked before the key.
        super::refused_for_one_of(CODES, REFUSED_BEFORE_THE_KEY, problem)
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
        let (body, digest) = self.settings.signed_body(input)?;
        let content_type = self.settings.format.content_type();
        let response = exchange(
            &self.client,
            VENDOR,
            &UpstreamRequest {
                endpoint: "ChangePassword",
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
        // Nor may a vendor message quoting the connection's secret or the request's digest reach
        // the caller.
        let never_echo = [
            input.new_password.as_str(),
            input.reset_code.as_str(),
            self.settings.secret.expose(),
            digest.as_str(),
        ];
        read_answer(response.status, &response.body, &never_echo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn salts_have_at_least_nine_digits_fit_their_width_and_differ() {
        for width in [SaltWidth::Int64, SaltWidth::Int32] {
            let salts: Vec<u64> = (0..1000).map(|_| fresh_salt(width)).collect();
            assert!(salts.iter().all(|s| s.to_string().len() >= 9), "{width:?}");
            assert!(salts.windows(2).any(|w| w[0] != w[1]), "{width:?}");
        }
        let int32: Vec<u64> = (0..1000).map(|_| fresh_salt(SaltWidth::Int32)).collect();
        assert!(int32.iter().all(|&s| i32::try_from(s).is_ok()));
        // The default's salts are past int's range, which is why the choice exists.
        assert!(fresh_salt(SaltWidth::Int64) > i32::MAX as u64);
    }

    #[test]
    fn a_refusal_of_the_gateways_own_request_is_known_whatever_the_caller_sent() {
        let refused_before_the_key =
            |p: &Problem| crate::vendors::refused_for_one_of(CODES, REFUSED_BEFORE_THE_KEY, p);
        let refused = |code: &str, never_echo: &[&str]| {
            let body = format!(r#"{{"Success":false,"Message":"No.","Extra1":"{code}"}}"#);
            read_answer(200, body.as_bytes(), never_echo).unwrap_err()
        };
        for code in REFUSED_BEFORE_THE_KEY {
            // A new password of "INVALID" is scrubbed from what the vendor said, code and all.
            let p = refused(code, &["INVALID"]);
            let shown = p.vendor.as_ref().unwrap().code.as_deref();
            assert_eq!(shown == Some(*code), !code.contains("INVALID"), "{shown:?}");
            assert!(refused_before_the_key(&p), "{code}");
        }
        for code in [
            "INVALID_KEY",
            "USER_MISMATCH",
            "KEY_EXPIRED",
            "SOMETHING_NEW",
        ] {
            assert!(!refused_before_the_key(&refused(code, &[])), "{code}");
        }
    }

    #[test]
    fn answers_parse_in_both_formats() {
        let json = br#"{"Success":false,"Message":"Bad key","Extra1":"INVALID_KEY","Extra2":null,"Extra3":null}"#;
        assert_eq!(
            parse_answer(json).unwrap(),
            (false, Some("Bad key".into()), Some("INVALID_KEY".into()))
        );
        let xml = br#"<ChangePasswordResponse xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><Success>true</Success><Message>OK</Message><Extra1 xsi:nil="true" /></ChangePasswordResponse>"#;
        assert_eq!(parse_answer(xml).unwrap(), (true, Some("OK".into()), None));
        assert!(parse_answer(b"<html/>").is_err());
    }

    /// README.md's Amsalem mapping, written out again here rather than read from `CODES`: a
    /// code dropped, misspelt or moved to another canonical problem in the adapter's table fails
    /// this test. The last column: whether the refusal came before the vendor looked at the key
    /// (the gateway's own request refused: digest, API user, salt, form), which gives the
    /// user's wrong-code cell back.
    const DOCUMENTED: &[(&str, ErrorCode, u16, bool)] = &[
        ("INVALID_KEY", ErrorCode::InvalidOtp, 422, false),
        ("USER_MISMATCH", ErrorCode::InvalidOtp, 422, false),
        ("KEY_EXPIRED", ErrorCode::ResetExpired, 410, false),
        ("PASSWORD_POLICY", ErrorCode::PasswordRejected, 422, false),
        ("PASSWORD_REUSED", ErrorCode::PasswordReused, 422, false),
        ("INVALID_DIGEST", ErrorCode::UpstreamError, 502, true),
        ("UNKNOWN_API_USER", ErrorCode::UpstreamError, 502, true),
        ("SALT_REUSED", ErrorCode::UpstreamError, 502, true),
        ("INVALID_REQUEST", ErrorCode::UpstreamError, 502, true),
    ];

    /// An unsuccessful Amsalem answer carrying `code` in `Extra1`, as the sandbox writes it.
    fn refusal_body(format: WireFormat, code: &str, message: &str) -> Vec<u8> {
        match format {
            WireFormat::Json => serde_json::json!({
                "Success": false, "Message": message, "Extra1": code,
                "Extra2": null, "Extra3": null,
            })
            .to_string()
            .into_bytes(),
            WireFormat::Xml => format!(
                "<ChangePasswordResponse xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" \
                 xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"><Success>false</Success>\
                 <Message>{message}</Message><Extra1>{code}</Extra1><Extra2 xsi:nil=\"true\" />\
                 <Extra3 xsi:nil=\"true\" /></ChangePasswordResponse>"
            )
            .into_bytes(),
        }
    }

    /// An adapter as a tenant's connection makes it; it is never asked to call the vendor.
    fn adapter() -> Amsalem {
        let settings = AmsalemSettings {
            api_username: "sandbox-api".into(),
            secret: Secret::new("sandbox-amsalem-secret"),
            format: WireFormat::Json,
            recipe: Recipe::amsalem_default(),
            salt: SaltWidth::Int64,
        };
        let base = crate::upstream::BaseUrl::parse("http://127.0.0.1:9/amsalem/").unwrap();
        let client = UpstreamClient::new(VENDOR, base, Default::default());
        Amsalem::new(settings, client)
    }

    #[test]
    fn every_documented_extra1_code_maps_to_its_canonical_problem() {
        const UNKNOWN: &str = "amsalem refused the request with a reason the gateway does not know";
        // The table and the adapter's know the same codes: a code the adapter maps but nobody
        // wrote down (or the reverse) fails here too.
        let mut documented: Vec<&str> = DOCUMENTED.iter().map(|(c, ..)| *c).collect();
        let mut mapped: Vec<&str> = CODES.iter().map(|(c, ..)| *c).collect();
        documented.sort_unstable();
        mapped.sort_unstable();
        assert_eq!(documented, mapped);

        let amsalem = adapter();
        for &(code, canonical, http, before_the_key) in DOCUMENTED {
            for format in [WireFormat::Json, WireFormat::Xml] {
                // The sandbox answers refusals under 200; a 4xx with the same body means the same.
                for status in [200, 400] {
                    let body = refusal_body(format, code, "Said by Amsalem.");
                    let p = read_answer(status, &body, &[])
                        .expect_err("an unsuccessful answer is a problem");
                    let what = format!("{code} ({format:?}, HTTP {status})");
                    assert_eq!(p.code, canonical, "{what}");
                    assert_eq!(p.code.status(), http, "{what}");
                    let entry = CODES.iter().find(|(c, ..)| *c == code).unwrap();
                    assert_eq!(p.detail, entry.2, "{what}");
                    assert_ne!(p.detail, UNKNOWN, "{what}");
                    assert_eq!(
                        amsalem.refused_before_the_code(&p),
                        before_the_key,
                        "{what}: refused before the key"
                    );
                    let vendor = p.vendor.as_deref().expect("the vendor member");
                    assert_eq!(vendor.name, "amsalem", "{what}");
                    assert_eq!(vendor.status, status, "{what}");
                    assert_eq!(vendor.code.as_deref(), Some(code), "{what}");
                    assert_eq!(
                        vendor.message.as_deref(),
                        Some("Said by Amsalem."),
                        "{what}"
                    );
                }
            }
        }

        // "Any other" code, or none, is an upstream error saying the reason is unknown, and
        // does not count as refused before the key.
        for format in [WireFormat::Json, WireFormat::Xml] {
            for other in ["SOMETHING_NEW", "KEY_LOCKED", "42"] {
                let p = read_answer(200, &refusal_body(format, other, "?"), &[]).unwrap_err();
                assert_eq!(p.code, ErrorCode::UpstreamError, "{other} ({format:?})");
                assert_eq!(p.detail, UNKNOWN, "{other} ({format:?})");
                assert_eq!(p.vendor.as_ref().unwrap().code.as_deref(), Some(other));
                assert!(!amsalem.refused_before_the_code(&p), "{other}");
            }
        }
        let no_code = br#"{"Success":false,"Message":"No.","Extra1":null}"#;
        let p = read_answer(200, no_code, &[]).unwrap_err();
        assert_eq!(
            (p.code, p.detail.as_str()),
            (ErrorCode::UpstreamError, UNKNOWN)
        );
        assert_eq!(p.vendor.as_ref().unwrap().code, None);
        assert!(!amsalem.refused_before_the_code(&p));
        let nil = br#"<ChangePasswordResponse xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><Success>false</Success><Message>No.</Message><Extra1 xsi:nil="true" /></ChangePasswordResponse>"#;
        let p = read_answer(200, nil, &[]).unwrap_err();
        assert_eq!(
            (p.code, p.detail.as_str()),
            (ErrorCode::UpstreamError, UNKNOWN)
        );
        assert_eq!(p.vendor.unwrap().code, None);
    }
}
