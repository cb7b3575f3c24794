//! Each row's person, kept from the identity read. A full run's stitched views would
//! otherwise read, normalize and look up every identifier column again: in a clickstream
//! those columns are most of the bytes (an anonymous id is about three quarters of them).
//! [`StitchedRows`] takes the person by position instead, from a scan that reads the same
//! files in the same partitions, in the same order, as the identity read did.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions, StringBuilder, UInt32Array};
use arrow::datatypes::{DataType, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{exec_err, internal_err, Result as DFResult};
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::TableType;
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties,
};
use datafusion::prelude::SessionContext;
use futures::{Stream, StreamExt};

use super::IdentityGraph;
use crate::error::Result;
use crate::features::stitched;

/// A row none of whose identifiers is in the graph (all NULL or blocklisted).
pub(super) const NO_NODE: u32 = u32::MAX;

/// `task` with each file scan partition reading only its own files: a partition that
/// finished early would otherwise take files of another, and rows would change partition
/// from one scan to the next.
pub(super) fn own_files(task: &TaskContext) -> TaskContext {
    let mut config = task.session_config().clone();
    config
        .options_mut()
        .execution
        .enable_file_stream_work_stealing = false;
    TaskContext::new(
        task.task_id(),
        task.session_id(),
        config,
        task.scalar_functions().clone(),
        task.higher_order_functions().clone(),
        task.aggregate_functions().clone(),
        task.window_functions().clone(),
        task.runtime_env(),
    )
}

/// The files (with byte ranges) each partition of a scan reads, in order. Two scans of the
/// same input with equal `ScanFiles` give the same rows in the same partitions and order,
/// whatever columns they read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ScanFiles(Vec<Vec<String>>);

impl ScanFiles {
    /// The files of `plan`, when its partitions are exactly those of one file scan, each
    /// passed on row for row (projections and filters; no repartitioning, merge or union).
    pub(super) fn of(plan: &Arc<dyn ExecutionPlan>) -> Option<Self> {
        let partitions = plan.output_partitioning().partition_count();
        let mut node = plan;
        loop {
            if node.output_partitioning().partition_count() != partitions
                || node.downcast_ref::<RepartitionExec>().is_some()
            {
                return None;
            }
            match node.children().as_slice() {
                [] => break,
                [child] => node = child,
                _ => return None,
            }
        }
        let config = node
            .downcast_ref::<DataSourceExec>()?
            .data_source()
            .downcast_ref::<FileScanConfig>()?;
        let groups = config
            .file_groups
            .iter()
            .map(|g| {
                g.iter()
                    .map(|f| match &f.range {
                        Some(r) => format!("{}:{}..{}", f.object_meta.location, r.start, r.end),
                        None => f.object_meta.location.to_string(),
                    })
                    .collect()
            })
            .collect();
        Some(Self(groups))
    }
}

/// One partition's rows as the identity read saw them.
#[derive(Debug)]
struct PartRows {
    /// Per row: the partition's local node of its most trusted identifier, or [`NO_NODE`].
    centers: Vec<u32>,
    /// Per local node: its node in the graph.
    global: Vec<u32>,
}

/// An input's rows as the identity read saw them, partition by partition, with the files
/// each partition read. Empty when the read's partitions could not be repeated.
#[derive(Debug, Default)]
pub struct InputRows {
    scan: Option<ScanFiles>,
    parts: Vec<PartRows>,
}

impl InputRows {
    pub(super) fn new(scan: Option<ScanFiles>) -> Self {
        Self {
            scan,
            parts: vec![],
        }
    }

    /// Adds the next partition, whose local nodes are graph nodes `global`.
    pub(super) fn push(&mut self, centers: Vec<u32>, global: Vec<u32>) {
        if self.scan.is_some() {
            self.parts.push(PartRows { centers, global });
        }
    }

    pub(super) fn bytes(&self) -> usize {
        let parts = self.parts.iter();
        parts.map(|p| (p.centers.len() + p.global.len()) * 4).sum()
    }
}

/// A stitched view (`c360_person`, `c360_id`, then the input's columns) that takes each
/// row's person from the identity read. A scan whose files differ from the read's (the
/// input was planned differently) goes to `fallback`, the view that looks persons up.
#[derive(Debug)]
pub struct StitchedRows {
    graph: Arc<IdentityGraph>,
    rows: Arc<InputRows>,
    input: Arc<dyn TableProvider>,
    fallback: Arc<dyn TableProvider>,
}

