//! An archive day's manifest damaged in any way — bytes flipped, cut
//! short, or a field given any value of its type — is read by everything
//! that reads an archive (replay's history, `archive verify`, `archive
//! scan`) as an error naming what is wrong, never a panic (issue 15,
//! decoder hardening).
use std::path::{Path, PathBuf};

use agentlog_core::schema::AgentRegistered;
use agentlog_core::{
    AppendRequest, Body, Envelope, EventId, EventSource, ExpectedVersion, Log, SeededIdGen, Timestamp,
};
use agentlog_log::wal::Store;
use agentlog_log::{EmbeddedLog, Options};
use agentlog_replay::History;
use proptest::prelude::*;

const T0: u64 = 1_767_225_600_000_000_000;
const HOUR: u64 = 3_600_000_000_000;

/// A log of 60 events an hour apart (2026-01-01 to 01-03), its first two
/// days archived; the archive's root.
fn archive(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
        let log = EmbeddedLog::open(&data, Options::default()).unwrap();
        for n in 1..=60u64 {
            let ts = T0 + n * HOUR;
            let event = Envelope {
                event_id: EventId::new(Timestamp::from_nanos(ts), &SeededIdGen::new(n)).as_bytes().to_vec(),
                ts,
                stream: format!("agent/a{n}"),
                actor: "test".into(),
                body: Some(Body::AgentRegistered(AgentRegistered { agent_id: format!("a{n}"), ..Default::default() })),
                ..Envelope::default()
            };
            let request = AppendRequest {
                stream: event.stream.clone(),
                expected: ExpectedVersion::Any,
                events: vec![event],
                idempotency_key: None,
            };
            log.append(request).await.unwrap();
        }
    });
    let root = dir.join("archive");
    let store = Store::open_read_only(&data).unwrap();
    let through = "2026-01-02".parse().unwrap();
    agentlog_archive::run(&store, &root, through, &agentlog_archive::Settings::default(), &mut |_| {}).unwrap();
    root
}

/// Everything that reads an archive, on `root`: each may refuse it.
fn read_everything(root: &Path) {
    if let Ok(history) = History::open(None, Some(root))
        && let Ok(head) = EventSource::head(&history)
    {
        let _ = EventSource::read(&history, 1, usize::try_from(head.last_seq).unwrap_or(usize::MAX).min(1_000));
    }
    let _ = agentlog_archive::verify(root, None, &mut |_, _, _| {});
    if let Ok(scan) = agentlog_archive::scan(root, agentlog_archive::Filter::default()) {
        for _ in scan.take(1_000) {}
    }
}

/// A value of the same JSON type as `like`.
fn like(like: &serde_json::Value, pick: u64, text: &str) -> serde_json::Value {
    match like {
        serde_json::Value::String(_) => text.into(),
        serde_json::Value::Number(_) => pick.into(),
        serde_json::Value::Array(items) => items.iter().take((pick % 3) as usize).cloned().collect(),
        serde_json::Value::Object(_) => serde_json::json!({}),
        other => other.clone(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn a_damaged_manifest_is_an_error_never_a_panic(
        day in 0usize..2,
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cut in proptest::option::of(any::<prop::sample::Index>()),
        fields in proptest::collection::vec((any::<prop::sample::Index>(), any::<u64>(), "[0-9a-f-]{0,70}"), 0..3),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let root = archive(dir.path());
        let days = agentlog_archive::layout::days(&root).unwrap();
        let manifest = days[day].1.join(agentlog_archive::layout::MANIFEST);
        let mut value: serde_json::Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
        let object = value.as_object_mut().unwrap();
        let keys: Vec<String> = object.keys().cloned().collect();
        for (at, pick, text) in fields {
            let key = &keys[at.index(keys.len())];
            let replaced = like(&object[key], pick, &text);
            object.insert(key.clone(), replaced);
        }
        let mut bytes = serde_json::to_vec_pretty(&value).unwrap();
        for (at, flip) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= flip;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        std::fs::write(&manifest, &bytes).unwrap();
        read_everything(&root);
    }
}
