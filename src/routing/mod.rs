//! The routing book: agents, tasks, queues, offers and timers, and the routing decision.
//!
//! [`Book`] is a sans-IO state machine in the manner of quinn-proto: a command (or the
//! passing of a deadline) goes in with the current time, an [`Outcome`] comes out
//! listing what to deliver and which timer to wake for. It never sleeps, sends or reads
//! a clock, so every routing rule is tested without a runtime.
//!
//! Every change to an agent goes through [`crate::agent::apply`]; the book interprets
//! the effects (a task released back to its queue, a timer to arm) and then routes:
//! each task that became free looks for the longest-idle eligible agent, each agent
//! that became free looks for the best task it is eligible for. After every command
//! the book holds this invariant: no waiting task and open agent could be paired.

pub mod now;
pub mod queue;
pub mod view;

use crate::agent::{self, AgentState, Effect, Event, Link, PendingOffer, ReleaseReason};
use crate::clock::Ts;
use crate::context::TaskEvent;
use crate::context::record::Actor;
use crate::error::{HubError, OfferEnd};
use crate::events::{EventData, TaskPhase, WithdrawReason};
use crate::growing::GrowingMap;
use crate::ids::{AgentId, Channel, ConnId, Ids, OfferId, QueueId, TaskId};
use crate::task::{NewTask, Task, TaskState};
use queue::{Bucket, IdleKey, Place, QueueIndex};
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
pub use view::*;

use crate::state::{Notice, Outcome, Reply, Stats};

/// The re-offer time of a queue that has none (`routing.reoffer_after_secs`' default).
pub const DEFAULT_REOFFER_AFTER: Duration = Duration::from_secs(30);

/// How many tasks an agent may hold per channel, offered or in progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    /// Calls: at most one, always.
    pub voice: u32,
    /// Chats.
    pub chat: u32,
    /// Emails.
    pub email: u32,
}

impl Capacity {
    /// The capacity for one channel.
    pub fn of(&self, c: Channel) -> usize {
        match c {
            Channel::Voice => self.voice.min(1) as usize,
            Channel::Chat => self.chat as usize,
            Channel::Email => self.email as usize,
        }
    }
}

/// An agent's profile: who it is and what it can take.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// The agent.
    pub id: AgentId,
    /// Its display name.
    pub name: String,
    /// Its team (configured agents only), shown to supervisors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// Its skills.
    pub skills: BTreeSet<String>,
    /// Its skill levels, 1 to 10; a skill without one counts as 10.
    #[serde(default)]
    pub levels: std::collections::BTreeMap<String, u8>,
    /// The queues it serves.
    pub queues: Vec<QueueId>,
    /// Its per-channel capacity.
    pub capacity: Capacity,
}

/// A queue's rules.
#[derive(Clone, Debug)]
pub struct QueueRules {
    /// Its display name.
    pub name: String,
    /// The channels it takes.
    pub channels: Vec<Channel>,
    /// Skills every task in it requires.
    pub skills: Vec<String>,
    /// How long an offer waits for an accept.
    pub offer_timeout: Duration,
    /// How long wrap-up lasts after a task; zero for none.
    pub wrap_up: Duration,
    /// How long after an agent declined or missed a task it may be offered that task
    /// again (only when no other eligible agent is open for it).
    pub reoffer_after: Duration,
    /// What happens to a task as it waits, if anything.
    pub escalation: Option<Escalation>,
}

/// A queue's escalation rules.
#[derive(Clone, Debug, Default)]
pub struct Escalation {
    /// Every this long, the priority rises by this much, up to this.
    pub priority: Option<(Duration, i64, i64)>,
    /// Every this long, the required skill levels fall by this much (down to 1).
    pub relax: Option<(Duration, u8)>,
    /// After this long, the task moves to this queue.
    pub overflow: Option<(Duration, QueueId)>,
}

impl Profile {
    /// The agent's level in a skill: its configured level, 10 for a plain skill, 0
    /// without it.
    pub fn level(&self, skill: &str) -> u8 {
        match self.levels.get(skill) {
            Some(l) => *l,
            None if self.skills.contains(skill) => 10,
            None => 0,
        }
    }
}

/// The rules the book routes by, from the configuration.
#[derive(Clone, Debug)]
pub struct Rules {
    /// The queues, by id.
    pub queues: HashMap<QueueId, QueueRules>,
    /// The configured agents. Others may join with a profile from their token.
    pub agents: Vec<Arc<Profile>>,
    /// The Not Ready reason codes an agent may choose.
    pub reasons: BTreeSet<String>,
    /// How long a dropped agent keeps its work.
    pub grace: Duration,
    /// How long a dropped agent keeps a pending offer (In Progress tasks keep the
    /// whole grace).
    pub away_offer: Duration,
    /// How many finished tasks (and their idempotency keys) are remembered.
    pub finished_retention: usize,
    /// How many times one task may be transferred.
    pub max_transfers: u32,
    /// How the statistics count (kept beside the routing rules: every replica folds
    /// by the same).
    pub stats: Arc<crate::stats::StatsRules>,
    /// How long integration events are kept (`[events]`).
    pub events: crate::events::Retention,
}

/// Where a transfer sends a task.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum TransferTo {
    /// A queue (its own, or another).
    Queue {
        /// The queue.
        queue: QueueId,
        /// A new priority; the task keeps its own when none.
        priority: Option<i64>,
        /// New required skills (the queue's own are added); the task keeps its own when
        /// none.
        skills: Option<Vec<String>>,
        /// Ahead of every task waiting there.
        head: bool,
    },
    /// One agent: an ordinary offer; on a decline, a miss or if the agent cannot take
    /// it, the task goes back to its queue in its place.
    Agent(AgentId),
}

