//! Envelopes as JSON for people and tools (`agentlog tail --json`): ids as
//! UUID text, hashes as hex, the time both as RFC 3339 and as nanoseconds,
//! and the body with its `type`.
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::chain::to_hex;
use crate::clock::Timestamp;
use crate::schema::Envelope;

fn optional_uuid(bytes: &[u8]) -> Value {
    match Uuid::from_slice(bytes) {
        Ok(id) => Value::String(id.hyphenated().to_string()),
        Err(_) if bytes.is_empty() => Value::Null,
        Err(_) => Value::String(to_hex(bytes)),
    }
}

fn optional_string(s: &str) -> Value {
    if s.is_empty() { Value::Null } else { Value::String(s.to_owned()) }
}

pub fn envelope(e: &Envelope) -> Value {
    let body = e.body.as_ref().map(|b| serde_json::to_value(b).unwrap_or(Value::Null)).unwrap_or(Value::Null);
    let mut object = Map::new();
    object.insert("seq".into(), json!(e.seq));
    object.insert("stream".into(), json!(e.stream));
    object.insert("stream_version".into(), json!(e.stream_version));
    object.insert("type".into(), json!(e.body.as_ref().map(|b| b.type_name())));
    object.insert("ts".into(), json!(Timestamp::from_nanos(e.ts).to_string()));
    object.insert("ts_ns".into(), json!(e.ts));
    object.insert("event_id".into(), optional_uuid(&e.event_id));
    object.insert("actor".into(), optional_string(&e.actor));
    object.insert("correlation_id".into(), optional_uuid(&e.correlation_id));
    object.insert("causation_id".into(), optional_uuid(&e.causation_id));
    object.insert("session_id".into(), optional_uuid(&e.session_id));
    object.insert("saga_id".into(), optional_uuid(&e.saga_id));
    object.insert("idempotency_key".into(), optional_string(&e.idempotency_key));
    object.insert("schema_version".into(), json!(e.schema_version));
    object.insert("hash".into(), json!(to_hex(&e.hash)));
    object.insert("body".into(), body);
    Value::Object(object)
}

#[cfg(test)]
mod tests {
    #[test]
    fn enum_fields_print_their_names() {
        let value = super::envelope(&crate::testing::sample_envelope(2));
        assert_eq!(value["type"], "action_recorded");
        assert_eq!(value["body"]["kind"], "act");
        assert_eq!(value["body"]["outcome"], "succeeded");
        assert_eq!(value["body"]["type"], "action_recorded");
    }
}
