//! `c360 run` end to end: the demo's customer_360 against the generator's ground truth,
//! point-in-time runs, Parquet and Delta output, bad definitions, and real readers.

use std::path::Path;

use arrow::util::pretty::pretty_format_batches;
use c360::output::TableFormat;
use c360::run::{run, RunOptions};
use datafusion::prelude::SessionContext;

use crate::common::{assert_fails, c360, demo, project_toml, python, scalar, text, S3};

/// 2026-06-30T00:00:00Z: the generator's last day; the truth's windows end here.
const END: &str = "2026-06-30T00:00:00Z";

async fn run_demo(out: &Path, as_of: Option<&str>, format: TableFormat) -> c360::run::RunReport {
    run(&RunOptions {
        as_of: as_of.map(str::to_string),
        format,
        ..RunOptions::new(demo().join("c360.toml"), out.display().to_string())
    })
    .await
    .unwrap()
}

/// A session with the demo's truth and the run's Parquet output registered.
async fn with_output(out: &Path) -> SessionContext {
    let ctx = c360::session().unwrap();
    let truth = demo().join("truth");
    for (name, path) in [
        ("truth_people", truth.join("people.parquet")),
        ("truth_ids", truth.join("identifiers.parquet")),
        ("customers", out.join("customer_360.parquet")),
        ("graph", out.join("identity_graph.parquet")),
    ] {
        ctx.register_parquet(name, path.to_str().unwrap(), Default::default())
            .await
            .unwrap();
    }
    ctx.sql(
        "CREATE VIEW matched AS
         WITH person AS (
           SELECT DISTINCT t.person_id, g.canonical_id
           FROM truth_ids t JOIN graph g ON g.id_type = t.id_type AND g.id_value = t.id_value
           WHERE t.person_id IS NOT NULL AND NOT t.junk
         )
         SELECT p.*, person.canonical_id
         FROM truth_people p JOIN person USING (person_id)
         WHERE p.person_id NOT IN (SELECT person_id FROM truth_ids WHERE shared AND person_id IS NOT NULL)",
    )
    .await
    .unwrap();
    ctx
}

async fn show(ctx: &SessionContext, sql: &str) -> String {
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    pretty_format_batches(&batches).unwrap().to_string()
}

#[tokio::test]
async fn demo_features_match_the_ground_truth() {
    let dir = tempfile::tempdir().unwrap();
    let report = run_demo(dir.path(), Some(END), TableFormat::Parquet).await;
    let ctx = with_output(dir.path()).await;

    // The Parquet inputs took their rows' persons from the identity read (the Delta ones,
    // a small file group each, look them up): the truth below checks both paths.
    assert_eq!(report.by_position, ["tracks", "identifies"]);
    let people = scalar(&ctx, "SELECT count(*) FROM customers").await;
    assert_eq!(people as u64, report.tables[0].rows);
    assert_eq!(
        scalar(&ctx, "SELECT count(DISTINCT c360_id) FROM customers").await,
        people,
        "one row per canonical id"
    );
    // Everyone outside the documented shared-device cases is compared.
    let compared = scalar(&ctx, "SELECT count(*) FROM matched").await;
    let shared = scalar(
        &ctx,
        "SELECT count(DISTINCT person_id) FROM truth_ids WHERE shared",
    )
    .await;
    let all = scalar(&ctx, "SELECT count(*) FROM truth_people").await;
    assert!(shared > 0, "the demo has shared devices");
    assert_eq!(compared, all - shared);

    // A sum over no rows is NULL; the truth says 0.
    let mismatches = "SELECT m.person_id, c.c360_id,
            m.lifetime_revenue, c.lifetime_revenue AS got_lifetime_revenue,
            m.revenue_30d, c.revenue_30d AS got_revenue_30d,
            m.n_orders, c.n_orders AS got_n_orders,
            m.last_products_viewed, c.last_products_viewed AS got_last_products_viewed,
            m.first_seen, c.first_seen AS got_first_seen,
            m.last_seen, c.last_seen AS got_last_seen,
            m.first_name, c.first_name AS got_first_name,
            m.n_events, c.n_events AS got_n_events, m.last_name, c.last_name AS got_last_name
        FROM matched m JOIN customers c ON c.c360_id = m.canonical_id
        WHERE (m.lifetime_revenue IS DISTINCT FROM c.lifetime_revenue)
           OR (m.revenue_30d IS DISTINCT FROM c.revenue_30d)
           OR (m.n_orders IS DISTINCT FROM c.n_orders)
           OR (m.n_events IS DISTINCT FROM c.n_events)
           OR (m.last_products_viewed IS DISTINCT FROM c.last_products_viewed)
           OR (m.first_seen IS DISTINCT FROM c.first_seen)
           OR (m.last_seen IS DISTINCT FROM c.last_seen)
           OR (m.first_name IS DISTINCT FROM c.first_name)
           OR (m.last_name IS DISTINCT FROM c.last_name)
           OR (m.payment_total IS DISTINCT FROM coalesce(c.payment_total, 0))
           OR (m.order_revenue IS DISTINCT FROM coalesce(c.order_revenue, 0))";
    let joined = scalar(
        &ctx,
        "SELECT count(*) FROM matched m JOIN customers c ON c.c360_id = m.canonical_id",
    )
    .await;
    assert_eq!(joined, compared, "every compared person has a row");
    let wrong = show(&ctx, &format!("{mismatches} LIMIT 5")).await;
    assert_eq!(
        scalar(&ctx, &format!("SELECT count(*) FROM ({mismatches})")).await,
        0,
        "{wrong}"
    );
    // The comparison has teeth: people with recent orders, views and CRM names exist.
    for check in [
        "SELECT count(*) FROM customers WHERE revenue_30d > 0",
        "SELECT count(*) FROM customers WHERE cardinality(last_products_viewed) = 5",
        "SELECT count(*) FROM customers WHERE first_name IS NOT NULL",
        "SELECT count(*) FROM customers WHERE avg_order_value > 0",
    ] {
        assert!(scalar(&ctx, check).await > 0, "{check}");
    }
    // Derived features follow their definitions.
    assert_eq!(
        scalar(
            &ctx,
            "SELECT count(*) FROM customers
             WHERE (avg_order_value IS DISTINCT FROM (order_revenue / nullif(n_orders, 0)))
                OR (lifetime_revenue <> coalesce(track_revenue, 0) + coalesce(order_revenue, 0) + coalesce(payment_total, 0))"
        )
        .await,
        0
    );
}

