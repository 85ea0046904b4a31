// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! What each leaf shadow entry was built from (KVM's
//! `shadowed_translation`): the guest frame, to find the entry's reverse-map
//! record when it changes, and the guest's rights, for syncs.
//!
//! Every 4 KiB-mapped guest page has one, so their size is a fixed share
//! of shadow memory: 32 bits per entry, half of a 64-bit packing. A frame
//! that does not fit (guest-physical addresses at or above 2 TiB) is kept in
//! a short per-page side list.

use crate::addr::Gfn;
use crate::arch::PteAccess;

/// A guest frame and rights, packed as `gfn << 3 | access`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Translation(u64);

impl Translation {
    /// Packs `gfn` and `access`.
    pub const fn new(gfn: Gfn, access: PteAccess) -> Translation {
        Translation((gfn.0 << 3) | access.bits() as u64)
    }

    /// The guest frame.
    pub const fn gfn(self) -> Gfn {
        Gfn(self.0 >> 3)
    }

    /// The rights.
    pub const fn access(self) -> PteAccess {
        PteAccess::from_bits_truncate((self.0 & 7) as u8)
    }
}

/// Marks an entry whose translation is in the side list.
const FAR: u32 = u32::MAX;

/// The translations of one shadow page's entries.
#[derive(Clone, Debug, Default)]
pub struct Translations {
    near: Box<[u32]>,
    /// (entry, translation) for entries marked [`FAR`].
    far: Vec<(u16, Translation)>,
}

impl Translations {
    /// Bytes per entry outside the side list (for memory accounting).
    #[cfg(feature = "test-utils")]
    pub const BYTES_PER_ENTRY: usize = std::mem::size_of::<u32>();

    /// `entries` default translations.
    pub fn new(entries: usize) -> Translations {
        Translations {
            near: vec![0; entries].into_boxed_slice(),
            far: Vec::new(),
        }
    }

    /// The translation of entry `index`, if the page has that entry.
    #[inline]
    pub fn get(&self, index: usize) -> Option<Translation> {
        let v = *self.near.get(index)?;
        if v != FAR {
            return Some(Translation(u64::from(v)));
        }
        self.far
            .iter()
            .find(|&&(i, _)| usize::from(i) == index)
            .map(|&(_, t)| t)
    }

    /// Records `t` for entry `index`; nothing if the page has no such entry.
    #[inline]
    pub fn set(&mut self, index: usize, t: Translation) {
        let Some(slot) = self.near.get_mut(index) else {
            return;
        };
        let was_far = *slot == FAR;
        match u32::try_from(t.0) {
            Ok(v) if v != FAR => {
                *slot = v;
                if was_far {
                    self.far.retain(|&(i, _)| usize::from(i) != index);
                }
            }
            _ => {
                *slot = FAR;
                let i = index as u16;
                match self.far.iter_mut().find(|(j, _)| *j == i) {
                    Some(entry) => entry.1 = t,
                    None => self.far.push((i, t)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_and_far_round_trip() {
        let mut ts = Translations::new(512);
        let all = PteAccess::all();
        let cases = [
            (0, Translation::new(Gfn(0), PteAccess::empty())),
            (1, Translation::new(Gfn((1 << 29) - 2), all)),
            // 2^29 - 1 with every right packs to the marker itself.
            (2, Translation::new(Gfn((1 << 29) - 1), all)),
            (3, Translation::new(Gfn(1 << 29), PteAccess::WRITE)),
            (511, Translation::new(Gfn((1 << 40) - 1), all)),
        ];
        for &(i, t) in &cases {
            ts.set(i, t);
        }
        for &(i, t) in &cases {
            assert_eq!(ts.get(i), Some(t), "entry {i}");
        }
        assert_eq!(ts.far.len(), 3);
        // Far back to near frees the side entry; far to far replaces it.
        ts.set(2, Translation::new(Gfn(5), all));
        ts.set(3, Translation::new(Gfn(1 << 35), all));
        assert_eq!(ts.get(2), Some(Translation::new(Gfn(5), all)));
        assert_eq!(ts.get(3), Some(Translation::new(Gfn(1 << 35), all)));
        assert_eq!(ts.far.len(), 2);
        assert_eq!(ts.get(512), None);
        ts.set(512, Translation::default());
        assert_eq!(ts.get(4), Some(Translation::default()));
    }
}
