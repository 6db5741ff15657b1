//! The gateway's pool of vendor connections: reused while open, never used once the vendor has
//! closed it, dropped once idle longer than the connection's `idle_ms`.

use std::time::Duration;

use crate::harness::*;

fn connections(gw: &Gateway, reused: &str) -> f64 {
    sample(
        gw.admin,
        "reset_gateway_upstream_connections_total",
        &[("vendor", "cbss"), ("reused", reused)],
    )
}

fn start(gw: &Gateway) {
    let r = gw.post("/reset", "key-json", &start_body("email", EMAIL));
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
}

#[test]
fn calls_one_after_another_share_one_vendor_connection() {
    let sandbox = Sandbox::start();
    let gw = Gateway::start(
        &cbss_config(
            &sandbox,
            "[limits]\nper_identifier = { count = 100, period_secs = 60 }",
        ),
        CBSS_ENV,
    );
    for _ in 0..5 {
        start(&gw);
    }
    assert_eq!(connections(&gw, "false"), 1.0, "one connection was made");
    assert_eq!(
        connections(&gw, "true"),
        4.0,
        "and reused for the next four"
    );
}

#[test]
fn a_connection_the_vendor_closed_while_idle_is_not_used() {
    // This sandbox closes a connection idle for 200 ms, as vendors' servers do after a while.
    let sandbox = Sandbox::start_with(&["--idle-timeout-ms", "200"]);
    let gw = Gateway::start(
        &cbss_config(
            &sandbox,
            "[limits]\nper_identifier = { count = 100, period_secs = 60 }",
        ),
        CBSS_ENV,
    );
    start(&gw);
    std::thread::sleep(Duration::from_millis(600));
    // The pooled connection is closed at the far end: the call must go out on a new one and
    // succeed, not fail (which, for a call that may have reached the vendor, could not be retried).
    start(&gw);
    assert_eq!(connections(&gw, "false"), 2.0);
    assert_eq!(connections(&gw, "true"), 0.0);
}

#[test]
fn a_connection_idle_longer_than_idle_ms_is_not_reused() {
    let sandbox = Sandbox::start();
    let timeouts = VendorTimeouts {
        idle_ms: 200,
        ..VendorTimeouts::default()
    };
    let config = cbss_config_timed(
        &sandbox,
        timeouts,
        "[limits]\nper_identifier = { count = 100, period_secs = 60 }",
    );
    let gw = Gateway::start(&config, CBSS_ENV);
    start(&gw);
    start(&gw);
    assert_eq!(connections(&gw, "true"), 1.0);
    std::thread::sleep(Duration::from_millis(400));
    start(&gw);
    assert_eq!(
        connections(&gw, "false"),
        2.0,
        "the idle connection was dropped"
    );
}

#[test]
fn a_vendor_slower_than_idle_ms_leaves_its_connection_reusable() {
    // Each answer takes a second, twice the connection's idle_ms: a connection is idle from the
    // end of its exchange, not from its start, so the next call (made at once) still reuses it.
    let sandbox = Sandbox::start_with_delay(1000);
    let timeouts = VendorTimeouts {
        idle_ms: 500,
        read_ms: 3000,
        total_ms: 5000,
        ..VendorTimeouts::default()
    };
    let config = cbss_config_timed(
        &sandbox,
        timeouts,
        "[limits]\nper_identifier = { count = 100, period_secs = 60 }",
    );
    let gw = Gateway::start(&config, CBSS_ENV);
    start(&gw);
    start(&gw);
    assert_eq!(connections(&gw, "false"), 1.0);
    assert_eq!(connections(&gw, "true"), 1.0, "the second call reused it");
}

