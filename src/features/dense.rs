//! Aggregation by person without a hash table. A person's key (`person_key`, the
//! `c360_person` column) is already a dense number below the graph's count of people, so it
//! can index the aggregates' group states directly: no hashing of keys, no repartitioning of
//! rows between a partial and a final aggregation. [`PersonAggregate`] is a physical
//! optimizer rule that replaces DataFusion's two-stage hash aggregation `GROUP BY
//! c360_person` with [`PersonAggregateExec`], which feeds each input partition into
//! `GroupsAccumulator`s of its own with the key as group index, merges the partitions'
//! states once at the end and emits the people that had rows, in key order.

use std::fmt;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, BooleanArray, RecordBatch, UInt32Array};
use arrow::compute::filter;
use arrow::datatypes::{DataType, SchemaRef, UInt32Type};
use datafusion::common::config::ConfigOptions;
use datafusion::common::runtime::SpawnedTask;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{exec_err, internal_err, Result, Statistics};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::{EquivalenceProperties, GroupsAccumulatorAdapter, PhysicalExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::statistics::{StatisticsArgs, StatisticsContext};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties,
};
use datafusion::prelude::SessionContext;
use futures::StreamExt;

/// The column by which stitched rows name their person.
pub const PERSON_COLUMN: &str = "c360_person";

const RULE: &str = "c360_person_aggregate";

/// Rewrites `GROUP BY c360_person` (a `UInt32` key below `people`) to [`PersonAggregateExec`].
/// Runs before DataFusion's own rules, while the partial aggregation still sits directly
/// under the final one.
#[derive(Debug)]
pub struct PersonAggregate {
    pub people: usize,
}

impl PhysicalOptimizerRule for PersonAggregate {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_down(|node| {
            Ok(match self.rewrite(&node)? {
                Some(dense) => Transformed::yes(dense),
                None => Transformed::no(node),
            })
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        RULE
    }

    fn schema_check(&self) -> bool {
        true
    }
}

impl PersonAggregate {
    fn rewrite(&self, node: &Arc<dyn ExecutionPlan>) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(last) = node.downcast_ref::<AggregateExec>() else {
            return Ok(None);
        };
        if !matches!(
            last.mode(),
            AggregateMode::Final | AggregateMode::FinalPartitioned
        ) {
            return Ok(None);
        }
        let Some(first) = last.input().downcast_ref::<AggregateExec>() else {
            return Ok(None);
        };
        let groups = first.group_expr();
        if *first.mode() != AggregateMode::Partial
            || groups.has_grouping_set()
            || groups.expr().len() != 1
            || first.limit_options().is_some()
        {
            return Ok(None);
        }
        let (key, name) = &groups.expr()[0];
        if name != PERSON_COLUMN || key.data_type(&first.input().schema())? != DataType::UInt32 {
            return Ok(None);
        }
        // Order-sensitive and DISTINCT aggregates need what the hash aggregation arranges.
        if first
            .aggr_expr()
            .iter()
            .any(|a| a.is_distinct() || !a.order_bys().is_empty())
        {
            return Ok(None);
        }
        Ok(Some(Arc::new(PersonAggregateExec::new(
            Arc::new(Spec {
                key: key.clone(),
                aggregates: first.aggr_expr().to_vec(),
                filters: first.filter_expr().to_vec(),
                people: self.people,
            }),
            first.input().clone(),
            last.schema(),
            // The joins above are planned on these estimates: keep the hash aggregation's.
            StatisticsContext::new().compute(last, &StatisticsArgs::new())?,
        ))))
    }
}

/// What to compute, shared by the partitions' tasks.
#[derive(Debug)]
struct Spec {
    key: Arc<dyn PhysicalExpr>,
    aggregates: Vec<Arc<AggregateFunctionExpr>>,
    filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    /// Keys run below this; the group after them holds rows of no one (a NULL key).
    people: usize,
}

impl Spec {
    fn groups(&self) -> usize {
        self.people + 1
    }

    fn accumulators(&self) -> Result<Vec<Box<dyn GroupsAccumulator>>> {
        self.aggregates
            .iter()
            .map(|a| -> Result<Box<dyn GroupsAccumulator>> {
                if a.groups_accumulator_supported() {
                    a.create_groups_accumulator()
                } else {
                    let a = a.clone();
                    Ok(Box::new(GroupsAccumulatorAdapter::new(move || {
                        a.create_accumulator()
                    })))
                }
            })
            .collect()
    }
}

