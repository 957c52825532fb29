//! Integration events: what each decision did, told to the systems around the hub
//! (the telephony platform that bridges a call, the CRM, the workforce tool).
//!
//! The books produce an [`EventData`] for every fact a decision established, in the
//! order it happened, into [`Outcome::events`](crate::state::Outcome). They come from
//! the decision itself, so every replica that applies the same log entry produces the
//! same events: they are computed once per decision, never once per node. The state
//! numbers them (a sequence number, the log's epoch, the entry's time) and keeps a
//! window of them; the stream (`GET /v1/events`), the webhooks and the statistics all
//! read them from there.
//!
//! The wire form of one event is the envelope `{id, type, seq, time, data}`:
//! `type` is the dotted name below (`task.offered`), `data` the variant's fields.
//! Each variant has a JSON Schema in `protocol/v1/events.schema.json`.

use crate::agent::Status;
use crate::clock::Ts;
use crate::ids::{ActivityId, AgentId, Channel, CustomerId, OfferId, QueueId, RequestId, TaskId};
use crate::task::Task;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, OnceLock};

mod size;
pub mod stream;
pub mod window;
pub use window::{EventLog, EventLogSnapshot, EventsGone, Retention};

/// Where an ending offer's task was: what a statistic needs to tell an abandon (the
/// caller hung up while waiting) from a task cancelled in an agent's hands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskPhase {
    /// Waiting in its queue.
    Queued,
    /// Ringing at an agent.
    Offered,
    /// In an agent's hands.
    Assigned,
}

/// Why an offer was withdrawn before the agent answered it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WithdrawReason {
    /// The task was cancelled.
    Cancelled,
    /// The task was transferred elsewhere.
    Transferred,
    /// The agent went offline (logged out, lost past grace).
    AgentOffline,
    /// A supervisor set the agent Not Ready while the offer rang.
    Supervisor,
    /// The agent's desktop dropped and did not come back within
    /// `routing.away_offer_secs` (or its node was lost).
    DesktopGone,
    /// A consult ended before the asked agent answered (the asking agent took it back,
    /// completed the task or lost it).
    ConsultEnded,
}

