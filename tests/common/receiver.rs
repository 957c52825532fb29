//! A real HTTP receiver for webhook tests: a hyper server on a port of its own that
//! records every request (headers, body, arrival) and answers as the test says: 200,
//! another status (with `Retry-After`), or nothing at all (down: the port refuses
//! connections, then is listened on again). `start_tls`: the same over TLS, with a
//! certificate the test can change while it runs.

use axum::http::HeaderMap;
use http_body_util::BodyExt;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// One request received.
#[derive(Clone, Debug)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub at: Instant,
    /// What it was answered.
    pub status: u16,
}

impl Received {
    pub fn id(&self) -> String {
        self.header("webhook-id")
    }
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a webhook body is JSON")
    }
}

/// How the receiver answers.
#[derive(Clone, Debug)]
pub enum Answer {
    /// This status, with `Retry-After` when given.
    Status(u16, Option<&'static str>),
}

struct Shared {
    got: Mutex<Vec<Received>>,
    /// Each request's `webhook-id` and when it came, before any delay of its answer.
    arrivals: Mutex<Vec<(String, Instant)>>,
    answer: Mutex<Answer>,
    /// Answers to give first, in order, before `answer`.
    script: Mutex<std::collections::VecDeque<Answer>>,
    arrived: Notify,
    /// How long each answer takes.
    delay: Mutex<Duration>,
    /// https: the certificate new connections are served with.
    tls: Mutex<Option<tokio_rustls::TlsAcceptor>>,
    /// Connections accepted.
    accepted: std::sync::atomic::AtomicUsize,
    /// Requests arrived and not yet answered, and the most there ever were at once.
    open: std::sync::atomic::AtomicUsize,
    peak_open: std::sync::atomic::AtomicUsize,
}

pub struct Receiver {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    server: Option<JoinHandle<()>>,
}

async fn listen(addr: SocketAddr) -> tokio::net::TcpListener {
    let s = tokio::net::TcpSocket::new_v4().expect("socket");
    s.set_reuseaddr(true).expect("reuseaddr");
    s.bind(addr).expect("bind the receiver's port");
    s.listen(128).expect("listen")
}

fn serve(l: tokio::net::TcpListener, shared: Arc<Shared>) -> JoinHandle<()> {
    tokio::spawn(async move {
        // The connections die with the server task (down() aborts it): a receiver
        // that is down answers nothing, on new connections or kept-alive ones.
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((sock, _)) = l.accept().await else {
                return;
            };
            while conns.try_join_next().is_some() {}
            shared
                .accepted
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let shared = shared.clone();
            let tls = shared.tls.lock().unwrap_or_else(|p| p.into_inner()).clone();
            conns.spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let shared = shared.clone();
                    async move {
                        let id = req
                            .headers()
                            .get("webhook-id")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned();
                        shared
                            .arrivals
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((id, Instant::now()));
                        shared.arrived.notify_waiters();
                        let open = shared
                            .open
                            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                            + 1;
                        shared
                            .peak_open
                            .fetch_max(open, std::sync::atomic::Ordering::SeqCst);
                        let delay = *shared.delay.lock().unwrap_or_else(|p| p.into_inner());
                        if !delay.is_zero() {
                            tokio::time::sleep(delay).await;
                        }
                        let headers = req.headers().clone();
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes().to_vec())
                            .unwrap_or_default();
                        let answer = {
                            let next = shared
                                .script
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .pop_front();
                            next.unwrap_or_else(|| {
                                shared
                                    .answer
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .clone()
                            })
                        };
                        let Answer::Status(code, retry_after) = answer;
                        shared
                            .got
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(Received {
                                headers,
                                body,
                                at: Instant::now(),
                                status: code,
                            });
                        shared
                            .open
                            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                        shared.arrived.notify_waiters();
                        let mut res = hyper::Response::builder().status(code);
                        if let Some(r) = retry_after {
                            res = res.header("retry-after", r);
                        }
                        if (300..400).contains(&code) {
                            res = res.header("location", "http://127.0.0.1:9/elsewhere");
                        }
                        Ok::<_, std::convert::Infallible>(
                            res.body(http_body_util::Full::new(axum::body::Bytes::new()))
                                .expect("response"),
                        )
                    }
                });
                let http = hyper::server::conn::http1::Builder::new();
                match tls {
                    None => {
                        let _ = http.serve_connection(TokioIo::new(sock), svc).await;
                    }
                    // A failed handshake (a client that does not trust the certificate)
                    // reaches nothing.
                    Some(tls) => {
                        if let Ok(s) = tls.accept(sock).await {
                            let _ = http.serve_connection(TokioIo::new(s), svc).await;
                        }
                    }
                }
            });
        }
    })
}

