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
//! contain it). A field that contains the query contains each of the query's trigrams
//! (or the query itself when it is shorter), so the customers in all those lists are
//! every customer that can match; each is then checked exactly against its stored
//! folded fields (a query of up to three characters is one n-gram, and its list is
//! exactly its matches).
//!
//! The lists are kept in name order, the order results are shown in: each customer
//! has a label that grows with (name, id), with gaps, so a new or renamed customer
//! takes a label between its neighbours' (see [`Index::place`]). The lists are
//! intersected in that order one customer at a time (jumping ahead by galloping), so
//! the first matches found are the page and a query stops there, however many
//! customers share its words (a common first name). A narrow query (an email, a phone,
//! a customer number) has no such early stop: its lists are short, and are read
//! through in order instead, the candidates marked in a bitmap (see
//! [`Index::search`] for the choice, [`Index::read_through`] for why).
//!
//! Off the decision path: the index has its own lock and holds each customer's result
//! line, so a search needs neither the records nor the state's lock. The context book
//! is its one writer and never waits for a search (see [`SearchIndex::set`]).
//!
//! Why hand-written: the crates that fit (a full-text engine like tantivy, an FST)
//! bring a large tree, index words rather than substrings (a change of meaning), and
//! want batch builds rather than one change at a time. This is ~500 lines, exact by
//! construction (the property test compares it with the old scan); `loadtest search`
//! reports its speed and the memory per customer at scale.

use super::CustomerSummary;
use super::fold::fold;
use super::record::Customer;
use crate::growing::GrowingMap;
use crate::ids::CustomerId;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound::{Excluded, Unbounded};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, TryLockError};

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

/// The keys every field containing `s` has: its trigrams, or `s` itself when shorter;
/// each with its place in `s`, the first where it repeats.
fn needed(s: &str, ns: u64) -> Vec<(usize, u64)> {
    let chars: Vec<char> = s.chars().collect();
    if chars.len() <= 3 {
        return vec![(0, key(ns, &chars))];
    }
    // By key, then place: the first of each key's places is kept (a query may be
    // 2,000 characters: no search of the list per trigram).
    let mut out: Vec<(usize, u64)> = chars
        .windows(3)
        .enumerate()
        .map(|(at, w)| (at, key(ns, w)))
        .collect();
    out.sort_unstable_by_key(|&(at, k)| (k, at));
    out.dedup_by_key(|&mut (_, k)| k);
    out
}

/// The most slots in one block of a posting list: a change moves at most this many.
const BLOCK: usize = 512;

/// One n-gram's posting list: the slots of the customers holding it, in name order
/// (by [`Index::labels`]), in blocks, so that a customer placed anywhere in the order
/// moves one block's tail rather than the whole list.
#[derive(Default)]
struct List {
    /// Each block's first slot: a place is found through these (and their labels)
    /// without reading the blocks.
    firsts: Vec<u32>,
    /// The slots, in name order, in blocks of 1 to [`BLOCK`].
    blocks: Vec<Vec<u32>>,
    len: usize,
}

impl List {
    /// The block that holds, or would hold, label `l`.
    fn block_of(&self, labels: &[u64], l: u64) -> usize {
        let firsts = &self.firsts;
        locate(firsts.len(), l, true, (0, u64::MAX), |j| {
            labels[firsts[j] as usize]
        })
        .saturating_sub(1)
    }

    /// Where label `l` is, or would go, in block `b`: the first place whose label is
    /// not below it. The block's first label and the next block's bound the guesses.
    fn place_in(&self, labels: &[u64], b: usize, l: u64) -> usize {
        let block = &self.blocks[b];
        let low = labels[self.firsts[b] as usize];
        let high = self
            .firsts
            .get(b + 1)
            .map_or(u64::MAX, |&s| labels[s as usize]);
        locate(block.len(), l, false, (low, high), |j| {
            labels[block[j] as usize]
        })
    }

