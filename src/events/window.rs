//! The window of numbered events every replica keeps: what `GET /v1/events` serves a
//! reader that resumes, and what the webhooks deliver from.
//!
//! [`EventLog`] lives in the replicated state (`State::events`) and is changed only by
//! `State::after`, once per decision, from the decision's events and the log entry's
//! time: so every replica numbers the same events the same way and holds the same
//! window, and a snapshot (which carries it) continues the numbering after a restart.

use super::{Envelope, EventData};
use crate::clock::Ts;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

/// How much of the past the window holds (`[events]` in the configuration).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// At most this many events, unless a retain floor holds more.
    pub count: usize,
    /// Events older than this (by their log time) are dropped, unless a retain floor
    /// holds them.
    pub age: Duration,
    /// At most this many bytes of wire text (a task's attributes may make one
    /// `task.created` tens of kilobytes), unless a retain floor holds more. Each event
    /// counts its [`Envelope::wire_bound`], made or not: the same on every replica,
    /// never less than the text it makes when a reader asks.
    pub bytes: usize,
    /// A hard cap: a retain floor never holds more than this many events.
    pub max_held: usize,
}

impl Default for Retention {
    fn default() -> Retention {
        Retention {
            count: 100_000,
            age: Duration::from_secs(86_400),
            bytes: 256 << 20,
            max_held: 1_000_000,
        }
    }
}

/// A reader asked for events older than the window holds: it must resynchronize (from
/// `GET /v1/snapshot`) and continue from `oldest - 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("events before {oldest} are no longer held")]
pub struct EventsGone {
    /// The oldest sequence number still held (the next one to be made when the window
    /// is empty).
    pub oldest: u64,
}

/// The numbering and the window. See the module documentation.
#[derive(Debug, Default)]
pub struct EventLog {
    epoch: Option<Arc<str>>,
    last: u64,
    window: VecDeque<Arc<Envelope>>,
    /// The wire text held, in bytes: the sum of the events' bounds
    /// ([`Envelope::wire_bound`]), whether or not a reader has made the text yet.
    bytes: usize,
    floor: Option<u64>,
    retention: Retention,
}

/// What a snapshot keeps of the log: the data without the wire text, which a reader
/// makes again after a load (the exact microsecond times survive; JSON keeps
/// milliseconds).
#[derive(Serialize, Deserialize)]
pub struct EventLogSnapshot {
    epoch: Option<String>,
    last: u64,
    floor: Option<u64>,
    events: Vec<(u64, Ts, EventData)>,
}

impl EventLog {
    /// An empty log with no epoch yet.
    pub fn new(retention: Retention) -> EventLog {
        EventLog {
            retention,
            ..EventLog::default()
        }
    }

    /// The epoch: changes when history was lost (a new data directory, a new Redis, a
    /// fresh in-memory start). `None` until the first log entry was applied.
    pub fn epoch(&self) -> Option<&Arc<str>> {
        self.epoch.as_ref()
    }

    /// Sets the epoch from `seed`, unless it has one: the first entry a blank state
    /// applies names it (the same entry, so the same epoch, on every replica).
    pub fn begin(&mut self, seed: u64) {
        if self.epoch.is_none() {
            self.epoch = Some(epoch_name(seed).into());
        }
    }

    /// Names a new epoch from `seed` (`Body::NewHistory`: a data directory started from
    /// a backup copy). The numbering goes on; the held events take the new name too, as
    /// a snapshot would give them (it keeps one epoch): a reader that resumes with the
    /// old epoch (`?epoch=`) is told its history is gone (410) rather than served
    /// events that reuse its ids.
    pub fn new_history(&mut self, seed: u64) {
        let epoch: Arc<str> = epoch_name(seed).into();
        self.window = self
            .window
            .iter()
            .map(|e| Arc::new(Envelope::new(epoch.clone(), e.seq, e.time, e.data.clone())))
            .collect();
        self.bytes = self.window.iter().map(|e| e.wire_bound()).sum();
        self.epoch = Some(epoch);
    }

