//! The file store: the command log on local disk, for one node with no other service.
//!
//! Every command is a [`log::Entry`](crate::log::Entry) appended to a segment file
//! ([`segment`]) by one writer thread, which batches the commands waiting, writes them
//! and syncs once (`fdatasync`); only then does the applier thread apply them, in log
//! order, through [`log::step`](crate::log::step) to the replica and answer their
//! callers (while the writer syncs the next batch): nothing is acknowledged, and nobody
//! is told of a decision, before it is on disk. A restart
//! loads the snapshot ([`snapshot`]) and replays the segments after it through the same
//! `step`, so it makes exactly the decisions that were made before. Every
//! `snapshot_every` records the writer starts a new segment, and the applier, once it
//! has applied every record before it, forks a child that writes the replica as the
//! snapshot ([`fork`]); a background thread waits for it and removes the segments it
//! covers. Where a fork fails, that thread builds the snapshot from the previous one
//! plus the closed segments instead ([`compact`]).
//!
//! The data directory holds `LOCK` ([`lock`]), `snapshot`, `log-<first>.seg`, and
//! `rules`: the fingerprint of the rules ([`Rules::fingerprint`]) the records after the
//! snapshot were decided by. A replay decides them again, by the rules it is given: a
//! start whose rules differ while there are records to replay is refused (it would
//! decide them otherwise: a task into a queue since removed lost, an accept refused).
//! A clean stop ([`Store::stop`]) takes a snapshot of everything, so that a changed
//! configuration after it replays nothing.
//!
//! Segments are preallocated: the writer fills [`PREALLOC`] bytes of zeros ahead of the
//! records it writes, in the same write and sync as the batch that needs the room. A
//! batch then overwrites blocks the file already has, so its `fdatasync` has no size or
//! block allocation to journal (on ext4 here: ~0.4 ms instead of ~0.9 ms per sync, see
//! ARCHITECTURE, "One machine: the file store"). Zeros after the last batch-end marker are free
//! room, not a torn record (`segment::scan`).

pub mod backup;
mod fork;
mod lock;
mod metrics;
pub mod segment;
pub mod snapshot;

use super::background::lower_priority;
use super::{Decision, Sink, Store};
use crate::clock::Ts;
use crate::context::ContextCommand;
use crate::error::HubError;
use crate::log::{Body, Entry, Replica, seed_of, step};
use crate::routing::{Command, Rules};
use crate::state::{Outcome, State};
use metrics::FileMetrics;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// How much room the writer adds at a time, as written zeros, when a batch would not
/// fit in the room left (the last segment is up to this much longer than its records).
pub const PREALLOC: u64 = 1 << 20;

/// The most commands one group commit carries.
const MAX_BATCH: usize = 4096;
/// Commands waiting for the writer, at most (16 full batches).
const MAX_QUEUED: usize = 16 * MAX_BATCH;
/// `Shared::closing`: no clean stop asked yet; asked and taken by the writer.
const OPEN: u8 = 0;
const ASKED: u8 = 1;
/// How long a clean stop waits for its snapshot (and for one already under way).
const CLOSE_LIMIT: Duration = Duration::from_secs(60);
/// How long the start waits for its own first commands (the nodes lost at the stop).
const OPEN_LIMIT: Duration = Duration::from_secs(60);
/// The file holding the fingerprint of the rules the log after the snapshot was
/// decided by.
pub const RULES_FILE: &str = "rules";
/// Written into every backup copy: a hub started on it gives its events a new epoch
/// (`Body::NewHistory`) before anything else, then removes it. The directory the copy
/// was taken from went on writing its own records after the copy, which the copy's
/// new records would otherwise number alike.
pub const NEW_HISTORY_FILE: &str = "new-history";

/// How long a forked snapshot writer may take before it is killed and the snapshot
/// built from the log instead (194 MB took 3.5 s on a busy 2-core machine), in ms.
const FORKED_LIMIT_MS: u64 = 600_000;

fn unavailable(e: impl std::fmt::Display) -> HubError {
    HubError::StoreUnavailable(e.to_string())
}

/// The seed of the ids minted at a record position.
fn seed(pos: u64) -> u64 {
    seed_of(&pos.to_string())
}

/// Syncs a directory, so that files created, renamed or removed in it stay so.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Makes `dir` and its missing parents so that they stay after a power loss: each new
/// directory's entry is synced in its parent (syncing `dir` itself later keeps only
/// what is in it).
pub fn create_dir_durably(dir: &Path) -> std::io::Result<()> {
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(d) = at {
        if d.as_os_str().is_empty() || d.exists() {
            break;
        }
        missing.push(d);
        at = d.parent();
    }
    std::fs::create_dir_all(dir)?;
    for d in missing.iter().rev() {
        match d.parent() {
            Some(p) if !p.as_os_str().is_empty() => sync_dir(p)?,
            _ => sync_dir(Path::new("."))?,
        }
    }
    Ok(())
}

/// What a start found in the data directory.
pub struct Recovered {
    /// The state after the snapshot and every whole record.
    pub replica: Replica<u64>,
    /// The segment to go on appending to: its first position, path and whole length
    /// (none: start a new segment at the next position).
    pub tail: Option<(u64, PathBuf, u64)>,
    /// Torn bytes cut from (or, read-only, ignored at) the end of the last segment.
    pub cut: u64,
    /// Records replayed after the snapshot.
    pub replayed: u64,
}

