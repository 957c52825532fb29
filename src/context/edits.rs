//! The edits agents and integrations make to the records: creating and changing
//! customers, requests and activities, notes, linking an interaction to its customer,
//! and closing it. Each one checks the fields, that the editor may make it (an agent
//! needs the customer open, [`ContextBook::is_open_for`], or, to link or close an
//! interaction, to be its own) and, for a change, that it is based on the current
//! version (else the caution prompt's `version_conflict`, with the record as it is
//! now), before it changes the record, its journey and its search entry, and tells the
//! watchers.

use super::*;

/// The changes of `update_request`: a title, a description, closing or reopening.
pub(super) struct RequestEdit {
    pub title: Option<String>,
    pub description: Option<String>,
    pub state: Option<RequestState>,
}

/// The changes of `update_activity`: its notes, its tags.
pub(super) struct ActivityEdit {
    pub notes: Option<String>,
    pub tags: Option<Vec<String>>,
}

impl ContextBook {
    pub(super) fn update_customer(
        &mut self,
        by: &Actor,
        customer_id: CustomerId,
        base_version: u64,
        changes: CustomerFields,
        now: Ts,
        fx: &mut ContextEffects,
    ) -> Result<ContextReply, HubError> {
        changes.validate()?;
        // A customer that does not exist is that, for whoever asks (as for every other
        // edit), before whether the asker may edit it.
        if !self.customers.contains_key(&customer_id) {
            return Err(HubError::CustomerNotFound(customer_id));
        }
        self.may_edit_customer(by, customer_id)?;
        let c = self
            .customers
            .get(&customer_id)
            .ok_or(HubError::CustomerNotFound(customer_id))?;
        check_version(base_version, &c.stamp, c)?;
        let old_keys = identity_keys(&c.phones, &c.emails, &c.chat_handles);
        let mut next = c.clone();
        changes.apply_to(&mut next);
        // A save that changes nothing is no change: the version stays, so nobody else
        // gets a caution for it, and no one is told.
        if next == *c {
            return Ok(ContextReply::Customer(Box::new(
                self.customer_view(customer_id)?,
            )));
        }
        next.stamp.bump(by, now);
        let new_keys = identity_keys(&next.phones, &next.emails, &next.chat_handles);
        let holder = (c.stamp.created_at, customer_id);
        for k in old_keys.iter().filter(|k| !new_keys.contains(k)) {
            self.release_identity(k, holder);
        }
        for k in new_keys.into_iter().filter(|k| !old_keys.contains(k)) {
            self.claim_identity(k, holder);
        }
        fx.events.push(EventData::CustomerUpdated {
            customer_id,
            version: next.stamp.version,
        });
        self.customers.insert(customer_id, next);
        self.reindex(customer_id);
        self.journey_simple(customer_id, JourneyKind::CustomerUpdated, by, None, now);
        self.changed_customer(customer_id, by, now, fx);
        Ok(ContextReply::Customer(Box::new(
            self.customer_view(customer_id)?,
        )))
    }

    /// A customer takes an identity key: it names them unless it already names another
    /// customer (the first to claim it keeps it; this one is next in line).
    fn claim_identity(&mut self, key: String, holder: (Ts, CustomerId)) {
        match self.identities.get(&key) {
            Some(owner) if *owner != holder.1 => {
                self.other_holders.entry(key).or_default().insert(holder);
            }
            Some(_) => {}
            None => {
                self.identities.insert(key, holder.1);
            }
        }
    }

    /// A customer lets an identity key go: if it named them, it names the oldest other
    /// customer holding it, or nobody.
    fn release_identity(&mut self, key: &str, holder: (Ts, CustomerId)) {
        if self.identities.get(key) != Some(&holder.1) {
            if let Some(others) = self.other_holders.get_mut(key) {
                others.remove(&holder);
                if others.is_empty() {
                    self.other_holders.remove(key);
                }
            }
            return;
        }
        let next = self.other_holders.get_mut(key).and_then(|o| o.pop_first());
        if self.other_holders.get(key).is_some_and(|o| o.is_empty()) {
            self.other_holders.remove(key);
        }
        match next {
            Some((_, c)) => {
                self.identities.insert(key.to_owned(), c);
            }
            None => {
                self.identities.remove(key);
            }
        }
    }

    /// Links an interaction whose customer was not known to an existing customer.
    pub(super) fn link_activity(
        &mut self,
        by: &Actor,
        activity_id: ActivityId,
        customer_id: CustomerId,
        now: Ts,
        fx: &mut ContextEffects,
    ) -> Result<ContextReply, HubError> {
        self.linkable(by, activity_id)?;
        if !self.customers.contains_key(&customer_id) {
            return Err(HubError::CustomerNotFound(customer_id));
        }
        self.link(activity_id, customer_id, LinkHow::LATER, by, now, fx);
        self.activity_reply(activity_id)
    }

