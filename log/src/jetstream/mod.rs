//! The JetStream backend of the [`Log`] trait, with its RocksDB mirror.
//!
//! Events are published to one JetStream stream, one subject per aggregate
//! (`agentlog.evt.<kind>.<id>`), with optimistic concurrency on that subject
//! (`Nats-Expected-Last-Subject-Sequence`). JetStream assigns the sequence.
//! A mirror task follows the stream in order into a local WAL (the same
//! layout as the embedded log), computing the hash chain and the idempotency
//! table; reads, the head and subscriptions come from the mirror. An append
//! returns once the mirror has it, so a node reads its own writes.
mod mirror;
mod publish;
mod reader;

pub use reader::{Following, StreamReader};

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, stream};

use crate::api::{AppendRequest, Appended, GroupRequest, Head, Log};
use crate::codec::MAX_EVENT_BYTES;
use crate::error::{Error, Result};
use crate::schema::Envelope;
use crate::wal::{Durable, Follower, Last, Store, StoreOptions, Versions, WalSubscription};

/// Every subject of the event stream starts with this.
pub const SUBJECT_PREFIX: &str = "agentlog.evt";

/// The subject of a stream (`task/t1` → `agentlog.evt.task.t1`). Stream
/// names are validated (`api::is_valid_stream`), so each part is one token.
pub fn subject(stream: &str) -> String {
    let (kind, id) = stream.split_once('/').unwrap_or((stream, ""));
    format!("{SUBJECT_PREFIX}.{kind}.{id}")
}

#[derive(Clone, Debug)]
pub struct Options {
    pub url: String,
    /// The JetStream stream's name.
    pub stream: String,
    /// 1, or 3 for a replicated stream on a cluster.
    pub replicas: usize,
    /// How long JetStream remembers `Nats-Msg-Id`s; beyond it the mirror's
    /// idempotency table answers.
    pub duplicate_window: Duration,
    /// The mirror's data directory.
    pub mirror_dir: PathBuf,
    /// fsync the mirror's writes. Off by default: JetStream holds every
    /// event, and a mirror that lost its unsynced tail (power loss) follows
    /// the stream again from its durable head.
    pub mirror_sync: bool,
    /// How long an append waits for the mirror to have it.
    pub catch_up_timeout: Duration,
    pub auth: Auth,
    /// Create the stream when the server has none. Off for a mirror that
    /// must follow an existing stream (a rebuild): a wrong URL, account or
    /// name then fails instead of mirroring a new, empty stream.
    pub create_stream: bool,
}

impl Options {
    pub fn new(url: impl Into<String>, mirror_dir: impl Into<PathBuf>) -> Self {
        Options {
            url: url.into(),
            stream: "AGENTLOG".into(),
            replicas: 1,
            duplicate_window: Duration::from_secs(120),
            mirror_dir: mirror_dir.into(),
            mirror_sync: false,
            catch_up_timeout: Duration::from_secs(30),
            auth: Auth::default(),
            create_stream: true,
        }
    }
}

/// How to authenticate to NATS and secure the connection. Every field is
/// optional; credentials may also ride in the URL.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Auth {
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    /// A file holding an nkey seed (`SU...`).
    pub nkey_seed_file: Option<PathBuf>,
    /// A `.creds` file (JWT and nkey seed).
    pub credentials_file: Option<PathBuf>,
    /// CA certificates to trust for the server's TLS certificate.
    pub tls_ca_file: Option<PathBuf>,
    /// A client certificate and its key, for mutual TLS.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// Refuse a connection without TLS.
    pub tls_required: bool,
}

impl Auth {
    async fn options(&self) -> Result<async_nats::ConnectOptions> {
        let mut options = async_nats::ConnectOptions::new();
        if let (Some(user), Some(password)) = (&self.user, &self.password) {
            options = options.user_and_password(user.clone(), password.clone());
        }
        if let Some(token) = &self.token {
            options = options.token(token.clone());
        }
        if let Some(path) = &self.nkey_seed_file {
            let seed = std::fs::read_to_string(path).map_err(|e| Error::Nats {
                operation: "reading the nkey seed file",
                message: format!("{}: {e}", path.display()),
            })?;
            options = options.nkey(seed.trim().to_owned());
        }
        if let Some(path) = &self.credentials_file {
            options = options.credentials_file(path).await.map_err(|e| Error::Nats {
                operation: "reading the credentials file",
                message: format!("{}: {e}", path.display()),
            })?;
        }
        if let Some(path) = &self.tls_ca_file {
            options = options.add_root_certificates(path.clone());
        }
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => options = options.add_client_certificate(cert.clone(), key.clone()),
            (None, None) => {}
            _ => {
                return Err(Error::Nats {
                    operation: "configuring TLS",
                    message: "a client certificate needs both tls-cert-file and tls-key-file".into(),
                });
            }
        }
        Ok(options.require_tls(self.tls_required))
    }
}

