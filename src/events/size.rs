//! How many bytes an event's wire text can take, known without making it.
//!
//! The window's byte limit (`[events] retain_mib`) counts what its events' wire text
//! takes. That text is made only when a reader first asks for it
//! ([`Envelope::json`](super::Envelope::json)), so the window charges each event this
//! bound instead, from its fields: the same on every replica (the window must be), never
//! below the text's real length (so the limit still bounds the memory the texts take
//! once read), and close to it (a few bytes per field: the longest key's room, the
//! widest timestamp and number; strings are counted exactly, escapes included). Every
//! made text is checked against its bound in debug builds (`Envelope::json`).

use super::EventData;
use crate::task::{CustomerIdentity, Task, TaskState};
use serde_json::{Map, Value};

/// One field's room besides its value: the longest key of any event's data or of a task
/// (15 characters: `previous_reason`, `idempotency_key`), its quotes, the colon and the
/// comma.
const FIELD: usize = 19;
/// A uuid in quotes.
const UUID: usize = 38;
/// A timestamp in quotes: RFC 3339 with milliseconds, 24 characters up to the year
/// 9999, 27 past it (`+262143-…`).
const TS: usize = 29;
/// A unit variant's name in quotes (`not_ready`, `agent_offline`, `transferred`).
const NAME: usize = 16;
/// A number: 20 characters for any integer, 24 for a float (serde_json's buffers).
const NUMBER: usize = 24;
/// `null`, `false`.
const SCALAR: usize = 5;

/// The most bytes of the whole envelope `{"id", "type", "seq", "time", "epoch", "data"}`
/// (`super::wire`) of `data` numbered `seq` in `epoch`.
pub fn wire_bound(epoch: &str, seq: u64, data: &EventData) -> usize {
    // {"id":"E-S","type":"T","seq":S,"time":"…","epoch":"E","data":D}
    let head = r#"{"id":"-","type":"","seq":,"time":,"epoch":"","data":}"#.len();
    head + 2 * epoch.len() + 2 * digits(seq) + data.type_name().len() + TS + data_bound(data)
}

/// The most bytes of the `data` object of one event.
fn data_bound(data: &EventData) -> usize {
    use EventData::*;
    // The object's braces, then each field's room and value.
    let fields = |n: usize, values: usize| 2 + n * FIELD + values;
    match data {
        TaskCreated { task } => fields(1, task_bound(task)),
        TaskQueued { queue, .. } => fields(6, UUID + s(&queue.0) + NAME + NUMBER + TS + SCALAR),
        TaskOffered {
            agent_id, queue, ..
        } => fields(6, 2 * UUID + s(&agent_id.0) + s(&queue.0) + NAME + TS),
        OfferAccepted { agent_id, .. } | OfferExpired { agent_id, .. } => {
            fields(3, 2 * UUID + s(&agent_id.0))
        }
        OfferDeclined {
            agent_id, reason, ..
        } => fields(4, 2 * UUID + s(&agent_id.0) + opt(reason)),
        OfferWithdrawn { agent_id, .. } => fields(4, 2 * UUID + s(&agent_id.0) + NAME),
        TaskAssigned {
            agent_id, queue, ..
        } => fields(8, 4 * UUID + s(&agent_id.0) + s(&queue.0) + NAME + TS),
        TaskCompleted {
            agent_id,
            queue,
            wrap_up_code,
            ..
        } => fields(
            6,
            UUID + s(&agent_id.0) + s(&queue.0) + NAME + TS + opt(wrap_up_code),
        ),
        TaskCancelled { queue, reason, .. } => {
            fields(6, UUID + s(&queue.0) + 2 * NAME + TS + opt(reason))
        }
        TaskTransferred {
            from_agent,
            from_queue,
            to_agent,
            to_queue,
            ..
        } => fields(
            5,
            UUID + opt_str(from_agent.as_ref().map(|a| &*a.0))
                + s(&from_queue.0)
                + opt_str(to_agent.as_ref().map(|a| &*a.0))
                + s(&to_queue.0),
        ),
        AgentLoggedIn { agent_id } => fields(1, s(&agent_id.0)),
        AgentStateChanged {
            agent_id,
            reason,
            previous_reason,
            ..
        } => fields(
            6,
            s(&agent_id.0) + 2 * NAME + opt(reason) + opt(previous_reason) + TS,
        ),
        AgentLoggedOut { agent_id, .. } => fields(2, s(&agent_id.0) + SCALAR),
        AgentConnectionLost { agent_id, .. } => fields(2, s(&agent_id.0) + TS),
        CustomerCreated { .. } | CustomerUpdated { .. } => fields(2, UUID + NUMBER),
        RequestOpened { .. } | RequestClosed { .. } | RequestReopened { .. } => fields(2, 2 * UUID),
        ActivityCreated { .. } => fields(4, 4 * UUID),
        ActivityClosed { .. } => fields(3, 3 * UUID),
        NodeLost { node } => fields(1, s(node)),
    }
}

