//! One limiter decision, in-process: `cargo bench --bench limiter`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use reset_gateway::limit::gcra::{decide, Quota};
use reset_gateway::limit::memory::MemoryLimiter;
use reset_gateway::limit::Mode;

fn limiter(c: &mut Criterion) {
    let quota = Quota::new(1000, Duration::from_secs(60));
    c.bench_function("gcra decide (pure)", |b| {
        b.iter(|| decide(black_box(Some(1_000_000)), black_box(2_000_000), quota, 1))
    });

    let one = MemoryLimiter::new();
    c.bench_function("memory limiter, one hot key", |b| {
        b.iter(|| one.check_now(black_box("per-key:tenant:demo"), quota, Mode::Consume(1)))
    });

    let many = MemoryLimiter::new();
    let keys: Vec<String> = (0..100_000)
        .map(|i| format!("per-identifier:t:{i:032x}"))
        .collect();
    for k in &keys {
        many.check_now(k, quota, Mode::Consume(1));
    }
    let mut i = 0usize;
    c.bench_function("memory limiter, 100k live keys", |b| {
        b.iter(|| {
            i = (i + 7919) % keys.len();
            many.check_now(black_box(&keys[i]), quota, Mode::Consume(1))
        })
    });
}

criterion_group!(benches, limiter);
criterion_main!(benches);
