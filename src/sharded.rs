//! A count that every request changes and little reads (requests in flight), kept in one cache
//! line per thread and summed when read. A single atomic would be written by both worker threads
//! on every request, and each write by one core takes the line from the other: on the benchmark
//! machine such shared counters were the costliest instructions of the functions holding them.

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

/// Lines in a count: threads take them in turn, so up to this many never share one.
const SHARDS: usize = 16;

/// One counter on a line of its own (128 bytes: two lines, as adjacent-line prefetching pairs them).
#[repr(align(128))]
struct Line(AtomicI64);

pub struct ShardedCount {
    lines: [Line; SHARDS],
}

impl ShardedCount {
    pub const fn new() -> Self {
        ShardedCount {
            lines: [const { Line(AtomicI64::new(0)) }; SHARDS],
        }
    }

    /// Adds `delta` (negative to take away) on this thread's line.
    pub fn add(&self, delta: i64) {
        self.lines[own_line()].0.fetch_add(delta, Ordering::Relaxed);
    }

    /// The sum of every thread's changes. Not a snapshot: changes made while it is summed may
    /// or may not be counted, as with any count read while it changes.
    pub fn sum(&self) -> i64 {
        self.lines
            .iter()
            .map(|line| line.0.load(Ordering::Relaxed))
            .sum()
    }
}

impl Default for ShardedCount {
    fn default() -> Self {
        Self::new()
    }
}

/// This thread's line, handed out in turn on each thread's first change.
fn own_line() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static OWN: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    OWN.with(|own| *own)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_from_many_threads_sum_up() {
        let count = ShardedCount::new();
        std::thread::scope(|s| {
            for t in 0..20 {
                let count = &count;
                s.spawn(move || {
                    for _ in 0..1000 {
                        count.add(2);
                    }
                    count.add(-(t as i64));
                });
            }
        });
        assert_eq!(count.sum(), 20 * 2000 - (0..20).sum::<i64>());
        // Taken away on another thread than it was added on: still counted out.
        count.add(5);
        std::thread::scope(|s| {
            s.spawn(|| count.add(-5));
        });
        assert_eq!(count.sum(), 20 * 2000 - (0..20).sum::<i64>());
    }
}
