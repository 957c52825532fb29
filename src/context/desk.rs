//! An agent's desk in the context: the interactions it has open, the customers it
//! reopened from Recent or Search, and its Recent list. What is open for an agent is
//! what it watches, and what it may edit.

use super::*;

#[derive(Default, Serialize, Deserialize)]
pub(super) struct AgentDesk {
    /// Interactions open, in the order they opened.
    pub open: Vec<ActivityId>,
    /// Customers reopened from Recent or Search.
    pub reopened: Vec<(CustomerId, Ts)>,
    /// Recently closed customers, newest first.
    pub recent: VecDeque<CustomerId>,
    /// Customers loaded (`get_customer`) and not let go (`unwatch_customer`, going
    /// offline): watched whatever the agent opens and closes meanwhile.
    #[serde(default)]
    pub loaded: BTreeSet<CustomerId>,
}

impl ContextBook {
    pub(super) fn reopen_customer(
        &mut self,
        agent: &AgentId,
        customer_id: CustomerId,
        now: Ts,
    ) -> Result<ContextReply, HubError> {
        if !self.customers.contains_key(&customer_id) {
            return Err(HubError::CustomerNotFound(customer_id));
        }
        let desk = self.desks.entry(agent.clone()).or_default();
        if !desk.reopened.iter().any(|(c, _)| *c == customer_id) {
            desk.reopened.push((customer_id, now));
        }
        self.watch(Topic::Customer(customer_id), agent);
        Ok(ContextReply::Customer(Box::new(
            self.customer_view(customer_id)?,
        )))
    }

    pub(super) fn close_customer(
        &mut self,
        agent: &AgentId,
        customer_id: CustomerId,
    ) -> Result<ContextReply, HubError> {
        let desk = self.desks.entry(agent.clone()).or_default();
        let before = desk.reopened.len();
        desk.reopened.retain(|(c, _)| *c != customer_id);
        if desk.reopened.len() == before {
            return Err(HubError::RecordNotOpen);
        }
        push_recent(desk, customer_id);
        if !self.keeps_watching(agent, customer_id) {
            self.unwatch(Topic::Customer(customer_id), agent);
        }
        Ok(ContextReply::Done)
    }

    /// Takes `agent` off every topic it watches but does not have open: what it loaded
    /// (`get_customer`) and never let go. An agent gone offline has no desktop showing
    /// them, and the next one's welcome lists only its Open and Recent records.
    pub(super) fn drop_loaded(&mut self, agent: &AgentId) {
        if let Some(d) = self.desks.get_mut(agent) {
            d.loaded.clear();
        }
        let open: Vec<ActivityId> = self
            .desks
            .get(agent)
            .map(|d| d.open.clone())
            .unwrap_or_default();
        let dropped: Vec<Topic> = self
            .watchers
            .iter()
            .filter(|(t, w)| {
                w.contains(agent)
                    && match t {
                        Topic::Customer(c) => !self.is_open_for(agent, *c),
                        Topic::Activity(a) => !open.contains(a),
                    }
            })
            .map(|(t, _)| *t)
            .collect();
        for t in dropped {
            self.unwatch(t, agent);
        }
    }

    /// Whether the agent watches the customer for a reason other than the one going
    /// away: it has it open, or loaded it and has not let it go.
    pub(super) fn keeps_watching(&self, agent: &AgentId, c: CustomerId) -> bool {
        self.is_open_for(agent, c) || self.desks.get(agent).is_some_and(|d| d.loaded.contains(&c))
    }

    /// Whether the agent has the customer open: an interaction in progress with it, or
    /// reopened.
    pub(super) fn is_open_for(&self, agent: &AgentId, c: CustomerId) -> bool {
        let Some(desk) = self.desks.get(agent) else {
            return false;
        };
        desk.reopened.iter().any(|(x, _)| *x == c)
            || desk.open.iter().any(|a| {
                self.activities
                    .get(a)
                    .is_some_and(|a| a.customer_id == Some(c))
            })
    }

    /// The agent's Open and Recent lists.
    pub fn lists(&self, agent: &AgentId) -> Lists {
        let Some(desk) = self.desks.get(agent) else {
            return Lists {
                open: Vec::new(),
                recent: Vec::new(),
            };
        };
        let mut open: Vec<OpenItem> = desk
            .open
            .iter()
            .filter_map(|a| self.activities.get(a))
            .map(|a| OpenItem {
                customer: a
                    .customer_id
                    .and_then(|c| self.customers.get(&c))
                    .map(|c| summary(c)),
                activity_id: Some(a.activity_id),
                request_id: a.request_id,
                task_id: Some(a.task_id),
                since: a.started_at,
            })
            .collect();
        open.extend(desk.reopened.iter().filter_map(|(c, since)| {
            self.customers.get(c).map(|c| OpenItem {
                customer: Some(summary(c)),
                activity_id: None,
                request_id: None,
                task_id: None,
                since: *since,
            })
        }));
        let recent = desk
            .recent
            .iter()
            .filter_map(|c| self.customers.get(c))
            .map(|c| summary(c))
            .collect();
        Lists { open, recent }
    }
}

pub(super) fn push_recent(desk: &mut AgentDesk, c: CustomerId) {
    desk.recent.retain(|x| *x != c);
    desk.recent.push_front(c);
    desk.recent.truncate(RECENT_LIMIT);
}
