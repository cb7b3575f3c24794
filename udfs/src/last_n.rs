//! `last_n(value, ts, n [, distinct])`: the `n` most recent values of each group, most recent
//! first, as a list. A bounded top-N per group instead of sorting every row (which
//! `array_agg(... ORDER BY ts)` does); equal times are ordered by value, so the answer never
//! depends on row order or partitioning.

use std::sync::{Arc, LazyLock};

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, ListArray, StringArray};
use arrow::buffer::OffsetBuffer;
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, FieldRef, TimeUnit};
use datafusion::common::{plan_err, Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Documentation, EmitTo, GroupsAccumulator,
    Signature, Volatility,
};
use datafusion::physical_expr::expressions::Literal;
use datafusion_macros::user_doc;

use crate::common::{kept, prefetch_group, utf8, Interner, PairedLists};

/// The shared instance, for registries and expression builders.
pub fn udaf() -> Arc<AggregateUDF> {
    static UDAF: LazyLock<Arc<AggregateUDF>> =
        LazyLock::new(|| Arc::new(AggregateUDF::new_from_impl(LastN::new())));
    Arc::clone(&UDAF)
}

#[user_doc(
    doc_section(label = "Feature Functions"),
    description = "The `n` most recent non-NULL values of each group, most recent first \
(equal times: smaller value first). With `distinct` true, each value once, at its most recent \
time. Rows with a NULL time are ignored. Keeps at most `n` values per group while reading.",
    syntax_example = "last_n(value, ts, n[, distinct])",
    sql_example = r#"```sql
