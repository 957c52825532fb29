//! `/v1/webhooks`: list, create, read, delete, rotate, disable, enable, attempts,
//! replay. Integration tokens only: an endpoint receives every event of its types
//! (customers' names, agents' states), so whoever adds one reads the whole event
//! stream; that is the integrations' trust level, not a supervisor console's. A secret
//! is shown only in the answers of create and rotate.

use super::book::{Endpoint, WebhookCommand, WebhookReply};
use super::config::{check_id, check_types};
use super::signing::Secret;
use super::target::Target;
use super::{Definition, Webhooks, definitions, webhook_reply};
use crate::auth::Role;
use crate::error::{ErrorCode, HubError};
use crate::http::{ApiError, caller, parse_body};
use crate::hub::Hub;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

crate::http::route_table! {
    /// The webhook routes, merged into the hub's router (see
    /// [`crate::http::all_routes`]); documented in `protocol/openapi.yaml`.
    pub const ROUTES;
    pub fn routes;
    get "/v1/webhooks" => list,
    post "/v1/webhooks" => create,
    get "/v1/webhooks/{id}" => read,
    delete "/v1/webhooks/{id}" => delete,
    post "/v1/webhooks/{id}/rotate" => rotate,
    post "/v1/webhooks/{id}/disable" => disable,
    post "/v1/webhooks/{id}/enable" => enable,
    get "/v1/webhooks/{id}/attempts" => attempts,
    post "/v1/webhooks/{id}/replay" => replay,
}

type Q = Query<HashMap<String, String>>;

fn service(hub: &Hub) -> Result<&Arc<Webhooks>, ApiError> {
    hub.webhooks
        .get()
        .ok_or_else(|| ApiError::new(ErrorCode::ShuttingDown, "webhooks are not running"))
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("no webhook endpoint {id:?}"))
}

fn from_config(id: &str) -> ApiError {
    ApiError::new(
        ErrorCode::Forbidden,
        format!("webhook endpoint {id:?} is declared in the config: change it there"),
    )
}

async fn find(hub: &Hub, w: &Webhooks, id: &str) -> Result<(Definition, Value), ApiError> {
    let book = hub.store().webhooks().await?;
    let now = hub.clock.now();
    let d = definitions(w.rules(), &book, now)
        .into_iter()
        .find(|d| d.id == id)
        .ok_or_else(|| not_found(id))?;
    let v = view(hub, w, &book, &d);
    Ok((d, v))
}

fn view(hub: &Hub, w: &Webhooks, book: &super::book::WebhookBook, d: &Definition) -> Value {
    let c = book.cursors.get(&d.id);
    let position = c.and_then(|c| c.position);
    let head = w.head();
    let r = w.records(&d.id);
    let _ = hub;
    json!({
        "id": d.id,
        "url": d.url,
        "types": d.types,
        "source": if d.from_config { "config" } else { "api" },
        "enabled": c.is_none_or(|c| c.disabled.is_none()),
        "disabled_reason": c.and_then(|c| c.disabled.clone()),
        "position": position,
        "lag": position.map(|p| head.saturating_sub(p)),
        "delivering_node": c.and_then(|c| c.lease.as_ref()).map(|l| l.node.clone()),
        "previous_secret_until": d.previous_until,
        "delivered": r.delivered.load(std::sync::atomic::Ordering::Relaxed),
    })
}

