//! The command handler: loads the aggregate's state, decides, and appends
//! with the version it decided on. If another writer appended first, the
//! append conflicts and the handler reloads and decides again (bounded).
//! So "claim if unclaimed" and "debit if covered" are exact without locks.
//! Commands this node runs at once on one aggregate queue for its turn
//! (`turns`); the turn holder decides them in order and appends them
//! together (`group`), so they never race each other.
//!
//! State is cached per stream and caught up from the log before every
//! decision, so the cache is never trusted beyond the version it knows. The
//! catch-up is skipped when the log knows the stream's version without a
//! read (`Log::known_version`, the embedded log's writer) and the cache is
//! at it; so is the first decision's local read when this node's copy
//! holds nothing past the cache (`Log::local_version`, a mirror's
//! follower). The first decision uses what this node already has of the
//! aggregate; the append's expected version makes that safe, and a refusal
//! is only given on state caught up with the whole log. An append that lost
//! a race to another writer is decided again at once, then after jittered,
//! bounded waits (`backoff`). A decision's time is
//! never before the time of its aggregate's last event: on a stream, time
//! does not go backwards, whichever node's clock wrote the event before.
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentlog_core::ids::{CorrelationId, SagaId};
use agentlog_core::schema::SCHEMA_VERSION;
use agentlog_core::{Appended, Body, Clock, Envelope, EventId, IdGen, Log, SessionId, Timestamp};
use futures_util::future::{try_join_all, try_join3};
use serde::{Deserialize, Serialize};

use crate::aggregate::{self, Agent, Budget, Decision, Module, Policy, Session, State, Task};
use crate::auth::roles::{self, Rule};
use crate::auth::verification::{self, Verification};
use crate::auth::{Auth, Credential, Principal};
use crate::command::{
    AllocateBudget, ClaimTask, CloseSession, Command, CompleteTask, CreateTask, DebitBudget, ExpireLease,
    ExpireSession, FailTask, Heartbeat, OpenSession, RecordAction, RefundBudget, RegisterAgent, RegisterModule,
    ReleaseTask,
};
use crate::module::{ModuleHost, RunOutcome, RunResult};
use crate::rejection::{Code, Rejection, Result};
use crate::turns::{Turns, Waited};

mod group;
use group::{Member, Outcome};

/// How many times a decision is retried after losing a race.
pub const DEFAULT_MAX_RETRIES: u32 = 32;
/// The bound of the wait before the second retry after lost races; it
/// doubles with each retry after that, up to [`BACKOFF_MAX_US`].
const BACKOFF_FIRST_US: u64 = 100;
/// The largest bound of a wait between retries, a few appends' round trips
/// (the other writer's append is what the wait lets through): 32 retries
/// wait about 60 ms in all at worst, well inside a producer's timeout.
const BACKOFF_MAX_US: u64 = 2_000;
/// Commands per append a turn holder made (1: a command alone), a summary.
pub const METRIC_GROUP_COMMANDS: &str = "agentlog_commands_group_size";
/// Appends that lost a race to another writer (another node, another
/// process) and were decided again, a counter.
pub const METRIC_RACES_LOST: &str = "agentlog_commands_races_lost_total";
/// Most commands one turn holder decides and appends together.
const MAX_GROUP: usize = 128;
/// Streams whose state the handler keeps; beyond it the cache starts over.
const CACHE_ENTRIES: usize = 100_000;
/// Events read per page while catching a state up.
const PAGE: usize = 1024;

/// A command with who sent it and how it traces.
#[derive(Clone, Debug)]
pub struct Request {
    pub command: Command,
    pub actor: String,
    /// Repeating a key returns the first result and appends nothing.
    pub idempotency_key: Option<String>,
    pub correlation_id: Option<CorrelationId>,
    pub causation_id: Option<EventId>,
    pub saga_id: Option<SagaId>,
    /// How the sender is known: trusted in process by default; a signed
    /// request from the wire is verified, and a principal's command is put
    /// to the role table, before anything else.
    pub credential: Credential,
}

impl Request {
    pub fn new(command: Command, actor: impl Into<String>) -> Self {
        Request {
            command,
            actor: actor.into(),
            idempotency_key: None,
            correlation_id: None,
            causation_id: None,
            saga_id: None,
            credential: Credential::Trusted,
        }
    }

    /// The same request, sent as `principal` (its roles checked).
    pub fn as_principal(mut self, principal: Principal) -> Self {
        self.credential = Credential::Principal(principal);
        self
    }

    pub fn with_idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }
}

/// What an accepted command appended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    pub command: String,
    pub stream: String,
    pub first_seq: u64,
    pub last_seq: u64,
    pub stream_version: u64,
    /// The idempotency key had been used: this is the first result again.
    pub duplicate: bool,
    /// The types of the events appended, in order.
    pub events: Vec<String>,
    /// The session an `open_session` opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// What a `run_module` gave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<RunResult>,
}

/// A request whose sender is established: its nonce (a signed request's,
/// for its first event to carry) and its signature, not yet checked.
struct Authenticated {
    request: Request,
    nonce: Option<String>,
    signature: Option<Verification>,
}

