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
//! The entry, its encoding and its replay are [`crate::log`]'s, shared with the file
//! store. This module follows the log and answers commands; [`liveness`] beats and
//! declares nodes lost; [`snapshot`] builds and stores snapshots; [`parse`] reads
//! Redis replies.
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

mod liveness;
mod parse;
mod snapshot;

use super::background::Background;
use super::{Decision, Sink, Store};
use crate::clock::{Clock, Ts};
use crate::context::ContextCommand;
use crate::error::HubError;
use crate::log::{Body, Entry, seed_of, step};
use crate::routing::view::CloseReason;
use crate::routing::{Command, Rules};
use crate::state::{Notice, Outcome, State};
use parse::{
    first_entry, log_is_empty, lost_past, parse_xread, position_lt, predecessor, trimmed_past,
};
use redis::AsyncConnectionConfig;
use redis::Value;
use redis::aio::MultiplexedConnection;
use snapshot::{fetch_snapshot, snapshot_head};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::oneshot;

/// The replica: the books and where in the log (a stream id) they are.
type Replica = crate::log::Replica<String>;

const LOG: &str = "sb:log";
const SNAPSHOT: &str = "sb:snapshot";
/// The snapshot's bytes.
const SNAPSHOT_STATE: &str = "sb:snapshot:state";
/// How much of a snapshot one upload call carries.
const SNAPSHOT_CHUNK: usize = 512 * 1024;

/// How long one store call may take by default (`store.call_timeout_ms`): connecting
/// or waiting for a connection, the `XADD`, and the wait for this node to apply it.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// Heartbeat period; a node is lost after `HEARTBEAT_TTL` without one.
const HEARTBEAT: Duration = Duration::from_millis(500);
const HEARTBEAT_TTL: Duration = Duration::from_millis(3000);
/// The fingerprint (`Rules::fingerprint`) of the rules the log after the stored
/// snapshot was decided by.
const LOG_RULES: &str = "sb:log:rules";
/// How long a clean stop waits for its snapshot.
const CLOSE_LIMIT: Duration = Duration::from_secs(60);

struct Shared {
    node: String,
    /// This run of the node: `node/boot`. Connections are filed under it, and its
    /// heartbeat key names it.
    incarnation: Arc<str>,
    rules: Arc<Rules>,
    /// `Rules::fingerprint`, which every live node of the cluster must share.
    rules_print: Arc<str>,
    client: redis::Client,
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    replica: Mutex<Replica>,
    waiters: Mutex<HashMap<uuid::Uuid, oneshot::Sender<Outcome>>>,
    /// Where the reader delivers every entry's notices.
    sink: Sink,
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
    /// The whole budget of one store call, in milliseconds (`store.call_timeout_ms`).
    call_timeout_ms: std::sync::atomic::AtomicU64,
    /// Catching up at start: the replica keeps no search index until the replay is
    /// done, then builds it once (kept up entry by entry, a long stream of customer
    /// changes took seconds more).
    catching_up: AtomicBool,
    /// Since when this node has seen the log's history lost (`fill_gap`) without a
    /// snapshot to fill it: live nodes get a few heartbeats to say how far they are.
    history_lost_since: Mutex<Option<tokio::time::Instant>>,
}

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

impl RedisStore {
    /// Connects, loads the newest snapshot, applies the log after it, declares this
    /// node's earlier incarnation lost, and starts following the log. Every entry's
    /// notices go to `sink`.
    pub async fn connect(
        url: &str,
        node: &str,
        rules: Arc<Rules>,
        clock: Clock,
        sink: Sink,
    ) -> Result<RedisStore, HubError> {
        Self::connect_with(url, node, rules, clock, 200_000, sink).await
    }

