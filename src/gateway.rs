//! The API listener's handler: the order of the layers, written once.
//!
//! request id -> route -> authenticate (API key -> tenant) -> content type -> bounded body ->
//! strict parse -> the step (with the connection's total timeout) -> reply. Every error becomes a
//! response in `problem_reply`, nowhere else.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use subtle::ConstantTimeEq;

use crate::api::types::{parse, CompleteRequest, StartRequest, VerifyRequest};
use crate::api::{openapi, ErrorCode, Problem};
use crate::client_ip::{self, Cidr};
use crate::config::{Config, ConnectionSettings, TenantSettings, VendorSettings};
use crate::flow;
use crate::http::{BodyError, Handler, Reply, Request};
use crate::language;
use crate::limit::vendor_budget::{stricter, vendor_budget};
use crate::limit::{self, LimitName, LimitState, Limiter, Mode, Quota};
use crate::metrics::{self, OutboundGauge};
use crate::recent_durations::RecentDurations;
use crate::request_id::{self, RequestId};
use crate::signing::sha256;
use crate::single_use::UsedIds;
use crate::token::TokenKeys;
use crate::upstream::UpstreamClient;
use crate::vendors::amsalem::Amsalem;
use crate::vendors::capillary::Capillary;
use crate::vendors::cbss::Cbss;
use crate::vendors::hepsiburada::Hepsiburada;
use crate::vendors::{CanonicalStep, StepContext, VendorAdapter};

/// A tenant, ready to serve: its settings and its vendor connection.
pub struct Tenant {
    pub settings: TenantSettings,
    pub adapter: Arc<dyn VendorAdapter>,
    /// The connection's time budget for a whole step.
    pub step_timeout: Duration,
    /// The connection's outbound budget, if it has one.
    pub outbound: Option<OutboundBudget>,
    /// How long this tenant's recent real verifications took at the vendor: a decoy's
    /// verification waits as long (recent_durations.rs).
    pub recent_verifications: RecentDurations,
}

/// A vendor account's outbound budget, as the tenants of its connections spend it.
#[derive(Clone)]
pub struct OutboundBudget {
    /// The limiter key: the same for every connection on the account.
    pub key: String,
    pub quota: Quota,
    /// What the metrics show of it.
    pub gauge: Arc<OutboundGauge>,
}

/// API keys by the first 8 bytes of their SHA-256. Those bytes are already uniformly spread, and
/// no caller can steer them (they would need preimages), so the map uses them as its hash as
/// they are.
type KeyIndex = HashMap<u64, Vec<usize>, BuildHasherDefault<crate::limit::memory::AlreadyHashed>>;

/// Two digests compared in constant time, as four words: `subtle` compares a byte slice a byte
/// at a time, each behind its optimisation barrier (about 220 instructions for 32 bytes).
fn digests_equal(a: &[u8; 32], b: &[u8; 32]) -> subtle::Choice {
    (0..4).fold(subtle::Choice::from(1), |equal, i| {
        equal & digest_word(a, i).ct_eq(&digest_word(b, i))
    })
}

/// The `i`th of a digest's four 8-byte words.
fn digest_word(digest: &[u8; 32], i: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&digest[8 * i..8 * i + 8]);
    u64::from_le_bytes(word)
}

fn key_prefix(digest: &[u8; 32]) -> u64 {
    digest_word(digest, 0)
}

struct KeyEntry {
    sha256: [u8; 32],
    tenant: usize,
    /// The limiter key of this API key's per-key limit (names, never the key itself).
    limit_key: String,
    quota: Quota,
}

pub struct Gateway {
    tenants: Vec<Tenant>,
    keys: Vec<KeyEntry>,
    /// Indices into `keys` by the first 8 bytes of each key's SHA-256 (`key_prefix`).
    keys_by_prefix: KeyIndex,
    token_keys: TokenKeys,
    limiter: Arc<dyn Limiter>,
    used: Arc<dyn UsedIds>,
    per_identifier: Quota,
    trusted_proxies: Vec<Cidr>,
    max_body_bytes: usize,
    openapi: Bytes,
    /// How long before its step's deadline a wait for a vendor connection gives up
    /// (`Config::connection_wait_margin`).
    wait_margin: Duration,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    Start,
    Verify,
    Complete,
}

