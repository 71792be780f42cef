//! The `Log` contract as executable tests (feature `test-util`). Every
//! backend runs all of them with `log_conformance_tests!`, so the embedded
//! and the JetStream log behave alike by construction.
//!
//! Each check takes a fresh, empty log.
use std::sync::Arc;

use crate::api::{AppendRequest, Appended, ExpectedVersion, GroupRequest, Head, Log, Part, Subscription};
use crate::chain::{self, GENESIS};
use crate::error::Error;
use crate::testing::request;

/// Generates one `#[tokio::test]` per conformance check. `$make` is an
/// async expression giving `(log, guard)`: a fresh empty log, and whatever
/// must live as long as it (a temporary directory, a server).
#[macro_export]
macro_rules! log_conformance_tests {
    ($make:expr) => {
        $crate::log_conformance_tests!(@each $make;
            appends_get_consecutive_seqs_versions_and_a_chain,
            a_wrong_expected_version_conflicts_and_writes_nothing,
            an_idempotency_key_returns_the_first_result,
            a_nonce_is_recorded_once_like_a_key,
            reads_by_range_and_by_stream,
            a_subscription_delivers_old_then_new_events_in_order,
            racing_appends_on_one_version_have_one_winner,
            invalid_appends_are_refused_and_write_nothing,
            a_group_appends_its_parts_in_order_each_with_its_own_key,
            a_group_is_written_whole_or_not_at_all,
        );
    };
    (@each $make:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $check() {
                let (log, _guard) = $make.await;
                $crate::conformance::$check(std::sync::Arc::new(log)).await;
            }
        )*
    };
}

async fn assert_chain<L: Log>(log: &L) {
    let events = log.read(1, usize::MAX).await.expect("read all");
    let mut previous = GENESIS;
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event.seq, i as u64 + 1, "seqs are consecutive from 1");
        assert!(chain::is_linked(&previous, event), "seq {} links to the one before", event.seq);
        previous = event.hash[..].try_into().expect("32-byte hash");
    }
    let head = log.head().await.expect("head");
    assert_eq!(head, Head { last_seq: events.len() as u64, hash: previous });
}

pub async fn appends_get_consecutive_seqs_versions_and_a_chain<L: Log>(log: Arc<L>) {
    assert_eq!(log.head().await.unwrap(), Head::EMPTY);
    let a = log.append(request("task/a", ExpectedVersion::Exact(0), 3, 1)).await.unwrap();
    assert_eq!((a.first_seq, a.last_seq, a.stream_version, a.duplicate), (1, 3, 3, false));
    let b = log.append(request("task/b", ExpectedVersion::Exact(0), 2, 2)).await.unwrap();
    assert_eq!((b.first_seq, b.last_seq, b.stream_version), (4, 5, 2));
    let c = log.append(request("task/a", ExpectedVersion::Exact(3), 1, 3)).await.unwrap();
    assert_eq!((c.first_seq, c.stream_version), (6, 4));
    let d = log.append(request("task/a", ExpectedVersion::Any, 1, 4)).await.unwrap();
    assert_eq!((d.first_seq, d.stream_version), (7, 5));
    assert_eq!(log.stream_version("task/a").await.unwrap(), 5);
    assert_eq!(log.stream_version("task/b").await.unwrap(), 2);
    assert_eq!(log.stream_version("task/none").await.unwrap(), 0);
    let all = log.read(1, 100).await.unwrap();
    let placed: Vec<(u64, &str, u64)> = all.iter().map(|e| (e.seq, e.stream.as_str(), e.stream_version)).collect();
    assert_eq!(
        placed,
        [
            (1, "task/a", 1),
            (2, "task/a", 2),
            (3, "task/a", 3),
            (4, "task/b", 1),
            (5, "task/b", 2),
            (6, "task/a", 4),
            (7, "task/a", 5)
        ]
    );
    assert_chain(&*log).await;
}

pub async fn a_wrong_expected_version_conflicts_and_writes_nothing<L: Log>(log: Arc<L>) {
    log.append(request("budget/x", ExpectedVersion::Exact(0), 2, 1)).await.unwrap();
    let before = log.head().await.unwrap();
    for expected in [0, 1, 3, 99] {
        let err = log.append(request("budget/x", ExpectedVersion::Exact(expected), 1, 2)).await.unwrap_err();
        assert!(
            matches!(err, Error::Conflict { actual: 2, .. }),
            "expected {expected}: a conflict at version 2, got {err}"
        );
        assert_eq!(err.kind(), crate::Kind::Conflict);
    }
    assert_eq!(log.head().await.unwrap(), before, "a conflict writes nothing");
    assert_eq!(log.stream_version("budget/x").await.unwrap(), 2);
}

