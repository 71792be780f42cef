//! A registered key prepared for verifying its signatures, built once per
//! key and kept by [`crate::auth::Auth`]: the key's point with a table of
//! its multiples (30 KB, about 1 ms to build), so that checking a signature
//! is two fixed-base multiplications, `[s]B` and `[k]A`, each a few dozen
//! table additions, instead of ed25519-dalek's double-base multiplication,
//! which doubles through all 253 bits of both scalars: about a third less
//! time per verification (docs/BENCHMARKS.md, "Verifying against a
//! prepared key").
//!
//! The check decides exactly as ed25519-dalek's `verify_strict` does, which
//! the property test below holds the two to: `s` reduced; `R` a point and
//! encoded canonically; neither `R` nor the key of small order; and
//! `[s]B − [k]A = R`, with `k = SHA-512(R ‖ A ‖ message) mod ℓ` over the
//! key's bytes as registered. (ed25519-dalek compares the encoding of
//! `[s]B − [k]A` with `R`'s bytes; comparing the points and checking that
//! `R`'s `y` is below p is the same test without a field inversion: the
//! only other non-canonical encodings, a set sign bit with `x = 0`, are
//! of the two points with `x = 0`, both of small order.)
use curve25519_dalek::constants::ED25519_BASEPOINT_TABLE;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsBasepointTable};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::BasepointTable as _;
use sha2::{Digest, Sha512};

pub struct PreparedKey {
    /// The key as registered: what `k` hashes.
    bytes: [u8; 32],
    /// The key's multiples; `None` for a key of small order, under which
    /// no signature verifies.
    table: Option<Box<EdwardsBasepointTable>>,
}

impl std::fmt::Debug for PreparedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedKey").field("bytes", &self.bytes).finish_non_exhaustive()
    }
}

impl PreparedKey {
    /// `None`: the bytes encode no point of the curve.
    pub fn new(bytes: &[u8; 32]) -> Option<PreparedKey> {
        let point = CompressedEdwardsY(*bytes).decompress()?;
        let table = (!point.is_small_order()).then(|| Box::new(EdwardsBasepointTable::create(&point)));
        Some(PreparedKey { bytes: *bytes, table })
    }

    /// Whether `signature` is this key's over `message`, strictly (no
    /// malleable or small-order forms; see the module's doc).
    pub fn verify_strict(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        let Some(table) = &self.table else { return false };
        let (r_bytes, s_bytes) = signature.split_at(32);
        let r_bytes: [u8; 32] = r_bytes.try_into().expect("the first 32 of 64 bytes");
        let s_bytes: [u8; 32] = s_bytes.try_into().expect("the last 32 of 64 bytes");
        let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes)) else { return false };
        if !y_is_canonical(&r_bytes) {
            return false;
        }
        let Some(r) = CompressedEdwardsY(r_bytes).decompress() else { return false };
        if r.is_small_order() {
            return false;
        }
        let k = Scalar::from_hash(Sha512::new().chain_update(r_bytes).chain_update(self.bytes).chain_update(message));
        ED25519_BASEPOINT_TABLE * &s - &**table * &k == r
    }
}

