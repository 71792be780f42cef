//! The configuration of `agentlog serve`: one TOML file, then `AGENTLOG_*`
//! environment variables, then command-line flags, each overriding the one
//! before. Keys are kebab-case; a key the file does not know is rejected with
//! its name. Every key is documented here and in docs/CONFIG.md.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// The node's data directory: its RocksDB mirror of the stream.
    pub data: PathBuf,
    /// Where to serve /health, /ready and /metrics, or `off`.
    pub http: String,
    pub nats: Nats,
    pub stream: Stream,
    pub mirror: Mirror,
    pub projections: Projections,
    pub ticker: Ticker,
    pub archive: Archive,
    pub shutdown: Shutdown,
    pub auth: Auth,
}

/// Who may send commands (docs/PROTOCOL.md, "Signed commands").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Auth {
    /// `signed` (the default): every command must be signed by a known
    /// principal and is held to its roles. `open`: for development only;
    /// commands act as the `Agentlog-Actor` they name, unchecked.
    pub mode: AuthMode,
    /// How far a request's timestamp may be from this node's clock, either
    /// way. `stream.duplicate-window-seconds` must be at least twice it.
    pub skew_seconds: u64,
    /// The bootstrap admins: known without an event, they register the
    /// other principals. Not settable from the environment.
    pub admins: Vec<Admin>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMode {
    Signed,
    Open,
}

/// One bootstrap admin.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Admin {
    /// Its key id (a principal id).
    pub id: String,
    /// Its ed25519 public key, base64, as `agentlog keygen` prints it.
    pub public_key: String,
}

impl Default for Auth {
    fn default() -> Self {
        Auth { mode: AuthMode::Signed, skew_seconds: agentlog_commands::auth::DEFAULT_SKEW_SECONDS, admins: Vec::new() }
    }
}

