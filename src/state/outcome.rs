//! What one decision produces: the reply for the caller and the notices for this
//! node's sessions. Node-wide types: the routing book and the customer context both
//! produce them, the stores carry them, the hub delivers them.

use crate::clock::Ts;
use crate::context::record::Activity;
use crate::context::{ContextReply, RecordChange, TaskEvent};
use crate::error::HubError;
use crate::events::{Envelope, EventData};
use crate::ids::{AgentId, ConnId, QueueId};
use crate::routing::{AgentNotice, AgentSummary, AgentView, CloseReason};
use crate::task::Task;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

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
    /// The agent's desktop on connection `conn` is now its current one: the node that
    /// holds that session files it as the agent's session (and closes the one it had as
    /// `replaced`). In decision order, so a node's sessions follow the store's order of
    /// connects, never the order the sockets opened in.
    Attach {
        /// The agent.
        agent_id: AgentId,
        /// The connection the store connected.
        conn: ConnId,
    },
    /// The webhooks' book changed in a way that may change what a node delivers (an
    /// endpoint made, deleted, rotated, disabled, replayed): the node's webhook
    /// service looks again at once.
    WebhooksChanged,
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
    /// A task (shared with the routing book: a reply copies nothing).
    Task(Arc<Task>),
    /// An accepted task and the activity it became.
    Accepted {
        /// The task.
        task: Arc<Task>,
        /// The activity, attached to the customer's request when the customer is known.
        activity: Option<Box<Activity>>,
    },
    /// A customer-context answer.
    Context(ContextReply),
    /// A task created, or found by its idempotency key (`created` false).
    Created {
        /// The task.
        task: Arc<Task>,
        /// False when an earlier create with the same key made it.
        created: bool,
    },
    /// A webhook command's answer.
    Webhook(crate::webhooks::book::WebhookReply),
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
    /// The facts this decision established, in order, for integrations and statistics
    /// (see [`crate::events`]); `State::after` moves them into `envelopes`.
    pub events: Vec<EventData>,
    /// The same events numbered (by `State::after`): delivered with the notices, to
    /// this node's event stream.
    pub envelopes: Vec<Arc<Envelope>>,
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
            events: Vec::new(),
            envelopes: std::mem::take(&mut self.envelopes),
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
            events: Vec::new(),
            envelopes: Vec::new(),
        }
    }
}
