//! agentlog's projections: pure folds of the log into views (the world
//! model, reputation), the worker that keeps them current with a checkpoint
//! written atomically with their state, and the queries they answer.
pub mod error;
pub mod live;
pub mod matcher;
pub mod projection;
pub mod query;
pub mod reputation;
#[cfg(feature = "nats")]
pub mod service;
pub mod store;
pub mod ticker;
pub mod worker;
pub mod world;

pub use error::{Error, Result};
pub use live::{Checkpoint, Live, Runner};
pub use matcher::{Candidate, Recommendation, recommend};
pub use projection::{Projection, canonical_bytes, state_hash};
pub use reputation::{AgentSummary, Reputation, StatsSummary};
pub use store::ProjectionStore;
pub use worker::{Status, Views, follow, rebuild};
pub use world::WorldModel;
