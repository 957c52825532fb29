//! What every websocket session has in common: a single task per connection that reads
//! requests, writes replies and pushed frames, pings, and enforces the per-connection
//! limits ([`Conn`]), whatever the session serves (an agent's desktop, `desktop.rs`, or
//! a supervisor's console, `supervisor.rs`); the close codes; the replies' wire form.
//!
//! One task, not a reader and a writer: an idle connection then costs one task and
//! one small queue. Writes have a timeout, so a peer that stops reading cannot hold the
//! task; the hub's side of the queue is bounded and overflows into a disconnect.

use super::queue::SendQueue;
use super::rate::RateLimit;
use crate::auth::{AuthError, Claims, unix_now};
use crate::error::{ErrorCode, HubError};
use crate::hub::{Hub, Outbound};
use crate::protocol::{
    BadFrame, ClientMessage, ErrorBody, ReplyBody, ServerMessage, error_text, parse_client,
};
use crate::state::Reply;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// Close codes the hub uses, beside the standard ones.
pub(super) mod close {
    /// The server is going away (drain).
    pub const SHUTTING_DOWN: u16 = 1012;
    /// A rule was broken (rate limit).
    pub const POLICY: u16 = 1008;
    /// A frame over the hard size limit.
    pub const TOO_BIG: u16 = 1009;
    /// The hub could not serve the connection (store unavailable).
    pub const SERVER_ERROR: u16 = 1011;
    /// Another connection of the same agent took over.
    pub const REPLACED: u16 = 4001;
    /// The agent was logged out.
    pub const LOGGED_OUT: u16 = 4002;
    /// The connection did not read its frames.
    pub const SLOW_CONSUMER: u16 = 4003;
    /// Nothing was heard within the ping timeout.
    pub const IDLE: u16 = 4004;
    /// The token expired and no fresh one came over the socket.
    pub const TOKEN_EXPIRED: u16 = 4005;
    /// A frame broke RFC 6455 (reserved bits or opcodes, an unmasked frame, ...).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text frame that is not UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
}

pub(super) fn close_code(reason: &str) -> u16 {
    match reason {
        "replaced" => close::REPLACED,
        "logged_out" | "logged_out_by_supervisor" => close::LOGGED_OUT,
        "slow_consumer" => close::SLOW_CONSUMER,
        "rate_limited" => close::POLICY,
        "frame_too_large" => close::TOO_BIG,
        "store_unavailable" => close::SERVER_ERROR,
        "reconnect" => close::SHUTTING_DOWN,
        "idle" => close::IDLE,
        "token_expired" => close::TOKEN_EXPIRED,
        "protocol_error" => close::PROTOCOL_ERROR,
        "invalid_utf8" => close::INVALID_PAYLOAD,
        _ => close::SHUTTING_DOWN,
    }
}

/// At most this many queued frames join one write.
const WRITE_BATCH: usize = 32;
/// How long a supervisor feed frame waits for the ones behind it (see `write_feed`).
const FEED_COALESCE: Duration = Duration::from_millis(20);
/// The most supervisor feed frames in one write.
const FEED_BATCH: usize = 256;

/// Runs a write with a timeout, without arming a timer when the write completes at
/// once (the usual case: the socket has room), which saves a timer-wheel insert and
/// removal per frame.
pub(super) async fn within<F, E>(limit: Duration, write: F) -> bool
where
    F: std::future::Future<Output = Result<(), E>>,
{
    use futures_util::FutureExt;
    let mut write = std::pin::pin!(write);
    if let Some(r) = (&mut write).now_or_never() {
        return r.is_ok();
    }
    matches!(tokio::time::timeout(limit, write).await, Ok(Ok(())))
}

/// The message for a queued frame; `None` for a state view older than one already sent.
pub(super) fn outbound_message(out: Outbound, last_state_version: &mut u64) -> Option<Message> {
    match out {
        Outbound::Text(t) => Some(Message::Text(t)),
        Outbound::State { version, text } => {
            if version <= *last_state_version {
                return None;
            }
            *last_state_version = version;
            Some(Message::Text(text))
        }
    }
}

