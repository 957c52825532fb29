//! `compare`: the `route` scenario twice in one invocation, with the same load: first
//! on one hub node with its state in memory, then on several nodes sharing a Redis of
//! the run's own (AOF, fsync always), agents and creates spread round-robin over the
//! nodes. Sets create -> offer and throughput side by side, with the ratio.

use crate::report::{Failure, Report};
use crate::route::{RouteOpts, run_route, sustained_of};
use crate::stats::LatencySummary;
use serde::Serialize;
use std::fmt::Write as _;
use std::time::Duration;

/// The `compare` command's options.
#[derive(Clone, Debug)]
pub struct CompareOpts {
    /// The load, run on both sides (its `nodes` and `redis` are set per side).
    pub route: RouteOpts,
    /// Nodes of the second side (at least 1; they share a Redis).
    pub nodes: usize,
    /// The pause between the two runs (sockets of the first close, ports settle).
    pub pause: Duration,
}

/// One side of the comparison.
#[derive(Clone, Debug, Serialize)]
pub struct Side {
    /// `1 node, memory` or `2 nodes + Redis`.
    pub label: String,
    /// Its report, when the run got far enough to make one.
    pub report: Option<Report>,
    /// Why it failed, if it did.
    pub failure: Option<String>,
}

impl Side {
    fn passed(&self) -> bool {
        self.failure.is_none() && self.report.as_ref().is_some_and(Report::passed)
    }
}

/// One line of the side-by-side table.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// What it is.
    pub name: String,
    /// The in-memory side.
    pub memory: Option<f64>,
    /// The Redis side.
    pub redis: Option<f64>,
    /// redis / memory.
    pub ratio: Option<f64>,
    /// The unit.
    pub unit: String,
}

/// Both runs and the table.
#[derive(Clone, Debug, Serialize)]
pub struct CompareReport {
    /// The first run: one node, in memory.
    pub memory: Side,
    /// The second run: several nodes and a Redis.
    pub redis: Side,
    /// The side-by-side figures.
    pub rows: Vec<Row>,
    /// Whether each side sustained the target rate, and why.
    pub sustained: [String; 2],
}

impl CompareReport {
    /// Whether both runs ran and held every check.
    pub fn passed(&self) -> bool {
        self.memory.passed() && self.redis.passed()
    }

    /// Whether both runs got far enough to report.
    pub fn complete(&self) -> bool {
        self.memory.report.is_some() && self.redis.report.is_some()
    }

    /// The comparison as a table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let (a, b) = (&self.memory.label, &self.redis.label);
        let _ = writeln!(
            s,
            "\n=== compare: {a} vs {b}, same load ===\n{:<52} {:>16} {:>16} {:>8}",
            "", a, b, "ratio"
        );
        let show = |v: Option<f64>| match v {
            None => "-".to_owned(),
            Some(v) if v.abs() >= 10.0 => format!("{v:.0}"),
            Some(v) => format!("{v:.2}"),
        };
        for r in &self.rows {
            let name = if r.unit.is_empty() {
                r.name.clone()
            } else {
                format!("{} ({})", r.name, r.unit)
            };
            let _ = writeln!(
                s,
                "{:<52} {:>16} {:>16} {:>8}",
                name,
                show(r.memory),
                show(r.redis),
                r.ratio.map(|x| format!("{x:.2}x")).unwrap_or("-".into())
            );
        }
        let _ = writeln!(s, "\n{a}: {}", self.sustained[0]);
        let _ = writeln!(s, "{b}: {}", self.sustained[1]);
        for side in [&self.memory, &self.redis] {
            let verdict = match (&side.report, &side.failure) {
                (Some(r), None) => format!("PASS ({} checks held)", r.checks.len()),
                (Some(r), Some(f)) => format!(
                    "FAIL ({} of {} checks broken): {f}",
                    r.failed_checks().len(),
                    r.checks.len()
                ),
                (None, Some(f)) => format!("NOT RUN: {f}"),
                (None, None) => "NOT RUN".into(),
            };
            let _ = writeln!(s, "{}: {verdict}", side.label);
        }
        let _ = writeln!(
            s,
            "\nRESULT: {}",
            if self.passed() { "PASS" } else { "FAIL" }
        );
        s
    }
}

pub(crate) fn side(label: String, r: Result<Report, Failure>) -> Side {
    match r {
        Ok(r) => Side {
            label,
            report: Some(r),
            failure: None,
        },
        Err(f) => Side {
            label,
            failure: Some(f.to_string()),
            report: f.report.map(|b| *b),
        },
    }
}

