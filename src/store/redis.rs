//! The shared store: state replicated on every node from one ordered log in Redis.
//!
//! Every decision is a command appended to one Redis stream (`XADD sb:log`). Redis gives
//! the stream one total order. Every node reads the whole stream in that order and
//! applies each entry to its own copy of the books ([`State`]), with the entry's time
//! and ids derived from the entry's position: the books are deterministic, so every
//! replica makes exactly the same decisions, and each decision is made once, at the
//! entry's place in the log. Two accepts, an accept and an expiry, two saves on one
//! record version, sent from different nodes at once: whichever Redis appended first
//! wins everywhere, and the other is refused everywhere.
//!
//! A node answers its own command once its replica has applied it. Each node delivers
//! the notices of every entry (its own and other nodes') to the sessions connected to
//! it, in log order: an offer decided on node A reaches the agent on node B because B
//! applies the same entry.
//!
//! Keys:
//! - `sb:log` (stream): the commands. Written by `XADD` (one per command, timer tick,
//!   lost node); read by every node with `XREAD`. Trimmed below the oldest position any
//!   live node still needs, once a snapshot covers it.
//! - `sb:snapshot` (hash `pos`, `now`) and `sb:snapshot:state` (string): the books at
//!   one log position. Uploaded in chunks to `sb:snapshot:staging:<node>`, then put in
//!   place by `SNAPSHOT_SCRIPT` only if newer than the one there. A starting node loads
//!   it and reads the log from its position.
//! - `sb:node:<id>` (string, expires): a node's heartbeat, holding the last position it
//!   applied. A node whose key has expired is declared lost (by any node appending
//!   `NodeLost`), and its desktops enter the reconnect grace period.

use super::{Dispatch, Store};
use crate::clock::{Clock, Ts};
use crate::context::ContextCommand;
use crate::error::HubError;
use crate::ids::{AgentId, QueueId, TaskId};
use crate::routing::{AgentView, Command, Outcome, QueueStats, Rules, Snapshot};
use crate::store::memory::State;
use crate::task::Task;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;
use tokio::sync::oneshot;

const LOG: &str = "sb:log";
const SNAPSHOT: &str = "sb:snapshot";
/// The snapshot's bytes.
const SNAPSHOT_STATE: &str = "sb:snapshot:state";
/// How much of a snapshot one upload call carries.
const SNAPSHOT_CHUNK: usize = 512 * 1024;

/// How long a command waits for its own entry to be applied before answering
/// `store_unavailable` (the entry may still take effect later).
const APPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one Redis call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Heartbeat period; a node is lost after `HEARTBEAT_TTL` without one.
const HEARTBEAT: Duration = Duration::from_millis(500);
const HEARTBEAT_TTL: Duration = Duration::from_millis(3000);
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

/// One log entry.
#[derive(Serialize, Deserialize)]
struct Entry {
    /// The submitting node's request id, to hand the outcome back.
    req: Option<uuid::Uuid>,
    /// The submitting node.
    node: String,
    /// The submitter's clock; the applier never lets time go backwards.
    now: Ts,
    body: Body,
}

#[derive(Serialize, Deserialize)]
enum Body {
    Routing(Box<Command>),
    Context(Box<ContextCommand>),
    Expire,
}

/// The replica: the books and where in the log they are.
struct Replica {
    state: State,
    /// The last applied position.
    pos: String,
    /// The latest time applied.
    now: Ts,
    /// Entries applied since start.
    applied: u64,
}

struct Shared {
    node: String,
    /// This run of the node: `node/boot`. Connections are filed under it, and its
    /// heartbeat key names it.
    incarnation: Arc<str>,
    rules: Arc<Rules>,
    client: redis::Client,
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    replica: Mutex<Replica>,
    waiters: Mutex<HashMap<uuid::Uuid, oneshot::Sender<Outcome>>>,
    dispatch: OnceLock<Weak<dyn Dispatch>>,
    /// Whether the log reader is keeping up (false after a failed Redis call, true again
    /// after the next successful read): part of readiness.
    healthy: AtomicBool,
    /// The node's clock: a lost node's agents get their full grace from now.
    clock: Clock,
    snapshot_every: u64,
    /// `Replica::applied` at the last snapshot.
    last_snapshot: std::sync::atomic::AtomicU64,
    /// Where snapshots are replayed and encoded.
    background: Background,
}

