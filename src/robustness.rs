//! Mutation tests of every parser that reads outside input: canonical bodies, reset ids, vendor
//! answers in JSON and XML. Each is fed thousands of mangled variants of valid samples (bytes
//! flipped, cut, repeated, spliced) from a fixed seed; none may panic. A stable-toolchain stand-in
//! for coverage-guided fuzzing, run with the unit tests.

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use crate::api::types::{parse, CompleteRequest, StartRequest, VerifyRequest};
    use crate::token::TokenKeys;
    use crate::vendors::{amsalem, capillary, cbss, hepsiburada};

    const ROUNDS: usize = 3_000;

    fn mangle(rng: &mut StdRng, sample: &[u8]) -> Vec<u8> {
        let mut out = sample.to_vec();
        for _ in 0..rng.gen_range(1..6) {
            let len = out.len().max(1);
            match rng.gen_range(0..6) {
                0 if !out.is_empty() => {
                    let i = rng.gen_range(0..out.len());
                    out[i] ^= 1 << rng.gen_range(0..8);
                }
                1 => out.truncate(rng.gen_range(0..len)),
                2 if !out.is_empty() => {
                    let i = rng.gen_range(0..out.len());
                    let b = out[i];
                    out.insert(i, b);
                }
                3 => {
                    let i = rng.gen_range(0..=out.len());
                    let junk: &[u8] = [
                        &b"{"[..],
                        b"}",
                        b"[",
                        b"\"",
                        b"<",
                        b"&amp;",
                        b"<!DOCTYPE x>",
                        b"\xff",
                        b"\\u0000",
                        b"99999999999999999999999",
                    ][rng.gen_range(0..10)];
                    out.splice(i..i, junk.iter().copied());
                }
                4 if out.len() > 2 => {
                    let a = rng.gen_range(0..out.len());
                    let b = rng.gen_range(a..out.len());
                    let piece = out[a..b].to_vec();
                    out.extend_from_slice(&piece);
                }
                _ => {
                    let i = rng.gen_range(0..=out.len());
                    out.insert(i, rng.gen());
                }
            }
        }
        out
    }

    fn survive(name: &str, samples: &[&[u8]], read: impl Fn(&[u8])) {
        let mut rng = StdRng::seed_from_u64(0x5eed);
        for sample in samples {
            read(sample);
            for _ in 0..ROUNDS {
                let input = mangle(&mut rng, sample);
                let outcome =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read(&input)));
                assert!(
                    outcome.is_ok(),
                    "{name} panicked on {:?}",
                    String::from_utf8_lossy(&input)
                );
            }
        }
    }

    #[test]
    fn canonical_bodies_never_panic() {
        survive(
            "parse",
            &[
                br#"{"identifier":{"type":"email","value":"a@example.com"},"device_id":"d-1"}"#,
                br#"{"reset_id":"AQ","otp":"123456"}"#,
                br#"{"reset_code":"c","identifier":{"type":"username","value":"u"},"email":"a@b.co","new_password":"p"}"#,
            ],
            |b| {
                let _ = parse::<StartRequest>(b);
                let _ = parse::<VerifyRequest>(b);
                let _ = parse::<CompleteRequest>(b);
            },
        );
    }

    #[test]
    fn reset_ids_never_panic() {
        let keys = TokenKeys::ephemeral();
        let claims = crate::token::ResetClaims {
            id: "i".into(),
            tenant: "t".into(),
            subject: "s".into(),
            step: crate::token::Step::Verify,
            expires_at: 1,
            concealed: false,
            state_width: 0,
            vendor: serde_json::json!({"id": 1}),
        };
        let token = keys.seal(&claims);
        survive("open", &[token.as_bytes()], |b| {
            let _ = keys.open(&String::from_utf8_lossy(b));
        });
    }

    #[test]
    fn vendor_answers_never_panic() {
        survive(
            "vendor answers",
            &[
                br#"{"IsSuccessful":false,"Messages":[{"Code":"INVALID_OTP","Message":"Invalid"}],"ClientCode":"C","DateTime":"x","Content":{"CustomerForgotUsernamePasswordID":1}}"#,
                br#"<ChangePassword xmlns="urn:a"><Content xmlns="urn:b"><CustomerForgotUsernamePasswordID>1</CustomerForgotUsernamePasswordID></Content><IsSuccessful>true</IsSuccessful><Messages><Message><Code>X</Code></Message></Messages></ChangePassword>"#,
                br#"{"status":{"success":false,"code":1506,"message":"Invalid OTP"},"user":{"sessionId":"P-1"}}"#,
                br#"{"Success":false,"Message":"m","Extra1":"INVALID_KEY","Extra2":null,"Extra3":null}"#,
                br#"<PasswordChangeResponse xmlns="urn:x"><Code>PasswordUsedBefore</Code><ExceptionMessageList><string>u</string></ExceptionMessageList><IsValid>true</IsValid><Success>false</Success></PasswordChangeResponse>"#,
            ],
            |b| {
                let _ = cbss::read_answer(200, b, &[]);
                let _ = capillary::read_answer(200, b, &[]);
                let _ = amsalem::read_answer(200, b, &[]);
                let _ = hepsiburada::read_answer(200, b, &[]);
                let _ = crate::xml::parse(b);
            },
        );
    }
}
