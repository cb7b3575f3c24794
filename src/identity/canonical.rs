//! Canonical ids: a person's id that stays the same from run to run.
//!
//! Without a previous graph, a component's id is a hash of its earliest-seen identifier
//! (ties: the smallest `type:value`), so it depends on the data, never on processing order.
//! With the previous run's graph:
//! 1. each previous id goes to the new component holding most of its identifiers (a split:
//!    the larger part keeps it; ties go to the part holding its earliest identifier);
//! 2. a component offered several previous ids (a merge) keeps the oldest one, the id whose
//!    previous cluster was first seen earliest (ties: the smallest id);
//! 3. any other component gets a fresh hash id, salted until it collides with no id in use.

use std::collections::{BTreeSet, HashMap};

pub use c360_udfs::ids::fresh_id;
use c360_udfs::ids::{fresh_hash, hash_of_id, id_of_hash};

/// One identifier of a new component, as the assignment needs it.
#[derive(Debug, Clone)]
pub struct Member<'a> {
    pub id_type: &'a str,
    pub value: &'a str,
    pub first_seen: i64,
    /// Its canonical id in the previous graph, and that cluster's first-seen time.
    pub previous: Option<(&'a str, i64)>,
}

/// Nodes grouped by their component in `of` (ids `0..n`), a counting sort: component `c`
/// holds `nodes[starts[c]..starts[c + 1]]`, in node order.
pub fn by_component(of: &[u32], n: usize) -> (Vec<usize>, Vec<u32>) {
    let mut starts = vec![0usize; n + 1];
    for &c in of {
        starts[c as usize + 1] += 1;
    }
    for c in 0..n {
        starts[c + 1] += starts[c];
    }
    let mut next = starts.clone();
    let mut nodes = vec![0u32; of.len()];
    for (i, &c) in of.iter().enumerate() {
        nodes[next[c as usize]] = i as u32;
        next[c as usize] += 1;
    }
    (starts, nodes)
}

/// Components as runs of one member list, component `c` holding
/// `members[starts[c]..starts[c + 1]]`: a million people cost two vectors, not a million.
#[derive(Debug, Default)]
pub struct Components<'a> {
    members: Vec<Member<'a>>,
    starts: Vec<usize>,
}

impl<'a> Components<'a> {
    /// Groups `members` by their component in `of` (ids `0..n`, each one used).
    pub fn group(of: &[u32], n: usize, member: impl FnMut(usize) -> Member<'a>) -> Self {
        let (starts, nodes) = by_component(of, n);
        Self {
            members: nodes.into_iter().map(|i| i as usize).map(member).collect(),
            starts,
        }
    }

    pub fn len(&self) -> usize {
        self.starts.len().saturating_sub(1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, c: usize) -> &[Member<'a>] {
        &self.members[self.starts[c]..self.starts[c + 1]]
    }

    pub fn iter(&self) -> impl Iterator<Item = &[Member<'a>]> + '_ {
        (0..self.len()).map(|c| self.get(c))
    }
}

impl<'a> FromIterator<Vec<Member<'a>>> for Components<'a> {
    fn from_iter<I: IntoIterator<Item = Vec<Member<'a>>>>(lists: I) -> Self {
        let mut out = Components {
            members: vec![],
            starts: vec![0],
        };
        for list in lists {
            out.members.extend(list);
            out.starts.push(out.members.len());
        }
        out
    }
}

/// What happened to a component's id between two runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Same id as before (possibly with new identifiers).
    Kept,
    /// New person: no identifier was known before.
    Appeared,
    /// Kept its oldest id and absorbed these other previous ids.
    Merged(Vec<String>),
    /// Split off a previous cluster, whose id another part kept: a new id.
    SplitFrom(Vec<String>),
}

/// A member's place in "earliest first": when it was first seen, then its type and value.
/// Unique within a graph, so it orders components whatever order they were built in.
pub type Earliest<'a> = (i64, &'a str, &'a str);

fn earliest<'a>(m: &Member<'a>) -> Earliest<'a> {
    (m.first_seen, m.id_type, m.value)
}

