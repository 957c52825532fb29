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
//!
//! This file keeps the public types, the book's fields, its commands, the agents'
//! effects and the routing decision. The rest of the book's methods live beside it, each
//! in a file named after what it owns, so that a change to one of them is read without
//! the others: `offers.rs` (an offer's life), `transfer.rs` (transfers, consults and
//! taking a task back), `escalation.rs` (a waiting task's escalation), `timers.rs` (the
//! timers and their firing), `snapshot.rs` (the snapshot and the restore) and `view.rs`
//! (what the book shows, and the methods that build it).

mod escalation;
pub mod now;
mod offers;
pub mod queue;
mod snapshot;
mod timers;
mod transfer;
pub mod view;

use crate::agent::{self, AgentState, Effect, Event, Link, ReleaseReason};
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
pub use snapshot::{BookSnapshot, BookSnapshotRef};
use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use timers::Timer;
use transfer::TakeBack;
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

/// The version of the decisions this code makes from a log: bumped whenever the same
/// commands would be decided differently (who gets an offer, a timer's effect). It is
/// part of `Rules::fingerprint`: a file store refuses to replay records written by
/// another version (or rules), a cluster node refuses to join live nodes of another
/// version or to replay a log tail another version decided (`sb:log:rules`); mixing two
/// versions' decisions would make the replay differ from what agents were told. 2: an offer no longer moves the agent to the back
/// of the longest-idle line; an accept does. 3: a blank phone, email or chat handle in
/// a new task's customer is refused (and never a lookup key); a transferred task's next
/// activity goes on the earlier request only while it is open; a head-of-queue task
/// is first in its own queue only; any transfer to a queue restarts its escalation;
/// `transfer_ended` goes to the agent who made the transfer only; a customer an agent
/// loaded stays watched when it closes an interaction with it or a reopened record; a
/// customer's activities are in the order they started, not the order they were linked.
pub const DECISIONS_VERSION: u32 = 3;

