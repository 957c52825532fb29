//! One reconnecting desktop of the `reconnect` scenario: its steps through the run's
//! phases (log in, take its offer, hold, drop, reconnect, act, finish), the hub's
//! frames as far as it reads them, and what it saw.

use super::{DropMode, H_ACCEPT, H_AWAY, H_COMPLETE, H_LOGIN, H_RESUME};
use crate::client::{self, Ws};
use crate::stats::HistSet;
use crate::wire::{OfferMsg, TaskMsg};
use futures_util::StreamExt;
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::tungstenite::Message;

/// Where the run is; every agent follows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// Log in, go Ready, take the one offer.
    Setup,
    /// Accept (Busy agents), then note what the hub says is held.
    Hold,
    /// Drop at this instant plus the agent's wave, pause, reconnect, act.
    Drop(tokio::time::Instant),
    /// Complete what is held, go Not Ready, check nothing is left.
    Finish,
    /// Close the sockets.
    Close,
    /// Give up.
    Abort,
}

impl Phase {
    /// The rank of [`Phase::Drop`], whatever its instant.
    pub(super) const DROP: u8 = 2;

    pub(super) fn rank(self) -> u8 {
        match self {
            Phase::Setup => 0,
            Phase::Hold => 1,
            Phase::Drop(_) => Phase::DROP,
            Phase::Finish => 3,
            Phase::Close => 4,
            Phase::Abort => 5,
        }
    }
}

/// The parts of the hub's frames this scenario reads.
#[derive(Debug, Deserialize)]
pub(super) struct RFrame {
    #[serde(rename = "type")]
    pub(super) ty: String,
    #[serde(default)]
    pub(super) re: Option<String>,
    #[serde(default)]
    pub(super) resumed: Option<bool>,
    #[serde(default)]
    pub(super) agent: Option<RAgent>,
    #[serde(default)]
    pub(super) offer: Option<OfferMsg>,
    #[serde(default)]
    pub(super) offer_id: Option<String>,
    #[serde(default)]
    pub(super) task_id: Option<String>,
    #[serde(default)]
    pub(super) reason: Option<String>,
    #[serde(default)]
    pub(super) code: Option<String>,
    #[serde(default)]
    pub(super) result: Option<RResult>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RResult {
    #[serde(default)]
    pub(super) task: Option<TaskMsg>,
    #[serde(default)]
    pub(super) agent: Option<RAgent>,
}

/// An AgentView, as far as it is compared.
#[derive(Debug, Deserialize)]
pub(super) struct RAgent {
    pub(super) status: String,
    #[serde(default)]
    pub(super) connected: Option<bool>,
    #[serde(default)]
    pub(super) offer: Option<OfferMsg>,
    #[serde(default)]
    pub(super) in_progress: Vec<TaskMsg>,
}

/// What an agent holds, per the hub: its status, its pending offer (offer id, task id,
/// deadline) and its In Progress tasks (sorted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Held {
    pub(super) status: String,
    pub(super) offer: Option<(String, String, String)>,
    pub(super) in_progress: Vec<String>,
}

impl Held {
    pub(super) fn of(a: &RAgent) -> Held {
        let mut in_progress: Vec<String> =
            a.in_progress.iter().map(|t| t.task_id.clone()).collect();
        in_progress.sort();
        Held {
            status: a.status.clone(),
            offer: a.offer.as_ref().map(|o| {
                (
                    o.offer_id.clone(),
                    o.task.task_id.clone(),
                    o.deadline.clone(),
                )
            }),
            in_progress,
        }
    }

    pub(super) fn describe(&self) -> String {
        format!(
            "{}, offer {}, in progress [{}]",
            self.status,
            match &self.offer {
                Some((o, t, d)) => format!("{o} (task {t}, deadline {d})"),
                None => "none".into(),
            },
            self.in_progress.join(", ")
        )
    }
}

/// Counters every agent bumps, for the waits and the progress lines.
pub(super) struct Live {
    pub(super) t0: Instant,
    pub(super) ready: AtomicUsize,
    pub(super) offered: AtomicUsize,
    pub(super) held: AtomicUsize,
    pub(super) dropped: AtomicUsize,
    pub(super) welcomed: AtomicUsize,
    pub(super) resumed: AtomicUsize,
    pub(super) acted: AtomicUsize,
    pub(super) finished: AtomicUsize,
    pub(super) failed: AtomicUsize,
    pub(super) created: AtomicU64,
    pub(super) frames: AtomicU64,
}

