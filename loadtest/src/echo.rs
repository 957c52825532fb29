//! The echo floor: a minimal websocket echo server on the hub's own stack (axum 0.8
//! ws, read buffer 4096, no write buffer), and a client that measures round trips
//! against it. What the hub adds to a round trip is its latency minus this floor.

use crate::report::{Check, Counts, Failure, Report};
use crate::stats::HistSet;
use axum::Router;
use axum::extract::ws::{Message as AxMessage, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use axum::serve::ListenerExt;
use futures_util::{SinkExt, StreamExt};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

/// The round-trip histogram.
pub const H_ECHO_RTT: &str = "echo round trip";
/// TCP connect begins -> websocket open, every connection at once at the start.
pub const H_ECHO_CONNECT: &str = "echo connect -> open";

/// A running echo server.
pub struct EchoServer {
    /// Where it listens.
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl EchoServer {
    /// Stops it.
    pub fn stop(self) {
        self.task.abort();
    }
}

async fn upgrade(ws: WebSocketUpgrade) -> Response {
    // Tuned as the hub: 4 KiB read buffer, 8 KiB write buffer.
    ws.read_buffer_size(4096)
        .write_buffer_size(8 * 1024)
        .on_upgrade(|mut socket| async move {
            while let Some(Ok(msg)) = socket.recv().await {
                match msg {
                    AxMessage::Close(_) => break,
                    AxMessage::Text(_) | AxMessage::Binary(_) => {
                        if let Err(_closed) = socket.send(msg).await {
                            break;
                        }
                    }
                    _ => {}
                }
            }
        })
}

/// Starts an echo server on `listen` (a loopback address), websocket at `/echo`.
pub async fn start_echo_server(listen: SocketAddr) -> std::io::Result<EchoServer> {
    if !listen.ip().is_loopback() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the echo server listens on loopback only",
        ));
    }
    // Listens as the hub does (its backlog: a burst of connects is not dropped).
    let listener = switchboard::server::listen(listen)?;
    let addr = listener.local_addr()?;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let app = Router::new().route("/echo", get(upgrade));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(EchoServer { addr, task })
}

/// The echo scenario's options.
#[derive(Clone, Debug)]
pub struct EchoOpts {
    /// An echo server already running (loopback); `None` starts one in this process.
    pub addr: Option<SocketAddr>,
    /// Connections.
    pub conns: usize,
    /// Messages per second, over all connections.
    pub rate: f64,
    /// How long to send for.
    pub duration: Duration,
    /// Bytes per message (about an offer frame's size by default).
    pub size: usize,
}

impl Default for EchoOpts {
    fn default() -> Self {
        EchoOpts {
            addr: None,
            conns: 200,
            rate: 2000.0,
            duration: Duration::from_secs(5),
            size: 1200,
        }
    }
}

struct ConnOut {
    hists: HistSet,
    sent: u64,
    received: u64,
    errors: Vec<String>,
}

