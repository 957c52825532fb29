//! The statistics' day: local midnight in the configured time zone.
//!
//! The rules come from the system's zoneinfo (TZif files, `/usr/share/zoneinfo`, or
//! `$TZDIR`), read once at start through `tz-rs`, a dependency-free parser: no time
//! zone database is compiled into the hub, and the zone follows the operating
//! system's tzdata updates. A day is the half-open span of instants whose local date
//! is the same, `[start, end)`; it is 23 or 25 hours long on a DST change, and where
//! local midnight does not exist (a zone that springs forward at 00:00) it starts at
//! the first instant of the date.

use crate::clock::Ts;
use tz::TimeZone;

/// Seconds in a calendar day.
const DAY: i64 = 86_400;

/// A time zone, by its IANA name.
#[derive(Debug)]
pub struct Zone {
    name: String,
    tz: TimeZone,
}

impl Zone {
    /// UTC.
    pub fn utc() -> Zone {
        Zone {
            name: "UTC".into(),
            tz: TimeZone::utc(),
        }
    }

    /// Loads a zone by its IANA name (`Europe/Rome`) from the system's zoneinfo.
    pub fn load(name: &str) -> Result<Zone, String> {
        if name == "UTC" {
            return Ok(Zone::utc());
        }
        // A name is a relative path of plain parts: never absolute, never `..`.
        let plain = |p: &str| {
            !p.is_empty()
                && p != "."
                && p != ".."
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+' | '.'))
        };
        if name.len() > 64 || !name.split('/').all(plain) {
            return Err(format!("{name:?} is not an IANA time zone name"));
        }
        let dirs: Vec<String> = match std::env::var("TZDIR") {
            Ok(d) if !d.is_empty() => vec![d],
            _ => vec!["/usr/share/zoneinfo".into(), "/usr/lib/zoneinfo".into()],
        };
        let mut last = String::new();
        for d in &dirs {
            let path = format!("{d}/{name}");
            match std::fs::read(&path) {
                Ok(bytes) => {
                    let tz = TimeZone::from_tz_data(&bytes)
                        .map_err(|e| format!("{path}: not a valid zoneinfo file: {e}"))?;
                    return Ok(Zone {
                        name: name.to_owned(),
                        tz,
                    });
                }
                Err(e) => last = format!("{path}: {e}"),
            }
        }
        Err(format!(
            "no time zone {name:?} in the system's zoneinfo ({last}; install tzdata or set TZDIR)"
        ))
    }

    /// The zone's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The offset from UTC at a UNIX time, in seconds.
    fn offset(&self, unix: i64) -> i64 {
        self.tz
            .find_local_time_type(unix)
            .map(|t| i64::from(t.ut_offset()))
            .unwrap_or(0)
    }

    /// The local date (days since 1970-01-01) of a UNIX time.
    fn date(&self, unix: i64) -> i64 {
        (unix + self.offset(unix)).div_euclid(DAY)
    }

