//! The identity graph: every identifier of every input, linked where a row carries two or
//! more of them, guarded against over-merging, closed transitively and given stable
//! canonical ids.
//!
//! Build steps: (1) per input, a DataFusion query normalizes the id columns; each row's
//! surviving identifiers (blocklisted ones go to quarantine) become a star centred on its
//! most trusted identifier; (2) identifiers linked to too many of another type (hubs) are
//! quarantined; (3) edges are merged most-trusted evidence first with union-find over
//! dictionary-encoded identifiers, and an edge whose merge would break a per-person limit is
//! quarantined instead; (4) components get canonical ids (see [`canonical`]).

pub mod canonical;
pub mod config;
mod hashed;
mod lookup;
mod rows;
mod tables;
mod texts;

use std::collections::VecDeque;

// foldhash: identifiers are hashed tens of millions of times per run.
use hashbrown::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, AsArray, StringViewArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, TimeUnit, TimestampMicrosecondType};
use c360_udfs::union_find::DenseUnionFind;
use datafusion::common::runtime::SpawnedTask;
use datafusion::common::DataFusionError;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::execute_stream_partitioned;
use datafusion::prelude::SessionContext;
use futures::channel::oneshot;
use futures::StreamExt;
use tokio::task::JoinSet;

use c360_udfs::{prefetch, AHEAD};
pub use canonical::Change;
use config::Blocklist;
pub use config::IdentityConfig;
use hashed::{Key, KeyHasher, KeyTable, SlotKey};
pub use rows::{stitch_by_position, InputRows, StitchedRows};
pub use tables::{distinct_columns, OUTPUT_TABLES};
use texts::Texts;

use crate::error::{Error, Result};
use crate::project::Project;

/// A previous run's graph: `(id_type, id_value) -> (canonical_id, first_seen)`.
pub type Previous = HashMap<(String, String), (String, i64)>;

/// An identifier borrowed, to look [`Previous`] up without allocating: it hashes as the
/// owned pair does.
#[derive(Hash)]
struct Borrowed<'a>(&'a str, &'a str);

impl hashbrown::Equivalent<(String, String)> for Borrowed<'_> {
    fn equivalent(&self, key: &(String, String)) -> bool {
        self.0 == key.0 && self.1 == key.1
    }
}

/// The canonical ids of a continued graph's first nodes, which came from the previous
/// graph: no identifier text is copied to find them.
#[derive(Default)]
struct SeededIds {
    /// Per seeded node: index into `ids`.
    of: Vec<u32>,
    /// Previous canonical ids, with when their cluster was first seen.
    ids: Vec<(String, i64)>,
}

/// Where a build finds each identifier's previous canonical id.
enum Earlier<'a> {
    Map(&'a Previous),
    Seeded(&'a SeededIds),
}

impl Earlier<'_> {
    /// Node `n`'s previous canonical id and that cluster's first seen.
    fn of(&self, g: &IdentityGraph, n: usize) -> Option<(&str, i64)> {
        match self {
            Earlier::Map(p) => {
                let (t, v) = g.describe(n as u32);
                p.get(&Borrowed(t, v))
                    .map(|(id, first)| (id.as_str(), *first))
            }
            Earlier::Seeded(s) => {
                let (id, first) = &s.ids[*s.of.get(n)? as usize];
                Some((id.as_str(), *first))
            }
        }
    }

    /// Identifiers per previous canonical id.
    fn sizes(&self) -> HashMap<&str, usize> {
        let mut sizes: HashMap<&str, usize> = HashMap::new();
        match self {
            Earlier::Map(p) => {
                for (id, _) in p.values() {
                    *sizes.entry(id.as_str()).or_default() += 1;
                }
            }
            Earlier::Seeded(s) => {
                for &i in &s.of {
                    *sizes.entry(s.ids[i as usize].0.as_str()).or_default() += 1;
                }
            }
        }
        sizes
    }
}

/// One link between two identifiers, as seen in one input.
#[derive(Debug, Clone)]
pub struct Edge {
    pub a: u32,
    pub b: u32,
    pub input: u16,
    pub first_seen: i64,
    pub last_seen: i64,
    pub rows: u64,
    pub accepted: bool,
}

/// Something kept out of stitching, and why.
#[derive(Debug, Clone)]
pub struct Quarantined {
    pub id_type: String,
    pub value: String,
    /// For a rejected edge: the other end.
    pub other: Option<(String, String)>,
    pub rule: String,
    pub rows: u64,
}

/// The built graph.
#[derive(Debug, Default)]
pub struct IdentityGraph {
    pub types: Vec<String>,
    pub inputs: Vec<String>,
    node_type: Vec<u16>,
    node_value: Texts,
    first_seen: Vec<i64>,
    last_seen: Vec<i64>,
    /// Bit i set: seen in input i.
    sources: Vec<u64>,
    /// Per id type: value's key -> (node, its person once named), so that looking a
    /// row's person up reads one slot.
    index: Vec<KeyTable<Key, (u32, u32)>>,
    keys: KeyHasher,
    /// Bytes of identifier text held, for memory accounting.
    text_bytes: usize,
    pub edges: Vec<Edge>,
    pub quarantine: Vec<Quarantined>,
    /// Per input (in `inputs` order): rows read, by this run and the runs it continues.
    pub rows_read: Vec<u64>,
    /// Per node: whether this run read a row carrying it (every node, unless the graph
    /// continues a previous run's).
    touched: Vec<bool>,
    /// Per node: index into `canonical`.
    component: Vec<u32>,
    /// Per component: its id and what happened to it since the previous graph.
    canonical: Vec<(String, Change)>,
    /// Per component: no row read this run carries its identifiers, and they are exactly
    /// one previous person's, whose id it keeps: its features can only change with time.
    pub unchanged: Vec<bool>,
    /// Where building the graph spent its time.
    pub timings: Timings,
    /// Per input read (in `inputs` order), each row's place in the graph, when the build
    /// was asked to keep them: see [`StitchedRows`].
    pub rows: Vec<InputRows>,
}

/// Seconds spent in each step of building a graph, for run reports and benchmarks.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Timings {
    /// Planning each input's read (its files listed, its query planned).
    pub planning_s: f64,
    /// Waiting for inputs' partitions to be read (the reading itself overlaps merging).
    pub reading_s: f64,
    /// Adding the partitions read to the graph, in order, on one thread.
    pub merging_s: f64,
    /// Hubs, evidence order, limits and union-find; 0 when the previous closure was
    /// carried over. Benchmarks compare it with other engines'.
    pub closure_s: f64,
    /// Canonical ids for the components, and each identifier's person in the index.
    pub naming_s: f64,
}

/// Union-find over dense node ids, with per-component counts of the limited id types.
struct Closure {
    sets: DenseUnionFind,
    /// The limited types, as (type, limit), in type order.
    limited: Vec<(u16, u32)>,
    /// Per node, then per limited type: identifiers of that type in the node's component
    /// (meaningful at roots). One flat vector: a run links millions of nodes.
    counts: Vec<u32>,
}

impl Closure {
    fn new(node_type: &[u16], limited: Vec<(u16, u32)>) -> Self {
        let k = limited.len();
        let mut counts = vec![0; node_type.len() * k];
        if k > 0 {
            for (n, &t) in node_type.iter().enumerate() {
                if let Some(j) = limited.iter().position(|&(l, _)| l == t) {
                    counts[n * k + j] = 1;
                }
            }
        }
        Self {
            sets: DenseUnionFind::new(node_type.len()),
            limited,
            counts,
        }
    }

    fn find(&mut self, i: u32) -> u32 {
        self.sets.find(i)
    }

    /// The first limit joining roots `a` and `b` would break, as (type, limit).
    fn broken(&self, a: u32, b: u32) -> Option<(u16, u32)> {
        let k = self.limited.len();
        let (a, b) = (a as usize * k, b as usize * k);
        self.limited
            .iter()
            .enumerate()
            .find(|&(j, &(_, limit))| self.counts[a + j] + self.counts[b + j] > limit)
            .map(|(_, &l)| l)
    }

    fn union_roots(&mut self, a: u32, b: u32) {
        let (kept, absorbed) = self.sets.union_roots(a, b);
        let k = self.limited.len();
        for j in 0..k {
            self.counts[kept as usize * k + j] += self.counts[absorbed as usize * k + j];
        }
    }
}

impl IdentityGraph {
    pub fn len(&self) -> usize {
        self.node_value.len()
    }

    pub fn is_empty(&self) -> bool {
        self.node_value.is_empty()
    }

    pub fn components(&self) -> usize {
        self.canonical.len()
    }

