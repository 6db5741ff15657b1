//! Writes a `Reply` as an HTTP/1.1 response: the head is formatted straight into the
//! connection's outgoing buffer, the body follows it, and one flush sends both in one write.

use std::cell::RefCell;
use std::io;
use std::time::{Duration, UNIX_EPOCH};

use tokio::io::AsyncWriteExt;

use super::{Reply, WireShape};
use crate::conn::GatheringStream;
use crate::wire;

/// How the connection frames this reply.
#[derive(Debug, Clone, Copy)]
pub(super) struct ReplyOptions {
    /// Close the connection after this reply.
    pub close: bool,
    /// The request was HTTP/1.1 (an HTTP/1.0 client kept alive is told so).
    pub http11: bool,
    /// The request was HEAD: the head is sent, the body is not.
    pub head_only: bool,
    /// How long the client may leave the answer unread before the connection is dropped.
    pub write_timeout: Duration,
}

/// Sends what is gathered on `conn`, waiting at most `limit` for a client that reads nothing.
/// Most answers fit in the socket's buffer at once: they cost no timer.
async fn flush_within(conn: &mut GatheringStream, limit: Duration) -> io::Result<()> {
    if let Some(done) = futures_util::FutureExt::now_or_never(conn.flush()) {
        return done;
    }
    match crate::deadline::timeout(limit, conn.flush()).await {
        Ok(done) => done,
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    }
}

thread_local! {
    /// The `Date` value, formatted once per second per thread.
    static DATE: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
}

fn append_date(out: &mut Vec<u8>) {
    // `Date` has one-second resolution: the coarse clock (no hardware clock read) is enough.
    let second = crate::timestamp::unix_secs_coarse().max(0) as u64;
    DATE.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != second || cached.1.is_empty() {
            let formatted =
                chrono::DateTime::<chrono::Utc>::from(UNIX_EPOCH + Duration::from_secs(second))
                    .format("%a, %d %b %Y %H:%M:%S GMT")
                    .to_string();
            *cached = (second, formatted);
        }
        out.extend_from_slice(cached.1.as_bytes());
    });
}

fn append_field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// How the body's end is declared.
#[derive(Debug, Clone, Copy)]
pub(super) enum Declared {
    Length(usize),
    Chunked,
    /// Nothing: the body ends when the connection closes.
    Nothing,
}

/// The response head for `reply`, declaring its body as `declared`.
pub(super) fn append_head(out: &mut Vec<u8>, reply: &Reply, declared: Declared, how: ReplyOptions) {
    let mut number = itoa::Buffer::new();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(number.format(reply.status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(wire::reason(reply.status).as_bytes());
    out.extend_from_slice(b"\r\n");
    append_field(out, "Content-Type", reply.content_type.as_bytes());
    match declared {
        Declared::Length(length) => {
            append_field(out, "Content-Length", number.format(length).as_bytes())
        }
        Declared::Chunked => append_field(out, "Transfer-Encoding", b"chunked"),
        Declared::Nothing => {}
    }
    out.extend_from_slice(b"Date: ");
    append_date(out);
    out.extend_from_slice(b"\r\n");
    // Written out (and line breaks refused) as they were added.
    out.extend_from_slice(reply.fields());
    if how.close {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if !how.http11 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Sends `reply` on `conn`; an error means the connection is no longer usable.
pub(super) async fn write_reply(
    conn: &mut GatheringStream,
    reply: &Reply,
    how: ReplyOptions,
) -> io::Result<()> {
    let body: &[u8] = if how.head_only { &[] } else { &reply.body };
    let shape = match reply.shape {
        // HTTP/1.0 has no chunked coding (a server must not send it to a 1.0 client, RFC 9112
        // section 6.1), and an answer to HEAD has no body, not even the last chunk: both get the
        // answer whole.
        WireShape::Chunked if !how.http11 || how.head_only => WireShape::Whole,
        shape => shape,
    };
    match shape {
        WireShape::Whole => {
            let out = conn.outgoing();
            append_head(out, reply, Declared::Length(reply.body.len()), how);
            out.extend_from_slice(body);
            flush_within(conn, how.write_timeout).await
        }
        WireShape::Trickle(pause) => {
            append_head(
                conn.outgoing(),
                reply,
                Declared::Length(reply.body.len()),
                how,
            );
            flush_within(conn, how.write_timeout).await?;
            for byte in body.chunks(1) {
                conn.write_all(byte).await?;
                flush_within(conn, how.write_timeout).await?;
                tokio::time::sleep(pause).await;
            }
            Ok(())
        }
        WireShape::Chunked => {
            append_head(conn.outgoing(), reply, Declared::Chunked, how);
            flush_within(conn, how.write_timeout).await?;
            for chunk in body.chunks(16) {
                let size = format!("{:x}\r\n", chunk.len());
                let out = conn.outgoing();
                out.extend_from_slice(size.as_bytes());
                out.extend_from_slice(chunk);
                out.extend_from_slice(b"\r\n");
                flush_within(conn, how.write_timeout).await?;
            }
            conn.outgoing().extend_from_slice(b"0\r\n\r\n");
            flush_within(conn, how.write_timeout).await
        }
        WireShape::UntilClose => {
            let out = conn.outgoing();
            append_head(out, reply, Declared::Nothing, how);
            out.extend_from_slice(body);
            flush_within(conn, how.write_timeout).await?;
            // The body's end is the connection's: the caller must close it.
            Err(io::Error::other("answered until close on purpose"))
        }
        WireShape::CutShort => {
            let out = conn.outgoing();
            append_head(out, reply, Declared::Length(reply.body.len() + 100), how);
            out.extend_from_slice(body);
            flush_within(conn, how.write_timeout).await?;
            Err(io::Error::other("cut short on purpose"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_carries_length_type_date_fields_and_closing() {
        let reply = Reply::json(429, &b"{}"[..])
            .header("Retry-After", "3")
            .header("X-Bad", "a\r\nInjected: 1")
            .header_with("X-Listed", |out| out.extend_from_slice(b"1, 2"))
            .header_with("X-Bad-Too", |out| out.extend_from_slice(b"b\nInjected: 2"))
            .header("X-After", String::from("kept"));
        let mut out = Vec::new();
        let how = ReplyOptions {
            close: true,
            http11: true,
            head_only: false,
            write_timeout: Duration::from_secs(1),
        };
        append_head(&mut out, &reply, Declared::Length(2), how);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nContent-Length: 2\r\nDate: "));
        assert!(text.ends_with(
            "GMT\r\nRetry-After: 3\r\nX-Listed: 1, 2\r\nX-After: kept\r\nConnection: close\r\n\r\n"
        ));
        assert!(!text.contains("Injected"));

        let mut out = Vec::new();
        let kept = ReplyOptions {
            close: false,
            http11: false,
            head_only: false,
            write_timeout: Duration::from_secs(1),
        };
        append_head(
            &mut out,
            &Reply::json(200, &b"{}"[..]),
            Declared::Length(2),
            kept,
        );
        assert!(String::from_utf8(out)
            .unwrap()
            .ends_with("Connection: keep-alive\r\n\r\n"));

        // A reply whose first field is refused sends none of it.
        let mut out = Vec::new();
        let refused_first = Reply::json(200, &b"{}"[..])
            .header("X-Bad", "\n")
            .header("X-Next", "kept");
        append_head(&mut out, &refused_first, Declared::Length(2), kept);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("GMT\r\nX-Next: kept\r\nConnection: keep-alive\r\n\r\n"),
            "{text}"
        );
    }
}
