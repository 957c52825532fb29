//! The customer context: customers, their requests, activities (interactions), notes
//! and journey, and who is watching which customer.
//!
//! [`ContextBook`] is pure like the routing book: commands go in with `now`, an
//! outcome comes out. Every record carries a version; an update names the version it
//! was based on and is refused with the current record when another change came first
//! (the caution prompt). Every change produces one [`RecordChange`] addressed to every
//! agent watching that customer except the one who made it.
//!
//! Who watches: an agent watches a customer while it has an interaction with it open,
//! after reopening it, and after loading it (`get_customer`), until it lets go
//! (`unwatch`, or closing the interaction). An interaction whose customer is not yet
//! known is watched under its own activity id.
//!
//! Edits by an agent need the customer open for that agent (an open interaction with
//! it, or reopened from Recent or Search); integrations may edit any record.

pub mod fold;
mod notify;
pub mod record;
pub mod search;
pub mod search_threads;
mod tasks;

use crate::auth::Role;
use crate::clock::Ts;
use crate::error::HubError;
use crate::events::EventData;
use crate::growing::GrowingMap;
use crate::ids::{ActivityId, AgentId, CustomerId, NoteId, RequestId};
use crate::task::{Task, check_text};
use record::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

/// How many events a customer's journey keeps; older ones are dropped first.
pub const JOURNEY_LIMIT: usize = 10_000;
/// How many recently closed customers an agent's Recent list keeps.
pub const RECENT_LIMIT: usize = 20;
/// The most search results.
pub const SEARCH_LIMIT: usize = 50;

/// Which kind of record changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    /// A customer.
    Customer,
    /// A request.
    Request,
    /// An activity.
    Activity,
    /// A note (notes are never edited; version is always 1).
    Note,
}

/// What agents watch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Topic {
    /// A customer and everything under it.
    Customer(CustomerId),
    /// An interaction whose customer is not known yet.
    Activity(ActivityId),
}

/// A change, as pushed to watchers: enough to show the caution prompt and to load.
#[derive(Clone, Debug, Serialize)]
pub struct RecordChange {
    /// Which kind of record.
    pub kind: RecordKind,
    /// Its id.
    pub id: String,
    /// The customer it belongs to, when known.
    pub customer_id: Option<CustomerId>,
    /// Its new version.
    pub version: u64,
    /// Who changed it.
    pub changed_by: Actor,
    /// When.
    pub changed_at: Ts,
    /// The record as it is now.
    pub record: Value,
}

/// One line of the Open list: an interaction in progress, or a reopened customer.
#[derive(Clone, Debug, Serialize)]
pub struct OpenItem {
    /// The customer, when known.
    pub customer: Option<CustomerSummary>,
    /// The interaction, when the line is one.
    pub activity_id: Option<ActivityId>,
    /// Its request.
    pub request_id: Option<RequestId>,
    /// Its task.
    pub task_id: Option<crate::ids::TaskId>,
    /// Since when it is open.
    pub since: Ts,
}

/// Searches one context book's index, away from the book (see
/// [`ContextBook::searcher`]).
#[derive(Clone)]
pub struct Searcher(search::SearchReader);

impl Searcher {
    /// Customers whose name, email, phone or request title contains the query, folded
    /// ([`search`] has the rules), in name order, at most `limit` (1 to
    /// [`SEARCH_LIMIT`]).
    pub fn search(&self, query: &str, limit: usize) -> Vec<CustomerSummary> {
        self.0.search(query, limit.clamp(1, SEARCH_LIMIT))
    }
}

/// A customer in a list or a search result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CustomerSummary {
    /// The customer.
    pub customer_id: CustomerId,
    /// Person or organisation.
    pub kind: CustomerKind,
    /// Display name.
    pub name: String,
    /// Emails.
    pub emails: Vec<String>,
    /// Phones.
    pub phones: Vec<String>,
    /// Its version.
    pub version: u64,
}

/// The Open and Recent lists (In Progress is the agent's task list, in its state).
#[derive(Clone, Debug, Serialize)]
pub struct Lists {
    /// Interactions in progress and reopened customers.
    pub open: Vec<OpenItem>,
    /// Customers this agent recently closed, newest first.
    pub recent: Vec<CustomerSummary>,
}

