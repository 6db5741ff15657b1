//! Sandbox vendors: real HTTP servers on loopback that speak each vendor's protocol as documented,
//! check signatures, keep OTP and session state with expiry, and record every OTP they "send" in an
//! outbox a developer can read. The default gateway.toml runs them in-process so the whole flow
//! works with no vendor account; tests run them as their own process.
//!
//! Invariant: the sandbox shares no wire code with the adapters. It implements each vendor from
//! the vendor's documentation on its own, so an adapter that gets the protocol wrong fails here.

pub mod amsalem;
pub mod capillary;
pub mod cbss;
pub mod hepsiburada;

/// The body formats of the ASP.NET vendors (CBSS, Amsalem, Hepsiburada).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Xml,
}

impl Format {
    /// The format a `Content-Type` names: exactly one of the media types ASP.NET Web API's
    /// formatters take (the vendors' help pages list these four), any parameters aside.
    fn of(content_type: &str) -> Option<Format> {
        let media_type = content_type.split(';').next().unwrap_or("").trim();
        if ["application/json", "text/json"]
            .iter()
            .any(|t| media_type.eq_ignore_ascii_case(t))
        {
            Some(Format::Json)
        } else if ["application/xml", "text/xml"]
            .iter()
            .any(|t| media_type.eq_ignore_ascii_case(t))
        {
            Some(Format::Xml)
        } else {
            None
        }
    }
}

/// Whether `element`'s members are as .NET's DataContractSerializer reads them: each in
/// `namespace`, in ordinal order of name, none twice. The real reader skips a member out of order
/// or in another namespace, as if it were absent, and the vendor then refuses the request.
fn datacontract_members_ok(element: &crate::xml::Element, namespace: &str) -> bool {
    element.children.iter().all(|c| *c.namespace == *namespace)
        && element
            .children
            .windows(2)
            .all(|pair| pair[0].name.as_bytes() < pair[1].name.as_bytes())
}

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::http::{Handler, Reply, Request, WireShape};

/// Oldest entries are dropped past this many, so a long-running sandbox stays bounded.
const OUTBOX_CAPACITY: usize = 1_000;
/// Sandbox request bodies are small; anything bigger is refused.
const MAX_BODY: usize = 64 * 1024;

/// One message a sandbox vendor "sent" to a customer.
#[derive(Debug, Clone, Serialize)]
pub struct OutboxEntry {
    pub vendor: &'static str,
    pub to: String,
    pub otp: String,
    pub sent_at: String,
}

/// The OTPs the sandbox vendors have sent, oldest first.
#[derive(Default)]
pub struct Outbox {
    entries: Mutex<VecDeque<OutboxEntry>>,
}

impl Outbox {
    pub fn push(&self, vendor: &'static str, to: &str, otp: &str) {
        let mut entries = self.entries.lock().expect("outbox lock");
        if entries.len() >= OUTBOX_CAPACITY {
            entries.pop_front();
        }
        entries.push_back(OutboxEntry {
            vendor,
            to: to.to_string(),
            otp: otp.to_string(),
            sent_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        });
    }

    pub fn to_json(&self) -> Vec<u8> {
        let entries = self.entries.lock().expect("outbox lock");
        serde_json::to_vec(&*entries).unwrap_or_else(|_| b"[]".to_vec())
    }
}

/// A customer the sandbox vendors know.
#[derive(Debug, Clone)]
pub struct Customer {
    pub email: &'static str,
    pub mobile: &'static str,
    pub username: &'static str,
    pub password: String,
    /// A customer whose password the vendor cannot reset (Capillary answers 1532).
    pub locked: bool,
}

/// The demo customers every sandbox vendor starts with. Documented in the README.
pub fn demo_customers() -> Vec<Customer> {
    vec![
        Customer {
            email: "somchai@example.com",
            mobile: "+66812345678",
            username: "somchai",
            password: "Old-Passw0rd".into(),
            locked: false,
        },
        Customer {
            email: "mei@example.com",
            mobile: "+886912345678",
            username: "mei",
            password: "Old-Passw0rd".into(),
            locked: false,
        },
        Customer {
            email: "locked@example.com",
            mobile: "+66800000000",
            username: "locked",
            password: "Old-Passw0rd".into(),
            locked: true,
        },
    ]
}

