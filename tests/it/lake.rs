//! Reading the demo lake from the local disk and from memory, as Parquet and as Delta,
//! through project files and through SQL.

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use c360::lake::{self, storage::memory_store, Format, TableSpec, TimeTravel};
use c360::project::Project;
use datafusion::execution::FunctionRegistry;
use datafusion::prelude::SessionContext;
use deltalake::protocol::SaveMode;
use deltalake::DeltaTableBuilder;

use crate::common::{demo, project_toml, scalar, DEMO_TABLES};

async fn session_for(toml: &str, dir: &std::path::Path) -> SessionContext {
    let path = dir.join("c360.toml");
    std::fs::write(&path, toml).unwrap();
    let ctx = c360::session().unwrap();
    Project::load(&path)
        .unwrap()
        .register_inputs(&ctx)
        .await
        .unwrap();
    ctx
}

/// The same tables as Parquet and as Delta hold the same rows.
#[tokio::test]
async fn demo_reads_the_same_as_parquet_and_delta() {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = |format: &'static str| -> Vec<(&str, String, &str)> {
        DEMO_TABLES
            .iter()
            .map(|t| {
                (
                    *t,
                    demo().join(format).join(t).display().to_string(),
                    format,
                )
            })
            .collect()
    };
    let pq = session_for(&project_toml(&inputs("parquet"), ""), tmp.path()).await;
    let delta = session_for(&project_toml(&inputs("delta"), ""), tmp.path()).await;
    for table in DEMO_TABLES {
        let sql = format!("SELECT count(*) FROM {table}");
        let n = scalar(&pq, &sql).await;
        assert!(n > 0, "{table} is empty");
        assert_eq!(n, scalar(&delta, &sql).await, "{table} row counts differ");
        let sql = format!("SELECT count(DISTINCT ts) FROM (SELECT * FROM {table}) t");
        if table != "crm_contacts" {
            assert_eq!(
                scalar(&pq, &sql).await,
                scalar(&delta, &sql).await,
                "{table}"
            );
        }
    }
    // Hive partitions become a column of the Parquet table.
    let months = "SELECT count(DISTINCT event_month) FROM tracks";
    assert_eq!(scalar(&pq, months).await, scalar(&delta, months).await);
}

/// The committed demo project opens as written: Parquet clickstream, Delta business tables.
#[tokio::test]
async fn demo_project_opens() {
    let ctx = c360::session().unwrap();
    let project = Project::load(demo().join("c360.toml")).unwrap();
    assert_eq!(project.inputs.len(), 5);
    project.register_inputs(&ctx).await.unwrap();
    let people = scalar(
        &ctx,
        "SELECT count(DISTINCT normalize_email(email)) FROM identifies",
    )
    .await;
    assert!(people > 100, "{people}");
}

/// `format = "auto"` finds the Delta log, so Delta-only options work; plain folders are Parquet.
#[tokio::test]
async fn auto_detects_the_format() {
    let delta = lake::detect_format(
        &lake::resolve_location(&demo().join("delta/orders").display().to_string(), None).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    assert_eq!(delta, Format::Delta);
    let pq = lake::detect_format(
        &lake::resolve_location(&demo().join("parquet/orders").display().to_string(), None)
            .unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    assert_eq!(pq, Format::Parquet);
    let ctx = c360::session().unwrap();
    let mut spec = TableSpec::new(demo().join("delta/orders").display().to_string());
    spec.time_travel = TimeTravel::Version(0);
    let v0 = lake::open(&ctx.state(), "o", &spec, None).await.unwrap();
    ctx.register_table("o", v0).unwrap();
    assert_eq!(scalar(&ctx, "SELECT count(*) FROM o").await, 187);
}

/// Time travel by version through the project file.
#[tokio::test]
async fn project_time_travel_to_first_version() {
    let tmp = tempfile::tempdir().unwrap();
    let loc = demo().join("delta/payments").display().to_string();
    let toml = format!("[[inputs]]\nname = \"p0\"\nlocation = \"{loc}\"\nversion = 0\n\n[[inputs]]\nname = \"p\"\nlocation = \"{loc}\"\n");
    let ctx = session_for(&toml, tmp.path()).await;
    let (v0, latest) = (
        scalar(&ctx, "SELECT count(*) FROM p0").await,
        scalar(&ctx, "SELECT count(*) FROM p").await,
    );
    assert_eq!(v0, latest / 2);
}

fn batch(ids: &[&str], n: &[i64]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("n", DataType::Int64, false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(ids.to_vec())),
            Arc::new(Int64Array::from(n.to_vec())),
        ],
    )
    .unwrap()
}

