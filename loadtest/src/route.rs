//! The `route` scenario: agents log in and work offers while an integration creates
//! tasks at a fixed rate; measures create -> offer and the request round trips, and
//! checks the routing invariants on everything seen.
//!
//! A run goes: start (or reach) the hub; log every agent in and set it Ready; create
//! tasks open-loop at the rate for the duration; let the agents drain the queues; ask
//! every agent to finish what it holds and go Not Ready; look every created task up;
//! close; check.

use crate::agent::{
    self, AgentOutcome, AgentPlan, AgentSpec, H_ACCEPT_RTT, H_COMPLETE_RTT, H_CREATE_TO_OFFER,
    H_DECLINE_RTT, Kind, Phase,
};
use crate::checks;
use crate::cluster::{
    Cluster, Launched, MAX_NODES, Target, land, launch, look_up_all, raise_nofile_limit, sign,
    wait_for,
};
use crate::httpc::{HttpClient, created_task_id};
use crate::hubproc::{self, Capacity, HubSetup};
use crate::report::{Check, Counts, Failure, Figure, Report};
use crate::rng::{Delay, Rng};
use crate::shared::{Counters, Shared};
use crate::stats::HistSet;
use crate::supervisor;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use switchboard::auth::{Keys, Role};
use tokio::sync::{Semaphore, watch};

/// The HTTP create round trip.
pub const H_HTTP_CREATE: &str = "POST /v1/tasks";
/// How late a create was written against its schedule.
pub const H_SCHEDULE_LAG: &str = "create schedule lag";

/// The most tasks one run may create.
pub const MAX_TASKS: u64 = 5_000_000;
/// The most agents one run may log in.
pub const MAX_AGENTS: usize = 100_000;
/// The most searchers one run may connect.
pub const MAX_SEARCHERS: usize = 1000;
/// The most customers one run may preload.
pub const MAX_CUSTOMERS: u64 = 10_000_000;
/// The `route` scenario's options.
#[derive(Clone, Debug)]
pub struct RouteOpts {
    /// The hub.
    pub target: Target,
    /// Agents to log in.
    pub agents: usize,
    /// Tasks created per second.
    pub rate: f64,
    /// How long tasks are created for.
    pub duration: Duration,
    /// Queue ids (created in the spawned hub's configuration).
    pub queues: Vec<String>,
    /// How many queues each agent serves.
    pub queues_per_agent: usize,
    /// Share of tasks that are calls.
    pub voice_share: f64,
    /// Share of tasks that are emails (the rest are chats).
    pub email_share: f64,
    /// Delay between an offer and its accept or decline.
    pub accept: Delay,
    /// How long an accepted task is held before it is completed.
    pub handle: Delay,
    /// Share of offers left to expire.
    pub miss_share: f64,
    /// Share of offers declined.
    pub decline_share: f64,
    /// The spawned hub's offer timeout.
    pub offer_timeout: Duration,
    /// The agents' capacity (written to the spawned hub's configuration).
    pub capacity: Capacity,
    /// HTTP connections creating tasks.
    pub http_conns: usize,
    /// Agents logging in at once.
    pub connect_concurrency: usize,
    /// After the last create, the agents work until every task is completed; the
    /// drain gives up when no task completes for this long (`None`: derived from the
    /// offer timeout and the delays), or after [`RouteOpts::drain_cap`].
    pub drain: Option<Duration>,
    /// Seed for every random choice.
    pub seed: u64,
    /// Print a progress line every second on stderr.
    pub progress: bool,
    /// The Not Ready reason the agents use at the end.
    pub not_ready_reason: String,
    /// Keep the spawned hub's files (config, log) even when the run passes.
    pub keep_files: bool,
    /// Agents close each interaction after completing its task (customer context).
    pub close_interactions: bool,
    /// Hub nodes to start (more than one needs `redis`). Agents are spread over them
    /// round-robin (agent `i` on node `i % nodes`), and so are the creates (task `seq`
    /// on node `seq % nodes`) and the final lookups.
    pub nodes: usize,
    /// Start a `redis-server` of the run's own (AOF, fsync always) and give it to
    /// every node as `store.redis`.
    pub redis: bool,
    /// The `redis-server` binary.
    pub redis_bin: PathBuf,
    /// `store.snapshot_every` of the started nodes (with `redis` or `durable`); `None`:
    /// the hub's default.
    pub snapshot_every: Option<u64>,
    /// Without `redis`: the hub runs the file store (data in the run's directory)
    /// instead of the in-memory one.
    pub durable: bool,
    /// Supervisor consoles connected for the whole load (spread over the nodes), each
    /// measuring decision -> its feed ([`crate::supervisor`]).
    pub supervisors: usize,
    /// One `GET /v1/events` reader (on the first node) for the whole run: create ->
    /// `task.offered` as it sees it, and the stream's checks.
    pub stream_reader: bool,
    /// A webhook endpoint of the harness's own (an HTTP receiver on loopback, in the
    /// started hub's config): every event delivered, signed, in order per task and
    /// agent, and create -> `task.offered` at the receiver ([`crate::webhook`]).
    pub webhook_receiver: bool,
    /// The receiver's type patterns (`["*"]`: every type).
    pub webhook_types: Vec<String>,
    /// Customers created over HTTP before the agents log in, for the searchers to find
    /// ([`crate::searchers`]).
    pub customers: u64,
    /// Agent sessions of their own (no queues, never Ready) sending `search_customers`
    /// at the hub's rate limit (or a desktop's rate) for the whole load window.
    pub searchers: usize,
    /// Customers created per second over HTTP during the load window (after the
    /// preloaded ones), by one integration connection; 0: none.
    pub customer_rate: f64,
}

impl RouteOpts {
    /// The defaults of `loadtest route` against `target`.
    pub fn new(target: Target) -> RouteOpts {
        RouteOpts {
            target,
            agents: 200,
            rate: 1000.0,
            duration: Duration::from_secs(10),
            queues: (0..4).map(|i| format!("lt-q{i}")).collect(),
            queues_per_agent: 2,
            voice_share: 0.1,
            email_share: 0.05,
            accept: Delay::ZERO,
            handle: Delay::ZERO,
            miss_share: 0.0,
            decline_share: 0.0,
            offer_timeout: Duration::from_secs(2),
            capacity: Capacity::default(),
            http_conns: 8,
            connect_concurrency: 64,
            drain: None,
            seed: 1,
            progress: false,
            not_ready_reason: "break".into(),
            keep_files: false,
            close_interactions: false,
            nodes: 1,
            redis: false,
            redis_bin: PathBuf::from("redis-server"),
            snapshot_every: None,
            durable: false,
            supervisors: 0,
            stream_reader: false,
            webhook_receiver: false,
            webhook_types: vec!["*".into()],
            customers: 0,
            searchers: 0,
            customer_rate: 0.0,
        }
    }

