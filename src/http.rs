//! The HTTP side: the task API for integrations, read-only views, and the operator
//! endpoints (`/healthz`, `/readyz`, `/metrics`). Errors are JSON with the same codes
//! as the websocket protocol.

use crate::auth::{Claims, Role};
use crate::context::ContextCommand;
use crate::context::record::{Actor, CustomerFields};
use crate::error::{ErrorCode, HubError};
use crate::hub::Hub;
use crate::ids::{AgentId, QueueId, TaskId};
use crate::ids::{CustomerId, RequestId};
use crate::protocol::ErrorBody;
use crate::routing::Command;
use crate::state::Reply;
use crate::stats::report::StatsQuery;
use crate::task::NewTask;
use crate::ws;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::Deserialize;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// An error answered over HTTP: `{"error": {"code", "message", ...}}`.
#[derive(Debug)]
pub struct ApiError(pub Box<ErrorBody>);

impl ApiError {
    /// An error with a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError(Box::new(ErrorBody::new(code, message)))
    }
}

impl From<HubError> for ApiError {
    fn from(e: HubError) -> ApiError {
        ApiError(Box::new(ErrorBody::from(&e)))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.code.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
        (status, Json(serde_json::json!({ "error": self.0 }))).into_response()
    }
}

/// Declares a table of routes once, as both the list that `tests/openapi.rs` compares
/// with `protocol/openapi.yaml` (`(method, path)` pairs, the method in lower case as
/// OpenAPI writes it) and the router built from it, so that the two cannot differ.
/// Every route the hub serves is declared with it: never add one with `.route`
/// elsewhere, or the drift test cannot see it.
macro_rules! route_table {
    ($(#[$meta:meta])* $vis:vis const $list:ident; $fvis:vis fn $build:ident;
     $($method:ident $path:literal => $handler:expr,)+) => {
        $(#[$meta])*
        $vis const $list: &[(&str, &str)] = &[$((stringify!($method), $path),)+];

        /// The router of the routes in the table beside it (one path may appear with
        /// several methods: axum merges them).
        $fvis fn $build() -> axum::Router<std::sync::Arc<crate::hub::Hub>> {
            axum::Router::new()$(.route($path, axum::routing::$method($handler)))+
        }
    };
}
pub(crate) use route_table;

route_table! {
    /// The websocket upgrade, the HTTP API and the operator endpoints. A route added
    /// here must be documented in `protocol/openapi.yaml`: `tests/openapi.rs` fails
    /// until the two agree.
    pub const ROUTES;
    fn api_routes;
    get "/v1/ws" => ws::upgrade,
    post "/v1/tasks" => create_task,
    get "/v1/tasks/{id}" => get_task,
    post "/v1/tasks/{id}/cancel" => cancel_task,
    post "/v1/tasks/{id}/transfer" => transfer_task,
    get "/v1/snapshot" => snapshot,
    get "/v1/stats" => stats,
    get "/v1/events" => crate::events::stream::events,
    get "/v1/customers" => search_customers,
    post "/v1/customers" => create_customer,
    get "/v1/customers/{id}" => get_customer,
    patch "/v1/customers/{id}" => update_customer,
    get "/v1/customers/{id}/journey" => customer_journey,
    get "/healthz" => healthz,
    get "/readyz" => readyz,
    get "/metrics" => metrics,
}

/// Every `(method, path)` the hub routes: [`ROUTES`], the desktop's
/// ([`crate::web::ROUTES`]) and the webhooks' ([`crate::webhooks::api::ROUTES`]). Each `get` also answers `HEAD` (axum does that).
pub fn all_routes() -> impl Iterator<Item = (&'static str, &'static str)> {
    ROUTES
        .iter()
        .chain(crate::web::ROUTES)
        .chain(crate::webhooks::api::ROUTES)
        .copied()
}

/// The whole router: websockets and HTTP on one port.
pub fn router(hub: Arc<Hub>) -> Router {
    let body_limit = hub.config.limits.max_body_bytes;
    api_routes()
        .merge(crate::webhooks::api::routes())
        .merge(crate::web::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(hub)
}

async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "method not allowed on this route",
    )
}

/// The caller's claims, when its token is valid and its role one of `roles`.
pub(crate) fn caller(
    hub: &Hub,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    roles: &[Role],
) -> Result<Claims, ApiError> {
    let claims = ws::authenticate(hub, headers, query)?;
    if !roles.contains(&claims.role) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!("a token with role {} may not do this", claims.role.as_str()),
        ));
    }
    Ok(claims)
}

/// Turns a body into a request, with the protocol's error codes.
pub(crate) fn parse_body<T: for<'de> Deserialize<'de>>(
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<T, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("bodies are limited to {limit} bytes"),
            )
        } else {
            ApiError::new(ErrorCode::InvalidMessage, e.body_text())
        }
    })?;
    let body: &[u8] = if body.is_empty() { b"{}" } else { &body };
    serde_json::from_slice(body).map_err(|e| {
        let code = match e.classify() {
            serde_json::error::Category::Data => ErrorCode::InvalidMessage,
            _ => ErrorCode::BadJson,
        };
        ApiError::new(code, e.to_string())
    })
}

