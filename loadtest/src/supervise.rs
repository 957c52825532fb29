//! `supervise`: the statistics' and the supervisor feed's cost. The `route` scenario
//! twice with the same load on one hub node: first with no supervisor connected, then
//! with `M` supervisor consoles (each gets every `agent_changed`, `queue_changed` and
//! the `stats` message). Reports the decision -> supervisor lag (p99 against one
//! second) and the hub's CPU per task of both runs (the rise against 10%), issue 15's
//! figures.

use crate::compare::{Side, lat, side};
use crate::route::{RouteOpts, run_route};
use crate::supervisor::{H_STATS_AGE, H_SUP_LAG};
use serde::Serialize;
use std::fmt::Write as _;
use std::time::Duration;

/// The `supervise` command's options.
#[derive(Clone, Debug)]
pub struct SuperviseOpts {
    /// The load (its `supervisors` is set per run).
    pub route: RouteOpts,
    /// Supervisor consoles of the second run.
    pub supervisors: usize,
    /// The pause between the two runs.
    pub pause: Duration,
}

/// Both runs and the figures.
#[derive(Clone, Debug, Serialize)]
pub struct SuperviseReport {
    /// Without supervisors.
    pub bare: Side,
    /// With them.
    pub watched: Side,
    /// Hub CPU per task without and with, in µs.
    pub cpu_per_task_us: [Option<f64>; 2],
    /// (with - without) / without.
    pub cpu_rise: Option<f64>,
    /// decision -> supervisor p99, in µs.
    pub lag_p99_us: Option<u64>,
    /// The verdict lines.
    pub verdicts: Vec<String>,
}

impl SuperviseReport {
    /// Whether both runs ran and held every check (the targets are reported, not
    /// checked: they are the benchmark's finding).
    pub fn passed(&self) -> bool {
        [&self.bare, &self.watched]
            .iter()
            .all(|s| s.failure.is_none() && s.report.as_ref().is_some_and(|r| r.passed()))
    }

    /// Whether both runs got far enough to report.
    pub fn complete(&self) -> bool {
        self.bare.report.is_some() && self.watched.report.is_some()
    }

    /// The figures as text.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "\n=== supervise: {} vs {} ===",
            self.bare.label, self.watched.label
        );
        let show = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}"));
        let _ = writeln!(
            s,
            "hub CPU per task: {} µs without, {} µs with supervisors ({})",
            show(self.cpu_per_task_us[0]),
            show(self.cpu_per_task_us[1]),
            self.cpu_rise
                .map_or("rise not measured".to_owned(), |r| format!(
                    "{:+.1}%",
                    r * 100.0
                ))
        );
        if let Some(r) = &self.watched.report {
            for name in [H_SUP_LAG, H_STATS_AGE] {
                if let Some(l) = lat(r, name) {
                    let _ = writeln!(
                        s,
                        "{name}: n={} p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                        l.count,
                        l.p50_us as f64 / 1000.0,
                        l.p99_us as f64 / 1000.0,
                        l.max_us as f64 / 1000.0
                    );
                }
            }
        }
        for v in &self.verdicts {
            let _ = writeln!(s, "{v}");
        }
        for side in [&self.bare, &self.watched] {
            let verdict = match (&side.report, &side.failure) {
                (Some(r), None) => format!("PASS ({} checks held)", r.checks.len()),
                (_, Some(f)) => format!("FAIL: {f}"),
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

/// Runs `route` without supervisors, then with `opts.supervisors`, and compares.
pub async fn run_supervise(opts: SuperviseOpts, progress: bool) -> SuperviseReport {
    let bare_opts = RouteOpts {
        supervisors: 0,
        ..opts.route.clone()
    };
    let watched_opts = RouteOpts {
        supervisors: opts.supervisors,
        ..opts.route.clone()
    };
    let a_label = "no supervisors".to_owned();
    let b_label = format!("{} supervisors", opts.supervisors);
    if progress {
        eprintln!("supervise 1/2: {a_label}");
    }
    let bare = side(a_label, run_route(bare_opts).await);
    tokio::time::sleep(opts.pause).await;
    if progress {
        eprintln!("supervise 2/2: {b_label}");
    }
    let watched = side(b_label, run_route(watched_opts).await);
    let per_task = |s: &Side| {
        s.report.as_ref().and_then(|r| {
            r.hub_cpu_load_secs
                .map(|c| 1e6 * c / r.counts.created.max(1) as f64)
        })
    };
    let cpu = [per_task(&bare), per_task(&watched)];
    let cpu_rise = match cpu {
        [Some(a), Some(b)] if a > 0.0 => Some((b - a) / a),
        _ => None,
    };
    let lag_p99_us = watched
        .report
        .as_ref()
        .and_then(|r| lat(r, H_SUP_LAG))
        .map(|l| l.p99_us);
    let mut verdicts = Vec::new();
    verdicts.push(match lag_p99_us {
        Some(p) if p <= 1_000_000 => format!(
            "target met: decision -> supervisor p99 {:.1} ms <= 1000 ms",
            p as f64 / 1000.0
        ),
        Some(p) => format!(
            "target NOT met: decision -> supervisor p99 {:.1} ms > 1000 ms",
            p as f64 / 1000.0
        ),
        None => "decision -> supervisor not measured".into(),
    });
    verdicts.push(match cpu_rise {
        Some(r) if r <= 0.10 => format!("target met: CPU per task rise {:+.1}% <= 10%", r * 100.0),
        Some(r) => format!("target NOT met: CPU per task rise {:+.1}% > 10%", r * 100.0),
        None => "CPU per task rise not measured".into(),
    });
    SuperviseReport {
        bare,
        watched,
        cpu_per_task_us: cpu,
        cpu_rise,
        lag_p99_us,
        verdicts,
    }
}
