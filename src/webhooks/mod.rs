//! Webhooks per the Standard Webhooks specification: every event, pushed to each
//! endpoint that wants its type, signed, in order per task and per agent, at least
//! once and never skipped.
//!
//! - [`signing`]: the `webhook-id` / `webhook-timestamp` / `webhook-signature` headers.
//! - [`book`]: the replicated state (API endpoints, every endpoint's position and
//!   lease), changed only through the command log.
//! - [`window`]: which events may go now, and how far the position may move (pure).
//! - [`delivery`]: one endpoint's runner on the node that holds its lease.
//! - [`client`]: the HTTP client, its connections pipelined ([`pipeline`]: one
//!   connection; [`wire`]: HTTP/1.1 requests written, answers read, bounded);
//!   [`target`]: URLs and the private-address rule; [`tls`]: https (rustls, Mozilla's
//!   roots and `webhooks.ca_file`).
//! - [`feed`]: where events come from; [`config`]: `[webhooks]`; [`api`]: the routes.
//!
//! [`Webhooks`] is this node's side: every third of a lease it reads the book, claims
//! or renews the lease of each endpoint it may deliver (a log entry, so the holder is
//! decided by log order), starts a runner for each lease it holds and stops those it
//! lost.

pub mod api;
pub mod book;
pub mod client;
pub mod config;
pub mod delivery;
pub mod feed;
pub mod pipeline;
pub mod signing;
pub mod target;
pub mod tls;
pub mod window;
pub mod wire;

use crate::clock::Ts;
use crate::error::HubError;
use crate::hub::Hub;
use crate::state::Reply;
use book::{WebhookBook, WebhookCommand, WebhookReply};
use config::WebhooksConfig;
use delivery::{Control, Records, Runner};
use feed::Feed;
use signing::Secret;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::watch;

/// An endpoint as this node sees it: from the config or from the book.
#[derive(Clone, Debug)]
pub struct Definition {
    /// Its id.
    pub id: String,
    /// Its URL.
    pub url: String,
    /// Its type patterns.
    pub types: Vec<String>,
    /// The secrets signing now (current first).
    pub secrets: Vec<Secret>,
    /// When the previous secret stops signing, during a rotation.
    pub previous_until: Option<Ts>,
    /// Declared in the config (read-only through the API but for disable, enable,
    /// replay).
    pub from_config: bool,
}

/// A counter's name, help and reading.
type Counter = (&'static str, &'static str, fn(&Records) -> u64);

struct Active {
    token: u64,
    runner: Arc<Runner>,
    stop: watch::Sender<bool>,
    done: tokio::task::JoinHandle<()>,
}

/// This node's webhook service.
pub struct Webhooks {
    hub: Weak<Hub>,
    feed: Weak<dyn Feed>,
    rules: Arc<WebhooksConfig>,
    /// The roots https endpoints are checked against (read once, at start).
    tls: tls::Tls,
    active: Mutex<BTreeMap<String, Active>>,
    records: Mutex<BTreeMap<String, Arc<Records>>>,
    stop: watch::Sender<bool>,
    /// A decision changed the book in a way that may change delivery
    /// (`Notice::WebhooksChanged`): reconcile now, not at the next round.
    changed: tokio::sync::Notify,
    /// One reconcile at a time (the rounds, and an API call that settles before it
    /// answers): two at once would both start a runner for a new lease. Held across
    /// the round's store calls, which is what it orders; nothing else takes it.
    round: tokio::sync::Mutex<()>,
}

/// The book's reply, or an internal error.
fn webhook_reply(r: Result<Reply, HubError>) -> Result<WebhookReply, HubError> {
    match r? {
        Reply::Webhook(w) => Ok(w),
        _ => Err(HubError::StoreUnavailable("unexpected reply".into())),
    }
}

