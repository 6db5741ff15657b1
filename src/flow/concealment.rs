//! Concealment: a decoy reset (for an identifier the vendor does not know) and a real one must
//! answer alike, in what they say and in how long they take, unless the tenant reveals unknown
//! identifiers.

use std::time::Duration;

use crate::api::{ErrorCode, Problem};
use crate::gateway::Tenant;
use crate::token::ResetClaims;
use crate::vendors::StartState;

use super::{lifetime, now_secs};

/// A decoy's vendor state: how long one vendor call of its start took, `{"w":micros}`, so that
/// its verification can wait as long on whichever replica answers it, one that has timed no real
/// verification included. Nothing where the adapter's room is too small for it: a decoy's reset
/// id must be as long as a real one's.
pub(super) fn decoy_state(per_call: Duration, width: usize) -> StartState {
    let micros = u32::try_from(per_call.as_micros()).unwrap_or(u32::MAX);
    let text = format!("{{\"w\":{micros}}}");
    if text.len() <= width {
        StartState::Json(text)
    } else {
        StartState::Nothing
    }
}

/// The wait a decoy's state carries (`decoy_state`), if any.
pub(super) fn decoy_wait(state: &crate::vendors::VendorState) -> Option<Duration> {
    state.get("w")?.as_u64().map(Duration::from_micros)
}

/// Whether a decoy's code would have expired at its vendor by now, for a vendor that answers an
/// expired code differently from a wrong one (`VendorAdapter::code_lifetime`): its start was one
/// reset lifetime before the reset id's expiry.
pub(super) fn decoy_code_expired(tenant: &Tenant, claims: &ResetClaims) -> bool {
    let Some(code) = tenant.adapter.code_lifetime() else {
        return false;
    };
    let started = claims.expires_at - lifetime(tenant).as_secs() as i64;
    now_secs() >= started + code.as_secs() as i64
}

/// An expired reset or code, as a decoy's verification answers it past the vendor's code
/// lifetime and (for a tenant that conceals unknown identifiers) every verification does.
pub(super) fn expired_code() -> Problem {
    Problem::new(
        ErrorCode::ResetExpired,
        "the one-time code or the reset has expired; start again",
    )
}

/// A real verification's failure as a concealing tenant answers it: as a decoy's would be.
pub(super) fn concealed(tenant: &Tenant, claims: &ResetClaims, p: Problem) -> Problem {
    match p.code {
        // A decoy's wrong or expired code has no vendor answer to show, so a real one shows none
        // either: its `vendor` member would tell the account exists.
        ErrorCode::InvalidOtp => wrong_code(),
        ErrorCode::ResetExpired => expired_code(),
        // The vendor's own count of wrong codes ran out (Capillary's 1518, CBSS's) before the
        // gateway's. A decoy, which no vendor counts, says what its age says: a wrong code, or
        // past the vendor's code lifetime an expired one (which gives its cell back, as a
        // decoy's does). A wrong code keeps its cell, so the gateway's own limit then refuses
        // both alike.
        //
        // A vendor that no longer finds the customer (an account gone since its reset began)
        // is answered so too: a concealing tenant never answers 404, and a decoy's verification
        // says only what its age says.
        ErrorCode::AttemptsExceeded if p.limit.is_none() => decoy_answer(tenant, claims),
        ErrorCode::IdentifierNotFound => decoy_answer(tenant, claims),
        _ => p,
    }
}

/// What a decoy's verification of a code its age allows answers: a wrong code, or past the
/// vendor's code lifetime an expired one.
fn decoy_answer(tenant: &Tenant, claims: &ResetClaims) -> Problem {
    match decoy_code_expired(tenant, claims) {
        true => expired_code(),
        false => wrong_code(),
    }
}

/// A wrong one-time code, as a decoy's verification and (for a tenant that conceals unknown
/// identifiers) every verification answer it: one wording, no vendor member.
pub(super) fn wrong_code() -> Problem {
    Problem::new(ErrorCode::InvalidOtp, "the one-time code is wrong")
}
