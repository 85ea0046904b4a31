// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Hostile guest page tables and host-side faults: the MMU must answer with
//! the architectural fault or a clear outcome, never panic, hang, map the
//! hidden region, or lose its invariants.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use common::*;
use shadow_mmu::pte::{PTE_P, PTE_U, PTE_W};
use shadow_mmu::{
    FaultOutcome, GuestAddress, GuestException, Gva, Hole, Mmu, MmuConfig, MmuError, PfErrorCode,
    ShadowMmu,
};
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};

fn pf(ec: PfErrorCode, gva: u64) -> Cpu {
    Cpu::Fault(GuestException::PageFault {
        error_code: ec,
        cr2: Gva(gva),
    })
}

#[test]
fn recursive_self_map_works_and_is_write_protected() {
    let m = mmu();
    // PML4[511] points at the PML4 itself: gva 0xffff_ffff_ffff_f000 maps
    // the PML4 page (SDM: the walk uses the same table at every level).
    w64(&m, 0x1000, 0x2000 | UPPER);
    w64(&m, 0x1000 + 511 * 8, 0x1000 | UPPER | A | D);
    let s = long_mode(0x1000);
    load(&m, 0, &s);
    let self_va = 0xffff_ffff_ffff_f000u64;
    assert_eq!(
        cpu_access(&m, 0, &s, self_va + 8, rd(false)),
        Cpu::Done(0x1008)
    );
    // PML4[511] -> PML4 as PDPT -> PML4[0] as PD -> 0x2000 as PT.
    assert_eq!(
        cpu_access(&m, 0, &s, 0xffff_ffff_c000_0000, rd(false)),
        pf(PfErrorCode::empty(), 0xffff_ffff_c000_0000)
    );
    m.audit().unwrap();
    // The PML4 is a shadowed table (the root): a write through the
    // self-map must be emulated, never mapped writable.
    assert_eq!(
        cpu_access(&m, 0, &s, self_va, wr(false)),
        Cpu::Exit(FaultOutcome::Emulate {
            gpa: GuestAddress(0x1000)
        })
    );
    let (_, r) = m.shadow_translate(0, Gva(self_va)).unwrap();
    assert!(!r.contains(shadow_mmu::PteAccess::WRITE));
    m.audit().unwrap();
}

#[test]
fn loops_between_tables_terminate() {
    let m = mmu();
    // PML4 -> A, A[0] -> PML4, PML4 used as PD, whose [0] -> A as PT.
    w64(&m, 0x1000, 0x2000 | UPPER | A);
    w64(&m, 0x2000, 0x1000 | UPPER | A);
    let s = long_mode(0x1000);
    load(&m, 0, &s);
    // gva 0: PML4[0]=A, A[0]=PML4, PML4[0]=A (as PT), A[0] = PML4 as page.
    assert_eq!(cpu_access(&m, 0, &s, 0x18, rd(true)), Cpu::Done(0x1018));
    assert!(m.is_write_protected(shadow_mmu::Gfn(1)));
    assert!(m.is_write_protected(shadow_mmu::Gfn(2)));
    // Writing a page that is one of the walk's own tables needs emulation.
    assert!(matches!(
        cpu_access(&m, 0, &s, 0x18, wr(true)),
        Cpu::Exit(FaultOutcome::Emulate { .. })
    ));
    m.audit().unwrap();
}

