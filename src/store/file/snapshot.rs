//! The snapshot file: the state at one log position, in [`State::snapshot_bytes`]'s
//! encoding (the one the Redis store stores), behind a small header:
//!
//! ```text
//! "SBSNAP02" | pos: u64 LE | now: u64 LE | len: u64 LE | crc32(pos, now, state): u32 LE | state
//! ```
//!
//! The checksum covers the position and the time too: a flipped bit in the position
//! would otherwise replay the log from the wrong record, in silence (records lost or
//! applied twice). A version-1 snapshot (`SBSNAP01`, its checksum over the state only)
//! is still read, so an upgrade starts from the one it finds; every new one is version 2.
//!
//! Written to `snapshot.tmp`, synced, renamed over `snapshot`, and the directory
//! synced: a crash at any point leaves either the old snapshot or the new one whole.
//!
//! [`State::snapshot_bytes`]: crate::state::State::snapshot_bytes

use super::sync_dir;
use std::io::{Seek, Write};
use std::path::Path;

/// The snapshot's file name.
pub const FILE: &str = "snapshot";
/// Where a snapshot is written before it is put in place.
pub const TMP: &str = "snapshot.tmp";
const MAGIC: &[u8; 8] = b"SBSNAP02";
/// The first version's magic: its checksum covers the state only.
const MAGIC_V1: &[u8; 8] = b"SBSNAP01";
const HEAD: usize = 8 + 8 + 8 + 8 + 4;

/// A snapshot read back.
pub struct Loaded {
    /// The position of the last record it covers.
    pub pos: u64,
    /// The replica's time at that position.
    pub now: u64,
    /// The state's bytes.
    pub bytes: Vec<u8>,
}

/// Writes a snapshot durably (see the module documentation). Returns its size.
pub fn write(dir: &Path, pos: u64, now: u64, state: &[u8]) -> std::io::Result<u64> {
    let size = write_synced(dir, pos, now, |out| {
        out.write_all(state).map_err(|e| e.to_string())
    })?;
    publish(dir, size)?;
    Ok(size)
}

/// Where [`write_synced`]'s encoder writes: buffered, and counted and checksummed
/// below the buffer (in large pieces, where the checksum is fast).
pub type Encoding = std::io::BufWriter<Counted>;

/// A file that counts and checksums what goes through it, and keeps the first write
/// error (an encoder reports only that its write failed, not why).
pub struct Counted {
    file: std::fs::File,
    crc: crc32fast::Hasher,
    len: u64,
    failed: Option<std::io::Error>,
}

impl Counted {
    /// Over `file`, its checksum begun with the header's `covered` bytes.
    fn new(file: std::fs::File, covered: &[u8]) -> Counted {
        let mut crc = crc32fast::Hasher::new();
        crc.update(covered);
        Counted {
            file,
            crc,
            len: 0,
            failed: None,
        }
    }
}

