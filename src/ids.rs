//! Identifiers and the small vocabulary every module shares.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// An agent's id, as configured and as carried in its token's `sub` claim.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AgentId(pub Arc<str>);

/// A queue's id, as configured.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct QueueId(pub Arc<str>);

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub uuid::Uuid);

        impl $name {
            /// A fresh random id.
            pub fn new() -> Self {
                $name(uuid::Uuid::new_v4())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

uuid_id!(
    /// A task's id.
    TaskId
);
uuid_id!(
    /// One offer of one task to one agent. A re-offer of the same task gets a new id.
    OfferId
);
uuid_id!(
    /// A customer record.
    CustomerId
);
uuid_id!(
    /// A request (case) of a customer.
    RequestId
);
uuid_id!(
    /// An activity: one interaction, a task once accepted.
    ActivityId
);
uuid_id!(
    /// A quick note on a customer's or a request's timeline.
    NoteId
);
uuid_id!(
    /// One websocket connection. An agent's record remembers which connection is its own,
    /// so that the close of a connection that was taken over changes nothing.
    ConnId
);

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for AgentId {
    fn from(s: &str) -> Self {
        AgentId(Arc::from(s))
    }
}

impl From<&str> for QueueId {
    fn from(s: &str) -> Self {
        QueueId(Arc::from(s))
    }
}

/// The medium of a task. Each has its own per-agent capacity; voice is one at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// A phone call.
    Voice,
    /// A web or messaging chat.
    Chat,
    /// An email.
    Email,
}

impl Channel {
    /// Every channel, in a fixed order.
    pub const ALL: [Channel; 3] = [Channel::Voice, Channel::Chat, Channel::Email];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Voice => "voice",
            Channel::Chat => "chat",
            Channel::Email => "email",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
