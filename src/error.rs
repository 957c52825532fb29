//! Errors a caller can act on, and the one table that maps them to wire codes.
//!
//! Every error that leaves the hub, on a websocket or over HTTP, carries an
//! [`ErrorCode`]: a stable snake_case string documented in `protocol/`. The message
//! beside it is for people and may change.

use crate::agent::TransitionError;
use crate::clock::Ts;
use crate::context::record::Actor;
use crate::ids::{ActivityId, CustomerId, RequestId, TaskId};
use serde::Serialize;

/// The wire error codes. `protocol/v1/schema.json` lists the same set.
// Deserialize only in tests: through it serde lists every variant's wire name, which the
// protocol tests compare with the schema and the README.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(serde::Deserialize))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame or body is not JSON.
    BadJson,
    /// The message `type` is not one the hub knows.
    UnknownType,
    /// A field is missing or has the wrong type.
    InvalidMessage,
    /// A field's value breaks a rule (range, format, emptiness).
    InvalidField,
    /// A text field is over its character limit.
    FieldTooLong,
    /// The frame is over the size limit.
    FrameTooLarge,
    /// The HTTP body is over the size limit.
    PayloadTooLarge,
    /// Binary frames are not part of the protocol.
    BinaryNotSupported,
    /// Too many frames on this connection; slow down.
    RateLimited,
    /// No valid token.
    Unauthorized,
    /// The token has expired.
    TokenExpired,
    /// The token's role may not do this.
    Forbidden,
    /// The browser origin is not on the allowed list.
    OriginNotAllowed,
    /// The agent id is not configured.
    UnknownAgent,
    /// The queue id is not configured.
    UnknownQueue,
    /// The queue does not take tasks of this channel.
    ChannelNotServed,
    /// The Not Ready reason code is not configured.
    UnknownReason,
    /// No such task.
    TaskNotFound,
    /// The task is already completed or cancelled.
    TaskFinished,
    /// No such offer pending on this agent.
    OfferNotFound,
    /// The offer expired before the accept arrived.
    OfferExpired,
    /// The offer was withdrawn (the task was cancelled, or a supervisor moved the agent).
    OfferWithdrawn,
    /// The offer belongs to another agent.
    NotYourOffer,
    /// The offer is already accepted or declined.
    OfferClosed,
    /// The agent must accept or decline its pending offer first.
    OfferPending,
    /// The agent is offline.
    AgentOffline,
    /// The task is not in the agent's In Progress list.
    TaskNotInProgress,
    /// The agent cannot take an offer now.
    NotAvailable,
    /// No such route (HTTP).
    NotFound,
    /// The route exists but not with this method (HTTP).
    MethodNotAllowed,
    /// No such customer.
    CustomerNotFound,
    /// No such request.
    RequestNotFound,
    /// No such activity.
    ActivityNotFound,
    /// The record changed since the version the update was based on: the caution
    /// prompt. The error carries the current record, who changed it and when.
    VersionConflict,
    /// The tag is already on the activity (case and surrounding spaces do not count).
    DuplicateTag,
    /// Closing an interaction whose customer was never created needs a choice:
    /// create the customer, or discard.
    CustomerChoiceRequired,
    /// The agent does not have this customer open (accept a task for it, or reopen it).
    RecordNotOpen,
    /// The activity already has its customer.
    AlreadyLinked,
    /// The interaction is already closed.
    InteractionClosed,
    /// A task already transferred `routing.max_transfers` times.
    TransferLimit,
    /// The store behind the hub cannot be reached; nothing was changed.
    StoreUnavailable,
    /// The store did not confirm in time whether the command took effect: it may have
    /// been applied. A retry with the same idempotency key is safe.
    OutcomeUnknown,
    /// The hub is shutting down.
    ShuttingDown,
    /// The request line, a header or the URL could not be read (HTTP).
    BadRequest,
    /// The request's body did not arrive in time (HTTP); the connection is closed.
    RequestTimeout,
    /// The request target is over the length limit (HTTP).
    UriTooLong,
    /// The request's line and headers are over the size limit (HTTP).
    HeadersTooLarge,
    /// The body is not `application/json` (HTTP).
    UnsupportedMediaType,
    /// The hub holds as many connections as it takes, in all or from this address.
    TooManyConnections,
    /// `GET /v1/events`: the events after the position asked for are no longer held
    /// (or the position is from another epoch): resynchronize from `GET /v1/snapshot`
    /// and continue from `oldest_seq - 1`.
    EventsGone,
    /// A fault in the hub; details are in its log.
    Internal,
}

