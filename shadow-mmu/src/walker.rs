// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The guest page-table walker.
//!
//! Translates a guest-virtual address through the guest's own page tables
//! exactly as the CPU would (Intel SDM vol. 3, chapter 4): reserved bits at
//! every level, rights ANDed down the levels, the permission rules of
//! section 4.6 (CR0.WP, SMEP, SMAP, XD, protection keys) and the error code of
//! section 4.7. Accessed and dirty bits are set only once the access is known
//! to succeed, each with a compare-exchange on the guest entry; if another
//! writer changed an entry in the meantime the walk starts again, since what
//! it read may no longer be a translation the guest ever had.

use thiserror::Error;

use crate::addr::{Gfn, GuestAddress, Gva, PAGE_SHIFT};
use crate::arch::{
    Access, AccessKind, Cr0, Cr4, Efer, KeyRights, PagingMode, PagingState, PfErrorCode, PteAccess,
};
use crate::pte::{
    pae_pdpte_reserved, HostWindow, Pte32, Pte64, PteFormat, PteMemory, WalkMasks, PTE_A, PTE_D,
    PTE_P, PTE_PKEY_SHIFT, PTE_PS, PTE_U, PTE_W, PTE_XD,
};

/// How many times a walk restarts after losing an A/D compare-exchange
/// before it gives up. A guest that rewrites its tables this fast from
/// another vCPU gets [`WalkError::TooManyRetries`] rather than a VMM that
/// spins forever; the caller retries the instruction.
pub const MAX_WALK_RETRIES: u32 = 64;

/// Why a translation did not produce an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum WalkError {
    /// The CPU would raise #PF with this error code.
    #[error("page fault, error code {:#x}", .0.bits())]
    PageFault(PfErrorCode),
    /// The CPU would raise #GP: a non-canonical address, an address beyond
    /// the 32-bit linear space of a legacy mode, or (from
    /// [`load_pdptrs`]) a PDPTE with reserved bits.
    #[error("general protection fault")]
    GeneralProtection,
    /// Other writers changed the tables under the walk too many times.
    #[error("guest page tables changed under the walk {MAX_WALK_RETRIES} times")]
    TooManyRetries,
}

/// The record of a successful walk: every entry the CPU used, where it
/// lives, and what the translation grants. Shadow pages are built from it.
///
/// Arrays are indexed by `level - 1`; only `level..=root_level` are valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestWalk {
    /// The address that was translated.
    pub gva: Gva,
    /// The paging mode of the walk.
    pub mode: PagingMode,
    /// The level of the top table (2 to 5; 0 when paging is off).
    pub root_level: u8,
    /// The level of the leaf entry: 1 for a 4 KiB page, 2 for a 2 MiB or
    /// 4 MiB page, 3 for a 1 GiB page (0 when paging is off).
    pub level: u8,
    /// The entry used at each level, after the walk's own A/D update.
    /// 32-bit entries are zero-extended.
    pub ptes: [u64; 5],
    /// Where each entry lives in guest-physical memory (for PAE's level 3,
    /// the slot of the PDPT that CR3 pointed to when the PDPTRs were loaded).
    pub pte_gpas: [GuestAddress; 5],
    /// The frame of the table holding each entry.
    pub table_gfns: [Gfn; 5],
    /// The rights of the translation, ANDed over all levels.
    pub access: PteAccess,
    /// The guest-physical address `gva` translates to.
    pub gpa: GuestAddress,
    /// Size of the page the leaf maps.
    pub page_size: u64,
}

impl GuestWalk {
    /// The 4 KiB guest frame that holds the translated byte.
    #[inline]
    pub fn gfn(&self) -> Gfn {
        Gfn::containing(self.gpa)
    }

    /// The leaf entry.
    #[inline]
    pub fn leaf_pte(&self) -> u64 {
        self.ptes[usize::from(self.level.max(1)) - 1]
    }

