//! The identity graph as tables any query can read, and `why_merged(...)`, the table
//! function that answers "why are these two one person?".

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Int64Array, ListBuilder, StringBuilder};
use arrow::datatypes::{DataType, Field};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{plan_err, Result as DFResult, ScalarValue};
use datafusion::datasource::MemTable;
use datafusion::logical_expr::Expr;
use datafusion::prelude::SessionContext;

use super::{Change, Edge, IdentityGraph};
use crate::error::Result;
use crate::features::id_list_column;
use crate::materialize::{batch, strings, utc_micros, utc_micros_field as ts_field};

/// Times held as `i64::MAX`/`MIN` (never seen) become NULL.
fn times(v: impl Iterator<Item = i64>) -> ArrayRef {
    utc_micros(v.map(|t| (t != i64::MAX && t != i64::MIN).then_some(t)))
}

fn string_lists<S: AsRef<str>, R: IntoIterator<Item = S>>(
    rows: impl Iterator<Item = R>,
) -> ArrayRef {
    let mut b = ListBuilder::new(StringBuilder::new());
    for row in rows {
        for s in row {
            b.values().append_value(s);
        }
        b.append(true);
    }
    Arc::new(b.finish())
}

/// Rows per batch of the graph's tables: plans over them spread batches across cores.
const BATCH_ROWS: usize = 64 * 1024;

/// One partition, so scans keep the table's order, in batches of [`BATCH_ROWS`] (slices
/// of one batch, no copy).
fn table(fields: Vec<Field>, columns: Vec<ArrayRef>) -> Result<Arc<MemTable>> {
    let batch = batch(fields, columns)?;
    let batches = (0..batch.num_rows().max(1))
        .step_by(BATCH_ROWS)
        .map(|start| batch.slice(start, BATCH_ROWS.min(batch.num_rows() - start)))
        .collect();
    Ok(Arc::new(MemTable::try_new(batch.schema(), vec![batches])?))
}

/// The graph's tables a run publishes, in [`IdentityGraph::output_tables`] order.
pub const OUTPUT_TABLES: [&str; 4] = [
    "identity_graph",
    "identity_quarantine",
    "identity_edges",
    "identity_changes",
];

impl IdentityGraph {
    /// `identity_graph`: one row per identifier.
    pub fn graph_table(&self) -> Result<Arc<MemTable>> {
        let n = self.len();
        let canonical = (0..n).map(|i| Some(self.canonical[self.component[i] as usize].0.as_str()));
        let sources = self.sources.iter().map(|&bits| {
            self.inputs
                .iter()
                .enumerate()
                .filter(move |(i, _)| bits & (1 << i) != 0)
                .map(|(_, name)| name)
        });
        table(
            vec![
                Field::new("id_type", DataType::Utf8, false),
                Field::new("id_value", DataType::Utf8, false),
                Field::new("canonical_id", DataType::Utf8, false),
                ts_field("first_seen", true),
                ts_field("last_seen", true),
                Field::new(
                    "sources",
                    DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
                    false,
                ),
            ],
            vec![
                strings(
                    self.node_type
                        .iter()
                        .map(|&t| Some(self.types[t as usize].as_str())),
                ),
                strings(self.node_value.iter().map(|v| Some(v.as_ref()))),
                strings(canonical),
                times(self.first_seen.iter().copied()),
                times(self.last_seen.iter().copied()),
                string_lists(sources),
            ],
        )
    }

    /// `identity_people`: one row per person in canonical id order, every identifier
    /// grouped by type and sorted (NULL where the person has none of that type), and when
    /// any of them was first and last seen.
    pub fn people_table(&self) -> Result<Arc<MemTable>> {
        let people = self.canonical.len();
        // Nodes grouped by component, each group later sorted by (type, value): no string
        // is copied until it lands in its list.
        let (start, mut members) = super::canonical::by_component(&self.component, people);
        let mut order: Vec<usize> = (0..people).collect();
        order.sort_unstable_by(|&a, &b| self.canonical[a].0.cmp(&self.canonical[b].0));

        let mut lists: Vec<ListBuilder<StringBuilder>> = self
            .types
            .iter()
            .map(|_| ListBuilder::new(StringBuilder::new()))
            .collect();
        let (mut first, mut last) = (Vec::with_capacity(people), Vec::with_capacity(people));
        for &c in &order {
            let nodes = &mut members[start[c]..start[c + 1]];
            nodes.sort_unstable_by(|&a, &b| {
                let key = |n: u32| (self.node_type[n as usize], &self.node_value[n as usize]);
                key(a).cmp(&key(b))
            });
            let mut k = 0;
            for (t, list) in lists.iter_mut().enumerate() {
                let begin = k;
                while k < nodes.len() && self.node_type[nodes[k] as usize] as usize == t {
                    list.values()
                        .append_value(&self.node_value[nodes[k] as usize]);
                    k += 1;
                }
                list.append(k > begin);
            }
            let (f, l) = nodes.iter().fold((i64::MAX, i64::MIN), |(f, l), &n| {
                (
                    f.min(self.first_seen[n as usize]),
                    l.max(self.last_seen[n as usize]),
                )
            });
            first.push(f);
            last.push(l);
        }

        let mut fields = vec![Field::new("c360_id", DataType::Utf8, false)];
        let mut columns = vec![strings(
            order.iter().map(|&c| Some(self.canonical[c].0.as_str())),
        )];
        // What person_key() gives: the run joins on this number, not the text.
        fields.push(Field::new("c360_person", DataType::UInt32, false));
        columns.push(Arc::new(
            order
                .iter()
                .map(|&c| c as u32)
                .collect::<arrow::array::UInt32Array>(),
        ));
        for (t, mut list) in self.types.iter().zip(lists) {
            let list: ArrayRef = Arc::new(list.finish());
            fields.push(Field::new(
                id_list_column(t),
                list.data_type().clone(),
                true,
            ));
            columns.push(list);
        }
        fields.extend([ts_field("first_seen", true), ts_field("last_seen", true)]);
        columns.push(times(first.into_iter()));
        columns.push(times(last.into_iter()));
        table(fields, columns)
    }

