//! One turn at a time per aggregate on this node: the handler decides and
//! appends the commands on one stream in the order they take their turn,
//! each on the state the one before left, so commands a node runs at once
//! on a hot aggregate (a shared budget, a popular task) never race each
//! other through the CAS and never exhaust its retries. The CAS stays the
//! guard against other nodes and other processes.
//!
//! A stream's entry lives only while someone holds or awaits its turn, so
//! the table is bounded by the commands in flight, not by the history.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as Queue, OwnedMutexGuard};

#[derive(Debug, Default)]
pub struct Turns {
    streams: Mutex<HashMap<String, Arc<Queue<()>>>>,
}

/// A stream's turn, held until dropped. Waiters are served first come,
/// first served (tokio's mutex is fair).
pub struct Turn<'a> {
    turns: &'a Turns,
    stream: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Turns {
    /// Waits for `stream`'s turn.
    pub async fn take(&self, stream: &str) -> Turn<'_> {
        let queue = self.table().entry(stream.to_owned()).or_default().clone();
        let guard = queue.lock_owned().await;
        Turn { turns: self, stream: stream.to_owned(), guard: Some(guard) }
    }

    /// Streams someone holds or awaits a turn on.
    pub fn len(&self) -> usize {
        self.table().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Queue<()>>>> {
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        // Under the table's lock no one can clone the entry, so a count of
        // one (the table's own) means nobody holds or awaits this stream.
        let mut table = self.turns.table();
        if table.get(&self.stream).is_some_and(|queue| Arc::strong_count(queue) == 1) {
            table.remove(&self.stream);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn one_turn_at_a_time_per_stream_and_nothing_left_behind() {
        let turns = Arc::new(Turns::default());
        let inside = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let (turns, inside) = (turns.clone(), inside.clone());
                tokio::spawn(async move {
                    let stream = if i % 2 == 0 { "budget/a" } else { "budget/b" };
                    let _turn = turns.take(stream).await;
                    let before = inside.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    inside.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    before
                })
            })
            .collect();
        let mut most = 0;
        for task in tasks {
            most = most.max(task.await.unwrap());
        }
        // Two streams: at most one other holder (of the other stream) at once.
        assert!(most <= 1, "{most} others held a turn at once");
        assert!(turns.is_empty(), "every entry is gone once no one waits");
    }
}
