//! What a run reports: figures, latencies, the invariants checked, and the accounting
//! of every task; as a table for people and as JSON for tools.

use crate::stats::LatencySummary;
use serde::Serialize;
use std::fmt::Write as _;

/// One invariant and whether it held.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// Whether it held.
    pub passed: bool,
    /// How much was checked, or what broke (the first few cases).
    pub detail: String,
}

impl Check {
    /// A check from a list of breaches: it passes when the list is empty.
    pub fn from_breaches(name: &str, checked: String, breaches: &[String]) -> Check {
        let detail = if breaches.is_empty() {
            checked
        } else {
            let mut d = format!("{} breach(es); {checked}", breaches.len());
            for b in breaches.iter().take(5) {
                d.push_str("\n      - ");
                d.push_str(b);
            }
            if breaches.len() > 5 {
                let _ = write!(d, "\n      - ... and {} more", breaches.len() - 5);
            }
            d
        };
        Check {
            name: name.to_owned(),
            passed: breaches.is_empty(),
            detail,
        }
    }
}

/// One named figure of a scenario (a count, a rate, a size, a ratio).
#[derive(Clone, Debug, Serialize)]
pub struct Figure {
    /// What it is.
    pub name: String,
    /// Its value.
    pub value: f64,
    /// Its unit (`""` for a plain count).
    pub unit: String,
}

impl Figure {
    /// A figure.
    pub fn new(name: impl Into<String>, value: f64, unit: &str) -> Figure {
        Figure {
            name: name.into(),
            value,
            unit: unit.to_owned(),
        }
    }

    /// The value as the table shows it: integers without decimals.
    pub fn shown(&self) -> String {
        let v = self.value;
        if !v.is_finite() {
            format!("{v}")
        } else if v.fract() == 0.0 && v.abs() < 1e15 {
            format!("{v:.0}")
        } else if v.abs() >= 100.0 {
            format!("{v:.1}")
        } else if v.abs() >= 1.0 {
            format!("{v:.2}")
        } else {
            format!("{v:.4}")
        }
    }
}

/// Where every created task was at the end, per `GET /v1/tasks/{id}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Accounting {
    /// Tasks looked up.
    pub looked_up: u64,
    /// Completed.
    pub completed: u64,
    /// Cancelled.
    pub cancelled: u64,
    /// Still waiting in a queue.
    pub queued: u64,
    /// Still offered.
    pub offered: u64,
    /// Still assigned.
    pub assigned: u64,
    /// Unknown to the hub (404).
    pub missing: u64,
    /// Whose state disagrees with what the agents saw.
    pub mismatched: u64,
    /// Whose lookup failed.
    pub unreadable: u64,
}

/// Counts of what happened.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Counts {
    /// Tasks created (201).
    pub created: u64,
    /// Creates that failed.
    pub create_errors: u64,
    /// Offer frames received.
    pub offers: u64,
    /// First offers (a task's offer #1).
    pub first_offers: u64,
    /// Accepts answered with the task.
    pub accepted: u64,
    /// Declines answered.
    pub declined: u64,
    /// `offer_ended` expired frames.
    pub expired: u64,
    /// Accepts or declines refused because the offer had ended.
    pub refused: u64,
    /// Completes answered.
    pub completed: u64,
    /// Frames agents received.
    pub frames_in: u64,
    /// Unexpected errors and frames.
    pub unexpected: u64,
}

/// A run's report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The scenario.
    pub scenario: String,
    /// Its parameters, as given.
    pub params: serde_json::Value,
    /// The hub: `spawned <bin> on <addr>` or `external <addr>`.
    pub hub: String,
    /// The scenario's own figures, in the order the table shows them (the scenarios
    /// other than `route` and `echo` report through these).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub figures: Vec<Figure>,
    /// Seconds from the first create to the last complete (other scenarios: the
    /// measured window).
    pub elapsed_secs: f64,
    /// Seconds the creates took (the load window).
    pub create_window_secs: f64,
    /// Counts.
    #[serde(skip_serializing_if = "is_default")]
    pub counts: Counts,
    /// Creates per second achieved.
    pub create_rate: f64,
    /// Tasks completed per second, first create to last complete.
    pub throughput: f64,
    /// Tasks completed per second over the whole seconds of the load window after a
    /// warm-up (the answer and hold times): the sustained rate. `None` when the window
    /// is too short.
    pub throughput_steady: Option<f64>,
    /// Frames the clients received, by type.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub frame_types: std::collections::BTreeMap<String, crate::agent::FrameStat>,
    /// Completions in each second from the first create on.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub completion_timeline: Vec<u64>,
    /// The slowest create -> first offer (µs) of the tasks created in each second from
    /// the first create on.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub c2o_max_us_by_second: Vec<u64>,
    /// How many create -> first offer of the tasks created in each second took over 1 ms.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub c2o_over_1ms_by_second: Vec<u64>,
    /// Latencies, in microseconds.
    pub latencies: Vec<LatencySummary>,
    /// Invariants.
    pub checks: Vec<Check>,
    /// Where every task was at the end.
    #[serde(skip_serializing_if = "is_default")]
    pub accounting: Accounting,
    /// CPU seconds the spawned hub used, start to end.
    pub hub_cpu_secs: Option<f64>,
    /// CPU seconds the spawned hub used from the first create to the end of the drain.
    pub hub_cpu_load_secs: Option<f64>,
    /// CPU seconds this harness used during the run.
    pub harness_cpu_secs: f64,
    /// Things worth knowing that are not failures.
    pub notes: Vec<String>,
    /// What the hub did, for the echo floor run after it ([`crate::floor::attach`]).
    #[serde(skip)]
    pub floor_basis: Option<crate::floor::Basis>,
}

