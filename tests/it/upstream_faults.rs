//! A misconfigured, stopped or slow vendor: each answered with a clear problem, in bounded time.

use std::time::{Duration, Instant};

use crate::harness::*;

#[test]
fn a_wrong_client_key_gets_the_vendors_refusal_as_a_clear_problem() {
    let sandbox = Sandbox::start();
    let env = [
        ("IT_CBSS_KEY", "not-the-real-key"),
        ("IT_CBSS_LOGIN_SALT", "sandbox-login-salt"),
        ("IT_CBSS_FORGOT_SALT", "sandbox-forgot-salt"),
    ];
    let gw = Gateway::start(&cbss_config(&sandbox, ""), &env);
    let r = gw.post("/reset", "key-json", &start_body("email", EMAIL));
    let p = r.problem(502, "upstream_error");
    assert!(p["detail"].as_str().unwrap().contains("client_key"), "{p}");
    assert_eq!(p["vendor"]["status"], 401);
    assert_eq!(p["vendor"]["code"], "INVALID_SIGNATURE");
    assert!(sandbox.outbox().is_empty());
    gw.assert_logs_clean(&[
        "not-the-real-key",
        "sandbox-login-salt",
        "sandbox-forgot-salt",
    ]);
}

#[test]
fn a_stopped_vendor_is_upstream_unavailable() {
    let mut sandbox = Sandbox::start();
    let gw = Gateway::start(&cbss_config(&sandbox, ""), CBSS_ENV);
    let reset_id = start_reset(&gw, "key-json", "email", EMAIL);
    sandbox.proc.kill();
    let started = Instant::now();
    let r = verify(&gw, "key-json", &reset_id, "123456");
    r.problem(503, "upstream_unavailable");
    assert!(r.header("Retry-After").is_some());
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn a_slow_vendor_is_upstream_timeout_within_the_configured_timeout() {
    let sandbox = Sandbox::start_with_delay(5_000);
    let timeouts = VendorTimeouts {
        read_ms: 400,
        write_ms: 400,
        total_ms: 600,
        ..VendorTimeouts::default()
    };
    let config = cbss_config_timed(&sandbox, timeouts, "");
    let gw = Gateway::start(&config, CBSS_ENV);
    let started = Instant::now();
    let r = gw.post("/reset", "key-json", &start_body("email", EMAIL));
    let elapsed = started.elapsed();
    r.problem(504, "upstream_timeout");
    // Bounded by the configured timeouts, not by the vendor's 5 s delay.
    assert!(elapsed < Duration::from_millis(2_500), "took {elapsed:?}");
}

#[test]
fn a_slow_step_is_bounded_by_the_total_step_timeout() {
    let sandbox = Sandbox::start_with_delay(5_000);
    let timeouts = VendorTimeouts {
        read_ms: 4000,
        write_ms: 4000,
        total_ms: 500,
        ..VendorTimeouts::default()
    };
    let config = cbss_config_timed(&sandbox, timeouts, "");
    let gw = Gateway::start(&config, CBSS_ENV);
    let started = Instant::now();
    let r = gw.post("/reset", "key-json", &start_body("email", EMAIL));
    r.problem(504, "upstream_timeout");
    assert!(started.elapsed() < Duration::from_millis(2_500));
    // The call the step's deadline cut off is counted as the vendor's timeout, with its time:
    // the alerts on a failing or slow vendor read these.
    let labels = [
        ("vendor", "cbss"),
        ("endpoint", "1/EmailAddressOrMobilePhoneNumber"),
    ];
    let class = |class: &str| {
        let mut with_class = labels.to_vec();
        with_class.push(("status_class", class));
        sample(
            gw.admin,
            "reset_gateway_upstream_requests_total",
            &with_class,
        )
    };
    assert_eq!(class("timeout"), 1.0);
    assert_eq!(
        sample(
            gw.admin,
            "reset_gateway_upstream_duration_seconds_count",
            &labels
        ),
        1.0
    );
}

/// A vendor answering with a status HTTP does not have (`000`) is a protocol error at once: not
/// an interim answer to wait past until the read timeout.
#[test]
fn a_status_outside_100_to_599_is_an_upstream_error_not_a_wait() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(4) {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf);
                let _ = stream.write_all(b"HTTP/1.1 000 Nothing\r\nContent-Length: 0\r\n\r\n");
                // Held open: the gateway must not be waiting for more.
                std::thread::sleep(Duration::from_secs(5));
            });
        }
    });
    let config = cbss_tenant_config(
        &format!("http://{addr}/cbss/"),
        "timeouts = { connect_ms = 500, read_ms = 2000, write_ms = 2000, total_ms = 3000 }",
        "DEMO",
        "",
    );
    let gw = Gateway::start(&config, CBSS_ENV);
    let r = gw.post("/reset", "key-c", &start_body("email", EMAIL));
    let p = r.problem(502, "upstream_error");
    assert!(p["detail"].as_str().unwrap().contains("status 0,"), "{p}");
}
