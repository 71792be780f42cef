//! The embedded backend of the [`Log`] trait: the RocksDB WAL in a local
//! directory, one writing process, zero setup.
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

use crate::api::{AppendRequest, Appended, GroupRequest, Head, Log};
use crate::error::{Error, Result};
use crate::schema::Envelope;
use crate::wal::{Durable, Pending, Store, StoreOptions, Syncer, Versions, WalSubscription, Writer};

#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// fsync the WAL before acknowledging an append. On by default; off
    /// trades the last moments of acknowledged writes on power loss (not on
    /// a process crash) for throughput.
    pub sync: bool,
    pub create_if_missing: bool,
    /// Most events one group commit writes.
    pub max_group_events: usize,
    /// Most appends waiting for the writer; beyond it appenders wait.
    pub queue_capacity: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options { sync: true, create_if_missing: true, max_group_events: 8192, queue_capacity: 16_384 }
    }
}

/// The embedded log. Dropping it finishes queued appends, stops the writer
/// and closes the store (subscriptions still open keep the store open).
pub struct EmbeddedLog {
    store: Arc<Store>,
    queue: Option<mpsc::Sender<Pending>>,
    durable: Arc<Durable>,
    versions: Arc<Versions>,
    /// The writer, then the syncer (when `sync` is on): stopped in that order.
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for EmbeddedLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedLog").field("path", &self.store.path()).finish_non_exhaustive()
    }
}

impl EmbeddedLog {
    pub fn open(path: &Path, options: Options) -> Result<EmbeddedLog> {
        let store = Arc::new(Store::open(path, StoreOptions { create_if_missing: options.create_if_missing })?);
        let head = store.head()?;
        let durable = Arc::new(Durable::new(head));
        let (queue_tx, queue_rx) = mpsc::channel(options.queue_capacity.max(1));
        let spawn = |name: &str, run: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(run)
                .map_err(|e| Error::Poisoned { reason: format!("cannot start the {name} thread: {e}") })
        };
        let mut threads = Vec::new();
        let syncer = if options.sync {
            let (written_tx, written_rx) = std::sync::mpsc::channel();
            let syncer = Syncer { store: store.clone(), durable: durable.clone() };
            threads.push(spawn("agentlog-syncer", Box::new(move || syncer.run(written_rx)))?);
            Some(written_tx)
        } else {
            None
        };
        let versions = Arc::new(Versions::default());
        let writer = Writer {
            store: store.clone(),
            head,
            max_group_events: options.max_group_events.max(1),
            durable: durable.clone(),
            versions: versions.clone(),
            syncer,
        };
        threads.insert(0, spawn("agentlog-writer", Box::new(move || writer.run(queue_rx)))?);
        Ok(EmbeddedLog { store, queue: Some(queue_tx), durable, versions, threads })
    }

    /// The store underneath, for reads that are not part of the `Log` trait.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Forces every acknowledged append to disk (useful with `sync` off).
    pub fn sync(&self) -> Result<()> {
        self.store.sync_wal()
    }

    /// Hands a validated group to the writer thread and waits for its result.
    async fn write(&self, request: GroupRequest) -> Result<Vec<Appended>> {
        self.durable.check()?;
        let queue = self.queue.as_ref().ok_or(Error::Closed)?;
        let (reply, result) = oneshot::channel();
        queue.send(Pending { request, reply }).await.map_err(|_| Error::Closed)?;
        result.await.map_err(|_| Error::Closed)?
    }
}

impl Drop for EmbeddedLog {
    fn drop(&mut self) {
        // Closing the queue stops the writer, which drops the syncer's
        // channel and so stops the syncer once it has acknowledged the rest.
        drop(self.queue.take());
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        // Subscriptions deliver what was committed, then end.
        self.durable.close();
    }
}

impl Log for EmbeddedLog {
    type Subscription = WalSubscription;

    async fn append(&self, request: AppendRequest) -> Result<Appended> {
        request.validate()?;
        let mut results = self.write(request.into()).await?;
        Ok(results.pop().expect("an append is a group of one"))
    }

    async fn append_group(&self, group: GroupRequest) -> Result<Vec<Appended>> {
        group.validate()?;
        self.write(group).await
    }

    async fn read(&self, from_seq: u64, max: usize) -> Result<Vec<Envelope>> {
        crate::wal::read(&self.store, &self.durable, from_seq, max)
    }

    async fn read_stream(&self, stream: &str, from_version: u64, max: usize) -> Result<Vec<Envelope>> {
        self.store.read_stream(stream, from_version, max)
    }

    async fn stream_version(&self, stream: &str) -> Result<u64> {
        self.store.stream_version(stream)
    }

    fn known_version(&self, stream: &str) -> Option<u64> {
        self.versions.get_or_read(stream, || self.store.stream_version(stream)).ok()
    }

    async fn idempotent_result(&self, key: &str) -> Result<Option<Appended>> {
        self.store.idempotent_result(key)
    }

    async fn head(&self) -> Result<Head> {
        Ok(self.durable.head())
    }

    fn subscribe(&self, from_seq: u64) -> Result<WalSubscription> {
        Ok(WalSubscription::new(self.store.clone(), from_seq, self.durable.clone()))
    }
}

#[cfg(test)]
mod conformance {
    use super::{EmbeddedLog, Options};

    async fn fresh() -> (EmbeddedLog, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temporary directory");
        let log = EmbeddedLog::open(dir.path(), Options::default()).expect("open a fresh log");
        (log, dir)
    }

    agentlog_core::log_conformance_tests!(fresh());

    mod lifecycle {
        use crate::{EmbeddedLog, Error, ExpectedVersion, Log, Options, Subscription};
        use agentlog_core::testing::request;

        #[tokio::test]
        async fn closing_the_log_ends_subscriptions_after_every_committed_event() {
            for sync in [true, false] {
                let dir = tempfile::tempdir().unwrap();
                let log = EmbeddedLog::open(dir.path(), Options { sync, ..Options::default() }).unwrap();
                let mut subscription = log.subscribe(1).unwrap();
                for i in 0..3 {
                    log.append(request("task/a", ExpectedVersion::Any, 1, i)).await.unwrap();
                }
                drop(log);
                for seq in 1..=3 {
                    assert_eq!(subscription.next().await.unwrap().seq, seq);
                }
                assert!(matches!(subscription.next().await, Err(Error::Closed)));
            }
        }

        #[tokio::test]
        async fn a_directory_with_other_files_is_not_taken_over() {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
            let err = EmbeddedLog::open(dir.path(), Options::default()).unwrap_err();
            assert!(err.to_string().contains("holds other files"), "{err}");
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "nothing was written there");
        }
    }
}