/// One fact a decision established. The serde tag is the event's dotted `type`; the
/// content is its `data`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum EventData {
    /// A task was created (an integration's `POST /v1/tasks`; not on an idempotent
    /// repeat).
    #[serde(rename = "task.created")]
    TaskCreated {
        /// The task as created (shared with the routing book until it changes).
        task: Arc<Task>,
    },
    /// A task entered a queue's waiting line: after its creation, after an offer ended
    /// without an accept (declined, expired, withdrawn from an agent gone offline), after
    /// a transfer to a queue, after an overflow.
    #[serde(rename = "task.queued")]
    TaskQueued {
        /// The task.
        task_id: TaskId,
        /// The queue it waits in now.
        queue: QueueId,
        /// Its channel.
        channel: Channel,
        /// Its priority now.
        priority: i64,
        /// When the task arrived (its creation): it keeps its age and its place in line
        /// across re-queues and transfers.
        enqueued_at: Ts,
        /// False on its first queueing after creation.
        requeued: bool,
    },
    /// A task was offered to an agent. Bridging a call to the offer after `deadline` is
    /// wrong: the offer has expired by then.
    #[serde(rename = "task.offered")]
    TaskOffered {
        /// The task.
        task_id: TaskId,
        /// The offer.
        offer_id: OfferId,
        /// The agent it rings at.
        agent_id: AgentId,
        /// The queue it came from.
        queue: QueueId,
        /// Its channel.
        channel: Channel,
        /// When the offer expires unless accepted.
        deadline: Ts,
    },
    /// The agent accepted the offer (followed by `task.assigned`).
    #[serde(rename = "offer.accepted")]
    OfferAccepted {
        /// The task.
        task_id: TaskId,
        /// The offer.
        offer_id: OfferId,
        /// The agent.
        agent_id: AgentId,
    },
    /// The agent declined the offer.
    #[serde(rename = "offer.declined")]
    OfferDeclined {
        /// The task.
        task_id: TaskId,
        /// The offer.
        offer_id: OfferId,
        /// The agent.
        agent_id: AgentId,
        /// The reason the agent gave.
        reason: Option<String>,
    },
    /// The offer's deadline passed without an answer.
    #[serde(rename = "offer.expired")]
    OfferExpired {
        /// The task.
        task_id: TaskId,
        /// The offer.
        offer_id: OfferId,
        /// The agent.
        agent_id: AgentId,
    },
    /// The offer was taken back before the agent answered.
    #[serde(rename = "offer.withdrawn")]
    OfferWithdrawn {
        /// The task.
        task_id: TaskId,
        /// The offer.
        offer_id: OfferId,
        /// The agent.
        agent_id: AgentId,
        /// Why.
        reason: WithdrawReason,
    },
    /// A task is in an agent's hands (after an accept, or a transfer landing).
    #[serde(rename = "task.assigned")]
    TaskAssigned {
        /// The task.
        task_id: TaskId,
        /// The agent.
        agent_id: AgentId,
        /// The queue it was answered from.
        queue: QueueId,
        /// Its channel.
        channel: Channel,
        /// When the task arrived (its creation, kept across transfers): `time -
        /// enqueued_at` is the caller's whole wait. The statistics count a transfer or an
        /// overflow as a new arrival in its queue (protocol/README.md, Statistics).
        enqueued_at: Ts,
        /// The activity it became, when the customer context made one.
        activity_id: Option<ActivityId>,
        /// The customer, when known.
        customer_id: Option<CustomerId>,
        /// The request the activity is on.
        request_id: Option<RequestId>,
    },
    /// The agent completed the task.
    #[serde(rename = "task.completed")]
    TaskCompleted {
        /// The task.
        task_id: TaskId,
        /// The agent.
        agent_id: AgentId,
        /// The queue it was answered from.
        queue: QueueId,
        /// Its channel.
        channel: Channel,
        /// When it was accepted: `time - accepted_at` is the handle time.
        accepted_at: Ts,
        /// The wrap-up code the agent gave.
        wrap_up_code: Option<String>,
    },
    /// The task was cancelled (the caller hung up, the integration withdrew it).
    #[serde(rename = "task.cancelled")]
    TaskCancelled {
        /// The task.
        task_id: TaskId,
        /// The queue it was in.
        queue: QueueId,
        /// Its channel.
        channel: Channel,
        /// Where it was when cancelled: `queued` or `offered` is an abandon.
        phase: TaskPhase,
        /// When the task arrived (its creation, kept across transfers): `time -
        /// enqueued_at` is how long the caller waited.
        enqueued_at: Ts,
        /// The reason the integration gave.
        reason: Option<String>,
    },
    /// The task was transferred (to a queue, or to one agent).
    #[serde(rename = "task.transferred")]
    TaskTransferred {
        /// The task.
        task_id: TaskId,
        /// The agent who had it, if one did.
        from_agent: Option<AgentId>,
        /// The queue it was in.
        from_queue: QueueId,
        /// The agent it goes to, for a transfer to one agent.
        to_agent: Option<AgentId>,
        /// The queue it goes to.
        to_queue: QueueId,
    },
    /// An agent logged in (not on a reconnect within grace).
    #[serde(rename = "agent.logged_in")]
    AgentLoggedIn {
        /// The agent.
        agent_id: AgentId,
    },
    /// An agent's status or Not Ready reason changed.
    #[serde(rename = "agent.state_changed")]
    AgentStateChanged {
        /// The agent.
        agent_id: AgentId,
        /// The status now.
        status: Status,
        /// The Not Ready reason now.
        reason: Option<String>,
        /// The status before.
        previous: Status,
        /// The Not Ready reason before.
        previous_reason: Option<String>,
        /// When the previous status began: `time - previous_since` is the time spent in it.
        previous_since: Ts,
    },
    /// An agent logged out, or was logged out.
    #[serde(rename = "agent.logged_out")]
    AgentLoggedOut {
        /// The agent.
        agent_id: AgentId,
        /// True when a supervisor logged it out.
        by_supervisor: bool,
    },
    /// An agent's desktop dropped; its grace period runs until `grace_until`.
    #[serde(rename = "agent.connection_lost")]
    AgentConnectionLost {
        /// The agent.
        agent_id: AgentId,
        /// When the agent goes offline unless it reconnects.
        grace_until: Ts,
    },
    /// A customer record was created.
    #[serde(rename = "customer.created")]
    CustomerCreated {
        /// The customer.
        customer_id: CustomerId,
        /// Its version.
        version: u64,
    },
    /// A customer record was changed.
    #[serde(rename = "customer.updated")]
    CustomerUpdated {
        /// The customer.
        customer_id: CustomerId,
        /// Its new version.
        version: u64,
    },
    /// A request was opened on a customer.
    #[serde(rename = "request.opened")]
    RequestOpened {
        /// The request.
        request_id: RequestId,
        /// Its customer.
        customer_id: CustomerId,
    },
    /// A request was closed.
    #[serde(rename = "request.closed")]
    RequestClosed {
        /// The request.
        request_id: RequestId,
        /// Its customer.
        customer_id: CustomerId,
    },
    /// A closed request was reopened.
    #[serde(rename = "request.reopened")]
    RequestReopened {
        /// The request.
        request_id: RequestId,
        /// Its customer.
        customer_id: CustomerId,
    },
    /// An activity was created (an accepted task, or one an agent logged).
    #[serde(rename = "activity.created")]
    ActivityCreated {
        /// The activity.
        activity_id: ActivityId,
        /// Its request, when it has one.
        request_id: Option<RequestId>,
        /// Its customer, when known.
        customer_id: Option<CustomerId>,
        /// The task it came from.
        task_id: Option<TaskId>,
    },
    /// An activity was closed.
    #[serde(rename = "activity.closed")]
    ActivityClosed {
        /// The activity.
        activity_id: ActivityId,
        /// Its request, when it has one.
        request_id: Option<RequestId>,
        /// Its customer, when known.
        customer_id: Option<CustomerId>,
    },
    /// A node was declared lost; its agents' grace periods started.
    #[serde(rename = "node.lost")]
    NodeLost {
        /// The node's name (node id and incarnation).
        node: String,
    },
}

