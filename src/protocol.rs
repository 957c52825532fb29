//! The wire protocol, version 1: JSON text frames on `/v1/ws`.
//!
//! Only this module and `http.rs` know JSON shapes. Every frame is an object with a
//! `type`. A client request may carry an `id` (a string of at most 100 characters); the
//! hub echoes it as `re` in the `reply` or `error` that answers it. Frames the hub
//! pushes on its own (offers, state changes) have no `re`. `protocol/v1/` documents
//! every message with a JSON Schema; the integration tests validate every frame
//! against it.

use crate::clock::Ts;
use crate::context::record::{Activity, CustomerFields, JourneyEvent, Note, Request, RequestState};
use crate::context::{ContextReply, CustomerSummary, CustomerView, Lists, RecordChange};
use crate::error::{ErrorCode, HubError, OfferEnd};
use crate::ids::{ActivityId, CustomerId, OfferId, RequestId, TaskId};
use crate::routing::{AgentSummary, AgentView, OfferView, QueueStats, Snapshot};
use crate::stats::report::StatsReport;
use crate::task::Task;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;

/// The websocket subprotocol name of this version.
pub const SUBPROTOCOL: &str = "switchboard.v1";
/// The most characters of a request id.
pub const MAX_REQUEST_ID_CHARS: usize = 100;

/// Where a transfer goes, as asked on the websocket or over HTTP.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    /// A queue.
    #[serde(default)]
    pub to_queue: Option<String>,
    /// One agent.
    #[serde(default)]
    pub to_agent: Option<String>,
    /// A new priority (queue transfers).
    #[serde(default)]
    pub priority: Option<i64>,
    /// New required skills (queue transfers).
    #[serde(default)]
    pub skills: Option<Vec<String>>,
    /// Ahead of every task waiting in the queue (queue transfers).
    #[serde(default)]
    pub head: bool,
}

impl TransferRequest {
    /// The routing book's destination, or the field that is wrong.
    pub fn destination(self) -> Result<crate::routing::TransferTo, HubError> {
        use crate::ids::{AgentId, QueueId};
        use crate::routing::TransferTo;
        match (self.to_queue, self.to_agent) {
            (Some(q), None) => {
                crate::task::check_name("to_queue", &q)?;
                Ok(TransferTo::Queue {
                    queue: QueueId::from(q.as_str()),
                    priority: self.priority,
                    skills: self.skills,
                    head: self.head,
                })
            }
            (None, Some(a)) => {
                crate::task::check_name("to_agent", &a)?;
                if self.priority.is_some() || self.skills.is_some() || self.head {
                    return Err(HubError::invalid(
                        "to_agent",
                        "priority, skills and head are for a transfer to a queue",
                    ));
                }
                Ok(TransferTo::Agent(AgentId::from(a.as_str())))
            }
            _ => Err(HubError::invalid(
                "to_queue",
                "give exactly one of to_queue and to_agent",
            )),
        }
    }
}

/// What an agent may ask to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestedState {
    /// Ready for work.
    Ready,
    /// Not Ready; a reason code is required.
    NotReady,
}