    /// Puts `slot` in its place (its label must be set).
    fn insert(&mut self, labels: &[u64], slot: u32) {
        let l = labels[slot as usize];
        if self.blocks.is_empty() {
            self.firsts.push(slot);
            self.blocks.push(vec![slot]);
            self.len = 1;
            return;
        }
        let mut b = self.block_of(labels, l);
        let mut i = self.place_in(labels, b, l);
        if self.blocks[b].get(i) == Some(&slot) {
            return;
        }
        if self.blocks[b].len() == BLOCK {
            // Full: split in halves before the insert (a block never grows past its
            // first allocation). The half the insert does not go to is cut to its
            // length: insertions that bunch (ascending names, a busy spot) leave full
            // blocks behind them, not half-empty ones.
            let tail = self.blocks[b].split_off(BLOCK / 2);
            self.firsts.insert(b + 1, tail[0]);
            self.blocks.insert(b + 1, tail);
            if i > BLOCK / 2 {
                self.blocks[b].shrink_to_fit();
                b += 1;
                i -= BLOCK / 2;
            }
        }
        self.blocks[b].insert(i, slot);
        if i == 0 {
            self.firsts[b] = slot;
        }
        self.len += 1;
    }

    /// Takes `slot` out (with the label it was put in with).
    fn remove(&mut self, labels: &[u64], slot: u32) {
        let l = labels[slot as usize];
        let b = self.block_of(labels, l);
        if b >= self.blocks.len() {
            return;
        }
        let i = self.place_in(labels, b, l);
        let block = &mut self.blocks[b];
        if block.get(i) != Some(&slot) {
            return;
        }
        block.remove(i);
        self.len -= 1;
        if block.is_empty() {
            self.blocks.remove(b);
            self.firsts.remove(b);
        } else if i == 0 {
            self.firsts[b] = block[0];
        }
    }

    /// Every slot, in name order.
    fn slots(&self) -> impl Iterator<Item = u32> + '_ {
        self.blocks.iter().flatten().copied()
    }

    /// Appends `slot`, last in name order (a build in name order).
    fn push(&mut self, slot: u32) {
        match self.blocks.last_mut() {
            Some(b) if b.len() < BLOCK => b.push(slot),
            _ => {
                self.firsts.push(slot);
                self.blocks.push(vec![slot]);
            }
        }
        self.len += 1;
    }
}

/// A place in a [`List`], moving forward only.
struct Cursor<'a> {
    list: &'a List,
    block: usize,
    at: usize,
}

impl Cursor<'_> {
    /// The slot here; `None` past the end.
    fn slot(&self) -> Option<u32> {
        self.list.blocks.get(self.block).map(|b| b[self.at])
    }

    fn advance(&mut self) {
        self.at += 1;
        if self.at == self.list.blocks[self.block].len() {
            self.block += 1;
            self.at = 0;
        }
    }

    /// Moves to the first slot whose label is at least `l`: galloping over the blocks'
    /// first slots, then within the block, so a short move costs a short search.
    fn seek(&mut self, labels: &[u64], l: u64) {
        let (firsts, blocks) = (&self.list.firsts, &self.list.blocks);
        if self.block >= blocks.len() {
            return;
        }
        let b = gallop(firsts.len(), self.block + 1, |j| {
            labels[firsts[j] as usize] <= l
        }) - 1;
        if b > self.block {
            self.block = b;
            self.at = 0;
        }
        let block = &blocks[self.block];
        self.at = gallop(block.len(), self.at, |j| labels[block[j] as usize] < l);
        if self.at == block.len() {
            self.block += 1;
            self.at = 0;
        }
    }
}

/// The slots in every one of some lists, in name order, found one at a time (a
/// leapfrog join: each list jumps to the furthest label any other is at), so a query
/// stops after its page whatever the lists' lengths.
struct Common<'a> {
    /// Shortest first.
    cursors: Vec<Cursor<'a>>,
    /// Seeks left before it gives up ([`Common::over`]).
    budget: usize,
    /// Whether it gave up: it ended for want of budget, not of candidates.
    over: bool,
}

impl Common<'_> {
    fn next(&mut self, labels: &[u64]) -> Option<u32> {
        let mut target = labels[self.cursors.first()?.slot()? as usize];
        'again: loop {
            for c in &mut self.cursors {
                if self.budget == 0 {
                    self.over = true;
                    return None;
                }
                self.budget -= 1;
                c.seek(labels, target);
                let l = labels[c.slot()? as usize];
                if l > target {
                    target = l;
                    continue 'again;
                }
            }
            let first = &mut self.cursors[0];
            let s = first.slot()?;
            first.advance();
            return Some(s);
        }
    }
}

/// A query's candidates from one namespace, in name order.
enum Stream<'a> {
    /// Joined from the lists one step at a time.
    Join(Common<'a>),
    /// Found at once ([`Index::read_through`]).
    Found(std::vec::IntoIter<u32>),
}

