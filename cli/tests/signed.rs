//! `agentlog serve` in its default mode, signed, as producers meet it over a
//! real nats-server: `agentlog keygen` and `cmd --key`; unsigned, wrongly
//! signed, stale and future-dated requests refused; a captured request
//! refused when sent again, also after serve and nats-server restart and on
//! a node whose mirror was rebuilt from the stream; copies of one request
//! racing through two nodes accepted once; `demo --nats --key`; and
//! docs/examples/sign_command.py (Python, `cryptography` and `nats-py`)
//! signing what the node verifies.
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use agentlog_commands::Signer;
use agentlog_commands::auth::PreparedKey;
use agentlog_commands::auth::signing::{self, Signed};
use agentlog_commands::command::AllocateBudget;
use agentlog_commands::wire::{Message, Reply};
use agentlog_commands::{Accepted, Command as Cmd, Request};
use agentlog_log::{Clock, HybridClock, ManualClock, RandomIdGen, Timestamp};
use agentlog_tests::nats::NatsServer;
use agentlog_tests::output::{failed, ok};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::{Node, metric, start_with_env, within};
use serde_json::Value;

fn agentlog(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agentlog")).args(args).output().expect("run agentlog")
}

/// What `agentlog cmd` printed of its rejection (it exits non-zero).
fn rejected(output: Output) -> String {
    let out = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(!output.status.success(), "expected a rejection, got: {out}");
    out
}

fn python(args: &[&str]) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples/sign_command.py");
    Command::new("python3").arg(script).args(args).output().expect("run python3 (./scripts/setup.sh installs it)")
}

/// The admin's seed: the test signs as `ops` in process too.
const OPS_SEED: [u8; 32] = [1; 32];

fn ops(clock: Arc<dyn Clock>) -> Signer {
    Signer::new("ops", OPS_SEED, clock, Arc::new(RandomIdGen::new()))
}

fn now() -> Arc<dyn Clock> {
    Arc::new(HybridClock::system())
}

/// The key file `agentlog keygen` would write for `ops`, so the CLI and the
/// Python example sign as the same admin.
fn ops_key_file(dir: &Path) -> PathBuf {
    let path = dir.join("ops.key");
    let file = serde_json::json!({
        "key_id": "ops",
        "public_key": STANDARD.encode(ops(now()).public_key()),
        "secret_key": STANDARD.encode(OPS_SEED),
    });
    std::fs::write(&path, file.to_string()).unwrap();
    path
}

