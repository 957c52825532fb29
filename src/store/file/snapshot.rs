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
use std::io::Write;
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
    let tmp = dir.join(TMP);
    let mut f = std::fs::File::create(&tmp)?;
    let mut head = Vec::with_capacity(HEAD);
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&pos.to_le_bytes());
    head.extend_from_slice(&now.to_le_bytes());
    head.extend_from_slice(&(state.len() as u64).to_le_bytes());
    head.extend_from_slice(&crc32fast::hash(state).to_le_bytes());
    f.write_all(&head)?;
    f.write_all(state)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(FILE))?;
    sync_dir(dir)?;
    Ok((HEAD + state.len()) as u64)
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
