//! HTTP/1.1 to vendors, over TLS connections pingora makes (its handshake, the platform's trusted
//! roots) or plain TCP connections tokio makes (`stream`), with every timeout set, and a
//! per-thread pool of idle connections. Requests and answers are framed by
//! `wire`, the same code as the API listeners'.
//!
//! The pool is the gateway's own rather than pingora's `Connector`: pingora's pool spawns a task
//! per released connection to watch it while idle, and takes locks and a channel on every reuse,
//! which the load harness measured as a large share of a request's cost. Here a worker thread
//! keeps its idle connections in a plain list, checks one is still open (a non-blocking read)
//! when it takes it, and a sweeper per thread closes those idle too long or closed by the vendor.
//!
//! Each thread holds at most its share of the connection's `max_connections` open to the vendor:
//! a call takes one of the thread's permits for its whole exchange, and a new connection is only
//! made when the thread has no idle one, so connections open (in use or idle) never outnumber the
//! permits. A call that finds every permit taken waits for one, first come first served, for at
//! most `connect_ms` (and never past its step's deadline), then gives up without calling
//! (`UpstreamFailure::Busy`). A step of several calls takes one permit for all of them
//! (`reserve`), so it is never left half done for want of a connection. Without the bound
//! the gateway opened one vendor connection per client connection in flight: 8,192 at the k8s
//! config's client limit, past what a vendor's front end may accept from one client.
//!
//! A call either returns the vendor's whole answer (status, content type, body up to a cap) or an
//! `UpstreamFailure` saying whether the vendor was unreachable, slow, or spoke broken HTTP. Adapters
//! turn those into canonical problems; this module knows nothing about vendors.

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use pingora::connectors::TransportConnector;
use pingora::upstreams::peer::HttpPeer;
use pingora_prometheus::prometheus::IntCounter;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics;

mod stream;
use crate::conn::PlainOrTls;
use crate::wire::{self, Chunked, ChunkedError, ChunkedProgress, Framing, HeadError, MediaType};
use stream::VendorStream;

/// The largest vendor answer the gateway reads; anything bigger is refused as an upstream error.
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024;

/// The vendor connections a connection config may have open at once when it does not say
/// (`max_connections`): Envoy's default for a cluster's connections. Idle ones are kept up to the
/// same bound (a smaller pool closes connections after every burst and opens them again for the
/// next: 128 a thread gave 88% reuse at 1,000 client connections); the sweeper closes those idle
/// longer than the connection's `idle_ms`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// Timeouts for one vendor connection. Every one is set: pingora's own defaults are "none".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub read: Duration,
    pub write: Duration,
    /// The whole canonical step, all its vendor calls included.
    pub total: Duration,
    /// How long an idle pooled connection is kept.
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_millis(1_000),
            read: Duration::from_millis(5_000),
            write: Duration::from_millis(5_000),
            total: Duration::from_millis(10_000),
            idle: Duration::from_secs(60),
        }
    }
}

/// A vendor's base URL, split into what the connector needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Always starts and ends with '/'.
    pub path: String,
}

impl BaseUrl {
    /// Parses a vendor's base URL. Errors never quote it: a URL refused for carrying user info
    /// may hold a password.
    pub fn parse(url: &str) -> Result<Self, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err("must start with http:// or https://".into());
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err(
                "must not carry user info (`user:password@`): vendor credentials go in the \
                 connection's secret variables"
                    .into(),
            );
        }
        if path.contains(['?', '#']) {
            return Err("must not have a query or fragment".into());
        }
        if url.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err("must not contain spaces or control characters".into());
        }
        let default_port = if tls { 443 } else { 80 };
        let port_of = |p: &str| match p.parse::<u16>() {
            Ok(0) | Err(_) => Err("has a bad port (1 to 65535)".to_string()),
            Ok(port) => Ok(port),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or("has an unclosed IPv6 address")?;
            let port = match after.strip_prefix(':') {
                Some(p) => port_of(p)?,
                None if after.is_empty() => default_port,
                None => return Err("has a bad authority".into()),
            };
            if h.parse::<std::net::Ipv6Addr>().is_err() {
                return Err("has a bad IPv6 address".into());
            }
            (h.to_string(), port)
        } else {
            let (h, port) = match authority.rsplit_once(':') {
                Some((h, p)) => (h, port_of(p)?),
                None => (authority, default_port),
            };
            // A name or an IPv4 address: an unbracketed IPv6 address (`http://::1/`) or a
            // second colon would otherwise be read as a host with a colon in it.
            let name_like = h
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
            if !name_like {
                return Err("has a bad host (an IPv6 address goes in brackets: [::1])".into());
            }
            (h.to_string(), port)
        };
        if host.is_empty() {
            return Err("must name a host".into());
        }
        let mut path = path.to_string();
        if !path.ends_with('/') {
            path.push('/');
        }
        Ok(BaseUrl {
            tls,
            host,
            port,
            path,
        })
    }

    fn host_header(&self) -> String {
        let default = if self.tls { 443 } else { 80 };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// Why a vendor call produced no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// No connection could be made (refused, unreachable, connect timeout, TLS failure).
    Unavailable(String),
    /// Connected, but the vendor did not answer within the read or write timeout.
    Timeout,
    /// The vendor answered with broken HTTP or closed mid-answer.
    Protocol(String),
    /// The answer passed `MAX_RESPONSE_BYTES`.
    TooLarge,
    /// The request was not sent: a header value held a line break or another control character,
    /// which would have ended the request's head early. (Values come from the config's secrets,
    /// refused at load, and from sanitised request ids: this is the last line, not the first.)
    Unsendable(String),
    /// Every connection this thread may hold to the vendor stayed busy until `connect_ms` or the
    /// wait's end before the step's deadline: the request was not sent.
    Busy,
}

