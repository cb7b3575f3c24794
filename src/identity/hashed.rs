//! Identifiers keyed by a 128-bit hash of their text: two 64-bit hashes under independent
//! seeds drawn per process. Reading looks tens of millions of identifiers up; a table of
//! inline 128-bit keys costs one cache miss per lookup, where a table of strings costs a
//! second one to compare the text. Two of a run's n identifiers share a key with
//! probability about n² / 2¹²⁹ (10⁻²⁵ for 10 million), and as the seeds are secret, no
//! one can choose values that collide.

use std::hash::{BuildHasher, Hasher};

use foldhash::quality::FixedState;
use hashbrown::HashMap;

/// A map from identifier keys: the key is already a uniform hash, so its low bits index
/// the table as they are.
pub type KeyMap<V> = HashMap<u128, V, Prehashed>;

#[derive(Debug, Clone, Copy, Default)]
pub struct Prehashed;

impl BuildHasher for Prehashed {
    type Hasher = PrehashedHasher;

    fn build_hasher(&self) -> PrehashedHasher {
        PrehashedHasher(0)
    }
}

#[derive(Debug, Default)]
pub struct PrehashedHasher(u64);

impl Hasher for PrehashedHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u128 keys are hashed here; anything else is folded in, for correctness.
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0 ^ u64::from_le_bytes(word)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u128(&mut self, key: u128) {
        self.0 = key as u64 ^ (key >> 64) as u64;
    }
}

/// The keys of one graph: the same seed for every part read into it.
#[derive(Debug, Clone, Copy)]
pub struct KeyHasher {
    high: FixedState,
    low: FixedState,
}

impl Default for KeyHasher {
    fn default() -> Self {
        Self {
            high: FixedState::with_seed(rand::random()),
            low: FixedState::with_seed(rand::random()),
        }
    }
}

impl KeyHasher {
    pub fn key(&self, value: &str) -> u128 {
        let (high, low) = (self.high.hash_one(value), self.low.hash_one(value));
        (u128::from(high) << 64) | u128::from(low)
    }
}
