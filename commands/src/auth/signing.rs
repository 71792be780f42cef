//! Signed requests: the byte string a producer signs ([`message`], defined
//! byte for byte in docs/PROTOCOL.md), the headers that carry the
//! signature ([`Signed::from_headers`], which never panics on any input),
//! the check ([`Signed::verify`]) and the producer's side ([`Signer`]).
use std::sync::Arc;

use agentlog_core::{Clock, IdGen};
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use base64::Engine as _;
use ed25519_dalek::{Signature, VerifyingKey};

use super::{PreparedKey, unauthenticated};
use crate::rejection::{Code, Rejection, Result};

pub const HEADER_IDEMPOTENCY_KEY: &str = "Agentlog-Idempotency-Key";
pub const HEADER_CORRELATION_ID: &str = "Agentlog-Correlation-Id";
pub const HEADER_KEY_ID: &str = "Agentlog-Key-Id";
pub const HEADER_NONCE: &str = "Agentlog-Nonce";
pub const HEADER_TIMESTAMP: &str = "Agentlog-Timestamp";
pub const HEADER_SIGNATURE: &str = "Agentlog-Signature";

/// What every signed message begins with: the scheme and its version.
pub const DOMAIN: &[u8] = b"agentlog-command-v1\n";
/// A nonce's length bounds, in characters of `[A-Za-z0-9_-]`.
pub const NONCE_CHARS_MIN: usize = 16;
pub const NONCE_CHARS_MAX: usize = 64;

/// What a signature covers, besides the body.
#[derive(Clone, Copy, Debug)]
pub struct Parts<'a> {
    /// `agentlog.cmd.<command>`.
    pub subject: &'a str,
    /// The `Content-Type` header as sent ("" without one).
    pub content_type: &'a str,
    /// `Agentlog-Idempotency-Key` ("" without one).
    pub idempotency_key: &'a str,
    /// `Agentlog-Correlation-Id` ("" without one).
    pub correlation_id: &'a str,
    pub key_id: &'a str,
    pub nonce: &'a str,
    /// Nanoseconds since the Unix epoch, in decimal, as in the header.
    pub timestamp: &'a str,
}

/// docs/PROTOCOL.md's test vector: the parts and body signed there (with
/// the ed25519 seed of 32 bytes of 7), for producers in other languages to
/// check their signing against.
pub const TEST_VECTOR: Parts<'static> = Parts {
    subject: "agentlog.cmd.heartbeat",
    content_type: "application/json",
    idempotency_key: "hb-1",
    correlation_id: "",
    key_id: "alice",
    nonce: "00112233445566778899aabbccddeeff",
    timestamp: "1767225600000000000",
};
pub const TEST_VECTOR_BODY: &[u8] = br#"{"session_id":"s1"}"#;

/// The bytes a producer signs: [`DOMAIN`], then each of subject, content
/// type, idempotency key, correlation id, key id, nonce, timestamp and body
/// as a 4-byte big-endian length followed by its bytes.
pub fn message(parts: &Parts<'_>, body: &[u8]) -> Vec<u8> {
    let fields: [&[u8]; 8] = [
        parts.subject.as_bytes(),
        parts.content_type.as_bytes(),
        parts.idempotency_key.as_bytes(),
        parts.correlation_id.as_bytes(),
        parts.key_id.as_bytes(),
        parts.nonce.as_bytes(),
        parts.timestamp.as_bytes(),
        body,
    ];
    let mut out = Vec::with_capacity(DOMAIN.len() + fields.iter().map(|f| 4 + f.len()).sum::<usize>());
    out.extend_from_slice(DOMAIN);
    for field in fields {
        let len = u32::try_from(field.len()).expect("a NATS message is far below 4 GiB");
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(field);
    }
    out
}

/// A signed request as it arrived: the signature and what it claims to
/// cover, not yet checked.
#[derive(Clone, Debug)]
pub struct Signed {
    pub key_id: String,
    pub nonce: String,
    pub timestamp_nanos: u64,
    pub signature: [u8; 64],
    /// The bytes the signature must be over ([`message`]).
    pub message: Vec<u8>,
}

