//! The in-process limiter backend: GCRA state in a sharded map, idle keys swept away.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::gcra::{decide, Decision, Quota};
use super::{Limiter, Mode};

const SHARDS: usize = 64;
/// How often a shard drops keys whose state has fully recovered.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// The shard maps' own hasher. Their keys are already the output of a keyed SipHash, so hashing
/// them again (as `HashMap`'s default would, twice per decision) spends work for nothing; the
/// key is used as it is. The shard is chosen from bits the map does not use for its buckets
/// (the low bits) or its tags (the top seven), so keys within one shard stay spread. The
/// gateway's API key table uses it too, keyed by bytes of a SHA-256.
#[derive(Default)]
pub(crate) struct AlreadyHashed(u64);

impl Hasher for AlreadyHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys (`write_u64`) are hashed here; anything else is mixed in byte by
        // byte, enough for a map but never used.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type KeyMap = HashMap<u64, u64, BuildHasherDefault<AlreadyHashed>>;

/// The shard of a key hash: six bits from the middle of it.
fn shard_of(hash: u64) -> usize {
    ((hash >> 32) % SHARDS as u64) as usize
}

struct Shard {
    /// Key hash -> TAT in nanoseconds since `epoch`.
    tats: KeyMap,
    last_sweep: u64,
}

/// Keys are stored as 64-bit keyed hashes: memory stays small and fixed per key, and no
/// identifier is kept in memory in the clear.
pub struct MemoryLimiter {
    shards: Vec<Mutex<Shard>>,
    hasher: RandomState,
    epoch: Instant,
}

impl Default for MemoryLimiter {
    fn default() -> Self {
        MemoryLimiter::new()
    }
}

impl MemoryLimiter {
    pub fn new() -> Self {
        MemoryLimiter {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        tats: KeyMap::default(),
                        last_sweep: 0,
                    })
                })
                .collect(),
            hasher: RandomState::new(),
            epoch: Instant::now(),
        }
    }

    fn now_ns(&self) -> u64 {
        self.ns_at(Instant::now())
    }

    fn ns_at(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    /// The synchronous decision, for callers outside async code (and benchmarks).
    pub fn check_now(&self, key: &str, quota: Quota, mode: Mode) -> Decision {
        self.check_at(key, quota, mode, Instant::now())
    }

    /// The decision as of `at`, a time read at most microseconds before (the request path
    /// passes one time for the limits it checks together, saving a clock read per limit). A
    /// time older than the shard's last sweep is taken as the sweep's: the keys it dropped had
    /// recovered by then and only by then, so an older time would find them missing and store
    /// less than they had spent.
    pub fn check_at(&self, key: &str, quota: Quota, mode: Mode, at: Instant) -> Decision {
        let hash = self.hasher.hash_one(key);
        let mut shard = self.shards[shard_of(hash)]
            .lock()
            .expect("limiter shard lock");
        let now = self.ns_at(at).max(shard.last_sweep);
        if now.saturating_sub(shard.last_sweep) >= SWEEP_EVERY.as_nanos() as u64 {
            shard.tats.retain(|_, tat| *tat > now);
            shard.last_sweep = now;
        }
        match mode {
            Mode::Consume(cost) => {
                let (decision, new_tat) = decide(shard.tats.get(&hash).copied(), now, quota, cost);
                if let Some(tat) = new_tat {
                    shard.tats.insert(hash, tat);
                }
                decision
            }
            Mode::Refund(cells) => {
                let back = quota.interval_ns().saturating_mul(u64::from(cells));
                if let Some(tat) = shard.tats.get_mut(&hash) {
                    *tat = tat.saturating_sub(back).max(now);
                }
                // What the key has now (a cost of nothing spends nothing).
                decide(shard.tats.get(&hash).copied(), now, quota, 0).0
            }
        }
    }

    /// Keys currently held (for tests and memory measurements).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().expect("limiter shard lock").tats.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every key whose state has fully recovered, now.
    pub fn sweep(&self) {
        let now = self.now_ns();
        for shard in &self.shards {
            let mut shard = shard.lock().expect("limiter shard lock");
            shard.tats.retain(|_, tat| *tat > now);
            shard.tats.shrink_to_fit();
            shard.last_sweep = shard.last_sweep.max(now);
        }
    }
}

