//! Counters and the create -> offer latency histogram, in Prometheus text format.
//!
//! Counters are per node (each node counts what it decided). Gauges (agents by state,
//! queue depth, longest wait) are read from the store at scrape time, so every node
//! reports the same shared picture.

use crate::agent::Status;
use crate::routing::Snapshot;
use crate::state::Stats;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Histogram bucket bounds, in seconds.
const BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The hub's counters.
#[derive(Default)]
pub struct Metrics {
    created: AtomicU64,
    cancelled: AtomicU64,
    completed: AtomicU64,
    offers_made: AtomicU64,
    accepted: AtomicU64,
    declined: AtomicU64,
    expired: AtomicU64,
    ws_refused: AtomicU64,
    slow_consumers: AtomicU64,
    tcp_open: AtomicU64,
    connections_refused: AtomicU64,
    head_timeouts: AtomicU64,
    body_timeouts: AtomicU64,
    protocol_errors: AtomicU64,
    tokens_expired: AtomicU64,
    latency_buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
}

impl Metrics {
    /// Adds one command's counts.
    pub fn record(&self, s: &Stats) {
        for (c, v) in [
            (&self.created, s.created),
            (&self.cancelled, s.cancelled),
            (&self.completed, s.completed),
            (&self.offers_made, s.offers_made),
            (&self.accepted, s.accepted),
            (&self.declined, s.declined),
            (&self.expired, s.expired),
        ] {
            if v > 0 {
                c.fetch_add(v, Relaxed);
            }
        }
        for d in &s.first_offer_latency {
            self.observe_latency(*d);
        }
    }

    fn observe_latency(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.latency_buckets[i].fetch_add(1, Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Relaxed);
        self.latency_sum_us.fetch_add(d.as_micros() as u64, Relaxed);
    }

    /// A websocket upgrade was refused (auth, origin).
    pub fn ws_refused(&self) {
        self.ws_refused.fetch_add(1, Relaxed);
    }

    /// A connection was closed for not reading.
    pub fn slow_consumer(&self) {
        self.slow_consumers.fetch_add(1, Relaxed);
    }

    /// A TCP connection was accepted and counted against the caps.
    pub fn tcp_opened(&self) {
        self.tcp_open.fetch_add(1, Relaxed);
    }

    /// A counted TCP connection closed.
    pub fn tcp_closed(&self) {
        self.tcp_open.fetch_sub(1, Relaxed);
    }

    /// A connection past a cap was refused.
    pub fn connection_refused(&self) {
        self.connections_refused.fetch_add(1, Relaxed);
    }

    /// A connection was closed for not sending a request head in time.
    pub fn head_timeout(&self) {
        self.head_timeouts.fetch_add(1, Relaxed);
    }

    /// A request was answered 408 for not sending its body in time.
    pub fn body_timeout(&self) {
        self.body_timeouts.fetch_add(1, Relaxed);
    }

    /// A websocket was closed for a frame that broke RFC 6455.
    pub fn protocol_error(&self) {
        self.protocol_errors.fetch_add(1, Relaxed);
    }

    /// A websocket session ended at its token's expiry.
    pub fn token_expired(&self) {
        self.tokens_expired.fetch_add(1, Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self, snap: &Snapshot, connections: usize) -> String {
        let mut o = String::with_capacity(4096);
        let counter = |o: &mut String, name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(
                o,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Relaxed)
            );
        };
        counter(
            &mut o,
            "switchboard_tasks_created_total",
            "Tasks created.",
            &self.created,
        );
        counter(
            &mut o,
            "switchboard_tasks_cancelled_total",
            "Tasks cancelled.",
            &self.cancelled,
        );
        counter(
            &mut o,
            "switchboard_tasks_completed_total",
            "Tasks completed.",
            &self.completed,
        );
        counter(
            &mut o,
            "switchboard_offers_made_total",
            "Offers made to agents.",
            &self.offers_made,
        );
        counter(
            &mut o,
            "switchboard_offers_accepted_total",
            "Offers accepted.",
            &self.accepted,
        );
        counter(
            &mut o,
            "switchboard_offers_declined_total",
            "Offers declined.",
            &self.declined,
        );
        counter(
            &mut o,
            "switchboard_offers_expired_total",
            "Offers expired unanswered.",
            &self.expired,
        );
        counter(
            &mut o,
            "switchboard_ws_refused_total",
            "Websocket upgrades refused.",
            &self.ws_refused,
        );
        counter(
            &mut o,
            "switchboard_slow_consumers_total",
            "Connections closed for not reading.",
            &self.slow_consumers,
        );