/// A request from a desktop (agent) or a supervisor console.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// Application-level heartbeat; the hub answers with an empty `reply`.
    Ping {},
    /// Replace the token the connection was opened with by a fresh one (same `sub` and
    /// role, a later `exp`): the session then ends at the new token's expiry instead.
    RefreshToken {
        /// The new token.
        token: String,
    },
    /// The agent's full current view.
    GetState {},
    /// Become Ready or Not Ready.
    SetState {
        /// The state asked for.
        state: RequestedState,
        /// The reason code, required for Not Ready.
        #[serde(default)]
        reason: Option<String>,
    },
    /// Accept the pending offer.
    Accept {
        /// The offer.
        offer_id: OfferId,
    },
    /// Decline the pending offer.
    Decline {
        /// The offer.
        offer_id: OfferId,
        /// Why, free text.
        #[serde(default)]
        reason: Option<String>,
    },
    /// Complete a task in progress.
    Complete {
        /// The task.
        task_id: TaskId,
        /// An optional wrap-up code.
        #[serde(default)]
        wrap_up_code: Option<String>,
    },
    /// Log out: the pending offer and tasks in progress go back to their queues.
    Logout {},
    /// Agent (a task in its In Progress list) or supervisor (any task not finished):
    /// transfer a task to a queue or to one agent. Exactly one of `to_queue`, `to_agent`.
    Transfer {
        /// The task.
        task_id: TaskId,
        /// A queue.
        #[serde(default)]
        to_queue: Option<String>,
        /// One agent.
        #[serde(default)]
        to_agent: Option<String>,
        /// A new priority (queue transfers).
        #[serde(default)]
        priority: Option<i64>,
        /// New required skills (queue transfers).
        #[serde(default)]
        skills: Option<Vec<String>>,
        /// Ahead of every task waiting in the queue (queue transfers).
        #[serde(default)]
        head: bool,
    },
    /// Agent: ask another agent to take a task in progress (warm transfer); the task
    /// stays this agent's until the other accepts.
    Consult {
        /// The task.
        task_id: TaskId,
        /// The agent asked.
        to_agent: String,
    },
    /// Agent: take back a consult before the other agent accepted.
    CancelConsult {
        /// The task.
        task_id: TaskId,
    },
    /// Supervisor: the whole picture again.
    GetSnapshot {},
    /// Supervisor: set an agent Not Ready.
    SetAgentState {
        /// The agent.
        agent_id: String,
        /// Only `not_ready` is allowed.
        state: RequestedState,
        /// A configured reason code; the `supervisor` built-in when absent.
        #[serde(default)]
        reason: Option<String>,
    },
    /// Supervisor: log an agent out.
    LogoutAgent {
        /// The agent.
        agent_id: String,
    },
    /// The agent's Open and Recent lists.
    GetLists {},
    /// Search customers by name, email, phone or request title (case- and
    /// accent-insensitive).
    SearchCustomers {
        /// The text.
        query: String,
        /// At most this many (default 20, at most 50).
        #[serde(default)]
        limit: Option<usize>,
    },
    /// Load a customer with its requests and recent activities, and watch it.
    GetCustomer {
        /// The customer.
        customer_id: CustomerId,
    },
    /// Stop watching a customer loaded earlier.
    UnwatchCustomer {
        /// The customer.
        customer_id: CustomerId,
    },
    /// Load a request.
    GetRequest {
        /// The request.
        request_id: RequestId,
    },
    /// Load an activity.
    GetActivity {
        /// The activity.
        activity_id: ActivityId,
    },
    /// Create a customer; with `activity_id`, link that unknown interaction to it.
    CreateCustomer {
        /// The fields.
        customer: CustomerFields,
        /// An interaction of this agent that has no customer.
        #[serde(default)]
        activity_id: Option<ActivityId>,
    },
    /// Change a customer.
    UpdateCustomer {
        /// The customer.
        customer_id: CustomerId,
        /// The version the change is based on.
        base_version: u64,
        /// The fields to change; absent fields stay.
        changes: CustomerFields,
    },
    /// Link an unknown interaction to an existing customer.
    LinkActivity {
        /// The interaction.
        activity_id: ActivityId,
        /// The customer.
        customer_id: CustomerId,
    },
    /// Move the agent's open interaction to another request of its customer, or to a
    /// new one.
    MoveActivity {
        /// The interaction.
        activity_id: ActivityId,
        /// The request to move to; absent: a new request.
        #[serde(default)]
        request_id: Option<RequestId>,
    },
    /// Open a new request for a customer.
    CreateRequest {
        /// The customer.
        customer_id: CustomerId,
        /// Title.
        #[serde(default)]
        title: String,
        /// Description.
        #[serde(default)]
        description: String,
    },
    /// Change a request, or close or reopen it.
    UpdateRequest {
        /// The request.
        request_id: RequestId,
        /// The version the change is based on.
        base_version: u64,
        /// New title.
        #[serde(default)]
        title: Option<String>,
        /// New description.
        #[serde(default)]
        description: Option<String>,
        /// `closed` to close, `open` to reopen.
        #[serde(default)]
        state: Option<RequestState>,
    },
    /// Change an activity's notes or tags.
    UpdateActivity {
        /// The activity.
        activity_id: ActivityId,
        /// The version the change is based on.
        base_version: u64,
        /// New notes.
        #[serde(default)]
        notes: Option<String>,
        /// The whole tag list.
        #[serde(default)]
        tags: Option<Vec<String>>,
    },
    /// Add a quick note to a customer's or a request's timeline.
    AddNote {
        /// The customer.
        customer_id: CustomerId,
        /// The request, for a request's timeline.
        #[serde(default)]
        request_id: Option<RequestId>,
        /// The text.
        text: String,
    },
    /// A customer's journey, optionally narrowed to one request.
    GetJourney {
        /// The customer.
        customer_id: CustomerId,
        /// The request.
        #[serde(default)]
        request_id: Option<RequestId>,
        /// Newest events, at most this many (default 100, at most 1000).
        #[serde(default)]
        limit: Option<usize>,
    },
    /// Close an interaction. Without a customer, `choice` is required.
    CloseInteraction {
        /// The interaction.
        activity_id: ActivityId,
        /// `create` (with `customer`) or `discard`.
        #[serde(default)]
        choice: Option<CloseChoiceName>,
        /// The new customer's fields, with `choice: create`.
        #[serde(default)]
        customer: Option<CustomerFields>,
    },
    /// Reopen a closed customer from Recent or Search, to update it.
    ReopenCustomer {
        /// The customer.
        customer_id: CustomerId,
    },
    /// Take a reopened customer off the Open list.
    CloseCustomer {
        /// The customer.
        customer_id: CustomerId,
    },
}

