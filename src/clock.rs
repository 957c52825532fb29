//! Time as the hub's model sees it: microseconds since the UNIX epoch.
//!
//! The model never reads a clock itself; callers pass `now` in. [`Clock`] is the one
//! place that turns the runtime's clock into a [`Ts`]. It is anchored to
//! `tokio::time::Instant`, so a test that pauses tokio's clock moves the model's time
//! too, while timestamps stay comparable across nodes (they are wall-clock based).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point in time: microseconds since the UNIX epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ts(pub u64);

impl Ts {
    /// The timestamp `d` later than `self`.
    pub fn plus(self, d: Duration) -> Ts {
        Ts(self.0.saturating_add(d.as_micros() as u64))
    }
    /// Time elapsed from `earlier` to `self`, zero when `earlier` is later.
    pub fn since(self, earlier: Ts) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
    /// Milliseconds since the epoch.
    pub fn millis(self) -> u64 {
        self.0 / 1000
    }
    /// RFC 3339 text with millisecond precision, as the wire protocol carries it.
    pub fn rfc3339(self) -> String {
        if let Some(b) = self.rfc3339_bytes() {
            // Digits and ASCII punctuation only.
            return String::from_utf8_lossy(&b).into_owned();
        }
        self.rfc3339_chrono()
    }

    /// Appends [`Ts::rfc3339`] to `out`, with no string of its own in between.
    pub fn push_rfc3339(self, out: &mut String) {
        match self.rfc3339_bytes() {
            // Digits and ASCII punctuation only.
            Some(b) => out.push_str(std::str::from_utf8(&b).unwrap_or_default()),
            None => out.push_str(&self.rfc3339_chrono()),
        }
    }

    /// The text of [`Ts::rfc3339`] for the years 1970 to 9999, made without chrono's
    /// formatting machinery: every event and every frame carries a few timestamps, so
    /// this runs for each of them. `None` past 9999 (chrono writes those).
    fn rfc3339_bytes(self) -> Option<[u8; 24]> {
        // 10000-01-01T00:00:00Z.
        const END: u64 = 253_402_300_800;
        let secs = self.0 / 1_000_000;
        if secs >= END {
            return None;
        }
        let millis = (self.0 % 1_000_000) / 1000;
        let (days, rem) = (secs / 86_400, secs % 86_400);
        // Days to a civil date (H. Hinnant, "chrono-Compatible Low-Level Date
        // Algorithms"), on unsigned numbers: the dates here are after 1970.
        let z = days + 719_468;
        let era = z / 146_097;
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + u64::from(month <= 2);
        let mut b = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, width: usize, mut v: u64| {
            for i in (at..at + width).rev() {
                b[i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, 4, year);
        put(5, 2, month);
        put(8, 2, day);
        put(11, 2, rem / 3600);
        put(14, 2, rem % 3600 / 60);
        put(17, 2, rem % 60);
        put(20, 3, millis);
        Some(b)
    }

    fn rfc3339_chrono(self) -> String {
        let secs = (self.0 / 1_000_000) as i64;
        let nanos = ((self.0 % 1_000_000) * 1000) as u32;
        match chrono::DateTime::from_timestamp(secs, nanos) {
            Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            None => String::from("1970-01-01T00:00:00.000Z"),
        }
    }
}

/// On the wire (JSON) a timestamp is RFC 3339 text with milliseconds; in the
/// replication log and snapshots (binary) it is the exact microsecond count, so that a
/// replica loaded from a snapshot decides exactly like one that replayed the log.
impl Serialize for Ts {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            match self.rfc3339_bytes() {
                // Digits and ASCII punctuation: always UTF-8.
                Some(b) => s.serialize_str(std::str::from_utf8(&b).unwrap_or_default()),
                None => s.serialize_str(&self.rfc3339_chrono()),
            }
        } else {
            s.serialize_u64(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Ts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Ts, D::Error> {
        // Either form is accepted whatever the format claims: serde buffers flattened
        // fields in a form that always calls itself human-readable.
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Ts;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("microseconds since the epoch, or RFC 3339 text")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Ts, E> {
                Ok(Ts(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Ts, E> {
                u64::try_from(v)
                    .map(Ts)
                    .map_err(|_| E::custom("timestamp before 1970"))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Ts, E> {
                let t = chrono::DateTime::parse_from_rfc3339(s).map_err(E::custom)?;
                u64::try_from(t.timestamp_micros())
                    .map(Ts)
                    .map_err(|_| E::custom("timestamp before 1970"))
            }
        }
        d.deserialize_any(V)
    }
}

/// Reads the current time for the model.
#[derive(Clone, Debug)]
pub struct Clock {
    base_wall: Ts,
    base_instant: tokio::time::Instant,
}

impl Clock {
    /// A clock anchored now. Under a paused tokio clock it advances with `tokio::time::advance`.
    pub fn new() -> Clock {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros() as u64;
        Clock {
            base_wall: Ts(wall),
            base_instant: tokio::time::Instant::now(),
        }
    }

    /// The current time.
    pub fn now(&self) -> Ts {
        self.base_wall.plus(self.base_instant.elapsed())
    }

    /// The tokio instant at which `ts` falls, for sleeping until a deadline.
    pub fn instant_at(&self, ts: Ts) -> tokio::time::Instant {
        self.base_instant + ts.since(self.base_wall)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_has_millis() {
        assert_eq!(Ts(1_500_000).rfc3339(), "1970-01-01T00:00:01.500Z");
    }

    #[test]
    fn rfc3339_writes_what_chrono_writes() {
        let day = 86_400_000_000u64;
        let mut cases = vec![
            0,
            999,
            1_000,
            951_782_400_000_000,     // 2000-02-29
            951_868_799_999_999,     // its last microsecond
            4_107_542_400_000_000,   // 2100-03-01 (2100 is no leap year)
            253_402_300_799_999_999, // 9999-12-31T23:59:59.999999
            253_402_300_800_000_000, // 10000: chrono's path
            u64::MAX,
        ];
        // Every day of a leap-year cycle and more, at changing times of day.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for d in 0..(5 * 366) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            cases.push(1_700_000_000_000_000 + d * day + x % day);
            cases.push(x % 253_402_300_800_000_000);
        }
        for t in cases {
            assert_eq!(Ts(t).rfc3339(), Ts(t).rfc3339_chrono(), "{t}");
            let json = serde_json::to_string(&Ts(t)).expect("encodes");
            assert_eq!(json, format!("\"{}\"", Ts(t).rfc3339_chrono()), "{t}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn follows_paused_tokio_time() {
        let c = Clock::new();
        let t0 = c.now();
        tokio::time::advance(Duration::from_secs(15)).await;
        assert_eq!(c.now().since(t0), Duration::from_secs(15));
    }
}
