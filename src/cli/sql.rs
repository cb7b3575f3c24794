//! Executing SQL text statement by statement and printing results with `datafusion-cli`'s
//! printers.

use std::sync::Arc;
use std::time::Instant;

use datafusion::prelude::SessionContext;
use datafusion::sql::parser::{DFParser, Statement};
use datafusion::sql::sqlparser::dialect::dialect_from_str;
use datafusion_cli::print_options::PrintOptions;

use crate::error::{Error, Result};

/// Parses `sql` (one or more `;`-separated statements) in the session's dialect.
pub fn parse(ctx: &SessionContext, sql: &str) -> Result<Vec<Statement>> {
    let name = ctx.state().config_options().sql_parser.dialect;
    let dialect = dialect_from_str(name)
        .ok_or_else(|| Error::Usage(format!("unsupported SQL dialect {name}")))?;
    let statements = DFParser::parse_sql_with_dialect(sql, dialect.as_ref())?;
    Ok(statements.into_iter().collect())
}

/// Runs every statement of `sql` in order, stopping at the first error.
pub async fn run_script(ctx: &SessionContext, sql: &str, print: &PrintOptions) -> Result<()> {
    for statement in parse(ctx, sql)? {
        run_statement(ctx, statement, print).await?;
    }
    Ok(())
}

/// Runs one statement and prints its result. Statements without columns (DDL, `SET`)
/// print nothing unless the session is interactive.
pub async fn run_statement(
    ctx: &SessionContext,
    statement: Statement,
    print: &PrintOptions,
) -> Result<()> {
    let start = Instant::now();
    let state = ctx.state();
    let plan = state.statement_to_plan(statement).await?;
    let df = ctx.execute_logical_plan(plan).await?;
    let schema = Arc::new(df.schema().as_arrow().clone());
    let batches = df.collect().await?;
    if print.quiet && schema.fields().is_empty() {
        return Ok(());
    }
    let rows = batches.iter().map(|b| b.num_rows()).sum();
    print.print_batches(
        schema,
        &batches,
        start,
        rows,
        &state.config_options().format,
    )?;
    Ok(())
}
