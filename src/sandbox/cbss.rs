//! The CBSS sandbox: ForgotUsernamePassword steps 1 to 3, JSON and DataContract XML, signatures
//! checked over the exact body bytes received, OTPs with expiry and an attempt limit.
//!
//! What the excerpts leave open is decided here as vendors.md assumes (lower- or upper-case hex
//! signatures, `{Code, Message}` messages) and the message codes are the ones README.md lists.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{demo_customers, password_ok, query_param, random_otp, Customer, Outbox};
use crate::http::Reply;
use crate::vendors::dotnet_timestamp;
use crate::xml;

/// The sandbox's one client. These are public demo values, not secrets.
pub struct DemoClient {
    pub client_code: &'static str,
    pub client_key: &'static str,
    pub login_salt: &'static str,
    pub forgot_salt: &'static str,
}

pub const DEMO_CLIENT: DemoClient = DemoClient {
    client_code: "DEMO",
    client_key: "sandbox-client-key",
    login_salt: "sandbox-login-salt",
    forgot_salt: "sandbox-forgot-salt",
};

/// How long a one-time code lives unless the sandbox is told otherwise.
pub const OTP_LIFETIME: Duration = Duration::from_secs(300);
const REQUEST_LIFETIME: Duration = Duration::from_secs(900);
const MAX_OTP_ATTEMPTS: u32 = 5;
const MAX_PENDING: usize = 10_000;
const CLOCK_SKEW_SECS: i64 = 300;

const NS_APP_CODE: &str = "http://schemas.datacontract.org/2004/07/CBSS_API.App_Code";
const NS_STEP_REQUESTS: &str =
    "http://schemas.datacontract.org/2004/07/CBSS_API.App_Code.Requests.Customers.ForgotUsernamePassswords";
const NS_FORMS: &str =
    "http://schemas.datacontract.org/2004/07/CBSS_API.Forms.Customers.ForgotUsernamePasswords";
const NS_RESPONSES: &str = "http://schemas.datacontract.org/2004/07/CBSS_API.App_Code.Responses";
const NS_STEP_RESPONSES: &str =
    "http://schemas.datacontract.org/2004/07/CBSS_API.App_Code.Responses.Customers.ForgotUsernamePassswords";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    One,
    Two,
    Three,
}

impl Step {
    fn from_path(rest: &str) -> Option<Step> {
        match rest {
            "api/Customer/ForgotUsernamePassword/1/EmailAddressOrMobilePhoneNumber" => {
                Some(Step::One)
            }
            "api/Customer/ForgotUsernamePassword/2/OTPVerification" => Some(Step::Two),
            "api/Customer/ForgotUsernamePassword/3/ChangePassword" => Some(Step::Three),
            _ => None,
        }
    }

    fn root(self) -> &'static str {
        match self {
            Step::One => "EmailAddressOrMobilePhoneNumber",
            Step::Two => "OTPVerification",
            Step::Three => "ChangePassword",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Xml,
}

struct Pending {
    customer: usize,
    otp: String,
    otp_expires: Instant,
    request_expires: Instant,
    attempts: u32,
    verified: bool,
}

struct State {
    customers: Vec<Customer>,
    pending: HashMap<u64, Pending>,
    next_id: u64,
}

pub struct CbssSandbox {
    state: Mutex<State>,
    outbox: Arc<Outbox>,
    otp_lifetime: Duration,
}

/// A request as CBSS reads it, whichever format it came in.
struct Request {
    client_code: String,
    date_time: String,
    content: HashMap<String, String>,
}

/// What the sandbox answers: success with optional content, or a CBSS message.
enum Outcome {
    Ok(Option<u64>),
    Fail(u16, &'static str, &'static str),
}

impl CbssSandbox {
    pub fn new(outbox: Arc<Outbox>, otp_lifetime: Duration) -> Self {
        CbssSandbox {
            otp_lifetime,
            state: Mutex::new(State {
                customers: demo_customers(),
                pending: HashMap::new(),
                next_id: 1000,
            }),
            outbox,
        }
    }

    pub fn handle(&self, rest: &str, query: &str, content_type: &str, body: &[u8]) -> Reply {
        let Some(step) = Step::from_path(rest) else {
            return Reply::text(404, "no such CBSS resource\n");
        };
        let format = if content_type.contains("json") {
            Format::Json
        } else if content_type.contains("xml") {
            Format::Xml
        } else {
            return Reply::text(415, "CBSS takes application/json or application/xml\n");
        };
        let outcome = self.process(step, format, query, body);
        let client_code = DEMO_CLIENT.client_code;
        envelope(step, format, client_code, outcome)
    }