/// The most bytes of a task as JSON (its serde form: the state's fields flattened in).
fn task_bound(t: &Task) -> usize {
    // task_id, channel, queue, priority, skills, skill_levels, customer, attributes,
    // created_at, state and at most three state fields, offers, idempotency_key,
    // transfers.
    let state = match &t.state {
        TaskState::Queued => 0,
        TaskState::Offered { agent_id, .. } => UUID + s(&agent_id.0) + TS,
        TaskState::Assigned { agent_id, .. } => s(&agent_id.0) + TS,
        TaskState::Completed {
            agent_id,
            wrap_up_code,
            ..
        } => s(&agent_id.0) + TS + opt(wrap_up_code),
        TaskState::Cancelled { reason, .. } => TS + opt(reason),
    };
    let skills: usize = 2 + t.skills.iter().map(|k| s(k) + 1).sum::<usize>();
    let levels: usize = 2 + t.skill_levels.keys().map(|k| s(k) + 5).sum::<usize>();
    2 + 16 * FIELD
        + UUID
        + NAME
        + s(&t.queue.0)
        + NUMBER
        + skills
        + levels
        + customer_bound(&t.customer)
        + map_bound(&t.attributes)
        + TS
        + NAME
        + state
        + NUMBER
        + opt(&t.idempotency_key)
        + NUMBER
}

fn customer_bound(c: &CustomerIdentity) -> usize {
    2 + 4 * FIELD + opt(&c.phone) + opt(&c.email) + opt(&c.chat_handle) + opt(&c.name)
}

fn map_bound(m: &Map<String, Value>) -> usize {
    2 + m
        .iter()
        .map(|(k, v)| esc(k) + 2 + value_bound(v))
        .sum::<usize>()
}

fn value_bound(v: &Value) -> usize {
    match v {
        Value::Null | Value::Bool(_) => SCALAR,
        Value::Number(_) => NUMBER,
        Value::String(x) => esc(x),
        Value::Array(items) => 2 + items.iter().map(|i| value_bound(i) + 1).sum::<usize>(),
        Value::Object(m) => map_bound(m),
    }
}

/// A string in quotes (an id, a queue, a reason).
fn s(x: &str) -> usize {
    esc(x)
}

fn opt(x: &Option<String>) -> usize {
    opt_str(x.as_deref())
}

fn opt_str(x: Option<&str>) -> usize {
    x.map_or(SCALAR, esc)
}

/// A string as JSON, exactly as serde_json writes it: its quotes, its bytes, one more
/// for each `"`, `\\` and `\n`-style escape, five more for each other control
/// character (`\u001f`).
fn esc(x: &str) -> usize {
    let extra: usize = x
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 1,
            0..=0x1f => 5,
            _ => 0,
        })
        .sum();
    2 + x.len() + extra
}

