//! Identifiers keyed by a 128-bit hash of their text: two 64-bit hashes under independent
//! seeds drawn per process. Reading looks tens of millions of identifiers up; a table of
//! inline 128-bit keys costs one cache miss per lookup, where a table of strings costs a
//! second one to compare the text. Two of a run's n identifiers share a key with
//! probability about n² / 2¹²⁹ (10⁻²⁵ for 10 million), and as the seeds are secret, no
//! one can choose values that collide.

use std::hash::BuildHasher;

use arrow::array::StringViewArray;
use c360_udfs::prefetch;
use foldhash::quality::FixedState;

/// An identifier's key: never all zeros, which marks an empty slot of a [`KeyTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key([u64; 2]);

/// The keys of one graph: the same seed for every part read into it.
#[derive(Debug, Clone, Copy)]
pub struct KeyHasher {
    high: FixedState,
    low: FixedState,
}

impl Default for KeyHasher {
    fn default() -> Self {
        Self {
            high: FixedState::with_seed(rand::random()),
            low: FixedState::with_seed(rand::random()),
        }
    }
}

impl KeyHasher {
    pub fn key(&self, value: &str) -> Key {
        let (high, low) = (self.high.hash_one(value), self.low.hash_one(value));
        Key([high, low.max(1)])
    }

    /// The key of each value of `strings`; the empty key for a null.
    pub fn keys_of(&self, strings: &StringViewArray) -> Vec<Key> {
        strings
            .iter()
            .map(|v| v.map_or(Key::EMPTY, |v| self.key(v)))
            .collect()
    }
}

/// What a [`KeyTable`] can be keyed by: uniform enough that its low bits pick a slot.
pub trait SlotKey: Copy + Eq {
    const EMPTY: Self;
    fn slot_hash(self) -> u64;
}

impl SlotKey for Key {
    const EMPTY: Self = Key([0, 0]);

    fn slot_hash(self) -> u64 {
        self.0[0] ^ self.0[1]
    }
}

/// A pair of node numbers, `(a << 32) | b`: the links of a partition, an input's edges.
impl SlotKey for u64 {
    const EMPTY: Self = u64::MAX;

    fn slot_hash(self) -> u64 {
        let h = self.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        h ^ (h >> 29)
    }
}

/// An open-addressing table (linear probing) with keys and values inline. A lookup in a
/// table of millions reads one slot, usually one cache line; a general hash map reads its
/// control bytes first and the slot second, two misses. Reading the clickstream spends
/// most of its time on those misses.
#[derive(Debug, Clone)]
pub struct KeyTable<K, V> {
    slots: Vec<(K, V)>,
    len: usize,
}

impl<K: SlotKey, V: Copy + Default> Default for KeyTable<K, V> {
    fn default() -> Self {
        Self {
            slots: vec![],
            len: 0,
        }
    }
}

impl<K: SlotKey, V: Copy + Default> KeyTable<K, V> {
    /// The slot holding `key`, or the empty slot where it would go.
    fn slot(&self, key: K) -> usize {
        let mask = self.slots.len() - 1;
        let mut i = key.slot_hash() as usize & mask;
        loop {
            let k = self.slots[i].0;
            if k == key || k == K::EMPTY {
                return i;
            }
            i = (i + 1) & mask;
        }
    }

    /// Starts loading the cache line where `key` would be. Looking up a batch with each
    /// key prefetched some rows ahead overlaps the misses instead of waiting on each.
    #[inline]
    pub fn prefetch(&self, key: K) {
        if self.slots.is_empty() {
            return;
        }
        prefetch(&self.slots[key.slot_hash() as usize & (self.slots.len() - 1)]);
    }

    /// The value of `key`; `None` for the empty key, which stands for no value.
    pub fn get(&self, key: K) -> Option<&V> {
        if self.slots.is_empty() || key == K::EMPTY {
            return None;
        }
        let slot = &self.slots[self.slot(key)];
        (slot.0 == key).then_some(&slot.1)
    }

    pub fn contains_key(&self, key: K) -> bool {
        self.get(key).is_some()
    }

    /// The value of `key`, inserting `new()` first if it is absent; and whether it was.
    pub fn get_or_insert_with(&mut self, key: K, new: impl FnOnce() -> V) -> (&mut V, bool) {
        debug_assert!(key != K::EMPTY, "the empty key is reserved");
        // At most three quarters full, so runs of occupied slots stay short.
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.grow();
        }
        let i = self.slot(key);
        let inserted = self.slots[i].0 == K::EMPTY;
        if inserted {
            self.slots[i] = (key, new());
            self.len += 1;
        }
        (&mut self.slots[i].1, inserted)
    }

    pub fn insert(&mut self, key: K, value: V) {
        *self.get_or_insert_with(key, || value).0 = value;
    }

    fn grow(&mut self) {
        let size = (self.slots.len() * 2).max(16);
        let old = std::mem::replace(&mut self.slots, vec![(K::EMPTY, V::default()); size]);
        for (k, v) in old.into_iter().filter(|(k, _)| *k != K::EMPTY) {
            let i = self.slot(k);
            self.slots[i] = (k, v);
        }
    }

    /// Bytes its slots take, for memory accounting.
    pub fn bytes(&self) -> usize {
        self.slots.len() * std::mem::size_of::<(K, V)>()
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.slots
            .iter_mut()
            .filter(|(k, _)| *k != K::EMPTY)
            .map(|(_, v)| v)
    }

    pub fn iter(&self) -> impl Iterator<Item = (K, &V)> {
        self.slots
            .iter()
            .filter(|(k, _)| *k != K::EMPTY)
            .map(|(k, v)| (*k, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_what_it_holds_through_growth() {
        let keys = KeyHasher::default();
        let mut table: KeyTable<Key, u32> = KeyTable::default();
        for i in 0..10_000u32 {
            let (v, inserted) = table.get_or_insert_with(keys.key(&i.to_string()), || i);
            assert!(inserted);
            assert_eq!(*v, i);
        }
        assert_eq!(table.iter().count(), 10_000);
        for i in 0..10_000u32 {
            assert_eq!(table.get(keys.key(&i.to_string())), Some(&i));
        }
        assert_eq!(table.get(keys.key("absent")), None);
        assert_eq!(table.get(Key::EMPTY), None);
        let (v, inserted) = table.get_or_insert_with(keys.key("7"), || 0);
        assert!(!inserted);
        assert_eq!(*v, 7);
        assert_eq!(table.iter().count(), 10_000);
    }

    #[test]
    fn pairs_of_nodes_as_keys() {
        let mut links: KeyTable<u64, (u64, i64)> = KeyTable::default();
        for a in 0..100u64 {
            for b in 0..50u64 {
                links.get_or_insert_with(a << 32 | b, Default::default).0 .0 += a + b;
            }
        }
        links.get_or_insert_with(3 << 32 | 4, Default::default).0 .0 += 1;
        assert_eq!(links.iter().count(), 5000);
        assert_eq!(links.get(3 << 32 | 4), Some(&(8, 0)));
        assert_eq!(links.get(u64::from(u32::MAX)), None);
    }
}