    /// The person (component) of each identifier (already normalized) of type `t`.
    pub(crate) fn people_of(&self, t: u16, values: &StringViewArray) -> Vec<Option<u32>> {
        let Some(index) = self.index.get(t as usize) else {
            return vec![None; values.len()];
        };
        let keys = self.keys.keys_of(values);
        (0..keys.len())
            .map(|i| {
                if let Some(&ahead) = keys.get(i + AHEAD) {
                    index.prefetch(ahead);
                }
                let &(n, p) = index.get(keys[i])?;
                debug_assert_eq!(p, self.component[n as usize], "people indexed after naming");
                Some(p)
            })
            .collect()
    }

    /// The person (component) of an identifier (already normalized) of type `t`.
    pub(crate) fn person_of(&self, t: u16, value: &str) -> Option<u32> {
        let &(_, p) = self.index.get(t as usize)?.get(self.keys.key(value))?;
        Some(p)
    }

    /// The canonical id of person `p`.
    pub(crate) fn canonical_of(&self, p: u32) -> &str {
        &self.canonical[p as usize].0
    }

    pub(crate) fn type_id(&self, id_type: &str) -> Option<u16> {
        self.types
            .iter()
            .position(|t| t == id_type)
            .map(|i| i as u16)
    }

    fn node(&self, id_type: &str, value: &str) -> Option<u32> {
        let t = self.type_id(id_type)?;
        self.index
            .get(t as usize)?
            .get(self.keys.key(value))
            .map(|&(n, _)| n)
    }

    /// The canonical id of an identifier (already normalized), if it is in the graph.
    pub fn canonical_id(&self, id_type: &str, value: &str) -> Option<&str> {
        let person = self.person_of(self.type_id(id_type)?, value)?;
        Some(self.canonical_of(person))
    }

    /// The node of `value`, added if new, marked as seen in `input`.
    fn intern(&mut self, t: u16, value: &str, input: usize) -> u32 {
        self.intern_keyed(t, self.keys.key(value), value, input)
    }

    /// [`Self::intern`] of a value whose key is known.
    fn intern_keyed(&mut self, t: u16, key: Key, value: &str, input: usize) -> u32 {
        let n = self.node_of(t, key, value);
        self.sources[n as usize] |= 1 << input.min(63);
        n
    }

    /// The node of a value whose key is known, added if new.
    fn node_of(&mut self, t: u16, key: Key, value: &str) -> u32 {
        if self.index.len() <= t as usize {
            self.index.resize_with(t as usize + 1, KeyTable::default);
        }
        let n = match self.index[t as usize].get(key) {
            Some(&(n, _)) => {
                debug_assert_eq!(&self.node_value[n as usize], value, "128-bit key collision");
                n
            }
            None => {
                let n = self.node_value.len() as u32;
                self.index[t as usize].insert(key, (n, u32::MAX));
                self.text_bytes += value.len();
                self.node_type.push(t);
                self.node_value.push(value);
                self.first_seen.push(i64::MAX);
                self.last_seen.push(i64::MIN);
                self.sources.push(0);
                self.touched.push(false);
                n
            }
        };
        n
    }

    /// The node of `value`, added if new, seen in no input yet.
    fn intern_unseen(&mut self, t: u16, value: &str) -> u32 {
        let key = self.keys.key(value);
        let known = self
            .index
            .get(t as usize)
            .is_some_and(|i| i.contains_key(key));
        let n = self.intern_keyed(t, key, value, 0);
        if !known {
            self.sources[n as usize] = 0;
        }
        n
    }

    /// An edge's ends in (type, value) order: tables and quarantine entries name them the
    /// same way however the graph was built.
    fn oriented(&self, a: u32, b: u32) -> (u32, u32) {
        let key = |n: u32| (self.node_type[n as usize], &self.node_value[n as usize]);
        match key(a) <= key(b) {
            true => (a, b),
            false => (b, a),
        }
    }

    /// Widens node `n`'s first and last seen to include `[first, last]`.
    fn see(&mut self, n: u32, first: i64, last: i64) {
        let i = n as usize;
        self.first_seen[i] = self.first_seen[i].min(first);
        self.last_seen[i] = self.last_seen[i].max(last);
    }

    /// Numbers the people in canonical id order and writes each node's person into the
    /// index, once the graph is named. Person numbers then sort as the ids do: whatever is
    /// aggregated by person comes out in the order customer_360 is written in, and joins by
    /// person take rows in sequence.
    fn index_people(&mut self) {
        let order = self.canonical_order();
        let mut rank = vec![0u32; order.len()];
        for (r, &c) in order.iter().enumerate() {
            rank[c as usize] = r as u32;
        }
        for c in &mut self.component {
            *c = rank[*c as usize];
        }
        let mut canonical: Vec<_> = std::mem::take(&mut self.canonical)
            .into_iter()
            .map(Some)
            .collect();
        self.canonical = order
            .iter()
            .map(|&c| canonical[c as usize].take().expect("a permutation"))
            .collect();
        if !self.unchanged.is_empty() {
            self.unchanged = order.iter().map(|&c| self.unchanged[c as usize]).collect();
        }
        for index in &mut self.index {
            for (n, p) in index.values_mut() {
                *p = self.component[*n as usize];
            }
        }
    }

    fn bytes(&self) -> usize {
        self.text_bytes
            + self.node_value.len() * 64
            + self.edges.len() * std::mem::size_of::<Edge>()
            + self.rows.iter().map(InputRows::bytes).sum::<usize>()
    }

    /// The shortest chain of accepted edges joining two identifiers, or `None`.
    pub fn why_merged(&self, a: (&str, &str), b: (&str, &str)) -> Option<Vec<&Edge>> {
        let (from, to) = (self.node(a.0, a.1)?, self.node(b.0, b.1)?);
        if from == to {
            return Some(vec![]);
        }
        let mut adjacent: HashMap<u32, Vec<usize>> = HashMap::new();
        for (i, e) in self.edges.iter().enumerate().filter(|(_, e)| e.accepted) {
            adjacent.entry(e.a).or_default().push(i);
            adjacent.entry(e.b).or_default().push(i);
        }
        // Neighbours in identifier order, so equally short paths are chosen the same way
        // whatever order the rows were read in.
        for list in adjacent.values_mut() {
            list.sort_by_cached_key(|&e| {
                let edge = &self.edges[e];
                (self.describe(edge.a), self.describe(edge.b), edge.input)
            });
        }
        let mut came_by: HashMap<u32, Option<usize>> = HashMap::from([(from, None)]);
        let mut queue = VecDeque::from([from]);
        while let Some(n) = queue.pop_front() {
            if n == to {
                let mut path = vec![];
                let mut at = to;
                while let Some(Some(e)) = came_by.get(&at) {
                    let edge = &self.edges[*e];
                    path.push(edge);
                    at = if edge.a == at { edge.b } else { edge.a };
                }
                path.reverse();
                return Some(path);
            }
            for &e in adjacent.get(&n).into_iter().flatten() {
                let edge = &self.edges[e];
                let next = if edge.a == n { edge.b } else { edge.a };
                if let hashbrown::hash_map::Entry::Vacant(v) = came_by.entry(next) {
                    v.insert(Some(e));
                    queue.push_back(next);
                }
            }
        }
        None
    }

    /// This graph as the previous run's graph of the next build: every identifier with its
    /// canonical id and the first-seen time of its cluster.
    pub fn as_previous(&self) -> Previous {
        let mut cluster_first = vec![i64::MAX; self.canonical.len()];
        for (node, &c) in self.component.iter().enumerate() {
            cluster_first[c as usize] = cluster_first[c as usize].min(self.first_seen[node]);
        }
        (0..self.len())
            .map(|n| {
                let (t, v) = self.describe(n as u32);
                let c = self.component[n] as usize;
                (
                    (t.to_string(), v.to_string()),
                    (self.canonical[c].0.clone(), cluster_first[c]),
                )
            })
            .collect()
    }

    /// `(type, value)` of a node.
    pub fn describe(&self, n: u32) -> (&str, &str) {
        (
            self.types[self.node_type[n as usize] as usize].as_str(),
            &self.node_value[n as usize],
        )
    }
}

/// Builds the identity graph of `project`'s inputs, registered in `ctx`.
pub async fn build(
    ctx: &SessionContext,
    project: &Project,
    previous: Option<&Previous>,
    seed: Option<Seed>,
) -> Result<IdentityGraph> {
    build_counting(ctx, project, previous, seed, Arc::default(), false).await
}