impl Auth {
    /// What the handler requires, `None` in open mode; a bad admin entry is
    /// named.
    pub fn required(&self) -> Result<Option<agentlog_commands::Auth>> {
        if self.mode == AuthMode::Open {
            return Ok(None);
        }
        let mut admins = Vec::new();
        for admin in &self.admins {
            let bad = |reason: String| Error::Config { reason: format!("auth.admins {:?}: {reason}", admin.id) };
            if !agentlog_log::api::is_valid_id(&admin.id) {
                return Err(bad("the id must be 1 to 128 ASCII letters, digits, '_', '-', ':' or '@'".into()));
            }
            let key = agentlog_commands::auth::public_key_from_base64("public-key", &admin.public_key)
                .map_err(|e| bad(e.message))?;
            let roles = [agentlog_commands::Role::Admin];
            admins.push(agentlog_commands::Principal {
                public_key: key,
                ..agentlog_commands::Principal::in_process(&admin.id, &roles)
            });
        }
        Ok(Some(agentlog_commands::Auth::new(admins, self.skew_seconds)))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Nats {
    /// The server, or one member of the cluster (the others are learned).
    pub url: String,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    /// A file holding an nkey seed.
    pub nkey_seed_file: Option<PathBuf>,
    /// A `.creds` file (JWT and nkey seed).
    pub credentials_file: Option<PathBuf>,
    /// CA certificates to trust for the server's TLS certificate.
    pub tls_ca_file: Option<PathBuf>,
    /// A client certificate and its key, for mutual TLS.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// Refuse to connect without TLS.
    pub tls_required: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Stream {
    /// The JetStream stream's name.
    pub name: String,
    /// Replicas when this node creates the stream: 1, or 3 on a cluster.
    pub replicas: usize,
    /// How long JetStream remembers idempotency keys (`Nats-Msg-Id`);
    /// beyond it the mirror's idempotency table answers.
    pub duplicate_window_seconds: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Mirror {
    /// fsync each batch the mirror writes (JetStream holds every event, and
    /// a mirror that lost its unsynced tail follows the stream again).
    pub sync: bool,
    /// How long an append waits for this node's mirror to have it.
    pub catch_up_timeout_seconds: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Projections {
    /// Save the views' checkpoint once this many events are unsaved.
    pub checkpoint_events: u64,
    /// ... or this long after the first unsaved event, whichever comes
    /// first (and when the node stops). Queries answer from memory either
    /// way; a restart folds again from the last checkpoint.
    pub checkpoint_interval_ms: u64,
    /// Settled entities each family (tasks, sessions, …) keeps in memory;
    /// the rest are read from the projection store when asked for.
    pub cache_entities: usize,
}

impl Default for Projections {
    fn default() -> Self {
        let cadence = agentlog_projections::Cadence::default();
        Projections {
            checkpoint_events: cadence.events,
            checkpoint_interval_ms: u64::try_from(cadence.interval.as_millis()).unwrap_or(u64::MAX),
            cache_entities: agentlog_projections::store::DEFAULT_CACHE_ENTITIES,
        }
    }
}

impl Projections {
    pub fn cadence(&self) -> agentlog_projections::Cadence {
        agentlog_projections::Cadence {
            events: self.checkpoint_events.max(1),
            interval: std::time::Duration::from_millis(self.checkpoint_interval_ms),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Ticker {
    /// How often the ticker looks for sessions and leases whose deadline
    /// passed; 0 turns it off on this node.
    pub interval_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Archive {
    /// Run the nightly archive on this node.
    pub enabled: bool,
    /// The archive's root; `<data>/archive` when empty.
    pub dir: PathBuf,
    /// When, UTC (`HH:MM`): every closed day not archived yet is written.
    /// Also runs at startup, to catch up on nights the node was down.
    pub at: String,
}

impl Default for Archive {
    fn default() -> Self {
        Archive { enabled: true, dir: PathBuf::new(), at: "00:05".into() }
    }
}

impl Archive {
    pub fn root(&self, data: &Path) -> PathBuf {
        if self.dir.as_os_str().is_empty() { data.join("archive") } else { self.dir.clone() }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Shutdown {
    /// How long the node may take to stop (on SIGTERM, or after a component
    /// failed): commands and queries in flight are answered and views
    /// saved within it; past it the node exits anyway, non-zero.
    pub drain_timeout_seconds: u64,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown { drain_timeout_seconds: 10 }
    }
}

impl Default for Ticker {
    fn default() -> Self {
        Ticker { interval_ms: 1000 }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data: "agentlog-data".into(),
            http: "127.0.0.1:9464".into(),
            nats: Nats::default(),
            stream: Stream::default(),
            mirror: Mirror::default(),
            projections: Projections::default(),
            ticker: Ticker::default(),
            archive: Archive::default(),
            shutdown: Shutdown::default(),
            auth: Auth::default(),
        }
    }
}

impl Default for Nats {
    fn default() -> Self {
        Nats {
            url: "nats://127.0.0.1:4222".into(),
            user: None,
            password: None,
            token: None,
            nkey_seed_file: None,
            credentials_file: None,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_required: false,
        }
    }
}

impl Default for Stream {
    fn default() -> Self {
        Stream { name: "AGENTLOG".into(), replicas: 1, duplicate_window_seconds: 120 }
    }
}

impl Default for Mirror {
    fn default() -> Self {
        Mirror { sync: false, catch_up_timeout_seconds: 30 }
    }
}

/// Every key, dotted; its environment variable is `AGENTLOG_` and the key
/// in upper case with `.` and `-` as `_` (`nats.url` → `AGENTLOG_NATS_URL`).
pub const KEYS: [&str; 27] = [
    "data",
    "http",
    "nats.url",
    "nats.user",
    "nats.password",
    "nats.token",
    "nats.nkey-seed-file",
    "nats.credentials-file",
    "nats.tls-ca-file",
    "nats.tls-cert-file",
    "nats.tls-key-file",
    "nats.tls-required",
    "stream.name",
    "stream.replicas",
    "stream.duplicate-window-seconds",
    "mirror.sync",
    "mirror.catch-up-timeout-seconds",
    "projections.checkpoint-events",
    "projections.checkpoint-interval-ms",
    "projections.cache-entities",
    "ticker.interval-ms",
    "archive.enabled",
    "archive.dir",
    "archive.at",
    "shutdown.drain-timeout-seconds",
    "auth.mode",
    "auth.skew-seconds",
];

pub fn env_name(key: &str) -> String {
    format!("AGENTLOG_{}", key.to_uppercase().replace(['.', '-'], "_"))
}

/// An environment value as TOML: a number or a boolean when it reads as
/// one, otherwise a string.
fn env_value(raw: &str) -> toml::Value {
    if let Ok(n) = raw.parse::<i64>() {
        toml::Value::Integer(n)
    } else if let Ok(b) = raw.parse::<bool>() {
        toml::Value::Boolean(b)
    } else {
        toml::Value::String(raw.to_owned())
    }
}

impl Config {
    /// Defaults, then `file`, then the environment (`env` looks variables up).
    pub fn load(file: Option<&Path>, env: impl Fn(&str) -> Option<String>) -> Result<Config> {
        let bad = |reason: String| Error::Config { reason };
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| bad(format!("cannot read the configuration file {}: {e}", path.display())))?;
                // The file alone first, so errors point at its own lines.
                toml::from_str::<Config>(&text)
                    .map_err(|e| bad(format!("invalid configuration in {}: {e}", path.display())))?;
                text.parse::<toml::Table>().map_err(|e| bad(format!("{} is not valid TOML: {e}", path.display())))?
            }
            None => toml::Table::new(),
        };
        for key in KEYS {
            let Some(raw) = env(&env_name(key)) else { continue };
            let mut at = &mut table;
            let mut parts = key.split('.').peekable();
            while let Some(part) = parts.next() {
                if parts.peek().is_none() {
                    at.insert(part.to_owned(), env_value(&raw));
                } else {
                    let entry = at.entry(part.to_owned()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
                    let Some(next) = entry.as_table_mut() else {
                        return Err(bad(format!(
                            "{part} in the configuration file must be a table, because {} sets {key}",
                            env_name(key)
                        )));
                    };
                    at = next;
                }
            }
        }
        // Then with the environment's values, shown by key when one is wrong.
        let merged = toml::to_string(&table).expect("a TOML table prints as TOML");
        let config: Config = toml::from_str(&merged)
            .map_err(|e| bad(format!("invalid configuration after the AGENTLOG_* environment variables: {e}")))?;
        config.archive.at.parse::<agentlog_archive::AtTime>().map_err(|e| bad(format!("archive.at: {e}")))?;
        if !matches!(config.stream.replicas, 1 | 3) {
            return Err(bad(format!("stream.replicas is {}; use 1, or 3 on a NATS cluster", config.stream.replicas)));
        }
        if config.auth.mode == AuthMode::Signed {
            if config.auth.skew_seconds == 0 {
                return Err(bad("auth.skew-seconds must be at least 1".into()));
            }
            if config.stream.duplicate_window_seconds < config.auth.skew_seconds.saturating_mul(2) {
                return Err(bad(format!(
                    "stream.duplicate-window-seconds ({}) must be at least twice auth.skew-seconds ({}): JetStream's dedupe window is what refuses a nonce two nodes race on",
                    config.stream.duplicate_window_seconds, config.auth.skew_seconds
                )));
            }
            config.auth.required()?;
        }
        if config.shutdown.drain_timeout_seconds == 0 {
            return Err(bad("shutdown.drain-timeout-seconds must be at least 1".into()));
        }
        Ok(config)
    }

    pub fn auth(&self) -> agentlog_log::jetstream::Auth {
        let n = &self.nats;
        agentlog_log::jetstream::Auth {
            user: n.user.clone(),
            password: n.password.clone(),
            token: n.token.clone(),
            nkey_seed_file: n.nkey_seed_file.clone(),
            credentials_file: n.credentials_file.clone(),
            tls_ca_file: n.tls_ca_file.clone(),
            tls_cert_file: n.tls_cert_file.clone(),
            tls_key_file: n.tls_key_file.clone(),
            tls_required: n.tls_required,
        }
    }
}
