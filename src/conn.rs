//! A client connection of the API and admin listeners: a TCP stream (plain, or TLS when the
//! listener has a certificate) whose writes are gathered until a flush, so a response's head and
//! body leave in one `send` (each send on loopback wakes the reader and invites a context
//! switch). Under TLS they leave in one record.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A TCP connection, plain or under TLS (`T`): what carries a client's bytes (`Transport`) and a
/// vendor's (`upstream::stream::VendorStream`), read and written through whichever it holds.
#[derive(Debug)]
pub enum PlainOrTls<T> {
    Plain(TcpStream),
    Tls(T),
}

/// What carries a client's bytes: the socket itself, or TLS over it.
type Transport = PlainOrTls<Box<pingora::tls::ServerTlsStream<TcpStream>>>;

impl Transport {
    fn socket(&self) -> &TcpStream {
        match self {
            PlainOrTls::Plain(tcp) => tcp,
            PlainOrTls::Tls(tls) => tls.get_ref().0,
        }
    }

    /// Whether TLS has decrypted bytes that no one has read yet. A TLS error counts as "yes": the
    /// read that follows reports it.
    fn holds_plaintext(&mut self) -> bool {
        match self {
            PlainOrTls::Plain(_) => false,
            PlainOrTls::Tls(tls) => tls
                .get_mut()
                .1
                .process_new_packets()
                .map_or(true, |state| state.plaintext_bytes_to_read() > 0),
        }
    }
}

/// Writes are gathered up to this size before a flush is forced.
const MAX_GATHERED: usize = 64 * 1024;

#[derive(Debug)]
pub struct GatheringStream {
    inner: Transport,
    pending: Vec<u8>,
    /// How much of `pending` has been sent by a flush in progress.
    sent: usize,
}

impl GatheringStream {
    pub fn new(tcp: TcpStream) -> Self {
        Self::over(PlainOrTls::Plain(tcp))
    }

    /// A connection whose TLS handshake is done.
    pub fn tls(stream: pingora::tls::ServerTlsStream<TcpStream>) -> Self {
        Self::over(PlainOrTls::Tls(Box::new(stream)))
    }

    fn over(inner: Transport) -> Self {
        GatheringStream {
            inner,
            // Nothing is held for an idle connection; the first write allocates.
            pending: Vec::new(),
            sent: 0,
        }
    }

    /// Waits until the client has sent something, holding no buffer meanwhile; `false` if it
    /// closed instead.
    ///
    /// A peek, not `readable()`: tokio reports a socket readable as soon as it is registered, and
    /// keeps a readiness until a read finds nothing, so `readable()` on a fresh or just-served
    /// connection returns at once. Only a peek (which clears a stale readiness) waits for bytes.
    /// Under TLS, rustls may already hold a request it decrypted along with the handshake's last
    /// flight, which no peek at the socket would see: then there is no wait.
    async fn wait_for_data(&mut self) -> io::Result<bool> {
        if self.inner.holds_plaintext() {
            return Ok(true);
        }
        let mut probe = [0u8; 1];
        Ok(self.inner.socket().peek(&mut probe).await? > 0)
    }

    /// Whether the client has sent something not yet read, asked of the socket itself (a peek
    /// that does not wait). tokio's readiness can lag bytes that have arrived by a turn of its
    /// reactor: a connection closed for the drain in that turn would throw away a request the
    /// client had already sent, and its answer would be a reset. `false` for a client that
    /// closed, or on any error (the read that follows would fail too).
    pub fn has_input(&mut self) -> bool {
        if self.inner.holds_plaintext() {
            return true;
        }
        let mut probe = [std::mem::MaybeUninit::uninit(); 1];
        matches!(socket2::SockRef::from(self.inner.socket()).peek(&mut probe), Ok(n) if n > 0)
    }

    /// Waits until the client sends something and returns what arrived, in a buffer made only
    /// then; `None` if the client closed instead.
    ///
    /// On a plain socket the bytes are read at once when the socket turns readable (one system
    /// call, no peek first); a readiness that finds nothing (tokio reports a new socket readable
    /// before any byte arrives) is cleared by that read, and the wait goes on.
    ///
    /// The read is tokio's `poll_read`, polled once, rather than `try_read_buf`: a read that
    /// fills less than the buffer has drained the socket, and `poll_read` then clears the
    /// readiness, where `try_read_buf` keeps it until a read finds nothing. A request read
    /// whole here would otherwise cost the next wait a system call that finds nothing
    /// (`EAGAIN`), as it did for about one request in ten under load (strace).
    pub async fn read_first(&mut self, capacity: usize) -> io::Result<Option<Vec<u8>>> {
        if let PlainOrTls::Plain(tcp) = &mut self.inner {
            loop {
                tcp.readable().await?;
                let mut buf = Vec::with_capacity(capacity);
                let read = tokio::io::AsyncReadExt::read_buf(&mut *tcp, &mut buf);
                // Not ready after all: the readiness is cleared, the buffer dropped, and the
                // wait goes on (with this task's waker, registered by `readable`).
                match futures_util::FutureExt::now_or_never(read) {
                    Some(Ok(0)) => return Ok(None),
                    Some(Ok(_)) => return Ok(Some(buf)),
                    Some(Err(e)) => return Err(e),
                    None => continue,
                }
            }
        }
        if !self.wait_for_data().await? {
            return Ok(None);
        }
        let mut buf = Vec::with_capacity(capacity);
        let n = tokio::io::AsyncReadExt::read_buf(self, &mut buf).await?;
        Ok((n > 0).then_some(buf))
    }

    /// The buffer of bytes waiting to be sent: a response is written into it whole, then sent
    /// by one flush.
    pub fn outgoing(&mut self) -> &mut Vec<u8> {
        &mut self.pending
    }

    /// Sends what is gathered; `Ready(Ok)` once all of it is out.
    fn poll_send_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.pending.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.pending.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for PlainOrTls<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PlainOrTls::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            PlainOrTls::Tls(tls) => Pin::new(tls).poll_read(cx, buf),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for PlainOrTls<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            PlainOrTls::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            PlainOrTls::Tls(tls) => Pin::new(tls).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PlainOrTls::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            PlainOrTls::Tls(tls) => Pin::new(tls).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PlainOrTls::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            PlainOrTls::Tls(tls) => Pin::new(tls).poll_shutdown(cx),
        }
    }
}

impl AsyncRead for GatheringStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for GatheringStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.pending.len() + buf.len() > MAX_GATHERED {
            ready!(self.poll_send_pending(cx))?;
            if buf.len() > MAX_GATHERED {
                return Pin::new(&mut self.inner).poll_write(cx, buf);
            }
        }
        self.pending.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_send_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_send_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