/// [`build`], adding the rows it reads to `rows` as it goes, for progress reports; with
/// `keep_rows`, keeping each row's place in the graph in [`IdentityGraph::rows`].
pub async fn build_counting(
    ctx: &SessionContext,
    project: &Project,
    previous: Option<&Previous>,
    seed: Option<Seed>,
    rows: Arc<AtomicU64>,
    keep_rows: bool,
) -> Result<IdentityGraph> {
    let config = &project.identity;
    let Seed {
        graph: mut g,
        mut blocked,
        accepted,
        quarantine: carried,
        ids: seeded,
    } = seed.unwrap_or_else(|| Seed::empty(project));
    let earlier = match previous {
        Some(p) => Some(Earlier::Map(p)),
        None if !seeded.of.is_empty() => Some(Earlier::Seeded(&seeded)),
        None => None,
    };
    let seeded_rows: u64 = g.rows_read.iter().sum();
    let mut reservation =
        MemoryConsumer::new("identity graph").register(&ctx.runtime_env().memory_pool);
    // Per input, its edges by their ends. Edges of different inputs never meet, so each
    // index is dropped once its input is merged.
    let mut edge_index: Vec<KeyTable<u64, u32>> = vec![];
    for (i, e) in g.edges.iter().enumerate() {
        let input = e.input as usize;
        if edge_index.len() <= input {
            edge_index.resize_with(input + 1, KeyTable::default);
        }
        edge_index[input].insert(edge_key(e.a, e.b), i as u32);
    }
    let indexed = |index: &[KeyTable<u64, u32>]| index.iter().map(KeyTable::bytes).sum::<usize>();
    grow(&mut reservation, g.bytes() + indexed(&edge_index))?;
    let blocklists: Vec<Option<Blocklist>> = g
        .types
        .iter()
        .map(|t| config.blocklist.get(t).cloned())
        .collect();
    let inputs: Vec<&crate::project::Input> = project
        .inputs
        .iter()
        .filter(|i| !i.ids.is_empty())
        .collect();
    // Dropped on an error, the reads still running stop.
    let reads = spawn_reads(ctx, config, &inputs, &g, &blocklists, &rows, keep_rows);
    for (no, read) in reads.into_iter().enumerate() {
        let waited = Instant::now();
        let (planning_s, scan, parts) = read
            .join()
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))??;
        g.timings.planning_s += planning_s;
        g.timings.reading_s += waited.elapsed().as_secs_f64();
        let merged = Instant::now();
        let mut index = edge_index
            .get_mut(no)
            .map(std::mem::take)
            .unwrap_or_default();
        let held = indexed(&edge_index);
        if keep_rows {
            g.rows.push(InputRows::new(scan));
        }
        merge_parts(
            &mut g,
            &mut blocked,
            &mut index,
            &mut reservation,
            held,
            parts,
            no,
        )?;
        g.timings.merging_s += merged.elapsed().as_secs_f64();
    }
    drop(edge_index);
    let read_nothing = g.rows_read.iter().sum::<u64>() == seeded_rows;
    if read_nothing && !accepted.is_empty() {
        if let Some(earlier) = &earlier {
            // The same evidence closes the same way, into the previous people.
            if carry_over(&mut g, earlier) {
                for (e, a) in g.edges.iter_mut().zip(accepted) {
                    e.accepted = a;
                }
                g.quarantine = carried;
                g.index_people();
                return Ok(g);
            }
        }
    }
    for (t, values) in blocked.into_iter().enumerate() {
        for (value, (rule, rows)) in values {
            g.quarantine.push(Quarantined {
                id_type: g.types[t].clone(),
                value: value.into(),
                other: None,
                rule,
                rows,
            });
        }
    }
    let started = Instant::now();
    close(&mut g, config);
    g.timings.closure_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    name_components(&mut g, earlier.as_ref());
    g.index_people();
    g.timings.naming_s = started.elapsed().as_secs_f64();
    g.quarantine
        .sort_by(|a, b| (&a.rule, &a.id_type, &a.value).cmp(&(&b.rule, &b.id_type, &b.value)));
    Ok(g)
}

/// The evidence a previous run's graph holds: identifiers with when and where they were
/// seen, every link with its rows, and the blocklisted values met. A run that continues it
/// adds what it reads and closes the whole again, which gives the graph a run over all the
/// rows would have built.
pub struct Seed {
    graph: IdentityGraph,
    /// Per id type: blocklisted value -> (rule, rows).
    blocked: Vec<HashMap<Box<str>, (String, u64)>>,
    /// How the previous run closed the evidence, for a run that reads nothing new: per
    /// edge whether it stitched, and every quarantine entry.
    accepted: Vec<bool>,
    quarantine: Vec<Quarantined>,
    ids: SeededIds,
}

impl Seed {
    /// No evidence yet: the start of a full build.
    pub fn empty(project: &Project) -> Self {
        let graph = IdentityGraph {
            types: project.identity.priority.clone(),
            inputs: project
                .inputs
                .iter()
                .filter(|i| !i.ids.is_empty())
                .map(|i| i.name.clone())
                .collect(),
            ..Default::default()
        };
        let blocked = vec![HashMap::new(); graph.types.len()];
        Self {
            graph,
            blocked,
            accepted: vec![],
            quarantine: vec![],
            ids: SeededIds::default(),
        }
    }

    /// The evidence in a previous run's `identity_graph`, `identity_edges` and
    /// `identity_quarantine` tables, with `rows_read` per input (by name). Fails on
    /// anything the project does not declare: such a graph cannot be continued.
    pub async fn from_tables(
        project: &Project,
        graph: datafusion::prelude::DataFrame,
        edges: datafusion::prelude::DataFrame,
        quarantine: datafusion::prelude::DataFrame,
        rows_read: &std::collections::BTreeMap<String, u64>,
    ) -> Result<Self> {
        let Self {
            graph: mut g,
            mut blocked,
            mut accepted,
            quarantine: mut carried,
            ids: mut seeded,
        } = Self::empty(project);
        let unknown = |what: &str, name: &str| Error::Output {
            location: "identity_graph".into(),
            message: format!("it has {what} '{name}', which the project does not declare"),
        };
        let input_no = |g: &IdentityGraph, name: &str| {
            g.inputs
                .iter()
                .position(|i| i == name)
                .ok_or_else(|| unknown("input", name))
        };
        g.rows_read = g
            .inputs
            .iter()
            .map(|i| rows_read.get(i).copied().unwrap_or(0))
            .collect();
        let graph = graph.select_columns(&[
            "id_type",
            "id_value",
            "first_seen",
            "last_seen",
            "sources",
            "canonical_id",
        ])?;
        // The same rows give the previous canonical ids.
        let mut index: HashMap<String, u32> = HashMap::new();
        for batch in graph.collect().await? {
            let (t, v) = (utf8(batch.column(0))?, utf8(batch.column(1))?);
            let (first, last) = (
                micros(batch.column(2), i64::MAX)?,
                micros(batch.column(3), i64::MIN)?,
            );
            let canonical = utf8(batch.column(5))?;
            let canonical = canonical.as_string::<i32>();
            let sources = batch.column(4).as_list::<i32>();
            let (offsets, seen_in) = (sources.value_offsets(), utf8(sources.values())?);
            let seen_in = seen_in.as_string::<i32>();
            for r in 0..batch.num_rows() {
                let ty = g
                    .type_id(t.as_string::<i32>().value(r))
                    .ok_or_else(|| unknown("id type", t.as_string::<i32>().value(r)))?;
                let value = v.as_string::<i32>().value(r);
                let mut n = None;
                for i in offsets[r] as usize..offsets[r + 1] as usize {
                    n = Some(g.intern(ty, value, input_no(&g, seen_in.value(i))?));
                }
                let n = match n {
                    Some(n) => n,
                    None => g.intern_unseen(ty, value),
                };
                g.see(n, first[r], last[r]);
                let id = canonical.value(r);
                let i = match index.get(id) {
                    Some(&i) => i,
                    None => {
                        seeded.ids.push((id.to_string(), i64::MAX));
                        index.insert(id.to_string(), seeded.ids.len() as u32 - 1);
                        seeded.ids.len() as u32 - 1
                    }
                };
                seeded.ids[i as usize].1 = seeded.ids[i as usize].1.min(first[r]);
                if seeded.of.len() <= n as usize {
                    seeded.of.resize(n as usize + 1, i);
                }
                seeded.of[n as usize] = i;
            }
        }
        let edges = edges.select_columns(&[
            "id_type_a",
            "id_value_a",
            "id_type_b",
            "id_value_b",
            "source",
            "first_seen",
            "last_seen",
            "rows",
            "accepted",
        ])?;
        for batch in edges.collect().await? {
            let columns: Vec<_> = (0..5)
                .map(|c| utf8(batch.column(c)))
                .collect::<Result<_>>()?;
            let text = |c: usize, r: usize| columns[c].as_string::<i32>().value(r);
            let (first, last) = (
                micros(batch.column(5), i64::MAX)?,
                micros(batch.column(6), i64::MIN)?,
            );
            let rows = cast(batch.column(7), &DataType::Int64)?;
            let rows = rows.as_primitive::<arrow::datatypes::Int64Type>();
            let stitched = cast(batch.column(8), &DataType::Boolean)?;
            accepted.extend(stitched.as_boolean().iter().map(|a| a == Some(true)));
            for r in 0..batch.num_rows() {
                let end = |c: usize| {
                    let (t, v) = (text(c, r), text(c + 1, r));
                    g.node(t, v).ok_or_else(|| Error::Output {
                        location: "identity_edges".into(),
                        message: format!("it links {t} '{v}', which identity_graph does not list"),
                    })
                };
                let (a, b) = (end(0)?, end(2)?);
                let (a, b) = g.oriented(a, b);
                g.edges.push(Edge {
                    a,
                    b,
                    input: input_no(&g, text(4, r))? as u16,
                    first_seen: first[r],
                    last_seen: last[r],
                    rows: rows.value(r).max(0) as u64,
                    accepted: false,
                });
            }
        }
        let quarantine = quarantine.select_columns(&[
            "id_type",
            "id_value",
            "rule",
            "rows",
            "other_type",
            "other_value",
        ])?;
        for batch in quarantine.collect().await? {
            let columns: Vec<_> = (0..3)
                .chain(4..6)
                .map(|c| utf8(batch.column(c)))
                .collect::<Result<_>>()?;
            let text = |c: usize, r: usize| columns[c].as_string::<i32>().value(r);
            let rows = cast(batch.column(3), &DataType::Int64)?;
            let rows = rows.as_primitive::<arrow::datatypes::Int64Type>();
            for r in 0..batch.num_rows() {
                carried.push(Quarantined {
                    id_type: text(0, r).into(),
                    value: text(1, r).into(),
                    other: columns[3]
                        .is_valid(r)
                        .then(|| (text(3, r).into(), text(4, r).into())),
                    rule: text(2, r).into(),
                    rows: rows.value(r).max(0) as u64,
                });
                // Hubs and limits are found again over all the evidence; only blocklisted
                // values, which never became identifiers, are evidence themselves.
                if columns[3].is_valid(r) || !text(2, r).starts_with(config::BLOCKLIST_RULE) {
                    continue;
                }
                let t = g
                    .type_id(text(0, r))
                    .ok_or_else(|| unknown("id type", text(0, r)))?;
                blocked[t as usize].insert(
                    text(1, r).into(),
                    (text(2, r).to_string(), rows.value(r).max(0) as u64),
                );
            }
        }
        Ok(Self {
            graph: g,
            blocked,
            accepted,
            quarantine: carried,
            ids: seeded,
        })
    }
}