/// serve's configuration: signed (the default), `ops` the bootstrap admin,
/// a ten-minute skew window (restarts fit in it) and a dedupe window twice
/// that.
fn config(dir: &Path) -> PathBuf {
    let path = dir.join("agentlog.toml");
    let text = format!(
        "[stream]\nduplicate-window-seconds = 1200\n\n[auth]\nskew-seconds = 600\n\n[[auth.admins]]\nid = \"ops\"\npublic-key = \"{}\"\n",
        STANDARD.encode(ops(now()).public_key())
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn serve(server: &NatsServer, data: &Path, config: &Path) -> Node {
    let config = config.to_str().unwrap();
    // Signed is the default: the harness runs other tests' nodes open
    // unless told a mode.
    start_with_env(&server.url(), data, &["--config", config], &[("AGENTLOG_AUTH_MODE", "signed")])
}

/// Sends one message as it is, and gives the reply: `Ok(accepted)` or
/// `Err((code, message))`.
async fn send(nats: &async_nats::Client, message: &Message) -> Result<Accepted, (String, String)> {
    let reply = within(
        Duration::from_secs(30),
        "a reply",
        nats.request_with_headers(message.subject.clone(), message.headers.clone(), message.payload.clone().into()),
    )
    .await
    .expect("the service answers");
    match Reply::decode(message.encoding(), &reply.payload) {
        Ok(Reply::Accepted(accepted)) => Ok(accepted),
        Ok(Reply::Rejected(r)) => Err((r.code, r.message)),
        Err(unreadable) => panic!("{unreadable}"),
    }
}

fn message(signer: Option<&Signer>, command: impl Into<Cmd>, idempotency_key: Option<&str>) -> Message {
    let mut request = Request::new(command.into(), "ops");
    request.idempotency_key = idempotency_key.map(str::to_owned);
    Message::new(&request, signer)
}

fn allocate(budget: &str) -> AllocateBudget {
    AllocateBudget { budget_id: budget.into(), amount: 10 }
}

fn code(outcome: Result<Accepted, (String, String)>) -> String {
    match outcome {
        Ok(accepted) => panic!("accepted: {accepted:?}"),
        Err((code, _)) => code,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cli_and_a_python_producer_sign_what_the_node_verifies() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let url = server.url();
    let _node = serve(&server, &dir.path().join("node"), &config(dir.path()));
    let ops_key = ops_key_file(dir.path());
    let ops_key = ops_key.to_str().unwrap();

    // Unsigned: refused, naming why.
    let err = rejected(agentlog(&["cmd", "--nats", &url, "register_agent", r#"{"agent_id": "a1"}"#]));
    assert!(err.contains("unauthenticated") && err.contains("requires signed commands"), "{err}");
    ok(agentlog(&["cmd", "--nats", &url, "--key", ops_key, "register_agent", r#"{"agent_id": "a1"}"#]));

    // A key made by keygen, registered by the admin as agent a1's.
    let bob_key = dir.path().join("bob.key");
    let out = ok(agentlog(&["keygen", "--id", "bob", "--out", bob_key.to_str().unwrap()]));
    let public_key = out.lines().find_map(|l| l.strip_prefix("public_key ")).expect("keygen prints the public key");
    let register =
        serde_json::json!({"principal_id": "bob", "public_key": public_key, "roles": ["agent"], "agent_id": "a1"});
    ok(agentlog(&["cmd", "--nats", &url, "--key", ops_key, "register_principal", &register.to_string()]));
    let bob_key = bob_key.to_str().unwrap();
    let err = rejected(agentlog(&[
        "cmd",
        "--nats",
        &url,
        "--key",
        bob_key,
        "allocate_budget",
        r#"{"budget_id": "b1", "amount": 5}"#,
    ]));
    assert!(err.contains("forbidden") && err.contains("the admin role"), "{err}");
    let err = failed(agentlog(&["keygen", "--id", "bob", "--out", bob_key]));
    assert!(err.contains("must not exist"), "keygen never overwrites a key: {err}");

    // Python signs the documented test vector as Rust does.
    let vector = ok(python(&["--vector"]));
    let field = |name: &str| {
        vector.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')).unwrap_or_else(|| panic!("{vector}"))
    };
    let vector = signing::TEST_VECTOR;
    let bytes = signing::message(&vector, signing::TEST_VECTOR_BODY);
    assert_eq!(field("message"), bytes.iter().map(|b| format!("{b:02x}")).collect::<String>());
    let signature = STANDARD.decode(field("signature")).unwrap().try_into().expect("64 bytes");
    let signed = Signed {
        key_id: vector.key_id.into(),
        nonce: vector.nonce.into(),
        timestamp_nanos: vector.timestamp.parse().unwrap(),
        signature,
        message: bytes,
    };
    let seven = Signer::new("alice", [7; 32], now(), Arc::new(RandomIdGen::new()));
    signed.verify(&seven.public_key()).expect("Python's signature verifies");
    let prepared = PreparedKey::new(&seven.public_key()).expect("a key");
    signed
        .verify_prepared(&prepared)
        .expect("Python's signature verifies against the prepared key, as the node checks it");

    // And a real command from Python, then the same bytes sent again.
    let out = ok(python(&["--nats", &url, "--key", bob_key, "open_session", r#"{"agent_id": "a1"}"#]));
    let reply: Value = serde_json::from_str(out.trim()).unwrap();
    let session = reply["accepted"]["session_id"].as_str().expect("a session id").to_owned();
    let out = python(&[
        "--nats",
        &url,
        "--key",
        bob_key,
        "--repeat",
        "2",
        "heartbeat",
        &serde_json::json!({"session_id": session}).to_string(),
    ]);
    let out = ok(out);
    let replies: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(replies.len(), 2, "{out}");
    assert_eq!(replies[0]["accepted"]["events"][0], "session_heartbeat", "{out}");
    assert_eq!(replies[1]["rejected"]["code"], "replayed_nonce", "{out}");
    // The demo workload, each command signed by the principal its role
    // needs (registered for the run by the admin's key): nothing refused
    // for who sent it.
    let demo = ok(agentlog(&[
        "demo", "--nats", &url, "--key", ops_key, "--agents", "3", "--tasks", "20", "--days", "1", "--json",
    ]));
    let demo: Value = serde_json::from_str(&demo).unwrap();
    assert!(demo["summary"]["accepted"].as_u64().unwrap() > 100, "{demo}");
    for code in ["unauthenticated", "forbidden", "bad_signature", "stale_timestamp", "replayed_nonce"] {
        assert!(demo["summary"]["rejected"].get(code).is_none(), "{code}: {demo}");
    }

    // Python acting for another agent: refused.
    let out = python(&["--nats", &url, "--key", bob_key, "open_session", r#"{"agent_id": "a2"}"#]);
    assert_eq!(out.status.code(), Some(1));
    let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reply["rejected"]["code"], "forbidden", "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_captured_command_is_refused_ever_after_restarts_and_a_rebuilt_mirror() {
    let mut server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let mut node = serve(&server, &dir.path().join("node"), &config);
    let nats = async_nats::connect(server.url()).await.unwrap();

    // Unsigned, wrongly signed, stale and future-dated: refused.
    assert_eq!(code(send(&nats, &message(None, allocate("b0"), None)).await), "unauthenticated");
    let mut tampered = message(Some(&ops(now())), allocate("b0"), None);
    tampered.payload = Cmd::from(AllocateBudget { budget_id: "b0".into(), amount: 1_000_000 }).to_protobuf();
    assert_eq!(code(send(&nats, &tampered).await), "bad_signature");
    let at = |offset_seconds: i64| -> Arc<dyn Clock> {
        let now = now().now().as_nanos();
        let shifted = now.checked_add_signed(offset_seconds * 1_000_000_000).unwrap();
        Arc::new(ManualClock::new(Timestamp::from_nanos(shifted)))
    };
    assert_eq!(code(send(&nats, &message(Some(&ops(at(-3600))), allocate("b0"), None)).await), "stale_timestamp");
    assert_eq!(code(send(&nats, &message(Some(&ops(at(3600))), allocate("b0"), None)).await), "stale_timestamp");

    // Accepted once; sent again word for word: refused.
    let captured = message(Some(&ops(now())), allocate("b1"), None);
    let first = send(&nats, &captured).await.expect("accepted");
    let last_seq = first.last_seq;
    assert_eq!(code(send(&nats, &captured).await), "replayed_nonce");

    // serve and nats-server restart: still refused.
    node.terminate();
    server.restart();
    let node = serve(&server, &dir.path().join("node"), &config);
    let nats = async_nats::connect(server.url()).await.unwrap();
    assert_eq!(code(send(&nats, &captured).await), "replayed_nonce");

    // A node whose mirror is rebuilt from the stream alone (the first one
    // stopped): still refused. The nonce is in the log, not a node's memory.
    drop(node);
    let fresh = serve(&server, &dir.path().join("fresh"), &config);
    assert_eq!(code(send(&nats, &captured).await), "replayed_nonce");
    // Nothing was appended by any refusal: the next command follows the
    // captured one directly.
    let next = send(&nats, &message(Some(&ops(now())), allocate("b2"), None)).await.expect("accepted");
    assert_eq!(next.first_seq, last_seq + 1, "{next:?}");
    drop(fresh);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn copies_of_one_signed_command_racing_through_two_nodes_are_accepted_once() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let nodes = [serve(&server, &dir.path().join("one"), &config), serve(&server, &dir.path().join("two"), &config)];
    let nats = async_nats::connect(server.url()).await.unwrap();
    const COPIES: usize = 32;
    // Without an idempotency key (the nonce alone) and with one.
    for (round, key) in [None, Some("alloc-race")].into_iter().enumerate() {
        let captured = message(Some(&ops(now())), allocate(&format!("race-{round}")), key);
        let copies: Vec<_> = (0..COPIES)
            .map(|_| {
                let (nats, captured) = (nats.clone(), captured.clone());
                tokio::spawn(async move { send(&nats, &captured).await })
            })
            .collect();
        let (mut accepted, mut replayed) = (0, 0);
        for copy in copies {
            match copy.await.unwrap() {
                Ok(reply) => {
                    assert!(!reply.duplicate, "{reply:?}");
                    accepted += 1;
                }
                Err((code, message)) => {
                    assert_eq!(code, "replayed_nonce", "{message}");
                    replayed += 1;
                }
            }
        }
        assert_eq!((accepted, replayed), (1, COPIES - 1), "round {round}");
    }
    // Both nodes took part: each refused some copies.
    for node in &nodes {
        assert!(metric(node, "agentlog_commands_total{result=\"rejected\"}") > 0);
    }
}
