//! The scheduled job's guarantees: one run publishes at a time, a run killed at any point
//! leaves the previous output whole and the next run recovers without help, secrets stay
//! out of logs and reports, the memory limit holds, progress is JSON on request.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use c360::lake::StorageOptions;
use c360::lease::{Lease, LEASE_FILE};
use c360::output::{Output, TableFormat, COMMIT_FILE, STAGING_DIR};

use crate::common::{assert_fails, c360, demo, python, sorted_rows, text, S3, TABLES};

const END: &str = "2026-06-30T00:00:00Z";

fn run_cmd(home: &Path, out: &Path) -> Command {
    let mut cmd = c360(home);
    cmd.args(["run", "--as-of", END, "--output"])
        .arg(out)
        .arg("--project")
        .arg(demo().join("c360.toml"));
    cmd
}

/// Every published file's bytes (the run's own `_c360*` files left out).
fn published(out: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && !p.file_name().unwrap().to_string_lossy().starts_with('_'))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect()
}

/// The `c360.computed_at` a Parquet file's footer records.
fn computed_at(file: &Path) -> String {
    let reader =
        parquet::file::reader::SerializedFileReader::new(std::fs::File::open(file).unwrap())
            .unwrap();
    use parquet::file::reader::FileReader;
    reader
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .unwrap()
        .iter()
        .find(|kv| kv.key == "c360.computed_at")
        .and_then(|kv| kv.value.clone())
        .unwrap()
}

/// One complete run's output: every table and the catalog from the same run, nothing of
/// the machinery left behind.
fn assert_one_run(out: &Path) {
    let catalog: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("features.json")).unwrap()).unwrap();
    let run = catalog["computed_at"].as_str().unwrap().to_string();
    for table in TABLES {
        assert_eq!(
            computed_at(&out.join(format!("{table}.parquet"))),
            run,
            "{table} is from another run than features.json"
        );
    }
    for leftover in [LEASE_FILE, COMMIT_FILE, STAGING_DIR] {
        assert!(!out.join(leftover).exists(), "{leftover} left behind");
    }
}

/// `c360 run` into `output` with JSON progress; the project file follows.
fn json_run(output: &str) -> [&str; 8] {
    [
        "run",
        "--as-of",
        END,
        "--log-format",
        "json",
        "--output",
        output,
        "--project",
    ]
}

/// Takes `output`'s lease as run `holder`.
async fn hold(output: &Output, holder: &str) -> Lease {
    let (path, url) = output.object(LEASE_FILE).unwrap();
    Lease::acquire(output.store(), path, url, holder, Duration::from_secs(60))
        .await
        .unwrap()
}

fn local_output(out: &Path) -> Output {
    Output::new(
        &out.display().to_string(),
        StorageOptions::default(),
        TableFormat::Parquet,
    )
    .unwrap()
}