#[async_trait]
impl Limiter for MemoryLimiter {
    async fn check(&self, key: &str, quota: Quota, mode: Mode) -> Decision {
        self.check_now(key, quota, mode)
    }

    fn decide_now(&self, key: &str, quota: Quota, mode: Mode, at: Instant) -> Option<Decision> {
        Some(self.check_at(key, quota, mode, at))
    }

    fn backend(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_independent_and_refunds_give_cells_back() {
        let l = MemoryLimiter::new();
        let q = Quota::new(2, Duration::from_secs(60));
        assert!(l.check_now("a", q, Mode::Consume(1)).allowed);
        assert!(l.check_now("a", q, Mode::Consume(1)).allowed);
        assert!(!l.check_now("a", q, Mode::Consume(1)).allowed);
        assert!(l.check_now("b", q, Mode::Consume(1)).allowed);
        // One cell back: one more is allowed, and no more than that.
        assert_eq!(l.check_now("a", q, Mode::Refund(1)).remaining, 1);
        assert!(l.check_now("a", q, Mode::Consume(1)).allowed);
        assert!(!l.check_now("a", q, Mode::Consume(1)).allowed);
        // A key is never refunded past whole: two back, then three spent, and the third refused.
        for _ in 0..3 {
            l.check_now("a", q, Mode::Refund(1));
        }
        assert_eq!(l.check_now("a", q, Mode::Refund(1)).remaining, 2);
        assert!(l.check_now("a", q, Mode::Consume(1)).allowed);
        assert!(l.check_now("a", q, Mode::Consume(1)).allowed);
        assert!(!l.check_now("a", q, Mode::Consume(1)).allowed);
        // A refund for a key never seen stores nothing.
        let held = l.len();
        assert!(l.check_now("c", q, Mode::Refund(1)).allowed);
        assert_eq!(l.len(), held);
    }

    #[test]
    fn decisions_are_made_as_of_the_time_given() {
        let l = MemoryLimiter::new();
        let q = Quota::new(1, Duration::from_secs(60));
        let arrived = Instant::now();
        assert!(l.check_at("a", q, Mode::Consume(1), arrived).allowed);
        let later = |secs| arrived + Duration::from_secs(secs);
        assert!(!l.check_at("a", q, Mode::Consume(1), later(59)).allowed);
        assert!(l.check_at("a", q, Mode::Consume(1), later(61)).allowed);
        // Through the trait, as the request path decides.
        assert!(
            !l.decide_now("a", q, Mode::Consume(1), later(62))
                .unwrap()
                .allowed
        );
        assert!(
            l.decide_now("a", q, Mode::Consume(1), later(122))
                .unwrap()
                .allowed
        );
    }

    #[test]
    fn a_time_older_than_the_last_sweep_counts_as_the_sweeps() {
        let l = MemoryLimiter::new();
        let q = Quota::new(1, Duration::from_secs(60));
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        assert!(l.check_at("a", q, Mode::Consume(1), at(0)).allowed);
        // Past the sweep interval: this decision sweeps the shard, and "a" (recovered) goes.
        assert!(l.check_at("a", q, Mode::Refund(1), at(100)).allowed);
        assert!(l.is_empty());
        // A late decision as of 30 s is taken as of the sweep (100 s), the earliest time the
        // shard still knows, so it spends the cell until 160 s and the one at 120 s is refused.
        // Unclamped, it would store 90 s (a time the sweep has already passed), and the next
        // sweep would forget the cell it just spent.
        assert!(l.check_at("a", q, Mode::Consume(1), at(30)).allowed);
        assert!(!l.check_at("a", q, Mode::Consume(1), at(120)).allowed);
        assert!(l.check_at("a", q, Mode::Consume(1), at(160)).allowed);
    }

    #[test]
    fn recovered_keys_are_swept() {
        let l = MemoryLimiter::new();
        let q = Quota::new(1000, Duration::from_millis(10));
        for i in 0..1000 {
            l.check_now(&format!("k{i}"), q, Mode::Consume(1));
        }
        assert_eq!(l.len(), 1000);
        std::thread::sleep(Duration::from_millis(20));
        l.sweep();
        assert!(l.is_empty());
    }
}