/// What a command needs done before it is decided, once whatever the
/// retries: a `run_module`'s run (deterministic, so deciding again after a
/// conflict records the same outcome).
struct Prepared {
    run: RunOutcome,
    engine_hash: String,
}

/// An aggregate as far as the handler has it: its version, its state, and
/// the time of its last event (a decision on it never takes an earlier
/// time, whatever this node's clock says).
#[derive(Clone, Debug)]
struct Loaded {
    version: u64,
    state: State,
    last_ts: u64,
}

pub struct Handler<L: Log> {
    log: Arc<L>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdGen>,
    policy: Policy,
    max_retries: u32,
    cache: Mutex<HashMap<String, Loaded>>,
    /// The WASM sandbox, when the node wires one in.
    modules: Option<Arc<dyn ModuleHost>>,
    /// Signing required of requests from the wire; `None`: open mode.
    auth: Option<Arc<Auth>>,
    /// Whose turn it is on each aggregate with commands in flight.
    turns: Turns<Arc<Member>, Outcome>,
    /// Appends that lost a race to another writer (see [`Handler::races_lost`]).
    races_lost: AtomicU64,
    /// Streams another writer (another node) raced this one on lately,
    /// each with how many more commands go one at a time (`group`).
    contended: Mutex<HashMap<String, u32>>,
}

impl<L: Log> std::fmt::Debug for Handler<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handler").field("policy", &self.policy).finish_non_exhaustive()
    }
}

impl<L: Log> Handler<L> {
    pub fn new(log: Arc<L>, clock: Arc<dyn Clock>, ids: Arc<dyn IdGen>) -> Self {
        Handler {
            log,
            clock,
            ids,
            policy: Policy::default(),
            max_retries: DEFAULT_MAX_RETRIES,
            cache: Mutex::new(HashMap::new()),
            modules: None,
            auth: None,
            turns: Turns::default(),
            races_lost: AtomicU64::new(0),
            contended: Mutex::new(HashMap::new()),
        }
    }

    /// Appends this handler made that lost a race to another writer (the
    /// aggregate had moved on: another node, or another process on the same
    /// log) and were decided again. This node's own commands take turns, so
    /// they never count here.
    pub fn races_lost(&self) -> u64 {
        self.races_lost.load(Ordering::Relaxed)
    }

    /// Commands waiting for `stream`'s turn on this node: the next turn
    /// holder decides them together.
    pub fn waiting(&self, stream: &str) -> usize {
        self.turns.waiting(stream)
    }

    /// Requires requests from the wire to be signed by a known principal
    /// (serve's `auth.mode = "signed"`); without it, the node is open:
    /// requests act as the actor they name.
    pub fn with_auth(mut self, auth: Arc<Auth>) -> Self {
        self.auth = Some(auth);
        self
    }

    /// Runs `register_module` and `run_module`, and asks bound policies,
    /// on this sandbox; without one they are refused as `unavailable`.
    pub fn with_modules(mut self, modules: Arc<dyn ModuleHost>) -> Self {
        self.modules = Some(modules);
        self
    }

    pub fn with_policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    pub fn log(&self) -> &Arc<L> {
        &self.log
    }

    /// Runs one command to its end: accepted, or rejected with a reason.
    pub async fn execute(&self, request: Request) -> Result<Accepted> {
        request.command.validate()?;
        let Authenticated { request, nonce, signature } = self.authenticate(request).await?;
        if let Some(key) = &request.idempotency_key
            && let Some(first) =
                self.log.idempotent_result(key).await.map_err(|e| verification::before(signature.as_ref(), e.into()))?
        {
            verification::check(signature.as_ref())?;
            return self.first_result(&request, nonce.as_deref(), first).await;
        }
        let mut command = request.command.clone();
        if let Command::OpenSession(OpenSession { session_id: id @ None, .. }) = &mut command {
            *id = Some(SessionId::new(self.clock.now(), &*self.ids).to_string());
        }
        let stream = command.stream();
        // Checking or running a module is work only a genuine request gets.
        // (Boxed, as the rare and large future it is.)
        let prepared = if matches!(command, Command::RegisterModule(_) | Command::RunModule(_)) {
            verification::check(signature.as_ref())?;
            Box::pin(self.prepare(&command)).await?
        } else {
            None
        };
        // Commands on this aggregate that this node runs at once queue for
        // its turn; whoever has it decides those waiting in order, each on
        // what the one before left, and appends them together (`group`).
        // Released before any saga step.
        let member = Arc::new(Member { request, command, stream, nonce, signature, prepared });
        let waited = self.turns.wait(&member.stream, member.clone());
        let waited = match &member.signature {
            None => waited.await,
            // Queued behind another's turn: the signature is checked
            // meanwhile, here, not later on the turn holder's task, which
            // would check its whole group's one after another. A turn taken
            // at once leaves the check for the decision's reads to hide.
            Some(signature) => signature.if_waiting(waited).await,
        };
        let outcome = match waited {
            Waited::Decided(outcome) => outcome,
            Waited::Lead(mut turn) => {
                let group = turn.group(MAX_GROUP);
                // Boxed: the largest future here, and only a turn's holder
                // runs it.
                Box::pin(self.decide_group(&member.stream, group)).await;
                turn.own_outcome()
            }
        };
        match outcome {
            Outcome::Done(result) => result,
            Outcome::Seen(first) => self.first_result(&member.request, member.nonce.as_deref(), first).await,
            Outcome::Appended { result, events, first_seq } => {
                self.charge_run(&member.request, &events, first_seq, result).await
            }
        }
    }

