//! One request as a handler sees it: its head, parsed in place in the connection's read buffer
//! (no copies of the method, path or fields), and its body, read only when the handler asks and
//! only up to the handler's limit.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::conn::GatheringStream;
use crate::wire::{self, Chunked, ChunkedError, ChunkedProgress, Framing, RequestHead, READ_CHUNK};

/// Why a request body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    TooLarge,
    /// The client went away or stalled.
    Incomplete,
    /// The chunked framing was broken.
    Malformed,
}

/// Where a request's body stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyProgress {
    Unread,
    /// Read whole: the next request starts at this offset of the buffer.
    Read {
        end: usize,
    },
    /// Refused or broken: the connection cannot carry another request.
    Abandoned,
}

pub struct Request<'c> {
    conn: &'c mut GatheringStream,
    /// The head, then whatever of the body (and of any pipelined request) has arrived.
    buf: Vec<u8>,
    head: RequestHead,
    body: BodyProgress,
    /// A chunked body once decoded; a sized body is read in place, in `buf`.
    decoded: Vec<u8>,
    body_timeout: Duration,
    /// When the body must have arrived whole: set when the gateway first waits for it.
    body_deadline: Option<Instant>,
}

/// What the connection needs once a request is handled.
pub(super) struct Finished {
    pub buf: Vec<u8>,
    /// Where the next request starts in `buf`, if the connection may carry one.
    pub next: Option<usize>,
    pub http11: bool,
    pub head_only: bool,
}

impl<'c> Request<'c> {
    pub(super) fn new(
        conn: &'c mut GatheringStream,
        buf: Vec<u8>,
        head: RequestHead,
        body_timeout: Duration,
    ) -> Self {
        Request {
            conn,
            buf,
            head,
            body: BodyProgress::Unread,
            decoded: Vec::new(),
            body_timeout,
            body_deadline: None,
        }
    }

    fn text(&self, range: std::ops::Range<usize>) -> &str {
        // httparse only accepts visible ASCII in the method and target.
        std::str::from_utf8(&self.buf[range]).unwrap_or_default()
    }

    pub fn method(&self) -> &str {
        self.text(self.head.method.clone())
    }

    /// The path, without the query.
    pub fn path(&self) -> &str {
        self.text(self.head.path.clone())
    }

    pub fn query(&self) -> Option<&str> {
        self.head.query.clone().map(|q| self.text(q))
    }

