// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Guest behaviours the shadow MMU must keep correct: fork and copy-on-write,
//! accessed/dirty harvesting, 32-bit and PAE guests on quadrant and
//! synthetic shadows, 1 GiB guest pages over smaller shadows, CR0.WP=0.
//! Expected frames and error codes are worked out by hand from the tables
//! each test writes.

mod common;

use common::*;
use shadow_mmu::pte::{PTE_P, PTE_U, PTE_W};
use shadow_mmu::{
    load_pdptrs, Cr0, Cr4, Efer, GuestAddress, GuestException, Gva, MmuConfig, PagingState,
    PfErrorCode, PteAccess, ShadowMmu,
};
use vm_memory::GuestAddressSpace;

/// Guest "kernel" page-table helpers: a 4-level space whose PML4 is at
/// `pml4`, one PDPT/PD, and a PT at `pt` mapping gva `i << 12` (i < 512)
/// to `frame0 + i * 4K`.
#[allow(clippy::too_many_arguments)]
fn space(
    m: &shadow_mmu::Mmu,
    pml4: u64,
    pdpt: u64,
    pd: u64,
    pt: u64,
    frame0: u64,
    n: u64,
    flags: u64,
) {
    w64(m, pml4, pdpt | UPPER);
    w64(m, pdpt, pd | UPPER);
    w64(m, pd, pt | UPPER);
    for i in 0..n {
        w64(m, pt + 8 * i, (frame0 + (i << 12)) | flags);
    }
}

/// Writes a guest PTE the way a guest kernel must: emulated when the page
/// is write-protected, else a direct store followed by INVLPG.
fn guest_set_pte(m: &shadow_mmu::Mmu, gpa: u64, value: u64, gva: u64) {
    w64(m, gpa, value);
    if m.is_write_protected(shadow_mmu::Gfn(gpa >> 12)) {
        apply(m, m.track_write(GuestAddress(gpa), 8));
    } else {
        apply(m, m.invlpg(0, Gva(gva)).unwrap());
    }
}

#[test]
fn fork_then_copy_on_write() {
    let m = mmu();
    const N: u64 = 64;
    // Parent: PML4 0x1000, PDPT 0x2000, PD 0x3000, PT 0x4000, frames 1 MiB+.
    space(
        &m,
        0x1000,
        0x2000,
        0x3000,
        0x4000,
        0x10_0000,
        N,
        LEAF_RW | A | D,
    );
    let parent = long_mode(0x1000);
    load(&m, 0, &parent);
    for i in 0..N {
        assert_eq!(
            cpu_access(&m, 0, &parent, i << 12, wr(true)),
            Cpu::Done(0x10_0000 + (i << 12))
        );
    }
    // fork(): the child gets copies of the tables, both sides read-only.
    space(
        &m,
        0x5000,
        0x6000,
        0x7000,
        0x8000,
        0x10_0000,
        N,
        PTE_P | PTE_U | A | D,
    );
    for i in 0..N {
        guest_set_pte(
            &m,
            0x4000 + 8 * i,
            (0x10_0000 + (i << 12)) | PTE_P | PTE_U | A | D,
            i << 12,
        );
    }
    apply(&m, m.flush_tlb(0).unwrap());
    m.audit().unwrap();
    let child = long_mode(0x5000);
    // Both address spaces read the shared frames; writes fault with
    // P|W|U (a protection violation by a user write).
    for (state, name) in [(&child, "child"), (&parent, "parent")] {
        load(&m, 0, state);
        for i in 0..N {
            assert_eq!(
                cpu_access(&m, 0, state, i << 12, rd(true)),
                Cpu::Done(0x10_0000 + (i << 12)),
                "{name}"
            );
        }
        let got = cpu_access(&m, 0, state, 5 << 12, wr(true));
        assert_eq!(
            got,
            Cpu::Fault(GuestException::PageFault {
                error_code: PfErrorCode::P | PfErrorCode::W | PfErrorCode::U,
                cr2: Gva(5 << 12)
            })
        );
        m.audit().unwrap();
    }
    // The child's COW fault handler copies the page to a new frame and
    // makes its PTE writable.
    load(&m, 0, &child);
    for i in 0..N {
        let new = 0x20_0000 + (i << 12);
        guest_set_pte(&m, 0x8000 + 8 * i, new | LEAF_RW | A, i << 12);
        assert_eq!(cpu_access(&m, 0, &child, i << 12, wr(true)), Cpu::Done(new));
    }
    m.audit().unwrap();
    // Switching back to the parent reuses its cached root; it still sees
    // the old frames, read-only.
    let before = m.stats().root_cache_hits;
    load(&m, 0, &parent);
    assert_eq!(m.stats().root_cache_hits, before + 1);
    assert_eq!(
        cpu_access(&m, 0, &parent, 7 << 12, rd(true)),
        Cpu::Done(0x10_7000)
    );
    let (_, r) = m.shadow_translate(0, Gva(7 << 12)).unwrap();
    assert!(!r.contains(PteAccess::WRITE));
    m.audit().unwrap();
}