    fn identity(gva: Gva) -> GuestWalk {
        GuestWalk {
            gva,
            mode: PagingMode::Off,
            root_level: 0,
            level: 0,
            ptes: [0; 5],
            pte_gpas: [GuestAddress(0); 5],
            table_gfns: [Gfn(0); 5],
            access: PteAccess::all(),
            gpa: GuestAddress(gva.0),
            page_size: 1 << PAGE_SHIFT,
        }
    }
}

/// Translates `gva` for `access` under `state`, setting accessed and dirty
/// bits in the guest's tables as the CPU would.
pub fn walk<M: PteMemory + ?Sized>(
    mem: &M,
    state: &PagingState,
    gva: Gva,
    access: Access,
) -> Result<GuestWalk, WalkError> {
    walk_with::<M, true, true>(mem, state, gva, access)
}

/// Like [`walk`], but leaves guest memory untouched: no A or D bit is set.
/// For inspection (debuggers, audits), never to build a mapping the guest
/// will use.
pub fn peek<M: PteMemory + ?Sized>(
    mem: &M,
    state: &PagingState,
    gva: Gva,
    access: Access,
) -> Result<GuestWalk, WalkError> {
    walk_with::<M, false, true>(mem, state, gva, access)
}

/// The translation of `gva` whatever the access: reserved bits and
/// not-present entries still fault, permissions are not checked and guest
/// memory is untouched. `access` in the result says what the translation
/// grants. For audits, which compare shadow entries against it.
pub fn translate<M: PteMemory + ?Sized>(
    mem: &M,
    state: &PagingState,
    gva: Gva,
) -> Result<GuestWalk, WalkError> {
    let any = Access::at_cpl(AccessKind::Read, 0);
    walk_with::<M, false, false>(mem, state, gva, any)
}

/// Translates `gva` to a guest-physical address (the seed's `gva_to_gpa`).
pub fn gva_to_gpa<M: PteMemory + ?Sized>(
    mem: &M,
    state: &PagingState,
    gva: Gva,
    access: Access,
) -> Result<GuestAddress, WalkError> {
    walk(mem, state, gva, access).map(|w| w.gpa)
}

/// Reads the four PAE PDPTEs from the table CR3 points to, as a `mov cr3`
/// (or a paging-mode change into PAE) does. A present PDPTE with a reserved
/// bit, or a PDPT that no RAM backs, is a #GP.
pub fn load_pdptrs<M: PteMemory + ?Sized>(
    mem: &M,
    state: &PagingState,
) -> Result<[u64; 4], WalkError> {
    let base = state.cr3 & 0xffff_ffe0;
    let rsvd = pae_pdpte_reserved(state);
    let mut pdptrs = [0u64; 4];
    for (i, slot) in pdptrs.iter_mut().enumerate() {
        let pdpte = mem
            .load_u64(GuestAddress(base + 8 * i as u64))
            .ok_or(WalkError::GeneralProtection)?;
        if pdpte & PTE_P != 0 && pdpte & rsvd != 0 {
            return Err(WalkError::GeneralProtection);
        }
        *slot = pdpte;
    }
    Ok(pdptrs)
}

fn walk_with<M: PteMemory + ?Sized, const SET_AD: bool, const CHECK: bool>(
    mem: &M,
    state: &PagingState,
    gva: Gva,
    access: Access,
) -> Result<GuestWalk, WalkError> {
    let mode = state.mode();
    match mode {
        PagingMode::Off => {
            if gva.0 > u64::from(u32::MAX) {
                return Err(WalkError::GeneralProtection);
            }
            Ok(GuestWalk::identity(gva))
        }
        // One instance per mode: with the number of levels a constant, the
        // level loop unrolls and each level's index, masks and slots fold.
        PagingMode::Bits32 => walk_format::<Pte32, M, SET_AD, CHECK, 2>(mem, state, gva, access),
        PagingMode::Pae => walk_format::<Pte64, M, SET_AD, CHECK, 3>(mem, state, gva, access),
        PagingMode::Level4 => walk_format::<Pte64, M, SET_AD, CHECK, 4>(mem, state, gva, access),
        PagingMode::Level5 => walk_format::<Pte64, M, SET_AD, CHECK, 5>(mem, state, gva, access),
    }
}