#[tokio::test]
async fn as_of_reads_the_past_and_repeats_exactly() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let as_of = "2025-10-01T00:00:00Z";
    run_demo(a.path(), Some(as_of), TableFormat::Parquet).await;
    run_demo(b.path(), Some(as_of), TableFormat::Parquet).await;
    let ctx = with_output(a.path()).await;
    ctx.register_parquet(
        "again",
        b.path().join("customer_360.parquet").to_str().unwrap(),
        Default::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        show(&ctx, "SELECT * FROM customers").await,
        show(&ctx, "SELECT * FROM again").await,
        "two runs as of the same time over the same inputs"
    );

    // Orders per person as of then, counted from the lake itself (order ids name the person).
    let orders = demo().join("delta/orders");
    ctx.sql(&format!(
        "CREATE EXTERNAL TABLE orders STORED AS DELTA LOCATION '{}'",
        orders.display()
    ))
    .await
    .unwrap();
    // As of then a person may still be several people (devices not yet signed in): their
    // rows add up.
    let wrong = "SELECT p.person_id, o.n, p.n_orders
        FROM (
          SELECT m.person_id, sum(c.n_orders) AS n_orders
          FROM matched m JOIN customers c ON c.c360_id = m.canonical_id
          GROUP BY m.person_id
        ) p
        LEFT JOIN (
          SELECT 'p' || split_part(order_id, '-', 2) AS person_id, count(*) AS n
          FROM orders WHERE ts <= TIMESTAMP '2025-10-01T00:00:00Z' GROUP BY 1
        ) o ON o.person_id = p.person_id
        WHERE coalesce(o.n, 0) <> p.n_orders";
    let shown = show(&ctx, &format!("{wrong} LIMIT 5")).await;
    assert_eq!(
        scalar(&ctx, &format!("SELECT count(*) FROM ({wrong})")).await,
        0,
        "{shown}"
    );
    assert!(scalar(&ctx, "SELECT count(*) FROM customers WHERE n_orders > 0").await > 0);
    assert_eq!(
        scalar(
            &ctx,
            "SELECT count(*) FROM customers WHERE last_seen > TIMESTAMP '2025-10-01T00:00:00Z'"
        )
        .await,
        0,
        "nothing after the as-of time"
    );
    // Fewer people existed then than at the end.
    let then = scalar(&ctx, "SELECT count(*) FROM customers").await;
    let end = tempfile::tempdir().unwrap();
    let report = run_demo(end.path(), Some(END), TableFormat::Parquet).await;
    assert!((then as u64) < report.tables[0].rows);
}