impl Live {
    pub(super) fn bump(c: &AtomicUsize) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn get(c: &AtomicUsize) -> usize {
        c.load(Ordering::Relaxed)
    }
}

pub(super) struct Ctx {
    pub(super) addrs: Vec<SocketAddr>,
    pub(super) live: Arc<Live>,
    pub(super) gate: Arc<Semaphore>,
    pub(super) spread: usize,
    pub(super) drop: DropMode,
    pub(super) pause: Duration,
    pub(super) waves: usize,
    pub(super) wave_gap: Duration,
}

/// One agent.
pub(super) struct Spec {
    pub(super) idx: usize,
    pub(super) id: String,
    pub(super) token: String,
    pub(super) busy: bool,
}

/// What one agent saw.
#[derive(Debug, Default)]
pub(super) struct Out {
    pub(super) idx: usize,
    pub(super) id: String,
    pub(super) busy: bool,
    /// The node it logged in to, and the one it reconnected to.
    pub(super) nodes: (usize, usize),
    /// Why it stopped early.
    pub(super) error: Option<String>,
    /// Its one offer: offer id, task id, deadline, timeout.
    pub(super) offer: Option<(String, String, String, u64)>,
    /// What the hub said it held just before the drop (`get_state`).
    pub(super) before: Option<Held>,
    /// The welcome after the reconnect: `resumed`, and what it said was held.
    pub(super) after: Option<(bool, Held, bool)>,
    /// The drop -> welcome time, in µs.
    pub(super) away_us: Option<u64>,
    /// The breaches of the steps before the drop (the hub's view not as expected).
    pub(super) setup_breaches: Vec<String>,
    /// Accepts or completes after the resume that were refused.
    pub(super) act_breaches: Vec<String>,
    /// Offers, offer ends and cancellations after its one offer.
    pub(super) strays: Vec<String>,
    /// Other frames nobody expected.
    pub(super) unexpected: Vec<String>,
    /// Tasks whose complete was answered.
    pub(super) completed: Vec<String>,
    /// The accept after the resume was answered with the task.
    pub(super) accepted_after: bool,
    /// Ended Not Ready with nothing held.
    pub(super) settled: Option<Result<(), String>>,
    /// Stale mode: the goodbye the old socket got (or why none).
    pub(super) replaced: Option<Result<String, String>>,
    pub(super) frames: u64,
    /// The text of the frames read, bytes.
    pub(super) bytes: u64,
    /// Its frames in the window of the hub CPU figure (the drop to having acted), read
    /// and written, handshakes included (see [`steps`]).
    pub(super) window_frames: u64,
    /// Of those, the text frames read, and their bytes (the floor's frame size).
    pub(super) window_read: u64,
    pub(super) window_bytes: u64,
    pub(super) hists: HistSet,
}

pub(super) fn note(v: &mut Vec<String>, what: String) {
    if v.len() < 5 {
        v.push(what);
    }
}

impl Out {
    /// One frame read while nothing in particular was awaited.
    pub(super) fn frame(&mut self, live: &Live, text: &str) {
        self.frames += 1;
        self.bytes += text.len() as u64;
        live.frames.fetch_add(1, Ordering::Relaxed);
        let f: RFrame = match serde_json::from_str(text) {
            Ok(f) => f,
            Err(e) => {
                note(
                    &mut self.unexpected,
                    format!("{}: unreadable frame ({e})", self.id),
                );
                return;
            }
        };
        match f.ty.as_str() {
            "state" => {}
            "offer" => match f.offer {
                Some(o) if self.offer.is_none() && self.before.is_none() => {
                    self.offer = Some((o.offer_id, o.task.task_id, o.deadline, o.timeout_ms));
                    Live::bump(&live.offered);
                }
                Some(o) => note(
                    &mut self.strays,
                    format!(
                        "{}: offered task {} (offer {}, its offer #{}) after it {}",
                        self.id,
                        o.task.task_id,
                        o.offer_id,
                        o.task.offers,
                        if self.before.is_some() {
                            "held its own work"
                        } else {
                            "had one offer"
                        }
                    ),
                ),
                None => note(
                    &mut self.unexpected,
                    format!("{}: offer frame without an offer", self.id),
                ),
            },
            "offer_ended" | "task_cancelled" => note(
                &mut self.strays,
                format!(
                    "{}: {} offer {:?} task {:?} reason {:?}",
                    self.id, f.ty, f.offer_id, f.task_id, f.reason
                ),
            ),
            other => note(
                &mut self.unexpected,
                format!(
                    "{}: {other} re {:?} code {:?} reason {:?}",
                    self.id, f.re, f.code, f.reason
                ),
            ),
        }
    }
}

