//! Timeouts for the request path, cheaper than tokio's timers.
//!
//! Every request arms a few timeouts (the wait for the next request on a kept-alive connection,
//! the step's total, the vendor's answer) and almost none of them fire. A tokio timer allocates,
//! takes the runtime's timer-wheel lock to arm and again to disarm, and the runtime reads the clock
//! and visits the wheel each time it parks: about 2.8k instructions per request for the three a
//! request arms (callgrind), against about 0.9k with this table (BENCHMARKS.md).
//!
//! Here a timeout that has to wait takes a slot in one process-wide table (a short lock, shared by
//! the worker threads, to arm and another to disarm) and one thread, `deadlines`, sweeps the
//! table: it sleeps until the earliest deadline, marks what has passed and wakes those tasks. A
//! timeout whose future is ready on its first poll costs nothing but that poll. A timeout fires
//! at most `RESOLUTION` after its deadline, plus the sweeper's and the task's scheduling delay.
//! The table holds only timeouts that are waiting (a slot is reused once freed), so its size is
//! bounded by the operations in flight; a sweep visits every slot, which is cheap at the few
//! thousand a busy gateway has, and sweeps are rare while deadlines are seconds away.

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::{LazyLock, Mutex, MutexGuard, OnceLock};
use std::task::{Poll, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How often, at most, the sweeper looks: a timeout fires up to this late.
const RESOLUTION: Duration = Duration::from_millis(5);

/// The future did not finish before its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

impl std::fmt::Display for Elapsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("deadline has elapsed")
    }
}

impl std::error::Error for Elapsed {}

/// `future`, given at most `limit` from its first wait.
pub async fn timeout<F: Future>(limit: Duration, future: F) -> Result<F::Output, Elapsed> {
    run(When::After(limit), future).await
}

/// `future`, given until `deadline`.
pub async fn timeout_at<F: Future>(deadline: Instant, future: F) -> Result<F::Output, Elapsed> {
    run(When::At(deadline), future).await
}

#[derive(Clone, Copy)]
enum When {
    /// Counted from the first poll that has to wait: a future ready at once needs no clock read.
    After(Duration),
    At(Instant),
}

async fn run<F: Future>(when: When, future: F) -> Result<F::Output, Elapsed> {
    let mut future = pin!(future);
    let mut armed: Option<Armed> = None;
    poll_fn(move |cx| {
        // The future first: work that finished in time is never reported late.
        if let Poll::Ready(output) = future.as_mut().poll(cx) {
            return Poll::Ready(Ok(output));
        }
        let fired = match &armed {
            Some(slot) => slot.fired(cx.waker()),
            None => {
                let now = Instant::now();
                let deadline = match when {
                    When::After(limit) => now.checked_add(limit).unwrap_or(now + FAR_FUTURE),
                    When::At(deadline) => deadline,
                };
                if deadline <= now {
                    true
                } else {
                    armed = Some(arm(deadline, cx.waker()));
                    false
                }
            }
        };
        if fired {
            Poll::Ready(Err(Elapsed))
        } else {
            Poll::Pending
        }
    })
    .await
}

/// A limit too long to add to `Instant` (a configuration of `u64::MAX` ms) is a year.
const FAR_FUTURE: Duration = Duration::from_secs(365 * 24 * 3600);

/// One waiting timeout.
struct Slot {
    deadline: Instant,
    waker: Waker,
    /// Set by the sweeper when the deadline has passed, before it wakes the task.
    fired: bool,
}

#[derive(Default)]
struct Table {
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    /// When the sweeper will look next; `None` while it sleeps with nothing to wait for.
    next_sweep: Option<Instant>,
}

struct Sweeper {
    table: Mutex<Table>,
    thread: OnceLock<Thread>,
}

static SWEEPER: LazyLock<Sweeper> = LazyLock::new(|| Sweeper {
    table: Mutex::new(Table::default()),
    thread: OnceLock::new(),
});

fn table() -> MutexGuard<'static, Table> {
    // A panic while holding the lock cannot leave the table inconsistent (every change is one
    // assignment or push), so a poisoned lock is used as it is.
    SWEEPER
        .table
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn sweeper_thread() -> &'static Thread {
    SWEEPER.thread.get_or_init(|| {
        std::thread::Builder::new()
            .name("deadlines".into())
            .spawn(sweep_forever)
            .expect("the deadline sweeper thread starts")
            .thread()
            .clone()
    })
}

/// A slot in the table, freed when the timeout is dropped (finished, fired or cancelled).
struct Armed {
    index: usize,
}

fn arm(deadline: Instant, waker: &Waker) -> Armed {
    let thread = sweeper_thread();
    let mut table = table();
    let slot = Some(Slot {
        deadline,
        waker: waker.clone(),
        fired: false,
    });
    let index = match table.free.pop() {
        Some(index) => {
            table.slots[index] = slot;
            index
        }
        None => {
            table.slots.push(slot);
            table.slots.len() - 1
        }
    };
    // The sweeper sleeps until its planned sweep: an earlier deadline must wake it.
    let wake_sweeper = table.next_sweep.is_none_or(|at| deadline < at);
    if wake_sweeper {
        table.next_sweep = Some(deadline);
    }
    drop(table);
    if wake_sweeper {
        thread.unpark();
    }
    Armed { index }
}

