//! The `conflicts` scenario: editors save the same customer as fast as they can, each
//! on the version it last saw, reloading from the `version_conflict` error when
//! another save came first. Checks that the versions were granted exactly once each,
//! with no gap, that the record ends at the number of granted saves plus one, and that
//! the passive watchers (and the editors, for each other's saves) saw every version
//! once, in order.

use crate::client::{self, Lite, Ws};
use crate::cluster::{Target, raise_nofile_limit};
use crate::httpc::HttpClient;
use crate::report::{Check, Failure, Report};
use crate::scenario::{self, QUEUE, RunHub};
use crate::stats::HistSet;
use futures_util::{SinkExt, StreamExt};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use switchboard::auth::Role;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

/// Any save to its answer.
pub const H_ANSWER: &str = "save -> answer (all)";
/// A granted save to its reply.
pub const H_OK: &str = "save -> reply (granted)";
/// A refused save to its `version_conflict`.
pub const H_CONFLICT: &str = "save -> version_conflict";
/// A granted save to each watcher's notification.
pub const H_NOTIFY: &str = "save -> watcher notification";

/// The `conflicts` scenario's options.
#[derive(Clone, Debug)]
pub struct ConflictOpts {
    /// The hub.
    pub target: Target,
    /// Agents saving the record over the websocket.
    pub editors: usize,
    /// Integrations saving it over HTTP (`PATCH /v1/customers/{id}`).
    pub http_editors: usize,
    /// Agents only watching it.
    pub watchers: usize,
    /// How long the editors save for.
    pub duration: Duration,
    /// Loopback source addresses the sockets are spread over.
    pub source_addrs: usize,
    /// A progress line a second on stderr.
    pub progress: bool,
    /// Keep the started hub's files.
    pub keep_files: bool,
}

impl ConflictOpts {
    /// The defaults of `loadtest conflicts`.
    pub fn new(target: Target) -> ConflictOpts {
        ConflictOpts {
            target,
            editors: 8,
            http_editors: 0,
            watchers: 4,
            duration: Duration::from_secs(10),
            source_addrs: 8,
            progress: false,
            keep_files: false,
        }
    }

    fn check(&self) -> Result<(), Failure> {
        if self.editors + self.http_editors < 1 || self.editors + self.http_editors > 1000 {
            return Err(Failure::new(
                "--editors plus --http-editors must be 1 to 1000",
            ));
        }
        if self.watchers > 10_000 {
            return Err(Failure::new("--watchers must be at most 10000"));
        }
        scenario::check_secs(self.duration, "--duration")?;
        if self.duration > Duration::from_secs(3600) {
            return Err(Failure::new("--duration must be at most an hour"));
        }
        Ok(())
    }

    fn params(&self) -> serde_json::Value {
        serde_json::json!({
            "editors": self.editors,
            "http_editors": self.http_editors,
            "watchers": self.watchers,
            "duration_secs": self.duration.as_secs_f64(),
            "source_addrs": self.source_addrs,
        })
    }
}

struct Live {
    t0: Instant,
    ready: AtomicUsize,
    failed: AtomicUsize,
    attempts: AtomicU64,
    granted: AtomicU64,
    conflicts: AtomicU64,
    answered: AtomicU64,
    notified: AtomicU64,
}

impl Live {
    fn now_ns(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }
}

/// One save.
#[derive(Clone, Debug)]
struct Save {
    base: u64,
    sent_ns: u64,
    answer_ns: u64,
    /// Granted with this version; or refused with this code, version and
    /// `current.version`.
    result: Result<u64, (String, Option<u64>, Option<u64>)>,
}

#[derive(Debug, Default)]
struct Out {
    id: String,
    /// Index among the editors (agents first, then HTTP); `None` for a watcher.
    editor: Option<u32>,
    saves: Vec<Save>,
    /// Notifications: version, arrival, author index (`u32::MAX` unknown).
    seen: Vec<(u64, u64, u32)>,
    bad: Vec<String>,
    unexpected: Vec<String>,
    error: Option<String>,
    frames: u64,
    /// The text of those frames, bytes (for the echo floor's frame size).
    bytes: u64,
}

