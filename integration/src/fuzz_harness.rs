// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Fuzz harnesses: plain functions over `&[u8]`, shared by the cargo-fuzz
//! targets in `fuzz/` and by `tests/fuzz_corpus.rs`, which replays the
//! committed corpus as ordinary tests.
//!
//! Every harness decodes its input with [`Input`], which never fails (an
//! exhausted input reads as zeros), so every byte string is a valid test
//! case. A harness panics only when it finds a bug: a panic inside
//! shadow-mmu, a broken invariant it checks, an [`ShadowMmu::audit`]
//! failure, or a hang the fuzzer's timeout reports.
//!
//! * [`walker`]: the guest page-table walker on arbitrary tables and
//!   arbitrary paging state.
//! * [`mmu_ops`]: random sequences of [`ShadowMmu`] operations as a guest
//!   and its VMM would make them, audited after every step.
//! * [`hypercall`]: the guest ABI decoder ([`shadow_mmu::abi`]) and the
//!   MMU calls a hypercall turns into.
//! * [`scenario`]: `shadow-run walk` scenario files, parsed and run.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use shadow_mmu::abi::{self, AbiError, Block, Hypercall};
use shadow_mmu::hypercall::{self, HypercallVcpu, Served};
use shadow_mmu::pte::{PTE_A, PTE_D, PTE_P, PTE_PS, PTE_U, PTE_W, PTE_XD};
use shadow_mmu::{
    load_pdptrs, peek, translate, walk, Access, AccessKind, Changes, Cr0, Cr4, Efer, FaultOutcome,
    Gfn, GuestAddress, GuestException, GuestWalk, Gva, Hole, Mmu, MmuConfig, MmuError, PagingMode,
    PagingState, PfErrorCode, PteAccess, ShadowMmu, TableWrites, WalkError,
};
use vm_memory::{
    Bytes, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryBackend, GuestMemoryMmap,
    GuestRegionMmap,
};

use crate::run::{run, RunError};
use crate::scenario::{Scenario, ScenarioError};

/// A fuzz input read front to back. Reads past the end give zeros, so any
/// byte string decodes to something and every decoder terminates.
#[derive(Clone, Debug)]
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// An input over `data`.
    pub fn new(data: &'a [u8]) -> Input<'a> {
        Input { data }
    }

    /// Whether every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The next byte (0 once the input is exhausted).
    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    /// The next `N` bytes, zero-padded.
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let n = N.min(self.data.len());
        out[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        out
    }

    /// A little-endian `u16`.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.bytes())
    }

    /// A little-endian `u32`.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.bytes())
    }

    /// A little-endian `u64`.
    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.bytes())
    }

    /// A boolean (the low bit of a byte).
    pub fn bool(&mut self) -> bool {
        self.u8() & 1 != 0
    }

    /// A number in `0..n` (`n` > 0; 0 is read as 1).
    pub fn below(&mut self, n: u64) -> u64 {
        let n = n.max(1);
        if n <= 1 << 8 {
            u64::from(self.u8()) % n
        } else if n <= 1 << 16 {
            u64::from(self.u16()) % n
        } else {
            self.u64() % n
        }
    }

    /// One of `items` (which must not be empty).
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// Whether `gva` is a valid linear address in `mode` (the walker's #GP
/// rule, written out independently).
fn linear_ok(mode: PagingMode, gva: u64) -> bool {
    match mode {
        PagingMode::Off | PagingMode::Bits32 | PagingMode::Pae => gva <= u64::from(u32::MAX),
        PagingMode::Level4 => sign_extend(gva, 47) == gva,
        PagingMode::Level5 => sign_extend(gva, 56) == gva,
    }
}

fn sign_extend(v: u64, top_bit: u32) -> u64 {
    let shift = 63 - top_bit;
    (((v << shift) as i64) >> shift) as u64
}

fn access_kind(b: u64) -> AccessKind {
    match b % 3 {
        0 => AccessKind::Read,
        1 => AccessKind::Write,
        _ => AccessKind::Fetch,
    }
}

// ---------------------------------------------------------------------------
// (a) The walker.
// ---------------------------------------------------------------------------

/// Number of table pages the walker harness lays out.
const WALK_SLOTS: u64 = 16;

/// The guest memory of one walker case: two 32 KiB halves of table pages,
/// the upper half placed by the layout byte.
struct WalkMemory {
    mem: GuestMemoryMmap<()>,
    /// Guest-physical address of each of the 16 table pages.
    slots: [u64; WALK_SLOTS as usize],
}