impl Armed {
    /// Whether the deadline has passed; if not, the task to wake when it does is `waker`.
    fn fired(&self, waker: &Waker) -> bool {
        let mut table = table();
        let slot = table.slots[self.index]
            .as_mut()
            .expect("an armed slot stays until it is dropped");
        if slot.fired {
            return true;
        }
        if !slot.waker.will_wake(waker) {
            let replaced = std::mem::replace(&mut slot.waker, waker.clone());
            // Dropped outside the lock: a waker's drop is foreign code.
            drop(table);
            drop(replaced);
        }
        false
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        let mut table = table();
        let slot = table.slots[self.index].take();
        table.free.push(self.index);
        drop(table);
        drop(slot);
    }
}

fn sweep_forever() {
    let mut due: Vec<Waker> = Vec::new();
    loop {
        let now = Instant::now();
        let next = {
            let mut table = table();
            let mut earliest: Option<Instant> = None;
            for slot in table.slots.iter_mut().flatten() {
                if slot.fired {
                    continue;
                }
                if slot.deadline <= now {
                    slot.fired = true;
                    due.push(slot.waker.clone());
                } else {
                    earliest = Some(earliest.map_or(slot.deadline, |e| e.min(slot.deadline)));
                }
            }
            // No sooner than RESOLUTION from now, so close deadlines are swept together.
            let next = earliest.map(|at| at.max(now + RESOLUTION));
            table.next_sweep = next;
            next
        };
        // Woken outside the lock: waking a task may run code that arms or drops a timeout. A
        // waker that panics must not take the sweeper (and every later timeout) with it.
        for waker in due.drain(..) {
            let woken = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| waker.wake()));
            if woken.is_err() {
                tracing::error!("a task's waker panicked when its deadline passed");
            }
        }
        match next {
            Some(at) => std::thread::park_timeout(at.saturating_duration_since(Instant::now())),
            None => std::thread::park(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `check` with an outer bound, so a lost wake-up fails the test instead of hanging it.
    async fn bounded<F: Future>(check: F) -> F::Output {
        tokio::time::timeout(Duration::from_secs(10), check)
            .await
            .expect("a timeout that never fired")
    }

    #[tokio::test]
    async fn a_ready_future_is_not_timed() {
        assert_eq!(timeout(Duration::ZERO, async { 7 }).await, Ok(7));
        let past = Instant::now() - Duration::from_secs(1);
        assert_eq!(timeout_at(past, async { 8 }).await, Ok(8));
    }

    #[tokio::test]
    async fn a_slow_future_times_out_near_its_deadline() {
        let started = Instant::now();
        let result = bounded(timeout(
            Duration::from_millis(50),
            std::future::pending::<()>(),
        ))
        .await;
        let took = started.elapsed();
        assert_eq!(result, Err(Elapsed));
        assert!(took >= Duration::from_millis(50), "{took:?}");
        // Generous: the sweeper's resolution plus a busy machine's scheduling delay.
        assert!(took < Duration::from_secs(2), "{took:?}");
    }

    #[tokio::test]
    async fn a_passed_deadline_fires_at_once() {
        let past = Instant::now() - Duration::from_millis(1);
        let result = timeout_at(past, std::future::pending::<()>()).await;
        assert_eq!(result, Err(Elapsed));
    }

    #[tokio::test]
    async fn work_that_finishes_in_time_wins() {
        let result = bounded(timeout(
            Duration::from_secs(5),
            tokio::time::sleep(Duration::from_millis(20)),
        ))
        .await;
        assert_eq!(result, Ok(()));
    }

    #[tokio::test]
    async fn an_earlier_deadline_armed_after_a_later_one_fires_on_time() {
        // The sweeper sleeps until its planned sweep; arming an earlier deadline must wake it.
        let long = tokio::spawn(timeout(
            Duration::from_secs(30),
            std::future::pending::<()>(),
        ));
        tokio::time::sleep(Duration::from_millis(20)).await;
        let started = Instant::now();
        let short = bounded(timeout(
            Duration::from_millis(30),
            std::future::pending::<()>(),
        ))
        .await;
        assert_eq!(short, Err(Elapsed));
        assert!(started.elapsed() < Duration::from_secs(2));
        long.abort();
        let _ = long.await;
    }

    #[tokio::test]
    async fn freed_slots_are_reused() {
        for _ in 0..1_000 {
            // One pending poll arms a slot; finishing frees it.
            let armed = timeout(Duration::from_secs(5), tokio::task::yield_now()).await;
            assert_eq!(armed, Ok(()));
        }
        // Other tests run alongside and hold slots of their own, but far fewer than 1,000.
        assert!(table().slots.len() < 1_000, "{}", table().slots.len());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_timeouts_across_threads_all_end() {
        let tasks: Vec<_> = (0..200u64)
            .map(|n| {
                tokio::spawn(async move {
                    let limit = Duration::from_millis(10 + n % 40);
                    let result = if n % 2 == 0 {
                        // Finishes on its second poll, after arming.
                        timeout(limit, tokio::task::yield_now()).await
                    } else {
                        timeout(limit, tokio::time::sleep(Duration::from_secs(5))).await
                    };
                    (n, result)
                })
            })
            .collect();
        for task in tasks {
            let (n, result) = bounded(task).await.unwrap();
            assert_eq!(result.is_ok(), n % 2 == 0, "{n}");
        }
    }
}