impl ErrorCode {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        // Mirrors the serde names; a test checks the two agree.
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::InvalidMessage => "invalid_message",
            ErrorCode::InvalidField => "invalid_field",
            ErrorCode::FieldTooLong => "field_too_long",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::BinaryNotSupported => "binary_not_supported",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::OriginNotAllowed => "origin_not_allowed",
            ErrorCode::UnknownAgent => "unknown_agent",
            ErrorCode::UnknownQueue => "unknown_queue",
            ErrorCode::ChannelNotServed => "channel_not_served",
            ErrorCode::UnknownReason => "unknown_reason",
            ErrorCode::TaskNotFound => "task_not_found",
            ErrorCode::TaskFinished => "task_finished",
            ErrorCode::OfferNotFound => "offer_not_found",
            ErrorCode::OfferExpired => "offer_expired",
            ErrorCode::OfferWithdrawn => "offer_withdrawn",
            ErrorCode::NotYourOffer => "not_your_offer",
            ErrorCode::OfferClosed => "offer_closed",
            ErrorCode::OfferPending => "offer_pending",
            ErrorCode::AgentOffline => "agent_offline",
            ErrorCode::TaskNotInProgress => "task_not_in_progress",
            ErrorCode::NotAvailable => "not_available",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::CustomerNotFound => "customer_not_found",
            ErrorCode::RequestNotFound => "request_not_found",
            ErrorCode::ActivityNotFound => "activity_not_found",
            ErrorCode::VersionConflict => "version_conflict",
            ErrorCode::DuplicateTag => "duplicate_tag",
            ErrorCode::CustomerChoiceRequired => "customer_choice_required",
            ErrorCode::RecordNotOpen => "record_not_open",
            ErrorCode::AlreadyLinked => "already_linked",
            ErrorCode::InteractionClosed => "interaction_closed",
            ErrorCode::TransferLimit => "transfer_limit",
            ErrorCode::StoreUnavailable => "store_unavailable",
            ErrorCode::OutcomeUnknown => "outcome_unknown",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::UriTooLong => "uri_too_long",
            ErrorCode::HeadersTooLarge => "headers_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::TooManyConnections => "too_many_connections",
            ErrorCode::EventsGone => "events_gone",
            ErrorCode::Internal => "internal",
        }
    }

    /// The HTTP status that goes with the code.
    pub fn http_status(self) -> u16 {
        use ErrorCode::*;
        match self {
            BadJson | UnknownType | InvalidMessage | InvalidField | FieldTooLong
            | BinaryNotSupported | UnknownReason | ChannelNotServed | DuplicateTag | BadRequest => {
                400
            }
            RequestTimeout => 408,
            UriTooLong => 414,
            UnsupportedMediaType => 415,
            HeadersTooLarge => 431,
            Unauthorized | TokenExpired => 401,
            Forbidden | OriginNotAllowed | NotYourOffer | RecordNotOpen => 403,
            NotFound | TaskNotFound | OfferNotFound | UnknownAgent | UnknownQueue
            | CustomerNotFound | RequestNotFound | ActivityNotFound => 404,
            TaskFinished
            | OfferExpired
            | OfferWithdrawn
            | OfferClosed
            | OfferPending
            | AgentOffline
            | TaskNotInProgress
            | NotAvailable
            | VersionConflict
            | CustomerChoiceRequired
            | AlreadyLinked
            | InteractionClosed
            | TransferLimit => 409,
            MethodNotAllowed => 405,
            EventsGone => 410,
            FrameTooLarge | PayloadTooLarge => 413,
            RateLimited => 429,
            StoreUnavailable | ShuttingDown | TooManyConnections => 503,
            // A gateway timeout: the hub gave up waiting for its store, which may still
            // have applied the command (unlike 503, which promises nothing changed).
            OutcomeUnknown => 504,
            Internal => 500,
        }
    }
}