    pub(super) fn create_request(
        &mut self,
        by: &Actor,
        customer_id: CustomerId,
        title: String,
        description: String,
        now: Ts,
        fx: &mut ContextEffects,
    ) -> Result<ContextReply, HubError> {
        check_text("title", &title)?;
        check_text("description", &description)?;
        if !self.customers.contains_key(&customer_id) {
            return Err(HubError::CustomerNotFound(customer_id));
        }
        self.may_edit_customer(by, customer_id)?;
        let id = self.new_request(customer_id, title, description, by, now, fx);
        self.requests
            .get(&id)
            .map(|r| ContextReply::Request(r.clone()))
            .ok_or(HubError::RequestNotFound(id))
    }

    pub(super) fn update_request(
        &mut self,
        by: &Actor,
        request_id: RequestId,
        base_version: u64,
        edit: RequestEdit,
        now: Ts,
        fx: &mut ContextEffects,
    ) -> Result<ContextReply, HubError> {
        let RequestEdit {
            title,
            description,
            state,
        } = edit;
        if let Some(t) = &title {
            check_text("title", t)?;
        }
        if let Some(d) = &description {
            check_text("description", d)?;
        }
        let r = self
            .requests
            .get(&request_id)
            .ok_or(HubError::RequestNotFound(request_id))?;
        let customer_id = r.customer_id;
        self.may_edit_customer(by, customer_id)?;
        check_version(base_version, &r.stamp, r)?;
        let mut next = r.clone();
        let mut kinds = Vec::new();
        if title.is_some() || description.is_some() {
            kinds.push(JourneyKind::RequestUpdated);
        }
        if let Some(t) = title {
            next.title = t;
        }
        if let Some(d) = description {
            next.description = d;
        }
        match state {
            Some(RequestState::Closed) if next.state == RequestState::Open => {
                next.state = RequestState::Closed;
                next.closed_at = Some(now);
                kinds.push(JourneyKind::RequestClosed);
            }
            Some(RequestState::Open) if next.state == RequestState::Closed => {
                next.state = RequestState::Open;
                next.closed_at = None;
                kinds.push(JourneyKind::RequestReopened);
            }
            _ => {}
        }
        // Nothing changed (the same text, closing a closed request): no change.
        if next == *r {
            return Ok(ContextReply::Request(next));
        }
        next.stamp.bump(by, now);
        for k in &kinds {
            match k {
                JourneyKind::RequestClosed => fx.events.push(EventData::RequestClosed {
                    request_id,
                    customer_id,
                }),
                JourneyKind::RequestReopened => fx.events.push(EventData::RequestReopened {
                    request_id,
                    customer_id,
                }),
                _ => {}
            }
        }
        self.requests.insert(request_id, next.clone());
        self.reindex(customer_id);
        for k in kinds {
            self.journey_simple(customer_id, k, by, Some(request_id), now);
        }
        self.changed_request(request_id, by, now, fx);
        Ok(ContextReply::Request(next))
    }

    pub(super) fn update_activity(
        &mut self,
        by: &Actor,
        activity_id: ActivityId,
        base_version: u64,
        edit: ActivityEdit,
        now: Ts,
        fx: &mut ContextEffects,
    ) -> Result<ContextReply, HubError> {
        let ActivityEdit { notes, tags } = edit;
        if let Some(n) = &notes {
            check_text("notes", n)?;
        }
        let tags = tags.map(|t| normalize_tags("tags", &t)).transpose()?;
        let a = self
            .activities
            .get(&activity_id)
            .ok_or(HubError::ActivityNotFound(activity_id))?;
        self.may_edit_activity(by, a)?;
        check_version(base_version, &a.stamp, a)?;
        let mut next = a.clone();
        if let Some(n) = notes {
            next.notes = n;
        }
        if let Some(t) = tags {
            next.tags = t;
        }
        if next == *a {
            return self.activity_reply(activity_id);
        }
        next.stamp.bump(by, now);
        let customer = next.customer_id;
        self.activities.insert(activity_id, next);
        if let Some(c) = customer {
            let ev = JourneyEvent {
                at: now,
                kind: JourneyKind::ActivityUpdated,
                by: by.clone(),
                request_id: self.activities.get(&activity_id).and_then(|a| a.request_id),
                activity_id: Some(activity_id),
                task_id: None,
                text: None,
            };
            self.journey(c, ev);
        }
        self.changed_activity(activity_id, by, now, fx);
        self.activity_reply(activity_id)
    }

