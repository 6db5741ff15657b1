//! The conformance suite: every vendor runs through the same code, as vector's components all
//! pass one compliance test. Each canonical step against the vendor's sandbox either succeeds or
//! answers 501; wrong codes, weak and reused passwords map to the same canonical problems; nothing
//! secret reaches the logs; and every wire format the vendor has is exercised.

use crate::harness::*;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Flow {
    /// start -> verify -> complete with the reset_id.
    Otp,
    /// complete with a vendor-issued reset_code.
    Code,
}

struct Case {
    vendor: &'static str,
    flow: Flow,
    formats: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case {
        vendor: "cbss",
        flow: Flow::Otp,
        formats: &["json", "xml"],
    },
    Case {
        vendor: "capillary",
        flow: Flow::Otp,
        formats: &["json"],
    },
    Case {
        vendor: "amsalem",
        flow: Flow::Code,
        formats: &["json", "xml"],
    },
    Case {
        vendor: "hepsiburada",
        flow: Flow::Code,
        formats: &["json", "xml"],
    },
];

const KEY: &str = "key-conformance";

/// Secrets each vendor's connection uses, passed in the environment and looked for in the logs.
const ENV: &[(&str, &str)] = &[
    ("IT_CBSS_KEY", "sandbox-client-key"),
    ("IT_CBSS_LOGIN_SALT", "sandbox-login-salt"),
    ("IT_CBSS_FORGOT_SALT", "sandbox-forgot-salt"),
    ("IT_CAPILLARY_KEY", "sandbox-capillary-key"),
    ("IT_AMSALEM_SECRET", "sandbox-amsalem-secret"),
];

fn vendor_table(vendor: &str, format: &str) -> String {
    match vendor {
        "cbss" => format!(
            "format = \"{format}\"\nclient_code = \"DEMO\"\nclient_key_env = \"IT_CBSS_KEY\"\n\
             login_salt_env = \"IT_CBSS_LOGIN_SALT\"\nforgot_salt_env = \"IT_CBSS_FORGOT_SALT\"\n"
        ),
        "capillary" => "brand = \"DocDemo\"\napi_key_env = \"IT_CAPILLARY_KEY\"\n".to_string(),
        "amsalem" => format!(
            "format = \"{format}\"\napi_username = \"sandbox-api\"\nsecret_env = \"IT_AMSALEM_SECRET\"\n"
        ),
        "hepsiburada" => format!("format = \"{format}\"\n"),
        other => panic!("the conformance suite has no configuration for {other}"),
    }
}

fn gateway(sandbox: &Sandbox, vendor: &str, format: &str) -> Gateway {
    let config = format!(
        "[connections.c]\nbase_url = \"{}\"\n[connections.c.{vendor}]\n{}\n\
         [[tenants]]\nname = \"t\"\nconnection = \"c\"\napi_keys = [{{ name = \"k\", key_sha256 = \"{}\" }}]\n",
        sandbox.url(vendor),
        vendor_table(vendor, format),
        sha256_hex(KEY),
    );
    Gateway::start(&config, ENV)
}

/// How the vendor's requests are seen: the sandbox reads either format, so only the request's
/// `Content-Type` tells which one a step used.
struct Wire<'a> {
    sandbox: &'a Sandbox,
    vendor: &'static str,
    format: &'a str,
}

impl Wire<'_> {
    /// Runs `step` and asserts it reached the vendor (more calls than before it) and that its
    /// last request went in the connection's format, and for CBSS in the fallback language (no
    /// Accept-Language is sent).
    fn step<T>(&self, what: &str, step: impl FnOnce() -> T) -> T {
        let before = self.sandbox.calls(self.vendor);
        let out = step();
        let vendor = self.vendor;
        let format = self.format;
        assert!(
            self.sandbox.calls(vendor) > before,
            "{vendor} ({format}) {what}: no vendor call"
        );
        let sent = self.sandbox.last_request(vendor);
        let media_type = sent["content_type"].as_str().unwrap_or_default();
        let media_type = media_type.split(';').next().unwrap_or_default().trim();
        assert_eq!(
            media_type,
            format!("application/{format}"),
            "{vendor} ({format}) {what}: {sent}"
        );
        let language = match vendor {
            "cbss" => serde_json::json!("en_US"),
            _ => serde_json::Value::Null,
        };
        assert_eq!(
            sent["language"], language,
            "{vendor} ({format}) {what}: {sent}"
        );
        out
    }
}

