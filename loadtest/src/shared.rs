//! What every task of a run shares: the run's clock, the send instant of each task
//! (a lock-free table indexed by the task's sequence number), and live counters.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

/// Live counters, for progress lines and the report.
#[derive(Debug, Default)]
pub struct Counters {
    /// Tasks the hub answered 201 for.
    pub created: AtomicU64,
    /// Creates that failed (transport error or not 201).
    pub create_errors: AtomicU64,
    /// Offer frames received.
    pub offers: AtomicU64,
    /// First offers of a task received.
    pub first_offers: AtomicU64,
    /// Accepts answered with the task.
    pub accepted: AtomicU64,
    /// Accepts or declines the hub refused (the offer had ended).
    pub refused: AtomicU64,
    /// Declines answered.
    pub declined: AtomicU64,
    /// Offers that ended by expiry (`offer_ended` expired).
    pub expired: AtomicU64,
    /// Completes answered.
    pub completed: AtomicU64,
    /// Tasks agents hold now (accepted, complete not yet answered).
    pub held: AtomicU64,
    /// Offers pending on agents now.
    pub pending_offers: AtomicU64,
    /// Frames received by agents.
    pub frames_in: AtomicU64,
    /// Errors nobody expected (an error frame with no request, a refused set_state...).
    pub unexpected: AtomicU64,
    /// Agents connected and Ready.
    pub ready_agents: AtomicUsize,
    /// Agents that went Not Ready with nothing pending at the end.
    pub quiesced_agents: AtomicUsize,
    /// Agents whose connection failed or closed early.
    pub failed_agents: AtomicUsize,
}

impl Counters {
    /// Adds one.
    pub fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one away (never below zero).
    pub fn drop_one(c: &AtomicU64) {
        let _ = c.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
    }

    /// Adds one to a usize counter.
    pub fn bump_usize(c: &AtomicUsize) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads one.
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// The run's shared state.
#[derive(Debug)]
pub struct Shared {
    /// The run's time origin.
    pub t0: Instant,
    /// Prefix of every idempotency key of this run (`lt-<nonce>-<seq>`).
    pub key_prefix: String,
    /// Nanoseconds since `t0` (plus one; 0 means not sent) at which each task's create
    /// request was written, by sequence number.
    send_ns: Vec<AtomicU64>,
    /// Live counters.
    pub counters: Counters,
    /// When the last complete was answered, in ns since `t0`.
    pub last_completion_ns: AtomicU64,
    /// Completes answered in each second since `t0`.
    timeline: Vec<AtomicU64>,
    /// The slowest create -> first offer of the tasks created in each second since
    /// `t0`, in ns, and how many of them took over a millisecond: where in the run a
    /// tail comes from (a burst of other work on the hub shows as a few bad seconds).
    c2o_max: Vec<AtomicU64>,
    c2o_slow: Vec<AtomicU64>,
}

impl Shared {
    /// Shared state for a run of at most `tasks` tasks lasting at most `secs` seconds
    /// (the completion timeline's length; later completions go in its last second).
    pub fn new(tasks: usize, secs: usize, nonce: &str) -> Shared {
        Shared {
            timeline: (0..secs.max(1)).map(|_| AtomicU64::new(0)).collect(),
            c2o_max: (0..secs.max(1)).map(|_| AtomicU64::new(0)).collect(),
            c2o_slow: (0..secs.max(1)).map(|_| AtomicU64::new(0)).collect(),
            t0: Instant::now(),
            key_prefix: format!("lt-{nonce}-"),
            send_ns: (0..tasks).map(|_| AtomicU64::new(0)).collect(),
            counters: Counters::default(),
            last_completion_ns: AtomicU64::new(0),
        }
    }

    /// Nanoseconds since the run started.
    pub fn now_ns(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }

    /// How many tasks the run may create.
    pub fn capacity(&self) -> usize {
        self.send_ns.len()
    }

    /// The idempotency key of task `seq`.
    pub fn key(&self, seq: u64) -> String {
        format!("{}{seq}", self.key_prefix)
    }

    /// The sequence number in one of this run's keys.
    pub fn seq_of(&self, key: &str) -> Option<u64> {
        key.strip_prefix(&self.key_prefix)?.parse().ok()
    }

    /// Notes that task `seq`'s create is being written now.
    pub fn mark_sent(&self, seq: u64, ns: u64) {
        if let Some(slot) = self.send_ns.get(seq as usize) {
            slot.store(ns + 1, Ordering::Release);
        }
    }

    /// When task `seq`'s create was written, if it was.
    pub fn sent_ns(&self, seq: u64) -> Option<u64> {
        let v = self.send_ns.get(seq as usize)?.load(Ordering::Acquire);
        (v > 0).then(|| v - 1)
    }

    /// Notes a complete answered at `ns`.
    pub fn mark_completion(&self, ns: u64) {
        self.last_completion_ns.fetch_max(ns, Ordering::Relaxed);
        let i = ((ns / 1_000_000_000) as usize).min(self.timeline.len() - 1);
        self.timeline[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Notes a create -> first offer of `ns` for a create written at `sent_ns`.
    pub fn mark_c2o(&self, sent_ns: u64, ns: u64) {
        let i = ((sent_ns / 1_000_000_000) as usize).min(self.c2o_max.len() - 1);
        self.c2o_max[i].fetch_max(ns, Ordering::Relaxed);
        if ns > 1_000_000 {
            self.c2o_slow[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Per second of creates from `from` for `n` seconds: the slowest create -> first
    /// offer in µs, and how many took over 1 ms.
    pub fn c2o_timeline(&self, from: usize, n: usize) -> (Vec<u64>, Vec<u64>) {
        let take = |v: &[AtomicU64], div: u64| {
            v.iter()
                .skip(from)
                .take(n)
                .map(|a| a.load(Ordering::Relaxed) / div)
                .collect()
        };
        (take(&self.c2o_max, 1_000), take(&self.c2o_slow, 1))
    }

    /// Completes answered in each second since the run started, up to `secs`.
    pub fn timeline(&self, secs: usize) -> Vec<u64> {
        self.timeline
            .iter()
            .take(secs)
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_foreign_keys_are_ignored() {
        let s = Shared::new(10, 5, "abc");
        assert_eq!(s.seq_of(&s.key(7)), Some(7));
        assert_eq!(s.seq_of("lt-other-7"), None);
        assert_eq!(s.sent_ns(3), None);
        s.mark_sent(3, 0);
        assert_eq!(s.sent_ns(3), Some(0));
        s.mark_sent(99, 5);
        assert_eq!(s.sent_ns(99), None);
    }
}