    /// Notes are never edited: each is a new record, and a line of the journey.
    pub(super) fn add_note(
        &mut self,
        by: &Actor,
        customer_id: CustomerId,
        request_id: Option<RequestId>,
        text: String,
        now: Ts,
        fx: &mut ContextEffects,
    ) -> Result<ContextReply, HubError> {
        if text.trim().is_empty() {
            return Err(HubError::invalid("text", "must not be empty"));
        }
        check_text("text", &text)?;
        if !self.customers.contains_key(&customer_id) {
            return Err(HubError::CustomerNotFound(customer_id));
        }
        if let Some(r) = request_id {
            if self
                .requests
                .get(&r)
                .is_none_or(|r| r.customer_id != customer_id)
            {
                return Err(HubError::RequestNotFound(r));
            }
        }
        self.may_edit_customer(by, customer_id)?;
        let note = Note {
            note_id: NoteId(self.ids.mint()),
            customer_id,
            request_id,
            text: text.clone(),
            by: by.clone(),
            at: now,
        };
        self.journey(
            customer_id,
            JourneyEvent {
                at: now,
                kind: JourneyKind::Note,
                by: by.clone(),
                request_id,
                activity_id: None,
                task_id: None,
                text: Some(text),
            },
        );
        let head = (
            RecordKind::Note,
            note.note_id.to_string(),
            Some(customer_id),
            1,
        );
        self.push_change(Topic::Customer(customer_id), head, &note, by, now, fx);
        Ok(ContextReply::Note(Box::new(note)))
    }

    /// Closes an agent's interaction; one whose customer was never known needs the
    /// agent's choice: create the customer, or close without one.
    pub(super) fn close_interaction(
        &mut self,
        agent: &AgentId,
        activity_id: ActivityId,
        choice: Option<CloseChoice>,
        now: Ts,
        fx: &mut ContextEffects,
    ) -> Result<ContextReply, HubError> {
        let a = self
            .activities
            .get(&activity_id)
            .ok_or(HubError::ActivityNotFound(activity_id))?;
        if a.agent_id != *agent {
            return Err(HubError::RecordNotOpen);
        }
        if a.ended_at.is_some() {
            return Err(HubError::InteractionClosed);
        }
        let by = Actor::agent(agent);
        if a.customer_id.is_none() {
            match choice {
                None => return Err(HubError::CustomerChoiceRequired),
                Some(CloseChoice::Create { customer }) => {
                    self.create_customer(&by, customer, Some(activity_id), now, fx)?;
                }
                Some(CloseChoice::Discard {}) => {}
            }
        }
        self.end_interaction(agent, activity_id, now, fx);
        self.activity_reply(activity_id)
    }

    pub(super) fn create_customer(
        &mut self,
        by: &Actor,
        fields: CustomerFields,
        activity_id: Option<ActivityId>,
        now: Ts,
        fx: &mut ContextEffects,
    ) -> Result<CustomerId, HubError> {
        fields.validate()?;
        if let Some(aid) = activity_id {
            self.linkable(by, aid)?;
        }
        let mut c = Customer {
            customer_id: CustomerId(self.ids.mint()),
            kind: CustomerKind::default(),
            name: String::new(),
            emails: Vec::new(),
            phones: Vec::new(),
            chat_handles: Vec::new(),
            fields: Default::default(),
            stamp: Stamp::new(by, now),
        };
        // An unknown caller's identity is a good start for the new record.
        if let Some(a) = activity_id.and_then(|a| self.activities.get(&a)) {
            let id = &a.summary.identity;
            c.phones.extend(id.phone.iter().cloned());
            c.emails.extend(id.email.iter().cloned());
            c.chat_handles.extend(id.chat_handle.iter().cloned());
            if let Some(n) = &id.name {
                c.name = n.clone();
            }
        }
        fields.apply_to(&mut c);
        if c.name.trim().is_empty()
            && c.emails.is_empty()
            && c.phones.is_empty()
            && c.chat_handles.is_empty()
        {
            return Err(HubError::invalid(
                "name",
                "a customer needs a name or a way to reach them",
            ));
        }
        let cid = c.customer_id;
        fx.events.push(EventData::CustomerCreated {
            customer_id: cid,
            version: c.stamp.version,
        });
        for k in identity_keys(&c.phones, &c.emails, &c.chat_handles) {
            self.claim_identity(k, (c.stamp.created_at, cid));
        }
        self.customers.insert(cid, Box::new(c));
        self.reindex(cid);
        self.journey_simple(cid, JourneyKind::CustomerCreated, by, None, now);
        self.changed_customer(cid, by, now, fx);
        if let Some(aid) = activity_id {
            self.link(aid, cid, LinkHow::LATER, by, now, fx);
        }
        Ok(cid)
    }

