//! The statistics report: what `GET /v1/stats` answers and the supervisor `stats`
//! message carries (`protocol/README.md`, "Statistics", defines every figure).
//!
//! A report is built from one replica's state at one instant, `generated_at`: the
//! folded counts ([`Statistics`]) and what the routing book says is true now. Every
//! figure derived from counts (averages, service level, windows) is computed here,
//! off the hot path.

use super::{Counts, MINUTE_US, SERIES_US, Statistics, status_index};
use crate::clock::Ts;
use crate::error::HubError;
use crate::ids::{AgentId, QueueId};
use crate::routing::Book;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// Which queues and agents a report covers; `None` for all.
#[derive(Clone, Debug, Default)]
pub struct StatsQuery {
    /// Only these queues.
    pub queues: Option<BTreeSet<QueueId>>,
    /// Only these agents.
    pub agents: Option<BTreeSet<AgentId>>,
}

/// The whole report.
#[derive(Clone, Debug, Serialize)]
pub struct StatsReport {
    /// When it was built: the instant every "now" figure and window refers to.
    pub generated_at: Ts,
    /// The zone whose midnight starts the day.
    pub timezone: String,
    /// The start of the current local day.
    pub day_start: Ts,
    /// The start of the next one.
    pub day_end: Ts,
    /// The queues, by id.
    pub queues: Vec<QueueReport>,
    /// The agents, by id.
    pub agents: Vec<AgentReport>,
}

/// One queue.
#[derive(Clone, Debug, Serialize)]
pub struct QueueReport {
    /// The queue.
    pub queue_id: QueueId,
    /// Its display name.
    pub name: String,
    /// Its service-level objective as a fraction (`service_level_target` / 100):
    /// what the windows' `service_level` is judged against.
    pub service_level_target: f64,
    /// What is true now.
    pub now: NowReport,
    /// Since local midnight.
    pub today: Window,
    /// The current minute and the 14 before it.
    pub last_15m: Window,
    /// The current minute and the 29 before it.
    pub last_30m: Window,
    /// Today in 15-minute buckets, from `day_start` up to the current one.
    pub series: Vec<SeriesPoint>,
}

/// Counts per status.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct ByStatus {
    /// Offline.
    pub offline: u64,
    /// Not Ready.
    pub not_ready: u64,
    /// Ready.
    pub ready: u64,
    /// Reserved (an offer ringing).
    pub reserved: u64,
    /// Busy.
    pub busy: u64,
    /// Wrap-up.
    pub wrap_up: u64,
}

impl ByStatus {
    fn from(v: [u64; 6]) -> ByStatus {
        ByStatus {
            offline: v[0],
            not_ready: v[1],
            ready: v[2],
            reserved: v[3],
            busy: v[4],
            wrap_up: v[5],
        }
    }
}

/// Counts per channel.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct ByChannel {
    /// Voice.
    pub voice: u64,
    /// Chat.
    pub chat: u64,
    /// Email.
    pub email: u64,
}

impl ByChannel {
    fn from(v: [u64; 3]) -> ByChannel {
        ByChannel {
            voice: v[0],
            chat: v[1],
            email: v[2],
        }
    }
}

/// A queue now.
#[derive(Clone, Debug, Serialize)]
pub struct NowReport {
    /// Tasks waiting.
    pub waiting: u64,
    /// By channel.
    pub waiting_by_channel: ByChannel,
    /// By priority (keys are the priorities, as text).
    pub waiting_by_priority: BTreeMap<i64, u64>,
    /// When the longest-waiting task entered the queue.
    pub oldest_enqueued_at: Option<Ts>,
    /// The agents who serve the queue, by status.
    pub agents: ByStatus,
    /// Its Not Ready agents, by reason.
    pub not_ready_reasons: BTreeMap<String, u64>,
    /// Agents the router may offer a task of it to now.
    pub eligible_ready: u64,
    /// Offers ringing on its tasks.
    pub offers_pending: u64,
}