#[tokio::test]
async fn a_run_finding_the_output_held_fails_and_changes_nothing() {
    let (home, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let out = dir.path().join("out");
    assert!(run_cmd(home.path(), &out).status().unwrap().success());
    let before = published(&out);

    let lease = hold(&local_output(&out), "nightly-42").await;
    let held = run_cmd(home.path(), &out).output().unwrap();
    assert_fails(&held, 5, &["concurrent run", "nightly-42", "wrote nothing"]);
    assert_eq!(published(&out), before, "the held output changed");
    lease.release().await.unwrap();

    let again = run_cmd(home.path(), &out).output().unwrap();
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert_one_run(&out);
}

#[test]
fn two_runs_at_once_publish_one_complete_output() {
    let (home, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let out = dir.path().join("out");
    for _ in 0..3 {
        let children: Vec<_> = (0..2)
            .map(|_| {
                run_cmd(home.path(), &out)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let codes: Vec<Option<i32>> = children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .map(|o| {
                let code = o.status.code();
                if code != Some(0) {
                    assert!(
                        text(&o.stderr).contains("concurrent run"),
                        "{}",
                        text(&o.stderr)
                    );
                }
                code
            })
            .collect();
        assert!(codes.contains(&Some(0)), "no run published: {codes:?}");
        assert!(
            codes.iter().all(|c| matches!(c, Some(0) | Some(5))),
            "{codes:?}"
        );
        assert_one_run(&out);
    }
}

#[test]
fn a_killed_run_leaves_the_previous_output_and_the_next_run_recovers() {
    let (home, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let out = dir.path().join("out");
    assert!(run_cmd(home.path(), &out).status().unwrap().success());
    let before = published(&out);

    // Killed after some tables were written, before any was published: nothing changes.
    for point in ["written:identity_graph", "written:identity_changes"] {
        let killed = run_cmd(home.path(), &out)
            .env("C360_CRASH_AT", point)
            .output()
            .unwrap();
        assert_eq!(killed.status.code(), None, "{point}: not killed");
        assert_eq!(published(&out), before, "{point}: the output changed");
        assert!(
            out.join(STAGING_DIR).exists(),
            "{point}: nothing was staged"
        );
    }

    // SIGKILL while the tables are being written.
    let mut child = run_cmd(home.path(), &out)
        .arg("--log-format")
        .arg("json")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    for line in stderr.lines() {
        if line.unwrap().contains("\"identity_edges\"") {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(published(&out), before, "SIGKILL: the output changed");

    // Killed after the commit journal: the next run completes that publication first.
    let killed = run_cmd(home.path(), &out)
        .env("C360_CRASH_AT", "journal")
        .args(["--log-format", "json"])
        .output()
        .unwrap();
    assert_eq!(killed.status.code(), None);
    assert!(out.join(COMMIT_FILE).exists());
    // It first cleared what the runs killed before it had staged.
    let cleared: Vec<serde_json::Value> = text(&killed.stderr)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|e: &serde_json::Value| e["phase"] == "recovered")
        .collect();
    assert!(
        cleared[0]["detail"]["removed"].as_u64().unwrap() > 0,
        "{cleared:?}"
    );
    let next = run_cmd(home.path(), &out)
        .args(["--log-format", "json"])
        .output()
        .unwrap();
    assert!(next.status.success(), "{}", text(&next.stderr));
    let recovered: Vec<serde_json::Value> = text(&next.stderr)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|e: &serde_json::Value| e["phase"] == "recovered")
        .collect();
    assert_eq!(recovered.len(), 1, "{}", text(&next.stderr));
    assert!(recovered[0]["detail"]["completed"].is_string());
    assert_one_run(&out);
}

#[tokio::test]
async fn on_s3_a_held_output_fails_and_a_killed_run_is_recovered() {
    let s3 = S3::from_env();
    let home = tempfile::tempdir().unwrap();
    let prefix = s3.prefix("lease");
    let cmd = || {
        let mut cmd = s3.c360(home.path());
        cmd.args(["run", "--as-of", END, "--output", &prefix, "--project"])
            .arg(demo().join("c360.toml"));
        cmd
    };
    let killed = cmd().env("C360_CRASH_AT", "journal").output().unwrap();
    assert_eq!(killed.status.code(), None, "{}", text(&killed.stderr));

    let output = Output::new(&prefix, s3.options(), TableFormat::Parquet).unwrap();
    // The killed run's lease is taken over at once: its process is gone.
    let lease = hold(&output, "nightly-7").await;
    assert_fails(
        &cmd().output().unwrap(),
        5,
        &["concurrent run", "nightly-7"],
    );
    lease.release().await.unwrap();

    let next = cmd().output().unwrap();
    assert!(next.status.success(), "{}", text(&next.stderr));
    let store = output.store();
    for name in [LEASE_FILE, COMMIT_FILE] {
        let (path, _) = output.object(name).unwrap();
        assert!(
            object_store::ObjectStoreExt::head(&*store, &path)
                .await
                .is_err(),
            "{name} left behind"
        );
    }
    let (staging, _) = output.object(STAGING_DIR).unwrap();
    use futures::StreamExt;
    let staged: Vec<_> = store.list(Some(&staging)).collect().await;
    assert!(staged.is_empty(), "staged files left: {staged:?}");
    let (catalog, _) = output.object("features.json").unwrap();
    assert!(object_store::ObjectStoreExt::head(&*store, &catalog)
        .await
        .is_ok());
}

#[test]
fn secrets_never_appear_in_logs_errors_or_reports() {
    let s3 = S3::from_env();
    let home = tempfile::tempdir().unwrap();
    let secret = s3.secret.as_str();
    let run = |output: &str| {
        s3.c360(home.path())
            .args(json_run(output))
            .arg(demo().join("c360.toml"))
            .output()
            .unwrap()
    };
    let prefix = s3.prefix("secret");
    let ok = run(&prefix);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    let missing_bucket = run("s3://no-such-bucket-c360/out");
    assert_ne!(missing_bucket.status.code(), Some(0));
    let with_userinfo = run(&format!("s3://AKIAEXAMPLE:{secret}@{}/x", s3.bucket));
    for out in [&ok, &missing_bucket, &with_userinfo] {
        for stream in [&out.stdout, &out.stderr] {
            assert!(
                !text(stream).contains(secret),
                "secret leaked: {}",
                text(stream)
            );
        }
    }
    let catalog = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let output = Output::new(&prefix, s3.options(), TableFormat::Parquet).unwrap();
        let (path, _) = output.object("features.json").unwrap();
        let got = object_store::ObjectStoreExt::get(&*output.store(), &path)
            .await
            .unwrap();
        text(&got.bytes().await.unwrap())
    });
    assert!(catalog.contains("customer_360"));
    assert!(!catalog.contains(secret));
}

#[test]
fn the_memory_limit_holds_and_failing_it_loses_nothing() {
    let (home, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let out = dir.path().join("out");
    let ok = run_cmd(home.path(), &out)
        .args(["--memory-limit", "1G"])
        .output()
        .unwrap();
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    let before = published(&out);
    let over = run_cmd(home.path(), &out)
        .args(["--memory-limit", "64K"])
        .output()
        .unwrap();
    assert_fails(&over, 7, &["esources exhausted"]);
    assert_eq!(published(&out), before);
    assert!(!out.join(LEASE_FILE).exists());
    let bad = run_cmd(home.path(), &out)
        .args(["--memory-limit", "lots"])
        .output()
        .unwrap();
    assert_fails(&bad, 2, &["expected a size such as 4G"]);
}

#[test]
fn progress_is_text_or_json_as_asked() {
    let (home, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let out: PathBuf = dir.path().join("out");
    let json = run_cmd(home.path(), &out)
        .args(["--log-format", "json"])
        .output()
        .unwrap();
    assert!(json.status.success());
    let events: Vec<serde_json::Value> = text(&json.stderr)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(events.iter().any(|e| e["phase"] == "done"));
    let plain = run_cmd(home.path(), &out)
        .args(["--log-format", "text"])
        .output()
        .unwrap();
    assert!(plain.status.success());
    let lines: Vec<String> = text(&plain.stderr).lines().map(String::from).collect();
    assert!(
        !lines.is_empty() && lines.iter().all(|l| l.starts_with("c360 run [")),
        "{lines:?}"
    );
}

#[tokio::test]
async fn the_run_report_counts_rows_people_and_links() {
    let (home, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let out = dir.path().join("out");
    let done = run_cmd(home.path(), &out).output().unwrap();
    assert!(done.status.success(), "{}", text(&done.stderr));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("run_report.json")).unwrap()).unwrap();

    let ctx = c360::session().unwrap();
    let mut rows = 0;
    for table in crate::common::DEMO_TABLES {
        let path = demo().join("parquet").join(table);
        ctx.register_parquet(table, path.to_str().unwrap(), Default::default())
            .await
            .unwrap();
        let read = report["identity"]["rows_read"][table].as_i64().unwrap();
        let sql = format!("SELECT count(*) FROM {table} WHERE ts <= TIMESTAMP '{END}'");
        let sql = if table == "crm_contacts" {
            sql.replace("ts <=", "updated_at <=")
        } else {
            sql
        };
        assert_eq!(read, crate::common::scalar(&ctx, &sql).await, "{table}");
        rows += read;
    }
    assert_eq!(report["rows_in"].as_i64().unwrap(), rows);
    assert!(text(&done.stdout).contains(&format!("from {rows} rows")));

    let customers = out.join("customer_360.parquet");
    ctx.register_parquet("customers", customers.to_str().unwrap(), Default::default())
        .await
        .unwrap();
    let people = crate::common::scalar(&ctx, "SELECT count(*) FROM customers").await;
    assert_eq!(report["identity"]["people"].as_i64().unwrap(), people);
    assert_eq!(report["tables"][0]["rows"].as_i64().unwrap(), people);
    let edges = out.join("identity_edges.parquet");
    ctx.register_parquet("edges", edges.to_str().unwrap(), Default::default())
        .await
        .unwrap();
    let stitched = crate::common::scalar(&ctx, "SELECT count(*) FROM edges WHERE accepted").await;
    assert_eq!(
        report["identity"]["links_stitched"].as_i64().unwrap(),
        stitched
    );
    assert_eq!(
        report["identity"]["ids"]["appeared"].as_i64().unwrap(),
        people
    );
    assert!(report["run_id"].is_string());
}

/// A loopback S3 server of this test's own, which it can pause.
struct PausableS3 {
    server: std::process::Child,
    endpoint: String,
}

impl PausableS3 {
    fn start(bucket: &str) -> Self {
        let python = python();
        let moto = Path::new(&python).parent().unwrap().join("moto_server");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = Command::new(moto)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let endpoint = format!("http://127.0.0.1:{port}");
        let create = format!(
            "import boto3, time\n\
             for _ in range(100):\n\
             \x20   try:\n\
             \x20       boto3.client('s3', endpoint_url='{endpoint}', aws_access_key_id='k', aws_secret_access_key='s', region_name='us-east-1').create_bucket(Bucket='{bucket}')\n\
             \x20       break\n\
             \x20   except Exception:\n\
             \x20       time.sleep(0.2)\n\
             else:\n\
             \x20   raise SystemExit('moto_server did not start')\n"
        );
        let done = Command::new(&python)
            .arg("-c")
            .arg(create)
            .output()
            .unwrap();
        assert!(done.status.success(), "{}", text(&done.stderr));
        Self { server, endpoint }
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on a child this test started.
        assert_eq!(unsafe { libc::kill(self.server.id() as i32, signal) }, 0);
    }

    fn storage(&self) -> String {
        format!(
            "[storage]\naws_endpoint = \"{}\"\naws_access_key_id = \"k\"\naws_secret_access_key = \"s\"\n\
             aws_region = \"us-east-1\"\naws_allow_http = \"true\"\ntimeout = \"2s\"\nmax_retries = \"1\"\nretry_timeout = \"3s\"\n",
            self.endpoint
        )
    }
}

impl Drop for PausableS3 {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_that_stops_answering_fails_the_run_and_loses_nothing() {
    let s3 = PausableS3::start("paused");
    let (home, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // The demo project with absolute input locations and this server as its storage.
    let demo_dir = demo();
    let toml = std::fs::read_to_string(demo_dir.join("c360.toml"))
        .unwrap()
        .replace(
            "location = \"",
            &format!("location = \"{}/", demo_dir.display()),
        );
    let project_file = dir.path().join("c360.toml");
    std::fs::write(&project_file, format!("{}\n{toml}", s3.storage())).unwrap();
    let out = "s3://paused/out";
    let run = || {
        let mut cmd = c360(home.path());
        cmd.args(json_run(out)).arg(&project_file);
        cmd
    };
    let first = run().output().unwrap();
    assert!(first.status.success(), "{}", text(&first.stderr));

    let options = c360::lake::StorageOptions::parse([
        ("aws_endpoint", s3.endpoint.as_str()),
        ("aws_access_key_id", "k"),
        ("aws_secret_access_key", "s"),
        ("aws_region", "us-east-1"),
        ("aws_allow_http", "true"),
    ])
    .unwrap();
    let output = Output::new(out, options, TableFormat::Parquet).unwrap();
    let read = |name: &'static str| {
        let (output, name) = (&output, name);
        async move {
            let (path, _) = output.object(name).unwrap();
            let got = object_store::ObjectStoreExt::get(&*output.store(), &path).await;
            got.unwrap().bytes().await.unwrap()
        }
    };
    let before = (
        read("features.json").await,
        read("customer_360.parquet").await,
    );

    // The store stops answering once the graph is built, before anything is written.
    let mut child = run()
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while stderr.read_line(&mut line).unwrap() > 0 && !line.contains("identity graph built") {
        line.clear();
    }
    s3.signal(libc::SIGSTOP);
    let status = child.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    s3.signal(libc::SIGCONT);
    assert_eq!(status.code(), Some(6), "{rest}");
    assert!(rest.contains(out), "the location is named: {rest}");

    let after = (
        read("features.json").await,
        read("customer_360.parquet").await,
    );
    assert!(after == before, "the previous output changed");

    // The next run takes the dead run's lease over and publishes.
    let next = run().output().unwrap();
    assert!(next.status.success(), "{}", text(&next.stderr));
    assert_ne!(read("features.json").await, before.0);
}

/// Every row of each Delta table of the output at `out`, sorted.
async fn delta_tables(out: &Path) -> BTreeMap<String, String> {
    let mut tables = BTreeMap::new();
    for table in TABLES {
        let location = out.join(table).display().to_string();
        let text = sorted_rows(&location, "DELTA", "").await;
        tables.insert(table.to_string(), text);
    }
    tables
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delta_output_killed_between_tables_is_rolled_back() {
    let home = tempfile::tempdir().unwrap();
    let out = home.path().join("out");
    let run_at = |as_of: &str| {
        let mut cmd = c360(home.path());
        cmd.args(["run", "--format", "delta", "--as-of", as_of, "--output"])
            .arg(&out)
            .arg("--project")
            .arg(demo().join("c360.toml"));
        cmd
    };
    let first = run_at("2026-03-01").output().unwrap();
    assert!(first.status.success(), "{}", text(&first.stderr));
    let before = delta_tables(&out).await;
    // A later as-of time: every table would change. Killed after two of the five.
    let killed = run_at(END)
        .env("C360_CRASH_AT", "written:identity_quarantine")
        .output()
        .unwrap();
    assert_eq!(killed.status.code(), None, "{}", text(&killed.stderr));
    assert!(out.join(COMMIT_FILE).exists());
    assert_ne!(
        delta_tables(&out).await["identity_graph"],
        before["identity_graph"]
    );

    let output = Output::new(
        out.to_str().unwrap(),
        StorageOptions::default(),
        TableFormat::Delta,
    )
    .unwrap()
    .for_run("next");
    let recovery = output.recover().await.unwrap();
    assert!(recovery.rolled_back.is_some(), "{recovery:?}");
    assert!(!out.join(COMMIT_FILE).exists());
    assert_eq!(delta_tables(&out).await, before);

    // A run killed after publishing its catalog is complete: it is not rolled back.
    let killed = run_at(END)
        .env("C360_CRASH_AT", "catalog")
        .output()
        .unwrap();
    assert_eq!(killed.status.code(), None, "{}", text(&killed.stderr));
    assert!(out.join(COMMIT_FILE).exists());
    let after = delta_tables(&out).await;
    assert_ne!(after, before);
    assert_eq!(output.recover().await.unwrap().rolled_back, None);
    assert!(!out.join(COMMIT_FILE).exists());
    assert_eq!(delta_tables(&out).await, after);
}
