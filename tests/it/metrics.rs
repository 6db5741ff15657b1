//! `/metrics` after known traffic holds exactly the counts that traffic makes.

use crate::harness::*;

#[test]
fn metrics_count_known_traffic_exactly() {
    let sandbox = Sandbox::start();
    let gw = Gateway::start(&cbss_config(&sandbox, ""), CBSS_ENV);
    let first = start_reset(&gw, "key-json", "email", EMAIL);
    start_reset(&gw, "key-json", "mobile", MOBILE);
    let otp = sandbox.last_otp(EMAIL);
    let wrong = wrong_code_for(&otp);
    verify(&gw, "key-json", &first, wrong).problem(422, "invalid_otp");
    assert_eq!(verify(&gw, "key-json", &first, &otp).status, 200);
    gw.post("/reset", "no-such-key", "{}")
        .problem(401, "unauthenticated");
    for _ in 0..5 {
        gw.post(
            "/reset",
            "key-xml",
            r#"{"identifier":{"type":"email","value":"mei@example.com"}}"#,
        );
    }
    gw.post(
        "/reset",
        "key-xml",
        r#"{"identifier":{"type":"email","value":"mei@example.com"}}"#,
    )
    .problem(429, "rate_limited");

    let requests = |step: &str, tenant: &str, vendor: &str, code: &str| {
        sample(
            gw.admin,
            "reset_gateway_requests_total",
            &[
                ("step", step),
                ("tenant", tenant),
                ("vendor", vendor),
                ("code", code),
            ],
        )
    };
    assert_eq!(requests("start", "json", "cbss", "ok"), 2.0);
    assert_eq!(requests("verify", "json", "cbss", "invalid_otp"), 1.0);
    assert_eq!(requests("verify", "json", "cbss", "ok"), 1.0);
    assert_eq!(requests("start", "-", "-", "unauthenticated"), 1.0);
    assert_eq!(requests("start", "xml", "cbss", "ok"), 5.0);
    assert_eq!(requests("start", "xml", "cbss", "rate_limited"), 1.0);

    let duration_count = sample(
        gw.admin,
        "reset_gateway_request_duration_seconds_count",
        &[("step", "start"), ("tenant", "json"), ("vendor", "cbss")],
    );
    assert_eq!(duration_count, 2.0);

    let upstream = |endpoint: &str, class: &str| {
        sample(
            gw.admin,
            "reset_gateway_upstream_requests_total",
            &[
                ("vendor", "cbss"),
                ("endpoint", endpoint),
                ("status_class", class),
            ],
        )
    };
    // 2 starts for json, 5 for xml; 2 verifications (CBSS answers a wrong code with HTTP 200).
    assert_eq!(upstream("1/EmailAddressOrMobilePhoneNumber", "2xx"), 7.0);
    assert_eq!(upstream("2/OTPVerification", "2xx"), 2.0);
    assert_eq!(
        sample(
            gw.admin,
            "reset_gateway_upstream_duration_seconds_count",
            &[("vendor", "cbss"), ("endpoint", "2/OTPVerification")],
        ),
        2.0
    );

    let decisions = |limit: &str, result: &str| {
        sample(
            gw.admin,
            "reset_gateway_limiter_decisions_total",
            &[("limit", limit), ("result", result)],
        )
    };
    assert_eq!(decisions("per-key", "allowed"), 10.0);
    assert_eq!(decisions("per-identifier", "allowed"), 7.0);
    assert_eq!(decisions("per-identifier", "refused"), 1.0);
    // Every code checked holds a per-reset cell while it is (the right one gives it back).
    assert_eq!(decisions("per-reset", "allowed"), 2.0);
    assert_eq!(
        sample(gw.admin, "reset_gateway_inflight_requests", &[]),
        0.0
    );
    assert_eq!(
        sample(
            gw.admin,
            "reset_gateway_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    // No label carries a key, identifier, path or reset id.
    let text = String::from_utf8(request(gw.admin, "GET", "/metrics", &[], b"").body).unwrap();
    for leak in ["key-json", EMAIL, "mei@example.com", MOBILE, &first[..20]] {
        assert!(!text.contains(leak), "{leak} appears in /metrics");
    }
}

#[test]
fn the_outbound_budget_gauges_follow_the_budget() {
    let sandbox = Sandbox::start();
    let config = with_outbound_limit(&capillary_config(&sandbox, ""), "web", 100, 600);
    let gw = Gateway::start(&config, CAPILLARY_ENV);
    let labels = [("connection", "web"), ("vendor", "capillary")];
    // The budget holds a tenth of the vendor's limit at once (limit/vendor_budget.rs).
    assert_eq!(
        sample(gw.admin, "reset_gateway_outbound_budget_quota", &labels),
        10.0
    );
    assert_eq!(
        sample(gw.admin, "reset_gateway_outbound_budget_remaining", &labels),
        10.0
    );
    // Its refill rate is what the alert on sustained use divides by: never faster than the
    // vendor's 100 calls in 600 s, and not far slower (the margin for calls that land late).
    let rate = sample(gw.admin, "reset_gateway_outbound_budget_rate", &labels);
    assert!(
        (0.8 * 100.0 / 600.0..=100.0 / 600.0).contains(&rate),
        "{rate} calls a second"
    );
    let spent = || {
        sample(
            gw.admin,
            "reset_gateway_outbound_budget_spent_total",
            &labels,
        )
    };
    assert_eq!(spent(), 0.0, "counted from zero");
    start_reset(&gw, "key-web", "email", EMAIL);
    assert_eq!(
        sample(gw.admin, "reset_gateway_outbound_budget_remaining", &labels),
        8.0
    );
    assert_eq!(spent(), 2.0, "a Capillary start is two calls");
}

#[test]
fn the_outbound_budget_gauge_refills_while_idle_on_every_connection_of_the_account() {
    let sandbox = Sandbox::start();
    // 20 calls a minute: a burst of 2 (a Capillary start's two calls), and then a cell back
    // every 3.5 s (the minute stretched by its 3-second margin, over the 18 cells that refill):
    // slow enough that a busy machine's scrape still sees the spend.
    let config = with_outbound_limit(&capillary_config(&sandbox, ""), "web", 20, 60);
    let gw = Gateway::start(&config, CAPILLARY_ENV);
    let remaining = |connection| {
        sample(
            gw.admin,
            "reset_gateway_outbound_budget_remaining",
            &[("connection", connection), ("vendor", "capillary")],
        )
    };
    start_reset(&gw, "key-web", "email", EMAIL);
    // The mobile connection is on the same vendor account: it shows what web spent.
    for connection in ["web", "mobile"] {
        let left = remaining(connection);
        assert!(left < 2.0, "{connection} shows {left} left after a spend");
    }
    // Nothing more is spent, and within a few intervals both show the whole burst again (a
    // gauge set only when a step spends would say two calls are spent for as long as it is quiet).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while remaining("web") < 2.0 || remaining("mobile") < 2.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the gauges stayed at web {} and mobile {} while the budget refilled",
            remaining("web"),
            remaining("mobile")
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn requests_in_flight_are_counted_while_they_wait_for_the_vendor() {
    let sandbox = Sandbox::start_with_delay(1_000);
    let gw = Gateway::start(&cbss_config(&sandbox, ""), CBSS_ENV);
    let in_flight = || sample(gw.admin, "reset_gateway_inflight_requests", &[]);
    assert_eq!(in_flight(), 0.0);
    std::thread::scope(|s| {
        let starts: Vec<_> = [EMAIL, "mei@example.com"]
            .into_iter()
            .map(|email| {
                let gw = &gw;
                s.spawn(move || gw.post("/reset", "key-json", &start_body("email", email)))
            })
            .collect();
        // Both are at the slow vendor by now (a scrape is not a request of the API listener).
        std::thread::sleep(std::time::Duration::from_millis(400));
        assert_eq!(in_flight(), 2.0);
        for start in starts {
            assert_eq!(start.join().unwrap().status, 202);
        }
    });
    assert_eq!(in_flight(), 0.0);
}