struct Ctx {
    addr: SocketAddr,
    customer_id: String,
    live: Arc<Live>,
    authors: HashMap<String, u32>,
    spread: usize,
}

fn note(out: &mut Vec<String>, what: String) {
    if out.len() < 5 {
        out.push(what);
    }
}

fn on_change(out: &mut Out, ctx: &Ctx, f: Lite, now_ns: u64) {
    let Some(c) = f.change else {
        note(&mut out.bad, "record_changed without a change".into());
        return;
    };
    if c.kind != "customer" || c.id != ctx.customer_id {
        note(&mut out.bad, format!("a change of {} {}", c.kind, c.id));
        return;
    }
    if c.record.as_ref().map(|r| r.version) != Some(c.version) {
        note(
            &mut out.bad,
            format!(
                "change to version {} carries another record version",
                c.version
            ),
        );
    }
    let author = ctx
        .authors
        .get(&c.changed_by.id)
        .copied()
        .unwrap_or(u32::MAX);
    out.seen.push((c.version, now_ns, author));
    ctx.live.notified.fetch_add(1, Ordering::Relaxed);
}

/// Handles one frame that is not the answer being waited for. `Err` ends the socket.
fn other_frame(out: &mut Out, ctx: &Ctx, text: &str, now_ns: u64) -> Result<(), String> {
    out.frames += 1;
    out.bytes += text.len() as u64;
    match serde_json::from_str::<Lite>(text) {
        Ok(f) if f.ty == "record_changed" => on_change(out, ctx, f, now_ns),
        Ok(f) if f.ty == "goodbye" => {
            return Err(format!("goodbye {}", f.reason.unwrap_or_default()));
        }
        _ => {
            let head: String = text.chars().take(200).collect();
            note(&mut out.unexpected, format!("{}: {head}", out.id));
        }
    }
    Ok(())
}

/// Reads frames until `close` is set, counting notifications.
async fn listen(ws: &mut Ws, out: &mut Out, ctx: &Ctx, close: &mut watch::Receiver<bool>) {
    loop {
        if *close.borrow() {
            return;
        }
        tokio::select! {
            biased;
            _ = close.changed() => return,
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    let now = ctx.live.now_ns();
                    if let Err(e) = other_frame(out, ctx, t.as_str(), now) {
                        out.error = Some(format!("{}: {e}", out.id));
                        return;
                    }
                }
                Some(Ok(Message::Close(c))) => {
                    out.error = Some(format!("{}: closed by the hub: {c:?}", out.id));
                    return;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    out.error = Some(format!("{}: websocket error: {e}", out.id));
                    return;
                }
                None => {
                    out.error = Some(format!("{}: connection closed", out.id));
                    return;
                }
            },
        }
    }
}

