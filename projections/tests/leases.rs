//! Leases that run out, on a real embedded log with a manual clock: a
//! session that stops heart-beating loses its claim through the ticker
//! (`SessionExpired`, then `TaskLeaseExpired`), another agent claims the
//! task, and a rebuild from seq 1 gives exactly the state the live views had.
use std::sync::Arc;
use std::time::Duration;

use agentlog_commands::command::{ClaimTask, CompleteTask, CreateTask, Heartbeat, OpenSession, RegisterAgent};
use agentlog_commands::{Code, Command, Handler, Request};
use agentlog_log::wal::Store;
use agentlog_log::{Body, EmbeddedLog, Log, ManualClock, Options, SeededIdGen, Timestamp};
use agentlog_projections::ticker::{self, Due, Ticked};
use agentlog_projections::world::{SessionStatus, TaskStatus};
use agentlog_projections::{Live, Reputation, Runner, Views, WorldModel, rebuild};

const START: u64 = 1_767_225_600_000_000_000; // 2026-01-01T00:00:00Z

struct Scene {
    _dir: tempfile::TempDir,
    log: Arc<EmbeddedLog>,
    clock: Arc<ManualClock>,
    handler: Handler<EmbeddedLog>,
    views: Views,
}

impl Scene {
    fn new() -> Scene {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(EmbeddedLog::open(&dir.path().join("log"), Options::default()).unwrap());
        let clock = Arc::new(ManualClock::new(Timestamp::from_nanos(START)));
        let handler = Handler::new(log.clone(), clock.clone(), Arc::new(SeededIdGen::new(7)));
        Scene { _dir: dir, log, clock, handler, views: Views::default() }
    }

    async fn ok(&self, command: Command) {
        let what = format!("{command:?}");
        self.handler.execute(Request::new(command, "test")).await.unwrap_or_else(|r| panic!("{what}: {r}"));
    }

    async fn refused(&self, command: Command) -> Code {
        self.handler.execute(Request::new(command, "test")).await.expect_err("a refusal").code
    }

    fn at(&self, seconds: u64) {
        self.clock.set(Timestamp::from_nanos(START + seconds * 1_000_000_000));
    }

    /// What the views say is due now, after folding everything appended.
    fn due(&self) -> Due {
        self.views.catch_up(self.wal()).unwrap();
        ticker::due(&self.views.world().state, agentlog_core::Clock::now(&*self.clock))
    }

    fn wal(&self) -> &Store {
        self.log.store()
    }

    async fn last_types(&self, n: usize) -> Vec<&'static str> {
        let head = self.log.head().await.unwrap().last_seq;
        let events = self.log.read(head + 1 - n as u64, n).await.unwrap();
        events.iter().map(|e| e.body.as_ref().map_or("none", Body::type_name)).collect()
    }
}

fn claim(agent: &str, session: &str, lease_ms: u64) -> Command {
    Command::ClaimTask(ClaimTask { task_id: "t".into(), agent_id: agent.into(), session_id: session.into(), lease_ms })
}

fn heartbeat(session: &str) -> Command {
    Command::Heartbeat(Heartbeat { session_id: session.into() })
}

async fn setup(scene: &Scene) {
    for agent in ["a", "b"] {
        let capabilities = vec!["code".to_owned()];
        scene
            .ok(Command::RegisterAgent(RegisterAgent { agent_id: agent.into(), name: agent.into(), capabilities }))
            .await;
    }
    scene
        .ok(Command::CreateTask(CreateTask {
            task_id: "t".into(),
            title: "the task".into(),
            priority: 1,
            required_capabilities: vec!["code".into()],
            dependencies: vec![],
            max_attempts: 3,
        }))
        .await;
    let open = |agent: &str, session: &str, timeout_ms| {
        Command::OpenSession(OpenSession {
            agent_id: agent.into(),
            session_id: Some(session.into()),
            heartbeat_timeout_ms: timeout_ms,
        })
    };
    scene.ok(open("a", "sa", 10_000)).await;
    scene.ok(open("b", "sb", 60_000)).await;
}