/// A customer with what a desktop shows beside it.
#[derive(Clone, Debug, Serialize)]
pub struct CustomerView {
    /// The record.
    pub customer: Customer,
    /// Its requests, newest first.
    pub requests: Vec<Request>,
    /// Its most recent activities, newest first.
    pub activities: Vec<Activity>,
}

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

/// A routing event the context follows.
#[derive(Clone, Debug)]
pub enum TaskEvent {
    /// An agent accepted the task: it becomes an activity.
    Assigned {
        /// The task as accepted.
        task: Arc<Task>,
        /// The agent.
        agent: AgentId,
    },
    /// The task was completed.
    Completed {
        /// The task.
        task: Arc<Task>,
        /// The agent.
        agent: AgentId,
    },
    /// The task was cancelled.
    Cancelled {
        /// The task.
        task: Arc<Task>,
        /// Who cancelled it.
        by: Actor,
    },
    /// The task was transferred: the next agent to accept it gets an activity of its
    /// own on the same customer and request.
    Transferred {
        /// The task, as transferred.
        task: Arc<Task>,
        /// The agent who had it in progress, if one did.
        from: Option<AgentId>,
        /// The agent it is transferred to, for a transfer to one agent.
        to: Option<AgentId>,
        /// Who transferred it.
        by: Actor,
    },
}

/// How an activity is linked to its customer.
#[derive(Clone, Copy)]
struct LinkHow {
    /// Just created (its stamp is not bumped).
    fresh: bool,
    /// The request to put it on (a transfer's: the one before), if still the
    /// customer's; else the customer's most recent open request.
    request: Option<RequestId>,
}

impl LinkHow {
    /// An existing activity linked later (by the agent).
    const LATER: LinkHow = LinkHow {
        fresh: false,
        request: None,
    };
}

#[derive(Default, Serialize, Deserialize)]
struct AgentDesk {
    /// Interactions open, in the order they opened.
    open: Vec<ActivityId>,
    /// Customers reopened from Recent or Search.
    reopened: Vec<(CustomerId, Ts)>,
    /// Recently closed customers, newest first.
    recent: VecDeque<CustomerId>,
}

/// The customer context. See the module documentation. It serializes whole, for
/// snapshots of the replicated state, its maps in key order: equal states encode to
/// equal bytes.
#[derive(Default, Serialize, Deserialize)]
pub struct ContextBook {
    /// Where new record ids come from.
    #[serde(skip)]
    pub ids: crate::ids::Ids,
    // The maps that grow with every customer and every accept: `GrowingMap`s, so that
    // none stalls the decision that makes it grow (see `crate::growing`); the records
    // boxed, so that what a shard moves when it grows is a key and a pointer each.
    #[serde(serialize_with = "crate::ids::sorted")]
    customers: GrowingMap<CustomerId, Box<Customer>>,
    #[serde(serialize_with = "crate::ids::sorted")]
    requests: GrowingMap<RequestId, Box<Request>>,
    #[serde(serialize_with = "crate::ids::sorted")]
    activities: GrowingMap<ActivityId, Box<Activity>>,
    #[serde(serialize_with = "crate::ids::sorted")]
    by_task: GrowingMap<crate::ids::TaskId, ActivityId>,
    /// Tasks transferred and not yet accepted again: the activity of the agent who had
    /// them, whose customer and request the next agent's activity takes.
    #[serde(default, serialize_with = "crate::ids::sorted")]
    handovers: HashMap<crate::ids::TaskId, ActivityId>,
    #[serde(serialize_with = "crate::ids::sorted")]
    customer_requests: GrowingMap<CustomerId, Vec<RequestId>>,
    #[serde(serialize_with = "crate::ids::sorted")]
    customer_activities: GrowingMap<CustomerId, Vec<ActivityId>>,
    #[serde(serialize_with = "crate::ids::sorted")]
    identities: GrowingMap<String, CustomerId>,
    #[serde(serialize_with = "crate::ids::sorted")]
    journeys: GrowingMap<CustomerId, VecDeque<JourneyEvent>>,
    #[serde(serialize_with = "crate::ids::sorted")]
    desks: HashMap<AgentId, AgentDesk>,
    #[serde(serialize_with = "crate::ids::sorted")]
    watchers: HashMap<Topic, BTreeSet<AgentId>>,
    /// Derived from the customers and their requests: never stored, rebuilt on load
    /// ([`ContextBook::rebuild_search`]), kept up to date by every change.
    #[serde(skip)]
    search: search::SearchIndex,
}

