//! The shared limiter backend: GCRA in one Lua script, loaded once and called by its hash, so each
//! decision is one atomic round trip (no read-then-write race between replicas). The clock is
//! Redis's own (`TIME`), so replicas with skewed clocks still agree.
//!
//! When Redis does not answer within its timeout, the configured policy decides: `local` (this
//! replica's in-process limiter at its share of the quota, refilled only while Redis is away),
//! `allow` or `deny`; each such decision is counted in `reset_gateway_limiter_fallback_total`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::gcra::{Decision, Quota};
use super::memory::MemoryLimiter;
use super::{Limiter, Mode};
use crate::metrics;
use crate::redis_store::{FailurePolicy, RedisStore};

/// GCRA over microseconds (Lua numbers are doubles: exact to 2^53 us, centuries from the epoch).
/// ARGV: interval, tolerance, cost (negative: give that many cells back). Returns
/// {allowed, remaining, reset_us, retry_us}. A key expires when its state has fully recovered.
const GCRA_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
if cost < 0 then
  local back = tat + interval * cost
  if back <= now then
    redis.call('DEL', KEYS[1])
    back = now
  else
    redis.call('SET', KEYS[1], string.format('%d', back), 'PX', math.ceil((back - now) / 1000) + 1)
  end
  return {1, math.floor((tolerance - (back - now)) / interval), back - now, 0}
end
local new_tat = tat + interval * cost
local ahead = new_tat - now
if ahead <= tolerance then
  redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil(ahead / 1000) + 1)
  return {1, math.floor((tolerance - ahead) / interval), ahead, 0}
end
local retry = ahead - tolerance
local left = tolerance - (tat - now)
if left < 0 then left = 0 end
return {0, math.floor(left / interval), retry, retry}
"#;

/// The quota's emission interval in the script's whole microseconds, rounded up: a fraction
/// rounded down would let through more than the quota (a 1.5 us interval read as 1 us passes half
/// as much again), so the shared limit errs, by under a microsecond a cell, on the side of less.
fn interval_us(quota: Quota) -> i64 {
    quota.interval_ns().div_ceil(1_000).max(1) as i64
}

pub struct RedisLimiter {
    store: Arc<RedisStore>,
    script: redis::Script,
    /// The `local` fallback's limiter, which runs on the store's time away (`local_clock`).
    local: MemoryLimiter,
    /// The instant `local` reads as the store's time away began: at or after `local`'s own
    /// epoch, so no time away is lost to it.
    local_clock: Instant,
}

impl RedisLimiter {
    pub fn new(store: Arc<RedisStore>) -> Self {
        // The fallback's count is exported from the start, at 0: a series that first appears
        // holding an outage's whole count shows Prometheus no increase, so the fallback alert
        // would miss a first outage short enough to fit within one scrape.
        metrics::LIMITER_FALLBACK.with_label_values(&[store.settings().on_failure.as_str()]);
        let local = MemoryLimiter::new();
        RedisLimiter {
            store,
            script: redis::Script::new(GCRA_LUA),
            local,
            local_clock: Instant::now(),
        }
    }

    /// This replica's share of `quota` while the store is away, under the `local` policy: a
    /// request of `cost` cells still fits its burst.
    fn local_share(&self, quota: Quota, cost: u32) -> Quota {
        quota.share(self.store.settings().replicas, cost)
    }

    fn fallback(&self, key: &str, quota: Quota, mode: Mode) -> Decision {
        let Mode::Consume(cost) = mode else {
            // A refund the store did not take leaves the cells spent there: the safe side for a
            // limit, and no decision for a policy to make (nor to count as one).
            return Decision {
                allowed: true,
                remaining: 0,
                reset: Duration::ZERO,
                retry_after: Duration::ZERO,
                fallback: true,
            };
        };
        let policy = self.store.settings().on_failure;
        metrics::LIMITER_FALLBACK
            .with_label_values(&[policy.as_str()])
            .inc();
        match policy {
            // Decided as of the time Redis has been away, not the wall clock: the share refills
            // only while Redis does not answer, so what a replica spends here is never also
            // given out by Redis's own quota, refilled meanwhile (`redis_store::AwayClock`).
            FailurePolicy::Local => Decision {
                fallback: true,
                ..self.local.check_at(
                    key,
                    self.local_share(quota, cost),
                    mode,
                    self.local_clock + self.store.time_away(),
                )
            },
            FailurePolicy::Allow => Decision {
                allowed: true,
                remaining: quota.count.saturating_sub(1),
                reset: Duration::ZERO,
                retry_after: Duration::ZERO,
                fallback: true,
            },
            FailurePolicy::Deny => Decision {
                allowed: false,
                remaining: 0,
                reset: Duration::from_secs(1),
                retry_after: Duration::from_secs(1),
                fallback: true,
            },
        }
    }
}

#[async_trait]
impl Limiter for RedisLimiter {
    async fn check(&self, key: &str, quota: Quota, mode: Mode) -> Decision {
        let interval = interval_us(quota);
        let tolerance = interval * i64::from(quota.count.max(1));
        let cost = match mode {
            Mode::Consume(n) => i64::from(n),
            Mode::Refund(n) => -i64::from(n),
        };
        let reply: Result<Vec<i64>, crate::redis_store::CallError> = self
            .store
            .script(
                &self.script,
                &self.store.key(key),
                &[interval, tolerance, cost],
            )
            .await;
        match reply.as_deref() {
            Ok([allowed, remaining, reset, retry]) => Decision {
                allowed: *allowed == 1,
                remaining: (*remaining).clamp(0, i64::from(u32::MAX)) as u32,
                reset: Duration::from_micros((*reset).max(0) as u64),
                retry_after: Duration::from_micros((*retry).max(0) as u64),
                fallback: false,
            },
            _ => self.fallback(key, quota, mode),
        }
    }

    fn backend(&self) -> &'static str {
        "redis"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scripts_interval_never_lets_more_through_than_the_quota() {
        let per_minute = |count| Quota::new(count, Duration::from_secs(60));
        // 40 million a minute: 1.5 us a cell, which whole microseconds rounded down made 1 us.
        assert_eq!(interval_us(per_minute(40_000_000)), 2);
        assert_eq!(interval_us(per_minute(1_000)), 60_000);
        assert_eq!(interval_us(per_minute(7)), 8_571_429);
        // Faster than a microsecond a cell still emits one a microsecond, never none.
        assert_eq!(interval_us(per_minute(1_000_000_000)), 1);
    }
}