    pub(super) fn end_interaction(
        &mut self,
        agent: &AgentId,
        aid: ActivityId,
        now: Ts,
        fx: &mut ContextEffects,
    ) {
        let by = Actor::agent(agent);
        let Some(a) = self.activities.get_mut(&aid) else {
            return;
        };
        a.ended_at = Some(now);
        a.stamp.bump(&by, now);
        let (customer, request) = (a.customer_id, a.request_id);
        fx.events.push(EventData::ActivityClosed {
            activity_id: aid,
            request_id: request,
            customer_id: customer,
        });
        let desk = self.desks.entry(agent.clone()).or_default();
        desk.open.retain(|x| *x != aid);
        if let Some(c) = customer {
            push_recent(desk, c);
        }
        if let Some(c) = customer {
            self.journey(
                c,
                JourneyEvent {
                    at: now,
                    kind: JourneyKind::ActivityEnded,
                    by: by.clone(),
                    request_id: request,
                    activity_id: Some(aid),
                    task_id: None,
                    text: None,
                },
            );
        }
        self.changed_activity(aid, &by, now, fx);
        match customer {
            Some(c) if !self.keeps_watching(agent, c) => self.unwatch(Topic::Customer(c), agent),
            Some(_) => {}
            None => self.unwatch(Topic::Activity(aid), agent),
        }
    }

    /// An interaction `by` may link to a customer: an agent's own, and not linked yet.
    fn linkable(&self, by: &Actor, aid: ActivityId) -> Result<(), HubError> {
        let a = self
            .activities
            .get(&aid)
            .ok_or(HubError::ActivityNotFound(aid))?;
        if by.role == Role::Agent && by.agent_id().as_ref() != Some(&a.agent_id) {
            return Err(HubError::RecordNotOpen);
        }
        if a.customer_id.is_some() {
            return Err(HubError::AlreadyLinked);
        }
        // An agent links only an interaction still open: one closed (discarded) is done
        // with, and linking it would open a customer the agent never had open.
        // Integrations may still file it.
        if by.role == Role::Agent && a.ended_at.is_some() {
            return Err(HubError::InteractionClosed);
        }
        Ok(())
    }

    pub(super) fn may_edit_customer(&self, by: &Actor, c: CustomerId) -> Result<(), HubError> {
        match by.agent_id() {
            Some(agent) if !self.is_open_for(&agent, c) => Err(HubError::RecordNotOpen),
            _ => Ok(()),
        }
    }

    /// An agent edits its own open interaction, or the most recent activity of a
    /// customer it has open.
    pub(super) fn may_edit_activity(&self, by: &Actor, a: &Activity) -> Result<(), HubError> {
        let Some(agent) = by.agent_id() else {
            return Ok(());
        };
        let own_open = a.agent_id == agent && a.ended_at.is_none();
        let most_recent = a.customer_id.is_some_and(|c| {
            self.is_open_for(&agent, c)
                && self.customer_activities.get(&c).and_then(|v| v.last()) == Some(&a.activity_id)
        });
        if own_open || most_recent {
            Ok(())
        } else {
            Err(HubError::RecordNotOpen)
        }
    }
}

/// The lookup keys of an identity: phones by their digits, emails and handles by
/// their lowercase form.
pub(super) fn identity_keys(
    phones: &[String],
    emails: &[String],
    handles: &[String],
) -> Vec<String> {
    let mut keys = Vec::new();
    for p in phones {
        let digits: String = p.chars().filter(char::is_ascii_digit).collect();
        if !digits.is_empty() {
            keys.push(format!("tel:{digits}"));
        }
    }
    // Blank ones are refused where they come in; none is ever a key.
    for e in emails.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
        keys.push(format!("mailto:{}", e.to_lowercase()));
    }
    for h in handles.iter().map(|h| h.trim()).filter(|h| !h.is_empty()) {
        keys.push(format!("chat:{}", h.to_lowercase()));
    }
    keys
}

/// Refuses an update based on an old version, with the current record.
pub(super) fn check_version<T: Serialize>(
    base: u64,
    stamp: &Stamp,
    current: &T,
) -> Result<(), HubError> {
    if base == stamp.version {
        return Ok(());
    }
    Err(HubError::VersionConflict {
        expected: base,
        version: stamp.version,
        current: Box::new(serde_json::to_value(current).unwrap_or(Value::Null)),
        changed_by: stamp.updated_by.clone(),
        changed_at: stamp.updated_at,
    })
}
