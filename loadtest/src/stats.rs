//! Latency histograms (HDR, microseconds) and their summaries.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::time::Duration;

/// The largest latency recorded: longer ones are clamped to it (one hour, in µs).
const MAX_US: u64 = 3_600_000_000;

/// One latency histogram, in microseconds.
#[derive(Clone, Debug)]
pub struct Hist {
    h: Histogram<u64>,
}

impl Default for Hist {
    fn default() -> Self {
        Hist::new()
    }
}

impl Hist {
    /// An empty histogram: 1 µs to one hour, 3 significant digits.
    pub fn new() -> Hist {
        let h = match Histogram::new_with_bounds(1, MAX_US, 3) {
            Ok(h) => h,
            // The bounds are constants that satisfy the crate's rules.
            Err(_) => unreachable!("valid histogram bounds"),
        };
        Hist { h }
    }

    /// Records a duration.
    pub fn record(&mut self, d: Duration) {
        self.record_us(d.as_micros().min(u128::from(MAX_US)) as u64);
    }

    /// Records a value in microseconds.
    pub fn record_us(&mut self, us: u64) {
        self.h.saturating_record(us.clamp(1, MAX_US));
    }

    /// Records the time between two instants given in nanoseconds since the run started.
    pub fn record_ns_span(&mut self, from_ns: u64, to_ns: u64) {
        self.record_us(to_ns.saturating_sub(from_ns) / 1000);
    }

    /// Adds another histogram's counts.
    pub fn merge(&mut self, other: &Hist) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.h.add(&other.h);
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.h.len()
    }

    /// The summary of this histogram under a name.
    pub fn summary(&self, name: &str) -> LatencySummary {
        let q = |p: f64| {
            if self.h.is_empty() {
                0
            } else {
                self.h.value_at_quantile(p)
            }
        };
        LatencySummary {
            name: name.to_owned(),
            count: self.h.len(),
            p50_us: q(0.50),
            p90_us: q(0.90),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: if self.h.is_empty() { 0 } else { self.h.max() },
            mean_us: if self.h.is_empty() {
                0.0
            } else {
                self.h.mean()
            },
        }
    }
}

/// Percentiles of one latency, in microseconds.
#[derive(Clone, Debug, Serialize)]
pub struct LatencySummary {
    /// What was measured.
    pub name: String,
    /// How many samples.
    pub count: u64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest.
    pub max_us: u64,
    /// Mean.
    pub mean_us: f64,
}

/// The latencies one scenario measures, by name, merged across tasks.
#[derive(Clone, Debug, Default)]
pub struct HistSet {
    hists: Vec<(&'static str, Hist)>,
}

impl HistSet {
    /// The histogram under `name`, created on first use.
    pub fn get(&mut self, name: &'static str) -> &mut Hist {
        let i = match self.hists.iter().position(|(n, _)| *n == name) {
            Some(i) => i,
            None => {
                self.hists.push((name, Hist::new()));
                self.hists.len() - 1
            }
        };
        &mut self.hists[i].1
    }

    /// Adds every histogram of `other`.
    pub fn merge(&mut self, other: &HistSet) {
        for (name, h) in &other.hists {
            self.get(name).merge(h);
        }
    }

    /// Summaries in the order given; names never recorded show as empty.
    pub fn summaries(&mut self, order: &[&'static str]) -> Vec<LatencySummary> {
        order.iter().map(|n| self.get(n).summary(n)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_spread() {
        let mut h = Hist::new();
        for us in 1..=1000 {
            h.record_us(us);
        }
        let s = h.summary("x");
        assert_eq!(s.count, 1000);
        assert!((499..=501).contains(&s.p50_us), "{s:?}");
        assert!((989..=991).contains(&s.p99_us), "{s:?}");
        assert_eq!(s.max_us, 1000);
    }

    #[test]
    fn sets_merge_by_name() {
        let mut a = HistSet::default();
        a.get("x").record_us(10);
        let mut b = HistSet::default();
        b.get("x").record_us(20);
        b.get("y").record_us(5);
        a.merge(&b);
        assert_eq!(a.get("x").count(), 2);
        assert_eq!(a.get("y").count(), 1);
    }
}
