//! The `idle` scenario: what a connected, idle desktop costs the hub. C authenticated
//! agents connect and only heartbeat (`{"type":"ping"}` every few seconds) for a while;
//! the hub's resident memory (VmRSS) is read before they connect and once they all
//! have, and its CPU time over the heartbeat window. Then the same against the echo
//! floor (`loadtest echo-server` in its own process: the hub's websocket stack and
//! buffers with no hub logic), and the two are compared per connection and per
//! heartbeat.

use crate::client::{self, Ws};
use crate::cluster::{Target, raise_nofile_limit};
use crate::hubproc::{self, proc_rss_kib, proc_usage};
use crate::report::{Check, Failure, Report};
use crate::scenario::{self, QUEUE, RunHub};
use crate::stats::{Hist, HistSet};
use futures_util::{SinkExt, StreamExt};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use switchboard::auth::Role;

use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::tungstenite::Message;

/// A heartbeat's round trip on the hub, in the measured window.
pub const H_HUB_RTT: &str = "hub: ping -> reply";
/// A heartbeat's round trip on the echo floor, in the measured window.
pub const H_ECHO_RTT: &str = "floor: ping -> echo";
/// A heartbeat's round trip on the hub while the other connections were opening.
pub const H_HUB_RTT_CONNECTING: &str = "hub: ping -> reply, connecting";
/// A heartbeat's round trip on the floor while the other connections were opening.
pub const H_ECHO_RTT_CONNECTING: &str = "floor: ping -> echo, connecting";

/// The `idle` scenario's options.
#[derive(Clone, Debug)]
pub struct IdleOpts {
    /// The hub: only a started one (its process is measured).
    pub target: Target,
    /// Connections.
    pub conns: usize,
    /// How long they heartbeat once all are connected.
    pub duration: Duration,
    /// Each connection's heartbeat period.
    pub ping_every: Duration,
    /// Loopback source addresses the sockets are spread over.
    pub source_addrs: usize,
    /// Connections opening at once.
    pub connect_concurrency: usize,
    /// The `loadtest` binary that runs `echo-server` (default: this executable).
    pub echo_bin: Option<PathBuf>,
    /// The largest hub/floor ratio of RSS per connection that passes.
    pub max_rss_ratio: f64,
    /// A progress line per phase on stderr.
    pub progress: bool,
    /// Keep the started hub's files.
    pub keep_files: bool,
}

impl IdleOpts {
    /// The defaults of `loadtest idle`.
    pub fn new(target: Target) -> IdleOpts {
        IdleOpts {
            target,
            conns: 10_000,
            duration: Duration::from_secs(15),
            ping_every: Duration::from_secs(5),
            source_addrs: 8,
            connect_concurrency: 128,
            echo_bin: None,
            max_rss_ratio: 2.0,
            progress: false,
            keep_files: false,
        }
    }

    fn check(&self) -> Result<(), Failure> {
        if self.conns == 0 || self.conns > 60_000 {
            return Err(Failure::new("--conns must be 1 to 60000"));
        }
        scenario::check_secs(self.duration, "--duration")?;
        if self.duration > Duration::from_secs(3600) {
            return Err(Failure::new("--duration must be at most an hour"));
        }
        if self.ping_every < Duration::from_millis(100) || self.ping_every > Duration::from_secs(60)
        {
            return Err(Failure::new("--ping-every must be 0.1 to 60 seconds"));
        }
        if !matches!(self.target, Target::Spawn { .. }) {
            return Err(Failure::new(
                "idle measures the hub's process: it starts its own hub (no --hub)",
            ));
        }
        Ok(())
    }

    fn params(&self) -> serde_json::Value {
        serde_json::json!({
            "conns": self.conns,
            "duration_secs": self.duration.as_secs_f64(),
            "ping_every_secs": self.ping_every.as_secs_f64(),
            "source_addrs": self.source_addrs,
            "max_rss_ratio": self.max_rss_ratio,
        })
    }
}

struct Live {
    /// Whether heartbeats now fall in the measured window (all connected).
    window: std::sync::atomic::AtomicBool,
    connected: AtomicUsize,
    failed: AtomicUsize,
    pings: AtomicU64,
    answers: AtomicU64,
    server_pings: AtomicU64,
}

