//! Policies bound to command types, through the real handler on a real
//! embedded log, with the two policies docs/SANDBOX.md shows (their files
//! in docs/policies/): a denial is `domain`/`policy_denied` with the
//! module's reason and appends nothing; a policy that traps denies with
//! kind `agent` (fail closed); a binding is an event, so replay knows what
//! was in force; unbinding lets the command through again.
use std::sync::Arc;

use agentlog_commands::command::{AllocateBudget, ClaimTask, CreateTask, DebitBudget, Heartbeat};
use agentlog_commands::module::{ModuleKind, RegisterModule};
use agentlog_commands::policy::BindPolicy;
use agentlog_commands::{Code, Command, Handler, Policy, Rejection, Request};
use agentlog_core::{Body, Kind, Log};
use agentlog_log::{EmbeddedLog, ManualClock};
use agentlog_sandbox::{Limits, Sandbox};

const DEBIT_LIMIT: &str = include_str!("../../docs/policies/debit-limit.wat");
const PROD_CLAIMS: &str = include_str!("../../docs/policies/prod-claims.wat");
use agentlog_sandbox::examples::SPIN;

struct World {
    handler: Arc<Handler<EmbeddedLog>>,
    log: Arc<EmbeddedLog>,
    _dir: tempfile::TempDir,
}

async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let log = agentlog_tests::open_log(dir.path());
    let clock = Arc::new(ManualClock::new(agentlog_tests::T0));
    let handler = agentlog_tests::handler(log.clone(), clock, 7, Policy::default());
    let sandbox = Arc::new(Sandbox::new(Limits::default()).unwrap());
    let handler = Arc::new(Arc::into_inner(handler).expect("only this test holds it").with_modules(sandbox));
    World { handler, log, _dir: dir }
}

async fn exec(
    world: &World,
    command: impl Into<Command>,
    actor: &str,
) -> Result<agentlog_commands::Accepted, Rejection> {
    world.handler.execute(Request::new(command.into(), actor)).await
}

async fn policy(world: &World, name: &str, kind: ModuleKind, wat: &str) -> String {
    let module = agentlog_sandbox::module_from_file(wat.as_bytes()).unwrap();
    let registered = exec(world, RegisterModule { name: name.into(), kind, module }, "admin").await.unwrap();
    registered.stream.strip_prefix("module/").unwrap().to_owned()
}

async fn bind(world: &World, command: &str, module_hash: &str) -> Result<agentlog_commands::Accepted, Rejection> {
    exec(world, BindPolicy { command: command.into(), module_hash: module_hash.into() }, "admin").await
}

fn debit(amount: u64, agent: &(String, String)) -> DebitBudget {
    DebitBudget {
        budget_id: "b1".into(),
        amount,
        agent_id: agent.0.clone(),
        session_id: agent.1.clone(),
        task_id: String::new(),
        reason: String::new(),
        failed: false,
    }
}

async fn head(world: &World) -> u64 {
    world.log.head().await.unwrap().last_seq
}

#[tokio::test]
async fn a_debit_limit_by_role_denies_with_its_reason_and_appends_nothing() {
    let world = world().await;
    let agent = agentlog_tests::agents_with_sessions(&world.handler, 1, &[]).await.remove(0);
    exec(&world, AllocateBudget { budget_id: "b1".into(), amount: 10_000 }, "admin").await.unwrap();
    let limit = policy(&world, "debit-limit", ModuleKind::Policy, DEBIT_LIMIT).await;
    let bound = bind(&world, "debit_budget", &limit).await.unwrap();
    let event = &world.log.read(bound.first_seq, 1).await.unwrap()[0];
    let Some(Body::SandboxPolicyBound(binding)) = &event.body else { panic!("{event:?}") };
    assert_eq!((binding.command.as_str(), binding.module_hash.as_str()), ("debit_budget", limit.as_str()));
    assert_eq!(bound.stream, "policy/debit_budget");

    let before = head(&world).await;
    let denied = exec(&world, debit(600, &agent), "agent-0").await.unwrap_err();
    assert_eq!((denied.kind, denied.code), (Kind::Domain, Code::PolicyDenied), "{denied}");
    assert!(denied.message.contains("a debit over 500 needs the finance role"), "{denied}");
    assert!(denied.message.contains("debit-limit"), "names the policy: {denied}");
    assert_eq!(head(&world).await, before, "a denial appends nothing");
    exec(&world, debit(600, &agent), "finance").await.expect("finance may");
    exec(&world, debit(500, &agent), "agent-0").await.expect("500 is within the limit");

    bind(&world, "debit_budget", "").await.expect("unbound");
    exec(&world, debit(600, &agent), "agent-0").await.expect("no policy any more");
    let again = bind(&world, "debit_budget", "").await.unwrap_err();
    assert_eq!(again.code, Code::AlreadyExists, "{again}");
}

