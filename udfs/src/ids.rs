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
    id_of_hash(fresh_hash(id_type, value, salt))
}

/// The hash [`fresh_id`] shows.
pub fn fresh_hash(id_type: &str, value: &str, salt: u32) -> u64 {
    if salt == 0 {
        fnv1a(&[id_type, value])
    } else {
        fnv1a(&[id_type, value, &salt.to_string()])
    }
}

/// The id showing hash `h`.
pub fn id_of_hash(h: u64) -> String {
    format!("c360_{h:016x}")
}

/// The hash an id shows, if it is one [`id_of_hash`] writes.
pub fn hash_of_id(id: &str) -> Option<u64> {
    let hex = id.strip_prefix("c360_")?;
    let lower_hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
    (hex.len() == 16 && hex.bytes().all(lower_hex))
        .then(|| u64::from_str_radix(hex, 16).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::{fresh_hash, fresh_id, hash_of_id, id_of_hash};

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

    #[test]
    fn ids_and_hashes_round_trip() {
        let h = fresh_hash("email", "a@x.com", 3);
        assert_eq!(hash_of_id(&fresh_id("email", "a@x.com", 3)), Some(h));
        assert_eq!(id_of_hash(h), fresh_id("email", "a@x.com", 3));
        assert_eq!(hash_of_id(&id_of_hash(0)), Some(0));
        // Only the exact spelling: no other text shows a hash.
        for id in [
            "c360_0152D5C5538D0364",
            "c360_+152d5c5538d0364",
            "c360_0152d5c5538d036",
            "x360_0152d5c5538d0364",
            "c360_0152d5c5538d03640",
            "c360_p1",
        ] {
            assert_eq!(hash_of_id(id), None, "{id}");
        }
    }
}
