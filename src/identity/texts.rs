//! Many short strings in one buffer.

use std::ops::{Index, Range};

/// Strings appended end to end in one buffer: tens of millions of identifiers cost two
/// vectors rather than an allocation (and its bookkeeping) each.
#[derive(Debug, Default, Clone)]
pub struct Texts {
    text: String,
    /// Where each string ends in `text`.
    ends: Vec<u64>,
}

impl Texts {
    pub fn push(&mut self, s: &str) {
        self.text.push_str(s);
        self.ends.push(self.text.len() as u64);
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The strings `range`, in order.
    pub fn range(&self, range: Range<usize>) -> impl Iterator<Item = &str> {
        range.map(move |i| &self[i])
    }
}

impl Index<usize> for Texts {
    type Output = str;

    fn index(&self, i: usize) -> &str {
        let end = self.ends[i] as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        // Checking the char boundaries would read the bytes at both ends: a cache miss
        // apiece when sorts and lookups jump across millions of strings.
        // SAFETY: every end was pushed right after a whole `&str`, so `start..end` is a
        // range of whole chars inside `text`.
        unsafe { self.text.get_unchecked(start..end) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_strings_end_to_end() {
        let mut t = Texts::default();
        assert!(t.is_empty());
        for s in ["a", "", "héllo", "x"] {
            t.push(s);
        }
        assert_eq!(t.len(), 4);
        assert_eq!(&t[0], "a");
        assert_eq!(&t[1], "");
        assert_eq!(&t[2], "héllo");
        assert_eq!(t.range(0..4).collect::<Vec<_>>(), ["a", "", "héllo", "x"]);
        assert_eq!(t.range(1..3).collect::<Vec<_>>(), ["", "héllo"]);
    }
}