/// One vendor's answer.
#[derive(Debug, Clone)]
pub struct UpstreamResponse {
    pub status: u16,
    pub content_type: MediaType,
    pub retry_after: Option<u64>,
    /// The body, de-chunked: the buffer the answer was read into, its head removed.
    pub body: Vec<u8>,
}

/// A request to send: path and query relative to the base URL, and the exact body bytes.
pub struct UpstreamRequest<'a> {
    /// The vendor endpoint's name for metrics (a fixed string, never the path with its query).
    pub endpoint: &'static str,
    pub path_and_query: &'a str,
    pub content_type: &'static str,
    pub body: &'a [u8],
    pub headers: &'a [(&'a str, &'a str)],
    /// Where to add the call's duration (the request's total time at vendors), if anywhere.
    pub timing: Option<&'a AtomicU64>,
    /// When a wait for a connection gives up at the latest (`StepContext::connection_wait_ends`,
    /// a little before the step's end), besides `connect_ms`.
    pub deadline: Option<Instant>,
    /// The connection the step holds for all its calls (`UpstreamClient::reserve`), if it does;
    /// else the call takes one of its own.
    pub reserved: Option<&'a Reserved>,
}

/// One of a worker thread's vendor connections (a permit: at most its share of
/// `max_connections` are open), held by a step for all its calls. Used on the thread that made it.
pub struct Reserved {
    _permit: OwnedSemaphorePermit,
    /// The client it is one of the connections of (`UpstreamClient::id`).
    client: usize,
    /// The thread whose share it is: a call on another thread would use that thread's pool
    /// without holding one of its permits. Kept for the debug check in `post` only.
    #[cfg(debug_assertions)]
    thread: std::thread::ThreadId,
}

static NEXT_CLIENT_ID: AtomicUsize = AtomicUsize::new(0);

/// A connection back from a finished exchange, waiting for the next.
struct IdleConnection {
    stream: VendorStream,
    since: Instant,
}

/// One worker thread's connections to one vendor connection (`UpstreamClient`).
struct ThreadPool {
    client: usize,
    /// Most recently used last: taken from the end, so busy connections stay warm and the
    /// oldest age out at the front.
    idle: Vec<IdleConnection>,
    /// The thread's share of `max_connections`, one taken by each call for its exchange. An
    /// `Arc` only because the call's future must be `Send`: no other thread touches it.
    permits: Arc<Semaphore>,
}

thread_local! {
    /// Each worker thread's pools, by client: a connection is only ever used on the thread (the
    /// single-threaded runtime) that made it, so its I/O never wakes another thread.
    static POOLS: RefCell<Vec<ThreadPool>> = const { RefCell::new(Vec::new()) };
}

/// Whether an idle connection is still usable: nothing to read (not closed by the vendor, and
/// no stray bytes) without waiting.
fn still_open(stream: &mut VendorStream) -> bool {
    let mut probe = [0u8; 1];
    // `unconstrained`: tokio's co-operative budget must not turn a ready read into "pending".
    tokio::task::unconstrained(stream.read(&mut probe))
        .now_or_never()
        .is_none()
}

/// A pooled HTTP/1.1 client for one vendor connection.
pub struct UpstreamClient {
    id: usize,
    base: BaseUrl,
    timeouts: Timeouts,
    /// The vendor's name, for metrics.
    vendor: &'static str,
    /// The `Host` field every request carries.
    host_header: String,
    /// Makes new connections (TCP, and TLS with the platform's trusted roots).
    connector: Arc<TransportConnector>,
    /// The connections each worker thread may have open to the vendor.
    per_thread: usize,
    /// Calls that waited for a connection, `[served, gave_up]`: none for a client made outside a
    /// configured connection (tests), which would export a series no config names.
    waits: Option<[IntCounter; 2]>,
}

