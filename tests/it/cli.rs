//! The command line: check-config, hash-key, and the default gateway.toml.

use std::process::Command;

use crate::harness::*;

#[test]
fn check_config_lists_every_problem_and_fails() {
    let (passed, err) = check_config(
        r#"
[server]
api_listen = "nowhere"
[connections.c]
base_url = "ftp://x"
[connections.c.cbss]
client_code = "C"
client_key_env = "IT_SURELY_UNSET_KEY"
login_salt_env = "IT_SURELY_UNSET_LOGIN"
forgot_salt_env = "IT_SURELY_UNSET_FORGOT"
[[tenants]]
name = "t"
connection = "missing"
api_keys = [{ name = "k", key_sha256 = "abc" }]
"#,
    );
    assert!(!passed);
    for expected in [
        "server.api_listen",
        "base_url",
        "IT_SURELY_UNSET_KEY",
        "IT_SURELY_UNSET_LOGIN",
        "IT_SURELY_UNSET_FORGOT",
        "connection `missing`",
        "key_sha256",
        "7 problem(s) found",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
}

#[test]
fn check_config_names_an_unknown_key_and_its_line() {
    let (passed, err) =
        check_config("[server]\napi_listen = \"127.0.0.1:1\"\nthreads = 2\nthread = 3\n");
    assert!(!passed);
    assert!(
        err.contains("unknown field `thread`") && err.contains("line 4"),
        "{err}"
    );
}

#[test]
fn the_default_gateway_toml_is_valid_and_hash_key_matches_it() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(BIN)
        .args(["check-config", &format!("{root}/gateway.toml")])
        .env_remove("GATEWAY_TOKEN_KEYS")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let toml = std::fs::read_to_string(format!("{root}/gateway.toml")).unwrap();
    assert!(toml.contains(&sha256_hex("demo-cbss-key")));
    // hash-key reads standard input when no key is given.
    let mut child = Command::new(BIN)
        .arg("hash-key")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"demo-cbss-key\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        sha256_hex("demo-cbss-key")
    );
    // The demo key is short enough to find from its hash: said, without refusing it.
    let warned = String::from_utf8_lossy(&out.stderr);
    assert!(
        warned.contains("13 characters") && warned.contains("gen-api-key"),
        "{warned}"
    );
}

#[test]
fn gen_api_key_prints_a_new_strong_key_and_its_hash() {
    let generate = || {
        let out = Command::new(BIN).arg("gen-api-key").output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        let field = |name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(name))
                .unwrap_or_else(|| panic!("no {name} in {text}"))
                .to_string()
        };
        (field("key: "), field("key_sha256: "))
    };
    let (key, hash) = generate();
    assert_eq!(key.len(), 43, "{key}");
    assert!(key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    use sha2::Digest;
    assert_eq!(hash, hex::encode(sha2::Sha256::digest(key.as_bytes())));
    assert_ne!(generate().0, key, "each key is new");
    let hash_key = |key: &str| Command::new(BIN).args(["hash-key", key]).output().unwrap();
    // hash-key agrees, and has nothing to warn of.
    let out = hash_key(&key);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), hash);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A key beginning with `-` (as base64url keys made elsewhere may) is a key, not an option.
    let dashed = "-Xb2pQ7mZr4TnV8kLw1sYd3HfJ6gCe9aRu0tNiOq5oE";
    let out = hash_key(dashed);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        hex::encode(sha2::Sha256::digest(dashed.as_bytes()))
    );
}

