//! The identity graph as tables any query can read, and `why_merged(...)`, the table
//! function that answers "why are these two one person?".

use std::ops::Range;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Int64Array, ListBuilder, RecordBatch, StringBuilder, UInt32Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::streaming::StreamingTable;
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{plan_err, Constraint, Constraints, Result as DFResult, ScalarValue};
use datafusion::datasource::MemTable;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{col, Expr};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::prelude::SessionContext;

use super::{Change, Edge, IdentityGraph};
use crate::error::Result;
use crate::features::id_list_column;
use crate::materialize::{batch, strings, utc_micros, utc_micros_field as ts_field};

/// Times held as `i64::MAX`/`MIN` (never seen) become NULL.
fn times(v: impl Iterator<Item = i64>) -> ArrayRef {
    utc_micros(v.map(|t| (t != i64::MAX && t != i64::MIN).then_some(t)))
}

fn string_list_field(name: &str, nullable: bool) -> Field {
    Field::new(
        name,
        DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
        nullable,
    )
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

type Columns = dyn Fn(Range<usize>) -> Vec<ArrayRef> + Send + Sync;

/// A table of `rows` rows whose columns are made from the graph [`BATCH_ROWS`] at a time.
/// Made as they are scanned, the graph's tables do not hold its text several times over
/// (a gigabyte per million people).
#[derive(Clone)]
struct Generated {
    schema: SchemaRef,
    rows: usize,
    columns: Arc<Columns>,
}

impl std::fmt::Debug for Generated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Generated({} rows)", self.rows)
    }
}

impl Generated {
    fn new(
        fields: Vec<Field>,
        rows: usize,
        columns: impl Fn(Range<usize>) -> Vec<ArrayRef> + Send + Sync + 'static,
    ) -> Self {
        Self {
            schema: Arc::new(Schema::new(fields)),
            rows,
            columns: Arc::new(columns),
        }
    }

    /// The batch of rows from `start`.
    fn batch(&self, start: usize) -> Result<RecordBatch> {
        let columns = (self.columns)(start..(start + BATCH_ROWS).min(self.rows));
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }

    fn batches(&self) -> impl Iterator<Item = Result<RecordBatch>> + 'static {
        let this = self.clone();
        (0..self.rows)
            .step_by(BATCH_ROWS)
            .map(move |start| this.batch(start))
    }

    /// Made as it is scanned; one partition, so scans keep the table's order.
    fn streamed(self) -> Result<Arc<dyn TableProvider>> {
        let schema = self.schema.clone();
        Ok(Arc::new(StreamingTable::try_new(
            schema,
            vec![Arc::new(self)],
        )?))
    }

    /// Made once and held (joins get its size to plan with), in `partitions` runs of
    /// consecutive rows: a scan keeps the order within each, where DataFusion would
    /// otherwise split a single one and forget the order.
    fn held(self, partitions: usize) -> Result<MemTable> {
        let batches = on_cores(self.rows.div_ceil(BATCH_ROWS), |numbers| {
            let rows = numbers.start * BATCH_ROWS..(numbers.end * BATCH_ROWS).min(self.rows);
            rows.step_by(BATCH_ROWS)
                .map(|start| self.batch(start))
                .collect::<Result<Vec<_>>>()
        });
        let batches = batches.into_iter().collect::<Result<Vec<_>>>()?.concat();
        let partitions = partitions.max(1);
        let mut runs: Vec<Vec<RecordBatch>> = batches
            .chunks(batches.len().div_ceil(partitions).max(1))
            .map(<[RecordBatch]>::to_vec)
            .collect();
        runs.resize_with(partitions, Vec::new);
        Ok(MemTable::try_new(self.schema, runs)?)
    }
}

impl PartitionStream for Generated {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let batches = self.batches().map(|b| b.map_err(Into::into));
        Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            futures::stream::iter(batches),
        ))
    }
}

