//! One queue's indexes: the tasks waiting in it, in their order, and the agents open
//! for work, longest idle first.
//!
//! Waiting tasks are kept in buckets by (channel, required skills), each a sorted set
//! of places. An agent looking for work peeks at the head of every bucket it
//! qualifies for, so the cost of a routing decision grows with the number of buckets
//! (distinct skill sets, small) times log n, not with the number of tasks.

use crate::clock::Ts;
use crate::ids::{AgentId, Channel, TaskId};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// A task's place in its queue: tasks transferred to the head first, then higher
/// priority, then earlier arrival.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Place {
    /// 0 for a task transferred to the head of the queue, 1 otherwise.
    pub lane: u8,
    /// Priority, reversed so that the highest sorts first.
    pub priority: Reverse<i64>,
    /// Arrival order.
    pub seq: u64,
    /// The task.
    pub task_id: TaskId,
}

/// The waiting tasks that need the same things of an agent.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Bucket {
    /// The channel.
    pub channel: Channel,
    /// The skills required, sorted.
    pub skills: Arc<[String]>,
    /// The least levels required in some of them, sorted.
    pub levels: Arc<[(String, u8)]>,
}

/// An agent's place among the open agents: longest idle first.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct IdleKey {
    /// When the agent last became free.
    pub idle_since: Ts,
    /// A stable tie-break.
    pub seq: u64,
    /// The agent.
    pub agent_id: AgentId,
}

/// One queue's indexes.
#[derive(Debug, Default)]
pub struct QueueIndex {
    waiting: BTreeMap<Bucket, BTreeSet<Place>>,
    by_arrival: BTreeMap<u64, Ts>,
    open: BTreeSet<IdleKey>,
    /// Offers pending on tasks of this queue.
    pub offers_pending: usize,
}

impl QueueIndex {
    /// Puts a task in (or back in) its place.
    pub fn insert(&mut self, bucket: Bucket, place: Place, created_at: Ts) {
        self.by_arrival.insert(place.seq, created_at);
        self.waiting.entry(bucket).or_default().insert(place);
    }

    /// Takes a task out.
    pub fn remove(&mut self, bucket: &Bucket, place: &Place) {
        self.by_arrival.remove(&place.seq);
        if let Some(set) = self.waiting.get_mut(bucket) {
            set.remove(place);
            if set.is_empty() {
                self.waiting.remove(bucket);
            }
        }
    }

    /// Waiting tasks.
    pub fn waiting_len(&self) -> usize {
        self.by_arrival.len()
    }

    /// When the longest-waiting task arrived.
    pub fn oldest(&self) -> Option<Ts> {
        // Arrival order and arrival time agree: both are taken when the task is created.
        self.by_arrival.first_key_value().map(|(_, t)| *t)
    }

    /// Buckets and their places, for an agent to pick from.
    pub fn buckets(&self) -> impl Iterator<Item = (&Bucket, &BTreeSet<Place>)> {
        self.waiting.iter()
    }

    /// Marks an agent open for work.
    pub fn open_agent(&mut self, key: IdleKey) {
        self.open.insert(key);
    }

    /// Marks an agent no longer open.
    pub fn close_agent(&mut self, key: &IdleKey) {
        self.open.remove(key);
    }

    /// Open agents, longest idle first.
    pub fn open_agents(&self) -> impl Iterator<Item = &IdleKey> {
        self.open.iter()
    }

    /// How many agents are open.
    pub fn open_len(&self) -> usize {
        self.open.len()
    }
}