fn is_default<T: Default + PartialEq>(t: &T) -> bool {
    *t == T::default()
}

impl Report {
    /// An empty report of a scenario that reports through [`Report::figures`].
    pub fn new(scenario: &str, params: serde_json::Value, hub: String) -> Report {
        Report {
            scenario: scenario.to_owned(),
            params,
            hub,
            figures: Vec::new(),
            elapsed_secs: 0.0,
            create_window_secs: 0.0,
            counts: Counts::default(),
            create_rate: 0.0,
            throughput: 0.0,
            throughput_steady: None,
            frame_types: Default::default(),
            completion_timeline: Vec::new(),
            c2o_max_us_by_second: Vec::new(),
            c2o_over_1ms_by_second: Vec::new(),
            latencies: Vec::new(),
            checks: Vec::new(),
            accounting: Accounting::default(),
            hub_cpu_secs: None,
            hub_cpu_load_secs: None,
            harness_cpu_secs: 0.0,
            notes: Vec::new(),
            floor_basis: None,
        }
    }

    /// Adds a figure.
    pub fn figure(&mut self, name: impl Into<String>, value: f64, unit: &str) {
        self.figures.push(Figure::new(name, value, unit));
    }

    /// Whether every check held.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }

    /// The checks that failed.
    pub fn failed_checks(&self) -> Vec<&Check> {
        self.checks.iter().filter(|c| !c.passed).collect()
    }

    /// The report as a table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let c = &self.counts;
        let _ = writeln!(s, "loadtest {}: {}", self.scenario, self.params);
        let _ = writeln!(s, "hub: {}", self.hub);
        let route = matches!(self.scenario.as_str(), "route" | "smoke");
        if !self.figures.is_empty() {
            let width = self
                .figures
                .iter()
                .map(|f| f.name.chars().count())
                .max()
                .unwrap_or(0);
            for f in &self.figures {
                let _ = writeln!(s, "{:<width$}  {:>14} {}", f.name, f.shown(), f.unit);
            }
        }
        if route {
            let _ = writeln!(
                s,
                "tasks:   created {} ({:.1}/s over {:.2} s), create errors {}, completed {}",
                c.created, self.create_rate, self.create_window_secs, c.create_errors, c.completed
            );
            let _ = writeln!(
                s,
                "offers:  {} ({} first), accepted {}, declined {}, expired {}, refused {}",
                c.offers, c.first_offers, c.accepted, c.declined, c.expired, c.refused
            );
            let _ = writeln!(
                s,
                "throughput: {:.1} tasks completed/s ({} in {:.2} s, first create to last complete){}; {} frames received",
                self.throughput,
                c.completed,
                self.elapsed_secs,
                match self.throughput_steady {
                    Some(t) => format!(", sustained {t:.1}/s"),
                    None => String::new(),
                },
                c.frames_in
            );
        } else if self.scenario == "echo" {
            let _ = writeln!(
                s,
                "messages: sent {} ({:.1}/s), echoed {}",
                c.created, self.create_rate, c.completed
            );
        }
        let _ = writeln!(
            s,
            "\n{:<26} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "latency (µs)", "count", "p50", "p90", "p99", "p99.9", "max", "mean"
        );
        for l in self.latencies.iter().filter(|l| l.count > 0) {
            let _ = writeln!(
                s,
                "{:<26} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9.0}",
                l.name, l.count, l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.max_us, l.mean_us
            );
        }
        if !self.frame_types.is_empty() {
            let _ = writeln!(
                s,
                "\n{:<26} {:>8} {:>9} {:>9} {:>12}",
                "frames received", "count", "avg B", "max B", "total KiB"
            );
            for (t, st) in &self.frame_types {
                let _ = writeln!(
                    s,
                    "{:<26} {:>8} {:>9} {:>9} {:>12}",
                    t,
                    st.count,
                    st.bytes / st.count.max(1),
                    st.max_bytes,
                    st.bytes / 1024
                );
            }
        }
        let a = &self.accounting;
        if route {
            let _ = writeln!(
                s,
                "\naccounting (GET /v1/tasks/{{id}} for {} tasks): completed {}, cancelled {}, queued {}, offered {}, assigned {}, missing {}, mismatched {}, unreadable {}",
                a.looked_up,
                a.completed,
                a.cancelled,
                a.queued,
                a.offered,
                a.assigned,
                a.missing,
                a.mismatched,
                a.unreadable
            );
        }
        let _ = writeln!(s, "\nchecks:");
        for ch in &self.checks {
            let _ = writeln!(
                s,
                "  [{}] {}: {}",
                if ch.passed { " ok " } else { "FAIL" },
                ch.name,
                ch.detail
            );
        }
        if !self.notes.is_empty() {
            let _ = writeln!(s, "\nnotes:");
            for n in &self.notes {
                let _ = writeln!(s, "  - {n}");
            }
        }
        let failed = self.failed_checks().len();
        if failed == 0 {
            let _ = writeln!(s, "\nRESULT: PASS ({} checks held)", self.checks.len());
        } else {
            let _ = writeln!(
                s,
                "\nRESULT: FAIL ({failed} of {} checks broken)",
                self.checks.len()
            );
        }
        s
    }
}

/// A run that did not pass: a broken invariant (with the report), or a run that could
/// not be carried out.
#[derive(Debug)]
pub struct Failure {
    /// What went wrong.
    pub message: String,
    /// The report, when the run got far enough to make one.
    pub report: Option<Box<Report>>,
}

impl Failure {
    /// A failure with no report.
    pub fn new(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            report: None,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)?;
        if let Some(r) = &self.report {
            for c in r.failed_checks() {
                write!(f, "\n  FAIL {}: {}", c.name, c.detail)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for Failure {}