fn utf8(a: &arrow::array::ArrayRef) -> Result<arrow::array::ArrayRef> {
    Ok(cast(a, &DataType::Utf8)?)
}

/// A timestamp column as UTC micros, NULL (never seen) as `null`.
fn micros(a: &arrow::array::ArrayRef, null: i64) -> Result<Vec<i64>> {
    let ts = cast(a, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
    let ts = ts.as_primitive::<TimestampMicrosecondType>();
    Ok((0..ts.len())
        .map(|i| if ts.is_valid(i) { ts.value(i) } else { null })
        .collect())
}

/// The type event times are read as.
const UTC_MICROS: &str = "Timestamp(Microsecond, Some(\"UTC\"))";

/// One partition of one input: its identifiers interned locally, the blocklisted values it
/// met, and its links, each with when it was first and last seen and on how many rows.
#[derive(Default)]
struct Part {
    /// Per id type: value's key -> local node, first and last seen (in one slot, as every
    /// row updates both).
    index: Vec<KeyTable<Key, (u32, i64, i64)>>,
    /// Per local node: its type, key and value.
    values: Vec<(u16, Key, Box<str>)>,
    /// Per local node: first and last seen, taken from `index` once the partition is read.
    seen: Vec<(i64, i64)>,
    blocked: Vec<HashMap<Box<str>, (String, u64)>>,
    /// `(center << 32) | other` with first seen, last seen and rows, in key order (the
    /// order edges are added in): sorted on the reader's thread, not the one merging.
    links: Vec<(u64, (i64, i64, u64))>,
    rows: u64,
    /// Per row read, when kept: the local node of its most trusted identifier, or
    /// [`rows::NO_NODE`] for a row of none.
    centers: Vec<u32>,
}

/// A partition's index entry for a blocklisted value.
const BLOCKED: u32 = u32::MAX;

/// Reads one partition of `SELECT i0, i1, ..., t` (normalized identifiers of `types`,
/// then the event time) into a [`Part`].
async fn read_part(
    mut stream: SendableRecordBatchStream,
    types: Arc<Vec<u16>>,
    blocklists: Vec<Option<Blocklist>>,
    keys: KeyHasher,
    read: Arc<AtomicU64>,
    keep_rows: bool,
) -> Result<Part> {
    let n_types = blocklists.len();
    let mut part = Part {
        index: vec![KeyTable::default(); n_types],
        blocked: vec![HashMap::new(); n_types],
        ..Default::default()
    };
    let mut row_ids: Vec<(u16, u32)> = Vec::with_capacity(types.len());
    let mut linking: KeyTable<u64, (i64, i64, u64)> = KeyTable::default();
    // A batch's links, (center << 32 | other, time): updated after its rows, so that
    // their slots can be prefetched too.
    let mut links: Vec<(u64, Option<i64>)> = vec![];
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        part.rows += batch.num_rows() as u64;
        read.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        // As views: no copy of the text, whichever string type the scan produced.
        let values: Vec<_> = (0..types.len())
            .map(|c| cast(batch.column(c), &DataType::Utf8View))
            .collect::<std::result::Result<_, _>>()?;
        let columns: Vec<_> = values.iter().map(|v| v.as_string_view()).collect();
        let row_keys: Vec<Vec<Key>> = columns.iter().map(|c| keys.keys_of(c)).collect();
        let ts = batch
            .column(types.len())
            .as_primitive::<TimestampMicrosecondType>();
        let n_rows = batch.num_rows();
        for r in 0..n_rows {
            if r + AHEAD < n_rows {
                for (c, &ty) in types.iter().enumerate() {
                    part.index[ty as usize].prefetch(row_keys[c][r + AHEAD]);
                }
            }
            row_ids.clear();
            let t = ts.is_valid(r).then(|| ts.value(r));
            for (c, &ty) in types.iter().enumerate() {
                let key = row_keys[c][r];
                if key == Key::EMPTY {
                    continue;
                }
                let v = columns[c].value(r);
                let (slot, new) = part.index[ty as usize]
                    .get_or_insert_with(key, || (BLOCKED, i64::MAX, i64::MIN));
                if new {
                    // Only values not seen before meet the blocklist's patterns.
                    match blocklists[ty as usize].as_ref().and_then(|b| b.rule_for(v)) {
                        Some(rule) => {
                            part.blocked[ty as usize].insert(v.into(), (rule, 0));
                        }
                        None => {
                            slot.0 = part.values.len() as u32;
                            part.values.push((ty, key, v.into()));
                        }
                    }
                }
                let n = slot.0;
                if n == BLOCKED {
                    if let Some(entry) = part.blocked[ty as usize].get_mut(v) {
                        entry.1 += 1;
                    }
                    continue;
                }
                if let Some(t) = t {
                    (slot.1, slot.2) = (slot.1.min(t), slot.2.max(t));
                }
                row_ids.push((ty, n));
            }
            // A star around the most trusted identifier of the row (an input declares
            // each id type once, so types break every tie).
            let center = row_ids.iter().min().map(|&(_, n)| n);
            if keep_rows {
                part.centers.push(center.unwrap_or(rows::NO_NODE));
            }
            let Some(center) = center else {
                continue;
            };
            for &(_, other) in row_ids.iter().filter(|&&(_, n)| n != center) {
                links.push((u64::from(center) << 32 | u64::from(other), t));
            }
        }
        for (i, &(key, t)) in links.iter().enumerate() {
            if let Some(&(ahead, _)) = links.get(i + AHEAD) {
                linking.prefetch(ahead);
            }
            let (link, _) = linking.get_or_insert_with(key, || (i64::MAX, i64::MIN, 0));
            link.2 += 1;
            if let Some(t) = t {
                link.0 = link.0.min(t);
                link.1 = link.1.max(t);
            }
        }
        links.clear();
    }
    part.seen = vec![(i64::MAX, i64::MIN); part.values.len()];
    for index in std::mem::take(&mut part.index) {
        for (_, &(n, first, last)) in index.iter().filter(|(_, e)| e.0 != BLOCKED) {
            part.seen[n as usize] = (first, last);
        }
    }
    part.links = linking.iter().map(|(key, &link)| (key, link)).collect();
    part.links.sort_unstable_by_key(|&(key, _)| key);
    Ok(part)
}