pub async fn an_idempotency_key_returns_the_first_result<L: Log>(log: Arc<L>) {
    let mut first = request("session/s", ExpectedVersion::Exact(0), 2, 1);
    first.idempotency_key = Some("open-s".into());
    let appended = log.append(first.clone()).await.unwrap();
    assert!(!appended.duplicate);
    // A retry, even one whose expected version is now stale, appends nothing.
    let again = log.append(first).await.unwrap();
    assert_eq!(again, crate::Appended { duplicate: true, ..appended });
    let mut other_body = request("session/s", ExpectedVersion::Any, 1, 9);
    other_body.idempotency_key = Some("open-s".into());
    assert_eq!(log.append(other_body).await.unwrap(), again);
    assert_eq!(log.head().await.unwrap().last_seq, 2);
    assert_eq!(log.idempotent_result("open-s").await.unwrap(), Some(again));
    assert_eq!(log.idempotent_result("never-used").await.unwrap(), None);
    let events = log.read(1, 10).await.unwrap();
    assert_eq!(events[0].idempotency_key, "open-s");
    assert_eq!(events[1].idempotency_key, "");
}

/// A signed command's nonce rides on its first event and is recorded as
/// `nonce/<nonce>` in the idempotency table: the same nonce again (on any
/// stream, with any events, with or without a key) appends nothing and
/// returns the first result; a key and a nonce on one append are both
/// recorded.
pub async fn a_nonce_is_recorded_once_like_a_key<L: Log>(log: Arc<L>) {
    let mut first = request("agent/n", ExpectedVersion::Exact(0), 1, 1);
    first.events[0].nonce = "alice/0123456789abcdef".into();
    let appended = log.append(first).await.unwrap();
    assert!(!appended.duplicate);
    let mut replayed = request("agent/other", ExpectedVersion::Exact(0), 1, 2);
    replayed.events[0].nonce = "alice/0123456789abcdef".into();
    let again = log.append(replayed).await.unwrap();
    assert_eq!(again, crate::Appended { duplicate: true, ..appended });
    assert_eq!(log.stream_version("agent/other").await.unwrap(), 0, "the repeated nonce appended nothing");
    let key = crate::api::nonce_key("alice/0123456789abcdef");
    assert_eq!(log.idempotent_result(&key).await.unwrap(), Some(again));

    let mut both = request("agent/n", ExpectedVersion::Exact(1), 2, 3);
    both.idempotency_key = Some("both".into());
    both.events[0].nonce = "alice/fedcba9876543210".into();
    let appended = log.append(both).await.unwrap();
    let recorded = Some(crate::Appended { duplicate: true, ..appended });
    assert_eq!(log.idempotent_result("both").await.unwrap(), recorded);
    assert_eq!(log.idempotent_result(&crate::api::nonce_key("alice/fedcba9876543210")).await.unwrap(), recorded);
    let events = log.read(1, 10).await.unwrap();
    assert_eq!(
        events.iter().map(|e| e.nonce.as_str()).collect::<Vec<_>>(),
        ["alice/0123456789abcdef", "alice/fedcba9876543210", ""]
    );

    let mut second_event = request("agent/m", ExpectedVersion::Any, 2, 4);
    second_event.events[1].nonce = "alice/late".into();
    assert!(matches!(log.append(second_event).await, Err(Error::InvalidAppend { .. })));
    let mut reserved = request("agent/m", ExpectedVersion::Any, 1, 5);
    reserved.idempotency_key = Some(key);
    assert!(matches!(log.append(reserved).await, Err(Error::InvalidAppend { .. })));
}

pub async fn reads_by_range_and_by_stream<L: Log>(log: Arc<L>) {
    for i in 0..10u64 {
        let stream = if i % 2 == 0 { "agent/even" } else { "agent/odd" };
        log.append(request(stream, ExpectedVersion::Any, 1, i)).await.unwrap();
    }
    let middle = log.read(4, 3).await.unwrap();
    assert_eq!(middle.iter().map(|e| e.seq).collect::<Vec<_>>(), [4, 5, 6]);
    assert!(log.read(11, 5).await.unwrap().is_empty());
    let odd = log.read_stream("agent/odd", 2, 2).await.unwrap();
    assert_eq!(odd.iter().map(|e| (e.seq, e.stream_version)).collect::<Vec<_>>(), [(4, 2), (6, 3)]);
    let all_even = log.read_stream("agent/even", 1, 100).await.unwrap();
    assert_eq!(all_even.len(), 5);
    assert!(all_even.iter().all(|e| e.stream == "agent/even"));
    // A stream whose name is a prefix of another's sees only its own events.
    log.append(request("agent/ev", ExpectedVersion::Exact(0), 1, 50)).await.unwrap();
    assert_eq!(log.read_stream("agent/ev", 1, 100).await.unwrap().len(), 1);
    assert_eq!(log.stream_version("agent/ev").await.unwrap(), 1);
}

