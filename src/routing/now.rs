//! What is true now, for the statistics: read from the book when a report is built,
//! never folded (a count kept beside the book could drift from it; the book is the
//! truth).

use super::Book;
use crate::agent::Status;
use crate::clock::Ts;
use crate::ids::{AgentId, QueueId};
use std::collections::{BTreeMap, HashMap};

/// One queue, now.
#[derive(Clone, Debug, Default)]
pub struct QueueNow {
    /// Tasks waiting, by channel ([`crate::ids::Channel::ALL`] order).
    pub waiting_by_channel: [u64; 3],
    /// Tasks waiting, by priority.
    pub waiting_by_priority: BTreeMap<i64, u64>,
    /// When the longest-waiting task entered the queue.
    pub oldest_enqueued_at: Option<Ts>,
    /// The queue's agents (those who serve it), by status (`stats::STATUSES` order).
    pub agents: [u64; 6],
    /// Its Not Ready agents, by reason.
    pub not_ready_reasons: BTreeMap<String, u64>,
    /// Agents the router may offer its next task to now (Ready, connected, with
    /// capacity left).
    pub eligible_ready: u64,
    /// Offers ringing on its tasks.
    pub offers_pending: u64,
}

/// One agent, now.
#[derive(Clone, Debug)]
pub struct AgentNow {
    /// The agent.
    pub agent_id: AgentId,
    /// Its display name.
    pub name: String,
    /// Its status.
    pub status: Status,
    /// Its Not Ready reason, when Not Ready.
    pub reason: Option<String>,
    /// Since when.
    pub since: Ts,
}

impl Book {
    /// Every configured queue, now.
    pub fn queues_now(&self) -> HashMap<QueueId, QueueNow> {
        let mut out: HashMap<QueueId, QueueNow> = HashMap::with_capacity(self.queues.len());
        for (q, idx) in &self.queues {
            let mut n = QueueNow {
                oldest_enqueued_at: idx.oldest(),
                eligible_ready: idx.open_len() as u64,
                offers_pending: idx.offers_pending as u64,
                ..QueueNow::default()
            };
            for (bucket, places) in idx.buckets() {
                n.waiting_by_channel[crate::stats::channel_index(bucket.channel)] +=
                    places.len() as u64;
                for p in places {
                    let prio = self
                        .tasks
                        .get(&p.task_id)
                        .map_or(p.priority.0, |t| t.priority);
                    *n.waiting_by_priority.entry(prio).or_default() += 1;
                }
            }
            out.insert(q.clone(), n);
        }
        for e in self.agents.values() {
            let status = e.state.status();
            for q in &e.profile.queues {
                if let Some(n) = out.get_mut(q) {
                    n.agents[crate::stats::status_index(status)] += 1;
                    if status == Status::NotReady {
                        if let Some(r) = e.state.reason() {
                            *n.not_ready_reasons.entry(r.to_owned()).or_default() += 1;
                        }
                    }
                }
            }
        }
        out
    }

    /// Every known agent, now, by id.
    pub fn agents_now(&self) -> Vec<AgentNow> {
        let mut v: Vec<AgentNow> = self
            .agents
            .values()
            .map(|e| {
                let status = e.state.status();
                AgentNow {
                    agent_id: e.profile.id.clone(),
                    name: e.profile.name.clone(),
                    status,
                    reason: (status == Status::NotReady)
                        .then(|| e.state.reason().map(str::to_owned))
                        .flatten(),
                    since: e.state.since,
                }
            })
            .collect();
        v.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
        v
    }

    /// A queue's display name.
    pub fn queue_name(&self, q: &QueueId) -> Option<&str> {
        self.rules.queues.get(q).map(|r| r.name.as_str())
    }

    /// The configured queues, by id.
    pub fn queue_ids(&self) -> Vec<QueueId> {
        let mut v: Vec<QueueId> = self.rules.queues.keys().cloned().collect();
        v.sort();
        v
    }

    /// How many tasks wait in a queue.
    pub fn waiting_len(&self, q: &QueueId) -> Option<usize> {
        self.queues.get(q).map(|i| i.waiting_len())
    }

    /// Whether the book knows this agent.
    pub fn knows_agent(&self, a: &AgentId) -> bool {
        self.agents.contains_key(a)
    }
}
