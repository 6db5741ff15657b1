//! What is particular to the code-flow vendors: Hepsiburada's end-user address and agent, and
//! Amsalem's authentication block (digest recipe, single-use salts).

use crate::harness::*;

fn hepsiburada(sandbox: &Sandbox, trusted: &str) -> Gateway {
    hepsiburada_in(sandbox, trusted, "xml")
}

/// `hepsiburada` with the connection speaking `format` ("json" or "xml").
fn hepsiburada_in(sandbox: &Sandbox, trusted: &str, format: &str) -> Gateway {
    let config = format!(
        "[server]\ntrusted_proxies = [{trusted}]\n\
         [connections.h]\nbase_url = \"{}\"\n[connections.h.hepsiburada]\nformat = \"{format}\"\n\
         [[tenants]]\nname = \"h\"\nconnection = \"h\"\napi_keys = [{{ name = \"k\", key_sha256 = \"{}\" }}]\n",
        sandbox.url("hepsiburada"),
        sha256_hex("key-h")
    );
    // The harness writes its own [server] table first: this key continues it.
    let config = config.replacen("[server]\n", "", 1);
    Gateway::start(&config, &[])
}

fn change(gw: &Gateway, code: &str, headers: &[(&str, &str)]) -> Response {
    change_to(gw, code, "Hepsi-n3w-pw", headers)
}

fn change_to(gw: &Gateway, code: &str, password: &str, headers: &[(&str, &str)]) -> Response {
    remember_secret(password);
    let body = serde_json::json!({
        "reset_code": code, "session_id": "perm-42", "new_password": password,
    })
    .to_string();
    gw.post_with("/reset/complete", "key-h", &body, headers)
}

