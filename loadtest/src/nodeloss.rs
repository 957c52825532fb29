//! `loadtest nodeloss`: the node-loss figure of issue 12. Several nodes share a Redis;
//! agent `i` logs in to node `i % nodes`. Node 1's agents go Ready and are offered one
//! task each (a long offer timeout, so no deadline moves them); then the other nodes'
//! agents go Ready with nothing to do, node 1 is killed with SIGKILL, and the run
//! measures, per task, the kill -> the `offer` frame reaching a live agent. The hub
//! withdraws a lost node's offers once its heartbeat key expires and routes them on at
//! once (protocol/README.md, "The re-offer rule"), so the target is that detection
//! time plus one second. Checks: every task reached exactly one live agent, as its
//! second offer, and none was offered to a live agent before the kill.

use crate::client::{self, Ws};
use crate::cluster::{self, Launched, Target};
use crate::httpc::{HttpClient, created_task_id};
use crate::report::Check;
use crate::scenario::{self, QUEUE};
use crate::stats::Hist;
use crate::wire::Frame;
use crate::{Failure, Report};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchboard::auth::{Keys, Role};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

/// The hub's node-loss detection time: a node's heartbeat key lives this long after
/// its last beat (ARCHITECTURE.md, "Losing a node").
pub const DETECTION: Duration = Duration::from_secs(3);

/// What `nodeloss` does.
#[derive(Clone, Debug)]
pub struct NodeLossOpts {
    /// Started hubs only (the run kills one).
    pub target: Target,
    /// Agents in all; those on node 1 each hold one offer at the kill.
    pub agents: usize,
    /// Hub nodes (at least 2).
    pub nodes: usize,
    /// The `redis-server` binary.
    pub redis_bin: PathBuf,
    /// `routing.offer_timeout_secs`: long, so that no offer expires during the run.
    pub offer_timeout: Duration,
    /// How long after the kill to wait for the re-offers before giving up.
    pub limit: Duration,
    /// After the last expected re-offer, how long the live agents keep listening for
    /// a second offer of a task (the "exactly one" check).
    pub settle: Duration,
    /// Agents logging in at once.
    pub connect_concurrency: usize,
    /// Loopback source addresses to spread the sockets over.
    pub source_addrs: usize,
    /// Progress lines on stderr.
    pub progress: bool,
    /// Keep the run's files.
    pub keep_files: bool,
}

impl NodeLossOpts {
    /// The defaults: 400 agents on 2 nodes.
    pub fn new(target: Target) -> NodeLossOpts {
        NodeLossOpts {
            target,
            agents: 400,
            nodes: 2,
            redis_bin: PathBuf::from("redis-server"),
            offer_timeout: Duration::from_secs(120),
            limit: Duration::from_secs(30),
            settle: Duration::from_secs(1),
            connect_concurrency: 64,
            source_addrs: 8,
            progress: true,
            keep_files: false,
        }
    }

    fn check(&self) -> Result<(), Failure> {
        if !matches!(self.target, Target::Spawn { .. }) {
            return Err(Failure::new(
                "nodeloss kills a node it started: not with --hub",
            ));
        }
        if self.nodes < 2 || self.nodes > cluster::MAX_NODES {
            return Err(Failure::new(format!(
                "--nodes must be 2 to {}",
                cluster::MAX_NODES
            )));
        }
        if self.agents < self.nodes || self.agents > 20_000 {
            return Err(Failure::new(format!(
                "--agents must be {} to 20000",
                self.nodes
            )));
        }
        if self.offer_timeout <= self.limit {
            return Err(Failure::new(
                "--offer-timeout must be longer than --limit, or expiry could move the offers",
            ));
        }
        Ok(())
    }

    fn params(&self) -> serde_json::Value {
        serde_json::json!({
            "agents": self.agents,
            "nodes": self.nodes,
            "store": "redis",
            "offer_timeout_secs": self.offer_timeout.as_secs_f64(),
            "limit_secs": self.limit.as_secs_f64(),
            "killed": "node-1 (SIGKILL)",
        })
    }

    /// Agents on node 1 (`i % nodes == 0`): one task each.
    fn doomed(&self) -> usize {
        self.agents.div_ceil(self.nodes)
    }
}

/// An offer a live agent saw: the task, how many offers it has had, when it came.
struct Seen {
    task_id: String,
    offers: u32,
    at: Instant,
}

/// What one live agent saw after it went Ready.
struct LiveOut {
    id: String,
    offers: Vec<Seen>,
    error: Option<String>,
}

