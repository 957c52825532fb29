//! The `reconnect` scenario: desktops lose their network and come back. N agents go
//! Ready and each is offered one task; a share of them accept it (Busy, the task In
//! Progress), the rest leave it pending (Reserved). Then every socket is dropped
//! (a TCP reset without a websocket close frame, by default) in one go or in waves,
//! and each agent reconnects with the same token after a short pause, well within the
//! hub's reconnect grace period: to another node when there are several. Measures
//! reconnect (TCP connect begins) -> `welcome`, which must say `resumed: true` and
//! carry the same status and the same offer or In Progress task as before the drop;
//! then how soon the resumed agent can act (accept -> reply, complete -> reply).
//! Checks that no task moved in between, and accounts for every task at the end.

mod desktop;

use desktop::{Ctx, Live, Out, Phase, Spec, agent, note};

use crate::agent::{AgentOutcome, CompleteRec};
use crate::checks::{self, Lookup};
use crate::cluster::{self, Cluster, Launched, Target, raise_nofile_limit};
use crate::httpc::{HttpClient, created_task_id};
use crate::report::{Check, Counts, Failure, Report};
use crate::scenario::{self, QUEUE};
use crate::stats::HistSet;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use switchboard::auth::{Keys, Role};
use tokio::sync::{Semaphore, watch};

/// Reconnect (TCP connect begins) to the `welcome` frame read.
pub const H_RESUME: &str = "reconnect -> resumed";
/// The drop of the old socket to the `welcome` on the new one (pause included).
pub const H_AWAY: &str = "drop -> resumed";
/// An offer holder's accept, sent right after its welcome, to its reply.
pub const H_ACCEPT: &str = "accept after resume -> ack";
/// A Busy agent's complete, sent right after its welcome, to its reply.
pub const H_COMPLETE: &str = "complete after resume -> ack";
/// The first login: TCP connect begins to the `welcome` read (for comparison).
pub const H_LOGIN: &str = "login -> welcome";
/// The HTTP create round trip.
pub const H_CREATE: &str = "POST /v1/tasks";

/// How an agent's connection goes away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropMode {
    /// A TCP reset (SO_LINGER 0, then close), no websocket close frame: the network
    /// went away under a desktop that noticed.
    Rst,
    /// A plain TCP close (FIN), no websocket close frame.
    Fin,
    /// A websocket close handshake, then the TCP close.
    Close,
    /// Nothing the hub can see: the old socket stays open and unread, so the reconnect
    /// takes over a connection the hub still believes in (it must say goodbye
    /// `replaced` to the old one).
    Stale,
}

impl DropMode {
    /// Its command-line name.
    pub fn as_str(self) -> &'static str {
        match self {
            DropMode::Rst => "rst",
            DropMode::Fin => "fin",
            DropMode::Close => "close",
            DropMode::Stale => "stale",
        }
    }
}

/// The `reconnect` scenario's options.
#[derive(Clone, Debug)]
pub struct ReconnectOpts {
    /// The hub.
    pub target: Target,
    /// Agents; as many tasks are created, one offered to each.
    pub agents: usize,
    /// Share of the agents that accept their offer before the drop (Busy); the rest
    /// hold it pending (Reserved).
    pub busy_share: f64,
    /// How the sockets are dropped.
    pub drop: DropMode,
    /// Waves of drops: agent `i` is in wave `i % waves`.
    pub waves: usize,
    /// Time between two waves.
    pub wave_gap: Duration,
    /// Time between an agent's drop and its reconnect.
    pub pause: Duration,
    /// `routing.reconnect_grace_secs` of the started hub.
    pub grace: Duration,
    /// Offer timeout of the started hub: long, so that no offer expires in the run.
    pub offer_timeout: Duration,
    /// HTTP connections creating the tasks.
    pub http_conns: usize,
    /// Agents logging in at once (reconnects are not gated: the waves spread them).
    pub connect_concurrency: usize,
    /// Loopback source addresses the sockets are spread over.
    pub source_addrs: usize,
    /// Hub nodes to start (more than one needs `redis`); agent `i` logs in to node
    /// `i % nodes` and reconnects to the next one.
    pub nodes: usize,
    /// Start a Redis of the run's own, shared by the nodes.
    pub redis: bool,
    /// The `redis-server` binary.
    pub redis_bin: PathBuf,
    /// `store.snapshot_every` of the started nodes (with `redis`).
    pub snapshot_every: Option<u64>,
    /// A progress line a second on stderr.
    pub progress: bool,
    /// Keep the started hub's files.
    pub keep_files: bool,
}

