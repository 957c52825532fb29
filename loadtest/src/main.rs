//! `loadtest`: drives a switchboard hub over real websockets and HTTP and measures it.
//!
//! ```text
//! loadtest route [--agents 200] [--rate 1000] [--duration 10] [--hub ADDR --secret S | --hub-bin PATH]
//!                [--nodes N --redis [--redis-bin PATH]] [--customers M --searchers N]
//! loadtest compare [--agents 200] [--rate 2000] [--duration 10] [--nodes 2]
//! loadtest smoke [--hub-bin PATH]
//! loadtest supervise [--agents 1000] [--supervisors 10] [--rate 2000] [--duration 10]
//! loadtest fanout [--subscribers 1000] [--editors 1] [--rate 20] [--duration 10]
//! loadtest conflicts [--editors 8] [--watchers 4] [--duration 10]
//! loadtest expiry [--agents 10000] [--offer-timeout 2]
//! loadtest reconnect [--agents 1000] [--busy-share 0.5] [--drop rst|fin|close|stale] [--waves 1]
//!                    [--wave-gap 0.25] [--pause 0.5] [--grace 10] [--nodes N --redis]
//! loadtest nodeloss [--agents 400] [--nodes 2] --redis [--offer-timeout 120] [--limit 30]
//! loadtest idle [--conns 10000] [--duration 15] [--ping-every 5]
//! loadtest echo [--conns 200] [--rate 2000] [--duration 5] [--addr ADDR]
//! loadtest echo-server [--listen 127.0.0.1:0] [--secs 600]
//! loadtest search [--customers 1000000] [--queries 2000] [--scans 40]
//! loadtest crash [--rounds 100] [--agents 3] [--writers 2] [--max-load-ms 1500] [--snapshot-every 500]
//! ```
//! Exit status: 0 when every invariant held, 1 when one broke, 2 when the run could not
//! be carried out.

use clap::{Args, Parser, Subcommand, ValueEnum};
use loadtest::compare::{CompareOpts, run_compare};
use loadtest::conflicts::{ConflictOpts, run_conflicts};
use loadtest::echo::{EchoOpts, run_echo, start_echo_server};
use loadtest::expiry::{ExpiryOpts, run_expiry};
use loadtest::fanout::{FanoutOpts, run_fanout};
use loadtest::hubproc::{Capacity, default_hub_bin};
use loadtest::idle::{IdleOpts, run_idle};
use loadtest::nodeloss::{NodeLossOpts, run_nodeloss};
use loadtest::reconnect::{DropMode, ReconnectOpts, run_reconnect};
use loadtest::rng::Delay;
use loadtest::supervise::{SuperviseOpts, run_supervise};
use loadtest::{Failure, Report, RouteOpts, Target, run_route};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    version,
    about = "Load-test harness for switchboard (loopback only, bounded runs)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Agents work offers while tasks are created at a fixed rate; measures create ->
    /// offer and the round trips, checks the routing invariants.
    Route(RouteCmd),
    /// The route scenario twice with the same load: one node in memory, then several
    /// nodes sharing a Redis started for the run; create -> offer and throughput side by
    /// side, with the ratio.
    Compare(CompareArgs),
    /// A short `route` run (about 3 s, 300 tasks, 20 agents) with every check; exit 0
    /// when all hold.
    Smoke(SmokeArgs),
    /// The route scenario twice with the same load on one node: without supervisors,
    /// then with M supervisor consoles; decision -> supervisor lag (p99) and the hub's
    /// CPU per task of both (issue 15's figures).
    Supervise(SuperviseArgs),
    /// One customer watched by many agents while editors save it at a rate; measures
    /// save -> notification on every subscriber and checks exactly-once, in-order
    /// delivery.
    Fanout(FanoutArgs),
    /// Editors race to save one customer; checks every version is granted once and
    /// every watcher sees each once, in order.
    Conflicts(ConflictsArgs),
    /// N agents that never answer, N/2 tasks at once: every offer expires, is re-offered
    /// once; measures expiry lateness.
    Expiry(ExpiryArgs),
    /// Agents holding an offer or a task lose their sockets and reconnect within the
    /// grace period (to another node with --nodes); measures reconnect -> resumed
    /// welcome and accept/complete right after, checks nothing moved.
    Reconnect(ReconnectArgs),
    /// kill -9 of node 1 while each of its agents holds an offer: measures the kill ->
    /// the offer reaching a live agent on another node, checks each task reached
    /// exactly one.
    Nodeloss(NodelossArgs),
    /// Idle heartbeating agents: hub RSS per connection and CPU per heartbeat against
    /// the echo floor.
    Idle(IdleArgs),
    /// The floor: websocket round trips against a bare echo server on the hub's stack.
    Echo(EchoArgs),
    /// The file store in process: writes a large log (customer creates and saves),
    /// stops, and times the restart until the store answers.
    Restart(RestartArgs),
    /// kill -9 of a file-store hub under load (task creates, customer saves, agents
    /// accepting and completing), N rounds on one data directory; after each restart
    /// every acknowledged command is checked (there, its version and state, nothing
    /// applied twice).
    Crash(CrashArgs),
    /// Customer search at scale, in process: memory per customer, search latency through
    /// the index and the old scan (checked to agree).
    Search(SearchArgs),
    /// Run only the echo server (websocket at /echo), for a while.
    EchoServer(EchoServerArgs),
}

