//! Capillary end to end on both path variants, and every documented status code mapped.

use crate::harness::*;

/// The whole flow for the tenant with `key`, whose connection uses the paths under `paths`.
fn full_flow(key: &str, kind: &str, value: &str, paths: &str) {
    let sandbox = Sandbox::start();
    let gw = Gateway::start(&capillary_config(&sandbox, ""), CAPILLARY_ENV);
    let reset_id = start_reset(&gw, key, kind, value);
    // Capillary writes mobile numbers without '+': that is where its outbox sends the code.
    let otp = sandbox.last_otp(value.trim_start_matches('+'));
    let v = verify(&gw, key, &reset_id, &otp);
    assert_eq!(v.status, 200, "{}", String::from_utf8_lossy(&v.body));
    let next = v.json()["reset_id"].as_str().unwrap().to_string();
    let r = complete(&gw, key, &next, "Capillary-n3w");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["status"], "completed");
    // token/generate + otp/generate + otp/validate + password/forget.
    assert_eq!(sandbox.calls("capillary"), 4);
    let last = sandbox.last_request("capillary");
    assert_eq!(last["path"], format!("/capillary/{paths}password/forget"));
}

#[test]
fn full_flow_on_the_web_paths() {
    full_flow("key-web", "email", EMAIL, "auth/v1/web/");
}

#[test]
fn full_flow_on_the_mobile_paths() {
    full_flow("key-mobile", "mobile", MOBILE, "auth/v1/");
}

#[test]
fn usernames_work_at_capillary() {
    full_flow("key-web", "username", "somchai", "auth/v1/web/");
}

#[test]
fn realistic_refusals_map_to_their_problems() {
    let sandbox = Sandbox::start();
    let gw = Gateway::start(&capillary_config(&sandbox, ""), CAPILLARY_ENV);
    let reset_id = start_reset(&gw, "key-web", "email", EMAIL);
    let otp = sandbox.last_otp(EMAIL);
    let wrong = wrong_code_for(&otp);
    let p = verify(&gw, "key-web", &reset_id, wrong).problem(422, "invalid_otp");
    // Capillary said 1506, but a concealing tenant's wrong code shows no vendor member: a
    // decoy's cannot, and the difference would tell the account exists.
    assert!(p.get("vendor").is_none(), "{p}");
    let next = verify(&gw, "key-web", &reset_id, &otp).json()["reset_id"]
        .as_str()
        .unwrap()
        .to_string();
    let p = complete(&gw, "key-web", &next, "has space 1").problem(422, "password_rejected");
    assert_eq!(p["vendor"]["code"], "1528");
    let p = complete(&gw, "key-web", &next, "weakpw").problem(422, "password_rejected");
    assert_eq!(p["vendor"]["code"], "1542");
    let p = complete(&gw, "key-web", &next, OLD_PASSWORD).problem(422, "password_reused");
    assert_eq!(p["vendor"]["code"], "1527");
    assert_eq!(complete(&gw, "key-web", &next, "Capillary-n3w").status, 200);

    // A customer Capillary cannot reset.
    let next = reset_to_complete(&gw, &sandbox, "key-web", "locked@example.com");
    let p = complete(&gw, "key-web", &next, "Capillary-n3w").problem(502, "upstream_error");
    assert_eq!(p["vendor"]["code"], "1532");
}

#[test]
fn unknown_users_are_concealed() {
    let sandbox = Sandbox::start();
    let gw = Gateway::start(&capillary_config(&sandbox, ""), CAPILLARY_ENV);
    let reset_id = start_reset(&gw, "key-web", "email", "nobody@example.com");
    verify(&gw, "key-web", &reset_id, "123456").problem(422, "invalid_otp");
    // token/generate only: the decoy's verification never reaches the vendor.
    assert_eq!(sandbox.calls("capillary"), 1);
    // The decoy's reset id is as long as a real one for an identifier of the same length, so
    // its length does not tell which identifiers have accounts.
    let known = start_reset(&gw, "key-web", "email", EMAIL);
    let unknown = start_reset(
        &gw,
        "key-web",
        "email",
        &format!("{:x<1$}", "n@x.co", EMAIL.len()),
    );
    assert_eq!(known.len(), unknown.len());
    let with_device = |email: &str, device: &str| {
        let body = format!(
            r#"{{"identifier":{{"type":"email","value":"{email}"}},"device_id":"{device}"}}"#
        );
        let r = gw.post("/reset", "key-web", &body);
        assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
        r.json()["reset_id"].as_str().unwrap().len()
    };
    let device = "d".repeat(100);
    assert_eq!(
        with_device(EMAIL, &device),
        with_device(&format!("{:x<1$}", "n@x.co", EMAIL.len()), &device)
    );
}