impl Stream<'_> {
    fn next(&mut self, labels: &[u64]) -> Option<u32> {
        match self {
            Stream::Join(c) => c.next(labels),
            Stream::Found(f) => f.next(),
        }
    }
}

/// How a search finds its candidates ([`Index::search`]), where its lists are short
/// enough to be read through ([`READ_THROUGH`]); longer ones are always joined.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Plan {
    /// Read through when few customers are likely to match ([`FEW_A_RESULT`]), joined
    /// otherwise, the join given up after a budget of seeks ([`JOIN_SEEKS_A_RESULT`]).
    Guess,
    /// Joined to the end (tests).
    #[cfg_attr(not(test), allow(dead_code))]
    Join,
    /// Read through.
    ReadThrough,
}

/// A query likely to match fewer than this many customers for each result its page
/// asks for is read through at once. The likelihood is the lists' sizes taken as
/// independent: true of a name and a number, of a first name and a surname.
const FEW_A_RESULT: f64 = 4.0;

/// The seeks a join is given for each result its page asks for, when its lists could
/// be read through instead (the guess was wrong): a broad query's join takes about one
/// a list for each.
const JOIN_SEEKS_A_RESULT: usize = 16;

/// A query whose shortest list is at most this long has its lists read through rather
/// than joined ([`Index::read_through`]): 32,768 slots are 128 KiB read in order.
const READ_THROUGH: usize = 32_768;

/// The next list is read through while it is at most this many times the candidates
/// left: reading a slot costs about a sixteenth of a cache line where checking a
/// candidate exactly costs a few lines read at random.
const READ_AHEAD: usize = 32;

#[cfg(test)]
thread_local! {
    /// Tests: every search on this thread by this plan alone, its joins never given
    /// up (both ways must answer what the old scan did).
    static FORCED_PLAN: std::cell::Cell<Option<Plan>> = const { std::cell::Cell::new(None) };
}

/// Tests: runs `f` with every search on this thread by `plan` alone (`None`: as in
/// production).
#[cfg(test)]
pub(crate) fn with_plan<T>(plan: Option<Plan>, f: impl FnOnce() -> T) -> T {
    FORCED_PLAN.set(plan);
    let out = f();
    FORCED_PLAN.set(None);
    out
}