/// A previous id and where its identifiers went.
struct Offer<'a> {
    /// When its previous cluster was first seen.
    first_seen: i64,
    /// Component -> how many of its identifiers landed there.
    parts: HashMap<usize, usize>,
    /// Its earliest identifier, and the component it landed in.
    earliest: (Earliest<'a>, usize),
}

/// Assigns an id to each component (a list of members); returns ids and changes. Ties
/// break on identifiers, never on the order of components or members, so a graph built
/// incrementally is named as the same graph built at once.
pub fn assign(components: &Components<'_>) -> Vec<(String, Change)> {
    let firsts: Vec<Earliest<'_>> = components
        .iter()
        .map(|members| {
            members
                .iter()
                .map(earliest)
                .min()
                .expect("components are not empty")
        })
        .collect();
    let mut offers: HashMap<&str, Offer<'_>> = HashMap::new();
    for (c, members) in components.iter().enumerate() {
        for m in members {
            if let Some((prev, first_seen)) = m.previous {
                let o = offers.entry(prev).or_insert(Offer {
                    first_seen,
                    parts: HashMap::new(),
                    earliest: (earliest(m), c),
                });
                *o.parts.entry(c).or_default() += 1;
                o.earliest = o.earliest.min((earliest(m), c));
            }
        }
    }
    // Step 1: each previous id to its largest part (ties: the part holding its earliest
    // identifier, then the part with the earliest identifier).
    let mut awarded: Vec<Vec<(i64, &str)>> = vec![vec![]; components.len()];
    for (prev, offer) in &offers {
        let best = offer
            .parts
            .iter()
            .max_by_key(|(c, n)| (**n, **c == offer.earliest.1, std::cmp::Reverse(firsts[**c])))
            .map(|(c, _)| *c)
            .expect("an offered id has a part");
        awarded[best].push((offer.first_seen, prev));
    }
    // Step 2: the oldest awarded id wins.
    let mut out: Vec<Option<(String, Change)>> = vec![None; components.len()];
    let mut fresh = vec![];
    for (c, ids) in awarded.iter_mut().enumerate() {
        ids.sort();
        match ids.first() {
            Some((_, keep)) => {
                let absorbed: Vec<String> = ids[1..].iter().map(|(_, p)| p.to_string()).collect();
                let change = match absorbed.is_empty() {
                    true => Change::Kept,
                    false => Change::Merged(absorbed),
                };
                out[c] = Some((keep.to_string(), change));
            }
            None => fresh.push(c),
        }
    }
    // Step 3: fresh ids for the rest.
    let changes = |c: usize| {
        let previous_here: BTreeSet<&str> = match offers.is_empty() {
            true => BTreeSet::new(),
            false => components
                .get(c)
                .iter()
                .filter_map(|m| m.previous.map(|p| p.0))
                .collect(),
        };
        match previous_here.is_empty() {
            true => Change::Appeared,
            false => Change::SplitFrom(previous_here.iter().map(|s| s.to_string()).collect()),
        }
    };
    let used = offers.keys().filter_map(|id| hash_of_id(id));
    name_fresh(&firsts, fresh, used, changes, &mut out);
    out.into_iter()
        .map(|named| named.expect("every component is named"))
        .collect()
}

