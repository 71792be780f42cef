//! Every command body a producer can send, thrown at the decoders as
//! arbitrary and as damaged bytes and JSON: each is a command or a typed
//! `invalid` rejection, never a panic, and a command that decodes can be
//! validated, routed and printed without one either (issue 15, decoder
//! hardening).
use agentlog_commands::{Code, Command};
use agentlog_core::Kind;
use proptest::prelude::*;

/// What the handler does with a command before any state: none may panic.
fn handle(command: &Command) {
    let _ = command.validate();
    let _ = command.stream();
    let _ = command.session_id();
    let _ = command.to_json();
}

fn refused_as_invalid(rejection: &agentlog_commands::Rejection) {
    assert_eq!(rejection.kind, Kind::Invalid, "{rejection}");
    assert!(matches!(rejection.code, Code::InvalidCommand | Code::TooLarge | Code::InvalidAmount), "{rejection}");
}

/// A valid protobuf body of each command (its JSON form's defaults,
/// encoded by way of `to_json` and back through protobuf's field names).
fn sample(name: &str) -> Vec<u8> {
    use agentlog_core::schema as pb;
    use prost::Message;
    match name {
        "debit_budget" => {
            pb::DebitBudget { budget_id: "b".into(), amount: 5, agent_id: "a".into(), ..Default::default() }
                .encode_to_vec()
        }
        "claim_task" => {
            pb::ClaimTask { task_id: "t".into(), agent_id: "a".into(), session_id: "s".into(), lease_ms: 9 }
                .encode_to_vec()
        }
        "create_task" => pb::CreateTask {
            task_id: "t".into(),
            required_capabilities: vec!["c".into(), "d".into()],
            dependencies: vec!["u".into()],
            ..Default::default()
        }
        .encode_to_vec(),
        "register_module" => {
            pb::RegisterModule { name: "m".into(), kind: 1, module: b"\0asm\x01\0\0\0".to_vec() }.encode_to_vec()
        }
        "run_module" => pb::RunModule {
            module_hash: "ab".repeat(32),
            agent_id: "a".into(),
            session_id: "s".into(),
            input: b"in".to_vec(),
            fuel: 10,
            ..Default::default()
        }
        .encode_to_vec(),
        "record_action" => {
            pb::RecordAction { agent_id: "a".into(), session_id: "s".into(), kind: 1, outcome: 1, ..Default::default() }
                .encode_to_vec()
        }
        _ => pb::OpenSession { agent_id: "a".into(), session_id: "s".into(), heartbeat_timeout_ms: 3 }.encode_to_vec(),
    }
}

/// Any JSON value, nested a few levels.
fn json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(serde_json::Value::Null, serde_json::Value::Number)),
        ".{0,40}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            proptest::collection::btree_map(
                prop_oneof![
                    // The commands' own field names, so objects get past
                    // "unknown field" and reach the typed checks.
                    Just("task_id".to_owned()),
                    Just("agent_id".to_owned()),
                    Just("session_id".to_owned()),
                    Just("budget_id".to_owned()),
                    Just("amount".to_owned()),
                    Just("module".to_owned()),
                    Just("module_hash".to_owned()),
                    Just("input".to_owned()),
                    Just("fuel".to_owned()),
                    Just("kind".to_owned()),
                    Just("name".to_owned()),
                    Just("command".to_owned()),
                    Just("capabilities".to_owned()),
                    Just("lease_ms".to_owned()),
                    Just("outcome".to_owned()),
                    "[a-z_]{1,12}",
                ],
                inner,
                0..6
            )
            .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
        ]
    })
}

/// A valid JSON body of each command that has one without a choice of
/// enum (its protobuf sample, printed).
fn valid_json(name: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    let command = Command::from_protobuf(name, &sample(name)).ok()?;
    match command.to_json() {
        serde_json::Value::Object(fields) => Some(fields),
        _ => None,
    }
}

