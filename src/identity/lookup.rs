//! `canonical_id(id_type, value)`: the person an identifier belongs to, looked up in the
//! session's identity graph. Stitched views call it once per identifier column.

use std::sync::Arc;

use arrow::array::{Array, AsArray, StringBuilder};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use datafusion::common::{exec_err, plan_err, Result, ScalarValue};
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
        let id_type = match &args.args[0] {
            ColumnarValue::Scalar(s) => match s.try_as_str() {
                Some(Some(t)) => t.to_string(),
                _ => return plan_err!("canonical_id: id_type must be a non-NULL string literal"),
            },
            ColumnarValue::Array(_) => {
                return plan_err!("canonical_id: id_type must be a string literal such as 'email'")
            }
        };
        let scalar = matches!(args.args[1], ColumnarValue::Scalar(_));
        let values = args.args[1].to_array(args.number_rows)?;
        let values = cast(&values, &DataType::Utf8)?;
        let values = values.as_string::<i32>();
        let mut out = StringBuilder::with_capacity(values.len(), values.len() * 21);
        for i in 0..values.len() {
            if values.is_null(i) {
                out.append_null();
            } else {
                out.append_option(self.graph.canonical_id(&id_type, values.value(i)));
            }
        }
        let out: arrow::array::ArrayRef = Arc::new(out.finish());
        if scalar {
            return Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?));
        }
        if out.len() != args.number_rows {
            return exec_err!(
                "canonical_id: {} values for {} rows",
                out.len(),
                args.number_rows
            );
        }
        Ok(ColumnarValue::Array(out))
    }
}
