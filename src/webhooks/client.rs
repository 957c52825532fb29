//! The HTTP client that POSTs webhooks: hyper's HTTP/1 connection driven directly
//! (already in the tree for the server), so that the connection is made here, to an
//! address this module has checked (`target::check`), never to whatever a name
//! resolves to later. Idle connections are kept per endpoint and reused. For https the
//! TLS handshake (`tls`) runs over that connection, inside the attempt's timeout.

use super::target::{Target, TargetError};
use super::tls::Tls;
use axum::body::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper_util::rt::TokioIo;
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// What the receiver answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// `Retry-After`, when given (seconds or an HTTP date).
    pub retry_after: Option<Duration>,
}

/// Why an attempt got no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SendError {
    /// The address is refused.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// Connecting failed.
    #[error("connect: {0}")]
    Connect(String),
    /// The TLS handshake failed (a certificate not trusted or not for the host, ...).
    #[error("tls: {0}")]
    Tls(String),
    /// The exchange failed.
    #[error("http: {0}")]
    Http(String),
    /// No answer within the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Answers read past this are not wanted: the connection is dropped, not reused.
const MAX_ANSWER_BODY: usize = 64 * 1024;
/// Idle connections kept per endpoint.
const MAX_IDLE: usize = 32;

/// The headers every request of an endpoint carries, made once.
struct Fixed {
    path: hyper::Uri,
    host: HeaderValue,
}

/// One endpoint's connections.
pub struct Client {
    target: Target,
    allow_private: bool,
    /// For an https target: the roots its certificate is checked against.
    tls: Option<Tls>,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
    /// An error when the URL's path or host is not a valid request line or header (not
    /// expected of a `Target`: every attempt then fails, with the reason).
    fixed: Result<Fixed, String>,
}

impl Client {
    /// A client for one endpoint (https: checked against Mozilla's roots).
    pub fn new(target: Target, allow_private: bool) -> Client {
        let fixed = match (
            hyper::Uri::try_from(target.path.as_str()),
            HeaderValue::from_str(&target.authority),
        ) {
            (Ok(path), Ok(host)) => Ok(Fixed { path, host }),
            (Err(e), _) => Err(format!("the path {:?}: {e}", target.path)),
            (_, Err(e)) => Err(format!("the host {:?}: {e}", target.authority)),
        };
        Client {
            tls: target.https.then(Tls::mozilla),
            target,
            allow_private,
            idle: Mutex::new(Vec::new()),
            fixed,
        }
    }

    /// The same, https checked against `tls` (the roots with `webhooks.ca_file`).
    pub fn with_tls(mut self, tls: &Tls) -> Client {
        if self.target.https {
            self.tls = Some(tls.clone());
        }
        self
    }

    /// POSTs `body` with `headers` (the ones of this attempt: the constant ones are
    /// added here); the whole exchange (connect included) within `timeout`.
    pub async fn post(
        &self,
        headers: [(HeaderName, HeaderValue); 3],
        body: Bytes,
        timeout: Duration,
    ) -> Result<Answer, SendError> {
        match tokio::time::timeout(timeout, self.exchange(headers, body)).await {
            Ok(r) => r,
            Err(_) => Err(SendError::Timeout(timeout)),
        }
    }

    async fn exchange(
        &self,
        headers: [(HeaderName, HeaderValue); 3],
        body: Bytes,
    ) -> Result<Answer, SendError> {
        let fixed = self
            .fixed
            .as_ref()
            .map_err(|e| SendError::Http(e.clone()))?;
        let mut sender = self.sender().await?;
        let mut req = hyper::Request::new(Full::new(body));
        *req.method_mut() = hyper::Method::POST;
        *req.uri_mut() = fixed.path.clone();
        let h = req.headers_mut();
        h.reserve(6);
        h.insert(header::HOST, fixed.host.clone());
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(
            header::USER_AGENT,
            HeaderValue::from_static("switchboard-webhooks/1"),
        );
        for (k, v) in headers {
            h.insert(k, v);
        }
        let res = sender
            .send_request(req)
            .await
            .map_err(|e| SendError::Http(e.to_string()))?;
        let status = res.status().as_u16();
        let retry_after = res
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        // Read the answer (bounded) so the connection can carry the next request.
        if Limited::new(res.into_body(), MAX_ANSWER_BODY)
            .collect()
            .await
            .is_ok()
        {
            self.put_idle(sender);
        }
        Ok(Answer {
            status,
            retry_after,
        })
    }

    /// A kept connection, or a new one. A connection whose answer was just read is
    /// open but not yet ready (its task has not yet seen the end of the exchange):
    /// waited for, not dropped, so keep-alive holds when the next event follows at
    /// once.
    async fn sender(&self) -> Result<SendRequest<Full<Bytes>>, SendError> {
        while let Some(mut s) = self.take_idle() {
            if s.ready().await.is_ok() {
                return Ok(s);
            }
        }
        self.connect().await
    }

    fn take_idle(&self) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(s) = idle.pop() {
            if !s.is_closed() {
                return Some(s);
            }
        }
        None
    }

    fn put_idle(&self, s: SendRequest<Full<Bytes>>) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(s);
        }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, SendError> {
        // Resolved and checked on every new connection (DNS rebinding).
        let addrs = self.target.resolve(self.allow_private).await?;
        let mut last = None;
        for a in addrs {
            match tokio::net::TcpStream::connect(a).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    return match &self.tls {
                        None => http1(s).await,
                        Some(tls) => {
                            let s = tls
                                .connect(&self.target.host, s)
                                .await
                                .map_err(SendError::Tls)?;
                            http1(s).await
                        }
                    };
                }
                Err(e) => last = Some(format!("{a}: {e}")),
            }
        }
        Err(SendError::Connect(
            last.unwrap_or_else(|| "no address".into()),
        ))
    }
}

/// HTTP/1 over a connection made (plain or TLS).
async fn http1<T>(io: T) -> Result<SendRequest<Full<Bytes>>, SendError>
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| SendError::Connect(e.to_string()))?;
    // The connection's own task; it ends when the sender is dropped.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// `Retry-After`: delay seconds, or an HTTP date (RFC 9110).
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let now = chrono::Utc::now();
    Some(
        (at.with_timezone(&chrono::Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
