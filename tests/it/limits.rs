//! The gateway's rate limits: per API key, per identifier, wrong codes per reset, and the outbound
//! budget per vendor connection, with the IETF RateLimit fields.

use std::time::Instant;

use crate::harness::*;

const CHEAP: &str = r#"{"reset_id":"not-a-reset","otp":"123456"}"#;

#[test]
fn the_1001st_request_of_a_key_is_refused_while_another_key_is_served() {
    let sandbox = Sandbox::start();
    let gw = Gateway::start(&capillary_config(&sandbox, ""), CAPILLARY_ENV);
    let started = Instant::now();
    // 1000 requests as fast as four clients can send them: all inside the burst.
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..250 {
                    let r = gw.post("/reset/verify", "key-web", CHEAP);
                    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
                }
            });
        }
    });
    // GCRA gives a cell back every 60 ms: the next refusal comes within those returned cells.
    let mut extra = 0u128;
    let refused = loop {
        let r = gw.post("/reset/verify", "key-web", CHEAP);
        if r.status == 429 {
            break r;
        }
        extra += 1;
        assert!(extra < 1000, "never refused");
    };
    let elapsed_ms = started.elapsed().as_millis();
    assert!(
        extra <= elapsed_ms / 60 + 1,
        "{extra} more in {elapsed_ms} ms"
    );

    let p = refused.problem(429, "rate_limited");
    assert_eq!(p["limit"], "per-key");
    assert_eq!(
        refused.header("RateLimit-Policy"),
        Some("\"per-key\";q=1000;w=60")
    );
    assert_eq!(refused.header("RateLimit"), Some("\"per-key\";r=0;t=1"));
    assert_eq!(refused.header("Retry-After"), Some("1"));

    let other = gw.post("/reset/verify", "key-mobile", CHEAP);
    assert_eq!(other.status, 400);
    assert_eq!(
        other.header("RateLimit-Policy"),
        Some("\"per-key\";q=1000;w=60")
    );
    assert_eq!(other.header("RateLimit"), Some("\"per-key\";r=999;t=1"));
    assert_eq!(sandbox.calls("capillary"), 0);
}

#[test]
fn successful_answers_carry_ratelimit_and_limits_follow_the_config() {
    let sandbox = Sandbox::start();
    let extra = format!(
        r#"
[[tenants]]
name = "small"
connection = "web"
per_key_limit = {{ count = 3, period_secs = 30 }}
api_keys = [
  {{ name = "a", key_sha256 = "{a}" }},
  {{ name = "b", key_sha256 = "{b}", limit = {{ count = 2, period_secs = 10 }} }},
]
"#,
        a = sha256_hex("key-small-a"),
        b = sha256_hex("key-small-b"),
    );
    let gw = Gateway::start(&capillary_config(&sandbox, &extra), CAPILLARY_ENV);
    let r = gw.post("/reset", "key-small-a", &start_body("email", EMAIL));
    assert_eq!(r.status, 202);
    assert_eq!(r.header("RateLimit-Policy"), Some("\"per-key\";q=3;w=30"));
    assert_eq!(r.header("RateLimit"), Some("\"per-key\";r=2;t=10"));
    assert_eq!(gw.post("/reset/verify", "key-small-b", CHEAP).status, 400);
    let r = gw.post("/reset/verify", "key-small-b", CHEAP);
    assert_eq!(r.header("RateLimit"), Some("\"per-key\";r=0;t=10"));
    let refused = gw.post("/reset/verify", "key-small-b", CHEAP);
    refused.problem(429, "rate_limited");
    assert_eq!(
        refused.header("RateLimit-Policy"),
        Some("\"per-key\";q=2;w=10")
    );
    assert_eq!(refused.header("Retry-After"), Some("5"));
}

#[test]
fn the_6th_start_for_one_identifier_is_refused() {
    let sandbox = Sandbox::start();
    let gw = Gateway::start(&capillary_config(&sandbox, ""), CAPILLARY_ENV);
    let body = |email: &str| start_body("email", email);
    for _ in 0..5 {
        assert_eq!(gw.post("/reset", "key-web", &body(EMAIL)).status, 202);
    }
    let calls = sandbox.calls("capillary");
    // The same person by another spelling of the address is the same identifier.
    let r = gw.post("/reset", "key-web", &body("SomChai@Example.com"));
    let p = r.problem(429, "rate_limited");
    assert_eq!(p["limit"], "per-identifier");
    assert_eq!(
        r.header("RateLimit-Policy"),
        Some("\"per-key\";q=1000;w=60, \"per-identifier\";q=5;w=900")
    );
    let state = r.header("RateLimit").unwrap();
    assert!(
        state.starts_with("\"per-key\";r=99") && state.ends_with(", \"per-identifier\";r=0;t=180"),
        "{state}"
    );
    assert_eq!(r.header("Retry-After"), Some("180"));
    assert_eq!(
        sandbox.calls("capillary"),
        calls,
        "refused without a vendor call"
    );
    // Another person is still served, and so is the same person under another tenant.
    assert_eq!(
        gw.post("/reset", "key-web", &body("mei@example.com"))
            .status,
        202
    );
    assert_eq!(gw.post("/reset", "key-mobile", &body(EMAIL)).status, 202);
}

