//! The shared store on Redis: lazily made, self-reconnecting connections (a single server or a
//! cluster), every call bounded by a short timeout, and whether the last call worked.
//!
//! No request ever waits on Redis longer than the timeout: a call that does not finish in time is
//! a failure, and the caller applies its fallback policy. After a failure, calls fail at once for
//! a short while (`RETRY_AFTER_FAILURE`) instead of each waiting out the timeout; the first call
//! after that tries Redis again, so sharing resumes by itself when Redis is back.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;

use crate::metrics;
use crate::secret::Secret;

/// What to do when Redis does not answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FailurePolicy {
    /// Each replica enforces its share of the limit in-process.
    #[default]
    Local,
    /// Let the request through.
    Allow,
    /// Refuse the request.
    Deny,
}

impl FailurePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            FailurePolicy::Local => "local",
            FailurePolicy::Allow => "allow",
            FailurePolicy::Deny => "deny",
        }
    }
}

#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://host:port`, `unix:///path/redis.sock`, ...
    pub url: String,
    /// When non-empty, a Redis Cluster reached through these nodes (and `url` is not used).
    pub cluster_nodes: Vec<String>,
    /// The AUTH password, from the environment variable `password_env` names (never in a URL).
    pub password: Option<Secret>,
    pub timeout: Duration,
    pub on_failure: FailurePolicy,
    /// How many gateway replicas share the limits: the `local` fallback enforces 1/replicas of each.
    pub replicas: u32,
    pub key_prefix: String,
}

/// Parses a Redis address, refusing one that carries a password: secrets are never written in
/// the config file (`limits.redis.password_env` names the variable that holds it).
fn without_password(url: &str, at: &str) -> Result<redis::ConnectionInfo, String> {
    use redis::IntoConnectionInfo;
    // The crate's own message may quote the address, password and all: not passed on.
    let info = url
        .into_connection_info()
        .map_err(|_| format!("{at}: not a Redis address (redis://host:port or unix:///path)"))?;
    if info.redis_settings().password().is_some() {
        return Err(format!(
            "{at}: holds a password; name the environment variable that holds it in \
             limits.redis.password_env instead"
        ));
    }
    Ok(info)
}

/// How long after a failed call the store is not tried (calls fail at once meanwhile).
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_millis(250);

