//! Hot aggregates in `agentlog bench --distributed`: one budget debited,
//! and one task claimed and released, by 1, 16 and 64 producers at once,
//! through one node and through two (two handlers, each on its own
//! mirror, sharing the command subject: NATS hands each request to one of
//! them); then two nodes on one budget for `--hot-seconds`. Each figure
//! is the accepted commands per second, the refusals by code (a hot
//! aggregate should see none but domain refusals) and the appends that
//! lost a race to the other node (`Handler::races_lost`). With signing on
//! (`run_signed`): the same budget and task through one node and through
//! two that require signatures, each producer an agent principal signing
//! its own commands.
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentlog_commands::command::{
    AllocateBudget, ClaimTask, CreateTask, DebitBudget, OpenSession, RegisterAgent, ReleaseTask,
};
use agentlog_commands::principal::RegisterPrincipal;
use agentlog_commands::wire::{self, Client};
use agentlog_commands::{Auth, Command as Cmd, Handler, Role, Signer};
use agentlog_log::jetstream::JetStreamLog;
use agentlog_log::{HybridClock, RandomIdGen};
use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The most producers a figure uses: each is an agent with a live session.
const MOST_PRODUCERS: u64 = 64;

/// One or two nodes' command services, each with its own handler on its
/// own log.
struct Nodes {
    handlers: Vec<Arc<Handler<JetStreamLog>>>,
    /// The nodes require signed commands.
    signed: bool,
    stop: watch::Sender<bool>,
    services: Vec<JoinHandle<()>>,
}

impl Nodes {
    async fn start(url: &str, logs: &[Arc<JetStreamLog>], auth: Option<Arc<Auth>>) -> anyhow::Result<Nodes> {
        let (stop, stopped) = watch::channel(false);
        let (mut handlers, mut services) = (Vec::new(), Vec::new());
        for log in logs {
            let mut handler = Handler::new(log.clone(), Arc::new(HybridClock::system()), Arc::new(RandomIdGen::new()));
            if let Some(auth) = &auth {
                handler = handler.with_auth(auth.clone());
            }
            let handler = Arc::new(handler);
            let service = wire::Service::bind(async_nats::connect(url).await?, handler.clone()).await?;
            services.push(tokio::spawn(service.run(stopped.clone())));
            handlers.push(handler);
        }
        Ok(Nodes { handlers, signed: auth.is_some(), stop, services })
    }

    fn races_lost(&self) -> u64 {
        self.handlers.iter().map(|h| h.races_lost()).sum()
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        for service in self.services {
            let _ = service.await;
        }
    }
}

/// What the producers hammer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Aggregate {
    /// Debits of 1 on one budget.
    Budget,
    /// Claims of one task, each accepted claim released at once.
    Task,
}

impl Aggregate {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Aggregate::Budget => "budget",
            Aggregate::Task => "task",
        }
    }
}

/// When the producers stop.
#[derive(Clone, Copy, Debug)]
enum Until {
    /// After this many commands in all.
    Commands(u64),
    /// After this long.
    Elapsed(Duration),
}

/// One figure.
pub(crate) struct Figure {
    pub aggregate: Aggregate,
    /// Every command signed by its producer's principal and verified.
    pub signed: bool,
    pub nodes: usize,
    pub producers: u64,
    pub seconds: f64,
    pub accepted_per_s: f64,
    /// Accepted and refused.
    pub decided_per_s: f64,
    /// Refusals by code.
    pub refused: BTreeMap<String, u64>,
    pub races_lost: u64,
}

impl Figure {
    pub(crate) fn refused_text(&self) -> String {
        if self.refused.is_empty() {
            return "none".into();
        }
        self.refused.iter().map(|(code, n)| format!("{code} {n}")).collect::<Vec<_>>().join(", ")
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "aggregate": self.aggregate.name(),
            "signed": self.signed,
            "nodes": self.nodes,
            "producers": self.producers,
            "seconds": (self.seconds * 10.0).round() / 10.0,
            "accepted_per_s": self.accepted_per_s.round(),
            "decided_per_s": self.decided_per_s.round(),
            "refused": self.refused,
            "races_lost": self.races_lost,
        })
    }
}

/// The agents `hot-0` … `hot-63`, registered once, each with a live session
/// (its id, by producer).
async fn agents(client: &Client) -> anyhow::Result<Vec<String>> {
    let mut sessions = Vec::new();
    for p in 0..MOST_PRODUCERS {
        let agent_id = format!("hot-{p}");
        let register = RegisterAgent { agent_id: agent_id.clone(), name: String::new(), capabilities: vec![] };
        client.execute(&register.into(), None).await?;
        let open = OpenSession { agent_id, session_id: None, heartbeat_timeout_ms: 3_600_000 };
        sessions.push(client.execute(&open.into(), None).await?.session_id.context("a session id")?);
    }
    Ok(sessions)
}