/// The choice when closing an interaction whose customer was never created.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseChoiceName {
    /// Create the customer.
    Create,
    /// Close without one.
    Discard,
}

/// The `type` values a client may send, to tell an unknown type from a malformed one.
pub const CLIENT_TYPES: &[&str] = &[
    "ping",
    "refresh_token",
    "get_state",
    "set_state",
    "accept",
    "decline",
    "complete",
    "logout",
    "get_snapshot",
    "set_agent_state",
    "logout_agent",
    "transfer",
    "consult",
    "cancel_consult",
    "get_lists",
    "search_customers",
    "get_customer",
    "unwatch_customer",
    "get_request",
    "get_activity",
    "create_customer",
    "update_customer",
    "link_activity",
    "move_activity",
    "create_request",
    "update_request",
    "update_activity",
    "add_note",
    "get_journey",
    "close_interaction",
    "reopen_customer",
    "close_customer",
];

/// A frame that could not be turned into a request: the error and the request id, if
/// one could be read.
#[derive(Debug)]
pub struct BadFrame {
    /// The request id, when the frame had a readable one.
    pub re: Option<String>,
    /// What is wrong.
    pub code: ErrorCode,
    /// For people.
    pub message: String,
}

/// Parses one text frame into its request id and request.
pub fn parse_client(text: &str) -> Result<(Option<String>, ClientMessage), BadFrame> {
    let bad = |re: Option<String>, code, message: String| BadFrame { re, code, message };
    let mut v: Value = serde_json::from_str(text)
        .map_err(|e| bad(None, ErrorCode::BadJson, format!("not JSON: {e}")))?;
    let Some(obj) = v.as_object_mut() else {
        return Err(bad(
            None,
            ErrorCode::InvalidMessage,
            "a frame must be a JSON object".into(),
        ));
    };
    let re = match obj.remove("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.chars().count() <= MAX_REQUEST_ID_CHARS => Some(s),
        Some(_) => {
            return Err(bad(
                None,
                ErrorCode::InvalidMessage,
                format!("id must be a string of at most {MAX_REQUEST_ID_CHARS} characters"),
            ));
        }
    };
    let ty = match obj.get("type") {
        Some(Value::String(t)) => t.clone(),
        _ => {
            return Err(bad(
                re,
                ErrorCode::InvalidMessage,
                "type must be a string".into(),
            ));
        }
    };
    if !CLIENT_TYPES.contains(&ty.as_str()) {
        return Err(bad(
            re,
            ErrorCode::UnknownType,
            format!("unknown message type {ty:?}"),
        ));
    }
    match serde_json::from_value::<ClientMessage>(v) {
        Ok(m) => Ok((re, m)),
        Err(e) => Err(bad(re, ErrorCode::InvalidMessage, format!("{ty}: {e}"))),
    }
}