    fn process(&self, step: Step, format: Format, query: &str, body: &[u8]) -> Outcome {
        let request = match format {
            Format::Json => read_json(body),
            Format::Xml => read_xml(step, body),
        };
        let Some(request) = request else {
            return Outcome::Fail(400, "INVALID_REQUEST", "The request body is malformed.");
        };
        if request.client_code != DEMO_CLIENT.client_code {
            return Outcome::Fail(401, "INVALID_CLIENT", "Unknown client code.");
        }
        if !signature_ok(step, body, query_param(query, "Signature").unwrap_or("")) {
            return Outcome::Fail(401, "INVALID_SIGNATURE", "Invalid signature.");
        }
        if let Some(lang) = query_param(query, "Language") {
            let ok = lang.len() == 5
                && lang.as_bytes()[2] == b'_'
                && lang
                    .bytes()
                    .enumerate()
                    .all(|(i, b)| i == 2 || b.is_ascii_alphabetic());
            if !ok {
                return Outcome::Fail(400, "INVALID_REQUEST", "Unsupported language.");
            }
        }
        match chrono::DateTime::parse_from_rfc3339(&request.date_time) {
            Ok(t) if (chrono::Utc::now().timestamp() - t.timestamp()).abs() <= CLOCK_SKEW_SECS => {}
            _ => return Outcome::Fail(400, "INVALID_DATETIME", "DateTime is missing or stale."),
        }
        let mut state = self.state.lock().expect("cbss sandbox lock");
        match step {
            Step::One => self.request_otp(&mut state, &request.content),
            Step::Two => verify_otp(&mut state, &request.content),
            Step::Three => change_password(&mut state, &request.content),
        }
    }

