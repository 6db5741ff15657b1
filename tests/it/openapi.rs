//! `GET /openapi.json` describes exactly what the API listener serves.

use crate::harness::*;

fn document(gw: &Gateway) -> serde_json::Value {
    let r = request(gw.api, "GET", "/openapi.json", &[], b"");
    assert_eq!(r.status, 200);
    r.json()
}

fn documented_statuses(doc: &serde_json::Value, path: &str) -> Vec<u16> {
    let op = &doc["paths"][path]["post"];
    op["responses"]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.parse().unwrap())
        .collect()
}

#[test]
fn every_documented_operation_is_served_and_nothing_else() {
    let sandbox = Sandbox::start();
    let gw = Gateway::start(&cbss_config(&sandbox, ""), CBSS_ENV);
    let doc = document(&gw);
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    let mut names: Vec<&str> = paths.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "/openapi.json",
            "/reset",
            "/reset/complete",
            "/reset/verify"
        ]
    );
    for (path, item) in paths {
        let documented = item.as_object().unwrap();
        for method in ["get", "post", "put", "patch", "delete"] {
            let r = request(gw.api, &method.to_ascii_uppercase(), path, &[], b"");
            if documented.contains_key(method) {
                assert!(
                    r.status != 404 && r.status != 405,
                    "{method} {path} is documented but answered {}",
                    r.status
                );
            } else {
                r.problem(405, "method_not_allowed");
            }
        }
    }
    assert_eq!(
        request(gw.api, "GET", "/reset/cancel", &[], b"").status,
        404
    );
}

#[test]
fn request_schemas_match_what_the_parser_accepts() {
    let sandbox = Sandbox::start();
    let gw = Gateway::start(&cbss_and_hepsiburada_config(&sandbox), CBSS_ENV);
    let doc = document(&gw);
    let schemas = &doc["components"]["schemas"];
    // A valid body for each step, as the schema describes it.
    let valid = [
        ("/reset", "StartRequest", start_body("email", EMAIL)),
        (
            "/reset/verify",
            "VerifyRequest",
            r#"{"reset_id":"x","otp":"123456"}"#.to_string(),
        ),
    ];
    for (path, schema_name, body) in valid {
        let schema = &schemas[schema_name];
        assert_eq!(schema["additionalProperties"], false, "{schema_name}");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        // Every required member, when dropped, is refused as missing.
        for required in schema["required"].as_array().unwrap() {
            let name = required.as_str().unwrap();
            let mut partial = body.clone();
            partial.as_object_mut().unwrap().remove(name);
            let p = gw
                .post(path, "key-json", &partial.to_string())
                .problem(400, "invalid_request");
            assert_eq!(p["detail"], format!("missing field `{name}`"), "{path}");
        }
        // Every documented property is accepted by name; an undocumented one is refused.
        let mut extra = body.clone();
        extra
            .as_object_mut()
            .unwrap()
            .insert("undocumented".into(), 1.into());
        gw.post(path, "key-json", &extra.to_string())
            .problem(400, "invalid_request");
        sends_every_optional_property(&gw, &doc, path, "key-json", schema, &body);
    }
    // CompleteRequest documents two shapes; both are accepted as shapes, and mixing them is not.
    let shapes = schemas["CompleteRequest"]["oneOf"].as_array().unwrap();
    assert_eq!(shapes.len(), 2);
    let with_id = gw.post(
        "/reset/complete",
        "key-json",
        r#"{"reset_id":"x","new_password":"p"}"#,
    );
    with_id.problem(400, "invalid_reset_id");
    let with_code = gw.post(
        "/reset/complete",
        "key-json",
        r#"{"reset_code":"c","new_password":"p"}"#,
    );
    with_code.problem(501, "unsupported_step");
    gw.post(
        "/reset/complete",
        "key-json",
        r#"{"reset_id":"x","reset_code":"c","new_password":"p"}"#,
    )
    .problem(400, "invalid_request");
    // Each shape's optional members are accepted by name. A tenant of a code-flow vendor reads
    // the reset_code shape (a CBSS tenant answers 501 before reading it): Hepsiburada's, which
    // finds the reset by its code alone, answers the unknown code alike whichever optional
    // members come with it.
    let with_id_body = serde_json::json!({"reset_id": "x", "new_password": "p"});
    sends_every_optional_property(
        &gw,
        &doc,
        "/reset/complete",
        "key-json",
        &shapes[0],
        &with_id_body,
    );
    let code_body = serde_json::json!({"reset_code": "not-a-code", "new_password": "Passw0rd-x"});
    sends_every_optional_property(
        &gw,
        &doc,
        "/reset/complete",
        "key-h",
        &shapes[1],
        &code_body,
    );
}

