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
/// `pos` means what lay between is gone (or there was nothing: a reload of the
/// snapshot then does no harm). `XINFO STREAM`'s `max-deleted-entry-id` cannot tell:
/// `XTRIM` does not move it. "0-0": nothing applied yet, nothing to miss.
pub(super) fn trimmed_past(pos: &str, first_entry_reply: &Value) -> Option<String> {
    if pos == "0-0" {
        return None;
    }
    let mut head = Vec::new();
    entries_of(first_entry_reply, &mut head);
    head.into_iter()
        .next()
        .map(|(id, _)| id)
        .filter(|id| position_lt(pos, id))
}

/// Whether stream position `a` comes before `b`.
pub(super) fn position_lt(a: &str, b: &str) -> bool {
    let parse = |s: &str| -> (u64, u64) {
        let mut it = s.split('-');
        let ms = it.next().and_then(|x| x.parse().ok()).unwrap_or(0);
        let seq = it.next().and_then(|x| x.parse().ok()).unwrap_or(0);
        (ms, seq)
    };
    parse(a) < parse(b)
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// The entries of an `XRANGE` reply (or of one stream in an `XREAD` reply):
/// (position, field `e`).
pub(super) fn entries_of(v: &Value, out: &mut Vec<(String, Vec<u8>)>) {
    let Value::Array(entries) = v else { return };
    for e in entries {
        let Value::Array(pair) = e else { continue };
        let (Some(id), Some(Value::Array(fields))) = (pair.first().and_then(text), pair.get(1))
        else {
            continue;
        };
        let mut it = fields.iter();
        while let (Some(k), Some(val)) = (it.next(), it.next()) {
            if text(k).as_deref() == Some("e") {
                if let Value::BulkString(b) = val {
                    out.push((id.clone(), b.clone()));
                }
            }
        }
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
    fn positions_compare_numerically() {
        assert!(position_lt("999-5", "1000-0"));
        assert!(position_lt("1000-2", "1000-10"));
        assert!(!position_lt("1000-10", "1000-10"));
    }
}
