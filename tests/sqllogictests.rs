//! Runs every `sql/**/*.slt` file against a fresh session after `c360::register`.
//! `cargo test --test sqllogictests -- --complete` rewrites the expected results;
//! any other argument keeps only the files whose path contains it.

use std::path::{Path, PathBuf};

use datafusion_sqllogictest::{
    df_value_validator, read_dir_recursive, value_normalizer, DataFusion,
};
use indicatif::ProgressBar;
use sqllogictest::strict_column_validator;

type BoxError = Box<dyn std::error::Error>;

/// Files named `demo_*.slt` run over the demo project: its inputs and identity graph.
async fn session_for(path: &Path) -> Result<datafusion::prelude::SessionContext, BoxError> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let project = name
        .starts_with("demo_")
        .then(|| PathBuf::from("testdata/demo/c360.toml"));
    Ok(c360::cli::open_session(project.as_ref()).await?)
}

async fn run_file(path: &Path, relative: PathBuf, complete: bool) -> Result<(), BoxError> {
    let ctx = session_for(path).await?;
    let mut runner = sqllogictest::Runner::new(|| {
        let (ctx, relative) = (ctx.clone(), relative.clone());
        async move { Ok(DataFusion::new(ctx, relative, ProgressBar::hidden())) }
    });
    runner.with_column_validator(strict_column_validator);
    runner.with_normalizer(value_normalizer);
    runner.with_validator(df_value_validator);
    if complete {
        runner
            .update_test_file(
                path,
                " ",
                df_value_validator,
                value_normalizer,
                strict_column_validator,
            )
            .await?;
    } else {
        runner.run_file_async(path).await?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let complete = args.iter().any(|a| a == "--complete");
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // Files refer to the demo lake by paths relative to the workspace root.
    std::env::set_current_dir(root)?;
    let mut files: Vec<PathBuf> = read_dir_recursive(root.join("sql"))?
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .filter(|p| {
            filters.is_empty()
                || filters
                    .iter()
                    .any(|f| p.to_string_lossy().contains(f.as_str()))
        })
        .collect();
    files.sort();
    let (mut passed, mut failed) = (0, 0);
    for path in &files {
        let relative = path.strip_prefix(root)?.to_path_buf();
        match run_file(path, relative.clone(), complete).await {
            Ok(()) => {
                passed += 1;
                println!("ok     {}", relative.display());
            }
            Err(e) => {
                failed += 1;
                println!("FAILED {}\n{e}", relative.display());
            }
        }
    }
    println!("sqllogictests: {passed} passed, {failed} failed");
    if failed > 0 || files.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}