/// What one input's read gives: the seconds spent planning its scan, the files each of
/// its partitions read, and the partitions.
type Read = Result<(f64, Option<rows::ScanFiles>, Vec<Part>)>;

/// Reads `inputs` into their partitions, one task per input; the tasks, in input order.
/// Inputs are read one after another on every core, and the next one starts as soon as a
/// partition of this one is done, without waiting for it to be merged: so neither the
/// merge of a large input nor the last partition still reading leaves a core idle.
fn spawn_reads(
    ctx: &SessionContext,
    config: &IdentityConfig,
    inputs: &[&crate::project::Input],
    g: &IdentityGraph,
    blocklists: &[Option<Blocklist>],
    rows: &Arc<AtomicU64>,
    keep_rows: bool,
) -> Vec<SpawnedTask<Read>> {
    let mut turn: Option<oneshot::Receiver<()>> = None;
    inputs
        .iter()
        .map(|&input| {
            let sql = scan_sql(config, input);
            let types: Arc<Vec<u16>> = input
                .ids
                .iter()
                .map(|id| g.type_id(&id.id_type).expect("declared"))
                .collect::<Vec<_>>()
                .into();
            let (next, next_turn) = oneshot::channel();
            let wait = turn.replace(next_turn);
            let (ctx, input, blocklists) = (ctx.clone(), input.clone(), blocklists.to_vec());
            let (keys, rows) = (g.keys, rows.clone());
            SpawnedTask::spawn(async move {
                // Cancelled when the input before failed: this one goes on, and its
                // result is never asked for.
                if let Some(wait) = wait {
                    let _ = wait.await;
                }
                let planned = Instant::now();
                let (scan, readers) =
                    start_readers(&ctx, &sql, types, &blocklists, keys, &rows, keep_rows).await?;
                let planning_s = planned.elapsed().as_secs_f64();
                Ok((planning_s, scan, read_input(&input, readers, next).await?))
            })
        })
        .collect()
}

/// `SELECT i0, i1, ..., t`: `input`'s identifiers, normalized, and its event time.
fn scan_sql(config: &IdentityConfig, input: &crate::project::Input) -> String {
    let columns: Vec<String> = input
        .ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            format!(
                "{} AS i{i}",
                config.normalize[&id.id_type].sql(&format!("\"{}\"", id.column))
            )
        })
        .collect();
    let time = match &input.event_time {
        // As UTC instants: a zoned time keeps its instant, a naive one is taken as UTC.
        Some(c) => format!("arrow_cast(\"{c}\", '{UTC_MICROS}') AS t"),
        None => format!("arrow_cast(NULL, '{UTC_MICROS}') AS t"),
    };
    format!(
        "SELECT {}, {time} FROM \"{}\"",
        columns.join(", "),
        input.name
    )
}

/// Starts reading [`scan_sql`]'s rows of identifiers of `types`, one worker per partition,
/// each into a [`Part`] of its own.
async fn start_readers(
    ctx: &SessionContext,
    sql: &str,
    types: Arc<Vec<u16>>,
    blocklists: &[Option<Blocklist>],
    keys: KeyHasher,
    rows: &Arc<AtomicU64>,
    keep_rows: bool,
) -> Result<(Option<rows::ScanFiles>, JoinSet<(usize, Result<Part>)>)> {
    // Each partition is read on its own worker into identifiers of its own; merging
    // them costs one lookup per distinct identifier, not per row.
    let plan = ctx.sql(sql).await?.create_physical_plan().await?;
    // Each partition reads its own files, so node ids follow the partitions' order from run
    // to run; DataFusion's scan would otherwise hand files to whichever partition is idle.
    let task = Arc::new(rows::own_files(&TaskContext::from(&ctx.state())));
    // Kept only where a later scan can find each row again by its position: not where
    // the optimizer spread a scan round robin (an input too small to split by bytes).
    let scan = rows::ScanFiles::of(&plan).filter(|_| keep_rows);
    let keep_rows = scan.is_some();
    let mut readers = JoinSet::new();
    for (i, stream) in execute_stream_partitioned(plan, task)?
        .into_iter()
        .enumerate()
    {
        // A blocklist of its own: regular expressions shared between threads contend.
        let (types, blocklists) = (types.clone(), blocklists.to_vec());
        let read = read_part(stream, types, blocklists, keys, rows.clone(), keep_rows);
        readers.spawn(async move { (i, read.await) });
    }
    Ok((scan, readers))
}

/// An input's partitions once all are read, in partition order (node ids and edge order
/// repeat from run to run); `next` is told when the first is done. Dropping `readers` on
/// an error stops the others.
async fn read_input(
    input: &crate::project::Input,
    mut readers: JoinSet<(usize, Result<Part>)>,
    next: oneshot::Sender<()>,
) -> Result<Vec<Part>> {
    let mut parts: Vec<Option<Part>> = (0..readers.len()).map(|_| None).collect();
    let mut next = Some(next);
    while let Some(done) = readers.join_next().await {
        if let Some(next) = next.take() {
            let _ = next.send(());
        }
        let (i, part) = done.map_err(|e| DataFusionError::External(Box::new(e)))?;
        let part = part.map_err(|e| match e.exit_code() {
            // Over the memory limit: not the input's fault.
            7 => e,
            _ => Error::InputData {
                input: input.name.clone(),
                message: format!(
                    "reading its identifiers{}: {}",
                    input
                        .event_time
                        .as_ref()
                        .map(|c| format!(" and event time '{c}'"))
                        .unwrap_or_default(),
                    e.cause()
                ),
            },
        })?;
        parts[i] = Some(part);
    }
    Ok(parts.into_iter().flatten().collect())
}

/// Adds an input's partitions to the graph in order, holding the memory they take beside
/// `held` bytes of other inputs' edge indexes.
fn merge_parts(
    g: &mut IdentityGraph,
    blocked: &mut [HashMap<Box<str>, (String, u64)>],
    edge_index: &mut KeyTable<u64, u32>,
    reservation: &mut MemoryReservation,
    held: usize,
    parts: Vec<Part>,
    input: usize,
) -> Result<()> {
    for part in parts {
        merge_part(g, blocked, edge_index, part, input);
        grow(reservation, g.bytes() + edge_index.bytes() + held)?;
    }
    Ok(())
}

/// Adds a partition's identifiers, blocklisted values and links to the graph.
fn merge_part(
    g: &mut IdentityGraph,
    blocked: &mut [HashMap<Box<str>, (String, u64)>],
    edge_index: &mut KeyTable<u64, u32>,
    part: Part,
    input: usize,
) {
    if g.rows_read.len() <= input {
        g.rows_read.resize(input + 1, 0);
    }
    g.rows_read[input] += part.rows;
    // In the partition's own order, so node ids and edge order repeat from run to run.
    // Nodes are found first and updated second, each pass prefetching rows ahead.
    let values = &part.values;
    let global: Vec<u32> = (0..values.len())
        .map(|i| {
            if let Some(&(t, ahead, _)) = values.get(i + AHEAD) {
                if let Some(index) = g.index.get(t as usize) {
                    index.prefetch(ahead);
                }
            }
            let (t, key, value) = &values[i];
            g.node_of(*t, *key, value)
        })
        .collect();
    for (i, (&n, &(first, last))) in global.iter().zip(&part.seen).enumerate() {
        if let Some(&ahead) = global.get(i + AHEAD) {
            let ahead = ahead as usize;
            prefetch(&g.first_seen[ahead]);
            prefetch(&g.last_seen[ahead]);
            prefetch(&g.sources[ahead]);
            prefetch(&g.touched[ahead]);
        }
        g.sources[n as usize] |= 1 << input.min(63);
        g.see(n, first, last);
        g.touched[n as usize] = true;
    }
    let links = part.links;
    for (t, values) in part.blocked.into_iter().enumerate() {
        for (value, (rule, rows)) in values {
            blocked[t].entry(value).or_insert((rule, 0)).1 += rows;
        }
    }
    let keys: Vec<(u64, u32, u32)> = links
        .iter()
        .map(|&(key, _)| {
            let (a, b) = (global[(key >> 32) as usize], global[key as u32 as usize]);
            (edge_key(a, b), a, b)
        })
        .collect();
    for (i, (&(key, a, b), &(_, (first, last, rows)))) in keys.iter().zip(&links).enumerate() {
        if let Some(&(ahead, _, _)) = keys.get(i + AHEAD) {
            edge_index.prefetch(ahead);
        }
        let (&mut e, new) = edge_index.get_or_insert_with(key, || g.edges.len() as u32);
        if new {
            let (a, b) = g.oriented(a, b);
            g.edges.push(Edge {
                a,
                b,
                input: input as u16,
                first_seen: i64::MAX,
                last_seen: i64::MIN,
                rows: 0,
                accepted: false,
            });
        }
        let e = &mut g.edges[e as usize];
        e.rows += rows;
        e.first_seen = e.first_seen.min(first);
        e.last_seen = e.last_seen.max(last);
    }
    if let Some(kept) = g.rows.get_mut(input) {
        kept.push(part.centers, global);
    }
}