    /// `identity_quarantine`: what was kept out of stitching, and the rule it broke.
    pub fn quarantine_table(&self) -> Result<Arc<MemTable>> {
        let q = &self.quarantine;
        table(
            vec![
                Field::new("id_type", DataType::Utf8, false),
                Field::new("id_value", DataType::Utf8, false),
                Field::new("other_type", DataType::Utf8, true),
                Field::new("other_value", DataType::Utf8, true),
                Field::new("rule", DataType::Utf8, false),
                Field::new("rows", DataType::Int64, false),
            ],
            vec![
                strings(q.iter().map(|e| Some(e.id_type.as_str()))),
                strings(q.iter().map(|e| Some(e.value.as_str()))),
                strings(q.iter().map(|e| e.other.as_ref().map(|o| o.0.as_str()))),
                strings(q.iter().map(|e| e.other.as_ref().map(|o| o.1.as_str()))),
                strings(q.iter().map(|e| Some(e.rule.as_str()))),
                Arc::new(q.iter().map(|e| e.rows as i64).collect::<Int64Array>()),
            ],
        )
    }

    fn edge_columns<'a>(&'a self, edges: &[&'a Edge]) -> Vec<ArrayRef> {
        let end = |e: &&Edge, first: bool| self.describe(if first { e.a } else { e.b });
        vec![
            strings(edges.iter().map(|e| Some(end(e, true).0))),
            strings(edges.iter().map(|e| Some(end(e, true).1))),
            strings(edges.iter().map(|e| Some(end(e, false).0))),
            strings(edges.iter().map(|e| Some(end(e, false).1))),
            strings(
                edges
                    .iter()
                    .map(|e| Some(self.inputs[e.input as usize].as_str())),
            ),
            times(edges.iter().map(|e| e.first_seen)),
            times(edges.iter().map(|e| e.last_seen)),
            Arc::new(edges.iter().map(|e| e.rows as i64).collect::<Int64Array>()),
        ]
    }

    fn edge_fields() -> Vec<Field> {
        vec![
            Field::new("id_type_a", DataType::Utf8, false),
            Field::new("id_value_a", DataType::Utf8, false),
            Field::new("id_type_b", DataType::Utf8, false),
            Field::new("id_value_b", DataType::Utf8, false),
            Field::new("source", DataType::Utf8, false),
            ts_field("first_seen", true),
            ts_field("last_seen", true),
            Field::new("rows", DataType::Int64, false),
        ]
    }

    /// `identity_edges`: every link, with where and when it was seen and whether it stitched.
    pub fn edges_table(&self) -> Result<Arc<MemTable>> {
        let edges: Vec<&Edge> = self.edges.iter().collect();
        let mut fields = Self::edge_fields();
        fields.push(Field::new("accepted", DataType::Boolean, false));
        let mut columns = self.edge_columns(&edges);
        columns.push(Arc::new(
            edges
                .iter()
                .map(|e| Some(e.accepted))
                .collect::<BooleanArray>(),
        ));
        table(fields, columns)
    }

    /// `identity_changes`: per canonical id, what happened since the previous graph.
    pub fn changes_table(&self) -> Result<Arc<MemTable>> {
        let mut sizes = vec![0i64; self.canonical.len()];
        for &c in &self.component {
            sizes[c as usize] += 1;
        }
        let kind = |c: &Change| match c {
            Change::Kept => "kept",
            Change::Appeared => "appeared",
            Change::Merged(_) => "merged",
            Change::SplitFrom(_) => "split",
        };
        fn previous(c: &Change) -> &[String] {
            match c {
                Change::Merged(ids) | Change::SplitFrom(ids) => ids,
                _ => &[],
            }
        }
        table(
            vec![
                Field::new("canonical_id", DataType::Utf8, false),
                Field::new("change", DataType::Utf8, false),
                Field::new(
                    "previous_ids",
                    DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
                    false,
                ),
                Field::new("identifiers", DataType::Int64, false),
            ],
            vec![
                strings(self.canonical.iter().map(|(id, _)| Some(id.as_str()))),
                strings(self.canonical.iter().map(|(_, c)| Some(kind(c)))),
                string_lists(self.canonical.iter().map(|(_, c)| previous(c))),
                Arc::new(Int64Array::from(sizes)),
            ],
        )
    }

