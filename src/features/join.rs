//! Joins by person without a hash table. Assembling customer_360 joins every feature's
//! aggregate (one row per person) and the graph's people on `c360_person`, a dense number
//! below the graph's count of people: the held side's rows can be found by indexing an
//! array with the key, and the streamed side's columns pass through uncopied, in their
//! order. [`PersonPlanner`] plans each inner or left join on `c360_person` whose held side
//! has at most one row per person as a [`PersonJoinExec`]; any other join is left to
//! DataFusion.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array};
use arrow::compute::{concat_batches, filter_record_batch, is_not_null, take};
use arrow::datatypes::{DataType, Field, Schema, UInt32Type};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{
    internal_err, Column, DFSchemaRef, Dependency, JoinType, NullEquality, Result, Statistics,
};
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{
    Expr, Extension, LogicalPlan, UserDefinedLogicalNode, UserDefinedLogicalNodeCore,
};
use datafusion::physical_expr::equivalence::join_equivalence_properties;
use datafusion::physical_expr::expressions::Column as ColumnExpr;
use datafusion::physical_expr::{PhysicalExpr, PhysicalExprRef};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::statistics::{ChildStats, StatisticsArgs};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    collect, DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties,
};
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};
use futures::{StreamExt, TryStreamExt};
use tokio::sync::OnceCell;

use super::dense::PERSON_COLUMN;

/// Plans queries as DataFusion does, with joins by person as [`PersonJoinExec`]s.
#[derive(Debug)]
pub struct PersonPlanner {
    pub people: usize,
}

#[async_trait]
impl QueryPlanner for PersonPlanner {
    async fn create_physical_plan(
        &self,
        plan: &LogicalPlan,
        session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // After every logical optimization, so that none meets a node it does not know.
        let plan = plan.clone().transform_up(by_person)?.data;
        let planner = Arc::new(PersonJoinPlanner {
            people: self.people,
        });
        DefaultPhysicalPlanner::with_extension_planners(vec![planner])
            .create_physical_plan(&plan, session)
            .await
    }
}

/// A join that qualifies, as a [`PersonJoin`] node.
fn by_person(plan: LogicalPlan) -> Result<Transformed<LogicalPlan>> {
    let LogicalPlan::Join(join) = &plan else {
        return Ok(Transformed::no(plan));
    };
    let [(Expr::Column(l), Expr::Column(r))] = join.on.as_slice() else {
        return Ok(Transformed::no(plan));
    };
    if join.filter.is_some()
        || join.null_equality != NullEquality::NullEqualsNothing
        || l.name != PERSON_COLUMN
        || r.name != PERSON_COLUMN
    {
        return Ok(Transformed::no(plan));
    }
    let (Ok(li), Ok(ri)) = (
        join.left.schema().index_of_column(l),
        join.right.schema().index_of_column(r),
    ) else {
        return Ok(Transformed::no(plan));
    };
    let person = |p: &LogicalPlan, i: usize| p.schema().field(i).data_type() == &DataType::UInt32;
    if !person(&join.left, li) || !person(&join.right, ri) {
        return Ok(Transformed::no(plan));
    }
    // An inner join holds its left side if it can: the customer table's last join streams
    // the people, whose identifier lists would otherwise be copied, in their order.
    let held = match join.join_type {
        JoinType::Inner if unique_by(&join.left, li) => Side::Left,
        JoinType::Inner | JoinType::Left if unique_by(&join.right, ri) => Side::Right,
        _ => return Ok(Transformed::no(plan)),
    };
    let node = PersonJoin {
        left: join.left.as_ref().clone(),
        right: join.right.as_ref().clone(),
        on: (l.clone(), r.clone()),
        join_type: join.join_type,
        held,
        schema: join.schema.clone(),
    };
    Ok(Transformed::yes(LogicalPlan::Extension(Extension {
        node: Arc::new(node),
    })))
}

