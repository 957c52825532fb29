//! The customer-context records: customers, requests, activities, notes, journey
//! events, and the rules their fields follow.
//!
//! Every record carries a `version` (1 when created, one more per change), who changed
//! it last and when. An update names the version it was based on; the book refuses it
//! when the record has moved on (the desktop's caution prompt).

use crate::clock::Ts;
use crate::error::HubError;
use crate::ids::{ActivityId, AgentId, Channel, CustomerId, NoteId, QueueId, RequestId, TaskId};
use crate::task::{CustomerIdentity, check_text};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The most characters of a tag.
pub const MAX_TAG_CHARS: usize = 50;
/// The most tags on one activity.
pub const MAX_TAGS: usize = 50;
/// The most values in one list field (emails, phones, chat handles).
pub const MAX_LIST: usize = 20;
/// The most free fields on one customer.
pub const MAX_FIELDS: usize = 50;

/// Who made a change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// The agent id, or the integration's token subject.
    pub id: String,
    /// `agent`, `supervisor` or `integration`.
    pub role: crate::auth::Role,
}

impl Actor {
    /// An agent.
    pub fn agent(id: &AgentId) -> Actor {
        Actor {
            id: id.to_string(),
            role: crate::auth::Role::Agent,
        }
    }

    /// The agent id, when the actor is an agent.
    pub fn agent_id(&self) -> Option<AgentId> {
        (self.role == crate::auth::Role::Agent).then(|| AgentId::from(self.id.as_str()))
    }
}

/// Version bookkeeping every record carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    /// Grows by one with every change; 1 when created.
    pub version: u64,
    /// When the record was created.
    pub created_at: Ts,
    /// When it last changed.
    pub updated_at: Ts,
    /// Who last changed it.
    pub updated_by: Actor,
}

impl Stamp {
    /// The stamp of a new record.
    pub fn new(by: &Actor, now: Ts) -> Stamp {
        Stamp {
            version: 1,
            created_at: now,
            updated_at: now,
            updated_by: by.clone(),
        }
    }

    /// Records one more change.
    pub fn bump(&mut self, by: &Actor, now: Ts) {
        self.version += 1;
        self.updated_at = now;
        self.updated_by = by.clone();
    }
}

/// A person (contact) or an organisation (account).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CustomerKind {
    /// A contact.
    #[default]
    Person,
    /// An account.
    Organisation,
}

/// A customer record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    /// Its id.
    pub customer_id: CustomerId,
    /// Person or organisation.
    pub kind: CustomerKind,
    /// Display name.
    pub name: String,
    /// Email addresses.
    pub emails: Vec<String>,
    /// Phone numbers.
    pub phones: Vec<String>,
    /// Chat handles.
    pub chat_handles: Vec<String>,
    /// Free fields, text values.
    pub fields: Map<String, Value>,
    /// Version, who and when.
    #[serde(flatten)]
    pub stamp: Stamp,
}

/// The fields of a customer an agent or an integration writes. On create, absent
/// fields are empty; on update, absent fields are left as they are.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerFields {
    /// Person or organisation.
    #[serde(default)]
    pub kind: Option<CustomerKind>,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Email addresses (the whole list).
    #[serde(default)]
    pub emails: Option<Vec<String>>,
    /// Phone numbers (the whole list).
    #[serde(default)]
    pub phones: Option<Vec<String>>,
    /// Chat handles (the whole list).
    #[serde(default)]
    pub chat_handles: Option<Vec<String>>,
    /// Free fields (the whole map); values must be strings.
    #[serde(default)]
    pub fields: Option<Map<String, Value>>,
}

