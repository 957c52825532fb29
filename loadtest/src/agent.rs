//! One simulated agent desktop: a real websocket to the hub, the desktop's side of the
//! protocol (ready, accept or decline or let expire, hold, complete), the latencies it
//! sees, and the invariants it can check on its own socket.
//!
//! Each agent is one tokio task with its own state; nothing is shared with other agents
//! but the run's [`Shared`] table and counters. What it saw goes back to the run as an
//! [`AgentOutcome`] for the cross-agent checks.

use crate::hubproc::Capacity;
use crate::rng::{Delay, Rng};
use crate::shared::{Counters, Shared};
use crate::stats::HistSet;
use crate::wire::{AgentMsg, Channel, Frame, OfferMsg, rfc3339_ms};
use futures_util::{SinkExt, StreamExt};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Histogram names.
pub const H_CREATE_TO_OFFER: &str = "create -> first offer";
/// Accept sent to its reply.
pub const H_ACCEPT_RTT: &str = "accept -> reply";
/// Complete sent to its reply.
pub const H_COMPLETE_RTT: &str = "complete -> reply";
/// Decline sent to its reply.
pub const H_DECLINE_RTT: &str = "decline -> reply";
/// Close of an interaction sent to its reply.
pub const H_CLOSE_RTT: &str = "close_interaction -> reply";

/// How agents behave: the same for all of a run.
#[derive(Clone, Debug)]
pub struct AgentPlan {
    /// Delay between an offer and the agent's answer.
    pub accept: Delay,
    /// How long an accepted task is held before it is completed.
    pub handle: Delay,
    /// Share of offers left to expire.
    pub miss_share: f64,
    /// Share of offers declined.
    pub decline_share: f64,
    /// The capacity the hub gives each agent, for the capacity checks.
    pub capacity: Capacity,
    /// The Not Ready reason used at the end of the run.
    pub not_ready_reason: String,
    /// After each complete, close the interaction the accept opened (customer
    /// context), as a desktop does when the agent is done with it.
    pub close_interactions: bool,
}

/// Which agent.
#[derive(Clone, Debug)]
pub struct AgentSpec {
    /// Its index in the run.
    pub idx: u32,
    /// Its id (token `sub`).
    pub id: String,
    /// The websocket URL, token included.
    pub url: String,
    /// The run's seed.
    pub seed: u64,
}

/// What the run asks all agents to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Work.
    Run,
    /// Finish what is held, decline what is offered, go Not Ready.
    Quiesce,
    /// Close the socket.
    Close,
}

/// How one offer ended, as its agent saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// Accepted: the hub answered with the task.
    Accepted,
    /// Declined: the hub answered the decline.
    Declined,
    /// The hub said it expired (`offer_ended`).
    Expired,
    /// The hub withdrew it (`offer_ended`).
    Withdrawn,
    /// The hub refused the agent's accept or decline with this code: the offer had ended.
    Refused(String),
}

impl End {
    /// Whether the hub ended it because its deadline passed.
    pub fn by_deadline(&self) -> bool {
        matches!(self, End::Expired) || matches!(self, End::Refused(c) if c == "offer_expired")
    }
}

/// What kind of invariant a socket saw broken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A second offer arrived while one was pending.
    TwoOffers,
    /// An offer arrived after the agent went Not Ready.
    OfferWhileNotReady,
    /// Two calls at once, or an offer during a call.
    Voice,
    /// More tasks of a channel than its capacity.
    Capacity,
    /// A state frame's version did not increase.
    StateVersion,
    /// An accept was answered with the task after the offer ended.
    AcceptAfterEnd,
    /// An offer ended after its accept was answered with the task.
    EndAfterAccept,
    /// The hub refused to complete an accepted task.
    CompleteRefused,
}

