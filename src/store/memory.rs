//! The in-memory store: the routing book behind one mutex.
//!
//! A std mutex, not tokio's: no method holds it across an `.await` (the book never
//! awaits), and a command takes microseconds, so contention costs less than an async
//! lock's bookkeeping would.

use super::Store;
use crate::clock::Ts;
use crate::error::HubError;
use crate::ids::{AgentId, QueueId, TaskId};
use crate::routing::{AgentView, Book, Command, Outcome, QueueStats, Rules, Snapshot};
use crate::task::Task;
use std::sync::{Arc, Mutex, MutexGuard};

/// The default store: state in this process only.
pub struct MemoryStore {
    book: Mutex<Book>,
}

impl MemoryStore {
    /// A store with the configured agents and queues.
    pub fn new(rules: Arc<Rules>, now: Ts) -> MemoryStore {
        MemoryStore {
            book: Mutex::new(Book::new(rules, now)),
        }
    }

    fn book(&self) -> MutexGuard<'_, Book> {
        // The book never panics half-way through a change on purpose; if it ever did,
        // carrying on with its state beats taking the whole hub down.
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    async fn execute(&self, cmd: Command, now: Ts) -> Result<Outcome, HubError> {
        Ok(self.book().execute(cmd, now))
    }

    async fn expire_due(&self, now: Ts) -> Result<Outcome, HubError> {
        Ok(self.book().expire_due(now))
    }

    async fn next_deadline(&self) -> Result<Option<Ts>, HubError> {
        Ok(self.book().next_deadline())
    }

    async fn agent_view(&self, agent: &AgentId) -> Result<Option<AgentView>, HubError> {
        Ok(self.book().agent_view(agent))
    }

    async fn task(&self, id: TaskId) -> Result<Option<Task>, HubError> {
        Ok(self.book().task(id).cloned())
    }

    async fn snapshot(&self, now: Ts) -> Result<Snapshot, HubError> {
        Ok(self.book().snapshot(now))
    }

    async fn queue_stats(&self, queues: &[QueueId], now: Ts) -> Result<Vec<QueueStats>, HubError> {
        let book = self.book();
        Ok(queues
            .iter()
            .filter_map(|q| book.queue_stats(q, now))
            .collect())
    }

    async fn ping(&self) -> Result<(), HubError> {
        Ok(())
    }
}
