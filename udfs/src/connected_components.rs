//! `connected_components(id_a, id_b)`: the transitive closure of identifier links within
//! each group, for SQL composition (per-tenant `GROUP BY`, small graphs). For a whole lake
//! use the identity graph, which scales further.

use std::sync::{Arc, LazyLock};

use arrow::array::{Array, ArrayRef, AsArray, ListArray, StringArray, StructArray};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, FieldRef, Fields};
use datafusion::common::types::logical_string;
use datafusion::common::{exec_err, Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Coercion, Documentation, EmitTo,
    GroupsAccumulator, Signature, TypeSignature, TypeSignatureClass, Volatility,
};
use datafusion_macros::user_doc;

use crate::common::{kept, utf8};
use crate::union_find::StringUnionFind;

/// The shared instance, for registries and expression builders.
pub fn udaf() -> Arc<AggregateUDF> {
    static UDAF: LazyLock<Arc<AggregateUDF>> =
        LazyLock::new(|| Arc::new(AggregateUDF::new_from_impl(ConnectedComponents::new())));
    Arc::clone(&UDAF)
}

#[user_doc(
    doc_section(label = "Identity Functions"),
    description = "Connected components of the graph whose edges are the rows' `(id_a, id_b)` \
pairs. Returns, per group, a list of `{identifier, component}` structs, one per distinct \
identifier, where `component` is the smallest identifier of its component (so the labels \
depend only on the graph, never on row order or partitioning). A row with one NULL side adds \
the other as an isolated identifier; rows with both NULL add nothing; self-loops and \
duplicate edges are harmless. Use `unnest` to get one row per identifier.",
    syntax_example = "connected_components(id_a, id_b)",
    sql_example = r#"```sql
