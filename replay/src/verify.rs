//! `replay verify`: the history against what was derived and kept from it.
//!
//! * Each view's checkpoint in `<data>/projections`: both views are folded
//!   from the history to the checkpoint's position and their state hashes
//!   compared; on a mismatch, every entity of the folded view is compared
//!   with what the store holds, field by field, and the history is folded
//!   once more to find, for each differing field, the event that last set
//!   it: the earliest of those is the first divergent event, the first
//!   whose effect the checkpoint does not show.
//! * The archive against the WAL, where both hold events: their stored
//!   bytes, seq by seq. The first seq where they differ is named with both
//!   events' differing fields. (Opening a history only checks the seam,
//!   and reads each seq from one of them.)
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use agentlog_core::chain::to_hex;
use agentlog_core::{Envelope, EventSource};
use agentlog_projections::{Live, Projection, ProjectionStore, Reputation, Runner, WorldModel};
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::point::Entity;
use crate::source::{History, PAGE};
use crate::trace::{EntityChange, FieldChange, field_changes, flatten, touched};

/// Differing entities listed per view at most.
const MAX_LISTED: usize = 20;

/// One view's checkpoint against the history.
#[derive(Debug)]
pub struct ViewCheck {
    pub name: &'static str,
    pub position: u64,
    pub live_hash: String,
    pub replayed_hash: String,
    /// When the hashes differ: the entities that differ (at most 20),
    /// `before` as the store holds them, `after` as replayed.
    pub differing: Vec<EntityChange>,
    /// How many entities differ in all.
    pub differing_count: usize,
    /// The earliest event that last set a differing field (of the listed
    /// entities) in the fold of the history; `None` when the views agree,
    /// or when no event set any of them (the checkpoint holds what no
    /// event made).
    pub first_divergent: Option<Envelope>,
}

impl ViewCheck {
    pub fn ok(&self) -> bool {
        self.live_hash == self.replayed_hash
    }
}

/// Where the archive and the WAL first hold different bytes for a seq.
#[derive(Debug)]
pub struct Divergence {
    pub seq: u64,
    pub archive: Envelope,
    pub wal: Envelope,
    /// The events' fields that differ (`before` the archive's).
    pub fields: Vec<FieldChange>,
}

/// The archive against the WAL over the seqs both hold.
#[derive(Debug)]
pub struct SourcesCheck {
    pub from: u64,
    pub to: u64,
    pub divergence: Option<Divergence>,
}

#[derive(Debug, Default)]
pub struct Verification {
    pub views: Vec<ViewCheck>,
    /// `None` when there is not both an archive and a WAL holding a seq in
    /// common.
    pub sources: Option<SourcesCheck>,
    /// Why the views were not compared, when they were not.
    pub views_skipped: Option<String>,
}

impl Verification {
    pub fn ok(&self) -> bool {
        self.views.iter().all(ViewCheck::ok) && self.sources.as_ref().is_none_or(|s| s.divergence.is_none())
    }
}

fn world_entities(world: &WorldModel) -> BTreeMap<Entity, Value> {
    let mut all = BTreeMap::new();
    for t in world.tasks() {
        all.insert(Entity::Task(t.task_id.clone()), json!(t));
    }
    for s in world.sessions() {
        all.insert(Entity::Session(s.session_id.clone()), json!(s));
    }
    for a in world.agents() {
        all.insert(Entity::Agent(a.agent_id.clone()), json!(a));
    }
    for b in world.budgets() {
        all.insert(Entity::Budget(b.budget_id.clone()), json!(b));
    }
    all
}

fn reputation_entities(reputation: &Reputation) -> BTreeMap<Entity, Value> {
    reputation.agents().map(|a| (Entity::Agent(a.agent_id.clone()), json!(a))).collect()
}

/// One entity as [`world_entities`] shows it.
fn world_entity(world: &WorldModel, entity: &Entity) -> Option<Value> {
    match entity {
        Entity::Task(id) => world.task(id).map(|t| json!(t)),
        Entity::Session(id) => world.session(id).map(|s| json!(s)),
        Entity::Agent(id) => world.agent(id).map(|a| json!(a)),
        Entity::Budget(id) => world.budget(id).map(|b| json!(b)),
    }
}

