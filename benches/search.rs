//! What putting one new customer into the search index costs when it already holds
//! many: the work a decision that creates a customer pays under the state's lock.
//! Not a criterion measurement (a base of 200,000 customers takes seconds to build):
//! it prints the time per insert, and under callgrind it gives the instructions and
//! the simulated cache misses of the inserts alone, which the machine's load does not
//! change:
//!
//! ```sh
//! cargo bench --bench search --no-run
//! SEARCH_BASE=200000 SEARCH_INSERTS=2000 valgrind --tool=callgrind --cache-sim=yes \
//!     --toggle-collect='*insert_cycles*' target/release/deps/search-*[^.d]
//! ```
//!
//! With `SEARCH_QUERIES=N` it then times N searches of each kind the searchers of
//! `loadtest route --searchers` type (broad: part of a name; narrow: an email, a phone,
//! a customer number), a page of 20 each; `SEARCH_KIND=K` runs kind K alone, for
//! callgrind (`--toggle-collect='*search_cycles*'`):
//!
//! ```sh
//! SEARCH_BASE=1000000 SEARCH_INSERTS=10 SEARCH_QUERIES=500 target/release/deps/search-*[^.d]
//! ```
//!
//! The customers look like `loadtest search`'s: a first name, a surname and a number,
//! one email, one phone.

use std::hint::black_box;
use std::time::Instant;
use switchboard::context::CustomerSummary;
use switchboard::context::fold::fold;
use switchboard::context::record::CustomerKind;
use switchboard::context::search::{SearchDoc, SearchIndex, SearchReader};
use switchboard::ids::CustomerId;

const FIRST: &[&str] = &[
    "ana", "joão", "maria", "pedro", "sofia", "lars", "karin", "erik", "ingrid", "nils", "marko",
    "jelena", "milan", "ivana", "nikola", "giulia", "marco", "luca", "chiara", "paolo",
];
const LAST: &[&str] = &[
    "silva",
    "santos",
    "ferreira",
    "pereira",
    "oliveira",
    "andersson",
    "johansson",
    "karlsson",
    "nilsson",
    "eriksson",
    "jovanović",
    "petrović",
    "nikolić",
    "marković",
    "đorđević",
    "rossi",
    "russo",
    "ferrari",
    "esposito",
    "bianchi",
];

/// SplitMix64: spread picks without a dependency.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn doc(i: u64) -> (CustomerId, SearchDoc) {
    let first = FIRST[(mix(i * 3) % FIRST.len() as u64) as usize];
    let last = LAST[(mix(i * 3 + 1) % LAST.len() as u64) as usize];
    let name = format!("{first} {last} {i}");
    let email = format!("c{i}@example.pt");
    let digits = format!("3{}{:09}", i % 10, mix(i * 3 + 2) % 1_000_000_000);
    let id = CustomerId::new();
    let summary = CustomerSummary {
        customer_id: id,
        kind: CustomerKind::Person,
        name: name.clone(),
        emails: vec![email.clone()],
        phones: vec![format!("+{digits}")],
        version: 1,
    };
    let d = SearchDoc {
        summary,
        texts: vec![fold(&name), fold(&email)],
        digits: vec![digits],
    };
    (id, d)
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The measured part: `docs` put in one at a time, as decisions do.
#[inline(never)]
fn insert_cycles(ix: &mut SearchIndex, docs: Vec<(CustomerId, SearchDoc)>) {
    for (id, d) in docs {
        ix.set(id, d);
    }
    black_box(&*ix);
}

fn main() {
    let base = env("SEARCH_BASE", 200_000);
    let inserts = env("SEARCH_INSERTS", 2_000);
    let t = Instant::now();
    let mut ix = SearchIndex::build((0..base).map(doc).collect());
    eprintln!(
        "built {base} customers in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let docs: Vec<_> = (base..base + inserts).map(doc).collect();
    let t = Instant::now();
    insert_cycles(&mut ix, docs);
    let per = t.elapsed().as_secs_f64() / inserts as f64;
    println!(
        "{inserts} inserts into {base} customers: {:.1} µs each",
        per * 1e6
    );
    let queries = env("SEARCH_QUERIES", 0);
    if queries > 0 {
        let reader = ix.reader();
        let n = base + inserts;
        // SEARCH_KIND=N (an index into KINDS) runs that kind alone (callgrind).
        let only = std::env::var("SEARCH_KIND")
            .ok()
            .and_then(|v| v.parse().ok());
        for (kind, name) in KINDS.iter().enumerate() {
            if only.is_some_and(|o: usize| o != kind) {
                continue;
            }
            let qs: Vec<String> = (0..queries)
                .map(|j| query(kind, mix(j * 8 + kind as u64 + 1_000_003) % n, j))
                .collect();
            let t = Instant::now();
            let hits = search_cycles(&reader, &qs);
            let per = t.elapsed().as_secs_f64() / queries as f64;
            println!(
                "{name:>12}: {:.1} µs a search, {:.1} results ({queries} searches)",
                per * 1e6,
                hits as f64 / queries as f64
            );
        }
    }
}

/// The query kinds of `loadtest route --searchers` (`loadtest/src/searchers.rs`).
const KINDS: [&str; 8] = [
    "first3",
    "first",
    "last4",
    "first las",
    "email",
    "digits3",
    "phone9",
    "number",
];

/// A query of kind `kind` about customer `k`; `j` picks the names of the broad ones.
fn query(kind: usize, k: u64, j: u64) -> String {
    let prefix = |s: &str, n: usize| s.chars().take(n).collect::<String>();
    let (f, l) = (
        FIRST[j as usize % FIRST.len()],
        LAST[j as usize % LAST.len()],
    );
    match kind {
        0 => prefix(f, 3),
        1 => f.to_owned(),
        2 => prefix(l, 4),
        3 => {
            let (_, d) = doc(k);
            let mut w = d.summary.name.split(' ');
            let (a, b) = (w.next().unwrap_or(""), w.next().unwrap_or(""));
            format!("{a} {}", prefix(b, 3))
        }
        4 => format!("c{k}@example"),
        5 => format!("{:03}", j % 1000),
        6 => format!("{:09}", mix(k * 3 + 2) % 1_000_000_000),
        _ => format!("{k}"),
    }
}

/// The measured part of a kind: its searches, a page of 20 each, as the searchers ask.
/// Under callgrind, `--toggle-collect='*search_cycles*'` counts them alone.
#[inline(never)]
fn search_cycles(reader: &SearchReader, qs: &[String]) -> usize {
    qs.iter()
        .map(|q| black_box(reader.search(q, 20)).len())
        .sum()
}