#[test]
fn hidden_region_beyond_ram_and_maxphyaddr() {
    let cfg = MmuConfig::default();
    let arena = cfg.arena_base;
    let m = mmu_with(cfg);
    w64(&m, 0x1000, 0x2000 | UPPER);
    w64(&m, 0x2000, 0x3000 | UPPER);
    w64(&m, 0x3000, 0x4000 | UPPER);
    w64(&m, 0x4000, arena | LEAF_RW | A | D); // the arena
    w64(&m, 0x4008, (RAM + 0x1000) | LEAF_RW); // beyond RAM
    w64(&m, 0x4010, (1 << 50) | LEAF_RW); // beyond MAXPHYADDR 48
    let s = long_mode(0x1000);
    load(&m, 0, &s);
    // Neither the arena nor missing RAM is ever mapped: the VMM sees MMIO.
    assert_eq!(
        cpu_access(&m, 0, &s, 0, rd(true)),
        Cpu::Exit(FaultOutcome::Mmio {
            gpa: GuestAddress(arena)
        })
    );
    assert!(matches!(
        cpu_access(&m, 0, &s, 0x1000, wr(true)),
        Cpu::Exit(FaultOutcome::Mmio { .. })
    ));
    assert_eq!(m.shadow_translate(0, Gva(0)), None);
    // Above MAXPHYADDR the entry has reserved bits: RSVD|P|U.
    assert_eq!(
        cpu_access(&m, 0, &s, 0x2000, rd(true)),
        pf(PfErrorCode::P | PfErrorCode::RSVD | PfErrorCode::U, 0x2000)
    );
    // Registering the arena as "MMIO" still never maps it.
    m.register_mmio(arena..arena + 0x1000);
    assert!(matches!(
        cpu_access(&m, 0, &s, 0, rd(true)),
        Cpu::Exit(FaultOutcome::Mmio { .. })
    ));
    m.audit().unwrap();
}

#[test]
fn hole_is_refused() {
    let m = mmu_with(MmuConfig {
        hole: Some(Hole {
            root_index: 510,
            entry: (1 << 45) | PTE_P | PTE_W,
        }),
        ..MmuConfig::default()
    });
    // The guest maps its own tables at the hole's PML4 slot.
    w64(&m, 0x1000 + 510 * 8, 0x2000 | UPPER | A);
    w64(&m, 0x2000, 0x3000 | UPPER | A);
    w64(&m, 0x3000, 0x4000 | UPPER | A);
    w64(&m, 0x4000, 0x10_0000 | LEAF_RW | A | D);
    let s = long_mode(0x1000);
    load(&m, 0, &s);
    let hole = 0xffff_ff00_0000_0000u64;
    assert_eq!(
        cpu_access(&m, 0, &s, hole, rd(false)),
        pf(PfErrorCode::empty(), hole)
    );
    assert_eq!(
        cpu_access(&m, 0, &s, hole, wr(true)),
        pf(PfErrorCode::W | PfErrorCode::U, hole)
    );
    // The hole's PML4 slot, but not canonical: #GP before any table is
    // looked at (SDM vol. 3A, 6.15), hole or not.
    let beside = hole ^ (1 << 60);
    assert_eq!(
        cpu_access(&m, 0, &s, beside, wr(false)),
        Cpu::Fault(GuestException::GeneralProtection)
    );
    m.audit().unwrap();
}

/// The guest writes its own PML4 slot that the hole occupies (an emulated
/// write to the shadowed root): the hole's entry must survive.
#[test]
fn guest_writes_to_the_hole_slot_leave_the_hole_alone() {
    let hole_entry = (1 << 45) | PTE_P | PTE_W;
    let m = mmu_with(MmuConfig {
        hole: Some(Hole {
            root_index: 510,
            entry: hole_entry,
        }),
        ..MmuConfig::default()
    });
    w64(&m, 0x1000, 0x2000 | UPPER);
    let s = long_mode(0x1000);
    let root = load(&m, 0, &s);
    assert_eq!(m.read_spte(root + 510 * 8), Some(hole_entry));
    assert!(m.is_write_protected(shadow_mmu::Gfn(1)));
    for value in [0x3000 | UPPER | A, 0, 0x1000 | UPPER | A] {
        w64(&m, 0x1000 + 510 * 8, value);
        apply(&m, m.track_write(GuestAddress(0x1000 + 510 * 8), 8));
        assert_eq!(m.read_spte(root + 510 * 8), Some(hole_entry));
    }
    // Also through a misaligned write (which zaps the whole page) and a
    // memory swap (which zaps everything).
    apply(&m, m.track_write(GuestAddress(0x1000 + 510 * 8 + 4), 8));
    apply(&m, m.memory_changed());
    assert_eq!(m.read_spte(root + 510 * 8), Some(hole_entry));
    m.audit().unwrap();
}

