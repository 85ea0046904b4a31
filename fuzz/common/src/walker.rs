// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! (a) The guest page-table walker on arbitrary tables and paging state.

use shadow_mmu::pte::{PTE_A, PTE_P, PTE_PS, PTE_U, PTE_W, PTE_XD};
use shadow_mmu::{
    load_pdptrs, peek, translate, walk, Access, AccessKind, Cr0, Cr4, Efer, GuestAddress,
    GuestWalk, Gva, PagingMode, PagingState, PfErrorCode, PteAccess, WalkError,
};
use vm_memory::{Bytes, GuestMemoryMmap};

use crate::Input;

/// Whether `gva` is a valid linear address in `mode` (the walker's #GP
/// rule, written out independently).
pub(crate) fn linear_ok(mode: PagingMode, gva: u64) -> bool {
    match mode {
        PagingMode::Off | PagingMode::Bits32 | PagingMode::Pae => gva <= u64::from(u32::MAX),
        PagingMode::Level4 => sign_extend(gva, 47) == gva,
        PagingMode::Level5 => sign_extend(gva, 56) == gva,
    }
}

pub(crate) fn sign_extend(v: u64, top_bit: u32) -> u64 {
    let shift = 63 - top_bit;
    (((v << shift) as i64) >> shift) as u64
}

pub(crate) fn access_kind(b: u64) -> AccessKind {
    match b % 3 {
        0 => AccessKind::Read,
        1 => AccessKind::Write,
        _ => AccessKind::Fetch,
    }
}

/// Number of table pages the walker harness lays out.
pub(crate) const WALK_SLOTS: u64 = 16;

/// The guest memory of one walker case: two 32 KiB halves of table pages,
/// the upper half placed by the layout byte.
pub(crate) struct WalkMemory {
    pub(crate) mem: GuestMemoryMmap<()>,
    /// Guest-physical address of each of the 16 table pages.
    pub(crate) slots: [u64; WALK_SLOTS as usize],
}

impl WalkMemory {
    pub(crate) fn new(layout: u64, maxphyaddr: u8) -> Option<WalkMemory> {
        let half = 0x8000u64;
        let high = match layout % 5 {
            // One 64 KiB region.
            0 => None,
            // Two adjacent regions (walks cross host mappings).
            1 => Some(half),
            // The upper half just below 4 GiB.
            2 => Some((1 << 32) - half),
            // The upper half at the very top of the physical address space.
            3 => Some((1u64 << maxphyaddr) - half),
            // The upper half just above 4 GiB (PSE-36, PAE beyond 4 GiB).
            _ => Some(1 << 32),
        };
        let ranges: Vec<(GuestAddress, usize)> = match high {
            None => vec![(GuestAddress(0), 2 * half as usize)],
            Some(h) => vec![
                (GuestAddress(0), half as usize),
                (GuestAddress(h), half as usize),
            ],
        };
        let mem = GuestMemoryMmap::<()>::from_ranges(&ranges).ok()?;
        let mut slots = [0u64; WALK_SLOTS as usize];
        for (k, s) in slots.iter_mut().enumerate() {
            let k = k as u64;
            *s = match high {
                Some(h) if k >= 8 => h + (k - 8) * 0x1000,
                _ => k * 0x1000,
            };
        }
        Some(WalkMemory { mem, slots })
    }

    pub(crate) fn slot(&self, k: u64) -> u64 {
        self.slots[(k % WALK_SLOTS) as usize]
    }

    /// A copy of every table page.
    pub(crate) fn snapshot(&self) -> Vec<u8> {
        let mut out = vec![0u8; (WALK_SLOTS * 0x1000) as usize];
        for (chunk, &gpa) in out.chunks_mut(0x1000).zip(self.slots.iter()) {
            // The slots are inside the regions by construction.
            if self.mem.read_slice(chunk, GuestAddress(gpa)).is_err() {
                chunk.fill(0xee);
            }
        }
        out
    }
}

