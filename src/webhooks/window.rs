//! One endpoint's window of events between its position and what it has read: which
//! may be sent now, and how far the position may move. Pure.
//!
//! Events of one task, and of one agent, go one at a time in sequence order: an event
//! may be sent only when no earlier event still undelivered shares its task or its
//! agent. Unrelated events go in parallel, up to the endpoint's bound. The position
//! moves over a prefix of finished events only, so a restart from it repeats what was
//! in flight and skips nothing.
//!
//! Every step costs O(log n) at most, whatever the window holds (a full window of
//! 1,024 events is the normal state of an endpoint that lags): each unfinished event
//! knows the next unfinished one of its task and of its agent (a chain per key), and
//! counts the earlier ones it waits for; finishing an event releases its successors.
//! Agents are keyed by a hash of their id: two agents that collide are only ordered
//! with each other, which delays, never reorders or skips.

use crate::ids::{AgentId, TaskId};
use std::collections::hash_map::{DefaultHasher, Entry};
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::{Hash, Hasher};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Waiting,
    InFlight,
    Finished,
}

/// Keys an event may have: its task and up to two agents.
const KEYS: usize = 3;

/// A task or an agent: what orders events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Task(TaskId),
    Agent(u64),
}

#[derive(Debug)]
struct Slot {
    seq: u64,
    /// Its task, and its agents (two for a transfer from one agent to another).
    keys: [Option<Key>; KEYS],
    /// The next unfinished event of each key, once one was pushed.
    next: [Option<u64>; KEYS],
    /// Earlier unfinished events of its task or agent.
    waits_for: u8,
    stage: Stage,
}

/// The window.
#[derive(Debug)]
pub struct Window {
    slots: VecDeque<Slot>,
    position: u64,
    in_flight: usize,
    /// Events not yet finished (waiting or in flight).
    unfinished: usize,
    /// The last unfinished event of each key.
    last: HashMap<Key, u64>,
    /// Waiting events whose predecessors are all finished, lowest seq first.
    ready: BinaryHeap<std::cmp::Reverse<u64>>,
}

fn agent_key(a: &AgentId) -> Key {
    let mut h = DefaultHasher::new();
    a.hash(&mut h);
    Key::Agent(h.finish())
}

impl Window {
    /// An empty window at `position` (every event up to it is done).
    pub fn new(position: u64) -> Window {
        Window {
            slots: VecDeque::new(),
            position,
            in_flight: 0,
            unfinished: 0,
            last: HashMap::new(),
            ready: BinaryHeap::new(),
        }
    }

    /// Events held (not yet passed by the position).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Every event up to this one is done.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Events in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Events not yet finished: waiting for their turn, in flight, or waiting for a
    /// retry. (The finished ones held behind an unfinished one are not counted: what an
    /// endpoint reads ahead is bounded by these, so one event stuck in its retries
    /// never stops the others.)
    pub fn unfinished(&self) -> usize {
        self.unfinished
    }

    fn index(&self, seq: u64) -> Option<usize> {
        // Seqs are pushed in increasing order: dense in practice, searched anyway.
        let first = self.slots.front()?.seq;
        let guess = seq.checked_sub(first)? as usize;
        if self.slots.get(guess).is_some_and(|s| s.seq == seq) {
            return Some(guess);
        }
        self.slots.binary_search_by_key(&seq, |s| s.seq).ok()
    }

    /// Adds the next event (its seq larger than any pushed before); `wanted` false
    /// (not of the endpoint's types) makes it finished at once.
    pub fn push(&mut self, seq: u64, task: Option<TaskId>, agent: Option<&AgentId>, wanted: bool) {
        self.push_with_agents(seq, task, [agent, None], wanted);
    }

    /// The same for an event about two agents (`task.transferred`: from one, to the
    /// other): it goes in order with the events of each.
    pub fn push_with_agents(
        &mut self,
        seq: u64,
        task: Option<TaskId>,
        agents: [Option<&AgentId>; 2],
        wanted: bool,
    ) {
        if !wanted {
            self.slots.push_back(Slot {
                seq,
                keys: [None; KEYS],
                next: [None; KEYS],
                waits_for: 0,
                stage: Stage::Finished,
            });
            self.settle();
            return;
        }
        let (a, b) = (agents[0].map(agent_key), agents[1].map(agent_key));
        // One key once: a transfer from an agent to the same agent has one.
        let keys = [task.map(Key::Task), a, b.filter(|b| Some(*b) != a)];
        let mut waits_for = 0;
        for key in keys.into_iter().flatten() {
            if let Some(prev) = self.last.insert(key, seq) {
                // The previous event of this key is unfinished (finishing removes it).
                if let Some(i) = self.index(prev) {
                    let p = &mut self.slots[i];
                    if let Some(at) = p.keys.iter().position(|k| *k == Some(key)) {
                        p.next[at] = Some(seq);
                        waits_for += 1;
                    }
                }
            }
        }
        self.slots.push_back(Slot {
            seq,
            keys,
            next: [None; KEYS],
            waits_for,
            stage: Stage::Waiting,
        });
        self.unfinished += 1;
        if waits_for == 0 {
            self.ready.push(std::cmp::Reverse(seq));
        }
    }

