//! The admin listener: liveness, readiness, and (with the in-process sandbox) the sandbox's
//! control endpoints: the outbox, reset-code issuance, call counts. It is a separate port so it can
//! stay off the public network. The sandbox's controls answer loopback callers only: they hand
//! out codes that reset the demo accounts, and a pod's admin port is open to its scraper's
//! namespace, while `kubectl port-forward` arrives from the pod's own loopback.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::http::{Handler, Reply, Request};
use crate::metrics;
use crate::redis_store::{FailurePolicy, RedisStore};
use crate::sandbox::Sandbox;

/// Sandbox control bodies are tiny.
const MAX_BODY: usize = 4096;

/// How long `/readyz` waits for Redis when its answer does not depend on it: well inside the
/// readiness probe's 2-second timeout (deploy/k8s/base/deployment.yaml).
const REPORTING_PING_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

pub struct Admin {
    /// The in-process sandbox, when it runs.
    pub sandbox: Option<Arc<Sandbox>>,
    /// The shared limiter store, when limits live in Redis.
    pub redis: Option<Arc<RedisStore>>,
}

impl Admin {
    /// Ready once the config is loaded (it was, before this listener started). With Redis, the
    /// answer reports its state; it is `503` only when Redis is down and the policy is `deny`.
    /// Under `local` or `allow` this replica still serves starts and code-flow completions, their
    /// load limits decided by the policy; verifications and completions with a reset id are 503
    /// until Redis is back, on every replica alike, so taking the replicas out of the load
    /// balancer would only refuse the rest as well.
    async fn readiness(&self) -> Reply {
        let Some(redis) = &self.redis else {
            return Reply::json(200, &br#"{"status":"ready"}"#[..]);
        };
        let policy = redis.settings().on_failure;
        // Under `local` or `allow` the answer is 200 whatever Redis says, and the ping only
        // reports: it waits at most `REPORTING_PING_WAIT`, so that a Redis that hangs (a
        // `timeout_ms` longer than the probe's own timeout) cannot time the probe out and take
        // every replica out of service at once. Under `deny` the ping decides, in full.
        let up = if policy == FailurePolicy::Deny {
            redis.ping().await
        } else {
            tokio::time::timeout(REPORTING_PING_WAIT, redis.ping())
                .await
                .unwrap_or(false)
        };
        let status = if up || policy != FailurePolicy::Deny {
            200
        } else {
            503
        };
        let body = serde_json::json!({
            "status": if status == 200 { "ready" } else { "not ready" },
            "redis": if up { "up" } else { "down" },
            "on_redis_failure": policy.as_str(),
        });
        Reply::json(status, serde_json::to_vec(&body).unwrap_or_default())
    }

    /// Answers one admin request by its method and path.
    async fn route(&self, request: &mut Request<'_>, peer: Option<SocketAddr>) -> Reply {
        let method = request.method().to_string();
        let path = request.path().to_string();
        // HEAD is answered as GET is (RFC 9110 section 9.1); the server sends no body for it.
        let as_method = if method == "HEAD" { "GET" } else { &method };
        match (as_method, path.as_str(), &self.sandbox) {
            ("GET", "/healthz", _) => Reply::json(200, &br#"{"status":"ok"}"#[..]),
            ("GET", "/readyz", _) => self.readiness().await,
            ("GET", "/metrics", _) => Reply::new(
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                metrics::render(),
            ),
            (_, p, Some(sandbox)) if p.starts_with("/sandbox/") => {
                if let Some(refusal) = crate::sandbox::refuse_a_remote_caller(peer) {
                    return refusal;
                }
                match request.read_body(MAX_BODY).await {
                    Ok(()) => sandbox.control(as_method, &path, request.body()),
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

impl Handler for Admin {
    async fn handle(&self, request: &mut Request<'_>, peer: Option<SocketAddr>) -> Reply {
        // Every answer carries an X-Request-Id, the caller's if it sent a sane one, as the API's
        // do, and none is cached: the outbox holds codes.
        let id = crate::request_id::accept_or_generate(request.header("X-Request-Id"));
        self.route(request, peer)
            .await
            .header("X-Request-Id", id)
            .header("Cache-Control", "no-store")
    }

    /// A head that could not be parsed has no X-Request-Id to take: it gets a new one, and is
    /// not cached either, as every other answer of this listener.
    fn refuse(&self, detail: &str) -> Reply {
        crate::http::plain_refusal(detail)
            .header("X-Request-Id", crate::request_id::generate())
            .header("Cache-Control", "no-store")
    }
}
