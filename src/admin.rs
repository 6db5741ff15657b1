//! The admin listener: liveness, readiness, and (with the in-process sandbox) the sandbox's
//! control endpoints: the outbox, reset-code issuance, call counts. It is a separate port so it can
//! stay off the public network.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::protocols::http::ServerSession;

use crate::http::{path, read_body, Handler, Reply};
use crate::sandbox::Sandbox;

/// Sandbox control bodies are tiny.
const MAX_BODY: usize = 4096;

pub struct Admin {
    /// The in-process sandbox, when it runs.
    pub sandbox: Option<Arc<Sandbox>>,
}

#[async_trait]
impl Handler for Admin {
    async fn handle(&self, session: &mut ServerSession, _peer: Option<SocketAddr>) -> Reply {
        let method = session.req_header().method.as_str().to_string();
        let path = path(session).to_string();
        match (method.as_str(), path.as_str(), &self.sandbox) {
            ("GET", "/healthz", _) => Reply::json(200, &br#"{"status":"ok"}"#[..]),
            // The config was loaded and validated before this listener started.
            ("GET", "/readyz", _) => Reply::json(200, &br#"{"status":"ready"}"#[..]),
            (_, p, Some(sandbox)) if p.starts_with("/sandbox/") => {
                match read_body(session, MAX_BODY).await {
                    Ok(body) => sandbox.control(&method, &path, &body),
                    Err(_) => {
                        let mut reply = Reply::text(413, "body too large or incomplete\n");
                        reply.close = true;
                        reply
                    }
                }
            }
            _ => Reply::text(404, "not found\n"),
        }
    }
}
