// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The access-rights matrix of kvm-unit-tests' `x86/access.c`, run against
//! the walker in every paging mode.
//!
//! Like access.c, each case is a set of flags: bits of the PTE and the PDE,
//! CPU state, and the access to make. The tables are rebuilt for the case,
//! the walker makes the access (twice with `Twice`: a supervisor read first)
//! and three answers must agree exactly:
//!
//! * the walker's;
//! * the reference model of `oracle/` (whole `GuestWalk`, and memory);
//! * `ac_emulate`, a transcription of access.c's own expectation code
//!   (`ac_emulate_access` / `ac_test_permissions`), extended for the flags
//!   access.c does not have (SMEP with user accesses, SMAP + EFLAGS.AC) and
//!   for the other modes: fault or not, error code, gpa, PTE and PDE after.
//!
//! Case sets are enumerated exactly as access.c's `ac_test_bump` would (every
//! flag combination `ac_test_legal` accepts), without iterating over the
//! illegal ones: the flags that `legal` reads are enumerated and filtered, the
//! others are free. The counts are checked against closed forms derived by
//! hand below.
//!
//! The six scenario tests at the end transcribe access.c's bug reproducers.

mod oracle;

use oracle::glue::{self, Mem, EXACT};
use oracle::{Acc, Kind, Memory, Outcome, A, D, P, PF_ID, PF_P, PF_PK, PF_RSVD, PF_U, PF_W, PS};
use shadow_mmu::{
    load_pdptrs, walk, Access, AccessKind, Cr0, Cr4, Efer, GuestWalk, Gva, PagingState, WalkError,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

// ---------------------------------------------------------------------------
// Flags.
// ---------------------------------------------------------------------------

/// One access.c flag (plus the ones this port adds). The value is the bit
/// in a case's flag word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum F {
    PteW,
    PteU,
    PteA,
    PteD,
    PteNx,
    PteP,
    Pte51,
    Pte36,
    /// PTE bit 59: a protection-key bit in IA-32e paging, reserved in PAE
    /// paging (SDM Table 4-11, bits 62:M).
    Pte59,
    PdeW,
    PdeU,
    PdeA,
    PdeD,
    PdePse,
    PdeNx,
    PdeP,
    Pde51,
    Pde36,
    /// PDE bit 59 (see `Pte59`).
    Pde59,
    /// Bit 13 of a large-page PDE: reserved in PAE / IA-32e paging; with
    /// 32-bit paging and PSE-36 it is physical-address bit 32.
    Pde13,
    /// Bit 17 of a 4-MByte PDE: reserved with MAXPHYADDR = 36 (bits 21:17).
    Pde17,
    /// Bit 21 of a 4-MByte PDE: always reserved.
    Pde21,
    PdpteRo,
    PkuAd,
    PkuWd,
    PkuPkey,
    User,
    Write,
    Fetch,
    Twice,
    EferNx,
    Wp,
    Smep,
    Smap,
    /// EFLAGS.AC (only with SMAP, as access.c only tests PKRU with PKE).
    Ac,
    Pke,
    /// CR4.PSE (32-bit paging only).
    Cr4Pse,
    /// CPUID PSE-36 (32-bit paging only).
    Pse36,
}

const ALL_FLAGS: [F; 38] = [
    F::PteW,
    F::PteU,
    F::PteA,
    F::PteD,
    F::PteNx,
    F::PteP,
    F::Pte51,
    F::Pte36,
    F::Pte59,
    F::PdeW,
    F::PdeU,
    F::PdeA,
    F::PdeD,
    F::PdePse,
    F::PdeNx,
    F::PdeP,
    F::Pde51,
    F::Pde36,
    F::Pde59,
    F::Pde13,
    F::Pde17,
    F::Pde21,
    F::PdpteRo,
    F::PkuAd,
    F::PkuWd,
    F::PkuPkey,
    F::User,
    F::Write,
    F::Fetch,
    F::Twice,
    F::EferNx,
    F::Wp,
    F::Smep,
    F::Smap,
    F::Ac,
    F::Pke,
    F::Cr4Pse,
    F::Pse36,
];

