//! The book's snapshot: the state a snapshot keeps (agents, tasks, offers, ended offers,
//! timers, never the indexes), written borrowed from the book, and a book restored from
//! it with its queue indexes and open-agent sets rebuilt. It is kept apart from the
//! routing because it reads every field of the book yet takes part in no decision: only
//! the replicated state's snapshot encoding (`State::write_snapshot`,
//! `State::from_snapshot`) calls it, for the stores.

use super::*;

/// One agent in a snapshot: profile, state, tie-break sequence, node.
type AgentSnapshot = (Arc<Profile>, AgentState, u64, Option<Arc<str>>);
type AgentSnapshotRef<'a> = (&'a Arc<Profile>, &'a AgentState, u64, &'a Option<Arc<str>>);

/// The book's own state without its indexes: what a snapshot keeps. The queue
/// indexes and open-agent sets are rebuilt from it on restore.
#[derive(Serialize, Deserialize)]
pub struct BookSnapshot {
    agents: Vec<AgentSnapshot>,
    tasks: Vec<(Task, u64, Vec<AgentId>)>,
    idempotency: Vec<(String, TaskId)>,
    offers: Vec<(OfferId, LiveOffer)>,
    ended: Vec<(OfferId, OfferEnd)>,
    timers: Vec<(Ts, Timer)>,
    finished: Vec<TaskId>,
    seq: u64,
    /// Each task's agents whose re-offer time has passed (`Task::passed`).
    #[serde(default)]
    passed: Vec<(TaskId, Vec<AgentId>)>,
    /// Tasks transferred to the head of their queue (`Task::head`).
    #[serde(default)]
    heads: Vec<TaskId>,
    /// Transfers to one agent in flight (`Task::handoff`).
    #[serde(default)]
    handoffs: Vec<(TaskId, crate::task::Handoff)>,
    /// Escalation epochs (`Task::epoch`), for tasks with one.
    #[serde(default)]
    epochs: Vec<(TaskId, u32)>,
}

/// [`BookSnapshot`] borrowed from the book, for writing: the same fields, in the same
/// order, encoding to the same bytes (a test holds them to it).
#[derive(Serialize)]
pub struct BookSnapshotRef<'a> {
    agents: Vec<AgentSnapshotRef<'a>>,
    tasks: Vec<(&'a Task, u64, &'a Vec<AgentId>)>,
    idempotency: Vec<(&'a String, TaskId)>,
    offers: Vec<(OfferId, &'a LiveOffer)>,
    ended: Vec<(OfferId, OfferEnd)>,
    timers: Vec<&'a (Ts, Timer)>,
    finished: Vec<TaskId>,
    seq: u64,
    passed: Vec<(TaskId, &'a Vec<AgentId>)>,
    heads: Vec<TaskId>,
    handoffs: Vec<(TaskId, &'a crate::task::Handoff)>,
    epochs: Vec<(TaskId, u32)>,
}

impl Book {
    /// The book's state, for a snapshot: borrowed, not copied (a snapshot of 250,000
    /// tasks copied them all first, most of the forked writer's time and memory).
    pub fn snapshot_state(&self) -> BookSnapshotRef<'_> {
        let mut agents: Vec<_> = self
            .agents
            .values()
            .map(|e| (&e.profile, &e.state, e.seq, &e.node))
            .collect();
        agents.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        // In a fixed order throughout: equal books encode to equal bytes.
        let mut tasks: Vec<&Task> = self.tasks.values().map(|t| &**t).collect();
        tasks.sort_unstable_by_key(|t| t.seq); // unique
        let mut idempotency: Vec<_> = self.idempotency.iter().map(|(k, v)| (k, *v)).collect();
        idempotency.sort_unstable();
        let mut offers: Vec<_> = self.offers.iter().map(|(k, v)| (*k, v)).collect();
        offers.sort_unstable_by_key(|o| o.0);
        BookSnapshotRef {
            agents,
            passed: tasks
                .iter()
                .filter(|t| !t.passed.is_empty())
                .map(|t| (t.task_id, &t.passed))
                .collect(),
            heads: tasks.iter().filter(|t| t.head).map(|t| t.task_id).collect(),
            epochs: tasks
                .iter()
                .filter(|t| t.epoch > 0)
                .map(|t| (t.task_id, t.epoch))
                .collect(),
            handoffs: tasks
                .iter()
                .filter_map(|t| t.handoff.as_ref().map(|x| (t.task_id, x)))
                .collect(),
            tasks: tasks.iter().map(|t| (*t, t.seq, &t.excluded)).collect(),
            idempotency,
            offers,
            ended: self
                .ended_order
                .iter()
                .filter_map(|o| self.ended_offers.get(o).map(|e| (*o, *e)))
                .collect(),
            timers: self.timers.iter().collect(),
            finished: self.finished.iter().copied().collect(),
            seq: self.seq,
        }
    }

    /// A book from a snapshot, its indexes rebuilt.
    pub fn restore(rules: Arc<Rules>, snap: BookSnapshot) -> Book {
        let mut b = Book::new(rules, Ts(0));
        b.agents.clear();
        for (profile, state, seq, node) in snap.agents {
            let id = profile.id.clone();
            b.agents.insert(
                id,
                AgentEntry {
                    profile,
                    state,
                    seq,
                    open_key: None,
                    node,
                },
            );
        }
        let heads: BTreeSet<TaskId> = snap.heads.into_iter().collect();
        let epochs: HashMap<TaskId, u32> = snap.epochs.into_iter().collect();
        let mut handoffs: HashMap<TaskId, crate::task::Handoff> =
            snap.handoffs.into_iter().collect();
        for (mut task, seq, excluded) in snap.tasks {
            task.seq = seq;
            task.excluded = excluded;
            task.head = heads.contains(&task.task_id);
            task.handoff = handoffs.remove(&task.task_id);
            task.epoch = epochs.get(&task.task_id).copied().unwrap_or(0);
            if task.state == TaskState::Queued {
                b.file_task(&task);
            }
            b.tasks.insert(task.task_id, Arc::new(task));
        }
        for (id, passed) in snap.passed {
            if let Some(t) = b.tasks.get_mut(&id).map(Arc::make_mut) {
                t.passed = passed;
            }
        }
        b.idempotency = snap.idempotency.into_iter().collect();
        for (id, o) in snap.offers {
            if let Some(q) = b
                .tasks
                .get(&o.task_id)
                .and_then(|t| b.queues.get_mut(&t.queue))
            {
                q.offers_pending += 1;
            }
            b.offers.insert(id, o);
        }
        for (id, end) in snap.ended {
            b.ended_offers.insert(id, end);
            b.ended_order.push_back(id);
        }
        b.timers = snap.timers.into_iter().collect();
        for (at, timer) in &b.timers {
            if let Timer::Reoffer(task_id, agent) = timer {
                let until = b
                    .reoffer_until
                    .entry((*task_id, agent.clone()))
                    .or_insert(*at);
                *until = (*until).max(*at);
            }
        }
        b.finished = snap.finished.into_iter().collect();
        b.seq = snap.seq;
        let ids: Vec<AgentId> = b.agents.keys().cloned().collect();
        for id in ids {
            b.reindex(&id);
        }
        b
    }
}