pub(crate) fn lat<'a>(r: &'a Report, name: &str) -> Option<&'a LatencySummary> {
    r.latencies.iter().find(|l| l.name == name && l.count > 0)
}

fn rows(a: Option<&Report>, b: Option<&Report>) -> Vec<Row> {
    type Get = Box<dyn Fn(&Report) -> Option<f64>>;
    let l = |name: &'static str, f: fn(&LatencySummary) -> f64| -> Get {
        Box::new(move |r: &Report| lat(r, name).map(f))
    };
    let c2o = crate::agent::H_CREATE_TO_OFFER;
    let acc = crate::agent::H_ACCEPT_RTT;
    let http = crate::route::H_HTTP_CREATE;
    let per_task =
        |r: &Report, cpu: Option<f64>| cpu.map(|c| 1e6 * c / r.counts.created.max(1) as f64);
    let defs: Vec<(&str, &str, Get)> = vec![
        ("create -> offer p50", "µs", l(c2o, |x| x.p50_us as f64)),
        ("create -> offer p90", "µs", l(c2o, |x| x.p90_us as f64)),
        ("create -> offer p99", "µs", l(c2o, |x| x.p99_us as f64)),
        ("create -> offer p99.9", "µs", l(c2o, |x| x.p999_us as f64)),
        ("create -> offer max", "µs", l(c2o, |x| x.max_us as f64)),
        ("create -> offer mean", "µs", l(c2o, |x| x.mean_us)),
        ("accept -> reply p50", "µs", l(acc, |x| x.p50_us as f64)),
        ("accept -> reply p99", "µs", l(acc, |x| x.p99_us as f64)),
        ("POST /v1/tasks p50", "µs", l(http, |x| x.p50_us as f64)),
        ("POST /v1/tasks p99", "µs", l(http, |x| x.p99_us as f64)),
        (
            "creates achieved",
            "/s",
            Box::new(|r: &Report| Some(r.create_rate)),
        ),
        (
            "throughput, first create -> last complete",
            "tasks/s",
            Box::new(|r: &Report| Some(r.throughput)),
        ),
        (
            "throughput over the load window",
            "tasks/s",
            Box::new(|r: &Report| r.throughput_steady),
        ),
        (
            "hub CPU per task (all nodes)",
            "µs",
            Box::new(move |r: &Report| per_task(r, r.hub_cpu_load_secs)),
        ),
        (
            "redis-server CPU per task",
            "µs",
            Box::new(move |r: &Report| {
                let cpu = r.notes.iter().find_map(|n| {
                    n.strip_prefix("redis-server CPU during load and drain: ")?
                        .split(' ')
                        .next()?
                        .parse::<f64>()
                        .ok()
                });
                per_task(r, cpu)
            }),
        ),
        (
            "harness CPU per task",
            "µs",
            Box::new(move |r: &Report| per_task(r, Some(r.harness_cpu_secs))),
        ),
    ];
    defs.into_iter()
        .map(|(name, unit, get)| {
            let ma = a.and_then(&get);
            let mb = b.and_then(&get);
            Row {
                name: name.into(),
                memory: ma,
                redis: mb,
                ratio: match (ma, mb) {
                    (Some(x), Some(y)) if x > 0.0 => Some(y / x),
                    _ => None,
                },
                unit: unit.into(),
            }
        })
        .collect()
}

/// Runs `route` on one node in memory, then on `nodes` nodes with a Redis, with the
/// same load, and compares them. Both runs always happen (the second even when the
/// first broke a check), so that the table shows what could be measured.
pub async fn run_compare(opts: CompareOpts, progress: bool) -> CompareReport {
    let nodes = opts.nodes.max(1);
    let mem_opts = RouteOpts {
        nodes: 1,
        redis: false,
        ..opts.route.clone()
    };
    let redis_opts = RouteOpts {
        nodes,
        redis: true,
        ..opts.route.clone()
    };
    let a_label = "1 node, memory".to_owned();
    let b_label = format!("{nodes} node{} + Redis", if nodes == 1 { "" } else { "s" });
    if progress {
        eprintln!("compare 1/2: {a_label}");
    }
    let a = side(a_label, run_route(mem_opts).await);
    tokio::time::sleep(opts.pause).await;
    if progress {
        eprintln!("compare 2/2: {b_label}");
    }
    let b = side(b_label, run_route(redis_opts).await);
    let sustained = [&a, &b].map(|s| match &s.report {
        Some(r) => sustained_of(r).1,
        None => "not measured".into(),
    });
    CompareReport {
        rows: rows(a.report.as_ref(), b.report.as_ref()),
        memory: a,
        redis: b,
        sustained,
    }
}
