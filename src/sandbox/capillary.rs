//! The Capillary sandbox: token/generate, otp/generate, otp/validate and password/forget on the
//! mobile and web paths, sessions that expire, OTPs into the outbox, the documented 15xx status
//! codes in the situations Capillary's docs give them, and a per-API-key rate limit answered with
//! HTTP 429. The limit is read as strictly as "1000 requests per minute" can be: never more than
//! that many in any minute, counted as they arrive (a sliding window), so that a gateway spending
//! calls in bursts a fixed-window or token-bucket vendor would forgive fails here.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use super::{demo_customers, password_ok, random_otp, Customer, Outbox};
use crate::http::Reply;

/// The sandbox's API key: a public demo value, not a secret.
pub const DEMO_API_KEY: &str = "sandbox-capillary-key";
/// The header the sandbox reads the API key from unless told another (`--capillary-api-key-header`):
/// the header's name is part of an operator's Capillary setup, and configuration at the gateway.
pub const API_KEY_HEADER: &str = "X-Api-Key";
/// A brand with passwords enabled, and one without (password/forget answers 1524).
pub const BRAND: &str = "DocDemo";
pub const NO_PASSWORD_BRAND: &str = "NoPasswordDemo";

const OTP_LIFETIME: Duration = Duration::from_secs(300);
const MAX_OTP_RETRIES: u32 = 5;
const MAX_PASSWORD_RETRIES: u32 = 5;
const MAX_OTPS_PER_HOUR: usize = 10;
const MAX_SESSIONS: usize = 10_000;

/// A business answer the next request gets instead of its own.
#[derive(Debug, Clone)]
pub struct Forced {
    pub code: u32,
    pub message: Option<String>,
    pub http: u16,
}

/// How the sandbox is set up.
#[derive(Debug, Clone)]
pub struct CapillaryOptions {
    /// Requests per `rate_window` per API key: 1000 a minute, as on Capillary's demo clusters.
    pub rate_limit: u32,
    pub rate_window: Duration,
    /// How long a sessionId lives (15 minutes at Capillary).
    pub session_ttl: Duration,
    /// The header the API key must come in.
    pub api_key_header: String,
}

impl Default for CapillaryOptions {
    fn default() -> Self {
        CapillaryOptions {
            rate_limit: 1000,
            rate_window: Duration::from_secs(60),
            session_ttl: Duration::from_secs(900),
            api_key_header: API_KEY_HEADER.to_string(),
        }
    }
}

struct Session {
    customer: usize,
    identifier_type: String,
    identifier_value: String,
    device_id: String,
    brand: String,
    created: Instant,
    otp: Option<(String, Instant)>,
    otp_failures: u32,
    validated: bool,
    password_failures: u32,
}

struct State {
    customers: Vec<Customer>,
    sessions: HashMap<String, Session>,
    otp_sends: HashMap<usize, Vec<Instant>>,
    /// The next business answer, forced: its code, message and HTTP status.
    forced: Option<Forced>,
}

pub struct CapillarySandbox {
    state: Mutex<State>,
    outbox: Arc<Outbox>,
    /// When the requests of the last `rate_window` arrived, oldest first (the sandbox has one
    /// API key): at most `rate_limit` of them.
    arrivals: Mutex<VecDeque<Instant>>,
    /// The `deviceId` of the last request (empty when it had none; null when its body was not
    /// read), shown at `GET /sandbox/capillary/last-request`.
    last_device_id: Mutex<Option<String>>,
    options: CapillaryOptions,
}

/// A parsed request body; every member is optional until an endpoint asks for it.
struct Request {
    identifier_type: String,
    identifier_value: String,
    device_id: String,
    brand: String,
    session_id: Option<String>,
    otp: Option<String>,
    password: Option<String>,
    confirm_password: Option<String>,
}

fn status(http: u16, code: u32, message: &str) -> Reply {
    let body = json!({"status": {"success": false, "code": code, "message": message}});
    Reply::json(http, serde_json::to_vec(&body).expect("json"))
}

