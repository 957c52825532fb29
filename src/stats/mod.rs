//! Contact-center statistics, folded from the decisions' events.
//!
//! [`Statistics`] is part of the replicated state ([`crate::state::State`]): every
//! decision's events ([`crate::events::EventData`]) pass through [`Statistics::apply`]
//! with the decision's own time, in `State::after`, on every replica. So every node of
//! a cluster holds the same figures (they come from the command log, not from what one
//! node saw), a restart of a durable store rebuilds them (snapshot, then the log's
//! replay), and the day rolls over at local midnight as the events' times say, never
//! as a wall clock says.
//!
//! The fold is on the hot path (every decision, every node): it only adds to fixed
//! counters, a few hash lookups per event, no allocation beyond a new minute bucket.
//! Everything else (averages, service level, the windows' sums, what is true now:
//! waiting tasks, agents by status) is computed when a report is asked for, at most
//! once per `server.stats_update_ms` for the supervisor feed ([`report`]).
//!
//! `day.rs`: the time zone and local midnight. `report.rs`: the report's shape
//! (`GET /v1/stats`, the supervisor `stats` message). `prometheus.rs`: `/metrics`.

pub mod day;
pub mod prometheus;
pub mod report;
#[cfg(test)]
mod tests;

use crate::agent::Status;
use crate::clock::Ts;
use crate::events::{EventData, TaskPhase};
use crate::growing::GrowingMap;
use crate::ids::{AgentId, Channel, OfferId, QueueId, TaskId};
use day::Zone;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

/// One minute, in microseconds.
const MINUTE_US: u64 = 60_000_000;
/// The width of a `series` bucket: 15 minutes, in microseconds.
pub const SERIES_US: u64 = 15 * MINUTE_US;
/// How many minute buckets are kept: the longest rolling window.
const MINUTES_KEPT: u64 = 30;
/// The upper bounds of the speed-of-answer histogram's buckets, in seconds.
pub const SOA_BUCKETS: [f64; 12] = [
    1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 120.0, 300.0, 600.0,
];
/// The upper bounds of the handle-time histogram's buckets, in seconds.
pub const HANDLE_BUCKETS: [f64; 10] = [
    10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0,
];

/// What the statistics are computed by, from the configuration. Every replica must
/// have the same (like the routing rules).
#[derive(Debug)]
pub struct StatsRules {
    /// The zone whose midnight starts the day (`[stats] timezone`).
    pub zone: Zone,
    /// An abandon after less than this wait is a short abandon (`[stats]
    /// short_abandon_secs`), in microseconds.
    pub short_abandon_us: u64,
    /// Each queue's service-level threshold (`service_level_secs`), in microseconds.
    pub thresholds: HashMap<QueueId, u64>,
    /// Each queue's service-level objective (`service_level_target`), as a fraction.
    /// Computes nothing: the report carries it for whoever judges the service level.
    pub targets: HashMap<QueueId, f64>,
}

/// The service-level objective of a queue with none configured: 80 %.
pub const DEFAULT_TARGET: f64 = 0.8;

/// The service-level threshold of a queue with none configured: 20 seconds.
pub const DEFAULT_THRESHOLD_US: u64 = 20_000_000;

impl StatsRules {
    /// UTC, 5-second short abandons, 20-second thresholds, 80 % targets.
    pub fn utc() -> StatsRules {
        StatsRules {
            zone: Zone::utc(),
            short_abandon_us: 5_000_000,
            thresholds: HashMap::new(),
            targets: HashMap::new(),
        }
    }

    /// A queue's service-level threshold, in microseconds.
    pub fn threshold_us(&self, q: &QueueId) -> u64 {
        self.thresholds
            .get(q)
            .copied()
            .unwrap_or(DEFAULT_THRESHOLD_US)
    }

    /// A queue's service-level objective, as a fraction (0.8 for 80 %).
    pub fn target(&self, q: &QueueId) -> f64 {
        self.targets.get(q).copied().unwrap_or(DEFAULT_TARGET)
    }
}

impl Default for StatsRules {
    fn default() -> Self {
        StatsRules::utc()
    }
}

