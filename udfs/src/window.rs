//! The engine behind `sum_in_window` and `count_in_window`: rows whose time falls in
//! `(reference - window, reference]` add to a per-group total. The reference time is bound
//! while planning, from `c360.reference_time` or else the query's start, so every partition
//! of a query (and every executor of a distributed one) uses the same window.

use std::str::FromStr;
use std::sync::Arc;

use arrow::array::timezone::Tz;
use arrow::array::{Array, ArrayRef, ArrowNumericType, AsArray, BooleanArray, PrimitiveArray};
use arrow::compute::cast;
use arrow::compute::kernels::cast_utils::string_to_timestamp_nanos;
use arrow::datatypes::{
    ArrowNativeTypeOp, DataType, IntervalUnit, TimeUnit, TimestampMicrosecondType,
};
use datafusion::common::{exec_err, plan_err, Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, AggregateFunctionSimplification};
use datafusion::logical_expr::{lit, Accumulator, EmitTo, Expr, GroupsAccumulator};
use datafusion::physical_expr::expressions::Literal;

use crate::common::kept;
use crate::options::C360Options;

/// Times are compared as UTC microseconds.
pub(crate) fn utc_micros() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// Checks `(ts, window [, reference])` and says what to coerce them to.
pub(crate) fn coerce_time_args(name: &str, args: &[DataType]) -> Result<Vec<DataType>> {
    let time = |t: &DataType| {
        matches!(
            t,
            DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 | DataType::Null
        )
    };
    if !time(&args[0]) {
        return plan_err!("{name}: ts must be a timestamp or date, got {}", args[0]);
    }
    match &args[1] {
        DataType::Interval(_)
        | DataType::Utf8
        | DataType::LargeUtf8
        | DataType::Utf8View
        | DataType::Null => {}
        other => {
            return plan_err!(
                "{name}: window must be an interval such as INTERVAL '30 days', got {other}"
            )
        }
    }
    let mut out = vec![utc_micros(), DataType::Interval(IntervalUnit::MonthDayNano)];
    if let Some(reference) = args.get(2) {
        if !time(reference) && !reference.is_string() {
            return plan_err!("{name}: reference must be a timestamp, got {reference}");
        }
        out.push(utc_micros());
    }
    Ok(out)
}

/// Appends the reference time to a call that has none: `c360.reference_time` when set
/// (an empty value counts as unset: DataFusion 55 cannot `RESET` extension options), else
/// the query's start time.
pub(crate) fn bind_reference(name: &'static str, arity: usize) -> AggregateFunctionSimplification {
    Box::new(move |mut f, info| {
        if f.params.args.len() == arity {
            let configured = info
                .config_options()
                .extensions
                .get::<C360Options>()
                .and_then(|o| o.reference_time.clone())
                .filter(|t| !t.trim().is_empty());
            let micros = match configured {
                Some(text) => match string_to_timestamp_nanos(text.trim()) {
                    Ok(nanos) => nanos.div_euclid(1000),
                    Err(e) => {
                        return plan_err!(
                            "{name}: c360.reference_time must be a time such as \
                             '2026-06-30T00:00:00Z', got '{text}': {e}"
                        )
                    }
                },
                None => match info.query_execution_start_time() {
                    Some(t) => t.timestamp_micros(),
                    None => return Ok(Expr::AggregateFunction(f)),
                },
            };
            f.params.args.push(lit(ScalarValue::TimestampMicrosecond(
                Some(micros),
                Some("UTC".into()),
            )));
        }
        Ok(Expr::AggregateFunction(f))
    })
}

/// `(lo, hi]` in UTC microseconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    lo: i64,
    hi: i64,
}

