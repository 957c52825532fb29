//! The customer search index: derived state, maintained with each change to a customer
//! or its requests, rebuilt when a snapshot is loaded, never stored.
//!
//! Search means what it always meant ([`reference_matches`], the old linear scan, is
//! kept as the definition and the tests' reference): a customer matches when the
//! folded query ([`fold`]) is a substring of its folded name, an email, a chat handle
//! or a request title, or, for a query mostly of digits, when its digits are a
//! substring of a phone's digits. Results are sorted by name, then id.
//!
//! How it is answered without a scan: every folded field is cut into its n-grams of 1,
//! 2 and 3 characters, and each n-gram has a posting list (the customers whose fields
//! contain it, as sorted slot numbers). A field that contains the query contains each
//! of the query's trigrams (or the query itself when it is shorter), so intersecting
//! those lists gives every customer that can match; each candidate is then checked
//! exactly against its stored folded fields (a query of up to three characters is one
//! n-gram, and its list is exactly its matches). The candidates are then put in name
//! order a page at a time (a linear-time selection on a dense array of name prefixes).
//! When a query may match many customers (an estimate from the lists: see
//! [`estimate`]), walking the customers in name order and stopping at the page's end is
//! cheaper; the walk gives up after a few times its expected length (the matches are
//! bunched late in the name order) and the lists answer.
//!
//! Off the decision path: the index has its own lock and holds each customer's result
//! line, so a search needs neither the records nor the state's lock. The context book
//! is its one writer and never waits for a search (see [`SearchIndex::set`]).
//!
//! Why hand-written: the crates that fit (a full-text engine like tantivy, an FST)
//! bring a large tree, index words rather than substrings (a change of meaning), and
//! want batch builds rather than one change at a time. This is ~450 lines, exact by
//! construction (the property test compares it with the old scan); `loadtest search`
//! reports its speed and the memory per customer at scale.

use super::CustomerSummary;
use super::fold::fold;
use super::record::Customer;
use crate::ids::CustomerId;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, TryLockError};

/// A name's first 16 bytes, big-endian: ordered like the names themselves (ties broken
/// by the whole name), held densely so that ordering candidates rarely touches a doc.
fn name_key(name: &str) -> u128 {
    let mut b = [0u8; 16];
    let n = name.len().min(16);
    b[..n].copy_from_slice(&name.as_bytes()[..n]);
    u128::from_be_bytes(b)
}

/// The n-gram namespace for phone digits (kept apart from text: "123" in a name is
/// not a phone match).
const DIGITS_NS: u64 = 1 << 63;

/// What search looks at in one customer, folded once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SearchDoc {
    /// The result line (results are sorted by its name): the index answers from it,
    /// without the records.
    pub summary: CustomerSummary,
    /// Folded name, emails, chat handles and request titles.
    pub texts: Vec<String>,
    /// Each phone's digits.
    pub digits: Vec<String>,
}

