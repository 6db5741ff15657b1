//! Every metric in one place, registered in the default registry of the `prometheus` crate that
//! `pingora-prometheus` re-exports (so one registry holds pingora's metrics and ours), and the text
//! exposition served on the admin listener's `/metrics`.
//!
//! Labels stay bounded: they come from configuration or fixed sets, never from a request.

use std::sync::LazyLock;

use pingora_prometheus::prometheus::{
    self, register_int_counter_vec, register_int_gauge, Encoder, IntCounterVec, IntGauge,
    TextEncoder,
};

/// Decisions made without the shared limiter store, by the fallback policy that made them.
pub static LIMITER_FALLBACK: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "reset_gateway_limiter_fallback_total",
        "Limiter decisions made by the fallback policy because Redis did not answer in time.",
        &["policy"]
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
    let mut out = Vec::new();
    let encoder = TextEncoder::new();
    if encoder.encode(&prometheus::gather(), &mut out).is_err() {
        out.clear();
    }
    out
}
