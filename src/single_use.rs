//! Single-use reset ids: a completion claims its reset id before calling the vendor, so a second
//! completion with the same id is refused (`409 wrong_step`) for as long as the id lives.
//!
//! A claim is released when the vendor surely did nothing: it was never reached, it was throttling,
//! or it refused the new password outright (so the user may choose another). A success, or an
//! outcome the gateway cannot know (a timeout, a broken answer), keeps the claim. A claim Redis
//! did not confirm in time is released too (the vendor was not called), in case Redis made it late.
//!
//! Claims in Redis fail closed: while Redis does not answer, no claim is made, whatever the
//! limits' failure policy says. A replica's own memory cannot know that another replica, or
//! Redis before it failed, saw the id completed, and a used id completed again would be a second
//! password change.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::redis_store::{CallError, RedisStore, RETRY_AFTER_FAILURE};
use crate::task_room::TaskRoom;

/// What a claim found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The id was unused, and is now claimed by the holder of this token.
    Claimed(ClaimToken),
    /// The id was already claimed.
    AlreadyUsed,
    /// The store did not answer: nobody can say whether the id was used.
    Unknown,
}

/// A claim's own random value: a release removes the claim only while it still holds this, so
/// a late or repeated release can never remove a claim someone else made since.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClaimToken(u128);

impl ClaimToken {
    fn new() -> ClaimToken {
        ClaimToken(rand::random())
    }

    fn to_hex(self) -> String {
        format!("{:032x}", self.0)
    }
}

#[async_trait]
pub trait UsedIds: Send + Sync {
    /// Claims `id` for `ttl`.
    async fn claim(&self, id: &str, ttl: Duration) -> Claim;
    /// Gives up the claim `token` names, if it still holds `id`.
    async fn release(&self, id: &str, token: ClaimToken);
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
    /// Each claimed id: when its claim expires, and its token.
    until: HashMap<String, (Instant, ClaimToken)>,
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
    fn claim_now(&self, id: &str, ttl: Duration) -> Option<ClaimToken> {
        let now = Instant::now();
        let mut claims = self.claims.lock().expect("claims lock");
        if claims.until.len() > claims.sweep_above {
            claims.until.retain(|_, (until, _)| *until > now);
            claims.sweep_above = (claims.until.len() * 2).max(SWEEP_FLOOR);
        }
        match claims.until.get(id) {
            Some((until, _)) if *until > now => None,
            _ => {
                let token = ClaimToken::new();
                claims.until.insert(id.to_string(), (now + ttl, token));
                Some(token)
            }
        }
    }
}

#[async_trait]
impl UsedIds for MemoryUsedIds {
    async fn claim(&self, id: &str, ttl: Duration) -> Claim {
        match self.claim_now(id, ttl) {
            Some(token) => Claim::Claimed(token),
            None => Claim::AlreadyUsed,
        }
    }

    async fn release(&self, id: &str, token: ClaimToken) {
        let mut claims = self.claims.lock().expect("claims lock");
        if claims.until.get(id).is_some_and(|(_, held)| *held == token) {
            claims.until.remove(id);
        }
    }
}

/// How long a release Redis did not take is tried again before the claim is left to expire.
const RELEASE_RETRIED_FOR: Duration = Duration::from_secs(30);

/// The longest wait between two tries of a release (the waits double from the store's rest).
const LONGEST_RELEASE_WAIT: Duration = Duration::from_secs(4);

/// The most releases being tried again at once, process-wide: past it a release that fails is
/// dropped (its id stays claimed until the claim expires: the safe side), so an outage under
/// load holds bounded memory and tasks.
const MOST_PENDING_RELEASES: usize = 1024;

static PENDING_RELEASES: TaskRoom = TaskRoom::new(MOST_PENDING_RELEASES);

/// Whether releases were dropped for want of room since the room was last at most half full: the
/// warning is logged once per such spell, not once per release.
static RELEASES_DROPPED: AtomicBool = AtomicBool::new(false);

/// Claims in Redis (`SET NX PX`), shared by every replica; none while Redis is away.
///
/// A claim whose answer did not come in time may still have been made (Redis may have run the
/// command after the gateway stopped waiting), and a release Redis did not take leaves the claim
/// in place: either would refuse the id's next completion as already used, though the vendor
/// was never asked. So each claim holds a token of its own, and both cases are followed by a
/// release of that token, sent at once on the same connection (so Redis runs it after the
/// claim, whenever it runs that) and tried again in the background until Redis answers it.
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
                "return redis.call('SET', KEYS[1], ARGV[2], 'NX', 'PX', ARGV[1]) and 1 or 0",
            ),
            // Compare and delete: only the claim this token made.
            release_script: redis::Script::new(
                "if redis.call('GET', KEYS[1]) == ARGV[1] then \
                 return redis.call('DEL', KEYS[1]) else return 0 end",
            ),
        }
    }

    fn key(&self, id: &str) -> String {
        self.store.key(&format!("used:{id}"))
    }
}