impl WalkMemory {
    fn new(layout: u64, maxphyaddr: u8) -> Option<WalkMemory> {
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

    fn slot(&self, k: u64) -> u64 {
        self.slots[(k % WALK_SLOTS) as usize]
    }

    /// A copy of every table page.
    fn snapshot(&self) -> Vec<u8> {
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
fn walk_entry(inp: &mut Input<'_>, wm: &WalkMemory, maxphyaddr: u8) -> u64 {
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
fn walk_gva(inp: &mut Input<'_>, mode: PagingMode) -> u64 {
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
fn check_walk_ok(
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
fn check_walk_fault(
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

fn check_walk_result(
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
fn same_translation(a: &Result<GuestWalk, WalkError>, b: &Result<GuestWalk, WalkError>) -> bool {
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

// ---------------------------------------------------------------------------
// (b) Shadow MMU operations.
// ---------------------------------------------------------------------------

/// Guest RAM of the MMU harnesses: two 2 MiB regions; the upper one can be
/// unplugged and plugged again.
const LOW_RAM: u64 = 2 << 20;
const HIGH_RAM: u64 = 2 << 20;
/// The guest frames used as page tables.
const TABLE_GFNS: [u64; 16] = [
    0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x200, 0x201, 0x202,
    0x203,
];
const UPPER: u64 = PTE_P | PTE_W | PTE_U;
const ARENA_BASE: u64 = 1 << 46;

fn table_gpa(slot: u64) -> u64 {
    TABLE_GFNS[(slot % 16) as usize] << 12
}

/// A data frame a guest entry may point to: RAM in either region, a table,
/// beyond RAM, the arena, above 4 GiB.
fn data_frame(inp: &mut Input<'_>) -> u64 {
    match inp.below(8) {
        0..=2 => 0x10_0000 + (inp.below(64) << 12),
        3 => 0x30_0000 + (inp.below(16) << 12),
        4 => table_gpa(inp.u8().into()),
        5 => 0x40_0000 + (inp.below(16) << 12),
        6 => ARENA_BASE + (inp.below(16) << 12),
        _ => (1 << 32) + (inp.below(16) << 12),
    }
}

/// A guest entry value for the MMU harnesses.
fn mmu_entry(inp: &mut Input<'_>) -> u64 {
    let flags = |inp: &mut Input<'_>| -> u64 {
        // Present most of the time; any other low flag.
        let f = u64::from(inp.u16() & 0xfff);
        if f & 0xf00 == 0 {
            f & !PTE_P
        } else {
            f | PTE_P
        }
    };
    match inp.below(10) {
        0 => inp.u64(),
        1..=3 => table_gpa(inp.u8().into()) | (flags(inp) & !PTE_PS),
        4..=6 => data_frame(inp) | (flags(inp) & !PTE_PS),
        7 => {
            let frame = inp.pick(&[0u64, 0x20_0000, 0x40_0000, 1 << 30, 1 << 32, ARENA_BASE]);
            frame | flags(inp) | PTE_PS
        }
        8 => {
            // 32-bit PSE-36 style large page: bits 13.. hold bits 32...
            let frame = inp.pick(&[0u64, 0x40_0000, 0x2000]);
            frame | flags(inp) | PTE_PS
        }
        _ => {
            let v = table_gpa(inp.u8().into()) | UPPER;
            match inp.below(4) {
                0 => v | PTE_XD,
                1 => v | (u64::from(inp.u8() & 0xf) << 59),
                2 => v | (1 << (36 + inp.below(16))),
                _ => v | PTE_A | PTE_D,
            }
        }
    }
}

/// How a guest write that hit no write protection is made visible.
#[derive(Clone, Copy, Debug)]
enum Flush {
    Tlb,
    Invlpg(u64),
    Nothing,
}

/// One operation of [`mmu_ops`], recorded for the failure report.
#[derive(Clone, Debug)]
// The fields are read by `Debug`, for the failure report.
#[allow(dead_code)]
enum Op {
    /// A guest store of `len` bytes of `value` at `gpa`.
    Write {
        vcpu: usize,
        gpa: u64,
        bytes: Vec<u8>,
        flush: Flush,
        emulated: bool,
    },
    TrackWrite {
        gpa: u64,
        len: usize,
    },
    Access {
        vcpu: usize,
        gva: u64,
        access: Access,
        ac: bool,
        result: String,
    },
    Invlpg {
        vcpu: usize,
        gva: u64,
    },
    FlushTlb {
        vcpu: usize,
    },
    Prefetch {
        vcpu: usize,
        gva: u64,
    },
    GvaToGpa {
        vcpu: usize,
        gva: u64,
        access: Access,
    },
    LoadCr3 {
        vcpu: usize,
        state: Box<PagingState>,
        result: &'static str,
    },
    Memory {
        change: MemChange,
        fault_between: Option<(usize, u64)>,
    },
    RegisterMmio {
        start: u64,
        end: u64,
    },
    /// A hypercall block at `gpa` and what serving it returned.
    Hypercall {
        vcpu: usize,
        gpa: u64,
        block: Option<Block>,
        decoded: Option<Hypercall>,
        result: Option<i64>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MemChange {
    /// Same map, just the notification.
    Notify,
    /// Remove the upper region.
    Unplug,
    /// Put the removed upper region back.
    Replug,
    /// A fresh, zeroed upper region (replacing the old one if present).
    Fresh,
}

/// The MMU configuration an input asks for.
fn mmu_config(inp: &mut Input<'_>) -> MmuConfig {
    let max_pages = if inp.below(8) == 0 {
        512
    } else {
        8 + inp.below(25) as u32
    };
    MmuConfig {
        arena_base: ARENA_BASE,
        max_pages,
        vcpus: 1 + inp.below(2) as usize,
        prefetch_window: 1 << inp.below(10),
        cached_roots: inp.pick(&[0usize, 1, 2, 4, 16]),
        unsync: inp.bool(),
        max_mapping_level: 1 + inp.below(3) as u8,
        table_writes: if inp.bool() {
            TableWrites::Emulate
        } else {
            TableWrites::Unprotect
        },
        hole: inp.bool().then_some(Hole {
            root_index: 510,
            entry: (1 << 45) | PTE_P | PTE_W | PTE_A,
        }),
        hidden: Vec::new(),
        frames: Box::new(shadow_mmu::IdentityFrames),
        hidden_sink: None,
    }
}

/// Lays out guest tables for every mode, sharing frames across modes:
///
/// * 4-level: PML4 `0x10` and `0x11` -> PDPT `0x12` -> PD `0x13` -> PTs
///   `0x14`-`0x16` and `0x200` (upper region); PD[4] is a 2 MiB page;
///   PML4[1] -> PDPT `0x201` (empty, upper region);
/// * 5-level: PML5 `0x17` -> PML4 `0x10`;
/// * 32-bit: PD `0x18` -> PT `0x19`; PD[1] a 4 MiB page;
/// * PAE: PDPT `0x1a` -> PDs `0x13`, `0x1b`, -, `0x202`; `0x1b`[0] -> PT
///   `0x14`.
fn build_tables(mem: &GuestMemoryMmap) {
    let w64 = |gpa: u64, v: u64| {
        let _ = mem.write_obj(v, GuestAddress(gpa));
    };
    let w32 = |gpa: u64, v: u32| {
        let _ = mem.write_obj(v, GuestAddress(gpa));
    };
    for pml4 in [0x10u64, 0x11] {
        w64(pml4 << 12, (0x12 << 12) | UPPER);
    }
    w64((0x10 << 12) + 8, (0x201 << 12) | UPPER);
    w64(0x12 << 12, (0x13 << 12) | UPPER);
    for (i, pt) in [0x14u64, 0x15, 0x16, 0x200].iter().enumerate() {
        w64((0x13 << 12) + 8 * i as u64, (pt << 12) | UPPER);
        for j in 0..8u64 {
            let frame = 0x10_0000 + ((8 * i as u64 + j) << 12);
            w64((pt << 12) + 8 * j, frame | UPPER);
        }
    }
    w64((0x13 << 12) + 32, 0x20_0000 | UPPER | PTE_PS);
    w64(0x17 << 12, (0x10 << 12) | UPPER);
    w32(0x18 << 12, (0x19 << 12) | UPPER as u32);
    w32((0x18 << 12) + 4, (UPPER | PTE_PS) as u32);
    for j in 0..8u64 {
        w32(
            (0x19 << 12) + 4 * j,
            (0x10_0000 + (j << 12)) as u32 | UPPER as u32,
        );
    }
    w64(0x1a << 12, (0x13 << 12) | PTE_P);
    w64((0x1a << 12) + 8, (0x1b << 12) | PTE_P);
    w64((0x1a << 12) + 24, (0x202 << 12) | PTE_P);
    w64(0x1b << 12, (0x14 << 12) | UPPER);
}

/// What a CPU running on the shadow tables ends up doing for one access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cpu {
    Done(u64),
    Fault(GuestException),
    Exit(FaultOutcome),
}

fn error_code(access: Access) -> PfErrorCode {
    let mut ec = PfErrorCode::empty();
    match access.kind {
        AccessKind::Write => ec |= PfErrorCode::W,
        AccessKind::Fetch => ec |= PfErrorCode::ID,
        AccessKind::Read => {}
    }
    if access.user {
        ec |= PfErrorCode::U;
    }
    ec
}

/// Whether a host CPU with CR0.WP=1 and the guest's SMEP/SMAP lets
/// `access` through a shadow translation with rights `r`. As KVM does, the
/// host runs without SMEP and SMAP while the guest has paging off (they
/// mean nothing to the guest then).
fn shadow_allows(state: &PagingState, r: PteAccess, access: Access) -> bool {
    let user_page = r.contains(PteAccess::USER);
    let paging = state.mode() != PagingMode::Off;
    if access.user {
        return user_page
            && match access.kind {
                AccessKind::Read => true,
                AccessKind::Write => r.contains(PteAccess::WRITE),
                AccessKind::Fetch => r.contains(PteAccess::EXEC),
            };
    }
    match access.kind {
        AccessKind::Fetch => {
            r.contains(PteAccess::EXEC) && !(paging && user_page && state.cr4.contains(Cr4::SMEP))
        }
        kind => {
            let smap = paging && user_page && state.cr4.contains(Cr4::SMAP) && !state.eflags_ac;
            !smap && (kind == AccessKind::Read || r.contains(PteAccess::WRITE))
        }
    }
}

/// The harness's side of the VMM: apply what an operation asks for (no real
/// CPUs: every flush completes at once).
fn apply(m: &Mmu, c: Changes) {
    if c.flush_all {
        m.flush_completed();
    }
}

/// What the guest's own tables say about an access.
fn guest_says(
    mem: &GuestMemoryMmap,
    state: &PagingState,
    gva: u64,
    access: Access,
) -> Result<u64, GuestException> {
    match peek(mem, state, Gva(gva), access) {
        Ok(w) => Ok(w.gpa.0),
        Err(WalkError::PageFault(ec)) => Err(GuestException::PageFault {
            error_code: ec,
            cr2: Gva(gva),
        }),
        Err(_) => Err(GuestException::GeneralProtection),
    }
}

/// Drives the shadow MMU as a guest and its VMM would, recording every
/// operation for the failure report.
struct MmuDriver {
    m: Mmu,
    /// The paging state each vCPU last loaded.
    states: Vec<PagingState>,
    /// The upper region while it is unplugged.
    removed: Option<Arc<GuestRegionMmap>>,
    /// Registered MMIO ranges.
    mmio: Vec<(u64, u64)>,
    maxphyaddr: u8,
    gbpages: bool,
    /// Whether the configuration has a hole (at PML4/PML5 index 510).
    hole: bool,
    log: Vec<Op>,
    config: String,
}

impl MmuDriver {
    fn new(inp: &mut Input<'_>) -> Option<MmuDriver> {
        let config = mmu_config(inp);
        let config_text = format!("{config:?}");
        let vcpus = config.vcpus;
        let hole = config.hole.is_some();
        let mem = GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), LOW_RAM as usize),
            (GuestAddress(LOW_RAM), HIGH_RAM as usize),
        ])
        .ok()?;
        build_tables(&mem);
        let m = Mmu::new(GuestMemoryAtomic::new(mem), config).ok()?;
        let maxphyaddr = inp.pick(&[36u8, 40, 46, 47, 48, 52]);
        let gbpages = inp.below(4) != 0;
        let mut d = MmuDriver {
            m,
            states: Vec::new(),
            removed: None,
            mmio: Vec::new(),
            maxphyaddr,
            gbpages,
            hole,
            log: Vec::new(),
            config: config_text,
        };
        for vcpu in 0..vcpus {
            let state = d.paging_state(PagingMode::Level4, 0, 0);
            d.states.push(state);
            d.load(vcpu, state);
        }
        Some(d)
    }

    fn fail(&self, what: &str) -> ! {
        let mut ops = String::new();
        for (i, op) in self.log.iter().enumerate() {
            ops.push_str(&format!("\n  {i}: {op:?}"));
        }
        panic!(
            "{what}\nconfig: {}\nmaxphyaddr {}, gbpages {}\noperations:{ops}",
            self.config, self.maxphyaddr, self.gbpages
        );
    }

    fn guest_mem(&self) -> Arc<GuestMemoryMmap> {
        self.m.memory().memory().into_inner()
    }

    fn audit(&self) {
        if let Err(e) = self.m.audit() {
            self.fail(&format!("audit after the last operation: {e}"));
        }
    }

    /// A paging state for `mode` with CR3 at table `slot` (16: the mode's
    /// own top table) and control bits from `bits`.
    fn paging_state(&self, mode: PagingMode, slot: u64, bits: u16) -> PagingState {
        let top = match mode {
            PagingMode::Off | PagingMode::Level4 => 0,
            PagingMode::Level5 => 7,
            PagingMode::Bits32 => 8,
            PagingMode::Pae => 10,
        };
        let table = table_gpa(if slot >= 16 { top } else { slot });
        let mut cr0 = Cr0::PE | Cr0::ET;
        let mut cr4 = Cr4::empty();
        let mut efer = Efer::empty();
        let b = |i: u32| bits & (1 << i) != 0;
        if mode != PagingMode::Off {
            cr0 |= Cr0::PG;
        }
        if !b(0) {
            cr0 |= Cr0::WP;
        }
        cr4.set(Cr4::SMEP, b(1));
        cr4.set(Cr4::SMAP, b(2));
        efer.set(Efer::NXE, !b(3));
        cr4.set(Cr4::PSE, !b(4));
        cr4.set(Cr4::PKE, b(5));
        let mut cr3 = table;
        match mode {
            PagingMode::Pae => cr4 |= Cr4::PAE,
            PagingMode::Level4 | PagingMode::Level5 => {
                cr4 |= Cr4::PAE;
                efer |= Efer::LME | Efer::LMA;
                cr4.set(Cr4::LA57, mode == PagingMode::Level5);
                if b(6) {
                    // PCID 5, and bit 63: no flush.
                    cr4 |= Cr4::PCIDE;
                    cr3 |= 5 | if b(7) { 1 << 63 } else { 0 };
                }
            }
            _ => {}
        }
        if b(8) {
            // The PWT/PCD bits CR3 may carry.
            cr3 |= 0x18;
        }
        PagingState {
            cr0,
            cr3,
            cr4,
            efer,
            pkru: if b(9) { 0x5555_5550 } else { 0 },
            pkrs: 0,
            cpl: 0,
            eflags_ac: false,
            maxphyaddr: self.maxphyaddr,
            pdptrs: [0; 4],
            gbpages: self.gbpages,
            pse36: true,
        }
    }

    /// Loads `state` on `vcpu` as a CR3 write would, retrying as the
    /// MMU asks. Returns what happened.
    fn load(&mut self, vcpu: usize, mut state: PagingState) -> &'static str {
        if state.mode() == PagingMode::Pae {
            let mem = self.guest_mem();
            match load_pdptrs(&*mem, &state) {
                Ok(p) => state.pdptrs = p,
                // mov cr3 faults: nothing changes.
                Err(WalkError::GeneralProtection) => return "#GP",
                Err(e) => self.fail(&format!("load_pdptrs: {e:?}")),
            }
        }
        for _ in 0..4 {
            match self.m.load_paging_state(vcpu, &state) {
                Ok((_, c)) => {
                    apply(&self.m, c);
                    self.states[vcpu] = state;
                    return "loaded";
                }
                Err(MmuError::OutOfPages) => self.m.flush_completed(),
                Err(e) => self.fail(&format!("load_paging_state on vCPU {vcpu}: {e}")),
            }
        }
        self.fail("load_paging_state: still out of pages after every flush completed");
    }

    /// A guest-virtual address for `vcpu`'s mode.
    fn gva(&self, inp: &mut Input<'_>, vcpu: usize) -> u64 {
        let mode = self.states[vcpu].mode();
        if inp.below(10) == 0 {
            return inp.u64();
        }
        let l5 = if inp.below(8) == 0 { 1 } else { 0 };
        let l4 = inp.pick(&[0u64, 0, 1, 510, 511]);
        let l3 = inp.below(4);
        let l2 = inp.below(8);
        let l1 = inp.below(16);
        let off = inp.pick(&[0u64, 8, 0xff8, 0x800]);
        let gva = (l5 << 48) | (l4 << 39) | (l3 << 30) | (l2 << 21) | (l1 << 12) | off;
        match mode {
            PagingMode::Level5 => sign_extend(gva, 56),
            PagingMode::Level4 => sign_extend(gva, 47),
            _ => gva & 0xffff_ffff,
        }
    }

    fn vcpu(&self, inp: &mut Input<'_>) -> usize {
        inp.below(self.states.len() as u64) as usize
    }

    fn in_hole(&self, vcpu: usize, gva: u64) -> bool {
        let index = match self.states[vcpu].mode() {
            PagingMode::Level4 => (gva >> 39) & 511,
            PagingMode::Level5 => (gva >> 48) & 511,
            _ => return false,
        };
        self.hole && index == 510
    }

    /// Performs `access` as a CPU on the vCPU's shadow root.
    fn cpu_access(&mut self, vcpu: usize, gva: u64, access: Access) -> Cpu {
        let state = self.states[vcpu];
        let mut trace = Vec::new();
        for _ in 0..32 {
            let shadow = self.m.shadow_translate(vcpu, Gva(gva));
            if let Some((spa, r)) = shadow {
                if shadow_allows(&state, r, access) {
                    return Cpu::Done(spa);
                }
            }
            let (outcome, changes) = match self.m.page_fault(vcpu, Gva(gva), error_code(access)) {
                Ok(r) => r,
                Err(e) => self.fail(&format!("page_fault({vcpu}, {gva:#x}): {e}")),
            };
            trace.push((shadow, outcome, changes.flush_all));
            apply(&self.m, changes);
            match outcome {
                FaultOutcome::Fixed | FaultOutcome::Retry => continue,
                FaultOutcome::Inject(e) => return Cpu::Fault(e),
                other => return Cpu::Exit(other),
            }
        }
        let trace: Vec<String> = trace
            .iter()
            .take(4)
            .map(|(shadow, outcome, flush)| {
                format!("shadow {shadow:x?} -> {outcome:?} (flush_all {flush})")
            })
            .collect();
        self.fail(&format!(
            "access to {gva:#x} ({access:?}) on vCPU {vcpu} did not settle after 32 faults; \
             the first: {}; stats {:?}",
            trace.join(", "),
            self.m.stats()
        ));
    }

    /// An access, checked against the guest's own tables when it reached
    /// the MMU.
    fn access(&mut self, vcpu: usize, gva: u64, access: Access, ac: bool) {
        if let Err(e) = self.m.set_eflags_ac(vcpu, ac) {
            self.fail(&format!("set_eflags_ac: {e}"));
        }
        self.states[vcpu].eflags_ac = ac;
        let state = self.states[vcpu];
        let hit = self
            .m
            .shadow_translate(vcpu, Gva(gva))
            .is_some_and(|(_, r)| shadow_allows(&state, r, access));
        let mem = self.guest_mem();
        let expect = if self.in_hole(vcpu, gva) {
            Err(GuestException::PageFault {
                error_code: access.error_code_bits(state.reports_fetch()),
                cr2: Gva(gva),
            })
        } else {
            guest_says(&mem, &state, gva, access)
        };
        let got = self.cpu_access(vcpu, gva, access);
        self.log.push(Op::Access {
            vcpu,
            gva,
            access,
            ac,
            result: format!("{got:?}, guest says {expect:?}, hit {hit}"),
        });
        if let Cpu::Exit(FaultOutcome::Emulate { gpa }) = got {
            // The VMM emulates the store (the same value again) and
            // reports it.
            let at = GuestAddress(gpa.0 & !7);
            if let Ok(v) = mem.read_obj::<u64>(at) {
                let _ = mem.write_obj(v, at);
                apply(&self.m, self.m.track_write(at, 8));
            }
        }
        if hit {
            // A hit may be a stale TLB-like translation: nothing to check.
            return;
        }
        let ram = |gpa: u64| mem.address_in_range(GuestAddress(gpa));
        let (arena, _, arena_size) = self.m.arena_region();
        let hidden = |gpa: u64| (arena..arena + arena_size).contains(&gpa);
        let mmio = |gpa: u64| self.mmio.iter().any(|&(s, e)| (s..e).contains(&gpa));
        let ok = match (expect, got) {
            (Ok(gpa), Cpu::Done(spa)) => gpa == spa && (ram(gpa) || mmio(gpa)) && !hidden(gpa),
            (Err(e), Cpu::Fault(f)) => e == f,
            (Ok(gpa), Cpu::Exit(FaultOutcome::Mmio { gpa: g })) => {
                g.0 == gpa && (hidden(gpa) || !(ram(gpa) || mmio(gpa)))
            }
            (Ok(gpa), Cpu::Exit(FaultOutcome::Emulate { gpa: g })) => {
                g.0 == gpa && access.kind == AccessKind::Write
            }
            _ => false,
        };
        if !ok {
            self.fail(&format!(
                "access {gva:#x} ({access:?}, AC {ac}) on vCPU {vcpu}: the guest's tables \
                 say {expect:?}, the CPU on shadow tables got {got:?}"
            ));
        }
    }

    /// A guest store of `bytes` at `gpa`: emulated and reported if it hits
    /// a write-protected table, made directly (then `flush`) otherwise.
    fn guest_write(&mut self, vcpu: usize, gpa: u64, bytes: Vec<u8>, flush: Flush) {
        let len = bytes.len() as u64;
        let last = gpa.saturating_add(len.max(1) - 1);
        let emulated = (gpa >> 12..=last >> 12).any(|g| self.m.is_write_protected(Gfn(g)));
        let mem = self.guest_mem();
        // A store to no RAM (an unplugged region) goes nowhere.
        let _ = mem.write_slice(&bytes, GuestAddress(gpa));
        self.log.push(Op::Write {
            vcpu,
            gpa,
            bytes,
            flush,
            emulated,
        });
        if emulated {
            apply(&self.m, self.m.track_write(GuestAddress(gpa), len as usize));
            return;
        }
        let changes = match flush {
            Flush::Tlb => self.m.flush_tlb(vcpu),
            Flush::Invlpg(gva) => self.m.invlpg(vcpu, Gva(gva)),
            Flush::Nothing => Ok(Changes::default()),
        };
        match changes {
            Ok(c) => apply(&self.m, c),
            Err(e) => self.fail(&format!("flush after a write: {e}")),
        }
    }

    fn memory(&mut self, change: MemChange, fault_between: Option<(usize, u64)>) {
        let atomic: &GuestMemoryAtomic<GuestMemoryMmap> = self.m.memory();
        let current = self.guest_mem();
        let high = GuestAddress(LOW_RAM);
        let has_high = current.address_in_range(high);
        let new_map = match change {
            MemChange::Notify => None,
            MemChange::Unplug if has_high => {
                current
                    .remove_region(high, HIGH_RAM)
                    .ok()
                    .map(|(map, gone)| {
                        self.removed = Some(gone);
                        map
                    })
            }
            MemChange::Replug if !has_high => self
                .removed
                .take()
                .and_then(|r| current.insert_region(r).ok()),
            MemChange::Fresh => {
                let base = if has_high {
                    current.remove_region(high, HIGH_RAM).ok().map(|(m, _)| m)
                } else {
                    Some((*current).clone())
                };
                let region = GuestRegionMmap::from_range(high, HIGH_RAM as usize, None).ok();
                match (base, region) {
                    (Some(b), Some(r)) => b.insert_region(Arc::new(r)).ok(),
                    _ => None,
                }
            }
            _ => None,
        };
        if let Some(map) = new_map {
            match atomic.lock() {
                Ok(guard) => guard.replace(map),
                Err(_) => self.fail("guest memory lock poisoned"),
            }
        }
        self.log.push(Op::Memory {
            change,
            fault_between,
        });
        if let Some((vcpu, gva)) = fault_between {
            // A fault that lands between the swap and the notification.
            let _ = self.cpu_access(vcpu, gva, Access::at_cpl(AccessKind::Read, 0));
        }
        apply(&self.m, self.m.memory_changed());
    }

    fn step(&mut self, inp: &mut Input<'_>) {
        match inp.below(16) {
            0..=2 => {
                let vcpu = self.vcpu(inp);
                let slot = inp.u8();
                let index = if inp.bool() {
                    inp.below(512)
                } else {
                    inp.below(16)
                };
                let wide = inp.below(4) != 0;
                let value = mmu_entry(inp);
                let gpa = table_gpa(slot.into()) + if wide { 8 * index } else { 4 * index };
                let bytes = if wide {
                    value.to_le_bytes().to_vec()
                } else {
                    (value as u32).to_le_bytes().to_vec()
                };
                let flush = match inp.below(3) {
                    0 => Flush::Tlb,
                    1 => Flush::Invlpg(self.gva(inp, vcpu)),
                    _ => Flush::Nothing,
                };
                self.guest_write(vcpu, gpa, bytes, flush);
            }
            3 => {
                // An odd store: any length 1..=16 at any offset, possibly
                // across a page boundary.
                let vcpu = self.vcpu(inp);
                let gpa = table_gpa(inp.u8().into()) + inp.below(4096);
                let len = 1 + inp.below(16) as usize;
                let bytes: Vec<u8> = (0..len).map(|_| inp.u8()).collect();
                let flush = if inp.bool() {
                    Flush::Tlb
                } else {
                    Flush::Nothing
                };
                self.guest_write(vcpu, gpa, bytes, flush);
            }
            4 => {
                // A write the VMM reports without one having happened (or
                // to a page that is no table): must change nothing visible.
                let gpa = match inp.below(4) {
                    0 => inp.u64() & ((1 << 52) - 1),
                    1 => 0x10_0000 + inp.below(1 << 16),
                    _ => table_gpa(inp.u8().into()) + inp.below(4096),
                };
                let len = inp.pick(&[0usize, 1, 2, 3, 4, 5, 7, 8, 9, 12, 15, 16, 4095, 4096, 8193]);
                self.log.push(Op::TrackWrite { gpa, len });
                apply(&self.m, self.m.track_write(GuestAddress(gpa), len));
            }
            5..=9 => {
                let vcpu = self.vcpu(inp);
                let gva = self.gva(inp, vcpu);
                let access = Access {
                    kind: access_kind(inp.below(3)),
                    user: inp.bool(),
                    implicit: false,
                };
                let ac = inp.below(4) == 0;
                self.access(vcpu, gva, access, ac);
            }
            10 => {
                let vcpu = self.vcpu(inp);
                let gva = self.gva(inp, vcpu);
                self.log.push(Op::Invlpg { vcpu, gva });
                match self.m.invlpg(vcpu, Gva(gva)) {
                    Ok(c) => apply(&self.m, c),
                    Err(e) => self.fail(&format!("invlpg: {e}")),
                }
            }
            11 => {
                let vcpu = self.vcpu(inp);
                if inp.bool() {
                    self.log.push(Op::FlushTlb { vcpu });
                    match self.m.flush_tlb(vcpu) {
                        Ok(c) => apply(&self.m, c),
                        Err(e) => self.fail(&format!("flush_tlb: {e}")),
                    }
                } else {
                    let gva = self.gva(inp, vcpu);
                    self.log.push(Op::Prefetch { vcpu, gva });
                    match self.m.prefetch(vcpu, Gva(gva)) {
                        Ok(c) => apply(&self.m, c),
                        Err(e) => self.fail(&format!("prefetch: {e}")),
                    }
                }
            }
            12 | 13 => {
                let vcpu = self.vcpu(inp);
                let mode = match inp.below(16) {
                    0..=6 => PagingMode::Level4,
                    7..=9 => PagingMode::Bits32,
                    10..=12 => PagingMode::Pae,
                    13 | 14 => PagingMode::Level5,
                    _ => PagingMode::Off,
                };
                let slot = inp.below(24);
                let bits = inp.u16();
                let state = self.paging_state(mode, slot, bits);
                self.log.push(Op::LoadCr3 {
                    vcpu,
                    state: Box::new(state),
                    result: "failed",
                });
                let result = self.load(vcpu, state);
                if let Some(Op::LoadCr3 { result: r, .. }) = self.log.last_mut() {
                    *r = result;
                }
            }
            14 => {
                let vcpu = self.vcpu(inp);
                let gva = self.gva(inp, vcpu);
                let access = Access {
                    kind: access_kind(inp.below(3)),
                    user: inp.bool(),
                    implicit: false,
                };
                self.log.push(Op::GvaToGpa { vcpu, gva, access });
                let state = self.states[vcpu];
                let mem = self.guest_mem();
                let expect = peek(&*mem, &state, Gva(gva), access).map(|w| w.gpa);
                match self.m.gva_to_gpa(vcpu, Gva(gva), access) {
                    Ok(gpa) if expect == Ok(gpa) => {}
                    Err(MmuError::Walk(e)) if expect == Err(e) => {}
                    other => self.fail(&format!(
                        "gva_to_gpa({gva:#x}, {access:?}) = {other:?}, the walker says {expect:?}"
                    )),
                }
            }
            _ => {
                if inp.below(4) == 0 {
                    let (start, end) = match inp.below(4) {
                        0 => (LOW_RAM + HIGH_RAM, LOW_RAM + HIGH_RAM + (2 << 20)),
                        1 => (1 << 32, (1 << 32) + (1 << 20)),
                        2 => (ARENA_BASE, ARENA_BASE + (1 << 20)),
                        _ => (LOW_RAM, LOW_RAM + HIGH_RAM),
                    };
                    self.log.push(Op::RegisterMmio { start, end });
                    self.mmio.push((start, end));
                    self.m.register_mmio(start..end);
                } else {
                    let change = match inp.below(4) {
                        0 => MemChange::Notify,
                        1 => MemChange::Unplug,
                        2 => MemChange::Replug,
                        _ => MemChange::Fresh,
                    };
                    let between = if inp.bool() {
                        let vcpu = self.vcpu(inp);
                        Some((vcpu, self.gva(inp, vcpu)))
                    } else {
                        None
                    };
                    self.memory(change, between);
                }
            }
        }
    }
}

impl fmt::Debug for MmuDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MmuDriver")
            .field("config", &self.config)
            .field("ops", &self.log.len())
            .finish_non_exhaustive()
    }
}

/// Most operations one input runs.
const MAX_OPS: usize = 96;

/// Fuzzes the [`ShadowMmu`] implementation: a configuration (tiny page
/// caps, prefetch windows, unsync on/off, 1 or 2 vCPUs, with or without a
/// hole), then up to 96 operations: guest table writes (emulated and
/// reported through `track_write` when the page is write-protected, direct
/// and followed by a flush, an `invlpg` or nothing otherwise), odd and
/// spurious `track_write`s, accesses through a CPU-like fault loop, `invlpg`,
/// TLB flushes, prefetches, `gva_to_gpa`, CR3 loads in every paging mode,
/// memory unplug, replug and remap with `memory_changed`, and MMIO
/// registration.
///
/// After every operation the MMU's own [`ShadowMmu::audit`] must pass, and
/// an access that reached the MMU must get exactly the guest walker's
/// verdict; otherwise the harness panics with the operation log.
pub fn mmu_ops(data: &[u8]) {
    let mut inp = Input::new(data);
    let Some(mut d) = MmuDriver::new(&mut inp) else {
        return;
    };
    d.audit();
    for _ in 0..MAX_OPS {
        if inp.is_empty() {
            break;
        }
        d.step(&mut inp);
        d.audit();
    }
}

// ---------------------------------------------------------------------------
// (c) Hypercalls.
// ---------------------------------------------------------------------------

/// Where the hypercall harness places blocks and `MMU_UPDATE` lists.
const BLOCK_PAGE: u64 = 0x8000;
const LIST_PAGE: u64 = 0x9000;

/// The guest vCPU state the hypercall glue keeps besides the MMU.
#[derive(Debug, Default)]
// Kept as the glue keeps it; nothing here delivers exceptions.
#[allow(dead_code)]
struct Glue {
    trap_table: u64,
    kernel_rsp: u64,
}

/// A vCPU of the hypercall harness, as the shared hypercall service
/// ([`shadow_mmu::hypercall::serve`], which the KVM glue runs too) sees it.
struct FuzzVcpu<'a> {
    d: &'a mut MmuDriver,
    glue: &'a mut Glue,
    vcpu: usize,
}

impl HypercallVcpu for FuzzVcpu<'_> {
    type Error = MmuError;