/// Whether `plan` has at most one row per value of its column `i`: a key DataFusion knows
/// of (a GROUP BY, a table's primary key), or the streamed side of a [`PersonJoin`].
fn unique_by(plan: &LogicalPlan, i: usize) -> bool {
    let single = plan
        .schema()
        .functional_dependencies()
        .iter()
        .any(|d| d.mode == Dependency::Single && d.source_indices == [i]);
    if single {
        return true;
    }
    let column_of = |input: &LogicalPlan, e: &Expr| match e.clone().unalias() {
        Expr::Column(c) => input.schema().index_of_column(&c).ok(),
        _ => None,
    };
    match plan {
        LogicalPlan::Projection(p) => {
            column_of(&p.input, &p.expr[i]).is_some_and(|j| unique_by(&p.input, j))
        }
        LogicalPlan::SubqueryAlias(s) => unique_by(&s.input, i),
        LogicalPlan::Filter(f) => unique_by(&f.input, i),
        LogicalPlan::Sort(s) => unique_by(&s.input, i),
        LogicalPlan::Extension(e) => match e.node.as_any().downcast_ref::<PersonJoin>() {
            Some(join) => join.unique_by(i),
            None => false,
        },
        _ => false,
    }
}

/// An inner or left join on `c360_person` whose `held` side has one row per person.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PersonJoin {
    left: LogicalPlan,
    right: LogicalPlan,
    on: (Column, Column),
    join_type: JoinType,
    held: Side,
    schema: DFSchemaRef,
}

/// Which side of a join is read whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd)]
enum Side {
    Left,
    Right,
}

impl PartialOrd for PersonJoin {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        fn key(
            j: &PersonJoin,
        ) -> (
            &LogicalPlan,
            &LogicalPlan,
            &(Column, Column),
            JoinType,
            Side,
        ) {
            (&j.left, &j.right, &j.on, j.join_type, j.held)
        }
        key(self).partial_cmp(&key(other))
    }
}

impl PersonJoin {
    /// Each streamed row meets at most one held row, so a key of the streamed side stays
    /// one.
    fn unique_by(&self, i: usize) -> bool {
        let left = self.left.schema().fields().len();
        match self.held {
            Side::Right if i < left => unique_by(&self.left, i),
            Side::Left if i >= left => unique_by(&self.right, i - left),
            _ => false,
        }
    }
}

impl UserDefinedLogicalNodeCore for PersonJoin {
    fn name(&self) -> &str {
        "PersonJoin"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.left, &self.right]
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    fn expressions(&self) -> Vec<Expr> {
        vec![
            Expr::Column(self.on.0.clone()),
            Expr::Column(self.on.1.clone()),
        ]
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "PersonJoin: type={}, on={} = {}, held={:?}",
            self.join_type, self.on.0, self.on.1, self.held
        )
    }

    fn with_exprs_and_inputs(&self, exprs: Vec<Expr>, inputs: Vec<LogicalPlan>) -> Result<Self> {
        let (Ok([Expr::Column(l), Expr::Column(r)]), Ok([left, right])) = (
            <[Expr; 2]>::try_from(exprs),
            <[LogicalPlan; 2]>::try_from(inputs),
        ) else {
            return internal_err!("PersonJoin takes two columns and two inputs");
        };
        let schema = datafusion::logical_expr::logical_plan::builder::build_join_schema(
            left.schema(),
            right.schema(),
            &self.join_type,
        )?;
        Ok(Self {
            left,
            right,
            on: (l, r),
            join_type: self.join_type,
            held: self.held,
            schema: Arc::new(schema),
        })
    }
}

/// Plans [`PersonJoin`] nodes.
struct PersonJoinPlanner {
    people: usize,
}