async fn list(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(q): Q,
) -> Result<Response, ApiError> {
    caller(&hub, &headers, &q, &[Role::Integration])?;
    let w = service(&hub)?;
    let book = hub.store().webhooks().await?;
    let defs = definitions(w.rules(), &book, hub.clock.now());
    let items: Vec<Value> = defs.iter().map(|d| view(&hub, w, &book, d)).collect();
    Ok(Json(json!({ "webhooks": items })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    #[serde(default)]
    id: Option<String>,
    url: String,
    #[serde(default)]
    types: Option<Vec<String>>,
    #[serde(default)]
    secret: Option<String>,
}

fn invalid(field: &str, why: impl std::fmt::Display) -> ApiError {
    HubError::invalid(field, why.to_string()).into()
}

async fn create(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(q): Q,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let c = caller(&hub, &headers, &q, &[Role::Integration])?;
    let w = service(&hub)?;
    let b: CreateBody = parse_body(body, hub.config.limits.max_body_bytes)?;
    let id =
        b.id.unwrap_or_else(|| format!("wh_{}", uuid::Uuid::new_v4().simple()));
    check_id(&id).map_err(|e| invalid("id", e))?;
    if w.rules().endpoints.iter().any(|e| e.id == id) {
        return Err(invalid("id", format!("{id:?} is declared in the config")));
    }
    let types = b.types.unwrap_or_else(|| vec!["*".into()]);
    check_types(&types).map_err(|e| invalid("types", e))?;
    let target = Target::parse(&b.url).map_err(|e| invalid("url", e))?;
    // The private-address rule, now; again at every connection.
    target
        .resolve(w.rules().allow_private)
        .await
        .map_err(|e| invalid("url", e))?;
    let secret = match b.secret {
        Some(s) => Secret::parse(&s).map_err(|e| invalid("secret", e))?,
        None => Secret::generate(),
    };
    let endpoint = Endpoint {
        id: id.clone(),
        url: b.url,
        types,
        secret: secret.text(),
        previous: None,
        older: Vec::new(),
        created: hub.clock.now(),
    };
    let r = hub
        .webhook(WebhookCommand::Create {
            endpoint,
            start: w.head(),
            max: u32::try_from(w.rules().max_endpoints).unwrap_or(u32::MAX),
        })
        .await;
    webhook_reply(r)?;
    tracing::info!(endpoint = %id, by = %c.sub, "webhook endpoint created");
    let (_, mut v) = find(&hub, w, &id).await?;
    v["secret"] = json!(secret.text());
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

async fn read(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(q): Q,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller(&hub, &headers, &q, &[Role::Integration])?;
    let w = service(&hub)?;
    let (_, v) = find(&hub, w, &id).await?;
    Ok(Json(v).into_response())
}

async fn delete(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(q): Q,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let c = caller(&hub, &headers, &q, &[Role::Integration])?;
    let w = service(&hub)?;
    let (d, _) = find(&hub, w, &id).await?;
    if d.from_config {
        return Err(from_config(&id));
    }
    // An endpoint deleted meanwhile by a racing request: the book's 404, as a
    // moment later.
    webhook_reply(hub.webhook(WebhookCommand::Delete { id: id.clone() }).await)?;
    w.settle().await;
    tracing::info!(endpoint = %id, by = %c.sub, "webhook endpoint deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    #[serde(default)]
    secret: Option<String>,
}

async fn rotate(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(q): Q,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let c = caller(&hub, &headers, &q, &[Role::Integration])?;
    let w = service(&hub)?;
    let b: RotateBody = parse_body(body, hub.config.limits.max_body_bytes)?;
    let (d, _) = find(&hub, w, &id).await?;
    if d.from_config {
        return Err(from_config(&id));
    }
    let secret = match b.secret {
        Some(s) => Secret::parse(&s).map_err(|e| invalid("secret", e))?,
        None => Secret::generate(),
    };
    let overlap_until = hub
        .clock
        .now()
        .plus(Duration::from_secs(w.rules().rotation_overlap_secs));
    let r = hub
        .webhook(WebhookCommand::Rotate {
            id: id.clone(),
            secret: secret.text(),
            overlap_until,
        })
        .await;
    webhook_reply(r)?;
    w.settle().await;
    tracing::info!(endpoint = %id, by = %c.sub, "webhook secret rotated");
    let (_, mut v) = find(&hub, w, &id).await?;
    v["secret"] = json!(secret.text());
    Ok(Json(v).into_response())
}

async fn set_disabled(hub: &Hub, id: &str, reason: Option<String>) -> Result<Response, ApiError> {
    let w = service(hub)?;
    let (d, _) = find(hub, w, id).await?;
    let r = hub
        .webhook(WebhookCommand::SetDisabled {
            id: id.to_owned(),
            reason,
            token: None,
            config: d.from_config,
        })
        .await;
    webhook_reply(r)?;
    w.settle().await;
    let (_, v) = find(hub, w, id).await?;
    Ok(Json(v).into_response())
}

async fn disable(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(q): Q,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let c = caller(&hub, &headers, &q, &[Role::Integration])?;
    set_disabled(&hub, &id, Some(format!("disabled by {}", c.sub))).await
}

async fn enable(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(q): Q,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller(&hub, &headers, &q, &[Role::Integration])?;
    set_disabled(&hub, &id, None).await
}

async fn attempts(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(q): Q,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller(&hub, &headers, &q, &[Role::Integration])?;
    let w = service(&hub)?;
    find(&hub, w, &id).await?;
    // A typo is refused, not read as the default.
    let limit = match q.get("limit") {
        None => 100,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| invalid("limit", "must be a whole number from 1 to 1000"))?,
    };
    let list = w.records(&id).recent(limit);
    Ok(Json(json!({ "node": hub.node.as_ref(), "attempts": list })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    since: u64,
}

async fn replay(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(q): Q,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let c = caller(&hub, &headers, &q, &[Role::Integration])?;
    let w = service(&hub)?;
    let b: ReplayBody = parse_body(body, hub.config.limits.max_body_bytes)?;
    let (d, _) = find(&hub, w, &id).await?;
    let head = w.head();
    if b.since > head {
        return Err(invalid(
            "since",
            format!("the newest event is {head}: since must not be after it"),
        ));
    }
    // Said now, with the oldest position held, rather than by the endpoint disabled a
    // moment later for events it could never get.
    let (oldest, _) = hub.event_bounds();
    if b.since.saturating_add(1) < oldest {
        return Err(HubError::EventsGone {
            why: format!("the events after {} are no longer held", b.since),
            oldest,
            epoch: hub.event_epoch(),
        }
        .into());
    }
    let r = hub
        .webhook(WebhookCommand::Replay {
            id: id.clone(),
            since: b.since,
            config: d.from_config,
        })
        .await;
    if webhook_reply(r)? != WebhookReply::Done {
        return Err(ApiError::new(ErrorCode::Internal, "unexpected reply"));
    }
    w.settle().await;
    tracing::info!(endpoint = %id, since = b.since, by = %c.sub, "webhook replay");
    let (_, v) = find(&hub, w, &id).await?;
    Ok(Json(v).into_response())
}