/// Every definition: the config's, then the book's.
pub fn definitions(rules: &WebhooksConfig, book: &WebhookBook, now: Ts) -> Vec<Definition> {
    let mut out = Vec::new();
    for e in &rules.endpoints {
        // Checked at start (`Config::check`).
        if let Ok(s) = Secret::parse(&e.secret) {
            out.push(Definition {
                id: e.id.clone(),
                url: e.url.clone(),
                types: e.types.clone(),
                secrets: vec![s],
                previous_until: None,
                from_config: true,
            });
        }
    }
    for e in book.endpoints.values() {
        if rules.endpoints.iter().any(|c| c.id == e.id) {
            continue;
        }
        let mut secrets: Vec<Secret> = Secret::parse(&e.secret).into_iter().collect();
        let mut previous_until = None;
        if let Some((old, until)) = &e.previous {
            if *until > now {
                secrets.extend(Secret::parse(old));
                previous_until = Some(*until);
            }
        }
        for (old, until) in &e.older {
            if *until > now {
                secrets.extend(Secret::parse(old));
            }
        }
        out.push(Definition {
            id: e.id.clone(),
            url: e.url.clone(),
            types: e.types.clone(),
            secrets,
            previous_until,
            from_config: false,
        });
    }
    out
}

struct StoreControl(Weak<Hub>);

#[async_trait::async_trait]
impl Control for StoreControl {
    async fn advance(&self, id: &str, token: u64, position: u64) -> Result<bool, HubError> {
        let hub = self
            .0
            .upgrade()
            .ok_or_else(|| HubError::StoreUnavailable("the hub stopped".into()))?;
        let r = hub
            .webhook(WebhookCommand::Advance {
                id: id.into(),
                token,
                position,
            })
            .await;
        Ok(webhook_reply(r)? == WebhookReply::Done)
    }

    async fn disable(&self, id: &str, token: u64, reason: String) -> Result<(), HubError> {
        let hub = self
            .0
            .upgrade()
            .ok_or_else(|| HubError::StoreUnavailable("the hub stopped".into()))?;
        let r = hub
            .webhook(WebhookCommand::SetDisabled {
                id: id.into(),
                reason: Some(reason),
                token: Some(token),
                // Under a token the holder's lease decides.
                config: false,
            })
            .await;
        webhook_reply(r).map(|_| ())
    }
}

/// In a cluster, how long a config endpoint no node claims keeps its position after
/// a node's config stopped naming it.
const FORGET_UNCLAIMED_MS: u64 = 3_600_000;

impl Webhooks {
    /// Starts the service for `hub` (and sets `hub.webhooks`), reading events from
    /// `feed`.
    pub fn start(hub: &Arc<Hub>, feed: Weak<dyn Feed>) -> Arc<Webhooks> {
        let (stop, _) = watch::channel(false);
        let w = Arc::new(Webhooks {
            hub: Arc::downgrade(hub),
            feed,
            rules: Arc::new(hub.config.webhooks.clone()),
            tls: tls::Tls::load(hub.config.webhooks.ca_file.as_deref()),
            active: Mutex::new(BTreeMap::new()),
            records: Mutex::new(BTreeMap::new()),
            stop,
            changed: tokio::sync::Notify::new(),
            round: tokio::sync::Mutex::new(()),
        });
        let _ = hub.webhooks.set(w.clone());
        tokio::spawn(w.clone().run());
        w
    }

    /// The book changed in a way that may change delivery: the service reconciles at
    /// once (a rotated secret signs from the next attempt, a disabled or deleted
    /// endpoint stops, a replay starts over), on every node.
    pub fn changed(&self) {
        self.changed.notify_one();
    }

    /// Reconciles now and returns when done: an API call that changed an endpoint
    /// answers after this node acts on it (a rotated secret signs the next attempt, a
    /// disabled or deleted endpoint takes no new event). Other nodes act on the same
    /// change as they apply it (`changed`).
    pub async fn settle(&self) {
        if let Some(hub) = self.hub.upgrade() {
            let _round = self.round.lock().await;
            if let Err(e) = self.reconcile(&hub).await {
                tracing::debug!(error = %e, "webhooks: not settled");
            }
        }
    }

    /// The delivery rules.
    pub fn rules(&self) -> &WebhooksConfig {
        &self.rules
    }

    /// The last event's number.
    pub fn head(&self) -> u64 {
        self.feed.upgrade().map_or(0, |f| f.head())
    }

