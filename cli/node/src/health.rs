//! What `/ready` answers: each supervised component's state. A component
//! is `Starting` until it can serve, `Ready`, `Degraded` while a transient
//! failure lasts (it recovers by itself), or `Failed` — fatal: the node is
//! draining and will exit non-zero. The node is ready only when every
//! component is ready; otherwise `/ready` names the ones that are not.
use std::collections::BTreeMap;
use std::sync::Mutex;

use tokio::sync::watch;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    Starting(String),
    Ready,
    Degraded(String),
    Failed(String),
}

#[derive(Debug)]
pub struct Health {
    components: Mutex<BTreeMap<&'static str, State>>,
    /// Whether every component is ready; bumped on every change.
    ready: watch::Sender<bool>,
}

impl Default for Health {
    fn default() -> Self {
        Health { components: Mutex::default(), ready: watch::channel(false).0 }
    }
}

impl Health {
    pub fn set(&self, component: &'static str, state: State) {
        let ready = {
            let mut components = self.components.lock().unwrap_or_else(|p| p.into_inner());
            // A failure is final: nothing reports a failed component ready again.
            if !matches!(components.get(component), Some(State::Failed(_))) {
                components.insert(component, state);
            }
            components.values().all(|s| *s == State::Ready)
        };
        self.ready.send_if_modified(|was| std::mem::replace(was, ready) != ready);
    }

    /// Whether every component is ready, as it changes.
    pub fn ready(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }

    /// Wakes on every change of readiness.
    pub fn changes(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }

    /// `None` when every component is ready; otherwise one line per
    /// component that is not, in name order.
    pub fn not_ready(&self) -> Option<String> {
        let components = self.components.lock().unwrap_or_else(|p| p.into_inner());
        let lines: Vec<String> = components
            .iter()
            .filter_map(|(name, state)| match state {
                State::Ready => None,
                State::Starting(why) => Some(format!("{name}: starting: {why}")),
                State::Degraded(why) => Some(format!("{name}: degraded: {why}")),
                State::Failed(why) => Some(format!("{name}: failed: {why}")),
            })
            .collect();
        (!lines.is_empty()).then(|| lines.join("\n"))
    }
}