fn ok(extra: Value) -> Reply {
    let mut body = json!({"status": {"success": true, "code": 200, "message": "SUCCESS"}});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    Reply::json(200, serde_json::to_vec(&body).expect("json"))
}

impl CapillarySandbox {
    pub fn new(outbox: Arc<Outbox>, options: CapillaryOptions) -> Self {
        CapillarySandbox {
            state: Mutex::new(State {
                customers: demo_customers(),
                sessions: HashMap::new(),
                otp_sends: HashMap::new(),
                forced: None,
            }),
            outbox,
            arrivals: Mutex::new(VecDeque::new()),
            last_device_id: Mutex::new(None),
            options,
        }
    }

    /// Counts a request against the rate limit, or refuses it with the seconds until the oldest
    /// request counted leaves the window. Refused requests are not counted (as a vendor that
    /// counts what it serves).
    fn admit(&self) -> Result<(), u64> {
        let now = Instant::now();
        let window = self.options.rate_window;
        let mut arrivals = self.arrivals.lock().expect("capillary rate lock");
        while arrivals
            .front()
            .is_some_and(|&at| now.duration_since(at) >= window)
        {
            arrivals.pop_front();
        }
        if arrivals.len() >= self.options.rate_limit.max(1) as usize {
            let oldest = *arrivals.front().expect("the limit is at least 1");
            let wait = (oldest + window).duration_since(now);
            return Err(crate::limit::ceil_secs(wait));
        }
        arrivals.push_back(now);
        Ok(())
    }

    /// Makes the next business request fail with `forced.code` (for exercising the gateway's
    /// mapping), its `message` if given (as a vendor's message may quote what it was sent:
    /// `{sessionId}` in it is replaced by the request's session id), under its HTTP status
    /// (Capillary's business codes usually come under 200, but may come under another).
    pub fn force_next(&self, forced: Forced) {
        self.state.lock().expect("capillary sandbox lock").forced = Some(forced);
    }

    /// The `deviceId` the last request carried, as `{"deviceId": ..}`.
    pub fn last_request(&self) -> Value {
        let device_id = self.last_device_id.lock().expect("capillary last lock");
        json!({ "deviceId": *device_id })
    }

    /// Forgets every session, as if Capillary had lost them.
    pub fn drop_sessions(&self) {
        self.state
            .lock()
            .expect("capillary sandbox lock")
            .sessions
            .clear();
    }

    pub fn handle(
        &self,
        rest: &str,
        content_type: &str,
        api_key: Option<&[u8]>,
        body: &[u8],
    ) -> Reply {
        *self.last_device_id.lock().expect("capillary last lock") = None;
        let Some(after_v1) = rest.strip_prefix("auth/v1/") else {
            return Reply::text(404, "no such Capillary resource\n");
        };
        let (mobile, endpoint) = match after_v1.strip_prefix("web/") {
            Some(e) => (false, e),
            None => (true, after_v1),
        };
        if !matches!(
            endpoint,
            "token/generate" | "otp/generate" | "otp/validate" | "password/forget"
        ) {
            return Reply::text(404, "no such Capillary resource\n");
        }
        // Capillary's API takes JSON only, declared as such: the media type exactly (any case,
        // as media types are), so `application/jsonl` or a `+json` type is not taken for it.
        let media_type = content_type.split(';').next().unwrap_or("").trim();
        if !media_type.eq_ignore_ascii_case("application/json") {
            return status(415, 415, "Content-Type must be application/json");
        }
        let key_ok = api_key.is_some_and(|k| bool::from(k.ct_eq(DEMO_API_KEY.as_bytes())));
        if !key_ok {
            return status(401, 401, "Unauthorized");
        }
        if let Err(retry) = self.admit() {
            return status(429, 429, "Too many requests").header("Retry-After", retry.to_string());
        }
        let Some(req) = parse(body) else {
            return status(400, 400, "Malformed request");
        };
        *self.last_device_id.lock().expect("capillary last lock") = Some(req.device_id.clone());
        if let Some(missing) = missing_member(endpoint, &req) {
            return status(400, 400, &format!("{missing} is mandatory"));
        }
        if mobile && req.device_id.is_empty() {
            return status(400, 400, "deviceId is mandatory on mobile paths");
        }
        let mut state = self.state.lock().expect("capillary sandbox lock");
        if let Some(forced) = state.forced.take() {
            let message = forced
                .message
                .as_deref()
                .unwrap_or("Forced by the sandbox")
                .replace("{sessionId}", req.session_id.as_deref().unwrap_or_default());
            return status(forced.http, forced.code, &message);
        }
        if !matches!(
            req.identifier_type.as_str(),
            "MOBILE" | "EMAIL" | "USERNAME"
        ) {
            return status(200, 1546, "Invalid identifierType");
        }
        if req.brand != BRAND && req.brand != NO_PASSWORD_BRAND {
            return status(200, 1509, "Brand mismatch");
        }
        match endpoint {
            "token/generate" => self.token_generate(&mut state, req),
            "otp/generate" => self.otp_generate(&mut state, &req),
            "otp/validate" => self.otp_validate(&mut state, &req),
            _ => self.password_forget(&mut state, &req),
        }
    }

