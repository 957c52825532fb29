//! What the routing book shows: the records it sends to agents and supervisors, and
//! what it tells one agent's desktop. The node-wide outcome of a decision is
//! [`crate::state::Outcome`].

use crate::agent::Status;
use crate::clock::Ts;
use crate::error::OfferEnd;
use crate::ids::{AgentId, Channel, OfferId, QueueId, TaskId};
use crate::task::Task;
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