/// What the searchers of `route` type.
#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum QueriesArg {
    /// Broad and narrow queries drawn from the preload.
    Mixed,
    /// Queries no customer matches, answered from a missing posting list: a search's
    /// request, reply and index locks, without its reads of the lists.
    Unmatched,
    /// The first three letters of a first name: one posting list's first page, a full
    /// page of results for the least reading a real search does.
    Broad,
}

#[derive(Clone, Copy, ValueEnum)]
enum DistArg {
    Fixed,
    Exp,
}

#[derive(Args)]
struct HubArgs {
    /// An already-running hub (loopback address); without it a hub is started.
    #[arg(long)]
    hub: Option<SocketAddr>,
    /// The running hub's signing secret (or SWITCHBOARD_SECRET).
    #[arg(long, env = "SWITCHBOARD_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// The switchboard binary to start (default: next to this executable).
    #[arg(long)]
    hub_bin: Option<PathBuf>,
    /// RUST_LOG for the started hub (default: its own, info).
    #[arg(long)]
    hub_log: Option<String>,
}

impl HubArgs {
    fn target(&self) -> Result<Target, String> {
        match self.hub {
            Some(addr) => {
                let secret = self
                    .secret
                    .clone()
                    .ok_or("--hub needs --secret (or SWITCHBOARD_SECRET)")?;
                Ok(Target::External { addr, secret })
            }
            None => Ok(Target::Spawn {
                bin: self.hub_bin.clone().unwrap_or_else(default_hub_bin),
                rust_log: self.hub_log.clone(),
            }),
        }
    }
}

#[derive(Args)]
struct RouteArgs {
    #[command(flatten)]
    hub: HubArgs,
    /// Agents to log in.
    #[arg(long, default_value_t = 200)]
    agents: usize,
    /// Tasks created per second.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Seconds of task creation.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Queue ids, comma-separated (default: lt-q0..lt-q3; a running hub must have them).
    #[arg(long, value_delimiter = ',')]
    queues: Option<Vec<String>>,
    /// Queues each agent serves.
    #[arg(long, default_value_t = 2)]
    queues_per_agent: usize,
    /// Share of tasks that are calls.
    #[arg(long, default_value_t = 0.1)]
    voice_share: f64,
    /// Share of tasks that are emails (the rest are chats).
    #[arg(long, default_value_t = 0.05)]
    email_share: f64,
    /// Mean delay from an offer to the agent's answer, in ms.
    #[arg(long, default_value_t = 0.0)]
    accept_ms: f64,
    /// Shape of the answer delay.
    #[arg(long, value_enum, default_value = "exp")]
    accept_dist: DistArg,
    /// Mean time an accepted task is held before it is completed, in ms.
    #[arg(long, default_value_t = 0.0)]
    handle_ms: f64,
    /// Shape of the hold time.
    #[arg(long, value_enum, default_value = "exp")]
    handle_dist: DistArg,
    /// Share of offers left to expire.
    #[arg(long, default_value_t = 0.0)]
    miss_share: f64,
    /// Share of offers declined.
    #[arg(long, default_value_t = 0.0)]
    decline_share: f64,
    /// Offer timeout of the started hub, in seconds.
    #[arg(long, default_value_t = 2.0)]
    offer_timeout: f64,
    /// Chat capacity per agent (written to the started hub's config).
    #[arg(long, default_value_t = 3)]
    chat_capacity: u32,
    /// Email capacity per agent.
    #[arg(long, default_value_t = 2)]
    email_capacity: u32,
    /// HTTP connections creating tasks.
    #[arg(long, default_value_t = 8)]
    http_conns: usize,
    /// Seconds to wait after the last create for everything to complete (default:
    /// from the offer timeout and the delays).
    #[arg(long)]
    drain: Option<f64>,
    /// Seed for every random choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// No progress lines on stderr.
    #[arg(long)]
    quiet: bool,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Keep the started hub's config and log even when the run passes.
    #[arg(long)]
    keep_files: bool,
    /// After each complete, close the interaction the accept opened (discarding it),
    /// as a desktop does; without it the agents' Open lists grow all run.
    #[arg(long)]
    close_interactions: bool,
    /// One `GET /v1/events` reader for the whole run: create -> `task.offered` as the
    /// stream shows it (p99), and the stream's checks (dense seqs, no cutoff).
    #[arg(long)]
    stream_reader: bool,
    /// One webhook endpoint of the harness's own (an HTTP receiver on 127.0.0.1 in the
    /// started hub's config, every type): signatures verified, every event and its
    /// order per task and agent checked, create -> task.offered at the receiver (p99).
    #[arg(long)]
    webhook_receiver: bool,
    /// The receiver's event types, comma-separated patterns as `[[webhooks.endpoints]]`
    /// takes them (`task.offered,task.assigned`, `task.*`; default every type). Other
    /// than `*` it needs --stream-reader: the stream names every event's type, so the
    /// receiver knows which it must get.
    #[arg(long, value_delimiter = ',', default_value = "*")]
    webhook_types: Vec<String>,
    /// `webhooks.linger_ms` in the started hub's config (default: the hub's): how long
    /// events that come soon after a take wait to go together.
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=1000))]
    webhook_linger_ms: Option<u64>,
    /// `events.stream_linger_ms` in the started hub's config (default: the hub's): how
    /// long the event stream gathers events before a write.
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=1000))]
    stream_linger_ms: Option<u64>,
    /// Customers created over HTTP before the agents log in (names, emails, phones as
    /// `loadtest search` makes them), for --searchers to find.
    #[arg(long, default_value_t = 0)]
    customers: u64,
    /// Customers an earlier run already created in the hub given by --hub (its
    /// --customers): the searchers search them and the writer's customers follow
    /// them; nothing is created again. With --customers 0: one preload, then runs
    /// with and without --searchers against the same hub, alternated.
    #[arg(long, default_value_t = 0)]
    customers_present: u64,
    /// Agent sessions of their own (no queues, so never offered a task) each sending
    /// `search_customers` at the hub's rate limit, or 10/s when that limit is far above
    /// what a person types, for the whole load window: search request -> reply and
    /// every error answer reported.
    #[arg(long, default_value_t = 0)]
    searchers: usize,
    /// The searchers on a runtime of their own, one thread in `SCHED_IDLE`, rather than
    /// among the agents that time the offers: they stand for desktops on other
    /// machines, whose work does not delay the measuring clients' (their sockets'
    /// kernel work still lands on this machine). Their searches sent and answered are
    /// reported either way, so the load on the hub can be compared.
    #[arg(long)]
    searchers_apart: bool,
    /// What the searchers type.
    #[arg(long, value_enum, default_value_t = QueriesArg::Mixed)]
    searcher_queries: QueriesArg,
    /// Customers created per second over HTTP during the load window (after the
    /// --customers ones), by one integration connection: changes to the search index
    /// while routing runs; their latency reported.
    #[arg(long, default_value_t = 0.0)]
    customer_rate: f64,
}