    fn token_generate(&self, state: &mut State, req: Request) -> Reply {
        let value = req.identifier_value.as_str();
        let found = state
            .customers
            .iter()
            .position(|c| match req.identifier_type.as_str() {
                "EMAIL" => c.email == value,
                "MOBILE" => c.mobile.trim_start_matches('+') == value,
                _ => c.username == value,
            });
        let Some(customer) = found else {
            return status(200, 1515, "User does not exist");
        };
        let ttl = self.options.session_ttl;
        state.sessions.retain(|_, s| s.created.elapsed() < ttl);
        if state.sessions.len() >= MAX_SESSIONS {
            return status(503, 503, "Too many sessions");
        }
        let session_id = format!("P-{}", crate::request_id::generate());
        state.sessions.insert(
            session_id.clone(),
            Session {
                customer,
                identifier_type: req.identifier_type,
                identifier_value: req.identifier_value,
                device_id: req.device_id,
                brand: req.brand,
                created: Instant::now(),
                otp: None,
                otp_failures: 0,
                validated: false,
                password_failures: 0,
            },
        );
        ok(json!({
            "auth": {"token": crate::request_id::generate(), "key": crate::request_id::generate()},
            "user": {"sessionId": session_id, "userRegisteredForPassword": true, "newUser": false}
        }))
    }