/// The answer to a request that succeeded.
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum ReplyBody {
    /// The answer to `ping`: the hub's clock when it answered, so that a client can
    /// measure its clock's offset from the round trip.
    Pong {
        /// The hub's clock.
        server_time: Ts,
    },
    /// Nothing more to say.
    Empty {},
    /// The agent's view.
    Agent {
        /// The view.
        agent: Box<AgentView>,
    },
    /// A task, and on accept the activity it became.
    Task {
        /// The task.
        task: Arc<Task>,
        /// On accept: the activity.
        #[serde(skip_serializing_if = "Option::is_none")]
        activity: Option<Box<Activity>>,
    },
    /// A supervisor snapshot.
    Snapshot(Box<Snapshot>),
    /// A customer with its requests and recent activities.
    Customer(Box<CustomerView>),
    /// A request.
    Request {
        /// The request.
        request: Box<Request>,
    },
    /// An activity.
    Activity {
        /// The activity.
        activity: Box<Activity>,
    },
    /// A note.
    Note {
        /// The note.
        note: Box<Note>,
    },
    /// Search results.
    Customers {
        /// The customers found.
        customers: Vec<CustomerSummary>,
    },
    /// A journey, oldest first.
    Journey {
        /// The events.
        journey: Vec<JourneyEvent>,
    },
    /// The Open and Recent lists.
    Lists {
        /// The lists.
        lists: Box<Lists>,
    },
}

impl From<ContextReply> for ReplyBody {
    fn from(r: ContextReply) -> ReplyBody {
        match r {
            ContextReply::Done => ReplyBody::Empty {},
            ContextReply::Customer(c) => ReplyBody::Customer(c),
            ContextReply::Request(request) => ReplyBody::Request { request },
            ContextReply::Activity(activity) => ReplyBody::Activity { activity },
            ContextReply::Note(note) => ReplyBody::Note { note },
            ContextReply::Customers(customers) => ReplyBody::Customers { customers },
            ContextReply::Journey(journey) => ReplyBody::Journey { journey },
            ContextReply::Lists(lists) => ReplyBody::Lists { lists },
        }
    }
}

/// The body of an error, on the wire and over HTTP.
#[derive(Clone, Debug, Serialize)]
pub struct ErrorBody {
    /// The wire code.
    pub code: ErrorCode,
    /// For people.
    pub message: String,
    /// The field the error is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The limit broken.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// On `version_conflict`: what to load.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub conflict: Option<Box<Conflict>>,
    /// On `events_gone`: the oldest event still held.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest_seq: Option<u64>,
    /// On `events_gone`: the hub's epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
}

/// What a `version_conflict` error carries for the caution prompt.
#[derive(Clone, Debug, Serialize)]
pub struct Conflict {
    /// The current record, to load and re-apply on.
    pub current: Value,
    /// The current version.
    pub version: u64,
    /// Who made the last change.
    pub changed_by: crate::context::record::Actor,
    /// When.
    pub changed_at: crate::clock::Ts,
}

impl From<&HubError> for ErrorBody {
    fn from(e: &HubError) -> ErrorBody {
        let mut b = ErrorBody::new(e.code(), e.to_string());
        b.field = e.field().map(str::to_owned);
        b.limit = e.limit();
        if let HubError::EventsGone { oldest, epoch, .. } = e {
            b.oldest_seq = Some(*oldest);
            b.epoch = Some(epoch.clone());
        }
        if let HubError::VersionConflict {
            version,
            current,
            changed_by,
            changed_at,
            ..
        } = e
        {
            b.conflict = Some(Box::new(Conflict {
                current: (**current).clone(),
                version: *version,
                changed_by: changed_by.clone(),
                changed_at: *changed_at,
            }));
        }
        b
    }
}

impl ErrorBody {
    /// An error with just a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            code,
            message: message.into(),
            field: None,
            limit: None,
            conflict: None,
            oldest_seq: None,
            epoch: None,
        }
    }
}

/// A supervisor's `snapshot` frame: the board (agents and queues) and the statistics.
#[derive(Clone, Debug, Serialize)]
pub struct SupervisorSnapshot<'a> {
    /// Agents and queues.
    #[serde(flatten)]
    pub board: &'a Snapshot,
    /// The statistics report, when the store could build one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats: Option<&'a StatsReport>,
}

