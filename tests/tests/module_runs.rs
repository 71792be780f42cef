//! A `run_module` command's run waits off the task that decides it. The
//! command service decides the requests it holds as futures of one task
//! (`wire::Service`'s shards), and a run may last up to the sandbox's
//! deadline, so the commands decided beside it must go on meanwhile. A
//! module host whose runs end only when the test lets them go stands in for
//! a long run: were the run made on the deciding task, the command beside it
//! could never finish, the run would never be let go, and it fails after
//! 30 s with the reason below.
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use agentlog_commands::command::AllocateBudget;
use agentlog_commands::module::{RegisterModule, RunModule, content_hash};
use agentlog_commands::{Command, ModuleHost, ModuleKind, Policy, Request, RunOutcome};
use agentlog_log::ManualClock;

const NEVER_LET_GO: &str = "never let go: the run held up the command decided beside it";

/// Takes any module; each run ends when `let_go` receives (giving its input
/// back as its output), or fails after 30 s.
struct HeldRuns {
    let_go: Mutex<mpsc::Receiver<()>>,
}

impl ModuleHost for HeldRuns {
    fn check(&self, _module: &[u8]) -> Result<(), String> {
        Ok(())
    }

    fn run(&self, _module_hash: &str, _module: &[u8], input: &[u8], _fuel: u64) -> Result<RunOutcome, String> {
        let let_go = self.let_go.lock().map_err(|_| "the test panicked".to_owned())?;
        match let_go.recv_timeout(Duration::from_secs(30)) {
            Ok(()) => Ok(RunOutcome::Completed { output: input.to_vec(), fuel_used: 1 }),
            Err(_) => Err(NEVER_LET_GO.to_owned()),
        }
    }

    fn is_compiled(&self, _module_hash: &str) -> bool {
        true
    }

    fn engine_hash(&self) -> String {
        "held-runs".into()
    }
}

#[tokio::test]
async fn a_module_run_holds_up_no_command_decided_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = agentlog_tests::open_log(dir.path());
    let clock = Arc::new(ManualClock::new(agentlog_tests::T0));
    let (let_go, runs_wait) = mpsc::channel();
    let host = Arc::new(HeldRuns { let_go: Mutex::new(runs_wait) });
    let handler = agentlog_tests::handler(log, clock, 7, Policy::default());
    let handler = Arc::new(Arc::into_inner(handler).expect("only this test holds it").with_modules(host));
    let (agent_id, session_id) = agentlog_tests::agents_with_sessions(&handler, 1, &[]).await.remove(0);
    let module = b"any bytes: this host takes every module".to_vec();
    let module_hash = content_hash(&module);
    let register = Command::RegisterModule(RegisterModule { name: "held".into(), kind: ModuleKind::Action, module });
    handler.execute(Request::new(register, "test")).await.unwrap();

    let run = Command::RunModule(RunModule {
        module_hash,
        agent_id,
        session_id,
        task_id: String::new(),
        input: b"went on".to_vec(),
        fuel: 1_000,
        budget_id: String::new(),
    });
    let beside = Command::AllocateBudget(AllocateBudget { budget_id: "beside".into(), amount: 5 });
    // Both futures of this one task, as a shard of the service holds them;
    // the run is let go only once the command beside it is decided.
    let (ran, allocated) = tokio::join!(handler.execute(Request::new(run, "test")), async {
        let allocated = handler.execute(Request::new(beside, "test")).await;
        let_go.send(()).expect("the host waits for it");
        allocated
    });
    allocated.expect("the command beside the run is decided");
    let ran = ran.unwrap_or_else(|refused| panic!("the run: {refused}"));
    assert_eq!(ran.run.map(|run| run.output), Some(b"went on".to_vec()), "the run completed after it");
}
