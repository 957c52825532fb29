//! The load of a `route` run: the open-loop create schedule, the progress line, the
//! drain after the last create, and the CPU the hub, its Redis and the harness spent
//! over both.

use super::{H_HTTP_CREATE, H_SCHEDULE_LAG, RouteOpts, Run};
use crate::cluster::{Cluster, wait_for};
use crate::httpc::{HttpClient, created_task_id};
use crate::hubproc;
use crate::report::Failure;
use crate::rng::Rng;
use crate::shared::{Counters, Shared};
use crate::stats::HistSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the task creators produced.
#[derive(Default)]
pub(super) struct GenOutcome {
    /// The tasks created, by seq: (seq, task id).
    pub(super) created: Vec<(u64, String)>,
    /// The first few create errors.
    pub(super) errors: Vec<String>,
    /// [`H_HTTP_CREATE`] and [`H_SCHEDULE_LAG`].
    pub(super) hists: HistSet,
    /// When the first create was sent ([`Shared::now_ns`]).
    pub(super) first_send_ns: Option<u64>,
    /// When the last create was sent.
    pub(super) last_send_ns: u64,
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

/// The progress line of `--progress`, printed from the first create to the end.
pub(super) struct Progress {
    stop_tx: watch::Sender<bool>,
    prog: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts printing, when the options ask for it.
    pub(super) fn start(run: &Run<'_>) -> Progress {
        let (stop_tx, stop_rx) = watch::channel(false);
        let prog = run
            .opts
            .progress
            .then(|| tokio::spawn(progress(run.shared.clone(), stop_rx, run.total)));
        Progress { stop_tx, prog }
    }

    /// Tells the printer to stop, without waiting for it.
    pub(super) fn halt(&self) {
        let _ = self.stop_tx.send(true);
    }

    /// Stops the printer and waits for its last line.
    pub(super) async fn end(self) {
        self.halt();
        if let Some(p) = self.prog {
            let _ = p.await;
        }
    }
}

/// What the creates gave: the creators' outcomes merged, and the creators that failed.
pub(super) struct Creates {
    /// The creators' outcomes merged; `created` sorted by seq.
    pub(super) out: GenOutcome,
    /// A creator task that failed, each.
    pub(super) failures: Vec<String>,
}

impl Creates {
    /// How many tasks were created.
    pub(super) fn created(&self) -> u64 {
        self.out.created.len() as u64
    }
}

/// The load: open loop, `http_conns` creators sharing one schedule, until the last
/// create is answered.
pub(super) async fn create_all(run: &Run<'_>) -> Creates {
    let opts_arc = Arc::new(run.opts.clone());
    let next = Arc::new(AtomicU64::new(0));
    let start = tokio::time::Instant::now() + Duration::from_millis(10);
    let creators: Vec<_> = (0..run.opts.http_conns.max(1))
        .map(|_| {
            tokio::spawn(creator(
                run.addrs.clone(),
                run.integration.clone(),
                opts_arc.clone(),
                run.shared.clone(),
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
    Creates {
        out: gen_out,
        failures: gen_failures,
    }
}

/// How the drain ended.
pub(super) struct Drain {
    /// How long the drain waited for the next completion.
    pub(super) stall: Duration,
    /// When a task last completed during the drain.
    pub(super) last_change: Instant,
    /// Every created task completed.
    pub(super) drained: bool,
    /// From the last create to the drain's end, seconds.
    pub(super) secs: f64,
    /// Tasks in the agents' hands when the drain ended.
    pub(super) held: u64,
    /// Offers pending when the drain ended.
    pub(super) offered: u64,
    /// Tasks completed when the drain ended.
    pub(super) completed: u64,
}

/// Drain: lets the agents finish what was created, while they make progress (a task
/// completed within [`RouteOpts::drain_stall`]), for at most [`RouteOpts::drain_cap`].
/// `Err` when the hub died meanwhile.
pub(super) async fn drain(
    run: &Run<'_>,
    hub: &mut Cluster,
    created: u64,
) -> Result<Drain, Failure> {
    let (opts, c) = (run.opts, &run.shared.counters);
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
    // The hub died: the caller closes the agents.
    drained?;
    let drained = Counters::get(&c.completed) >= created;
    let completed_at_drain = Counters::get(&c.completed);
    Ok(Drain {
        stall,
        last_change,
        drained,
        secs: drain_secs,
        held: held_at_drain,
        offered: offered_at_drain,
        completed: completed_at_drain,
    })
}

/// The CPU seconds of the hub's nodes, its Redis and the harness, read before the load.
pub(super) struct CpuMark {
    node_cpu_before: Vec<Option<f64>>,
    redis_cpu_before: Option<f64>,
    harness_cpu_before: f64,
}

/// The CPU spent from a [`CpuMark`] to the drain's end.
pub(super) struct CpuLoad {
    /// From the first create to the drain's end, seconds.
    pub(super) load_secs: f64,
    /// Each node's CPU seconds (`None` where one cannot be read).
    pub(super) node_cpu_load: Vec<Option<f64>>,
    /// The nodes' CPU seconds in all, when every node's can be read.
    pub(super) hub_cpu_load: Option<f64>,
    /// The Redis's CPU seconds.
    pub(super) redis_cpu_load: Option<f64>,
    /// The harness's CPU seconds.
    pub(super) harness_cpu_load: f64,
}

impl CpuMark {
    /// Reads the CPU seconds so far.
    pub(super) fn take(hub: &Cluster) -> CpuMark {
        let node_cpu_before = hub.node_cpu();
        let redis_cpu_before = hub.redis_cpu();
        let harness_cpu_before = hubproc::self_cpu_secs();
        CpuMark {
            node_cpu_before,
            redis_cpu_before,
            harness_cpu_before,
        }
    }

    /// The CPU spent since the mark, and the wall time since the first create
    /// (`first_send_ns`).
    pub(super) fn load(
        &self,
        hub: &Cluster,
        shared: &Shared,
        first_send_ns: Option<u64>,
    ) -> CpuLoad {
        let load_secs = shared.now_ns().saturating_sub(first_send_ns.unwrap_or(0)) as f64 / 1e9;
        let node_cpu_load: Vec<Option<f64>> = hub
            .node_cpu()
            .into_iter()
            .zip(&self.node_cpu_before)
            .map(|(now, before)| Some(now? - (*before)?))
            .collect();
        let hub_cpu_load = if node_cpu_load.is_empty() || node_cpu_load.iter().any(Option::is_none)
        {
            None
        } else {
            Some(node_cpu_load.iter().flatten().sum::<f64>())
        };
        let redis_cpu_load = hub
            .redis_cpu()
            .zip(self.redis_cpu_before)
            .map(|(now, before)| now - before);
        let harness_cpu_load = hubproc::self_cpu_secs() - self.harness_cpu_before;
        CpuLoad {
            load_secs,
            node_cpu_load,
            hub_cpu_load,
            redis_cpu_load,
            harness_cpu_load,
        }
    }
}
