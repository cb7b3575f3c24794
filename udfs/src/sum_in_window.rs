//! `sum_in_window(value, ts, window [, reference])`: the sum of the values whose time falls in
//! the `window` ending at the reference time, e.g. revenue in the last 30 days. Exact for
//! integers and decimals; zero, not NULL, when nothing falls in the window.

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Decimal128Type, Field, FieldRef, Float64Type, Int64Type};
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

const NAME: &str = "sum_in_window";

/// The shared instance, for registries and expression builders.
pub fn udaf() -> Arc<AggregateUDF> {
    static UDAF: LazyLock<Arc<AggregateUDF>> =
        LazyLock::new(|| Arc::new(AggregateUDF::new_from_impl(SumInWindow::new())));
    Arc::clone(&UDAF)
}

#[user_doc(
    doc_section(label = "Feature Functions"),
    description = "Sum of the non-NULL values whose time `ts` falls in `(reference - window, \
reference]`. The reference time is `c360.reference_time` when set (`c360 run --as-of` sets it), \
else the query's start. Integers sum as BIGINT, floats as DOUBLE, DECIMAL(p, s) as \
DECIMAL(38, s). Zero when no row falls in the window.",
    syntax_example = "sum_in_window(value, ts, window[, reference])",
    sql_example = r#"```sql
> select sum_in_window(amount, ts, interval '30 days') from orders;
```"#,
    argument(name = "value", description = "A numeric expression."),
    argument(
        name = "ts",
        description = "When the value was seen: a timestamp or date."
    ),
    argument(
        name = "window",
        description = "An interval literal, e.g. `INTERVAL '30 days'` or `'1 month'`."
    ),
    argument(
        name = "reference",
        description = "Optional timestamp literal ending the window, overriding `c360.reference_time`."
    )
)]
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SumInWindow {
    signature: Signature,
}

impl Default for SumInWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl SumInWindow {
    pub fn new() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

/// The type totals are kept and returned in.
fn total_type(value: &DataType) -> Result<DataType> {
    Ok(match value {
        DataType::Null => DataType::Int64,
        t if t.is_integer() => DataType::Int64,
        t if t.is_floating() => DataType::Float64,
        DataType::Decimal128(_, s) => DataType::Decimal128(38, *s),
        other => return plan_err!("{NAME}: value must be a number, got {other}"),
    })
}

impl AggregateUDFImpl for SumInWindow {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if !(3..=4).contains(&arg_types.len()) {
            return plan_err!(
                "{NAME} takes (value, ts, window [, reference]), got {} arguments",
                arg_types.len()
            );
        }
        let mut out = vec![match &arg_types[0] {
            DataType::Decimal128(_, _) => arg_types[0].clone(),
            other => total_type(other)?,
        }];
        out.extend(coerce_time_args(NAME, &arg_types[1..])?);
        Ok(out)
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        total_type(&arg_types[0])
    }

    fn is_nullable(&self) -> bool {
        false
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            format_state_name(args.name, "sum"),
            args.return_field.data_type().clone(),
            false,
        ))])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(match accumulator(&args)? {
            Total::Int(t) => Box::new(t),
            Total::Float(t) => Box::new(t),
            Total::Decimal(t) => Box::new(t),
        })
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(match accumulator(&args)? {
            Total::Int(t) => Box::new(t),
            Total::Float(t) => Box::new(t),
            Total::Decimal(t) => Box::new(t),
        })
    }

    fn simplify(&self) -> Option<AggregateFunctionSimplification> {
        Some(bind_reference(NAME, 3))
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.doc()
    }
}

enum Total {
    Int(WindowTotal<Int64Type>),
    Float(WindowTotal<Float64Type>),
    Decimal(WindowTotal<Decimal128Type>),
}

fn accumulator(args: &AccumulatorArgs) -> Result<Total> {
    let window = Window::from_args(NAME, args, 2)?;
    let data_type = args.return_field.data_type().clone();
    Ok(match data_type {
        DataType::Int64 => Total::Int(WindowTotal::sum(window, data_type)),
        DataType::Float64 => Total::Float(WindowTotal::sum(window, data_type)),
        DataType::Decimal128(_, _) => Total::Decimal(WindowTotal::sum(window, data_type)),
        other => return plan_err!("{NAME}: cannot sum {other}"),
    })
}