fn issue(sandbox: &Sandbox, vendor: &str, identifier: &str) -> String {
    let r = request(
        sandbox.addr,
        "POST",
        &format!("/sandbox/{vendor}/reset-codes"),
        &[],
        format!(r#"{{"identifier":"{identifier}"}}"#).as_bytes(),
    );
    assert_eq!(r.status, 200);
    r.json()["reset_code"].as_str().unwrap().to_string()
}

/// In each wire format, Hepsiburada gets the end user's address (through trusted proxies only),
/// agent and session id, and the request's `X-Request-Id`: the caller's, or when it sent none,
/// the one the gateway answered with.
#[test]
fn hepsiburada_gets_the_end_users_address_through_trusted_proxies_only() {
    for (format, media_type) in [("json", "application/json"), ("xml", "application/xml")] {
        let sandbox = Sandbox::start();
        let trusting = hepsiburada_in(&sandbox, "\"127.0.0.0/8\"", format);
        let code = issue(&sandbox, "hepsiburada", EMAIL);
        let r = change(
            &trusting,
            &code,
            &[
                ("X-Forwarded-For", "203.0.113.7, 127.0.0.5"),
                ("User-Agent", "Browser/1.0"),
                ("X-Request-Id", "it-hepsi-change.1"),
            ],
        );
        assert_eq!(
            r.status,
            200,
            "{format}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.header("X-Request-Id"), Some("it-hepsi-change.1"));
        let last = sandbox.last_request("hepsiburada");
        let content_type = last["content_type"].as_str().unwrap_or_default();
        assert!(content_type.starts_with(media_type), "{format}: {last}");
        assert_eq!(last["IPAddress"], "203.0.113.7", "{format}: {last}");
        assert_eq!(last["UserAgent"], "Browser/1.0", "{format}: {last}");
        assert_eq!(last["PermanentSessionId"], "perm-42", "{format}: {last}");
        assert_eq!(last["RequestFromIdentityServer"], true, "{format}: {last}");
        assert_eq!(last["request_id"], "it-hepsi-change.1", "{format}: {last}");

        // A gateway that trusts no proxy ignores the header: the peer is the end user. The
        // caller sends no request id: the vendor gets the one the gateway answers with.
        let wary = hepsiburada_in(&sandbox, "", format);
        let code = issue(&sandbox, "hepsiburada", "mei@example.com");
        let r = change(
            &wary,
            &code,
            &[
                ("X-Forwarded-For", "203.0.113.7"),
                ("User-Agent", "Other-Agent/2.0"),
            ],
        );
        assert_eq!(
            r.status,
            200,
            "{format}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let answered = r.header("X-Request-Id").expect("every answer has an id");
        assert!(!answered.is_empty());
        let last = sandbox.last_request("hepsiburada");
        let content_type = last["content_type"].as_str().unwrap_or_default();
        assert!(content_type.starts_with(media_type), "{format}: {last}");
        assert_eq!(last["IPAddress"], "127.0.0.1", "{format}: {last}");
        assert_eq!(last["UserAgent"], "Other-Agent/2.0", "{format}: {last}");
        assert_eq!(last["PermanentSessionId"], "perm-42", "{format}: {last}");
        assert_eq!(last["request_id"], answered, "{format}: {last}");
    }
}

#[test]
fn hepsiburada_needs_the_end_users_agent() {
    let sandbox = Sandbox::start();
    let gw = hepsiburada(&sandbox, "");
    let code = issue(&sandbox, "hepsiburada", EMAIL);
    let r = change(&gw, &code, &[("User-Agent", " ")]);
    let p = r.problem(400, "invalid_request");
    assert!(p["detail"].as_str().unwrap().contains("User-Agent"));
    assert_eq!(sandbox.calls("hepsiburada"), 0);
}

fn amsalem(sandbox: &Sandbox, digest: &str) -> Gateway {
    Gateway::start(&amsalem_config(sandbox, digest), AMSALEM_ENV)
}

fn amsalem_change(gw: &Gateway, code: &str, user: &str) -> Response {
    amsalem_change_to(gw, code, user, "Amsalem-n3w")
}

fn amsalem_change_to(gw: &Gateway, code: &str, user: &str, password: &str) -> Response {
    remember_secret(password);
    let body = serde_json::json!({
        "reset_code": code,
        "identifier": {"type": "username", "value": user},
        "email": EMAIL,
        "new_password": password,
    });
    gw.post("/reset/complete", "key-a", &body.to_string())
}

#[test]
fn amsalem_refuses_a_digest_made_by_another_recipe() {
    let sandbox = Sandbox::start();
    // Base64, or hex in upper case: the sandbox's recipe is lower-case hex.
    for encoding in ["base64", "HEX"] {
        let gw = amsalem(
            &sandbox,
            &format!("[connections.a.amsalem.digest]\nencoding = \"{encoding}\""),
        );
        let code = issue(&sandbox, "amsalem", "somchai");
        let p = amsalem_change(&gw, &code, "somchai").problem(502, "upstream_error");
        assert!(
            p["detail"].as_str().unwrap().contains("digest"),
            "{encoding}: {p}"
        );
        assert_eq!(p["vendor"]["code"], "INVALID_DIGEST", "{encoding}");
        // The sandbox quotes the digest it was sent; a request's signature is never shown.
        assert_eq!(
            p["vendor"]["message"], "Invalid digest '[redacted]'.",
            "{encoding}"
        );
    }
}

#[test]
fn amsalem_keys_belong_to_one_user_and_the_identifier_is_required() {
    let sandbox = Sandbox::start();
    let gw = amsalem(&sandbox, "");
    let code = issue(&sandbox, "amsalem", "somchai");
    amsalem_change(&gw, &code, "mei").problem(422, "invalid_otp");
    let r = gw.post(
        "/reset/complete",
        "key-a",
        &format!(r#"{{"reset_code":"{code}","new_password":"Amsalem-n3w"}}"#),
    );
    r.problem(400, "invalid_request");
    assert_eq!(amsalem_change(&gw, &code, "somchai").status, 200);
    // A key is good once.
    amsalem_change(&gw, &code, "somchai").problem(422, "invalid_otp");
}

/// Sends the Amsalem sandbox a change of somchai's password under `code`, signed by the sandbox's
/// API user with `salt`, as an adapter would; its JSON answer.
fn amsalem_sandbox_change(
    sandbox: &Sandbox,
    code: &str,
    salt: u64,
    password: &str,
) -> serde_json::Value {
    use reset_gateway::signing::{Inputs, Recipe};
    let digest = Recipe::amsalem_default().compute(&Inputs {
        api_username: "sandbox-api",
        salt,
        key: code,
        new_password: password,
        user_name: "somchai",
        email: "",
        secret: "sandbox-amsalem-secret",
    });
    let body = format!(
        r#"{{"User":{{"UserName":"somchai","Email":"","Key":"{code}"}},"UserNewPassword":"{password}","UserName":"sandbox-api","Salt":{salt},"Digest":"{digest}"}}"#
    );
    request(
        sandbox.addr,
        "POST",
        "/amsalem/api/Customers/ChangePassword",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
    .json()
}

#[test]
fn the_amsalem_sandbox_refuses_a_replayed_salt() {
    let sandbox = Sandbox::start();
    let code = issue(&sandbox, "amsalem", "somchai");
    let send = || amsalem_sandbox_change(&sandbox, &code, 987_654_321_012, "Replay-1234");
    assert_eq!(send()["Success"], true);
    let replay = send();
    assert_eq!(replay["Success"], false);
    assert_eq!(replay["Extra1"], "SALT_REUSED");
}

#[test]
fn the_amsalem_sandbox_refuses_a_salt_that_counts_on_from_the_last() {
    let sandbox = Sandbox::start();
    // Each change with a salt one more than the last, as a counter (or a clock read in quick
    // succession) would make: the first is taken, the next is not a random number.
    let change = |salt: u64, password: &str| {
        let code = issue(&sandbox, "amsalem", "somchai");
        amsalem_sandbox_change(&sandbox, &code, salt, password)
    };
    assert_eq!(change(500_000_000_000, "Counted-1234")["Success"], true);
    let next = change(500_000_000_001, "Counted-5678");
    assert_eq!(next["Success"], false);
    assert_eq!(next["Extra1"], "INVALID_REQUEST");
    // A salt far from the last is taken.
    assert_eq!(change(731_902_448_116, "Random-9012")["Success"], true);
}

#[test]
fn guessing_a_users_reset_code_is_bounded_like_guessing_an_otp() {
    // Five wrong codes for one user (wrong_otps_per_reset's default), then that user's
    // completions are refused without calling the vendor, the right code's included; a right
    // code or a refused password gives its cell back, and other users are not affected.
    let sandbox = Sandbox::start();
    let gw = amsalem(&sandbox, "");
    let code = issue(&sandbox, "amsalem", "somchai");
    let weak = gw.post(
        "/reset/complete",
        "key-a",
        &format!(
            r#"{{"reset_code":"{code}","identifier":{{"type":"username","value":"somchai"}},"new_password":"short"}}"#
        ),
    );
    weak.problem(422, "password_rejected");
    for _ in 0..5 {
        amsalem_change(&gw, "wrong-code", "somchai").problem(422, "invalid_otp");
    }
    let calls = sandbox.calls("amsalem");
    let r = amsalem_change(&gw, &code, "somchai");
    let p = r.problem(429, "attempts_exceeded");
    assert_eq!(p["limit"], "per-reset", "{p}");
    assert!(r.header("Retry-After").is_some());
    assert_eq!(
        sandbox.calls("amsalem"),
        calls,
        "refused without calling Amsalem"
    );
    // Another user's guesses are counted apart.
    let mei = issue(&sandbox, "amsalem", "mei");
    let r = gw.post(
        "/reset/complete",
        "key-a",
        &format!(
            r#"{{"reset_code":"{mei}","identifier":{{"type":"username","value":"mei"}},"new_password":"Amsalem-n3w"}}"#
        ),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));

    // Nor can a guesser test codes under made-up user names, which spend no real user's cells:
    // a key issued to another user and a wrong key are answered alike (Amsalem's USER_MISMATCH
    // and INVALID_KEY told them apart), so a guess learns nothing until it names the key's user.
    let someone = issue(&sandbox, "amsalem", "somchai");
    let mut answers = [someone.as_str(), "wrong-code"].map(|code| {
        let mut body = amsalem_change(&gw, code, "made-up-user").json();
        body.as_object_mut().unwrap().remove("request_id");
        body
    });
    assert_eq!(answers[0], answers[1]);
    let p = answers[0].as_object_mut().unwrap();
    assert_eq!(p["code"], "invalid_otp");
    assert!(p.get("vendor").is_none(), "{p:?}");
}

#[test]
fn a_misconfigured_connection_costs_no_user_a_wrong_code() {
    // Amsalem refuses a digest made by another recipe before it looks at the key: no code was
    // judged, so however often a user retries while the connection is wrong, none of their
    // wrong-code allowance is used up.
    let sandbox = Sandbox::start();
    let gw = amsalem(
        &sandbox,
        "[connections.a.amsalem.digest]\nencoding = \"base64\"",
    );
    let code = issue(&sandbox, "amsalem", "somchai");
    for _ in 0..7 {
        let p = amsalem_change(&gw, &code, "somchai").problem(502, "upstream_error");
        assert_eq!(p["vendor"]["code"], "INVALID_DIGEST");
    }
}

/// A refused password is quoted back by both code-flow sandboxes, with the reset code (Amsalem)
/// or the end user's session (Hepsiburada): support staff see the vendor's words, never those.
#[test]
fn what_a_code_flow_vendor_quotes_back_is_never_shown() {
    let sandbox = Sandbox::start();
    let weak = "tiny&\"pw";
    let gw = amsalem(&sandbox, "");
    let code = issue(&sandbox, "amsalem", "somchai");
    let p = amsalem_change_to(&gw, &code, "somchai", weak).problem(422, "password_rejected");
    assert_eq!(p["vendor"]["code"], "PASSWORD_POLICY", "{p}");
    let message = p["vendor"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("The password '[redacted]' for key [redacted] needs"),
        "{message}"
    );

    let gw = hepsiburada(&sandbox, "");
    let code = issue(&sandbox, "hepsiburada", EMAIL);
    let p = change_to(&gw, &code, weak, &[("User-Agent", "Browser/1.0")])
        .problem(422, "password_rejected");
    let message = p["vendor"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("Password '[redacted]' for session [redacted] needs"),
        "{message}"
    );
    let shown = p.to_string();
    assert!(
        !shown.contains("perm-42") && !shown.contains("tiny&"),
        "{shown}"
    );
    gw.assert_logs_clean(&["perm-42", weak, &code]);
}

/// .NET's serializers keep the spaces at the ends of a string, and a password may have them: in
/// XML too the code-flow vendors get the password whole (Amsalem signs it into its digest).
#[test]
fn a_password_with_spaces_at_its_ends_is_kept_whole_in_xml() {
    let sandbox = Sandbox::start();
    let spaced = "  Spaced-pass-1 ";
    let gw = Gateway::start(&amsalem_config_in(&sandbox, "xml", ""), AMSALEM_ENV);
    let code = issue(&sandbox, "amsalem", "somchai");
    let r = amsalem_change_to(&gw, &code, "somchai", spaced);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        sandbox.last_request("amsalem")["content_type"],
        "application/xml"
    );

    // Hepsiburada stores what it was sent: read trimmed, the second change would be a reuse.
    let gw = hepsiburada(&sandbox, "");
    let agent = [("User-Agent", "Browser/1.0")];
    let code = issue(&sandbox, "hepsiburada", EMAIL);
    assert_eq!(change_to(&gw, &code, spaced, &agent).status, 200);
    let code = issue(&sandbox, "hepsiburada", EMAIL);
    assert_eq!(change_to(&gw, &code, spaced.trim(), &agent).status, 200);
    let code = issue(&sandbox, "hepsiburada", EMAIL);
    change_to(&gw, &code, spaced.trim(), &agent).problem(422, "password_reused");
    let last = sandbox.last_request("hepsiburada");
    assert_eq!(last["content_type"], "application/xml");
}

/// A body Hepsiburada's model cannot take is answered as ASP.NET Web API answers it, HTTP 400
/// with a `Message`: never an answer an adapter could read as a refused password.
#[test]
fn the_hepsiburada_sandbox_answers_an_invalid_request_as_aspnet_does() {
    let sandbox = Sandbox::start();
    let code = issue(&sandbox, "hepsiburada", EMAIL);
    let path = "/hepsiburada/api/Customer/PasswordChange";
    // Everything but the end user's address.
    let body = serde_json::json!({
        "RequestFromIdentityServer": true, "Password": "Hepsi-n3w-pw", "ChangeRequestId": code,
        "UserAgent": "Browser/1.0", "PermanentSessionId": "perm-42",
    });
    let json = [("Content-Type", "application/json")];
    let r = request(
        sandbox.addr,
        "POST",
        path,
        &json,
        body.to_string().as_bytes(),
    );
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        serde_json::json!({"Message": "The request is invalid."})
    );
    let xml = [("Content-Type", "application/xml")];
    let r = request(
        sandbox.addr,
        "POST",
        path,
        &xml,
        b"<PasswordChangeRequest/>",
    );
    assert_eq!(r.status, 400);
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        "<Error><Message>The request is invalid.</Message></Error>"
    );
    // The change request was not touched: the gateway's whole request still uses it.
    let gw = hepsiburada(&sandbox, "");
    let r = change(&gw, &code, &[("User-Agent", "Browser/1.0")]);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}
