//! The `c360` binary: `sql` output formats and scripts, the REPL, exit codes, and the bad
//! inputs each named in its error.

use std::io::Write;
use std::process::Stdio;

use crate::common::{assert_fails, c360, demo, project_toml, text};

fn demo_project() -> String {
    demo().join("c360.toml").display().to_string()
}

#[test]
fn sql_formats() {
    let home = tempfile::tempdir().unwrap();
    let run = |format: &str, sql: &str| {
        let out = c360(home.path())
            .args(["sql", "--project", &demo_project(), "--format", format, sql])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let q = "SELECT count(*) AS n FROM orders";
    assert_eq!(run("csv", q), "n\n374\n");
    assert_eq!(run("tsv", q), "n\n374\n");
    assert_eq!(run("json", q).trim(), r#"[{"n":374}]"#);
    assert_eq!(run("ndjson", q).trim(), r#"{"n":374}"#);
    let table = run("table", q);
    assert!(
        table.contains("| n   |") && table.contains("| 374 |"),
        "{table}"
    );
    // Several statements, each printed; DDL prints nothing.
    let out = run(
        "csv",
        "CREATE VIEW v AS SELECT 1 AS one; SELECT one FROM v; SELECT 2 AS two",
    );
    assert_eq!(out, "one\n1\ntwo\n2\n");
}

#[test]
fn sql_from_file() {
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("q.sql");
    std::fs::write(&file, "-- count people by email\nSELECT count(DISTINCT normalize_email(email)) > 100 AS many\nFROM identifies;\n").unwrap();
    let out = c360(home.path())
        .args(["sql", "--project", &demo_project(), "--format", "csv", "-f"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "many\ntrue\n");
}

#[test]
fn sql_errors_exit_non_zero() {
    let home = tempfile::tempdir().unwrap();
    let out = c360(home.path()).args(["sql", "SELEC 1"]).output().unwrap();
    assert_fails(&out, 1, &["Error:", "SELEC"]);
    let out = c360(home.path())
        .args(["sql", "SELECT * FROM nowhere"])
        .output()
        .unwrap();
    assert_fails(&out, 1, &["nowhere"]);
    let out = c360(home.path()).args(["sql"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = c360(home.path())
        .args(["sql", "--project", "/no/such/c360.toml", "SELECT 1"])
        .output()
        .unwrap();
    assert_fails(&out, 1, &["/no/such/c360.toml"]);
}

#[test]
fn repl_session() {
    let home = tempfile::tempdir().unwrap();
    let mut child = c360(home.path())
        .args(["repl", "--project", &demo_project()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let script = "\\?\n\\d\n\\d crm_contacts\n\\d nope\nSELECT nonsense FROM orders;\n\\format csv\nSELECT count(*) AS n FROM payments;\n\\format\n\\bogus\n\\df\n\\q\nSELECT 'after quit';\n";
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    // \? help, \d tables, \d NAME columns
    assert!(stdout.contains("\\format FORMAT"), "{stdout}");
    for table in ["tracks", "identifies", "orders", "crm_contacts", "payments"] {
        assert!(stdout.contains(table), "{table} missing from: {stdout}");
    }
    assert!(
        stdout.contains("first_name") && stdout.contains("updated_at"),
        "{stdout}"
    );
    // Errors are printed and the loop goes on.
    assert!(stderr.contains("no table named 'nope'"), "{stderr}");
    assert!(stderr.contains("nonsense"), "{stderr}");
    assert!(stderr.contains("unknown command '\\bogus'"), "{stderr}");
    // \format switches the printer.
    assert!(stdout.contains("n\n342\n"), "{stdout}");
    assert!(stdout.contains("output format is Csv"), "{stdout}");
    // \df lists c360's functions.
    assert!(stdout.contains("normalize_phone"), "{stdout}");
    // \q stops reading.
    assert!(!stdout.contains("after quit"), "{stdout}");
    assert!(home.path().join(".c360_history").exists());
}

fn run_project(toml: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c360.toml");
    std::fs::write(&path, toml).unwrap();
    c360(dir.path())
        .args(["sql", "--project"])
        .arg(&path)
        .arg("SELECT 1")
        .output()
        .unwrap()
}

#[test]
fn bad_project_files() {
    let orders = demo().join("delta/orders").display().to_string();
    let good = project_toml(&[("orders", orders.clone(), "delta")], "");
    // A typo'd key: named, with its line.
    let out = run_project(&good.replace("format =", "fromat ="));
    assert_fails(&out, 3, &["c360.toml", "line 8", "unknown field `fromat`"]);
    // A wrong type.
    let out = run_project(&good.replace("format = \"delta\"", "format = 3"));
    assert_fails(&out, 3, &["line 8", "format"]);
    // An unknown format.
    let out = run_project(&good.replace("format = \"delta\"", "format = \"csv\""));
    assert_fails(&out, 3, &["line 8", "csv", "auto", "parquet", "delta"]);
    // A declared id column the table does not have.
    let out = run_project(&format!("{good}ids = {{ mail = \"email\" }}\n"));
    assert_fails(
        &out,
        3,
        &["line 5", "input 'orders' has no column 'mail'", "order_id"],
    );
    let out = run_project(&format!("{good}event_time = \"when\"\n"));
    assert_fails(&out, 3, &["no column 'when'"]);
    // Identity rules: an id type no input declares, an invalid regular expression.
    let with_ids = format!("{good}ids = {{ email = \"email\" }}\n\n");
    let out = run_project(&format!("{with_ids}[identity.limits]\nfax = 1\n"));
    assert_fails(
        &out,
        3,
        &[
            "line 12",
            "identity.limits.fax",
            "unknown id type 'fax'",
            "declared types are email",
        ],
    );
    let out = run_project(&format!(
        "{with_ids}[identity.blocklist]\nemail = [\"/(oops/\"]\n"
    ));
    assert_fails(
        &out,
        3,
        &[
            "line 12",
            "identity.blocklist.email",
            "invalid regular expression /(oops/",
        ],
    );
    let out = run_project(&format!("{with_ids}[identity]\npriorty = []\n"));
    assert_fails(&out, 3, &["line 12", "unknown field `priorty`"]);
}

#[test]
fn bad_inputs_name_input_location_and_cause() {
    let pq_orders = demo().join("parquet/orders").display().to_string();
    // Missing location.
    let out = run_project(&project_toml(
        &[("ghost", "/no/such/lake/table".into(), "auto")],
        "",
    ));
    assert_fails(
        &out,
        4,
        &[
            "input 'ghost'",
            "/no/such/lake/table",
            "nothing is stored there",
        ],
    );
    // A Delta path without a log.
    let out = run_project(&project_toml(&[("orders", pq_orders.clone(), "delta")], ""));
    assert_fails(
        &out,
        4,
        &["input 'orders'", &pq_orders, "not a Delta table"],
    );
    // Time travel on Parquet.
    let out = run_project(&format!(
        "{}version = 1\n",
        project_toml(&[("orders", pq_orders, "auto")], "")
    ));
    assert_fails(&out, 4, &["input 'orders'", "needs a Delta table"]);
}

#[test]
fn corrupt_parquet_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("t");
    std::fs::create_dir(&table).unwrap();
    std::fs::copy(
        demo().join("parquet/orders/part-00000.parquet"),
        table.join("good.parquet"),
    )
    .unwrap();
    std::fs::write(
        table.join("bad.parquet"),
        b"PAR1 this is not really parquet",
    )
    .unwrap();
    let out = run_project(&project_toml(
        &[("orders", table.display().to_string(), "parquet")],
        "",
    ));
    assert_fails(&out, 4, &["input 'orders'", "bad.parquet"]);
}

#[test]
fn unreachable_s3_endpoint() {
    // Port 9 on loopback: nothing listens, connections are refused at once.
    let toml = project_toml(
        &[("events", "s3://c360-nowhere/events".into(), "auto")],
        "\n[storage]\naws_endpoint = \"http://127.0.0.1:9\"\naws_allow_http = \"true\"\naws_access_key_id = \"k\"\naws_secret_access_key = \"s\"\naws_region = \"us-east-1\"\nmax_retries = \"1\"\n",
    );
    let out = run_project(&toml);
    assert_fails(&out, 4, &["input 'events'", "s3://c360-nowhere/events"]);
    let err = text(&out.stderr);
    assert!(!err.contains("\"s\""), "secret leaked: {err}");
}

/// The README's demo command runs and shows the stitched people.
#[test]
fn readme_demo_runs() {
    let home = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = c360(home.path())
        .current_dir(root)
        .args([
            "sql",
            "--project",
            "testdata/demo/c360.toml",
            "--format",
            "ndjson",
            "-f",
            "sql/demo.sql",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(r#"{"identifiers":1440,"people":303}"#),
        "{stdout}"
    );
    assert!(
        stdout.contains(r#""id_value_a":"+12132104729","id_type_b":"crm_id""#),
        "{stdout}"
    );
}

/// The README's main command publishes under ./out/, and its query reads the result.
#[test]
fn readme_run_writes_out() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let project = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/demo/c360.toml");
    let out = c360(home.path())
        .current_dir(work.path())
        .arg("run")
        .arg("--project")
        .arg(&project)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("303 people"),
        "{}",
        text(&out.stdout)
    );
    for file in [
        "customer_360.parquet",
        "identity_graph.parquet",
        "identity_quarantine.parquet",
        "identity_edges.parquet",
        "identity_changes.parquet",
        "features.json",
    ] {
        assert!(work.path().join("out").join(file).is_file(), "{file}");
    }
    // Progress goes to stderr as JSON lines when it is not a terminal.
    let phases: Vec<serde_json::Value> = text(&out.stderr)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(phases.last().unwrap()["phase"], "done");
    let query = c360(home.path())
        .current_dir(work.path())
        .args([
            "sql",
            "--format",
            "csv",
            "SELECT count(*) AS people, count(first_name) AS named FROM 'out/customer_360.parquet'",
        ])
        .output()
        .unwrap();
    assert!(query.status.success(), "{}", text(&query.stderr));
    assert!(
        text(&query.stdout).starts_with("people,named\n303,"),
        "{}",
        text(&query.stdout)
    );
}