/// Whether an encoded point's `y` (its low 255 bits, little-endian) is
/// below p = 2²⁵⁵ − 19.
fn y_is_canonical(bytes: &[u8; 32]) -> bool {
    // Only 2²⁵⁵ − 19 ..= 2²⁵⁵ − 1 are not: top bits all set, the 30 bytes
    // between all 0xff, and the lowest byte at least 0xed.
    !(bytes[31] & 0x7f == 0x7f && bytes[1..31].iter().all(|&b| b == 0xff) && bytes[0] >= 0xed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use curve25519_dalek::constants::EIGHT_TORSION;
    use curve25519_dalek::traits::Identity as _;
    use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
    use proptest::prelude::*;

    /// ed25519-dalek's strict verification, the reference.
    fn dalek(key: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> bool {
        VerifyingKey::from_bytes(key).is_ok_and(|k| k.verify_strict(message, &Signature::from_bytes(signature)).is_ok())
    }

    fn prepared(key: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> bool {
        PreparedKey::new(key).is_some_and(|k| k.verify_strict(message, signature))
    }

    fn signed(seed: [u8; 32], message: &[u8]) -> ([u8; 32], [u8; 64]) {
        let key = SigningKey::from_bytes(&seed);
        (key.verifying_key().to_bytes(), key.sign(message).to_bytes())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn genuine_signatures_verify(seed in any::<[u8; 32]>(), message in proptest::collection::vec(any::<u8>(), 0..300)) {
            let (key, signature) = signed(seed, &message);
            prop_assert!(dalek(&key, &message, &signature));
            prop_assert!(prepared(&key, &message, &signature));
        }

        /// Any one byte of the key, the signature or the message changed
        /// (or a byte added): the two decide alike (a refusal, but for a
        /// change to `s` by a multiple of ℓ, which both refuse too).
        #[test]
        fn a_changed_byte_is_decided_alike(
            seed in any::<[u8; 32]>(),
            message in proptest::collection::vec(any::<u8>(), 1..200),
            at in any::<usize>(),
            xor in 1u8..,
        ) {
            let (mut key, mut signature) = signed(seed, &message);
            let mut message = message;
            match at % 4 {
                0 => key[at % 32] ^= xor,
                1 => signature[at % 64] ^= xor,
                2 => { let i = at % message.len(); message[i] ^= xor },
                _ => message.push(xor),
            }
            prop_assert_eq!(prepared(&key, &message, &signature), dalek(&key, &message, &signature));
        }

        /// Arbitrary bytes for all three: decided alike.
        #[test]
        fn arbitrary_bytes_are_decided_alike(
            key in any::<[u8; 32]>(),
            signature in proptest::collection::vec(any::<u8>(), 64),
            message in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let signature: [u8; 64] = signature.try_into().unwrap();
            prop_assert_eq!(prepared(&key, &message, &signature), dalek(&key, &message, &signature));
        }
    }

    #[test]
    fn malleable_and_small_order_forms_are_refused_by_both() {
        let message = b"claim_task t-1";
        let (key, signature) = signed([7; 32], message);
        // s + ℓ: the same signature, unreduced.
        let mut unreduced = signature;
        // ℓ, little-endian.
        let ell: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0, 0,
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let mut carry = 0u16;
        for i in 0..32 {
            let sum = u16::from(unreduced[32 + i]) + u16::from(ell[i]) + carry;
            unreduced[32 + i] = sum as u8;
            carry = sum >> 8;
        }
        assert!(!dalek(&key, message, &unreduced) && !prepared(&key, message, &unreduced));
        // R of small order, and a key of small order, each of the eight.
        for point in EIGHT_TORSION {
            let small = point.compress().to_bytes();
            let mut with_small_r = signature;
            with_small_r[..32].copy_from_slice(&small);
            assert!(!dalek(&key, message, &with_small_r) && !prepared(&key, message, &with_small_r));
            assert!(!dalek(&small, message, &signature) && !prepared(&small, message, &signature));
            // The key of small order is a point: it prepares, and refuses.
            assert!(PreparedKey::new(&small).is_some_and(|k| !k.verify_strict(message, &signature)));
        }
        // The key not a point.
        let mut not_a_point = [0u8; 32];
        not_a_point[0] = 2;
        assert!(CompressedEdwardsY(not_a_point).decompress().is_none());
        assert!(PreparedKey::new(&not_a_point).is_none() && !dalek(&not_a_point, message, &signature));
    }

    /// Two signatures that satisfy `[s]B − [k]A = R` and are refused only
    /// for a small order: of the key, and of `R`.
    #[test]
    fn signatures_that_hold_only_by_a_small_order_are_refused() {
        let message = b"debit b-1 by 5";
        let holds = |key: &[u8; 32], signature: &[u8; 64]| {
            let a = CompressedEdwardsY(*key).decompress().unwrap();
            let r = CompressedEdwardsY(signature[..32].try_into().unwrap()).decompress().unwrap();
            let s = Scalar::from_canonical_bytes(signature[32..].try_into().unwrap()).unwrap();
            let k =
                Scalar::from_hash(Sha512::new().chain_update(&signature[..32]).chain_update(key).chain_update(message));
            ED25519_BASEPOINT_TABLE * &s - a * k == r
        };
        // The key is the identity: any R = [r]B with s = r holds, for any
        // message.
        let identity = curve25519_dalek::EdwardsPoint::identity().compress().to_bytes();
        let r = Scalar::from_bytes_mod_order([9; 32]);
        let mut any = [0u8; 64];
        any[..32].copy_from_slice(&(ED25519_BASEPOINT_TABLE * &r).compress().to_bytes());
        any[32..].copy_from_slice(&r.to_bytes());
        assert!(holds(&identity, &any));
        assert!(!dalek(&identity, message, &any) && !prepared(&identity, message, &any));
        // R is the identity and s = k·a, for a genuine key.
        let key = SigningKey::from_bytes(&[3; 32]);
        let public = key.verifying_key().to_bytes();
        let k = Scalar::from_hash(Sha512::new().chain_update(identity).chain_update(public).chain_update(message));
        let mut forged = [0u8; 64];
        forged[..32].copy_from_slice(&identity);
        forged[32..].copy_from_slice(&(k * key.to_scalar()).to_bytes());
        assert!(holds(&public, &forged));
        assert!(!dalek(&public, message, &forged) && !prepared(&public, message, &forged));
    }

    #[test]
    fn y_at_or_above_p_is_not_canonical() {
        let below_p = |low: u8| {
            let mut y = [0xff; 32];
            y[31] = 0x7f;
            y[0] = low;
            y
        };
        assert!(y_is_canonical(&below_p(0xec)), "p − 1");
        assert!(!y_is_canonical(&below_p(0xed)), "p");
        assert!(!y_is_canonical(&below_p(0xff)), "2²⁵⁵ − 1");
        let mut signed_p = below_p(0xed);
        signed_p[31] = 0xff;
        assert!(!y_is_canonical(&signed_p), "p with the sign bit set");
        let mut signed_below = below_p(0xec);
        signed_below[31] = 0xff;
        assert!(y_is_canonical(&signed_below), "p − 1 with the sign bit set");
        assert!(y_is_canonical(&[0; 32]));
    }
}
