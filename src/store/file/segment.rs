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
//!
//! **Format 2** (every segment written since batch-end markers): the file starts with
//! [`MAGIC`], and each group-commit batch ends with a **batch-end marker**, a record
//! whose length word has the top bit ([`MARKER`]) set and whose 16-byte payload is
//! `batch start offset u64 | records in the batch u32 | crc32(the batch's bytes) u32`,
//! written with the batch, before its one `fdatasync`. A batch is acknowledged only
//! after that sync, and the next batch is written only after it, so:
//!
//! - a batch without its marker was never acknowledged: it is a torn tail, cut at the
//!   batch's start, whatever is wrong inside it (bytes ending early, a page of zeros
//!   that a crash left before a later page that reached the disk, a bad checksum);
//!   so is a damaged last batch with its own marker (a power cut inside its sync can
//!   leave its pages on disk in any order);
//! - damage followed by a later batch (a valid marker of a batch after it, or a whole
//!   record right after its own marker) is damage to acknowledged records: corruption,
//!   refused with the offset.
//!
//! **Format 1** (segments written before markers: no [`MAGIC`], no markers) is still
//! read, with the old rule: only the end of the last segment may be torn. A store
//! never appends to a format-1 segment; it starts a new one.

use std::path::{Path, PathBuf};

/// Header bytes before each record's payload.
pub const HEADER: usize = 12;
/// The largest record accepted (an entry is a command: kilobytes at most).
pub const MAX_RECORD: usize = 64 * 1024 * 1024;
/// The first bytes of a format-2 segment. Read as a format-1 length word it would be
/// far above [`MAX_RECORD`], so no format-1 segment starts with it.
pub const MAGIC: [u8; 8] = *b"SBLOG02\n";
/// The flag in a record's length word that makes it a batch-end marker.
pub const MARKER: u32 = 1 << 31;
/// A marker's payload bytes.
const MARKER_LEN: usize = 16;

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

fn header(buf: &mut Vec<u8>, word: u32, payload: &[u8]) {
    let pcrc = crc32fast::hash(payload);
    let mut h = crc32fast::Hasher::new();
    h.update(&word.to_le_bytes());
    h.update(&pcrc.to_le_bytes());
    buf.extend_from_slice(&word.to_le_bytes());
    buf.extend_from_slice(&pcrc.to_le_bytes());
    buf.extend_from_slice(&h.finalize().to_le_bytes());
    buf.extend_from_slice(payload);
}

/// Appends one framed record to `buf`.
pub fn frame(buf: &mut Vec<u8>, payload: &[u8]) {
    header(buf, payload.len() as u32, payload);
}

/// Appends the batch-end marker of the batch framed in `buf` (and nothing else), which
/// starts at offset `start` in its segment and holds `count` records.
pub fn end_batch(buf: &mut Vec<u8>, start: u64, count: u32) {
    let mut m = Vec::with_capacity(MARKER_LEN);
    m.extend_from_slice(&start.to_le_bytes());
    m.extend_from_slice(&count.to_le_bytes());
    m.extend_from_slice(&crc32fast::hash(buf).to_le_bytes());
    header(buf, MARKER | MARKER_LEN as u32, &m);
}

/// Which format a segment is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// No header, no markers (written before batch-end markers).
    V1,
    /// [`MAGIC`], then batches each ending with a marker.
    V2,
}

/// What reading a segment's bytes found.
#[derive(Debug)]
pub struct Scan {
    /// The segment's format. A file shorter than [`MAGIC`] that is a prefix of it
    /// (a crash while the segment was being made) is format 2 with no records.
    pub format: Format,
    /// Each whole record (of an acknowledged batch, in format 2): (offset of its
    /// header, payload range).
    pub records: Vec<(usize, std::ops::Range<usize>)>,
    /// Where those records end (in format 2, with their batch's marker).
    pub valid_len: usize,
    /// Why reading stopped before the end, if it did: the offset and what is wrong.
    /// For a torn tail in format 2 the offset is the torn batch's start.
    pub damage: Option<(usize, Damage)>,
}

