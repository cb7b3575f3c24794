//! Canonical person ids shared by every stitching surface: `c360_` and a 64-bit FNV-1a
//! hash of an identifier, stable across platforms, releases and runs.

/// 64-bit FNV-1a of `parts`, separated so `["ab", "c"]` and `["a", "bc"]` differ.
pub fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            h ^= 0xff;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        for b in part.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The id of a cluster whose earliest identifier is `id_type:value`. A non-zero `salt`
/// gives another id for the same identifier, to step around collisions.
pub fn fresh_id(id_type: &str, value: &str, salt: u32) -> String {
    let h = if salt == 0 {
        fnv1a(&[id_type, value])
    } else {
        fnv1a(&[id_type, value, &salt.to_string()])
    };
    format!("c360_{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::fresh_id;

    #[test]
    fn stable_and_distinct() {
        // Pinned: changing the hash would change every person's id.
        assert_eq!(fresh_id("email", "a@x.com", 0), "c360_0152d5c5538d0364");
        assert_ne!(
            fresh_id("email", "a@x.com", 0),
            fresh_id("email", "a@x.com", 1)
        );
        assert_ne!(fresh_id("user_id", "ab", 0), fresh_id("user_ida", "b", 0));
    }
}