    fn mmu(&self) -> &Mmu {
        &self.d.m
    }

    fn index(&self) -> usize {
        self.vcpu
    }

    fn paging_state(&self) -> Option<PagingState> {
        Some(self.d.states[self.vcpu])
    }

    fn load_paging_state(&mut self, state: PagingState) -> Result<(), MmuError> {
        self.d.log.push(Op::LoadCr3 {
            vcpu: self.vcpu,
            state: Box::new(state),
            result: "hypercall",
        });
        self.d.load(self.vcpu, state);
        Ok(())
    }

    fn set_trap_table(&mut self, table: u64, kernel_rsp: u64) {
        self.glue.trap_table = table;
        self.glue.kernel_rsp = kernel_rsp;
    }

    fn apply(&mut self, changes: Changes) {
        apply(&self.d.m, changes);
    }

    fn wrote(&mut self, gpa: GuestAddress, len: usize) {
        let mem = self.d.guest_mem();
        let mut bytes = vec![0u8; len];
        let _ = mem.read_slice(&mut bytes, gpa);
        self.d.log.push(Op::Write {
            vcpu: self.vcpu,
            gpa: gpa.0,
            bytes,
            flush: Flush::Nothing,
            emulated: true,
        });
    }
}

/// Checks `Block::read` against the ABI's rules for a block at `gpa`.
fn check_block(mem: &GuestMemoryMmap, gpa: u64, read: &Result<Block, AbiError>) {
    let in_ram = gpa.is_multiple_of(8) && gpa < 1 << 32 && mem.check_range(GuestAddress(gpa), 64);
    match read {
        Ok(b) => {
            assert!(in_ram, "Block::read accepted a bad block at {gpa:#x}");
            assert_eq!(b.gpa, GuestAddress(gpa));
            let word = |i: u64| mem.read_obj::<u64>(GuestAddress(gpa + 8 * i)).ok();
            assert_eq!(Some(b.nr), word(0), "block number");
            for (i, a) in b.args.iter().enumerate() {
                assert_eq!(Some(*a), word(1 + i as u64), "block argument {i}");
            }
        }
        Err(AbiError::BadBlock(at)) => {
            assert!(!in_ram, "Block::read refused a good block at {gpa:#x}");
            assert_eq!(*at, gpa);
        }
        Err(e) => panic!("Block::read failed with {e:?}"),
    }
}