#[test]
fn an_unknown_users_start_takes_as_long_as_a_known_ones() {
    // Every sandbox answer takes 300 ms. A known user's start makes two calls (token/generate,
    // otp/generate); an unknown user's only the first, then waits as long again, so its answer
    // does not come back a round trip sooner.
    let sandbox = Sandbox::start_with_delay(300);
    let gw = Gateway::start(&capillary_config(&sandbox, ""), CAPILLARY_ENV);
    let timed = |email: &str| {
        let started = std::time::Instant::now();
        start_reset(&gw, "key-web", "email", email);
        started.elapsed()
    };
    let delay = std::time::Duration::from_millis(300);
    let known = timed(EMAIL);
    let unknown = timed("nobody@example.com");
    let floor = 2 * delay;
    assert!(known >= floor, "known: {known:?}");
    assert!(unknown >= floor, "unknown: {unknown:?}, known: {known:?}");
    // Nor a round trip later: a decoy that waits too long tells as much as one that does not
    // wait. A loaded machine can stall one start by that much, so a pair gets three tries (the
    // per-identifier limit allows five starts): a decoy that waits the wrong time fails them all.
    let mut pairs = vec![(known, unknown)];
    while pairs.len() < 3 && pairs.iter().all(|(k, u)| u.abs_diff(*k) >= delay) {
        pairs.push((timed(EMAIL), timed("nobody@example.com")));
    }
    assert!(
        pairs.iter().any(|(k, u)| u.abs_diff(*k) < delay),
        "(known, unknown): {pairs:?}"
    );
}

#[test]
fn a_tenant_without_vendor_details_gets_its_problems_without_the_vendor_member() {
    // Tenant `quiet` is `web` with `vendor_details = false`: the same connection, the same
    // refusal, the same canonical problem, and no `vendor` member.
    let sandbox = Sandbox::start();
    let quiet = format!(
        "[[tenants]]\nname = \"quiet\"\nconnection = \"web\"\nvendor_details = false\n\
         api_keys = [{{ name = \"k\", key_sha256 = \"{}\" }}]\n",
        sha256_hex("key-quiet")
    );
    let gw = Gateway::start(&capillary_config(&sandbox, &quiet), CAPILLARY_ENV);
    let refused = |key: &str, email: &str| {
        let reset_id = start_reset(&gw, key, "email", email);
        let otp = sandbox.last_otp(email);
        let v = verify(&gw, key, &reset_id, &otp);
        assert_eq!(v.status, 200, "{}", String::from_utf8_lossy(&v.body));
        let next = v.json()["reset_id"].as_str().unwrap().to_string();
        sandbox.force_capillary_answer(1528, "Invalid password for the customer");
        complete(&gw, key, &next, "Capillary-n3w").problem(422, "password_rejected")
    };
    let shown = refused("key-web", EMAIL);
    assert_eq!(shown["vendor"]["name"], "capillary", "{shown}");
    assert_eq!(shown["vendor"]["code"], "1528", "{shown}");
    assert_eq!(
        shown["vendor"]["message"], "Invalid password for the customer",
        "{shown}"
    );
    let hidden = refused("key-quiet", "mei@example.com");
    assert!(hidden.get("vendor").is_none(), "{hidden}");
    assert!(
        !hidden
            .to_string()
            .contains("Invalid password for the customer"),
        "{hidden}"
    );
    // Only the vendor member and the detail differ (and the request id): the concealed detail
    // is the one every vendor's refusal gets, not Capillary's own wording with its name taken
    // out.
    assert_eq!(shown["detail"], "Capillary says the password is invalid");
    assert_eq!(
        hidden["detail"],
        "the new password does not meet the password policy"
    );
    let without = |mut body: serde_json::Value, members: &[&str]| {
        for member in members {
            body.as_object_mut().unwrap().remove(*member);
        }
        body
    };
    assert_eq!(
        without(shown, &["request_id", "vendor", "detail"]),
        without(hidden, &["request_id", "detail"])
    );
    // A vendor failure's detail names no vendor either.
    sandbox.set_fault("html");
    let failed = gw.post("/reset", "key-quiet", &start_body("email", EMAIL));
    let failed = failed.problem(502, "upstream_error");
    assert!(
        !failed
            .to_string()
            .to_ascii_lowercase()
            .contains("capillary"),
        "{failed}"
    );
}

