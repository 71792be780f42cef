//! A signed request's signature, checked once, before anything the request
//! gets: its decision, any refusal, a first result, any module it checks or
//! runs, anything it appends. What comes before that is only reads, so the
//! handler checks the signature while a decision waits on the network for
//! them (a claim reads its session, its agent and its dependencies fresh)
//! instead of before the reads; a forged request learns nothing but
//! `bad_signature` either way.
use std::sync::{Arc, OnceLock};

use super::{PreparedKey, Signed};
use crate::rejection::{Rejection, Result};

pub struct Verification {
    signed: Signed,
    key: Arc<PreparedKey>,
    checked: OnceLock<Result<()>>,
}

impl Verification {
    /// `signed` to be checked against its principal's prepared key.
    pub fn new(signed: Signed, key: Arc<PreparedKey>) -> Verification {
        Verification { signed, key, checked: OnceLock::new() }
    }

    /// The signature's check: made on the first call, remembered after.
    pub fn check(&self) -> Result<()> {
        self.checked.get_or_init(|| self.signed.verify_prepared(&self.key)).clone()
    }

    /// `refusal`, for a request whose signature holds; `bad_signature` for
    /// one whose signature does not.
    pub fn before(&self, refusal: Rejection) -> Rejection {
        self.check().err().unwrap_or(refusal)
    }
}

/// The check of a request that may carry a signature (`None`: nothing to
/// check).
pub fn check(verification: Option<&Verification>) -> Result<()> {
    verification.map_or(Ok(()), Verification::check)
}

/// `refusal`, unless the request's signature does not hold (see
/// [`Verification::before`]).
pub fn before(verification: Option<&Verification>, refusal: Rejection) -> Rejection {
    match verification {
        Some(v) => v.before(refusal),
        None => refusal,
    }
}