#[test]
fn the_default_config_serves_the_walkthrough_with_the_in_process_sandbox() {
    // The README's walk-through on gateway.toml.
    let gw = Gateway::start(&default_config_on_free_ports(), &[]);

    let health = request(gw.admin, "GET", "/healthz", &[], b"");
    assert_eq!(health.status, 200);
    // The admin listener's answers carry a request id too, the caller's when it sent one.
    assert!(health
        .header("X-Request-Id")
        .is_some_and(|id| !id.is_empty()));
    let traced = request(
        gw.admin,
        "GET",
        "/healthz",
        &[("X-Request-Id", "probe-1")],
        b"",
    );
    assert_eq!(traced.header("X-Request-Id"), Some("probe-1"));
    assert_eq!(request(gw.admin, "GET", "/readyz", &[], b"").status, 200);

    for key in ["demo-cbss-key", "demo-cbss-xml-key", "demo-capillary-key"] {
        let reset_id = start_reset(&gw, key, "email", EMAIL);
        let outbox = request(gw.admin, "GET", "/sandbox/outbox", &[], b"").json();
        let otp = outbox.as_array().unwrap().last().unwrap()["otp"]
            .as_str()
            .unwrap()
            .to_string();
        let v = verify(&gw, key, &reset_id, &otp);
        assert_eq!(v.status, 200);
        let password = format!("N3w-password-{}", key.len());
        let r = complete(&gw, key, v.json()["reset_id"].as_str().unwrap(), &password);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }

    // The code-flow demo tenants, with codes issued on the admin listener.
    for (key, vendor) in [
        ("demo-amsalem-key", "amsalem"),
        ("demo-hepsiburada-key", "hepsiburada"),
    ] {
        let issued = request(
            gw.admin,
            "POST",
            &format!("/sandbox/{vendor}/reset-codes"),
            &[],
            br#"{"identifier":"somchai"}"#,
        );
        assert_eq!(issued.status, 200);
        let code = issued.json()["reset_code"].as_str().unwrap().to_string();
        remember_secret(&code);
        let body = format!(
            r#"{{"reset_code":"{code}","identifier":{{"type":"username","value":"somchai"}},"new_password":"Code-flow-n3w-{vendor}"}}"#
        );
        let r = gw.post("/reset/complete", key, &body);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
}

#[test]
fn a_second_gateway_on_a_port_in_use_refuses_to_start() {
    // SO_REUSEPORT must not let a second process silently share the first one's port.
    let sandbox = Sandbox::start();
    let first = Gateway::start(&cbss_config(&sandbox, ""), CBSS_ENV);
    let path = std::env::temp_dir().join(format!(
        "reset-gateway-it-second-{}.toml",
        std::process::id()
    ));
    std::fs::write(
        &path,
        format!(
            "[server]\napi_listen = \"{}\"\nadmin_listen = \"127.0.0.1:0\"\n{}",
            first.api,
            cbss_config(&sandbox, "")
        ),
    )
    .unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--config", path.to_str().unwrap()]);
    for (k, v) in CBSS_ENV {
        cmd.env(k, v);
    }
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut second = cmd.spawn().unwrap();
    // It must exit at once; one that starts serving instead is stopped and the test fails.
    let started = std::time::Instant::now();
    while second.try_wait().unwrap().is_none() && started.elapsed().as_secs() < 5 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let running = second.try_wait().unwrap().is_none();
    if running {
        second.kill().unwrap();
    }
    let out = second.wait_with_output().unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(!running, "a second gateway started on a port in use");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "cannot listen on {} for the API listener",
            first.api
        )) && err.to_lowercase().contains("in use"),
        "{err}"
    );
}

/// A valid config of one Capillary tenant whose API key is in `IT_CAPILLARY_KEY`, with `top`
/// before its tables and `connection_extra` in its connection's table.
fn capillary_config(connection_extra: &str, top: &str) -> String {
    format!(
        r#"{top}
[connections.c]
base_url = "http://127.0.0.1:1/"
{connection_extra}
[connections.c.capillary]
brand = "DocDemo"
api_key_env = "IT_CAPILLARY_KEY"
[[tenants]]
name = "t"
connection = "c"
api_keys = [{{ name = "k", key_sha256 = "0000000000000000000000000000000000000000000000000000000000000000" }}]
"#
    )
}

#[test]
fn a_secret_ending_in_a_line_break_is_refused_at_load_without_being_shown() {
    // A Kubernetes Secret made with `--from-file` keeps the file's last line break. Sent as
    // Capillary's API key header, it would end the request's head early and smuggle the rest of
    // the request to the vendor; the gateway refuses to start instead.
    let (passed, err) = check_config_with_env(
        &capillary_config("", ""),
        &[("IT_CAPILLARY_KEY", "capillary-key-value\n")],
    );
    assert!(!passed, "{err}");
    assert!(
        err.contains("IT_CAPILLARY_KEY") && err.contains("control character"),
        "{err}"
    );
    assert!(!err.contains("capillary-key-value"), "{err}");
}