#[test]
fn accessed_dirty_harvesting() {
    for unsync in [false, true] {
        let m = mmu_with(MmuConfig {
            unsync,
            ..MmuConfig::default()
        });
        space(&m, 0x1000, 0x2000, 0x3000, 0x4000, 0x10_0000, 16, LEAF_RW);
        // The PT is mapped at gva 0x40_0000 so the guest can edit it.
        w64(&m, 0x3008, 0x9000 | UPPER);
        w64(&m, 0x9000, 0x4000 | LEAF_RW | A | D);
        let s = long_mode(0x1000);
        load(&m, 0, &s);
        for i in 0..16 {
            cpu_access(
                &m,
                0,
                &s,
                i << 12,
                if i % 2 == 0 { wr(true) } else { rd(true) },
            );
        }
        for i in 0..16 {
            let want = if i % 2 == 0 { A | D } else { A };
            assert_eq!(r64(&m, 0x4000 + 8 * i) & (A | D), want, "pte {i}");
        }
        // The reclaimer clears A and D in every PTE, then flushes the TLB.
        // With unsync it writes through its mapping of the PT (the first
        // write unsyncs the table); without, each write is emulated.
        cpu_access(&m, 0, &s, 0x40_0000, wr(false));
        for i in 0..16 {
            let gpa = 0x4000 + 8 * i;
            w64(&m, gpa, r64(&m, gpa) & !(A | D));
            if m.is_write_protected(shadow_mmu::Gfn(4)) {
                apply(&m, m.track_write(GuestAddress(gpa), 8));
            }
        }
        apply(&m, m.flush_tlb(0).unwrap());
        m.audit().unwrap();
        // Only pages touched again get A (and D for writes) again.
        for i in [3u64, 4] {
            cpu_access(&m, 0, &s, i << 12, if i == 4 { wr(true) } else { rd(true) });
        }
        for i in 0..16 {
            let want = match i {
                3 => A,
                4 => A | D,
                _ => 0,
            };
            assert_eq!(
                r64(&m, 0x4000 + 8 * i) & (A | D),
                want,
                "unsync={unsync} pte {i}"
            );
        }
        m.audit().unwrap();
    }
}

#[test]
fn bits32_guest_on_quadrant_shadows() {
    let m = mmu();
    // PD 0x1000: PDE 1 -> PT 0x2000 (gva 0x40_0000..0x80_0000);
    // PDE 0x300 -> 4 MiB page at 0x80_0000 (gva 0xc000_0000).
    w32(&m, 0x1000 + 4, 0x2000 | UPPER as u32);
    w32(
        &m,
        0x1000 + 4 * 0x300,
        0x80_0000 | (LEAF_RW | PS | A | D) as u32,
    );
    for i in [0u64, 1, 511, 512, 600, 1023] {
        w32(
            &m,
            0x2000 + 4 * i,
            (0x10_0000 + (i << 12)) as u32 | LEAF_RW as u32,
        );
    }
    let s = PagingState {
        cr0: Cr0::PE | Cr0::PG | Cr0::WP,
        cr3: 0x1000,
        cr4: Cr4::PSE,
        ..Default::default()
    };
    load(&m, 0, &s);
    for i in [0u64, 1, 511, 512, 600, 1023] {
        let gva = 0x40_0000 + (i << 12) + 0x10;
        assert_eq!(
            cpu_access(&m, 0, &s, gva, rd(true)),
            Cpu::Done(0x10_0000 + (i << 12) + 0x10)
        );
    }
    // Both halves of the 4 MiB page.
    assert_eq!(
        cpu_access(&m, 0, &s, 0xc000_1234, wr(false)),
        Cpu::Done(0x80_1234)
    );
    assert_eq!(
        cpu_access(&m, 0, &s, 0xc03f_f000, rd(false)),
        Cpu::Done(0xbf_f000)
    );
    // An emulated write to guest entry 600 (upper quadrant) updates it.
    w32(&m, 0x2000 + 4 * 600, 0x30_0000 | (PTE_P | PTE_U | A) as u32);
    apply(&m, m.track_write(GuestAddress(0x2000 + 4 * 600), 4));
    assert_eq!(
        m.shadow_translate(0, Gva(0x40_0000 + (600 << 12)))
            .map(|t| t.0),
        Some(0x30_0000)
    );
    assert_eq!(
        cpu_access(&m, 0, &s, 0x40_0000 + (511 << 12), rd(true)),
        Cpu::Done(0x10_0000 + (511 << 12))
    );
    // No I/D bit in 32-bit paging without SMEP; a write to a
    // read-only user page faults P|W|U.
    assert_eq!(
        cpu_access(&m, 0, &s, 0x40_0000 + (600 << 12), wr(true)),
        Cpu::Fault(GuestException::PageFault {
            error_code: PfErrorCode::P | PfErrorCode::W | PfErrorCode::U,
            cr2: Gva(0x40_0000 + (600 << 12))
        })
    );
    m.audit().unwrap();
}