async fn login(ctx: &Ctx, idx: usize, token: &str, ty: &str) -> Result<(Ws, u64), String> {
    let mut ws =
        client::agent_connect(ctx.addr, token, client::source_addr(idx, ctx.spread)).await?;
    let (f, text) = client::request(
        &mut ws,
        "0",
        &format!(r#""type":"{ty}","customer_id":"{}""#, ctx.customer_id),
        |_| {},
    )
    .await?;
    match f.result.and_then(|r| r.customer) {
        Some(c) if f.ty == "reply" => Ok((ws, c.version)),
        _ => Err(format!("{ty} refused: {text}")),
    }
}

async fn watcher(
    ctx: Arc<Ctx>,
    idx: usize,
    token: String,
    mut close: watch::Receiver<bool>,
) -> Out {
    let mut out = Out {
        id: format!("lt-watch-{idx}"),
        ..Out::default()
    };
    let mut ws = match login(&ctx, idx, &token, "get_customer").await {
        Ok((ws, _)) => ws,
        Err(e) => {
            out.error = Some(format!("{}: {e}", out.id));
            ctx.live.failed.fetch_add(1, Ordering::Relaxed);
            return out;
        }
    };
    ctx.live.ready.fetch_add(1, Ordering::Relaxed);
    listen(&mut ws, &mut out, &ctx, &mut close).await;
    if out.error.is_none() {
        client::close(&mut ws).await;
    }
    out
}

/// Waits for the start signal; `false` when the run ended first.
async fn wait_go(go: &mut watch::Receiver<bool>) -> bool {
    go.wait_for(|g| *g).await.is_ok()
}

#[allow(clippy::too_many_arguments)]
async fn ws_editor(
    ctx: Arc<Ctx>,
    e: u32,
    idx: usize,
    token: String,
    mut go: watch::Receiver<bool>,
    deadline: Arc<watch::Sender<Option<tokio::time::Instant>>>,
    mut close: watch::Receiver<bool>,
) -> Out {
    let mut out = Out {
        id: format!("lt-ed-{e}"),
        editor: Some(e),
        ..Out::default()
    };
    let (mut ws, mut base) = match login(&ctx, idx, &token, "reopen_customer").await {
        Ok(x) => x,
        Err(err) => {
            out.error = Some(format!("{}: {err}", out.id));
            ctx.live.failed.fetch_add(1, Ordering::Relaxed);
            return out;
        }
    };
    ctx.live.ready.fetch_add(1, Ordering::Relaxed);
    if !wait_go(&mut go).await {
        return out;
    }
    let Some(end) = *deadline.borrow() else {
        return out;
    };
    let live = ctx.live.clone();
    let mut n = 0u64;
    'saving: while tokio::time::Instant::now() < end {
        n += 1;
        let id = n.to_string();
        let body = format!(
            r#"{{"id":"{id}","type":"update_customer","customer_id":"{}","base_version":{base},"changes":{{"fields":{{"lt_editor":"{}","lt_n":"{n}"}}}}}}"#,
            ctx.customer_id, out.id
        );
        let sent_ns = live.now_ns();
        let sent_base = base;
        live.attempts.fetch_add(1, Ordering::Relaxed);
        if let Err(err) = ws.send(Message::text(body)).await {
            out.error = Some(format!("{}: send failed: {err}", out.id));
            break;
        }
        // Read until the answer, counting notifications on the way.
        loop {
            let text = match client::next_text(&mut ws, Duration::from_secs(20)).await {
                Ok(t) => t,
                Err(err) => {
                    out.error = Some(format!("{}: {err}", out.id));
                    break 'saving;
                }
            };
            let now_ns = live.now_ns();
            let f: Lite = match serde_json::from_str(&text) {
                Ok(f) => f,
                Err(_) => {
                    let _ = other_frame(&mut out, &ctx, &text, now_ns);
                    continue;
                }
            };
            if f.re.as_deref() != Some(id.as_str()) {
                if let Err(err) = other_frame(&mut out, &ctx, &text, now_ns) {
                    out.error = Some(format!("{}: {err}", out.id));
                    break 'saving;
                }
                continue;
            }
            out.frames += 1;
            out.bytes += text.len() as u64;
            let result = if f.ty == "reply" {
                match f.result.and_then(|r| r.customer) {
                    Some(c) => {
                        live.granted.fetch_add(1, Ordering::Relaxed);
                        base = c.version;
                        Ok(c.version)
                    }
                    None => Err(("reply without the customer".to_owned(), None, None)),
                }
            } else {
                let code = f.code.unwrap_or_default();
                let current = f.current.map(|c| c.version);
                if code == "version_conflict" {
                    live.conflicts.fetch_add(1, Ordering::Relaxed);
                    // Reload: the record as the error carries it.
                    if let Some(v) = f.version.or(current) {
                        base = v;
                    }
                }
                Err((code, f.version, current))
            };
            out.saves.push(Save {
                base: sent_base,
                sent_ns,
                answer_ns: now_ns,
                result,
            });
            live.answered.fetch_add(1, Ordering::Relaxed);
            break;
        }
    }
    if out.error.is_none() {
        listen(&mut ws, &mut out, &ctx, &mut close).await;
    }
    if out.error.is_none() {
        client::close(&mut ws).await;
    }
    out
}

