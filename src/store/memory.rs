//! The in-memory store: the routing book and the customer context behind one mutex,
//! so that an accept and the activity it creates are one atomic step.
//!
//! A std mutex, not tokio's: no method holds it across an `.await` (the book never
//! awaits), and a command takes microseconds, so contention costs less than an async
//! lock's bookkeeping would.

use super::{Decision, Sink, Store};
use crate::clock::Ts;
use crate::context::ContextCommand;
use crate::error::HubError;
use crate::routing::Rules;
use crate::state::{Outcome, State};
use std::sync::{Arc, Mutex, MutexGuard};

/// The default store: state in this process only.
pub struct MemoryStore {
    state: Mutex<State>,
    sink: Sink,
}

impl MemoryStore {
    /// A store with the configured agents and queues, delivering to `sink`.
    pub fn new(rules: Arc<Rules>, now: Ts, sink: Sink) -> MemoryStore {
        let mut state = State::new(rules, now);
        // Nothing outlives this process: every start is a new history.
        state.events.begin(uuid::Uuid::new_v4().as_u64_pair().0);
        MemoryStore {
            state: Mutex::new(state),
            sink,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The books never panic half-way through a change on purpose; if one ever did,
        // carrying on with its state beats taking the whole hub down.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    /// Runs one decision and delivers its notices before the lock is released, so that
    /// notices reach sessions in the order the decisions were made (two saves of one
    /// record are pushed in version order). Delivery never waits: it queues frames.
    /// The returned outcome keeps the reply and the counts.
    async fn decide(&self, d: Decision, now: Ts) -> Result<Outcome, HubError> {
        let mut st = self.state();
        let mut o = d.apply(&mut st, now);
        self.sink.deliver(&mut o);
        Ok(o)
    }

    async fn context_read(&self, cmd: ContextCommand, now: Ts) -> Result<Outcome, HubError> {
        if !cmd.is_read_only() {
            return self.context(cmd, now).await;
        }
        // A read makes no decision and has nothing to deliver; the state's lock only
        // for its start: a search runs after it is let go.
        let read = self.state().context_read(cmd, now);
        Ok(read.finish().await)
    }

    fn read_state(&self, f: &mut dyn FnMut(&State)) {
        f(&self.state());
    }

    async fn ping(&self) -> Result<(), HubError> {
        Ok(())
    }
}