#[test]
fn the_6th_wrong_otp_is_refused_even_with_a_fresh_otp_in_between() {
    let sandbox = Sandbox::start();
    let gw = Gateway::start(&capillary_config(&sandbox, ""), CAPILLARY_ENV);
    let first = start_reset(&gw, "key-web", "email", EMAIL);
    let wrong = |otp: &str| if otp == "000000" { "111111" } else { "000000" }.to_string();
    let otp = sandbox.last_otp(EMAIL);
    for _ in 0..3 {
        verify(&gw, "key-web", &first, &wrong(&otp)).problem(422, "invalid_otp");
    }
    // A new reset sends a fresh code (and resets Capillary's own retry count, not the gateway's).
    let second = start_reset(&gw, "key-web", "email", EMAIL);
    let fresh = sandbox.last_otp(EMAIL);
    for _ in 0..2 {
        verify(&gw, "key-web", &second, &wrong(&fresh)).problem(422, "invalid_otp");
    }
    let calls = sandbox.calls("capillary");
    let r = verify(&gw, "key-web", &second, &fresh);
    let p = r.problem(429, "attempts_exceeded");
    assert_eq!(p["limit"], "per-reset");
    assert!(r.header("Retry-After").is_some());
    assert!(r
        .header("RateLimit-Policy")
        .unwrap()
        .contains("\"per-reset\";q=5;w=3000"));
    assert_eq!(
        sandbox.calls("capillary"),
        calls,
        "the 6th attempt never reached the vendor"
    );
}

#[test]
fn only_wrong_codes_and_answers_that_may_hide_one_keep_their_cells() {
    let sandbox = Sandbox::start();
    let gw = Gateway::start(&capillary_config(&sandbox, ""), CAPILLARY_ENV);
    let wrong = |otp: &str| if otp == "000000" { "111111" } else { "000000" }.to_string();
    let first = start_reset(&gw, "key-web", "email", EMAIL);
    let otp = sandbox.last_otp(EMAIL);
    // Six answers that judged no code wrong (the vendor's session expired) cost the person nothing.
    for _ in 0..6 {
        sandbox.force_capillary_status(1505);
        verify(&gw, "key-web", &first, &otp).problem(410, "reset_expired");
    }
    // An answer the gateway cannot map may be a wrong code under another name: it keeps its cell,
    // or a vendor that says so could be asked without limit.
    sandbox.force_capillary_status(1999);
    verify(&gw, "key-web", &first, &otp).problem(502, "upstream_error");
    for _ in 0..3 {
        verify(&gw, "key-web", &first, &wrong(&otp)).problem(422, "invalid_otp");
    }
    assert_eq!(verify(&gw, "key-web", &first, &otp).status, 200);
    // The right code gave its cell back: a new reset has one wrong code left, and no more.
    let second = start_reset(&gw, "key-web", "email", EMAIL);
    let fresh = sandbox.last_otp(EMAIL);
    verify(&gw, "key-web", &second, &wrong(&fresh)).problem(422, "invalid_otp");
    verify(&gw, "key-web", &second, &fresh).problem(429, "attempts_exceeded");
}

