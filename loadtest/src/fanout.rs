//! The `fanout` scenario: one customer record watched by many agents while editor
//! agents save it at a steady rate. Measures how long a save takes to reach every
//! watcher, and checks that each acknowledged save reached every watcher exactly once,
//! in version order, and never its author.
//!
//! A run goes: start (or reach) the hub; create the customer over HTTP; connect the
//! subscribers (`get_customer`) and the editors (`reopen_customer`), from several
//! loopback source addresses; send the saves open-loop (save `k` is due at `k / rate`,
//! from editor `k % editors`, based on the newest version acknowledged so far); wait
//! for every reply and every notification; close; read the record's final version;
//! check.

use crate::client::{self, Lite, Ws};
use crate::cluster::{Target, raise_nofile_limit};
use crate::report::{Check, Failure, Report};
use crate::scenario::{self, QUEUE, RunHub};
use crate::stats::{Hist, HistSet};
use futures_util::{SinkExt, StreamExt};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use switchboard::auth::Role;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

/// Save sent to the notification's arrival, on every subscriber.
pub const H_NOTIFY: &str = "save -> each notification";
/// Save sent to the last subscriber's notification of it.
pub const H_LAST: &str = "save -> last subscriber";
/// Save sent to its reply.
pub const H_REPLY: &str = "save -> reply";
/// How late the saves went out against their schedule.
pub const H_LAG: &str = "save schedule lag";

/// The most saves one run may send.
pub const MAX_SAVES: u64 = 1_000_000;
/// The most sockets one run may open.
pub const MAX_SOCKETS: usize = 60_000;

/// The `fanout` scenario's options.
#[derive(Clone, Debug)]
pub struct FanoutOpts {
    /// The hub.
    pub target: Target,
    /// Agents watching the record (`get_customer`).
    pub subscribers: usize,
    /// Agents saving it (`reopen_customer`, then `update_customer`).
    pub editors: usize,
    /// Saves per second, over all editors.
    pub rate: f64,
    /// How long saves are sent for.
    pub duration: Duration,
    /// Loopback source addresses the sockets are spread over (127.0.0.2...); 0 for
    /// the kernel's choice.
    pub source_addrs: usize,
    /// Sockets logging in at once.
    pub connect_concurrency: usize,
    /// The started hub's `limits.send_queue` (`None`: every save plus 1024, so that
    /// no subscriber can overflow).
    pub send_queue: Option<usize>,
    /// A progress line a second on stderr.
    pub progress: bool,
    /// Keep the started hub's files.
    pub keep_files: bool,
}

impl FanoutOpts {
    /// The defaults of `loadtest fanout` against `target`.
    pub fn new(target: Target) -> FanoutOpts {
        FanoutOpts {
            target,
            subscribers: 1000,
            editors: 1,
            rate: 20.0,
            duration: Duration::from_secs(10),
            source_addrs: 8,
            connect_concurrency: 128,
            send_queue: None,
            progress: false,
            keep_files: false,
        }
    }

    /// How many saves the run sends.
    pub fn total_saves(&self) -> u64 {
        (self.rate * self.duration.as_secs_f64()).ceil() as u64
    }

    fn check(&self) -> Result<(), Failure> {
        let n = self.subscribers + self.editors;
        if self.subscribers == 0 || self.editors == 0 || n > MAX_SOCKETS {
            return Err(Failure::new(format!(
                "--subscribers and --editors must be at least 1, and at most {MAX_SOCKETS} in all"
            )));
        }
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return Err(Failure::new("--rate must be more than 0"));
        }
        scenario::check_secs(self.duration, "--duration")?;
        let total = self.total_saves();
        if total == 0 || total > MAX_SAVES {
            return Err(Failure::new(format!(
                "rate x duration must give 1 to {MAX_SAVES} saves, not {total}"
            )));
        }
        Ok(())
    }

    fn params(&self) -> serde_json::Value {
        serde_json::json!({
            "subscribers": self.subscribers,
            "editors": self.editors,
            "rate": self.rate,
            "duration_secs": self.duration.as_secs_f64(),
            "saves": self.total_saves(),
            "source_addrs": self.source_addrs,
            "send_queue": self.send_queue_len(),
        })
    }

    fn send_queue_len(&self) -> usize {
        self.send_queue
            .unwrap_or(self.total_saves() as usize + 1024)
            .max(1)
    }
}

