//! What a task's life does to the context: an accept becomes an activity on the
//! customer's most recent open request (or a new one), a transfer hands the activity's
//! customer and request to the next agent, and the journey records each step. Called by
//! the replicated state with the routing book's events, in decision order.

use super::*;

impl ContextBook {
    /// Follows a routing event at `now`.
    pub fn task_event(
        &mut self,
        ev: TaskEvent,
        now: Ts,
        fx: &mut ContextEffects,
    ) -> Option<Activity> {
        match ev {
            TaskEvent::Assigned { task, agent } => Some(self.attach(&task, &agent, now, fx)),
            TaskEvent::AgentOffline { agent } => {
                self.drop_loaded(&agent);
                None
            }
            TaskEvent::Completed { task, agent } => {
                self.task_journey(&task, JourneyKind::TaskCompleted, Actor::agent(&agent), now);
                None
            }
            TaskEvent::Cancelled { task, by } => {
                self.task_journey(&task, JourneyKind::TaskCancelled, by, now);
                None
            }
            TaskEvent::Transferred { task, from, to, by } => {
                let text = match &to {
                    Some(a) => format!("agent:{a}"),
                    None => format!("queue:{}", task.queue),
                };
                self.task_journey_text(&task, JourneyKind::TaskTransferred, by, now, Some(text));
                // Only a task someone had becomes a new activity on its next accept; a
                // queued one moved by a supervisor has none yet.
                if from.is_some() {
                    if let Some(aid) = self.by_task.remove(&task.task_id) {
                        self.handovers.insert(task.task_id, aid);
                    }
                }
                None
            }
        }
    }

    pub(super) fn task_journey(&mut self, task: &Task, kind: JourneyKind, by: Actor, now: Ts) {
        self.task_journey_text(task, kind, by, now, None);
    }

    pub(super) fn task_journey_text(
        &mut self,
        task: &Task,
        kind: JourneyKind,
        by: Actor,
        now: Ts,
        text: Option<String>,
    ) {
        let Some(a) = self
            .by_task
            .get(&task.task_id)
            .or_else(|| self.handovers.get(&task.task_id))
            .and_then(|id| self.activities.get(id))
        else {
            return;
        };
        if let Some(c) = a.customer_id {
            let ev = JourneyEvent {
                at: now,
                kind,
                by,
                request_id: a.request_id,
                activity_id: Some(a.activity_id),
                task_id: Some(task.task_id),
                text,
            };
            self.journey(c, ev);
        }
    }

    /// On accept: the task becomes an activity of the customer its identity names, on
    /// the customer's most recent open request (or a new one); an unknown caller gets
    /// an activity without a customer.
    pub(super) fn attach(
        &mut self,
        task: &Task,
        agent: &AgentId,
        now: Ts,
        fx: &mut ContextEffects,
    ) -> Activity {
        if let Some(aid) = self.by_task.get(&task.task_id).copied() {
            // A task re-accepted after its first agent went away keeps its activity,
            // which moves to the new agent's Open list.
            return self.transfer(aid, agent, now, fx);
        }
        let by = Actor::agent(agent);
        let id = &task.customer;
        let phones: Vec<String> = id.phone.iter().cloned().collect();
        let emails: Vec<String> = id.email.iter().cloned().collect();
        let handles: Vec<String> = id.chat_handle.iter().cloned().collect();
        // A transferred task: the customer and request of the activity before it.
        let handed = self
            .handovers
            .remove(&task.task_id)
            .and_then(|old| self.activities.get(&old))
            .and_then(|a| a.customer_id.zip(a.request_id));
        let customer_id = match handed {
            Some((c, _)) => Some(c),
            None => identity_keys(&phones, &emails, &handles)
                .iter()
                .find_map(|k| self.identities.get(k).copied()),
        };
        let started_at = now;
        let activity = Activity {
            activity_id: ActivityId(self.ids.mint()),
            customer_id: None,
            request_id: None,
            task_id: task.task_id,
            channel: task.channel,
            agent_id: agent.clone(),
            started_at,
            ended_at: None,
            tags: Vec::new(),
            notes: String::new(),
            summary: Summary {
                channel: task.channel,
                queue: task.queue.clone(),
                skills: task.skills.clone(),
                wait_ms: now.since(task.created_at).as_millis() as u64,
                created_at: task.created_at,
                started_at,
                identity: task.customer.clone(),
                attributes: task.attributes.clone(),
            },
            stamp: Stamp::new(&by, now),
        };
        let aid = activity.activity_id;
        self.by_task.insert(task.task_id, aid);
        self.activities.insert(aid, Box::new(activity));
        self.desks.entry(agent.clone()).or_default().open.push(aid);
        match customer_id {
            Some(c) => {
                self.link(
                    aid,
                    c,
                    LinkHow {
                        fresh: true,
                        request: handed.map(|h| h.1),
                    },
                    &by,
                    now,
                    fx,
                );
            }
            None => {
                self.watch(Topic::Activity(aid), agent);
            }
        }
        let a = self
            .activities
            .get(&aid)
            .map(|a| Activity::clone(a))
            .unwrap_or_else(|| unreachable!("just inserted"));
        // After the request it may have opened: the activity is created on it.
        fx.events.push(EventData::ActivityCreated {
            activity_id: aid,
            request_id: a.request_id,
            customer_id: a.customer_id,
            task_id: Some(a.task_id),
        });
        a
    }