async fn http_editor(
    ctx: Arc<Ctx>,
    e: u32,
    token: String,
    mut go: watch::Receiver<bool>,
    deadline: Arc<watch::Sender<Option<tokio::time::Instant>>>,
) -> Out {
    let id = format!("lt-http-ed-{}", e);
    let mut out = Out {
        id: id.clone(),
        editor: Some(e),
        ..Out::default()
    };
    let mut http = HttpClient::new(ctx.addr);
    let path = format!("/v1/customers/{}", ctx.customer_id);
    let mut base = match http.get(&path, Some(&token)).await {
        Ok(r) if r.status == 200 => match scenario::customer_of(&r.body) {
            Some((_, v)) => v,
            None => {
                out.error = Some(format!("{id}: unreadable customer {}", r.text()));
                ctx.live.failed.fetch_add(1, Ordering::Relaxed);
                return out;
            }
        },
        Ok(r) => {
            out.error = Some(format!("{id}: GET {path} answered {}", r.status));
            ctx.live.failed.fetch_add(1, Ordering::Relaxed);
            return out;
        }
        Err(err) => {
            out.error = Some(format!("{id}: GET {path}: {err}"));
            ctx.live.failed.fetch_add(1, Ordering::Relaxed);
            return out;
        }
    };
    ctx.live.ready.fetch_add(1, Ordering::Relaxed);
    if !wait_go(&mut go).await {
        return out;
    }
    let Some(end) = *deadline.borrow() else {
        return out;
    };
    let live = ctx.live.clone();
    let mut n = 0u64;
    while tokio::time::Instant::now() < end {
        n += 1;
        let body = format!(
            r#"{{"base_version":{base},"changes":{{"fields":{{"lt_editor":"{id}","lt_n":"{n}"}}}}}}"#
        );
        let sent_ns = live.now_ns();
        live.attempts.fetch_add(1, Ordering::Relaxed);
        let r = http
            .request("PATCH", &path, Some(&token), Some(body.as_bytes()))
            .await;
        let now_ns = live.now_ns();
        let sent_base = base;
        let result = match r {
            Ok(r) if r.status == 200 => match scenario::customer_of(&r.body) {
                Some((_, v)) => {
                    live.granted.fetch_add(1, Ordering::Relaxed);
                    base = v;
                    Ok(v)
                }
                None => Err((format!("200 without a version: {}", r.text()), None, None)),
            },
            Ok(r) => {
                let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
                let err = v.get("error");
                let code = err
                    .and_then(|e| e.get("code"))
                    .and_then(|c| c.as_str())
                    .unwrap_or_default()
                    .to_owned();
                let version = err.and_then(|e| e.get("version")).and_then(|v| v.as_u64());
                let current = err
                    .and_then(|e| e.get("current"))
                    .and_then(|c| c.get("version"))
                    .and_then(|v| v.as_u64());
                if code == "version_conflict" && r.status == 409 {
                    live.conflicts.fetch_add(1, Ordering::Relaxed);
                    if let Some(v) = version.or(current) {
                        base = v;
                    }
                    Err((code, version, current))
                } else {
                    Err((format!("{code} (HTTP {})", r.status), version, current))
                }
            }
            Err(err) => {
                out.error = Some(format!("{id}: PATCH {path}: {err}"));
                break;
            }
        };
        out.saves.push(Save {
            base: sent_base,
            sent_ns,
            answer_ns: now_ns,
            result,
        });
        live.answered.fetch_add(1, Ordering::Relaxed);
    }
    if out.error.is_some() {
        live.failed.fetch_add(1, Ordering::Relaxed);
    }
    out
}

async fn progress(live: Arc<Live>, stop: watch::Receiver<bool>) {
    let (mut last_g, mut last_c) = (0, 0);
    scenario::every_second(live.t0, stop, move || {
        let g = live.granted.load(Ordering::Relaxed);
        let c = live.conflicts.load(Ordering::Relaxed);
        let line = format!(
            "saves granted {g} (+{}/s), conflicts {c} (+{}/s), notifications {}",
            g - last_g,
            c - last_c,
            live.notified.load(Ordering::Relaxed)
        );
        (last_g, last_c) = (g, c);
        line
    })
    .await
}