/// Loads the snapshot and replays the segments after it. With `repair`, a torn last
/// record is cut off the file; without, it is only left out (for checking a copy).
/// Damage anywhere else is an error naming the file and the offset.
pub fn recover(dir: &Path, rules: Arc<Rules>, repair: bool) -> Result<Recovered, HubError> {
    // Without the search index: kept up through a long tail it cost seconds, and a
    // check of a copy (`switchboard backup`) never searches. The store builds it once
    // after this (`open_blocking`).
    let mut replica = match snapshot::read(dir).map_err(unavailable)? {
        Some(s) => Replica {
            state: State::from_snapshot_without_search(rules, &s.bytes).map_err(|e| {
                unavailable(format!(
                    "{} (its state, from offset 36): {e}",
                    dir.join(snapshot::FILE).display()
                ))
            })?,
            pos: s.pos,
            now: Ts(s.now),
            applied: 0,
        },
        None => Replica {
            state: State::new_without_search(rules, Ts(0)),
            pos: 0,
            now: Ts(0),
            applied: 0,
        },
    };
    let mut segments = segment::list(dir)
        .map_err(|e| unavailable(format!("cannot list {}: {e}", dir.display())))?;
    // Segments with no record at the end: left by a rotation that failed after making
    // its file (a full disk), or by a crash while one was made. The records went on in
    // the segment before, which is the real last one: a torn tail there is cut as
    // usual, and appending goes on in it. Left in place, an empty segment would make it
    // look like a middle one (and a torn tail there would refuse the start), and its
    // name would claim positions the segment before holds. So (repairing) they go.
    while segments.len() > 1 {
        let Some((_, path)) = segments.last() else {
            break;
        };
        let bytes = std::fs::read(path)
            .map_err(|e| unavailable(format!("cannot read {}: {e}", path.display())))?;
        if !segment::holds_nothing(&bytes) {
            break;
        }
        tracing::warn!(file = %path.display(), "an empty log segment after the last one (a rotation that did not finish): removed");
        if repair {
            std::fs::remove_file(path)
                .and_then(|()| sync_dir(dir))
                .map_err(|e| unavailable(format!("cannot remove {}: {e}", path.display())))?;
        }
        segments.pop();
    }
    let mut tail = None;
    let mut cut = 0u64;
    let mut replayed = 0u64;
    for (i, (first, path)) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        let bytes = std::fs::read(path)
            .map_err(|e| unavailable(format!("cannot read {}: {e}", path.display())))?;
        let scan = segment::scan(&bytes);
        if let Some((off, damage)) = &scan.damage {
            match damage {
                segment::Damage::Torn | segment::Damage::TornChecksum if last => {
                    // What was written of the torn batch: not the zeros written ahead.
                    let written_to = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
                    cut = written_to.saturating_sub(*off) as u64;
                    tracing::warn!(
                        file = %path.display(),
                        offset = off,
                        bytes = cut,
                        "the log's tail was torn (a crash before it was synced; never acknowledged): cut off"
                    );
                    if repair {
                        let f = std::fs::OpenOptions::new()
                            .write(true)
                            .open(path)
                            .and_then(|f| f.set_len(*off as u64).and_then(|()| f.sync_all()));
                        f.map_err(|e| {
                            unavailable(format!(
                                "cannot cut the torn tail of {}: {e}",
                                path.display()
                            ))
                        })?;
                    }
                }
                segment::Damage::Corrupt(what) => {
                    return Err(unavailable(format!(
                        "{} is damaged at offset {off}: {what}; refusing to start (restore a backup, or move the file away to lose what follows)",
                        path.display()
                    )));
                }
                _ => {
                    return Err(unavailable(format!(
                        "{} ends inside a record or an unfinished batch at offset {off} but is not the last segment; refusing to start",
                        path.display()
                    )));
                }
            }
        }
        for (k, (off, range)) in scan.records.iter().enumerate() {
            let pos = first + k as u64;
            if pos <= replica.pos {
                continue; // covered by the snapshot (a crash before the removal)
            }
            if pos != replica.pos + 1 {
                return Err(unavailable(format!(
                    "{}: records {} to {} are missing; refusing to start",
                    path.display(),
                    replica.pos + 1,
                    pos - 1
                )));
            }
            if step(&mut replica, pos, seed(pos), &bytes[range.clone()]).is_none() {
                // Its checksum holds, so it was written whole, by a version that knows
                // more than this one: skipping it would lose an acknowledged command.
                return Err(unavailable(format!(
                    "{}: the record at offset {off} (log position {pos}) cannot be read by \
                     this version (written by a newer one?); refusing to start",
                    path.display()
                )));
            }
            replayed += 1;
        }
        if last {
            let end = first + scan.records.len() as u64;
            // Appended to only in format 2, with its header in place: a format-1
            // segment (from before batch-end markers) is left as it is, and a segment
            // cut short while being made is made again.
            let appendable =
                scan.format == segment::Format::V2 && scan.valid_len >= segment::MAGIC.len();
            if end == replica.pos + 1 {
                if appendable {
                    tail = Some((*first, path.clone(), scan.valid_len as u64));
                }
            } else if *first > replica.pos + 1 {
                return Err(unavailable(format!(
                    "{} starts at record {first} but the state ends at {}; refusing to start",
                    path.display(),
                    replica.pos
                )));
            }
        }
    }
    Ok(Recovered {
        replica,
        tail,
        cut,
        replayed,
    })
}

/// Bytes of segments and snapshot in `dir`.
pub fn disk_bytes(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.filter_map(Result::ok)
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n == snapshot::FILE || segment::first_of(&n).is_some()
        })
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// A command for the writer.
struct Job {
    bytes: Vec<u8>,
    reply: oneshot::Sender<Result<Outcome, HubError>>,
}

