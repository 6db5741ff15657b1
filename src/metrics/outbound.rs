//! The outbound budget's metrics: what is left (`reset_gateway_outbound_budget_remaining`), the
//! burst (`_quota`), the refill rate (`_rate`) and the calls it allowed (`_spent_total`).
//!
//! A budget refills while nothing spends it, so what is left is worked out when `/metrics` is
//! rendered, from the latest decision and the budget's rate. A gauge set only at each decision
//! froze at the last spend: after a burst and then quiet, it read "nearly spent" for as long as the
//! quiet lasted, and the alert on it fired for a budget that had long been whole again.
//!
//! One budget may serve several connections (those on one vendor account): every one of them
//! shows the account's budget, whichever of them spent from it last.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::Instant;

use pingora_prometheus::prometheus::{IntCounter, IntGauge};

use crate::limit::{Decision, Quota};

use super::{OUTBOUND_QUOTA, OUTBOUND_RATE, OUTBOUND_REMAINING, OUTBOUND_SPENT};

/// The instant the budgets' times are counted from.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Every budget a gateway in this process holds, read at each render.
static BUDGETS: Mutex<Vec<Weak<OutboundGauge>>> = Mutex::new(Vec::new());

/// One vendor account's budget, as its latest decision left it.
#[derive(Debug)]
pub struct OutboundGauge {
    quota: Quota,
    /// Nanoseconds after `EPOCH` when the budget is whole again if nothing more is spent: the
    /// GCRA's theoretical arrival time, one number, so a decision records it with one store.
    whole_at_ns: AtomicU64,
    /// The `remaining` gauge of each connection that spends this budget.
    remaining: Vec<IntGauge>,
    /// The `spent` counter of each connection that spends this budget.
    spent: Vec<IntCounter>,
}

impl OutboundGauge {
    /// A budget of `quota` spent by `connections` (name and vendor), whole to begin with.
    pub fn register(quota: Quota, connections: &[(&str, &str)]) -> Arc<OutboundGauge> {
        let per_second = f64::from(quota.count) / quota.period.as_secs_f64().max(f64::MIN_POSITIVE);
        let (remaining, spent) = connections
            .iter()
            .map(|(connection, vendor)| {
                let labels = [*connection, *vendor];
                OUTBOUND_QUOTA
                    .with_label_values(&labels)
                    .set(i64::from(quota.count));
                OUTBOUND_RATE.with_label_values(&labels).set(per_second);
                (
                    OUTBOUND_REMAINING.with_label_values(&labels),
                    OUTBOUND_SPENT.with_label_values(&labels),
                )
            })
            .unzip();
        let gauge = Arc::new(OutboundGauge {
            quota,
            whole_at_ns: AtomicU64::new(0),
            remaining,
            spent,
        });
        gauge.show(Instant::now());
        let mut budgets = BUDGETS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        budgets.retain(|budget| budget.strong_count() > 0);
        budgets.push(Arc::downgrade(&gauge));
        gauge
    }

    /// Notes a decision made at `at`: `remaining` cells left then, each missing one back after
    /// the quota's interval. Spending only ever moves the budget's whole-again time later (it is
    /// never refunded), so of decisions landing out of order (threads, Redis's round trips) the
    /// latest time is the truest.
    pub fn record(&self, decision: &Decision, at: Instant) {
        let missing = u64::from(self.quota.count.saturating_sub(decision.remaining));
        let whole_at =
            nanos_since_epoch(at).saturating_add(missing.saturating_mul(self.quota.interval_ns()));
        self.whole_at_ns.fetch_max(whole_at, Ordering::Relaxed);
    }

    /// Counts `calls` the budget allowed, on every connection that spends it.
    pub fn spent(&self, calls: u32) {
        for counter in &self.spent {
            counter.inc_by(u64::from(calls));
        }
    }

    /// Cells left at `now`: a cell counts only once it has wholly come back, as the limiter
    /// counts it.
    pub fn remaining_at(&self, now: Instant) -> u32 {
        let ahead = self
            .whole_at_ns
            .load(Ordering::Relaxed)
            .saturating_sub(nanos_since_epoch(now));
        let missing = ahead.div_ceil(self.quota.interval_ns());
        self.quota
            .count
            .saturating_sub(u32::try_from(missing).unwrap_or(u32::MAX))
    }

    fn show(&self, now: Instant) {
        let remaining = i64::from(self.remaining_at(now));
        for gauge in &self.remaining {
            gauge.set(remaining);
        }
    }
}

fn nanos_since_epoch(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(*EPOCH).as_nanos()).unwrap_or(u64::MAX)
}

/// Sets every live budget's `remaining` gauges to what is left now.
pub(super) fn refresh() {
    let now = Instant::now();
    let budgets = BUDGETS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for budget in budgets.iter().filter_map(Weak::upgrade) {
        budget.show(now);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::limit::gcra;

    #[test]
    fn what_is_left_refills_at_the_quotas_rate_as_the_limiter_counts_it() {
        // One cell every 100 ms, bursting 10.
        let quota = Quota::new(10, Duration::from_secs(1));
        let gauge = OutboundGauge::register(quota, &[("refill-test", "cbss")]);
        let start = Instant::now();
        assert_eq!(gauge.remaining_at(start), 10);
        let mut tat = None;
        let mut last = None;
        for _ in 0..7 {
            let (decision, next) = gcra::decide(tat, 0, quota, 1);
            tat = next;
            last = Some(decision);
        }
        gauge.record(&last.unwrap(), start);
        // The gauge agrees with what the limiter would decide at every later moment.
        for ms in [0, 1, 99, 100, 101, 250, 300, 699, 700, 5_000] {
            let ns = ms * 1_000_000;
            let limiter = gcra::decide(tat, ns, quota, 1).0.remaining + 1;
            let at = start + Duration::from_nanos(ns);
            assert_eq!(gauge.remaining_at(at), limiter.min(10), "at {ms} ms");
        }
    }

    #[test]
    fn a_decision_landing_late_does_not_move_the_budget_back() {
        let quota = Quota::new(10, Duration::from_secs(10));
        let gauge = OutboundGauge::register(quota, &[("late-test", "cbss")]);
        let at = Instant::now();
        let left = |remaining| Decision {
            allowed: true,
            remaining,
            reset: Duration::ZERO,
            retry_after: Duration::ZERO,
            fallback: false,
        };
        gauge.record(&left(4), at);
        // An earlier spend's answer, arriving after the later one's.
        gauge.record(&left(7), at);
        assert_eq!(gauge.remaining_at(at), 4);
    }

    #[test]
    fn every_connection_on_the_account_shows_the_account_budget() {
        let quota = Quota::new(4, Duration::from_secs(60));
        let gauge = OutboundGauge::register(quota, &[("account-web", "x"), ("account-app", "x")]);
        let spent = Decision {
            allowed: true,
            remaining: 1,
            reset: Duration::ZERO,
            retry_after: Duration::ZERO,
            fallback: false,
        };
        gauge.record(&spent, Instant::now());
        refresh();
        for connection in ["account-web", "account-app"] {
            let shown = OUTBOUND_REMAINING
                .with_label_values(&[connection, "x"])
                .get();
            assert_eq!(shown, 1, "{connection}");
        }
    }
}
