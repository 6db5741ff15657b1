//! The request path's own work, piece by piece: `cargo bench --bench hot_path`.
//! (The limiter has its own benchmark: `cargo bench --bench limiter`.)

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use reset_gateway::api::types::{parse, StartRequest, VerifyRequest};
use reset_gateway::api::{ErrorCode, Problem};
use reset_gateway::signing::{sha256_hex, HexCase, Inputs, Recipe};
use reset_gateway::token::{ResetClaims, Step, TokenKeys};
use reset_gateway::vendors::{amsalem, capillary, cbss, dotnet_timestamp, hepsiburada};

fn hot_path(c: &mut Criterion) {
    let start =
        br#"{"identifier":{"type":"email","value":"somchai@example.com"},"device_id":"d-1"}"#;
    c.bench_function("parse POST /reset body", |b| {
        b.iter(|| parse::<StartRequest>(black_box(start)).unwrap())
    });
    let verify = br#"{"reset_id":"AQJrMd7j0VfHAGlxaDbfOz6O1Xj","otp":"123456"}"#;
    c.bench_function("parse POST /reset/verify body", |b| {
        b.iter(|| parse::<VerifyRequest>(black_box(verify)).unwrap())
    });

    // CBSS step 1: the envelope as the adapter writes it, its timestamp, and its signature.
    let offset = chrono::FixedOffset::east_opt(8 * 3600).unwrap();
    c.bench_function(
        "cbss request: DateTime + JSON envelope + SHA-256 signature",
        |b| {
            b.iter(|| {
                let body = format!(
                    r#"{{"ClientCode":"DEMO","DateTime":"{}","Content":{{"EmailAddress":{}}}}}"#,
                    dotnet_timestamp(&offset),
                    serde_json::to_string("somchai@example.com").unwrap()
                );
                sha256_hex(
                    &[body.as_bytes(), b"client-key", b"login-salt"],
                    HexCase::Lower,
                )
            })
        },
    );
    let recipe = Recipe::amsalem_default();
    c.bench_function("amsalem digest (default recipe)", |b| {
        b.iter(|| {
            recipe.compute(black_box(&Inputs {
                api_username: "api",
                salt: 123_456_789_012,
                key: "6OcZ36BTiN9L",
                new_password: "Amsalem-n3w",
                user_name: "somchai",
                email: "",
                secret: "secret",
            }))
        })
    });

    let cbss_json = br#"{"IsSuccessful":true,"Messages":[],"ClientCode":"DEMO","DateTime":"2024-11-18T12:34:23.7746368+08:00","Content":{"CustomerForgotUsernamePasswordID":1}}"#;
    c.bench_function("cbss answer, JSON -> outcome", |b| {
        b.iter(|| cbss::read_answer(200, black_box(cbss_json), &[]))
    });
    let cbss_xml = br#"<EmailAddressOrMobilePhoneNumber xmlns:i="http://www.w3.org/2001/XMLSchema-instance" xmlns="urn:r"><ClientCode xmlns="urn:a">DEMO</ClientCode><Content xmlns="urn:a"><CustomerForgotUsernamePasswordID>1</CustomerForgotUsernamePasswordID></Content><DateTime xmlns="urn:a">2024-11-18T12:34:23.7746368+08:00</DateTime><IsSuccessful xmlns="urn:b">false</IsSuccessful><Messages xmlns="urn:b"><Message><Code>INVALID_OTP</Code><Message>Invalid OTP.</Message></Message></Messages></EmailAddressOrMobilePhoneNumber>"#;
    c.bench_function("cbss answer, XML -> problem", |b| {
        b.iter(|| cbss::read_answer(200, black_box(cbss_xml), &[]))
    });
    let capillary_json = br#"{"status":{"success":false,"code":1506,"message":"Invalid OTP"}}"#;
    c.bench_function("capillary answer -> problem", |b| {
        b.iter(|| capillary::read_answer(200, black_box(capillary_json), &[]))
    });
    let amsalem_json =
        br#"{"Success":true,"Message":"OK","Extra1":null,"Extra2":null,"Extra3":null}"#;
    c.bench_function("amsalem answer -> outcome", |b| {
        b.iter(|| amsalem::read_answer(200, black_box(amsalem_json), &[]))
    });
    let hepsi_json = br#"{"Email":"e","UserId":null,"Code":9000,"ExceptionMessageList":["Used"],"IsValid":true,"Success":false,"InformationMessageList":[],"WarningMessageList":[]}"#;
    c.bench_function("hepsiburada answer -> problem", |b| {
        b.iter(|| hepsiburada::read_answer(200, black_box(hepsi_json), &[]))
    });

    let keys = TokenKeys::ephemeral();
    let claims = ResetClaims {
        id: "0123456789abcdef0123456789abcdef".into(),
        tenant: "demo-cbss".into(),
        subject: "0123456789abcdef0123456789abcdef".into(),
        step: Step::Verify,
        expires_at: 1_900_000_000,
        concealed: false,
        vendor: serde_json::json!({"id": 1000}),
    };
    c.bench_function("reset id seal", |b| {
        b.iter(|| keys.seal(black_box(&claims)))
    });
    let token = keys.seal(&claims);
    c.bench_function("reset id open", |b| {
        b.iter(|| keys.open(black_box(&token)).unwrap())
    });

    let problem = Problem::new(ErrorCode::InvalidOtp, "the one-time code is wrong");
    c.bench_function("problem+json rendering", |b| {
        b.iter(|| black_box(&problem).to_json("0123456789abcdef0123456789abcdef", true))
    });
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