fn parse_task_id(id: &str) -> Result<TaskId, ApiError> {
    uuid::Uuid::parse_str(id)
        .map(TaskId)
        .map_err(|_| ApiError::new(ErrorCode::TaskNotFound, format!("no task {id:?}")))
}

async fn create_task(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    caller(&hub, &headers, &query, &[Role::Integration])?;
    let mut new: NewTask = parse_body(body, hub.config.limits.max_body_bytes)?;
    let header_key = headers
        .get("idempotency-key")
        .map(|v| v.to_str().map(str::to_owned))
        .transpose()
        .map_err(|_| {
            ApiError::from(HubError::invalid(
                "idempotency_key",
                "the Idempotency-Key header must be visible ASCII",
            ))
        })?;
    match (&new.idempotency_key, header_key) {
        (Some(body), Some(header)) if *body != header => {
            return Err(HubError::invalid(
                "idempotency_key",
                "differs from the Idempotency-Key header",
            )
            .into());
        }
        (None, Some(header)) => new.idempotency_key = Some(header),
        _ => {}
    }
    match hub.execute(Command::CreateTask(Box::new(new))).await? {
        Reply::Created { task, created } => {
            if created {
                tracing::debug!(task_id = %task.task_id, queue = %task.queue, channel = %task.channel, "task created");
            }
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok((status, Json(task)).into_response())
        }
        _ => Err(ApiError::new(ErrorCode::Internal, "unexpected reply")),
    }
}

async fn get_task(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller(
        &hub,
        &headers,
        &query,
        &[Role::Integration, Role::Supervisor],
    )?;
    let id = parse_task_id(&id)?;
    match hub.store().task(id).await? {
        Some(t) => Ok(Json(t).into_response()),
        None => Err(HubError::TaskNotFound(id).into()),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CancelBody {
    #[serde(default)]
    reason: Option<String>,
}

async fn cancel_task(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let c = caller(
        &hub,
        &headers,
        &query,
        &[Role::Integration, Role::Supervisor],
    )?;
    let task_id = parse_task_id(&id)?;
    let body: CancelBody = parse_body(body, hub.config.limits.max_body_bytes)?;
    tracing::info!(%task_id, by = %c.sub, "cancel");
    match hub
        .execute(Command::CancelTask {
            task_id,
            reason: body.reason,
            by: actor(&c),
        })
        .await?
    {
        Reply::Task(t) => Ok(Json(t).into_response()),
        _ => Err(ApiError::new(ErrorCode::Internal, "unexpected reply")),
    }
}

/// `POST /v1/tasks/{id}/transfer`: the body is `TransferRequest` (exactly one of
/// `to_queue`, `to_agent`).
async fn transfer_task(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let c = caller(
        &hub,
        &headers,
        &query,
        &[Role::Integration, Role::Supervisor],
    )?;
    let task_id = parse_task_id(&id)?;
    let body: crate::protocol::TransferRequest =
        parse_body(body, hub.config.limits.max_body_bytes)?;
    let to = body.destination()?;
    tracing::info!(%task_id, by = %c.sub, ?to, "transfer");
    match hub
        .execute(Command::Transfer {
            task_id,
            to,
            by: actor(&c),
        })
        .await?
    {
        Reply::Task(t) => Ok(Json(t).into_response()),
        _ => Err(ApiError::new(ErrorCode::Internal, "unexpected reply")),
    }
}

async fn snapshot(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    caller(
        &hub,
        &headers,
        &query,
        &[Role::Integration, Role::Supervisor],
    )?;
    let s = hub.store().snapshot(hub.clock.now()).await?;
    Ok(Json(s).into_response())
}

/// The most ids one `?queue=` or `?agent=` filter may list.
const MAX_FILTER_IDS: usize = 200;

/// A comma-separated list of ids, each checked like a name.
fn id_list(key: &str, v: &str) -> Result<BTreeSet<String>, ApiError> {
    let ids: Vec<&str> = v.split(',').map(str::trim).collect();
    if ids.len() > MAX_FILTER_IDS {
        return Err(ApiError::new(
            ErrorCode::InvalidField,
            format!("{key}: at most {MAX_FILTER_IDS} ids"),
        ));
    }
    if ids.iter().any(|i| i.is_empty()) {
        return Err(ApiError::new(
            ErrorCode::InvalidField,
            format!("{key}: a comma-separated list of ids, none empty"),
        ));
    }
    Ok(ids.into_iter().map(str::to_owned).collect())
}

async fn stats(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    caller(
        &hub,
        &headers,
        &query,
        &[Role::Integration, Role::Supervisor],
    )?;
    let mut q = StatsQuery::default();
    if let Some(v) = query.get("queue") {
        q.queues = Some(
            id_list("queue", v)?
                .into_iter()
                .map(|s| QueueId::from(s.as_str()))
                .collect(),
        );
    }
    if let Some(v) = query.get("agent") {
        q.agents = Some(
            id_list("agent", v)?
                .into_iter()
                .map(|s| AgentId::from(s.as_str()))
                .collect(),
        );
    }
    let report = hub.stats_report(&q)?;
    Ok(Json(report).into_response())
}

fn parse_customer_id(id: &str) -> Result<CustomerId, ApiError> {
    uuid::Uuid::parse_str(id)
        .map(CustomerId)
        .map_err(|_| ApiError::new(ErrorCode::CustomerNotFound, format!("no customer {id:?}")))
}

fn actor(c: &Claims) -> Actor {
    Actor {
        id: c.sub.clone(),
        role: c.role,
    }
}

async fn context_reply(
    hub: &Hub,
    cmd: ContextCommand,
    status: StatusCode,
) -> Result<Response, ApiError> {
    match hub.context(cmd).await? {
        Reply::Context(r) => {
            let body = crate::protocol::ReplyBody::from(r);
            Ok((status, Json(body)).into_response())
        }
        _ => Err(ApiError::new(ErrorCode::Internal, "unexpected reply")),
    }
}

/// A whole-number query parameter: `default` when absent, `invalid_field` when it is
/// not a whole number (a typo must not silently become the default).
fn query_number(
    query: &HashMap<String, String>,
    name: &str,
    default: usize,
) -> Result<usize, ApiError> {
    match query.get(name) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| HubError::invalid(name, "must be a whole number").into()),
    }
}