#[derive(Args)]
struct ClusterArgs {
    /// Hub nodes to start; agents and creates are spread over them round-robin.
    /// More than one needs --redis.
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// Start a redis-server of the run's own (free port, temporary directory,
    /// appendonly yes, appendfsync always) and give it to every node as store.redis.
    #[arg(long)]
    redis: bool,
    /// The redis-server binary.
    #[arg(long, default_value = "redis-server")]
    redis_bin: PathBuf,
    /// store.snapshot_every of the started nodes (with --redis or --durable; default: the hub's).
    #[arg(long)]
    snapshot_every: Option<u64>,
}

#[derive(Args)]
struct RouteCmd {
    #[command(flatten)]
    route: RouteArgs,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Skip the echo floor run after the scenario (no hub / floor ratios).
    #[arg(long)]
    no_floor: bool,
    /// Run the started hub on the file store (its data directory in the run's
    /// directory) instead of in memory; ignored with --redis.
    #[arg(long)]
    durable: bool,
}

#[derive(Args)]
struct CompareArgs {
    #[command(flatten)]
    route: RouteArgs,
    /// Nodes of the second run (they share the Redis).
    #[arg(long, default_value_t = 2)]
    nodes: usize,
    /// The redis-server binary.
    #[arg(long, default_value = "redis-server")]
    redis_bin: PathBuf,
    /// Seconds between the two runs.
    #[arg(long, default_value_t = 2.0)]
    pause: f64,
    /// store.snapshot_every of the Redis run's nodes (default: the hub's).
    #[arg(long)]
    snapshot_every: Option<u64>,
}

#[derive(Args)]
struct SuperviseArgs {
    #[command(flatten)]
    route: RouteArgs,
    /// Supervisor consoles of the second run.
    #[arg(long, default_value_t = 10)]
    supervisors: usize,
    /// Seconds between the two runs.
    #[arg(long, default_value_t = 2.0)]
    pause: f64,
}