#[test]
fn answers_framed_by_chunks_or_by_closing_are_read_whole() {
    let sandbox = Sandbox::start();
    let gw = Gateway::start(
        &cbss_config(
            &sandbox,
            "[limits]\nper_identifier = { count = 100, period_secs = 60 }",
        ),
        CBSS_ENV,
    );
    start(&gw);
    // The vendor's answer to each start comes in chunks, then without a length: the reset goes
    // on from what each one said.
    for (framing, reused_after) in [("chunked", 1.0), ("close-delimited", 2.0)] {
        sandbox.set_fault(framing);
        let reset_id = start_reset(&gw, "key-json", "email", EMAIL);
        let otp = sandbox.last_otp(EMAIL);
        let r = verify(&gw, "key-json", &reset_id, &otp);
        assert_eq!(
            r.status,
            200,
            "{framing}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(connections(&gw, "true"), reused_after + 1.0, "{framing}");
    }
    // A chunked answer left its connection reusable; one ended by closing did not, so the last
    // verify needed a second connection.
    assert_eq!(connections(&gw, "false"), 2.0);
}

/// The sandbox's chunked answers go only to HTTP/1.1 callers: HTTP/1.0 has no chunked coding
/// (RFC 9112 section 6.1), so a 1.0 caller gets the same answer whole, with its length.
#[test]
fn the_sandbox_sends_chunks_only_to_http_1_1_callers() {
    let sandbox = Sandbox::start();
    let post = |version: &str| {
        sandbox.set_fault("chunked");
        let wire = format!(
            "POST /cbss/unknown HTTP/{version}\r\nHost: sandbox\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{{}}"
        );
        raw(sandbox.addr, wire.as_bytes())
    };
    let chunked = post("1.1");
    assert_eq!(chunked.header("Transfer-Encoding"), Some("chunked"));
    let whole = post("1.0");
    assert_eq!(whole.header("Transfer-Encoding"), None);
    assert_eq!(
        whole.header("Content-Length"),
        Some(whole.body.len().to_string().as_str())
    );
    assert!(!whole.body.is_empty());
    assert_eq!(whole.status, chunked.status);
}

/// The calls on `connection` (of `vendor`) that waited for a vendor connection, by `outcome`.
fn connection_waits(gw: &Gateway, connection: &str, vendor: &str, outcome: &str) -> f64 {
    sample(
        gw.admin,
        "reset_gateway_upstream_waits_total",
        &[
            ("connection", connection),
            ("vendor", vendor),
            ("outcome", outcome),
        ],
    )
}

/// `connection_waits` on the CBSS connection `json`.
fn waits(gw: &Gateway, outcome: &str) -> f64 {
    connection_waits(gw, "json", "cbss", outcome)
}

/// A gateway whose connection `json` may hold one vendor connection, on a sandbox that takes
/// `delay_ms` to answer, with `timeouts` and limits out of the way.
fn one_connection_gateway(delay_ms: u64, timeouts: VendorTimeouts) -> (Sandbox, Gateway) {
    let sandbox = Sandbox::start_with_delay(delay_ms);
    let config = cbss_config_timed(
        &sandbox,
        timeouts,
        "[limits]\nper_identifier = { count = 100, period_secs = 60 }",
    );
    let config = with_connection_setting(&config, "json", "max_connections = 1");
    let gw = Gateway::start(&config, CBSS_ENV);
    (sandbox, gw)
}

#[test]
fn calls_past_max_connections_wait_for_a_connection_and_share_it() {
    // Each answer takes 500 ms. Three starts at once on a connection allowed one vendor
    // connection: the first opens it, the others wait their turn (within connect_ms) and go out
    // on it after the one before, so the vendor sees one connection, not three.
    let timeouts = VendorTimeouts {
        connect_ms: 4000,
        read_ms: 3000,
        total_ms: 8000,
        ..VendorTimeouts::default()
    };
    let (sandbox, gw) = one_connection_gateway(500, timeouts);
    assert_eq!(waits(&gw, "served"), 0.0, "counted from zero");
    let all_ready = std::sync::Barrier::new(3);
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                all_ready.wait();
                start(&gw);
            });
        }
    });
    assert_eq!(connections(&gw, "false"), 1.0, "one connection was made");
    assert_eq!(connections(&gw, "true"), 2.0, "and carried the other two");
    assert_eq!(waits(&gw, "served"), 2.0, "two calls waited for it");
    assert_eq!(waits(&gw, "gave_up"), 0.0);
    assert_eq!(sandbox.calls("cbss"), 3);
}

/// Sends a start once another is in flight and has had time to take the connection (its step
/// takes no time before its vendor call: the in-memory limits answer at once).
fn start_while_another_is_in_flight(gw: &Gateway) -> Response {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while sample(gw.admin, "reset_gateway_inflight_requests", &[]) < 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the first start never began"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(100));
    gw.post("/reset", "key-json", &start_body("email", EMAIL))
}

