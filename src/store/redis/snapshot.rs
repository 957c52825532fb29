//! Snapshots in Redis: one node at a time (a lock key) replays the stored snapshot
//! plus the log after it on the background thread, uploads the result in chunks and
//! puts it in place, trimming the log below it.

use super::parse::{entries_of, first_entry, position_lt, trimmed_past};
use super::{
    CALL_TIMEOUT, LOG, Replica, SNAPSHOT, SNAPSHOT_CHUNK, SNAPSHOT_STATE, Shared, unavailable,
};
use crate::clock::Ts;
use crate::error::HubError;
use crate::log::{seed_of, step};
use crate::state::State;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Only one node snapshots at a time: it holds this key meanwhile.
const SNAPSHOT_LOCK: &str = "sb:snapshot:lock";
/// How long building and uploading a snapshot may take.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(60);
/// Log entries fetched per call while a snapshot is built.
const COMPACT_BATCH: usize = 2000;
/// Extends the snapshot lock only if this node holds it: 1, or 0 when it was lost.
const RENEW_SCRIPT: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"#;
/// Deletes the snapshot lock only if this node holds it.
const UNLOCK_SCRIPT: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// Puts an uploaded snapshot in place only if it is newer than the one stored, then
/// trims the log below the given position. The bytes were uploaded beforehand in chunks
/// to a staging key, so that no single Redis call carries the whole state (Redis would
/// stall every node while it copied it); here they are only renamed into place.
/// Only the holder of the snapshot lock may store: one whose lock lapsed mid-way (and
/// whose replay may have raced a trim by the next holder) gets -1. The trim point is
/// the lowest of the new snapshot's position and every heartbeat's position, read here,
/// atomically with the rename: a node that started while this snapshot was built beats
/// (from "0-0") before it loads anything, so it is either seen here or loads the new
/// snapshot.
/// KEYS[1] = snapshot hash (pos, now), KEYS[2] = log, KEYS[3] = staging key, KEYS[4] =
/// the snapshot's bytes, KEYS[5] = the lock; ARGV[1] = position, ARGV[2] = the pattern
/// of the heartbeat keys, ARGV[3] = the replica's time at that position, ARGV[4] = this
/// node's incarnation. Atomic: one script.
const SNAPSHOT_SCRIPT: &str = r#"
local function newer(a, b)
  local am, as = string.match(a, "(%d+)-(%d+)")
  local bm, bs = string.match(b, "(%d+)-(%d+)")
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am > bm or (am == bm and as > bs)
end
if redis.call('GET', KEYS[5]) ~= ARGV[4] then
  redis.call('DEL', KEYS[3])
  return -1
end
local cur = redis.call('HGET', KEYS[1], 'pos')
if cur and not newer(ARGV[1], cur) then
  redis.call('DEL', KEYS[3])
  return 0
end
redis.call('RENAME', KEYS[3], KEYS[4])
redis.call('PERSIST', KEYS[4])
redis.call('HSET', KEYS[1], 'pos', ARGV[1], 'now', ARGV[3])
local trim = ARGV[1]
for _, k in ipairs(redis.call('KEYS', ARGV[2])) do
  local p = redis.call('GET', k)
  if p and string.match(p, "^%d+%-%d+$") and newer(trim, p) then
    trim = p
  end
end
redis.call('XTRIM', KEYS[2], 'MINID', trim)
return 1
"#;

