//! One turn at a time per aggregate on this node, and whoever has it
//! decides for those who wait: commands a node runs at once on a hot
//! aggregate (a shared budget, a popular task) queue on its lane in the
//! order they arrive; the first takes the turn, takes the queue with it,
//! decides them all in order on the state each leaves (one append for the
//! lot), answers each, and hands the turn to the next who waits. So they
//! never race each other through the CAS, and a hot aggregate pays one
//! append per group, not one round trip per command. The CAS stays the
//! guard against other nodes and other processes.
//!
//! Nothing is lost to a caller who gives up: a member dropped while it
//! waits leaves the queue, and a turn holder dropped midway answers what it
//! took with [`Abandon::abandoned`] and hands the turn on.
//!
//! A stream's lane lives only while someone holds or awaits its turn, so
//! the table is bounded by the commands in flight, not by the history.
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

/// What a taken member is answered when its turn holder stopped before
/// deciding it.
pub trait Abandon {
    fn abandoned() -> Self;
}

/// One waiting command and, in time, its outcome.
pub struct Ticket<M, O> {
    pub member: M,
    slot: Mutex<Slot<O>>,
    wake: Notify,
}

enum Slot<O> {
    /// In its lane's queue.
    Waiting,
    /// Taken by a turn holder, who will answer it.
    Taken,
    /// Handed the turn; not yet woken to take it.
    Lead,
    Done(O),
    /// Its caller stopped waiting, or took its outcome.
    Gone,
}

impl<M, O> Ticket<M, O> {
    /// Answers the member and wakes it.
    pub fn resolve(&self, outcome: O) {
        *lock(&self.slot) = Slot::Done(outcome);
        self.wake.notify_one();
    }

    fn set(&self, slot: Slot<O>) {
        *lock(&self.slot) = slot;
        self.wake.notify_one();
    }
}

/// Each stream with commands in flight, and those waiting for its turn in
/// order (the turn holder is not among them).
type Lanes<M, O> = HashMap<String, VecDeque<Arc<Ticket<M, O>>>>;

pub struct Turns<M, O> {
    lanes: Mutex<Lanes<M, O>>,
}

impl<M, O> Default for Turns<M, O> {
    fn default() -> Self {
        Turns { lanes: Mutex::new(HashMap::new()) }
    }
}

/// How a wait ended.
pub enum Waited<'a, M, O: Abandon> {
    /// A turn holder decided the member.
    Decided(O),
    /// The member has the turn: it takes the group and answers each.
    Lead(Turn<'a, M, O>),
}

impl<M, O: Abandon> Turns<M, O> {
    /// Queues `member` on `stream` and waits until it is decided by whoever
    /// has the turn, or until it has the turn itself.
    pub async fn wait(&self, stream: &str, member: M) -> Waited<'_, M, O> {
        let ticket = Arc::new(Ticket { member, slot: Mutex::new(Slot::Waiting), wake: Notify::new() });
        {
            let mut lanes = self.table();
            match lanes.get_mut(stream) {
                Some(waiting) => waiting.push_back(ticket.clone()),
                None => {
                    lanes.insert(stream.to_owned(), VecDeque::new());
                    *lock(&ticket.slot) = Slot::Lead;
                }
            }
        }
        let mut queued = Queued { turns: self, stream, ticket: Some(ticket) };
        loop {
            let ticket = queued.ticket.clone().expect("held until the wait ends");
            let notified = ticket.wake.notified();
            {
                let mut slot = lock(&ticket.slot);
                match std::mem::replace(&mut *slot, Slot::Gone) {
                    Slot::Done(outcome) => {
                        drop(slot);
                        queued.ticket = None;
                        return Waited::Decided(outcome);
                    }
                    Slot::Lead => {
                        *slot = Slot::Taken;
                        drop(slot);
                        queued.ticket = None;
                        return Waited::Lead(Turn {
                            turns: self,
                            stream: stream.to_owned(),
                            own: ticket.clone(),
                            taken: Vec::new(),
                        });
                    }
                    waiting => *slot = waiting,
                }
            }
            notified.await;
        }
    }

    /// Members waiting for `stream`'s turn (not its holder).
    pub fn waiting(&self, stream: &str) -> usize {
        self.table().get(stream).map_or(0, VecDeque::len)
    }

    /// Streams someone holds or awaits a turn on.
    pub fn len(&self) -> usize {
        self.table().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn table(&self) -> MutexGuard<'_, Lanes<M, O>> {
        lock(&self.lanes)
    }

    /// Hands `stream`'s turn to the next who waits, or closes its lane.
    fn pass_on(lanes: &mut Lanes<M, O>, stream: &str) {
        match lanes.get_mut(stream).and_then(VecDeque::pop_front) {
            Some(next) => next.set(Slot::Lead),
            None => {
                lanes.remove(stream);
            }
        }
    }
}