/// A frame the hub sends.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage<'a> {
    /// First frame to an agent: who it is, and everything needed to resume.
    Welcome {
        /// This connection's id.
        session_id: String,
        /// The protocol version spoken.
        protocol: &'static str,
        /// Whether the agent picked up a session it had (reconnect within grace, takeover).
        resumed: bool,
        /// How often the hub pings; a client may also send `ping` frames.
        heartbeat_ms: u64,
        /// The hub's clock when it sent this frame: a first estimate of the offset between
        /// the desktop's clock and the one offer deadlines are written in.
        server_time: Ts,
        /// The agent's state, pending offer and In Progress list.
        agent: &'a AgentView,
        /// The Open and Recent lists.
        lists: &'a Lists,
    },
    /// A request succeeded.
    Reply {
        /// The request's id.
        re: Option<String>,
        /// The result.
        result: ReplyBody,
    },
    /// A request failed, or a frame was refused.
    Error {
        /// The request's id, when it had a readable one.
        re: Option<String>,
        /// What went wrong.
        #[serde(flatten)]
        error: ErrorBody,
    },
    /// A task is offered to this agent.
    Offer {
        /// The offer.
        offer: &'a OfferView,
    },
    /// This agent's pending offer ended without its accept.
    OfferEnded {
        /// The offer.
        offer_id: OfferId,
        /// Its task.
        task_id: TaskId,
        /// How it ended: expired, withdrawn.
        reason: OfferEnd,
    },
    /// A task in this agent's In Progress list was cancelled from outside.
    TaskCancelled {
        /// The task.
        task_id: TaskId,
        /// Why, as the integration said.
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// This agent's state changed.
    State {
        /// The new view.
        agent: &'a AgentView,
    },
    /// A task in this agent's In Progress list was transferred away by a supervisor or
    /// an integration.
    TaskTransferred {
        /// The task.
        task_id: TaskId,
    },
    /// A transfer this agent made to one agent ended.
    TransferEnded {
        /// The task.
        task_id: TaskId,
        /// The agent it went to.
        agent_id: &'a crate::ids::AgentId,
        /// How it ended.
        result: crate::routing::TransferResult,
    },
    /// Supervisor: the whole picture (the first frame, and the catch-up of one that fell
    /// behind), with the statistics.
    Snapshot(SupervisorSnapshot<'a>),
    /// Supervisor: the statistics, when something changed (at most every
    /// `server.stats_update_ms`).
    Stats {
        /// The report, as `GET /v1/stats` answers it.
        stats: &'a StatsReport,
    },
    /// Supervisor: one agent's line changed.
    AgentChanged {
        /// The new line.
        agent: &'a AgentSummary,
    },
    /// Supervisor: one queue's numbers changed.
    QueueChanged {
        /// The new numbers.
        queue: &'a QueueStats,
    },
    /// A customer record this agent watches was changed by someone else: the caution
    /// prompt. `change.record` is the record as it is now.
    RecordChanged {
        /// The change.
        change: &'a RecordChange,
    },
    /// The hub is about to close this connection, and why.
    Goodbye {
        /// `replaced`, `logged_out`, `logged_out_by_supervisor`, `shutting_down`,
        /// `slow_consumer`, `rate_limited`, `idle`, `token_expired`, `protocol_error`,
        /// `invalid_utf8`.
        reason: &'a str,
    },
}

impl ServerMessage<'_> {
    /// The frame's text.
    pub fn to_text(&self) -> String {
        // Room for a usual frame (an offer, a state, a reply with its task: 0.5 to 1 KiB)
        // from the start: `serde_json::to_string` starts at 128 bytes and grows three
        // times, copying the text each time, for every frame.
        let mut out = Vec::with_capacity(1024);
        // Serializing these types cannot fail: every map key is a string; serde_json
        // writes UTF-8.
        match serde_json::to_writer(&mut out, self).map(|()| String::from_utf8(out)) {
            Ok(Ok(text)) => text,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "a frame was not UTF-8");
                FRAME_FAILED.to_owned()
            }
            Err(e) => {
                tracing::error!(error = %e, "a frame could not be serialized");
                FRAME_FAILED.to_owned()
            }
        }
    }
}

const FRAME_FAILED: &str =
    r#"{"type":"error","re":null,"code":"internal","message":"a frame could not be serialized"}"#;

/// The error frame for a refused request.
pub fn error_text(re: Option<String>, error: ErrorBody) -> String {
    ServerMessage::Error { re, error }.to_text()
}

#[cfg(test)]
mod tests;