/// One offer one agent received.
#[derive(Clone, Debug)]
pub struct OfferRec {
    /// The task.
    pub task_id: String,
    /// The task's sequence number in this run, from its idempotency key.
    pub seq: Option<u64>,
    /// The offer.
    pub offer_id: String,
    /// The agent's index.
    pub agent: u32,
    /// The task's offer count in the frame: 1 for its first offer.
    pub n: u32,
    /// The channel.
    pub channel: Channel,
    /// When the frame arrived (ns since the run started).
    pub recv_ns: u64,
    /// When the hub made it (ms since the epoch, hub clock): deadline - timeout.
    pub made_ms: Option<i64>,
    /// Its deadline (ms since the epoch, hub clock).
    pub deadline_ms: Option<i64>,
    /// How it ended, if the agent saw it end.
    pub end: Option<End>,
    /// When the agent sent a decline for it.
    pub decline_sent_ns: Option<u64>,
}

/// One complete the hub answered.
#[derive(Clone, Debug)]
pub struct CompleteRec {
    /// The task.
    pub task_id: String,
    /// The agent's index.
    pub agent: u32,
}

/// What one agent saw.
#[derive(Debug, Default)]
pub struct AgentOutcome {
    /// The agent's index.
    pub idx: u32,
    /// Its id.
    pub id: String,
    /// Every offer it received, in order.
    pub offers: Vec<OfferRec>,
    /// Every task whose accept the hub answered with the task.
    pub accepted: Vec<String>,
    /// Every complete the hub answered.
    pub completed: Vec<CompleteRec>,
    /// Broken invariants seen on this socket, by kind (see [`Kind`]).
    pub violations: Vec<(Kind, String)>,
    /// Why the agent could not connect or lost its connection.
    pub errors: Vec<String>,
    /// Frames and answers nobody expected (the first few).
    pub unexpected: Vec<String>,
    /// Latencies.
    pub hists: HistSet,
    /// Whether it connected and went Ready.
    pub was_ready: bool,
    /// Whether it ended Not Ready with nothing pending.
    pub quiesced: bool,
    /// Frames received.
    pub frames: u64,
    /// Frames received by type: count, bytes, largest.
    pub frame_types: std::collections::BTreeMap<String, FrameStat>,
}

/// Frames of one type.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct FrameStat {
    /// How many.
    pub count: u64,
    /// Their bytes.
    pub bytes: u64,
    /// The largest, in bytes.
    pub max_bytes: u64,
}

impl FrameStat {
    /// Counts one frame of `len` bytes.
    pub fn add(&mut self, len: usize) {
        self.count += 1;
        self.bytes += len as u64;
        self.max_bytes = self.max_bytes.max(len as u64);
    }

    /// Adds another's counts.
    pub fn merge(&mut self, o: &FrameStat) {
        self.count += o.count;
        self.bytes += o.bytes;
        self.max_bytes = self.max_bytes.max(o.max_bytes);
    }
}

