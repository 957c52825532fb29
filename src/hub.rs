//! The hub: the store, the sessions connected to this node, and the delivery of what
//! each decision produced.
//!
//! The hub owns no routing state; the [`Store`] does. It owns this node's side:
//! which agent is connected here and through which bounded queue, who supervises, the
//! timer loop that asks the store to fire due deadlines, and the counters. Every
//! change goes `Hub::execute -> Store::execute`; the store hands the decision's notices
//! to its delivery sink, bound to this hub when it is built (`Hub::new`), which ends in
//! `Hub::dispatch` (as `Dispatch::deliver`) in decision order; the hub counts and
//! returns the reply.

use crate::auth::Keys;
use crate::clock::{Clock, Ts};
use crate::config::Config;
use crate::error::HubError;
use crate::events::{Envelope, EventChunk, EventsGone};
use crate::ids::{AgentId, ConnId, QueueId};
use crate::metrics::Metrics;
use crate::protocol::ServerMessage;
use crate::routing::{AgentNotice, CloseReason, Command, Profile};
use crate::state::{Notice, Outcome, Reply};
use crate::stats::report::{StatsQuery, StatsReport};
use crate::store::Store;
use crate::ws::queue::SendQueue;
use axum::extract::ws::Utf8Bytes;
use dashmap::DashMap;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, broadcast, watch};

/// A frame queued for one connection. The text is shared, not copied: a change
/// pushed to a thousand watchers is encoded once and each socket writes the same bytes.
#[derive(Debug)]
pub enum Outbound {
    /// Send as is.
    Text(Utf8Bytes),
    /// An agent state view: dropped by the writer if it already sent a newer one.
    State {
        /// The view's version.
        version: u64,
        /// The frame.
        text: Utf8Bytes,
    },
}

/// How the hub reaches one agent session on this node.
#[derive(Clone, Debug)]
pub struct SessionHandle {
    /// The connection.
    pub conn: ConnId,
    /// Its bounded send queue, which also carries the signal to close.
    pub queue: Arc<SendQueue>,
}

impl SessionHandle {
    /// Asks the session to close, saying why.
    pub fn kill(&self, reason: &'static str) {
        self.queue.close(reason);
    }
}

/// This node's hub.
pub struct Hub {
    /// The configuration it runs with.
    pub config: Arc<Config>,
    /// Token keys.
    pub keys: Keys,
    /// The clock the model reads.
    pub clock: Clock,
    /// Counters.
    pub metrics: Metrics,
    /// The node name this node's connections are filed under.
    pub node: Arc<str>,
    /// The webhook service, once started (`server::start`).
    pub webhooks: std::sync::OnceLock<Arc<crate::webhooks::Webhooks>>,
    store: Arc<dyn Store>,
    profiles: HashMap<AgentId, Arc<Profile>>,
    /// Each agent's current session on this node: the one the store connected last
    /// (`Notice::Attach`).
    sessions: DashMap<AgentId, SessionHandle>,
    /// Sessions opened here whose connect the store has not decided yet, by connection.
    pending: DashMap<ConnId, SessionHandle>,
    supervisors: broadcast::Sender<Arc<str>>,
    /// Every numbered event this node delivers, in log order: the live half of the
    /// event stream and of the webhooks' feed (`events_chunk`). Its capacity
    /// (`events.stream_buffer`) is how far a reader may fall behind before it reads the
    /// window again.
    events: broadcast::Sender<Arc<Envelope>>,
    timer_wake: Notify,
    dirty_queues: Mutex<BTreeSet<QueueId>>,
    /// Set by every decision that changed something: the statistics loop pushes a new
    /// report only then (or when a minute passes, as the rolling windows move).
    stats_dirty: AtomicBool,
    connections: AtomicUsize,
    draining: watch::Sender<bool>,
}

