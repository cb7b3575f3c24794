//! Building blocks shared by the functions: string-array mapping over every Arrow
//! string encoding, so each function states only its per-value rule.

use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::{DefaultHashBuilder, HashTable};

use arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, ListArray, StringArray, StringArrayType, StringBuilder,
};
use arrow::datatypes::{DataType, Int64Type};
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

/// An optional boolean argument (`what` of function `name`), one flag per row: absent or
/// NULL reads as false.
pub(crate) fn flags(
    name: &str,
    what: &str,
    array: Option<&ArrayRef>,
) -> Result<impl Fn(usize) -> bool> {
    let flags = match array {
        Some(a) if a.data_type() == &DataType::Boolean => Some(a.as_boolean().clone()),
        Some(a) if a.data_type() == &DataType::Null => None,
        Some(a) => return exec_err!("{name}: {what} must be a boolean, got {}", a.data_type()),
        None => None,
    };
    Ok(move |i| flags.as_ref().is_some_and(|f| f.is_valid(i) && f.value(i)))
}

/// `array` as `Utf8`, whatever string encoding it came in; an error naming `name` otherwise.
pub(crate) fn utf8(name: &str, array: &ArrayRef) -> Result<ArrayRef> {
    strings_as(name, array, &DataType::Utf8)
}

/// `array` as the string type `to`, whatever string encoding it came in; an error naming
/// `name` otherwise.
pub(crate) fn strings_as(name: &str, array: &ArrayRef, to: &DataType) -> Result<ArrayRef> {
    match array.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => {
            Ok(arrow::compute::cast(array, to)?)
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

/// Prefetches group states for row `i` of a batch, in two stages: the state of the group
/// `2 * AHEAD` rows on, then, `AHEAD` rows on (its state cached by now), the heap data the
/// state points to, from `heap`. Rows a filter drops are skipped.
#[inline]
pub(crate) fn prefetch_group<T, H>(
    groups: &[T],
    group_indices: &[usize],
    opt_filter: Option<&arrow::array::BooleanArray>,
    i: usize,
    heap: impl Fn(&T) -> Option<*const H>,
) {
    let state = |row: usize| {
        let g = *group_indices.get(row)?;
        kept(opt_filter, row).then(|| groups.get(g)).flatten()
    };
    if let Some(s) = state(i + 2 * AHEAD) {
        prefetch(s);
    }
    if let Some(h) = state(i + AHEAD).and_then(heap) {
        // SAFETY: never dereferenced; prefetching any address is allowed.
        prefetch(unsafe { &*h });
    }
}

/// A state of two aligned lists per row, strings and `i64`s (values with their times, or
/// with their counts), read in place: a row's items are ranges of the child arrays, where
/// `ListArray::value` would slice (and allocate) per row.
pub(crate) struct PairedLists<'a> {
    name: &'static str,
    what: &'static str,
    lists: &'a ListArray,
    strings: &'a StringArray,
    numbers: &'a Int64Array,
    number_offsets: &'a [i32],
}

impl<'a> PairedLists<'a> {
    /// `states` as `(List<Utf8>, List<Int64>)`; `name` and `what` (the numbers) word errors.
    pub(crate) fn new(name: &'static str, what: &'static str, states: &'a [ArrayRef]) -> Self {
        let (lists, numbers) = (states[0].as_list::<i32>(), states[1].as_list::<i32>());
        Self {
            name,
            what,
            lists,
            strings: lists.values().as_string::<i32>(),
            numbers: numbers.values().as_primitive::<Int64Type>(),
            number_offsets: numbers.value_offsets(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.lists.len()
    }

    /// Row `i`'s (string, number) pairs; none for a NULL row.
    pub(crate) fn row(&self, i: usize) -> Result<impl Iterator<Item = (&'a str, i64)> + 'a> {
        let offsets = self.lists.value_offsets();
        let (from, to, at) = if self.lists.is_null(i) {
            (0, 0, 0)
        } else {
            let (from, to) = (offsets[i] as usize, offsets[i + 1] as usize);
            let at = self.number_offsets[i] as usize;
            let end = self.number_offsets[i + 1] as usize;
            if to - from != end - at {
                return exec_err!(
                    "{}: corrupt state, {} values but {} {}",
                    self.name,
                    to - from,
                    end - at,
                    self.what
                );
            }
            (from, to, at)
        };
        let (strings, numbers) = (self.strings, self.numbers);
        Ok((from..to)
            .zip(at..)
            .map(move |(j, k)| (strings.value(j), numbers.value(k))))
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

/// A stream of the batches `batches` gives once it is done: for operators that must see
/// all their input before they emit anything.
pub fn batches_when_done(
    schema: arrow::datatypes::SchemaRef,
    batches: impl std::future::Future<Output = Result<Vec<arrow::array::RecordBatch>>> + Send + 'static,
) -> datafusion::execution::SendableRecordBatchStream {
    use futures::TryStreamExt;
    let stream = futures::stream::once(batches)
        .map_ok(|batches| futures::stream::iter(batches.into_iter().map(Ok)))
        .try_flatten();
    Box::pin(datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(schema, stream))
}
