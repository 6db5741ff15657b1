//! The CBSS OTP flow end to end, in JSON and in XML, and CBSS's answers mapped to canonical codes.

use crate::harness::*;

/// Asserts that the step just taken made exactly one CBSS call (`calls_before` counted before
/// it), to the endpoint ending in `endpoint`, sent as `media_type` with the fallback language
/// (no Accept-Language was sent): the sandbox reads either format, so only this tells that the
/// step went in the connection's. Returns the calls counted now.
fn assert_step_sent(sandbox: &Sandbox, calls_before: u64, endpoint: &str, media_type: &str) -> u64 {
    let calls = sandbox.calls("cbss");
    assert_eq!(calls, calls_before + 1, "{endpoint}: one CBSS call");
    let sent = sandbox.last_request("cbss");
    assert!(
        sent["path"]
            .as_str()
            .unwrap_or_default()
            .ends_with(endpoint),
        "{endpoint}: {sent}"
    );
    assert_eq!(sent["content_type"], media_type, "{endpoint}: {sent}");
    assert_eq!(sent["language"], "en_US", "{endpoint}: {sent}");
    calls
}

/// The whole flow for the tenant with `key`, whose connection sends `media_type`.
fn full_flow(key: &str, media_type: &str) {
    let sandbox = Sandbox::start();
    let gw = Gateway::start(&cbss_config(&sandbox, ""), CBSS_ENV);

    let r = gw.post("/reset", key, &start_body("email", EMAIL));
    assert_eq!(r.status, 202);
    let calls = assert_step_sent(
        &sandbox,
        0,
        "/1/EmailAddressOrMobilePhoneNumber",
        media_type,
    );
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    assert_eq!(r.header("Cache-Control"), Some("no-store"));
    assert_eq!(r.header("X-Content-Type-Options"), Some("nosniff"));
    assert!(r.header("X-Request-Id").is_some());
    let started = r.json();
    assert_eq!(started["next"], "verify");
    let expires = started["expires_at"].as_str().unwrap();
    assert!(expires.ends_with('Z') && expires.len() == 20, "{expires}");
    let reset_id = started["reset_id"].as_str().unwrap();

    let otp = sandbox.last_otp(EMAIL);
    let r = verify(&gw, key, reset_id, &otp);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let calls = assert_step_sent(&sandbox, calls, "/2/OTPVerification", media_type);
    let verified = r.json();
    assert_eq!(verified["next"], "complete");
    assert_eq!(verified["expires_at"], started["expires_at"]);
    let new_password = "Brand-n3w-secret";
    let r = complete(
        &gw,
        key,
        verified["reset_id"].as_str().unwrap(),
        new_password,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json(), serde_json::json!({"status": "completed"}));
    let calls = assert_step_sent(&sandbox, calls, "/3/ChangePassword", media_type);

    // The sandbox now holds the new password: setting it again is refused as a reuse.
    let again = start_reset(&gw, key, "email", EMAIL);
    let otp2 = sandbox.last_otp(EMAIL);
    let v = verify(&gw, key, &again, &otp2).json();
    let r = complete(&gw, key, v["reset_id"].as_str().unwrap(), new_password);
    r.problem(422, "password_reused");
    // The refused change went in the connection's format too (after its start and verification).
    assert_step_sent(&sandbox, calls + 2, "/3/ChangePassword", media_type);

    gw.assert_logs_clean(&[key, &otp, &otp2, new_password, OLD_PASSWORD]);
}

#[test]
fn full_flow_in_json() {
    full_flow("key-json", "application/json");
}

#[test]
fn full_flow_in_xml_with_upper_case_signatures() {
    // The sandbox's DEMO-UPPER client checks signatures in upper case only.
    full_flow("key-xml", "application/xml");
}

#[test]
fn mobile_identifiers_work_and_usernames_are_refused_for_cbss() {
    let sandbox = Sandbox::start();
    let gw = Gateway::start(&cbss_config(&sandbox, ""), CBSS_ENV);
    let reset_id = start_reset(&gw, "key-json", "mobile", MOBILE);
    let otp = sandbox.last_otp(MOBILE);
    assert_eq!(verify(&gw, "key-json", &reset_id, &otp).status, 200);
    let r = gw.post(
        "/reset",
        "key-json",
        r#"{"identifier":{"type":"username","value":"somchai"}}"#,
    );
    r.problem(400, "invalid_request");
}