/// A value of the same JSON type as `like`, any of them: any text (long,
/// empty, not an id), any integer, any list of texts.
fn like(like: &serde_json::Value, pick: u64, text: &str, texts: &[String]) -> serde_json::Value {
    match like {
        serde_json::Value::String(_) => text.into(),
        serde_json::Value::Number(_) if pick.is_multiple_of(3) => serde_json::Value::from(pick as i64),
        serde_json::Value::Number(_) => pick.into(),
        serde_json::Value::Bool(_) => pick.is_multiple_of(2).into(),
        serde_json::Value::Array(_) => texts.to_vec().into(),
        other => other.clone(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4_000))]

    /// Valid bodies with any field's value replaced by any value of its
    /// type: these reach validation, and the handler's routing, with ids
    /// too long or not ids, amounts and fuel at the extremes, lists past
    /// their limit.
    #[test]
    fn valid_bodies_with_any_values_are_a_command_or_invalid(
        name in prop::sample::select(Command::NAMES),
        replace in proptest::collection::vec((any::<prop::sample::Index>(), any::<u64>(), ".{0,200}"), 1..4),
        texts in proptest::collection::vec("[a-z@:_-]{0,140}", 0..80),
    ) {
        let Some(mut fields) = valid_json(name) else { return Ok(()) };
        let keys: Vec<String> = fields.keys().cloned().collect();
        prop_assume!(!keys.is_empty());
        for (at, pick, text) in replace {
            let key = &keys[at.index(keys.len())];
            let value = like(&fields[key], pick, &text, &texts);
            fields.insert(key.clone(), value);
        }
        match Command::from_json(name, serde_json::Value::Object(fields)) {
            Ok(command) => handle(&command),
            Err(rejection) => refused_as_invalid(&rejection),
        }
    }

    #[test]
    fn arbitrary_protobuf_bodies_are_a_command_or_invalid(
        name in prop::sample::select(Command::NAMES),
        bytes in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        match Command::from_protobuf(name, &bytes) {
            Ok(command) => handle(&command),
            Err(rejection) => refused_as_invalid(&rejection),
        }
    }

    #[test]
    fn damaged_protobuf_bodies_are_a_command_or_invalid(
        name in prop::sample::select(Command::NAMES),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = sample(name);
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= value;
        }
        let end = cut.index(bytes.len() + 1);
        match Command::from_protobuf(name, &bytes[..end]) {
            Ok(command) => handle(&command),
            Err(rejection) => refused_as_invalid(&rejection),
        }
    }

    #[test]
    fn arbitrary_json_bodies_are_a_command_or_invalid(
        name in prop::sample::select(Command::NAMES),
        body in json(),
    ) {
        match Command::from_json(name, body) {
            Ok(command) => handle(&command),
            Err(rejection) => refused_as_invalid(&rejection),
        }
    }

    #[test]
    fn unknown_command_names_are_invalid(name in ".{0,40}", bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        prop_assume!(!Command::NAMES.contains(&name.as_str()));
        refused_as_invalid(&Command::from_protobuf(&name, &bytes).unwrap_err());
        refused_as_invalid(&Command::from_json(&name, serde_json::json!({})).unwrap_err());
    }
}

/// The signature headers of a request, each present or not.
#[derive(Clone, Debug)]
struct SignatureHeaders {
    key_id: Option<String>,
    nonce: Option<String>,
    timestamp: Option<String>,
    signature: Option<String>,
}

impl SignatureHeaders {
    fn get(&self, name: &str) -> Option<String> {
        use agentlog_commands::auth::signing::*;
        match name {
            HEADER_KEY_ID => self.key_id.clone(),
            HEADER_NONCE => self.nonce.clone(),
            HEADER_TIMESTAMP => self.timestamp.clone(),
            HEADER_SIGNATURE => self.signature.clone(),
            "Content-Type" => Some("application/json".into()),
            _ => None,
        }
    }
}

/// A header value: anything, or something close to a valid one.
fn header_value() -> impl Strategy<Value = Option<String>> {
    proptest::option::weighted(
        0.9,
        prop_oneof![
            ".{0,100}",
            "[A-Za-z0-9_-]{14,66}",
            "[0-9]{0,22}",
            "[A-Za-z0-9+/]{84,90}={0,2}",
            "[a-z@:_-]{0,130}",
        ],
    )
}