/// Whether `gva` is a valid linear address in `mode`.
#[inline]
fn address_is_valid(mode: PagingMode, gva: Gva) -> bool {
    let sign_bit = match mode {
        PagingMode::Off | PagingMode::Bits32 | PagingMode::Pae => {
            return gva.0 <= u64::from(u32::MAX)
        }
        PagingMode::Level4 => 47,
        PagingMode::Level5 => 56,
    };
    gva.is_canonical(sign_bit)
}

/// How the walker reaches guest memory: through a [`HostWindow`] of the
/// region it last used while addresses stay inside it, through `mem`
/// otherwise. Both give the same answers; the window only saves the region
/// lookup at every access.
struct Reader<'a, M: PteMemory + ?Sized> {
    mem: &'a M,
    window: Option<HostWindow<'a>>,
}

impl<'a, M: PteMemory + ?Sized> Reader<'a, M> {
    #[inline]
    fn new(mem: &'a M) -> Self {
        Reader { mem, window: None }
    }

    /// The window holding the entry of format `F` at `gpa`, if `mem` has
    /// one: the current window, or a new one.
    #[inline]
    fn window<F: PteFormat>(&mut self, gpa: GuestAddress) -> Option<&HostWindow<'a>> {
        let hit = matches!(&self.window, Some(w) if w.contains(gpa, F::BYTES));
        if !hit {
            self.window = self.mem.host_window(gpa);
        }
        self.window.as_ref()
    }

    #[inline(always)]
    fn load<F: PteFormat>(&mut self, gpa: GuestAddress) -> Option<u64> {
        if let Some(w) = &self.window {
            if w.contains(gpa, F::BYTES) {
                return F::load(w, gpa);
            }
        }
        self.load_elsewhere::<F>(gpa)
    }

    /// [`Reader::load`] outside the current window (the first access of a
    /// walk, or a table in another region).
    #[inline(never)]
    fn load_elsewhere<F: PteFormat>(&mut self, gpa: GuestAddress) -> Option<u64> {
        let mem = self.mem;
        match self.window::<F>(gpa) {
            Some(w) if w.contains(gpa, F::BYTES) => F::load(w, gpa),
            _ => F::load(mem, gpa),
        }
    }

    /// Not through the window: the memory's own compare-exchange records the
    /// store in its dirty bitmap.
    #[inline]
    fn cmpxchg<F: PteFormat>(&mut self, gpa: GuestAddress, old: u64, new: u64) -> Option<bool> {
        F::cmpxchg(self.mem, gpa, old, new)
    }
}

/// The walk in the paging mode whose top table is at level `ROOT` (2:
/// 32-bit paging, 3: PAE, 4 and 5: IA-32e paging) with entries of format
/// `F`.
#[inline]
fn walk_format<
    F: WalkMasks,
    M: PteMemory + ?Sized,
    const SET_AD: bool,
    const CHECK: bool,
    const ROOT: u8,