/// The one connector every client shares. Making one reads and parses the platform's trusted
/// certificates, milliseconds of work: done per thread on first use, it stalled every request
/// queued behind a worker's first vendor call. Made once, when the configuration is loaded, it
/// costs nothing on the request path; it holds no per-connection state, so threads share it.
fn shared_connector() -> Arc<TransportConnector> {
    static CONNECTOR: std::sync::OnceLock<Arc<TransportConnector>> = std::sync::OnceLock::new();
    CONNECTOR
        .get_or_init(|| Arc::new(TransportConnector::new(None)))
        .clone()
}

impl UpstreamClient {
    /// A client holding up to `DEFAULT_MAX_CONNECTIONS` a thread (`for_connection` shares a
    /// connection's own bound among the threads).
    pub fn new(vendor: &'static str, base: BaseUrl, timeouts: Timeouts) -> Self {
        UpstreamClient {
            id: NEXT_CLIENT_ID.fetch_add(1, Ordering::Relaxed),
            host_header: base.host_header(),
            base,
            timeouts,
            vendor,
            connector: shared_connector(),
            per_thread: DEFAULT_MAX_CONNECTIONS,
            waits: None,
        }
    }

    /// This client as configured connection `name`: at most `most` vendor connections open over
    /// `threads` worker threads, each holding its share rounded up (so at least one), and its
    /// waits counted under its name.
    pub fn for_connection(mut self, name: &str, most: usize, threads: usize) -> Self {
        self.per_thread = per_thread_share(most, threads);
        self.waits = Some(metrics::upstream_waits(name, self.vendor));
        self
    }

    pub fn base(&self) -> &BaseUrl {
        &self.base
    }

    /// The request as it goes on the wire: request line, headers, body.
    fn request_bytes(&self, req: &UpstreamRequest<'_>) -> Vec<u8> {
        // Sized for all of it (the fixed text below is under 128 bytes), so it is never grown
        // and copied on the way: a signed query alone can pass 100 bytes.
        let headers: usize = req.headers.iter().map(|(n, v)| n.len() + v.len() + 4).sum();
        let capacity = 128
            + self.base.path.len()
            + req.path_and_query.len()
            + self.host_header.len()
            + 2 * req.content_type.len()
            + headers
            + req.body.len();
        let mut wire = Vec::with_capacity(capacity);
        let mut length = itoa::Buffer::new();
        for part in [
            "POST ",
            &self.base.path,
            req.path_and_query,
            " HTTP/1.1\r\nHost: ",
            &self.host_header,
            "\r\nContent-Type: ",
            req.content_type,
            "\r\nAccept: ",
            req.content_type,
            "\r\nContent-Length: ",
            length.format(req.body.len()),
            "\r\n",
        ] {
            wire.extend_from_slice(part.as_bytes());
        }
        for (name, value) in req.headers {
            wire.extend_from_slice(name.as_bytes());
            wire.extend_from_slice(b": ");
            wire.extend_from_slice(value.as_bytes());
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b"\r\n");
        wire.extend_from_slice(req.body);
        debug_assert!(wire.len() <= capacity, "the request outgrew its buffer");
        wire
    }

    /// Runs `f` on this thread's pool for this client, making the pool (and its sweeper) first.
    fn with_pool<T>(&self, f: impl FnOnce(&mut ThreadPool) -> T) -> T {
        POOLS.with(|pools| {
            let mut pools = pools.borrow_mut();
            let index = match pools.iter().position(|p| p.client == self.id) {
                Some(i) => i,
                None => {
                    pools.push(ThreadPool {
                        client: self.id,
                        idle: Vec::new(),
                        permits: Arc::new(Semaphore::new(self.per_thread)),
                    });
                    spawn_sweeper(self.id, self.timeouts.idle);
                    pools.len() - 1
                }
            };
            f(&mut pools[index])
        })
    }

    /// An idle connection that is still open and not idle too long at `now`, if this thread
    /// has one.
    fn take_idle(&self, now: Instant) -> Option<VendorStream> {
        let max_idle = self.timeouts.idle;
        self.with_pool(|pool| {
            while let Some(IdleConnection { mut stream, since }) = pool.idle.pop() {
                if now.saturating_duration_since(since) < max_idle && still_open(&mut stream) {
                    return Some(stream);
                }
            }
            None
        })
    }

