//! Single-use reset ids: a completion claims its reset id before calling the vendor, so a second
//! completion with the same id is refused (`409 wrong_step`) for as long as the id lives.
//!
//! A claim is released when the vendor surely did nothing: it was never reached, it was throttling,
//! or it refused the new password outright (so the user may choose another). A success, or an
//! outcome the gateway cannot know (a timeout, a broken answer), keeps the claim.
//!
//! Claims in Redis fail closed: while Redis does not answer, no claim is made, whatever the
//! limits' failure policy says. A replica's own memory cannot know that another replica, or
//! Redis before it failed, saw the id completed, and a used id completed again would be a second
//! password change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::redis_store::RedisStore;

/// What a claim found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The id was unused, and is now claimed.
    Claimed,
    /// The id was already claimed.
    AlreadyUsed,
    /// The store did not answer: nobody can say whether the id was used.
    Unknown,
}

#[async_trait]
pub trait UsedIds: Send + Sync {
    /// Claims `id` for `ttl`.
    async fn claim(&self, id: &str, ttl: Duration) -> Claim;
    /// Gives up a claim.
    async fn release(&self, id: &str);
}

/// How much longer a claim lives than the reset id it claims: more than any replica's wall clock
/// should be off from another's or from Redis's.
pub const CLAIM_MARGIN: Duration = Duration::from_secs(300);

/// The fewest live claims before expired ones are swept.
const SWEEP_FLOOR: usize = 1024;

/// In-process claims, swept as they expire.
pub struct MemoryUsedIds {
    claims: Mutex<Claims>,
}

struct Claims {
    until: HashMap<String, Instant>,
    /// Sweep once the map holds more than this: twice what the last sweep left (at least
    /// `SWEEP_FLOOR`), so each sweep's cost is spread over as many claims as it looked at,
    /// rather than every claim paying for a sweep once the map is big.
    sweep_above: usize,
}

impl Default for MemoryUsedIds {
    fn default() -> Self {
        MemoryUsedIds {
            claims: Mutex::new(Claims {
                until: HashMap::new(),
                sweep_above: SWEEP_FLOOR,
            }),
        }
    }
}

impl MemoryUsedIds {
    fn claim_now(&self, id: &str, ttl: Duration) -> bool {
        let now = Instant::now();
        let mut claims = self.claims.lock().expect("claims lock");
        if claims.until.len() > claims.sweep_above {
            claims.until.retain(|_, until| *until > now);
            claims.sweep_above = (claims.until.len() * 2).max(SWEEP_FLOOR);
        }
        match claims.until.get(id) {
            Some(until) if *until > now => false,
            _ => {
                claims.until.insert(id.to_string(), now + ttl);
                true
            }
        }
    }
}

#[async_trait]
impl UsedIds for MemoryUsedIds {
    async fn claim(&self, id: &str, ttl: Duration) -> Claim {
        if self.claim_now(id, ttl) {
            Claim::Claimed
        } else {
            Claim::AlreadyUsed
        }
    }

    async fn release(&self, id: &str) {
        self.claims.lock().expect("claims lock").until.remove(id);
    }
}

/// Claims in Redis (`SET NX PX`), shared by every replica; none while Redis is away.
pub struct RedisUsedIds {
    store: Arc<RedisStore>,
    claim_script: redis::Script,
    release_script: redis::Script,
}

impl RedisUsedIds {
    pub fn new(store: Arc<RedisStore>) -> Self {
        RedisUsedIds {
            store,
            claim_script: redis::Script::new(
                "return redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) and 1 or 0",
            ),
            release_script: redis::Script::new("return redis.call('DEL', KEYS[1])"),
        }
    }
}

#[async_trait]
impl UsedIds for RedisUsedIds {
    async fn claim(&self, id: &str, ttl: Duration) -> Claim {
        let key = self.store.key(&format!("used:{id}"));
        let ms = ttl.as_millis().max(1) as i64;
        match self
            .store
            .script::<i64>(&self.claim_script, &key, &[ms])
            .await
        {
            Ok(1) => Claim::Claimed,
            Ok(_) => Claim::AlreadyUsed,
            Err(_) => Claim::Unknown,
        }
    }

    /// A release Redis does not take leaves the id claimed until it expires: the safe side.
    async fn release(&self, id: &str) {
        let key = self.store.key(&format!("used:{id}"));
        let _ = self
            .store
            .script::<i64>(&self.release_script, &key, &[])
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_claim_holds_until_released_or_expired() {
        let ids = MemoryUsedIds::default();
        let minute = Duration::from_secs(60);
        assert!(matches!(ids.claim("a", minute).await, Claim::Claimed));
        assert!(matches!(ids.claim("a", minute).await, Claim::AlreadyUsed));
        assert!(matches!(
            ids.claim("b", Duration::from_millis(1)).await,
            Claim::Claimed
        ));
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(matches!(ids.claim("b", minute).await, Claim::Claimed));
        // Released, an id can be claimed again; another id's claim is untouched.
        ids.release("a").await;
        assert!(matches!(ids.claim("a", minute).await, Claim::Claimed));
        assert!(matches!(ids.claim("b", minute).await, Claim::AlreadyUsed));
    }

    #[tokio::test]
    async fn expired_claims_are_swept_when_the_map_has_doubled_and_live_ones_kept() {
        let ids = MemoryUsedIds::default();
        let live = Duration::from_secs(60);
        for n in 0..SWEEP_FLOOR {
            ids.claim(&format!("gone-{n}"), Duration::from_millis(1))
                .await;
        }
        ids.claim("kept", live).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        // Over the floor: this claim sweeps the expired ones and sets the next sweep at twice
        // what is left.
        ids.claim("next", live).await;
        {
            let claims = ids.claims.lock().unwrap();
            assert_eq!(claims.until.len(), 2);
            assert_eq!(claims.sweep_above, SWEEP_FLOOR);
        }
        assert!(matches!(ids.claim("kept", live).await, Claim::AlreadyUsed));
        // Live claims are never swept: a map of live claims grows, sweeping only as it doubles.
        for n in 0..3 * SWEEP_FLOOR {
            ids.claim(&format!("live-{n}"), live).await;
        }
        let claims = ids.claims.lock().unwrap();
        assert_eq!(claims.until.len(), 3 * SWEEP_FLOOR + 2);
        // Swept at 1,025 and at 2,051 claims, each time finding nothing to drop.
        assert_eq!(claims.sweep_above, 2 * (2 * SWEEP_FLOOR + 3));
    }
}
