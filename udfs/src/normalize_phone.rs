//! `normalize_phone(text [, default_country])`: phone numbers in the E.164 form
//! (`+` and up to 15 digits), so `(415) 555-0123` and `+1 415.555.0123` stitch together.

use std::sync::{Arc, LazyLock};

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use datafusion::common::types::logical_string;
use datafusion::common::{exec_err, Result};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    TypeSignatureClass,
};
use datafusion_macros::user_doc;

use crate::common::{map_strings, same_shape, string_with_optional};

/// The shared instance, for registries and expression builders.
pub fn udf() -> Arc<ScalarUDF> {
    static UDF: LazyLock<Arc<ScalarUDF>> =
        LazyLock::new(|| Arc::new(ScalarUDF::new_from_impl(NormalizePhone::new())));
    Arc::clone(&UDF)
}

#[user_doc(
    doc_section(label = "Identity Functions"),
    description = "Normalizes a phone number to E.164 (`+` followed by the country code and \
the national number, 8 to 15 digits). Separators (spaces, dashes, dots, slashes, brackets), \
a `(0)` trunk marker and an extension (`x12`, `ext. 12`, `#12`) are dropped; full-width and \
Arabic-Indic digits are read as digits. Numbers with a leading `+`, `00` (or `011` where the \
default country is in the North American plan) are international; others are national numbers \
of `default_country` (default `US`): its trunk prefix is removed and its length rules applied. \
Returns NULL for NULL, empty, or anything that is not a plausible number (letters, too few or \
too many digits, a `+` in the middle).",
    syntax_example = "normalize_phone(phone[, default_country])",
    sql_example = r#"```sql
