//! The downstream connection type handed to pingora's HTTP/1 session: a TCP stream whose writes
//! are gathered until a flush, so a response's header and body leave in one `send` (pingora
//! writes them separately, and each send on loopback wakes the reader and invites a context
//! switch).

use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use async_trait::async_trait;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, Ssl, UniqueID, UniqueIDType,
};
use pingora::protocols::{SocketDigest, TimingDigest};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// Writes are gathered up to this size before a flush is forced.
const MAX_GATHERED: usize = 64 * 1024;

#[derive(Debug)]
pub struct GatheringStream {
    inner: TcpStream,
    pending: Vec<u8>,
    /// How much of `pending` has been sent by a flush in progress.
    sent: usize,
}

impl GatheringStream {
    pub fn new(inner: TcpStream) -> Self {
        GatheringStream {
            inner,
            // Nothing is held for an idle connection; the first write allocates.
            pending: Vec::new(),
            sent: 0,
        }
    }

    /// Waits until the client has sent something, holding no buffer meanwhile.
    pub async fn readable(&self) -> io::Result<()> {
        self.inner.readable().await
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

#[async_trait]
impl Shutdown for GatheringStream {
    async fn shutdown(&mut self) {
        let _ = AsyncWriteExt::shutdown(self).await;
    }
}

impl UniqueID for GatheringStream {
    fn id(&self) -> UniqueIDType {
        self.inner.as_raw_fd() as UniqueIDType
    }
}

impl Ssl for GatheringStream {}

impl GetTimingDigest for GatheringStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        Vec::new()
    }
}

impl GetProxyDigest for GatheringStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        None
    }
}

impl GetSocketDigest for GatheringStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        None
    }
}

#[async_trait]
impl Peek for GatheringStream {}
