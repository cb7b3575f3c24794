//! `most_frequent(value)`: the value seen most often in each group, a classic computed
//! trait (favourite product, usual device). Ties go to the smallest value, so the answer
//! never depends on row order or partitioning.

use hashbrown::HashMap;
use std::sync::{Arc, LazyLock};

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, ListArray, StringArray};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::types::logical_string;
use datafusion::common::{exec_err, Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Coercion, Documentation, EmitTo,
    GroupsAccumulator, Signature, TypeSignature, TypeSignatureClass, Volatility,
};
use datafusion_macros::user_doc;

use crate::common::{kept, utf8};

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

/// Value counts of one group.
type Counts = HashMap<String, i64>;

fn count(counts: &mut Counts, values: &StringArray, i: usize) {
    if values.is_valid(i) {
        let v = values.value(i);
        match counts.get_mut(v) {
            Some(n) => *n += 1,
            None => {
                counts.insert(v.to_string(), 1);
            }
        }
    }
}

/// Heap bytes a value held as a key costs, as `size` reports it.
fn key_bytes(value: &str) -> usize {
    value.len() + 40
}

/// Adds row `i` of a state to `counts`; returns the bytes of the keys it added.
fn merge_row(
    counts: &mut Counts,
    values: &ListArray,
    tallies: &ListArray,
    i: usize,
) -> Result<usize> {
    if values.is_null(i) {
        return Ok(0);
    }
    let (v, n) = (values.value(i), tallies.value(i));
    let (v, n) = (
        v.as_string::<i32>(),
        n.as_primitive::<arrow::datatypes::Int64Type>(),
    );
    if v.len() != n.len() {
        return exec_err!(
            "most_frequent: corrupt state, {} values but {} counts",
            v.len(),
            n.len()
        );
    }
    let mut added = 0;
    for j in 0..v.len() {
        match counts.get_mut(v.value(j)) {
            Some(c) => *c += n.value(j),
            None => {
                counts.insert(v.value(j).to_string(), n.value(j));
                added += key_bytes(v.value(j));
            }
        }
    }
    Ok(added)
}

fn winner(counts: &Counts) -> Option<&str> {
    counts
        .iter()
        .max_by(|(va, na), (vb, nb)| na.cmp(nb).then_with(|| vb.cmp(va)))
        .map(|(v, _)| v.as_str())
}

fn states(groups: &[Counts]) -> Vec<ArrayRef> {
    let offsets = OffsetBuffer::from_lengths(groups.iter().map(HashMap::len));
    let values: StringArray = groups
        .iter()
        .flat_map(|g| g.keys().map(|k| Some(k.as_str())))
        .collect();
    let counts: Int64Array = groups.iter().flat_map(|g| g.values().copied()).collect();
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

#[derive(Debug, Default)]
struct MostFrequentAccumulator {
    counts: Counts,
}

impl Accumulator for MostFrequentAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let v = utf8("most_frequent", &values[0])?;
        let v = v.as_string::<i32>();
        for i in 0..v.len() {
            count(&mut self.counts, v, i);
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let (v, n) = (states[0].as_list::<i32>(), states[1].as_list::<i32>());
        for i in 0..v.len() {
            merge_row(&mut self.counts, v, n, i)?;
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        states(std::slice::from_ref(&self.counts))
            .iter()
            .map(|a| ScalarValue::try_from_array(a, 0))
            .collect()
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Utf8(winner(&self.counts).map(str::to_string)))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.counts.keys().map(|k| k.capacity() + 40).sum::<usize>()
    }
}

#[derive(Debug, Default)]
struct MostFrequentGroups {
    groups: Vec<Counts>,
    bytes: usize,
}

impl MostFrequentGroups {
    fn take(&mut self, emit_to: EmitTo) -> Vec<Counts> {
        let taken = emit_to.take_needed(&mut self.groups);
        let bytes: usize = taken
            .iter()
            .flat_map(|g| g.keys())
            .map(|k| key_bytes(k))
            .sum();
        self.bytes -= bytes;
        taken
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
            if kept(opt_filter, i) {
                let before = self.groups[g].len();
                count(&mut self.groups[g], v, i);
                if self.groups[g].len() > before {
                    self.bytes += key_bytes(v.value(i));
                }
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
        let (v, n) = (values[0].as_list::<i32>(), values[1].as_list::<i32>());
        for (i, &g) in group_indices.iter().enumerate() {
            self.bytes += merge_row(&mut self.groups[g], v, n, i)?;
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let taken = self.take(emit_to);
        Ok(Arc::new(taken.iter().map(winner).collect::<StringArray>()))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let taken = self.take(emit_to);
        Ok(states(&taken))
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let v = utf8("most_frequent", &values[0])?;
        let v = v.as_string::<i32>();
        let rows: Vec<Counts> = (0..v.len())
            .map(|i| {
                let mut c = Counts::new();
                if kept(opt_filter, i) {
                    count(&mut c, v, i);
                }
                c
            })
            .collect();
        Ok(states(&rows))
    }

    fn size(&self) -> usize {
        self.groups.capacity() * std::mem::size_of::<Counts>() + self.bytes
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
            let held: usize = groups
                .groups
                .iter()
                .flat_map(|g| g.keys())
                .map(|k| key_bytes(k))
                .sum();
            assert_eq!(groups.bytes, held, "size accounting drifted");
            let out = groups.evaluate(EmitTo::All).unwrap();
            assert_eq!(groups.bytes, 0, "emitted groups still counted");
            let out = out.as_string::<i32>();
            assert_eq!(out.is_valid(0).then(|| out.value(0).to_string()), expected);
        }
    }
}