/// How an offer ended, remembered so that a late accept gets a precise answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OfferEnd {
    /// Accepted by its agent.
    Accepted,
    /// Declined by its agent.
    Declined,
    /// Not accepted before its deadline.
    Expired,
    /// Withdrawn: the task was cancelled, or the agent was moved or went offline.
    Withdrawn,
}

/// An error from the routing core or the store, for a caller to act on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HubError {
    /// A field's value breaks a rule.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field, as a path (`customer.name`, `skills[2]`).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A text field is over its limit.
    #[error("{field} is longer than {limit} characters")]
    TooLong {
        /// The field, as a path.
        field: String,
        /// The limit, in characters.
        limit: usize,
    },
    /// The agent's state does not allow it.
    #[error(transparent)]
    Transition(#[from] TransitionError),
    /// The queue is not configured.
    #[error("unknown queue {0:?}")]
    UnknownQueue(String),
    /// The queue does not take this channel.
    #[error("queue {queue:?} does not take {channel} tasks")]
    ChannelNotServed {
        /// The queue.
        queue: String,
        /// The channel.
        channel: String,
    },
    /// The agent is not configured.
    #[error("unknown agent {0:?}")]
    UnknownAgent(String),
    /// The reason code is not configured.
    #[error("unknown reason code {0:?}")]
    UnknownReason(String),
    /// No such task.
    #[error("no task {0}")]
    TaskNotFound(TaskId),
    /// The task is already completed or cancelled.
    #[error("task {0} is already finished")]
    TaskFinished(TaskId),
    /// The offer is someone else's.
    #[error("that offer belongs to another agent")]
    NotYourOffer,
    /// The offer has ended.
    #[error("that offer has ended: {}", .0.as_str())]
    OfferEnded(OfferEnd),
    /// The store cannot be reached; nothing was changed.
    #[error("store unavailable: {0}")]
    StoreUnavailable(String),
    /// The command may have been applied: it was handed to the store, which did not
    /// confirm it within the call timeout.
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// No such customer.
    #[error("no customer {0}")]
    CustomerNotFound(CustomerId),
    /// No such request.
    #[error("no request {0}")]
    RequestNotFound(RequestId),
    /// No such activity.
    #[error("no activity {0}")]
    ActivityNotFound(ActivityId),
    /// The record moved on since `expected`.
    #[error("the record changed since version {expected}: now version {version} by {} at {}", changed_by.id, changed_at.rfc3339())]
    VersionConflict {
        /// The version the update was based on.
        expected: u64,
        /// The current version.
        version: u64,
        /// The current record, to load and re-apply on.
        current: Box<serde_json::Value>,
        /// Who made the last change.
        changed_by: Actor,
        /// When.
        changed_at: Ts,
    },
    /// A tag appears twice.
    #[error("{field}: tag {tag:?} is already on this activity")]
    DuplicateTag {
        /// The field path.
        field: String,
        /// The tag.
        tag: String,
    },
    /// A bare close of an interaction with no customer.
    #[error("this interaction has no customer: choose create or discard")]
    CustomerChoiceRequired,
    /// The agent does not have the customer open.
    #[error("this customer is not open for you: accept a task for it or reopen it")]
    RecordNotOpen,
    /// The activity already has its customer.
    #[error("this activity already belongs to a customer")]
    AlreadyLinked,
    /// The interaction is closed.
    #[error("this interaction is already closed")]
    InteractionClosed,
    /// The task was transferred as many times as allowed.
    #[error("this task was already transferred {0} times, the most allowed")]
    TransferLimit(u32),
    /// No webhook endpoint of that id (the API's endpoints; one deleted by a request
    /// racing this one included).
    #[error("no webhook endpoint {0:?}")]
    WebhookNotFound(String),
    /// The events asked for are no longer held, or were of another history.
    #[error("{why}; the oldest event held is {oldest} (epoch {epoch:?})")]
    EventsGone {
        /// Why, for people.
        why: String,
        /// The oldest seq held.
        oldest: u64,
        /// This hub's epoch.
        epoch: String,
    },
}