fn digits(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Ts;
    use crate::events::{Envelope, TaskPhase, WithdrawReason};
    use crate::ids::{AgentId, Channel, OfferId, QueueId, TaskId};
    use std::sync::Arc;

    fn uuid(n: u128) -> uuid::Uuid {
        uuid::Uuid::from_u128(n.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834))
    }

    /// Strings that JSON escapes the most and the least, and ones in other scripts.
    fn texts() -> Vec<String> {
        vec![
            String::new(),
            "plain".into(),
            "\u{1}\u{1f}\"\\\n\t".repeat(40),
            "Ђорђе Đorđević 😀".into(),
            "x".repeat(2000),
        ]
    }

    fn task(text: &str, state: TaskState) -> Task {
        let mut attributes = Map::new();
        attributes.insert(text.into(), Value::String(text.into()));
        attributes.insert(
            "n".into(),
            serde_json::json!([-9_223_372_036_854_775_808i64, u64::MAX, -1.7976931348623157e308, 5e-324, null, true, {"deep": [text]}]),
        );
        Task {
            task_id: TaskId(uuid(1)),
            channel: Channel::Email,
            queue: QueueId::from(format!("{text}q").as_str()),
            priority: -9_223_372_036_854_775_807,
            skills: vec![text.into(), "b".into()],
            skill_levels: [(text.to_owned() + "s", 10u8)].into(),
            customer: CustomerIdentity {
                phone: Some(text.into()),
                email: Some(text.into()),
                chat_handle: Some(text.into()),
                name: Some(text.into()),
            },
            attributes,
            created_at: Ts(u64::MAX),
            state,
            offers: u32::MAX,
            idempotency_key: Some(text.into()),
            transfers: u32::MAX,
            head: false,
            handoff: None,
            epoch: 0,
            seq: 0,
            excluded: vec![],
            passed: vec![],
        }
    }

    /// Every variant, its strings filled with `text`, its numbers and times at their
    /// widest.
    fn every_event(text: &str) -> Vec<EventData> {
        let agent = AgentId::from(format!("{text}a").as_str());
        let queue = QueueId::from(format!("{text}q").as_str());
        let some = Some(text.to_owned());
        let t = Ts(253_402_300_799_999_999);
        let task_id = TaskId(uuid(2));
        let offer_id = OfferId(uuid(3));
        let mut out = vec![];
        for state in [
            TaskState::Queued,
            TaskState::Offered {
                offer_id,
                agent_id: agent.clone(),
                deadline: t,
            },
            TaskState::Assigned {
                agent_id: agent.clone(),
                accepted_at: t,
            },
            TaskState::Completed {
                agent_id: agent.clone(),
                completed_at: t,
                wrap_up_code: some.clone(),
            },
            TaskState::Cancelled {
                cancelled_at: t,
                reason: some.clone(),
            },
        ] {
            out.push(EventData::TaskCreated {
                task: Arc::new(task(text, state)),
            });
        }
        out.extend([
            EventData::TaskQueued {
                task_id,
                queue: queue.clone(),
                channel: Channel::Voice,
                priority: i64::MIN,
                enqueued_at: t,
                requeued: false,
            },
            EventData::TaskOffered {
                task_id,
                offer_id,
                agent_id: agent.clone(),
                queue: queue.clone(),
                channel: Channel::Email,
                deadline: t,
            },
            EventData::OfferAccepted {
                task_id,
                offer_id,
                agent_id: agent.clone(),
            },
            EventData::OfferDeclined {
                task_id,
                offer_id,
                agent_id: agent.clone(),
                reason: some.clone(),
            },
            EventData::OfferExpired {
                task_id,
                offer_id,
                agent_id: agent.clone(),
            },
            EventData::OfferWithdrawn {
                task_id,
                offer_id,
                agent_id: agent.clone(),
                reason: WithdrawReason::AgentOffline,
            },
            EventData::TaskAssigned {
                task_id,
                agent_id: agent.clone(),
                queue: queue.clone(),
                channel: Channel::Voice,
                enqueued_at: t,
                activity_id: Some(crate::ids::ActivityId(uuid(4))),
                customer_id: Some(crate::ids::CustomerId(uuid(5))),
                request_id: Some(crate::ids::RequestId(uuid(6))),
            },
            EventData::TaskCompleted {
                task_id,
                agent_id: agent.clone(),
                queue: queue.clone(),
                channel: Channel::Chat,
                accepted_at: t,
                wrap_up_code: some.clone(),
            },
            EventData::TaskCancelled {
                task_id,
                queue: queue.clone(),
                channel: Channel::Email,
                phase: TaskPhase::Assigned,
                enqueued_at: t,
                reason: some.clone(),
            },
            EventData::TaskTransferred {
                task_id,
                from_agent: Some(agent.clone()),
                from_queue: queue.clone(),
                to_agent: Some(agent.clone()),
                to_queue: queue.clone(),
            },
            EventData::AgentLoggedIn {
                agent_id: agent.clone(),
            },
            EventData::AgentStateChanged {
                agent_id: agent.clone(),
                status: crate::agent::Status::NotReady,
                reason: some.clone(),
                previous: crate::agent::Status::WrapUp,
                previous_reason: some.clone(),
                previous_since: t,
            },
            EventData::AgentLoggedOut {
                agent_id: agent.clone(),
                by_supervisor: false,
            },
            EventData::AgentConnectionLost {
                agent_id: agent.clone(),
                grace_until: t,
            },
            EventData::CustomerCreated {
                customer_id: crate::ids::CustomerId(uuid(7)),
                version: u64::MAX,
            },
            EventData::CustomerUpdated {
                customer_id: crate::ids::CustomerId(uuid(7)),
                version: u64::MAX,
            },
            EventData::RequestOpened {
                request_id: crate::ids::RequestId(uuid(8)),
                customer_id: crate::ids::CustomerId(uuid(7)),
            },
            EventData::RequestClosed {
                request_id: crate::ids::RequestId(uuid(8)),
                customer_id: crate::ids::CustomerId(uuid(7)),
            },
            EventData::RequestReopened {
                request_id: crate::ids::RequestId(uuid(8)),
                customer_id: crate::ids::CustomerId(uuid(7)),
            },
            EventData::ActivityCreated {
                activity_id: crate::ids::ActivityId(uuid(9)),
                request_id: Some(crate::ids::RequestId(uuid(8))),
                customer_id: Some(crate::ids::CustomerId(uuid(7))),
                task_id: Some(task_id),
            },
            EventData::ActivityClosed {
                activity_id: crate::ids::ActivityId(uuid(9)),
                request_id: Some(crate::ids::RequestId(uuid(8))),
                customer_id: Some(crate::ids::CustomerId(uuid(7))),
            },
            EventData::NodeLost { node: text.into() },
        ]);
        out
    }

    #[test]
    fn the_bound_is_never_below_the_wire_text_and_close_above_it() {
        let epoch: Arc<str> = Arc::from("0123456789ab");
        let mut types = std::collections::BTreeSet::new();
        for text in texts() {
            for (i, data) in every_event(&text).into_iter().enumerate() {
                types.insert(data.type_name());
                let seq = [1, 99_999, u64::MAX][i % 3];
                // The time past 9999 in half of them: chrono writes those.
                let time = Ts([1_700_000_000_000_000, u64::MAX / 2][i % 2]);
                let bound = wire_bound(&epoch, seq, &data);
                let env = Envelope::new(epoch.clone(), seq, time, data);
                let len = env.json().len();
                assert!(bound >= len, "{}: bound {bound} < {len}", env.type_name());
                // The slack: a few bytes per field, not a multiple of the text.
                assert!(
                    bound <= len + len / 2 + 400,
                    "{}: bound {bound} for {len}",
                    env.type_name()
                );
            }
        }
        assert_eq!(types.len(), EventData::TYPES.len(), "every type tried");
    }

    #[test]
    fn strings_are_counted_exactly() {
        let mut every_byte: String = (0u8..0x80).map(char::from).collect();
        every_byte.push_str("Ђорђе 😀");
        for x in ["", "ab", "\u{1}", "\"\\\n\r\t\u{8}\u{c}\u{1f}", &every_byte] {
            assert_eq!(
                esc(x),
                serde_json::to_string(x).map_or(0, |t| t.len()),
                "{x:?}"
            );
        }
        assert_eq!(digits(0), 1);
        assert_eq!(digits(9), 1);
        assert_eq!(digits(10), 2);
        assert_eq!(digits(u64::MAX), 20);
    }
}