impl Shared {
    /// Stores a snapshot once `snapshot_every` entries were applied since the last one,
    /// on its own task and connection (a large upload must not hold up commands or the
    /// heartbeat), one node at a time (the lock key).
    pub(super) async fn snapshots(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut conn: Option<MultiplexedConnection> = None;
        loop {
            tick.tick().await;
            let applied = self.replica().applied;
            if applied - self.last_snapshot.load(Ordering::Relaxed) < self.snapshot_every {
                continue;
            }
            if conn.is_none() {
                let cfg = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(CALL_TIMEOUT))
                    .set_response_timeout(Some(SNAPSHOT_TIMEOUT));
                conn = self
                    .client
                    .get_multiplexed_async_connection_with_config(&cfg)
                    .await
                    .ok();
            }
            let Some(c) = conn.as_mut() else { continue };
            match self.store_snapshot(c, applied).await {
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot store a snapshot");
                    conn = None;
                }
            }
        }
    }

    async fn store_snapshot(
        &self,
        c: &mut MultiplexedConnection,
        applied: u64,
    ) -> Result<(), HubError> {
        let locked = self.lock_snapshots(c).await?;
        self.last_snapshot.store(applied, Ordering::Relaxed);
        if !locked {
            return Ok(()); // another node is taking one
        }
        let result = self.compact(c).await;
        self.unlock_snapshots(c).await;
        result
    }

    /// Takes the snapshot lock for this node: false when another node holds it.
    async fn lock_snapshots(&self, c: &mut MultiplexedConnection) -> Result<bool, HubError> {
        let lock: Option<String> = redis::cmd("SET")
            .arg(SNAPSHOT_LOCK)
            .arg(&*self.incarnation)
            .arg("NX")
            .arg("PX")
            .arg(SNAPSHOT_TIMEOUT.as_millis() as u64)
            .query_async(c)
            .await
            .map_err(unavailable)?;
        Ok(lock.is_some())
    }

    /// Lets the snapshot lock go, only if still this node's (it may have lapsed and been
    /// taken meanwhile).
    async fn unlock_snapshots(&self, c: &mut MultiplexedConnection) {
        let _: Result<i64, _> = redis::Script::new(UNLOCK_SCRIPT)
            .key(SNAPSHOT_LOCK)
            .arg(&*self.incarnation)
            .invoke_async(c)
            .await;
    }

    /// At a clean stop: when no other node is alive (no heartbeat but this node's),
    /// stores this node's replica as the snapshot at its own position, so that the next
    /// start replays nothing (and may run by changed rules or another version: see
    /// `check_log_rules`). True when stored. Encoded under the replica's lock: the node
    /// is stopping and serves nothing more.
    pub(super) async fn snapshot_if_last(&self) -> Result<bool, HubError> {
        let mut c = self.conn().await?;
        let alive: Vec<String> = redis::cmd("KEYS")
            .arg("sb:node:*")
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        let mine = format!("sb:node:{}", self.incarnation);
        if alive.iter().any(|k| *k != mine) {
            return Ok(false);
        }
        if !self.lock_snapshots(&mut c).await? {
            return Ok(false);
        }
        let encoded = {
            let r = self.replica();
            r.state.snapshot_bytes().map(|b| (b, r.now, r.pos.clone()))
        };
        let result = match encoded {
            Ok((bytes, now, pos)) => self.upload_snapshot(&mut c, &pos, now, bytes).await,
            Err(e) => Err(e),
        };
        self.unlock_snapshots(&mut c).await;
        result.map(|()| true)
    }

    /// Stores this node's replica as the snapshot at position `at`, which must be past
    /// its own position: what [`Shared::fill_gap`] does when the log lost the history
    /// the replica holds. Under the snapshot lock; nothing when another node holds it
    /// (it is storing its own, or a snapshot), or when a snapshot at or past `at` is
    /// stored already (the store script keeps the newer).
    pub(super) async fn reseed(&self, at: &str) -> Result<(), HubError> {
        let mut c = self.conn().await?;
        if !self.lock_snapshots(&mut c).await? {
            return Ok(());
        }
        // Encoded under the replica's lock, on this worker: a rare recovery, during
        // which this node applies nothing anyway (it is waiting for this very snapshot).
        let encoded = {
            let r = self.replica();
            tracing::error!(
                pos = %r.pos,
                first = %at,
                "the log lost the history this node holds (Redis emptied or replaced): storing this node's replica as its snapshot"
            );
            r.state.snapshot_bytes().map(|b| (b, r.now))
        };
        let result = match encoded {
            Ok((bytes, now)) => self.upload_snapshot(&mut c, at, now, bytes).await,
            Err(e) => Err(e),
        };
        self.unlock_snapshots(&mut c).await;
        result
    }

    /// Builds a snapshot at this node's position without touching its replica: the
    /// stored snapshot plus the log entries after it, replayed through [`step`] into a
    /// state of its own, on a blocking thread. Copying the live replica instead would
    /// hold its lock for as long as the copy takes (hundreds of milliseconds with a
    /// hundred thousand retained tasks), and every command would wait.
    async fn compact(&self, c: &mut MultiplexedConnection) -> Result<(), HubError> {
        let started = std::time::Instant::now();
        let target = self.replica().pos.clone();
        // In chunks: this node holds the lock, so nobody replaces the snapshot while it
        // is read (one GET of the whole state would stall Redis for every node).
        let base = fetch_snapshot(c).await?;
        let rules = self.rules.clone();
        let mut r = self
            .background
            .run(move || match base {
                // Replayed only to be written: no search index to keep up.
                Some((pos, now, bytes)) => Ok::<_, HubError>(Replica {
                    state: State::from_snapshot_without_search(rules, &bytes)?,
                    pos,
                    now,
                    applied: 0,
                }),
                None => Ok(Replica {
                    state: State::new_without_search(rules, Ts(0)),
                    pos: "0-0".into(),
                    now: Ts(0),
                    applied: 0,
                }),
            })
            .await??;
        if !position_lt(&r.pos, &target) {
            // Nothing new since the stored one. The decoded state is freed on the
            // background thread too: freeing a whole state takes a worker for a while.
            return self.background.run(move || drop(r)).await;
        }
        // The replay needs every entry after the base: refuse rather than build a
        // snapshot with a hole in it.
        let v: Value = first_entry(LOG).query_async(c).await.map_err(unavailable)?;
        if let Some(first) = trimmed_past(&r.pos, &v) {
            return Err(unavailable(format!(
                "the log was trimmed past the stored snapshot ({} < {first})",
                r.pos
            )));
        }
        let loaded = started.elapsed();
        let mut replayed = 0usize;
        while position_lt(&r.pos, &target) {
            let v: Value = redis::cmd("XRANGE")
                .arg(LOG)
                .arg(format!("({}", r.pos))
                .arg(&target)
                .arg("COUNT")
                .arg(COMPACT_BATCH)
                .query_async(c)
                .await
                .map_err(unavailable)?;
            let mut entries = Vec::new();
            entries_of(&v, &mut entries);
            if entries.is_empty() {
                return Err(unavailable(format!(
                    "the log ends at {} before this node's position {target}",
                    r.pos
                )));
            }
            replayed += entries.len();
            self.renew_lock(c).await?;
            r = self
                .background
                .run(move || {
                    for (id, bytes) in entries {
                        let seed = seed_of(&id);
                        step(&mut r, id, seed, &bytes);
                    }
                    r
                })
                .await?;
        }
        let caught_up = started.elapsed();
        let (pos, now) = (r.pos.clone(), r.now);
        let bytes = self
            .background
            .run(move || r.state.snapshot_bytes())
            .await??;
        let encoded = started.elapsed();
        let size = bytes.len();
        self.upload_snapshot(c, &pos, now, bytes).await?;
        tracing::info!(
            %pos,
            entries = replayed,
            bytes = size,
            load_ms = loaded.as_millis() as u64,
            replay_ms = (caught_up - loaded).as_millis() as u64,
            encode_ms = (encoded - caught_up).as_millis() as u64,
            upload_ms = (started.elapsed() - encoded).as_millis() as u64,
            "snapshot built from the log"
        );
        Ok(())
    }

    /// Extends the snapshot lock for another `SNAPSHOT_TIMEOUT`, as a build goes on;
    /// an error when it is no longer this node's (the build stops).
    async fn renew_lock(&self, c: &mut MultiplexedConnection) -> Result<(), HubError> {
        let renewed: i64 = redis::Script::new(RENEW_SCRIPT)
            .key(SNAPSHOT_LOCK)
            .arg(&*self.incarnation)
            .arg(SNAPSHOT_TIMEOUT.as_millis() as u64)
            .invoke_async(c)
            .await
            .map_err(unavailable)?;
        if renewed == 1 {
            Ok(())
        } else {
            Err(unavailable(
                "the snapshot lock lapsed while the snapshot was built",
            ))
        }
    }

    async fn upload_snapshot(
        &self,
        c: &mut MultiplexedConnection,
        pos: &str,
        now: Ts,
        bytes: Vec<u8>,
    ) -> Result<(), HubError> {
        let staging = format!("sb:snapshot:staging:{}", self.incarnation);
        let _: () = redis::cmd("DEL")
            .arg(&staging)
            .query_async(c)
            .await
            .map_err(unavailable)?;
        for chunk in bytes.chunks(SNAPSHOT_CHUNK) {
            let _: i64 = redis::cmd("APPEND")
                .arg(&staging)
                .arg(chunk)
                .query_async(c)
                .await
                .map_err(unavailable)?;
            // A build cut short (the node stopped, Redis failed) leaves no orphan
            // behind for long; the store script makes the stored copy persistent.
            let _: i64 = redis::cmd("PEXPIRE")
                .arg(&staging)
                .arg(SNAPSHOT_TIMEOUT.as_millis() as u64)
                .query_async(c)
                .await
                .map_err(unavailable)?;
            self.renew_lock(c).await?;
        }
        let stored: i64 = redis::Script::new(SNAPSHOT_SCRIPT)
            .key(SNAPSHOT)
            .key(LOG)
            .key(&staging)
            .key(SNAPSHOT_STATE)
            .key(SNAPSHOT_LOCK)
            .arg(pos)
            .arg("sb:node:*")
            .arg(now.0)
            .arg(&*self.incarnation)
            .invoke_async(c)
            .await
            .map_err(unavailable)?;
        match stored {
            1 => tracing::info!(%pos, "snapshot stored, log trimmed"),
            -1 => {
                tracing::warn!(%pos, "snapshot discarded: the snapshot lock lapsed while it was built")
            }
            _ => {}
        }
        Ok(())
    }
}