impl Window {
    /// From the call's window literal at `exprs[at]` and reference literal after it.
    pub(crate) fn from_args(name: &str, args: &AccumulatorArgs, at: usize) -> Result<Self> {
        let literal = |i: usize| {
            args.exprs
                .get(i)
                .and_then(|e| e.downcast_ref::<Literal>())
                .map(|l| l.value().clone())
        };
        let window = match literal(at) {
            Some(ScalarValue::IntervalMonthDayNano(Some(w)))
                if w.months >= 0 && w.days >= 0 && w.nanoseconds >= 0 =>
            {
                w
            }
            Some(ScalarValue::IntervalMonthDayNano(Some(w))) => {
                return plan_err!("{name}: window must not be negative, got {w:?}")
            }
            _ => {
                return plan_err!(
                    "{name}: window must be an interval literal such as INTERVAL '30 days', got {}",
                    args.exprs[at]
                )
            }
        };
        let hi = match literal(at + 1) {
            Some(ScalarValue::TimestampMicrosecond(Some(t), _)) => t,
            None if args.exprs.len() == at + 1 => {
                return plan_err!(
                    "{name}: no reference time: set c360.reference_time or pass one as the last argument"
                )
            }
            _ => {
                return plan_err!(
                    "{name}: reference must be a non-NULL timestamp literal, got {}",
                    args.exprs[at + 1]
                )
            }
        };
        let utc = Tz::from_str("UTC")?;
        let Some(lo) = TimestampMicrosecondType::subtract_month_day_nano(hi, window, utc) else {
            return plan_err!("{name}: the window reaches before the representable time range");
        };
        Ok(Self { lo, hi })
    }

    fn contains(&self, t: i64) -> bool {
        t > self.lo && t <= self.hi
    }
}

/// Per-group totals of the rows in a window: a sum of `value`, or with no value column a
/// count. Groups without such rows total zero.
pub(crate) struct WindowTotal<T: ArrowNumericType> {
    window: Window,
    data_type: DataType,
    /// Column of the value; `None` counts rows.
    value: Option<usize>,
    ts: usize,
    totals: Vec<T::Native>,
}

impl<T: ArrowNumericType> std::fmt::Debug for WindowTotal<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowTotal")
            .field("window", &self.window)
            .field("data_type", &self.data_type)
            .field("groups", &self.totals.len())
            .finish()
    }
}

impl<T: ArrowNumericType> WindowTotal<T> {
    pub(crate) fn sum(window: Window, data_type: DataType) -> Self {
        Self {
            window,
            data_type,
            value: Some(0),
            ts: 1,
            totals: vec![],
        }
    }

    pub(crate) fn count(window: Window, data_type: DataType) -> Self {
        Self {
            window,
            data_type,
            value: None,
            ts: 0,
            totals: vec![],
        }
    }

    /// Adds each kept row's contribution to the total `group(i)`.
    fn add_rows(
        &mut self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
        group: impl Fn(usize) -> usize,
    ) -> Result<()> {
        // Microsecond times of any zone, and decimals of the total's scale, are read as
        // they are: only other types pay for a cast.
        let ts = match values[self.ts].data_type() {
            DataType::Timestamp(TimeUnit::Microsecond, _) => values[self.ts].clone(),
            _ => cast(&values[self.ts], &utc_micros())?,
        };
        let ts = ts.as_primitive::<TimestampMicrosecondType>();
        let value = match self.value {
            Some(v) => Some(match (values[v].data_type(), &self.data_type) {
                (DataType::Decimal128(_, s), DataType::Decimal128(_, t)) if s == t => {
                    values[v].clone()
                }
                (from, to) if from == to => values[v].clone(),
                _ => cast(&values[v], &self.data_type)?,
            }),
            None => None,
        };
        let value = value.as_ref().map(|v| v.as_primitive::<T>());
        for i in 0..ts.len() {
            if ts.is_null(i) || !self.window.contains(ts.value(i)) || !kept(opt_filter, i) {
                continue;
            }
            let add = match value {
                Some(v) if v.is_null(i) => continue,
                Some(v) => v.value(i),
                None => T::Native::ONE,
            };
            let total = &mut self.totals[group(i)];
            *total = total.add_wrapping(add);
        }
        Ok(())
    }

    fn merge_rows(&mut self, state: &ArrayRef, group: impl Fn(usize) -> usize) -> Result<()> {
        let state = cast(state, &self.data_type)?;
        let state = state.as_primitive::<T>();
        if state.null_count() > 0 {
            return exec_err!("window total: corrupt state with NULL totals");
        }
        for (i, v) in state.values().iter().enumerate() {
            let total = &mut self.totals[group(i)];
            *total = total.add_wrapping(*v);
        }
        Ok(())
    }

    fn array(&self, totals: Vec<T::Native>) -> ArrayRef {
        Arc::new(
            PrimitiveArray::<T>::from_iter_values(totals).with_data_type(self.data_type.clone()),
        )
    }

    fn grow(&mut self, groups: usize) {
        if self.totals.len() < groups {
            self.totals.resize(groups, T::Native::ZERO);
        }
    }
}

