//! Shared helpers: the demo lake, the `c360` binary, and the loopback S3 server that
//! `scripts/test` starts.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use c360::lake::storage::object_store_for;
use c360::lake::StorageOptions;
use datafusion::prelude::SessionContext;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload};

pub const DEMO_TABLES: [&str; 5] = ["tracks", "identifies", "orders", "crm_contacts", "payments"];

/// Every table a run publishes.
pub const TABLES: [&str; 5] = [
    "customer_360",
    "identity_graph",
    "identity_quarantine",
    "identity_edges",
    "identity_changes",
];

pub fn demo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/demo")
}

/// `SELECT <expr> FROM <table>` as one i64.
pub async fn scalar(ctx: &SessionContext, sql: &str) -> i64 {
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    let col = batches[0].column(0);
    let col = arrow::compute::cast(col, &arrow::datatypes::DataType::Int64).unwrap();
    col.as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .unwrap()
        .value(0)
}

/// The `c360` binary with a clean environment for AWS settings and history.
pub fn c360(home: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_c360"));
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("HOME", home);
    cmd
}

/// The interpreter `scripts/test` prepared with DuckDB, pyspark, pyarrow and deltalake.
pub fn python() -> String {
    std::env::var("C360_PYTHON").unwrap_or_else(|_| {
        panic!("C360_PYTHON is not set: run the tests with scripts/test, which installs DuckDB, Spark and deltalake")
    })
}

pub fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// Asserts a failed run with `code` whose stderr contains every fragment.
pub fn assert_fails(out: &Output, code: i32, fragments: &[&str]) {
    let err = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(code),
        "stderr: {err}\nstdout: {}",
        text(&out.stdout)
    );
    for f in fragments {
        assert!(err.contains(f), "expected {f:?} in stderr: {err}");
    }
}

/// A project file for `inputs` (name, location, format) with optional extra TOML.
pub fn project_toml(inputs: &[(&str, String, &str)], extra: &str) -> String {
    let mut s = format!("[project]\nname = \"test\"\n{extra}\n");
    for (name, location, format) in inputs {
        s += &format!(
            "\n[[inputs]]\nname = \"{name}\"\nlocation = \"{location}\"\nformat = \"{format}\"\n"
        );
    }
    s
}

/// The loopback S3 server started by `scripts/test`.
pub struct S3 {
    pub endpoint: String,
    pub bucket: String,
    pub key_id: String,
    pub secret: String,
}

impl S3 {
    /// The server's settings; tests that need it fail (never skip) without it.
    pub fn from_env() -> Self {
        let var = |k: &str| {
            std::env::var(k).unwrap_or_else(|_| {
                panic!("{k} is not set: run the tests with scripts/test, which starts a loopback S3 server")
            })
        };
        Self {
            endpoint: var("C360_TEST_S3_ENDPOINT"),
            bucket: var("C360_TEST_S3_BUCKET"),
            key_id: var("C360_TEST_S3_KEY_ID"),
            secret: var("C360_TEST_S3_SECRET"),
        }
    }

    /// The `c360` binary with this server's settings in its environment.
    pub fn c360(&self, home: &Path) -> Command {
        let mut cmd = c360(home);
        cmd.env("AWS_ENDPOINT", &self.endpoint)
            .env("AWS_ACCESS_KEY_ID", &self.key_id)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ALLOW_HTTP", "true");
        cmd
    }

    /// Storage options for this server, as a project file or SQL would give them.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        vec![
            ("aws_endpoint", self.endpoint.clone()),
            ("aws_access_key_id", self.key_id.clone()),
            ("aws_secret_access_key", self.secret.clone()),
            ("aws_region", "us-east-1".into()),
            ("aws_allow_http", "true".into()),
        ]
    }

    pub fn options(&self) -> StorageOptions {
        let pairs = self.pairs();
        StorageOptions::parse(pairs.iter().map(|(k, v)| (*k, v.as_str()))).unwrap()
    }

    /// A fresh prefix in the bucket, so tests do not see each other's files.
    pub fn prefix(&self, name: &str) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        format!("s3://{}/{name}-{nanos}", self.bucket)
    }

    /// Copies every file under `local` to `prefix` (an `s3://` URL).
    pub async fn upload_dir(&self, local: &Path, prefix: &str) {
        self.upload(local, prefix, true).await
    }

    /// Copies the files under `local` not yet under `prefix`, as a lake receives new files.
    pub async fn upload_new(&self, local: &Path, prefix: &str) {
        self.upload(local, prefix, false).await
    }

    async fn upload(&self, local: &Path, prefix: &str, replace: bool) {
        let url = url::Url::parse(prefix).unwrap();
        let store = object_store_for(&url, &self.options()).unwrap();
        let base = ObjectPath::from_url_path(url.path()).unwrap();
        for entry in walk(local) {
            let rel = entry.strip_prefix(local).unwrap();
            let mut path = base.clone();
            for part in rel.components() {
                path = path.join(part.as_os_str().to_str().unwrap());
            }
            if !replace && store.head(&path).await.is_ok() {
                continue;
            }
            let bytes = std::fs::read(&entry).unwrap();
            store.put(&path, PutPayload::from(bytes)).await.unwrap();
        }
    }
}

/// Copies every file under `from` to the same place under `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    for file in walk(from) {
        let target = to.join(file.strip_prefix(from).unwrap());
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(&file, target).unwrap();
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Column `col` of `batches` as optional strings.
pub fn strings(batches: &[arrow::array::RecordBatch], col: usize) -> Vec<Option<String>> {
    use arrow::array::{Array, AsArray};
    let mut out = vec![];
    for b in batches {
        let a = arrow::compute::cast(b.column(col), &arrow::datatypes::DataType::Utf8).unwrap();
        let a = a.as_string::<i32>();
        out.extend((0..a.len()).map(|i| a.is_valid(i).then(|| a.value(i).to_string())));
    }
    out
}

/// Every row of the table stored at `location` (`stored`: PARQUET or DELTA, `options`: an
/// OPTIONS clause or nothing), sorted on every column, as text.
pub async fn sorted_rows(location: &str, stored: &str, options: &str) -> String {
    let ctx = c360::session().unwrap();
    ctx.sql(&format!(
        "CREATE EXTERNAL TABLE t STORED AS {stored} LOCATION '{location}' {options}"
    ))
    .await
    .unwrap();
    let columns = ctx.table("t").await.unwrap().schema().fields().len();
    let order: Vec<String> = (1..=columns).map(|c| c.to_string()).collect();
    let sql = format!("SELECT * FROM t ORDER BY {}", order.join(", "));
    let batches = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
    arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string()
}
