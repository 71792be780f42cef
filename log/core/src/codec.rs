//! Envelope bytes: encoding, size limits, and decoding that rejects bad input
//! with an error and never panics.
//!
//! The schema has no map fields, so prost's encoding of an envelope is
//! canonical: the same envelope always gives the same bytes. The hash chain
//! and determinism checks rely on that.
use bytes::{Buf, Bytes};
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
///
/// The bytes are copied once; the envelope's ids and hash are slices of
/// that copy (one allocation for them all, where decoding from a slice
/// would allocate for each).
pub fn decode(bytes: &[u8]) -> Result<Envelope> {
    check_size(bytes)?;
    decode_shared(Bytes::copy_from_slice(bytes))
}

/// [`decode`] without the copy: the envelope's ids and hash are slices of
/// `bytes` (and keep all of it alive while they are).
pub fn decode_shared(bytes: Bytes) -> Result<Envelope> {
    check_size(&bytes)?;
    decode_buf(bytes)
}

fn decode_buf(buf: impl Buf) -> Result<Envelope> {
    let envelope = Envelope::decode(buf).map_err(|source| Error::Decode { what: "envelope", source })?;
    check_decoded(&envelope)?;
    Ok(envelope)
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
    check_size(bytes).map_err(|e| Error::Corrupt { seq, reason: e.to_string() })?;
    let envelope =
        decode_shared(Bytes::copy_from_slice(bytes)).map_err(|e| Error::Corrupt { seq, reason: e.to_string() })?;
    stored_under(seq, &envelope)?;
    Ok(envelope)
}

/// [`decode_at`] of the first `len` bytes of `page`, which it
/// advances past them, decoded in place at the end of `into` (an envelope
/// is over 500 bytes: each move of one through a return is a copy). The
/// envelope's ids and hash are slices of the page, taken without a slice
/// of the event's own to take them from (each slice of a `Bytes` is an
/// atomic count of its buffer's users). On an error nothing is added.
pub fn decode_next_into(seq: u64, page: &mut Bytes, len: usize, into: &mut Vec<Envelope>) -> Result<()> {
    if len > page.len() {
        return Err(Error::Corrupt { seq, reason: format!("{len} bytes long, but only {} are left", page.len()) });
    }
    check_size(&page[..len]).map_err(|e| Error::Corrupt { seq, reason: e.to_string() })?;
    into.push(Envelope::default());
    let envelope = into.last_mut().expect("just pushed");
    let decoded = envelope
        .merge(page.take(len))
        .map_err(|source| Error::Decode { what: "envelope", source })
        .and_then(|()| check_decoded(envelope))
        .map_err(|e| Error::Corrupt { seq, reason: e.to_string() })
        .and_then(|()| stored_under(seq, envelope));
    if decoded.is_err() {
        into.pop();
    }
    decoded
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
    fn envelopes_end_to_end_in_a_page_decode_one_after_another() {
        let events: Vec<Envelope> =
            (1..=3).map(|n| Envelope { seq: n, ..crate::testing::sample_envelope(n) }).collect();
        let encoded: Vec<Vec<u8>> = events.iter().map(encode).collect();
        let (mut page, mut decoded) = (Bytes::from(encoded.concat()), Vec::new());
        for (event, bytes) in events.iter().zip(&encoded) {
            decode_next_into(event.seq, &mut page, bytes.len(), &mut decoded).expect("decodes");
        }
        assert_eq!(decoded, events);
        assert!(page.is_empty(), "each decode takes exactly its bytes");

        // Under the wrong seq, cut short, or past the page's end: corrupt,
        // at the seq asked for, and nothing added.
        let (mut page, mut decoded) = (Bytes::from(encoded.concat()), Vec::new());
        let err = decode_next_into(7, &mut page, encoded[0].len(), &mut decoded).expect_err("wrong seq");
        assert!(matches!(err, Error::Corrupt { seq: 7, .. }), "{err}");
        let err = decode_next_into(2, &mut page, encoded[1].len() - 3, &mut decoded).expect_err("cut short");
        assert!(matches!(err, Error::Corrupt { seq: 2, .. }), "{err}");
        let mut last = Bytes::from(encoded[2].clone());
        let err = decode_next_into(3, &mut last, encoded[2].len() + 1, &mut decoded).expect_err("past the end");
        assert!(matches!(err, Error::Corrupt { seq: 3, .. }), "{err}");
        assert!(decoded.is_empty());
    }

    #[test]
    fn an_envelope_without_body_is_rejected() {
        let mut envelope = crate::testing::sample_envelope(1);
        envelope.body = None;
        let err = decode(&encode(&envelope)).expect_err("no body");
        assert!(matches!(err, Error::Malformed { .. }), "{err}");
    }
}