const fn m(f: F) -> u64 {
    1 << f as u8
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Flags(u64);

impl Flags {
    fn has(self, f: F) -> bool {
        self.0 & m(f) != 0
    }
    fn without(self, f: F) -> Flags {
        Flags(self.0 & !m(f))
    }
}

impl std::fmt::Debug for Flags {
    fn fmt(&self, fm: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = ALL_FLAGS
            .iter()
            .filter(|&&f| self.has(f))
            .map(|f| format!("{f:?}"))
            .collect();
        write!(fm, "[{}]", names.join(" "))
    }
}

/// access.c's `ac_test_legal`, with this port's additions marked.
fn legal(f: Flags) -> bool {
    // (access.c also rejects CR4.SMEP outright and user accesses with SMEP,
    // both for its own harness's sake -- the test code would become
    // non-executable. Here nothing executes, so SMEP is tested with every
    // access.)
    if f.has(F::Fetch) && f.has(F::Write) {
        return false;
    }
    // Only test protection-key faults with CR4.PKE = 1.
    if !f.has(F::Pke) && (f.has(F::PkuAd) || f.has(F::PkuWd)) {
        return false;
    }
    // Large-page PDE bits are meaningless with a PTE.
    if !f.has(F::PdePse) && (f.has(F::Pde13) || f.has(F::Pde17) || f.has(F::Pde21)) {
        return false;
    }
    // (Addition) EFLAGS.AC only matters with SMAP.
    if !f.has(F::Smap) && f.has(F::Ac) {
        return false;
    }
    // Only one reserved bit at a time.
    let mut reserved = f.0
        & (m(F::Pde51)
            | m(F::Pde36)
            | m(F::Pde59)
            | m(F::Pde13)
            | m(F::Pde17)
            | m(F::Pde21)
            | m(F::Pte51)
            | m(F::Pte36)
            | m(F::Pte59));
    if !f.has(F::EferNx) {
        reserved |= f.0 & (m(F::PdeNx) | m(F::PteNx));
    }
    reserved & reserved.wrapping_sub(1) == 0
}

/// The flags `legal` looks at; all others combine freely.
const CONSTRAINED: u64 = m(F::Fetch)
    | m(F::Write)
    | m(F::Pke)
    | m(F::PkuAd)
    | m(F::PkuWd)
    | m(F::PdePse)
    | m(F::Pde13)
    | m(F::Pde17)
    | m(F::Pde21)
    | m(F::Smap)
    | m(F::Ac)
    | m(F::Pde51)
    | m(F::Pde36)
    | m(F::Pde59)
    | m(F::Pte51)
    | m(F::Pte36)
    | m(F::Pte59)
    | m(F::EferNx)
    | m(F::PdeNx)
    | m(F::PteNx);

// ---------------------------------------------------------------------------
// Modes and their table layouts.
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mm {
    Bits32,
    Pae,
    L4,
    L5,
}

impl Mm {
    fn long(self) -> bool {
        matches!(self, Mm::L4 | Mm::L5)
    }
    /// The flags that exist in this mode.
    fn flags(self) -> u64 {
        let common = [
            F::PteW,
            F::PteU,
            F::PteA,
            F::PteD,
            F::PteP,
            F::PdeW,
            F::PdeU,
            F::PdeA,
            F::PdeD,
            F::PdePse,
            F::PdeP,
            F::User,
            F::Write,
            F::Fetch,
            F::Twice,
            F::EferNx,
            F::Wp,
            F::Smep,
            F::Smap,
            F::Ac,
            // With PAE and 32-bit paging CR4.PKE must change nothing; PKRU is
            // then all-deny to catch a walker that applies it anyway.
            F::Pke,
        ];
        let extra: &[F] = match self {
            Mm::Bits32 => &[F::Pde13, F::Pde17, F::Pde21, F::Cr4Pse, F::Pse36],
            Mm::Pae => &[
                F::PteNx,
                F::Pte51,
                F::Pte36,
                F::Pte59,
                F::PdeNx,
                F::Pde51,
                F::Pde36,
                F::Pde59,
                F::Pde13,
            ],
            Mm::L4 | Mm::L5 => &[
                F::PteNx,
                F::Pte51,
                F::Pte36,
                F::PdeNx,
                F::Pde51,
                F::Pde36,
                F::Pde13,
                F::PdpteRo,
                F::PkuAd,
                F::PkuWd,
                F::PkuPkey,
            ],
        };
        common.iter().chain(extra).fold(0, |acc, &f| acc | m(f))
    }

    /// The number of cases, derived by hand from `legal`:
    ///
    /// * access kind: {read, write, fetch} x user x twice = 3 * 2 * 2 = 12;
    /// * SMAP/AC: {off, on, on+AC} = 3; SMEP 2; CR0.WP 2;
    /// * the five non-reserved flags of the PTE and of the PDE
    ///   (P, W, U, A, D): 2^10 = 1024;
    /// * 4/5-level: PKE/AD/WD: 1 + 4 = 5, times pkey 2 = 10; PDPTE.RO 2;
    ///   NX and reserved bits (PDE.PSE, PDE.13, EFER.NX, PTE.NX, PDE.NX,
    ///   PTE.51, PTE.36, PDE.51, PDE.36; at most one reserved):
    ///   NX=1: 2*2 (NX bits) * [(PSE=0: 1+4) + (PSE=1: 1+5)] = 44,
    ///   NX=0: (PSE=0: 1+6) + (PSE=1: 1+7) = 15; 59 in all.
    ///   12*3*2*2 * 1024 * 10 * 2 * 59 = 173_998_080.
    /// * PAE: PKE 2 (ignored); reserved group with 59 as well:
    ///   NX=1: 4 * [(1+6) + (1+7)] = 60, NX=0: (1+8) + (1+9) = 19; 79 in all.
    ///   12*3*2*2 * 1024 * 2 * 79 = 23_298_048.
    /// * 32-bit: EFER.NX 2, CR4.PSE 2, PSE-36 2, PKE 2; PDE.PSE with at most
    ///   one of PDE.13/17/21: 1 + 4 = 5.
    ///   12*3*2*2 * 1024 * 2*2*2*2 * 5 = 11_796_480.
    fn expected_cases(self) -> u64 {
        match self {
            Mm::L4 | Mm::L5 => 173_998_080,
            Mm::Pae => 23_298_048,
            Mm::Bits32 => 11_796_480,
        }
    }
}

/// RAM: 8 pages at 0. The data page is at 32 MiB, outside RAM (the walk never
/// touches it).
const RAM: usize = 8 << 12;
const DATA: u64 = 32 << 20;

/// Table frames and the address translated, per mode:
///
/// * 4/5-level: PML5 0x5000 -> PML4 0x1000 -> PDPT 0x2000 -> PD 0x3000 ->
///   PT 0x4000. The address has a non-zero index at every level and a
///   non-zero offset inside a 2-MByte page.
/// * PAE: PDPT at 0x1060 (CR3[31:5], not page aligned) -> PD 0x3000 ->
///   PT 0x4000.
/// * 32-bit: PD 0x1000 -> PT 0x0000; the 4-MByte page is at 0, so that with
///   CR4.PSE = 0 a PDE with PS = 1 leads to the same page table.
struct Layout {
    mode: Mm,
    gva: u64,
    cr3: u64,
    /// Slot of the entry at each level, index level-1.
    slots: [u64; 5],
    entry_size: usize,
}

impl Layout {
    fn new(mode: Mm) -> Layout {
        match mode {
            Mm::L4 | Mm::L5 => {
                let gva: u64 = 0xffff_9234_5675_a123;
                let idx = |l: u32| (gva >> (12 + 9 * (l - 1))) & 0x1ff;
                Layout {
                    mode,
                    gva,
                    // PWT and PCD set: flags, not address bits.
                    cr3: if mode == Mm::L5 { 0x5018 } else { 0x1018 },
                    slots: [
                        0x4000 + 8 * idx(1),
                        0x3000 + 8 * idx(2),
                        0x2000 + 8 * idx(3),
                        0x1000 + 8 * idx(4),
                        0x5000 + 8 * idx(5),
                    ],
                    entry_size: 8,
                }
            }
            Mm::Pae => {
                let gva: u64 = 0x9675_a123;
                Layout {
                    mode,
                    gva,
                    cr3: 0x1060 | 0x18,
                    slots: [
                        0x4000 + 8 * ((gva >> 12) & 0x1ff),
                        0x3000 + 8 * ((gva >> 21) & 0x1ff),
                        0x1060 + 8 * (gva >> 30),
                        0,
                        0,
                    ],
                    entry_size: 8,
                }
            }
            Mm::Bits32 => {
                let gva: u64 = 0x9675_a123;
                Layout {
                    mode,
                    gva,
                    cr3: 0x1000 | 0x18,
                    slots: [4 * ((gva >> 12) & 0x3ff), 0x1000 + 4 * (gva >> 22), 0, 0, 0],
                    entry_size: 4,
                }
            }
        }
    }

    /// The entries for a case, index level-1 (ac_test_setup_ptes).
    fn entries(&self, f: Flags) -> [u64; 5] {
        let mut e = [0u64; 5];
        let bit = |x: F, v: u64| if f.has(x) { v } else { 0 };
        let pse = f.has(F::PdePse);
        match self.mode {
            Mm::L4 | Mm::L5 => {
                e[4] = 0x1000 | P | 2 | 4;
                e[3] = 0x2000 | P | 2 | 4;
                e[2] = 0x3000 | P | 4 | if f.has(F::PdpteRo) { 0 } else { 2 };
            }
            Mm::Pae => {
                // PAE PDPTEs have no R/W or U/S (bits 2:1 are reserved).
                e[2] = 0x3000 | P;
            }
            Mm::Bits32 => {}
        }
        // PDE.
        let mut pde = if pse {
            let base = if self.mode == Mm::Bits32 { 0 } else { DATA };
            // The protection key of a leaf is 1.
            base | PS
                | if self.mode.long() {
                    bit(F::PkuPkey, 1 << 59)
                } else {
                    0
                }
        } else {
            // The key of a non-leaf entry is ignored; key 2 is all-deny.
            let table = if self.mode == Mm::Bits32 { 0 } else { 0x4000 };
            table
                | if self.mode.long() {
                    bit(F::PkuPkey, 2 << 59)
                } else {
                    0
                }
        };
        pde |= bit(F::PdeP, P)
            | bit(F::PdeW, 2)
            | bit(F::PdeU, 4)
            | bit(F::PdeA, A)
            | bit(F::PdeD, D)
            | bit(F::PdeNx, 1 << 63)
            | bit(F::Pde51, 1 << 51)
            | bit(F::Pde36, 1 << 36)
            | bit(F::Pde59, 1 << 59)
            | bit(F::Pde13, 1 << 13)
            | bit(F::Pde17, 1 << 17)
            | bit(F::Pde21, 1 << 21);
        e[1] = pde;
        // PTE (written even under a large page, where it is unused).
        e[0] =
            DATA | if self.mode.long() {
                bit(F::PkuPkey, 1 << 59)
            } else {
                0
            } | bit(F::PteP, P)
                | bit(F::PteW, 2)
                | bit(F::PteU, 4)
                | bit(F::PteA, A)
                | bit(F::PteD, D)
                | bit(F::PteNx, 1 << 63)
                | bit(F::Pte51, 1 << 51)
                | bit(F::Pte36, 1 << 36)
                | bit(F::Pte59, 1 << 59);
        e
    }

    /// Levels whose slot lives in memory (the PAE PDPT is written once).
    fn memory_levels(&self) -> std::ops::RangeInclusive<usize> {
        match self.mode {
            Mm::Bits32 | Mm::Pae => 1..=2,
            Mm::L4 => 1..=4,
            Mm::L5 => 1..=5,
        }
    }

    fn state(&self, f: Flags, pdptrs: [u64; 4]) -> PagingState {
        let mut cr0 = Cr0::PE | Cr0::ET | Cr0::PG;
        if f.has(F::Wp) {
            cr0 |= Cr0::WP;
        }
        let mut cr4 = Cr4::empty();
        let mut efer = Efer::empty();
        match self.mode {
            Mm::Bits32 => {
                if f.has(F::Cr4Pse) {
                    cr4 |= Cr4::PSE;
                }
            }
            Mm::Pae => cr4 |= Cr4::PAE,
            Mm::L4 => {
                cr4 |= Cr4::PAE;
                efer |= Efer::LME | Efer::LMA;
            }
            Mm::L5 => {
                cr4 |= Cr4::PAE | Cr4::LA57;
                efer |= Efer::LME | Efer::LMA;
            }
        }
        if f.has(F::EferNx) {
            efer |= Efer::NXE;
        }
        if f.has(F::Smep) {
            cr4 |= Cr4::SMEP;
        }
        if f.has(F::Smap) {
            cr4 |= Cr4::SMAP;
        }
        let pkru = if f.has(F::Pke) {
            cr4 |= Cr4::PKE;
            // ac_test_do_access: WD2 = AD2 = 1, WD1/AD1 from the flags.
            0x30 | if f.has(F::PkuWd) { 8 } else { 0 } | if f.has(F::PkuAd) { 4 } else { 0 }
        } else {
            // Protection keys off: even an all-deny PKRU must change nothing.
            0xffff_ffff
        };
        PagingState {
            cr0,
            cr3: self.cr3,
            cr4,
            efer,
            pkru,
            pkrs: 0,
            cpl: 0,
            eflags_ac: f.has(F::Ac),
            maxphyaddr: 36,
            pdptrs,
            gbpages: true,
            pse36: self.mode != Mm::Bits32 || f.has(F::Pse36),
        }
    }
}

fn access_of(f: Flags) -> Access {
    let kind = if f.has(F::Write) {
        AccessKind::Write
    } else if f.has(F::Fetch) {
        AccessKind::Fetch
    } else {
        AccessKind::Read
    };
    Access {
        kind,
        user: f.has(F::User),
        implicit: false,
    }
}

// ---------------------------------------------------------------------------
// access.c's expectations (ac_emulate_access, ac_test_permissions).
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, Default)]
struct Expect {
    fault: bool,
    error: u32,
    pte: u64,
    pde: u64,
    ignore_pde: u64,
    gpa: u64,
}