/// A CBSS gateway (tenants `json` and `xml`) with a Hepsiburada tenant `h` (key-h) beside them.
fn cbss_and_hepsiburada_config(sandbox: &Sandbox) -> String {
    let hepsiburada = format!(
        "[connections.h]\nbase_url = \"{}\"\n[connections.h.hepsiburada]\nformat = \"json\"\n\
         [[tenants]]\nname = \"h\"\nconnection = \"h\"\napi_keys = [{{ name = \"k\", key_sha256 = \"{}\" }}]\n",
        sandbox.url("hepsiburada"),
        sha256_hex("key-h")
    );
    cbss_config(sandbox, &hepsiburada)
}

/// Posts `body` (every required member, none of the optional ones) once as it is and once with
/// each optional member of `schema` added, holding a value the schema allows: each is read as
/// a member of the request (never refused as an unknown field) and answered as the body without
/// it is.
fn sends_every_optional_property(
    gw: &Gateway,
    doc: &serde_json::Value,
    path: &str,
    key: &str,
    schema: &serde_json::Value,
    body: &serde_json::Value,
) {
    let required: Vec<&str> = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    let mut sent: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    sent.sort_unstable();
    let mut want = required.clone();
    want.sort_unstable();
    assert_eq!(
        sent, want,
        "{path}: the base body holds the required members only"
    );
    let answer = |r: &Response| (r.status, r.json()["code"].clone());
    let base = gw.post(path, key, &body.to_string());
    assert!(
        !(base.status == 400 && base.json()["code"] == "invalid_request"),
        "{path}: the base body is refused: {}",
        String::from_utf8_lossy(&base.body)
    );
    for (name, property) in schema["properties"].as_object().unwrap() {
        if required.contains(&name.as_str()) {
            continue;
        }
        let mut with = body.clone();
        with.as_object_mut()
            .unwrap()
            .insert(name.clone(), allowed_value(doc, name, property));
        let r = gw.post(path, key, &with.to_string());
        let text = String::from_utf8_lossy(&r.body);
        assert!(
            !text.contains("unknown field"),
            "{path}: the documented `{name}` is refused: {text}"
        );
        assert_eq!(answer(&r), answer(&base), "{path} with `{name}`: {text}");
    }
}

/// A value for the documented optional property `name`, checked against its schema.
fn allowed_value(
    doc: &serde_json::Value,
    name: &str,
    schema: &serde_json::Value,
) -> serde_json::Value {
    let value = match name {
        "device_id" => serde_json::json!("device-1.A_b:9"),
        "identifier" => serde_json::json!({"type": "username", "value": "somchai"}),
        "email" => serde_json::json!(EMAIL),
        "session_id" => serde_json::json!("session-42"),
        other => panic!("the test has no value for the documented property `{other}`: add one"),
    };
    assert_allowed(doc, &value, schema, name);
    value
}

/// Asserts `value` is one the (simple) JSON schema `schema` allows: `$ref`, `type` (string or
/// object), `enum`, `minLength`, `maxLength`, a pattern of the form `^[class]+$`, `required` and
/// `additionalProperties: false`. Panics on any other keyword it would have to ignore.
fn assert_allowed(
    doc: &serde_json::Value,
    value: &serde_json::Value,
    schema: &serde_json::Value,
    at: &str,
) {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("{at}: unexpected $ref {reference}"));
        return assert_allowed(doc, value, &doc["components"]["schemas"][name], at);
    }
    for keyword in schema.as_object().unwrap().keys() {
        assert!(
            [
                "type",
                "enum",
                "minLength",
                "maxLength",
                "pattern",
                "required",
                "properties",
                "additionalProperties",
                "description",
                "format",
            ]
            .contains(&keyword.as_str()),
            "{at}: the test does not check `{keyword}`"
        );
    }
    if let Some(allowed) = schema["enum"].as_array() {
        assert!(
            allowed.contains(value),
            "{at}: {value} is not one of {allowed:?}"
        );
    }
    match schema["type"].as_str() {
        Some("string") => {
            let text = value
                .as_str()
                .unwrap_or_else(|| panic!("{at}: {value} is not a string"));
            let chars = text.chars().count() as u64;
            if let Some(min) = schema["minLength"].as_u64() {
                assert!(chars >= min, "{at}: {text:?} is shorter than {min}");
            }
            if let Some(max) = schema["maxLength"].as_u64() {
                assert!(chars <= max, "{at}: {text:?} is longer than {max}");
            }
            if let Some(pattern) = schema["pattern"].as_str() {
                assert!(
                    matches_class_pattern(pattern, text),
                    "{at}: {text:?} does not match {pattern}"
                );
            }
        }
        Some("object") => {
            let members = value
                .as_object()
                .unwrap_or_else(|| panic!("{at}: {value} is not an object"));
            for required in schema["required"].as_array().into_iter().flatten() {
                let required = required.as_str().unwrap();
                assert!(members.contains_key(required), "{at}: no `{required}`");
            }
            for (member, member_value) in members {
                let member_schema = &schema["properties"][member];
                if member_schema.is_null() {
                    assert_ne!(
                        schema["additionalProperties"], false,
                        "{at}: `{member}` is not allowed"
                    );
                    continue;
                }
                assert_allowed(doc, member_value, member_schema, &format!("{at}.{member}"));
            }
        }
        other => panic!("{at}: the test does not check type {other:?}"),
    }
}