    /// The first result of the request's idempotency key; unless the
    /// request's own nonce was recorded meanwhile (a copy of it raced this
    /// one and won): then this is a replay of a captured request.
    async fn first_result(&self, request: &Request, nonce: Option<&str>, first: Appended) -> Result<Accepted> {
        if let Some(nonce) = nonce {
            self.refuse_seen_nonce(nonce).await?;
        }
        self.replayed(request, first).await
    }

    /// The result of an idempotency key used before, rebuilt from the log:
    /// what was accepted then, or the refusal that was recorded then.
    async fn replayed(&self, request: &Request, first: Appended) -> Result<Accepted> {
        let command = &request.command;
        let count = usize::try_from(first.last_seq - first.first_seq + 1).unwrap_or(usize::MAX);
        let events = self.log.read(first.first_seq, count).await?;
        let result = self.replayed_result(command, &first, &events);
        // A run's charge is settled by its first attempt, or by this one
        // if that attempt stopped before it (the charge's own key makes it
        // happen once).
        self.charge_run(request, &events, first.first_seq, result).await
    }

    fn replayed_result(&self, command: &Command, first: &Appended, events: &[Envelope]) -> Result<Accepted> {
        if let Some(trapped) = events.iter().find_map(|e| match &e.body {
            Some(Body::SandboxRunTrapped(trapped)) => Some(trapped),
            _ => None,
        }) {
            let rejection =
                crate::module::trapped(&trapped.module_hash, &trapped.trap, trapped.fuel_used, trapped.fuel_limit);
            return Err(Rejection::new(
                rejection.code,
                format!("{} (the first result of this idempotency key, seq {})", rejection.message, first.first_seq),
            ));
        }
        if let Some(refused) = events.iter().find_map(|e| match &e.body {
            Some(Body::BudgetDebitRefused(refused)) => Some(refused),
            _ => None,
        }) {
            return Err(Rejection::new(
                Code::InsufficientBudget,
                format!(
                    "budget {} had {} left, the debit asked {} (the first result of this idempotency key, seq {})",
                    refused.budget_id, refused.balance, refused.amount, first.first_seq
                ),
            ));
        }
        let session_id = events.iter().find_map(|e| match &e.body {
            Some(Body::SessionOpened(opened)) => Some(opened.session_id.clone()),
            _ => None,
        });
        Ok(Accepted {
            command: command.name().to_owned(),
            stream: events.first().map(|e| e.stream.clone()).unwrap_or_default(),
            first_seq: first.first_seq,
            last_seq: first.last_seq,
            stream_version: first.stream_version,
            duplicate: true,
            events: events.iter().filter_map(|e| e.body.as_ref().map(|b| b.type_name().to_owned())).collect(),
            session_id,
            run: run_result(events),
        })
    }

    /// The second step of a run charged to a budget (a saga): a debit of
    /// the fuel it used, keyed by the run's event, so the run's first
    /// attempt or any retry of it (same idempotency key) makes the debit
    /// happen exactly once. A refused debit leaves the run recorded and
    /// says so; the refusal is recorded as every refused debit is.
    async fn charge_run(
        &self,
        request: &Request,
        events: &[Envelope],
        first_seq: u64,
        result: Result<Accepted>,
    ) -> Result<Accepted> {
        let Command::RunModule(run) = &request.command else { return result };
        if run.budget_id.is_empty() {
            return result;
        }
        let Some((at, event, fuel_used, trapped)) = events.iter().enumerate().find_map(|(i, e)| match &e.body {
            Some(Body::SandboxRunCompleted(r)) => Some((i, e, r.fuel_used, false)),
            Some(Body::SandboxRunTrapped(r)) => Some((i, e, r.fuel_used, true)),
            _ => None,
        }) else {
            return result;
        };
        let amount = crate::module::charge_for(fuel_used);
        if amount == 0 {
            return result;
        }
        let seq = first_seq + at as u64;
        let debit = DebitBudget {
            budget_id: run.budget_id.clone(),
            amount,
            agent_id: run.agent_id.clone(),
            session_id: run.session_id.clone(),
            task_id: run.task_id.clone(),
            reason: format!("sandbox run of module {} (seq {seq})", run.module_hash),
            failed: trapped,
        };
        let event_id = EventId::from_slice(&event.event_id);
        let charge = Request {
            command: debit.into(),
            actor: request.actor.clone(),
            idempotency_key: Some(format!("sandbox-charge:{}", event_id.map(|id| id.to_string()).unwrap_or_default())),
            correlation_id: CorrelationId::from_slice(&event.correlation_id),
            causation_id: event_id,
            saga_id: None,
            credential: request.credential.clone(),
        };
        match Box::pin(self.execute(charge)).await {
            Ok(charged) => {
                let charge = crate::module::Charge { budget_id: run.budget_id.clone(), amount, seq: charged.first_seq };
                match result {
                    Ok(mut accepted) => {
                        if let Some(run) = &mut accepted.run {
                            run.charge = Some(charge);
                        }
                        Ok(accepted)
                    }
                    Err(rejection) => Err(Rejection::new(
                        rejection.code,
                        format!(
                            "{}; its {amount} was charged to budget {} (seq {})",
                            rejection.message, charge.budget_id, charge.seq
                        ),
                    )),
                }
            }
            Err(refused) => Err(Rejection::new(
                refused.code,
                format!(
                    "the run at seq {seq} is recorded, but its charge of {amount} to budget {} was refused: {}",
                    run.budget_id, refused.message
                ),
            )),
        }
    }

