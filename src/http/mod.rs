//! HTTP serving: a pingora service over a socket we bound ourselves (so port 0 works and the
//! bound address is known before the server starts), the connection loop, the `Handler` trait
//! every listener's logic implements, and `Reply`.
//!
//! HTTP/1.1 itself is the gateway's own (`wire` parses with `httparse`): pingora's server session
//! keeps each request in a `HeaderMap`, a parsed `Uri` and per-session buffers, which the load
//! harness measured as a large share of a request's cost. Here a request is parsed in place in
//! one read buffer, and the answer is formatted straight into the outgoing one.

mod request;
mod respond;

pub use request::{BodyError, Request};
use respond::ReplyOptions;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use std::panic::AssertUnwindSafe;

use async_trait::async_trait;
use futures_util::FutureExt;

use crate::api::{ErrorCode, Problem};
use crate::wire::{self, HeadError};
use bytes::Bytes;
use pingora::server::ListenFds;
use pingora::server::ShutdownWatch;
use pingora::services::Service;

/// How long a connection may sit idle, or take to send a request's header, and how long a client
/// may take to send a whole body, unless the service is given others.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// How many connections a listener serves at once unless told otherwise (the admin listener's
/// probes and scrapes, the sandbox's vendor calls): past it, new connections wait in the
/// kernel's backlog until one closes.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// Read timeouts for a listener's clients.
#[derive(Debug, Clone, Copy)]
pub struct ClientTimeouts {
    pub header: Duration,
    pub body: Duration,
}

impl Default for ClientTimeouts {
    fn default() -> Self {
        ClientTimeouts {
            header: DEFAULT_HEADER_TIMEOUT,
            body: DEFAULT_BODY_TIMEOUT,
        }
    }
}

/// A complete response, built before any byte is written.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    /// The reply's own header fields, each written out (`Name: value\r\n`) as it is added.
    fields: Vec<u8>,
    pub body: Bytes,
    /// Close the connection after this reply (for example when the request body was not read).
    pub close: bool,
    /// How the reply goes on the wire; anything but `Whole` is for sandbox faults.
    pub shape: WireShape,
}

/// Ways a reply can be written. The gateway only ever writes `Whole`; the sandbox vendors use the
/// others to misbehave on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WireShape {
    #[default]
    Whole,
    /// The body one byte at a time, with this pause between bytes.
    Trickle(Duration),
    /// Promise more body than is sent, then close the connection.
    CutShort,
    /// A valid answer in 16-byte chunks (`Transfer-Encoding: chunked`).
    Chunked,
    /// A valid answer with no length, ended by closing the connection.
    UntilClose,
}

impl Reply {
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Bytes>) -> Self {
        Reply {
            status,
            content_type,
            fields: Vec::new(),
            body: body.into(),
            close: false,
            shape: WireShape::Whole,
        }
    }

    pub fn json(status: u16, body: impl Into<Bytes>) -> Self {
        Reply::new(status, "application/json", body)
    }

    pub fn text(status: u16, body: &'static str) -> Self {
        Reply::new(
            status,
            "text/plain; charset=utf-8",
            Bytes::from_static(body.as_bytes()),
        )
    }

    /// A field with this value; see `header_with` for values with a line break.
    pub fn header(self, name: &'static str, value: impl AsRef<str>) -> Self {
        self.header_with(name, |out| out.extend_from_slice(value.as_ref().as_bytes()))
    }

    /// A field whose value `write_value` appends to the reply's fields (a list, numbers), with
    /// no string of its own; it must only append. Values are the gateway's own, but a line
    /// break in one would split the response: such a field is dropped rather than sent.
    pub fn header_with(
        mut self,
        name: &'static str,
        write_value: impl FnOnce(&mut Vec<u8>),
    ) -> Self {
        let start = self.fields.len();
        if start == 0 {
            // Room for the few fields a reply has (request id, RateLimit), so they usually cost
            // one allocation together.
            self.fields.reserve(FIELDS_CAPACITY);
        }
        self.fields.extend_from_slice(name.as_bytes());
        self.fields.extend_from_slice(b": ");
        let value_start = self.fields.len();
        write_value(&mut self.fields);
        debug_assert!(
            self.fields.len() >= value_start,
            "a field's writer only appends"
        );
        if has_line_break(&self.fields[value_start..]) {
            self.fields.truncate(start);
        } else {
            self.fields.extend_from_slice(b"\r\n");
        }
        self
    }

    /// The fields added with `header` and `header_with`, as they go on the wire.
    pub(crate) fn fields(&self) -> &[u8] {
        &self.fields
    }
}

