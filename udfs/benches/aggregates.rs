//! Every c360 aggregate, called as DataFusion's hash aggregation calls them: `update_batch`
//! over many groups, `state`/`merge_batch` between partial and final phases, `evaluate`.
//!
//! `cargo bench -p c360-udfs --bench aggregates`

use std::sync::Arc;

use arrow::array::{ArrayRef, Decimal128Array, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, FieldRef, Schema, TimeUnit};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::function::AccumulatorArgs;
use datafusion::logical_expr::{AggregateUDF, EmitTo, GroupsAccumulator};
use datafusion::physical_expr::expressions::{col, lit};
use datafusion::physical_expr::PhysicalExpr;

/// A function, its argument expressions and the input arrays.
type Case = (
    &'static str,
    Arc<AggregateUDF>,
    Vec<Arc<dyn PhysicalExpr>>,
    Vec<ArrayRef>,
);

const ROWS: usize = 8192;
const GROUPS: usize = 1000;

fn groups_accumulator(
    udaf: &AggregateUDF,
    schema: &Schema,
    exprs: &[Arc<dyn PhysicalExpr>],
) -> Box<dyn GroupsAccumulator> {
    let fields: Vec<FieldRef> = exprs
        .iter()
        .map(|e| e.return_field(schema).expect("field"))
        .collect();
    let return_field = Arc::new(Field::new(
        "out",
        udaf.return_type(
            &fields
                .iter()
                .map(|f| f.data_type().clone())
                .collect::<Vec<_>>(),
        )
        .expect("type"),
        true,
    ));
    let args = AccumulatorArgs {
        return_field,
        schema,
        ignore_nulls: false,
        order_bys: &[],
        is_reversed: false,
        name: udaf.name(),
        is_distinct: false,
        exprs,
        expr_fields: &fields,
    };
    udaf.create_groups_accumulator(args)
        .expect("groups accumulator")
}

fn bench(c: &mut Criterion) {
    let schema = Schema::new(vec![
        Field::new("v", DataType::Utf8, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
        Field::new("amount", DataType::Decimal128(12, 2), true),
        Field::new("w", DataType::Utf8, true),
    ]);
    // Edges for connected_components: each value linked to one of 3,000 devices.
    let devices: ArrayRef = Arc::new(
        (0..ROWS)
            .map(|i| Some(format!("dev-{:05}", (i * 31) % 3000)))
            .collect::<StringArray>(),
    );
    let amounts: ArrayRef = Arc::new(
        (0..ROWS as i128)
            .map(|i| Some(500 + i * 37 % 50_000))
            .collect::<Decimal128Array>()
            .with_precision_and_scale(12, 2)
            .unwrap(),
    );
    // A 30-day window ending in the middle of the data's day.
    let window = || lit(ScalarValue::new_interval_mdn(0, 30, 0));
    let reference = || {
        lit(ScalarValue::TimestampMicrosecond(
            Some(1_767_225_600_000_000 + 43_200_000_000),
            Some("UTC".into()),
        ))
    };
    let values: ArrayRef = Arc::new(
        (0..ROWS)
            .map(|i| Some(format!("SKU-{:05}", (i * i) % 500)))
            .collect::<StringArray>(),
    );
    let times: ArrayRef = Arc::new(
        (0..ROWS as i64)
            .map(|i| Some(1_767_225_600_000_000 + i * 1_000_003 % 86_400_000_000))
            .collect::<TimestampMicrosecondArray>(),
    );
    let groups: Vec<usize> = (0..ROWS).map(|i| (i * 7919) % GROUPS).collect();
    let cases: Vec<Case> = vec![
        (
            "most_frequent",
            c360_udfs::most_frequent::udaf(),
            vec![col("v", &schema).unwrap()],
            vec![values.clone()],
        ),
        (
            "last_n(3)",
            c360_udfs::last_n::udaf(),
            vec![
                col("v", &schema).unwrap(),
                col("ts", &schema).unwrap(),
                lit(ScalarValue::Int64(Some(3))),
            ],
            vec![
                values.clone(),
                times.clone(),
                Arc::new(arrow::array::Int64Array::from(vec![3; ROWS])),
            ],
        ),
        (
            "sum_in_window(30 days)",
            c360_udfs::sum_in_window::udaf(),
            vec![
                col("amount", &schema).unwrap(),
                col("ts", &schema).unwrap(),
                window(),
                reference(),
            ],
            vec![amounts.clone(), times.clone()],
        ),
        (
            "connected_components",
            c360_udfs::connected_components::udaf(),
            vec![col("v", &schema).unwrap(), col("w", &schema).unwrap()],
            vec![values.clone(), devices.clone()],
        ),
        (
            "count_in_window(30 days)",
            c360_udfs::count_in_window::udaf(),
            vec![col("ts", &schema).unwrap(), window(), reference()],
            vec![times.clone()],
        ),
    ];
    let mut group = c.benchmark_group("aggregates");
    group.throughput(Throughput::Elements(ROWS as u64));
    for (name, udaf, exprs, inputs) in &cases {
        group.bench_function(format!("{name}/update_batch"), |b| {
            b.iter(|| {
                let mut acc = groups_accumulator(udaf, &schema, exprs);
                acc.update_batch(inputs, &groups, None, GROUPS).unwrap();
                acc.evaluate(EmitTo::All).unwrap()
            })
        });
        let mut partial = groups_accumulator(udaf, &schema, exprs);
        partial.update_batch(inputs, &groups, None, GROUPS).unwrap();
        let state = partial.state(EmitTo::All).unwrap();
        let all: Vec<usize> = (0..GROUPS).collect();
        group.bench_function(format!("{name}/merge_batch"), |b| {
            b.iter(|| {
                let mut acc = groups_accumulator(udaf, &schema, exprs);
                acc.merge_batch(&state, &all, GROUPS).unwrap();
                acc.evaluate(EmitTo::All).unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