#[async_trait]
impl ExtensionPlanner for PersonJoinPlanner {
    async fn plan_extension(
        &self,
        _planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        _session: &dyn Session,
        _planning_ctx: &PhysicalPlanningContext,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(join) = node.as_any().downcast_ref::<PersonJoin>() else {
            return Ok(None);
        };
        let [left, right] = physical_inputs else {
            return internal_err!("PersonJoin has two inputs");
        };
        let keys = (
            join.left.schema().index_of_column(&join.on.0)?,
            join.right.schema().index_of_column(&join.on.1)?,
        );
        let spec = Spec {
            keys,
            join_type: join.join_type,
            held: join.held,
            people: self.people,
        };
        Ok(Some(Arc::new(PersonJoinExec::try_new(
            left.clone(),
            right.clone(),
            spec,
        )?)))
    }
}

/// The held side: its rows in one batch, and each key's row.
struct HeldRows {
    batch: RecordBatch,
    /// Per key below the graph's count of people: its row, or `u32::MAX`.
    rows: Vec<u32>,
    /// Keys at or above it (none in a query over one graph).
    other: HashMap<u32, u32>,
    _reservation: MemoryReservation,
}

impl fmt::Debug for HeldRows {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Held({} rows)", self.batch.num_rows())
    }
}

impl HeldRows {
    fn row(&self, key: u32) -> Option<u32> {
        match self.rows.get(key as usize) {
            Some(&row) => (row != u32::MAX).then_some(row),
            None => self.other.get(&key).copied(),
        }
    }
}

/// An inner or left join on `c360_person` whose held side has one row per person, which
/// is read whole; the other side streams through in order.
#[derive(Debug)]
pub struct PersonJoinExec {
    left: Arc<dyn ExecutionPlan>,
    right: Arc<dyn ExecutionPlan>,
    spec: Spec,
    properties: Arc<PlanProperties>,
    /// Read once for every partition streamed.
    built: Arc<OnceCell<Arc<HeldRows>>>,
    metrics: ExecutionPlanMetricsSet,
}

/// What a [`PersonJoinExec`] joins on, and how.
#[derive(Debug, Clone, Copy)]
struct Spec {
    /// The key's column on the left and on the right.
    keys: (usize, usize),
    join_type: JoinType,
    held: Side,
    /// The graph's count of people, below which keys index an array.
    people: usize,
}