#[test]
fn a_wrong_otp_is_invalid_otp_and_the_right_one_still_works() {
    let sandbox = Sandbox::start();
    let gw = Gateway::start(&cbss_config(&sandbox, ""), CBSS_ENV);
    let reset_id = start_reset(&gw, "key-json", "email", EMAIL);
    let otp = sandbox.last_otp(EMAIL);
    let wrong = wrong_code_for(&otp);
    let body = verify(&gw, "key-json", &reset_id, wrong).problem(422, "invalid_otp");
    // The tenant conceals unknown identifiers, and a decoy has no vendor answer to show: a real
    // wrong code shows none either, or its `vendor` member would tell the account exists.
    assert!(body.get("vendor").is_none(), "{body}");
    assert_eq!(verify(&gw, "key-json", &reset_id, &otp).status, 200);
    gw.assert_logs_clean(&[&otp, wrong]);
}

#[test]
fn a_decoys_wrong_code_is_answered_like_a_real_one_and_as_late() {
    // Every sandbox answer takes 300 ms. A decoy's verification never reaches CBSS (there is no
    // reset there to check a code against), so it waits as long as a real call took: its own
    // start's while the replica has timed no verification, then a real verification's.
    let sandbox = Sandbox::start_with_delay(300);
    // Two replicas sharing their token keys, as a deployment's do.
    let keys = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".to_string();
    let env: Vec<(&str, &str)> = CBSS_ENV
        .iter()
        .copied()
        .chain([("GATEWAY_TOKEN_KEYS", keys.as_str())])
        .collect();
    let gw = Gateway::start(&cbss_config(&sandbox, ""), &env);
    let other = Gateway::start(&cbss_config(&sandbox, ""), &env);
    let floor = std::time::Duration::from_millis(300);
    let timed_verify = |gw: &Gateway, reset_id: &str, otp: &str| {
        let started = std::time::Instant::now();
        let r = verify(gw, "key-json", reset_id, otp);
        (r, started.elapsed())
    };
    let decoy = start_reset(&gw, "key-json", "email", "nobody@example.com");
    // Verified by a replica that has timed nothing at all: the reset id says how long its
    // start's call took.
    let (first, took) = timed_verify(&other, &decoy, "123456");
    first.problem(422, "invalid_otp");
    assert!(
        took >= floor,
        "a decoy answered sooner than CBSS can: {took:?}"
    );

    let real = start_reset(&gw, "key-json", "email", EMAIL);
    let otp = sandbox.last_otp(EMAIL);
    let wrong = wrong_code_for(&otp);
    let (real_answer, real_took) = timed_verify(&gw, &real, wrong);
    let (decoy_answer, took) = timed_verify(&gw, &decoy, "123456");
    assert!(real_took >= floor, "{real_took:?}");
    assert!(
        took >= floor,
        "a decoy answered sooner than CBSS can: {took:?}"
    );
    // Nothing but the request id tells them apart: not the status, not the body, not which
    // headers came.
    assert_eq!(
        real_answer.problem_but_request_id(422, "invalid_otp"),
        decoy_answer.problem_but_request_id(422, "invalid_otp")
    );
    assert_eq!(real_answer.header_names(), decoy_answer.header_names());
}

/// Starts a reset for EMAIL on the `json` tenant and sends five wrong codes (each refused as
/// wrong): its reset_id and right code.
fn a_reset_after_five_wrong_codes(gw: &Gateway, sandbox: &Sandbox) -> (String, String) {
    let reset_id = start_reset(gw, "key-json", "email", EMAIL);
    let otp = sandbox.last_otp(EMAIL);
    for _ in 0..5 {
        verify(gw, "key-json", &reset_id, wrong_code_for(&otp)).problem(422, "invalid_otp");
    }
    (reset_id, otp)
}

#[test]
fn the_gateways_wrong_code_limit_is_attempts_exceeded_without_a_vendor_call() {
    let sandbox = Sandbox::start();
    let gw = Gateway::start(&cbss_config(&sandbox, ""), CBSS_ENV);
    let (reset_id, otp) = a_reset_after_five_wrong_codes(&gw, &sandbox);
    let calls = sandbox.calls("cbss");
    verify(&gw, "key-json", &reset_id, &otp).problem(429, "attempts_exceeded");
    assert_eq!(sandbox.calls("cbss"), calls, "the gateway's own limit");
}