    /// Keeps a connection whose exchange finished cleanly for the next call on this thread, as
    /// idle since `since`.
    fn put_idle(&self, stream: VendorStream, since: Instant) {
        // The permits bound the idle list too (each idle connection was in use under one), and
        // the check stays as the pool's own guarantee.
        let most = self.per_thread;
        self.with_pool(|pool| {
            if pool.idle.len() >= most {
                pool.idle.remove(0);
            }
            pool.idle.push(IdleConnection { stream, since });
        })
    }

    /// One of this thread's vendor connections, held until the returned guard is dropped, for
    /// a step that makes several calls: each passes it in `UpstreamRequest::reserved`.
    pub async fn reserve(&self, deadline: Option<Instant>) -> Result<Reserved, UpstreamFailure> {
        self.connection_permit(deadline)
            .await
            .map(|permit| Reserved {
                _permit: permit,
                client: self.id,
                #[cfg(debug_assertions)]
                thread: std::thread::current().id(),
            })
    }

    /// One of this thread's permits to use a vendor connection: at once when one is free, else
    /// the first to come free within `connect_ms` and before `deadline` (queued calls are served
    /// in order), else `Busy`. Waits are counted; a call that gets a permit at once counts
    /// nothing.
    async fn connection_permit(
        &self,
        deadline: Option<Instant>,
    ) -> Result<OwnedSemaphorePermit, UpstreamFailure> {
        let permits = self.with_pool(|pool| Arc::clone(&pool.permits));
        if let Ok(permit) = Arc::clone(&permits).try_acquire_owned() {
            return Ok(permit);
        }
        let most = Instant::now() + self.timeouts.connect;
        let until = deadline.map_or(most, |deadline| deadline.min(most));
        let mut wait = WaitCount {
            waits: self.waits.as_ref(),
            outcome: None,
        };
        let acquired = crate::deadline::timeout_at(until, permits.acquire_owned()).await;
        // A timeout fires up to a sweep late: a connection that came free in that time, past the
        // wait's end, is given up all the same, since the step has no time left for it. (An
        // `Err` inside is a closed semaphore, which this module never closes.)
        let in_time = deadline.is_none_or(|end| Instant::now() < end);
        match acquired {
            Ok(Ok(permit)) if in_time => {
                wait.outcome = Some(Waited::Served);
                Ok(permit)
            }
            _ => {
                wait.outcome = Some(Waited::GaveUp);
                Err(UpstreamFailure::Busy)
            }
        }
    }

    /// A fresh connection (TCP, and TLS for https), within the connect timeout.
    async fn connect(&self) -> Result<VendorStream, UpstreamFailure> {
        let addr = self.address().await?;
        if !self.base.tls {
            return stream::connect_plain(addr, self.timeouts.connect)
                .await
                .map(PlainOrTls::Plain);
        }
        // Only the connect timeouts: read and write timeouts are set on each exchange, and idle
        // connections are the pool's (`idle_ms`).
        let mut peer = HttpPeer::new(addr, true, self.base.host.clone());
        peer.options.connection_timeout = Some(self.timeouts.connect);
        peer.options.total_connection_timeout = Some(self.timeouts.connect);
        self.connector
            .new_stream(&peer)
            .await
            .map(PlainOrTls::Tls)
            .map_err(|e| connect_failure(&e))
    }

