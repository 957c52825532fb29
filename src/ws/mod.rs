//! Websockets: the upgrade (authentication, origin check, buffer sizes) and the
//! session that runs on each connection.
//!
//! Nothing about a connection is decided after the upgrade that could have been
//! refused before it: a bad token, a foreign origin or an unknown agent gets an HTTP
//! error and no state changes.

mod desktop;
pub mod queue;
mod rate;
pub(crate) mod session;
mod supervisor;

use crate::auth::{AuthError, Claims, Role, unix_now};
use crate::error::ErrorCode;
use crate::http::ApiError;
use crate::hub::Hub;
use crate::ids::{AgentId, QueueId};
use crate::protocol::SUBPROTOCOL;
use crate::routing::Profile;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::sync::Arc;

/// The write buffer of a websocket: frames gather here between flushes. Its memory is
/// taken when a connection first writes and then kept, so it stays small.
const WRITE_BUFFER: usize = 8 * 1024;

/// Reads the caller's token: `Authorization: Bearer`, or `?access_token=` for browsers,
/// which cannot set headers on a websocket.
pub fn token<'a>(headers: &'a HeaderMap, query: &'a HashMap<String, String>) -> Option<&'a str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
        .or_else(|| query.get("access_token").map(String::as_str))
}

/// Checks the caller's token.
pub fn authenticate(
    hub: &Hub,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<Claims, ApiError> {
    let t = token(headers, query).ok_or_else(|| auth_error(AuthError::Missing))?;
    hub.keys.verify(t, unix_now()).map_err(auth_error)
}

fn auth_error(e: AuthError) -> ApiError {
    let code = match e {
        AuthError::Expired => ErrorCode::TokenExpired,
        AuthError::Missing | AuthError::Invalid(_) => ErrorCode::Unauthorized,
    };
    ApiError::new(code, e.to_string())
}

/// `GET /v1/ws`: upgrades an agent desktop or a supervisor console.
pub async fn upgrade(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => {
            return ApiError::new(
                ErrorCode::InvalidMessage,
                format!("a websocket upgrade is expected here: {}", e.body_text()),
            )
            .into_response();
        }
    };
    match prepare(&hub, &headers, &query) {
        Ok(who) => {
            let l = &hub.config.limits;
            ws.read_buffer_size(l.read_buffer_bytes)
                // Frames are buffered up to this much until the session flushes, so
                // that a reply and the frames queued behind it leave in one write
                // (the session flushes after every batch; nothing waits for more).
                .write_buffer_size(WRITE_BUFFER)
                .max_message_size(l.hard_max_frame_bytes)
                .max_frame_size(l.hard_max_frame_bytes)
                .protocols([SUBPROTOCOL])
                // Each kind of session boxed on its own: the task spawned for the
                // upgrade is as large as its largest branch, and a thousand idle agents
                // would each carry a supervisor console's future otherwise.
                .on_upgrade(move |socket| async move {
                    match who {
                        Who::Agent(profile, claims) => {
                            Box::pin(desktop::run_agent(hub, socket, profile, claims)).await
                        }
                        Who::Supervisor(claims) => {
                            Box::pin(supervisor::run_supervisor(hub, socket, claims)).await
                        }
                    }
                })
        }
        Err(e) => {
            hub.metrics.ws_refused();
            e.into_response()
        }
    }
}

enum Who {
    Agent(Arc<Profile>, Claims),
    Supervisor(Claims),
}

fn prepare(
    hub: &Hub,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<Who, ApiError> {
    if hub.is_draining() {
        return Err(ApiError::new(
            ErrorCode::ShuttingDown,
            "the hub is shutting down",
        ));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let allowed = &hub.config.server.allowed_origins;
        let ok = origin
            .to_str()
            .is_ok_and(|o| allowed.iter().any(|a| a == "*" || a == o) || same_origin(o, headers));
        if !ok {
            return Err(ApiError::new(
                ErrorCode::OriginNotAllowed,
                "this origin may not open a websocket here",
            ));
        }
    }
    let claims = authenticate(hub, headers, query)?;
    match claims.role {
        Role::Agent => Ok(Who::Agent(agent_profile(hub, &claims)?, claims)),
        Role::Supervisor => Ok(Who::Supervisor(claims)),
        Role::Integration => Err(ApiError::new(
            ErrorCode::Forbidden,
            "integration tokens use the HTTP API, not websockets",
        )),
    }
}

/// Whether `origin` is the hub's own: the desktop the hub serves at `/` opens its
/// websocket from the origin it was loaded from, whatever address the hub listens on.
/// The browser sets both headers, so a page from elsewhere cannot pass for it.
fn same_origin(origin: &str, headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|authority| authority.eq_ignore_ascii_case(host))
}

/// The configured profile, or one from the token's claims where that is allowed.
fn agent_profile(hub: &Hub, claims: &Claims) -> Result<Arc<Profile>, ApiError> {
    let id = AgentId::from(claims.sub.as_str());
    if let Some(p) = hub.profile(&id) {
        return Ok(p);
    }
    let unknown = || {
        ApiError::new(
            ErrorCode::UnknownAgent,
            format!("agent {:?} is not configured", claims.sub),
        )
    };
    if !hub.config.auth.allow_token_profiles {
        return Err(unknown());
    }
    let queues = claims.queues.clone().ok_or_else(unknown)?;
    for q in &queues {
        if !hub.config.queues.iter().any(|c| &c.id == q) {
            return Err(ApiError::new(
                ErrorCode::UnknownQueue,
                format!("token names queue {q:?}, which is not configured"),
            ));
        }
    }
    Ok(Arc::new(Profile {
        id,
        name: claims.name.clone().unwrap_or_else(|| claims.sub.clone()),
        team: None,
        skills: claims
            .skills
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        levels: Default::default(),
        // Once each, in the token's order: a queue named twice would count the agent
        // twice in its numbers.
        queues: queues
            .iter()
            .enumerate()
            .filter(|(i, q)| !queues[..*i].contains(q))
            .map(|(_, q)| QueueId::from(q.as_str()))
            .collect(),
        capacity: hub.config.capacity(None),
    }))
}