// The two functions below keep access.c's shape, branch for branch, so that
// they can be read side by side with it.
#[allow(clippy::if_same_then_else)]
fn ac_test_permissions(
    mode: Mm,
    at: &mut Expect,
    f: Flags,
    writable: bool,
    user: bool,
    executable: bool,
) -> u64 {
    let kwritable = !f.has(F::Wp) && !f.has(F::User);
    let mut expected = 0;
    if f.has(F::User) && !user {
        at.fault = true;
    }
    if f.has(F::Write) && !writable && !kwritable {
        at.fault = true;
    }
    if f.has(F::Fetch) && !executable {
        at.fault = true;
    }
    // (access.c: "fetch && user && smep"; it never combines SMEP with user
    // accesses, which SMEP does not affect.)
    if f.has(F::Fetch) && user && f.has(F::Smep) && !f.has(F::User) {
        at.fault = true;
    }
    // (Addition) SMAP: explicit supervisor data accesses to user pages need
    // EFLAGS.AC = 1.
    if !f.has(F::User) && !f.has(F::Fetch) && user && f.has(F::Smap) && !f.has(F::Ac) {
        at.fault = true;
    }
    // Protection keys: IA-32e paging only.
    if mode.long() && user && !f.has(F::Fetch) && f.has(F::PkuPkey) && f.has(F::Pke) {
        if f.has(F::PkuAd) {
            at.fault = true;
            at.error |= PF_PK;
        } else if f.has(F::Write) && f.has(F::PkuWd) && !kwritable {
            at.fault = true;
            at.error |= PF_PK;
        }
    }
    if !at.fault {
        expected |= A;
        if f.has(F::Write) {
            expected |= D;
        }
    }
    expected
}