/// A member waiting in its lane; if its caller stops waiting, it leaves
/// the queue (or, handed the turn, hands it on).
struct Queued<'a, M, O: Abandon> {
    turns: &'a Turns<M, O>,
    stream: &'a str,
    ticket: Option<Arc<Ticket<M, O>>>,
}

impl<M, O: Abandon> Drop for Queued<'_, M, O> {
    fn drop(&mut self) {
        let Some(ticket) = self.ticket.take() else { return };
        let mut lanes = self.turns.table();
        let mut slot = lock(&ticket.slot);
        match std::mem::replace(&mut *slot, Slot::Gone) {
            Slot::Waiting => {
                if let Some(waiting) = lanes.get_mut(self.stream) {
                    waiting.retain(|t| !Arc::ptr_eq(t, &ticket));
                }
            }
            Slot::Lead => {
                drop(slot);
                Turns::pass_on(&mut lanes, self.stream);
            }
            // Its turn holder answers it; the answer is dropped unread.
            Slot::Taken => *slot = Slot::Taken,
            Slot::Done(_) | Slot::Gone => {}
        }
    }
}

/// A stream's turn: its holder's own member first, then those it takes
/// from the queue. Dropped, it answers whatever it took and did not answer
/// with [`Abandon::abandoned`], and hands the turn on.
pub struct Turn<'a, M, O: Abandon> {
    turns: &'a Turns<M, O>,
    stream: String,
    own: Arc<Ticket<M, O>>,
    taken: Vec<Arc<Ticket<M, O>>>,
}

impl<M, O: Abandon> Turn<'_, M, O> {
    /// The holder's own member, then up to `max - 1` of those waiting, in
    /// the order they came. The holder answers each ([`Ticket::resolve`]).
    pub fn group(&mut self, max: usize) -> Vec<Arc<Ticket<M, O>>> {
        let mut group = vec![self.own.clone()];
        let mut lanes = self.turns.table();
        if let Some(waiting) = lanes.get_mut(&self.stream) {
            let take = waiting.len().min(max.saturating_sub(1));
            for ticket in waiting.drain(..take) {
                *lock(&ticket.slot) = Slot::Taken;
                group.push(ticket);
            }
        }
        self.taken.extend(group[1..].iter().cloned());
        group
    }

    /// The holder's own outcome, once it has answered itself.
    pub fn own_outcome(&self) -> O {
        match std::mem::replace(&mut *lock(&self.own.slot), Slot::Gone) {
            Slot::Done(outcome) => outcome,
            _ => O::abandoned(),
        }
    }
}