pub async fn a_subscription_delivers_old_then_new_events_in_order<L: Log>(log: Arc<L>) {
    for i in 0..5 {
        log.append(request("task/sub", ExpectedVersion::Any, 1, i)).await.unwrap();
    }
    let mut subscription = log.subscribe(3).unwrap();
    let writer = {
        let log = log.clone();
        tokio::spawn(async move {
            for i in 5..205 {
                log.append(request("task/sub", ExpectedVersion::Any, 1, i)).await.unwrap();
            }
        })
    };
    for expected in 3..=205u64 {
        let event = tokio::time::timeout(std::time::Duration::from_secs(20), subscription.next())
            .await
            .expect("a committed event arrives")
            .unwrap();
        assert_eq!(event.seq, expected);
    }
    writer.await.unwrap();
}

pub async fn racing_appends_on_one_version_have_one_winner<L: Log>(log: Arc<L>) {
    for round in 0..20u64 {
        let stream = format!("task/race{round}");
        let racers: Vec<_> = (0..8u64)
            .map(|r| {
                let log = log.clone();
                let stream = stream.clone();
                tokio::spawn(async move {
                    log.append(request(&stream, ExpectedVersion::Exact(0), 1, round * 100 + r)).await
                })
            })
            .collect();
        let mut won = 0;
        for racer in racers {
            match racer.await.unwrap() {
                Ok(_) => won += 1,
                Err(Error::Conflict { actual: 1, .. }) => {}
                Err(other) => panic!("unexpected {other}"),
            }
        }
        assert_eq!(won, 1, "round {round}");
        assert_eq!(log.stream_version(&stream).await.unwrap(), 1);
    }
    assert_chain(&*log).await;
}

pub async fn invalid_appends_are_refused_and_write_nothing<L: Log>(log: Arc<L>) {
    let mut no_events = request("task/x", ExpectedVersion::Any, 1, 1);
    no_events.events.clear();
    let mut no_body = request("task/x", ExpectedVersion::Any, 1, 1);
    no_body.events[0].body = None;
    let mut bad_id = request("task/x", ExpectedVersion::Any, 1, 1);
    bad_id.events[0].event_id = vec![1, 2, 3];
    let mut sealed = request("task/x", ExpectedVersion::Any, 1, 1);
    sealed.events[0].hash = vec![7; 32];
    let mut other_stream = request("task/x", ExpectedVersion::Any, 1, 1);
    other_stream.events[0].stream = "task/y".into();
    let mut too_large = request("task/x", ExpectedVersion::Any, 1, 1);
    too_large.events[0].actor = "x".repeat(crate::codec::MAX_EVENT_BYTES);
    let too_many = request("task/x", ExpectedVersion::Any, crate::api::MAX_APPEND_EVENTS as u64 + 1, 1);
    let no_stream = AppendRequest { stream: String::new(), ..request("task/x", ExpectedVersion::Any, 1, 1) };
    let dotted = AppendRequest { stream: "task/a.b".into(), ..request("task/x", ExpectedVersion::Any, 1, 1) };
    let no_kind = AppendRequest { stream: "t1".into(), ..request("task/x", ExpectedVersion::Any, 1, 1) };
    for (name, bad) in [
        ("no events", no_events),
        ("no body", no_body),
        ("bad event id", bad_id),
        ("already sealed", sealed),
        ("another stream", other_stream),
        ("too large", too_large),
        ("too many", too_many),
        ("no stream", no_stream),
        ("a dot in the id", dotted),
        ("no kind", no_kind),
    ] {
        let err = log.append(bad).await.expect_err(name);
        assert_eq!(err.kind(), crate::Kind::Invalid, "{name}: {err}");
    }
    assert_eq!(log.head().await.unwrap(), Head::EMPTY);
}

/// A part of `count` fresh events for a group test.
fn part(stream: &str, count: u64, salt: u64, key: Option<&str>) -> Part {
    let AppendRequest { events, .. } = request(stream, ExpectedVersion::Any, count, salt);
    Part { events, idempotency_key: key.map(str::to_owned) }
}

