//! The statistics in `/metrics`: counters and histograms per queue since the
//! statistics began (never reset at midnight; Prometheus computes rates and windows
//! from them), and gauges of what is true now.
//!
//! They come from the replicated fold, so in a Redis cluster every node reports the
//! cluster's totals, the same on each: aggregate across nodes with `max by (queue)`,
//! not `sum` (README, "Metrics").

use super::{HANDLE_BUCKETS, SOA_BUCKETS, STATUSES, Statistics, Totals};
use crate::routing::Book;
use std::fmt::Write;

/// A label value with `\`, `"` and newlines escaped, as the text format wants.
fn label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

type Pick = fn(&Totals) -> u64;

const COUNTERS: [(&str, &str, Pick); 13] = [
    (
        "switchboard_queue_tasks_offered_total",
        "Tasks that entered the queue (created, transferred or overflowed into it).",
        |t| t.counts.offered,
    ),
    (
        "switchboard_queue_tasks_answered_total",
        "Tasks answered from the queue.",
        |t| t.counts.answered,
    ),
    (
        "switchboard_queue_tasks_answered_within_threshold_total",
        "Tasks answered within the queue's service-level threshold.",
        |t| t.counts.answered_within,
    ),
    (
        "switchboard_queue_tasks_abandoned_total",
        "Tasks cancelled while waiting or ringing (short abandons included).",
        |t| t.counts.abandoned,
    ),
    (
        "switchboard_queue_tasks_abandoned_short_total",
        "Abandons after a wait under stats.short_abandon_secs.",
        |t| t.counts.abandoned_short,
    ),
    (
        "switchboard_queue_offers_accepted_total",
        "Offers of the queue's tasks accepted.",
        |t| t.counts.accepted,
    ),
    (
        "switchboard_queue_offers_declined_total",
        "Offers of the queue's tasks declined.",
        |t| t.counts.declined,
    ),
    (
        "switchboard_queue_offers_expired_total",
        "Offers of the queue's tasks expired unanswered.",
        |t| t.counts.expired,
    ),
    (
        "switchboard_queue_tasks_requeued_total",
        "Tasks put back in the queue after an offer ended without an accept.",
        |t| t.counts.requeued,
    ),
    (
        "switchboard_queue_transfers_in_total",
        "Transfers into the queue.",
        |t| t.counts.transfers_in,
    ),
    (
        "switchboard_queue_transfers_out_total",
        "Transfers out of the queue.",
        |t| t.counts.transfers_out,
    ),
    (
        "switchboard_queue_wrap_ups_total",
        "Wrap-up periods ended after a task of the queue.",
        |t| t.counts.wrap_ups,
    ),
    (
        "switchboard_queue_wrap_up_seconds_total",
        "Seconds spent in those wrap-ups (microsecond counts, as seconds).",
        |t| t.counts.wrap_sum_us,
    ),
];

fn histogram(
    o: &mut String,
    name: &str,
    help: &str,
    bounds: &[f64],
    rows: &[(String, &[u64], u64, u64)],
) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (q, hist, sum_us, count) in rows {
        let mut cum = 0;
        for (i, b) in bounds.iter().enumerate() {
            cum += hist.get(i).copied().unwrap_or(0);
            let _ = writeln!(o, "{name}_bucket{{queue=\"{q}\",le=\"{b}\"}} {cum}");
        }
        let _ = writeln!(o, "{name}_bucket{{queue=\"{q}\",le=\"+Inf\"}} {count}");
        let _ = writeln!(o, "{name}_sum{{queue=\"{q}\"}} {}", *sum_us as f64 / 1e6);
        let _ = writeln!(o, "{name}_count{{queue=\"{q}\"}} {count}");
    }
}

/// Appends the statistics' metrics to a Prometheus text exposition.
pub fn render(stats: &Statistics, book: &Book, o: &mut String) {
    let empty = Totals::default();
    let queues: Vec<(String, &Totals)> = book
        .queue_ids()
        .into_iter()
        .map(|q| {
            let t = stats.queue_fold(&q).map_or(&empty, |f| &f.totals);
            (label(&q.0), t)
        })
        .collect();
    for (name, help, pick) in COUNTERS {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter");
        for (q, t) in &queues {
            let v = pick(t);
            if name.ends_with("_seconds_total") {
                let _ = writeln!(o, "{name}{{queue=\"{q}\"}} {}", v as f64 / 1e6);
            } else {
                let _ = writeln!(o, "{name}{{queue=\"{q}\"}} {v}");
            }
        }
    }
    let rows: Vec<(String, &[u64], u64, u64)> = queues
        .iter()
        .map(|(q, t)| {
            (
                q.clone(),
                t.soa_hist.as_slice(),
                t.counts.soa_sum_us,
                t.counts.answered,
            )
        })
        .collect();
    histogram(
        o,
        "switchboard_queue_speed_of_answer_seconds",
        "Wait from entering the queue to an agent's answer.",
        &SOA_BUCKETS,
        &rows,
    );
    let rows: Vec<(String, &[u64], u64, u64)> = queues
        .iter()
        .map(|(q, t)| {
            (
                q.clone(),
                t.handle_hist.as_slice(),
                t.counts.handle_sum_us,
                t.counts.handled,
            )
        })
        .collect();
    histogram(
        o,
        "switchboard_queue_handle_seconds",
        "Handle time of completed tasks, from accept to complete.",
        &HANDLE_BUCKETS,
        &rows,
    );
    let now = book.queues_now();
    let _ = writeln!(
        o,
        "# HELP switchboard_queue_agents Agents serving a queue, by status.\n# TYPE switchboard_queue_agents gauge"
    );
    let mut ids: Vec<_> = now.keys().cloned().collect();
    ids.sort();
    for id in &ids {
        let n = &now[id];
        let q = label(&id.0);
        for (i, s) in STATUSES.iter().enumerate() {
            let status = serde_json::to_value(s)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let _ = writeln!(
                o,
                "switchboard_queue_agents{{queue=\"{q}\",status=\"{status}\"}} {}",
                n.agents[i]
            );
        }
    }
    let _ = writeln!(
        o,
        "# HELP switchboard_queue_agents_eligible Agents the router may offer a queue's next task to now.\n# TYPE switchboard_queue_agents_eligible gauge"
    );
    for id in &ids {
        let _ = writeln!(
            o,
            "switchboard_queue_agents_eligible{{queue=\"{}\"}} {}",
            label(&id.0),
            now[id].eligible_ready
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn label_values_are_escaped() {
        assert_eq!(super::label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
