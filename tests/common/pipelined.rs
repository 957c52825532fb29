//! A raw HTTP/1.1 receiver for the pipelining tests: it reads the requests off each
//! connection itself (httparse), so the test decides when it answers (once several
//! are read and unanswered), how (a `content-length` or a chunked body, `connection:
//! close`, 503), and when it closes a connection with requests still unanswered.
//! Requests are recorded when answered (or when the connection is closed on them), in
//! that order, so a request recorded after another was sent after that one's answer
//! could have been read.

use super::receiver::{Received, wait_notified};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// How the receiver answers.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Answers once this many requests are read and unanswered on a connection, or
    /// when no more bytes come for `quiet`.
    pub batch: usize,
    pub quiet: Duration,
    /// On the first this many connections: answers the first request of a batch of
    /// two or more, then closes with the rest unanswered.
    pub drop_after_first: usize,
    /// Every this-many-th request (all connections counted) is answered 503 with
    /// `retry-after: 0`; 0: none.
    pub busy_every: usize,
    /// Bodies chunked (every other answer; the others with a `content-length`).
    pub chunked: bool,
    /// Every answer says `connection: close`, and the connection is closed after it.
    pub close: bool,
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            batch: 1,
            quiet: Duration::from_millis(100),
            drop_after_first: 0,
            busy_every: 0,
            chunked: false,
            close: false,
        }
    }
}

/// One request as seen.
#[derive(Clone, Debug)]
pub struct Seen {
    pub request: Received,
    /// The connection it came on (0 for the first accepted).
    pub conn: usize,
    /// Requests read and unanswered on its connection when it was answered (or left).
    pub batch: usize,
}

struct Inner {
    plan: Plan,
    seen: Mutex<Vec<Seen>>,
    arrived: Notify,
    accepted: AtomicUsize,
    requests: AtomicUsize,
}

pub struct Pipelined {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Pipelined {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A request parsed from the front of `buf`: its headers, body and length.
fn parse(buf: &[u8]) -> Option<(HeaderMap, Vec<u8>, usize)> {
    let mut fields = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut fields);
    let head = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return None,
        Err(e) => panic!("the hub sent a request that is not HTTP/1.1: {e}"),
    };
    let mut headers = HeaderMap::new();
    let mut length = 0;
    for f in req.headers.iter() {
        let name = HeaderName::from_bytes(f.name.as_bytes()).expect("field name");
        let value = HeaderValue::from_bytes(f.value).expect("field value");
        if name == "content-length" {
            length = value.to_str().expect("length").parse().expect("length");
        }
        headers.append(name, value);
    }
    let end = head + length;
    (buf.len() >= end).then(|| (headers, buf[head..end].to_vec(), end))
}

impl Pipelined {
    pub async fn start(plan: Plan) -> Pipelined {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let inner = Arc::new(Inner {
            plan,
            seen: Mutex::new(Vec::new()),
            arrived: Notify::new(),
            accepted: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
        });
        let i = inner.clone();
        let server = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((s, _)) = l.accept().await {
                while conns.try_join_next().is_some() {}
                let n = i.accepted.fetch_add(1, Relaxed);
                conns.spawn(serve(s, n, i.clone()));
            }
        });
        Pipelined {
            addr,
            inner,
            server,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hooks", self.addr)
    }

    /// Connections accepted.
    pub fn connections(&self) -> usize {
        self.inner.accepted.load(Relaxed)
    }

    /// Every request, in the order answered (or left unanswered).
    pub fn seen(&self) -> Vec<Seen> {
        self.inner
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The most requests read on one connection before any of them was answered.
    pub fn max_batch(&self) -> usize {
        self.seen().iter().map(|s| s.batch).max().unwrap_or(0)
    }

    /// Waits until `pred` holds over the requests (status 0: never answered).
    pub async fn wait_for(
        &self,
        limit: Duration,
        what: &str,
        pred: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let now = || self.seen().into_iter().map(|s| s.request).collect();
        wait_notified(&self.inner.arrived, limit, now, pred, |got| {
            format!(
                "the receiver did not get {what} within {limit:?}; got {} requests, at most {} read before answering",
                got.len(),
                self.max_batch()
            )
        })
        .await
    }
}

fn record(
    inner: &Inner,
    conn: usize,
    batch: usize,
    headers: HeaderMap,
    body: Vec<u8>,
    status: u16,
) {
    inner
        .seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Seen {
            request: Received {
                headers,
                body,
                at: Instant::now(),
                status,
            },
            conn,
            batch,
        });
}

fn answer(plan: &Plan, n: usize, status: u16, out: &mut Vec<u8>) {
    let reason = if status == 503 { "Busy" } else { "OK" };
    out.extend_from_slice(format!("HTTP/1.1 {status} {reason}\r\n").as_bytes());
    if status == 503 {
        out.extend_from_slice(b"retry-after: 0\r\n");
    }
    if plan.close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    if plan.chunked && n % 2 == 1 {
        out.extend_from_slice(
            b"transfer-encoding: chunked\r\n\r\n3;ext=1\r\nok \r\nb\r\nthank you\r\n\r\n0\r\nx-done: yes\r\n\r\n",
        );
    } else {
        out.extend_from_slice(b"content-length: 9\r\n\r\nreceived\n");
    }
}

async fn serve(mut s: TcpStream, conn: usize, inner: Arc<Inner>) {
    let plan = inner.plan.clone();
    let mut buf = Vec::new();
    let mut pending: Vec<(HeaderMap, Vec<u8>)> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        while let Some((h, b, used)) = parse(&buf) {
            buf.drain(..used);
            pending.push((h, b));
        }
        let read = if pending.is_empty() {
            Some(s.read(&mut chunk).await)
        } else if pending.len() >= plan.batch {
            None
        } else {
            tokio::time::timeout(plan.quiet, s.read(&mut chunk))
                .await
                .ok()
        };
        match read {
            Some(Ok(0)) | Some(Err(_)) => {
                for (h, b) in pending.drain(..) {
                    record(&inner, conn, 0, h, b, 0);
                }
                inner.arrived.notify_waiters();
                return;
            }
            Some(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            None => {
                let batch = pending.len();
                let mut out = Vec::new();
                let drop_rest = conn < plan.drop_after_first && batch >= 2;
                let mut left = false;
                for (h, b) in pending.drain(..) {
                    if left {
                        // Read, never answered: the connection closes on it.
                        record(&inner, conn, batch, h, b, 0);
                        continue;
                    }
                    let n = inner.requests.fetch_add(1, Relaxed) + 1;
                    let status = if plan.busy_every > 0 && n % plan.busy_every == 0 {
                        503
                    } else {
                        200
                    };
                    record(&inner, conn, batch, h, b, status);
                    answer(&plan, n, status, &mut out);
                    left = drop_rest || plan.close;
                }
                inner.arrived.notify_waiters();
                if s.write_all(&out).await.is_err() || left {
                    let _ = s.shutdown().await;
                    return;
                }
            }
        }
    }
}
