//! Graceful shutdown. On SIGTERM every listener stops accepting (new connections are refused),
//! idle kept-alive connections close, requests in flight finish, and the process exits 0, all
//! within `server.shutdown_grace_secs`;
//! a second signal, or SIGINT, stops at once.
//!
//! Pingora's own SIGTERM handling sleeps a fixed grace period and then drops every task; this
//! watcher instead drains first and hands pingora a server with nothing left in flight.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

static DRAIN: LazyLock<watch::Sender<bool>> = LazyLock::new(|| watch::channel(false).0);
/// `DRAIN`'s value, for the check every reply makes: reading a watch channel takes its lock, a
/// cache line both worker threads would write on every request.
static DRAINING: AtomicBool = AtomicBool::new(false);
/// Requests in flight on every listener, one line per thread (`sharded`).
static INFLIGHT: crate::sharded::ShardedCount = crate::sharded::ShardedCount::new();

/// A receiver that turns true when draining starts.
pub fn drain_signal() -> watch::Receiver<bool> {
    DRAIN.subscribe()
}

pub fn draining() -> bool {
    DRAINING.load(Ordering::Acquire)
}

fn start_draining() {
    DRAINING.store(true, Ordering::Release);
    DRAIN.send_replace(true);
}

thread_local! {
    /// Wakes this thread's idle connections when draining starts. Each worker thread's accept
    /// loop fires its own, and its connections wait on it, so no other thread touches it (a
    /// shared one would be a lock both threads take on every keep-alive request). One per
    /// thread, for the thread's (the process's) life.
    static IDLE_CLOSE: &'static tokio::sync::Notify = Box::leak(Box::new(tokio::sync::Notify::new()));
}

/// What this thread's idle connections wait on, besides their clients: `close_idle_connections`
/// on this thread. A connection checks `draining()` before it waits; on a single-threaded
/// runtime nothing can fire this between that check and the wait.
pub fn idle_close() -> &'static tokio::sync::Notify {
    IDLE_CLOSE.with(|notify| *notify)
}

/// Closes the idle connections of this thread: while draining, a request sent on a kept-alive
/// connection could start after the last in flight had finished, and be cut off at exit.
pub fn close_idle_connections() {
    IDLE_CLOSE.with(|notify| notify.notify_waiters());
}

/// Counts one request in flight, on every listener, for as long as it lives.
pub struct InflightRequest;

impl InflightRequest {
    pub fn start() -> InflightRequest {
        INFLIGHT.add(1);
        InflightRequest
    }
}

impl Drop for InflightRequest {
    fn drop(&mut self) {
        INFLIGHT.add(-1);
    }
}

/// The shutdown watcher handed to pingora.
pub struct DrainingShutdown {
    pub grace: Duration,
    /// Printed on stdout once SIGTERM is handled (and the listeners serve): a supervisor or test
    /// that signals the process after seeing it never kills it by the default action.
    pub announce: String,
}

#[async_trait]
impl ShutdownSignalWatch for DrainingShutdown {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot watch for signals; stopping");
            return ShutdownSignal::FastShutdown;
        };
        {
            use std::io::Write;
            println!("{}", self.announce);
            let _ = std::io::stdout().flush();
        }
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {
                tracing::info!("SIGINT: stopping now");
                return ShutdownSignal::FastShutdown;
            }
        }
        let started = Instant::now();
        tracing::info!(
            grace_secs = self.grace.as_secs(),
            in_flight = INFLIGHT.sum(),
            "SIGTERM: no longer accepting; finishing requests in flight"
        );
        start_draining();
        // Two readings of zero in a row: the per-thread counts are read one after another, not
        // at once, so a request starting on a line already read while another ends on a line not
        // yet read can make one reading zero with a request in flight.
        let mut zero_before = false;
        loop {
            let left = INFLIGHT.sum();
            let zero = left <= 0;
            if zero && zero_before {
                tracing::info!(
                    drained_ms = started.elapsed().as_millis() as u64,
                    "every request finished; exiting"
                );
                return ShutdownSignal::GracefulTerminate;
            }
            zero_before = zero;
            if started.elapsed() >= self.grace {
                tracing::warn!(
                    in_flight = left,
                    "grace period over; exiting with requests in flight"
                );
                return ShutdownSignal::GracefulTerminate;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                _ = term.recv() => return ShutdownSignal::FastShutdown,
                _ = int.recv() => return ShutdownSignal::FastShutdown,
            }
        }
    }
}