impl ReconnectOpts {
    /// The defaults of `loadtest reconnect`.
    pub fn new(target: Target) -> ReconnectOpts {
        ReconnectOpts {
            target,
            agents: 1000,
            busy_share: 0.5,
            drop: DropMode::Rst,
            waves: 1,
            wave_gap: Duration::from_millis(250),
            pause: Duration::from_millis(500),
            grace: Duration::from_secs(10),
            offer_timeout: Duration::from_secs(120),
            http_conns: 8,
            connect_concurrency: 128,
            source_addrs: 8,
            nodes: 1,
            redis: false,
            redis_bin: PathBuf::from("redis-server"),
            snapshot_every: None,
            progress: false,
            keep_files: false,
        }
    }

    /// The latest an agent reconnects after the first drop, pause included.
    fn spread(&self) -> Duration {
        self.wave_gap * (self.waves.max(1) as u32 - 1) + self.pause
    }

    fn check(&self) -> Result<(), Failure> {
        let bad = |m: &str| Err(Failure::new(m));
        if self.agents == 0 || self.agents > 30_000 {
            return bad("--agents must be 1 to 30000");
        }
        if !(0.0..=1.0).contains(&self.busy_share) {
            return bad("--busy-share must be between 0 and 1");
        }
        if self.waves == 0 || self.waves > 1000 {
            return bad("--waves must be 1 to 1000");
        }
        if self.spread() > Duration::from_secs(60) {
            return bad("the waves and the pause must end within 60 s");
        }
        if self.grace < Duration::from_secs(1) || self.grace > Duration::from_secs(600) {
            return bad("--grace must be 1 to 600 seconds");
        }
        if self.pause * 2 > self.grace {
            return bad(
                "--pause must be at most half the grace period: a reconnect well within it",
            );
        }
        if self.offer_timeout < Duration::from_secs(10)
            || self.offer_timeout > Duration::from_secs(3600)
        {
            return bad("--offer-timeout must be 10 to 3600 seconds");
        }
        if let Target::External { .. } = &self.target {
            if self.nodes > 1 || self.redis {
                return bad("--nodes and --redis start their own hubs: not with --hub");
            }
        }
        if self.nodes == 0 || self.nodes > cluster::MAX_NODES {
            return Err(Failure::new(format!(
                "--nodes must be 1 to {}",
                cluster::MAX_NODES
            )));
        }
        if self.nodes > 1 && !self.redis {
            return bad("several nodes share state through Redis: add --redis");
        }
        Ok(())
    }

    /// Agents that accept their offer before the drop: spread evenly over the indices.
    pub fn busy(&self, i: usize) -> bool {
        let s = self.busy_share;
        ((i + 1) as f64 * s).floor() > (i as f64 * s).floor()
    }

    fn params(&self) -> serde_json::Value {
        serde_json::json!({
            "agents": self.agents,
            "tasks": self.agents,
            "busy_share": self.busy_share,
            "drop": self.drop.as_str(),
            "waves": self.waves,
            "wave_gap_secs": self.wave_gap.as_secs_f64(),
            "pause_secs": self.pause.as_secs_f64(),
            "grace_secs": self.grace.as_secs_f64(),
            "offer_timeout_secs": self.offer_timeout.as_secs_f64(),
            "http_conns": self.http_conns,
            "connect_concurrency": self.connect_concurrency,
            "source_addrs": self.source_addrs,
            "nodes": self.nodes,
            "store": if self.redis { "redis" } else { "memory" },
        })
    }
}

struct Created {
    ids: Vec<(u64, String)>,
    errors: Vec<String>,
    error_count: u64,
    hists: HistSet,
}

/// Creates tasks `next..total`, task `seq` on node `seq % nodes`, as fast as one
/// connection per node allows.
async fn creator(
    addrs: Arc<[SocketAddr]>,
    token: Arc<str>,
    prefix: Arc<str>,
    live: Arc<Live>,
    next: Arc<AtomicU64>,
    total: u64,
) -> Created {
    let mut clients: Vec<HttpClient> = addrs.iter().map(|a| HttpClient::new(*a)).collect();
    let mut out = Created {
        ids: Vec::new(),
        errors: Vec::new(),
        error_count: 0,
        hists: HistSet::default(),
    };
    loop {
        let seq = next.fetch_add(1, Ordering::Relaxed);
        if seq >= total {
            break;
        }
        let n = clients.len().max(1) as u64;
        let Some(c) = clients.get_mut((seq % n) as usize) else {
            break;
        };
        let body = format!(
            r#"{{"channel":"chat","queue":"{QUEUE}","customer":{{"chat_handle":"lt-rc-visitor-{seq}"}},"idempotency_key":"{prefix}{seq}"}}"#
        );
        let t = Instant::now();
        let r = c
            .post_json("/v1/tasks", Some(&token), body.as_bytes())
            .await;
        match created_task_id(r, seq) {
            Ok(id) => {
                out.hists.get(H_CREATE).record(t.elapsed());
                live.created.fetch_add(1, Ordering::Relaxed);
                out.ids.push((seq, id));
            }
            Err(e) => {
                out.error_count += 1;
                note(&mut out.errors, e);
            }
        }
    }
    out
}