thread_local! {
    /// [`Index::read_through`]'s bitmap of slots, kept by each search thread (all
    /// zero between searches).
    static MARKS: std::cell::RefCell<Vec<u64>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The index's data, behind [`Shared::index`]. See the module documentation.
#[derive(Default)]
struct Index {
    /// Docs by slot; a slot is a customer's for good (customers are never removed).
    docs: Vec<(CustomerId, SearchDoc)>,
    /// Each slot's place in name order: labels grow with (name, id), with gaps between
    /// them, so a customer placed between two others takes a label between theirs
    /// (and only when there is no gap left are a few neighbours given new ones, in
    /// the same order: see [`Index::relabel`]). The posting lists are in this order,
    /// and since a relabelling keeps it, it never touches them.
    labels: Vec<u64>,
    slots: GrowingMap<CustomerId, u32>,
    /// N-gram key -> slots in name order. One `HashMap`, not a `GrowingMap`: it has an
    /// entry per n-gram seen, not per customer, and stops growing with the vocabulary.
    postings: HashMap<u64, List>,
    /// Every customer in result order, with its slot.
    by_name: BTreeMap<(String, CustomerId), u32>,
}

impl Index {
    /// An index of `docs` at once (after a load): the customers are labelled evenly in
    /// name order and every list is built by appending.
    fn build(docs: Vec<(CustomerId, SearchDoc)>) -> Index {
        let n = docs.len();
        let mut order: Vec<u32> = (0..n as u32).collect();
        let key = |s: &u32| {
            let (id, d) = &docs[*s as usize];
            (d.summary.name.as_str(), *id)
        };
        order.sort_unstable_by(|a, b| key(a).cmp(&key(b)));
        let gap = (1u128 << 64) / (n as u128 + 1);
        let mut labels = vec![0u64; n];
        for (j, &s) in order.iter().enumerate() {
            labels[s as usize] = ((j as u128 + 1) * gap) as u64;
        }
        let mut postings: HashMap<u64, List> = HashMap::new();
        for &s in &order {
            for k in docs[s as usize].1.grams() {
                postings.entry(k).or_default().push(s);
            }
        }
        for list in postings.values_mut() {
            if let Some(b) = list.blocks.last_mut() {
                b.shrink_to_fit();
            }
        }
        let by_name = order
            .iter()
            .map(|&s| {
                let (id, d) = &docs[s as usize];
                ((d.summary.name.clone(), *id), s)
            })
            .collect();
        let slots = docs
            .iter()
            .enumerate()
            .map(|(s, (id, _))| (*id, s as u32))
            .collect();
        Index {
            docs,
            labels,
            slots,
            postings,
            by_name,
        }
    }

    /// Puts `doc` in place of what the index had for `id` (adding it if new). Only the
    /// n-grams that changed are touched, unless the name changed: then the customer
    /// moves in name order, out of every list and back in at its new place.
    fn set(&mut self, id: CustomerId, doc: SearchDoc) {
        let new = doc.grams();
        let Some(&slot) = self.slots.get(&id) else {
            let slot = self.docs.len() as u32;
            self.slots.insert(id, slot);
            self.labels.push(0);
            self.place((doc.summary.name.clone(), id), slot);
            for k in &new {
                self.post(*k, slot);
            }
            self.docs.push((id, doc));
            return;
        };
        let entry = &mut self.docs[slot as usize].1;
        if *entry == doc {
            return;
        }
        let old = entry.grams();
        if entry.summary.name != doc.summary.name {
            let old_name = std::mem::take(&mut entry.summary.name);
            for k in &old {
                self.unpost(*k, slot);
            }
            self.by_name.remove(&(old_name, id));
            self.place((doc.summary.name.clone(), id), slot);
            for k in &new {
                self.post(*k, slot);
            }
        } else {
            for k in old.iter().filter(|k| new.binary_search(k).is_err()) {
                self.unpost(*k, slot);
            }
            for k in new.iter().filter(|k| old.binary_search(k).is_err()) {
                self.post(*k, slot);
            }
        }
        self.docs[slot as usize].1 = doc;
    }

    /// Puts `slot` into `k`'s list at its place in name order (making the list).
    fn post(&mut self, k: u64, slot: u32) {
        self.postings
            .entry(k)
            .or_default()
            .insert(&self.labels, slot);
    }

    /// Takes `slot` out of `k`'s list (dropping the list when it empties).
    fn unpost(&mut self, k: u64, slot: u32) {
        if let Some(list) = self.postings.get_mut(&k) {
            list.remove(&self.labels, slot);
            if list.len == 0 {
                self.postings.remove(&k);
            }
        }
    }

    /// Files `slot` under `key` in name order and gives it a label between its
    /// neighbours' (the middle of the gap), relabelling when there is none.
    fn place(&mut self, key: (String, CustomerId), slot: u32) {
        let label = |s: &u32| self.labels[*s as usize];
        let below = self
            .by_name
            .range(..&key)
            .next_back()
            .map(|(_, s)| label(s));
        let above = self
            .by_name
            .range((Excluded(&key), Unbounded))
            .next()
            .map(|(_, s)| label(s));
        // The free labels are [from, to).
        let from = below.map_or(0, |l| u128::from(l) + 1);
        let to = above.map_or(1 << 64, u128::from);
        self.by_name.insert(key.clone(), slot);
        if from < to {
            self.labels[slot as usize] = (from + (to - from) / 2) as u64;
        } else {
            // No free label between the neighbours.
            self.relabel(&key, slot, below.or(above).unwrap_or(0));
        }
    }

    /// Gives `slot` (just filed under `key`) a label near `near`, spreading its
    /// neighbours' labels: the smallest aligned range of labels around `near` whose
    /// customers (with this one) are at most the square root of its size is labelled
    /// evenly (the order-maintenance scheme of Bender et al., 2002: a few relabellings
    /// per insertion on average, wherever the insertions bunch). Only `labels` changes:
    /// the order, and so every posting list, stays as it was.
    fn relabel(&mut self, key: &(String, CustomerId), slot: u32, near: u64) {
        let (mut left, mut right) = (Vec::new(), Vec::new());
        let (mut start, mut size) = (0u128, 1u128 << 64);
        {
            let labels = &self.labels;
            let mut before = self.by_name.range(..key).rev().map(|(_, &s)| s).peekable();
            let mut after = self
                .by_name
                .range((Excluded(key), Unbounded))
                .map(|(_, &s)| s)
                .peekable();
            for bits in 1..=64u32 {
                size = 1u128 << bits;
                start = u128::from(near) & !(size - 1);
                while let Some(s) = before.next_if(|&s| u128::from(labels[s as usize]) >= start) {
                    left.push(s);
                }
                while let Some(s) =
                    after.next_if(|&s| u128::from(labels[s as usize]) < start + size)
                {
                    right.push(s);
                }
                let count = (left.len() + right.len() + 1) as u128;
                if count * count <= size {
                    break;
                }
            }
        }
        let count = (left.len() + right.len() + 1) as u128;
        let gap = (size / count).max(1);
        let all = left.iter().rev().chain([&slot]).chain(&right);
        for (j, &s) in all.enumerate() {
            self.labels[s as usize] = (start + j as u128 * gap) as u64;
        }
    }

    /// See [`SearchReader::check`].
    #[cfg(test)]
    fn check(&self) {
        for (k, list) in &self.postings {
            assert_eq!(list.firsts.len(), list.blocks.len(), "list {k:x}");
            let mut prev = None;
            let mut len = 0;
            for (b, block) in list.blocks.iter().enumerate() {
                assert!(!block.is_empty() && block.len() <= BLOCK, "list {k:x}");
                assert_eq!(list.firsts[b], block[0], "list {k:x} block {b}");
                for &s in block {
                    let l = self.labels[s as usize];
                    assert!(prev < Some(l), "list {k:x} out of order at slot {s}");
                    prev = Some(l);
                }
                len += block.len();
            }
            assert_eq!(list.len, len, "list {k:x}");
        }
    }

    /// The customers in every list of `keys`, in name order, for a page of `limit`;
    /// `None` when a list is missing (nothing can match). Joined, or read through
    /// ([`Index::read_through`]) by `plan`.
    fn common(&self, keys: &[(usize, u64)], plan: Plan, limit: usize) -> Option<Stream<'_>> {
        let mut placed = Vec::with_capacity(keys.len());
        for (at, k) in keys {
            placed.push((*at, self.postings.get(k)?));
        }
        placed.sort_by_key(|(_, l)| l.len);
        // Shortest first, but the trigrams that share no character with one taken
        // before go ahead of those that do: "123" and "234" mostly hold the same
        // customers (those with "1234"), "123" and "456" few in common, so read
        // through, the candidates thin out after two lists rather than six.
        let (mut apart, mut near) = (Vec::new(), Vec::new());
        for (at, list) in placed {
            if apart
                .iter()
                .all(|&(a, _): &(usize, &List)| a.abs_diff(at) >= 3)
            {
                apart.push((at, list));
            } else {
                near.push(list);
            }
        }
        let short = apart.len() + near.len() > 1 && apart[0].1.len <= READ_THROUGH;
        let read = short
            && match plan {
                Plan::ReadThrough => true,
                Plan::Join => false,
                Plan::Guess => {
                    let all = self.docs.len().max(1) as f64;
                    let likely = apart.iter().fold(all, |n, (_, l)| n * (l.len as f64 / all));
                    likely < FEW_A_RESULT * limit as f64
                }
            };
        let lists = apart.into_iter().map(|(_, l)| l).chain(near);
        if read {
            let lists: Vec<&List> = lists.collect();
            return Some(Stream::Found(self.read_through(&lists).into_iter()));
        }
        let mut cursors: Vec<Cursor> = lists
            .map(|list| Cursor {
                list,
                block: 0,
                at: 0,
            })
            .collect();
        cursors.sort_by_key(|c| c.list.len);
        Some(Stream::Join(Common {
            cursors,
            budget: if short && plan == Plan::Guess {
                JOIN_SEEKS_A_RESULT * limit.max(1)
            } else {
                usize::MAX
            },
            over: false,
        }))
    }

    /// The slots in the shortest of `lists` (shortest first) that are also in the
    /// next ones, in name order, each next list read through while it is at most
    /// [`READ_AHEAD`] times the candidates left; the longer ones are left to the exact
    /// check. Why: a narrow query (an email, a phone, a number) matches a customer or
    /// two, so a join cannot stop at its page and walks its lists to the end, and at a
    /// million customers each of its steps reads a label and a block at random: 0.2 to
    /// 0.6 ms of cache misses a search (`benches/search.rs`), evicting the decisions'
    /// data on a core they share. Read in order, a list streams through the cache; the
    /// candidates are marked in a bitmap of the slots.
    fn read_through(&self, lists: &[&List]) -> Vec<u32> {
        let Some((first, rest)) = lists.split_first() else {
            return Vec::new();
        };
        // The candidates left; `None` while they are the first list's (not copied).
        let mut found: Option<Vec<u32>> = None;
        MARKS.with_borrow_mut(|marks| {
            marks.resize(self.docs.len().div_ceil(64), 0);
            for list in rest {
                let left = found.as_ref().map_or(first.len, Vec::len);
                if left == 0 || list.len > READ_AHEAD * left {
                    break;
                }
                let mark = |marks: &mut Vec<u64>, set: bool| {
                    let mut each = |s: u32| {
                        let w = &mut marks[s as usize / 64];
                        *w = if set { *w | 1 << (s % 64) } else { 0 };
                    };
                    match &found {
                        None => first.slots().for_each(&mut each),
                        Some(f) => f.iter().copied().for_each(&mut each),
                    }
                };
                mark(marks, true);
                let next = list
                    .slots()
                    .filter(|&s| marks[s as usize / 64] & (1 << (s % 64)) != 0)
                    .collect();
                mark(marks, false);
                found = Some(next);
            }
        });
        found.unwrap_or_else(|| first.slots().collect())
    }

    /// The customers matching `q`, in result order, at most `limit`.
    ///
    /// A broad query (a name, part of one) finds its page within a few steps of a join
    /// whatever its lists' lengths; a narrow one (an email, a phone, a number) matches
    /// a customer or two, so its join would walk its lists to the end, each step a
    /// label and a block read at random. So the lists of a query likely to match few
    /// are read through instead ([`Index::read_through`]), and a join that could have
    /// been is given a budget of seeks, over which the lists are read through.
    fn search(&self, q: &Query, limit: usize) -> Vec<CustomerSummary> {
        #[cfg(test)]
        if let Some(plan) = FORCED_PLAN.get() {
            return self.page(q, limit, plan).unwrap_or_default();
        }
        self.page(q, limit, Plan::Guess)
            .or_else(|| self.page(q, limit, Plan::ReadThrough))
            .unwrap_or_default()
    }

    /// [`Index::search`] by `plan`; `None` when a join gave up.
    fn page(&self, q: &Query, limit: usize, plan: Plan) -> Option<Vec<CustomerSummary>> {
        let labels = &self.labels;
        let mut text = self.common(&needed(&q.text, 0), plan, limit);
        let mut digits = q
            .digits
            .as_deref()
            .and_then(|d| self.common(&needed(d, DIGITS_NS), plan, limit));
        // A query of up to three characters is one n-gram: its candidates are exactly
        // its matches. A longer one's are checked.
        // (NUL is the padding of a short n-gram's key: a query holding one is checked.)
        let exact = q.text.chars().count() <= 3
            && !q.text.contains('\0')
            && q.digits.as_ref().is_none_or(|d| d.len() <= 3);
        // Both streams are in name order: merged, the candidates come in name order,
        // and the page is the first `limit` that match.
        let mut a = text.as_mut().and_then(|c| c.next(labels));
        let mut b = digits.as_mut().and_then(|c| c.next(labels));
        let mut out = Vec::with_capacity(limit);
        while out.len() < limit {
            let take_a = match (a, b) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some(x), Some(y)) => {
                    if x == y {
                        b = digits.as_mut().and_then(|c| c.next(labels));
                    }
                    labels[x as usize] <= labels[y as usize]
                }
            };
            let s = if take_a {
                std::mem::replace(&mut a, text.as_mut().and_then(|c| c.next(labels)))
            } else {
                std::mem::replace(&mut b, digits.as_mut().and_then(|c| c.next(labels)))
            };
            let Some(s) = s else { break };
            let doc = &self.docs[s as usize].1;
            if exact || doc.matches(q) {
                out.push(doc.summary.clone());
            }
        }
        let over = |s: &Option<Stream>| matches!(s, Some(Stream::Join(c)) if c.over);
        (!over(&text) && !over(&digits)).then_some(out)
    }
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