impl Signed {
    /// Reads the signature headers of a request (`header` looks one up by
    /// name). `Ok(None)`: the request carries none of them. A request that
    /// carries some but not all, or any of them malformed, is refused
    /// (`unauthenticated`, or `bad_signature` for the signature itself).
    pub fn from_headers(header: impl Fn(&str) -> Option<String>, subject: &str, body: &[u8]) -> Result<Option<Signed>> {
        let names = [HEADER_KEY_ID, HEADER_NONCE, HEADER_TIMESTAMP, HEADER_SIGNATURE];
        let values = names.map(&header);
        if values.iter().all(Option::is_none) {
            return Ok(None);
        }
        let [Some(key_id), Some(nonce), Some(timestamp), Some(signature)] = values else {
            let missing: Vec<&str> = names.iter().zip(&values).filter(|(_, v)| v.is_none()).map(|(n, _)| *n).collect();
            return Err(unauthenticated(format!(
                "a signed request carries {}; this one lacks {}",
                names.join(", "),
                missing.join(", ")
            )));
        };
        if !agentlog_core::api::is_valid_id(&key_id) {
            return Err(unauthenticated(format!(
                "{HEADER_KEY_ID} must be a principal id (1 to 128 ASCII letters, digits, '_', '-', ':' or '@'), got {key_id:?}"
            )));
        }
        if !(NONCE_CHARS_MIN..=NONCE_CHARS_MAX).contains(&nonce.len())
            || !nonce.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(unauthenticated(format!(
                "{HEADER_NONCE} must be {NONCE_CHARS_MIN} to {NONCE_CHARS_MAX} characters of A-Z, a-z, 0-9, '-' or '_' (random, never reused), got {} characters",
                nonce.len()
            )));
        }
        let timestamp_nanos =
            timestamp.parse::<u64>().ok().filter(|_| !timestamp.starts_with('+') && timestamp.len() <= 20).ok_or_else(
                || {
                    Rejection::new(
                        Code::StaleTimestamp,
                        format!(
                            "{HEADER_TIMESTAMP} must be nanoseconds since the Unix epoch in decimal, got {timestamp:?}"
                        ),
                    )
                },
            )?;
        let signature = base64::engine::general_purpose::STANDARD
            .decode(signature.trim())
            .ok()
            .and_then(|bytes| <[u8; 64]>::try_from(bytes.as_slice()).ok())
            .ok_or_else(|| {
                Rejection::new(
                    Code::BadSignature,
                    format!("{HEADER_SIGNATURE} must be 64 bytes of ed25519 signature in base64"),
                )
            })?;
        let parts = Parts {
            subject,
            content_type: &header("Content-Type").unwrap_or_default(),
            idempotency_key: &header(HEADER_IDEMPOTENCY_KEY).unwrap_or_default(),
            correlation_id: &header(HEADER_CORRELATION_ID).unwrap_or_default(),
            key_id: &key_id,
            nonce: &nonce,
            timestamp: &timestamp,
        };
        let message = message(&parts, body);
        Ok(Some(Signed { key_id, nonce, timestamp_nanos, signature, message }))
    }

    /// Whether the signature is `public_key`'s over the message (strict
    /// verification: no malleable or small-order forms).
    pub fn verify(&self, public_key: &[u8; 32]) -> Result<()> {
        let key = VerifyingKey::from_bytes(public_key).map_err(|_| {
            Rejection::new(Code::BadSignature, format!("the registered key of {} is unusable", self.key_id))
        })?;
        let verified = key.verify_strict(&self.message, &Signature::from_bytes(&self.signature)).is_ok();
        self.verified(verified)
    }

    /// [`Signed::verify`] against a key prepared once for many requests
    /// ([`crate::auth::Auth::prepared_key`]): the node's check.
    pub fn verify_prepared(&self, key: &PreparedKey) -> Result<()> {
        self.verified(key.verify_strict(&self.message, &self.signature))
    }

    fn verified(&self, verified: bool) -> Result<()> {
        verified.then_some(()).ok_or_else(|| {
            Rejection::new(
                Code::BadSignature,
                format!(
                    "the signature is not {}'s over this request: check the signed bytes against docs/PROTOCOL.md",
                    self.key_id
                ),
            )
        })
    }

    /// The nonce as the log records it: `<key id>/<nonce>`.
    pub fn recorded_nonce(&self) -> String {
        format!("{}/{}", self.key_id, self.nonce)
    }
}

