//! The hash chain: each event's hash covers the previous event's hash and the
//! event's own canonical bytes, so changing, dropping or reordering any event
//! breaks every link after it.
use prost::Message;

use crate::schema::Envelope;

pub type Hash = [u8; 32];

/// What the first event chains from.
pub const GENESIS: Hash = [0u8; 32];

/// blake3(previous ‖ envelope bytes with `hash` empty).
pub fn link(previous: &Hash, envelope: &Envelope) -> Hash {
    let mut hasher = blake3::Hasher::new();
    hasher.update(previous);
    if envelope.hash.is_empty() {
        hasher.update(&envelope.encode_to_vec());
    } else {
        let mut unsealed = envelope.clone();
        unsealed.hash.clear();
        hasher.update(&unsealed.encode_to_vec());
    }
    *hasher.finalize().as_bytes()
}

/// Computes and stores the envelope's hash; returns it for the next link.
pub fn seal(previous: &Hash, envelope: &mut Envelope) -> Hash {
    envelope.hash.clear();
    let hash = link(previous, envelope);
    envelope.hash = hash.to_vec();
    hash
}

/// The envelope's stored bytes and hash, encoding it once: the bytes
/// without `hash` (which the hash covers), then the `hash` field after them.
/// Protobuf readers accept fields in any order, so these bytes decode to the
/// envelope with its hash, and re-encoding it without the hash gives back
/// exactly the bytes the hash covers.
pub fn seal_encoded(previous: &Hash, envelope: &Envelope) -> (Vec<u8>, Hash) {
    assert!(envelope.hash.is_empty(), "an envelope is sealed once");
    let mut bytes = Vec::with_capacity(envelope.encoded_len() + 2 + 32);
    envelope.encode_raw(&mut bytes);
    let mut hasher = blake3::Hasher::new();
    hasher.update(previous);
    hasher.update(&bytes);
    let hash = *hasher.finalize().as_bytes();
    prost::encoding::bytes::encode(HASH_FIELD, &hash.to_vec(), &mut bytes);
    (bytes, hash)
}

/// The `hash` field's number in `Envelope`.
const HASH_FIELD: u32 = 13;

/// Whether the envelope's stored hash is the right link after `previous`.
pub fn is_linked(previous: &Hash, envelope: &Envelope) -> bool {
    envelope.hash.as_slice() == link(previous, envelope).as_slice()
}

pub fn to_hex(hash: &[u8]) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealing_while_encoding_agrees_with_sealing_then_linking() {
        let event = crate::testing::sample_envelope(5);
        let (bytes, hash) = seal_encoded(&GENESIS, &event);
        let decoded = crate::codec::decode(&bytes).expect("sealed bytes decode");
        assert_eq!(decoded.hash, hash.to_vec());
        assert!(is_linked(&GENESIS, &decoded));
        let mut sealed = event.clone();
        assert_eq!(seal(&GENESIS, &mut sealed), hash);
        assert_eq!(decoded, sealed);
    }

    #[test]
    fn a_changed_event_breaks_the_link() {
        let mut first = crate::testing::sample_envelope(1);
        let head = seal(&GENESIS, &mut first);
        assert!(is_linked(&GENESIS, &first));
        let mut second = crate::testing::sample_envelope(2);
        seal(&head, &mut second);
        assert!(is_linked(&head, &second));
        // Reordering: the second event does not link to the genesis.
        assert!(!is_linked(&GENESIS, &second));
        second.actor.push('!');
        assert!(!is_linked(&head, &second));
    }
}
