//! One webhook endpoint during the `route` scenario (`--webhook-receiver`): a small
//! HTTP receiver on 127.0.0.1 that the started hub's config names in
//! `[[webhooks.endpoints]]` (every type, or the `--webhook-types` patterns). It answers 204 to each delivery, verifies its
//! Standard Webhooks signature (HMAC-SHA256 of `{webhook-id}.{webhook-timestamp}.{body}`
//! with the secret's key bytes, as `protocol/webhooks.md` says: computed here, not with
//! the hub's code, so that a signing bug shows), and records what arrived:
//!
//! - every event number (`seq`) once: after the run, every seq from 1 to the hub's last
//!   must have arrived (no gap), repeats are counted (at least once allows them). With
//!   type patterns, the seqs the stream reader saw with a matching type (it reads from
//!   seq 1 and names every event's type), and nothing of another type;
//! - order: the first arrival of each event of one task (its `task.*` and `offer.*`
//!   events, those `EventData::task_id` names) and of one agent has a larger seq than
//!   the one before it (`protocol/webhooks.md`: in order per task and agent); an
//!   `activity.created` names its task but is not ordered with it (noted, not failed);
//! - create -> `task.offered` at the receiver (the first offer of each task), timed
//!   like the stream reader's ([`crate::events`]); without `task.created` among the
//!   types, the offer's arrival is kept and timed after the run from the creates'
//!   answers (which name each task).
//!
//! The handler records before it answers: the hub sends a task's next event only after
//! the previous one's 2xx, so arrival order here is delivery order.

use crate::report::Check;
use crate::shared::Shared;
use crate::stats::HistSet;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::serve::ListenerExt;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Create sent to its `task.offered` at the webhook receiver.
pub const H_CREATE_TO_HOOK_OFFER: &str = "create -> task.offered (webhook)";

/// The endpoint's id in the generated config.
pub const ENDPOINT_ID: &str = "lt-receiver";

/// The path the receiver answers on.
const PATH: &str = "/hooks/loadtest";

/// How many examples of each kind of breach are kept.
const SAMPLES: usize = 10;

/// What goes into the hub's `[[webhooks.endpoints]]`.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// `http://127.0.0.1:PORT/hooks/loadtest`.
    pub url: String,
    /// `whsec_<base64>`.
    pub secret: String,
    /// Its type patterns.
    pub types: Vec<String>,
    /// `webhooks.linger_ms`, when the run sets it (the hub's default otherwise).
    pub linger_ms: Option<u64>,
}

impl Endpoint {
    /// The `[webhooks]` section: private addresses allowed (the receiver is on
    /// loopback), this one endpoint, its types.
    pub fn config_toml(&self) -> String {
        // Patterns are letters, digits, '.', '_' and '*' (RouteOpts::check): no quoting.
        let types: Vec<String> = self.types.iter().map(|t| format!("\"{t}\"")).collect();
        let linger = self
            .linger_ms
            .map(|ms| format!("linger_ms = {ms}\n"))
            .unwrap_or_default();
        format!(
            "[webhooks]\nallow_private = true\n{linger}\n[[webhooks.endpoints]]\nid = \"{ENDPOINT_ID}\"\nurl = \"{}\"\nsecret = \"{}\"\ntypes = [{}]\n\n",
            self.url,
            self.secret,
            types.join(", ")
        )
    }
}

/// Whether the patterns take every type.
pub fn every_type(types: &[String]) -> bool {
    types.iter().any(|t| t == "*")
}

/// Whether an event type matches the patterns, as `protocol/webhooks.md` says (`*`,
/// the type itself, or `prefix.*`): written here again, not taken from the hub.
pub fn matches(types: &[String], ty: &str) -> bool {
    types.iter().any(|p| {
        p == "*"
            || p == ty
            || p.strip_suffix(".*")
                .is_some_and(|pre| ty.split('.').next() == Some(pre))
    })
}

