//! Tasks: what an integration feeds in (a call, a chat, an email), its validation, and
//! the record the hub keeps while routing it.

use crate::clock::Ts;
use crate::error::HubError;
use crate::ids::{AgentId, Channel, OfferId, QueueId, TaskId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The most characters a text field holds (the agent desktops' rule).
pub const MAX_TEXT_CHARS: usize = 2000;
/// The most characters of a skill name or an idempotency key.
pub const MAX_NAME_CHARS: usize = 100;
/// The most skills a task may require.
pub const MAX_SKILLS: usize = 32;
/// How deep intake attributes may nest.
pub const MAX_ATTRIBUTE_DEPTH: usize = 6;
/// The range of task priorities; higher is served first.
pub const PRIORITY_RANGE: std::ops::RangeInclusive<i64> = 0..=1000;

/// How the customer reached us: what is known of their identity at intake.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerIdentity {
    /// A phone number (the caller id, for voice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// An email address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// A chat handle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_handle: Option<String>,
    /// A name the customer gave (pre-chat form, email display name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// The body of `POST /v1/tasks`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTask {
    /// The task's medium.
    pub channel: Channel,
    /// The queue it waits in.
    pub queue: String,
    /// Higher is served first; default 0.
    #[serde(default)]
    pub priority: i64,
    /// Skills an agent needs, on top of the queue's own.
    #[serde(default)]
    pub skills: Vec<String>,
    /// Skills with the least level (1 to 10) an agent needs; each is also a skill.
    #[serde(default)]
    pub skill_levels: std::collections::BTreeMap<String, u8>,
    /// What is known of the customer.
    #[serde(default)]
    pub customer: CustomerIdentity,
    /// Free attributes from intake: survey answers, pages visited, visitor details.
    #[serde(default)]
    pub attributes: Map<String, Value>,
    /// A retried create with the same key returns the same task.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// Where a task is in its life.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum TaskState {
    /// Waiting in its queue.
    Queued,
    /// Offered to one agent.
    Offered {
        /// The offer.
        offer_id: OfferId,
        /// The agent.
        agent_id: AgentId,
        /// When the offer expires.
        deadline: Ts,
    },
    /// Accepted: in the agent's In Progress list.
    Assigned {
        /// The agent.
        agent_id: AgentId,
        /// When it was accepted.
        accepted_at: Ts,
    },
    /// Done.
    Completed {
        /// The agent.
        agent_id: AgentId,
        /// When.
        completed_at: Ts,
        /// The wrap-up code the agent gave.
        #[serde(skip_serializing_if = "Option::is_none")]
        wrap_up_code: Option<String>,
    },
    /// Cancelled from outside (the caller hung up, the chat was abandoned).
    Cancelled {
        /// When.
        cancelled_at: Ts,
        /// Why, as the integration said.
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

impl TaskState {
    /// Completed or cancelled.
    pub fn is_finished(&self) -> bool {
        matches!(
            self,
            TaskState::Completed { .. } | TaskState::Cancelled { .. }
        )
    }
}

/// A task as the hub keeps it, and as the wire protocol shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// Its id.
    pub task_id: TaskId,
    /// Its medium.
    pub channel: Channel,
    /// The queue it waits in.
    pub queue: QueueId,
    /// Higher is served first.
    pub priority: i64,
    /// Skills an agent needs (the task's and the queue's), sorted.
    pub skills: Vec<String>,
    /// The least level an agent needs in some of those skills, now: the queue's
    /// escalation may lower them as the task waits. Absent when none.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub skill_levels: std::collections::BTreeMap<String, u8>,
    /// What is known of the customer.
    pub customer: CustomerIdentity,
    /// Free attributes from intake.
    pub attributes: Map<String, Value>,
    /// When the task arrived.
    pub created_at: Ts,
    /// Where it is in its life.
    #[serde(flatten)]
    pub state: TaskState,
    /// How many times it has been offered.
    pub offers: u32,
    /// The idempotency key it was created with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// How many times it has been transferred (absent when never).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub transfers: u32,
    /// Transferred to the head of its queue: it waits ahead of every task without this.
    #[serde(skip)]
    pub head: bool,
    /// A transfer to one agent in flight: the offer to `to`, asked by `from`.
    #[serde(skip)]
    pub handoff: Option<Handoff>,
    /// Grows each time the task starts waiting in a queue with escalation timers
    /// armed: a timer armed under an older epoch does nothing.
    #[serde(skip)]
    pub epoch: u32,
    /// Arrival order: with the priority, the task's place in its queue. A task that
    /// comes back from an agent keeps it.
    #[serde(skip)]
    pub seq: u64,
    /// Agents who declined or missed it within the queue's re-offer time: it does not
    /// go back to them until that time has passed (a timer in the routing book moves
    /// them to `passed`).
    #[serde(skip)]
    pub excluded: Vec<AgentId>,
    /// Agents who declined or missed it longer ago than the re-offer time: they may
    /// have it again, but only when no other eligible agent is open for it.
    #[serde(skip)]
    pub passed: Vec<AgentId>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A transfer to one agent, from its offer to its end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handoff {
    /// The agent who had the task, told how the transfer ended; none when a supervisor
    /// or an integration moved a task no agent had.
    pub from: Option<AgentId>,
    /// The agent it is offered to.
    pub to: AgentId,
}

impl NewTask {
    /// Checks every field against the limits. Queue existence is the router's to check.
    pub fn validate(&self) -> Result<(), HubError> {
        if !PRIORITY_RANGE.contains(&self.priority) {
            return Err(HubError::invalid(
                "priority",
                format!(
                    "must be between {} and {}",
                    PRIORITY_RANGE.start(),
                    PRIORITY_RANGE.end()
                ),
            ));
        }
        check_name("queue", &self.queue)?;
        if self.skills.len() > MAX_SKILLS {
            return Err(HubError::invalid(
                "skills",
                format!("at most {MAX_SKILLS} skills"),
            ));
        }
        for (i, s) in self.skills.iter().enumerate() {
            check_name(&format!("skills[{i}]"), s)?;
        }
        if self.skills.len() + self.skill_levels.len() > MAX_SKILLS {
            return Err(HubError::invalid(
                "skill_levels",
                format!("at most {MAX_SKILLS} skills, with and without levels"),
            ));
        }
        for (s, l) in &self.skill_levels {
            check_name(&format!("skill_levels.{s}"), s)?;
            if !(1..=10).contains(l) {
                return Err(HubError::invalid(
                    format!("skill_levels.{s}"),
                    "must be a level from 1 to 10",
                ));
            }
        }
        let c = &self.customer;
        for (field, v) in [
            ("customer.phone", &c.phone),
            ("customer.email", &c.email),
            ("customer.chat_handle", &c.chat_handle),
            ("customer.name", &c.name),
        ] {
            if let Some(v) = v {
                check_text(field, v)?;
            }
        }
        // A blank way to reach the caller is no way: it would be a lookup key every
        // other blank caller shares, and the next one would be attached to whoever
        // claimed it first.
        for (field, v) in [
            ("customer.phone", &c.phone),
            ("customer.email", &c.email),
            ("customer.chat_handle", &c.chat_handle),
        ] {
            if v.as_ref().is_some_and(|v| v.trim().is_empty()) {
                return Err(HubError::invalid(
                    field,
                    "must not be blank (leave it out when it is not known)",
                ));
            }
        }
        if let Some(k) = &self.idempotency_key {
            check_name("idempotency_key", k)?;
        }
        for (k, v) in &self.attributes {
            check_attribute(&format!("attributes.{k}"), k, v, 1)?;
        }
        Ok(())
    }
}

/// A text field: at most [`MAX_TEXT_CHARS`] characters (not bytes).
pub fn check_text(field: &str, v: &str) -> Result<(), HubError> {
    if v.chars().count() > MAX_TEXT_CHARS {
        return Err(HubError::TooLong {
            field: field.to_owned(),
            limit: MAX_TEXT_CHARS,
        });
    }
    Ok(())
}

/// A name (skill, queue, key): 1 to [`MAX_NAME_CHARS`] characters, not blank.
pub fn check_name(field: &str, v: &str) -> Result<(), HubError> {
    if v.trim().is_empty() {
        return Err(HubError::invalid(field, "must not be empty"));
    }
    if v.chars().count() > MAX_NAME_CHARS {
        return Err(HubError::TooLong {
            field: field.to_owned(),
            limit: MAX_NAME_CHARS,
        });
    }
    Ok(())
}

fn check_attribute(field: &str, key: &str, v: &Value, depth: usize) -> Result<(), HubError> {
    if key.chars().count() > MAX_NAME_CHARS {
        return Err(HubError::TooLong {
            field: format!("{field} (key)"),
            limit: MAX_NAME_CHARS,
        });
    }
    if depth > MAX_ATTRIBUTE_DEPTH {
        return Err(HubError::invalid(
            field,
            format!("nests deeper than {MAX_ATTRIBUTE_DEPTH} levels"),
        ));
    }
    match v {
        Value::String(s) => check_text(field, s),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                check_attribute(&format!("{field}[{i}]"), "", item, depth + 1)?;
            }
            Ok(())
        }
        Value::Object(m) => {
            for (k, item) in m {
                check_attribute(&format!("{field}.{k}"), k, item, depth + 1)?;
            }
            Ok(())
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> NewTask {
        NewTask {
            channel: Channel::Chat,
            queue: "support".into(),
            priority: 0,
            skills: vec![],
            skill_levels: Default::default(),
            customer: CustomerIdentity::default(),
            attributes: Map::new(),
            idempotency_key: None,
        }
    }

    #[test]
    fn limits_count_characters_not_bytes() {
        let mut t = task();
        // 2,000 characters of Serbian Cyrillic is 4,000 bytes: allowed.
        t.customer.name = Some("Ђ".repeat(2000));
        assert!(t.validate().is_ok());
        t.customer.name = Some("Ђ".repeat(2001));
        match t.validate() {
            Err(HubError::TooLong { field, limit }) => {
                assert_eq!(field, "customer.name");
                assert_eq!(limit, 2000);
            }
            other => panic!("expected too long, got {other:?}"),
        }
    }

    #[test]
    fn nested_attributes_are_checked_with_their_path() {
        let mut t = task();
        t.attributes.insert(
            "portal".into(),
            serde_json::json!({"pages_visited": ["a", "😀".repeat(2001)]}),
        );
        match t.validate() {
            Err(HubError::TooLong { field, .. }) => {
                assert_eq!(field, "attributes.portal.pages_visited[1]")
            }
            other => panic!("expected too long, got {other:?}"),
        }
    }

    #[test]
    fn priority_out_of_range_is_refused() {
        let mut t = task();
        t.priority = 1001;
        assert!(matches!(t.validate(), Err(HubError::Invalid { .. })));
    }
}
