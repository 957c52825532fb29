//! An agent desktop's session: its one task (requests in, replies and pushed frames
//! out, the send queue drained in batches), the requests an agent may make, and the
//! record of its disconnect, retried until the store takes it.

use super::queue::{Next, SendQueue};
use super::session::*;
use crate::auth::Claims;
use crate::context::record::Actor;
use crate::context::{CloseChoice, ContextCommand, ContextReply, Lists};
use crate::error::{ErrorCode, HubError};
use crate::hub::{Hub, SessionHandle};
use crate::ids::{AgentId, ConnId};
use crate::protocol::CloseChoiceName;
use crate::protocol::{
    ClientMessage, ErrorBody, ReplyBody, RequestedState, SUBPROTOCOL, ServerMessage,
};
use crate::routing::{Command, Profile};
use crate::state::Reply;
use axum::extract::ws::{Message, WebSocket};
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

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
        hub.register(SessionHandle {
            conn: conn_id,
            queue: queue.clone(),
        });
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
        hub.unregister(&agent, conn_id);
        // Starts the reconnect grace period, unless this connection was already
        // replaced or logged out (the store ignores a connection that is not current).
        // Before the goodbye: closing a dead or slow peer may take `ping_timeout_ms`,
        // and meanwhile the agent would still count as connected (a Ready agent getting
        // offers no one sees, the away-offer clock not started).
        record_disconnect(hub.clone(), agent.clone(), conn_id);
        if !matches!(end, "closed" | "write_failed") {
            c.goodbye(end).await;
        }
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
        m @ ClientMessage::Transfer { .. } => {
            let (task_id, to) = transfer_of(m)?;
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