/// The most pending changes one change brings in (under the state's lock). A search
/// holds the index while it reads, and on a busy node its thread (in `SCHED_IDLE`) may
/// be put off for tens of milliseconds with the index held: the changes of every
/// decision meanwhile wait in `pending`. Brought in all at once by the next change, they
/// held the state's lock for milliseconds (each insert is ~0.1-0.3 ms at a million
/// customers), and that decision's offer with it. Bounded at two, one more than a change
/// adds, the backlog drains by one a decision, and a search (off the decision path)
/// brings in whatever is left before it reads.
pub(super) const INLINE_CATCH_UP: usize = 2;

impl Shared {
    /// Brings the pending changes in, in order (the caller holds the index for
    /// writing, so no one else takes them out of order).
    fn catch_up(&self, ix: &mut Index) {
        let todo = std::mem::take(&mut *lock(&self.pending));
        for (id, doc) in todo {
            ix.set(id, doc);
        }
    }

    /// Brings in the oldest `most` pending changes, in order; the rest stay pending.
    fn catch_up_some(&self, ix: &mut Index, most: usize) {
        let todo: Vec<(CustomerId, SearchDoc)> = {
            let mut p = lock(&self.pending);
            let n = p.len().min(most);
            p.drain(..n).collect()
        };
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
    /// Kept up by no one, answers nothing: the index of a state that is only
    /// replayed (see `ContextBook::without_search`).
    off: bool,
}

impl SearchIndex {
    /// Puts `doc` in place of what the index had for `id` (adding it if new). Never
    /// waits: while a search reads the index, the change waits in `pending` for the
    /// next changes (the oldest two each: [`INLINE_CATCH_UP`]) or a search to bring it in.
    pub fn set(&mut self, id: CustomerId, doc: SearchDoc) {
        if self.off {
            return;
        }
        lock(&self.shared.pending).push((id, doc));
        match self.shared.index.try_write() {
            Ok(mut ix) => self.shared.catch_up_some(&mut ix, INLINE_CATCH_UP),
            Err(TryLockError::Poisoned(p)) => self
                .shared
                .catch_up_some(&mut p.into_inner(), INLINE_CATCH_UP),
            Err(TryLockError::WouldBlock) => {}
        }
    }