#[derive(Debug)]
enum Req {
    Ready,
    NotReady,
    Accept { rec: usize, sent_ns: u64 },
    Decline { rec: usize, sent_ns: u64 },
    Complete { task_id: String, sent_ns: u64 },
    CloseInteraction { sent_ns: u64 },
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    Accept(usize),
    Decline(usize),
    Complete(String),
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Timer {
    at: Instant,
    seq: u64,
    action: Action,
}

#[derive(Debug)]
struct CurOffer {
    rec: usize,
    answering: bool,
}

#[derive(Debug)]
struct Held {
    channel: Channel,
    completing: bool,
    activity: Option<String>,
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

struct Agent {
    spec: AgentSpec,
    plan: Arc<AgentPlan>,
    shared: Arc<Shared>,
    rng: Rng,
    phase: Phase,
    next_req: u64,
    inflight: HashMap<u64, Req>,
    offer: Option<CurOffer>,
    held: HashMap<String, Held>,
    timers: BinaryHeap<Reverse<Timer>>,
    timer_seq: u64,
    ready_in_flight: bool,
    not_ready_sent: bool,
    last_version: u64,
    out: AgentOutcome,
}

/// Runs one agent until the run closes it. Connecting waits for a permit of `gate`,
/// held until the agent is Ready, so that logins are spread out.
pub async fn run_agent(
    spec: AgentSpec,
    plan: Arc<AgentPlan>,
    shared: Arc<Shared>,
    mut phase: watch::Receiver<Phase>,
    gate: Arc<Semaphore>,
) -> AgentOutcome {
    let mut a = Agent {
        rng: Rng::derive(spec.seed, u64::from(spec.idx)),
        out: AgentOutcome {
            idx: spec.idx,
            id: spec.id.clone(),
            ..AgentOutcome::default()
        },
        spec,
        plan,
        shared,
        phase: Phase::Run,
        next_req: 0,
        inflight: HashMap::new(),
        offer: None,
        held: HashMap::new(),
        timers: BinaryHeap::new(),
        timer_seq: 0,
        ready_in_flight: false,
        not_ready_sent: false,
        last_version: 0,
    };
    let permit = gate.acquire_owned().await.ok();
    let mut ws = match a.connect().await {
        Ok(ws) => ws,
        Err(e) => {
            a.out.errors.push(e);
            Counters::bump_usize(&a.shared.counters.failed_agents);
            return a.out;
        }
    };
    let mut permit = permit;
    let mut phase_open = true;
    let end: Result<(), String> = loop {
        if a.out.was_ready {
            permit.take();
        }
        let next = a.timers.peek().map(|t| t.0.at);
        let r = tokio::select! {
            biased;
            changed = phase.changed(), if phase_open => {
                let p = match changed {
                    Ok(()) => *phase.borrow_and_update(),
                    Err(_) => {
                        phase_open = false;
                        Phase::Close
                    }
                };
                a.set_phase(&mut ws, p).await
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) => a.on_text(&mut ws, t.as_str()).await,
                Some(Ok(Message::Close(c))) => Err(format!("the hub closed the socket: {c:?}")),
                Some(Ok(_)) => Ok(()),
                Some(Err(e)) => Err(format!("websocket error: {e}")),
                None => Err("the hub closed the connection".to_owned()),
            },
            _ = sleep_until(next), if next.is_some() => a.fire_timers(&mut ws).await,
        };
        if let Err(e) = r {
            break Err(e);
        }
        if a.phase == Phase::Close {
            break Ok(());
        }
    };
    match end {
        Ok(()) => {
            let _ = ws.close(None).await;
            // Read what is still coming until the hub closes too.
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while let Some(Ok(m)) = ws.next().await {
                    if let Message::Text(t) = m {
                        a.out.frames += 1;
                        if let Ok(f) = serde_json::from_str::<Frame>(t.as_str()) {
                            if f.ty == "offer" {
                                a.out.violations.push((
                                    Kind::OfferWhileNotReady,
                                    format!(
                                        "{}: offered a task while closing after going Not Ready",
                                        a.spec.id
                                    ),
                                ));
                            }
                        }
                    }
                }
            })
            .await;
        }
        Err(e) => {
            a.out.errors.push(format!("{}: {e}", a.spec.id));
            Counters::bump_usize(&a.shared.counters.failed_agents);
        }
    }
    a.out
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Agent {
    async fn connect(&mut self) -> Result<Ws, String> {
        let id = &self.spec.id;
        let mut req = self
            .spec
            .url
            .as_str()
            .into_client_request()
            .map_err(|e| format!("{id}: bad url: {e}"))?;
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(switchboard::protocol::SUBPROTOCOL),
        );
        let (mut ws, _) = tokio::time::timeout(
            Duration::from_secs(15),
            tokio_tungstenite::connect_async_with_config(
                req,
                Some(crate::client::ws_config()),
                true,
            ),
        )
        .await
        .map_err(|_| format!("{id}: websocket connect timed out"))?
        .map_err(|e| format!("{id}: websocket connect failed: {e}"))?;
        let first = tokio::time::timeout(Duration::from_secs(15), ws.next())
            .await
            .map_err(|_| format!("{id}: no welcome within 15 s"))?;
        match first {
            Some(Ok(Message::Text(t))) => {
                self.out.frames += 1;
                let f: Frame = serde_json::from_str(t.as_str())
                    .map_err(|e| format!("{id}: unreadable first frame: {e}"))?;
                if f.ty != "welcome" {
                    return Err(format!("{id}: first frame is {:?}, not welcome: {t}", f.ty));
                }
                if let Some(agent) = &f.agent {
                    self.last_version = agent.version;
                }
            }
            other => return Err(format!("{id}: no welcome: {other:?}")),
        }
        self.send_ready(&mut ws).await?;
        Ok(ws)
    }

    fn violation(&mut self, kind: Kind, what: String) {
        self.out
            .violations
            .push((kind, format!("{}: {what}", self.spec.id)));
    }

    fn unexpected(&mut self, what: String) {
        Counters::bump(&self.shared.counters.unexpected);
        if self.out.unexpected.len() < 20 {
            self.out
                .unexpected
                .push(format!("{}: {what}", self.spec.id));
        }
    }

    async fn send(&mut self, ws: &mut Ws, req: Req, body: String) -> Result<(), String> {
        self.next_req += 1;
        let id = self.next_req;
        let text = format!(r#"{{"id":"{id}",{body}}}"#);
        self.inflight.insert(id, req);
        ws.send(Message::text(text))
            .await
            .map_err(|e| format!("send failed: {e}"))
    }

    async fn send_ready(&mut self, ws: &mut Ws) -> Result<(), String> {
        if self.ready_in_flight {
            return Ok(());
        }
        self.ready_in_flight = true;
        self.send(
            ws,
            Req::Ready,
            r#""type":"set_state","state":"ready""#.to_owned(),
        )
        .await
    }

    fn schedule(&mut self, after: Duration, action: Action) {
        self.timer_seq += 1;
        self.timers.push(Reverse(Timer {
            at: Instant::now() + after,
            seq: self.timer_seq,
            action,
        }));
    }

    async fn set_phase(&mut self, ws: &mut Ws, p: Phase) -> Result<(), String> {
        self.phase = p;
        if p == Phase::Quiesce {
            self.quiesce_step(ws).await?;
        }
        Ok(())
    }

    /// At the end of a run: complete what is held, decline what is offered, then go
    /// Not Ready once nothing is pending.
    async fn quiesce_step(&mut self, ws: &mut Ws) -> Result<(), String> {
        if self.phase != Phase::Quiesce || self.out.quiesced {
            return Ok(());
        }
        if let Some(o) = &self.offer {
            if !o.answering {
                let rec = o.rec;
                self.decline(ws, rec).await?;
            }
        }
        let to_complete: Vec<String> = self
            .held
            .iter()
            .filter(|(_, h)| !h.completing)
            .map(|(t, _)| t.clone())
            .collect();
        for t in to_complete {
            self.complete(ws, &t).await?;
        }
        if self.offer.is_none()
            && self.held.is_empty()
            && self.inflight.is_empty()
            && !self.not_ready_sent
        {
            self.not_ready_sent = true;
            let body = format!(
                r#""type":"set_state","state":"not_ready","reason":{}"#,
                serde_json::Value::String(self.plan.not_ready_reason.clone())
            );
            self.send(ws, Req::NotReady, body).await?;
        }
        Ok(())
    }

    async fn fire_timers(&mut self, ws: &mut Ws) -> Result<(), String> {
        let now = Instant::now();
        while self.timers.peek().is_some_and(|t| t.0.at <= now) {
            let Some(Reverse(t)) = self.timers.pop() else {
                break;
            };
            match t.action {
                Action::Accept(rec) => self.accept(ws, rec).await?,
                Action::Decline(rec) => self.decline(ws, rec).await?,
                Action::Complete(task) => self.complete(ws, &task).await?,
            }
        }
        Ok(())
    }

    /// The current offer, if it is `rec` and not yet answered.
    fn open_offer(&mut self, rec: usize) -> bool {
        match &mut self.offer {
            Some(o) if o.rec == rec && !o.answering => {
                o.answering = true;
                true
            }
            _ => false,
        }
    }

    async fn accept(&mut self, ws: &mut Ws, rec: usize) -> Result<(), String> {
        if !self.open_offer(rec) {
            return Ok(());
        }
        let offer_id = self.out.offers[rec].offer_id.clone();
        let sent_ns = self.shared.now_ns();
        self.send(
            ws,
            Req::Accept { rec, sent_ns },
            format!(r#""type":"accept","offer_id":"{offer_id}""#),
        )
        .await
    }

    async fn decline(&mut self, ws: &mut Ws, rec: usize) -> Result<(), String> {
        if !self.open_offer(rec) {
            return Ok(());
        }
        let offer_id = self.out.offers[rec].offer_id.clone();
        let sent_ns = self.shared.now_ns();
        self.out.offers[rec].decline_sent_ns = Some(sent_ns);
        self.send(
            ws,
            Req::Decline { rec, sent_ns },
            format!(r#""type":"decline","offer_id":"{offer_id}""#),
        )
        .await
    }

    async fn complete(&mut self, ws: &mut Ws, task_id: &str) -> Result<(), String> {
        match self.held.get_mut(task_id) {
            Some(h) if !h.completing => h.completing = true,
            _ => return Ok(()),
        }
        let sent_ns = self.shared.now_ns();
        self.send(
            ws,
            Req::Complete {
                task_id: task_id.to_owned(),
                sent_ns,
            },
            format!(r#""type":"complete","task_id":"{task_id}""#),
        )
        .await
    }

    async fn on_text(&mut self, ws: &mut Ws, text: &str) -> Result<(), String> {
        let now_ns = self.shared.now_ns();
        self.out.frames += 1;
        Counters::bump(&self.shared.counters.frames_in);
        let f: Frame = match serde_json::from_str(text) {
            Ok(f) => f,
            Err(e) => {
                let head: String = text.chars().take(200).collect();
                self.unexpected(format!("unreadable frame ({e}): {head}"));
                return Ok(());
            }
        };
        match self.out.frame_types.get_mut(f.ty.as_str()) {
            Some(st) => st.add(text.len()),
            None => {
                let mut st = FrameStat::default();
                st.add(text.len());
                self.out.frame_types.insert(f.ty.clone(), st);
            }
        }
        match f.ty.as_str() {
            "offer" => match f.offer {
                Some(o) => self.on_offer(ws, o, now_ns).await?,
                None => self.unexpected("offer frame without an offer".into()),
            },
            "offer_ended" => {
                let (Some(offer_id), reason) = (f.offer_id, f.reason) else {
                    self.unexpected("offer_ended without offer_id".into());
                    return Ok(());
                };
                self.on_offer_ended(ws, &offer_id, reason.as_deref().unwrap_or(""))
                    .await?;
            }
            "reply" | "error" => {
                let Some(re) = f.re.as_deref().and_then(|r| r.parse::<u64>().ok()) else {
                    self.unexpected(format!(
                        "{} with no request id: {} {}",
                        f.ty,
                        f.code.unwrap_or_default(),
                        f.message.unwrap_or_default()
                    ));
                    return Ok(());
                };
                let result = if f.ty == "reply" {
                    Ok(f.result.and_then(|r| r.activity).map(|a| a.activity_id))
                } else {
                    Err((f.code.unwrap_or_default(), f.message.unwrap_or_default()))
                };
                self.on_reply(ws, re, result, now_ns).await?;
            }
            "state" => {
                if let Some(agent) = f.agent {
                    self.on_state(&agent);
                }
            }
            "task_cancelled" => {
                self.unexpected(format!(
                    "task {} cancelled in progress (the harness cancels nothing)",
                    f.task_id.unwrap_or_default()
                ));
            }
            "goodbye" if self.phase != Phase::Close => {
                return Err(format!(
                    "the hub said goodbye: {}",
                    f.reason.unwrap_or_default()
                ));
            }
            "pong" | "welcome" => {}
            // Pushes this scenario does not act on (customer lists, record changes, and
            // whatever later protocol versions add): counted, not judged.
            _ => {}
        }
        if self.phase == Phase::Quiesce {
            self.quiesce_step(ws).await?;
        }
        Ok(())
    }

    async fn on_offer(&mut self, ws: &mut Ws, o: OfferMsg, now_ns: u64) -> Result<(), String> {
        let c = &self.shared.counters;
        Counters::bump(&c.offers);
        let seq = o
            .task
            .idempotency_key
            .as_deref()
            .and_then(|k| self.shared.seq_of(k));
        if o.task.offers == 1 {
            Counters::bump(&c.first_offers);
            if let Some(sent) = seq.and_then(|s| self.shared.sent_ns(s)) {
                self.out
                    .hists
                    .get(H_CREATE_TO_OFFER)
                    .record_ns_span(sent, now_ns);
                self.shared.mark_c2o(sent, now_ns.saturating_sub(sent));
            }
        }
        let deadline_ms = rfc3339_ms(&o.deadline);
        let rec = OfferRec {
            task_id: o.task.task_id.clone(),
            seq,
            offer_id: o.offer_id.clone(),
            agent: self.spec.idx,
            n: o.task.offers,
            channel: o.task.channel,
            recv_ns: now_ns,
            made_ms: deadline_ms.map(|d| d - o.timeout_ms as i64),
            deadline_ms,
            end: None,
            decline_sent_ns: None,
        };
        // What the agent holds when the offer arrives: the hub must not offer beyond it.
        if let Some(cur) = &self.offer {
            let prev = &self.out.offers[cur.rec];
            let what = format!(
                "offer {} (task {}) arrived while offer {} (task {}) was still pending",
                rec.offer_id, rec.task_id, prev.offer_id, prev.task_id
            );
            self.violation(Kind::TwoOffers, what);
        }
        if self.out.quiesced {
            self.violation(
                Kind::OfferWhileNotReady,
                format!(
                    "offer {} arrived after the agent went Not Ready",
                    rec.offer_id
                ),
            );
        }
        let mut load = [0u32; 3];
        for h in self.held.values() {
            load[h.channel.index()] += 1;
        }
        if load[Channel::Voice.index()] > 0 {
            self.violation(
                Kind::Voice,
                format!(
                    "offer {} ({}) arrived while the agent was on a call",
                    rec.offer_id,
                    rec.channel.as_str()
                ),
            );
        }
        let cap = self.plan.capacity;
        let limit = [cap.voice.min(1), cap.chat, cap.email][rec.channel.index()];
        if load[rec.channel.index()] + 1 > limit {
            self.violation(
                Kind::Capacity,
                format!(
                    "offer {} would make {} {} tasks, capacity {}",
                    rec.offer_id,
                    load[rec.channel.index()] + 1,
                    rec.channel.as_str(),
                    limit
                ),
            );
        }
        let idx = self.out.offers.len();
        self.out.offers.push(rec);
        if self.offer.is_none() {
            Counters::bump(&self.shared.counters.pending_offers);
        }
        self.offer = Some(CurOffer {
            rec: idx,
            answering: false,
        });
        match self.phase {
            Phase::Run => {
                let r = self.rng.unit();
                let delay = self.plan.accept.sample(&mut self.rng);
                if r < self.plan.miss_share {
                    // Left to expire.
                } else if r < self.plan.miss_share + self.plan.decline_share {
                    if delay.is_zero() {
                        self.decline(ws, idx).await?;
                    } else {
                        self.schedule(delay, Action::Decline(idx));
                    }
                } else if delay.is_zero() {
                    self.accept(ws, idx).await?;
                } else {
                    self.schedule(delay, Action::Accept(idx));
                }
            }
            Phase::Quiesce => self.decline(ws, idx).await?,
            Phase::Close => {}
        }
        Ok(())
    }

    fn end_offer(&mut self, rec: usize, end: End) {
        if let Some(r) = self.out.offers.get_mut(rec) {
            if r.end.is_none() {
                r.end = Some(end);
            }
        }
        if self.offer.as_ref().is_some_and(|o| o.rec == rec) {
            self.offer = None;
            Counters::drop_one(&self.shared.counters.pending_offers);
        }
    }

    async fn on_offer_ended(
        &mut self,
        ws: &mut Ws,
        offer_id: &str,
        reason: &str,
    ) -> Result<(), String> {
        // The offer is the current one, or one whose answer was just refused.
        let found = self
            .out
            .offers
            .iter()
            .rev()
            .take(8)
            .position(|r| r.offer_id == offer_id)
            .map(|p| self.out.offers.len() - 1 - p);
        let Some(rec) = found else {
            self.unexpected(format!(
                "offer_ended for an offer never received: {offer_id}"
            ));
            return Ok(());
        };
        if self.out.offers[rec].end == Some(End::Accepted) {
            self.violation(
                Kind::EndAfterAccept,
                format!(
                    "offer {offer_id} ended ({reason}) after its accept was answered with the task"
                ),
            );
        }
        let end = match reason {
            "expired" => {
                Counters::bump(&self.shared.counters.expired);
                End::Expired
            }
            "withdrawn" => End::Withdrawn,
            other => {
                self.unexpected(format!("offer_ended with reason {other:?}"));
                End::Withdrawn
            }
        };
        let expired = end == End::Expired;
        self.end_offer(rec, end);
        // A missed offer sets the agent Not Ready (missed_offer): back to work.
        if expired && self.phase == Phase::Run {
            self.send_ready(ws).await?;
        }
        Ok(())
    }

    async fn on_reply(
        &mut self,
        ws: &mut Ws,
        re: u64,
        result: Result<Option<String>, (String, String)>,
        now_ns: u64,
    ) -> Result<(), String> {
        let Some(req) = self.inflight.remove(&re) else {
            self.unexpected(format!("answer to an unknown request {re}"));
            return Ok(());
        };
        match (req, result) {
            (Req::Ready, Ok(_)) => {
                self.ready_in_flight = false;
                if !self.out.was_ready {
                    self.out.was_ready = true;
                    Counters::bump_usize(&self.shared.counters.ready_agents);
                }
            }
            (Req::Ready, Err((code, msg))) => {
                self.ready_in_flight = false;
                self.unexpected(format!("set_state ready refused: {code} {msg}"));
            }
            (Req::NotReady, Ok(_)) => {
                self.out.quiesced = true;
                Counters::bump_usize(&self.shared.counters.quiesced_agents);
            }
            (Req::NotReady, Err((code, _))) if code == "offer_pending" => {
                // An offer crossed the request: decline it, then try again.
                self.not_ready_sent = false;
            }
            (Req::NotReady, Err((code, msg))) => {
                self.unexpected(format!("set_state not_ready refused: {code} {msg}"));
            }
            (Req::Accept { rec, sent_ns }, Ok(activity)) => {
                self.out
                    .hists
                    .get(H_ACCEPT_RTT)
                    .record_ns_span(sent_ns, now_ns);
                Counters::bump(&self.shared.counters.accepted);
                let (task_id, channel) = {
                    let r = &self.out.offers[rec];
                    (r.task_id.clone(), r.channel)
                };
                if self.out.offers[rec].end.is_some() {
                    let what = format!(
                        "accept of offer {} answered with the task after the offer ended ({:?})",
                        self.out.offers[rec].offer_id, self.out.offers[rec].end
                    );
                    self.violation(Kind::AcceptAfterEnd, what);
                }
                self.end_offer(rec, End::Accepted);
                if channel == Channel::Voice
                    && self.held.values().any(|h| h.channel == Channel::Voice)
                {
                    self.violation(
                        Kind::Voice,
                        format!("assigned a second call ({task_id}) while on a call"),
                    );
                }
                self.out.accepted.push(task_id.clone());
                Counters::bump(&self.shared.counters.held);
                self.held.insert(
                    task_id.clone(),
                    Held {
                        channel,
                        completing: false,
                        activity,
                    },
                );
                let hold = self.plan.handle.sample(&mut self.rng);
                if hold.is_zero() || self.phase != Phase::Run {
                    self.complete(ws, &task_id).await?;
                } else {
                    self.schedule(hold, Action::Complete(task_id));
                }
            }
            (Req::Accept { rec, .. }, Err((code, _)))
            | (Req::Decline { rec, .. }, Err((code, _))) => {
                Counters::bump(&self.shared.counters.refused);
                let by_deadline = code == "offer_expired";
                self.end_offer(rec, End::Refused(code));
                if by_deadline && self.phase == Phase::Run {
                    self.send_ready(ws).await?;
                }
            }
            (Req::Decline { rec, sent_ns }, Ok(_)) => {
                self.out
                    .hists
                    .get(H_DECLINE_RTT)
                    .record_ns_span(sent_ns, now_ns);
                Counters::bump(&self.shared.counters.declined);
                self.end_offer(rec, End::Declined);
            }
            (Req::Complete { task_id, sent_ns }, Ok(_)) => {
                self.out
                    .hists
                    .get(H_COMPLETE_RTT)
                    .record_ns_span(sent_ns, now_ns);
                Counters::bump(&self.shared.counters.completed);
                self.shared.mark_completion(now_ns);
                let activity = self.held.remove(&task_id).and_then(|h| {
                    Counters::drop_one(&self.shared.counters.held);
                    h.activity
                });
                if let (true, Some(a)) = (self.plan.close_interactions, activity) {
                    let sent_ns = self.shared.now_ns();
                    self.send(
                        ws,
                        Req::CloseInteraction { sent_ns },
                        format!(
                            r#""type":"close_interaction","activity_id":"{a}","choice":"discard""#
                        ),
                    )
                    .await?;
                }
                self.out.completed.push(CompleteRec {
                    task_id,
                    agent: self.spec.idx,
                });
            }
            (Req::CloseInteraction { sent_ns }, Ok(_)) => {
                self.out
                    .hists
                    .get(H_CLOSE_RTT)
                    .record_ns_span(sent_ns, now_ns);
            }
            (Req::CloseInteraction { .. }, Err((code, msg))) => {
                self.unexpected(format!("close_interaction refused: {code} {msg}"));
            }
            (Req::Complete { task_id, .. }, Err((code, msg))) => {
                if self.held.remove(&task_id).is_some() {
                    Counters::drop_one(&self.shared.counters.held);
                }
                self.violation(
                    Kind::CompleteRefused,
                    format!("complete of task {task_id} refused: {code} {msg}"),
                );
            }
        }
        Ok(())
    }

    fn on_state(&mut self, agent: &AgentMsg) {
        if agent.version <= self.last_version {
            let what = format!(
                "state version went from {} to {} (status {})",
                self.last_version, agent.version, agent.status
            );
            self.violation(Kind::StateVersion, what);
        }
        self.last_version = self.last_version.max(agent.version);
        let mut load = [0u32; 3];
        for t in &agent.in_progress {
            load[t.channel.index()] += 1;
        }
        let cap = self.plan.capacity;
        if load[0] > 1 {
            self.violation(
                Kind::Voice,
                format!("the hub shows {} calls in progress at once", load[0]),
            );
        }
        if load[1] > cap.chat || load[2] > cap.email {
            self.violation(
                Kind::Capacity,
                format!(
                    "the hub shows {} chats and {} emails in progress, capacity {} and {}",
                    load[1], load[2], cap.chat, cap.email
                ),
            );
        }
    }
}