impl Receiver {
    /// A receiver answering 200.
    pub async fn start() -> Receiver {
        Receiver::open(None).await
    }

    /// A receiver answering 200 over TLS with `tls`'s certificate; its URL names
    /// `localhost`.
    pub async fn start_tls(tls: tokio_rustls::TlsAcceptor) -> Receiver {
        Receiver::open(Some(tls)).await
    }

    /// New connections are served with this certificate from now on.
    pub fn set_tls(&self, tls: tokio_rustls::TlsAcceptor) {
        *self.shared.tls.lock().unwrap_or_else(|p| p.into_inner()) = Some(tls);
    }

    async fn open(tls: Option<tokio_rustls::TlsAcceptor>) -> Receiver {
        let l = listen("127.0.0.1:0".parse().expect("addr")).await;
        let addr = l.local_addr().expect("addr");
        let shared = Arc::new(Shared {
            got: Mutex::new(Vec::new()),
            arrivals: Mutex::new(Vec::new()),
            answer: Mutex::new(Answer::Status(200, None)),
            script: Mutex::new(Default::default()),
            arrived: Notify::new(),
            delay: Mutex::new(Duration::ZERO),
            tls: Mutex::new(tls),
            accepted: Default::default(),
            open: Default::default(),
            peak_open: Default::default(),
        });
        let server = Some(serve(l, shared.clone()));
        Receiver {
            addr,
            shared,
            server,
        }
    }

    pub fn url(&self) -> String {
        if self
            .shared
            .tls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
        {
            format!("https://localhost:{}/hooks", self.addr.port())
        } else {
            format!("http://{}/hooks", self.addr)
        }
    }

    /// From now on answers this.
    pub fn answer(&self, a: Answer) {
        *self.shared.answer.lock().unwrap_or_else(|p| p.into_inner()) = a;
    }

    /// Each answer takes this long from now on.
    pub fn delay(&self, d: Duration) {
        *self.shared.delay.lock().unwrap_or_else(|p| p.into_inner()) = d;
    }

    /// Answers these first, in order.
    pub fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.shared
            .script
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(answers);
    }

    /// How many connections it has accepted.
    /// The most requests the receiver was answering at once.
    pub fn peak_open(&self) -> usize {
        self.shared
            .peak_open
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn connections(&self) -> usize {
        self.shared
            .accepted
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops listening: connections are refused.
    pub fn down(&mut self) {
        if let Some(s) = self.server.take() {
            s.abort();
        }
    }

    /// Listens again on the same port.
    pub async fn up(&mut self) {
        let l = listen(self.addr).await;
        self.server = Some(serve(l, self.shared.clone()));
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared
            .got
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Every request's `webhook-id` and when it came (before any delay of its answer),
    /// in arrival order.
    pub fn arrivals(&self) -> Vec<(String, Instant)> {
        self.shared
            .arrivals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits until `pred` holds over the requests' arrivals (`webhook-id`, when it came,
    /// before any delay of its answer), in arrival order.
    pub async fn wait_arrivals(
        &self,
        limit: Duration,
        what: &str,
        pred: impl Fn(&[(String, Instant)]) -> bool,
    ) -> Vec<(String, Instant)> {
        wait_notified(
            &self.shared.arrived,
            limit,
            || self.arrivals(),
            pred,
            |got| {
                format!(
                    "{what} did not arrive within {limit:?}; {} requests came",
                    got.len()
                )
            },
        )
        .await
    }

    /// Waits until `pred` holds over what was received (or panics after `limit`).
    pub async fn wait_for(
        &self,
        limit: Duration,
        what: &str,
        pred: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        wait_notified(
            &self.shared.arrived,
            limit,
            || self.received(),
            pred,
            |got| {
                format!(
                    "the receiver did not get {what} within {limit:?}; got {} requests",
                    got.len()
                )
            },
        )
        .await
    }
}

/// Waits until `pred` holds over `now()`, looking again each time `arrived` is
/// notified; after `limit`, one last look, then a panic with `failure`'s text.
pub async fn wait_notified<T>(
    arrived: &tokio::sync::Notify,
    limit: Duration,
    now: impl Fn() -> Vec<T>,
    pred: impl Fn(&[T]) -> bool,
    failure: impl Fn(&[T]) -> String,
) -> Vec<T> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let notified = arrived.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let got = now();
        if pred(&got) {
            return got;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            let got = now();
            if pred(&got) {
                return got;
            }
            panic!("{}", failure(&got));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.down();
    }
}
