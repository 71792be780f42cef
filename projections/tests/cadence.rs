//! The worker's checkpoint cadence: a live log is not checkpointed per
//! event (the views answer from memory at once, saved or not); a checkpoint
//! falls due after the configured interval or count, and on stopping; a
//! worker restarted from an older checkpoint folds each later event once.
use std::sync::Arc;
use std::time::Duration;

use agentlog_core::testing::request;
use agentlog_log::{EmbeddedLog, ExpectedVersion, Log, Options};
use agentlog_projections::{Cadence, ProjectionStore, Views, follow, rebuild};

struct Worker {
    views: Arc<Views>,
    /// The position the views were loaded at, before the worker ran.
    loaded: u64,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<agentlog_projections::Result<()>>,
}

fn start(log: &Arc<EmbeddedLog>, store: &Arc<ProjectionStore>, cadence: Cadence) -> Worker {
    let views = Arc::new(Views::load(store, &**log.store()).unwrap());
    let loaded = views.position();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn({
        let (log, views, store) = (log.clone(), views.clone(), store.clone());
        async move { follow(&*log, &views, &store, cadence, stopped).await }
    });
    Worker { views, loaded, stop, task }
}

impl Worker {
    async fn stop(self) {
        self.stop.send_replace(true);
        self.task.await.unwrap().unwrap();
    }
}

async fn append(log: &EmbeddedLog, from: u64, to: u64) {
    for i in from..to {
        log.append(request("agent/a", ExpectedVersion::Any, 1, i)).await.unwrap();
    }
}

async fn saved_reaches(views: &Views, position: u64) {
    let mut saved = views.saved();
    tokio::time::timeout(Duration::from_secs(10), saved.wait_for(|p| *p >= position))
        .await
        .unwrap_or_else(|_| panic!("no checkpoint reached seq {position} within 10 s"))
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_log_is_not_checkpointed_per_event_but_when_due_and_on_stop() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(EmbeddedLog::open(&dir.path().join("log"), Options::default()).unwrap());
    let store = Arc::new(ProjectionStore::open(&dir.path().join("projections")).unwrap());

    // Neither the count nor the interval falls due: the views follow every
    // event in memory, and nothing is written.
    let worker = start(&log, &store, Cadence { events: 1_000, interval: Duration::from_secs(3_600) });
    for n in 1..=20 {
        append(&log, n, n + 1).await;
        worker.views.wait_for(n, Duration::from_secs(10)).await.unwrap();
    }
    assert_eq!(store.checkpoint("world").unwrap(), None, "caught up 20 times, checkpointed never");
    assert_eq!(*worker.views.saved().borrow(), 0);
    worker.stop().await;
    assert_eq!(store.checkpoint("world").unwrap().unwrap().position, 20, "saved on stop");

    // The count falls due.
    let worker = start(&log, &store, Cadence { events: 10, interval: Duration::from_secs(3_600) });
    append(&log, 21, 31).await;
    saved_reaches(&worker.views, 30).await;
    worker.stop().await;

    // The interval falls due.
    let worker = start(&log, &store, Cadence { events: 1_000, interval: Duration::from_millis(50) });
    append(&log, 31, 36).await;
    saved_reaches(&worker.views, 35).await;
    assert_eq!(store.checkpoint("world").unwrap().unwrap().position, 35);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_between_checkpoints_folds_each_later_event_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(EmbeddedLog::open(&dir.path().join("log"), Options::default()).unwrap());
    let store = Arc::new(ProjectionStore::open(&dir.path().join("projections")).unwrap());
    let cadence = Cadence { events: 100, interval: Duration::from_secs(3_600) };

    let worker = start(&log, &store, cadence);
    append(&log, 0, 250).await;
    worker.views.wait_for(250, Duration::from_secs(10)).await.unwrap();
    saved_reaches(&worker.views, 200).await;
    // Killed: no save on the way out, so the views resume from the last
    // checkpoint (where the count fell due: at or past 200) and fold the
    // rest again.
    worker.task.abort();
    let _ = worker.task.await;
    let checkpointed = store.checkpoint("world").unwrap().unwrap().position;
    assert!((200..=250).contains(&checkpointed), "{checkpointed}");

    let worker = start(&log, &store, cadence);
    assert_eq!(worker.loaded, checkpointed, "resumed from the checkpoint");
    append(&log, 250, 300).await;
    worker.views.wait_for(300, Duration::from_secs(10)).await.unwrap();
    let live: Vec<_> = worker.views.status().into_iter().map(|s| s.state_hash).collect();
    worker.stop().await;

    let mut world = agentlog_projections::Live::<agentlog_projections::WorldModel>::new();
    let mut reputation = agentlog_projections::Live::<agentlog_projections::reputation::Reputation>::new();
    rebuild(&**log.store(), &mut [&mut world, &mut reputation], 300, &mut |_, _| {}).unwrap();
    let hex = agentlog_log::chain::to_hex;
    use agentlog_projections::Runner;
    assert_eq!(live, vec![hex(&world.state_hash()), hex(&reputation.state_hash())], "equal to a fold from seq 1");
}
