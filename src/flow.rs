//! The canonical steps: check the step's limits, open the reset id, call the tenant's vendor
//! adapter, seal the next reset id.
//!
//! The gateway keeps no per-reset state: everything a later step needs travels sealed in the
//! reset id. Concealment is decided here: a vendor's "no such identifier" becomes an
//! ordinary-looking reset whose verification fails, unless the tenant chose to reveal it (the
//! decoy's pieces are in `concealment`, the limits' in `limits`).

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::api::types::{CompleteRequest, Identifier, IdentifierKind, StartRequest, VerifyRequest};
use crate::api::{ErrorCode, Problem};
use crate::gateway::Tenant;
use crate::limit::{LimitName, Limiter, Mode, Quota};
use crate::single_use::{Claim, UsedIds};
use crate::token::{ClaimsToSeal, ResetClaims, StateJson, Step, TokenKeys};
use crate::vendors::{CanonicalStep, CodeInput, StartInput, StateRoom, StepContext};

mod concealment;
mod limits;

use concealment::{
    concealed, decoy_code_expired, decoy_state, decoy_wait, expired_code, wrong_code,
};
use limits::{
    check, give_the_guess_back, gives_its_cell_back, hold_a_guess, spend_outbound,
    store_unavailable,
};

/// What every step needs from the gateway besides the tenant.
pub struct Env<'a> {
    pub keys: &'a TokenKeys,
    /// Shared so that bookkeeping after a vendor's answer can run on past the step.
    pub limiter: &'a Arc<dyn Limiter>,
    pub used: &'a dyn UsedIds,
    pub per_identifier: Quota,
    /// When the step's work began (its body read): the in-process limiters decide the limits
    /// checked before any vendor call as of then, so those share one clock read.
    pub checked_at: std::time::Instant,
}

/// A successful step's answer: its status and JSON body.
pub struct StepReply {
    pub status: u16,
    pub body: Vec<u8>,
}

#[derive(Serialize)]
struct Completed {
    status: &'static str,
}

/// The wall clock to the second, for expiry: the coarse clock, a tick behind at most.
fn now_secs() -> i64 {
    crate::timestamp::unix_secs_coarse()
}

/// The answer that carries a sealed reset id; `state_width` as in `TokenKeys::seal_into`.
fn progress(
    keys: &TokenKeys,
    claims: &ClaimsToSeal<'_>,
    state_width: usize,
    status: u16,
) -> StepReply {
    let next = match claims.step {
        Step::Verify => "verify",
        Step::Complete => "complete",
    };
    let mut fit = true;
    let body = progress_body(
        |out| fit = keys.seal_into(claims, state_width, out),
        next,
        claims.expires_at,
    );
    if !fit && state_width > 0 {
        // Not a failure of this reset, but its id is longer than a decoy's would be: the
        // adapter's width is too small for what its vendor answered.
        tracing::warn!(
            tenant = %claims.tenant,
            "a vendor's state outgrew the room sized for it: this reset id is longer than a decoy's"
        );
    }
    StepReply { status, body }
}

/// `{"reset_id":..,"next":..,"expires_at":..}`, written directly: the reset id (about 300
/// characters of base64url) is sealed straight into the body, and neither it nor the step name
/// nor the RFC 3339 expiry has anything JSON would escape.
fn progress_body(
    write_reset_id: impl FnOnce(&mut Vec<u8>),
    next: &str,
    expires_at: i64,
) -> Vec<u8> {
    let mut body = Vec::with_capacity(512);
    body.extend_from_slice(b"{\"reset_id\":\"");
    write_reset_id(&mut body);
    body.extend_from_slice(b"\",\"next\":\"");
    body.extend_from_slice(next.as_bytes());
    body.extend_from_slice(b"\",\"expires_at\":\"");
    crate::timestamp::push_rfc3339_utc(&mut body, expires_at);
    body.extend_from_slice(b"\"}");
    body
}

/// A reset never outlives the tenant's lifetime nor the vendor's own session.
fn lifetime(tenant: &Tenant) -> Duration {
    match tenant.adapter.session_lifetime() {
        Some(vendor) => vendor.min(tenant.settings.reset_lifetime),
        None => tenant.settings.reset_lifetime,
    }
}

/// A stable, non-reversible name for "this identifier at this tenant", for limiter keys.
#[cfg(test)]
fn subject(tenant: &str, identifier: &Identifier) -> String {
    let mut out = String::with_capacity(SUBJECT_LEN);
    push_subject(&mut out, tenant, identifier);
    out
}