/// Live counters.
struct Live {
    t0: Instant,
    latest: AtomicU64,
    sent: AtomicU64,
    replies: AtomicU64,
    acked: AtomicU64,
    conflicts: AtomicU64,
    notified: AtomicU64,
    ready: AtomicUsize,
    failed: AtomicUsize,
}

impl Live {
    fn now_ns(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }
}

/// One save, as its editor saw it.
#[derive(Clone, Debug)]
struct SaveRec {
    k: u64,
    base: u64,
    sent_ns: u64,
    reply_ns: u64,
    /// `Ok(version)`, or the error code (and the conflict's version).
    result: Result<u64, (String, Option<u64>)>,
}

/// What one socket saw.
#[derive(Debug, Default)]
struct SockOut {
    id: String,
    editor: bool,
    /// Notifications: version, arrival (ns since t0), author.
    seen: Vec<(u64, u64, u32)>,
    /// Saves (editors).
    saves: Vec<SaveRec>,
    /// Notifications that were not about this customer, or malformed.
    bad: Vec<String>,
    /// Frames nobody expected.
    unexpected: Vec<String>,
    /// Why the socket ended early.
    error: Option<String>,
    frames: u64,
    /// The text of those frames, bytes (for the echo floor's frame size).
    bytes: u64,
}

/// Authors of saves by index: editors 0..E, anything else `u32::MAX`.
fn author_index(id: &str, editors: &HashMap<String, u32>) -> u32 {
    editors.get(id).copied().unwrap_or(u32::MAX)
}

struct Ctx {
    addr: SocketAddr,
    customer_id: String,
    live: Arc<Live>,
    editors: Arc<HashMap<String, u32>>,
    gate: Arc<Semaphore>,
}

fn on_change(out: &mut SockOut, ctx: &Ctx, f: Lite, now_ns: u64) {
    let Some(c) = f.change else {
        out.bad.push("record_changed without a change".into());
        return;
    };
    if c.kind != "customer" || c.id != ctx.customer_id {
        if out.bad.len() < 5 {
            out.bad.push(format!("a change of {} {}", c.kind, c.id));
        }
        return;
    }
    if c.record.as_ref().map(|r| r.version) != Some(c.version) {
        out.bad.push(format!(
            "change to version {} carries a record of version {:?}",
            c.version,
            c.record.map(|r| r.version)
        ));
    }
    let author = author_index(&c.changed_by.id, &ctx.editors);
    out.seen.push((c.version, now_ns, author));
    ctx.live.notified.fetch_add(1, Ordering::Relaxed);
}

fn unexpected(out: &mut SockOut, text: &str) {
    if out.unexpected.len() < 5 {
        let head: String = text.chars().take(200).collect();
        out.unexpected.push(format!("{}: {head}", out.id));
    }
}