impl Route {
    fn from_path(path: &str) -> Option<Route> {
        match path {
            "/reset" => Some(Route::Start),
            "/reset/verify" => Some(Route::Verify),
            "/reset/complete" => Some(Route::Complete),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Route::Start => "start",
            Route::Verify => "verify",
            Route::Complete => "complete",
        }
    }
}

/// What the request log line says about a request, filled in as it goes.
#[derive(Default)]
struct Outcome<'a> {
    tenant: Option<&'a str>,
    vendor: Option<&'static str>,
    upstream_us: u64,
    step: Option<&'static str>,
    code: Option<&'static str>,
    /// The API key's per-key limit after this request, for the RateLimit fields.
    per_key: Option<LimitState>,
}

impl Gateway {
    /// Builds the gateway from a validated config, taking its token keys.
    pub fn new(config: &mut Config, limiter: Arc<dyn Limiter>, used: Arc<dyn UsedIds>) -> Gateway {
        // Connections on one vendor account (Capillary's web and mobile paths on one API key,
        // say) share one budget, since the vendor counts the account's calls, not each
        // connection's: it is kept under the first such connection's name, with the strictest
        // of their quotas, and a connection with no limit of its own spends from it too. Spent
        // so that the vendor never sees more than its limit in any window; one gauge per
        // account, shown under each of its connections.
        let mut gauges: HashMap<String, Arc<OutboundGauge>> = HashMap::new();
        let budgets: Vec<Option<OutboundBudget>> = config
            .connections
            .iter()
            .map(|conn| {
                let account: Vec<&ConnectionSettings> = config
                    .connections
                    .iter()
                    .filter(|other| other.same_account(conn))
                    .collect();
                let first = account.first().map_or(&conn.name, |first| &first.name);
                let quota = account
                    .iter()
                    .filter_map(|other| {
                        other.outbound.map(|limit| {
                            vendor_budget(
                                limit,
                                other.vendor.most_calls_per_step(),
                                other.timeouts.total,
                            )
                        })
                    })
                    .reduce(stricter)?;
                let gauge = gauges.entry(first.clone()).or_insert_with(|| {
                    let members: Vec<(&str, &str)> = account
                        .iter()
                        .map(|other| (other.name.as_str(), other.vendor.name()))
                        .collect();
                    OutboundGauge::register(quota, &members)
                });
                Some(OutboundBudget {
                    key: format!("outbound:{first}"),
                    quota,
                    gauge: Arc::clone(gauge),
                })
            })
            .collect();
        let mut adapters = Vec::new();
        for (conn, outbound) in config.connections.iter().zip(budgets) {
            let client =
                UpstreamClient::new(conn.vendor.name(), conn.base_url.clone(), conn.timeouts)
                    .for_connection(&conn.name, conn.max_connections, config.server.threads);
            let adapter: Arc<dyn VendorAdapter> = match &conn.vendor {
                VendorSettings::Cbss(settings) => Arc::new(Cbss::new(settings.clone(), client)),
                VendorSettings::Capillary(settings) => {
                    Arc::new(Capillary::new(settings.clone(), client))
                }
                VendorSettings::Amsalem(settings) => {
                    Arc::new(Amsalem::new(settings.clone(), client))
                }
                VendorSettings::Hepsiburada(settings) => {
                    Arc::new(Hepsiburada::new(settings.clone(), client))
                }
            };
            let most_per_step = CanonicalStep::ALL
                .into_iter()
                .map(|step| adapter.vendor_calls(step))
                .max()
                .unwrap_or(1);
            // The config refused budgets smaller than this by the settings' own count.
            debug_assert_eq!(most_per_step, conn.vendor.most_calls_per_step());
            adapters.push((conn.name.clone(), adapter, conn.timeouts.total, outbound));
        }
        let mut tenants = Vec::new();
        let mut keys = Vec::new();
        for settings in &config.tenants {
            let (_, adapter, step_timeout, outbound) = adapters
                .iter()
                .find(|(name, _, _, _)| *name == settings.connection)
                .expect("validated config: every tenant's connection exists");
            for key in &settings.api_keys {
                keys.push(KeyEntry {
                    sha256: key.sha256,
                    tenant: tenants.len(),
                    limit_key: format!("per-key:{}:{}", settings.name, key.name),
                    quota: key.quota,
                });
            }
            tenants.push(Tenant {
                settings: settings.clone(),
                adapter: adapter.clone(),
                step_timeout: *step_timeout,
                outbound: outbound.clone(),
                recent_verifications: RecentDurations::new(),
            });
        }
        let mut keys_by_prefix = KeyIndex::default();
        for (index, entry) in keys.iter().enumerate() {
            keys_by_prefix
                .entry(key_prefix(&entry.sha256))
                .or_default()
                .push(index);
        }
        Gateway {
            tenants,
            keys,
            keys_by_prefix,
            token_keys: std::mem::replace(&mut config.token_keys, TokenKeys::ephemeral()),
            limiter,
            used,
            per_identifier: config.limits.per_identifier,
            trusted_proxies: config.server.trusted_proxies.clone(),
            max_body_bytes: config.server.max_body_bytes,
            wait_margin: config.connection_wait_margin(),
            openapi: Bytes::from(openapi::document(config.server.max_body_bytes)),
        }
    }

