//! Wrong reset codes in the code flow (Amsalem, Hepsiburada): under whose count a completion's
//! code is checked, and when the completion gives its cell back.
//!
//! A vendor that checks a code against a user (Amsalem: a key belongs to one user name) lets
//! the gateway count wrong codes per user, as it counts wrong OTPs per identifier: guessing one
//! user's code is then as bounded as guessing an OTP. The user must be the one the vendor checks
//! the code against, never a field the vendor ignores, or a guesser would vary that field and
//! never spend a cell. A vendor that finds the reset by the code alone (Hepsiburada's
//! ChangeRequestId) has no user to count against: its codes are the vendor's request ids, and
//! the per-key limit bounds guessing them.

use crate::api::{ErrorCode, Problem};

/// The limiter key for wrong codes against `owner` at `tenant`: a SHA-256 digest of the two, so
/// the key names no user in the clear (a short user name could still be found from it by trying
/// values, which is why Redis must be reachable by the gateway alone). User names are compared
/// as loosely as a vendor's lookup might (case, and spaces around or repeated within): counting
/// two spellings as one user is the safe side, and spellings counted apart would each get a
/// fresh allowance.
pub fn key(tenant: &str, owner: &str) -> String {
    let owner = folded_user_name(owner);
    let digest =
        crate::signing::sha256_parts(&[tenant.as_bytes(), b"\0code-owner\0", owner.as_bytes()]);
    let mut key = String::with_capacity(64);
    key.push_str("per-reset-code:");
    key.push_str(tenant);
    key.push(':');
    crate::signing::with_hex_lower(&digest[..16], |hex| key.push_str(hex));
    key
}

/// A user name as loosely as a vendor's lookup might compare it: lower case, with the whitespace
/// around it dropped and any run of it within written as one space. The per-identifier limit's
/// subject folds usernames the same way.
pub fn folded_user_name(name: &str) -> String {
    name.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Whether a completion gives back the cell its code held: the code was not shown wrong (it
/// worked, had expired, the vendor refused the password, or the vendor was never reached). A
/// wrong code keeps its cell, and so does whatever may hide one (a timeout, an answer the gateway
/// cannot map). The adapter adds the refusals that came before its vendor looked at the code.
pub fn gives_its_cell_back(result: &Result<(), Problem>) -> bool {
    match result {
        Ok(()) => true,
        Err(p) => matches!(
            p.code,
            ErrorCode::UpstreamUnavailable
                | ErrorCode::ResetExpired
                | ErrorCode::PasswordRejected
                | ErrorCode::PasswordReused
        ),
    }
}

/// A wrong code, in one wording and without the vendor's own answer: Amsalem tells a key issued
/// to another user (USER_MISMATCH) from a wrong key (INVALID_KEY), which would let a guesser try
/// codes under made-up user names, spending no real user's cells, and learn which live codes
/// exist. (An expired key still answers as expired under any name: it is of no use to anyone.)
pub fn wrong_code() -> Problem {
    Problem::new(ErrorCode::InvalidOtp, "the reset code is wrong")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_user_one_key_whatever_the_case_and_no_name_in_the_clear() {
        assert_eq!(key("t", "Somchai"), key("t", "somchai"));
        assert_eq!(key("t", " somchai  "), key("t", "somchai"));
        assert_eq!(key("t", "som  chai"), key("t", "som chai"));
        assert_ne!(key("t", "somchai"), key("t", "mei"));
        assert_ne!(key("t", "somchai"), key("u", "somchai"));
        assert!(!key("t", "somchai").contains("somchai"));
    }
}