    /// The path joining two identifiers as a table: one row per edge, in order.
    pub fn why_merged_table(&self, a: (&str, &str), b: (&str, &str)) -> Result<Arc<MemTable>> {
        let path = self.why_merged(a, b).unwrap_or_default();
        let mut fields = vec![Field::new("step", DataType::Int64, false)];
        fields.extend(Self::edge_fields());
        let mut columns: Vec<ArrayRef> = vec![Arc::new(Int64Array::from_iter_values(
            1..=path.len() as i64,
        ))];
        // Orient each edge along the path, from `a` towards `b`.
        let mut at = self.node(a.0, a.1);
        let oriented: Vec<Edge> = path
            .iter()
            .map(|e| {
                let mut e = (*e).clone();
                if Some(e.b) == at {
                    std::mem::swap(&mut e.a, &mut e.b);
                }
                at = Some(e.b);
                e
            })
            .collect();
        let refs: Vec<&Edge> = oriented.iter().collect();
        columns.extend(self.edge_columns(&refs));
        table(fields, columns)
    }

    /// Normalizes a value typed by a person the way the built-in rules would.
    fn lookup_form(&self, id_type: &str, value: &str) -> String {
        let normalized = match id_type {
            "email" => c360_udfs::normalize_email::normalize(value, false),
            "phone" => c360_udfs::normalize_phone::Country::lookup("US")
                .and_then(|us| c360_udfs::normalize_phone::normalize(value, us)),
            _ => Some(value.trim().to_string()),
        };
        normalized.unwrap_or_else(|| value.to_string())
    }
}

/// `why_merged('email', 'a@x.com', 'anonymous_id', 'abc')`: the shortest chain of stitched
/// links joining two identifiers, or no rows.
#[derive(Debug)]
struct WhyMerged(Arc<IdentityGraph>);

fn literal(e: &Expr, what: &str) -> DFResult<String> {
    match e {
        Expr::Literal(
            ScalarValue::Utf8(Some(s))
            | ScalarValue::Utf8View(Some(s))
            | ScalarValue::LargeUtf8(Some(s)),
            _,
        ) => Ok(s.clone()),
        other => plan_err!("why_merged: {what} must be a string literal, got {other}"),
    }
}

impl TableFunctionImpl for WhyMerged {
    fn call_with_args(&self, args: TableFunctionArgs) -> DFResult<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        let [ta, va, tb, vb] = exprs else {
            return plan_err!(
                "why_merged takes (id_type_a, id_value_a, id_type_b, id_value_b), got {} arguments",
                exprs.len()
            );
        };
        let g = &self.0;
        let (ta, tb) = (literal(ta, "id_type_a")?, literal(tb, "id_type_b")?);
        for t in [&ta, &tb] {
            if !g.types.contains(t) {
                return plan_err!(
                    "why_merged: unknown id type '{t}'; the graph has {}",
                    g.types.join(", ")
                );
            }
        }
        let va = g.lookup_form(&ta, &literal(va, "id_value_a")?);
        let vb = g.lookup_form(&tb, &literal(vb, "id_value_b")?);
        Ok(g.why_merged_table((&ta, &va), (&tb, &vb))?)
    }
}

impl IdentityGraph {
    /// Every output table, by name.
    pub fn output_tables(&self) -> Result<Vec<(&'static str, Arc<MemTable>)>> {
        self.built(false)
    }

    /// The output tables, and `identity_people` if `people`, built side by side: each is
    /// one pass over millions of identifiers or links.
    fn built(&self, people: bool) -> Result<Vec<(&'static str, Arc<MemTable>)>> {
        type Build = fn(&IdentityGraph) -> Result<Arc<MemTable>>;
        // In OUTPUT_TABLES order, then identity_people.
        let builds: [Build; 5] = [
            Self::graph_table,
            Self::quarantine_table,
            Self::edges_table,
            Self::changes_table,
            Self::people_table,
        ];
        let names = OUTPUT_TABLES
            .into_iter()
            .chain(people.then_some("identity_people"));
        std::thread::scope(|s| {
            let handles: Vec<_> = names
                .zip(builds)
                .map(|(name, build)| (name, s.spawn(move || build(self))))
                .collect();
            handles
                .into_iter()
                .map(|(name, h)| Ok((name, h.join().expect("table builder panicked")?)))
                .collect()
        })
    }
}

pub(super) fn register(ctx: &SessionContext, graph: Arc<IdentityGraph>) -> Result<()> {
    for (name, table) in graph.built(true)? {
        ctx.register_table(name, table)?;
    }
    ctx.register_udf(super::lookup::udf(graph.clone()));
    ctx.register_udf(super::lookup::key_udf(graph.clone()));
    ctx.register_udtf("why_merged", Arc::new(WhyMerged(graph)));
    Ok(())
}