/// Additive counts over a span of time (a day, a minute, 15 minutes, all time). Times
/// are kept in microseconds; the report turns them into milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Tasks that entered the queue: created into it, transferred into it, overflowed
    /// into it.
    pub offered: u64,
    /// Tasks an agent took from the queue (`task.assigned`, not a hand-over between
    /// agents of a task already in someone's hands).
    pub answered: u64,
    /// Of those, answered within the queue's threshold (wait <= threshold).
    pub answered_within: u64,
    /// Tasks cancelled while waiting or ringing.
    pub abandoned: u64,
    /// Of those, after a wait shorter than the short-abandon threshold.
    pub abandoned_short: u64,
    /// Sum of the answered tasks' waits.
    pub soa_sum_us: u64,
    /// The longest of them.
    pub soa_max_us: u64,
    /// Tasks completed.
    pub handled: u64,
    /// Sum of their handle times (accept to complete).
    pub handle_sum_us: u64,
    /// Wrap-up periods ended.
    pub wrap_ups: u64,
    /// Sum of their lengths.
    pub wrap_sum_us: u64,
    /// Offers accepted.
    pub accepted: u64,
    /// Offers declined.
    pub declined: u64,
    /// Offers expired unanswered.
    pub expired: u64,
    /// Tasks put back in the queue after an offer ended without an accept.
    pub requeued: u64,
    /// Transfers into the queue.
    pub transfers_in: u64,
    /// Transfers out of the queue.
    pub transfers_out: u64,
}

impl Counts {
    /// Adds another span's counts.
    pub fn add(&mut self, o: &Counts) {
        self.offered += o.offered;
        self.answered += o.answered;
        self.answered_within += o.answered_within;
        self.abandoned += o.abandoned;
        self.abandoned_short += o.abandoned_short;
        self.soa_sum_us += o.soa_sum_us;
        self.soa_max_us = self.soa_max_us.max(o.soa_max_us);
        self.handled += o.handled;
        self.handle_sum_us += o.handle_sum_us;
        self.wrap_ups += o.wrap_ups;
        self.wrap_sum_us += o.wrap_sum_us;
        self.accepted += o.accepted;
        self.declined += o.declined;
        self.expired += o.expired;
        self.requeued += o.requeued;
        self.transfers_in += o.transfers_in;
        self.transfers_out += o.transfers_out;
    }
}

/// One 15-minute bucket of a queue's day.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeriesBucket {
    /// The most tasks waiting at once during the bucket.
    pub waiting_max: u64,
    /// The bucket's counts.
    pub counts: Counts,
}

/// Since the statistics began (never reset): the Prometheus counters and histograms.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// The counts.
    pub counts: Counts,
    /// Answered tasks by speed of answer, per [`SOA_BUCKETS`] bound (not cumulative;
    /// the last is above the highest bound).
    pub soa_hist: Vec<u64>,
    /// Completed tasks by handle time, per [`HANDLE_BUCKETS`] bound (likewise).
    pub handle_hist: Vec<u64>,
}

fn observe(hist: &mut Vec<u64>, bounds: &[f64], us: u64) {
    if hist.len() != bounds.len() + 1 {
        hist.resize(bounds.len() + 1, 0);
    }
    let secs = us as f64 / 1e6;
    let i = bounds
        .iter()
        .position(|b| secs <= *b)
        .unwrap_or(bounds.len());
    hist[i] += 1;
}

/// One queue's folded figures.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct QueueFold {
    /// Since local midnight.
    pub today: Counts,
    /// Today's 15-minute buckets, from the day's start (index = offset / 15 min).
    pub series: Vec<SeriesBucket>,
    /// The last minutes, oldest first: (minute number since the epoch, counts).
    pub minutes: VecDeque<(u64, Counts)>,
    /// Since the statistics began.
    pub totals: Totals,
    /// Tasks waiting after the last change of the queue.
    pub waiting: u64,
}

/// One agent's day.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentDay {
    /// Time per status, by [`status_index`], in microseconds: the intervals that
    /// ended today, clipped at the day's start (the current one is added by the
    /// report).
    pub status_us: [u64; 6],
    /// Not Ready time by reason, in microseconds.
    pub not_ready_us: BTreeMap<String, u64>,
    /// Tasks completed, by channel ([`Channel::ALL`] order).
    pub handled: [u64; 3],
    /// Sum of their handle times.
    pub handle_sum_us: u64,
    /// Offers that expired unanswered.
    pub offers_missed: u64,
    /// Offers declined.
    pub offers_declined: u64,
}

