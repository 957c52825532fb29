//! `switchboard backup DIR`: a consistent copy of a data directory, taken while the hub
//! runs, without its cooperation.
//!
//! Why it is consistent: the snapshot is only ever replaced whole (a rename), segments
//! are only appended to, a record is acknowledged only after it is wholly written, and
//! an open file keeps its contents after it is renamed over or removed. So the copy
//! first opens every segment, then the snapshot, then any segment begun meanwhile, and
//! only then reads them. A segment gone before it was opened was removed by a snapshot
//! put in place before that, so the snapshot opened after it covers it; every segment
//! the opened snapshot needs was still there when it was opened (the hub removes
//! segments only after their snapshot is in place). The copy is therefore the opened
//! snapshot plus a log that continues it, possibly ending in a record being written at
//! that instant (never acknowledged yet: it is cut, as at any start). A snapshot read
//! while the hub snapshots again meanwhile, however often, costs nothing: the copy
//! holds the files it opened. The copy is still checked by replaying it exactly as a
//! start does, and taken again in the one case left (a segment begun and removed again
//! within the instant between the first and the last opening).

use super::{recover, segment, snapshot, sync_dir};
use crate::routing::Rules;
use std::fs::File;
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
    /// Copies taken (more than one when one had a gap and was taken again).
    pub attempts: usize,
}

/// How many times a copy with a gap is taken again.
const ATTEMPTS: usize = 5;

/// Copies `src` to `dst` (which must not exist) and checks the copy.
pub fn copy(src: &Path, dst: &Path, rules: Arc<Rules>) -> Result<Backup, String> {
    copy_with(src, dst, rules, &mut || {})
}

/// [`copy`], calling `between` in each attempt after the segments are opened and before
/// the snapshot is: where a snapshot the hub puts in place meanwhile lands. (Tests make
/// one land there.)
pub fn copy_with(
    src: &Path,
    dst: &Path,
    rules: Arc<Rules>,
    between: &mut dyn FnMut(),
) -> Result<Backup, String> {
    if !src.is_dir() {
        return Err(format!("{} is not a data directory", src.display()));
    }
    if dst.exists() {
        return Err(format!("{} already exists", dst.display()));
    }
    let mut last_err = String::new();
    for n in 1..=ATTEMPTS {
        match attempt(src, dst, rules.clone(), between) {
            Ok(mut b) => {
                b.attempts = n;
                return Ok(b);
            }
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

/// Opens `path`; `None` when it does not exist.
fn open(path: &Path) -> Result<Option<File>, String> {
    match File::open(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot open {}: {e}", path.display())),
    }
}

fn attempt(
    src: &Path,
    dst: &Path,
    rules: Arc<Rules>,
    between: &mut dyn FnMut(),
) -> Result<Backup, String> {
    let list = || segment::list(src).map_err(|e| format!("cannot list {}: {e}", src.display()));
    // The rules the log was decided by (written at start only), first: a restart with
    // other rules anywhere after this is then caught by the check below.
    let rules_file = open(&src.join(super::RULES_FILE))?;
    // The segments first: one removed before it is opened is covered by the snapshot
    // opened next.
    let mut segments = Vec::new();
    for (first, path) in list()? {
        if let Some(f) = open(&path)? {
            segments.push((first, f));
        }
    }
    between();
    let snap = open(&src.join(snapshot::FILE))?;
    // Segments begun since the listing. One removed already was covered by a snapshot
    // newer than the one opened: the copy would have a gap, so it is taken again.
    let known = segments.last().map(|(first, _)| *first);
    for (first, path) in list()? {
        if known.is_some_and(|k| first <= k) {
            continue;
        }
        match open(&path)? {
            Some(f) => segments.push((first, f)),
            None => {
                return Err(format!(
                    "{} was begun and removed during the copy",
                    path.display()
                ));
            }
        }
    }

    super::create_dir_durably(dst).map_err(|e| format!("cannot create {}: {e}", dst.display()))?;
    let mut files = 0;
    let mut bytes = 0;
    let mut write = |name: &str, from: File| -> Result<(), String> {
        let to = dst.join(name);
        let n = File::create(&to)
            .and_then(|mut out| {
                let n = std::io::copy(&mut &from, &mut out)?;
                out.sync_all()?;
                Ok(n)
            })
            .map_err(|e| format!("cannot copy {} to {}: {e}", name, to.display()))?;
        files += 1;
        bytes += n;
        Ok(())
    };
    if let Some(f) = rules_file {
        write(super::RULES_FILE, f)?;
    }
    if let Some(f) = snap {
        write(snapshot::FILE, f)?;
    }
    // In order, after the last listing: a segment that was the last one when opened
    // and was closed since is read whole.
    for (first, f) in segments {
        write(&segment::name(first), f)?;
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
    File::create(dst.join(super::NEW_HISTORY_FILE))
        .and_then(|f| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", super::NEW_HISTORY_FILE))?;
    sync_dir(dst).map_err(|e| format!("cannot sync {}: {e}", dst.display()))?;
    let rec = recover(dst, rules, true).map_err(|e| e.to_string())?;
    Ok(Backup {
        files,
        bytes,
        position: rec.replica.pos,
        attempts: 0,
    })
}