/// Runs the `conflicts` scenario.
pub async fn run_conflicts(opts: ConflictOpts) -> Result<Report, Failure> {
    opts.check()?;
    let nofile = raise_nofile_limit();
    let setup = scenario::setup(65_536, Duration::from_secs(15));
    let mut hub = RunHub::start(&opts.target, setup).await?;
    let result = drive(&opts, &mut hub, nofile).await;
    hub.finish(result, opts.keep_files).await
}

async fn drive(
    opts: &ConflictOpts,
    hub: &mut RunHub,
    nofile: Option<u64>,
) -> Result<Report, Failure> {
    let harness_cpu0 = crate::hubproc::self_cpu_secs();
    let integration = hub.integration_token();
    let nonce = scenario::nonce();
    let (customer_id, v0) =
        scenario::create_customer(hub.addr, &integration, &format!("Conflicts {nonce}")).await?;
    let live = Arc::new(Live {
        t0: Instant::now(),
        ready: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        attempts: AtomicU64::new(0),
        granted: AtomicU64::new(0),
        conflicts: AtomicU64::new(0),
        answered: AtomicU64::new(0),
        notified: AtomicU64::new(0),
    });
    let ws_ids: Vec<String> = (0..opts.editors).map(|e| format!("lt-ed-{e}")).collect();
    let http_ids: Vec<String> = (0..opts.http_editors)
        .map(|h| format!("lt-http-ed-{}", opts.editors + h))
        .collect();
    let authors: HashMap<String, u32> = ws_ids
        .iter()
        .chain(&http_ids)
        .enumerate()
        .map(|(i, id)| (id.clone(), i as u32))
        .collect();
    let ctx = Arc::new(Ctx {
        addr: hub.addr,
        customer_id: customer_id.clone(),
        live: live.clone(),
        authors,
        spread: opts.source_addrs,
    });
    let queues = Some(vec![QUEUE.to_owned()]);
    let (close_tx, close_rx) = watch::channel(false);
    let (go_tx, go_rx) = watch::channel(false);
    let deadline = Arc::new(watch::channel(None).0);
    let rss_before_login = hub.rss_kib();
    let mut handles = Vec::new();
    for w in 0..opts.watchers {
        let token = hub.token(&format!("lt-watch-{w}"), Role::Agent, queues.clone());
        handles.push(tokio::spawn(watcher(
            ctx.clone(),
            w,
            token,
            close_rx.clone(),
        )));
    }
    for (e, id) in ws_ids.iter().enumerate() {
        let token = hub.token(id, Role::Agent, queues.clone());
        handles.push(tokio::spawn(ws_editor(
            ctx.clone(),
            e as u32,
            opts.watchers + e,
            token,
            go_rx.clone(),
            deadline.clone(),
            close_rx.clone(),
        )));
    }
    for (h, id) in http_ids.iter().enumerate() {
        let token = hub.token(id, Role::Integration, None);
        handles.push(tokio::spawn(http_editor(
            ctx.clone(),
            (opts.editors + h) as u32,
            token,
            go_rx.clone(),
            deadline.clone(),
        )));
    }
    let n = opts.watchers + opts.editors + opts.http_editors;
    let logged = hub
        .wait_for(Duration::from_secs(30 + n as u64 / 100), || {
            live.ready.load(Ordering::Relaxed) + live.failed.load(Ordering::Relaxed) >= n
        })
        .await;
    let ready = live.ready.load(Ordering::Relaxed);
    if !matches!(logged, Ok(true)) || ready < n {
        let _ = close_tx.send(true);
        drop(go_tx);
        let (outs, lost) = scenario::join_all(handles, Duration::from_secs(10)).await;
        let mut why: Vec<String> = outs.into_iter().filter_map(|o| o.error).take(5).collect();
        why.extend(lost.into_iter().take(5));
        return Err(match logged {
            Err(f) => f,
            Ok(_) => Failure::new(format!(
                "only {ready} of {n} clients were ready:\n  {}",
                why.join("\n  ")
            )),
        });
    }
    // The websocket clients (HTTP editors hold no socket to speak of).
    let ws_conns = opts.watchers + opts.editors;
    let rss_per_conn = rss_before_login
        .zip(hub.rss_kib())
        .filter(|_| ws_conns > 0)
        .map(|(before, after)| after.saturating_sub(before) as f64 / ws_conns as f64);
    let (stop_tx, stop_rx) = watch::channel(false);
    let prog = opts
        .progress
        .then(|| tokio::spawn(progress(live.clone(), stop_rx)));
    let hub_cpu0 = hub.cpu_secs();
    let first_ns = live.now_ns();
    deadline.send_replace(Some(tokio::time::Instant::now() + opts.duration));
    let _ = go_tx.send(true);
    tokio::time::sleep(opts.duration).await;
    let answered = hub
        .wait_for(Duration::from_secs(20), || {
            live.answered.load(Ordering::Relaxed) >= live.attempts.load(Ordering::Relaxed)
        })
        .await?;
    let saving_ns = live.now_ns();
    let hub_cpu = hub.cpu_secs().zip(hub_cpu0).map(|(b, a)| b - a);
    // Every granted save is notified to every watcher and to every websocket editor
    // but its author.
    let stall = Duration::from_secs(3);
    let (mut last, mut last_change) = (0u64, Instant::now());
    let delivered = hub
        .wait_for(Duration::from_secs(30), || {
            let got = live.notified.load(Ordering::Relaxed);
            if got != last {
                (last, last_change) = (got, Instant::now());
            }
            last_change.elapsed() >= stall
                || got
                    >= live.granted.load(Ordering::Relaxed) * (opts.watchers + opts.editors) as u64
        })
        .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = close_tx.send(true);
    let (outs, lost) = scenario::join_all(handles, Duration::from_secs(20)).await;
    let _ = stop_tx.send(true);
    if let Some(p) = prog {
        let _ = p.await;
    }
    let harness_cpu = crate::hubproc::self_cpu_secs() - harness_cpu0;
    let final_version = scenario::customer_version(hub.addr, &integration, &customer_id).await;

    // What was granted to whom.
    let mut hists = HistSet::default();
    let mut granted: BTreeMap<u64, Vec<(u32, u64)>> = BTreeMap::new();
    let (mut n_granted, mut n_conflicts) = (0u64, 0u64);
    let (mut base_breaches, mut conflict_breaches, mut refused) =
        (Vec::new(), Vec::new(), Vec::new());
    for o in &outs {
        let Some(e) = o.editor else { continue };
        for s in &o.saves {
            hists.get(H_ANSWER).record_ns_span(s.sent_ns, s.answer_ns);
            match &s.result {
                Ok(v) => {
                    n_granted += 1;
                    hists.get(H_OK).record_ns_span(s.sent_ns, s.answer_ns);
                    granted.entry(*v).or_default().push((e, s.sent_ns));
                    if *v != s.base + 1 {
                        note(
                            &mut base_breaches,
                            format!("{}: save on version {} granted version {v}", o.id, s.base),
                        );
                    }
                }
                Err((code, version, current)) if code == "version_conflict" => {
                    n_conflicts += 1;
                    hists.get(H_CONFLICT).record_ns_span(s.sent_ns, s.answer_ns);
                    match version {
                        Some(v) if *v > s.base && *current == Some(*v) => {}
                        _ => note(
                            &mut conflict_breaches,
                            format!(
                                "{}: conflict on base {} says version {version:?}, current.version {current:?}",
                                o.id, s.base
                            ),
                        ),
                    }
                }
                Err((code, v, _)) => note(
                    &mut refused,
                    format!("{}: save refused: {code} {v:?}", o.id),
                ),
            }
        }
    }
    let top = granted.keys().next_back().copied().unwrap_or(v0);
    let mut grant_breaches = Vec::new();
    for v in v0 + 1..=top {
        match granted.get(&v).map(Vec::len) {
            Some(1) => {}
            Some(k) => note(
                &mut grant_breaches,
                format!("version {v} granted {k} times"),
            ),
            None => note(
                &mut grant_breaches,
                format!("version {v} never granted (a gap)"),
            ),
        }
    }
    let versions: Vec<u64> = granted.keys().copied().collect();
    let author_of = |v: u64| granted.get(&v).and_then(|w| w.first()).map(|w| w.0);
    let mut final_breaches = Vec::new();
    match &final_version {
        Ok(v) if *v == v0 + n_granted && *v == top => {}
        Ok(v) => final_breaches.push(format!(
            "the record is at version {v}; {n_granted} saves granted on version {v0} make {}, highest granted {top}",
            v0 + n_granted
        )),
        Err(e) => final_breaches.push(e.clone()),
    }
    let (mut seq_breaches, mut order_breaches, mut author_breaches, mut bad) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut received = 0u64;
    let mut inversions = 0usize;
    let names: Vec<String> = {
        let mut v: Vec<(u32, String)> = ctx.authors.iter().map(|(k, i)| (*i, k.clone())).collect();
        v.sort();
        v.into_iter().map(|(_, k)| k).collect()
    };
    let name = |i: u32| {
        names
            .get(i as usize)
            .cloned()
            .unwrap_or_else(|| "someone else".to_owned())
    };
    for o in &outs {
        bad.extend(o.bad.iter().map(|b| format!("{}: {b}", o.id)));
        let seen: Vec<u64> = o.seen.iter().map(|s| s.0).collect();
        received += seen.len() as u64;
        // Websocket editors hear every save but their own; HTTP editors have no socket.
        if o.editor.is_some_and(|e| e as usize >= opts.editors) {
            continue;
        }
        let expected: Vec<u64> = versions
            .iter()
            .copied()
            .filter(|v| o.editor.is_none() || author_of(*v) != o.editor)
            .collect();
        let d = scenario::delivery(&o.seen, &expected, name);
        if d.missing + d.dup + d.extra > 0 {
            note(
                &mut seq_breaches,
                format!(
                    "{}: {} missing, {} duplicates, {} not expected, of {} expected (first: {})",
                    o.id,
                    d.missing,
                    d.dup,
                    d.extra,
                    expected.len(),
                    d.first_wrong.unwrap_or_default()
                ),
            );
        }
        if d.inversions > 0 {
            inversions += d.inversions;
            note(
                &mut order_breaches,
                format!(
                    "{}: {} of {} notifications after a higher version (first: {})",
                    o.id,
                    d.inversions,
                    seen.len(),
                    d.first_inversion.unwrap_or_default()
                ),
            );
        }
        for &(v, at, author) in &o.seen {
            if author_of(v) != Some(author) {
                note(
                    &mut author_breaches,
                    format!(
                        "{}: version {v} said changed by #{author}, granted to {:?}",
                        o.id,
                        author_of(v)
                    ),
                );
            }
            if o.editor.is_none() {
                if let Some(s) = granted.get(&v).and_then(|w| w.first()) {
                    hists.get(H_NOTIFY).record_ns_span(s.1, at);
                }
            }
        }
    }

    let mut r = Report::new("conflicts", opts.params(), hub.desc.clone());
    let secs = saving_ns.saturating_sub(first_ns) as f64 / 1e9;
    r.elapsed_secs = secs;
    let attempts = live.attempts.load(Ordering::Relaxed);
    r.figure(
        "editors (websocket + HTTP)",
        (opts.editors + opts.http_editors) as f64,
        "",
    );
    r.figure("watchers", opts.watchers as f64, "");
    r.figure("saving window", secs, "s");
    r.figure("saves attempted", attempts as f64, "");
    r.figure("saves granted", n_granted as f64, "");
    r.figure("refused: version_conflict", n_conflicts as f64, "");
    r.figure(
        "saves granted per second",
        n_granted as f64 / secs.max(1e-9),
        "/s",
    );
    r.figure(
        "conflicts per second",
        n_conflicts as f64 / secs.max(1e-9),
        "/s",
    );
    r.figure(
        "attempts per second",
        attempts as f64 / secs.max(1e-9),
        "/s",
    );
    r.figure(
        "conflict share of attempts",
        n_conflicts as f64 / attempts.max(1) as f64,
        "",
    );
    if let Ok(v) = &final_version {
        r.figure("final record version", *v as f64, "");
    }
    r.figure("notifications received", received as f64, "");
    r.figure(
        "notifications after a higher version",
        inversions as f64,
        "",
    );
    if let Some(cpu) = hub_cpu {
        r.figure("hub CPU while saving", cpu, "s");
        r.figure(
            "hub CPU per attempt",
            1e6 * cpu / attempts.max(1) as f64,
            "µs",
        );
    }
    r.figure("harness CPU, whole run", harness_cpu, "s");
    r.latencies = hists.summaries(&[H_ANSWER, H_OK, H_CONFLICT, H_NOTIFY]);

    let mut conn: Vec<String> = outs.iter().filter_map(|o| o.error.clone()).collect();
    conn.extend(lost);
    r.checks.push(Check::from_breaches(
        "every client was ready and stayed connected",
        format!("{n} clients"),
        &conn,
    ));
    let mut answer_breaches = refused;
    if !answered {
        answer_breaches.push(format!(
            "{} of {attempts} saves answered",
            live.answered.load(Ordering::Relaxed)
        ));
    }
    r.checks.push(Check::from_breaches(
        "every save answered: granted, or refused with version_conflict",
        format!("{attempts} saves"),
        &answer_breaches,
    ));
    r.checks.push(Check::from_breaches(
        "every version from first+1 to the highest granted exactly once",
        format!("versions {}..={top}", v0 + 1),
        &grant_breaches,
    ));
    r.checks.push(Check::from_breaches(
        "each granted save was based on the version just before it",
        format!("{n_granted} granted"),
        &base_breaches,
    ));
    r.checks.push(Check::from_breaches(
        "each conflict names a newer version and carries that record as current",
        format!("{n_conflicts} conflicts"),
        &conflict_breaches,
    ));
    r.checks.push(Check::from_breaches(
        "the final record's version is the granted saves + its first version",
        format!("GET /v1/customers/{customer_id}: {final_version:?}, {n_granted} granted, first version {v0}"),
        &final_breaches,
    ));
    if !delivered {
        seq_breaches.push("the notifications stopped before all arrived".into());
    }
    r.checks.push(Check::from_breaches(
        "every watcher saw every version exactly once (websocket editors: all but their own)",
        format!(
            "{} watchers and {} websocket editors; {received} notifications",
            opts.watchers, opts.editors
        ),
        &seq_breaches,
    ));
    r.checks.push(Check::from_breaches(
        "every watcher saw the versions in order",
        format!("{received} notifications"),
        &order_breaches,
    ));
    author_breaches.extend(bad);
    r.checks.push(Check::from_breaches(
        "each notification names the editor its version was granted to",
        "changed_by of every notification".into(),
        &author_breaches,
    ));
    let unexpected: Vec<String> = outs.iter().flat_map(|o| o.unexpected.clone()).collect();
    r.checks.push(Check::from_breaches(
        "no unexpected frames",
        format!("{} frames", outs.iter().map(|o| o.frames).sum::<u64>()),
        &unexpected,
    ));
    r.notes.push(format!(
        "editors save closed-loop (one save in flight each) on the version their last answer gave them: a granted save's version, or a conflict's version; they ignore record_changed for that{}",
        if opts.http_editors > 0 { "; HTTP editors use PATCH /v1/customers/{id} over one keep-alive connection each" } else { "" }
    ));
    r.notes.push(format!(
        "the harness and the hub share this machine's {} CPUs; the harness used {harness_cpu:.2} CPU s",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    ));
    if let Some(l) = nofile {
        r.notes.push(format!("open-file limit {l}"));
    }
    // What the echo floor is set against, over the saving window of the hub CPU figure:
    // every save read and answered (an HTTP PATCH and its response count one each), and
    // the notifications that arrived within it. The frame size is the average of the
    // websocket frames the clients read (answers and notifications).
    r.floor_basis = hub_cpu.map(|cpu| {
        let notified_in_window = outs
            .iter()
            .flat_map(|o| &o.seen)
            .filter(|s| s.1 <= saving_ns)
            .count() as u64;
        let (frames_read, bytes_read) = outs
            .iter()
            .fold((0u64, 0u64), |(f, b), o| (f + o.frames, b + o.bytes));
        crate::floor::Basis {
            vs_connect: false,
            conns: ws_conns,
            frames: attempts + live.answered.load(Ordering::Relaxed) + notified_in_window,
            window_secs: secs,
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