>(
    mem: &M,
    state: &PagingState,
    gva: Gva,
    access: Access,
) -> Result<GuestWalk, WalkError> {
    let mode = match ROOT {
        2 => PagingMode::Bits32,
        3 => PagingMode::Pae,
        4 => PagingMode::Level4,
        _ => PagingMode::Level5,
    };
    debug_assert_eq!(mode, state.mode());
    if !address_is_valid(mode, gva) {
        return Err(WalkError::GeneralProtection);
    }
    // `state.nx_enabled()` and `state.reports_fetch()`, with the mode the
    // caller already derived.
    let nx = state.efer.contains(Efer::NXE) && mode.has_8_byte_entries();
    // The error codes, built only on the way out.
    let fault = |bits: PfErrorCode| {
        let access_bits = access.error_code_bits(nx || state.cr4.contains(Cr4::SMEP));
        Err(WalkError::PageFault(access_bits | bits))
    };
    let not_present = PfErrorCode::empty();
    let reserved = PfErrorCode::P | PfErrorCode::RSVD;
    let rsvd = F::walk_reserved(state, mode);
    let root_level = ROOT;
    let mut mem = Reader::new(mem);

    for _ in 0..MAX_WALK_RETRIES {
        let mut ptes = [0u64; 5];
        let mut pte_gpas = [GuestAddress(0); 5];
        let mut table_gfns = [Gfn(0); 5];
        let mut level = root_level;
        let mut table = if mode == PagingMode::Pae {
            // The PDPTEs come from registers loaded at CR3 load; they carry
            // no rights and no accessed bit.
            let idx = (gva.0 >> 30) & 3;
            let pdpte = state.pdptrs[idx as usize];
            let pdpt = state.cr3 & 0xffff_ffe0;
            ptes[2] = pdpte;
            pte_gpas[2] = GuestAddress(pdpt + 8 * idx);
            table_gfns[2] = Gfn::containing(GuestAddress(pdpt));
            if pdpte & PTE_P == 0 {
                return fault(not_present);
            }
            // Only a state that bypassed `load_pdptrs` gets here with
            // reserved bits; report them as the walk-time check AMD does.
            if pdpte & pae_pdpte_reserved(state) != 0 {
                return fault(reserved);
            }
            level = 2;
            F::frame(pdpte) & state.phys_mask()
        } else if mode == PagingMode::Bits32 {
            state.cr3 & 0xffff_f000
        } else {
            state.cr3 & state.phys_mask() & !0xfff
        };

        // The rights are the AND of `F::rights` over the levels. Each right
        // depends on one bit of the entry (W, U, XD) in `PteFormat::rights`,
        // which neither format overrides, so they are those of an entry with
        // W and U where every level has them and XD where any level has it.
        let mut all_levels = !0u64;
        let mut any_level = 0u64;
        let leaf_pte = loop {
            let li = usize::from(level) - 1;
            let pte_gpa = GuestAddress(table + F::index(gva.0, level) * F::BYTES);
            pte_gpas[li] = pte_gpa;
            table_gfns[li] = Gfn::containing(GuestAddress(table));
            let Some(pte) = mem.load::<F>(pte_gpa) else {
                return fault(not_present);
            };
            ptes[li] = pte;
            if pte & PTE_P == 0 {
                return fault(not_present);
            }
            let leaf = level == 1 || (pte & PTE_PS != 0 && F::ps_is_leaf(level, state));
            if pte & F::reserved_mask(&rsvd, level, leaf) != 0 {
                return fault(reserved);
            }
            all_levels &= pte;
            any_level |= pte;
            if leaf {
                break pte;
            }
            table = F::frame(pte);
            level -= 1;
        };
        let rights = F::rights((all_levels & (PTE_W | PTE_U)) | (any_level & PTE_XD), nx);

        let page_size = 1u64 << F::level_shift(level);
        let base = if level == 1 {
            F::frame(leaf_pte)
        } else {
            F::large_frame(leaf_pte, level, state)
        };

        if CHECK {
            if let Some(ec) = permission_fault(state, mode, rights, leaf_pte, access) {
                return fault(ec);
            }
        }

        // The loop read exactly the entries that take an accessed bit (PAE's
        // PDPTEs are registers): nothing to set if they all have it.
        let write = access.kind == AccessKind::Write;
        let settled = all_levels & PTE_A != 0 && (!write || leaf_pte & PTE_D != 0);
        if !SET_AD
            || settled
            || set_accessed_dirty::<F, M>(
                &mut mem,
                if mode == PagingMode::Pae {
                    2
                } else {
                    root_level
                },
                level,
                &mut ptes,
                &pte_gpas,
                write,
            )
        {
            return Ok(GuestWalk {
                gva,
                mode,
                root_level,
                level,
                ptes,
                pte_gpas,
                table_gfns,
                access: rights,
                gpa: GuestAddress(base | (gva.0 & (page_size - 1))),
                page_size,
            });
        }
    }
    Err(WalkError::TooManyRetries)
}

