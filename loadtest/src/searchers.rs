//! `route --customers M --searchers N`: search while routing. Before the load, `M`
//! customers are created in the hub over HTTP (the name, email and phone mix of
//! `loadtest search`); during the load window `N` agent sessions of their own (token
//! profiles with no queue, never Ready, so they get no offers) each send
//! `search_customers` at a fixed rate, and the run reports request -> reply and every
//! search that was answered with an error. With `--customer-rate R` one integration
//! connection creates customers at `R` a second meanwhile (each one a change to the
//! search index), and the run reports their latency.

use crate::client::{self, Lite, Ws};
use crate::httpc::HttpClient;
use crate::report::{Check, Failure, Report};
use crate::rng::Rng;
use crate::search::{FIRST, LAST};
use crate::stats::Hist;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The search latency's name in the report.
pub const H_SEARCH: &str = "search request -> reply";

/// The rate a desktop searches at when the hub's own limit is far above what a person
/// types (the generated configs set it to a million a second).
pub const DESKTOP_RATE: f64 = 10.0;

/// A hub limit above this is not a limit a desktop meets: [`DESKTOP_RATE`] instead.
pub const REALISTIC_LIMIT: f64 = 1000.0;

/// How long one search may take before the searcher gives up on it (and the run
/// reports it).
const REPLY_LIMIT: Duration = Duration::from_secs(20);

/// Hands out spread picks from the lists by index, so that the preload and the
/// queries agree without sharing state.
fn mix(i: u64, salt: u64) -> u64 {
    let mut r = Rng::derive(i, salt);
    r.next_u64()
}

/// The customer `i` of the preload: a first name, a surname and the number (so names
/// are distinct but share their words, as a real base does), one email, one phone.
pub fn customer_body(i: u64) -> String {
    let first = FIRST[(mix(i, 1) % FIRST.len() as u64) as usize];
    let last = LAST[(mix(i, 2) % LAST.len() as u64) as usize];
    let tld = ["pt", "se", "rs", "it"][(i % 4) as usize];
    serde_json::json!({
        "name": format!("{first} {last} {i}"),
        "emails": [format!("c{i}@example.{tld}")],
        "phones": [format!("+3{} {:09}", i % 10, mix(i, 3) % 1_000_000_000)],
    })
    .to_string()
}

/// What an agent types into the search box, drawn from what was preloaded: broad
/// (a first name's first letters, part of a surname, a short run of phone digits) and
/// narrow (one customer's email, number or whole phone).
pub fn query(rng: &mut Rng, customers: u64) -> String {
    let k = rng.below(customers.max(1));
    let prefix = |s: &str, n: usize| s.chars().take(n).collect::<String>();
    match rng.below(8) {
        0 => prefix(FIRST[rng.below(FIRST.len() as u64) as usize], 3),
        1 => FIRST[rng.below(FIRST.len() as u64) as usize].to_owned(),
        2 => prefix(LAST[rng.below(LAST.len() as u64) as usize], 4),
        3 => format!(
            "{} {}",
            FIRST[(mix(k, 1) % FIRST.len() as u64) as usize],
            prefix(LAST[(mix(k, 2) % LAST.len() as u64) as usize], 3)
        ),
        4 => format!("c{k}@example"),
        5 => format!("{:03}", rng.below(1000)),
        6 => format!("{:09}", mix(k, 3) % 1_000_000_000),
        _ => format!("{k}"),
    }
}

/// A query no preloaded customer matches (no name, email or phone holds "zqx"): the
/// search is answered from a missing posting list (after the index's locks, as any
/// search), so a run of these measures a search without its reads of the lists
/// (`--searcher-queries unmatched`).
pub fn unmatched_query(rng: &mut Rng, _customers: u64) -> String {
    format!("zqx{}", ["j", "v", "w"][rng.below(3) as usize])
}

/// A page-filling query that reads the least a real one does: the first three letters
/// of a first name, one posting list's first page (`--searcher-queries broad`).
pub fn broad_query(rng: &mut Rng, _customers: u64) -> String {
    let first = FIRST[rng.below(FIRST.len() as u64) as usize];
    first.chars().take(3).collect()
}

