//! One websocket session: a single task per connection that reads requests, writes
//! replies and pushed frames, pings, and enforces the per-connection limits.
//!
//! One task, not a reader and a writer: an idle connection then costs one task and
//! one small queue. Writes have a timeout, so a peer that stops reading cannot hold the
//! task; the hub's side of the queue is bounded and overflows into a disconnect.

use super::queue::{Next, SendQueue};
use super::rate::RateLimit;
use crate::auth::{AuthError, Claims, unix_now};
use crate::context::record::Actor;
use crate::context::{CloseChoice, ContextCommand, ContextReply, Lists};
use crate::error::{ErrorCode, HubError};
use crate::hub::{Hub, Outbound, SessionHandle};
use crate::ids::{AgentId, ConnId};
use crate::protocol::CloseChoiceName;
use crate::protocol::{
    BadFrame, ClientMessage, ErrorBody, ReplyBody, RequestedState, SUBPROTOCOL, ServerMessage,
    error_text, parse_client,
};
use crate::routing::{Command, Profile};
use crate::state::Reply;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;
use tracing::Instrument;

/// Close codes the hub uses, beside the standard ones.
mod close {
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

fn close_code(reason: &str) -> u16 {
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
async fn within<F, E>(limit: Duration, write: F) -> bool
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
fn outbound_message(out: Outbound, last_state_version: &mut u64) -> Option<Message> {
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

fn reply_text(re: Option<String>, r: Result<ReplyBody, ErrorBody>) -> String {
    match r {
        Ok(result) => ServerMessage::Reply { re, result }.to_text(),
        Err(error) => error_text(re, error),
    }
}

/// What one connection carries regardless of role.
struct Conn {
    hub: Arc<Hub>,
    ws: WebSocket,
    rate: RateLimit,
    violations: u32,
    last_heard: Instant,
    last_state_version: u64,
    write_timeout: Duration,
    /// Who opened the connection, with the expiry of its latest token.
    claims: Claims,
}

/// When a token that expires at `exp` (seconds since the epoch) runs out, on tokio's
/// clock: the session ends then unless a fresh token arrived.
fn expiry_deadline(exp: u64) -> tokio::time::Instant {
    // As far as tokio's timer looks ahead (its own "far future"): a signed `exp` can be
    // any number, and adding a huge one to an instant would overflow.
    const FAR: Duration = Duration::from_secs(30 * 365 * 86_400);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    tokio::time::Instant::now() + Duration::from_secs(exp).saturating_sub(now).min(FAR)
}

/// What the read side produced.
enum Incoming {
    Request(Option<String>, ClientMessage),
    Nothing,
    Closed,
}

impl Conn {
    fn new(hub: Arc<Hub>, ws: WebSocket, claims: Claims) -> Conn {
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
    fn refresh(&mut self, token: &str) -> Result<tokio::time::Instant, ErrorBody> {
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

    async fn send(&mut self, m: Message) -> bool {
        within(self.write_timeout, self.ws.send(m)).await
    }

    async fn send_text(&mut self, text: impl Into<String>) -> bool {
        self.send(Message::text(text.into())).await
    }

    /// Writes `first` (if any), then the frames already queued (at most `WRITE_BATCH`),
    /// with one flush: a reply and the `state` frame it caused, or an offer and the
    /// state that came with it, leave in one write instead of one each.
    async fn write_batch(&mut self, first: Option<Message>, queue: &SendQueue) -> bool {
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
    async fn write_feed(
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

    async fn reply(&mut self, re: Option<String>, r: Result<ReplyBody, ErrorBody>) -> bool {
        self.send_text(reply_text(re, r)).await
    }

    /// Says why, then closes.
    async fn goodbye(&mut self, reason: &'static str) {
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
    async fn read(
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
    async fn heartbeat(&mut self) -> Result<(), &'static str> {
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
fn read_error(e: axum::Error) -> Result<Incoming, &'static str> {
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

fn heartbeat_interval(hub: &Hub) -> tokio::time::Interval {
    let every = Duration::from_millis(hub.config.limits.ping_interval_ms);
    let mut i = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    i
}

fn hub_error(e: &HubError) -> ErrorBody {
    ErrorBody::from(e)
}

/// Runs an agent desktop's session until it closes.
///
/// Not an `async fn`: an async fn keeps its arguments in its future beside the body's
/// own copies of them, and a session's future is allocated whole for every connection
/// and kept while it is open; the connection state (with the websocket) is made here
/// and moved in once (issue 1's memory per idle connection).
pub fn run_agent(
    hub: Arc<Hub>,
    ws: WebSocket,
    profile: Arc<Profile>,
    claims: Claims,
) -> impl std::future::Future<Output = ()> + Send {
    let conn_id = ConnId::new();
    let agent = profile.id.clone();
    let span = tracing::info_span!("agent_session", agent_id = %agent, conn_id = %conn_id);
    let mut c = Conn::new(hub.clone(), ws, claims);
    async move {
        let _counted = hub.connection_opened();
        let queue = Arc::new(SendQueue::new(hub.config.limits.send_queue));
        hub.register(
            &agent,
            SessionHandle {
                conn: conn_id,
                queue: queue.clone(),
            },
        );
        // A drain that began before the registration did not see this session.
        if hub.is_draining() {
            queue.close("shutting_down");
        }
        let connected = hub
            .execute(Command::Connect {
                profile,
                conn: conn_id,
                node: hub.node.clone(),
            })
            .await;
        let lists = match hub
            .context(ContextCommand::Lists {
                agent: agent.clone(),
            })
            .await
        {
            Ok(Reply::Context(ContextReply::Lists(l))) => *l,
            _ => Lists {
                open: Vec::new(),
                recent: Vec::new(),
            },
        };
        match connected {
            Ok(Reply::Agent { view, resumed }) => {
                tracing::info!(resumed, status = ?view.status, "agent connected");
                c.last_state_version = view.version;
                let text = ServerMessage::Welcome {
                    session_id: conn_id.to_string(),
                    protocol: SUBPROTOCOL,
                    resumed,
                    heartbeat_ms: hub.config.limits.ping_interval_ms,
                    server_time: hub.clock.now(),
                    agent: &view,
                    lists: &lists,
                }
                .to_text();
                c.send_text(text).await;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "agent could not connect");
                c.reply(None, Err(hub_error(&e))).await;
                c.goodbye("store_unavailable").await;
                hub.unregister(&agent, conn_id);
                // The connect may still take effect (a shared store can log it and
                // answer late): make sure it does not leave a phantom connection.
                record_disconnect(hub.clone(), agent.clone(), conn_id);
                return;
            }
        }
        let mut beat = heartbeat_interval(&hub);
        let mut expiry = std::pin::pin!(tokio::time::sleep_until(expiry_deadline(c.claims.exp)));
        let end: &'static str = loop {
            tokio::select! {
                biased;
                // Also carries the drain ("shutting_down"): see `Hub::start_drain`.
                next = queue.next() => match next {
                    Next::Close(reason) => break reason,
                    Next::Frame(out) => {
                        let first = outbound_message(out, &mut c.last_state_version);
                        if !c.write_batch(first, &queue).await { break "write_failed" }
                    }
                },
                () = &mut expiry => break "token_expired",
                msg = c.ws.next() => match c.read(msg).await {
                    Ok(Incoming::Request(re, ClientMessage::RefreshToken { token })) => {
                        let r = c.refresh(&token).map(|at| {
                            expiry.as_mut().reset(at);
                            ReplyBody::Empty {}
                        });
                        let reply = Message::text(reply_text(re, r));
                        if !c.write_batch(Some(reply), &queue).await { break "write_failed" }
                    }
                    Ok(Incoming::Request(re, m)) => {
                        let r = agent_request(&hub, &agent, m).await;
                        let reply = Message::text(reply_text(re, r));
                        if !c.write_batch(Some(reply), &queue).await { break "write_failed" }
                    }
                    Ok(Incoming::Nothing) => {}
                    Ok(Incoming::Closed) => break "closed",
                    Err(reason) => break reason,
                },
                _ = beat.tick() => if let Err(reason) = c.heartbeat().await { break reason },
            }
        };
        tracing::info!(reason = end, "agent session ends");
        if end == "token_expired" {
            hub.metrics.token_expired();
        }
        if !matches!(end, "closed" | "write_failed") {
            c.goodbye(end).await;
        }
        hub.unregister(&agent, conn_id);
        // Starts the reconnect grace period, unless this connection was already
        // replaced or logged out (the store ignores a connection that is not current).
        record_disconnect(hub.clone(), agent.clone(), conn_id);
    }
    .instrument(span)
}

/// Records that a connection is gone, retrying in the background while the store is
/// unavailable: a disconnect that is never recorded would leave the agent "connected"
/// with no socket, holding its tasks. A retry is harmless: the disconnect of a
/// connection that is not the agent's current one changes nothing.
fn record_disconnect(hub: Arc<Hub>, agent: AgentId, conn: ConnId) {
    tokio::spawn(async move {
        let mut wait = Duration::from_millis(100);
        for _ in 0..60 {
            let cmd = Command::Disconnect {
                agent: agent.clone(),
                conn,
            };
            match hub.execute(cmd).await {
                Ok(_) => return,
                // A disconnect repeated changes nothing, so an unknown outcome is retried too.
                Err(HubError::StoreUnavailable(e) | HubError::OutcomeUnknown(e)) => {
                    tracing::warn!(agent_id = %agent, error = %e, "disconnect not recorded yet; retrying");
                }
                Err(_) => return,
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(2));
        }
        tracing::error!(agent_id = %agent, "disconnect never recorded");
    });
}

async fn agent_request(
    hub: &Hub,
    agent: &AgentId,
    m: ClientMessage,
) -> Result<ReplyBody, ErrorBody> {
    let agent = agent.clone();
    let cmd = match m {
        ClientMessage::Ping {} => {
            return Ok(ReplyBody::Pong {
                server_time: hub.clock.now(),
            });
        }
        ClientMessage::GetState {} => {
            return match hub.store().agent_view(&agent).await {
                Ok(Some(view)) => Ok(ReplyBody::Agent {
                    agent: Box::new(view),
                }),
                Ok(None) => Err(hub_error(&HubError::UnknownAgent(agent.to_string()))),
                Err(e) => Err(hub_error(&e)),
            };
        }
        ClientMessage::SetState { state, reason } => match state {
            RequestedState::Ready => Command::SetReady { agent },
            RequestedState::NotReady => match reason {
                Some(reason) => Command::SetNotReady { agent, reason },
                None => {
                    return Err(hub_error(&HubError::invalid(
                        "reason",
                        "a reason code is required for not_ready",
                    )));
                }
            },
        },
        ClientMessage::Accept { offer_id } => Command::Accept { agent, offer_id },
        ClientMessage::Decline { offer_id, reason } => {
            if let Some(r) = &reason {
                crate::task::check_text("reason", r).map_err(|e| hub_error(&e))?;
                tracing::info!(agent_id = %agent, %offer_id, reason = %r, "decline");
            }
            Command::Decline { agent, offer_id }
        }
        ClientMessage::Complete {
            task_id,
            wrap_up_code,
        } => {
            if let Some(w) = &wrap_up_code {
                crate::task::check_name("wrap_up_code", w).map_err(|e| hub_error(&e))?;
            }
            tracing::debug!(agent_id = %agent, %task_id, "complete");
            Command::Complete {
                agent,
                task_id,
                wrap_up_code,
            }
        }
        ClientMessage::Logout {} => Command::Logout { agent },
        ClientMessage::Transfer {
            task_id,
            to_queue,
            to_agent,
            priority,
            skills,
            head,
        } => {
            let req = crate::protocol::TransferRequest {
                to_queue,
                to_agent,
                priority,
                skills,
                head,
            };
            let to = req.destination().map_err(|e| hub_error(&e))?;
            tracing::info!(agent_id = %agent, %task_id, ?to, "transfer");
            Command::Transfer {
                task_id,
                to,
                by: Actor::agent(&agent),
            }
        }
        ClientMessage::Consult { task_id, to_agent } => {
            crate::task::check_name("to_agent", &to_agent).map_err(|e| hub_error(&e))?;
            tracing::info!(agent_id = %agent, %task_id, to = %to_agent, "consult");
            Command::Consult {
                agent,
                task_id,
                to: AgentId::from(to_agent.as_str()),
            }
        }
        ClientMessage::CancelConsult { task_id } => Command::CancelConsult { agent, task_id },
        ClientMessage::GetSnapshot {}
        | ClientMessage::SetAgentState { .. }
        | ClientMessage::LogoutAgent { .. } => {
            return Err(ErrorBody::new(
                ErrorCode::Forbidden,
                "this request is for supervisors",
            ));
        }
        other => {
            let cmd = context_command(&agent, other)?;
            return reply_body(hub.context(cmd).await);
        }
    };
    reply_body(hub.execute(cmd).await)
}

/// The customer-context requests of an agent desktop.
fn context_command(agent: &AgentId, m: ClientMessage) -> Result<ContextCommand, ErrorBody> {
    let by = Actor::agent(agent);
    let agent = agent.clone();
    Ok(match m {
        ClientMessage::GetLists {} => ContextCommand::Lists { agent },
        ClientMessage::SearchCustomers { query, limit } => {
            crate::task::check_text("query", &query).map_err(|e| hub_error(&e))?;
            ContextCommand::Search {
                query,
                limit: limit.unwrap_or(20),
            }
        }
        ClientMessage::GetCustomer { customer_id } => {
            ContextCommand::GetCustomer { by, customer_id }
        }
        ClientMessage::UnwatchCustomer { customer_id } => {
            ContextCommand::Unwatch { agent, customer_id }
        }
        ClientMessage::GetRequest { request_id } => ContextCommand::GetRequest { request_id },
        ClientMessage::GetActivity { activity_id } => ContextCommand::GetActivity { activity_id },
        ClientMessage::CreateCustomer {
            customer,
            activity_id,
        } => ContextCommand::CreateCustomer {
            by,
            fields: customer,
            activity_id,
        },
        ClientMessage::UpdateCustomer {
            customer_id,
            base_version,
            changes,
        } => ContextCommand::UpdateCustomer {
            by,
            customer_id,
            base_version,
            changes,
        },
        ClientMessage::LinkActivity {
            activity_id,
            customer_id,
        } => ContextCommand::LinkActivity {
            by,
            activity_id,
            customer_id,
        },
        ClientMessage::MoveActivity {
            activity_id,
            request_id,
        } => ContextCommand::MoveActivity {
            by,
            activity_id,
            request_id,
        },
        ClientMessage::CreateRequest {
            customer_id,
            title,
            description,
        } => ContextCommand::CreateRequest {
            by,
            customer_id,
            title,
            description,
        },
        ClientMessage::UpdateRequest {
            request_id,
            base_version,
            title,
            description,
            state,
        } => ContextCommand::UpdateRequest {
            by,
            request_id,
            base_version,
            title,
            description,
            state,
        },
        ClientMessage::UpdateActivity {
            activity_id,
            base_version,
            notes,
            tags,
        } => ContextCommand::UpdateActivity {
            by,
            activity_id,
            base_version,
            notes,
            tags,
        },
        ClientMessage::AddNote {
            customer_id,
            request_id,
            text,
        } => ContextCommand::AddNote {
            by,
            customer_id,
            request_id,
            text,
        },
        ClientMessage::GetJourney {
            customer_id,
            request_id,
            limit,
        } => ContextCommand::Journey {
            customer_id,
            request_id,
            limit: limit.unwrap_or(100).clamp(1, 1000),
        },
        ClientMessage::CloseInteraction {
            activity_id,
            choice,
            customer,
        } => {
            let choice = match (choice, customer) {
                (None, None) => None,
                (Some(CloseChoiceName::Create), c) => Some(CloseChoice::Create {
                    customer: c.unwrap_or_default(),
                }),
                (Some(CloseChoiceName::Discard), None) => Some(CloseChoice::Discard {}),
                (_, Some(_)) => {
                    return Err(hub_error(&HubError::invalid(
                        "customer",
                        "goes with choice: create only",
                    )));
                }
            };
            ContextCommand::CloseInteraction {
                agent,
                activity_id,
                choice,
            }
        }
        ClientMessage::ReopenCustomer { customer_id } => {
            ContextCommand::ReopenCustomer { agent, customer_id }
        }
        ClientMessage::CloseCustomer { customer_id } => {
            ContextCommand::CloseCustomer { agent, customer_id }
        }
        _ => {
            return Err(ErrorBody::new(
                ErrorCode::Forbidden,
                "not a request for agents",
            ));
        }
    })
}

fn reply_body(r: Result<Reply, HubError>) -> Result<ReplyBody, ErrorBody> {
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
enum FeedWrite {
    /// Written and flushed.
    Written,
    /// Written, but the feed had moved on past what this console can catch up.
    Lagged,
    /// The socket failed or timed out.
    Failed,
}

/// Runs a supervisor console's session: a snapshot, then live changes.
pub async fn run_supervisor(hub: Arc<Hub>, ws: WebSocket, claims: Claims) {
    let span = tracing::info_span!("supervisor_session", supervisor = %claims.sub);
    async move {
        let _counted = hub.connection_opened();
        // Subscribe before the snapshot, so that no change falls between the two.
        let mut feed = hub.subscribe_supervisor();
        let mut c = Conn::new(hub.clone(), ws, claims);
        if !send_snapshot(&mut c).await {
            return;
        }
        tracing::info!("supervisor connected");
        let mut drain = hub.drain_signal();
        // A receiver made after the drain began has already "seen" it.
        if hub.is_draining() {
            drain.mark_changed();
        }
        let mut beat = heartbeat_interval(&hub);
        let mut expiry = std::pin::pin!(tokio::time::sleep_until(expiry_deadline(c.claims.exp)));
        let end: &'static str = loop {
            tokio::select! {
                biased;
                _ = drain.changed() => break "shutting_down",
                () = &mut expiry => break "token_expired",
                f = feed.recv() => match f {
                    Ok(text) => match c.write_feed(text, &mut feed).await {
                        FeedWrite::Written => {}
                        FeedWrite::Failed => break "write_failed",
                        // Fell behind while writing: start again from a snapshot.
                        FeedWrite::Lagged => if !send_snapshot(&mut c).await { break "write_failed" },
                    },
                    // Too far behind to catch up frame by frame: start again from a snapshot.
                    Err(broadcast::error::RecvError::Lagged(_)) => if !send_snapshot(&mut c).await { break "write_failed" },
                    Err(broadcast::error::RecvError::Closed) => break "shutting_down",
                },
                msg = c.ws.next() => match c.read(msg).await {
                    Ok(Incoming::Request(re, ClientMessage::RefreshToken { token })) => {
                        let r = c.refresh(&token).map(|at| {
                            expiry.as_mut().reset(at);
                            ReplyBody::Empty {}
                        });
                        if !c.reply(re, r).await { break "write_failed" }
                    }
                    Ok(Incoming::Request(re, m)) => {
                        let r = supervisor_request(&hub, &c.claims, m).await;
                        if !c.reply(re, r).await { break "write_failed" }
                    }
                    Ok(Incoming::Nothing) => {}
                    Ok(Incoming::Closed) => break "closed",
                    Err(reason) => break reason,
                },
                _ = beat.tick() => if let Err(reason) = c.heartbeat().await { break reason },
            }
        };
        tracing::info!(reason = end, "supervisor session ends");
        if end == "token_expired" {
            hub.metrics.token_expired();
        }
        if !matches!(end, "closed" | "write_failed") {
            c.goodbye(end).await;
        }
    }
    .instrument(span)
    .await
}

async fn send_snapshot(c: &mut Conn) -> bool {
    match c.hub.store().snapshot(c.hub.clock.now()).await {
        Ok(s) => {
            let stats = c
                .hub
                .stats_report(&crate::stats::report::StatsQuery::default())
                .map_err(|e| tracing::warn!(error = %e, "no statistics for the snapshot"))
                .ok();
            let text = ServerMessage::Snapshot(crate::protocol::SupervisorSnapshot {
                board: &s,
                stats: stats.as_ref(),
            })
            .to_text();
            c.send_text(text).await
        }
        Err(e) => c.reply(None, Err(hub_error(&e))).await,
    }
}

async fn supervisor_request(
    hub: &Hub,
    claims: &Claims,
    m: ClientMessage,
) -> Result<ReplyBody, ErrorBody> {
    let cmd = match m {
        ClientMessage::Ping {} => {
            return Ok(ReplyBody::Pong {
                server_time: hub.clock.now(),
            });
        }
        ClientMessage::GetSnapshot {} => {
            return match hub.store().snapshot(hub.clock.now()).await {
                Ok(s) => Ok(ReplyBody::Snapshot(Box::new(s))),
                Err(e) => Err(hub_error(&e)),
            };
        }
        ClientMessage::SetAgentState {
            agent_id,
            state,
            reason,
        } => {
            if state != RequestedState::NotReady {
                return Err(hub_error(&HubError::invalid(
                    "state",
                    "a supervisor may only set an agent not_ready",
                )));
            }
            tracing::info!(supervisor = %claims.sub, %agent_id, "supervisor sets agent not ready");
            Command::ForceNotReady {
                agent: AgentId::from(agent_id.as_str()),
                reason,
            }
        }
        ClientMessage::LogoutAgent { agent_id } => {
            tracing::info!(supervisor = %claims.sub, %agent_id, "supervisor logs agent out");
            Command::ForceLogout {
                agent: AgentId::from(agent_id.as_str()),
            }
        }
        ClientMessage::Transfer {
            task_id,
            to_queue,
            to_agent,
            priority,
            skills,
            head,
        } => {
            let req = crate::protocol::TransferRequest {
                to_queue,
                to_agent,
                priority,
                skills,
                head,
            };
            let to = req.destination().map_err(|e| hub_error(&e))?;
            tracing::info!(supervisor = %claims.sub, %task_id, ?to, "supervisor transfers a task");
            Command::Transfer {
                task_id,
                to,
                by: Actor {
                    id: claims.sub.clone(),
                    role: crate::auth::Role::Supervisor,
                },
            }
        }
        _ => {
            return Err(ErrorBody::new(
                ErrorCode::Forbidden,
                "this request is for agents",
            ));
        }
    };
    reply_body(hub.execute(cmd).await)
}