impl<M, O: Abandon> Drop for Turn<'_, M, O> {
    fn drop(&mut self) {
        for ticket in &self.taken {
            let mut slot = lock(&ticket.slot);
            if matches!(*slot, Slot::Taken) {
                *slot = Slot::Done(O::abandoned());
                drop(slot);
                ticket.wake.notify_one();
            }
        }
        Turns::pass_on(&mut self.turns.table(), &self.stream);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[derive(Debug, PartialEq)]
    enum Outcome {
        Decided(u32),
        Abandoned,
    }

    impl Abandon for Outcome {
        fn abandoned() -> Self {
            Outcome::Abandoned
        }
    }

    /// Each member is decided exactly once, by itself or by whoever has the
    /// turn; never two turns on one stream at once; nothing left behind.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn one_turn_at_a_time_per_stream_each_member_decided_once_and_nothing_left_behind() {
        let turns = Arc::new(Turns::<u32, Outcome>::default());
        let inside = Arc::new(AtomicU32::new(0));
        let decisions = Arc::new(AtomicU32::new(0));
        let tasks: Vec<_> = (0..200u32)
            .map(|i| {
                let (turns, inside, decisions) = (turns.clone(), inside.clone(), decisions.clone());
                tokio::spawn(async move {
                    let stream = if i % 2 == 0 { "budget/a" } else { "budget/b" };
                    match turns.wait(stream, i).await {
                        Waited::Decided(outcome) => (outcome, 0),
                        Waited::Lead(mut turn) => {
                            let before = inside.fetch_add(1, Ordering::SeqCst);
                            let group = turn.group(8);
                            assert!(group.len() <= 8);
                            tokio::task::yield_now().await;
                            for ticket in group {
                                decisions.fetch_add(1, Ordering::SeqCst);
                                ticket.resolve(Outcome::Decided(ticket.member));
                            }
                            inside.fetch_sub(1, Ordering::SeqCst);
                            (turn.own_outcome(), before)
                        }
                    }
                })
            })
            .collect();
        let mut most = 0;
        for (i, task) in tasks.into_iter().enumerate() {
            let (outcome, before) = task.await.unwrap();
            assert_eq!(outcome, Outcome::Decided(i as u32), "member {i} got its own outcome");
            most = most.max(before);
        }
        // Two streams: at most one other holder (of the other stream) at once.
        assert!(most <= 1, "{most} others held a turn at once");
        assert_eq!(decisions.load(Ordering::SeqCst), 200, "each member decided once");
        assert!(turns.is_empty(), "every lane is gone once no one waits");
    }

    /// A member whose caller gives up while it waits leaves the queue; a
    /// turn holder dropped midway answers what it took as abandoned and
    /// hands the turn on.
    #[tokio::test]
    async fn callers_who_give_up_leave_nothing_stuck() {
        let turns = Turns::<u32, Outcome>::default();
        let Waited::Lead(mut first) = turns.wait("task/t", 1).await else { panic!("the first has the turn") };
        // Member 2 gives up while waiting.
        let gave_up = tokio::time::timeout(std::time::Duration::from_millis(5), turns.wait("task/t", 2)).await;
        assert!(gave_up.is_err(), "member 2 waits while member 1 has the turn");
        let third = turns.wait("task/t", 3);
        let mut third = std::pin::pin!(third);
        assert!(futures_poll_once(third.as_mut()).await.is_none(), "member 3 waits");
        let group = first.group(10);
        let members: Vec<u32> = group.iter().map(|t| t.member).collect();
        assert_eq!(members, [1, 3], "member 2 left the queue");
        // The holder is dropped before answering: member 3 is abandoned.
        drop(group);
        drop(first);
        match third.await {
            Waited::Decided(outcome) => assert_eq!(outcome, Outcome::Abandoned),
            Waited::Lead(_) => panic!("member 3 was taken, so it is answered, not handed the turn"),
        }
        assert!(turns.is_empty());
        // The turn passes to the next who waits.
        let Waited::Lead(holder) = turns.wait("task/t", 4).await else { panic!("free") };
        let fifth = turns.wait("task/t", 5);
        let mut fifth = std::pin::pin!(fifth);
        assert!(futures_poll_once(fifth.as_mut()).await.is_none());
        drop(holder);
        assert!(matches!(fifth.await, Waited::Lead(_)), "member 5 has the turn once member 4 lets go");
        assert!(turns.is_empty());
    }

    /// Polls a future once: its output if it was ready.
    async fn futures_poll_once<F: std::future::Future + Unpin>(mut future: F) -> Option<F::Output> {
        std::future::poll_fn(|cx| match std::pin::Pin::new(&mut future).poll(cx) {
            std::task::Poll::Ready(output) => std::task::Poll::Ready(Some(output)),
            std::task::Poll::Pending => std::task::Poll::Ready(None),
        })
        .await
    }
}