/// Whether `value` holds a CR or LF, eight bytes per step.
fn has_line_break(value: &[u8]) -> bool {
    use crate::swar::has_byte;
    let is_break = |b: u8| b == b'\r' || b == b'\n';
    crate::swar::any(
        value,
        |x| has_byte(x, b'\r') || has_byte(x, b'\n'),
        is_break,
    )
}

/// What a reply's own fields take: `X-Request-Id` (a generated one; a caller's may be up to 128
/// characters), `Cache-Control`, `X-Content-Type-Options` and the RateLimit fields of one or two
/// limits.
const FIELDS_CAPACITY: usize = 320;

/// What a listener does with one request whose head has been read.
///
/// `handle` is an `async fn` in each implementation, unboxed: a listener serves one `Handler`
/// type, so its future lives inside the request's own (already boxed) future rather than in an
/// allocation of its own per request.
pub trait Handler: Send + Sync + 'static {
    fn handle(
        &self,
        request: &mut Request<'_>,
        peer: Option<SocketAddr>,
    ) -> impl std::future::Future<Output = Reply> + Send;

    /// The answer to a request whose head could not be read (`detail` says why, in fixed words
    /// and numbers); the connection closes after it.
    fn refuse(&self, detail: &str) -> Reply {
        plain_refusal(detail)
    }

    /// The answer to a request (its method and path) whose handler panicked `elapsed` after it
    /// was handed over (already logged, with `request_id`); the connection closes after it.
    fn panicked(
        &self,
        _method_and_path: (&str, &str),
        request_id: &str,
        _elapsed: Duration,
    ) -> Reply {
        panic_reply(request_id)
    }
}

/// The plain answer to a request head that could not be served (`Handler::refuse`'s default):
/// `400` with `detail` as text, and the connection closed.
pub fn plain_refusal(detail: &str) -> Reply {
    let mut reply = Reply::new(400, "text/plain; charset=utf-8", format!("{detail}\n"));
    reply.close = true;
    reply
}

/// The safety net's answer to a request whose handler panicked: a 500 problem that says nothing
/// of the panic, the fields every answer carries, and the connection closed (its state is not
/// trusted after a panic).
pub fn panic_reply(request_id: &str) -> Reply {
    let problem = Problem::new(ErrorCode::Internal, "the request failed unexpectedly");
    let mut reply = Reply::new(
        500,
        "application/problem+json",
        problem.to_json(request_id, false),
    )
    .header("X-Request-Id", request_id)
    .header("Cache-Control", "no-store")
    .header("X-Content-Type-Options", "nosniff");
    reply.close = true;
    reply
}

/// A pingora service that serves a `Handler` on a listener bound before the server starts.
///
/// Each service runs on a runtime of its own with one thread, and a connection lives its whole
/// life on the thread that accepted it: no request crosses threads. To use several cores, a
/// listener is a group of `SO_REUSEPORT` sockets on one address, one service each, and the kernel
/// spreads connections over them (as nginx's workers do).
pub struct HttpService<H: Handler> {
    name: String,
    listener: Option<std::net::TcpListener>,
    handler: Arc<H>,
    timeouts: ClientTimeouts,
    tls: Option<pingora::tls::TlsAcceptor>,
    max_connections: usize,
    /// Whether SIGTERM's drain stops this service (every listener but the in-process sandbox).
    drains: bool,
}

