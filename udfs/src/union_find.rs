//! Union-find over string identifiers, dictionary-encoded to dense integers: the closure
//! behind the identity functions. Union by size with path halving keeps every operation
//! near constant time; labels depend only on the partition, never on insertion order.

use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};

use crate::common::{prefetch, AHEAD};

/// Union-find over dense ids `0..len`: union by size, path halving.
#[derive(Debug, Default, Clone)]
pub struct DenseUnionFind {
    parent: Vec<u32>,
    size: Vec<u32>,
}

impl DenseUnionFind {
    pub fn new(len: usize) -> Self {
        let len = u32::try_from(len).expect("fewer than 2^32 identifiers");
        Self {
            parent: (0..len).collect(),
            size: vec![1; len as usize],
        }
    }

    pub fn len(&self) -> usize {
        self.parent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.parent.is_empty()
    }

    /// Adds one element as its own component and returns its id.
    pub fn push(&mut self) -> u32 {
        let i = u32::try_from(self.parent.len()).expect("fewer than 2^32 identifiers");
        self.parent.push(i);
        self.size.push(1);
        i
    }

    pub fn find(&mut self, mut i: u32) -> u32 {
        while self.parent[i as usize] != i {
            let grandparent = self.parent[self.parent[i as usize] as usize];
            self.parent[i as usize] = grandparent;
            i = grandparent;
        }
        i
    }

    /// Joins two roots; returns `(kept, absorbed)`, the larger component kept as root.
    pub fn union_roots(&mut self, a: u32, b: u32) -> (u32, u32) {
        let (a, b) = if self.size[a as usize] < self.size[b as usize] {
            (b, a)
        } else {
            (a, b)
        };
        self.parent[b as usize] = a;
        self.size[a as usize] += self.size[b as usize];
        (a, b)
    }

    pub fn union(&mut self, a: u32, b: u32) {
        let (a, b) = (self.find(a), self.find(b));
        if a != b {
            self.union_roots(a, b);
        }
    }

    /// Starts loading `i`'s entry, for a caller about to `find` or join it: over millions
    /// of elements each lookup is a cache miss, and misses overlap only when asked early.
    #[inline]
    pub fn prefetch(&self, i: u32) {
        prefetch(&self.parent[i as usize]);
        prefetch(&self.size[i as usize]);
    }

    /// Every element's root.
    pub fn roots(&mut self) -> Vec<u32> {
        (0..self.len() as u32)
            .map(|i| {
                // Elements are read in order; their parents are not.
                if let Some(&p) = self.parent.get(i as usize + AHEAD) {
                    prefetch(&self.parent[p as usize]);
                }
                self.find(i)
            })
            .collect()
    }

    pub fn size_bytes(&self) -> usize {
        (self.parent.capacity() + self.size.capacity()) * 4
    }
}

/// Names live in one text buffer; the hash table holds only dense ids, so adding an
/// identifier costs one append and no allocation of its own.
#[derive(Debug, Default, Clone)]
pub struct StringUnionFind {
    table: HashTable<u32>,
    hasher: DefaultHashBuilder,
    text: String,
    /// `offsets[i]..offsets[i + 1]` is name `i` in `text`.
    offsets: Vec<usize>,
    sets: DenseUnionFind,
}

fn slice<'a>(text: &'a str, offsets: &[usize], i: u32) -> &'a str {
    &text[offsets[i as usize]..offsets[i as usize + 1]]
}

impl StringUnionFind {
    pub fn len(&self) -> usize {
        self.sets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// The dense id of `name`, adding it as its own component if new.
    pub fn add(&mut self, name: &str) -> u32 {
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        let hash = self.hasher.hash_one(name);
        let (text, offsets) = (&self.text, &self.offsets);
        if let Some(&i) = self.table.find(hash, |&i| slice(text, offsets, i) == name) {
            return i;
        }
        let i = self.sets.push();
        self.text.push_str(name);
        self.offsets.push(self.text.len());
        let (text, offsets, hasher) = (&self.text, &self.offsets, &self.hasher);
        self.table
            .insert_unique(hash, i, |&j| hasher.hash_one(slice(text, offsets, j)));
        i
    }

    pub fn find(&mut self, i: u32) -> u32 {
        self.sets.find(i)
    }

    pub fn union(&mut self, a: u32, b: u32) {
        self.sets.union(a, b);
    }

    /// Adds an edge between two names (or one isolated name).
    pub fn link(&mut self, a: &str, b: Option<&str>) {
        let i = self.add(a);
        if let Some(b) = b {
            let j = self.add(b);
            self.union(i, j);
        }
    }

    /// The name of dense id `i`.
    pub fn name(&self, i: u32) -> &str {
        slice(&self.text, &self.offsets, i)
    }

    /// Every node's representative.
    pub fn roots(&mut self) -> Vec<u32> {
        self.sets.roots()
    }

    /// `(name, representative)` pairs that rebuild this partition when linked into
    /// another union-find: the mergeable state.
    pub fn pairs(&mut self) -> Vec<(&str, &str)> {
        let roots = self.roots();
        roots
            .into_iter()
            .enumerate()
            .map(|(n, r)| (self.name(n as u32), self.name(r)))
            .collect()
    }

    /// `(name, label)` for every name, sorted by label then name, where a component's label
    /// is its smallest name: a function of the partition alone.
    pub fn labelled(&mut self) -> Vec<(&str, &str)> {
        let n = self.len();
        let roots = self.roots();
        let mut smallest: Vec<u32> = (0..n as u32).collect();
        for (i, &r) in roots.iter().enumerate() {
            let r = r as usize;
            if self.name(i as u32) < self.name(smallest[r]) {
                smallest[r] = i as u32;
            }
        }
        let mut out: Vec<(&str, &str)> = (0..n)
            .map(|i| (self.name(i as u32), self.name(smallest[roots[i] as usize])))
            .collect();
        out.sort_unstable_by(|a, b| (a.1, a.0).cmp(&(b.1, b.0)));
        out
    }

    /// Approximate heap bytes held.
    pub fn size_bytes(&self) -> usize {
        self.text.capacity()
            + self.offsets.capacity() * std::mem::size_of::<usize>()
            + self.table.capacity() * (std::mem::size_of::<u32>() + 1)
            + self.sets.size_bytes()
    }
}