/// A queue's figures over a span of time.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Window {
    /// Where the span starts (it ends at `generated_at`).
    pub window_start: Ts,
    /// Tasks that entered the queue.
    pub offered: u64,
    /// Tasks answered from it.
    pub answered: u64,
    /// Tasks cancelled while waiting or ringing.
    pub abandoned: u64,
    /// Of those, after less than `[stats] short_abandon_secs`.
    pub abandoned_short: u64,
    /// Answered within the threshold.
    pub answered_within_threshold: u64,
    /// `answered_within_threshold / (answered + abandoned - abandoned_short)`; null
    /// when that is 0.
    pub service_level: Option<f64>,
    /// The queue's threshold.
    pub service_level_threshold_ms: u64,
    /// Mean wait of the answered tasks.
    pub avg_speed_of_answer_ms: Option<u64>,
    /// Longest wait of an answered task.
    pub max_speed_of_answer_ms: Option<u64>,
    /// Mean accept-to-complete time of the completed tasks.
    pub avg_handle_ms: Option<u64>,
    /// Mean length of the wrap-ups that ended.
    pub avg_wrap_up_ms: Option<u64>,
    /// Offers accepted.
    pub offers_accepted: u64,
    /// Offers declined.
    pub offers_declined: u64,
    /// Offers expired.
    pub offers_expired: u64,
    /// Tasks put back after an offer ended without an accept.
    pub requeued: u64,
    /// Transfers into the queue.
    pub transfers_in: u64,
    /// Transfers out of it.
    pub transfers_out: u64,
}

/// Microseconds to milliseconds, rounded to the nearest.
fn ms(us: u64) -> u64 {
    (us + 500) / 1000
}

fn mean_ms(sum_us: u64, n: u64) -> Option<u64> {
    (n > 0).then(|| ms(sum_us / n))
}

/// The service level of some counts: answered within the threshold over the tasks
/// that could have been (answered, or abandoned after the short-abandon threshold).
pub fn service_level(c: &Counts) -> Option<f64> {
    let base = (c.answered + c.abandoned).saturating_sub(c.abandoned_short);
    (base > 0).then(|| c.answered_within as f64 / base as f64)
}

impl Window {
    /// The figures of some counts.
    pub fn of(c: &Counts, window_start: Ts, threshold_us: u64) -> Window {
        Window {
            window_start,
            offered: c.offered,
            answered: c.answered,
            abandoned: c.abandoned,
            abandoned_short: c.abandoned_short,
            answered_within_threshold: c.answered_within,
            service_level: service_level(c),
            service_level_threshold_ms: ms(threshold_us),
            avg_speed_of_answer_ms: mean_ms(c.soa_sum_us, c.answered),
            max_speed_of_answer_ms: (c.answered > 0).then(|| ms(c.soa_max_us)),
            avg_handle_ms: mean_ms(c.handle_sum_us, c.handled),
            avg_wrap_up_ms: mean_ms(c.wrap_sum_us, c.wrap_ups),
            offers_accepted: c.accepted,
            offers_declined: c.declined,
            offers_expired: c.expired,
            requeued: c.requeued,
            transfers_in: c.transfers_in,
            transfers_out: c.transfers_out,
        }
    }
}

/// One 15-minute bucket of today.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SeriesPoint {
    /// Its start.
    pub start: Ts,
    /// The most tasks waiting at once during it.
    pub waiting: u64,
    /// Tasks that entered the queue.
    pub offered: u64,
    /// Tasks answered.
    pub answered: u64,
    /// Its service level (same formula), null when nothing counted.
    pub service_level: Option<f64>,
}

/// One agent's day.
#[derive(Clone, Debug, Serialize)]
pub struct AgentReport {
    /// The agent.
    pub agent_id: AgentId,
    /// Its display name.
    pub name: String,
    /// Today.
    pub today: AgentToday,
}

/// One agent's figures since local midnight.
#[derive(Clone, Debug, Serialize)]
pub struct AgentToday {
    /// Time in each status, in milliseconds, up to `generated_at`.
    pub status_ms: ByStatus,
    /// Not Ready time by reason, in milliseconds.
    pub not_ready_ms: BTreeMap<String, u64>,
    /// Tasks completed, by channel.
    pub handled: ByChannel,
    /// Mean accept-to-complete time of those.
    pub avg_handle_ms: Option<u64>,
    /// Offers that expired unanswered.
    pub offers_missed: u64,
    /// Offers declined.
    pub offers_declined: u64,
}

/// The sum of the minute buckets from `first` to `last` minute (inclusive).
fn minutes_sum(m: &std::collections::VecDeque<(u64, Counts)>, first: u64, last: u64) -> Counts {
    let mut c = Counts::default();
    for (minute, counts) in m {
        if (first..=last).contains(minute) {
            c.add(counts);
        }
    }
    c
}