impl Hub {
    /// A hub over `store`, which was built with the sink whose `binding` this is: the
    /// hub binds it to itself here, once.
    pub fn new(
        config: Arc<Config>,
        keys: Keys,
        store: Arc<dyn Store>,
        binding: crate::store::Binding,
        clock: Clock,
    ) -> Arc<Hub> {
        let profiles = config
            .rules()
            .agents
            .into_iter()
            .map(|p| (p.id.clone(), p))
            .collect();
        let (supervisors, _) = broadcast::channel(4096);
        let (events, _) = broadcast::channel(config.events.stream_buffer.max(1));
        let (draining, _) = watch::channel(false);
        let node = store
            .node_tag()
            .unwrap_or_else(|| config.server.node_id.as_str().into());
        let hub = Arc::new(Hub {
            node,
            webhooks: std::sync::OnceLock::new(),
            config,
            keys,
            clock,
            metrics: Metrics::default(),
            store,
            profiles,
            sessions: DashMap::new(),
            pending: DashMap::new(),
            supervisors,
            events,
            timer_wake: Notify::new(),
            dirty_queues: Mutex::new(BTreeSet::new()),
            stats_dirty: AtomicBool::new(true),
            connections: AtomicUsize::new(0),
            draining,
        });
        let weak: std::sync::Weak<dyn crate::store::Dispatch> = Arc::downgrade(&hub) as _;
        binding.bind(weak);
        hub
    }

    /// The store.
    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// A configured agent's profile.
    pub fn profile(&self, id: &AgentId) -> Option<Arc<Profile>> {
        self.profiles.get(id).cloned()
    }

    /// Carries out a command and delivers what it produced.
    pub async fn execute(&self, cmd: Command) -> Result<Reply, HubError> {
        let now = self.clock.now();
        let outcome = self.store.execute(cmd, now).await?;
        self.dispatch(outcome)
    }

    /// Carries out a webhook command (a log entry of its own).
    pub async fn webhook(
        &self,
        cmd: crate::webhooks::book::WebhookCommand,
    ) -> Result<Reply, HubError> {
        let now = self.clock.now();
        let outcome = self.store.webhook(cmd, now).await?;
        self.dispatch(outcome)
    }

    /// Carries out a customer-context command and delivers what it produced.
    pub async fn context(&self, cmd: crate::context::ContextCommand) -> Result<Reply, HubError> {
        let now = self.clock.now();
        let outcome = if cmd.is_read_only() {
            self.store.context_read(cmd, now).await?
        } else {
            self.store.context(cmd, now).await?
        };
        self.dispatch(outcome)
    }

    /// Delivers an outcome's notices and returns its reply.
    pub fn dispatch(&self, o: Outcome) -> Result<Reply, HubError> {
        self.metrics.record(&o.stats);
        // Sent only with no readers is a no-op; each event leaves once per node, here,
        // in decision order (every store calls this under its replica's lock).
        for e in o.envelopes {
            let _ = self.events.send(e);
        }
        if o.earliest_timer.is_some() {
            self.timer_wake.notify_one();
        }
        if !o.queues.is_empty() || !o.notices.is_empty() {
            self.stats_dirty.store(true, Ordering::Relaxed);
        }
        if !o.queues.is_empty() {
            let mut d = self.dirty_queues.lock().unwrap_or_else(|p| p.into_inner());
            d.extend(o.queues);
        }
        for n in o.notices {
            match n {
                Notice::ToAgent { agent_id, notice } => self.deliver(&agent_id, notice),
                Notice::AgentChanged(summary) => {
                    if self.supervisors.receiver_count() > 0 {
                        let text = ServerMessage::AgentChanged { agent: &summary }.to_text();
                        let _ = self.supervisors.send(text.into());
                    }
                }
                Notice::RecordChanged { to, change } => {
                    tracing::debug!(kind = ?change.kind, id = %change.id, watchers = to.len(), "record changed");
                    let text: Utf8Bytes = ServerMessage::RecordChanged { change: &change }
                        .to_text()
                        .into();
                    for agent_id in &to {
                        self.push(agent_id, Outbound::Text(text.clone()));
                    }
                }
                Notice::Attach { agent_id, conn } => {
                    if let Some((_, h)) = self.pending.remove(&conn) {
                        // A drain that went through both maps while this session moved
                        // from one to the other saw it in neither.
                        if self.is_draining() {
                            h.kill("shutting_down");
                        }
                        if let Some(old) = self.sessions.insert(agent_id.clone(), h) {
                            if old.conn != conn {
                                tracing::info!(%agent_id, "session taken over by a new connection");
                                old.kill("replaced");
                            }
                        }
                    }
                }
                Notice::WebhooksChanged => {
                    if let Some(w) = self.webhooks.get() {
                        w.changed();
                    }
                }
                Notice::Close {
                    agent_id,
                    reason,
                    conn,
                } => {
                    if let Some(h) = self.sessions.get(&agent_id) {
                        if conn.is_none_or(|c| c == h.conn) {
                            tracing::info!(%agent_id, ?reason, "closing session");
                            h.kill(match reason {
                                CloseReason::LoggedOut => "logged_out",
                                CloseReason::LoggedOutBySupervisor => "logged_out_by_supervisor",
                                CloseReason::Replaced => "replaced",
                                CloseReason::Reconnect => "reconnect",
                            });
                        }
                    }
                }
            }
        }
        o.reply
    }