#[derive(Args)]
struct SmokeArgs {
    #[command(flatten)]
    hub: HubArgs,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
struct Common {
    /// No progress lines on stderr.
    #[arg(long)]
    quiet: bool,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Keep the started hub's config and log even when the run passes.
    #[arg(long)]
    keep_files: bool,
    /// Loopback source addresses to spread the client sockets over (127.0.0.2...);
    /// 0 lets the kernel choose.
    #[arg(long, default_value_t = 8)]
    source_addrs: usize,
    /// Skip the echo floor run after the scenario (no hub / floor ratios).
    #[arg(long)]
    no_floor: bool,
}

#[derive(Args)]
struct FanoutArgs {
    #[command(flatten)]
    hub: HubArgs,
    #[command(flatten)]
    common: Common,
    /// Agents watching the customer (get_customer).
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Agents saving it (reopen_customer, update_customer).
    #[arg(long, default_value_t = 1)]
    editors: usize,
    /// Saves per second, over all editors.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Seconds of saving.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// The started hub's limits.send_queue (default: every save plus 1024).
    #[arg(long)]
    send_queue: Option<usize>,
    /// Sockets logging in at once.
    #[arg(long, default_value_t = 128)]
    connect_concurrency: usize,
}

#[derive(Args)]
struct ConflictsArgs {
    #[command(flatten)]
    hub: HubArgs,
    #[command(flatten)]
    common: Common,
    /// Agents saving the customer over the websocket, as fast as they can.
    #[arg(long, default_value_t = 8)]
    editors: usize,
    /// Integrations saving it over HTTP (PATCH /v1/customers/{id}), as fast as they can.
    #[arg(long, default_value_t = 0)]
    http_editors: usize,
    /// Agents only watching it.
    #[arg(long, default_value_t = 4)]
    watchers: usize,
    /// Seconds of saving.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
}

#[derive(Args)]
struct ExpiryArgs {
    #[command(flatten)]
    hub: HubArgs,
    #[command(flatten)]
    common: Common,
    /// Agents that go Ready and never answer; half as many tasks are created.
    #[arg(long, default_value_t = 10_000)]
    agents: usize,
    /// Offer timeout of the started hub, in seconds.
    #[arg(long, default_value_t = 2.0)]
    offer_timeout: f64,
    /// HTTP connections creating the tasks.
    #[arg(long, default_value_t = 16)]
    http_conns: usize,
    /// Agents logging in at once.
    #[arg(long, default_value_t = 128)]
    connect_concurrency: usize,
}

#[derive(Clone, Copy, ValueEnum)]
enum DropArg {
    /// TCP reset (SO_LINGER 0), no websocket close frame.
    Rst,
    /// TCP close (FIN), no websocket close frame.
    Fin,
    /// Websocket close handshake.
    Close,
    /// Leave the old socket open and unread: the reconnect takes it over.
    Stale,
}

#[derive(Args)]
struct ReconnectArgs {
    #[command(flatten)]
    hub: HubArgs,
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Agents; each is offered one task.
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Share of the agents that accept their offer before the drop (Busy, the task In
    /// Progress); the rest hold it pending (Reserved).
    #[arg(long, default_value_t = 0.5)]
    busy_share: f64,
    /// How the sockets go away.
    #[arg(long, value_enum, default_value = "rst")]
    drop: DropArg,
    /// Drop in this many waves (agent i in wave i % waves).
    #[arg(long, default_value_t = 1)]
    waves: usize,
    /// Seconds between two waves.
    #[arg(long, default_value_t = 0.25)]
    wave_gap: f64,
    /// Seconds between an agent's drop and its reconnect (0 for at once).
    #[arg(long, default_value_t = 0.5)]
    pause: f64,
    /// routing.reconnect_grace_secs of the started hub(s).
    #[arg(long, default_value_t = 10.0)]
    grace: f64,
    /// Offer timeout of the started hub(s), in seconds: long, so that no offer expires
    /// during the run.
    #[arg(long, default_value_t = 120.0)]
    offer_timeout: f64,
    /// HTTP connections creating the tasks.
    #[arg(long, default_value_t = 8)]
    http_conns: usize,
    /// Agents logging in at once (reconnects are not gated).
    #[arg(long, default_value_t = 128)]
    connect_concurrency: usize,
}

#[derive(Args)]
struct NodelossArgs {
    #[command(flatten)]
    hub: HubArgs,
    #[command(flatten)]
    common: Common,
    /// Agents, spread over the nodes round-robin; node 1's each hold one offer.
    #[arg(long, default_value_t = 400)]
    agents: usize,
    /// Hub nodes (at least 2), sharing a Redis of the run's own.
    #[arg(long, default_value_t = 2)]
    nodes: usize,
    /// Start a redis-server of the run's own shared by the nodes (required: the
    /// nodes learn of a lost node through it).
    #[arg(long)]
    redis: bool,
    /// The redis-server binary.
    #[arg(long, default_value = "redis-server")]
    redis_bin: PathBuf,
    /// Offer timeout of the started hubs, in seconds: long, so that no offer expires.
    #[arg(long, default_value_t = 120.0)]
    offer_timeout: f64,
    /// Seconds after the kill to wait for the re-offers.
    #[arg(long, default_value_t = 30.0)]
    limit: f64,
    /// Agents logging in at once.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
}

#[derive(Args)]
struct IdleArgs {
    #[command(flatten)]
    hub: HubArgs,
    #[command(flatten)]
    common: Common,
    /// Connections (agents on the hub, then plain sockets on the echo floor).
    #[arg(long, default_value_t = 10_000)]
    conns: usize,
    /// Seconds of heartbeats once all are connected.
    #[arg(long, default_value_t = 15.0)]
    duration: f64,
    /// Seconds between one connection's heartbeats.
    #[arg(long, default_value_t = 5.0)]
    ping_every: f64,
    /// Connections opening at once.
    #[arg(long, default_value_t = 128)]
    connect_concurrency: usize,
    /// The largest hub/floor ratio of RSS per connection that passes.
    #[arg(long, default_value_t = 2.0)]
    max_rss_ratio: f64,
}

#[derive(Args)]
struct SearchArgs {
    /// Customers to create.
    #[arg(long, default_value_t = 1_000_000)]
    customers: usize,
    /// Searches through the index.
    #[arg(long, default_value_t = 2_000)]
    queries: usize,
    /// Of those, how many also through the old linear scan.
    #[arg(long, default_value_t = 40)]
    scans: usize,
}

#[derive(Args)]
struct RestartArgs {
    /// Log records to write.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Customers among them (the rest are saves of those customers).
    #[arg(long, default_value_t = 100_000)]
    customers: u64,
    /// store.snapshot_every.
    #[arg(long, default_value_t = 200_000)]
    snapshot_every: u64,
    /// Commands in flight at once while writing.
    #[arg(long, default_value_t = 512)]
    concurrency: usize,
    /// The data directory to create (default: a fresh one under the temporary
    /// directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the data directory.
    #[arg(long)]
    keep_files: bool,
}

#[derive(Args)]
struct CrashArgs {
    /// kill -9 rounds.
    #[arg(long, default_value_t = 100)]
    rounds: usize,
    /// Agent desktops accepting and completing.
    #[arg(long, default_value_t = 3)]
    agents: usize,
    /// Task creators, and as many customer savers.
    #[arg(long, default_value_t = 2)]
    writers: usize,
    /// The longest load before a kill (each kill lands at a random moment between a
    /// quarter of it and all of it), in milliseconds.
    #[arg(long, default_value_t = 1500)]
    max_load_ms: u64,
    /// store.snapshot_every (small, so that kills land in snapshots too).
    #[arg(long, default_value_t = 500)]
    snapshot_every: u64,
    /// The switchboard binary (default: the release build next to loadtest).
    #[arg(long)]
    hub_bin: Option<PathBuf>,
    /// Keep the run's directory (the data directory and the hub's logs).
    #[arg(long)]
    keep_files: bool,
}

#[derive(Args)]
struct EchoArgs {
    /// A running echo server (loopback); without it one runs in this process.
    #[arg(long)]
    addr: Option<SocketAddr>,
    /// Connections.
    #[arg(long, default_value_t = 200)]
    conns: usize,
    /// Messages per second, over all connections.
    #[arg(long, default_value_t = 2000.0)]
    rate: f64,
    /// Seconds of sending.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Bytes per message.
    #[arg(long, default_value_t = 1200)]
    size: usize,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
struct EchoServerArgs {
    /// Where to listen (loopback).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Seconds to run before exiting.
    #[arg(long, default_value_t = 600)]
    secs: u64,
}

fn delay(ms: f64, d: DistArg) -> Delay {
    match d {
        DistArg::Fixed => Delay::fixed(ms),
        DistArg::Exp => Delay::exp(ms),
    }
}

fn secs(s: f64, what: &str) -> Result<Duration, String> {
    if s.is_finite() && s > 0.0 && s <= 86_400.0 {
        Ok(Duration::from_secs_f64(s))
    } else {
        Err(format!(
            "{what} must be more than 0 and at most 86400 seconds"
        ))
    }
}

fn route_opts(a: &RouteArgs) -> Result<RouteOpts, String> {
    let mut o = RouteOpts::new(a.hub.target()?);
    o.agents = a.agents;
    o.rate = a.rate;
    o.duration = secs(a.duration, "--duration")?;
    if let Some(q) = &a.queues {
        o.queues = q.iter().filter(|s| !s.is_empty()).cloned().collect();
    }
    o.queues_per_agent = a.queues_per_agent;
    o.voice_share = a.voice_share;
    o.email_share = a.email_share;
    o.accept = delay(a.accept_ms, a.accept_dist);
    o.handle = delay(a.handle_ms, a.handle_dist);
    o.miss_share = a.miss_share;
    o.decline_share = a.decline_share;
    o.offer_timeout = secs(a.offer_timeout, "--offer-timeout")?;
    o.capacity = Capacity {
        voice: 1,
        chat: a.chat_capacity,
        email: a.email_capacity,
    };
    o.http_conns = a.http_conns;
    o.drain = a.drain.map(|d| secs(d, "--drain")).transpose()?;
    o.seed = a.seed;
    o.progress = !a.quiet && o.duration >= Duration::from_secs(2);
    o.keep_files = a.keep_files;
    o.close_interactions = a.close_interactions;
    o.stream_reader = a.stream_reader;
    o.webhook_receiver = a.webhook_receiver;
    o.webhook_linger_ms = a.webhook_linger_ms;
    o.stream_linger_ms = a.stream_linger_ms;
    o.customers = a.customers;
    o.customers_present = a.customers_present;
    o.searchers = a.searchers;
    o.searchers_apart = a.searchers_apart;
    o.searcher_queries = match a.searcher_queries {
        QueriesArg::Mixed => loadtest::searchers::Queries::Mixed,
        QueriesArg::Unmatched => loadtest::searchers::Queries::Unmatched,
        QueriesArg::Broad => loadtest::searchers::Queries::Broad,
    };
    o.customer_rate = a.customer_rate;
    o.webhook_types = a
        .webhook_types
        .iter()
        .map(|t| t.trim().to_owned())
        .collect();
    Ok(o)
}

fn fanout_opts(a: &FanoutArgs) -> Result<FanoutOpts, String> {
    let mut o = FanoutOpts::new(a.hub.target()?);
    o.subscribers = a.subscribers;
    o.editors = a.editors;
    o.rate = a.rate;
    o.duration = secs(a.duration, "--duration")?;
    o.send_queue = a.send_queue;
    o.connect_concurrency = a.connect_concurrency;
    o.source_addrs = a.common.source_addrs;
    o.progress = !a.common.quiet;
    o.keep_files = a.common.keep_files;
    Ok(o)
}

fn conflicts_opts(a: &ConflictsArgs) -> Result<ConflictOpts, String> {
    let mut o = ConflictOpts::new(a.hub.target()?);
    o.editors = a.editors;
    o.http_editors = a.http_editors;
    o.watchers = a.watchers;
    o.duration = secs(a.duration, "--duration")?;
    o.source_addrs = a.common.source_addrs;
    o.progress = !a.common.quiet;
    o.keep_files = a.common.keep_files;
    Ok(o)
}

fn expiry_opts(a: &ExpiryArgs) -> Result<ExpiryOpts, String> {
    let mut o = ExpiryOpts::new(a.hub.target()?);
    o.agents = a.agents;
    o.offer_timeout = secs(a.offer_timeout, "--offer-timeout")?;
    o.http_conns = a.http_conns;
    o.connect_concurrency = a.connect_concurrency;
    o.source_addrs = a.common.source_addrs;
    o.progress = !a.common.quiet;
    o.keep_files = a.common.keep_files;
    Ok(o)
}

/// Seconds that may be zero: at least 0, at most a minute.
fn secs_or_zero(s: f64, what: &str) -> Result<Duration, String> {
    if s.is_finite() && (0.0..=60.0).contains(&s) {
        Ok(Duration::from_secs_f64(s))
    } else {
        Err(format!("{what} must be 0 to 60 seconds"))
    }
}

fn reconnect_opts(a: &ReconnectArgs) -> Result<ReconnectOpts, String> {
    let mut o = ReconnectOpts::new(a.hub.target()?);
    o.agents = a.agents;
    o.busy_share = a.busy_share;
    o.drop = match a.drop {
        DropArg::Rst => DropMode::Rst,
        DropArg::Fin => DropMode::Fin,
        DropArg::Close => DropMode::Close,
        DropArg::Stale => DropMode::Stale,
    };
    o.waves = a.waves;
    o.wave_gap = secs_or_zero(a.wave_gap, "--wave-gap")?;
    o.pause = secs_or_zero(a.pause, "--pause")?;
    o.grace = secs(a.grace, "--grace")?;
    o.offer_timeout = secs(a.offer_timeout, "--offer-timeout")?;
    o.http_conns = a.http_conns;
    o.connect_concurrency = a.connect_concurrency;
    o.source_addrs = a.common.source_addrs;
    o.nodes = a.cluster.nodes;
    o.redis = a.cluster.redis;
    o.redis_bin = a.cluster.redis_bin.clone();
    o.snapshot_every = a.cluster.snapshot_every;
    o.progress = !a.common.quiet;
    o.keep_files = a.common.keep_files;
    Ok(o)
}

fn nodeloss_opts(a: &NodelossArgs) -> Result<NodeLossOpts, String> {
    if !a.redis {
        return Err("nodeloss needs --redis: the nodes learn of a lost node through it".into());
    }
    let mut o = NodeLossOpts::new(a.hub.target()?);
    o.agents = a.agents;
    o.nodes = a.nodes;
    o.redis_bin = a.redis_bin.clone();
    o.offer_timeout = secs(a.offer_timeout, "--offer-timeout")?;
    o.limit = secs(a.limit, "--limit")?;
    o.connect_concurrency = a.connect_concurrency;
    o.source_addrs = a.common.source_addrs;
    o.progress = !a.common.quiet;
    o.keep_files = a.common.keep_files;
    Ok(o)
}

fn idle_opts(a: &IdleArgs) -> Result<IdleOpts, String> {
    let mut o = IdleOpts::new(a.hub.target()?);
    o.conns = a.conns;
    o.duration = secs(a.duration, "--duration")?;
    o.ping_every = secs(a.ping_every, "--ping-every")?;
    o.connect_concurrency = a.connect_concurrency;
    o.max_rss_ratio = a.max_rss_ratio;
    o.source_addrs = a.common.source_addrs;
    o.progress = !a.common.quiet;
    o.keep_files = a.common.keep_files;
    Ok(o)
}

/// After a scenario that passed (and unless told not to), the echo floor with the same
/// connections and frames per second, and the hub / floor ratios in the report.
async fn with_floor(result: Result<Report, Failure>, floor: bool) -> Result<Report, Failure> {
    let mut report = result?;
    if !floor {
        return Ok(report);
    }
    loadtest::floor::attach(&mut report, None).await;
    if report.passed() {
        Ok(report)
    } else {
        Err(Failure {
            message: "the echo floor could not be measured".into(),
            report: Some(Box::new(report)),
        })
    }
}

/// Runs a scenario whose options may be refused before it starts.
fn run<O, F>(
    rt: &tokio::runtime::Runtime,
    opts: Result<O, String>,
    common: &Common,
    go: impl FnOnce(O) -> F,
) -> ExitCode
where
    F: std::future::Future<Output = Result<Report, Failure>>,
{
    match opts {
        Ok(o) => finish(
            rt.block_on(with_floor(rt.block_on(go(o)), !common.no_floor)),
            common.json.as_ref(),
        ),
        Err(e) => {
            eprintln!("loadtest: {e}");
            ExitCode::from(2)
        }
    }
}

fn finish(result: Result<Report, Failure>, json: Option<&PathBuf>) -> ExitCode {
    let (report, code) = match &result {
        Ok(r) => (Some(r), ExitCode::SUCCESS),
        Err(f) => (
            f.report.as_deref(),
            ExitCode::from(if f.report.is_some() { 1 } else { 2 }),
        ),
    };
    if let Some(r) = report {
        print!("{}", r.table());
        if let Some(path) = json {
            match serde_json::to_string_pretty(r) {
                Ok(text) => {
                    if let Err(e) = std::fs::write(path, text + "\n") {
                        eprintln!("loadtest: cannot write {}: {e}", path.display());
                        return ExitCode::from(2);
                    }
                }
                Err(e) => {
                    eprintln!("loadtest: cannot encode the report: {e}");
                    return ExitCode::from(2);
                }
            }
        }
    }
    if let Err(f) = &result {
        eprintln!("\nloadtest: FAILED: {f}");
    }
    code
}

fn compare(rt: &tokio::runtime::Runtime, a: CompareArgs) -> ExitCode {
    let opts = match (route_opts(&a.route), secs(a.pause, "--pause")) {
        (Ok(mut route), Ok(pause)) => {
            if a.route.hub.hub.is_some() {
                eprintln!("loadtest: compare starts its own hubs: not with --hub");
                return ExitCode::from(2);
            }
            if a.nodes == 0 || a.nodes > loadtest::cluster::MAX_NODES {
                eprintln!(
                    "loadtest: --nodes must be 1 to {}",
                    loadtest::cluster::MAX_NODES
                );
                return ExitCode::from(2);
            }
            route.redis_bin = a.redis_bin.clone();
            route.snapshot_every = a.snapshot_every;
            CompareOpts {
                route,
                nodes: a.nodes,
                pause,
            }
        }
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("loadtest: {e}");
            return ExitCode::from(2);
        }
    };
    let progress = !a.route.quiet;
    let report = rt.block_on(run_compare(opts, progress));
    for side in [&report.memory, &report.redis] {
        println!("\n=== {} ===", side.label);
        match &side.report {
            Some(r) => print!("{}", r.table()),
            None => println!(
                "not run: {}",
                side.failure.as_deref().unwrap_or("no report")
            ),
        }
    }
    print!("{}", report.table());
    if let Some(path) = &a.route.json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => {
                if let Err(e) = std::fs::write(path, text + "\n") {
                    eprintln!("loadtest: cannot write {}: {e}", path.display());
                    return ExitCode::from(2);
                }
            }
            Err(e) => {
                eprintln!("loadtest: cannot encode the report: {e}");
                return ExitCode::from(2);
            }
        }
    }
    if report.passed() {
        ExitCode::SUCCESS
    } else if report.complete() {
        ExitCode::from(1)
    } else {
        ExitCode::from(2)
    }
}

