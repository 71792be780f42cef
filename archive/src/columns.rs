//! The archive's columns: the Arrow schema of every Parquet file, and the
//! builder that turns stored events (their bytes and their decoded envelope)
//! into record batches. `docs/ANALYTICS.md` documents each column.
use std::sync::Arc;

use agentlog_log::schema::{Body, Envelope};
use arrow_array::builder::{BinaryBuilder, StringBuilder, StringDictionaryBuilder, UInt64Builder};
use arrow_array::types::Int32Type;
use arrow_array::{ArrayRef, RecordBatch, TimestampNanosecondArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use uuid::Uuid;

/// Version of the archive's layout (columns, manifest). Written into every
/// manifest and every file's key-value metadata.
pub const ARCHIVE_SCHEMA_VERSION: u32 = 1;

/// Column names, in file order.
pub const SEQ: &str = "seq";
pub const EVENT_TYPE: &str = "event_type";
pub const SESSION_ID: &str = "session_id";
pub const ENVELOPE: &str = "envelope";

/// The schema of every archive file.
pub fn schema() -> SchemaRef {
    static SCHEMA: std::sync::LazyLock<SchemaRef> = std::sync::LazyLock::new(build_schema);
    SCHEMA.clone()
}

fn build_schema() -> SchemaRef {
    let text = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    Arc::new(Schema::new(vec![
        Field::new(SEQ, DataType::UInt64, false),
        text("event_id", false),
        Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())), false),
        text("stream", false),
        Field::new("stream_version", DataType::UInt64, false),
        Field::new(EVENT_TYPE, DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)), false),
        text("actor", true),
        text(SESSION_ID, true),
        text("task_id", true),
        text("agent_id", true),
        Field::new("amount", DataType::UInt64, true),
        text("correlation_id", true),
        text("causation_id", true),
        text("saga_id", true),
        text("body_json", false),
        Field::new(ENVELOPE, DataType::Binary, false),
        Field::new("hash", DataType::Binary, false),
    ]))
}

/// The index of a column in [`schema`].
pub fn index(name: &str) -> usize {
    schema().index_of(name).expect("a column of the archive schema")
}

/// The event type of a body this build does not know (written by a newer
/// schema); its `body_json` is `null` and its envelope keeps every byte.
pub const UNKNOWN_TYPE: &str = "unknown";

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// Appends events as rows and hands out record batches of the archive schema.
pub struct BatchBuilder {
    seq: UInt64Builder,
    event_id: StringBuilder,
    ts: Vec<i64>,
    stream: StringBuilder,
    stream_version: UInt64Builder,
    event_type: StringDictionaryBuilder<Int32Type>,
    actor: StringBuilder,
    session_id: StringBuilder,
    task_id: StringBuilder,
    agent_id: StringBuilder,
    amount: UInt64Builder,
    correlation_id: StringBuilder,
    causation_id: StringBuilder,
    saga_id: StringBuilder,
    body_json: StringBuilder,
    envelope: BinaryBuilder,
    hash: BinaryBuilder,
    uuid_text: String,
    json: Vec<u8>,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        BatchBuilder::with_capacity(1024)
    }
}

impl BatchBuilder {
    /// A builder sized for `rows` rows of typical events, so that filling a
    /// row group does not grow (and copy) its buffers again and again.
    pub fn with_capacity(rows: usize) -> Self {
        let text = |bytes_per_row: usize| StringBuilder::with_capacity(rows, rows * bytes_per_row);
        BatchBuilder {
            seq: UInt64Builder::with_capacity(rows),
            event_id: text(36),
            ts: Vec::with_capacity(rows),
            stream: text(24),
            stream_version: UInt64Builder::with_capacity(rows),
            event_type: StringDictionaryBuilder::with_capacity(rows, 32, 1024),
            actor: text(12),
            session_id: text(36),
            task_id: text(12),
            agent_id: text(10),
            amount: UInt64Builder::with_capacity(rows),
            correlation_id: text(36),
            causation_id: text(36),
            saga_id: text(8),
            body_json: text(160),
            envelope: BinaryBuilder::with_capacity(rows, rows * 200),
            hash: BinaryBuilder::with_capacity(rows, rows * 32),
            uuid_text: String::with_capacity(36),
            json: Vec::with_capacity(512),
        }
    }