/// An edge's key in its input's edge index: its ends in either order.
fn edge_key(a: u32, b: u32) -> u64 {
    u64::from(a.min(b)) << 32 | u64::from(a.max(b))
}

fn grow(reservation: &mut MemoryReservation, bytes: usize) -> Result<()> {
    if bytes > reservation.size() {
        reservation.try_grow(bytes - reservation.size())?;
    }
    Ok(())
}

/// Hub detection, then the limit-guarded transitive closure.
fn close(g: &mut IdentityGraph, config: &IdentityConfig) {
    let hub = find_hubs(g, config);
    let limited = limited_types(g, config);
    // Closed in any order first. Joining components only adds to their counts, so a limit
    // can break only inside a component that, closed without limits, holds more than the
    // limit allows; only those components are closed again, edge by edge in evidence order.
    let mut root = close_unlimited(g, &hub);
    let over = over_limit(g, &root, &limited);
    if over.iter().any(|&o| o) {
        close_in_order(g, &limited, &mut root, &over);
    }
    g.component = number_components(&root);
}

/// The limited id types, as (type, limit), in type order.
fn limited_types(g: &IdentityGraph, config: &IdentityConfig) -> Vec<(u16, u32)> {
    g.types
        .iter()
        .enumerate()
        .filter_map(|(t, name)| {
            let l = *config.limits.get(name)?;
            Some((t as u16, l.min(u64::from(u32::MAX)) as u32))
        })
        .collect()
}

/// Components numbered in order of their first node.
fn number_components(root: &[u32]) -> Vec<u32> {
    let mut dense = vec![u32::MAX; root.len()];
    let mut next = 0;
    (0..root.len())
        .map(|i| {
            if let Some(&ahead) = root.get(i + AHEAD) {
                prefetch(&dense[ahead as usize]);
            }
            let r = root[i] as usize;
            if dense[r] == u32::MAX {
                dense[r] = next;
                next += 1;
            }
            dense[r]
        })
        .collect()
}

/// Every node's root with all edges but the hubs' joined; marks those edges accepted.
fn close_unlimited(g: &mut IdentityGraph, hub: &[bool]) -> Vec<u32> {
    let mut sets = DenseUnionFind::new(g.len());
    for i in 0..g.edges.len() {
        if let Some(ahead) = g.edges.get(i + AHEAD) {
            for x in [ahead.a, ahead.b] {
                prefetch(&hub[x as usize]);
                sets.prefetch(x);
            }
        }
        let e = &mut g.edges[i];
        e.accepted = !hub[e.a as usize] && !hub[e.b as usize];
        if e.accepted {
            sets.union(e.a, e.b);
        }
    }
    sets.roots()
}

/// Per node: whether it roots a component holding more identifiers of a limited type than
/// the limit allows. Empty when nothing is limited.
fn over_limit(g: &IdentityGraph, root: &[u32], limited: &[(u16, u32)]) -> Vec<bool> {
    let k = limited.len();
    if k == 0 {
        return vec![];
    }
    let mut slot = vec![None; g.types.len()];
    for (j, &(t, _)) in limited.iter().enumerate() {
        slot[t as usize] = Some(j);
    }
    let mut counts = vec![0u32; root.len() * k];
    for (&t, &r) in g.node_type.iter().zip(root) {
        if let Some(j) = slot[t as usize] {
            counts[r as usize * k + j] += 1;
        }
    }
    counts
        .chunks_exact(k)
        .map(|c| c.iter().zip(limited).any(|(&n, &(_, limit))| n > limit))
        .collect()
}

/// Closes the components `over` marks again, most trusted evidence first, rejecting each
/// edge that would break a limit; their nodes' roots in `root` are replaced.
fn close_in_order(g: &mut IdentityGraph, limited: &[(u16, u32)], root: &mut [u32], over: &[bool]) {
    // Their nodes, numbered locally: usually a few among millions.
    let mut local = vec![u32::MAX; root.len()];
    let mut nodes = vec![];
    for (i, &r) in root.iter().enumerate() {
        if over[r as usize] {
            local[i] = nodes.len() as u32;
            nodes.push(i as u32);
        }
    }
    let mut edges = vec![];
    for (i, e) in g.edges.iter_mut().enumerate() {
        if e.accepted && over[root[e.a as usize] as usize] {
            e.accepted = false;
            edges.push(i as u32);
        }
    }
    let types: Vec<u16> = nodes.iter().map(|&n| g.node_type[n as usize]).collect();
    let mut closure = Closure::new(&types, limited.to_vec());
    for i in evidence_order(g, edges) {
        let i = i as usize;
        let (a, b) = (g.edges[i].a, g.edges[i].b);
        let (ra, rb) = (
            closure.find(local[a as usize]),
            closure.find(local[b as usize]),
        );
        if ra != rb {
            if let Some((t, limit)) = closure.broken(ra, rb) {
                let (ta, va) = g.describe(a);
                let (tb, vb) = g.describe(b);
                g.quarantine.push(Quarantined {
                    id_type: ta.into(),
                    value: va.into(),
                    other: Some((tb.into(), vb.into())),
                    rule: format!("limit: at most {limit} {} per person", g.types[t as usize]),
                    rows: g.edges[i].rows,
                });
                continue;
            }
            closure.union_roots(ra, rb);
        }
        g.edges[i].accepted = true;
    }
    for (l, &n) in nodes.iter().enumerate() {
        root[n as usize] = nodes[closure.find(l as u32) as usize];
    }
}

/// Per node: whether it is a hub, linked to more distinct identifiers of another type than
/// `[identity.hubs]` allows. Hubs go to the quarantine with the rows carrying them.
fn find_hubs(g: &mut IdentityGraph, config: &IdentityConfig) -> Vec<bool> {
    let n_types = g.types.len();
    let mut hub = vec![false; g.len()];
    // Per (type, other type): the most distinct neighbours allowed.
    let mut max = vec![None; n_types * n_types];
    for ((t, o), &m) in &config.hubs {
        if let (Some(t), Some(o)) = (g.type_id(t), g.type_id(o)) {
            max[t as usize * n_types + o as usize] = Some(m);
        }
    }
    if max.iter().all(Option::is_none) {
        return hub;
    }
    // Per node and watched other type, the first neighbour met. Only a node meeting a
    // second, different one can have more than one: those few (node, other type,
    // neighbour) are sorted and counted in runs, with no set per node.
    let mut slot = vec![None; n_types];
    let mut others = vec![];
    for t in 0..n_types {
        for o in 0..n_types {
            if max[t * n_types + o].is_some() && slot[o].is_none() {
                slot[o] = Some(others.len());
                others.push(o as u16);
            }
        }
    }
    let w = others.len();
    let watched = |x: u32, y: u32| {
        let (tx, ty) = (g.node_type[x as usize], g.node_type[y as usize]);
        max[tx as usize * n_types + ty as usize]?;
        Some(x as usize * w + slot[ty as usize]?)
    };
    let mut first = vec![u32::MAX; g.len() * w];
    let mut more: Vec<(u32, u16, u32)> = vec![];
    for (i, e) in g.edges.iter().enumerate() {
        if let Some(ahead) = g.edges.get(i + AHEAD) {
            for x in [ahead.a as usize, ahead.b as usize] {
                prefetch(&g.node_type[x]);
                prefetch(&first[x * w]);
            }
        }
        for (x, y) in [(e.a, e.b), (e.b, e.a)] {
            if let Some(s) = watched(x, y) {
                if first[s] == u32::MAX {
                    first[s] = y;
                } else if first[s] != y {
                    more.push((x, g.node_type[y as usize], y));
                }
            }
        }
    }
    more.sort_unstable();
    more.dedup();
    // Distinct neighbours of `other`'s type: the first, and any more.
    let distinct = |node: u32, other: u16| {
        let from = more.partition_point(|p| (p.0, p.1) < (node, other));
        let to = more.partition_point(|p| (p.0, p.1) <= (node, other));
        1 + to - from
    };
    let mut found: Vec<(u32, String)> = vec![];
    let mut check = |node: u32, other: u16, count: usize| {
        let t = g.node_type[node as usize];
        let m = max[t as usize * n_types + other as usize].expect("a watched pair");
        if count as u64 > m {
            let (t, o) = (&g.types[t as usize], &g.types[other as usize]);
            found.push((
                node,
                format!("hub: {t} linked to {count} {o} (at most {m})"),
            ));
        }
    };
    for run in more.chunk_by(|p, q| (p.0, p.1) == (q.0, q.1)) {
        check(run[0].0, run[0].1, run.len() + 1);
    }
    // A limit of none is broken by the first neighbour alone.
    if max.contains(&Some(0)) {
        for (s, &y) in first.iter().enumerate() {
            let (node, other) = ((s / w) as u32, others[s % w]);
            let t = g.node_type[node as usize];
            if y != u32::MAX && max[t as usize * n_types + other as usize] == Some(0) {
                check(node, other, distinct(node, other));
            }
        }
    }
    drop((first, more));
    found.sort();
    found.dedup_by_key(|(n, _)| *n);
    for (node, _) in &found {
        hub[*node as usize] = true;
    }
    // Rows carrying each hub, in one pass over the edges.
    let mut hub_rows: HashMap<u32, u64> = HashMap::new();
    for e in &g.edges {
        for node in [e.a, e.b] {
            if hub[node as usize] {
                *hub_rows.entry(node).or_default() += e.rows;
            }
        }
    }
    for (node, rule) in found {
        let (t, v) = g.describe(node);
        let rows = hub_rows.get(&node).copied().unwrap_or(0);
        g.quarantine.push(Quarantined {
            id_type: t.into(),
            value: v.into(),
            other: None,
            rule,
            rows,
        });
    }
    hub
}