/// `producers` producers (agents `hot-0`…, producer `p` sending through
/// `clients[p]`) on one new aggregate of kind `aggregate` named `name`, set
/// up by `setup_client`, each sending its next command as soon as the last
/// is answered, until `until`.
#[allow(clippy::too_many_arguments)]
async fn hammer(
    setup_client: &Client,
    clients: &[Client],
    nodes: &Nodes,
    sessions: &[String],
    aggregate: Aggregate,
    name: &str,
    producers: u64,
    until: Until,
) -> anyhow::Result<Figure> {
    let setup = match aggregate {
        Aggregate::Budget => Cmd::AllocateBudget(AllocateBudget { budget_id: name.into(), amount: u64::MAX / 2 }),
        Aggregate::Task => Cmd::CreateTask(CreateTask {
            task_id: name.into(),
            title: String::new(),
            priority: 0,
            required_capabilities: vec![],
            dependencies: vec![],
            max_attempts: 3,
        }),
    };
    setup_client.execute(&setup, None).await?;
    let races_before = nodes.races_lost();
    let started = Instant::now();
    let producers_tasks: Vec<_> = (0..producers)
        .map(|p| {
            let client = clients[p as usize].clone();
            let (name, agent_id, session_id) = (name.to_owned(), format!("hot-{p}"), sessions[p as usize].clone());
            tokio::spawn(async move {
                let mut outcomes: Vec<Result<(), &'static str>> = Vec::new();
                let more = |sent: usize| match until {
                    Until::Commands(n) => (sent as u64) < n / producers,
                    Until::Elapsed(d) => started.elapsed() < d,
                };
                while more(outcomes.len()) {
                    let command = match aggregate {
                        Aggregate::Budget => Cmd::DebitBudget(DebitBudget {
                            budget_id: name.clone(),
                            amount: 1,
                            agent_id: agent_id.clone(),
                            session_id: session_id.clone(),
                            task_id: String::new(),
                            reason: String::new(),
                            failed: false,
                        }),
                        Aggregate::Task => Cmd::ClaimTask(ClaimTask {
                            task_id: name.clone(),
                            agent_id: agent_id.clone(),
                            session_id: session_id.clone(),
                            lease_ms: 60_000,
                        }),
                    };
                    let outcome = client.execute(&command, None).await.map(|_| ()).map_err(|r| r.code.as_str());
                    outcomes.push(outcome);
                    if aggregate == Aggregate::Task && outcome.is_ok() {
                        let release = Cmd::ReleaseTask(ReleaseTask {
                            task_id: name.clone(),
                            agent_id: agent_id.clone(),
                            session_id: session_id.clone(),
                            reason: String::new(),
                        });
                        outcomes.push(client.execute(&release, None).await.map(|_| ()).map_err(|r| r.code.as_str()));
                    }
                }
                outcomes
            })
        })
        .collect();
    let (mut accepted, mut refused) = (0u64, BTreeMap::new());
    for task in producers_tasks {
        for outcome in task.await? {
            match outcome {
                Ok(()) => accepted += 1,
                Err(code) => *refused.entry(code.to_owned()).or_insert(0) += 1,
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(Figure {
        aggregate,
        signed: nodes.signed,
        nodes: nodes.handlers.len(),
        producers,
        seconds,
        accepted_per_s: accepted as f64 / seconds,
        decided_per_s: (accepted + refused.values().sum::<u64>()) as f64 / seconds,
        refused,
        races_lost: nodes.races_lost() - races_before,
    })
}

/// One budget and one task with 1, 16 and 64 producers (`commands`
/// commands each) through the nodes on `logs` (one or two), then with
/// `long` both nodes on one budget with 64 producers for that long (the
/// last figure). Registers the producers' agents and opens their sessions
/// unless `sessions` has them already.
pub(crate) async fn run(
    url: &str,
    logs: &[Arc<JetStreamLog>],
    sessions: &mut Vec<String>,
    commands: u64,
    long: Option<Duration>,
) -> anyhow::Result<Vec<Figure>> {
    let client = Client::new(async_nats::connect(url).await?, "bench");
    let nodes = Nodes::start(url, logs, None).await?;
    if sessions.is_empty() {
        *sessions = agents(&client).await?;
    }
    let clients = vec![client.clone(); MOST_PRODUCERS as usize];
    let mut figures = Vec::new();
    for aggregate in [Aggregate::Budget, Aggregate::Task] {
        for producers in [1, 16, MOST_PRODUCERS] {
            let name = format!("hot-{}-{}-{producers}", aggregate.name(), logs.len());
            let until = Until::Commands(commands);
            figures.push(hammer(&client, &clients, &nodes, sessions, aggregate, &name, producers, until).await?);
        }
    }
    if let Some(long) = long {
        let name = format!("hot-budget-{}-long", logs.len());
        let until = Until::Elapsed(long);
        figures
            .push(hammer(&client, &clients, &nodes, sessions, Aggregate::Budget, &name, MOST_PRODUCERS, until).await?);
    }
    nodes.stop().await;
    Ok(figures)
}

/// The signed side of the figures: the bootstrap admin's client, an
/// orchestrator principal's (who creates the hot task) and, for each
/// producer's agent (`hot-0`…, registered by [`run`]), an agent principal
/// signing with its own key. Registered once, through a node that
/// requires signatures with `auth` (whose bootstrap admin is `admin`).
pub(crate) struct SignedProducers {
    auth: Arc<Auth>,
    admin: Client,
    orchestrator: Client,
    agents: Vec<Client>,
}

impl SignedProducers {
    pub(crate) async fn register(
        url: &str,
        log: &Arc<JetStreamLog>,
        auth: Auth,
        admin: Signer,
    ) -> anyhow::Result<SignedProducers> {
        let auth = Arc::new(auth);
        let nats = async_nats::connect(url).await?;
        let nodes = Nodes::start(url, std::slice::from_ref(log), Some(auth.clone())).await?;
        let admin = Client::new(nats.clone(), "bench").with_signer(admin);
        let orchestrator =
            register_principal(&admin, &nats, "hot-orchestrator", [0x6f; 32], Role::Orchestrator, "").await?;
        let mut agents = Vec::new();
        for p in 0..MOST_PRODUCERS {
            let id = format!("hot-{p}");
            let mut seed = [0x5e; 32];
            seed[0] = u8::try_from(p)?;
            agents.push(register_principal(&admin, &nats, &id, seed, Role::Agent, &id).await?);
        }
        nodes.stop().await;
        Ok(SignedProducers { auth, admin, orchestrator, agents })
    }
}

/// Registers principal `id` (its key from `seed`, one `role`, acting for
/// `agent_id` if an agent) through `admin`; a client that signs as it.
pub(crate) async fn register_principal(
    admin: &Client,
    nats: &async_nats::Client,
    id: &str,
    seed: [u8; 32],
    role: Role,
    agent_id: &str,
) -> anyhow::Result<Client> {
    let signer = Signer::new(id, seed, Arc::new(HybridClock::system()), Arc::new(RandomIdGen::new()));
    let register = RegisterPrincipal {
        principal_id: id.to_owned(),
        public_key: base64::Engine::encode(&base64::engine::general_purpose::STANDARD, signer.public_key()),
        roles: vec![role],
        agent_id: agent_id.to_owned(),
    };
    admin.execute(&register.into(), None).await?;
    Ok(Client::new(nats.clone(), "bench").with_signer(signer))
}

/// One budget and one task with 1, 16 and 64 producers (`commands`
/// commands each) through the nodes on `logs` (one or two) that require
/// signed commands: each producer signs its own debits, claims and
/// releases as its agent's principal (`signed`, whose `sessions` are
/// [`run`]'s); the nodes verify each and record its nonce.
pub(crate) async fn run_signed(
    url: &str,
    logs: &[Arc<JetStreamLog>],
    signed: &SignedProducers,
    sessions: &[String],
    commands: u64,
) -> anyhow::Result<Vec<Figure>> {
    let nodes = Nodes::start(url, logs, Some(signed.auth.clone())).await?;
    let mut figures = Vec::new();
    for aggregate in [Aggregate::Budget, Aggregate::Task] {
        let setup = if aggregate == Aggregate::Budget { &signed.admin } else { &signed.orchestrator };
        for producers in [1, 16, MOST_PRODUCERS] {
            let name = format!("hot-{}-{}-signed-{producers}", aggregate.name(), logs.len());
            let until = Until::Commands(commands);
            figures.push(hammer(setup, &signed.agents, &nodes, sessions, aggregate, &name, producers, until).await?);
        }
    }
    nodes.stop().await;
    Ok(figures)
}
