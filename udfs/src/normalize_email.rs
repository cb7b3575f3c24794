//! `normalize_email(text [, canonical])`: the form under which two spellings of one
//! mailbox compare equal, so they stitch to one person.

use std::sync::{Arc, LazyLock};

use arrow::datatypes::DataType;
use datafusion::common::types::logical_boolean;
use datafusion::common::Result;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    TypeSignatureClass,
};
use datafusion_macros::user_doc;

use crate::common::{flags, map_strings, same_shape, string_with_optional};

/// The shared instance, for registries and expression builders.
pub fn udf() -> Arc<ScalarUDF> {
    static UDF: LazyLock<Arc<ScalarUDF>> =
        LazyLock::new(|| Arc::new(ScalarUDF::new_from_impl(NormalizeEmail::new())));
    Arc::clone(&UDF)
}

#[user_doc(
    doc_section(label = "Identity Functions"),
    description = "Normalizes an email address for identity matching: trims surrounding \
whitespace (including Unicode spaces) and lower-cases it. Returns NULL for NULL, empty or \
blank input and for text that is not shaped like an address (exactly one `@`, a non-empty \
local part, a domain containing a dot, no inner whitespace). With `canonical` true, also \
removes a `+tag` suffix from the local part for every domain, and dots from the local part \
of `gmail.com`/`googlemail.com` addresses (mapping the latter to `gmail.com`).",
    syntax_example = "normalize_email(email[, canonical])",
    sql_example = r#"```sql
> select normalize_email('  John.Doe+News@GoogleMail.com '), normalize_email('John.Doe+News@GoogleMail.com', true);
+---------------------------------+--------------------+
| john.doe+news@googlemail.com    | johndoe@gmail.com  |
+---------------------------------+--------------------+
```"#,
    argument(name = "email", description = "Email address: any string expression."),
    argument(
        name = "canonical",
        description = "Boolean, default false: fold `+tags` and Gmail dots as well."
    )
)]
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct NormalizeEmail {
    signature: Signature,
}

impl Default for NormalizeEmail {
    fn default() -> Self {
        Self::new()
    }
}

impl NormalizeEmail {
    pub fn new() -> Self {
        Self {
            signature: string_with_optional(TypeSignatureClass::Native(logical_boolean())),
        }
    }
}

impl ScalarUDFImpl for NormalizeEmail {
    fn name(&self) -> &str {
        "normalize_email"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let canonical = flags(self.name(), "canonical", arrays.get(1))?;
        let out = map_strings(self.name(), &arrays[0], |i, s| {
            Ok(normalize(s, canonical(i)))
        })?;
        same_shape(&args.args, out)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.doc()
    }
}

/// The per-value rule; `None` means "not an email address".
pub fn normalize(raw: &str, canonical: bool) -> Option<String> {
    let trimmed = raw.trim();
    if trimmed.is_empty() || trimmed.chars().any(char::is_whitespace) {
        return None;
    }
    let lower = trimmed.to_lowercase();
    let (local, domain) = lower.split_once('@')?;
    if local.is_empty()
        || domain.contains('@')
        || !domain.contains('.')
        || domain.starts_with('.')
        || domain.ends_with('.')
        || domain.contains("..")
    {
        return None;
    }
    if !canonical {
        return Some(lower);
    }
    let local = local.split_once('+').map_or(local, |(base, _tag)| base);
    let (local, domain) = match domain {
        "gmail.com" | "googlemail.com" => (local.replace('.', ""), "gmail.com"),
        _ => (local.to_string(), domain),
    };
    if local.is_empty() {
        return None;
    }
    Some(format!("{local}@{domain}"))
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn rules() {
        assert_eq!(normalize("  A@B.com\t", false).as_deref(), Some("a@b.com"));
        assert_eq!(
            normalize("\u{00a0}Ünïcode@Exämple.de", false).as_deref(),
            Some("ünïcode@exämple.de")
        );
        assert_eq!(
            normalize("a.b+x@googlemail.com", true).as_deref(),
            Some("ab@gmail.com")
        );
        assert_eq!(
            normalize("a.b+x@corp.io", true).as_deref(),
            Some("a.b@corp.io")
        );
        assert_eq!(normalize("+x@corp.io", true), None);
        for bad in [
            "",
            "  ",
            "a",
            "a@b",
            "@b.com",
            "a@@b.com",
            "a b@c.com",
            "a@b..com",
            "a@.com",
        ] {
            assert_eq!(normalize(bad, false), None, "{bad:?}");
        }
    }
}