/// Sends the release now, rest or not, then keeps trying in the background (at most
/// `MOST_PENDING_RELEASES` at once, each for `RELEASE_RETRIED_FOR`) until Redis answers it.
fn release_until_answered(
    store: Arc<RedisStore>,
    script: redis::Script,
    key: String,
    token: ClaimToken,
) {
    let Some(place) = PENDING_RELEASES.take() else {
        if !RELEASES_DROPPED.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                most = MOST_PENDING_RELEASES,
                "Redis has not taken this many reset ids' releases: further ones are \
                 dropped, and their ids stay claimed (completing them is refused as a second \
                 use) until they expire"
            );
        }
        return;
    };
    // A spell of dropped releases ends once no more than half the room is taken: the next
    // release dropped after that warns again.
    if PENDING_RELEASES.at_most_half_full() {
        RELEASES_DROPPED.store(false, Ordering::Relaxed);
    }
    tokio::spawn(async move {
        let _place = place;
        let token = token.to_hex();
        let give_up = Instant::now() + RELEASE_RETRIED_FOR;
        // The first send must not wait for the store's rest: it is what follows the claim on
        // this thread's connection.
        let mut answered = store
            .script_now::<i64, _>(&script, &key, &[&token])
            .await
            .is_ok();
        let mut wait = RETRY_AFTER_FAILURE;
        while !answered && Instant::now() < give_up {
            // Jittered (half to one and a half times) and doubling, so that the releases an
            // outage left do not all call a Redis that is just back at the same moment.
            tokio::time::sleep(wait.mul_f64(0.5 + rand::random::<f64>())).await;
            wait = (wait * 2).min(LONGEST_RELEASE_WAIT);
            answered = store
                .script::<i64, _>(&script, &key, &[&token])
                .await
                .is_ok();
        }
        if !answered {
            tracing::warn!(
                "Redis did not take a reset id's release: the id stays claimed until it expires"
            );
        }
    });
}

#[async_trait]
impl UsedIds for RedisUsedIds {
    async fn claim(&self, id: &str, ttl: Duration) -> Claim {
        let key = self.key(id);
        let ms = ttl.as_millis().max(1).to_string();
        let token = ClaimToken::new();
        match self
            .store
            .script::<i64, _>(&self.claim_script, &key, &[ms, token.to_hex()])
            .await
        {
            Ok(1) => Claim::Claimed(token),
            Ok(_) => Claim::AlreadyUsed,
            // Nothing was sent: there is no claim to release.
            Err(CallError::Resting) => Claim::Unknown,
            Err(CallError::Failed(_)) => {
                release_until_answered(self.store.clone(), self.release_script.clone(), key, token);
                Claim::Unknown
            }
        }
    }

    async fn release(&self, id: &str, token: ClaimToken) {
        // A task of its own, awaited: the caller is answered once Redis has taken the release
        // (so its retry finds the id free), and a caller dropped meanwhile (a step whose
        // deadline passed) stops only its own wait. Awaited in place, a dropped release could
        // be lost halfway: the first time a Redis runs the release script takes two calls, the
        // script itself sent only once Redis has answered that it lacks it.
        let (store, script) = (self.store.clone(), self.release_script.clone());
        let key = self.key(id);
        let releasing = tokio::spawn(async move {
            let released = store
                .script::<i64, _>(&script, &key, &[token.to_hex()])
                .await;
            if released.is_err() {
                release_until_answered(store, script, key, token);
            }
        });
        let _ = releasing.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claimed(claim: Claim) -> ClaimToken {
        match claim {
            Claim::Claimed(token) => token,
            other => panic!("not claimed: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_claim_holds_until_released_or_expired() {
        let ids = MemoryUsedIds::default();
        let minute = Duration::from_secs(60);
        let a = claimed(ids.claim("a", minute).await);
        assert_eq!(ids.claim("a", minute).await, Claim::AlreadyUsed);
        let b = claimed(ids.claim("b", Duration::from_millis(1)).await);
        tokio::time::sleep(Duration::from_millis(5)).await;
        let b_again = claimed(ids.claim("b", minute).await);
        assert_ne!(b, b_again, "each claim has a token of its own");
        // Released, an id can be claimed again; another id's claim is untouched.
        ids.release("a", a).await;
        claimed(ids.claim("a", minute).await);
        assert_eq!(ids.claim("b", minute).await, Claim::AlreadyUsed);
        // A release by the expired claim's token leaves the claim made since in place.
        ids.release("b", b).await;
        assert_eq!(ids.claim("b", minute).await, Claim::AlreadyUsed);
        ids.release("b", b_again).await;
        claimed(ids.claim("b", minute).await);
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