    pub fn len(&self) -> usize {
        self.ts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }

    /// Appends one event: `stored` are its bytes as the log keeps them,
    /// `envelope` the same event decoded.
    pub fn push(&mut self, stored: &[u8], envelope: &Envelope) {
        self.seq.append_value(envelope.seq);
        append_uuid(&mut self.event_id, &mut self.uuid_text, &envelope.event_id);
        // Nanoseconds since the epoch fit an i64 until the year 2262.
        self.ts.push(i64::try_from(envelope.ts).unwrap_or(i64::MAX));
        self.stream.append_value(&envelope.stream);
        self.stream_version.append_value(envelope.stream_version);
        let fields = envelope.body.as_ref().map(Body::refs).unwrap_or_default();
        self.event_type.append_value(envelope.body.as_ref().map_or(UNKNOWN_TYPE, Body::type_name));
        self.actor.append_option(non_empty(&envelope.actor));
        match non_empty(fields.session_id) {
            Some(id) => self.session_id.append_value(id),
            None => append_uuid(&mut self.session_id, &mut self.uuid_text, &envelope.session_id),
        }
        self.task_id.append_option(non_empty(fields.task_id));
        self.agent_id.append_option(non_empty(fields.agent_id));
        self.amount.append_option(fields.amount);
        append_uuid(&mut self.correlation_id, &mut self.uuid_text, &envelope.correlation_id);
        append_uuid(&mut self.causation_id, &mut self.uuid_text, &envelope.causation_id);
        append_uuid(&mut self.saga_id, &mut self.uuid_text, &envelope.saga_id);
        self.json.clear();
        match &envelope.body {
            Some(body) => serde_json::to_writer(&mut self.json, body).expect("event bodies serialize to JSON"),
            None => self.json.extend_from_slice(b"null"),
        }
        self.body_json.append_value(std::str::from_utf8(&self.json).expect("serde_json writes UTF-8"));
        self.envelope.append_value(stored);
        self.hash.append_value(&envelope.hash);
    }

    /// The rows appended so far as one batch; the builder starts empty again.
    pub fn finish(&mut self) -> RecordBatch {
        let ts = TimestampNanosecondArray::from(std::mem::take(&mut self.ts)).with_timezone("UTC");
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.seq.finish()),
            Arc::new(self.event_id.finish()),
            Arc::new(ts),
            Arc::new(self.stream.finish()),
            Arc::new(self.stream_version.finish()),
            Arc::new(self.event_type.finish()),
            Arc::new(self.actor.finish()),
            Arc::new(self.session_id.finish()),
            Arc::new(self.task_id.finish()),
            Arc::new(self.agent_id.finish()),
            Arc::new(self.amount.finish()),
            Arc::new(self.correlation_id.finish()),
            Arc::new(self.causation_id.finish()),
            Arc::new(self.saga_id.finish()),
            Arc::new(self.body_json.finish()),
            Arc::new(self.envelope.finish()),
            Arc::new(self.hash.finish()),
        ];
        RecordBatch::try_new(schema(), columns).expect("the builder's columns match the archive schema")
    }
}

/// A 16-byte id as canonical UUID text; absent when empty. An id of another
/// length (never written by agentlog) is kept as hex rather than dropped.
fn append_uuid(builder: &mut StringBuilder, text: &mut String, bytes: &[u8]) {
    if bytes.is_empty() {
        builder.append_null();
        return;
    }
    text.clear();
    match Uuid::from_slice(bytes) {
        Ok(id) => {
            let mut buffer = Uuid::encode_buffer();
            text.push_str(id.hyphenated().encode_lower(&mut buffer));
        }
        Err(_) => text.push_str(&agentlog_log::chain::to_hex(bytes)),
    }
    builder.append_value(&*text);
}