/// What is wrong at a place in a segment.
#[derive(Debug, PartialEq, Eq)]
pub enum Damage {
    /// The bytes end inside a record, or what follows is zeros (a file extended by a
    /// crash before its data was written): what a crash mid-write leaves. In format 2:
    /// a batch without its marker, whatever is wrong inside it.
    Torn,
    /// A record whose payload does not match its checksum, but which ends exactly at
    /// the end of the file: the last write, cut short by a crash (format 1 only).
    TornChecksum,
    /// A header whose checksum fails, or a whole record whose payload checksum fails
    /// and is followed by more bytes (format 1); damage followed by a later batch
    /// (format 2): damage, not a crash.
    Corrupt(&'static str),
}

/// One record read at `off`: its length word and payload range, or what is wrong.
enum Read {
    Record(u32, std::ops::Range<usize>),
    /// The bytes end inside the record (or it is all zeros from here).
    Short,
    Bad(&'static str, std::ops::Range<usize>),
}

fn read_at(bytes: &[u8], off: usize) -> Read {
    let rest = &bytes[off..];
    if rest.len() < HEADER || rest.iter().all(|b| *b == 0) {
        return Read::Short;
    }
    let word = |i: usize| u32::from_le_bytes([rest[i], rest[i + 1], rest[i + 2], rest[i + 3]]);
    let (w, pcrc, hcrc) = (word(0), word(4), word(8));
    let mut h = crc32fast::Hasher::new();
    h.update(&w.to_le_bytes());
    h.update(&pcrc.to_le_bytes());
    if h.finalize() != hcrc {
        return Read::Bad("record header checksum mismatch", off..off);
    }
    let len = (w & !MARKER) as usize;
    if len > MAX_RECORD {
        return Read::Bad("record longer than the largest allowed", off..off);
    }
    if rest.len() < HEADER + len {
        return Read::Short;
    }
    let payload = off + HEADER..off + HEADER + len;
    if crc32fast::hash(&bytes[payload.clone()]) != pcrc {
        return Read::Bad("record checksum mismatch", payload);
    }
    Read::Record(w, payload)
}

/// Whether a segment's bytes hold no record: nothing, part of the format header, or the
/// header and the zeros written ahead.
pub fn holds_nothing(bytes: &[u8]) -> bool {
    if bytes.len() <= MAGIC.len() {
        return MAGIC.starts_with(bytes);
    }
    bytes.starts_with(&MAGIC) && bytes[MAGIC.len()..].iter().all(|b| *b == 0)
}

/// Reads records from `bytes` until the end or the first damage.
pub fn scan(bytes: &[u8]) -> Scan {
    if bytes.len() < MAGIC.len() && MAGIC.starts_with(bytes) {
        return Scan {
            format: Format::V2,
            records: Vec::new(),
            valid_len: 0,
            damage: (!bytes.is_empty()).then_some((0, Damage::Torn)),
        };
    }
    if bytes.starts_with(&MAGIC) {
        scan_v2(bytes)
    } else {
        scan_v1(bytes)
    }
}

fn scan_v1(bytes: &[u8]) -> Scan {
    let mut records = Vec::new();
    let mut off = 0usize;
    let damage = loop {
        if off == bytes.len() {
            break None;
        }
        match read_at(bytes, off) {
            Read::Short => break Some((off, Damage::Torn)),
            Read::Bad(what, payload) => {
                if payload.end == bytes.len() {
                    break Some((off, Damage::TornChecksum));
                }
                break Some((off, Damage::Corrupt(what)));
            }
            Read::Record(_, payload) => {
                records.push((off, payload.clone()));
                off = payload.end;
            }
        }
    };
    Scan {
        format: Format::V1,
        records,
        valid_len: off,
        damage,
    }
}

fn scan_v2(bytes: &[u8]) -> Scan {
    let mut records = Vec::new();
    // The records read since the last marker: acknowledged only once their marker is.
    let mut pending = Vec::new();
    let mut batch = MAGIC.len();
    let mut off = batch;
    let damage = loop {
        // The end, or zeros written ahead of the records (`file::PREALLOC`) after a
        // whole batch: free room. Zeros after records without their marker are a batch
        // cut short, as below.
        if pending.is_empty() && bytes[off..].iter().all(|b| *b == 0) {
            break None;
        }
        if off == bytes.len() {
            break Some((off, "a batch without its end marker"));
        }
        match read_at(bytes, off) {
            Read::Short => break Some((off, "the bytes end inside a record")),
            Read::Bad(what, _) => break Some((off, what)),
            Read::Record(w, payload) if w & MARKER != 0 => {
                let p = &bytes[payload.clone()];
                let ok = p.len() == MARKER_LEN
                    && u64::from_le_bytes(p[0..8].try_into().unwrap_or_default()) == batch as u64
                    && u32::from_le_bytes(p[8..12].try_into().unwrap_or_default()) as usize
                        == pending.len()
                    && u32::from_le_bytes(p[12..16].try_into().unwrap_or_default())
                        == crc32fast::hash(&bytes[batch..off]);
                if !ok {
                    // A valid marker that does not match what precedes it.
                    break Some((batch, "a batch does not match its end marker"));
                }
                records.append(&mut pending);
                off = payload.end;
                batch = off;
            }
            Read::Record(_, payload) => {
                pending.push((off, payload.clone()));
                off = payload.end;
            }
        }
    };
    let damage = damage.map(|(at, what)| {
        // A valid marker of a later batch anywhere after the damage: that batch was
        // written only after this one was synced, so the damage is to acknowledged
        // records. This batch's own marker proves nothing: a power cut inside its
        // `sync_data` can leave any of its pages on disk, the marker's among them,
        // and the others as they were (the zeros written ahead). Such a batch was
        // never acknowledged, and refusing the start over it would send the operator
        // to move away a segment of acknowledged records. (Damage to the very last
        // acknowledged batch looks the same and is cut likewise, with the warning
        // naming the bytes: the log's end is read as a log's end, as databases do.)
        // Likewise a whole record right after this batch's own marker: the next batch
        // began only after this one's sync (in a power cut inside it, the bytes there
        // are still the zeros written ahead), even if that next batch is torn itself.
        if later_batch_follows(bytes, at.max(batch) + 1, batch) {
            (at, Damage::Corrupt(what))
        } else {
            (batch, Damage::Torn)
        }
    });
    Scan {
        format: Format::V2,
        records,
        valid_len: batch,
        damage,
    }
}

/// Whether a batch after the one starting at `batch` follows, at or after `from`: a
/// valid batch-end marker naming a later batch's start, or a whole record right after
/// the valid marker of the batch at `batch` itself.
fn later_batch_follows(bytes: &[u8], from: usize, batch: usize) -> bool {
    let word = (MARKER | MARKER_LEN as u32).to_le_bytes();
    let mut i = from;
    while i + HEADER + MARKER_LEN <= bytes.len() {
        if bytes[i..i + 4] == word
            && let Read::Record(_, payload) = read_at(bytes, i)
            && let Some(start) = bytes.get(payload.start..payload.start + 8)
        {
            let start = u64::from_le_bytes(start.try_into().unwrap_or_default());
            if start > batch as u64
                || (start == batch as u64
                    && matches!(read_at(bytes, payload.end), Read::Record(..)))
            {
                return true;
            }
        }
        i += 1;
    }
    false
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

    /// A format-2 segment of two batches: ["one", "second"], ["the third record"].
    fn two_batches() -> (Vec<u8>, usize) {
        let mut b = MAGIC.to_vec();
        let mut batch = Vec::new();
        frame(&mut batch, b"one");
        frame(&mut batch, b"second");
        end_batch(&mut batch, b.len() as u64, 2);
        b.extend_from_slice(&batch);
        let second = b.len();
        batch.clear();
        frame(&mut batch, b"the third record");
        end_batch(&mut batch, second as u64, 1);
        b.extend_from_slice(&batch);
        (b, second)
    }

    #[test]
    fn format_2_reads_back_whole_batches() {
        let (b, _) = two_batches();
        let s = scan(&b);
        assert_eq!(s.format, Format::V2);
        assert!(s.damage.is_none(), "{:?}", s.damage);
        assert_eq!(s.valid_len, b.len());
        let got: Vec<&[u8]> = s.records.iter().map(|(_, r)| &b[r.clone()]).collect();
        assert_eq!(got, vec![&b"one"[..], b"second", b"the third record"]);
    }

    #[test]
    fn format_2_cut_anywhere_in_the_last_batch_is_torn_at_its_start() {
        let (b, second) = two_batches();
        for cut in second..b.len() {
            let s = scan(&b[..cut]);
            assert_eq!(s.records.len(), 2, "cut at {cut}");
            assert_eq!(s.valid_len, second);
            let want = (cut > second).then_some((second, Damage::Torn));
            assert_eq!(s.damage, want, "cut at {cut}");
        }
    }

    #[test]
    fn format_2_damage_before_a_marker_is_corruption_and_without_one_a_tear() {
        let (b, second) = two_batches();
        let marker = scan(&b).records[2].1.end;
        // Every byte of the first batch, its marker included: the second batch's marker
        // follows, written after the first was synced.
        for i in MAGIC.len()..second {
            let mut c = b.clone();
            c[i] ^= 0x40;
            let s = scan(&c);
            assert!(
                matches!(s.damage, Some((_, Damage::Corrupt(_)))),
                "flip at {i}: {:?}",
                s.damage
            );
        }
        // Every byte of the last batch (not its marker): only its own marker follows,
        // which a power cut inside its sync can leave on disk without the rest. Torn at
        // its start.
        for i in second..marker {
            let mut c = b.clone();
            c[i] ^= 0x40;
            let s = scan(&c);
            assert_eq!(s.damage, Some((second, Damage::Torn)), "flip at {i}");
            assert_eq!(s.valid_len, second, "flip at {i}");
        }
        // The last batch without its marker, its first bytes lost (zeros) but the rest
        // on disk: never acknowledged, so torn at its start.
        let mut c = b[..marker].to_vec();
        for x in &mut c[second..second + 8] {
            *x = 0;
        }
        let s = scan(&c);
        assert_eq!(s.damage, Some((second, Damage::Torn)));
        assert_eq!(s.records.len(), 2);
    }

    #[test]
    fn damage_in_a_batch_a_torn_batch_follows_is_corruption() {
        // The first batch damaged, its marker whole; the next batch's record written
        // (so the first was synced) but its marker not.
        let (b, second) = two_batches();
        let last_record_end = scan(&b).records[2].1.end;
        let mut c = b[..last_record_end].to_vec();
        c[MAGIC.len() + HEADER] ^= 0x40;
        let s = scan(&c);
        assert!(
            matches!(s.damage, Some((_, Damage::Corrupt(_)))),
            "{:?}",
            s.damage
        );
        // The same first batch with zeros after its marker (what a power cut inside
        // its own sync leaves): torn, as the last batch.
        let mut z = b[..second].to_vec();
        z.extend_from_slice(&[0; 64]);
        z[MAGIC.len() + HEADER] ^= 0x40;
        assert_eq!(scan(&z).damage, Some((MAGIC.len(), Damage::Torn)));
    }

    #[test]
    fn a_short_format_2_header_is_torn_and_empty_is_nothing() {
        assert_eq!(scan(&MAGIC[..3]).damage, Some((0, Damage::Torn)));
        assert_eq!(scan(&MAGIC[..3]).format, Format::V2);
        assert!(scan(&[]).damage.is_none());
    }

    #[test]
    fn format_2_zeros_after_a_whole_batch_are_room_and_after_a_part_a_tear() {
        let (bytes, first_end) = two_batches();
        let whole = scan(&bytes);
        let mut ahead = bytes.clone();
        ahead.extend_from_slice(&[0; 4096]);
        let s = scan(&ahead);
        assert!(s.damage.is_none(), "{:?}", s.damage);
        assert_eq!(s.valid_len, bytes.len());
        assert_eq!(s.records, whole.records);
        // The second batch cut short, the rest of its room zeros: torn at its start.
        let mut cut = bytes.clone();
        cut[first_end + HEADER + 2..].fill(0);
        cut.extend_from_slice(&[0; 4096]);
        let s = scan(&cut);
        assert_eq!(s.valid_len, first_end);
        assert!(matches!(s.damage, Some((at, Damage::Torn)) if at == first_end));
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(first_of(&name(42)), Some(42));
        assert_eq!(first_of("snapshot"), None);
    }
}