    /// [`RedisStore::connect`], storing a snapshot every `snapshot_every` entries.
    pub async fn connect_with(
        url: &str,
        node: &str,
        rules: Arc<Rules>,
        clock: Clock,
        snapshot_every: u64,
        sink: Sink,
    ) -> Result<RedisStore, HubError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        let boot = uuid::Uuid::new_v4().simple().to_string();
        let shared = Arc::new(Shared {
            node: node.to_owned(),
            incarnation: format!("{node}/{}", &boot[..12]).into(),
            rules_print: rules.fingerprint().into(),
            rules: rules.clone(),
            client,
            conn: tokio::sync::Mutex::new(None),
            // Every replica starts from the same blank state at time zero, and takes
            // its time from the log only: a node that starts later must decide exactly
            // like one that was there all along.
            replica: Mutex::new(Replica {
                state: State::new_without_search(rules.clone(), Ts(0)),
                pos: "0-0".into(),
                now: Ts(0),
                applied: 0,
            }),
            waiters: Mutex::new(HashMap::new()),
            sink,
            healthy: AtomicBool::new(true),
            clock,
            snapshot_every: snapshot_every.max(1),
            last_snapshot: std::sync::atomic::AtomicU64::new(0),
            background: Background::start("sb-snapshot")?,
            call_timeout_ms: std::sync::atomic::AtomicU64::new(CALL_TIMEOUT.as_millis() as u64),
            catching_up: AtomicBool::new(true),
            history_lost_since: Mutex::new(None),
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
            shared.check_rules(&mut c).await?;
            shared.load_snapshot().await?;
            shared.check_log_rules(&mut c).await?;
            shared.await_reseed(&mut c).await?;
            shared.refuse_a_trimmed_log_without_snapshot(&mut c).await?;
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
            shared.build_search().await?;
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
                // A node that does not start is not alive: its keys would otherwise
                // make the next start see it for a heartbeat's life (refused rules).
                if let Ok(mut c) = shared.conn().await {
                    let _: Result<i64, _> = redis::cmd("DEL")
                        .arg(format!("sb:node:{}", shared.incarnation))
                        .arg(format!("sb:rules:{}", shared.incarnation))
                        .query_async(&mut c)
                        .await;
                }
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

impl RedisStore {
    /// Bounds every store call (`store.call_timeout_ms`); connections made from now on
    /// use it as their connect and response timeouts too.
    pub fn set_call_timeout(&self, limit: Duration) {
        self.shared
            .call_timeout_ms
            .store(limit.as_millis().max(1) as u64, Ordering::Relaxed);
    }
}

/// Whether a failed `XADD` certainly did not append: Redis answered with an error
/// (out of memory, read-only replica, ...). A lost connection or a timeout leaves it
/// open whether Redis got the command: a stopped Redis reads it when it continues.
fn refused_by_redis(e: &redis::RedisError) -> bool {
    matches!(
        e.kind(),
        redis::ErrorKind::Server(_) | redis::ErrorKind::Extension
    )
}

impl Shared {
    fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.call_timeout_ms.load(Ordering::Relaxed))
    }

    fn replica(&self) -> MutexGuard<'_, Replica> {
        self.replica.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The shared connection, made if there is none. Waiting for another caller's
    /// connect and making one are both bounded by the call timeout: a Redis that
    /// accepts TCP but does not answer (stopped) cannot hold a caller longer.
    async fn conn(&self) -> Result<MultiplexedConnection, HubError> {
        let limit = self.call_timeout();
        let made = tokio::time::timeout(limit, async {
            let mut guard = self.conn.lock().await;
            if let Some(c) = guard.as_ref() {
                return Ok(c.clone());
            }
            let cfg = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(limit))
                .set_response_timeout(Some(limit));
            let c = self
                .client
                .get_multiplexed_async_connection_with_config(&cfg)
                .await
                .map_err(unavailable)?;
            *guard = Some(c.clone());
            Ok(c)
        })
        .await;
        made.unwrap_or_else(|_| Err(unavailable("Redis did not answer in time (connecting)")))
    }

    /// Forgets a broken connection so that the next call reconnects. Never waits: when
    /// another caller is connecting, the connection it makes replaces this one anyway.
    async fn broken(&self) {
        self.healthy.store(false, Ordering::Relaxed);
        if let Ok(mut guard) = self.conn.try_lock() {
            *guard = None;
        }
    }