    /// The next event to send now (marked in flight), the lowest seq first, while
    /// fewer than `max_in_flight` are in flight.
    pub fn next_ready(&mut self, max_in_flight: usize) -> Option<u64> {
        if self.in_flight >= max_in_flight {
            return None;
        }
        while let Some(std::cmp::Reverse(seq)) = self.ready.pop() {
            // Anything finished while it waited here is passed over.
            let Some(i) = self.index(seq) else { continue };
            if self.slots[i].stage != Stage::Waiting {
                continue;
            }
            self.slots[i].stage = Stage::InFlight;
            self.in_flight += 1;
            return Some(seq);
        }
        None
    }

    /// The events to send now, in order (marked in flight), keeping at most
    /// `max_in_flight` in flight.
    pub fn take_ready(&mut self, max_in_flight: usize) -> Vec<u64> {
        std::iter::from_fn(|| self.next_ready(max_in_flight)).collect()
    }

    /// An event in flight is done (delivered, or expired).
    pub fn finish(&mut self, seq: u64) {
        let Some(i) = self.index(seq) else { return };
        let s = &mut self.slots[i];
        match s.stage {
            Stage::Finished => return,
            Stage::InFlight => self.in_flight -= 1,
            Stage::Waiting => {}
        }
        s.stage = Stage::Finished;
        self.unfinished -= 1;
        let (keys, next) = (s.keys, s.next);
        for k in 0..KEYS {
            let Some(key) = keys[k] else { continue };
            match next[k] {
                // Its successor of this key waits for one event fewer.
                Some(n) => {
                    if let Some(j) = self.index(n) {
                        let succ = &mut self.slots[j];
                        succ.waits_for = succ.waits_for.saturating_sub(1);
                        if succ.waits_for == 0 && succ.stage == Stage::Waiting {
                            self.ready.push(std::cmp::Reverse(n));
                        }
                    }
                }
                // It was the last of its key: the key is free.
                None => {
                    if let Entry::Occupied(e) = self.last.entry(key) {
                        if *e.get() == seq {
                            e.remove();
                        }
                    }
                }
            }
        }
        self.settle();
    }