    fn request_otp(&self, state: &mut State, content: &HashMap<String, String>) -> Outcome {
        let email = content.get("EmailAddress").filter(|v| !v.is_empty());
        let mobile = content.get("MobilePhoneNumber").filter(|v| !v.is_empty());
        let (found, to) = match (email, mobile) {
            (Some(e), None) => (state.customers.iter().position(|c| c.email == e), e.clone()),
            (None, Some(m)) => (
                state.customers.iter().position(|c| c.mobile == m),
                m.clone(),
            ),
            _ => {
                return Outcome::Fail(
                    400,
                    "INVALID_REQUEST",
                    "Give exactly one of EmailAddress and MobilePhoneNumber.",
                )
            }
        };
        let Some(customer) = found else {
            return Outcome::Fail(200, "CUSTOMER_NOT_FOUND", "Customer not found.");
        };
        let now = Instant::now();
        state.pending.retain(|_, p| p.request_expires > now);
        if state.pending.len() >= MAX_PENDING {
            return Outcome::Fail(503, "BUSY", "Too many pending requests.");
        }
        let id = state.next_id;
        state.next_id += 1;
        let otp = random_otp(6);
        self.outbox.push("cbss", &to, &otp);
        state.pending.insert(
            id,
            Pending {
                customer,
                otp,
                otp_expires: now + self.otp_lifetime,
                request_expires: now + REQUEST_LIFETIME,
                attempts: 0,
                verified: false,
            },
        );
        Outcome::Ok(Some(id))
    }
}

fn pending_id(content: &HashMap<String, String>) -> Option<u64> {
    content
        .get("CustomerForgotUsernamePasswordID")?
        .parse()
        .ok()
}

fn verify_otp(state: &mut State, content: &HashMap<String, String>) -> Outcome {
    let (Some(id), Some(otp)) = (pending_id(content), content.get("OTP")) else {
        return Outcome::Fail(
            400,
            "INVALID_REQUEST",
            "CustomerForgotUsernamePasswordID and OTP are required.",
        );
    };
    let Some(p) = state.pending.get_mut(&id) else {
        return Outcome::Fail(200, "REQUEST_NOT_FOUND", "Unknown request.");
    };
    if p.attempts >= MAX_OTP_ATTEMPTS {
        return Outcome::Fail(200, "OTP_ATTEMPTS_EXCEEDED", "Too many wrong OTPs.");
    }
    if Instant::now() > p.otp_expires {
        return Outcome::Fail(200, "OTP_EXPIRED", "The OTP has expired.");
    }
    if !bool::from(p.otp.as_bytes().ct_eq(otp.as_bytes())) {
        p.attempts += 1;
        return Outcome::Fail(200, "INVALID_OTP", "Invalid OTP.");
    }
    p.verified = true;
    Outcome::Ok(None)
}

fn change_password(state: &mut State, content: &HashMap<String, String>) -> Outcome {
    let (Some(id), Some(password)) = (pending_id(content), content.get("NewPassword")) else {
        return Outcome::Fail(
            400,
            "INVALID_REQUEST",
            "CustomerForgotUsernamePasswordID and NewPassword are required.",
        );
    };
    let Some(p) = state.pending.get(&id) else {
        return Outcome::Fail(200, "REQUEST_NOT_FOUND", "Unknown request.");
    };
    if Instant::now() > p.request_expires {
        return Outcome::Fail(200, "REQUEST_EXPIRED", "The request has expired.");
    }
    if !p.verified {
        return Outcome::Fail(200, "OTP_NOT_VERIFIED", "Verify the OTP first.");
    }
    if !password_ok(password) {
        return Outcome::Fail(
            200,
            "PASSWORD_POLICY",
            "The password needs at least 8 characters with letters and digits.",
        );
    }
    let customer = p.customer;
    if state.customers[customer].password == *password {
        return Outcome::Fail(
            200,
            "PASSWORD_REUSED",
            "The new password equals the current one.",
        );
    }
    state.customers[customer].password = password.clone();
    state.pending.remove(&id);
    Outcome::Ok(None)
}

fn signature_ok(step: Step, body: &[u8], given: &str) -> bool {
    let mut hasher = Sha256::new();
    hasher.update(body);
    hasher.update(DEMO_CLIENT.client_key.as_bytes());
    hasher.update(DEMO_CLIENT.login_salt.as_bytes());
    if step != Step::One {
        hasher.update(DEMO_CLIENT.forgot_salt.as_bytes());
    }
    let expected = hex::encode(hasher.finalize());
    let given = given.to_ascii_lowercase();
    expected.len() == given.len() && bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
}

fn read_json(body: &[u8]) -> Option<Request> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let content = v
        .get("Content")?
        .as_object()?
        .iter()
        .filter_map(|(k, v)| {
            let s = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                _ => return None,
            };
            Some((k.clone(), s))
        })
        .collect();
    Some(Request {
        client_code: v.get("ClientCode")?.as_str()?.to_string(),
        date_time: v.get("DateTime")?.as_str()?.to_string(),
        content,
    })
}

fn read_xml(step: Step, body: &[u8]) -> Option<Request> {
    let root = xml::parse(body).ok()?;
    // The envelope's members are the base class's (App_Code), the content's the form's.
    if root.name != step.root()
        || root.namespace != NS_STEP_REQUESTS
        || !super::datacontract_members_ok(&root, NS_APP_CODE)
    {
        return None;
    }
    let content = root.child("Content")?;
    if !super::datacontract_members_ok(content, NS_FORMS) {
        return None;
    }
    let content = content
        .children
        .iter()
        .map(|c| (c.name.clone(), c.text.trim().to_string()))
        .collect();
    Some(Request {
        client_code: root.child_text("ClientCode")?.to_string(),
        date_time: root.child_text("DateTime")?.to_string(),
        content,
    })
}

