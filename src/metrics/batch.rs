//! The request path's observations, kept per thread and added to the shared families in batches.
//!
//! A Prometheus family's counters and histograms are atomics that every worker thread writes, and
//! a request makes six or so observations (its count and duration, its vendor call's, its limit
//! decisions, its connection's reuse): each write by one core took the cache line from the other
//! (perf annotate on the benchmark machine: three quarters of `Histogram::observe`'s time on the
//! instructions after its atomic adds). Here each thread observes into local handles
//! (`prometheus::local`) and adds what they hold to the families
//! - when it finishes observing a request and has no other request in hand, so whenever nothing
//!   else is in flight on its thread, a request's observations are in `/metrics` before its
//!   answer is written;
//! - every `FLUSH_EVERY` requests otherwise, so under load `/metrics` is at most that many
//!   requests per worker thread behind.

use std::cell::{Cell, RefCell};
use std::thread::LocalKey;

use pingora_prometheus::prometheus::local::{LocalHistogram, LocalIntCounter};
use pingora_prometheus::prometheus::{Histogram, IntCounter};

/// Requests a busy thread observes between two flushes.
pub const FLUSH_EVERY: u32 = 64;

/// How many label sets a thread keeps handles for; past it, observations go to the families at
/// once (a configuration with that many tenants and codes is correct, only slower).
const MAX_CACHED: usize = 512;

/// A labelled counter and histogram pair, looked up once per thread.
pub struct Pair {
    labels: [Box<str>; 3],
    code: &'static str,
    count: LocalIntCounter,
    duration: LocalHistogram,
}

/// A labelled pair of counters (allowed and refused, reused and new), looked up once per thread.
pub struct Counters {
    label: &'static str,
    counts: [LocalIntCounter; 2],
}

thread_local! {
    /// `REQUESTS` and `REQUEST_DURATION` (step, tenant, vendor; code).
    pub static REQUEST_PAIRS: RefCell<Vec<Pair>> = const { RefCell::new(Vec::new()) };
    /// `UPSTREAM_REQUESTS` and `UPSTREAM_DURATION` (vendor, endpoint, ""; class).
    pub static UPSTREAM_PAIRS: RefCell<Vec<Pair>> = const { RefCell::new(Vec::new()) };
    /// `LIMITER_DECISIONS` by limit.
    pub static DECISIONS: RefCell<Vec<Counters>> = const { RefCell::new(Vec::new()) };
    /// `UPSTREAM_CONNECTIONS` by vendor.
    pub static CONNECTIONS: RefCell<Vec<Counters>> = const { RefCell::new(Vec::new()) };
    /// Canonical requests this thread is handling.
    static HANDLING: Cell<u32> = const { Cell::new(0) };
    /// Requests observed since this thread last flushed.
    static SINCE_FLUSH: Cell<u32> = const { Cell::new(0) };
    /// Whether this thread's handles hold anything not yet flushed: a request that counted a
    /// limit decision or a vendor call and then never made its own observation (it panicked,
    /// say) leaves counts that only this says are there.
    static HELD: Cell<bool> = const { Cell::new(false) };
}

/// Counts one event under `labels` and `code` and observes its duration, through this thread's
/// handles (made from the families' by `make` the first time).
pub fn observe_pair(
    cache: &'static LocalKey<RefCell<Vec<Pair>>>,
    labels: [&str; 3],
    code: &'static str,
    seconds: f64,
    make: impl FnOnce() -> (IntCounter, Histogram),
) {
    HELD.set(true);
    cache.with(|pairs| {
        let mut pairs = pairs.borrow_mut();
        let found = pairs.iter().find(|p| {
            p.code == code
                && p.labels
                    .iter()
                    .zip(labels)
                    .all(|(have, want)| &**have == want)
        });
        if let Some(pair) = found {
            pair.count.inc();
            pair.duration.observe(seconds);
            return;
        }
        let (count, duration) = make();
        if pairs.len() < MAX_CACHED {
            let pair = Pair {
                labels: labels.map(Box::from),
                code,
                count: count.local(),
                duration: duration.local(),
            };
            pair.count.inc();
            pair.duration.observe(seconds);
            pairs.push(pair);
        } else {
            count.inc();
            duration.observe(seconds);
        }
    })
}