/// How the sandbox vendors behave, including knobs for exercising the gateway against a slow or
/// strict vendor.
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    /// Wait this long before answering any vendor request.
    pub delay: Duration,
    /// How long a CBSS one-time code lives (5 minutes).
    pub cbss_otp_lifetime: Duration,
    pub capillary: capillary::CapillaryOptions,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        SandboxOptions {
            delay: Duration::ZERO,
            cbss_otp_lifetime: cbss::OTP_LIFETIME,
            capillary: capillary::CapillaryOptions::default(),
        }
    }
}

/// A way for a sandbox vendor to misbehave, set through `POST /sandbox/faults`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// An HTML error page with status 200.
    Html,
    /// A 1 MiB answer.
    Huge,
    /// A valid answer, one byte every 100 ms.
    Trickle,
    /// Part of an answer, then the connection closes.
    CutShort,
    /// XML with a DOCTYPE defining entities (a "billion laughs" start).
    Doctype,
    /// Bytes that are not UTF-8.
    InvalidUtf8,
    /// A valid answer labelled text/plain.
    WrongContentType,
    /// A valid answer, sent in chunks (as many vendors' servers frame answers).
    Chunked,
    /// A valid answer without a length, ended by closing the connection (HTTP/1.0 style).
    CloseDelimited,
}

impl Fault {
    fn parse(name: &str) -> Option<Fault> {
        Some(match name {
            "html" => Fault::Html,
            "huge" => Fault::Huge,
            "trickle" => Fault::Trickle,
            "cut-short" => Fault::CutShort,
            "doctype" => Fault::Doctype,
            "invalid-utf8" => Fault::InvalidUtf8,
            "wrong-content-type" => Fault::WrongContentType,
            "chunked" => Fault::Chunked,
            "close-delimited" => Fault::CloseDelimited,
            _ => return None,
        })
    }

    /// Replaces the vendor's real answer (the vendor has already acted on the request).
    fn apply(self, mut reply: Reply) -> Reply {
        match self {
            Fault::Html => Reply::new(
                200,
                "text/html",
                &b"<html><body><h1>502 Bad Gateway</h1></body></html>"[..],
            ),
            Fault::Huge => Reply::json(200, vec![b' '; 1024 * 1024]),
            Fault::Trickle => {
                reply.shape = WireShape::Trickle(Duration::from_millis(100));
                reply
            }
            Fault::CutShort => {
                reply.shape = WireShape::CutShort;
                reply
            }
            Fault::Doctype => Reply::new(
                200,
                "application/xml",
                &br#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]><EmailAddressOrMobilePhoneNumber><IsSuccessful>&lol2;</IsSuccessful></EmailAddressOrMobilePhoneNumber>"#[..],
            ),
            Fault::InvalidUtf8 => Reply::new(
                200,
                "application/json",
                &b"{\"IsSuccessful\":\"\xff\xfe\"}"[..],
            ),
            Fault::WrongContentType => {
                reply.content_type = "text/plain";
                reply
            }
            Fault::Chunked => {
                reply.shape = WireShape::Chunked;
                reply
            }
            Fault::CloseDelimited => {
                reply.shape = WireShape::UntilClose;
                reply.close = true;
                reply
            }
        }
    }
}

/// `403` to a caller of the sandbox's controls that is not this host's loopback, on whichever
/// listener serves them (the sandbox's own, the admin listener) and whatever address it is on:
/// the controls hand out the codes that reset the demo accounts (the outbox, reset codes) and
/// steer what the vendors answer. A pod's admin port is open to its scraper's namespace, while
/// `kubectl port-forward` arrives from the pod's own loopback.
pub fn refuse_a_remote_caller(peer: Option<SocketAddr>) -> Option<Reply> {
    (!peer.is_some_and(is_loopback))
        .then(|| Reply::text(403, "the sandbox's controls answer loopback callers only\n"))
}

/// Whether `peer` is this host's loopback, IPv4 or IPv6 (an IPv4 address mapped into IPv6, as a
/// dual-stack socket reports it, included).
fn is_loopback(peer: SocketAddr) -> bool {
    match peer.ip() {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(v6.is_loopback(), |v4| v4.is_loopback()),
    }
}