/// One dense aggregation of the rows of one or more partitions.
struct States {
    accumulators: Vec<Box<dyn GroupsAccumulator>>,
    /// Groups that had rows: only they are emitted, as a hash aggregation would.
    seen: Vec<bool>,
    reservation: MemoryReservation,
}

impl States {
    fn size(&self) -> usize {
        self.accumulators.iter().map(|a| a.size()).sum::<usize>() + self.seen.len()
    }
}

async fn accumulate(
    spec: Arc<Spec>,
    mut input: SendableRecordBatchStream,
    reservation: MemoryReservation,
) -> Result<States> {
    let groups = spec.groups();
    let mut states = States {
        accumulators: spec.accumulators()?,
        seen: vec![false; groups],
        reservation,
    };
    let mut indices: Vec<usize> = vec![];
    while let Some(batch) = input.next().await {
        let batch = batch?;
        let rows = batch.num_rows();
        let keys = spec.key.evaluate(&batch)?.into_array(rows)?;
        let keys = keys.as_primitive::<UInt32Type>();
        indices.clear();
        indices.reserve(rows);
        for (row, key) in keys.iter().enumerate() {
            let group = match key {
                Some(k) if (k as usize) < spec.people => k as usize,
                Some(k) => {
                    return exec_err!(
                        "{PERSON_COLUMN} {k} in row {row} is not a person of the identity graph, \
                         which has {} people",
                        spec.people
                    )
                }
                None => spec.people,
            };
            states.seen[group] = true;
            indices.push(group);
        }
        for ((aggregate, accumulator), keep) in spec
            .aggregates
            .iter()
            .zip(states.accumulators.iter_mut())
            .zip(&spec.filters)
        {
            let values = aggregate
                .expressions()
                .iter()
                .map(|e| e.evaluate(&batch)?.into_array(rows))
                .collect::<Result<Vec<ArrayRef>>>()?;
            let keep = match keep {
                Some(k) => Some(k.evaluate(&batch)?.into_array(rows)?),
                None => None,
            };
            accumulator.update_batch(
                &values,
                &indices,
                keep.as_ref().map(|k| k.as_boolean()),
                groups,
            )?;
        }
        // Tracked rather than refused: the states are bounded by the number of people,
        // and spilling consumers give way to them.
        let size = states.size();
        states.reservation.resize(size);
    }
    Ok(states)
}