impl EventData {
    /// The event's dotted type name, as on the wire.
    pub fn type_name(&self) -> &'static str {
        match self {
            EventData::TaskCreated { .. } => "task.created",
            EventData::TaskQueued { .. } => "task.queued",
            EventData::TaskOffered { .. } => "task.offered",
            EventData::OfferAccepted { .. } => "offer.accepted",
            EventData::OfferDeclined { .. } => "offer.declined",
            EventData::OfferExpired { .. } => "offer.expired",
            EventData::OfferWithdrawn { .. } => "offer.withdrawn",
            EventData::TaskAssigned { .. } => "task.assigned",
            EventData::TaskCompleted { .. } => "task.completed",
            EventData::TaskCancelled { .. } => "task.cancelled",
            EventData::TaskTransferred { .. } => "task.transferred",
            EventData::AgentLoggedIn { .. } => "agent.logged_in",
            EventData::AgentStateChanged { .. } => "agent.state_changed",
            EventData::AgentLoggedOut { .. } => "agent.logged_out",
            EventData::AgentConnectionLost { .. } => "agent.connection_lost",
            EventData::CustomerCreated { .. } => "customer.created",
            EventData::CustomerUpdated { .. } => "customer.updated",
            EventData::RequestOpened { .. } => "request.opened",
            EventData::RequestClosed { .. } => "request.closed",
            EventData::RequestReopened { .. } => "request.reopened",
            EventData::ActivityCreated { .. } => "activity.created",
            EventData::ActivityClosed { .. } => "activity.closed",
            EventData::NodeLost { .. } => "node.lost",
        }
    }

    /// Every type name, in the catalog's order.
    pub const TYPES: [&'static str; 23] = [
        "task.created",
        "task.queued",
        "task.offered",
        "offer.accepted",
        "offer.declined",
        "offer.expired",
        "offer.withdrawn",
        "task.assigned",
        "task.completed",
        "task.cancelled",
        "task.transferred",
        "agent.logged_in",
        "agent.state_changed",
        "agent.logged_out",
        "agent.connection_lost",
        "customer.created",
        "customer.updated",
        "request.opened",
        "request.closed",
        "request.reopened",
        "activity.created",
        "activity.closed",
        "node.lost",
    ];

    /// The task an event is about, if any: events of one task are delivered in order.
    pub fn task_id(&self) -> Option<TaskId> {
        match self {
            EventData::TaskCreated { task } => Some(task.task_id),
            EventData::TaskQueued { task_id, .. }
            | EventData::TaskOffered { task_id, .. }
            | EventData::OfferAccepted { task_id, .. }
            | EventData::OfferDeclined { task_id, .. }
            | EventData::OfferExpired { task_id, .. }
            | EventData::OfferWithdrawn { task_id, .. }
            | EventData::TaskAssigned { task_id, .. }
            | EventData::TaskCompleted { task_id, .. }
            | EventData::TaskCancelled { task_id, .. }
            | EventData::TaskTransferred { task_id, .. } => Some(*task_id),
            // The activity an accept made is part of that task's story: a receiver must
            // not see it before the task's `offer.accepted`.
            EventData::ActivityCreated { task_id, .. } => *task_id,
            _ => None,
        }
    }

    /// The agents an event is about: [`EventData::agent_id`], or both agents of a
    /// transfer from one to another (events of one agent are delivered in order).
    pub fn agents(&self) -> [Option<&AgentId>; 2] {
        match self {
            EventData::TaskTransferred {
                from_agent,
                to_agent,
                ..
            } => [from_agent.as_ref(), to_agent.as_ref()],
            other => [other.agent_id(), None],
        }
    }

    /// The agent an event is about, if any: events of one agent are delivered in order.
    pub fn agent_id(&self) -> Option<&AgentId> {
        match self {
            EventData::TaskOffered { agent_id, .. }
            | EventData::OfferAccepted { agent_id, .. }
            | EventData::OfferDeclined { agent_id, .. }
            | EventData::OfferExpired { agent_id, .. }
            | EventData::OfferWithdrawn { agent_id, .. }
            | EventData::TaskAssigned { agent_id, .. }
            | EventData::TaskCompleted { agent_id, .. }
            | EventData::AgentLoggedIn { agent_id }
            | EventData::AgentStateChanged { agent_id, .. }
            | EventData::AgentLoggedOut { agent_id, .. }
            | EventData::AgentConnectionLost { agent_id, .. } => Some(agent_id),
            _ => None,
        }
    }
}

