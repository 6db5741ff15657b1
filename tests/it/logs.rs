//! Structured logs: with `log.format = "json"`, one JSON line per request naming its request id,
//! tenant, step, vendor, outcome and durations, and nothing secret.

use crate::harness::*;

/// The JSON log line of the request whose id is `request_id`, as text and parsed, waited for
/// (the line is written as the answer goes out, not before).
fn request_line(gw: &Gateway, request_id: &str) -> (String, serde_json::Value) {
    for _ in 0..50 {
        if let Some(line) = gw.proc.logs().lines().find(|l| l.contains(request_id)) {
            let v = serde_json::from_str(line).expect("the line is JSON");
            return (line.to_string(), v);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("no log line for the request {request_id}");
}

#[test]
fn json_logs_have_one_line_per_request_with_its_facts() {
    let sandbox = Sandbox::start();
    let config = format!("[log]\nformat = \"json\"\n{}", cbss_config(&sandbox, ""));
    let gw = Gateway::start(&config, CBSS_ENV);
    let r = gw.post_with(
        "/reset",
        "key-json",
        &start_body("email", EMAIL),
        &[("X-Request-Id", "log-test-1")],
    );
    assert_eq!(r.status, 202);
    let reset_id = r.json()["reset_id"].as_str().unwrap().to_string();
    let (_, v) = request_line(&gw, "log-test-1");
    let f = &v["fields"];
    assert_eq!(f["message"], "request");
    assert_eq!(f["request_id"], "log-test-1");
    assert_eq!(f["tenant"], "json");
    assert_eq!(f["step"], "start");
    assert_eq!(f["vendor"], "cbss");
    assert_eq!(f["status"], 202);
    assert_eq!(f["code"], "ok");
    assert!(f["duration_us"].as_u64().unwrap() >= f["upstream_us"].as_u64().unwrap());
    assert!(f["upstream_us"].as_u64().unwrap() > 0);
    for l in gw.proc.logs().lines() {
        serde_json::from_str::<serde_json::Value>(l).expect("every line is JSON");
    }
    assert!(
        !gw.proc.logs().contains(&reset_id[..24]),
        "no reset id in the logs"
    );
}

#[test]
fn a_vendor_call_the_steps_deadline_cut_off_is_in_the_lines_vendor_time() {
    // The vendor takes 2 s; the step may take 500 ms. The call was under way for all of them,
    // and the line says so, as the vendor metrics do.
    let sandbox = Sandbox::start_with_delay(2_000);
    let timeouts = VendorTimeouts {
        read_ms: 4000,
        write_ms: 4000,
        total_ms: 500,
        ..VendorTimeouts::default()
    };
    let config = format!(
        "[log]\nformat = \"json\"\n{}",
        cbss_config_timed(&sandbox, timeouts, "")
    );
    let gw = Gateway::start(&config, CBSS_ENV);
    gw.post_with(
        "/reset",
        "key-json",
        &start_body("email", EMAIL),
        &[("X-Request-Id", "cut-off-1")],
    )
    .problem(504, "upstream_timeout");
    let (line, v) = request_line(&gw, "cut-off-1");
    let upstream_us = v["fields"]["upstream_us"].as_u64().unwrap();
    assert!(
        (400_000..2_000_000).contains(&upstream_us),
        "upstream_us {upstream_us}: {line}"
    );
}
