//! Building blocks shared by the functions: string-array mapping over every Arrow
//! string encoding, so each function states only its per-value rule.

use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::{DefaultHashBuilder, HashTable};

use arrow::array::{Array, ArrayRef, AsArray, StringArrayType, StringBuilder};
use arrow::datatypes::DataType;
use datafusion::common::types::logical_string;
use datafusion::common::{exec_err, Result, ScalarValue};
use datafusion::logical_expr::{
    Coercion, ColumnarValue, Signature, TypeSignature, TypeSignatureClass, Volatility,
};

/// Applies `f` to each non-null string of `array`, producing a `Utf8` array of the same length.
/// `f` returning `None` yields a null (the functions' "no valid value" answer).
pub(crate) fn map_strings<F>(name: &str, array: &ArrayRef, mut f: F) -> Result<ArrayRef>
where
    F: FnMut(usize, &str) -> Result<Option<String>>,
{
    fn run<'a, S, F>(array: S, f: &mut F) -> Result<ArrayRef>
    where
        S: StringArrayType<'a> + Array,
        F: FnMut(usize, &str) -> Result<Option<String>>,
    {
        let mut out = StringBuilder::with_capacity(array.len(), array.len() * 16);
        for (i, v) in array.iter().enumerate() {
            match v {
                Some(s) => out.append_option(f(i, s)?),
                None => out.append_null(),
            }
        }
        Ok(Arc::new(out.finish()))
    }
    match array.data_type() {
        DataType::Utf8 => run(array.as_string::<i32>(), &mut f),
        DataType::LargeUtf8 => run(array.as_string::<i64>(), &mut f),
        DataType::Utf8View => run(array.as_string_view(), &mut f),
        DataType::Null => Ok(arrow::array::new_null_array(&DataType::Utf8, array.len())),
        other => exec_err!("{name} expects a string argument, got {other}"),
    }
}

/// Returns `out` as a scalar when every argument was a scalar, so constant folding keeps working.
pub(crate) fn same_shape(args: &[ColumnarValue], out: ArrayRef) -> Result<ColumnarValue> {
    if args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_))) {
        Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?))
    } else {
        Ok(ColumnarValue::Array(out))
    }
}

/// `f(text)` or `f(text, second)`, strings of any encoding.
pub(crate) fn string_with_optional(second: TypeSignatureClass) -> Signature {
    let string = || Coercion::new_exact(TypeSignatureClass::Native(logical_string()));
    Signature::one_of(
        vec![
            TypeSignature::Coercible(vec![string()]),
            TypeSignature::Coercible(vec![string(), Coercion::new_exact(second)]),
        ],
        Volatility::Immutable,
    )
}

/// `array` as `Utf8`, whatever string encoding it came in; an error naming `name` otherwise.
pub(crate) fn utf8(name: &str, array: &ArrayRef) -> Result<ArrayRef> {
    match array.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => {
            Ok(arrow::compute::cast(array, &DataType::Utf8)?)
        }
        other => exec_err!("{name} expects strings, got {other}"),
    }
}

/// Whether row `i` passes an aggregate's `FILTER (WHERE ...)`, if it has one.
pub(crate) fn kept(opt_filter: Option<&arrow::array::BooleanArray>, i: usize) -> bool {
    opt_filter.is_none_or(|f| f.is_valid(i) && f.value(i))
}

/// How many rows ahead a batch prefetches: enough misses in flight to cover the latency
/// of memory, few enough that the lines are still cached when used.
pub const AHEAD: usize = 16;

/// Starts loading the cache line of `item`. With millions of groups (or identifiers),
/// each row's state is a cache miss; prefetching rows ahead overlaps those misses instead
/// of stalling on each in turn.
#[inline]
pub fn prefetch<T>(item: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetching is a hint and never faults, whatever the address.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>((item as *const T).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = item;
}

/// Prefetches the state of the group [`AHEAD`] rows after row `i`, if that row counts.
#[inline]
pub(crate) fn prefetch_group<T>(
    groups: &[T],
    group_indices: &[usize],
    opt_filter: Option<&arrow::array::BooleanArray>,
    i: usize,
) {
    if let Some(&g) = group_indices.get(i + AHEAD) {
        if kept(opt_filter, i + AHEAD) {
            if let Some(state) = groups.get(g) {
                prefetch(state);
            }
        }
    }
}

/// Every distinct value of an accumulator, stored once; groups hold value ids, so a value
/// already seen allocates nothing.
#[derive(Debug, Default)]
pub(crate) struct Interner {
    hasher: DefaultHashBuilder,
    table: HashTable<u32>,
    values: Vec<Box<str>>,
}

impl Interner {
    pub(crate) fn id(&mut self, value: &str) -> u32 {
        let hash = self.hasher.hash_one(value);
        let values = &self.values;
        if let Some(&id) = self.table.find(hash, |&id| &*values[id as usize] == value) {
            return id;
        }
        let id = self.values.len() as u32;
        self.values.push(value.into());
        let (values, hasher) = (&self.values, &self.hasher);
        self.table
            .insert_unique(hash, id, |&id| hasher.hash_one(&*values[id as usize]));
        id
    }

    pub(crate) fn get(&self, id: u32) -> &str {
        &self.values[id as usize]
    }

    pub(crate) fn size(&self) -> usize {
        self.values.iter().map(|v| v.len() + 16).sum::<usize>() + self.table.capacity() * 8
    }
}
