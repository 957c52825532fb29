//! Latency histograms (HDR, microseconds) and their summaries.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::time::Duration;

/// The largest latency recorded: longer ones are clamped to it (one hour, in µs).
const MAX_US: u64 = 3_600_000_000;

/// Samples a histogram keeps as a plain list before it allocates its counts: a full
/// histogram is about 190 KB, too much for each of thousands of sockets that record a
/// handful of samples.
const SMALL: usize = 256;

/// One latency histogram, in microseconds. It starts as a short list of samples and
/// becomes an HDR histogram (1 µs to one hour, 3 significant digits) once it holds
/// more, or is merged into.
#[derive(Clone, Debug)]
pub struct Hist {
    h: Option<Histogram<u64>>,
    small: Vec<u64>,
}

fn new_histogram() -> Histogram<u64> {
    match Histogram::new_with_bounds(1, MAX_US, 3) {
        Ok(h) => h,
        // The bounds are constants that satisfy the crate's rules.
        Err(_) => unreachable!("valid histogram bounds"),
    }
}

impl Default for Hist {
    fn default() -> Self {
        Hist::new()
    }
}

impl Hist {
    /// An empty histogram: 1 µs to one hour, 3 significant digits.
    pub fn new() -> Hist {
        Hist {
            h: None,
            small: Vec::new(),
        }
    }

    /// The counts, allocated now if they were not.
    fn full(&mut self) -> &mut Histogram<u64> {
        let small = std::mem::take(&mut self.small);
        self.h.get_or_insert_with(|| {
            let mut h = new_histogram();
            for v in small {
                h.saturating_record(v);
            }
            h
        })
    }

    /// A histogram of everything recorded, for reading.
    fn view(&self) -> std::borrow::Cow<'_, Histogram<u64>> {
        match &self.h {
            Some(h) if self.small.is_empty() => std::borrow::Cow::Borrowed(h),
            _ => {
                let mut h = self.h.clone().unwrap_or_else(new_histogram);
                for v in &self.small {
                    h.saturating_record(*v);
                }
                std::borrow::Cow::Owned(h)
            }
        }
    }

    /// Records a duration.
    pub fn record(&mut self, d: Duration) {
        self.record_us(d.as_micros().min(u128::from(MAX_US)) as u64);
    }

    /// Records a value in microseconds.
    pub fn record_us(&mut self, us: u64) {
        let v = us.clamp(1, MAX_US);
        match &mut self.h {
            Some(h) => h.saturating_record(v),
            None if self.small.len() < SMALL => self.small.push(v),
            None => self.full().saturating_record(v),
        }
    }

    /// Records the time between two instants given in nanoseconds since the run started.
    pub fn record_ns_span(&mut self, from_ns: u64, to_ns: u64) {
        self.record_us(to_ns.saturating_sub(from_ns) / 1000);
    }

    /// Adds another histogram's counts.
    pub fn merge(&mut self, other: &Hist) {
        // Same bounds on both sides: adding cannot fail.
        if self.h.is_none() && other.h.is_none() && self.small.len() + other.small.len() <= SMALL {
            self.small.extend_from_slice(&other.small);
            return;
        }
        let h = self.full();
        if let Some(o) = &other.h {
            let _ = h.add(o);
        }
        for v in &other.small {
            h.saturating_record(*v);
        }
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.h.as_ref().map_or(0, |h| h.len()) + self.small.len() as u64
    }

    /// The summary of this histogram under a name.
    pub fn summary(&self, name: &str) -> LatencySummary {
        let h = self.view();
        let q = |p: f64| {
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(p)
            }
        };
        LatencySummary {
            name: name.to_owned(),
            count: h.len(),
            p50_us: q(0.50),
            p90_us: q(0.90),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: if h.is_empty() { 0 } else { h.max() },
            mean_us: if h.is_empty() { 0.0 } else { h.mean() },
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
    fn small_and_full_histograms_agree() {
        let mut a = Hist::new();
        let mut b = Hist::new();
        for us in 1..=10 {
            a.record_us(us * 100);
        }
        for us in 1..=1000 {
            b.record_us(us);
        }
        assert!(a.h.is_none() && b.h.is_some());
        let sa = a.summary("a");
        assert_eq!((sa.count, sa.max_us), (10, 1000));
        assert!((499..=501).contains(&sa.p50_us), "{sa:?}");
        a.merge(&b);
        let s = a.summary("a");
        assert_eq!(s.count, 1010);
        let mut c = Hist::new();
        c.merge(&a);
        assert_eq!(c.summary("c").count, 1010);
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