/// Mistakes that used to pass `check-config` and start a gateway that could not work as meant:
/// each is now refused, naming what to fix.
#[test]
fn settings_that_would_start_a_broken_gateway_are_refused() {
    let key = [("IT_CAPILLARY_KEY", "capillary-key")];
    let (passed, err) = check_config_with_env(&capillary_config("", ""), &key);
    assert!(passed, "the base config is valid: {err}");
    let cases = [
        // A mistyped level is a module name to the filter: every log line would be dropped.
        (
            capillary_config("", "[log]\nlevel = \"warning\""),
            "log.level",
        ),
        // A Capillary start spends two calls at once: a budget of one refuses every start.
        (
            capillary_config("outbound_limit = { count = 1, period_secs = 60 }", ""),
            "count must be at least 2",
        ),
        // A misspelt brand's limit would never apply.
        (
            capillary_config(
                "",
                "[limits]\nbrands = { DocDemoo = { count = 5, period_secs = 60 } }",
            ),
            "limits.brands.DocDemoo",
        ),
        (String::new(), "tenants: none configured"),
    ];
    for (toml, expected) in cases {
        let (passed, err) = check_config_with_env(&toml, &key);
        assert!(!passed, "{expected}: passed");
        assert!(err.contains(expected), "{expected}: {err}");
    }
    // A URL's user info is refused without echoing its password.
    let toml = capillary_config("", "").replace("http://127.0.0.1:1/", "http://u:S3cretPW@h:x/");
    let (passed, err) = check_config_with_env(&toml, &key);
    assert!(!passed && err.contains("user info"), "{err}");
    assert!(!err.contains("S3cretPW"), "{err}");
}

