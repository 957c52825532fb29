//! The in-memory store: the routing book and the customer context behind one mutex,
//! so that an accept and the activity it creates are one atomic step.
//!
//! A std mutex, not tokio's: no method holds it across an `.await` (the book never
//! awaits), and a command takes microseconds, so contention costs less than an async
//! lock's bookkeeping would.

use super::{Dispatch, Store};
use crate::clock::Ts;
use crate::context::ContextCommand;
use crate::error::HubError;
use crate::ids::{AgentId, QueueId, TaskId};
use crate::routing::{AgentView, Command, QueueStats, Rules, Snapshot};
use crate::state::{Outcome, State};
use crate::task::Task;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

/// The default store: state in this process only.
pub struct MemoryStore {
    state: Mutex<State>,
    dispatch: OnceLock<Weak<dyn Dispatch>>,
}

impl MemoryStore {
    /// A store with the configured agents and queues.
    pub fn new(rules: Arc<Rules>, now: Ts) -> MemoryStore {
        let mut state = State::new(rules, now);
        // Nothing outlives this process: every start is a new history.
        state.events.begin(uuid::Uuid::new_v4().as_u64_pair().0);
        MemoryStore {
            state: Mutex::new(state),
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

    async fn context_read(&self, cmd: ContextCommand, now: Ts) -> Result<Outcome, HubError> {
        if !cmd.is_read_only() {
            return self.context(cmd, now).await;
        }
        // A read makes no decision and has nothing to deliver; the state's lock only
        // for its start: a search runs after it is let go.
        let read = self.state().context_read(cmd, now);
        Ok(read.finish())
    }

    async fn expire_due(&self, now: Ts) -> Result<Outcome, HubError> {
        Ok(self.decide(|st| st.expire_due(now)))
    }

    async fn webhook(
        &self,
        cmd: crate::webhooks::book::WebhookCommand,
        now: Ts,
    ) -> Result<Outcome, HubError> {
        Ok(self.decide(|st| st.webhook(cmd, now)))
    }

    async fn webhooks(&self) -> Result<crate::webhooks::book::WebhookBook, HubError> {
        Ok(self.state().webhooks.clone())
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

    fn read_state(&self, f: &mut dyn FnMut(&crate::state::State)) {
        f(&self.state());
    }

    async fn ping(&self) -> Result<(), HubError> {
        Ok(())
    }

    fn with_events(&self, f: &mut dyn FnMut(&crate::events::EventLog)) {
        f(&self.state().events)
    }

    fn set_dispatch(&self, dispatch: Weak<dyn Dispatch>) {
        let _ = self.dispatch.set(dispatch);
    }
}