fn supervise(rt: &tokio::runtime::Runtime, a: SuperviseArgs) -> ExitCode {
    let opts = match (route_opts(&a.route), secs(a.pause, "--pause")) {
        (Ok(route), Ok(pause)) => {
            if a.route.hub.hub.is_some() {
                eprintln!("loadtest: supervise starts its own hubs: not with --hub");
                return ExitCode::from(2);
            }
            if a.supervisors == 0 || a.supervisors > 1000 {
                eprintln!("loadtest: --supervisors must be 1 to 1000");
                return ExitCode::from(2);
            }
            SuperviseOpts {
                route,
                supervisors: a.supervisors,
                pause,
            }
        }
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("loadtest: {e}");
            return ExitCode::from(2);
        }
    };
    let report = rt.block_on(run_supervise(opts, !a.route.quiet));
    for side in [&report.bare, &report.watched] {
        println!("\n=== {} ===", side.label);
        match &side.report {
            Some(r) => print!("{}", r.table()),
            None => println!(
                "not run: {}",
                side.failure.as_deref().unwrap_or("no report")
            ),
        }
    }
    print!("{}", report.table());
    if let Some(path) = &a.route.json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => {
                if let Err(e) = std::fs::write(path, text + "\n") {
                    eprintln!("loadtest: cannot write {}: {e}", path.display());
                    return ExitCode::from(2);
                }
            }
            Err(e) => {
                eprintln!("loadtest: cannot encode the report: {e}");
                return ExitCode::from(2);
            }
        }
    }
    if report.passed() {
        ExitCode::SUCCESS
    } else if report.complete() {
        ExitCode::from(1)
    } else {
        ExitCode::from(2)
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("loadtest: cannot start the runtime: {e}");
            ExitCode::from(2)
        })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(c) => return c,
    };
    match cli.cmd {
        Cmd::Route(RouteCmd {
            route: a,
            cluster,
            no_floor,
            durable,
        }) => {
            let opts = match route_opts(&a) {
                Ok(mut o) => {
                    o.nodes = cluster.nodes;
                    o.redis = cluster.redis;
                    o.redis_bin = cluster.redis_bin;
                    o.snapshot_every = cluster.snapshot_every;
                    o.durable = durable;
                    o
                }
                Err(e) => {
                    eprintln!("loadtest: {e}");
                    return ExitCode::from(2);
                }
            };
            finish(
                rt.block_on(with_floor(rt.block_on(run_route(opts)), !no_floor)),
                a.json.as_ref(),
            )
        }
        Cmd::Compare(a) => compare(&rt, a),
        Cmd::Supervise(a) => supervise(&rt, a),
        Cmd::Smoke(a) => {
            let target = match a.hub.target() {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("loadtest: {e}");
                    return ExitCode::from(2);
                }
            };
            finish(
                rt.block_on(run_route(RouteOpts::smoke(target))),
                a.json.as_ref(),
            )
        }
        Cmd::Fanout(a) => run(&rt, fanout_opts(&a), &a.common, run_fanout),
        Cmd::Conflicts(a) => run(&rt, conflicts_opts(&a), &a.common, run_conflicts),
        Cmd::Expiry(a) => run(&rt, expiry_opts(&a), &a.common, run_expiry),
        Cmd::Reconnect(a) => run(&rt, reconnect_opts(&a), &a.common, run_reconnect),
        Cmd::Nodeloss(a) => match nodeloss_opts(&a) {
            Ok(o) => finish(rt.block_on(run_nodeloss(o)), a.common.json.as_ref()),
            Err(e) => {
                eprintln!("loadtest: {e}");
                ExitCode::from(2)
            }
        },
        Cmd::Idle(a) => run(&rt, idle_opts(&a), &a.common, run_idle),
        Cmd::Echo(a) => {
            let duration = match secs(a.duration, "--duration") {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("loadtest: {e}");
                    return ExitCode::from(2);
                }
            };
            let opts = EchoOpts {
                addr: a.addr,
                conns: a.conns,
                rate: a.rate,
                duration,
                size: a.size,
            };
            finish(rt.block_on(run_echo(opts)), a.json.as_ref())
        }
        Cmd::Search(a) => {
            let opts = loadtest::search::SearchOpts {
                customers: a.customers,
                queries: a.queries,
                scans: a.scans,
            };
            match loadtest::search::run_search(opts) {
                Ok(r) => {
                    print!("{}", r.table());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("search: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Cmd::Restart(a) => {
            let dir = a.dir.clone().unwrap_or_else(|| {
                std::env::temp_dir().join(format!("loadtest-restart-{}", std::process::id()))
            });
            let opts = loadtest::restart::RestartOpts {
                records: a.records,
                customers: a.customers,
                snapshot_every: a.snapshot_every,
                concurrency: a.concurrency,
                dir,
                keep: a.keep_files,
            };
            match rt.block_on(loadtest::restart::run_restart(opts)) {
                Ok(r) => {
                    println!(
                        "restart: {} records written in {:.1} s ({:.0}/s); {} bytes on disk; ready after restart in {} ms at position {}",
                        r.records,
                        r.write.as_secs_f64(),
                        r.records as f64 / r.write.as_secs_f64().max(1e-9),
                        r.disk_bytes,
                        r.ready.as_millis(),
                        r.position
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("loadtest: restart: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Crash(a) => {
            let opts = loadtest::crash::CrashOpts {
                bin: a.hub_bin.clone().unwrap_or_else(default_hub_bin),
                rounds: a.rounds.max(1),
                agents: a.agents,
                writers: a.writers,
                max_load: Duration::from_millis(a.max_load_ms),
                snapshot_every: a.snapshot_every,
                keep: a.keep_files,
            };
            match rt.block_on(loadtest::crash::run_crash(opts)) {
                Ok(r) => {
                    let (cr, ac, co, sv) = r.acks;
                    println!(
                        "crash: {} rounds of kill -9 run; {} acknowledged commands checked after the last restart ({} checks after the restarts between rounds); acknowledged: {cr} creates, {ac} accepts, {co} completes, {sv} customer versions; {} desktops resumed",
                        r.rounds, r.checked, r.checked_per_round, r.resumed
                    );
                    if r.breaches.is_empty() {
                        ExitCode::SUCCESS
                    } else {
                        for b in &r.breaches {
                            eprintln!("crash: BREACH {b}");
                        }
                        eprintln!("crash: the run's directory is kept: {}", r.dir.display());
                        ExitCode::from(1)
                    }
                }
                Err(e) => {
                    eprintln!("loadtest: crash: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Cmd::EchoServer(a) => rt.block_on(async {
            loadtest::raise_nofile_limit();
            match start_echo_server(a.listen).await {
                Ok(s) => {
                    println!("echo server on ws://{}/echo for {} s", s.addr, a.secs);
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(a.secs)) => {}
                        _ = tokio::signal::ctrl_c() => {}
                    }
                    s.stop();
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("loadtest: cannot start the echo server: {e}");
                    ExitCode::from(2)
                }
            }
        }),
    }
}
