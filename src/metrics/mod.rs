//! Every metric in one place, registered in the default registry of the `prometheus` crate that
//! `pingora-prometheus` re-exports (so one registry holds pingora's metrics and ours), and the text
//! exposition served on the admin listener's `/metrics`.
//!
//! Labels stay bounded: they come from configuration or fixed sets, never from a request.

use std::sync::LazyLock;

use pingora_prometheus::prometheus::{
    self, register_gauge_vec, register_histogram_vec, register_int_counter,
    register_int_counter_vec, register_int_gauge, register_int_gauge_vec, Encoder, GaugeVec,
    HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, TextEncoder,
};

use crate::limit::LimitName;

mod batch;
mod outbound;

pub use outbound::OutboundGauge;

/// Buckets for a gateway: 1 ms to 10 s.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Canonical requests by step, tenant, vendor and outcome (`ok` or the problem's code).
pub static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "reset_gateway_requests_total",
        "Canonical API requests by step, tenant, vendor and outcome code (ok or the problem code).",
        &["step", "tenant", "vendor", "code"]
    )
    .expect("metric registers once")
});

pub static REQUEST_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "reset_gateway_request_duration_seconds",
        "Time from reading a request's header to having its answer, by step, tenant and vendor.",
        &["step", "tenant", "vendor"],
        BUCKETS.to_vec()
    )
    .expect("metric registers once")
});

/// Calls to vendors by vendor, endpoint and status class (2xx, 4xx, 5xx, timeout, error).
pub static UPSTREAM_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "reset_gateway_upstream_requests_total",
        "Calls to vendors by vendor, endpoint and status class (2xx, 3xx, 4xx, 5xx, timeout, error).",
        &["vendor", "endpoint", "status_class"]
    )
    .expect("metric registers once")
});

pub static UPSTREAM_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "reset_gateway_upstream_duration_seconds",
        "Time of one call to a vendor, connection included, by vendor and endpoint.",
        &["vendor", "endpoint"],
        BUCKETS.to_vec()
    )
    .expect("metric registers once")
});

/// Connections used for vendor calls: taken from the pool (`reused="true"`) or newly made.
pub static UPSTREAM_CONNECTIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "reset_gateway_upstream_connections_total",
        "Connections used for vendor calls, by vendor and whether they came from the pool.",
        &["vendor", "reused"]
    )
    .expect("metric registers once")
});

/// Vendor calls that found their worker thread's share of the connection's `max_connections`
/// all busy and waited, by connection, vendor and how the wait ended: `served` (a connection came
/// free) or `gave_up` (none did within `connect_ms` or before the step's deadline: answered 503
/// without calling). Both are made, at 0, when the connection is loaded, so that `rate()` sees
/// the first wait.
pub static UPSTREAM_WAITS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "reset_gateway_upstream_waits_total",
        "Vendor calls that waited for a connection (max_connections), by connection, vendor and outcome (served or gave_up).",
        &["connection", "vendor", "outcome"]
    )
    .expect("metric registers once")
});

/// The counters of one connection's waits for a vendor connection, `[served, gave_up]`, looked
/// up once per client so that a saturated gateway does not look them up on every call.
pub fn upstream_waits(connection: &str, vendor: &str) -> [IntCounter; 2] {
    ["served", "gave_up"]
        .map(|outcome| UPSTREAM_WAITS.with_label_values(&[connection, vendor, outcome]))
}

/// Limiter decisions by limit (per-key, per-identifier, per-reset, outbound) and result.
pub static LIMITER_DECISIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "reset_gateway_limiter_decisions_total",
        "Rate-limit decisions by limit and result (allowed or refused).",
        &["limit", "result"]
    )
    .expect("metric registers once")
});

/// What is left of each vendor connection's outbound budget, and its quota (set by `outbound`).
static OUTBOUND_REMAINING: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "reset_gateway_outbound_budget_remaining",
        "Vendor calls left now in the connection's outbound budget: its latest decision, refilled since at the budget's rate.",
        &["connection", "vendor"]
    )
    .expect("metric registers once")
});

static OUTBOUND_QUOTA: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "reset_gateway_outbound_budget_quota",
        "The connection's outbound budget: vendor calls allowed per its period (the burst).",
        &["connection", "vendor"]
    )
    .expect("metric registers once")
});

/// The rate the outbound budget refills at: the most calls a second it allows for long. Against
/// `OUTBOUND_SPENT`'s rate, it says how near the vendor's limit the account runs, long before
/// the burst left (`OUTBOUND_REMAINING`) starts to fall.
static OUTBOUND_RATE: LazyLock<GaugeVec> = LazyLock::new(|| {
    register_gauge_vec!(
        "reset_gateway_outbound_budget_rate",
        "Vendor calls a second the connection's outbound budget refills at: the most it allows for long.",
        &["connection", "vendor"]
    )
    .expect("metric registers once")
});

/// Vendor calls the outbound budget allowed (spent from it before a step's first call).
static OUTBOUND_SPENT: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "reset_gateway_outbound_budget_spent_total",
        "Vendor calls the connection's outbound budget allowed (every connection on one vendor account counts the account's).",
        &["connection", "vendor"]
    )
    .expect("metric registers once")
});

/// Canonical requests being handled now, counted per thread (`sharded`) and copied into the
/// `reset_gateway_inflight_requests` gauge when the metrics are rendered: the gauge's own
/// atomic would be written by every worker thread twice per request.
static INFLIGHT_REQUESTS: crate::sharded::ShardedCount = crate::sharded::ShardedCount::new();

