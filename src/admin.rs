//! The admin listener: liveness, readiness, and (with the in-process sandbox) the OTP outbox.
//! It is a separate port so it can stay off the public network.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::protocols::http::ServerSession;

use crate::http::{path, Handler, Reply};
use crate::sandbox::Outbox;

pub struct Admin {
    /// The in-process sandbox's outbox, when the sandbox runs.
    pub outbox: Option<Arc<Outbox>>,
}

#[async_trait]
impl Handler for Admin {
    async fn handle(&self, session: &mut ServerSession, _peer: Option<SocketAddr>) -> Reply {
        if session.req_header().method != "GET" {
            return Reply::text(405, "the admin endpoints take GET\n").header("Allow", "GET");
        }
        match (path(session), &self.outbox) {
            ("/healthz", _) => Reply::json(200, &br#"{"status":"ok"}"#[..]),
            // The config was loaded and validated before this listener started.
            ("/readyz", _) => Reply::json(200, &br#"{"status":"ready"}"#[..]),
            ("/sandbox/outbox", Some(outbox)) => Reply::json(200, outbox.to_json()),
            _ => Reply::text(404, "not found\n"),
        }
    }
}