/// A thread of its own, at a low CPU priority, for building snapshots: seconds of
/// replay and encoding that should use what the live path leaves over, not compete
/// with it (on a busy node the scheduler would otherwise share the cores evenly, and
/// every command would slow down while a snapshot is built).
struct Background {
    jobs: std::sync::mpsc::Sender<Box<dyn FnOnce() + Send>>,
}

impl Background {
    fn start() -> Result<Background, HubError> {
        let (tx, rx) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send>>();
        std::thread::Builder::new()
            .name("sb-snapshot".into())
            .spawn(move || {
                lower_priority();
                // Ends when the store is dropped (the sender with it). A job that
                // panics (a corrupt stored snapshot) fails alone: its caller gets an
                // error, the thread goes on.
                for job in rx {
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                }
            })
            .map_err(|e| unavailable(format!("cannot start the snapshot thread: {e}")))?;
        Ok(Background { jobs: tx })
    }

    /// Runs `f` on the background thread and waits for its result.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HubError> {
        let (tx, rx) = oneshot::channel();
        let job: Box<dyn FnOnce() + Send> = Box::new(move || {
            let _ = tx.send(f());
        });
        self.jobs
            .send(job)
            .map_err(|_| unavailable("the snapshot thread is gone"))?;
        rx.await
            .map_err(|_| unavailable("the snapshot thread dropped a job"))
    }
}