#[test]
fn a_call_that_finds_every_connection_busy_past_connect_ms_is_not_sent() {
    // The one connection allowed is busy for 2 s; a second start waits connect_ms (300 ms) for
    // it, then answers 503 to retry without having called the vendor.
    let timeouts = VendorTimeouts {
        connect_ms: 300,
        read_ms: 4000,
        total_ms: 6000,
        ..VendorTimeouts::default()
    };
    let (sandbox, gw) = one_connection_gateway(2000, timeouts);
    let busy = std::thread::scope(|s| {
        let first = s.spawn(|| start(&gw));
        let busy = start_while_another_is_in_flight(&gw);
        first.join().unwrap();
        busy
    });
    let body = busy.problem(503, "upstream_unavailable");
    assert_eq!(busy.header("Retry-After"), Some("1"));
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("every connection the gateway may open to cbss stayed busy"),
        "{body}"
    );
    assert_eq!(
        sandbox.calls("cbss"),
        1,
        "the second start never reached it"
    );
    assert_eq!(waits(&gw, "gave_up"), 1.0);
    assert_eq!(waits(&gw, "served"), 0.0);
    // Once the connection is free again, the next start goes out on it.
    start(&gw);
    assert_eq!(connections(&gw, "false"), 1.0);
}

#[test]
fn a_call_cut_off_by_its_step_frees_its_connection() {
    // Each answer takes 1.5 s, past the step's 500 ms: the start is cut off mid-call, and the
    // connection it held must be free for the next start at once (which waits for nothing and
    // reaches the vendor), not held until connect_ms says busy.
    let timeouts = VendorTimeouts {
        connect_ms: 400,
        read_ms: 3000,
        total_ms: 500,
        ..VendorTimeouts::default()
    };
    let (_sandbox, gw) = one_connection_gateway(1500, timeouts);
    for _ in 0..2 {
        let r = gw.post("/reset", "key-json", &start_body("email", EMAIL));
        r.problem(504, "upstream_timeout");
    }
    assert_eq!(
        waits(&gw, "gave_up") + waits(&gw, "served"),
        0.0,
        "the second start found the connection free"
    );
    assert_eq!(
        connections(&gw, "false"),
        2.0,
        "each start made a connection (one cut off mid-answer is not reused)"
    );
}

#[test]
fn a_step_of_two_calls_holds_one_connection_for_both() {
    // Capillary's start is two calls (token, then OTP), each answered after 300 ms, on a
    // connection allowed one vendor connection. Two starts at once: the second waits once, for
    // the whole of the first, and then makes both its calls. Had each call queued for the
    // connection on its own, the first start's second call would have waited behind the
    // second start's first, and the second's behind that: three waits, and a start could give
    // up between its token and its code.
    let sandbox = Sandbox::start_with_delay(300);
    let config = capillary_config(&sandbox, "").replace(
        "timeouts = { connect_ms = 500, read_ms = 2000, write_ms = 2000, total_ms = 3000 }",
        "timeouts = { connect_ms = 3000, read_ms = 2000, write_ms = 2000, total_ms = 6000 }",
    );
    assert!(config.contains("connect_ms = 3000"));
    let config = with_connection_setting(&config, "web", "max_connections = 1");
    let gw = Gateway::start(&config, CAPILLARY_ENV);
    let all_ready = std::sync::Barrier::new(2);
    let answers: Vec<Response> = std::thread::scope(|s| {
        let starts: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    all_ready.wait();
                    gw.post("/reset", "key-web", &start_body("email", EMAIL))
                })
            })
            .collect();
        starts.into_iter().map(|t| t.join().unwrap()).collect()
    });
    for answer in &answers {
        assert_eq!(
            answer.status,
            202,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
    }
    let waits = |outcome: &str| connection_waits(&gw, "web", "capillary", outcome);
    assert_eq!(waits("served"), 1.0, "one start waited, once");
    assert_eq!(waits("gave_up"), 0.0);
    assert_eq!(sandbox.calls("capillary"), 4);
}