/// [`assign`] without a previous graph, from each component's earliest member: every
/// component appears, under a fresh id.
pub fn assign_new(firsts: &[Earliest<'_>]) -> Vec<(String, Change)> {
    let mut out = vec![None; firsts.len()];
    let fresh = (0..firsts.len()).collect();
    name_fresh(firsts, fresh, [], |_| Change::Appeared, &mut out);
    out.into_iter()
        .map(|named| named.expect("every component is named"))
        .collect()
}

/// Names components `fresh` by their earliest members `firsts`, earliest component first
/// so salts go the same way every time, avoiding the ids hashed to `used`.
fn name_fresh(
    firsts: &[Earliest<'_>],
    fresh: Vec<usize>,
    used: impl IntoIterator<Item = u64>,
    mut change: impl FnMut(usize) -> Change,
    out: &mut [Option<(String, Change)>],
) {
    // Ids in use are held as the hashes they show: a million people cost no strings here.
    // Sorted with their keys beside them: looking each up in `firsts` is a cache miss.
    let mut fresh: Vec<(Earliest<'_>, usize)> = fresh.into_iter().map(|c| (firsts[c], c)).collect();
    fresh.sort_unstable();
    let used = used.into_iter();
    let mut taken: hashbrown::HashSet<u64> =
        hashbrown::HashSet::with_capacity(used.size_hint().1.unwrap_or(0) + fresh.len());
    taken.extend(used);
    for ((_, id_type, value), c) in fresh {
        let hash = (0..)
            .map(|salt| fresh_hash(id_type, value, salt))
            .find(|&h| taken.insert(h))
            .expect("some salt is free");
        out[c] = Some((id_of_hash(hash), change(c)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(components: Vec<Vec<Member<'_>>>) -> Vec<(String, Change)> {
        assign(&components.into_iter().collect())
    }

    fn m<'a>(v: &'a str, first: i64, prev: Option<(&'a str, i64)>) -> Member<'a> {
        Member {
            id_type: "t",
            value: v,
            first_seen: first,
            previous: prev,
        }
    }

    #[test]
    fn fresh_ids_depend_on_the_earliest_identifier_only() {
        let a = named(vec![vec![m("b", 5, None), m("a", 9, None)]]);
        let b = named(vec![vec![m("a", 9, None), m("b", 5, None)]]);
        assert_eq!(a, b);
        assert_eq!(a[0].0, fresh_id("t", "b", 0));
        assert_eq!(a[0].1, Change::Appeared);
    }

    #[test]
    fn without_a_previous_graph_earliest_members_name_as_whole_components_do() {
        let components = vec![
            vec![m("b", 5, None), m("a", 9, None)],
            vec![m("c", 5, None)],
            vec![m("z", 2, None), m("y", 2, None), m("x", 3, None)],
            vec![m("c", 5, None)],
        ];
        let firsts: Vec<Earliest<'_>> = components
            .iter()
            .map(|c| c.iter().map(earliest).min().unwrap())
            .collect();
        let named = named(components);
        assert_eq!(assign_new(&firsts), named);
        // Two components with the same earliest member: the second takes the next salt.
        assert_eq!(named[1].0, fresh_id("t", "c", 0));
        assert_eq!(named[3].0, fresh_id("t", "c", 1));
    }

    #[test]
    fn kept_merged_split() {
        let (p1, p2) = ("c360_p1", "c360_p2");
        // Unchanged cluster keeps its id, even with a new identifier.
        let r = named(vec![vec![m("a", 1, Some((p1, 1))), m("new", 7, None)]]);
        assert_eq!(r[0], (p1.to_string(), Change::Kept));
        // Merge: the oldest previous id survives.
        let r = named(vec![vec![
            m("a", 3, Some((p2, 3))),
            m("b", 3, Some((p2, 3))),
            m("c", 1, Some((p1, 1))),
        ]]);
        assert_eq!(r[0], (p1.to_string(), Change::Merged(vec![p2.to_string()])));
        // Split: the larger part keeps the id, the other gets a fresh one.
        let r = named(vec![
            vec![m("a", 1, Some((p1, 1)))],
            vec![m("b", 2, Some((p1, 1))), m("c", 2, Some((p1, 1)))],
        ]);
        assert_eq!(r[1], (p1.to_string(), Change::Kept));
        assert_eq!(r[0].1, Change::SplitFrom(vec![p1.to_string()]));
        assert_ne!(r[0].0, p1);
    }

    #[test]
    fn fresh_ids_never_reuse_an_id_in_use() {
        // The split-off part's earliest identifier is the one the old id was hashed from.
        let old = fresh_id("t", "a", 0);
        let r = named(vec![
            vec![m("a", 1, Some((&old, 1)))],
            vec![m("b", 2, Some((&old, 1))), m("c", 2, Some((&old, 1)))],
        ]);
        assert_eq!(r[1].0, old);
        assert_ne!(r[0].0, old);
        assert_eq!(r[0].0, fresh_id("t", "a", 1));
    }
}