    /// Brings every pending change in now, waiting for searches to let go of the
    /// index (after a bulk load, so that what is timed next is the index alone).
    pub fn settle(&self) {
        let mut ix = self.shared.index.write().unwrap_or_else(|p| p.into_inner());
        self.shared.catch_up(&mut ix);
    }

    /// A handle for searching, to be used without the state's lock.
    pub fn reader(&self) -> SearchReader {
        // An index that is off is never kept up: a state that is searched must have
        // built one (`ContextBook::rebuild_search`).
        debug_assert!(!self.off, "a search on a state replayed without its index");
        SearchReader(self.shared.clone())
    }

    /// An index of `docs` built at once (after a snapshot is loaded).
    pub fn build(docs: Vec<(CustomerId, SearchDoc)>) -> SearchIndex {
        SearchIndex {
            shared: Arc::new(Shared {
                index: RwLock::new(Index::build(docs)),
                pending: Mutex::default(),
            }),
            off: false,
        }
    }

    /// An index that is never kept up (see `off`).
    pub fn off() -> SearchIndex {
        SearchIndex {
            off: true,
            ..SearchIndex::default()
        }
    }

    /// Whether it is one of those: then a change need not even be folded for it.
    pub fn is_off(&self) -> bool {
        self.off
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

    /// How many changes wait to be brought in (tests).
    #[cfg(test)]
    pub(crate) fn pending(&self) -> usize {
        lock(&self.0.pending).len()
    }

    /// Holds the index as a search does (tests: a change made meanwhile).
    #[cfg(test)]
    pub(crate) fn hold(&self) -> std::sync::RwLockReadGuard<'_, impl Sized> {
        self.0.index.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Panics unless every posting list is whole and in name order (tests: after
    /// relabellings and splits).
    #[cfg(test)]
    pub(crate) fn check(&self) {
        let mut ix = self.0.index.write().unwrap_or_else(|p| p.into_inner());
        self.0.catch_up(&mut ix);
        ix.check();
    }
}

/// How many entries [`locate`] reads one after another at the end: a few neighbours
/// share a cache line.
const LINEAR: usize = 8;

/// The first index in `0..len` whose key is not below `l` (`key(j) < l`, or `<= l`
/// with `or_equal`), for keys that grow with the index and lie within `bounds`.
///
/// Why not `partition_point`: in a posting list at a million customers every probe is
/// a cache miss (the lists are far larger than the cache), and a binary search takes
/// about nine to place a label in a block. Labels are spread fairly evenly over their
/// range, so a guess by interpolation between the keys known at the range's ends is
/// close, and a few probes do. A guess that does not halve the range is followed by a
/// halving, so an uneven stretch (names that bunched) costs at most twice a binary
/// search's probes.
fn locate(
    len: usize,
    l: u64,
    or_equal: bool,
    bounds: (u64, u64),
    key: impl Fn(usize) -> u64,
) -> usize {
    let below = |k: u64| if or_equal { k <= l } else { k < l };
    // Every index before `lo` is below and every one from `hi` is not; the keys in
    // between lie within `low..=high`.
    let (mut lo, mut hi) = (0, len);
    let (mut low, mut high) = bounds;
    let mut halve = false;
    while hi - lo > LINEAR {
        let g = if halve {
            lo + (hi - lo) / 2
        } else {
            let span = u128::from(high.saturating_sub(low)).max(1);
            let off = u128::from(l.saturating_sub(low)).min(span);
            (lo + (off * (hi - lo) as u128 / span) as usize).min(hi - 1)
        };
        let before = hi - lo;
        let k = key(g);
        if below(k) {
            lo = g + 1;
            low = k;
        } else {
            hi = g;
            high = k;
        }
        halve = !halve && (hi - lo) * 2 > before;
    }
    while lo < hi && below(key(lo)) {
        lo += 1;
    }
    lo
}

/// The first index at or after `from` (up to `len`) where `below` stops holding
/// (`below` holds up to some index, then never): probes 1, 2, 4, ... ahead, then
/// halves, so the cost grows with the distance moved, not with `len`.
fn gallop(len: usize, from: usize, below: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi, mut step) = (from, from, 1);
    while hi < len && below(hi) {
        lo = hi + 1;
        hi = from + step;
        step <<= 1;
    }
    let mut hi = hi.min(len);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if below(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
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

#[cfg(test)]
mod tests {
    use super::{LINEAR, locate};
    use std::cell::Cell;

    /// `locate` answers what `partition_point` does, on keys spread evenly, bunched
    /// (each key halfway from the last to the top, as ascending names take labels),
    /// repeated, and beyond its bounds; and an uneven stretch costs at most about
    /// twice a binary search's probes.
    #[test]
    fn locate_finds_what_a_binary_search_finds_in_few_probes_whatever_the_spread() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut shapes: Vec<Vec<u64>> = Vec::new();
        for len in [0usize, 1, 2, 8, 9, 17, 100, 512, 2_000] {
            let mut even: Vec<u64> = (0..len).map(|_| next()).collect();
            even.sort_unstable();
            shapes.push(even);
            let mut top = 0u64;
            shapes.push(
                (0..len)
                    .map(|_| {
                        top += (u64::MAX - top) / 2;
                        top
                    })
                    .collect(),
            );
            shapes.push((0..len).map(|j| (j as u64 / 7) * 1_000).collect());
            let mut band: Vec<u64> = (0..len).map(|_| (1 << 40) + next() % 5_000).collect();
            band.sort_unstable();
            shapes.push(band);
        }
        for keys in &shapes {
            let len = keys.len();
            let probes_allowed = 2 * (usize::BITS - len.leading_zeros()) as usize + LINEAR + 2;
            let mut ls: Vec<u64> = vec![0, 1, u64::MAX];
            for _ in 0..200 {
                ls.push(next());
                if len > 0 {
                    let k = keys[next() as usize % len];
                    ls.extend([k, k.saturating_sub(1), k.saturating_add(1)]);
                }
            }
            let bounds = [
                (0, u64::MAX),
                (
                    keys.first().copied().unwrap_or(0),
                    keys.last().map_or(u64::MAX, |&k| k.saturating_add(1)),
                ),
            ];
            for l in ls {
                for or_equal in [false, true] {
                    let want = keys.partition_point(|&k| if or_equal { k <= l } else { k < l });
                    for b in bounds {
                        let probes = Cell::new(0);
                        let got = locate(len, l, or_equal, b, |j| {
                            probes.set(probes.get() + 1);
                            keys[j]
                        });
                        assert_eq!(
                            got, want,
                            "len {len} l {l} or_equal {or_equal} bounds {b:?}"
                        );
                        assert!(
                            probes.get() <= probes_allowed,
                            "{} probes for len {len}",
                            probes.get()
                        );
                    }
                }
            }
        }
    }
}
