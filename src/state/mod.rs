//! The replicated state: everything one node decides from, the routing book and the
//! customer context together, so that an accept and the activity it creates are one
//! step. Every store keeps one (the in-memory store behind a mutex; the file and Redis
//! stores as the replica their log replays into), and [`outcome`] holds what a step
//! produces.

pub mod outcome;

pub use outcome::{Notice, Outcome, Reply, Stats};

use crate::clock::Ts;
use crate::context::{ContextBook, ContextCommand, ContextEffects, ContextReply, Searcher};
use crate::error::HubError;
use crate::events::{EventData, EventLog, EventLogSnapshot};
use crate::routing::{Book, BookSnapshot, Command, Rules};
use crate::stats::Statistics;
use crate::webhooks::book::{WebhookBook, WebhookCommand};
use serde::Deserialize;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Everything one node keeps when it keeps it alone.
pub struct State {
    /// Routing.
    pub book: Book,
    /// Customer context.
    pub context: ContextBook,
    /// Webhook endpoints made through the API, and every endpoint's position and lease.
    pub webhooks: WebhookBook,
    /// The numbered integration events and their window.
    pub events: EventLog,
    /// The statistics, folded from every decision's events.
    pub stats: Statistics,
}

/// Set when the process is about to end (`main`, once the drain begins): from then on
/// a state that is dropped leaves its customer context to the kernel instead of freeing
/// it. A million customers' records and search index are tens of millions of
/// allocations, and freeing them one by one took longer than the 10 s a supervisor
/// gives a stopping hub (`loadtest search` reports the time: 0.7 s for 100,000); the
/// kernel takes the whole heap back at once when the process exits.
static EXITING: AtomicBool = AtomicBool::new(false);

/// Marks the process as ending: see `EXITING`. Only for `main`; a hub stopped inside a
/// process that goes on (the tests) frees its state as usual.
pub fn process_exiting() {
    EXITING.store(true, Ordering::Relaxed);
}

impl Drop for State {
    fn drop(&mut self) {
        if EXITING.load(Ordering::Relaxed) {
            std::mem::forget(std::mem::take(&mut self.context));
        }
    }
}

/// A read-only context command, started under the store's lock
/// ([`State::context_read`]), finished without it.
pub enum ContextRead {
    /// Answered under the lock (a lookup: microseconds).
    Done(Box<Outcome>),
    /// A search, to run on the index alone.
    Search {
        /// The index's handle.
        searcher: Searcher,
        /// What was typed.
        query: String,
        /// The most results.
        limit: usize,
    },
}

impl ContextRead {
    /// The outcome. Call it after letting the store's lock go: a search runs on the
    /// search threads ([`crate::context::search_threads`]), not on the caller's.
    pub async fn finish(self) -> Outcome {
        match self {
            ContextRead::Done(o) => *o,
            ContextRead::Search {
                searcher,
                query,
                limit,
            } => {
                let mut o = Outcome::done();
                let found =
                    crate::context::search_threads::run(move || searcher.search(&query, limit))
                        .await;
                o.reply = match found {
                    Some(found) => Ok(Reply::Context(ContextReply::Customers(found))),
                    None => Err(HubError::StoreUnavailable("the search failed".into())),
                };
                o
            }
        }
    }
}

/// A snapshot's parts as decoded. One written before the events, the statistics and
/// the webhooks' book were kept lacks the later parts: the missing ones start empty
/// (no endpoints made through the API, no delivery positions).
#[derive(Deserialize)]
struct SnapshotParts(
    BookSnapshot,
    ContextBook,
    #[serde(default)] Option<EventLogSnapshot>,
    #[serde(default)] Statistics,
    #[serde(default)] WebhookBook,
);