impl<T: ArrowNumericType> GroupsAccumulator for WindowTotal<T> {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.grow(total_num_groups);
        self.add_rows(values, opt_filter, |i| group_indices[i])
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.grow(total_num_groups);
        self.merge_rows(&values[0], |i| group_indices[i])
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let totals = emit_to.take_needed(&mut self.totals);
        Ok(self.array(totals))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        Ok(vec![GroupsAccumulator::evaluate(self, emit_to)?])
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let mut rows = Self {
            window: self.window,
            data_type: self.data_type.clone(),
            value: self.value,
            ts: self.ts,
            totals: vec![T::Native::ZERO; values[self.ts].len()],
        };
        rows.add_rows(values, opt_filter, |i| i)?;
        Ok(vec![rows.array(rows.totals.clone())])
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.totals.capacity() * std::mem::size_of::<T::Native>()
    }
}

impl<T: ArrowNumericType> Accumulator for WindowTotal<T> {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.grow(1);
        self.add_rows(values, None, |_| 0)
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.grow(1);
        self.merge_rows(&states[0], |_| 0)
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![Accumulator::evaluate(self)?])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        self.grow(1);
        ScalarValue::try_from_array(&self.array(vec![self.totals[0]]), 0)
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.totals.capacity() * std::mem::size_of::<T::Native>()
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Int64Array, TimestampMicrosecondArray};
    use arrow::datatypes::Int64Type;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    type Row = (Option<i64>, Option<i64>);

    fn arrays(rows: &[Row]) -> Vec<ArrayRef> {
        let v: Int64Array = rows.iter().map(|(v, _)| *v).collect();
        let t: TimestampMicrosecondArray = rows.iter().map(|(_, t)| *t).collect();
        vec![Arc::new(v), Arc::new(t)]
    }

    fn total(out: &ArrayRef) -> i64 {
        out.as_primitive::<Int64Type>().value(0)
    }

    /// Partial states from either accumulator, merged in any split, equal one pass, for
    /// sums and counts.
    #[test]
    fn state_compatibility() {
        let mut rng = StdRng::seed_from_u64(30);
        for _ in 0..300 {
            let window = Window {
                lo: rng.random_range(0..10),
                hi: rng.random_range(10..20),
            };
            let rows: Vec<Row> = (0..rng.random_range(0..60))
                .map(|_| {
                    (
                        rng.random_bool(0.9).then(|| rng.random_range(-50..50)),
                        rng.random_bool(0.9).then(|| rng.random_range(0..25)),
                    )
                })
                .collect();
            let counting = rng.random_bool(0.5);
            let expected: i64 = rows
                .iter()
                .filter(|(_, t)| t.is_some_and(|t| t > window.lo && t <= window.hi))
                .map(|(v, _)| if counting { Some(1) } else { *v })
                .map(|v| v.unwrap_or(0))
                .sum();
            let make = || {
                if counting {
                    let mut a = WindowTotal::<Int64Type>::count(window, DataType::Int64);
                    a.ts = 1;
                    a
                } else {
                    WindowTotal::<Int64Type>::sum(window, DataType::Int64)
                }
            };
            let cut = rng.random_range(0..=rows.len());
            let mut left = make();
            Accumulator::update_batch(&mut left, &arrays(&rows[..cut])).unwrap();
            let left: Vec<ArrayRef> = Accumulator::state(&mut left)
                .unwrap()
                .iter()
                .map(|s| s.to_array().unwrap())
                .collect();
            let mut right = make();
            let rest = &rows[cut..];
            GroupsAccumulator::update_batch(
                &mut right,
                &arrays(rest),
                &vec![0; rest.len()],
                None,
                1,
            )
            .unwrap();
            let right = GroupsAccumulator::state(&mut right, EmitTo::All).unwrap();
            let mut merged = make();
            GroupsAccumulator::merge_batch(&mut merged, &left, &[0], 1).unwrap();
            GroupsAccumulator::merge_batch(&mut merged, &right, &[0], 1).unwrap();
            let out = GroupsAccumulator::evaluate(&mut merged, EmitTo::All).unwrap();
            assert_eq!(total(&out), expected, "counting={counting}");

            let per_row = merged.convert_to_state(&arrays(&rows), None).unwrap();
            let mut again = make();
            Accumulator::merge_batch(&mut again, &per_row).unwrap();
            let out = Accumulator::evaluate(&mut again)
                .unwrap()
                .to_array()
                .unwrap();
            assert_eq!(total(&out), expected);
        }
    }
}
