//! `count_in_window(ts, window [, reference])`: how many rows have a time in the `window`
//! ending at the reference time, e.g. sessions in the last 7 days.

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, FieldRef, Int64Type};
use datafusion::common::{plan_err, Result};
use datafusion::logical_expr::function::{
    AccumulatorArgs, AggregateFunctionSimplification, StateFieldsArgs,
};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Documentation, GroupsAccumulator, Signature,
    Volatility,
};
use datafusion_macros::user_doc;

use crate::window::{bind_reference, coerce_time_args, Window, WindowTotal};

const NAME: &str = "count_in_window";

/// The shared instance, for registries and expression builders.
pub fn udaf() -> Arc<AggregateUDF> {
    static UDAF: LazyLock<Arc<AggregateUDF>> =
        LazyLock::new(|| Arc::new(AggregateUDF::new_from_impl(CountInWindow::new())));
    Arc::clone(&UDAF)
}

#[user_doc(
    doc_section(label = "Feature Functions"),
    description = "Number of rows whose time `ts` falls in `(reference - window, reference]`. \
The reference time is `c360.reference_time` when set (`c360 run --as-of` sets it), else the \
query's start. Rows with a NULL time do not count.",
    syntax_example = "count_in_window(ts, window[, reference])",
    sql_example = r#"```sql
> select count_in_window(ts, interval '7 days') from tracks where event = 'page_viewed';
```"#,
    argument(
        name = "ts",
        description = "When the row happened: a timestamp or date."
    ),
    argument(
        name = "window",
        description = "An interval literal, e.g. `INTERVAL '7 days'` or `'1 month'`."
    ),
    argument(
        name = "reference",
        description = "Optional timestamp literal ending the window, overriding `c360.reference_time`."
    )
)]
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct CountInWindow {
    signature: Signature,
}

impl Default for CountInWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl CountInWindow {
    pub fn new() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

fn accumulator(args: &AccumulatorArgs) -> Result<WindowTotal<Int64Type>> {
    Ok(WindowTotal::count(
        Window::from_args(NAME, args, 1)?,
        DataType::Int64,
    ))
}

impl AggregateUDFImpl for CountInWindow {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if !(2..=3).contains(&arg_types.len()) {
            return plan_err!(
                "{NAME} takes (ts, window [, reference]), got {} arguments",
                arg_types.len()
            );
        }
        coerce_time_args(NAME, arg_types)
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }

    fn is_nullable(&self) -> bool {
        false
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            format_state_name(args.name, "count"),
            DataType::Int64,
            false,
        ))])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(accumulator(&args)?))
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(accumulator(&args)?))
    }

    fn simplify(&self) -> Option<AggregateFunctionSimplification> {
        Some(bind_reference(NAME, 2))
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.doc()
    }
}