    /// Establishes who sent the request and holds them to the role table
    /// (`auth::roles`), before anything is read for the decision. A
    /// signed or known principal becomes the request's actor (and its
    /// credential, for the steps a saga takes after it); a signed
    /// request's nonce is returned, for its first event to carry, with its
    /// signature, to be checked before the request gets anything
    /// (`auth::verification`): every refusal here waits for that check.
    async fn authenticate(&self, mut request: Request) -> Result<Authenticated> {
        let (principal, nonce, signature) = match std::mem::take(&mut request.credential) {
            Credential::Trusted => return Ok(Authenticated { request, nonce: None, signature: None }),
            // Open mode: requests act as the actor they name.
            Credential::Unsigned | Credential::Signed(_) if self.auth.is_none() => {
                return Ok(Authenticated { request, nonce: None, signature: None });
            }
            Credential::Unsigned => {
                return Err(crate::auth::unauthenticated(
                    "this node requires signed commands (auth.mode = \"signed\"): sign the request with a registered key (docs/PROTOCOL.md, \"Signed commands\")",
                ));
            }
            Credential::Signed(signed) => {
                let auth = self.auth.as_ref().expect("open mode returned above");
                let principal = self.principal(auth, &signed.key_id).await?;
                let (timestamp, nonce) = (signed.timestamp_nanos, signed.recorded_nonce());
                let signature = Verification::new(signed, auth.prepared_key(&principal)?);
                let now = self.clock.now().as_nanos();
                if now.abs_diff(timestamp) > auth.skew_nanos {
                    let (ahead, by) =
                        if timestamp > now { ("ahead of", timestamp - now) } else { ("behind", now - timestamp) };
                    return Err(signature.before(Rejection::new(
                        Code::StaleTimestamp,
                        format!(
                            "the request's timestamp is {:.1} s {ahead} this node's clock; the window is {} s either way: sign it again now (and check the producer's clock)",
                            by as f64 / 1e9,
                            auth.skew_nanos / 1_000_000_000
                        ),
                    )));
                }
                self.refuse_seen_nonce(&nonce).await.map_err(|r| signature.before(r))?;
                (principal, Some(nonce), Some(signature))
            }
            Credential::Principal(principal) => (principal, None, None),
        };
        let owner = match roles::rule(&request.command) {
            Rule::SessionOwner(session_id) => {
                self.session_owner(session_id).await.map_err(|r| verification::before(signature.as_ref(), r))?
            }
            _ => None,
        };
        roles::check(&principal, &request.command, owner.as_deref())
            .map_err(|r| verification::before(signature.as_ref(), r))?;
        request.actor.clone_from(&principal.id);
        request.credential = Credential::Principal(principal);
        Ok(Authenticated { request, nonce, signature })
    }

    /// The principal behind a key id: a bootstrap admin from the
    /// configuration, or one registered on `principal/<id>` and not
    /// revoked. Read from what this node has (a registration made on
    /// another node is read from the log when this one has none yet).
    async fn principal(&self, auth: &Auth, key_id: &str) -> Result<Principal> {
        if let Some(admin) = auth.admins.get(key_id) {
            return Ok(admin.clone());
        }
        let stream = format!("principal/{key_id}");
        let mut loaded = self.load_as(&stream, false).await?;
        if !matches!(&loaded.state, State::Principal(p) if p.registered) {
            loaded = self.load_as(&stream, true).await?;
        }
        let State::Principal(state) = loaded.state else { unreachable!("principal streams hold principals") };
        if let Some(seq) = state.revoked_at {
            return Err(crate::auth::unauthenticated(format!(
                "the key of principal {key_id} was revoked (seq {seq}); register a new principal"
            )));
        }
        state.identity(key_id).ok_or_else(|| {
            crate::auth::unauthenticated(format!(
                "no principal {key_id} is registered (Agentlog-Key-Id); an admin registers it with register_principal"
            ))
        })
    }

    /// The agent whose session this is (`None`: no such session), from
    /// what this node has, or from the log when that is nothing: a
    /// session's agent never changes once opened.
    async fn session_owner(&self, session_id: &str) -> Result<Option<String>> {
        let stream = format!("session/{session_id}");
        let owner = |loaded: &Loaded| match &loaded.state {
            State::Session(s) => Some(s.agent_id.clone()).filter(|a| !a.is_empty()),
            _ => None,
        };
        if let Some(owner) = owner(&self.load_as(&stream, false).await?) {
            return Ok(Some(owner));
        }
        Ok(owner(&self.load_as(&stream, true).await?))
    }

