//! c360: a customer-360 engine built on Apache DataFusion.
//!
//! [`register`] adds every c360 function and the lake table factories (`STORED AS DELTA`,
//! `STORED AS PARQUET` on local paths, `memory://` and S3) to any `SessionContext`;
//! [`session`] makes a context configured for c360 with all of it registered.

pub mod cli;
pub mod error;
pub mod features;
pub mod generate;
pub mod identity;
pub mod incremental;
pub mod lake;
pub mod lease;
pub mod materialize;
pub mod output;
pub mod project;
pub mod redact;
pub mod run;

use std::sync::Arc;

use c360_udfs::options::C360Options;
use datafusion::execution::context::SessionState;
use datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};

pub use error::{Error, Result};
use lake::{Format, LakeTableFactory};

/// Adds every c360 function and the Delta/Parquet lake table factories to `ctx`.
pub fn register(ctx: &SessionContext) -> Result<()> {
    {
        let state = ctx.state_ref();
        let mut state = state.write();
        register_state(&mut state)?;
    }
    c360_udfs::register_table_functions(ctx);
    Ok(())
}

fn register_state(state: &mut SessionState) -> Result<()> {
    c360_udfs::register_all(state)?;
    let options = state.config_mut().options_mut();
    if options.extensions.get::<C360Options>().is_none() {
        options.extensions.insert(C360Options::default());
    }
    let factories = state.table_factories_mut();
    factories.insert(
        "DELTA".into(),
        Arc::new(LakeTableFactory::new(Format::Delta)),
    );
    factories.insert(
        "PARQUET".into(),
        Arc::new(LakeTableFactory::new(Format::Parquet)),
    );
    Ok(())
}

/// A session configured for c360 (information schema on, for `\d` and tooling; files
/// readable by path) with everything registered.
pub fn session() -> Result<SessionContext> {
    session_with_memory_limit(None)
}

/// [`session`], whose queries and identity graph together stay within `limit` bytes:
/// sorts and aggregates spill to disk where DataFusion can, anything else over the limit
/// fails with an error naming the largest consumers.
pub fn session_with_memory_limit(limit: Option<usize>) -> Result<SessionContext> {
    let config = SessionConfig::new().with_information_schema(true);
    let mut runtime = RuntimeEnvBuilder::new();
    if let Some(bytes) = limit {
        let pool = TrackConsumersPool::new(
            FairSpillPool::new(bytes),
            std::num::NonZeroUsize::new(5).expect("non-zero"),
        );
        runtime = runtime.with_memory_pool(Arc::new(pool));
    }
    // Files can be queried by path too: `SELECT * FROM 'lake/orders/part-0.parquet'`.
    let ctx = SessionContext::new_with_config_rt(config, runtime.build_arc()?).enable_url_table();
    register(&ctx)?;
    Ok(ctx)
}

/// Fault injection for the crash-recovery tests: with `C360_CRASH_AT=<point>` the process
/// dies at that point as a kill would stop it, cleaning nothing up.
pub(crate) fn crash_point(point: &str) {
    if std::env::var("C360_CRASH_AT").is_ok_and(|p| p == point) {
        // SAFETY: kill(2) on our own pid; SIGKILL cannot be caught, so nothing runs after.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

/// Parses a size such as `4G`, `512MiB`, `1.5GB` or `1000000` (bytes; K, M, G, T are
/// powers of 1024).
pub fn parse_bytes(text: &str) -> Result<usize> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let scale: f64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1.0,
        "K" | "KB" | "KIB" => 1024.0,
        "M" | "MB" | "MIB" => 1024.0 * 1024.0,
        "G" | "GB" | "GIB" => 1024.0 * 1024.0 * 1024.0,
        "T" | "TB" | "TIB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => f64::NAN,
    };
    match number.parse::<f64>() {
        Ok(n) if scale.is_finite() && n > 0.0 => Ok((n * scale) as usize),
        _ => Err(Error::Usage(format!(
            "expected a size such as 4G, 512M or 1000000 (bytes), got '{text}'"
        ))),
    }
}
