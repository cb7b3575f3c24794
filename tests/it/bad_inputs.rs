//! The bad-input catalogue: each case writes a small lake that is wrong in one way, runs
//! `c360 run` over it into an output that already holds a good run, and asserts either a
//! clear error (exit code, and a message naming the input, file or column) with that output
//! left exactly as it was, or the documented handling, checked in the tables it published.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::util::display::array_value_to_string;

use crate::common::{c360, python, text};

const END: &str = "2026-06-30T00:00:00Z";

/// What a case must produce.
enum Expect {
    /// Exit code and fragments of the message; the previous output untouched.
    Fails(i32, &'static [&'static str]),
    /// Success; the query (over `customers`, `graph` and `quarantine`) gives this row,
    /// its values joined by commas.
    Runs(&'static str, &'static str),
}

struct Case {
    name: &'static str,
    /// SQL run in a c360 session to write the input; `{lake}` is the lake folder.
    sql: &'static [&'static str],
    /// Python (with pyarrow and deltalake) run with the lake folder as `lake`.
    python: &'static str,
    /// Raw files: (path under the lake, bytes).
    files: fn(&Path),
    /// The `[[inputs]]` lines after `name`; `{lake}` is the lake folder.
    input: &'static str,
    expect: Expect,
}

const INPUT: &str = r#"location = "{lake}/events"
format = "parquet"
event_time = "ts"
ids = { user_id = "user_id", email = "email" }"#;

const GOOD: &str = "COPY (SELECT * FROM (VALUES ('u1', 'a@x.com', 10.0, TIMESTAMP '2026-01-01T00:00:00Z'), ('u2', 'b@x.com', 5.0, TIMESTAMP '2026-01-02T00:00:00Z'), ('u1', NULL, 1.0, TIMESTAMP '2026-01-03T00:00:00Z')) AS t(user_id, email, amount, ts)) TO '{lake}/events/a.parquet' STORED AS PARQUET";

fn none(_: &Path) {}