/// One agent's folded figures.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AgentFold {
    /// Today.
    pub today: AgentDay,
    /// The queue of the task it last finished, passed on or had cancelled in hand: its
    /// wrap-up counts there.
    pub last_queue: Option<QueueId>,
    /// The part of the wrap-up under way that is already over: a Not Ready reason set
    /// during a wrap-up (by the agent, or forced) changes the status line without
    /// ending it, and the wrap-up counts once, whole, when it ends.
    #[serde(default)]
    pub wrap_so_far_us: u64,
}

/// What the fold remembers of a live task.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct TaskTrack {
    /// The queue it is in.
    queue: QueueId,
    /// When it entered that queue: created into it, or transferred or overflowed
    /// into it. Speed of answer and abandon waits count from here (a task's own
    /// `enqueued_at` is its creation, kept across transfers for its place in line).
    entered_at: Ts,
    /// Answered since it entered the queue: a further `task.assigned` is a hand-over
    /// between agents, not an answer, and a cancel no abandon.
    answered: bool,
    /// Transferred, its `task.queued` not yet seen: that one is no requeue.
    transferred: bool,
    /// The agent who has it in hand (its last `task.assigned`): a cancel then sends that
    /// agent to a wrap-up, which counts in this task's queue.
    #[serde(default)]
    holder: Option<AgentId>,
}

/// The statistics: folded from events, kept in the replicated state.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Statistics {
    /// The rules; set by the state after a snapshot is loaded.
    #[serde(skip)]
    rules: Arc<StatsRules>,
    /// The local day the `today` figures are of: `[day_start, day_end)`.
    day_start: Ts,
    day_end: Ts,
    // Hash maps, written in key order: a snapshot's bytes must not depend on a hash
    // seed (replicas and replays are compared through them), and every event of every
    // decision looks up one or two of these (ordered maps of string ids cost a dozen
    // string compares a lookup: 1.8% of the hub's CPU at 3,000 tasks/s). Nothing
    // iterates them in an order that shows. Those that grow with the agents, the tasks
    // waiting or the offers out (to the hundred thousand) are `GrowingMap`s, so that no
    // decision pays for one's growth (`crate::growing`).
    #[serde(serialize_with = "crate::ids::sorted")]
    queues: HashMap<QueueId, QueueFold>,
    #[serde(serialize_with = "crate::ids::sorted")]
    agents: GrowingMap<AgentId, AgentFold>,
    #[serde(serialize_with = "crate::ids::sorted")]
    tasks: GrowingMap<TaskId, TaskTrack>,
    #[serde(serialize_with = "crate::ids::sorted")]
    offers: GrowingMap<OfferId, QueueId>,
    /// Grows with every event folded.
    changes: u64,
}

/// A status's slot in [`AgentDay::status_us`].
pub fn status_index(s: Status) -> usize {
    match s {
        Status::Offline => 0,
        Status::NotReady => 1,
        Status::Ready => 2,
        Status::Reserved => 3,
        Status::Busy => 4,
        Status::WrapUp => 5,
    }
}

/// Every status, in [`status_index`] order.
pub const STATUSES: [Status; 6] = [
    Status::Offline,
    Status::NotReady,
    Status::Ready,
    Status::Reserved,
    Status::Busy,
    Status::WrapUp,
];

/// A channel's slot in [`AgentDay::handled`].
pub fn channel_index(c: Channel) -> usize {
    match c {
        Channel::Voice => 0,
        Channel::Chat => 1,
        Channel::Email => 2,
    }
}

impl Statistics {
    /// Empty statistics under `rules`.
    pub fn new(rules: Arc<StatsRules>) -> Statistics {
        Statistics {
            rules,
            ..Statistics::default()
        }
    }

    /// Puts the rules back after a snapshot was loaded.
    pub fn set_rules(&mut self, rules: Arc<StatsRules>) {
        self.rules = rules;
    }