impl PersonJoinExec {
    fn try_new(
        left: Arc<dyn ExecutionPlan>,
        right: Arc<dyn ExecutionPlan>,
        spec: Spec,
    ) -> Result<Self> {
        let Spec {
            keys,
            join_type,
            held,
            ..
        } = spec;
        let (l, r) = (left.schema(), right.schema());
        let nullable_right = join_type == JoinType::Left;
        let fields: Vec<Field> = l
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .chain(r.fields().iter().map(|f| {
                f.as_ref()
                    .clone()
                    .with_nullable(f.is_nullable() || nullable_right)
            }))
            .collect();
        let schema = Arc::new(Schema::new(fields));
        let streamed = match held {
            Side::Left => &right,
            _ => &left,
        };
        let on: Vec<(PhysicalExprRef, PhysicalExprRef)> = vec![(
            Arc::new(ColumnExpr::new(l.field(keys.0).name(), keys.0)),
            Arc::new(ColumnExpr::new(r.field(keys.1).name(), keys.1)),
        )];
        let equivalences = join_equivalence_properties(
            left.equivalence_properties().clone(),
            right.equivalence_properties().clone(),
            &join_type,
            schema.clone(),
            &[held == Side::Right, held == Side::Left],
            None,
            &on,
        )?;
        let properties = Arc::new(PlanProperties::new(
            equivalences,
            Partitioning::UnknownPartitioning(streamed.output_partitioning().partition_count()),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Ok(Self {
            left,
            right,
            spec,
            properties,
            built: Arc::default(),
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }

    /// The streamed child's number.
    fn streamed(&self) -> usize {
        match self.spec.held {
            Side::Left => 1,
            Side::Right => 0,
        }
    }

    fn sides(
        &self,
    ) -> (
        &Arc<dyn ExecutionPlan>,
        usize,
        &Arc<dyn ExecutionPlan>,
        usize,
    ) {
        let (l, r) = self.spec.keys;
        match self.spec.held {
            Side::Left => (&self.left, l, &self.right, r),
            _ => (&self.right, r, &self.left, l),
        }
    }
}

/// Reads the held side whole and indexes its rows by key.
async fn hold(
    plan: Arc<dyn ExecutionPlan>,
    key: usize,
    people: usize,
    context: Arc<TaskContext>,
) -> Result<Arc<HeldRows>> {
    let schema = plan.schema();
    let batches = collect(plan, context.clone()).await?;
    let batch = concat_batches(&schema, &batches)?;
    drop(batches);
    let reservation = MemoryConsumer::new("PersonJoinExec").register(context.memory_pool());
    reservation.try_grow(batch.get_array_memory_size() + people * 4)?;
    let mut rows = vec![u32::MAX; people];
    let mut other = HashMap::new();
    let keys = batch.column(key).as_primitive::<UInt32Type>();
    for (row, k) in keys.iter().enumerate() {
        let Some(k) = k else { continue };
        let slot = match rows.get_mut(k as usize) {
            Some(slot) => slot,
            None => other.entry(k).or_insert(u32::MAX),
        };
        if *slot != u32::MAX {
            return internal_err!("PersonJoinExec holds {PERSON_COLUMN} {k} twice");
        }
        *slot = row as u32;
    }
    Ok(Arc::new(HeldRows {
        batch,
        rows,
        other,
        _reservation: reservation,
    }))
}

impl DisplayAs for PersonJoinExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let (l, r) = (self.left.schema(), self.right.schema());
        write!(
            f,
            "PersonJoinExec: type={}, on=({}@{}, {}@{}), held={:?}",
            self.spec.join_type,
            l.field(self.spec.keys.0).name(),
            self.spec.keys.0,
            r.field(self.spec.keys.1).name(),
            self.spec.keys.1,
            self.spec.held
        )
    }
}

impl ExecutionPlan for PersonJoinExec {
    fn name(&self) -> &'static str {
        "PersonJoinExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.left, &self.right]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![self.spec.held == Side::Right, self.spec.held == Side::Left]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        // Taking rows by index is cheaper than spreading them over cores, and spreading
        // would lose the streamed side's order.
        vec![false, false]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let Ok([left, right]) = <[Arc<dyn ExecutionPlan>; 2]>::try_from(children) else {
            return internal_err!("PersonJoinExec has two inputs");
        };
        Ok(Arc::new(Self::try_new(left, right, self.spec)?))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let (held, held_key, streamed, key) = self.sides();
        let stream = streamed.execute(partition, context.clone())?;
        let (held, held_key, people) = (held.clone(), held_key, self.spec.people);
        let built = self.built.clone();
        let (schema, inner, held_left) = (
            self.schema(),
            self.spec.join_type == JoinType::Inner,
            self.spec.held == Side::Left,
        );
        let metrics = BaselineMetrics::new(&self.metrics, partition);
        let out = schema.clone();
        let batches = futures::stream::once(async move {
            let held = built
                .get_or_try_init(|| hold(held, held_key, people, context))
                .await?
                .clone();
            Ok::<_, datafusion::error::DataFusionError>(stream.map(move |batch| {
                let timer = metrics.elapsed_compute().timer();
                let mut batch = batch?;
                let keys = batch.column(key).as_primitive::<UInt32Type>();
                let mut rows: UInt32Array =
                    keys.iter().map(|k| k.and_then(|k| held.row(k))).collect();
                if inner && rows.null_count() > 0 {
                    let matched = is_not_null(&rows)?;
                    batch = filter_record_batch(&batch, &matched)?;
                    rows = arrow::compute::filter(&rows, &matched)?
                        .as_primitive::<UInt32Type>()
                        .clone();
                }
                let taken = held
                    .batch
                    .columns()
                    .iter()
                    .map(|c| take(c, &rows, None))
                    .collect::<std::result::Result<Vec<ArrayRef>, _>>()?;
                let columns: Vec<ArrayRef> = match held_left {
                    true => taken.into_iter().chain(batch.columns().to_vec()).collect(),
                    false => batch.columns().iter().cloned().chain(taken).collect(),
                };
                let joined = RecordBatch::try_new(out.clone(), columns)?;
                metrics.record_output(joined.num_rows());
                timer.done();
                Ok(joined)
            }))
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, batches)))
    }

