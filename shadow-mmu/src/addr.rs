// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Address newtypes: guest-virtual addresses and guest frame numbers.
//!
//! Guest-physical addresses use vm-memory's [`GuestAddress`] so that they flow
//! straight into `GuestMemoryMmap` without conversion.

use std::fmt;

pub use vm_memory::GuestAddress;

/// Size of the base page (4 KiB) as a shift.
pub const PAGE_SHIFT: u32 = 12;
/// Size of the base page (4 KiB) in bytes.
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;

/// A guest-virtual (linear) address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Gva(pub u64);

impl Gva {
    /// The raw value.
    #[inline]
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// The address rounded down to a `1 << shift` boundary.
    #[inline]
    pub const fn align_down(self, shift: u32) -> Gva {
        Gva(self.0 & !((1u64 << shift) - 1))
    }
}

impl fmt::Display for Gva {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// A guest frame number: a guest-physical address shifted right by
/// [`PAGE_SHIFT`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Gfn(pub u64);

impl Gfn {
    /// The frame that contains `gpa`.
    #[inline]
    pub const fn containing(gpa: GuestAddress) -> Gfn {
        Gfn(gpa.0 >> PAGE_SHIFT)
    }

    /// The guest-physical address of the first byte of the frame.
    #[inline]
    pub const fn gpa(self) -> GuestAddress {
        GuestAddress(self.0 << PAGE_SHIFT)
    }

    /// The raw value.
    #[inline]
    pub const fn raw(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Gfn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "gfn {:#x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gfn_round_trip() {
        let gpa = GuestAddress(0x1234_5678);
        assert_eq!(Gfn::containing(gpa), Gfn(0x12345));
        assert_eq!(Gfn(0x12345).gpa(), GuestAddress(0x1234_5000));
        assert_eq!(Gva(0x40_1fff).align_down(21), Gva(0x40_0000));
    }
}