impl Write for Counted {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.file.write(buf) {
            Ok(n) => {
                self.crc.update(&buf[..n]);
                self.len += n as u64;
                Ok(n)
            }
            Err(e) => {
                if self.failed.is_none() {
                    self.failed = Some(std::io::Error::new(e.kind(), e.to_string()));
                }
                Err(e)
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Writes `snapshot.tmp` with the state `encode` streams into it (no copy of the whole
/// state in memory), the header's length and checksum filled in after, and syncs it
/// through the descriptor that wrote it (a write-back error is reported to the
/// descriptors open when it happens: a sync from a descriptor opened later may not see
/// it). Not put in place: [`publish`] does that. Returns the file's size. A file it
/// could not finish is removed: on a full disk it would hold the space the log needs.
pub fn write_synced(
    dir: &Path,
    pos: u64,
    now: u64,
    encode: impl FnOnce(&mut Encoding) -> Result<(), String>,
) -> std::io::Result<u64> {
    let written = write_tmp(dir, pos, now, encode);
    if written.is_err() {
        let _ = std::fs::remove_file(dir.join(TMP));
    }
    written
}

fn write_tmp(
    dir: &Path,
    pos: u64,
    now: u64,
    encode: impl FnOnce(&mut Encoding) -> Result<(), String>,
) -> std::io::Result<u64> {
    let mut file = std::fs::File::create(dir.join(TMP))?;
    let mut head = Vec::with_capacity(HEAD);
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&pos.to_le_bytes());
    head.extend_from_slice(&now.to_le_bytes());
    // The length and the checksum, known once the state is written.
    head.extend_from_slice(&[0; 12]);
    file.write_all(&head)?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, Counted::new(file, &head[8..24]));
    if let Err(why) = encode(&mut out) {
        // A full disk, say, rather than the encoder's "error while writing".
        return Err(match out.get_mut().failed.take() {
            Some(e) => e,
            None => std::io::Error::other(why),
        });
    }
    let Counted {
        mut file, crc, len, ..
    } = out.into_inner().map_err(|e| e.into_error())?;
    let mut tail = [0u8; 12];
    tail[..8].copy_from_slice(&len.to_le_bytes());
    tail[8..].copy_from_slice(&crc.finalize().to_le_bytes());
    file.seek(std::io::SeekFrom::Start(24))?;
    file.write_all(&tail)?;
    file.sync_all()?;
    Ok(HEAD as u64 + len)
}

/// Puts a written and synced `snapshot.tmp` of `size` bytes in place: renamed over
/// `snapshot`, the directory synced. The size is checked first (a file another writer
/// cut short is never put in place). Each error names its step; a file not put in
/// place is removed (the log it would have covered stays, and the next snapshot writes
/// a new one).
pub fn publish(dir: &Path, size: u64) -> std::io::Result<()> {
    let tmp = dir.join(TMP);
    let step = |what: &str, e: std::io::Error| {
        std::io::Error::new(e.kind(), format!("{what} {}: {e}", tmp.display()))
    };
    let place = || {
        let found = std::fs::metadata(&tmp)
            .map_err(|e| step("cannot read", e))?
            .len();
        if found != size {
            return Err(std::io::Error::other(format!(
                "{} holds {found} bytes, not the {size} written",
                tmp.display()
            )));
        }
        std::fs::rename(&tmp, dir.join(FILE)).map_err(|e| step("cannot rename", e))
    };
    if let Err(e) = place() {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(dir).map_err(|e| step("cannot sync the directory after renaming", e))
}

/// Reads the snapshot, if there is one. Damage is an error naming the file and the
/// offset: a snapshot is only ever put in place whole, so a bad one is not a crash.
pub fn read(dir: &Path) -> Result<Option<Loaded>, String> {
    let path = dir.join(FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let bad =
        |off: usize, what: &str| format!("{} is damaged at offset {off}: {what}", path.display());
    let v1 = bytes.get(..8) == Some(MAGIC_V1.as_slice());
    if bytes.len() < HEAD || (&bytes[..8] != MAGIC && !v1) {
        return Err(bad(0, "not a switchboard snapshot (header)"));
    }
    let u64_at = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[i..i + 8]);
        u64::from_le_bytes(b)
    };
    let (pos, now, len) = (u64_at(8), u64_at(16), u64_at(24));
    let mut c = [0u8; 4];
    c.copy_from_slice(&bytes[32..36]);
    let crc = u32::from_le_bytes(c);
    if (bytes.len() - HEAD) as u64 != len {
        return Err(bad(24, "length does not match the file"));
    }
    let state = bytes[HEAD..].to_vec();
    let mut sum = crc32fast::Hasher::new();
    if !v1 {
        sum.update(&bytes[8..24]);
    }
    sum.update(&state);
    if sum.finalize() != crc {
        return Err(bad(
            if v1 { HEAD } else { 8 },
            "checksum mismatch (over the position, the time and the state)",
        ));
    }
    if pos == u64::MAX {
        return Err(bad(8, "no log position can follow this one"));
    }
    Ok(Some(Loaded {
        pos,
        now,
        bytes: state,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("sb-snap-{name}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&d).expect("dir");
        d
    }

    #[test]
    fn a_streamed_snapshot_reads_back_with_its_header() {
        let d = dir("streamed");
        // More than the 1 MiB buffer, so that the checksum spans several writes.
        let state: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let size = write(&d, 42, 7, &state).expect("written");
        assert_eq!(size, (HEAD + state.len()) as u64);
        assert!(!d.join(TMP).exists());
        let back = read(&d).expect("readable").expect("there");
        assert_eq!((back.pos, back.now), (42, 7));
        assert!(back.bytes == state);
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn a_written_file_of_another_size_is_not_put_in_place() {
        let d = dir("size");
        write(&d, 1, 1, b"old").expect("written");
        let size = write_synced(&d, 2, 2, |out| {
            out.write_all(b"new state").map_err(|e| e.to_string())
        })
        .expect("written");
        let e = publish(&d, size + 1).expect_err("refused");
        assert!(e.to_string().contains("not the"), "{e}");
        // The old snapshot is still the one in place, and the refused file is gone.
        assert_eq!(read(&d).expect("readable").expect("there").bytes, b"old");
        assert!(!d.join(TMP).exists());
        let size = write_synced(&d, 2, 2, |out| {
            out.write_all(b"new state").map_err(|e| e.to_string())
        })
        .expect("written");
        publish(&d, size).expect("in place");
        assert_eq!(
            read(&d).expect("readable").expect("there").bytes,
            b"new state"
        );
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn an_encoding_cut_short_by_the_disk_keeps_why() {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full");
        let mut out = std::io::BufWriter::with_capacity(1 << 20, Counted::new(file, &[]));
        let big: Vec<String> = (0..200_000).map(|i| format!("item {i}")).collect();
        let e = rmp_serde::encode::write_named(&mut out, &big).expect_err("refused");
        // The encoder's own message does not say why; the file's does.
        let kept = out.get_mut().failed.take().expect("kept");
        assert_eq!(kept.kind(), std::io::ErrorKind::StorageFull, "{kept} ({e})");
    }

    #[test]
    fn a_full_disk_is_named_as_such() {
        let d = dir("full");
        // `snapshot.tmp` names /dev/full: every write is refused with ENOSPC.
        std::os::unix::fs::symlink("/dev/full", d.join(TMP)).expect("link");
        let e = write_synced(&d, 1, 1, |out| {
            out.write_all(&[0; 3 << 20]).map_err(|e| e.to_string())
        })
        .expect_err("refused");
        assert_eq!(e.kind(), std::io::ErrorKind::StorageFull, "{e}");
        // And the file it could not finish is gone: on a real full disk it would hold
        // the space the log needs, until the next start.
        assert!(
            std::fs::symlink_metadata(d.join(TMP)).is_err(),
            "left behind"
        );
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn a_flipped_bit_in_the_position_or_the_time_is_refused_naming_the_offset() {
        for at in [8, 12, 16, 23] {
            let d = dir("header");
            write(&d, 50, 1_700_000_000_000_000, b"the state").expect("written");
            let mut bytes = std::fs::read(d.join(FILE)).expect("read");
            bytes[at] ^= 0x04;
            std::fs::write(d.join(FILE), &bytes).expect("write");
            let e = read(&d).err().expect("refused");
            assert!(
                e.contains(FILE) && e.contains("offset 8") && e.contains("checksum"),
                "byte {at}: {e}"
            );
            std::fs::remove_dir_all(&d).ok();
        }
    }

    #[test]
    fn a_first_version_snapshot_is_still_read() {
        let d = dir("v1");
        let state = b"the state";
        let mut bytes = MAGIC_V1.to_vec();
        bytes.extend_from_slice(&42u64.to_le_bytes());
        bytes.extend_from_slice(&7u64.to_le_bytes());
        bytes.extend_from_slice(&(state.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(state).to_le_bytes());
        bytes.extend_from_slice(state);
        std::fs::write(d.join(FILE), &bytes).expect("write");
        let back = read(&d).expect("readable").expect("there");
        assert_eq!(
            (back.pos, back.now, back.bytes.as_slice()),
            (42, 7, &state[..])
        );
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn a_position_nothing_can_follow_is_refused() {
        let d = dir("max");
        write(&d, u64::MAX, 7, b"the state").expect("written");
        let e = read(&d).err().expect("refused");
        assert!(e.contains("offset 8"), "{e}");
        std::fs::remove_dir_all(&d).ok();
    }
}