impl<H: Handler> HttpService<H> {
    pub fn new(name: &str, listener: std::net::TcpListener, handler: Arc<H>) -> Self {
        HttpService {
            name: name.to_string(),
            listener: Some(listener),
            handler,
            timeouts: ClientTimeouts::default(),
            tls: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            drains: true,
        }
    }

    /// Keeps serving while the gateway drains, until pingora stops it: the in-process sandbox
    /// is the vendor of requests still in flight, whose later vendor calls need it.
    pub fn serving_through_drain(mut self) -> Self {
        self.drains = false;
        self
    }

    /// Serves at most `max` connections at once; the next waits in the kernel's backlog until
    /// one closes. Each connection costs memory (up to a request's head and body while it is
    /// read) and a file descriptor that the vendor connections also need, so a flood of clients
    /// that never finish a request must not take either without bound.
    pub fn with_max_connections(mut self, max: usize) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// Serves TLS: each connection's handshake must finish within the header timeout.
    pub fn with_tls(mut self, acceptor: Option<pingora::tls::TlsAcceptor>) -> Self {
        self.tls = acceptor;
        self
    }

    pub fn with_timeouts(mut self, timeouts: ClientTimeouts) -> Self {
        self.timeouts = timeouts;
        self
    }
}

/// Binds `count` listening sockets to one address now (`SO_REUSEPORT`), so that the caller learns
/// the real address of a `:0` binding and each worker thread can accept on its own socket.
pub fn bind_group(addr: &str, count: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    use socket2::{Domain, Protocol, Socket, Type};
    let mut address: std::net::SocketAddr = addr
        .parse()
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "not an address"))?;
    let tcp_socket = |address: std::net::SocketAddr| {
        let socket = Socket::new(
            Domain::for_address(address),
            Type::STREAM,
            Some(Protocol::TCP),
        )?;
        socket.set_reuse_address(true)?;
        std::io::Result::Ok(socket)
    };
    // SO_REUSEPORT would let this group join a port another process (an older gateway left
    // running, say) already serves, and the kernel would split connections between the two. A
    // probe socket without it finds the port taken first.
    if address.port() != 0 {
        tcp_socket(address)?.bind(&address.into())?;
    }
    let mut group = Vec::with_capacity(count.max(1));
    for _ in 0..count.max(1) {
        let socket = tcp_socket(address)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&address.into())?;
        socket.listen(4096)?;
        let listener: std::net::TcpListener = socket.into();
        // A `:0` binding: the rest of the group joins the port the first one got.
        address = listener.local_addr()?;
        group.push(listener);
    }
    Ok(group)
}

/// Binds one listening socket (see `bind_group`).
pub fn bind(addr: &str) -> std::io::Result<std::net::TcpListener> {
    let mut group = bind_group(addr, 1)?;
    Ok(group.remove(0))
}