impl StitchedRows {
    /// Over `input` (the table the identity read scanned) for the graph's input `name`;
    /// `None` if the read kept no rows for it or `fallback`'s columns are not
    /// `c360_person`, `c360_id` and then `input`'s.
    pub fn new(
        graph: Arc<IdentityGraph>,
        rows: InputRows,
        input: Arc<dyn TableProvider>,
        fallback: Arc<dyn TableProvider>,
    ) -> Option<Self> {
        rows.scan.as_ref()?;
        let (view, table) = (fallback.schema(), input.schema());
        let fields = view.fields();
        let stitched = fields.len() == table.fields().len() + 2
            && fields[0].name() == "c360_person"
            && fields[0].data_type() == &DataType::UInt32
            && fields[1].name() == "c360_id"
            && fields[1].data_type() == &DataType::Utf8
            && fields[2..]
                .iter()
                .zip(table.fields())
                .all(|(v, t)| v.name() == t.name() && v.data_type() == t.data_type());
        stitched.then(|| Self {
            graph,
            rows: Arc::new(rows),
            input,
            fallback,
        })
    }
}

#[async_trait]
impl TableProvider for StitchedRows {
    fn schema(&self) -> SchemaRef {
        self.fallback.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    /// Filters stay above the scan: one pushed into it could skip rows, and every row
    /// after those would take the wrong person.
    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        let all: Vec<usize> = (0..self.schema().fields().len()).collect();
        let columns = projection.unwrap_or(&all);
        let read: Vec<usize> = columns.iter().filter(|&&c| c >= 2).map(|c| c - 2).collect();
        let plan = self.input.scan(state, Some(&read), &[], None).await?;
        // Equal files mean equal partitions: each file group is one partition.
        if ScanFiles::of(&plan).as_ref() != self.rows.scan.as_ref() {
            return self.fallback.scan(state, projection, filters, limit).await;
        }
        let schema = Arc::new(self.schema().project(columns)?);
        let mut scanned = 0;
        let columns = columns
            .iter()
            .map(|&c| match c {
                0 => Column::Person,
                1 => Column::Id,
                _ => {
                    scanned += 1;
                    Column::Input(scanned - 1)
                }
            })
            .collect();
        Ok(Arc::new(StitchedRowsExec::new(
            self.graph.clone(),
            self.rows.clone(),
            columns,
            plan,
            schema,
        )))
    }
}

/// Replaces the stitched view of each of `graph`'s inputs (as `ctx` has them) by a
/// [`StitchedRows`] over the rows its identity read kept, `rows` in the graph's input
/// order. Returns the inputs replaced: those whose read kept its rows.
pub async fn stitch_by_position(
    ctx: &SessionContext,
    graph: &Arc<IdentityGraph>,
    rows: Vec<InputRows>,
) -> Result<Vec<String>> {
    let mut replaced = vec![];
    for (input, rows) in graph.inputs.iter().zip(rows) {
        let view = stitched(input);
        let (Ok(table), Ok(fallback)) = (
            ctx.table_provider(input.as_str()).await,
            ctx.table_provider(view.as_str()).await,
        ) else {
            continue;
        };
        if let Some(by_position) = StitchedRows::new(graph.clone(), rows, table, fallback) {
            ctx.deregister_table(view.as_str())?;
            ctx.register_table(view.as_str(), Arc::new(by_position))?;
            replaced.push(input.clone());
        }
    }
    Ok(replaced)
}

/// Where an output column of [`StitchedRowsExec`] comes from.
#[derive(Debug, Clone, Copy)]
enum Column {
    Person,
    Id,
    /// The scan's column at this position.
    Input(usize),
}