fn case(name: &'static str, sql: &'static [&'static str], expect: Expect) -> Case {
    Case {
        name,
        sql,
        python: "",
        files: none,
        input: INPUT,
        expect,
    }
}

fn project(lake: &Path, input: &str) -> String {
    let input = input.replace("{lake}", &lake.display().to_string());
    format!(
        r#"[project]
name = "catalogue"

[[inputs]]
name = "events"
{input}

[identity]
priority = ["user_id", "email"]

[identity.limits]
user_id = 1

[[features]]
name = "n"
input = "events"
expr = "count(*)"

[[features]]
name = "spend"
input = "events"
expr = "sum(amount)"
"#
    )
}

fn cases() -> Vec<Case> {
    use Expect::*;
    let mut all = vec![
        Case {
            input: r#"location = "{lake}/nowhere"
format = "parquet"
ids = { user_id = "user_id", email = "email" }"#,
            ..case("location that does not exist", &[], Fails(4, &["input 'events'", "nothing is stored there"]))
        },
        Case {
            files: |lake| std::fs::create_dir_all(lake.join("events")).unwrap(),
            ..case("empty folder", &[], Fails(4, &["input 'events'", "nothing is stored there"]))
        },
        Case {
            files: |lake| write(lake, "events/part-0.parquet", b"this is not parquet"),
            ..case("a file that is not Parquet", &[], Fails(4, &["part-0.parquet", "Corrupt footer"]))
        },
        Case {
            files: |lake| {
                let good = std::fs::read(lake.join("events/a.parquet")).unwrap();
                write(lake, "events/a.parquet", &good[..good.len() / 2]);
            },
            ..case("a truncated Parquet file", &[GOOD], Fails(4, &["a.parquet"]))
        },
        Case {
            files: |lake| write(lake, "events/part-0.parquet", b""),
            ..case("a zero-byte file", &[], Fails(4, &["input 'events'", "part-0.parquet", "file length is 0"]))
        },
        Case {
            input: r#"location = "{lake}/events"
event_time = "ts"
ids = { uid = "user_id", email = "email" }"#,
            ..case("an id column that does not exist", &[GOOD], Fails(3, &["no column 'uid'", "user_id, email, amount, ts"]))
        },
        Case {
            input: r#"location = "{lake}/events"
event_time = "when"
ids = { user_id = "user_id", email = "email" }"#,
            ..case("an event-time column that does not exist", &[GOOD], Fails(3, &["inputs.event_time", "no column 'when'"]))
        },
        case(
            "event time as a number",
            &["COPY (SELECT 'u1' AS user_id, 'a@x.com' AS email, 1.0 AS amount, 1767225600 AS ts) TO '{lake}/events/a.parquet' STORED AS PARQUET"],
            Fails(3, &["inputs.event_time", "column 'ts' of input 'events' is Int64", "expected a timestamp"]),
        ),
        case(
            "malformed timestamp text",
            &["COPY (SELECT 'u1' AS user_id, 'a@x.com' AS email, 1.0 AS amount, 'yesterday' AS ts) TO '{lake}/events/a.parquet' STORED AS PARQUET"],
            Fails(4, &["input 'events'", "event time 'ts'", "yesterday"]),
        ),
        case(
            "timestamps as text are parsed",
            &["COPY (SELECT 'u1' AS user_id, 'a@x.com' AS email, 1.0 AS amount, '2026-01-01 10:00:00' AS ts) TO '{lake}/events/a.parquet' STORED AS PARQUET"],
            Runs("SELECT count(*), first_seen = TIMESTAMP '2026-01-01T10:00:00Z' FROM customers GROUP BY first_seen", "1,true"),
        ),
        case(
            "dates as event time",
            &["COPY (SELECT 'u1' AS user_id, 'a@x.com' AS email, 1.0 AS amount, DATE '2026-01-01' AS ts) TO '{lake}/events/a.parquet' STORED AS PARQUET"],
            Runs("SELECT count(*), min(first_seen) = TIMESTAMP '2026-01-01T00:00:00Z' FROM customers", "1,true"),
        ),
        case(
            "timestamps with a zone are read in UTC",
            &["COPY (SELECT 'u1' AS user_id, 'a@x.com' AS email, 1.0 AS amount, arrow_cast(TIMESTAMP '2026-01-01T10:00:00', 'Timestamp(Microsecond, Some(\"+05:00\"))') AS ts) TO '{lake}/events/a.parquet' STORED AS PARQUET"],
            Runs("SELECT first_seen = TIMESTAMP '2026-01-01T05:00:00Z' FROM customers", "true"),
        ),
        case(
            "rows before 1970 count, rows after the as-of time do not",
            &["COPY (SELECT * FROM (VALUES ('u1', 'a@x.com', 1.0, TIMESTAMP '1960-05-01T00:00:00Z'), ('u1', 'a@x.com', 2.0, TIMESTAMP '2200-12-31T00:00:00Z')) AS t(user_id, email, amount, ts)) TO '{lake}/events/a.parquet' STORED AS PARQUET"],
            Runs("SELECT n, spend, first_seen = TIMESTAMP '1960-05-01T00:00:00Z' FROM customers", "1,1.0,true"),
        ),
        case(
            "a row of NULLs beside a good row",
            &["COPY (SELECT * FROM (VALUES ('u1', 'a@x.com', 1.0, TIMESTAMP '2026-01-01T00:00:00Z'), (NULL, NULL, NULL, NULL)) AS t(user_id, email, amount, ts)) TO '{lake}/events/a.parquet' STORED AS PARQUET"],
            Runs("SELECT count(*), sum(n) FROM customers", "1,1"),
        ),
        case(
            "every column NULL",
            &["COPY (SELECT CAST(NULL AS VARCHAR) AS user_id, CAST(NULL AS VARCHAR) AS email, CAST(NULL AS DOUBLE) AS amount, CAST(NULL AS TIMESTAMP) AS ts) TO '{lake}/events/a.parquet' STORED AS PARQUET"],
            Runs("SELECT (SELECT count(*) FROM customers) AS c0, (SELECT count(*) FROM graph) AS c1", "0,0"),
        ),
        case(
            "an empty table",
            &["COPY (SELECT 'u1' AS user_id, 'a@x.com' AS email, 1.0 AS amount, TIMESTAMP '2026-01-01T00:00:00Z' AS ts WHERE false) TO '{lake}/events/a.parquet' STORED AS PARQUET"],
            Runs("SELECT count(*) FROM customers", "0"),
        ),
        case(
            "identifiers of blanks only",
            &["COPY (SELECT '   ' AS user_id, '' AS email, 1.0 AS amount, TIMESTAMP '2026-01-01T00:00:00Z' AS ts) TO '{lake}/events/a.parquet' STORED AS PARQUET"],
            Runs("SELECT (SELECT count(*) FROM customers) AS c0, (SELECT count(*) FROM graph) AS c1", "0,0"),
        ),
        case(
            "junk identifiers are quarantined",
            &["COPY (SELECT 'unknown' AS user_id, 'test@test.com' AS email, 1.0 AS amount, TIMESTAMP '2026-01-01T00:00:00Z' AS ts) TO '{lake}/events/a.parquet' STORED AS PARQUET"],
            Runs("SELECT (SELECT count(*) FROM graph) AS c0, (SELECT count(*) FROM quarantine WHERE rule LIKE 'blocklist%') AS c1", "0,2"),
        ),
        case(
            "emails differing in case and spaces are one",
            &["COPY (SELECT * FROM (VALUES (NULL, ' Ann@X.com', 1.0, TIMESTAMP '2026-01-01T00:00:00Z'), (NULL, 'ann@x.COM  ', 2.0, TIMESTAMP '2026-01-02T00:00:00Z')) AS t(user_id, email, amount, ts)) TO '{lake}/events/a.parquet' STORED AS PARQUET"],
            Runs("SELECT count(*), max(n), max(array_to_string(emails, ';')) FROM customers", "1,2,ann@x.com"),
        ),
        case(
            "unicode identifiers are kept as written",
            &["COPY (SELECT * FROM (VALUES ('ユーザー1', 'jürgen@exämple.de', 1.0, TIMESTAMP '2026-01-01T00:00:00Z'), ('🙂', NULL, 1.0, TIMESTAMP '2026-01-01T00:00:00Z')) AS t(user_id, email, amount, ts)) TO '{lake}/events/a.parquet' STORED AS PARQUET"],
            Runs("SELECT count(*), sum(CASE WHEN id_value IN ('ユーザー1', '🙂') THEN 1 ELSE 0 END) FROM graph", "3,2"),
        ),
        case(
            "a 10 kB identifier",
            &["COPY (SELECT repeat('x', 10000) AS user_id, 'a@x.com' AS email, 1.0 AS amount, TIMESTAMP '2026-01-01T00:00:00Z' AS ts) TO '{lake}/events/a.parquet' STORED AS PARQUET"],
            Runs("SELECT max(length(id_value)), count(DISTINCT canonical_id) FROM graph", "10000,1"),
        ),
        case(
            "integer identifiers become text",
            &["COPY (SELECT 42 AS user_id, 'a@x.com' AS email, 1.0 AS amount, TIMESTAMP '2026-01-01T00:00:00Z' AS ts) TO '{lake}/events/a.parquet' STORED AS PARQUET"],
            Runs("SELECT id_value FROM graph WHERE id_type = 'user_id'", "42"),
        ),
        case(
            "duplicate rows count as rows",
            &["COPY (SELECT * FROM (VALUES ('u1', 'a@x.com', 1.0, TIMESTAMP '2026-01-01T00:00:00Z'), ('u1', 'a@x.com', 1.0, TIMESTAMP '2026-01-01T00:00:00Z'), ('u1', 'a@x.com', 1.0, TIMESTAMP '2026-01-01T00:00:00Z')) AS t(user_id, email, amount, ts)) TO '{lake}/events/a.parquet' STORED AS PARQUET"],
            Runs("SELECT n, spend FROM customers", "3,3.0"),
        ),
        case(
            "negative amounts are summed",
            &["COPY (SELECT * FROM (VALUES ('u1', 'a@x.com', -7.5, TIMESTAMP '2026-01-01T00:00:00Z'), ('u1', 'a@x.com', 2.5, TIMESTAMP '2026-01-02T00:00:00Z')) AS t(user_id, email, amount, ts)) TO '{lake}/events/a.parquet' STORED AS PARQUET"],
            Runs("SELECT spend FROM customers", "-5.0"),
        ),
        case(
            "a column of the wrong type for a feature",
            &["COPY (SELECT 'u1' AS user_id, 'a@x.com' AS email, 'ten' AS amount, TIMESTAMP '2026-01-01T00:00:00Z' AS ts) TO '{lake}/events/a.parquet' STORED AS PARQUET"],
            Fails(3, &["feature spend", "sum"]),
        ),
        case(
            "schema drift: a column changes type between files",
            &[GOOD, "COPY (SELECT 'u3' AS user_id, 'c@x.com' AS email, CAST(7 AS INT) AS amount, TIMESTAMP '2026-01-03T00:00:00Z' AS ts) TO '{lake}/events/b.parquet' STORED AS PARQUET"],
            Fails(4, &["input 'events'", "amount", "Int32", "Float64"]),
        ),
        case(
            "schema drift: a later file lacks a column (NULL there)",
            &[GOOD, "COPY (SELECT 'u3' AS user_id, 3.0 AS amount, TIMESTAMP '2026-01-03T00:00:00Z' AS ts) TO '{lake}/events/b.parquet' STORED AS PARQUET"],
            Runs("SELECT count(*), sum(n) FROM customers", "3,4"),
        ),
        case(
            "schema drift: a later file has an extra column",
            &[GOOD, "COPY (SELECT 'u3' AS user_id, 'c@x.com' AS email, 3.0 AS amount, TIMESTAMP '2026-01-03T00:00:00Z' AS ts, 'SPRING' AS coupon) TO '{lake}/events/b.parquet' STORED AS PARQUET"],
            Runs("SELECT count(*), sum(n) FROM customers", "3,4"),
        ),
        Case {
            files: |lake| write_duplicate_columns(&lake.join("events/a.parquet")),
            ..case("duplicate column names", &[], Fails(4, &["input 'events'", "a.parquet", "more than one column named 'user_id'"]))
        },
        Case {
            files: |lake| {
                write(lake, "events/_SUCCESS", b"");
                write(lake, "events/.a.parquet.crc", b"crc");
            },
            ..case("Spark's marker and checksum files are ignored", &[GOOD], Runs("SELECT count(*) FROM customers", "2"))
        },
        case(
            "an email shared by a million user ids: the limit holds",
            &["COPY (SELECT 'u' || v AS user_id, 'shared@x.com' AS email, 1.0 AS amount, to_timestamp_seconds(1767225600 + v) AS ts FROM generate_series(1, 1000000) AS t(v)) TO '{lake}/events/a.parquet' STORED AS PARQUET"],
            Runs("SELECT (SELECT count(*) FROM customers) AS c0, (SELECT max(cardinality(user_ids)) FROM customers) AS c1, (SELECT count(*) FROM quarantine WHERE rule LIKE 'limit%') AS c2", "1000000,1,999999"),
        ),
        Case {
            python: r#"
import os, datetime, pyarrow as pa, pyarrow.parquet as pq
t = pa.table({'user_id': ['u1'], 'email': ['a@x.com'], 'amount': [1.0],
              'ts': pa.array([datetime.datetime(2026, 1, 1, 12)], pa.timestamp('ns'))})
os.makedirs(lake + '/events', exist_ok=True)
pq.write_table(t, lake + '/events/a.parquet', use_deprecated_int96_timestamps=True)
"#,
            ..case("Spark's INT96 timestamps", &[], Runs("SELECT first_seen = TIMESTAMP '2026-01-01T12:00:00Z' FROM customers", "true"))
        },
        Case {
            input: r#"location = "{lake}/events"
format = "delta"
event_time = "ts"
ids = { user_id = "user_id", email = "email" }"#,
            ..case("a Delta input that is plain Parquet", &[GOOD], Fails(4, &["input 'events'", "Not a Delta table"]))
        },
        Case {
            python: DELTA_THREE_COMMITS_CHECKPOINTED,
            files: |lake| {
                let log = lake.join("events/_delta_log");
                for entry in std::fs::read_dir(&log).unwrap() {
                    let path = entry.unwrap().path();
                    if path.to_string_lossy().ends_with(".checkpoint.parquet") {
                        std::fs::remove_file(path).unwrap();
                    }
                }
            },
            input: DELTA_INPUT,
            ..case("a Delta log whose checkpoint is missing", &[], Fails(4, &["input 'events'"]))
        },
        Case {
            python: DELTA_THREE_COMMITS,
            files: |lake| {
                std::fs::remove_file(lake.join("events/_delta_log/00000000000000000001.json")).unwrap()
            },
            input: DELTA_INPUT,
            ..case("a Delta log with a missing commit", &[], Fails(4, &["input 'events'"]))
        },
        Case {
            input: r#"location = "{lake}/events"
format = "csv"
ids = { user_id = "user_id", email = "email" }"#,
            ..case("an unknown input format", &[GOOD], Fails(3, &["csv"]))
        },
    ];
    all.sort_by_key(|c| c.name);
    all
}

const DELTA_INPUT: &str = r#"location = "{lake}/events"
format = "delta"
event_time = "ts"
ids = { user_id = "user_id", email = "email" }"#;

const DELTA_THREE_COMMITS: &str = r#"
import pyarrow as pa, datetime
from deltalake import write_deltalake
for i in range(3):
    t = pa.table({'user_id': [f'u{i}'], 'email': [f'{i}@x.com'], 'amount': [1.0],
                  'ts': pa.array([datetime.datetime(2026, 1, 1 + i)], pa.timestamp('us', 'UTC'))})
    write_deltalake(lake + '/events', t, mode='append')
"#;

/// Three commits, a checkpoint, and no commit files left: the checkpoint is the log.
const DELTA_THREE_COMMITS_CHECKPOINTED: &str = r#"
import os, pyarrow as pa, datetime
from deltalake import write_deltalake, DeltaTable
for i in range(3):
    t = pa.table({'user_id': [f'u{i}'], 'email': [f'{i}@x.com'], 'amount': [1.0],
                  'ts': pa.array([datetime.datetime(2026, 1, 1 + i)], pa.timestamp('us', 'UTC'))})
    write_deltalake(lake + '/events', t, mode='append')
DeltaTable(lake + '/events').create_checkpoint()
for name in os.listdir(lake + '/events/_delta_log'):
    if name.endswith('.json') and not name.startswith('_'):
        os.remove(lake + '/events/_delta_log/' + name)
"#;

fn write(lake: &Path, name: &str, bytes: &[u8]) {
    let path = lake.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// A Parquet file with two columns named `user_id`.
fn write_duplicate_columns(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let schema = Schema::new(vec![
        Field::new("user_id", DataType::Utf8, true),
        Field::new("user_id", DataType::Utf8, true),
        Field::new("email", DataType::Utf8, true),
        Field::new("amount", DataType::Float64, true),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
    ]);
    let columns: Vec<ArrayRef> = vec![
        std::sync::Arc::new(StringArray::from(vec!["u1"])),
        std::sync::Arc::new(StringArray::from(vec!["u2"])),
        std::sync::Arc::new(StringArray::from(vec!["a@x.com"])),
        std::sync::Arc::new(Float64Array::from(vec![1.0])),
        std::sync::Arc::new(
            TimestampMicrosecondArray::from(vec![1_767_225_600_000_000]).with_timezone("UTC"),
        ),
    ];
    let batch = RecordBatch::try_new(std::sync::Arc::new(schema), columns).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(path).unwrap(),
        batch.schema(),
        None,
    )
    .unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

/// Every file of a run's output and its bytes.
fn published(out: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect()
}

fn run(home: &Path, project: &Path, out: &Path) -> std::process::Output {
    c360(home)
        .args(["run", "--as-of", END, "--project"])
        .arg(project)
        .arg("--output")
        .arg(out)
        .output()
        .unwrap()
}

async fn check(out: &Path, sql: &str) -> String {
    let ctx = c360::session().unwrap();
    for (name, file) in [
        ("customers", "customer_360.parquet"),
        ("graph", "identity_graph.parquet"),
        ("quarantine", "identity_quarantine.parquet"),
    ] {
        ctx.register_parquet(name, out.join(file).to_str().unwrap(), Default::default())
            .await
            .unwrap();
    }
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    let batch = batches.iter().find(|b| b.num_rows() > 0).expect("a row");
    (0..batch.num_columns())
        .map(|c| array_value_to_string(batch.column(c), 0).unwrap())
        .collect::<Vec<_>>()
        .join(",")
}

#[tokio::test(flavor = "multi_thread")]
async fn every_bad_input_gets_a_clear_error_or_a_documented_handling() {
    let cases = cases();
    assert!(
        cases.len() >= 30,
        "the catalogue holds {} cases",
        cases.len()
    );
    let home = tempfile::tempdir().unwrap();

    // A good run, whose output each case starts from.
    let base = tempfile::tempdir().unwrap();
    let good_lake = base.path().join("lake");
    c360::session()
        .unwrap()
        .sql(&GOOD.replace("{lake}", &good_lake.display().to_string()))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let good_project = base.path().join("c360.toml");
    std::fs::write(&good_project, project(&good_lake, INPUT)).unwrap();
    let good_out = base.path().join("out");
    let first = run(home.path(), &good_project, &good_out);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let good = published(&good_out);

    let mut failures = vec![];
    for case in &cases {
        let dir = tempfile::tempdir().unwrap();
        let lake = dir.path().join("lake");
        std::fs::create_dir_all(&lake).unwrap();
        let ctx = c360::session().unwrap();
        for sql in case.sql {
            let sql = sql.replace("{lake}", &lake.display().to_string());
            ctx.sql(&sql).await.unwrap().collect().await.unwrap();
        }
        if !case.python.is_empty() {
            let script = format!("lake = {:?}\n{}", lake.display().to_string(), case.python);
            let done = Command::new(python())
                .arg("-c")
                .arg(&script)
                .output()
                .unwrap();
            assert!(
                done.status.success(),
                "{}: {}",
                case.name,
                text(&done.stderr)
            );
        }
        (case.files)(&lake);
        let project_file = dir.path().join("c360.toml");
        std::fs::write(&project_file, project(&lake, case.input)).unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        for (name, bytes) in &good {
            std::fs::write(out.join(name), bytes).unwrap();
        }

        let done = run(home.path(), &project_file, &out);
        let stderr = text(&done.stderr);
        match &case.expect {
            Expect::Fails(code, fragments) => {
                if done.status.code() != Some(*code) {
                    failures.push(format!(
                        "{}: exit {:?}, expected {code}: {stderr}",
                        case.name,
                        done.status.code()
                    ));
                    continue;
                }
                let error = stderr
                    .lines()
                    .filter(|l| !l.starts_with('{'))
                    .collect::<Vec<_>>()
                    .join("\n");
                for f in *fragments {
                    if !error.contains(f) {
                        failures.push(format!("{}: expected {f:?} in: {error}", case.name));
                    }
                }
                if published(&out) != good {
                    failures.push(format!("{}: the previous output changed", case.name));
                }
            }
            Expect::Runs(sql, expected) => {
                if !done.status.success() {
                    failures.push(format!("{}: failed: {stderr}", case.name));
                    continue;
                }
                let got = check(&out, sql).await;
                if got != *expected {
                    failures.push(format!(
                        "{}: {sql} gave {got}, expected {expected}",
                        case.name
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}
