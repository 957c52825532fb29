//! Where the routing state lives: one interface, one implementation per backend.
//!
//! The hub talks to the state only through [`Store`], which has two jobs: decide one
//! command ([`Store::decide`]: a command goes in, the whole of its effect comes out in
//! an [`Outcome`], and no other command sees a half-done state) and read this node's
//! replica ([`Store::read_state`]). Every other method is built on those two. The
//! in-memory store ([`memory`]) gets atomicity from one mutex around the
//! [`State`](crate::state::State); the file and Redis stores from one ordered log
//! applied by one thread (`crate::log`). Each decision's notices leave through the
//! store's [`Sink`], given when the store is built ([`sink`]).
//!
//! `tests/store_suite.rs` runs the same behaviour tests against every implementation.

pub(crate) mod background;
pub mod file;
pub mod memory;
pub mod redis;
pub mod sink;

use crate::clock::Ts;
use crate::context::ContextCommand;
use crate::error::HubError;
use crate::events::EventLog;
use crate::ids::{AgentId, QueueId, TaskId};
use crate::routing::{AgentView, Command, QueueStats, Snapshot};
use crate::state::Outcome;
use crate::state::State;
use crate::task::Task;
use crate::webhooks::book::{WebhookBook, WebhookCommand};
pub use sink::{Binding, Dispatch, Sink};

/// One command for the store to decide: a log entry's body (the file and Redis stores
/// log it as it is).
pub use crate::log::Body as Decision;

/// The routing state, wherever it is kept. Errors are only
/// [`HubError::StoreUnavailable`] (and [`HubError::OutcomeUnknown`] once a command may
/// have been logged): a command the rules refuse is an `Ok` outcome whose `reply` is
/// the error.
///
/// A backend implements [`decide`](Store::decide), [`read_state`](Store::read_state)
/// and [`ping`](Store::ping); the rest are provided. Each decision's notices have left
/// through the store's [`Sink`] before `decide` returns: the returned outcome keeps the
/// reply and the counts.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Decides one command atomically at `now` (for a logged store: logs it, then
    /// applies it in log order).
    async fn decide(&self, d: Decision, now: Ts) -> Result<Outcome, HubError>;
    /// Reads this node's replica under the lock its decisions are applied and
    /// delivered under: `f` must be quick and must not block. Whatever `f` sees is
    /// exactly what was delivered before it.
    fn read_state(&self, f: &mut dyn FnMut(&State));
    /// Whether the backend answers.
    async fn ping(&self) -> Result<(), HubError>;

    /// Carries out one routing command atomically at `now`. An accepted task becomes an
    /// activity of its customer in the same atomic step.
    async fn execute(&self, cmd: Command, now: Ts) -> Result<Outcome, HubError> {
        self.decide(Decision::Routing(Box::new(cmd)), now).await
    }
    /// Carries out one customer-context command atomically at `now`; the reply is a
    /// [`Reply::Context`](crate::state::Reply::Context).
    async fn context(&self, cmd: ContextCommand, now: Ts) -> Result<Outcome, HubError> {
        self.decide(Decision::Context(Box::new(cmd)), now).await
    }
    /// Fires every timer due at `now` (offer expiry, reconnect grace, wrap-up). Each
    /// fires exactly once, whichever node asks. Decided (logged) only when something is
    /// due: a tick with nothing to fire writes nothing.
    async fn expire_due(&self, now: Ts) -> Result<Outcome, HubError> {
        let due = self.next_deadline().await?.is_some_and(|d| d <= now);
        if !due {
            return Ok(Outcome::done());
        }
        self.decide(Decision::Expire, now).await
    }
    /// Carries out one webhook command (an endpoint made or changed, a position, a
    /// lease) as a decision of its own, logged like any other; the reply is a
    /// [`Reply::Webhook`](crate::state::Reply::Webhook).
    async fn webhook(&self, cmd: WebhookCommand, now: Ts) -> Result<Outcome, HubError> {
        self.decide(Decision::Webhook(Box::new(cmd)), now).await
    }
    /// The webhooks' replicated state as this node holds it.
    async fn webhooks(&self) -> Result<WebhookBook, HubError> {
        self.read(|s| s.webhooks.clone())
    }
    /// The earliest pending deadline.
    async fn next_deadline(&self) -> Result<Option<Ts>, HubError> {
        self.read(|s| s.book.next_deadline())
    }
    /// One agent's view.
    async fn agent_view(&self, agent: &AgentId) -> Result<Option<AgentView>, HubError> {
        self.read(|s| s.book.agent_view(agent))
    }
    /// One task.
    async fn task(&self, id: TaskId) -> Result<Option<Task>, HubError> {
        self.read(|s| s.book.task(id).cloned())
    }
    /// Every agent and queue.
    async fn snapshot(&self, now: Ts) -> Result<Snapshot, HubError> {
        self.read(|s| s.book.snapshot(now))
    }
    /// Some queues' numbers.
    async fn queue_stats(&self, queues: &[QueueId], now: Ts) -> Result<Vec<QueueStats>, HubError> {
        self.read(|s| {
            queues
                .iter()
                .filter_map(|q| s.book.queue_stats(q, now))
                .collect()
        })
    }
    /// Answers a read-only context command (see [`ContextCommand::is_read_only`]) from
    /// what this node holds, without making it a decision. The one read a backend
    /// still answers itself: the context book answers reads through the same `&mut`
    /// entry point as changes, which `read_state` does not give. This default decides
    /// it (the memory store, where that is the same lock).
    async fn context_read(&self, cmd: ContextCommand, now: Ts) -> Result<Outcome, HubError> {
        self.context(cmd, now).await
    }
    /// Runs `f` on this node's window of numbered events, under the lock its decisions
    /// are applied and delivered under: whatever `f` sees is exactly what was
    /// delivered before it, and what is delivered after it is newer (`Hub::events_chunk`
    /// reads the window and subscribes to the live events in one step through this).
    fn with_events(&self, f: &mut dyn FnMut(&EventLog)) {
        self.read_state(&mut |s| f(&s.events));
    }
    /// The name this node's connections are filed under in the shared state: the node
    /// id plus this run's incarnation, so that declaring an old run lost cannot touch a
    /// new one. `None` for a store of one node.
    fn node_tag(&self) -> Option<std::sync::Arc<str>> {
        None
    }
    /// A clean stop's last asynchronous work, before [`Store::stop`]: a Redis node that
    /// is the last one of its cluster stores a snapshot, so that the next start
    /// replays nothing and may run by changed rules or another version.
    async fn close(&self) {}
    /// Stops the store's background work (log reader, heartbeat, snapshots) at the end
    /// of a drain, before the runtime tears down its connections under it.
    fn stop(&self) {}
    /// Adds the store's own numbers to `/metrics` (Prometheus text).
    fn render_metrics(&self, _out: &mut String) {}
    /// What the start banner says about the store.
    fn describe(&self) -> String {
        "memory (nothing is kept after the hub stops)".into()
    }
}

/// Reading the replica into a value (the provided reads).
trait ReadExt: Store {
    fn read<T>(&self, f: impl FnOnce(&State) -> T) -> Result<T, HubError>;
}

impl<S: Store + ?Sized> ReadExt for S {
    fn read<T>(&self, f: impl FnOnce(&State) -> T) -> Result<T, HubError> {
        let mut f = Some(f);
        let mut out = None;
        self.read_state(&mut |s| {
            if let Some(f) = f.take() {
                out = Some(f(s));
            }
        });
        out.ok_or_else(|| HubError::StoreUnavailable("no state to read".into()))
    }
}