    /// The first field named `name` (case-insensitive), as sent.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.head.header(&self.buf, name)
    }

    /// Every field named `name`, in the order they came.
    pub fn headers<'b>(&'b self, name: &'b str) -> impl DoubleEndedIterator<Item = &'b [u8]> + 'b {
        self.head.fields(&self.buf, name)
    }

    /// The first field named `name`, if it is UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Whether the whole body (of a declared length) came with the head, so reading it waits
    /// for nothing.
    pub fn body_arrived_with_head(&self) -> bool {
        match self.head.framing {
            Framing::Length(n) => (self.buf.len() - self.head.len) as u64 >= n,
            Framing::Chunked | Framing::UntilClose => false,
        }
    }

    /// The body `read_body` read; empty before it has.
    pub fn body(&self) -> &[u8] {
        match self.body {
            BodyProgress::Read { .. } if self.head.framing == Framing::Chunked => &self.decoded,
            BodyProgress::Read { end } => &self.buf[self.head.len..end],
            BodyProgress::Unread | BodyProgress::Abandoned => &[],
        }
    }

    /// Reads the whole body (then `body` gives it, with no copy of a sized body), refusing it
    /// as soon as it passes `limit` bytes (by its declared length, a chunk's declared size, or
    /// what arrives). The whole body must arrive within the body timeout of the first wait for
    /// it: a deadline for each read alone would let a client trickle a byte a little faster than
    /// that and hold the connection for hours. Read once: a second call fails.
    pub async fn read_body(&mut self, limit: usize) -> Result<(), BodyError> {
        if self.body != BodyProgress::Unread {
            return Err(BodyError::Incomplete);
        }
        let result = match self.head.framing {
            Framing::Length(n) if n > limit as u64 => Err(BodyError::TooLarge),
            Framing::Length(n) => self.read_sized(n as usize).await,
            Framing::Chunked => self.read_chunked(limit).await,
            Framing::UntilClose => Err(BodyError::Incomplete),
        };
        if result.is_err() {
            self.body = BodyProgress::Abandoned;
        }
        result
    }

    async fn read_sized(&mut self, n: usize) -> Result<(), BodyError> {
        let start = self.head.len;
        let end = start + n;
        if self.buf.len() < end {
            self.send_continue().await?;
            self.buf.reserve_exact(end - self.buf.len());
        }
        while self.buf.len() < end {
            self.read_more().await?;
        }
        self.body = BodyProgress::Read { end };
        Ok(())
    }

    async fn read_chunked(&mut self, limit: usize) -> Result<(), BodyError> {
        // Chunk framing may add a few bytes per chunk; past this much of it, the client is
        // sending mostly framing, and is refused like an oversized body.
        let raw_limit = limit.saturating_mul(4).saturating_add(READ_CHUNK);
        let start = self.head.len;
        let mut asked = false;
        let mut progress = ChunkedProgress::default();
        loop {
            match wire::decode_chunked_from(&self.buf[start..], limit, &mut progress) {
                Ok(Chunked::Complete { payload, consumed }) => {
                    self.body = BodyProgress::Read {
                        end: start + consumed,
                    };
                    self.decoded = payload;
                    return Ok(());
                }
                Ok(Chunked::Incomplete) if self.buf.len() - start > raw_limit => {
                    return Err(BodyError::TooLarge)
                }
                Ok(Chunked::Incomplete) => {
                    if !asked {
                        self.send_continue().await?;
                        asked = true;
                    }
                    self.read_more().await?;
                }
                Err(ChunkedError::TooLarge) => return Err(BodyError::TooLarge),
                Err(ChunkedError::Malformed) => return Err(BodyError::Malformed),
            }
        }
    }

    /// Answers `Expect: 100-continue` before the first body read, so a client waiting for
    /// leave to send its body sends it now.
    async fn send_continue(&mut self) -> Result<(), BodyError> {
        if !self.head.expects_continue || self.buf.len() > self.head.len {
            return Ok(());
        }
        self.head.expects_continue = false;
        let deadline = self.body_deadline();
        let sent = async {
            self.conn
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await?;
            self.conn.flush().await
        };
        match crate::deadline::timeout_at(deadline, sent).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(BodyError::Incomplete),
        }
    }

    /// The body's deadline, set by the first wait for it (a body that came with its head costs
    /// no clock read).
    fn body_deadline(&mut self) -> Instant {
        let timeout = self.body_timeout;
        *self
            .body_deadline
            .get_or_insert_with(|| Instant::now() + timeout)
    }

    async fn read_more(&mut self) -> Result<(), BodyError> {
        // Room only when the buffer is full, and only a read's worth: a sized body's buffer is
        // reserved to the body's end (so its reads stop there), and `reserve` would double a
        // buffer near the body's limit, holding twice what the body needs.
        if self.buf.len() == self.buf.capacity() {
            self.buf.reserve_exact(READ_CHUNK);
        }
        let deadline = self.body_deadline();
        match crate::deadline::timeout_at(deadline, self.conn.read_buf(&mut self.buf)).await {
            Ok(Ok(n)) if n > 0 => Ok(()),
            _ => Err(BodyError::Incomplete),
        }
    }

    /// Hands the buffer back with where the next request starts. A body the handler did not
    /// read is skipped if it has wholly arrived; otherwise the connection closes after the
    /// answer (reading an unwanted body could take long).
    pub(super) fn finish(self) -> Finished {
        let next = match self.body {
            BodyProgress::Read { end } => Some(end),
            BodyProgress::Abandoned => None,
            BodyProgress::Unread => match self.head.framing {
                Framing::Length(n) => usize::try_from(n)
                    .ok()
                    .and_then(|n| self.head.len.checked_add(n))
                    .filter(|&end| end <= self.buf.len()),
                Framing::Chunked | Framing::UntilClose => None,
            },
        };
        Finished {
            next: next.filter(|_| self.head.keep_alive),
            http11: self.head.http11,
            // The method's bytes, compared without the UTF-8 check `method()` makes.
            head_only: self.buf[self.head.method.clone()] == *b"HEAD",
            buf: self.buf,
        }
    }
}