    /// Finds the tenant of a bearer key: by its SHA-256, looked up by the digest's first 8 bytes
    /// and compared whole in constant time, so the time taken says nothing about which key (if
    /// any) matched.
    fn authenticate<'h>(
        &self,
        mut authorizations: impl Iterator<Item = &'h [u8]>,
    ) -> Result<&KeyEntry, Problem> {
        let unauthenticated = |detail: &str| Problem::new(ErrorCode::Unauthenticated, detail);
        let header = authorizations
            .next()
            .ok_or_else(|| unauthenticated("send Authorization: Bearer <api key>"))?;
        // Two keys in one request: a proxy in front that reads the last field would disagree
        // with the gateway, which would read the first, about who is asking.
        if authorizations.next().is_some() {
            return Err(unauthenticated("send one Authorization header"));
        }
        // The scheme's name is case-insensitive (RFC 9110, section 11.1).
        let key = header
            .split_at_checked(7)
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case(b"Bearer "))
            .map(|(_, k)| k.trim_ascii())
            .filter(|k| !k.is_empty() && k.len() <= 512)
            .ok_or_else(|| unauthenticated("the Authorization header must be Bearer <api key>"))?;
        // Found by its digest's first 8 bytes, then compared whole in constant time: a lookup
        // that costs the same with ten keys or ten thousand. Its timing can tell a caller only
        // whether their own key's digest shares those 64 bits with a configured key's.
        let presented = sha256(key);
        let mut found: Option<&KeyEntry> = None;
        for &index in self
            .keys_by_prefix
            .get(&key_prefix(&presented))
            .into_iter()
            .flatten()
        {
            let entry = &self.keys[index];
            if bool::from(digests_equal(&entry.sha256, &presented)) {
                found = Some(entry);
            }
        }
        found.ok_or_else(|| unauthenticated("the API key is not known"))
    }

    async fn step<'s>(
        &'s self,
        route: Route,
        request: &mut Request<'_>,
        peer: Option<SocketAddr>,
        request_id: &RequestId,
        arrived: Instant,
        outcome: &mut Outcome<'s>,
    ) -> Result<(u16, Vec<u8>), (Problem, bool, bool)> {
        // The bool pair: (show the vendor member, close the connection).
        let key = self
            .authenticate(request.headers("Authorization"))
            .map_err(|p| (p, false, true))?;
        let tenant = &self.tenants[key.tenant];
        outcome.tenant = Some(&tenant.settings.name);
        outcome.vendor = Some(tenant.adapter.vendor());
        let show_vendor = tenant.settings.vendor_details;

        let (decision, decision_waited) = limit::decide_noting_wait(
            self.limiter.as_ref(),
            &key.limit_key,
            key.quota,
            Mode::Consume(1),
            arrived,
        )
        .await;
        let per_key = LimitState {
            name: LimitName::PerKey,
            quota: key.quota,
            decision,
        };
        outcome.per_key = Some(per_key);
        metrics::limiter_decision(LimitName::PerKey, decision.allowed);
        if !decision.allowed {
            let detail = "this API key's request rate is over its limit";
            let problem = Problem::limited(ErrorCode::RateLimited, detail, per_key);
            return Err((problem, show_vendor, true));
        }

        let content_type = request.header("Content-Type").unwrap_or_default();
        if !is_json(content_type) {
            return Err((
                Problem::new(
                    ErrorCode::UnsupportedMediaType,
                    "send the body as Content-Type: application/json",
                ),
                show_vendor,
                true,
            ));
        }
        let waited = decision_waited || !request.body_arrived_with_head();
        match request.read_body(self.max_body_bytes).await {
            Ok(()) => {}
            Err(BodyError::TooLarge) => {
                let detail = format!("the body must be at most {} bytes", self.max_body_bytes);
                return Err((
                    Problem::new(ErrorCode::PayloadTooLarge, detail),
                    show_vendor,
                    true,
                ));
            }
            Err(BodyError::Malformed) => {
                let detail = "the body's chunked framing is malformed";
                return Err((
                    Problem::new(ErrorCode::InvalidRequest, detail),
                    show_vendor,
                    true,
                ));
            }
            Err(BodyError::Incomplete) => {
                let detail = "the body ended early or arrived too slowly";
                return Err((
                    Problem::new(ErrorCode::InvalidRequest, detail),
                    show_vendor,
                    true,
                ));
            }
        }
        let body = request.body();
        // Read afresh when the request waited for anything since it began (its body may have
        // taken up to the body timeout to arrive, and the limits the step checks govern what it
        // is about to send to the vendor); else its start is as good as now.
        let checked_at = if waited { Instant::now() } else { arrived };
        let deadline = checked_at.checked_add(tenant.step_timeout);

        let ctx = StepContext {
            request_id: *request_id,
            language: language::vendor_language(
                request.header("Accept-Language"),
                tenant.adapter.languages(),
            ),
            client_ip: client_ip::resolve(
                peer.map(|p| p.ip()),
                request.headers("X-Forwarded-For"),
                &self.trusted_proxies,
            ),
            // Passed on to vendors as a header value: visible ASCII only, as it arrived.
            user_agent: request
                .header_str("User-Agent")
                .filter(|s| s.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b)))
                .map(|s| match s.char_indices().nth(512) {
                    Some((cut, _)) => s[..cut].to_string(),
                    None => s.to_string(),
                }),
            upstream_us: AtomicU64::new(0),
            reveals_unknown_identifiers: tenant.settings.reveal_unknown_identifiers,
            connection_wait_ends: deadline.map(|d| d.checked_sub(self.wait_margin).unwrap_or(d)),
        };
        let env = flow::Env {
            keys: &self.token_keys,
            limiter: &self.limiter,
            used: self.used.as_ref(),
            per_identifier: self.per_identifier,
            checked_at,
        };
        // In a block of its own, so that a step the deadline cut off is dropped (and a vendor
        // call it left unfinished has added its time to `ctx.upstream_us`) before the time is
        // read for the log line.
        let result = {
            // Pinned where it is made: `timeout_at` then holds a pointer to it rather than the
            // step's whole state, which would be copied into the timeout and again into this
            // future's state (about 330 instructions of memcpy per request, callgrind).
            let work = std::pin::pin!(async {
                match route {
                    // A step the vendor lacks is 501 whatever the body holds. (Which completion a
                    // body asks for is in the body: /reset/complete is judged after parsing.)
                    Route::Start => {
                        flow::require_start(tenant)?;
                        flow::start(&env, tenant, &ctx, parse::<StartRequest>(body)?).await
                    }
                    Route::Verify => {
                        flow::require_verify(tenant)?;
                        flow::verify(&env, tenant, &ctx, parse::<VerifyRequest>(body)?).await
                    }
                    Route::Complete => {
                        flow::complete(&env, tenant, &ctx, parse::<CompleteRequest>(body)?).await
                    }
                }
            });
            // Counted from the limits' time, which is as good as now here: no clock read of its
            // own.
            match deadline {
                Some(deadline) => crate::deadline::timeout_at(deadline, work).await,
                None => crate::deadline::timeout(tenant.step_timeout, work).await,
            }
        };
        outcome.upstream_us = ctx.upstream_us.load(Ordering::Relaxed);
        match result {
            Ok(Ok(reply)) => Ok((reply.status, reply.body)),
            Ok(Err(problem)) => Err((problem, show_vendor, false)),
            Err(_) => Err((
                Problem::new(
                    ErrorCode::UpstreamTimeout,
                    format!(
                        "{} did not answer within the step's {} ms",
                        tenant.adapter.vendor(),
                        tenant.step_timeout.as_millis()
                    ),
                ),
                show_vendor,
                false,
            )),
        }
    }
}