/// Whether `text` matches `pattern`, which must be `^[class]+$` (a class of single characters
/// and `a-z` ranges; a `-` first or last is itself).
fn matches_class_pattern(pattern: &str, text: &str) -> bool {
    let class: Vec<char> = pattern
        .strip_prefix("^[")
        .and_then(|p| p.strip_suffix("]+$"))
        .unwrap_or_else(|| panic!("the test reads only ^[class]+$ patterns, not {pattern}"))
        .chars()
        .collect();
    let mut allowed: Vec<(char, char)> = Vec::new();
    let mut i = 0;
    while i < class.len() {
        if i + 2 < class.len() && class[i + 1] == '-' {
            allowed.push((class[i], class[i + 2]));
            i += 3;
        } else {
            allowed.push((class[i], class[i]));
            i += 1;
        }
    }
    !text.is_empty()
        && text
            .chars()
            .all(|c| allowed.iter().any(|&(low, high)| (low..=high).contains(&c)))
}

#[test]
fn every_status_the_api_answers_is_documented_for_its_path() {
    let mut sandbox = Sandbox::start();
    let gw = Gateway::start(&cbss_config(&sandbox, ""), CBSS_ENV);
    let doc = document(&gw);
    let mut seen: Vec<(&str, u16)> = Vec::new();
    let start = start_body("email", EMAIL);
    seen.push(("/reset", gw.post("/reset", "key-json", &start).status));
    seen.push(("/reset", gw.post("/reset", "nope", &start).status));
    seen.push(("/reset", gw.post("/reset", "key-json", "{").status));
    let big = "x".repeat(20_000);
    seen.push(("/reset", gw.post("/reset", "key-json", &big).status));
    seen.push((
        "/reset",
        request(
            gw.api,
            "POST",
            "/reset",
            &[("Authorization", "Bearer key-json")],
            b"{}",
        )
        .status,
    ));
    let reset_id = start_reset(&gw, "key-json", "email", EMAIL);
    seen.push((
        "/reset/verify",
        verify(&gw, "key-json", &reset_id, "999999x").status,
    ));
    seen.push(("/reset/verify", verify(&gw, "key-json", "bad", "1").status));
    seen.push((
        "/reset/complete",
        complete(&gw, "key-json", &reset_id, "Passw0rd-x").status,
    ));
    let otp = sandbox.last_otp(EMAIL);
    let v = verify(&gw, "key-json", &reset_id, &otp);
    seen.push(("/reset/verify", v.status));
    let next = v.json()["reset_id"].as_str().unwrap().to_string();
    seen.push((
        "/reset/complete",
        complete(&gw, "key-json", &next, "weakpw").status,
    ));
    seen.push((
        "/reset/complete",
        gw.post(
            "/reset/complete",
            "key-json",
            r#"{"reset_code":"c","new_password":"p"}"#,
        )
        .status,
    ));
    seen.push((
        "/reset/complete",
        complete(&gw, "key-json", &next, "Passw0rd-new").status,
    ));
    sandbox.proc.kill();
    seen.push(("/reset", gw.post("/reset", "key-json", &start).status));
    for (path, status) in seen {
        assert!(
            documented_statuses(&doc, path).contains(&status),
            "{path} answered {status}, which /openapi.json does not document"
        );
    }
}

#[test]
fn the_documented_headers_are_the_ones_each_answer_carries() {
    let sandbox = Sandbox::start();
    let gw = Gateway::start(&cbss_config(&sandbox, ""), CBSS_ENV);
    let doc = document(&gw);
    let start = start_body("email", EMAIL);
    let answers = [
        gw.post("/reset", "key-json", &start),
        gw.post("/reset", "no-such-key", &start),
        gw.post("/reset", "key-json", "{"),
    ];
    for answer in answers {
        let documented = &doc["paths"]["/reset"]["post"]["responses"][answer.status.to_string()];
        let headers = documented["headers"]
            .as_object()
            .unwrap_or_else(|| panic!("{} documents no headers", answer.status));
        // Retry-After comes only with some refusals; every other documented header always.
        for name in headers.keys().filter(|name| *name != "Retry-After") {
            assert!(
                answer.header(name).is_some(),
                "a {} answer lacks the documented {name}",
                answer.status
            );
        }
        for name in ["RateLimit", "RateLimit-Policy", "WWW-Authenticate"] {
            if answer.header(name).is_some() {
                assert!(
                    headers.contains_key(name),
                    "a {} answer carries {name}, which is not documented for it",
                    answer.status
                );
            }
        }
    }
    // A bug's answer can come from any operation.
    for path in ["/reset", "/reset/verify", "/reset/complete"] {
        assert!(documented_statuses(&doc, path).contains(&500), "{path}");
    }
}
