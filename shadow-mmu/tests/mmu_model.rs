// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Model-based property test of the shadow MMU: random guest page-table
//! edits (emulated when the page is write-protected, direct otherwise, then
//! an INVLPG, a flush or nothing, as a guest may), accesses, INVLPG, CR3
//! switches, CR0.WP toggles and memory swaps, with `audit()` after every
//! step. Accesses that reach the MMU must get exactly the guest walker's
//! verdict (the walker itself is checked against an independent oracle in
//! `access_matrix.rs`).

mod common;

use common::*;
use proptest::prelude::*;
use shadow_mmu::pte::{PTE_P, PTE_U, PTE_W};
use shadow_mmu::{
    Access, AccessKind, Cr0, FaultOutcome, Gfn, GuestAddress, Gva, Mmu, MmuConfig, PagingState,
    ShadowMmu,
};

const PML4S: [u64; 2] = [0x10, 0x11];
const PDPT: u64 = 0x12;
const PD: u64 = 0x13;
const PTS: [u64; 3] = [0x14, 0x15, 0x16];

/// Gvas the test accesses: PD entries 0..4, PT entries 0..8, PML4 entry 0.
fn gva(i: usize) -> u64 {
    (((i / 8) as u64) << 21) | (((i % 8) as u64) << 12)
}
const GVAS: usize = 32;

#[derive(Clone, Debug)]
enum Op {
    /// Write entry `index` of table `table` with a value built from `bits`.
    Write {
        table: usize,
        index: usize,
        bits: u32,
        flush: u8,
    },
    Access {
        gva: usize,
        kind: u8,
        user: bool,
    },
    Invlpg {
        gva: usize,
    },
    Flush,
    Cr3 {
        which: usize,
    },
    ToggleWp,
    MemoryChanged,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..7usize, 0..8usize, any::<u32>(), 0..3u8)
            .prop_map(|(table, index, bits, flush)| Op::Write { table, index, bits, flush }),
        8 => (0..GVAS, 0..3u8, any::<bool>()).prop_map(|(gva, kind, user)| Op::Access { gva, kind, user }),
        1 => (0..GVAS).prop_map(|gva| Op::Invlpg { gva }),
        1 => Just(Op::Flush),
        1 => (0..2usize).prop_map(|which| Op::Cr3 { which }),
        1 => Just(Op::ToggleWp),
        1 => Just(Op::MemoryChanged),
    ]
}

/// The table written by `Op::Write { table }` and the value to store.
fn entry(table: usize, bits: u32) -> (u64, u64) {
    let flags = {
        let mut f = 0;
        if bits & 0xf != 0 {
            f |= PTE_P; // present 15/16 of the time
        }
        if bits & 0x10 != 0 {
            f |= PTE_W;
        }
        if bits & 0x20 != 0 {
            f |= PTE_U;
        }
        if bits & 0xc0 != 0 {
            f |= A;
        }
        if bits & 0x100 != 0 {
            f |= D;
        }
        if bits & 0x600 == 0x600 {
            f |= shadow_mmu::pte::PTE_XD;
        }
        f
    };
    let pick = (bits >> 12) as usize;
    match table {
        0 | 1 => (PML4S[table], (PDPT << 12) | flags),
        2 => (PDPT, (PD << 12) | flags),
        3 => {
            // Page directory: a page table, or a 2 MiB page.
            if pick.is_multiple_of(4) {
                let frame = if pick.is_multiple_of(8) {
                    0x40_0000
                } else {
                    0x60_0000
                };
                (PD, frame | flags | PS)
            } else {
                (PD, (PTS[pick % 3] << 12) | flags)
            }
        }
        _ => {
            // Page table: data, one of the tables (self-maps), or no RAM.
            let frame = match pick % 16 {
                0 => PTS[(pick >> 4) % 3] << 12,
                1 => PD << 12,
                2 => 0x1_0000_0000 + (((pick >> 4) as u64 % 4) << 12),
                _ => 0x10_0000 + (((pick >> 4) as u64 % 64) << 12),
            };
            (PTS[table - 4], frame | flags)
        }
    }
}

fn build(m: &Mmu) -> PagingState {
    for pml4 in PML4S {
        w64(m, pml4 << 12, (PDPT << 12) | UPPER);
    }
    w64(m, PDPT << 12, (PD << 12) | UPPER);
    for (i, pt) in PTS.iter().enumerate() {
        w64(m, (PD << 12) + 8 * i as u64, (pt << 12) | UPPER);
        for j in 0..8u64 {
            w64(
                m,
                (pt << 12) + 8 * j,
                (0x10_0000 + ((8 * i as u64 + j) << 12)) | LEAF_RW,
            );
        }
    }
    long_mode(PML4S[0] << 12)
}

/// No unsync, a 4-entry prefetch window, 4 KiB shadow leaves only and
/// emulated table writes: large guest pages get direct pages.
fn no_unsync_small_window_4k_only_config() -> MmuConfig {
    MmuConfig {
        unsync: false,
        prefetch_window: 4,
        max_mapping_level: 1,
        table_writes: shadow_mmu::TableWrites::Emulate,
        ..MmuConfig::default()
    }
}