/// What the writer hands the applier, in log order.
enum Written {
    /// A synced batch and the position of its first record.
    Batch(u64, Vec<Job>),
    /// The snapshot at this position is due: every record up to it has been handed
    /// over, and the writer has started a new segment after it.
    Snapshot(u64),
}

struct Shared {
    dir: PathBuf,
    rules: Arc<Rules>,
    replica: Mutex<Replica<u64>>,
    /// Where the applier delivers each decision's notices.
    sink: Sink,
    /// Why the log can no longer be written (a failed write or fsync): every command is
    /// refused from then on, and readiness fails. After a failed fsync the kernel may
    /// have dropped the pages, so carrying on could acknowledge what is not on disk.
    failed: Mutex<Option<String>>,
    /// Set by `stop`: commands are refused (the drain is over).
    stopped: AtomicBool,
    /// A snapshot is being built.
    compacting: AtomicBool,
    /// The final snapshot of a clean stop: not asked, asked (the writer took the
    /// request and started it, or found nothing to do).
    closing: AtomicU8,
    /// The snapshot builder, joined when the store is dropped.
    compaction: Mutex<Option<std::thread::JoinHandle<()>>>,
    snapshot_every: u64,
    /// `FORKED_LIMIT_MS` unless a test shortens it (`with_forked_limit`).
    forked_limit_ms: AtomicU64,
    metrics: FileMetrics,
    /// The directory's lock, let go only when the last thread holding this (writer,
    /// applier, snapshot builder) is done with it: the store itself can be dropped on
    /// the applier thread (the last reference to the hub let go while it delivers),
    /// which then goes on applying and snapshotting what was queued. Held by the store,
    /// the lock went with it, and a new store on the directory could start meanwhile.
    _lock: lock::DirLock,
}

impl Shared {
    fn replica(&self) -> MutexGuard<'_, Replica<u64>> {
        // Nothing panics half-way through a step on purpose; carrying on with the state
        // beats taking the hub down.
        self.replica.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fail(&self, why: String) {
        tracing::error!(error = %why, "the log cannot be written: refusing every command from now on");
        *self.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
    }

