//! The generic cell rate algorithm (GCRA): one pure function that every limiter backend uses, so
//! the in-memory and shared backends decide alike.
//!
//! A quota of `count` per `period` emits one cell every `period / count` and tolerates a burst of
//! `count`. The state is one number per key: the theoretical arrival time (TAT) of the next cell.
//! A key whose TAT is not after now is the same as a key never seen, so it can be forgotten.

use std::time::Duration;

/// `count` requests per `period`, smooth (no window edges), bursting up to `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    pub count: u32,
    pub period: Duration,
}

impl Quota {
    pub fn new(count: u32, period: Duration) -> Quota {
        Quota { count, period }
    }

    /// Nanoseconds between cells (at least 1).
    pub fn interval_ns(&self) -> u64 {
        (self.period.as_nanos() as u64 / u64::from(self.count.max(1))).max(1)
    }

    /// The burst tolerance: how far the TAT may run ahead of now.
    pub fn tolerance_ns(&self) -> u64 {
        self.interval_ns() * u64::from(self.count.max(1))
    }

    /// One of `replicas` equal shares of this quota: a `replicas`-th of its rate, bursting
    /// `count / replicas` cells, but never fewer than `least_burst` (a request that costs more
    /// cells than a share's burst would be refused forever) nor than one. Only the burst is raised,
    /// never the rate, so the replicas' shares together refill no faster than the whole quota.
    pub fn share(&self, replicas: u32, least_burst: u32) -> Quota {
        let (count, replicas) = (self.count.max(1), replicas.max(1));
        let burst = (count / replicas).max(least_burst).max(1);
        // `burst` cells per the time the whole quota takes to emit `burst * replicas` of them.
        let period_ns =
            self.period.as_nanos() * u128::from(burst) * u128::from(replicas) / u128::from(count);
        Quota::new(
            burst,
            Duration::from_nanos(period_ns.min(u128::from(u64::MAX)) as u64),
        )
    }
}

/// What one check decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Requests still allowed right now after this one.
    pub remaining: u32,
    /// Until the quota is whole again (allowed), or until one request is allowed (refused).
    pub reset: Duration,
    /// When refused: how long until a request would be allowed.
    pub retry_after: Duration,
    /// Made by a shared backend's failure policy, not by its store: good enough for a load limit,
    /// never for a security check that must count across replicas (a reset's wrong codes).
    pub fallback: bool,
}

/// Decides a request of `cost` cells at `now` against the stored TAT. Returns the decision and,
/// when the request is allowed, the TAT to store.
pub fn decide(tat: Option<u64>, now: u64, quota: Quota, cost: u32) -> (Decision, Option<u64>) {
    let interval = quota.interval_ns();
    let tolerance = quota.tolerance_ns();
    let tat = tat.unwrap_or(now).max(now);
    let new_tat = tat.saturating_add(interval.saturating_mul(u64::from(cost)));
    let ahead = new_tat - now;
    if ahead <= tolerance {
        let decision = Decision {
            allowed: true,
            remaining: ((tolerance - ahead) / interval) as u32,
            reset: Duration::from_nanos(ahead),
            retry_after: Duration::ZERO,
            fallback: false,
        };
        (decision, Some(new_tat))
    } else {
        let retry = ahead - tolerance;
        let decision = Decision {
            allowed: false,
            remaining: (tolerance.saturating_sub(tat - now) / interval) as u32,
            reset: Duration::from_nanos(retry),
            retry_after: Duration::from_nanos(retry),
            fallback: false,
        };
        (decision, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn a_fresh_key_bursts_to_the_quota_and_no_further() {
        let q = Quota::new(1000, Duration::from_secs(60));
        let now = 100 * SEC;
        let mut tat = None;
        for i in 0..1000 {
            let (d, next) = decide(tat, now, q, 1);
            assert!(d.allowed, "request {i}");
            assert_eq!(d.remaining, 999 - i);
            tat = next;
        }
        let (d, next) = decide(tat, now, q, 1);
        assert!(!d.allowed);
        assert_eq!(next, None);
        assert_eq!(d.remaining, 0);
        assert_eq!(d.retry_after, Duration::from_millis(60));
    }

    #[test]
    fn cells_come_back_smoothly() {
        let q = Quota::new(5, Duration::from_secs(10));
        let mut tat = None;
        for _ in 0..5 {
            tat = decide(tat, 0, q, 1).1;
        }
        assert!(!decide(tat, 0, q, 1).0.allowed);
        // One cell per 2 s: refused just before, allowed at 2 s, one at a time.
        assert!(!decide(tat, 2 * SEC - 1, q, 1).0.allowed);
        let (d, t2) = decide(tat, 2 * SEC, q, 1);
        assert!(d.allowed && d.remaining == 0);
        assert!(!decide(t2, 2 * SEC, q, 1).0.allowed);
        // After a whole period idle the key is fresh again.
        let (d, _) = decide(t2, 12 * SEC, q, 1);
        assert_eq!(d.remaining, 4);
    }

    #[test]
    fn a_multi_cell_request_is_all_or_nothing() {
        let q = Quota::new(3, Duration::from_secs(3));
        let (d, tat) = decide(None, 0, q, 2);
        assert!(d.allowed && d.remaining == 1);
        let (d, none) = decide(tat, 0, q, 2);
        assert!(!d.allowed && none.is_none() && d.remaining == 1);
        assert!(decide(tat, 0, q, 1).0.allowed);
    }

    #[test]
    fn a_share_is_a_replicas_part_of_the_rate() {
        let q = Quota::new(100, Duration::from_secs(2));
        assert_eq!(q.share(2, 1), Quota::new(50, Duration::from_secs(2)));
        // A share that is not a whole number of cells keeps the exact rate: 5 / 3 per 15 minutes.
        let q = Quota::new(5, Duration::from_secs(900));
        let share = q.share(3, 1);
        assert_eq!(share, Quota::new(1, Duration::from_secs(540)));
        assert_eq!(share.interval_ns(), q.interval_ns() * 3);
    }

    #[test]
    fn a_share_bursts_a_whole_request_without_refilling_faster() {
        // A vendor budget bursting 2 cells, split over 2 replicas: a share of 1 cell would refuse
        // a 2-cell step (a Capillary start) forever.
        let q = Quota::new(2, Duration::from_millis(1_250));
        let share = q.share(2, 2);
        let (d, tat) = decide(None, 0, share, 2);
        assert!(d.allowed);
        assert!(!decide(tat, 0, share, 1).0.allowed);
        // Its cells come back at half the whole quota's rate: one per 1.25 s, not per 0.625 s.
        assert_eq!(share.interval_ns(), 2 * q.interval_ns());
        let (d, _) = decide(tat, 2 * share.interval_ns(), share, 2);
        assert!(d.allowed);
        assert!(!decide(tat, 2 * share.interval_ns() - 1, share, 2).0.allowed);
    }

    #[test]
    fn a_stored_tat_in_the_past_is_a_fresh_key() {
        let q = Quota::new(2, Duration::from_secs(2));
        assert_eq!(
            decide(Some(0), 50 * SEC, q, 1),
            decide(None, 50 * SEC, q, 1)
        );
    }
}