/// The length of a subject: 32 hex digits.
const SUBJECT_LEN: usize = 32;

/// The per-identifier limit's key, `per-identifier:{tenant}:{subject}`, whose last
/// `SUBJECT_LEN` bytes are the subject: one string for both, built once.
fn per_identifier_key(tenant: &str, identifier: &Identifier) -> String {
    const PREFIX: &str = "per-identifier:";
    let mut key = String::with_capacity(PREFIX.len() + tenant.len() + 1 + SUBJECT_LEN);
    key.push_str(PREFIX);
    key.push_str(tenant);
    key.push(':');
    push_subject(&mut key, tenant, identifier);
    key
}

/// `subject`, appended to `out`.
fn push_subject(out: &mut String, tenant: &str, identifier: &Identifier) {
    let value = identifier.value.as_str();
    // Borrowed unless lowering changes something: most identifiers arrive as they are stored.
    let normalized: std::borrow::Cow<'_, str> = match identifier.kind {
        IdentifierKind::Mobile => value.trim_start_matches('+').into(),
        // Spaces around a user name or repeated within it are folded, as `code_guesses::key`
        // folds them (`folded_user_name`): a vendor whose lookup trims them would otherwise see
        // one user where each spelling got a fresh allowance of starts and wrong codes. A name
        // with at most single spaces inside folds to itself, so its key is as before.
        IdentifierKind::Username if value.chars().any(char::is_whitespace) => {
            crate::code_guesses::folded_user_name(value).into()
        }
        _ if value
            .bytes()
            .all(|b| b.is_ascii() && !b.is_ascii_uppercase()) =>
        {
            value.into()
        }
        _ => value.to_lowercase().into(),
    };
    let digest = crate::signing::sha256_parts(&[
        tenant.as_bytes(),
        b"\0",
        identifier.kind.as_str().as_bytes(),
        b"\0",
        normalized.as_bytes(),
    ]);
    crate::signing::with_hex_lower(&digest[..SUBJECT_LEN / 2], |hex| out.push_str(hex));
}

/// `501 unsupported_step` unless the tenant's vendor has an OTP start. The gateway asks before
/// it parses the body (fixing a body would not make the step exist), so `start` does not ask
/// again.
pub fn require_start(tenant: &Tenant) -> Result<(), Problem> {
    require(tenant, CanonicalStep::Start, "OTP start (POST /reset)")
}

/// `501 unsupported_step` unless the tenant's vendor has an OTP verification, asked as
/// `require_start` is (so `verify` does not ask again).
pub fn require_verify(tenant: &Tenant) -> Result<(), Problem> {
    require(
        tenant,
        CanonicalStep::Verify,
        "OTP verification (POST /reset/verify)",
    )
}

/// `501 unsupported_step` when the tenant's vendor has no such step.
fn require(tenant: &Tenant, step: CanonicalStep, what: &str) -> Result<(), Problem> {
    if tenant.adapter.supports(step) {
        Ok(())
    } else {
        Err(crate::vendors::unsupported(tenant.adapter.vendor(), what))
    }
}

/// Whether a failed completion surely left the vendor untouched, so the reset id may be used again
/// (to choose a better password, say). A timeout or an unreadable answer may hide a change that
/// happened: those keep the id used.
fn vendor_surely_did_nothing(p: &Problem) -> bool {
    !matches!(
        p.code,
        ErrorCode::UpstreamTimeout | ErrorCode::UpstreamError
    )
}

fn wrong_otp_key(claims: &ResetClaims) -> String {
    format!("per-reset:{}:{}", claims.tenant, claims.subject)
}

/// Opens a reset id presented under `tenant`'s key and checks it is ready for `step`.
fn open(
    keys: &TokenKeys,
    tenant: &Tenant,
    reset_id: &str,
    step: Step,
) -> Result<ResetClaims, Problem> {
    let invalid = || {
        Problem::new(
            ErrorCode::InvalidResetId,
            "the reset id is not valid for this API key",
        )
    };
    let claims = keys.open(reset_id).map_err(|_| invalid())?;
    if claims.tenant != tenant.settings.name {
        return Err(invalid());
    }
    if claims.expires_at <= now_secs() {
        return Err(Problem::new(
            ErrorCode::ResetExpired,
            "the reset has expired; start again",
        ));
    }
    if claims.step != step {
        let detail = match claims.step {
            Step::Verify => "this reset id is for /reset/verify",
            Step::Complete => "this reset id is for /reset/complete",
        };
        return Err(Problem::new(ErrorCode::WrongStep, detail));
    }
    Ok(claims)
}