    /// The vendor's address: its host as written when it is an IP address, else the first one
    /// DNS gives within the connect timeout.
    async fn address(&self) -> Result<SocketAddr, UpstreamFailure> {
        let addr: SocketAddr = match self.base.host.parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, self.base.port),
            Err(_) => {
                let lookup = tokio::time::timeout(
                    self.timeouts.connect,
                    tokio::net::lookup_host((self.base.host.as_str(), self.base.port)),
                )
                .await
                .map_err(|_| UpstreamFailure::Unavailable("DNS lookup timed out".into()))?;
                lookup
                    .map_err(|e| UpstreamFailure::Unavailable(format!("DNS lookup failed: {e}")))?
                    .next()
                    .ok_or_else(|| {
                        UpstreamFailure::Unavailable("DNS lookup found nothing".into())
                    })?
            }
        };
        Ok(addr)
    }

    /// Sends one POST and reads the whole answer, counting it in the upstream metrics. Never
    /// retried here: a request that may have reached the vendor must not be sent twice.
    pub async fn post(
        &self,
        req: &UpstreamRequest<'_>,
    ) -> Result<UpstreamResponse, UpstreamFailure> {
        if let Some((name, _)) = req
            .headers
            .iter()
            .find(|(_, value)| value.bytes().any(wire::is_control))
        {
            return Err(UpstreamFailure::Unsendable(name.to_string()));
        }
        // Taken before the call is counted or timed: a call that never got a connection never
        // reached the vendor, and its wait is the gateway's, not the vendor's. Held until the
        // connection is back in the pool, for the next queued call to find there.
        let _own_permit = match req.reserved {
            Some(reserved) => {
                debug_assert_eq!(reserved.client, self.id, "a connection of another client");
                #[cfg(debug_assertions)]
                assert_eq!(
                    reserved.thread,
                    std::thread::current().id(),
                    "a connection of another thread"
                );
                None
            }
            None => Some(self.connection_permit(req.deadline).await?),
        };
        let started = Instant::now();
        let mut call = CallCount {
            vendor: self.vendor,
            endpoint: req.endpoint,
            started,
            timing: req.timing,
            counted: false,
        };
        let result = self.send(req, started).await;
        let finished = Instant::now();
        let elapsed = finished.saturating_duration_since(started);
        // A connection whose exchange ended cleanly waits for the next call, idle from now.
        let result = result.map(|(answer, reusable)| {
            if let Some(stream) = reusable {
                self.put_idle(stream, finished);
            }
            answer
        });
        let class = match &result {
            Ok(r) => metrics::status_class(r.status),
            Err(UpstreamFailure::Timeout) => "timeout",
            Err(_) => "error",
        };
        call.count(class, elapsed);
        result
    }

    /// One exchange, begun at `started` (the time an idle connection's age is judged by), and
    /// the connection back if it may carry another. The caller reads the clock when it ends,
    /// for its metrics and as the connection's idle-since time: the pool reads none of its own.
    async fn send(
        &self,
        req: &UpstreamRequest<'_>,
        started: Instant,
    ) -> Result<(UpstreamResponse, Option<VendorStream>), UpstreamFailure> {
        // A vendor is only looked up (DNS) and connected to when no idle connection is left.
        // `sent_at` is when the request goes out: `started` for an idle connection (microseconds
        // later), but after connecting for a new one, which may have taken seconds of DNS, TCP
        // and TLS that must not come out of the vendor's time to answer.
        let (mut stream, sent_at) = match self.take_idle(started) {
            Some(stream) => {
                metrics::upstream_connection(self.vendor, true);
                (stream, started)
            }
            None => {
                // Boxed: connecting (TCP, TLS, DNS) is a large state machine that only a call
                // without an idle connection needs; inline, every call's future would carry it
                // (a heap profile at 1,000 requests in flight: 10 KiB per request).
                let stream = Box::pin(self.connect()).await?;
                metrics::upstream_connection(self.vendor, false);
                (stream, Instant::now())
            }
        };

        // The request goes out in one write; the answer is read into one buffer and parsed in
        // place (`wire`), with no per-call session or header map.
        let wire = self.request_bytes(req);
        let (written, at_once) = {
            let mut write = std::pin::pin!(async {
                stream.write_all(&wire).await?;
                stream.flush().await
            });
            // Almost always done at once (the socket's buffer takes it): then the answer's
            // first read can be timed from `sent_at`, and nothing reads the clock for either.
            match write.as_mut().now_or_never() {
                Some(written) => (Ok(written), true),
                None => (
                    crate::deadline::timeout(self.timeouts.write, write).await,
                    false,
                ),
            }
        };
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(UpstreamFailure::Protocol(format!(
                    "write failed: {}",
                    e.kind()
                )))
            }
            Err(_) => return Err(UpstreamFailure::Timeout),
        }
        let mut wait = ReadWait {
            first_by: at_once
                .then(|| sent_at.checked_add(self.timeouts.read))
                .flatten(),
            each: self.timeouts.read,
        };
        let (answer, reusable) = read_answer(&mut stream, &mut wait).await?;
        Ok((answer, reusable.then_some(stream)))
    }
}

/// The share of `most` connections each of `threads` worker threads holds, client or vendor
/// connections alike: rounded up, so every thread holds at least one.
pub fn per_thread_share(most: usize, threads: usize) -> usize {
    most.div_ceil(threads.max(1)).max(1)
}

/// How a wait for a connection ended.
#[derive(Clone, Copy)]
enum Waited {
    Served,
    GaveUp,
}

/// Counts one wait for a connection when it ends, however it ends: a wait dropped unfinished
/// (its request cut off by something other than its own limits) counts as given up.
struct WaitCount<'a> {
    waits: Option<&'a [IntCounter; 2]>,
    outcome: Option<Waited>,
}

impl Drop for WaitCount<'_> {
    fn drop(&mut self) {
        if let Some([served, gave_up]) = self.waits {
            match self.outcome {
                Some(Waited::Served) => served.inc(),
                Some(Waited::GaveUp) | None => gave_up.inc(),
            }
        }
    }
}