/// Why a call to the store has no answer.
#[derive(Debug)]
pub enum CallError {
    /// Nothing was sent: the store rests after a recent failure.
    Resting,
    /// The call may have been sent, and no answer came in time (or the answer was an error):
    /// Redis may still run it.
    Failed(String),
}

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// Each store's id, so that a thread's connections to two stores (tests run several) stay apart.
static NEXT_STORE_ID: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// This thread's connection to each store it has used.
    static CONNECTIONS: std::cell::RefCell<Vec<(u64, Arc<tokio::sync::OnceCell<Conn>>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

const NOT_YET_CALLED: u8 = 0;
const ANSWERING: u8 = 1;
const NOT_ANSWERING: u8 = 2;

pub struct RedisStore {
    settings: RedisSettings,
    client: Option<redis::Client>,
    cluster: Option<redis::cluster::ClusterClient>,
    /// Which store this is, among any others in the process, for `CONNECTIONS`.
    id: u64,
    /// `NOT_YET_CALLED`, `ANSWERING` or `NOT_ANSWERING`: what the last call found.
    state: AtomicU8,
    /// Milliseconds since `epoch` before which calls fail at once.
    retry_at_ms: AtomicU64,
    epoch: Instant,
    /// How long Redis has not been answering, in all: the clock of the `local` fallback.
    away: Mutex<AwayClock>,
}

/// A clock that runs only while Redis is not answering.
///
/// The `local` fallback's allowance refills by it. Refilled by the wall clock, each replica's
/// allowance would be whole again after any few seconds of Redis answering, and spent on top of
/// what Redis allowed at the next failure: a Redis that missed its timeout now and then would
/// let each limit through up to twice, a vendor's budget included (the vendor would throttle the
/// gateway). By this clock a replica spends its allowance once and gets back only what its share
/// earns while Redis is away, which Redis's own quota never also gave out.
#[derive(Default)]
struct AwayClock {
    /// Time away in earlier outages.
    before: Duration,
    /// When the current outage began, if Redis is not answering.
    since: Option<Instant>,
    /// The most this clock has read, so that it never reads less (transitions recorded from
    /// two threads at once may be applied out of order).
    most: Duration,
}

impl AwayClock {
    fn note(&mut self, answering: bool, now: Instant) {
        match (answering, self.since) {
            (true, Some(since)) => {
                self.before += now.saturating_duration_since(since);
                self.since = None;
            }
            (false, None) => self.since = Some(now),
            _ => {}
        }
    }

    fn read(&mut self, now: Instant) -> Duration {
        let away = self.before
            + self
                .since
                .map_or(Duration::ZERO, |since| now.saturating_duration_since(since));
        self.most = self.most.max(away);
        self.most
    }
}

impl RedisStore {
    pub fn new(settings: RedisSettings) -> Result<RedisStore, String> {
        let (client, cluster) = if settings.cluster_nodes.is_empty() {
            let mut info = without_password(&settings.url, "limits.redis.url")?;
            if let Some(password) = &settings.password {
                let redis = info
                    .redis_settings()
                    .clone()
                    .set_password(password.expose());
                info = info.set_redis_settings(redis);
            }
            let client = redis::Client::open(info).map_err(|e| format!("limits.redis.url: {e}"))?;
            (Some(client), None)
        } else {
            for node in &settings.cluster_nodes {
                without_password(node, "limits.redis.cluster_nodes")?;
            }
            let mut builder =
                redis::cluster::ClusterClientBuilder::new(settings.cluster_nodes.clone())
                    .connection_timeout(settings.timeout)
                    .response_timeout(settings.timeout);
            if let Some(password) = &settings.password {
                builder = builder.password(password.expose());
            }
            let cluster = builder
                .build()
                .map_err(|e| format!("limits.redis.cluster_nodes: {e}"))?;
            (None, Some(cluster))
        };
        metrics::REDIS_UP.set(0);
        Ok(RedisStore {
            settings,
            client,
            cluster,
            id: NEXT_STORE_ID.fetch_add(1, Ordering::Relaxed),
            state: AtomicU8::new(NOT_YET_CALLED),
            retry_at_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            away: Mutex::new(AwayClock::default()),
        })
    }

    pub fn settings(&self) -> &RedisSettings {
        &self.settings
    }

    pub fn is_up(&self) -> bool {
        self.state.load(Ordering::Relaxed) == ANSWERING
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Notes what a call found. A change is logged once (the first call's finding too), never
    /// once per call: an outage under load would otherwise flood the log.
    fn record(&self, outcome: Result<(), &str>) {
        let ok = outcome.is_ok();
        let now = if ok { ANSWERING } else { NOT_ANSWERING };
        let before = self.state.swap(now, Ordering::Relaxed);
        metrics::REDIS_UP.set(i64::from(ok));
        if before != now {
            // The clock follows the state as it stands once the lock is held, not this call's
            // finding: another thread may have recorded a change since, and whichever of the
            // two takes the lock last reads the state both left.
            let mut away = self.away.lock().expect("away clock lock");
            let answering = self.state.load(Ordering::Relaxed) == ANSWERING;
            away.note(answering, Instant::now());
            drop(away);
            self.log_change(outcome);
        }
        if !ok {
            let retry_at = self.now_ms() + RETRY_AFTER_FAILURE.as_millis() as u64;
            self.retry_at_ms.store(retry_at, Ordering::Relaxed);
        }
    }

    fn log_change(&self, outcome: Result<(), &str>) {
        match outcome {
            Ok(()) => tracing::info!("Redis answers: limits are shared by every replica"),
            Err(error) => tracing::warn!(
                error,
                on_failure = self.settings.on_failure.as_str(),
                "Redis is not answering: limits follow limits.redis.on_failure, and a reset's \
                 codes and single use cannot be checked (503) until it answers again"
            ),
        }
    }

    /// How long Redis has not been answering, in all, since the store was made: a clock that
    /// stands still while it answers (`AwayClock`).
    pub fn time_away(&self) -> Duration {
        self.away
            .lock()
            .expect("away clock lock")
            .read(Instant::now())
    }

    /// Whether a recent failure says not to try Redis yet (calls fail at once, sending nothing).
    fn resting(&self) -> bool {
        self.now_ms() < self.retry_at_ms.load(Ordering::Relaxed)
    }

    /// This thread's connection, made on its first use here. Each worker thread has its own:
    /// a connection's driver task runs on the runtime that made it (and remakes it), so one
    /// shared connection would put every thread's Redis calls behind one thread's scheduler, and
    /// its queue would count against every call's timeout. A single-server connection is made
    /// lazily (it never blocks); a cluster connection is attempted within the timeout and
    /// retried on later calls.
    async fn conn(&self) -> Result<Conn, String> {
        // This thread's cell for this store: tasks on the thread that ask while a (cluster)
        // connection is being made wait for that one instead of each making its own.
        let cell = CONNECTIONS.with(|cells| {
            let mut cells = cells.borrow_mut();
            match cells.iter().find(|(id, _)| *id == self.id) {
                Some((_, cell)) => cell.clone(),
                None => {
                    let cell = Arc::new(tokio::sync::OnceCell::new());
                    cells.push((self.id, cell.clone()));
                    cell
                }
            }
        });
        cell.get_or_try_init(|| self.connect()).await.cloned()
    }

    async fn connect(&self) -> Result<Conn, String> {
        if let Some(client) = &self.client {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(self.settings.timeout))
                .set_response_timeout(Some(self.settings.timeout))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_millis(500));
            return ConnectionManager::new_lazy_with_config(client.clone(), config)
                .map(Conn::Single)
                .map_err(|e| e.to_string());
        }
        let cluster = self.cluster.as_ref().ok_or("no Redis configured")?;
        cluster
            .get_async_connection()
            .await
            .map(Conn::Cluster)
            .map_err(|e| e.to_string())
    }

    /// Runs a script within the timeout. `Err` means: apply the fallback policy. While the store
    /// rests after a failure, nothing is sent.
    pub async fn script<T: redis::FromRedisValue, A: redis::ToRedisArgs>(
        &self,
        script: &redis::Script,
        key: &str,
        args: &[A],
    ) -> Result<T, CallError> {
        if self.resting() {
            return Err(CallError::Resting);
        }
        self.script_now(script, key, args).await
    }

    /// Runs a script within the timeout even while the store rests: for a call that must follow
    /// another one on this thread's connection at once (Redis runs one connection's commands in
    /// the order they were sent).
    pub async fn script_now<T: redis::FromRedisValue, A: redis::ToRedisArgs>(
        &self,
        script: &redis::Script,
        key: &str,
        args: &[A],
    ) -> Result<T, CallError> {
        self.bounded(async {
            let mut invocation = script.key(key);
            for a in args {
                invocation.arg(a);
            }
            match self.conn().await? {
                Conn::Single(mut c) => invocation.invoke_async(&mut c).await,
                Conn::Cluster(mut c) => invocation.invoke_async(&mut c).await,
            }
            .map_err(|e| e.to_string())
        })
        .await
        .map_err(CallError::Failed)
    }

    /// A cheap round trip, for `/readyz`, on the admin thread's own connection. It reports, and
    /// records nothing but a first finding that Redis answers (so that a replica no request has
    /// reached yet shows `redis_up` 1): a failed or slow probe (a first connect, a throttled pod)
    /// must not put every worker into the rest after a failure, and a good one must not mark
    /// Redis up while the workers' own calls fail.
    pub async fn ping(&self) -> bool {
        let up = self
            .within_timeout(async {
                let cmd = redis::cmd("PING");
                match self.conn().await? {
                    Conn::Single(mut c) => cmd.query_async::<String>(&mut c).await,
                    Conn::Cluster(mut c) => cmd.query_async::<String>(&mut c).await,
                }
                .map_err(|e| e.to_string())
            })
            .await
            .is_ok();
        // Only from "not yet called", in one step: a worker's failure recorded meanwhile stands.
        // (The away clock has not started, so it has nothing to note.)
        if up
            && self
                .state
                .compare_exchange(
                    NOT_YET_CALLED,
                    ANSWERING,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            metrics::REDIS_UP.set(1);
            self.log_change(Ok(()));
        }
        up
    }

    /// Runs one call to Redis within the timeout, and records how it went (the store's up or
    /// down state and its rest).
    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, String>>,
    ) -> Result<T, String> {
        let result = self.within_timeout(call).await;
        self.record(result.as_ref().map(|_| ()).map_err(String::as_str));
        result
    }

    async fn within_timeout<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, String>>,
    ) -> Result<T, String> {
        match tokio::time::timeout(self.settings.timeout, call).await {
            Ok(r) => r,
            Err(_) => Err("timed out".to_string()),
        }
    }

    /// `prefix:{key}`: the hash tag keeps each decision on one cluster slot.
    pub fn key(&self, key: &str) -> String {
        format!("{}:{{{key}}}", self.settings.key_prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failed_readiness_ping_rests_nothing_and_marks_nothing() {
        // A port nothing listens on: the ping fails at once.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("redis://{}", closed.local_addr().unwrap());
        drop(closed);
        let store = RedisStore::new(RedisSettings {
            url,
            cluster_nodes: Vec::new(),
            password: None,
            timeout: Duration::from_millis(200),
            on_failure: FailurePolicy::Local,
            replicas: 1,
            key_prefix: "t".into(),
        })
        .unwrap();
        assert!(!store.ping().await);
        // The workers' calls are still tried (no rest), and no outage began.
        assert!(!store.resting());
        assert_eq!(store.state.load(Ordering::Relaxed), NOT_YET_CALLED);
        assert_eq!(store.time_away(), Duration::ZERO);
    }

    #[test]
    fn the_away_clock_runs_only_while_redis_is_not_answering() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut clock = AwayClock::default();
        assert_eq!(clock.read(at(5_000)), Duration::ZERO, "never away yet");
        clock.note(false, at(1_000));
        assert_eq!(clock.read(at(1_400)), Duration::from_millis(400));
        // A second failure in the same outage does not restart it.
        clock.note(false, at(1_500));
        clock.note(true, at(2_000));
        // Ten seconds of Redis answering add nothing.
        assert_eq!(clock.read(at(12_000)), Duration::from_millis(1_000));
        clock.note(false, at(12_000));
        assert_eq!(clock.read(at(12_250)), Duration::from_millis(1_250));
        // A read as of an earlier instant never goes back.
        assert_eq!(clock.read(at(12_100)), Duration::from_millis(1_250));
    }
}
