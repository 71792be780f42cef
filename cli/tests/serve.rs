//! Two `agentlog serve` instances on one JetStream stream, as operators run
//! them: commands from several producers race through the queue group and
//! stay exact; both instances serve; SIGTERM stops each gracefully; both
//! mirrors then verify and agree.
mod common;

use std::process::Command;
use std::time::Duration;

use agentlog_commands::command::{AllocateBudget, ClaimTask, CreateTask, DebitBudget, OpenSession, RegisterAgent};
use agentlog_commands::wire::Client;
use agentlog_commands::{Code, Command as Cmd};
use agentlog_tests::nats::NatsServer;
use common::{metric, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_claims_and_debits_through_two_serve_instances_are_exact() {
    let server = NatsServer::start();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut nodes = [start(&server, dirs[0].path()), start(&server, dirs[1].path())];
    let client = Client::new(async_nats::connect(server.url()).await.unwrap(), "test");
    let send = |command: Cmd| {
        let client = client.clone();
        async move { client.execute(&command, None).await }
    };

    let mut claimers = Vec::new();
    for i in 0..8 {
        let agent_id = format!("agent-{i}");
        send(Cmd::RegisterAgent(RegisterAgent {
            agent_id: agent_id.clone(),
            name: String::new(),
            capabilities: vec!["code".into()],
        }))
        .await
        .unwrap();
        let open = Cmd::OpenSession(OpenSession {
            agent_id: agent_id.clone(),
            session_id: None,
            heartbeat_timeout_ms: 3_600_000,
        });
        claimers.push((agent_id, send(open).await.unwrap().session_id.unwrap()));
    }
    for round in 0..40 {
        let task_id = format!("task-{round}");
        let create = Cmd::CreateTask(CreateTask {
            task_id: task_id.clone(),
            title: String::new(),
            priority: 0,
            required_capabilities: vec!["code".into()],
            dependencies: vec![],
            max_attempts: 3,
        });
        send(create).await.unwrap();
        let racers: Vec<_> = claimers
            .iter()
            .map(|(agent_id, session_id)| {
                let claim = Cmd::ClaimTask(ClaimTask {
                    task_id: task_id.clone(),
                    agent_id: agent_id.clone(),
                    session_id: session_id.clone(),
                    lease_ms: 60_000,
                });
                tokio::spawn(send(claim))
            })
            .collect();
        let mut won = 0;
        for racer in racers {
            match racer.await.unwrap() {
                Ok(_) => won += 1,
                Err(r) => assert_eq!(r.code, Code::AlreadyClaimed, "round {round}: {r}"),
            }
        }
        assert_eq!(won, 1, "round {round}: one claim through two instances");
    }
    for round in 0..10u64 {
        let budget_id = format!("budget-{round}");
        send(Cmd::AllocateBudget(AllocateBudget { budget_id: budget_id.clone(), amount: 500 })).await.unwrap();
        let debits: Vec<_> = (0..16u64)
            .map(|i| {
                let debit = Cmd::DebitBudget(DebitBudget {
                    budget_id: budget_id.clone(),
                    amount: 10 + (i * 7 + round) % 60,
                    agent_id: String::new(),
                    session_id: String::new(),
                    task_id: String::new(),
                    reason: String::new(),
                    failed: false,
                });
                (debit_amount(&debit), tokio::spawn(send(debit)))
            })
            .collect();
        let mut spent = 0;
        for (amount, debit) in debits {
            match debit.await.unwrap() {
                Ok(_) => spent += amount,
                Err(r) => assert!(matches!(r.code, Code::InsufficientBudget | Code::CircuitOpen), "round {round}: {r}"),
            }
        }
        assert!(spent <= 500, "round {round}: spent {spent} of 500");
        // What the log says the balance is equals what was accepted.
        let probe = Cmd::DebitBudget(DebitBudget {
            budget_id: budget_id.clone(),
            amount: 1_000_000,
            agent_id: String::new(),
            session_id: String::new(),
            task_id: String::new(),
            reason: String::new(),
            failed: false,
        });
        let refused = send(probe).await.unwrap_err();
        if refused.code == Code::InsufficientBudget {
            assert!(
                refused.message.contains(&format!("has {} left", 500 - spent)),
                "round {round}: {}",
                refused.message
            );
        }
    }

    let accepted = "agentlog_commands_total{result=\"accepted\"}";
    let served = [metric(&nodes[0], accepted), metric(&nodes[1], accepted)];
    assert!(served.iter().all(|n| *n > 0), "both instances served commands: {served:?}");
    // `tail --nats` reads the stream itself, and stops at its end.
    let tail = |args: &[&str]| tail_json(&server.url(), args);
    let first = tail(&["--limit", "5"]);
    assert_eq!(first.iter().map(|e| e["seq"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    let agent = tail(&["--stream", "agent/agent-0"]);
    assert_eq!(agent[0]["type"], "agent_registered");
    assert!(agent.iter().all(|e| e["stream"] == "agent/agent-0"));

    for node in &mut nodes {
        node.terminate();
    }
    // Each mirror follows the stream on its own and may trail it when its
    // node stops: take each up to the stream's end, waiting on the mirror's
    // own durable head (bounded, failing loudly), then compare.
    let stream = agentlog_log::jetstream::StreamReader::open(&server.url(), "AGENTLOG").await.unwrap();
    let last = stream.last_seq(None).await.unwrap();
    for dir in &dirs {
        let mirror = agentlog_log::jetstream::JetStreamLog::open(agentlog_log::jetstream::Options::new(
            server.url(),
            dir.path(),
        ))
        .await
        .unwrap();
        let head = mirror.caught_up(last).await.expect("the mirror reaches the stream's end");
        assert_eq!(head.last_seq, last);
        mirror.close().await;
    }
    let mut heads = Vec::new();
    for dir in &dirs {
        let out = Command::new(env!("CARGO_BIN_EXE_agentlog"))
            .args(["verify", "--json", "--data"])
            .arg(dir.path())
            .output()
            .unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["ok"], true, "{report}");
        heads.push(report["head_hash"].clone());
    }
    assert_eq!(heads[0], heads[1], "both mirrors hold the same log");
}

/// The stream's events, read by `agentlog tail --json --nats` (it stops at
/// the stream's end).
fn tail_json(url: &str, args: &[&str]) -> Vec<serde_json::Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_agentlog"))
        .args(["tail", "--json", "--nats", url])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn debit_amount(command: &Cmd) -> u64 {
    match command {
        Cmd::DebitBudget(DebitBudget { amount, .. }) => *amount,
        _ => 0,
    }
}

/// `agentlog demo --nats` sends the simulated workload through a running
/// service: every command is answered, the service's counters match the
/// demo's, and the node's mirror holds the stream and verifies.
#[test]
fn the_demo_runs_through_a_service_over_nats() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut node = start(&server, dir.path());
    let out = Command::new(env!("CARGO_BIN_EXE_agentlog"))
        .args(["demo", "--json", "--days", "1", "--tasks", "60", "--agents", "5", "--nats", &server.url()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let summary = &report["summary"];
    let rejected: u64 = summary["rejected"].as_object().unwrap().values().map(|n| n.as_u64().unwrap()).sum();
    assert_eq!(summary["tasks_created"], 60, "{summary}");
    assert!(summary["tasks_completed"].as_u64().unwrap() > 0, "{summary}");
    assert_eq!(summary["sessions_abandoned"], 0, "no agent vanishes on the service's clock");
    assert_eq!(
        summary["accepted"].as_u64().unwrap() + rejected,
        summary["commands"].as_u64().unwrap(),
        "every command was answered"
    );
    let accepted = "agentlog_commands_total{result=\"accepted\"}";
    assert_eq!(metric(&node, accepted), summary["accepted"].as_u64().unwrap());
    // One node: its own commands never race each other.
    assert_eq!(metric(&node, "agentlog_commands_races_lost_total "), 0);
    assert!(metric(&node, "agentlog_commands_group_size_count ") > 0);
    let last_seq = report["last_seq"].as_u64().unwrap();
    assert!(last_seq >= summary["accepted"].as_u64().unwrap(), "{report}");
    // Queries over NATS, after the view has the demo's last event
    // (read-your-writes, the service's own wait), from the node's views.
    let query = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_agentlog"))
            .args(["query", "--json", "--nats", &server.url(), "--wait-for", &last_seq.to_string()])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let tasks = query(&["tasks"]);
    assert!(tasks["seq"].as_u64().unwrap() >= last_seq, "{tasks}");
    // The views reflect the last seq, so the mirror under them has it.
    assert_eq!(metric(&node, "agentlog_mirror_seq "), last_seq);
    let completed = tasks["result"].as_array().unwrap().iter().filter(|t| t["status"] == "completed").count();
    assert_eq!(completed as u64, summary["tasks_completed"].as_u64().unwrap());
    assert_eq!(query(&["violations"])["result"], serde_json::json!([]));
    assert!(!query(&["agents"])["result"].as_array().unwrap().is_empty());
    let beyond = Command::new(env!("CARGO_BIN_EXE_agentlog"))
        .args(["query", "tasks", "--nats", &server.url(), "--timeout-ms", "200", "--wait-for"])
        .arg((last_seq + 1000).to_string())
        .output()
        .unwrap();
    assert!(!beyond.status.success(), "a sequence the view never reaches times out");
    assert!(String::from_utf8_lossy(&beyond.stderr).contains("did not reach seq"), "{beyond:?}");

    node.terminate();
    // The worker saved its views on the way out; they equal a rebuild.
    let verified = Command::new(env!("CARGO_BIN_EXE_agentlog"))
        .args(["projections", "verify", "--json", "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    let verified: serde_json::Value = serde_json::from_slice(&verified.stdout).unwrap();
    assert_eq!(verified["ok"], true, "{verified}");
    assert!(verified["projections"].as_array().unwrap().iter().all(|p| p["position"] == last_seq), "{verified}");
    let verify = Command::new(env!("CARGO_BIN_EXE_agentlog"))
        .args(["verify", "--json", "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    let verified: serde_json::Value = serde_json::from_slice(&verify.stdout).unwrap();
    assert_eq!(verified["ok"], true, "{verified}");
    assert_eq!(verified["last_seq"], last_seq, "{verified}");
}

/// Leases run out inside `serve`: an agent whose session stops
/// heart-beating loses its claim when the ticker (on both instances, racing)
/// expires the session and then the lease; another agent then claims the
/// task. Each expiry is in the stream once, sent by the ticker.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_silent_session_loses_its_claim_to_the_ticker_of_serve() {
    common::within(Duration::from_secs(120), "the ticker test", async {
        let server = NatsServer::start();
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let mut nodes = [start(&server, dirs[0].path()), start(&server, dirs[1].path())];
        let client = Client::new(async_nats::connect(server.url()).await.unwrap(), "test");
        for agent_id in ["a", "b"] {
            let register = Cmd::RegisterAgent(RegisterAgent {
                agent_id: agent_id.into(),
                name: String::new(),
                capabilities: vec![],
            });
            client.execute(&register, None).await.unwrap();
        }
        let create = Cmd::CreateTask(CreateTask {
            task_id: "t".into(),
            title: String::new(),
            priority: 0,
            required_capabilities: vec![],
            dependencies: vec![],
            max_attempts: 3,
        });
        client.execute(&create, None).await.unwrap();
        let open = |agent: &str, timeout_ms| {
            Cmd::OpenSession(OpenSession {
                agent_id: agent.into(),
                session_id: Some(format!("s-{agent}")),
                heartbeat_timeout_ms: timeout_ms,
            })
        };
        client.execute(&open("a", 1_000), None).await.unwrap();
        client.execute(&open("b", 3_600_000), None).await.unwrap();
        let claim = |agent: &str| {
            Cmd::ClaimTask(ClaimTask {
                task_id: "t".into(),
                agent_id: agent.into(),
                session_id: format!("s-{agent}"),
                lease_ms: 3_600_000,
            })
        };
        client.execute(&claim("a"), None).await.unwrap();
        assert_eq!(client.execute(&claim("b"), None).await.unwrap_err().code, Code::AlreadyClaimed);

        // a never heart-beats: within its 1 s deadline and a tick or two,
        // the hour-long lease is gone and b gets the task.
        let mut tries = 0;
        while let Err(refused) = client.execute(&claim("b"), None).await {
            assert_eq!(refused.code, Code::AlreadyClaimed, "{refused}");
            tries += 1;
            assert!(tries < 150, "the ticker never released a's claim");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let events = tail_json(&server.url(), &[]);
        for node in &mut nodes {
            node.terminate();
        }
        let of = |kind: &str| events.iter().filter(|e| e["type"] == kind).collect::<Vec<_>>();
        assert_eq!(of("session_expired").len(), 1, "{events:?}");
        assert_eq!(of("task_lease_expired").len(), 1, "{events:?}");
        assert_eq!(of("session_expired")[0]["actor"], "ticker");
        assert_eq!(of("task_lease_expired")[0]["actor"], "ticker");
        let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
        let tail = &types[types.len() - 3..];
        assert_eq!(tail, ["session_expired", "task_lease_expired", "task_claimed"]);
    })
    .await;
}