#[test]
fn the_vendors_attempt_limit_is_attempts_exceeded() {
    // The gateway allows 10 wrong codes, CBSS 5: the sixth try reaches CBSS, which answers
    // OTP_ATTEMPTS_EXCEEDED even for the right code. A tenant that reveals what the vendor said
    // (a concealing one answers as a decoy would: a wrong code) gets 429 attempts_exceeded.
    let sandbox = Sandbox::start();
    let config = revealing_unknown_identifiers(
        &cbss_config(&sandbox, "[limits]\nwrong_otps_per_reset = 10\n"),
        "json",
    );
    let gw = Gateway::start(&config, CBSS_ENV);
    let (reset_id, otp) = a_reset_after_five_wrong_codes(&gw, &sandbox);
    let calls = sandbox.calls("cbss");
    let p = verify(&gw, "key-json", &reset_id, &otp).problem(429, "attempts_exceeded");
    assert_eq!(p["vendor"]["code"], "OTP_ATTEMPTS_EXCEEDED", "{p}");
    assert_eq!(
        sandbox.calls("cbss"),
        calls + 1,
        "CBSS's limit, not the gateway's"
    );
}

/// A CBSS sandbox whose codes live 2 s, and a gateway on it whose `json` connection says so
/// (`extra` appended to its config).
fn with_two_second_codes(extra: &str) -> (Sandbox, Gateway) {
    let sandbox = Sandbox::start_with(&["--cbss-otp-lifetime-secs", "2"]);
    let config = cbss_config(&sandbox, extra).replacen(
        "[connections.json.cbss]\n",
        "[connections.json.cbss]\ncode_lifetime_secs = 2\n",
        1,
    );
    assert!(config.contains("code_lifetime_secs = 2"));
    let gw = Gateway::start(&config, CBSS_ENV);
    (sandbox, gw)
}

#[test]
fn a_decoys_code_expires_when_a_real_one_would() {
    // CBSS's codes live 2 s here, and the connection says so: past that a real verification is
    // OTP_EXPIRED, 410 reset_expired, and a decoy's must be the same answer (before, both are
    // wrong codes).
    let (sandbox, gw) = with_two_second_codes("");
    let real = start_reset(&gw, "key-json", "email", EMAIL);
    let decoy = start_reset(&gw, "key-json", "email", "nobody@example.com");
    let otp = sandbox.last_otp(EMAIL);
    verify(&gw, "key-json", &decoy, &otp).problem(422, "invalid_otp");
    std::thread::sleep(std::time::Duration::from_millis(3_100));
    let real_answer = verify(&gw, "key-json", &real, &otp);
    let decoy_answer = verify(&gw, "key-json", &decoy, &otp);
    assert_eq!(
        real_answer.problem_but_request_id(410, "reset_expired"),
        decoy_answer.problem_but_request_id(410, "reset_expired")
    );
}

#[test]
fn after_the_vendors_lockout_a_real_reset_still_answers_as_a_decoy_does() {
    // The gateway allows 10 wrong codes; CBSS locks a reset after 5, and its codes live 2 s.
    // After the lockout a real reset must answer every wrong code as a decoy of the same age
    // does: a wrong code while the code would be alive, an expired one past its lifetime (and
    // both give that cell back alike, so the gateway's count stays in step).
    let (sandbox, gw) = with_two_second_codes("[limits]\nwrong_otps_per_reset = 10\n");
    let real = start_reset(&gw, "key-json", "email", EMAIL);
    let wrong = wrong_code_for(&sandbox.last_otp(EMAIL));
    let decoy = start_reset(&gw, "key-json", "email", "nobody@example.com");
    let answer = |reset_id: &str| {
        let r = verify(&gw, "key-json", reset_id, wrong);
        let mut body = r.json();
        body.as_object_mut().unwrap().remove("request_id");
        (r.status, body)
    };
    for i in 0..6 {
        let (real, decoy) = (answer(&real), answer(&decoy));
        assert_eq!(real, decoy, "wrong code {i}");
        // Alike, and a wrong code: not CBSS's lockout (the sixth), nor the gateway's limit.
        assert_eq!(
            (real.0, real.1["code"].as_str()),
            (422, Some("invalid_otp")),
            "wrong code {i}: {real:?}"
        );
    }
    std::thread::sleep(std::time::Duration::from_millis(2_100));
    for i in 0..3 {
        let (real, decoy) = (answer(&real), answer(&decoy));
        assert_eq!(real, decoy, "past the code's lifetime, {i}");
        assert_eq!(
            (real.0, real.1["code"].as_str()),
            (410, Some("reset_expired")),
            "past the code's lifetime, {i}: {real:?}"
        );
    }
}

