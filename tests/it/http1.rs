//! The API listener's HTTP/1.1, as clients and proxies in front of the gateway speak it:
//! pipelined and HTTP/1.0 keep-alive requests, `Expect: 100-continue`, HEAD, and heads that are
//! malformed, oversized or framed two ways (request smuggling), each refused with a problem.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::harness::*;

fn connect(gw: &Gateway) -> TcpStream {
    let s = TcpStream::connect(gw.api).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn start_request(extra: &str) -> String {
    let body = start_body("email", EMAIL);
    format!(
        "POST /reset HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer key-json\r\nContent-Type: application/json\r\nUser-Agent: t\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let sandbox = Sandbox::start();
    let gw = Gateway::start(&cbss_config(&sandbox, ""), CBSS_ENV);
    let mut s = connect(&gw);
    let wire = format!(
        "GET /openapi.json HTTP/1.1\r\nHost: gw\r\n\r\n{}GET /nope HTTP/1.1\r\nHost: gw\r\n\r\n",
        start_request("")
    );
    s.write_all(wire.as_bytes()).unwrap();
    let mut reader = BufReader::new(s);
    let first = read_one(&mut reader);
    assert_eq!(first.status, 200);
    assert!(first.json()["openapi"].is_string());
    let second = read_one(&mut reader);
    assert_eq!(
        second.status,
        202,
        "{}",
        String::from_utf8_lossy(&second.body)
    );
    assert!(second.json()["reset_id"].is_string());
    read_one(&mut reader).problem(404, "not_found");
    assert_eq!(sandbox.calls("cbss"), 1);
}

#[test]
fn http_1_0_keep_alive_and_head_requests_are_honoured() {
    let sandbox = Sandbox::start();
    let gw = Gateway::start(&cbss_config(&sandbox, ""), CBSS_ENV);
    let mut s = connect(&gw);
    s.write_all(b"GET /openapi.json HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let r = read_one(&mut reader);
    assert_eq!(
        (r.status, r.header("Connection")),
        (200, Some("keep-alive"))
    );
    // HEAD: the same head, no body (the next response follows at once).
    s.write_all(b"HEAD /openapi.json HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();
    let mut line = String::new();
    let mut length = None;
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.strip_prefix("Content-Length: ") {
            length = Some(v.trim().to_string());
        }
    }
    assert_eq!(length, Some(r.body.len().to_string()));
    // A plain HTTP/1.0 request closes the connection after its answer.
    s.write_all(b"GET /openapi.json HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(read_one(&mut reader).status, 200);
    assert!(closed(&mut reader));
}

#[test]
fn a_client_expecting_100_continue_is_told_to_send_its_body() {
    let sandbox = Sandbox::start();
    let gw = Gateway::start(&cbss_config(&sandbox, ""), CBSS_ENV);
    let mut s = connect(&gw);
    let wire = start_request("Expect: 100-continue\r\n");
    let (head, body) = wire.split_at(wire.find("\r\n\r\n").unwrap() + 4);
    s.write_all(head.as_bytes()).unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, "HTTP/1.1 100 Continue\r\n");
    reader.read_line(&mut line).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    let r = read_one(&mut reader);
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
}

#[test]
fn malformed_oversized_and_smuggling_heads_are_refused_and_the_connection_closed() {
    let sandbox = Sandbox::start();
    let gw = Gateway::start(&cbss_config(&sandbox, ""), CBSS_ENV);
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: gw\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    // Each case with a word of the detail it must be refused for (not another fault it has).
    let cases = [
        ("not http", "GARBAGE\r\n\r\n".to_string(), "HTTP/1"),
        ("too large", huge, "at most 16384 bytes"),
        (
            "two framings",
            // A proxy reading Content-Length would see one request; one reading the chunks,
            // two. Neither may happen: the head is refused and nothing after it is served.
            "POST /reset/verify HTTP/1.1\r\nHost: gw\r\nContent-Length: 48\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /openapi.json HTTP/1.1\r\nHost: gw\r\n\r\n"
                .to_string(),
            "both Transfer-Encoding and Content-Length",
        ),
        (
            "two lengths",
            "POST /reset/verify HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}"
                .to_string(),
            "conflicting Content-Length",
        ),
        (
            "unknown coding",
            "POST /reset/verify HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: gzip\r\n\r\n"
                .to_string(),
            "unsupported Transfer-Encoding",
        ),
        (
            // Two hosts could route one way in a proxy in front and another here.
            "two hosts",
            "GET /openapi.json HTTP/1.1\r\nHost: gw\r\nHost: elsewhere\r\n\r\n".to_string(),
            "Host",
        ),
        (
            "no host",
            "GET /openapi.json HTTP/1.1\r\n\r\n".to_string(),
            "Host",
        ),
        (
            // One field here, two (and a body) in a proxy that ends lines only at CRLF.
            "bare LF",
            "POST /reset/verify HTTP/1.1\r\nHost: gw\r\nX-Note: a\nContent-Length: 2\r\n\r\n{}"
                .to_string(),
            "bare LF",
        ),
    ];
    let cases_count = cases.len();
    for (what, wire, why) in cases {
        let mut s = connect(&gw);
        s.write_all(wire.as_bytes()).unwrap();
        let mut reader = BufReader::new(s);
        let r = read_one(&mut reader);
        let p = r.problem(400, "invalid_request");
        let detail = p["detail"].as_str().unwrap();
        assert!(detail.contains(why), "{what}: {detail}");
        assert_eq!(r.header("Connection"), Some("close"), "{what}");
        assert!(closed(&mut reader), "{what}: nothing more is answered");
    }
    assert_eq!(sandbox.calls("cbss"), 0);
    // The admin listener refuses in plain text, with the fields every answer of it carries.
    let mut s = std::net::TcpStream::connect(gw.admin).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").unwrap();
    let mut reader = BufReader::new(s);
    let r = read_one(&mut reader);
    assert_eq!(r.status, 400);
    assert!(String::from_utf8_lossy(&r.body).contains("Host"));
    assert!(r.header("X-Request-Id").is_some_and(|id| id.len() == 32));
    assert_eq!(r.header("Cache-Control"), Some("no-store"));
    assert!(closed(&mut reader));
    assert_eq!(
        sample(
            gw.admin,
            "reset_gateway_requests_total",
            &[
                ("step", "other"),
                ("tenant", "-"),
                ("vendor", "-"),
                ("code", "invalid_request")
            ]
        ),
        cases_count as f64
    );
}

#[test]
fn a_chunked_request_body_is_read_and_a_broken_one_refused() {
    let sandbox = Sandbox::start();
    let gw = Gateway::start(&cbss_config(&sandbox, ""), CBSS_ENV);
    let body = start_body("email", EMAIL);
    let (a, b) = body.split_at(10);
    let head = "POST /reset HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer key-json\r\nContent-Type: application/json\r\nUser-Agent: t\r\nTransfer-Encoding: chunked\r\n\r\n";
    let wire = format!(
        "{head}{:x}\r\n{a}\r\n{:x};note=1\r\n{b}\r\n0\r\n\r\n",
        a.len(),
        b.len()
    );
    let mut s = connect(&gw);
    s.write_all(wire.as_bytes()).unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let r = read_one(&mut reader);
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    // The same connection goes on with a broken body.
    s.write_all(format!("{head}zz\r\n{a}\r\n0\r\n\r\n").as_bytes())
        .unwrap();
    let p = read_one(&mut reader).problem(400, "invalid_request");
    assert!(p["detail"].as_str().unwrap().contains("chunked"), "{p}");
    assert_eq!(sandbox.calls("cbss"), 1);
}

#[test]
fn a_client_that_never_reads_its_answers_is_dropped_after_the_body_timeout() {
    let sandbox = Sandbox::start();
    let config = format!("body_timeout_ms = 500\n{}", cbss_config(&sandbox, ""));
    let gw = Gateway::start(&config, CBSS_ENV);
    let mut s = connect(&gw);
    // 300 pipelined requests for the 50 KB contract: far more than the sockets can buffer.
    let wire = "GET /openapi.json HTTP/1.1\r\nHost: gw\r\n\r\n".repeat(300);
    s.write_all(wire.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_secs(4));
    // What the kernel buffered can still be read; then the connection ends, and no reading
    // brings more answers: it was dropped, not merely paused.
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    let ended = match s.read_to_end(&mut got) {
        Ok(_) => "closed",
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => "reset",
        Err(e) => panic!(
            "the connection was still open: {e} after {} bytes",
            got.len()
        ),
    };
    let answers = String::from_utf8_lossy(&got)
        .matches("HTTP/1.1 200")
        .count();
    assert!(answers < 300, "{ended} after {answers} answers");
    // The gateway serves others meanwhile and afterwards.
    assert_eq!(
        request(gw.api, "GET", "/openapi.json", &[], b"").status,
        200
    );
}

/// The admin listener answers HEAD as GET, without the body (RFC 9110 section 9.1): probes and
/// monitors that check with HEAD see the real status.
#[test]
fn the_admin_listener_answers_head_as_get() {
    let sandbox = Sandbox::start();
    let gw = Gateway::start(&cbss_config(&sandbox, ""), CBSS_ENV);
    for path in ["/healthz", "/readyz", "/metrics"] {
        let get = request(gw.admin, "GET", path, &[], b"");
        let head = request(gw.admin, "HEAD", path, &[], b"");
        assert_eq!(get.status, 200, "{path}");
        assert_eq!(head.status, get.status, "{path}");
        assert!(head.body.is_empty(), "{path}");
        assert_eq!(
            head.header("Content-Type"),
            get.header("Content-Type"),
            "{path}"
        );
    }
}