    fn settle(&mut self) {
        while self
            .slots
            .front()
            .is_some_and(|s| s.stage == Stage::Finished)
        {
            if let Some(s) = self.slots.pop_front() {
                self.position = s.seq;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn task(n: u128) -> Option<TaskId> {
        Some(TaskId(uuid::Uuid::from_u128(n)))
    }

    fn agent(a: &str) -> Option<AgentId> {
        Some(AgentId::from(a))
    }

    #[test]
    fn one_task_and_one_agent_go_in_order_others_in_parallel() {
        let mut w = Window::new(10);
        w.push(11, task(1), None, true);
        w.push(12, task(2), agent("a").as_ref(), true);
        w.push(13, task(1), agent("b").as_ref(), true);
        w.push(14, None, agent("a").as_ref(), true);
        w.push(15, None, None, false);
        w.push(16, task(3), None, true);
        assert_eq!(w.take_ready(8), vec![11, 12, 16]);
        // 13 waits for 11 (task 1), 14 for 12 (agent a).
        w.finish(12);
        assert_eq!(w.take_ready(8), vec![14]);
        assert_eq!(w.position(), 10);
        w.finish(11);
        assert_eq!(w.position(), 12);
        assert_eq!(w.take_ready(8), vec![13]);
        w.finish(16);
        w.finish(14);
        assert_eq!(w.position(), 12);
        w.finish(13);
        assert_eq!(w.position(), 16);
        assert!(w.is_empty());
    }

    #[test]
    fn a_transfer_goes_in_order_with_both_agents_events() {
        let mut w = Window::new(0);
        w.push(1, task(1), agent("a").as_ref(), true);
        w.push(2, task(2), agent("b").as_ref(), true);
        // Task 3 moves from agent a to agent b: after both agents' earlier events...
        w.push_with_agents(3, task(3), [agent("a").as_ref(), agent("b").as_ref()], true);
        // ...and before their later ones.
        w.push(4, None, agent("a").as_ref(), true);
        w.push(5, None, agent("b").as_ref(), true);
        assert_eq!(w.take_ready(8), vec![1, 2]);
        w.finish(1);
        assert_eq!(
            w.take_ready(8),
            Vec::<u64>::new(),
            "3 waits for agent b's 2"
        );
        w.finish(2);
        assert_eq!(w.take_ready(8), vec![3]);
        w.finish(3);
        assert_eq!(w.take_ready(8), vec![4, 5]);
        // A transfer to the same agent has one agent key.
        let mut w = Window::new(0);
        w.push_with_agents(1, task(1), [agent("a").as_ref(), agent("a").as_ref()], true);
        w.push(2, None, agent("a").as_ref(), true);
        assert_eq!(w.take_ready(8), vec![1]);
        w.finish(1);
        assert_eq!(w.take_ready(8), vec![2]);
        assert_eq!(w.position(), 1);
    }

    #[test]
    fn the_bound_holds() {
        let mut w = Window::new(0);
        for s in 1..=10 {
            w.push(s, task(u128::from(s)), None, true);
        }
        assert_eq!(w.take_ready(3), vec![1, 2, 3]);
        assert_eq!(w.take_ready(3), Vec::<u64>::new());
        w.finish(2);
        assert_eq!(w.take_ready(3), vec![4]);
        assert_eq!(w.position(), 0);
    }

    /// The rule as first written, a scan of the whole window: the model the chains
    /// must agree with.
    struct Model {
        slots: Vec<(u64, Option<TaskId>, Vec<AgentId>, Stage)>,
        in_flight: usize,
    }

    impl Model {
        fn take_ready(&mut self, max: usize) -> Vec<u64> {
            let mut out = Vec::new();
            let mut tasks = HashSet::new();
            let mut agents = HashSet::new();
            for (seq, t, a, stage) in self.slots.iter_mut() {
                if self.in_flight >= max {
                    break;
                }
                if *stage == Stage::Finished {
                    continue;
                }
                let blocked =
                    t.is_some_and(|t| tasks.contains(&t)) || a.iter().any(|a| agents.contains(a));
                if *stage == Stage::Waiting && !blocked {
                    *stage = Stage::InFlight;
                    self.in_flight += 1;
                    out.push(*seq);
                }
                tasks.extend(*t);
                agents.extend(a.iter().cloned());
            }
            out
        }
    }

    #[test]
    fn agrees_with_a_scan_of_the_window_over_random_runs() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        for run in 0..200 {
            let start = run * 7;
            let mut w = Window::new(start);
            let mut m = Model {
                slots: Vec::new(),
                in_flight: 0,
            };
            let mut next = start + 1 + rnd(3);
            let mut flying: Vec<u64> = Vec::new();
            let mut mpos = start;
            let max = 1 + rnd(6) as usize;
            for _ in 0..400 {
                match rnd(3) {
                    0 | 1 if m.slots.len() < 64 => {
                        let t = (rnd(4) > 0).then(|| task(u128::from(rnd(6)))).flatten();
                        let a =
                            (rnd(3) > 0).then(|| AgentId::from(format!("a{}", rnd(5)).as_str()));
                        // Now and then a second agent (a transfer), the same one at times.
                        let b = (a.is_some() && rnd(4) == 0)
                            .then(|| AgentId::from(format!("a{}", rnd(5)).as_str()));
                        let wanted = rnd(5) > 0;
                        w.push_with_agents(next, t, [a.as_ref(), b.as_ref()], wanted);
                        let mut a: Vec<AgentId> = a.into_iter().chain(b).collect();
                        a.dedup();
                        let stage = if wanted {
                            Stage::Waiting
                        } else {
                            Stage::Finished
                        };
                        m.slots.push((
                            next,
                            t.filter(|_| wanted),
                            if wanted { a } else { Vec::new() },
                            stage,
                        ));
                        // Seqs may skip (an event of another epoch's numbering never
                        // comes, but the window must not assume density).
                        next += 1 + rnd(2);
                    }
                    _ => {
                        if !flying.is_empty() {
                            let seq = flying.swap_remove(rnd(flying.len() as u64) as usize);
                            w.finish(seq);
                            if let Some(s) = m.slots.iter_mut().find(|s| s.0 == seq) {
                                s.3 = Stage::Finished;
                                m.in_flight -= 1;
                            }
                        }
                    }
                }
                let got = w.take_ready(max);
                assert_eq!(got, m.take_ready(max), "run {run}");
                flying.extend(&got);
                while m.slots.first().is_some_and(|s| s.3 == Stage::Finished) {
                    mpos = m.slots.remove(0).0;
                }
                assert_eq!(w.position(), mpos, "run {run}");
                assert_eq!(w.in_flight(), m.in_flight);
                assert_eq!(w.len(), m.slots.len());
                assert_eq!(
                    w.unfinished(),
                    m.slots.iter().filter(|s| s.3 != Stage::Finished).count()
                );
            }
        }
    }
}
