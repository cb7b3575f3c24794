//! The `c360` command line: `sql`, `repl`, `run`, `explain`, `identity` and `generate`. With a
//! project that has an `[identity]` section, sessions also hold the identity graph's tables,
//! `why_merged`, `canonical_id` and a `stitched_<input>` view of each input. Exit codes: 0 success, 1 a
//! query or runtime failure, 2 bad usage, 3 a bad project file, 4 an input that cannot
//! be opened, 5 another run holds the output, 6 the output cannot be written, 7 over the
//! memory limit.

mod repl;
mod sql;

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use datafusion::prelude::SessionContext;
use datafusion_cli::object_storage::instrumented::InstrumentedObjectStoreRegistry;
use datafusion_cli::print_format::PrintFormat;
use datafusion_cli::print_options::{MaxRows, PrintOptions};

use crate::error::{Error, Result};
use crate::generate::{GenerateOptions, LakeFormat, PEOPLE_PER_CHUNK};
use crate::output::TableFormat;
use crate::project::Project;

#[derive(Debug, Parser)]
#[command(
    name = "c360",
    version,
    about = "Customer 360 over your data lake, on Apache DataFusion"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run SQL over the lake and print the results.
    Sql(SqlArgs),
    /// Explore the lake interactively with SQL and every c360 function.
    Repl(ReplArgs),
    /// Build the identity graph and write its tables as Parquet, keeping canonical ids
    /// stable against the graph a previous run wrote there.
    Identity(IdentityArgs),
    /// Build the identity graph, traits and features, and publish customer_360 with the
    /// graph's tables and a features.json catalog.
    Run(RunArgs),
    /// Print the SQL a run executes, view by view and feature by feature.
    Explain(ExplainArgs),
    /// Write a deterministic multi-source demo lake with known ground truth.
    Generate(GenerateArgs),
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Project file declaring inputs, identity rules, traits and features.
    #[arg(long, short)]
    pub project: PathBuf,
    /// Compute as of this time (RFC 3339 or a date): later rows are left out, Delta inputs
    /// are read at the version current then, windows end then. Default: now.
    #[arg(long)]
    pub as_of: Option<String>,
    /// Folder or object-store prefix to publish into.
    #[arg(long, short, default_value = "out")]
    pub output: String,
    /// Table format of the output.
    #[arg(long, value_enum, default_value_t = TableFormat::Parquet)]
    pub format: TableFormat,
    /// Memory budget for the run, e.g. 4G or 512M: sorts and aggregates spill to disk to
    /// stay within it; a run that cannot fails with exit code 7. Default: unbounded.
    #[arg(long, value_parser = parse_size)]
    pub memory_limit: Option<usize>,
    /// Progress on stderr: `text`, `json` (one JSON object per line), or `auto` (text on a
    /// terminal, JSON otherwise).
    #[arg(long, value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
    /// Seconds the output's lease lasts unless renewed. A run killed on another machine
    /// blocks the output this long; on the same machine, not at all.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(3..))]
    pub lease_seconds: u64,
    /// Read every input whole and recompute everyone, even where the previous run here
    /// could be continued by reading only what is new.
    #[arg(long)]
    pub full_refresh: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Auto,
    Text,
    Json,
}

fn parse_size(text: &str) -> std::result::Result<usize, String> {
    crate::parse_bytes(text).map_err(|e| e.to_string())
}