> select unnest(connected_components(a, b)) from (values ('x', 'y'), ('y', 'z'), ('q', null)) t(a, b);
+-----------------------------------------+
| {identifier: q, component: q}           |
| {identifier: x, component: x}           |
| {identifier: y, component: x}           |
| {identifier: z, component: x}           |
+-----------------------------------------+
```"#,
    argument(
        name = "id_a",
        description = "One end of a link: any string expression."
    ),
    argument(name = "id_b", description = "The other end: any string expression.")
)]
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ConnectedComponents {
    signature: Signature,
}

impl Default for ConnectedComponents {
    fn default() -> Self {
        Self::new()
    }
}

impl ConnectedComponents {
    pub fn new() -> Self {
        let string = || Coercion::new_exact(TypeSignatureClass::Native(logical_string()));
        Self {
            signature: Signature::one_of(
                vec![TypeSignature::Coercible(vec![string(), string()])],
                Volatility::Immutable,
            ),
        }
    }
}

fn pair_fields() -> Fields {
    Fields::from(vec![
        Field::new("identifier", DataType::Utf8, false),
        Field::new("component", DataType::Utf8, false),
    ])
}

fn item_field() -> FieldRef {
    Arc::new(Field::new("item", DataType::Struct(pair_fields()), true))
}

fn string_list_field() -> FieldRef {
    Arc::new(Field::new("item", DataType::Utf8, true))
}

impl AggregateUDFImpl for ConnectedComponents {
    fn name(&self) -> &str {
        "connected_components"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::List(item_field()))
    }

    fn is_nullable(&self) -> bool {
        false
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(["nodes", "roots"]
            .iter()
            .map(|n| {
                Arc::new(Field::new(
                    format_state_name(args.name, n),
                    DataType::List(string_list_field()),
                    true,
                ))
            })
            .collect())
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(ComponentsAccumulator::default()))
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        _args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(ComponentsGroupsAccumulator::default()))
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.doc()
    }
}

/// Adds row `i`'s link to `uf`.
fn add_row(uf: &mut StringUnionFind, a: &StringArray, b: &StringArray, i: usize) {
    let b_value = b.is_valid(i).then(|| b.value(i));
    if a.is_valid(i) {
        uf.link(a.value(i), b_value);
    } else if let Some(b) = b_value {
        uf.link(b, None);
    }
}

/// Links one state row (a list of nodes and the list of their representatives) into `uf`.
fn merge_row(
    uf: &mut StringUnionFind,
    nodes: &ListArray,
    roots: &ListArray,
    i: usize,
) -> Result<()> {
    if nodes.is_null(i) {
        return Ok(());
    }
    let (n, r) = (nodes.value(i), roots.value(i));
    let (n, r) = (n.as_string::<i32>(), r.as_string::<i32>());
    if n.len() != r.len() {
        return exec_err!(
            "connected_components: corrupt state, {} nodes but {} roots",
            n.len(),
            r.len()
        );
    }
    for j in 0..n.len() {
        uf.link(n.value(j), Some(r.value(j)));
    }
    Ok(())
}

fn string_lists(rows: Vec<Vec<&str>>) -> ListArray {
    let offsets = OffsetBuffer::from_lengths(rows.iter().map(Vec::len));
    let values: StringArray = rows.into_iter().flatten().map(Some).collect();
    ListArray::new(string_list_field(), offsets, Arc::new(values), None)
}

/// The mergeable state of each group: `(nodes, roots)` lists.
fn states(groups: &mut [StringUnionFind]) -> Vec<ArrayRef> {
    let mut nodes = Vec::with_capacity(groups.len());
    let mut roots = Vec::with_capacity(groups.len());
    for g in groups.iter_mut() {
        let (n, r): (Vec<&str>, Vec<&str>) = g.pairs().into_iter().unzip();
        nodes.push(n);
        roots.push(r);
    }
    vec![Arc::new(string_lists(nodes)), Arc::new(string_lists(roots))]
}

/// Each group's `[{identifier, component}]` list.
fn results(groups: &mut [StringUnionFind]) -> ListArray {
    let labelled: Vec<Vec<(&str, &str)>> = groups.iter_mut().map(|g| g.labelled()).collect();
    let offsets = OffsetBuffer::from_lengths(labelled.iter().map(Vec::len));
    let ids: StringArray = labelled.iter().flatten().map(|(n, _)| Some(*n)).collect();
    let comps: StringArray = labelled.iter().flatten().map(|(_, c)| Some(*c)).collect();
    let items = StructArray::new(pair_fields(), vec![Arc::new(ids), Arc::new(comps)], None);
    ListArray::new(item_field(), offsets, Arc::new(items), None)
}

#[derive(Debug, Default)]
struct ComponentsAccumulator {
    uf: StringUnionFind,
}

impl Accumulator for ComponentsAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let (a, b) = (
            utf8("connected_components", &values[0])?,
            utf8("connected_components", &values[1])?,
        );
        let (a, b) = (a.as_string::<i32>(), b.as_string::<i32>());
        for i in 0..a.len() {
            add_row(&mut self.uf, a, b, i);
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let (nodes, roots) = (states[0].as_list::<i32>(), states[1].as_list::<i32>());
        for i in 0..nodes.len() {
            merge_row(&mut self.uf, nodes, roots, i)?;
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        states(std::slice::from_mut(&mut self.uf))
            .iter()
            .map(|a| ScalarValue::try_from_array(a, 0))
            .collect()
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::List(Arc::new(results(std::slice::from_mut(
            &mut self.uf,
        )))))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.uf.size_bytes()
    }
}

#[derive(Debug, Default)]
struct ComponentsGroupsAccumulator {
    groups: Vec<StringUnionFind>,
}

impl GroupsAccumulator for ComponentsGroupsAccumulator {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&arrow::array::BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.groups.resize_with(total_num_groups, Default::default);
        let (a, b) = (
            utf8("connected_components", &values[0])?,
            utf8("connected_components", &values[1])?,
        );
        let (a, b) = (a.as_string::<i32>(), b.as_string::<i32>());
        for (i, &g) in group_indices.iter().enumerate() {
            if kept(opt_filter, i) {
                add_row(&mut self.groups[g], a, b, i);
            }
        }
        Ok(())
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.groups.resize_with(total_num_groups, Default::default);
        let (nodes, roots) = (values[0].as_list::<i32>(), values[1].as_list::<i32>());
        for (i, &g) in group_indices.iter().enumerate() {
            merge_row(&mut self.groups[g], nodes, roots, i)?;
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let mut taken = emit_to.take_needed(&mut self.groups);
        Ok(Arc::new(results(&mut taken)))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let mut taken = emit_to.take_needed(&mut self.groups);
        Ok(states(&mut taken))
    }

    /// Each row on its own is the state of a one-edge graph: both ends, rooted at the first.
    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&arrow::array::BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let (a, b) = (
            utf8("connected_components", &values[0])?,
            utf8("connected_components", &values[1])?,
        );
        let (a, b) = (a.as_string::<i32>(), b.as_string::<i32>());
        let mut nodes = Vec::with_capacity(a.len());
        let mut roots = Vec::with_capacity(a.len());
        for i in 0..a.len() {
            let keep = kept(opt_filter, i);
            let ends: Vec<&str> = [a, b]
                .iter()
                .filter(|x| keep && x.is_valid(i))
                .map(|x| x.value(i))
                .collect();
            roots.push(
                ends.first()
                    .map(|&r| vec![r; ends.len()])
                    .unwrap_or_default(),
            );
            nodes.push(ends);
        }
        Ok(vec![
            Arc::new(string_lists(nodes)),
            Arc::new(string_lists(roots)),
        ])
    }

    fn size(&self) -> usize {
        self.groups.capacity() * std::mem::size_of::<StringUnionFind>()
            + self
                .groups
                .iter()
                .map(StringUnionFind::size_bytes)
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet, HashMap};

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    type Edge = (Option<String>, Option<String>);

    /// Breadth-first search: the reference answer, name -> smallest name in its component.
    fn bfs(edges: &[Edge]) -> BTreeMap<String, String> {
        let mut adj: HashMap<&str, Vec<&str>> = HashMap::new();
        for (a, b) in edges {
            let ends: Vec<&str> = [a, b].iter().filter_map(|x| x.as_deref()).collect();
            for &e in &ends {
                adj.entry(e).or_default();
            }
            if let [x, y] = ends[..] {
                adj.get_mut(x).unwrap().push(y);
                adj.get_mut(y).unwrap().push(x);
            }
        }
        let mut out = BTreeMap::new();
        for &start in adj.keys() {
            if out.contains_key(start) {
                continue;
            }
            let mut seen = BTreeSet::from([start]);
            let mut queue = vec![start];
            while let Some(n) = queue.pop() {
                for &m in &adj[n] {
                    if seen.insert(m) {
                        queue.push(m);
                    }
                }
            }
            let label = seen.iter().next().unwrap().to_string();
            for n in seen {
                out.insert(n.to_string(), label.clone());
            }
        }
        out
    }

    /// Random graphs with cycles, self-loops, duplicates, long chains, stars and nulls.
    fn random_graph(rng: &mut StdRng) -> Vec<Edge> {
        let nodes = rng.random_range(1..60);
        let name = |i: usize| format!("id{i:03}");
        let mut edges: Vec<Edge> = vec![];
        for _ in 0..rng.random_range(0..80) {
            let a = rng.random_range(0..nodes);
            let b = match rng.random_range(0..10) {
                0 => a,               // self loop
                1 => (a + 1) % nodes, // chain
                2 => 0,               // star around id000
                _ => rng.random_range(0..nodes),
            };
            let (a, b) = (Some(name(a)), Some(name(b)));
            let edge = match rng.random_range(0..12) {
                0 => (a, None),
                1 => (None, b),
                2 => (None, None),
                _ => (a, b),
            };
            if rng.random_bool(0.1) {
                edges.push(edge.clone()); // duplicate
            }
            edges.push(edge);
        }
        edges
    }

    fn arrays(edges: &[Edge]) -> Vec<ArrayRef> {
        let a: StringArray = edges.iter().map(|e| e.0.as_deref()).collect();
        let b: StringArray = edges.iter().map(|e| e.1.as_deref()).collect();
        vec![Arc::new(a), Arc::new(b)]
    }

    fn to_map(list: &ListArray, row: usize) -> BTreeMap<String, String> {
        let items = list.value(row);
        let items = items.as_struct();
        let (ids, comps) = (
            items.column(0).as_string::<i32>(),
            items.column(1).as_string::<i32>(),
        );
        (0..ids.len())
            .map(|i| (ids.value(i).to_string(), comps.value(i).to_string()))
            .collect()
    }

    fn scalar_map(v: ScalarValue) -> BTreeMap<String, String> {
        match v {
            ScalarValue::List(l) => to_map(&l, 0),
            other => panic!("not a list: {other:?}"),
        }
    }

    /// Splits `edges` into `parts` chunks, accumulates each separately, merges the states.
    fn split_and_merge(edges: &[Edge], cuts: &[usize]) -> BTreeMap<String, String> {
        let mut merged = ComponentsAccumulator::default();
        let mut start = 0;
        for &end in cuts.iter().chain(std::iter::once(&edges.len())) {
            let mut part = ComponentsAccumulator::default();
            part.update_batch(&arrays(&edges[start..end])).unwrap();
            let state: Vec<ArrayRef> = part
                .state()
                .unwrap()
                .iter()
                .map(|s| s.to_array().unwrap())
                .collect();
            merged.merge_batch(&state).unwrap();
            start = end;
        }
        scalar_map(merged.evaluate().unwrap())
    }

    #[test]
    fn matches_bfs_in_any_order_and_split() {
        let mut rng = StdRng::seed_from_u64(42);
        for _ in 0..300 {
            let mut edges = random_graph(&mut rng);
            let expected = bfs(&edges);
            let mut one = ComponentsAccumulator::default();
            one.update_batch(&arrays(&edges)).unwrap();
            assert_eq!(scalar_map(one.evaluate().unwrap()), expected);
            // Any order.
            for i in (1..edges.len()).rev() {
                edges.swap(i, rng.random_range(0..=i));
            }
            let mut cuts: Vec<usize> = (0..rng.random_range(0..4))
                .map(|_| rng.random_range(0..=edges.len()))
                .collect();
            cuts.sort_unstable();
            assert_eq!(split_and_merge(&edges, &cuts), expected);
        }
    }

    #[test]
    fn groups_accumulator_agrees_with_accumulator() {
        let mut rng = StdRng::seed_from_u64(7);
        let graphs: Vec<Vec<Edge>> = (0..5).map(|_| random_graph(&mut rng)).collect();
        // Interleave the groups' rows, split into two partial aggregations, merge states.
        let mut rows: Vec<(usize, Edge)> = graphs
            .iter()
            .enumerate()
            .flat_map(|(g, es)| es.iter().map(move |e| (g, e.clone())))
            .collect();
        for i in (1..rows.len()).rev() {
            rows.swap(i, rng.random_range(0..=i));
        }
        let half = rows.len() / 2;
        let mut final_acc = ComponentsGroupsAccumulator::default();
        for part in [&rows[..half], &rows[half..]] {
            let mut partial = ComponentsGroupsAccumulator::default();
            let edges: Vec<Edge> = part.iter().map(|(_, e)| e.clone()).collect();
            let groups: Vec<usize> = part.iter().map(|(g, _)| *g).collect();
            partial
                .update_batch(&arrays(&edges), &groups, None, graphs.len())
                .unwrap();
            let state = partial.state(EmitTo::All).unwrap();
            final_acc
                .merge_batch(&state, &(0..graphs.len()).collect::<Vec<_>>(), graphs.len())
                .unwrap();
        }
        // Emit the first two groups, then the rest.
        let first = final_acc.evaluate(EmitTo::First(2)).unwrap();
        let rest = final_acc.evaluate(EmitTo::All).unwrap();
        let (first, rest) = (first.as_list::<i32>(), rest.as_list::<i32>());
        for (g, graph) in graphs.iter().enumerate() {
            let got = if g < 2 {
                to_map(first, g)
            } else {
                to_map(rest, g - 2)
            };
            assert_eq!(got, bfs(graph), "group {g}");
        }
    }

    #[test]
    fn converted_rows_merge_like_updates() {
        let mut rng = StdRng::seed_from_u64(3);
        let edges = random_graph(&mut rng);
        let acc = ComponentsGroupsAccumulator::default();
        let state = acc.convert_to_state(&arrays(&edges), None).unwrap();
        let mut merged = ComponentsGroupsAccumulator::default();
        merged
            .merge_batch(&state, &vec![0; edges.len()], 1)
            .unwrap();
        let out = merged.evaluate(EmitTo::All).unwrap();
        assert_eq!(to_map(out.as_list::<i32>(), 0), bfs(&edges));
    }

    #[test]
    fn filter_skips_rows() {
        let edges: Vec<Edge> = vec![
            (Some("a".into()), Some("b".into())),
            (Some("b".into()), Some("c".into())),
        ];
        let mut acc = ComponentsGroupsAccumulator::default();
        let filter = arrow::array::BooleanArray::from(vec![true, false]);
        acc.update_batch(&arrays(&edges), &[0, 0], Some(&filter), 1)
            .unwrap();
        let out = acc.evaluate(EmitTo::All).unwrap();
        let expected: BTreeMap<String, String> = [("a", "a"), ("b", "a")]
            .iter()
            .map(|(x, y)| (x.to_string(), y.to_string()))
            .collect();
        assert_eq!(to_map(out.as_list::<i32>(), 0), expected);
    }
}