/// What the searchers type.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Queries {
    /// [`query`].
    Mixed,
    /// [`unmatched_query`].
    Unmatched,
    /// [`broad_query`].
    Broad,
}

impl Queries {
    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Queries::Mixed => "mixed",
            Queries::Unmatched => "unmatched",
            Queries::Broad => "broad",
        }
    }

    /// The function that draws one query.
    pub fn generator(self) -> fn(&mut Rng, u64) -> String {
        match self {
            Queries::Mixed => query,
            Queries::Unmatched => unmatched_query,
            Queries::Broad => broad_query,
        }
    }
}

/// Creates customers `0..n` over `conns` keep-alive connections (spread over the
/// nodes); returns how long it took. Any refusal ends it: the run would measure a
/// base that is not there.
pub async fn preload(
    addrs: Arc<[SocketAddr]>,
    token: Arc<str>,
    n: u64,
    conns: usize,
    progress: bool,
) -> Result<Duration, Failure> {
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..conns.max(1))
        .map(|w| {
            let (addrs, token, next, done) =
                (addrs.clone(), token.clone(), next.clone(), done.clone());
            tokio::spawn(async move {
                let mut c = HttpClient::new(addrs[w % addrs.len()]);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return Ok(());
                    }
                    let body = customer_body(i);
                    match c
                        .post_json("/v1/customers", Some(&token), body.as_bytes())
                        .await
                    {
                        Ok(r) if r.status == 201 => {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(r) => {
                            return Err(format!(
                                "customer {i}: POST /v1/customers answered {}: {}",
                                r.status,
                                r.text()
                            ));
                        }
                        Err(e) => return Err(format!("customer {i}: POST /v1/customers: {e}")),
                    }
                }
            })
        })
        .collect();
    let ticker = progress.then(|| {
        let done = done.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                eprintln!("preload: {} of {n} customers", done.load(Ordering::Relaxed));
            }
        })
    });
    let mut failed = None;
    for h in workers {
        let r = match h.await {
            Ok(r) => r,
            Err(e) => Err(format!("a preload task failed: {e}")),
        };
        if let Err(e) = r {
            failed.get_or_insert(e);
            // The others stop at the next customer.
            next.store(n, Ordering::Relaxed);
        }
    }
    if let Some(t) = ticker {
        t.abort();
    }
    match failed {
        Some(e) => Err(Failure::new(format!("the customer preload failed: {e}"))),
        None => Ok(started.elapsed()),
    }
}

/// The rate limit in a hub configuration's text (`limits.rate_per_sec`), if it names
/// one.
pub fn config_rate(toml: &str) -> Option<f64> {
    toml.lines()
        .find_map(|l| l.trim().strip_prefix("rate_per_sec"))
        .and_then(|v| v.trim().strip_prefix('='))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v > 0.0)
}

/// The rate each searcher sends at, and why: the hub's limit when it is one a desktop
/// meets, [`DESKTOP_RATE`] otherwise.
pub fn searcher_rate(hub_limit: Option<f64>) -> (f64, String) {
    match hub_limit {
        Some(l) if l <= REALISTIC_LIMIT => (l, format!("the hub's limits.rate_per_sec ({l}/s)")),
        Some(l) => (
            DESKTOP_RATE,
            format!(
                "a desktop's rate: the hub's limits.rate_per_sec is {l}/s, no limit a person meets"
            ),
        ),
        None => (
            DESKTOP_RATE,
            "a desktop's rate: the hub's limits.rate_per_sec is not known".into(),
        ),
    }
}

/// What one searcher saw.
#[derive(Default)]
pub struct SearcherOutcome {
    /// Request -> reply of the searches answered with a reply.
    pub hist: Hist,
    /// Searches sent.
    pub sent: u64,
    /// Answered with a reply.
    pub replied: u64,
    /// Answered with an error, by code.
    pub errors: BTreeMap<String, u64>,
    /// A few of those errors, whole.
    pub samples: Vec<String>,
    /// Why it stopped early (the socket failed, a search went unanswered).
    pub broke: Option<String>,
}