    /// Refuses a nonce the log has recorded: a signed request is accepted
    /// once, ever, whichever node it reaches.
    async fn refuse_seen_nonce(&self, nonce: &str) -> Result<()> {
        if let Some(first) = self.log.idempotent_result(&agentlog_core::api::nonce_key(nonce)).await? {
            return Err(Rejection::new(
                Code::ReplayedNonce,
                format!(
                    "nonce {nonce} was used by the request that appended seq {}: a signed request is accepted once; a retry is signed again with a fresh nonce and the same idempotency key",
                    first.first_seq
                ),
            ));
        }
        Ok(())
    }

    fn modules(&self) -> Result<&Arc<dyn ModuleHost>> {
        self.modules.as_ref().ok_or_else(|| {
            Rejection::new(
                Code::Unavailable,
                "this node runs no WASM sandbox; send sandbox commands to a node that does (`agentlog serve`)",
            )
        })
    }

    /// What must happen once before deciding: a module to register is
    /// checked by the sandbox (refused as `invalid_module`, naming why); a
    /// run is made, after the checks that need no run (the module is a
    /// registered action, the agent's session is live).
    async fn prepare(&self, command: &Command) -> Result<Option<Prepared>> {
        match command {
            Command::RegisterModule(RegisterModule { module, .. }) => {
                // Checking compiles the module: up to seconds for a large one.
                let (host, module) = (self.modules()?.clone(), module.clone());
                aside(move || host.check(&module)).await.map_err(|reason| {
                    Rejection::new(Code::InvalidModule, format!("the module is refused: {reason}"))
                })?;
                Ok(None)
            }
            Command::RunModule(run) => {
                let host = self.modules()?.clone();
                let module = self.module(&run.module_hash).await?;
                let registered = aggregate::module::runnable(&module, &run.module_hash)?;
                let session = self.session(&run.session_id).await?;
                session.check_live_for(&run.session_id, &run.agent_id, self.clock.now())?;
                if !run.budget_id.is_empty() {
                    let budget = self.budget(&run.budget_id).await?;
                    aggregate::module::can_charge(&budget, run, self.clock.now())?;
                }
                let (work_host, module, run) = (host.clone(), registered.module.clone(), run.clone());
                let outcome = aside(move || work_host.run(&run.module_hash, &module, &run.input, run.fuel))
                    .await
                    .map_err(|reason| Rejection::new(Code::Unavailable, format!("the sandbox failed: {reason}")))?;
                Ok(Some(Prepared { run: outcome, engine_hash: host.engine_hash() }))
            }
            _ => Ok(None),
        }
    }

    /// The stream's state and version, caught up with the log.
    pub async fn load(&self, stream: &str) -> Result<(u64, State)> {
        let loaded = self.load_as(stream, true).await?;
        Ok((loaded.version, loaded.state))
    }

    /// The stream's state and version: caught up with the log when `fresh`,
    /// else as far as this node's log has it (`Log::read_stream_local`).
    async fn load_as(&self, stream: &str, fresh: bool) -> Result<Loaded> {
        let cached = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(stream).cloned();
        let Loaded { mut version, mut state, mut last_ts } = match cached {
            Some(cached) if self.log.known_version(stream) == Some(cached.version) => return Ok(cached),
            // Nothing past the cache in this node's log: a local read would
            // find nothing (the cache may be ahead, by this node's appends).
            Some(cached) if !fresh && self.log.local_version(stream).is_some_and(|v| v <= cached.version) => {
                return Ok(cached);
            }
            Some(cached) => cached,
            None => Loaded {
                version: 0,
                state: State::empty_for(stream)
                    .ok_or_else(|| Rejection::invalid(format!("{stream} is not an aggregate stream")))?,
                last_ts: 0,
            },
        };
        loop {
            let events = if fresh {
                // Boxed: a read that waits on the network is a large future,
                // which would make every future holding a load as large,
                // and be copied with each.
                Box::pin(self.log.read_stream(stream, version + 1, PAGE)).await?
            } else {
                self.log.read_stream_local(stream, version + 1, PAGE).await?
            };
            for event in &events {
                debug_assert_eq!(event.stream_version, version + 1, "streams have no gaps");
                state.apply(event);
                version = event.stream_version;
                last_ts = last_ts.max(event.ts);
            }
            if events.len() < PAGE {
                break;
            }
        }
        let loaded = Loaded { version, state, last_ts };
        self.store(stream, loaded.clone());
        Ok(loaded)
    }