#[derive(Default)]
struct ConnOut {
    rtt: Hist,
    rtt_connecting: Hist,
    error: Option<String>,
    wrong: Vec<String>,
}

#[derive(Clone)]
enum Server {
    Hub { token: String },
    Echo,
}

#[allow(clippy::too_many_arguments)]
async fn conn(
    server: Server,
    addr: SocketAddr,
    idx: usize,
    opts: Arc<IdleOpts>,
    live: Arc<Live>,
    gate: Arc<Semaphore>,
    mut close: watch::Receiver<bool>,
) -> ConnOut {
    let mut out = ConnOut::default();
    let src = client::source_addr(idx, opts.source_addrs);
    let connected: Result<Ws, String> = async {
        let _permit = gate.acquire().await.map_err(|e| e.to_string())?;
        match &server {
            Server::Hub { token } => client::agent_connect(addr, token, src).await,
            Server::Echo => client::ws_connect(addr, "/echo", src, false).await,
        }
    }
    .await;
    let mut ws = match connected {
        Ok(ws) => ws,
        Err(e) => {
            out.error = Some(format!("#{idx}: {e}"));
            live.failed.fetch_add(1, Ordering::Relaxed);
            return out;
        }
    };
    live.connected.fetch_add(1, Ordering::Relaxed);
    let hub = matches!(server, Server::Hub { .. });
    // Spread the heartbeats evenly over one period.
    let offset = opts
        .ping_every
        .mul_f64((idx % opts.conns.max(1)) as f64 / opts.conns.max(1) as f64);
    let mut next = tokio::time::Instant::now() + offset;
    let mut inflight: VecDeque<(u64, Instant, bool)> = VecDeque::new();
    let mut n = 0u64;
    loop {
        tokio::select! {
            biased;
            _ = close.changed() => break,
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    let Some((id, at, in_window)) = inflight.pop_front() else {
                        if out.wrong.len() < 3 {
                            out.wrong.push(format!("#{idx}: a frame with no ping in flight: {}", t.as_str().chars().take(120).collect::<String>()));
                        }
                        continue;
                    };
                    let ok = if hub {
                        serde_json::from_str::<client::Lite>(t.as_str())
                            .is_ok_and(|f| f.ty == "reply" && f.re.as_deref() == Some(id.to_string().as_str()))
                    } else {
                        true
                    };
                    if !ok && out.wrong.len() < 3 {
                        out.wrong.push(format!("#{idx}: ping {id} answered with {}", t.as_str().chars().take(120).collect::<String>()));
                    }
                    if in_window {
                        out.rtt.record(at.elapsed());
                    } else {
                        out.rtt_connecting.record(at.elapsed());
                    }
                    live.answers.fetch_add(1, Ordering::Relaxed);
                }
                Some(Ok(Message::Ping(_))) => {
                    live.server_pings.fetch_add(1, Ordering::Relaxed);
                }
                Some(Ok(Message::Close(c))) => {
                    out.error = Some(format!("#{idx}: closed by the server: {c:?}"));
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    out.error = Some(format!("#{idx}: websocket error: {e}"));
                    break;
                }
                None => {
                    out.error = Some(format!("#{idx}: connection closed"));
                    break;
                }
            },
            _ = tokio::time::sleep_until(next) => {
                n += 1;
                next += opts.ping_every;
                inflight.push_back((n, Instant::now(), live.window.load(Ordering::Relaxed)));
                live.pings.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = ws.send(Message::text(format!(r#"{{"id":"{n}","type":"ping"}}"#))).await {
                    out.error = Some(format!("#{idx}: send failed: {e}"));
                    break;
                }
            }
        }
    }
    if out.error.is_none() {
        client::close(&mut ws).await;
    } else {
        live.failed.fetch_add(1, Ordering::Relaxed);
    }
    out
}

/// What one side (hub or floor) measured.
#[derive(Debug, Default)]
struct Side {
    rss_before_kib: u64,
    rss_connected_kib: u64,
    rss_end_kib: u64,
    rss_closed_kib: u64,
    connect_secs: f64,
    connect_cpu_secs: f64,
    window_secs: f64,
    cpu_secs: f64,
    answers: u64,
    pings: u64,
    server_pings: u64,
    errors: Vec<String>,
    wrong: Vec<String>,
}

