//! Union-find over string identifiers, dictionary-encoded to dense integers: the closure
//! behind the identity functions. Union by size with path halving keeps every operation
//! near constant time; labels depend only on the partition, never on insertion order.

use std::collections::HashMap;

#[derive(Debug, Default, Clone)]
pub struct StringUnionFind {
    index: HashMap<Box<str>, u32>,
    names: Vec<Box<str>>,
    parent: Vec<u32>,
    size: Vec<u32>,
    /// Bytes held by identifier text, for memory accounting.
    text_bytes: usize,
}

impl StringUnionFind {
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The dense id of `name`, adding it as its own component if new.
    pub fn add(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        let i = u32::try_from(self.names.len()).expect("fewer than 2^32 identifiers per group");
        let boxed: Box<str> = name.into();
        self.text_bytes += 2 * boxed.len();
        self.index.insert(boxed.clone(), i);
        self.names.push(boxed);
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

    pub fn union(&mut self, a: u32, b: u32) {
        let (mut a, mut b) = (self.find(a), self.find(b));
        if a == b {
            return;
        }
        if self.size[a as usize] < self.size[b as usize] {
            std::mem::swap(&mut a, &mut b);
        }
        self.parent[b as usize] = a;
        self.size[a as usize] += self.size[b as usize];
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
        &self.names[i as usize]
    }

    /// Every node's representative.
    pub fn roots(&mut self) -> Vec<u32> {
        (0..self.names.len() as u32).map(|i| self.find(i)).collect()
    }

    /// `(name, representative)` pairs that rebuild this partition when linked into
    /// another union-find: the mergeable state.
    pub fn pairs(&mut self) -> Vec<(&str, &str)> {
        let roots: Vec<u32> = (0..self.names.len() as u32).map(|i| self.find(i)).collect();
        self.names
            .iter()
            .zip(roots)
            .map(|(n, r)| (n.as_ref(), self.names[r as usize].as_ref()))
            .collect()
    }

    /// `(name, label)` for every name, sorted by label then name, where a component's label
    /// is its smallest name: a function of the partition alone.
    pub fn labelled(&mut self) -> Vec<(&str, &str)> {
        let n = self.names.len();
        let roots: Vec<u32> = (0..n as u32).map(|i| self.find(i)).collect();
        let mut smallest: Vec<u32> = (0..n as u32).collect();
        for (i, &r) in roots.iter().enumerate() {
            let r = r as usize;
            if self.names[i] < self.names[smallest[r] as usize] {
                smallest[r] = i as u32;
            }
        }
        let mut out: Vec<(&str, &str)> = (0..n)
            .map(|i| {
                let label = smallest[roots[i] as usize] as usize;
                (self.names[i].as_ref(), self.names[label].as_ref())
            })
            .collect();
        out.sort_unstable_by(|a, b| (a.1, a.0).cmp(&(b.1, b.0)));
        out
    }

    /// Approximate heap bytes held.
    pub fn size_bytes(&self) -> usize {
        self.text_bytes
            + self.names.capacity() * std::mem::size_of::<Box<str>>()
            + self.index.capacity() * (std::mem::size_of::<Box<str>>() + 4 + 8)
            + (self.parent.capacity() + self.size.capacity()) * 4
    }
}