#[tokio::test]
async fn a_claim_rule_on_required_capabilities_lets_only_release_agents_take_prod_work() {
    let world = world().await;
    let agents = agentlog_tests::agents_with_sessions(&world.handler, 1, &["prod"]).await;
    let release = ("release-1".to_owned(), {
        let register = agentlog_commands::command::RegisterAgent {
            agent_id: "release-1".into(),
            name: String::new(),
            capabilities: vec!["prod".into()],
        };
        exec(&world, register, "admin").await.unwrap();
        let open = agentlog_commands::command::OpenSession {
            agent_id: "release-1".into(),
            session_id: None,
            heartbeat_timeout_ms: 3_600_000,
        };
        exec(&world, open, "release-1").await.unwrap().session_id.unwrap()
    });
    for (task, caps) in [("deploy", vec!["prod".to_owned()]), ("docs", vec![])] {
        let create = CreateTask {
            task_id: task.into(),
            title: String::new(),
            priority: 0,
            required_capabilities: caps,
            dependencies: vec![],
            max_attempts: 3,
        };
        exec(&world, create, "admin").await.unwrap();
    }
    let rule = policy(&world, "prod-claims", ModuleKind::Policy, PROD_CLAIMS).await;
    bind(&world, "claim_task", &rule).await.unwrap();
    let claim = |task: &str, agent: &(String, String)| ClaimTask {
        task_id: task.into(),
        agent_id: agent.0.clone(),
        session_id: agent.1.clone(),
        lease_ms: 60_000,
    };
    let denied = exec(&world, claim("deploy", &agents[0]), "agent-0").await.unwrap_err();
    assert_eq!(denied.code, Code::PolicyDenied, "{denied}");
    assert!(denied.message.contains("claimed by a release- agent only"), "{denied}");
    exec(&world, claim("docs", &agents[0]), "agent-0").await.expect("no prod needed");
    exec(&world, claim("deploy", &release), "release-1").await.expect("a release agent may");
}

#[tokio::test]
async fn a_policy_that_traps_denies_and_only_a_registered_policy_is_bound() {
    let world = world().await;
    let agent = agentlog_tests::agents_with_sessions(&world.handler, 1, &[]).await.remove(0);
    let spin = policy(&world, "spin", ModuleKind::Policy, SPIN).await;
    let action = policy(&world, "an-action", ModuleKind::Action, &SPIN.replace("1024", "2048")).await;
    let wrong = bind(&world, "heartbeat", &action).await.unwrap_err();
    assert_eq!(wrong.code, Code::WrongModuleKind, "{wrong}");
    let unknown = bind(&world, "heartbeat", &"0".repeat(64)).await.unwrap_err();
    assert_eq!(unknown.code, Code::NotFound, "{unknown}");
    let itself = bind(&world, "bind_policy", &spin).await.unwrap_err();
    assert_eq!(itself.code, Code::InvalidCommand, "{itself}");

    bind(&world, "heartbeat", &spin).await.unwrap();
    let before = head(&world).await;
    let failed = exec(&world, Heartbeat { session_id: agent.1.clone() }, "agent-0").await.unwrap_err();
    assert_eq!((failed.kind, failed.code), (Kind::Agent, Code::PolicyFailed), "{failed}");
    assert!(failed.message.contains("out_of_fuel") && failed.message.contains("fail closed"), "{failed}");
    assert_eq!(head(&world).await, before, "nothing appended");

    // A handler without a sandbox cannot ask the policy: it refuses.
    let clock = Arc::new(ManualClock::new(agentlog_tests::T0));
    let bare = agentlog_tests::handler(world.log.clone(), clock, 8, Policy::default());
    let refused = bare.execute(Request::new(Heartbeat { session_id: agent.1.clone() }.into(), "a")).await.unwrap_err();
    assert_eq!(refused.code, Code::Unavailable, "{refused}");

    bind(&world, "heartbeat", "").await.unwrap();
    exec(&world, Heartbeat { session_id: agent.1 }, "agent-0").await.expect("unbound");
}