async fn echo_conn(
    url: String,
    period: Duration,
    offset: Duration,
    count: u64,
    payload: Arc<str>,
) -> ConnOut {
    let mut out = ConnOut {
        hists: HistSet::default(),
        sent: 0,
        received: 0,
        errors: Vec::new(),
    };
    let t = Instant::now();
    let mut ws = match tokio_tungstenite::connect_async_with_config(url.as_str(), None, true).await
    {
        Ok((ws, _)) => {
            out.hists.get(H_ECHO_CONNECT).record(t.elapsed());
            ws
        }
        Err(e) => {
            out.errors.push(format!("connect: {e}"));
            return out;
        }
    };
    let start = tokio::time::Instant::now() + offset;
    let mut in_flight: VecDeque<Instant> = VecDeque::new();
    let end = start + period * (count as u32) + Duration::from_secs(5);
    loop {
        if out.sent >= count && in_flight.is_empty() {
            break;
        }
        let due = start + period * (out.sent as u32);
        let want_send = out.sent < count;
        tokio::select! {
            _ = tokio::time::sleep_until(due), if want_send => {
                in_flight.push_back(Instant::now());
                out.sent += 1;
                if let Err(e) = ws.send(Message::text(payload.to_string())).await {
                    out.errors.push(format!("send: {e}"));
                    break;
                }
            }
            m = ws.next() => match m {
                Some(Ok(Message::Text(_))) => {
                    out.received += 1;
                    match in_flight.pop_front() {
                        Some(at) => out.hists.get(H_ECHO_RTT).record(at.elapsed()),
                        None => out.errors.push("an echo nobody sent".into()),
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    out.errors.push(format!("read: {e}"));
                    break;
                }
                None => {
                    out.errors.push("closed by the server".into());
                    break;
                }
            },
            _ = tokio::time::sleep_until(end) => {
                out.errors.push(format!("{} echoes missing at the end", in_flight.len()));
                break;
            }
        }
    }
    let _ = ws.close(None).await;
    out
}

/// Runs the echo floor: `conns` websockets send `rate` messages a second in all, each
/// message echoed; reports the round trip.
pub async fn run_echo(opts: EchoOpts) -> Result<Report, Failure> {
    if opts.conns == 0 || opts.rate.is_nan() || opts.rate <= 0.0 || opts.duration.is_zero() {
        return Err(Failure::new(
            "echo needs --conns, --rate and --duration above 0",
        ));
    }
    let total = (opts.rate * opts.duration.as_secs_f64()).ceil() as u64;
    if total > crate::route::MAX_TASKS {
        return Err(Failure::new("too many messages for one run"));
    }
    crate::cluster::raise_nofile_limit();
    let (addr, server) = match opts.addr {
        Some(a) if a.ip().is_loopback() => (a, None),
        Some(a) => {
            return Err(Failure::new(format!(
                "{a}: only loopback addresses may be load-tested"
            )));
        }
        None => {
            let s = start_echo_server(SocketAddr::from(([127, 0, 0, 1], 0)))
                .await
                .map_err(|e| Failure::new(format!("cannot start the echo server: {e}")))?;
            (s.addr, Some(s))
        }
    };
    let url = format!("ws://{addr}/echo");
    let per_conn_rate = opts.rate / opts.conns as f64;
    let period = Duration::from_secs_f64(1.0 / per_conn_rate);
    let base = total / opts.conns as u64;
    let extra = total % opts.conns as u64;
    let payload: Arc<str> = format!(
        r#"{{"type":"echo","pad":"{}"}}"#,
        "x".repeat(opts.size.saturating_sub(26))
    )
    .into();
    let t0 = Instant::now();
    let handles: Vec<_> = (0..opts.conns)
        .map(|i| {
            let count = base + u64::from((i as u64) < extra);
            // Spread the connections' schedules over one period.
            let offset = period.mul_f64(i as f64 / opts.conns as f64) + Duration::from_millis(200);
            tokio::spawn(echo_conn(
                url.clone(),
                period,
                offset,
                count,
                payload.clone(),
            ))
        })
        .collect();
    let mut hists = HistSet::default();
    let (mut sent, mut received, mut errors) = (0, 0, Vec::new());
    for h in handles {
        match h.await {
            Ok(o) => {
                hists.merge(&o.hists);
                sent += o.sent;
                received += o.received;
                errors.extend(o.errors);
            }
            Err(e) => errors.push(format!("connection task failed: {e}")),
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    if let Some(s) = server {
        s.stop();
    }
    let mut checks = vec![Check::from_breaches(
        "every message echoed, in order, on every connection",
        format!(
            "{sent} sent, {received} echoed on {} connections",
            opts.conns
        ),
        &errors,
    )];
    if sent < total {
        checks.push(Check::from_breaches(
            "every message sent",
            String::new(),
            &[format!("{sent} of {total}")],
        ));
    }
    let report = Report {
        scenario: "echo".into(),
        params: serde_json::json!({
            "conns": opts.conns, "rate": opts.rate, "duration_secs": opts.duration.as_secs_f64(),
            "size": opts.size, "server": if opts.addr.is_some() { "external" } else { "in-process" },
        }),
        figures: Vec::new(),
        hub: format!(
            "echo server at ws://{addr}/echo (axum ws, read buffer 4096, write buffer 8192)"
        ),
        elapsed_secs: elapsed,
        create_window_secs: opts.duration.as_secs_f64(),
        counts: Counts {
            created: sent,
            completed: received,
            frames_in: received,
            ..Counts::default()
        },
        create_rate: sent as f64 / opts.duration.as_secs_f64(),
        throughput: received as f64 / elapsed.max(1e-9),
        throughput_steady: None,
        frame_types: Default::default(),
        completion_timeline: Vec::new(),
        c2o_max_us_by_second: Vec::new(),
        c2o_over_1ms_by_second: Vec::new(),
        latencies: hists.summaries(&[H_ECHO_RTT, H_ECHO_CONNECT]),
        checks,
        accounting: Default::default(),
        hub_cpu_secs: None,
        hub_cpu_load_secs: None,
        harness_cpu_secs: crate::hubproc::self_cpu_secs(),
        notes: vec!["counts: created = messages sent, completed = echoes received".into()],
        floor_basis: None,
    };
    if report.passed() {
        Ok(report)
    } else {
        Err(Failure {
            message: "echo run failed".into(),
            report: Some(Box::new(report)),
        })
    }
}
