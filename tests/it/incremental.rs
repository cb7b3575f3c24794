//! Incremental runs: on lakes that grow by random appends (new Parquet files in
//! hive-partitioned and plain folders, new Delta commits) and as-of times that move, a run
//! continuing the previous one publishes exactly what a full run over the same data does.

use std::path::{Path, PathBuf};

use c360::generate::{generate, GenerateOptions, LakeFormat, PEOPLE_PER_CHUNK};
use c360::incremental::STATE_FILE;
use c360::output::TableFormat;
use c360::project::Project;
use c360::run::{run, RunOptions, RunReport};
use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::prelude::SessionContext;
use deltalake::protocol::SaveMode;
use deltalake::DeltaTable;
use rand::{Rng, SeedableRng};

use crate::common::{c360, sorted_rows, DEMO_TABLES, S3, TABLES};

/// The generated lake's rows of each input, dealt into `parts` parts that are appended to
/// a second lake one at a time.
struct GrowingLake {
    source: SessionContext,
    dir: PathBuf,
    parts: usize,
    /// Per input (in `DEMO_TABLES` order): parts appended so far.
    appended: Vec<usize>,
}

impl GrowingLake {
    async fn new(root: &Path, parts: usize) -> Self {
        let source = root.join("source");
        generate(&GenerateOptions {
            customers: 120,
            out: source.clone(),
            seed: 11,
            format: LakeFormat::Both,
            chunk: PEOPLE_PER_CHUNK,
        })
        .await
        .unwrap();
        let ctx = c360::session().unwrap();
        Project::load(source.join("c360.toml"))
            .unwrap()
            .register_inputs(&ctx)
            .await
            .unwrap();
        let dir = root.join("lake");
        std::fs::create_dir_all(&dir).unwrap();
        // The same project, with the 30-day revenue as a window rather than a function
        // of the reference time, so moving the as-of time recomputes only those it moves.
        let toml = std::fs::read_to_string(source.join("c360.toml"))
            .unwrap()
            .replace(
                "expr = \"sum_in_window(amount, ts, INTERVAL '30 days')\"",
                "expr = \"sum(amount)\"\nwindow = \"30 days\"",
            );
        assert!(toml.contains("window = \"30 days\""));
        std::fs::write(dir.join("c360.toml"), toml).unwrap();
        Self {
            source: ctx,
            dir,
            parts,
            appended: vec![0; DEMO_TABLES.len()],
        }
    }

    /// A lake holding the first part of every input.
    async fn started(root: &Path, parts: usize) -> Self {
        let mut lake = Self::new(root, parts).await;
        for i in 0..DEMO_TABLES.len() {
            lake.append(i).await;
        }
        lake
    }

    fn project(&self) -> PathBuf {
        self.dir.join("c360.toml")
    }

    /// Appends the next part of input `i`, if any is left: a new Parquet file in each
    /// partition folder it has rows for, or a new Delta commit.
    async fn append(&mut self, i: usize) {
        if self.appended[i] == self.parts {
            return;
        }
        let (name, part) = (DEMO_TABLES[i], self.appended[i]);
        self.appended[i] += 1;
        let all = self
            .source
            .table(name)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let all = arrow::compute::concat_batches(&all[0].schema(), &all).unwrap();
        let mine: arrow::array::BooleanArray = (0..all.num_rows())
            .map(|r| Some(r % self.parts == part))
            .collect();
        let mine = arrow::compute::filter_record_batch(&all, &mine).unwrap();
        let rows = self.source.read_batch(mine).unwrap();
        let parquet = self.dir.join("parquet").join(name);
        let delta = self.dir.join("delta").join(name);
        if self.source_has(&format!("parquet/{name}")) {
            std::fs::create_dir_all(&parquet).unwrap();
            let partitions = match name {
                "tracks" => vec!["event_month".to_string()],
                _ => vec![],
            };
            let folder = format!("{}/", parquet.display());
            rows.write_parquet(
                &folder,
                DataFrameWriteOptions::new().with_partition_by(partitions),
                None,
            )
            .await
            .unwrap();
        } else {
            std::fs::create_dir_all(&delta).unwrap();
            let batches = rows.collect().await.unwrap();
            let url = url::Url::from_directory_path(&delta).unwrap();
            DeltaTable::try_from_url(url)
                .await
                .unwrap()
                .write(batches)
                .with_save_mode(SaveMode::Append)
                .await
                .unwrap();
        }
    }

