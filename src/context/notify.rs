//! Who hears of a change: the watchers of a record's topic, the audience a change is
//! pushed to (never the agent who made it), and the journey's entries.

use super::*;

impl ContextBook {
    pub(super) fn watch(&mut self, t: Topic, agent: &AgentId) {
        self.watchers.entry(t).or_default().insert(agent.clone());
    }

    pub(super) fn unwatch(&mut self, t: Topic, agent: &AgentId) {
        if let Some(w) = self.watchers.get_mut(&t) {
            w.remove(agent);
            if w.is_empty() {
                self.watchers.remove(&t);
            }
        }
    }

    pub(super) fn journey(&mut self, c: CustomerId, ev: JourneyEvent) {
        let j = self.journeys.entry(c).or_default();
        j.push_back(ev);
        while j.len() > JOURNEY_LIMIT {
            j.pop_front();
        }
    }

    pub(super) fn journey_simple(
        &mut self,
        c: CustomerId,
        kind: JourneyKind,
        by: &Actor,
        request_id: Option<RequestId>,
        now: Ts,
    ) {
        self.journey(
            c,
            JourneyEvent {
                at: now,
                kind,
                by: by.clone(),
                request_id,
                activity_id: None,
                task_id: None,
                text: None,
            },
        );
    }

    /// Who must hear of a change: the topic's watchers but the author.
    pub(super) fn audience(&self, topic: Topic, by: &Actor) -> Vec<AgentId> {
        let author = by.agent_id();
        self.watchers
            .get(&topic)
            .into_iter()
            .flatten()
            .filter(|a| Some(*a) != author.as_ref())
            .cloned()
            .collect()
    }

    /// Queues a change for its audience. The record is serialized only when somebody
    /// listens: most changes (an agent editing its own interaction) have nobody.
    pub(super) fn push_change<T: Serialize>(
        &self,
        topic: Topic,
        head: (RecordKind, String, Option<CustomerId>, u64),
        record: &T,
        by: &Actor,
        now: Ts,
        fx: &mut ContextEffects,
    ) {
        let to = self.audience(topic, by);
        if to.is_empty() {
            return;
        }
        let (kind, id, customer_id, version) = head;
        let change = RecordChange {
            kind,
            id,
            customer_id,
            version,
            changed_by: by.clone(),
            changed_at: now,
            record: serde_json::to_value(record).unwrap_or(Value::Null),
        };
        fx.changes.push((Arc::new(change), to));
    }

    pub(super) fn changed_customer(
        &self,
        c: CustomerId,
        by: &Actor,
        now: Ts,
        fx: &mut ContextEffects,
    ) {
        let Some(rec) = self.customers.get(&c) else {
            return;
        };
        let head = (
            RecordKind::Customer,
            c.to_string(),
            Some(c),
            rec.stamp.version,
        );
        self.push_change(Topic::Customer(c), head, rec, by, now, fx);
    }

    pub(super) fn changed_request(
        &self,
        r: RequestId,
        by: &Actor,
        now: Ts,
        fx: &mut ContextEffects,
    ) {
        let Some(rec) = self.requests.get(&r) else {
            return;
        };
        let c = rec.customer_id;
        let head = (
            RecordKind::Request,
            r.to_string(),
            Some(c),
            rec.stamp.version,
        );
        self.push_change(Topic::Customer(c), head, rec, by, now, fx);
    }

    pub(super) fn changed_activity(
        &self,
        a: ActivityId,
        by: &Actor,
        now: Ts,
        fx: &mut ContextEffects,
    ) {
        let Some(rec) = self.activities.get(&a) else {
            return;
        };
        let topic = match rec.customer_id {
            Some(c) => Topic::Customer(c),
            None => Topic::Activity(a),
        };
        let head = (
            RecordKind::Activity,
            a.to_string(),
            rec.customer_id,
            rec.stamp.version,
        );
        self.push_change(topic, head, rec, by, now, fx);
    }
}