#[allow(clippy::nonminimal_bool)]
fn ac_emulate_access(mode: Mm, at: &mut Expect, f: Flags) {
    if f.has(F::User) {
        at.error |= PF_U;
    }
    if f.has(F::Write) {
        at.error |= PF_W;
    }
    if f.has(F::Fetch) {
        at.error |= PF_ID;
    }
    if !f.has(F::PdeA) {
        at.ignore_pde = A;
    }
    let b32 = mode == Mm::Bits32;
    // 32-bit paging honours PDE.PS only with CR4.PSE.
    let pse = f.has(F::PdePse) && (!b32 || f.has(F::Cr4Pse));
    // PDE.13 is an address bit for a 4-MByte page with PSE-36.
    let pde13_reserved = f.has(F::Pde13) && !(b32 && f.has(F::Pse36));
    let pde_valid = f.has(F::PdeP)
        && !f.has(F::Pde51)
        && !f.has(F::Pde36)
        && !f.has(F::Pde59)
        && !(pse && (pde13_reserved || f.has(F::Pde17) || f.has(F::Pde21)))
        && !(f.has(F::PdeNx) && !f.has(F::EferNx));

    'done: {
        if !pde_valid {
            at.fault = true;
            if f.has(F::PdeP) {
                at.error |= PF_RSVD;
            } else {
                at.error &= !PF_P;
            }
            break 'done;
        }
        let mut writable = !f.has(F::PdpteRo) && f.has(F::PdeW);
        let mut user = f.has(F::PdeU);
        let mut executable = !f.has(F::PdeNx);
        if pse {
            at.pde |= ac_test_permissions(mode, at, f, writable, user, executable);
            at.gpa = if b32 {
                let high = if f.has(F::Pde13) { 1 << 32 } else { 0 };
                high | (LAYOUT_GVA32 & 0x3f_ffff)
            } else {
                DATA | (LAYOUT_GVA_LOW & 0x1f_ffff)
            };
            break 'done;
        }
        at.pde |= A;
        // (32-bit, CR4.PSE = 0, PS = 1: the PDE's bits 21:12 are a table
        // address; with 13, 17 or 21 set that table is zeroes or not RAM, so
        // the PTE is not present.)
        let pte_present = f.has(F::PteP)
            && !(b32
                && f.has(F::PdePse)
                && (f.has(F::Pde13) || f.has(F::Pde17) || f.has(F::Pde21)));
        let pte_valid = pte_present
            && !f.has(F::Pte51)
            && !f.has(F::Pte36)
            && !f.has(F::Pte59)
            && !(f.has(F::PteNx) && !f.has(F::EferNx));
        if !pte_valid {
            at.fault = true;
            if pte_present {
                at.error |= PF_RSVD;
            } else {
                at.error &= !PF_P;
            }
            break 'done;
        }
        writable &= f.has(F::PteW);
        user &= f.has(F::PteU);
        executable &= !f.has(F::PteNx);
        at.pte |= ac_test_permissions(mode, at, f, writable, user, executable);
        at.gpa = DATA | (LAYOUT_GVA_LOW & 0xfff);
    }
    if !at.fault {
        at.ignore_pde = 0;
    }
    // I/D is reported only with XD in use (PAE or longer, EFER.NX) or SMEP.
    if !(f.has(F::EferNx) && !b32) && !f.has(F::Smep) {
        at.error &= !PF_ID;
    }
}

/// The low bits of the 64-bit / PAE addresses (identical below bit 30).
const LAYOUT_GVA_LOW: u64 = 0x5675_a123;
const LAYOUT_GVA32: u64 = 0x9675_a123;

/// `__ac_set_expected_status`: start from the entries in memory, emulate the
/// first (supervisor read) access of `Twice`, then the access.
fn ac_set_expected_status(mode: Mm, f: Flags, pte: u64, pde: u64) -> Expect {
    let mut at = Expect {
        pte,
        pde,
        error: PF_P,
        ..Default::default()
    };
    if f.has(F::Twice) {
        ac_emulate_access(
            mode,
            &mut at,
            f.without(F::Write).without(F::Fetch).without(F::User),
        );
        at.fault = false;
        at.error = PF_P;
        at.ignore_pde = 0;
    }
    ac_emulate_access(mode, &mut at, f);
    at
}

// ---------------------------------------------------------------------------
// Running cases.
// ---------------------------------------------------------------------------

struct Ctx {
    layout: Layout,
    model: Memory,
    mem: Mem,
    pdptrs: [u64; 4],
}

impl Ctx {
    fn new(mode: Mm) -> Ctx {
        let layout = Layout::new(mode);
        let mut model = Memory::new(&[(0, RAM)]);
        let mut pdptrs = [0; 4];
        if mode == Mm::Pae {
            let e = layout.entries(Flags(0));
            model.write_u64(layout.slots[2], e[2]);
        }
        let mem = glue::mmap_of(&model);
        if mode == Mm::Pae {
            let state = layout.state(Flags(0), [0; 4]);
            let got = load_pdptrs(&mem, &state).expect("load_pdptrs on a valid PDPT");
            let want = oracle::load_pdptrs(&model, &glue::regs(&state)).expect("valid PDPT");
            assert_eq!(got, want, "load_pdptrs");
            pdptrs = got;
        }
        Ctx {
            layout,
            model,
            mem,
            pdptrs,
        }
    }

