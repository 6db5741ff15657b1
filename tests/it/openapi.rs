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
        for method in item.as_object().unwrap().keys() {
            let r = request(gw.api, &method.to_ascii_uppercase(), path, &[], b"");
            assert!(
                r.status != 404 && r.status != 405,
                "{method} {path} is documented but answered {}",
                r.status
            );
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
    let gw = Gateway::start(&cbss_config(&sandbox, ""), CBSS_ENV);
    let doc = document(&gw);
    let schemas = &doc["components"]["schemas"];
    // A valid body for each step, as the schema describes it.
    let valid = [
        (
            "/reset",
            "StartRequest",
            format!(r#"{{"identifier":{{"type":"email","value":"{EMAIL}"}}}}"#),
        ),
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
        for prop in schema["properties"].as_object().unwrap().keys() {
            let r = gw.post(path, "key-json", &body.to_string());
            assert!(!String::from_utf8_lossy(&r.body).contains(&format!("unknown field `{prop}`")));
        }
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
}

#[test]
fn every_status_the_api_answers_is_documented_for_its_path() {
    let mut sandbox = Sandbox::start();
    let gw = Gateway::start(&cbss_config(&sandbox, ""), CBSS_ENV);
    let doc = document(&gw);
    let mut seen: Vec<(&str, u16)> = Vec::new();
    let start = format!(r#"{{"identifier":{{"type":"email","value":"{EMAIL}"}}}}"#);
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