/// Why an agent stopped before the end.
pub(super) enum Halt {
    Aborted,
    Failed(String),
}

impl From<String> for Halt {
    fn from(s: String) -> Halt {
        Halt::Failed(s)
    }
}

/// Reads frames until the run reaches phase `rank` (or the deadline passes); returns
/// the phase.
pub(super) async fn until(
    ws: &mut Ws,
    rx: &mut watch::Receiver<Phase>,
    rank: u8,
    deadline: Option<tokio::time::Instant>,
    out: &mut Out,
    live: &Live,
) -> Result<Phase, Halt> {
    loop {
        let p = *rx.borrow_and_update();
        if p == Phase::Abort {
            return Err(Halt::Aborted);
        }
        if p.rank() >= rank {
            return Ok(p);
        }
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = sleep => return Ok(p),
            r = rx.changed() => if r.is_err() { return Err(Halt::Aborted) },
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) => out.frame(live, t.as_str()),
                Some(Ok(Message::Close(c))) => return Err(format!("closed by the hub: {c:?}").into()),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("websocket error: {e}").into()),
                None => return Err("connection closed".to_owned().into()),
            },
        }
    }
}

/// Sends a request and reads its answer; frames in between go to `out`.
pub(super) async fn ask(
    ws: &mut Ws,
    id: &str,
    body: &str,
    out: &mut Out,
    live: &Live,
) -> Result<(RFrame, String), String> {
    let (_, text) = client::request(ws, id, body, |t| out.frame(live, t)).await?;
    out.frames += 1;
    out.bytes += text.len() as u64;
    live.frames.fetch_add(1, Ordering::Relaxed);
    let f: RFrame =
        serde_json::from_str(&text).map_err(|e| format!("unreadable answer ({e}): {text}"))?;
    Ok((f, text))
}

