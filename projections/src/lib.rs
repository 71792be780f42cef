//! agentlog's projections: pure folds of the log into views (the world
//! model, reputation), the ticker that turns passed deadlines into
//! commands, and the queries the views answer. They build on agentlog-core
//! alone; the worker that keeps them on disk, with a checkpoint written
//! atomically with their state, needs the `store` feature (RocksDB), and
//! the query service the `nats` feature.
pub mod entities;
pub mod error;
pub mod indexes;
pub mod live;
pub mod matcher;
pub mod projection;
pub mod query;
pub mod reputation;
#[cfg(feature = "nats")]
pub mod service;
#[cfg(feature = "store")]
pub mod store;
mod stored_keys;
pub mod ticker;
pub mod views;
#[cfg(feature = "store")]
pub mod worker;
pub mod world;

pub use error::{Error, Result};
pub use live::{Checkpoint, Live, Runner, Settled};
pub use matcher::{Candidate, Recommendation, recommend};
pub use projection::{Projection, state_hash, state_hash_from_scratch};
pub use reputation::{AgentSummary, Reputation, StatsSummary};
#[cfg(feature = "store")]
pub use store::ProjectionStore;
pub use views::{Status, Views, rebuild, rebuild_with};
#[cfg(feature = "store")]
pub use worker::{Cadence, follow};
pub use world::WorldModel;