/// The lookup keys of an identity: phones by their digits, emails and handles by
/// their lowercase form.
fn identity_keys(phones: &[String], emails: &[String], handles: &[String]) -> Vec<String> {
    let mut keys = Vec::new();
    for p in phones {
        let digits: String = p.chars().filter(char::is_ascii_digit).collect();
        if !digits.is_empty() {
            keys.push(format!("tel:{digits}"));
        }
    }
    for e in emails {
        keys.push(format!("mailto:{}", e.trim().to_lowercase()));
    }
    for h in handles {
        keys.push(format!("chat:{}", h.trim().to_lowercase()));
    }
    keys
}

impl ContextBook {
    /// An empty context.
    pub fn new() -> ContextBook {
        ContextBook::default()
    }

    /// Carries out one command at `now`.
    pub fn execute(
        &mut self,
        cmd: ContextCommand,
        now: Ts,
        fx: &mut ContextEffects,
    ) -> Result<ContextReply, HubError> {
        match cmd {
            ContextCommand::Search { query, limit } => {
                Ok(ContextReply::Customers(self.search(&query, limit)))
            }
            ContextCommand::GetCustomer { by, customer_id } => {
                let view = self.customer_view(customer_id)?;
                if let Some(agent) = by.agent_id() {
                    self.watch(Topic::Customer(customer_id), &agent);
                }
                Ok(ContextReply::Customer(Box::new(view)))
            }
            ContextCommand::Unwatch { agent, customer_id } => {
                if !self.is_open_for(&agent, customer_id) {
                    self.unwatch(Topic::Customer(customer_id), &agent);
                }
                Ok(ContextReply::Done)
            }
            ContextCommand::GetRequest { request_id } => self
                .requests
                .get(&request_id)
                .map(|r| ContextReply::Request(r.clone()))
                .ok_or(HubError::RequestNotFound(request_id)),
            ContextCommand::GetActivity { activity_id } => self
                .activities
                .get(&activity_id)
                .map(|a| ContextReply::Activity(a.clone()))
                .ok_or(HubError::ActivityNotFound(activity_id)),
            ContextCommand::CreateCustomer {
                by,
                fields,
                activity_id,
            } => {
                let c = self.create_customer(&by, fields, activity_id, now, fx)?;
                Ok(ContextReply::Customer(Box::new(self.customer_view(c)?)))
            }
            ContextCommand::UpdateCustomer {
                by,
                customer_id,
                base_version,
                changes,
            } => {
                changes.validate()?;
                self.may_edit_customer(&by, customer_id)?;
                let c = self
                    .customers
                    .get(&customer_id)
                    .ok_or(HubError::CustomerNotFound(customer_id))?;
                check_version(base_version, &c.stamp, c)?;
                let old_keys = identity_keys(&c.phones, &c.emails, &c.chat_handles);
                let mut next = c.clone();
                changes.apply_to(&mut next);
                next.stamp.bump(&by, now);
                for k in old_keys {
                    if self.identities.get(&k) == Some(&customer_id) {
                        self.identities.remove(&k);
                    }
                }
                for k in identity_keys(&next.phones, &next.emails, &next.chat_handles) {
                    self.identities.insert(k, customer_id);
                }
                fx.events.push(EventData::CustomerUpdated {
                    customer_id,
                    version: next.stamp.version,
                });
                self.customers.insert(customer_id, next);
                self.reindex(customer_id);
                self.journey_simple(customer_id, JourneyKind::CustomerUpdated, &by, None, now);
                self.changed_customer(customer_id, &by, now, fx);
                Ok(ContextReply::Customer(Box::new(
                    self.customer_view(customer_id)?,
                )))
            }
            ContextCommand::LinkActivity {
                by,
                activity_id,
                customer_id,
            } => {
                let a = self
                    .activities
                    .get(&activity_id)
                    .ok_or(HubError::ActivityNotFound(activity_id))?;
                if by.role == Role::Agent && by.agent_id().as_ref() != Some(&a.agent_id) {
                    return Err(HubError::RecordNotOpen);
                }
                if a.customer_id.is_some() {
                    return Err(HubError::AlreadyLinked);
                }
                if !self.customers.contains_key(&customer_id) {
                    return Err(HubError::CustomerNotFound(customer_id));
                }
                self.link(activity_id, customer_id, LinkHow::LATER, &by, now, fx);
                self.activity_reply(activity_id)
            }
            ContextCommand::MoveActivity {
                by,
                activity_id,
                request_id,
            } => {
                self.move_activity(activity_id, request_id, &by, now, fx)?;
                self.activity_reply(activity_id)
            }
            ContextCommand::CreateRequest {
                by,
                customer_id,
                title,
                description,
            } => {
                check_text("title", &title)?;
                check_text("description", &description)?;
                if !self.customers.contains_key(&customer_id) {
                    return Err(HubError::CustomerNotFound(customer_id));
                }
                self.may_edit_customer(&by, customer_id)?;
                let id = self.new_request(customer_id, title, description, &by, now, fx);
                self.requests
                    .get(&id)
                    .map(|r| ContextReply::Request(r.clone()))
                    .ok_or(HubError::RequestNotFound(id))
            }
            ContextCommand::UpdateRequest {
                by,
                request_id,
                base_version,
                title,
                description,
                state,
            } => {
                if let Some(t) = &title {
                    check_text("title", t)?;
                }
                if let Some(d) = &description {
                    check_text("description", d)?;
                }
                let r = self
                    .requests
                    .get(&request_id)
                    .ok_or(HubError::RequestNotFound(request_id))?;
                let customer_id = r.customer_id;
                self.may_edit_customer(&by, customer_id)?;
                check_version(base_version, &r.stamp, r)?;
                let mut next = r.clone();
                let mut kinds = Vec::new();
                if title.is_some() || description.is_some() {
                    kinds.push(JourneyKind::RequestUpdated);
                }
                if let Some(t) = title {
                    next.title = t;
                }
                if let Some(d) = description {
                    next.description = d;
                }
                match state {
                    Some(RequestState::Closed) if next.state == RequestState::Open => {
                        next.state = RequestState::Closed;
                        next.closed_at = Some(now);
                        kinds.push(JourneyKind::RequestClosed);
                    }
                    Some(RequestState::Open) if next.state == RequestState::Closed => {
                        next.state = RequestState::Open;
                        next.closed_at = None;
                        kinds.push(JourneyKind::RequestReopened);
                    }
                    _ => {}
                }
                next.stamp.bump(&by, now);
                for k in &kinds {
                    match k {
                        JourneyKind::RequestClosed => fx.events.push(EventData::RequestClosed {
                            request_id,
                            customer_id,
                        }),
                        JourneyKind::RequestReopened => {
                            fx.events.push(EventData::RequestReopened {
                                request_id,
                                customer_id,
                            })
                        }
                        _ => {}
                    }
                }
                self.requests.insert(request_id, next.clone());
                self.reindex(customer_id);
                for k in kinds {
                    self.journey_simple(customer_id, k, &by, Some(request_id), now);
                }
                self.changed_request(request_id, &by, now, fx);
                Ok(ContextReply::Request(next))
            }
            ContextCommand::UpdateActivity {
                by,
                activity_id,
                base_version,
                notes,
                tags,
            } => {
                if let Some(n) = &notes {
                    check_text("notes", n)?;
                }
                let tags = tags.map(|t| normalize_tags("tags", &t)).transpose()?;
                let a = self
                    .activities
                    .get(&activity_id)
                    .ok_or(HubError::ActivityNotFound(activity_id))?;
                self.may_edit_activity(&by, a)?;
                check_version(base_version, &a.stamp, a)?;
                let mut next = a.clone();
                if let Some(n) = notes {
                    next.notes = n;
                }
                if let Some(t) = tags {
                    next.tags = t;
                }
                next.stamp.bump(&by, now);
                let customer = next.customer_id;
                self.activities.insert(activity_id, next);
                if let Some(c) = customer {
                    let ev = JourneyEvent {
                        at: now,
                        kind: JourneyKind::ActivityUpdated,
                        by: by.clone(),
                        request_id: self.activities.get(&activity_id).and_then(|a| a.request_id),
                        activity_id: Some(activity_id),
                        task_id: None,
                        text: None,
                    };
                    self.journey(c, ev);
                }
                self.changed_activity(activity_id, &by, now, fx);
                self.activity_reply(activity_id)
            }
            ContextCommand::AddNote {
                by,
                customer_id,
                request_id,
                text,
            } => {
                if text.trim().is_empty() {
                    return Err(HubError::invalid("text", "must not be empty"));
                }
                check_text("text", &text)?;
                if !self.customers.contains_key(&customer_id) {
                    return Err(HubError::CustomerNotFound(customer_id));
                }
                if let Some(r) = request_id {
                    if self
                        .requests
                        .get(&r)
                        .is_none_or(|r| r.customer_id != customer_id)
                    {
                        return Err(HubError::RequestNotFound(r));
                    }
                }
                self.may_edit_customer(&by, customer_id)?;
                let note = Note {
                    note_id: NoteId(self.ids.mint()),
                    customer_id,
                    request_id,
                    text: text.clone(),
                    by: by.clone(),
                    at: now,
                };
                self.journey(
                    customer_id,
                    JourneyEvent {
                        at: now,
                        kind: JourneyKind::Note,
                        by: by.clone(),
                        request_id,
                        activity_id: None,
                        task_id: None,
                        text: Some(text),
                    },
                );
                let head = (
                    RecordKind::Note,
                    note.note_id.to_string(),
                    Some(customer_id),
                    1,
                );
                self.push_change(Topic::Customer(customer_id), head, &note, &by, now, fx);
                Ok(ContextReply::Note(Box::new(note)))
            }
            ContextCommand::Journey {
                customer_id,
                request_id,
                limit,
            } => {
                if !self.customers.contains_key(&customer_id) {
                    return Err(HubError::CustomerNotFound(customer_id));
                }
                let all = self.journeys.get(&customer_id);
                let mut events: Vec<JourneyEvent> = all
                    .into_iter()
                    .flatten()
                    .rev()
                    .filter(|e| request_id.is_none() || e.request_id == request_id)
                    .take(limit)
                    .cloned()
                    .collect();
                events.reverse();
                Ok(ContextReply::Journey(events))
            }
            ContextCommand::CloseInteraction {
                agent,
                activity_id,
                choice,
            } => {
                let a = self
                    .activities
                    .get(&activity_id)
                    .ok_or(HubError::ActivityNotFound(activity_id))?;
                if a.agent_id != agent {
                    return Err(HubError::RecordNotOpen);
                }
                if a.ended_at.is_some() {
                    return Err(HubError::InteractionClosed);
                }
                let by = Actor::agent(&agent);
                if a.customer_id.is_none() {
                    match choice {
                        None => return Err(HubError::CustomerChoiceRequired),
                        Some(CloseChoice::Create { customer }) => {
                            self.create_customer(&by, customer, Some(activity_id), now, fx)?;
                        }
                        Some(CloseChoice::Discard {}) => {}
                    }
                }
                self.end_interaction(&agent, activity_id, now, fx);
                self.activity_reply(activity_id)
            }
            ContextCommand::ReopenCustomer { agent, customer_id } => {
                if !self.customers.contains_key(&customer_id) {
                    return Err(HubError::CustomerNotFound(customer_id));
                }
                let desk = self.desks.entry(agent.clone()).or_default();
                if !desk.reopened.iter().any(|(c, _)| *c == customer_id) {
                    desk.reopened.push((customer_id, now));
                }
                self.watch(Topic::Customer(customer_id), &agent);
                Ok(ContextReply::Customer(Box::new(
                    self.customer_view(customer_id)?,
                )))
            }
            ContextCommand::CloseCustomer { agent, customer_id } => {
                let desk = self.desks.entry(agent.clone()).or_default();
                let before = desk.reopened.len();
                desk.reopened.retain(|(c, _)| *c != customer_id);
                if desk.reopened.len() == before {
                    return Err(HubError::RecordNotOpen);
                }
                push_recent(desk, customer_id);
                if !self.is_open_for(&agent, customer_id) {
                    self.unwatch(Topic::Customer(customer_id), &agent);
                }
                Ok(ContextReply::Done)
            }
            ContextCommand::Lists { agent } => {
                Ok(ContextReply::Lists(Box::new(self.lists(&agent))))
            }
        }
    }