    pub(super) fn transfer(
        &mut self,
        aid: ActivityId,
        agent: &AgentId,
        now: Ts,
        fx: &mut ContextEffects,
    ) -> Activity {
        let by = Actor::agent(agent);
        let Some(a) = self.activities.get_mut(&aid) else {
            unreachable!("by_task names only existing activities")
        };
        let old = std::mem::replace(&mut a.agent_id, agent.clone());
        a.ended_at = None;
        a.stamp.bump(&by, now);
        let topic = a.customer_id.map_or(Topic::Activity(aid), Topic::Customer);
        if let Some(d) = self.desks.get_mut(&old) {
            d.open.retain(|x| *x != aid);
        }
        let desk = self.desks.entry(agent.clone()).or_default();
        if !desk.open.contains(&aid) {
            desk.open.push(aid);
        }
        // The first agent no longer has it: it stops watching what it watched for it
        // (a customer it still has open otherwise it keeps). Before, it went on getting
        // the new agent's changes, and an unknown caller's topic outlived everything.
        if old != *agent {
            let keep = match topic {
                Topic::Customer(c) => self.keeps_watching(&old, c),
                Topic::Activity(_) => false,
            };
            if !keep {
                self.unwatch(topic, &old);
            }
        }
        self.watch(topic, agent);
        self.changed_activity(aid, &by, now, fx);
        self.activities
            .get(&aid)
            .map(|a| Activity::clone(a))
            .unwrap_or_else(|| unreachable!("present"))
    }

    /// Links an activity to a customer: the most recent open request, or a new one.
    /// `fresh` is true when the activity is being created: its version stays 1.
    pub(super) fn link(
        &mut self,
        aid: ActivityId,
        c: CustomerId,
        how: LinkHow,
        by: &Actor,
        now: Ts,
        fx: &mut ContextEffects,
    ) {
        // The request asked for (a transfer's: the same request as before), if it is
        // still the customer's and open; else its most recent open one. (One closed
        // since the transfer was closed on purpose: the next agent's work is not
        // filed on a closed request.)
        let LinkHow { fresh, request } = how;
        let asked = request.filter(|r| {
            self.requests
                .get(r)
                .is_some_and(|r| r.customer_id == c && r.state == RequestState::Open)
        });
        let open_request = asked.or_else(|| {
            self.customer_requests
                .get(&c)
                .and_then(|rs| {
                    rs.iter()
                        .rev()
                        .filter_map(|r| self.requests.get(r))
                        .find(|r| r.state == RequestState::Open)
                })
                .map(|r| r.request_id)
        });
        let request_id = match open_request {
            Some(r) => r,
            None => self.new_request(c, String::new(), String::new(), by, now, fx),
        };
        let Some(a) = self.activities.get_mut(&aid) else {
            return;
        };
        a.customer_id = Some(c);
        a.request_id = Some(request_id);
        if !fresh {
            a.stamp.bump(by, now);
        }
        let (agent, task_id, started) = (a.agent_id.clone(), a.task_id, a.started_at);
        // In the order they started, not the order they were linked: an older
        // interaction linked late is not the customer's most recent activity (the one
        // an agent with the customer open may edit, and the first the view lists).
        let activities = &self.activities;
        let list = self.customer_activities.entry(c).or_default();
        let at = list
            .iter()
            .rposition(|x| activities.get(x).is_some_and(|o| o.started_at <= started))
            .map_or(0, |i| i + 1);
        list.insert(at, aid);
        if let Some(w) = self.watchers.remove(&Topic::Activity(aid)) {
            self.watchers
                .entry(Topic::Customer(c))
                .or_default()
                .extend(w);
        }
        self.watch(Topic::Customer(c), &agent);
        self.journey(
            c,
            JourneyEvent {
                at: now,
                kind: JourneyKind::ActivityStarted,
                by: by.clone(),
                request_id: Some(request_id),
                activity_id: Some(aid),
                task_id: Some(task_id),
                text: None,
            },
        );
        self.changed_activity(aid, by, now, fx);
    }