    fn run(&mut self, f: Flags) -> Result<(), String> {
        let l = &self.layout;
        let size = l.entry_size;
        let entries = l.entries(f);
        for lv in l.memory_levels() {
            // (Entries already right from the previous case are left alone.)
            if self.model.read(l.slots[lv - 1], size) == Some(entries[lv - 1]) {
                continue;
            }
            glue::write_both(
                &self.mem,
                &mut self.model,
                l.slots[lv - 1],
                size,
                entries[lv - 1],
            );
        }
        let state = l.state(f, self.pdptrs);
        let regs = glue::regs(&state);
        let gva = l.gva;

        let expect = ac_set_expected_status(l.mode, f, entries[0], entries[1]);

        let mut step =
            |access: Access, what: &str| -> Result<Result<GuestWalk, WalkError>, String> {
                let got = walk(&self.mem, &state, Gva(gva), access);
                let want = oracle::translate(&mut self.model, &regs, gva, glue::acc(access));
                glue::diff_outcome(gva, &want, &got, EXACT)
                    .map_err(|e| format!("{what}: walker vs model: {e}"))?;
                Ok(got)
            };
        if f.has(F::Twice) {
            let _ = step(Access::at_cpl(AccessKind::Read, 0), "first (read) access")?;
        }
        let got = step(access_of(f), "access")?;

        // The entries on the path, in both memories.
        let mut after = [0u64; 5];
        for lv in l.memory_levels() {
            let slot = l.slots[lv - 1];
            let w = glue::read_mmap(&self.mem, slot, size);
            after[lv - 1] = w;
            let o = self.model.read(slot, size).unwrap_or(!0);
            if w != o {
                return Err(format!(
                    "level {lv} entry at {slot:#x} after the walk: walker {w:#x}, model {o:#x}"
                ));
            }
        }

        // access.c's expectations.
        let (pte, pde) = (after[0], after[1]);
        let fault = match &got {
            Ok(w) => {
                if w.gpa.0 != expect.gpa {
                    return Err(format!(
                        "access.c: gpa {:#x}, expected {:#x}",
                        w.gpa.0, expect.gpa
                    ));
                }
                None
            }
            Err(WalkError::PageFault(ec)) => Some(ec.bits()),
            Err(_) => return Err(format!("access.c: unexpected {}", glue::show(&got))),
        };
        if fault.is_some() != expect.fault {
            return Err(format!(
                "access.c: fault expected {}, walker {}",
                expect.fault,
                glue::show(&got)
            ));
        }
        if let Some(ec) = fault {
            if ec != expect.error {
                return Err(format!(
                    "access.c: error code {ec:#x}, expected {:#x}",
                    expect.error
                ));
            }
        }
        let pte_used = !(f.has(F::PdePse) && (l.mode != Mm::Bits32 || f.has(F::Cr4Pse)));
        if pte_used && pte != expect.pte {
            return Err(format!(
                "access.c: pte {pte:#x}, expected {:#x}",
                expect.pte
            ));
        }
        if pde & !expect.ignore_pde != expect.pde & !expect.ignore_pde {
            return Err(format!(
                "access.c: pde {pde:#x}, expected {:#x} (ignoring {:#x})",
                expect.pde, expect.ignore_pde
            ));
        }
        Ok(())
    }
}

/// Scatters the bits of `n` into the positions of `mask`, low to high.
fn deposit(mut n: u64, positions: &[u32]) -> u64 {
    let mut out = 0;
    for &p in positions {
        out |= (n & 1) << p;
        n >>= 1;
    }
    out
}

fn run_matrix(mode: Mm) {
    let available = Mm::flags(mode);
    // Every combination of the constrained flags that `legal` accepts...
    let constrained: Vec<u32> = (0..64)
        .filter(|&b| (available & CONSTRAINED) >> b & 1 != 0)
        .collect();
    let heads: Vec<u64> = (0..1u64 << constrained.len())
        .map(|n| deposit(n, &constrained))
        .filter(|&x| legal(Flags(x)))
        .collect();
    // ...times every combination of the free ones.
    let free: Vec<u32> = (0..64)
        .filter(|&b| (available & !CONSTRAINED) >> b & 1 != 0)
        .collect();
    let total = (heads.len() as u64) << free.len();

    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let next = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let failures = AtomicU64::new(0);
    let reports: Mutex<Vec<String>> = Mutex::new(Vec::new());
    const CHUNK: u64 = 1 << 14;
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut ctx = Ctx::new(mode);
                let mut since_full_check = 0u64;
                loop {
                    let first = next.fetch_add(CHUNK, Ordering::Relaxed);
                    if first >= total {
                        break;
                    }
                    let last = (first + CHUNK).min(total);
                    for i in first..last {
                        let f = Flags(
                            heads[(i >> free.len()) as usize]
                                | deposit(i & ((1 << free.len()) - 1), &free),
                        );
                        debug_assert!(legal(f));
                        if let Err(e) = ctx.run(f) {
                            if failures.fetch_add(1, Ordering::Relaxed) < 40 {
                                reports
                                    .lock()
                                    .expect("reports")
                                    .push(format!("{mode:?} case {i} {f:?}: {e}"));
                            }
                        }
                    }
                    done.fetch_add(last - first, Ordering::Relaxed);
                    since_full_check += last - first;
                    // Stray writes anywhere in RAM show up here.
                    if since_full_check >= 1 << 16 {
                        since_full_check = 0;
                        if let Err(e) = glue::diff_memory(&ctx.mem, &ctx.model) {
                            failures.fetch_add(1, Ordering::Relaxed);
                            reports
                                .lock()
                                .expect("reports")
                                .push(format!("{mode:?} before case {last}: {e}"));
                        }
                    }
                }
                if let Err(e) = glue::diff_memory(&ctx.mem, &ctx.model) {
                    failures.fetch_add(1, Ordering::Relaxed);
                    reports
                        .lock()
                        .expect("reports")
                        .push(format!("{mode:?} at the end: {e}"));
                }
            });
        }
    });
    let n = done.load(Ordering::Relaxed);
    let bad = failures.load(Ordering::Relaxed);
    eprintln!(
        "access matrix {mode:?}: {n} cases, {bad} mismatches, {:.1?} on {threads} threads",
        start.elapsed()
    );
    for r in reports.lock().expect("reports").iter() {
        eprintln!("  {r}");
    }
    assert_eq!(n, total);
    assert_eq!(
        total,
        mode.expected_cases(),
        "case count differs from the hand-derived count"
    );
    assert_eq!(bad, 0, "{bad} mismatches in the {mode:?} access matrix");
}