/// Checks `Block::decode` against the ABI's argument rules.
fn check_decode(b: &Block, decoded: &Result<Hypercall, AbiError>) {
    let [a0, a1, a2, a3] = b.args;
    let valid = match b.nr {
        abi::nr::SET_TRAP_TABLE => a0.is_multiple_of(8),
        abi::nr::SET_PAGING_BITS => a0 & !0xf == 0,
        abi::nr::MMU_UPDATE => a0.is_multiple_of(8) && a1 <= abi::MAX_MMU_UPDATES,
        // ABI.md: an 8-byte aligned buffer, room for at most 64 regions.
        abi::nr::MEMORY_MAP => a0.is_multiple_of(8) && a1 <= 64,
        _ => true,
    };
    match decoded {
        Ok(call) => {
            assert!(valid, "decode accepted invalid {b:?} as {call:?}");
            let expected = match b.nr {
                abi::nr::LOAD_CR3 => Hypercall::LoadCr3 { cr3: a0 },
                abi::nr::INVLPG => Hypercall::Invlpg { gva: a0 },
                abi::nr::FLUSH_TLB => Hypercall::FlushTlb,
                abi::nr::SET_TRAP_TABLE => Hypercall::SetTrapTable {
                    table: a0,
                    kernel_rsp: a1,
                },
                abi::nr::SET_PAGING_BITS => Hypercall::SetPagingBits { bits: a0 },
                abi::nr::MMU_UPDATE => Hypercall::MmuUpdate {
                    list: a0,
                    count: a1,
                },
                abi::nr::MEMORY_MAP => Hypercall::MemoryMap {
                    buf: a0,
                    capacity: a1,
                },
                nr => Hypercall::Other {
                    nr,
                    args: [a0, a1, a2, a3],
                },
            };
            assert_eq!(*call, expected, "decode of {b:?}");
        }
        Err(AbiError::InvalidArgument { nr }) => {
            assert!(!valid, "decode refused valid {b:?}");
            assert_eq!(*nr, b.nr);
        }
        Err(e) => panic!("decode of {b:?} failed with {e:?}"),
    }
}