#[test]
fn a_tenant_that_reveals_gets_its_404_without_the_decoy_wait() {
    // Every sandbox answer takes a second. Concealing, an unknown user's start waits as long
    // again after token/generate (the test above); a tenant that reveals unknown identifiers
    // gets its 404 after the one call, with nothing to hide by waiting.
    let sandbox = Sandbox::start_with_delay(1_000);
    let config = revealing_unknown_identifiers(&capillary_config(&sandbox, ""), "web");
    let gw = Gateway::start(&config, CAPILLARY_ENV);
    let started = std::time::Instant::now();
    let r = gw.post(
        "/reset",
        "key-web",
        r#"{"identifier":{"type":"email","value":"nobody@example.com"}}"#,
    );
    let took = started.elapsed();
    r.problem(404, "identifier_not_found");
    assert_eq!(sandbox.calls("capillary"), 1);
    // One vendor round trip, well short of the two a concealing tenant's answer takes.
    assert!(
        took < std::time::Duration::from_millis(1_900),
        "took {took:?}"
    );
}

#[test]
fn a_brand_without_passwords_is_unsupported_step() {
    let sandbox = Sandbox::start();
    let config = capillary_config(&sandbox, "").replacen("DocDemo", "NoPasswordDemo", 1);
    let gw = Gateway::start(&config, CAPILLARY_ENV);
    let next = reset_to_complete(&gw, &sandbox, "key-web", EMAIL);
    let p = complete(&gw, "key-web", &next, "Capillary-n3w").problem(501, "unsupported_step");
    assert_eq!(p["vendor"]["code"], "1524");
}

#[test]
fn an_expired_or_lost_session_is_reset_expired() {
    // A tenant that reveals unknown identifiers, so that the vendor member shows which: one that
    // conceals shows none on an expired code (as a decoy's cannot).
    let revealing = |config: String| revealing_unknown_identifiers(&config, "web");
    let sandbox = Sandbox::start_with(&["--capillary-session-secs", "1"]);
    let gw = Gateway::start(&revealing(capillary_config(&sandbox, "")), CAPILLARY_ENV);
    let reset_id = start_reset(&gw, "key-web", "email", EMAIL);
    let otp = sandbox.last_otp(EMAIL);
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let p = verify(&gw, "key-web", &reset_id, &otp).problem(410, "reset_expired");
    assert_eq!(p["vendor"]["code"], "1529");

    let sandbox = Sandbox::start();
    let gw = Gateway::start(&revealing(capillary_config(&sandbox, "")), CAPILLARY_ENV);
    let reset_id = start_reset(&gw, "key-web", "email", EMAIL);
    let otp = sandbox.last_otp(EMAIL);
    let r = request(
        sandbox.addr,
        "POST",
        "/sandbox/capillary/drop-sessions",
        &[],
        b"",
    );
    assert_eq!(r.status, 200);
    let p = verify(&gw, "key-web", &reset_id, &otp).problem(410, "reset_expired");
    assert_eq!(p["vendor"]["code"], "1505");
}