        let _ = writeln!(
            o,
            "# HELP switchboard_connections Open websocket sessions on this node.\n# TYPE switchboard_connections gauge\nswitchboard_connections {connections}"
        );
        let _ = writeln!(
            o,
            "# HELP switchboard_tcp_connections Open TCP connections on this node (HTTP and websockets), counted against limits.max_connections.\n# TYPE switchboard_tcp_connections gauge\nswitchboard_tcp_connections {}",
            self.tcp_open.load(Relaxed)
        );
        counter(
            &mut o,
            "switchboard_connections_refused_total",
            "Connections refused past limits.max_connections or limits.max_connections_per_ip.",
            &self.connections_refused,
        );
        let _ = writeln!(
            o,
            "# HELP switchboard_request_timeouts_total Connections closed for a request head (phase head, also idle keep-alive) or body (phase body) not received in time.\n# TYPE switchboard_request_timeouts_total counter\nswitchboard_request_timeouts_total{{phase=\"head\"}} {}\nswitchboard_request_timeouts_total{{phase=\"body\"}} {}",
            self.head_timeouts.load(Relaxed),
            self.body_timeouts.load(Relaxed)
        );
        counter(
            &mut o,
            "switchboard_ws_protocol_errors_total",
            "Websockets closed for a frame that broke RFC 6455 (1002, 1007).",
            &self.protocol_errors,
        );
        counter(
            &mut o,
            "switchboard_sessions_token_expired_total",
            "Websocket sessions ended at their token's expiry.",
            &self.tokens_expired,
        );

        let _ = writeln!(
            o,
            "# HELP switchboard_agents Agents by state.\n# TYPE switchboard_agents gauge"
        );
        for st in [
            Status::Offline,
            Status::NotReady,
            Status::Ready,
            Status::Reserved,
            Status::Busy,
            Status::WrapUp,
        ] {
            let n = snap.agents.iter().filter(|a| a.status == st).count();
            let name = serde_json::to_value(st)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let _ = writeln!(o, "switchboard_agents{{state=\"{name}\"}} {n}");
        }
        let _ = writeln!(
            o,
            "# HELP switchboard_queue_waiting Tasks waiting in a queue.\n# TYPE switchboard_queue_waiting gauge"
        );
        for q in &snap.queues {
            let _ = writeln!(
                o,
                "switchboard_queue_waiting{{queue=\"{}\"}} {}",
                q.queue_id, q.waiting
            );
        }
        let _ = writeln!(
            o,
            "# HELP switchboard_queue_longest_wait_seconds Wait of the longest-waiting task.\n# TYPE switchboard_queue_longest_wait_seconds gauge"
        );
        for q in &snap.queues {
            let _ = writeln!(
                o,
                "switchboard_queue_longest_wait_seconds{{queue=\"{}\"}} {}",
                q.queue_id,
                q.longest_wait_ms as f64 / 1000.0
            );
        }
        let _ = writeln!(
            o,
            "# HELP switchboard_queue_offers_pending Offers pending on a queue's tasks.\n# TYPE switchboard_queue_offers_pending gauge"
        );
        for q in &snap.queues {
            let _ = writeln!(
                o,
                "switchboard_queue_offers_pending{{queue=\"{}\"}} {}",
                q.queue_id, q.offers_pending
            );
        }

        let name = "switchboard_create_to_offer_seconds";
        let _ = writeln!(
            o,
            "# HELP {name} Time from task creation to its first offer.\n# TYPE {name} histogram"
        );
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                o,
                "{name}_bucket{{le=\"{b}\"}} {}",
                self.latency_buckets[i].load(Relaxed)
            );
        }
        let count = self.latency_count.load(Relaxed);
        let _ = writeln!(o, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            o,
            "{name}_sum {}",
            self.latency_sum_us.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(o, "{name}_count {count}");
        o
    }
}