    /// The rules.
    pub fn rules(&self) -> &StatsRules {
        &self.rules
    }

    /// Grows with every event folded: a report is stale when this moved.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// Starts a new day when `t` is past the current one.
    fn roll(&mut self, t: Ts) {
        if t < self.day_end {
            return;
        }
        let (start, end) = self.rules.zone.day_of(t);
        self.day_start = start;
        self.day_end = end;
        for q in self.queues.values_mut() {
            q.today = Counts::default();
            q.series.clear();
        }
        for a in self.agents.values_mut() {
            a.today = AgentDay::default();
        }
    }

    // One search of the map per call (the key's clone is a reference count): every
    // event of a decision lands here, and ids compare as strings.
    fn queue(&mut self, q: &QueueId) -> &mut QueueFold {
        self.queues.entry(q.clone()).or_default()
    }

    fn agent(&mut self, a: &AgentId) -> &mut AgentFold {
        self.agents.entry(a.clone()).or_default()
    }

    /// Applies `f` to a queue's counts of today, of `t`'s minute and 15-minute bucket,
    /// and of all time.
    fn count(&mut self, q: &QueueId, t: Ts, f: impl Fn(&mut Counts)) {
        let day_start = self.day_start;
        let fold = self.queue(q);
        f(&mut fold.today);
        f(&mut fold.totals.counts);
        let waiting = fold.waiting;
        f(&mut series_bucket(&mut fold.series, day_start, t, waiting).counts);
        let minute = t.0 / MINUTE_US;
        match fold.minutes.iter_mut().rev().find(|(m, _)| *m <= minute) {
            Some((m, c)) if *m == minute => f(c),
            _ => {
                let newest = fold.minutes.back().map_or(0, |(m, _)| *m);
                if minute > newest {
                    let mut c = Counts::default();
                    f(&mut c);
                    fold.minutes.push_back((minute, c));
                    while fold
                        .minutes
                        .front()
                        .is_some_and(|(m, _)| *m + MINUTES_KEPT <= minute)
                    {
                        fold.minutes.pop_front();
                    }
                } else if minute + MINUTES_KEPT > newest {
                    // An entry a little out of order (clock skew between nodes):
                    // filed in its own minute.
                    let at = fold
                        .minutes
                        .iter()
                        .position(|(m, _)| *m > minute)
                        .unwrap_or(fold.minutes.len());
                    let mut c = Counts::default();
                    f(&mut c);
                    fold.minutes.insert(at, (minute, c));
                }
            }
        }
    }

    /// Records how many tasks wait in a queue after a decision changed it.
    pub fn waiting(&mut self, q: &QueueId, n: usize, t: Ts) {
        self.roll(t);
        let day_start = self.day_start;
        let fold = self.queue(q);
        let before = fold.waiting;
        fold.waiting = n as u64;
        let b = series_bucket(&mut fold.series, day_start, t, before);
        b.waiting_max = b.waiting_max.max(n as u64);
    }