#[async_trait]
impl<H: Handler> Service for HttpService<H> {
    async fn start_service(
        &mut self,
        _fds: Option<ListenFds>,
        mut shutdown: ShutdownWatch,
        _listeners_per_fd: usize,
    ) {
        let Some(std_listener) = self.listener.take() else {
            return;
        };
        let listener = match tokio::net::TcpListener::from_std(std_listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(service = %self.name, error = %e, "cannot listen");
                return;
            }
        };
        let mut drain = crate::shutdown::drain_signal();
        let slots = Arc::new(tokio::sync::Semaphore::new(self.max_connections));
        let open = crate::metrics::OPEN_CONNECTIONS.with_label_values(&[self
            .name
            .split('-')
            .next()
            .unwrap_or_default()]);
        let mut accept_failures = RateLimitedWarning::default();
        // Set while at the limit: logged when reached, and again only once a tenth of the slots
        // are free, so a flood that keeps the listener at its limit logs two lines, not two per
        // connection.
        let mut full_since: Option<std::time::Instant> = None;
        let plenty_free = (self.max_connections / 10).max(1);
        loop {
            let free = slots.available_permits();
            if free == 0 && full_since.is_none() {
                full_since = Some(std::time::Instant::now());
                tracing::warn!(
                    service = %self.name,
                    max_connections = self.max_connections,
                    "connection limit reached: new connections wait until one closes"
                );
            } else if free >= plenty_free {
                if let Some(since) = full_since.take() {
                    tracing::info!(
                        service = %self.name,
                        at_limit_ms = since.elapsed().as_millis() as u64,
                        "below the connection limit again"
                    );
                }
            }
            // A slot first: at the limit, new connections wait in the kernel's backlog.
            let slot = match slots.clone().try_acquire_owned() {
                Ok(slot) => slot,
                Err(_) => tokio::select! {
                    slot = slots.clone().acquire_owned() => {
                        slot.expect("the semaphore is never closed")
                    }
                    () = stop_requested(&mut drain, &mut shutdown, &self.name, self.drains) => break,
                },
            };
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        let handler = self.handler.clone();
                        let shutdown = shutdown.clone();
                        let serving = Serving { timeouts: self.timeouts, drains: self.drains };
                        let tls = self.tls.clone();
                        let open = open.clone();
                        open.inc();
                        // The service's runtime has one thread: the connection stays on it.
                        tokio::spawn(async move {
                            if let Some(conn) = connect(tcp, tls, serving.timeouts).await {
                                serve_connection(conn, peer, handler, shutdown, serving).await;
                            }
                            open.dec();
                            drop(slot);
                        });
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning,
                        // and say so once a second, not once per try.
                        accept_failures.warn(&self.name, &e);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                () = stop_requested(&mut drain, &mut shutdown, &self.name, self.drains) => break,
            }
        }
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn threads(&self) -> Option<usize> {
        Some(1)
    }
}

/// Resolves when draining starts, for a service that `drains` (then this thread's idle
/// connections are told to close), or when pingora stops the service.
async fn stop_requested(
    drain: &mut tokio::sync::watch::Receiver<bool>,
    shutdown: &mut ShutdownWatch,
    service: &str,
    drains: bool,
) {
    loop {
        tokio::select! {
            changed = drain.changed(), if drains => {
                if changed.is_err() || *drain.borrow() {
                    tracing::info!(service, "draining: stopped accepting");
                    crate::shutdown::close_idle_connections();
                    return;
                }
            }
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    tracing::info!(service, "stopped accepting");
                    return;
                }
            }
        }
    }
}

/// A warning logged at most once a second, with how many were held back meanwhile.
#[derive(Default)]
struct RateLimitedWarning {
    last: Option<std::time::Instant>,
    held_back: u64,
}

impl RateLimitedWarning {
    fn warn(&mut self, service: &str, error: &std::io::Error) {
        let now = std::time::Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < Duration::from_secs(1))
        {
            self.held_back += 1;
            return;
        }
        tracing::warn!(service, %error, held_back = self.held_back, "accept failed");
        self.last = Some(now);
        self.held_back = 0;
    }
}

/// Whether pingora has told this service to stop. Its channel only ever changes to say so, and
/// a connection's receiver was cloned from the accept loop's, which stops at that change: a
/// change seen here is the stop. `has_changed` is one atomic load; reading the value would take
/// the channel's lock, a cache line every worker thread writes.
fn stopped(shutdown: &ShutdownWatch) -> bool {
    shutdown.has_changed().unwrap_or(true)
}

/// Makes an accepted socket ready for HTTP: TLS's handshake first when the listener has a
/// certificate. A client that does not finish it in time, or speaks something else, is dropped.
async fn connect(
    tcp: tokio::net::TcpStream,
    tls: Option<pingora::tls::TlsAcceptor>,
    timeouts: ClientTimeouts,
) -> Option<crate::conn::GatheringStream> {
    let _ = tcp.set_nodelay(true);
    let Some(acceptor) = tls else {
        return Some(crate::conn::GatheringStream::new(tcp));
    };
    // Boxed: the handshake's state (1.4 KiB) would otherwise sit in every connection's task for
    // as long as the connection lives, TLS or not.
    match Box::pin(tokio::time::timeout(timeouts.header, acceptor.accept(tcp))).await {
        Ok(Ok(stream)) => Some(crate::conn::GatheringStream::tls(stream)),
        Ok(Err(e)) => {
            crate::metrics::tls_handshake_failed();
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            crate::metrics::tls_handshake_failed();
            None
        }
    }
}