/// What a searcher types: [`query`] in a run (tests give others).
pub type QueryFn = fn(&mut Rng, u64) -> String;

/// One searcher: connects as agent `token`, then sends `search_customers` with
/// `queries(rng, customers)` every `1/rate` s (one at a time, as a search box does)
/// until `stop`; at least one once connected.
pub async fn run_searcher(
    addr: SocketAddr,
    token: String,
    rate: f64,
    queries: QueryFn,
    customers: u64,
    seed: u64,
    mut stop: watch::Receiver<bool>,
) -> SearcherOutcome {
    let mut out = SearcherOutcome::default();
    let mut ws = match client::agent_connect(addr, &token, None).await {
        Ok(ws) => ws,
        Err(e) => {
            out.broke = Some(format!("could not connect: {e}"));
            return out;
        }
    };
    let mut rng = Rng::new(seed);
    let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    // Behind schedule (a slow answer), the next search goes at once and the schedule
    // moves on: never a burst over the rate.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // The first search goes at once: a searcher that connected searches.
        if out.sent > 0 {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => break,
            }
            if *stop.borrow() {
                break;
            }
        }
        let q = queries(&mut rng, customers);
        let id = format!("s{}", out.sent);
        out.sent += 1;
        let t = Instant::now();
        match search(&mut ws, &id, &q).await {
            Ok(None) => {
                out.replied += 1;
                out.hist.record(t.elapsed());
            }
            Ok(Some((code, text))) => {
                *out.errors.entry(code).or_default() += 1;
                if out.samples.len() < 3 {
                    out.samples.push(format!("{q:?}: {text}"));
                }
            }
            Err(e) => {
                out.broke = Some(format!("search {q:?}: {e}"));
                return out;
            }
        }
    }
    client::close(&mut ws).await;
    out
}

/// Sends one search and reads up to its answer: `None` for a reply, the code and the
/// frame for an error (a `rate_limited` answers with `re` null: the one outstanding
/// search is the one it refused).
async fn search(ws: &mut Ws, id: &str, q: &str) -> Result<Option<(String, String)>, String> {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let frame = serde_json::json!({"id": id, "type": "search_customers", "query": q, "limit": 20});
    ws.send(Message::text(frame.to_string()))
        .await
        .map_err(|e| format!("send failed: {e}"))?;
    loop {
        let text = client::next_text(ws, REPLY_LIMIT).await?;
        let f: Lite =
            serde_json::from_str(&text).map_err(|e| format!("unreadable frame ({e}): {text}"))?;
        let ours = f.re.as_deref() == Some(id);
        match f.ty.as_str() {
            "reply" if ours => return Ok(None),
            "error" if ours || f.re.is_none() => {
                let code = f.code.unwrap_or_else(|| "(no code)".into());
                return Ok(Some((code, text)));
            }
            "goodbye" => return Err(format!("the hub said goodbye: {text}")),
            _ => {}
        }
    }
}

/// Adds the searchers' latency, their check and a note on what they did to `r`.
pub fn add_to_report(
    r: &mut Report,
    outs: &[SearcherOutcome],
    lost: usize,
    rate: f64,
    why_rate: &str,
) {
    let mut hist = Hist::new();
    let (mut sent, mut replied) = (0, 0);
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut breaches = Vec::new();
    for (i, o) in outs.iter().enumerate() {
        hist.merge(&o.hist);
        sent += o.sent;
        replied += o.replied;
        for (code, n) in &o.errors {
            *errors.entry(code.clone()).or_default() += n;
        }
        breaches.extend(o.samples.iter().map(|s| format!("searcher {i}: {s}")));
        if let Some(b) = &o.broke {
            breaches.push(format!("searcher {i}: {b}"));
        }
    }
    if lost > 0 {
        breaches.push(format!("{lost} searcher task(s) failed"));
    }
    let errored: u64 = errors.values().sum();
    if errored > 0 {
        let by_code: Vec<String> = errors.iter().map(|(c, n)| format!("{c} x{n}")).collect();
        breaches.insert(
            0,
            format!("{errored} answered with an error: {}", by_code.join(", ")),
        );
    }
    r.latencies.push(hist.summary(H_SEARCH));
    r.checks.push(Check::from_breaches(
        "every search answered without an error",
        format!(
            "{sent} searches from {} searchers, {replied} replies",
            outs.len()
        ),
        &breaches,
    ));
    r.notes.push(format!(
        "searchers: {} agent sessions (no queues, never Ready) each searching at {rate}/s ({why_rate}) for the load window: {sent} sent, {replied} replied, {errored} errors",
        outs.len()
    ));
}

