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
//! order a page at a time (a linear-time selection on a dense array of name prefixes),
//! so a common first name costs its candidates' count, not a sort of them. When nearly
//! every customer is a candidate (one common letter), walking the customers in name
//! order and stopping at the page's end is cheaper still.
//!
//! Why hand-written: the crates that fit (a full-text engine like tantivy, an FST)
//! bring a large tree, index words rather than substrings (a change of meaning), and
//! want batch builds rather than one change at a time. This is ~300 lines, exact by
//! construction (the property test compares it with the old scan); `loadtest search`
//! reports its speed and the memory per customer at scale.

use super::fold::fold;
use super::record::Customer;
use crate::ids::CustomerId;
use std::collections::{BTreeSet, HashMap};

/// The share of all customers (in tenths) above which a query's candidates are walked
/// in name order rather than selected: nearly everyone matches (one common letter).
const WALK_TENTHS: usize = 9;

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
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SearchDoc {
    /// The customer's name as stored (results are sorted by it).
    pub name: String,
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
            name: c.name.clone(),
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

/// The index. See the module documentation.
#[derive(Default)]
pub struct SearchIndex {
    /// Above this many candidates, the walk in name order (default: nine tenths of
    /// the customers; tests lower it to exercise both ways).
    pub(crate) walk_above: Option<usize>,
    /// [`name_key`] by slot.
    keys: Vec<u128>,
    /// Docs by slot; a slot is a customer's for good (customers are never removed).
    docs: Vec<(CustomerId, SearchDoc)>,
    slots: HashMap<CustomerId, u32>,
    /// N-gram key -> sorted slots.
    postings: HashMap<u64, Vec<u32>>,
    /// Every customer in result order.
    by_name: BTreeSet<(String, CustomerId)>,
}

impl SearchIndex {
    /// How many customers it holds.
    pub fn len(&self) -> usize {
        self.docs.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    /// Puts `doc` in place of what the index had for `id` (adding it if new). Only the
    /// n-grams that changed are touched.
    pub fn set(&mut self, id: CustomerId, doc: SearchDoc) {
        let (slot, old) = match self.slots.get(&id) {
            Some(&s) => {
                let old = &self.docs[s as usize].1;
                if *old == doc {
                    return;
                }
                (s, Some(old.grams()))
            }
            None => {
                let s = self.docs.len() as u32;
                self.slots.insert(id, s);
                self.docs.push((id, SearchDoc::default()));
                self.keys.push(0);
                (s, None)
            }
        };
        let new = doc.grams();
        let old = old.unwrap_or_default();
        for k in old.iter().filter(|k| new.binary_search(k).is_err()) {
            if let Some(list) = self.postings.get_mut(k) {
                if let Ok(i) = list.binary_search(&slot) {
                    list.remove(i);
                }
                if list.is_empty() {
                    self.postings.remove(k);
                }
            }
        }
        for k in new.iter().filter(|k| old.binary_search(k).is_err()) {
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
        self.keys[slot as usize] = name_key(&doc.name);
        let entry = &mut self.docs[slot as usize].1;
        if entry.name != doc.name || old.is_empty() {
            self.by_name.remove(&(std::mem::take(&mut entry.name), id));
            self.by_name.insert((doc.name.clone(), id));
        }
        *entry = doc;
    }

    /// The customers matching `query`, in result order, at most `limit`.
    pub fn search(&self, query: &str, limit: usize) -> Vec<CustomerId> {
        let Some(q) = Query::new(query) else {
            return Vec::new();
        };
        let mut candidates = self.candidates(&needed(&q.text, 0));
        if let Some(d) = &q.digits {
            candidates.extend(self.candidates(&needed(d, DIGITS_NS)));
            candidates.sort_unstable();
            candidates.dedup();
        }
        // A query of up to three characters is one n-gram: its candidates are exactly
        // its matches. A longer one's are checked.
        // (NUL is the padding of a short n-gram's key: a query holding one is checked.)
        let exact = q.text.chars().count() <= 3
            && !q.text.contains('\0')
            && q.digits.as_ref().is_none_or(|d| d.len() <= 3);
        let walk_above = self
            .walk_above
            .unwrap_or(self.docs.len() / 10 * WALK_TENTHS);
        if candidates.len() > walk_above.max(limit) {
            // Nearly everyone may match: the first `limit` in name order come soonest
            // this way (and the walk is at most the few non-matching customers long).
            return self
                .by_name
                .iter()
                .filter(|(_, id)| {
                    self.slots.get(id).is_some_and(|&s| {
                        if exact {
                            candidates.binary_search(&s).is_ok()
                        } else {
                            self.docs[s as usize].1.matches(&q)
                        }
                    })
                })
                .take(limit)
                .map(|(_, id)| *id)
                .collect();
        }
        // Otherwise the candidates are put in name order a batch at a time (the next
        // smallest, found in linear time), and checked in that order until the page is
        // full: usually one batch, however many candidates there are.
        // The keys are gathered in slot order (a forward pass over the dense array), so
        // the selection compares values at hand rather than chasing slots.
        let order = |a: &(u128, u32), b: &(u128, u32)| {
            let (x, y) = (a.1 as usize, b.1 as usize);
            a.0.cmp(&b.0)
                .then_with(|| self.docs[x].1.name.cmp(&self.docs[y].1.name))
                .then_with(|| self.docs[x].0.cmp(&self.docs[y].0))
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
                let (id, d) = &self.docs[s as usize];
                if exact || d.matches(&q) {
                    out.push(*id);
                    if out.len() == limit {
                        break;
                    }
                }
            }
        }
        out
    }

    /// The slots in every posting list of `keys` (sorted).
    fn candidates(&self, keys: &[u64]) -> Vec<u32> {
        let mut lists: Vec<&Vec<u32>> = Vec::with_capacity(keys.len());
        for k in keys {
            match self.postings.get(k) {
                Some(l) => lists.push(l),
                None => return Vec::new(),
            }
        }
        lists.sort_by_key(|l| l.len());
        let Some((first, rest)) = lists.split_first() else {
            return Vec::new();
        };
        // Every list is sorted: each keeps a cursor that only moves forward, by
        // galloping, so lists that hold nearly the same customers (the trigrams of a
        // common name) intersect in about one step per entry.
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
