//! Envelope bytes: encoding, size limits, and decoding that rejects bad input
//! with an error and never panics.
//!
//! The schema has no map fields, so prost's encoding of an envelope is
//! canonical: the same envelope always gives the same bytes. The hash chain
//! and determinism checks rely on that.
use prost::Message;

use crate::error::{Error, Result};
use crate::schema::Envelope;

/// The largest encoded envelope the log accepts (1 MiB, the default
/// JetStream `max_payload`).
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;

/// The room the log needs, on top of what the producer filled in, for the
/// fields it assigns (seq, stream version, hash).
pub const ASSIGNED_FIELDS_BYTES: usize = 64;

pub fn encode(envelope: &Envelope) -> Vec<u8> {
    envelope.encode_to_vec()
}

/// Decodes one envelope. Fails on bytes that are not an envelope, on an
/// envelope over [`MAX_EVENT_BYTES`], and on one whose body this build does
/// not know.
pub fn decode(bytes: &[u8]) -> Result<Envelope> {
    check_size(bytes)?;
    let mut envelope = Envelope::default();
    merge(&mut envelope, bytes).map_err(|source| Error::Decode { what: "envelope", source })?;
    check_decoded(&envelope)?;
    Ok(envelope)
}

/// prost's `merge` of an envelope's bytes into `into`, but with its ids and
/// hash copied straight into their vectors: prost's generated code decodes
/// a `bytes` field into a `Bytes` it allocates, then copies that into the
/// vector. An envelope decoded into one already there (whose vectors have
/// room) allocates nothing for them.
///
/// Every other field, and any id that is not what an id should be (not
/// length-delimited, 128 bytes or longer, longer than what is left), goes
/// through the generated `merge_field`, so bad input fails exactly as with
/// prost's `decode` (the property test below holds the two to the same
/// result).
fn merge(into: &mut Envelope, mut buf: &[u8]) -> std::result::Result<(), prost::DecodeError> {
    use prost::encoding::{DecodeContext, decode_key};
    while let Some(&key) = buf.first() {
        // An id's key and length are a byte each (field numbers below 16,
        // length-delimited; ids of 16 and hashes of 32 bytes): read here,
        // without a call that writes the slice back through a reference
        // for the next read to wait on.
        if let (Some(id), Some(&len)) = (id_field(into, key), buf.get(1)) {
            let len = usize::from(len);
            if len < 0x80 && len <= buf.len() - 2 {
                id.clear();
                id.extend_from_slice(&buf[2..2 + len]);
                buf = &buf[2 + len..];
                continue;
            }
        }
        let (tag, wire_type) = decode_key(&mut buf)?;
        into.merge_field(tag, wire_type, &mut buf, DecodeContext::default())?;
    }
    Ok(())
}

/// The id (or hash) field a one-byte, length-delimited key is of.
fn id_field(into: &mut Envelope, key: u8) -> Option<&mut Vec<u8>> {
    const LENGTH_DELIMITED: u8 = 2;
    if key >= 0x80 || key & 7 != LENGTH_DELIMITED {
        return None;
    }
    match key >> 3 {
        1 => Some(&mut into.event_id),
        6 => Some(&mut into.correlation_id),
        7 => Some(&mut into.causation_id),
        8 => Some(&mut into.session_id),
        9 => Some(&mut into.saga_id),
        13 => Some(&mut into.hash),
        _ => None,
    }
}

/// What every decoded envelope must have: a body this build knows, and an
/// event id of 16 bytes.
fn check_decoded(envelope: &Envelope) -> Result<()> {
    if envelope.body.is_none() {
        return Err(Error::Malformed {
            what: "envelope",
            reason: "no body, or a body type this build does not know (upgrade agentlog)".into(),
        });
    }
    if envelope.event_id.len() != 16 {
        return Err(Error::Malformed {
            what: "envelope",
            reason: format!("event_id is {} bytes, not 16", envelope.event_id.len()),
        });
    }
    Ok(())
}

/// Refuses bytes over [`MAX_EVENT_BYTES`] before anything is copied or
/// decoded.
fn check_size(bytes: &[u8]) -> Result<()> {
    if bytes.len() > MAX_EVENT_BYTES {
        return Err(Error::TooLarge { size_bytes: bytes.len(), limit_bytes: MAX_EVENT_BYTES });
    }
    Ok(())
}

/// Decodes the event a log stored under `seq`: damage, or an envelope that
/// names another seq, is [`Error::Corrupt`] at that seq (a read reports a
/// broken log, it never panics on one).
pub fn decode_at(seq: u64, bytes: &[u8]) -> Result<Envelope> {
    let envelope = decode(bytes).map_err(|e| Error::Corrupt { seq, reason: e.to_string() })?;
    stored_under(seq, &envelope)?;
    Ok(envelope)
}

