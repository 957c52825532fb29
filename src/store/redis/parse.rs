//! Reading Redis replies: stream entries, stream positions.

use redis::Value;

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
