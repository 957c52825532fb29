//! The `route` scenario: agents log in and work offers while an integration creates
//! tasks at a fixed rate; measures create -> offer and the request round trips, and
//! checks the routing invariants on everything seen.
//!
//! A run goes: start (or reach) the hub; log every agent in and set it Ready; create
//! tasks open-loop at the rate for the duration; let the agents drain the queues; ask
//! every agent to finish what it holds and go Not Ready; look every created task up;
//! close; check.
//!
//! `drive` runs those phases in order; each lives in `route/`: `agents` (login,
//! quiesce, close), `side` (supervisor consoles, the stream reader, the webhook
//! endpoint's finish, the customer traffic), `load` (the create schedule, the drain,
//! the CPU spent), `checks` (the invariant checks) and `summary` (figures, notes,
//! the report).

mod agents;
mod checks;
mod load;
mod side;
mod summary;

use crate::cluster::{
    Cluster, Launched, MAX_NODES, Target, land, launch, look_up_all, raise_nofile_limit, sign,
};
use crate::hubproc::{self, Capacity, HubSetup};
use crate::report::{Failure, Report};
use crate::rng::{Delay, Rng};
use crate::shared::Shared;
use agents::Agents;
use load::{CpuMark, Progress, create_all, drain};
use side::{Consoles, CustomerTraffic, StreamReader, finish_hook, preload_customers};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use summary::Seen;
use switchboard::auth::{Keys, Role};

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
    /// `webhooks.linger_ms` in the started hub's config (its default when `None`).
    pub webhook_linger_ms: Option<u64>,
    /// `events.stream_linger_ms` in the started hub's config (its default when `None`).
    pub stream_linger_ms: Option<u64>,
    /// Customers created over HTTP before the agents log in, for the searchers to find
    /// ([`crate::searchers`]).
    pub customers: u64,
    /// Customers already in the hub (an earlier run's preload against the same
    /// `--hub`): searched, not created.
    pub customers_present: u64,
    /// Agent sessions of their own (no queues, never Ready) sending `search_customers`
    /// at the hub's rate limit (or a desktop's rate) for the whole load window.
    pub searchers: usize,
    /// The searchers on a runtime of their own, in `SCHED_IDLE` (see `--searchers-apart`).
    pub searchers_apart: bool,
    /// What the searchers type (`--searcher-queries`).
    pub searcher_queries: crate::searchers::Queries,
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
            webhook_linger_ms: None,
            stream_linger_ms: None,
            customers: 0,
            customers_present: 0,
            searchers: 0,
            searchers_apart: false,
            searcher_queries: crate::searchers::Queries::Mixed,
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
            if self.stream_linger_ms.is_some() {
                return bad(
                    "--stream-linger-ms writes the started hub's config: not with --hub".into(),
                );
            }
        }
        if self.webhook_linger_ms.is_some() && !self.webhook_receiver {
            return bad("--webhook-linger-ms is the --webhook-receiver's: give both".into());
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
        if self.customers_present > 0 && self.customers > 0 {
            return bad("--customers-present is for a later run against the same --hub: give it with --customers 0".into());
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
            "webhook_linger_ms": self.webhook_linger_ms,
            "stream_linger_ms": self.stream_linger_ms,
            "customers": self.customers,
            "customers_present": self.customers_present,
            "searchers": self.searchers,
            "searchers_apart": self.searchers_apart,
            "searcher_queries": self.searcher_queries.name(),
            "customer_rate": self.customer_rate,
        })
    }
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
            crate::webhook::Receiver::start(opts.webhook_types.clone(), opts.webhook_linger_ms)
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
        stream_linger_ms: opts.stream_linger_ms,
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

/// What every phase of one run shares: its options, the hub's addresses, the tokens'
/// key, the integration's token and the counters the actors write.
struct Run<'a> {
    /// The run's options.
    opts: &'a RouteOpts,
    /// Tasks the run creates.
    total: u64,
    /// The harness's CPU seconds when the run began.
    cpu_at_start: f64,
    /// The nodes' addresses.
    addrs: Arc<[SocketAddr]>,
    /// Signs every token.
    keys: Keys,
    /// Every token's lifetime: the load, the longest drain and an hour.
    ttl: Duration,
    /// The integration's token: creates, lookups, the stream, customers.
    integration: Arc<str>,
    /// Seconds the completion timeline covers.
    timeline_secs: usize,
    /// Counters and timelines every actor writes.
    shared: Arc<Shared>,
}

