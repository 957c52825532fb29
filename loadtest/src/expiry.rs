//! The `expiry` scenario: an offer-expiry storm. N agents go Ready and never answer;
//! N/2 tasks are created at once; every offer expires at its deadline, its agent goes
//! Not Ready (`missed_offer`), and the task is offered to one of the agents still
//! Ready, where it expires again. So every task is offered exactly twice, every agent
//! exactly once. Measures how late the expiries come against the hub's own deadlines,
//! and checks each step.

use crate::client::{self, Ws};
use crate::cluster::{Target, raise_nofile_limit};
use crate::httpc::{HttpClient, created_task_id};
use crate::report::{Check, Failure, Report};
use crate::scenario::{self, QUEUE, RunHub};
use crate::stats::HistSet;
use crate::wire::{OfferMsg, rfc3339_ms};
use futures_util::StreamExt;
use serde::Deserialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use switchboard::auth::Role;
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::tungstenite::Message;

/// `offer_ended` (expired) arrival minus the offer's deadline.
pub const H_LATE: &str = "expiry: offer_ended - deadline";
/// The missed_offer state's `since` minus the deadline (hub clock, ms precision).
pub const H_HUB_LATE: &str = "expiry: hub since - deadline";
/// The second offer's making (its deadline minus its timeout) minus the first offer's
/// deadline (hub clock, ms precision).
pub const H_REOFFER: &str = "deadline -> re-offer made";
/// The second offer's arrival minus the first offer's deadline.
pub const H_REOFFER_SEEN: &str = "deadline -> re-offer arrives";
/// Create request to the first offer's arrival.
pub const H_FIRST_OFFER: &str = "create -> first offer";
/// The HTTP create round trip.
pub const H_CREATE: &str = "POST /v1/tasks";

/// The `expiry` scenario's options.
#[derive(Clone, Debug)]
pub struct ExpiryOpts {
    /// The hub.
    pub target: Target,
    /// Agents (tasks: half as many).
    pub agents: usize,
    /// The started hub's offer timeout.
    pub offer_timeout: Duration,
    /// HTTP connections creating the tasks.
    pub http_conns: usize,
    /// Loopback source addresses the sockets are spread over.
    pub source_addrs: usize,
    /// Agents logging in at once.
    pub connect_concurrency: usize,
    /// A progress line a second on stderr.
    pub progress: bool,
    /// Keep the started hub's files.
    pub keep_files: bool,
}

impl ExpiryOpts {
    /// The defaults of `loadtest expiry`.
    pub fn new(target: Target) -> ExpiryOpts {
        ExpiryOpts {
            target,
            agents: 10_000,
            offer_timeout: Duration::from_secs(2),
            http_conns: 16,
            source_addrs: 8,
            connect_concurrency: 128,
            progress: false,
            keep_files: false,
        }
    }

    /// Tasks created: half the agents.
    pub fn tasks(&self) -> usize {
        self.agents / 2
    }

    fn check(&self) -> Result<(), Failure> {
        if self.agents < 2 || self.agents > 60_000 {
            return Err(Failure::new("--agents must be 2 to 60000"));
        }
        if self.offer_timeout < Duration::from_millis(100)
            || self.offer_timeout > Duration::from_secs(600)
        {
            return Err(Failure::new("--offer-timeout must be 0.1 to 600 seconds"));
        }
        Ok(())
    }

    fn params(&self) -> serde_json::Value {
        serde_json::json!({
            "agents": self.agents,
            "tasks": self.tasks(),
            "offer_timeout_secs": self.offer_timeout.as_secs_f64(),
            "http_conns": self.http_conns,
            "source_addrs": self.source_addrs,
        })
    }
}

/// The parts of the hub's frames this scenario reads.
#[derive(Debug, Deserialize)]
struct EFrame {
    #[serde(rename = "type")]
    ty: String,
    #[serde(default)]
    re: Option<String>,
    #[serde(default)]
    offer: Option<OfferMsg>,
    #[serde(default)]
    offer_id: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    agent: Option<EAgent>,
    #[serde(default)]
    code: Option<String>,
}

