//! What goes into the context book and what comes out: its commands (one per thing an
//! agent, a supervisor or an integration can ask of the customer context), their
//! replies, and the effects a command has besides its reply (changes to push to
//! watchers, integration events).

use super::*;

/// A customer-context command.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ContextCommand {
    /// Search customers by name, email, phone or request title.
    Search {
        /// The text.
        query: String,
        /// At most this many.
        limit: usize,
    },
    /// Load a customer (and watch it, for an agent).
    GetCustomer {
        /// Who asks.
        by: Actor,
        /// The customer.
        customer_id: CustomerId,
    },
    /// Stop watching a customer.
    Unwatch {
        /// The agent.
        agent: AgentId,
        /// The customer.
        customer_id: CustomerId,
    },
    /// A request.
    GetRequest {
        /// The request.
        request_id: RequestId,
    },
    /// An activity.
    GetActivity {
        /// The activity.
        activity_id: ActivityId,
    },
    /// Create a customer; with `activity_id`, link that unknown interaction to it.
    CreateCustomer {
        /// Who.
        by: Actor,
        /// The fields.
        fields: CustomerFields,
        /// An interaction of `by` that has no customer yet.
        activity_id: Option<ActivityId>,
    },
    /// Change a customer.
    UpdateCustomer {
        /// Who.
        by: Actor,
        /// The customer.
        customer_id: CustomerId,
        /// The version the change is based on.
        base_version: u64,
        /// The fields to change.
        changes: CustomerFields,
    },
    /// Link an unknown interaction to an existing customer.
    LinkActivity {
        /// The agent.
        by: Actor,
        /// The interaction.
        activity_id: ActivityId,
        /// The customer.
        customer_id: CustomerId,
    },
    /// Move an agent's open interaction to another request of its customer, or to a
    /// new one (`request_id` absent).
    MoveActivity {
        /// The agent.
        by: Actor,
        /// The interaction.
        activity_id: ActivityId,
        /// The request to move to; `None` opens a new one.
        request_id: Option<RequestId>,
    },
    /// Open a new request for a customer.
    CreateRequest {
        /// Who.
        by: Actor,
        /// The customer.
        customer_id: CustomerId,
        /// Title.
        title: String,
        /// Description.
        description: String,
    },
    /// Change a request's title or description, or close or reopen it.
    UpdateRequest {
        /// Who.
        by: Actor,
        /// The request.
        request_id: RequestId,
        /// The version the change is based on.
        base_version: u64,
        /// New title.
        title: Option<String>,
        /// New description.
        description: Option<String>,
        /// Close or reopen.
        state: Option<RequestState>,
    },
    /// Change an activity's notes or tags.
    UpdateActivity {
        /// Who.
        by: Actor,
        /// The activity.
        activity_id: ActivityId,
        /// The version the change is based on.
        base_version: u64,
        /// New notes.
        notes: Option<String>,
        /// The whole tag list.
        tags: Option<Vec<String>>,
    },
    /// Add a quick note to a customer's (or a request's) timeline.
    AddNote {
        /// Who.
        by: Actor,
        /// The customer.
        customer_id: CustomerId,
        /// The request, for a request's timeline.
        request_id: Option<RequestId>,
        /// The text.
        text: String,
    },
    /// A customer's journey, optionally narrowed to one request.
    Journey {
        /// The customer.
        customer_id: CustomerId,
        /// The request.
        request_id: Option<RequestId>,
        /// Newest events, at most this many.
        limit: usize,
    },
    /// Close an interaction (end the activity). One without a customer needs a choice.
    CloseInteraction {
        /// The agent.
        agent: AgentId,
        /// The interaction.
        activity_id: ActivityId,
        /// For an interaction without a customer: create one, or discard.
        choice: Option<CloseChoice>,
    },
    /// Reopen a closed customer (from Recent or Search) to update it.
    ReopenCustomer {
        /// The agent.
        agent: AgentId,
        /// The customer.
        customer_id: CustomerId,
    },
    /// Take a reopened customer off the Open list.
    CloseCustomer {
        /// The agent.
        agent: AgentId,
        /// The customer.
        customer_id: CustomerId,
    },
    /// The agent's Open and Recent lists.
    Lists {
        /// The agent.
        agent: AgentId,
    },
}

impl ContextCommand {
    /// Whether the command only reads: a shared store answers it from the local
    /// replica without logging it.
    pub fn is_read_only(&self) -> bool {
        matches!(
            self,
            ContextCommand::Search { .. }
                | ContextCommand::GetRequest { .. }
                | ContextCommand::GetActivity { .. }
                | ContextCommand::Journey { .. }
                | ContextCommand::Lists { .. }
        )
    }
}

/// How to close an interaction whose customer was never created.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "choice", rename_all = "snake_case", deny_unknown_fields)]
pub enum CloseChoice {
    /// Create the customer with these fields, link the interaction, then close.
    Create {
        /// The customer's fields.
        #[serde(default)]
        customer: CustomerFields,
    },
    /// Close without creating a customer.
    Discard {},
}

/// What a context command answers.
#[derive(Clone, Debug)]
pub enum ContextReply {
    /// Nothing more.
    Done,
    /// A customer with its requests and activities.
    Customer(Box<CustomerView>),
    /// A request.
    Request(Box<Request>),
    /// An activity.
    Activity(Box<Activity>),
    /// A note.
    Note(Box<Note>),
    /// Search results.
    Customers(Vec<CustomerSummary>),
    /// Journey events, oldest first.
    Journey(Vec<JourneyEvent>),
    /// The agent's lists.
    Lists(Box<Lists>),
}

/// What a context command produced besides its reply.
#[derive(Debug, Default)]
pub struct ContextEffects {
    /// Changes to push: the change and who watches it (the author excluded).
    pub changes: Vec<(Arc<RecordChange>, Vec<AgentId>)>,
    /// The integration events of the changes, in order.
    pub events: Vec<crate::events::EventData>,
}
