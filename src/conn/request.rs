//! Per-request limits in front of the router, and the JSON body for every error.
//!
//! hyper bounds the head (its timeout and size); this bounds the rest before a handler
//! runs: the target's length, the body's type, and the body's arrival (read here,
//! whole, within `limits.request_body_timeout_ms` and `limits.max_body_bytes`). On the
//! way out, an error answer that is not JSON (axum's own rejections: a path with bad
//! percent-encoding, a query that does not decode) is given the documented body.

use crate::config::LimitsConfig;
use crate::error::ErrorCode;
use crate::http::ApiError;
use crate::hub::Hub;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::time::Duration;

/// The limits this layer applies, and the hub whose counters it adds to.
pub(crate) struct Limits {
    max_uri_bytes: usize,
    max_body_bytes: usize,
    body_timeout: Duration,
    hub: Arc<Hub>,
}

impl Limits {
    pub(crate) fn new(l: &LimitsConfig, hub: Arc<Hub>) -> Limits {
        Limits {
            max_uri_bytes: l.max_uri_bytes,
            max_body_bytes: l.max_body_bytes,
            body_timeout: Duration::from_millis(l.request_body_timeout_ms),
            hub,
        }
    }
}

/// An error answer after which the connection closes: the rest of the request was not
/// read, so the next bytes on the connection are not a request.
fn closing(code: ErrorCode, message: String) -> Response {
    let mut r = ApiError::new(code, message).into_response();
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

fn is_json(v: &HeaderValue) -> bool {
    let Ok(v) = v.to_str() else { return false };
    let essence = v.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
        || essence
            .rsplit_once('+')
            .is_some_and(|(_, s)| s.eq_ignore_ascii_case("json"))
}

fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0")
}

/// The middleware.
pub(crate) async fn guard(State(limits): State<Arc<Limits>>, req: Request, next: Next) -> Response {
    let target = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if target > limits.max_uri_bytes {
        return ApiError::new(
            ErrorCode::UriTooLong,
            format!(
                "the request target is limited to {} bytes",
                limits.max_uri_bytes
            ),
        )
        .into_response();
    }
    let req = if has_body(req.headers()) {
        if let Some(t) = req.headers().get(header::CONTENT_TYPE) {
            if !is_json(t) {
                return closing(
                    ErrorCode::UnsupportedMediaType,
                    "bodies are JSON: content-type: application/json".to_owned(),
                );
            }
        }
        let (parts, body) = req.into_parts();
        let max = limits.max_body_bytes;
        let limit = super::spread(limits.body_timeout);
        match tokio::time::timeout(limit, axum::body::to_bytes(body, max)).await {
            Ok(Ok(bytes)) => Request::from_parts(parts, Body::from(bytes)),
            Ok(Err(e)) => {
                let too_large = e.into_inner().is::<http_body_util::LengthLimitError>();
                return if too_large {
                    closing(
                        ErrorCode::PayloadTooLarge,
                        format!("bodies are limited to {max} bytes"),
                    )
                } else {
                    closing(
                        ErrorCode::BadRequest,
                        "the body could not be read".to_owned(),
                    )
                };
            }
            Err(_) => {
                limits.hub.metrics.body_timeout();
                // The path only: the query may hold an `access_token`.
                tracing::debug!(path = %parts.uri.path(), "request body not received in time");
                return closing(
                    ErrorCode::RequestTimeout,
                    format!("the body did not arrive within {} ms", limit.as_millis()),
                );
            }
        }
    } else {
        req
    };
    json_errors(next.run(req).await).await
}

/// Gives an error answer without a JSON body the documented one, keeping its status and
/// its other headers (`allow`, `connection`).
async fn json_errors(r: Response) -> Response {
    let status = r.status();
    if !(status.is_client_error() || status.is_server_error())
        || r.headers().get(header::CONTENT_TYPE).is_some_and(is_json)
    {
        return r;
    }
    let code = match status.as_u16() {
        400 => ErrorCode::BadRequest,
        404 => ErrorCode::NotFound,
        405 => ErrorCode::MethodNotAllowed,
        408 => ErrorCode::RequestTimeout,
        413 => ErrorCode::PayloadTooLarge,
        414 => ErrorCode::UriTooLong,
        415 => ErrorCode::UnsupportedMediaType,
        431 => ErrorCode::HeadersTooLarge,
        s if s >= 500 => ErrorCode::Internal,
        _ => ErrorCode::BadRequest,
    };
    let (parts, body) = r.into_parts();
    // axum's rejections are one short line of text: it becomes the message.
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    // The code's own status, so that the pair is always the documented one.
    let mut out = ApiError::new(code, message).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name, value.clone());
        }
    }
    out
}
