//! Sandbox vendors: real HTTP servers on loopback that speak each vendor's protocol as documented,
//! check signatures, keep OTP and session state with expiry, and record every OTP they "send" in an
//! outbox a developer can read. The default gateway.toml runs them in-process so the whole flow
//! works with no vendor account; tests run them as their own process.
//!
//! Invariant: the sandbox shares no wire code with the adapters. It implements each vendor from
//! the vendor's documentation on its own, so an adapter that gets the protocol wrong fails here.

pub mod cbss;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pingora::protocols::http::ServerSession;
use serde::Serialize;

use crate::http::{path, read_body, Handler, Reply};

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
}

/// The demo customers every sandbox vendor starts with. Documented in the README.
pub fn demo_customers() -> Vec<Customer> {
    vec![
        Customer {
            email: "somchai@example.com",
            mobile: "+66812345678",
            username: "somchai",
            password: "Old-Passw0rd".into(),
        },
        Customer {
            email: "mei@example.com",
            mobile: "+886912345678",
            username: "mei",
            password: "Old-Passw0rd".into(),
        },
    ]
}

/// Knobs for exercising the gateway against a misbehaving vendor.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Wait this long before answering any vendor request.
    pub delay: Duration,
}

/// All sandbox vendors behind one listener, each under its own path prefix (`/cbss/...`).
pub struct Sandbox {
    pub outbox: Arc<Outbox>,
    cbss: cbss::CbssSandbox,
    faults: Faults,
}

impl Sandbox {
    pub fn new(faults: Faults) -> Self {
        let outbox = Arc::new(Outbox::default());
        Sandbox {
            cbss: cbss::CbssSandbox::new(outbox.clone()),
            outbox,
            faults,
        }
    }
}

#[async_trait]
impl Handler for Sandbox {
    async fn handle(&self, session: &mut ServerSession, _peer: Option<SocketAddr>) -> Reply {
        let path = path(session).to_string();
        let method = session.req_header().method.clone();
        if path == "/sandbox/outbox" {
            return Reply::json(200, self.outbox.to_json());
        }
        if method != "POST" {
            return Reply::text(405, "sandbox vendors take POST\n");
        }
        let body = match read_body(session, MAX_BODY).await {
            Ok(body) => body,
            Err(_) => {
                let mut reply = Reply::text(413, "request body too large or incomplete\n");
                reply.close = true;
                return reply;
            }
        };
        if !self.faults.delay.is_zero() {
            tokio::time::sleep(self.faults.delay).await;
        }
        if let Some(rest) = path.strip_prefix("/cbss/") {
            let query = session.req_header().uri.query().unwrap_or("").to_string();
            let content_type = session
                .get_header("Content-Type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            return self.cbss.handle(rest, &query, &content_type, &body);
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

/// A random numeric code of `digits` digits.
pub fn random_otp(digits: usize) -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..digits)
        .map(|_| char::from(b'0' + rng.gen_range(0..10u8)))
        .collect()
}