impl SearchDoc {
    /// What search looks at in `c`, with its requests' titles.
    pub fn of<'a>(c: &Customer, titles: impl Iterator<Item = &'a str>) -> SearchDoc {
        let mut texts = vec![fold(&c.name)];
        texts.extend(c.emails.iter().map(|e| fold(e)));
        texts.extend(c.chat_handles.iter().map(|h| fold(h)));
        texts.extend(titles.map(fold));
        let digits = c
            .phones
            .iter()
            .map(|p| p.chars().filter(char::is_ascii_digit).collect())
            .collect();
        SearchDoc {
            summary: super::summary(c),
            texts,
            digits,
        }
    }

    /// Whether the doc matches a prepared query: exactly the old scan's test.
    fn matches(&self, q: &Query) -> bool {
        self.texts.iter().any(|t| t.contains(&q.text))
            || q.digits
                .as_deref()
                .is_some_and(|d| self.digits.iter().any(|p| p.contains(d)))
    }

    /// Every n-gram key of the doc, sorted and without repeats.
    fn grams(&self) -> Vec<u64> {
        let mut out = Vec::new();
        for t in &self.texts {
            grams_of(t, 0, &mut out);
        }
        for d in &self.digits {
            grams_of(d, DIGITS_NS, &mut out);
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// A query, folded and with its digits part when it counts as a phone search.
struct Query {
    text: String,
    digits: Option<String>,
}

impl Query {
    fn new(query: &str) -> Option<Query> {
        let text = fold(query.trim());
        if text.is_empty() {
            return None;
        }
        let d: String = text.chars().filter(char::is_ascii_digit).collect();
        // Mostly digits, and at least three of them: a phone number, however written.
        let phone =
            d.len() >= 3 && d.len() * 2 >= text.chars().filter(|c| !c.is_whitespace()).count();
        Some(Query {
            text,
            digits: phone.then_some(d),
        })
    }
}

/// One n-gram as a key: up to three chars of 21 bits, and the namespace bit.
fn key(ns: u64, chars: &[char]) -> u64 {
    let mut k = 0u64;
    for i in 0..3 {
        k = (k << 21) | chars.get(i).map_or(0, |c| u64::from(*c));
    }
    ns | k
}

/// Pushes every 1-, 2- and 3-gram of `s`.
fn grams_of(s: &str, ns: u64, out: &mut Vec<u64>) {
    let chars: Vec<char> = s.chars().collect();
    for i in 0..chars.len() {
        for n in 1..=3 {
            if i + n <= chars.len() {
                out.push(key(ns, &chars[i..i + n]));
            }
        }
    }
}

/// The keys every field containing `s` has: its trigrams, or `s` itself when shorter.
fn needed(s: &str, ns: u64) -> Vec<u64> {
    let chars: Vec<char> = s.chars().collect();
    if chars.len() <= 3 {
        return vec![key(ns, &chars)];
    }
    let mut out: Vec<u64> = chars.windows(3).map(|w| key(ns, w)).collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// How the index chooses its way; tests force each way (`None`: the cost model).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Tuning {
    /// Walk in name order when about this many customers or more may match.
    pub walk_above: Option<usize>,
    /// How many customers a walk may look at before it gives up for the lists.
    pub walk_steps: Option<usize>,
    /// Mark the candidates and walk the name order for the marks when there are more
    /// than this many of them.
    pub marks_above: Option<usize>,
}

/// The index's data, behind [`Shared::index`]. See the module documentation.
#[derive(Default)]
struct Index {
    tuning: Tuning,
    /// [`name_key`] by slot.
    keys: Vec<u128>,
    /// Docs by slot; a slot is a customer's for good (customers are never removed).
    docs: Vec<(CustomerId, SearchDoc)>,
    slots: HashMap<CustomerId, u32>,
    /// N-gram key -> sorted slots.
    postings: HashMap<u64, Vec<u32>>,
    /// Every customer in result order, with its slot.
    by_name: BTreeMap<(String, CustomerId), u32>,
}

impl Index {
    /// Puts `doc` in place of what the index had for `id` (adding it if new). Only the
    /// n-grams that changed are touched.
    fn set(&mut self, id: CustomerId, doc: SearchDoc) {
        let (slot, old) = match self.slots.get(&id) {
            Some(&s) => {
                let old = &self.docs[s as usize].1;
                if *old == doc {
                    return;
                }
                (s, Some(old.grams()))
            }
            None => (self.docs.len() as u32, None),
        };
        let new = doc.grams();
        let old_grams = old.as_deref().unwrap_or_default();
        for k in old_grams.iter().filter(|k| new.binary_search(k).is_err()) {
            if let Some(list) = self.postings.get_mut(k) {
                if let Ok(i) = list.binary_search(&slot) {
                    list.remove(i);
                }
                if list.is_empty() {
                    self.postings.remove(k);
                }
            }
        }
        for k in new.iter().filter(|k| old_grams.binary_search(k).is_err()) {
            let list = self.postings.entry(*k).or_default();
            // New customers take the highest slot: usually a push.
            match list.last() {
                Some(&l) if l >= slot => {
                    if let Err(i) = list.binary_search(&slot) {
                        list.insert(i, slot);
                    }
                }
                _ => list.push(slot),
            }
        }
        let key = name_key(&doc.summary.name);
        if old.is_none() {
            self.slots.insert(id, slot);
            self.by_name.insert((doc.summary.name.clone(), id), slot);
            self.keys.push(key);
            self.docs.push((id, doc));
            return;
        }
        self.keys[slot as usize] = key;
        let entry = &mut self.docs[slot as usize].1;
        if entry.summary.name != doc.summary.name {
            self.by_name
                .remove(&(std::mem::take(&mut entry.summary.name), id));
            self.by_name.insert((doc.summary.name.clone(), id), slot);
        }
        *entry = doc;
    }

    /// The posting lists of `keys`, shortest first; `None` when one is empty (nothing
    /// can match).
    fn lists(&self, keys: &[u64]) -> Option<Vec<&[u32]>> {
        let mut lists = Vec::with_capacity(keys.len());
        for k in keys {
            lists.push(self.postings.get(k)?.as_slice());
        }
        lists.sort_by_key(|l| l.len());
        Some(lists)
    }

    /// The customers matching `q`, in result order, at most `limit`.
    fn search(&self, q: &Query, limit: usize) -> Vec<CustomerSummary> {
        let text = self.lists(&needed(&q.text, 0));
        let digits = q
            .digits
            .as_deref()
            .and_then(|d| self.lists(&needed(d, DIGITS_NS)));
        if text.is_none() && digits.is_none() {
            return Vec::new();
        }
        // About how many customers match: decides between the walk in name order and
        // the lists (see the module documentation).
        let about = text.as_deref().map_or(0, estimate) + digits.as_deref().map_or(0, estimate);
        let n = self.docs.len();
        let walk_above = self
            .tuning
            .walk_above
            .unwrap_or_else(|| (limit * n).isqrt() * WALK_FACTOR);
        if about > walk_above {
            // The walk expects `limit` matches in `limit * n / about` steps; it gives up
            // after a few times that (the matches are bunched at the end of the order,
            // or fewer than the estimate), and the lists answer instead.
            let steps = self
                .tuning
                .walk_steps
                .unwrap_or((limit * n / about.max(1)).saturating_mul(4) + 256);
            if let Some(found) = self.walk(q, limit, steps) {
                return self.summaries(found);
            }
        }
        let mut candidates = text.map(|l| intersect(&l)).unwrap_or_default();
        if let Some(l) = digits {
            candidates.extend(intersect(&l));
            candidates.sort_unstable();
            candidates.dedup();
        }
        // A query of up to three characters is one n-gram: its candidates are exactly
        // its matches. A longer one's are checked.
        // (NUL is the padding of a short n-gram's key: a query holding one is checked.)
        let exact = q.text.chars().count() <= 3
            && !q.text.contains('\0')
            && q.digits.as_ref().is_none_or(|d| d.len() <= 3);
        // Many candidates: marking them costs one write each, and walking the name
        // order for the marks a few nanoseconds a step (no doc is read), far less than
        // gathering every candidate's name key (a cache miss each) to select from.
        if candidates.len() > self.tuning.marks_above.unwrap_or(MARKS_ABOVE) {
            let steps = candidates.len().saturating_mul(MARK_STEPS);
            if let Some(found) = self.walk_marked(&candidates, q, exact, limit, steps) {
                return self.summaries(found);
            }
        }
        let found = self.in_name_order(candidates, q, exact, limit);
        self.summaries(found)
    }

    /// The first `limit` of `candidates` that match, in name order, found by walking
    /// the name order for them; `None` after `steps` steps.
    fn walk_marked(
        &self,
        candidates: &[u32],
        q: &Query,
        exact: bool,
        limit: usize,
        steps: usize,
    ) -> Option<Vec<u32>> {
        let mut marks = vec![0u64; self.docs.len().div_ceil(64)];
        for &s in candidates {
            marks[s as usize / 64] |= 1 << (s % 64);
        }
        let mut out = Vec::with_capacity(limit);
        let mut left = candidates.len();
        for (i, &s) in self.by_name.values().enumerate() {
            if i == steps {
                return None;
            }
            if marks[s as usize / 64] & (1 << (s % 64)) == 0 {
                continue;
            }
            if exact || self.docs[s as usize].1.matches(q) {
                out.push(s);
                if out.len() == limit {
                    break;
                }
            }
            left -= 1;
            if left == 0 {
                break;
            }
        }
        Some(out)
    }

    /// The first `limit` matches in name order, looking at no more than `steps`
    /// customers: `None` if that was not enough.
    fn walk(&self, q: &Query, limit: usize, steps: usize) -> Option<Vec<u32>> {
        let mut out = Vec::with_capacity(limit);
        for (i, &slot) in self.by_name.values().enumerate() {
            if i == steps {
                return None;
            }
            if self.docs[slot as usize].1.matches(q) {
                out.push(slot);
                if out.len() == limit {
                    break;
                }
            }
        }
        Some(out)
    }

    /// Of `candidates` (slots), the first `limit` that match, in name order.
    fn in_name_order(
        &self,
        candidates: Vec<u32>,
        q: &Query,
        exact: bool,
        limit: usize,
    ) -> Vec<u32> {
        // The candidates are put in name order a batch at a time (the next smallest,
        // found in linear time), and checked in that order until the page is full:
        // usually one batch, however many candidates there are. The keys are gathered
        // in slot order (a forward pass over the dense array), so the selection
        // compares values at hand rather than chasing slots.
        let order = |a: &(u128, u32), b: &(u128, u32)| {
            let (x, y) = (a.1 as usize, b.1 as usize);
            a.0.cmp(&b.0).then_with(|| {
                let (dx, dy) = (&self.docs[x], &self.docs[y]);
                dx.1.summary
                    .name
                    .cmp(&dy.1.summary.name)
                    .then(dx.0.cmp(&dy.0))
            })
        };
        let mut rest: Vec<(u128, u32)> = candidates
            .into_iter()
            .map(|s| (self.keys[s as usize], s))
            .collect();
        let mut out = Vec::with_capacity(limit);
        while out.len() < limit && !rest.is_empty() {
            let k = ((limit - out.len()) * 2).min(rest.len());
            if k < rest.len() {
                rest.select_nth_unstable_by(k - 1, order);
            }
            let mut batch: Vec<(u128, u32)> = rest.drain(..k).collect();
            batch.sort_unstable_by(order);
            for (_, s) in batch {
                if exact || self.docs[s as usize].1.matches(q) {
                    out.push(s);
                    if out.len() == limit {
                        break;
                    }
                }
            }
        }
        out
    }

    fn summaries(&self, slots: Vec<u32>) -> Vec<CustomerSummary> {
        slots
            .into_iter()
            .map(|s| self.docs[s as usize].1.summary.clone())
            .collect()
    }
}

/// Above this many candidates, [`Index::walk_marked`] first.
const MARKS_ABOVE: usize = 4096;
/// A walk for marks may take this many steps per candidate before the selection
/// answers instead (a step costs a small fraction of a candidate's selection).
const MARK_STEPS: usize = 1;

/// The walk's share of the cost model: a step of the walk (a doc checked) costs
/// about this many steps of the lists.
const WALK_FACTOR: usize = 2;

/// About how many slots are in every one of `lists` (shortest first): exact for one
/// list; otherwise the shortest's length times the share of an even sample of it that
/// the others hold too (a few dozen binary searches).
fn estimate(lists: &[&[u32]]) -> usize {
    const SAMPLE: usize = 64;
    let Some((first, rest)) = lists.split_first() else {
        return 0;
    };
    if rest.is_empty() || first.is_empty() {
        return first.len();
    }
    let n = first.len().min(SAMPLE);
    let hits = (0..n)
        .filter(|i| {
            let s = first[i * first.len() / n];
            rest.iter().all(|l| l.binary_search(&s).is_ok())
        })
        .count();
    first.len() * hits / n
}

/// The slots in every one of `lists` (shortest first), sorted.
fn intersect(lists: &[&[u32]]) -> Vec<u32> {
    let Some((first, rest)) = lists.split_first() else {
        return Vec::new();
    };
    // Every list is sorted: each keeps a cursor that only moves forward, by galloping,
    // so lists that hold nearly the same customers (the trigrams of a common name)
    // intersect in about one step per entry.
    let mut cursors = vec![0usize; rest.len()];
    first
        .iter()
        .copied()
        .filter(|&s| {
            rest.iter().zip(cursors.iter_mut()).all(|(l, c)| {
                *c = gallop(l, *c, s);
                l.get(*c) == Some(&s)
            })
        })
        .collect()
}

/// The index as its one writer (the context book, under the state's lock) and its
/// readers (searches, which never take the state's lock) share it.
#[derive(Default)]
struct Shared {
    index: RwLock<Index>,
    /// Changes not yet in `index`, in decision order. The writer adds to it and brings
    /// it in only when no search holds the index: it never waits for one. A search
    /// brings in whatever is left before it reads, so it sees every decision made
    /// before it began.
    pending: Mutex<Vec<(CustomerId, SearchDoc)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// Brings the pending changes in, in order (the caller holds the index for
    /// writing, so no one else takes them out of order).
    fn catch_up(&self, ix: &mut Index) {
        let todo = std::mem::take(&mut *lock(&self.pending));
        for (id, doc) in todo {
            ix.set(id, doc);
        }
    }

    fn search(&self, query: &str, limit: usize) -> Vec<CustomerSummary> {
        let Some(q) = Query::new(query) else {
            return Vec::new();
        };
        if !lock(&self.pending).is_empty() {
            let mut ix = self.index.write().unwrap_or_else(|p| p.into_inner());
            self.catch_up(&mut ix);
        }
        let ix = self.index.read().unwrap_or_else(|p| p.into_inner());
        ix.search(&q, limit)
    }
}

/// The search index, owned by the context book, which alone changes it. Searches go
/// through a [`SearchReader`], which needs no other lock.
#[derive(Default)]
pub struct SearchIndex {
    shared: Arc<Shared>,
}

impl SearchIndex {
    /// Puts `doc` in place of what the index had for `id` (adding it if new). Never
    /// waits: while a search reads the index, the change waits in `pending` for the
    /// next change or search to bring it in.
    pub fn set(&mut self, id: CustomerId, doc: SearchDoc) {
        lock(&self.shared.pending).push((id, doc));
        match self.shared.index.try_write() {
            Ok(mut ix) => self.shared.catch_up(&mut ix),
            Err(TryLockError::Poisoned(p)) => self.shared.catch_up(&mut p.into_inner()),
            Err(TryLockError::WouldBlock) => {}
        }
    }

    /// A handle for searching, to be used without the state's lock.
    pub fn reader(&self) -> SearchReader {
        SearchReader(self.shared.clone())
    }

    /// Forces the way queries are answered (tests).
    #[cfg(test)]
    pub(crate) fn tune(&self, t: Tuning) {
        self.shared
            .index
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .tuning = t;
    }
}

/// A search handle on one index: what a store takes under the state's lock (a
/// reference count) to search after letting the lock go. A reloaded state has a new
/// index; a handle taken before keeps answering from the old one.
#[derive(Clone)]
pub struct SearchReader(Arc<Shared>);

impl SearchReader {
    /// The customers matching `query`, in result order, at most `limit`.
    pub fn search(&self, query: &str, limit: usize) -> Vec<CustomerSummary> {
        self.0.search(query, limit)
    }

    /// Holds the index as a search does (tests: a change made meanwhile).
    #[cfg(test)]
    pub(crate) fn hold(&self) -> std::sync::RwLockReadGuard<'_, impl Sized> {
        self.0.index.read().unwrap_or_else(|p| p.into_inner())
    }
}

/// The first index at or after `from` whose value is at least `s`, in sorted `l`.
fn gallop(l: &[u32], from: usize, s: u32) -> usize {
    let mut lo = from;
    let mut step = 1;
    let mut hi = from;
    while hi < l.len() && l[hi] < s {
        lo = hi + 1;
        hi = from + step;
        step <<= 1;
    }
    let hi = hi.min(l.len());
    lo + l[lo..hi].partition_point(|&x| x < s)
}

/// The old linear scan's test for one customer: the definition of a match, kept as
/// the reference the index is tested against.
pub fn reference_matches<'a>(
    c: &Customer,
    titles: impl Iterator<Item = &'a str>,
    query: &str,
) -> bool {
    let q = fold(query.trim());
    if q.is_empty() {
        return false;
    }
    let q_digits: String = q.chars().filter(char::is_ascii_digit).collect();
    let mut titles = titles;
    fold(&c.name).contains(&q)
        || c.emails.iter().any(|e| fold(e).contains(&q))
        || c.chat_handles.iter().any(|h| fold(h).contains(&q))
        || (q_digits.len() >= 3
            && q_digits.len() * 2 >= q.chars().filter(|c| !c.is_whitespace()).count()
            && c.phones.iter().any(|p| {
                p.chars()
                    .filter(char::is_ascii_digit)
                    .collect::<String>()
                    .contains(&q_digits)
            }))
        || titles.any(|t| fold(t).contains(&q))
}