/// A piece of the window for a stream reader or a webhook endpoint
/// (`Hub::events_chunk`).
pub struct EventChunk {
    /// Held events, in order.
    pub events: Vec<Arc<Envelope>>,
    /// The oldest event served when they were read.
    pub oldest: u64,
    /// The live events from the one after `events`' last on: only when they reached
    /// the newest event.
    pub live: Option<tokio::sync::broadcast::Receiver<Arc<Envelope>>>,
}

/// One numbered event: its place in the log (`seq`, dense from 1 within an epoch), the
/// log entry's time, the fact, and its wire form.
///
/// The wire form is made by the first reader that asks for it ([`Envelope::json`]: a
/// stream reader, a webhook delivery) and shared by every later one; a decision nobody
/// reads never encodes its events. The decision only numbers them, under the store's
/// lock.
#[derive(Debug)]
pub struct Envelope {
    /// The sequence number.
    pub seq: u64,
    /// The log entry's time.
    pub time: Ts,
    /// The fact.
    pub data: EventData,
    /// The log's epoch (one allocation shared by every event of it).
    epoch: Arc<str>,
    /// The most bytes the wire text takes ([`size::wire_bound`]): what the window
    /// charges for the event, encoded or not.
    bound: usize,
    /// The wire envelope: `{"id": "<epoch>-<seq>", "type", "seq", "time", "epoch",
    /// "data"}`, once a reader asked for it.
    json: OnceLock<Box<str>>,
}

/// Two envelopes are equal when they number the same fact alike, whether or not either
/// has made its wire text yet (the text follows from the rest).
impl PartialEq for Envelope {
    fn eq(&self, other: &Envelope) -> bool {
        self.seq == other.seq
            && self.time == other.time
            && self.epoch == other.epoch
            && self.data == other.data
    }
}

impl Envelope {
    /// Numbers `data` in `epoch`; its wire form is made when first read.
    pub fn new(epoch: impl Into<Arc<str>>, seq: u64, time: Ts, data: EventData) -> Envelope {
        let epoch = epoch.into();
        let bound = size::wire_bound(&epoch, seq, &data);
        Envelope {
            seq,
            time,
            data,
            epoch,
            bound,
            json: OnceLock::new(),
        }
    }

    /// The wire envelope, made on the first call (by whichever reader comes first) and
    /// shared by every later one.
    pub fn json(&self) -> &str {
        self.json.get_or_init(|| {
            let text = wire(&self.epoch, self.seq, self.time, &self.data, self.bound);
            debug_assert!(
                text.len() <= self.bound,
                "{} is {} bytes, bound {}",
                self.type_name(),
                text.len(),
                self.bound
            );
            text.into_boxed_str()
        })
    }

    /// Whether a reader has made the wire text yet.
    pub fn is_encoded(&self) -> bool {
        self.json.get().is_some()
    }