/// A paging-structure entry value for the walker harness: raw bits, a
/// pointer to one of the table pages, or a large-page leaf.
pub(crate) fn walk_entry(inp: &mut Input<'_>, wm: &WalkMemory, maxphyaddr: u8) -> u64 {
    let phys = (1u64 << maxphyaddr) - 1;
    let extra = |inp: &mut Input<'_>| -> u64 {
        match inp.below(5) {
            0 => 0,
            1 => PTE_XD,
            // A protection key.
            2 => u64::from(inp.u8() & 0xf) << 59,
            // A bit at or above MAXPHYADDR (reserved).
            3 => 1u64 << (u64::from(maxphyaddr) + inp.below(64 - u64::from(maxphyaddr))),
            _ => inp.u64() & 0xfff0_0000_0000_0000,
        }
    };
    match inp.below(5) {
        0 => inp.u64(),
        1 | 2 => {
            let target = wm.slot(inp.u8().into());
            target | u64::from(inp.u16() & 0xfff) | extra(inp)
        }
        3 => {
            // A large page somewhere (often misaligned: reserved bits).
            let frame = inp.u64() & phys & !0xfff;
            let align = if inp.bool() { !0x1f_ffff } else { !0x3fff_ffff };
            let frame = if inp.bool() { frame & align } else { frame };
            frame | PTE_PS | u64::from(inp.u16() & 0xfff) | extra(inp)
        }
        _ => {
            // A clean table pointer.
            let flags = PTE_P | PTE_W | PTE_U | if inp.bool() { PTE_A } else { 0 };
            wm.slot(inp.u8().into()) | flags
        }
    }
}

/// A linear address for `mode`: raw, or built from small table indices and
/// made valid for the mode.
pub(crate) fn walk_gva(inp: &mut Input<'_>, mode: PagingMode) -> u64 {
    if inp.below(6) == 0 {
        return inp.u64();
    }
    let idx = |inp: &mut Input<'_>| inp.pick(&[0u64, 1, 2, 3, 255, 256, 510, 511]);
    let l5 = idx(inp);
    let l4 = idx(inp);
    let l3 = idx(inp);
    let l2 = idx(inp);
    let l1 = idx(inp);
    let off = inp.pick(&[0u64, 8, 0xff8, 0x123]);
    let gva = (l5 << 48) | (l4 << 39) | (l3 << 30) | (l2 << 21) | (l1 << 12) | off;
    match mode {
        PagingMode::Level5 => sign_extend(gva, 56),
        PagingMode::Level4 => sign_extend(gva, 47),
        _ => gva & 0xffff_ffff,
    }
}