/// Why a code-flow sandbox issued no reset code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotIssued {
    /// No demo customer goes by that identifier.
    NoSuchCustomer,
    /// As many codes as the sandbox keeps are alive: refused until some expire, rather than
    /// answered as though the customer did not exist.
    Full,
}

/// All sandbox vendors behind one listener, each under its own path prefix (`/cbss/...`).
pub struct Sandbox {
    pub outbox: Arc<Outbox>,
    cbss: cbss::CbssSandbox,
    capillary: capillary::CapillarySandbox,
    amsalem: amsalem::AmsalemSandbox,
    hepsiburada: hepsiburada::HepsiburadaSandbox,
    /// Vendor requests received, by vendor: proof of whether the gateway called.
    calls: Mutex<BTreeMap<&'static str, u64>>,
    /// How the last request to each vendor was sent: its path, `Content-Type`, `X-Request-Id`
    /// (`request_id`, null when absent) and, for CBSS, its `Language` (never its signature or
    /// body), so tests can see the format and language a connection is set to reach the vendor,
    /// and the request id it passes on.
    last: Mutex<BTreeMap<&'static str, serde_json::Value>>,
    /// The fault to answer the next vendor requests with, and how many more times.
    fault: Mutex<Option<(Fault, u32)>>,
    options: SandboxOptions,
}

impl Sandbox {
    pub fn new(options: SandboxOptions) -> Self {
        let outbox = Arc::new(Outbox::default());
        Sandbox {
            cbss: cbss::CbssSandbox::new(outbox.clone(), options.cbss_otp_lifetime),
            capillary: capillary::CapillarySandbox::new(outbox.clone(), options.capillary.clone()),
            amsalem: amsalem::AmsalemSandbox::new(outbox.clone()),
            hepsiburada: hepsiburada::HepsiburadaSandbox::new(outbox.clone()),
            outbox,
            calls: Mutex::new(BTreeMap::new()),
            last: Mutex::new(BTreeMap::new()),
            fault: Mutex::new(None),
            options,
        }
    }

    /// Notes a request to `vendor`: counted in `calls`, and how it was sent kept in `last`.
    fn arrived(
        &self,
        vendor: &'static str,
        path: &str,
        content_type: &str,
        request_id: Option<&str>,
        language: Option<&str>,
    ) {
        *self
            .calls
            .lock()
            .expect("calls lock")
            .entry(vendor)
            .or_default() += 1;
        let seen = serde_json::json!({
            "path": path, "content_type": content_type, "request_id": request_id,
            "language": language,
        });
        self.last.lock().expect("last lock").insert(vendor, seen);
    }

    /// `GET /sandbox/{vendor}/last-request`: how the vendor's last request was sent, for
    /// Hepsiburada the end user's address, agent and session id it carried, and for Capillary
    /// its `deviceId`.
    fn last_request(&self, vendor: &str) -> Option<serde_json::Value> {
        let mut seen = self.last.lock().expect("last lock").get(vendor).cloned();
        let more = match vendor {
            "hepsiburada" => self.hepsiburada.last_request(),
            "capillary" => self.capillary.last_request(),
            _ => serde_json::Value::Null,
        };
        if let (Some(seen), serde_json::Value::Object(more)) = (seen.as_mut(), more) {
            seen.as_object_mut()?.extend(more);
        }
        seen
    }

