// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The role of a shadow page: everything besides the guest frame that decides
//! what its entries mean. Two shadow pages of one guest table with different
//! roles hold different entries, so the role is part of the lookup key.

use std::fmt;

use crate::arch::{Cr0, Cr4, PagingMode, PagingState, PteAccess};

/// A shadow page's role, packed into 32 bits (KVM's `kvm_mmu_page_role`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Role(u32);

const LEVEL_MASK: u32 = 0x7;
const DIRECT: u32 = 1 << 3;
const ACCESS_SHIFT: u32 = 4;
const ACCESS_MASK: u32 = 0x7 << ACCESS_SHIFT;
const QUADRANT_SHIFT: u32 = 7;
const QUADRANT_MASK: u32 = 0x3 << QUADRANT_SHIFT;
const GPTE_4_BYTE: u32 = 1 << 9;
const CR0_WP: u32 = 1 << 10;
const SMEP_ANDNOT_WP: u32 = 1 << 11;
const SMAP_ANDNOT_WP: u32 = 1 << 12;
const EFER_NX: u32 = 1 << 13;
const SYNTHETIC: u32 = 1 << 14;
const CR4_PSE: u32 = 1 << 15;
const PAE_GUEST: u32 = 1 << 16;
const LA57: u32 = 1 << 21;
const PKEY_SHIFT: u32 = 17;
const PKEY_MASK: u32 = 0xf << PKEY_SHIFT;

impl Role {
    /// The CPU bits of `state` that change what a guest entry grants, with
    /// level 0 and no access yet.
    pub fn base(state: &PagingState) -> Role {
        let mut bits = 0;
        let wp = state.cr0.contains(Cr0::WP);
        if wp {
            bits |= CR0_WP;
        }
        if !wp && state.cr4.contains(Cr4::SMEP) {
            bits |= SMEP_ANDNOT_WP;
        }
        if !wp && state.cr4.contains(Cr4::SMAP) {
            bits |= SMAP_ANDNOT_WP;
        }
        if state.nx_enabled() {
            bits |= EFER_NX;
        }
        match state.mode() {
            PagingMode::Bits32 => {
                bits |= GPTE_4_BYTE;
                if state.cr4.contains(Cr4::PSE) {
                    bits |= CR4_PSE;
                }
            }
            PagingMode::Pae => bits |= PAE_GUEST,
            // A 5-level guest's level-4 tables must not share pages with a
            // 4-level guest's roots, which hold the hypervisor hole.
            PagingMode::Level5 => bits |= LA57,
            _ => {}
        }
        Role(bits)
    }

    /// Level of the page: 1 holds 4 KiB leaves, 4 or 5 is a root.
    pub const fn level(self) -> u8 {
        (self.0 & LEVEL_MASK) as u8
    }

    /// The same role at `level`.
    pub const fn with_level(self, level: u8) -> Role {
        Role((self.0 & !LEVEL_MASK) | (level as u32 & LEVEL_MASK))
    }

    /// A direct page maps a contiguous guest-physical range (under a guest
    /// large page, or with paging off) instead of shadowing a guest table.
    pub const fn direct(self) -> bool {
        self.0 & DIRECT != 0
    }

    /// The same role, direct or not.
    pub const fn with_direct(self, direct: bool) -> Role {
        if direct {
            Role(self.0 | DIRECT)
        } else {
            Role(self.0 & !DIRECT)
        }
    }

    /// Rights granted by the guest entries above this page, ANDed.
    pub const fn access(self) -> PteAccess {
        PteAccess::from_bits_truncate(((self.0 & ACCESS_MASK) >> ACCESS_SHIFT) as u8)
    }

    /// The same role with `access`.
    pub const fn with_access(self, access: PteAccess) -> Role {
        Role((self.0 & !ACCESS_MASK) | ((access.bits() as u32) << ACCESS_SHIFT))
    }

    /// Which part of a 4-byte-entry guest table this page shadows: a 32-bit
    /// page table (1024 entries, 4 MiB) needs two shadow pages, a 32-bit page
    /// directory (4 GiB) four.
    pub const fn quadrant(self) -> u8 {
        ((self.0 & QUADRANT_MASK) >> QUADRANT_SHIFT) as u8
    }

    /// The same role with `quadrant`.
    pub const fn with_quadrant(self, quadrant: u8) -> Role {
        Role((self.0 & !QUADRANT_MASK) | (((quadrant & 3) as u32) << QUADRANT_SHIFT))
    }

    /// The guest table has 4-byte entries (32-bit paging).
    pub const fn has_4_byte_gpte(self) -> bool {
        self.0 & GPTE_4_BYTE != 0
    }

