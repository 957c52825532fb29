//! The map for records kept by the hundred thousand: customers, requests, activities
//! and what indexes them, and the search index's slots (kept for good); the routing
//! book's tasks, idempotency keys and ended offers (kept up to the finished-task
//! retention, 100,000 by default, which they grow to).
//!
//! Why not one `std::collections::HashMap`: it grows by moving every entry into a table
//! twice the size, in the one insert that fills it. For these maps that insert is a
//! decision under the state's lock, and its cost is what the map holds: measured on 26
//! Nov (BENCHMARKS.md, "26 Nov 2026, fifth pass", `loadtest search`), creating the
//! 57,345th customer took 81 ms and the 229,377th 404 ms (p50 0.2 ms), every agent's
//! routing waiting behind it; the maps one new customer adds to all fill at the same
//! insert.
//!
//! [`GrowingMap`] is [`SHARDS`] hash maps, a key's shard chosen by its hash: each grows
//! on its own, holding a 64th of the entries, so the insert that grows one moves a 64th
//! of what one map would (and the shards, filled evenly, reach their limits at
//! different inserts). Tried first and not kept (same BENCHMARKS section): griddle's
//! incrementally resized map, whose lookups of a missing key crawl its old table's
//! tombstones while a move is under way (routing fell behind during each move), and
//! a B-tree, which cost more per task at scale.

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use std::borrow::Borrow;
use std::collections::HashMap;
use std::collections::hash_map::{Entry, RandomState};
use std::hash::{BuildHasher, Hash};
use std::marker::PhantomData;

/// How many maps a [`GrowingMap`] is cut into.
pub const SHARDS: usize = 64;

/// A hash map that grows a 64th at a time. See the module documentation.
#[derive(Clone, Debug)]
pub struct GrowingMap<K, V> {
    shards: Vec<HashMap<K, V>>,
    /// Picks the shard: randomly keyed, as the shards' own hashers (keys include what
    /// clients send, e.g. identities).
    pick: RandomState,
}

impl<K, V> Default for GrowingMap<K, V> {
    fn default() -> Self {
        GrowingMap {
            shards: (0..SHARDS).map(|_| HashMap::new()).collect(),
            pick: RandomState::new(),
        }
    }
}

impl<K: Hash + Eq, V> GrowingMap<K, V> {
    fn shard<Q: Hash + ?Sized>(&self, k: &Q) -> usize {
        // `pick` is keyed apart from the shards' own hashers, so which shard a key is in
        // says nothing of where it lands within it.
        (self.pick.hash_one(k) % SHARDS as u64) as usize
    }

    /// The value under `k`.
    pub fn get<Q>(&self, k: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shards[self.shard(k)].get(k)
    }

    /// The value under `k`, to change.
    pub fn get_mut<Q>(&mut self, k: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let s = self.shard(k);
        self.shards[s].get_mut(k)
    }

    /// Whether `k` has a value.
    pub fn contains_key<Q>(&self, k: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shards[self.shard(k)].contains_key(k)
    }

    /// Puts `v` under `k`, returning what was there.
    pub fn insert(&mut self, k: K, v: V) -> Option<V> {
        let s = self.shard(&k);
        self.shards[s].insert(k, v)
    }

    /// Takes the value under `k` out.
    pub fn remove<Q>(&mut self, k: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let s = self.shard(k);
        self.shards[s].remove(k)
    }

    /// The entry for `k`, as `HashMap::entry`.
    pub fn entry(&mut self, k: K) -> Entry<'_, K, V> {
        let s = self.shard(&k);
        self.shards[s].entry(k)
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.shards.iter().map(HashMap::len).sum()
    }

    /// Whether it has none.
    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(HashMap::is_empty)
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.shards.iter().flat_map(|s| s.iter())
    }

    /// Every key, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.iter().map(|(k, _)| k)
    }

    /// Every value, in no particular order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, v)| v)
    }

    /// Every value, to change, in no particular order.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.shards.iter_mut().flat_map(|s| s.values_mut())
    }
}