/// The stored snapshot: its position, time and bytes, or nothing when none is stored.
///
/// Read in pieces (`SNAPSHOT_CHUNK`), each call within the call timeout: one `GET` of a
/// large state (a million customers is hundreds of megabytes) could outlast it on a
/// gigabit link, and a node could then never start. Without the snapshot lock another
/// node may store a newer snapshot between two pieces: the position is read before and
/// after, and a read that saw it change (every store moves it forward) starts over.
pub(super) async fn fetch_snapshot(
    c: &mut MultiplexedConnection,
) -> Result<Option<(String, Ts, Vec<u8>)>, HubError> {
    for _ in 0..5 {
        let Some((pos, now)) = snapshot_head(c).await? else {
            return Ok(None);
        };
        let len: usize = redis::cmd("STRLEN")
            .arg(SNAPSHOT_STATE)
            .query_async(c)
            .await
            .map_err(unavailable)?;
        let mut bytes = Vec::with_capacity(len);
        while bytes.len() < len {
            let end = (bytes.len() + SNAPSHOT_CHUNK).min(len) - 1;
            let piece: Vec<u8> = redis::cmd("GETRANGE")
                .arg(SNAPSHOT_STATE)
                .arg(bytes.len())
                .arg(end)
                .query_async(c)
                .await
                .map_err(unavailable)?;
            if piece.is_empty() {
                break;
            }
            bytes.extend_from_slice(&piece);
        }
        if snapshot_head(c)
            .await?
            .is_none_or(|(again, _)| again != pos)
        {
            tracing::info!(%pos, "a newer snapshot was stored while this one was read: reading again");
            continue;
        }
        if bytes.is_empty() {
            return Err(unavailable(
                "the snapshot's position is stored but not its state",
            ));
        }
        return Ok(Some((pos, Ts(now), bytes)));
    }
    Err(unavailable(
        "the snapshot was replaced while it was read, five times over",
    ))
}