    /// The first instant (UNIX seconds) whose local date is `d`; `hint` is an instant
    /// near it, for the offsets in force.
    fn start_of(&self, d: i64, hint: i64) -> i64 {
        let midnight = d * DAY;
        let mut offsets = [
            self.offset(hint),
            self.offset(hint - DAY),
            self.offset(hint + DAY),
            self.offset(midnight - self.offset(hint)),
        ];
        offsets.sort_unstable();
        // Local midnight at an offset in force then: the earliest one that exists
        // (on a fall-back at midnight it exists twice).
        let found = offsets
            .iter()
            .map(|o| midnight - o)
            .filter(|&c| self.date(c) == d && self.date(c - 1) < d)
            .min();
        if let Some(c) = found {
            return c;
        }
        // Midnight was skipped (spring forward at 00:00): the date begins at the
        // transition, between midnight at the largest and at the smallest offset.
        let (mut lo, mut hi) = (midnight - offsets[3], midnight - offsets[0]);
        if self.date(lo) >= d {
            return lo;
        }
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.date(mid) >= d {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        hi
    }

    /// The local day that contains `t`: `[start, end)`.
    pub fn day_of(&self, t: Ts) -> (Ts, Ts) {
        let unix = (t.0 / 1_000_000) as i64;
        let d = self.date(unix);
        let start = self.start_of(d, unix);
        let end = self.start_of(d + 1, unix + DAY);
        let ts = |s: i64| Ts(u64::try_from(s).unwrap_or(0) * 1_000_000);
        (ts(start), ts(end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rfc: &str) -> Ts {
        let t = chrono::DateTime::parse_from_rfc3339(rfc).expect("a time");
        Ts(t.timestamp_micros() as u64)
    }

    fn day(zone: &Zone, t: &str) -> (String, String) {
        let (s, e) = zone.day_of(at(t));
        (s.rfc3339(), e.rfc3339())
    }

    #[test]
    fn utc_days_are_calendar_days() {
        let z = Zone::utc();
        assert_eq!(
            day(&z, "2026-11-26T13:45:00Z"),
            (
                "2026-11-26T00:00:00.000Z".into(),
                "2026-11-27T00:00:00.000Z".into()
            )
        );
        // Midnight itself belongs to the day it starts.
        assert_eq!(
            day(&z, "2026-11-27T00:00:00Z").0,
            "2026-11-27T00:00:00.000Z"
        );
        assert_eq!(
            day(&z, "2026-11-26T23:59:59.999Z").0,
            "2026-11-26T00:00:00.000Z"
        );
    }

    #[test]
    fn rome_midnight_moves_with_summer_time() {
        let z = Zone::load("Europe/Rome").expect("tzdata is installed");
        // Winter: UTC+1.
        assert_eq!(
            day(&z, "2026-01-15T12:00:00Z"),
            (
                "2026-01-14T23:00:00.000Z".into(),
                "2026-01-15T23:00:00.000Z".into()
            )
        );
        // 22:59:59.999Z on the 14th is still the 14th in Rome; 23:00Z is the 15th.
        assert_eq!(
            day(&z, "2026-01-14T22:59:59.999Z").0,
            "2026-01-13T23:00:00.000Z"
        );
        assert_eq!(
            day(&z, "2026-01-14T23:00:00Z").0,
            "2026-01-14T23:00:00.000Z"
        );
        // Spring forward (29 March 2026): a 23-hour day.
        assert_eq!(
            day(&z, "2026-03-29T12:00:00Z"),
            (
                "2026-03-28T23:00:00.000Z".into(),
                "2026-03-29T22:00:00.000Z".into()
            )
        );
        // Fall back (25 October 2026): a 25-hour day.
        assert_eq!(
            day(&z, "2026-10-25T12:00:00Z"),
            (
                "2026-10-24T22:00:00.000Z".into(),
                "2026-10-25T23:00:00.000Z".into()
            )
        );
    }

    #[test]
    fn a_day_whose_midnight_is_skipped_starts_at_the_transition() {
        // Havana springs forward at 00:00 local: 8 March 2026 begins at 01:00 CDT.
        let z = Zone::load("America/Havana").expect("tzdata is installed");
        assert_eq!(
            day(&z, "2026-03-08T12:00:00Z"),
            (
                "2026-03-08T05:00:00.000Z".into(),
                "2026-03-09T04:00:00.000Z".into()
            )
        );
        // And falls back at 01:00 to 00:00: 1 November starts at the first midnight.
        assert_eq!(
            day(&z, "2026-11-01T12:00:00Z"),
            (
                "2026-11-01T04:00:00.000Z".into(),
                "2026-11-02T05:00:00.000Z".into()
            )
        );
    }

    #[test]
    fn bad_names_are_refused() {
        for bad in [
            "",
            "../etc/passwd",
            "/etc/localtime",
            "Europe/../x",
            "No/Such_Zone",
        ] {
            assert!(Zone::load(bad).is_err(), "{bad:?}");
        }
    }
}