    fn deliver(&self, agent_id: &AgentId, notice: AgentNotice) {
        let out = match &notice {
            AgentNotice::Offer(offer) => {
                tracing::debug!(%agent_id, task_id = %offer.task.task_id, offer_id = %offer.offer_id, "offer");
                Outbound::Text(ServerMessage::Offer { offer }.to_text().into())
            }
            AgentNotice::OfferEnded {
                offer_id,
                task_id,
                reason,
            } => {
                tracing::info!(%agent_id, %task_id, %offer_id, ?reason, "offer ended");
                Outbound::Text(
                    ServerMessage::OfferEnded {
                        offer_id: *offer_id,
                        task_id: *task_id,
                        reason: *reason,
                    }
                    .to_text()
                    .into(),
                )
            }
            AgentNotice::TaskCancelled { task_id, reason } => {
                tracing::info!(%agent_id, %task_id, "task cancelled in progress");
                Outbound::Text(
                    ServerMessage::TaskCancelled {
                        task_id: *task_id,
                        reason: reason.clone(),
                    }
                    .to_text()
                    .into(),
                )
            }
            AgentNotice::TaskTransferred { task_id } => {
                tracing::info!(%agent_id, %task_id, "task transferred away");
                Outbound::Text(
                    ServerMessage::TaskTransferred { task_id: *task_id }
                        .to_text()
                        .into(),
                )
            }
            AgentNotice::TransferEnded {
                task_id,
                agent_id: to,
                result,
            } => {
                tracing::info!(%agent_id, %task_id, to = %to, ?result, "transfer ended");
                Outbound::Text(
                    ServerMessage::TransferEnded {
                        task_id: *task_id,
                        agent_id: to,
                        result: *result,
                    }
                    .to_text()
                    .into(),
                )
            }
            AgentNotice::State(view) => {
                tracing::debug!(%agent_id, status = ?view.status, "state");
                Outbound::State {
                    version: view.version,
                    text: ServerMessage::State { agent: view }.to_text().into(),
                }
            }
        };
        self.push(agent_id, out);
    }

    /// Queues a frame for an agent's session on this node, if it has one here. A full
    /// queue closes the session: it does not read, and nobody waits for it.
    fn push(&self, agent_id: &AgentId, out: Outbound) {
        // The guard is a plain lock on one shard; try_send never waits.
        let slow = match self.sessions.get(agent_id) {
            Some(h) => match h.queue.push(out) {
                Ok(()) => None,
                Err(_) => Some(h.clone()),
            },
            None => None,
        };
        if let Some(h) = slow {
            tracing::warn!(%agent_id, "send queue full: closing a session that does not read");
            self.metrics.slow_consumer();
            h.kill("slow_consumer");
        }
    }

    /// Registers an agent session on this node, before its connect is sent to the
    /// store. It becomes the agent's session when the store decides the connect
    /// (`Notice::Attach`), which then closes the session the agent had here (takeover).
    /// Not here: two desktops opening at once register in one order and may be
    /// connected by the store in the other, and each closing the other left none.
    pub fn register(&self, handle: SessionHandle) {
        self.pending.insert(handle.conn, handle);
    }