    /// Moves an interaction to `to` (a request of its customer; a closed one is
    /// reopened, since the agent is working on it again) or to a new request. Only the
    /// agent's own open interaction moves, as only it is the agent's to edit.
    pub(super) fn move_activity(
        &mut self,
        aid: ActivityId,
        to: Option<RequestId>,
        by: &Actor,
        now: Ts,
        fx: &mut ContextEffects,
    ) -> Result<(), HubError> {
        let a = self
            .activities
            .get(&aid)
            .ok_or(HubError::ActivityNotFound(aid))?;
        if by.agent_id().as_ref() != Some(&a.agent_id) {
            return Err(HubError::RecordNotOpen);
        }
        if a.ended_at.is_some() {
            return Err(HubError::InteractionClosed);
        }
        // An unknown caller's interaction has no requests to choose from yet: the
        // customer comes first (create or link).
        let Some(c) = a.customer_id else {
            return Err(HubError::CustomerChoiceRequired);
        };
        let (task_id, current) = (a.task_id, a.request_id);
        let request_id = match to {
            Some(r) => {
                let req = self.requests.get(&r).ok_or(HubError::RequestNotFound(r))?;
                if req.customer_id != c {
                    return Err(HubError::Invalid {
                        field: "request_id".into(),
                        reason: "that request belongs to another customer".into(),
                    });
                }
                if current == Some(r) {
                    // Already there: nothing changes, no version bump.
                    return Ok(());
                }
                if req.state == RequestState::Closed {
                    let mut next = req.clone();
                    next.state = RequestState::Open;
                    next.closed_at = None;
                    next.stamp.bump(by, now);
                    self.requests.insert(r, next);
                    fx.events.push(EventData::RequestReopened {
                        request_id: r,
                        customer_id: c,
                    });
                    self.journey(
                        c,
                        JourneyEvent {
                            at: now,
                            kind: JourneyKind::RequestReopened,
                            by: by.clone(),
                            request_id: Some(r),
                            activity_id: None,
                            task_id: None,
                            text: None,
                        },
                    );
                    self.changed_request(r, by, now, fx);
                }
                r
            }
            None => self.new_request(c, String::new(), String::new(), by, now, fx),
        };
        let Some(a) = self.activities.get_mut(&aid) else {
            unreachable!("checked above")
        };
        a.request_id = Some(request_id);
        a.stamp.bump(by, now);
        self.journey(
            c,
            JourneyEvent {
                at: now,
                kind: JourneyKind::ActivityUpdated,
                by: by.clone(),
                request_id: Some(request_id),
                activity_id: Some(aid),
                task_id: Some(task_id),
                text: None,
            },
        );
        self.changed_activity(aid, by, now, fx);
        Ok(())
    }

    pub(super) fn new_request(
        &mut self,
        c: CustomerId,
        title: String,
        description: String,
        by: &Actor,
        now: Ts,
        fx: &mut ContextEffects,
    ) -> RequestId {
        let r = Request {
            request_id: RequestId(self.ids.mint()),
            customer_id: c,
            title,
            description,
            state: RequestState::Open,
            closed_at: None,
            stamp: Stamp::new(by, now),
        };
        let id = r.request_id;
        self.requests.insert(id, Box::new(r));
        self.customer_requests.entry(c).or_default().push(id);
        fx.events.push(EventData::RequestOpened {
            request_id: id,
            customer_id: c,
        });
        self.reindex(c);
        self.journey(
            c,
            JourneyEvent {
                at: now,
                kind: JourneyKind::RequestOpened,
                by: by.clone(),
                request_id: Some(id),
                activity_id: None,
                task_id: None,
                text: None,
            },
        );
        self.changed_request(id, by, now, fx);
        id
    }
}