#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// Project file declaring inputs, identity rules, traits and features.
    #[arg(long, short)]
    pub project: PathBuf,
    /// As-of time the windows end at (RFC 3339 or a date). Default: now.
    #[arg(long)]
    pub as_of: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct SqlArgs {
    /// Project file declaring the lake's inputs (each becomes a table).
    #[arg(long, short)]
    pub project: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
    /// Read statements from this file instead of the command line.
    #[arg(short = 'f', long = "file", conflicts_with = "query")]
    pub file: Option<PathBuf>,
    /// One or more statements separated by `;`.
    #[arg(required_unless_present = "file")]
    pub query: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct ReplArgs {
    /// Project file declaring the lake's inputs (each becomes a table).
    #[arg(long, short)]
    pub project: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

#[derive(Debug, clap::Args)]
pub struct IdentityArgs {
    /// Project file declaring the lake's inputs and its `[identity]` rules.
    #[arg(long, short)]
    pub project: PathBuf,
    /// Folder for identity_graph, identity_quarantine, identity_edges and identity_changes.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// Number of real people behind the data.
    #[arg(long, default_value_t = 300)]
    pub customers: usize,
    /// Folder to write the lake into (created; existing generated tables are replaced).
    #[arg(long)]
    pub out: PathBuf,
    /// Seed: the same seed and size give the same data.
    #[arg(long, default_value_t = 360)]
    pub seed: u64,
    /// Table formats to write.
    #[arg(long, value_enum, default_value_t = LakeFormat::Both)]
    pub format: LakeFormat,
    /// People simulated and written at a time: memory grows with it, about 3 GiB at the
    /// default. The rows do not change, only how they are spread over files.
    #[arg(long, default_value_t = PEOPLE_PER_CHUNK)]
    pub chunk: usize,
}

/// How query results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Csv,
    Tsv,
    Json,
    Ndjson,
}

impl From<OutputFormat> for PrintFormat {
    fn from(f: OutputFormat) -> Self {
        match f {
            OutputFormat::Table => PrintFormat::Table,
            OutputFormat::Csv => PrintFormat::Csv,
            OutputFormat::Tsv => PrintFormat::Tsv,
            OutputFormat::Json => PrintFormat::Json,
            OutputFormat::Ndjson => PrintFormat::NdJson,
        }
    }
}

fn print_options(format: OutputFormat, interactive: bool) -> PrintOptions {
    PrintOptions {
        format: format.into(),
        quiet: !interactive,
        maxrows: if interactive {
            MaxRows::Limited(40)
        } else {
            MaxRows::Unlimited
        },
        color: interactive,
        instrumented_registry: Arc::new(InstrumentedObjectStoreRegistry::new()),
    }
}

/// A c360 session with the project's inputs registered as tables.
pub async fn open_session(project: Option<&PathBuf>) -> Result<SessionContext> {
    let Some(path) = project else {
        return crate::session();
    };
    let (ctx, project) = open_project(path).await?;
    if project.has_identity {
        let graph = crate::identity::build(&ctx, &project, None, None).await?;
        crate::identity::register_tables(&ctx, std::sync::Arc::new(graph))?;
        // `stitched_<input>`: every input's rows with their person's c360_id.
        let now = chrono::Utc::now().timestamp_micros();
        crate::features::FeaturePlan::for_session(&project, now, &ctx, None)
            .create_views(&ctx)
            .await?;
    }
    Ok(ctx)
}

/// A c360 session with the project at `path` loaded and its inputs registered.
pub async fn open_project(path: &std::path::Path) -> Result<(SessionContext, Project)> {
    let ctx = crate::session()?;
    let project = Project::load(path)?;
    project.register_inputs(&ctx).await?;
    Ok((ctx, project))
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Sql(args) => {
            let sql = match (&args.query, &args.file) {
                (Some(q), _) => q.clone(),
                (None, Some(f)) => std::fs::read_to_string(f)
                    .map_err(|e| Error::io(format!("reading SQL file '{}'", f.display()), e))?,
                (None, None) => return Err(Error::Usage("give a query or -f FILE".into())),
            };
            let ctx = open_session(args.project.as_ref()).await?;
            sql::run_script(&ctx, &sql, &print_options(args.format, false)).await
        }
        Command::Repl(args) => {
            let ctx = open_session(args.project.as_ref()).await?;
            repl::run(&ctx, print_options(args.format, true)).await
        }
        Command::Identity(args) => {
            let (ctx, project) = open_project(&args.project).await?;
            let graph = crate::identity::run(&ctx, &project, &args.out).await?;
            println!("{} (written to {})", graph.summary(), args.out.display());
            Ok(())
        }
        Command::Run(args) => {
            let report = crate::run::run(&crate::run::RunOptions {
                project: args.project,
                as_of: args.as_of,
                output: args.output,
                format: args.format,
                lease: std::time::Duration::from_secs(args.lease_seconds),
                memory_limit: args.memory_limit,
                json_log: match args.log_format {
                    LogFormat::Auto => None,
                    LogFormat::Text => Some(false),
                    LogFormat::Json => Some(true),
                },
                full_refresh: args.full_refresh,
            })
            .await?;
            println!("{}", crate::redact::redact(&report.to_string()));
            Ok(())
        }
        Command::Explain(args) => {
            let project = Project::load(&args.project)?;
            let as_of = match &args.as_of {
                Some(t) => crate::run::parse_as_of(t)?,
                None => chrono::Utc::now().timestamp_micros(),
            };
            let plan = crate::features::FeaturePlan::for_session(
                &project,
                as_of,
                &crate::session()?,
                None,
            );
            print!("{}", plan.script());
            Ok(())
        }
        Command::Generate(args) => {
            let summary = crate::generate::generate(&GenerateOptions {
                customers: args.customers,
                out: args.out,
                seed: args.seed,
                format: args.format,
                chunk: args.chunk,
            })
            .await?;
            println!("{summary}");
            Ok(())
        }
    }
}