impl CustomerFields {
    /// Checks every present field against the limits.
    pub fn validate(&self) -> Result<(), HubError> {
        if let Some(n) = &self.name {
            check_text("name", n)?;
        }
        for (key, list) in [
            ("emails", &self.emails),
            ("phones", &self.phones),
            ("chat_handles", &self.chat_handles),
        ] {
            let Some(list) = list else { continue };
            if list.len() > MAX_LIST {
                return Err(HubError::invalid(key, format!("at most {MAX_LIST} values")));
            }
            for (i, v) in list.iter().enumerate() {
                let field = format!("{key}[{i}]");
                if v.trim().is_empty() {
                    return Err(HubError::invalid(field, "must not be empty"));
                }
                check_text(&field, v)?;
            }
        }
        if let Some(fields) = &self.fields {
            if fields.len() > MAX_FIELDS {
                return Err(HubError::invalid(
                    "fields",
                    format!("at most {MAX_FIELDS} fields"),
                ));
            }
            for (k, v) in fields {
                crate::task::check_name(&format!("fields.{k} (key)"), k)?;
                match v {
                    Value::String(s) => check_text(&format!("fields.{k}"), s)?,
                    Value::Null => {}
                    _ => {
                        return Err(HubError::invalid(format!("fields.{k}"), "must be text"));
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether no field is present.
    pub fn is_empty(&self) -> bool {
        self.kind.is_none()
            && self.name.is_none()
            && self.emails.is_none()
            && self.phones.is_none()
            && self.chat_handles.is_none()
            && self.fields.is_none()
    }

    /// Writes the present fields onto `c`.
    pub fn apply_to(self, c: &mut Customer) {
        if let Some(k) = self.kind {
            c.kind = k;
        }
        if let Some(n) = self.name {
            c.name = n;
        }
        if let Some(v) = self.emails {
            c.emails = v;
        }
        if let Some(v) = self.phones {
            c.phones = v;
        }
        if let Some(v) = self.chat_handles {
            c.chat_handles = v;
        }
        if let Some(v) = self.fields {
            c.fields = v;
        }
    }
}

/// Open or closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestState {
    /// Being worked on.
    Open,
    /// Done.
    Closed,
}

/// A request (case): what the customer needs, across interactions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Its id.
    pub request_id: RequestId,
    /// Whose.
    pub customer_id: CustomerId,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Open or closed.
    pub state: RequestState,
    /// When it was last closed, if closed.
    pub closed_at: Option<Ts>,
    /// Version, who and when (`created_at` is the request's creation).
    #[serde(flatten)]
    pub stamp: Stamp,
}

/// The conversation summary: what the task brought from intake, kept on the activity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// The channel.
    pub channel: Channel,
    /// The queue it waited in.
    pub queue: QueueId,
    /// The skills it needed.
    pub skills: Vec<String>,
    /// How long the customer waited, from creation to accept, in milliseconds.
    pub wait_ms: u64,
    /// When the task was created.
    pub created_at: Ts,
    /// When the agent accepted it.
    pub started_at: Ts,
    /// What is known of the customer's identity.
    pub identity: CustomerIdentity,
    /// Intake attributes: survey answers, pages visited, searches, visitor details.
    pub attributes: Map<String, Value>,
}

/// One interaction: a task once accepted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activity {
    /// Its id.
    pub activity_id: ActivityId,
    /// The customer, once known.
    pub customer_id: Option<CustomerId>,
    /// The request it belongs to, once the customer is known.
    pub request_id: Option<RequestId>,
    /// The task.
    pub task_id: TaskId,
    /// The channel.
    pub channel: Channel,
    /// The agent who took it.
    pub agent_id: AgentId,
    /// When it started (the accept).
    pub started_at: Ts,
    /// When the agent closed the interaction.
    pub ended_at: Option<Ts>,
    /// Tags, unique (see [`normalize_tags`]).
    pub tags: Vec<String>,
    /// The agent's notes.
    pub notes: String,
    /// What the task brought from intake.
    pub summary: Summary,
    /// Version, who and when.
    #[serde(flatten)]
    pub stamp: Stamp,
}

/// A quick note on a customer's or a request's timeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    /// Its id.
    pub note_id: NoteId,
    /// Whose timeline.
    pub customer_id: CustomerId,
    /// The request, when on a request's timeline.
    pub request_id: Option<RequestId>,
    /// The text.
    pub text: String,
    /// Who wrote it.
    pub by: Actor,
    /// When.
    pub at: Ts,
}

