//! Where state came from: [`diff`] (what changed in the views between two
//! points, entity by entity and field by field, with the events that
//! touched each entity) and [`explain`] (each field of one entity with the
//! event that last set it and that event's causation chain back to the
//! command). Both fold the history with the projections' own folds and
//! look at the entities an event touches before and after it.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::ControlFlow;

use agentlog_core::{Envelope, EventSource};
use agentlog_projections::{Live, Reputation, Runner, WorldModel};
use serde_json::{Map, Value, json};

use crate::error::{Error, Result};
use crate::point::Entity;
use crate::source::History;

/// Causation links followed back from one event at most.
const MAX_CHAIN: usize = 64;

/// Both views, folded as far as `position`.
struct Views {
    world: Live<WorldModel>,
    reputation: Live<Reputation>,
}

impl Views {
    fn new() -> Views {
        Views { world: Live::new(), reputation: Live::new() }
    }

    fn apply(&mut self, event: &Envelope) {
        self.world.apply(event);
        self.reputation.apply(event);
    }

    /// The entity as the views hold it now (`None` when it does not exist).
    fn entity(&self, entity: &Entity) -> Option<Value> {
        let world = &self.world.state;
        match entity {
            Entity::Task(id) => world.task(id).map(|t| json!(t)),
            Entity::Session(id) => world.session(id).map(|s| json!(s)),
            Entity::Budget(id) => world.budget(id).map(|b| json!(b)),
            Entity::Agent(id) => {
                world.agent(id).map(|a| json!({ "agent": a, "reputation": self.reputation.state.agent(id) }))
            }
        }
    }
}

impl Entity {
    /// `task/ID`, `agent/ID`, `session/ID` or `budget/ID`.
    pub fn parse(text: &str) -> Result<Entity> {
        let bad = |reason: &str| Error::BadInput { what: "entity", text: text.to_owned(), reason: reason.to_owned() };
        let (kind, id) =
            text.split_once('/').ok_or_else(|| bad("write it as task/ID, agent/ID, session/ID or budget/ID"))?;
        if id.is_empty() {
            return Err(bad("the id is empty"));
        }
        Ok(match kind {
            "task" => Entity::Task(id.to_owned()),
            "agent" => Entity::Agent(id.to_owned()),
            "session" => Entity::Session(id.to_owned()),
            "budget" => Entity::Budget(id.to_owned()),
            _ => return Err(bad("the kind is task, agent, session or budget")),
        })
    }

    pub fn name(&self) -> String {
        match self {
            Entity::Task(id) => format!("task/{id}"),
            Entity::Agent(id) => format!("agent/{id}"),
            Entity::Session(id) => format!("session/{id}"),
            Entity::Budget(id) => format!("budget/{id}"),
        }
    }
}

/// The entities an event may change: its stream's, and those its body names.
pub(crate) fn touched(event: &Envelope) -> BTreeSet<Entity> {
    let mut entities = BTreeSet::new();
    if let Ok(stream) = Entity::parse(&event.stream) {
        entities.insert(stream);
    }
    if let Some(body) = &event.body {
        let refs = body.refs();
        if !refs.task_id.is_empty() {
            entities.insert(Entity::Task(refs.task_id.to_owned()));
        }
        if !refs.agent_id.is_empty() {
            entities.insert(Entity::Agent(refs.agent_id.to_owned()));
        }
        if !refs.session_id.is_empty() {
            entities.insert(Entity::Session(refs.session_id.to_owned()));
        }
    }
    entities
}

/// A JSON value flattened to `path → leaf` (objects by key, joined with
/// `.`; arrays and scalars are leaves).
pub(crate) fn flatten(value: &Value) -> BTreeMap<String, Value> {
    fn walk(prefix: &str, value: &Value, into: &mut BTreeMap<String, Value>) {
        match value {
            Value::Object(map) if !map.is_empty() => {
                for (key, v) in map {
                    let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                    walk(&path, v, into);
                }
            }
            leaf => {
                into.insert(prefix.to_owned(), leaf.clone());
            }
        }
    }
    let mut out = BTreeMap::new();
    if let Some(value) = Some(value).filter(|v| !v.is_null()) {
        walk("", value, &mut out);
    }
    out
}

/// The fields whose leaves differ between `before` and `after` (either
/// absent: every field of the other), in path order.
pub(crate) fn field_changes(before: Option<&Value>, after: Option<&Value>) -> Vec<FieldChange> {
    let (old, new) = (before.map(flatten).unwrap_or_default(), after.map(flatten).unwrap_or_default());
    let paths: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    paths
        .into_iter()
        .filter(|p| old.get(*p) != new.get(*p))
        .map(|p| FieldChange { path: p.clone(), before: old.get(p).cloned(), after: new.get(p).cloned() })
        .collect()
}

