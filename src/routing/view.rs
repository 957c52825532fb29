//! What the routing book shows: the records it sends to agents and supervisors, and
//! what it tells one agent's desktop. The node-wide outcome of a decision is
//! [`crate::state::Outcome`]. The book's methods that build these records from its
//! agents, tasks and queues are here too, beside the records they build.

use super::{AgentEntry, Book};
use crate::agent::{Link, Status};
use crate::clock::Ts;
use crate::error::OfferEnd;
use crate::ids::{AgentId, Channel, OfferId, QueueId, TaskId};
use crate::task::{Task, TaskState};
use serde::Serialize;
use std::sync::Arc;

/// An offer as the agent sees it: the task and what is known of the customer, so the
/// agent can look before accepting.
#[derive(Clone, Debug, Serialize)]
pub struct OfferView {
    /// The offer's id, to accept or decline it by.
    pub offer_id: OfferId,
    /// When it expires.
    pub deadline: Ts,
    /// How long the agent had, in milliseconds.
    pub timeout_ms: u64,
    /// For a consult (warm transfer): the agent who has the task and asks this one to
    /// take it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consult_from: Option<AgentId>,
    /// The task (shared with the book).
    pub task: Arc<Task>,
}

/// An agent's wrap-up period.
#[derive(Clone, Debug, Serialize)]
pub struct WrapUpView {
    /// The task just finished.
    pub task_id: TaskId,
    /// When it ends by itself.
    pub until: Ts,
}

/// Everything an agent's desktop needs to draw itself: sent on connect (to resume)
/// and after every change.
#[derive(Clone, Debug, Serialize)]
pub struct AgentView {
    /// The agent.
    pub agent_id: AgentId,
    /// Its display name.
    pub name: String,
    /// What it shows.
    pub status: Status,
    /// The Not Ready reason, if Not Ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A Not Ready asked for while the agent had work: its reason, applied when the
    /// work (and the wrap-up) ends.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_not_ready: Option<String>,
    /// Since when it shows this.
    pub since: Ts,
    /// Whether a desktop is connected.
    pub connected: bool,
    /// The pending offer, if any.
    pub offer: Option<OfferView>,
    /// The In Progress list.
    pub in_progress: Vec<Arc<Task>>,
    /// The wrap-up period, if any.
    pub wrap_up: Option<WrapUpView>,
    /// Grows with every change: drop a view older than the one you have.
    pub version: u64,
}

/// One line of a supervisor's agent board.
#[derive(Clone, Debug, Serialize)]
pub struct AgentSummary {
    /// The agent.
    pub agent_id: AgentId,
    /// Its display name.
    pub name: String,
    /// Its team, when configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// What it shows.
    pub status: Status,
    /// The Not Ready reason, if Not Ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A Not Ready asked for while the agent had work: its reason, applied when the
    /// work (and the wrap-up) ends.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_not_ready: Option<String>,
    /// Since when it shows this; time in state is now minus this.
    pub since: Ts,
    /// Whether a desktop is connected.
    pub connected: bool,
    /// The queues it serves.
    pub queues: Vec<QueueId>,
    /// How many tasks it has in progress.
    pub in_progress: usize,
    /// Those tasks, oldest accept first: what a wallboard shows as the current task
    /// and its age.
    pub tasks: Vec<WorkSummary>,
    /// The task it is being offered, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offered_task: Option<TaskId>,
    /// Grows with every change: drop a line older than the one you have.
    pub version: u64,
}

/// A task in an agent's In Progress list, as a supervisor sees it.
#[derive(Clone, Debug, Serialize)]
pub struct WorkSummary {
    /// The task.
    pub task_id: TaskId,
    /// Its channel.
    pub channel: Channel,
    /// When the agent accepted it.
    pub since: Ts,
}

/// One line of a supervisor's queue board.
#[derive(Clone, Debug, Serialize)]
pub struct QueueStats {
    /// The queue.
    pub queue_id: QueueId,
    /// Its display name.
    pub name: String,
    /// Tasks waiting (not offered, not assigned).
    pub waiting: usize,
    /// How long the longest-waiting task has waited, in milliseconds.
    pub longest_wait_ms: u64,
    /// Offers pending on its tasks.
    pub offers_pending: usize,
    /// Agents open for work in it.
    pub agents_open: usize,
}

/// A supervisor's whole picture.
#[derive(Clone, Debug, Serialize)]
pub struct Snapshot {
    /// Every known agent.
    pub agents: Vec<AgentSummary>,
    /// Every queue.
    pub queues: Vec<QueueStats>,
}

