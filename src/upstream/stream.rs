//! A vendor connection: plain TCP straight from tokio, or TLS through pingora's connector.
//!
//! pingora's stream is a buffered stream behind a trait object that reads the clock twice for
//! every read that has to wait (it keeps a running total of the time spent waiting, which the
//! gateway never asks for). The load harness measured that wrapper at about 1% of a request's
//! CPU, so a plain `http://` vendor gets a bare `TcpStream`; TLS, where pingora brings the
//! platform's trusted roots and its handshake timeouts, keeps pingora's stream.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

use super::UpstreamFailure;
use crate::conn::PlainOrTls;

/// A vendor connection: a bare `TcpStream`, or pingora's TLS stream.
pub type VendorStream = PlainOrTls<pingora::protocols::Stream>;

/// A plain TCP connection to `addr` within `limit`, with Nagle's algorithm off (a request goes
/// out in one write and waits for its answer: nothing to gain by holding it back), as pingora
/// sets its own. Failures are named in pingora's words, so a vendor's problem detail reads the
/// same whichever kind of connection failed.
pub async fn connect_plain(
    addr: SocketAddr,
    limit: Duration,
) -> Result<TcpStream, UpstreamFailure> {
    let stream = match crate::deadline::timeout(limit, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(UpstreamFailure::Unavailable(connect_error_name(&e).into())),
        Err(_) => return Err(UpstreamFailure::Unavailable("ConnectTimedout".into())),
    };
    stream
        .set_nodelay(true)
        .map_err(|e| UpstreamFailure::Unavailable(connect_error_name(&e).into()))?;
    Ok(stream)
}

fn connect_error_name(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "ConnectRefused",
        io::ErrorKind::TimedOut => "ConnectTimedout",
        io::ErrorKind::NetworkUnreachable | io::ErrorKind::HostUnreachable => "ConnectNoRoute",
        _ => "ConnectError",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refused_connection_is_named_as_pingora_names_it() {
        // A port just released: nothing listens on it.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        match connect_plain(addr, Duration::from_secs(2)).await {
            Err(UpstreamFailure::Unavailable(why)) => assert_eq!(why, "ConnectRefused"),
            Err(other) => panic!("expected a refused connection, got {other:?}"),
            Ok(_) => panic!("expected a refused connection, got one"),
        }
    }

    #[tokio::test]
    async fn a_plain_connection_carries_bytes_both_ways_without_delay() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let echo = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut b = [0u8; 4];
            s.read_exact(&mut b).await.unwrap();
            s.write_all(&b).await.unwrap();
        });
        let tcp = connect_plain(addr, Duration::from_secs(2)).await.unwrap();
        assert!(tcp.nodelay().unwrap());
        let mut stream: VendorStream = PlainOrTls::Plain(tcp);
        stream.write_all(b"ping").await.unwrap();
        stream.flush().await.unwrap();
        let mut b = [0u8; 4];
        stream.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"ping");
        echo.await.unwrap();
    }
}