/// Calls `each` with every event from `from` to `through`, in order, and
/// the views just before it (which `each` may not change; they are folded
/// over the event after it returns).
fn fold(
    history: &History,
    views: &mut Views,
    from: u64,
    through: u64,
    each: &mut dyn FnMut(&Envelope, &Views, Step),
    progress: &mut dyn FnMut(u64, u64),
) -> Result<()> {
    history.pages(from, through, &mut |page| {
        for event in &page {
            each(event, views, Step::Before);
            views.apply(event);
            each(event, views, Step::After);
        }
        progress(page.last().map_or(through, |e| e.seq), through);
        Ok(ControlFlow::Continue(()))
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    Before,
    After,
}

/// One field that differs between two points.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldChange {
    pub path: String,
    /// `None`: the field did not exist.
    pub before: Option<Value>,
    pub after: Option<Value>,
}

/// One entity that changed between two points.
#[derive(Clone, Debug, PartialEq)]
pub struct EntityChange {
    pub entity: Entity,
    pub fields: Vec<FieldChange>,
    /// The events between the two points that touched it.
    pub events: Vec<u64>,
}

/// What changed in the views from just after `from` to just after `to`:
/// every entity the events between them touched whose state differs (or
/// only `only`), in entity order.
pub fn diff(
    history: &History,
    from: u64,
    to: u64,
    only: Option<&Entity>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Vec<EntityChange>> {
    if history.first_seq() > 1 {
        return Err(Error::NotFromStart { first: history.first_seq() });
    }
    let head = history.head()?.last_seq;
    for seq in [from, to] {
        if seq > head {
            return Err(Error::PastHead { seq, head });
        }
    }
    if from > to {
        return Err(Error::BadInput {
            what: "range",
            text: format!("--from {from} --to {to}"),
            reason: "--from must not be after --to".into(),
        });
    }
    let (mut world, mut reputation) = (Live::<WorldModel>::new(), Live::<Reputation>::new());
    agentlog_projections::rebuild(history, &mut [&mut world, &mut reputation], from, progress)?;
    let mut views = Views { world, reputation };
    // Each touched entity: its state at `from`, and the events that touched it.
    let mut seen: BTreeMap<Entity, (Option<Value>, Vec<u64>)> = BTreeMap::new();
    fold(
        history,
        &mut views,
        from + 1,
        to,
        &mut |event, views, step| {
            if step == Step::After {
                return;
            }
            for entity in touched(event) {
                if only.is_some_and(|o| *o != entity) {
                    continue;
                }
                let entry = seen.entry(entity).or_insert_with_key(|e| (views.entity(e), Vec::new()));
                entry.1.push(event.seq);
            }
        },
        progress,
    )?;
    let mut changes = Vec::new();
    for (entity, (before, events)) in seen {
        let fields = field_changes(before.as_ref(), views.entity(&entity).as_ref());
        if !fields.is_empty() {
            changes.push(EntityChange { entity, fields, events });
        }
    }
    Ok(changes)
}

/// Folds `history` through `head`, collecting the entities that events
/// after `after` touched, with those events.
fn fold_collecting(
    history: &History,
    after: u64,
    head: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(Views, BTreeMap<Entity, Vec<u64>>)> {
    let (mut world, mut reputation) = (Live::<WorldModel>::new(), Live::<Reputation>::new());
    agentlog_projections::rebuild(history, &mut [&mut world, &mut reputation], after.min(head), progress)?;
    let mut views = Views { world, reputation };
    let mut touched_after: BTreeMap<Entity, Vec<u64>> = BTreeMap::new();
    fold(
        history,
        &mut views,
        after + 1,
        head,
        &mut |event, _, step| {
            if step == Step::Before {
                for entity in touched(event) {
                    touched_after.entry(entity).or_default().push(event.seq);
                }
            }
        },
        progress,
    )?;
    Ok((views, touched_after))
}

/// Two histories that share their events through `shared` (a fork and its
/// original), the original just after `original_through` and the other at
/// its end: every entity either touched after `shared` whose state
/// differs, `before` the original's and `after` the other's, with the
/// other's events that touched it.
pub fn compare_ends(
    original: &History,
    original_through: u64,
    other: &History,
    shared: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Vec<EntityChange>> {
    let (theirs, original_touched) = fold_collecting(original, shared, original_through, progress)?;
    let (ours, other_touched) = fold_collecting(other, shared, other.head()?.last_seq, progress)?;
    let entities: BTreeSet<&Entity> = original_touched.keys().chain(other_touched.keys()).collect();
    let mut changes = Vec::new();
    for entity in entities {
        let fields = field_changes(theirs.entity(entity).as_ref(), ours.entity(entity).as_ref());
        if !fields.is_empty() {
            let events = other_touched.get(entity).cloned().unwrap_or_default();
            changes.push(EntityChange { entity: entity.clone(), fields, events });
        }
    }
    Ok(changes)
}

/// One link of a causation chain: an event, as the command that made it
/// is known by.
#[derive(Clone, Debug, PartialEq)]
pub struct Cause {
    pub event: Envelope,
    /// The idempotency key of the command that appended it (on the first
    /// event of its append), when it had one.
    pub idempotency_key: Option<String>,
}

/// One field of an entity and where its value came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Origin {
    pub path: String,
    pub value: Value,
    /// The event that last set it, then what caused that event, back to
    /// the first event with no cause. Empty when no event changed it (a
    /// default).
    pub chain: Vec<Cause>,
}

/// What one entity is just after `at`, field by field, with where each
/// field's value came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Explained {
    pub entity: Entity,
    pub at: u64,
    pub state: Value,
    pub fields: Vec<Origin>,
}

/// Explains `entity` just after `at` ([`Explained`]).
pub fn explain(history: &History, entity: &Entity, at: u64, progress: &mut dyn FnMut(u64, u64)) -> Result<Explained> {
    if history.first_seq() > 1 {
        return Err(Error::NotFromStart { first: history.first_seq() });
    }
    let head = history.head()?.last_seq;
    if at > head {
        return Err(Error::PastHead { seq: at, head });
    }
    let mut views = Views::new();
    // Every event's id, to follow causation ids back; the fields' setters.
    let mut ids: HashMap<Vec<u8>, u64> = HashMap::new();
    let mut set_by: BTreeMap<String, u64> = BTreeMap::new();
    let mut before: BTreeMap<String, Value> = BTreeMap::new();
    // Whether the event between the two steps touches the entity.
    let mut touching = false;
    fold(
        history,
        &mut views,
        1,
        at,
        &mut |event, views, step| {
            if step == Step::Before {
                ids.insert(event.event_id.to_vec(), event.seq);
                touching = touched(event).contains(entity);
                if touching {
                    before = views.entity(entity).as_ref().map(flatten).unwrap_or_default();
                }
                return;
            }
            if touching {
                let after = views.entity(entity).as_ref().map(flatten).unwrap_or_default();
                for path in before.keys().chain(after.keys()) {
                    if before.get(path) != after.get(path) {
                        set_by.insert(path.clone(), event.seq);
                    }
                }
            }
        },
        progress,
    )?;
    let state = views.entity(entity).ok_or_else(|| Error::UnknownEntity {
        kind: match entity {
            Entity::Task(_) => "task",
            Entity::Agent(_) => "agent",
            Entity::Session(_) => "session",
            Entity::Budget(_) => "budget",
        },
        id: match entity {
            Entity::Task(id) | Entity::Agent(id) | Entity::Session(id) | Entity::Budget(id) => id.clone(),
        },
        seq: at,
    })?;
    let read = |seq: u64| -> Result<Envelope> {
        history.read(seq, 1)?.pop().ok_or(Error::Seam { seq, reason: "missing".into() })
    };
    let cause = |event: Envelope| -> Result<Cause> {
        let first = match ids.get(&event.correlation_id[..]) {
            Some(seq) if *seq != event.seq => read(*seq)?,
            _ => event.clone(),
        };
        let key = Some(first.idempotency_key).filter(|k| !k.is_empty());
        Ok(Cause { event, idempotency_key: key })
    };
    let mut fields = Vec::new();
    for (path, value) in flatten(&state) {
        let mut chain = Vec::new();
        let mut next = set_by.get(&path).copied();
        while let Some(seq) = next {
            if chain.len() == MAX_CHAIN {
                break;
            }
            let event = read(seq)?;
            next = ids.get(&event.causation_id[..]).copied().filter(|s| *s < seq);
            chain.push(cause(event)?);
        }
        fields.push(Origin { path, value, chain });
    }
    Ok(Explained { entity: entity.clone(), at, state, fields })
}

/// A field change as JSON: `{"path", "before", "after"}` (absent fields null).
pub fn change_json(change: &EntityChange) -> Value {
    let fields: Vec<Value> =
        change.fields.iter().map(|f| json!({ "path": f.path, "before": f.before, "after": f.after })).collect();
    json!({ "entity": change.entity.name(), "fields": fields, "events": change.events })
}

/// An explanation as JSON.
pub fn explained_json(explained: &Explained) -> Value {
    let fields: Vec<Value> = explained
        .fields
        .iter()
        .map(|o| {
            let chain: Vec<Value> = o
                .chain
                .iter()
                .map(|c| {
                    let mut event = agentlog_core::json::envelope(&c.event);
                    if let Value::Object(map) = &mut event {
                        map.insert("command_idempotency_key".into(), json!(c.idempotency_key));
                    }
                    event
                })
                .collect();
            let mut object = Map::new();
            object.insert("path".into(), json!(o.path));
            object.insert("value".into(), o.value.clone());
            object.insert("set_by".into(), Value::Array(chain));
            Value::Object(object)
        })
        .collect();
    json!({ "entity": explained.entity.name(), "at": explained.at, "state": explained.state, "fields": fields })
}