/// Sets A at every level from `top` (PAE's PDPTEs live in registers and have
/// no accessed bit, so 2 there) down to the leaf, and D on the leaf of a
/// write. Returns false if an entry changed since it was read: the caller
/// must walk again.
#[inline]
fn set_accessed_dirty<F: PteFormat, M: PteMemory + ?Sized>(
    mem: &mut Reader<'_, M>,
    top: u8,
    leaf_level: u8,
    ptes: &mut [u64; 5],
    pte_gpas: &[GuestAddress; 5],
    write: bool,
) -> bool {
    let mut level = top;
    while level >= leaf_level {
        let li = usize::from(level) - 1;
        let old = ptes[li];
        let mut new = old | PTE_A;
        if level == leaf_level && write {
            new |= PTE_D;
        }
        if new != old {
            match mem.cmpxchg::<F>(pte_gpas[li], old, new) {
                Some(true) => ptes[li] = new,
                // Changed under us, or the memory went away: the next walk
                // sees what is there now.
                _ => return false,
            }
        }
        level -= 1;
    }
    true
}

/// The permission rules of SDM section 4.6 and the PK rule of 4.7, applied to
/// the rights `acc` the walk accumulated. Returns the error-code bits beyond
/// the access's own (P, and PK when a key denied) if the access faults.
#[inline]
fn permission_fault(
    state: &PagingState,
    mode: PagingMode,
    acc: PteAccess,
    leaf_pte: u64,
    access: Access,
) -> Option<PfErrorCode> {
    let user_page = acc.contains(PteAccess::USER);
    let writable = acc.contains(PteAccess::WRITE);
    let wp = state.cr0.contains(Cr0::WP);
    let user = access.is_user();
    // SMAP lets an explicit supervisor access through only with EFLAGS.AC.
    let smap_blocks =
        user_page && state.cr4.contains(Cr4::SMAP) && (access.implicit || !state.eflags_ac);

    let denied = match (access.kind, user) {
        (AccessKind::Read, true) => !user_page,
        (AccessKind::Write, true) => !user_page || !writable,
        (AccessKind::Fetch, true) => !user_page || !acc.contains(PteAccess::EXEC),
        (AccessKind::Read, false) => smap_blocks,
        (AccessKind::Write, false) => smap_blocks || (wp && !writable),
        (AccessKind::Fetch, false) => {
            (user_page && state.cr4.contains(Cr4::SMEP)) || !acc.contains(PteAccess::EXEC)
        }
    };

    // Protection keys exist only in IA-32e paging and only for data.
    let mut key_denied = false;
    if mode.is_long() && access.kind != AccessKind::Fetch {
        let register = if user_page && state.cr4.contains(Cr4::PKE) {
            Some(state.pkru)
        } else if !user_page && state.cr4.contains(Cr4::PKS) {
            Some(state.pkrs)
        } else {
            None
        };
        if let Some(register) = register {
            let key = ((leaf_pte >> PTE_PKEY_SHIFT) & 0xf) as u8;
            let rights = KeyRights::of(register, key);
            key_denied =
                rights.ad || (rights.wd && access.kind == AccessKind::Write && (user || wp));
        }
    }

    if !denied && !key_denied {
        return None;
    }
    let mut ec = PfErrorCode::P;
    if key_denied {
        ec |= PfErrorCode::PK;
    }
    Some(ec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::Efer;
    use crate::pte::{PTE_U, PTE_W, PTE_XD};
    use vm_memory::{Bytes, GuestMemoryMmap};

    fn mem() -> GuestMemoryMmap<()> {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x100_0000)]).expect("guest memory")
    }

    fn long_mode() -> PagingState {
        PagingState {
            cr0: Cr0::PE | Cr0::PG | Cr0::WP,
            cr3: 0x1000,
            cr4: Cr4::PAE,
            efer: Efer::LME | Efer::LMA | Efer::NXE,
            ..Default::default()
        }
    }

    /// Maps gva 0x40_0000 to 0x5000 through PML4 0x1000, PDPT 0x2000,
    /// PD 0x3000, PT 0x4000, with `leaf` flags on the PTE.
    fn map_4k(m: &GuestMemoryMmap<()>, leaf: u64) {
        let upper = PTE_P | PTE_W | PTE_U;
        m.write_obj(0x2000u64 | upper, GuestAddress(0x1000))
            .unwrap();
        m.write_obj(0x3000u64 | upper, GuestAddress(0x2000))
            .unwrap();
        m.write_obj(0x4000u64 | upper, GuestAddress(0x3000 + 2 * 8))
            .unwrap();
        m.write_obj(0x5000u64 | leaf, GuestAddress(0x4000)).unwrap();
    }

    #[test]
    fn translates_and_sets_accessed_dirty() {
        let m = mem();
        map_4k(&m, PTE_P | PTE_W);
        let s = long_mode();
        let w = walk(&m, &s, Gva(0x40_0123), Access::at_cpl(AccessKind::Write, 0)).unwrap();
        assert_eq!(w.gpa, GuestAddress(0x5123));
        assert_eq!((w.level, w.root_level, w.page_size), (1, 4, 4096));
        assert_eq!(w.table_gfns[0], Gfn(4));
        let pte: u64 = m.read_obj(GuestAddress(0x4000)).unwrap();
        assert_eq!(pte, 0x5000 | PTE_P | PTE_W | PTE_A | PTE_D);
        let pml4e: u64 = m.read_obj(GuestAddress(0x1000)).unwrap();
        assert_eq!(pml4e & (PTE_A | PTE_D), PTE_A);
    }

    #[test]
    fn faulting_walk_sets_nothing() {
        let m = mem();
        map_4k(&m, PTE_P); // read-only, supervisor
        let s = long_mode();
        let err = walk(&m, &s, Gva(0x40_0000), Access::at_cpl(AccessKind::Write, 0));
        assert_eq!(
            err,
            Err(WalkError::PageFault(PfErrorCode::P | PfErrorCode::W))
        );
        let pml4e: u64 = m.read_obj(GuestAddress(0x1000)).unwrap();
        assert_eq!(pml4e & PTE_A, 0);
    }

    #[test]
    fn nx_is_reserved_without_nxe() {
        let m = mem();
        map_4k(&m, PTE_P | PTE_XD);
        let mut s = long_mode();
        s.efer.remove(Efer::NXE);
        let err = walk(&m, &s, Gva(0x40_0000), Access::at_cpl(AccessKind::Fetch, 0));
        // No I/D without NXE or SMEP.
        assert_eq!(
            err,
            Err(WalkError::PageFault(PfErrorCode::P | PfErrorCode::RSVD))
        );
    }

    #[test]
    fn non_canonical_is_gp() {
        let m = mem();
        let s = long_mode();
        let err = walk(
            &m,
            &s,
            Gva(0x0000_8000_0000_0000),
            s.access(AccessKind::Read),
        );
        assert_eq!(err, Err(WalkError::GeneralProtection));
    }

    #[test]
    fn table_without_ram_is_not_present() {
        let m = mem();
        let mut s = long_mode();
        s.cr3 = 0x4000_0000;
        let err = walk(&m, &s, Gva(0), Access::at_cpl(AccessKind::Read, 3));
        assert_eq!(err, Err(WalkError::PageFault(PfErrorCode::U)));
    }

    #[test]
    fn peek_leaves_memory_alone() {
        let m = mem();
        map_4k(&m, PTE_P | PTE_W);
        let s = long_mode();
        peek(&m, &s, Gva(0x40_0000), s.access(AccessKind::Write)).unwrap();
        let pte: u64 = m.read_obj(GuestAddress(0x4000)).unwrap();
        assert_eq!(pte & (PTE_A | PTE_D), 0);
    }
}
