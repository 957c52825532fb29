//! `GET /v1/events`: the numbered events as Server-Sent Events, resumable.
//!
//! A reader names its position (`Last-Event-ID`, or `?since=` on a first connection);
//! it gets every held event after it, then the live ones, with no gap and no repeat
//! (`Hub::events_chunk` reads a piece of the window, and subscribes in the same step
//! once a piece reaches the newest event). Without a position it starts with the live
//! events. A position older than the window, or an `?epoch=` that is not the hub's,
//! answers 410 `events_gone` with the oldest event held.
//!
//! What bounds a reader: it holds no queue of its own, only a piece of the shared
//! window (`CHUNK` events) or its place in the hub's broadcast (`events.stream_buffer`
//! events). A reader that falls behind the broadcast goes back to reading the window
//! from its position, so a reader that reads slower than events come for a while
//! (catching up from far back, a pause) catches up without being cut off. One that
//! keeps losing ground is cut off (`cutoff`, `slow_reader`) while its position is
//! still held, when its next event comes within `stream_buffer` of the window's
//! oldest end and the distance shrank since its last piece, or when its position is
//! gone; it resumes from its last id like after any other drop. A socket that takes
//! nothing for `limits.ping_timeout_ms` is closed by the connection's write bound
//! (`conn::io`), as a desktop's is.

use super::{EventData, EventsGone};
use crate::auth::Role;
use crate::error::HubError;
use crate::events::Envelope;
use crate::http::ApiError;
use crate::hub::Hub;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{broadcast, watch};

/// How many bytes of events one write carries at most: a reader catching up from the
/// window gets them in large writes, not one per event.
const BATCH_BYTES: usize = 32 * 1024;

/// How many events a reader behind the live ones takes from the window at a time.
const CHUNK: usize = 1024;

/// Which event types a reader wants: `?types=task.*,agent.state_changed`.
#[derive(Clone, Debug, Default)]
pub struct TypeFilter {
    /// Exact names; empty with no prefixes means every type.
    exact: Vec<&'static str>,
    /// Prefixes ending in a dot (`task.`).
    prefixes: Vec<String>,
}

impl TypeFilter {
    /// Parses the comma-separated list; a name or prefix no event type has is an
    /// error (a typo would otherwise be a stream that stays silent).
    pub fn parse(list: Option<&str>) -> Result<TypeFilter, HubError> {
        let mut f = TypeFilter::default();
        let Some(list) = list else {
            return Ok(f);
        };
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if item == "*" {
                return Ok(TypeFilter::default());
            }
            if let Some(prefix) = item.strip_suffix('*') {
                if !prefix.ends_with('.') || !EventData::TYPES.iter().any(|t| t.starts_with(prefix))
                {
                    return Err(HubError::invalid(
                        "types",
                        format!("{item:?} matches no event type (a prefix is like task.*)"),
                    ));
                }
                f.prefixes.push(prefix.to_owned());
            } else {
                match EventData::TYPES.iter().find(|t| **t == item) {
                    Some(t) => f.exact.push(t),
                    None => {
                        return Err(HubError::invalid(
                            "types",
                            format!("{item:?} is not an event type"),
                        ));
                    }
                }
            }
        }
        Ok(f)
    }

    /// Whether the reader wants this type.
    pub fn accepts(&self, t: &str) -> bool {
        (self.exact.is_empty() && self.prefixes.is_empty())
            || self.exact.contains(&t)
            || self.prefixes.iter().any(|p| t.starts_with(p.as_str()))
    }
}

