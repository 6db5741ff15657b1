//! How long a tenant's recent vendor calls took, for a decoy to take as long.
//!
//! A decoy's verification (a reset for an identifier the vendor does not know) never calls the
//! vendor: there is no session to check a code against. Answered at once, it would come back a
//! whole vendor round trip sooner than a real wrong code, and its timing alone would tell which
//! identifiers have accounts. So it waits as long as a recent real call took: one duration drawn
//! at random from the last `SLOTS`, so that decoys' times follow the real ones' spread rather than
//! sitting at one telltale value.
//!
//! Starts are the request path at its busiest, and the ring is shared by the gateway's threads: a
//! duration is taken at most once a second (`due`), so a busy tenant's steps read one shared
//! number, and only one a second times its call and takes the lock.

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
    /// The second (Unix time) of the latest duration recorded.
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

    /// Whether a duration should be taken now: none has been recorded this second.
    pub fn due(&self) -> bool {
        self.due_in(crate::timestamp::unix_secs_coarse())
    }

    fn due_in(&self, second: i64) -> bool {
        self.recorded_in.load(Ordering::Relaxed) != second
    }

    pub fn record(&self, took: Duration) {
        self.record_in(crate::timestamp::unix_secs_coarse(), took);
    }

    fn record_in(&self, second: i64, took: Duration) {
        self.recorded_in.store(second, Ordering::Relaxed);
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
        assert!(recent.due_in(100));
        recent.record_in(100, Duration::from_millis(5));
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