    /// One endpoint's counters and attempts on this node.
    pub fn records(&self, id: &str) -> Arc<Records> {
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.to_owned())
            .or_default()
            .clone()
    }

    /// Whether this node delivers the endpoint now.
    pub fn delivering(&self, id: &str) -> bool {
        self.active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(id)
    }

    /// Stops every runner (their positions are written as they stop) and lets the
    /// leases go, so another node takes over at once.
    pub async fn stop(&self) {
        let _ = self.stop.send(true);
        // A round under way finishes first (it may start a runner or claim a lease);
        // every later one sees the stop and does nothing.
        let _round = self.round.lock().await;
        let active: Vec<(String, Active)> =
            std::mem::take(&mut *self.active.lock().unwrap_or_else(|p| p.into_inner()))
                .into_iter()
                .collect();
        let Some(hub) = self.hub.upgrade() else {
            return;
        };
        for (id, a) in active {
            let _ = a.stop.send(true);
            // The runner writes its position as it stops; then the lease goes.
            let _ = tokio::time::timeout(Duration::from_secs(2), a.done).await;
            let _ = hub
                .webhook(WebhookCommand::Release { id, token: a.token })
                .await;
        }
    }

    async fn run(self: Arc<Self>) {
        let every = Duration::from_millis((self.rules.lease_ms / 3).max(100));
        let mut stopped = self.stop.subscribe();
        loop {
            match self.hub.upgrade() {
                Some(hub) => {
                    let _round = self.round.lock().await;
                    if let Err(e) = self.reconcile(&hub).await {
                        tracing::debug!(error = %e, "webhooks: leases not renewed this round");
                    }
                }
                None => break,
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = self.changed.notified() => {}
                _ = stopped.changed() => break,
            }
        }
        if *self.stop.borrow() {
            // `stop` drains the runners: it waits for each to write its position and
            // lets its lease go. Taken here first (a stop that came while this round
            // held the lock), they were only told to stop, and `stop` found none: the
            // store could close under their last position writes, and another node
            // waited out the leases.
            return;
        }
        // The hub is gone: nothing to release to.
        for (_, a) in std::mem::take(&mut *self.active.lock().unwrap_or_else(|p| p.into_inner())) {
            let _ = a.stop.send(true);
        }
    }

    /// One round: claim or renew what this node may deliver, start and stop runners.
    async fn reconcile(&self, hub: &Arc<Hub>) -> Result<(), HubError> {
        if *self.stop.borrow() {
            return Ok(());
        }
        let book = hub.store().webhooks().await?;
        let now = hub.clock.now();
        let defs = definitions(&self.rules, &book, now);
        let me = hub.node.to_string();
        // Counters and attempts of endpoints that are gone: a new endpoint of the same
        // id starts with none.
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|id, _| defs.iter().any(|d| &d.id == id));
        // Positions of config endpoints that this node's config no longer names hold
        // the event window at their last event for good: dropped, once no node holds
        // their lease. With one replica at once; in a cluster only after an hour with
        // no claim, so that a node still configured with one (a rolling restart that
        // adds it) claims it first. A disabled one holds nothing and is kept.
        let unclaimed_ms = match hub.config.store.effective_kind() {
            crate::config::StoreKind::Redis => FORGET_UNCLAIMED_MS,
            _ => 0,
        };
        for (id, c) in &book.cursors {
            let named = defs.iter().any(|d| &d.id == id);
            if !named && c.forgettable(now, unclaimed_ms) {
                let r = hub
                    .webhook(WebhookCommand::Forget {
                        id: id.clone(),
                        unclaimed_ms,
                    })
                    .await;
                if matches!(r, Ok(Reply::Webhook(WebhookReply::Done))) {
                    tracing::info!(endpoint = %id, "webhook endpoint no longer configured: its position is dropped");
                }
            }
        }
        // Runners of endpoints that are gone, and runners that ended by themselves (a
        // store that did not answer their last write): claimed again below.
        {
            let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
            active.retain(|_, a| !a.done.is_finished());
            active.retain(|id, a| {
                let keep = defs.iter().any(|d| &d.id == id);
                if !keep {
                    let _ = a.stop.send(true);
                }
                keep
            });
        }
        for d in defs {
            let cursor = book.cursors.get(&d.id);
            let token = self
                .active
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&d.id)
                .map(|a| a.token);
            if cursor.is_some_and(|c| c.disabled.is_some()) {
                self.stop_runner(&d.id);
                continue;
            }
            if token.is_none() {
                let lease = cursor.and_then(|c| c.lease.as_ref());
                let free = lease.is_none_or(|l| l.until <= now || l.node == me);
                if !free {
                    continue;
                }
            }
            let asked = tokio::time::Instant::now();
            let r = hub
                .webhook(WebhookCommand::Claim {
                    id: d.id.clone(),
                    config: d.from_config,
                    node: me.clone(),
                    lease_ms: self.rules.lease_ms,
                    start: self.head(),
                })
                .await;
            match webhook_reply(r)? {
                WebhookReply::Granted { token: t, position } => {
                    let end = delivery::Lease::end_of_claim(asked, self.rules.lease_ms);
                    if token == Some(t) {
                        // Renewed: the lease goes on; only the secrets may have changed.
                        if let Some(a) = self
                            .active
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get(&d.id)
                        {
                            a.runner.lease.renew(end);
                            *a.runner.secrets.lock().unwrap_or_else(|p| p.into_inner()) =
                                Arc::new(d.secrets.clone());
                        }
                    } else {
                        self.stop_runner(&d.id);
                        self.start_runner(hub, &d, t, position, end);
                    }
                }
                _ => self.stop_runner(&d.id),
            }
        }
        Ok(())
    }

    fn stop_runner(&self, id: &str) {
        if let Some(a) = self
            .active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)
        {
            let _ = a.stop.send(true);
        }
    }

    fn start_runner(
        &self,
        hub: &Arc<Hub>,
        d: &Definition,
        token: u64,
        position: u64,
        lease_end: tokio::time::Instant,
    ) {
        let Ok(target) = target::Target::parse(&d.url) else {
            return;
        };
        let epoch = self.feed.upgrade().map(|f| f.epoch()).unwrap_or_default();
        let runner = Arc::new(Runner {
            id: d.id.clone(),
            types: d.types.clone(),
            client: client::Client::new(target, self.rules.allow_private)
                .with_tls(&self.tls)
                .with_depth(self.rules.pipeline_depth),
            secrets: Mutex::new(Arc::new(d.secrets.clone())),
            rules: self.rules.clone(),
            records: self.records(&d.id),
            epoch,
            clock: hub.clock.clone(),
            lease: delivery::Lease::until(lease_end),
            retries: Default::default(),
        });
        let (stop, stopped) = watch::channel(false);
        let control: Arc<dyn Control> = Arc::new(StoreControl(Arc::downgrade(hub)));
        tracing::info!(endpoint = %d.id, token, position, "webhook delivery starts on this node");
        let done =
            tokio::spawn(
                runner
                    .clone()
                    .run(self.feed.clone(), control, token, position, stopped),
            );
        self.active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                d.id.clone(),
                Active {
                    token,
                    runner,
                    stop,
                    done,
                },
            );
    }

    /// Adds the webhook counters to `/metrics`.
    pub fn render_metrics(&self, book: &WebhookBook, out: &mut String) {
        let head = self.head();
        let records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        let ids: Vec<String> = definitions(&self.rules, book, Ts(0))
            .into_iter()
            .map(|d| d.id)
            .collect();
        let metrics: [Counter; 4] = [
            (
                "switchboard_webhook_deliveries_total",
                "Events delivered (2xx) by this node.",
                |r| r.delivered.load(Relaxed),
            ),
            (
                "switchboard_webhook_failures_total",
                "Attempts that failed on this node.",
                |r| r.failures.load(Relaxed),
            ),
            (
                "switchboard_webhook_retries_total",
                "Attempts that were retries on this node.",
                |r| r.retries.load(Relaxed),
            ),
            (
                "switchboard_webhook_expired_total",
                "Offers not delivered because their deadline passed.",
                |r| r.expired.load(Relaxed),
            ),
        ];
        for (name, help, get) in metrics {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for id in &ids {
                let v = records.get(id).map_or(0, |r| get(r));
                let _ = writeln!(out, "{name}{{endpoint=\"{id}\"}} {v}");
            }
        }
        let name = "switchboard_webhook_lag_events";
        let _ = writeln!(
            out,
            "# HELP {name} Events after the endpoint's position (the newest event minus the position).\n# TYPE {name} gauge"
        );
        for id in &ids {
            let pos = book
                .cursors
                .get(id)
                .and_then(|c| c.position)
                .unwrap_or(0)
                .max(records.get(id).map_or(0, |r| r.position.load(Relaxed)));
            let _ = writeln!(
                out,
                "{name}{{endpoint=\"{id}\"}} {}",
                head.saturating_sub(pos)
            );
        }
    }
}