/// What happened, on a customer's journey.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JourneyKind {
    /// The customer record was created.
    CustomerCreated,
    /// The customer record changed.
    CustomerUpdated,
    /// A request was opened.
    RequestOpened,
    /// A request changed (title, description).
    RequestUpdated,
    /// A request was closed.
    RequestClosed,
    /// A closed request was reopened.
    RequestReopened,
    /// An interaction started (a task accepted and attached).
    ActivityStarted,
    /// An activity changed (notes, tags).
    ActivityUpdated,
    /// The agent closed the interaction.
    ActivityEnded,
    /// The task behind an activity was completed.
    TaskCompleted,
    /// The task behind an activity was cancelled.
    TaskCancelled,
    /// A quick note.
    Note,
    /// The task behind an activity was transferred (to a queue or an agent: `text` says
    /// `queue:<id>` or `agent:<id>`).
    TaskTransferred,
}

/// One event on a customer's journey.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JourneyEvent {
    /// When.
    pub at: Ts,
    /// What.
    pub kind: JourneyKind,
    /// Who.
    pub by: Actor,
    /// The request concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<RequestId>,
    /// The activity concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activity_id: Option<ActivityId>,
    /// The task concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_id: Option<TaskId>,
    /// The note's text, or a short description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// Normalizes a tag list: surrounding spaces do not count, each tag is kept composed
/// (Unicode NFC: "é" typed as e and a combining accent, as some keyboards and pastes
/// give it, is the same tag as "é", and one character), case does not count for
/// uniqueness (the first spelling is kept), empty tags and duplicates are refused.
pub fn normalize_tags(field: &str, tags: &[String]) -> Result<Vec<String>, HubError> {
    use unicode_normalization::UnicodeNormalization;
    if tags.len() > MAX_TAGS {
        return Err(HubError::invalid(field, format!("at most {MAX_TAGS} tags")));
    }
    let mut out: Vec<String> = Vec::with_capacity(tags.len());
    let mut seen: Vec<String> = Vec::with_capacity(tags.len());
    for (i, t) in tags.iter().enumerate() {
        let f = format!("{field}[{i}]");
        let composed: String = t.trim().nfc().collect();
        let t = composed.as_str();
        if t.is_empty() {
            return Err(HubError::invalid(f, "a tag must not be empty"));
        }
        if t.chars().count() > MAX_TAG_CHARS {
            return Err(HubError::TooLong {
                field: f,
                limit: MAX_TAG_CHARS,
            });
        }
        let key = t.to_lowercase();
        if seen.contains(&key) {
            return Err(HubError::DuplicateTag {
                field: f,
                tag: t.to_owned(),
            });
        }
        seen.push(key);
        out.push(t.to_owned());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_trimmed_unique_without_case_and_never_empty() {
        let ok = normalize_tags("tags", &[" Fatura ".into(), "reembolso".into()]).expect("ok");
        assert_eq!(ok, vec!["Fatura", "reembolso"]);
        // Composed: one tag, whichever way its accent was typed, and one character.
        let decomposed = "Cafe\u{301}";
        assert_eq!(
            normalize_tags("tags", &[decomposed.into()]).expect("ok"),
            vec!["Café"]
        );
        assert!(matches!(
            normalize_tags("tags", &["café".into(), decomposed.into()]),
            Err(HubError::DuplicateTag { .. })
        ));
        assert!(normalize_tags("tags", &["e\u{301}".repeat(50)]).is_ok());
        assert!(matches!(
            normalize_tags("tags", &["VIP".into(), "vip ".into()]),
            Err(HubError::DuplicateTag { .. })
        ));
        assert!(matches!(
            normalize_tags("tags", &["  ".into()]),
            Err(HubError::Invalid { .. })
        ));
        // 50 characters, multi-byte, is fine; 51 is not.
        assert!(normalize_tags("tags", &["ž".repeat(50)]).is_ok());
        assert!(matches!(
            normalize_tags("tags", &["ž".repeat(51)]),
            Err(HubError::TooLong { limit: 50, .. })
        ));
    }
}