/// What the receiver has seen so far.
#[derive(Default)]
struct Seen {
    /// POSTs received (repeats included).
    deliveries: u64,
    /// Distinct seqs.
    seqs: HashSet<u64>,
    /// Deliveries of a seq already received.
    duplicates: u64,
    /// The last seq (first arrivals) of each task and each agent.
    last_of_task: HashMap<String, (u64, String)>,
    last_of_agent: HashMap<String, (u64, String)>,
    order_breaks: u64,
    order_samples: Vec<String>,
    /// The last activity event naming each task, and how often a task.*/offer.* event
    /// of that task arrived after an activity event with a larger seq.
    activity_of_task: HashMap<String, (u64, String)>,
    activity_ahead: u64,
    activity_samples: Vec<String>,
    /// Bad signatures, bodies that are not envelopes, ids that disagree.
    bad: u64,
    bad_samples: Vec<String>,
    /// Tasks whose `task.created` arrived, and whose `task.completed` did.
    created: HashSet<String>,
    completed: HashSet<String>,
    /// Tasks created by this run whose first `task.offered` has not arrived: the
    /// run's sequence number (the create's send time).
    waiting_offer: HashMap<String, u64>,
    /// Tasks whose first `task.offered` arrived.
    offered: HashSet<String>,
    /// First offers of tasks whose `task.created` was not received (not of the
    /// types): when they arrived, timed after the run.
    unresolved_offers: HashMap<String, u64>,
    hists: HistSet,
    epochs: HashSet<String>,
}

impl Seen {
    fn bad(&mut self, why: String) {
        self.bad += 1;
        if self.bad_samples.len() < SAMPLES {
            self.bad_samples.push(why);
        }
    }

    fn order(&mut self, why: String) {
        self.order_breaks += 1;
        if self.order_samples.len() < SAMPLES {
            self.order_samples.push(why);
        }
    }
}

struct Inner {
    key: Vec<u8>,
    types: Vec<String>,
    /// Connections accepted: the hub keeps a few alive and reuses them.
    connections: std::sync::atomic::AtomicU64,
    seen: Mutex<Seen>,
    /// The run's clock and create send times, set by the run before its first create.
    shared: OnceLock<Arc<Shared>>,
}

/// The running receiver (stopped when dropped).
pub struct Receiver {
    /// Where it listens.
    pub addr: SocketAddr,
    endpoint: Endpoint,
    inner: Arc<Inner>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// What the receiver saw, for the report.
#[derive(Default)]
pub struct HookOutcome {
    /// The histogram of [`H_CREATE_TO_HOOK_OFFER`].
    pub hists: HistSet,
    /// POSTs received, repeats included.
    pub deliveries: u64,
    /// Connections the hub opened to the receiver.
    pub connections: u64,
    /// Distinct events received.
    pub distinct: u64,
    /// Repeats (allowed: at least once).
    pub duplicates: u64,
    /// The hub's last seq when the run ended (from `GET /v1/events`).
    pub last_seq: Option<u64>,
    /// The endpoint's type patterns.
    pub types: Vec<String>,
    /// How many of seqs 1..=last_seq are of those types (all of them for `*`).
    pub expected: Option<u64>,
    /// How long after the run's end the last missing event arrived.
    pub catch_up: Duration,
    /// Seqs from 1 to `last_seq` that never arrived: (count, first few).
    pub missing: (u64, Vec<u64>),
    /// All of them.
    pub missing_seqs: Vec<u64>,
    /// Order breaks per task or agent: (count, examples).
    pub order: (u64, Vec<String>),
    /// task.*/offer.* events that arrived after a later `activity.*` event naming
    /// the same task (allowed: activities are not ordered with their task): (count,
    /// examples).
    pub activity_ahead: (u64, Vec<String>),
    /// Bad signatures or bodies: (count, examples).
    pub bad: (u64, Vec<String>),
    /// Created tasks whose `task.created` never arrived: (count, examples).
    pub tasks_unseen: (u64, Vec<String>),
    /// Tasks whose `task.created` arrived.
    pub tasks_created: u64,
    /// Tasks whose `task.completed` arrived.
    pub tasks_completed: u64,
    /// The hub's `switchboard_webhook_*` counters at the end (`/metrics`), as
    /// `name value` (deliveries, failures, retries, offers expired before sending).
    pub hub_counters: Vec<(String, f64)>,
    /// Errors of the harness's own (reading the last seq).
    pub errors: Vec<String>,
}

impl HookOutcome {
    /// Offers the hub did not send because their deadline passed first
    /// (`switchboard_webhook_expired_total`).
    pub fn offers_expired(&self) -> u64 {
        self.hub_counter("switchboard_webhook_expired_total")
            .unwrap_or(0.0) as u64
    }