/// Fuzzes the guest ABI: hypercall blocks and `MMU_UPDATE` lists written
/// into guest memory from `data` (any number, arguments raw or pointing at
/// the guest's tables, blocks anywhere), read with [`Block::read`], decoded
/// with [`Block::decode`], and served as the KVM glue serves them, against
/// a shadow MMU with live shadow state (accesses between hypercalls).
///
/// Panics if the decoder breaks the ABI's rules (`resources/ABI.md`), if a
/// served call breaks the MMU's audit, or if an access that reached the MMU
/// disagrees with the guest's tables.
///
/// This drives [`shadow_mmu::abi`] and the MMU without KVM; the glue's own
/// code (`ShadowVm::hypercall`, the mailbox batching) needs `/dev/kvm` to
/// construct and is not reached.
pub fn hypercall(data: &[u8]) {
    let mut inp = Input::new(data);
    let Some(mut d) = MmuDriver::new(&mut inp) else {
        return;
    };
    let mut glue = Glue::default();
    for _ in 0..MAX_OPS {
        if inp.is_empty() {
            break;
        }
        if inp.below(3) == 0 {
            // Shadow state to hit: accesses, table writes, CR3 loads...
            d.step(&mut inp);
            d.audit();
            continue;
        }
        let vcpu = d.vcpu(&mut inp);
        // The block: usually in the block page, sometimes anywhere.
        let gpa = match inp.below(8) {
            0 => inp.u64(),
            1 => LOW_RAM + HIGH_RAM - 64 + 8 * inp.below(16),
            2 => LOW_RAM - 8 * inp.below(16),
            3 => (1 << 32) - 8 * inp.below(16),
            4 => table_gpa(inp.u8().into()) + 8 * inp.below(512),
            _ => BLOCK_PAGE + 8 * inp.below(32) + if inp.below(8) == 0 { 4 } else { 0 },
        };
        let nr = if inp.below(8) == 0 {
            inp.u64()
        } else {
            1 + inp.below(10)
        };
        let mut args = [0u64; 4];
        for a in args.iter_mut() {
            *a = match inp.below(8) {
                0 => inp.u64(),
                1 => inp.below(32),
                2 => table_gpa(inp.u8().into()) | (inp.u16() & 0xfff) as u64,
                3 => LIST_PAGE + 16 * inp.below(256),
                4 => d.gva(&mut inp, vcpu),
                5 => abi::MAX_MMU_UPDATES + inp.below(3) - 1,
                _ => inp.below(16),
            };
        }
        // The guest writes an MMU_UPDATE list, then the block, with its
        // own stores (emulated where they hit a write-protected table).
        if nr == abi::nr::MMU_UPDATE {
            let entries = inp.below(6);
            let mut at = args[0];
            for _ in 0..entries {
                let target = match inp.below(6) {
                    0 => inp.u64(),
                    1 => table_gpa(inp.u8().into()) + inp.below(4096),
                    _ => table_gpa(inp.u8().into()) + 8 * inp.below(512),
                };
                let value = mmu_entry(&mut inp);
                let mut pair = target.to_le_bytes().to_vec();
                pair.extend_from_slice(&value.to_le_bytes());
                d.guest_write(vcpu, at, pair, Flush::Nothing);
                at = at.wrapping_add(16);
            }
        }
        let mut words = Vec::with_capacity(40);
        for w in [nr, args[0], args[1], args[2], args[3]] {
            words.extend_from_slice(&w.to_le_bytes());
        }
        d.guest_write(vcpu, gpa, words, Flush::Nothing);
        d.audit();

        let mem = d.guest_mem();
        let read = Block::read(&mem, gpa);
        check_block(&mem, gpa, &read);
        d.log.push(Op::Hypercall {
            vcpu,
            gpa,
            block: read.ok(),
            decoded: None,
            result: None,
        });
        let Ok(block) = read else {
            continue;
        };
        let decoded = block.decode();
        check_decode(&block, &decoded);
        if let Some(Op::Hypercall { decoded: dec, .. }) = d.log.last_mut() {
            *dec = decoded.ok();
        }
        let served = {
            let mut v = FuzzVcpu {
                d: &mut d,
                glue: &mut glue,
                vcpu,
            };
            match hypercall::serve(&mem, &mut v, &block) {
                Ok(served) => served,
                Err(e) => d.fail(&format!("hypercall: {e}")),
            }
        };
        let result = match served {
            Served::Done(result) => result,
            Served::Vmm { .. } => {
                // Console, exit, start vCPU and unknown numbers: the VMM
                // answers, a store into guest memory reported to the MMU
                // as the KVM glue's `complete_hypercall` does.
                let result = abi::result::E_UNKNOWN;
                block.complete(&mem, result);
                apply(
                    &d.m,
                    d.m.track_write(GuestAddress(gpa + abi::RESULT_OFFSET), 8),
                );
                result
            }
        };
        d.log.push(Op::Hypercall {
            vcpu,
            gpa,
            block: None,
            decoded: None,
            result: Some(result),
        });
        let written = mem.read_obj::<i64>(GuestAddress(gpa + abi::RESULT_OFFSET));
        assert_eq!(
            written.ok(),
            Some(result),
            "the result is not in the block"
        );
        d.audit();
    }
}