/// OTP flow, step 1. The caller has answered 501 already for a vendor without it
/// (`require_start`).
pub async fn start(
    env: &Env<'_>,
    tenant: &Tenant,
    ctx: &StepContext,
    req: StartRequest,
) -> Result<StepReply, Problem> {
    let input = StartInput {
        identifier: req.identifier,
        device_id: req.device_id,
    };
    tenant.adapter.check_start(&input)?;
    let key = per_identifier_key(&tenant.settings.name, &input.identifier);
    let subject = &key[key.len() - SUBJECT_LEN..];
    check(
        env,
        LimitName::PerIdentifier,
        &key,
        env.per_identifier,
        Mode::Consume(1),
    )
    .await
    .map_err(|state| {
        Problem::limited(
            ErrorCode::RateLimited,
            "too many resets for this identifier; try again later",
            state,
        )
    })?;
    spend_outbound(env, tenant, CanonicalStep::Start).await?;

    // A tenant that hides its vendor pads to the widest state of any vendor, so its reset ids
    // are as long whichever serves it; one that names its vendor in every problem, to its own.
    let state_width = match tenant.settings.vendor_details {
        true => tenant.adapter.start_state_width(&input),
        false => crate::vendors::widest_start_state(&input),
    };
    // The reset's lifetime counts from before the vendor's first call, where the vendor's own
    // session (Capillary's fifteen minutes) starts: a reset never outlives it.
    let issued_at = now_secs();
    let sent = std::time::Instant::now();
    let started = tenant.adapter.start(ctx, &input).await;
    // What one vendor call of this start took: a decoy's verification waits about as long.
    let per_call = sent.elapsed() / tenant.adapter.vendor_calls(CanonicalStep::Start).max(1);
    let (vendor, concealed) = match started {
        Ok(state) => (state, false),
        Err(p) if p.code == ErrorCode::IdentifierNotFound => {
            if tenant.settings.reveal_unknown_identifiers {
                return Err(Problem {
                    detail: "no account has this identifier".into(),
                    ..p
                });
            }
            (decoy_state(per_call, state_width), true)
        }
        Err(p)
            if p.code == ErrorCode::RateLimited
                && p.limit.is_none()
                && !tenant.settings.reveal_unknown_identifiers =>
        {
            // The vendor will send this identifier no more codes for now (Capillary's 1534),
            // which only an identifier it knows can reach: saying so would tell that the account
            // exists, so it is answered as an unknown one is.
            tracing::info!(
                tenant = %tenant.settings.name,
                "the vendor sends this identifier no more codes for now: answered as a decoy, to conceal that it exists"
            );
            (decoy_state(per_call, state_width), true)
        }
        Err(p) => return Err(p),
    };
    let id = crate::request_id::RequestId::random();
    let mut room = StateRoom::new();
    let claims = ClaimsToSeal {
        id: &id,
        tenant: &tenant.settings.name,
        subject,
        step: Step::Verify,
        expires_at: issued_at + lifetime(tenant).as_secs() as i64,
        concealed,
        vendor: StateJson::Text(vendor.json(&mut room)),
    };
    Ok(progress(env.keys, &claims, state_width, 202))
}