    /// The last sequence number given (0 before the first event).
    pub fn last_seq(&self) -> u64 {
        self.last
    }

    /// The oldest sequence number held (the next one when the window is empty).
    pub fn oldest_seq(&self) -> u64 {
        self.window.front().map_or(self.last + 1, |e| e.seq)
    }

    /// How many events the window holds.
    pub fn len(&self) -> usize {
        self.window.len()
    }

    /// Whether the window is empty.
    pub fn is_empty(&self) -> bool {
        self.window.is_empty()
    }

    /// The retention rules.
    pub fn retention(&self) -> Retention {
        self.retention
    }

    /// Keeps every event from `floor` on, past the count and age rules (never past
    /// `max_held`): for readers that must not miss any (a webhook endpoint that has
    /// not yet received them). `None` lets the count and age rules alone decide. Must
    /// be set from replicated state (a log entry) so that every replica agrees.
    pub fn set_retain_floor(&mut self, floor: Option<u64>) {
        self.floor = floor;
    }

    /// The retain floor, if one is set.
    pub fn retain_floor(&self) -> Option<u64> {
        self.floor
    }

    /// Numbers a decision's events at the log time `now`, keeps them, and drops what
    /// the retention no longer covers. Returns the envelopes, in order. Their wire text
    /// is not made here, under the store's lock, but by the first reader
    /// ([`Envelope::json`]).
    pub fn record(&mut self, events: Vec<EventData>, now: Ts) -> Vec<Arc<Envelope>> {
        if events.is_empty() {
            return Vec::new();
        }
        if self.epoch.is_none() {
            // A state that never applied a log entry (unit tests): its first decision's
            // time names the epoch.
            self.begin(now.0);
        }
        let epoch = self.epoch.clone().unwrap_or_else(|| Arc::from("0"));
        let mut out = Vec::with_capacity(events.len());
        for data in events {
            self.last += 1;
            let env = Arc::new(Envelope::new(epoch.clone(), self.last, now, data));
            self.bytes += env.wire_bound();
            self.window.push_back(env.clone());
            out.push(env);
        }
        self.prune(now);
        out
    }

    fn prune(&mut self, now: Ts) {
        let cutoff = now.0.saturating_sub(self.retention.age.as_micros() as u64);
        while let Some(front) = self.window.front() {
            let len = self.window.len();
            let held = self.floor.is_some_and(|f| front.seq >= f);
            let expired = len > self.retention.count
                || front.time.0 < cutoff
                || self.bytes > self.retention.bytes;
            if len > self.retention.max_held.max(self.retention.count) || (expired && !held) {
                if let Some(e) = self.window.pop_front() {
                    self.bytes = self.bytes.saturating_sub(e.wire_bound());
                }
            } else {
                break;
            }
        }
    }

    /// Every held event with a sequence number above `after`, in order; an `after`
    /// beyond the last event gives none (a replica that lags another gives them when it
    /// has applied them). [`EventsGone`] when events after `after` were dropped.
    pub fn after(&self, after: u64) -> Result<Vec<Arc<Envelope>>, EventsGone> {
        self.after_from(after, self.oldest_seq(), usize::MAX)
    }

    /// The oldest event still served at `now`: the age rule is applied here too, not
    /// only when the next event is recorded (`prune`), or a hub with nothing new to
    /// record would go on serving events (customers' names and contacts among them)
    /// past `retain_secs`. What a retain floor holds is served.
    pub fn oldest_live(&self, now: Ts) -> u64 {
        let cutoff = now.0.saturating_sub(self.retention.age.as_micros() as u64);
        self.window
            .iter()
            .find(|e| e.time.0 >= cutoff || self.floor.is_some_and(|f| e.seq >= f))
            .map_or(self.last + 1, |e| e.seq)
    }