/// The given edge indexes, most trusted evidence first (so limits reject the least trusted), then
/// earliest first. Ties break on the identifiers themselves, never on the order rows were
/// read in.
fn evidence_order(g: &IdentityGraph, edges: Vec<u32>) -> Vec<u32> {
    // (higher rank, lower rank, first seen) packed above the edge index: one integer sort,
    // with text compared only within runs of equal keys.
    let mut keys: Vec<u128> = edges
        .into_iter()
        .map(|i| {
            let e = &g.edges[i as usize];
            let (ra, rb) = (g.node_type[e.a as usize], g.node_type[e.b as usize]);
            let seen = (e.first_seen as u64) ^ (1 << 63);
            (u128::from(ra.max(rb)) << 112)
                | (u128::from(ra.min(rb)) << 96)
                | (u128::from(seen) << 32)
                | i as u128
        })
        .collect();
    keys.sort_unstable();
    let text = |i: u128| {
        let e = &g.edges[i as u32 as usize];
        let (a, b) = (g.describe(e.a), g.describe(e.b));
        (a.min(b), a.max(b), e.input)
    };
    for run in keys.chunk_by_mut(|x, y| x >> 32 == y >> 32) {
        if run.len() > 1 {
            run.sort_unstable_by(|&x, &y| text(x).cmp(&text(y)));
        }
    }
    keys.into_iter().map(|k| k as u32).collect()
}

/// Names the graph's nodes after the previous people they belong to, each person kept as
/// it was; `false` (and nothing changed) if a node belongs to no previous person.
fn carry_over(g: &mut IdentityGraph, earlier: &Earlier<'_>) -> bool {
    let mut people: HashMap<&str, u32> = HashMap::new();
    let mut component = Vec::with_capacity(g.len());
    for n in 0..g.len() {
        let Some((id, _)) = earlier.of(g, n) else {
            return false;
        };
        let next = people.len() as u32;
        component.push(*people.entry(id).or_insert(next));
    }
    let mut canonical = vec![(String::new(), Change::Kept); people.len()];
    for (id, c) in people {
        canonical[c as usize].0 = id.to_string();
    }
    g.unchanged = vec![true; canonical.len()];
    g.canonical = canonical;
    g.component = component;
    true
}

fn name_components(g: &mut IdentityGraph, earlier: Option<&Earlier<'_>>) {
    let n_components = g
        .component
        .iter()
        .map(|&c| c as usize + 1)
        .max()
        .unwrap_or(0);
    let Some(earlier) = earlier else {
        // Only each component's earliest identifier names it: one pass over the nodes,
        // with no list of members (a million people have millions).
        let mut firsts: Vec<Option<canonical::Earliest<'_>>> = vec![None; n_components];
        for (node, &c) in g.component.iter().enumerate() {
            let it = (
                g.first_seen[node],
                g.types[g.node_type[node] as usize].as_str(),
                &g.node_value[node],
            );
            let best = &mut firsts[c as usize];
            if best.is_none_or(|b| it < b) {
                *best = Some(it);
            }
        }
        let firsts: Vec<_> = firsts
            .into_iter()
            .map(|f| f.expect("components are not empty"))
            .collect();
        g.canonical = canonical::assign_new(&firsts);
        g.unchanged = vec![false; n_components];
        return;
    };
    let members =
        canonical::Components::group(&g.component, n_components, |node| canonical::Member {
            id_type: g.types[g.node_type[node] as usize].as_str(),
            value: &g.node_value[node],
            first_seen: g.first_seen[node],
            previous: earlier.of(g, node),
        });
    let named = canonical::assign(&members);
    // A person is unchanged when no row read this run carries one of its identifiers and
    // its identifiers are exactly one previous person's, under the id it keeps.
    let sizes = earlier.sizes();
    let mut unchanged: Vec<bool> = members
        .iter()
        .zip(&named)
        .map(|(members, (id, _))| {
            sizes.get(id.as_str()) == Some(&members.len())
                && members
                    .iter()
                    .all(|m| m.previous.map(|p| p.0) == Some(id.as_str()))
        })
        .collect();
    for (node, &c) in g.component.iter().enumerate() {
        if g.touched[node] {
            unchanged[c as usize] = false;
        }
    }
    g.canonical = named;
    g.unchanged = unchanged;
}

/// The graph's tables, for queries: `identity_graph`, `identity_quarantine`,
/// `identity_edges`, `identity_changes`.
pub fn register_tables(ctx: &SessionContext, graph: Arc<IdentityGraph>) -> Result<()> {
    tables::register(ctx, graph)
}

/// Reads the `identity_graph` a previous run wrote at `path`, if there is one.
pub async fn load_previous(
    ctx: &SessionContext,
    path: &std::path::Path,
) -> Result<Option<Previous>> {
    if !path.exists() {
        return Ok(None);
    }
    let location = path.display().to_string();
    let df = ctx
        .read_parquet(location.as_str(), Default::default())
        .await?;
    previous_from(df).await.map(Some)
}

/// A previous run's `identity_graph`, read from `df`.
pub async fn previous_from(df: datafusion::prelude::DataFrame) -> Result<Previous> {
    let df = df.select_columns(&["id_type", "id_value", "canonical_id", "first_seen"])?;
    let mut rows = PreviousRows::default();
    for batch in df.collect().await? {
        let (t, v, c) = (
            utf8(batch.column(0))?,
            utf8(batch.column(1))?,
            utf8(batch.column(2))?,
        );
        rows.add(&t, &v, &c, &micros(batch.column(3), i64::MAX)?);
    }
    Ok(rows.finish())
}

/// The rows of a previous `identity_graph`, gathered into a [`Previous`].
#[derive(Default)]
struct PreviousRows {
    rows: Vec<(String, String, String, i64)>,
}

impl PreviousRows {
    fn add(&mut self, t: &dyn Array, v: &dyn Array, c: &dyn Array, first: &[i64]) {
        let (t, v, c) = (
            t.as_string::<i32>(),
            v.as_string::<i32>(),
            c.as_string::<i32>(),
        );
        for (r, &first) in first.iter().enumerate() {
            self.rows.push((
                t.value(r).into(),
                v.value(r).into(),
                c.value(r).into(),
                first,
            ));
        }
    }

    /// Each identifier with its canonical id and when that id's cluster was first seen.
    fn finish(self) -> Previous {
        let mut cluster_first: HashMap<&str, i64> = HashMap::new();
        for (_, _, c, first) in &self.rows {
            let e = cluster_first.entry(c.as_str()).or_insert(i64::MAX);
            *e = (*e).min(*first);
        }
        let cluster_first: HashMap<String, i64> = cluster_first
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        self.rows
            .into_iter()
            .map(|(t, v, c, _)| {
                let first = cluster_first[&c];
                ((t, v), (c, first))
            })
            .collect()
    }
}

