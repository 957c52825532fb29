//! The in-memory store: the routing book and the customer context behind one mutex,
//! so that an accept and the activity it creates are one atomic step.
//!
//! A std mutex, not tokio's: no method holds it across an `.await` (the book never
//! awaits), and a command takes microseconds, so contention costs less than an async
//! lock's bookkeeping would.

use super::{Dispatch, Store};
use crate::clock::Ts;
use crate::context::{ContextBook, ContextCommand, ContextEffects};
use crate::error::HubError;
use crate::ids::{AgentId, QueueId, TaskId};
use crate::routing::{
    AgentView, Book, Command, Notice, Outcome, QueueStats, Reply, Rules, Snapshot,
};
use crate::task::Task;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

/// Everything one node keeps when it keeps it alone.
pub struct State {
    /// Routing.
    pub book: Book,
    /// Customer context.
    pub context: ContextBook,
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
        o
    }

    /// Both books, fresh.
    pub fn new(rules: Arc<Rules>, now: Ts) -> State {
        State {
            book: Book::new(rules, now),
            context: ContextBook::new(),
        }
    }

    /// Makes every id minted from now on derive from `seed` (one log entry's position).
    pub fn reseed(&mut self, seed: u64) {
        self.book.ids.reseed(seed);
        self.context.ids.reseed(seed.rotate_left(17) ^ 0x5bd1_e995);
    }

    /// Everything, as bytes, for a snapshot.
    pub fn snapshot_bytes(&self) -> Result<Vec<u8>, HubError> {
        rmp_serde::to_vec_named(&(self.book.snapshot_state(), &self.context))
            .map_err(|e| HubError::StoreUnavailable(format!("cannot encode a snapshot: {e}")))
    }

    /// Both books from snapshot bytes.
    pub fn from_snapshot(rules: Arc<Rules>, bytes: &[u8]) -> Result<State, HubError> {
        let (book, context): (crate::routing::BookSnapshot, ContextBook) =
            rmp_serde::from_slice(bytes).map_err(|e| {
                HubError::StoreUnavailable(format!("cannot decode the snapshot: {e}"))
            })?;
        Ok(State {
            book: Book::restore(rules, book),
            context,
        })
    }

    /// A customer-context command.
    pub fn context(&mut self, cmd: ContextCommand, now: Ts) -> Outcome {
        let mut fx = ContextEffects::default();
        let reply = self.context.execute(cmd, now, &mut fx);
        let mut o = Outcome::done();
        o.reply = reply.map(Reply::Context);
        self.context_notices(&mut o, fx);
        o
    }

    fn context_notices(&self, o: &mut Outcome, fx: ContextEffects) {
        // The Open and Recent lists change only through the agent's own requests, whose
        // replies say what changed; `get_lists` and the welcome carry the whole lists.
        for (change, to) in fx.changes {
            o.notices.push(Notice::RecordChanged { to, change });
        }
    }
}

/// The default store: state in this process only.
pub struct MemoryStore {
    state: Mutex<State>,
    dispatch: OnceLock<Weak<dyn Dispatch>>,
}

impl MemoryStore {
    /// A store with the configured agents and queues.
    pub fn new(rules: Arc<Rules>, now: Ts) -> MemoryStore {
        MemoryStore {
            state: Mutex::new(State::new(rules, now)),
            dispatch: OnceLock::new(),
        }
    }

    /// Runs one decision and delivers its notices before the lock is released, so that
    /// notices reach sessions in the order the decisions were made (two saves of one
    /// record are pushed in version order). Delivery never waits: it queues frames.
    /// The returned outcome keeps the reply and the counts.
    fn decide(&self, f: impl FnOnce(&mut State) -> Outcome) -> Outcome {
        let mut st = self.state();
        let mut o = f(&mut st);
        if let Some(d) = self.dispatch.get().and_then(Weak::upgrade) {
            d.deliver(o.take_notices());
        }
        o
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The books never panic half-way through a change on purpose; if one ever did,
        // carrying on with its state beats taking the whole hub down.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    async fn execute(&self, cmd: Command, now: Ts) -> Result<Outcome, HubError> {
        Ok(self.decide(|st| st.execute(cmd, now)))
    }

    async fn context(&self, cmd: ContextCommand, now: Ts) -> Result<Outcome, HubError> {
        Ok(self.decide(|st| st.context(cmd, now)))
    }

    async fn expire_due(&self, now: Ts) -> Result<Outcome, HubError> {
        Ok(self.decide(|st| st.expire_due(now)))
    }

    async fn next_deadline(&self) -> Result<Option<Ts>, HubError> {
        Ok(self.state().book.next_deadline())
    }

    async fn agent_view(&self, agent: &AgentId) -> Result<Option<AgentView>, HubError> {
        Ok(self.state().book.agent_view(agent))
    }

    async fn task(&self, id: TaskId) -> Result<Option<Task>, HubError> {
        Ok(self.state().book.task(id).cloned())
    }

    async fn snapshot(&self, now: Ts) -> Result<Snapshot, HubError> {
        Ok(self.state().book.snapshot(now))
    }

    async fn queue_stats(&self, queues: &[QueueId], now: Ts) -> Result<Vec<QueueStats>, HubError> {
        let st = self.state();
        Ok(queues
            .iter()
            .filter_map(|q| st.book.queue_stats(q, now))
            .collect())
    }

    async fn ping(&self) -> Result<(), HubError> {
        Ok(())
    }

    fn set_dispatch(&self, dispatch: Weak<dyn Dispatch>) {
        let _ = self.dispatch.set(dispatch);
    }
}