async fn progress(live: Arc<Live>, stop: watch::Receiver<bool>, n: usize) {
    scenario::every_second(live.t0, stop, move || {
        format!(
            "ready {}/{n} created {} offered {} held {} dropped {} welcomed {} resumed {} acted {} finished {} failed {}",
            Live::get(&live.ready),
            live.created.load(Ordering::Relaxed),
            Live::get(&live.offered),
            Live::get(&live.held),
            Live::get(&live.dropped),
            Live::get(&live.welcomed),
            Live::get(&live.resumed),
            Live::get(&live.acted),
            Live::get(&live.finished),
            Live::get(&live.failed),
        )
    })
    .await
}

/// Runs the `reconnect` scenario.
pub async fn run_reconnect(opts: ReconnectOpts) -> Result<Report, Failure> {
    opts.check()?;
    let nofile = raise_nofile_limit();
    let mut setup = scenario::setup(4096, opts.offer_timeout);
    setup.reconnect_grace = opts.grace;
    setup.snapshot_every = opts.snapshot_every;
    let redis_bin = opts.redis.then_some(opts.redis_bin.as_path());
    let Launched {
        mut cluster,
        addrs,
        secret,
        desc,
    } = cluster::launch(&opts.target, opts.nodes, redis_bin, setup).await?;
    let result = drive(&opts, &mut cluster, addrs, &secret, desc, nofile).await;
    cluster::land(cluster, result, opts.keep_files).await
}

/// The kernel's TCP counters that explain a reconnect's lost second: connections the
/// listener could not queue, and SYNs sent again (the first retransmission comes after
/// one second). Machine-wide, from /proc/net/netstat.
const TCP_COUNTERS: [&str; 4] = [
    "ListenOverflows",
    "ListenDrops",
    "TCPSynRetrans",
    "SyncookiesSent",
];

/// The [`TCP_COUNTERS`] now, when they can be read.
fn tcp_counters() -> Option<[u64; 4]> {
    let text = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let names: Vec<&str> = lines.next()?.split_whitespace().collect();
    let values: Vec<&str> = lines.next()?.split_whitespace().collect();
    let mut out = [0u64; 4];
    for (slot, want) in out.iter_mut().zip(TCP_COUNTERS) {
        let i = names.iter().position(|n| *n == want)?;
        *slot = values.get(i)?.parse().ok()?;
    }
    Some(out)
}

/// Stops the progress lines.
async fn stop_progress(tx: &watch::Sender<bool>, prog: Option<tokio::task::JoinHandle<()>>) {
    let _ = tx.send(true);
    if let Some(p) = prog {
        let _ = p.await;
    }
}

/// Tells every agent to stop, waits for them, and makes the failure: `why` and the
/// first few agents' errors.
async fn abort(
    phase: &watch::Sender<Phase>,
    handles: Vec<tokio::task::JoinHandle<Out>>,
    why: String,
) -> Failure {
    let _ = phase.send(Phase::Abort);
    let (outs, lost) = scenario::join_all(handles, Duration::from_secs(10)).await;
    let mut errs: Vec<String> = outs.into_iter().filter_map(|o| o.error).take(5).collect();
    errs.extend(lost.into_iter().take(5));
    if errs.is_empty() {
        Failure::new(why)
    } else {
        Failure::new(format!("{why}:\n  {}", errs.join("\n  ")))
    }
}