    fn failure(&self) -> Option<String> {
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// The file-backed store. See the module documentation.
pub struct FileStore {
    shared: Arc<Shared>,
    node: String,
    tx: Option<mpsc::SyncSender<Job>>,
    writer: Option<std::thread::JoinHandle<()>>,
    applier: Option<std::thread::JoinHandle<()>>,
    /// How long a caller waits for its command to be written, synced and applied.
    call_timeout: std::time::Duration,
}

/// The writer thread's own state.
struct Writer {
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Job>,
    /// Written batches, and snapshots due, to the applier.
    written: mpsc::Sender<Written>,
    file: std::fs::File,
    /// Where the next batch starts: the end of the current segment's last batch.
    len: u64,
    /// The current segment's size on disk (`len` plus the zeros written ahead of it).
    allocated: u64,
    /// Off for the rest of a segment once zeros could not be written ahead (a full
    /// disk): batches are then appended as before, and only their own writes fail.
    prealloc: bool,
    /// The next record's position.
    next: u64,
    /// Records written since the last snapshot was started.
    since_snapshot: u64,
}

impl FileStore {
    /// Opens (creating it if needed) the data directory: takes its lock, loads the
    /// snapshot, replays the log, and declares lost the node(s) whose desktops were
    /// connected when it stopped (their grace starts at `now()`, read once the replay is
    /// done; they resume by reconnecting).
    /// Each decision's notices go to `sink`.
    pub async fn open(
        dir: &Path,
        node: &str,
        rules: Arc<Rules>,
        now: impl FnOnce() -> Ts,
        snapshot_every: u64,
        sink: Sink,
    ) -> Result<FileStore, HubError> {
        let dir = dir.to_path_buf();
        let opened = {
            let dir = dir.clone();
            let rules = rules.clone();
            tokio::task::spawn_blocking(move || open_blocking(&dir, rules))
                .await
                .map_err(unavailable)??
        };
        let (lock, rec, file, len, next) = opened;
        // The tail's zeros written ahead before the restart are still room.
        let allocated = file.metadata().map(|m| m.len()).unwrap_or(len).max(len);
        let replayed = rec.replayed;
        tracing::info!(
            dir = %dir.display(),
            position = rec.replica.pos,
            replayed,
            torn_bytes_cut = rec.cut,
            "file store opened"
        );
        let lost = rec.replica.state.book.nodes_in_use();
        let shared = Arc::new(Shared {
            dir,
            rules,
            replica: Mutex::new(rec.replica),
            sink,
            failed: Mutex::new(None),
            stopped: AtomicBool::new(false),
            compacting: AtomicBool::new(false),
            closing: AtomicU8::new(OPEN),
            compaction: Mutex::new(None),
            snapshot_every: snapshot_every.max(1),
            forked_limit_ms: AtomicU64::new(FORKED_LIMIT_MS),
            metrics: FileMetrics::default(),
            _lock: lock,
        });
        // Bounded: on a disk that hangs, callers time out (`outcome_unknown`) but their
        // commands stay queued; past this many the store refuses at once instead of
        // holding more in memory (and applying them all when the disk comes back).
        let (tx, rx) = mpsc::sync_channel(MAX_QUEUED);
        let (written, to_apply) = mpsc::channel();
        let writer = Writer {
            shared: shared.clone(),
            rx,
            written,
            file,
            len,
            allocated,
            prealloc: true,
            next,
            // Counted from the snapshot, so that a log replayed at start is folded
            // into the next snapshot in due course, not only after `snapshot_every`
            // new records.
            since_snapshot: replayed,
        };
        let applier = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("sb-log-apply".into())
                .spawn(move || {
                    for w in to_apply {
                        match w {
                            Written::Batch(first, batch) => apply(&shared, first, batch),
                            Written::Snapshot(target) => take_snapshot(&shared, target),
                        }
                    }
                    // A forked snapshot writer dies with the thread that forked it (so
                    // that none outlives a killed hub): this one stays until it is done.
                    let h = shared
                        .compaction
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .take();
                    if let Some(h) = h {
                        let _ = h.join();
                    }
                })
                .map_err(|e| unavailable(format!("cannot start the log applier: {e}")))?
        };
        let writer = std::thread::Builder::new()
            .name("sb-log-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| unavailable(format!("cannot start the log writer: {e}")))?;
        let store = FileStore {
            shared,
            node: node.to_owned(),
            tx: Some(tx),
            writer: Some(writer),
            applier: Some(applier),
            call_timeout: std::time::Duration::from_secs(3),
        };
        // Their grace counts from now, after the replay (which may take seconds at a
        // million records, while no desktop can connect yet), not from the start.
        let now = now();
        store.begin_new_history_if_copied(now).await?;
        for n in lost {
            tracing::info!(node = %n, "desktops were connected when the hub stopped: their grace starts now");
            let o = store
                // Nothing waits on the start but this: the first write after a restart
                // may take longer than a caller's timeout (the segment's first write
                // ahead), and giving up here would abort the start.
                .submit_within(
                    Body::Routing(Box::new(Command::NodeLost { node: n })),
                    now,
                    OPEN_LIMIT,
                )
                .await?;
            o.reply?;
        }
        Ok(store)
    }

    /// A directory started from a backup copy (`NEW_HISTORY_FILE`): the new epoch is
    /// recorded, durably, before the marker goes. A crash in between names yet another
    /// epoch at the next start, which no reader has seen (nothing listens before the
    /// store is open); removing the marker first could bring the old epoch back.
    async fn begin_new_history_if_copied(&self, now: Ts) -> Result<(), HubError> {
        let marker = self.shared.dir.join(NEW_HISTORY_FILE);
        if !marker.exists() {
            return Ok(());
        }
        let nonce = uuid::Uuid::new_v4().as_u64_pair().0;
        self.submit_within(Body::NewHistory { nonce }, now, OPEN_LIMIT)
            .await?
            .reply?;
        let dir = self.shared.dir.clone();
        tokio::task::spawn_blocking(move || {
            std::fs::remove_file(&marker).and_then(|()| sync_dir(&dir))
        })
        .await
        .map_err(unavailable)?
        .map_err(|e| unavailable(format!("cannot remove {NEW_HISTORY_FILE}: {e}")))?;
        let epoch = self.shared.replica().state.events.epoch().cloned();
        tracing::info!(
            epoch = epoch.as_deref().unwrap_or("-"),
            "started from a backup copy: the events have a new epoch"
        );
        Ok(())
    }

    /// The state as snapshot bytes (the encoding snapshots use), for comparing two
    /// states.
    pub fn state_bytes(&self) -> Result<Vec<u8>, HubError> {
        self.shared.replica().state.snapshot_bytes()
    }

    /// The position of the last record applied.
    pub fn position(&self) -> u64 {
        self.shared.replica().pos
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Kills a forked snapshot writer after `limit` instead of 10 minutes (for a test of
    /// what follows: the snapshot built from the log).
    pub fn with_forked_limit(self, limit: std::time::Duration) -> FileStore {
        self.shared
            .forked_limit_ms
            .store(limit.as_millis() as u64, Ordering::Relaxed);
        self
    }

    /// Bounds every command's wait for the disk (`store.call_timeout_ms`).
    pub fn with_call_timeout(mut self, limit: std::time::Duration) -> FileStore {
        self.call_timeout = limit;
        self
    }

    async fn submit(&self, body: Body, now: Ts) -> Result<Outcome, HubError> {
        self.submit_within(body, now, self.call_timeout).await
    }

    async fn submit_within(
        &self,
        body: Body,
        now: Ts,
        limit: Duration,
    ) -> Result<Outcome, HubError> {
        if let Some(why) = self.shared.failure() {
            return Err(unavailable(why));
        }
        if self.shared.stopped.load(Ordering::Relaxed) {
            return Err(unavailable("the store is stopped"));
        }
        let bytes = Entry {
            req: None,
            node: self.node.clone(),
            now,
            body,
        }
        .encode()?;
        // A record the reader would refuse as corruption at the next start must never
        // be written (the config's limits keep commands far below this).
        if bytes.len() > segment::MAX_RECORD {
            return Err(HubError::invalid(
                "body",
                format!(
                    "this command is {} bytes encoded, more than the log takes ({})",
                    bytes.len(),
                    segment::MAX_RECORD
                ),
            ));
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .as_ref()
            .ok_or_else(|| unavailable("the store is stopped"))?
            .try_send(Job { bytes, reply })
            .map_err(|e| match e {
                mpsc::TrySendError::Full(_) => unavailable(format!(
                    "{MAX_QUEUED} commands are waiting for the disk: refusing more until it catches up"
                )),
                mpsc::TrySendError::Disconnected(_) => unavailable("the log writer stopped"),
            })?;
        // A disk that hangs (a stuck fsync, a full NFS mount) must not hold the caller:
        // it gets an answer within the call timeout. The job is queued and may still be
        // written and applied, so the answer is `outcome_unknown`, never "nothing
        // changed". The writer itself is not interrupted: a hung disk is the operator's
        // to fix, and `/readyz` fails meanwhile only if the write fails.
        match tokio::time::timeout(limit, rx).await {
            // The job was handed over: a writer or applier that died with it may have
            // written it first (a restart replays it), so "nothing changed" would lie.
            Ok(r) => r.map_err(|_| {
                HubError::OutcomeUnknown(
                    "the log writer stopped with the command in hand; it may have been written"
                        .into(),
                )
            })?,
            Err(_) => Err(HubError::OutcomeUnknown(format!(
                "the log writer did not answer within {} ms; the command may still be written",
                limit.as_millis()
            ))),
        }
    }
}

/// The blocking part of opening: lock, recover, and the segment to append to.
#[allow(clippy::type_complexity)]
fn open_blocking(
    dir: &Path,
    rules: Arc<Rules>,
) -> Result<(lock::DirLock, Recovered, std::fs::File, u64, u64), HubError> {
    create_dir_durably(dir)
        .map_err(|e| unavailable(format!("cannot create {}: {e}", dir.display())))?;
    let lock = lock::acquire(dir).map_err(unavailable)?;
    // A snapshot that was being written when the hub stopped never took effect.
    let _ = std::fs::remove_file(dir.join(snapshot::TMP));
    let fingerprint = rules.fingerprint();
    let mut rec = recover(dir, rules, true)?;
    check_rules(dir, &fingerprint, rec.replayed)?;
    if rec.replayed > 0 {
        // What was replayed may be in the page cache only (written, then kill -9
        // before its fsync: never acknowledged, but read back and now the state, its
        // events and ids handed out). Made durable before anything is served, so that a
        // power cut now cannot take back what readers were shown and give its position
        // to another command.
        for (_, path) in segment::list(dir).map_err(unavailable)? {
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(|e| unavailable(format!("cannot sync {}: {e}", path.display())))?;
        }
        sync_dir(dir).map_err(|e| unavailable(format!("cannot sync {}: {e}", dir.display())))?;
    }
    // Replayed without the search index: built once, now that the state is whole.
    rec.replica.state.rebuild_search();
    let next = rec.replica.pos + 1;
    let (file, len) = match &rec.tail {
        Some((_, path, len)) => (
            // Written at explicit offsets (`write_all_at`), not appended: the file may
            // end with zeros written ahead (`PREALLOC`).
            std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| unavailable(format!("cannot open {}: {e}", path.display())))?,
            *len,
        ),
        None => (new_segment(dir, next)?, segment::MAGIC.len() as u64),
    };
    Ok((lock, rec, file, len, next))
}

/// Refuses a start whose rules differ from those the replayed records were decided by
/// (`RULES_FILE`), and records the rules in force from now on. A directory without the
/// file (made before it existed) is taken as it is.
fn check_rules(dir: &Path, fingerprint: &str, replayed: u64) -> Result<(), HubError> {
    let path = dir.join(RULES_FILE);
    let stored = match std::fs::read_to_string(&path) {
        Ok(s) => Some(s.trim().to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(unavailable(format!("cannot read {}: {e}", path.display()))),
    };
    if stored.as_deref() == Some(fingerprint) {
        return Ok(());
    }
    if let Some(old) = &stored {
        if replayed > 0 {
            return Err(unavailable(format!(
                "{}: the {replayed} record(s) after the last snapshot were decided by other rules \
                 ([routing], [[queues]], [[agents]], [stats] or [events] changed, or another \
                 version of switchboard wrote them: {old} then, {fingerprint} now) and would be \
                 decided differently; start once with the previous configuration and version \
                 and stop the hub cleanly (SIGTERM: it takes a snapshot), then start it with \
                 the new one",
                path.display()
            )));
        }
    }
    let tmp = dir.join(format!("{RULES_FILE}.tmp"));
    std::fs::File::create(&tmp)
        .and_then(|mut f| {
            use std::io::Write;
            f.write_all(fingerprint.as_bytes())?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, &path))
        .and_then(|()| sync_dir(dir))
        .map_err(|e| unavailable(format!("cannot write {}: {e}", path.display())))
}

/// Creates the segment whose first record is `first`, with its format header, durably.
/// A file of that name can only be one cut short while being made (no records): it is
/// made again.
fn new_segment(dir: &Path, first: u64) -> Result<std::fs::File, HubError> {
    let path = dir.join(segment::name(first));
    let made = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)
        .and_then(|mut f| {
            f.write_all(&segment::MAGIC)?;
            f.sync_data()?;
            Ok(f)
        });
    let f = made.map_err(|e| {
        // Not left behind half made (a start would remove it anyway).
        let _ = std::fs::remove_file(&path).and_then(|()| sync_dir(dir));
        unavailable(format!("cannot create {}: {e}", path.display()))
    })?;
    if let Err(e) = sync_dir(dir) {
        // An empty segment left behind would sort last and make the real last segment
        // look like a middle one: a torn tail there would then refuse the next start.
        let _ = std::fs::remove_file(&path);
        return Err(unavailable(format!("cannot sync {}: {e}", dir.display())));
    }
    Ok(f)
}

impl Writer {
    fn run(mut self) {
        let mut buf = Vec::with_capacity(64 * 1024);
        // Ends when the store is dropped (every sender with it).
        while let Ok(first) = self.rx.recv() {
            if first.bytes.is_empty() {
                self.close();
                continue;
            }
            let mut batch = vec![first];
            let mut close = false;
            while batch.len() < MAX_BATCH {
                match self.rx.try_recv() {
                    // The clean stop's request: after the commands before it.
                    Ok(j) if j.bytes.is_empty() => {
                        close = true;
                        break;
                    }
                    Ok(j) => batch.push(j),
                    Err(_) => break,
                }
            }
            self.write(&mut buf, batch);
            if close {
                self.close();
            }
        }
    }

    /// A clean stop: a snapshot of every record written, so that the next start
    /// replays nothing (and may run by changed rules).
    fn close(&mut self) {
        // One snapshot at a time: the one under way first.
        let until = Instant::now() + CLOSE_LIMIT;
        while self.shared.compacting.load(Ordering::Acquire) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        if self.shared.failure().is_none() && self.since_snapshot > 0 {
            if self.shared.compacting.load(Ordering::Acquire) {
                tracing::warn!(
                    limit_secs = CLOSE_LIMIT.as_secs(),
                    "the snapshot under way did not end in time: no final snapshot; the next start replays the log after the last one (and refuses changed rules while it does)"
                );
            } else {
                self.start_snapshot();
            }
        }
        self.shared.closing.store(ASKED, Ordering::Release);
    }

    /// Writes one batch, syncs it, and hands it to the applier.
    fn write(&mut self, buf: &mut Vec<u8>, batch: Vec<Job>) {
        if let Some(why) = self.shared.failure() {
            for j in batch {
                let _ = j.reply.send(Err(unavailable(why.clone())));
            }
            return;
        }
        buf.clear();
        for j in &batch {
            segment::frame(buf, &j.bytes);
        }
        // Written with the batch, before its one fsync: a batch whose marker is not
        // on disk was never acknowledged (`segment`, format 2).
        segment::end_batch(buf, self.len, batch.len() as u32);
        let end = self.len + buf.len() as u64;
        if end > self.allocated && self.prealloc {
            self.write_ahead(end);
        }
        // The fsync alone is timed (`switchboard_store_fsync_seconds`): the zeros
        // written ahead and the write into the page cache are not the disk's latency.
        let written = self.file.write_all_at(buf, self.len).and_then(|()| {
            let t = Instant::now();
            self.file.sync_data().map(|()| t.elapsed())
        });
        let took = match written {
            Ok(took) => took,
            Err(e) => {
                self.shared.fail(format!("cannot write the log: {e}"));
                // Some of the batch may have reached the file (a write that went
                // through, then a failed fsync): a restart would replay it. So the
                // batch is told "unknown", not "nothing changed"; later commands are
                // refused before any write (`store_unavailable`).
                for j in batch {
                    let _ = j.reply.send(Err(HubError::OutcomeUnknown(format!(
                        "cannot write the log: {e}"
                    ))));
                }
                return;
            }
        };
        self.shared.metrics.commit(batch.len(), took);
        self.len = end;
        self.allocated = self.allocated.max(end);
        let first = self.next;
        self.next += batch.len() as u64;
        self.since_snapshot += batch.len() as u64;
        // Applied and answered on the applier thread, while this one writes and
        // syncs the next batch.
        if self.written.send(Written::Batch(first, batch)).is_err() {
            self.shared.fail("the log applier stopped".into());
        }
        if self.since_snapshot >= self.shared.snapshot_every
            && !self.shared.compacting.load(Ordering::Acquire)
        {
            self.start_snapshot();
        }
    }

    /// Writes zeros from the segment's current size to [`PREALLOC`] past `end`, before
    /// the batch that ends at `end` is written over the start of them; the batch's one
    /// sync makes both durable. Zeros are what `segment::scan` reads as free room, so a
    /// crash anywhere in here leaves a segment that reads as before the batch.
    fn write_ahead(&mut self, end: u64) {
        static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
        let to = end + PREALLOC;
        let mut at = self.allocated;
        while at < to {
            let n = (to - at).min(ZEROS.len() as u64) as usize;
            if let Err(e) = self.file.write_all_at(&ZEROS[..n], at) {
                tracing::warn!(error = %e, "cannot write ahead in the log segment; appending without");
                self.prealloc = false;
                break;
            }
            at += n as u64;
        }
        self.allocated = at;
    }

    /// Starts a new segment at the next position and has the applier take a snapshot
    /// of everything before it (`take_snapshot`) once it has applied it all.
    fn start_snapshot(&mut self) {
        let target = self.next - 1;
        match new_segment(&self.shared.dir, self.next) {
            Ok(f) => {
                self.file = f;
                self.len = segment::MAGIC.len() as u64;
                self.allocated = self.len;
                self.prealloc = true;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot start a new segment; the snapshot waits");
                return;
            }
        }
        self.since_snapshot = 0;
        self.shared.compacting.store(true, Ordering::Release);
        if self.written.send(Written::Snapshot(target)).is_err() {
            self.shared.compacting.store(false, Ordering::Release);
        }
    }
}

/// On the applier thread, every record up to `target` applied: starts the snapshot at
/// `target`. On Linux a forked child writes the replica as it stands (`fork`: the
/// applier pauses only for the fork); where that is not possible, a thread builds it
/// from the previous snapshot and the closed segments (`compact`). Either way a
/// background thread waits for it, then removes the segments it covers.
fn take_snapshot(shared: &Arc<Shared>, target: u64) {
    let t = Instant::now();
    let child = {
        // Held across the fork: a read may change the state under it (`context_read`
        // takes it mutably), so only with the lock is the child's copy the replica at
        // `target`, whole.
        let r = shared.replica();
        if r.pos == target {
            fork::spawn(&r.state, &shared.dir, r.pos, r.now.0)
        } else {
            Err(std::io::Error::other(format!(
                "the replica is at {}, not {target}",
                r.pos
            )))
        }
    };
    let paused = t.elapsed();
    let (dir, rules) = (shared.dir.clone(), shared.rules.clone());
    let tmp = dir.join(snapshot::TMP);
    let counted = shared.clone();
    let build: Box<dyn FnOnce() -> Result<Option<u64>, HubError> + Send> = match child {
        Ok(child) => {
            shared.metrics.forked(paused);
            let limit = shared.forked_limit_ms.load(Ordering::Relaxed);
            Box::new(move || match child.wait(Duration::from_millis(limit)) {
                Ok(size) => {
                    snapshot::publish(&dir, size).map_err(unavailable)?;
                    remove_covered(&dir, target)?;
                    Ok(Some(size))
                }
                // Killed (the OOM killer takes it first), a full disk, a hang: the
                // snapshot is still due, and the way without a child may still work.
                Err(why) => {
                    // (The child never puts its file in place: the build overwrites
                    // whatever it left in `snapshot.tmp`.)
                    tracing::warn!(error = %why, "the forked snapshot writer failed; building the snapshot from the log instead");
                    let built = compact(&dir, rules, target);
                    if matches!(built, Ok(Some(_))) {
                        counted.metrics.rebuilt();
                    }
                    built
                }
            })
        }
        Err(why) => {
            // Counted only where a fork was possible and failed: without fork at all,
            // every snapshot is built this way by design.
            let unsupported = why.kind() == std::io::ErrorKind::Unsupported;
            if unsupported {
                tracing::debug!("no fork here: building the snapshot from the log");
            } else {
                tracing::warn!(error = %why, "cannot fork the snapshot writer; building the snapshot from the log instead");
            }
            Box::new(move || {
                let built = compact(&dir, rules, target);
                if !unsupported && matches!(built, Ok(Some(_))) {
                    counted.metrics.rebuilt();
                }
                built
            })
        }
    };
    let finish = move |shared: &Shared| {
        lower_priority();
        match build() {
            Ok(Some(size)) => {
                shared.metrics.snapshot(t.elapsed(), size);
                tracing::info!(
                    position = target,
                    bytes = size,
                    ms = t.elapsed().as_millis() as u64,
                    paused_us = paused.as_micros() as u64,
                    "snapshot written, segments below it removed"
                );
            }
            Ok(None) => {}
            Err(e) => {
                // Whatever a failed attempt left (a child killed mid-write) would hold
                // the space the log needs on a full disk.
                let _ = std::fs::remove_file(&tmp);
                tracing::warn!(error = %e, "cannot write a snapshot (the log is kept; the next snapshot tries again)");
            }
        }
        shared.compacting.store(false, Ordering::Release);
    };
    // Handed to the thread through a slot, so that if the thread cannot start, this
    // one still finishes (a forked child left unwaited could still be writing when the
    // next snapshot starts one more).
    let slot = Arc::new(Mutex::new(Some(finish)));
    let theirs = (shared.clone(), slot.clone());
    let spawned = std::thread::Builder::new()
        .name("sb-snapshot".into())
        .spawn(move || {
            let (shared, slot) = theirs;
            let f = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(f) = f {
                f(&shared);
            }
        });
    match spawned {
        Ok(h) => {
            let mut slot = shared.compaction.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(old) = slot.replace(h) {
                let _ = old.join(); // finished: `compacting` was false
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the snapshot thread; the log's applier waits for the snapshot");
            let f = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(f) = f {
                f(shared);
            }
        }
    }
}

/// Applies a written batch in log order: each decision's notices to the hub, then its
/// outcome to its caller. Only the applier thread calls it, so log order, apply order
/// and notice order are one.
fn apply(shared: &Shared, first: u64, batch: Vec<Job>) {
    let mut r = shared.replica();
    for (i, j) in batch.into_iter().enumerate() {
        let pos = first + i as u64;
        match step(&mut r, pos, seed(pos), &j.bytes) {
            Some((mut o, _, _)) => {
                shared.sink.deliver(&mut o);
                let _ = j.reply.send(Ok(o));
            }
            None => {
                let _ = j
                    .reply
                    .send(Err(unavailable("a log entry could not be decoded")));
            }
        }
    }
}

/// Builds the snapshot at `target` from the stored one and the closed segments, puts
/// it in place, and removes the segments it covers. Returns its size, or nothing when
/// the stored one already covers `target`. The way when a fork fails: it decides every
/// record since the stored snapshot a second time.
pub fn compact(dir: &Path, rules: Arc<Rules>, target: u64) -> Result<Option<u64>, HubError> {
    // Replayed only to be written: no search index to keep up.
    let mut r = match snapshot::read(dir).map_err(unavailable)? {
        Some(s) => Replica {
            state: State::from_snapshot_without_search(rules, &s.bytes).map_err(|e| {
                unavailable(format!(
                    "{} (its state, from offset 36): {e}",
                    dir.join(snapshot::FILE).display()
                ))
            })?,
            pos: s.pos,
            now: Ts(s.now),
            applied: 0,
        },
        None => Replica {
            state: State::new_without_search(rules, Ts(0)),
            pos: 0,
            now: Ts(0),
            applied: 0,
        },
    };
    if r.pos >= target {
        return Ok(None);
    }
    let segments = segment::list(dir).map_err(unavailable)?;
    for (first, path) in segments.iter().filter(|(f, _)| *f <= target) {
        let bytes = std::fs::read(path)
            .map_err(|e| unavailable(format!("cannot read {}: {e}", path.display())))?;
        let scan = segment::scan(&bytes);
        if let Some((off, d)) = scan.damage {
            return Err(unavailable(format!(
                "{} is damaged at offset {off}: {d:?}",
                path.display()
            )));
        }
        for (k, (_, range)) in scan.records.iter().enumerate() {
            let pos = first + k as u64;
            if pos <= r.pos {
                continue;
            }
            if pos > target {
                break;
            }
            if pos != r.pos + 1 {
                return Err(unavailable(format!(
                    "{}: a gap before record {pos}",
                    path.display()
                )));
            }
            step(&mut r, pos, seed(pos), &bytes[range.clone()]);
        }
    }
    if r.pos != target {
        return Err(unavailable(format!(
            "the log ends at {} before the snapshot's position {target}",
            r.pos
        )));
    }
    let bytes = r.state.snapshot_bytes()?;
    let size = snapshot::write(dir, target, r.now.0, &bytes).map_err(|e| {
        unavailable(format!(
            "cannot write the snapshot in {}: {e}",
            dir.display()
        ))
    })?;
    remove_covered(dir, target)?;
    Ok(Some(size))
}

/// Removes the segments a durable snapshot at `target` covers: those that start at or
/// before it (the writer began a new segment right after `target`).
fn remove_covered(dir: &Path, target: u64) -> Result<(), HubError> {
    let segments = segment::list(dir).map_err(unavailable)?;
    for (_, path) in segments.iter().filter(|(f, _)| *f <= target) {
        if let Err(e) = std::fs::remove_file(path) {
            tracing::warn!(file = %path.display(), error = %e, "cannot remove a segment the snapshot covers");
        }
    }
    sync_dir(dir).map_err(unavailable)
}

impl Drop for FileStore {
    fn drop(&mut self) {
        // The writer ends once its channel closes; the snapshot builder is waited for,
        // so that a store opened on the same directory next finds no one writing.
        // (Never from one of those threads itself: the last reference to the hub, and
        // so to this store, could in principle be let go while the writer delivers.)
        self.tx = None;
        let me = std::thread::current().id();
        for t in [self.writer.take(), self.applier.take()]
            .into_iter()
            .flatten()
        {
            if t.thread().id() != me {
                let _ = t.join();
            }
        }
        let h = self
            .shared
            .compaction
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(h) = h {
            if h.thread().id() != me {
                let _ = h.join();
            }
        }
    }
}

#[async_trait::async_trait]
impl Store for FileStore {
    async fn decide(&self, d: Decision, now: Ts) -> Result<Outcome, HubError> {
        self.submit(d, now).await
    }

    fn read_state(&self, f: &mut dyn FnMut(&State)) {
        // The applier delivers each batch under this lock (`apply`).
        f(&self.shared.replica().state);
    }

    async fn ping(&self) -> Result<(), HubError> {
        match self.shared.failure() {
            Some(why) => Err(unavailable(why)),
            None => Ok(()),
        }
    }

    async fn context_read(&self, cmd: ContextCommand, now: Ts) -> Result<Outcome, HubError> {
        // A read changes nothing, so it needs no place in the log.
        if !cmd.is_read_only() {
            return self.context(cmd, now).await;
        }
        // The replica's lock only for the start: a search runs after it is let go.
        let read = self.shared.replica().state.context_read(cmd, now);
        Ok(read.finish().await)
    }

    fn stop(&self) {
        self.shared.stopped.store(true, Ordering::Relaxed);
        // A snapshot of everything written, so that the next start replays nothing:
        // quicker, and free to run by changed rules. Asked of the writer, after the
        // commands already queued (an empty job is the request), and waited for here:
        // the process ends next. (A command that got past `stopped` just before it is
        // still written, after the snapshot: the next start replays it.)
        if self.shared.failure().is_none() {
            if let Some(tx) = &self.tx {
                let (reply, _) = oneshot::channel();
                if tx
                    .try_send(Job {
                        bytes: Vec::new(),
                        reply,
                    })
                    .is_ok()
                {
                    let t = Instant::now();
                    let until = t + CLOSE_LIMIT;
                    let busy = || {
                        self.shared.closing.load(Ordering::Acquire) != ASKED
                            || self.shared.compacting.load(Ordering::Acquire)
                    };
                    while Instant::now() < until && busy() {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    if busy() {
                        tracing::warn!(
                            limit_secs = CLOSE_LIMIT.as_secs(),
                            "stopped waiting for the final snapshot: the next start replays the log after the last one"
                        );
                    }
                    tracing::info!(
                        ms = t.elapsed().as_millis() as u64,
                        "file store closed (its final snapshot taken, unless a warning said otherwise)"
                    );
                }
            }
        }
        let (appends, fsyncs, largest) = self.shared.metrics.totals();
        tracing::info!(
            appends,
            fsyncs,
            records_per_fsync = format!("{:.1}", appends as f64 / fsyncs.max(1) as f64),
            largest_batch = largest,
            "file store stopped"
        );
    }

    fn render_metrics(&self, out: &mut String) {
        self.shared
            .metrics
            .render(out, disk_bytes(&self.shared.dir));
    }

    fn describe(&self) -> String {
        format!("file ({})", self.shared.dir.display())
    }
}