    fn source_has(&self, location: &str) -> bool {
        let toml = std::fs::read_to_string(self.project()).unwrap();
        toml.contains(&format!("location = \"{location}\""))
    }
}

async fn run_into(project: &Path, out: &Path, as_of: &str, full_refresh: bool) -> RunReport {
    run_as(project, out, as_of, full_refresh, TableFormat::Parquet).await
}

async fn run_as(
    project: &Path,
    out: &Path,
    as_of: &str,
    full_refresh: bool,
    format: TableFormat,
) -> RunReport {
    run(&RunOptions {
        as_of: Some(as_of.to_string()),
        format,
        full_refresh,
        ..RunOptions::new(project, out.display().to_string())
    })
    .await
    .unwrap()
}

/// Every row of the published table at `location`, sorted on every column.
async fn dump_at(location: &str, format: TableFormat, options: &str) -> String {
    match format {
        TableFormat::Parquet => {
            sorted_rows(&format!("{location}.parquet"), "PARQUET", options).await
        }
        TableFormat::Delta => sorted_rows(location, "DELTA", options).await,
    }
}

/// Asserts two outputs (folders or prefixes) hold the same rows in every table.
async fn assert_same_tables(a: &str, b: &str, format: TableFormat, options: &str, step: usize) {
    for table in TABLES.iter().rev() {
        let x = dump_at(&format!("{a}/{table}"), format, options).await;
        let y = dump_at(&format!("{b}/{table}"), format, options).await;
        if x != y {
            let only = |a: &str, b: &str| -> String {
                let b: std::collections::HashSet<&str> = b.lines().collect();
                a.lines()
                    .filter(|l| !b.contains(l))
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            panic!(
                "step {step}: {table} differs\nonly continued:\n{}\nonly full:\n{}",
                only(&x, &y),
                only(&y, &x)
            );
        }
    }
}

async fn assert_same_output(a: &Path, b: &Path, step: usize) {
    let (a, b) = (a.display().to_string(), b.display().to_string());
    assert_same_tables(&a, &b, TableFormat::Parquet, "", step).await;
}

#[tokio::test]
async fn random_appends_publish_what_a_full_run_does() {
    let root = tempfile::tempdir().unwrap();
    let mut lake = GrowingLake::new(root.path(), 4).await;
    let (inc, full) = (root.path().join("inc"), root.path().join("full"));
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    // As-of times: some repeat, some move forward past rows already in the lake, and the
    // last ones past the lake's last day, where only windows move.
    const ALL_IN: &str = "2026-06-30T00:00:00Z";
    let as_of = [
        "2026-02-01T00:00:00Z",
        "2026-02-01T00:00:00Z",
        "2026-04-10T00:00:00Z",
        "2026-04-10T00:00:00Z",
        ALL_IN,
        ALL_IN,
        "2026-07-12T00:00:00Z",
        "2026-07-24T00:00:00Z",
    ];
    let (mut partial, mut windows) = (false, false);
    for (step, at) in as_of.iter().enumerate() {
        for i in 0..DEMO_TABLES.len() {
            // Every input exists from the start; later parts land at random, and all by
            // ALL_IN.
            if step == 0 || *at == ALL_IN || rng.random_bool(0.5) {
                lake.append(i).await;
            }
        }
        let continued = run_into(&lake.project(), &inc, at, false).await;
        let whole = run_into(&lake.project(), &full, at, true).await;
        assert_eq!(whole.mode, "full");
        if step > 0 {
            assert_eq!(continued.mode, "incremental", "step {step}");
            assert!(continued.by_position.is_empty(), "step {step}");
            assert!(
                continued.rows_in < whole.rows_in,
                "step {step}: read everything again"
            );
        }
        assert_same_output(&inc, &full, step).await;
        let people = whole.tables[0].rows;
        partial |= step > 0 && continued.recomputed < people;
        windows |= step > 0 && continued.rows_in == 0 && continued.recomputed > 0;
    }
    assert!(partial, "no step recomputed only some people");
    assert!(
        windows,
        "no step recomputed people whose rows only left a window"
    );

    // Nothing new, same time: nothing read, nobody recomputed, the same output.
    let last = as_of[as_of.len() - 1];
    let again = run_into(&lake.project(), &inc, last, false).await;
    run_into(&lake.project(), &full, last, true).await;
    assert_eq!(
        (again.mode.as_str(), again.rows_in, again.recomputed),
        ("incremental", 0, 0)
    );
    assert_same_output(&inc, &full, as_of.len()).await;

    // A new feature definition: everyone's features are computed again, the graph is not.
    let toml = std::fs::read_to_string(lake.project()).unwrap()
        + "\n[[features]]\nname = \"n_payments\"\ninput = \"payments\"\nexpr = \"count(*)\"\n";
    std::fs::write(lake.project(), toml).unwrap();
    let changed = run_into(&lake.project(), &inc, last, false).await;
    let whole = run_into(&lake.project(), &full, last, true).await;
    assert_eq!((changed.mode.as_str(), changed.rows_in), ("incremental", 0));
    assert_eq!(changed.recomputed, whole.tables[0].rows);
    assert_same_output(&inc, &full, as_of.len() + 1).await;
}

/// What the run report says of the last run into `out`.
fn report(out: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(out.join("run_report.json")).unwrap()).unwrap()
}