/// Time travel by timestamp picks the version current at that time, and refuses times
/// before the table existed.
#[tokio::test]
async fn time_travel_by_timestamp() {
    let tmp = tempfile::tempdir().unwrap();
    let url = url::Url::from_directory_path(tmp.path()).unwrap();
    let table = deltalake::DeltaTable::try_from_url(url.clone())
        .await
        .unwrap();
    let table = table.write(vec![batch(&["a"], &[1])]).await.unwrap();
    let before = chrono::Utc::now() - chrono::Duration::seconds(30);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let between = chrono::Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    table
        .write(vec![batch(&["b", "c"], &[2, 3])])
        .with_save_mode(SaveMode::Append)
        .await
        .unwrap();

    let ctx = c360::session().unwrap();
    let loc = tmp.path().display();
    let at = between.to_rfc3339();
    ctx.sql(&format!(
        "CREATE EXTERNAL TABLE t0 STORED AS DELTA LOCATION '{loc}' OPTIONS ('timestamp' '{at}')"
    ))
    .await
    .unwrap();
    assert_eq!(scalar(&ctx, "SELECT count(*) FROM t0").await, 1);
    ctx.sql(&format!(
        "CREATE EXTERNAL TABLE t1 STORED AS DELTA LOCATION '{loc}'"
    ))
    .await
    .unwrap();
    assert_eq!(scalar(&ctx, "SELECT count(*) FROM t1").await, 3);
    let err = ctx
        .sql(&format!(
            "CREATE EXTERNAL TABLE tx STORED AS DELTA LOCATION '{loc}' OPTIONS ('timestamp' '{}')",
            before.to_rfc3339()
        ))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("no version at or before"), "{err}");
}

/// `memory://` holds Delta and Parquet tables within the process, for tests and embedding.
#[tokio::test]
async fn memory_tables() {
    let url = url::Url::parse("memory:///it/delta_t/").unwrap();
    let table = DeltaTableBuilder::from_url(url.clone())
        .unwrap()
        .with_storage_backend(memory_store(), url)
        .build()
        .unwrap();
    let table = table
        .write(vec![batch(&["a", "b"], &[1, 2])])
        .await
        .unwrap();
    table
        .write(vec![batch(&["c"], &[3])])
        .with_save_mode(SaveMode::Append)
        .await
        .unwrap();

    let mut buf = Vec::new();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(&mut buf, batch(&["x"], &[9]).schema(), None).unwrap();
    w.write(&batch(&["x", "y"], &[9, 8])).unwrap();
    w.close().unwrap();
    use object_store::ObjectStoreExt;
    memory_store()
        .put(
            &object_store::path::Path::from("it/pq_t/part-0.parquet"),
            buf.into(),
        )
        .await
        .unwrap();

    let ctx = c360::session().unwrap();
    ctx.sql("CREATE EXTERNAL TABLE d STORED AS DELTA LOCATION 'memory:///it/delta_t/'")
        .await
        .unwrap();
    ctx.sql("CREATE EXTERNAL TABLE d0 STORED AS DELTA LOCATION 'memory:///it/delta_t/' OPTIONS ('version' '0')").await.unwrap();
    ctx.sql("CREATE EXTERNAL TABLE p STORED AS PARQUET LOCATION 'memory:///it/pq_t/'")
        .await
        .unwrap();
    assert_eq!(scalar(&ctx, "SELECT sum(n) FROM d").await, 6);
    assert_eq!(scalar(&ctx, "SELECT sum(n) FROM d0").await, 3);
    assert_eq!(scalar(&ctx, "SELECT sum(n) FROM p").await, 17);
}

/// `c360::register` equips any host's context: functions and the Delta factory.
#[tokio::test]
async fn register_on_a_plain_context() {
    let ctx = SessionContext::new();
    c360::register(&ctx).unwrap();
    assert!(ctx.udf("normalize_email").is_ok());
    assert!(ctx.udf("normalize_phone").is_ok());
    let loc = demo().join("delta/orders").display().to_string();
    ctx.sql(&format!(
        "CREATE EXTERNAL TABLE o STORED AS DELTA LOCATION '{loc}'"
    ))
    .await
    .unwrap();
    assert_eq!(scalar(&ctx, "SELECT count(*) FROM o").await, 374);
    // Built-ins remain.
    assert_eq!(scalar(&ctx, "SELECT abs(-2)").await, 2);
}