#[tokio::test]
async fn distinct_valued_columns_are_written_without_a_dictionary() {
    use parquet::file::reader::FileReader;
    let dir = tempfile::tempdir().unwrap();
    run_demo(dir.path(), Some(END), TableFormat::Parquet).await;
    let encodings = |table: &str| {
        let file = std::fs::File::open(dir.path().join(format!("{table}.parquet"))).unwrap();
        let reader = parquet::file::reader::SerializedFileReader::new(file).unwrap();
        reader
            .metadata()
            .row_group(0)
            .columns()
            .iter()
            .map(|c| {
                let dictionary = c.encodings().any(|e| {
                    matches!(
                        e,
                        parquet::basic::Encoding::RLE_DICTIONARY
                            | parquet::basic::Encoding::PLAIN_DICTIONARY
                    )
                });
                (c.column_path().string(), dictionary)
            })
            .collect::<std::collections::HashMap<_, _>>()
    };
    let graph = encodings("identity_graph");
    assert!(
        graph["id_type"],
        "few distinct values keep their dictionary"
    );
    for column in ["id_value", "canonical_id", "first_seen", "last_seen"] {
        assert!(!graph[column], "identity_graph.{column}");
    }
    let edges = encodings("identity_edges");
    assert!(edges["source"] && edges["id_type_a"]);
    assert!(!edges["id_value_a"] && !edges["id_value_b"]);
    let customers = encodings("customer_360");
    assert!(!customers["c360_id"]);
    assert!(
        customers["favourite_product"],
        "a few products, kept as a dictionary"
    );
}

#[tokio::test]
async fn catalog_and_footer_describe_every_column() {
    let dir = tempfile::tempdir().unwrap();
    run_demo(dir.path(), Some(END), TableFormat::Parquet).await;
    let catalog: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("features.json")).unwrap()).unwrap();
    assert_eq!(catalog["as_of"], END);
    let file = std::fs::File::open(dir.path().join("customer_360.parquet")).unwrap();
    let reader = parquet::file::reader::SerializedFileReader::new(file).unwrap();
    use parquet::file::reader::FileReader;
    let meta = reader.metadata().file_metadata();
    let columns: Vec<String> = meta
        .schema_descr()
        .root_schema()
        .get_fields()
        .iter()
        .map(|f| f.name().to_string())
        .collect();
    let described: Vec<String> = catalog["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        columns, described,
        "features.json lists the columns in order"
    );
    let feature = catalog["columns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "revenue_30d")
        .unwrap();
    assert_eq!(feature["owner"], "finance");
    assert_eq!(feature["kind"], "feature");
    assert_eq!(feature["type"], "Decimal128(38, 2)");
    assert_eq!(feature["signature"].as_str().unwrap().len(), 16);
    assert_eq!(catalog["inputs"]["orders"]["format"], "delta");
    assert_eq!(catalog["inputs"]["orders"]["version"], 1);
    // Hive-partitioned by month: a file per month and part.
    assert!(catalog["inputs"]["tracks"]["files"].as_u64().unwrap() > 2);
    assert!(catalog["inputs"]["tracks"]["bytes"].as_u64().unwrap() > 0);
    let kv: std::collections::HashMap<String, String> = meta
        .key_value_metadata()
        .unwrap()
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.clone().unwrap_or_default()))
        .collect();
    assert_eq!(kv["c360.as_of"], END);
    assert_eq!(kv["c360.table"], "customer_360");
    let footer: serde_json::Value = serde_json::from_str(&kv["c360.catalog"]).unwrap();
    assert_eq!(footer["columns"], catalog["columns"]);
    // Every timestamp is INT64 microseconds, UTC-adjusted: what Spark accepts.
    let mut timestamps = 0;
    for col in meta.schema_descr().columns() {
        if let Some(parquet::basic::LogicalType::Timestamp(t)) = col.logical_type_ref() {
            assert!(t.is_adjusted_to_u_t_c, "{}", col.name());
            assert!(
                matches!(t.unit, parquet::basic::TimeUnit::MICROS),
                "{}",
                col.name()
            );
            timestamps += 1;
        }
        assert_ne!(col.physical_type(), parquet::basic::Type::INT96);
    }
    assert_eq!(timestamps, 2, "first_seen and last_seen");
}