async fn search_customers(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    caller(
        &hub,
        &headers,
        &query,
        &[Role::Integration, Role::Supervisor],
    )?;
    let q = query.get("q").cloned().unwrap_or_default();
    crate::task::check_text("q", &q)?;
    let limit = query_number(&query, "limit", 20)?;
    context_reply(
        &hub,
        ContextCommand::Search { query: q, limit },
        StatusCode::OK,
    )
    .await
}

async fn create_customer(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let c = caller(&hub, &headers, &query, &[Role::Integration])?;
    let fields: CustomerFields = parse_body(body, hub.config.limits.max_body_bytes)?;
    if fields.is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidMessage,
            "the body must hold the customer's fields",
        ));
    }
    let cmd = ContextCommand::CreateCustomer {
        by: actor(&c),
        fields,
        activity_id: None,
    };
    context_reply(&hub, cmd, StatusCode::CREATED).await
}

async fn get_customer(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let c = caller(
        &hub,
        &headers,
        &query,
        &[Role::Integration, Role::Supervisor],
    )?;
    let cmd = ContextCommand::GetCustomer {
        by: actor(&c),
        customer_id: parse_customer_id(&id)?,
    };
    context_reply(&hub, cmd, StatusCode::OK).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CustomerUpdate {
    base_version: u64,
    changes: CustomerFields,
}

async fn update_customer(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let c = caller(&hub, &headers, &query, &[Role::Integration])?;
    let customer_id = parse_customer_id(&id)?;
    let u: CustomerUpdate = parse_body(body, hub.config.limits.max_body_bytes)?;
    let cmd = ContextCommand::UpdateCustomer {
        by: actor(&c),
        customer_id,
        base_version: u.base_version,
        changes: u.changes,
    };
    context_reply(&hub, cmd, StatusCode::OK).await
}

async fn customer_journey(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller(
        &hub,
        &headers,
        &query,
        &[Role::Integration, Role::Supervisor],
    )?;
    let request_id =
        match query.get("request_id") {
            Some(r) => Some(uuid::Uuid::parse_str(r).map(RequestId).map_err(|_| {
                ApiError::new(ErrorCode::RequestNotFound, format!("no request {r:?}"))
            })?),
            None => None,
        };
    let limit = query_number(&query, "limit", 100)?.clamp(1, 1000);
    let cmd = ContextCommand::Journey {
        customer_id: parse_customer_id(&id)?,
        request_id,
        limit,
    };
    context_reply(&hub, cmd, StatusCode::OK).await
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(hub): State<Arc<Hub>>) -> Result<&'static str, ApiError> {
    if hub.is_draining() {
        return Err(ApiError::new(ErrorCode::ShuttingDown, "draining"));
    }
    hub.store().ping().await?;
    Ok("ready\n")
}

async fn metrics(State(hub): State<Arc<Hub>>) -> Result<Response, ApiError> {
    let snap = hub.store().snapshot(hub.clock.now()).await?;
    let mut text = hub.metrics.render(&snap, hub.connections());
    hub.render_stats_metrics(&mut text);
    hub.store().render_metrics(&mut text);
    if let Some(w) = hub.webhooks.get() {
        w.render_metrics(&hub.store().webhooks().await?, &mut text);
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}
