//! The ticker: turns deadlines that passed into commands. It reads the world
//! view for what may be due (live sessions past their heartbeat deadline,
//! claims whose lease ran out or whose session is gone), reads the time from
//! a `Clock`, and sends `expire_session` / `expire_lease` through the command
//! path, which decides again on the aggregates themselves: the view may lag,
//! and several nodes may tick at once, so a refusal that says "already done"
//! or "not due" is expected and ignored. The views never read the clock;
//! they only fold the `SessionExpired` and `TaskLeaseExpired` events this
//! sends, so a rebuild gives the state the live run had.
use std::time::Duration;

use agentlog_commands::command::{ExpireLease, ExpireSession};
use agentlog_commands::sim::{self, Expired};
use agentlog_commands::{Code, Command, Executor, Rejection, Request};
use agentlog_core::{Clock, EventSource, Kind, Timestamp};
use tokio::sync::watch;

use crate::views::Views;
use crate::world::WorldModel;

/// The actor the ticker's commands carry.
pub const ACTOR: &str = "ticker";

/// What the view says is due at some instant, in id order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Due {
    /// Live sessions whose heartbeat deadline passed.
    pub sessions: Vec<String>,
    /// Claimed tasks whose lease ran out, or whose session is not live.
    pub leases: Vec<String>,
}

impl Due {
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty() && self.leases.is_empty()
    }
}

/// What is due at `now`, by the view: read from its deadline indexes, so
/// a tick costs what is due, not what the world holds.
pub fn due(world: &WorldModel, now: Timestamp) -> Due {
    let now = now.as_nanos();
    Due { sessions: world.overdue_sessions(now), leases: world.overdue_leases(now) }
}

/// What one tick did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ticked {
    /// The sessions it expired, in the order it sent them.
    pub sessions_expired: Vec<String>,
    /// The claims it expired, in the order it sent them.
    pub leases_expired: Vec<String>,
    /// Refused as not due or already done (another node ticked first, or
    /// the view lagged a heartbeat or a release).
    pub skipped: u64,
}

/// Sends the commands for everything `due` names: sessions first, so the
/// leases they held are expired in the same tick. Stops at the first
/// platform failure (the next tick tries again).
pub async fn tick<E: Executor>(executor: &E, due: &Due) -> Result<Ticked, Rejection> {
    let mut ticked = Ticked::default();
    for session_id in &due.sessions {
        match executor
            .execute(Request::new(Command::ExpireSession(ExpireSession { session_id: session_id.clone() }), ACTOR))
            .await
        {
            Ok(_) => ticked.sessions_expired.push(session_id.clone()),
            Err(r) if expected(&r) => ticked.skipped += 1,
            Err(r) => return Err(r),
        }
    }
    for task_id in &due.leases {
        match executor
            .execute(Request::new(Command::ExpireLease(ExpireLease { task_id: task_id.clone() }), ACTOR))
            .await
        {
            Ok(_) => ticked.leases_expired.push(task_id.clone()),
            Err(r) if expected(&r) => ticked.skipped += 1,
            Err(r) => return Err(r),
        }
    }
    Ok(ticked)
}

/// Refusals a tick expects: the deadline is not due on the aggregate (the
/// view lagged), or the thing already ended.
fn expected(r: &Rejection) -> bool {
    r.kind == Kind::Conflict
        || matches!(r.code, Code::SessionLive | Code::SessionNotLive | Code::LeaseActive | Code::NotClaimed)
}

/// Ticks every `every` until `stop` turns true: what the world view says
/// is due at the clock's `now` is sent, and each tick's outcome handed to
/// `report` (a platform failure is retried on the next tick).
pub async fn run<E: Executor>(
    executor: &E,
    views: &Views,
    clock: &dyn Clock,
    every: Duration,
    mut stop: watch::Receiver<bool>,
    report: impl Fn(Result<Ticked, Rejection>),
) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let due = due(&views.world().state, clock.now());
        if !due.is_empty() {
            report(tick(executor, &due).await);
        }
    }
}

/// The ticker as the demo's workload asks it, once per simulated step: it
/// first folds everything `source` holds into views of its own, so what is
/// due is judged on the whole history so far (the same on every run), then
/// ticks through `executor`.
pub struct OnSource<'a, E> {
    executor: &'a E,
    source: &'a dyn EventSource,
    views: Views,
}

impl<E> std::fmt::Debug for OnSource<'_, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnSource").field("source", &self.source.location()).finish_non_exhaustive()
    }
}

impl<'a, E: Executor> OnSource<'a, E> {
    pub fn new(executor: &'a E, source: &'a dyn EventSource) -> Self {
        OnSource { executor, source, views: Views::default() }
    }
}

impl<E: Executor> sim::Ticker for OnSource<'_, E> {
    async fn tick(&self, now: Timestamp) -> Result<Expired, Rejection> {
        self.views.catch_up(self.source).map_err(|e| Rejection::new(Code::Unavailable, e.to_string()))?;
        let due = due(&self.views.world().state, now);
        let ticked = tick(self.executor, &due).await?;
        Ok(Expired { sessions: ticked.sessions_expired, leases: ticked.leases_expired })
    }
}
