//! Throughput of the identifier normalizers on realistic messy input, called directly
//! (as DataFusion would, one batch at a time).

use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray};
use arrow::datatypes::{DataType, Field};
use c360_udfs::{normalize_email, normalize_id, normalize_phone};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use datafusion::config::ConfigOptions;
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF};

const ROWS: usize = 8192;

fn batch(values: impl Fn(usize) -> Option<String>) -> ArrayRef {
    Arc::new((0..ROWS).map(values).collect::<StringArray>())
}

fn invoke(udf: &ScalarUDF, input: &ArrayRef) -> ColumnarValue {
    let args = ScalarFunctionArgs {
        args: vec![ColumnarValue::Array(input.clone())],
        arg_fields: vec![Arc::new(Field::new("x", DataType::Utf8, true))],
        number_rows: input.len(),
        return_field: Arc::new(Field::new("y", DataType::Utf8, true)),
        config_options: Arc::new(ConfigOptions::default()),
    };
    udf.invoke_with_args(args).expect("invoke")
}

fn bench(c: &mut Criterion) {
    let emails = batch(|i| match i % 10 {
        0 => None,
        1 => Some(format!("  First.Last{i}@GMAIL.com ")),
        2 => Some("unknown".into()),
        _ => Some(format!("first.last{i}@example.com")),
    });
    let phones = batch(|i| match i % 5 {
        0 => None,
        1 => Some(format!("(415) 555-{:04}", i % 10_000)),
        2 => Some(format!("+1 415 555 {:04}", i % 10_000)),
        3 => Some("n/a".into()),
        _ => Some(format!("415.555.{:04} x12", i % 10_000)),
    });
    // Device ids as a clickstream has them: nearly all clean already.
    let ids = batch(|i| match i % 20 {
        0 => None,
        1 => Some(format!("  {i:08x}-0000-4000-8000-{i:012x} ")),
        _ => Some(format!("{i:08x}-0000-4000-8000-{i:012x}")),
    });
    let mut group = c.benchmark_group("normalize");
    group.throughput(Throughput::Elements(ROWS as u64));
    let email = normalize_email::udf();
    group.bench_function("normalize_email", |b| b.iter(|| invoke(&email, &emails)));
    let phone = normalize_phone::udf();
    group.bench_function("normalize_phone", |b| b.iter(|| invoke(&phone, &phones)));
    let id = normalize_id::udf();
    group.bench_function("normalize_id", |b| b.iter(|| invoke(&id, &ids)));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