impl OfferEnd {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            OfferEnd::Accepted => "accepted",
            OfferEnd::Declined => "declined",
            OfferEnd::Expired => "expired",
            OfferEnd::Withdrawn => "withdrawn",
        }
    }
}

impl HubError {
    /// Shorthand for [`HubError::Invalid`].
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> HubError {
        HubError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The wire code.
    pub fn code(&self) -> ErrorCode {
        match self {
            HubError::Invalid { .. } => ErrorCode::InvalidField,
            HubError::TooLong { .. } => ErrorCode::FieldTooLong,
            HubError::Transition(t) => match t {
                TransitionError::Offline => ErrorCode::AgentOffline,
                TransitionError::NoSuchOffer => ErrorCode::OfferNotFound,
                TransitionError::OfferExpired => ErrorCode::OfferExpired,
                TransitionError::NoSuchTask => ErrorCode::TaskNotInProgress,
                TransitionError::OfferPending => ErrorCode::OfferPending,
                TransitionError::NotAvailable => ErrorCode::NotAvailable,
            },
            HubError::UnknownQueue(_) => ErrorCode::UnknownQueue,
            HubError::ChannelNotServed { .. } => ErrorCode::ChannelNotServed,
            HubError::UnknownAgent(_) => ErrorCode::UnknownAgent,
            HubError::UnknownReason(_) => ErrorCode::UnknownReason,
            HubError::TaskNotFound(_) => ErrorCode::TaskNotFound,
            HubError::TaskFinished(_) => ErrorCode::TaskFinished,
            HubError::NotYourOffer => ErrorCode::NotYourOffer,
            HubError::OfferEnded(end) => match end {
                OfferEnd::Expired => ErrorCode::OfferExpired,
                OfferEnd::Withdrawn => ErrorCode::OfferWithdrawn,
                OfferEnd::Accepted | OfferEnd::Declined => ErrorCode::OfferClosed,
            },
            HubError::StoreUnavailable(_) => ErrorCode::StoreUnavailable,
            HubError::OutcomeUnknown(_) => ErrorCode::OutcomeUnknown,
            HubError::CustomerNotFound(_) => ErrorCode::CustomerNotFound,
            HubError::RequestNotFound(_) => ErrorCode::RequestNotFound,
            HubError::ActivityNotFound(_) => ErrorCode::ActivityNotFound,
            HubError::VersionConflict { .. } => ErrorCode::VersionConflict,
            HubError::DuplicateTag { .. } => ErrorCode::DuplicateTag,
            HubError::CustomerChoiceRequired => ErrorCode::CustomerChoiceRequired,
            HubError::RecordNotOpen => ErrorCode::RecordNotOpen,
            HubError::AlreadyLinked => ErrorCode::AlreadyLinked,
            HubError::InteractionClosed => ErrorCode::InteractionClosed,
            HubError::TransferLimit(_) => ErrorCode::TransferLimit,
            HubError::EventsGone { .. } => ErrorCode::EventsGone,
            HubError::WebhookNotFound(_) => ErrorCode::NotFound,
        }
    }

    /// The field the error is about, when there is one.
    pub fn field(&self) -> Option<&str> {
        match self {
            HubError::Invalid { field, .. }
            | HubError::TooLong { field, .. }
            | HubError::DuplicateTag { field, .. } => Some(field),
            _ => None,
        }
    }

    /// The limit broken, when there is one.
    pub fn limit(&self) -> Option<usize> {
        match self {
            HubError::TooLong { limit, .. } => Some(*limit),
            _ => None,
        }
    }
}