/// The invariants of one successful walk.
pub(crate) fn check_walk_ok(
    state: &PagingState,
    mode: PagingMode,
    gva: u64,
    access: Access,
    w: &GuestWalk,
    checked: bool,
    what: &str,
) {
    let ctx = || format!("{what} of {gva:#x} ({access:?}) in {mode:?}, state {state:?}: {w:?}");
    assert_eq!(w.gva, Gva(gva), "{}", ctx());
    assert_eq!(w.mode, mode, "{}", ctx());
    assert_eq!(w.root_level, mode.levels(), "{}", ctx());
    assert!(
        linear_ok(mode, gva),
        "a walk of an invalid address succeeded: {}",
        ctx()
    );
    if mode == PagingMode::Off {
        assert_eq!(w.gpa.0, gva, "{}", ctx());
        return;
    }
    let max = 1u64 << state.maxphyaddr;
    assert!(w.gpa.0 < max, "gpa beyond MAXPHYADDR: {}", ctx());
    let expected_size = match (w.level, mode) {
        (1, _) => 1 << 12,
        (2, PagingMode::Bits32) => 1 << 22,
        (2, _) => 1 << 21,
        (3, PagingMode::Level4 | PagingMode::Level5) => 1 << 30,
        _ => panic!("leaf at level {}: {}", w.level, ctx()),
    };
    assert_eq!(w.page_size, expected_size, "{}", ctx());
    assert_eq!(
        w.gpa.0 & (w.page_size - 1),
        gva & (w.page_size - 1),
        "page offset: {}",
        ctx()
    );
    if w.level > 1 {
        assert!(
            w.leaf_pte() & PTE_PS != 0,
            "large leaf without PS: {}",
            ctx()
        );
    }
    if w.level == 3 {
        assert!(state.gbpages, "1 GiB page without gbpages: {}", ctx());
    }
    if w.level == 2 && mode == PagingMode::Bits32 {
        assert!(
            state.cr4.contains(Cr4::PSE),
            "4 MiB page without PSE: {}",
            ctx()
        );
    }
    let top = if mode == PagingMode::Pae {
        3
    } else {
        w.root_level
    };
    for level in w.level..=top {
        let pte = w.ptes[usize::from(level) - 1];
        assert!(
            pte & PTE_P != 0,
            "not-present entry at level {level}: {}",
            ctx()
        );
    }
    if !checked {
        return;
    }
    let acc = w.access;
    let user = access.is_user();
    let nx = state.nx_enabled();
    if user {
        assert!(
            acc.contains(PteAccess::USER),
            "user access to supervisor page: {}",
            ctx()
        );
    }
    if access.kind == AccessKind::Write && (user || state.cr0.contains(Cr0::WP)) {
        assert!(
            acc.contains(PteAccess::WRITE),
            "write to read-only page: {}",
            ctx()
        );
    }
    if access.kind == AccessKind::Fetch {
        if nx {
            assert!(
                acc.contains(PteAccess::EXEC),
                "fetch from XD page: {}",
                ctx()
            );
        }
        if !user && state.cr4.contains(Cr4::SMEP) {
            assert!(
                !acc.contains(PteAccess::USER),
                "SMEP let a fetch through: {}",
                ctx()
            );
        }
    }
    if !user
        && access.kind != AccessKind::Fetch
        && state.cr4.contains(Cr4::SMAP)
        && (access.implicit || !state.eflags_ac)
    {
        assert!(
            !acc.contains(PteAccess::USER),
            "SMAP let an access through: {}",
            ctx()
        );
    }
}

/// The invariants of one page fault.
pub(crate) fn check_walk_fault(
    state: &PagingState,
    mode: PagingMode,
    gva: u64,
    access: Access,
    ec: PfErrorCode,
    checked: bool,
    what: &str,
) {
    let ctx = || format!("{what} of {gva:#x} ({access:?}) in {mode:?}, state {state:?}: {ec:?}");
    assert!(mode != PagingMode::Off, "#PF with paging off: {}", ctx());
    assert!(linear_ok(mode, gva), "#PF instead of #GP: {}", ctx());
    let kind_bits = if checked {
        access
    } else {
        Access::at_cpl(AccessKind::Read, 0)
    };
    let report_fetch = state.nx_enabled() || state.cr4.contains(Cr4::SMEP);
    let expected = kind_bits.error_code_bits(report_fetch);
    let access_bits = PfErrorCode::W | PfErrorCode::U | PfErrorCode::ID;
    assert_eq!(ec & access_bits, expected, "access bits: {}", ctx());
    if ec.contains(PfErrorCode::RSVD) {
        assert!(ec.contains(PfErrorCode::P), "RSVD without P: {}", ctx());
        assert!(!ec.contains(PfErrorCode::PK), "RSVD with PK: {}", ctx());
    }
    if ec.contains(PfErrorCode::PK) {
        assert!(checked, "PK from a translate: {}", ctx());
        assert!(ec.contains(PfErrorCode::P), "PK without P: {}", ctx());
        assert!(mode.is_long(), "PK outside IA-32e paging: {}", ctx());
        assert!(access.kind != AccessKind::Fetch, "PK on a fetch: {}", ctx());
    }
    if !checked {
        // translate checks no permission: P only comes with RSVD.
        assert_eq!(
            ec.contains(PfErrorCode::P),
            ec.contains(PfErrorCode::RSVD),
            "{}",
            ctx()
        );
    }
}

