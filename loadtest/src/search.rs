//! `loadtest search`: customer search at CRM scale, in process, on the context book
//! itself (no sockets): builds `customers` customers (names, emails, phones, one
//! request each, with accents and Cyrillic), reports the memory they and the search
//! index take per customer (resident set growth), then times `queries` searches
//! through the index and, on a sample, the old linear scan, checking both agree.

use std::time::{Duration, Instant};
use switchboard::auth::Role;
use switchboard::clock::Ts;
use switchboard::context::record::{Actor, CustomerFields};
use switchboard::context::{ContextBook, ContextCommand, ContextEffects, ContextReply};

/// What `search` does.
pub struct SearchOpts {
    /// Customers to create.
    pub customers: usize,
    /// Searches to time through the index.
    pub queries: usize,
    /// Of those, how many also through the old scan (slow at scale).
    pub scans: usize,
}

/// What it measured.
pub struct SearchReport {
    /// Customers created.
    pub customers: usize,
    /// Building them: the commands, as the decision path runs them.
    pub build: Duration,
    /// From the first command until the index held every customer.
    pub indexed: Duration,
    /// Each customer's two commands (create it, open its request), sorted: the cost of
    /// one record's insert, and its worst case (a map's resize falls on one insert).
    pub creates: Vec<Duration>,
    /// The slowest of them and how many customers there were before it.
    pub slowest_create: (usize, Duration),
    /// Resident set growth per customer, in bytes (records plus index).
    pub bytes_per_customer: f64,
    /// Building the index again at once, as after a load (`rebuild_search`).
    pub rebuild: Duration,
    /// Freeing the book (records and index): what a process that dropped its state
    /// at exit would spend before exiting.
    pub dropped: Duration,
    /// Index search latencies, sorted.
    pub index: Vec<Duration>,
    /// Old scan latencies, sorted.
    pub scan: Vec<Duration>,
    /// The slowest index search of each kind of query, with an example.
    pub slowest: Vec<(String, Duration)>,
}

fn rss_bytes() -> u64 {
    // Resident pages are the second field of /proc/self/statm.
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |p| p * 4096)
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[(self.next() % xs.len() as u64) as usize]
    }
}

pub(crate) const FIRST: &[&str] = &[
    "João",
    "Ana",
    "Đorđe",
    "Björn",
    "Giulia",
    "Marko",
    "Ђорђе",
    "Lena",
    "Pedro",
    "Sofia",
    "Åsa",
    "Nikola",
    "Chiara",
    "Luís",
    "Milica",
    "Olof",
    "Francesca",
    "Иван",
    "Beatriz",
    "Erik",
];
pub(crate) const LAST: &[&str] = &[
    "Araújo",
    "Öberg",
    "Đorđević",
    "Rossi",
    "Silva",
    "Petrović",
    "Lindqvist",
    "Bianchi",
    "Јовановић",
    "Santos",
    "Nyström",
    "Ferrari",
    "Costa",
    "Marić",
    "Holm",
    "Ricci",
];
const TITLE: &[&str] = &[
    "Troca de endereço",
    "Fatura em atraso",
    "Byte av abonnemang",
    "Promena adrese",
    "Reclamo fattura",
    "Nova linha",
];

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

impl SearchReport {
    /// One line per path: p50, p99, max.
    pub fn table(&self) -> String {
        let row = |name: &str, v: &[Duration]| {
            format!(
                "{name}: {} searches, p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms\n",
                v.len(),
                percentile(v, 0.5).as_secs_f64() * 1e3,
                percentile(v, 0.99).as_secs_f64() * 1e3,
                v.last().copied().unwrap_or_default().as_secs_f64() * 1e3
            )
        };
        let slowest: String = self
            .slowest
            .iter()
            .map(|(q, d)| format!("  slowest {q:?}: {:.3} ms\n", d.as_secs_f64() * 1e3))
            .collect();
        format!(
            "search: {} customers built in {:.1} s (commands), indexed {:.1} s after the first; {:.0} bytes resident per customer (records and index); index rebuilt as after a load in {:.1} s; freed in {:.1} s\ncustomer + request create: p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms (the {}th customer)\n{}{}{}",
            self.customers,
            self.build.as_secs_f64(),
            self.indexed.as_secs_f64(),
            self.bytes_per_customer,
            self.rebuild.as_secs_f64(),
            self.dropped.as_secs_f64(),
            percentile(&self.creates, 0.5).as_secs_f64() * 1e3,
            percentile(&self.creates, 0.99).as_secs_f64() * 1e3,
            percentile(&self.creates, 0.999).as_secs_f64() * 1e3,
            self.slowest_create.1.as_secs_f64() * 1e3,
            self.slowest_create.0 + 1,
            row("index", &self.index),
            slowest,
            row("old scan", &self.scan)
        )
    }
}