/// [`decode_at`] into an envelope already there (a fold's, done with),
/// which keeps the room its ids and strings had: a fold decoding a page of
/// events into the envelopes of a page it has folded allocates for little
/// but their bodies. On an error `into` holds no event worth reading.
pub fn decode_at_into(seq: u64, bytes: &[u8], into: &mut Envelope) -> Result<()> {
    check_size(bytes).map_err(|e| Error::Corrupt { seq, reason: e.to_string() })?;
    into.clear();
    merge(into, bytes)
        .map_err(|source| Error::Decode { what: "envelope", source })
        .and_then(|()| check_decoded(into))
        .map_err(|e| Error::Corrupt { seq, reason: e.to_string() })?;
    stored_under(seq, into)
}

fn stored_under(seq: u64, envelope: &Envelope) -> Result<()> {
    if envelope.seq != seq {
        return Err(Error::Corrupt { seq, reason: format!("stored under seq {seq} but says seq {}", envelope.seq) });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
        }

        // The envelope's own merge decides as prost's does: the same
        // envelope from the same bytes, an error where it has one. Damaged
        // envelopes reach the ids' every path: wire types flipped, lengths
        // past the end, fields repeated.
        #[test]
        fn the_merge_is_prosts(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4), cut in any::<prop::sample::Index>(), twice in any::<bool>()) {
            let mut bytes = encode(&crate::testing::sample_envelope(5));
            if twice {
                bytes.extend(encode(&crate::testing::sample_envelope(6)));
            }
            for (at, value) in flips {
                let i = at.index(bytes.len());
                bytes[i] ^= value;
            }
            let bytes = &bytes[..cut.index(bytes.len() + 1)];
            let mut ours = Envelope::default();
            let merged = merge(&mut ours, bytes);
            match Envelope::decode(bytes) {
                Ok(theirs) => prop_assert_eq!((merged, ours), (Ok(()), theirs)),
                Err(_) => prop_assert!(merged.is_err()),
            }
        }

        // Bytes that start as a valid envelope and are then damaged exercise
        // the decoder's deeper paths, not just the first tag.
        #[test]
        fn damaged_envelopes_never_panic(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8), cut in any::<prop::sample::Index>()) {
            let mut bytes = encode(&crate::testing::sample_envelope(3));
            for (at, value) in flips {
                let i = at.index(bytes.len());
                bytes[i] ^= value;
            }
            let end = cut.index(bytes.len() + 1);
            let _ = decode(&bytes[..end]);
        }
    }

    #[test]
    fn a_valid_envelope_round_trips() {
        let envelope = crate::testing::sample_envelope(1);
        assert_eq!(decode(&encode(&envelope)).expect("decodes"), envelope);
    }

    #[test]
    fn an_envelope_decodes_into_one_already_there_as_into_a_fresh_one() {
        // The first has every id and string set, the others fewer: nothing
        // of an earlier envelope is left in a later one.
        let sample = crate::testing::sample_envelope(1);
        let full = Envelope {
            causation_id: sample.event_id.clone(),
            saga_id: sample.event_id.clone(),
            idempotency_key: "key".into(),
            nonce: "k1/n1".into(),
            hash: vec![7; 32],
            body: Some(crate::schema::Body::ActionRecorded(crate::schema::ActionRecorded {
                detail: "detail".into(),
                ..Default::default()
            })),
            ..sample
        };
        let bare = Envelope {
            seq: 2,
            correlation_id: Vec::new(),
            causation_id: Vec::new(),
            session_id: Vec::new(),
            saga_id: Vec::new(),
            actor: String::new(),
            body: Some(crate::schema::Body::ActionRecorded(Default::default())),
            ..crate::testing::sample_envelope(2)
        };
        let mut into = Envelope::default();
        for event in [&full, &bare, &full] {
            decode_at_into(event.seq, &encode(event), &mut into).expect("decodes");
            assert_eq!(&into, event);
        }

        // Under the wrong seq, cut short, or too large: corrupt, at the seq
        // asked for.
        let err = decode_at_into(7, &encode(&full), &mut into).expect_err("wrong seq");
        assert!(matches!(err, Error::Corrupt { seq: 7, .. }), "{err}");
        let bytes = encode(&bare);
        let err = decode_at_into(2, &bytes[..bytes.len() - 3], &mut into).expect_err("cut short");
        assert!(matches!(err, Error::Corrupt { seq: 2, .. }), "{err}");
        let err = decode_at_into(3, &vec![0; MAX_EVENT_BYTES + 1], &mut into).expect_err("too large");
        assert!(matches!(err, Error::Corrupt { seq: 3, .. }), "{err}");
    }

    #[test]
    fn an_envelope_without_body_is_rejected() {
        let mut envelope = crate::testing::sample_envelope(1);
        envelope.body = None;
        let err = decode(&encode(&envelope)).expect_err("no body");
        assert!(matches!(err, Error::Malformed { .. }), "{err}");
    }
}