impl Side {
    fn per_conn_kib(&self, conns: usize) -> f64 {
        self.rss_connected_kib.saturating_sub(self.rss_before_kib) as f64 / conns.max(1) as f64
    }

    fn cpu_per_connect_us(&self, conns: usize) -> f64 {
        1e6 * self.connect_cpu_secs / conns.max(1) as f64
    }

    fn cpu_per_answer_us(&self) -> f64 {
        1e6 * self.cpu_secs / self.answers.max(1) as f64
    }
}

fn cpu_of(pid: u32) -> Option<f64> {
    proc_usage(pid).map(|u| u.0)
}

/// Connects every client to one server (pid `pid`), lets them heartbeat, measures.
#[allow(clippy::too_many_arguments)]
async fn measure(
    opts: &Arc<IdleOpts>,
    pid: u32,
    addr: SocketAddr,
    server: impl Fn(usize) -> Server,
    hists: &mut HistSet,
    hist: (&'static str, &'static str),
    what: &str,
    mut alive: impl FnMut() -> Result<(), Failure>,
) -> Result<Side, Failure> {
    let mut side = Side::default();
    tokio::time::sleep(Duration::from_millis(500)).await;
    side.rss_before_kib = proc_rss_kib(pid).unwrap_or(0);
    let connect_cpu0 = cpu_of(pid);
    let live = Arc::new(Live {
        window: std::sync::atomic::AtomicBool::new(false),
        connected: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        pings: AtomicU64::new(0),
        answers: AtomicU64::new(0),
        server_pings: AtomicU64::new(0),
    });
    let gate = Arc::new(Semaphore::new(opts.connect_concurrency.max(1)));
    let (close_tx, close_rx) = watch::channel(false);
    let started = Instant::now();
    let handles: Vec<_> = (0..opts.conns)
        .map(|i| {
            tokio::spawn(conn(
                server(i),
                addr,
                i,
                opts.clone(),
                live.clone(),
                gate.clone(),
                close_rx.clone(),
            ))
        })
        .collect();
    let limit = Duration::from_secs(60 + opts.conns as u64 / 100);
    let n = opts.conns;
    loop {
        let (c, f) = (
            live.connected.load(Ordering::Relaxed),
            live.failed.load(Ordering::Relaxed),
        );
        if c + f >= n || started.elapsed() >= limit {
            break;
        }
        if let Err(e) = alive() {
            let _ = close_tx.send(true);
            let _ = scenario::join_all(handles, Duration::from_secs(10)).await;
            return Err(e);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    side.connect_secs = started.elapsed().as_secs_f64();
    side.connect_cpu_secs = cpu_of(pid)
        .zip(connect_cpu0)
        .map(|(b, a)| b - a)
        .unwrap_or(0.0);
    if opts.progress {
        eprintln!(
            "{what}: {} of {n} connected in {:.2} s; heartbeating for {} s",
            live.connected.load(Ordering::Relaxed),
            side.connect_secs,
            opts.duration.as_secs_f64()
        );
    }
    // Let the connects' transient allocations settle, then read the steady state.
    tokio::time::sleep(Duration::from_secs(1)).await;
    side.rss_connected_kib = proc_rss_kib(pid).unwrap_or(0);
    let cpu0 = cpu_of(pid);
    live.window.store(true, Ordering::Relaxed);
    let answers0 = live.answers.load(Ordering::Relaxed);
    let pings0 = live.pings.load(Ordering::Relaxed);
    let sp0 = live.server_pings.load(Ordering::Relaxed);
    let w0 = Instant::now();
    let end = w0 + opts.duration;
    while Instant::now() < end {
        alive()?;
        tokio::time::sleep(
            Duration::from_millis(200).min(end.saturating_duration_since(Instant::now())),
        )
        .await;
    }
    side.window_secs = w0.elapsed().as_secs_f64();
    side.cpu_secs = cpu_of(pid).zip(cpu0).map(|(b, a)| b - a).unwrap_or(0.0);
    side.answers = live.answers.load(Ordering::Relaxed) - answers0;
    side.pings = live.pings.load(Ordering::Relaxed) - pings0;
    side.server_pings = live.server_pings.load(Ordering::Relaxed) - sp0;
    side.rss_end_kib = proc_rss_kib(pid).unwrap_or(0);
    let _ = close_tx.send(true);
    let (outs, lost) = scenario::join_all(handles, Duration::from_secs(30)).await;
    for o in outs {
        hists.get(hist.0).merge(&o.rtt);
        hists.get(hist.1).merge(&o.rtt_connecting);
        side.errors.extend(o.error);
        side.wrong.extend(o.wrong);
    }
    side.errors.extend(lost);
    let unanswered = live.pings.load(Ordering::Relaxed) - live.answers.load(Ordering::Relaxed);
    if unanswered > n as u64 {
        // Up to one ping per connection may be in flight when it closes.
        side.wrong.push(format!("{unanswered} pings unanswered"));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    side.rss_closed_kib = proc_rss_kib(pid).unwrap_or(0);
    Ok(side)
}

/// Runs the `idle` scenario.
pub async fn run_idle(opts: IdleOpts) -> Result<Report, Failure> {
    opts.check()?;
    let nofile = raise_nofile_limit();
    let setup = scenario::setup(1024, Duration::from_secs(15));
    let mut hub = RunHub::start(&opts.target, setup).await?;
    let result = drive(&opts, &mut hub, nofile).await;
    hub.finish(result, opts.keep_files).await
}

fn kib_mib(k: u64) -> f64 {
    k as f64 / 1024.0
}

async fn drive(opts: &IdleOpts, hub: &mut RunHub, nofile: Option<u64>) -> Result<Report, Failure> {
    let harness_cpu0 = hubproc::self_cpu_secs();
    let opts_arc = Arc::new(opts.clone());
    let Some(hub_pid) = hub.pid() else {
        return Err(Failure::new("the started hub has no process id"));
    };
    let mut hists = HistSet::default();
    let queues = Some(vec![QUEUE.to_owned()]);
    let tokens: Vec<String> = (0..opts.conns)
        .map(|i| hub.token(&format!("lt-idle-{i}"), Role::Agent, queues.clone()))
        .collect();
    let tokens = Arc::new(tokens);
    let hub_addr = hub.addr;
    let hub_side = {
        let tokens = tokens.clone();
        measure(
            &opts_arc,
            hub_pid,
            hub_addr,
            move |i| Server::Hub {
                token: tokens.get(i).cloned().unwrap_or_default(),
            },
            &mut hists,
            (H_HUB_RTT, H_HUB_RTT_CONNECTING),
            "hub",
            || hub.check_alive(),
        )
        .await?
    };
    // The hub's part is done: stop it so the floor has the machine to itself.
    hub.stop().await;

    let bin = crate::floor::echo_bin(opts.echo_bin.as_deref())?;
    let bound = opts.duration.as_secs() + 300 + opts.conns as u64 / 50;
    let mut echo = crate::floor::spawn_echo(&bin, bound).await?;
    let Some(echo_pid) = echo.child.id() else {
        return Err(Failure::new("the echo server has no process id"));
    };
    let echo_addr = echo.addr;
    let floor = measure(
        &opts_arc,
        echo_pid,
        echo_addr,
        |_| Server::Echo,
        &mut hists,
        (H_ECHO_RTT, H_ECHO_RTT_CONNECTING),
        "floor",
        || match echo.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(s)) => Err(Failure::new(format!("the echo server exited: {s}"))),
            Err(e) => Err(Failure::new(format!("the echo server: {e}"))),
        },
    )
    .await;
    let _ = echo.child.kill().await;
    let floor = floor?;
    let harness_cpu = hubproc::self_cpu_secs() - harness_cpu0;

    let c = opts.conns;
    let mut r = Report::new("idle", opts.params(), hub.desc.clone());
    r.elapsed_secs = hub_side.window_secs;
    let hub_per = hub_side.per_conn_kib(c);
    let floor_per = floor.per_conn_kib(c);
    let rss_ratio = hub_per / floor_per.max(1e-9);
    let cpu_ratio = hub_side.cpu_per_answer_us() / floor.cpu_per_answer_us().max(1e-9);
    r.figure("connections", c as f64, "");
    for (name, s) in [("hub", &hub_side), ("floor", &floor)] {
        r.figure(format!("{name}: connected in"), s.connect_secs, "s");
        r.figure(
            format!("{name}: CPU per connection opened"),
            s.cpu_per_connect_us(c),
            "µs",
        );
        r.figure(
            format!("{name}: RSS before connecting"),
            kib_mib(s.rss_before_kib),
            "MiB",
        );
        r.figure(
            format!("{name}: RSS all connected"),
            kib_mib(s.rss_connected_kib),
            "MiB",
        );
        r.figure(
            format!("{name}: RSS after the heartbeats"),
            kib_mib(s.rss_end_kib),
            "MiB",
        );
        r.figure(
            format!("{name}: RSS 2 s after all closed"),
            kib_mib(s.rss_closed_kib),
            "MiB",
        );
        r.figure(
            format!("{name}: RSS per connection"),
            s.per_conn_kib(c),
            "KiB",
        );
        r.figure(
            format!("{name}: heartbeats answered in the window"),
            s.answers as f64,
            "",
        );
        r.figure(
            format!("{name}: websocket pings from the server in the window"),
            s.server_pings as f64,
            "",
        );
        r.figure(format!("{name}: CPU in the window"), s.cpu_secs, "s");
        r.figure(
            format!("{name}: CPU per heartbeat"),
            s.cpu_per_answer_us(),
            "µs",
        );
    }
    r.figure("RSS per connection, hub / floor", rss_ratio, "x");
    r.figure("CPU per heartbeat, hub / floor", cpu_ratio, "x");
    r.figure(
        "CPU per connection opened, hub / floor",
        hub_side.cpu_per_connect_us(c) / floor.cpu_per_connect_us(c).max(1e-9),
        "x",
    );
    r.figure("harness CPU, whole run", harness_cpu, "s");
    r.latencies = hists.summaries(&[
        H_HUB_RTT,
        H_ECHO_RTT,
        H_HUB_RTT_CONNECTING,
        H_ECHO_RTT_CONNECTING,
    ]);

    r.checks.push(Check::from_breaches(
        "every hub connection authenticated, got its welcome and stayed open",
        format!("{c} agents in {:.2} s", hub_side.connect_secs),
        &hub_side.errors,
    ));
    r.checks.push(Check::from_breaches(
        "every echo connection opened and stayed open",
        format!("{c} connections in {:.2} s", floor.connect_secs),
        &floor.errors,
    ));
    let mut wrong = hub_side.wrong.clone();
    wrong.extend(floor.wrong.iter().cloned());
    r.checks.push(Check::from_breaches(
        "every heartbeat answered, in order (hub: a reply to its id; floor: its echo)",
        format!(
            "hub {} and floor {} answers in the windows",
            hub_side.answers, floor.answers
        ),
        &wrong,
    ));
    let mut mem = Vec::new();
    if rss_ratio.is_nan() || rss_ratio > opts.max_rss_ratio {
        mem.push(format!(
            "the hub holds {hub_per:.1} KiB per idle connection, {rss_ratio:.2}x the floor's {floor_per:.1} KiB (target at most {}x)",
            opts.max_rss_ratio
        ));
    }
    r.checks.push(Check::from_breaches(
        "hub RSS per idle connection within the target of the floor's",
        format!(
            "{hub_per:.1} KiB vs {floor_per:.1} KiB: {rss_ratio:.2}x (target <= {}x)",
            opts.max_rss_ratio
        ),
        &mem,
    ));
    r.notes.push(format!(
        "RSS per connection = (VmRSS 1 s after the last connect - VmRSS before the first) / {c}; the floor is `loadtest echo-server` in its own process (axum ws, read buffer 4096, no write buffer), the hub runs with its default read buffer (4096) and no write buffer"
    ));
    r.notes.push(format!(
        "CPU per heartbeat = (utime + stime of the process over the {:.0} s window) / heartbeats answered in it; the hub's figure also pays for its own websocket pings (every 20 s by default) and its timers",
        opts.duration.as_secs_f64()
    ));
    r.notes.push(format!(
        "the hub was stopped before the floor ran; harness used {harness_cpu:.2} CPU s"
    ));
    if let Some(l) = nofile {
        r.notes.push(format!(
            "open-file limit {l}; sockets spread over {} source addresses",
            opts.source_addrs
        ));
    }
    r.harness_cpu_secs = harness_cpu;
    Ok(r)
}
