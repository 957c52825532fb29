//! An offer's life once the routing has paired a task with an agent: making the offer
//! (the agent reserved, the task out of its queue, a deadline armed), withdrawing it,
//! ending it and remembering how it ended (so that a late answer gets a precise error),
//! finding the live offer an accept or a decline names, and letting an agent who refused
//! a task have it again once the re-offer time has passed. The decision itself (who is
//! paired with what) stays in the module root; this file is what a pairing becomes.

use super::*;
use crate::agent::PendingOffer;

impl Book {
    /// An agent who declined or missed a task may have it again: it moves from the
    /// task's `excluded` to its `passed`, and the task looks for an agent. Unless the
    /// timer that fired (due `at`) was armed for an earlier refusal than the agent's
    /// latest: that one's timer lifts the exclusion.
    pub(super) fn reoffer_time_passed(
        &mut self,
        tx: &mut Tx,
        task_id: TaskId,
        agent: AgentId,
        at: Ts,
    ) {
        let key = (task_id, agent);
        if self
            .reoffer_until
            .get(&key)
            .is_some_and(|until| *until > at)
        {
            return;
        }
        self.reoffer_until.remove(&key);
        let (task_id, agent) = key;
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

    pub(super) fn offer(&mut self, tx: &mut Tx, task_id: TaskId, agent_id: AgentId, now: Ts) {
        let Some(task) = self.tasks.get(&task_id) else {
            return;
        };
        let timeout = self.offer_timeout(&task.queue);
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
        if let Some(q) = self.queues.get_mut(&queue) {
            q.remove(&bucket, &place);
        }
        self.book_offer(
            tx,
            mark,
            Made {
                offer_id,
                task_id,
                agent_id: agent_id.clone(),
                queue,
                channel,
                deadline,
            },
        );
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

    /// How long an offer of a task of `queue` rings.
    pub(super) fn offer_timeout(&self, queue: &QueueId) -> Duration {
        self.rules
            .queues
            .get(queue)
            .map(|q| q.offer_timeout)
            .unwrap_or(Duration::from_secs(15))
    }

    /// Books an offer the agent has taken (`agent_event` made it Reserved, after the
    /// events at `mark`): its `task.offered` event goes before the agent's change it
    /// caused, it counts as pending on its queue, and it is live until its deadline.
    pub(super) fn book_offer(&mut self, tx: &mut Tx, mark: usize, m: Made) {
        tx.events.insert(
            mark,
            EventData::TaskOffered {
                task_id: m.task_id,
                offer_id: m.offer_id,
                agent_id: m.agent_id.clone(),
                queue: m.queue.clone(),
                channel: m.channel,
                deadline: m.deadline,
            },
        );
        if let Some(q) = self.queues.get_mut(&m.queue) {
            q.offers_pending += 1;
        }
        self.offers.insert(
            m.offer_id,
            LiveOffer {
                task_id: m.task_id,
                agent_id: m.agent_id,
                deadline: m.deadline,
            },
        );
        self.arm(tx, m.deadline, Timer::Offer(m.offer_id));
        tx.queues.insert(m.queue);
        tx.stats.offers_made += 1;
    }

    /// Takes a live offer back from its agent (the task is cancelled or transferred
    /// while it rings): the agent is told, and a transfer or consult it was ends.
    pub(super) fn withdraw_offer(
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
    pub(super) fn end_offer(&mut self, tx: &mut Tx, offer_id: OfferId, end: OfferEnd) {
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

    pub(super) fn live_offer(
        &self,
        agent: &AgentId,
        offer_id: OfferId,
    ) -> Result<LiveOffer, HubError> {
        match self.offers.get(&offer_id) {
            Some(o) if &o.agent_id == agent => Ok(o.clone()),
            Some(_) => Err(HubError::NotYourOffer),
            None => match self.ended_offers.get(&offer_id) {
                Some(end) => Err(HubError::OfferEnded(*end)),
                None => Err(HubError::Transition(agent::TransitionError::NoSuchOffer)),
            },
        }
    }
}

/// An offer an agent has taken, for [`Book::book_offer`].
pub(super) struct Made {
    pub offer_id: OfferId,
    pub task_id: TaskId,
    pub agent_id: AgentId,
    pub queue: QueueId,
    pub channel: Channel,
    pub deadline: Ts,
}
