//! Every valid command reads back as itself from the protobuf body the
//! client sends (`Command::to_protobuf`) and from its JSON body: the two
//! encodings carry the same commands, so the client's switch to protobuf
//! changes nothing a producer meant (issue 16).
use agentlog_commands::command::{
    AllocateBudget, BindPolicy, ClaimTask, CloseSession, CompleteTask, CreateTask, DebitBudget, ExpireLease,
    ExpireSession, FailTask, Heartbeat, OpenSession, RecordAction, RefundBudget, RegisterAgent, RegisterModule,
    RegisterPrincipal, ReleaseTask, RevokePrincipal, RunModule,
};
use agentlog_commands::module::{MAX_FUEL, ModuleKind};
use agentlog_commands::{ActionKind, ActionOutcome, Command, Role};
use base64::Engine as _;
use proptest::prelude::*;
use proptest::strategy::BoxedStrategy;

/// An id, as long as one may be.
fn id() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_:@-]{1,128}"
}

/// An id, or "" where the field is optional.
fn id_or_none() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), id()]
}

/// Free text: empty, or any characters.
fn text() -> impl Strategy<Value = String> {
    ".{0,200}"
}

fn ids() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(id(), 0..8)
}

fn positive() -> impl Strategy<Value = u64> {
    1..=u64::MAX
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

/// A command's task, agent and session, and its free text.
fn finish() -> impl Strategy<Value = (String, String, String, String)> {
    (id(), id(), id(), text())
}

/// Valid commands named `name`, every field free within validation.
/// Panics for a name it does not know, so the list must keep up with
/// `Command::NAMES`.
fn valid(name: &str) -> BoxedStrategy<Command> {
    match name {
        "open_session" => (id(), proptest::option::of(id()), positive())
            .prop_map(|(agent_id, session_id, heartbeat_timeout_ms)| {
                OpenSession { agent_id, session_id, heartbeat_timeout_ms }.into()
            })
            .boxed(),
        "heartbeat" => id().prop_map(|session_id| Heartbeat { session_id }.into()).boxed(),
        "close_session" => {
            (id(), text()).prop_map(|(session_id, reason)| CloseSession { session_id, reason }.into()).boxed()
        }
        "expire_session" => id().prop_map(|session_id| ExpireSession { session_id }.into()).boxed(),
        "register_agent" => (id(), text(), ids())
            .prop_map(|(agent_id, name, capabilities)| RegisterAgent { agent_id, name, capabilities }.into())
            .boxed(),
        "create_task" => (id(), text(), any::<i32>(), ids(), ids(), 1..=u32::MAX)
            .prop_map(|(task_id, title, priority, required_capabilities, dependencies, max_attempts)| {
                CreateTask { task_id, title, priority, required_capabilities, dependencies, max_attempts }.into()
            })
            .boxed(),
        "claim_task" => (id(), id(), id(), positive())
            .prop_map(|(task_id, agent_id, session_id, lease_ms)| {
                ClaimTask { task_id, agent_id, session_id, lease_ms }.into()
            })
            .boxed(),
        "release_task" => finish()
            .prop_map(|(task_id, agent_id, session_id, reason)| {
                ReleaseTask { task_id, agent_id, session_id, reason }.into()
            })
            .boxed(),
        "complete_task" => finish()
            .prop_map(|(task_id, agent_id, session_id, result)| {
                CompleteTask { task_id, agent_id, session_id, result }.into()
            })
            .boxed(),
        "fail_task" => finish()
            .prop_map(|(task_id, agent_id, session_id, reason)| {
                FailTask { task_id, agent_id, session_id, reason }.into()
            })
            .boxed(),
        "expire_lease" => id().prop_map(|task_id| ExpireLease { task_id }.into()).boxed(),
        "allocate_budget" => {
            (id(), positive()).prop_map(|(budget_id, amount)| AllocateBudget { budget_id, amount }.into()).boxed()
        }
        // Validation does not look at a debit's agent, session or task.
        "debit_budget" => (id(), positive(), text(), text(), text(), text(), any::<bool>())
            .prop_map(|(budget_id, amount, agent_id, session_id, task_id, reason, failed)| {
                DebitBudget { budget_id, amount, agent_id, session_id, task_id, reason, failed }.into()
            })
            .boxed(),
        "refund_budget" => (id(), positive(), text())
            .prop_map(|(budget_id, amount, reason)| RefundBudget { budget_id, amount, reason }.into())
            .boxed(),
        "record_action" => (
            id(),
            id(),
            text(),
            prop::sample::select(vec![ActionKind::Think, ActionKind::Act, ActionKind::Learn]),
            any::<u64>(),
            prop::sample::select(vec![ActionOutcome::Succeeded, ActionOutcome::Failed]),
            text(),
        )
            .prop_map(|(agent_id, session_id, task_id, kind, cost, outcome, detail)| {
                RecordAction { agent_id, session_id, task_id, kind, cost, outcome, detail }.into()
            })
            .boxed(),
        "register_module" => (
            id(),
            prop::sample::select(vec![ModuleKind::Action, ModuleKind::Policy]),
            proptest::collection::vec(any::<u8>(), 1..256),
        )
            .prop_map(|(name, kind, module)| RegisterModule { name, kind, module }.into())
            .boxed(),
        "run_module" => ("[0-9a-f]{64}", id(), id(), id_or_none(), bytes(256), 1..=MAX_FUEL, id_or_none())
            .prop_map(|(module_hash, agent_id, session_id, task_id, input, fuel, budget_id)| {
                RunModule { module_hash, agent_id, session_id, task_id, input, fuel, budget_id }.into()
            })
            .boxed(),
        "bind_policy" => (
            prop::sample::select(Command::NAMES.iter().filter(|n| **n != "bind_policy").copied().collect::<Vec<_>>()),
            id_or_none(),
        )
            .prop_map(|(command, module_hash)| BindPolicy { command: command.to_owned(), module_hash }.into())
            .boxed(),
        // An agent principal names its agent; any other names none.
        "register_principal" => {
            (id(), any::<[u8; 32]>(), proptest::collection::vec(prop::sample::select(Role::ALL.to_vec()), 1..6), id())
                .prop_map(|(principal_id, seed, roles, agent)| {
                    let key = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key();
                    let agent_id = if roles.contains(&Role::Agent) { agent } else { String::new() };
                    let public_key = base64::engine::general_purpose::STANDARD.encode(key.as_bytes());
                    RegisterPrincipal { principal_id, public_key, roles, agent_id }.into()
                })
                .boxed()
        }
        "revoke_principal" => {
            (id(), text()).prop_map(|(principal_id, reason)| RevokePrincipal { principal_id, reason }.into()).boxed()
        }
        other => panic!("no strategy makes valid {other} commands: add one"),
    }
}

fn any_valid() -> impl Strategy<Value = Command> {
    prop::sample::select(Command::NAMES).prop_flat_map(valid)
}

#[test]
fn every_command_has_valid_instances_here() {
    for name in Command::NAMES {
        let _ = valid(name);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4_000))]

    #[test]
    fn valid_commands_read_back_as_themselves_from_protobuf_and_json(command in any_valid()) {
        prop_assert_eq!(command.validate(), Ok(()), "the strategy makes valid commands only");
        let name = command.name();
        prop_assert_eq!(Command::from_protobuf(name, &command.to_protobuf()), Ok(command.clone()));
        prop_assert_eq!(Command::from_json(name, command.to_json()), Ok(command));
    }
}

/// The one valid command protobuf does not carry to the letter: a public
/// key with whitespace around its base64, which validation trims. It reads
/// back as the same key without it (what the node records either way).
#[test]
fn a_public_key_reads_back_from_protobuf_trimmed() {
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key();
    let key = base64::engine::general_purpose::STANDARD.encode(key.as_bytes());
    let register = |public_key: String| {
        Command::from(RegisterPrincipal {
            principal_id: "bob".into(),
            public_key,
            roles: vec![Role::Admin],
            agent_id: String::new(),
        })
    };
    let padded = register(format!(" {key}\n"));
    assert_eq!(padded.validate(), Ok(()));
    assert_eq!(Command::from_protobuf(padded.name(), &padded.to_protobuf()), Ok(register(key)));
}