#[tokio::test]
async fn changes_a_run_cannot_continue_force_a_full_run_and_say_why() {
    let root = tempfile::tempdir().unwrap();
    let mut lake = GrowingLake::started(root.path(), 2).await;
    let out = root.path().join("out");
    let at = "2026-06-30T00:00:00Z";
    let first = run_into(&lake.project(), &out, at, false).await;
    assert_eq!(first.mode, "full");
    assert_eq!(report(&out)["reason"], "no previous run here");

    let forced = run_into(&lake.project(), &out, at, true).await;
    assert_eq!(forced.mode, "full");
    assert_eq!(report(&out)["reason"], "--full-refresh");

    // An earlier as-of time.
    run_into(&lake.project(), &out, "2026-05-01T00:00:00Z", false).await;
    assert_eq!(
        report(&out)["reason"],
        "the as-of time is before the previous run's"
    );
    run_into(&lake.project(), &out, at, false).await;

    // A rewritten Parquet file: its rows may be anything now.
    let identifies = lake.dir.join("parquet/identifies");
    let file = std::fs::read_dir(&identifies)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "parquet"))
        .unwrap();
    let bytes = std::fs::read(&file).unwrap();
    std::fs::remove_file(&file).unwrap();
    let moved = identifies.join("moved.parquet");
    std::fs::write(&moved, &bytes).unwrap();
    let after = run_into(&lake.project(), &out, at, false).await;
    assert_eq!(after.mode, "full");
    let reason = report(&out)["reason"].as_str().unwrap().to_string();
    assert!(
        reason.starts_with("input 'identifies': ") && reason.ends_with("was removed"),
        "{reason}"
    );

    run_into(&lake.project(), &out, at, false).await;

    // Rows deleted from a Delta input: the files holding them were rewritten.
    let orders = url::Url::from_directory_path(lake.dir.join("delta/orders")).unwrap();
    DeltaTable::try_from_url(orders)
        .await
        .unwrap()
        .delete()
        .with_predicate("amount > 100")
        .await
        .unwrap();
    let after = run_into(&lake.project(), &out, at, false).await;
    assert_eq!(after.mode, "full");
    let reason = report(&out)["reason"].as_str().unwrap().to_string();
    assert!(
        reason.starts_with("input 'orders': ") && reason.ends_with("was removed"),
        "{reason}"
    );

    // A changed identity configuration.
    let before = std::fs::read_to_string(lake.project()).unwrap();
    let toml = before.replace(
        "[identity.limits]\nuser_id = 1",
        "[identity.limits]\nuser_id = 2",
    );
    assert_ne!(toml, before);
    std::fs::write(lake.project(), toml).unwrap();
    let after = run_into(&lake.project(), &out, at, false).await;
    assert_eq!(after.mode, "full");
    assert_eq!(
        report(&out)["reason"],
        "the identity configuration or the inputs changed"
    );

    // Continued once more, then the previous graph is damaged: a full run, not a wrong one.
    lake.append(0).await;
    let next = run_into(&lake.project(), &out, at, false).await;
    assert_eq!(next.mode, "incremental");
    std::fs::remove_file(out.join("identity_edges.parquet")).unwrap();
    lake.append(1).await;
    let after = run_into(&lake.project(), &out, at, false).await;
    assert_eq!(after.mode, "full");
    let reason = report(&out)["reason"].as_str().unwrap().to_string();
    assert!(
        reason.contains("previous graph cannot be continued"),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn on_s3_a_continued_run_reads_only_new_files() {
    let s3 = S3::from_env();
    let root = tempfile::tempdir().unwrap();
    let mut lake = GrowingLake::started(root.path(), 2).await;
    let prefix = s3.prefix("growing");
    s3.upload_new(&lake.dir, &prefix).await;
    let mut toml = String::from("[storage]\n");
    for (k, v) in s3.pairs() {
        toml += &format!("{k} = \"{v}\"\n");
    }
    toml += &std::fs::read_to_string(lake.project())
        .unwrap()
        .replace("location = \"", &format!("location = \"{prefix}/"));
    let project = root.path().join("s3.toml");
    std::fs::write(&project, toml).unwrap();
    let (inc, full) = (format!("{prefix}/inc"), format!("{prefix}/full"));
    let at = "2026-06-30T00:00:00Z";
    let run_to = |out: String, full_refresh: bool| {
        let project = project.clone();
        async move {
            run(&RunOptions {
                as_of: Some(at.to_string()),
                full_refresh,
                ..RunOptions::new(project, out)
            })
            .await
            .unwrap()
        }
    };
    assert_eq!(run_to(inc.clone(), false).await.mode, "full");
    run_to(full.clone(), true).await;
    // New files in a partitioned Parquet folder and a new Delta commit.
    lake.append(0).await;
    lake.append(2).await;
    s3.upload_new(&lake.dir, &prefix).await;
    let continued = run_to(inc.clone(), false).await;
    let whole = run_to(full.clone(), true).await;
    assert_eq!(continued.mode, "incremental");
    assert!(0 < continued.rows_in && continued.rows_in < whole.rows_in);
    assert!(continued.recomputed < whole.tables[0].rows);
    let options: Vec<String> = s3
        .pairs()
        .iter()
        .map(|(k, v)| format!("'{k}' '{v}'"))
        .collect();
    let options = format!("OPTIONS ({})", options.join(", "));
    assert_same_tables(&inc, &full, TableFormat::Parquet, &options, 1).await;
}

#[tokio::test]
async fn a_killed_run_leaves_state_and_tables_together() {
    let root = tempfile::tempdir().unwrap();
    let mut lake = GrowingLake::started(root.path(), 2).await;
    let (inc, full) = (root.path().join("inc"), root.path().join("full"));
    let at = "2026-06-30T00:00:00Z";
    run_into(&lake.project(), &inc, at, false).await;
    run_into(&lake.project(), &full, at, true).await;
    lake.append(0).await;
    lake.append(1).await;
    let killed = |point: &str| {
        c360(root.path())
            .args(["run", "--as-of", at, "--output"])
            .arg(&inc)
            .arg("--project")
            .arg(lake.project())
            .env("C360_CRASH_AT", point)
            .output()
            .unwrap()
    };
    // Killed before publishing: the next run still has everything new to read.
    let state = std::fs::read(inc.join(STATE_FILE)).unwrap();
    assert_eq!(killed("written:identity_edges").status.code(), None);
    assert_eq!(std::fs::read(inc.join(STATE_FILE)).unwrap(), state);
    // Killed after the journal: the next run completes the publication, state included,
    // and finds nothing left to read.
    assert_eq!(killed("journal").status.code(), None);
    let next = run_into(&lake.project(), &inc, at, false).await;
    assert_eq!((next.mode.as_str(), next.rows_in), ("incremental", 0));
    // Twice, so both outputs' id changes are against a graph of the same rows.
    run_into(&lake.project(), &full, at, true).await;
    run_into(&lake.project(), &full, at, true).await;
    assert_same_output(&inc, &full, 1).await;
}

#[tokio::test]
async fn delta_outputs_are_continued_too() {
    let root = tempfile::tempdir().unwrap();
    let mut lake = GrowingLake::started(root.path(), 2).await;
    let (inc, full) = (root.path().join("inc"), root.path().join("full"));
    let at = "2026-06-30T00:00:00Z";
    for (out, refresh) in [(&inc, false), (&full, true)] {
        run_as(&lake.project(), out, at, refresh, TableFormat::Delta).await;
    }
    lake.append(1).await;
    lake.append(3).await;
    let continued = run_as(&lake.project(), &inc, at, false, TableFormat::Delta).await;
    let whole = run_as(&lake.project(), &full, at, true, TableFormat::Delta).await;
    assert_eq!(continued.mode, "incremental");
    assert!(0 < continued.rows_in && continued.rows_in < whole.rows_in);
    let (inc, full) = (inc.display().to_string(), full.display().to_string());
    assert_same_tables(&inc, &full, TableFormat::Delta, "", 1).await;
}