/// One entity as [`reputation_entities`] shows it.
fn reputation_entity(reputation: &Reputation, entity: &Entity) -> Option<Value> {
    match entity {
        Entity::Agent(id) => reputation.agent(id).map(|a| json!(a)),
        _ => None,
    }
}

/// How a view's entities are shown, all or one.
struct Shown<P> {
    all: fn(&P) -> BTreeMap<Entity, Value>,
    one: fn(&P, &Entity) -> Option<Value>,
}

/// Folds the history to `position` again and records, for each differing
/// field of `changes`, the event that last set it (into each change's
/// `events`); returns the earliest of them.
fn last_setters<P: Projection>(
    history: &History,
    one: fn(&P, &Entity) -> Option<Value>,
    changes: &mut [EntityChange],
    position: u64,
) -> Result<Option<u64>> {
    let watched: BTreeMap<Entity, BTreeSet<String>> =
        changes.iter().map(|c| (c.entity.clone(), c.fields.iter().map(|f| f.path.clone()).collect())).collect();
    let mut set_by: BTreeMap<Entity, BTreeMap<String, u64>> = BTreeMap::new();
    let mut live = Live::<P>::new();
    history.pages(1, position, &mut |page| {
        for event in &page {
            let touching: Vec<(&Entity, &BTreeSet<String>)> =
                touched(event).iter().filter_map(|e| watched.get_key_value(e)).collect();
            if touching.is_empty() {
                live.apply(event);
                continue;
            }
            let fields = |live: &Live<P>, entity: &Entity| one(&live.state, entity).as_ref().map(flatten);
            let before: Vec<_> = touching.iter().map(|(entity, _)| fields(&live, entity)).collect();
            live.apply(event);
            for ((entity, paths), before) in touching.iter().zip(before) {
                let after = fields(&live, entity);
                for path in *paths {
                    let value =
                        |state: &Option<BTreeMap<String, Value>>| state.as_ref().and_then(|s| s.get(path)).cloned();
                    if value(&before) != value(&after) {
                        set_by.entry((*entity).clone()).or_default().insert(path.clone(), event.seq);
                    }
                }
            }
        }
        Ok(std::ops::ControlFlow::Continue(()))
    })?;
    for change in changes.iter_mut() {
        let seqs: BTreeSet<u64> = set_by.get(&change.entity).into_iter().flat_map(|s| s.values().copied()).collect();
        change.events = seqs.into_iter().collect();
    }
    Ok(changes.iter().filter_map(|c| c.events.first().copied()).min())
}

/// The entities whose JSON differs between `kept` and `replayed`.
fn differing(kept: &BTreeMap<Entity, Value>, replayed: &BTreeMap<Entity, Value>) -> Vec<EntityChange> {
    let keys: BTreeSet<&Entity> = kept.keys().chain(replayed.keys()).collect();
    let mut changes = Vec::new();
    for entity in keys {
        let fields = field_changes(kept.get(entity), replayed.get(entity));
        if !fields.is_empty() {
            changes.push(EntityChange { entity: entity.clone(), fields, events: Vec::new() });
        }
    }
    changes
}