/// Something an agent's desktop must be told.
#[derive(Clone, Debug)]
pub enum AgentNotice {
    /// A task is offered.
    Offer(Box<OfferView>),
    /// The pending offer ended without an accept.
    OfferEnded {
        /// The offer.
        offer_id: OfferId,
        /// Its task.
        task_id: TaskId,
        /// How it ended.
        reason: OfferEnd,
    },
    /// A task in progress was cancelled from outside.
    TaskCancelled {
        /// The task.
        task_id: TaskId,
        /// Why, as the integration said.
        reason: Option<String>,
    },
    /// The agent's state changed.
    State(Box<AgentView>),
    /// A task in the agent's In Progress list was transferred away by someone else (a
    /// supervisor, an integration).
    TaskTransferred {
        /// The task.
        task_id: TaskId,
    },
    /// A transfer this agent made to one agent ended.
    TransferEnded {
        /// The task.
        task_id: TaskId,
        /// The agent it was transferred to.
        agent_id: AgentId,
        /// How it ended.
        result: TransferResult,
    },
}

/// How a transfer to one agent ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferResult {
    /// The target accepted: the task is its.
    Accepted,
    /// The target declined (or set Not Ready during the offer).
    Declined,
    /// The target let the offer expire.
    Expired,
    /// The offer was withdrawn (the target went away, a supervisor moved it, the task
    /// was cancelled).
    Withdrawn,
    /// The target could not take an offer when the transfer was asked.
    Unavailable,
}

/// Why the hub closes an agent's session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    /// The agent logged out.
    LoggedOut,
    /// A supervisor logged the agent out.
    LoggedOutBySupervisor,
    /// A newer connection of the agent took over.
    Replaced,
    /// The node the session is on was declared lost: reconnect (and resume).
    Reconnect,
}

impl Book {
    /// An agent's full view.
    pub fn agent_view(&self, id: &AgentId) -> Option<AgentView> {
        self.agents.get(id).map(|e| self.view_of(e))
    }

    /// Every agent and queue, for a supervisor.
    pub fn snapshot(&self, now: Ts) -> Snapshot {
        let mut agents: Vec<AgentSummary> =
            self.agents.values().map(|e| self.summary_of(e)).collect();
        agents.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
        let mut queues: Vec<QueueStats> = self
            .rules
            .queues
            .keys()
            .filter_map(|q| self.queue_stats(q, now))
            .collect();
        queues.sort_by(|a, b| a.queue_id.cmp(&b.queue_id));
        Snapshot { agents, queues }
    }

    /// One queue's numbers.
    pub fn queue_stats(&self, q: &QueueId, now: Ts) -> Option<QueueStats> {
        let rules = self.rules.queues.get(q)?;
        let idx = self.queues.get(q)?;
        Some(QueueStats {
            queue_id: q.clone(),
            name: rules.name.clone(),
            waiting: idx.waiting_len(),
            longest_wait_ms: idx
                .oldest()
                .map(|t| now.since(t).as_millis() as u64)
                .unwrap_or(0),
            offers_pending: idx.offers_pending,
            agents_open: idx.open_len(),
        })
    }

    pub(super) fn view_of(&self, e: &AgentEntry) -> AgentView {
        let s = &e.state;
        AgentView {
            agent_id: e.profile.id.clone(),
            name: e.profile.name.clone(),
            status: s.status(),
            reason: s.reason().map(str::to_owned),
            pending_not_ready: s.pending_not_ready.clone(),
            since: s.since,
            connected: matches!(s.link, Link::Connected(_)),
            offer: s.offer.as_ref().and_then(|o| {
                let task = self.tasks.get(&o.task_id)?;
                let timeout = self
                    .rules
                    .queues
                    .get(&task.queue)
                    .map(|q| q.offer_timeout.as_millis() as u64)
                    .unwrap_or(0);
                let consult_from = match &task.state {
                    TaskState::Assigned { agent_id, .. } if *agent_id != e.profile.id => {
                        Some(agent_id.clone())
                    }
                    _ => None,
                };
                Some(OfferView {
                    offer_id: o.offer_id,
                    deadline: o.deadline,
                    timeout_ms: timeout,
                    consult_from,
                    task: task.clone(),
                })
            }),
            in_progress: s
                .work
                .iter()
                .filter_map(|w| self.tasks.get(&w.task_id).cloned())
                .collect(),
            wrap_up: s.wrap_up.as_ref().map(|w| WrapUpView {
                task_id: w.task_id,
                until: w.until,
            }),
            version: s.version,
        }
    }

    pub(super) fn summary_of(&self, e: &AgentEntry) -> AgentSummary {
        let s = &e.state;
        AgentSummary {
            agent_id: e.profile.id.clone(),
            name: e.profile.name.clone(),
            team: e.profile.team.clone(),
            status: s.status(),
            reason: s.reason().map(str::to_owned),
            pending_not_ready: s.pending_not_ready.clone(),
            since: s.since,
            connected: matches!(s.link, Link::Connected(_)),
            queues: e.profile.queues.clone(),
            in_progress: s.work.len(),
            tasks: s
                .work
                .iter()
                .map(|w| WorkSummary {
                    task_id: w.task_id,
                    channel: w.channel,
                    since: w.since,
                })
                .collect(),
            offered_task: s.offer.as_ref().map(|o| o.task_id),
            version: s.version,
        }
    }
}