#[test]
fn the_outbound_budget_never_lets_a_vendor_counting_any_window_throttle_the_gateway() {
    // Capillary takes 10 calls in any 2 s, counted as they arrive (the sandbox's sliding window,
    // the strictest reading of "10 per 2 s"), and the connection's budget says 10 per 2 s. Starts
    // go one after another as fast as they are served, for 5 s: the budget refuses some itself
    // (503, limit outbound), and Capillary must never throttle the gateway. A budget spent as a
    // plain GCRA quota of 10 per 2 s sends 20 calls in the first 2 s, and fails here.
    let sandbox = Sandbox::start_with(&[
        "--capillary-rate-limit",
        "10",
        "--capillary-rate-window-secs",
        "2",
    ]);
    let config = with_outbound_limit(
        &capillary_config(
            &sandbox,
            "[limits]\nper_identifier = { count = 100, period_secs = 900 }\n",
        ),
        "web",
        10,
        2,
    );
    let gw = Gateway::start(&config, CAPILLARY_ENV);
    let customers = [EMAIL, "mei@example.com", "locked@example.com"];
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let (mut served, mut refused) = (0, 0);
    while std::time::Instant::now() < until {
        let email = customers[(served + refused) % customers.len()];
        let r = gw.post("/reset", "key-web", &start_body("email", email));
        if r.status == 202 {
            served += 1;
            continue;
        }
        let p = r.problem(503, "upstream_unavailable");
        assert_eq!(
            p["limit"], "outbound",
            "Capillary throttled the gateway: {p}"
        );
        refused += 1;
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The budget: two calls at once, then one every 0.625 s (8 over 2 s and the connection's
    // 3 s time limit as the margin): one start, then one every 1.25 s.
    assert!(served >= 3, "served {served}, refused {refused}");
    assert!(refused > 0, "the budget was never spent: served {served}");
}

#[test]
fn a_vendor_throttling_verifications_costs_the_person_no_codes() {
    // Capillary takes three calls a minute: the start spends two, and one wrong code the third.
    let sandbox = Sandbox::start_with(&["--capillary-rate-limit", "3"]);
    let gw = Gateway::start(&capillary_config(&sandbox, ""), CAPILLARY_ENV);
    let reset_id = start_reset(&gw, "key-web", "email", EMAIL);
    let otp = sandbox.last_otp(EMAIL);
    let wrong = wrong_code_for(&otp);
    verify(&gw, "key-web", &reset_id, wrong).problem(422, "invalid_otp");
    // Four codes are left. Throttled answers judged none of the six codes sent here: were they
    // charged, the fifth would already be refused as too many attempts.
    for attempt in 0..6 {
        let r = verify(&gw, "key-web", &reset_id, wrong);
        let p = r.problem(503, "upstream_unavailable");
        assert_eq!(p["vendor"]["status"], 429, "attempt {attempt}: {p}");
    }
}

#[test]
fn concurrent_guesses_at_one_reset_cannot_share_its_last_codes() {
    // The vendor takes a while to answer, so all the guesses are in flight together.
    let sandbox = Sandbox::start_with_delay(300);
    let gw = Gateway::start(&capillary_config(&sandbox, ""), CAPILLARY_ENV);
    let reset_id = start_reset(&gw, "key-web", "email", EMAIL);
    let otp = sandbox.last_otp(EMAIL);
    let wrong = wrong_code_for(&otp);
    let calls = sandbox.calls("capillary");
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let guesses: Vec<_> = (0..12)
            .map(|_| s.spawn(|| verify(&gw, "key-web", &reset_id, wrong).status))
            .collect();
        guesses.into_iter().map(|g| g.join().unwrap()).collect()
    });
    assert_eq!(
        sandbox.calls("capillary") - calls,
        5,
        "only as many guesses as the reset has codes reach the vendor: {statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&s| s == 429).count(),
        7,
        "{statuses:?}"
    );
}

#[test]
fn the_outbound_budget_refuses_without_calling_the_vendor() {
    let sandbox = Sandbox::start();
    // Tenant `quiet` is on the same connection, and hides its vendor.
    let quiet = format!(
        "[[tenants]]\nname = \"quiet\"\nconnection = \"web\"\nvendor_details = false\n\
         api_keys = [{{ name = \"k\", key_sha256 = \"{}\" }}]\n",
        sha256_hex("key-quiet")
    );
    let config = with_outbound_limit(&capillary_config(&sandbox, &quiet), "web", 30, 600);
    let gw = Gateway::start(&config, CAPILLARY_ENV);
    // The budget bursts a tenth of the limit, 3 calls, and then one call every 22.4 s (27 over
    // 600 s and a 6 s margin): never more than 30 in any 600 s.
    let reset_id = start_reset(&gw, "key-web", "email", EMAIL);
    assert_eq!(sandbox.calls("capillary"), 2);
    // A start needs two calls and one is left: refused whole, nothing half done at the vendor.
    let r = gw.post(
        "/reset",
        "key-web",
        r#"{"identifier":{"type":"email","value":"mei@example.com"}}"#,
    );
    let p = r.problem(503, "upstream_unavailable");
    assert_eq!(p["limit"], "outbound");
    let retry: u64 = r.header("Retry-After").unwrap().parse().unwrap();
    assert!((20..=23).contains(&retry), "Retry-After: {retry}");
    assert_eq!(sandbox.calls("capillary"), 2);
    // One call is left: a verify fits, and then the budget is spent.
    let otp = sandbox.last_otp(EMAIL);
    assert_eq!(verify(&gw, "key-web", &reset_id, &otp).status, 200);
    assert_eq!(sandbox.calls("capillary"), 3);
    let again = verify(&gw, "key-web", &reset_id, &otp);
    again.problem(503, "upstream_unavailable");
    assert_eq!(sandbox.calls("capillary"), 3);
    // The mobile connection is the same account (the same API key at the same host), which
    // Capillary counts as one: it spends the same budget, though it sets no limit of its own.
    let r = gw.post("/reset", "key-mobile", &start_body("email", EMAIL));
    assert_eq!(r.problem(503, "upstream_unavailable")["limit"], "outbound");
    let policy = r.header("RateLimit-Policy").unwrap_or_default();
    assert!(policy.contains("\"outbound\";q="), "{policy}");
    assert_eq!(sandbox.calls("capillary"), 3);
    // The budget's quota is the vendor's own: a tenant that hides its vendor is told when to
    // come back, and neither the limit's name nor its quota.
    let r = gw.post("/reset", "key-quiet", &start_body("email", EMAIL));
    let p = r.problem(503, "upstream_unavailable");
    assert!(p.get("limit").is_none(), "{p}");
    assert!(r.header("Retry-After").is_some());
    let policy = r.header("RateLimit-Policy").unwrap_or_default();
    assert!(
        policy.contains("per-key") && !policy.contains("outbound"),
        "{policy}"
    );
    assert!(!r
        .header("RateLimit")
        .unwrap_or_default()
        .contains("outbound"));
    assert_eq!(sandbox.calls("capillary"), 3);
}