/// Counts one vendor call, in the vendor's metrics and the request's time at vendors, once:
/// when it finished (`count`), or else when it is dropped unfinished. The step's deadline drops
/// the step mid-call, and a call cut off so must still be counted (as a timeout, with the time it
/// took), or the alerts on a failing or slow vendor would miss exactly the calls that took
/// longest.
struct CallCount<'a> {
    vendor: &'static str,
    endpoint: &'static str,
    started: Instant,
    timing: Option<&'a AtomicU64>,
    counted: bool,
}

impl CallCount<'_> {
    fn count(&mut self, class: &'static str, elapsed: Duration) {
        self.counted = true;
        metrics::observe_upstream(self.vendor, self.endpoint, class, elapsed.as_secs_f64());
        if let Some(timing) = self.timing {
            timing.fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        }
    }
}

impl Drop for CallCount<'_> {
    fn drop(&mut self) {
        if !self.counted {
            self.count("timeout", self.started.elapsed());
        }
    }
}

/// The most an answer's head may take; a bigger one is broken HTTP.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// How long each read of an answer may wait: the read timeout from when it begins to wait, but
/// the first by a deadline already known when the request went out at once (when it went out
/// plus the read timeout: the same within microseconds, without a clock read).
struct ReadWait {
    first_by: Option<Instant>,
    each: Duration,
}

/// Reads more of the answer into `buf`, waiting as `wait` allows: the byte count, 0 at the end
/// of the stream.
async fn read_some(
    stream: &mut VendorStream,
    buf: &mut Vec<u8>,
    wait: &mut ReadWait,
) -> Result<usize, UpstreamFailure> {
    // Grown only when nearly full: the first read uses the small buffer it was given, and no
    // read is made for a sliver of room.
    if buf.capacity() - buf.len() < 256 {
        buf.reserve(wire::READ_CHUNK);
    }
    let read = stream.read_buf(buf);
    let result = match wait.first_by.take() {
        Some(deadline) => crate::deadline::timeout_at(deadline, read).await,
        None => crate::deadline::timeout(wait.each, read).await,
    };
    match result {
        Ok(Ok(n)) => Ok(n),
        Ok(Err(e)) => Err(UpstreamFailure::Protocol(format!(
            "read failed: {}",
            e.kind()
        ))),
        Err(_) => Err(UpstreamFailure::Timeout),
    }
}

/// Like `read_some`, where the answer is not complete yet: the end of the stream is a failure.
async fn read_more(
    stream: &mut VendorStream,
    buf: &mut Vec<u8>,
    wait: &mut ReadWait,
) -> Result<(), UpstreamFailure> {
    match read_some(stream, buf, wait).await? {
        0 => Err(UpstreamFailure::Protocol(
            "the connection closed mid-answer".into(),
        )),
        _ => Ok(()),
    }
}

/// Reads one whole answer (each read as `wait` allows), and whether the connection may carry
/// another exchange: the vendor kept it alive and sent nothing past the answer.
async fn read_answer(
    stream: &mut VendorStream,
    wait: &mut ReadWait,
) -> Result<(UpstreamResponse, bool), UpstreamFailure> {
    let mut buf = Vec::with_capacity(wire::FIRST_READ);
    let head = loop {
        match wire::parse_response(&buf, MAX_RESPONSE_HEAD) {
            Ok(Some(head)) if head.status == 101 => {
                return Err(UpstreamFailure::Protocol(
                    "the vendor switched protocols".into(),
                ))
            }
            // RFC 9110 section 15: a status is three digits from 100 to 599. Anything else is
            // refused at once (a `000` read as interim would wait out the whole read timeout).
            Ok(Some(head)) if !(100..=599).contains(&head.status) => {
                return Err(UpstreamFailure::Protocol(format!(
                    "the vendor answered with status {}, which HTTP has not",
                    head.status
                )))
            }
            // An interim answer (100 Continue, 103 Early Hints): the real one follows.
            Ok(Some(head)) if head.status < 200 => {
                buf.drain(..head.len);
            }
            Ok(Some(head)) => break head,
            Ok(None) => read_more(stream, &mut buf, wait).await?,
            Err(HeadError::TooLarge) => {
                return Err(UpstreamFailure::Protocol(
                    "the answer head is too large".into(),
                ))
            }
            Err(HeadError::Malformed(why)) => return Err(UpstreamFailure::Protocol(why.into())),
        }
    };
    let start = head.len;
    let (body, end): (Option<Vec<u8>>, usize) = match head.framing {
        Framing::Length(n) if n > MAX_RESPONSE_BYTES as u64 => {
            return Err(UpstreamFailure::TooLarge)
        }
        Framing::Length(n) => {
            let end = start + n as usize;
            while buf.len() < end {
                read_more(stream, &mut buf, wait).await?;
            }
            (None, end)
        }
        Framing::Chunked => {
            let mut progress = ChunkedProgress::default();
            loop {
                match wire::decode_chunked_from(&buf[start..], MAX_RESPONSE_BYTES, &mut progress) {
                    Ok(Chunked::Complete { payload, consumed }) => {
                        break (Some(payload), start + consumed)
                    }
                    Ok(Chunked::Incomplete) if buf.len() - start > 4 * MAX_RESPONSE_BYTES => {
                        return Err(UpstreamFailure::TooLarge)
                    }
                    Ok(Chunked::Incomplete) => read_more(stream, &mut buf, wait).await?,
                    Err(ChunkedError::TooLarge) => return Err(UpstreamFailure::TooLarge),
                    Err(ChunkedError::Malformed) => {
                        return Err(UpstreamFailure::Protocol("broken chunked body".into()))
                    }
                }
            }
        }
        Framing::UntilClose => {
            while read_some(stream, &mut buf, wait).await? > 0 {
                if buf.len() - start > MAX_RESPONSE_BYTES {
                    return Err(UpstreamFailure::TooLarge);
                }
            }
            (None, buf.len())
        }
    };
    let reusable = head.keep_alive && end == buf.len();
    // The body stays in the buffer it was read into (moved to its start) unless chunking made
    // a new one.
    let body = body.unwrap_or_else(|| {
        buf.truncate(end);
        buf.drain(..start);
        buf
    });
    let answer = UpstreamResponse {
        status: head.status,
        content_type: head.content_type,
        retry_after: head.retry_after,
        body,
    };
    Ok((answer, reusable))
}

