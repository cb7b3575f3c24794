//! c360's DataFusion functions: identifier normalization, identity stitching and
//! feature aggregates. Depends on DataFusion alone, so any host (a `SessionContext`,
//! `datafusion-cli`, a Ballista executor) can link it and call [`register_all`].

use std::sync::Arc;

use datafusion::common::Result;
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::{AggregateUDF, ScalarUDF};

mod common;
pub use common::{batches_when_done, prefetch, AHEAD};
pub mod connected_components;
pub mod count_in_window;
pub mod ids;
pub mod last_n;
pub mod most_frequent;
pub mod normalize_email;
pub mod normalize_id;
pub mod normalize_phone;
pub mod options;
pub mod stitch;
pub mod sum_in_window;
pub mod union_find;
mod window;

/// Every scalar function c360 provides.
pub fn all_scalar_functions() -> Vec<Arc<ScalarUDF>> {
    vec![
        normalize_email::udf(),
        normalize_id::udf(),
        normalize_phone::udf(),
    ]
}

/// Every aggregate function c360 provides.
pub fn all_aggregate_functions() -> Vec<Arc<AggregateUDF>> {
    vec![
        connected_components::udaf(),
        count_in_window::udaf(),
        last_n::udaf(),
        most_frequent::udaf(),
        sum_in_window::udaf(),
    ]
}

/// Names of every c360 function, for listings.
pub fn function_names() -> Vec<String> {
    let scalar = all_scalar_functions()
        .into_iter()
        .map(|f| f.name().to_string());
    let aggregate = all_aggregate_functions()
        .into_iter()
        .map(|f| f.name().to_string());
    scalar.chain(aggregate).collect()
}

/// Registers every c360 function with `registry`, replacing functions of the same name.
pub fn register_all(registry: &mut dyn FunctionRegistry) -> Result<()> {
    for udf in all_scalar_functions() {
        registry.register_udf(udf)?;
    }
    for udaf in all_aggregate_functions() {
        registry.register_udaf(udaf)?;
    }
    Ok(())
}

/// Registers the table functions; they read other tables, so they need the session's catalogs.
pub fn register_table_functions(ctx: &datafusion::prelude::SessionContext) {
    let catalogs = ctx.state().catalog_list().clone();
    ctx.register_udtf("stitch", Arc::new(stitch::Stitch::new(catalogs)));
}

/// Expression builders for the DataFrame API.
pub mod expr_fn {
    use datafusion::logical_expr::Expr;

    /// `normalize_email(email)`
    pub fn normalize_email(email: Expr) -> Expr {
        super::normalize_email::udf().call(vec![email])
    }

    /// `normalize_email(email, canonical)`: also folds Gmail dots and `+tags`.
    pub fn normalize_email_canonical(email: Expr, canonical: Expr) -> Expr {
        super::normalize_email::udf().call(vec![email, canonical])
    }

    /// `normalize_id(text)`, or with `lowercase` true also lower-cased.
    pub fn normalize_id(text: Expr, lowercase: bool) -> Expr {
        use datafusion::logical_expr::lit;
        super::normalize_id::udf().call(vec![text, lit(lowercase)])
    }

    /// `connected_components(id_a, id_b)`
    pub fn connected_components(id_a: Expr, id_b: Expr) -> Expr {
        super::connected_components::udaf().call(vec![id_a, id_b])
    }

    /// `last_n(value, ts, n)`, or with `distinct` each value once.
    pub fn last_n(value: Expr, ts: Expr, n: i64, distinct: bool) -> Expr {
        use datafusion::logical_expr::lit;
        super::last_n::udaf().call(vec![value, ts, lit(n), lit(distinct)])
    }

    /// `sum_in_window(value, ts, window)`, ending at `c360.reference_time`.
    pub fn sum_in_window(value: Expr, ts: Expr, window: Expr) -> Expr {
        super::sum_in_window::udaf().call(vec![value, ts, window])
    }

    /// `count_in_window(ts, window)`, ending at `c360.reference_time`.
    pub fn count_in_window(ts: Expr, window: Expr) -> Expr {
        super::count_in_window::udaf().call(vec![ts, window])
    }

    /// `most_frequent(value)`
    pub fn most_frequent(value: Expr) -> Expr {
        super::most_frequent::udaf().call(vec![value])
    }

    /// `normalize_phone(phone [, default_country])`
    pub fn normalize_phone(phone: Expr, default_country: Option<Expr>) -> Expr {
        let mut args = vec![phone];
        args.extend(default_country);
        super::normalize_phone::udf().call(args)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn no_duplicate_names() {
        let mut names = HashSet::new();
        for f in all_scalar_functions() {
            for name in std::iter::once(f.name()).chain(f.aliases().iter().map(String::as_str)) {
                assert!(
                    names.insert(name.to_lowercase()),
                    "duplicate function name {name}"
                );
            }
        }
    }

    #[test]
    fn every_function_is_documented() {
        for f in all_scalar_functions() {
            let doc = f.documentation().expect("documentation");
            assert!(
                !doc.description.is_empty(),
                "{} has no description",
                f.name()
            );
        }
    }
}
