//! SIGTERM with requests in flight against a slow vendor: each one completes, new connections are
//! refused, idle kept-alive ones are closed, and the process exits 0 inside the grace period.

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::harness::*;

#[test]
fn sigterm_drains_in_flight_requests_then_exits_0() {
    let sandbox = Sandbox::start_with_delay(1_500);
    // The vendor's read timeout well past its 1.5 s delay: on a loaded machine 2 s left too
    // little room (a CI run saw a 504), and this test is about draining, not timeouts. The
    // step's total stays inside the 5 s grace.
    let timeouts = VendorTimeouts {
        read_ms: 4000,
        total_ms: 4500,
        ..VendorTimeouts::default()
    };
    let config = format!(
        "shutdown_grace_secs = 5\n{}",
        cbss_config_timed(&sandbox, timeouts, "")
    );
    let mut gw = Gateway::start(&config, CBSS_ENV);
    // A kept-alive connection, idle once its request is answered, as a proxy in front pools.
    let mut idle = TcpStream::connect(gw.api).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    idle.write_all(b"GET /openapi.json HTTP/1.1\r\nHost: gw\r\n\r\n")
        .unwrap();
    let mut idle = BufReader::new(idle);
    assert_eq!(read_one(&mut idle).status, 200);
    let body = |email: &str| start_body("email", email);
    let signalled = std::thread::scope(|s| {
        let in_flight: Vec<_> = [EMAIL, "mei@example.com", "nobody@example.com"]
            .into_iter()
            .map(|email| {
                let gw = &gw;
                s.spawn(move || gw.post("/reset", "key-json", &body(email)))
            })
            .collect();
        // Let the three requests reach the slow vendor, then ask the gateway to stop.
        std::thread::sleep(Duration::from_millis(400));
        gw.proc.signal("TERM");
        let signalled = Instant::now();
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            TcpStream::connect(gw.api).is_err(),
            "new connections are refused while draining"
        );
        // Closed while the requests in flight are still at the slow vendor: a request sent on
        // it could otherwise start after they finished, and be cut off at exit.
        assert!(closed(&mut idle), "an idle connection is closed on SIGTERM");
        assert!(signalled.elapsed() < Duration::from_millis(1_000));
        for request in in_flight {
            let r = request.join().unwrap();
            assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
        }
        signalled
    });
    let code = gw.proc.wait_for_exit(Duration::from_secs(5));
    assert_eq!(code, Some(0), "exit 0 inside the grace period");
    assert!(signalled.elapsed() < Duration::from_secs(5));
    assert!(
        gw.proc.logs().contains("every request finished"),
        "{}",
        gw.proc.logs()
    );
}