/// `f` over `0..n` cut into one run per core, each on a thread of its own; results in
/// order. Tables held whole are made while the run waits for them with cores idle.
fn on_cores<T: Send>(n: usize, f: impl Fn(Range<usize>) -> T + Sync) -> Vec<T> {
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let step = n.div_ceil(cores).max(1);
    std::thread::scope(|scope| {
        let f = &f;
        let runs: Vec<_> = (0..n)
            .step_by(step)
            .map(|start| scope.spawn(move || f(start..(start + step).min(n))))
            .collect();
        runs.into_iter()
            .map(|run| {
                run.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

/// A small table held whole.
fn table(fields: Vec<Field>, columns: Vec<ArrayRef>) -> Result<Arc<dyn TableProvider>> {
    let batch = batch(fields, columns)?;
    Ok(Arc::new(MemTable::try_new(
        batch.schema(),
        vec![vec![batch]],
    )?))
}

/// The graph's tables a run publishes, in [`IdentityGraph::output_tables`] order.
pub const OUTPUT_TABLES: [&str; 4] = [
    "identity_graph",
    "identity_quarantine",
    "identity_edges",
    "identity_changes",
];

/// The columns of graph table `table` whose values are nearly all distinct (identifiers,
/// canonical ids, microsecond times), written without a dictionary.
pub fn distinct_columns(table: &str) -> &'static [&'static str] {
    match table {
        "identity_graph" => &["id_value", "canonical_id", "first_seen", "last_seen"],
        "identity_edges" => &["id_value_a", "id_value_b", "first_seen", "last_seen"],
        "identity_changes" => &["canonical_id"],
        _ => &[],
    }
}

impl IdentityGraph {
    /// `identity_graph`: one row per identifier.
    fn graph_table(self: &Arc<Self>) -> Result<Arc<dyn TableProvider>> {
        let g = self.clone();
        Generated::new(
            vec![
                Field::new("id_type", DataType::Utf8, false),
                Field::new("id_value", DataType::Utf8, false),
                Field::new("canonical_id", DataType::Utf8, false),
                ts_field("first_seen", true),
                ts_field("last_seen", true),
                string_list_field("sources", false),
            ],
            self.len(),
            move |r| {
                let sources = g.sources[r.clone()].iter().map(|&bits| {
                    g.inputs
                        .iter()
                        .enumerate()
                        .filter(move |(i, _)| bits & (1 << i) != 0)
                        .map(|(_, name)| name)
                });
                vec![
                    strings(
                        g.node_type[r.clone()]
                            .iter()
                            .map(|&t| Some(g.types[t as usize].as_str())),
                    ),
                    strings(g.node_value.range(r.clone()).map(Some)),
                    strings(
                        g.component[r.clone()]
                            .iter()
                            .map(|&c| Some(g.canonical[c as usize].0.as_str())),
                    ),
                    times(g.first_seen[r.clone()].iter().copied()),
                    times(g.last_seen[r].iter().copied()),
                    string_lists(sources),
                ]
            },
        )
        .streamed()
    }

    /// `identity_people`: one row per person in canonical id order, every identifier
    /// grouped by type and sorted (NULL where the person has none of that type), and when
    /// any of them was first and last seen. Declared unique by person and sorted by id, so
    /// that joins by person can hold the other side and stream this one, and a query in
    /// canonical id order needs no sort.
    fn people_table(self: &Arc<Self>, partitions: usize) -> Result<Arc<dyn TableProvider>> {
        let people = self.canonical.len();
        // Nodes grouped by component and sorted by (type, value): no string is copied
        // until it lands in its list.
        let (start, members) = super::canonical::by_component(&self.component, people);
        let members = on_cores(people, |components| {
            let mut sorted = members[start[components.start]..start[components.end]].to_vec();
            let first = start[components.start];
            for c in components {
                sorted[start[c] - first..start[c + 1] - first].sort_unstable_by(|&a, &b| {
                    let key = |n: u32| (self.node_type[n as usize], &self.node_value[n as usize]);
                    key(a).cmp(&key(b))
                });
            }
            sorted
        })
        .concat();

        let mut fields = vec![
            Field::new("c360_id", DataType::Utf8, false),
            // What person_key() gives: the run joins on this number, not the text.
            Field::new("c360_person", DataType::UInt32, false),
        ];
        fields.extend(
            self.types
                .iter()
                .map(|t| string_list_field(&id_list_column(t), true)),
        );
        fields.extend([ts_field("first_seen", true), ts_field("last_seen", true)]);
        let g = self.clone();
        // People are numbered in canonical id order (see `index_people`): a run of
        // numbers is a run of rows.
        let people = Generated::new(fields, people, move |r| {
            let mut lists: Vec<ListBuilder<StringBuilder>> = g
                .types
                .iter()
                .map(|_| ListBuilder::new(StringBuilder::new()))
                .collect();
            let (mut first, mut last) = (Vec::with_capacity(r.len()), Vec::with_capacity(r.len()));
            for c in r.clone() {
                let nodes = &members[start[c]..start[c + 1]];
                let mut k = 0;
                for (t, list) in lists.iter_mut().enumerate() {
                    let begin = k;
                    while k < nodes.len() && g.node_type[nodes[k] as usize] as usize == t {
                        list.values().append_value(&g.node_value[nodes[k] as usize]);
                        k += 1;
                    }
                    list.append(k > begin);
                }
                let (f, l) = nodes.iter().fold((i64::MAX, i64::MIN), |(f, l), &n| {
                    (
                        f.min(g.first_seen[n as usize]),
                        l.max(g.last_seen[n as usize]),
                    )
                });
                first.push(f);
                last.push(l);
            }
            let mut columns = vec![
                strings(
                    g.canonical[r.clone()]
                        .iter()
                        .map(|(id, _)| Some(id.as_str())),
                ),
                Arc::new(UInt32Array::from_iter_values(r.start as u32..r.end as u32)) as ArrayRef,
            ];
            columns.extend(lists.iter_mut().map(|l| Arc::new(l.finish()) as ArrayRef));
            columns.push(times(first.into_iter()));
            columns.push(times(last.into_iter()));
            columns
        })
        .held(partitions)?
        .with_constraints(Constraints::new_unverified(vec![
            Constraint::PrimaryKey(vec![1]),
            Constraint::Unique(vec![0]),
        ]))
        .with_sort_order(vec![vec![col("c360_id").sort(true, false)]]);
        Ok(Arc::new(people))
    }

    /// Components in the order of their canonical ids. Ids as `id_of_hash` spells them
    /// (fixed width, lower-case hex) sort as their hashes do, which spares a million
    /// comparisons of strings scattered over the heap; any other spelling sorts all as text.
    pub(super) fn canonical_order(&self) -> Vec<u32> {
        let hashes: Option<Vec<u64>> = self
            .canonical
            .iter()
            .map(|(id, _)| c360_udfs::ids::hash_of_id(id))
            .collect();
        match hashes {
            Some(hashes) => {
                let mut keyed: Vec<(u64, u32)> = hashes.into_iter().zip(0..).collect();
                keyed.sort_unstable();
                keyed.into_iter().map(|(_, c)| c).collect()
            }
            None => {
                let mut order: Vec<u32> = (0..self.canonical.len() as u32).collect();
                order.sort_unstable_by(|&a, &b| {
                    self.canonical[a as usize]
                        .0
                        .cmp(&self.canonical[b as usize].0)
                });
                order
            }
        }
    }

    /// `identity_quarantine`: what was kept out of stitching, and the rule it broke.
    fn quarantine_table(self: &Arc<Self>) -> Result<Arc<dyn TableProvider>> {
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
    fn edges_table(self: &Arc<Self>) -> Result<Arc<dyn TableProvider>> {
        let mut fields = Self::edge_fields();
        fields.push(Field::new("accepted", DataType::Boolean, false));
        let g = self.clone();
        Generated::new(fields, self.edges.len(), move |r| {
            let edges: Vec<&Edge> = g.edges[r].iter().collect();
            let mut columns = g.edge_columns(&edges);
            columns.push(Arc::new(
                edges
                    .iter()
                    .map(|e| Some(e.accepted))
                    .collect::<BooleanArray>(),
            ));
            columns
        })
        .streamed()
    }

    /// `identity_changes`: per canonical id, what happened since the previous graph.
    fn changes_table(self: &Arc<Self>) -> Result<Arc<dyn TableProvider>> {
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
        let g = self.clone();
        Generated::new(
            vec![
                Field::new("canonical_id", DataType::Utf8, false),
                Field::new("change", DataType::Utf8, false),
                string_list_field("previous_ids", false),
                Field::new("identifiers", DataType::Int64, false),
            ],
            self.canonical.len(),
            move |r| {
                let canonical = &g.canonical[r.clone()];
                vec![
                    strings(canonical.iter().map(|(id, _)| Some(id.as_str()))),
                    strings(canonical.iter().map(|(_, c)| Some(kind(c)))),
                    string_lists(canonical.iter().map(|(_, c)| previous(c))),
                    Arc::new(Int64Array::from(sizes[r].to_vec())),
                ]
            },
        )
        .streamed()
    }

    /// The path joining two identifiers as a table: one row per edge, in order.
    pub fn why_merged_table(
        &self,
        a: (&str, &str),
        b: (&str, &str),
    ) -> Result<Arc<dyn TableProvider>> {
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
    pub fn output_tables(self: &Arc<Self>) -> Result<Vec<(&'static str, Arc<dyn TableProvider>)>> {
        Ok(vec![
            (OUTPUT_TABLES[0], self.graph_table()?),
            (OUTPUT_TABLES[1], self.quarantine_table()?),
            (OUTPUT_TABLES[2], self.edges_table()?),
            (OUTPUT_TABLES[3], self.changes_table()?),
        ])
    }
}

pub(super) fn register(ctx: &SessionContext, graph: Arc<IdentityGraph>) -> Result<()> {
    for (name, table) in graph.output_tables()? {
        ctx.register_table(name, table)?;
    }
    let partitions = ctx.state().config().target_partitions();
    ctx.register_table("identity_people", graph.people_table(partitions)?)?;
    ctx.register_udf(super::lookup::udf(graph.clone()));
    ctx.register_udf(super::lookup::key_udf(graph.clone()));
    crate::features::install_person_plans(ctx, graph.components());
    ctx.register_udtf("why_merged", Arc::new(WhyMerged(graph)));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, UInt64Array};
    use arrow::datatypes::UInt64Type;

    #[test]
    fn canonical_order_by_hash_is_text_order_and_other_spellings_sort_as_text() {
        let ids = |ids: &[&str]| IdentityGraph {
            canonical: ids
                .iter()
                .map(|id| (id.to_string(), Change::Appeared))
                .collect(),
            ..Default::default()
        };
        let hashed = [
            "c360_ffffffffffffffff",
            "c360_0000000000000001",
            "c360_a000000000000000",
            "c360_9fffffffffffffff",
        ];
        assert_eq!(ids(&hashed).canonical_order(), vec![1, 3, 2, 0]);
        // One id of another spelling: all sorted as text, where upper case comes first.
        let mixed = [hashed[0], hashed[1], "c360_A000000000000000", "legacy-7"];
        assert_eq!(ids(&mixed).canonical_order(), vec![1, 2, 0, 3]);
        assert!(ids(&[]).canonical_order().is_empty());
    }

    #[test]
    fn on_cores_covers_every_index_once_in_order() {
        for n in [0, 1, 2, 3, 7, 1000] {
            let runs = on_cores(n, |r| r.collect::<Vec<_>>());
            assert!(runs.iter().all(|r| !r.is_empty()));
            assert_eq!(runs.concat(), (0..n).collect::<Vec<_>>(), "{n}");
        }
    }

    /// A table of row numbers, made batch by batch.
    fn numbers(rows: usize) -> Generated {
        Generated::new(vec![Field::new("n", DataType::UInt64, false)], rows, |r| {
            vec![Arc::new(UInt64Array::from_iter_values(r.map(|i| i as u64))) as ArrayRef]
        })
    }

    #[tokio::test]
    async fn made_batch_by_batch_every_row_once_in_order() {
        for rows in [
            0,
            1,
            BATCH_ROWS - 1,
            BATCH_ROWS,
            BATCH_ROWS + 1,
            3 * BATCH_ROWS - 5,
        ] {
            let batches: Vec<RecordBatch> = numbers(rows).batches().collect::<Result<_>>().unwrap();
            assert!(batches.iter().all(|b| b.num_rows() <= BATCH_ROWS));
            assert_eq!(batches.len(), rows.div_ceil(BATCH_ROWS));
            let values: Vec<u64> = batches
                .iter()
                .flat_map(|b| b.column(0).as_primitive::<UInt64Type>().values().to_vec())
                .collect();
            assert_eq!(values, (0..rows as u64).collect::<Vec<_>>(), "{rows} rows");

            // Through SQL, scanned twice in one query.
            let ctx = SessionContext::new();
            ctx.register_table("t", numbers(rows).streamed().unwrap())
                .unwrap();
            let out = ctx
                .sql("SELECT count(*) FROM t a JOIN t b ON a.n = b.n")
                .await
                .unwrap()
                .collect()
                .await
                .unwrap();
            let count = out[0]
                .column(0)
                .as_primitive::<arrow::datatypes::Int64Type>()
                .value(0);
            assert_eq!(count as usize, rows);
        }
    }
}