#[test]
fn another_vendor_account_has_a_budget_of_its_own() {
    let sandbox = Sandbox::start();
    // The mobile connection on an API key of its own (one the sandbox does not know: what
    // matters here is whether the gateway calls at all).
    let config = with_outbound_limit(&capillary_config(&sandbox, ""), "web", 30, 600);
    let at = config.rfind("IT_CAPILLARY_KEY").unwrap();
    let config = format!(
        "{}IT_OTHER_CAPILLARY_KEY{}",
        &config[..at],
        &config[at + 16..]
    );
    let env = [
        CAPILLARY_ENV,
        &[("IT_OTHER_CAPILLARY_KEY", "another-capillary-key")],
    ]
    .concat();
    let gw = Gateway::start(&config, &env);
    start_reset(&gw, "key-web", "email", EMAIL);
    let r = gw.post(
        "/reset",
        "key-web",
        r#"{"identifier":{"type":"email","value":"mei@example.com"}}"#,
    );
    assert_eq!(r.problem(503, "upstream_unavailable")["limit"], "outbound");
    assert_eq!(sandbox.calls("capillary"), 2);
    let r = gw.post("/reset", "key-mobile", &start_body("email", EMAIL));
    assert_ne!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        sandbox.calls("capillary") > 2,
        "the other account's call was not made"
    );
}

#[test]
fn an_identifiers_limit_is_decided_when_the_body_has_arrived() {
    // One start per identifier every 2 s. The second start's head arrives at once and its body
    // 2.3 s later: by the time the gateway can act on it the identifier's cell has come back, so
    // it is served. Deciding as of the head's arrival would refuse it.
    let sandbox = Sandbox::start();
    let gw = Gateway::start(
        &cbss_config(
            &sandbox,
            "[limits]\nper_identifier = { count = 1, period_secs = 2 }",
        ),
        CBSS_ENV,
    );
    let body = start_body("email", EMAIL);
    assert_eq!(gw.post("/reset", "key-json", &body).status, 202);

    let mut slow = std::net::TcpStream::connect(gw.api).unwrap();
    slow.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let head = format!(
        "POST /reset HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer key-json\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    std::io::Write::write_all(&mut slow, head.as_bytes()).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2300));
    std::io::Write::write_all(&mut slow, body.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = std::io::Read::read_to_end(&mut slow, &mut answer);
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 202"), "{text}");

    // The limit is live: a third start straight after is refused.
    let r = gw.post("/reset", "key-json", &body);
    assert_eq!(r.problem(429, "rate_limited")["limit"], "per-identifier");
}

#[test]
fn a_request_the_vendor_could_never_take_is_refused_before_any_limit_or_budget() {
    // CBSS resets by email or mobile only. A start by username is answered 400 by the gateway
    // itself: it must not spend the outbound budget real starts need (here one call a minute),
    // nor the identifier's allowance.
    let sandbox = Sandbox::start();
    let config = with_outbound_limit(&cbss_config(&sandbox, ""), "json", 2, 60);
    let gw = Gateway::start(&config, CBSS_ENV);
    for _ in 0..7 {
        let r = gw.post(
            "/reset",
            "key-json",
            r#"{"identifier":{"type":"username","value":"somchai"}}"#,
        );
        let p = r.problem(400, "invalid_request");
        assert!(
            p["detail"].as_str().unwrap().contains("email or mobile"),
            "{p}"
        );
    }
    start_reset(&gw, "key-json", "email", EMAIL);
    assert_eq!(sandbox.calls("cbss"), 1, "only the real start reached CBSS");
}
