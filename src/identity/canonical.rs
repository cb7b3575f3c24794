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

/// One identifier of a new component, as the assignment needs it.
#[derive(Debug, Clone)]
pub struct Member<'a> {
    pub id_type: &'a str,
    pub value: &'a str,
    pub first_seen: i64,
    /// Its canonical id in the previous graph, and that cluster's first-seen time.
    pub previous: Option<(&'a str, i64)>,
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

/// A previous id and where its identifiers went.
struct Offer {
    /// When its previous cluster was first seen.
    first_seen: i64,
    /// Component -> how many of its identifiers landed there.
    parts: HashMap<usize, usize>,
    /// `(first seen, component)` of its earliest identifier.
    earliest: (i64, usize),
}

/// Assigns an id to each component (a list of members); returns ids and changes.
pub fn assign(components: &[Vec<Member<'_>>]) -> Vec<(String, Change)> {
    let mut offers: HashMap<&str, Offer> = HashMap::new();
    for (c, members) in components.iter().enumerate() {
        for m in members {
            if let Some((prev, first_seen)) = m.previous {
                let o = offers.entry(prev).or_insert(Offer {
                    first_seen,
                    parts: HashMap::new(),
                    earliest: (i64::MAX, c),
                });
                *o.parts.entry(c).or_default() += 1;
                o.earliest = o.earliest.min((m.first_seen, c));
            }
        }
    }
    // Step 1: each previous id to its largest part.
    let mut awarded: Vec<Vec<(i64, &str)>> = vec![vec![]; components.len()];
    for (prev, offer) in &offers {
        let best = offer
            .parts
            .iter()
            .max_by_key(|(c, n)| (**n, **c == offer.earliest.1, std::cmp::Reverse(**c)))
            .map(|(c, _)| *c)
            .expect("an offered id has a part");
        awarded[best].push((offer.first_seen, prev));
    }
    // Step 2: the oldest awarded id wins; step 3: fresh ids.
    let mut used: BTreeSet<String> = offers.keys().map(|s| s.to_string()).collect();
    let mut out = Vec::with_capacity(components.len());
    for (c, members) in components.iter().enumerate() {
        let mut ids = awarded[c].clone();
        ids.sort();
        let previous_here: BTreeSet<&str> = members
            .iter()
            .filter_map(|m| m.previous.map(|p| p.0))
            .collect();
        if let Some((_, keep)) = ids.first() {
            let absorbed: Vec<String> = ids[1..].iter().map(|(_, p)| p.to_string()).collect();
            let change = if absorbed.is_empty() {
                Change::Kept
            } else {
                Change::Merged(absorbed)
            };
            out.push((keep.to_string(), change));
            continue;
        }
        let earliest = members
            .iter()
            .min_by(|a, b| {
                (a.first_seen, a.id_type, a.value).cmp(&(b.first_seen, b.id_type, b.value))
            })
            .expect("components are not empty");
        let mut salt = 0;
        let id = loop {
            let id = fresh_id(earliest.id_type, earliest.value, salt);
            if used.insert(id.clone()) {
                break id;
            }
            salt += 1;
        };
        let change = if previous_here.is_empty() {
            Change::Appeared
        } else {
            Change::SplitFrom(previous_here.iter().map(|s| s.to_string()).collect())
        };
        out.push((id, change));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let a = assign(&[vec![m("b", 5, None), m("a", 9, None)]]);
        let b = assign(&[vec![m("a", 9, None), m("b", 5, None)]]);
        assert_eq!(a, b);
        assert_eq!(a[0].0, fresh_id("t", "b", 0));
        assert_eq!(a[0].1, Change::Appeared);
    }

    #[test]
    fn kept_merged_split() {
        let (p1, p2) = ("c360_p1", "c360_p2");
        // Unchanged cluster keeps its id, even with a new identifier.
        let r = assign(&[vec![m("a", 1, Some((p1, 1))), m("new", 7, None)]]);
        assert_eq!(r[0], (p1.to_string(), Change::Kept));
        // Merge: the oldest previous id survives.
        let r = assign(&[vec![
            m("a", 3, Some((p2, 3))),
            m("b", 3, Some((p2, 3))),
            m("c", 1, Some((p1, 1))),
        ]]);
        assert_eq!(r[0], (p1.to_string(), Change::Merged(vec![p2.to_string()])));
        // Split: the larger part keeps the id, the other gets a fresh one.
        let r = assign(&[
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
        let r = assign(&[
            vec![m("a", 1, Some((&old, 1)))],
            vec![m("b", 2, Some((&old, 1))), m("c", 2, Some((&old, 1)))],
        ]);
        assert_eq!(r[1].0, old);
        assert_ne!(r[0].0, old);
        assert_eq!(r[0].0, fresh_id("t", "a", 1));
    }
}