static INFLIGHT: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "reset_gateway_inflight_requests",
        "Canonical API requests being handled now."
    )
    .expect("metric registers once")
});

pub static BUILD_INFO: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "reset_gateway_build_info",
        "Always 1; the labels say which build is running.",
        &["version"]
    )
    .expect("metric registers once")
});

/// TLS handshakes on the API listener that failed or did not finish in time (a plain-HTTP client
/// on the TLS port, a certificate the client refused, a scanner).
pub static TLS_HANDSHAKE_FAILURES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "reset_gateway_tls_handshake_failures_total",
        "TLS handshakes on the API listener that failed or timed out."
    )
    .expect("metric registers once")
});

pub fn tls_handshake_failed() {
    TLS_HANDSHAKE_FAILURES.inc();
}

/// Counts one canonical request (`REQUESTS`) and observes how long it took (`REQUEST_DURATION`).
pub fn observe_request(
    step: &'static str,
    tenant: &str,
    vendor: &'static str,
    code: &'static str,
    seconds: f64,
) {
    batch::observe_pair(
        &batch::REQUEST_PAIRS,
        [step, tenant, vendor],
        code,
        seconds,
        || {
            (
                REQUESTS.with_label_values(&[step, tenant, vendor, code]),
                REQUEST_DURATION.with_label_values(&[step, tenant, vendor]),
            )
        },
    );
    // A request's last observation: its thread may add what it holds to the families now.
    batch::request_observed();
}

/// A canonical request begins: counted in flight until `request_finished`.
pub fn request_started() {
    INFLIGHT_REQUESTS.add(1);
    batch::request_started();
}

/// A canonical request is over (answered or dropped), on the thread that began it.
pub fn request_finished() {
    INFLIGHT_REQUESTS.add(-1);
    batch::request_finished();
}

/// Counts one vendor call (`UPSTREAM_REQUESTS`, by status class or failure) and observes how long
/// it took (`UPSTREAM_DURATION`).
pub fn observe_upstream(vendor: &str, endpoint: &str, class: &'static str, seconds: f64) {
    batch::observe_pair(
        &batch::UPSTREAM_PAIRS,
        [vendor, endpoint, ""],
        class,
        seconds,
        || {
            (
                UPSTREAM_REQUESTS.with_label_values(&[vendor, endpoint, class]),
                UPSTREAM_DURATION.with_label_values(&[vendor, endpoint]),
            )
        },
    );
}

/// Counts one limiter decision.
pub fn limiter_decision(limit: LimitName, allowed: bool) {
    const RESULTS: [&str; 2] = ["allowed", "refused"];
    let label = limit.as_str();
    batch::count(&batch::DECISIONS, label, usize::from(!allowed), || {
        RESULTS.map(|result| LIMITER_DECISIONS.with_label_values(&[label, result]))
    });
}

/// Counts one vendor call's connection, taken from the pool (`reused`) or new.
pub fn upstream_connection(vendor: &'static str, reused: bool) {
    batch::count(&batch::CONNECTIONS, vendor, usize::from(!reused), || {
        ["true", "false"].map(|reused| UPSTREAM_CONNECTIONS.with_label_values(&[vendor, reused]))
    });
}

/// The status class of a vendor's answer.
pub fn status_class(status: u16) -> &'static str {
    match status {
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Registers every metric, and the build, so that /metrics lists them before any traffic.
pub fn init() {
    BUILD_INFO
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);
    LazyLock::force(&REQUESTS);
    LazyLock::force(&REQUEST_DURATION);
    LazyLock::force(&UPSTREAM_REQUESTS);
    LazyLock::force(&UPSTREAM_DURATION);
    LazyLock::force(&UPSTREAM_CONNECTIONS);
    LazyLock::force(&UPSTREAM_WAITS);
    LazyLock::force(&LIMITER_DECISIONS);
    LazyLock::force(&OUTBOUND_REMAINING);
    LazyLock::force(&OUTBOUND_QUOTA);
    LazyLock::force(&OUTBOUND_RATE);
    LazyLock::force(&OUTBOUND_SPENT);
    LazyLock::force(&INFLIGHT);
    LazyLock::force(&LIMITER_FALLBACK);
    LazyLock::force(&TLS_HANDSHAKE_FAILURES);
}

/// Decisions made without the shared limiter store, by the fallback policy that made them.
pub static LIMITER_FALLBACK: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "reset_gateway_limiter_fallback_total",
        "Limiter decisions made by the fallback policy because Redis did not answer in time.",
        &["policy"]
    )
    .expect("metric registers once")
});

/// Client connections open, by listener (`api`, `admin`, `sandbox`).
pub static OPEN_CONNECTIONS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "reset_gateway_open_connections",
        "Client connections open on each listener (at server.max_connections, new ones wait).",
        &["listener"]
    )
    .expect("metric registers once")
});

/// 1 while the gateway's last Redis call succeeded, 0 after one failed; absent without Redis.
pub static REDIS_UP: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "reset_gateway_redis_up",
        "Whether the last call to the shared limiter store (Redis) succeeded."
    )
    .expect("metric registers once")
});

/// The Prometheus text exposition of every registered metric.
pub fn render() -> Vec<u8> {
    INFLIGHT.set(INFLIGHT_REQUESTS.sum());
    outbound::refresh();
    let mut out = Vec::new();
    let encoder = TextEncoder::new();
    if encoder.encode(&prometheus::gather(), &mut out).is_err() {
        out.clear();
    }
    out
}