    /// Forgets a session, unless a newer one has taken its place.
    pub fn unregister(&self, agent: &AgentId, conn: ConnId) {
        self.pending.remove(&conn);
        self.sessions.remove_if(agent, |_, h| h.conn == conn);
    }

    /// Up to `max` held events after `after`, and the oldest event served; with the live
    /// channel, subscribed in the same step under the store's lock, when they reach the
    /// newest event: the window and the live events meet with no gap and no repeat. A
    /// stream reader or a webhook endpoint catching up takes the window a piece at a
    /// time ([`crate::events::stream`], [`crate::webhooks::feed`]); when `live` answers
    /// `Lagged`, or jumps past the reader's last seq + 1 (this node reloaded a
    /// snapshot), it calls again from the last seq seen. An `after` beyond the last
    /// event gives no events and the live channel (a replica that lags another); the
    /// reader skips live events up to it.
    pub fn events_chunk(&self, after: u64, max: usize) -> Result<EventChunk, EventsGone> {
        let now = self.clock.now();
        let mut out = Err(EventsGone { oldest: 1 });
        self.store.with_events(&mut |log| {
            out = log.chunk_at(after, now, max).map(|(events, oldest)| {
                let upto = events.last().map_or(after, |e| e.seq);
                EventChunk {
                    live: (upto >= log.last_seq()).then(|| self.events.subscribe()),
                    events,
                    oldest,
                }
            });
        });
        out
    }

    /// The live events from now on, with the last seq already made.
    pub fn events_tail(&self) -> (u64, broadcast::Receiver<Arc<Envelope>>) {
        let mut out = None;
        self.store.with_events(&mut |log| {
            out = Some((log.last_seq(), self.events.subscribe()));
        });
        out.unwrap_or_else(|| (0, self.events.subscribe()))
    }

    /// This history's epoch (empty before the first decision was logged).
    pub fn event_epoch(&self) -> String {
        let mut out = String::new();
        self.store.with_events(&mut |log| {
            out = log.epoch().map(|e| e.to_string()).unwrap_or_default();
        });
        out
    }

    /// The oldest seq held and the last made.
    pub fn event_bounds(&self) -> (u64, u64) {
        let now = self.clock.now();
        let mut out = (1, 0);
        self.store
            .with_events(&mut |log| out = (log.oldest_live(now), log.last_seq()));
        out
    }

    /// Supervisor frames: agent and queue changes.
    pub fn subscribe_supervisor(&self) -> broadcast::Receiver<Arc<str>> {
        self.supervisors.subscribe()
    }

    /// Counts a connection in; the guard counts it out.
    pub fn connection_opened(self: &Arc<Self>) -> ConnectionGuard {
        self.connections.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard(self.clone())
    }

