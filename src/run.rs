//! `c360 run`: the job. Reads every input as of one point in time, builds the identity
//! graph, computes traits and features, and publishes `customer_360` beside the graph's
//! tables, then `features.json`, the catalog describing every column and what was read.
//!
//! Point in time: with an as-of time T (default: the run's start) every input is read as
//! it was at T: Delta tables at the version current at T, rows with an event time after T
//! left out, windows ending at T. Two runs with the same T over unchanged inputs write
//! identical tables.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, AsArray, RecordBatch, StringArray, UInt32Array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, UInt32Type};
use datafusion::datasource::MemTable;
use datafusion::logical_expr::{Expr, JoinType};
use datafusion::prelude::{cast as cast_expr, ident, DataFrame, SessionContext};
use indicatif::{HumanBytes, HumanCount, ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::features::{id_list_column, FeaturePlan};
use crate::identity::{self, IdentityGraph};
use crate::incremental::{self, Mode, State, STATE_FILE};
use crate::lake::{self, Snapshot, TableSpec};
use crate::lease::{Lease, LEASE_FILE};
use crate::output::{Output, TableFormat};
use crate::project::Project;
use crate::redact::redact;

/// The catalog file written beside the tables.
pub const CATALOG_FILE: &str = "features.json";
/// What the last run did: rows in, people out, merges, quarantined links, time.
pub const RUN_REPORT_FILE: &str = "run_report.json";

/// What to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub project: std::path::PathBuf,
    /// RFC 3339; `None`: the run's start.
    pub as_of: Option<String>,
    pub output: String,
    pub format: TableFormat,
    /// How long the output's lease lasts without renewal (see [`crate::lease`]).
    pub lease: std::time::Duration,
    /// Memory budget in bytes for the whole run (DataFusion's pool), `None`: unbounded.
    pub memory_limit: Option<usize>,
    /// Progress as JSON lines (`Some(true)`), text (`Some(false)`), or text on a terminal
    /// and JSON otherwise (`None`).
    pub json_log: Option<bool>,
    /// Read every input whole, even where the previous run could be continued.
    pub full_refresh: bool,
}

impl RunOptions {
    /// A run of `project` into `output`: as of now, Parquet, a 60-second lease, no memory
    /// limit, progress as the terminal suggests.
    pub fn new(project: impl Into<std::path::PathBuf>, output: impl Into<String>) -> Self {
        Self {
            project: project.into(),
            as_of: None,
            output: output.into(),
            format: TableFormat::Parquet,
            lease: std::time::Duration::from_secs(60),
            memory_limit: None,
            json_log: None,
            full_refresh: false,
        }
    }
}

/// One published table.
#[derive(Debug, Clone, Serialize)]
pub struct Published {
    pub name: String,
    pub location: String,
    pub rows: u64,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub tables: Vec<Published>,
    pub identity: String,
    pub as_of: String,
    pub seconds: f64,
    /// Input rows read for the identity graph by this run.
    pub rows_in: u64,
    /// `full` or `incremental`.
    pub mode: String,
    /// People whose row was computed by this run (all of them in a full run).
    pub recomputed: u64,
    /// Inputs whose rows took their person from the identity read rather than a second
    /// read and lookup of their identifiers (a full run's, when planned alike).
    pub by_position: Vec<String>,
}

impl std::fmt::Display for RunReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let people = self.tables.first().map_or(0, |t| t.rows);
        write!(
            f,
            "{people} people as of {} from {} rows in {:.1} s ({} run, {} people computed); {}; written to {}",
            self.as_of,
            self.rows_in,
            self.seconds,
            self.mode,
            self.recomputed,
            self.identity,
            self.tables
                .first()
                .map(|t| t.location.as_str())
                .unwrap_or_default()
        )
    }
}

/// Phase messages: text lines or JSON lines (for schedulers' log search), as `--log-format` asks.
struct Progress {
    start: Instant,
    /// Text lines rather than JSON.
    text: bool,
}

impl Progress {
    fn new(json_log: Option<bool>) -> Self {
        Self {
            start: Instant::now(),
            text: json_log.map_or_else(|| std::io::stderr().is_terminal(), |json| !json),
        }
    }