#[tokio::test]
async fn delta_output_reads_back_and_ids_stay_stable() {
    let dir = tempfile::tempdir().unwrap();
    let first = run_demo(dir.path(), Some(END), TableFormat::Delta).await;
    let again = run_demo(dir.path(), Some(END), TableFormat::Delta).await;
    assert!(again.identity.contains("0 appeared"), "{}", again.identity);
    assert_eq!(first.tables[0].rows, again.tables[0].rows);
    let ctx = c360::session().unwrap();
    for table in ["customer_360", "identity_graph", "identity_changes"] {
        ctx.sql(&format!(
            "CREATE EXTERNAL TABLE {table} STORED AS DELTA LOCATION '{}'",
            dir.path().join(table).display()
        ))
        .await
        .unwrap();
    }
    assert_eq!(
        scalar(&ctx, "SELECT count(*) FROM customer_360").await as u64,
        first.tables[0].rows
    );
    // Two commits: the second run replaced the first whole.
    let log = std::fs::read_dir(dir.path().join("customer_360/_delta_log"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".json")
        })
        .count();
    assert_eq!(log, 2);
    assert_eq!(
        scalar(
            &ctx,
            "SELECT count(*) FROM customer_360 c JOIN identity_graph g ON g.canonical_id = c.c360_id"
        )
        .await,
        scalar(&ctx, "SELECT count(*) FROM identity_graph").await,
        "every identifier's person has a row"
    );
}

fn bad_project(dir: &Path, features: &str) -> std::path::PathBuf {
    let orders = demo().join("delta/orders").display().to_string();
    let mut toml = project_toml(&[("orders", orders, "delta")], "");
    toml += "event_time = \"ts\"\nids = { user_id = \"user_id\", email = \"email\" }\n";
    toml += features;
    let path = dir.join("c360.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

#[test]
fn bad_definitions_name_the_feature() {
    let home = tempfile::tempdir().unwrap();
    let feature = |name: &str, body: &str| format!("\n[[features]]\nname = \"{name}\"\n{body}\n");
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            feature("spend", "input = \"orders\"\nexpr = \"sum(amount_usd)\""),
            vec!["feature spend", "amount_usd"],
        ),
        (
            feature("spend", "input = \"orders\"\nexpr = \"summ(amount)\""),
            vec!["feature spend", "summ"],
        ),
        (
            feature("spend", "input = \"orders\"\nexpr = \"sum(currency)\""),
            vec!["feature spend", "sum", "Utf8"],
        ),
        (
            feature("spend", "input = \"order\"\nexpr = \"sum(amount)\""),
            vec!["feature 'spend': unknown input 'order'", "orders"],
        ),
        (
            feature("a", "expr = \"b + 1\"")
                + &feature("b", "expr = \"c * 2\"")
                + &feature("c", "expr = \"a - 1\""),
            vec!["cycle", "a -> b -> c -> a"],
        ),
        (feature("a", "expr = \"a + 1\""), vec!["cycle", "a -> a"]),
        (
            feature("spend", "input = \"orders\"\nexpr = \"amount\""),
            vec!["feature spend"],
        ),
        (
            feature("n_orders", "input = \"orders\"\nexpr = \"count(*)\"")
                + &feature("n_orders", "input = \"orders\"\nexpr = \"count(*)\""),
            vec!["'n_orders' is already a column"],
        ),
        (
            feature("emails", "input = \"orders\"\nexpr = \"count(*)\""),
            vec!["'emails' is already a column"],
        ),
        (
            "\n[[traits]]\nname = \"name\"\nfrom = [\"orders.nickname\"]\n".into(),
            vec!["trait name", "nickname"],
        ),
        (
            "\n[[traits]]\nname = \"name\"\nrule = \"newest\"\nfrom = [\"orders.email\"]\n".into(),
            vec!["newest", "priority"],
        ),
    ];
    for (features, fragments) in cases {
        let dir = tempfile::tempdir().unwrap();
        let project = bad_project(dir.path(), &features);
        let out = c360(home.path())
            .args(["run", "--project"])
            .arg(&project)
            .arg("--output")
            .arg(dir.path().join("out"))
            .output()
            .unwrap();
        assert_fails(&out, 3, &fragments);
        let written: Vec<_> = std::fs::read_dir(dir.path().join("out"))
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        assert!(
            written.is_empty(),
            "written for a bad definition {features}: {written:?}"
        );
    }
}