// ---------------------------------------------------------------------------
// (d) Scenarios.
// ---------------------------------------------------------------------------

/// Fuzzes `shadow-run walk`: `data` as scenario text (lossily decoded when
/// it is not UTF-8) through [`Scenario::parse`] and, when it parses,
/// [`run`]. Panics if an error message spans lines or lacks its field, if a
/// parsed scenario breaks what validation promises, if running it fails
/// other than by not getting guest RAM, or if the output is not one JSON
/// line per access plus the memory line.
pub fn scenario(data: &[u8]) {
    let text = match std::str::from_utf8(data) {
        Ok(t) => Cow::Borrowed(t),
        Err(_) => String::from_utf8_lossy(data),
    };
    let s = match Scenario::parse(&text) {
        Ok(s) => s,
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.contains('\n'), "error message spans lines: {msg:?}");
            assert_eq!(
                e.field().is_none(),
                matches!(e, ScenarioError::Json(_)),
                "{e:?}"
            );
            if let Some(field) = e.field() {
                assert!(
                    msg.starts_with(field),
                    "{msg:?} does not start with {field:?}"
                );
            }
            return;
        }
    };
    // What validation promises.
    assert!(s.memory_size > 0 && s.memory_size <= crate::scenario::MAX_MEMORY_SIZE);
    assert!(s
        .memory_size
        .is_multiple_of(crate::scenario::MEMORY_GRANULE));
    assert!((32..=52).contains(&s.cpu.maxphyaddr));
    for w in &s.writes {
        assert!(
            w.gpa.is_multiple_of(w.width.bytes()) && w.gpa < s.memory_size,
            "{w:?}"
        );
        assert!(
            w.width.bytes() == 8 || w.value <= u64::from(u32::MAX),
            "{w:?}"
        );
    }

    let mut out = Vec::new();
    match run(&s, &mut out) {
        Ok(()) => {}
        // The host could not map guest RAM: not the scenario's fault.
        Err(RunError::GuestRam { .. }) => return,
        Err(e) => panic!("running a valid scenario failed: {e}"),
    }
    let Ok(out) = String::from_utf8(out) else {
        panic!("output is not UTF-8");
    };
    let lines: Vec<&str> = out.lines().collect();
    let gp = lines.first().is_some_and(|l| l.contains("cr3_load"));
    let expected = if gp { 2 } else { s.accesses.len() + 1 };
    assert_eq!(lines.len(), expected, "output lines: {out}");
    for (i, line) in lines.iter().enumerate() {
        let v: serde_json::Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => panic!("output line {i} is not JSON ({e}): {line}"),
        };
        if !gp && i < s.accesses.len() {
            let gva = format!("{:#x}", s.accesses[i].gva);
            assert_eq!(v["gva"].as_str(), Some(gva.as_str()), "line {i}: {line}");
            if v["fault"] == serde_json::Value::Bool(false) {
                let gpa = v["gpa"]
                    .as_str()
                    .and_then(crate::scenario::parse_hex)
                    .unwrap_or(u64::MAX);
                assert!(
                    gpa < 1u64 << s.cpu.maxphyaddr,
                    "gpa beyond MAXPHYADDR in line {i}: {line}"
                );
            }
        }
    }
    assert!(
        lines.last().is_some_and(|l| l.starts_with("{\"memory\"")),
        "no memory line: {out}"
    );
}
