//! A supervisor console's session: the snapshot, then the live feed of changes in
//! batches, and the requests a supervisor may make.

use super::session::*;
use crate::auth::Claims;
use crate::context::record::Actor;
use crate::error::{ErrorCode, HubError};
use crate::hub::Hub;
use crate::ids::AgentId;
use crate::protocol::{ClientMessage, ErrorBody, ReplyBody, RequestedState, ServerMessage};
use crate::routing::Command;
use axum::extract::ws::WebSocket;
use futures_util::StreamExt;
use std::sync::Arc;
use tokio::sync::broadcast;
use tracing::Instrument;

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
        m @ ClientMessage::Transfer { .. } => {
            let (task_id, to) = transfer_of(m)?;
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