    /// `loadtest smoke`: about 3 seconds, 300 tasks, 20 agents, with some declines,
    /// misses and hold times so that every path runs.
    pub fn smoke(target: Target) -> RouteOpts {
        RouteOpts {
            agents: 20,
            rate: 100.0,
            duration: Duration::from_secs(3),
            accept: Delay::exp(5.0),
            handle: Delay::exp(20.0),
            miss_share: 0.02,
            decline_share: 0.05,
            offer_timeout: Duration::from_millis(500),
            http_conns: 2,
            ..RouteOpts::new(target)
        }
    }

    /// How many tasks the run creates.
    pub fn total_tasks(&self) -> u64 {
        (self.rate * self.duration.as_secs_f64()).ceil() as u64
    }

    fn check(&self) -> Result<(), Failure> {
        let bad = |m: String| Err(Failure::new(m));
        if self.agents == 0 || self.agents > MAX_AGENTS {
            return bad(format!("--agents must be 1 to {MAX_AGENTS}"));
        }
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return bad("--rate must be more than 0".into());
        }
        if self.duration.is_zero() || self.duration > Duration::from_secs(24 * 3600) {
            return bad("--duration must be more than 0 and at most a day".into());
        }
        let total = self.total_tasks();
        if total == 0 || total > MAX_TASKS {
            return bad(format!(
                "rate x duration must give 1 to {MAX_TASKS} tasks, not {total}"
            ));
        }
        if self.queues.is_empty() {
            return bad("at least one queue is needed".into());
        }
        for (name, v) in [
            ("--voice-share", self.voice_share),
            ("--email-share", self.email_share),
            ("--miss-share", self.miss_share),
            ("--decline-share", self.decline_share),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return bad(format!("{name} must be between 0 and 1"));
            }
        }
        if self.voice_share + self.email_share > 1.0 {
            return bad("--voice-share + --email-share must be at most 1".into());
        }
        if self.miss_share + self.decline_share > 1.0 {
            return bad("--miss-share + --decline-share must be at most 1".into());
        }
        if let Target::External { addr, .. } = &self.target {
            if !addr.ip().is_loopback() {
                return bad(format!(
                    "--hub {addr}: only loopback addresses may be load-tested"
                ));
            }
            if self.nodes > 1 || self.redis {
                return bad("--nodes and --redis start their own hubs: not with --hub".into());
            }
            if self.webhook_receiver {
                return bad(
                    "--webhook-receiver writes the started hub's config: not with --hub".into(),
                );
            }
        }
        if self.webhook_types.is_empty()
            || self.webhook_types.iter().any(|t| {
                t.is_empty()
                    || !t
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._*".contains(&b))
            })
        {
            return bad(format!(
                "--webhook-types {:?}: comma-separated patterns such as task.offered or task.*",
                self.webhook_types
            ));
        }
        if !crate::webhook::every_type(&self.webhook_types) {
            if !self.webhook_receiver {
                return bad("--webhook-types is the --webhook-receiver's: give both".into());
            }
            if !self.stream_reader {
                return bad("--webhook-types other than * needs --stream-reader: the stream names every event's type, so the receiver knows which it must get".into());
            }
        }
        if self.searchers > MAX_SEARCHERS {
            return bad(format!("--searchers must be at most {MAX_SEARCHERS}"));
        }
        if !(0.0..=10_000.0).contains(&self.customer_rate) {
            return bad("--customer-rate must be 0 to 10000 a second".into());
        }
        if self.customers > MAX_CUSTOMERS {
            return bad(format!("--customers must be at most {MAX_CUSTOMERS}"));
        }
        if self.nodes == 0 || self.nodes > MAX_NODES {
            return bad(format!("--nodes must be 1 to {MAX_NODES}"));
        }
        if self.nodes > 1 && !self.redis {
            return bad("several nodes share state through Redis: add --redis".into());
        }
        Ok(())
    }

    /// How long the drain waits for the next completion before it gives up.
    pub fn drain_stall(&self) -> Duration {
        self.drain.unwrap_or_else(|| {
            let slow = Duration::from_secs_f64(
                (4.0 * (self.accept.mean_ms + self.handle.mean_ms) / 1000.0).min(60.0),
            );
            (self.offer_timeout * 2 + slow + Duration::from_secs(2)).min(Duration::from_secs(120))
        })
    }

    /// The longest the drain lasts, progress or not: three times the load plus a minute.
    pub fn drain_cap(&self) -> Duration {
        (self.duration * 3 + Duration::from_secs(60)).max(self.drain_stall())
    }

    fn params(&self) -> serde_json::Value {
        serde_json::json!({
            "agents": self.agents,
            "rate": self.rate,
            "duration_secs": self.duration.as_secs_f64(),
            "tasks": self.total_tasks(),
            "queues": self.queues,
            "queues_per_agent": self.queues_per_agent,
            "voice_share": self.voice_share,
            "email_share": self.email_share,
            "accept": self.accept,
            "handle": self.handle,
            "miss_share": self.miss_share,
            "decline_share": self.decline_share,
            "offer_timeout_secs": self.offer_timeout.as_secs_f64(),
            "capacity": self.capacity,
            "http_conns": self.http_conns,
            "seed": self.seed,
            "close_interactions": self.close_interactions,
            "nodes": self.nodes,
            "store": if self.redis { "redis" } else if self.durable { "file" } else { "memory" },
            "snapshot_every": self.snapshot_every,
            "stream_reader": self.stream_reader,
            "webhook_receiver": self.webhook_receiver,
            "webhook_types": self.webhook_types,
            "customers": self.customers,
            "searchers": self.searchers,
            "customer_rate": self.customer_rate,
        })
    }
}

/// What the task creators produced.
#[derive(Default)]
struct GenOutcome {
    created: Vec<(u64, String)>,
    errors: Vec<String>,
    hists: HistSet,
    first_send_ns: Option<u64>,
    last_send_ns: u64,
}