/// Gives the calling thread a low CPU priority (nice 10: about a tenth of a core's share
/// against the node's own threads when they keep the cores busy; not 19, whose ~1.5%
/// could stretch a build past any bound on a saturated node).
#[cfg(target_os = "linux")]
fn lower_priority() {
    // SAFETY: setpriority takes plain integers and touches no memory of ours. On Linux
    // the nice value is per thread, and `who = 0` names the calling thread.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) };
    if r != 0 {
        tracing::debug!("cannot lower the snapshot thread's priority");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

/// The Redis-backed store. See the module documentation.
pub struct RedisStore {
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn unavailable(e: impl std::fmt::Display) -> HubError {
    HubError::StoreUnavailable(e.to_string())
}

/// A 64-bit seed from a log position, the same on every node.
fn seed_of(pos: &str) -> u64 {
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in pos.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl RedisStore {
    /// Connects, loads the newest snapshot, applies the log after it, declares this
    /// node's earlier incarnation lost, and starts following the log.
    pub async fn connect(
        url: &str,
        node: &str,
        rules: Arc<Rules>,
        clock: Clock,
    ) -> Result<RedisStore, HubError> {
        Self::connect_with(url, node, rules, clock, 200_000).await
    }

    /// [`RedisStore::connect`], storing a snapshot every `snapshot_every` entries.
    pub async fn connect_with(
        url: &str,
        node: &str,
        rules: Arc<Rules>,
        clock: Clock,
        snapshot_every: u64,
    ) -> Result<RedisStore, HubError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        let boot = uuid::Uuid::new_v4().simple().to_string();
        let shared = Arc::new(Shared {
            node: node.to_owned(),
            incarnation: format!("{node}/{}", &boot[..12]).into(),
            rules: rules.clone(),
            client,
            conn: tokio::sync::Mutex::new(None),
            // Every replica starts from the same blank state at time zero, and takes
            // its time from the log only: a node that starts later must decide exactly
            // like one that was there all along.
            replica: Mutex::new(Replica {
                state: State::new(rules.clone(), Ts(0)),
                pos: "0-0".into(),
                now: Ts(0),
                applied: 0,
            }),
            waiters: Mutex::new(HashMap::new()),
            dispatch: OnceLock::new(),
            healthy: AtomicBool::new(true),
            clock,
            snapshot_every: snapshot_every.max(1),
            last_snapshot: std::sync::atomic::AtomicU64::new(0),
            background: Background::start()?,
        });
        // Beat (with the position "0-0") before loading anything: the log is never
        // trimmed past a node that is still catching up.
        let heartbeat = tokio::spawn(shared.clone().heartbeat());
        let started = async {
            // One beat done before the load (the spawned loop may not have run yet):
            // a snapshot stored from now on trims nothing this node still needs.
            let mut c = shared.conn().await?;
            redis::cmd("SET")
                .arg(format!("sb:node:{}", shared.incarnation))
                .arg("0-0")
                .arg("PX")
                .arg(HEARTBEAT_TTL.as_millis() as u64)
                .query_async::<()>(&mut c)
                .await
                .map_err(unavailable)?;
            shared.load_snapshot().await?;
            // Catch up before serving, so that this node's first answers see the present;
            // entries trimmed away meanwhile are noticed before each read (and the
            // snapshot that covers them reloaded), never skipped over.
            let mut reader = shared.reader().await?;
            loop {
                shared.check_gap(&mut reader).await?;
                if shared.read_batch(&mut reader, None).await? == 0 {
                    break;
                }
            }
            // Whatever an earlier run of this node held is gone (all incarnations of
            // this node id; this one has no connections yet).
            let body = Body::Routing(Box::new(Command::NodeLost { node: node.into() }));
            shared.append(body, shared.clock.now(), false).await?;
            Ok::<_, HubError>(reader)
        };
        let reader = match started.await {
            Ok(r) => r,
            Err(e) => {
                heartbeat.abort();
                return Err(e);
            }
        };
        let tasks = vec![
            heartbeat,
            tokio::spawn(shared.clone().follow(reader)),
            tokio::spawn(shared.clone().snapshots()),
        ];
        Ok(RedisStore { shared, tasks })
    }
}

impl Shared {
    fn replica(&self) -> MutexGuard<'_, Replica> {
        self.replica.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn conn(&self) -> Result<MultiplexedConnection, HubError> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CALL_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT));
        let c = self
            .client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await
            .map_err(unavailable)?;
        *guard = Some(c.clone());
        Ok(c)
    }

    /// Forgets a broken connection so that the next call reconnects.
    async fn broken(&self) {
        self.healthy.store(false, Ordering::Relaxed);
        *self.conn.lock().await = None;
    }

    /// A connection of its own for the blocking reads of the log.
    async fn reader(&self) -> Result<MultiplexedConnection, HubError> {
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CALL_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT + Duration::from_secs(1)));
        self.client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await
            .map_err(unavailable)
    }

    /// Replaces the replica with the stored snapshot, if there is one.
    async fn load_snapshot(&self) -> Result<(), HubError> {
        let mut c = self.conn().await?;
        let Some((pos, now, bytes)) = fetch_snapshot(&mut c, false).await? else {
            return Ok(());
        };
        let rules = self.rules.clone();
        let state = tokio::task::spawn_blocking(move || State::from_snapshot(rules, &bytes))
            .await
            .map_err(unavailable)??;
        let mut r = self.replica();
        r.state = state;
        r.pos = pos;
        r.now = now;
        tracing::info!(pos = %r.pos, "loaded the snapshot");
        Ok(())
    }

    /// Appends a command. With `wait`, returns the outcome once this node applied it.
    async fn append(&self, body: Body, now: Ts, wait: bool) -> Result<Option<Outcome>, HubError> {
        let req = wait.then(uuid::Uuid::new_v4);
        let entry = Entry {
            req,
            node: self.node.clone(),
            now,
            body,
        };
        let bytes = rmp_serde::to_vec_named(&entry).map_err(unavailable)?;
        // Registered before the append (the entry may be applied before XADD returns),
        // removed however this call ends, even if its caller gives up on it.
        let waiter = req.map(|r| Waiter::new(self, r));
        let mut c = self.conn().await?;
        let added: Result<String, _> = redis::cmd("XADD")
            .arg(LOG)
            .arg("*")
            .arg("e")
            .arg(bytes)
            .query_async(&mut c)
            .await;
        if let Err(e) = added {
            self.broken().await;
            return Err(unavailable(e));
        }
        let Some(mut waiter) = waiter else {
            return Ok(None);
        };
        match tokio::time::timeout(APPLY_TIMEOUT, &mut waiter.rx).await {
            Ok(Ok(o)) => Ok(Some(o)),
            _ => Err(unavailable(
                "the command was logged but not applied in time; it may still take effect",
            )),
        }
    }

    /// Follows the log for as long as the node runs, reconnecting after failures and
    /// reloading the snapshot if entries it had not applied were trimmed away.
    async fn follow(self: Arc<Self>, mut reader: MultiplexedConnection) {
        let mut backoff = Duration::from_millis(50);
        let mut checked = tokio::time::Instant::now();
        loop {
            if checked.elapsed() >= Duration::from_secs(1) {
                checked = tokio::time::Instant::now();
                if let Err(e) = self.check_gap(&mut reader).await {
                    tracing::warn!(error = %e, "cannot check the log for a gap");
                }
            }
            match self.read_batch(&mut reader, Some(1000)).await {
                Ok(_) => {
                    backoff = Duration::from_millis(50);
                    self.healthy.store(true, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the log; retrying");
                    self.healthy.store(false, Ordering::Relaxed);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    if let Ok(r) = self.reader().await {
                        reader = r;
                        checked = tokio::time::Instant::now() - Duration::from_secs(2);
                    }
                }
            }
        }
    }

    /// Whether entries after this node's position were trimmed (it was away longer than
    /// the heartbeat expiry): then the replica reloads the snapshot, which covers them.
    async fn check_gap(&self, reader: &mut MultiplexedConnection) -> Result<(), HubError> {
        // No log yet (a first node on an empty Redis): nothing was trimmed.
        let exists: bool = redis::cmd("EXISTS")
            .arg(LOG)
            .query_async(reader)
            .await
            .map_err(unavailable)?;
        if !exists {
            return Ok(());
        }
        let v: Value = redis::cmd("XINFO")
            .arg("STREAM")
            .arg(LOG)
            .query_async(reader)
            .await
            .map_err(unavailable)?;
        let Some(deleted) = field_of(&v, "max-deleted-entry-id") else {
            return Ok(());
        };
        let pos = self.replica().pos.clone();
        if deleted != "0-0" && position_lt(&pos, &deleted) {
            tracing::error!(%pos, %deleted, "entries this node had not applied were trimmed: reloading the snapshot");
            self.load_snapshot().await?;
        }
        Ok(())
    }

    /// Reads and applies one batch of entries. Returns how many were applied.
    async fn read_batch(
        &self,
        reader: &mut MultiplexedConnection,
        block_ms: Option<u64>,
    ) -> Result<usize, HubError> {
        let pos = self.replica().pos.clone();
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT").arg(1000);
        if let Some(ms) = block_ms {
            cmd.arg("BLOCK").arg(ms);
        }
        cmd.arg("STREAMS").arg(LOG).arg(&pos);
        let v: Value = cmd.query_async(reader).await.map_err(unavailable)?;
        let entries = parse_xread(v);
        let n = entries.len();
        for (id, bytes) in entries {
            self.apply(&id, &bytes);
        }
        Ok(n)
    }

    /// Applies one entry to the replica and delivers what it produced.
    fn apply(&self, id: &str, bytes: &[u8]) {
        let Some((outcome, node, req)) = step(&mut self.replica(), id, bytes) else {
            return;
        };
        let req = (node == self.node).then_some(req).flatten();
        // Notices for everyone, here, in log order; the reply and the counts to the
        // waiting caller (each node counts only its own decisions).
        let mut outcome = outcome;
        let shared = outcome.take_notices();
        if let Some(d) = self.dispatch.get().and_then(Weak::upgrade) {
            d.deliver(shared);
        }
        if let Some(req) = req {
            let waiter = self
                .waiters
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&req);
            if let Some(tx) = waiter {
                let _ = tx.send(outcome);
            }
        }
    }

    /// Beats, and declares lost the nodes that stopped beating. After its own beats
    /// failed (Redis away, this node stalled), it waits a whole expiry period of good
    /// beats before judging others: their keys lapsed for the same reason.
    async fn heartbeat(self: Arc<Self>) {
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ok_since: Option<tokio::time::Instant> = None;
        loop {
            tick.tick().await;
            let beat = async {
                let mut c = self.conn().await?;
                let pos = self.replica().pos.clone();
                redis::cmd("SET")
                    .arg(format!("sb:node:{}", self.incarnation))
                    .arg(&pos)
                    .arg("PX")
                    .arg(HEARTBEAT_TTL.as_millis() as u64)
                    .query_async::<()>(&mut c)
                    .await
                    .map_err(unavailable)?;
                Ok::<_, HubError>(c)
            };
            let mut c = match beat.await {
                Ok(c) => c,
                Err(_) => {
                    ok_since = None;
                    self.broken().await;
                    continue;
                }
            };
            let since = *ok_since.get_or_insert_with(tokio::time::Instant::now);
            if since.elapsed() < HEARTBEAT_TTL + HEARTBEAT {
                continue;
            }
            let nodes = self.replica().state.book.nodes_in_use();
            for n in nodes.iter().filter(|n| ***n != *self.incarnation) {
                let alive: Result<bool, _> = redis::cmd("EXISTS")
                    .arg(format!("sb:node:{n}"))
                    .query_async(&mut c)
                    .await;
                if let Ok(false) = alive {
                    tracing::warn!(node = %n, "node stopped heartbeating: its desktops enter their grace period");
                    let body = Body::Routing(Box::new(Command::NodeLost { node: n.clone() }));
                    let _ = self.append(body, self.clock.now(), false).await;
                }
            }
        }
    }

    /// Stores a snapshot once `snapshot_every` entries were applied since the last one,
    /// on its own task and connection (a large upload must not hold up commands or the
    /// heartbeat), one node at a time (the lock key).
    async fn snapshots(self: Arc<Self>) {
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
        let lock: Option<String> = redis::cmd("SET")
            .arg(SNAPSHOT_LOCK)
            .arg(&*self.incarnation)
            .arg("NX")
            .arg("PX")
            .arg(SNAPSHOT_TIMEOUT.as_millis() as u64)
            .query_async(c)
            .await
            .map_err(unavailable)?;
        self.last_snapshot.store(applied, Ordering::Relaxed);
        if lock.is_none() {
            return Ok(()); // another node is taking one
        }
        let result = self.compact(c).await;
        // Released only if still ours (it may have lapsed and been taken meanwhile).
        let _: Result<i64, _> = redis::Script::new(UNLOCK_SCRIPT)
            .key(SNAPSHOT_LOCK)
            .arg(&*self.incarnation)
            .invoke_async(c)
            .await;
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
        let base = fetch_snapshot(c, true).await?;
        let rules = self.rules.clone();
        let mut r = self
            .background
            .run(move || match base {
                Some((pos, now, bytes)) => Ok::<_, HubError>(Replica {
                    state: State::from_snapshot(rules, &bytes)?,
                    pos,
                    now,
                    applied: 0,
                }),
                None => Ok(Replica {
                    state: State::new(rules, Ts(0)),
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
        let v: Value = redis::cmd("XINFO")
            .arg("STREAM")
            .arg(LOG)
            .query_async(c)
            .await
            .map_err(unavailable)?;
        if let Some(deleted) = field_of(&v, "max-deleted-entry-id") {
            if position_lt(&r.pos, &deleted) {
                return Err(unavailable(format!(
                    "the log was trimmed past the stored snapshot ({} < {deleted})",
                    r.pos
                )));
            }
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
                        step(&mut r, &id, &bytes);
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

/// A caller waiting for its entry to be applied; removed from the waiters however the
/// call ends.
struct Waiter<'a> {
    shared: &'a Shared,
    req: uuid::Uuid,
    rx: oneshot::Receiver<Outcome>,
}

impl<'a> Waiter<'a> {
    fn new(shared: &'a Shared, req: uuid::Uuid) -> Waiter<'a> {
        let (tx, rx) = oneshot::channel();
        shared
            .waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(req, tx);
        Waiter { shared, req, rx }
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.shared
            .waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.req);
    }
}

/// Applies one log entry to a replica: the one place where an entry becomes a decision,
/// for the live replica and for the compaction that builds snapshots alike. Returns the
/// outcome with the submitting node and request, or nothing for an entry that cannot be
/// decoded (skipped the same way everywhere).
fn step(r: &mut Replica, id: &str, bytes: &[u8]) -> Option<(Outcome, String, Option<uuid::Uuid>)> {
    r.pos = id.to_owned();
    r.applied += 1;
    let entry: Entry = match rmp_serde::from_slice(bytes) {
        Ok(e) => e,
        Err(e) => {
            // Written by a newer or broken node.
            tracing::error!(%id, error = %e, "cannot decode a log entry; skipped");
            return None;
        }
    };
    let now = entry.now.max(r.now);
    r.now = now;
    r.state.reseed(seed_of(id));
    let o = match entry.body {
        Body::Routing(cmd) => r.state.execute(*cmd, now),
        Body::Context(cmd) => r.state.context(*cmd, now),
        Body::Expire => r.state.expire_due(now),
    };
    Some((o, entry.node, entry.req))
}

/// A field of an `XINFO STREAM` reply, as text.
fn field_of(v: &Value, name: &str) -> Option<String> {
    let text = |v: &Value| match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    match v {
        Value::Array(items) => items
            .chunks(2)
            .find(|kv| kv.first().and_then(text).as_deref() == Some(name))
            .and_then(|kv| kv.get(1).and_then(text)),
        Value::Map(pairs) => pairs
            .iter()
            .find(|(k, _)| text(k).as_deref() == Some(name))
            .and_then(|(_, v)| text(v)),
        _ => None,
    }
}

/// Whether stream position `a` comes before `b`.
fn position_lt(a: &str, b: &str) -> bool {
    let parse = |s: &str| -> (u64, u64) {
        let mut it = s.split('-');
        let ms = it.next().and_then(|x| x.parse().ok()).unwrap_or(0);
        let seq = it.next().and_then(|x| x.parse().ok()).unwrap_or(0);
        (ms, seq)
    };
    parse(a) < parse(b)
}

/// The stored snapshot: its position, time and bytes, or nothing when none is stored.
/// `chunked` reads the bytes in pieces, for a caller holding the snapshot lock (nobody
/// replaces the snapshot meanwhile); otherwise position and bytes are read in one
/// transaction, so that a snapshot stored between the two reads cannot pair one's
/// position with the other's state.
async fn fetch_snapshot(
    c: &mut MultiplexedConnection,
    chunked: bool,
) -> Result<Option<(String, Ts, Vec<u8>)>, HubError> {
    let (head, whole): (Value, Value) = if chunked {
        let head = redis::cmd("HMGET")
            .arg(SNAPSHOT)
            .arg("pos")
            .arg("now")
            .query_async(c)
            .await
            .map_err(unavailable)?;
        (head, Value::Nil)
    } else {
        redis::pipe()
            .atomic()
            .cmd("HMGET")
            .arg(SNAPSHOT)
            .arg("pos")
            .arg("now")
            .cmd("GET")
            .arg(SNAPSHOT_STATE)
            .query_async(c)
            .await
            .map_err(unavailable)?
    };
    let Value::Array(items) = head else {
        return Ok(None);
    };
    let (Some(Value::BulkString(pos)), Some(Value::BulkString(now))) =
        (items.first(), items.get(1))
    else {
        return Ok(None);
    };
    let pos = String::from_utf8_lossy(pos).into_owned();
    let now: u64 = String::from_utf8_lossy(now)
        .parse()
        .map_err(|_| unavailable("the snapshot's time is not a number"))?;
    let bytes = if chunked {
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
        bytes
    } else {
        match whole {
            Value::BulkString(b) => b,
            _ => Vec::new(),
        }
    };
    if bytes.is_empty() {
        return Err(unavailable(
            "the snapshot's position is stored but not its state",
        ));
    }
    Ok(Some((pos, Ts(now), bytes)))
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// The entries of an `XRANGE` reply (or of one stream in an `XREAD` reply):
/// (position, field `e`).
fn entries_of(v: &Value, out: &mut Vec<(String, Vec<u8>)>) {
    let Value::Array(entries) = v else { return };
    for e in entries {
        let Value::Array(pair) = e else { continue };
        let (Some(id), Some(Value::Array(fields))) = (pair.first().and_then(text), pair.get(1))
        else {
            continue;
        };
        let mut it = fields.iter();
        while let (Some(k), Some(val)) = (it.next(), it.next()) {
            if text(k).as_deref() == Some("e") {
                if let Value::BulkString(b) = val {
                    out.push((id.clone(), b.clone()));
                }
            }
        }
    }
}

/// The entries of an `XREAD` reply on one stream: (position, field `e`).
fn parse_xread(v: Value) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    match v {
        Value::Array(streams) => {
            for s in &streams {
                if let Value::Array(kv) = s {
                    if let Some(entries) = kv.get(1) {
                        entries_of(entries, &mut out);
                    }
                }
            }
        }
        Value::Map(streams) => {
            for (_, entries) in &streams {
                entries_of(entries, &mut out);
            }
        }
        _ => {}
    }
    out
}

#[async_trait::async_trait]
impl Store for RedisStore {
    async fn execute(&self, cmd: Command, now: Ts) -> Result<Outcome, HubError> {
        let o = self
            .shared
            .append(Body::Routing(Box::new(cmd)), now, true)
            .await?;
        o.ok_or_else(|| unavailable("no outcome"))
    }

    async fn context(&self, cmd: ContextCommand, now: Ts) -> Result<Outcome, HubError> {
        let o = self
            .shared
            .append(Body::Context(Box::new(cmd)), now, true)
            .await?;
        o.ok_or_else(|| unavailable("no outcome"))
    }

    async fn expire_due(&self, now: Ts) -> Result<Outcome, HubError> {
        // Any node may ask; an expiry that another node's tick already applied is a
        // no-op when this one is applied, so an offer never expires twice.
        let due = self
            .shared
            .replica()
            .state
            .book
            .next_deadline()
            .is_some_and(|d| d <= now);
        if !due {
            return Ok(Outcome::done());
        }
        let o = self.shared.append(Body::Expire, now, true).await?;
        o.ok_or_else(|| unavailable("no outcome"))
    }

    async fn next_deadline(&self) -> Result<Option<Ts>, HubError> {
        Ok(self.shared.replica().state.book.next_deadline())
    }

    async fn agent_view(&self, agent: &AgentId) -> Result<Option<AgentView>, HubError> {
        Ok(self.shared.replica().state.book.agent_view(agent))
    }

    async fn task(&self, id: TaskId) -> Result<Option<Task>, HubError> {
        Ok(self.shared.replica().state.book.task(id).cloned())
    }

    async fn snapshot(&self, now: Ts) -> Result<Snapshot, HubError> {
        Ok(self.shared.replica().state.book.snapshot(now))
    }

    async fn queue_stats(&self, queues: &[QueueId], now: Ts) -> Result<Vec<QueueStats>, HubError> {
        let r = self.shared.replica();
        Ok(queues
            .iter()
            .filter_map(|q| r.state.book.queue_stats(q, now))
            .collect())
    }

    async fn ping(&self) -> Result<(), HubError> {
        // Ready means both: Redis answers, and this node is following the log (a replica
        // that cannot read the log would answer with stale state).
        if !self.shared.healthy.load(Ordering::Relaxed) {
            return Err(unavailable("not following the log"));
        }
        let mut c = self.shared.conn().await?;
        let r: Result<String, _> = redis::cmd("PING").query_async(&mut c).await;
        match r {
            Ok(_) => Ok(()),
            Err(e) => {
                self.shared.broken().await;
                Err(unavailable(e))
            }
        }
    }

    fn set_dispatch(&self, dispatch: Weak<dyn Dispatch>) {
        let _ = self.shared.dispatch.set(dispatch);
    }

    async fn context_read(&self, cmd: ContextCommand, now: Ts) -> Result<Outcome, HubError> {
        // A read changes nothing, so it needs no place in the log: this replica answers.
        if !cmd.is_read_only() {
            return self.context(cmd, now).await;
        }
        Ok(self.shared.replica().state.context(cmd, now))
    }

    fn node_tag(&self) -> Option<Arc<str>> {
        Some(self.shared.incarnation.clone())
    }

    fn stop(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_compare_numerically() {
        assert!(position_lt("999-5", "1000-0"));
        assert!(position_lt("1000-2", "1000-10"));
        assert!(!position_lt("1000-10", "1000-10"));
    }

    #[test]
    fn seeds_are_stable() {
        assert_eq!(seed_of("1700000000000-0"), seed_of("1700000000000-0"));
        assert_ne!(seed_of("1700000000000-0"), seed_of("1700000000000-1"));
    }
}
