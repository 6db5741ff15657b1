//! How long a tenant's recent vendor calls took, for a decoy to take as long.
//!
//! A decoy's verification (a reset for an identifier the vendor does not know) never calls the
//! vendor: there is no session to check a code against. Answered at once, it would come back a
//! whole vendor round trip sooner than a real wrong code, and its timing alone would tell which
//! identifiers have accounts. So it waits as long as a recent real call took: one duration drawn
//! at random from the last `SLOTS`, so that decoys' times follow the real ones' spread rather than
//! sitting at one telltale value.
//!
//! The ring is shared by the gateway's threads: a duration is taken at most once a second (`due`
//! claims the second), so a busy tenant's steps read one shared number, and only one a second
//! times its call and takes the lock. 32 samples span the last half minute or more.
//!
//! Before a replica has timed any verification (just started, or a quiet tenant whose starts
//! went to other replicas), a decoy waits as long as one vendor call of its own start took,
//! which its reset id carries (`flow::concealment::decoy_state`).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use rand::Rng;

/// How many recent durations are kept.
const SLOTS: usize = 32;

/// The last `SLOTS` durations recorded, oldest overwritten first.
#[derive(Default)]
pub struct RecentDurations {
    ring: Mutex<Ring>,
    /// The second (Unix time) the latest duration was claimed in.
    recorded_in: AtomicI64,
}

#[derive(Default)]
struct Ring {
    micros: [u32; SLOTS],
    filled: usize,
    next: usize,
}

impl RecentDurations {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether to take a duration now: true for the first caller of each second, which claims
    /// it (before its call, so calls in flight together are not all timed).
    pub fn due(&self) -> bool {
        self.due_in(crate::timestamp::unix_secs_coarse())
    }

    fn due_in(&self, second: i64) -> bool {
        let claimed = self.recorded_in.load(Ordering::Relaxed);
        claimed != second
            && self
                .recorded_in
                .compare_exchange(claimed, second, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    pub fn record(&self, took: Duration) {
        let micros = u32::try_from(took.as_micros()).unwrap_or(u32::MAX);
        let mut ring = self.lock();
        let at = ring.next;
        ring.micros[at] = micros;
        ring.next = (at + 1) % SLOTS;
        ring.filled = (ring.filled + 1).min(SLOTS);
    }

    /// One of the recorded durations, at random; `None` before any was recorded.
    pub fn draw(&self) -> Option<Duration> {
        let ring = self.lock();
        if ring.filled == 0 {
            return None;
        }
        let at = rand::thread_rng().gen_range(0..ring.filled);
        Some(Duration::from_micros(u64::from(ring.micros[at])))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        // The ring is a few integers, valid after any write a panic could interrupt.
        self.ring
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_drawn_before_anything_is_recorded() {
        assert_eq!(RecentDurations::new().draw(), None);
    }

    #[test]
    fn draws_come_from_the_last_slots_recorded() {
        let recent = RecentDurations::new();
        for ms in 0..(SLOTS as u64 + 10) {
            recent.record(Duration::from_millis(ms));
        }
        // The first ten were overwritten.
        for _ in 0..1_000 {
            let drawn = recent.draw().expect("recorded");
            assert!(drawn >= Duration::from_millis(10), "{drawn:?}");
            assert!(
                drawn < Duration::from_millis(SLOTS as u64 + 10),
                "{drawn:?}"
            );
        }
    }

    #[test]
    fn one_duration_a_second_is_due() {
        let recent = RecentDurations::new();
        // The first caller claims the second, whether or not it records anything after.
        assert!(recent.due_in(100));
        assert!(!recent.due_in(100));
        assert!(!recent.due_in(100));
        assert!(recent.due_in(101));
    }

    #[test]
    fn draws_spread_over_what_was_recorded() {
        let recent = RecentDurations::new();
        recent.record(Duration::from_millis(1));
        recent.record(Duration::from_millis(2));
        let draws: Vec<Duration> = (0..200).filter_map(|_| recent.draw()).collect();
        assert!(draws.contains(&Duration::from_millis(1)));
        assert!(draws.contains(&Duration::from_millis(2)));
        assert!(draws.iter().all(|d| *d <= Duration::from_millis(2)));
    }
}