pub(super) fn reply_text(re: Option<String>, r: Result<ReplyBody, ErrorBody>) -> String {
    match r {
        Ok(result) => ServerMessage::Reply { re, result }.to_text(),
        Err(error) => error_text(re, error),
    }
}

/// What one connection carries regardless of role.
pub(super) struct Conn {
    pub(super) hub: Arc<Hub>,
    pub(super) ws: WebSocket,
    pub(super) rate: RateLimit,
    pub(super) violations: u32,
    pub(super) last_heard: Instant,
    pub(super) last_state_version: u64,
    pub(super) write_timeout: Duration,
    /// Who opened the connection, with the expiry of its latest token.
    pub(super) claims: Claims,
}

/// When a token that expires at `exp` (seconds since the epoch) runs out, on tokio's
/// clock: the session ends then unless a fresh token arrived.
pub(crate) fn expiry_deadline(exp: u64) -> tokio::time::Instant {
    // As far as tokio's timer looks ahead (its own "far future"): a signed `exp` can be
    // any number, and adding a huge one to an instant would overflow.
    const FAR: Duration = Duration::from_secs(30 * 365 * 86_400);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    tokio::time::Instant::now() + Duration::from_secs(exp).saturating_sub(now).min(FAR)
}

/// What the read side produced.
pub(super) enum Incoming {
    Request(Option<String>, ClientMessage),
    Nothing,
    Closed,
}

impl Conn {
    pub(super) fn new(hub: Arc<Hub>, ws: WebSocket, claims: Claims) -> Conn {
        let l = &hub.config.limits;
        let now = Instant::now();
        Conn {
            rate: RateLimit::new(l.rate_per_sec, l.rate_burst, now),
            violations: 0,
            last_heard: now,
            last_state_version: 0,
            write_timeout: Duration::from_millis(l.ping_timeout_ms),
            hub,
            ws,
            claims,
        }
    }

    /// Takes a fresh token for this connection; returns its expiry deadline.
    pub(super) fn refresh(&mut self, token: &str) -> Result<tokio::time::Instant, ErrorBody> {
        let fresh = self.hub.keys.verify(token, unix_now()).map_err(|e| {
            let code = match e {
                AuthError::Expired => ErrorCode::TokenExpired,
                AuthError::Missing | AuthError::Invalid(_) => ErrorCode::Unauthorized,
            };
            ErrorBody::new(code, e.to_string())
        })?;
        if fresh.sub != self.claims.sub || fresh.role != self.claims.role {
            return Err(ErrorBody::new(
                ErrorCode::Forbidden,
                "the new token must have the same sub and role as the connection's",
            ));
        }
        if fresh.exp <= self.claims.exp {
            return Err(hub_error(&HubError::invalid(
                "token",
                "the new token must expire later than the current one",
            )));
        }
        tracing::debug!(exp = fresh.exp, "token refreshed");
        self.claims.exp = fresh.exp;
        Ok(expiry_deadline(fresh.exp))
    }

    pub(super) async fn send(&mut self, m: Message) -> bool {
        within(self.write_timeout, self.ws.send(m)).await
    }

    pub(super) async fn send_text(&mut self, text: impl Into<String>) -> bool {
        self.send(Message::text(text.into())).await
    }

    /// Writes `first` (if any), then the frames already queued (at most `WRITE_BATCH`),
    /// with one flush: a reply and the `state` frame it caused, or an offer and the
    /// state that came with it, leave in one write instead of one each.
    pub(super) async fn write_batch(&mut self, first: Option<Message>, queue: &SendQueue) -> bool {
        let Conn {
            ws,
            last_state_version,
            write_timeout,
            ..
        } = self;
        let work = async {
            if let Some(m) = first {
                ws.feed(m).await?;
            }
            for _ in 0..WRITE_BATCH {
                let Some(out) = queue.try_pop() else { break };
                if let Some(m) = outbound_message(out, last_state_version) {
                    ws.feed(m).await?;
                }
            }
            ws.flush().await
        };
        within(*write_timeout, work).await
    }