async fn serve_connection<H: Handler>(
    mut conn: crate::conn::GatheringStream,
    peer: SocketAddr,
    handler: Arc<H>,
    shutdown: ShutdownWatch,
    serving: Serving,
) {
    let Serving { timeouts, drains } = serving;
    // Bytes that arrived after the last request: the start of a pipelined next one.
    let mut unread: Vec<u8> = Vec::new();
    loop {
        // While idle a connection holds only its socket: the read buffer and the request's
        // (large) future are made, boxed, when the client sends something, so 10,000 idle
        // connections stay cheap. One deadline covers the wait and the whole head.
        // While draining, an idle connection closes rather than take a request that could
        // start after the last in flight has finished and be cut off at exit.
        let header_deadline = std::time::Instant::now() + timeouts.header;
        // A request the client has already sent is served, drain or not (`has_input`): closing
        // with it unread would answer it with a reset.
        if unread.is_empty() {
            if drains && crate::shutdown::draining() && !conn.has_input() {
                return;
            }
            let first = tokio::select! {
                read = crate::deadline::timeout_at(
                    header_deadline,
                    conn.read_first(wire::FIRST_READ),
                ) => read,
                // Draining has begun (it is set before idle connections are woken): the check
                // above closes the connection, unless its client has already sent a request.
                () = crate::shutdown::idle_close().notified(), if drains => continue,
            };
            match first {
                Ok(Ok(Some(first))) => unread = first,
                _ => return,
            }
        }
        // Line ends alone start no request (some clients send a CRLF after a body, and a head
        // may follow empty lines): the connection is still idle, for the drain and the idle
        // wait alike, not a head the header timeout must wait out.
        if wire::leading_line_ends(&unread) == unread.len() {
            unread.clear();
            continue;
        }
        // The box is allocated first and the future written into it: `Box::pin(future)` made
        // the future on the stack and copied all of it (3.1 KiB, nearly all of it not yet in use)
        // into the box, where only its arguments need writing.
        let room = Box::new_uninit();
        let request = Box::write(
            room,
            serve_request(
                &mut conn,
                unread,
                peer,
                handler.as_ref(),
                &shutdown,
                serving,
                header_deadline,
            ),
        );
        // In flight, for SIGTERM's drain, from the head's first byte (a head still arriving when
        // the drain begins is served, not cut off at exit) until the connection is done with
        // the request, a lingering close included (closing with input unread could destroy the
        // answer).
        let _in_flight = crate::shutdown::InflightRequest::start();
        let served = Box::into_pin(request).await;
        match served {
            Ok(next) => unread = next,
            Err(Close::Now) => return,
            Err(Close::Linger) => {
                // Boxed: its drain buffer (2 KiB) is needed only while closing, not in every
                // connection's task for as long as the connection lives.
                Box::pin(linger(conn)).await;
                return;
            }
        }
    }
}

/// How a listener serves each request: its clients' timeouts, and whether SIGTERM's drain
/// closes its connections.
#[derive(Clone, Copy)]
struct Serving {
    timeouts: ClientTimeouts,
    drains: bool,
}

/// How a connection that will serve no more requests closes.
enum Close {
    /// Nothing was answered (the client went away or stalled mid-head): at once.
    Now,
    /// After an answer: its unread input drained first (`linger`).
    Linger,
}

/// How long a closing connection's unread input is drained, so the client reads the last
/// answer: closing a socket with unread bytes makes the kernel reset it, and a reset can
/// destroy an answer the client has not read yet (a body refused before it was read, say).
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 256 * 1024;

