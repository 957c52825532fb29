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

mod command;
mod desk;
mod edits;
pub mod fold;
mod notify;
pub mod record;
pub mod search;
pub mod search_threads;
mod tasks;

pub use command::{CloseChoice, ContextCommand, ContextEffects, ContextReply};
use desk::{AgentDesk, push_recent};
use edits::{ActivityEdit, RequestEdit, identity_keys};

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
    /// The agent went offline (logged out, or gone past its grace): it stops watching
    /// the customers it only loaded. Its next desktop shows its Open list, and loads
    /// anything else again.
    AgentOffline {
        /// The agent.
        agent: AgentId,
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
    /// Who a caller's phone, email or chat handle names: the first customer to claim
    /// it.
    #[serde(serialize_with = "crate::ids::sorted")]
    identities: GrowingMap<String, CustomerId>,
    /// The other customers that hold such a key, oldest first: the next owner when the
    /// owner lets it go. Derived from the customers, never stored: rebuilt with every
    /// load ([`ContextBook::rebuild_identity_holders`]), so a replica that loaded a
    /// snapshot and one that applied the log decide alike.
    #[serde(skip)]
    other_holders: HashMap<String, BTreeSet<(Ts, CustomerId)>>,
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
                    let desk = self.desks.entry(agent).or_default();
                    desk.loaded.insert(customer_id);
                }
                Ok(ContextReply::Customer(Box::new(view)))
            }
            ContextCommand::Unwatch { agent, customer_id } => {
                if let Some(d) = self.desks.get_mut(&agent) {
                    d.loaded.remove(&customer_id);
                }
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
            } => self.update_customer(&by, customer_id, base_version, changes, now, fx),
            ContextCommand::LinkActivity {
                by,
                activity_id,
                customer_id,
            } => self.link_activity(&by, activity_id, customer_id, now, fx),
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
            } => self.create_request(&by, customer_id, title, description, now, fx),
            ContextCommand::UpdateRequest {
                by,
                request_id,
                base_version,
                title,
                description,
                state,
            } => self.update_request(
                &by,
                request_id,
                base_version,
                RequestEdit {
                    title,
                    description,
                    state,
                },
                now,
                fx,
            ),
            ContextCommand::UpdateActivity {
                by,
                activity_id,
                base_version,
                notes,
                tags,
            } => self.update_activity(
                &by,
                activity_id,
                base_version,
                ActivityEdit { notes, tags },
                now,
                fx,
            ),
            ContextCommand::AddNote {
                by,
                customer_id,
                request_id,
                text,
            } => self.add_note(&by, customer_id, request_id, text, now, fx),
            ContextCommand::Journey {
                customer_id,
                request_id,
                limit,
            } => self.journey_of(customer_id, request_id, limit),
            ContextCommand::CloseInteraction {
                agent,
                activity_id,
                choice,
            } => self.close_interaction(&agent, activity_id, choice, now, fx),
            ContextCommand::ReopenCustomer { agent, customer_id } => {
                self.reopen_customer(&agent, customer_id, now)
            }
            ContextCommand::CloseCustomer { agent, customer_id } => {
                self.close_customer(&agent, customer_id)
            }
            ContextCommand::Lists { agent } => {
                Ok(ContextReply::Lists(Box::new(self.lists(&agent))))
            }
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

    /// Rebuilds who else holds each identity key (after loading a snapshot).
    pub fn rebuild_identity_holders(&mut self) {
        let mut other: HashMap<String, BTreeSet<(Ts, CustomerId)>> = HashMap::new();
        for (id, c) in self.customers.iter() {
            for k in edits::identity_keys(&c.phones, &c.emails, &c.chat_handles) {
                if self.identities.get(&k) != Some(id) {
                    other
                        .entry(k)
                        .or_default()
                        .insert((c.stamp.created_at, *id));
                }
            }
        }
        self.other_holders = other;
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

    /// The customer's journey, newest `limit` events (of one request, when given), oldest
    /// first.
    fn journey_of(
        &self,
        customer_id: CustomerId,
        request_id: Option<RequestId>,
        limit: usize,
    ) -> Result<ContextReply, HubError> {
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

    /// The activity a task became, if it was accepted.
    pub fn activity_of_task(&self, task: crate::ids::TaskId) -> Option<&Activity> {
        self.by_task
            .get(&task)
            .and_then(|a| self.activities.get(a))
            .map(|a| &**a)
    }
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

#[cfg(test)]
mod tests;