#[test]
fn a_weak_password_is_password_rejected() {
    let sandbox = Sandbox::start();
    let gw = Gateway::start(&cbss_config(&sandbox, ""), CBSS_ENV);
    let token = &reset_to_complete(&gw, &sandbox, "key-xml", EMAIL);
    let body = complete(&gw, "key-xml", token, "tiny-pw").problem(422, "password_rejected");
    // The sandbox quotes the password it refused; support staff see the message, not the password.
    assert_eq!(body["vendor"]["code"], "PASSWORD_POLICY", "{body}");
    let message = body["vendor"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("The password '[redacted]' needs"),
        "{message}"
    );
    assert!(!body.to_string().contains("tiny-pw"));
    // The reset is still usable with an acceptable password.
    assert_eq!(complete(&gw, "key-xml", token, "Long-enough-1").status, 200);
}

#[test]
fn an_unknown_identifier_is_answered_like_a_known_one() {
    let sandbox = Sandbox::start();
    let gw = Gateway::start(&cbss_config(&sandbox, ""), CBSS_ENV);
    let body = |email: &str| start_body("email", email);
    let known = gw.post("/reset", "key-json", &body(EMAIL));
    assert_eq!(sandbox.calls("cbss"), 1, "the known start");
    let unknown = gw.post("/reset", "key-json", &body("nobody@example.com"));
    assert_eq!(known.status, 202);
    assert_eq!(unknown.status, 202);
    assert_eq!(known.header_names(), unknown.header_names());
    let (k, u) = (known.json(), unknown.json());
    assert_eq!(k["next"], u["next"]);
    assert_eq!(
        k["reset_id"].as_str().unwrap().len(),
        u["reset_id"].as_str().unwrap().len()
    );
    // The unknown start asked CBSS once (which answered that it knows no such customer), and its
    // verification fails like a wrong code without asking CBSS at all: there is no reset there.
    assert_eq!(sandbox.calls("cbss"), 2, "the unknown start asks CBSS once");
    let r = verify(&gw, "key-json", u["reset_id"].as_str().unwrap(), "123456");
    let problem = r.problem(422, "invalid_otp");
    assert!(problem.get("vendor").is_none());
    assert_eq!(
        sandbox.calls("cbss"),
        2,
        "a decoy's verification calls no vendor"
    );
}

#[test]
fn a_tenant_that_reveals_gets_identifier_not_found() {
    let sandbox = Sandbox::start();
    let extra = format!(
        r#"
[[tenants]]
name = "reveal"
connection = "json"
reveal_unknown_identifiers = true
api_keys = [{{ name = "k", key_sha256 = "{}" }}]
"#,
        sha256_hex("key-reveal")
    );
    let gw = Gateway::start(&cbss_config(&sandbox, &extra), CBSS_ENV);
    let r = gw.post(
        "/reset",
        "key-reveal",
        r#"{"identifier":{"type":"email","value":"nobody@example.com"}}"#,
    );
    r.problem(404, "identifier_not_found");
    // With nothing concealed, a wrong code shows what CBSS said.
    let reset_id = start_reset(&gw, "key-reveal", "email", EMAIL);
    let otp = sandbox.last_otp(EMAIL);
    let wrong = wrong_code_for(&otp);
    let body = verify(&gw, "key-reveal", &reset_id, wrong).problem(422, "invalid_otp");
    assert_eq!(body["vendor"]["name"], "cbss");
    assert_eq!(body["vendor"]["code"], "INVALID_OTP");
}

/// A connection set to sign in one hex case for a CBSS account that checks the other is refused
/// by CBSS (the sandbox's `DEMO-UPPER` client checks upper case), and the signature CBSS quotes
/// back is never shown.
#[test]
fn a_signature_in_the_other_case_is_refused_and_never_shown() {
    let sandbox = Sandbox::start();
    let config = cbss_tenant_config(
        &sandbox.url("cbss"),
        "",
        "DEMO-UPPER",
        "signature_case = \"lower\"",
    );
    let gw = Gateway::start(&config, CBSS_ENV);
    let r = gw.post("/reset", "key-c", &start_body("email", EMAIL));
    let body = r.problem(502, "upstream_error");
    assert_eq!(body["vendor"]["code"], "INVALID_SIGNATURE", "{body}");
    assert_eq!(
        body["vendor"]["message"], "Invalid signature '[redacted]'.",
        "{body}"
    );
    assert!(sandbox.outbox().is_empty(), "no code may be sent");
}

