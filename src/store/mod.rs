//! Where the routing state lives: one interface, one implementation per backend.
//!
//! The hub talks to the state only through [`Store`]. Each method is one atomic
//! decision: a command goes in, the whole of its effect comes out in an [`Outcome`],
//! and no other command sees a half-done state. The in-memory store ([`memory`])
//! gets that from one mutex around the [`Book`](crate::routing::Book); a shared
//! backend must get it from the backend (for Redis: a Lua script per decision).
//!
//! `tests/store_suite.rs` runs the same behaviour tests against every implementation.

mod background;
pub mod file;
pub mod memory;
pub mod redis;

use crate::clock::Ts;
use crate::context::ContextCommand;
use crate::error::HubError;
use crate::events::EventLog;
use crate::ids::{AgentId, QueueId, TaskId};
use crate::routing::{AgentView, Command, QueueStats, Snapshot};
use crate::state::Outcome;
use crate::task::Task;

/// Where a store that learns of decisions made elsewhere (another node's commands)
/// delivers their notices: the hub.
pub trait Dispatch: Send + Sync {
    /// Delivers an outcome's notices to this node's sessions.
    fn deliver(&self, o: Outcome);
}

/// The routing state, wherever it is kept. Errors are only
/// [`HubError::StoreUnavailable`]: a command the rules refuse is an `Ok` outcome whose
/// `reply` is the error.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Carries out one routing command atomically at `now`. An accepted task becomes an
    /// activity of its customer in the same atomic step.
    async fn execute(&self, cmd: Command, now: Ts) -> Result<Outcome, HubError>;
    /// Carries out one customer-context command atomically at `now`; the reply is a
    /// [`Reply::Context`](crate::state::Reply::Context).
    async fn context(&self, cmd: ContextCommand, now: Ts) -> Result<Outcome, HubError>;
    /// Fires every timer due at `now` (offer expiry, reconnect grace, wrap-up). Each
    /// fires exactly once, whichever node asks.
    async fn expire_due(&self, now: Ts) -> Result<Outcome, HubError>;
    /// Carries out one webhook command (an endpoint made or changed, a position, a
    /// lease) as a decision of its own, logged like any other; the reply is a
    /// [`Reply::Webhook`](crate::state::Reply::Webhook).
    async fn webhook(
        &self,
        cmd: crate::webhooks::book::WebhookCommand,
        now: Ts,
    ) -> Result<Outcome, HubError>;
    /// The webhooks' replicated state as this node holds it.
    async fn webhooks(&self) -> Result<crate::webhooks::book::WebhookBook, HubError>;
    /// The earliest pending deadline.
    async fn next_deadline(&self) -> Result<Option<Ts>, HubError>;
    /// One agent's view.
    async fn agent_view(&self, agent: &AgentId) -> Result<Option<AgentView>, HubError>;
    /// One task.
    async fn task(&self, id: TaskId) -> Result<Option<Task>, HubError>;
    /// Every agent and queue.
    async fn snapshot(&self, now: Ts) -> Result<Snapshot, HubError>;
    /// Some queues' numbers.
    async fn queue_stats(&self, queues: &[QueueId], now: Ts) -> Result<Vec<QueueStats>, HubError>;
    /// Whether the backend answers.
    async fn ping(&self) -> Result<(), HubError>;
    /// Reads this node's copy of the state (the statistics report and metrics are
    /// built from it), under the store's lock: `f` must be quick and must not block.
    fn read_state(&self, f: &mut dyn FnMut(&crate::state::State));
    /// Answers a read-only context command (see [`ContextCommand::is_read_only`]) from
    /// what this node holds, without making it a decision.
    async fn context_read(&self, cmd: ContextCommand, now: Ts) -> Result<Outcome, HubError> {
        self.context(cmd, now).await
    }
    /// The name this node's connections are filed under in the shared state: the node
    /// id plus this run's incarnation, so that declaring an old run lost cannot touch a
    /// new one. `None` for a store of one node.
    fn node_tag(&self) -> Option<std::sync::Arc<str>> {
        None
    }
    /// Runs `f` on this node's window of numbered events, under the lock its decisions
    /// are applied and delivered under: whatever `f` sees is exactly what was
    /// delivered before it, and what is delivered after it is newer (`Hub::events_from`
    /// reads the window and subscribes to the live events in one step through this).
    fn with_events(&self, f: &mut dyn FnMut(&EventLog));
    /// Gives the store the hub to deliver notices of decisions it applies on its own
    /// (a shared store applies every node's commands). The in-memory store has none.
    fn set_dispatch(&self, _dispatch: std::sync::Weak<dyn Dispatch>) {}
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