#[derive(Debug, Deserialize)]
struct EAgent {
    status: String,
    #[serde(default)]
    reason: Option<String>,
    since: String,
}

/// One offer one agent received.
#[derive(Clone, Debug)]
struct Seen {
    offer_id: String,
    task_id: String,
    seq: Option<u64>,
    n: u32,
    deadline_ms: Option<i64>,
    timeout_ms: u64,
    recv_ns: u64,
    recv_wall_us: i64,
    /// `offer_ended`: reason and arrival (wall µs).
    ended: Option<(String, i64)>,
    /// The missed_offer state that followed: its `since` (ms).
    missed_since_ms: Option<i64>,
}

#[derive(Debug, Default)]
struct AgentOut {
    id: String,
    offers: Vec<Seen>,
    /// Offers that arrived while the agent already had had one (it never set itself
    /// Ready again).
    second: Vec<String>,
    error: Option<String>,
    unexpected: Vec<String>,
    frames: u64,
    /// Frames read before the storm's end ([`Live::window_end_ns`]), and their text
    /// in bytes: what the hub wrote to this agent in the window of the CPU figure.
    window_frames: u64,
    window_bytes: u64,
}

struct Live {
    t0: Instant,
    ready: AtomicUsize,
    failed: AtomicUsize,
    created: AtomicU64,
    offers: AtomicU64,
    expired: AtomicU64,
    missed: AtomicU64,
    /// Create request instants by sequence number (ns since t0, plus one).
    create_ns: Vec<AtomicU64>,
    key_prefix: String,
    /// When the storm ended (ns since t0; `u64::MAX` until it has).
    window_end_ns: AtomicU64,
}

impl Live {
    fn now_ns(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }
}

struct Ctx {
    addr: SocketAddr,
    live: Arc<Live>,
    gate: Arc<Semaphore>,
    spread: usize,
}

fn note(v: &mut Vec<String>, what: String) {
    if v.len() < 5 {
        v.push(what);
    }
}

async fn login(ctx: &Ctx, idx: usize, token: &str) -> Result<Ws, String> {
    let _permit = ctx.gate.acquire().await.map_err(|e| e.to_string())?;
    client::agent_ready(ctx.addr, token, client::source_addr(idx, ctx.spread)).await
}

