//! What happens to a task as it waits in a queue: the queue's escalation timers, armed
//! anew (in a new epoch) each time the task starts waiting, and what each does when it
//! fires: the priority rises, the required skill levels fall, or the task overflows to
//! another queue. It is kept apart because only timers drive it and it changes only tasks
//! still waiting; the commands merely start a new wait.

use super::*;

impl Book {
    /// Arms the escalation timers of `queue` for a task that starts waiting in it.
    pub(super) fn arm_escalation(
        &mut self,
        tx: &mut Tx,
        task_id: TaskId,
        queue: &QueueId,
        now: Ts,
    ) {
        let Some(e) = self
            .rules
            .queues
            .get(queue)
            .and_then(|q| q.escalation.clone())
        else {
            return;
        };
        // A new epoch: timers armed for an earlier wait (another queue) do nothing.
        let Some(t) = self.tasks.get_mut(&task_id).map(Arc::make_mut) else {
            return;
        };
        t.epoch += 1;
        let (epoch, has_levels) = (t.epoch, !t.skill_levels.is_empty());
        if let Some((every, _, _)) = e.priority {
            self.arm(tx, now.plus(every), Timer::Priority(task_id, epoch));
        }
        if let Some((every, _)) = e.relax {
            if has_levels {
                self.arm(tx, now.plus(every), Timer::Relax(task_id, epoch));
            }
        }
        if let Some((after, _)) = e.overflow {
            self.arm(tx, now.plus(after), Timer::Overflow(task_id, epoch));
        }
    }

    /// The task's queue's escalation, while the task is still waiting for an agent
    /// (queued, or offered and not yet accepted).
    fn waiting_escalation(&self, task_id: TaskId, epoch: u32) -> Option<(Arc<Task>, Escalation)> {
        let t = self.tasks.get(&task_id)?;
        if t.epoch != epoch || !matches!(t.state, TaskState::Queued | TaskState::Offered { .. }) {
            return None;
        }
        let e = self.rules.queues.get(&t.queue)?.escalation.clone()?;
        Some((t.clone(), e))
    }

    /// Refiles a queued task after `change`; an offered one just changes.
    fn refile(&mut self, task_id: TaskId, change: impl FnOnce(&mut Task)) -> bool {
        let Some(t) = self.tasks.get(&task_id) else {
            return false;
        };
        let queued = t.state == TaskState::Queued;
        if queued {
            let (bucket, place) = bucket_and_place(t);
            if let Some(q) = self.queues.get_mut(&t.queue) {
                q.remove(&bucket, &place);
            }
        }
        let Some(t) = self.tasks.get_mut(&task_id) else {
            return false;
        };
        change(Arc::make_mut(t));
        if queued {
            let t = Arc::clone(t);
            self.file_task(&t);
        }
        queued
    }

    /// One step of a waiting task's priority; the next step is armed from this one's
    /// time (not from `now`), so that late ticks do not shift the schedule.
    pub(super) fn escalate_priority(&mut self, tx: &mut Tx, task_id: TaskId, epoch: u32, at: Ts) {
        let Some((t, e)) = self.waiting_escalation(task_id, epoch) else {
            return;
        };
        let Some((every, step, max)) = e.priority else {
            return;
        };
        if t.priority < max {
            self.refile(task_id, |t| t.priority = (t.priority + step).min(max));
            tx.queues.insert(t.queue.clone());
        }
        if t.priority + step < max {
            self.arm(tx, at.plus(every), Timer::Priority(task_id, epoch));
        }
    }

    /// One step down of a waiting task's required skill levels; agents who now
    /// qualify may take it at once.
    pub(super) fn relax_levels(&mut self, tx: &mut Tx, task_id: TaskId, epoch: u32, at: Ts) {
        let Some((t, e)) = self.waiting_escalation(task_id, epoch) else {
            return;
        };
        let Some((every, by)) = e.relax else {
            return;
        };
        if t.skill_levels.values().all(|l| *l <= 1) {
            return;
        }
        let queued = self.refile(task_id, |t| {
            for l in t.skill_levels.values_mut() {
                *l = l.saturating_sub(by).max(1);
            }
        });
        if queued {
            tx.wake.push_back(Wake::Task(task_id));
        }
        if self
            .tasks
            .get(&task_id)
            .is_some_and(|t| t.skill_levels.values().any(|l| *l > 1))
        {
            self.arm(tx, at.plus(every), Timer::Relax(task_id, epoch));
        }
    }

    /// A task still waiting after its queue's overflow time moves to the overflow
    /// queue, keeping its age and place; one being offered at that moment is looked
    /// at again just after the offer's deadline (accepted by then, it overflows no
    /// more; back in line, it moves then, not a whole overflow period later).
    pub(super) fn overflow(&mut self, tx: &mut Tx, task_id: TaskId, epoch: u32, at: Ts, now: Ts) {
        let Some((t, e)) = self.waiting_escalation(task_id, epoch) else {
            return;
        };
        let Some((after, to)) = e.overflow else {
            return;
        };
        if t.state != TaskState::Queued {
            let again = match &t.state {
                // Just after the deadline: its `Offer` timer (at the deadline) fires
                // first, so the task is back in line or in an agent's hands by then.
                TaskState::Offered { deadline, .. } => (*deadline)
                    .max(now)
                    .plus(std::time::Duration::from_millis(1)),
                _ => at.plus(after),
            };
            self.arm(tx, again, Timer::Overflow(task_id, epoch));
            return;
        }
        let Some(rules) = self.rules.queues.get(&to) else {
            return;
        };
        if !rules.channels.contains(&t.channel) {
            return;
        }
        let extra = rules.skills.clone();
        tx.queues.insert(t.queue.clone());
        self.refile(task_id, |t| {
            t.queue = to.clone();
            t.skills.extend(extra);
            t.skills.sort();
            t.skills.dedup();
        });
        if let Some(t) = self.tasks.get(&task_id) {
            tx.events.push(queued_event(t, true));
        }
        tx.queues.insert(to.clone());
        self.arm_escalation(tx, task_id, &to, now);
        tx.wake.push_back(Wake::Task(task_id));
    }
}