    fn store(&self, stream: &str, loaded: Loaded) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_ENTRIES && !cache.contains_key(stream) {
            cache.clear();
        }
        cache.insert(stream.to_owned(), loaded);
    }

    /// Folds what this handler just appended into the cache, sparing the
    /// next decision a read.
    fn remember(&self, stream: &str, version: u64, mut state: State, events: &[Envelope], appended: &Appended) {
        if appended.duplicate || appended.stream_version != version + events.len() as u64 {
            return;
        }
        let mut last_ts = 0;
        for event in events {
            state.apply(event);
            last_ts = last_ts.max(event.ts);
        }
        self.store(stream, Loaded { version: appended.stream_version, state, last_ts });
    }

    async fn session(&self, session_id: &str) -> Result<Session> {
        match self.load(&format!("session/{session_id}")).await?.1 {
            State::Session(s) => Ok(s),
            _ => unreachable!("session streams hold sessions"),
        }
    }

    async fn agent(&self, agent_id: &str) -> Result<Agent> {
        match self.load(&format!("agent/{agent_id}")).await?.1 {
            State::Agent(a) => Ok(a),
            _ => unreachable!("agent streams hold agents"),
        }
    }

    /// Asks the policy bound to the command's type, if any: `allow` goes
    /// on; a denial, or a policy that fails to answer, refuses the command
    /// (policies fail closed). Nothing is appended either way; decisions
    /// are counted (`agentlog_policy_decisions_total`) and denials logged.
    async fn police(
        &self,
        request: &Request,
        command: &Command,
        stream: &str,
        state: &State,
        now: Timestamp,
    ) -> Result<()> {
        use crate::policy::{POLICY_FUEL, Verdict, denied, failed, input, verdict};
        if matches!(command, Command::BindPolicy(_)) {
            return Ok(());
        }
        let name = command.name();
        let binding = match self.load_as(&format!("policy/{name}"), false).await?.state {
            State::Policy(binding) => binding,
            _ => unreachable!("policy streams hold bindings"),
        };
        let Some(module_hash) = binding.module_hash else { return Ok(()) };
        let Some(host) = &self.modules else {
            return Err(Rejection::new(
                Code::Unavailable,
                format!(
                    "{name} has policy {module_hash}, and this node runs no sandbox to ask it; send it to one that does"
                ),
            ));
        };
        let module = self.module(&module_hash).await?;
        let Some(registered) = &module.registered else {
            return Err(failed(name, "(unregistered)", &module_hash, "is bound but was never registered"));
        };
        let asked = input(command, &request.actor, now.as_nanos(), stream, state);
        let outcome = if host.is_compiled(&module_hash) {
            off_the_runtime(|| host.run(&module_hash, &registered.module, &asked, POLICY_FUEL))
        } else {
            // Its first check here compiles it: up to seconds.
            let (host, hash, module) = (host.clone(), module_hash.clone(), registered.module.clone());
            aside(move || host.run(&hash, &module, &asked, POLICY_FUEL)).await
        }
        .map_err(|reason| Rejection::new(Code::Unavailable, format!("the sandbox failed: {reason}")))?;
        let refusal = match outcome {
            RunOutcome::Completed { output, .. } => match verdict(&output) {
                Some(Verdict::Allow) => {
                    count_policy("allowed");
                    return Ok(());
                }
                Some(Verdict::Deny(reason)) => {
                    count_policy("denied");
                    denied(name, &registered.name, &module_hash, &reason)
                }
                None => {
                    count_policy("failed");
                    failed(name, &registered.name, &module_hash, "answered neither `allow` nor `deny <reason>`")
                }
            },
            RunOutcome::Trapped { trap, fuel_used } => {
                count_policy("failed");
                failed(name, &registered.name, &module_hash, &format!("trapped ({trap}) after {fuel_used} fuel"))
            }
        };
        tracing::info!(message = "policy refused a command", command = name, actor = %request.actor, code = %refusal.code, reason = %refusal.message);
        Err(refusal)
    }

    /// A module as registered. A registration never changes, so what this
    /// node has is read first; the log is asked only when that is nothing.
    async fn module(&self, module_hash: &str) -> Result<Module> {
        let stream = format!("module/{module_hash}");
        let mut loaded = self.load_as(&stream, false).await?;
        if !matches!(&loaded.state, State::Module(m) if m.registered.is_some()) {
            loaded = self.load_as(&stream, true).await?;
        }
        match loaded.state {
            State::Module(m) => Ok(m),
            _ => unreachable!("module streams hold modules"),
        }
    }

    /// Tasks by id, read at once.
    async fn tasks(&self, task_ids: &[String]) -> Result<BTreeMap<String, Task>> {
        let loads = task_ids.iter().map(|id| async move {
            Ok::<_, Rejection>(match self.load(&format!("task/{id}")).await?.1 {
                State::Task(t) => Some((id.clone(), t)),
                _ => None,
            })
        });
        Ok(try_join_all(loads).await?.into_iter().flatten().collect())
    }

    /// Gathers what the decision reads and calls the pure decide function.
    async fn decide(
        &self,
        command: &Command,
        state: &State,
        now: Timestamp,
        prepared: Option<&Prepared>,
    ) -> Result<Decision> {
        use aggregate::{agent, budget, module, session, task};
        Ok(match (command, state) {
            (Command::OpenSession(OpenSession { agent_id, session_id, heartbeat_timeout_ms }), State::Session(s)) => {
                let agent = self.agent(agent_id).await?;
                session::open(s, session_id.as_deref().unwrap_or_default(), agent_id, *heartbeat_timeout_ms, &agent)
            }
            (Command::Heartbeat(Heartbeat { session_id }), State::Session(s)) => session::heartbeat(s, session_id, now),
            (Command::CloseSession(CloseSession { session_id, reason }), State::Session(s)) => {
                session::close(s, session_id, reason)
            }
            (Command::ExpireSession(ExpireSession { session_id }), State::Session(s)) => {
                session::expire(s, session_id, now)
            }
            (Command::RegisterAgent(RegisterAgent { agent_id, name, capabilities }), State::Agent(_)) => {
                agent::register(agent_id, name, capabilities)
            }
            (
                Command::RecordAction(RecordAction { agent_id, session_id, task_id, kind, cost, outcome, detail }),
                State::Agent(a),
            ) => {
                let session = self.session(session_id).await?;
                let action = agent::Action {
                    agent_id,
                    session_id,
                    task_id,
                    kind: *kind,
                    cost: *cost,
                    outcome: *outcome,
                    detail,
                };
                agent::record_action(a, &session, action, now)
            }
            (
                Command::CreateTask(CreateTask {
                    task_id,
                    title,
                    priority,
                    required_capabilities,
                    dependencies,
                    max_attempts,
                }),
                State::Task(t),
            ) => {
                let deps = self.tasks(dependencies).await?;
                let new = task::NewTask {
                    task_id,
                    title,
                    priority: *priority,
                    required_capabilities,
                    dependencies,
                    max_attempts: *max_attempts,
                };
                task::create(t, new, &deps)
            }
            (Command::ClaimTask(ClaimTask { task_id, agent_id, session_id, lease_ms }), State::Task(t)) => {
                let (deps, session, agent) =
                    try_join3(self.tasks(&t.dependencies), self.session(session_id), self.agent(agent_id)).await?;
                let claim = task::Claim { task_id, agent_id, session_id, lease_ms: *lease_ms };
                task::claim(t, claim, &deps, &session, &agent, now)
            }
            (Command::ReleaseTask(ReleaseTask { task_id, agent_id, session_id, reason }), State::Task(t)) => {
                task::finish(t, task_id, agent_id, session_id, task::Finish::Release { reason }, now)
            }
            (Command::CompleteTask(CompleteTask { task_id, agent_id, session_id, result }), State::Task(t)) => {
                task::finish(t, task_id, agent_id, session_id, task::Finish::Complete { result }, now)
            }
            (Command::FailTask(FailTask { task_id, agent_id, session_id, reason }), State::Task(t)) => {
                task::finish(t, task_id, agent_id, session_id, task::Finish::Fail { reason }, now)
            }
            (Command::ExpireLease(ExpireLease { task_id }), State::Task(t)) => {
                let holder_live = match &t.status {
                    task::Status::Claimed { session_id, .. } => self.session(session_id).await?.is_live(now),
                    _ => true,
                };
                task::expire_lease(t, task_id, holder_live, now)
            }
            (Command::AllocateBudget(AllocateBudget { budget_id, amount }), State::Budget(b)) => {
                budget::allocate(b, budget_id, *amount)
            }
            (
                Command::DebitBudget(DebitBudget { budget_id, amount, agent_id, session_id, task_id, reason, failed }),
                State::Budget(b),
            ) => {
                let debit = budget::Debit {
                    budget_id,
                    amount: *amount,
                    agent_id,
                    session_id,
                    task_id,
                    reason,
                    failed: *failed,
                };
                budget::debit(b, debit, &self.policy, now)
            }
            (Command::RefundBudget(RefundBudget { budget_id, amount, reason }), State::Budget(b)) => {
                budget::refund(b, budget_id, *amount, reason)
            }
            (Command::RegisterModule(RegisterModule { name, kind, module: bytes }), State::Module(m)) => {
                module::register(m, name, *kind, bytes)
            }
            (Command::BindPolicy(bind), State::Policy(binding)) => {
                let module =
                    if bind.module_hash.is_empty() { None } else { Some(self.module(&bind.module_hash).await?) };
                aggregate::policy::bind(binding, &bind.command, &bind.module_hash, module.as_ref())
            }
            (Command::RunModule(run), State::Agent(a)) => {
                let session = self.session(&run.session_id).await?;
                let prepared = prepared.expect("a run is made before it is decided");
                module::record_run(a, &session, run, &prepared.run, &prepared.engine_hash, now)
            }
            (Command::RegisterPrincipal(register), State::Principal(p)) => aggregate::principal::register(p, register),
            (Command::RevokePrincipal(revoke), State::Principal(p)) => {
                aggregate::principal::revoke(p, &revoke.principal_id, &revoke.reason)
            }
            (command, _) => unreachable!("{} decides on {}, whose state matches", command.name(), command.stream()),
        })
    }

    fn envelopes(&self, request: &Request, command: &Command, bodies: Vec<Body>, now: Timestamp) -> Vec<Envelope> {
        let session_id = command
            .session_id()
            .and_then(|s| s.parse::<SessionId>().ok())
            .map(|s| s.as_bytes().to_vec())
            .unwrap_or_default();
        let mut correlation_id = request.correlation_id.map(|c| c.as_bytes().to_vec());
        bodies
            .into_iter()
            .map(|body| {
                let event_id = EventId::new(now, &*self.ids);
                // Without a correlation id from the producer, the command's
                // first event id correlates everything it caused.
                let correlation = correlation_id.get_or_insert_with(|| event_id.as_bytes().to_vec()).clone();
                Envelope {
                    event_id: event_id.as_bytes().to_vec(),
                    ts: now.as_nanos(),
                    correlation_id: correlation,
                    causation_id: request.causation_id.map(|c| c.as_bytes().to_vec()).unwrap_or_default(),
                    session_id: session_id.clone(),
                    saga_id: request.saga_id.map(|s| s.as_bytes().to_vec()).unwrap_or_default(),
                    actor: request.actor.clone(),
                    schema_version: SCHEMA_VERSION,
                    body: Some(body),
                    ..Envelope::default()
                }
            })
            .collect()
    }

    /// The budget state, for callers that need to show it.
    pub async fn budget(&self, budget_id: &str) -> Result<Budget> {
        match self.load(&format!("budget/{budget_id}")).await?.1 {
            State::Budget(b) => Ok(b),
            _ => unreachable!("budget streams hold budgets"),
        }
    }
}

