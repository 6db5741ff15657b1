//! The CBSS sandbox: ForgotUsernamePassword steps 1 to 3, JSON and DataContract XML, signatures
//! checked over the exact body bytes received, OTPs with expiry and an attempt limit.
//!
//! What the excerpts leave open is decided here as vendors.md assumes (hex signatures, in the one
//! case each client is set up for; `{Code, Message}` messages; `Language` like `en_US`) and the
//! message codes are the ones README.md lists. Values are read from XML as .NET reads them, with
//! the spaces at their ends.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{demo_customers, password_ok, query_param, random_otp, Customer, Format, Outbox};
use crate::http::Reply;
use crate::signing::HexCase;
use crate::vendors::dotnet_timestamp;
use crate::xml;

/// A client of the sandbox. These are public demo values, not secrets.
pub struct DemoClient {
    pub client_code: &'static str,
    pub client_key: &'static str,
    pub login_salt: &'static str,
    pub forgot_salt: &'static str,
    /// The one hex case this client's signatures are checked in: a vendor compares the signature
    /// it computes with the one it is sent, so a gateway set to the other case is refused.
    pub signature_case: HexCase,
}

pub const DEMO_CLIENT: DemoClient = DemoClient {
    client_code: "DEMO",
    client_key: "sandbox-client-key",
    login_salt: "sandbox-login-salt",
    forgot_salt: "sandbox-forgot-salt",
    signature_case: HexCase::Lower,
};

/// The demo client whose account signs in upper-case hex, with the same secrets.
pub const DEMO_CLIENT_UPPER: DemoClient = DemoClient {
    client_code: "DEMO-UPPER",
    signature_case: HexCase::Upper,
    ..DEMO_CLIENT
};

/// The demo client that signs in `case`.
pub fn demo_client(case: HexCase) -> &'static DemoClient {
    match case {
        HexCase::Lower => &DEMO_CLIENT,
        HexCase::Upper => &DEMO_CLIENT_UPPER,
    }
}

fn client_by_code(code: &str) -> Option<&'static DemoClient> {
    [&DEMO_CLIENT, &DEMO_CLIENT_UPPER]
        .into_iter()
        .find(|c| c.client_code == code)
}

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

struct Pending {
    /// The client that started it: request ids are per client, as each account's own.
    client: &'static str,
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
    Fail(u16, &'static str, Cow<'static, str>),
}