> select normalize_phone('(415) 555-0123'), normalize_phone('020 7946 0958', 'GB'), normalize_phone('call me');
+--------------+---------------+------+
| +14155550123 | +442079460958 | NULL |
+--------------+---------------+------+
```"#,
    argument(name = "phone", description = "Phone number: any string expression."),
    argument(
        name = "default_country",
        description = "ISO 3166-1 alpha-2 code (`'GB'`) or calling code (`'+44'`) for numbers written without one. Default `'US'`."
    )
)]
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct NormalizePhone {
    signature: Signature,
}

impl Default for NormalizePhone {
    fn default() -> Self {
        Self::new()
    }
}

impl NormalizePhone {
    pub fn new() -> Self {
        Self {
            signature: string_with_optional(TypeSignatureClass::Native(logical_string())),
        }
    }
}

impl ScalarUDFImpl for NormalizePhone {
    fn name(&self) -> &str {
        "normalize_phone"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let countries: Option<ArrayRef> = match arrays.get(1) {
            Some(a) => Some(cast(a, &DataType::Utf8)?),
            None => None,
        };
        let us = Country::lookup("US").expect("US is in the table");
        // Per-row countries are usually one repeated value: remember the last lookup.
        let mut last: Option<(String, &'static Country)> = None;
        let out = map_strings(self.name(), &arrays[0], |i, s| {
            let country = match &countries {
                Some(c) if c.is_valid(i) => {
                    let code = c.as_string::<i32>().value(i);
                    match &last {
                        Some((k, found)) if k == code => *found,
                        _ => {
                            let Some(found) = Country::lookup(code) else {
                                return exec_err!(
                                    "normalize_phone: unknown default_country '{code}': expected an \
                                     ISO 3166-1 alpha-2 code such as 'US' or a calling code such as '+44'"
                                );
                            };
                            last = Some((code.to_string(), found));
                            found
                        }
                    }
                }
                _ => us,
            };
            Ok(normalize(s, country))
        })?;
        same_shape(&args.args, out)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.doc()
    }
}

/// Numbering facts for one country: calling code, national trunk prefix, and the lengths of a
/// national significant number.
#[derive(Debug)]
pub struct Country {
    alpha2: &'static str,
    calling_code: &'static str,
    trunk: Option<&'static str>,
    nsn_len: (usize, usize),
}

const fn c(
    alpha2: &'static str,
    calling_code: &'static str,
    trunk: Option<&'static str>,
    min: usize,
    max: usize,
) -> Country {
    Country {
        alpha2,
        calling_code,
        trunk,
        nsn_len: (min, max),
    }
}

// Lengths from the ITU national numbering plans, widened where plans mix lengths.
static COUNTRIES: &[Country] = &[
    c("US", "1", Some("1"), 10, 10),
    c("CA", "1", Some("1"), 10, 10),
    c("GB", "44", Some("0"), 9, 10),
    c("IE", "353", Some("0"), 7, 9),
    c("DE", "49", Some("0"), 6, 13),
    c("FR", "33", Some("0"), 9, 9),
    c("ES", "34", None, 9, 9),
    c("PT", "351", None, 9, 9),
    c("IT", "39", None, 6, 11),
    c("NL", "31", Some("0"), 9, 9),
    c("BE", "32", Some("0"), 8, 9),
    c("LU", "352", None, 4, 11),
    c("CH", "41", Some("0"), 9, 9),
    c("AT", "43", Some("0"), 4, 13),
    c("DK", "45", None, 8, 8),
    c("NO", "47", None, 8, 8),
    c("SE", "46", Some("0"), 7, 9),
    c("FI", "358", Some("0"), 5, 12),
    c("PL", "48", None, 9, 9),
    c("CZ", "420", None, 9, 9),
    c("GR", "30", None, 10, 10),
    c("TR", "90", Some("0"), 10, 10),
    c("RU", "7", Some("8"), 10, 10),
    c("IL", "972", Some("0"), 8, 9),
    c("AE", "971", Some("0"), 8, 9),
    c("ZA", "27", Some("0"), 9, 9),
    c("NG", "234", Some("0"), 8, 10),
    c("IN", "91", Some("0"), 10, 10),
    c("CN", "86", Some("0"), 10, 11),
    c("JP", "81", Some("0"), 9, 10),
    c("KR", "82", Some("0"), 8, 10),
    c("SG", "65", None, 8, 8),
    c("HK", "852", None, 8, 8),
    c("PH", "63", Some("0"), 10, 10),
    c("ID", "62", Some("0"), 9, 12),
    c("AU", "61", Some("0"), 9, 9),
    c("NZ", "64", Some("0"), 8, 10),
    c("BR", "55", Some("0"), 10, 11),
    c("MX", "52", None, 10, 10),
    c("AR", "54", Some("0"), 10, 10),
];

impl Country {
    /// Finds a country by alpha-2 code (any case) or by calling code (`+44`, `44`).
    pub fn lookup(code: &str) -> Option<&'static Country> {
        let code = code.trim();
        let digits = code.strip_prefix('+').unwrap_or(code);
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            return COUNTRIES.iter().find(|c| c.calling_code == digits);
        }
        COUNTRIES
            .iter()
            .find(|c| c.alpha2.eq_ignore_ascii_case(code))
    }

    fn is_nanp(&self) -> bool {
        self.calling_code == "1"
    }
}

/// Reads one character as a decimal digit across the scripts phone numbers arrive in.
fn digit(ch: char) -> Option<u8> {
    let zero = match ch {
        '0'..='9' => '0',
        '\u{FF10}'..='\u{FF19}' => '\u{FF10}',
        '\u{0660}'..='\u{0669}' => '\u{0660}',
        '\u{06F0}'..='\u{06F9}' => '\u{06F0}',
        '\u{0966}'..='\u{096F}' => '\u{0966}',
        _ => return None,
    };
    Some(b'0' + (ch as u32 - zero as u32) as u8)
}

fn is_separator(ch: char) -> bool {
    matches!(
        ch,
        ' ' | '-' | '.' | '/' | '(' | ')' | '[' | ']' | '\t' | '\u{00A0}' | '\u{2010}'
            ..='\u{2015}' | '\u{2212}' | '\u{3000}' | '\u{FF0D}'
    )
}

/// Drops an extension: `x12`, `ext 12`, `ext. 12`, `#12`, `;ext=12`.
fn strip_extension(s: &str) -> &str {
    let lower = s.to_ascii_lowercase();
    for marker in [";ext=", "ext.", "ext", "#", "x"] {
        if let Some(pos) = lower.rfind(marker) {
            let rest = &s[pos + marker.len()..];
            if !rest.trim().is_empty() && rest.trim().chars().all(|c| digit(c).is_some()) {
                return &s[..pos];
            }
        }
    }
    s
}