fn run(config: MmuConfig, ops: &[Op]) -> Result<(), TestCaseError> {
    let m = mmu_with(config);
    let mut state = build(&m);
    load(&m, 0, &state);
    for (step, op) in ops.iter().enumerate() {
        match *op {
            Op::Write {
                table,
                index,
                bits,
                flush,
            } => {
                let (t, value) = entry(table, bits);
                let gpa = (t << 12) + 8 * index as u64;
                w64(&m, gpa, value);
                if m.is_write_protected(Gfn(t)) {
                    apply(&m, m.track_write(GuestAddress(gpa), 8));
                } else {
                    match flush {
                        0 => apply(&m, m.flush_tlb(0).unwrap()),
                        1 => {
                            for i in 0..GVAS {
                                apply(&m, m.invlpg(0, Gva(gva(i))).unwrap());
                            }
                        }
                        _ => {}
                    }
                }
            }
            Op::Access { gva: i, kind, user } => {
                let kind = [AccessKind::Read, AccessKind::Write, AccessKind::Fetch][kind as usize];
                let access = Access {
                    kind,
                    user,
                    implicit: false,
                };
                let a = gva(i);
                let hit = m
                    .shadow_translate(0, Gva(a))
                    .is_some_and(|(_, r)| shadow_allows(&state, r, access));
                let expect = guest_says(&m, &state, a, access);
                let got = cpu_access(&m, 0, &state, a, access);
                if !hit {
                    // Through the MMU: exactly what the guest's tables say.
                    let ok = match (expect, got) {
                        (Ok(gpa), Cpu::Done(spa)) => gpa == spa,
                        (Err(e), Cpu::Fault(f)) => e == f,
                        (Ok(gpa), Cpu::Exit(FaultOutcome::Mmio { gpa: g })) => {
                            g.0 == gpa && gpa >= RAM
                        }
                        (Ok(gpa), Cpu::Exit(FaultOutcome::Emulate { gpa: g })) => {
                            g.0 == gpa && kind == AccessKind::Write
                        }
                        _ => false,
                    };
                    prop_assert!(
                        ok,
                        "step {step}: {op:?} at {a:#x}: guest {expect:?}, cpu {got:?}"
                    );
                }
            }
            Op::Invlpg { gva: i } => apply(&m, m.invlpg(0, Gva(gva(i))).unwrap()),
            Op::Flush => apply(&m, m.flush_tlb(0).unwrap()),
            Op::Cr3 { which } => {
                state.cr3 = PML4S[which] << 12;
                load(&m, 0, &state);
            }
            Op::ToggleWp => {
                state.cr0.toggle(Cr0::WP);
                load(&m, 0, &state);
            }
            Op::MemoryChanged => apply(&m, m.memory_changed()),
        }
        if std::env::var("MODEL_DEBUG").is_ok() {
            eprintln!(
                "step {step} {op:?}: 0x201000 -> {:?} wp={}",
                m.shadow_translate(0, Gva(0x201000)),
                state.cr0.contains(Cr0::WP)
            );
        }
        if let Err(e) = m.audit() {
            return Err(TestCaseError::fail(format!("step {step} ({op:?}): {e}")));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        // A handful of cases under Miri (scripts/miri.sh), all of them otherwise.
        cases: if cfg!(miri) { 4 } else { 256 },
        ..ProptestConfig::default()
    })]

    #[test]
    fn default_config(ops in prop::collection::vec(op(), 1..60)) {
        run(MmuConfig::default(), &ops)?;
    }

    #[test]
    fn tiny_cap_no_prefetch(ops in prop::collection::vec(op(), 1..60)) {
        run(MmuConfig { max_pages: 8, prefetch_window: 1, ..MmuConfig::default() }, &ops)?;
    }

    #[test]
    fn no_unsync_small_window_4k_only(ops in prop::collection::vec(op(), 1..60)) {
        run(no_unsync_small_window_4k_only_config(), &ops)?;
    }

    /// Speculative prefetch: more is mapped ahead of use, and every access
    /// that reaches the MMU still gets exactly what the guest's tables say
    /// (the audit also checks that every mapped guest entry has A).
    #[test]
    fn speculative_prefetch(ops in prop::collection::vec(op(), 1..60)) {
        run(
            MmuConfig { prefetch: shadow_mmu::Prefetch::Speculative, ..MmuConfig::default() },
            &ops,
        )?;
    }
}

/// A CR0.WP=0 supervisor write made a read-only user page a writable
/// supervisor entry; when the page later became a shadowed page table,
/// write protection left a supervisor-only read-only entry for a user page.
#[test]
fn regression_wp0_entry_then_write_protected() {
    let ops = vec![
        Op::Write {
            table: 5,
            index: 1,
            bits: 773784481,
            flush: 0,
        },
        Op::ToggleWp,
        Op::ToggleWp,
        Op::ToggleWp,
        Op::Write {
            table: 0,
            index: 0,
            bits: 1766834657,
            flush: 0,
        },
        Op::Access {
            gva: 9,
            kind: 1,
            user: false,
        },
        Op::Access {
            gva: 16,
            kind: 0,
            user: false,
        },
    ];
    run(MmuConfig::default(), &ops).unwrap();
}

/// A CR0.WP=0 supervisor write through one guest 2 MiB page (read-only,
/// made dirty by the write) put a writable supervisor leaf into the direct
/// page of that range; a second, clean guest 2 MiB page over the same
/// frames with the same rights found that direct page and mapped the
/// frame writable, though its entry was clean. The direct page's role now
/// carries the CR0.WP=0 rights.
#[test]
fn regression_wp0_write_in_a_shared_direct_page() {
    let ops = vec![
        Op::ToggleWp,
        Op::Write {
            table: 3,
            index: 2,
            bits: 2522448609,
            flush: 0,
        },
        Op::Access {
            gva: 16,
            kind: 1,
            user: false,
        },
        Op::Write {
            table: 3,
            index: 0,
            bits: 1305708641,
            flush: 0,
        },
        Op::Access {
            gva: 1,
            kind: 2,
            user: false,
        },
    ];
    run(no_unsync_small_window_4k_only_config(), &ops).unwrap();
}