/// Connects to NATS without other credentials than the URL's.
pub async fn connect(url: &str) -> Result<async_nats::Client> {
    connect_with(url, &Auth::default()).await
}

/// Connects to NATS. Credentials may ride in the URL:
/// `nats://user:password@host:port`, or `nats://token@host:port`
/// (async-nats itself ignores them there); `auth` adds the rest.
pub async fn connect_with(url: &str, auth: &Auth) -> Result<async_nats::Client> {
    let (scheme, rest) = url.split_once("://").unwrap_or(("nats", url));
    let options = auth.options().await?;
    let (options, address) = match rest.rsplit_once('@') {
        Some((credentials, host)) => {
            let options = match credentials.split_once(':') {
                Some((user, password)) => options.user_and_password(user.to_owned(), password.to_owned()),
                None => options.token(credentials.to_owned()),
            };
            (options, format!("{scheme}://{host}"))
        }
        None => (options, url.to_owned()),
    };
    options.connect(address.as_str()).await.map_err(|e| nats("connecting")(&e))
}

pub(crate) fn nats(operation: &'static str) -> impl FnOnce(&dyn std::fmt::Display) -> Error {
    move |e| Error::Nats { operation, message: e.to_string() }
}

pub struct JetStreamLog {
    client: async_nats::Client,
    js: jetstream::Context,
    stream: stream::Stream,
    store: Arc<Store>,
    durable: Arc<Durable>,
    /// The mirror's follower's stream versions and their seqs
    /// ([`Log::local_version`], and the expected subject sequence of an
    /// append on a version the mirror just wrote).
    versions: Arc<Versions<Last>>,
    mirror: tokio::task::JoinHandle<()>,
    catch_up_timeout: Duration,
    /// This node's share of the atomic batches the server holds open.
    batches: tokio::sync::Semaphore,
}

impl std::fmt::Debug for JetStreamLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamLog").field("mirror", &self.store.path()).finish_non_exhaustive()
    }
}

impl Drop for JetStreamLog {
    fn drop(&mut self) {
        self.mirror.abort();
        self.durable.close();
    }
}

/// The stream configuration agentlog needs; `problems` names what an
/// existing stream gets wrong.
fn wanted_config(options: &Options) -> stream::Config {
    stream::Config {
        name: options.stream.clone(),
        subjects: vec![format!("{SUBJECT_PREFIX}.>")],
        storage: stream::StorageType::File,
        num_replicas: options.replicas,
        deny_delete: true,
        deny_purge: true,
        duplicate_window: options.duplicate_window,
        max_message_size: i32::try_from(MAX_EVENT_BYTES).unwrap_or(i32::MAX),
        compression: Some(stream::Compression::S2),
        allow_atomic_publish: true,
        allow_direct: true,
        ..Default::default()
    }
}

fn problems(found: &stream::Config, wanted: &stream::Config) -> Vec<String> {
    let mut problems = Vec::new();
    if !found.subjects.iter().any(|s| s == &wanted.subjects[0]) {
        problems.push(format!("subjects {:?} do not include {}", found.subjects, wanted.subjects[0]));
    }
    if found.storage != stream::StorageType::File {
        problems.push("storage is not file".into());
    }
    if !found.deny_delete || !found.deny_purge {
        problems.push("deleting or purging messages is allowed (the log must be append-only)".into());
    }
    if !found.allow_atomic_publish {
        problems.push("atomic batch publish is off".into());
    }
    if !found.allow_direct {
        problems.push("direct get is off".into());
    }
    if found.max_age != Duration::ZERO || found.max_messages > 0 || found.max_bytes > 0 {
        problems.push("limits would drop messages before they are archived".into());
    }
    problems
}