fn envelope(step: Step, format: Format, client_code: &str, outcome: Outcome) -> Reply {
    let now = dotnet_timestamp(&chrono::FixedOffset::east_opt(8 * 3600).expect("valid offset"));
    let (status, ok, message, id) = match outcome {
        Outcome::Ok(id) => (200, true, None, id),
        Outcome::Fail(status, code, text) => (status, false, Some((code, text)), None),
    };
    match format {
        Format::Json => {
            let messages: Vec<_> = message
                .iter()
                .map(|(c, m)| serde_json::json!({"Code": c, "Message": m}))
                .collect();
            let content = match (id, step) {
                (Some(id), _) => serde_json::json!({ "CustomerForgotUsernamePasswordID": id }),
                (None, Step::Three) if ok => serde_json::json!({}),
                _ => serde_json::Value::Null,
            };
            let body = serde_json::json!({
                "IsSuccessful": ok,
                "Messages": messages,
                "ClientCode": client_code,
                "DateTime": now,
                "Content": content,
            });
            Reply::json(status, serde_json::to_vec(&body).expect("json"))
        }
        Format::Xml => {
            let root = step.root();
            let content = match id {
                Some(id) => format!(
                    "<Content xmlns=\"{NS_APP_CODE}\"><CustomerForgotUsernamePasswordID>{id}</CustomerForgotUsernamePasswordID></Content>"
                ),
                None => format!("<Content xmlns=\"{NS_APP_CODE}\" />"),
            };
            let messages = match message {
                Some((code, text)) => format!(
                    "<Messages xmlns=\"{NS_RESPONSES}\"><Message><Code>{code}</Code><Message>{}</Message></Message></Messages>",
                    xml::escape(text)
                ),
                None => format!("<Messages xmlns=\"{NS_RESPONSES}\" />"),
            };
            let body = format!(
                "<{root} xmlns:i=\"http://www.w3.org/2001/XMLSchema-instance\" xmlns=\"{NS_STEP_RESPONSES}\">\
<ClientCode xmlns=\"{NS_APP_CODE}\">{}</ClientCode>{content}<DateTime xmlns=\"{NS_APP_CODE}\">{now}</DateTime>\
<IsSuccessful xmlns=\"{NS_RESPONSES}\">{ok}</IsSuccessful>{messages}</{root}>",
                xml::escape(client_code)
            );
            Reply::new(status, "application/xml; charset=utf-8", body)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Step 1's XML sample from the vendor's documentation, with `members` as its content.
    fn sample(root_ns: &str, content: &str) -> String {
        format!(
            r#"<EmailAddressOrMobilePhoneNumber xmlns:i="http://www.w3.org/2001/XMLSchema-instance" xmlns="{root_ns}">
  <ClientCode xmlns="http://schemas.datacontract.org/2004/07/CBSS_API.App_Code">sample string 1</ClientCode>
  <Content xmlns:d2p1="http://schemas.datacontract.org/2004/07/CBSS_API.Forms.Customers.ForgotUsernamePasswords" xmlns="http://schemas.datacontract.org/2004/07/CBSS_API.App_Code">
    {content}
  </Content>
  <DateTime xmlns="http://schemas.datacontract.org/2004/07/CBSS_API.App_Code">2024-11-18T12:34:23.6965096+08:00</DateTime>
</EmailAddressOrMobilePhoneNumber>"#
        )
    }

    const IN_ORDER: &str = "<d2p1:EmailAddress>sample string 2</d2p1:EmailAddress>\n    <d2p1:MobilePhoneNumber>sample string 1</d2p1:MobilePhoneNumber>";

    #[test]
    fn the_documented_xml_sample_is_read() {
        let req = read_xml(Step::One, sample(NS_STEP_REQUESTS, IN_ORDER).as_bytes()).unwrap();
        assert_eq!(req.client_code, "sample string 1");
        assert_eq!(req.content["EmailAddress"], "sample string 2");
        assert_eq!(req.content["MobilePhoneNumber"], "sample string 1");
    }

    #[test]
    fn xml_in_other_namespaces_or_out_of_order_is_not_read() {
        let wrong_root = sample("urn:elsewhere", IN_ORDER);
        let reordered = sample(
            NS_STEP_REQUESTS,
            "<d2p1:MobilePhoneNumber>1</d2p1:MobilePhoneNumber><d2p1:EmailAddress>2</d2p1:EmailAddress>",
        );
        let unqualified = sample(
            NS_STEP_REQUESTS,
            "<EmailAddress>2</EmailAddress><MobilePhoneNumber>1</MobilePhoneNumber>",
        );
        let envelope_reordered = sample(NS_STEP_REQUESTS, IN_ORDER).replace(
            "<ClientCode xmlns=\"http://schemas.datacontract.org/2004/07/CBSS_API.App_Code\">sample string 1</ClientCode>",
            "",
        ).replace("</EmailAddressOrMobilePhoneNumber>", "<ClientCode xmlns=\"http://schemas.datacontract.org/2004/07/CBSS_API.App_Code\">c</ClientCode></EmailAddressOrMobilePhoneNumber>");
        for doc in [wrong_root, reordered, unqualified, envelope_reordered] {
            assert!(read_xml(Step::One, doc.as_bytes()).is_none(), "{doc}");
        }
    }
}