/// Builds the graph and writes its tables as Parquet into `out`, keeping canonical ids
/// stable against the `identity_graph` already there.
pub async fn run(
    ctx: &SessionContext,
    project: &Project,
    out: &std::path::Path,
) -> Result<IdentityGraph> {
    let previous = load_previous(ctx, &out.join("identity_graph.parquet")).await?;
    let graph = Arc::new(build(ctx, project, previous.as_ref(), None).await?);
    for (name, table) in graph.output_tables()? {
        // Batch by batch: the tables are made from the graph as they are read.
        let path = out.join(format!("{name}.parquet"));
        let mut file = crate::materialize::ParquetFile::create(&path, table.schema())?;
        let mut batches = ctx.read_table(table)?.execute_stream().await?;
        while let Some(batch) = batches.next().await {
            file.write(&batch?)?;
        }
        file.publish()?;
    }
    Ok(Arc::into_inner(graph).expect("the graph's tables are dropped"))
}

impl IdentityGraph {
    /// One line: identifiers, people, quarantined entries and id changes.
    /// How many ids were kept, appeared, merged and split since the previous graph.
    fn changes(&self) -> [usize; 4] {
        let mut counts = [0; 4];
        for (_, change) in &self.canonical {
            counts[match change {
                Change::Kept => 0,
                Change::Appeared => 1,
                Change::Merged(_) => 2,
                Change::SplitFrom(_) => 3,
            }] += 1;
        }
        counts
    }

    pub fn summary(&self) -> String {
        let [kept, appeared, merged, split] = self.changes();
        let accepted = self.edges.iter().filter(|e| e.accepted).count();
        format!(
            "{} identifiers, {} people, {accepted} of {} links stitched, {} quarantined; ids: {kept} kept, {appeared} appeared, {merged} merged, {split} split",
            self.len(),
            self.components(),
            self.edges.len(),
            self.quarantine.len(),
        )
    }

    /// The graph's figures for a run report.
    pub fn stats(&self) -> serde_json::Value {
        let [kept, appeared, merged, split] = self.changes();
        let rows: serde_json::Map<String, serde_json::Value> = self
            .inputs
            .iter()
            .zip(&self.rows_read)
            .map(|(input, rows)| (input.clone(), (*rows).into()))
            .collect();
        serde_json::json!({
            "rows_read": rows,
            "identifiers": self.len(),
            "people": self.components(),
            "links": self.edges.len(),
            "links_stitched": self.edges.iter().filter(|e| e.accepted).count(),
            "quarantined": self.quarantine.len(),
            "ids": {"kept": kept, "appeared": appeared, "merged": merged, "split": split},
            "seconds": self.timings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Random links among a few hundred identifiers of three types: a giant component that
    /// breaks limits, and small ones that do not.
    fn random_graph(seed: u64) -> IdentityGraph {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut g = IdentityGraph {
            types: vec!["user_id".into(), "email".into(), "anonymous_id".into()],
            ..Default::default()
        };
        let n = 400;
        for i in 0..n {
            g.node_type.push(rng.random_range(0..3));
            g.node_value.push(&format!("v{i}"));
        }
        for _ in 0..450 {
            let (a, b) = (rng.random_range(0..n), rng.random_range(0..n));
            if a != b {
                g.edges.push(Edge {
                    a,
                    b,
                    input: rng.random_range(0..2),
                    first_seen: rng.random_range(0..40),
                    last_seen: 40,
                    rows: 1,
                    accepted: false,
                });
            }
        }
        g
    }

    fn config(hubs: &[(&str, &str, u64)], limits: &[(&str, u64)]) -> IdentityConfig {
        IdentityConfig {
            priority: ["user_id", "email", "anonymous_id"]
                .map(String::from)
                .into(),
            normalize: Default::default(),
            blocklist: Default::default(),
            hubs: hubs
                .iter()
                .map(|&(t, o, m)| ((t.into(), o.into()), m))
                .collect(),
            limits: limits.iter().map(|&(t, m)| (t.into(), m)).collect(),
        }
    }

    fn rejected(g: &IdentityGraph) -> Vec<String> {
        g.quarantine.iter().map(|q| format!("{q:?}")).collect()
    }

    /// Closing again only the components that break a limit decides every edge, and
    /// forms every person, as closing all of them in evidence order does.
    #[test]
    fn closing_over_limit_components_alone_matches_closing_all_in_order() {
        let configs = [
            config(&[], &[("user_id", 1)]),
            config(
                &[("anonymous_id", "user_id", 1)],
                &[("user_id", 2), ("email", 1)],
            ),
            config(&[], &[]),
        ];
        for seed in 0..20 {
            for c in &configs {
                let mut fast = random_graph(seed);
                close(&mut fast, c);

                let mut all = random_graph(seed);
                let hub = find_hubs(&mut all, c);
                let limited = limited_types(&all, c);
                let mut root = close_unlimited(&mut all, &hub);
                let every = vec![true; root.len()];
                close_in_order(&mut all, &limited, &mut root, &every);

                assert_eq!(fast.component, number_components(&root), "seed {seed}");
                let accepted = |g: &IdentityGraph| -> Vec<bool> {
                    g.edges.iter().map(|e| e.accepted).collect()
                };
                assert_eq!(accepted(&fast), accepted(&all), "seed {seed}");
                assert_eq!(rejected(&fast), rejected(&all), "seed {seed}");
                let limited_some = fast.quarantine.iter().any(|q| q.rule.starts_with("limit"));
                assert_eq!(limited_some, !c.limits.is_empty(), "seed {seed}");
            }
        }
    }

    #[test]
    fn people_are_numbered_in_canonical_id_order() {
        for seed in 0..5 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut g = IdentityGraph {
                types: vec!["user_id".into(), "email".into()],
                ..Default::default()
            };
            let nodes: Vec<u32> = (0..300)
                .map(|i| g.intern(rng.random_range(0..2), &format!("v{i}"), 0))
                .collect();
            for _ in 0..250 {
                let (a, b) = (rng.random_range(0..300), rng.random_range(0..300));
                if a != b {
                    let (a, b) = g.oriented(nodes[a], nodes[b]);
                    g.edges.push(Edge {
                        a,
                        b,
                        input: 0,
                        first_seen: 0,
                        last_seen: 0,
                        rows: 1,
                        accepted: false,
                    });
                }
            }
            close(&mut g, &config(&[], &[]));
            let together: Vec<bool> = g
                .edges
                .iter()
                .map(|e| g.component[e.a as usize] == g.component[e.b as usize])
                .collect();
            name_components(&mut g, None);
            g.index_people();
            assert!(
                g.canonical.windows(2).all(|w| w[0].0 < w[1].0),
                "seed {seed}"
            );
            assert_eq!(g.unchanged.len(), g.canonical.len());
            let still: Vec<bool> = g
                .edges
                .iter()
                .map(|e| g.component[e.a as usize] == g.component[e.b as usize])
                .collect();
            assert_eq!(still, together, "seed {seed}");
            for n in 0..g.len() {
                let (t, v) = (g.node_type[n], &g.node_value[n]);
                assert_eq!(g.person_of(t, v), Some(g.component[n]), "seed {seed}");
            }
        }
    }

    /// Hubs are the nodes with more distinct neighbours of the watched type than allowed,
    /// as counted with a set per node; a limit of 0 makes any neighbour too many.
    #[test]
    fn hubs_count_distinct_neighbours() {
        for seed in 0..10 {
            for m in [0, 1, 2] {
                let mut g = random_graph(seed);
                // Repeated links (from another input) count once.
                let again: Vec<Edge> = g.edges.iter().step_by(3).cloned().collect();
                g.edges.extend(again);
                let hub = find_hubs(&mut g, &config(&[("anonymous_id", "user_id", m)], &[]));
                let mut neighbours = vec![std::collections::BTreeSet::new(); g.len()];
                for e in &g.edges {
                    for (x, y) in [(e.a, e.b), (e.b, e.a)] {
                        if g.node_type[x as usize] == 2 && g.node_type[y as usize] == 0 {
                            neighbours[x as usize].insert(y);
                        }
                    }
                }
                let expected: Vec<bool> = neighbours.iter().map(|s| s.len() as u64 > m).collect();
                assert_eq!(hub, expected, "seed {seed}, at most {m}");
                assert!(hub.contains(&true), "seed {seed}, at most {m}");
                for q in &g.quarantine {
                    let node = (0..g.len())
                        .position(|n| g.node_value[n] == q.value)
                        .unwrap();
                    let count = neighbours[node].len();
                    assert_eq!(
                        q.rule,
                        format!("hub: anonymous_id linked to {count} user_id (at most {m})")
                    );
                }
            }
        }
    }
}