#[test]
fn every_documented_status_code_maps_to_its_canonical_problem() {
    let sandbox = Sandbox::start();
    let more_starts = "[limits]\nper_identifier = { count = 100, period_secs = 60 }\n";
    // The table on a tenant that reveals unknown identifiers, which sees each vendor answer as
    // it is; the concealing tenant's differences are checked after it.
    let config = revealing_unknown_identifiers(&capillary_config(&sandbox, more_starts), "mobile");
    let gw = Gateway::start(&config, CAPILLARY_ENV);
    let expected: &[(u32, u16, &str)] = &[
        (1505, 410, "reset_expired"),
        (1506, 422, "invalid_otp"),
        (1507, 502, "upstream_error"),
        (1508, 502, "upstream_error"),
        (1509, 502, "upstream_error"),
        (1518, 429, "attempts_exceeded"),
        (1521, 502, "upstream_error"),
        (1524, 501, "unsupported_step"),
        (1527, 422, "password_reused"),
        (1528, 422, "password_rejected"),
        (1529, 410, "reset_expired"),
        (1530, 429, "attempts_exceeded"),
        (1532, 502, "upstream_error"),
        (1534, 429, "rate_limited"),
        (1542, 422, "password_rejected"),
        (1546, 400, "invalid_request"),
        (1999, 502, "upstream_error"),
    ];
    for (i, (code, status, canonical)) in expected.iter().enumerate() {
        // A fresh reset for each code, spread over the customers to stay under the sandbox's
        // limit of OTPs per customer.
        let email = [EMAIL, "mei@example.com", "locked@example.com"][i % 3];
        let reset_id = start_reset(&gw, "key-mobile", "email", email);
        sandbox.force_capillary_status(*code);
        let p = verify(&gw, "key-mobile", &reset_id, "123456").problem(*status, canonical);
        assert_eq!(p["vendor"]["code"], code.to_string(), "{code}");
        assert_eq!(p["vendor"]["name"], "capillary");
    }
    // A tenant that conceals unknown identifiers answers what a decoy's verification could meet
    // as a decoy does: a wrong or expired code without the vendor's answer, and the vendor's
    // own lockout as a wrong code (a decoy is never locked out by the vendor). A customer
    // Capillary no longer finds (1515: an account gone since its reset began) is never a 404
    // there: a decoy's verification could not tell one.
    for (code, status, canonical) in [
        (1506, 422, "invalid_otp"),
        (1505, 410, "reset_expired"),
        (1518, 422, "invalid_otp"),
        (1515, 422, "invalid_otp"),
    ] {
        let reset_id = start_reset(&gw, "key-web", "email", EMAIL);
        sandbox.force_capillary_status(code);
        let p = verify(&gw, "key-web", &reset_id, "123456").problem(status, canonical);
        assert!(p.get("vendor").is_none(), "{code}: {p}");
    }
    // 1515 at the start is concealed like any unknown identifier: 202 after token/generate
    // alone, no code sent, and the reset id is a decoy's, whose verification fails as a wrong
    // code without calling Capillary (even with the last code Capillary really sent).
    let real_otp = sandbox.last_otp(EMAIL);
    let (calls, sent) = (sandbox.calls("capillary"), sandbox.outbox().len());
    sandbox.force_capillary_status(1515);
    let r = gw.post("/reset", "key-web", &start_body("email", EMAIL));
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["next"], "verify");
    assert_eq!(sandbox.calls("capillary"), calls + 1, "token/generate only");
    assert_eq!(
        sandbox.last_request("capillary")["path"],
        "/capillary/auth/v1/web/token/generate"
    );
    assert_eq!(sandbox.outbox().len(), sent, "no code was sent");
    let decoy = r.json()["reset_id"].as_str().unwrap().to_string();
    let p = verify(&gw, "key-web", &decoy, &real_otp).problem(422, "invalid_otp");
    assert!(p.get("vendor").is_none(), "{p}");
    assert_eq!(
        sandbox.calls("capillary"),
        calls + 1,
        "the decoy's verification never reaches Capillary"
    );
}

/// A customer Capillary no longer finds at the completion (1515: an account gone since its
/// reset began) is told so only by a tenant that reveals unknown identifiers; a concealing one
/// never answers 404, and tells the caller to start again.
#[test]
fn a_customer_gone_by_the_completion_is_a_404_only_where_unknown_identifiers_are_revealed() {
    let sandbox = Sandbox::start();
    let config = revealing_unknown_identifiers(&capillary_config(&sandbox, ""), "mobile");
    let gw = Gateway::start(&config, CAPILLARY_ENV);
    for (key, status, canonical) in [
        ("key-mobile", 404, "identifier_not_found"),
        ("key-web", 410, "reset_expired"),
    ] {
        let reset_id = start_reset(&gw, key, "email", EMAIL);
        let otp = sandbox.last_otp(EMAIL);
        let verified = verify(&gw, key, &reset_id, &otp);
        assert_eq!(
            verified.status,
            200,
            "{}",
            String::from_utf8_lossy(&verified.body)
        );
        let next = verified.json()["reset_id"].as_str().unwrap().to_string();
        sandbox.force_capillary_status(1515);
        let p = complete(&gw, key, &next, "Capillary-n3w").problem(status, canonical);
        assert_eq!(p.get("vendor").is_some(), key == "key-mobile", "{key}: {p}");
    }
}