#[test]
fn explain_prints_the_sql_feature_by_feature() {
    let home = tempfile::tempdir().unwrap();
    let out = c360(home.path())
        .args(["explain", "--as-of", END, "--project"])
        .arg(demo().join("c360.toml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let sql = text(&out.stdout);
    for fragment in [
        "CREATE VIEW stitched_orders AS",
        "canonical_id('user_id', normalize_id(CAST(\"user_id\" AS VARCHAR)))",
        "-- feature revenue_30d",
        "sum_in_window(amount, ts, INTERVAL '30 days')",
        "-- trait first_name (priority)",
        "-- feature avg_order_value",
        "-- customer_360",
        "ORDER BY c360_id",
    ] {
        assert!(sql.contains(fragment), "expected {fragment:?} in:\n{sql}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn run_writes_to_s3_as_parquet_and_delta() {
    let s3 = S3::from_env();
    let home = tempfile::tempdir().unwrap();
    let options: Vec<String> = s3
        .pairs()
        .iter()
        .map(|(k, v)| format!("'{}' '{v}'", k.replacen("aws_", "aws.", 1)))
        .collect();
    let local = tempfile::tempdir().unwrap();
    let expected = run_demo(local.path(), Some(END), TableFormat::Parquet).await;
    for (format, table, stored) in [
        ("parquet", "customer_360.parquet", "PARQUET"),
        ("delta", "customer_360", "DELTA"),
    ] {
        let prefix = s3.prefix(&format!("run-{format}"));
        let out = s3
            .c360(home.path())
            .args([
                "run",
                "--as-of",
                END,
                "--format",
                format,
                "--output",
                &prefix,
                "--project",
            ])
            .arg(demo().join("c360.toml"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{format}: {}", text(&out.stderr));
        let ctx = c360::session().unwrap();
        ctx.sql(&format!(
            "CREATE EXTERNAL TABLE c STORED AS {stored} LOCATION '{prefix}/{table}' OPTIONS ({})",
            options.join(", ")
        ))
        .await
        .unwrap();
        assert_eq!(
            scalar(&ctx, "SELECT count(*) FROM c").await as u64,
            expected.tables[0].rows,
            "{format}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn duckdb_spark_and_deltalake_read_the_output() {
    let (parquet, delta) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let report = run_demo(parquet.path(), Some(END), TableFormat::Parquet).await;
    run_demo(delta.path(), Some(END), TableFormat::Delta).await;
    let ctx = with_output(parquet.path()).await;
    // Three people with orders, names and five viewed products, as DataFusion reads them.
    let batches = ctx
        .sql(
            "SELECT c360_id, CAST(lifetime_revenue AS VARCHAR), n_orders, last_products_viewed,
                    first_name, CAST(first_seen AS BIGINT)
             FROM customers
             WHERE n_orders >= 2 AND first_name IS NOT NULL AND cardinality(last_products_viewed) = 5
             ORDER BY c360_id LIMIT 3",
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let mut people = vec![];
    for b in &batches {
        use arrow::array::AsArray;
        let s = |c: usize, r: usize| {
            arrow::compute::cast(b.column(c), &arrow::datatypes::DataType::Utf8)
                .unwrap()
                .as_string::<i32>()
                .value(r)
                .to_string()
        };
        let i = |c: usize, r: usize| {
            b.column(c)
                .as_primitive::<arrow::datatypes::Int64Type>()
                .value(r)
        };
        for r in 0..b.num_rows() {
            let viewed = b.column(3).as_list::<i32>().value(r);
            let viewed: Vec<String> = viewed
                .as_string::<i32>()
                .iter()
                .map(|v| v.unwrap().to_string())
                .collect();
            people.push(serde_json::json!({
                "c360_id": s(0, r),
                "lifetime_revenue": s(1, r),
                "n_orders": i(2, r),
                "last_products_viewed": viewed,
                "first_name": s(4, r),
                "first_seen_us": i(5, r),
            }));
        }
    }
    assert_eq!(people.len(), 3);
    let identifiers = scalar(&ctx, "SELECT count(*) FROM graph").await;
    let expected = serde_json::json!({
        "rows": report.tables[0].rows,
        "as_of": END,
        "identifiers": identifiers,
        "people": people,
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/readers/check_output.py");
    let out = std::process::Command::new(python())
        .arg(script)
        .arg(parquet.path())
        .arg(delta.path())
        .arg(expected.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
}