/// The hub's view of the agent now.
pub(super) async fn get_state(
    ws: &mut Ws,
    id: &str,
    out: &mut Out,
    live: &Live,
) -> Result<Held, String> {
    let (f, text) = ask(ws, id, r#""type":"get_state""#, out, live).await?;
    match f.result.and_then(|r| r.agent) {
        Some(a) if f.ty == "reply" => Ok(Held::of(&a)),
        _ => Err(format!("get_state refused: {text}")),
    }
}

/// Accepts an offer; `Ok` with the task id when the reply carries it, assigned.
pub(super) async fn accept(
    ws: &mut Ws,
    offer_id: &str,
    out: &mut Out,
    live: &Live,
) -> Result<String, String> {
    let body = format!(r#""type":"accept","offer_id":"{offer_id}""#);
    let (f, text) = ask(ws, "acc", &body, out, live).await?;
    match f.result.and_then(|r| r.task) {
        Some(t) if f.ty == "reply" && t.state.as_deref() == Some("assigned") => Ok(t.task_id),
        _ => Err(format!("accept of offer {offer_id} refused: {text}")),
    }
}

/// Completes a task; `Ok` when the reply carries it, completed.
pub(super) async fn complete(
    ws: &mut Ws,
    task_id: &str,
    out: &mut Out,
    live: &Live,
) -> Result<(), String> {
    let body = format!(r#""type":"complete","task_id":"{task_id}""#);
    let (f, text) = ask(ws, "cmp", &body, out, live).await?;
    match f.result.and_then(|r| r.task) {
        Some(t)
            if f.ty == "reply"
                && t.task_id == task_id
                && t.state.as_deref() == Some("completed") =>
        {
            Ok(())
        }
        _ => Err(format!("complete of task {task_id} refused: {text}")),
    }
}

pub(super) async fn agent(ctx: Arc<Ctx>, spec: Spec, mut rx: watch::Receiver<Phase>) -> Out {
    let n = ctx.addrs.len().max(1);
    let node0 = spec.idx % n;
    let mut out = Out {
        idx: spec.idx,
        id: spec.id.clone(),
        busy: spec.busy,
        nodes: (node0, (node0 + 1) % n),
        ..Out::default()
    };
    match steps(&ctx, &spec, &mut rx, &mut out).await {
        Ok(()) | Err(Halt::Aborted) => {}
        Err(Halt::Failed(e)) => {
            out.error = Some(format!("{}: {e}", spec.id));
            Live::bump(&ctx.live.failed);
        }
    }
    out
}

pub(super) async fn steps(
    ctx: &Ctx,
    spec: &Spec,
    rx: &mut watch::Receiver<Phase>,
    out: &mut Out,
) -> Result<(), Halt> {
    let live = &*ctx.live;
    let src = client::source_addr(spec.idx, ctx.spread);
    let (node0, node1) = out.nodes;
    // Log in, go Ready.
    let mut ws = {
        let _permit = ctx.gate.acquire().await.map_err(|e| e.to_string())?;
        let t = Instant::now();
        let ws = client::agent_connect(ctx.addrs[node0], &spec.token, src).await?;
        out.hists.get(H_LOGIN).record(t.elapsed());
        ws
    };
    let (f, text) = ask(
        &mut ws,
        "ready",
        r#""type":"set_state","state":"ready""#,
        out,
        live,
    )
    .await?;
    if f.ty != "reply" {
        return Err(format!("set_state ready refused: {text}").into());
    }
    Live::bump(&live.ready);

    // Take the one offer; accept it if Busy; note what the hub says is held.
    until(&mut ws, rx, Phase::Hold.rank(), None, out, live).await?;
    let Some((offer_id, task_id, deadline, _)) = out.offer.clone() else {
        return Err("no offer came before the drop".to_owned().into());
    };
    if spec.busy {
        let got = accept(&mut ws, &offer_id, out, live).await?;
        if got != task_id {
            return Err(format!(
                "accept of offer {offer_id} answered with task {got}, not {task_id}"
            )
            .into());
        }
    }
    let before = get_state(&mut ws, "before", out, live).await?;
    let want = if spec.busy {
        Held {
            status: "busy".into(),
            offer: None,
            in_progress: vec![task_id.clone()],
        }
    } else {
        Held {
            status: "reserved".into(),
            offer: Some((offer_id.clone(), task_id.clone(), deadline)),
            in_progress: Vec::new(),
        }
    };
    if before != want {
        note(
            &mut out.setup_breaches,
            format!(
                "{}: before the drop the hub says {}, expected {}",
                spec.id,
                before.describe(),
                want.describe()
            ),
        );
    }
    out.before = Some(before.clone());
    Live::bump(&live.held);

    // Drop, pause, reconnect.
    let Phase::Drop(t0) = until(&mut ws, rx, Phase::DROP, None, out, live).await? else {
        return Err("the run skipped the drop".to_owned().into());
    };
    let (frames0, bytes0) = (out.frames, out.bytes);
    let at = t0 + ctx.wave_gap * (spec.idx % ctx.waves.max(1)) as u32;
    until(&mut ws, rx, Phase::Finish.rank(), Some(at), out, live).await?;
    let dropped = Instant::now();
    let stale = match ctx.drop {
        DropMode::Rst => {
            let _ = ws.get_ref().set_zero_linger();
            drop(ws);
            None
        }
        DropMode::Fin => {
            drop(ws);
            None
        }
        DropMode::Close => {
            client::close(&mut ws).await;
            drop(ws);
            None
        }
        DropMode::Stale => Some(ws),
    };
    Live::bump(&live.dropped);
    tokio::time::sleep(ctx.pause).await;
    let path = format!("/v1/ws?access_token={}", spec.token);
    let t = Instant::now();
    let mut ws = client::ws_connect(ctx.addrs[node1], &path, src, true)
        .await
        .map_err(|e| format!("reconnect: {e}"))?;
    let first = client::next_text(&mut ws, client::CONNECT_TIMEOUT)
        .await
        .map_err(|e| format!("reconnect: {e}"))?;
    let took = t.elapsed();
    let away = dropped.elapsed();
    out.frames += 1;
    out.bytes += first.len() as u64;
    live.frames.fetch_add(1, Ordering::Relaxed);
    let f: RFrame = serde_json::from_str(&first)
        .map_err(|e| format!("reconnect: unreadable first frame ({e})"))?;
    let (resumed, view) = match (f.ty.as_str(), f.agent) {
        ("welcome", Some(a)) => (f.resumed == Some(true), a),
        _ => {
            let head: String = first.chars().take(200).collect();
            return Err(format!("reconnect: first frame is not a welcome: {head}").into());
        }
    };
    out.hists.get(H_RESUME).record(took);
    out.hists.get(H_AWAY).record(away);
    out.away_us = Some(away.as_micros() as u64);
    let after = Held::of(&view);
    out.after = Some((resumed, after.clone(), view.connected.unwrap_or(false)));
    Live::bump(&live.welcomed);
    if resumed {
        Live::bump(&live.resumed);
    }

    // Act at once, on what the welcome says is held.
    let mut requests = 0u64;
    if let Some((offer_id, task_id, _)) = &after.offer {
        requests += 1;
        let t = Instant::now();
        match accept(&mut ws, offer_id, out, live).await {
            Ok(got) if &got == task_id => {
                out.hists.get(H_ACCEPT).record(t.elapsed());
                out.accepted_after = true;
            }
            Ok(got) => note(
                &mut out.act_breaches,
                format!(
                    "{}: accept of offer {offer_id} answered with task {got}, not {task_id}",
                    spec.id
                ),
            ),
            Err(e) => note(&mut out.act_breaches, format!("{}: {e}", spec.id)),
        }
    }
    for task in &after.in_progress {
        requests += 1;
        let t = Instant::now();
        match complete(&mut ws, task, out, live).await {
            Ok(()) => {
                out.hists.get(H_COMPLETE).record(t.elapsed());
                out.completed.push(task.clone());
            }
            Err(e) => note(&mut out.act_breaches, format!("{}: {e}", spec.id)),
        }
    }
    // The frames of the window, for the echo floor: those read since the drop (the
    // welcome, the answers, anything else), the requests sent, the new socket's upgrade
    // handshake as 2 (its request and the 101 response, which the hub reads and
    // writes as it does a frame), and the old socket's end where it has frames: the
    // close handshake (2) or, when stale, the goodbye `replaced` the hub writes at the
    // takeover (1).
    out.window_read = out.frames - frames0;
    out.window_bytes = out.bytes - bytes0;
    out.window_frames = out.window_read
        + requests
        + 2
        + match ctx.drop {
            DropMode::Close => 2,
            DropMode::Stale => 1,
            DropMode::Rst | DropMode::Fin => 0,
        };
    Live::bump(&live.acted);
    if let Some(mut old) = stale {
        out.replaced = Some(goodbye_of(&mut old).await);
    }

    // Finish: complete what the accept gave, go Not Ready, nothing may be left.
    until(&mut ws, rx, Phase::Finish.rank(), None, out, live).await?;
    if out.accepted_after {
        if let Some((_, task_id, _)) = &after.offer {
            match complete(&mut ws, task_id, out, live).await {
                Ok(()) => out.completed.push(task_id.clone()),
                Err(e) => note(&mut out.act_breaches, format!("{}: {e}", spec.id)),
            }
        }
    }
    let (f, text) = ask(
        &mut ws,
        "nr",
        r#""type":"set_state","state":"not_ready","reason":"break""#,
        out,
        live,
    )
    .await?;
    let end = get_state(&mut ws, "end", out, live).await?;
    out.settled = Some(if f.ty != "reply" {
        Err(format!("{}: set_state not_ready refused: {text}", spec.id))
    } else if end.offer.is_some() || !end.in_progress.is_empty() {
        Err(format!(
            "{}: still holds {} at the end",
            spec.id,
            end.describe()
        ))
    } else {
        Ok(())
    });
    Live::bump(&live.finished);
    until(&mut ws, rx, Phase::Close.rank(), None, out, live).await?;
    client::close(&mut ws).await;
    Ok(())
}

/// Stale mode: reads the old socket for the hub's goodbye (it should be `replaced`).
pub(super) async fn goodbye_of(old: &mut Ws) -> Result<String, String> {
    let end = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let left = end.saturating_duration_since(tokio::time::Instant::now());
        let text = client::next_text(old, left).await?;
        if let Ok(f) = serde_json::from_str::<RFrame>(&text) {
            if f.ty == "goodbye" {
                return Ok(f.reason.unwrap_or_default());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_resumed_welcome() {
        let f: RFrame = serde_json::from_str(
            r#"{"type":"welcome","session_id":"s","protocol":"switchboard.v1","resumed":true,"heartbeat_ms":25000,
               "agent":{"agent_id":"a","name":"A","status":"reserved","reason":null,"since":"2026-05-01T12:34:56.789Z",
               "connected":true,"offer":{"offer_id":"o1","deadline":"2026-05-01T12:36:56.789Z","timeout_ms":120000,
               "task":{"task_id":"t1","channel":"chat","state":"offered","offers":1}},"in_progress":[],"wrap_up":null,"version":7},
               "lists":{"open":[],"recent":[]}}"#,
        )
        .expect("parse");
        assert_eq!(f.resumed, Some(true));
        let a = f.agent.expect("agent");
        let h = Held::of(&a);
        assert_eq!(h.status, "reserved");
        assert_eq!(
            h.offer,
            Some(("o1".into(), "t1".into(), "2026-05-01T12:36:56.789Z".into()))
        );
        assert!(h.in_progress.is_empty());
        assert_eq!(a.connected, Some(true));
    }
}
