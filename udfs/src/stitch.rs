//! `stitch('edges')`: connected components of a whole edge table, the scalable closure.
//! The input has columns `id_type_a, id_value_a, id_type_b, id_value_b` and optionally
//! `first_seen`; the output has one row per identifier with its canonical id. A purpose-built
//! operator does the work: union-find over dictionary-encoded identifiers, its memory
//! reserved in DataFusion's memory pool.

use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType};
use async_trait::async_trait;
use datafusion::catalog::{
    CatalogProviderList, Session, TableFunctionArgs, TableFunctionImpl, TableProvider,
};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{plan_err, DataFusionError, Result, ScalarValue, TableReference};
use datafusion::datasource::TableType;
use datafusion::execution::memory_pool::MemoryConsumer;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties,
};
use futures::StreamExt;

use crate::ids::fresh_id;
use crate::union_find::StringUnionFind;

const INPUT_COLUMNS: [&str; 4] = ["id_type_a", "id_value_a", "id_type_b", "id_value_b"];
const BATCH_ROWS: usize = 8192;

/// The table function, resolving its argument in the session's catalogs.
#[derive(Debug)]
pub struct Stitch {
    catalogs: Arc<dyn CatalogProviderList>,
}

impl Stitch {
    pub fn new(catalogs: Arc<dyn CatalogProviderList>) -> Self {
        Self { catalogs }
    }
}

fn output_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id_type", DataType::Utf8, false),
        Field::new("id_value", DataType::Utf8, false),
        Field::new("canonical_id", DataType::Utf8, false),
    ]))
}

impl TableFunctionImpl for Stitch {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let name = match args.exprs() {
            [Expr::Literal(ScalarValue::Utf8(Some(s)) | ScalarValue::Utf8View(Some(s)), _)] => s.clone(),
            other => {
                return plan_err!(
                    "stitch takes one argument, the name of a table of edges (id_type_a, id_value_a, id_type_b, id_value_b [, first_seen]), got {} arguments",
                    other.len()
                )
            }
        };
        let options = args.session().config_options();
        let table = TableReference::from(name.as_str()).resolve(
            &options.catalog.default_catalog,
            &options.catalog.default_schema,
        );
        Ok(Arc::new(StitchTable {
            catalogs: self.catalogs.clone(),
            table: table.into(),
        }))
    }
}

#[derive(Debug)]
struct StitchTable {
    catalogs: Arc<dyn CatalogProviderList>,
    table: TableReference,
}

#[async_trait]
impl TableProvider for StitchTable {
    fn schema(&self) -> SchemaRef {
        output_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let missing = || DataFusionError::Plan(format!("stitch: no table named '{}'", self.table));
        let catalog = self
            .catalogs
            .catalog(self.table.catalog().unwrap_or_default())
            .ok_or_else(missing)?;
        let schema = catalog
            .schema(self.table.schema().unwrap_or_default())
            .ok_or_else(missing)?;
        let provider = schema
            .table(self.table.table())
            .await?
            .ok_or_else(missing)?;
        let input_schema = provider.schema();
        let mut indices = Vec::with_capacity(5);
        for column in INPUT_COLUMNS {
            match input_schema.index_of(column) {
                Ok(i) => indices.push(i),
                Err(_) => {
                    let found: Vec<&str> = input_schema
                        .fields()
                        .iter()
                        .map(|f| f.name().as_str())
                        .collect();
                    return plan_err!(
                        "stitch: table '{}' has no column '{column}'; expected id_type_a, id_value_a, id_type_b, id_value_b [, first_seen], found {}",
                        self.table,
                        found.join(", ")
                    );
                }
            }
        }
        let has_time = input_schema
            .index_of("first_seen")
            .map(|i| indices.push(i))
            .is_ok();
        let mut input = provider.scan(state, Some(&indices), &[], None).await?;
        if input.output_partitioning().partition_count() > 1 {
            input = Arc::new(CoalescePartitionsExec::new(input));
        }
        Ok(Arc::new(StitchExec::new(
            input,
            has_time,
            projection.cloned(),
        )))
    }
}

/// Reads every edge, closes the graph, emits `(id_type, id_value, canonical_id)`.
#[derive(Debug, Clone)]
pub struct StitchExec {
    input: Arc<dyn ExecutionPlan>,
    has_time: bool,
    projection: Option<Vec<usize>>,
    properties: Arc<PlanProperties>,
}

impl StitchExec {
    fn new(input: Arc<dyn ExecutionPlan>, has_time: bool, projection: Option<Vec<usize>>) -> Self {
        let full = output_schema();
        let schema = match &projection {
            Some(p) => Arc::new(
                full.project(p)
                    .expect("projection within the output schema"),
            ),
            None => full,
        };
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        Self {
            input,
            has_time,
            projection,
            properties,
        }
    }
}