    /// The guest runs with CR0.WP set.
    pub const fn cr0_wp(self) -> bool {
        self.0 & CR0_WP != 0
    }

    /// CR4.SMEP and not CR0.WP.
    pub const fn smep_andnot_wp(self) -> bool {
        self.0 & SMEP_ANDNOT_WP != 0
    }

    /// CR4.SMAP and not CR0.WP.
    pub const fn smap_andnot_wp(self) -> bool {
        self.0 & SMAP_ANDNOT_WP != 0
    }

    /// The XD bit is in use.
    pub const fn efer_nx(self) -> bool {
        self.0 & EFER_NX != 0
    }

    /// CR4.PSE, which makes PS meaningful in a 32-bit page directory.
    pub const fn cr4_pse(self) -> bool {
        self.0 & CR4_PSE != 0
    }

    /// The guest uses 5-level paging.
    pub const fn la57(self) -> bool {
        self.0 & LA57 != 0
    }

    /// The guest uses PAE paging (whose entries reserve bits 62:52).
    pub const fn pae_guest(self) -> bool {
        self.0 & PAE_GUEST != 0
    }

    /// Protection key of the guest large page a direct page maps (its
    /// leaves carry the key, so pages under differently keyed guest pages
    /// must not be shared).
    pub const fn pkey(self) -> u8 {
        ((self.0 & PKEY_MASK) >> PKEY_SHIFT) as u8
    }

    /// The same role with protection key `pkey`.
    pub const fn with_pkey(self, pkey: u8) -> Role {
        Role((self.0 & !PKEY_MASK) | (((pkey & 0xf) as u32) << PKEY_SHIFT))
    }

    /// A synthetic page sits above the guest's own top table (the upper
    /// levels of a 32-bit or PAE guest's root); it shadows no guest table.
    pub const fn synthetic(self) -> bool {
        self.0 & SYNTHETIC != 0
    }

    /// The same role, synthetic.
    pub const fn as_synthetic(self) -> Role {
        Role(self.0 | SYNTHETIC)
    }

    /// A paging state that walks with this role's semantics (for reading
    /// reserved-bit masks and rights of guest entries outside a walk).
    pub fn paging_state(self, maxphyaddr: u8, gbpages: bool, pse36: bool) -> PagingState {
        use crate::arch::Efer;
        let mut s = PagingState {
            cr0: Cr0::PE | Cr0::PG,
            maxphyaddr,
            gbpages,
            pse36,
            ..Default::default()
        };
        if self.cr0_wp() {
            s.cr0 |= Cr0::WP;
        }
        if self.efer_nx() {
            s.efer |= Efer::NXE;
        }
        if self.has_4_byte_gpte() {
            if self.cr4_pse() {
                s.cr4 |= Cr4::PSE;
            }
        } else {
            s.cr4 |= Cr4::PAE;
            if !self.pae_guest() {
                s.efer |= Efer::LME | Efer::LMA;
            }
            if self.la57() {
                s.cr4 |= Cr4::LA57;
            }
        }
        s
    }
}

impl fmt::Debug for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Role")
            .field("level", &self.level())
            .field("direct", &self.direct())
            .field("synthetic", &self.synthetic())
            .field("access", &self.access())
            .field("quadrant", &self.quadrant())
            .field("4_byte_gpte", &self.has_4_byte_gpte())
            .field("cr0_wp", &self.cr0_wp())
            .field("smep_andnot_wp", &self.smep_andnot_wp())
            .field("smap_andnot_wp", &self.smap_andnot_wp())
            .field("efer_nx", &self.efer_nx())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::Efer;

    #[test]
    fn fields_do_not_overlap() {
        let s = PagingState {
            cr0: Cr0::PE | Cr0::PG,
            cr4: Cr4::PAE | Cr4::SMEP | Cr4::SMAP,
            efer: Efer::LMA | Efer::LME | Efer::NXE,
            ..Default::default()
        };
        let r = Role::base(&s)
            .with_level(3)
            .with_direct(true)
            .with_access(PteAccess::USER | PteAccess::EXEC)
            .with_quadrant(2);
        assert_eq!(r.level(), 3);
        assert!(r.direct() && r.smep_andnot_wp() && r.smap_andnot_wp() && r.efer_nx());
        assert!(!r.cr0_wp() && !r.has_4_byte_gpte() && !r.synthetic());
        assert_eq!(r.access(), PteAccess::USER | PteAccess::EXEC);
        assert_eq!(r.quadrant(), 2);
        assert_eq!(r.with_level(1).level(), 1);
        assert_eq!(r.with_quadrant(0).quadrant(), 0);
        assert_eq!(r.paging_state(48, true, true).mode(), PagingMode::Level4);
    }
}