/// OTP flow, step 2. The caller has answered 501 already for a vendor without it
/// (`require_verify`).
pub async fn verify(
    env: &Env<'_>,
    tenant: &Tenant,
    ctx: &StepContext,
    req: VerifyRequest,
) -> Result<StepReply, Problem> {
    let claims = open(env.keys, tenant, &req.reset_id, Step::Verify)?;
    let otp_key = wrong_otp_key(&claims);
    let otp_quota = tenant.settings.wrong_otp_quota;
    hold_a_guess(
        env,
        &otp_key,
        otp_quota,
        "this reset's wrong codes",
        "too many wrong codes for this reset; try again later",
    )
    .await?;

    let result = async {
        spend_outbound(env, tenant, CanonicalStep::Verify).await?;
        if claims.concealed {
            // The vendor never knew this identifier: fail exactly as a wrong code would, and as
            // late (recent_durations.rs).
            let wait = tenant
                .recent_verifications
                .draw()
                .or_else(|| decoy_wait(&claims.vendor));
            if let Some(wait) = wait {
                tokio::time::sleep(wait).await;
            }
            return Err(match decoy_code_expired(tenant, &claims) {
                true => expired_code(),
                false => wrong_code(),
            });
        }
        let sent = tenant
            .recent_verifications
            .due()
            .then(std::time::Instant::now);
        let result = tenant.adapter.verify(ctx, &claims.vendor, &req.otp).await;
        let judged = match &result {
            Ok(_) => true,
            Err(p) => p.code == ErrorCode::InvalidOtp,
        };
        if let (Some(sent), true) = (sent, judged) {
            tenant.recent_verifications.record(sent.elapsed());
        }
        result
    }
    .await;
    // For a tenant that conceals, what a decoy could never meet is answered as a decoy's would
    // be, before the cell is judged, so that the count moves alike for both too.
    let result = match result {
        Err(p) if !tenant.settings.reveal_unknown_identifiers => Err(concealed(tenant, &claims, p)),
        other => other,
    };
    if refused_before_the_code(tenant, &result) || gives_its_cell_back(&result) {
        give_the_guess_back(env, &otp_key, otp_quota);
    }
    let vendor = result?;
    let next = ResetClaims {
        step: Step::Complete,
        vendor,
        ..claims
    };
    // The start's width, kept where the tenant hides its vendor, so that the next reset id is as
    // long whichever vendor serves it (a decoy never gets here: no other reason to pad).
    let width = match tenant.settings.vendor_details {
        true => 0,
        false => next.state_width,
    };
    Ok(progress(env.keys, &next.to_seal(), width, 200))
}

/// Whether the vendor refused the step before it looked at the code (its adapter says so), so no
/// code was judged and the user's wrong-code cell comes back.
fn refused_before_the_code<T>(tenant: &Tenant, result: &Result<T, Problem>) -> bool {
    result
        .as_ref()
        .err()
        .is_some_and(|p| tenant.adapter.refused_before_the_code(p))
}