#[test]
fn reserved_bits_at_every_level() {
    // (level, gpa of the entry, reserved bit)
    let cases: [(u64, u64); 5] = [
        (0x1000, 1 << 7),       // PS in a PML4E
        (0x1000, 1 << 51),      // above MAXPHYADDR
        (0x2000, 1 << 48),      // PDPTE address bit above MAXPHYADDR 48
        (0x3000, 1 << 13 | PS), // 2 MiB leaf with bit 13
        (0x4000, 1 << 50),
    ];
    for (gpa, bit) in cases {
        let m = mmu();
        w64(&m, 0x1000, 0x2000 | UPPER);
        w64(&m, 0x2000, 0x3000 | UPPER);
        w64(&m, 0x3000, 0x4000 | UPPER);
        w64(&m, 0x4000, 0x10_0000 | LEAF_RW);
        let v = r64(&m, gpa);
        w64(&m, gpa, v | bit);
        let s = long_mode(0x1000);
        load(&m, 0, &s);
        let got = cpu_access(&m, 0, &s, 0, wr(true));
        assert_eq!(
            got,
            pf(
                PfErrorCode::P | PfErrorCode::RSVD | PfErrorCode::W | PfErrorCode::U,
                0
            ),
            "entry at {gpa:#x} with {bit:#x}"
        );
        m.audit().unwrap();
    }
}

#[test]
fn arena_that_cannot_be_mapped_is_a_clear_error() {
    let err = Mmu::new(
        memory(),
        MmuConfig {
            arena_base: !0xfff,
            ..MmuConfig::default()
        },
    );
    assert!(matches!(err, Err(MmuError::Arena(_))), "{err:?}");
    let err = Mmu::new(
        memory(),
        MmuConfig {
            prefetch_window: 3,
            ..MmuConfig::default()
        },
    );
    assert!(matches!(err, Err(MmuError::Config(_))));
    // More pages than a reverse-map head can name (2^22) is refused before
    // anything is mapped.
    let err = Mmu::new(
        memory(),
        MmuConfig {
            max_pages: (1 << 22) + 1,
            ..MmuConfig::default()
        },
    );
    assert!(matches!(err, Err(MmuError::Config(_))), "{err:?}");
}

/// Memory unplugged (the GuestMemoryAtomic map swapped for a smaller one)
/// while other threads walk and fault: no use of the old map after it is
/// gone, faults retry, and no shadow entry maps a frame that left.
#[test]
fn memory_unplug_while_faulting() {
    let big = GuestMemoryMmap::<()>::from_ranges(&[
        (GuestAddress(0), 16 << 20),
        (GuestAddress(16 << 20), 16 << 20),
    ])
    .unwrap();
    let atomic = GuestMemoryAtomic::new(big);
    let m = Arc::new(
        Mmu::new(
            atomic.clone(),
            MmuConfig {
                vcpus: 4,
                ..MmuConfig::default()
            },
        )
        .unwrap(),
    );
    // Four PTs mapping frames in both regions.
    w64(&m, 0x1000, 0x2000 | UPPER);
    w64(&m, 0x2000, 0x3000 | UPPER);
    for p in 0..4u64 {
        w64(&m, 0x3000 + 8 * p, (0x4000 + (p << 12)) | UPPER);
        for i in 0..512u64 {
            let frame = (0x10_0000 + ((p * 512 + i) << 14)) & ((32 << 20) - 1);
            w64(&m, 0x4000 + (p << 12) + 8 * i, (frame & !0xfff) | LEAF_RW);
        }
    }
    let s = long_mode(0x1000);
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..3usize)
        .map(|t| {
            let (m, stop) = (m.clone(), stop.clone());
            thread::spawn(move || {
                load(&m, t, &s);
                let mut i = t as u64;
                while !stop.load(Ordering::Relaxed) {
                    i = i
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let gva = ((i >> 20) % (4 * 512)) << 12;
                    let got = cpu_access(&m, t, &s, gva, wr(true));
                    assert!(
                        matches!(got, Cpu::Done(_) | Cpu::Exit(FaultOutcome::Mmio { .. })),
                        "{got:?}"
                    );
                }
            })
        })
        .collect();
    thread::sleep(std::time::Duration::from_millis(50));
    // Unplug the upper 16 MiB: the lower region stays the same mapping.
    {
        let guard = atomic.lock().unwrap();
        let (small, _gone) = atomic
            .memory()
            .remove_region(GuestAddress(16 << 20), 16 << 20)
            .unwrap();
        guard.replace(small);
    }
    apply(&m, m.memory_changed());
    thread::sleep(std::time::Duration::from_millis(50));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    m.audit().unwrap();
    load(&m, 3, &s);
    for gva in (0..4 * 512u64).map(|i| i << 12) {
        if let Some((spa, _)) = m.shadow_translate(3, Gva(gva)) {
            assert!(spa < 16 << 20, "gva {gva:#x} still maps unplugged {spa:#x}");
        }
    }
}

