//! `switchboard backup DIR`: a consistent copy of a data directory, taken while the hub
//! runs, without its cooperation.
//!
//! Why it is consistent: the snapshot is only ever replaced whole (a rename), and an
//! open file keeps the snapshot it opened; segments are only appended to, and a record
//! is acknowledged only after it is wholly written. So copying the snapshot first and
//! then every segment gives a snapshot plus a log that continues it, possibly ending in
//! a record that was being written at that instant (never acknowledged yet: it is cut,
//! as at any start). The one race is a snapshot that completes between the two copies
//! and removes segments the copied (older) snapshot needs: the copy is then checked by
//! replaying it exactly as a start does, and taken again when it has a gap.

use super::{recover, segment, snapshot, sync_dir};
use crate::routing::Rules;
use std::path::Path;
use std::sync::Arc;

/// What a backup copied.
pub struct Backup {
    /// Files copied.
    pub files: usize,
    /// Bytes copied.
    pub bytes: u64,
    /// The last record the copy holds.
    pub position: u64,
}

/// How many times a copy that raced a snapshot is taken again.
const ATTEMPTS: usize = 5;

/// Copies `src` to `dst` (which must not exist) and checks the copy.
pub fn copy(src: &Path, dst: &Path, rules: Arc<Rules>) -> Result<Backup, String> {
    if !src.is_dir() {
        return Err(format!("{} is not a data directory", src.display()));
    }
    if dst.exists() {
        return Err(format!("{} already exists", dst.display()));
    }
    let mut last_err = String::new();
    for _ in 0..ATTEMPTS {
        match attempt(src, dst, rules.clone()) {
            Ok(b) => return Ok(b),
            Err(e) => {
                last_err = e;
                let _ = std::fs::remove_dir_all(dst);
            }
        }
    }
    Err(format!(
        "no consistent copy after {ATTEMPTS} attempts: {last_err}"
    ))
}

fn attempt(src: &Path, dst: &Path, rules: Arc<Rules>) -> Result<Backup, String> {
    super::create_dir_durably(dst).map_err(|e| format!("cannot create {}: {e}", dst.display()))?;
    let mut files = 0;
    let mut bytes = 0;
    let mut copy_one = |name: &str, must_exist: bool| -> Result<(), String> {
        let from = src.join(name);
        let to = dst.join(name);
        match std::fs::copy(&from, &to) {
            Ok(n) => {
                std::fs::File::open(&to)
                    .and_then(|f| f.sync_all())
                    .map_err(|e| format!("cannot sync {}: {e}", to.display()))?;
                files += 1;
                bytes += n;
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => Ok(()),
            Err(e) => Err(format!("cannot copy {}: {e}", from.display())),
        }
    };
    // The rules the log was decided by (written at start only).
    copy_one(super::RULES_FILE, false)?;
    // The snapshot first: the segments copied after it continue it.
    copy_one(snapshot::FILE, false)?;
    let segments = segment::list(src).map_err(|e| format!("cannot list {}: {e}", src.display()))?;
    for (first, _) in &segments {
        // A segment removed since the listing was covered by a newer snapshot than the
        // one copied: the check below finds the gap and the copy is taken again.
        copy_one(&segment::name(*first), true)?;
    }
    // The rules file is written at start only: one that changed while the segments
    // were copied (the hub stopped, snapshot, started with new rules) no longer names
    // the rules the copied records were decided by.
    let read_rules = |d: &Path| std::fs::read(d.join(super::RULES_FILE)).ok();
    if read_rules(src) != read_rules(dst) {
        return Err("the hub started again with other rules during the copy".into());
    }
    // The copy's history forks from the original's at this point (see
    // `NEW_HISTORY_FILE`).
    std::fs::File::create(dst.join(super::NEW_HISTORY_FILE))
        .and_then(|f| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", super::NEW_HISTORY_FILE))?;
    sync_dir(dst).map_err(|e| format!("cannot sync {}: {e}", dst.display()))?;
    let rec = recover(dst, rules, true).map_err(|e| e.to_string())?;
    Ok(Backup {
        files,
        bytes,
        position: rec.replica.pos,
    })
}