    /// Open websocket connections on this node.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Whether a drain has begun.
    pub fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }

    /// Watches for the start of a drain.
    pub fn drain_signal(&self) -> watch::Receiver<bool> {
        self.draining.subscribe()
    }

    /// Starts the drain: sessions say goodbye and close, the readiness probe fails.
    /// Agent sessions are told through their queues (one close each), not through a
    /// watch every session polls: a watch shared by thousands of sessions is a lock
    /// taken twice by each of them every time it wakes. A session registered after this
    /// sees `is_draining` and closes itself.
    pub fn start_drain(&self) {
        self.draining.send_replace(true);
        for h in self.sessions.iter() {
            h.kill("shutting_down");
        }
        for h in self.pending.iter() {
            h.kill("shutting_down");
        }
    }

    /// Waits until every connection has closed, or `limit` passes. Returns how many remain.
    pub async fn wait_connections_closed(&self, limit: Duration) -> usize {
        let end = tokio::time::Instant::now() + limit;
        while self.connections() > 0 && tokio::time::Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.connections()
    }

    /// The timer loop: sleeps until the store's next deadline, fires what is due.
    /// A shared store's deadlines may be set by other nodes, so it also polls.
    pub async fn run_timers(self: Arc<Self>, poll: Option<Duration>) {
        let mut drain = self.drain_signal();
        // After a firing that failed (a log that cannot be written refuses at once),
        // the deadlines are still due: without a pause the loop would spin on them,
        // a core flat out and a warning each turn, on a disk that may be full. The
        // pause delays only the next try (a wake-up from a new decision does not
        // start it over), and ends with the first firing that goes through.
        let mut backoff: Option<Duration> = None;
        let mut retry_at: Option<tokio::time::Instant> = None;
        loop {
            let next = match self.store.next_deadline().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "timer loop cannot read deadlines");
                    Some(self.clock.now().plus(Duration::from_millis(200)))
                }
            };
            let mut wake_at = next.map(|t| self.clock.instant_at(t));
            if let Some(p) = poll {
                let polled = tokio::time::Instant::now() + p;
                wake_at = Some(wake_at.map_or(polled, |w| w.min(polled)));
            }
            if let (Some(w), Some(r)) = (wake_at, retry_at) {
                wake_at = Some(w.max(r));
            }
            let sleep = async {
                match wake_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = sleep => {}
                _ = self.timer_wake.notified() => continue,
                _ = drain.changed() => return,
            }
            if self.fire_due(self.clock.now()).await {
                (backoff, retry_at) = (None, None);
            } else {
                let b = backoff.map_or(Duration::from_millis(100), |b| {
                    (b * 2).min(Duration::from_secs(5))
                });
                (backoff, retry_at) = (Some(b), Some(tokio::time::Instant::now() + b));
            }
        }
    }

    /// Fires every deadline due at `now`; false when the store refused.
    pub async fn fire_due(&self, now: Ts) -> bool {
        match self.store.expire_due(now).await {
            Ok(o) => {
                let _ = self.dispatch(o);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot fire due timers");
                false
            }
        }
    }

    /// Sends supervisors the numbers of queues that changed, at most every `every`.
    pub async fn run_queue_updates(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut drain = self.drain_signal();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = drain.changed() => return,
            }
            let dirty: Vec<QueueId> = {
                let mut d = self.dirty_queues.lock().unwrap_or_else(|p| p.into_inner());
                std::mem::take(&mut *d).into_iter().collect()
            };
            if dirty.is_empty() || self.supervisors.receiver_count() == 0 {
                continue;
            }
            match self.store.queue_stats(&dirty, self.clock.now()).await {
                Ok(stats) => {
                    for q in &stats {
                        let text = ServerMessage::QueueChanged { queue: q }.to_text();
                        let _ = self.supervisors.send(text.into());
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot read queue numbers"),
            }
        }
    }
}

impl Hub {
    /// The statistics report at this instant, from this node's replica.
    pub fn stats_report(&self, q: &StatsQuery) -> Result<StatsReport, HubError> {
        let now = self.clock.now();
        let mut out = None;
        self.store
            .read_state(&mut |s| out = Some(s.stats.report(&s.book, q, now)));
        out.unwrap_or_else(|| Err(HubError::StoreUnavailable("no state to read".into())))
    }

    /// The statistics' Prometheus metrics, appended to `out`.
    pub fn render_stats_metrics(&self, out: &mut String) {
        self.store
            .read_state(&mut |s| crate::stats::prometheus::render(&s.stats, &s.book, out));
    }

    /// Pushes supervisors the statistics, at most every `every` and only when a decision
    /// changed something or a minute began (the rolling windows move): one report per
    /// tick, encoded once and shared by every supervisor.
    pub async fn run_stats_updates(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut drain = self.drain_signal();
        let mut last_minute = 0;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = drain.changed() => return,
            }
            if self.supervisors.receiver_count() == 0 {
                continue;
            }
            let minute = self.clock.now().0 / 60_000_000;
            let changed = self.stats_dirty.swap(false, Ordering::Relaxed);
            if !changed && minute == last_minute {
                continue;
            }
            last_minute = minute;
            match self.stats_report(&StatsQuery::default()) {
                Ok(report) => {
                    let text = ServerMessage::Stats { stats: &report }.to_text();
                    let _ = self.supervisors.send(text.into());
                }
                Err(e) => tracing::warn!(error = %e, "cannot build the statistics"),
            }
        }
    }
}

impl crate::store::Dispatch for Hub {
    fn deliver(&self, o: Outcome) {
        let _ = self.dispatch(o);
    }
}