    fn create_customer(
        &mut self,
        by: &Actor,
        fields: CustomerFields,
        activity_id: Option<ActivityId>,
        now: Ts,
        fx: &mut ContextEffects,
    ) -> Result<CustomerId, HubError> {
        fields.validate()?;
        if let Some(aid) = activity_id {
            let a = self
                .activities
                .get(&aid)
                .ok_or(HubError::ActivityNotFound(aid))?;
            if by.role == Role::Agent && by.agent_id().as_ref() != Some(&a.agent_id) {
                return Err(HubError::RecordNotOpen);
            }
            if a.customer_id.is_some() {
                return Err(HubError::AlreadyLinked);
            }
        }
        let mut c = Customer {
            customer_id: CustomerId(self.ids.mint()),
            kind: CustomerKind::default(),
            name: String::new(),
            emails: Vec::new(),
            phones: Vec::new(),
            chat_handles: Vec::new(),
            fields: Default::default(),
            stamp: Stamp::new(by, now),
        };
        // An unknown caller's identity is a good start for the new record.
        if let Some(a) = activity_id.and_then(|a| self.activities.get(&a)) {
            let id = &a.summary.identity;
            c.phones.extend(id.phone.iter().cloned());
            c.emails.extend(id.email.iter().cloned());
            c.chat_handles.extend(id.chat_handle.iter().cloned());
            if let Some(n) = &id.name {
                c.name = n.clone();
            }
        }
        fields.apply_to(&mut c);
        if c.name.trim().is_empty()
            && c.emails.is_empty()
            && c.phones.is_empty()
            && c.chat_handles.is_empty()
        {
            return Err(HubError::invalid(
                "name",
                "a customer needs a name or a way to reach them",
            ));
        }
        let cid = c.customer_id;
        fx.events.push(EventData::CustomerCreated {
            customer_id: cid,
            version: c.stamp.version,
        });
        for k in identity_keys(&c.phones, &c.emails, &c.chat_handles) {
            self.identities.entry(k).or_insert(cid);
        }
        self.customers.insert(cid, Box::new(c));
        self.reindex(cid);
        self.journey_simple(cid, JourneyKind::CustomerCreated, by, None, now);
        self.changed_customer(cid, by, now, fx);
        if let Some(aid) = activity_id {
            self.link(aid, cid, LinkHow::LATER, by, now, fx);
        }
        Ok(cid)
    }