/// Closes, every so often, this thread's idle connections to one client that have been idle too
/// long or that the vendor closed, so none lingers after traffic stops. It runs on the runtime
/// of the thread that made the pool: the API's runtimes have one thread each.
fn spawn_sweeper(client: usize, max_idle: Duration) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let every = (max_idle / 2).clamp(Duration::from_secs(1), Duration::from_secs(30));
    runtime.spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            POOLS.with(|pools| {
                if let Some(pool) = pools.borrow_mut().iter_mut().find(|p| p.client == client) {
                    pool.idle
                        .retain_mut(|c| c.since.elapsed() < max_idle && still_open(&mut c.stream));
                }
            });
        }
    });
}

fn connect_failure(e: &pingora::Error) -> UpstreamFailure {
    UpstreamFailure::Unavailable(e.etype().as_str().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_base_urls() {
        let b = BaseUrl::parse("http://127.0.0.1:9100/cbss").unwrap();
        assert_eq!(
            (b.tls, b.host.as_str(), b.port, b.path.as_str()),
            (false, "127.0.0.1", 9100, "/cbss/")
        );
        let b = BaseUrl::parse("https://api.example.com").unwrap();
        assert_eq!((b.tls, b.port, b.path.as_str()), (true, 443, "/"));
        assert_eq!(b.host_header(), "api.example.com");
        let b = BaseUrl::parse("http://[::1]:8080/x/").unwrap();
        assert_eq!(
            (b.host.as_str(), b.port, b.host_header()),
            ("::1", 8080, "[::1]:8080".to_string())
        );
        assert!(BaseUrl::parse("ftp://x").is_err());
        let with_password = BaseUrl::parse("http://u:S3cret@x/").unwrap_err();
        assert!(!with_password.contains("S3cret"), "{with_password}");
        assert!(with_password.contains("user info"), "{with_password}");
        let bad_port = BaseUrl::parse("http://u:S3cret@x:y/").unwrap_err();
        assert!(!bad_port.contains("S3cret"), "{bad_port}");
        assert!(BaseUrl::parse("http://exa mple.com/").is_err());
        assert!(BaseUrl::parse("http://x:0/").is_err());
        for bad in [
            "http://::1/",
            "http://h:1:2/",
            "http://[::1/",
            "http://[vendor]:80/",
        ] {
            assert!(BaseUrl::parse(bad).is_err(), "{bad}");
        }
        let b = BaseUrl::parse("http://vendor_api.example-1.com:8443/").unwrap();
        assert_eq!(
            (b.host.as_str(), b.port),
            ("vendor_api.example-1.com", 8443)
        );
        assert!(BaseUrl::parse("http://x/?token=t")
            .unwrap_err()
            .find("token")
            .is_none());
        assert!(BaseUrl::parse("http://x/?a=1").is_err());
        assert!(BaseUrl::parse("http://:80/").is_err());
    }

    #[test]
    fn each_thread_holds_its_share_of_max_connections_rounded_up() {
        assert_eq!(per_thread_share(1024, 2), 512);
        assert_eq!(per_thread_share(1024, 3), 342);
        assert_eq!(per_thread_share(2, 4), 1);
        assert_eq!(per_thread_share(1, 1), 1);
        assert_eq!(per_thread_share(5, 0), 5);
    }

    /// A vendor on loopback that answers every request on every connection with `{}`, and
    /// counts the connections it accepted.
    async fn answering_vendor() -> (u16, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    let mut buf = [0u8; 4096];
                    loop {
                        let Ok(n) = socket.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        seen.extend_from_slice(&buf[..n]);
                        // Requests carry `{}` after their head: one answer per request.
                        while let Some(end) = seen.windows(6).position(|w| w == b"\r\n\r\n{}") {
                            seen.drain(..end + 6);
                            let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
                            if socket.write_all(answer).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (port, accepted)
    }

    /// A client of a vendor on loopback `port`.
    fn loopback_client(port: u16, timeouts: Timeouts) -> UpstreamClient {
        let base = BaseUrl::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
        UpstreamClient::new("test", base, timeouts)
    }

    fn request(deadline: Option<Instant>, reserved: Option<&Reserved>) -> UpstreamRequest<'_> {
        UpstreamRequest {
            endpoint: "test",
            path_and_query: "/x",
            content_type: "application/json",
            body: b"{}",
            headers: &[],
            timing: None,
            deadline,
            reserved,
        }
    }

    /// With its one connection held, a call waits no longer than its step's deadline, far
    /// short of `connect_ms`, and is not sent; once the connection is free, calls go out again.
    #[tokio::test]
    async fn a_call_finding_every_connection_busy_gives_up_by_its_deadline() {
        let (port, accepted) = answering_vendor().await;
        let timeouts = Timeouts {
            connect: Duration::from_secs(30),
            ..Timeouts::default()
        };
        let client = loopback_client(port, timeouts).for_connection("unit-busy", 1, 1);
        let held = client.reserve(None).await.expect("the one connection");
        let asked = Instant::now();
        let busy = client
            .post(&request(Some(asked + Duration::from_millis(100)), None))
            .await;
        assert_eq!(busy.unwrap_err(), UpstreamFailure::Busy);
        assert!(
            asked.elapsed() < Duration::from_secs(10),
            "it waited for connect_ms, not the deadline"
        );
        assert_eq!(accepted.load(Ordering::Relaxed), 0, "nothing was sent");
        let [served, gave_up] = client.waits.as_ref().unwrap();
        assert_eq!((served.get(), gave_up.get()), (0, 1));
        drop(held);
        let answer = client.post(&request(None, None)).await.expect("an answer");
        assert_eq!(answer.status, 200);
        assert_eq!(
            served.get(),
            0,
            "a free connection is taken without waiting"
        );
    }

    /// A step holding its thread's only connection makes each of its calls on it, without
    /// waiting for a second one.
    #[tokio::test]
    async fn a_reserved_connection_carries_every_call_of_its_step() {
        let (port, accepted) = answering_vendor().await;
        let client =
            loopback_client(port, Timeouts::default()).for_connection("unit-reserved", 1, 1);
        let held = client.reserve(None).await.expect("the one connection");
        let soon = Instant::now() + Duration::from_millis(200);
        for _ in 0..2 {
            let answer = client.post(&request(Some(soon), Some(&held))).await;
            assert_eq!(answer.expect("an answer").status, 200);
        }
        assert_eq!(accepted.load(Ordering::Relaxed), 1, "both went out on one");
        let [served, gave_up] = client.waits.as_ref().unwrap();
        assert_eq!((served.get(), gave_up.get()), (0, 0));
    }

    /// A new connection's handshake (DNS, TCP, TLS: up to twice `connect_ms`) must not come out
    /// of the vendor's `read_ms` to answer. The exchange here is begun 450 ms before it is sent,
    /// as though connecting had taken that long, and the vendor answers 100 ms after the request:
    /// well inside the 500 ms read timeout counted from when the request went out.
    #[tokio::test]
    async fn the_read_timeout_counts_from_when_a_new_connection_sent_the_request() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let vendor = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = socket.read(&mut buf).await.unwrap();
                assert!(n > 0, "the request never came");
                head.extend_from_slice(&buf[..n]);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            socket
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                .await
                .unwrap();
            // Held open until the client has read the answer.
            let _ = socket.read(&mut buf).await;
        });
        let timeouts = Timeouts {
            read: Duration::from_millis(500),
            ..Timeouts::default()
        };
        let client = loopback_client(port, timeouts);
        let req = request(None, None);
        let begun = Instant::now() - Duration::from_millis(450);
        let (answer, _) = client.send(&req, begun).await.expect("the vendor's answer");
        assert_eq!((answer.status, answer.body.as_slice()), (200, &b"{}"[..]));
        vendor.abort();
    }
}
