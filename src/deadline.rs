//! Timeouts for the request path, cheaper than tokio's timers.
//!
//! Every request arms a few timeouts (the wait for the next request on a kept-alive connection,
//! the step's total, the vendor's answer) and almost none of them fire. A tokio timer allocates,
//! takes the runtime's timer-wheel lock to arm and again to disarm, and the runtime reads the clock
//! and visits the wheel each time it parks: about 2.8k instructions per request for the three a
//! request arms (callgrind), against about 0.9k with this table (BENCHMARKS.md).
//!
//! Here a timeout that has to wait takes a slot in a process-wide table (a short lock to arm and
//! another to disarm) and one thread, `deadlines`, sweeps the table: it sleeps until the earliest
//! deadline, marks what has passed and wakes those tasks. The table is split into shards that
//! threads take in turn as they first arm a timeout, so a few worker threads each have a lock of
//! their own (the sweeper takes each shard's briefly, twice per sweep). A
//! timeout whose future is ready on its first poll costs nothing but that poll. A timeout fires
//! at most `RESOLUTION` after its deadline, plus the sweeper's and the task's scheduling delay.
//! The table holds only timeouts that are waiting (a slot is reused once freed), so its size is
//! bounded by the operations in flight; a sweep visits every slot, which is cheap at the few
//! thousand a busy gateway has, and sweeps are rare while deadlines are seconds away.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{LazyLock, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};
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
pub fn timeout<F: Future>(limit: Duration, future: F) -> Timeout<F> {
    Timeout::new(When::After(limit), future)
}

/// `future`, given until `deadline`.
pub fn timeout_at<F: Future>(deadline: Instant, future: F) -> Timeout<F> {
    Timeout::new(When::At(deadline), future)
}

#[derive(Clone, Copy)]
enum When {
    /// Counted from the first poll that has to wait: a future ready at once needs no clock read.
    After(Duration),
    At(Instant),
}

pin_project_lite::pin_project! {
    /// The future `timeout` and `timeout_at` return. A named future rather than an `async fn`:
    /// an `async fn` keeps its argument future and the pinned copy it polls side by side, so a
    /// wrapper held inside every request's future would carry the step's state two or three
    /// times over (3.8 KiB for a 1.2 KiB step; the request future is boxed, and copied as a
    /// whole, once per request). Its table slot is freed as soon as it completes; like any
    /// future, it is not to be polled again after that.
    #[must_use = "a timeout does nothing unless polled"]
    pub struct Timeout<F> {
        #[pin]
        future: F,
        when: When,
        armed: Option<Armed>,
    }
}