/// A gateway others can reach may be one of several replicas: with in-process limits, each would
/// keep its own record of used reset ids and its own wrong-code counts, which `check-config` says.
#[test]
fn in_process_limits_on_an_address_others_reach_are_warned_of() {
    let env = [
        ("IT_CAPILLARY_KEY", "k"),
        (
            "GATEWAY_TOKEN_KEYS",
            "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        ),
    ];
    let warned = |top: &str| {
        let (passed, err) = check_config_with_env(&capillary_config("", top), &env);
        assert!(passed, "{err}");
        err.contains("warning: limits.backend is \"memory\"")
            && err.contains("completed again on another replica")
    };
    let everywhere = "[server]\napi_listen = \"0.0.0.0:8080\"\n";
    assert!(warned(everywhere));
    assert!(warned(&format!(
        "{everywhere}[limits]\nbackend = \"memory\"\n"
    )));
    assert!(!warned(""), "the default listener is loopback: one process");
    assert!(!warned("[server]\napi_listen = \"[::1]:8080\"\n"));
    assert!(!warned(&format!(
        "{everywhere}[limits]\nbackend = \"redis\"\n[limits.redis]\nurl = \"redis://127.0.0.1:6379\"\n"
    )));
}

#[test]
fn cbss_languages_must_be_in_its_form() {
    let config = |languages: &str| {
        cbss_tenant_config(
            "http://127.0.0.1:1/",
            "",
            "DEMO",
            &format!("languages = {languages}"),
        )
    };
    let env = [
        ("IT_CBSS_KEY", "k"),
        ("IT_CBSS_LOGIN_SALT", "l"),
        ("IT_CBSS_FORGOT_SALT", "f"),
    ];
    let (passed, err) = check_config_with_env(&config(r#"["en_US", "th_TH"]"#), &env);
    assert!(passed, "{err}");
    for bad in [
        r#"["en-US"]"#,
        r#"["EN_us"]"#,
        "[]",
        r#"["en_US", "english"]"#,
    ] {
        let (passed, err) = check_config_with_env(&config(bad), &env);
        assert!(!passed && err.contains("cbss.languages"), "{bad}: {err}");
    }
    // On the sandbox's demo client, only what the sandbox takes: anything else fails every reset.
    let on_sandbox = |languages: &str| {
        format!(
            "[sandbox]\nenabled = true\nlisten = \"127.0.0.1:1\"\n\
             [connections.c]\nbase_url = \"http://127.0.0.1:1/\"\n\
             [connections.c.cbss]\nsandbox_credentials = true\nlanguages = {languages}\n\
             [[tenants]]\nname = \"t\"\nconnection = \"c\"\n\
             api_keys = [{{ name = \"k\", key_sha256 = \"{}\" }}]\n",
            "0".repeat(64)
        )
    };
    let (passed, err) = check_config_with_env(&on_sandbox(r#"["th_TH", "en_US"]"#), &[]);
    assert!(passed, "{err}");
    let (passed, err) = check_config_with_env(&on_sandbox(r#"["de_DE"]"#), &[]);
    assert!(
        !passed && err.contains("the sandbox's CBSS takes only en_US, th_TH, zh_TW"),
        "{err}"
    );
}

/// Unset token keys are the demo's random key, with a warning; set but empty is a Secret left
/// unfilled, which across replicas would break resets, and is refused, as is a variable of the
/// operator's own naming left unset.
#[test]
fn token_keys_left_empty_or_unset_under_an_own_name_are_refused_and_unset_ones_warned_of() {
    let config = capillary_config("", "");
    let (passed, err) = check_config_with_env(&config, &[("IT_CAPILLARY_KEY", "k")]);
    assert!(passed, "{err}");
    assert!(
        err.contains("warning: GATEWAY_TOKEN_KEYS is not set"),
        "{err}"
    );
    let (passed, err) = check_config_with_env(
        &config,
        &[("IT_CAPILLARY_KEY", "k"), ("GATEWAY_TOKEN_KEYS", " ")],
    );
    assert!(!passed);
    assert!(err.contains("GATEWAY_TOKEN_KEYS is set but empty"), "{err}");
    let keys = Command::new(BIN)
        .args(["gen-token-key", "k2"])
        .output()
        .unwrap();
    assert!(keys.status.success());
    let spec = String::from_utf8(keys.stdout).unwrap();
    let (passed, err) = check_config_with_env(
        &config,
        &[
            ("IT_CAPILLARY_KEY", "k"),
            ("GATEWAY_TOKEN_KEYS", spec.trim()),
        ],
    );
    assert!(passed && !err.contains("warning"), "{err}");
    // A variable of the operator's own naming, left unset, is a misspelt name or a Secret left
    // out, never the demo's random key.
    let own = format!("[tokens]\nkeys_env = \"ACME_TOKEN_KEYS\"\n{config}");
    let (passed, err) = check_config_with_env(&own, &[("IT_CAPILLARY_KEY", "k")]);
    assert!(!passed);
    assert!(
        err.contains("tokens.keys_env: ACME_TOKEN_KEYS is not set"),
        "{err}"
    );
    let (passed, err) = check_config_with_env(
        &own,
        &[("IT_CAPILLARY_KEY", "k"), ("ACME_TOKEN_KEYS", spec.trim())],
    );
    assert!(passed && !err.contains("warning"), "{err}");
    // An id the gateway would refuse is refused when the key is made, not when pods start.
    for bad in ["k 1", "a:b", ""] {
        let out = Command::new(BIN)
            .args(["gen-token-key", bad])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{bad:?}");
        assert!(out.stdout.is_empty(), "{bad:?}");
    }
}

/// This host's address on the interface a route out would leave by (no packet is sent): a
/// caller that is not loopback, without a second host.
fn non_loopback_address() -> std::net::IpAddr {
    for (bind, peer) in [
        ("0.0.0.0:0", "203.0.113.1:9"),
        ("[::]:0", "[2001:db8::1]:9"),
    ] {
        if let Ok(socket) = std::net::UdpSocket::bind(bind) {
            if socket.connect(peer).is_ok() {
                let ip = socket.local_addr().unwrap().ip();
                if !ip.is_loopback() && !ip.is_unspecified() {
                    return ip;
                }
            }
        }
    }
    panic!("this host has no address but loopback to call from")
}

#[test]
fn the_sandboxs_controls_answer_loopback_callers_only_on_any_address() {
    // Listening on every address, as `--listen 0.0.0.0:9100` would: the vendor APIs answer any
    // caller, as a vendor's do, but the controls hand out the codes that reset the demo
    // accounts, and answer this host's loopback only.
    let sandbox = Sandbox::start_on("0.0.0.0:0", &[]);
    let port = sandbox.addr.port();
    let outside = std::net::SocketAddr::new(non_loopback_address(), port);
    let issue = br#"{"identifier":"somchai"}"#;
    for (method, path, body) in [
        ("GET", "/sandbox/outbox", &b""[..]),
        ("GET", "/sandbox/calls", b""),
        ("POST", "/sandbox/amsalem/reset-codes", issue),
        ("POST", "/sandbox/faults", br#"{"fault":"html","count":1}"#),
    ] {
        let r = request(outside, method, path, &[], body);
        assert_eq!(r.status, 403, "{method} {path} from {outside}");
    }
    // A vendor API answers from outside as from inside (Amsalem refuses this unsigned call in
    // its own words, not with the controls' 403).
    let vendor = request(outside, "POST", "/amsalem/api/ForgotPassword", &[], b"{}");
    assert_ne!(vendor.status, 403);
    // From loopback the controls answer.
    let inside = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let issued = request(inside, "POST", "/sandbox/amsalem/reset-codes", &[], issue);
    assert_eq!(
        issued.status,
        200,
        "{}",
        String::from_utf8_lossy(&issued.body)
    );
    assert_eq!(
        request(inside, "GET", "/sandbox/outbox", &[], b"").status,
        200
    );
}