impl Rules {
    /// A digest of everything a decision reads from the rules (16 hex digits), and of
    /// the code's `DECISIONS_VERSION`. Nodes that share one log must have the same: each
    /// applies every entry by its own rules, so different rules would make their
    /// replicas decide differently, in silence.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut queues: Vec<_> = self.queues.iter().collect();
        queues.sort_by(|a, b| a.0.cmp(b.0));
        let mut thresholds: Vec<_> = self.stats.thresholds.iter().collect();
        thresholds.sort();
        let mut targets: Vec<_> = self
            .stats
            .targets
            .iter()
            .map(|(q, t)| (q, t.to_bits()))
            .collect();
        targets.sort();
        let text = format!(
            "v{DECISIONS_VERSION}|{queues:?}|{:?}|{:?}|{:?}|{:?}|{}|{}|{:?}|{}|{thresholds:?}|{targets:?}|{:?}",
            self.agents,
            self.reasons,
            self.grace,
            self.away_offer,
            self.finished_retention,
            self.max_transfers,
            // By name: the zone's rules come from each machine's zoneinfo.
            self.stats.zone.name(),
            self.stats.short_abandon_us,
            self.events,
        );
        let digest = Sha256::digest(text.as_bytes());
        digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }
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
    /// When each refuser's exclusion from a task ends: the latest `Timer::Reoffer` armed
    /// for the pair. A refusal while still excluded (an agent a transfer named refusing
    /// again) arms a later timer; the earlier one then lifts nothing. Derived from the
    /// timers (rebuilt when a snapshot is restored), so not in the snapshot.
    reoffer_until: HashMap<(TaskId, AgentId), Ts>,
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
            reoffer_until: HashMap::new(),
            finished: VecDeque::new(),
            seq: 0,
        };
        for p in &rules.agents {
            b.insert_agent(p.clone(), now);
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

    /// The desktops connected through `node`: each agent and its connection, sorted.
    pub fn connected_through(&self, node: &str) -> Vec<(AgentId, ConnId)> {
        let mut out: Vec<(AgentId, ConnId)> = self
            .agents
            .iter()
            .filter(|(_, e)| e.node.as_deref() == Some(node))
            .filter_map(|(id, e)| match e.state.link {
                Link::Connected(c) => Some((id.clone(), c)),
                _ => None,
            })
            .collect();
        out.sort();
        out
    }

    /// A task, by id.
    pub fn task(&self, id: TaskId) -> Option<&Task> {
        self.tasks.get(&id).map(|t| &**t)
    }

    fn command(&mut self, tx: &mut Tx, cmd: Command, now: Ts) -> Result<Reply, HubError> {
        match cmd {
            Command::Connect {
                profile,
                conn,
                node,
            } => {
                let id = profile.id.clone();
                // First, so that whatever this decision tells the agent reaches the new
                // session.
                tx.notices.push(Notice::Attach {
                    agent_id: id.clone(),
                    conn,
                });
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
                    self.end_consult(tx, task_id, now, true, WithdrawReason::ConsultEnded);
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
                self.end_consult(tx, task_id, now, false, WithdrawReason::ConsultEnded);
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
        if before.presence != agent::Presence::Offline
            && entry.state.presence == agent::Presence::Offline
        {
            // The customers it only loaded are no longer watched for it.
            tx.task_events
                .push(TaskEvent::AgentOffline { agent: id.clone() });
        }
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
                    self.end_consult(tx, task_id, now, true, WithdrawReason::ConsultEnded);
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
                if exclude {
                    // Excluded again if it still was (a transfer named it): the re-offer
                    // time runs from this refusal.
                    if !task.excluded.contains(agent_id) {
                        task.excluded.push(agent_id.clone());
                    }
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
                // Several tasks freed in one step (an agent gone offline lets go of its
                // offer, then of its work) wake one after another, in the order they were
                // let go: the agent still gets the task it would pick (the first by
                // priority and arrival; not one that prefers another agent), and this
                // task looks again.
                Wake::Task(t) => match self.agent_for(t) {
                    Some(a) => match self.task_for(&a) {
                        Some(better)
                            if better != t && self.agent_for(better).as_ref() == Some(&a) =>
                        {
                            tx.wake.push_front(Wake::Task(t));
                            Some((better, a))
                        }
                        _ => Some((t, a)),
                    },
                    None => None,
                },
                Wake::Agent(a) => match self.task_for(&a) {
                    // Several agents freed in one step (timers due together) wake one
                    // after another: the task still goes to the agent the task would
                    // pick (the longest idle; one who refused it only when no other
                    // is open), and this one looks again.
                    Some(t) => match self.agent_for(t) {
                        Some(other) if other != a => {
                            tx.wake.push_front(Wake::Agent(a));
                            Some((t, other))
                        }
                        _ => Some((t, a)),
                    },
                    None => None,
                },
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

    /// The first waiting task, by priority then arrival, across the agent's queues, that
    /// the agent is eligible for. A task transferred to the head of its queue is first
    /// in that queue only: across queues it counts by its priority and arrival.
    fn task_for(&self, agent_id: &AgentId) -> Option<TaskId> {
        let e = self.agents.get(agent_id)?;
        e.open_key.as_ref()?;
        let mut best: Option<&Place> = None;
        for q in &e.profile.queues {
            let Some(idx) = self.queues.get(q) else {
                continue;
            };
            let mut first: Option<&Place> = None;
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
                    if first.is_none_or(|b| p < b) {
                        first = Some(p);
                    }
                }
            }
            if let Some(p) = first {
                if best.is_none_or(|b| (p.priority, p.seq) < (b.priority, b.seq)) {
                    best = Some(p);
                }
            }
        }
        best.map(|p| p.task_id)
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

    /// The log's first entry, at `now`, applied to a book made blank at time zero (a
    /// replica: every replica makes the same): the configured agents are offline since
    /// then, not since 1970 (`agent.state_changed`'s `previous_since` at their first
    /// login).
    pub fn begin_at(&mut self, now: Ts) {
        for e in self.agents.values_mut() {
            if e.state.since == Ts(0) && e.state.presence == crate::agent::Presence::Offline {
                e.state.since = now;
                e.state.idle_since = now;
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