/// A command to the book.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Command {
    /// A desktop connected.
    Connect {
        /// The agent's profile.
        profile: Arc<Profile>,
        /// The connection.
        conn: ConnId,
        /// The node the connection is on.
        node: Arc<str>,
    },
    /// A node is gone (it stopped heartbeating, or it restarted): every desktop that
    /// was connected through it is treated as disconnected, and the grace period starts.
    /// Names one incarnation (`node-1/3f2a...`), or a node id, which covers all of its
    /// incarnations. Should the node in fact be alive, its sessions are told to
    /// reconnect, and they resume within their grace.
    NodeLost {
        /// The node incarnation, or node id.
        node: Arc<str>,
    },
    /// A desktop's connection dropped.
    Disconnect {
        /// The agent.
        agent: AgentId,
        /// The connection.
        conn: ConnId,
    },
    /// The agent asks to be Ready.
    SetReady {
        /// The agent.
        agent: AgentId,
    },
    /// The agent asks to be Not Ready.
    SetNotReady {
        /// The agent.
        agent: AgentId,
        /// A configured reason code.
        reason: String,
    },
    /// The agent accepts an offer.
    Accept {
        /// The agent.
        agent: AgentId,
        /// The offer.
        offer_id: OfferId,
    },
    /// The agent declines an offer.
    Decline {
        /// The agent.
        agent: AgentId,
        /// The offer.
        offer_id: OfferId,
    },
    /// The agent completes a task.
    Complete {
        /// The agent.
        agent: AgentId,
        /// The task.
        task_id: TaskId,
        /// An optional wrap-up code.
        wrap_up_code: Option<String>,
    },
    /// The agent logs out.
    Logout {
        /// The agent.
        agent: AgentId,
    },
    /// A supervisor sets an agent Not Ready.
    ForceNotReady {
        /// The agent.
        agent: AgentId,
        /// A configured reason code; the supervisor built-in when none.
        reason: Option<String>,
    },
    /// A supervisor logs an agent out.
    ForceLogout {
        /// The agent.
        agent: AgentId,
    },
    /// An integration creates a task.
    CreateTask(Box<NewTask>),
    /// An integration (or a supervisor) cancels a task.
    CancelTask {
        /// The task.
        task_id: TaskId,
        /// Why.
        reason: Option<String>,
        /// Who.
        by: Actor,
    },
    /// An agent (a task in its In Progress list), a supervisor or an integration (a task
    /// queued, offered or in progress) transfers a task. (Last: log entries name
    /// variants by position.)
    Transfer {
        /// The task.
        task_id: TaskId,
        /// Where to.
        to: TransferTo,
        /// Who.
        by: Actor,
    },
    /// An agent asks another to take a task it has in progress (a warm transfer): the
    /// target gets an offer; the task stays the first agent's until the target accepts.
    Consult {
        /// The agent who has the task.
        agent: AgentId,
        /// The task.
        task_id: TaskId,
        /// The agent asked.
        to: AgentId,
    },
    /// The agent who asked takes its consult back before the target accepted.
    CancelConsult {
        /// The agent who asked.
        agent: AgentId,
        /// The task.
        task_id: TaskId,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
enum Timer {
    Offer(OfferId),
    Grace(AgentId, ConnId),
    WrapUp(AgentId, TaskId),
    /// The re-offer time of an agent who declined or missed a task has passed.
    Reoffer(TaskId, AgentId),
    /// A pending offer has waited long enough for a dropped desktop.
    AwayOffer(AgentId, ConnId, OfferId),
    /// A waiting task's priority rises a step (armed in this epoch of the task).
    Priority(TaskId, u32),
    /// A waiting task's required skill levels fall a step.
    Relax(TaskId, u32),
    /// A waiting task moves to its queue's overflow queue.
    Overflow(TaskId, u32),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct LiveOffer {
    task_id: TaskId,
    agent_id: AgentId,
    deadline: Ts,
}

#[derive(Debug)]
struct AgentEntry {
    profile: Arc<Profile>,
    state: AgentState,
    seq: u64,
    open_key: Option<IdleKey>,
    /// The node its desktop is (or was last) connected through.
    node: Option<Arc<str>>,
}

/// What becomes free during a command and must be routed before it ends.
#[derive(Clone, Debug)]
enum Wake {
    Task(TaskId),
    Agent(AgentId),
}

/// What one command touched, gathered while it runs.
#[derive(Default)]
struct Tx {
    before: HashMap<AgentId, AgentState>,
    notices: Vec<Notice>,
    wake: VecDeque<Wake>,
    queues: BTreeSet<QueueId>,
    earliest_timer: Option<Ts>,
    stats: Stats,
    task_events: Vec<TaskEvent>,
    events: Vec<EventData>,
    /// A supervisor's logout: the agent's `agent.logged_out` says so.
    by_supervisor: bool,
}

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

/// The routing book. See the module documentation.
pub struct Book {
    /// Where new task and offer ids come from.
    pub ids: Ids,
    rules: Arc<Rules>,
    agents: HashMap<AgentId, AgentEntry>,
    /// Shared with the replies, views, notices and events that show a task: a change
    /// copies it only while one of them still holds it (`Arc::make_mut`).
    tasks: GrowingMap<TaskId, Arc<Task>>,
    idempotency: GrowingMap<String, TaskId>,
    queues: HashMap<QueueId, QueueIndex>,
    offers: HashMap<OfferId, LiveOffer>,
    ended_offers: GrowingMap<OfferId, OfferEnd>,
    ended_order: VecDeque<OfferId>,
    timers: BTreeSet<(Ts, Timer)>,
    finished: VecDeque<TaskId>,
    seq: u64,
}

impl Book {
    /// A book with the configured queues and agents (all Offline).
    pub fn new(rules: Arc<Rules>, now: Ts) -> Book {
        let mut b = Book {
            ids: Ids::random(),
            queues: rules
                .queues
                .keys()
                .map(|q| (q.clone(), QueueIndex::default()))
                .collect(),
            rules: rules.clone(),
            agents: HashMap::new(),
            tasks: GrowingMap::default(),
            idempotency: GrowingMap::default(),
            offers: HashMap::new(),
            ended_offers: GrowingMap::default(),
            ended_order: VecDeque::new(),
            timers: BTreeSet::new(),
            finished: VecDeque::new(),
            seq: 0,
        };
        for p in &rules.agents {
            b.insert_agent(p.clone(), now);
        }
        b
    }

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
        b.finished = snap.finished.into_iter().collect();
        b.seq = snap.seq;
        let ids: Vec<AgentId> = b.agents.keys().cloned().collect();
        for id in ids {
            b.reindex(&id);
        }
        b
    }

    /// The rules the book routes by.
    pub fn rules(&self) -> &Arc<Rules> {
        &self.rules
    }

    /// Carries out one command at `now`.
    pub fn execute(&mut self, cmd: Command, now: Ts) -> Outcome {
        let mut tx = Tx::default();
        let reply = self.command(&mut tx, cmd, now);
        self.route(&mut tx, now);
        self.finish(tx, reply)
    }

    /// The earliest deadline of any timer.
    pub fn next_deadline(&self) -> Option<Ts> {
        self.timers.first().map(|(t, _)| *t)
    }

    /// Fires every timer due at `now`: offers expire, grace periods and wrap-ups end.
    pub fn expire_due(&mut self, now: Ts) -> Outcome {
        let mut tx = Tx::default();
        while let Some((at, _)) = self.timers.first() {
            if *at > now {
                break;
            }
            let Some((at, timer)) = self.timers.pop_first() else {
                break;
            };
            // A timer may be stale (its offer accepted, its agent back): the state
            // machine then refuses or ignores the event, and nothing changes.
            let _ = match timer {
                Timer::Offer(offer_id) => match self.offers.get(&offer_id) {
                    Some(o) => {
                        let agent = o.agent_id.clone();
                        self.agent_event(&mut tx, &agent, Event::OfferExpired { offer_id }, now)
                    }
                    None => Ok(()),
                },
                Timer::Grace(agent, conn) => {
                    self.agent_event(&mut tx, &agent, Event::GraceExpired { conn }, now)
                }
                Timer::WrapUp(agent, task_id) => {
                    self.agent_event(&mut tx, &agent, Event::WrapUpEnded { task_id }, now)
                }
                Timer::AwayOffer(agent, conn, offer_id) => self.agent_event(
                    &mut tx,
                    &agent,
                    Event::AwayOfferWithdrawn { conn, offer_id },
                    now,
                ),
                Timer::Reoffer(task_id, agent) => {
                    self.reoffer_time_passed(&mut tx, task_id, agent);
                    Ok(())
                }
                Timer::Priority(task_id, epoch) => {
                    self.escalate_priority(&mut tx, task_id, epoch, at);
                    Ok(())
                }
                Timer::Relax(task_id, epoch) => {
                    self.relax_levels(&mut tx, task_id, epoch, at);
                    Ok(())
                }
                Timer::Overflow(task_id, epoch) => {
                    self.overflow(&mut tx, task_id, epoch, at, now);
                    Ok(())
                }
            };
        }
        self.route(&mut tx, now);
        self.finish(tx, Ok(Reply::Done))
    }

    /// The nodes through which some desktop is connected, sorted.
    pub fn nodes_in_use(&self) -> Vec<Arc<str>> {
        let mut nodes: Vec<Arc<str>> = self
            .agents
            .values()
            .filter(|e| matches!(e.state.link, Link::Connected(_)))
            .filter_map(|e| e.node.clone())
            .collect();
        nodes.sort();
        nodes.dedup();
        nodes
    }

    /// A task, by id.
    pub fn task(&self, id: TaskId) -> Option<&Task> {
        self.tasks.get(&id).map(|t| &**t)
    }

    /// An agent's full view.
    pub fn agent_view(&self, id: &AgentId) -> Option<AgentView> {
        self.agents.get(id).map(|e| self.view_of(e))
    }

    /// Every agent and queue, for a supervisor.
    pub fn snapshot(&self, now: Ts) -> Snapshot {
        let mut agents: Vec<AgentSummary> =
            self.agents.values().map(|e| self.summary_of(e)).collect();
        agents.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
        let mut queues: Vec<QueueStats> = self
            .rules
            .queues
            .keys()
            .filter_map(|q| self.queue_stats(q, now))
            .collect();
        queues.sort_by(|a, b| a.queue_id.cmp(&b.queue_id));
        Snapshot { agents, queues }
    }

    /// One queue's numbers.
    pub fn queue_stats(&self, q: &QueueId, now: Ts) -> Option<QueueStats> {
        let rules = self.rules.queues.get(q)?;
        let idx = self.queues.get(q)?;
        Some(QueueStats {
            queue_id: q.clone(),
            name: rules.name.clone(),
            waiting: idx.waiting_len(),
            longest_wait_ms: idx
                .oldest()
                .map(|t| now.since(t).as_millis() as u64)
                .unwrap_or(0),
            offers_pending: idx.offers_pending,
            agents_open: idx.open_len(),
        })
    }

    fn command(&mut self, tx: &mut Tx, cmd: Command, now: Ts) -> Result<Reply, HubError> {
        match cmd {
            Command::Connect {
                profile,
                conn,
                node,
            } => {
                let id = profile.id.clone();
                let resumed = match self.agents.get_mut(&id) {
                    Some(e) => {
                        let resumed = e.state.link != Link::None;
                        if let Link::Connected(old) = e.state.link {
                            if old != conn {
                                // Takeover: the old session, on whichever node, closes.
                                tx.notices.push(Notice::Close {
                                    agent_id: id.clone(),
                                    reason: CloseReason::Replaced,
                                    conn: Some(old),
                                });
                            }
                        }
                        e.node = Some(node.clone());
                        let changed = e.profile != profile;
                        if changed {
                            // Out of the old profile's queues first, then re-filed under
                            // the new ones by the reindex after the connect.
                            self.close_agent(&id);
                            if let Some(e) = self.agents.get_mut(&id) {
                                e.profile = profile;
                            }
                        }
                        resumed
                    }
                    None => {
                        self.insert_agent(profile, now);
                        if let Some(e) = self.agents.get_mut(&id) {
                            e.node = Some(node);
                        }
                        false
                    }
                };
                self.agent_event(tx, &id, Event::Connect { conn }, now)?;
                self.agent_reply(&id, resumed)
            }
            Command::NodeLost { node } => {
                let grace_until = now.plus(self.rules.grace);
                // The node's detection time (its heartbeat expiry) already was the
                // desktop's time away: its offer goes on at once, so that a caller waits
                // no longer than the detection.
                let offer_until = now;
                let covers = |n: &str| {
                    n == &*node || n.strip_prefix(&*node).is_some_and(|r| r.starts_with('/'))
                };
                let mut lost: Vec<(AgentId, ConnId)> = self
                    .agents
                    .iter()
                    .filter(|(_, e)| e.node.as_deref().is_some_and(covers))
                    .filter_map(|(id, e)| match e.state.link {
                        Link::Connected(c) => Some((id.clone(), c)),
                        _ => None,
                    })
                    .collect();
                lost.sort();
                // Several nodes may declare the same loss; only the declaration that
                // found desktops through it is news.
                if !lost.is_empty() {
                    tx.events.push(EventData::NodeLost {
                        node: node.to_string(),
                    });
                }
                for (agent, conn) in lost {
                    self.agent_event(
                        tx,
                        &agent,
                        Event::Disconnect {
                            conn,
                            grace_until,
                            offer_until,
                        },
                        now,
                    )?;
                    tx.notices.push(Notice::Close {
                        agent_id: agent,
                        reason: CloseReason::Reconnect,
                        conn: Some(conn),
                    });
                }
                Ok(Reply::Done)
            }
            Command::Disconnect { agent, conn } => {
                let grace_until = now.plus(self.rules.grace);
                let offer_until = now.plus(self.rules.away_offer);
                self.agent_event(
                    tx,
                    &agent,
                    Event::Disconnect {
                        conn,
                        grace_until,
                        offer_until,
                    },
                    now,
                )?;
                Ok(Reply::Done)
            }
            Command::SetReady { agent } => {
                self.agent_event(tx, &agent, Event::SetReady, now)?;
                self.agent_reply(&agent, false)
            }
            Command::SetNotReady { agent, reason } => {
                if !self.rules.reasons.contains(&reason) {
                    return Err(HubError::UnknownReason(reason));
                }
                self.agent_event(tx, &agent, Event::SetNotReady { reason }, now)?;
                self.agent_reply(&agent, false)
            }
            Command::ForceNotReady { agent, reason } => {
                let reason = reason.unwrap_or_else(|| agent::REASON_SUPERVISOR.to_owned());
                if reason != agent::REASON_SUPERVISOR && !self.rules.reasons.contains(&reason) {
                    return Err(HubError::UnknownReason(reason));
                }
                self.agent_event(tx, &agent, Event::ForceNotReady { reason }, now)?;
                self.agent_reply(&agent, false)
            }
            Command::Logout { agent } => {
                self.agent_event(tx, &agent, Event::Logout, now)?;
                self.replace_close_reason(tx, &agent, CloseReason::LoggedOut);
                Ok(Reply::Done)
            }
            Command::ForceLogout { agent } => {
                tx.by_supervisor = true;
                self.agent_event(tx, &agent, Event::Logout, now)?;
                self.replace_close_reason(tx, &agent, CloseReason::LoggedOutBySupervisor);
                Ok(Reply::Done)
            }
            Command::Accept { agent, offer_id } => {
                let live = self.live_offer(&agent, offer_id)?;
                if now >= live.deadline {
                    // The deadline is the rule, not the timer: an accept that arrives
                    // after it loses even if the timer has not fired yet.
                    self.agent_event(tx, &agent, Event::OfferExpired { offer_id }, now)?;
                    return Err(HubError::OfferEnded(OfferEnd::Expired));
                }
                self.agent_event(tx, &agent, Event::Accept { offer_id }, now)?;
                let task = self
                    .tasks
                    .get(&live.task_id)
                    .ok_or(HubError::TaskNotFound(live.task_id))?;
                Ok(Reply::Task(task.clone()))
            }
            Command::Decline { agent, offer_id } => {
                let live = self.live_offer(&agent, offer_id)?;
                if now >= live.deadline {
                    self.agent_event(tx, &agent, Event::OfferExpired { offer_id }, now)?;
                    return Err(HubError::OfferEnded(OfferEnd::Expired));
                }
                self.agent_event(tx, &agent, Event::Decline { offer_id }, now)?;
                Ok(Reply::Done)
            }
            Command::Complete {
                agent,
                task_id,
                wrap_up_code,
            } => {
                let wrap_up_until = self.wrap_up_until(task_id, now);
                if self.tasks.get(&task_id).is_some_and(
                    |t| matches!(&t.state, TaskState::Assigned { agent_id, .. } if *agent_id == agent),
                ) {
                    self.end_consult(tx, task_id, now, true);
                }
                let mark = tx.events.len();
                self.agent_event(
                    tx,
                    &agent,
                    Event::Complete {
                        task_id,
                        wrap_up_until,
                    },
                    now,
                )?;
                if let Some(t) = self.tasks.get(&task_id) {
                    let accepted_at = match &t.state {
                        TaskState::Assigned { accepted_at, .. } => *accepted_at,
                        _ => now,
                    };
                    // Before the agent's own change (to wrap-up) that it caused.
                    tx.events.insert(
                        mark,
                        EventData::TaskCompleted {
                            task_id,
                            agent_id: agent.clone(),
                            queue: t.queue.clone(),
                            channel: t.channel,
                            accepted_at,
                            wrap_up_code: wrap_up_code.clone(),
                        },
                    );
                }
                if let Some(t) = self.tasks.get_mut(&task_id) {
                    Arc::make_mut(t).state = TaskState::Completed {
                        agent_id: agent.clone(),
                        completed_at: now,
                        wrap_up_code,
                    };
                    tx.stats.completed += 1;
                    tx.task_events.push(TaskEvent::Completed {
                        task: t.clone(),
                        agent: agent.clone(),
                    });
                }
                self.retire(task_id);
                self.task_reply(task_id)
            }
            Command::CreateTask(new) => self.create_task(tx, *new, now),
            Command::Transfer { task_id, to, by } => self.transfer(tx, task_id, to, by, now),
            Command::Consult { agent, task_id, to } => self.consult(tx, agent, task_id, to, now),
            Command::CancelConsult { agent, task_id } => {
                let holds = self.tasks.get(&task_id).is_some_and(|t| {
                    matches!(&t.state, TaskState::Assigned { agent_id, .. } if *agent_id == agent)
                        && t.handoff.is_some()
                });
                if !holds {
                    return Err(HubError::Transition(agent::TransitionError::NoSuchTask));
                }
                self.end_consult(tx, task_id, now, false);
                self.task_reply(task_id)
            }
            Command::CancelTask {
                task_id,
                reason,
                by,
            } => self.cancel_task(tx, task_id, reason, by, now),
        }
    }

    fn create_task(&mut self, tx: &mut Tx, new: NewTask, now: Ts) -> Result<Reply, HubError> {
        // A retry is checked like a first try: a bad body is refused, never answered
        // with an earlier task.
        new.validate()?;
        let queue = QueueId::from(new.queue.as_str());
        let rules = self
            .rules
            .queues
            .get(&queue)
            .ok_or_else(|| HubError::UnknownQueue(new.queue.clone()))?;
        if !rules.channels.contains(&new.channel) {
            return Err(HubError::ChannelNotServed {
                queue: new.queue.clone(),
                channel: new.channel.to_string(),
            });
        }
        if let Some(key) = &new.idempotency_key {
            if let Some(task) = self.idempotency.get(key).and_then(|id| self.tasks.get(id)) {
                return Ok(Reply::Created {
                    task: task.clone(),
                    created: false,
                });
            }
        }
        let mut skills: Vec<String> = new
            .skills
            .iter()
            .chain(rules.skills.iter())
            .cloned()
            .collect();
        skills.extend(new.skill_levels.keys().cloned());
        skills.sort();
        skills.dedup();
        self.seq += 1;
        let task = Task {
            task_id: TaskId(self.ids.mint()),
            channel: new.channel,
            queue: queue.clone(),
            priority: new.priority,
            skills,
            skill_levels: new.skill_levels,
            customer: new.customer,
            attributes: new.attributes,
            created_at: now,
            state: TaskState::Queued,
            offers: 0,
            idempotency_key: new.idempotency_key,
            seq: self.seq,
            excluded: Vec::new(),
            passed: Vec::new(),
            transfers: 0,
            head: false,
            handoff: None,
            epoch: 0,
        };
        let id = task.task_id;
        if let Some(key) = &task.idempotency_key {
            self.idempotency.insert(key.clone(), id);
        }
        let task = Arc::new(task);
        tx.events
            .push(EventData::TaskCreated { task: task.clone() });
        tx.events.push(queued_event(&task, false));
        self.file_task(&task);
        self.tasks.insert(id, task);
        self.arm_escalation(tx, id, &queue, now);
        tx.stats.created += 1;
        tx.queues.insert(queue);
        tx.wake.push_back(Wake::Task(id));
        // Route now, so that the reply already shows the offer if one was made.
        self.route(tx, now);
        let task = self.tasks.get(&id).ok_or(HubError::TaskNotFound(id))?;
        Ok(Reply::Created {
            task: task.clone(),
            created: true,
        })
    }

    fn cancel_task(
        &mut self,
        tx: &mut Tx,
        task_id: TaskId,
        reason: Option<String>,
        by: Actor,
        now: Ts,
    ) -> Result<Reply, HubError> {
        if let Some(r) = &reason {
            crate::task::check_text("reason", r)?;
        }
        let task = self
            .tasks
            .get(&task_id)
            .ok_or(HubError::TaskNotFound(task_id))?;
        let phase = match task.state {
            TaskState::Queued => Some(TaskPhase::Queued),
            TaskState::Offered { .. } => Some(TaskPhase::Offered),
            TaskState::Assigned { .. } => Some(TaskPhase::Assigned),
            TaskState::Completed { .. } | TaskState::Cancelled { .. } => None,
        };
        if let Some(phase) = phase {
            // First: the offer withdrawn and the agent's change follow from it.
            tx.events.push(EventData::TaskCancelled {
                task_id,
                queue: task.queue.clone(),
                channel: task.channel,
                phase,
                enqueued_at: task.created_at,
                reason: reason.clone(),
            });
        }
        if let Some(agent_id) = self.take_back(tx, task_id, TakeBack::Cancel, now)? {
            tx.notices.push(Notice::ToAgent {
                agent_id,
                notice: AgentNotice::TaskCancelled {
                    task_id,
                    reason: reason.clone(),
                },
            });
        }
        if let Some(t) = self.tasks.get_mut(&task_id) {
            Arc::make_mut(t).state = TaskState::Cancelled {
                cancelled_at: now,
                reason,
            };
            tx.queues.insert(t.queue.clone());
            tx.task_events.push(TaskEvent::Cancelled {
                task: t.clone(),
                by,
            });
        }
        tx.stats.cancelled += 1;
        self.retire(task_id);
        self.task_reply(task_id)
    }

    /// Takes a live task back from wherever it is, for a cancel or a transfer: out of
    /// its queue, its offer withdrawn, or out of the hands of the agent who had it in
    /// progress (its consult ended, the agent to wrap-up as after `complete`). Returns
    /// that agent; telling it is the caller's, since a cancel and a transfer say
    /// different things. The task's own state is the caller's to set.
    fn take_back(
        &mut self,
        tx: &mut Tx,
        task_id: TaskId,
        why: TakeBack,
        now: Ts,
    ) -> Result<Option<AgentId>, HubError> {
        let task = self
            .tasks
            .get(&task_id)
            .ok_or(HubError::TaskNotFound(task_id))?;
        match task.state.clone() {
            TaskState::Queued => {
                let (bucket, place) = bucket_and_place(task);
                let queue = task.queue.clone();
                if let Some(q) = self.queues.get_mut(&queue) {
                    q.remove(&bucket, &place);
                }
                tx.queues.insert(queue);
                Ok(None)
            }
            TaskState::Offered {
                offer_id, agent_id, ..
            } => {
                let reason = match why {
                    TakeBack::Cancel => WithdrawReason::Cancelled,
                    TakeBack::Transfer => WithdrawReason::Transferred,
                };
                self.withdraw_offer(tx, task_id, offer_id, agent_id, reason, now)?;
                Ok(None)
            }
            TaskState::Assigned { agent_id, .. } => {
                self.end_consult(tx, task_id, now, true);
                let wrap_up_until = self.wrap_up_until(task_id, now);
                let event = match why {
                    TakeBack::Cancel => Event::TaskCancelled {
                        task_id,
                        wrap_up_until,
                    },
                    TakeBack::Transfer => Event::TaskTransferred {
                        task_id,
                        wrap_up_until,
                    },
                };
                self.agent_event(tx, &agent_id, event, now)?;
                Ok(Some(agent_id))
            }
            TaskState::Completed { .. } | TaskState::Cancelled { .. } => {
                Err(HubError::TaskFinished(task_id))
            }
        }
    }

    /// Moves a task to a queue or to one agent. The task keeps its id, its age and its
    /// place (priority and arrival) unless the transfer changes the priority or asks
    /// for the head of the queue. Whoever had it (in progress or offered) lets it go:
    /// an agent who had it in progress goes to wrap-up as after `complete` and is
    /// passed over for it for the re-offer time, like a refuser.
    fn transfer(
        &mut self,
        tx: &mut Tx,
        task_id: TaskId,
        to: TransferTo,
        by: Actor,
        now: Ts,
    ) -> Result<Reply, HubError> {
        let task = self
            .tasks
            .get(&task_id)
            .ok_or(HubError::TaskNotFound(task_id))?;
        let by_agent = (by.role == crate::auth::Role::Agent).then(|| AgentId::from(&*by.id));
        // An agent transfers only what it has in progress.
        if let Some(me) = &by_agent {
            if !matches!(&task.state, TaskState::Assigned { agent_id, .. } if agent_id == me) {
                return Err(HubError::Transition(agent::TransitionError::NoSuchTask));
            }
        }
        if task.state.is_finished() {
            return Err(HubError::TaskFinished(task_id));
        }
        if task.transfers >= self.rules.max_transfers {
            return Err(HubError::TransferLimit(task.transfers));
        }
        // Check the destination before anything changes.
        let mut new_skills = None;
        match &to {
            TransferTo::Queue {
                queue,
                priority,
                skills,
                ..
            } => {
                let rules = self
                    .rules
                    .queues
                    .get(queue)
                    .ok_or_else(|| HubError::UnknownQueue(queue.to_string()))?;
                if !rules.channels.contains(&task.channel) {
                    return Err(HubError::ChannelNotServed {
                        queue: queue.to_string(),
                        channel: task.channel.to_string(),
                    });
                }
                if let Some(p) = priority {
                    if !crate::task::PRIORITY_RANGE.contains(p) {
                        return Err(HubError::invalid(
                            "priority",
                            format!(
                                "must be between {} and {}",
                                crate::task::PRIORITY_RANGE.start(),
                                crate::task::PRIORITY_RANGE.end()
                            ),
                        ));
                    }
                }
                let base = match skills {
                    Some(s) => {
                        if s.len() > crate::task::MAX_SKILLS {
                            return Err(HubError::invalid(
                                "skills",
                                format!("at most {} skills", crate::task::MAX_SKILLS),
                            ));
                        }
                        for (i, k) in s.iter().enumerate() {
                            crate::task::check_name(&format!("skills[{i}]"), k)?;
                        }
                        s.clone()
                    }
                    None => task.skills.clone(),
                };
                let mut all: Vec<String> = base.into_iter().chain(rules.skills.clone()).collect();
                all.sort();
                all.dedup();
                new_skills = Some(all);
            }
            TransferTo::Agent(target) => {
                if !self.agents.contains_key(target) {
                    return Err(HubError::UnknownAgent(target.to_string()));
                }
            }
        }
        // Whoever has it lets it go.
        let mark = tx.events.len();
        let from_queue = task.queue.clone();
        let from = self.take_back(tx, task_id, TakeBack::Transfer, now)?;
        if let Some(agent_id) = &from {
            if by_agent.as_ref() != Some(agent_id) {
                tx.notices.push(Notice::ToAgent {
                    agent_id: agent_id.clone(),
                    notice: AgentNotice::TaskTransferred { task_id },
                });
            }
        }
        let Some(slot) = self.tasks.get_mut(&task_id) else {
            return Err(HubError::TaskNotFound(task_id));
        };
        let t = Arc::make_mut(slot);
        t.transfers += 1;
        t.state = TaskState::Queued;
        let mut reoffer_at = None;
        if let Some(a) = &from {
            // Like a refuser: not straight back to the agent who let it go.
            if !t.excluded.contains(a) {
                t.excluded.push(a.clone());
            }
            t.passed.retain(|x| x != a);
            let after = self
                .rules
                .queues
                .get(&t.queue)
                .map(|q| q.reoffer_after)
                .unwrap_or(DEFAULT_REOFFER_AFTER);
            reoffer_at = Some((now.plus(after), a.clone()));
        }
        let mut moved_queue = false;
        let target = match to {
            TransferTo::Queue {
                queue,
                priority,
                head,
                ..
            } => {
                moved_queue = t.queue != queue;
                t.queue = queue;
                if let Some(p) = priority {
                    t.priority = p;
                }
                if let Some(s) = new_skills {
                    t.skills = s;
                }
                t.head = t.head || head;
                None
            }
            TransferTo::Agent(target) => {
                t.handoff = Some(crate::task::Handoff {
                    from: from.clone(),
                    to: target.clone(),
                });
                Some(target)
            }
        };
        let t = Arc::clone(slot);
        // First: what the transfer made the holders do follows from it.
        tx.events.insert(
            mark,
            EventData::TaskTransferred {
                task_id,
                from_agent: from.clone(),
                from_queue,
                to_agent: target.clone(),
                to_queue: t.queue.clone(),
            },
        );
        if target.is_none() {
            tx.events.push(queued_event(&t, true));
        }
        tx.task_events.push(TaskEvent::Transferred {
            task: t.clone(),
            from: from.clone(),
            to: target.clone(),
            by,
        });
        if let Some((at, a)) = reoffer_at {
            self.arm(tx, at, Timer::Reoffer(task_id, a));
        }
        self.file_task(&t);
        tx.queues.insert(t.queue.clone());
        // Waiting afresh in a queue (another one, or its own after an agent had it):
        // that queue's escalation starts over.
        if target.is_none() && (moved_queue || from.is_some()) {
            let q = t.queue.clone();
            self.arm_escalation(tx, task_id, &q, now);
        }
        if let Some(target) = target {
            let can = self.agents.get(&target).is_some_and(|e| {
                e.state.open_for_work()
                    && e.state.load(t.channel) < e.profile.capacity.of(t.channel)
            });
            if can {
                self.offer(tx, task_id, target, now);
            } else {
                self.end_handoff(tx, task_id, &target, TransferResult::Unavailable);
                tx.events.push(queued_event(&t, true));
            }
        }
        tx.wake.push_back(Wake::Task(task_id));
        self.route(tx, now);
        self.task_reply(task_id)
    }

    /// Arms the escalation timers of `queue` for a task that starts waiting in it.
    fn arm_escalation(&mut self, tx: &mut Tx, task_id: TaskId, queue: &QueueId, now: Ts) {
        let Some(e) = self
            .rules
            .queues
            .get(queue)
            .and_then(|q| q.escalation.clone())
        else {
            return;
        };
        // A new epoch: timers armed for an earlier wait (another queue) do nothing.
        let Some(t) = self.tasks.get_mut(&task_id).map(Arc::make_mut) else {
            return;
        };
        t.epoch += 1;
        let (epoch, has_levels) = (t.epoch, !t.skill_levels.is_empty());
        if let Some((every, _, _)) = e.priority {
            self.arm(tx, now.plus(every), Timer::Priority(task_id, epoch));
        }
        if let Some((every, _)) = e.relax {
            if has_levels {
                self.arm(tx, now.plus(every), Timer::Relax(task_id, epoch));
            }
        }
        if let Some((after, _)) = e.overflow {
            self.arm(tx, now.plus(after), Timer::Overflow(task_id, epoch));
        }
    }

    /// The task's queue's escalation, while the task is still waiting for an agent
    /// (queued, or offered and not yet accepted).
    fn waiting_escalation(&self, task_id: TaskId, epoch: u32) -> Option<(Arc<Task>, Escalation)> {
        let t = self.tasks.get(&task_id)?;
        if t.epoch != epoch || !matches!(t.state, TaskState::Queued | TaskState::Offered { .. }) {
            return None;
        }
        let e = self.rules.queues.get(&t.queue)?.escalation.clone()?;
        Some((t.clone(), e))
    }

    /// Refiles a queued task after `change`; an offered one just changes.
    fn refile(&mut self, task_id: TaskId, change: impl FnOnce(&mut Task)) -> bool {
        let Some(t) = self.tasks.get(&task_id) else {
            return false;
        };
        let queued = t.state == TaskState::Queued;
        if queued {
            let (bucket, place) = bucket_and_place(t);
            if let Some(q) = self.queues.get_mut(&t.queue) {
                q.remove(&bucket, &place);
            }
        }
        let Some(t) = self.tasks.get_mut(&task_id) else {
            return false;
        };
        change(Arc::make_mut(t));
        if queued {
            let t = Arc::clone(t);
            self.file_task(&t);
        }
        queued
    }

    /// One step of a waiting task's priority; the next step is armed from this one's
    /// time (not from `now`), so that late ticks do not shift the schedule.
    fn escalate_priority(&mut self, tx: &mut Tx, task_id: TaskId, epoch: u32, at: Ts) {
        let Some((t, e)) = self.waiting_escalation(task_id, epoch) else {
            return;
        };
        let Some((every, step, max)) = e.priority else {
            return;
        };
        if t.priority < max {
            self.refile(task_id, |t| t.priority = (t.priority + step).min(max));
            tx.queues.insert(t.queue.clone());
        }
        if t.priority + step < max {
            self.arm(tx, at.plus(every), Timer::Priority(task_id, epoch));
        }
    }

    /// One step down of a waiting task's required skill levels; agents who now
    /// qualify may take it at once.
    fn relax_levels(&mut self, tx: &mut Tx, task_id: TaskId, epoch: u32, at: Ts) {
        let Some((t, e)) = self.waiting_escalation(task_id, epoch) else {
            return;
        };
        let Some((every, by)) = e.relax else {
            return;
        };
        if t.skill_levels.values().all(|l| *l <= 1) {
            return;
        }
        let queued = self.refile(task_id, |t| {
            for l in t.skill_levels.values_mut() {
                *l = l.saturating_sub(by).max(1);
            }
        });
        if queued {
            tx.wake.push_back(Wake::Task(task_id));
        }
        if self
            .tasks
            .get(&task_id)
            .is_some_and(|t| t.skill_levels.values().any(|l| *l > 1))
        {
            self.arm(tx, at.plus(every), Timer::Relax(task_id, epoch));
        }
    }

    /// A task still waiting after its queue's overflow time moves to the overflow
    /// queue, keeping its age and place; one being offered at that moment is looked
    /// at again one overflow period later.
    fn overflow(&mut self, tx: &mut Tx, task_id: TaskId, epoch: u32, at: Ts, now: Ts) {
        let Some((t, e)) = self.waiting_escalation(task_id, epoch) else {
            return;
        };
        let Some((after, to)) = e.overflow else {
            return;
        };
        if t.state != TaskState::Queued {
            self.arm(tx, at.plus(after), Timer::Overflow(task_id, epoch));
            return;
        }
        let Some(rules) = self.rules.queues.get(&to) else {
            return;
        };
        if !rules.channels.contains(&t.channel) {
            return;
        }
        let extra = rules.skills.clone();
        tx.queues.insert(t.queue.clone());
        self.refile(task_id, |t| {
            t.queue = to.clone();
            t.skills.extend(extra);
            t.skills.sort();
            t.skills.dedup();
        });
        if let Some(t) = self.tasks.get(&task_id) {
            tx.events.push(queued_event(t, true));
        }
        tx.queues.insert(to.clone());
        self.arm_escalation(tx, task_id, &to, now);
        tx.wake.push_back(Wake::Task(task_id));
    }

    /// A warm transfer: the target gets an ordinary offer of the task, which stays in
    /// the asking agent's In Progress list until the target accepts (see the
    /// `Effect::Assigned` and `Effect::Release` handling).
    fn consult(
        &mut self,
        tx: &mut Tx,
        agent: AgentId,
        task_id: TaskId,
        to: AgentId,
        now: Ts,
    ) -> Result<Reply, HubError> {
        let t = self
            .tasks
            .get(&task_id)
            .ok_or(HubError::TaskNotFound(task_id))?;
        if !matches!(&t.state, TaskState::Assigned { agent_id, .. } if *agent_id == agent) {
            return Err(HubError::Transition(agent::TransitionError::NoSuchTask));
        }
        if t.handoff.is_some() {
            return Err(HubError::Transition(agent::TransitionError::OfferPending));
        }
        if t.transfers >= self.rules.max_transfers {
            return Err(HubError::TransferLimit(t.transfers));
        }
        if to == agent {
            return Err(HubError::invalid(
                "to_agent",
                "an agent cannot consult itself",
            ));
        }
        let target = self
            .agents
            .get(&to)
            .ok_or_else(|| HubError::UnknownAgent(to.to_string()))?;
        if !(target.state.open_for_work()
            && target.state.load(t.channel) < target.profile.capacity.of(t.channel))
        {
            return Err(HubError::Transition(agent::TransitionError::NotAvailable));
        }
        let timeout = self
            .rules
            .queues
            .get(&t.queue)
            .map(|q| q.offer_timeout)
            .unwrap_or(Duration::from_secs(15));
        let (channel, queue) = (t.channel, t.queue.clone());
        let offer = PendingOffer {
            offer_id: OfferId(self.ids.mint()),
            task_id,
            channel,
            deadline: now.plus(timeout),
        };
        let (offer_id, deadline) = (offer.offer_id, offer.deadline);
        let mark = tx.events.len();
        self.agent_event(tx, &to, Event::Offer(offer), now)?;
        tx.events.insert(
            mark,
            EventData::TaskOffered {
                task_id,
                offer_id,
                agent_id: to.clone(),
                queue: queue.clone(),
                channel,
                deadline,
            },
        );
        if let Some(q) = self.queues.get_mut(&queue) {
            q.offers_pending += 1;
        }
        self.offers.insert(
            offer_id,
            LiveOffer {
                task_id,
                agent_id: to.clone(),
                deadline,
            },
        );
        self.arm(tx, deadline, Timer::Offer(offer_id));
        tx.queues.insert(queue);
        tx.stats.offers_made += 1;
        let Some(slot) = self.tasks.get_mut(&task_id) else {
            return Err(HubError::TaskNotFound(task_id));
        };
        let t = Arc::make_mut(slot);
        t.transfers += 1;
        t.offers += 1;
        t.handoff = Some(crate::task::Handoff {
            from: Some(agent.clone()),
            to: to.clone(),
        });
        let view = OfferView {
            offer_id,
            deadline,
            timeout_ms: timeout.as_millis() as u64,
            consult_from: Some(agent),
            task: Arc::clone(slot),
        };
        tx.notices.push(Notice::ToAgent {
            agent_id: to,
            notice: AgentNotice::Offer(Box::new(view)),
        });
        self.task_reply(task_id)
    }

    /// Ends a consult in flight for a task that is in progress: the target's offer is
    /// withdrawn. With `tell`, the agent who asked gets `transfer_ended` `withdrawn`
    /// (it did not ask for the end itself).
    fn end_consult(&mut self, tx: &mut Tx, task_id: TaskId, now: Ts, tell: bool) {
        let Some(t) = self.tasks.get(&task_id) else {
            return;
        };
        if !matches!(t.state, TaskState::Assigned { .. }) {
            return;
        }
        let Some(h) = t.handoff.clone() else {
            return;
        };
        let offer = self
            .agents
            .get(&h.to)
            .and_then(|e| e.state.offer.as_ref())
            .filter(|o| o.task_id == task_id)
            .map(|o| o.offer_id);
        if let Some(offer_id) = offer {
            let mark = tx.events.len();
            if self
                .agent_event(tx, &h.to, Event::OfferRevoked { offer_id }, now)
                .is_ok()
            {
                tx.events.insert(
                    mark,
                    EventData::OfferWithdrawn {
                        task_id,
                        offer_id,
                        agent_id: h.to.clone(),
                        reason: WithdrawReason::ConsultEnded,
                    },
                );
            }
            self.end_offer(tx, offer_id, OfferEnd::Withdrawn);
            tx.notices.push(Notice::ToAgent {
                agent_id: h.to.clone(),
                notice: AgentNotice::OfferEnded {
                    offer_id,
                    task_id,
                    reason: OfferEnd::Withdrawn,
                },
            });
        }
        if tell {
            self.end_handoff(tx, task_id, &h.to, TransferResult::Withdrawn);
        } else if let Some(t) = self.tasks.get_mut(&task_id) {
            if t.handoff.is_some() {
                Arc::make_mut(t).handoff = None;
            }
        }
    }

    /// Ends a transfer to `to`, if one is in flight for the task, and tells the agent
    /// who made it how it ended.
    fn end_handoff(&mut self, tx: &mut Tx, task_id: TaskId, to: &AgentId, result: TransferResult) {
        let Some(t) = self.tasks.get_mut(&task_id) else {
            return;
        };
        if t.handoff.as_ref().is_none_or(|h| &h.to != to) {
            return;
        }
        let Some(h) = Arc::make_mut(t).handoff.take() else {
            return;
        };
        if let Some(from) = h.from {
            tx.notices.push(Notice::ToAgent {
                agent_id: from,
                notice: AgentNotice::TransferEnded {
                    task_id,
                    agent_id: h.to,
                    result,
                },
            });
        }
    }

    /// Applies one event to one agent and carries out its effects.
    fn agent_event(
        &mut self,
        tx: &mut Tx,
        id: &AgentId,
        event: Event,
        now: Ts,
    ) -> Result<(), HubError> {
        let entry = self
            .agents
            .get_mut(id)
            .ok_or_else(|| HubError::UnknownAgent(id.to_string()))?;
        let (next, effects) = agent::apply(&entry.state, event, now)?;
        let before = std::mem::replace(&mut entry.state, next);
        let changes = agent_events(id, &before, &entry.state, tx.by_supervisor);
        tx.before.entry(id.clone()).or_insert(before);
        // A login before what it caused; the new status (and a logout, a lost
        // connection) after what the effects did to tasks and offers on the way.
        let mut changes = changes.into_iter().peekable();
        if let Some(login) = changes.next_if(|e| matches!(e, EventData::AgentLoggedIn { .. })) {
            tx.events.push(login);
        }
        for e in effects {
            self.effect(tx, id, e, now);
        }
        tx.events.extend(changes);
        if self.reindex(id) {
            tx.wake.push_back(Wake::Agent(id.clone()));
        }
        Ok(())
    }

    fn effect(&mut self, tx: &mut Tx, agent_id: &AgentId, e: Effect, now: Ts) {
        match e {
            Effect::Release {
                task_id,
                offer_id,
                reason,
                exclude,
            } => {
                // A consult's offer ending leaves the task with the agent who has it.
                let consult = offer_id.is_some()
                    && self.tasks.get(&task_id).is_some_and(|t| {
                        matches!(&t.state, TaskState::Assigned { agent_id: holder, .. } if holder != agent_id)
                    });
                if offer_id.is_none() {
                    // The agent lets go of work it had (offline): a consult it asked
                    // for ends with it.
                    self.end_consult(tx, task_id, now, true);
                }
                if let Some(offer_id) = offer_id {
                    let (task_id, agent_id2) = (task_id, agent_id.clone());
                    let withdrawn = |reason| EventData::OfferWithdrawn {
                        task_id,
                        offer_id,
                        agent_id: agent_id2.clone(),
                        reason,
                    };
                    tx.events.push(match reason {
                        ReleaseReason::Declined => EventData::OfferDeclined {
                            task_id,
                            offer_id,
                            agent_id: agent_id.clone(),
                            reason: None,
                        },
                        ReleaseReason::NotReady => EventData::OfferDeclined {
                            task_id,
                            offer_id,
                            agent_id: agent_id.clone(),
                            // Declined by choosing Not Ready: the reason chosen.
                            reason: self.agents.get(agent_id).and_then(|e| {
                                e.state
                                    .reason()
                                    .map(str::to_owned)
                                    .or_else(|| e.state.pending_not_ready.clone())
                            }),
                        },
                        ReleaseReason::Expired => EventData::OfferExpired {
                            task_id,
                            offer_id,
                            agent_id: agent_id.clone(),
                        },
                        ReleaseReason::AgentOffline => withdrawn(WithdrawReason::AgentOffline),
                        ReleaseReason::Supervisor => withdrawn(WithdrawReason::Supervisor),
                        ReleaseReason::DesktopGone => withdrawn(WithdrawReason::DesktopGone),
                    });
                    let end = match reason {
                        ReleaseReason::Declined | ReleaseReason::NotReady => {
                            tx.stats.declined += 1;
                            OfferEnd::Declined
                        }
                        ReleaseReason::Expired => {
                            tx.stats.expired += 1;
                            OfferEnd::Expired
                        }
                        ReleaseReason::AgentOffline
                        | ReleaseReason::Supervisor
                        | ReleaseReason::DesktopGone => OfferEnd::Withdrawn,
                    };
                    self.end_offer(tx, offer_id, end);
                    // The agent who sent `decline` knows; one whose `set_state`
                    // declined the offer is told, like every other end.
                    if reason != ReleaseReason::Declined {
                        tx.notices.push(Notice::ToAgent {
                            agent_id: agent_id.clone(),
                            notice: AgentNotice::OfferEnded {
                                offer_id,
                                task_id,
                                reason: end,
                            },
                        });
                    }
                }
                if offer_id.is_some() {
                    let result = match reason {
                        ReleaseReason::Declined | ReleaseReason::NotReady => {
                            TransferResult::Declined
                        }
                        ReleaseReason::Expired => TransferResult::Expired,
                        _ => TransferResult::Withdrawn,
                    };
                    self.end_handoff(tx, task_id, agent_id, result);
                }
                if consult {
                    return;
                }
                let Some(slot) = self.tasks.get_mut(&task_id) else {
                    return;
                };
                let task = Arc::make_mut(slot);
                let mut reoffer_at = None;
                if exclude && !task.excluded.contains(agent_id) {
                    task.excluded.push(agent_id.clone());
                    task.passed.retain(|a| a != agent_id);
                    let after = self
                        .rules
                        .queues
                        .get(&task.queue)
                        .map(|q| q.reoffer_after)
                        .unwrap_or(DEFAULT_REOFFER_AFTER);
                    reoffer_at = Some(now.plus(after));
                }
                task.state = TaskState::Queued;
                let task = Arc::clone(slot);
                if let Some(at) = reoffer_at {
                    self.arm(tx, at, Timer::Reoffer(task_id, agent_id.clone()));
                }
                tx.events.push(queued_event(&task, true));
                self.file_task(&task);
                tx.queues.insert(task.queue.clone());
                if offer_id.is_none() {
                    // Back from an agent who had it in progress (gone offline): it waits
                    // again, and its queue's escalation starts over.
                    let q = task.queue.clone();
                    self.arm_escalation(tx, task_id, &q, now);
                }
                tx.wake.push_back(Wake::Task(task_id));
            }
            Effect::Assigned { task_id, offer_id } => {
                self.end_offer(tx, offer_id, OfferEnd::Accepted);
                self.end_handoff(tx, task_id, agent_id, TransferResult::Accepted);
                tx.stats.accepted += 1;
                tx.events.push(EventData::OfferAccepted {
                    task_id,
                    offer_id,
                    agent_id: agent_id.clone(),
                });
                // A consult accepted: the handover from the agent who had the task is
                // part of this same step.
                let holder = self.tasks.get(&task_id).and_then(|t| match &t.state {
                    TaskState::Assigned { agent_id: h, .. } if h != agent_id => Some(h.clone()),
                    _ => None,
                });
                if let Some(holder) = holder {
                    if let Some(t) = self.tasks.get(&task_id) {
                        // The transfer lands now.
                        tx.events.push(EventData::TaskTransferred {
                            task_id,
                            from_agent: Some(holder.clone()),
                            from_queue: t.queue.clone(),
                            to_agent: Some(agent_id.clone()),
                            to_queue: t.queue.clone(),
                        });
                    }
                    let wrap_up_until = self.wrap_up_until(task_id, now);
                    let _ = self.agent_event(
                        tx,
                        &holder,
                        Event::TaskTransferred {
                            task_id,
                            wrap_up_until,
                        },
                        now,
                    );
                    if let Some(t) = self.tasks.get(&task_id) {
                        tx.task_events.push(TaskEvent::Transferred {
                            task: t.clone(),
                            from: Some(holder.clone()),
                            to: Some(agent_id.clone()),
                            by: Actor::agent(&holder),
                        });
                    }
                }
                if let Some(t) = self.tasks.get_mut(&task_id) {
                    Arc::make_mut(t).state = TaskState::Assigned {
                        agent_id: agent_id.clone(),
                        accepted_at: now,
                    };
                    tx.events.push(EventData::TaskAssigned {
                        task_id,
                        agent_id: agent_id.clone(),
                        queue: t.queue.clone(),
                        channel: t.channel,
                        enqueued_at: t.created_at,
                        // Named by the context in the same step (`State::execute`).
                        activity_id: None,
                        customer_id: None,
                        request_id: None,
                    });
                    tx.task_events.push(TaskEvent::Assigned {
                        task: t.clone(),
                        agent: agent_id.clone(),
                    });
                }
            }
            Effect::ArmWrapUp { task_id, until } => {
                self.arm(tx, until, Timer::WrapUp(agent_id.clone(), task_id));
            }
            Effect::ArmAwayOffer {
                conn,
                offer_id,
                until,
            } => {
                self.arm(
                    tx,
                    until,
                    Timer::AwayOffer(agent_id.clone(), conn, offer_id),
                );
            }
            Effect::ArmGrace { conn, until } => {
                self.arm(tx, until, Timer::Grace(agent_id.clone(), conn));
            }
            Effect::CloseSession => {
                // Only the session the agent had when it was logged out: a login that
                // raced ahead of this on another node keeps its session.
                let conn = tx.before.get(agent_id).and_then(|s| match s.link {
                    Link::Connected(c) | Link::Away { conn: c, .. } => Some(c),
                    Link::None => None,
                });
                tx.notices.push(Notice::Close {
                    agent_id: agent_id.clone(),
                    reason: CloseReason::LoggedOut,
                    conn,
                })
            }
        }
    }

    /// Routes everything that became free, until nothing more can be paired.
    fn route(&mut self, tx: &mut Tx, now: Ts) {
        while let Some(w) = tx.wake.pop_front() {
            let pair = match w {
                Wake::Task(t) => self.agent_for(t).map(|a| (t, a)),
                Wake::Agent(a) => self.task_for(&a).map(|t| (t, a)),
            };
            if let Some((task_id, agent_id)) = pair {
                self.offer(tx, task_id, agent_id, now);
            }
        }
    }

    /// The longest-idle open agent eligible for a waiting task. An agent who declined
    /// or missed it (and whose re-offer time has passed) only when no other is.
    fn agent_for(&self, task_id: TaskId) -> Option<AgentId> {
        let task = self.tasks.get(&task_id)?;
        if task.state != TaskState::Queued {
            return None;
        }
        let q = self.queues.get(&task.queue)?;
        let mut fallback = None;
        for k in q.open_agents() {
            if !self
                .agents
                .get(&k.agent_id)
                .is_some_and(|e| eligible(e, task))
            {
                continue;
            }
            if !task.passed.contains(&k.agent_id) {
                return Some(k.agent_id.clone());
            }
            if fallback.is_none() {
                fallback = Some(&k.agent_id);
            }
        }
        fallback.cloned()
    }

    /// An agent who declined or missed a task may have it again: it moves from the
    /// task's `excluded` to its `passed`, and the task looks for an agent.
    fn reoffer_time_passed(&mut self, tx: &mut Tx, task_id: TaskId, agent: AgentId) {
        let Some(t) = self.tasks.get_mut(&task_id) else {
            return;
        };
        let Some(i) = t.excluded.iter().position(|a| *a == agent) else {
            return;
        };
        let t = Arc::make_mut(t);
        t.excluded.remove(i);
        if !t.passed.contains(&agent) {
            t.passed.push(agent);
        }
        if t.state == TaskState::Queued {
            tx.wake.push_back(Wake::Task(task_id));
        }
    }

    /// The first waiting task, by priority then arrival, across the agent's queues, that
    /// the agent is eligible for.
    fn task_for(&self, agent_id: &AgentId) -> Option<TaskId> {
        let e = self.agents.get(agent_id)?;
        e.open_key.as_ref()?;
        let mut best: Option<&Place> = None;
        for q in &e.profile.queues {
            let Some(idx) = self.queues.get(q) else {
                continue;
            };
            for (bucket, places) in idx.buckets() {
                if e.state.load(bucket.channel) >= e.profile.capacity.of(bucket.channel)
                    || !bucket.skills.iter().all(|s| e.profile.skills.contains(s))
                    || !bucket.levels.iter().all(|(s, l)| e.profile.level(s) >= *l)
                {
                    continue;
                }
                // The head of the bucket, unless this agent already refused it.
                let head = places.iter().find(|p| {
                    self.tasks
                        .get(&p.task_id)
                        .is_some_and(|t| !t.excluded.contains(agent_id))
                });
                if let Some(p) = head {
                    if best.is_none_or(|b| p < b) {
                        best = Some(p);
                    }
                }
            }
        }
        best.map(|p| p.task_id)
    }

    fn offer(&mut self, tx: &mut Tx, task_id: TaskId, agent_id: AgentId, now: Ts) {
        let Some(task) = self.tasks.get(&task_id) else {
            return;
        };
        let timeout = self
            .rules
            .queues
            .get(&task.queue)
            .map(|q| q.offer_timeout)
            .unwrap_or(Duration::from_secs(15));
        let (bucket, place) = bucket_and_place(task);
        let queue = task.queue.clone();
        let offer = PendingOffer {
            offer_id: OfferId(self.ids.mint()),
            task_id,
            channel: task.channel,
            deadline: now.plus(timeout),
        };
        let (offer_id, deadline, channel) = (offer.offer_id, offer.deadline, offer.channel);
        let mark = tx.events.len();
        if self
            .agent_event(tx, &agent_id, Event::Offer(offer), now)
            .is_err()
        {
            // Cannot happen while the indexes are right: the agent was open. The task
            // stays where it is and waits for the next agent.
            tracing::error!(%agent_id, %task_id, "routing picked an agent that cannot take an offer");
            return;
        }
        // Before the agent's change to Reserved that it caused.
        tx.events.insert(
            mark,
            EventData::TaskOffered {
                task_id,
                offer_id,
                agent_id: agent_id.clone(),
                queue: queue.clone(),
                channel,
                deadline,
            },
        );
        if let Some(q) = self.queues.get_mut(&queue) {
            q.remove(&bucket, &place);
            q.offers_pending += 1;
        }
        self.offers.insert(
            offer_id,
            LiveOffer {
                task_id,
                agent_id: agent_id.clone(),
                deadline,
            },
        );
        self.arm(tx, deadline, Timer::Offer(offer_id));
        tx.queues.insert(queue);
        tx.stats.offers_made += 1;
        let Some(slot) = self.tasks.get_mut(&task_id) else {
            return;
        };
        let task = Arc::make_mut(slot);
        task.state = TaskState::Offered {
            offer_id,
            agent_id: agent_id.clone(),
            deadline,
        };
        task.offers += 1;
        if task.offers == 1 {
            tx.stats
                .first_offer_latency
                .push(now.since(task.created_at));
        }
        let view = OfferView {
            offer_id,
            deadline,
            timeout_ms: timeout.as_millis() as u64,
            consult_from: None,
            task: Arc::clone(slot),
        };
        tx.notices.push(Notice::ToAgent {
            agent_id,
            notice: AgentNotice::Offer(Box::new(view)),
        });
    }

    /// Takes a live offer back from its agent (the task is cancelled or transferred
    /// while it rings): the agent is told, and a transfer or consult it was ends.
    fn withdraw_offer(
        &mut self,
        tx: &mut Tx,
        task_id: TaskId,
        offer_id: OfferId,
        agent_id: AgentId,
        why: WithdrawReason,
        now: Ts,
    ) -> Result<(), HubError> {
        let mark = tx.events.len();
        self.agent_event(tx, &agent_id, Event::OfferRevoked { offer_id }, now)?;
        tx.events.insert(
            mark,
            EventData::OfferWithdrawn {
                task_id,
                offer_id,
                agent_id: agent_id.clone(),
                reason: why,
            },
        );
        self.end_offer(tx, offer_id, OfferEnd::Withdrawn);
        self.end_handoff(tx, task_id, &agent_id, TransferResult::Withdrawn);
        tx.notices.push(Notice::ToAgent {
            agent_id,
            notice: AgentNotice::OfferEnded {
                offer_id,
                task_id,
                reason: OfferEnd::Withdrawn,
            },
        });
        Ok(())
    }

    /// Removes a live offer and remembers how it ended.
    fn end_offer(&mut self, tx: &mut Tx, offer_id: OfferId, end: OfferEnd) {
        let Some(o) = self.offers.remove(&offer_id) else {
            return;
        };
        self.timers.remove(&(o.deadline, Timer::Offer(offer_id)));
        if let Some(t) = self.tasks.get(&o.task_id) {
            if let Some(q) = self.queues.get_mut(&t.queue) {
                q.offers_pending = q.offers_pending.saturating_sub(1);
            }
            tx.queues.insert(t.queue.clone());
        }
        self.ended_offers.insert(offer_id, end);
        self.ended_order.push_back(offer_id);
        while self.ended_order.len() > self.rules.finished_retention.max(1) {
            if let Some(old) = self.ended_order.pop_front() {
                self.ended_offers.remove(&old);
            }
        }
    }

    fn live_offer(&self, agent: &AgentId, offer_id: OfferId) -> Result<LiveOffer, HubError> {
        match self.offers.get(&offer_id) {
            Some(o) if &o.agent_id == agent => Ok(o.clone()),
            Some(_) => Err(HubError::NotYourOffer),
            None => match self.ended_offers.get(&offer_id) {
                Some(end) => Err(HubError::OfferEnded(*end)),
                None => Err(HubError::Transition(agent::TransitionError::NoSuchOffer)),
            },
        }
    }

    fn arm(&mut self, tx: &mut Tx, at: Ts, timer: Timer) {
        self.timers.insert((at, timer));
        if tx.earliest_timer.is_none_or(|t| at < t) {
            tx.earliest_timer = Some(at);
        }
    }

    fn wrap_up_until(&self, task_id: TaskId, now: Ts) -> Option<Ts> {
        let q = self.tasks.get(&task_id)?.queue.clone();
        let w = self.rules.queues.get(&q)?.wrap_up;
        (!w.is_zero()).then(|| now.plus(w))
    }

    /// Files a queued task in its queue's index, at its place.
    fn file_task(&mut self, task: &Task) {
        let (bucket, place) = bucket_and_place(task);
        if let Some(q) = self.queues.get_mut(&task.queue) {
            q.insert(bucket, place, task.created_at);
        }
    }

    /// Forgets the oldest finished tasks past the retention count.
    fn retire(&mut self, task_id: TaskId) {
        self.finished.push_back(task_id);
        while self.finished.len() > self.rules.finished_retention {
            let Some(old) = self.finished.pop_front() else {
                break;
            };
            if let Some(t) = self.tasks.remove(&old) {
                if let Some(k) = &t.idempotency_key {
                    self.idempotency.remove(k);
                }
            }
        }
    }

    fn insert_agent(&mut self, profile: Arc<Profile>, now: Ts) {
        self.seq += 1;
        self.agents.insert(
            profile.id.clone(),
            AgentEntry {
                profile,
                state: AgentState::new(now),
                seq: self.seq,
                open_key: None,
                node: None,
            },
        );
    }

    /// Takes an agent out of every open set.
    fn close_agent(&mut self, id: &AgentId) {
        let Some(e) = self.agents.get_mut(id) else {
            return;
        };
        if let Some(k) = e.open_key.take() {
            for q in &e.profile.queues {
                if let Some(idx) = self.queues.get_mut(q) {
                    idx.close_agent(&k);
                }
            }
        }
    }

    /// Brings an agent's place in the open sets up to date with its state. Returns
    /// whether the agent is open for work.
    fn reindex(&mut self, id: &AgentId) -> bool {
        let Some(e) = self.agents.get(id) else {
            return false;
        };
        let open = e.state.open_for_work()
            && Channel::ALL
                .iter()
                .any(|c| e.state.load(*c) < e.profile.capacity.of(*c));
        let key = open.then(|| IdleKey {
            idle_since: e.state.idle_since,
            seq: e.seq,
            agent_id: id.clone(),
        });
        if key != e.open_key {
            self.close_agent(id);
            if let Some(e) = self.agents.get_mut(id) {
                if let Some(k) = &key {
                    for q in &e.profile.queues {
                        if let Some(idx) = self.queues.get_mut(q) {
                            idx.open_agent(k.clone());
                        }
                    }
                }
                e.open_key = key;
            }
        }
        open
    }

    fn replace_close_reason(&self, tx: &mut Tx, agent: &AgentId, reason: CloseReason) {
        for n in tx.notices.iter_mut() {
            if let Notice::Close {
                agent_id,
                reason: r,
                ..
            } = n
            {
                if agent_id == agent {
                    *r = reason;
                }
            }
        }
    }

    fn agent_reply(&self, id: &AgentId, resumed: bool) -> Result<Reply, HubError> {
        let view = self
            .agent_view(id)
            .ok_or_else(|| HubError::UnknownAgent(id.to_string()))?;
        Ok(Reply::Agent {
            view: Box::new(view),
            resumed,
        })
    }

    fn task_reply(&self, id: TaskId) -> Result<Reply, HubError> {
        let t = self.tasks.get(&id).ok_or(HubError::TaskNotFound(id))?;
        Ok(Reply::Task(t.clone()))
    }

    fn view_of(&self, e: &AgentEntry) -> AgentView {
        let s = &e.state;
        AgentView {
            agent_id: e.profile.id.clone(),
            name: e.profile.name.clone(),
            status: s.status(),
            reason: s.reason().map(str::to_owned),
            pending_not_ready: s.pending_not_ready.clone(),
            since: s.since,
            connected: matches!(s.link, Link::Connected(_)),
            offer: s.offer.as_ref().and_then(|o| {
                let task = self.tasks.get(&o.task_id)?;
                let timeout = self
                    .rules
                    .queues
                    .get(&task.queue)
                    .map(|q| q.offer_timeout.as_millis() as u64)
                    .unwrap_or(0);
                let consult_from = match &task.state {
                    TaskState::Assigned { agent_id, .. } if *agent_id != e.profile.id => {
                        Some(agent_id.clone())
                    }
                    _ => None,
                };
                Some(OfferView {
                    offer_id: o.offer_id,
                    deadline: o.deadline,
                    timeout_ms: timeout,
                    consult_from,
                    task: task.clone(),
                })
            }),
            in_progress: s
                .work
                .iter()
                .filter_map(|w| self.tasks.get(&w.task_id).cloned())
                .collect(),
            wrap_up: s.wrap_up.as_ref().map(|w| WrapUpView {
                task_id: w.task_id,
                until: w.until,
            }),
            version: s.version,
        }
    }

    fn summary_of(&self, e: &AgentEntry) -> AgentSummary {
        let s = &e.state;
        AgentSummary {
            agent_id: e.profile.id.clone(),
            name: e.profile.name.clone(),
            team: e.profile.team.clone(),
            status: s.status(),
            reason: s.reason().map(str::to_owned),
            pending_not_ready: s.pending_not_ready.clone(),
            since: s.since,
            connected: matches!(s.link, Link::Connected(_)),
            queues: e.profile.queues.clone(),
            in_progress: s.work.len(),
            tasks: s
                .work
                .iter()
                .map(|w| WorkSummary {
                    task_id: w.task_id,
                    channel: w.channel,
                    since: w.since,
                })
                .collect(),
            offered_task: s.offer.as_ref().map(|o| o.task_id),
            version: s.version,
        }
    }

    /// Turns what a command touched into notices for the hub.
    fn finish(&mut self, tx: Tx, reply: Result<Reply, HubError>) -> Outcome {
        let Tx {
            before,
            mut notices,
            mut queues,
            earliest_timer,
            stats,
            task_events,
            events,
            ..
        } = tx;
        let mut changed: Vec<&AgentId> = before
            .iter()
            .filter(|(id, old)| self.agents.get(*id).is_some_and(|e| &e.state != *old))
            .map(|(id, _)| id)
            .collect();
        changed.sort();
        for id in changed {
            let Some(e) = self.agents.get(id) else {
                continue;
            };
            queues.extend(e.profile.queues.iter().cloned());
            notices.push(Notice::ToAgent {
                agent_id: id.clone(),
                notice: AgentNotice::State(Box::new(self.view_of(e))),
            });
            notices.push(Notice::AgentChanged(Box::new(self.summary_of(e))));
        }
        Outcome {
            reply,
            notices,
            queues,
            earliest_timer,
            stats,
            task_events,
            events,
            envelopes: Vec::new(),
        }
    }
}

/// `task.queued` for a task filed in its queue now.
fn queued_event(t: &Task, requeued: bool) -> EventData {
    EventData::TaskQueued {
        task_id: t.task_id,
        queue: t.queue.clone(),
        channel: t.channel,
        priority: t.priority,
        // A task keeps its age (and its place) across re-queues and transfers.
        enqueued_at: t.created_at,
        requeued,
    }
}

/// The agent events of one change of an agent's state: `agent.logged_in` (first, when
/// it happened), `agent.state_changed`, `agent.logged_out`, `agent.connection_lost`. A
/// desktop that reconnects within its grace logs nothing in: the agent never left.
fn agent_events(
    id: &AgentId,
    before: &AgentState,
    after: &AgentState,
    by_supervisor: bool,
) -> Vec<EventData> {
    use crate::agent::Presence;
    let mut out = Vec::new();
    let was_in = before.presence != Presence::Offline;
    let is_in = after.presence != Presence::Offline;
    if !was_in && is_in {
        out.push(EventData::AgentLoggedIn {
            agent_id: id.clone(),
        });
    }
    if before.status() != after.status() || before.reason() != after.reason() {
        out.push(EventData::AgentStateChanged {
            agent_id: id.clone(),
            status: after.status(),
            reason: after.reason().map(str::to_owned),
            previous: before.status(),
            previous_reason: before.reason().map(str::to_owned),
            previous_since: before.since,
        });
    }
    if was_in && !is_in {
        out.push(EventData::AgentLoggedOut {
            agent_id: id.clone(),
            by_supervisor,
        });
    }
    if let (Link::Connected(_), Link::Away { grace_until, .. }) = (&before.link, &after.link) {
        out.push(EventData::AgentConnectionLost {
            agent_id: id.clone(),
            grace_until: *grace_until,
        });
    }
    out
}

fn bucket_and_place(task: &Task) -> (Bucket, Place) {
    (
        Bucket {
            channel: task.channel,
            skills: task.skills.clone().into(),
            levels: task
                .skill_levels
                .iter()
                .map(|(s, l)| (s.clone(), *l))
                .collect::<Vec<_>>()
                .into(),
        },
        Place {
            lane: if task.head { 0 } else { 1 },
            priority: Reverse(task.priority),
            seq: task.seq,
            task_id: task.task_id,
        },
    )
}

fn eligible(e: &AgentEntry, task: &Task) -> bool {
    e.profile.queues.contains(&task.queue)
        && e.state.open_for_work()
        && e.state.load(task.channel) < e.profile.capacity.of(task.channel)
        && task.skills.iter().all(|s| e.profile.skills.contains(s))
        && task
            .skill_levels
            .iter()
            .all(|(s, l)| e.profile.level(s) >= *l)
        && !task.excluded.contains(&e.profile.id)
}

#[cfg(test)]
mod tests;

/// Why a live task is taken back from wherever it is ([`Book::take_back`]).
#[derive(Clone, Copy)]
enum TakeBack {
    Cancel,
    Transfer,
}
