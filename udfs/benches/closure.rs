//! The identity closure on string identifiers: the union-find alone, and `stitch()` end to
//! end through DataFusion (scan, encode, close, name). Edges mimic a lake's: people with a
//! few devices, an email, sometimes a phone and a user id, linked in stars.
//!
//! `cargo bench -p c360-udfs --bench closure` (set `C360_BENCH_EDGES=10000000` for 10M).

use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use c360_udfs::union_find::StringUnionFind;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;

/// `(type_a, value_a, type_b, value_b)` for about `n` edges.
fn edges(n: usize) -> Vec<(&'static str, String, &'static str, String)> {
    let mut out = Vec::with_capacity(n);
    let mut person = 0u64;
    while out.len() < n {
        let p = person.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 16;
        let email = format!("first.last{p}@example.org");
        let user = format!("u{p:012}");
        for d in 0..(1 + person % 3) {
            let device = format!("{:016x}-{d}", p ^ 0x5555_aaaa);
            out.push(("anonymous_id", device.clone(), "user_id", user.clone()));
            out.push(("anonymous_id", device, "email", email.clone()));
        }
        out.push(("user_id", user.clone(), "email", email.clone()));
        if person.is_multiple_of(2) {
            out.push((
                "email",
                email,
                "phone",
                format!("+1415{:07}", p % 10_000_000),
            ));
        }
        person += 1;
    }
    out.truncate(n);
    out
}

fn bench(c: &mut Criterion) {
    let sizes: Vec<usize> = match std::env::var("C360_BENCH_EDGES") {
        Ok(v) => v
            .split(',')
            .map(|s| s.trim().parse().expect("a number of edges"))
            .collect(),
        Err(_) => vec![1_000_000],
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut group = c.benchmark_group("closure");
    group.sample_size(10);
    for n in sizes {
        let data = edges(n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(format!("union_find/{n}"), |b| {
            b.iter(|| {
                let mut uf = StringUnionFind::default();
                let mut key = String::new();
                for (ta, va, tb, vb) in &data {
                    key.clear();
                    key.push_str(ta);
                    key.push('\u{1f}');
                    key.push_str(va);
                    let a = uf.add(&key);
                    key.clear();
                    key.push_str(tb);
                    key.push('\u{1f}');
                    key.push_str(vb);
                    let b = uf.add(&key);
                    uf.union(a, b);
                }
                uf.roots().len()
            })
        });

        let schema = Arc::new(Schema::new(
            ["id_type_a", "id_value_a", "id_type_b", "id_value_b"]
                .map(|name| Field::new(name, DataType::Utf8, true))
                .to_vec(),
        ));
        let batches: Vec<RecordBatch> = data
            .chunks(8192)
            .map(|chunk| {
                let columns: Vec<arrow::array::ArrayRef> = vec![
                    Arc::new(chunk.iter().map(|e| Some(e.0)).collect::<StringArray>()),
                    Arc::new(
                        chunk
                            .iter()
                            .map(|e| Some(e.1.as_str()))
                            .collect::<StringArray>(),
                    ),
                    Arc::new(chunk.iter().map(|e| Some(e.2)).collect::<StringArray>()),
                    Arc::new(
                        chunk
                            .iter()
                            .map(|e| Some(e.3.as_str()))
                            .collect::<StringArray>(),
                    ),
                ];
                RecordBatch::try_new(schema.clone(), columns).expect("batch")
            })
            .collect();
        let ctx = SessionContext::new();
        c360_udfs::register_table_functions(&ctx);
        let table = MemTable::try_new(schema, vec![batches]).expect("table");
        ctx.register_table("edges", Arc::new(table))
            .expect("register");
        group.bench_function(format!("stitch_sql/{n}"), |b| {
            b.iter(|| {
                rt.block_on(async {
                    let df = ctx
                        .sql("SELECT count(DISTINCT canonical_id) FROM stitch('edges')")
                        .await
                        .unwrap();
                    df.collect().await.unwrap()
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