    /// At most `max` of the events [`EventLog::after`] gives, with the age rule
    /// applied at `now`, and the oldest event served: a reader reads the window a piece
    /// at a time, so that it holds no more than a piece (and nothing the age rule has
    /// since dropped).
    pub fn chunk_at(
        &self,
        after: u64,
        now: Ts,
        max: usize,
    ) -> Result<(Vec<Arc<Envelope>>, u64), EventsGone> {
        let served = self.oldest_live(now);
        Ok((self.after_from(after, served, max)?, served))
    }

    fn after_from(
        &self,
        after: u64,
        served: u64,
        max: usize,
    ) -> Result<Vec<Arc<Envelope>>, EventsGone> {
        let oldest = self.oldest_seq();
        if after >= self.last {
            return Ok(Vec::new());
        }
        if after + 1 < served {
            return Err(EventsGone { oldest: served });
        }
        // The window holds a dense run of numbers: the index is arithmetic.
        let from = (after + 1 - oldest) as usize;
        Ok(self.window.range(from..).take(max).cloned().collect())
    }

    /// The log for a snapshot.
    pub fn snapshot(&self) -> EventLogSnapshot {
        EventLogSnapshot {
            epoch: self.epoch.as_deref().map(str::to_owned),
            last: self.last,
            floor: self.floor,
            events: self
                .window
                .iter()
                .map(|e| (e.seq, e.time, e.data.clone()))
                .collect(),
        }
    }

    /// The log from a snapshot; the wire texts are made again when read.
    pub fn restore(retention: Retention, snap: EventLogSnapshot) -> EventLog {
        let epoch: Option<Arc<str>> = snap.epoch.map(Arc::from);
        let e = epoch.clone().unwrap_or_else(|| Arc::from("0"));
        let window: VecDeque<Arc<Envelope>> = snap
            .events
            .into_iter()
            .map(|(seq, time, data)| Arc::new(Envelope::new(e.clone(), seq, time, data)))
            .collect();
        EventLog {
            epoch,
            last: snap.last,
            bytes: window.iter().map(|e| e.wire_bound()).sum(),
            window,
            floor: snap.floor,
            retention,
        }
    }
}