impl State {
    /// A routing command, then what the context makes of its task events.
    pub fn execute(&mut self, cmd: Command, now: Ts) -> Outcome {
        let accept = matches!(cmd, Command::Accept { .. });
        let mut o = self.book.execute(cmd, now);
        let mut fx = ContextEffects::default();
        for ev in std::mem::take(&mut o.task_events) {
            self.context.task_event(ev, now, &mut fx);
        }
        if accept {
            if let Ok(Reply::Task(task)) = &o.reply {
                let activity = self
                    .context
                    .activity_of_task(task.task_id)
                    .map(|a| Box::new(a.clone()));
                // The same shared task, not a copy of it.
                o.reply = Ok(Reply::Accepted {
                    task: Arc::clone(task),
                    activity,
                });
            }
        }
        self.name_activities(&mut o);
        self.context_notices(&mut o, fx);
        self.after(&mut o, now);
        o
    }

    /// Fires every timer due at `now`.
    pub fn expire_due(&mut self, now: Ts) -> Outcome {
        let mut o = self.book.expire_due(now);
        let mut fx = ContextEffects::default();
        for ev in std::mem::take(&mut o.task_events) {
            self.context.task_event(ev, now, &mut fx);
        }
        self.context_notices(&mut o, fx);
        self.after(&mut o, now);
        o
    }

    /// Both books, fresh.
    pub fn new(rules: Arc<Rules>, now: Ts) -> State {
        State {
            events: EventLog::new(rules.events),
            stats: Statistics::new(rules.stats.clone()),
            book: Book::new(rules, now),
            context: ContextBook::new(),
            webhooks: WebhookBook::default(),
        }
    }

    /// A webhook command: endpoints, positions, leases. It makes no events; the hub's
    /// webhook service reads the book, told by a notice when delivery may change.
    pub fn webhook(&mut self, cmd: WebhookCommand, now: Ts) -> Outcome {
        let mut o = Outcome::done();
        let poke = WebhookBook::changes_delivery(&cmd);
        o.reply = self.webhooks.execute(cmd, now).map(Reply::Webhook);
        let changed = matches!(
            o.reply,
            Ok(Reply::Webhook(
                crate::webhooks::book::WebhookReply::Done
                    | crate::webhooks::book::WebhookReply::Endpoint(_)
            ))
        );
        if poke && changed {
            // Every node's webhook service, in decision order: a rotated secret signs,
            // a disabled or deleted endpoint stops, on the node delivering it.
            o.notices.push(Notice::WebhooksChanged);
        }
        // The window keeps what an enabled endpoint has not received yet (up to
        // `events.max_held`); set here, from replicated state, so every replica agrees.
        self.events
            .set_retain_floor(self.webhooks.floor().map(|p| p + 1));
        o
    }

    /// Makes every id minted from now on derive from `seed` (one log entry's position).
    pub fn reseed(&mut self, seed: u64) {
        self.book.ids.reseed(seed);
        self.context.ids.reseed(seed.rotate_left(17) ^ 0x5bd1_e995);
    }

    /// Everything, as bytes, for a snapshot.
    pub fn snapshot_bytes(&self) -> Result<Vec<u8>, HubError> {
        let mut bytes = Vec::new();
        self.write_snapshot(&mut bytes)?;
        Ok(bytes)
    }

    /// The same bytes, into a writer as they are encoded (the file store's forked
    /// writer streams them to the file: no copy of the whole state in memory).
    pub fn write_snapshot<W: std::io::Write>(&self, out: &mut W) -> Result<(), HubError> {
        let parts = (
            self.book.snapshot_state(),
            &self.context,
            self.events.snapshot(),
            &self.stats,
            &self.webhooks,
        );
        rmp_serde::encode::write_named(out, &parts)
            .map_err(|e| HubError::StoreUnavailable(format!("cannot encode a snapshot: {e}")))
    }

    /// Both books from snapshot bytes.
    pub fn from_snapshot(rules: Arc<Rules>, bytes: &[u8]) -> Result<State, HubError> {
        State::decode(rules, bytes, true)
    }

    /// The same without the search index ([`ContextBook::without_search`]), for a
    /// replay: into the next snapshot (compaction: never searched), or of a log tail at
    /// start, after which [`State::rebuild_search`] builds the index once, in one go
    /// (at 100,000 customers ~1 s, where keeping it up through 200,000 replayed saves
    /// took ~15 s).
    pub fn from_snapshot_without_search(
        rules: Arc<Rules>,
        bytes: &[u8],
    ) -> Result<State, HubError> {
        State::decode(rules, bytes, false)
    }