/// The customer writer's latency's name in the report.
pub const H_CUSTOMER: &str = "customer create (load)";

/// What the customer writer did.
#[derive(Default)]
pub struct WriterOutcome {
    /// Customers created (201).
    pub created: u64,
    /// Every other answer or failure, with the customer's index.
    pub errors: Vec<String>,
    /// POST -> 201.
    pub hist: Hist,
}

/// Creates customers `first..` at `rate` a second over one keep-alive connection (an
/// integration importing, or agents saving, while the load runs) until `stop`. Behind
/// schedule (a slow answer) the next one goes at once, never a burst over the rate.
pub async fn run_writer(
    addr: SocketAddr,
    token: Arc<str>,
    rate: f64,
    first: u64,
    mut stop: watch::Receiver<bool>,
) -> WriterOutcome {
    let mut out = WriterOutcome::default();
    let mut c = HttpClient::new(addr);
    let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for i in first.. {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        if *stop.borrow() {
            break;
        }
        let body = customer_body(i);
        let t = Instant::now();
        match c
            .post_json("/v1/customers", Some(&token), body.as_bytes())
            .await
        {
            Ok(r) if r.status == 201 => {
                out.created += 1;
                out.hist.record(t.elapsed());
            }
            Ok(r) => out
                .errors
                .push(format!("customer {i}: {} {}", r.status, r.text())),
            Err(e) => out.errors.push(format!("customer {i}: {e}")),
        }
    }
    out
}

/// Adds the writer's latency, its check and a note to `r`.
pub fn add_writer_to_report(r: &mut Report, out: Option<&WriterOutcome>, rate: f64) {
    let lost = WriterOutcome {
        errors: vec!["the customer writer task failed".into()],
        ..WriterOutcome::default()
    };
    let out = out.unwrap_or(&lost);
    r.latencies.push(out.hist.summary(H_CUSTOMER));
    let shown: Vec<String> = out.errors.iter().take(5).cloned().collect();
    r.checks.push(Check::from_breaches(
        "every customer created during the load answered 201",
        format!("{} created at {rate}/s", out.created),
        &shown,
    ));
    r.notes.push(format!(
        "customer writer: {} customers created over HTTP at {rate}/s during the load window, {} errors",
        out.created,
        out.errors.len()
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_is_the_hubs_limit_unless_no_person_meets_it() {
        let t = "[limits]\nrate_per_sec = 50.0\nrate_burst = 100.0\n";
        assert_eq!(config_rate(t), Some(50.0));
        assert_eq!(searcher_rate(config_rate(t)).0, 50.0);
        let t = "[limits]\nrate_per_sec = 1000000.0\nrate_burst = 1000000.0\n";
        assert_eq!(searcher_rate(config_rate(t)).0, DESKTOP_RATE);
        assert_eq!(config_rate("[limits]\nrate_burst = 3\n"), None);
        assert_eq!(searcher_rate(None).0, DESKTOP_RATE);
    }

    #[test]
    fn narrow_queries_name_a_preloaded_customer() {
        // The email and name queries are built from the same picks as the customer.
        let body = customer_body(7);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let name = v["name"].as_str().unwrap();
        let first = FIRST[(mix(7, 1) % FIRST.len() as u64) as usize];
        assert!(name.starts_with(first) && name.ends_with(" 7"), "{name}");
        assert!(v["emails"][0].as_str().unwrap().starts_with("c7@example."));
        let mut rng = Rng::new(3);
        for _ in 0..200 {
            assert!(!query(&mut rng, 10).trim().is_empty());
        }
    }
}