    /// The sandbox's own control endpoints, under `/sandbox/`. Served on the sandbox's listener,
    /// and on the gateway's admin listener when the sandbox runs in-process.
    pub fn control(&self, method: &str, path: &str, body: &[u8]) -> Reply {
        match (method, path) {
            ("GET", "/sandbox/outbox") => Reply::json(200, self.outbox.to_json()),
            ("GET", "/sandbox/calls") => {
                let calls = self.calls.lock().expect("calls lock");
                Reply::json(200, serde_json::to_vec(&*calls).unwrap_or_default())
            }
            ("POST", "/sandbox/capillary/next-status") => {
                let asked = serde_json::from_slice::<serde_json::Value>(body).ok();
                let code = asked
                    .as_ref()
                    .and_then(|v| v.get("code")?.as_u64())
                    .and_then(|c| u32::try_from(c).ok());
                let message = asked
                    .as_ref()
                    .and_then(|v| Some(v.get("message")?.as_str()?.to_string()));
                // The HTTP status to send it under: 200 unless asked, 200 to 599 if asked.
                let http = match asked.as_ref().and_then(|v| v.get("http")) {
                    None => Some(200),
                    Some(h) => h
                        .as_u64()
                        .and_then(|h| u16::try_from(h).ok())
                        .filter(|h| (200..=599).contains(h)),
                };
                match (code, http) {
                    (Some(code), Some(http)) => {
                        let forced = capillary::Forced {
                            code,
                            message,
                            http,
                        };
                        self.capillary.force_next(forced);
                        Reply::json(200, &b"{}"[..])
                    }
                    _ => Reply::text(
                        400,
                        "send {\"code\": 1506} (and a \"message\" and an \"http\" status from 200 to 599 if you like)\n",
                    ),
                }
            }
            ("POST", "/sandbox/amsalem/reset-codes")
            | ("POST", "/sandbox/hepsiburada/reset-codes") => {
                let identifier = serde_json::from_slice::<serde_json::Value>(body)
                    .ok()
                    .and_then(|v| {
                        v.get("identifier")
                            .and_then(|i| i.as_str())
                            .map(str::to_string)
                    });
                let Some(identifier) = identifier else {
                    return Reply::text(400, "send {\"identifier\": \"somchai\"}\n");
                };
                let code = if path.contains("amsalem") {
                    self.amsalem.issue_key(&identifier)
                } else {
                    self.hepsiburada.issue_change_request(&identifier)
                };
                match code {
                    Ok(code) => Reply::json(
                        200,
                        serde_json::to_vec(&serde_json::json!({ "reset_code": code }))
                            .unwrap_or_default(),
                    ),
                    Err(NotIssued::NoSuchCustomer) => Reply::text(404, "no such customer\n"),
                    Err(NotIssued::Full) => Reply::text(
                        503,
                        "too many live reset codes: try again when some have expired\n",
                    ),
                }
            }
            ("GET", _) if path.ends_with("/last-request") => {
                let vendor = path
                    .trim_start_matches("/sandbox/")
                    .trim_end_matches("/last-request");
                match self.last_request(vendor) {
                    Some(seen) => Reply::json(200, serde_json::to_vec(&seen).unwrap_or_default()),
                    None => Reply::text(404, "no request to that vendor yet\n"),
                }
            }
            ("POST", "/sandbox/faults") => {
                let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
                let fault = v
                    .get("fault")
                    .and_then(|f| f.as_str())
                    .and_then(Fault::parse);
                // A count past u32 is refused rather than cut to its low bits (2^32 read as 0).
                let count = match v.get("count") {
                    None => Some(1),
                    Some(c) => c.as_u64().and_then(|c| u32::try_from(c).ok()),
                };
                match fault.zip(count) {
                    Some((f, count)) => {
                        *self.fault.lock().expect("fault lock") = Some((f, count));
                        Reply::json(200, &b"{}"[..])
                    }
                    None => Reply::text(400, "send {\"fault\": \"html\", \"count\": 1}\n"),
                }
            }
            ("POST", "/sandbox/capillary/drop-sessions") => {
                self.capillary.drop_sessions();
                Reply::json(200, &b"{}"[..])
            }
            _ => Reply::text(404, "no such sandbox control\n"),
        }
    }
}

impl Handler for Sandbox {
    async fn handle(&self, request: &mut Request<'_>, peer: Option<SocketAddr>) -> Reply {
        let path = request.path().to_string();
        let method = request.method().to_string();
        // The vendor APIs answer anyone, as a vendor's do; the controls, loopback callers only.
        if path.starts_with("/sandbox/") {
            if let Some(refusal) = refuse_a_remote_caller(peer) {
                return refusal;
            }
        }
        if path == "/sandbox/outbox" && method == "GET" {
            return Reply::json(200, self.outbox.to_json());
        }
        if method != "POST" && !path.starts_with("/sandbox/") {
            return Reply::text(405, "sandbox vendors take POST\n");
        }
        if request.read_body(MAX_BODY).await.is_err() {
            let mut reply = Reply::text(413, "request body too large or incomplete\n");
            reply.close = true;
            return reply;
        }
        let body = request.body();
        if path.starts_with("/sandbox/") {
            return self.control(&method, &path, body);
        }
        if !self.options.delay.is_zero() {
            tokio::time::sleep(self.options.delay).await;
        }
        let reply = self.vendor_reply(request, &path, body);
        let fault = {
            let mut pending = self.fault.lock().expect("fault lock");
            match pending.as_mut() {
                Some((fault, left)) if *left > 0 => {
                    *left -= 1;
                    Some(*fault)
                }
                _ => None,
            }
        };
        match fault {
            Some(fault) => fault.apply(reply),
            None => reply,
        }
    }
}