/// Runs it. Errors (a disagreement between the index and the scan) as text.
pub fn run_search(o: SearchOpts) -> Result<SearchReport, String> {
    let by = Actor {
        id: "loadtest".into(),
        role: Role::Integration,
    };
    let now = Ts(1_800_000_000_000_000);
    let mut b = ContextBook::new();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let before = rss_bytes();
    let t = Instant::now();
    let mut creates = Vec::with_capacity(o.customers);
    let mut slowest_create = (0, Duration::ZERO);
    for i in 0..o.customers {
        let one = Instant::now();
        let name = format!("{} {} {}", rng.pick(FIRST), rng.pick(LAST), i);
        let email = format!("c{i}@example.{}", rng.pick(&["pt", "se", "rs", "it"]));
        let phone = format!("+3{} {:09}", i % 10, rng.next() % 1_000_000_000);
        let mut fx = ContextEffects::default();
        let r = b.execute(
            ContextCommand::CreateCustomer {
                by: by.clone(),
                fields: CustomerFields {
                    name: Some(name),
                    emails: Some(vec![email]),
                    phones: Some(vec![phone]),
                    ..Default::default()
                },
                activity_id: None,
            },
            now,
            &mut fx,
        );
        let Ok(ContextReply::Customer(v)) = r else {
            return Err(format!("customer {i} was refused: {r:?}"));
        };
        let mut fx = ContextEffects::default();
        let _ = b.execute(
            ContextCommand::CreateRequest {
                by: by.clone(),
                customer_id: v.customer.customer_id,
                title: rng.pick(TITLE).into(),
                description: String::new(),
            },
            now,
            &mut fx,
        );
        let took = one.elapsed();
        creates.push(took);
        if took > slowest_create.1 {
            slowest_create = (i, took);
        }
    }
    let build = t.elapsed();
    creates.sort();
    b.settle_search();
    let indexed = t.elapsed();
    let bytes_per_customer = rss_bytes().saturating_sub(before) as f64 / o.customers.max(1) as f64;
    // What agents type: a first name, part of a surname, an email, phone digits, a
    // title word, a customer number, one or two letters, and what matches nothing.
    let mut queries: Vec<String> = Vec::new();
    for i in 0..o.queries {
        let q = match i % 8 {
            0 => rng.pick(FIRST).to_owned(),
            1 => rng.pick(LAST).chars().take(4).collect(),
            2 => format!("c{}@example", rng.next() % o.customers.max(1) as u64),
            3 => format!("{:03}", rng.next() % 1000),
            4 => rng.pick(&["fatura", "adrese", "abonn", "linha"]).to_owned(),
            5 => format!("{}", rng.next() % o.customers.max(1) as u64),
            6 => rng.pick(&["a", "jo", "ć", "ös"]).to_owned(),
            _ => "zzqx".to_owned(),
        };
        queries.push(q);
    }
    let mut index = Vec::with_capacity(queries.len());
    let mut scan = Vec::new();
    let mut slowest = vec![(String::new(), Duration::ZERO); 8];
    for (i, q) in queries.iter().enumerate() {
        let t = Instant::now();
        let got = b.search(q, 50);
        let took = t.elapsed();
        index.push(took);
        if took > slowest[i % 8].1 {
            slowest[i % 8] = (q.clone(), took);
        }
        if i < o.scans {
            let t = Instant::now();
            let want = b.search_by_scan(q, 50);
            scan.push(t.elapsed());
            let ids = |v: &[switchboard::context::CustomerSummary]| {
                v.iter().map(|c| c.customer_id).collect::<Vec<_>>()
            };
            if ids(&got) != ids(&want) {
                return Err(format!("query {q:?}: the index and the scan disagree"));
            }
        }
    }
    index.sort();
    scan.sort();
    let t = Instant::now();
    b.rebuild_search();
    let rebuild = t.elapsed();
    if let Some(q) = queries.first()
        && b.search(q, 50) != b.search_by_scan(q, 50)
    {
        return Err(format!(
            "query {q:?}: the rebuilt index and the scan disagree"
        ));
    }
    let t = Instant::now();
    drop(b);
    let dropped = t.elapsed();
    Ok(SearchReport {
        customers: o.customers,
        build,
        indexed,
        creates,
        slowest_create,
        bytes_per_customer,
        rebuild,
        dropped,
        index,
        scan,
        slowest,
    })
}