    fn end_interaction(
        &mut self,
        agent: &AgentId,
        aid: ActivityId,
        now: Ts,
        fx: &mut ContextEffects,
    ) {
        let by = Actor::agent(agent);
        let Some(a) = self.activities.get_mut(&aid) else {
            return;
        };
        a.ended_at = Some(now);
        a.stamp.bump(&by, now);
        let (customer, request) = (a.customer_id, a.request_id);
        fx.events.push(EventData::ActivityClosed {
            activity_id: aid,
            request_id: request,
            customer_id: customer,
        });
        let desk = self.desks.entry(agent.clone()).or_default();
        desk.open.retain(|x| *x != aid);
        if let Some(c) = customer {
            push_recent(desk, c);
        }
        if let Some(c) = customer {
            self.journey(
                c,
                JourneyEvent {
                    at: now,
                    kind: JourneyKind::ActivityEnded,
                    by: by.clone(),
                    request_id: request,
                    activity_id: Some(aid),
                    task_id: None,
                    text: None,
                },
            );
        }
        self.changed_activity(aid, &by, now, fx);
        match customer {
            Some(c) if !self.is_open_for(agent, c) => self.unwatch(Topic::Customer(c), agent),
            Some(_) => {}
            None => self.unwatch(Topic::Activity(aid), agent),
        }
    }