impl Sandbox {
    /// The vendor's own answer to a request under its path prefix.
    fn vendor_reply(&self, request: &Request<'_>, path: &str, body: &[u8]) -> Reply {
        let content_type = request.header_str("Content-Type").unwrap_or("").to_string();
        let request_id = request.header_str("X-Request-Id");
        if let Some(rest) = path.strip_prefix("/capillary/") {
            self.arrived("capillary", path, &content_type, request_id, None);
            let api_key = request
                .header(&self.options.capillary.api_key_header)
                .map(<[u8]>::to_vec);
            return self
                .capillary
                .handle(rest, &content_type, api_key.as_deref(), body);
        }
        if let Some(rest) = path.strip_prefix("/amsalem/") {
            self.arrived("amsalem", path, &content_type, request_id, None);
            return self.amsalem.handle(rest, &content_type, body);
        }
        if let Some(rest) = path.strip_prefix("/hepsiburada/") {
            self.arrived("hepsiburada", path, &content_type, request_id, None);
            return self.hepsiburada.handle(rest, &content_type, body);
        }
        if let Some(rest) = path.strip_prefix("/cbss/") {
            let query = request.query().unwrap_or("").to_string();
            let language = query_param(&query, "Language");
            self.arrived("cbss", path, &content_type, request_id, language);
            return self.cbss.handle(rest, &query, &content_type, body);
        }
        Reply::text(404, "no sandbox vendor at this path\n")
    }
}

/// The value of `name` in a URL query string (no percent-decoding: sandbox values are plain).
pub fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The sandboxes' password rule: at least 8 characters, with letters and digits.
pub fn password_ok(password: &str) -> bool {
    password.chars().count() >= 8
        && password.chars().any(char::is_alphabetic)
        && password.chars().any(|c| c.is_ascii_digit())
}

/// A random numeric code of `digits` digits.
pub fn random_otp(digits: usize) -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..digits)
        .map(|_| char::from(b'0' + rng.gen_range(0..10u8)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_hosts_loopback_is_loopback() {
        for local in [
            "127.0.0.1:1",
            "127.9.9.9:1",
            "[::1]:1",
            "[::ffff:127.0.0.1]:1",
        ] {
            assert!(is_loopback(local.parse().unwrap()), "{local}");
        }
        for remote in [
            "10.0.0.1:1",
            "0.0.0.0:1",
            "[::ffff:10.0.0.1]:1",
            "[fe80::1]:1",
            "[::]:1",
        ] {
            assert!(!is_loopback(remote.parse().unwrap()), "{remote}");
        }
    }

    #[test]
    fn a_fault_count_past_u32_is_refused_not_cut_short() {
        let sandbox = Sandbox::new(SandboxOptions::default());
        let set = |body: &str| sandbox.control("POST", "/sandbox/faults", body.as_bytes());
        assert_eq!(set(r#"{"fault":"html","count":4294967296}"#).status, 400);
        assert_eq!(set(r#"{"fault":"html","count":-1}"#).status, 400);
        assert_eq!(set(r#"{"fault":"html","count":4294967295}"#).status, 200);
        assert_eq!(set(r#"{"fault":"html"}"#).status, 200);
        assert_eq!(*sandbox.fault.lock().unwrap(), Some((Fault::Html, 1)));
    }

    #[test]
    fn only_the_four_documented_media_types_name_a_format() {
        for json in [
            "application/json",
            "text/json",
            "Application/JSON; charset=utf-8",
        ] {
            assert!(Format::of(json) == Some(Format::Json), "{json}");
        }
        for xml in ["application/xml", "text/xml;charset=utf-8"] {
            assert!(Format::of(xml) == Some(Format::Xml), "{xml}");
        }
        for other in [
            "application/problem+json",
            "text/plain; x=json",
            "application/soap+xml",
            "",
        ] {
            assert!(Format::of(other).is_none(), "{other}");
        }
    }
}