#[test]
fn sigterm_with_nothing_in_flight_exits_at_once() {
    let sandbox = Sandbox::start();
    let mut gw = Gateway::start(&cbss_config(&sandbox, ""), CBSS_ENV);
    let started = Instant::now();
    gw.proc.signal("TERM");
    assert_eq!(gw.proc.wait_for_exit(Duration::from_secs(5)), Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn sigterm_keeps_the_in_process_sandbox_serving_the_requests_still_in_flight() {
    // The demo config: tenants on the sandbox vendors the gateway runs itself. A request in
    // flight when SIGTERM comes may call its vendor only afterwards, and that vendor must still
    // answer, or the drain would fail the very requests it waits for.
    let mut gw = Gateway::start(&default_config_on_free_ports(), &[]);
    let key = "demo-cbss-key";
    remember_secret(key);
    let body = start_body("email", EMAIL);
    let (first_half, second_half) = body.split_at(body.len() / 2);
    let mut conn = TcpStream::connect(gw.api).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        conn,
        "POST /reset HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{first_half}",
        body.len()
    )
    .unwrap();
    // The head is in, so the request is in flight; the vendor has not been called (the body is
    // not whole), and no connection to the sandbox is open yet.
    std::thread::sleep(Duration::from_millis(300));
    gw.proc.signal("TERM");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        TcpStream::connect(gw.api).is_err(),
        "the API stops taking connections while draining"
    );
    conn.write_all(second_half.as_bytes()).unwrap();
    let answer = read_one(&mut BufReader::new(conn));
    assert_eq!(
        answer.status,
        202,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert!(answer.json()["reset_id"].is_string());
    assert_eq!(gw.proc.wait_for_exit(Duration::from_secs(10)), Some(0));
}

#[test]
fn a_request_whose_head_is_still_arriving_at_sigterm_is_answered() {
    // A head split across packets (a long Authorization, a slow link): its first part is in when
    // SIGTERM comes, the rest after. The drain must wait for it and answer it, not exit with the
    // connection's half a head unanswered.
    let sandbox = Sandbox::start();
    let mut gw = Gateway::start(&cbss_config(&sandbox, ""), CBSS_ENV);
    let body = start_body("email", EMAIL);
    let wire = format!(
        "POST /reset HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer key-json\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    remember_secret("key-json");
    let (first_part, rest) = wire.split_at(wire.find("Authorization").unwrap() + 20);
    let mut conn = TcpStream::connect(gw.api).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn.write_all(first_part.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    gw.proc.signal("TERM");
    std::thread::sleep(Duration::from_millis(300));
    conn.write_all(rest.as_bytes()).unwrap();
    let mut reader = BufReader::new(conn);
    let answer = read_one(&mut reader);
    assert_eq!(
        answer.status,
        202,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.header("Connection"), Some("close"));
    assert!(closed(&mut reader));
    assert_eq!(gw.proc.wait_for_exit(Duration::from_secs(10)), Some(0));
}

#[test]
fn an_answer_given_before_its_body_was_read_survives_the_drain() {
    // A body refused by its Content-Length is answered at once, while the client is still
    // sending it. SIGTERM comes during the lingering close that follows: the process must keep
    // draining the client's bytes until it stops, not exit and have the kernel reset the
    // connection under a client that has not read its answer yet.
    let sandbox = Sandbox::start();
    let mut gw = Gateway::start(&cbss_config(&sandbox, ""), CBSS_ENV);
    remember_secret("key-json");
    let mut conn = TcpStream::connect(gw.api).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let piece = "a".repeat(1_000);
    write!(
        conn,
        "POST /reset HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer key-json\r\n\
         Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n{piece}"
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    gw.proc.signal("TERM");
    for n in 0..8 {
        std::thread::sleep(Duration::from_millis(100));
        conn.write_all(piece.as_bytes())
            .unwrap_or_else(|e| panic!("write {n} after SIGTERM: the connection was reset: {e}"));
    }
    conn.shutdown(std::net::Shutdown::Write).unwrap();
    let mut reader = BufReader::new(conn);
    read_one(&mut reader).problem(413, "payload_too_large");
    assert!(closed(&mut reader));
    assert_eq!(gw.proc.wait_for_exit(Duration::from_secs(10)), Some(0));
}

#[test]
fn a_stray_line_end_after_a_request_does_not_hold_up_the_drain() {
    // Some clients end a request with an extra CRLF. The connection is idle all the same, and
    // SIGTERM's drain closes it at once instead of waiting out the header timeout (10 s here)
    // for a head that is not coming.
    let sandbox = Sandbox::start();
    let mut gw = Gateway::start(&cbss_config(&sandbox, ""), CBSS_ENV);
    let mut conn = TcpStream::connect(gw.api).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    remember_secret("key-json");
    conn.write_all(
        b"POST /reset/verify HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer key-json\r\n\
          Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}\r\n",
    )
    .unwrap();
    let mut reader = BufReader::new(conn);
    let answer = read_one(&mut reader);
    answer.problem(400, "invalid_request");
    assert_eq!(answer.header("Connection"), None, "kept alive");
    let signalled = Instant::now();
    gw.proc.signal("TERM");
    assert!(closed(&mut reader));
    assert_eq!(gw.proc.wait_for_exit(Duration::from_secs(15)), Some(0));
    assert!(
        signalled.elapsed() < Duration::from_secs(3),
        "the idle connection held the drain for {:?}",
        signalled.elapsed()
    );
}

#[test]
fn requests_already_sent_when_sigterm_comes_are_answered() {
    // Many kept-alive connections each send a request at once, and SIGTERM follows: a request
    // in the socket before the drain begins must be answered, even when the worker threads,
    // busy with the others, had not yet seen it arrive. Closed unread, it would get a reset.
    let sandbox = Sandbox::start();
    let mut gw = Gateway::start(&cbss_config(&sandbox, ""), CBSS_ENV);
    remember_secret("key-json");
    let body = r#"{"reset_id":"not-a-reset","otp":"123456"}"#;
    let wire = format!(
        "POST /reset/verify HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer key-json\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    // Each connection kept alive by one request answered already, so each is idle now.
    let mut readers: Vec<BufReader<TcpStream>> = (0..200)
        .map(|_| {
            let mut conn = TcpStream::connect(gw.api).unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            conn.write_all(wire.as_bytes()).unwrap();
            let mut reader = BufReader::new(conn);
            read_one(&mut reader).problem(400, "invalid_reset_id");
            reader
        })
        .collect();
    for reader in &mut readers {
        reader.get_mut().write_all(wire.as_bytes()).unwrap();
    }
    gw.proc.signal("TERM");
    for (n, reader) in readers.iter_mut().enumerate() {
        let answer = read_one(reader);
        assert_eq!(answer.status, 400, "connection {n}");
    }
    // Closed by the clients too, so that no connection's lingering close holds the exit.
    drop(readers);
    assert_eq!(gw.proc.wait_for_exit(Duration::from_secs(10)), Some(0));
}