fn check_view<P: Projection>(
    history: &History,
    store: &ProjectionStore,
    shown: Shown<P>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Option<ViewCheck>> {
    let Some(checkpoint) = store.checkpoint(P::NAME)? else { return Ok(None) };
    let mut replayed = Live::<P>::new();
    let reached = agentlog_projections::rebuild(history, &mut [&mut replayed], checkpoint.position, progress)?;
    if reached != checkpoint.position {
        return Err(Error::PastHead { seq: checkpoint.position, head: reached });
    }
    let replayed_hash = to_hex(&replayed.state_hash());
    let mut check = ViewCheck {
        name: P::NAME,
        position: checkpoint.position,
        live_hash: checkpoint.state_hash,
        replayed_hash,
        differing: Vec::new(),
        differing_count: 0,
        first_divergent: None,
    };
    if !check.ok() {
        let kept: Live<P> = store.load()?;
        let mut all = differing(&(shown.all)(&kept.state), &(shown.all)(&replayed.state));
        check.differing_count = all.len();
        all.truncate(MAX_LISTED);
        if let Some(seq) = last_setters(history, shown.one, &mut all, checkpoint.position)? {
            check.first_divergent = history.read(seq, 1)?.pop();
        }
        check.differing = all;
    }
    Ok(Some(check))
}

/// Compares the archive's and the WAL's stored bytes over the seqs both
/// hold.
fn check_sources(data: &Path, archive: &Path, progress: &mut dyn FnMut(u64, u64)) -> Result<Option<SourcesCheck>> {
    let archived = History::open(None, Some(archive))?;
    // The WAL's own bytes, unchecked: a WAL changed mid-way breaks its own
    // chain after the change, and the point is to find the change.
    let wal = agentlog_log::wal::Store::open_read_only(data)?;
    let from = wal.pruned_through()?.map_or(1, |p| p.seq + 1);
    let to = archived.head()?.last_seq.min(wal.head()?.last_seq);
    if from > to {
        return Ok(None);
    }
    let mut next = from;
    while next <= to {
        let want = usize::try_from(to - next + 1).unwrap_or(PAGE).min(PAGE);
        let mut theirs = Vec::with_capacity(want);
        archived.for_each_stored(next, want, &mut |seq, bytes| {
            theirs.push((seq, bytes.to_vec()));
            Ok(())
        })?;
        let mut index = 0;
        let mut first_difference = None;
        EventSource::for_each_stored(&wal, next, want, &mut |seq, bytes| {
            if first_difference.is_none() && theirs.get(index).is_none_or(|(s, b)| *s != seq || b != bytes) {
                first_difference = Some(seq);
            }
            index += 1;
            Ok(())
        })?;
        if let Some(seq) = first_difference {
            let archive_event = archived.read(seq, 1)?.remove(0);
            let wal_event = EventSource::read(&wal, seq, 1)?.remove(0);
            let fields = field_changes(
                Some(&agentlog_core::json::envelope(&archive_event)),
                Some(&agentlog_core::json::envelope(&wal_event)),
            );
            let divergence = Divergence { seq, archive: archive_event, wal: wal_event, fields };
            return Ok(Some(SourcesCheck { from, to, divergence: Some(divergence) }));
        }
        next += want as u64;
        progress(next - 1, to);
    }
    Ok(Some(SourcesCheck { from, to, divergence: None }))
}

/// Verifies the history (the WAL at `data` and the archive at `archive`)
/// against the views' checkpoints in `<data>/projections` and the archive
/// against the WAL ([`Verification`]).
pub fn verify(data: Option<&Path>, archive: Option<&Path>, progress: &mut dyn FnMut(u64, u64)) -> Result<Verification> {
    let mut verification = Verification::default();
    if let (Some(data), Some(archive)) = (data, archive) {
        verification.sources = check_sources(data, archive, progress)?;
    }
    let history = match History::open(data, archive) {
        Ok(history) => history,
        // The archive and the WAL diverge where the seam is checked: that
        // divergence is the answer, and there is no one history to fold.
        Err(e) if verification.sources.as_ref().is_some_and(|s| s.divergence.is_some()) => {
            verification.views_skipped = Some(e.to_string());
            return Ok(verification);
        }
        Err(e) => return Err(e),
    };
    if let Some(data) = data
        && let Some(store) = ProjectionStore::open_read_only(&agentlog_projections::store::dir(data))?
    {
        if history.first_seq() > 1 {
            return Err(Error::NotFromStart { first: history.first_seq() });
        }
        let world = Shown { all: world_entities, one: world_entity };
        verification.views.extend(check_view::<WorldModel>(&history, &store, world, progress)?);
        let reputation = Shown { all: reputation_entities, one: reputation_entity };
        verification.views.extend(check_view::<Reputation>(&history, &store, reputation, progress)?);
    }
    Ok(verification)
}