impl<'a, K: Hash + Eq, V> IntoIterator for &'a GrowingMap<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = Box<dyn Iterator<Item = (&'a K, &'a V)> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

impl<K: Hash + Eq, V> FromIterator<(K, V)> for GrowingMap<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut m = GrowingMap::default();
        for (k, v) in iter {
            m.insert(k, v);
        }
        m
    }
}

impl<'de, K, V> Deserialize<'de> for GrowingMap<K, V>
where
    K: Deserialize<'de> + Hash + Eq,
    V: Deserialize<'de>,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries<K, V>(PhantomData<(K, V)>);
        impl<'de, K, V> Visitor<'de> for Entries<K, V>
        where
            K: Deserialize<'de> + Hash + Eq,
            V: Deserialize<'de>,
        {
            type Value = GrowingMap<K, V>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                let mut m = GrowingMap::default();
                while let Some((k, v)) = a.next_entry()? {
                    m.insert(k, v);
                }
                Ok(m)
            }
        }
        d.deserialize_map(Entries(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::{GrowingMap, SHARDS};
    use std::collections::HashMap;

    /// The same answers as one `HashMap` given the same inserts, removals and entries,
    /// with the keys spread over the shards, enough that each grows several times.
    #[test]
    fn answers_as_one_hash_map_does() {
        let mut g: GrowingMap<String, u64> = GrowingMap::default();
        let mut h: HashMap<String, u64> = HashMap::new();
        for i in 0..20_000u64 {
            let k = format!("k{}", i * 7919 % 5_003);
            match i % 5 {
                0 | 1 => assert_eq!(g.insert(k.clone(), i), h.insert(k, i)),
                2 => assert_eq!(g.remove(k.as_str()), h.remove(k.as_str())),
                3 => {
                    *g.entry(k.clone()).or_default() += i;
                    *h.entry(k).or_default() += i;
                }
                _ => assert_eq!(g.get_mut(k.as_str()).map(|v| *v), h.get(&k).copied()),
            }
        }
        assert_eq!(g.len(), h.len());
        // The keys spread over every shard, none holding much more than its share: a
        // shard that held them all would grow as one map does, all at once.
        let share = h.len() / SHARDS;
        for (i, shard) in g.shards.iter().enumerate() {
            assert!(
                shard.len() > share / 4 && shard.len() < share * 3,
                "shard {i} holds {} of {} keys",
                shard.len(),
                h.len()
            );
        }
        for (k, v) in &h {
            assert_eq!(g.get(k.as_str()), Some(v));
            assert!(g.contains_key(k.as_str()));
        }
        let mut all: Vec<_> = g.iter().map(|(k, v)| (k.clone(), *v)).collect();
        all.sort();
        let mut want: Vec<_> = h.into_iter().collect();
        want.sort();
        assert_eq!(all, want);
        assert!(!g.contains_key("absent"));
    }

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Holder {
        #[serde(serialize_with = "crate::ids::sorted")]
        m: GrowingMap<u32, String>,
    }

    /// Two maps with the same entries, filled in different orders (and so laid out
    /// differently in their shards), encode to the same bytes, and decode to the same
    /// entries: what a snapshot needs.
    #[test]
    fn encodes_in_key_order_and_decodes_to_the_same_entries() {
        let up: GrowingMap<u32, String> = (0..1_000).map(|i| (i, i.to_string())).collect();
        let down: GrowingMap<u32, String> = (0..1_000).rev().map(|i| (i, i.to_string())).collect();
        let a = rmp_serde::to_vec(&Holder { m: up }).expect("encodes");
        let b = rmp_serde::to_vec(&Holder { m: down }).expect("encodes");
        assert_eq!(a, b);
        let back: Holder = rmp_serde::from_slice(&a).expect("decodes");
        assert_eq!(back.m.len(), 1_000);
        assert_eq!(back.m.get(&417).map(String::as_str), Some("417"));
        assert_eq!(rmp_serde::to_vec(&back).expect("encodes"), a);
    }
}