pub(crate) fn check_walk_result(
    state: &PagingState,
    mode: PagingMode,
    gva: u64,
    access: Access,
    r: &Result<GuestWalk, WalkError>,
    checked: bool,
    what: &str,
) {
    match r {
        Ok(w) => check_walk_ok(state, mode, gva, access, w, checked, what),
        Err(WalkError::PageFault(ec)) => {
            check_walk_fault(state, mode, gva, access, *ec, checked, what)
        }
        Err(WalkError::GeneralProtection) => assert!(
            !linear_ok(mode, gva),
            "{what} of valid {gva:#x} in {mode:?} raised #GP (state {state:?})"
        ),
        Err(WalkError::TooManyRetries) => panic!(
            "{what} of {gva:#x} in {mode:?} gave up after too many retries with no other \
             writer (state {state:?})"
        ),
    }
}

/// Two walk results that must agree on everything but the A/D bits the
/// walk itself set.
pub(crate) fn same_translation(
    a: &Result<GuestWalk, WalkError>,
    b: &Result<GuestWalk, WalkError>,
) -> bool {
    match (a, b) {
        (Ok(x), Ok(y)) => {
            x.gpa == y.gpa
                && x.level == y.level
                && x.page_size == y.page_size
                && x.access == y.access
                && x.pte_gpas == y.pte_gpas
                && x.table_gfns == y.table_gfns
        }
        (Err(x), Err(y)) => x == y,
        _ => false,
    }
}