/// [`StitchedRows`]' scan: its input's batches with the persons of their rows.
#[derive(Debug)]
pub struct StitchedRowsExec {
    graph: Arc<IdentityGraph>,
    rows: Arc<InputRows>,
    columns: Vec<Column>,
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

impl StitchedRowsExec {
    fn new(
        graph: Arc<IdentityGraph>,
        rows: Arc<InputRows>,
        columns: Vec<Column>,
        input: Arc<dyn ExecutionPlan>,
        schema: SchemaRef,
    ) -> Self {
        let partitions = input.output_partitioning().partition_count();
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Self {
            graph,
            rows,
            columns,
            input,
            properties,
        }
    }
}

impl DisplayAs for StitchedRowsExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let rows: usize = self.rows.parts.iter().map(|p| p.centers.len()).sum();
        write!(f, "StitchedRowsExec: rows={rows}")
    }
}

impl ExecutionPlan for StitchedRowsExec {
    fn name(&self) -> &'static str {
        "StitchedRowsExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DFResult<TreeNodeRecursion>,
    ) -> DFResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    /// Its input's partitions are the identity read's: none may be split or merged.
    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return internal_err!("StitchedRowsExec has one input, got {}", children.len());
        }
        Ok(Arc::new(Self::new(
            self.graph.clone(),
            self.rows.clone(),
            self.columns.clone(),
            children.swap_remove(0),
            self.schema(),
        )))
    }

    fn with_new_children_and_same_properties(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        #[allow(deprecated)]
        self.with_new_children(children)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DFResult<SendableRecordBatchStream> {
        let Some(part) = self.rows.parts.get(partition) else {
            return internal_err!(
                "StitchedRowsExec has {} partitions, asked for {partition}",
                self.rows.parts.len()
            );
        };
        // Checked again as planned: an optimizer rule that regrouped the files since
        // `scan` would give rows the persons of others.
        if ScanFiles::of(&self.input).as_ref() != self.rows.scan.as_ref() {
            return exec_err!(
                "StitchedRowsExec's input no longer reads the identity read's files by partition"
            );
        }
        let input = self
            .input
            .execute(partition, Arc::new(own_files(&context)))?;
        // Once per partition, each local node's person: a row then costs one lookup.
        let people = part
            .global
            .iter()
            .map(|&n| self.graph.component[n as usize])
            .collect();
        Ok(Box::pin(StitchedStream {
            input,
            schema: self.schema(),
            graph: self.graph.clone(),
            rows: self.rows.clone(),
            partition,
            people,
            columns: self.columns.clone(),
            at: 0,
        }))
    }
}

struct StitchedStream {
    input: SendableRecordBatchStream,
    schema: SchemaRef,
    graph: Arc<IdentityGraph>,
    rows: Arc<InputRows>,
    partition: usize,
    /// Per local node of the partition: its person.
    people: Vec<u32>,
    columns: Vec<Column>,
    /// Rows passed so far.
    at: usize,
}

impl StitchedStream {
    fn centers(&self) -> &[u32] {
        &self.rows.parts[self.partition].centers
    }

    fn stitch(&mut self, batch: RecordBatch) -> DFResult<RecordBatch> {
        let n = batch.num_rows();
        let Some(centers) = self.centers().get(self.at..self.at + n) else {
            return internal_err!(
                "partition {} of a stitched scan has more rows than the identity read's {}",
                self.partition,
                self.centers().len()
            );
        };
        let persons: UInt32Array = centers
            .iter()
            .map(|&c| (c != NO_NODE).then(|| self.people[c as usize]))
            .collect();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.columns.len());
        for column in &self.columns {
            columns.push(match *column {
                Column::Input(i) => batch.column(i).clone(),
                Column::Person => Arc::new(persons.clone()),
                Column::Id => {
                    let mut ids = StringBuilder::with_capacity(n, n * 21);
                    for p in persons.iter() {
                        ids.append_option(p.map(|p| self.graph.canonical_of(p)));
                    }
                    Arc::new(ids.finish())
                }
            });
        }
        self.at += n;
        let options = RecordBatchOptions::new().with_row_count(Some(n));
        Ok(RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &options,
        )?)
    }
}

impl Stream for StitchedStream {
    type Item = DFResult<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.input.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(batch))) => Poll::Ready(Some(self.stitch(batch))),
            Poll::Ready(None) if self.at != self.centers().len() => {
                let (read, now) = (self.centers().len(), self.at);
                self.at = read;
                Poll::Ready(Some(internal_err!(
                    "partition {} of a stitched scan has {now} rows, the identity read had {read}",
                    self.partition
                )))
            }
            other => other,
        }
    }
}

impl RecordBatchStream for StitchedStream {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}