/// Merges the partitions' states and emits the groups that had rows, in key order.
async fn aggregate(
    spec: Arc<Spec>,
    input: Arc<dyn ExecutionPlan>,
    schema: SchemaRef,
    context: Arc<TaskContext>,
    metrics: BaselineMetrics,
) -> Result<Vec<RecordBatch>> {
    let tasks = (0..input.output_partitioning().partition_count())
        .map(|p| {
            let stream = input.execute(p, context.clone())?;
            let reservation = MemoryConsumer::new(format!("PersonAggregateExec[{p}]"))
                .register(context.memory_pool());
            Ok(SpawnedTask::spawn(accumulate(
                spec.clone(),
                stream,
                reservation,
            )))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut parts = vec![];
    for task in tasks {
        parts.push(joined(task).await?);
    }
    let timer = metrics.elapsed_compute().timer();
    let groups = spec.groups();
    // A partition without rows never sized its states, and has nothing to merge; every
    // other one holds a state for each group.
    parts.retain(|p| p.seen.contains(&true));
    if parts.is_empty() {
        timer.done();
        return Ok(vec![]);
    }
    let mut seen = vec![false; groups];
    for part in &parts {
        for (s, &p) in seen.iter_mut().zip(&part.seen) {
            *s |= p;
        }
    }
    let seen = Arc::new(BooleanArray::from(seen));
    // Per aggregate, its state in each partition. The partitions' reservations stay held
    // until every merged state is evaluated: a merge grows its target by at most the
    // states merged into it.
    let mut states: Vec<Vec<Box<dyn GroupsAccumulator>>> =
        spec.aggregates.iter().map(|_| vec![]).collect();
    let mut held = vec![];
    for part in parts {
        for (state, accumulator) in states.iter_mut().zip(part.accumulators) {
            state.push(accumulator);
        }
        held.push(part.reservation);
    }
    // Each aggregate merges and evaluates on a thread of its own: for millions of people
    // last_n and most_frequent take seconds each, which one core would do in turn.
    let every: Arc<Vec<usize>> = Arc::new((0..groups).collect());
    let tasks: Vec<_> = states
        .into_iter()
        .map(|partitions| {
            let (seen, every) = (Arc::clone(&seen), Arc::clone(&every));
            SpawnedTask::spawn_blocking(move || merged(partitions, &every, &seen))
        })
        .collect();
    let keys: UInt32Array = (0..groups)
        .map(|g| (g < spec.people).then_some(g as u32))
        .collect();
    let mut columns = vec![filter(&keys, &seen)?];
    for task in tasks {
        columns.push(joined(task).await?);
    }
    drop(held);
    let whole = RecordBatch::try_new(schema, columns)?;
    let size = context.session_config().batch_size().max(1);
    let batches = (0..whole.num_rows())
        .step_by(size)
        .map(|start| whole.slice(start, size.min(whole.num_rows() - start)))
        .collect::<Vec<_>>();
    metrics.record_output(whole.num_rows());
    timer.done();
    Ok(batches)
}

/// What `task` returned; a panic in it resumes here.
async fn joined<T: Send + 'static>(task: SpawnedTask<Result<T>>) -> Result<T> {
    task.join_unwind()
        .await
        .map_err(|e| datafusion::error::DataFusionError::ExecutionJoin(Box::new(e)))?
}

/// One aggregate's partition states merged into the last one (the others in partition
/// order, as ties may depend on it) and evaluated for the groups `seen`.
fn merged(
    mut partitions: Vec<Box<dyn GroupsAccumulator>>,
    every: &[usize],
    seen: &BooleanArray,
) -> Result<ArrayRef> {
    let mut all = partitions.pop().expect("a partition with rows");
    for mut from in partitions {
        all.merge_batch(&from.state(EmitTo::All)?, every, every.len())?;
    }
    Ok(filter(&all.evaluate(EmitTo::All)?, seen)?)
}

/// The aggregation [`PersonAggregate`] puts in place of a hash aggregation by person.
#[derive(Debug)]
pub struct PersonAggregateExec {
    spec: Arc<Spec>,
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
    statistics: Arc<Statistics>,
    metrics: ExecutionPlanMetricsSet,
}

impl PersonAggregateExec {
    fn new(
        spec: Arc<Spec>,
        input: Arc<dyn ExecutionPlan>,
        schema: SchemaRef,
        statistics: Arc<Statistics>,
    ) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        Self {
            spec,
            input,
            properties,
            statistics,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

impl DisplayAs for PersonAggregateExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let names: Vec<&str> = self.spec.aggregates.iter().map(|a| a.name()).collect();
        write!(
            f,
            "PersonAggregateExec: people={}, aggr=[{}]",
            self.spec.people,
            names.join(", ")
        )
    }
}

impl ExecutionPlan for PersonAggregateExec {
    fn name(&self) -> &'static str {
        "PersonAggregateExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        let spec = &self.spec;
        let args = spec.aggregates.iter().flat_map(|a| a.expressions());
        let filters = spec.filters.iter().flatten().cloned();
        for e in std::iter::once(spec.key.clone()).chain(args).chain(filters) {
            if f(&e)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return internal_err!("PersonAggregateExec has one input, got {}", children.len());
        }
        Ok(Arc::new(Self::new(
            self.spec.clone(),
            children.swap_remove(0),
            self.schema(),
            self.statistics.clone(),
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
            return internal_err!("PersonAggregateExec has one partition, asked for {partition}");
        }
        let metrics = BaselineMetrics::new(&self.metrics, partition);
        let fut = aggregate(
            self.spec.clone(),
            self.input.clone(),
            self.schema(),
            context,
            metrics,
        );
        Ok(c360_udfs::batches_when_done(self.schema(), fut))
    }

    fn statistics_from_inputs(
        &self,
        _input_stats: &[Arc<Statistics>],
        _args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        Ok(self.statistics.clone())
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// Puts [`PersonAggregate`] for a graph of `people` first among `ctx`'s physical optimizer
/// rules, replacing the one of a graph registered before, and plans joins by person as
/// [`super::join::PersonJoinExec`]s.
pub fn install(ctx: &SessionContext, people: usize) {
    let state = ctx.state();
    let mut rules: Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>> =
        vec![Arc::new(PersonAggregate { people })];
    rules.extend(
        state
            .physical_optimizers()
            .iter()
            .filter(|r| r.name() != RULE)
            .cloned(),
    );
    let state = SessionStateBuilder::new_from_existing(state).with_physical_optimizer_rules(rules);
    let state = super::join::with_planner(state, people).build();
    *ctx.state_ref().write() = state;
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::physical_plan::displayable;

    #[tokio::test]
    async fn takes_the_place_of_hash_aggregation_by_person_only() -> Result<()> {
        let ctx = SessionContext::new();
        install(&ctx, 4);
        install(&ctx, 10);
        let rules: Vec<_> = ctx
            .state()
            .physical_optimizers()
            .iter()
            .map(|r| r.name().to_string())
            .collect();
        assert_eq!(rules.iter().filter(|r| *r == RULE).count(), 1);
        assert_eq!(rules[0], RULE);
        ctx.sql(
            "CREATE VIEW t AS SELECT arrow_cast(column1, 'UInt32') AS c360_person, column2 AS v \
             FROM (VALUES (1, 'a'), (3, 'b'), (1, 'c'), (NULL, 'd'))",
        )
        .await?;
        for (sql, dense) in [
            (
                "SELECT c360_person, count(*), max(v) FROM t GROUP BY c360_person",
                true,
            ),
            ("SELECT DISTINCT c360_person FROM t", true),
            // DataFusion groups by (person, v) first, then counts by person.
            (
                "SELECT c360_person, count(DISTINCT v) FROM t GROUP BY c360_person",
                true,
            ),
            (
                "SELECT c360_person, array_agg(v ORDER BY v) FROM t GROUP BY c360_person",
                false,
            ),
            ("SELECT c360_person + 1, count(*) FROM t GROUP BY 1", false),
            ("SELECT v, count(*) FROM t GROUP BY v", false),
            (
                "SELECT c360_person, v, count(*) FROM t GROUP BY c360_person, v",
                false,
            ),
        ] {
            let plan = ctx.sql(sql).await?.create_physical_plan().await?;
            let text = displayable(plan.as_ref()).indent(true).to_string();
            assert_eq!(text.contains("PersonAggregateExec"), dense, "{sql}\n{text}");
        }
        let rows = ctx
            .sql("SELECT c360_person, count(*) AS n, max(v) AS v FROM t GROUP BY c360_person ORDER BY 1")
            .await?
            .collect()
            .await?;
        let text = arrow::util::pretty::pretty_format_batches(&rows)?.to_string();
        let expected = [
            "+-------------+---+---+",
            "| c360_person | n | v |",
            "+-------------+---+---+",
            "| 1           | 2 | c |",
            "| 3           | 1 | b |",
            "|             | 1 | d |",
            "+-------------+---+---+",
        ];
        assert_eq!(text.lines().collect::<Vec<_>>(), expected);

        // A partition without rows merges nothing; no rows at all, no groups.
        let schema = Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new(PERSON_COLUMN, DataType::UInt32, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(UInt32Array::from(vec![Some(2), None, Some(2)]))],
        )?;
        for (parts, expected) in [
            (
                vec![vec![batch.clone()], vec![]],
                vec![(Some(2), 2), (None, 1)],
            ),
            (vec![vec![], vec![batch]], vec![(Some(2), 2), (None, 1)]),
            (vec![vec![], vec![]], vec![]),
        ] {
            let table = datafusion::datasource::MemTable::try_new(schema.clone(), parts)?;
            let ctx = SessionContext::new();
            install(&ctx, 10);
            ctx.register_table("parts", Arc::new(table))?;
            let rows = ctx
                .sql("SELECT c360_person, count(*) AS n FROM parts GROUP BY c360_person ORDER BY 1")
                .await?
                .collect()
                .await?;
            let mut got = vec![];
            for b in &rows {
                let (p, n) = (
                    b.column(0).as_primitive::<UInt32Type>(),
                    b.column(1).as_primitive::<arrow::datatypes::Int64Type>(),
                );
                for r in 0..b.num_rows() {
                    got.push((
                        arrow::array::Array::is_valid(p, r).then(|| p.value(r)),
                        n.value(r),
                    ));
                }
            }
            assert_eq!(got, expected);
        }
        Ok(())
    }
}
