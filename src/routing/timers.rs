//! The book's timers: what may fall due (offer deadlines, grace periods, wrap-ups,
//! re-offer times, away offers, escalation steps), arming one, and firing those due at a
//! given time. Time passing is the book's second input beside commands: `expire_due` is
//! its entry point as `execute` is for commands, and each timer that fires is handed to
//! the part of the book that owns what it ends, so this file holds only the dispatch.

use super::*;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(super) enum Timer {
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

impl Book {
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
                    self.reoffer_time_passed(&mut tx, task_id, agent, at);
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

    pub(super) fn arm(&mut self, tx: &mut Tx, at: Ts, timer: Timer) {
        if let Timer::Reoffer(task_id, agent) = &timer {
            let until = self
                .reoffer_until
                .entry((*task_id, agent.clone()))
                .or_insert(at);
            *until = (*until).max(at);
        }
        self.timers.insert((at, timer));
        if tx.earliest_timer.is_none_or(|t| at < t) {
            tx.earliest_timer = Some(at);
        }
    }
}