/// The stored snapshot's position and time, if one is stored.
pub(super) async fn snapshot_head(
    c: &mut MultiplexedConnection,
) -> Result<Option<(String, u64)>, HubError> {
    let head: Value = redis::cmd("HMGET")
        .arg(SNAPSHOT)
        .arg("pos")
        .arg("now")
        .query_async(c)
        .await
        .map_err(unavailable)?;
    let Value::Array(items) = head else {
        return Err(unavailable(format!(
            "{SNAPSHOT}: HMGET answered {head:?}, not a list"
        )));
    };
    let (pos, now) = match (items.first(), items.get(1)) {
        (Some(Value::BulkString(pos)), Some(Value::BulkString(now))) => (pos, now),
        // No snapshot stored.
        (Some(Value::Nil), Some(Value::Nil)) => return Ok(None),
        // Half a head (a key edited or partly evicted): taken as none, the node would
        // replay a log trimmed below it onto a blank state and serve a part of it.
        other => {
            return Err(unavailable(format!(
                "{SNAPSHOT} is damaged (pos and now: {other:?}): refusing to start from it or without it"
            )));
        }
    };
    let pos = String::from_utf8_lossy(pos).into_owned();
    let now: u64 = String::from_utf8_lossy(now)
        .parse()
        .map_err(|_| unavailable("the snapshot's time is not a number"))?;
    Ok(Some((pos, now)))
}