impl JetStreamLog {
    /// Connects, creates the stream or checks the existing one, opens the
    /// mirror and starts following the stream.
    pub async fn open(options: Options) -> Result<JetStreamLog> {
        let client = connect_with(&options.url, &options.auth).await?;
        let js = jetstream::new(client.clone());
        let wanted = wanted_config(&options);
        let stream = if options.create_stream {
            js.get_or_create_stream(wanted.clone()).await.map_err(|e| nats("creating the stream")(&e))?
        } else {
            js.get_stream(&options.stream).await.map_err(|e| match e.kind() {
                jetstream::context::GetStreamErrorKind::JetStream(j)
                    if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
                {
                    Error::NoStream { stream: options.stream.clone() }
                }
                _ => nats("opening the stream")(&e),
            })?
        };
        let problems = problems(&stream.cached_info().config, &wanted);
        if !problems.is_empty() {
            return Err(Error::UnsafeStream { stream: options.stream.clone(), problems: problems.join("; ") });
        }
        let store = Arc::new(Store::open(&options.mirror_dir, StoreOptions::default())?);
        let follower = Follower::new(store.clone(), options.mirror_sync)?;
        let durable = Arc::new(Durable::new(follower.head()));
        let versions = follower.versions();
        let mirror = tokio::spawn(mirror::run(stream.clone(), follower, durable.clone()));
        Ok(JetStreamLog {
            client,
            js,
            stream,
            store,
            durable,
            versions,
            mirror,
            catch_up_timeout: options.catch_up_timeout,
            batches: tokio::sync::Semaphore::new(publish::MAX_BATCHES_IN_FLIGHT),
        })
    }

    /// Stops the mirror and waits until it has let go of the store (its
    /// RocksDB lock with it), so the directory can be opened again at once.
    pub async fn close(mut self) {
        self.mirror.abort();
        let _ = (&mut self.mirror).await;
        self.durable.close();
    }

    /// The mirror's durable head and fail-stop state: a supervisor waits on
    /// [`Durable::ended_wait`] to learn that the mirror stopped for good.
    pub fn durable(&self) -> &Arc<Durable> {
        &self.durable
    }

    /// Whether the NATS connection is up (the client reconnects by itself
    /// while it is not).
    pub fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// The mirror's store, for reads outside the `Log` trait.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    fn check_poison(&self) -> Result<()> {
        self.durable.check()
    }

    /// The last sequence JetStream holds (what the mirror follows).
    pub async fn source_last_seq(&self) -> Result<u64> {
        let mut stream = self.stream.clone();
        let info = stream.info().await.map_err(|e| nats("reading the stream's state")(&e))?;
        Ok(info.state.last_sequence)
    }

    /// Waits until the mirror has the stream's last event in JetStream.
    async fn caught_up_with(&self, stream: &str) -> Result<()> {
        if !crate::api::is_valid_stream(stream) {
            return Ok(()); // no such stream can exist; the mirror answers "none"
        }
        let (_, subject_seq) = self.last_on_subject(&subject(stream)).await?;
        self.caught_up(subject_seq).await.map(|_| ())
    }

    /// Waits until the mirror has every event up to `seq`.
    pub async fn caught_up(&self, seq: u64) -> Result<Head> {
        let mut head = self.durable.watch();
        let durable = &self.durable;
        let waited = tokio::time::timeout(
            self.catch_up_timeout,
            head.wait_for(|h| h.last_seq >= seq || durable.ended().is_some()),
        )
        .await;
        self.check_poison()?;
        match waited {
            Ok(Ok(head)) => Ok(*head),
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => Err(Error::Nats {
                operation: "waiting for the mirror",
                message: format!("it did not reach seq {seq} within {:?}", self.catch_up_timeout),
            }),
        }
    }
}

impl Log for JetStreamLog {
    type Subscription = WalSubscription;

    async fn append(&self, request: AppendRequest) -> Result<Appended> {
        request.validate()?;
        let mut results = self.append_published(request.into()).await?;
        Ok(results.pop().expect("an append is a group of one"))
    }

    async fn append_group(&self, group: GroupRequest) -> Result<Vec<Appended>> {
        group.validate()?;
        self.append_published(group).await
    }

    async fn read(&self, from_seq: u64, max: usize) -> Result<Vec<Envelope>> {
        crate::wal::read(&self.store, &self.durable, from_seq, max)
    }

    /// Reads the mirror after it has caught up with the stream's last event
    /// in JetStream, so a decision on one node sees what another node just
    /// appended to that aggregate.
    async fn read_stream(&self, stream: &str, from_version: u64, max: usize) -> Result<Vec<Envelope>> {
        self.caught_up_with(stream).await?;
        self.store.read_stream(stream, from_version, max)
    }

    async fn read_stream_local(&self, stream: &str, from_version: u64, max: usize) -> Result<Vec<Envelope>> {
        self.check_poison()?;
        self.store.read_stream(stream, from_version, max)
    }

    /// What the mirror's follower last wrote of the stream.
    fn local_version(&self, stream: &str) -> Option<u64> {
        self.versions.get_or_read(stream, || self.store.stream_last(stream)).ok().map(|(version, _)| version)
    }

    async fn stream_version(&self, stream: &str) -> Result<u64> {
        self.caught_up_with(stream).await?;
        self.store.stream_version(stream)
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