/// The per-value rule; `None` means "not a phone number".
pub fn normalize(raw: &str, country: &Country) -> Option<String> {
    let s = strip_extension(raw.trim()).replace("(0)", "");
    let mut digits = String::with_capacity(16);
    let mut plus = false;
    for ch in s.chars() {
        if let Some(d) = digit(ch) {
            digits.push(d as char);
        } else if ch == '+' || ch == '\u{FF0B}' {
            if plus || !digits.is_empty() {
                return None;
            }
            plus = true;
        } else if !is_separator(ch) {
            return None;
        }
    }
    let international = if plus {
        Some(digits.as_str())
    } else if let Some(rest) = digits.strip_prefix("00") {
        Some(rest)
    } else if country.is_nanp() {
        digits.strip_prefix("011")
    } else {
        None
    };
    let e164 = match international {
        Some(number) => {
            let number = number.to_string();
            if number.starts_with('0') {
                return None;
            }
            number
        }
        None => national(&digits, country)?,
    };
    valid_e164(&e164).then(|| format!("+{e164}"))
}

/// Completes a number written without `+`: trunk prefix dropped, calling code prepended. Also
/// accepts the calling code written without `+` when the rest is a whole national number.
fn national(digits: &str, country: &Country) -> Option<String> {
    let (min, max) = country.nsn_len;
    let fits = |n: &str| (min..=max).contains(&n.len());
    let mut nsn = digits;
    if let Some(trunk) = country.trunk {
        if let Some(rest) = nsn.strip_prefix(trunk).filter(|r| fits(r)) {
            nsn = rest;
        }
    }
    if !fits(nsn) {
        nsn = digits
            .strip_prefix(country.calling_code)
            .filter(|r| fits(r))?;
    }
    Some(format!("{}{nsn}", country.calling_code))
}

fn valid_e164(number: &str) -> bool {
    if !(8..=15).contains(&number.len()) {
        return false;
    }
    match number.strip_prefix('1') {
        // North American plan: 10 digits, area code and exchange not starting with 0 or 1.
        Some(nanp) => {
            let b = nanp.as_bytes();
            b.len() == 10 && b[0] >= b'2' && b[3] >= b'2'
        }
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(s: &str) -> Option<String> {
        normalize(s, Country::lookup("US").unwrap())
    }

    #[test]
    fn north_america() {
        for s in [
            "(415) 555-0123",
            "415.555.0123",
            "+1 415 555 0123",
            "1-415-555-0123",
            "011 1 415 555 0123",
            "415-555-0123 x12",
            "415 555 0123 ext. 9",
            "４１５５５５０１２３",
        ] {
            assert_eq!(us(s).as_deref(), Some("+14155550123"), "{s:?}");
        }
    }

    #[test]
    fn other_countries() {
        let gb = Country::lookup("gb").unwrap();
        assert_eq!(
            normalize("020 7946 0958", gb).as_deref(),
            Some("+442079460958")
        );
        assert_eq!(
            normalize("+44 (0) 20 7946 0958", gb).as_deref(),
            Some("+442079460958")
        );
        assert_eq!(
            normalize("0044 20 7946 0958", gb).as_deref(),
            Some("+442079460958")
        );
        assert_eq!(
            normalize("44 20 7946 0958", gb).as_deref(),
            Some("+442079460958")
        );
        assert_eq!(Country::lookup("+49").unwrap().alpha2, "DE");
    }

    #[test]
    fn garbage() {
        for s in [
            "",
            "   ",
            "call me",
            "555",
            "123-456-7890",
            "+",
            "12+34567890",
            "+0 555 123 4567",
            "1234567890123456789",
            "n/a",
        ] {
            assert_eq!(us(s), None, "{s:?}");
        }
    }
}
