// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A fast keyed hash for the MMU's frame-indexed maps.
//!
//! The maps keyed by guest frame (the reverse map's directory, shadow pages
//! by guest table) are probed on every fault, where SipHash's cost shows.
//! Their keys are guest-chosen, so a fixed multiplicative hash would let a
//! guest line its page tables up in one bucket chain: the hash here mixes
//! each word with a per-map random seed through the splitmix64 finalizer,
//! which is a few cycles and leaves a guest no way to predict buckets.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

/// Builds [`FrameHasher`]s seeded once per map from the OS's randomness.
#[derive(Clone, Debug)]
pub struct FrameHashBuilder {
    seed: u64,
}

impl Default for FrameHashBuilder {
    fn default() -> FrameHashBuilder {
        FrameHashBuilder {
            seed: RandomState::new().hash_one(0x5ad0_u64),
        }
    }
}

impl BuildHasher for FrameHashBuilder {
    type Hasher = FrameHasher;

    fn build_hasher(&self) -> FrameHasher {
        FrameHasher { state: self.seed }
    }
}

/// The hasher of [`FrameHashBuilder`]: one finalizer round per word.
#[derive(Clone, Debug)]
pub struct FrameHasher {
    state: u64,
}

#[inline]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Hasher for FrameHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_u8(&mut self, v: u8) {
        self.write_u64(u64::from(v));
    }

    #[inline]
    fn write_u16(&mut self, v: u16) {
        self.write_u64(u64::from(v));
    }

    #[inline]
    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }

    #[inline]
    fn write_u64(&mut self, v: u64) {
        self.state = mix(self
            .state
            .wrapping_add(v)
            .wrapping_add(0x9e37_79b9_7f4a_7c15));
    }

    #[inline]
    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_and_spreading() {
        let a = FrameHashBuilder::default();
        let b = FrameHashBuilder { seed: a.seed ^ 1 };
        assert_ne!(a.hash_one(7u64), b.hash_one(7u64));
        assert_eq!(a.hash_one(7u64), a.hash_one(7u64));
        // Keys a guest could line up (same low bits, 1 GiB apart) spread
        // over the low bits hashbrown indexes with.
        let buckets: std::collections::HashSet<u64> =
            (0..1024u64).map(|k| a.hash_one(k << 18) & 1023).collect();
        assert!(buckets.len() > 500, "{} distinct buckets", buckets.len());
    }
}
