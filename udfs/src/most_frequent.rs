//! `most_frequent(value)`: the value seen most often in each group, a classic computed
//! trait (favourite product, usual device). Ties go to the smallest value, so the answer
//! never depends on row order or partitioning.

use hashbrown::HashMap;
use std::sync::{Arc, LazyLock};

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, ListArray, StringArray};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::types::logical_string;
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Coercion, Documentation, EmitTo,
    GroupsAccumulator, Signature, TypeSignature, TypeSignatureClass, Volatility,
};
use datafusion_macros::user_doc;

use crate::common::{kept, prefetch_group, utf8, Interner, PairedLists};

/// The shared instance, for registries and expression builders.
pub fn udaf() -> Arc<AggregateUDF> {
    static UDAF: LazyLock<Arc<AggregateUDF>> =
        LazyLock::new(|| Arc::new(AggregateUDF::new_from_impl(MostFrequent::new())));
    Arc::clone(&UDAF)
}

#[user_doc(
    doc_section(label = "Feature Functions"),
    description = "The most frequent non-NULL value of each group; among equally frequent \
values, the smallest. NULL for a group without values.",
    syntax_example = "most_frequent(value)",
    sql_example = r#"```sql
> select most_frequent(product_id) from tracks where event = 'product_viewed';
```"#,
    argument(name = "value", description = "Any string expression.")
)]
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct MostFrequent {
    signature: Signature,
}

impl Default for MostFrequent {
    fn default() -> Self {
        Self::new()
    }
}

impl MostFrequent {
    pub fn new() -> Self {
        let string = Coercion::new_exact(TypeSignatureClass::Native(logical_string()));
        Self {
            signature: Signature::one_of(
                vec![TypeSignature::Coercible(vec![string])],
                Volatility::Immutable,
            ),
        }
    }
}

fn list_of(data_type: DataType) -> DataType {
    DataType::List(Arc::new(Field::new("item", data_type, true)))
}

impl AggregateUDFImpl for MostFrequent {
    fn name(&self) -> &str {
        "most_frequent"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![
            Arc::new(Field::new(
                format_state_name(args.name, "values"),
                list_of(DataType::Utf8),
                true,
            )),
            Arc::new(Field::new(
                format_state_name(args.name, "counts"),
                list_of(DataType::Int64),
                true,
            )),
        ])
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(MostFrequentAccumulator::default()))
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        _args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(MostFrequentGroups::default()))
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.doc()
    }
}

/// Value counts of one group: a short list, or a map once it holds many values.
#[derive(Debug)]
enum Counts {
    Few(Vec<(u32, i64)>),
    Many(HashMap<u32, i64>),
}

impl Default for Counts {
    fn default() -> Self {
        Counts::Few(vec![])
    }
}

/// Past this many distinct values a group's linear search costs more than hashing.
const FEW: usize = 32;

impl Counts {
    /// Adds `n` to value `id`; returns whether the value is new to the group.
    fn add(&mut self, id: u32, n: i64) -> bool {
        match self {
            Counts::Few(list) => {
                if let Some(entry) = list.iter_mut().find(|(v, _)| *v == id) {
                    entry.1 += n;
                    return false;
                }
                list.push((id, n));
                if list.len() > FEW {
                    *self = Counts::Many(list.drain(..).collect());
                }
                true
            }
            Counts::Many(map) => {
                let entry = map.entry(id).or_insert(0);
                *entry += n;
                *entry == n
            }
        }
    }

    /// Where a short list's entries are, for prefetching.
    fn heap(&self) -> Option<*const (u32, i64)> {
        match self {
            Counts::Few(list) => Some(list.as_ptr()),
            Counts::Many(_) => None,
        }
    }

    fn len(&self) -> usize {
        match self {
            Counts::Few(list) => list.len(),
            Counts::Many(map) => map.len(),
        }
    }

    fn iter(&self) -> Box<dyn Iterator<Item = (u32, i64)> + '_> {
        match self {
            Counts::Few(list) => Box::new(list.iter().copied()),
            Counts::Many(map) => Box::new(map.iter().map(|(&v, &n)| (v, n))),
        }
    }
}

/// Bytes one (value, count) entry of a group costs, as `size` reports it.
const ENTRY_BYTES: usize = 16;

/// The state: per row, a list of values and the list of their counts.
fn state_lists(
    offsets: OffsetBuffer<i32>,
    values: StringArray,
    counts: Int64Array,
) -> Vec<ArrayRef> {
    let field = |t| Arc::new(Field::new("item", t, true));
    vec![
        Arc::new(ListArray::new(
            field(DataType::Utf8),
            offsets.clone(),
            Arc::new(values),
            None,
        )),
        Arc::new(ListArray::new(
            field(DataType::Int64),
            offsets,
            Arc::new(counts),
            None,
        )),
    ]
}

/// `most_frequent` over any number of groups; the plain accumulator is its one-group case.
#[derive(Debug, Default)]
struct MostFrequentGroups {
    values: Interner,
    groups: Vec<Counts>,
    /// Entries held by all groups.
    entries: usize,
}

impl MostFrequentGroups {
    fn count(&mut self, g: usize, value: &str, n: i64) {
        let id = self.values.id(value);
        if self.groups[g].add(id, n) {
            self.entries += 1;
        }
    }

    /// The group's most frequent value; the smallest among equals.
    fn winner(&self, counts: &Counts) -> Option<&str> {
        counts
            .iter()
            .map(|(id, n)| (n, self.values.get(id)))
            .max_by(|(na, va), (nb, vb)| na.cmp(nb).then_with(|| vb.cmp(va)))
            .map(|(_, v)| v)
    }

    fn take(&mut self, emit_to: EmitTo) -> Vec<Counts> {
        let taken = emit_to.take_needed(&mut self.groups);
        self.entries -= taken.iter().map(Counts::len).sum::<usize>();
        taken
    }

    /// `(values, counts)` lists, one row per group.
    fn states(&self, groups: &[Counts]) -> Vec<ArrayRef> {
        let offsets = OffsetBuffer::from_lengths(groups.iter().map(Counts::len));
        let values: StringArray = groups
            .iter()
            .flat_map(|g| g.iter().map(|(id, _)| Some(self.values.get(id))))
            .collect();
        let counts: Int64Array = groups
            .iter()
            .flat_map(|g| g.iter().map(|(_, n)| n))
            .collect();
        state_lists(offsets, values, counts)
    }
}

impl GroupsAccumulator for MostFrequentGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.groups.resize_with(total_num_groups, Default::default);
        let v = utf8("most_frequent", &values[0])?;
        let v = v.as_string::<i32>();
        for (i, &g) in group_indices.iter().enumerate() {
            prefetch_group(&self.groups, group_indices, opt_filter, i, Counts::heap);
            if kept(opt_filter, i) && v.is_valid(i) {
                self.count(g, v.value(i), 1);
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
        self.groups.resize_with(total_num_groups, Default::default);
        let states = PairedLists::new("most_frequent", "counts", values);
        for (i, &g) in group_indices.iter().enumerate() {
            prefetch_group(&self.groups, group_indices, None, i, Counts::heap);
            for (value, n) in states.row(i)? {
                self.count(g, value, n);
            }
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let taken = self.take(emit_to);
        let winners: StringArray = taken.iter().map(|c| self.winner(c)).collect();
        Ok(Arc::new(winners))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let taken = self.take(emit_to);
        Ok(self.states(&taken))
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        // One row, one count: the state is the row's own value.
        let v = utf8("most_frequent", &values[0])?;
        let v = v.as_string::<i32>();
        let counted = |i: usize| kept(opt_filter, i) && v.is_valid(i);
        let offsets = OffsetBuffer::from_lengths((0..v.len()).map(|i| usize::from(counted(i))));
        let kept_values: StringArray = (0..v.len())
            .filter(|&i| counted(i))
            .map(|i| Some(v.value(i)))
            .collect();
        let ones = Int64Array::from(vec![1i64; kept_values.len()]);
        Ok(state_lists(offsets, kept_values, ones))
    }

    fn size(&self) -> usize {
        self.groups.capacity() * std::mem::size_of::<Counts>()
            + self.entries * ENTRY_BYTES
            + self.values.size()
    }
}

/// The single-group accumulator (no GROUP BY, window frames).
#[derive(Debug)]
struct MostFrequentAccumulator(MostFrequentGroups);

impl Default for MostFrequentAccumulator {
    fn default() -> Self {
        let mut one = MostFrequentGroups::default();
        one.groups.push(Counts::default());
        Self(one)
    }
}

impl Accumulator for MostFrequentAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.0
            .update_batch(values, &vec![0; values[0].len()], None, 1)
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.0.merge_batch(states, &vec![0; states[0].len()], 1)
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        self.0
            .states(&self.0.groups)
            .iter()
            .map(|a| ScalarValue::try_from_array(a, 0))
            .collect()
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let winner = self.0.winner(&self.0.groups[0]);
        Ok(ScalarValue::Utf8(winner.map(str::to_string)))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.0.size()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    fn reference(values: &[Option<String>]) -> Option<String> {
        let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
        for v in values.iter().flatten() {
            *counts.entry(v).or_default() += 1;
        }
        let best = counts.values().max()?;
        counts
            .iter()
            .find(|(_, n)| *n == best)
            .map(|(v, _)| v.to_string())
    }

    fn array(values: &[Option<String>]) -> ArrayRef {
        Arc::new(values.iter().map(|v| v.as_deref()).collect::<StringArray>())
    }

    /// Partial states from either accumulator, merged in any split, equal one pass.
    #[test]
    fn state_compatibility() {
        let mut rng = StdRng::seed_from_u64(5);
        for _ in 0..200 {
            let n = rng.random_range(0..60);
            let values: Vec<Option<String>> = (0..n)
                .map(|_| {
                    rng.random_bool(0.9)
                        .then(|| format!("v{}", rng.random_range(0..6)))
                })
                .collect();
            let expected = reference(&values);
            let cut = rng.random_range(0..=values.len());
            let mut merged = MostFrequentAccumulator::default();
            // One side through Accumulator::state, the other through GroupsAccumulator::state.
            let mut left = MostFrequentAccumulator::default();
            left.update_batch(&[array(&values[..cut])]).unwrap();
            let left: Vec<ArrayRef> = left
                .state()
                .unwrap()
                .iter()
                .map(|s| s.to_array().unwrap())
                .collect();
            let mut right = MostFrequentGroups::default();
            let rest = &values[cut..];
            right
                .update_batch(&[array(rest)], &vec![0; rest.len()], None, 1)
                .unwrap();
            let right = right.state(EmitTo::All).unwrap();
            merged.merge_batch(&right).unwrap();
            merged.merge_batch(&left).unwrap();
            assert_eq!(
                merged.evaluate().unwrap(),
                ScalarValue::Utf8(expected.clone())
            );
            // convert_to_state rows merge to the same answer.
            let mut groups = MostFrequentGroups::default();
            let rows = MostFrequentGroups::default()
                .convert_to_state(&[array(&values)], None)
                .unwrap();
            groups
                .merge_batch(&rows, &vec![0; values.len()], 1)
                .unwrap();
            let held: usize = groups.groups.iter().map(Counts::len).sum();
            assert_eq!(groups.entries, held, "size accounting drifted");
            let out = groups.evaluate(EmitTo::All).unwrap();
            assert_eq!(groups.entries, 0, "emitted groups still counted");
            let out = out.as_string::<i32>();
            assert_eq!(out.is_valid(0).then(|| out.value(0).to_string()), expected);
        }
    }
}
