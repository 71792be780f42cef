//! Helpers for tests of this crate and of every backend (feature `test-util`).
use crate::api::{AppendRequest, ExpectedVersion};
use crate::clock::Timestamp;
use crate::ids::{EventId, SeededIdGen};
use crate::schema::{self, Body, Envelope};

/// A deterministic, fully populated envelope; `n` varies its content.
pub fn sample_envelope(n: u64) -> Envelope {
    let ids = SeededIdGen::new(n);
    let ts = Timestamp::from_nanos(1_760_000_000_000_000_000 + n * 1_000_000);
    Envelope {
        event_id: EventId::new(ts, &ids).as_bytes().to_vec(),
        stream: format!("agent/a{n}"),
        stream_version: n,
        seq: n,
        ts: ts.as_nanos(),
        correlation_id: EventId::new(ts, &ids).as_bytes().to_vec(),
        causation_id: Default::default(),
        session_id: EventId::new(ts, &ids).as_bytes().to_vec(),
        saga_id: Default::default(),
        actor: "tester".into(),
        idempotency_key: String::new(),
        nonce: String::new(),
        schema_version: schema::SCHEMA_VERSION,
        hash: Default::default(),
        body: Some(Body::ActionRecorded(schema::ActionRecorded {
            agent_id: format!("a{n}"),
            session_id: "s".into(),
            task_id: "t".into(),
            kind: schema::ActionKind::Act as i32,
            cost: n * 10,
            outcome: schema::Outcome::Succeeded as i32,
            detail: "x".repeat(n as usize % 17),
        })),
    }
}

/// An event for `stream` as a producer hands it to the log (no seq, version
/// or hash yet). `n` makes its id and content unique.
pub fn fresh_event(stream: &str, n: u64) -> Envelope {
    let mut event = sample_envelope(n);
    event.stream = stream.to_owned();
    event.seq = 0;
    event.stream_version = 0;
    event
}

/// An append of `count` fresh events to `stream`.
pub fn request(stream: &str, expected: ExpectedVersion, count: u64, salt: u64) -> AppendRequest {
    AppendRequest {
        stream: stream.to_owned(),
        expected,
        events: (0..count).map(|i| fresh_event(stream, salt * 10_000 + i)).collect(),
        idempotency_key: None,
    }
}
