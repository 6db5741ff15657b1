//! Rate limits: the `Limiter` seam every backend implements, the names of the gateway's limits,
//! and the IETF RateLimit header fields (draft-ietf-httpapi-ratelimit-headers).
//!
//! Every limit is GCRA (`gcra.rs`). The in-process backend is `memory.rs`; a shared backend
//! implements the same trait.

pub mod gcra;
pub mod memory;
pub mod redis;
pub mod vendor_budget;

use async_trait::async_trait;

pub use gcra::{Decision, Quota};

/// Whether a check spends cells or gives them back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Spend this many cells if they are all available.
    Consume(u32),
    /// Give back this many cells a request spent and did not use: the key recovers as if they
    /// had never been spent (never beyond whole). Always allowed.
    Refund(u32),
}

#[async_trait]
pub trait Limiter: Send + Sync {
    /// Decides one request for `key` under `quota`. Never fails: a backend that cannot decide
    /// applies its configured fallback and says so in its decision.
    async fn check(&self, key: &str, quota: Quota, mode: Mode) -> Decision;

    /// The decision at once, as of `at`, for a backend that decides in memory; `None` for one
    /// that must wait (Redis, which decides by its own clock). Callers go through `decide`, so
    /// an in-memory decision skips the boxed future that `check` costs on every request.
    fn decide_now(
        &self,
        _key: &str,
        _quota: Quota,
        _mode: Mode,
        _at: std::time::Instant,
    ) -> Option<Decision> {
        None
    }

    /// The backend's name, for logs and `/readyz`.
    fn backend(&self) -> &'static str;
}

/// Decides one request: at once where the backend can, else by waiting for it. `at` is a time
/// the caller read just before (an in-memory backend decides as of then, so a caller checking
/// several limits at once reads the clock once for them); Redis decides by its own clock.
pub async fn decide(
    limiter: &dyn Limiter,
    key: &str,
    quota: Quota,
    mode: Mode,
    at: std::time::Instant,
) -> Decision {
    decide_noting_wait(limiter, key, quota, mode, at).await.0
}

/// `decide`, and whether the decision had to wait for the backend (so `at` may be old now).
pub async fn decide_noting_wait(
    limiter: &dyn Limiter,
    key: &str,
    quota: Quota,
    mode: Mode,
    at: std::time::Instant,
) -> (Decision, bool) {
    match limiter.decide_now(key, quota, mode, at) {
        Some(decision) => (decision, false),
        None => (limiter.check(key, quota, mode).await, true),
    }
}

/// The gateway's limits, by the name they carry in problems and RateLimit fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitName {
    /// Requests per API key.
    PerKey,
    /// `POST /reset` per identifier.
    PerIdentifier,
    /// Wrong one-time codes per reset.
    PerReset,
    /// Vendor calls per vendor connection (credential).
    Outbound,
}

impl LimitName {
    /// Every limit, each at the place its `index` names.
    pub const ALL: [LimitName; 4] = [
        LimitName::PerKey,
        LimitName::PerIdentifier,
        LimitName::PerReset,
        LimitName::Outbound,
    ];

    /// The limit's place in `ALL` (its declaration order), for tables indexed by limit.
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LimitName::PerKey => "per-key",
            LimitName::PerIdentifier => "per-identifier",
            LimitName::PerReset => "per-reset",
            LimitName::Outbound => "outbound",
        }
    }
}

/// A limit's quota and its latest decision, for the RateLimit fields of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitState {
    pub name: LimitName,
    pub quota: Quota,
    pub decision: Decision,
}

impl LimitState {
    /// One `RateLimit-Policy` list member: `"per-key";q=1000;w=60`.
    fn push_policy_item(&self, out: &mut Vec<u8>) {
        let mut number = itoa::Buffer::new();
        out.push(b'"');
        out.extend_from_slice(self.name.as_str().as_bytes());
        out.extend_from_slice(b"\";q=");
        out.extend_from_slice(number.format(self.quota.count).as_bytes());
        out.extend_from_slice(b";w=");
        // Whole seconds, rounded up: a window said shorter than it is would overstate the rate
        // (the outbound budget's periods are not whole seconds: limit/vendor_budget.rs).
        out.extend_from_slice(
            number
                .format(ceil_secs(self.quota.period).max(1))
                .as_bytes(),
        );
    }

    /// One `RateLimit` list member: `"per-key";r=999;t=1`.
    fn push_state_item(&self, out: &mut Vec<u8>) {
        let mut number = itoa::Buffer::new();
        out.push(b'"');
        out.extend_from_slice(self.name.as_str().as_bytes());
        out.extend_from_slice(b"\";r=");
        out.extend_from_slice(number.format(self.decision.remaining).as_bytes());
        out.extend_from_slice(b";t=");
        out.extend_from_slice(number.format(ceil_secs(self.decision.reset)).as_bytes());
    }

    /// Whole seconds for `Retry-After`, rounded up so a client that waits is not refused again.
    pub fn retry_after_secs(&self) -> u64 {
        ceil_secs(self.decision.retry_after).max(1)
    }
}

/// Whole seconds, rounded up (for `Retry-After` and the RateLimit fields).
pub(crate) fn ceil_secs(d: std::time::Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// The name of the field `push_policy` writes.
pub const POLICY_FIELD: &str = "RateLimit-Policy";
/// The name of the field `push_state` writes.
pub const STATE_FIELD: &str = "RateLimit";

/// The `RateLimit-Policy` value for these limits, written onto `out` (the reply's head).
pub fn push_policy(states: &[LimitState], out: &mut Vec<u8>) {
    push_list(states, out, LimitState::push_policy_item);
}

/// The `RateLimit` value for these limits, written onto `out` (the reply's head).
pub fn push_state(states: &[LimitState], out: &mut Vec<u8>) {
    push_list(states, out, LimitState::push_state_item);
}

fn push_list(states: &[LimitState], out: &mut Vec<u8>, item: fn(&LimitState, &mut Vec<u8>)) {
    for (i, state) in states.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b", ");
        }
        item(state, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn every_limit_sits_at_its_index() {
        for (i, limit) in LimitName::ALL.into_iter().enumerate() {
            assert_eq!(limit.index(), i, "{limit:?}");
        }
        // A variant added in the middle of the enum shifts the indices after it, which fails
        // here; one left out of `ALL` altogether is still counted (metrics find handles by name).
    }

    #[test]
    fn header_items_follow_the_draft_syntax() {
        let state = LimitState {
            name: LimitName::PerKey,
            quota: Quota::new(1000, Duration::from_secs(60)),
            decision: Decision {
                allowed: false,
                remaining: 0,
                reset: Duration::from_millis(6_001),
                retry_after: Duration::from_millis(6_001),
                fallback: false,
            },
        };
        let written = |push: fn(&[LimitState], &mut Vec<u8>), states: &[LimitState]| {
            let mut out = b"before ".to_vec();
            push(states, &mut out);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(
            written(push_policy, &[state]),
            "before \"per-key\";q=1000;w=60"
        );
        assert_eq!(written(push_state, &[state]), "before \"per-key\";r=0;t=7");
        assert_eq!(state.retry_after_secs(), 7);
        assert_eq!(
            written(push_policy, &[state, state]),
            "before \"per-key\";q=1000;w=60, \"per-key\";q=1000;w=60"
        );
        assert_eq!(
            written(push_state, &[state, state]),
            "before \"per-key\";r=0;t=7, \"per-key\";r=0;t=7"
        );
    }
}
