//! API keys, reset id handling, and bad input: each refused with its canonical problem.

use crate::harness::*;

fn gateway_with_short_lived_tenant(sandbox: &Sandbox) -> Gateway {
    let extra = format!(
        r#"
[[tenants]]
name = "short"
connection = "json"
reset_lifetime_secs = 1
api_keys = [{{ name = "k", key_sha256 = "{}" }}]
"#,
        sha256_hex("key-short")
    );
    Gateway::start(&cbss_config(sandbox, &extra), CBSS_ENV)
}

#[test]
fn missing_malformed_and_unknown_keys_are_unauthenticated() {
    let sandbox = Sandbox::start();
    let gw = Gateway::start(&cbss_config(&sandbox, ""), CBSS_ENV);
    let body = start_body("email", EMAIL);
    let none = request(
        gw.api,
        "POST",
        "/reset",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    );
    none.problem(401, "unauthenticated");
    assert_eq!(none.header("WWW-Authenticate"), Some("Bearer"));
    let basic = request(
        gw.api,
        "POST",
        "/reset",
        &[
            ("Authorization", "Basic a2V5OmtleQ=="),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
    );
    basic.problem(401, "unauthenticated");
    gw.post("/reset", "not-a-key", &body)
        .problem(401, "unauthenticated");
    // Two keys, a good one either side: a proxy reading the last would disagree with one
    // reading the first about who is asking, so neither order is served.
    for keys in [["key-json", "not-a-key"], ["not-a-key", "key-json"]] {
        let twice = request(
            gw.api,
            "POST",
            "/reset",
            &[
                ("Authorization", &format!("Bearer {}", keys[0])),
                ("Authorization", &format!("Bearer {}", keys[1])),
                ("Content-Type", "application/json"),
            ],
            body.as_bytes(),
        );
        let p = twice.problem(401, "unauthenticated");
        assert!(
            p["detail"].as_str().unwrap().contains("one Authorization"),
            "{p}"
        );
    }
    assert_eq!(
        sandbox.calls("cbss"),
        0,
        "no vendor call without a valid key"
    );
    gw.assert_logs_clean(&["not-a-key", "a2V5OmtleQ=="]);
}

#[test]
fn the_bearer_scheme_is_named_in_any_case() {
    // Authentication schemes are case-insensitive (RFC 9110): BEARER and bEaReR name Bearer.
    let sandbox = Sandbox::start();
    let gw = Gateway::start(&cbss_config(&sandbox, ""), CBSS_ENV);
    let body = start_body("email", EMAIL);
    for scheme in ["BEARER", "bEaReR"] {
        let r = request(
            gw.api,
            "POST",
            "/reset",
            &[
                ("Authorization", &format!("{scheme} key-json")),
                ("Content-Type", "application/json"),
            ],
            body.as_bytes(),
        );
        assert_eq!(
            r.status,
            202,
            "{scheme}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    // A scheme that only starts like it is still refused.
    let r = request(
        gw.api,
        "POST",
        "/reset",
        &[
            ("Authorization", "Bearerkey-json"),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
    );
    r.problem(401, "unauthenticated");
}

#[test]
fn a_tampered_reset_id_is_invalid_reset_id() {
    let sandbox = Sandbox::start();
    let gw = Gateway::start(&cbss_config(&sandbox, ""), CBSS_ENV);
    let reset_id = start_reset(&gw, "key-json", "email", EMAIL);
    let mut bytes = reset_id.into_bytes();
    let mid = bytes.len() / 2;
    bytes[mid] = if bytes[mid] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(bytes).unwrap();
    verify(&gw, "key-json", &tampered, "123456").problem(400, "invalid_reset_id");
    verify(&gw, "key-json", "garbage", "123456").problem(400, "invalid_reset_id");
}

#[test]
fn a_reset_id_from_another_tenant_is_refused() {
    let sandbox = Sandbox::start();
    let gw = Gateway::start(&cbss_config(&sandbox, ""), CBSS_ENV);
    let reset_id = start_reset(&gw, "key-json", "email", EMAIL);
    let otp = sandbox.last_otp(EMAIL);
    verify(&gw, "key-xml", &reset_id, &otp).problem(400, "invalid_reset_id");
    // The rightful tenant can still use it.
    assert_eq!(verify(&gw, "key-json", &reset_id, &otp).status, 200);
}

#[test]
fn a_reset_id_at_the_wrong_step_is_wrong_step() {
    let sandbox = Sandbox::start();
    let gw = Gateway::start(&cbss_config(&sandbox, ""), CBSS_ENV);
    let reset_id = start_reset(&gw, "key-json", "email", EMAIL);
    complete(&gw, "key-json", &reset_id, "Brand-n3w-secret").problem(409, "wrong_step");
    let otp = sandbox.last_otp(EMAIL);
    let verified = verify(&gw, "key-json", &reset_id, &otp).json();
    let next = verified["reset_id"].as_str().unwrap();
    verify(&gw, "key-json", next, &otp).problem(409, "wrong_step");
}

#[test]
fn an_expired_reset_id_is_reset_expired() {
    let sandbox = Sandbox::start();
    let gw = gateway_with_short_lived_tenant(&sandbox);
    let reset_id = start_reset(&gw, "key-short", "email", EMAIL);
    let otp = sandbox.last_otp(EMAIL);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    verify(&gw, "key-short", &reset_id, &otp).problem(410, "reset_expired");
}

#[test]
fn bad_bodies_get_their_problems() {
    let sandbox = Sandbox::start();
    let gw = Gateway::start(&cbss_config(&sandbox, ""), CBSS_ENV);
    let p = gw
        .post("/reset", "key-json", "{not json")
        .problem(400, "invalid_request");
    assert!(p["detail"].as_str().unwrap().contains("not valid JSON"));
    let p = gw
        .post(
            "/reset",
            "key-json",
            &format!(r#"{{"identifier":{{"type":"email","value":"{EMAIL}"}},"colour":"red"}}"#),
        )
        .problem(400, "invalid_request");
    assert_eq!(p["detail"], "unknown field `colour`");
    let p = gw
        .post("/reset/verify", "key-json", r#"{"otp":"123456"}"#)
        .problem(400, "invalid_request");
    assert_eq!(p["detail"], "missing field `reset_id`");
    gw.post(
        "/reset",
        "key-json",
        r#"{"identifier":{"type":"email","value":"not-an-email"}}"#,
    )
    .problem(400, "invalid_request");
    gw.post(
        "/reset",
        "key-json",
        r#"{"identifier":{"type":"fax","value":"1"}}"#,
    )
    .problem(400, "invalid_request");

    let wrong_type = request(
        gw.api,
        "POST",
        "/reset",
        &[
            ("Authorization", "Bearer key-json"),
            ("Content-Type", "text/plain"),
        ],
        b"{}",
    );
    wrong_type.problem(415, "unsupported_media_type");
    let none = request(
        gw.api,
        "POST",
        "/reset",
        &[("Authorization", "Bearer key-json")],
        b"{}",
    );
    none.problem(415, "unsupported_media_type");

    let big = start_body("email", &"a".repeat(20_000));
    gw.post("/reset", "key-json", &big)
        .problem(413, "payload_too_large");
    assert_eq!(sandbox.calls("cbss"), 0, "no bad body reached the vendor");
}

/// A `new_password` over 256 characters or holding a control character is a bound on what the
/// gateway reads (README, "departures"): 400 before the vendor is called or the reset id used,
/// so the same reset id then completes with a password within the bound.
#[test]
fn a_new_password_out_of_bounds_is_invalid_request_before_any_vendor_call() {
    let sandbox = Sandbox::start();
    let gw = Gateway::start(&cbss_config(&sandbox, ""), CBSS_ENV);
    let reset_id = reset_to_complete(&gw, &sandbox, "key-json", EMAIL);
    let calls = sandbox.calls("cbss");
    // Characters, not bytes, are counted: 257 two-byte letters are over, 256 are within.
    let too_long = format!("Pw1{}", "ü".repeat(254));
    assert_eq!(too_long.chars().count(), 257);
    for (what, password) in [
        ("257 characters", too_long.as_str()),
        ("a BEL", "Bell\\u0007-passw0rd"),
        ("a newline", "Line\\n-passw0rd"),
        ("a DEL", "Del\\u007f-passw0rd"),
    ] {
        // Escaped in the JSON, so the body is valid JSON and the bound itself refuses it.
        let body = format!(r#"{{"reset_id":"{reset_id}","new_password":"{password}"}}"#);
        let p = gw
            .post("/reset/complete", "key-json", &body)
            .problem(400, "invalid_request");
        assert_eq!(
            p["detail"], "new_password must be 1 to 256 characters with no control characters",
            "{what}: {p}"
        );
        assert_eq!(sandbox.calls("cbss"), calls, "{what}: no vendor call");
    }
    let within = format!("Pw1{}", "ü".repeat(253));
    assert_eq!(within.chars().count(), 256);
    let r = complete(&gw, "key-json", &reset_id, &within);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(sandbox.calls("cbss"), calls + 1);
}

/// A Hepsiburada tenant (as code_flow.rs builds one) on `sandbox`, key `key-h`.
fn hepsiburada(sandbox: &Sandbox) -> Gateway {
    let config = format!(
        "[connections.h]\nbase_url = \"{}\"\n[connections.h.hepsiburada]\nformat = \"xml\"\n\
         [[tenants]]\nname = \"h\"\nconnection = \"h\"\napi_keys = [{{ name = \"k\", key_sha256 = \"{}\" }}]\n",
        sandbox.url("hepsiburada"),
        sha256_hex("key-h")
    );
    Gateway::start(&config, &[])
}

/// Hepsiburada needs the end user's agent: a completion with no User-Agent header at all (not
/// merely a blank one) is refused before the vendor is called, and the code still works after.
#[test]
fn hepsiburada_without_a_user_agent_header_is_invalid_request() {
    let sandbox = Sandbox::start();
    let gw = hepsiburada(&sandbox);
    let issued = request(
        sandbox.addr,
        "POST",
        "/sandbox/hepsiburada/reset-codes",
        &[],
        format!(r#"{{"identifier":"{EMAIL}"}}"#).as_bytes(),
    );
    assert_eq!(issued.status, 200);
    let code = issued.json()["reset_code"].as_str().unwrap().to_string();
    remember_secret(&code);
    let password = "Hepsi-n3w-pw";
    remember_secret(password);
    remember_secret("key-h");
    let body = serde_json::json!({
        "reset_code": code, "session_id": "perm-42", "new_password": password,
    })
    .to_string();
    // `request` adds a User-Agent to every request: this one is written out by hand.
    let wire = format!(
        "POST /reset/complete HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\
         Authorization: Bearer key-h\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        gw.api,
        body.len()
    );
    assert!(!wire.to_ascii_lowercase().contains("user-agent"));
    let p = raw(gw.api, wire.as_bytes()).problem(400, "invalid_request");
    assert!(p["detail"].as_str().unwrap().contains("User-Agent"), "{p}");
    assert_eq!(sandbox.calls("hepsiburada"), 0, "no vendor call");
    // The code was not spent: with the end user's agent it completes.
    let r = gw.post("/reset/complete", "key-h", &body);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(sandbox.calls("hepsiburada"), 1);
}

#[test]
fn an_oversized_chunked_body_is_refused_as_it_arrives() {
    let sandbox = Sandbox::start();
    let gw = Gateway::start(&cbss_config(&sandbox, ""), CBSS_ENV);
    let chunk = "a".repeat(8_000);
    let mut wire = String::from(
        "POST /reset HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer key-json\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    );
    for _ in 0..3 {
        wire.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    wire.push_str("0\r\n\r\n");
    raw(gw.api, wire.as_bytes()).problem(413, "payload_too_large");
}

#[test]
fn request_ids_are_kept_when_sane_and_replaced_otherwise() {
    let sandbox = Sandbox::start();
    let gw = Gateway::start(&cbss_config(&sandbox, ""), CBSS_ENV);
    let r = request(
        gw.api,
        "POST",
        "/reset/verify",
        &[("X-Request-Id", "trace-42")],
        b"",
    );
    assert_eq!(r.header("X-Request-Id"), Some("trace-42"));
    assert_eq!(r.json()["request_id"], "trace-42");
    let r = request(
        gw.api,
        "POST",
        "/reset/verify",
        &[("X-Request-Id", "bad id!")],
        b"",
    );
    // Replaced by one of the gateway's own (src/request_id.rs: 32 lower-case hex digits), the
    // same in the header and the problem.
    let replaced = r
        .header("X-Request-Id")
        .expect("an X-Request-Id even when the caller's is refused")
        .to_string();
    assert!(is_gateway_request_id(&replaced), "{replaced:?}");
    let p = r.problem(401, "unauthenticated");
    assert_eq!(p["request_id"], replaced.as_str());
    // And a fresh one per request.
    let again = request(
        gw.api,
        "POST",
        "/reset/verify",
        &[("X-Request-Id", "bad id!")],
        b"",
    );
    let again = again.header("X-Request-Id").unwrap();
    assert!(is_gateway_request_id(again), "{again:?}");
    assert_ne!(again, replaced);
}

/// The form of a request id the gateway makes itself: 32 lower-case hex digits.
fn is_gateway_request_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[test]
fn unknown_paths_and_methods_are_problems_too() {
    let sandbox = Sandbox::start();
    let gw = Gateway::start(&cbss_config(&sandbox, ""), CBSS_ENV);
    request(gw.api, "GET", "/nope", &[], b"").problem(404, "not_found");
    let r = request(gw.api, "GET", "/reset", &[], b"");
    r.problem(405, "method_not_allowed");
    assert_eq!(r.header("Allow"), Some("POST"));
}
