//! `normalize_id(text [, lowercase])`: the `trim` and `lower` identifier rules in one pass,
//! `nullif(trim(text), '')` and `nullif(lower(trim(text)), '')`. Identifiers are read
//! tens of millions at a time and almost all are already in normal form: those come back
//! as views of the input's own bytes, so nothing is copied but the changed ones.

use std::sync::{Arc, LazyLock};

use arrow::array::builder::{make_view, NullBufferBuilder};
use arrow::array::{Array, ArrayRef, AsArray, ByteView, StringViewArray};
use arrow::buffer::{Buffer, ScalarBuffer};
use arrow::datatypes::DataType;
use datafusion::common::types::logical_boolean;
use datafusion::common::Result;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    TypeSignatureClass,
};
use datafusion_macros::user_doc;

use crate::common::{flags, same_shape, string_with_optional, strings_as};

/// The shared instance, for registries and expression builders.
pub fn udf() -> Arc<ScalarUDF> {
    static UDF: LazyLock<Arc<ScalarUDF>> =
        LazyLock::new(|| Arc::new(ScalarUDF::new_from_impl(NormalizeId::new())));
    Arc::clone(&UDF)
}

#[user_doc(
    doc_section(label = "Identity Functions"),
    description = "Normalizes an identifier for identity matching: removes leading and \
trailing spaces (U+0020, as `trim` does) and, with `lowercase` true, lower-cases it. Returns \
NULL for NULL and for values that are empty once trimmed. The same as \
`nullif(trim(text), '')` or `nullif(lower(trim(text)), '')`, in one pass that copies only \
the values it changes.",
    syntax_example = "normalize_id(text[, lowercase])",
    sql_example = r#"```sql
> select normalize_id('  AB-12 '), normalize_id('  AB-12 ', true), normalize_id('   ');
+-------+-------+------+
| AB-12 | ab-12 | NULL |
+-------+-------+------+
```"#,
    argument(name = "text", description = "Identifier: any string expression."),
    argument(
        name = "lowercase",
        description = "Boolean, default false: lower-case the trimmed value as well."
    )
)]
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct NormalizeId {
    signature: Signature,
}

impl Default for NormalizeId {
    fn default() -> Self {
        Self::new()
    }
}

impl NormalizeId {
    pub fn new() -> Self {
        Self {
            signature: string_with_optional(TypeSignatureClass::Native(logical_boolean())),
        }
    }
}

impl ScalarUDFImpl for NormalizeId {
    fn name(&self) -> &str {
        "normalize_id"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8View)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let lowercase = flags(self.name(), "lowercase", arrays.get(1))?;
        let values = strings_as(self.name(), &arrays[0], &DataType::Utf8View)?;
        let out = normalize(values.as_string_view(), lowercase);
        same_shape(&args.args, Arc::new(out) as ArrayRef)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.doc()
    }
}

/// Each value trimmed of spaces, lower-cased where `lower(i)`, NULL where empty. A value
/// that only loses spaces keeps pointing into the input's buffers; one that lower-casing
/// changes is written to a new buffer placed after them.
fn normalize(values: &StringViewArray, lower: impl Fn(usize) -> bool) -> StringViewArray {
    let mut views = Vec::with_capacity(values.len());
    let mut nulls = NullBufferBuilder::new(values.len());
    let mut changed: Vec<u8> = vec![];
    let block = values.data_buffers().len() as u32;
    for (i, &view) in values.views().iter().enumerate() {
        if values.is_null(i) {
            views.push(0);
            nulls.append_null();
            continue;
        }
        let raw = values.value(i);
        let trimmed = raw.trim_matches(' ');
        if trimmed.is_empty() {
            views.push(0);
            nulls.append_null();
            continue;
        }
        nulls.append_non_null();
        let lowered = (lower(i)
            && trimmed
                .bytes()
                .any(|b| b.is_ascii_uppercase() || !b.is_ascii()))
        .then(|| trimmed.to_lowercase())
        .filter(|l| l != trimmed);
        views.push(match lowered {
            // Up to 12 bytes, the view holds the value itself.
            Some(l) if l.len() <= 12 => make_view(l.as_bytes(), 0, 0),
            Some(l) => {
                let offset = changed.len() as u32;
                changed.extend_from_slice(l.as_bytes());
                make_view(l.as_bytes(), block, offset)
            }
            None if trimmed.len() == raw.len() => view,
            None if trimmed.len() <= 12 => make_view(trimmed.as_bytes(), 0, 0),
            None => {
                // Longer, the value was longer too: a slice of the same bytes in a buffer.
                let skipped = (trimmed.as_ptr() as usize - raw.as_ptr() as usize) as u32;
                let at = ByteView::from(view);
                make_view(trimmed.as_bytes(), at.buffer_index, at.offset + skipped)
            }
        });
    }
    let mut buffers = values.data_buffers().to_vec();
    if !changed.is_empty() {
        buffers.push(Buffer::from_vec(changed));
    }
    // SAFETY: every view is of a non-empty `str` (trimming spaces and lower-casing keep
    // UTF-8 boundaries), inline or at its offset in the buffer it names.
    unsafe { StringViewArray::new_unchecked(ScalarBuffer::from(views), buffers, nulls.finish()) }
}

#[cfg(test)]
mod tests {
    use arrow::array::StringViewBuilder;

    use super::*;

    /// The rules as written in SQL: `nullif(trim(v), '')`, lower-cased first with `lower`.
    fn expected(v: Option<&str>, lower: bool) -> Option<String> {
        let t = v?.trim_matches(' ');
        let t = if lower { t.to_lowercase() } else { t.into() };
        (!t.is_empty()).then_some(t)
    }

    #[test]
    fn matches_the_sql_rules_across_buffers_inline_and_not() {
        let pieces = [
            "",
            " ",
            "  ",
            "a",
            "A",
            "Ü",
            "ß",
            "İ",
            "id-0123456789",
            "ID-ABCDEFGHIJK",
        ];
        let mut values = vec![None];
        for a in pieces {
            for b in pieces {
                for c in ["", " ", "   "] {
                    values.push(Some(format!("{c}{a}{b}{c}")));
                    values.push(Some(format!("{a}{c}{b}")));
                }
            }
        }
        // Small blocks: the values spread over many buffers.
        let mut builder = StringViewBuilder::new().with_fixed_block_size(64);
        for v in &values {
            builder.append_option(v.as_deref());
        }
        let array = builder.finish();
        assert!(array.data_buffers().len() > 10);
        for lower in [false, true] {
            let out = normalize(&array, |i| lower && i % 7 != 3);
            for (i, v) in values.iter().enumerate() {
                let want = expected(v.as_deref(), lower && i % 7 != 3);
                let got = out.is_valid(i).then(|| out.value(i).to_string());
                assert_eq!(got, want, "value {v:?}, lowercase {lower}");
            }
        }
    }

    #[test]
    fn unchanged_values_are_not_copied() {
        let array = StringViewArray::from(vec![" a-long-identifier-1 ", "a-long-identifier-2"]);
        let out = normalize(&array, |_| true);
        assert_eq!(out.value(0), "a-long-identifier-1");
        assert_eq!(out.data_buffers().len(), array.data_buffers().len());
    }
}
