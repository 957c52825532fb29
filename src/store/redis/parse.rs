//! Reading Redis replies: stream entries, stream positions.

use redis::Value;

/// `XRANGE <log> - + COUNT 1`: the stream's first entry.
pub(super) fn first_entry(log: &str) -> redis::Cmd {
    let mut c = redis::cmd("XRANGE");
    c.arg(log).arg("-").arg("+").arg("COUNT").arg(1);
    c
}

/// Whether entries after position `pos` may have been trimmed away, from the reply of
/// [`first_entry`]: a trim only removes the start of the stream, so a first entry past
/// the one right after `pos` means what lay between is gone (or there was nothing: a
/// reload of the snapshot then does no harm). `XINFO STREAM`'s `max-deleted-entry-id`
/// cannot tell: `XTRIM` does not move it. "0-0": nothing applied yet, nothing to miss.
pub(super) fn trimmed_past(pos: &str, first_entry_reply: &Value) -> Option<String> {
    if pos == "0-0" {
        return None;
    }
    let mut head = Vec::new();
    entries_of(first_entry_reply, &mut head);
    head.into_iter()
        .next()
        .map(|(id, _)| id)
        .filter(|id| position_lt(pos, &predecessor(id)))
}

/// Whether the reply of [`first_entry`] says the stream has no entry at all.
pub(super) fn log_is_empty(first_entry_reply: &Value) -> bool {
    let mut head = Vec::new();
    entries_of(first_entry_reply, &mut head);
    head.is_empty()
}

/// Whether a node at `pos` lost history the log no longer holds: entries after it were
/// trimmed, or (at a position past the start) the log holds none at all. Neither happens
/// while Redis keeps its data: a trim keeps the entry at every live node's position.
pub(super) fn lost_past(pos: &str, first_entry_reply: &Value) -> bool {
    pos != "0-0"
        && (log_is_empty(first_entry_reply) || trimmed_past(pos, first_entry_reply).is_some())
}

/// The stream position right before `id` (`"0-0"` before the first one there can be):
/// a snapshot placed there is followed by the entry `id` with nothing in between.
pub(super) fn predecessor(id: &str) -> String {
    match parse_position(id) {
        (0, 0) => "0-0".into(),
        (ms, 0) => format!("{}-{}", ms - 1, u64::MAX),
        (ms, seq) => format!("{ms}-{}", seq - 1),
    }
}

fn parse_position(s: &str) -> (u64, u64) {
    let mut it = s.split('-');
    let ms = it.next().and_then(|x| x.parse().ok()).unwrap_or(0);
    let seq = it.next().and_then(|x| x.parse().ok()).unwrap_or(0);
    (ms, seq)
}

/// Whether stream position `a` comes before `b`.
pub(super) fn position_lt(a: &str, b: &str) -> bool {
    parse_position(a) < parse_position(b)
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// The entries of an `XRANGE` reply (or of one stream in an `XREAD` reply):
/// (position, field `e`). An entry without a readable `e` (one a newer version or
/// another program appended: `XADD sb:log * x 1`) comes with an empty payload, which
/// [`crate::log::step`] skips while moving the position past it, the same on every
/// node. Left out, it was read again at once by every blocking read, for good: a node
/// spinning against Redis while it looked healthy.
pub(super) fn entries_of(v: &Value, out: &mut Vec<(String, Vec<u8>)>) {
    let Value::Array(entries) = v else { return };
    for e in entries {
        let Value::Array(pair) = e else { continue };
        let Some(id) = pair.first().and_then(text) else {
            continue;
        };
        let mut payload = Vec::new();
        if let Some(Value::Array(fields)) = pair.get(1) {
            let mut it = fields.iter();
            while let (Some(k), Some(val)) = (it.next(), it.next()) {
                if text(k).as_deref() == Some("e") {
                    if let Value::BulkString(b) = val {
                        payload = b.clone();
                    }
                }
            }
        }
        out.push((id, payload));
    }
}

/// The entries of an `XREAD` reply on one stream: (position, field `e`).
pub(super) fn parse_xread(v: Value) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    match v {
        Value::Array(streams) => {
            for s in &streams {
                if let Value::Array(kv) = s {
                    if let Some(entries) = kv.get(1) {
                        entries_of(entries, &mut out);
                    }
                }
            }
        }
        Value::Map(streams) => {
            for (_, entries) in &streams {
                entries_of(entries, &mut out);
            }
        }
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_without_a_payload_is_read_with_an_empty_one() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let reply = Value::Array(vec![
            Value::Array(vec![bulk("5-0"), Value::Array(vec![bulk("x"), bulk("1")])]),
            Value::Array(vec![bulk("6-0"), Value::Array(vec![bulk("e"), bulk("ok")])]),
            Value::Array(vec![bulk("7-0"), Value::Nil]),
        ]);
        let mut out = Vec::new();
        entries_of(&reply, &mut out);
        assert_eq!(
            out,
            [
                ("5-0".to_owned(), Vec::new()),
                ("6-0".to_owned(), b"ok".to_vec()),
                ("7-0".to_owned(), Vec::new())
            ]
        );
    }

    #[test]
    fn positions_compare_numerically() {
        assert!(position_lt("999-5", "1000-0"));
        assert!(position_lt("1000-2", "1000-10"));
        assert!(!position_lt("1000-10", "1000-10"));
    }

    fn first(id: &str) -> Value {
        Value::Array(vec![Value::Array(vec![
            Value::BulkString(id.into()),
            Value::Array(vec![
                Value::BulkString(b"e".to_vec()),
                Value::BulkString(b"x".to_vec()),
            ]),
        ])])
    }

    #[test]
    fn a_first_entry_right_after_the_position_is_no_gap() {
        assert_eq!(predecessor("1000-10"), "1000-9");
        assert_eq!(predecessor("1000-0"), format!("999-{}", u64::MAX));
        assert!(position_lt("999-5", &predecessor("1000-0")));
        assert_eq!(trimmed_past("1000-9", &first("1000-10")), None);
        assert_eq!(
            trimmed_past(&format!("999-{}", u64::MAX), &first("1000-0")),
            None
        );
        assert_eq!(trimmed_past("1000-5", &first("1000-3")), None);
        assert_eq!(
            trimmed_past("1000-5", &first("1000-7")),
            Some("1000-7".into())
        );
        assert_eq!(trimmed_past("0-0", &first("1000-7")), None);
    }
}