    /// Whether the agent has the customer open: an interaction in progress with it, or
    /// reopened.
    fn is_open_for(&self, agent: &AgentId, c: CustomerId) -> bool {
        let Some(desk) = self.desks.get(agent) else {
            return false;
        };
        desk.reopened.iter().any(|(x, _)| *x == c)
            || desk.open.iter().any(|a| {
                self.activities
                    .get(a)
                    .is_some_and(|a| a.customer_id == Some(c))
            })
    }

    fn may_edit_customer(&self, by: &Actor, c: CustomerId) -> Result<(), HubError> {
        match by.agent_id() {
            Some(agent) if !self.is_open_for(&agent, c) => Err(HubError::RecordNotOpen),
            _ => Ok(()),
        }
    }

    /// An agent edits its own open interaction, or the most recent activity of a
    /// customer it has open.
    fn may_edit_activity(&self, by: &Actor, a: &Activity) -> Result<(), HubError> {
        let Some(agent) = by.agent_id() else {
            return Ok(());
        };
        let own_open = a.agent_id == agent && a.ended_at.is_none();
        let most_recent = a.customer_id.is_some_and(|c| {
            self.is_open_for(&agent, c)
                && self.customer_activities.get(&c).and_then(|v| v.last()) == Some(&a.activity_id)
        });
        if own_open || most_recent {
            Ok(())
        } else {
            Err(HubError::RecordNotOpen)
        }
    }