/// Closes our side for writing, then reads and drops what the client still sends until it
/// closes too, for at most `LINGER` and `LINGER_BYTES` in all (a client that reads nothing
/// cannot hold the close up either).
async fn linger(mut conn: crate::conn::GatheringStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let drain = async {
        conn.outgoing().clear();
        if conn.shutdown().await.is_err() {
            return;
        }
        let mut sink = [0u8; 2048];
        let mut drained = 0;
        while drained < LINGER_BYTES {
            match conn.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// Reads one request's head into `buf` (which holds what has arrived so far), has the handler
/// answer it, and gives back what arrived after it if the connection may carry another, or how
/// to close.
async fn serve_request<H: Handler>(
    conn: &mut crate::conn::GatheringStream,
    mut buf: Vec<u8>,
    peer: SocketAddr,
    handler: &H,
    shutdown: &ShutdownWatch,
    Serving { timeouts, drains }: Serving,
    header_deadline: std::time::Instant,
) -> Result<Vec<u8>, Close> {
    use tokio::io::AsyncReadExt;
    // Bytes of `buf` already looked at for the empty line that ends a head: a head sent a byte
    // at a time is parsed once it may be whole, not once per byte.
    let mut looked_at: usize = 0;
    let refusal = loop {
        let may_be_whole = wire::may_end_head(&buf[looked_at.saturating_sub(3)..])
            || buf.len() > wire::MAX_REQUEST_HEAD;
        looked_at = buf.len();
        let parsed = if may_be_whole {
            wire::parse_request(&buf)
        } else {
            Ok(None)
        };
        match parsed {
            Ok(Some(head)) => break Ok(head),
            Ok(None) => {
                // Room only when the buffer is full, and a read's worth, never past the head's
                // limit: `reserve` would double the buffer, so a head just under the limit would
                // hold twice it.
                if buf.len() == buf.capacity() {
                    buf.reserve_exact(wire::READ_CHUNK.min(wire::MAX_REQUEST_HEAD + 1 - buf.len()));
                }
                match crate::deadline::timeout_at(header_deadline, conn.read_buf(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => {}
                    // Closed or stalled mid-head: nothing to answer, so nothing to linger for.
                    _ => return Err(Close::Now),
                }
            }
            Err(HeadError::TooLarge) => {
                break Err(format!(
                    "the request head must be at most {} bytes and {} fields",
                    wire::MAX_REQUEST_HEAD,
                    wire::MAX_REQUEST_HEADERS
                ))
            }
            Err(HeadError::Malformed(why)) => {
                break Err(format!("the request is not valid HTTP/1.1: {why}"))
            }
        }
    };
    let head = match refusal {
        Ok(head) => head,
        Err(detail) => {
            let reply = handler.refuse(&detail);
            let how = ReplyOptions {
                close: true,
                http11: true,
                head_only: false,
                write_timeout: timeouts.body,
            };
            let _ = respond::write_reply(conn, &reply, how).await;
            return Err(Close::Linger);
        }
    };

    let mut request = Request::new(conn, buf, head, timeouts.body);
    // A bug that panics in a handler costs its caller a 500, not the connection or the thread.
    // The handler's future is pinned where it is made, so what wraps and awaits it moves a
    // pointer, not the request's whole state.
    let handed_over = std::time::Instant::now();
    let handled = {
        let handling = std::pin::pin!(handler.handle(&mut request, Some(peer)));
        AssertUnwindSafe(handling).catch_unwind().await
    };
    let reply = handled.unwrap_or_else(|_| {
        // The caller's own id, when it sent a sane one, as every other answer carries: it is what
        // the caller will quote when reporting the failure.
        let request_id = crate::request_id::accept_or_generate(request.header("X-Request-Id"));
        tracing::error!(request_id = %request_id, "a request handler panicked");
        let method_and_path = (request.method(), request.path());
        handler.panicked(method_and_path, &request_id, handed_over.elapsed())
    });
    let finished = request.finish();
    let closing = reply.close
        || finished.next.is_none()
        || (drains && crate::shutdown::draining())
        || stopped(shutdown);
    let how = ReplyOptions {
        close: closing,
        http11: finished.http11,
        head_only: finished.head_only,
        write_timeout: timeouts.body,
    };
    let written = respond::write_reply(conn, &reply, how).await;
    match (written, finished.next) {
        (Ok(()), Some(next)) if !closing => {
            let mut buf = finished.buf;
            if next == buf.len() {
                // Nothing pipelined: the buffer goes, so an idle connection holds none.
                Ok(Vec::new())
            } else {
                buf.drain(..next);
                Ok(buf)
            }
        }
        _ => Err(Close::Linger),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A handler that panics, and notes what the safety net told it of each panic.
    #[derive(Default)]
    struct Panics {
        told: std::sync::Mutex<Vec<(String, String, String)>>,
    }

    impl Handler for Panics {
        #[allow(clippy::manual_async_fn)]
        fn handle(
            &self,
            _request: &mut Request<'_>,
            _peer: Option<SocketAddr>,
        ) -> impl std::future::Future<Output = Reply> + Send {
            async { panic!("a bug in a handler") }
        }

        fn panicked(&self, (method, path): (&str, &str), request_id: &str, _: Duration) -> Reply {
            self.told.lock().unwrap().push((
                method.to_string(),
                path.to_string(),
                request_id.to_string(),
            ));
            panic_reply(request_id)
        }
    }

    /// A handler's panic is the safety net's 500: problem+json, the headers every answer
    /// carries, and the connection closed (its state is not trusted after a panic).
    #[tokio::test]
    async fn a_panicking_handler_costs_its_caller_a_500_and_the_connection() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let handler = Arc::new(Panics::default());
        let serving = handler.clone();
        let server = tokio::spawn(async move {
            let (tcp, peer) = listener.accept().await.unwrap();
            let (_keep, shutdown) = tokio::sync::watch::channel(false);
            let conn = crate::conn::GatheringStream::new(tcp);
            serve_connection(
                conn,
                peer,
                serving,
                shutdown,
                Serving {
                    timeouts: ClientTimeouts::default(),
                    drains: true,
                },
            )
            .await;
        });
        let mut client = tokio::net::TcpStream::connect(address).await.unwrap();
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Request-Id: report-7\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(10), client.read_to_string(&mut answer))
            .await
            .expect("the connection closes")
            .unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 500 "), "{head}");
        let head = head.to_ascii_lowercase();
        for field in [
            "content-type: application/problem+json",
            "cache-control: no-store",
            "x-request-id: report-7",
            "connection: close",
        ] {
            assert!(
                head.lines().any(|l| l == field),
                "{field} missing from {head}"
            );
        }
        assert!(body.contains(r#""code":"internal_error""#), "{body}");
        assert!(body.contains(r#""request_id":"report-7""#), "{body}");
        assert!(!body.contains("a bug in a handler"), "{body}");
        drop(client);
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("the connection's task ends")
            .unwrap();
        // The handler was told, so it can count the answer as it counts every other.
        let told = handler.told.lock().unwrap().clone();
        assert_eq!(
            told,
            [("GET".to_string(), "/".to_string(), "report-7".to_string())]
        );
    }

    #[test]
    fn line_breaks_are_found_at_every_place() {
        assert!(!has_line_break(b""));
        // Around the byte: its neighbours' values, and the same with the high bit set.
        let around = [b'a', 0x0c, 0x0e, 0x8d, 0x8a, 0x0b, 0x09, 0xff, 0x00];
        for len in 0..40 {
            for at in 0..len {
                for byte in 0..=255u8 {
                    let mut value: Vec<u8> = (0..len).map(|i| around[i % around.len()]).collect();
                    value[at] = byte;
                    let expected = byte == b'\r' || byte == b'\n';
                    assert_eq!(
                        has_line_break(&value),
                        expected,
                        "{byte:#x} at {at} of {len}"
                    );
                }
            }
        }
    }
}