    /// The session a request names, checked against the request as Capillary checks it.
    fn session<'a>(&self, state: &'a mut State, req: &Request) -> Result<&'a mut Session, Reply> {
        let id = req.session_id.as_deref().unwrap_or("");
        let Some(session) = state.sessions.get_mut(id) else {
            return Err(status(200, 1505, "Invalid session"));
        };
        if session.created.elapsed() >= self.options.session_ttl {
            return Err(status(200, 1529, "Token expired"));
        }
        if session.identifier_type != req.identifier_type
            || session.identifier_value != req.identifier_value
        {
            return Err(status(200, 1507, "Mobile mismatch"));
        }
        if session.device_id != req.device_id {
            return Err(status(200, 1508, "Device mismatch"));
        }
        if session.brand != req.brand {
            return Err(status(200, 1509, "Brand mismatch"));
        }
        Ok(session)
    }

    fn otp_generate(&self, state: &mut State, req: &Request) -> Reply {
        let customer = match self.session(state, req) {
            Ok(s) => s.customer,
            Err(reply) => return reply,
        };
        let sends = state.otp_sends.entry(customer).or_default();
        sends.retain(|t| t.elapsed() < Duration::from_secs(3600));
        if sends.len() >= MAX_OTPS_PER_HOUR {
            return status(200, 1534, "Maximum OTPs generated for the customer");
        }
        sends.push(Instant::now());
        let otp = random_otp(6);
        self.outbox.push("capillary", &req.identifier_value, &otp);
        if let Some(session) = req
            .session_id
            .as_deref()
            .and_then(|id| state.sessions.get_mut(id))
        {
            session.otp = Some((otp, Instant::now() + OTP_LIFETIME));
            session.otp_failures = 0;
        }
        ok(json!({}))
    }

    fn otp_validate(&self, state: &mut State, req: &Request) -> Reply {
        let session = match self.session(state, req) {
            Ok(s) => s,
            Err(reply) => return reply,
        };
        if session.otp_failures >= MAX_OTP_RETRIES {
            return status(200, 1518, "Maximum OTP retries exceeded");
        }
        let given = req.otp.as_deref().unwrap_or("");
        let matches = match &session.otp {
            Some((code, expires)) => {
                Instant::now() < *expires && bool::from(code.as_bytes().ct_eq(given.as_bytes()))
            }
            None => false,
        };
        if !matches {
            session.otp_failures += 1;
            return status(200, 1506, "Invalid OTP");
        }
        session.otp = None;
        session.validated = true;
        ok(json!({"auth": {"token": crate::request_id::generate()}}))
    }

    fn password_forget(&self, state: &mut State, req: &Request) -> Reply {
        let (customer, id) = match self.session(state, req) {
            Ok(s) if !s.validated => return status(200, 1505, "Invalid session"),
            Ok(s) if s.brand == NO_PASSWORD_BRAND => {
                return status(200, 1524, "Password is not enabled for the brand")
            }
            Ok(s) if s.password_failures >= MAX_PASSWORD_RETRIES => {
                return status(200, 1530, "Maximum password retries exceeded")
            }
            Ok(s) => (s.customer, req.session_id.clone().unwrap_or_default()),
            Err(reply) => return reply,
        };
        let password = req.password.as_deref().unwrap_or("");
        if Some(password) != req.confirm_password.as_deref() {
            return status(200, 1521, "Password and confirm password do not match");
        }
        if state.customers[customer].locked {
            return status(200, 1532, "Unable to reset password");
        }
        let refusal = if password.is_empty() || password.chars().any(char::is_whitespace) {
            Some((1528, "Invalid password"))
        } else if !password_ok(password) {
            Some((1542, "Password does not meet the requirements"))
        } else if state.customers[customer].password == password {
            Some((1527, "Old and new password are the same"))
        } else {
            None
        };
        if let Some((code, message)) = refusal {
            if let Some(s) = state.sessions.get_mut(&id) {
                s.password_failures += 1;
            }
            return status(200, code, message);
        }
        state.customers[customer].password = password.to_string();
        state.sessions.remove(&id);
        ok(json!({}))
    }
}

/// The first member `endpoint` requires that `req` lacks (password/forget's are documented:
/// sessionId, password and confirmPassword; the OTP calls need the session and the code).
fn missing_member(endpoint: &str, req: &Request) -> Option<&'static str> {
    let absent = |v: &Option<String>| v.as_deref().is_none_or(str::is_empty);
    let session = endpoint != "token/generate" && absent(&req.session_id);
    if session {
        return Some("sessionId");
    }
    match endpoint {
        "otp/validate" if absent(&req.otp) => Some("otp"),
        "password/forget" if absent(&req.password) => Some("password"),
        "password/forget" if absent(&req.confirm_password) => Some("confirmPassword"),
        _ => None,
    }
}

fn parse(body: &[u8]) -> Option<Request> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let text = |name: &str| v.get(name).and_then(Value::as_str).map(str::to_string);
    Some(Request {
        identifier_type: text("identifierType")?,
        identifier_value: text("identifierValue")?,
        device_id: text("deviceId").unwrap_or_default(),
        brand: text("brand")?,
        session_id: text("sessionId"),
        otp: text("otp"),
        password: text("password"),
        confirm_password: text("confirmPassword"),
    })
}