async fn agent(
    ctx: Arc<Ctx>,
    idx: usize,
    token: String,
    mut close: watch::Receiver<bool>,
) -> AgentOut {
    let mut out = AgentOut {
        id: format!("lt-exp-{idx}"),
        ..AgentOut::default()
    };
    let mut ws = match login(&ctx, idx, &token).await {
        Ok(ws) => ws,
        Err(e) => {
            out.error = Some(format!("{}: {e}", out.id));
            ctx.live.failed.fetch_add(1, Ordering::Relaxed);
            return out;
        }
    };
    let live = ctx.live.clone();
    live.ready.fetch_add(1, Ordering::Relaxed);
    loop {
        tokio::select! {
            biased;
            _ = close.changed() => break,
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    let wall = client::wall_us();
                    let now_ns = live.now_ns();
                    out.frames += 1;
                    if now_ns <= live.window_end_ns.load(Ordering::Relaxed) {
                        out.window_frames += 1;
                        out.window_bytes += t.as_str().len() as u64;
                    }
                    let f: EFrame = match serde_json::from_str(t.as_str()) {
                        Ok(f) => f,
                        Err(e) => {
                            note(&mut out.unexpected, format!("{}: unreadable frame ({e})", out.id));
                            continue;
                        }
                    };
                    match f.ty.as_str() {
                        "offer" => {
                            let Some(o) = f.offer else {
                                note(&mut out.unexpected, format!("{}: offer without an offer", out.id));
                                continue;
                            };
                            live.offers.fetch_add(1, Ordering::Relaxed);
                            if !out.offers.is_empty() {
                                out.second.push(format!(
                                    "{}: offer {} (task {}) after its missed offer, never having set itself Ready",
                                    out.id, o.offer_id, o.task.task_id
                                ));
                            }
                            let seq = o
                                .task
                                .idempotency_key
                                .as_deref()
                                .and_then(|k| k.strip_prefix(live.key_prefix.as_str()))
                                .and_then(|s| s.parse().ok());
                            out.offers.push(Seen {
                                offer_id: o.offer_id,
                                task_id: o.task.task_id,
                                seq,
                                n: o.task.offers,
                                deadline_ms: rfc3339_ms(&o.deadline),
                                timeout_ms: o.timeout_ms,
                                recv_ns: now_ns,
                                recv_wall_us: wall,
                                ended: None,
                                missed_since_ms: None,
                            });
                        }
                        "offer_ended" => {
                            let id = f.offer_id.unwrap_or_default();
                            let reason = f.reason.unwrap_or_default();
                            match out.offers.iter_mut().rev().find(|s| s.offer_id == id) {
                                Some(s) if s.ended.is_none() => {
                                    s.ended = Some((reason.clone(), wall));
                                    if reason == "expired" {
                                        live.expired.fetch_add(1, Ordering::Relaxed);
                                    }
                                }
                                Some(_) => note(&mut out.unexpected, format!("{}: offer {id} ended twice", out.id)),
                                None => note(&mut out.unexpected, format!("{}: offer_ended for an offer never received: {id}", out.id)),
                            }
                        }
                        "state" => {
                            let Some(a) = f.agent else { continue };
                            if a.status == "not_ready" && a.reason.as_deref() == Some("missed_offer") {
                                match out.offers.last_mut() {
                                    Some(s) if s.missed_since_ms.is_none() => {
                                        s.missed_since_ms = rfc3339_ms(&a.since);
                                        live.missed.fetch_add(1, Ordering::Relaxed);
                                    }
                                    _ => note(&mut out.unexpected, format!("{}: missed_offer state with no offer to have missed", out.id)),
                                }
                            }
                        }
                        "goodbye" => {
                            out.error = Some(format!("{}: goodbye {}", out.id, f.reason.unwrap_or_default()));
                            break;
                        }
                        other => note(
                            &mut out.unexpected,
                            format!("{}: {other} {:?} {:?}", out.id, f.re, f.code),
                        ),
                    }
                }
                Some(Ok(Message::Close(c))) => {
                    out.error = Some(format!("{}: closed by the hub: {c:?}", out.id));
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    out.error = Some(format!("{}: websocket error: {e}", out.id));
                    break;
                }
                None => {
                    out.error = Some(format!("{}: connection closed", out.id));
                    break;
                }
            },
        }
    }
    if out.error.is_none() {
        client::close(&mut ws).await;
    }
    out
}

struct Created {
    ids: Vec<(u64, String)>,
    errors: Vec<String>,
    error_count: u64,
    hists: HistSet,
}

/// Creates tasks `next..total` as fast as one connection allows.
async fn creator(
    addr: SocketAddr,
    token: Arc<str>,
    live: Arc<Live>,
    next: Arc<AtomicU64>,
    total: u64,
) -> Created {
    let mut c = HttpClient::new(addr);
    let mut out = Created {
        ids: Vec::new(),
        errors: Vec::new(),
        error_count: 0,
        hists: HistSet::default(),
    };
    loop {
        let seq = next.fetch_add(1, Ordering::Relaxed);
        if seq >= total {
            break;
        }
        let body = format!(
            r#"{{"channel":"chat","queue":"{QUEUE}","customer":{{"chat_handle":"lt-exp-visitor-{seq}"}},"idempotency_key":"{}{seq}"}}"#,
            live.key_prefix
        );
        let sent = live.now_ns();
        if let Some(slot) = live.create_ns.get(seq as usize) {
            slot.store(sent + 1, Ordering::Release);
        }
        let r = c
            .post_json("/v1/tasks", Some(&token), body.as_bytes())
            .await;
        let done = live.now_ns();
        match created_task_id(r, seq) {
            Ok(id) => {
                out.hists.get(H_CREATE).record_ns_span(sent, done);
                live.created.fetch_add(1, Ordering::Relaxed);
                out.ids.push((seq, id));
            }
            Err(e) => {
                out.error_count += 1;
                note(&mut out.errors, e);
            }
        }
    }
    out
}

