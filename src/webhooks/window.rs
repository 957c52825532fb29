//! One endpoint's window of events between its position and what it has read: which
//! may be sent now, and how far the position may move. Pure.
//!
//! Events of one task, and of one agent, go one at a time in sequence order: an event
//! may be sent only when no earlier event still undelivered shares its task or its
//! agent. Unrelated events go in parallel, up to the endpoint's bound. The position
//! moves over a prefix of finished events only, so a restart from it repeats what was
//! in flight and skips nothing.

use crate::ids::{AgentId, TaskId};
use std::collections::{HashSet, VecDeque};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Waiting,
    InFlight,
    Finished,
}

#[derive(Debug)]
struct Slot {
    seq: u64,
    task: Option<TaskId>,
    agent: Option<AgentId>,
    stage: Stage,
}

/// The window.
#[derive(Debug)]
pub struct Window {
    slots: VecDeque<Slot>,
    position: u64,
    in_flight: usize,
}

impl Window {
    /// An empty window at `position` (every event up to it is done).
    pub fn new(position: u64) -> Window {
        Window {
            slots: VecDeque::new(),
            position,
            in_flight: 0,
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

    /// Adds the next event; `wanted` false (not of the endpoint's types) makes it
    /// finished at once.
    pub fn push(&mut self, seq: u64, task: Option<TaskId>, agent: Option<AgentId>, wanted: bool) {
        let stage = if wanted {
            Stage::Waiting
        } else {
            Stage::Finished
        };
        self.slots.push_back(Slot {
            seq,
            task: wanted.then_some(task).flatten(),
            agent: wanted.then_some(agent).flatten(),
            stage,
        });
        self.settle();
    }

    /// The events to send now, in order (marked in flight), keeping at most
    /// `max_in_flight` in flight.
    pub fn take_ready(&mut self, max_in_flight: usize) -> Vec<u64> {
        let mut out = Vec::new();
        let mut tasks: HashSet<TaskId> = HashSet::new();
        let mut agents: HashSet<AgentId> = HashSet::new();
        for s in self.slots.iter_mut() {
            if self.in_flight >= max_in_flight {
                break;
            }
            if s.stage == Stage::Finished {
                continue;
            }
            let blocked = s.task.is_some_and(|t| tasks.contains(&t))
                || s.agent.as_ref().is_some_and(|a| agents.contains(a));
            if s.stage == Stage::Waiting && !blocked {
                s.stage = Stage::InFlight;
                self.in_flight += 1;
                out.push(s.seq);
            }
            // Whatever is not finished holds back later events of its task and agent.
            if let Some(t) = s.task {
                tasks.insert(t);
            }
            if let Some(a) = &s.agent {
                agents.insert(a.clone());
            }
        }
        out
    }

    /// An event in flight is done (delivered, or expired).
    pub fn finish(&mut self, seq: u64) {
        if let Some(s) = self.slots.iter_mut().find(|s| s.seq == seq) {
            if s.stage == Stage::InFlight {
                self.in_flight -= 1;
            }
            s.stage = Stage::Finished;
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
        w.push(12, task(2), agent("a"), true);
        w.push(13, task(1), agent("b"), true);
        w.push(14, None, agent("a"), true);
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
}