/// A producer's key: signs requests as `key_id` (with AWS-LC, whose
/// signatures are ed25519's, byte for byte: the test vector below).
#[derive(Clone)]
pub struct Signer {
    key_id: String,
    key: Arc<Ed25519KeyPair>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdGen>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

/// The headers a signed request adds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureHeaders {
    pub key_id: String,
    pub nonce: String,
    pub timestamp: String,
    pub signature: String,
}

impl Signer {
    /// `secret_key` is the 32-byte ed25519 seed; timestamps come from
    /// `clock`, nonces from `ids`.
    pub fn new(key_id: impl Into<String>, secret_key: [u8; 32], clock: Arc<dyn Clock>, ids: Arc<dyn IdGen>) -> Self {
        let key = Ed25519KeyPair::from_seed_unchecked(&secret_key).expect("any 32 bytes are an ed25519 seed");
        Signer { key_id: key_id.into(), key: Arc::new(key), clock, ids }
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The public key to register (32 bytes).
    pub fn public_key(&self) -> [u8; 32] {
        self.key.public_key().as_ref().try_into().expect("an ed25519 public key is 32 bytes")
    }

    /// Signs one request, with a fresh nonce and the clock's time: a retry
    /// is signed again (new nonce) and keeps its idempotency key.
    pub fn sign(
        &self,
        subject: &str,
        content_type: &str,
        idempotency_key: &str,
        correlation_id: &str,
        body: &[u8],
    ) -> SignatureHeaders {
        let nonce = format!("{:032x}", self.ids.next_u128());
        let timestamp = self.clock.now().as_nanos().to_string();
        let parts = Parts {
            subject,
            content_type,
            idempotency_key,
            correlation_id,
            key_id: &self.key_id,
            nonce: &nonce,
            timestamp: &timestamp,
        };
        let signature = self.key.sign(&message(&parts, body));
        SignatureHeaders {
            key_id: self.key_id.clone(),
            nonce,
            timestamp,
            signature: base64::engine::general_purpose::STANDARD.encode(signature.as_ref()),
        }
    }
}

#[cfg(test)]
mod tests {
    use agentlog_core::{ManualClock, SeededIdGen, Timestamp};

    use super::*;

    /// docs/PROTOCOL.md's test vector: these inputs give exactly these
    /// bytes and this signature (ed25519 is deterministic).
    #[test]
    fn the_documented_test_vector() {
        let bytes = message(&TEST_VECTOR, TEST_VECTOR_BODY);
        assert_eq!(
            hex(&bytes),
            "6167656e746c6f672d636f6d6d616e642d76310a\
             000000166167656e746c6f672e636d642e686561727462656174\
             000000106170706c69636174696f6e2f6a736f6e\
             0000000468622d31\
             00000000\
             00000005616c696365\
             000000203030313132323333343435353636373738383939616162626363646465656666\
             0000001331373637323235363030303030303030303030\
             000000137b2273657373696f6e5f6964223a227331227d"
        );
        let seed = [7u8; 32];
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        let signature = ed25519_dalek::Signer::sign(&key, &bytes).to_bytes();
        assert_eq!(
            base64::engine::general_purpose::STANDARD.encode(key.verifying_key().to_bytes()),
            PUBLIC_KEY_OF_SEED_7
        );
        assert_eq!(base64::engine::general_purpose::STANDARD.encode(signature), SIGNATURE_OF_VECTOR);

        // The producer's signer (AWS-LC) gives the same bytes.
        struct VectorNonce;
        impl IdGen for VectorNonce {
            fn next_u128(&self) -> u128 {
                u128::from_str_radix(TEST_VECTOR.nonce, 16).unwrap()
            }
        }
        let at = Timestamp::from_nanos(TEST_VECTOR.timestamp.parse().unwrap());
        let signer = Signer::new(TEST_VECTOR.key_id, seed, Arc::new(ManualClock::new(at)), Arc::new(VectorNonce));
        assert_eq!(base64::engine::general_purpose::STANDARD.encode(signer.public_key()), PUBLIC_KEY_OF_SEED_7);
        let v = TEST_VECTOR;
        let sent = signer.sign(v.subject, v.content_type, v.idempotency_key, v.correlation_id, TEST_VECTOR_BODY);
        assert_eq!((sent.nonce.as_str(), sent.timestamp.as_str()), (v.nonce, v.timestamp));
        assert_eq!(sent.signature, SIGNATURE_OF_VECTOR);
    }