pub async fn complete(
    env: &Env<'_>,
    tenant: &Tenant,
    ctx: &StepContext,
    req: CompleteRequest,
) -> Result<StepReply, Problem> {
    match (req.reset_id, req.reset_code) {
        (Some(reset_id), None) => {
            require(
                tenant,
                CanonicalStep::Complete,
                "completion with a reset_id",
            )?;
            let claims = open(env.keys, tenant, &reset_id, Step::Complete)?;
            // The claim outlives the id by a margin: whether the id has expired is judged by each
            // replica's wall clock, while the claim expires by Redis's (or this process's
            // monotonic) clock. Without the margin, a replica whose clock lags would still open
            // the id after its claim was gone, and a used id could change the password again.
            let ttl = Duration::from_secs((claims.expires_at - now_secs()).max(1) as u64)
                + crate::single_use::CLAIM_MARGIN;
            let claim = match env.used.claim(&claims.id, ttl).await {
                Claim::Claimed(token) => token,
                Claim::AlreadyUsed => {
                    return Err(Problem::new(
                        ErrorCode::WrongStep,
                        "this reset id was already used to complete the reset",
                    ))
                }
                Claim::Unknown => return Err(store_unavailable("that this reset id is unused")),
            };
            let result = match spend_outbound(env, tenant, CanonicalStep::Complete).await {
                Ok(()) => {
                    tenant
                        .adapter
                        .complete(ctx, &claims.vendor, &req.new_password)
                        .await
                }
                Err(p) => Err(p),
            };
            if let Err(p) = result {
                if vendor_surely_did_nothing(&p) {
                    env.used.release(&claims.id, claim).await;
                }
                // A tenant that conceals unknown identifiers never answers 404: a customer the
                // vendor no longer finds (an account gone since its reset began) is told to
                // start again, as for an expired reset.
                return Err(match p.code {
                    ErrorCode::IdentifierNotFound
                        if !tenant.settings.reveal_unknown_identifiers =>
                    {
                        expired_code()
                    }
                    _ => p,
                });
            }
        }
        (None, Some(reset_code)) => {
            require(
                tenant,
                CanonicalStep::CompleteWithCode,
                "completion with a reset_code",
            )?;
            let input = CodeInput {
                reset_code,
                identifier: req.identifier,
                email: req.email,
                session_id: req.session_id,
                new_password: req.new_password,
            };
            tenant.adapter.check_code(ctx, &input)?;
            // As at verify, a code holds a cell of its user's count while it is checked and
            // keeps it only if it was wrong (code_guesses.rs); and as there, the count is a
            // security check, never decided without the shared store.
            let quota = tenant.settings.wrong_otp_quota;
            let key = tenant
                .adapter
                .code_owner(&input)
                .map(|owner| crate::code_guesses::key(&tenant.settings.name, owner));
            if let Some(key) = &key {
                hold_a_guess(
                    env,
                    key,
                    quota,
                    "this user's wrong reset codes",
                    "too many wrong reset codes for this user; try again later",
                )
                .await?;
            }
            let result = async {
                spend_outbound(env, tenant, CanonicalStep::CompleteWithCode).await?;
                tenant.adapter.complete_with_code(ctx, &input).await
            }
            .await;
            let back = refused_before_the_code(tenant, &result)
                || crate::code_guesses::gives_its_cell_back(&result);
            if let (Some(key), true) = (&key, back) {
                give_the_guess_back(env, key, quota);
            }
            result.map_err(|p| match p.code {
                ErrorCode::InvalidOtp => crate::code_guesses::wrong_code(),
                _ => p,
            })?;
        }
        _ => {
            return Err(Problem::new(
                ErrorCode::InvalidRequest,
                "send either reset_id or reset_code",
            ))
        }
    }
    Ok(StepReply {
        status: 200,
        body: serde_json::to_vec(&Completed {
            status: "completed",
        })
        .expect("serializes"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_progress_body_is_the_json_serde_would_write() {
        let body = progress_body(
            |out| out.extend_from_slice(b"AQJrMQ-_x9"),
            "verify",
            1_795_503_600,
        );
        let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!({
                "reset_id": "AQJrMQ-_x9",
                "next": "verify",
                "expires_at": "2026-11-24T07:00:00Z",
            })
        );
    }

    #[test]
    fn a_subject_names_the_person_not_the_spelling() {
        let id = |kind, value: &str| Identifier {
            kind,
            value: value.to_string(),
        };
        let of = |kind, value| subject("t", &id(kind, value));
        let email = IdentifierKind::Email;
        // Lowered as `str::to_lowercase` lowers, whether or not a copy had to be made.
        for (a, b) in [
            ("somchai@example.com", "SomChai@Example.COM"),
            ("jörg@beispiel.de", "JÖRG@Beispiel.DE"),
        ] {
            assert_eq!(of(email, a), of(email, b), "{a} / {b}");
        }
        assert_eq!(
            of(IdentifierKind::Mobile, "+66812345678"),
            of(IdentifierKind::Mobile, "66812345678")
        );
        assert_eq!(
            of(IdentifierKind::Username, "Somchai"),
            of(IdentifierKind::Username, "somchai")
        );
        // Spaces around a user name, or repeated or other than a space within it, are one
        // spelling; a single space inside is kept, and keeps the name's key.
        let username = |v| of(IdentifierKind::Username, v);
        for spelling in ["somchai ", " somchai", "\tSomchai\u{a0}", "somchai  "] {
            assert_eq!(username(spelling), username("somchai"), "{spelling:?}");
        }
        assert_eq!(username("som  chai "), username("som chai"));
        assert_ne!(username("som chai"), username("somchai"));
        let plain = crate::signing::sha256_parts(&[b"t\0username\0som chai"]);
        crate::signing::with_hex_lower(&plain[..16], |hex| {
            assert_eq!(username("som chai"), hex);
        });
        // The kind and the tenant are part of the name.
        assert_ne!(of(email, "a@b.co"), of(IdentifierKind::Username, "a@b.co"));
        assert_ne!(of(email, "a@b.co"), subject("u", &id(email, "a@b.co")));
        // Limiter keys are made of it, and must not change between releases: SHA-256 of
        // "t\0email\0somchai@example.com", its first 16 bytes in hex.
        assert_eq!(
            of(email, "SomChai@example.com"),
            "48b9e72e4ff2a3ecdc874701755d8904"
        );
        // The per-identifier limit's key is built around it in one string.
        assert_eq!(
            per_identifier_key("t", &id(email, "SomChai@example.com")),
            "per-identifier:t:48b9e72e4ff2a3ecdc874701755d8904"
        );
    }
}
