//! The demo lake on a real S3-compatible server (moto on loopback, started by
//! `scripts/test`), as Parquet and as Delta, through project files, SQL and the CLI.

use std::sync::OnceLock;

use tokio::sync::OnceCell;

use crate::common::{assert_fails, c360, demo, scalar, text, DEMO_TABLES, S3};

/// The demo lake is uploaded once per test binary.
async fn lake() -> &'static str {
    static PREFIX: OnceCell<String> = OnceCell::const_new();
    PREFIX
        .get_or_init(|| async {
            let s3 = S3::from_env();
            let prefix = s3.prefix("demo");
            s3.upload_dir(&demo(), &prefix).await;
            prefix
        })
        .await
}

fn storage_toml(s3: &S3) -> String {
    let mut s = String::from("[storage]\n");
    for (k, v) in s3.pairs() {
        s += &format!("{k} = \"{v}\"\n");
    }
    s
}

fn local_counts() -> &'static Vec<i64> {
    static COUNTS: OnceLock<Vec<i64>> = OnceLock::new();
    COUNTS.get_or_init(|| {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let ctx = c360::session().unwrap();
            c360::project::Project::load(demo().join("c360.toml"))
                .unwrap()
                .register_inputs(&ctx)
                .await
                .unwrap();
            let mut v = vec![];
            for t in DEMO_TABLES {
                v.push(scalar(&ctx, &format!("SELECT count(*) FROM {t}")).await);
            }
            v
        })
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn project_on_s3_as_parquet_and_delta() {
    let s3 = S3::from_env();
    let prefix = lake().await;
    let expected = tokio::task::spawn_blocking(local_counts)
        .await
        .unwrap()
        .clone();
    for format in ["parquet", "delta"] {
        let mut toml = storage_toml(&s3);
        for t in DEMO_TABLES {
            // `auto` must find Delta logs on S3 too.
            toml +=
                &format!("\n[[inputs]]\nname = \"{t}\"\nlocation = \"{prefix}/{format}/{t}\"\n");
        }
        let project =
            c360::project::Project::parse(&toml, std::path::Path::new("s3.toml")).unwrap();
        let ctx = c360::session().unwrap();
        project.register_inputs(&ctx).await.unwrap();
        for (t, n) in DEMO_TABLES.iter().zip(&expected) {
            assert_eq!(
                scalar(&ctx, &format!("SELECT count(*) FROM {t}")).await,
                *n,
                "{format} {t}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sql_on_s3_with_options_and_time_travel() {
    let s3 = S3::from_env();
    let prefix = lake().await;
    let options: Vec<String> = s3
        .pairs()
        .iter()
        .map(|(k, v)| format!("'{}' '{v}'", k.replacen("aws_", "aws.", 1)))
        .collect();
    let options = options.join(", ");
    let ctx = c360::session().unwrap();
    for sql in [
        format!("CREATE EXTERNAL TABLE o STORED AS DELTA LOCATION '{prefix}/delta/orders' OPTIONS ({options})"),
        format!("CREATE EXTERNAL TABLE o0 STORED AS DELTA LOCATION '{prefix}/delta/orders' OPTIONS ('version' '0', {options})"),
        format!("CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION '{prefix}/parquet/tracks/' OPTIONS ({options})"),
    ] {
        ctx.sql(&sql).await.unwrap();
    }
    assert_eq!(scalar(&ctx, "SELECT count(*) FROM o").await, 374);
    assert_eq!(scalar(&ctx, "SELECT count(*) FROM o0").await, 187);
    assert_eq!(
        scalar(&ctx, "SELECT count(DISTINCT event_month) FROM t").await,
        18
    );
}

/// Credentials and endpoint from the standard `AWS_*` variables alone.
#[tokio::test(flavor = "multi_thread")]
async fn cli_reads_s3_with_aws_environment() {
    let s3 = S3::from_env();
    let prefix = lake().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c360.toml");
    std::fs::write(
        &path,
        format!("[[inputs]]\nname = \"payments\"\nlocation = \"{prefix}/delta/payments\"\nversion = 0\n\n[[inputs]]\nname = \"identifies\"\nlocation = \"{prefix}/parquet/identifies\"\n"),
    )
    .unwrap();
    let out = c360(dir.path())
        .env("AWS_ENDPOINT_URL", &s3.endpoint)
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", &s3.key_id)
        .env("AWS_SECRET_ACCESS_KEY", &s3.secret)
        .args(["sql", "--format", "csv", "--project"])
        .arg(&path)
        .arg("SELECT (SELECT count(*) FROM payments) AS p, (SELECT count(*) FROM identifies) AS i")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "p,i\n171,731\n");
}

/// Wrong credentials are refused by the server, and the error names the input and location.
#[tokio::test(flavor = "multi_thread")]
async fn wrong_credentials() {
    let s3 = S3::from_env();
    let prefix = lake().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c360.toml");
    let toml = storage_toml(&s3)
        .replace(&s3.secret, "not-the-secret")
        .replace(&s3.key_id, "AKIAWRONGWRONGWRONG0");
    std::fs::write(
        &path,
        format!("{toml}\n[[inputs]]\nname = \"orders\"\nlocation = \"{prefix}/delta/orders\"\n"),
    )
    .unwrap();
    let out = c360(dir.path())
        .args(["sql", "--project"])
        .arg(&path)
        .arg("SELECT 1")
        .output()
        .unwrap();
    assert_fails(
        &out,
        4,
        &[
            "input 'orders'",
            &format!("{prefix}/delta/orders"),
            "InvalidAccessKeyId",
        ],
    );
    assert!(
        !text(&out.stderr).contains("not-the-secret"),
        "secret leaked"
    );
}