/// Runs it. `Ok` with the report (checks inside), `Err` when the run could not be
/// carried out.
pub async fn run_nodeloss(opts: NodeLossOpts) -> Result<Report, Failure> {
    opts.check()?;
    cluster::raise_nofile_limit();
    let setup = scenario::setup(4096, opts.offer_timeout);
    let Launched {
        mut cluster,
        addrs,
        secret,
        desc,
    } = cluster::launch(
        &opts.target,
        opts.nodes,
        Some(opts.redis_bin.as_path()),
        setup,
    )
    .await?;
    // The live nodes say so when they declare node 1 lost: the event this run causes.
    cluster
        .expected_warnings
        .push("node stopped heartbeating".into());
    let result = drive(&opts, &mut cluster, addrs, &secret, desc).await;
    cluster::land(cluster, result, opts.keep_files).await
}

fn say(opts: &NodeLossOpts, t0: Instant, what: &str) {
    if opts.progress {
        eprintln!("[{:6.2}s] {what}", t0.elapsed().as_secs_f64());
    }
}

/// Logs agents in (`gate` bounds how many at once) and sets them Ready.
async fn ready_agents(
    who: &[(usize, String, String)],
    addrs: &[SocketAddr],
    gate: &Arc<Semaphore>,
    spread: usize,
) -> Result<Vec<Ws>, Failure> {
    let n = addrs.len();
    let mut hs = Vec::with_capacity(who.len());
    for (i, id, token) in who.iter().cloned() {
        let addr = addrs[i % n];
        let gate = gate.clone();
        hs.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.map_err(|e| e.to_string())?;
            let src = client::source_addr(i, spread);
            client::agent_ready(addr, &token, src)
                .await
                .map_err(|e| format!("{id}: {e}"))
        }));
    }
    let mut out = Vec::with_capacity(hs.len());
    for h in hs {
        match h.await {
            Ok(Ok(ws)) => out.push(ws),
            Ok(Err(e)) => return Err(Failure::new(format!("an agent could not go Ready: {e}"))),
            Err(e) => return Err(Failure::new(format!("an agent's task failed: {e}"))),
        }
    }
    Ok(out)
}

/// Reads frames until an `offer` comes (or `limit` passes); returns it.
async fn first_offer(ws: &mut Ws, limit: Duration) -> Result<(String, String), String> {
    let end = tokio::time::Instant::now() + limit;
    loop {
        let left = end.saturating_duration_since(tokio::time::Instant::now());
        let text = client::next_text(ws, left).await?;
        let f: Frame =
            serde_json::from_str(&text).map_err(|e| format!("unreadable frame ({e}): {text}"))?;
        if let Some(o) = f.offer.filter(|_| f.ty == "offer") {
            return Ok((o.offer_id, o.task.task_id));
        }
    }
}

/// A live agent after it went Ready: notes every offer until `stop`.
async fn listen(
    id: String,
    mut ws: Ws,
    mut stop: watch::Receiver<bool>,
    got: mpsc::UnboundedSender<()>,
) -> LiveOut {
    let mut out = LiveOut {
        id,
        offers: Vec::new(),
        error: None,
    };
    loop {
        if *stop.borrow_and_update() {
            break;
        }
        tokio::select! {
            biased;
            r = stop.changed() => if r.is_err() { break },
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    let at = Instant::now();
                    match serde_json::from_str::<Frame>(t.as_str()) {
                        Ok(f) if f.ty == "offer" => {
                            if let Some(o) = f.offer {
                                out.offers.push(Seen { task_id: o.task.task_id, offers: o.task.offers, at });
                                let _ = got.send(());
                            }
                        }
                        Ok(_) => {}
                        Err(e) => {
                            out.error = Some(format!("unreadable frame ({e})"));
                            break;
                        }
                    }
                }
                Some(Ok(Message::Close(c))) => {
                    out.error = Some(format!("closed by the hub: {c:?}"));
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    out.error = Some(format!("websocket error: {e}"));
                    break;
                }
                None => {
                    out.error = Some("connection closed".into());
                    break;
                }
            },
        }
    }
    client::close(&mut ws).await;
    out
}

