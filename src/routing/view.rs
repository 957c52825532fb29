//! What the routing book shows: the records it sends to agents and supervisors, and
//! the notices a command produces for the hub to deliver.

use crate::agent::Status;
use crate::clock::Ts;
use crate::context::record::Activity;
use crate::context::{ContextReply, RecordChange, TaskEvent};
use crate::error::{HubError, OfferEnd};
use crate::ids::{AgentId, ConnId, OfferId, QueueId, TaskId};
use crate::task::Task;
use serde::Serialize;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

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
    /// The task.
    pub task: Task,
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
    /// Since when it shows this.
    pub since: Ts,
    /// Whether a desktop is connected.
    pub connected: bool,
    /// The pending offer, if any.
    pub offer: Option<OfferView>,
    /// The In Progress list.
    pub in_progress: Vec<Task>,
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
    /// What it shows.
    pub status: Status,
    /// The Not Ready reason, if Not Ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Since when it shows this; time in state is now minus this.
    pub since: Ts,
    /// Whether a desktop is connected.
    pub connected: bool,
    /// The queues it serves.
    pub queues: Vec<QueueId>,
    /// How many tasks it has in progress.
    pub in_progress: usize,
    /// The task it is being offered, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offered_task: Option<TaskId>,
    /// Grows with every change: drop a line older than the one you have.
    pub version: u64,
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

/// A message the hub must deliver after a command.
#[derive(Clone, Debug)]
pub enum Notice {
    /// To one agent's desktop.
    ToAgent {
        /// The agent.
        agent_id: AgentId,
        /// What.
        notice: AgentNotice,
    },
    /// To every supervisor: an agent's line changed.
    AgentChanged(Box<AgentSummary>),
    /// A customer-context record changed: to every agent watching it but its author.
    RecordChanged {
        /// The watchers.
        to: Vec<AgentId>,
        /// The change, serialized once for all of them.
        change: Arc<RecordChange>,
    },
    /// Close the agent's session.
    Close {
        /// The agent.
        agent_id: AgentId,
        /// Why.
        reason: CloseReason,
        /// Only the session on this connection; any session of the agent when `None`.
        conn: Option<ConnId>,
    },
}

/// The direct answer to a command.
#[derive(Clone, Debug)]
pub enum Reply {
    /// Nothing beyond success.
    Done,
    /// The agent's state after the command.
    Agent {
        /// The view.
        view: Box<AgentView>,
        /// On connect: whether the agent resumed a session it had (reconnect or takeover).
        resumed: bool,
    },
    /// A task.
    Task(Box<Task>),
    /// An accepted task and the activity it became.
    Accepted {
        /// The task.
        task: Box<Task>,
        /// The activity, attached to the customer's request when the customer is known.
        activity: Option<Box<Activity>>,
    },
    /// A customer-context answer.
    Context(ContextReply),
    /// A task created, or found by its idempotency key (`created` false).
    Created {
        /// The task.
        task: Box<Task>,
        /// False when an earlier create with the same key made it.
        created: bool,
    },
}

/// Counts for the metrics, from one command.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Tasks created.
    pub created: u64,
    /// Tasks cancelled.
    pub cancelled: u64,
    /// Tasks completed.
    pub completed: u64,
    /// Offers made.
    pub offers_made: u64,
    /// Offers accepted.
    pub accepted: u64,
    /// Offers declined.
    pub declined: u64,
    /// Offers expired.
    pub expired: u64,
    /// For each task offered for the first time, the time from its creation.
    pub first_offer_latency: Vec<Duration>,
}

/// Everything one command did, for the hub to carry out.
#[derive(Debug)]
pub struct Outcome {
    /// The answer for the caller. An error here means nothing changed, except where a
    /// command found its offer past the deadline: then the expiry it triggered is in
    /// `notices`.
    pub reply: Result<Reply, HubError>,
    /// Messages to deliver, in order.
    pub notices: Vec<Notice>,
    /// Queues whose numbers changed.
    pub queues: BTreeSet<QueueId>,
    /// The earliest timer armed, so that the timer loop can wake up for it.
    pub earliest_timer: Option<Ts>,
    /// Counts for the metrics.
    pub stats: Stats,
    /// What happened to tasks, for the customer context to follow.
    pub task_events: Vec<TaskEvent>,
}

impl Outcome {
    /// Splits off what is delivered to sessions (notices, changed queues, the timer to
    /// wake for), leaving the reply and the counts for the caller.
    pub fn take_notices(&mut self) -> Outcome {
        Outcome {
            reply: Ok(Reply::Done),
            notices: std::mem::take(&mut self.notices),
            queues: std::mem::take(&mut self.queues),
            earliest_timer: self.earliest_timer.take(),
            stats: Stats::default(),
            task_events: Vec::new(),
        }
    }

    /// An outcome that did nothing and says so.
    pub fn done() -> Outcome {
        let mut o = Outcome::err(HubError::StoreUnavailable(String::new()));
        o.reply = Ok(Reply::Done);
        o
    }

    /// An outcome that changed nothing.
    pub fn err(e: HubError) -> Outcome {
        Outcome {
            reply: Err(e),
            notices: Vec::new(),
            queues: BTreeSet::new(),
            earliest_timer: None,
            stats: Stats::default(),
            task_events: Vec::new(),
        }
    }
}