> select last_n(product_id, ts, 3, true) from tracks where event = 'product_viewed';
```"#,
    argument(name = "value", description = "Any string expression."),
    argument(
        name = "ts",
        description = "When the value was seen: a timestamp or date."
    ),
    argument(
        name = "n",
        description = "How many values to keep: a positive integer literal."
    ),
    argument(
        name = "distinct",
        description = "Boolean literal, default false: each value once."
    )
)]
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct LastN {
    signature: Signature,
}

impl Default for LastN {
    fn default() -> Self {
        Self::new()
    }
}

impl LastN {
    pub fn new() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

fn list_of(data_type: DataType) -> FieldRef {
    Arc::new(Field::new("item", data_type, true))
}

const MICROS: DataType = DataType::Timestamp(TimeUnit::Microsecond, None);

/// The literal at `exprs[i]`, if it is one.
fn literal(args: &AccumulatorArgs, i: usize) -> Option<ScalarValue> {
    args.exprs
        .get(i)?
        .downcast_ref::<Literal>()
        .map(|l| l.value().clone())
}

/// `(n, distinct)` from the call's literals.
fn settings(args: &AccumulatorArgs) -> Result<(usize, bool)> {
    let n = match literal(args, 2) {
        Some(ScalarValue::Int64(Some(n))) if n > 0 => n as usize,
        _ => {
            return plan_err!(
                "last_n: n must be a positive integer literal, got {}",
                args.exprs[2]
            )
        }
    };
    let distinct = match (args.exprs.len(), literal(args, 3)) {
        (3, _) => false,
        (_, Some(ScalarValue::Boolean(Some(d)))) => d,
        _ => {
            return plan_err!(
                "last_n: distinct must be a boolean literal, got {}",
                args.exprs[3]
            )
        }
    };
    Ok((n, distinct))
}

impl AggregateUDFImpl for LastN {
    fn name(&self) -> &str {
        "last_n"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if !(3..=4).contains(&arg_types.len()) {
            return plan_err!(
                "last_n takes (value, ts, n [, distinct]), got {} arguments",
                arg_types.len()
            );
        }
        let value = match &arg_types[0] {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => {
                DataType::Utf8
            }
            other => return plan_err!("last_n: value must be a string, got {other}"),
        };
        match &arg_types[1] {
            DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 | DataType::Null => {}
            other => return plan_err!("last_n: ts must be a timestamp or date, got {other}"),
        }
        if !arg_types[2].is_integer() {
            return plan_err!("last_n: n must be an integer, got {}", arg_types[2]);
        }
        let mut out = vec![value, MICROS, DataType::Int64];
        if arg_types.len() == 4 {
            out.push(DataType::Boolean);
        }
        Ok(out)
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::List(list_of(DataType::Utf8)))
    }

    fn is_nullable(&self) -> bool {
        false
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![
            Arc::new(Field::new(
                format_state_name(args.name, "values"),
                DataType::List(list_of(DataType::Utf8)),
                true,
            )),
            Arc::new(Field::new(
                format_state_name(args.name, "times"),
                DataType::List(list_of(DataType::Int64)),
                true,
            )),
        ])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let (n, distinct) = settings(&args)?;
        Ok(Box::new(LastNAccumulator {
            top: TopN::new(n, distinct),
            text: Interner::default(),
        }))
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        let (n, distinct) = settings(&args)?;
        Ok(Box::new(LastNGroups::new(n, distinct)))
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.doc()
    }
}

/// The most recent values of one group, kept to at most `2n` between compactions. Values
/// are ids in the accumulator's [`Interner`]: keeping one allocates nothing.
#[derive(Debug, Clone)]
struct TopN {
    n: usize,
    distinct: bool,
    items: Vec<(i64, u32)>,
    /// Items are sorted and cut to `n`: the last one is the oldest that can stay.
    compacted: bool,
}

impl TopN {
    fn new(n: usize, distinct: bool) -> Self {
        Self {
            n,
            distinct,
            items: vec![],
            compacted: false,
        }
    }

    fn push(&mut self, ts: i64, value: u32, text: &Interner) {
        // Once full and compacted, anything older than the oldest kept can never enter.
        if self.compacted && self.items.len() == self.n {
            let last = self.items[self.n - 1];
            if ts < last.0 || (ts == last.0 && text.get(value) > text.get(last.1)) {
                return;
            }
        }
        self.compacted = false;
        self.items.push((ts, value));
        if self.items.len() >= 2 * self.n.max(8) {
            self.compact(text);
        }
    }

    /// Most recent first, equal times by value; distinct keeps each value's latest time.
    fn compact(&mut self, text: &Interner) {
        self.items
            .sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| text.get(a.1).cmp(text.get(b.1))));
        if self.distinct {
            // Ids are values: equal ids, equal text.
            let mut seen: Vec<u32> = Vec::with_capacity(self.n);
            self.items.retain(|&(_, v)| {
                if seen.len() == self.n || seen.contains(&v) {
                    return false;
                }
                seen.push(v);
                true
            });
        }
        self.items.truncate(self.n);
        self.compacted = true;
    }

    fn size(&self) -> usize {
        self.items.capacity() * std::mem::size_of::<(i64, u32)>()
    }

    fn heap(&self) -> Option<*const (i64, u32)> {
        Some(self.items.as_ptr())
    }
}

fn update(
    top: &mut TopN,
    text: &mut Interner,
    values: &StringArray,
    times: &arrow::array::PrimitiveArray<arrow::datatypes::TimestampMicrosecondType>,
    i: usize,
) {
    if values.is_valid(i) && times.is_valid(i) {
        let id = text.id(values.value(i));
        top.push(times.value(i), id, text);
    }
}

fn inputs(values: &[ArrayRef]) -> Result<(ArrayRef, ArrayRef)> {
    Ok((utf8("last_n", &values[0])?, cast(&values[1], &MICROS)?))
}

fn merge_row(top: &mut TopN, text: &mut Interner, states: &PairedLists, i: usize) -> Result<()> {
    for (value, ts) in states.row(i)? {
        let id = text.id(value);
        top.push(ts, id, text);
    }
    Ok(())
}

/// Compacts each group and lays out `(values, times)` lists.
fn lists(groups: &mut [TopN], text: &Interner) -> (ListArray, ListArray) {
    for g in groups.iter_mut() {
        g.compact(text);
    }
    let offsets = OffsetBuffer::from_lengths(groups.iter().map(|g| g.items.len()));
    let values: StringArray = groups
        .iter()
        .flat_map(|g| g.items.iter().map(|&(_, v)| Some(text.get(v))))
        .collect();
    let times: Int64Array = groups
        .iter()
        .flat_map(|g| g.items.iter().map(|(t, _)| *t))
        .collect();
    (
        ListArray::new(
            list_of(DataType::Utf8),
            offsets.clone(),
            Arc::new(values),
            None,
        ),
        ListArray::new(list_of(DataType::Int64), offsets, Arc::new(times), None),
    )
}

#[derive(Debug)]
struct LastNAccumulator {
    top: TopN,
    text: Interner,
}

impl Accumulator for LastNAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let (v, t) = inputs(values)?;
        let (v, t) = (v.as_string::<i32>(), t.as_primitive());
        for i in 0..v.len() {
            update(&mut self.top, &mut self.text, v, t, i);
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let states = PairedLists::new("last_n", "times", states);
        for i in 0..states.len() {
            merge_row(&mut self.top, &mut self.text, &states, i)?;
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let (v, t) = lists(std::slice::from_mut(&mut self.top), &self.text);
        Ok(vec![
            ScalarValue::List(Arc::new(v)),
            ScalarValue::List(Arc::new(t)),
        ])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let (v, _) = lists(std::slice::from_mut(&mut self.top), &self.text);
        Ok(ScalarValue::List(Arc::new(v)))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.top.size() + self.text.size()
    }
}

#[derive(Debug)]
struct LastNGroups {
    n: usize,
    distinct: bool,
    groups: Vec<TopN>,
    /// Every value the groups hold, once.
    text: Interner,
    /// Sum of the groups' `TopN::size`: DataFusion asks after every batch.
    bytes: usize,
}

impl LastNGroups {
    fn new(n: usize, distinct: bool) -> Self {
        Self {
            n,
            distinct,
            groups: vec![],
            text: Interner::default(),
            bytes: 0,
        }
    }

    /// Applies `change` to group `g`, keeping `bytes` current.
    fn change(&mut self, g: usize, change: impl FnOnce(&mut TopN, &mut Interner)) {
        let top = &mut self.groups[g];
        let before = top.size();
        change(top, &mut self.text);
        self.bytes = self.bytes + top.size() - before;
    }

    fn take(&mut self, emit_to: EmitTo) -> Vec<TopN> {
        let taken = emit_to.take_needed(&mut self.groups);
        self.bytes -= taken.iter().map(TopN::size).sum::<usize>();
        taken
    }
}

impl GroupsAccumulator for LastNGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        let (n, distinct) = (self.n, self.distinct);
        self.groups
            .resize_with(total_num_groups, || TopN::new(n, distinct));
        let (v, t) = inputs(values)?;
        let (v, t) = (v.as_string::<i32>(), t.as_primitive());
        for (i, &g) in group_indices.iter().enumerate() {
            prefetch_group(&self.groups, group_indices, opt_filter, i, TopN::heap);
            if kept(opt_filter, i) {
                self.change(g, |top, text| update(top, text, v, t, i));
            }
        }
        Ok(())
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        let (n, distinct) = (self.n, self.distinct);
        self.groups
            .resize_with(total_num_groups, || TopN::new(n, distinct));
        let states = PairedLists::new("last_n", "times", values);
        for (i, &g) in group_indices.iter().enumerate() {
            prefetch_group(&self.groups, group_indices, None, i, TopN::heap);
            let mut merged = Ok(());
            self.change(g, |top, text| merged = merge_row(top, text, &states, i));
            merged?;
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let mut taken = self.take(emit_to);
        Ok(Arc::new(lists(&mut taken, &self.text).0))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let mut taken = self.take(emit_to);
        let (v, t) = lists(&mut taken, &self.text);
        Ok(vec![Arc::new(v), Arc::new(t)])
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let (v, t) = inputs(values)?;
        let (v, t) = (v.as_string::<i32>(), t.as_primitive());
        let mut text = Interner::default();
        let mut rows: Vec<TopN> = (0..v.len())
            .map(|i| {
                let mut top = TopN::new(self.n, self.distinct);
                if kept(opt_filter, i) {
                    update(&mut top, &mut text, v, t, i);
                }
                top
            })
            .collect();
        let (v, t) = lists(&mut rows, &text);
        Ok(vec![Arc::new(v), Arc::new(t)])
    }

    fn size(&self) -> usize {
        self.groups.capacity() * std::mem::size_of::<TopN>() + self.bytes + self.text.size()
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    fn reference(rows: &[(Option<i64>, Option<String>)], n: usize, distinct: bool) -> Vec<String> {
        let mut items: Vec<(i64, String)> = rows
            .iter()
            .filter_map(|(t, v)| Some(((*t)?, v.clone()?)))
            .collect();
        items.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let mut out: Vec<String> = vec![];
        for (_, v) in items {
            if !(distinct && out.contains(&v)) {
                out.push(v);
            }
        }
        out.truncate(n);
        out
    }

    fn arrays(rows: &[(Option<i64>, Option<String>)]) -> Vec<ArrayRef> {
        let v: StringArray = rows.iter().map(|(_, v)| v.as_deref()).collect();
        let t: arrow::array::TimestampMicrosecondArray = rows.iter().map(|(t, _)| *t).collect();
        vec![Arc::new(v), Arc::new(t)]
    }

    fn as_vec(list: &ListArray, row: usize) -> Vec<String> {
        let v = list.value(row);
        let v = v.as_string::<i32>();
        (0..v.len()).map(|i| v.value(i).to_string()).collect()
    }

    /// Partial states from either accumulator, merged in any split, equal one pass.
    #[test]
    fn state_compatibility() {
        let mut rng = StdRng::seed_from_u64(9);
        for _ in 0..300 {
            let (n, distinct) = (rng.random_range(1..6), rng.random_bool(0.5));
            let rows: Vec<(Option<i64>, Option<String>)> = (0..rng.random_range(0..80))
                .map(|_| {
                    (
                        rng.random_bool(0.95).then(|| rng.random_range(0..20)),
                        rng.random_bool(0.9)
                            .then(|| format!("v{}", rng.random_range(0..8))),
                    )
                })
                .collect();
            let expected = reference(&rows, n, distinct);
            let cut = rng.random_range(0..=rows.len());
            let mut left = LastNAccumulator {
                top: TopN::new(n, distinct),
                text: Interner::default(),
            };
            left.update_batch(&arrays(&rows[..cut])).unwrap();
            let left: Vec<ArrayRef> = left
                .state()
                .unwrap()
                .iter()
                .map(|s| s.to_array().unwrap())
                .collect();
            let mut right = LastNGroups::new(n, distinct);
            let rest = &rows[cut..];
            right
                .update_batch(&arrays(rest), &vec![0; rest.len()], None, 1)
                .unwrap();
            let held: usize = right.groups.iter().map(TopN::size).sum();
            assert_eq!(right.bytes, held, "size accounting drifted");
            let state = right.state(EmitTo::All).unwrap();
            assert_eq!(right.bytes, 0, "emitted groups still counted");
            let right = state;
            let mut merged = LastNGroups::new(n, distinct);
            merged.merge_batch(&left, &[0], 1).unwrap();
            merged.merge_batch(&right, &[0], 1).unwrap();
            let out = merged.evaluate(EmitTo::All).unwrap();
            assert_eq!(
                as_vec(out.as_list::<i32>(), 0),
                expected,
                "n={n} distinct={distinct}"
            );
            let rows_state = merged.convert_to_state(&arrays(&rows), None).unwrap();
            let mut again = LastNGroups::new(n, distinct);
            again
                .merge_batch(&rows_state, &vec![0; rows.len()], 1)
                .unwrap();
            let out = again.evaluate(EmitTo::All).unwrap();
            assert_eq!(as_vec(out.as_list::<i32>(), 0), expected);
        }
    }
}