#[tokio::test]
async fn a_session_that_stops_heartbeating_loses_its_claim_and_another_agent_claims_the_task() {
    let scene = Scene::new();
    setup(&scene).await;
    scene.ok(claim("a", "sa", 120_000)).await;
    scene.at(5);
    scene.ok(heartbeat("sa")).await;
    scene.at(15);
    assert_eq!(scene.due(), Due::default(), "sa's deadline is 15 s: not passed yet");

    // a goes silent; its lease would run for another 105 s, but its session
    // is gone, and the claim goes with it.
    scene.at(16);
    let due = scene.due();
    assert_eq!(due, Due { sessions: vec!["sa".into()], leases: vec!["t".into()] });
    assert_eq!(scene.refused(claim("b", "sb", 30_000)).await, Code::AlreadyClaimed, "held until the ticker acts");
    let ticked = ticker::tick(&scene.handler, &due).await.unwrap();
    assert_eq!(ticked, Ticked { sessions_expired: vec!["sa".into()], leases_expired: vec!["t".into()], skipped: 0 });
    assert_eq!(scene.last_types(2).await, ["session_expired", "task_lease_expired"]);

    // A second node ticking on the same stale view changes nothing.
    let head = scene.log.head().await.unwrap();
    let again = ticker::tick(&scene.handler, &due).await.unwrap();
    assert_eq!(again, Ticked { sessions_expired: vec![], leases_expired: vec![], skipped: 2 });
    assert_eq!(scene.log.head().await.unwrap(), head);

    assert_eq!(scene.due(), Due::default());
    {
        let world = scene.views.world();
        let task = world.state.task("t").unwrap();
        assert_eq!((task.status, task.holder.as_ref()), (TaskStatus::Open, None));
        assert!(world.state.ready().any(|t| t.task_id == "t"), "back in the ready queue");
        let session = world.state.session("sa").unwrap();
        assert_eq!(session.status, SessionStatus::Expired);
        assert!(session.claims.is_empty());
        assert_eq!(world.state.violations().count(), 0, "{:?}", world.state.violations().collect::<Vec<_>>());
    }

    // b claims it; a, back from the dead, cannot finish it.
    scene.ok(claim("b", "sb", 30_000)).await;
    let complete = |agent: &str, session: &str| {
        Command::CompleteTask(CompleteTask {
            task_id: "t".into(),
            agent_id: agent.into(),
            session_id: session.into(),
            result: String::new(),
        })
    };
    assert_eq!(scene.refused(complete("a", "sa")).await, Code::NotHolder);

    // b keeps its session alive but overruns the lease: the lease alone
    // expires, and b's session stays live.
    scene.at(40);
    scene.ok(heartbeat("sb")).await;
    scene.at(47);
    let due = scene.due();
    assert_eq!(due, Due { sessions: vec![], leases: vec!["t".into()] });
    assert_eq!(ticker::tick(&scene.handler, &due).await.unwrap().leases_expired, ["t"]);
    scene.ok(claim("b", "sb", 30_000)).await;
    scene.at(50);
    scene.ok(complete("b", "sb")).await;
    assert_eq!(scene.due(), Due::default());

    // Replaying the log from seq 1 gives the live views' state, byte for byte.
    let live = scene.views.status();
    let (mut world, mut reputation) = (Live::<WorldModel>::new(), Live::<Reputation>::new());
    let head = scene.log.head().await.unwrap().last_seq;
    rebuild(scene.wal(), &mut [&mut world as &mut dyn Runner, &mut reputation], head, &mut |_, _| {}).unwrap();
    assert_eq!(world.position, head);
    let hex = agentlog_core::chain::to_hex;
    assert_eq!(hex(&world.state_hash()), live[0].state_hash);
    assert_eq!(hex(&reputation.state_hash()), live[1].state_hash);
    let task = world.state.task("t").unwrap();
    assert_eq!((task.status, task.attempts), (TaskStatus::Completed, 3));
}

#[tokio::test]
async fn a_ticker_runs_on_its_clock_until_stopped() {
    let scene = Arc::new(Scene::new());
    setup(&scene).await;
    scene.ok(claim("a", "sa", 120_000)).await;
    scene.views.catch_up(scene.wal()).unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let reports = Arc::new(std::sync::Mutex::new(Vec::new()));
    let running = tokio::spawn({
        let (scene, reports) = (scene.clone(), reports.clone());
        async move {
            // Kept as they come, failures too, to be checked below (a
            // panic here would only stop the ticker).
            let report = |r: Result<Ticked, _>| reports.lock().unwrap().push(r);
            let clock: &dyn agentlog_core::Clock = &*scene.clock;
            ticker::run(&scene.handler, &scene.views, clock, Duration::from_millis(10), stopped, report).await;
        }
    });
    // Nothing is due on the clock yet, however long the ticker runs.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(reports.lock().unwrap().is_empty());
    // Once the clock passes sa's deadline, the ticker expires it and its claim.
    scene.at(11);
    let mut reopened = false;
    for _ in 0..500 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        scene.views.catch_up(scene.wal()).unwrap();
        if scene.views.world().state.task("t").unwrap().status == TaskStatus::Open {
            reopened = true;
            break;
        }
    }
    assert!(
        reopened,
        "the task did not reopen within 5 s: the log ends with {:?}; the ticks reported {:?}",
        scene.last_types(2).await,
        reports.lock().unwrap()
    );
    assert_eq!(scene.last_types(2).await, ["session_expired", "task_lease_expired"]);
    stop.send_replace(true);
    tokio::time::timeout(Duration::from_secs(10), running).await.expect("the ticker stops").unwrap();
    let reports = reports.lock().unwrap();
    assert_eq!(
        reports[0].as_ref().expect("the first tick went through"),
        &Ticked { sessions_expired: vec!["sa".into()], leases_expired: vec!["t".into()], skipped: 0 }
    );
}