/// Logs in: connect, then `get_customer` (or `reopen_customer` for an editor).
async fn login(
    ctx: &Ctx,
    idx: usize,
    token: &str,
    src_spread: usize,
    editor: bool,
) -> Result<Ws, String> {
    let _permit = ctx.gate.acquire().await.map_err(|e| e.to_string())?;
    let mut ws =
        client::agent_connect(ctx.addr, token, client::source_addr(idx, src_spread)).await?;
    let ty = if editor {
        "reopen_customer"
    } else {
        "get_customer"
    };
    let (f, text) = client::request(
        &mut ws,
        "1",
        &format!(r#""type":"{ty}","customer_id":"{}""#, ctx.customer_id),
        |_| {},
    )
    .await?;
    if f.ty != "reply" || f.result.and_then(|r| r.customer).is_none() {
        return Err(format!("{ty} refused: {text}"));
    }
    Ok(ws)
}

async fn subscriber(
    ctx: Arc<Ctx>,
    idx: usize,
    token: String,
    spread: usize,
    mut close: watch::Receiver<bool>,
) -> SockOut {
    let mut out = SockOut {
        id: format!("lt-sub-{idx}"),
        ..SockOut::default()
    };
    let mut ws = match login(&ctx, idx, &token, spread, false).await {
        Ok(ws) => ws,
        Err(e) => {
            out.error = Some(format!("{}: {e}", out.id));
            ctx.live.failed.fetch_add(1, Ordering::Relaxed);
            return out;
        }
    };
    ctx.live.ready.fetch_add(1, Ordering::Relaxed);
    loop {
        tokio::select! {
            biased;
            _ = close.changed() => break,
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    let now_ns = ctx.live.now_ns();
                    out.frames += 1;
                    out.bytes += t.as_str().len() as u64;
                    match serde_json::from_str::<Lite>(t.as_str()) {
                        Ok(f) if f.ty == "record_changed" => on_change(&mut out, &ctx, f, now_ns),
                        Ok(f) if f.ty == "goodbye" => {
                            out.error = Some(format!("{}: goodbye {}", out.id, f.reason.unwrap_or_default()));
                            break;
                        }
                        _ => unexpected(&mut out, t.as_str()),
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
    if out.error.is_some() {
        ctx.live.failed.fetch_add(1, Ordering::Relaxed);
    } else {
        client::close(&mut ws).await;
    }
    out
}

#[allow(clippy::too_many_arguments)]
async fn editor(
    ctx: Arc<Ctx>,
    e: usize,
    idx: usize,
    token: String,
    spread: usize,
    mut cmds: mpsc::Receiver<u64>,
    mut close: watch::Receiver<bool>,
) -> SockOut {
    let mut out = SockOut {
        id: format!("lt-ed-{e}"),
        editor: true,
        ..SockOut::default()
    };
    let mut ws = match login(&ctx, idx, &token, spread, true).await {
        Ok(ws) => ws,
        Err(err) => {
            out.error = Some(format!("{}: {err}", out.id));
            ctx.live.failed.fetch_add(1, Ordering::Relaxed);
            return out;
        }
    };
    ctx.live.ready.fetch_add(1, Ordering::Relaxed);
    let live = ctx.live.clone();
    let mut inflight: HashMap<u64, (u64, u64, u64)> = HashMap::new();
    let mut next_id = 1u64;
    let mut cmds_open = true;
    loop {
        tokio::select! {
            biased;
            _ = close.changed() => break,
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    let now_ns = live.now_ns();
                    out.frames += 1;
                    out.bytes += t.as_str().len() as u64;
                    let f = match serde_json::from_str::<Lite>(t.as_str()) {
                        Ok(f) => f,
                        Err(_) => { unexpected(&mut out, t.as_str()); continue; }
                    };
                    match f.ty.as_str() {
                        "record_changed" => on_change(&mut out, &ctx, f, now_ns),
                        "reply" | "error" => {
                            let Some((k, base, sent_ns)) = f.re.as_deref().and_then(|r| r.parse().ok()).and_then(|r: u64| inflight.remove(&r)) else {
                                unexpected(&mut out, t.as_str());
                                continue;
                            };
                            let result = if f.ty == "reply" {
                                match f.result.and_then(|r| r.customer) {
                                    Some(c) => {
                                        live.latest.fetch_max(c.version, Ordering::AcqRel);
                                        live.acked.fetch_add(1, Ordering::Relaxed);
                                        Ok(c.version)
                                    }
                                    None => Err(("reply without the customer".to_owned(), None)),
                                }
                            } else {
                                let code = f.code.unwrap_or_default();
                                if code == "version_conflict" {
                                    if let Some(v) = f.version {
                                        live.latest.fetch_max(v, Ordering::AcqRel);
                                    }
                                    live.conflicts.fetch_add(1, Ordering::Relaxed);
                                }
                                Err((code, f.version))
                            };
                            live.replies.fetch_add(1, Ordering::Relaxed);
                            out.saves.push(SaveRec { k, base, sent_ns, reply_ns: now_ns, result });
                        }
                        "goodbye" => {
                            out.error = Some(format!("{}: goodbye {}", out.id, f.reason.unwrap_or_default()));
                            break;
                        }
                        _ => unexpected(&mut out, t.as_str()),
                    }
                }
                Some(Ok(Message::Close(c))) => {
                    out.error = Some(format!("{}: closed by the hub: {c:?}", out.id));
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(err)) => {
                    out.error = Some(format!("{}: websocket error: {err}", out.id));
                    break;
                }
                None => {
                    out.error = Some(format!("{}: connection closed", out.id));
                    break;
                }
            },
            k = cmds.recv(), if cmds_open => match k {
                Some(k) => {
                    let base = live.latest.load(Ordering::Acquire);
                    let id = next_id;
                    next_id += 1;
                    let text = format!(
                        r#"{{"id":"{id}","type":"update_customer","customer_id":"{}","base_version":{base},"changes":{{"fields":{{"lt_save":"{k}"}}}}}}"#,
                        ctx.customer_id
                    );
                    let sent_ns = live.now_ns();
                    inflight.insert(id, (k, base, sent_ns));
                    live.sent.fetch_add(1, Ordering::Relaxed);
                    if let Err(err) = ws.send(Message::text(text)).await {
                        out.error = Some(format!("{}: send failed: {err}", out.id));
                        break;
                    }
                }
                None => cmds_open = false,
            },
        }
    }
    if out.error.is_some() {
        ctx.live.failed.fetch_add(1, Ordering::Relaxed);
    } else {
        client::close(&mut ws).await;
    }
    out
}

async fn progress(live: Arc<Live>, stop: watch::Receiver<bool>, expected_per_save: u64) {
    scenario::every_second(live.t0, stop, move || {
        let acked = live.acked.load(Ordering::Relaxed);
        format!(
            "saves sent {} acked {} conflicts {}; notifications {} of {}",
            live.sent.load(Ordering::Relaxed),
            acked,
            live.conflicts.load(Ordering::Relaxed),
            live.notified.load(Ordering::Relaxed),
            acked * expected_per_save,
        )
    })
    .await
}

/// Runs the `fanout` scenario.
pub async fn run_fanout(opts: FanoutOpts) -> Result<Report, Failure> {
    opts.check()?;
    let nofile = raise_nofile_limit();
    let setup = scenario::setup(opts.send_queue_len(), Duration::from_secs(15));
    let mut hub = RunHub::start(&opts.target, setup).await?;
    let result = drive(&opts, &mut hub, nofile).await;
    hub.finish(result, opts.keep_files).await
}

async fn drive(
    opts: &FanoutOpts,
    hub: &mut RunHub,
    nofile: Option<u64>,
) -> Result<Report, Failure> {
    let harness_cpu0 = crate::hubproc::self_cpu_secs();
    let integration = hub.integration_token();
    let nonce = scenario::nonce();
    let (customer_id, v0) =
        scenario::create_customer(hub.addr, &integration, &format!("Fanout {nonce}")).await?;
    let live = Arc::new(Live {
        t0: Instant::now(),
        latest: AtomicU64::new(v0),
        sent: AtomicU64::new(0),
        replies: AtomicU64::new(0),
        acked: AtomicU64::new(0),
        conflicts: AtomicU64::new(0),
        notified: AtomicU64::new(0),
        ready: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
    });
    let editor_ids: HashMap<String, u32> = (0..opts.editors)
        .map(|e| (format!("lt-ed-{e}"), e as u32))
        .collect();
    let ctx = Arc::new(Ctx {
        addr: hub.addr,
        customer_id: customer_id.clone(),
        live: live.clone(),
        editors: Arc::new(editor_ids),
        gate: Arc::new(Semaphore::new(opts.connect_concurrency.max(1))),
    });
    let queues = Some(vec![QUEUE.to_owned()]);
    let (close_tx, close_rx) = watch::channel(false);
    let n = opts.subscribers + opts.editors;
    let rss_before_login = hub.rss_kib();
    let login_started = Instant::now();
    let mut handles = Vec::with_capacity(n);
    for i in 0..opts.subscribers {
        let token = hub.token(&format!("lt-sub-{i}"), Role::Agent, queues.clone());
        handles.push(tokio::spawn(subscriber(
            ctx.clone(),
            i,
            token,
            opts.source_addrs,
            close_rx.clone(),
        )));
    }
    let mut cmd_txs = Vec::with_capacity(opts.editors);
    for e in 0..opts.editors {
        let token = hub.token(&format!("lt-ed-{e}"), Role::Agent, queues.clone());
        let (tx, rx) = mpsc::channel(1024);
        cmd_txs.push(tx);
        handles.push(tokio::spawn(editor(
            ctx.clone(),
            e,
            opts.subscribers + e,
            token,
            opts.source_addrs,
            rx,
            close_rx.clone(),
        )));
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
        drop(cmd_txs);
        let (outs, lost) = scenario::join_all(handles, Duration::from_secs(10)).await;
        let mut why: Vec<String> = outs.into_iter().filter_map(|o| o.error).take(5).collect();
        why.extend(lost.into_iter().take(5));
        return Err(match logged {
            Err(f) => f,
            Ok(_) => Failure::new(format!(
                "only {ready} of {n} sockets logged in within {} s:\n  {}",
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
        eprintln!(
            "{} subscribers and {} editors watching customer {customer_id} ({login_secs:.2} s); {} saves at {}/s",
            opts.subscribers,
            opts.editors,
            opts.total_saves(),
            opts.rate
        );
    }
    // Each save is expected on every subscriber and on every editor but its author.
    let per_save = (opts.subscribers + opts.editors - 1) as u64;
    let (stop_tx, stop_rx) = watch::channel(false);
    let prog = opts
        .progress
        .then(|| tokio::spawn(progress(live.clone(), stop_rx, per_save)));

    // The saves: open loop.
    let hub_cpu0 = hub.cpu_secs();
    let total = opts.total_saves();
    let mut lag = Hist::new();
    let start = tokio::time::Instant::now() + Duration::from_millis(20);
    let first_ns = live.now_ns() + 20_000_000;
    for k in 0..total {
        let due = start + Duration::from_secs_f64(k as f64 / opts.rate);
        tokio::time::sleep_until(due).await;
        lag.record(tokio::time::Instant::now().saturating_duration_since(due));
        let tx = &cmd_txs[(k % opts.editors as u64) as usize];
        if tx.send(k).await.is_err() {
            break;
        }
        if k % 64 == 0 {
            hub.check_alive()?;
        }
    }
    drop(cmd_txs);
    let sent_all_ns = live.now_ns();
    // Every reply, then every notification (or no progress for a while).
    let replied = hub
        .wait_for(Duration::from_secs(20), || {
            live.replies.load(Ordering::Relaxed) >= live.sent.load(Ordering::Relaxed)
                && live.sent.load(Ordering::Relaxed) >= total
        })
        .await?;
    let stall = Duration::from_secs(5);
    let (mut last, mut last_change) = (0u64, Instant::now());
    let cap = Duration::from_secs(60);
    let delivered = hub
        .wait_for(cap, || {
            let got = live.notified.load(Ordering::Relaxed);
            if got != last {
                (last, last_change) = (got, Instant::now());
            }
            got >= live.acked.load(Ordering::Relaxed) * per_save || last_change.elapsed() >= stall
        })
        .await?;
    let settled_ns = live.now_ns();
    let hub_cpu = hub.cpu_secs().zip(hub_cpu0).map(|(b, a)| b - a);
    let harness_cpu = crate::hubproc::self_cpu_secs() - harness_cpu0;
    // A short wait for anything more (a duplicate, a stray) before closing.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let slow_consumers = scenario::metric(hub.addr, "switchboard_slow_consumers_total").await;
    let _ = close_tx.send(true);
    let (outs, lost) = scenario::join_all(handles, Duration::from_secs(20)).await;
    let _ = stop_tx.send(true);
    if let Some(p) = prog {
        let _ = p.await;
    }
    let final_version = scenario::customer_version(hub.addr, &integration, &customer_id).await;

    // Who acknowledged what.
    let mut granted: BTreeMap<u64, Vec<(u32, u64)>> = BTreeMap::new();
    let mut hists = HistSet::default();
    let (mut acked, mut conflicts, mut other_errors) = (0u64, 0u64, Vec::new());
    let mut base_breaches = Vec::new();
    for o in outs.iter().filter(|o| o.editor) {
        let e = ctx.editors.get(&o.id).copied().unwrap_or(u32::MAX);
        for s in &o.saves {
            hists.get(H_REPLY).record_ns_span(s.sent_ns, s.reply_ns);
            match &s.result {
                Ok(v) => {
                    acked += 1;
                    granted.entry(*v).or_default().push((e, s.sent_ns));
                    if *v != s.base + 1 {
                        base_breaches.push(format!(
                            "save #{} based on version {} was granted version {v}",
                            s.k, s.base
                        ));
                    }
                }
                Err((code, _)) if code == "version_conflict" => conflicts += 1,
                Err((code, v)) => {
                    other_errors.push(format!("{}: save #{} refused: {code} {v:?}", o.id, s.k))
                }
            }
        }
    }
    let mut grant_breaches = base_breaches;
    for (v, who) in &granted {
        if who.len() > 1 {
            grant_breaches.push(format!("version {v} acknowledged {} times", who.len()));
        }
    }
    let versions: Vec<u64> = granted.keys().copied().collect();
    let author_of = |v: u64| granted.get(&v).and_then(|w| w.first()).map(|w| w.0);
    let sent_of = |v: u64| granted.get(&v).and_then(|w| w.first()).map(|w| w.1);

    // Every socket's notifications against the acknowledged versions.
    let mut last_by_version: HashMap<u64, u64> = HashMap::new();
    let (mut missing, mut dup, mut order, mut unacked, mut to_author, mut wrong_author) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    let mut bad = Vec::new();
    let mut received = 0u64;
    let mut inversions = 0u64;
    for o in &outs {
        let me = ctx.editors.get(&o.id).copied();
        bad.extend(o.bad.iter().map(|b| format!("{}: {b}", o.id)));
        let mut high: Option<(u64, u32)> = None;
        let mut late = 0u64;
        let mut first_late = None;
        let mut seen_set: HashMap<u64, u32> = HashMap::with_capacity(o.seen.len());
        for &(v, at, author) in &o.seen {
            received += 1;
            match high {
                Some((h, by)) if v < h => {
                    late += 1;
                    first_late.get_or_insert_with(|| {
                        format!(
                            "version {v} (by editor #{author}) after version {h} (by editor #{by})"
                        )
                    });
                }
                _ => high = Some((v, author)),
            }
            *seen_set.entry(v).or_default() += 1;
            match author_of(v) {
                None => {
                    if unacked.len() < 20 {
                        unacked.push(format!(
                            "{}: notified of version {v}, never acknowledged",
                            o.id
                        ));
                    }
                }
                Some(a) => {
                    if Some(a) == me && to_author.len() < 20 {
                        to_author.push(format!("{}: notified of its own save (version {v})", o.id));
                    }
                    if a != author && wrong_author.len() < 20 {
                        wrong_author.push(format!(
                            "{}: version {v} said changed by editor #{author}, acknowledged to editor #{a}",
                            o.id
                        ));
                    }
                    if !o.editor {
                        if let Some(s) = sent_of(v) {
                            hists.get(H_NOTIFY).record_ns_span(s, at);
                            let l = last_by_version.entry(v).or_insert(at);
                            *l = (*l).max(at);
                        }
                    }
                }
            }
        }
        if late > 0 {
            inversions += late;
            if order.len() < 20 {
                order.push(format!(
                    "{}: {late} of {} notifications after a higher version (first: {})",
                    o.id,
                    o.seen.len(),
                    first_late.unwrap_or_default()
                ));
            }
        }
        for (v, c) in &seen_set {
            if *c > 1 && dup.len() < 20 {
                dup.push(format!("{}: version {v} notified {c} times", o.id));
            }
        }
        let expected = versions
            .iter()
            .filter(|v| me.is_none() || author_of(**v) != me)
            .filter(|v| !seen_set.contains_key(v))
            .count();
        if expected > 0 && missing.len() < 20 {
            missing.push(format!(
                "{}: {expected} acknowledged versions never notified",
                o.id
            ));
        }
    }
    let mut completion = Hist::new();
    for v in &versions {
        if let (Some(s), Some(l)) = (sent_of(*v), last_by_version.get(v)) {
            completion.record_us(l.saturating_sub(s) / 1000);
        }
    }
    let mut set = HistSet::default();
    set.get(H_NOTIFY).merge(hists.get(H_NOTIFY));
    set.get(H_LAST).merge(&completion);
    set.get(H_REPLY).merge(hists.get(H_REPLY));
    set.get(H_LAG).merge(&lag);

    // The report.
    let mut r = Report::new("fanout", opts.params(), hub.desc.clone());
    let window = settled_ns.saturating_sub(first_ns) as f64 / 1e9;
    let send_window = sent_all_ns.saturating_sub(first_ns) as f64 / 1e9;
    r.elapsed_secs = window;
    r.figure("subscribers", opts.subscribers as f64, "");
    r.figure("editors", opts.editors as f64, "");
    r.figure("logged in (connect + get_customer)", login_secs, "s");
    r.figure("saves sent", live.sent.load(Ordering::Relaxed) as f64, "");
    r.figure("saves acknowledged", acked as f64, "");
    r.figure("saves refused: version_conflict", conflicts as f64, "");
    r.figure(
        "save rate achieved",
        acked as f64 / send_window.max(1e-9),
        "/s",
    );
    let expected_notes = acked * per_save;
    r.figure("notifications expected", expected_notes as f64, "");
    r.figure("notifications received", received as f64, "");
    r.figure(
        "notifications after a higher version",
        inversions as f64,
        "",
    );
    r.figure(
        "notifications delivered per second",
        received as f64 / window.max(1e-9),
        "/s",
    );
    let dropped: Vec<String> = outs.iter().filter_map(|o| o.error.clone()).collect();
    r.figure("sockets dropped", (dropped.len() + lost.len()) as f64, "");
    if let Some(sc) = slow_consumers {
        r.figure("hub slow_consumer closes (/metrics)", sc, "");
    }
    if let Some(cpu) = hub_cpu {
        r.figure("hub CPU, saves to last notification", cpu, "s");
        r.figure(
            "hub CPU per notification",
            1e6 * cpu / received.max(1) as f64,
            "µs",
        );
    }
    r.figure("harness CPU, whole run", harness_cpu, "s");
    r.latencies = set.summaries(&[H_NOTIFY, H_LAST, H_REPLY, H_LAG]);

    let mut conn = dropped.clone();
    conn.extend(lost);
    if let Some(sc) = slow_consumers {
        if sc > 0.0 {
            conn.push(format!("the hub closed {sc} slow consumers"));
        }
    }
    r.checks.push(Check::from_breaches(
        "every socket logged in and stayed connected (none dropped as a slow consumer)",
        format!("{n} sockets; send_queue {}", opts.send_queue_len()),
        &conn,
    ));
    let mut reply_breaches = other_errors;
    if !replied {
        reply_breaches.push(format!(
            "{} of {} saves answered",
            live.replies.load(Ordering::Relaxed),
            live.sent.load(Ordering::Relaxed)
        ));
    }
    r.checks.push(Check::from_breaches(
        "every save answered (reply or version_conflict)",
        format!("{} saves", live.sent.load(Ordering::Relaxed)),
        &reply_breaches,
    ));
    r.checks.push(Check::from_breaches(
        "each acknowledged version granted once, on the version it was based on",
        format!("{acked} acknowledged"),
        &grant_breaches,
    ));
    let mut final_breaches = Vec::new();
    match &final_version {
        Ok(v) if *v == v0 + acked => {}
        Ok(v) => final_breaches.push(format!(
            "the record is at version {v}, expected {} ({v0} + {acked} acknowledged saves)",
            v0 + acked
        )),
        Err(e) => final_breaches.push(e.clone()),
    }
    r.checks.push(Check::from_breaches(
        "the record's final version is its first plus the acknowledged saves",
        format!("GET /v1/customers/{customer_id}: {final_version:?}"),
        &final_breaches,
    ));
    let mut every = missing;
    if !delivered {
        every.push(format!(
            "{received} of {expected_notes} notifications within the wait"
        ));
    }
    r.checks.push(Check::from_breaches(
        "every acknowledged save notified to every subscriber and every other editor",
        format!("{acked} saves x {per_save} watchers = {expected_notes}; {received} received"),
        &every,
    ));
    r.checks.push(Check::from_breaches(
        "exactly once: no version notified twice to a socket",
        format!("{received} notifications"),
        &dup,
    ));
    r.checks.push(Check::from_breaches(
        "in version order on every socket",
        format!("{n} sockets"),
        &order,
    ));
    r.checks.push(Check::from_breaches(
        "no notification of a version never acknowledged",
        format!("{} acknowledged versions", versions.len()),
        &unacked,
    ));
    r.checks.push(Check::from_breaches(
        "no notification to the author of a save",
        format!("{} editors", opts.editors),
        &to_author,
    ));
    let mut shape = wrong_author;
    shape.extend(bad);
    r.checks.push(Check::from_breaches(
        "each notification names its author and carries the record at its version",
        "changed_by and record.version of every notification".into(),
        &shape,
    ));
    let unexpected: Vec<String> = outs.iter().flat_map(|o| o.unexpected.clone()).collect();
    r.checks.push(Check::from_breaches(
        "no unexpected frames",
        format!("{} frames", outs.iter().map(|o| o.frames).sum::<u64>()),
        &unexpected,
    ));
    if conflicts > 0 {
        r.notes.push(format!(
            "{conflicts} saves crossed another (sent before the previous one was acknowledged) and were refused with version_conflict; they are not expected on the subscribers"
        ));
    }
    r.notes.push(format!(
        "the harness and the hub share this machine's {} CPUs; the harness used {harness_cpu:.2} CPU s; latencies include the harness's own delay in reading {} sockets",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        n
    ));
    if let Some(l) = nofile {
        r.notes.push(format!(
            "open-file limit {l}; sockets spread over {} source addresses",
            opts.source_addrs
        ));
    }
    // What the echo floor is set against: over the window of the hub CPU figure, the
    // saves read, their replies and every notification written (the frames the
    // sockets read after logging in: notifications and replies, whose average size is
    // the floor's frame size).
    r.floor_basis = hub_cpu.map(|cpu| {
        let (frames_read, bytes_read) = outs
            .iter()
            .fold((0u64, 0u64), |(f, b), o| (f + o.frames, b + o.bytes));
        crate::floor::Basis {
            vs_connect: false,
            conns: n,
            frames: received
                + live.sent.load(Ordering::Relaxed)
                + live.replies.load(Ordering::Relaxed),
            window_secs: window,
            hub_cpu_secs: cpu,
            frame_bytes: (bytes_read / frames_read.max(1)) as usize,
            rss_per_conn_kib: rss_per_conn,
            latency: crate::floor::Basis::latency_of(&r, H_NOTIFY),
        }
    });
    r.harness_cpu_secs = harness_cpu;
    r.hub_cpu_load_secs = hub_cpu;
    Ok(r)
}
