//! The canonical steps: open the reset id, call the tenant's vendor adapter, seal the next reset id.
//!
//! The gateway keeps no per-reset state: everything a later step needs travels sealed in the
//! reset id. Concealment lives here: a vendor's "no such identifier" becomes an ordinary-looking
//! reset whose verification fails, unless the tenant chose to reveal it.

use std::time::Duration;

use serde::Serialize;

use crate::api::types::{CompleteRequest, StartRequest, VerifyRequest};
use crate::api::{ErrorCode, Problem};
use crate::gateway::Tenant;
use crate::token::{ResetClaims, Step, TokenKeys};
use crate::vendors::{CodeInput, StartInput, StepContext};

/// A successful step's answer: its status and JSON body.
pub struct StepReply {
    pub status: u16,
    pub body: Vec<u8>,
}

#[derive(Serialize)]
struct Progress<'a> {
    reset_id: &'a str,
    next: &'static str,
    expires_at: String,
}

#[derive(Serialize)]
struct Completed {
    status: &'static str,
}

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

fn rfc3339(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn progress(keys: &TokenKeys, claims: &ResetClaims, status: u16) -> StepReply {
    let token = keys.seal(claims);
    let next = match claims.step {
        Step::Verify => "verify",
        Step::Complete => "complete",
    };
    let body = Progress {
        reset_id: &token,
        next,
        expires_at: rfc3339(claims.expires_at),
    };
    StepReply {
        status,
        body: serde_json::to_vec(&body).expect("progress serializes"),
    }
}

/// A reset never outlives the tenant's lifetime nor the vendor's own session.
fn lifetime(tenant: &Tenant) -> Duration {
    match tenant.adapter.session_lifetime() {
        Some(vendor) => vendor.min(tenant.settings.reset_lifetime),
        None => tenant.settings.reset_lifetime,
    }
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

pub async fn start(
    keys: &TokenKeys,
    tenant: &Tenant,
    ctx: &StepContext,
    req: StartRequest,
) -> Result<StepReply, Problem> {
    let input = StartInput {
        identifier: req.identifier,
        device_id: req.device_id.unwrap_or_else(crate::request_id::generate),
    };
    let (vendor, concealed) = match tenant.adapter.start(ctx, &input).await {
        Ok(state) => (state, false),
        Err(p) if p.code == ErrorCode::IdentifierNotFound => {
            if tenant.settings.reveal_unknown_identifiers {
                return Err(Problem {
                    detail: "no account has this identifier".into(),
                    ..p
                });
            }
            (serde_json::Value::Null, true)
        }
        Err(p) => return Err(p),
    };
    let claims = ResetClaims {
        id: crate::request_id::generate(),
        tenant: tenant.settings.name.clone(),
        step: Step::Verify,
        expires_at: now_secs() + lifetime(tenant).as_secs() as i64,
        concealed,
        vendor,
    };
    Ok(progress(keys, &claims, 202))
}

pub async fn verify(
    keys: &TokenKeys,
    tenant: &Tenant,
    ctx: &StepContext,
    req: VerifyRequest,
) -> Result<StepReply, Problem> {
    let claims = open(keys, tenant, &req.reset_id, Step::Verify)?;
    if claims.concealed {
        // The vendor never knew this identifier: fail exactly as a wrong code would.
        return Err(Problem::new(
            ErrorCode::InvalidOtp,
            "the one-time code is wrong",
        ));
    }
    let vendor = tenant.adapter.verify(ctx, &claims.vendor, &req.otp).await?;
    let next = ResetClaims {
        step: Step::Complete,
        vendor,
        ..claims
    };
    Ok(progress(keys, &next, 200))
}

pub async fn complete(
    keys: &TokenKeys,
    tenant: &Tenant,
    ctx: &StepContext,
    req: CompleteRequest,
) -> Result<StepReply, Problem> {
    match (req.reset_id, req.reset_code) {
        (Some(reset_id), None) => {
            let claims = open(keys, tenant, &reset_id, Step::Complete)?;
            tenant
                .adapter
                .complete(ctx, &claims.vendor, &req.new_password)
                .await?;
        }
        (None, Some(reset_code)) => {
            let input = CodeInput {
                reset_code,
                identifier: req.identifier,
                email: req.email,
                session_id: req.session_id,
                new_password: req.new_password,
            };
            tenant.adapter.complete_with_code(ctx, &input).await?;
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
