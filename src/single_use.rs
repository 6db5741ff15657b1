//! Single-use reset ids: a completion claims its reset id before calling the vendor, so a second
//! completion with the same id is refused (`409 wrong_step`) for as long as the id lives.
//!
//! A claim is released when the vendor surely did nothing: it was never reached, it was throttling,
//! or it refused the new password outright (so the user may choose another). A success, or an
//! outcome the gateway cannot know (a timeout, a broken answer), keeps the claim.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::redis_store::RedisStore;

#[async_trait]
pub trait UsedIds: Send + Sync {
    /// Claims `id` for `ttl`. False when it was already claimed.
    async fn claim(&self, id: &str, ttl: Duration) -> bool;
    /// Gives up a claim.
    async fn release(&self, id: &str);
}

/// In-process claims, swept as they expire.
#[derive(Default)]
pub struct MemoryUsedIds {
    claims: Mutex<HashMap<String, Instant>>,
}

impl MemoryUsedIds {
    fn claim_now(&self, id: &str, ttl: Duration) -> bool {
        let now = Instant::now();
        let mut claims = self.claims.lock().expect("claims lock");
        if claims.len() > 1024 {
            claims.retain(|_, until| *until > now);
        }
        match claims.get(id) {
            Some(until) if *until > now => false,
            _ => {
                claims.insert(id.to_string(), now + ttl);
                true
            }
        }
    }
}

#[async_trait]
impl UsedIds for MemoryUsedIds {
    async fn claim(&self, id: &str, ttl: Duration) -> bool {
        self.claim_now(id, ttl)
    }

    async fn release(&self, id: &str) {
        self.claims.lock().expect("claims lock").remove(id);
    }
}

/// Claims in Redis (`SET NX PX`), shared by every replica; in-process while Redis is away.
pub struct RedisUsedIds {
    store: Arc<RedisStore>,
    claim_script: redis::Script,
    release_script: redis::Script,
    local: MemoryUsedIds,
}

impl RedisUsedIds {
    pub fn new(store: Arc<RedisStore>) -> Self {
        RedisUsedIds {
            store,
            claim_script: redis::Script::new(
                "return redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) and 1 or 0",
            ),
            release_script: redis::Script::new("return redis.call('DEL', KEYS[1])"),
            local: MemoryUsedIds::default(),
        }
    }
}

#[async_trait]
impl UsedIds for RedisUsedIds {
    async fn claim(&self, id: &str, ttl: Duration) -> bool {
        let key = self.store.key(&format!("used:{id}"));
        let ms = ttl.as_millis().max(1) as i64;
        match self
            .store
            .script::<i64>(&self.claim_script, &key, &[ms])
            .await
        {
            Ok(claimed) => claimed == 1,
            Err(_) => self.local.claim_now(id, ttl),
        }
    }

    async fn release(&self, id: &str) {
        let key = self.store.key(&format!("used:{id}"));
        let _ = self
            .store
            .script::<i64>(&self.release_script, &key, &[])
            .await;
        self.local.release(id).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_holds_until_released_or_expired() {
        let ids = MemoryUsedIds::default();
        assert!(ids.claim_now("a", Duration::from_secs(60)));
        assert!(!ids.claim_now("a", Duration::from_secs(60)));
        assert!(ids.claim_now("b", Duration::from_millis(1)));
        std::thread::sleep(Duration::from_millis(5));
        assert!(ids.claim_now("b", Duration::from_secs(60)));
        ids.claims.lock().unwrap().remove("a");
        assert!(ids.claim_now("a", Duration::from_secs(60)));
    }
}