/// What is due by a scan of every session and task: the definition the
/// world model's deadline indexes must answer exactly.
fn due_by_scan(world: &WorldModel, now: u64) -> Due {
    let live = |session_id: &str| {
        world.session(session_id).is_some_and(|s| s.status == SessionStatus::Live && now <= s.deadline_ts())
    };
    let sessions = world
        .sessions()
        .filter(|s| s.status == SessionStatus::Live && now > s.deadline_ts())
        .map(|s| s.session_id.clone())
        .collect();
    let leases = world
        .tasks()
        .filter(|t| t.status == TaskStatus::Claimed)
        .filter(|t| t.holder.as_ref().is_some_and(|h| now > h.lease_until_ts || !live(&h.session_id)))
        .map(|t| t.task_id.clone())
        .collect();
    Due { sessions, leases }
}

#[tokio::test]
async fn the_deadline_indexes_answer_what_a_scan_of_the_whole_world_answers() {
    // The demo's workload: sessions that vanish, leases that run out,
    // claims that race, over a simulated day.
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(EmbeddedLog::open(dir.path(), Options { sync: false, ..Options::default() }).unwrap());
    let clock = Arc::new(ManualClock::new(agentlog_commands::sim::START));
    let handler = agentlog_commands::sim::handler(log.clone(), clock.clone(), 11);
    let config = agentlog_commands::sim::Config { seed: 11, agents: 8, tasks: 150, days: 1, sim_clock: true };
    let ticker = ticker::OnSource::new(&handler, &**log.store());
    agentlog_commands::sim::run(&handler, &ticker, &clock, config, &mut |_, _| {}).await.unwrap();
    let events = log.store().read(1, usize::MAX).unwrap();
    assert!(events.len() > 2_000);

    // Fold event by event; after each, ask at several instants from it on.
    let mut world = Live::<WorldModel>::new();
    let (mut checked, mut due_somewhere) = (0, 0);
    for event in &events {
        world.apply(event);
        for offset_s in [0, 30, 120, 600, 3_600, 86_400] {
            let now = event.ts + offset_s * 1_000_000_000;
            let indexed = ticker::due(&world.state, Timestamp::from_nanos(now));
            assert_eq!(indexed, due_by_scan(&world.state, now), "after seq {}, {offset_s} s on", event.seq);
            checked += 1;
            due_somewhere += usize::from(!indexed.is_empty());
        }
    }
    assert!(due_somewhere > 100, "the comparison saw deadlines pass ({due_somewhere} of {checked})");

    // Folded without asking what is due until the end (as a rebuild or a
    // replay folds), the deadlines are put in time order when first asked,
    // and answer the same.
    let mut unasked = Live::<WorldModel>::new();
    for event in &events {
        unasked.apply(event);
    }
    assert_eq!(unasked.state, world.state);
    let last_ts = events.last().unwrap().ts;
    let mut due_at_end = 0;
    for offset_s in [0, 30, 120, 600, 3_600, 86_400] {
        let now = last_ts + offset_s * 1_000_000_000;
        let indexed = ticker::due(&unasked.state, Timestamp::from_nanos(now));
        assert_eq!(indexed, due_by_scan(&world.state, now), "at the end, {offset_s} s on");
        due_at_end += indexed.sessions.len() + indexed.leases.len();
    }
    assert!(due_at_end > 0, "something is due at the end, to be compared");

    // Read back from a checkpoint, the indexes are rebuilt to the same.
    let store = agentlog_projections::ProjectionStore::open(&dir.path().join("projections")).unwrap();
    store.save(&mut [&mut world]).unwrap();
    let loaded: Live<WorldModel> = store.load().unwrap();
    assert_eq!(loaded.state, world.state, "state and indexes alike");
}
