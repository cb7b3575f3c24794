//! `canonical_id(id_type, value)`: the person an identifier belongs to, looked up in the
//! session's identity graph. `person_key(id_type, value)` is the same person as a number
//! (the `c360_person` column of `identity_people`): the run groups and joins on it, which
//! is cheaper than on text. Stitched views call them once per identifier column.

use std::sync::Arc;

use arrow::array::{Array, AsArray, StringBuilder, UInt32Array};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

use super::IdentityGraph;

#[derive(Debug)]
struct CanonicalId {
    graph: Arc<IdentityGraph>,
    signature: Signature,
    /// `person_key`: the person's number rather than its id.
    key: bool,
}

impl PartialEq for CanonicalId {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.graph, &other.graph) && self.key == other.key
    }
}

impl Eq for CanonicalId {}

impl std::hash::Hash for CanonicalId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        Arc::as_ptr(&self.graph).hash(state);
        self.key.hash(state);
    }
}

/// `canonical_id` over `graph`.
pub fn udf(graph: Arc<IdentityGraph>) -> ScalarUDF {
    ScalarUDF::new_from_impl(CanonicalId {
        graph,
        signature: Signature::string(2, Volatility::Stable),
        key: false,
    })
}

/// `person_key` over `graph`.
pub fn key_udf(graph: Arc<IdentityGraph>) -> ScalarUDF {
    ScalarUDF::new_from_impl(CanonicalId {
        graph,
        signature: Signature::string(2, Volatility::Stable),
        key: true,
    })
}

impl ScalarUDFImpl for CanonicalId {
    fn name(&self) -> &str {
        match self.key {
            true => "person_key",
            false => "canonical_id",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(match self.key {
            true => DataType::UInt32,
            false => DataType::Utf8,
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let values = cast(
            &args.args[1].to_array(args.number_rows)?,
            &DataType::Utf8View,
        )?;
        let values = values.as_string_view();
        // The id type is a literal in stitched views: resolve it once, not per row.
        let people: Vec<Option<u32>> = match &args.args[0] {
            ColumnarValue::Scalar(t) if !scalar => {
                let t = t.cast_to(&DataType::Utf8)?;
                let t = match &t {
                    ScalarValue::Utf8(Some(t)) => self.graph.type_id(t),
                    _ => None,
                };
                match t {
                    Some(t) => self.graph.people_of(t, values),
                    None => vec![None; values.len()],
                }
            }
            types => {
                let types = cast(&types.to_array(args.number_rows)?, &DataType::Utf8)?;
                let types = types.as_string::<i32>();
                (0..values.len())
                    .map(|i| {
                        let t = types
                            .is_valid(i)
                            .then(|| self.graph.type_id(types.value(i)));
                        match t.flatten() {
                            Some(t) if values.is_valid(i) => {
                                self.graph.person_of(t, values.value(i))
                            }
                            _ => None,
                        }
                    })
                    .collect()
            }
        };
        let out: arrow::array::ArrayRef = match self.key {
            true => Arc::new(people.into_iter().collect::<UInt32Array>()),
            false => {
                let mut out = StringBuilder::with_capacity(values.len(), values.len() * 21);
                for p in people {
                    out.append_option(p.map(|p| self.graph.canonical_of(p)));
                }
                Arc::new(out.finish())
            }
        };
        if scalar {
            return Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?));
        }
        Ok(ColumnarValue::Array(out))
    }
}
