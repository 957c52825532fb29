//! The agent desktop the hub serves at `/` and the supervisors' wallboard at
//! `/wallboard`: the built files of `web/` (`web/dist`), embedded in the binary so that
//! the start command serves a working desktop and `cargo build` needs no Node. Also the
//! two small HTTP routes the desktop reads besides
//! the websocket: its settings (`GET /v1/desktop/config`) and, on the loopback demo only,
//! the demo agents with ready-made tokens (`GET /v1/demo/agents`).
//!
//! Pages go out with a strict Content-Security-Policy: scripts and styles only from the
//! hub's own origin (no inline ones) and connections only back to it, which is also the
//! origin the websocket's allowed-origins check accepts.

use crate::auth::{Claims, Role, unix_now};
use crate::error::ErrorCode;
use crate::http::ApiError;
use crate::hub::Hub;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

/// One embedded file.
struct Asset {
    body: &'static [u8],
    content_type: &'static str,
    etag: OnceLock<HeaderValue>,
}

impl Asset {
    const fn new(body: &'static [u8], content_type: &'static str) -> Asset {
        Asset {
            body,
            content_type,
            etag: OnceLock::new(),
        }
    }

    /// A strong ETag from the content, computed once: the names are fixed, so browsers
    /// revalidate (`no-cache`) and get a 304 until a new build changes the bytes.
    fn etag(&self) -> &HeaderValue {
        self.etag.get_or_init(|| {
            let digest = Sha256::digest(self.body);
            let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
            HeaderValue::from_str(&format!("\"{hex}\""))
                .unwrap_or(HeaderValue::from_static("\"0\""))
        })
    }
}

static INDEX: Asset = Asset::new(
    include_bytes!("../web/dist/index.html"),
    "text/html; charset=utf-8",
);
static SCRIPT: Asset = Asset::new(
    include_bytes!("../web/dist/desktop.js"),
    "text/javascript; charset=utf-8",
);
static STYLE: Asset = Asset::new(
    include_bytes!("../web/dist/desktop.css"),
    "text/css; charset=utf-8",
);
static ICON: Asset = Asset::new(include_bytes!("../web/dist/icon.svg"), "image/svg+xml");
static WALLBOARD: Asset = Asset::new(
    include_bytes!("../web/dist/wallboard.html"),
    "text/html; charset=utf-8",
);
static WALLBOARD_SCRIPT: Asset = Asset::new(
    include_bytes!("../web/dist/wallboard.js"),
    "text/javascript; charset=utf-8",
);
static WALLBOARD_STYLE: Asset = Asset::new(
    include_bytes!("../web/dist/wallboard.css"),
    "text/css; charset=utf-8",
);

/// No inline script or style, nothing from elsewhere; `connect-src 'self'` covers the
/// websocket back to this origin (`ws:` / `wss:` of the same host and port).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

crate::http::route_table! {
    /// The desktop's routes, merged into the hub's router (see
    /// [`crate::http::all_routes`]); documented in `protocol/openapi.yaml` like the rest.
    pub const ROUTES;
    pub fn routes;
    get "/" => |h: HeaderMap| async move { serve(&INDEX, &h) },
    get "/assets/desktop.js" => |h: HeaderMap| async move { serve(&SCRIPT, &h) },
    get "/assets/desktop.css" => |h: HeaderMap| async move { serve(&STYLE, &h) },
    get "/assets/icon.svg" => |h: HeaderMap| async move { serve(&ICON, &h) },
    get "/v1/desktop/config" => desktop_config,
    get "/v1/demo/agents" => demo_agents,
    get "/wallboard" => |h: HeaderMap| async move { serve(&WALLBOARD, &h) },
    get "/assets/wallboard.js" => |h: HeaderMap| async move { serve(&WALLBOARD_SCRIPT, &h) },
    get "/assets/wallboard.css" => |h: HeaderMap| async move { serve(&WALLBOARD_STYLE, &h) },
}

fn serve(asset: &'static Asset, request: &HeaderMap) -> Response {
    let etag = asset.etag();
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim() == etag.to_str().unwrap_or(""))
        });
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            )],
            asset.body,
        )
            .into_response()
    };
    let h = response.headers_mut();
    h.insert(header::ETAG, etag.clone());
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// `GET /v1/desktop/config` (`#/$defs/DesktopConfig`).
#[derive(Serialize)]
struct DesktopConfig {
    not_ready_reasons: Vec<String>,
    queues: Vec<QueueName>,
}

#[derive(Serialize)]
struct QueueName {
    queue_id: String,
    name: String,
}

/// What a desktop needs that the websocket does not carry: the Not Ready reasons an
/// agent may choose, and the queues' display names. Any agent (or supervisor) token.
async fn desktop_config(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<DesktopConfig>, ApiError> {
    let claims = crate::ws::authenticate(&hub, &headers, &query)?;
    if claims.role == Role::Integration {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "the desktop settings are for agent and supervisor tokens",
        ));
    }
    let cfg = &hub.config;
    Ok(Json(DesktopConfig {
        not_ready_reasons: cfg.routing.not_ready_reasons.clone(),
        queues: cfg
            .queues
            .iter()
            .map(|q| QueueName {
                queue_id: q.id.clone(),
                name: q.name.clone().unwrap_or_else(|| q.id.clone()),
            })
            .collect(),
    }))
}

/// Whether a `Host` header names this machine's loopback: `localhost`, `127.x.x.x` or
/// `[::1]`, with or without a port.
fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(n, _)| n),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `GET /v1/demo/agents` (`#/$defs/DemoAgents`).
#[derive(Serialize)]
struct DemoAgents {
    agents: Vec<DemoAgent>,
}

#[derive(Serialize)]
struct DemoAgent {
    agent_id: String,
    name: String,
    token: String,
}

/// The demo agents with freshly minted tokens, so that a newcomer picks one on the
/// sign-in page. Only for the demo setup (no configuration file) listening on loopback,
/// where the hub already prints tokens; anywhere else the route does not exist (404).
///
/// Only to a request that names the hub by a loopback name (`Host`): a page elsewhere
/// whose name was rebound to 127.0.0.1 (DNS rebinding) would otherwise be same-origin
/// with the hub, and take its tokens.
async fn demo_agents(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
) -> Result<Json<DemoAgents>, ApiError> {
    let cfg = &hub.config;
    let loopback = cfg.listen_addr().is_ok_and(|a| a.ip().is_loopback());
    let named_loopback = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .is_some_and(loopback_host);
    if !(cfg.server.demo && loopback && named_loopback) {
        return Err(ApiError::new(ErrorCode::NotFound, "no such route"));
    }
    let exp = unix_now() + cfg.auth.demo_token_secs;
    let agents = cfg
        .agents
        .iter()
        .map(|a| DemoAgent {
            agent_id: a.id.clone(),
            name: a.name.clone().unwrap_or_else(|| a.id.clone()),
            token: hub.keys.sign(&Claims {
                sub: a.id.clone(),
                role: Role::Agent,
                exp,
                name: None,
                skills: None,
                queues: None,
            }),
        })
        .collect();
    Ok(Json(DemoAgents { agents }))
}