    /// Writes a supervisor feed frame and those that arrive within `FEED_COALESCE`
    /// behind it (at most `FEED_BATCH`) with one flush: at thousands of changes a
    /// second, a wake-up, a write and a flush per frame per supervisor is most of what
    /// supervisors cost the hub.
    pub(super) async fn write_feed(
        &mut self,
        first: Arc<str>,
        feed: &mut broadcast::Receiver<Arc<str>>,
    ) -> FeedWrite {
        let ws = &mut self.ws;
        let mut lagged = false;
        let work = async {
            ws.feed(Message::text(first.as_ref())).await?;
            // Let the changes of the next few milliseconds join this write: under load a
            // console then costs one wake-up and one write per few dozen changes instead
            // of one per change, for at most FEED_COALESCE more latency.
            tokio::time::sleep(FEED_COALESCE).await;
            for _ in 0..FEED_BATCH {
                match feed.try_recv() {
                    Ok(text) => ws.feed(Message::text(text.as_ref())).await?,
                    Err(broadcast::error::TryRecvError::Lagged(_)) => {
                        lagged = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
            ws.flush().await
        };
        match within(self.write_timeout, work).await {
            false => FeedWrite::Failed,
            true if lagged => FeedWrite::Lagged,
            true => FeedWrite::Written,
        }
    }

    pub(super) async fn reply(
        &mut self,
        re: Option<String>,
        r: Result<ReplyBody, ErrorBody>,
    ) -> bool {
        self.send_text(reply_text(re, r)).await
    }

    /// Says why, then closes.
    pub(super) async fn goodbye(&mut self, reason: &'static str) {
        let text = ServerMessage::Goodbye { reason }.to_text();
        if self.send_text(text).await {
            let sent = self
                .send(Message::Close(Some(CloseFrame {
                    code: close_code(reason),
                    reason: reason.into(),
                })))
                .await;
            // Finish the closing handshake: read until the peer's Close (or a short
            // limit), so that the peer can still flush what it was writing and read
            // our goodbye instead of a reset.
            if sent {
                let _ = tokio::time::timeout(self.write_timeout, async {
                    while let Some(Ok(m)) = self.ws.next().await {
                        if matches!(m, Message::Close(_)) {
                            break;
                        }
                    }
                })
                .await;
            }
        }
    }

    /// Turns one frame into a request, or answers it with an error. Returns `Err` with a
    /// reason when the connection must close.
    pub(super) async fn read(
        &mut self,
        msg: Option<Result<Message, axum::Error>>,
    ) -> Result<Incoming, &'static str> {
        let msg = match msg {
            None => return Ok(Incoming::Closed),
            Some(Ok(Message::Close(_))) => {
                // Answer the peer's close (tungstenite queued the reply; flush it) so
                // that it sees a clean close, not a dropped connection.
                let _ = tokio::time::timeout(self.write_timeout, self.ws.close()).await;
                return Ok(Incoming::Closed);
            }
            Some(Err(e)) => {
                let r = read_error(e);
                if matches!(r, Err("protocol_error" | "invalid_utf8")) {
                    self.hub.metrics.protocol_error();
                }
                return r;
            }
            Some(Ok(m)) => m,
        };
        self.last_heard = Instant::now();
        let is_data = matches!(msg, Message::Text(_) | Message::Binary(_));
        if is_data && self.rate.take(self.last_heard) {
            // Only refusals in a row count towards closing the connection.
            self.violations = 0;
        } else if is_data {
            self.violations += 1;
            let l = &self.hub.config.limits;
            if f64::from(self.violations) > l.rate_burst {
                return Err("rate_limited");
            }
            let e = ErrorBody::new(ErrorCode::RateLimited, "too many frames; slow down");
            self.reply(None, Err(e)).await;
            return Ok(Incoming::Nothing);
        }
        match msg {
            Message::Text(t) => {
                let max = self.hub.config.limits.max_frame_bytes;
                if t.len() > max {
                    let e = ErrorBody::new(
                        ErrorCode::FrameTooLarge,
                        format!("frames are limited to {max} bytes"),
                    );
                    self.reply(None, Err(e)).await;
                    return Ok(Incoming::Nothing);
                }
                match parse_client(t.as_str()) {
                    Ok((re, m)) => Ok(Incoming::Request(re, m)),
                    Err(BadFrame { re, code, message }) => {
                        self.reply(re, Err(ErrorBody::new(code, message))).await;
                        Ok(Incoming::Nothing)
                    }
                }
            }
            Message::Binary(_) => {
                let e = ErrorBody::new(
                    ErrorCode::BinaryNotSupported,
                    "this protocol uses JSON text frames only",
                );
                self.reply(None, Err(e)).await;
                Ok(Incoming::Nothing)
            }
            _ => Ok(Incoming::Nothing),
        }
    }

    /// Pings, or reports the connection idle.
    pub(super) async fn heartbeat(&mut self) -> Result<(), &'static str> {
        let l = &self.hub.config.limits;
        let silent = self.last_heard.elapsed();
        if silent > Duration::from_millis(l.ping_interval_ms + l.ping_timeout_ms) {
            return Err("idle");
        }
        if !self.send(Message::Ping(Default::default())).await {
            return Err("idle");
        }
        Ok(())
    }
}

/// What a read error means for the connection: a frame over the hard limit, a frame
/// that breaks RFC 6455 (closed with 1002, or 1007 for a text frame that is not UTF-8,
/// after a goodbye, as the RFC asks), or the peer simply gone.
pub(super) fn read_error(e: axum::Error) -> Result<Incoming, &'static str> {
    use tungstenite::error::ProtocolError;
    let Ok(e) = e.into_inner().downcast::<tungstenite::Error>() else {
        return Ok(Incoming::Closed);
    };
    match *e {
        tungstenite::Error::Capacity(_) => Err("frame_too_large"),
        tungstenite::Error::Utf8(ref m) => {
            tracing::warn!(error = %m, "protocol error: a text frame is not UTF-8");
            Err("invalid_utf8")
        }
        // The peer dropped the TCP connection: an ordinary (if abrupt) close.
        tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            Ok(Incoming::Closed)
        }
        tungstenite::Error::Protocol(ref p) => {
            tracing::warn!(error = %p, "protocol error: a frame breaks RFC 6455");
            Err("protocol_error")
        }
        _ => Ok(Incoming::Closed),
    }
}

