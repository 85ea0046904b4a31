// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The guest frame each leaf shadow entry maps (KVM keeps it per entry in
//! `shadowed_translation`), needed to find the entry's reverse-map record
//! when it changes.
//!
//! Guest RAM sits at its own address in shadow-physical space for almost
//! every entry, so the guest frame is read back from the entry itself and
//! nothing is stored per entry: a 4 KiB-mapped GiB costs its 2 MiB of
//! shadow tables and no more. Only entries whose shadow frame is not the
//! guest frame's address (a [`FrameMap`](crate::FrameMap) that moves RAM,
//! the hidden region's sink page) are listed, per page. The rights the
//! guest's walk granted, which the shadow entry's own bits may narrow, are
//! in the entry's software bits ([`spte::guest_access`]).

use crate::addr::Gfn;
use crate::spte;

/// The leaf entries of one shadow page whose guest frame is not the one
/// their shadow frame names.
#[derive(Clone, Debug, Default)]
pub struct GuestFrames {
    moved: Vec<(u16, Gfn)>,
}

impl GuestFrames {
    /// The guest frame leaf entry `index`, holding `spte`, maps.
    #[inline]
    pub fn gfn(&self, index: usize, spte: u64) -> Gfn {
        self.moved
            .iter()
            .find(|&&(i, _)| usize::from(i) == index)
            .map_or(Gfn(spte::target(spte) >> crate::PAGE_SHIFT), |&(_, g)| g)
    }

    /// Leaf entry `index` now maps `gfn` through shadow frame `frame`.
    #[inline]
    pub fn set(&mut self, index: usize, gfn: Gfn, frame: u64) {
        let at = self
            .moved
            .iter()
            .position(|&(i, _)| usize::from(i) == index);
        match (at, frame == gfn.gpa().0) {
            (Some(at), true) => {
                self.moved.swap_remove(at);
            }
            (Some(at), false) => self.moved[at].1 = gfn,
            (None, false) => self.moved.push((index as u16, gfn)),
            (None, true) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::PteAccess;

    #[test]
    fn frames_are_read_back_unless_moved() {
        let mut f = GuestFrames::default();
        let leaf = |frame: u64| spte::leaf(frame, PteAccess::all(), PteAccess::all(), 0, 1);
        f.set(3, Gfn(0x1234), 0x123_4000);
        assert_eq!(f.moved.len(), 0);
        assert_eq!(f.gfn(3, leaf(0x123_4000)), Gfn(0x1234));
        // A sink page: the guest frame is elsewhere.
        f.set(4, Gfn(0xfff_ff00), 0x5000);
        f.set(511, Gfn(1 << 39), 0x6000);
        assert_eq!(f.moved.len(), 2);
        assert_eq!(f.gfn(4, leaf(0x5000)), Gfn(0xfff_ff00));
        assert_eq!(f.gfn(511, leaf(0x6000)), Gfn(1 << 39));
        // Moved to moved replaces; moved back to its own frame drops it.
        f.set(4, Gfn(7), 0x5000);
        assert_eq!(f.gfn(4, leaf(0x5000)), Gfn(7));
        f.set(4, Gfn(0x5), 0x5000);
        assert_eq!(f.moved.len(), 1);
        assert_eq!(f.gfn(4, leaf(0x5000)), Gfn(5));
        assert_eq!(f.gfn(511, leaf(0x6000)), Gfn(1 << 39));
    }
}
