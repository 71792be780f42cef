//! A signed request's signature, checked once, before anything the request
//! gets: its decision, any refusal, a first result, any module it checks or
//! runs, anything it appends. What comes before that is only reads, so the
//! handler checks the signature while a decision waits on the network for
//! them (a claim reads its session, its agent and its dependencies fresh)
//! instead of before the reads; a forged request learns nothing but
//! `bad_signature` either way.
use std::sync::{Arc, OnceLock};
use std::task::Poll;

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

    /// `work`, and the check, made while `work` waits (on the network), or
    /// after it when it does not wait.
    pub async fn while_waiting<F: Future>(&self, work: F) -> (F::Output, Result<()>) {
        let (done, checked) = self.overlapped(work).await;
        (done, checked.unwrap_or_else(|| self.check()))
    }

    /// `work`, with the check made meanwhile if `work` has to wait (a turn
    /// behind another request's); if it does not, the check is left for
    /// later: for [`Verification::while_waiting`] beside the decision's
    /// reads.
    pub async fn if_waiting<F: Future>(&self, work: F) -> F::Output {
        self.overlapped(work).await.0
    }

    /// `work` polled first; if it has to wait, the task yields once, then
    /// checks, since tokio runs a task this one has just woken (the NATS
    /// connection's, which writes the reads `work` sent) only when this one
    /// yields. `None`: `work` was done at once, nothing checked.
    async fn overlapped<F: Future>(&self, work: F) -> (F::Output, Option<Result<()>>) {
        let mut work = std::pin::pin!(work);
        match std::future::poll_fn(|cx| Poll::Ready(work.as_mut().poll(cx))).await {
            Poll::Ready(done) => (done, None),
            Poll::Pending => {
                tokio::task::yield_now().await;
                let checked = self.check();
                (work.await, Some(checked))
            }
        }
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

#[cfg(test)]
mod tests {
    use ed25519_dalek::{Signer as _, SigningKey};

    use super::*;
    use crate::rejection::Code;

    /// A request signed over `message` as it would arrive (its signature
    /// broken when `forged`), to be checked against its key.
    fn verification(message: &[u8], forged: bool) -> Verification {
        let signer = SigningKey::from_bytes(&[5; 32]);
        let mut signature = signer.sign(message).to_bytes();
        if forged {
            signature[0] ^= 1;
        }
        let signed = Signed {
            key_id: "alice".into(),
            nonce: "00112233445566778899aabbccddeeff".into(),
            timestamp_nanos: 0,
            signature,
            message: message.to_vec(),
        };
        Verification::new(signed, Arc::new(PreparedKey::new(&signer.verifying_key().to_bytes()).unwrap()))
    }

    /// Work that waits once (as a read on the network does) before it is
    /// done; how many times it was polled.
    async fn waits_once(polled: &std::cell::Cell<u32>) -> u32 {
        let mut waited = false;
        std::future::poll_fn(|cx| {
            polled.set(polled.get() + 1);
            if std::mem::replace(&mut waited, true) {
                Poll::Ready(())
            } else {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        })
        .await;
        polled.get()
    }

    #[tokio::test]
    async fn the_check_is_made_while_work_waits_and_after_work_that_does_not() {
        for forged in [false, true] {
            let polled = std::cell::Cell::new(0);
            let v = verification(b"a claim", forged);
            let (polls, checked) = v.while_waiting(waits_once(&polled)).await;
            assert_eq!(polls, 2);
            assert_eq!(checked.is_err(), forged);
            let v = verification(b"a debit", forged);
            let (done, checked) = v.while_waiting(async { 7 }).await;
            assert_eq!((done, checked.is_err()), (7, forged));
            if forged {
                assert_eq!(checked.unwrap_err().code, Code::BadSignature);
            }
        }
    }

    #[tokio::test]
    async fn a_turn_taken_at_once_leaves_the_check_for_later() {
        let v = verification(b"a claim", true);
        assert_eq!(v.if_waiting(async { 7 }).await, 7);
        assert!(v.checked.get().is_none(), "nothing waited, nothing checked");
        let polled = std::cell::Cell::new(0);
        assert_eq!(v.if_waiting(waits_once(&polled)).await, 2);
        assert_eq!(v.checked.get().map(|c| c.as_ref().unwrap_err().code), Some(Code::BadSignature));
        // What is left for later is the same check, made once.
        assert_eq!(v.before(Rejection::invalid("later")).code, Code::BadSignature);
    }
}
