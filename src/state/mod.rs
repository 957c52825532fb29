//! The replicated state: everything one node decides from, the routing book and the
//! customer context together, so that an accept and the activity it creates are one
//! step. Every store keeps one (the in-memory store behind a mutex; the file and Redis
//! stores as the replica their log replays into), and [`outcome`] holds what a step
//! produces.

pub mod outcome;

pub use outcome::{Notice, Outcome, Reply, Stats};

use crate::clock::Ts;
use crate::context::{ContextBook, ContextCommand, ContextEffects};
use crate::error::HubError;
use crate::routing::{Book, Command, Rules};
use crate::webhooks::book::{WebhookBook, WebhookCommand};

use std::sync::Arc;

/// Everything one node keeps when it keeps it alone.
pub struct State {
    /// Routing.
    pub book: Book,
    /// Customer context.
    pub context: ContextBook,
    /// Webhook endpoints made through the API, and every endpoint's position and lease.
    pub webhooks: WebhookBook,
}

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
                o.reply = Ok(Reply::Accepted {
                    task: task.clone(),
                    activity,
                });
            }
        }
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
            book: Book::new(rules, now),
            context: ContextBook::new(),
            webhooks: WebhookBook::default(),
        }
    }

    /// A webhook command: endpoints, positions, leases. It makes no events and no
    /// notices (the hub's webhook service reads the book).
    pub fn webhook(&mut self, cmd: WebhookCommand, now: Ts) -> Outcome {
        let mut o = Outcome::done();
        o.reply = self.webhooks.execute(cmd, now).map(Reply::Webhook);
        o
    }

    /// Makes every id minted from now on derive from `seed` (one log entry's position).
    pub fn reseed(&mut self, seed: u64) {
        self.book.ids.reseed(seed);
        self.context.ids.reseed(seed.rotate_left(17) ^ 0x5bd1_e995);
    }

    /// Everything, as bytes, for a snapshot.
    pub fn snapshot_bytes(&self) -> Result<Vec<u8>, HubError> {
        rmp_serde::to_vec_named(&(self.book.snapshot_state(), &self.context, &self.webhooks))
            .map_err(|e| HubError::StoreUnavailable(format!("cannot encode a snapshot: {e}")))
    }

    /// Both books from snapshot bytes.
    pub fn from_snapshot(rules: Arc<Rules>, bytes: &[u8]) -> Result<State, HubError> {
        // A snapshot written before the webhooks' state existed has two parts.
        let (book, context, webhooks): (crate::routing::BookSnapshot, ContextBook, WebhookBook) =
            match rmp_serde::from_slice(bytes) {
                Ok(three) => three,
                Err(_) => {
                    let (book, context): (crate::routing::BookSnapshot, ContextBook) =
                        rmp_serde::from_slice(bytes).map_err(|e| {
                            HubError::StoreUnavailable(format!("cannot decode the snapshot: {e}"))
                        })?;
                    (book, context, WebhookBook::default())
                }
            };
        let mut context = context;
        // The search index is derived from the customers, never stored.
        context.rebuild_search();
        Ok(State {
            book: Book::restore(rules, book),
            context,
            webhooks,
        })
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
    /// are numbered and kept (`crate::events`) and folded into the statistics.
    fn after(&mut self, _o: &mut Outcome, _now: Ts) {}

    fn context_notices(&self, o: &mut Outcome, fx: ContextEffects) {
        // The Open and Recent lists change only through the agent's own requests, whose
        // replies say what changed; `get_lists` and the welcome carry the whole lists.
        for (change, to) in fx.changes {
            o.notices.push(Notice::RecordChanged { to, change });
        }
    }
}