/// Counts one open connection; dropping it counts it out.
pub struct ConnectionGuard(Arc<Hub>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;
    use crate::ws::queue::Next;

    fn hub() -> Arc<Hub> {
        let config = Config::parse(
            "[[queues]]\nid = \"support\"\n\n[[agents]]\nid = \"ana\"\nqueues = [\"support\"]\n",
        )
        .expect("config");
        let clock = Clock::new();
        let (sink, binding) = crate::store::sink::sink();
        let store = Arc::new(MemoryStore::new(
            Arc::new(config.rules()),
            clock.now(),
            sink,
        ));
        Hub::new(Arc::new(config), Keys::new(b"k"), store, binding, clock)
    }

    fn session() -> SessionHandle {
        SessionHandle {
            conn: ConnId::new(),
            queue: Arc::new(SendQueue::new(16)),
        }
    }

    /// What the session's writer has to do now: the text frames queued, and the reason
    /// it was told to close, if it was.
    async fn drain(h: &SessionHandle) -> (Vec<String>, Option<&'static str>) {
        let mut texts = Vec::new();
        loop {
            tokio::select! {
                biased;
                n = h.queue.next() => match n {
                    Next::Close(r) => return (texts, Some(r)),
                    Next::Frame(Outbound::Text(t)) => texts.push(t.to_string()),
                    Next::Frame(_) => {}
                },
                () = std::future::ready(()) => return (texts, None),
            }
        }
    }

    async fn closing(h: &SessionHandle) -> Option<&'static str> {
        drain(h).await.1
    }

    async fn connect(hub: &Hub, h: &SessionHandle) {
        let ana = AgentId::from("ana");
        hub.execute(Command::Connect {
            profile: hub.profile(&ana).expect("profile"),
            conn: h.conn,
            node: hub.node.clone(),
        })
        .await
        .expect("connect");
    }

    /// Two desktops of one agent open at once: they register in one order and the store
    /// connects them in the other. The one connected last is the agent's desktop and stays;
    /// the other is `replaced`. Before, each registration closed the session before it
    /// and the store's takeover closed the other: none was left.
    #[tokio::test]
    async fn the_desktop_the_store_connected_last_stays_whatever_order_they_opened_in() {
        let hub = hub();
        let (a, b) = (session(), session());
        hub.register(a.clone());
        hub.register(b.clone());
        connect(&hub, &b).await;
        connect(&hub, &a).await;
        assert_eq!(closing(&b).await, Some("replaced"));
        assert_eq!(closing(&a).await, None, "the current desktop was closed");
        // What the hub tells the agent now reaches that desktop.
        hub.execute(Command::SetReady {
            agent: "ana".into(),
        })
        .await
        .expect("ready");
        assert!(matches!(a.queue.try_pop(), Some(Outbound::State { .. })));
    }

    /// A desktop taking over an agent that has an offer ringing: the offer reaches the new
    /// desktop once, in its welcome. Before, an offer made between the new desktop's
    /// registration and its connect went to its queue too and followed the welcome.
    #[tokio::test]
    async fn an_offer_made_while_a_new_desktop_connects_reaches_it_once_in_its_welcome() {
        let hub = hub();
        let (a, b) = (session(), session());
        hub.register(a.clone());
        connect(&hub, &a).await;
        hub.execute(Command::SetReady {
            agent: "ana".into(),
        })
        .await
        .expect("ready");
        hub.register(b.clone());
        let task = crate::task::NewTask {
            channel: crate::ids::Channel::Voice,
            queue: "support".into(),
            priority: 0,
            skills: Default::default(),
            skill_levels: Default::default(),
            customer: Default::default(),
            attributes: Default::default(),
            idempotency_key: None,
        };
        hub.execute(Command::CreateTask(Box::new(task)))
            .await
            .expect("created");
        connect(&hub, &b).await;
        let offer = r#""type":"offer""#;
        let (texts, closed) = drain(&b).await;
        assert_eq!(closed, None);
        assert!(
            !texts.iter().any(|t| t.contains(offer)),
            "an offer after the welcome: {texts:?}"
        );
        assert_eq!(closing(&a).await, Some("replaced"));
    }
}