/// Counts a request out of `reset_gateway_inflight_requests`, however its handling ends.
struct InflightGuard;

impl Drop for InflightGuard {
    fn drop(&mut self) {
        metrics::request_finished();
    }
}

/// `application/json`, optionally with parameters such as `; charset=utf-8`.
fn is_json(content_type: &[u8]) -> bool {
    let essence = content_type
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default();
    essence
        .trim_ascii()
        .eq_ignore_ascii_case(b"application/json")
}

/// The RateLimit fields: the key's own limit on every answer, and the limit that refused the
/// request when it was another.
fn rate_limit_headers(reply: Reply, per_key: Option<LimitState>, hit: Option<LimitState>) -> Reply {
    // At most two states, kept on the stack.
    let both;
    let states: &[LimitState] = match (per_key, hit.filter(|h| h.name != LimitName::PerKey)) {
        (Some(per_key), Some(hit)) => {
            both = [per_key, hit];
            &both
        }
        (Some(one), None) | (None, Some(one)) => &[one][..],
        (None, None) => return reply,
    };
    reply
        .header_with(limit::POLICY_FIELD, |out| limit::push_policy(states, out))
        .header_with(limit::STATE_FIELD, |out| limit::push_state(states, out))
}

/// Counts a request whose handling panicked in `requests_total` and its duration, under the step
/// its method and path name (tenant and vendor unknown, as for a request refused before
/// authentication).
fn count_panicked(method: &str, path: &str, elapsed: Duration) {
    // As `handle` names a request's step: only a POST to a step's path is that step.
    let step = match method {
        "POST" => Route::from_path(path).map_or("other", Route::name),
        _ => "other",
    };
    let code = ErrorCode::Internal.as_str();
    metrics::observe_request(step, "-", "-", code, elapsed.as_secs_f64());
}