#[test]
fn matrix_counts_match_brute_force() {
    // The enumeration (legal heads x free flags) must be exactly the set
    // `legal` accepts: count `legal` over all assignments of the constrained
    // flags independently, for every mode.
    for mode in [Mm::Bits32, Mm::Pae, Mm::L4, Mm::L5] {
        let available = Mm::flags(mode);
        let bits: Vec<u64> = (0..64)
            .map(|b| 1u64 << b)
            .filter(|b| available & b != 0)
            .collect();
        let constrained = bits.iter().filter(|&&b| b & CONSTRAINED != 0).count();
        let free = bits.len() - constrained;
        let mut legal_heads = 0u64;
        let cbits: Vec<u64> = bits
            .iter()
            .copied()
            .filter(|b| b & CONSTRAINED != 0)
            .collect();
        for n in 0..1u64 << constrained {
            let mut x = 0;
            for (j, b) in cbits.iter().enumerate() {
                if n >> j & 1 != 0 {
                    x |= b;
                }
            }
            legal_heads += legal(Flags(x)) as u64;
        }
        assert_eq!(legal_heads << free, mode.expected_cases(), "{mode:?}");
    }
}

#[test]
#[cfg_attr(miri, ignore = "the full access.c matrix takes days under Miri")]
fn access_matrix_32bit() {
    run_matrix(Mm::Bits32);
}

#[test]
#[cfg_attr(miri, ignore = "the full access.c matrix takes days under Miri")]
fn access_matrix_pae() {
    run_matrix(Mm::Pae);
}

#[test]
#[cfg_attr(miri, ignore = "the full access.c matrix takes days under Miri")]
fn access_matrix_4level() {
    run_matrix(Mm::L4);
}

#[test]
#[cfg_attr(miri, ignore = "the full access.c matrix takes days under Miri")]
fn access_matrix_5level() {
    run_matrix(Mm::L5);
}

// ---------------------------------------------------------------------------
// Beyond access.c: implicit supervisor accesses and PKS.
// ---------------------------------------------------------------------------

/// Every combination of the permission inputs access.c does not have --
/// implicit supervisor accesses (SMAP regardless of EFLAGS.AC), IA32_PKRS
/// with CR4.PKS, PKRU and PKRS holding different rights -- with the rights
/// of the PDE and the PTE, CR0.WP, SMEP, SMAP, EFLAGS.AC, EFER.NXE, the
/// leaf's key and the access. 4-level paging; walker against the model,
/// outcome and memory.
#[test]
#[cfg_attr(
    miri,
    ignore = "enumerates 2^21 flag combinations; too slow under Miri"
)]
fn permission_matrix_implicit_and_pks() {
    const BITS: u32 = 21;
    let layout = Layout::new(Mm::L4);
    let mut model = Memory::new(&[(0, RAM)]);
    let mem = glue::mmap_of(&model);
    let mut cases = 0u64;
    let mut bad = Vec::new();
    for n in 0..1u64 << BITS {
        let bit = |i: u32| n >> i & 1 != 0;
        let kind = match n >> 19 {
            0 => AccessKind::Read,
            1 => AccessKind::Write,
            2 => AccessKind::Fetch,
            _ => continue,
        };
        cases += 1;
        let e = |b: bool, v: u64| if b { v } else { 0 };
        let pde = 0x4000 | P | e(bit(0), W) | e(bit(1), U);
        let pte = DATA | P | e(bit(2), W) | e(bit(3), U) | e(bit(4), NX) | e(bit(5), 1 << 59);
        let access = Access {
            kind,
            user: bit(6),
            implicit: bit(7),
        };
        let mut cr0 = Cr0::PE | Cr0::ET | Cr0::PG;
        if bit(8) {
            cr0 |= Cr0::WP;
        }
        let mut cr4 = Cr4::PAE;
        for (i, f) in [
            (9, Cr4::SMEP),
            (10, Cr4::SMAP),
            (12, Cr4::PKE),
            (13, Cr4::PKS),
        ] {
            if bit(i) {
                cr4 |= f;
            }
        }
        let mut efer = Efer::LME | Efer::LMA;
        if bit(11) {
            efer |= Efer::NXE;
        }
        // Key 1 rights: PKRU AD/WD from bits 14/15, PKRS from 16/17; key 0
        // is unrestricted in both.
        let rights = |ad: bool, wd: bool| e(ad, 4) as u32 | e(wd, 8) as u32;
        let state = PagingState {
            cr0,
            cr3: layout.cr3,
            cr4,
            efer,
            pkru: rights(bit(14), bit(15)),
            pkrs: rights(bit(16), bit(17)),
            eflags_ac: bit(18),
            maxphyaddr: 36,
            ..Default::default()
        };
        let entries = [pte, pde, 0x3000 | P | W | U, 0x2000 | P | W | U, 0];
        for l in 1..=4 {
            glue::write_both(&mem, &mut model, layout.slots[l - 1], 8, entries[l - 1]);
        }
        let got = walk(&mem, &state, Gva(layout.gva), access);
        let want = oracle::translate(
            &mut model,
            &glue::regs(&state),
            layout.gva,
            glue::acc(access),
        );
        let mut r = glue::diff_outcome(layout.gva, &want, &got, EXACT);
        if r.is_ok() {
            for l in 1..=4 {
                let slot = layout.slots[l - 1];
                if glue::read_mmap(&mem, slot, 8) != model.read_u64(slot) {
                    r = Err(format!("entry at level {l} differs after the walk"));
                }
            }
        }
        if let Err(err) = r {
            if bad.len() < 40 {
                bad.push(format!("case {n:#x} ({access:?}, {state:?}): {err}"));
            } else {
                bad.push(String::new());
            }
        }
    }
    eprintln!("permission matrix: {cases} cases, {} mismatches", bad.len());
    for b in bad.iter().filter(|b| !b.is_empty()) {
        eprintln!("  {b}");
    }
    // 3 kinds x 2^19 combinations of the other inputs.
    assert_eq!(cases, 3 << 19);
    assert!(bad.is_empty(), "{} mismatches", bad.len());
}

// ---------------------------------------------------------------------------
// access.c's bug reproducers, with hand-checked expectations.
// ---------------------------------------------------------------------------