    fn phase(&self, phase: &str, detail: Value) {
        let elapsed = self.start.elapsed().as_secs_f64();
        if self.text {
            let detail = match &detail {
                Value::Object(m) if !m.is_empty() => {
                    let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    format!(" ({})", parts.join(", "))
                }
                _ => String::new(),
            };
            eprintln!(
                "{}",
                redact(&format!("c360 run [{elapsed:>6.1}s] {phase}{detail}"))
            );
        } else {
            let line =
                json!({"event": "phase", "phase": phase, "elapsed_s": elapsed, "detail": detail});
            eprintln!("{}", redact(&line.to_string()));
        }
    }
}

/// A live line on stderr while a long phase runs, on a terminal only: what is being done,
/// rows counted so far and how much input there is. Cleared when dropped.
struct Live {
    bar: ProgressBar,
    ticker: tokio::task::JoinHandle<()>,
}

impl Progress {
    fn live(&self, phase: &str, rows: Option<Arc<AtomicU64>>, bytes: u64) -> Live {
        let bar = match self.text && std::io::stderr().is_terminal() {
            true => ProgressBar::new_spinner(),
            false => ProgressBar::hidden(),
        };
        bar.set_style(ProgressStyle::with_template("{msg} {spinner}").expect("a valid template"));
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        let (phase, shown, start) = (phase.to_string(), bar.clone(), self.start);
        let ticker = tokio::spawn(async move {
            loop {
                let read = rows.as_ref().map_or(String::new(), |r| {
                    format!(": {} rows read", HumanCount(r.load(Ordering::Relaxed)))
                });
                shown.set_message(format!(
                    "c360 run [{:>6.1}s] {phase}{read} ({} of input)",
                    start.elapsed().as_secs_f64(),
                    HumanBytes(bytes)
                ));
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        });
        Live { bar, ticker }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.ticker.abort();
        self.bar.finish_and_clear();
    }
}

fn rfc3339(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// Parses `--as-of`: RFC 3339, or a date (midnight UTC).
pub fn parse_as_of(text: &str) -> Result<i64> {
    let t = text.trim();
    if let Ok(d) = chrono::DateTime::parse_from_rfc3339(t) {
        return Ok(d.timestamp_micros());
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return Ok(d
            .and_time(chrono::NaiveTime::MIN)
            .and_utc()
            .timestamp_micros());
    }
    Err(Error::Usage(format!(
        "--as-of: expected an RFC 3339 time such as 2026-06-30T00:00:00Z or a date such as 2026-06-30, got '{text}'"
    )))
}

/// Runs the job: takes the output's lease, publishes, gives the lease up.
pub async fn run(opts: &RunOptions) -> Result<RunReport> {
    let progress = Progress::new(opts.json_log);
    let computed_at = chrono::Utc::now().timestamp_micros();
    let as_of = match &opts.as_of {
        Some(t) => parse_as_of(t)?,
        None => computed_at,
    };
    let project = Project::load(&opts.project)?;
    let run_id = format!(
        "{}-{:08x}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%.6fZ"),
        std::process::id()
    );
    let output = Output::new(&opts.output, project.storage.clone(), opts.format)?.for_run(&run_id);
    let (path, url) = output.object(LEASE_FILE)?;
    let lease = Lease::acquire(output.store(), path, url, &run_id, opts.lease).await?;
    let ctx = crate::session_with_memory_limit(opts.memory_limit)?;
    let report = leased(
        &ctx,
        &project,
        &output,
        &lease,
        &progress,
        (computed_at, as_of),
        opts.full_refresh,
    )
    .await;
    let released = lease.release().await;
    let report = report?;
    released?;
    Ok(report)
}

/// The run, once it holds the output.
async fn leased(
    ctx: &SessionContext,
    project: &Project,
    output: &Output,
    lease: &Lease,
    progress: &Progress,
    (computed_at, as_of): (i64, i64),
    full_refresh: bool,
) -> Result<RunReport> {
    let recovery = output.recover().await?;
    if recovery.completed.is_some() || recovery.removed > 0 {
        progress.phase("recovered", serde_json::to_value(&recovery)?);
    }
    ctx.sql(&format!("SET c360.reference_time = '{}'", rfc3339(as_of)))
        .await?;
    // Features group rows by person, which PersonAggregateExec does without hashing; an
    // aggregate it cannot take (ordered or DISTINCT) falls to DataFusion's hash
    // aggregation, where so many groups make pre-aggregating a partition rarely pay.
    ctx.sql("SET datafusion.execution.skip_partial_aggregation_probe_ratio_threshold = 0.1")
        .await?;

    progress.phase(
        "reading inputs",
        json!({"inputs": project.inputs.len(), "as_of": rfc3339(as_of)}),
    );
    let opened = project.register_inputs_as_of(ctx, as_of).await?;
    let read: Vec<(String, &Snapshot)> = opened
        .iter()
        .map(|i| (i.name.clone(), &i.snapshot))
        .collect();
    let mut mode = incremental::decide(
        previous_state(output).await?,
        project,
        as_of,
        &read,
        full_refresh,
    );
    let (mut seed, mut previous) = (None, None);
    if let Mode::Incremental { rows, .. } = &mode {
        match read_seed(ctx, output, project, rows).await {
            // The seed knows the previous ids of its identifiers itself.
            Ok(s) => seed = Some(s),
            Err(e) => {
                mode = Mode::Full {
                    reason: format!("the previous graph cannot be continued: {}", e.cause()),
                }
            }
        }
    }
    if seed.is_none() {
        previous = read_previous(ctx, output).await?;
    }
    let seeded: BTreeMap<String, u64> = match &mode {
        Mode::Incremental {
            since,
            inputs,
            rows,
            ..
        } => {
            for input in &opened {
                let unread = &inputs[&input.name];
                input
                    .register_unread(ctx, (&unread.new, &unread.old), *since, as_of)
                    .await?;
            }
            rows.clone()
        }
        Mode::Full { .. } => BTreeMap::new(),
    };
    let mut detail = json!({"mode": mode.name()});
    if let Mode::Full { reason } = &mode {
        detail["reason"] = reason.clone().into();
    }
    progress.phase("building the identity graph", detail);
    let bytes: u64 = opened
        .iter()
        .flat_map(|i| i.snapshot.listing.values().map(|(size, _)| size))
        .sum();
    let counted = Arc::new(AtomicU64::new(0));
    let live = progress.live("reading identifiers", Some(counted.clone()), bytes);
    // A full run's features read every row the graph did, and can find each one's person
    // by its position.
    let keep_rows = seed.is_none();
    let graph =
        identity::build_counting(ctx, project, previous.as_ref(), seed, counted, keep_rows).await;
    drop(live);
    let mut graph = graph?;
    let read_rows = std::mem::take(&mut graph.rows);
    let graph = Arc::new(graph);
    let rows: BTreeMap<String, u64> = graph
        .inputs
        .iter()
        .cloned()
        .zip(graph.rows_read.iter().copied())
        .collect();
    let rows_in: u64 = rows
        .iter()
        .map(|(input, n)| n - seeded.get(input).copied().unwrap_or(0))
        .sum();
    // Features read every row of the people they compute.
    for input in &opened {
        input.register(ctx, None, as_of)?;
    }
    identity::register_tables(ctx, graph.clone())?;
    progress.phase(
        "identity graph built",
        json!({"identifiers": graph.len(), "people": graph.components(), "quarantined": graph.quarantine.len(), "rows_read": rows_in, "closure_s": graph.timings.closure_s, "steps": graph.timings}),
    );

    progress.phase(
        "computing traits and features",
        json!({"traits": project.catalog.traits.len(), "features": project.catalog.features.len()}),
    );
    let (customers, recomputed, by_position) = match &mode {
        Mode::Incremental {
            since,
            features_changed,
            ..
        } => match previous_table(ctx, output, "customer_360").await? {
            Some(before) => continued_customers(
                ctx,
                project,
                &graph,
                before,
                (*since, as_of),
                *features_changed,
            )
            .await
            .map(|(customers, recomputed)| (customers, recomputed, vec![]))?,
            None => all_customers(ctx, project, as_of, &graph, read_rows).await?,
        },
        Mode::Full { .. } => all_customers(ctx, project, as_of, &graph, read_rows).await?,
    };
    let state = incremental::state_after(project, as_of, &read, &rows);

    let mut catalog = catalog(
        project,
        &graph,
        &customers,
        &read,
        computed_at,
        as_of,
        output.format,
    );
    // What recovery checks to tell a finished Delta publication from one cut short.
    catalog["run_id"] = output.run_id().into();
    let footer = |table: &str| {
        vec![
            ("c360.table".to_string(), table.to_string()),
            ("c360.as_of".to_string(), rfc3339(as_of)),
            ("c360.computed_at".to_string(), rfc3339(computed_at)),
            ("c360.catalog".to_string(), redact(&catalog.to_string())),
        ]
    };
    // The graph's tables first, customer_360 next, the catalog last: a reader that finds
    // the catalog finds everything it describes.
    lease.check().await?;
    if output.format == TableFormat::Delta {
        // Delta tables commit one by one: a run stopped between them is rolled back by the
        // next one, which makes a full run as there is no state left to continue.
        let mut tables = identity::OUTPUT_TABLES.to_vec();
        tables.push("customer_360");
        output.begin(&tables).await?;
        output.remove(STATE_FILE).await?;
    }
    // The tables registered with the session: building them again would hold the graph's
    // text twice more. They are encoded while customer_360 is computed, which leaves
    // cores idle as it joins and sorts.
    let graph_tables = async {
        let mut tables = vec![];
        for name in identity::OUTPUT_TABLES {
            let rows = output
                .write_table(
                    name,
                    ctx.table(name).await?,
                    &footer(name),
                    identity::distinct_columns(name),
                )
                .await?;
            progress.phase("written", json!({"table": name, "rows": rows}));
            crate::crash_point(&format!("written:{name}"));
            tables.push(published(output, name, rows)?);
        }
        Ok::<_, Error>(tables)
    };
    // Traits and features are computed as customer_360 is written.
    let live = progress.live("computing and writing customer_360", None, bytes);
    let written = futures::future::try_join(
        graph_tables,
        output.write_table(
            "customer_360",
            customers,
            &footer("customer_360"),
            &["c360_id"],
        ),
    )
    .await;
    drop(live);
    let (mut tables, rows) = written?;
    progress.phase("written", json!({"table": "customer_360", "rows": rows}));
    tables.insert(0, published(output, "customer_360", rows)?);
    catalog["tables"] = serde_json::to_value(&tables)?;
    let text = redact(&serde_json::to_string_pretty(&catalog)?).into_bytes();
    lease.check().await?;
    let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
    let state = serde_json::to_vec_pretty(&state)?;
    output
        .publish(&names, &[(STATE_FILE, state), (CATALOG_FILE, text)])
        .await?;
    let report = RunReport {
        tables,
        identity: graph.summary(),
        as_of: rfc3339(as_of),
        seconds: progress.start.elapsed().as_secs_f64(),
        rows_in,
        mode: mode.name().into(),
        recomputed,
        by_position,
    };
    // Beside the tables, for whoever looks after the schedule; not part of the publication.
    let run_report = json!({
        "run_id": output.run_id(),
        "project": project.name,
        "as_of": report.as_of,
        "computed_at": rfc3339(computed_at),
        "seconds": report.seconds,
        "rows_in": report.rows_in,
        "mode": report.mode,
        "reason": match &mode { Mode::Full { reason } => Some(reason), _ => None },
        "people_computed": recomputed,
        "stitched_by_position": report.by_position,
        "recovered": recovery,
        "identity": graph.stats(),
        "tables": report.tables,
    });
    let text = redact(&serde_json::to_string_pretty(&run_report)?).into_bytes();
    output.put(RUN_REPORT_FILE, text).await?;
    progress.phase(
        "done",
        json!({"people": rows, "rows_in": report.rows_in, "mode": report.mode, "people_computed": recomputed}),
    );
    Ok(report)
}

fn published(output: &Output, name: &str, rows: u64) -> Result<Published> {
    Ok(Published {
        name: name.to_string(),
        location: output.table_url(name)?.to_string(),
        rows,
    })
}

/// A table a previous run published here, if there is one to read.
async fn previous_table(
    ctx: &SessionContext,
    output: &Output,
    table: &str,
) -> Result<Option<DataFrame>> {
    if !output.exists(CATALOG_FILE).await? {
        return Ok(None);
    }
    let spec = TableSpec {
        location: output.table_url(table)?.to_string(),
        format: match output.format {
            TableFormat::Parquet => lake::Format::Parquet,
            TableFormat::Delta => lake::Format::Delta,
        },
        time_travel: lake::TimeTravel::Latest,
        storage: output.storage().clone(),
    };
    match lake::open(&ctx.state(), &format!("previous_{table}"), &spec, None).await {
        Ok(p) => Ok(Some(ctx.read_table(p)?)),
        // Published in the other format, or removed: start afresh.
        Err(Error::Location { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The identity graph a previous run published here, for stable canonical ids.
async fn read_previous(
    ctx: &SessionContext,
    output: &Output,
) -> Result<Option<identity::Previous>> {
    match previous_table(ctx, output, "identity_graph").await? {
        Some(df) => Ok(Some(identity::previous_from(df).await?)),
        None => Ok(None),
    }
}

/// What the previous run here left to continue, or why there is nothing.
async fn previous_state(output: &Output) -> Result<std::result::Result<State, String>> {
    if !output.exists(CATALOG_FILE).await? {
        return Ok(Err("no previous run here".into()));
    }
    Ok(match output.get(STATE_FILE).await? {
        None => Err(format!("the previous run left no {STATE_FILE}")),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| format!("the previous run's {STATE_FILE} cannot be read: {e}")),
    })
}

/// The previous graph's evidence, to add this run's rows to.
async fn read_seed(
    ctx: &SessionContext,
    output: &Output,
    project: &Project,
    rows: &BTreeMap<String, u64>,
) -> Result<identity::Seed> {
    let mut tables = vec![];
    for name in ["identity_graph", "identity_edges", "identity_quarantine"] {
        match previous_table(ctx, output, name).await? {
            Some(df) => tables.push(df),
            None => {
                return Err(Error::Output {
                    location: name.into(),
                    message: "missing".into(),
                })
            }
        }
    }
    let [graph, edges, quarantine] = <[DataFrame; 3]>::try_from(tables).expect("three tables");
    identity::Seed::from_tables(project, graph, edges, quarantine, rows).await
}

/// Everyone's row, computed, and the inputs whose stitched views take each row's person
/// from the identity read (those of `rows`).
async fn all_customers(
    ctx: &SessionContext,
    project: &Project,
    as_of: i64,
    graph: &Arc<IdentityGraph>,
    rows: Vec<identity::InputRows>,
) -> Result<(DataFrame, u64, Vec<String>)> {
    let plan = FeaturePlan::for_session(project, as_of, ctx, None);
    plan.create_views(ctx).await?;
    let by_position = identity::stitch_by_position(ctx, graph, rows).await?;
    let customers = plan.dataframe(ctx, project, &project.catalog).await?;
    Ok((
        crate::output::reader_safe_frame(customers)?,
        graph.components() as u64,
        by_position,
    ))
}

/// The rows of a run continuing one as of `since`: computed for the people whose row may
/// differ (new rows, changed identifiers, rows that left a window, or every one when the
/// definitions changed or read the clock and time moved), the previous rows for the rest.
async fn continued_customers(
    ctx: &SessionContext,
    project: &Project,
    graph: &Arc<IdentityGraph>,
    before: DataFrame,
    (since, as_of): (i64, i64),
    features_changed: bool,
) -> Result<(DataFrame, u64)> {
    let people = graph.components();
    let plan = FeaturePlan::for_session(project, as_of, ctx, Some(RECOMPUTE_TABLE));
    let everyone =
        features_changed || (as_of != since && !project.catalog.clock_dependent().is_empty());
    let mut recompute: Vec<bool> = match everyone {
        true => vec![true; people],
        false => graph.unchanged.iter().map(|u| !u).collect(),
    };
    if !everyone && as_of != since {
        for sql in plan.window_leavers(project, since, as_of) {
            for batch in ctx.sql(&sql).await?.collect().await? {
                let keys = cast(batch.column(0), &DataType::UInt32)?;
                for key in keys.as_primitive::<UInt32Type>().iter().flatten() {
                    recompute[key as usize] = true;
                }
            }
        }
    }
    if recompute.iter().all(|&r| r) {
        let (everyone, people, _) = all_customers(ctx, project, as_of, graph, vec![]).await?;
        return Ok((everyone, people));
    }
    if !recompute.contains(&true) {
        // The same people with the same rows: the previous table, already in id order.
        return Ok((before, 0));
    }
    let keys: UInt32Array = (0..people as u32)
        .filter(|&p| recompute[p as usize])
        .collect();
    let recomputed = keys.len() as u64;
    let kept: StringArray = (0..people as u32)
        .filter(|&p| !recompute[p as usize])
        .map(|p| Some(graph.canonical_of(p)))
        .collect();
    register_column(ctx, RECOMPUTE_TABLE, "person", Arc::new(keys))?;
    register_column(ctx, KEPT_TABLE, "c360_id", Arc::new(kept))?;
    plan.create_views(ctx).await?;
    let computed = plan.dataframe(ctx, project, &project.catalog).await?;
    let computed = crate::output::reader_safe_frame(computed)?;
    // The previous rows in this run's types, column by column.
    let columns: Vec<Expr> = computed
        .schema()
        .fields()
        .iter()
        .map(|f| cast_expr(ident(f.name()), f.data_type().clone()).alias(f.name()))
        .collect();
    let kept = ctx.table(KEPT_TABLE).await?;
    let before = before
        .join(kept, JoinType::LeftSemi, &["c360_id"], &["c360_id"], None)?
        .select(columns)?;
    let customers = computed
        .union(before)?
        .sort(vec![ident("c360_id").sort(true, false)])?;
    Ok((customers, recomputed))
}

/// Registers a one-column table.
fn register_column(
    ctx: &SessionContext,
    table: &str,
    column: &str,
    values: ArrayRef,
) -> Result<()> {
    let batch = RecordBatch::try_from_iter([(column, values)])?;
    let mem = MemTable::try_new(batch.schema(), vec![vec![batch]])?;
    ctx.register_table(table, Arc::new(mem))?;
    Ok(())
}

/// The people an incremental run computes, by `c360_person` in its column `person`.
const RECOMPUTE_TABLE: &str = "c360_recompute";
/// The people whose previous rows it keeps, by `c360_id`.
const KEPT_TABLE: &str = "c360_kept";

/// `features.json`: every column of customer_360 with its description, type, owner and
/// definition signature, and what the run read.
fn catalog(
    project: &Project,
    graph: &IdentityGraph,
    customers: &datafusion::prelude::DataFrame,
    read: &[(String, &Snapshot)],
    computed_at: i64,
    as_of: i64,
    format: TableFormat,
) -> Value {
    let types: std::collections::HashMap<&str, String> = customers
        .schema()
        .fields()
        .iter()
        .map(|f| (f.name().as_str(), f.data_type().to_string()))
        .collect();
    let column = |name: &str,
                  kind: &str,
                  description: String,
                  owner: Option<&String>,
                  signature: Option<String>,
                  definition: Value| {
        json!({
            "name": name,
            "kind": kind,
            "type": types.get(name).cloned().unwrap_or_default(),
            "description": description,
            "owner": owner,
            "signature": signature,
            "definition": definition,
            "computed_at": rfc3339(computed_at),
            "as_of": rfc3339(as_of),
        })
    };
    let mut columns = vec![column(
        "c360_id",
        "id",
        "Canonical person id, stable from run to run".into(),
        None,
        None,
        Value::Null,
    )];
    for t in &project.identity.priority {
        columns.push(column(
            &id_list_column(t),
            "identifiers",
            format!("Every {t} of the person, normalized and sorted"),
            None,
            None,
            Value::Null,
        ));
    }
    for (name, what) in [("first_seen", "earliest"), ("last_seen", "latest")] {
        columns.push(column(
            name,
            "identity",
            format!("The {what} event time of any row carrying one of the person's identifiers"),
            None,
            None,
            Value::Null,
        ));
    }
    for t in &project.catalog.traits {
        let from: Vec<String> = t.from.iter().map(|(i, c)| format!("{i}.{c}")).collect();
        columns.push(column(
            &t.name,
            "trait",
            t.description.clone(),
            t.owner.as_ref(),
            Some(t.signature()),
            json!({"rule": t.rule_name(), "from": from}),
        ));
    }
    for f in &project.catalog.features {
        columns.push(column(
            &f.name,
            "feature",
            f.description.clone(),
            f.owner.as_ref(),
            Some(f.signature()),
            json!({"input": f.input, "expr": f.expr, "filter": f.filter, "window": f.window}),
        ));
    }
    let inputs: serde_json::Map<String, Value> = read
        .iter()
        .map(|(name, s)| {
            (
                name.clone(),
                serde_json::to_value(*s).unwrap_or(Value::Null),
            )
        })
        .collect();
    json!({
        "project": project.name,
        "computed_at": rfc3339(computed_at),
        "as_of": rfc3339(as_of),
        "format": match format { TableFormat::Parquet => "parquet", TableFormat::Delta => "delta" },
        "identity": {
            "identifiers": graph.len(),
            "people": graph.components(),
            "quarantined": graph.quarantine.len(),
            "signature": crate::features::signature(&[&project.identity.canonical_text()]),
        },
        "inputs": inputs,
        "columns": columns,
    })
}