#[test]
fn walk_across_two_regions() {
    let big = GuestMemoryMmap::<()>::from_ranges(&[
        (GuestAddress(0), 16 << 20),
        (GuestAddress(16 << 20), 16 << 20),
    ])
    .unwrap();
    let m = Mmu::new(GuestMemoryAtomic::new(big), MmuConfig::default()).unwrap();
    w64(&m, 0x1000, 0x2000 | UPPER);
    w64(&m, 0x2000, 0x3000 | UPPER);
    w64(&m, 0x3000, (17 << 20) | UPPER); // PT in the second region
    w64(&m, 17 << 20, 0x5000 | LEAF_RW);
    w64(&m, (17 << 20) + 8, (18 << 20) | LEAF_RW);
    let s = long_mode(0x1000);
    load(&m, 0, &s);
    assert_eq!(cpu_access(&m, 0, &s, 0x10, rd(true)), Cpu::Done(0x5010));
    assert_eq!(
        cpu_access(&m, 0, &s, 0x1010, rd(true)),
        Cpu::Done((18 << 20) + 0x10)
    );
    m.audit().unwrap();
}

/// `track_write` with lengths and addresses no guest can produce: no
/// overflow, no deep recursion, bounded time.
#[test]
fn track_write_extreme_ranges() {
    let m = mmu();
    w64(&m, 0x1000, 0x2000 | UPPER);
    let s = long_mode(0x1000);
    load(&m, 0, &s);
    apply(&m, m.track_write(GuestAddress(0x1000), 0));
    apply(&m, m.track_write(GuestAddress(u64::MAX - 7), 16));
    apply(&m, m.track_write(GuestAddress(u64::MAX), 1));
    apply(&m, m.track_write(GuestAddress(0), 1 << 32));
    apply(&m, m.track_write(GuestAddress(0x1ff8), 16));
    apply(&m, m.track_write(GuestAddress(0), usize::MAX));
    m.audit().unwrap();
}

/// With paging off, a write to a frame that is shadowed as a page table
/// (of another address space) must not look for the walk's own tables:
/// there are none. (Found by fuzzing: an index underflow.)
#[test]
fn paging_off_write_to_a_shadowed_table() {
    let m = mmu_with(MmuConfig {
        unsync: false,
        ..MmuConfig::default()
    });
    w64(&m, 0x1000, 0x2000 | UPPER);
    w64(&m, 0x2000, 0x3000 | UPPER);
    w64(&m, 0x3000, 0x4000 | UPPER);
    w64(&m, 0x4000, 0x10_0000 | LEAF_RW | A | D);
    let paged = long_mode(0x1000);
    load(&m, 0, &paged);
    cpu_access(&m, 0, &paged, 0, rd(true));
    assert!(m.is_write_protected(shadow_mmu::Gfn(4)));
    let off = shadow_mmu::PagingState {
        cr0: shadow_mmu::Cr0::PE,
        ..Default::default()
    };
    load(&m, 0, &off);
    assert_eq!(
        cpu_access(&m, 0, &off, 0x4008, wr(false)),
        Cpu::Done(0x4008)
    );
    m.audit().unwrap();
}