#[test]
fn pae_guest_on_synthetic_root() {
    let m = mmu();
    // PDPT at 0x1020 (32-byte aligned): PDPTE 3 -> PD 0x2000; PDE 0 -> PT
    // 0x3000; PDE 1: 2 MiB page at 0x40_0000. gva 0xc000_0000 + ...
    w64(&m, 0x1020 + 3 * 8, 0x2000 | PTE_P);
    w64(&m, 0x2000, 0x3000 | UPPER);
    w64(
        &m,
        0x2008,
        0x40_0000 | LEAF_RW | PS | A | D | shadow_mmu::pte::PTE_XD,
    );
    w64(&m, 0x3000 + 8 * 5, 0x12_3000 | LEAF_RW);
    let mut s = PagingState {
        cr0: Cr0::PE | Cr0::PG | Cr0::WP,
        cr3: 0x1020,
        cr4: Cr4::PAE,
        efer: Efer::NXE,
        ..Default::default()
    };
    s.pdptrs = load_pdptrs(&*m.memory().memory(), &s).unwrap();
    load(&m, 0, &s);
    assert_eq!(
        cpu_access(&m, 0, &s, 0xc000_5008, rd(true)),
        Cpu::Done(0x12_3008)
    );
    assert_eq!(
        cpu_access(&m, 0, &s, 0xc020_0010, wr(true)),
        Cpu::Done(0x40_0010)
    );
    // NX on the 2 MiB page: a fetch faults with P|U|I/D.
    assert_eq!(
        cpu_access(&m, 0, &s, 0xc020_0000, fe(true)),
        Cpu::Fault(GuestException::PageFault {
            error_code: PfErrorCode::P | PfErrorCode::U | PfErrorCode::ID,
            cr2: Gva(0xc020_0000)
        })
    );
    // PDPTE 0 is not present.
    assert_eq!(
        cpu_access(&m, 0, &s, 0x1000, rd(false)),
        Cpu::Fault(GuestException::PageFault {
            error_code: PfErrorCode::empty(),
            cr2: Gva(0x1000)
        })
    );
    m.audit().unwrap();
}

#[test]
fn one_gib_guest_page_over_smaller_shadows() {
    for level in [1u8, 2] {
        let m = mmu_with(MmuConfig {
            max_mapping_level: level,
            ..MmuConfig::default()
        });
        // PDPTE 1 (gva 0x4000_0000): a 1 GiB page at GPA 0.
        w64(&m, 0x1000, 0x2000 | UPPER);
        w64(&m, 0x2008, LEAF_RW | PS | A | D);
        let s = long_mode(0x1000);
        load(&m, 0, &s);
        let gva = 0x4000_0000 + 0x23_4567;
        assert_eq!(cpu_access(&m, 0, &s, gva, wr(true)), Cpu::Done(0x23_4567));
        // Beyond RAM (64 MiB) the same guest page reaches MMIO.
        assert!(matches!(
            cpu_access(&m, 0, &s, 0x4000_0000 + RAM, rd(true)),
            Cpu::Exit(_)
        ));
        // One direct level-2 page under the PDPT shadow, and (4 KiB shadows
        // only) a direct level-1 page filled whole.
        let st = m.stats();
        if level == 1 {
            assert_eq!(st.pages_in_use, 4);
            assert_eq!(st.prefetched, 511);
        } else {
            assert_eq!(st.pages_in_use, 3);
        }
        m.audit().unwrap();
    }
}

#[test]
fn cr0_wp_clear_lets_supervisor_write_read_only_pages() {
    let m = mmu();
    space(
        &m,
        0x1000,
        0x2000,
        0x3000,
        0x4000,
        0x10_0000,
        4,
        PTE_P | PTE_U | A | D,
    );
    let mut s = long_mode(0x1000);
    s.cr0.remove(Cr0::WP);
    s.cr4 |= Cr4::SMEP;
    load(&m, 0, &s);
    // Supervisor write to a read-only user page succeeds with WP=0 ...
    assert_eq!(
        cpu_access(&m, 0, &s, 0x1008, wr(false)),
        Cpu::Done(0x10_1008)
    );
    let (_, r) = m.shadow_translate(0, Gva(0x1000)).unwrap();
    // ... through a writable supervisor entry that SMEP may not execute.
    assert_eq!(r, PteAccess::WRITE);
    m.audit().unwrap();
    // A user read then gets the guest's rights back.
    assert_eq!(
        cpu_access(&m, 0, &s, 0x1000, rd(true)),
        Cpu::Done(0x10_1000)
    );
    let (_, r) = m.shadow_translate(0, Gva(0x1000)).unwrap();
    assert_eq!(r, PteAccess::USER | PteAccess::EXEC);
    // A user write is still refused.
    assert!(matches!(
        cpu_access(&m, 0, &s, 0x1000, wr(true)),
        Cpu::Fault(_)
    ));
    m.audit().unwrap();
    let _ = PTE_W;
}
