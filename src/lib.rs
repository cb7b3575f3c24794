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
pub mod lake;
pub mod materialize;
pub mod output;
pub mod project;
pub mod run;

use std::sync::Arc;

use c360_udfs::options::C360Options;
use datafusion::execution::context::SessionState;
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
    let config = SessionConfig::new().with_information_schema(true);
    // Files can be queried by path too: `SELECT * FROM 'lake/orders/part-0.parquet'`.
    let ctx = SessionContext::new_with_config(config).enable_url_table();
    register(&ctx)?;
    Ok(ctx)
}
