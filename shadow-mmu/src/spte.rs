// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Shadow page-table entries: real x86-64 entries that the CPU walks.
//!
//! Links between shadow pages grant every right; a leaf carries the rights
//! of the whole guest walk, so the CPU's AND over the levels gives exactly
//! the leaf's rights. Accessed is preset (and dirty with writable) so that
//! the CPU never has to write to a shadow table. A leaf's software bits
//! (9-11, which the CPU ignores) keep the rights the guest's own walk
//! granted, of which write protection and dirty tracking may hold some
//! back.

use crate::arch::PteAccess;
use crate::pte::{
    PTE64_ADDR_MASK, PTE_A, PTE_D, PTE_P, PTE_PKEY_SHIFT, PTE_PS, PTE_U, PTE_W, PTE_XD,
};

/// An entry that links to the shadow page at shadow-physical `child`.
#[inline]
pub const fn link(child: u64) -> u64 {
    (child & PTE64_ADDR_MASK) | PTE_P | PTE_W | PTE_U | PTE_A
}

/// Where a leaf keeps the guest's rights ([`PteAccess`] bits), in bits the
/// CPU ignores in every leaf.
const GUEST_ACCESS_SHIFT: u32 = 9;

/// A leaf at `level` mapping shadow-physical `frame` with `rights` and
/// protection key `pkey` (which the CPU checks against PKRU/PKRS), for a
/// guest walk that granted `guest`.
#[inline]
pub fn leaf(frame: u64, rights: PteAccess, guest: PteAccess, pkey: u8, level: u8) -> u64 {
    let mut spte = (frame & PTE64_ADDR_MASK)
        | PTE_P
        | PTE_A
        | (u64::from(pkey & 0xf) << PTE_PKEY_SHIFT)
        | (u64::from(guest.bits()) << GUEST_ACCESS_SHIFT);
    if rights.contains(PteAccess::WRITE) {
        spte |= PTE_W | PTE_D;
    }
    if rights.contains(PteAccess::USER) {
        spte |= PTE_U;
    }
    if !rights.contains(PteAccess::EXEC) {
        spte |= PTE_XD;
    }
    if level > 1 {
        spte |= PTE_PS;
    }
    spte
}

/// Whether `spte` is present.
#[inline]
pub const fn is_present(spte: u64) -> bool {
    spte & PTE_P != 0
}

/// Whether `spte`, found at `level`, is a leaf.
#[inline]
pub const fn is_leaf(spte: u64, level: u8) -> bool {
    level == 1 || spte & PTE_PS != 0
}

/// The shadow-physical address an entry points to.
#[inline]
pub const fn target(spte: u64) -> u64 {
    spte & PTE64_ADDR_MASK
}

/// The protection key of a leaf.
#[inline]
pub const fn pkey(spte: u64) -> u8 {
    ((spte >> PTE_PKEY_SHIFT) & 0xf) as u8
}

/// The rights a leaf grants.
#[inline]
pub fn rights(spte: u64) -> PteAccess {
    let mut r = PteAccess::empty();
    if spte & PTE_W != 0 {
        r |= PteAccess::WRITE;
    }
    if spte & PTE_U != 0 {
        r |= PteAccess::USER;
    }
    if spte & PTE_XD == 0 {
        r |= PteAccess::EXEC;
    }
    r
}

/// The rights the guest's walk granted when the leaf was built.
#[inline]
pub fn guest_access(spte: u64) -> PteAccess {
    PteAccess::from_bits_truncate((spte >> GUEST_ACCESS_SHIFT) as u8 & 7)
}

/// Whether replacing `old` by `new` can widen nothing a CPU may have cached
/// from `old`, i.e. whether a TLB flush is needed after the change.
#[inline]
pub fn needs_flush(old: u64, new: u64) -> bool {
    if !is_present(old) {
        return false;
    }
    if !is_present(new) || target(old) != target(new) || (old ^ new) & PTE_PS != 0 {
        return true;
    }
    // Rights only grew: stale entries are merely stricter than the new one.
    !rights(new).contains(rights(old))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves() {
        let s = leaf(0x5000, PteAccess::USER, PteAccess::empty(), 0, 1);
        assert_eq!(s, 0x5000 | PTE_P | PTE_A | PTE_U | PTE_XD);
        assert_eq!(rights(s), PteAccess::USER);
        assert_eq!(guest_access(s), PteAccess::empty());
        // The guest's rights in bits 9-11, beside narrower shadow rights.
        let s = leaf(0x5000, PteAccess::USER, PteAccess::all(), 0, 1);
        assert_eq!(s, 0x5000 | PTE_P | PTE_A | PTE_U | PTE_XD | 0xe00);
        assert_eq!(guest_access(s), PteAccess::all());
        assert_eq!(rights(s), PteAccess::USER);
        let s = leaf(0x20_0000, PteAccess::all(), PteAccess::all(), 3, 2);
        assert!(is_leaf(s, 2) && !is_leaf(link(0x1000), 2));
        assert_eq!(rights(s), PteAccess::all());
        assert_eq!(pkey(s), 3);
        assert!(needs_flush(s, 0));
        assert!(needs_flush(
            s,
            leaf(0x20_0000, PteAccess::USER, PteAccess::USER, 3, 2)
        ));
        assert!(!needs_flush(
            leaf(0x20_0000, PteAccess::USER, PteAccess::USER, 3, 2),
            s
        ));
        assert!(!needs_flush(0, s));
    }
}
