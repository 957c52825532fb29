//! The snapshot file: the state at one log position, in [`State::snapshot_bytes`]'s
//! encoding (the one the Redis store stores), behind a small header:
//!
//! ```text
//! "SBSNAP01" | pos: u64 LE | now: u64 LE | len: u64 LE | crc32(state): u32 LE | state
//! ```
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
const MAGIC: &[u8; 8] = b"SBSNAP01";
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
    let size = write_unsynced(dir, pos, now, |out| {
        out.write_all(state).map_err(|e| e.to_string())
    })?;
    publish(dir)?;
    Ok(size)
}

/// Where [`write_unsynced`]'s encoder writes: buffered, and counted and checksummed
/// below the buffer (in large pieces, where the checksum is fast).
pub type Encoding = std::io::BufWriter<Counted>;

/// A file that counts and checksums what goes through it.
pub struct Counted {
    file: std::fs::File,
    crc: crc32fast::Hasher,
    len: u64,
}

impl Write for Counted {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.crc.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Writes `snapshot.tmp` with the state `encode` streams into it (no copy of the whole
/// state in memory), the header's length and checksum filled in after. Not synced nor
/// put in place: [`publish`] does that, so a forked writer can exit (and end the
/// parent's copy-on-write) before the disk has it. Returns the file's size.
pub fn write_unsynced(
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
    let mut out = std::io::BufWriter::with_capacity(
        1 << 20,
        Counted {
            file,
            crc: crc32fast::Hasher::new(),
            len: 0,
        },
    );
    encode(&mut out).map_err(std::io::Error::other)?;
    let Counted { mut file, crc, len } = out.into_inner().map_err(|e| e.into_error())?;
    let mut tail = [0u8; 12];
    tail[..8].copy_from_slice(&len.to_le_bytes());
    tail[8..].copy_from_slice(&crc.finalize().to_le_bytes());
    file.seek(std::io::SeekFrom::Start(24))?;
    file.write_all(&tail)?;
    Ok(HEAD as u64 + len)
}

/// Puts a written `snapshot.tmp` in place durably: synced, renamed over `snapshot`, the
/// directory synced. (A sync through any descriptor of a file flushes all of it, so the
/// process that wrote it need not be the one that syncs it.)
pub fn publish(dir: &Path) -> std::io::Result<()> {
    let tmp = dir.join(TMP);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&tmp)?
        .sync_all()?;
    std::fs::rename(&tmp, dir.join(FILE))?;
    sync_dir(dir)
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
    if bytes.len() < HEAD || &bytes[..8] != MAGIC {
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
    if crc32fast::hash(&state) != crc {
        return Err(bad(HEAD, "checksum mismatch"));
    }
    Ok(Some(Loaded {
        pos,
        now,
        bytes: state,
    }))
}