    /// Folds one event, at its decision's time.
    pub fn apply(&mut self, ev: &EventData, t: Ts) {
        self.roll(t);
        self.changes += 1;
        match ev {
            EventData::TaskQueued {
                task_id,
                queue,
                requeued,
                enqueued_at,
                ..
            } => {
                let entered_at = match self.tasks.get_mut(task_id) {
                    Some(tr) if tr.queue == *queue => {
                        let requeue = *requeued && !tr.transferred;
                        tr.transferred = false;
                        if requeue {
                            self.count(queue, t, |c| c.requeued += 1);
                        }
                        None
                    }
                    // Overflowed from another queue: it enters this one now.
                    Some(_) => Some(t),
                    // New (or older than the statistics).
                    None => Some(*enqueued_at),
                };
                if let Some(entered_at) = entered_at {
                    self.tasks.insert(
                        *task_id,
                        TaskTrack {
                            queue: queue.clone(),
                            entered_at,
                            answered: false,
                            transferred: false,
                            holder: None,
                        },
                    );
                    self.count(queue, t, |c| c.offered += 1);
                }
            }
            EventData::TaskTransferred {
                task_id,
                from_agent,
                from_queue,
                to_agent,
                to_queue,
            } => {
                self.count(from_queue, t, |c| c.transfers_out += 1);
                let same_line = to_agent.is_none()
                    && from_agent.is_none()
                    && self
                        .tasks
                        .get(task_id)
                        .is_some_and(|tr| tr.queue == *to_queue);
                if same_line {
                    // A waiting task moved within its own line (a new priority, the
                    // head): the same arrival, its wait going on.
                    self.count(to_queue, t, |c| c.transfers_in += 1);
                    if let Some(tr) = self.tasks.get_mut(task_id) {
                        tr.transferred = true;
                    }
                } else if to_agent.is_none() {
                    // Into a queue's line: a new arrival there.
                    self.count(to_queue, t, |c| {
                        c.transfers_in += 1;
                        c.offered += 1;
                    });
                    self.tasks.insert(
                        *task_id,
                        TaskTrack {
                            queue: to_queue.clone(),
                            entered_at: t,
                            answered: false,
                            transferred: true,
                            holder: None,
                        },
                    );
                } else {
                    // Straight to an agent. From an agent's hands (a cold transfer, a
                    // consult landing) it stays answered: the landing is a hand-over.
                    // A waiting task sent to an agent is answered when that agent
                    // takes it.
                    self.count(to_queue, t, |c| c.transfers_in += 1);
                    match self.tasks.get_mut(task_id) {
                        Some(tr) => tr.queue = to_queue.clone(),
                        None => {
                            self.tasks.insert(
                                *task_id,
                                TaskTrack {
                                    queue: to_queue.clone(),
                                    entered_at: t,
                                    answered: from_agent.is_some(),
                                    transferred: false,
                                    holder: None,
                                },
                            );
                        }
                    }
                }
                if let Some(a) = from_agent {
                    self.agent(a).last_queue = Some(from_queue.clone());
                }
            }
            EventData::TaskOffered {
                offer_id, queue, ..
            } => {
                self.offers.insert(*offer_id, queue.clone());
            }
            EventData::OfferAccepted { offer_id, .. } => {
                if let Some(q) = self.offers.remove(offer_id) {
                    self.count(&q, t, |c| c.accepted += 1);
                }
            }
            EventData::OfferDeclined {
                offer_id, agent_id, ..
            } => {
                if let Some(q) = self.offers.remove(offer_id) {
                    self.count(&q, t, |c| c.declined += 1);
                }
                self.agent(agent_id).today.offers_declined += 1;
            }
            EventData::OfferExpired {
                offer_id, agent_id, ..
            } => {
                if let Some(q) = self.offers.remove(offer_id) {
                    self.count(&q, t, |c| c.expired += 1);
                }
                self.agent(agent_id).today.offers_missed += 1;
            }
            EventData::OfferWithdrawn { offer_id, .. } => {
                self.offers.remove(offer_id);
            }
            EventData::TaskAssigned {
                task_id,
                agent_id,
                queue,
                enqueued_at,
                ..
            } => {
                let entered_at = match self.tasks.get_mut(task_id) {
                    Some(tr) if tr.answered => None,
                    Some(tr) => {
                        tr.answered = true;
                        Some(tr.entered_at)
                    }
                    None => {
                        self.tasks.insert(
                            *task_id,
                            TaskTrack {
                                queue: queue.clone(),
                                entered_at: *enqueued_at,
                                answered: true,
                                transferred: false,
                                holder: None,
                            },
                        );
                        Some(*enqueued_at)
                    }
                };
                if let Some(tr) = self.tasks.get_mut(task_id) {
                    tr.holder = Some(agent_id.clone());
                }
                if let Some(entered_at) = entered_at {
                    let wait = t.0.saturating_sub(entered_at.0);
                    let within = wait <= self.rules.threshold_us(queue);
                    self.count(queue, t, |c| {
                        c.answered += 1;
                        c.answered_within += u64::from(within);
                        c.soa_sum_us += wait;
                        c.soa_max_us = c.soa_max_us.max(wait);
                    });
                    let fold = self.queue(queue);
                    observe(&mut fold.totals.soa_hist, &SOA_BUCKETS, wait);
                }
            }
            EventData::TaskCompleted {
                task_id,
                agent_id,
                queue,
                channel,
                accepted_at,
                ..
            } => {
                self.tasks.remove(task_id);
                let handle = t.0.saturating_sub(accepted_at.0);
                self.count(queue, t, |c| {
                    c.handled += 1;
                    c.handle_sum_us += handle;
                });
                observe(
                    &mut self.queue(queue).totals.handle_hist,
                    &HANDLE_BUCKETS,
                    handle,
                );
                let a = self.agent(agent_id);
                a.last_queue = Some(queue.clone());
                a.today.handled[channel_index(*channel)] += 1;
                a.today.handle_sum_us += handle;
            }
            EventData::TaskCancelled {
                task_id,
                queue,
                phase,
                enqueued_at,
                ..
            } => {
                let track = self.tasks.remove(task_id);
                // Cancelled in an agent's hands: the agent's wrap-up is this task's.
                if *phase == TaskPhase::Assigned {
                    if let Some(a) = track.as_ref().and_then(|tr| tr.holder.clone()) {
                        self.agent(&a).last_queue = Some(queue.clone());
                    }
                }
                // Cancelled while waiting or ringing, never answered since it entered
                // the queue: the caller gave up.
                let waiting = matches!(phase, TaskPhase::Queued | TaskPhase::Offered);
                if waiting && !track.as_ref().is_some_and(|tr| tr.answered) {
                    let entered_at = track.map_or(*enqueued_at, |tr| tr.entered_at);
                    let wait = t.0.saturating_sub(entered_at.0);
                    let short = wait < self.rules.short_abandon_us;
                    self.count(queue, t, |c| {
                        c.abandoned += 1;
                        c.abandoned_short += u64::from(short);
                    });
                }
            }
            EventData::AgentStateChanged {
                agent_id,
                status,
                previous,
                previous_reason,
                previous_since,
                ..
            } => {
                let day_start = self.day_start;
                let spent_today = t.0.saturating_sub(previous_since.0.max(day_start.0));
                let a = self.agent(agent_id);
                let piece = t.0.saturating_sub(previous_since.0);
                let wrap = match (*previous == Status::WrapUp, *status == Status::WrapUp) {
                    (true, true) => {
                        // Still wrapping up (its reason line changed): one wrap-up.
                        a.wrap_so_far_us += piece;
                        None
                    }
                    (true, false) => Some(std::mem::take(&mut a.wrap_so_far_us) + piece),
                    _ => None,
                };
                a.today.status_us[status_index(*previous)] += spent_today;
                if *previous == Status::NotReady {
                    if let Some(r) = previous_reason {
                        match a.today.not_ready_us.get_mut(r.as_str()) {
                            Some(v) => *v += spent_today,
                            None => {
                                a.today.not_ready_us.insert(r.clone(), spent_today);
                            }
                        }
                    }
                }
                if let (Some(w), Some(q)) = (wrap, a.last_queue.clone()) {
                    self.count(&q, t, |c| {
                        c.wrap_ups += 1;
                        c.wrap_sum_us += w;
                    });
                }
            }
            _ => {}
        }
    }

    /// The day the `today` figures are of.
    pub fn day(&self) -> (Ts, Ts) {
        (self.day_start, self.day_end)
    }

    /// One queue's figures, if it had any.
    pub fn queue_fold(&self, q: &QueueId) -> Option<&QueueFold> {
        self.queues.get(q)
    }

    /// One agent's figures, if it had any.
    pub fn agent_fold(&self, a: &AgentId) -> Option<&AgentFold> {
        self.agents.get(a)
    }
}

/// The 15-minute bucket of `t` in a day's series, made (with the waiting count carried
/// over from before) if it is new.
fn series_bucket(
    series: &mut Vec<SeriesBucket>,
    day_start: Ts,
    t: Ts,
    waiting: u64,
) -> &mut SeriesBucket {
    // An entry timed a little before the day's start (skew) goes to the first bucket;
    // the index is capped at a 25-hour day.
    let i = ((t.0.saturating_sub(day_start.0) / SERIES_US) as usize).min(99);
    while series.len() <= i {
        series.push(SeriesBucket {
            waiting_max: waiting,
            counts: Counts::default(),
        });
    }
    &mut series[i]
}