/// The body of task `seq`'s create, and its channel.
fn task_body(opts: &RouteOpts, shared: &Shared, seq: u64) -> String {
    let mut rng = Rng::derive(opts.seed ^ 0x7A5C, seq);
    let r = rng.unit();
    let channel = if r < opts.voice_share {
        "voice"
    } else if r < opts.voice_share + opts.email_share {
        "email"
    } else {
        "chat"
    };
    let queue = &opts.queues[rng.below(opts.queues.len() as u64) as usize];
    let priority = [0, 0, 0, 0, 5, 5, 10, 50][rng.below(8) as usize];
    let customer = match channel {
        "voice" => format!(r#"{{"phone":"+1555{:07}"}}"#, seq % 10_000_000),
        "email" => format!(r#"{{"email":"lt{seq}@example.com"}}"#),
        _ => format!(r#"{{"chat_handle":"lt-visitor-{seq}"}}"#),
    };
    format!(
        r#"{{"channel":"{channel}","queue":"{queue}","priority":{priority},"customer":{customer},"attributes":{{"source":"loadtest","lt_seq":{seq}}},"idempotency_key":"{}"}}"#,
        shared.key(seq)
    )
}

/// One HTTP connection's share of the open-loop schedule: task `seq` is due at
/// `seq / rate` seconds; each creator takes the next number, waits for its time, sends.
async fn creator(
    addrs: Arc<[SocketAddr]>,
    token: Arc<str>,
    opts: Arc<RouteOpts>,
    shared: Arc<Shared>,
    next: Arc<AtomicU64>,
    start: tokio::time::Instant,
) -> GenOutcome {
    let total = opts.total_tasks();
    // One keep-alive connection per node: task `seq` is created on node `seq % nodes`.
    let mut clients: Vec<HttpClient> = addrs.iter().map(|a| HttpClient::new(*a)).collect();
    let mut out = GenOutcome::default();
    loop {
        let seq = next.fetch_add(1, Ordering::Relaxed);
        if seq >= total {
            break;
        }
        let due = start + Duration::from_secs_f64(seq as f64 / opts.rate);
        tokio::time::sleep_until(due).await;
        let body = task_body(&opts, &shared, seq);
        let now = tokio::time::Instant::now();
        out.hists
            .get(H_SCHEDULE_LAG)
            .record(now.saturating_duration_since(due));
        let sent_ns = shared.now_ns();
        shared.mark_sent(seq, sent_ns);
        out.first_send_ns.get_or_insert(sent_ns);
        out.last_send_ns = sent_ns;
        let node = (seq % clients.len().max(1) as u64) as usize;
        let Some(client) = clients.get_mut(node) else {
            break;
        };
        let r = client
            .post_json("/v1/tasks", Some(&token), body.as_bytes())
            .await;
        let done_ns = shared.now_ns();
        match created_task_id(r, seq) {
            Ok(id) => {
                out.hists
                    .get(H_HTTP_CREATE)
                    .record_ns_span(sent_ns, done_ns);
                Counters::bump(&shared.counters.created);
                out.created.push((seq, id));
            }
            Err(e) => {
                Counters::bump(&shared.counters.create_errors);
                if out.errors.len() < 10 {
                    out.errors.push(e);
                }
            }
        }
    }
    out
}

/// Prints a line a second until told to stop.
async fn progress(shared: Arc<Shared>, stop: watch::Receiver<bool>, total: u64) {
    let (mut last_created, mut last_completed) = (0, 0);
    let t0 = shared.t0;
    crate::scenario::every_second(t0, stop, move || {
        let c = &shared.counters;
        let created = Counters::get(&c.created);
        let completed = Counters::get(&c.completed);
        let line = format!(
            "created {created}/{total} (+{}/s) completed {completed} (+{}/s) offers {} accepted {} declined {} expired {} errors {}",
            created - last_created,
            completed - last_completed,
            Counters::get(&c.offers),
            Counters::get(&c.accepted),
            Counters::get(&c.declined),
            Counters::get(&c.expired),
            Counters::get(&c.create_errors) + Counters::get(&c.unexpected),
        );
        (last_created, last_completed) = (created, completed);
        line
    })
    .await
}

/// Whether a run sustained its target rate for the full cycle, and why (or why not):
/// every create answered 201; the creates kept the open-loop schedule (achieved rate
/// at least 99% of the target: the hub answered fast enough that the harness did not
/// fall behind); completions per second over the whole seconds of the
/// load window at least 95% of the target; and the last complete no later than
/// `1 s + slack` after the last create (no backlog built up).
pub fn sustained(
    rate: f64,
    created: u64,
    total: u64,
    window_secs: f64,
    elapsed_secs: f64,
    steady: Option<f64>,
    slack: Duration,
) -> (bool, String) {
    let achieved = if window_secs > 0.0 {
        created as f64 / window_secs
    } else {
        created as f64
    };
    let tail = (elapsed_secs - window_secs).max(0.0);
    let tail_limit = 1.0 + slack.as_secs_f64();
    let mut why = Vec::new();
    if created < total {
        why.push(format!("only {created} of {total} created"));
    }
    if achieved < 0.99 * rate {
        why.push(format!(
            "creates fell behind the schedule ({achieved:.0}/s of {rate:.0}/s)"
        ));
    }
    match steady {
        Some(s) if s < 0.95 * rate => why.push(format!(
            "completions {s:.0}/s over the load window, under 95% of {rate:.0}/s"
        )),
        _ => {}
    }
    if tail > tail_limit {
        why.push(format!(
            "the last complete came {tail:.2} s after the last create (backlog; limit {tail_limit:.1} s)"
        ));
    }
    let figures = format!(
        "creates {achieved:.0}/s, completions {} over the load window, last complete {tail:.2} s after the last create",
        match steady {
            Some(s) => format!("{s:.0}/s"),
            None => "n/a (window too short)".into(),
        }
    );
    if why.is_empty() {
        (
            true,
            format!("sustained {rate:.0} tasks/s: yes ({figures})"),
        )
    } else {
        (
            false,
            format!(
                "sustained {rate:.0} tasks/s: NO: {} ({figures})",
                why.join("; ")
            ),
        )
    }
}

/// [`sustained`] for a finished `route` report.
pub fn sustained_of(r: &Report) -> (bool, String) {
    let rate = r.params.get("rate").and_then(|v| v.as_f64()).unwrap_or(0.0);
    let total = r
        .params
        .get("tasks")
        .and_then(|v| v.as_u64())
        .unwrap_or(r.counts.created);
    let mean = |k: &str| {
        r.params
            .get(k)
            .and_then(|d| d.get("mean_ms"))
            .and_then(|v| v.as_f64())
            .unwrap_or(0.0)
    };
    let slack = Duration::from_secs_f64(
        ((mean("accept") + mean("handle")) * 4.0 / 1000.0).clamp(0.0, 60.0),
    );
    sustained(
        rate,
        r.counts.created,
        total,
        r.create_window_secs,
        r.elapsed_secs,
        r.throughput_steady,
        slack,
    )
}

/// Runs the `route` scenario. `Ok` when every invariant held; `Err` with the report
/// when one broke, or with a message when the run could not be carried out.
pub async fn run_route(opts: RouteOpts) -> Result<Report, Failure> {
    opts.check()?;
    raise_nofile_limit();
    let total = opts.total_tasks();
    // The receiver listens before the hub starts: the hub's config names it.
    let receiver = if opts.webhook_receiver {
        Some(
            crate::webhook::Receiver::start(opts.webhook_types.clone())
                .await
                .map_err(|e| Failure::new(format!("the webhook receiver cannot listen: {e}")))?,
        )
    } else {
        None
    };
    let setup = HubSetup {
        queues: opts.queues.clone(),
        offer_timeout: opts.offer_timeout,
        capacity: opts.capacity,
        retention: (total as usize).saturating_mul(2).max(100_000),
        send_queue: 4096,
        reconnect_grace: hubproc::RECONNECT_GRACE,
        rust_log: None,
        redis: None,
        snapshot_every: opts.snapshot_every,
        durable: opts.durable,
        webhook: receiver.as_ref().map(|r| r.endpoint().clone()),
    };
    // The searchers send at the hub's per-connection limit, as the config says it.
    let hub_limit = match &opts.target {
        Target::Spawn { .. } => crate::searchers::config_rate(&hubproc::config_toml(&setup, "")),
        Target::External { .. } => None,
    };
    let redis_bin = opts.redis.then_some(opts.redis_bin.as_path());
    let Launched {
        mut cluster,
        addrs,
        secret,
        desc,
    } = launch(&opts.target, opts.nodes, redis_bin, setup).await?;
    let result = drive(
        &opts,
        &mut cluster,
        addrs.into(),
        &secret,
        desc,
        receiver.as_ref(),
        hub_limit,
    )
    .await;
    land(cluster, result, opts.keep_files).await
}

fn agent_queues(opts: &RouteOpts, i: usize) -> Vec<String> {
    let n = opts.queues.len();
    let mut qs: Vec<String> = (0..opts.queues_per_agent.clamp(1, n))
        .map(|k| opts.queues[(i + k) % n].clone())
        .collect();
    qs.dedup();
    qs
}

async fn collect_agents(
    handles: Vec<tokio::task::JoinHandle<AgentOutcome>>,
    limit: Duration,
) -> (Vec<AgentOutcome>, Vec<String>) {
    let end = tokio::time::Instant::now() + limit;
    let mut outs = Vec::with_capacity(handles.len());
    let mut lost = Vec::new();
    for (i, h) in handles.into_iter().enumerate() {
        let abort = h.abort_handle();
        match tokio::time::timeout_at(end, h).await {
            Ok(Ok(o)) => outs.push(o),
            Ok(Err(e)) => lost.push(format!("agent #{i} task failed: {e}")),
            Err(_) => {
                abort.abort();
                lost.push(format!("agent #{i} did not close in time"));
            }
        }
    }
    (outs, lost)
}

async fn drive(
    opts: &RouteOpts,
    hub: &mut Cluster,
    addrs: Arc<[SocketAddr]>,
    secret: &str,
    hub_desc: String,
    receiver: Option<&crate::webhook::Receiver>,
    hub_limit: Option<f64>,
) -> Result<Report, Failure> {
    let total = opts.total_tasks();
    let cpu_at_start = hubproc::self_cpu_secs();
    let keys = Keys::new(secret.as_bytes());
    let ttl = opts.duration + opts.drain_cap() + Duration::from_secs(3600);
    let integration: Arc<str> = sign(&keys, "lt-integration", Role::Integration, ttl, None).into();
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let nonce = format!("{:08x}", Rng::new(opts.seed ^ wall).next_u64() as u32);
    let timeline_secs = (opts.duration + opts.drain_cap()).as_secs() as usize + 30;
    let shared = Arc::new(Shared::new(total as usize, timeline_secs, &nonce));
    if let Some(r) = receiver {
        r.attach(shared.clone());
    }
    let opts_arc = Arc::new(opts.clone());
    let plan = Arc::new(AgentPlan {
        accept: opts.accept,
        handle: opts.handle,
        miss_share: opts.miss_share,
        decline_share: opts.decline_share,
        capacity: opts.capacity,
        not_ready_reason: opts.not_ready_reason.clone(),
        close_interactions: opts.close_interactions,
    });
    let (phase_tx, phase_rx) = watch::channel(Phase::Run);
    let gate = Arc::new(Semaphore::new(opts.connect_concurrency.max(1)));
    // The customer base the searchers search, before anyone logs in.
    let preload_secs = if opts.customers > 0 {
        if opts.progress {
            eprintln!("preloading {} customers", opts.customers);
        }
        let took = crate::searchers::preload(
            addrs.clone(),
            integration.clone(),
            opts.customers,
            opts.http_conns.clamp(8, 64),
            opts.progress,
        )
        .await?;
        Some(took.as_secs_f64())
    } else {
        None
    };
    let rss_before_login = hub.node_rss_kib();
    let mut handles = Vec::with_capacity(opts.agents);
    for i in 0..opts.agents {
        let id = format!("lt-agent-{i}");
        let token = sign(&keys, &id, Role::Agent, ttl, Some(agent_queues(opts, i)));
        // Agent `i` on node `i % nodes`.
        let addr = addrs[i % addrs.len()];
        let spec = AgentSpec {
            idx: i as u32,
            id,
            url: format!("ws://{addr}/v1/ws?access_token={token}"),
            seed: opts.seed,
        };
        handles.push(tokio::spawn(agent::run_agent(
            spec,
            plan.clone(),
            shared.clone(),
            phase_rx.clone(),
            gate.clone(),
        )));
    }
    let c = &shared.counters;
    let n = opts.agents;
    let login_limit = Duration::from_secs(30 + n as u64 / 50);
    let login_started = Instant::now();
    let logged_in = wait_for(login_limit, hub, || {
        c.ready_agents.load(Ordering::Relaxed) + c.failed_agents.load(Ordering::Relaxed) >= n
    })
    .await;
    let ready = c.ready_agents.load(Ordering::Relaxed);
    if !matches!(logged_in, Ok(true)) || ready < n {
        let _ = phase_tx.send(Phase::Close);
        let (outs, lost) = collect_agents(handles, Duration::from_secs(10)).await;
        let mut why: Vec<String> = outs.into_iter().flat_map(|o| o.errors).take(5).collect();
        why.extend(lost.into_iter().take(5));
        return Err(match logged_in {
            Err(f) => f,
            Ok(_) => Failure::new(format!(
                "only {ready} of {n} agents logged in and went Ready within {} s:\n  {}",
                login_limit.as_secs(),
                why.join("\n  ")
            )),
        });
    }
    let login_secs = login_started.elapsed().as_secs_f64();
    let rss_per_agent = rss_before_login
        .zip(hub.node_rss_kib())
        .map(|(before, after)| after.saturating_sub(before) as f64 / n.max(1) as f64);
    if opts.progress {
        eprintln!(
            "{n} agents Ready in {login_secs:.2} s; creating {total} tasks at {}/s for {} s",
            opts.rate,
            opts.duration.as_secs_f64()
        );
    }

    // Supervisor consoles, connected before the load so that their feed covers it.
    let (sup_stop, sup_stop_rx) = watch::channel(false);
    let mut consoles = Vec::with_capacity(opts.supervisors);
    for i in 0..opts.supervisors {
        let token = sign(&keys, &format!("lt-sup-{i}"), Role::Supervisor, ttl, None);
        match supervisor::connect(addrs[i % addrs.len()], &token, i).await {
            Ok(c) => consoles.push(tokio::spawn(supervisor::watch(c, sup_stop_rx.clone()))),
            Err(e) => {
                let _ = phase_tx.send(Phase::Close);
                let _ = collect_agents(handles, Duration::from_secs(10)).await;
                return Err(Failure::new(format!(
                    "supervisor {i} could not connect: {e}"
                )));
            }
        }
    }

    let node_cpu_before = hub.node_cpu();
    let redis_cpu_before = hub.redis_cpu();
    let harness_cpu_before = hubproc::self_cpu_secs();

    // The stream reader, connected before the first create.
    let (reader_stop, reader_stop_rx) = watch::channel(None);
    // With webhook type patterns the reader reads from seq 1 and keeps the seqs of
    // those types: what the endpoint must receive.
    let hook_types = (opts.webhook_receiver && !crate::webhook::every_type(&opts.webhook_types))
        .then(|| opts.webhook_types.clone());
    let reader = opts.stream_reader.then(|| {
        tokio::spawn(crate::events::read(
            addrs[0],
            integration.clone(),
            shared.clone(),
            hook_types.clone(),
            reader_stop_rx,
        ))
    });
    if reader.is_some() {
        // Its request reaches the hub before the creates start.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The searchers, connected before the load and searching until its last create.
    let (search_stop, search_stop_rx) = watch::channel(false);
    let (search_rate, why_rate) = crate::searchers::searcher_rate(hub_limit);
    if opts.searchers > 0 && opts.progress {
        eprintln!(
            "{} searchers at {search_rate}/s each ({why_rate})",
            opts.searchers
        );
    }
    let searchers: Vec<_> = (0..opts.searchers)
        .map(|i| {
            // No queues: never offered a task; never Ready.
            let token = sign(
                &keys,
                &format!("lt-searcher-{i}"),
                Role::Agent,
                ttl,
                Some(Vec::new()),
            );
            tokio::spawn(crate::searchers::run_searcher(
                addrs[i % addrs.len()],
                token,
                search_rate,
                crate::searchers::query,
                opts.customers,
                opts.seed ^ (0x5ea7_c4e5 + i as u64),
                search_stop_rx.clone(),
            ))
        })
        .collect();

    // Customers written while the load runs, until its last create.
    let writer = (opts.customer_rate > 0.0).then(|| {
        tokio::spawn(crate::searchers::run_writer(
            addrs[0],
            integration.clone(),
            opts.customer_rate,
            opts.customers,
            search_stop_rx.clone(),
        ))
    });

    // The load: open loop, `http_conns` creators sharing one schedule.
    let (stop_tx, stop_rx) = watch::channel(false);
    let prog = opts
        .progress
        .then(|| tokio::spawn(progress(shared.clone(), stop_rx, total)));
    let next = Arc::new(AtomicU64::new(0));
    let start = tokio::time::Instant::now() + Duration::from_millis(10);
    let creators: Vec<_> = (0..opts.http_conns.max(1))
        .map(|_| {
            tokio::spawn(creator(
                addrs.clone(),
                integration.clone(),
                opts_arc.clone(),
                shared.clone(),
                next.clone(),
                start,
            ))
        })
        .collect();
    let mut gen_out = GenOutcome::default();
    let mut gen_failures = Vec::new();
    for h in creators {
        match h.await {
            Ok(g) => {
                gen_out.created.extend(g.created);
                gen_out.errors.extend(g.errors);
                gen_out.hists.merge(&g.hists);
                gen_out.first_send_ns = match (gen_out.first_send_ns, g.first_send_ns) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                gen_out.last_send_ns = gen_out.last_send_ns.max(g.last_send_ns);
            }
            Err(e) => gen_failures.push(format!("a creator task failed: {e}")),
        }
    }
    gen_out.created.sort_by_key(|(s, _)| *s);
    let created = gen_out.created.len() as u64;
    let _ = search_stop.send(true);
    let mut search_outs = Vec::with_capacity(searchers.len());
    let mut searchers_lost = 0;
    for h in searchers {
        match h.await {
            Ok(o) => search_outs.push(o),
            Err(_) => searchers_lost += 1,
        }
    }
    let writer_out = match writer {
        Some(h) => h.await.ok(),
        None => None,
    };

    // Drain: let the agents finish what was created, while they make progress.
    let stall = opts.drain_stall();
    let drain_started = Instant::now();
    let (mut last_done, mut last_change) = (Counters::get(&c.completed), Instant::now());
    let drained = wait_for(opts.drain_cap(), hub, || {
        let done = Counters::get(&c.completed);
        if done != last_done {
            (last_done, last_change) = (done, Instant::now());
        }
        done >= created || last_change.elapsed() >= stall
    })
    .await;
    let drain_secs = drain_started.elapsed().as_secs_f64();
    let held_at_drain = Counters::get(&c.held);
    let offered_at_drain = Counters::get(&c.pending_offers);
    let drained = match drained {
        Ok(_) => Counters::get(&c.completed) >= created,
        Err(f) => {
            let _ = stop_tx.send(true);
            let _ = phase_tx.send(Phase::Close);
            let _ = collect_agents(handles, Duration::from_secs(5)).await;
            return Err(f);
        }
    };
    let completed_at_drain = Counters::get(&c.completed);
    let load_secs = shared
        .now_ns()
        .saturating_sub(gen_out.first_send_ns.unwrap_or(0)) as f64
        / 1e9;
    let node_cpu_load: Vec<Option<f64>> = hub
        .node_cpu()
        .into_iter()
        .zip(&node_cpu_before)
        .map(|(now, before)| Some(now? - (*before)?))
        .collect();
    let hub_cpu_load = if node_cpu_load.is_empty() || node_cpu_load.iter().any(Option::is_none) {
        None
    } else {
        Some(node_cpu_load.iter().flatten().sum::<f64>())
    };
    let redis_cpu_load = hub
        .redis_cpu()
        .zip(redis_cpu_before)
        .map(|(now, before)| now - before);
    let harness_cpu_load = hubproc::self_cpu_secs() - harness_cpu_before;

    let _ = sup_stop.send(true);
    let mut sup_outs = Vec::with_capacity(consoles.len());
    for h in consoles {
        match h.await {
            Ok(o) => sup_outs.push(o),
            Err(e) => sup_outs.push(supervisor::SupOutcome {
                error: Some(format!("a console task failed: {e}")),
                ..Default::default()
            }),
        }
    }

    // Quiesce: every agent finishes, declines what is offered, goes Not Ready.
    let _ = phase_tx.send(Phase::Quiesce);
    let quiesce_limit = Duration::from_secs(10) + opts.offer_timeout;
    let quiesce = wait_for(quiesce_limit, hub, || {
        c.quiesced_agents.load(Ordering::Relaxed) + c.failed_agents.load(Ordering::Relaxed) >= n
    })
    .await;
    let settled = matches!(quiesce, Ok(true)) && c.quiesced_agents.load(Ordering::Relaxed) == n;
    let lookups = look_up_all(addrs.clone(), integration.clone(), &gen_out.created, 8).await;
    let _ = phase_tx.send(Phase::Close);
    let (outcomes, lost) = collect_agents(handles, Duration::from_secs(15)).await;
    let _ = stop_tx.send(true);
    if let Some(p) = prog {
        let _ = p.await;
    }
    quiesce?;
    // The reader stops at once, or, when it names what the endpoint must receive,
    // once it has read up to the hub's last event (within 30 s).
    let read_up_to = match (&hook_types, &reader) {
        (Some(_), Some(_)) => crate::webhook::last_seq(addrs[0], &integration)
            .await
            .unwrap_or(0),
        _ => 0,
    };
    let _ = reader_stop.send(Some(read_up_to));
    let stream = match reader {
        Some(mut h) => {
            let r = match tokio::time::timeout(Duration::from_secs(30), &mut h).await {
                Ok(r) => r,
                Err(_) => {
                    let _ = reader_stop.send(Some(0));
                    h.await
                }
            };
            Some(r.unwrap_or_else(|e| crate::events::StreamOutcome {
                errors: vec![format!("the stream reader failed: {e}")],
                ..Default::default()
            }))
        }
        None => None,
    };
    let mut stream = stream;
    if let (Some(_), Some(s)) = (&hook_types, stream.as_mut()) {
        if s.last_seq < read_up_to {
            let why = format!(
                "stream: read up to seq {} of {read_up_to}: the events the webhook endpoint must receive are not all known",
                s.last_seq
            );
            s.errors.push(why);
        }
    }
    let expected = match (&hook_types, &stream) {
        (Some(_), Some(s)) => s.matching.as_ref(),
        _ => None,
    };
    // The webhook endpoint: every event up to the hub's last, given time to arrive.
    let hook = match receiver {
        Some(r) => Some(
            r.finish(
                &addrs,
                &integration,
                &gen_out.created,
                expected,
                Duration::from_secs(30),
            )
            .await,
        ),
        None => None,
    };

    // Figures.
    let mut hists = HistSet::default();
    hists.merge(&gen_out.hists);
    if let Some(s) = &stream {
        hists.merge(&s.hists);
    }
    if let Some(h) = &hook {
        hists.merge(&h.hists);
    }
    for o in &outcomes {
        hists.merge(&o.hists);
    }
    for o in &sup_outs {
        hists.merge(&o.hists);
    }
    let first_send = gen_out.first_send_ns.unwrap_or(0);
    let last_done = shared.last_completion_ns.load(Ordering::Relaxed);
    let elapsed_secs = last_done.saturating_sub(first_send) as f64 / 1e9;
    let window_secs = gen_out.last_send_ns.saturating_sub(first_send) as f64 / 1e9;
    let counts = Counts {
        created,
        create_errors: Counters::get(&c.create_errors),
        offers: Counters::get(&c.offers),
        first_offers: Counters::get(&c.first_offers),
        accepted: Counters::get(&c.accepted),
        declined: Counters::get(&c.declined),
        expired: Counters::get(&c.expired),
        refused: Counters::get(&c.refused),
        completed: Counters::get(&c.completed),
        frames_in: Counters::get(&c.frames_in),
        unexpected: Counters::get(&c.unexpected),
    };
    let linked = hists.get(H_CREATE_TO_OFFER).count();
    let timeline_all = shared.timeline(timeline_secs);
    let end_sec = (last_done as f64 / 1e9).ceil() as usize;
    let first_sec = (first_send as f64 / 1e9).floor() as usize;
    let completion_timeline: Vec<u64> = timeline_all
        .iter()
        .copied()
        .skip(first_sec)
        .take(end_sec.saturating_sub(first_sec))
        .collect();
    let (c2o_max_us_by_second, c2o_over_1ms_by_second) = shared.c2o_timeline(
        first_sec,
        ((gen_out.last_send_ns as f64 / 1e9).floor() as usize + 1).saturating_sub(first_sec),
    );
    // Whole seconds inside the load window, after a warm-up of the hold and answer times.
    let warmup = 1.0 + 3.0 * (opts.accept.mean_ms + opts.handle.mean_ms) / 1000.0;
    let from = (first_send as f64 / 1e9 + warmup).ceil() as usize;
    let to = (gen_out.last_send_ns as f64 / 1e9).floor() as usize;
    let steady = if to > from {
        let window = &timeline_all[from.min(timeline_all.len())..to.min(timeline_all.len())];
        (!window.is_empty()).then(|| window.iter().sum::<u64>() as f64 / window.len() as f64)
    } else {
        None
    };
    let mut latency_names = vec![
        H_CREATE_TO_OFFER,
        H_ACCEPT_RTT,
        H_COMPLETE_RTT,
        H_DECLINE_RTT,
        agent::H_CLOSE_RTT,
        H_HTTP_CREATE,
        H_SCHEDULE_LAG,
    ];
    if opts.supervisors > 0 {
        latency_names.extend([supervisor::H_SUP_LAG, supervisor::H_STATS_AGE]);
    }
    if stream.is_some() {
        latency_names.push(crate::events::H_CREATE_TO_STREAM_OFFER);
    }
    if hook.is_some() {
        latency_names.push(crate::webhook::H_CREATE_TO_HOOK_OFFER);
    }
    let latencies = hists.summaries(&latency_names);

    // Checks.
    let mut checks = Vec::new();
    let kind = |k: Kind| -> Vec<String> {
        outcomes
            .iter()
            .flat_map(|o| {
                o.violations
                    .iter()
                    .filter(|(vk, _)| *vk == k)
                    .map(|(_, m)| m.clone())
            })
            .collect()
    };
    let mut conn_breaches: Vec<String> = outcomes.iter().flat_map(|o| o.errors.clone()).collect();
    conn_breaches.extend(lost);
    conn_breaches.extend(
        outcomes
            .iter()
            .filter(|o| !o.was_ready)
            .map(|o| format!("{} never went Ready", o.id)),
    );
    checks.push(Check::from_breaches(
        "every agent connected, went Ready and stayed connected",
        format!("{n} agents, Ready in {login_secs:.2} s"),
        &conn_breaches,
    ));
    if let Some(s) = &stream {
        let mut breaches = s.errors.clone();
        let seen = hists.get(crate::events::H_CREATE_TO_STREAM_OFFER).count();
        if seen < counts.first_offers {
            breaches.push(format!(
                "{} first offers, {seen} seen on the stream",
                counts.first_offers
            ));
        }
        checks.push(Check::from_breaches(
            "the event stream read every event, in order, and every first offer",
            format!("{} events, {seen} first offers", s.events),
            &breaches,
        ));
    }
    let mut figures = Vec::new();
    if let Some(h) = &hook {
        let seen = hists.get(crate::webhook::H_CREATE_TO_HOOK_OFFER).count();
        checks.extend(h.checks(seen, counts.first_offers, counts.completed));
        figures.extend([
            Figure::new("webhook deliveries", h.deliveries as f64, ""),
            Figure::new("webhook events (distinct)", h.distinct as f64, ""),
            Figure::new("webhook repeats", h.duplicates as f64, ""),
            Figure::new("webhook connections opened", h.connections as f64, ""),
            Figure::new("webhook events missing", h.missing.0 as f64, ""),
            Figure::new("webhook order breaks", h.order.0 as f64, ""),
            Figure::new(
                "webhook catch-up after the run",
                h.catch_up.as_secs_f64() * 1e3,
                "ms",
            ),
        ]);
    }
    let hook_notes = hook.as_ref().map(|h| h.notes()).unwrap_or_default();
    let mut create_breaches = gen_out.errors.clone();
    create_breaches.extend(gen_failures);
    if counts.create_errors as usize > create_breaches.len() {
        create_breaches.push(format!("{} create errors in all", counts.create_errors));
    }
    if created + counts.create_errors < total {
        create_breaches.push(format!(
            "only {} of {total} creates were sent",
            created + counts.create_errors
        ));
    }
    checks.push(Check::from_breaches(
        "every create answered 201 with a task",
        format!("{created} of {total} created"),
        &create_breaches,
    ));
    let findings = checks::offer_findings(&outcomes);
    checks.push(Check::from_breaches(
        "no agent held two offers at once",
        format!("{} offers on {n} sockets", findings.offers),
        &kind(Kind::TwoOffers),
    ));
    checks.push(Check::from_breaches(
        "no task offered to two agents at once",
        format!(
            "{} tasks' {} offers in the hub's order: each ended unaccepted before the next (declines by send time, expiries by hub deadline)",
            findings.tasks, findings.offers
        ),
        &findings.concurrent,
    ));
    let mut assigned_breaches = findings.double_assigned.clone();
    assigned_breaches.extend(kind(Kind::AcceptAfterEnd));
    assigned_breaches.extend(kind(Kind::EndAfterAccept));
    checks.push(Check::from_breaches(
        "no task assigned twice",
        format!("{} accepts answered with the task", counts.accepted),
        &assigned_breaches,
    ));
    checks.push(Check::from_breaches(
        "no agent with two calls at once, nor offered work during a call",
        "every offer, accept and state frame".into(),
        &kind(Kind::Voice),
    ));
    checks.push(Check::from_breaches(
        "per-channel capacity respected",
        format!(
            "chat {}, email {}, on every offer and state frame",
            opts.capacity.chat, opts.capacity.email
        ),
        &kind(Kind::Capacity),
    ));
    checks.push(Check::from_breaches(
        "agent state versions only increase",
        "every state frame".into(),
        &kind(Kind::StateVersion),
    ));
    checks.push(Check::from_breaches(
        "no offer to an agent after it went Not Ready",
        "from each agent's not_ready reply to its close".into(),
        &kind(Kind::OfferWhileNotReady),
    ));
    checks.push(Check::from_breaches(
        "every complete of an accepted task answered",
        format!("{} completes", counts.completed),
        &kind(Kind::CompleteRefused),
    ));
    let unexpected: Vec<String> = outcomes.iter().flat_map(|o| o.unexpected.clone()).collect();
    let mut unexpected_breaches = unexpected;
    if counts.unexpected as usize > unexpected_breaches.len() {
        unexpected_breaches.push(format!("{} in all", counts.unexpected));
    }
    checks.push(Check::from_breaches(
        "no unexpected frames or errors",
        format!("{} frames", counts.frames_in),
        &unexpected_breaches,
    ));
    let mut frame_types: std::collections::BTreeMap<String, agent::FrameStat> = Default::default();
    for o in &outcomes {
        for (t, st) in &o.frame_types {
            frame_types.entry(t.clone()).or_default().merge(st);
        }
    }
    let mut trace_breaches = Vec::new();
    if linked < counts.first_offers {
        trace_breaches.push(format!(
            "{} first offers could not be traced to a create of this run",
            counts.first_offers - linked
        ));
    }
    if findings.foreign > 0 {
        trace_breaches.push(format!(
            "{} offers of tasks this run did not create",
            findings.foreign
        ));
    }
    if opts.supervisors > 0 {
        let breaches: Vec<String> = sup_outs
            .iter()
            .enumerate()
            .flat_map(|(i, o)| {
                let mut b = Vec::new();
                if let Some(e) = &o.error {
                    b.push(format!("supervisor {i}: {e}"));
                }
                if !o.snapshot_had_stats {
                    b.push(format!("supervisor {i}: its snapshot had no stats"));
                }
                if o.stats_msgs == 0 {
                    b.push(format!("supervisor {i}: no stats message"));
                }
                b
            })
            .collect();
        let frames: u64 = sup_outs.iter().map(|o| o.frames).sum();
        let stats_msgs: u64 = sup_outs.iter().map(|o| o.stats_msgs).sum();
        let catch_ups: u64 = sup_outs.iter().map(|o| o.catch_ups).sum();
        checks.push(Check::from_breaches(
            "every supervisor stayed connected and got stats",
            format!(
                "{} supervisors: {frames} frames, {stats_msgs} stats messages, {catch_ups} catch-up snapshots",
                opts.supervisors
            ),
            &breaches,
        ));
    }
    let mut notes = hook_notes;
    if matches!(opts.target, Target::External { .. }) {
        // Another client's tasks may share the queues: not a breach there.
        notes.append(&mut trace_breaches);
    }
    checks.push(Check::from_breaches(
        "every first offer traced to its create",
        format!("{linked} first offers timed from their create"),
        &trace_breaches,
    ));
    let mut settle_breaches = Vec::new();
    if !settled {
        settle_breaches.push(format!(
            "only {} of {n} agents went Not Ready with nothing pending within {} s",
            c.quiesced_agents.load(Ordering::Relaxed),
            quiesce_limit.as_secs()
        ));
    }
    checks.push(Check::from_breaches(
        "every agent finished its work and went Not Ready at the end",
        format!("{n} agents"),
        &settle_breaches,
    ));
    // Tasks neither completed nor in an agent's hands when the drain ended: waiting in
    // a queue although the agents had stopped completing anything.
    let waiting = created.saturating_sub(completed_at_drain + held_at_drain + offered_at_drain);
    let drain_note = format!(
        "drain: {completed_at_drain} of {created} completed {drain_secs:.1} s after the last create ({held_at_drain} held, {offered_at_drain} offered, {waiting} waiting)"
    );
    if opts.miss_share == 0.0 && opts.decline_share == 0.0 {
        let b = if drained || waiting == 0 {
            Vec::new()
        } else if last_change.elapsed() >= stall {
            vec![format!(
                "{waiting} tasks still waiting after no task completed for {:.1} s; {drain_note}",
                stall.as_secs_f64()
            )]
        } else {
            vec![format!(
                "the drain hit its cap of {:.0} s while tasks still completed; {drain_note}",
                opts.drain_cap().as_secs_f64()
            )]
        };
        checks.push(Check::from_breaches(
            "no task left waiting while agents were idle (no misses or declines in this run)",
            if drained {
                format!("all {created} completed {drain_secs:.1} s after the last create")
            } else {
                drain_note.clone()
            },
            &b,
        ));
    }
    if !drained {
        notes.push(format!(
            "{drain_note}; the agents completed what they held when the run ended{}",
            if opts.miss_share + opts.decline_share > 0.0 {
                "; with misses and declines, a task refused by every agent of its queue stays queued"
            } else {
                ""
            }
        ));
    }
    let (accounting, acc_breaches) =
        checks::account(&gen_out.created, &lookups, &outcomes, settled);
    checks.push(Check::from_breaches(
        "every created task accounted for (completed, cancelled, or still queued/offered)",
        format!(
            "GET /v1/tasks/{{id}} for {} tasks, compared with what the agents saw",
            accounting.looked_up
        ),
        &acc_breaches,
    ));
    notes.push(format!(
        "the harness and the hub share this machine's {} CPUs; during load and drain ({load_secs:.2} s) the harness used {harness_cpu_load:.2} CPU s ({:.0}% of one core)",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        100.0 * harness_cpu_load / load_secs.max(1e-9)
    ));
    if let Some(cpu) = hub_cpu_load {
        notes.push(format!(
            "hub CPU during load and drain: {cpu:.2} s ({:.0}% of one core), {:.0} µs per task created",
            100.0 * cpu / load_secs.max(1e-9),
            1e6 * cpu / created.max(1) as f64
        ));
    }
    if node_cpu_load.len() > 1 {
        notes.push(format!("hub CPU by node: {}", hub.per_node(&node_cpu_load)));
    }
    if let Some(cpu) = redis_cpu_load {
        notes.push(format!(
            "redis-server CPU during load and drain: {cpu:.2} s ({:.0}% of one core), {:.0} µs per task created",
            100.0 * cpu / load_secs.max(1e-9),
            1e6 * cpu / created.max(1) as f64
        ));
    }
    let slack = Duration::from_secs_f64(
        ((opts.accept.mean_ms + opts.handle.mean_ms) * 4.0 / 1000.0).clamp(0.0, 60.0),
    );
    notes.push(
        sustained(
            opts.rate,
            created,
            total,
            window_secs,
            elapsed_secs,
            steady,
            slack,
        )
        .1,
    );
    if let Some(lim) = raise_nofile_limit() {
        notes.push(format!("open-file limit {lim}"));
    }
    // What the echo floor is set against: every websocket frame the agents read, the
    // requests they sent, and each HTTP create and its response.
    let floor_basis = hub_cpu_load.map(|cpu| {
        let (n_out, bytes_out) = frame_types
            .values()
            .fold((0, 0), |(n, b), f| (n + f.count, b + f.bytes));
        crate::floor::Basis {
            vs_connect: false,
            conns: opts.agents,
            frames: counts.frames_in
                + counts.accepted
                + counts.declined
                + counts.completed
                + 2 * created
                // Each webhook delivery is an HTTP request the hub writes and a
                // response it reads.
                + hook.as_ref().map_or(0, |h| 2 * h.deliveries),
            window_secs: load_secs,
            hub_cpu_secs: cpu,
            frame_bytes: (bytes_out / n_out.max(1)) as usize,
            rss_per_conn_kib: rss_per_agent,
            latency: latencies
                .iter()
                .find(|l| l.name == agent::H_CREATE_TO_OFFER && l.count > 0)
                .map(|l| (l.name.clone(), l.p50_us, l.p99_us)),
        }
    });
    let mut report = Report {
        scenario: "route".into(),
        params: opts.params(),
        hub: hub_desc,
        figures,
        elapsed_secs,
        create_window_secs: window_secs,
        create_rate: if window_secs > 0.0 {
            created as f64 / window_secs
        } else {
            created as f64
        },
        throughput_steady: steady,
        frame_types,
        completion_timeline,
        c2o_max_us_by_second,
        c2o_over_1ms_by_second,
        throughput: if elapsed_secs > 0.0 {
            counts.completed as f64 / elapsed_secs
        } else {
            0.0
        },
        counts,
        latencies,
        checks,
        accounting,
        hub_cpu_secs: None,
        hub_cpu_load_secs: hub_cpu_load,
        harness_cpu_secs: hubproc::self_cpu_secs() - cpu_at_start,
        notes,
        floor_basis,
    };
    if let Some(secs) = preload_secs {
        report.notes.push(format!(
            "{} customers preloaded over HTTP in {secs:.1} s ({:.0}/s)",
            opts.customers,
            opts.customers as f64 / secs.max(1e-9)
        ));
    }
    if opts.customer_rate > 0.0 {
        crate::searchers::add_writer_to_report(
            &mut report,
            writer_out.as_ref(),
            opts.customer_rate,
        );
    }
    if opts.searchers > 0 {
        crate::searchers::add_to_report(
            &mut report,
            &search_outs,
            searchers_lost,
            search_rate,
            &why_rate,
        );
    }
    Ok(report)
}