/// A 4-level guest with tables allocated from a pool; every access is checked
/// against the model too.
struct Guest {
    model: Memory,
    mem: Mem,
    state: PagingState,
    next: u64,
}

const W: u64 = 1 << 1;
const U: u64 = 1 << 2;
const NX: u64 = 1 << 63;
const PML4: u64 = 0x1000;

impl Guest {
    fn new() -> Guest {
        let model = Memory::new(&[(0, 64 << 12)]);
        let mem = glue::mmap_of(&model);
        Guest {
            model,
            mem,
            state: PagingState {
                cr0: Cr0::PE | Cr0::ET | Cr0::PG | Cr0::WP,
                cr3: PML4,
                cr4: Cr4::PAE,
                efer: Efer::LME | Efer::LMA | Efer::NXE,
                maxphyaddr: 36,
                ..Default::default()
            },
            next: 0x2000,
        }
    }

    fn table(&mut self) -> u64 {
        let t = self.next;
        self.next += 0x1000;
        t
    }

    fn slot(table: u64, level: u32, gva: u64) -> u64 {
        table + 8 * ((gva >> (12 + 9 * (level - 1))) & 0x1ff)
    }

    fn set(&mut self, gpa: u64, v: u64) {
        glue::write_both(&self.mem, &mut self.model, gpa, 8, v);
    }

    fn get(&self, gpa: u64) -> u64 {
        let v = glue::read_mmap(&self.mem, gpa, 8);
        assert_eq!(v, self.model.read_u64(gpa), "entry at {gpa:#x}");
        v
    }

    /// Makes an access; checks it against the model, returns the error code
    /// (None: no fault) and the gpa.
    fn access(&mut self, gva: u64, kind: Kind, user: bool) -> Result<u64, u32> {
        let access = Access {
            kind: match kind {
                Kind::Read => AccessKind::Read,
                Kind::Write => AccessKind::Write,
                Kind::Fetch => AccessKind::Fetch,
            },
            user,
            implicit: false,
        };
        let got = walk(&self.mem, &self.state, Gva(gva), access);
        let want = oracle::translate(
            &mut self.model,
            &glue::regs(&self.state),
            gva,
            Acc {
                kind,
                user,
                implicit: false,
            },
        );
        if let Err(e) = glue::diff_outcome(gva, &want, &got, EXACT) {
            panic!("walker vs model at {gva:#x}: {e}");
        }
        if let Err(e) = glue::diff_memory(&self.mem, &self.model) {
            panic!("memory after the access to {gva:#x}: {e}");
        }
        match (got, want) {
            (Ok(w), Outcome::Ok(_)) => Ok(w.gpa.0),
            (Err(WalkError::PageFault(ec)), _) => Err(ec.bits()),
            (other, _) => panic!("unexpected {}", glue::show(&other)),
        }
    }
}

/// check_pfec_on_prefetch_pte (KVM 3ddf6c06e13e): two PTEs in one table; the
/// second has bit 63 set while EFER.NXE = 0, so it is reserved; a read of the
/// first must not hide that.
#[test]
fn pfec_on_prefetch_pte() {
    let mut g = Guest::new();
    g.state.efer = Efer::LME | Efer::LMA; // NXE = 0
    let (v1, v2) = (0xffff_9234_0600_1000u64, 0xffff_9234_0600_3000u64);
    let (pdpt, pd, pt) = (g.table(), g.table(), g.table());
    g.set(Guest::slot(PML4, 4, v1), pdpt | P | W | U);
    g.set(Guest::slot(pdpt, 3, v1), pd | P | W | U);
    g.set(Guest::slot(pd, 2, v1), pt | P);
    g.set(Guest::slot(pt, 1, v1), DATA | P);
    g.set(Guest::slot(pt, 1, v2), (DATA + 0x1000) | P | NX);
    assert_eq!(g.access(v1, Kind::Read, false), Ok(DATA));
    assert_eq!(g.get(Guest::slot(pt, 1, v1)), DATA | P | A);
    // Supervisor read: P | RSVD.
    assert_eq!(g.access(v2, Kind::Read, false), Err(0x9));
    assert_eq!(g.get(Guest::slot(pt, 1, v2)), (DATA + 0x1000) | P | NX);

    // The brief's variant: with NXE = 1 a read of an NX page succeeds and
    // sets A; a fetch afterwards faults P | I/D, and the read's A stays.
    g.state.efer |= Efer::NXE;
    assert_eq!(g.access(v2, Kind::Read, false), Ok(DATA + 0x1000));
    assert_eq!(g.access(v2, Kind::Fetch, false), Err(0x11));
    assert_eq!(g.get(Guest::slot(pt, 1, v2)), (DATA + 0x1000) | P | NX | A);
    // And from user mode (page made user): P | U | I/D.
    g.set(Guest::slot(pd, 2, v1), pt | P | U);
    g.set(Guest::slot(pt, 1, v2), (DATA + 0x1000) | P | U | NX);
    assert_eq!(g.access(v2, Kind::Read, true), Ok(DATA + 0x1000));
    assert_eq!(g.access(v2, Kind::Fetch, true), Err(0x15));
}

/// check_large_pte_dirty_for_nowp: two read-only 2-MByte mappings of one
/// page, CR0.WP = 0; supervisor writes through either must succeed and set
/// D in the PDE used.
#[test]
fn large_pte_dirty_for_nowp() {
    let mut g = Guest::new();
    g.state.cr0.remove(Cr0::WP);
    let (v1, v2) = (0xffff_9234_0300_0000u64, 0xffff_e666_0600_0000u64);
    for v in [v1, v2] {
        let (pdpt, pd) = (g.table(), g.table());
        g.set(Guest::slot(PML4, 4, v), pdpt | P | W | U);
        g.set(Guest::slot(pdpt, 3, v), pd | P | W | U);
        g.set(Guest::slot(pd, 2, v), DATA | P | PS);
    }
    let pde = |g: &Guest, v: u64| {
        let pdpt = g.get(Guest::slot(PML4, 4, v)) & !0xfff & ((1 << 36) - 1);
        let pd = g.get(Guest::slot(pdpt, 3, v)) & !0xfff & ((1 << 36) - 1);
        Guest::slot(pd, 2, v)
    };
    assert_eq!(g.access(v2, Kind::Read, false), Ok(DATA));
    assert_eq!(g.get(pde(&g, v2)), DATA | P | PS | A);
    assert_eq!(g.access(v1, Kind::Write, false), Ok(DATA));
    assert_eq!(g.get(pde(&g, v1)), DATA | P | PS | A | D);
    assert_eq!(g.access(v2, Kind::Write, false), Ok(DATA));
    assert_eq!(g.get(pde(&g, v2)), DATA | P | PS | A | D);
}

