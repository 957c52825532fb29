//! The report of a finished `route` run: what the phases left ([`Seen`]), the figures
//! taken from it ([`Measures`]), the notes on the load's cost, and the report itself.

use super::agents::{Login, Quiesced};
use super::checks::{Verdict, verdict};
use super::load::{CpuLoad, Creates, Drain};
use super::side::CustomerOutcome;
use super::{H_HTTP_CREATE, H_SCHEDULE_LAG, Run, sustained};
use crate::agent::{
    self, AgentOutcome, H_ACCEPT_RTT, H_COMPLETE_RTT, H_CREATE_TO_OFFER, H_DECLINE_RTT,
};
use crate::checks::Lookup;
use crate::cluster::{Cluster, raise_nofile_limit};
use crate::events::StreamOutcome;
use crate::hubproc;
use crate::report::{Counts, Report};
use crate::shared::Counters;
use crate::stats::{HistSet, LatencySummary};
use crate::supervisor::{self, SupOutcome};
use crate::webhook::HookOutcome;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// What the phases of a run left for its report.
pub(super) struct Seen {
    /// The hub, as the report names it.
    pub(super) hub_desc: String,
    /// How long the customer preload took, seconds (`None`: none).
    pub(super) preload_secs: Option<f64>,
    /// How the login went.
    pub(super) login: Login,
    /// What the creates gave.
    pub(super) creates: Creates,
    /// What the searchers and the customer writer did.
    pub(super) customers: CustomerOutcome,
    /// How the drain ended.
    pub(super) drain: Drain,
    /// The CPU spent over the load and the drain.
    pub(super) cpu: CpuLoad,
    /// What each supervisor console saw.
    pub(super) sup_outs: Vec<SupOutcome>,
    /// How the quiesce went.
    pub(super) quiesced: Quiesced,
    /// Where the hub says each created task is, by task id.
    pub(super) lookups: HashMap<String, Lookup>,
    /// What each agent saw.
    pub(super) outcomes: Vec<AgentOutcome>,
    /// Why an agent's outcome is missing, each.
    pub(super) lost: Vec<String>,
    /// What the stream reader read, when it ran.
    pub(super) stream: Option<StreamOutcome>,
    /// What the webhook endpoint received, when it ran.
    pub(super) hook: Option<HookOutcome>,
}

/// The figures of a run: every histogram merged, the counts, the timelines.
pub(super) struct Measures {
    /// Every actor's histograms, merged.
    pub(super) hists: HistSet,
    /// Counts of what happened.
    pub(super) counts: Counts,
    /// Tasks created.
    pub(super) created: u64,
    /// First offers timed from their create.
    pub(super) linked: u64,
    /// From the first create to the last completion, seconds.
    pub(super) elapsed_secs: f64,
    /// From the first create to the last, seconds.
    pub(super) window_secs: f64,
    /// Completions per second from the first create to the last completion.
    pub(super) completion_timeline: Vec<u64>,
    /// Create -> offer, the largest by second of the load window (µs).
    pub(super) c2o_max_us_by_second: Vec<u64>,
    /// Create -> offer over 1 ms, how many by second of the load window.
    pub(super) c2o_over_1ms_by_second: Vec<u64>,
    /// Completions per second over the whole seconds of the load window after a warm-up.
    pub(super) steady: Option<f64>,
    /// The latency table, in the report's order.
    pub(super) latencies: Vec<LatencySummary>,
    /// Frames the agents received, by type.
    pub(super) frame_types: std::collections::BTreeMap<String, agent::FrameStat>,
}

/// Takes the figures of a finished run from what its phases left.
fn measure(run: &Run<'_>, seen: &Seen) -> Measures {
    let (opts, shared, timeline_secs) = (run.opts, &run.shared, run.timeline_secs);
    let c = &shared.counters;
    let Seen {
        creates,
        stream,
        hook,
        outcomes,
        sup_outs,
        ..
    } = seen;
    let gen_out = &creates.out;
    let created = creates.created();
    let mut hists = HistSet::default();
    hists.merge(&gen_out.hists);
    if let Some(s) = stream {
        hists.merge(&s.hists);
    }
    if let Some(h) = hook {
        hists.merge(&h.hists);
    }
    for o in outcomes {
        hists.merge(&o.hists);
    }
    for o in sup_outs {
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
    let mut frame_types: std::collections::BTreeMap<String, agent::FrameStat> = Default::default();
    for o in outcomes {
        for (t, st) in &o.frame_types {
            frame_types.entry(t.clone()).or_default().merge(st);
        }
    }
    Measures {
        hists,
        counts,
        created,
        linked,
        elapsed_secs,
        window_secs,
        completion_timeline,
        c2o_max_us_by_second,
        c2o_over_1ms_by_second,
        steady,
        latencies,
        frame_types,
    }
}

/// The notes on what the load cost: the CPU of the harness, the hub (by node) and its
/// Redis, whether the rate was sustained, and the open-file limit.
fn cost_notes(run: &Run<'_>, hub: &Cluster, seen: &Seen, m: &Measures, notes: &mut Vec<String>) {
    let (opts, total) = (run.opts, run.total);
    let (created, window_secs, elapsed_secs, steady) =
        (m.created, m.window_secs, m.elapsed_secs, m.steady);
    let CpuLoad {
        load_secs,
        node_cpu_load,
        hub_cpu_load,
        redis_cpu_load,
        harness_cpu_load,
    } = &seen.cpu;
    let (load_secs, hub_cpu_load, redis_cpu_load, harness_cpu_load) = (
        *load_secs,
        *hub_cpu_load,
        *redis_cpu_load,
        *harness_cpu_load,
    );
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
        notes.push(format!("hub CPU by node: {}", hub.per_node(node_cpu_load)));
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
}

/// What the echo floor is set against (when the hub's CPU could be read).
fn floor_basis(run: &Run<'_>, seen: &Seen, m: &Measures) -> Option<crate::floor::Basis> {
    let opts = run.opts;
    let (frame_types, counts, created, latencies) =
        (&m.frame_types, &m.counts, m.created, &m.latencies);
    let (hub_cpu_load, load_secs) = (seen.cpu.hub_cpu_load, seen.cpu.load_secs);
    let (hook, rss_per_agent) = (&seen.hook, seen.login.rss_per_agent);
    // What the echo floor is set against: every websocket frame the agents read, the
    // requests they sent, and each HTTP create and its response.
    hub_cpu_load.map(|cpu| {
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
    })
}

/// The report of a finished run: its figures, its checks in order, and the notes.
pub(super) fn report(run: &Run<'_>, hub: &Cluster, seen: Seen) -> Report {
    let opts = run.opts;
    let mut m = measure(run, &seen);
    let Verdict {
        checks,
        mut notes,
        figures,
        accounting,
    } = verdict(run, &seen, &mut m);
    cost_notes(run, hub, &seen, &m, &mut notes);
    let floor_basis = floor_basis(run, &seen, &m);
    let Measures {
        counts,
        created,
        elapsed_secs,
        window_secs,
        completion_timeline,
        c2o_max_us_by_second,
        c2o_over_1ms_by_second,
        steady,
        latencies,
        frame_types,
        ..
    } = m;
    let (hub_desc, hub_cpu_load) = (seen.hub_desc, seen.cpu.hub_cpu_load);
    let cpu_at_start = run.cpu_at_start;
    let preload_secs = seen.preload_secs;
    let CustomerOutcome {
        search_outs,
        searchers_lost,
        writer_out,
        search_rate,
        why_rate,
    } = seen.customers;
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
    report
}