    /// One of the hub's counters.
    pub fn hub_counter(&self, name: &str) -> Option<f64> {
        self.hub_counters
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
    }
}

impl Receiver {
    /// Binds 127.0.0.1 on a free port with a fresh secret and starts serving; the
    /// endpoint takes `types`.
    pub async fn start(types: Vec<String>, linger_ms: Option<u64>) -> std::io::Result<Receiver> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let key = fresh_key();
        let endpoint = Endpoint {
            url: format!("http://{addr}{PATH}"),
            secret: format!("whsec_{}", STANDARD.encode(&key)),
            types: types.clone(),
            linger_ms,
        };
        let inner = Arc::new(Inner {
            key,
            types,
            connections: Default::default(),
            seen: Mutex::new(Seen::default()),
            shared: OnceLock::new(),
        });
        let app = Router::new()
            .route(PATH, post(deliver))
            .with_state(inner.clone());
        let counted = inner.clone();
        let listener = listener.tap_io(move |tcp| {
            counted
                .connections
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // The answer goes out at once (as a receiver in production should).
            let _ = tcp.set_nodelay(true);
        });
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Receiver {
            addr,
            endpoint,
            inner,
            server,
        })
    }

    /// The config entry naming it.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Gives it the run's clock; before this, offers are not timed.
    pub fn attach(&self, shared: Arc<Shared>) {
        let _ = self.inner.shared.set(shared);
    }

    /// Asks the hub for its last seq, waits (at most `limit`) until every event up to
    /// it has arrived, and reports. `created` are the run's task ids; `hub` the nodes
    /// (the first is asked for the last seq; the counters are summed over all, since
    /// each node counts what it delivered). `expected`: with type patterns, the seqs of
    /// the matching types (from the stream reader, up to at least the last seq);
    /// `None` for every type (every seq from 1).
    pub async fn finish(
        &self,
        hub: &[SocketAddr],
        token: &str,
        created: &[(u64, String)],
        expected: Option<&HashSet<u64>>,
        limit: Duration,
    ) -> HookOutcome {
        let mut out = HookOutcome::default();
        let started = Instant::now();
        let Some(&first) = hub.first() else {
            out.errors.push("no hub node to ask".into());
            return out;
        };
        let last = match last_seq(first, token).await {
            Ok(n) => Some(n),
            Err(e) => {
                out.errors
                    .push(format!("cannot read the hub's last event seq: {e}"));
                None
            }
        };
        out.last_seq = last;
        out.types = self.inner.types.clone();
        out.expected = last.map(|l| {
            (1..=l)
                .filter(|q| expected.is_none_or(|e| e.contains(q)))
                .count() as u64
        });
        if let Some(last) = last {
            // Polled: the deliveries come on the receiver's own tasks.
            let wanted = |q: &u64| expected.is_none_or(|e| e.contains(q));
            while started.elapsed() < limit {
                let have = {
                    let s = self.lock();
                    (1..=last).filter(wanted).all(|q| s.seqs.contains(&q))
                };
                if have {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        out.catch_up = started.elapsed();
        for &node in hub {
            for (name, v) in hub_counters(node).await {
                match out.hub_counters.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, t)) => *t += v,
                    None => out.hub_counters.push((name, v)),
                }
            }
        }
        let mut s = self.lock();
        out.hists.merge(&s.hists);
        out.deliveries = s.deliveries;
        out.connections = self
            .inner
            .connections
            .load(std::sync::atomic::Ordering::Relaxed);
        out.distinct = s.seqs.len() as u64;
        out.duplicates = s.duplicates;
        if let Some(last) = last {
            let mut n = 0;
            let mut first = Vec::new();
            for q in (1..=last).filter(|q| expected.is_none_or(|e| e.contains(q))) {
                if !s.seqs.contains(&q) {
                    out.missing_seqs.push(q);
                    n += 1;
                    if first.len() < SAMPLES {
                        first.push(q);
                    }
                }
            }
            out.missing = (n, first);
        }
        if s.epochs.len() > 1 {
            let mut e: Vec<&String> = s.epochs.iter().collect();
            e.sort();
            out.errors.push(format!("events of several epochs: {e:?}"));
        }
        out.order = (s.order_breaks, std::mem::take(&mut s.order_samples));
        out.bad = (s.bad, std::mem::take(&mut s.bad_samples));
        out.activity_ahead = (s.activity_ahead, std::mem::take(&mut s.activity_samples));
        // Every task's task.created, when that type is wanted.
        let unseen: Vec<&String> = created
            .iter()
            .map(|(_, id)| id)
            .filter(|id| matches(&self.inner.types, "task.created") && !s.created.contains(*id))
            .collect();
        out.tasks_unseen = (
            unseen.len() as u64,
            unseen.iter().take(SAMPLES).map(|s| s.to_string()).collect(),
        );
        out.tasks_created = s.created.len() as u64;
        // First offers whose task.created was not of the types: timed from the
        // creates' answers.
        let seq_of: HashMap<&str, u64> = created.iter().map(|(q, id)| (id.as_str(), *q)).collect();
        let shared = self.inner.shared.get();
        for (t, at) in std::mem::take(&mut s.unresolved_offers) {
            let sent = seq_of
                .get(t.as_str())
                .and_then(|q| shared.and_then(|sh| sh.sent_ns(*q)));
            if let Some(sent) = sent {
                out.hists
                    .get(H_CREATE_TO_HOOK_OFFER)
                    .record_ns_span(sent, at);
            }
        }
        out.tasks_completed = s.completed.len() as u64;
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Seen> {
        // A panic while holding it would only lose the receiver's own counts.
        self.inner.seen.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// 32 key bytes from the system clock, the process id and the harness's generator:
/// a test secret, not a production one.
fn fresh_key() -> Vec<u8> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut r = crate::rng::Rng::new(nanos ^ (u64::from(std::process::id()) << 40));
    (0..4).flat_map(|_| r.next_u64().to_le_bytes()).collect()
}

/// One delivery.
async fn deliver(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let now_ns = inner.shared.get().map(|s| s.now_ns());
    let header = |k: &str| headers.get(k).and_then(|v| v.to_str().ok());
    let verdict = verify(
        &inner.key,
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
        &body,
    );
    let parsed = serde_json::from_slice::<Value>(&body);
    let mut s = inner.seen.lock().unwrap_or_else(|p| p.into_inner());
    s.deliveries += 1;
    if let Err(why) = verdict {
        s.bad(why);
    }
    let Ok(v) = parsed else {
        s.bad("a body that is not JSON".into());
        return StatusCode::NO_CONTENT;
    };
    let (Some(seq), Some(ty), Some(id)) = (v["seq"].as_u64(), v["type"].as_str(), v["id"].as_str())
    else {
        s.bad(format!("an envelope without seq, type or id: {v}"));
        return StatusCode::NO_CONTENT;
    };
    if header("webhook-id") != Some(id) {
        s.bad(format!(
            "webhook-id {:?} is not the event's id {id:?}",
            header("webhook-id")
        ));
    }
    if let Some(e) = v["epoch"].as_str() {
        if !s.epochs.contains(e) {
            s.epochs.insert(e.to_owned());
        }
    }
    if !matches(&inner.types, ty) {
        s.bad(format!(
            "event {id}: type {ty} is not of the endpoint's types"
        ));
    }
    if !s.seqs.insert(seq) {
        // A repeat: allowed, counted, and not an order break (a retry may follow).
        s.duplicates += 1;
        return StatusCode::NO_CONTENT;
    }
    let d = &v["data"];
    let task = d["task_id"]
        .as_str()
        .or_else(|| d["task"]["task_id"].as_str());
    // "Events of one task" are the task.* and offer.* events (EventData::task_id);
    // an activity.created names its task too but is not ordered with it.
    let of_task = ty.starts_with("task.") || ty.starts_with("offer.");
    if let (Some(t), false) = (task, of_task) {
        s.activity_of_task
            .insert(t.to_owned(), (seq, ty.to_owned()));
    }
    if let (Some(t), true) = (task, of_task) {
        if let Some((aseq, aty)) = s.activity_of_task.get(t).cloned() {
            if aseq > seq {
                s.activity_ahead += 1;
                if s.activity_samples.len() < SAMPLES {
                    s.activity_samples
                        .push(format!("task {t}: {ty} seq {seq} after {aty} seq {aseq}"));
                }
            }
        }
        if let Some((prev, pty)) = s.last_of_task.insert(t.to_owned(), (seq, ty.to_owned())) {
            if prev > seq {
                s.order(format!("task {t}: {ty} seq {seq} after {pty} seq {prev}"));
            }
        }
    }
    if let Some(a) = d["agent_id"].as_str() {
        if let Some((prev, pty)) = s.last_of_agent.insert(a.to_owned(), (seq, ty.to_owned())) {
            if prev > seq {
                s.order(format!("agent {a}: {ty} seq {seq} after {pty} seq {prev}"));
            }
        }
    }
    match (ty, task) {
        ("task.created", Some(t)) => {
            s.created.insert(t.to_owned());
            let key = d["task"]["idempotency_key"].as_str().unwrap_or_default();
            if let Some(run_seq) = inner.shared.get().and_then(|sh| sh.seq_of(key)) {
                s.waiting_offer.insert(t.to_owned(), run_seq);
            }
        }
        // The first offer only.
        ("task.offered", Some(t)) if s.offered.insert(t.to_owned()) => {
            match s.waiting_offer.remove(t) {
                Some(q) => {
                    let sent = inner.shared.get().and_then(|sh| sh.sent_ns(q));
                    if let (Some(sent), Some(now)) = (sent, now_ns) {
                        s.hists
                            .get(H_CREATE_TO_HOOK_OFFER)
                            .record_ns_span(sent, now);
                    }
                }
                // Its task.created was not received (not of the types, or a task of
                // before the run): timed after the run if it is the run's.
                None => {
                    if let Some(now) = now_ns {
                        s.unresolved_offers.insert(t.to_owned(), now);
                    }
                }
            }
        }
        ("task.completed", Some(t)) => {
            s.completed.insert(t.to_owned());
        }
        _ => {}
    }
    StatusCode::NO_CONTENT
}

/// Checks the three Standard Webhooks headers against the body.
fn verify(
    key: &[u8],
    id: Option<&str>,
    ts: Option<&str>,
    sig: Option<&str>,
    body: &[u8],
) -> Result<(), String> {
    let (Some(id), Some(ts), Some(sig)) = (id, ts, sig) else {
        return Err("a delivery without webhook-id, webhook-timestamp or webhook-signature".into());
    };
    let Ok(t) = ts.parse::<u64>() else {
        return Err(format!("webhook-timestamp {ts:?} is not a number"));
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if now.abs_diff(t) > 300 {
        return Err(format!(
            "webhook-timestamp {t} is {}s from now",
            now.abs_diff(t)
        ));
    }
    let ok = sig
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .filter_map(|b64| STANDARD.decode(b64).ok())
        .any(|want| {
            let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
                return false;
            };
            mac.update(id.as_bytes());
            mac.update(b".");
            mac.update(ts.as_bytes());
            mac.update(b".");
            mac.update(body);
            mac.verify_slice(&want).is_ok()
        });
    if ok {
        Ok(())
    } else {
        Err(format!("event {id}: no signature verifies ({sig:?})"))
    }
}

/// The node's `switchboard_webhook_*_total` counters (summed over endpoints; there is one).
async fn hub_counters(hub: SocketAddr) -> Vec<(String, f64)> {
    let mut c = crate::httpc::HttpClient::new(hub);
    let Ok(r) = c.get("/metrics", None).await else {
        return Vec::new();
    };
    let mut out: Vec<(String, f64)> = Vec::new();
    for line in r.text().lines() {
        let Some(rest) = line.strip_prefix("switchboard_webhook_") else {
            continue;
        };
        let name = rest.split(['{', ' ']).next().unwrap_or_default();
        // Counters only: a gauge (the lag) is each node's own view, not a sum.
        if !name.ends_with("_total") {
            continue;
        }
        let Some(v) = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        let name = format!("switchboard_webhook_{name}");
        match out.iter_mut().find(|(n, _)| *n == name) {
            Some((_, t)) => *t += v,
            None => out.push((name, v)),
        }
    }
    out
}

/// The hub's newest event number: the `: epoch E after N` line a `GET /v1/events`
/// without a position starts with.
pub async fn last_seq(addr: SocketAddr, token: &str) -> Result<u64, String> {
    let read = async {
        let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let req = format!(
            "GET /v1/events HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\naccept: text/event-stream\r\n\r\n"
        );
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut r = BufReader::new(s);
        let mut line = String::new();
        loop {
            line.clear();
            match r.read_line(&mut line).await {
                Ok(0) => return Err("closed before the position line".to_owned()),
                Err(e) => return Err(e.to_string()),
                Ok(_) => {}
            }
            if line.starts_with("HTTP/") && !line.contains(" 200 ") {
                return Err(format!("refused: {}", line.trim()));
            }
            if let Some(rest) = line.trim().strip_prefix(": epoch ") {
                return rest
                    .rsplit_once(" after ")
                    .and_then(|(_, n)| n.trim().parse::<u64>().ok())
                    .ok_or_else(|| format!("an unexpected position line {:?}", line.trim()));
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .map_err(|_| "no position line within 5 s".to_owned())?
}

impl HookOutcome {
    /// The checks of the endpoint's deliveries, against the run's `first_offers` (of
    /// which `first_offers_timed` were matched by a `task.offered`) and completes.
    pub fn checks(
        &self,
        first_offers_timed: u64,
        first_offers: u64,
        completed: u64,
        offered: Option<&std::collections::HashSet<u64>>,
    ) -> Vec<Check> {
        let samples = |what: &str, (n, ex): &(u64, Vec<String>)| -> Vec<String> {
            let mut b = ex.clone();
            if *n as usize > b.len() {
                b.push(format!("{n} {what} in all"));
            }
            b
        };
        let mut every = self.errors.clone();
        let (missing, first) = &self.missing;
        // The hub does not send an offer past its deadline (the specification's rule: a
        // call bridged to an expired offer is wrong); it counts each one. A missing seq
        // is excused only if it is a `task.offered` (known when a stream reader read the
        // run from seq 1), and only up to that count: one more is an event lost.
        let expired = self.offers_expired();
        let (not_offers, offers) = match offered {
            Some(o) => {
                let n = self.missing_seqs.iter().filter(|q| o.contains(q)).count() as u64;
                (*missing - n, n)
            }
            None => (0, *missing),
        };
        if not_offers > 0 {
            let first: Vec<u64> = self
                .missing_seqs
                .iter()
                .filter(|q| offered.is_some_and(|o| !o.contains(q)))
                .take(SAMPLES)
                .copied()
                .collect();
            every.push(format!(
                "{not_offers} events other than task.offered never arrived (first: {first:?})"
            ));
        }
        if offers > expired {
            every.push(format!(
            "{missing} of seqs 1..={} (of the types {:?}) never arrived (first: {first:?}); waited {:.1} s after the run; the hub counts only {expired} offers not sent because their deadline had passed",
            self.last_seq.unwrap_or(0),
            self.types,
            self.catch_up.as_secs_f64()
        ));
        }
        every.extend(samples(
            "created tasks without task.created",
            &self.tasks_unseen,
        ));
        let wants = |ty: &str| matches(&self.types, ty);
        if wants("task.offered") && first_offers_timed + expired < first_offers {
            every.push(format!(
            "{first_offers} first offers, {first_offers_timed} task.offered of this run's tasks received, {expired} recorded expired by the hub"
        ));
        }
        if wants("task.completed") && self.tasks_completed < completed {
            every.push(format!(
                "{completed} tasks completed, {} task.completed received",
                self.tasks_completed
            ));
        }
        vec![
            Check::from_breaches(
                "every webhook delivery carried a valid signature and an envelope",
                format!(
                    "{} deliveries, HMAC-SHA256 checked by the receiver",
                    self.deliveries
                ),
                &samples("bad deliveries", &self.bad),
            ),
            Check::from_breaches(
                "the webhook endpoint received every event (no gap up to the hub's last seq) and every task's",
                format!(
                    "{} distinct events of {} (seqs 1..={}, types {}), {} repeats (at least once), {} tasks' task.created",
                    self.distinct,
                    self.expected.map_or("?".into(), |n| n.to_string()),
                    self.last_seq.unwrap_or(0),
                    self.types.join(","),
                    self.duplicates,
                    self.tasks_created,
                ),
                &every,
            ),
            Check::from_breaches(
                "webhook deliveries in order per task and per agent",
                "first arrivals of each seq; a task's events are its task.* and offer.*".into(),
                &samples("order breaks", &self.order),
            ),
        ]
    }

    /// What the endpoint saw that is allowed but worth knowing.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = vec![format!(
            "webhook endpoint: {} deliveries over {} connections, {} distinct events, {} repeats; every event up to seq {} in {:.0} ms after the run",
            self.deliveries,
            self.connections,
            self.distinct,
            self.duplicates,
            self.last_seq.map_or("?".into(), |n| n.to_string()),
            self.catch_up.as_secs_f64() * 1e3
        )];
        if !self.hub_counters.is_empty() {
            let list: Vec<String> = self
                .hub_counters
                .iter()
                .map(|(n, v)| format!("{} {v}", n.trim_start_matches("switchboard_")))
                .collect();
            notes.push(format!("hub /metrics: {}", list.join(", ")));
        }
        let (n, ex) = &self.activity_ahead;
        if *n > 0 {
            notes.push(format!(
            "webhook: {n} task.*/offer.* events arrived after a later activity.* event of the same task (activities are not ordered with their task), e.g. {}",
            ex.first().cloned().unwrap_or_default()
        ));
        }
        notes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_signature_verifies_and_a_changed_body_or_key_does_not() {
        let key = fresh_key();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs()
            .to_string();
        let body = br#"{"id":"e-1","seq":1}"#;
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("any key");
        mac.update(format!("e-1.{now}.").as_bytes());
        mac.update(body);
        let good = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
        // During a rotation the header carries another secret's signature too.
        let two = format!("v1,AAAA {good}");
        assert_eq!(
            verify(&key, Some("e-1"), Some(&now), Some(&two), body),
            Ok(())
        );
        assert!(verify(&key, Some("e-1"), Some(&now), Some(&good), b"{}").is_err());
        assert!(verify(&key, Some("e-2"), Some(&now), Some(&good), body).is_err());
        assert!(verify(&[7; 32], Some("e-1"), Some(&now), Some(&good), body).is_err());
        assert!(verify(&key, Some("e-1"), None, Some(&good), body).is_err());
    }

    #[test]
    fn the_specification_example_verifies() {
        // The Standard Webhooks reference example (also in protocol/webhooks.md).
        let key = STANDARD
            .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .expect("base64");
        let body = br#"{"test": 2432232314}"#;
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let sig = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        // Its timestamp is years old: only the HMAC is compared here.
        let mac_ok = |b: &[u8]| {
            let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("any key");
            mac.update(format!("{id}.1614265330.").as_bytes());
            mac.update(b);
            STANDARD.encode(mac.finalize().into_bytes()) == sig[3..]
        };
        assert!(mac_ok(body));
        assert!(!mac_ok(b"{}"));
        // And the whole check refuses an old timestamp with a reason.
        let e = verify(&key, Some(id), Some("1614265330"), Some(sig), body).unwrap_err();
        assert!(e.contains("from now"), "{e}");
    }
}