/// The one place a `Problem` becomes a response.
fn problem_reply(problem: &Problem, request_id: &str, show_vendor: bool, close: bool) -> Reply {
    let mut reply = Reply::new(
        problem.status(),
        "application/problem+json",
        problem.to_json(request_id, show_vendor),
    );
    if let Some(seconds) = problem.retry_after {
        reply = reply.header("Retry-After", seconds.to_string());
    }
    if problem.code == ErrorCode::Unauthenticated {
        reply = reply.header("WWW-Authenticate", "Bearer");
    }
    reply.close = close;
    reply
}

impl Handler for Gateway {
    async fn handle(&self, request: &mut Request<'_>, peer: Option<SocketAddr>) -> Reply {
        let started = Instant::now();
        metrics::request_started();
        let _inflight = InflightGuard;
        let request_id = request_id::accept_or_generate(request.header("X-Request-Id"));
        // Copied out of the request (which the step borrows mutably): a static name for the
        // methods the API knows, so a request allocates nothing for it.
        let method: std::borrow::Cow<'static, str> = match request.method() {
            "POST" => "POST".into(),
            "GET" => "GET".into(),
            "HEAD" => "HEAD".into(),
            other => other.to_string().into(),
        };
        let path = request.path();
        let route = Route::from_path(path);
        let openapi = path == "/openapi.json";
        let mut outcome = Outcome::default();
        let reply = match (method.as_ref(), route, openapi) {
            ("POST", Some(route), _) => {
                outcome.step = Some(route.name());
                // Awaited where it is made (pinned), not moved into this future's state first.
                let stepped = {
                    let step = std::pin::pin!(self.step(
                        route,
                        request,
                        peer,
                        &request_id,
                        started,
                        &mut outcome
                    ));
                    step.await
                };
                match stepped {
                    Ok((status, body)) => {
                        rate_limit_headers(Reply::json(status, body), outcome.per_key, None)
                    }
                    Err((problem, show_vendor, close)) => {
                        outcome.code = Some(problem.code.as_str());
                        let reply = problem_reply(&problem, &request_id, show_vendor, close);
                        // The outbound budget's quota is the vendor's own (Capillary's 1000 a
                        // minute): a tenant that hides its vendor shows only Retry-After for it.
                        let hit = problem
                            .limit
                            .as_deref()
                            .copied()
                            .filter(|l| show_vendor || l.name != LimitName::Outbound);
                        rate_limit_headers(reply, outcome.per_key, hit)
                    }
                }
            }
            ("GET" | "HEAD", None, true) => {
                Reply::new(200, "application/json", self.openapi.clone())
            }
            (_, Some(_), _) | (_, None, true) => {
                let allow = if route.is_some() { "POST" } else { "GET, HEAD" };
                let p = Problem::new(ErrorCode::MethodNotAllowed, format!("use {allow}"));
                outcome.code = Some(p.code.as_str());
                problem_reply(&p, &request_id, false, true).header("Allow", allow)
            }
            _ => {
                let p = Problem::new(ErrorCode::NotFound, "see /openapi.json for this API");
                outcome.code = Some(p.code.as_str());
                problem_reply(&p, &request_id, false, true)
            }
        };
        let step = outcome.step.unwrap_or("other");
        let tenant = outcome.tenant.unwrap_or("-");
        let vendor = outcome.vendor.unwrap_or("-");
        let code = outcome.code.unwrap_or("ok");
        let elapsed = started.elapsed();
        metrics::observe_request(step, tenant, vendor, code, elapsed.as_secs_f64());
        tracing::info!(
            request_id = %request_id,
            method = %method,
            step,
            tenant,
            vendor,
            status = reply.status,
            code,
            duration_us = elapsed.as_micros() as u64,
            upstream_us = outcome.upstream_us,
            "request"
        );
        reply
            .header("X-Request-Id", request_id)
            .header("Cache-Control", "no-store")
            .header("X-Content-Type-Options", "nosniff")
    }

    /// A request whose handling panicked is counted, as every other answer is (an alert on the
    /// rate of 5xx answers sees it), under the step its path names.
    fn panicked(&self, (method, path): (&str, &str), request_id: &str, elapsed: Duration) -> Reply {
        count_panicked(method, path, elapsed);
        crate::http::panic_reply(request_id)
    }

    /// A request whose head could not be read gets a problem like any other bad request.
    fn refuse(&self, detail: &str) -> Reply {
        let problem = Problem::new(ErrorCode::InvalidRequest, detail.to_string());
        let request_id = request_id::generate();
        metrics::REQUESTS
            .with_label_values(&["other", "-", "-", problem.code.as_str()])
            .inc();
        problem_reply(&problem, &request_id, false, true)
            .header("X-Request-Id", request_id)
            .header("Cache-Control", "no-store")
            .header("X-Content-Type-Options", "nosniff")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicked_request_is_counted_under_its_step() {
        let count = |step: &str| {
            metrics::REQUESTS
                .with_label_values(&[step, "-", "-", "internal_error"])
                .get()
        };
        let (complete, other) = (count("complete"), count("other"));
        let moment = Duration::from_millis(3);
        count_panicked("POST", "/reset/complete", moment);
        count_panicked("POST", "/nowhere", moment);
        count_panicked("GET", "/reset/complete", moment);
        assert_eq!(count("complete"), complete + 1);
        assert_eq!(count("other"), other + 2);
    }

    #[test]
    fn digests_are_equal_only_when_every_byte_is() {
        let a = sha256(b"key");
        assert!(bool::from(digests_equal(&a, &a)));
        for i in 0..32 {
            for bit in [0x01, 0x80] {
                let mut b = a;
                b[i] ^= bit;
                assert!(!bool::from(digests_equal(&a, &b)), "byte {i}");
            }
        }
        assert_eq!(key_prefix(&a).to_le_bytes(), a[..8]);
    }
}
