//! The file store's numbers for `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// fsync latency bucket bounds, in seconds.
const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// Counters kept by the writer and the snapshot builder.
#[derive(Default)]
pub struct FileMetrics {
    appends: AtomicU64,
    fsyncs: AtomicU64,
    largest_batch: AtomicU64,
    fsync_buckets: [AtomicU64; BUCKETS.len()],
    fsync_sum_us: AtomicU64,
    snapshots: AtomicU64,
    snapshot_us: AtomicU64,
    snapshot_bytes: AtomicU64,
    fork_us: AtomicU64,
    rebuilds: AtomicU64,
}

impl FileMetrics {
    /// One group commit: `records` written, then one fsync that took `took`.
    pub fn commit(&self, records: usize, took: Duration) {
        self.appends.fetch_add(records as u64, Relaxed);
        self.fsyncs.fetch_add(1, Relaxed);
        self.largest_batch.fetch_max(records as u64, Relaxed);
        let secs = took.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.fsync_buckets[i].fetch_add(1, Relaxed);
            }
        }
        self.fsync_sum_us
            .fetch_add(took.as_micros() as u64, Relaxed);
    }

    /// Records appended, fsyncs, and the largest batch, so far.
    pub fn totals(&self) -> (u64, u64, u64) {
        (
            self.appends.load(Relaxed),
            self.fsyncs.load(Relaxed),
            self.largest_batch.load(Relaxed),
        )
    }

    /// One snapshot written.
    pub fn snapshot(&self, took: Duration, bytes: u64) {
        self.snapshots.fetch_add(1, Relaxed);
        self.snapshot_us.store(took.as_micros() as u64, Relaxed);
        self.snapshot_bytes.store(bytes, Relaxed);
    }

    /// The applier paused this long to fork the last snapshot's writer.
    pub fn forked(&self, took: Duration) {
        self.fork_us.store(took.as_micros() as u64, Relaxed);
    }

    /// A snapshot built from the log instead of by a forked writer.
    pub fn rebuilt(&self) {
        self.rebuilds.fetch_add(1, Relaxed);
    }

    /// Prometheus text; `disk_bytes` is the data directory's log and snapshot bytes.
    pub fn render(&self, o: &mut String, disk_bytes: u64) {
        let mut line = |name: &str, kind: &str, help: &str, v: String| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        };
        line(
            "switchboard_store_appends_total",
            "counter",
            "Log records appended to the file store.",
            self.appends.load(Relaxed).to_string(),
        );
        line(
            "switchboard_store_fsyncs_total",
            "counter",
            "fsyncs of the file store's log (one per group commit).",
            self.fsyncs.load(Relaxed).to_string(),
        );
        line(
            "switchboard_store_largest_batch",
            "gauge",
            "The most records one group commit carried.",
            self.largest_batch.load(Relaxed).to_string(),
        );
        line(
            "switchboard_store_snapshots_total",
            "counter",
            "Snapshots written by the file store.",
            self.snapshots.load(Relaxed).to_string(),
        );
        line(
            "switchboard_store_snapshot_seconds",
            "gauge",
            "How long the last snapshot took to build and write.",
            format!("{:.6}", self.snapshot_us.load(Relaxed) as f64 / 1e6),
        );
        line(
            "switchboard_store_snapshot_fork_seconds",
            "gauge",
            "How long the log's applier paused to fork the last snapshot's writer (0: none forked yet).",
            format!("{:.6}", self.fork_us.load(Relaxed) as f64 / 1e6),
        );
        line(
            "switchboard_store_snapshot_rebuilds_total",
            "counter",
            "Snapshots built from the log (every record since the last snapshot decided again) because no writer could be forked or the forked one failed: often memory pressure.",
            self.rebuilds.load(Relaxed).to_string(),
        );
        line(
            "switchboard_store_snapshot_bytes",
            "gauge",
            "The size of the last snapshot written.",
            self.snapshot_bytes.load(Relaxed).to_string(),
        );
        line(
            "switchboard_store_disk_bytes",
            "gauge",
            "Bytes of log segments and snapshot in the data directory.",
            disk_bytes.to_string(),
        );
        let name = "switchboard_store_fsync_seconds";
        let _ = writeln!(
            o,
            "# HELP {name} fsync latency of the file store's group commits.\n# TYPE {name} histogram"
        );
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                o,
                "{name}_bucket{{le=\"{b}\"}} {}",
                self.fsync_buckets[i].load(Relaxed)
            );
        }
        let count = self.fsyncs.load(Relaxed);
        let _ = writeln!(o, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            o,
            "{name}_sum {:.6}",
            self.fsync_sum_us.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(o, "{name}_count {count}");
    }
}