/// Runs `work` (a module's compile, or a run: up to seconds) on tokio's
/// blocking pool and waits for it there (with no runtime, right here): the
/// commands decided beside this one, in tasks of their own or futures of the
/// same task in the command service's shard (`wire::Service`), go on
/// meanwhile.
async fn aside<T: Send + 'static>(
    work: impl FnOnce() -> std::result::Result<T, String> + Send + 'static,
) -> std::result::Result<T, String> {
    if tokio::runtime::Handle::try_current().is_err() {
        return work();
    }
    match tokio::task::spawn_blocking(work).await {
        Ok(done) => done,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(_) => Err("the sandbox's work was cancelled: the runtime is shutting down".into()),
        },
    }
}

/// Runs `work` (a policy's check of a module compiled already: at most
/// `POLICY_FUEL`, about a millisecond) so that it does not hold up the
/// async tasks of the thread it is called on: on tokio's multi-threaded
/// runtime the thread hands its other tasks over first (`block_in_place`),
/// costing nothing when none wait. The commands decided beside it in the
/// service's shard wait for it: a hop to another thread would cost every
/// policed command more. Elsewhere (a single-threaded runtime, no runtime)
/// it just runs.
fn off_the_runtime<T>(work: impl FnOnce() -> T) -> T {
    #[cfg(feature = "nats")]
    if let Ok(runtime) = tokio::runtime::Handle::try_current()
        && runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
    {
        return tokio::task::block_in_place(work);
    }
    work()
}

