//! Log segments: append-only files of framed records.
//!
//! A segment is named after the position of its first record (`log-<20 digits>.seg`);
//! record positions count from 1 across segments. A record is a 12-byte header and the
//! entry's bytes:
//!
//! ```text
//! len: u32 LE | crc32(payload): u32 LE | crc32(len, payload crc): u32 LE | payload
//! ```
//!
//! The header has a checksum of its own so that a damaged length is recognised as
//! damage, never mistaken for a torn last record (which would silently cut every record
//! after it).

use std::path::{Path, PathBuf};

/// Header bytes before each record's payload.
pub const HEADER: usize = 12;
/// The largest record accepted (an entry is a command: kilobytes at most).
pub const MAX_RECORD: usize = 64 * 1024 * 1024;

/// A segment's file name.
pub fn name(first: u64) -> String {
    format!("log-{first:020}.seg")
}

/// The first position of a segment file name, if it is one.
pub fn first_of(file_name: &str) -> Option<u64> {
    file_name
        .strip_prefix("log-")?
        .strip_suffix(".seg")?
        .parse()
        .ok()
}

/// Every segment in `dir`, by first position.
pub fn list(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if let Some(first) = e.file_name().to_str().and_then(first_of) {
            out.push((first, e.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Appends one framed record to `buf`.
pub fn frame(buf: &mut Vec<u8>, payload: &[u8]) {
    let len = payload.len() as u32;
    let pcrc = crc32fast::hash(payload);
    let mut h = crc32fast::Hasher::new();
    h.update(&len.to_le_bytes());
    h.update(&pcrc.to_le_bytes());
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&pcrc.to_le_bytes());
    buf.extend_from_slice(&h.finalize().to_le_bytes());
    buf.extend_from_slice(payload);
}

/// What reading a segment's bytes found.
#[derive(Debug)]
pub struct Scan {
    /// Each whole record: (offset of its header, payload range).
    pub records: Vec<(usize, std::ops::Range<usize>)>,
    /// Where the whole records end.
    pub valid_len: usize,
    /// Why reading stopped before the end, if it did: the offset and what is wrong.
    pub damage: Option<(usize, Damage)>,
}

/// What is wrong at a place in a segment.
#[derive(Debug, PartialEq, Eq)]
pub enum Damage {
    /// The bytes end inside a record, or what follows is zeros (a file extended by a
    /// crash before its data was written): what a crash mid-write leaves.
    Torn,
    /// A record whose payload does not match its checksum, but which ends exactly at
    /// the end of the file: the last write, cut short by a crash.
    TornChecksum,
    /// A header whose checksum fails, or a whole record whose payload checksum fails
    /// and is followed by more bytes: damage, not a crash.
    Corrupt(&'static str),
}

/// Reads records from `bytes` until the end or the first damage.
pub fn scan(bytes: &[u8]) -> Scan {
    let mut records = Vec::new();
    let mut off = 0usize;
    let damage = loop {
        let rest = &bytes[off..];
        if rest.is_empty() {
            break None;
        }
        if rest.iter().all(|b| *b == 0) {
            break Some((off, Damage::Torn));
        }
        if rest.len() < HEADER {
            break Some((off, Damage::Torn));
        }
        let word = |i: usize| u32::from_le_bytes([rest[i], rest[i + 1], rest[i + 2], rest[i + 3]]);
        let (len, pcrc, hcrc) = (word(0), word(4), word(8));
        let mut h = crc32fast::Hasher::new();
        h.update(&len.to_le_bytes());
        h.update(&pcrc.to_le_bytes());
        if h.finalize() != hcrc {
            break Some((off, Damage::Corrupt("record header checksum mismatch")));
        }
        let len = len as usize;
        if len > MAX_RECORD {
            break Some((
                off,
                Damage::Corrupt("record longer than the largest allowed"),
            ));
        }
        if rest.len() < HEADER + len {
            break Some((off, Damage::Torn));
        }
        let payload = off + HEADER..off + HEADER + len;
        if crc32fast::hash(&bytes[payload.clone()]) != pcrc {
            if payload.end == bytes.len() {
                break Some((off, Damage::TornChecksum));
            }
            break Some((off, Damage::Corrupt("record checksum mismatch")));
        }
        records.push((off, payload.clone()));
        off = payload.end;
    };
    Scan {
        records,
        valid_len: off,
        damage,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> Vec<u8> {
        let mut b = Vec::new();
        for p in [&b"one"[..], b"second", b"the third record"] {
            frame(&mut b, p);
        }
        b
    }

    #[test]
    fn reads_back_what_was_framed() {
        let b = three();
        let s = scan(&b);
        assert!(s.damage.is_none());
        assert_eq!(s.valid_len, b.len());
        let got: Vec<&[u8]> = s.records.iter().map(|(_, r)| &b[r.clone()]).collect();
        assert_eq!(got, vec![&b"one"[..], b"second", b"the third record"]);
    }

    #[test]
    fn a_cut_anywhere_in_the_last_record_is_torn() {
        let b = three();
        let last = scan(&b).records[2].0;
        for cut in last + 1..b.len() {
            let s = scan(&b[..cut]);
            assert_eq!(s.records.len(), 2, "cut at {cut}");
            assert_eq!(s.valid_len, last);
            assert!(
                matches!(s.damage, Some((o, Damage::Torn | Damage::TornChecksum)) if o == last),
                "cut at {cut}: {:?}",
                s.damage
            );
        }
    }

    #[test]
    fn a_flipped_byte_before_the_last_record_is_corruption() {
        let b = three();
        let last = scan(&b).records[2].0;
        for i in 0..last {
            let mut c = b.clone();
            c[i] ^= 0x40;
            let s = scan(&c);
            assert!(
                matches!(s.damage, Some((_, Damage::Corrupt(_)))),
                "flip at {i}: {:?}",
                s.damage
            );
        }
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(first_of(&name(42)), Some(42));
        assert_eq!(first_of("snapshot"), None);
    }
}
