//! A vendor's documented limit ("1000 calls a minute") as the GCRA quota the gateway spends its
//! calls from, so that the vendor never sees more than its limit in any window of its length.
//!
//! A GCRA quota of `count` per `period` bursts `count` and then refills at `count` per `period`,
//! so some window of `period` can hold nearly twice `count`: a vendor that counts by the clock
//! minute, or over a sliding minute, would throttle the gateway. A quota bursting `burst` and
//! refilling `count - burst` per `period` holds at most `count` in any window of `period` (cells
//! in any span `t` number at most `burst + t / interval`). The refill is stretched by a margin,
//! because the vendor counts calls when they reach it, not when the gateway decided them: a step's
//! whole cost is spent before its first call, and its later calls (Capillary's otp/generate)
//! wait for the first's answer, so a call may reach the vendor as late as the step's time limit
//! after it was decided, closer to the calls decided after it. The margin is the larger of that
//! limit (the connection's `total_ms`), a hundredth of the period and one second.

use std::time::Duration;

use super::Quota;

/// The least margin added to the period: how much later than decided a call may reach the
/// vendor, relative to the next, without the vendor seeing more than its limit.
const LEAST_MARGIN: Duration = Duration::from_secs(1);

/// The quota to spend a vendor's calls from, for a vendor that allows `limit.count` calls per
/// `limit.period`, where one step may need `most_per_step` calls at once and its calls reach the
/// vendor at most `latest_call` after it was decided. It bursts a tenth of the limit (at least one
/// step's calls, at most the whole limit) and refills the rest.
pub fn vendor_budget(limit: Quota, most_per_step: u32, latest_call: Duration) -> Quota {
    let count = limit.count.max(1);
    let burst = (count / 10).max(most_per_step).clamp(1, count);
    // What refills per stretched period; at least one cell, even when the burst is the whole
    // limit (then the refill's interval is the whole stretched period).
    let refill = (count - burst).max(1);
    let margin = (limit.period / 100).max(LEAST_MARGIN).max(latest_call);
    let interval = (limit.period + margin) / refill;
    Quota::new(burst, interval * burst)
}

/// One budget no faster and no burstier than either of two: for connections that share one vendor
/// account, and so one count at the vendor.
pub fn stricter(a: Quota, b: Quota) -> Quota {
    let burst = a.count.min(b.count).max(1);
    let interval = Duration::from_nanos(a.interval_ns().max(b.interval_ns()));
    Quota::new(burst, interval * burst)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::limit::gcra::decide;

    const MINUTE: Duration = Duration::from_secs(60);

    /// The most calls `quota` lets through in any window of `window`, against a caller that sends
    /// whenever it is allowed, from a full budget: found by running it, at `step` resolution.
    fn most_in_any_window(quota: Quota, window: Duration, step: Duration) -> usize {
        let mut tat = None;
        let mut sent: Vec<u64> = Vec::new();
        let step = step.as_nanos() as u64;
        let end = window.as_nanos() as u64 * 4;
        let mut now = 0;
        while now < end {
            loop {
                let (decision, next) = decide(tat, now, quota, 1);
                if !decision.allowed {
                    break;
                }
                tat = next;
                sent.push(now);
            }
            now += step;
        }
        let window = window.as_nanos() as u64;
        (0..sent.len())
            .map(|i| {
                sent[i..]
                    .iter()
                    .take_while(|&&t| t < sent[i] + window)
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn capillarys_limit_bursts_a_tenth_and_never_passes_1000_a_minute() {
        // With the default step time limit (10 s) as the margin: 100, then 771 a minute.
        let budget = vendor_budget(Quota::new(1000, MINUTE), 2, Duration::from_secs(10));
        assert_eq!(budget.count, 100);
        let most = most_in_any_window(budget, MINUTE, Duration::from_millis(1));
        assert!((860..=1000).contains(&most), "{most}");
        // The window of calls decided, stretched by the latest a call may arrive, holds no more.
        let most = most_in_any_window(
            budget,
            MINUTE + Duration::from_secs(10),
            Duration::from_millis(1),
        );
        assert!(most <= 1000, "{most}");
    }

    #[test]
    fn a_shorter_step_limit_spends_closer_to_the_limit() {
        let budget = vendor_budget(Quota::new(1000, MINUTE), 2, Duration::from_millis(500));
        let most = most_in_any_window(budget, MINUTE, Duration::from_millis(1));
        assert!((980..=1000).contains(&most), "{most}");
    }

    #[test]
    fn the_plain_quota_would_pass_the_limit() {
        // What this module is for: the same quota spent as it stands nearly doubles in a window.
        let most = most_in_any_window(Quota::new(1000, MINUTE), MINUTE, Duration::from_millis(1));
        assert!(most > 1900, "{most}");
    }

    #[test]
    fn a_step_that_needs_more_calls_than_a_tenth_still_fits_in_the_burst() {
        let budget = vendor_budget(Quota::new(10, Duration::from_secs(2)), 2, Duration::ZERO);
        assert_eq!(budget.count, 2);
        let most = most_in_any_window(budget, Duration::from_secs(2), Duration::from_millis(1));
        assert!(most <= 10, "{most}");
    }

    #[test]
    fn tiny_limits_are_never_passed() {
        for count in 1..=5 {
            let limit = Quota::new(count, Duration::from_secs(10));
            let budget = vendor_budget(limit, 2, Duration::from_secs(3));
            assert!(
                budget.count >= 1 && budget.count <= count,
                "{count}: {budget:?}"
            );
            let most = most_in_any_window(budget, limit.period, Duration::from_millis(5));
            assert!(most <= count as usize, "{count}: {most}");
        }
    }

    #[test]
    fn the_stricter_budget_is_neither_faster_nor_burstier() {
        let fast = Quota::new(100, MINUTE);
        let slow = Quota::new(10, MINUTE * 2);
        let both = stricter(fast, slow);
        assert_eq!(both, stricter(slow, fast));
        assert_eq!(both.count, 10);
        assert!(both.interval_ns() >= fast.interval_ns());
        assert!(both.interval_ns() >= slow.interval_ns());
        // The burst of one, the pace of the other.
        let bursty_but_slow = stricter(Quota::new(50, MINUTE * 10), Quota::new(5, MINUTE));
        assert_eq!(bursty_but_slow.count, 5);
        assert_eq!(
            bursty_but_slow.interval_ns(),
            (MINUTE * 10).as_nanos() as u64 / 50
        );
    }
}