fn signer() -> agentlog_commands::Signer {
    use std::sync::Arc;
    let clock = Arc::new(agentlog_core::ManualClock::new(agentlog_core::Timestamp::from_nanos(1_767_225_600)));
    agentlog_commands::Signer::new("alice", [7; 32], clock, Arc::new(agentlog_core::SeededIdGen::new(1)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4_000))]

    /// Any signature headers: none at all is an unsigned request; anything
    /// else is a signed request to verify, or an `invalid` rejection
    /// (unauthenticated, bad_signature, stale_timestamp), never a panic;
    /// and whatever parses does not verify as alice's.
    #[test]
    fn any_signature_headers_are_a_request_to_verify_or_invalid(
        headers in (header_value(), header_value(), header_value(), header_value()),
        subject in ".{0,60}",
        body in proptest::collection::vec(any::<u8>(), 0..128),
    ) {
        use agentlog_commands::auth::Signed;
        let (key_id, nonce, timestamp, signature) = headers;
        let headers = SignatureHeaders { key_id, nonce, timestamp, signature };
        let absent = headers.key_id.is_none() && headers.nonce.is_none()
            && headers.timestamp.is_none() && headers.signature.is_none();
        match Signed::from_headers(|name| headers.get(name), &subject, &body) {
            Ok(None) => prop_assert!(absent),
            Ok(Some(signed)) => {
                let err = signed.verify(&signer().public_key()).unwrap_err();
                prop_assert_eq!(err.code, Code::BadSignature);
            }
            Err(rejection) => {
                prop_assert_eq!(rejection.kind, Kind::Invalid);
                prop_assert!(
                    matches!(rejection.code, Code::Unauthenticated | Code::BadSignature | Code::StaleTimestamp),
                    "{}", rejection
                );
            }
        }
    }

    /// A genuine signature with any one of its signed parts changed (a
    /// header, the subject or the body) never verifies: refused at parsing,
    /// or by the signature.
    #[test]
    fn a_signed_request_with_anything_changed_does_not_verify(
        part in 0..6usize,
        flip in any::<prop::sample::Index>(),
        xor in 1..=255u8,
    ) {
        use agentlog_commands::auth::Signed;
        let signer = signer();
        let (subject, mut body) = ("agentlog.cmd.heartbeat".to_owned(), br#"{"session_id":"s1"}"#.to_vec());
        let sent = signer.sign(&subject, "application/json", "", "", &body);
        let mut headers = SignatureHeaders {
            key_id: Some(sent.key_id),
            nonce: Some(sent.nonce),
            timestamp: Some(sent.timestamp),
            signature: Some(sent.signature),
        };
        let genuine = Signed::from_headers(|name| headers.get(name), &subject, &body).unwrap().unwrap();
        genuine.verify(&signer.public_key()).unwrap();
        let damage = |text: &mut String| {
            let mut bytes = std::mem::take(text).into_bytes();
            let i = flip.index(bytes.len());
            bytes[i] ^= xor;
            *text = String::from_utf8_lossy(&bytes).into_owned();
        };
        let mut subject = subject;
        match part {
            0 => damage(headers.key_id.as_mut().unwrap()),
            1 => damage(headers.nonce.as_mut().unwrap()),
            2 => damage(headers.timestamp.as_mut().unwrap()),
            3 => damage(headers.signature.as_mut().unwrap()),
            4 => damage(&mut subject),
            _ => { let i = flip.index(body.len()); body[i] ^= xor; }
        }
        match Signed::from_headers(|name| headers.get(name), &subject, &body) {
            Ok(Some(signed)) => {
                // A key id changed names another principal: its key is not
                // alice's either.
                let err = signed.verify(&signer.public_key()).unwrap_err();
                prop_assert_eq!(err.code, Code::BadSignature);
            }
            Ok(None) => prop_assert!(false, "the headers are still there"),
            Err(rejection) => prop_assert_eq!(rejection.kind, Kind::Invalid),
        }
    }
}