    const PUBLIC_KEY_OF_SEED_7: &str = "6kpsY+KcUgq+9VB7Ey7F+ZVHdq6+vnuSQh7qaRRG0iw=";
    const SIGNATURE_OF_VECTOR: &str =
        "yIcsGSN0ACg4Ukx9AZcIXqU+t3RczU1SuE0kOCHg1Hh2aj2nGj2b+b2QuyaUW6cNOwTcRX0Bb+UrkkDXFOLVDw==";

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn a_signer_signs_what_the_headers_check() {
        let clock = Arc::new(ManualClock::new(Timestamp::from_nanos(1_000)));
        let signer = Signer::new("alice", [9; 32], clock, Arc::new(SeededIdGen::new(1)));
        let body = b"{}";
        let sent = signer.sign("agentlog.cmd.heartbeat", "application/json", "k", "", body);
        let headers = |name: &str| match name {
            HEADER_KEY_ID => Some(sent.key_id.clone()),
            HEADER_NONCE => Some(sent.nonce.clone()),
            HEADER_TIMESTAMP => Some(sent.timestamp.clone()),
            HEADER_SIGNATURE => Some(sent.signature.clone()),
            "Content-Type" => Some("application/json".into()),
            HEADER_IDEMPOTENCY_KEY => Some("k".into()),
            _ => None,
        };
        let signed = Signed::from_headers(headers, "agentlog.cmd.heartbeat", body).unwrap().unwrap();
        assert_eq!(signed.timestamp_nanos, 1_000);
        signed.verify(&signer.public_key()).unwrap();
        // Any other subject, body or key fails.
        let moved = Signed::from_headers(headers, "agentlog.cmd.close_session", body).unwrap().unwrap();
        assert_eq!(moved.verify(&signer.public_key()).unwrap_err().code, Code::BadSignature);
        let changed = Signed::from_headers(headers, "agentlog.cmd.heartbeat", b"{ }").unwrap().unwrap();
        assert_eq!(changed.verify(&signer.public_key()).unwrap_err().code, Code::BadSignature);
        let other = Signer::new(
            "alice",
            [8; 32],
            Arc::new(ManualClock::new(Timestamp::from_nanos(0))),
            Arc::new(SeededIdGen::new(1)),
        );
        assert_eq!(signed.verify(&other.public_key()).unwrap_err().code, Code::BadSignature);
        // A second signature of the same request has a fresh nonce.
        assert_ne!(signer.sign("agentlog.cmd.heartbeat", "application/json", "k", "", body).nonce, sent.nonce);
    }

    #[test]
    fn partial_or_malformed_headers_are_refused_by_name() {
        let none = |_: &str| None;
        assert!(Signed::from_headers(none, "s", b"").unwrap().is_none());
        let only_key = |name: &str| (name == HEADER_KEY_ID).then(|| "alice".to_owned());
        let err = Signed::from_headers(only_key, "s", b"").unwrap_err();
        assert_eq!(err.code, Code::Unauthenticated);
        assert!(err.message.contains(HEADER_SIGNATURE), "{err}");
        let with = |nonce: &'static str, ts: &'static str, sig: &'static str| {
            move |name: &str| match name {
                HEADER_KEY_ID => Some("alice".to_owned()),
                HEADER_NONCE => Some(nonce.to_owned()),
                HEADER_TIMESTAMP => Some(ts.to_owned()),
                HEADER_SIGNATURE => Some(sig.to_owned()),
                _ => None,
            }
        };
        let good_sig = "A".repeat(86) + "==";
        let good_sig: &'static str = Box::leak(good_sig.into_boxed_str());
        assert_eq!(
            Signed::from_headers(with("short", "1", good_sig), "s", b"").unwrap_err().code,
            Code::Unauthenticated
        );
        assert_eq!(
            Signed::from_headers(with("0123456789abcdef", "-1", good_sig), "s", b"").unwrap_err().code,
            Code::StaleTimestamp
        );
        assert_eq!(
            Signed::from_headers(with("0123456789abcdef", "1", "AAAA"), "s", b"").unwrap_err().code,
            Code::BadSignature
        );
        assert!(Signed::from_headers(with("0123456789abcdef", "1", good_sig), "s", b"").unwrap().is_some());
    }
}
