//! The parts of the hub's frames the harness reads. Unknown fields are ignored, so a
//! richer protocol does not break the harness; missing ones are errors.

use serde::Deserialize;

/// A channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// A call.
    Voice,
    /// A chat.
    Chat,
    /// An email.
    Email,
}

impl Channel {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Voice => "voice",
            Channel::Chat => "chat",
            Channel::Email => "email",
        }
    }

    /// Index 0..3, for per-channel counts.
    pub fn index(self) -> usize {
        match self {
            Channel::Voice => 0,
            Channel::Chat => 1,
            Channel::Email => 2,
        }
    }
}

/// Any frame from the hub.
#[derive(Debug, Deserialize)]
pub struct Frame {
    /// Its type.
    #[serde(rename = "type")]
    pub ty: String,
    /// The request id a reply or error answers.
    #[serde(default)]
    pub re: Option<String>,
    /// `offer`: the offer.
    #[serde(default)]
    pub offer: Option<OfferMsg>,
    /// `offer_ended`: the offer.
    #[serde(default)]
    pub offer_id: Option<String>,
    /// `offer_ended`, `task_cancelled`: the task.
    #[serde(default)]
    pub task_id: Option<String>,
    /// `offer_ended`, `goodbye`: why.
    #[serde(default)]
    pub reason: Option<String>,
    /// `welcome`, `state`: the agent's view.
    #[serde(default)]
    pub agent: Option<AgentMsg>,
    /// `error`: the code.
    #[serde(default)]
    pub code: Option<String>,
    /// `error`: the message.
    #[serde(default)]
    pub message: Option<String>,
    /// `reply`: the result, as far as it is read.
    #[serde(default)]
    pub result: Option<ResultMsg>,
}

/// A reply's result: only the activity an accept opened is read.
#[derive(Debug, Deserialize)]
pub struct ResultMsg {
    /// The interaction the accept opened (customer context).
    #[serde(default)]
    pub activity: Option<ActivityRef>,
}

/// An activity, by id.
#[derive(Debug, Deserialize)]
pub struct ActivityRef {
    /// Its id.
    pub activity_id: String,
}

/// An offer.
#[derive(Debug, Deserialize)]
pub struct OfferMsg {
    /// Its id.
    pub offer_id: String,
    /// When it expires (RFC 3339, hub clock).
    pub deadline: String,
    /// Its timeout.
    pub timeout_ms: u64,
    /// The task.
    pub task: TaskMsg,
}

/// A task, as far as the harness reads it.
#[derive(Debug, Deserialize)]
pub struct TaskMsg {
    /// Its id.
    pub task_id: String,
    /// Its channel.
    pub channel: Channel,
    /// The key it was created with.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// How many times it has been offered.
    #[serde(default)]
    pub offers: u32,
    /// Its state (`queued`, `offered`, `assigned`, `completed`, `cancelled`).
    #[serde(default)]
    pub state: Option<String>,
    /// The agent, for offered, assigned and completed tasks.
    #[serde(default)]
    pub agent_id: Option<String>,
}

/// An agent view, as far as the harness reads it.
#[derive(Debug, Deserialize)]
pub struct AgentMsg {
    /// Its status.
    pub status: String,
    /// Its version.
    pub version: u64,
    /// Its In Progress list.
    #[serde(default)]
    pub in_progress: Vec<TaskMsg>,
}

/// Milliseconds since the epoch of an RFC 3339 UTC time as the hub writes it
/// (`2026-05-01T12:34:56.789Z`, with or without fractional seconds).
pub fn rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let rest = s.get(19..)?;
    let (frac, tz) = match rest.strip_prefix('.') {
        Some(r) => {
            let digits = r.bytes().take_while(u8::is_ascii_digit).count();
            let f = r.get(..digits)?;
            let mut ms: i64 = 0;
            for (i, c) in f.bytes().take(3).enumerate() {
                ms += i64::from(c - b'0') * [100, 10, 1][i];
            }
            (ms, r.get(digits..)?)
        }
        None => (0, rest),
    };
    if tz != "Z" && tz != "+00:00" {
        return None;
    }
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + h) * 60 + mi) * 60_000 + sec * 1000 + frac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_hubs_timestamps() {
        assert_eq!(rfc3339_ms("1970-01-01T00:00:00.000Z"), Some(0));
        assert_eq!(rfc3339_ms("1970-01-01T00:00:01.5Z"), Some(1500));
        assert_eq!(rfc3339_ms("2000-03-01T00:00:00Z"), Some(951_868_800_000));
        assert_eq!(
            rfc3339_ms("2026-05-01T12:34:56.789Z"),
            Some(1_777_638_896_789)
        );
        assert_eq!(rfc3339_ms("garbage"), None);
    }

    #[test]
    fn reads_an_offer_frame_and_ignores_the_rest() {
        let f: Frame = serde_json::from_str(
            r#"{"type":"offer","offer":{"offer_id":"o1","deadline":"2026-05-01T12:34:56.789Z","timeout_ms":15000,
               "task":{"task_id":"t1","channel":"chat","queue":"q","priority":0,"skills":[],"customer":{},
               "attributes":{},"created_at":"2026-05-01T12:34:41.789Z","state":"offered","offer_id":"o1",
               "agent_id":"a","deadline":"2026-05-01T12:34:56.789Z","offers":1,"idempotency_key":"lt-x-3"}}}"#,
        )
        .expect("parse");
        let o = f.offer.expect("offer");
        assert_eq!(o.task.channel, Channel::Chat);
        assert_eq!(o.task.offers, 1);
        assert_eq!(o.task.idempotency_key.as_deref(), Some("lt-x-3"));
    }
}