async fn drive(
    opts: &NodeLossOpts,
    cluster: &mut cluster::Cluster,
    addrs: Vec<SocketAddr>,
    secret: &str,
    desc: String,
) -> Result<Report, Failure> {
    let t0 = Instant::now();
    let keys = Keys::new(secret.as_bytes());
    let ttl = Duration::from_secs(3600);
    let nonce = scenario::nonce();
    let integration = cluster::sign(&keys, "lt-integration", Role::Integration, ttl, None);
    let gate = Arc::new(Semaphore::new(opts.connect_concurrency.max(1)));
    let n = addrs.len();
    let (mut doomed, mut living) = (Vec::new(), Vec::new());
    for i in 0..opts.agents {
        let id = format!("lt-nl-{nonce}-{i}");
        let token = cluster::sign(&keys, &id, Role::Agent, ttl, Some(vec![QUEUE.to_owned()]));
        if i % n == 0 {
            doomed.push((i, id, token));
        } else {
            living.push((i, id, token));
        }
    }

    // Node 1's agents Ready, alone: every task goes to one of them.
    let mut doomed_ws = ready_agents(&doomed, &addrs, &gate, opts.source_addrs).await?;
    say(
        opts,
        t0,
        &format!("{} agents Ready on node-1", doomed_ws.len()),
    );
    let tasks = opts.doomed();
    // Created through node 2, which outlives the run; one connection suffices for a
    // few hundred creates.
    let mut http = HttpClient::new(addrs[1]);
    let mut created: Vec<String> = Vec::with_capacity(tasks);
    for seq in 0..tasks {
        let body = format!(
            r#"{{"channel":"chat","queue":"{QUEUE}","customer":{{"chat_handle":"lt-nl-visitor-{seq}"}},"idempotency_key":"lt-nl-{nonce}-t{seq}"}}"#
        );
        let r = http
            .post_json("/v1/tasks", Some(&integration), body.as_bytes())
            .await;
        created.push(created_task_id(r, seq as u64).map_err(Failure::new)?);
    }
    say(opts, t0, &format!("{tasks} tasks created"));
    // Each node-1 agent holds one offer before anything else happens.
    let mut holders: HashMap<String, usize> = HashMap::new();
    let mut setup_breaches = Vec::new();
    let offers = futures_util::future::join_all(
        doomed_ws
            .iter_mut()
            .map(|ws| first_offer(ws, Duration::from_secs(30))),
    )
    .await;
    for (k, o) in offers.into_iter().enumerate() {
        match o {
            Ok((_, task)) => *holders.entry(task).or_default() += 1,
            Err(e) => {
                setup_breaches.push(format!("{}: no offer before the kill: {e}", doomed[k].1))
            }
        }
    }
    for t in &created {
        match holders.get(t) {
            Some(1) => {}
            Some(c) => setup_breaches.push(format!("task {t} offered to {c} node-1 agents")),
            None => setup_breaches.push(format!("task {t} offered to no node-1 agent")),
        }
    }
    cluster.check_alive()?;
    say(opts, t0, "every node-1 agent holds an offer");

    // The other nodes' agents Ready, with nothing queued.
    let living_ws = ready_agents(&living, &addrs, &gate, opts.source_addrs).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (got, mut seen) = mpsc::unbounded_channel();
    let listeners: Vec<_> = living
        .iter()
        .zip(living_ws)
        .map(|((_, id, _), ws)| tokio::spawn(listen(id.clone(), ws, stop_rx.clone(), got.clone())))
        .collect();
    say(
        opts,
        t0,
        &format!("{} agents Ready on the other nodes", listeners.len()),
    );

    // kill -9 node 1.
    let node1 = cluster.nodes.remove(0);
    cluster.node_ids.remove(0);
    let Some(pid) = node1.pid() else {
        return Err(Failure::new("node-1 exited before the kill"));
    };
    // SAFETY: kill(2) with a pid this process started and has not reaped yet.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
    let killed = Instant::now();
    say(opts, t0, "node-1 killed (SIGKILL)");
    drop(doomed_ws);
    // Reaped at once: SIGKILL cannot be caught, so this does not delay the measure.
    let node1_status = node1.wait_exit(Duration::from_secs(5)).await;
    drop(got);

    // Wait for every re-offer (the listeners count them), then listen a little longer
    // for a task offered twice.
    let deadline = tokio::time::Instant::from_std(killed + opts.limit);
    let mut count = 0;
    while count < tasks {
        match tokio::time::timeout_at(deadline, seen.recv()).await {
            Ok(Some(())) => count += 1,
            Ok(None) | Err(_) => break,
        }
    }
    let waited = killed.elapsed();
    // The settle window is what the "exactly one" check covers after the last re-offer.
    tokio::time::sleep(opts.settle).await;
    let _ = stop_tx.send(true);
    let mut outs = Vec::with_capacity(listeners.len());
    for h in listeners {
        match h.await {
            Ok(o) => outs.push(o),
            Err(e) => return Err(Failure::new(format!("a live agent's task failed: {e}"))),
        }
    }
    cluster.check_alive()?;
    say(
        opts,
        t0,
        &format!(
            "re-offers seen {:.2} s after the kill",
            waited.as_secs_f64()
        ),
    );

    // Per task: who was offered it, when.
    let mut by_task: HashMap<&str, Vec<(&str, &Seen)>> = HashMap::new();
    let mut early = Vec::new();
    let mut errors = Vec::new();
    let mut twice = Vec::new();
    for o in &outs {
        if let Some(e) = &o.error {
            errors.push(format!("{}: {e}", o.id));
        }
        if o.offers.len() > 1 {
            twice.push(format!("{} was offered {} tasks", o.id, o.offers.len()));
        }
        for s in &o.offers {
            if s.at < killed {
                early.push(format!(
                    "{} was offered {} before the kill",
                    o.id, s.task_id
                ));
            }
            by_task
                .entry(s.task_id.as_str())
                .or_default()
                .push((&o.id, s));
        }
    }
    let mut hist = Hist::new();
    let mut once = Vec::new();
    let mut second = Vec::new();
    for t in &created {
        match by_task.get(t.as_str()).map(Vec::as_slice) {
            Some([(_, s)]) => {
                hist.record(s.at.saturating_duration_since(killed));
                if s.offers != 2 {
                    second.push(format!("task {t} came with offers = {}, not 2", s.offers));
                }
            }
            Some(many) => once.push(format!(
                "task {t} reached {} live agents: {}",
                many.len(),
                many.iter().map(|(a, _)| *a).collect::<Vec<_>>().join(", ")
            )),
            None => once.push(format!(
                "task {t} reached no live agent within {} s",
                opts.limit.as_secs_f64()
            )),
        }
    }
    let foreign: Vec<String> = by_task
        .keys()
        .filter(|k| !created.iter().any(|c| c == *k))
        .map(|k| format!("task {k} is not one of the run's"))
        .collect();
    once.extend(foreign);

    let mut r = Report::new("nodeloss", opts.params(), desc);
    let s = hist.summary("node-1 kill -> offer on a live agent");
    let target = DETECTION + Duration::from_secs(1);
    r.figure("tasks held by node-1's agents", tasks as f64, "");
    r.figure("re-offered to a live agent", hist.count() as f64, "");
    r.figure("kill -> re-offer p50", s.p50_us as f64 / 1000.0, "ms");
    r.figure("kill -> re-offer p90", s.p90_us as f64 / 1000.0, "ms");
    r.figure("kill -> re-offer p99", s.p99_us as f64 / 1000.0, "ms");
    r.figure("kill -> re-offer max", s.max_us as f64 / 1000.0, "ms");
    r.figure(
        "target (detection 3 s + 1 s)",
        target.as_secs_f64() * 1000.0,
        "ms",
    );
    let met = hist.count() > 0 && Duration::from_micros(s.p99_us) <= target;
    r.notes.push(format!(
        "p99 {:.0} ms against the target {:.0} ms (detection {} s + 1 s): {}",
        s.p99_us as f64 / 1000.0,
        target.as_secs_f64() * 1000.0,
        DETECTION.as_secs(),
        if met { "met" } else { "NOT met" }
    ));
    r.notes.push(format!(
        "node-1 after the kill: {}",
        node1_status.map_or("did not exit within 5 s".into(), |s| s.to_string())
    ));
    r.latencies.push(s);
    r.counts.created = created.len() as u64;
    r.counts.offers = (tasks + outs.iter().map(|o| o.offers.len()).sum::<usize>()) as u64;
    r.elapsed_secs = t0.elapsed().as_secs_f64();
    r.checks.push(Check::from_breaches(
        "every task held one node-1 agent's offer at the kill",
        format!("{tasks} tasks on {} node-1 agents", doomed.len()),
        &setup_breaches,
    ));
    r.checks.push(Check::from_breaches(
        "every task reached exactly one live agent after the kill; none lost",
        format!("{tasks} tasks, {} live agents", outs.len()),
        &once,
    ));
    r.checks.push(Check::from_breaches(
        "no live agent was offered a task before the kill, nor two",
        format!("{} live agents", outs.len()),
        &[early, twice].concat(),
    ));
    r.checks.push(Check::from_breaches(
        "each re-offer is the task's second offer",
        format!("{} re-offers", hist.count()),
        &second,
    ));
    r.checks.push(Check::from_breaches(
        "the live agents' connections stayed up",
        format!("{} connections", outs.len()),
        &errors,
    ));
    Ok(r)
}