/// CBSS's `Language` is a fixed set (an `API.LANGUAGE`): a caller's language reaches it as the
/// nearest one in the set (the same one, else the same language in another region), else the
/// caller's next choice, else the set's first, and never as it came, which CBSS would refuse.
#[test]
fn any_accept_language_gives_cbss_a_language_it_takes() {
    let sandbox = Sandbox::start();
    // One identifier starts a reset per language here.
    let roomy = "[limits]\nper_identifier = { count = 100, period_secs = 900 }\n";
    let gw = Gateway::start(&cbss_config(&sandbox, roomy), CBSS_ENV);
    let body = start_body("email", EMAIL);
    for (language, sent) in [
        ("TH-th", "th_TH"),
        ("en-GB", "en_US"),
        ("de-DE", "en_US"),
        ("de-DE, th;q=0.5", "th_TH"),
        ("ja", "en_US"),
        ("yue-HK", "en_US"),
        ("fil-PH, th;q=0.5", "th_TH"),
        ("es-419", "en_US"),
        ("zh-Hant-TW", "zh_TW"),
        ("zh-CN", "zh_TW"),
    ] {
        let r = gw.post_with(
            "/reset",
            "key-json",
            &body,
            &[("Accept-Language", language)],
        );
        assert_eq!(
            r.status,
            202,
            "{language}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(sandbox.last_request("cbss")["language"], sent, "{language}");
    }
}

/// A connection names the languages its CBSS account takes, the fallback first; CBSS refuses
/// one outside its set, as the sandbox does.
#[test]
fn a_cbss_connection_sends_only_the_languages_it_names() {
    let sandbox = Sandbox::start();
    let with_languages = |list: &str| {
        cbss_config(&sandbox, "").replacen(
            "[connections.json.cbss]\n",
            &format!("[connections.json.cbss]\nlanguages = {list}\n"),
            1,
        )
    };
    let body = start_body("email", EMAIL);
    let gw = Gateway::start(&with_languages(r#"["th_TH", "en_US"]"#), CBSS_ENV);
    for (language, sent) in [
        (None, "th_TH"),
        (Some("de-DE"), "th_TH"),
        (Some("en-AU"), "en_US"),
    ] {
        let headers: Vec<(&str, &str)> = language
            .map(|l| ("Accept-Language", l))
            .into_iter()
            .collect();
        assert_eq!(
            gw.post_with("/reset", "key-json", &body, &headers).status,
            202
        );
        assert_eq!(
            sandbox.last_request("cbss")["language"],
            sent,
            "{language:?}"
        );
    }
    drop(gw);
    // A language the account does not serve fails at CBSS: the set must be the account's.
    let gw = Gateway::start(&with_languages(r#"["de_DE"]"#), CBSS_ENV);
    gw.post("/reset", "key-json", &body)
        .problem(502, "upstream_error");
}

/// .NET's serializers keep the spaces at the ends of a string, and a password may have them:
/// CBSS stores the password as sent, so the same password without them is a different one.
#[test]
fn a_password_with_spaces_at_its_ends_is_kept_whole_in_xml() {
    let sandbox = Sandbox::start();
    let gw = Gateway::start(&cbss_config(&sandbox, ""), CBSS_ENV);
    let set = |password: &str| {
        let next = reset_to_complete(&gw, &sandbox, "key-xml", EMAIL);
        complete(&gw, "key-xml", &next, password)
    };
    assert_eq!(set("  Spaced-pass-1 ").status, 200);
    // Read trimmed, this would be the password just set, and refused as a reuse.
    assert_eq!(set("Spaced-pass-1").status, 200);
    set("Spaced-pass-1").problem(422, "password_reused");
}

#[test]
fn token_keys_rotate_in_three_rollouts_without_failing_a_reset_in_between() {
    // README's procedure: during each rollout, pods of the phase before and after serve side by
    // side, so a reset started on either must continue on either.
    let sandbox = Sandbox::start();
    let old = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let new = "k2:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";
    let pod = |keys: String| {
        let env: Vec<(&str, &str)> = CBSS_ENV
            .iter()
            .copied()
            .chain([("GATEWAY_TOKEN_KEYS", keys.as_str())])
            .collect();
        Gateway::start(&cbss_config(&sandbox, ""), &env)
    };
    let phases = [
        pod(old.to_string()),
        pod(format!("{old},{new}")),
        pod(format!("{new},{old}")),
        pod(new.to_string()),
    ];
    // Started on one phase's pod, verified on the next phase's and back.
    for pair in phases.windows(2) {
        for (starts, verifies) in [(&pair[0], &pair[1]), (&pair[1], &pair[0])] {
            let reset_id = start_reset(starts, "key-json", "email", EMAIL);
            let otp = sandbox.last_otp(EMAIL);
            let r = verify(verifies, "key-json", &reset_id, &otp);
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        }
    }
    // What the procedure avoids: the new key put first in one step, beside a pod that lacks it.
    let reset_id = start_reset(&phases[2], "key-json", "email", EMAIL);
    let otp = sandbox.last_otp(EMAIL);
    verify(&phases[0], "key-json", &reset_id, &otp).problem(400, "invalid_reset_id");
}