/// A short name from a seed: 12 hex digits of a mixed 64-bit value.
fn epoch_name(seed: u64) -> String {
    // splitmix64's finalizer: neighbouring seeds give unrelated names.
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    format!("{:012x}", z & 0xffff_ffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(n: &str) -> EventData {
        EventData::NodeLost { node: n.into() }
    }

    fn log(count: usize, age_secs: u64) -> EventLog {
        EventLog::new(Retention {
            count,
            age: Duration::from_secs(age_secs),
            bytes: 1 << 20,
            max_held: 10,
        })
    }

    #[test]
    fn the_bytes_held_bound_the_window_too() {
        let mut l = log(100, 3600);
        l.retention.bytes = 1000;
        for i in 0..50u64 {
            l.record(vec![ev("x")], Ts(i));
        }
        let one = l.after(49).map(|_| ()).ok();
        assert_eq!(one, Some(()));
        let per = l.window.back().map(|e| e.wire_bound()).unwrap_or(1);
        assert_eq!(l.len(), 1000 / per, "as many as fit in 1000 bytes");
        assert!(l.bytes <= 1000);
    }

    #[test]
    fn the_wire_text_is_made_by_the_first_reader_and_shared() {
        let mut l = log(100, 3600);
        let made = l.record(vec![ev("a"), ev("b")], Ts(1_000_000));
        let charged = l.bytes;
        assert!(
            made.iter().all(|e| !e.is_encoded()),
            "numbering encodes nothing"
        );
        let held = l.after(0).expect("held");
        let text = held[0].json();
        assert!(
            made[0].is_encoded(),
            "the window holds the envelope the reader made"
        );
        assert!(std::ptr::eq(text, made[0].json()), "made once, shared");
        assert!(!made[1].is_encoded(), "an event nobody read stays unmade");
        assert_eq!(
            l.bytes, charged,
            "the window charged the bound before any read"
        );
        assert!(text.len() <= made[0].wire_bound());
    }

    #[test]
    fn numbers_densely_from_one_and_serves_after() {
        let mut l = log(100, 3600);
        l.begin(7);
        let a = l.record(vec![ev("a"), ev("b")], Ts(1_000_000));
        let b = l.record(vec![ev("c")], Ts(2_000_000));
        assert_eq!(a.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(b[0].seq, 3);
        let after1: Vec<u64> = l.after(1).expect("held").iter().map(|e| e.seq).collect();
        assert_eq!(after1, vec![2, 3]);
        assert!(l.after(3).expect("held").is_empty());
        assert!(l.after(99).expect("future is empty").is_empty());
        let v: serde_json::Value = serde_json::from_str(b[0].json()).expect("json");
        let epoch = l.epoch().expect("epoch").to_string();
        assert_eq!(v["id"], format!("{epoch}-3"));
        assert_eq!(v["type"], "node.lost");
        assert_eq!(v["seq"], 3);
        assert_eq!(v["epoch"], epoch);
        assert_eq!(v["time"], "1970-01-01T00:00:02.000Z");
        assert_eq!(v["data"]["node"], "c");
    }

    #[test]
    fn count_and_age_bound_the_window_and_older_readers_are_told() {
        let mut l = log(3, 10);
        for i in 0..5u64 {
            l.record(vec![ev("x")], Ts(i * 1_000_000));
        }
        assert_eq!(l.oldest_seq(), 3);
        assert_eq!(l.after(1), Err(EventsGone { oldest: 3 }));
        assert_eq!(l.after(2).expect("held").len(), 3);
        // Twenty seconds later everything older than ten seconds is gone.
        l.record(vec![ev("y")], Ts(24_000_000));
        assert_eq!(l.oldest_seq(), 6);
        assert_eq!(l.after(4), Err(EventsGone { oldest: 6 }));
    }

    #[test]
    fn a_retain_floor_holds_events_up_to_the_hard_cap() {
        let mut l = log(2, 3600);
        l.set_retain_floor(Some(2));
        for i in 0..8u64 {
            l.record(vec![ev("x")], Ts(i));
        }
        assert_eq!(l.oldest_seq(), 2, "held from the floor on");
        for i in 8..20u64 {
            l.record(vec![ev("x")], Ts(i));
        }
        assert_eq!(l.len(), 10, "never more than max_held");
        l.set_retain_floor(None);
        l.record(vec![ev("x")], Ts(21));
        assert_eq!(l.len(), 2);
    }

    #[test]
    fn a_snapshot_keeps_the_window_the_numbering_and_the_epoch() {
        let mut l = log(100, 3600);
        l.begin(42);
        l.record(vec![ev("a"), ev("b")], Ts(1_234_567));
        let bytes = rmp_serde::to_vec_named(&l.snapshot()).expect("encodes");
        let back: EventLogSnapshot = rmp_serde::from_slice(&bytes).expect("decodes");
        let mut r = EventLog::restore(l.retention(), back);
        assert_eq!(r.epoch(), l.epoch());
        let a: Vec<_> = l
            .after(0)
            .expect("held")
            .iter()
            .map(|e| e.json().to_owned())
            .collect();
        let b: Vec<_> = r
            .after(0)
            .expect("held")
            .iter()
            .map(|e| e.json().to_owned())
            .collect();
        assert_eq!(a, b);
        assert_eq!(r.after(0).expect("held")[0].time, Ts(1_234_567));
        assert_eq!(r.record(vec![ev("c")], Ts(2_000_000))[0].seq, 3);
    }

    #[test]
    fn epochs_differ_by_seed() {
        assert_ne!(epoch_name(1), epoch_name(2));
        assert_eq!(epoch_name(1).len(), 12);
    }
}