/// Counts one event as `which` (0 or 1) of the pair labelled `label`, through this thread's
/// handles (made from the family's by `make` the first time).
pub fn count(
    cache: &'static LocalKey<RefCell<Vec<Counters>>>,
    label: &'static str,
    which: usize,
    make: impl FnOnce() -> [IntCounter; 2],
) {
    HELD.set(true);
    cache.with(|counters| {
        let mut counters = counters.borrow_mut();
        if let Some(found) = counters.iter().find(|c| c.label == label) {
            return found.counts[which].inc();
        }
        let made = make();
        if counters.len() < MAX_CACHED {
            let pair = Counters {
                label,
                counts: made.map(|c| c.local()),
            };
            pair.counts[which].inc();
            counters.push(pair);
        } else {
            made[which].inc();
        }
    })
}

/// A canonical request begins on this thread.
pub fn request_started() {
    HANDLING.set(HANDLING.get() + 1);
}

/// A canonical request this thread began is over (answered or dropped). A thread left with none
/// in hand flushes what it holds: requests dropped before their observation (a client that
/// went away) must not leave the last ones of a busy spell unflushed while the thread is idle.
pub fn request_finished() {
    let handling = HANDLING.get().saturating_sub(1);
    HANDLING.set(handling);
    if handling == 0 && HELD.get() {
        flush();
    }
}

/// A canonical request has made its last observation: flush if it is the only one in hand, or
/// if enough have waited.
pub fn request_observed() {
    let since = SINCE_FLUSH.get() + 1;
    if HANDLING.get() <= 1 || since >= FLUSH_EVERY {
        flush();
    } else {
        SINCE_FLUSH.set(since);
    }
}

/// Adds everything this thread holds to the families.
pub fn flush() {
    SINCE_FLUSH.set(0);
    HELD.set(false);
    for cache in [&REQUEST_PAIRS, &UPSTREAM_PAIRS] {
        cache.with(|pairs| {
            for pair in pairs.borrow().iter() {
                pair.count.flush();
                pair.duration.flush();
            }
        });
    }
    for cache in [&DECISIONS, &CONNECTIONS] {
        cache.with(|counters| {
            for c in counters.borrow().iter() {
                c.counts.iter().for_each(LocalIntCounter::flush);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_prometheus::prometheus::{HistogramOpts, Opts};

    #[test]
    fn a_lone_request_is_flushed_and_a_busy_thread_batches() {
        let count = IntCounter::with_opts(Opts::new("t_count", "t")).unwrap();
        let duration = Histogram::with_opts(HistogramOpts::new("t_duration", "t")).unwrap();
        let observe = || {
            observe_pair(&REQUEST_PAIRS, ["s", "t", "v"], "ok", 0.5, || {
                (count.clone(), duration.clone())
            })
        };
        // Alone on the thread: in the family as soon as the request is observed.
        request_started();
        observe();
        request_observed();
        request_finished();
        assert_eq!(count.get(), 1);
        assert_eq!(duration.get_sample_count(), 1);
        // With another request in hand, held back until FLUSH_EVERY requests have waited.
        request_started();
        for n in 1..FLUSH_EVERY {
            request_started();
            observe();
            request_observed();
            request_finished();
            assert_eq!(count.get(), 1, "after {n}");
        }
        request_started();
        observe();
        request_observed();
        request_finished();
        assert_eq!(count.get(), 1 + u64::from(FLUSH_EVERY));
        assert_eq!(duration.get_sample_count(), 1 + u64::from(FLUSH_EVERY));
        // The last one in hand flushes what is left.
        observe();
        request_observed();
        request_finished();
        assert_eq!(count.get(), 2 + u64::from(FLUSH_EVERY));
        // Observed with another in hand, then that other dropped unobserved: the thread, idle,
        // flushes.
        request_started();
        request_started();
        observe();
        request_observed();
        request_finished();
        assert_eq!(count.get(), 2 + u64::from(FLUSH_EVERY));
        request_finished();
        assert_eq!(count.get(), 3 + u64::from(FLUSH_EVERY));
        // A request that counted something and then never made its own observation (a handler
        // that panicked): the thread, idle, flushes that count too.
        let decisions = [
            IntCounter::with_opts(Opts::new("t_allowed", "t")).unwrap(),
            IntCounter::with_opts(Opts::new("t_refused", "t")).unwrap(),
        ];
        request_started();
        super::count(&DECISIONS, "t-limit", 0, || decisions.clone());
        request_finished();
        assert_eq!(decisions[0].get(), 1);
    }
}