/// Parts follow each other on the stream; each part's first event carries
/// its key; each key (and nonce) records its own part's result, and a
/// later lone append with one of them gets that result.
pub async fn a_group_appends_its_parts_in_order_each_with_its_own_key<L: Log>(log: Arc<L>) {
    log.append(request("budget/g", ExpectedVersion::Exact(0), 1, 1)).await.unwrap();
    let mut signed = part("budget/g", 1, 4, Some("g-3"));
    signed.events[0].nonce = "alice/0123456789abcdef".into();
    let group = GroupRequest {
        stream: "budget/g".into(),
        expected: ExpectedVersion::Exact(1),
        parts: vec![
            part("budget/g", 2, 2, Some("g-1")),
            part("budget/g", 1, 3, None),
            signed,
            part("budget/g", 1, 5, Some("g-4")),
        ],
    };
    let results = log.append_group(group).await.unwrap();
    let placed: Vec<(u64, u64, u64, bool)> =
        results.iter().map(|a| (a.first_seq, a.last_seq, a.stream_version, a.duplicate)).collect();
    assert_eq!(placed, [(2, 3, 3, false), (4, 4, 4, false), (5, 5, 5, false), (6, 6, 6, false)]);
    let recorded = |i: usize| Some(Appended { duplicate: true, ..results[i] });
    assert_eq!(log.idempotent_result("g-1").await.unwrap(), recorded(0));
    assert_eq!(log.idempotent_result("g-3").await.unwrap(), recorded(2));
    assert_eq!(log.idempotent_result(&crate::api::nonce_key("alice/0123456789abcdef")).await.unwrap(), recorded(2));
    assert_eq!(log.idempotent_result("g-4").await.unwrap(), recorded(3));
    let events = log.read(1, 10).await.unwrap();
    let keys: Vec<(u64, &str, &str, u64)> =
        events.iter().map(|e| (e.seq, e.idempotency_key.as_str(), e.nonce.as_str(), e.stream_version)).collect();
    assert_eq!(
        keys,
        [
            (1, "", "", 1),
            (2, "g-1", "", 2),
            (3, "", "", 3),
            (4, "", "", 4),
            (5, "g-3", "alice/0123456789abcdef", 5),
            (6, "g-4", "", 6)
        ]
    );
    // A retry of one of the group's commands, alone, gets its own result.
    let mut retry = request("budget/g", ExpectedVersion::Exact(1), 1, 9);
    retry.idempotency_key = Some("g-3".into());
    assert_eq!(Some(log.append(retry).await.unwrap()), recorded(2));
    // A group of one is an append: a used key gives the first result.
    let alone = GroupRequest {
        stream: "budget/g".into(),
        expected: ExpectedVersion::Exact(0),
        parts: vec![part("budget/g", 1, 10, Some("g-4"))],
    };
    assert_eq!(log.append_group(alone).await.unwrap(), [recorded(3).unwrap()]);
    let next = log.append(request("budget/g", ExpectedVersion::Exact(6), 1, 11)).await.unwrap();
    assert_eq!((next.first_seq, next.stream_version), (7, 7));
    assert_chain(&*log).await;
}

/// A group on a stale version, or with a key used before, writes nothing
/// and records none of its keys; a malformed group is refused as invalid.
pub async fn a_group_is_written_whole_or_not_at_all<L: Log>(log: Arc<L>) {
    let mut used = request("task/w", ExpectedVersion::Exact(0), 1, 1);
    used.idempotency_key = Some("used".into());
    log.append(used).await.unwrap();
    let before = log.head().await.unwrap();
    let group = |expected: u64, keys: [&str; 2]| GroupRequest {
        stream: "task/w".into(),
        expected: ExpectedVersion::Exact(expected),
        parts: vec![part("task/w", 1, 2, Some(keys[0])), part("task/w", 2, 3, Some(keys[1]))],
    };
    let stale = log.append_group(group(0, ["a", "b"])).await.unwrap_err();
    assert!(matches!(stale, Error::Conflict { actual: 1, .. }), "{stale}");
    let reused = log.append_group(group(1, ["c", "used"])).await.unwrap_err();
    assert!(matches!(&reused, Error::KeyUsed { key, .. } if key == "used"), "{reused}");
    assert_eq!(reused.kind(), crate::Kind::Conflict);
    assert_eq!(log.head().await.unwrap(), before, "neither group wrote anything");
    for key in ["a", "b", "c"] {
        assert_eq!(log.idempotent_result(key).await.unwrap(), None, "{key} was not recorded");
    }

    let twice = group(1, ["same", "same"]);
    let empty = GroupRequest { parts: Vec::new(), ..group(1, ["d", "e"]) };
    let mut late_nonce = group(1, ["f", "g"]);
    late_nonce.parts[1].events[1].nonce = "alice/late".into();
    let mut too_many = group(1, ["h", "i"]);
    too_many.parts[1] = part("task/w", crate::api::MAX_APPEND_EVENTS as u64, 4, None);
    for (name, bad) in [
        ("a key twice", twice),
        ("no parts", empty),
        ("a nonce inside a part", late_nonce),
        ("too many events", too_many),
    ] {
        let err = log.append_group(bad).await.expect_err(name);
        assert_eq!(err.kind(), crate::Kind::Invalid, "{name}: {err}");
    }
    assert_eq!(log.head().await.unwrap(), before);
    let whole = log.append_group(group(1, ["j", "k"])).await.unwrap();
    assert_eq!(whole.iter().map(|a| (a.first_seq, a.last_seq)).collect::<Vec<_>>(), [(2, 2), (3, 4)]);
}