    fn statistics_from_inputs(
        &self,
        input_stats: &[Arc<Statistics>],
        _args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        // As many rows as stream through, at most: the planner then puts the one-row
        // sides of cross joins, not this, in memory.
        let mut statistics = Statistics::new_unknown(&self.schema());
        if let Some(s) = input_stats.get(self.streamed()) {
            statistics.num_rows = s.num_rows.to_inexact();
        }
        Ok(Arc::new(statistics))
    }

    fn child_stats_requests(&self, partition: Option<usize>) -> Vec<ChildStats> {
        let mut requests = vec![ChildStats::Skip, ChildStats::Skip];
        requests[self.streamed()] = ChildStats::At(partition);
        requests
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// `state` planning with [`PersonPlanner`], for a graph of `people`.
pub fn with_planner(state: SessionStateBuilder, people: usize) -> SessionStateBuilder {
    state.with_query_planner(Arc::new(PersonPlanner { people }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use datafusion::catalog::MemTable;
    use datafusion::common::{Constraint, Constraints};
    use datafusion::physical_plan::displayable;
    use datafusion::prelude::{SessionConfig, SessionContext};

    fn people(keys: Vec<Option<u32>>) -> Result<RecordBatch> {
        let names: StringArray = keys.iter().map(|k| k.map(|k| format!("p{k}"))).collect();
        Ok(RecordBatch::try_from_iter([
            ("c360_person", Arc::new(UInt32Array::from(keys)) as ArrayRef),
            ("name", Arc::new(names) as ArrayRef),
        ])?)
    }

    /// The same tables in a session with joins by person and in one without.
    fn sessions() -> Result<[SessionContext; 2]> {
        let events = RecordBatch::try_from_iter([
            (
                "c360_person",
                Arc::new(UInt32Array::from(vec![
                    Some(0),
                    Some(0),
                    Some(2),
                    Some(5),
                    None,
                    Some(2),
                ])) as ArrayRef,
            ),
            (
                "v",
                Arc::new(Int64Array::from(vec![1, 2, 3, 4, 5, 6])) as ArrayRef,
            ),
        ])?;
        // Streamed: a person twice, one of no one, one above the graph's people.
        let persons = people(vec![
            Some(3),
            Some(0),
            Some(1),
            Some(2),
            Some(2),
            None,
            Some(4),
            Some(5),
            Some(9),
        ])?;
        // Unique by declaration, with a key above the graph's people.
        let accounts = people(vec![Some(9), Some(2), None, Some(0), Some(4)])?;
        let accounts = MemTable::try_new(accounts.schema(), vec![vec![accounts]])?
            .with_constraints(Constraints::new_unverified(vec![Constraint::Unique(vec![
                0,
            ])]));
        let accounts = Arc::new(accounts);
        let config = || SessionConfig::new().with_target_partitions(2);
        let sessions = [
            SessionContext::new_with_config(config()),
            SessionContext::new_with_config(config()),
        ];
        for ctx in &sessions {
            ctx.register_batch("events", events.clone())?;
            ctx.register_batch("persons", persons.clone())?;
            ctx.register_table("accounts", accounts.clone())?;
        }
        super::super::dense::install(&sessions[0], 6);
        Ok(sessions)
    }

    async fn plan_and_rows(ctx: &SessionContext, sql: &str) -> Result<(String, String)> {
        let df = ctx.sql(sql).await?;
        let plan = df.clone().create_physical_plan().await?;
        let plan = displayable(plan.as_ref()).indent(false).to_string();
        let rows = arrow::util::pretty::pretty_format_batches(&df.collect().await?)?.to_string();
        Ok((plan, rows))
    }

    #[tokio::test]
    async fn joins_by_person_give_what_hash_joins_give() -> Result<()> {
        let [by_person, hashed] = sessions()?;
        let features = "(SELECT c360_person, sum(v) AS total, count(*) AS n \
                        FROM events GROUP BY c360_person)";
        let queries = [
            // Held on the right: every streamed row kept, NULLs where no one matches.
            format!(
                "SELECT p.c360_person, p.name, f.total, f.n FROM persons p \
                 LEFT JOIN {features} f ON f.c360_person = p.c360_person ORDER BY 1, 2"
            ),
            // Held on the left: only matches, streamed duplicates each matched.
            format!(
                "SELECT f.total, p.name FROM {features} f \
                 JOIN persons p ON p.c360_person = f.c360_person ORDER BY 1, 2"
            ),
            // A declared key, one of them above the graph's people.
            "SELECT p.name, a.name AS account FROM persons p \
             LEFT JOIN accounts a ON a.c360_person = p.c360_person ORDER BY 1, 2"
                .to_string(),
            // Joins of joins: a person join's streamed side stays unique.
            format!(
                "SELECT a.name, f.total, g.n FROM accounts a \
                 LEFT JOIN {features} f ON f.c360_person = a.c360_person \
                 JOIN {features} g ON g.c360_person = a.c360_person ORDER BY 1"
            ),
        ];
        for sql in &queries {
            let (plan, rows) = plan_and_rows(&by_person, sql).await?;
            assert!(plan.contains("PersonJoinExec"), "{sql}\n{plan}");
            assert!(!plan.contains("HashJoinExec"), "{sql}\n{plan}");
            let (plan, expected) = plan_and_rows(&hashed, sql).await?;
            assert!(plan.contains("HashJoinExec"), "{plan}");
            assert_eq!(rows, expected, "{sql}");
        }
        Ok(())
    }

    #[tokio::test]
    async fn other_joins_stay_hash_joins() -> Result<()> {
        let [by_person, hashed] = sessions()?;
        let queries = [
            // Neither side one row per person.
            "SELECT count(*) FROM events a JOIN persons b ON a.c360_person = b.c360_person",
            // Not on the person column alone.
            "SELECT count(*) FROM persons a JOIN accounts b \
             ON a.c360_person = b.c360_person AND a.name = b.name",
            // A right join: the held side's unmatched rows would have to be found.
            "SELECT count(*) FROM persons a RIGHT JOIN accounts b \
             ON a.c360_person = b.c360_person",
        ];
        for sql in queries {
            let (plan, rows) = plan_and_rows(&by_person, sql).await?;
            assert!(!plan.contains("PersonJoinExec"), "{sql}\n{plan}");
            assert_eq!(rows, plan_and_rows(&hashed, sql).await?.1, "{sql}");
        }
        Ok(())
    }

    #[tokio::test]
    async fn a_held_side_with_a_person_twice_is_an_error() -> Result<()> {
        let ctx = SessionContext::new();
        let twice = people(vec![Some(1), Some(1)])?;
        let held = MemTable::try_new(twice.schema(), vec![vec![twice]])?.with_constraints(
            Constraints::new_unverified(vec![Constraint::Unique(vec![0])]),
        );
        ctx.register_table("held", Arc::new(held))?;
        ctx.register_batch("streamed", people(vec![Some(1)])?)?;
        super::super::dense::install(&ctx, 4);
        let err = ctx
            .sql("SELECT * FROM streamed s LEFT JOIN held h ON h.c360_person = s.c360_person")
            .await?
            .collect()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("c360_person 1 twice"), "{err}");
        Ok(())
    }
}