/// Fuzzes the guest page-table walker: guest memory of up to 16 table pages
/// built from `data`, an arbitrary paging state in any mode, and a list of
/// accesses, each translated with [`peek`], [`translate`] and twice with
/// [`walk`]. Panics on a broken invariant:
///
/// * `peek`, `translate` and `load_pdptrs` never change guest memory, and a
///   second walk of an access that just succeeded changes nothing either;
/// * `walk` gives exactly `peek`'s answer (it only adds A/D bits), and never
///   gives up with no concurrent writer;
/// * a successful walk's gpa is below 2^MAXPHYADDR, keeps the page offset,
///   uses a page size the mode has, and grants the access;
/// * a fault's error code describes the access; #GP exactly for invalid
///   linear addresses; `load_pdptrs` fails only with #GP.
pub fn walker(data: &[u8]) {
    let mut inp = Input::new(data);
    let maxphyaddr = 32 + inp.below(21) as u8;
    let layout = inp.below(5);
    let Some(wm) = WalkMemory::new(layout, maxphyaddr) else {
        return;
    };

    // The tables.
    let writes = inp.below(48);
    for _ in 0..writes {
        let slot = wm.slot(inp.u8().into());
        let wide = inp.below(4) != 0;
        let value = walk_entry(&mut inp, &wm, maxphyaddr);
        let res = if wide {
            let off = inp.below(512) * 8;
            wm.mem.write_obj(value, GuestAddress(slot + off))
        } else {
            let off = inp.below(1024) * 4;
            wm.mem.write_obj(value as u32, GuestAddress(slot + off))
        };
        assert!(res.is_ok(), "table write inside a slot failed: {res:?}");
    }

    // The paging state.
    let mode = match inp.below(5) {
        0 => PagingMode::Off,
        1 => PagingMode::Bits32,
        2 => PagingMode::Pae,
        3 => PagingMode::Level4,
        _ => PagingMode::Level5,
    };
    let mut cr0 = Cr0::from_bits_retain(inp.u64());
    let mut cr4 = Cr4::from_bits_retain(inp.u64());
    let mut efer = Efer::from_bits_retain(inp.u64());
    match mode {
        PagingMode::Off => cr0.remove(Cr0::PG),
        PagingMode::Bits32 => {
            cr0 |= Cr0::PG | Cr0::PE;
            cr4.remove(Cr4::PAE);
        }
        PagingMode::Pae => {
            cr0 |= Cr0::PG | Cr0::PE;
            cr4 |= Cr4::PAE;
            efer.remove(Efer::LMA);
        }
        PagingMode::Level4 | PagingMode::Level5 => {
            cr0 |= Cr0::PG | Cr0::PE;
            cr4 |= Cr4::PAE;
            efer |= Efer::LMA | Efer::LME;
            cr4.set(Cr4::LA57, mode == PagingMode::Level5);
        }
    }
    let cr3 = match inp.below(3) {
        0 => inp.u64(),
        1 => wm.slot(inp.u8().into()) | u64::from(inp.u16() & 0xfff),
        _ => wm.slot(inp.u8().into()) | (inp.u64() & 0xfff0_0000_0000_0fff),
    };
    let mut state = PagingState {
        cr0,
        cr3,
        cr4,
        efer,
        pkru: inp.u32(),
        pkrs: inp.u32(),
        cpl: inp.u8() & 3,
        eflags_ac: inp.bool(),
        maxphyaddr,
        pdptrs: [0; 4],
        gbpages: inp.bool(),
        pse36: inp.bool(),
    };
    assert_eq!(state.mode(), mode, "harness built the wrong mode");

    if mode == PagingMode::Pae {
        let before = wm.snapshot();
        let loaded = load_pdptrs(&wm.mem, &state);
        assert_eq!(
            loaded,
            load_pdptrs(&wm.mem, &state),
            "load_pdptrs is not deterministic"
        );
        assert!(before == wm.snapshot(), "load_pdptrs changed guest memory");
        // Now and then a state whose PDPTEs bypassed load_pdptrs.
        let bypass = inp.below(4) == 0;
        match loaded {
            _ if bypass => {
                for p in state.pdptrs.iter_mut() {
                    *p = walk_entry(&mut inp, &wm, maxphyaddr);
                }
            }
            Ok(pdptrs) => state.pdptrs = pdptrs,
            // mov cr3 raises #GP: nothing to walk.
            Err(WalkError::GeneralProtection) => return,
            Err(e) => panic!("load_pdptrs failed with {e:?}, not #GP (state {state:?})"),
        }
    }

    let accesses = 1 + inp.below(12);
    for _ in 0..accesses {
        let gva = walk_gva(&mut inp, mode);
        let access = Access {
            kind: access_kind(inp.below(3)),
            user: inp.bool(),
            implicit: inp.below(4) == 0,
        };
        state.eflags_ac = inp.bool();

        let before = wm.snapshot();
        let peeked = peek(&wm.mem, &state, Gva(gva), access);
        let translated = translate(&wm.mem, &state, Gva(gva));
        assert!(
            before == wm.snapshot(),
            "peek or translate of {gva:#x} changed guest memory (state {state:?})"
        );
        check_walk_result(&state, mode, gva, access, &peeked, true, "peek");
        let any = Access::at_cpl(AccessKind::Read, 0);
        check_walk_result(&state, mode, gva, any, &translated, false, "translate");
        if peeked.is_ok() {
            assert!(
                same_translation(&peeked, &translated),
                "peek {peeked:?} and translate {translated:?} of {gva:#x} disagree"
            );
        }
        if let Err(WalkError::PageFault(_)) = translated {
            assert!(
                peeked.is_err(),
                "translate faults but peek succeeds for {gva:#x}: {translated:?} / {peeked:?}"
            );
        }

        let walked = walk(&wm.mem, &state, Gva(gva), access);
        check_walk_result(&state, mode, gva, access, &walked, true, "walk");
        assert!(
            same_translation(&peeked, &walked),
            "walk and peek of {gva:#x} ({access:?}) disagree: {walked:?} vs {peeked:?} \
             (state {state:?})"
        );
        if walked.is_err() {
            assert!(
                before == wm.snapshot(),
                "a failed walk of {gva:#x} changed guest memory: {walked:?}"
            );
            continue;
        }
        let after_first = wm.snapshot();
        let again = walk(&wm.mem, &state, Gva(gva), access);
        assert!(
            same_translation(&walked, &again),
            "a second walk of {gva:#x} ({access:?}) differs: {again:?} vs {walked:?} \
             (state {state:?})"
        );
        assert!(
            after_first == wm.snapshot(),
            "a second walk of {gva:#x} changed guest memory (A/D were already set)"
        );
    }
}
