//! One endpoint's delivery on the node that holds its lease: read events from the
//! position, send them (in order per task and per agent, in parallel otherwise, at
//! most `max_in_flight` at once), retry each on the schedule until it succeeds, and
//! write the position forward in batches under the lease's fencing token.
//!
//! At least once, never skipped: the position moves only over a prefix of events that
//! are done (delivered, not of the endpoint's types, or an offer past its deadline),
//! so whoever resumes from it (this node after a restart, another node after this
//! one died) repeats at most what was in flight, with the same `webhook-id`. An event
//! that cannot be delivered stops the endpoint at that event (410, or every retry
//! failed): disabled, never skipped.

use super::client::{Client, SendError};
use super::config::{WebhooksConfig, matches};
use super::feed::{Envelope, Feed, Reader};
use super::signing::{self, Secret};
use super::window::Window;
use crate::clock::{Clock, Ts};
use crate::error::HubError;
use crate::events::EventData;
use axum::body::Bytes;
use axum::http::{HeaderName, HeaderValue};
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;
use tokio::sync::watch;

/// What a delivering runner asks of the replicated state.
#[async_trait::async_trait]
pub trait Control: Send + Sync + 'static {
    /// Writes the position; `false` when the token is no longer the holder's.
    async fn advance(&self, id: &str, token: u64, position: u64) -> Result<bool, HubError>;
    /// Disables the endpoint (if the token is still the holder's).
    async fn disable(&self, id: &str, token: u64, reason: String) -> Result<(), HubError>;
}

/// One attempt, as `GET /v1/webhooks/{id}/attempts` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct Attempt {
    /// The event id (`webhook-id`).
    pub event_id: String,
    /// Its sequence number.
    pub seq: u64,
    /// Its type.
    pub event_type: &'static str,
    /// 1 for the first attempt of this event on this node.
    pub attempt: u32,
    /// When it started.
    pub at: Ts,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
    /// `delivered`, `failed`, `expired` (an offer past its deadline: not sent) or
    /// `gone` (410: the endpoint is disabled).
    pub outcome: &'static str,
    /// The receiver's status code, when it answered.
    pub status: Option<u16>,
    /// Why it failed, when it did.
    pub error: Option<String>,
    /// The wait before the next attempt, in milliseconds, when there is one.
    pub next_retry_ms: Option<u64>,
}

/// One endpoint's counters and recent attempts on this node.
#[derive(Default)]
pub struct Records {
    /// Events delivered (a 2xx).
    pub delivered: AtomicU64,
    /// Attempts that failed.
    pub failures: AtomicU64,
    /// Attempts that were retries.
    pub retries: AtomicU64,
    /// Offers not delivered because their deadline passed.
    pub expired: AtomicU64,
    /// The position this node last knew (for the lag).
    pub position: AtomicU64,
    attempts: Mutex<VecDeque<Attempt>>,
}

impl Records {
    fn record(&self, a: Attempt, keep: usize) {
        let mut q = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
        q.push_back(a);
        while q.len() > keep {
            q.pop_front();
        }
    }

    /// The recent attempts, newest first.
    pub fn recent(&self, limit: usize) -> Vec<Attempt> {
        let q = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
        q.iter().rev().take(limit).cloned().collect()
    }
}

/// What an endpoint's runner needs, shared with its deliveries.
pub struct Runner {
    /// The endpoint id.
    pub id: String,
    /// Its types.
    pub types: Vec<String>,
    /// Its connections.
    pub client: Client,
    /// The secrets in force (current first); replaced on a rotation.
    pub secrets: Mutex<Arc<Vec<Secret>>>,
    /// The delivery rules.
    pub rules: Arc<WebhooksConfig>,
    /// Counters and attempts.
    pub records: Arc<Records>,
    /// The epoch, for event ids.
    pub epoch: String,
    /// The model's clock.
    pub clock: Clock,
    /// Until when this node may deliver the endpoint.
    pub lease: Lease,
    /// Deliveries waiting for their next attempt.
    pub retries: RetryWaits,
}