    /// A blank state without the search index (see above).
    pub fn new_without_search(rules: Arc<Rules>, now: Ts) -> State {
        let mut s = State::new(rules, now);
        s.context.without_search();
        s
    }

    /// Builds the search index from the customers, in one go (after a replay).
    pub fn rebuild_search(&mut self) {
        self.context.rebuild_search();
    }

    fn decode(rules: Arc<Rules>, bytes: &[u8], search: bool) -> Result<State, HubError> {
        let SnapshotParts(book, mut context, events, mut stats, webhooks) =
            rmp_serde::from_slice(bytes).map_err(|e| {
                HubError::StoreUnavailable(format!("cannot decode the snapshot: {e}"))
            })?;
        // Derived from the customers, never stored: who else holds each identity
        // (decisions read it, so it is rebuilt for a replay too), and the search index.
        context.rebuild_identity_holders();
        if search {
            context.rebuild_search();
        } else {
            context.without_search();
        }
        // A snapshot written before events were kept has no window, and the epoch is
        // named by the next entry applied.
        let events = match events {
            Some(e) => EventLog::restore(rules.events, e),
            None => EventLog::new(rules.events),
        };
        stats.set_rules(rules.stats.clone());
        Ok(State {
            book: Book::restore(rules, book),
            context,
            webhooks,
            events,
            stats,
        })
    }

    /// Starts a read-only context command ([`ContextCommand::is_read_only`]) under the
    /// store's lock. A search only takes the index's handle here and is carried out by
    /// [`ContextRead::finish`] after the lock is let go: however broad, it never holds
    /// up a decision.
    pub fn context_read(&mut self, cmd: ContextCommand, now: Ts) -> ContextRead {
        match cmd {
            ContextCommand::Search { query, limit } => ContextRead::Search {
                searcher: self.context.searcher(),
                query,
                limit,
            },
            cmd => ContextRead::Done(Box::new(self.context(cmd, now))),
        }
    }

    /// A customer-context command.
    pub fn context(&mut self, cmd: ContextCommand, now: Ts) -> Outcome {
        let mut fx = ContextEffects::default();
        let reply = self.context.execute(cmd, now, &mut fx);
        let mut o = Outcome::done();
        o.reply = reply.map(Reply::Context);
        self.context_notices(&mut o, fx);
        self.after(&mut o, now);
        o
    }

    /// The one place every decision passes after the books made it: where its events
    /// are numbered and kept (`crate::events`) and folded into the statistics. `now`
    /// is the log entry's time, so every replica numbers, stamps and counts alike.
    fn after(&mut self, o: &mut Outcome, now: Ts) {
        for ev in &o.events {
            self.stats.apply(ev, now);
        }
        // The waiting counts of the queues the decision changed: the series' peaks.
        for q in &o.queues {
            if let Some(n) = self.book.waiting_len(q) {
                self.stats.waiting(q, n, now);
            }
        }
        if !o.events.is_empty() {
            // Moved into their envelopes, not copied (a task.created holds the task).
            o.envelopes = self.events.record(std::mem::take(&mut o.events), now);
        }
    }

    /// An accepted task's `task.assigned` names the activity the context made of it.
    fn name_activities(&self, o: &mut Outcome) {
        for ev in o.events.iter_mut() {
            if let EventData::TaskAssigned {
                task_id,
                activity_id,
                customer_id,
                request_id,
                ..
            } = ev
            {
                if let Some(a) = self.context.activity_of_task(*task_id) {
                    *activity_id = Some(a.activity_id);
                    *customer_id = a.customer_id;
                    *request_id = a.request_id;
                }
            }
        }
    }

    fn context_notices(&self, o: &mut Outcome, mut fx: ContextEffects) {
        o.events.append(&mut fx.events);
        // The Open and Recent lists change only through the agent's own requests, whose
        // replies say what changed; `get_lists` and the welcome carry the whole lists.
        for (change, to) in fx.changes {
            o.notices.push(Notice::RecordChanged { to, change });
        }
    }
}

#[cfg(test)]
mod tests;