async fn drive(
    opts: &ReconnectOpts,
    hub: &mut Cluster,
    addrs: Vec<SocketAddr>,
    secret: &str,
    desc: String,
    nofile: Option<u64>,
) -> Result<Report, Failure> {
    let harness_cpu0 = crate::hubproc::self_cpu_secs();
    let n = opts.agents;
    let keys = Keys::new(secret.as_bytes());
    let ttl = Duration::from_secs(3600);
    let nonce = scenario::nonce();
    let integration: Arc<str> =
        cluster::sign(&keys, "lt-integration", Role::Integration, ttl, None).into();
    let live = Arc::new(Live {
        t0: Instant::now(),
        ready: AtomicUsize::new(0),
        offered: AtomicUsize::new(0),
        held: AtomicUsize::new(0),
        dropped: AtomicUsize::new(0),
        welcomed: AtomicUsize::new(0),
        resumed: AtomicUsize::new(0),
        acted: AtomicUsize::new(0),
        finished: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        created: AtomicU64::new(0),
        frames: AtomicU64::new(0),
    });
    let ctx = Arc::new(Ctx {
        addrs: addrs.clone(),
        live: live.clone(),
        gate: Arc::new(Semaphore::new(opts.connect_concurrency.max(1))),
        spread: opts.source_addrs,
        drop: opts.drop,
        pause: opts.pause,
        waves: opts.waves,
        wave_gap: opts.wave_gap,
    });
    let (phase_tx, phase_rx) = watch::channel(Phase::Setup);
    let rss_before_login = hub.node_rss_kib();
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let id = format!("lt-rc-{nonce}-{i}");
        let token = cluster::sign(&keys, &id, Role::Agent, ttl, Some(vec![QUEUE.to_owned()]));
        let spec = Spec {
            idx: i,
            id,
            token,
            busy: opts.busy(i),
        };
        handles.push(tokio::spawn(agent(ctx.clone(), spec, phase_rx.clone())));
    }
    let busy_count = (0..n).filter(|i| opts.busy(*i)).count();
    let failed = || Live::get(&live.failed);

    // Log in.
    let login_started = Instant::now();
    let login_limit = Duration::from_secs(30 + n as u64 / 100);
    let logged =
        cluster::wait_for(login_limit, hub, || Live::get(&live.ready) + failed() >= n).await;
    let ready = Live::get(&live.ready);
    if !matches!(logged, Ok(true)) || ready < n {
        let why = format!(
            "only {ready} of {n} agents went Ready within {} s",
            login_limit.as_secs()
        );
        let f = abort(&phase_tx, handles, why).await;
        return Err(logged.err().unwrap_or(f));
    }
    let login_secs = login_started.elapsed().as_secs_f64();
    let rss_per_conn = rss_before_login
        .zip(hub.node_rss_kib())
        .map(|(before, after)| after.saturating_sub(before) as f64 / n as f64);
    if opts.progress {
        eprintln!(
            "{n} agents Ready in {login_secs:.2} s; creating {n} tasks ({busy_count} to be accepted before the drop)"
        );
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let prog = opts
        .progress
        .then(|| tokio::spawn(progress(live.clone(), stop_rx, n)));

    // One task per agent.
    let addrs_arc: Arc<[SocketAddr]> = addrs.clone().into();
    let prefix: Arc<str> = format!("lt-rc-{nonce}-").into();
    let next = Arc::new(AtomicU64::new(0));
    let create_started = Instant::now();
    let creators: Vec<_> = (0..opts.http_conns.max(1))
        .map(|_| {
            tokio::spawn(creator(
                addrs_arc.clone(),
                integration.clone(),
                prefix.clone(),
                live.clone(),
                next.clone(),
                n as u64,
            ))
        })
        .collect();
    let mut created: Vec<(u64, String)> = Vec::with_capacity(n);
    let mut create_errors = Vec::new();
    let mut create_error_count = 0u64;
    let mut hists = HistSet::default();
    for c in creators {
        match c.await {
            Ok(c) => {
                created.extend(c.ids);
                create_errors.extend(c.errors);
                create_error_count += c.error_count;
                hists.merge(&c.hists);
            }
            Err(e) => {
                create_error_count += 1;
                create_errors.push(format!("a creator failed: {e}"));
            }
        }
    }
    created.sort_by_key(|(s, _)| *s);
    let create_secs = create_started.elapsed().as_secs_f64();
    if create_error_count > 0 {
        stop_progress(&stop_tx, prog).await;
        let why = format!(
            "{create_error_count} of {n} creates failed: {}",
            create_errors.join("; ")
        );
        return Err(abort(&phase_tx, handles, why).await);
    }
    let offer_limit = Duration::from_secs(20 + n as u64 / 200);
    let offered = cluster::wait_for(offer_limit, hub, || {
        Live::get(&live.offered) + failed() >= n
    })
    .await;
    if !matches!(offered, Ok(true)) || failed() > 0 {
        stop_progress(&stop_tx, prog).await;
        let why = format!(
            "only {} of {n} agents got an offer within {} s",
            Live::get(&live.offered),
            offer_limit.as_secs()
        );
        let f = abort(&phase_tx, handles, why).await;
        return Err(offered.err().unwrap_or(f));
    }

    // Accept (Busy agents), note what is held.
    let _ = phase_tx.send(Phase::Hold);
    let held = cluster::wait_for(Duration::from_secs(30), hub, || {
        Live::get(&live.held) + failed() >= n
    })
    .await;
    if !matches!(held, Ok(true)) || failed() > 0 {
        stop_progress(&stop_tx, prog).await;
        let why = format!(
            "only {} of {n} agents accepted or held their offer before the drop",
            Live::get(&live.held)
        );
        let f = abort(&phase_tx, handles, why).await;
        return Err(held.err().unwrap_or(f));
    }

    // The drop, and the reconnects.
    if opts.progress {
        eprintln!(
            "dropping {n} sockets ({}, {} wave(s) {} ms apart), reconnecting each after {} ms",
            opts.drop.as_str(),
            opts.waves,
            opts.wave_gap.as_millis(),
            opts.pause.as_millis()
        );
    }
    let cpu0 = (
        hub.node_cpu(),
        hub.redis_cpu(),
        crate::hubproc::self_cpu_secs(),
    );
    let tcp0 = tcp_counters();
    let drop_at = tokio::time::Instant::now() + Duration::from_millis(20);
    let drop_started = Instant::now() + Duration::from_millis(20);
    let _ = phase_tx.send(Phase::Drop(drop_at));
    let reconnect_limit = opts.spread() + Duration::from_secs(30 + n as u64 / 100);
    let reconnected = cluster::wait_for(reconnect_limit, hub, || {
        Live::get(&live.acted) + failed() >= n
    })
    .await;
    let window_secs = drop_started.elapsed().as_secs_f64();
    let node_cpu: Vec<Option<f64>> = hub
        .node_cpu()
        .into_iter()
        .zip(&cpu0.0)
        .map(|(now, before)| Some(now? - (*before)?))
        .collect();
    let hub_cpu = if node_cpu.is_empty() || node_cpu.iter().any(Option::is_none) {
        None
    } else {
        Some(node_cpu.iter().flatten().sum::<f64>())
    };
    let redis_cpu = hub.redis_cpu().zip(cpu0.1).map(|(a, b)| a - b);
    let harness_window_cpu = crate::hubproc::self_cpu_secs() - cpu0.2;
    let tcp = tcp0
        .zip(tcp_counters())
        .map(|(a, b)| std::array::from_fn::<u64, 4, _>(|i| b[i].saturating_sub(a[i])));
    if let Err(f) = reconnected {
        stop_progress(&stop_tx, prog).await;
        let _ = phase_tx.send(Phase::Abort);
        let _ = scenario::join_all(handles, Duration::from_secs(5)).await;
        return Err(f);
    }

    // Finish, look every task up, close.
    let _ = phase_tx.send(Phase::Finish);
    let finished = cluster::wait_for(Duration::from_secs(30), hub, || {
        Live::get(&live.finished) + failed() >= n
    })
    .await;
    let lookups = cluster::look_up_all(addrs_arc.clone(), integration.clone(), &created, 8).await;
    let _ = phase_tx.send(Phase::Close);
    let (outs, lost) = scenario::join_all(handles, Duration::from_secs(20)).await;
    stop_progress(&stop_tx, prog).await;
    let finished = finished?;
    let harness_cpu = crate::hubproc::self_cpu_secs() - harness_cpu0;

    // Figures.
    for o in &outs {
        hists.merge(&o.hists);
    }
    let welcomed = outs.iter().filter(|o| o.after.is_some()).count();
    let resumed = outs
        .iter()
        .filter(|o| matches!(o.after, Some((true, _, _))))
        .count();
    let max_away_ms = outs.iter().filter_map(|o| o.away_us).max().unwrap_or(0) as f64 / 1000.0;
    let min_timeout_ms = outs
        .iter()
        .filter_map(|o| o.offer.as_ref().map(|x| x.3))
        .min();
    let frames = live.frames.load(Ordering::Relaxed);
    let completes: usize = outs.iter().map(|o| o.completed.len()).sum();
    let accepted_after = outs.iter().filter(|o| o.accepted_after).count();

    let mut r = Report::new("reconnect", opts.params(), desc);
    r.elapsed_secs = window_secs;
    r.figure("agents", n as f64, "");
    r.figure(
        "  holding an offer at the drop (Reserved)",
        (n - busy_count) as f64,
        "",
    );
    r.figure("  holding a task at the drop (Busy)", busy_count as f64, "");
    r.figure("hub nodes", addrs.len() as f64, "");
    r.figure("agents Ready in", login_secs, "s");
    r.figure("tasks created", created.len() as f64, "");
    r.figure("creation window", create_secs, "s");
    r.figure("sockets dropped", Live::get(&live.dropped) as f64, "");
    r.figure("reconnects welcomed", welcomed as f64, "");
    r.figure("welcomes with resumed: true", resumed as f64, "");
    r.figure("accepts after resume answered", accepted_after as f64, "");
    r.figure("completes answered", completes as f64, "");
    r.figure("first drop to last agent acted", window_secs, "s");
    r.figure("longest drop -> resumed", max_away_ms, "ms");
    if let Some(cpu) = hub_cpu {
        r.figure("hub CPU, drop to last agent acted", cpu, "s");
        r.figure(
            "hub CPU per reconnect (resume, accept/complete)",
            1e6 * cpu / welcomed.max(1) as f64,
            "µs",
        );
    }
    if let Some(cpu) = redis_cpu {
        r.figure("redis CPU, drop to last agent acted", cpu, "s");
    }
    r.figure(
        "harness CPU, drop to last agent acted",
        harness_window_cpu,
        "s",
    );
    r.latencies = hists.summaries(&[H_RESUME, H_ACCEPT, H_COMPLETE, H_AWAY, H_LOGIN, H_CREATE]);
    r.counts = Counts {
        created: created.len() as u64,
        offers: outs.iter().filter(|o| o.offer.is_some()).count() as u64,
        accepted: (busy_count + accepted_after) as u64,
        completed: completes as u64,
        frames_in: frames,
        ..Counts::default()
    };

    // Checks.
    let setup: Vec<String> = outs.iter().flat_map(|o| o.setup_breaches.clone()).collect();
    r.checks.push(Check::from_breaches(
        "before the drop each agent held what it was given (Reserved with its offer, or Busy with its task)",
        format!("{n} agents Ready in {login_secs:.2} s, {n} offers, {busy_count} accepted"),
        &setup,
    ));
    let mut holders: HashMap<&str, Vec<&str>> = HashMap::new();
    for o in &outs {
        if let Some(b) = &o.before {
            let tasks = b
                .offer
                .iter()
                .map(|(_, t, _)| t.as_str())
                .chain(b.in_progress.iter().map(String::as_str));
            for t in tasks {
                holders.entry(t).or_default().push(o.id.as_str());
            }
        }
    }
    let mut one_holder = Vec::new();
    for (_, t) in &created {
        match holders.get(t.as_str()).map(Vec::as_slice) {
            Some([_]) => {}
            Some(many) => {
                one_holder.push(format!("task {t} held by {} agents: {many:?}", many.len()))
            }
            None => one_holder.push(format!("task {t} held by no agent")),
        }
    }
    r.checks.push(Check::from_breaches(
        "before the drop every task was held by exactly one agent",
        format!("{} tasks", created.len()),
        &one_holder,
    ));
    let mut conn: Vec<String> = outs.iter().filter_map(|o| o.error.clone()).collect();
    conn.extend(lost);
    if !matches!(reconnected, Ok(true)) {
        conn.push(format!(
            "only {} of {n} agents reconnected and acted within {:.0} s",
            Live::get(&live.acted),
            reconnect_limit.as_secs_f64()
        ));
    }
    r.checks.push(Check::from_breaches(
        "every dropped agent reconnected, got its welcome and stayed connected",
        format!(
            "{welcomed} of {n} welcomed after a {} drop, {} wave(s), {} ms pause",
            opts.drop.as_str(),
            opts.waves,
            opts.pause.as_millis()
        ),
        &conn,
    ));
    let not_resumed: Vec<String> = outs
        .iter()
        .filter_map(|o| match &o.after {
            Some((false, h, _)) => Some(format!(
                "{} ({}): welcome resumed: false, {} (node {} -> node {})",
                o.id,
                if o.busy { "Busy" } else { "Reserved" },
                h.describe(),
                o.nodes.0 + 1,
                o.nodes.1 + 1
            )),
            _ => None,
        })
        .collect();
    r.checks.push(Check::from_breaches(
        "every reconnect resumed (welcome resumed: true)",
        format!("{resumed} of {welcomed} welcomes"),
        &not_resumed,
    ));
    let mut same = Vec::new();
    for o in &outs {
        if let (Some(b), Some((_, a, connected))) = (&o.before, &o.after) {
            if a != b {
                same.push(format!(
                    "{}: before the drop {}; welcome {}",
                    o.id,
                    b.describe(),
                    a.describe()
                ));
            } else if !connected {
                same.push(format!("{}: welcome says connected: false", o.id));
            }
        }
    }
    r.checks.push(Check::from_breaches(
        "every welcome carried the same status and the same offer (offer id, task id, deadline) or In Progress task as before the drop",
        format!("{welcomed} welcomes compared with get_state just before the drop"),
        &same,
    ));
    match &opts.target {
        Target::Spawn { .. } => {
            let late: Vec<String> = outs
                .iter()
                .filter_map(|o| {
                    let us = o.away_us?;
                    (us >= opts.grace.as_micros() as u64).then(|| {
                        format!(
                            "{}: welcomed {:.0} ms after its drop, past the {:.1} s grace",
                            o.id,
                            us as f64 / 1000.0,
                            opts.grace.as_secs_f64()
                        )
                    })
                })
                .collect();
            r.checks.push(Check::from_breaches(
                "every reconnect came within the grace period (drop -> welcome)",
                format!(
                    "longest {max_away_ms:.0} ms of {:.1} s",
                    opts.grace.as_secs_f64()
                ),
                &late,
            ));
        }
        Target::External { .. } => r.notes.push(
            "against a running hub its reconnect grace period is unknown here: make sure the pause and the waves fit well inside it".into(),
        ),
    }
    let acts: Vec<String> = outs.iter().flat_map(|o| o.act_breaches.clone()).collect();
    r.checks.push(Check::from_breaches(
        "every resumed agent could act at once: accept of its offer and complete of its task answered",
        format!(
            "{accepted_after} accepts after resume, {completes} completes"
        ),
        &acts,
    ));
    let strays: Vec<String> = outs.iter().flat_map(|o| o.strays.clone()).collect();
    r.checks.push(Check::from_breaches(
        "no task offered again, withdrawn, cancelled or given to another agent (no offer, offer_ended or task_cancelled after each agent's one offer)",
        format!("{frames} frames on {n} agents' sockets"),
        &strays,
    ));
    if opts.drop == DropMode::Stale {
        let bad: Vec<String> = outs
            .iter()
            .filter_map(|o| match &o.replaced {
                Some(Ok(r)) if r == "replaced" => None,
                Some(Ok(r)) => Some(format!("{}: old socket got goodbye {r:?}", o.id)),
                Some(Err(e)) => Some(format!("{}: old socket: {e}", o.id)),
                None if o.after.is_some() => Some(format!("{}: old socket not read", o.id)),
                None => None,
            })
            .collect();
        r.checks.push(Check::from_breaches(
            "every taken-over socket got goodbye replaced",
            format!("{welcomed} takeovers"),
            &bad,
        ));
    }
    let unsettled: Vec<String> = outs
        .iter()
        .filter_map(|o| match &o.settled {
            Some(Ok(())) => None,
            Some(Err(e)) => Some(e.clone()),
            None => Some(format!("{}: did not finish", o.id)),
        })
        .collect();
    let settled = unsettled.is_empty() && finished;
    r.checks.push(Check::from_breaches(
        "every agent completed its work and went Not Ready with nothing held at the end",
        format!("{n} agents"),
        &unsettled,
    ));
    let outcomes: Vec<AgentOutcome> = outs
        .iter()
        .map(|o| AgentOutcome {
            idx: o.idx as u32,
            id: o.id.clone(),
            completed: o
                .completed
                .iter()
                .map(|t| CompleteRec {
                    task_id: t.clone(),
                    agent: o.idx as u32,
                })
                .collect(),
            ..AgentOutcome::default()
        })
        .collect();
    let (accounting, mut acc) = checks::account(&created, &lookups, &outcomes, settled);
    for o in &outs {
        let Some(b) = &o.before else { continue };
        for t in b.offer.iter().map(|(_, t, _)| t).chain(&b.in_progress) {
            match lookups.get(t) {
                Some(Lookup::Found { state, agent_id }) if state != "completed" => {
                    acc.push(format!(
                        "task {t}: held by {} before the drop, {state} (agent {agent_id:?}) at the end",
                        o.id
                    ))
                }
                Some(Lookup::Found {
                    agent_id: Some(who),
                    ..
                }) if who != &o.id => acc.push(format!(
                    "task {t}: held by {} before the drop, completed by {who}",
                    o.id
                )),
                _ => {}
            }
        }
    }
    r.checks.push(Check::from_breaches(
        "every created task accounted for: completed, by the agent that held it before the drop",
        format!(
            "GET /v1/tasks/{{id}} for {} tasks: completed {}, cancelled {}, queued {}, offered {}, assigned {}, missing {}",
            accounting.looked_up,
            accounting.completed,
            accounting.cancelled,
            accounting.queued,
            accounting.offered,
            accounting.assigned,
            accounting.missing
        ),
        &acc,
    ));
    r.accounting = accounting;
    let unexpected: Vec<String> = outs.iter().flat_map(|o| o.unexpected.clone()).collect();
    r.checks.push(Check::from_breaches(
        "no unexpected frames",
        format!("{frames} frames"),
        &unexpected,
    ));

    if let Some(ms) = min_timeout_ms {
        if Duration::from_millis(ms) < Duration::from_secs(10) + opts.spread() * 2 {
            r.notes.push(format!(
                "the offers' timeout ({ms} ms) is short for this run: an offer may expire while its agent is away"
            ));
        }
    }
    r.notes.push(format!(
        "reconnect -> resumed runs from the start of the TCP connect to the welcome read (upgrade and the hub's resume included); drop -> resumed adds the {} ms pause; the accept and complete are sent right after the welcome",
        opts.pause.as_millis()
    ));
    if let Some(d) = tcp {
        let listed: Vec<String> = TCP_COUNTERS
            .iter()
            .zip(d)
            .map(|(n, v)| format!("{n} {v}"))
            .collect();
        r.notes.push(format!(
            "kernel TCP counters from the drop to the last agent acted (machine-wide): {}{}",
            listed.join(", "),
            if d[0] + d[1] + d[2] > 0 {
                "; a dropped SYN or handshake is retried after about 1 s, which shows as a reconnect -> resumed near 1 s"
            } else {
                ""
            }
        ));
    }
    if addrs.len() > 1 {
        r.notes.push(format!(
            "agent i logged in to node i % {0} and reconnected to node (i + 1) % {0}",
            addrs.len()
        ));
    }
    if node_cpu.len() > 1 {
        r.notes.push(format!(
            "hub CPU by node, drop to last agent acted: {}",
            hub.per_node(&node_cpu)
        ));
    }
    r.notes.push(format!(
        "the harness and the hub share this machine's {} CPUs (harness used {harness_cpu:.2} CPU s in all)",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    ));
    if let Some(l) = nofile {
        r.notes.push(format!(
            "open-file limit {l}; sockets spread over {} source addresses",
            opts.source_addrs
        ));
    }
    // What the echo floor is set against: the agents' frames from the drop to having
    // acted (the window of the hub CPU figure, all nodes), as [`steps`] counts them.
    r.floor_basis = hub_cpu.map(|cpu| {
        let (frames_all, read, bytes) = outs.iter().fold((0u64, 0u64, 0u64), |(f, rd, b), o| {
            (f + o.window_frames, rd + o.window_read, b + o.window_bytes)
        });
        crate::floor::Basis {
            conns: n,
            frames: frames_all,
            window_secs,
            hub_cpu_secs: cpu,
            frame_bytes: (bytes / read.max(1)) as usize,
            rss_per_conn_kib: rss_per_conn,
            latency: crate::floor::Basis::latency_of(&r, H_RESUME),
            // A resume is a connection's setup (connect, upgrade, token, welcome):
            // set against the echo's connect -> open, all connections at once.
            vs_connect: true,
        }
    });
    r.harness_cpu_secs = harness_cpu;
    r.hub_cpu_load_secs = hub_cpu;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_agents_are_spread_evenly() {
        let mut o = ReconnectOpts::new(Target::External {
            addr: SocketAddr::from(([127, 0, 0, 1], 1)),
            secret: "s".into(),
        });
        o.busy_share = 0.5;
        let busy: Vec<bool> = (0..6).map(|i| o.busy(i)).collect();
        assert_eq!(busy, [false, true, false, true, false, true]);
        o.busy_share = 0.0;
        assert!((0..100).all(|i| !o.busy(i)));
        o.busy_share = 1.0;
        assert!((0..100).all(|i| o.busy(i)));
        o.busy_share = 0.25;
        assert_eq!((0..1000).filter(|i| o.busy(*i)).count(), 250);
    }
}