/// Until when this node holds an endpoint's lease, by this node's own clock. A claim
/// asked at `t` for `lease_ms` counts from `t` (the log's time of the grant can only be
/// later), less a quarter of it: a node cut off from the store stops delivering before
/// any other node may take the lease over, so one node at a time delivers. Each renewal
/// moves it on. `None`: no lease to watch (a runner driven by a test).
#[derive(Debug, Default)]
pub struct Lease(Mutex<Option<tokio::time::Instant>>);

impl Lease {
    /// A lease held until `end`.
    pub fn until(end: tokio::time::Instant) -> Lease {
        Lease(Mutex::new(Some(end)))
    }

    /// The lease was renewed: held until `end`.
    pub fn renew(&self, end: tokio::time::Instant) {
        let mut l = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *l = Some(l.map_or(end, |e| e.max(end)));
    }

    fn end(&self) -> Option<tokio::time::Instant> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Its end as a claim's grant sets it: `asked` (when the claim was sent) plus three
    /// quarters of `lease_ms`.
    pub fn end_of_claim(asked: tokio::time::Instant, lease_ms: u64) -> tokio::time::Instant {
        asked + Duration::from_millis(lease_ms - lease_ms / 4)
    }
}

/// Deliveries waiting between two attempts, and the slots of the attempts being sent.
///
/// A delivery waiting for its retry keeps its place (the position does not pass it,
/// its task's and agent's later events wait for it) but not a slot of `max_in_flight`:
/// events of other tasks keep flowing while one is retried, and a receiver that was
/// down gets the new events as soon as it is back, not hours later when the retries'
/// waits end. When its wait ends it takes a slot again like any other attempt, so at
/// most `max_in_flight` requests are ever open at once: a receiver that was down does
/// not get every retry of the outage in one burst.
#[derive(Debug, Default)]
pub struct RetryWaits {
    waiting: AtomicUsize,
    /// Wakes the runner when a slot frees.
    freed: tokio::sync::Notify,
    /// The `max_in_flight` slots of attempts being sent (made on the first attempt).
    sending: OnceLock<tokio::sync::Semaphore>,
}

impl RetryWaits {
    fn waiting(&self) -> usize {
        self.waiting.load(Relaxed)
    }

    /// One of `max` slots for an attempt being sent, once one is free (first come,
    /// first served).
    async fn slot(&self, max: usize) -> Option<tokio::sync::SemaphorePermit<'_>> {
        let slots = self
            .sending
            .get_or_init(|| tokio::sync::Semaphore::new(max));
        match slots.try_acquire() {
            Ok(p) => Some(p),
            // Never closed: `Err` only if it were.
            Err(_) => slots.acquire().await.ok(),
        }
    }

    fn enter(&self) -> RetryWait<'_> {
        self.waiting.fetch_add(1, Relaxed);
        self.freed.notify_one();
        RetryWait(self)
    }
}

/// One delivery's wait for its next attempt (ends when dropped: the attempt starts, or
/// the delivery is dropped with the runner).
struct RetryWait<'a>(&'a RetryWaits);

impl Drop for RetryWait<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Relaxed);
    }
}

enum Fate {
    Done,
    Gone(String),
    Exhausted(String),
}

/// A wait varied by up to `jitter` (a fraction) up or down.
fn jittered(ms: u64, jitter: f64) -> Duration {
    if ms == 0 || jitter == 0.0 {
        return Duration::from_millis(ms);
    }
    // Randomness from the OS generator uuid already uses; no rand crate for this. A v4
    // uuid's bytes 6 and 8 hold its version and variant bits: 53 bits from the random
    // bytes 9 to 15 only (the low 64 bits start with the variant's `10`, which kept
    // every wait between 1.0 and 1.05 times the schedule).
    let bytes = uuid::Uuid::new_v4().into_bytes();
    let mut low = [0u8; 8];
    low[1..].copy_from_slice(&bytes[9..16]);
    let r = (u64::from_be_bytes(low) >> 3) as f64 / (1u64 << 53) as f64; // 0..1
    let f = 1.0 + jitter * (2.0 * r - 1.0);
    Duration::from_millis((ms as f64 * f).round() as u64)
}

