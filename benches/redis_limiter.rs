//! What one limiter decision costs through Redis, and how many decisions per second one gateway
//! process gets from it: `cargo bench --bench redis_limiter` (Redis on 127.0.0.1:6379, or the URL
//! in REDIS_URL). Prints latency percentiles for sequential decisions and the throughput of 64
//! concurrent deciders, next to the in-process limiter's latency.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reset_gateway::limit::memory::MemoryLimiter;
use reset_gateway::limit::redis::RedisLimiter;
use reset_gateway::limit::{Limiter, Mode, Quota};
use reset_gateway::redis_store::{FailurePolicy, RedisSettings, RedisStore};

fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration, Duration) {
    samples.sort();
    let at = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    (at(0.50), at(0.99), at(0.999))
}

async fn sequential(limiter: &dyn Limiter, n: usize) -> Vec<Duration> {
    let quota = Quota::new(1_000_000, Duration::from_secs(60));
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let key = format!("bench:key:{}", i % 1000);
        let t = Instant::now();
        std::hint::black_box(limiter.check(&key, quota, Mode::Consume(1)).await);
        samples.push(t.elapsed());
    }
    samples
}

fn main() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let store = Arc::new(
        RedisStore::new(RedisSettings {
            url: url.clone(),
            cluster_nodes: Vec::new(),
            password: None,
            timeout: Duration::from_millis(50),
            on_failure: FailurePolicy::Deny,
            replicas: 1,
            key_prefix: format!("bench-{}", std::process::id()),
        })
        .expect("a Redis URL"),
    );
    let redis = Arc::new(RedisLimiter::new(store.clone()));
    let memory = MemoryLimiter::new();
    runtime.block_on(async {
        assert!(store.ping().await, "no Redis answers at {url}");
        sequential(redis.as_ref(), 1_000).await; // warm up: connection, script load
        let (p50, p99, p999) = percentiles(sequential(redis.as_ref(), 20_000).await);
        println!("redis limiter, one decision at a time (20,000): p50 {p50:?}, p99 {p99:?}, p99.9 {p999:?}");
        let (p50, p99, p999) = percentiles(sequential(&memory, 20_000).await);
        println!("memory limiter, one decision at a time (20,000): p50 {p50:?}, p99 {p99:?}, p99.9 {p999:?}");

        let tasks = 64;
        let run_for = Duration::from_secs(3);
        let started = Instant::now();
        let mut handles = Vec::new();
        for t in 0..tasks {
            let redis = redis.clone();
            handles.push(tokio::spawn(async move {
                let quota = Quota::new(1_000_000, Duration::from_secs(60));
                let mut done = 0u64;
                while started.elapsed() < run_for {
                    let key = format!("bench:task:{t}:{}", done % 100);
                    redis.check(&key, quota, Mode::Consume(1)).await;
                    done += 1;
                }
                done
            }));
        }
        let mut total = 0;
        for h in handles {
            total += h.await.expect("task");
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "redis limiter, {tasks} concurrent deciders for {secs:.1} s: {:.0} decisions/s",
            total as f64 / secs
        );
    });
}
