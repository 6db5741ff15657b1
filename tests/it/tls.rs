//! TLS on the API listener: a certificate generated for the test, a real rustls client that trusts
//! only it, the reset flow over one kept-alive TLS connection, and what a plain-HTTP client or a
//! bad certificate path gets.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::harness::*;

/// A self-signed certificate for `localhost` and 127.0.0.1, written as PEM files.
struct Certificate {
    der: Vec<u8>,
    cert_path: PathBuf,
    key_path: PathBuf,
}

impl Certificate {
    fn generate(tag: &str) -> Certificate {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("a certificate");
        let dir = std::env::temp_dir();
        let stem = format!("reset-gateway-it-tls-{tag}-{}", std::process::id());
        let cert_path = dir.join(format!("{stem}-cert.pem"));
        let key_path = dir.join(format!("{stem}-key.pem"));
        std::fs::write(&cert_path, made.cert.pem()).unwrap();
        std::fs::write(&key_path, made.signing_key.serialize_pem()).unwrap();
        Certificate {
            der: made.cert.der().to_vec(),
            cert_path,
            key_path,
        }
    }

    fn server_toml(&self) -> String {
        format!(
            "[server.tls]\ncert_path = \"{}\"\nkey_path = \"{}\"\n",
            self.cert_path.display(),
            self.key_path.display()
        )
    }
}

impl Drop for Certificate {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.cert_path);
        let _ = std::fs::remove_file(&self.key_path);
    }
}

/// A TLS connection that trusts only `trusted`, offering HTTP/1.1 by ALPN.
fn tls_connect(
    addr: SocketAddr,
    trusted: &[u8],
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(trusted.to_vec()))
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

/// Sends one request on a kept-alive stream and reads its answer (which carries Content-Length).
fn exchange(stream: &mut impl ReadWrite, key: &str, path: &str, body: &str) -> (u16, String) {
    let wire = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nUser-Agent: tls-test\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(wire.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).expect("an answer");
        assert!(n > 0, "closed before a whole answer");
        buf.extend_from_slice(&chunk[..n]);
        let Some(split) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..split]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse().unwrap())
            .expect("a Content-Length");
        if buf.len() >= split + 4 + length {
            let status = head[9..12].parse().unwrap();
            let body = String::from_utf8_lossy(&buf[split + 4..split + 4 + length]).into_owned();
            return (status, body);
        }
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// A gateway serving TLS with a certificate made for `tag`, its CBSS tenants on a sandbox;
/// `server` adds `[server]` keys. (The harness reads the API address from the start-up line's
/// `api=https://`.)
fn start_tls(tag: &str, server: &str) -> (Certificate, Sandbox, Gateway) {
    let certificate = Certificate::generate(tag);
    let sandbox = Sandbox::start();
    let config = format!(
        "{server}{}{}",
        certificate.server_toml(),
        cbss_config(&sandbox, "")
    );
    let gw = Gateway::start(&config, CBSS_ENV);
    (certificate, sandbox, gw)
}

#[test]
fn the_reset_flow_runs_over_tls_on_one_kept_alive_connection() {
    let (certificate, sandbox, gw) = start_tls("flow", "");

    let mut stream = tls_connect(gw.api, &certificate.der);
    let start = start_body("email", EMAIL);
    let (status, body) = exchange(&mut stream, "key-json", "/reset", &start);
    assert_eq!(status, 202, "{body}");
    assert_eq!(stream.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    let reset_id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["reset_id"]
        .as_str()
        .unwrap()
        .to_string();

    // The same connection carries the next step: the code the sandbox sent, then a wrong one.
    let otp = sandbox.last_otp(EMAIL);
    let (status, body) = exchange(
        &mut stream,
        "key-json",
        "/reset/verify",
        &format!(r#"{{"reset_id":"{reset_id}","otp":"{otp}"}}"#),
    );
    assert_eq!(status, 200, "{body}");
    let (status, _) = exchange(&mut stream, "key-json", "/reset", "{");
    assert_eq!(status, 400, "a bad body gets its problem over TLS too");
    gw.assert_logs_clean(&["key-json", &otp]);
}

#[test]
fn a_request_sent_with_the_handshakes_last_flight_is_answered_at_once() {
    // rustls queues what is written before the handshake ends and sends it right after the
    // client's Finished, in the same write: the gateway decrypts the request while finishing the
    // handshake, so nothing is left on the socket to wait for.
    let (certificate, _sandbox, gw) = start_tls("early", "header_timeout_ms = 5000\n");
    let mut stream = tls_connect(gw.api, &certificate.der);
    let wire = "POST /reset HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer key-json\r\n\
                Content-Type: application/json\r\nContent-Length: 1\r\n\r\n{";
    stream.conn.writer().write_all(wire.as_bytes()).unwrap();
    // Were the gateway to wait for more bytes on the socket, its header timeout would close the
    // connection unanswered.
    let mut answer = [0u8; 12];
    stream.read_exact(&mut answer).expect("an answer");
    assert_eq!(&answer, b"HTTP/1.1 400");
}

#[test]
fn plain_http_on_the_tls_port_gets_no_http_answer_and_is_counted() {
    let (certificate, _sandbox, gw) = start_tls("plain", "");

    let mut tcp = TcpStream::connect(gw.api).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer);
    assert!(
        !answer.starts_with(b"HTTP/"),
        "plain HTTP was answered in plain HTTP"
    );
    // The failure is counted as the connection closes: allow the gateway a moment to get there.
    let counted = (0..50).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        metric(gw.admin, "reset_gateway_tls_handshake_failures_total") >= 1.0
    });
    assert!(counted, "the failed handshake is counted");

    // A client that trusts another certificate refuses the gateway's: nothing is exchanged.
    let other = Certificate::generate("other");
    let mut stream = tls_connect(gw.api, &other.der);
    assert!(
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
            .is_err()
            || {
                let mut buf = [0u8; 16];
                stream.read(&mut buf).is_err()
            }
    );
    // The listener still serves a client that trusts the right certificate.
    let mut stream = tls_connect(gw.api, &certificate.der);
    let (status, _) = exchange(&mut stream, "key-json", "/reset", "{");
    assert_eq!(status, 400);
}

#[test]
fn check_config_names_a_missing_certificate_file() {
    let (passed, err) = check_config(
        "[server.tls]\ncert_path = \"/nonexistent/cert.pem\"\nkey_path = \"/nonexistent/key.pem\"\n",
    );
    assert!(!passed);
    assert!(
        err.contains("server.tls.cert_path: cannot read /nonexistent/cert.pem"),
        "{err}"
    );
}