impl DisplayAs for StitchExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "StitchExec: first_seen={}", self.has_time)
    }
}

/// Node keys are `type \x1f value`, so equal values of different types stay apart.
const SEP: char = '\u{1f}';

/// Per-node earliest time, growing as nodes are added.
fn see(earliest: &mut Vec<i64>, node: u32, ts: Option<i64>) {
    let i = node as usize;
    if earliest.len() <= i {
        earliest.resize(i + 1, i64::MAX);
    }
    if let Some(t) = ts {
        earliest[i] = earliest[i].min(t);
    }
}

async fn close(
    input: Arc<dyn ExecutionPlan>,
    has_time: bool,
    projection: Option<Vec<usize>>,
    context: Arc<TaskContext>,
) -> Result<Vec<RecordBatch>> {
    let reservation = MemoryConsumer::new("StitchExec").register(context.memory_pool());
    let mut uf = StringUnionFind::default();
    let mut earliest: Vec<i64> = vec![];
    let mut stream = input.execute(0, context)?;
    let mut key = String::new();
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let cols: Vec<ArrayRef> = (0..4)
            .map(|c| cast(batch.column(c), &DataType::Utf8))
            .collect::<Result<_, _>>()?;
        let cols: Vec<&StringArray> = cols.iter().map(|c| c.as_string::<i32>()).collect();
        let times = if has_time {
            Some(cast(
                batch.column(4),
                &DataType::Timestamp(TimeUnit::Microsecond, None),
            )?)
        } else {
            None
        };
        let times = times
            .as_ref()
            .map(|t| t.as_primitive::<TimestampMicrosecondType>());
        for r in 0..batch.num_rows() {
            let ts = times.and_then(|t| t.is_valid(r).then(|| t.value(r)));
            let mut ends = [None, None];
            for (side, end) in ends.iter_mut().enumerate() {
                let (t, v) = (cols[2 * side], cols[2 * side + 1]);
                if t.is_valid(r) && v.is_valid(r) {
                    key.clear();
                    key.push_str(t.value(r));
                    key.push(SEP);
                    key.push_str(v.value(r));
                    let n = uf.add(&key);
                    see(&mut earliest, n, ts);
                    *end = Some(n);
                }
            }
            if let [Some(a), Some(b)] = ends {
                uf.union(a, b);
            }
        }
        reservation.try_resize(uf.size_bytes() + earliest.capacity() * 8)?;
    }
    // Each component's id comes from its earliest identifier (ties: the smallest key).
    let roots = uf.roots();
    let mut pick: Vec<Option<u32>> = vec![None; roots.len()];
    for (n, &r) in roots.iter().enumerate() {
        let better = match pick[r as usize] {
            None => true,
            Some(p) => (earliest[n], uf.name(n as u32)) < (earliest[p as usize], uf.name(p)),
        };
        if better {
            pick[r as usize] = Some(n as u32);
        }
    }
    let ids: Vec<Option<String>> = pick
        .iter()
        .map(|p| {
            p.map(|n| {
                let (t, v) = uf.name(n).split_once(SEP).expect("keys hold a separator");
                fresh_id(t, v, 0)
            })
        })
        .collect();
    let schema = output_schema();
    let mut batches = vec![];
    for start in (0..roots.len()).step_by(BATCH_ROWS) {
        let end = (start + BATCH_ROWS).min(roots.len());
        let split: Vec<(&str, &str)> = (start..end)
            .map(|n| {
                uf.name(n as u32)
                    .split_once(SEP)
                    .expect("keys hold a separator")
            })
            .collect();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(split.iter().map(|(t, _)| Some(*t)).collect::<StringArray>()),
            Arc::new(split.iter().map(|(_, v)| Some(*v)).collect::<StringArray>()),
            Arc::new(
                (start..end)
                    .map(|n| ids[roots[n] as usize].as_deref())
                    .collect::<StringArray>(),
            ),
        ];
        let batch = RecordBatch::try_new(schema.clone(), columns)?;
        batches.push(match &projection {
            Some(p) => batch.project(p)?,
            None => batch,
        });
    }
    Ok(batches)
}

impl ExecutionPlan for StitchExec {
    fn name(&self) -> &'static str {
        "StitchExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return plan_err!("StitchExec has one input, got {}", children.len());
        }
        Ok(Arc::new(Self::new(
            children.swap_remove(0),
            self.has_time,
            self.projection.clone(),
        )))
    }

    fn with_new_children_and_same_properties(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        #[allow(deprecated)]
        self.with_new_children(children)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return plan_err!("StitchExec has one partition, asked for {partition}");
        }
        let fut = close(
            self.input.clone(),
            self.has_time,
            self.projection.clone(),
            context,
        );
        Ok(crate::batches_when_done(self.schema(), fut))
    }
}
