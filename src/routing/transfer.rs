//! Moving a task that is already someone's: a transfer (to a queue or to one agent), a
//! consult (a warm transfer: the task stays with the agent who asked until the target
//! accepts), the end of a transfer or consult in flight, and taking a live task back
//! from its queue, its offer or its agent, which a cancel does too. These are kept apart
//! because they act on tasks in flight, with rules (the transfer limit, the handoff, who
//! is told what) that routing a new task never needs.

use super::*;
use crate::agent::PendingOffer;

impl Book {
    /// Takes a live task back from wherever it is, for a cancel or a transfer: out of
    /// its queue, its offer withdrawn, or out of the hands of the agent who had it in
    /// progress (its consult ended, the agent to wrap-up as after `complete`). Returns
    /// that agent; telling it is the caller's, since a cancel and a transfer say
    /// different things. The task's own state is the caller's to set.
    pub(super) fn take_back(
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
                // A consult's offer ends for the same reason as any ringing offer.
                let reason = match why {
                    TakeBack::Cancel => WithdrawReason::Cancelled,
                    TakeBack::Transfer => WithdrawReason::Transferred,
                };
                self.end_consult(tx, task_id, now, true, reason);
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
    pub(super) fn transfer(
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
                // It would come straight back past its own exclusion (or, with a
                // wrap-up, be lost to its holder and refused): nothing to transfer.
                if matches!(&task.state, TaskState::Assigned { agent_id, .. } if agent_id == target)
                {
                    return Err(HubError::invalid(
                        "to_agent",
                        "the task is already with this agent",
                    ));
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
        let target = match to {
            TransferTo::Queue {
                queue,
                priority,
                head,
                ..
            } => {
                t.queue = queue;
                if let Some(p) = priority {
                    t.priority = p;
                }
                if let Some(s) = new_skills {
                    // A level is a required skill's minimum: it goes with its skill.
                    t.skill_levels.retain(|k, _| s.contains(k));
                    t.skills = s;
                }
                // The head of the queue it goes to, or not: a head it was sent to in
                // an earlier queue (or earlier in this one) is not carried along.
                t.head = head;
                None
            }
            TransferTo::Agent(target) => {
                // Told how it ended: the agent who made the transfer, not one whose
                // task a supervisor or an integration moved (told `task_transferred`).
                t.handoff = Some(crate::task::Handoff {
                    from: from.clone().filter(|a| by_agent.as_ref() == Some(a)),
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
        // Waiting afresh, wherever it waited before (another queue, its own, an agent's
        // hands): that queue's escalation starts over, as for a new wait. The timers of
        // a first wait ended while an agent had it, or ran out (a priority at its
        // maximum arms no more), and a task handed to an agent who does not take it
        // (declined, expired, not there) falls back to the queue: it must still rise
        // and overflow there.
        let q = t.queue.clone();
        self.arm_escalation(tx, task_id, &q, now);
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

    /// A warm transfer: the target gets an ordinary offer of the task, which stays in
    /// the asking agent's In Progress list until the target accepts (see the
    /// `Effect::Assigned` and `Effect::Release` handling).
    pub(super) fn consult(
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
        let timeout = self.offer_timeout(&t.queue);
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
        self.book_offer(
            tx,
            mark,
            super::offers::Made {
                offer_id,
                task_id,
                agent_id: to.clone(),
                queue,
                channel,
                deadline,
            },
        );
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
    /// withdrawn, for `reason`. With `tell`, the agent who asked gets `transfer_ended`
    /// `withdrawn` (it did not ask for the end itself).
    pub(super) fn end_consult(
        &mut self,
        tx: &mut Tx,
        task_id: TaskId,
        now: Ts,
        tell: bool,
        reason: WithdrawReason,
    ) {
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
                        reason,
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
    pub(super) fn end_handoff(
        &mut self,
        tx: &mut Tx,
        task_id: TaskId,
        to: &AgentId,
        result: TransferResult,
    ) {
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
}

/// Why a live task is taken back from wherever it is ([`Book::take_back`]).
#[derive(Clone, Copy)]
pub(super) enum TakeBack {
    Cancel,
    Transfer,
}