/// check_smep_andnot_wp: a supervisor write to a read-only user page with
/// CR0.WP = 0 succeeds (SMAP off); a supervisor fetch from it must still be
/// an SMEP fault.
#[test]
fn smep_andnot_wp() {
    let mut g = Guest::new();
    g.state.cr4 |= Cr4::SMEP;
    let v = 0xffff_9234_0600_1000u64;
    let (pdpt, pd, pt) = (g.table(), g.table(), g.table());
    g.set(Guest::slot(PML4, 4, v), pdpt | P | W | U);
    g.set(Guest::slot(pdpt, 3, v), pd | P | W | U);
    g.set(Guest::slot(pd, 2, v), pt | P | U | A);
    g.set(Guest::slot(pt, 1, v), DATA | P | U | A);
    // access.c's flags include CR0.WP: the write faults (P | W)...
    assert_eq!(g.access(v, Kind::Write, false), Err(0x3));
    // ...and with CR0.WP = 0 (the bug's condition) it succeeds.
    g.state.cr0.remove(Cr0::WP);
    assert_eq!(g.access(v, Kind::Write, false), Ok(DATA));
    assert_eq!(g.get(Guest::slot(pt, 1, v)), DATA | P | U | A | D);
    // SMEP: P | I/D.
    assert_eq!(g.access(v, Kind::Fetch, false), Err(0x11));
    g.state.cr0 |= Cr0::WP;
    assert_eq!(g.access(v, Kind::Fetch, false), Err(0x11));
}

/// check_toggle_cr0_wp: a supervisor write to a read-only page succeeds with
/// CR0.WP = 0 and faults with CR0.WP = 1, whatever the previous access saw.
#[test]
fn toggle_cr0_wp() {
    let mut g = Guest::new();
    let v = 0xffff_9230_4200_7000u64;
    let (pdpt, pd, pt) = (g.table(), g.table(), g.table());
    g.set(Guest::slot(PML4, 4, v), pdpt | P | W | U);
    g.set(Guest::slot(pdpt, 3, v), pd | P | W | U);
    g.set(Guest::slot(pd, 2, v), pt | P | A);
    g.set(Guest::slot(pt, 1, v), DATA | P | A);
    for round in 0..3 {
        g.state.cr0.remove(Cr0::WP);
        assert_eq!(g.access(v, Kind::Write, false), Ok(DATA), "round {round}");
        g.state.cr0 |= Cr0::WP;
        assert_eq!(g.access(v, Kind::Write, false), Err(0x3), "round {round}");
    }
    assert_eq!(g.get(Guest::slot(pt, 1, v)), DATA | P | A | D);
}

/// check_effective_sp_permissions: two PDPTEs, one writable and one not,
/// share a page directory. A write through the read-only PDPTE must fault
/// even though the same PDE and PTE are writable through the other.
#[test]
fn effective_sp_permissions() {
    let mut g = Guest::new();
    let ptr1 = 0xffff_9234_8000_0000u64;
    let ptr2 = ptr1 + (2 << 20);
    let ptr3 = ptr1 + (1 << 30);
    let ptr4 = ptr3 + (2 << 20);
    let (pdpt, pd, pt1, pt2) = (g.table(), g.table(), g.table(), g.table());
    g.set(Guest::slot(PML4, 4, ptr1), pdpt | P | W | U);
    // pud1 (uw-) and pud2 (u--) both point at the same pmd page.
    g.set(Guest::slot(pdpt, 3, ptr1), pd | P | W | U);
    g.set(Guest::slot(pdpt, 3, ptr3), pd | P | U);
    // pmd: ptr1 (u--) -> pt1, ptr2 (uw-) -> pt2.
    g.set(Guest::slot(pd, 2, ptr1), pt1 | P | U | A);
    g.set(Guest::slot(pd, 2, ptr2), pt2 | P | W | U | A);
    g.set(Guest::slot(pt1, 1, ptr1), DATA | P | W | U | A);
    g.set(
        Guest::slot(pt2, 1, ptr2),
        (DATA + 0x1000) | P | W | U | A | D,
    );
    assert_eq!(g.access(ptr1, Kind::Read, true), Ok(DATA));
    assert_eq!(g.access(ptr2, Kind::Write, true), Ok(DATA + 0x1000));
    assert_eq!(g.access(ptr3, Kind::Read, true), Ok(DATA));
    // P | W | U.
    assert_eq!(g.access(ptr4, Kind::Write, true), Err(0x7));
    // Supervisor writes with CR0.WP = 1 fault the same way, without U.
    assert_eq!(g.access(ptr4, Kind::Write, false), Err(0x3));
    g.state.cr0.remove(Cr0::WP);
    assert_eq!(g.access(ptr4, Kind::Write, false), Ok(DATA + 0x1000));
}

/// corrupt_hugepage_trigger (KVM e09e90a5): two 2-MByte mappings of one
/// page, one read-only, one writable; writing through the writable one must
/// not make the read-only one writable.
#[test]
fn corrupt_hugepage_trigger() {
    let mut g = Guest::new();
    let (v1, v2) = (0xffff_9234_0000_0000u64, 0xffff_e666_0000_0000u64);
    let mut pdes = Vec::new();
    for (v, w) in [(v1, W), (v2, 0)] {
        let (pdpt, pd) = (g.table(), g.table());
        g.set(Guest::slot(PML4, 4, v), pdpt | P | W | U);
        g.set(Guest::slot(pdpt, 3, v), pd | P | W | U);
        g.set(Guest::slot(pd, 2, v), DATA | P | PS | w);
        pdes.push(Guest::slot(pd, 2, v));
    }
    assert_eq!(g.access(v2, Kind::Read, false), Ok(DATA));
    assert_eq!(g.access(v1, Kind::Read, false), Ok(DATA));
    assert_eq!(g.access(v1, Kind::Write, false), Ok(DATA));
    assert_eq!(g.access(v2, Kind::Write, false), Err(0x3));
    assert_eq!(g.get(pdes[0]), DATA | P | PS | W | A | D);
    assert_eq!(g.get(pdes[1]), DATA | P | PS | A);
}
