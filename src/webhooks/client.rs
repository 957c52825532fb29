//! The HTTP client that POSTs webhooks: a small HTTP/1.1 client of its own
//! (`pipeline`, `wire`) so that deliveries of unrelated events share a kept-alive
//! connection, pipelined (several requests written before their answers, which come
//! back in order), and so that the connection is made here, to an address this module
//! has checked (`target::check`), never to whatever a name resolves to later. For https
//! the TLS handshake (`tls`) runs over that connection, inside the attempt's timeout.
//!
//! An attempt gives its request to the first open connection of the endpoint with
//! room (fewer than `depth` unanswered), so a burst fills one connection before the
//! next is made; a new connection is made when none has room. The delivery's rules
//! (one task's events one at a time, each after the previous one's 2xx) are the
//! runner's: a connection only ever carries unrelated events together.

use super::pipeline::{self, Job, KeepAlive, Outcome, Parts, Shared};
use super::target::{Target, TargetError};
use super::tls::Tls;
use super::wire::{Request, WireError};
use axum::body::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::{Acquire, Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

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
    /// The request could not be made.
    #[error("http: {0}")]
    Http(String),
    /// The connection ended (closed, reset) before this request's answer: it may
    /// have been received, or not; it is sent again.
    #[error("no answer: {0}")]
    Closed(String),
    /// The answers on the connection broke HTTP or a bound.
    #[error(transparent)]
    Answer(#[from] WireError),
    /// No answer within the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Requests unanswered on one connection, by default.
pub const DEFAULT_DEPTH: usize = 16;
/// Times a request handed back unsent (its connection ended first) is given to
/// another: each hand-back is a connection that ended, so a few at most.
const MAX_HANDS: usize = 8;

/// A connection as the client holds it.
struct Held {
    jobs: mpsc::UnboundedSender<Job>,
    shared: Arc<Shared>,
}

/// One endpoint's connections.
pub struct Client {
    target: Target,
    allow_private: bool,
    /// For an https target: the roots its certificate is checked against.
    tls: Option<Tls>,
    /// Unanswered requests per connection (1: no pipelining).
    depth: usize,
    conns: Mutex<Vec<Held>>,
    keep: Arc<KeepAlive>,
    /// The request line and constant fields; an error when the URL's path or host is
    /// not a valid request target or field (not expected of a `Target`: every attempt
    /// then fails, with the reason).
    request: Result<Arc<Request>, String>,
}

impl Client {
    /// A client for one endpoint (https: checked against Mozilla's roots).
    pub fn new(target: Target, allow_private: bool) -> Client {
        let request = match (
            hyper::Uri::try_from(target.path.as_str()),
            HeaderValue::from_str(&target.authority),
        ) {
            (Ok(_), Ok(host)) => Ok(Arc::new(Request::new(&target.path, &host))),
            (Err(e), _) => Err(format!("the path {:?}: {e}", target.path)),
            (_, Err(e)) => Err(format!("the host {:?}: {e}", target.authority)),
        };
        Client {
            tls: target.https.then(Tls::mozilla),
            target,
            allow_private,
            depth: DEFAULT_DEPTH,
            conns: Mutex::new(Vec::new()),
            keep: Arc::default(),
            request,
        }
    }

    /// The same, https checked against `tls` (the roots with `webhooks.ca_file`).
    pub fn with_tls(mut self, tls: &Tls) -> Client {
        if self.target.https {
            self.tls = Some(tls.clone());
        }
        self
    }

    /// The same, with at most `depth` requests unanswered per connection (1: one
    /// exchange at a time, no pipelining).
    pub fn with_depth(mut self, depth: usize) -> Client {
        self.depth = depth.max(1);
        self
    }

    /// POSTs `body` with `headers` (the ones of this attempt: the constant ones are
    /// added here); the whole exchange (connect included) within `timeout`.
    ///
    /// `patience` (the endpoint's timeout) is the connection's own bound for the
    /// request, which may be longer: an offer's attempt ends at the offer's deadline,
    /// but the connection it went on still makes itself and waits for its answer as
    /// for any request, so that the unrelated requests routed to it or pipelined behind
    /// it are not failed with it (an HTTP/1.1 connection cannot skip an answer).
    pub async fn post(
        &self,
        headers: [(HeaderName, HeaderValue); 3],
        body: Bytes,
        timeout: Duration,
        patience: Duration,
    ) -> Result<Answer, SendError> {
        let now = Instant::now();
        let parts = Parts {
            fields: headers,
            body,
        };
        let patience = patience.max(timeout);
        let written = Arc::new(AtomicBool::new(false));
        let exchange = self.exchange(parts, now + patience, patience, &written);
        tokio::pin!(exchange);
        match tokio::time::timeout_at(now + timeout, &mut exchange).await {
            Ok(r) => r,
            // Written whole before the attempt ended (an offer at its deadline): the
            // receiver has it and may act on it, so its answer is awaited as any
            // request's, and the events behind it (its task's, its agent's: the
            // offer's expiry) wait for it. Ended here, they went out while the
            // receiver was still handling the offer, on another connection or
            // pipelined behind it, and the attempt was recorded as never sent.
            Err(_) if written.load(Acquire) => {
                match tokio::time::timeout_at(now + patience, exchange).await {
                    Ok(r) => r,
                    Err(_) => Err(SendError::Timeout(patience)),
                }
            }
            Err(_) => Err(SendError::Timeout(timeout)),
        }
    }

    async fn exchange(
        &self,
        mut parts: Parts,
        deadline: Instant,
        timeout: Duration,
        written: &Arc<AtomicBool>,
    ) -> Result<Answer, SendError> {
        let request = self
            .request
            .as_ref()
            .map_err(|e| SendError::Http(e.clone()))?;
        for _ in 0..MAX_HANDS {
            let (answer, outcome) = oneshot::channel();
            self.give(
                request,
                Job {
                    parts,
                    deadline,
                    timeout,
                    answer,
                    written: written.clone(),
                },
            );
            match outcome.await {
                Ok(Outcome::Answer(h)) => {
                    return Ok(Answer {
                        status: h.status,
                        retry_after: h.retry_after,
                    });
                }
                Ok(Outcome::Failed(e)) => return Err(e),
                Ok(Outcome::Unsent(p)) => parts = *p,
                Err(_) => {
                    return Err(SendError::Closed(
                        "the connection's task ended without an answer".into(),
                    ));
                }
            }
        }
        Err(SendError::Closed(format!(
            "{MAX_HANDS} connections ended before the request was written"
        )))
    }

    /// Gives `job` to the first open connection with room, or to a new one.
    fn give(&self, request: &Arc<Request>, mut job: Job) {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns.retain(|c| !c.shared.closed.load(Relaxed));
        // A receiver that closes after each answer gets one request per connection.
        let room = |c: &Held| !self.keep.no() && c.shared.assigned.load(Relaxed) < self.depth;
        for c in conns.iter().filter(|c| room(c)) {
            c.shared.assigned.fetch_add(1, Relaxed);
            match c.jobs.send(job) {
                Ok(()) => return,
                // Its task is gone.
                Err(mpsc::error::SendError(j)) => {
                    c.shared.assigned.fetch_sub(1, Relaxed);
                    c.shared.closed.store(true, Relaxed);
                    job = j;
                }
            }
        }
        let (jobs, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared::default());
        shared.assigned.store(1, Relaxed);
        // The new connection's task takes it first (it cannot have ended yet).
        let _ = jobs.send(job);
        let (target, allow_private) = (self.target.clone(), self.allow_private);
        let (s, keep, depth) = (shared.clone(), self.keep.clone(), self.depth);
        match self.tls.clone() {
            None => tokio::spawn(pipeline::run(
                tcp(target, allow_private),
                request.clone(),
                rx,
                s,
                keep,
                depth,
            )),
            Some(tls) => tokio::spawn(pipeline::run(
                async move {
                    let host = target.host.clone();
                    let s = tcp(target, allow_private).await?;
                    tls.connect(&host, s).await.map_err(SendError::Tls)
                },
                request.clone(),
                rx,
                s,
                keep,
                depth,
            )),
        };
        conns.push(Held { jobs, shared });
    }
}

/// A TCP connection to an allowed address of `target`; resolved and checked on every
/// new connection (DNS rebinding).
async fn tcp(target: Target, allow_private: bool) -> Result<TcpStream, SendError> {
    let addrs = target.resolve(allow_private).await?;
    let mut last = None;
    for a in addrs {
        match TcpStream::connect(a).await {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = Some(format!("{a}: {e}")),
        }
    }
    Err(SendError::Connect(
        last.unwrap_or_else(|| "no address".into()),
    ))
}

/// `Retry-After`: delay seconds, or an HTTP date in any of the three forms a recipient
/// must accept (RFC 9110, 5.6.7: IMF-fixdate, RFC 850, asctime).
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v)
        .map(|d| d.with_timezone(&chrono::Utc))
        .or_else(|_| {
            // RFC 850 (two-digit year) and asctime: always GMT.
            chrono::NaiveDateTime::parse_from_str(v, "%A, %d-%b-%y %H:%M:%S GMT")
                .or_else(|_| chrono::NaiveDateTime::parse_from_str(v, "%a %b %e %H:%M:%S %Y"))
                .map(|d| d.and_utc())
        })
        .ok()?;
    Some((at - chrono::Utc::now()).to_std().unwrap_or(Duration::ZERO))
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
        // The two obsolete forms a recipient must still read, past and future.
        assert_eq!(
            parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("Sun Nov  6 08:49:37 1994"),
            Some(Duration::ZERO)
        );
        let later = chrono::Utc::now() + chrono::Duration::seconds(120);
        for text in [
            later.format("%A, %d-%b-%y %H:%M:%S GMT").to_string(),
            later.format("%a %b %e %H:%M:%S %Y").to_string(),
        ] {
            let d = parse_retry_after(&text).unwrap_or_default();
            assert!(
                d > Duration::from_secs(100) && d <= Duration::from_secs(120),
                "{text}: {d:?}"
            );
        }
    }
}