/// Refuses a position past the newest event: a reader that read it did so in another
/// history (a hub started again on a new data directory, or in memory), and would
/// otherwise wait, silently, for this history to pass it and skip everything before.
/// In Redis mode this node's replica may only be behind another's: it is given a
/// moment to catch up first.
async fn past_the_newest(hub: &Hub, after: u64) -> Result<(), ApiError> {
    let shared = hub.config.store.effective_kind() == crate::config::StoreKind::Redis;
    let until = tokio::time::Instant::now() + Duration::from_secs(if shared { 3 } else { 0 });
    loop {
        let (oldest, newest) = hub.event_bounds();
        if after <= newest {
            return Ok(());
        }
        if tokio::time::Instant::now() >= until {
            return Err(HubError::EventsGone {
                why: format!(
                    "position {after} is past the newest event ({newest}): it is from another history"
                ),
                oldest,
                epoch: hub.event_epoch(),
            }
            .into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET /v1/events`.
pub async fn events(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let claims = crate::http::caller(
        &hub,
        &headers,
        &query,
        &[Role::Integration, Role::Supervisor],
    )?;
    let filter = TypeFilter::parse(query.get("types").map(String::as_str))?;
    // A browser's EventSource reconnects with Last-Event-ID and the URL it started
    // with: the header is the newer position.
    let since = match headers.get("last-event-id") {
        Some(v) => Some(parse_seq("Last-Event-ID", v.to_str().ok())?),
        None => query
            .get("since")
            .map(|s| parse_seq("since", Some(s)))
            .transpose()?,
    };
    if let Some(want) = query.get("epoch") {
        let epoch = hub.event_epoch();
        if *want != epoch {
            let (oldest, _) = hub.event_bounds();
            return Err(HubError::EventsGone {
                why: format!("epoch {want:?} is not this hub's history"),
                oldest,
                epoch,
            }
            .into());
        }
    }
    if let Some(after) = since {
        past_the_newest(&hub, after).await?;
    }
    let (last, backlog, live) = match since {
        Some(after) => match hub.events_chunk(after, CHUNK) {
            Ok(c) => (after, c.events, c.live),
            Err(EventsGone { oldest }) => {
                return Err(HubError::EventsGone {
                    why: format!("the events after {after} are no longer held"),
                    oldest,
                    epoch: hub.event_epoch(),
                }
                .into());
            }
        },
        None => {
            let (last, live) = hub.events_tail();
            (last, Vec::new(), Some(live))
        }
    };
    let keepalive = Duration::from_secs(hub.config.events.keepalive_secs);
    let linger = Duration::from_millis(hub.config.events.stream_linger_ms);
    let reader = Reader {
        drain: hub.drain_signal(),
        backlog: backlog.into(),
        live,
        buffer: hub.config.events.stream_buffer as u64,
        margin: None,
        losses: 0,
        last,
        sent_id: last,
        filter,
        keepalive: tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive),
        hub,
        done: false,
        hello: true,
        linger,
        rest_until: None,
        last_write: 0,
        expiry: Box::pin(tokio::time::sleep_until(
            crate::ws::session::expiry_deadline(claims.exp),
        )),
    };
    let stream = futures_util::stream::unfold(reader, |mut r| async move {
        r.next()
            .await
            .map(|b| (Ok::<Bytes, std::convert::Infallible>(b), r))
    });
    let mut res = Response::new(Body::from_stream(stream));
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Proxies that buffer responses (nginx) would hold the events back.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    *res.status_mut() = StatusCode::OK;
    Ok(res)
}

fn parse_seq(field: &str, v: Option<&str>) -> Result<u64, ApiError> {
    v.and_then(|s| s.trim().parse::<u64>().ok()).ok_or_else(|| {
        ApiError::from(HubError::invalid(
            field,
            "must be an event's seq (a whole number)",
        ))
    })
}

/// One reader's position and what it reads from.
struct Reader {
    hub: Arc<Hub>,
    /// The piece of the window being read.
    backlog: VecDeque<Arc<Envelope>>,
    /// The hub's broadcast, once the reader reached the newest event; `None` while it
    /// reads the window.
    live: Option<broadcast::Receiver<Arc<Envelope>>>,
    /// `events.stream_buffer`: how close to the window's oldest end a reader losing
    /// ground may come.
    buffer: u64,
    /// How far the reader's next event was from the window's oldest end at its last
    /// piece (`None`: no piece read since it was live, or since it began).
    margin: Option<u64>,
    /// Pieces in a row at which that distance was under `buffer` and shrinking.
    losses: u8,
    /// The last seq passed, sent or filtered out.
    last: u64,
    /// The last `id:` the reader was sent.
    sent_id: u64,
    filter: TypeFilter,
    keepalive: tokio::time::Interval,
    drain: watch::Receiver<bool>,
    done: bool,
    hello: bool,
    /// The least time between two writes of events...
    linger: Duration,
    /// ...and when the next may go.
    rest_until: Option<tokio::time::Instant>,
    /// The last write's length: the next one's buffer is made that size at once
    /// (grown event by event, `realloc` was over a third of the write's samples in a
    /// profile of a busy stream).
    last_write: usize,
    /// The token's expiry: the stream ends then, as a desktop's session does (the
    /// events carry customers' names and contacts).
    expiry: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl Reader {
    /// The next bytes to write, or `None` at the end of the stream.
    async fn next(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        let mut out = String::new();
        // Checked on every write too: a busy stream never waits in the select below (and
        // a `Sleep` never polled does not know it elapsed: its deadline is read instead).
        if tokio::time::Instant::now() >= self.expiry.deadline() {
            self.end(&mut out, "token_expired");
            return Some(out.into());
        }
        // And the drain: a reader catching up has events ready at every turn.
        if *self.drain.borrow() {
            self.end(&mut out, "shutting_down");
            return Some(out.into());
        }
        if self.hello {
            self.hello = false;
            // The reconnect delay for EventSource, and where the stream starts.
            out.push_str(&format!(
                "retry: 1000\n: epoch {} after {}\n\n",
                self.hub.event_epoch(),
                self.last
            ));
        }
        // Events that come soon after a write wait for the rest of `linger` and go
        // together: a busy stream costs a write per `linger`, not one per event.
        if let Some(at) = self.rest_until.take() {
            if out.is_empty() && tokio::time::Instant::now() < at {
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = self.drain.changed() => {}
                }
            }
        }
        // A little over the last write, within the batch's bound (a write may pass
        // BATCH_BYTES by one event).
        out.reserve((self.last_write + self.last_write / 4).min(BATCH_BYTES + 4096));
        let mut events = 0;
        loop {
            // What is ready now, in one write.
            while out.len() < BATCH_BYTES {
                match self.ready() {
                    Step::Event(e) => {
                        self.write(&mut out, &e);
                        events += 1;
                    }
                    Step::Nothing | Step::Skipped => break,
                    Step::End(why) => {
                        self.end(&mut out, why);
                        return Some(out.into());
                    }
                }
            }
            if !out.is_empty() {
                self.last_write = out.len();
                self.keepalive.reset();
                // A full write (a reader catching up) is followed at once by the next.
                if events > 0 && !self.linger.is_zero() && out.len() < BATCH_BYTES {
                    self.rest_until = Some(tokio::time::Instant::now() + self.linger);
                }
                return Some(out.into());
            }
            if *self.drain.borrow() {
                self.end(&mut out, "shutting_down");
                return Some(out.into());
            }
            tokio::select! {
                r = recv(&mut self.live) => match self.take(r) {
                    Step::Event(e) => {
                        self.write(&mut out, &e);
                        events += 1;
                    }
                    // What it passed over may have made more ready (a re-read of
                    // the window): the loop looks at once.
                    Step::Nothing | Step::Skipped => {}
                    Step::End(why) => {
                        self.end(&mut out, why);
                        return Some(out.into());
                    }
                },
                _ = self.keepalive.tick() => {
                    out.push_str(": keep-alive\n");
                    // A filtered reader's position moves past events it did not want,
                    // so that its Last-Event-ID stays within the window.
                    if self.last > self.sent_id {
                        out.push_str(&format!("id: {}\n", self.last));
                        self.sent_id = self.last;
                    }
                    out.push('\n');
                    return Some(out.into());
                }
                _ = self.drain.changed() => {}
                () = &mut self.expiry => {
                    self.end(&mut out, "token_expired");
                    return Some(out.into());
                }
            }
        }
    }

    /// The next event to write without waiting, past those the reader does not want
    /// (`Nothing` only when none is ready: a filtered reader catching up over many
    /// events of other types must not wait for a live event or a keep-alive for each).
    fn ready(&mut self) -> Step {
        loop {
            let step = match self.backlog.pop_front() {
                Some(e) if e.seq > self.last => self.pass(e),
                Some(_) => Step::Skipped,
                None => match &mut self.live {
                    None => self.refill(),
                    Some(live) => match live.try_recv() {
                        Ok(e) => self.take(Ok(e)),
                        Err(TryRecvError::Empty) => Step::Nothing,
                        Err(TryRecvError::Lagged(n)) => self.take(Err(RecvError::Lagged(n))),
                        Err(TryRecvError::Closed) => self.take(Err(RecvError::Closed)),
                    },
                },
            };
            if !matches!(step, Step::Skipped) {
                return step;
            }
        }
    }

    fn take(&mut self, r: Result<Arc<Envelope>, RecvError>) -> Step {
        match r {
            Ok(e) if e.seq <= self.last => Step::Skipped,
            // This node's replica jumped ahead (it reloaded a snapshot), or the reader
            // fell behind the broadcast: what it has not read is in the window.
            Ok(e) if e.seq > self.last + 1 => self.back_to_the_window(),
            Err(RecvError::Lagged(_)) => self.back_to_the_window(),
            Ok(e) => self.pass(e),
            Err(RecvError::Closed) => Step::End("shutting_down"),
        }
    }

    fn back_to_the_window(&mut self) -> Step {
        self.live = None;
        self.backlog.clear();
        Step::Skipped
    }

    /// The next piece of the window after the reader's position; the live channel
    /// with it once the piece reaches the newest event. Ends a reader losing ground at
    /// the window's oldest end (see the module documentation).
    fn refill(&mut self) -> Step {
        let c = match self.hub.events_chunk(self.last, CHUNK) {
            Ok(c) => c,
            Err(_) => return Step::End("slow_reader"),
        };
        let margin = (self.last + 1).saturating_sub(c.oldest);
        self.losses = if losing_ground(self.margin, margin, self.buffer) {
            self.losses + 1
        } else {
            0
        };
        if self.losses >= LOSSES {
            return Step::End("slow_reader");
        }
        self.margin = if c.live.is_some() { None } else { Some(margin) };
        self.backlog = c.events.into();
        self.live = c.live;
        Step::Skipped
    }

    fn pass(&mut self, e: Arc<Envelope>) -> Step {
        self.last = e.seq;
        if self.filter.accepts(e.type_name()) {
            Step::Event(e)
        } else {
            Step::Skipped
        }
    }

    fn write(&mut self, out: &mut String, e: &Envelope) {
        out.push_str("id: ");
        super::push_u64(out, e.seq);
        out.push_str("\nevent: ");
        out.push_str(e.type_name());
        out.push_str("\ndata: ");
        out.push_str(e.json());
        out.push_str("\n\n");
        self.sent_id = e.seq;
    }

    /// The last event of a stream the hub ends: no `id`, so that the reader resumes
    /// from the last event it got. A filtered reader's position first moves past the
    /// events it passed over (as a keep-alive does): every one up to `last` was written
    /// or not wanted, and a resume from further back could find them gone.
    fn end(&mut self, out: &mut String, reason: &str) {
        self.done = true;
        if self.last > self.sent_id {
            out.push_str(&format!(": passed over\nid: {}\n\n", self.last));
            self.sent_id = self.last;
        }
        tracing::info!(reason, last = self.last, "event stream cut off");
        out.push_str(&format!(
            "event: cutoff\ndata: {{\"reason\":\"{reason}\",\"last_seq\":{}}}\n\n",
            self.sent_id
        ));
    }
}

/// How many pieces in a row a reader may lose ground near the window's oldest end
/// before it is cut off: one burst of events while it reads a piece is not a reader
/// too slow for the stream.
const LOSSES: u8 = 3;

/// Whether a reader behind the live events lost ground at a piece of the window: its
/// next event is within `buffer` of the oldest end (`margin`) and nearer than at its
/// last piece (`before`). `LOSSES` of them in a row cut it off while its position is
/// still held; a reader that moves away from the end (one catching up, however near
/// it started) goes on.
fn losing_ground(before: Option<u64>, margin: u64, buffer: u64) -> bool {
    margin < buffer && before.is_some_and(|b| margin < b)
}

/// The live channel's next event; never, without one.
async fn recv(
    live: &mut Option<broadcast::Receiver<Arc<Envelope>>>,
) -> Result<Arc<Envelope>, RecvError> {
    match live {
        Some(l) => l.recv().await,
        None => std::future::pending().await,
    }
}

enum Step {
    Event(Arc<Envelope>),
    /// Passed over: not of the reader's types, already sent, or a re-read of the window
    /// begun. The next may be ready at once.
    Skipped,
    /// None ready.
    Nothing,
    End(&'static str),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn a_piece_loses_ground_only_when_near_the_oldest_end_and_nearer_than_before() {
        // Near the end but moving away (catching up), or the first piece: goes on.
        assert!(!losing_ground(None, 0, 16));
        assert!(!losing_ground(Some(3), 10, 16));
        assert!(!losing_ground(Some(10), 10, 16));
        // Far from the end, even losing ground: goes on (it may yet catch up).
        assert!(!losing_ground(Some(5000), 100, 16));
        // Near and nearer: cut off while its position is held.
        assert!(losing_ground(Some(20), 15, 16));
        assert!(losing_ground(Some(15), 0, 16));
    }

    #[test]
    fn type_filters_take_names_and_prefixes_and_refuse_unknown_ones() {
        let f = TypeFilter::parse(Some("task.*, agent.state_changed")).expect("valid");
        assert!(f.accepts("task.offered"));
        assert!(f.accepts("agent.state_changed"));
        assert!(!f.accepts("agent.logged_in"));
        assert!(!f.accepts("offer.accepted"));
        assert!(TypeFilter::parse(None).expect("all").accepts("node.lost"));
        assert!(
            TypeFilter::parse(Some("*"))
                .expect("all")
                .accepts("node.lost")
        );
        for bad in ["task.offerd", "tasks.*", "task*", "nope"] {
            let e = TypeFilter::parse(Some(bad)).expect_err(bad);
            assert_eq!(e.code(), ErrorCode::InvalidField, "{bad}");
        }
    }
}