/// Capillary ties a session to a device: its deviceId is the app's `device_id` at every step,
/// or, when the app sends none, one the gateway makes for the reset (32 hex digits), kept for
/// all of its steps and new for the next reset. Every call carries the request's
/// `X-Request-Id`: the caller's, or when it sent none, the one the gateway answered with.
#[test]
fn capillary_gets_the_apps_device_id_and_each_requests_id() {
    let sandbox = Sandbox::start();
    let gw = Gateway::start(&capillary_config(&sandbox, ""), CAPILLARY_ENV);
    let generated = |d: &serde_json::Value| {
        let d = d.as_str().unwrap_or_default().to_string();
        assert!(
            d.len() == 32 && d.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
            "a generated device id: {d:?}"
        );
        d
    };
    let mut made = Vec::new();
    for (key, tenant, paths, email) in [
        ("key-web", "web", "auth/v1/web/", EMAIL),
        ("key-mobile", "mobile", "auth/v1/", "mei@example.com"),
    ] {
        for (n, device) in [Some("app-device-7"), None].into_iter().enumerate() {
            let mut body = serde_json::json!({"identifier": {"type": "email", "value": email}});
            if let Some(device) = device {
                body["device_id"] = device.into();
            }
            let start_id = format!("it-start.{tenant}-{n}");
            let r = gw.post_with(
                "/reset",
                key,
                &body.to_string(),
                &[("X-Request-Id", start_id.as_str())],
            );
            assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
            let reset_id = r.json()["reset_id"].as_str().unwrap().to_string();
            let last = sandbox.last_request("capillary");
            assert_eq!(last["path"], format!("/capillary/{paths}otp/generate"));
            assert_eq!(last["request_id"], start_id.as_str(), "{last}");
            let device_id = match device {
                Some(device) => {
                    assert_eq!(last["deviceId"], device, "{last}");
                    device.to_string()
                }
                None => generated(&last["deviceId"]),
            };

            // Verification without an X-Request-Id: the vendor gets the gateway's.
            let otp = sandbox.last_otp(email);
            let v = verify(&gw, key, &reset_id, &otp);
            assert_eq!(v.status, 200, "{}", String::from_utf8_lossy(&v.body));
            let answered = v.header("X-Request-Id").expect("every answer has an id");
            assert_ne!(answered, start_id);
            let last = sandbox.last_request("capillary");
            assert_eq!(last["path"], format!("/capillary/{paths}otp/validate"));
            assert_eq!(last["request_id"], answered, "{last}");
            assert_eq!(last["deviceId"], device_id.as_str(), "{last}");

            let next = v.json()["reset_id"].as_str().unwrap().to_string();
            let password = format!("Capillary-n3w-{n}");
            remember_secret(&password);
            let body = format!(r#"{{"reset_id":"{next}","new_password":"{password}"}}"#);
            let c = gw.post_with(
                "/reset/complete",
                key,
                &body,
                &[("X-Request-Id", "it-complete:1")],
            );
            assert_eq!(c.status, 200, "{}", String::from_utf8_lossy(&c.body));
            let last = sandbox.last_request("capillary");
            assert_eq!(last["path"], format!("/capillary/{paths}password/forget"));
            assert_eq!(last["request_id"], "it-complete:1", "{last}");
            assert_eq!(last["deviceId"], device_id.as_str(), "{last}");
            if device.is_none() {
                made.push(device_id);
            }
        }
    }
    // One made per reset: the two resets without a device id got two.
    assert_eq!(made.len(), 2);
    assert_ne!(made[0], made[1]);
}

#[test]
fn a_customer_capillary_sends_no_more_codes_to_is_concealed_too() {
    // Capillary sends one customer at most 10 codes an hour and answers 1534 past that, which
    // only an identifier it knows can reach: answered as it is, the 11th start would tell that
    // the account exists. A tenant that conceals answers it as a decoy (202, no code sent, and
    // its verification fails as a wrong code); a tenant that reveals says 429.
    let sandbox = Sandbox::start();
    let more_starts = "[limits]\nper_identifier = { count = 100, period_secs = 60 }\n";
    let config = revealing_unknown_identifiers(&capillary_config(&sandbox, more_starts), "mobile");
    let gw = Gateway::start(&config, CAPILLARY_ENV);
    for _ in 0..10 {
        start_reset(&gw, "key-web", "email", EMAIL);
    }
    let sent = |outbox: Vec<serde_json::Value>| outbox.iter().filter(|e| e["to"] == EMAIL).count();
    assert_eq!(sent(sandbox.outbox()), 10);
    let last_otp = sandbox.last_otp(EMAIL);
    let eleventh = start_reset(&gw, "key-web", "email", EMAIL);
    assert_eq!(sent(sandbox.outbox()), 10);
    verify(&gw, "key-web", &eleventh, &last_otp).problem(422, "invalid_otp");

    let r = gw.post("/reset", "key-mobile", &start_body("email", EMAIL));
    let p = r.problem(429, "rate_limited");
    assert_eq!(p["vendor"]["code"], "1534");
    // Capillary names no time: the gateway says within the hour its count spans.
    assert_eq!(r.header("Retry-After"), Some("3600"));
    assert!(p.get("limit").is_none(), "{p}");
}

#[test]
fn capillarys_own_rate_limit_is_upstream_unavailable_with_retry_after() {
    let sandbox = Sandbox::start_with(&["--capillary-rate-limit", "3"]);
    let gw = Gateway::start(&capillary_config(&sandbox, ""), CAPILLARY_ENV);
    start_reset(&gw, "key-web", "email", EMAIL);
    let r = gw.post(
        "/reset",
        "key-web",
        r#"{"identifier":{"type":"email","value":"mei@example.com"}}"#,
    );
    let p = r.problem(503, "upstream_unavailable");
    assert_eq!(p["vendor"]["status"], 429);
    // Capillary's own Retry-After, passed on: when the oldest of the three calls of the last
    // minute leaves its window.
    let retry: u64 = r.header("Retry-After").unwrap().parse().unwrap();
    assert!((55..=60).contains(&retry), "Retry-After: {retry}");
}

#[test]
fn a_vendor_message_quoting_the_gateways_credential_or_the_callers_code_is_scrubbed() {
    let sandbox = Sandbox::start();
    let gw = Gateway::start(&capillary_config(&sandbox, ""), CAPILLARY_ENV);
    let reset_id = start_reset(&gw, "key-web", "email", EMAIL);
    let capillary_key = CAPILLARY_ENV
        .iter()
        .find(|(name, _)| *name == "IT_CAPILLARY_KEY")
        .unwrap()
        .1;
    sandbox.force_capillary_answer(
        1999,
        &format!(
            "request with X-Api-Key {capillary_key} and otp 424242 for session {{sessionId}} refused"
        ),
    );
    let p = verify(&gw, "key-web", &reset_id, "424242").problem(502, "upstream_error");
    let message = p["vendor"]["message"].as_str().unwrap();
    // The session is sealed in the reset id and never shown either.
    assert_eq!(
        message,
        "request with X-Api-Key [redacted] and otp [redacted] for session [redacted] refused"
    );
    gw.assert_logs_clean(&[capillary_key, "424242"]);
}

#[test]
fn a_wrong_api_key_is_a_clear_upstream_error() {
    let sandbox = Sandbox::start();
    let gw = Gateway::start(
        &capillary_config(&sandbox, ""),
        &[("IT_CAPILLARY_KEY", "not-the-capillary-key")],
    );
    let r = gw.post("/reset", "key-web", &start_body("email", EMAIL));
    let p = r.problem(502, "upstream_error");
    assert!(p["detail"].as_str().unwrap().contains("api_key_env"), "{p}");
    gw.assert_logs_clean(&["not-the-capillary-key", "sandbox-capillary-key"]);
}

#[test]
fn the_capillary_sandbox_takes_json_only() {
    let sandbox = Sandbox::start();
    let body = br#"{"identifierType":"EMAIL","identifierValue":"somchai@example.com","brand":"DocDemo","deviceId":"d1"}"#;
    let path = "/capillary/auth/v1/web/token/generate";
    let send = |content_type: &str| {
        request(
            sandbox.addr,
            "POST",
            path,
            &[
                ("X-Api-Key", "sandbox-capillary-key"),
                ("Content-Type", content_type),
            ],
            body,
        )
    };
    assert_eq!(send("text/plain").status, 415);
    assert_eq!(send("application/xml").status, 415);
    // Only JSON's own media type: not one that merely begins like it.
    assert_eq!(send("application/jsonl").status, 415);
    assert_eq!(send("application/json-patch+json").status, 415);
    for json_type in ["application/json", "Application/JSON; charset=utf-8"] {
        let json = send(json_type);
        assert_eq!(json.status, 200, "{}", String::from_utf8_lossy(&json.body));
    }
}

#[test]
fn the_vendors_own_lockout_at_verify_is_concealed_like_a_decoys_wrong_code() {
    // The gateway allows 10 wrong codes per identifier; Capillary locks a session after 5
    // (1518). Until the gateway's own limit, a known customer's reset and a decoy must answer
    // every wrong code alike: a 429 with Capillary's code at the sixth would tell the account
    // exists.
    let sandbox = Sandbox::start();
    let config = capillary_config(&sandbox, "[limits]\nwrong_otps_per_reset = 10\n");
    let gw = Gateway::start(&config, CAPILLARY_ENV);
    let answers = |email: &str| -> Vec<serde_json::Value> {
        let reset_id = start_reset(&gw, "key-web", "email", email);
        (0..11)
            .map(|_| {
                let r = verify(&gw, "key-web", &reset_id, "000000");
                let mut body = r.json();
                body.as_object_mut().unwrap().remove("request_id");
                serde_json::json!({"status": r.status, "body": body})
            })
            .collect()
    };
    let known = answers(EMAIL);
    let decoy = answers("nobody@example.com");
    assert_eq!(known, decoy);
    assert!(known[..10].iter().all(|a| a["status"] == 422), "{known:?}");
    assert_eq!(known[10]["status"], 429);
    assert_eq!(known[10]["body"]["code"], "attempts_exceeded");
}

/// The API key goes in the header the connection names: for a Capillary account that reads it
/// from another header, a connection left at the default is refused and one that names it works.
#[test]
fn the_api_key_goes_in_the_header_the_connection_names() {
    let sandbox = Sandbox::start_with(&["--capillary-api-key-header", "X-Cap-Key"]);
    let named = format!(
        "[connections.named]\nbase_url = \"{}\"\n[connections.named.capillary]\nbrand = \"DocDemo\"\n\
         api_key_header = \"X-Cap-Key\"\napi_key_env = \"IT_CAPILLARY_KEY\"\n\
         [[tenants]]\nname = \"named\"\nconnection = \"named\"\n\
         api_keys = [{{ name = \"k\", key_sha256 = \"{}\" }}]\n",
        sandbox.url("capillary"),
        sha256_hex("key-named")
    );
    let gw = Gateway::start(&capillary_config(&sandbox, &named), CAPILLARY_ENV);
    let body = start_body("email", EMAIL);
    let p = gw
        .post("/reset", "key-web", &body)
        .problem(502, "upstream_error");
    assert!(sandbox.outbox().is_empty(), "{p}");
    start_reset(&gw, "key-named", "email", EMAIL);
    assert_eq!(sandbox.outbox().len(), 1);
    gw.assert_logs_clean(&["sandbox-capillary-key"]);
}

/// Capillary's own count of refused passwords per session (five, then 1530) ends the reset, as
/// its sandbox counts them: no forcing.
#[test]
fn after_five_refused_passwords_capillary_ends_the_reset() {
    let sandbox = Sandbox::start();
    let gw = Gateway::start(&capillary_config(&sandbox, ""), CAPILLARY_ENV);
    let next = reset_to_complete(&gw, &sandbox, "key-web", EMAIL);
    for i in 0..5 {
        let p = complete(&gw, "key-web", &next, "weakpw").problem(422, "password_rejected");
        assert_eq!(p["vendor"]["code"], "1542", "refusal {i}");
    }
    for password in ["Capillary-n3w", "Capillary-n3w"] {
        let p = complete(&gw, "key-web", &next, password).problem(429, "attempts_exceeded");
        assert_eq!(p["vendor"]["code"], "1530", "{p}");
    }
    // The password never changed: a new reset refuses the old one as a reuse.
    let next = reset_to_complete(&gw, &sandbox, "key-web", EMAIL);
    let p = complete(&gw, "key-web", &next, OLD_PASSWORD).problem(422, "password_reused");
    assert_eq!(p["vendor"]["code"], "1527");
}

/// A connection naming a brand Capillary does not know is refused at the first call with 1509,
/// shown as the operator's error it is, and no code is sent.
#[test]
fn an_unknown_brand_is_a_clear_upstream_error() {
    let sandbox = Sandbox::start();
    let config = capillary_config(&sandbox, "").replacen("DocDemo", "NoSuchBrand", 1);
    let gw = Gateway::start(&config, CAPILLARY_ENV);
    let body = start_body("email", EMAIL);
    let p = gw
        .post("/reset", "key-web", &body)
        .problem(502, "upstream_error");
    assert_eq!(p["vendor"]["code"], "1509", "{p}");
    assert!(p["detail"].as_str().unwrap().contains("brand"), "{p}");
    assert!(sandbox.outbox().is_empty());
}

/// Capillary's business codes usually come under HTTP 200, but may come under another status:
/// read the same way, they map to the same problems.
#[test]
fn a_business_code_under_another_http_status_maps_as_under_200() {
    let sandbox = Sandbox::start();
    let config = revealing_unknown_identifiers(&capillary_config(&sandbox, ""), "mobile");
    let gw = Gateway::start(&config, CAPILLARY_ENV);
    for (code, http, status, canonical) in [
        (1546, 400, 400, "invalid_request"),
        (1506, 422, 422, "invalid_otp"),
        (1505, 401, 410, "reset_expired"),
    ] {
        let reset_id = start_reset(&gw, "key-mobile", "email", EMAIL);
        sandbox.force_capillary_status_under(code, http);
        let p = verify(&gw, "key-mobile", &reset_id, "123456").problem(status, canonical);
        assert_eq!(p["vendor"]["code"], code.to_string(), "{p}");
        assert_eq!(p["vendor"]["status"], http, "{p}");
    }
}

/// The members Capillary's reference marks mandatory are required by its sandbox: a request
/// without one is refused as malformed, never read as an empty value.
#[test]
fn the_capillary_sandbox_requires_the_documented_members() {
    let sandbox = Sandbox::start();
    let full = serde_json::json!({
        "identifierType": "EMAIL", "identifierValue": EMAIL, "brand": "DocDemo",
        "deviceId": "d-1", "sessionId": "s-1", "password": "Capillary-n3w",
        "confirmPassword": "Capillary-n3w",
    });
    for missing in ["sessionId", "password", "confirmPassword"] {
        let mut body = full.clone();
        body.as_object_mut().unwrap().remove(missing);
        let r = request(
            sandbox.addr,
            "POST",
            "/capillary/auth/v1/web/password/forget",
            &[
                ("Content-Type", "application/json"),
                ("X-Api-Key", "sandbox-capillary-key"),
            ],
            body.to_string().as_bytes(),
        );
        assert_eq!(r.status, 400, "{missing}");
        let message = r.json()["status"]["message"].clone();
        assert_eq!(message, format!("{missing} is mandatory"));
    }
}

#[test]
fn a_refusal_of_the_gateways_own_request_at_verify_costs_no_wrong_code() {
    // Capillary refusing the gateway's API key (rotated, say) judged no code: more such
    // refusals than the reset's allowance of wrong codes (5) leave the user's allowance whole.
    let sandbox = Sandbox::start();
    let gw = Gateway::start(&capillary_config(&sandbox, ""), CAPILLARY_ENV);
    let reset_id = start_reset(&gw, "key-web", "email", EMAIL);
    let otp = sandbox.last_otp(EMAIL);
    for _ in 0..7 {
        sandbox.force_capillary_status_under(401, 401);
        let refused = verify(&gw, "key-web", &reset_id, &otp);
        refused.problem(502, "upstream_error");
    }
    // A code the gateway does not know under 401 could hide a wrong code: it keeps its cell.
    sandbox.force_capillary_status_under(9999, 401);
    verify(&gw, "key-web", &reset_id, &otp).problem(502, "upstream_error");
    let v = verify(&gw, "key-web", &reset_id, &otp);
    assert_eq!(v.status, 200, "{}", String::from_utf8_lossy(&v.body));
    // A wrong code still spends a cell.
    let reset_id = start_reset(&gw, "key-web", "email", EMAIL);
    let wrong = wrong_code_for(&sandbox.last_otp(EMAIL));
    // The unknown code kept one cell: four wrong codes spend the rest, and the fifth guess is
    // refused unasked.
    for _ in 0..4 {
        verify(&gw, "key-web", &reset_id, wrong).problem(422, "invalid_otp");
    }
    verify(&gw, "key-web", &reset_id, wrong).problem(429, "attempts_exceeded");
}