impl<'a> Run<'a> {
    /// Signs the integration's token and sets up the counters, giving them to the
    /// webhook receiver when there is one.
    fn new(
        opts: &'a RouteOpts,
        addrs: Arc<[SocketAddr]>,
        secret: &str,
        receiver: Option<&crate::webhook::Receiver>,
    ) -> Run<'a> {
        let total = opts.total_tasks();
        let cpu_at_start = hubproc::self_cpu_secs();
        let keys = Keys::new(secret.as_bytes());
        let ttl = opts.duration + opts.drain_cap() + Duration::from_secs(3600);
        let integration: Arc<str> =
            sign(&keys, "lt-integration", Role::Integration, ttl, None).into();
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
        Run {
            opts,
            total,
            cpu_at_start,
            addrs,
            keys,
            ttl,
            integration,
            timeline_secs,
            shared,
        }
    }
}

/// One run against a started (or reached) hub, phase by phase: customers, login, side
/// actors, load, drain, quiesce, end accounting, close; then the report.
async fn drive(
    opts: &RouteOpts,
    hub: &mut Cluster,
    addrs: Arc<[SocketAddr]>,
    secret: &str,
    hub_desc: String,
    receiver: Option<&crate::webhook::Receiver>,
    hub_limit: Option<f64>,
) -> Result<Report, Failure> {
    let run = Run::new(opts, addrs, secret, receiver);
    // The customer base the searchers search, before anyone logs in.
    let preload_secs = preload_customers(&run).await?;
    let agents = Agents::log_in(&run, hub).await?;
    // Supervisor consoles, connected before the load so that their feed covers it.
    let consoles = match Consoles::connect(&run).await {
        Ok(c) => c,
        Err(f) => {
            let _ = agents.close(Duration::from_secs(10)).await;
            return Err(f);
        }
    };
    let cpu_mark = CpuMark::take(hub);
    // The stream reader, connected before the first create.
    let reader = StreamReader::start(&run).await;
    // The searchers and the customer writer, from before the load to its last create.
    let customers = CustomerTraffic::start(&run, hub_limit);

    // The load: open loop, `http_conns` creators sharing one schedule.
    let progress = Progress::start(&run);
    let creates = create_all(&run).await;
    let customers = customers.stop().await;

    // Drain: let the agents finish what was created, while they make progress.
    let drain = match drain(&run, hub, creates.created()).await {
        Ok(d) => d,
        Err(f) => {
            progress.halt();
            let _ = agents.close(Duration::from_secs(5)).await;
            return Err(f);
        }
    };
    let cpu = cpu_mark.load(hub, &run.shared, creates.out.first_send_ns);
    let sup_outs = consoles.stop().await;

    // Quiesce: every agent finishes, declines what is offered, goes Not Ready.
    let (quiesce, quiesced) = agents.quiesce(&run, hub).await;
    // The end accounting: where the hub says each created task is.
    let lookups = look_up_all(
        run.addrs.clone(),
        run.integration.clone(),
        &creates.out.created,
        8,
    )
    .await;
    let login = agents.login;
    let (outcomes, lost) = agents.close(Duration::from_secs(15)).await;
    progress.end().await;
    quiesce?;
    // The stream reader and the webhook endpoint, last: they have seen every event.
    let (stream, hook_types) = reader.stop(&run).await;
    let hook = finish_hook(&run, receiver, &creates.out.created, &hook_types, &stream).await;

    let seen = Seen {
        hub_desc,
        preload_secs,
        login,
        creates,
        customers,
        drain,
        cpu,
        sup_outs,
        quiesced,
        lookups,
        outcomes,
        lost,
        stream,
        hook,
    };
    Ok(summary::report(&run, hub, seen))
}