async fn progress(live: Arc<Live>, stop: watch::Receiver<bool>, tasks: usize) {
    scenario::every_second(live.t0, stop, move || {
        format!(
            "created {}/{tasks} offers {} expired {} missed_offer states {}",
            live.created.load(Ordering::Relaxed),
            live.offers.load(Ordering::Relaxed),
            live.expired.load(Ordering::Relaxed),
            live.missed.load(Ordering::Relaxed),
        )
    })
    .await
}

/// Runs the `expiry` scenario.
pub async fn run_expiry(opts: ExpiryOpts) -> Result<Report, Failure> {
    opts.check()?;
    let nofile = raise_nofile_limit();
    let setup = scenario::setup(4096, opts.offer_timeout);
    let mut hub = RunHub::start(&opts.target, setup).await?;
    let result = drive(&opts, &mut hub, nofile).await;
    hub.finish(result, opts.keep_files).await
}

async fn drive(
    opts: &ExpiryOpts,
    hub: &mut RunHub,
    nofile: Option<u64>,
) -> Result<Report, Failure> {
    let harness_cpu0 = crate::hubproc::self_cpu_secs();
    let n = opts.agents;
    let tasks = opts.tasks();
    let live = Arc::new(Live {
        t0: Instant::now(),
        ready: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        created: AtomicU64::new(0),
        offers: AtomicU64::new(0),
        expired: AtomicU64::new(0),
        missed: AtomicU64::new(0),
        create_ns: (0..tasks).map(|_| AtomicU64::new(0)).collect(),
        key_prefix: format!("lt-{}-", scenario::nonce()),
        window_end_ns: AtomicU64::new(u64::MAX),
    });
    let ctx = Arc::new(Ctx {
        addr: hub.addr,
        live: live.clone(),
        gate: Arc::new(Semaphore::new(opts.connect_concurrency.max(1))),
        spread: opts.source_addrs,
    });
    let queues = Some(vec![QUEUE.to_owned()]);
    let (close_tx, close_rx) = watch::channel(false);
    let rss_before_login = hub.rss_kib();
    let login_started = Instant::now();
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let token = hub.token(&format!("lt-exp-{i}"), Role::Agent, queues.clone());
        handles.push(tokio::spawn(agent(ctx.clone(), i, token, close_rx.clone())));
    }
    let login_limit = Duration::from_secs(30 + n as u64 / 100);
    let logged = hub
        .wait_for(login_limit, || {
            live.ready.load(Ordering::Relaxed) + live.failed.load(Ordering::Relaxed) >= n
        })
        .await;
    let ready = live.ready.load(Ordering::Relaxed);
    if !matches!(logged, Ok(true)) || ready < n {
        let _ = close_tx.send(true);
        let (outs, lost) = scenario::join_all(handles, Duration::from_secs(10)).await;
        let mut why: Vec<String> = outs.into_iter().filter_map(|o| o.error).take(5).collect();
        why.extend(lost.into_iter().take(5));
        return Err(match logged {
            Err(f) => f,
            Ok(_) => Failure::new(format!(
                "only {ready} of {n} agents went Ready within {} s:\n  {}",
                login_limit.as_secs(),
                why.join("\n  ")
            )),
        });
    }
    let login_secs = login_started.elapsed().as_secs_f64();
    let rss_per_conn = rss_before_login
        .zip(hub.rss_kib())
        .map(|(before, after)| after.saturating_sub(before) as f64 / n as f64);
    if opts.progress {
        eprintln!("{n} agents Ready in {login_secs:.2} s; creating {tasks} tasks at once");
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let prog = opts
        .progress
        .then(|| tokio::spawn(progress(live.clone(), stop_rx, tasks)));

    // The storm: every task at once.
    let hub_cpu0 = hub.cpu_secs();
    let integration: Arc<str> = hub.integration_token().into();
    let next = Arc::new(AtomicU64::new(0));
    let create_start = live.now_ns();
    let creators: Vec<_> = (0..opts.http_conns.max(1))
        .map(|_| {
            tokio::spawn(creator(
                hub.addr,
                integration.clone(),
                live.clone(),
                next.clone(),
                tasks as u64,
            ))
        })
        .collect();
    let mut created: Vec<(u64, String)> = Vec::with_capacity(tasks);
    let mut create_errors = Vec::new();
    let mut create_error_count = 0u64;
    let mut hists = HistSet::default();
    for c in creators {
        match c.await {
            Ok(c) => {
                created.extend(c.ids);
                create_errors.extend(c.errors);
                create_error_count += c.error_count;
                hists.merge(&c.hists);
            }
            Err(e) => {
                create_error_count += 1;
                create_errors.push(format!("a creator failed: {e}"));
            }
        }
    }
    let create_secs = (live.now_ns() - create_start) as f64 / 1e9;
    let want = 2 * created.len() as u64;
    let limit = opts.offer_timeout * 3 + Duration::from_secs(30);
    let all_expired = hub
        .wait_for(limit, || {
            live.expired.load(Ordering::Relaxed) >= want
                && live.missed.load(Ordering::Relaxed) >= want
        })
        .await?;
    let storm_end_ns = live.now_ns();
    live.window_end_ns.store(storm_end_ns, Ordering::Relaxed);
    let storm_secs = (storm_end_ns - create_start) as f64 / 1e9;
    let hub_cpu = hub.cpu_secs().zip(hub_cpu0).map(|(b, a)| b - a);
    // Anything more (a third offer, a stray frame) would come now.
    tokio::time::sleep(Duration::from_millis(500).max(opts.offer_timeout / 4)).await;
    let _ = close_tx.send(true);
    let (outs, lost) = scenario::join_all(handles, Duration::from_secs(30)).await;
    let _ = stop_tx.send(true);
    if let Some(p) = prog {
        let _ = p.await;
    }
    if !hub.spawned() {
        // Leave a running hub as it was: its queue empty.
        let mut c = HttpClient::new(hub.addr);
        for (_, id) in &created {
            let _ = c
                .post_json(&format!("/v1/tasks/{id}/cancel"), Some(&integration), b"{}")
                .await;
        }
    }
    let harness_cpu = crate::hubproc::self_cpu_secs() - harness_cpu0;

    // Per task, in the hub's offer numbering.
    let mut by_task: HashMap<&str, Vec<(&Seen, &str)>> = HashMap::new();
    for o in &outs {
        for s in &o.offers {
            by_task
                .entry(s.task_id.as_str())
                .or_default()
                .push((s, o.id.as_str()));
        }
    }
    let (mut two_breaches, mut end_breaches, mut missed_breaches, mut early, mut reoffer_breaches) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut reoffers = 0u64;
    let mut foreign = 0u64;
    for (_, id) in &created {
        let list = by_task.get_mut(id.as_str());
        let k = list.as_ref().map_or(0, |l| l.len());
        let Some(list) = list else {
            note(&mut two_breaches, format!("task {id} never offered"));
            continue;
        };
        list.sort_by_key(|(s, _)| s.n);
        let ns: Vec<u32> = list.iter().map(|(s, _)| s.n).collect();
        if k != 2 || ns != [1, 2] || list[0].1 == list[1].1 {
            let who: Vec<&str> = list.iter().map(|(_, a)| *a).collect();
            note(
                &mut two_breaches,
                format!("task {id}: {k} offers numbered {ns:?} to {who:?}"),
            );
            continue;
        }
        let (a, b) = (list[0].0, list[1].0);
        reoffers += 1;
        match (a.deadline_ms, b.deadline_ms) {
            (Some(d1), Some(d2)) => {
                let made2 = d2 - b.timeout_ms as i64;
                if made2 < d1 {
                    note(
                        &mut reoffer_breaches,
                        format!(
                            "task {id}: offered again at {made2} ms, before its first offer's deadline {d1} ms"
                        ),
                    );
                }
                hists
                    .get(H_REOFFER)
                    .record_us((made2 - d1).max(0) as u64 * 1000);
                hists
                    .get(H_REOFFER_SEEN)
                    .record_us((b.recv_wall_us - d1 * 1000).max(0) as u64);
            }
            _ => note(
                &mut reoffer_breaches,
                format!("task {id}: unreadable deadlines"),
            ),
        }
    }
    for o in &outs {
        for s in &o.offers {
            if s.seq.is_none() {
                foreign += 1;
            }
            if s.n == 1 {
                if let Some(sent) = s
                    .seq
                    .and_then(|q| live.create_ns.get(q as usize))
                    .map(|c| c.load(Ordering::Acquire))
                    .filter(|c| *c > 0)
                {
                    hists.get(H_FIRST_OFFER).record_ns_span(sent - 1, s.recv_ns);
                }
            }
            let Some(deadline) = s.deadline_ms else {
                note(
                    &mut end_breaches,
                    format!("{}: offer {} has no readable deadline", o.id, s.offer_id),
                );
                continue;
            };
            match &s.ended {
                Some((reason, at)) if reason == "expired" => {
                    hists
                        .get(H_LATE)
                        .record_us((at - deadline * 1000).max(0) as u64);
                    if *at < deadline * 1000 {
                        note(
                            &mut early,
                            format!(
                                "{}: offer {} ended {} µs before its deadline",
                                o.id,
                                s.offer_id,
                                deadline * 1000 - at
                            ),
                        );
                    }
                }
                Some((reason, _)) => note(
                    &mut end_breaches,
                    format!("{}: offer {} ended {reason}", o.id, s.offer_id),
                ),
                None => note(
                    &mut end_breaches,
                    format!("{}: offer {} never ended", o.id, s.offer_id),
                ),
            }
            match s.missed_since_ms {
                Some(since) => {
                    hists
                        .get(H_HUB_LATE)
                        .record_us((since - deadline).max(0) as u64 * 1000);
                    if since < deadline {
                        note(
                            &mut early,
                            format!(
                                "{}: missed_offer since {since} ms, before the deadline {deadline} ms",
                                o.id
                            ),
                        );
                    }
                }
                None => note(
                    &mut missed_breaches,
                    format!(
                        "{}: no not_ready/missed_offer state after offer {}",
                        o.id, s.offer_id
                    ),
                ),
            }
        }
    }
    let second: Vec<String> = outs.iter().flat_map(|o| o.second.clone()).collect();
    let offers_total: usize = outs.iter().map(|o| o.offers.len()).sum();
    let expired = live.expired.load(Ordering::Relaxed);
    let missed = live.missed.load(Ordering::Relaxed);

    let mut r = Report::new("expiry", opts.params(), hub.desc.clone());
    r.elapsed_secs = storm_secs;
    r.figure("agents", n as f64, "");
    r.figure("agents Ready in", login_secs, "s");
    r.figure("tasks created", created.len() as f64, "");
    r.figure("creation window", create_secs, "s");
    r.figure(
        "creates per second",
        created.len() as f64 / create_secs.max(1e-9),
        "/s",
    );
    r.figure("offers received", offers_total as f64, "");
    r.figure("re-offers (a task's second offer)", reoffers as f64, "");
    r.figure("offers expired (offer_ended expired)", expired as f64, "");
    r.figure("missed_offer states", missed as f64, "");
    r.figure("first create to last expiry", storm_secs, "s");
    if let Some(cpu) = hub_cpu {
        r.figure("hub CPU, creates to last expiry", cpu, "s");
        r.figure(
            "hub CPU per offer (create or re-offer, expiry)",
            1e6 * cpu / offers_total.max(1) as f64,
            "µs",
        );
    }
    r.figure("harness CPU, whole run", harness_cpu, "s");
    r.latencies = hists.summaries(&[
        H_LATE,
        H_HUB_LATE,
        H_REOFFER,
        H_REOFFER_SEEN,
        H_FIRST_OFFER,
        H_CREATE,
    ]);

    let mut conn: Vec<String> = outs.iter().filter_map(|o| o.error.clone()).collect();
    conn.extend(lost);
    r.checks.push(Check::from_breaches(
        "every agent went Ready and stayed connected",
        format!("{n} agents in {login_secs:.2} s"),
        &conn,
    ));
    let mut cb = create_errors;
    if create_error_count as usize > cb.len() {
        cb.push(format!("{create_error_count} create errors in all"));
    }
    r.checks.push(Check::from_breaches(
        "every create answered 201",
        format!("{} of {tasks} created in {create_secs:.2} s", created.len()),
        &cb,
    ));
    if !all_expired {
        two_breaches.push(format!(
            "after {:.0} s: {expired} expiries and {missed} missed_offer states of {want}",
            limit.as_secs_f64()
        ));
    }
    if foreign > 0 {
        two_breaches.push(format!("{foreign} offers of tasks this run did not create"));
    }
    r.checks.push(Check::from_breaches(
        "every task offered exactly twice, to two different agents (offers #1 and #2)",
        format!("{} tasks, {offers_total} offers", created.len()),
        &two_breaches,
    ));
    r.checks.push(Check::from_breaches(
        "every offer ended expired (offer_ended reason expired)",
        format!("{offers_total} offers, {expired} expired"),
        &end_breaches,
    ));
    r.checks.push(Check::from_breaches(
        "no offer expired before its deadline (client wall clock, hub's missed_offer since)",
        "arrival of offer_ended and the state's since against the deadline".into(),
        &early,
    ));
    r.checks.push(Check::from_breaches(
        "each expired offer's agent got state not_ready / missed_offer",
        format!("{missed} missed_offer states"),
        &missed_breaches,
    ));
    r.checks.push(Check::from_breaches(
        "each task re-offered only after its first offer's deadline",
        format!("{reoffers} re-offers"),
        &reoffer_breaches,
    ));
    r.checks.push(Check::from_breaches(
        "no agent offered a task after its missed_offer without setting itself Ready",
        format!("{n} agents"),
        &second,
    ));
    let unexpected: Vec<String> = outs.iter().flat_map(|o| o.unexpected.clone()).collect();
    r.checks.push(Check::from_breaches(
        "no unexpected frames",
        format!("{} frames", outs.iter().map(|o| o.frames).sum::<u64>()),
        &unexpected,
    ));
    if create_secs > opts.offer_timeout.as_secs_f64() {
        r.notes.push(format!(
            "creating the tasks took {create_secs:.2} s, longer than the offer timeout: expiries of early tasks overlapped later creates"
        ));
    }
    r.notes.push(
        "deadlines are RFC 3339 with milliseconds, truncated: lateness against them reads up to 1 ms high; the hub-side figures (state since, offer made) have millisecond steps".into(),
    );
    r.notes.push(format!(
        "the harness and the hub share this machine's {} CPUs; arrival times include the harness's delay in reading {n} sockets (harness used {harness_cpu:.2} CPU s)",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    ));
    if let Some(l) = nofile {
        r.notes.push(format!(
            "open-file limit {l}; sockets spread over {} source addresses",
            opts.source_addrs
        ));
    }
    // What the echo floor is set against, over the window of the hub CPU figure (first
    // create to last expiry): every frame the agents read in it (offers, offer_ended,
    // missed_offer states), and each create request and its response (all made in
    // it). The frame size is that of the websocket frames.
    r.floor_basis = hub_cpu.map(|cpu| {
        let (frames_read, bytes_read) = outs.iter().fold((0u64, 0u64), |(f, b), o| {
            (f + o.window_frames, b + o.window_bytes)
        });
        crate::floor::Basis {
            vs_connect: false,
            conns: n,
            frames: frames_read + 2 * created.len() as u64,
            window_secs: storm_secs,
            hub_cpu_secs: cpu,
            frame_bytes: (bytes_read / frames_read.max(1)) as usize,
            rss_per_conn_kib: rss_per_conn,
            latency: crate::floor::Basis::latency_of(&r, H_LATE),
        }
    });
    r.harness_cpu_secs = harness_cpu;
    r.hub_cpu_load_secs = hub_cpu;
    Ok(r)
}
