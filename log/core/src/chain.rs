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
    #[cfg(feature = "expensive-checks")]
    {
        // The stored bytes decode to the envelope they sealed, and check
        // against the chain from scratch.
        let decoded = <Envelope as Message>::decode(bytes.as_slice()).expect("sealed bytes decode");
        assert_eq!(decoded, Envelope { hash: hash.to_vec(), ..envelope.clone() }, "sealing is lossless");
        assert_eq!(check_stored(previous, &bytes), Ok(hash), "sealed bytes check against the chain");
    }
    (bytes, hash)
}

/// The `hash` field's number in `Envelope`.
const HASH_FIELD: u32 = 13;
/// How `seal_encoded` ends stored bytes: field 13, length-delimited, 32
/// bytes long, then the hash.
const HASH_SUFFIX_TAG: [u8; 2] = [(HASH_FIELD << 3 | 2) as u8, 32];

/// The hash that stored bytes end with, without checking it.
pub fn stored_hash(bytes: &[u8]) -> Option<Hash> {
    let suffix = bytes.get(bytes.len().checked_sub(34)?..)?;
    (suffix[..2] == HASH_SUFFIX_TAG).then(|| suffix[2..].try_into().expect("32 bytes"))
}

/// Checks stored bytes against the hash before them and returns their hash.
/// Works on the bytes themselves, so fields a newer schema added (which this
/// build would drop on decoding) are covered too.
pub fn check_stored(previous: &Hash, bytes: &[u8]) -> Result<Hash, &'static str> {
    let split = bytes.len().checked_sub(34).ok_or("too short to carry a hash")?;
    let (covered, suffix) = bytes.split_at(split);
    if suffix[..2] != HASH_SUFFIX_TAG {
        return Err("does not end with its hash");
    }
    let stored: Hash = suffix[2..].try_into().expect("32 bytes");
    let mut hasher = blake3::Hasher::new();
    hasher.update(previous);
    hasher.update(covered);
    if *hasher.finalize().as_bytes() != stored {
        return Err("the hash chain is broken: this event or the one before it was changed");
    }
    Ok(stored)
}

/// Whether the envelope's stored hash is the right link after `previous`.
pub fn is_linked(previous: &Hash, envelope: &Envelope) -> bool {
    envelope.hash[..] == link(previous, envelope)[..]
}

pub fn to_hex(hash: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(hash.len() * 2);
    for b in hash {
        hex.push(char::from(DIGITS[usize::from(b >> 4)]));
        hex.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    hex
}

/// The bytes of lower- or upper-case hex, or `None` if it is not hex.
pub fn from_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| char::from(c).to_digit(16).and_then(|d| u8::try_from(d).ok());
    hex.as_bytes().chunks(2).map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        let bytes: Vec<u8> = (0..=255).collect();
        let hex = to_hex(&bytes);
        assert_eq!(&hex[..8], "00010203");
        assert_eq!(&hex[hex.len() - 4..], "feff");
        assert_eq!(from_hex(&hex), Some(bytes));
        assert_eq!(from_hex("0g"), None);
        assert_eq!(from_hex("abc"), None);
    }

    #[test]
    fn sealing_while_encoding_agrees_with_sealing_then_linking() {
        let event = crate::testing::sample_envelope(5);
        let (bytes, hash) = seal_encoded(&GENESIS, &event);
        let decoded = crate::codec::decode(&bytes).expect("sealed bytes decode");
        assert_eq!(decoded.hash, hash.to_vec());
        assert!(is_linked(&GENESIS, &decoded));
        assert_eq!(link(&GENESIS, &event), hash);
        assert_eq!(decoded, Envelope { hash: hash.to_vec(), ..event });
        assert_eq!(check_stored(&GENESIS, &bytes), Ok(hash));
        let mut damaged = bytes.clone();
        damaged[3] ^= 1;
        assert!(check_stored(&GENESIS, &damaged).is_err());
        assert!(check_stored(&[1; 32], &bytes).is_err());
    }

    #[test]
    fn a_changed_event_breaks_the_link() {
        let seal = |previous: &Hash, n: u64| {
            let (bytes, hash) = seal_encoded(previous, &crate::testing::sample_envelope(n));
            (crate::codec::decode(&bytes).expect("decodes"), hash)
        };
        let (first, head) = seal(&GENESIS, 1);
        assert!(is_linked(&GENESIS, &first));
        let (mut second, _) = seal(&head, 2);
        assert!(is_linked(&head, &second));
        // Reordering: the second event does not link to the genesis.
        assert!(!is_linked(&GENESIS, &second));
        second.actor.push('!');
        assert!(!is_linked(&head, &second));
    }
}