    /// Customers whose name, email, phone or request title contains the query, folded
    /// ([`search`] has the rules), from the index.
    pub fn search(&self, query: &str, limit: usize) -> Vec<CustomerSummary> {
        self.searcher().search(query, limit)
    }

    /// A handle that answers searches without this book (nor the lock it is kept
    /// under): the index holds the result lines itself. The stores take it under
    /// the state's lock and search after letting the lock go.
    pub fn searcher(&self) -> Searcher {
        Searcher(self.search.reader())
    }

    /// Brings every change waiting for the search index in now (after a bulk load:
    /// `loadtest search` times the index alone next).
    pub fn settle_search(&self) {
        self.search.settle();
    }

    /// The old linear scan over every customer: the definition of a match, kept as
    /// the reference the index is tested against (and measured against).
    pub fn search_by_scan(&self, query: &str, limit: usize) -> Vec<CustomerSummary> {
        let mut hits: Vec<&Customer> = self
            .customers
            .values()
            .map(|c| &**c)
            .filter(|c| search::reference_matches(c, self.titles(c.customer_id), query))
            .collect();
        hits.sort_by(|a, b| a.name.cmp(&b.name).then(a.customer_id.cmp(&b.customer_id)));
        hits.into_iter()
            .take(limit.clamp(1, SEARCH_LIMIT))
            .map(summary)
            .collect()
    }

    /// The titles of a customer's requests.
    fn titles(&self, c: CustomerId) -> impl Iterator<Item = &str> {
        self.customer_requests
            .get(&c)
            .into_iter()
            .flatten()
            .filter_map(|r| self.requests.get(r))
            .map(|r| r.title.as_str())
    }

    /// Brings the search index up to date with customer `c` and its requests.
    fn reindex(&mut self, c: CustomerId) {
        if self.search.is_off() {
            return;
        }
        let Some(customer) = self.customers.get(&c) else {
            return;
        };
        let doc = search::SearchDoc::of(customer, self.titles(c));
        self.search.set(c, doc);
    }

    /// Stops keeping the search index up, for a book that is only replayed: into a
    /// snapshot (compaction, never searched), or at start before the index is built
    /// once ([`ContextBook::rebuild_search`]). At a million customers the index is
    /// seconds of a core to build, and ~0.1 ms per customer change to keep.
    pub fn without_search(&mut self) {
        self.search = search::SearchIndex::off();
    }

