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

    /// The address with bit `top_bit` copied into every bit above it: the
    /// canonical form for a linear-address width of `top_bit + 1` bits.
    #[inline]
    pub const fn sign_extend(self, top_bit: u32) -> Gva {
        let shift = 63 - top_bit;
        Gva((((self.0 << shift) as i64) >> shift) as u64)
    }

    /// Whether the address is canonical for `top_bit + 1` bits (47 for
    /// 4-level paging, 56 for 5-level).
    #[inline]
    pub const fn is_canonical(self, top_bit: u32) -> bool {
        self.sign_extend(top_bit).0 == self.0
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

    #[test]
    fn canonical_addresses() {
        // SDM Vol. 1 3.3.7.1: bits 63..48 (4-level) or 63..57 (5-level)
        // equal bit 47 or bit 56.
        assert!(Gva(0x0000_7fff_ffff_f000).is_canonical(47));
        assert!(Gva(0xffff_8000_0000_0000).is_canonical(47));
        assert!(!Gva(0x0000_8000_0000_0000).is_canonical(47));
        assert!(Gva(0x0000_8000_0000_0000).is_canonical(56));
        assert!(!Gva(0x0100_0000_0000_0000).is_canonical(56));
        assert_eq!(
            Gva(0x8000_0000_0000).sign_extend(47),
            Gva(0xffff_8000_0000_0000)
        );
        assert_eq!(Gva(0x1ff_0000_0000_1000).sign_extend(47), Gva(0x1000));
    }
}