/// Writes `value` into the shadow entry at shadow-physical `addr` behind the
/// MMU's back, as guest CPL0 code can through the hypervisor hole.
fn forge(m: &Mmu, addr: u64, value: u64) {
    let (base, host, size) = m.arena_region();
    assert!(addr >= base && addr + 8 <= base + size && addr.is_multiple_of(8));
    // SAFETY: `addr` is an aligned entry inside the arena mapping (checked
    // above), which `m` keeps mapped; the MMU reads it only with atomic
    // loads, and this test runs no other thread.
    unsafe {
        let entry = host
            .add((addr - base) as usize)
            .cast::<std::sync::atomic::AtomicU64>();
        (*entry).store(value, Ordering::Release);
    }
}

/// The shadow entries a CPU walks for `gva` from `root`, top down.
fn shadow_path(m: &Mmu, root: u64, gva: u64) -> Vec<u64> {
    let mut table = root;
    let mut path = Vec::new();
    for level in (1..=4u32).rev() {
        let addr = table + 8 * ((gva >> (12 + 9 * (level - 1))) & 511);
        path.push(addr);
        let v = m.read_spte(addr).expect("entry in the arena");
        if level == 1 || v & PS != 0 {
            break;
        }
        table = v & 0x000f_ffff_ffff_f000;
    }
    path
}

/// A shadow entry the MMU did not write (a guest kernel rewriting the arena
/// through the hole) is never followed, repaired in place or answered with
/// "fixed": the next fault that crosses it ends with
/// `MmuError::ShadowCorrupted` naming the entry, and the audit reports it.
/// Each forgery is one that made the fault path loop for ever before the
/// MMU kept its own copy of the entries.
#[test]
fn forged_shadow_entries_are_reported_not_followed() {
    enum Forge {
        /// Clear these bits.
        Clear(u64),
        /// Write this value.
        Value(u64),
    }
    let gva = 0x40_3000u64;
    for (what, level, forgery) in [
        ("link with P cleared", 0usize, Forge::Clear(PTE_P)),
        (
            "link outside the arena",
            1,
            Forge::Value(0x5000 | UPPER | A),
        ),
        ("link without U", 2, Forge::Clear(PTE_U)),
        ("link without W", 1, Forge::Clear(PTE_W)),
        ("leaf cleared", 3, Forge::Value(0)),
        (
            "leaf pointing elsewhere",
            3,
            Forge::Value(0x7000 | UPPER | A | D),
        ),
    ] {
        let m = mmu();
        w64(&m, 0x1000, 0x2000 | UPPER | A);
        w64(&m, 0x2000, 0x3000 | UPPER | A);
        w64(&m, 0x3000 + 2 * 8, 0x4000 | UPPER | A);
        w64(&m, 0x4000 + 3 * 8, 0x10_0000 | LEAF_RW | A | D);
        let s = long_mode(0x1000);
        let root = load(&m, 0, &s);
        assert_eq!(
            cpu_access(&m, 0, &s, gva, wr(true)),
            Cpu::Done(0x10_0000),
            "{what}"
        );
        let path = shadow_path(&m, root, gva);
        assert_eq!(path.len(), 4, "{what}");
        let addr = path[level];
        let old = m.read_spte(addr).unwrap();
        let new = match forgery {
            Forge::Clear(bits) => old & !bits,
            Forge::Value(v) => v,
        };
        forge(&m, addr, new);
        assert!(m.audit().is_err(), "{what}: the audit missed it");
        // The CPU faults on the forged path; the MMU must not call that
        // fixed (the CPU would fault again, for ever).
        let ec = PfErrorCode::W | PfErrorCode::U;
        match m.page_fault(0, Gva(gva), ec) {
            Err(MmuError::ShadowCorrupted {
                addr: at,
                expected,
                found,
            }) => {
                assert_eq!((at, expected, found), (addr, old, new), "{what}");
            }
            other => panic!("{what}: {other:?}"),
        }
        // The MMU's own view is intact: putting the entry back heals it.
        forge(&m, addr, old);
        m.audit().unwrap();
        assert_eq!(
            cpu_access(&m, 0, &s, gva, rd(true)),
            Cpu::Done(0x10_0000),
            "{what}"
        );
    }
}