/// Counts a policy's decision (`allowed`, `denied`, `failed`).
fn count_policy(result: &'static str) {
    #[cfg(feature = "nats")]
    metrics::counter!("agentlog_policy_decisions_total", "result" => result).increment(1);
    #[cfg(not(feature = "nats"))]
    let _ = result;
}

/// What a completed run gave, from the events recording it.
fn run_result(events: &[Envelope]) -> Option<RunResult> {
    events.iter().find_map(|e| match &e.body {
        Some(Body::SandboxRunCompleted(run)) => Some(RunResult {
            module_hash: run.module_hash.clone(),
            output: run.output.clone(),
            output_hash: run.output_hash.clone(),
            fuel_used: run.fuel_used,
            charge: None,
        }),
        _ => None,
    })
}

fn opened_session(command: &Command) -> Option<String> {
    match command {
        Command::OpenSession(OpenSession { session_id, .. }) => session_id.clone(),
        _ => None,
    }
}

/// The wait before retry `attempt` (1 is the first) after lost races: none
/// before the first, which decides on state just caught up; then a part
/// chosen by `draw` (random bits) of a bound that doubles from
/// [`BACKOFF_FIRST_US`] up to [`BACKOFF_MAX_US`] (full jitter), so two
/// nodes' retries on one aggregate do not collide in step again.
fn backoff(attempt: u32, draw: u128) -> Duration {
    if attempt <= 1 {
        return Duration::ZERO;
    }
    let bound = BACKOFF_FIRST_US.saturating_mul(1 << (attempt - 2).min(16)).min(BACKOFF_MAX_US);
    let part = draw % u128::from(bound + 1);
    Duration::from_micros(u64::try_from(part).expect("at most the bound"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_retry_waits_nothing_and_later_ones_a_random_part_of_a_doubling_capped_bound() {
        assert_eq!(backoff(1, u128::MAX), Duration::ZERO);
        let cap = |attempt: u32| (BACKOFF_FIRST_US << (attempt - 2).min(16)).min(BACKOFF_MAX_US);
        assert_eq!((cap(2), cap(3), cap(DEFAULT_MAX_RETRIES)), (100, 200, 2_000));
        let draws = [0, 1, 12_345, 987_654_321, u128::from(u64::MAX), u128::MAX];
        for attempt in 2..=DEFAULT_MAX_RETRIES {
            for draw in draws {
                assert!(backoff(attempt, draw) <= Duration::from_micros(cap(attempt)), "attempt {attempt}");
            }
            // The least draw waits nothing; the draw equal to the bound, all of it.
            assert_eq!(backoff(attempt, 0), Duration::ZERO);
            assert_eq!(backoff(attempt, u128::from(cap(attempt))), Duration::from_micros(cap(attempt)));
        }
        // Different draws give different waits: the jitter.
        assert_ne!(backoff(6, 12_345), backoff(6, 987_654_321));
        // A whole run of retries waits about 60 ms at most.
        let worst: Duration = (2..=DEFAULT_MAX_RETRIES).map(|a| backoff(a, u128::from(cap(a)))).sum();
        assert_eq!(worst, Duration::from_micros(3_100 + 26 * 2_000));
    }
}