    /// A connection of its own for the blocking reads of the log.
    async fn reader(&self) -> Result<MultiplexedConnection, HubError> {
        let limit = self.call_timeout();
        // The blocking reads wait up to 1 s on the server: the response timeout adds it.
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(limit))
            .set_response_timeout(Some(limit + Duration::from_secs(1)));
        let made = tokio::time::timeout(
            limit,
            self.client
                .get_multiplexed_async_connection_with_config(&cfg),
        )
        .await;
        match made {
            Ok(r) => r.map_err(unavailable),
            Err(_) => Err(unavailable("Redis did not answer in time (connecting)")),
        }
    }

    /// Ends the catch-up at start: builds the replica's search index from what the
    /// replay left, once, off the runtime's workers. Nothing is served yet, and the
    /// state is taken out of the replica meanwhile: the heartbeat, the one reader of
    /// it then, sees the position and a blank state's nodes in use (none) for that
    /// moment, and skips one liveness round.
    async fn build_search(&self) -> Result<(), HubError> {
        let blank = State::new_without_search(self.rules.clone(), Ts(0));
        let state = std::mem::replace(&mut self.replica().state, blank);
        let state = tokio::task::spawn_blocking(move || {
            let mut state = state;
            state.rebuild_search();
            state
        })
        .await
        .map_err(unavailable)?;
        self.replica().state = state;
        self.catching_up.store(false, Ordering::Release);
        Ok(())
    }

    /// Replaces the replica with the stored snapshot, if there is one.
    async fn load_snapshot(&self) -> Result<(), HubError> {
        let mut c = self.conn().await?;
        let Some((pos, now, bytes)) = fetch_snapshot(&mut c).await? else {
            return Ok(());
        };
        // Never back to an older state than the replica's (a reload on a suspicion of a
        // gap that was not one).
        let held = self.replica().pos.clone();
        if held != "0-0" && !position_lt(&held, &pos) {
            return Ok(());
        }
        let rules = self.rules.clone();
        let search = !self.catching_up.load(Ordering::Acquire);
        let state = tokio::task::spawn_blocking(move || {
            if search {
                State::from_snapshot(rules, &bytes)
            } else {
                State::from_snapshot_without_search(rules, &bytes)
            }
        })
        .await
        .map_err(unavailable)??;
        let old = {
            let mut r = self.replica();
            let old = std::mem::replace(&mut r.state, state);
            r.pos = pos;
            r.now = now;
            tracing::info!(pos = %r.pos, "loaded the snapshot");
            // A node that was serving jumps over entries it never applied, and so never
            // delivered: one declaring this node lost closed its desktops' sessions in
            // every other node's eyes (their agents Away, then Offline at the grace's
            // end, their tasks offered to others), while here they stayed open and
            // idle. Whoever the loaded state no longer has connected here is told to
            // reconnect, as that entry would have told them.
            if held != "0-0" {
                let now_here = r.state.book.connected_through(&self.incarnation);
                let notices: Vec<Notice> = old
                    .book
                    .connected_through(&self.incarnation)
                    .into_iter()
                    .filter(|d| now_here.binary_search(d).is_err())
                    .map(|(agent_id, conn)| Notice::Close {
                        agent_id,
                        reason: CloseReason::Reconnect,
                        conn: Some(conn),
                    })
                    .collect();
                if !notices.is_empty() {
                    tracing::warn!(
                        desktops = notices.len(),
                        "the snapshot loaded no longer has some of this node's desktops connected: they reconnect"
                    );
                    let mut o = Outcome::done();
                    o.notices = notices;
                    self.sink.deliver(&mut o);
                }
            }
            old
        };
        // Freed off the replica's lock and the runtime's workers: a state a node had
        // built (one that fell behind the trimmed log) may hold a million customers,
        // seconds of freeing (`state::EXITING`).
        drop(tokio::task::spawn_blocking(move || drop(old)));
        Ok(())
    }

    /// Appends a command. With `wait`, returns the outcome once this node applied it.
    ///
    /// The whole call is bounded by the call timeout. Until the `XADD` is sent, a
    /// failure is `store_unavailable` (nothing changed). Once sent, a failure or a
    /// timeout is `outcome_unknown`: Redis may have appended it (a stopped Redis reads
    /// what was sent when it continues), unless this node sees the entry applied
    /// before the deadline, and then the caller gets the real outcome.
    async fn append(&self, body: Body, now: Ts, wait: bool) -> Result<Option<Outcome>, HubError> {
        let deadline = tokio::time::Instant::now() + self.call_timeout();
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
        let mut c = match tokio::time::timeout_at(deadline, self.conn()).await {
            Ok(c) => c?,
            Err(_) => return Err(unavailable("Redis did not answer in time (connecting)")),
        };
        let added = tokio::time::timeout_at(
            deadline,
            redis::cmd("XADD")
                .arg(LOG)
                .arg("*")
                .arg("e")
                .arg(bytes)
                .query_async::<String>(&mut c),
        )
        .await;
        let sent_but_unconfirmed = match added {
            Ok(Ok(_)) => None,
            Ok(Err(e)) if refused_by_redis(&e) => return Err(unavailable(e)),
            Ok(Err(e)) => {
                self.broken().await;
                Some(e.to_string())
            }
            Err(_) => Some("Redis did not confirm the append in time".to_owned()),
        };
        let Some(mut waiter) = waiter else {
            return match sent_but_unconfirmed {
                None => Ok(None),
                Some(why) => Err(HubError::OutcomeUnknown(why)),
            };
        };
        // Even an unconfirmed append may show up in the log (the reader has its own
        // connection): until the deadline, the applied entry answers the caller.
        match tokio::time::timeout_at(deadline, &mut waiter.rx).await {
            Ok(Ok(o)) => Ok(Some(o)),
            _ => Err(HubError::OutcomeUnknown(
                sent_but_unconfirmed.unwrap_or_else(|| {
                    "the command was logged but not applied in time; it may still take effect"
                        .to_owned()
                }),
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
    /// The stream's first entry tells (`max-deleted-entry-id` does not move on XTRIM).
    /// Every read checks the same with its batch (`read_batch`); this one runs before
    /// reading at all after a pause.
    async fn check_gap(&self, reader: &mut MultiplexedConnection) -> Result<(), HubError> {
        let pos = self.replica().pos.clone();
        let first: Value = first_entry(LOG)
            .query_async(reader)
            .await
            .map_err(unavailable)?;
        if let Some(first) = trimmed_past(&pos, &first) {
            tracing::error!(%pos, %first, "entries this node had not applied may have been trimmed: reloading the snapshot");
            self.fill_gap(&predecessor(&first)).await?;
        } else if pos != "0-0" && log_is_empty(&first) {
            // Redis lost everything and nothing was appended since: the same as a lost
            // history, with the snapshot placed at the position itself.
            self.load_snapshot().await?;
            let mut c = self.conn().await?;
            if snapshot_head(&mut c).await?.is_none() {
                self.fill_gap(&pos).await?;
            }
        }
        Ok(())
    }

    /// Entries between this node's position and `first`, the log's first entry, are not
    /// in the log. A trim keeps what the stored snapshot does not cover, so normally the
    /// snapshot fills the gap, and it is loaded. When it does not (there is none, or it
    /// is older than this node's position), the log lost its history: Redis was emptied
    /// or replaced by a new one, while this node holds that history in its replica. The
    /// node then offers its replica as the log's snapshot, placed right before `first`
    /// (one node does, under the snapshot lock), and loads whichever is stored: every
    /// node goes on from the same state, in the same epoch, with the entries appended
    /// since. Without it each node would drop every new entry, waiting for a snapshot
    /// that never comes. Returns whether the gap is filled; when it is not (another node
    /// is storing its replica), the caller waits a little and reads again.
    ///
    /// The node furthest along stores its replica, so that no node goes back over
    /// decisions it applied and published (the events' numbers would be reused): a node
    /// waits two heartbeats (every live node has said where it is in the new Redis), then
    /// stores its replica only when no live node is ahead of it.
    ///
    /// `at`: where the snapshot goes, right before the log's first entry (or this node's
    /// own position when the log is empty).
    async fn fill_gap(&self, at: &str) -> Result<bool, HubError> {
        self.load_snapshot().await?;
        let before_first = at.to_owned();
        let pos = self.replica().pos.clone();
        let empty_log = pos == before_first;
        if !empty_log && !position_lt(&pos, &before_first) {
            *self.history_lost() = None;
            return Ok(true);
        }
        let since = *self
            .history_lost()
            .get_or_insert_with(tokio::time::Instant::now);
        if since.elapsed() < 2 * HEARTBEAT {
            return Ok(false);
        }
        if self
            .live_positions()
            .await?
            .iter()
            .any(|p| position_lt(&pos, p))
        {
            return Ok(false);
        }
        self.reseed(&before_first).await?;
        self.load_snapshot().await?;
        *self.history_lost() = None;
        Ok(!position_lt(&self.replica().pos, &before_first))
    }

    /// At start, with no snapshot to load: when live nodes are at positions the log no
    /// longer holds the entries after (Redis was emptied under them), one of them is about
    /// to store its replica (`fill_gap`). Replaying the new log onto a blank state instead
    /// would make this node disagree with all of them: it waits for that snapshot.
    async fn await_reseed(&self, c: &mut MultiplexedConnection) -> Result<(), HubError> {
        if self.replica().pos != "0-0" {
            return Ok(());
        }
        let first: Value = first_entry(LOG).query_async(c).await.map_err(unavailable)?;
        let lost = self
            .live_positions()
            .await?
            .iter()
            .any(|p| lost_past(p, &first));
        if !lost {
            return Ok(());
        }
        tracing::warn!("live nodes hold history the log lost: waiting for one to store it");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while self.replica().pos == "0-0" {
            if tokio::time::Instant::now() > deadline {
                return Err(unavailable(
                    "live nodes hold history the Redis log lost, and none stored it within 15 s",
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            self.load_snapshot().await?;
        }
        Ok(())
    }

    /// At start, with no snapshot loaded: a log some of whose entries were removed
    /// (trimmed below a snapshot that is gone since: deleted, evicted) cannot be replayed
    /// from its start. Replayed all the same, the node would serve the part left, in
    /// silence. (`entries-added`, Redis 7: every entry ever appended; a Redis without it
    /// is not checked.)
    async fn refuse_a_trimmed_log_without_snapshot(
        &self,
        c: &mut MultiplexedConnection,
    ) -> Result<(), HubError> {
        if self.replica().pos != "0-0" {
            return Ok(());
        }
        let exists: bool = redis::cmd("EXISTS")
            .arg(LOG)
            .query_async(c)
            .await
            .map_err(unavailable)?;
        if !exists {
            return Ok(());
        }
        let info: Value = redis::cmd("XINFO")
            .arg("STREAM")
            .arg(LOG)
            .query_async(c)
            .await
            .map_err(unavailable)?;
        let field = |name: &str| -> Option<u64> {
            let pairs: Vec<(&Value, &Value)> = match &info {
                Value::Array(items) => items
                    .chunks(2)
                    .filter_map(|p| Some((p.first()?, p.get(1)?)))
                    .collect(),
                Value::Map(m) => m.iter().map(|(k, v)| (k, v)).collect(),
                _ => Vec::new(),
            };
            pairs.into_iter().find_map(|(k, v)| {
                let key = match k {
                    Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                    Value::SimpleString(s) => s.clone(),
                    _ => return None,
                };
                (key == name).then_some(())?;
                match v {
                    Value::Int(n) => u64::try_from(*n).ok(),
                    _ => None,
                }
            })
        };
        if let (Some(added), Some(length)) = (field("entries-added"), field("length"))
            && added > length
        {
            return Err(unavailable(format!(
                "{LOG} holds {length} of the {added} entries ever appended and there is no \
                 snapshot ({SNAPSHOT}) covering the ones removed: the history cannot be \
                 rebuilt; restore Redis from a backup, or empty it to start a new history"
            )));
        }
        Ok(())
    }

    fn history_lost(&self) -> MutexGuard<'_, Option<tokio::time::Instant>> {
        self.history_lost_since
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The positions other live nodes' heartbeats give (`sb:node:*`), not this node's.
    async fn live_positions(&self) -> Result<Vec<String>, HubError> {
        let mut c = self.conn().await?;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("sb:node:*")
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        let mine = format!("sb:node:{}", self.incarnation);
        let others: Vec<String> = keys.into_iter().filter(|k| *k != mine).collect();
        if others.is_empty() {
            return Ok(Vec::new());
        }
        let values: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&others)
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(values.into_iter().flatten().collect())
    }

    /// Reads and applies one batch of entries. Returns how many were read (0: the
    /// replica is at the end of the log).
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
        // With the read, in the same round trip and after it, the stream's first entry.
        // A trim only removes the start of the stream, and the snapshot's trim keeps
        // what each live node has not applied (its heartbeat key holds its position):
        // a first entry past this node's position means it was away (or lagged past
        // the snapshot) and entries after its position may be gone. XREAD would skip
        // over them without a word (`max-deleted-entry-id` does not move on XTRIM),
        // so the batch is dropped and the snapshot, which covers them, is loaded.
        let (v, first): (Value, Value) = redis::pipe()
            .add_command(cmd)
            .add_command(first_entry(LOG))
            .query_async(reader)
            .await
            .map_err(unavailable)?;
        let entries = parse_xread(v);
        if entries.is_empty() {
            return Ok(0);
        }
        if let Some(first) = trimmed_past(&pos, &first) {
            tracing::error!(%pos, %first, "entries after this node's position may have been trimmed: reloading the snapshot");
            if !self.fill_gap(&predecessor(&first)).await? {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            // Progress all the same: a catch-up reads on from the snapshot.
            return Ok(entries.len());
        }
        let n = entries.len();
        for (id, bytes) in entries {
            self.apply(&id, &bytes);
        }
        Ok(n)
    }

    /// Applies one entry to the replica and delivers what it produced.
    fn apply(&self, id: &str, bytes: &[u8]) {
        // Delivered under the replica's lock, as the other stores do: a reader of the
        // event window (`with_events`) then sees exactly what was delivered before it.
        let mut replica = self.replica();
        let Some((outcome, node, req)) = step(&mut replica, id.to_owned(), seed_of(id), bytes)
        else {
            return;
        };
        let req = (node == self.node).then_some(req).flatten();
        // Notices for everyone, here, in log order; the reply and the counts to the
        // waiting caller (each node counts only its own decisions).
        let mut outcome = outcome;
        self.sink.deliver(&mut outcome);
        drop(replica);
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

#[async_trait::async_trait]
impl Store for RedisStore {
    async fn decide(&self, d: Decision, now: Ts) -> Result<Outcome, HubError> {
        // Any node may tick (`Expire`): an expiry that another node's tick already
        // applied is a no-op when this one is applied, so an offer never expires twice.
        let o = self.shared.append(d, now, true).await?;
        o.ok_or_else(|| unavailable("no outcome"))
    }

    fn read_state(&self, f: &mut dyn FnMut(&State)) {
        // The reader delivers every entry under this lock (`Shared::apply`).
        f(&self.shared.replica().state);
    }

    async fn ping(&self) -> Result<(), HubError> {
        // Ready means both: Redis answers, and this node is following the log (a replica
        // that cannot read the log would answer with stale state).
        if !self.shared.healthy.load(Ordering::Relaxed) {
            return Err(unavailable("not following the log"));
        }
        let mut c = self.shared.conn().await?;
        let limit = self.shared.call_timeout();
        let r = tokio::time::timeout(limit, redis::cmd("PING").query_async::<String>(&mut c)).await;
        match r {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => {
                self.shared.broken().await;
                Err(unavailable(e))
            }
            Err(_) => Err(unavailable("Redis did not answer in time")),
        }
    }

    async fn context_read(&self, cmd: ContextCommand, now: Ts) -> Result<Outcome, HubError> {
        // A read changes nothing, so it needs no place in the log: this replica answers.
        if !cmd.is_read_only() {
            return self.context(cmd, now).await;
        }
        // The replica's lock only for the start: a search runs after it is let go.
        let read = self.shared.replica().state.context_read(cmd, now);
        Ok(read.finish().await)
    }

    fn node_tag(&self) -> Option<Arc<str>> {
        Some(self.shared.incarnation.clone())
    }

    fn describe(&self) -> String {
        format!(
            "redis (shared log; this node is {})",
            self.shared.incarnation
        )
    }

    async fn close(&self) {
        match tokio::time::timeout(CLOSE_LIMIT, self.shared.snapshot_if_last()).await {
            Ok(Ok(true)) => {
                tracing::info!("the last node of the cluster to stop stored a snapshot")
            }
            Ok(Ok(false)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot store a snapshot at the stop"),
            Err(_) => tracing::warn!("no snapshot stored at the stop within {CLOSE_LIMIT:?}"),
        }
        // Gone, said at once rather than when the heartbeat lapses: the other nodes
        // declare it lost now, and a node started next is not judged against its rules.
        for t in &self.tasks {
            t.abort();
        }
        if let Ok(mut c) = self.shared.conn().await {
            let _: Result<i64, _> = redis::cmd("DEL")
                .arg(format!("sb:node:{}", self.shared.incarnation))
                .arg(format!("sb:rules:{}", self.shared.incarnation))
                .query_async(&mut c)
                .await;
        }
    }

    fn stop(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