pub(super) fn heartbeat_interval(hub: &Hub) -> tokio::time::Interval {
    let every = Duration::from_millis(hub.config.limits.ping_interval_ms);
    let mut i = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    i
}

pub(super) fn hub_error(e: &HubError) -> ErrorBody {
    ErrorBody::from(e)
}

pub(super) fn reply_body(r: Result<Reply, HubError>) -> Result<ReplyBody, ErrorBody> {
    match r {
        // A webhook command never comes from a socket.
        Ok(Reply::Done) | Ok(Reply::Webhook(_)) => Ok(ReplyBody::Empty {}),
        Ok(Reply::Agent { view, .. }) => Ok(ReplyBody::Agent { agent: view }),
        Ok(Reply::Task(task)) | Ok(Reply::Created { task, .. }) => Ok(ReplyBody::Task {
            task,
            activity: None,
        }),
        Ok(Reply::Accepted { task, activity }) => Ok(ReplyBody::Task { task, activity }),
        Ok(Reply::Context(c)) => Ok(ReplyBody::from(c)),
        Err(e) => Err(hub_error(&e)),
    }
}

/// How a batch of supervisor feed frames went.
pub(super) enum FeedWrite {
    /// Written and flushed.
    Written,
    /// Written, but the feed had moved on past what this console can catch up.
    Lagged,
    /// The socket failed or timed out.
    Failed,
}

/// A `transfer` request's task and destination (agents and supervisors send the same).
pub(super) fn transfer_of(
    m: ClientMessage,
) -> Result<(crate::ids::TaskId, crate::routing::TransferTo), ErrorBody> {
    let ClientMessage::Transfer {
        task_id,
        to_queue,
        to_agent,
        priority,
        skills,
        head,
    } = m
    else {
        return Err(ErrorBody::new(
            ErrorCode::Internal,
            "not a transfer request",
        ));
    };
    let req = crate::protocol::TransferRequest {
        to_queue,
        to_agent,
        priority,
        skills,
        head,
    };
    let to = req.destination().map_err(|e| hub_error(&e))?;
    Ok((task_id, to))
}