impl<F: Future> Timeout<F> {
    fn new(when: When, future: F) -> Self {
        Timeout {
            future,
            when,
            armed: None,
        }
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        // The future first: work that finished in time is never reported late.
        if let Poll::Ready(output) = this.future.poll(cx) {
            // The slot goes back to the table now, not when the caller drops this future.
            *this.armed = None;
            return Poll::Ready(Ok(output));
        }
        let fired = match this.armed {
            Some(slot) => slot.fired(cx.waker()),
            None => {
                let deadline = match *this.when {
                    When::After(limit) => {
                        let now = Instant::now();
                        now.checked_add(limit).unwrap_or(now + FAR_FUTURE)
                    }
                    // Armed as it is, without a clock read to see whether it has passed: one
                    // that has wakes the sweeper, which fires it on its next pass (a deadline
                    // earlier than the sweeper's plan always wakes it).
                    When::At(deadline) => deadline,
                };
                *this.armed = Some(arm(deadline, cx.waker()));
                false
            }
        };
        if fired {
            *this.armed = None;
            Poll::Ready(Err(Elapsed))
        } else {
            Poll::Pending
        }
    }
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

/// How many shards the table has. Threads take them in turn on their first timeout, so with up
/// to this many threads arming timeouts (the API's workers, the admin listener's) none shares a
/// lock with another; past it, threads share shards two or more to one.
const SHARDS: usize = 16;

#[derive(Default)]
struct Table {
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    /// When the sweeper will look next; `None` while it sleeps with nothing to wait for, and
    /// while it is sweeping (so a deadline armed meanwhile always wakes it once more).
    next_sweep: Option<Instant>,
}

struct Sweeper {
    shards: [Mutex<Table>; SHARDS],
    thread: OnceLock<Thread>,
}

static SWEEPER: LazyLock<Sweeper> = LazyLock::new(|| Sweeper {
    shards: std::array::from_fn(|_| Mutex::new(Table::default())),
    thread: OnceLock::new(),
});

fn shard(index: usize) -> MutexGuard<'static, Table> {
    // A panic while holding the lock cannot leave a shard inconsistent (every change is one
    // assignment or push), so a poisoned lock is used as it is.
    SWEEPER.shards[index]
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// This thread's shard, handed out in turn on each thread's first timeout.
fn own_shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static OWN: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    OWN.with(|own| *own)
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

/// A slot in the table, freed when the timeout is dropped (finished, fired or cancelled), which
/// may happen on another thread than the one that armed it.
struct Armed {
    shard: usize,
    index: usize,
}

fn arm(deadline: Instant, waker: &Waker) -> Armed {
    let thread = sweeper_thread();
    let own = own_shard();
    let mut table = shard(own);
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
    Armed { shard: own, index }
}

impl Armed {
    /// Whether the deadline has passed; if not, the task to wake when it does is `waker`.
    fn fired(&self, waker: &Waker) -> bool {
        let mut table = shard(self.shard);
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
        let mut table = shard(self.shard);
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
        let mut earliest: Option<Instant> = None;
        for index in 0..SHARDS {
            let mut table = shard(index);
            // Cleared while the other shards are swept: a deadline armed here from now on wakes
            // the sweeper, whatever it plans.
            table.next_sweep = None;
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
        }
        // No sooner than RESOLUTION from now, so close deadlines are swept together.
        let next = earliest.map(|at| at.max(now + RESOLUTION));
        for index in 0..SHARDS {
            let mut table = shard(index);
            // A shard armed since its pass already woke the sweeper (its park returns at once,
            // and the next pass sees that deadline); the planned sweep is only ever moved closer.
            table.next_sweep = match (table.next_sweep, next) {
                (Some(armed), Some(planned)) => Some(armed.min(planned)),
                (armed, planned) => armed.or(planned),
            };
        }
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
    use std::pin::pin;

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
    async fn a_passed_deadline_fires_on_the_next_sweep() {
        let past = Instant::now() - Duration::from_millis(1);
        let started = Instant::now();
        let result = bounded(timeout_at(past, std::future::pending::<()>())).await;
        assert_eq!(result, Err(Elapsed));
        // It woke the sweeper rather than waiting for a planned sweep (generous, as above).
        assert!(started.elapsed() < Duration::from_secs(2));
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

    #[test]
    fn an_earlier_deadline_on_another_threads_shard_fires_on_time() {
        // Each thread arms in a shard of its own: a short deadline armed on a second thread, while
        // the sweeper sleeps towards a long one from the first, must still wake it.
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        };
        let (armed_tx, armed_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let long = std::thread::spawn(move || {
            runtime().block_on(async move {
                let shard = own_shard();
                let waiting = timeout(Duration::from_secs(30), stop_rx);
                let mut waiting = pin!(waiting);
                // One poll arms it; then the other thread goes.
                assert!(futures_util::poll!(waiting.as_mut()).is_pending());
                armed_tx.send(shard).unwrap();
                let _ = waiting.await;
            })
        });
        let long_shard = armed_rx.recv().unwrap();
        // Shards go to threads in turn, and other tests' threads take some too: a thread that
        // drew the long timeout's shard stands down and the next one tries.
        let short = (0..2 * SHARDS).find_map(|_| {
            std::thread::spawn(move || {
                if own_shard() == long_shard {
                    return None;
                }
                Some(runtime().block_on(async {
                    std::thread::sleep(Duration::from_millis(20));
                    let started = Instant::now();
                    let result = bounded(timeout(
                        Duration::from_millis(30),
                        std::future::pending::<()>(),
                    ))
                    .await;
                    (result, started.elapsed())
                }))
            })
            .join()
            .unwrap()
        });
        let _ = stop_tx.send(());
        long.join().unwrap();
        let (result, took) = short.expect("a thread with another shard than the long timeout's");
        assert_eq!(result, Err(Elapsed));
        assert!(took < Duration::from_secs(2), "{took:?}");
    }

    #[tokio::test]
    async fn freed_slots_are_reused() {
        for _ in 0..1_000 {
            // One pending poll arms a slot; finishing frees it.
            let armed = timeout(Duration::from_secs(5), tokio::task::yield_now()).await;
            assert_eq!(armed, Ok(()));
        }
        // Other tests run alongside and hold slots of their own, but far fewer than 1,000.
        let held = shard(own_shard()).slots.len();
        assert!(held < 1_000, "{held}");
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

    #[test]
    fn a_timeout_holds_its_future_once() {
        let large = async {
            let buffer = [7u8; 4096];
            tokio::task::yield_now().await;
            buffer[4095]
        };
        let future_size = std::mem::size_of_val(&large);
        let wrapped = timeout(Duration::from_secs(1), large);
        assert!(
            std::mem::size_of_val(&wrapped) <= future_size + 64,
            "{} for a future of {future_size}",
            std::mem::size_of_val(&wrapped)
        );
    }

    #[tokio::test]
    async fn a_finished_timeout_frees_its_slot_before_it_is_dropped() {
        for outcome_ok in [true, false] {
            // Pending at first (so the timeout arms), then ready or never.
            let mut first = true;
            let inner = std::future::poll_fn(move |cx| {
                if first || !outcome_ok {
                    first = false;
                    cx.waker().wake_by_ref();
                    Poll::Pending
                } else {
                    Poll::Ready(())
                }
            });
            let mut wrapped = pin!(timeout(Duration::from_millis(20), inner));
            let result = bounded(std::future::poll_fn(|cx| {
                let poll = wrapped.as_mut().poll(cx);
                if poll.is_pending() {
                    assert!(wrapped.as_mut().project().armed.is_some());
                }
                poll
            }))
            .await;
            assert_eq!(result.is_ok(), outcome_ok);
            assert!(wrapped.as_mut().project().armed.is_none(), "{outcome_ok}");
        }
    }
}