/// A reset ready to complete: a verified reset id, or a vendor-issued code.
enum Ready {
    ResetId(String),
    Code(String),
}

fn issue_code(sandbox: &Sandbox, vendor: &str) -> String {
    let body = format!(r#"{{"identifier":"{EMAIL}"}}"#);
    let path = format!("/sandbox/{vendor}/reset-codes");
    let r = request(sandbox.addr, "POST", &path, &[], body.as_bytes());
    assert_eq!(r.status, 200, "{vendor} issues reset codes");
    let code = r.json()["reset_code"].as_str().unwrap().to_string();
    remember_secret(&code);
    code
}

fn ready(gw: &Gateway, wire: &Wire<'_>, case: &Case) -> Ready {
    match case.flow {
        Flow::Otp => {
            let reset_id = wire.step("start", || start_reset(gw, KEY, "email", EMAIL));
            let otp = wire.sandbox.last_otp(EMAIL);
            let v = wire.step("verify", || verify(gw, KEY, &reset_id, &otp));
            assert_eq!(v.status, 200, "{}: verify", case.vendor);
            Ready::ResetId(v.json()["reset_id"].as_str().unwrap().to_string())
        }
        Flow::Code => Ready::Code(issue_code(wire.sandbox, case.vendor)),
    }
}

/// Completes `ready` with `password`, asserting the completion reached the vendor in its format.
fn finish(gw: &Gateway, wire: &Wire<'_>, ready: &Ready, password: &str) -> Response {
    wire.step("complete", || send_completion(gw, ready, password))
}

fn send_completion(gw: &Gateway, ready: &Ready, password: &str) -> Response {
    remember_secret(password);
    match ready {
        Ready::ResetId(id) => complete(gw, KEY, id, password),
        Ready::Code(code) => gw.post(
            "/reset/complete",
            KEY,
            &format!(
                r#"{{"reset_code":"{code}","identifier":{{"type":"username","value":"somchai"}},"new_password":"{password}"}}"#
            ),
        ),
    }
}

/// Every step the vendor lacks answers 501, whatever the body.
fn unsupported_steps_answer_501(gw: &Gateway, case: &Case) {
    let start = start_body("email", EMAIL);
    let with_code = r#"{"reset_code":"c","identifier":{"type":"username","value":"somchai"},"new_password":"Passw0rd-x"}"#;
    let with_id = r#"{"reset_id":"x","new_password":"Passw0rd-x"}"#;
    let verify_body = r#"{"reset_id":"x","otp":"123456"}"#;
    let lacking: Vec<(&str, &str)> = match case.flow {
        Flow::Otp => vec![("/reset/complete", with_code)],
        Flow::Code => vec![
            ("/reset", start.as_str()),
            ("/reset/verify", verify_body),
            ("/reset/complete", with_id),
        ],
    };
    for (path, body) in lacking {
        gw.post(path, KEY, body).problem(501, "unsupported_step");
    }
    // A start or verification the vendor lacks is 501 before its body is read: fixing the
    // body would not make the step exist.
    if let Flow::Code = case.flow {
        for path in ["/reset", "/reset/verify"] {
            gw.post(path, KEY, "{}").problem(501, "unsupported_step");
        }
    }
}

fn wrong_codes_are_invalid_otp(gw: &Gateway, wire: &Wire<'_>, case: &Case) {
    match case.flow {
        Flow::Otp => {
            let reset_id = wire.step("start", || start_reset(gw, KEY, "email", EMAIL));
            let otp = wire.sandbox.last_otp(EMAIL);
            let wrong = wrong_code_for(&otp);
            wire.step("verify", || verify(gw, KEY, &reset_id, wrong))
                .problem(422, "invalid_otp");
        }
        Flow::Code => {
            finish(gw, wire, &Ready::Code("NOT-A-CODE".into()), "Passw0rd-x")
                .problem(422, "invalid_otp");
        }
    }
}

fn run(case: &Case, format: &str) {
    let sandbox = Sandbox::start();
    let gw = gateway(&sandbox, case.vendor, format);
    let what = format!("{} ({format})", case.vendor);
    let wire = Wire {
        sandbox: &sandbox,
        vendor: case.vendor,
        format,
    };

    unsupported_steps_answer_501(&gw, case);
    assert_eq!(
        sandbox.calls(case.vendor),
        0,
        "{what}: a 501 calls no vendor"
    );
    wrong_codes_are_invalid_otp(&gw, &wire, case);

    let pending = ready(&gw, &wire, case);
    let weak = finish(&gw, &wire, &pending, "weakpw");
    assert_eq!(
        weak.json()["code"],
        "password_rejected",
        "{what}: weak password"
    );
    weak.problem(422, "password_rejected");
    let reused = finish(&gw, &wire, &pending, OLD_PASSWORD);
    assert_eq!(
        reused.json()["code"],
        "password_reused",
        "{what}: reused password"
    );
    reused.problem(422, "password_reused");
    let done = finish(&gw, &wire, &pending, "Conformance-n3w");
    assert_eq!(
        done.status,
        200,
        "{what}: {}",
        String::from_utf8_lossy(&done.body)
    );
    assert_eq!(done.json(), serde_json::json!({"status": "completed"}));

    // The vendor now holds the new password.
    let again = ready(&gw, &wire, case);
    finish(&gw, &wire, &again, "Conformance-n3w").problem(422, "password_reused");

    let secrets: Vec<&str> = ENV.iter().map(|(_, v)| *v).collect();
    gw.assert_logs_clean(&secrets);
}

#[test]
fn the_suite_covers_every_vendor_the_gateway_speaks() {
    let mut suite: Vec<&str> = CASES.iter().map(|c| c.vendor).collect();
    let mut known = reset_gateway::vendors::NAMES.to_vec();
    suite.sort();
    known.sort();
    assert_eq!(suite, known, "add the new vendor to the conformance suite");
}

#[test]
fn cbss_conforms() {
    for format in CASES[0].formats {
        run(&CASES[0], format);
    }
}

#[test]
fn capillary_conforms() {
    for format in CASES[1].formats {
        run(&CASES[1], format);
    }
}

#[test]
fn amsalem_conforms() {
    for format in CASES[2].formats {
        run(&CASES[2], format);
    }
}

#[test]
fn hepsiburada_conforms() {
    for format in CASES[3].formats {
        run(&CASES[3], format);
    }
}

#[test]
fn reset_ids_are_as_long_whichever_vendor_serves_a_tenant_that_hides_it() {
    // Tenants `cap` (Capillary) and `cbs` (CBSS) hide their vendor (`vendor_details = false`),
    // `web` (Capillary) and `abc` (CBSS) name it. A CBSS reset carries a forgot id, a Capillary
    // one a session, device and identifier: an app of a hiding tenant must not tell which from its
    // reset ids, at either step, for identifiers of any length.
    let sandbox = Sandbox::start();
    let tenant = |name: &str, connection: &str, hides: bool| {
        format!(
            "[[tenants]]\nname = \"{name}\"\nconnection = \"{connection}\"\n\
             vendor_details = {}\napi_keys = [{{ name = \"k\", key_sha256 = \"{}\" }}]\n",
            !hides,
            sha256_hex(&format!("key-{name}"))
        )
    };
    let tenants = [
        tenant("cap", "web", true),
        tenant("cbs", "json", true),
        tenant("abc", "json", false),
    ]
    .concat();
    let config = capillary_config(&sandbox, &cbss_config(&sandbox, &tenants));
    let env: Vec<(&str, &str)> = CAPILLARY_ENV.iter().chain(CBSS_ENV).copied().collect();
    let gw = Gateway::start(&config, &env);
    let lengths = |email: &str, keys: [&str; 2]| -> Vec<(usize, usize)> {
        keys.iter()
            .map(|key| {
                let started = start_reset(&gw, key, "email", email);
                let v = verify(&gw, key, &started, &sandbox.last_otp(email));
                assert_eq!(v.status, 200, "{}", String::from_utf8_lossy(&v.body));
                (started.len(), v.json()["reset_id"].as_str().unwrap().len())
            })
            .collect()
    };
    // Two customers of the sandbox vendors (an unknown one would get a decoy, and no code),
    // their addresses of different lengths.
    for email in [EMAIL, "mei@example.com"] {
        let hidden = lengths(email, ["key-cap", "key-cbs"]);
        assert_eq!(
            hidden[0], hidden[1],
            "{email}: (start, verify) lengths, Capillary then CBSS"
        );
    }
    // Tenants that name their vendor keep the shorter ids their own vendor's state needs.
    let shown = lengths("mei@example.com", ["key-web", "key-abc"]);
    assert!(shown[1].0 < shown[0].0, "{shown:?}");
}