impl Statistics {
    /// The report at `now`, from these figures and the book's present.
    pub fn report(&self, book: &Book, q: &StatsQuery, now: Ts) -> Result<StatsReport, HubError> {
        let all_queues = book.queue_ids();
        if let Some(want) = &q.queues {
            if let Some(bad) = want.iter().find(|w| !all_queues.contains(w)) {
                return Err(HubError::UnknownQueue(bad.0.to_string()));
            }
        }
        if let Some(want) = &q.agents {
            if let Some(bad) = want.iter().find(|a| !book.knows_agent(a)) {
                return Err(HubError::UnknownAgent(bad.0.to_string()));
            }
        }
        // The folded day, unless `now` is past it (no event since midnight yet).
        let current = now < self.day_end;
        let (day_start, day_end) = if current {
            (self.day_start, self.day_end)
        } else {
            self.rules.zone.day_of(now)
        };
        let minute = now.0 / MINUTE_US;
        let mut nows = book.queues_now();
        let mut queues = Vec::new();
        for id in all_queues {
            if q.queues.as_ref().is_some_and(|w| !w.contains(&id)) {
                continue;
            }
            let threshold = self.rules.threshold_us(&id);
            let fold = self.queues.get(&id);
            let today = match fold {
                Some(f) if current => f.today,
                _ => Counts::default(),
            };
            let window = |n: u64| {
                let first = (minute + 1).saturating_sub(n);
                let c =
                    fold.map_or_else(Counts::default, |f| minutes_sum(&f.minutes, first, minute));
                Window::of(&c, Ts(first * MINUTE_US), threshold)
            };
            let last_15m = window(15);
            let last_30m = window(30);
            let waiting_now = fold.map_or(0, |f| f.waiting);
            let upto = (now.0.saturating_sub(day_start.0) / SERIES_US) as usize;
            let mut series = Vec::with_capacity(upto + 1);
            for i in 0..=upto.min(99) {
                let b = fold
                    .filter(|_| current)
                    .and_then(|f| f.series.get(i))
                    .copied();
                let (waiting, c) = match b {
                    Some(b) => (b.waiting_max, b.counts),
                    None => (waiting_now, Counts::default()),
                };
                series.push(SeriesPoint {
                    start: Ts(day_start.0 + i as u64 * SERIES_US),
                    waiting,
                    offered: c.offered,
                    answered: c.answered,
                    service_level: service_level(&c),
                });
            }
            let n = nows.remove(&id).unwrap_or_default();
            queues.push(QueueReport {
                name: book.queue_name(&id).unwrap_or_default().to_owned(),
                service_level_target: self.rules.target(&id),
                now: NowReport {
                    waiting: n.waiting_by_channel.iter().sum(),
                    waiting_by_channel: ByChannel::from(n.waiting_by_channel),
                    waiting_by_priority: n.waiting_by_priority,
                    oldest_enqueued_at: n.oldest_enqueued_at,
                    agents: ByStatus::from(n.agents),
                    not_ready_reasons: n.not_ready_reasons,
                    eligible_ready: n.eligible_ready,
                    offers_pending: n.offers_pending,
                },
                today: Window::of(&today, day_start, threshold),
                last_15m,
                last_30m,
                series,
                queue_id: id,
            });
        }
        let mut agents = Vec::new();
        for a in book.agents_now() {
            if q.agents.as_ref().is_some_and(|w| !w.contains(&a.agent_id)) {
                continue;
            }
            let day = self
                .agents
                .get(&a.agent_id)
                .filter(|_| current)
                .map(|f| f.today.clone())
                .unwrap_or_default();
            let mut status_us = day.status_us;
            let mut not_ready_us = day.not_ready_us;
            // The status it is in now counts up to `generated_at`.
            let open = now.0.saturating_sub(a.since.0.max(day_start.0));
            status_us[status_index(a.status)] += open;
            if let Some(r) = &a.reason {
                *not_ready_us.entry(r.clone()).or_default() += open;
            }
            let handled: u64 = day.handled.iter().sum();
            agents.push(AgentReport {
                today: AgentToday {
                    status_ms: ByStatus::from(status_us.map(ms)),
                    not_ready_ms: not_ready_us.into_iter().map(|(k, v)| (k, ms(v))).collect(),
                    handled: ByChannel::from(day.handled),
                    avg_handle_ms: mean_ms(day.handle_sum_us, handled),
                    offers_missed: day.offers_missed,
                    offers_declined: day.offers_declined,
                },
                name: a.name,
                agent_id: a.agent_id,
            });
        }
        Ok(StatsReport {
            generated_at: now,
            timezone: self.rules.zone.name().to_owned(),
            day_start,
            day_end,
            queues,
            agents,
        })
    }
}
