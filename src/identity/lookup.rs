//! `canonical_id(id_type, value)`: the person an identifier belongs to, looked up in the
//! session's identity graph. Stitched views call it once per identifier column.

use std::sync::Arc;

use arrow::array::{Array, AsArray, StringBuilder};
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
}

impl PartialEq for CanonicalId {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.graph, &other.graph)
    }
}

impl Eq for CanonicalId {}

impl std::hash::Hash for CanonicalId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        Arc::as_ptr(&self.graph).hash(state);
    }
}

/// The function over `graph`.
pub fn udf(graph: Arc<IdentityGraph>) -> ScalarUDF {
    ScalarUDF::new_from_impl(CanonicalId {
        graph,
        signature: Signature::string(2, Volatility::Stable),
    })
}

impl ScalarUDFImpl for CanonicalId {
    fn name(&self) -> &str {
        "canonical_id"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let column = |i: usize| -> Result<arrow::array::ArrayRef> {
            Ok(cast(
                &args.args[i].to_array(args.number_rows)?,
                &DataType::Utf8,
            )?)
        };
        let (types, values) = (column(0)?, column(1)?);
        let (types, values) = (types.as_string::<i32>(), values.as_string::<i32>());
        let mut out = StringBuilder::with_capacity(values.len(), values.len() * 21);
        for i in 0..values.len() {
            if types.is_null(i) || values.is_null(i) {
                out.append_null();
            } else {
                out.append_option(self.graph.canonical_id(types.value(i), values.value(i)));
            }
        }
        let out: arrow::array::ArrayRef = Arc::new(out.finish());
        if scalar {
            return Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?));
        }
        Ok(ColumnarValue::Array(out))
    }
}