/// A refusal: the HTTP status, CBSS's message code and its text.
fn fail(status: u16, code: &'static str, text: impl Into<Cow<'static, str>>) -> Outcome {
    Outcome::Fail(status, code, text.into())
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
        let Some(format) = request_format(content_type) else {
            return Reply::text(
                415,
                "CBSS takes application/json, text/json, text/html, application/xml or text/xml\n",
            );
        };
        let (client, outcome) = self.process(step, format, query, body);
        let client_code = client.map_or(DEMO_CLIENT.client_code, |c| c.client_code);
        envelope(step, format, client_code, outcome)
    }

    /// The client the request named, when it is one, and what became of the request.
    fn process(
        &self,
        step: Step,
        format: Format,
        query: &str,
        body: &[u8],
    ) -> (Option<&'static DemoClient>, Outcome) {
        let request = match format {
            Format::Json => read_json(body),
            Format::Xml => read_xml(step, body),
        };
        let Some(request) = request else {
            let malformed = fail(400, "INVALID_REQUEST", "The request body is malformed.");
            return (None, malformed);
        };
        let Some(client) = client_by_code(&request.client_code) else {
            return (None, fail(401, "INVALID_CLIENT", "Unknown client code."));
        };
        let given = query_param(query, "Signature").unwrap_or("");
        if !signature_ok(client, step, body, given) {
            // The signature it was sent, quoted back: never to be shown by the gateway.
            let refused = fail(
                401,
                "INVALID_SIGNATURE",
                format!("Invalid signature '{given}'."),
            );
            return (Some(client), refused);
        }
        if let Some(lang) = query_param(query, "Language") {
            if !language_ok(lang) {
                let refused = fail(400, "INVALID_REQUEST", "Unsupported language.");
                return (Some(client), refused);
            }
        }
        match chrono::DateTime::parse_from_rfc3339(&request.date_time) {
            Ok(t)
                if dotnet_form(&request.date_time)
                    && (chrono::Utc::now().timestamp() - t.timestamp()).abs()
                        <= CLOCK_SKEW_SECS => {}
            _ => {
                let stale = fail(400, "INVALID_DATETIME", "DateTime is missing or stale.");
                return (Some(client), stale);
            }
        }
        let mut state = self.state.lock().expect("cbss sandbox lock");
        let outcome = match step {
            Step::One => self.request_otp(&mut state, client, &request.content),
            Step::Two => verify_otp(&mut state, client, &request.content),
            Step::Three => change_password(&mut state, client, &request.content),
        };
        (Some(client), outcome)
    }

    fn request_otp(
        &self,
        state: &mut State,
        client: &DemoClient,
        content: &HashMap<String, String>,
    ) -> Outcome {
        let email = content.get("EmailAddress").filter(|v| !v.is_empty());
        let mobile = content.get("MobilePhoneNumber").filter(|v| !v.is_empty());
        let (found, to) = match (email, mobile) {
            (Some(e), None) => (state.customers.iter().position(|c| c.email == e), e.clone()),
            (None, Some(m)) => (
                state.customers.iter().position(|c| c.mobile == m),
                m.clone(),
            ),
            _ => {
                return fail(
                    400,
                    "INVALID_REQUEST",
                    "Give exactly one of EmailAddress and MobilePhoneNumber.",
                )
            }
        };
        let Some(customer) = found else {
            return fail(200, "CUSTOMER_NOT_FOUND", "Customer not found.");
        };
        let now = Instant::now();
        state.pending.retain(|_, p| p.request_expires > now);
        if state.pending.len() >= MAX_PENDING {
            return fail(503, "BUSY", "Too many pending requests.");
        }
        let id = state.next_id;
        state.next_id += 1;
        let otp = random_otp(6);
        self.outbox.push("cbss", &to, &otp);
        state.pending.insert(
            id,
            Pending {
                client: client.client_code,
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

/// The format of a request to CBSS: the four every vendor's help page lists, and `text/html`,
/// which CBSS's lists too, with a JSON sample (its server reads such a body as JSON).
fn request_format(content_type: &str) -> Option<Format> {
    Format::of(content_type).or_else(|| {
        let media_type = content_type.split(';').next().unwrap_or("").trim();
        media_type
            .eq_ignore_ascii_case("text/html")
            .then_some(Format::Json)
    })
}

fn verify_otp(
    state: &mut State,
    client: &DemoClient,
    content: &HashMap<String, String>,
) -> Outcome {
    let (Some(id), Some(otp)) = (pending_id(content), content.get("OTP")) else {
        return fail(
            400,
            "INVALID_REQUEST",
            "CustomerForgotUsernamePasswordID and OTP are required.",
        );
    };
    let Some(p) = state
        .pending
        .get_mut(&id)
        .filter(|p| p.client == client.client_code)
    else {
        return fail(200, "REQUEST_NOT_FOUND", "Unknown request.");
    };
    // The request's own lifetime bounds its code's too (`--cbss-otp-lifetime-secs` may be set
    // longer): a code is never accepted for a request that could no longer be completed.
    if Instant::now() > p.request_expires {
        return fail(200, "REQUEST_EXPIRED", "The request has expired.");
    }
    if p.attempts >= MAX_OTP_ATTEMPTS {
        return fail(200, "OTP_ATTEMPTS_EXCEEDED", "Too many wrong OTPs.");
    }
    if Instant::now() > p.otp_expires {
        return fail(200, "OTP_EXPIRED", "The OTP has expired.");
    }
    if !bool::from(p.otp.as_bytes().ct_eq(otp.as_bytes())) {
        p.attempts += 1;
        return fail(200, "INVALID_OTP", "Invalid OTP.");
    }
    p.verified = true;
    Outcome::Ok(None)
}

fn change_password(
    state: &mut State,
    client: &DemoClient,
    content: &HashMap<String, String>,
) -> Outcome {
    let (Some(id), Some(password)) = (pending_id(content), content.get("NewPassword")) else {
        return fail(
            400,
            "INVALID_REQUEST",
            "CustomerForgotUsernamePasswordID and NewPassword are required.",
        );
    };
    // Another client's request is not one this client has.
    let Some(p) = state
        .pending
        .get(&id)
        .filter(|p| p.client == client.client_code)
    else {
        return fail(200, "REQUEST_NOT_FOUND", "Unknown request.");
    };
    if Instant::now() > p.request_expires {
        return fail(200, "REQUEST_EXPIRED", "The request has expired.");
    }
    if !p.verified {
        return fail(200, "OTP_NOT_VERIFIED", "Verify the OTP first.");
    }
    if !password_ok(password) {
        // Quoting what it refused, as some vendors' validation messages do: the gateway must keep
        // the password out of what it shows.
        let text = format!(
            "The password '{password}' needs at least 8 characters with letters and digits."
        );
        return fail(200, "PASSWORD_POLICY", text);
    }
    let customer = p.customer;
    if state.customers[customer].password == *password {
        return fail(
            200,
            "PASSWORD_REUSED",
            "The new password equals the current one.",
        );
    }
    state.customers[customer].password = password.clone();
    state.pending.remove(&id);
    Outcome::Ok(None)
}

/// The form of CBSS's samples, .NET's round-trip local time: seven fraction digits and a numeric
/// offset (`2024-11-18T12:34:23.6965096+08:00`), never `Z`.
fn dotnet_form(date_time: &str) -> bool {
    let b = date_time.as_bytes();
    b.len() == 33
        && b[19] == b'.'
        && b[20..27].iter().all(u8::is_ascii_digit)
        && matches!(b[27], b'+' | b'-')
        && b[28..30].iter().all(u8::is_ascii_digit)
        && b[30] == b':'
        && b[31..].iter().all(u8::is_ascii_digit)
}

/// The values the sandbox's `Language` takes. CBSS documents the parameter as an `API.LANGUAGE`
/// (a type of its own: an enumeration, whose members its help page does not list) and its
/// samples show these three; a value outside the set is refused, as a real enumeration would
/// refuse it, so a gateway that sent a caller's language as it came would fail here.
pub const LANGUAGES: &[&str] = &["en_US", "th_TH", "zh_TW"];

pub fn language_ok(lang: &str) -> bool {
    LANGUAGES.contains(&lang)
}

fn signature_ok(client: &DemoClient, step: Step, body: &[u8], given: &str) -> bool {
    // Computed here with sha2 and hex rather than with the gateway's own signing code, so that a
    // fault in that code cannot agree with itself.
    let mut hasher = Sha256::new();
    hasher.update(body);
    hasher.update(client.client_key.as_bytes());
    hasher.update(client.login_salt.as_bytes());
    if step != Step::One {
        hasher.update(client.forgot_salt.as_bytes());
    }
    let mut expected = hex::encode(hasher.finalize());
    if client.signature_case == HexCase::Upper {
        expected.make_ascii_uppercase();
    }
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
        || *root.namespace != *NS_STEP_REQUESTS
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
        .map(|c| (c.name.clone(), c.text.clone()))
        .collect();
    Some(Request {
        client_code: root.child_value("ClientCode")?.to_string(),
        date_time: root.child_value("DateTime")?.to_string(),
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
                    xml::escape(&text)
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

    #[test]
    fn text_html_is_read_as_json_as_the_help_page_lists_it() {
        assert!(request_format("text/html") == Some(Format::Json));
        assert!(request_format("Text/HTML; charset=utf-8") == Some(Format::Json));
        assert!(request_format("text/xml") == Some(Format::Xml));
        assert!(request_format("text/plain").is_none());
    }

    #[test]
    fn a_code_is_refused_once_its_request_has_expired() {
        let now = Instant::now();
        let pending = |request_expires| Pending {
            client: DEMO_CLIENT.client_code,
            customer: 0,
            otp: "123456".into(),
            otp_expires: now + Duration::from_secs(3600),
            request_expires,
            attempts: 0,
            verified: false,
        };
        let mut state = State {
            customers: Vec::new(),
            pending: HashMap::from([
                (1, pending(now - Duration::from_secs(1))),
                (2, pending(now + Duration::from_secs(60))),
            ]),
            next_id: 3,
        };
        let content = |id: &str| {
            HashMap::from([
                (
                    "CustomerForgotUsernamePasswordID".to_string(),
                    id.to_string(),
                ),
                ("OTP".to_string(), "123456".to_string()),
            ])
        };
        match verify_otp(&mut state, &DEMO_CLIENT, &content("1")) {
            Outcome::Fail(200, code, _) => assert_eq!(code, "REQUEST_EXPIRED"),
            _ => panic!("a code for an expired request was accepted"),
        }
        // Request ids are per client: another client's code for it finds no such request, and
        // takes none of its attempts.
        match verify_otp(&mut state, &DEMO_CLIENT_UPPER, &content("2")) {
            Outcome::Fail(200, code, _) => assert_eq!(code, "REQUEST_NOT_FOUND"),
            _ => panic!("a request was completed by another client"),
        }
        assert!(matches!(
            verify_otp(&mut state, &DEMO_CLIENT, &content("2")),
            Outcome::Ok(None)
        ));
        let password = HashMap::from([
            (
                "CustomerForgotUsernamePasswordID".to_string(),
                "2".to_string(),
            ),
            ("NewPassword".to_string(), "N3w-passw0rd".to_string()),
        ]);
        match change_password(&mut state, &DEMO_CLIENT_UPPER, &password) {
            Outcome::Fail(200, code, _) => assert_eq!(code, "REQUEST_NOT_FOUND"),
            _ => panic!("a password was changed by another client"),
        }
    }

    const IN_ORDER: &str = "<d2p1:EmailAddress>sample string 2</d2p1:EmailAddress>\n    <d2p1:MobilePhoneNumber>sample string 1</d2p1:MobilePhoneNumber>";

    #[test]
    fn only_the_samples_date_time_form_is_taken() {
        assert!(dotnet_form("2024-11-18T12:34:23.6965096+08:00"));
        assert!(dotnet_form("2024-11-18T12:34:23.6965096-03:30"));
        for other in [
            "2024-11-18T04:34:23.6965096Z",
            "2024-11-18T12:34:23.696+08:00",
            "2024-11-18T12:34:23+08:00",
            "2024-11-18T12:34:23.6965096+0800",
        ] {
            assert!(!dotnet_form(other), "{other}");
        }
    }

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
