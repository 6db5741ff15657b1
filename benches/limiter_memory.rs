//! Memory held by the in-process limiter for 1,000,000 distinct keys:
//! `cargo bench --bench limiter_memory`. Reads the process's resident set size from /proc.

use std::time::Duration;

use reset_gateway::limit::memory::MemoryLimiter;
use reset_gateway::limit::{Mode, Quota};

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

fn main() {
    const KEYS: usize = 1_000_000;
    let quota = Quota::new(5, Duration::from_secs(900));
    // Build the key strings first so their memory is not counted as the limiter's.
    let keys: Vec<String> = (0..KEYS)
        .map(|i| format!("per-identifier:tenant:{i:032x}"))
        .collect();
    let limiter = MemoryLimiter::new();
    let before = rss_bytes();
    for k in &keys {
        limiter.check_now(k, quota, Mode::Consume(1));
    }
    let after = rss_bytes();
    assert_eq!(limiter.len(), KEYS);
    let delta = after.saturating_sub(before);
    println!(
        "limiter memory for {KEYS} distinct keys: {:.1} MiB ({:.0} bytes per key)",
        delta as f64 / (1024.0 * 1024.0),
        delta as f64 / KEYS as f64
    );
}