    /// The most bytes the wire text takes, made or not: what the window's byte limit
    /// counts.
    pub fn wire_bound(&self) -> usize {
        self.bound
    }

    /// The event's dotted type name.
    pub fn type_name(&self) -> &'static str {
        self.data.type_name()
    }
}

/// The wire envelope of one event, written into one buffer: the envelope's own
/// fields, then serde's adjacently tagged form of the catalog
/// (`{"type":"<t>","data":<data>}`) with its tag cut off, so that the variant's fields
/// are encoded once, straight into place, and never as a tree.
fn wire(epoch: &str, seq: u64, time: Ts, data: &EventData, bound: usize) -> String {
    let ty = data.type_name();
    let mut out = String::with_capacity(bound);
    // {"id":"<epoch>-<seq>","type":"<ty>","seq":<seq>,"time":"<time>","epoch":"<epoch>",
    // "data":, piece by piece (`write!` costs a fifth of the encoding).
    out.push_str(r#"{"id":""#);
    out.push_str(epoch);
    out.push('-');
    push_u64(&mut out, seq);
    out.push_str(r#"","type":""#);
    out.push_str(ty);
    out.push_str(r#"","seq":"#);
    push_u64(&mut out, seq);
    out.push_str(r#","time":""#);
    time.push_rfc3339(&mut out);
    out.push_str(r#"","epoch":""#);
    out.push_str(epoch);
    out.push_str(r#"","data":"#);
    // A text of its own, copied in past the tag: `to_string` does not check again that
    // what serde_json wrote is UTF-8, as `String::from_utf8` over the envelope did (a
    // tenth of the encoding, under callgrind).
    let tagged = serde_json::to_string(data).unwrap_or_default();
    let head_len = r#"{"type":"","data":"#.len() + ty.len();
    let tagged_ok = tagged.starts_with(r#"{"type":""#)
        && tagged.get(head_len - 8..head_len) == Some(r#","data":"#)
        && tagged.ends_with("}}");
    if tagged_ok {
        // The tagged form's closing brace closes the envelope.
        out.push_str(&tagged[head_len..]);
    } else {
        // Not the expected shape (cannot happen with serde_json's writer); the slow
        // way, through a tree.
        let inner = serde_json::to_value(data)
            .ok()
            .and_then(|v| v.get("data").map(|d| d.to_string()))
            .unwrap_or_else(|| "{}".into());
        out.push_str(&inner);
        out.push('}');
    }
    out
}

/// Appends `n` in decimal.
pub(crate) fn push_u64(out: &mut String, n: u64) {
    let mut buf = [0u8; 20];
    // ASCII digits.
    out.push_str(std::str::from_utf8(decimal(n, &mut buf)).unwrap_or_default());
}

/// `n` in decimal, written at the end of `buf` (no allocation, unlike `to_string`).
pub(crate) fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[at..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_activity_made_by_a_task_is_ordered_with_it() {
        let task_id = TaskId(uuid::Uuid::from_u128(7));
        let e = EventData::ActivityCreated {
            activity_id: ActivityId(uuid::Uuid::from_u128(8)),
            request_id: None,
            customer_id: None,
            task_id: Some(task_id),
        };
        assert_eq!(e.task_id(), Some(task_id));
    }

    #[test]
    fn the_wire_text_is_the_envelope_byte_for_byte() {
        let e = Envelope::new(
            "ep",
            12,
            Ts(2_000_000),
            EventData::NodeLost {
                node: "n\"1".into(),
            },
        );
        assert!(!e.is_encoded());
        assert_eq!(
            e.json(),
            r#"{"id":"ep-12","type":"node.lost","seq":12,"time":"1970-01-01T00:00:02.000Z","epoch":"ep","data":{"node":"n\"1"}}"#
        );
        assert!(e.is_encoded());
        for n in [0, 7, 10, 99_999, u64::MAX] {
            let mut out = String::new();
            push_u64(&mut out, n);
            assert_eq!(out, n.to_string());
        }
    }

    #[test]
    fn the_type_list_names_every_variant_once() {
        let mut seen = std::collections::BTreeSet::new();
        for t in EventData::TYPES {
            assert!(seen.insert(t), "{t} twice");
        }
        let e = EventData::NodeLost { node: "n".into() };
        let v = serde_json::to_value(&e).expect("encodes");
        assert_eq!(v["type"], e.type_name());
        assert_eq!(v["data"]["node"], "n");
    }
}

#[cfg(test)]
mod schema_tests;