    /// Builds the search index from the customers (after loading a snapshot: the index
    /// is derived state and is not stored). The result does not depend on the order.
    /// A book [without search](ContextBook::without_search) has an index again.
    pub fn rebuild_search(&mut self) {
        let mut ids: Vec<CustomerId> = self.customers.keys().copied().collect();
        ids.sort();
        let docs = ids
            .into_iter()
            .filter_map(|c| {
                let customer = self.customers.get(&c)?;
                Some((c, search::SearchDoc::of(customer, self.titles(c))))
            })
            .collect();
        self.search = search::SearchIndex::build(docs);
    }

    fn customer_view(&self, c: CustomerId) -> Result<CustomerView, HubError> {
        let customer = self
            .customers
            .get(&c)
            .map(|c| Customer::clone(c))
            .ok_or(HubError::CustomerNotFound(c))?;
        let requests = self
            .customer_requests
            .get(&c)
            .into_iter()
            .flatten()
            .rev()
            .filter_map(|r| self.requests.get(r).map(|r| Request::clone(r)))
            .collect();
        let activities = self
            .customer_activities
            .get(&c)
            .into_iter()
            .flatten()
            .rev()
            .take(20)
            .filter_map(|a| self.activities.get(a).map(|a| Activity::clone(a)))
            .collect();
        Ok(CustomerView {
            customer,
            requests,
            activities,
        })
    }

    fn activity_reply(&self, aid: ActivityId) -> Result<ContextReply, HubError> {
        self.activities
            .get(&aid)
            .map(|a| ContextReply::Activity(a.clone()))
            .ok_or(HubError::ActivityNotFound(aid))
    }

    /// The agent's Open and Recent lists.
    pub fn lists(&self, agent: &AgentId) -> Lists {
        let Some(desk) = self.desks.get(agent) else {
            return Lists {
                open: Vec::new(),
                recent: Vec::new(),
            };
        };
        let mut open: Vec<OpenItem> = desk
            .open
            .iter()
            .filter_map(|a| self.activities.get(a))
            .map(|a| OpenItem {
                customer: a
                    .customer_id
                    .and_then(|c| self.customers.get(&c))
                    .map(|c| summary(c)),
                activity_id: Some(a.activity_id),
                request_id: a.request_id,
                task_id: Some(a.task_id),
                since: a.started_at,
            })
            .collect();
        open.extend(desk.reopened.iter().filter_map(|(c, since)| {
            self.customers.get(c).map(|c| OpenItem {
                customer: Some(summary(c)),
                activity_id: None,
                request_id: None,
                task_id: None,
                since: *since,
            })
        }));
        let recent = desk
            .recent
            .iter()
            .filter_map(|c| self.customers.get(c))
            .map(|c| summary(c))
            .collect();
        Lists { open, recent }
    }

    /// The activity a task became, if it was accepted.
    pub fn activity_of_task(&self, task: crate::ids::TaskId) -> Option<&Activity> {
        self.by_task
            .get(&task)
            .and_then(|a| self.activities.get(a))
            .map(|a| &**a)
    }
}

fn push_recent(desk: &mut AgentDesk, c: CustomerId) {
    desk.recent.retain(|x| *x != c);
    desk.recent.push_front(c);
    desk.recent.truncate(RECENT_LIMIT);
}

fn summary(c: &Customer) -> CustomerSummary {
    CustomerSummary {
        customer_id: c.customer_id,
        kind: c.kind,
        name: c.name.clone(),
        emails: c.emails.clone(),
        phones: c.phones.clone(),
        version: c.stamp.version,
    }
}

/// Refuses an update based on an old version, with the current record.
fn check_version<T: Serialize>(base: u64, stamp: &Stamp, current: &T) -> Result<(), HubError> {
    if base == stamp.version {
        return Ok(());
    }
    Err(HubError::VersionConflict {
        expected: base,
        version: stamp.version,
        current: Box::new(serde_json::to_value(current).unwrap_or(Value::Null)),
        changed_by: stamp.updated_by.clone(),
        changed_at: stamp.updated_at,
    })
}

#[cfg(test)]
mod tests;
