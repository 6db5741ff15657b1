//! The limits a step checks before and around its vendor calls: the per-identifier and outbound
//! decisions (the per-key limit is checked in `Gateway::step`), and the wrong-code cell a
//! verification or code-flow completion holds while its code is checked.

use std::sync::Arc;
use std::time::Instant;

use crate::api::{ErrorCode, Problem};
use crate::gateway::Tenant;
use crate::limit::{LimitName, LimitState, Mode, Quota};
use crate::task_room::TaskRoom;
use crate::vendors::CanonicalStep;

use super::Env;

/// A limit checked before any vendor call, as of `env.checked_at`.
pub(super) async fn check(
    env: &Env<'_>,
    name: LimitName,
    key: &str,
    quota: Quota,
    mode: Mode,
) -> Result<LimitState, LimitState> {
    check_noting_when(env, name, key, quota, mode).await.0
}

/// `check`, and when its decision held: `env.checked_at` for a backend that decides at once,
/// else when the answer came (Redis decides by its own clock, after the wait).
async fn check_noting_when(
    env: &Env<'_>,
    name: LimitName,
    key: &str,
    quota: Quota,
    mode: Mode,
) -> (Result<LimitState, LimitState>, Instant) {
    let (decision, waited) =
        crate::limit::decide_noting_wait(env.limiter.as_ref(), key, quota, mode, env.checked_at)
            .await;
    crate::metrics::limiter_decision(name, decision.allowed);
    let state = LimitState {
        name,
        quota,
        decision,
    };
    let at = if waited {
        Instant::now()
    } else {
        env.checked_at
    };
    (
        if decision.allowed {
            Ok(state)
        } else {
            Err(state)
        },
        at,
    )
}

/// Spends the connection's outbound budget for all of `step`'s vendor calls at once.
pub(super) async fn spend_outbound(
    env: &Env<'_>,
    tenant: &Tenant,
    step: CanonicalStep,
) -> Result<(), Problem> {
    let calls = tenant.adapter.vendor_calls(step);
    let Some(budget) = &tenant.outbound else {
        return Ok(());
    };
    if calls == 0 {
        return Ok(());
    }
    let (decision, at) = check_noting_when(
        env,
        LimitName::Outbound,
        &budget.key,
        budget.quota,
        Mode::Consume(calls),
    )
    .await;
    let (Ok(state) | Err(state)) = &decision;
    // A fallback's decision is this replica's share of the budget, not the account's: it would
    // show the budget as nearly spent for as long as it is quiet.
    if !state.decision.fallback {
        budget.gauge.record(&state.decision, at);
    }
    // Every call the budget allowed counts, a fallback's too: it is spent all the same.
    if decision.is_ok() {
        budget.gauge.spent(calls);
    }
    decision.map(|_| ()).map_err(|state| {
        Problem::limited(
            ErrorCode::UpstreamUnavailable,
            format!(
                "the gateway's budget of calls to {} is spent for now",
                tenant.adapter.vendor()
            ),
            state,
        )
    })
}

/// `503` for a security check the shared store (Redis) must make and cannot now: a reset's wrong
/// codes and its single use are never decided without it, whatever the limits' failure policy
/// says, since no replica's memory knows what the others (or Redis, before it failed) counted.
pub(super) fn store_unavailable(what: &str) -> Problem {
    Problem::new(
        ErrorCode::UpstreamUnavailable,
        format!("the gateway cannot check {what} right now (its shared store is not answering); try again shortly"),
    )
    .with_retry_after(1)
}

/// Holds one cell of a wrong-code count (`key` under `quota`) while a code is checked: the code
/// keeps it only if it was wrong (`give_the_guess_back` otherwise). Peeking first and spending
/// only on a wrong code let concurrent guesses all pass the peek while one cell was left, and all
/// reach the vendor: a burst of guesses per cell instead of one. The count is a security check,
/// never decided without the shared store: then the code is not checked at all (a cell the
/// `local` policy spent stays spent in this replica's memory, which never decides this limit).
pub(super) async fn hold_a_guess(
    env: &Env<'_>,
    key: &str,
    quota: Quota,
    counted: &str,
    exceeded: &'static str,
) -> Result<(), Problem> {
    let held = check(env, LimitName::PerReset, key, quota, Mode::Consume(1)).await;
    let (Ok(state) | Err(state)) = &held;
    if state.decision.fallback {
        return Err(store_unavailable(counted));
    }
    held.map(|_| ())
        .map_err(|state| Problem::limited(ErrorCode::AttemptsExceeded, exceeded, state))
}

/// Refunds sent to a limiter that must wait (Redis) and not yet answered: at most 4,096 at once,
/// as a Redis that stalls under load would otherwise gather one task per verification. One
/// dropped keeps its cell until the cell comes back by itself (one reset lifetime): it costs the
/// user a try, never gives a guesser one.
static PENDING_REFUNDS: TaskRoom = TaskRoom::new(4096);

/// Gives back the cell `hold_a_guess` took, for a code that was not shown wrong. The vendor has
/// answered by now, and what it did must be what the caller is told: an in-memory limiter gives
/// the cell back at once, and Redis is sent the refund on a task of its own, so that a slow
/// Redis can neither hold the answer nor, past the step's deadline, turn the vendor's success
/// (a code accepted, a password changed) into a `504`.
pub(super) fn give_the_guess_back(env: &Env<'_>, key: &str, quota: Quota) {
    let refund = Mode::Refund(1);
    if env
        .limiter
        .decide_now(key, quota, refund, Instant::now())
        .is_some()
    {
        return;
    }
    let Some(place) = PENDING_REFUNDS.take() else {
        return;
    };
    let (limiter, key) = (Arc::clone(env.limiter), key.to_owned());
    tokio::spawn(async move {
        let _place = place;
        limiter.check(&key, quota, refund).await;
    });
}

/// Whether a verification gives its per-reset cell back: a right code does, and so does an outcome
/// that surely judged no code wrong (the vendor unreachable or throttling, the outbound budget
/// spent, the reset expired at the vendor). A wrong code keeps its cell, and so does whatever may
/// hide a judgement: a timeout, an answer the gateway cannot map (a vendor naming a wrong code in
/// a way the gateway does not know must still spend a cell, or guesses would be unlimited), or the
/// vendor's own lockout (it may be its answer to the wrong code that used up its count).
pub(super) fn gives_its_cell_back<T>(result: &Result<T, Problem>) -> bool {
    match result {
        Ok(_) => true,
        Err(p) => matches!(
            p.code,
            ErrorCode::UpstreamUnavailable | ErrorCode::ResetExpired
        ),
    }
}