/// A time no lease reaches (a branch disabled by its condition still builds its future).
fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400 * 365)
}

fn offer_deadline(d: &EventData) -> Option<Ts> {
    match d {
        EventData::TaskOffered { deadline, .. } => Some(*deadline),
        _ => None,
    }
}

/// An event's wire text as a request body, without a copy: the bytes stay those of the
/// shared envelope (made once per event, for every reader and every endpoint).
struct Body(Arc<Envelope>);

impl AsRef<[u8]> for Body {
    fn as_ref(&self) -> &[u8] {
        self.0.json().as_bytes()
    }
}

/// A position write (`Control::advance`) under way, with the position it writes.
type Writing = Pin<Box<dyn Future<Output = (u64, Result<bool, HubError>)> + Send>>;

impl Runner {
    /// Delivers from `position` under `token` until told to stop, fenced, or the
    /// endpoint is disabled.
    ///
    /// Every delivery (its attempts and retry waits) is a future polled by this one
    /// task, beside the feed and the position write: no task is spawned per delivery,
    /// and an answer turns into the next send of the window in the same wake-up. The
    /// position write runs concurrently too, so deliveries never wait for the log.
    pub async fn run(
        self: Arc<Self>,
        feed: Weak<dyn Feed>,
        control: Arc<dyn Control>,
        token: u64,
        position: u64,
        mut stop: watch::Receiver<bool>,
    ) {
        let rules = self.rules.clone();
        let mut reader = Reader::new(position);
        let mut window = Window::new(position);
        let mut held: HashMap<u64, Arc<Envelope>> = HashMap::new();
        let mut sending = FuturesUnordered::new();
        let mut writing: Option<Writing> = None;
        let mut written = position;
        let mut written_at = tokio::time::Instant::now();
        let mut next_try = written_at;
        let every = Duration::from_millis(rules.position_every_ms);
        // Nothing to write at the start: the first tick is a period away.
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.records.position.store(position, Relaxed);
        let mut fenced = false;
        // Why the endpoint stops here, and whether that is worth a warning.
        let mut disable: Option<(String, bool)> = None;
        // While deliveries are in flight the runner wakes for their answers anyway: each
        // wake-up takes whatever the feed has by then, in one go, and the feed itself
        // (a wake-up per event) is only listened to when nothing is in flight, or once
        // `linger` has passed since the last take (an endpoint that answers slowly
        // still gets new events that often). So a lone event goes at once, and a busy
        // endpoint's events go in batches, one write each, without a wake-up of their
        // own. (Taking at most once per linger, whatever the answers do, halved the
        // writes on a fast receiver but tripled create -> task.offered p99 for no CPU
        // the rounds could see: BENCHMARKS, thirteenth pass.)
        let linger = Duration::from_millis(rules.linger_ms);
        // Read ahead while fewer than `window` events are unfinished, so that one event
        // waiting hours for its retry does not stop the others; and while the window
        // spans fewer than 64 times that (about 9 MB of slots at the default), since
        // the delivered events behind a stuck one keep their slots until it is done.
        let span = rules.window.saturating_mul(64);
        let room = |w: &Window| w.unfinished() < rules.window && w.len() < span;
        let rest = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(rest);
        let mut resting = false;
        loop {
            let (mut open, mut took) = (true, false);
            while open && room(&window) {
                match reader.next(&feed).now_or_never() {
                    Some(next) => {
                        open = self.take(next, &mut window, &mut held, &mut disable);
                        took = true;
                    }
                    None => break,
                }
            }
            if !open {
                break;
            }
            if took && !linger.is_zero() {
                rest.as_mut().reset(tokio::time::Instant::now() + linger);
                resting = true;
            }
            // Those waiting for a retry hold no slot.
            while let Some(seq) = window.next_ready(rules.max_in_flight + self.retries.waiting()) {
                if let Some(ev) = held.remove(&seq) {
                    sending.push(self.deliver(ev));
                }
            }
            let lease_end = self.lease.end();
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                _ = tokio::time::sleep_until(lease_end.unwrap_or_else(far_future)), if lease_end.is_some() => {
                    // Not renewed in time (the store is out of reach): stop before another
                    // node may take the lease. Whoever holds it next resumes from the
                    // position written; this node claims it again once the store answers.
                    if self.lease.end().is_some_and(|e| tokio::time::Instant::now() >= e) {
                        tracing::warn!(endpoint = %self.id, "webhook lease not renewed in time: this node stops delivering the endpoint");
                        break;
                    }
                }
                Some((seq, fate)) = sending.next(), if !sending.is_empty() => match fate {
                    Fate::Done => window.finish(seq),
                    // Stop here: the position stays before this event.
                    Fate::Gone(why) | Fate::Exhausted(why) => {
                        disable = Some((why, true));
                        break;
                    }
                },
                (pos, r) = async { writing.as_mut().expect("guarded").await }, if writing.is_some() => {
                    writing = None;
                    match r {
                        Ok(true) => {
                            written = pos;
                            written_at = tokio::time::Instant::now();
                        }
                        Ok(false) => {
                            fenced = true;
                            break;
                        }
                        // The store is away: try again a tick later.
                        Err(e) => {
                            next_try = tokio::time::Instant::now() + every;
                            tracing::debug!(endpoint = %self.id, error = %e, "position not written")
                        }
                    }
                }
                next = reader.next(&feed), if room(&window) && (sending.is_empty() || !resting) => {
                    if !self.take(next, &mut window, &mut held, &mut disable) {
                        break;
                    }
                    if !linger.is_zero() {
                        rest.as_mut().reset(tokio::time::Instant::now() + linger);
                        resting = true;
                    }
                },
                _ = &mut rest, if resting => resting = false,
                _ = self.retries.freed.notified() => {}
                _ = tick.tick() => {}
            }
            let pos = window.position();
            self.records.position.store(pos, Relaxed);
            if writing.is_none()
                && pos > written
                && (written_at.elapsed() >= every || pos - written >= rules.position_every_events)
                && tokio::time::Instant::now() >= next_try
            {
                let (control, id) = (control.clone(), self.id.clone());
                writing = Some(Box::pin(async move {
                    (pos, control.advance(&id, token, pos).await)
                }));
            }
        }
        // What is in flight is dropped: it is sent again by whoever resumes.
        drop(sending);
        if let Some(w) = writing.take() {
            match w.await {
                (pos, Ok(true)) => written = written.max(pos),
                (_, Ok(false)) => fenced = true,
                (_, Err(_)) => {}
            }
        }
        // The position before the disabling: disabling lets the lease go, and a write
        // after it would be refused (enable resumes at the event that stopped it, not
        // with what was delivered before it).
        let pos = window.position();
        if !fenced && pos > written {
            let _ = control.advance(&self.id, token, pos).await;
        }
        if let Some((why, warn)) = disable {
            if let Err(e) = control.disable(&self.id, token, why.clone()).await {
                tracing::warn!(endpoint = %self.id, error = %e, "cannot record that the endpoint is disabled");
            }
            if warn {
                tracing::warn!(endpoint = %self.id, reason = %why, "webhook endpoint disabled");
            }
        }
    }

    /// Puts what the feed gave in the window (and holds it when it is of the endpoint's
    /// types); `false` when the runner must stop: the feed closed, or the events after
    /// the position are no longer held (`disable` says why).
    fn take(
        &self,
        next: Result<Option<Arc<Envelope>>, super::feed::EventsGone>,
        window: &mut Window,
        held: &mut HashMap<u64, Arc<Envelope>>,
        disable: &mut Option<(String, bool)>,
    ) -> bool {
        match next {
            Ok(Some(ev)) => {
                let wanted = matches(&self.types, ev.data.type_name());
                window.push_with_agents(ev.seq, ev.data.task_id(), ev.data.agents(), wanted);
                if wanted {
                    held.insert(ev.seq, ev);
                }
                true
            }
            Ok(None) => false,
            Err(gone) => {
                *disable = Some((
                    format!(
                        "events after {} are no longer held (the oldest is {}): replay from a position still held to resume",
                        window.position(),
                        gone.oldest
                    ),
                    false,
                ));
                false
            }
        }
    }

    /// One event until it is done, or the endpoint must stop: its seq and its fate.
    async fn deliver(&self, ev: Arc<Envelope>) -> (u64, Fate) {
        (ev.seq, self.attempts(ev).await)
    }

    async fn attempts(&self, ev: Arc<Envelope>) -> Fate {
        let rules = &self.rules;
        let event_id = format!("{}-{}", self.epoch, ev.seq);
        let id_value = HeaderValue::from_str(&event_id).ok();
        let deadline = offer_deadline(&ev.data);
        let body = Bytes::from_owner(Body(ev.clone()));
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            // Held until the answer: at most `max_in_flight` requests open at once,
            // retries included. An offer waits for one no longer than its deadline: past
            // it, it is recorded as expired below, and needs none.
            let slot = match deadline {
                Some(d) => {
                    let left = Duration::from_micros(d.0.saturating_sub(self.clock.now().0));
                    tokio::time::timeout(left, self.retries.slot(rules.max_in_flight))
                        .await
                        .ok()
                        .flatten()
                }
                None => self.retries.slot(rules.max_in_flight).await,
            };
            let at = self.clock.now();
            let mut rec = Attempt {
                event_id: event_id.clone(),
                seq: ev.seq,
                event_type: ev.data.type_name(),
                attempt,
                at,
                duration_ms: 0,
                outcome: "failed",
                status: None,
                error: None,
                next_retry_ms: None,
            };
            if deadline.is_some_and(|d| at >= d) {
                // Bridging a call to an offer that has expired is wrong: not sent.
                rec.outcome = "expired";
                self.records.expired.fetch_add(1, Relaxed);
                self.records.record(rec, rules.attempts_kept);
                return Fate::Done;
            }
            if attempt > 1 {
                self.records.retries.fetch_add(1, Relaxed);
            }
            let secrets = self
                .secrets
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let timestamp = (at.0 / 1_000_000).to_string();
            let signature = signing::signature(&event_id, &timestamp, &body, secrets.iter());
            let started = std::time::Instant::now();
            let r = match (
                id_value.clone(),
                HeaderValue::try_from(timestamp),
                HeaderValue::try_from(signature),
            ) {
                (Some(id), Ok(ts), Ok(sig)) => {
                    let headers = [
                        (HeaderName::from_static("webhook-id"), id),
                        (HeaderName::from_static("webhook-timestamp"), ts),
                        (HeaderName::from_static("webhook-signature"), sig),
                    ];
                    // Boxed apart: held inline it made each delivery one allocation
                    // of 1.3 kB, past glibc's per-thread cache (1 kB), where each
                    // such allocation first sweeps the free lists; boxed, the two
                    // are 568 and 776 bytes (BENCHMARKS, thirteenth pass).
                    // An offer's attempt ends at its deadline: a request still waiting
                    // for its connection (being made, or not yet known to stay open)
                    // is then never written.
                    let mut timeout = Duration::from_millis(rules.timeout_ms);
                    if let Some(d) = deadline {
                        timeout = timeout.min(Duration::from_micros(d.0.saturating_sub(at.0)));
                    }
                    let post = Box::pin(self.client.post(
                        headers,
                        body.clone(),
                        timeout,
                        Duration::from_millis(rules.timeout_ms),
                    ));
                    post.await
                }
                // Ids, digits and base64 always are header values; kept as a failure
                // rather than a panic.
                _ => Err(SendError::Http(format!(
                    "event {event_id}: a header value that HTTP refuses"
                ))),
            };
            rec.duration_ms = started.elapsed().as_millis() as u64;
            let mut retry_after = None;
            match r {
                Ok(a) => {
                    rec.status = Some(a.status);
                    if (200..300).contains(&a.status) {
                        rec.outcome = "delivered";
                        self.records.delivered.fetch_add(1, Relaxed);
                        self.records.record(rec, rules.attempts_kept);
                        return Fate::Done;
                    }
                    if a.status == 410 {
                        rec.outcome = "gone";
                        self.records.failures.fetch_add(1, Relaxed);
                        self.records.record(rec, rules.attempts_kept);
                        return Fate::Gone(format!(
                            "the receiver answered 410 Gone to event {event_id}"
                        ));
                    }
                    if a.status == 429 || a.status == 503 {
                        retry_after = a.retry_after;
                    }
                    rec.error = Some(if (300..400).contains(&a.status) {
                        format!("redirect {} (redirects are not followed)", a.status)
                    } else {
                        format!("status {}", a.status)
                    });
                }
                Err(e) => {
                    rec.error = Some(match e {
                        SendError::Target(t) => t.to_string(),
                        other => other.to_string(),
                    });
                }
            }
            self.records.failures.fetch_add(1, Relaxed);
            if deadline.is_some_and(|d| self.clock.now() >= d) {
                // No later attempt may send it: the next one is recorded as expired at
                // once (above), without a wait that would hold its task's events back.
                self.records.record(rec, rules.attempts_kept);
                continue;
            }
            let Some(&wait_ms) = rules.retry_schedule_ms.get(attempt as usize) else {
                let why = format!(
                    "event {event_id} failed {attempt} times ({}): the retry schedule is exhausted",
                    rec.error.as_deref().unwrap_or("failed")
                );
                self.records.record(rec, rules.attempts_kept);
                return Fate::Exhausted(why);
            };
            // A receiver that says when to come back is not called before then, but its
            // word never hastens the schedule nor holds it past its longest wait: a
            // gateway's `Retry-After: 0` on every attempt would spend the whole
            // schedule in seconds and disable the endpoint, and a value of years would
            // stall it (and the window it holds back) for good, never disabled.
            let longest = rules.retry_schedule_ms.iter().copied().max().unwrap_or(0);
            let mut wait = jittered(wait_ms, rules.retry_jitter).max(
                retry_after
                    .unwrap_or_default()
                    .min(Duration::from_millis(longest)),
            );
            if let Some(d) = deadline {
                // An offer waits no longer than its deadline: then it is recorded as
                // expired, and its task's and agent's later events (the expiry, the
                // next offer) go on instead of waiting out the schedule behind it.
                let left = Duration::from_micros(d.0.saturating_sub(self.clock.now().0));
                wait = wait.min(left);
            }
            rec.next_retry_ms = Some(wait.as_millis() as u64);
            self.records.record(rec, rules.attempts_kept);
            drop(slot);
            let _waiting = self.retries.enter();
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_waits_are_spread_both_ways_over_the_jitter() {
        let waits: Vec<u64> = (0..2_000)
            .map(|_| jittered(10_000, 0.1).as_millis() as u64)
            .collect();
        assert!(waits.iter().all(|w| (9_000..=11_000).contains(w)));
        // Each tenth of the range is hit (a uniform spread hits each ~200 times).
        for tenth in 0..10 {
            let (lo, hi) = (9_000 + tenth * 200, 9_000 + (tenth + 1) * 200);
            assert!(
                waits.iter().any(|w| (lo..hi).contains(w)),
                "no wait in {lo}..{hi} ms"
            );
        }
        assert_eq!(jittered(5_000, 0.0), Duration::from_millis(5_000));
    }
}
