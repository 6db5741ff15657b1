//! The request path's own work, piece by piece: `cargo bench --bench hot_path`.
//! (The limiter has its own benchmark: `cargo bench --bench limiter`.)

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use std::time::Duration;

use reset_gateway::api::types::{parse, Identifier, IdentifierKind, StartRequest, VerifyRequest};
use reset_gateway::api::{ErrorCode, Problem};
use reset_gateway::secret::Secret;
use reset_gateway::signing::{HexCase, Recipe};
use reset_gateway::token::{ResetClaims, Step, TokenKeys};
use reset_gateway::vendors::amsalem::{self, AmsalemSettings, SaltWidth};
use reset_gateway::vendors::capillary::{self, CapillarySettings, Variant};
use reset_gateway::vendors::cbss::{self, CbssSettings};
use reset_gateway::vendors::hepsiburada::{self, HepsiburadaSettings};
use reset_gateway::vendors::{CodeInput, StartInput, WireFormat};

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

    // Each vendor's request as its adapter builds it (the adapters' own builders, through entries
    // public for benchmarks): body, timestamp, signature or digest, path.
    let email = Identifier {
        kind: IdentifierKind::Email,
        value: "somchai@example.com".into(),
    };
    let cbss = CbssSettings {
        client_code: "DEMO".into(),
        client_key: Secret::new("client-key"),
        login_salt: Secret::new("login-salt"),
        forgot_salt: Secret::new("forgot-salt"),
        format: WireFormat::Json,
        signature_case: HexCase::Lower,
        utc_offset: chrono::FixedOffset::east_opt(8 * 3600).unwrap(),
        session_lifetime: Duration::from_secs(900),
        code_lifetime: Duration::from_secs(300),
        languages: reset_gateway::language::DEFAULT_SERVED.to_vec(),
    };
    c.bench_function(
        "cbss step 1 request: JSON envelope, DateTime, SHA-256 signature",
        |b| b.iter(|| cbss.start_request(black_box(&email), "en_US").unwrap()),
    );
    let cbss_xml_settings = CbssSettings {
        format: WireFormat::Xml,
        ..cbss.clone()
    };
    c.bench_function(
        "cbss step 1 request: XML envelope, DateTime, SHA-256 signature",
        |b| {
            b.iter(|| {
                cbss_xml_settings
                    .start_request(black_box(&email), "en_US")
                    .unwrap()
            })
        },
    );
    let capillary = CapillarySettings {
        brand: "DocDemo".into(),
        variant: Variant::Web,
        api_key: Secret::new("capillary-key"),
        api_key_header: "X-CAP-API-AUTH-KEY".into(),
        session_lifetime: Duration::from_secs(900),
    };
    let capillary_start = StartInput {
        identifier: email.clone(),
        device_id: Some("d-1".into()),
    };
    c.bench_function("capillary token/generate request", |b| {
        b.iter(|| capillary.start_request(black_box(&capillary_start)))
    });
    let code = CodeInput {
        reset_code: "6OcZ36BTiN9L".into(),
        identifier: Some(Identifier {
            kind: IdentifierKind::Username,
            value: "somchai".into(),
        }),
        email: None,
        session_id: Some("s-1".into()),
        new_password: "Amsalem-n3w".into(),
    };
    let amsalem = AmsalemSettings {
        api_username: "api".into(),
        secret: Secret::new("secret"),
        format: WireFormat::Json,
        recipe: Recipe::amsalem_default(),
        salt: SaltWidth::default(),
    };
    c.bench_function(
        "amsalem request: salt, digest (default recipe), JSON body",
        |b| b.iter(|| amsalem.request_body(black_box(&code)).unwrap()),
    );
    let hepsiburada = HepsiburadaSettings {
        format: WireFormat::Json,
        request_from_identity_server: false,
    };
    let client_ip = Some(std::net::IpAddr::from([203, 0, 113, 7]));
    c.bench_function("hepsiburada request: JSON body", |b| {
        b.iter(|| hepsiburada.request_body(black_box(&code), client_ip, "Mozilla/5.0"))
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
        state_width: 0,
        vendor: serde_json::json!({"id": 1000}),
    };
    c.bench_function("reset id seal", |b| {
        b.iter(|| keys.seal(black_box(&claims)))
    });
    // As a start seals it: the state padded to the width every vendor's takes for a start on
    // somchai@example.com (`vendors::start_state_width`: 171 bytes, Capillary's most).
    let padded = ResetClaims {
        state_width: 171,
        ..claims.clone()
    };
    c.bench_function("reset id seal, padded as a start's", |b| {
        b.iter(|| keys.seal(black_box(&padded)))
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
