// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Focused shadow-MMU scenarios with hand-checked expectations.

mod common;

use common::*;
use shadow_mmu::pte::{PTE_P, PTE_U, PTE_W};
use shadow_mmu::{FaultOutcome, GuestException, Gva, PfErrorCode, ShadowMmu};

/// PML4 0x1000 -> PDPT 0x2000 -> PD 0x3000 -> PT 0x4000; gva 0x40_0000 + i*4K
/// maps 0x10_0000 + i*4K for i < 8.
fn four_level(m: &shadow_mmu::Mmu) -> shadow_mmu::PagingState {
    w64(m, 0x1000, 0x2000 | UPPER);
    w64(m, 0x2000, 0x3000 | UPPER);
    w64(m, 0x3000 + 2 * 8, 0x4000 | UPPER);
    for i in 0..8 {
        w64(m, 0x4000 + 8 * i, (0x10_0000 + 0x1000 * i) | LEAF_RW);
    }
    long_mode(0x1000)
}

#[test]
fn fault_maps_and_sets_guest_bits() {
    let m = mmu();
    let s = four_level(&m);
    load(&m, 0, &s);
    assert_eq!(m.shadow_translate(0, Gva(0x40_0000)), None);
    assert_eq!(
        cpu_access(&m, 0, &s, 0x40_0123, rd(true)),
        Cpu::Done(0x10_0123)
    );
    // The guest leaf got A, not D; the shadow is read-only until D.
    assert_eq!(r64(&m, 0x4000), 0x10_0000 | LEAF_RW | A);
    let (_, rights) = m.shadow_translate(0, Gva(0x40_0000)).unwrap();
    assert!(!rights.contains(shadow_mmu::PteAccess::WRITE));
    assert_eq!(
        cpu_access(&m, 0, &s, 0x40_0123, wr(true)),
        Cpu::Done(0x10_0123)
    );
    assert_eq!(r64(&m, 0x4000), 0x10_0000 | LEAF_RW | A | D);
    let st = m.stats();
    assert_eq!((st.fault_no_spte, st.fault_dirty_tracking), (1, 1));
    m.audit().unwrap();
}

#[test]
fn prefetch_maps_accessed_neighbours_only() {
    let m = mmu();
    let s = four_level(&m);
    // Entries 1 and 2 accessed (2 also dirty), 3 not accessed.
    w64(&m, 0x4008, 0x10_1000 | LEAF_RW | A);
    w64(&m, 0x4010, 0x10_2000 | LEAF_RW | A | D);
    load(&m, 0, &s);
    cpu_access(&m, 0, &s, 0x40_0000, rd(false));
    let t1 = m.shadow_translate(0, Gva(0x40_1000)).unwrap();
    let t2 = m.shadow_translate(0, Gva(0x40_2000)).unwrap();
    assert_eq!(t1.0, 0x10_1000);
    assert!(!t1.1.contains(shadow_mmu::PteAccess::WRITE));
    assert!(t2.1.contains(shadow_mmu::PteAccess::WRITE));
    assert_eq!(m.shadow_translate(0, Gva(0x40_3000)), None);
    assert_eq!(m.stats().prefetched, 2);
    m.audit().unwrap();
}

/// `Prefetch::Speculative`: one fault maps every present neighbour the
/// walker would accept, accessed or not, setting A in the guest entries it
/// maps (SDM Vol. 3A 4.10.2.3: a CPU may cache translations for
/// speculative accesses, setting A first); never D, never a write right
/// without D, never a frame that is not RAM, never an entry with reserved
/// bits (whose A must stay clear). Expected values are hand-derived.
#[test]
fn speculative_prefetch_maps_never_accessed_neighbours() {
    use shadow_mmu::{MmuConfig, Prefetch, PteAccess};

    let m = mmu_with(MmuConfig {
        prefetch: Prefetch::Speculative,
        speculative_log: 3,
        ..MmuConfig::default()
    });
    let s = four_level(&m);
    w64(&m, 0x4010, 0x10_2000 | LEAF_RW | D); // dirty, not accessed
    w64(&m, 0x4018, (RAM + 0x5000) | LEAF_RW); // not RAM
    w64(&m, 0x4020, 0x10_4000 | LEAF_RW | (1 << 51)); // reserved bit
    w64(&m, 0x4028, 0x10_5000 | PTE_P); // supervisor read-only
    w64(&m, 0x4030, 0); // not present
    load(&m, 0, &s);
    assert_eq!(
        cpu_access(&m, 0, &s, 0x40_0000, rd(true)),
        Cpu::Done(0x10_0000)
    );
    let read_only = PteAccess::USER | PteAccess::EXEC;
    let rw = read_only | PteAccess::WRITE;
    // (entry, shadow translation, guest entry afterwards)
    type Mapping = Option<(u64, PteAccess)>;
    let expect: [(u64, Mapping, u64); 8] = [
        (0, Some((0x10_0000, read_only)), 0x10_0000 | LEAF_RW | A),
        (1, Some((0x10_1000, read_only)), 0x10_1000 | LEAF_RW | A),
        (2, Some((0x10_2000, rw)), 0x10_2000 | LEAF_RW | A | D),
        (3, None, (RAM + 0x5000) | LEAF_RW),
        (4, None, 0x10_4000 | LEAF_RW | (1 << 51)),
        (5, Some((0x10_5000, PteAccess::EXEC)), 0x10_5000 | PTE_P | A),
        (6, None, 0),
        (7, Some((0x10_7000, read_only)), 0x10_7000 | LEAF_RW | A),
    ];
    for (i, shadow, guest) in expect {
        let gva = Gva(0x40_0000 + 0x1000 * i);
        assert_eq!(m.shadow_translate(0, gva), shadow, "entry {i}");
        assert_eq!(r64(&m, 0x4000 + 8 * i), guest, "guest entry {i}");
    }
    let st = m.stats();
    assert_eq!((st.prefetched, st.prefetched_speculative), (4, 4));
    assert_eq!(st.fault_no_spte, 1);
    // The entries whose A the MMU set, in table order, three of them kept
    // (entry 0's A is the walk's own, not speculative).
    let marks = m.take_speculative_marks();
    assert_eq!(
        marks.entries,
        [0x4008, 0x4010, 0x4028].map(shadow_mmu::GuestAddress)
    );
    assert_eq!(marks.dropped, 1, "entry 7 beyond the log's capacity");
    assert_eq!(m.take_speculative_marks(), Default::default());
    m.audit().unwrap();
    // A write to a speculatively mapped clean page is one dirty fault.
    assert_eq!(
        cpu_access(&m, 0, &s, 0x40_1008, wr(true)),
        Cpu::Done(0x10_1008)
    );
    assert_eq!(r64(&m, 0x4008), 0x10_1000 | LEAF_RW | A | D);
    assert_eq!(m.stats().fault_dirty_tracking, 1);
    m.audit().unwrap();
}

/// `Prefetch::Exact` (the default, KVM's rule): never-accessed neighbours
/// are neither mapped nor marked accessed.
#[test]
fn exact_prefetch_leaves_never_accessed_neighbours_alone() {
    let m = mmu();
    let s = four_level(&m);
    load(&m, 0, &s);
    cpu_access(&m, 0, &s, 0x40_0000, rd(true));
    for i in 1..8 {
        assert_eq!(m.shadow_translate(0, Gva(0x40_0000 + 0x1000 * i)), None);
        assert_eq!(r64(&m, 0x4000 + 8 * i) & A, 0);
    }
    assert_eq!(m.stats().prefetched_speculative, 0);
}

/// Prefetch scans a page's whole window once; later faults in the page
/// look only at their 16 neighbours until the guest's writes to the table
/// are synced: a table of entries that can never be mapped (MMIO, here)
/// does not cost every fault a full scan.
#[test]
fn later_faults_in_a_prefetched_page_scan_their_neighbours_only() {
    let m = mmu();
    w64(&m, 0x1000, 0x2000 | UPPER);
    w64(&m, 0x2000, 0x3000 | UPPER);
    w64(&m, 0x3000 + 2 * 8, 0x4000 | UPPER);
    // Every entry accessed and pointing beyond RAM (never prefetched), but
    // 0 and 1, and 10, which maps the table itself.
    for i in 0..512 {
        w64(&m, 0x4000 + 8 * i, (RAM + 0x1000 * i) | LEAF_RW | A);
    }
    w64(&m, 0x4000, 0x10_0000 | LEAF_RW | A);
    w64(&m, 0x4008, 0x10_1000 | LEAF_RW);
    w64(&m, 0x4000 + 8 * 10, 0x4000 | LEAF_RW | A | D);
    let s = long_mode(0x1000);
    load(&m, 0, &s);
    cpu_access(&m, 0, &s, 0x40_0000, rd(true));
    assert_eq!(m.stats().prefetched, 1, "the table's own mapping");
    // The guest writes its leaf table through that mapping (the table goes
    // unsync) and makes entries 5, 40 and 300 RAM.
    for i in [5u64, 40, 300] {
        let at = 0x40_a000 + 8 * i;
        assert_eq!(
            cpu_access(&m, 0, &s, at, wr(true)),
            Cpu::Done(0x4000 + 8 * i)
        );
        w64(&m, 0x4000 + 8 * i, (0x10_0000 + 0x1000 * i) | LEAF_RW | A);
    }
    assert_eq!(m.stats().unsync_pages, 1);
    cpu_access(&m, 0, &s, 0x40_1000, rd(true));
    let mapped = |i: u64| m.shadow_translate(0, Gva(0x40_0000 + 0x1000 * i)).is_some();
    assert!(mapped(5), "a neighbour");
    assert!(!mapped(40) && !mapped(300), "beyond the neighbours");
    // A flush syncs the table: the next fault scans it all again.
    apply(&m, m.flush_tlb(0).unwrap());
    cpu_access(&m, 0, &s, 0x40_0000 + 0x1000 * 40, rd(true));
    assert!(mapped(300), "rescanned after the sync");
    m.audit().unwrap();
}

#[test]
fn guest_fault_is_injected_with_sdm_error_code() {
    let m = mmu();
    let s = four_level(&m);
    w64(&m, 0x4000, 0x10_0000 | PTE_P | PTE_U); // read-only user page
    load(&m, 0, &s);
    let got = cpu_access(&m, 0, &s, 0x40_0000, wr(true));
    assert_eq!(
        got,
        Cpu::Fault(GuestException::PageFault {
            error_code: PfErrorCode::P | PfErrorCode::W | PfErrorCode::U,
            cr2: Gva(0x40_0000)
        })
    );
    let got = cpu_access(&m, 0, &s, 0x80_0000, rd(false));
    assert_eq!(
        got,
        Cpu::Fault(GuestException::PageFault {
            error_code: PfErrorCode::empty(),
            cr2: Gva(0x80_0000)
        })
    );
    m.audit().unwrap();
}

#[test]
fn page_tables_are_write_protected_and_leaf_tables_go_unsync() {
    let m = mmu();
    let s = four_level(&m);
    // Map the PT itself at gva 0x40_5000 and the PD at 0x40_6000.
    w64(&m, 0x4000 + 5 * 8, 0x4000 | LEAF_RW | A | D);
    w64(&m, 0x4000 + 6 * 8, 0x3000 | LEAF_RW | A | D);
    load(&m, 0, &s);
    assert_eq!(
        cpu_access(&m, 0, &s, 0x40_5000, rd(false)),
        Cpu::Done(0x4000)
    );
    let (_, r) = m.shadow_translate(0, Gva(0x40_5000)).unwrap();
    assert!(
        !r.contains(shadow_mmu::PteAccess::WRITE),
        "a shadowed PT is read-only"
    );
    assert!(m.is_write_protected(shadow_mmu::Gfn(4)));
    // Writing the leaf table makes it unsync, not emulated.
    assert_eq!(
        cpu_access(&m, 0, &s, 0x40_5000, wr(false)),
        Cpu::Done(0x4000)
    );
    assert!(!m.is_write_protected(shadow_mmu::Gfn(4)));
    assert_eq!(m.stats().unsync_pages, 1);
    m.audit().unwrap();
    // Writing the PD (a non-leaf table) is used by this very walk: emulate.
    let got = cpu_access(&m, 0, &s, 0x40_6000, wr(false));
    assert_eq!(
        got,
        Cpu::Exit(FaultOutcome::Emulate {
            gpa: shadow_mmu::GuestAddress(0x3000)
        })
    );
    // A TLB flush syncs the unsync PT and protects it again.
    let c = m.flush_tlb(0).unwrap();
    assert!(c.flush_local);
    apply(&m, c);
    assert!(m.is_write_protected(shadow_mmu::Gfn(4)));
    m.audit().unwrap();
}

#[test]
fn unsync_then_invlpg_drops_stale_translation() {
    let m = mmu();
    let s = four_level(&m);
    w64(&m, 0x4000 + 5 * 8, 0x4000 | LEAF_RW | A | D);
    load(&m, 0, &s);
    cpu_access(&m, 0, &s, 0x40_0000, rd(true));
    cpu_access(&m, 0, &s, 0x40_5000, wr(false)); // PT goes unsync
                                                 // The guest remaps gva 0x40_0000 by a direct store into its PT...
    w64(&m, 0x4000, 0x20_0000 | LEAF_RW | A);
    // ...and invalidates it. Nothing is prefaulted, the old frame is gone.
    apply(&m, m.invlpg(0, Gva(0x40_0000)).unwrap());
    assert_eq!(m.shadow_translate(0, Gva(0x40_0000)), None);
    assert_eq!(
        cpu_access(&m, 0, &s, 0x40_0000, rd(true)),
        Cpu::Done(0x20_0000)
    );
    m.audit().unwrap();
}

#[test]
fn track_write_updates_shadow() {
    let m = mmu();
    let s = four_level(&m);
    load(&m, 0, &s);
    cpu_access(&m, 0, &s, 0x40_0000, wr(true));
    assert!(m.is_write_protected(shadow_mmu::Gfn(4)));
    // The VMM emulates a guest write that makes the page read-only.
    w64(&m, 0x4000, 0x10_0000 | PTE_P | PTE_U | A | D);
    let c = m.track_write(shadow_mmu::GuestAddress(0x4000), 8);
    assert!(c.flush_all, "narrowing a present entry needs a flush");
    assert_eq!(c.spte_writes.len(), 1);
    apply(&m, c);
    let (_, r) = m.shadow_translate(0, Gva(0x40_0000)).unwrap();
    assert!(!r.contains(shadow_mmu::PteAccess::WRITE));
    m.audit().unwrap();
}

#[test]
fn large_guest_page_maps_large_when_allowed() {
    let m = mmu();
    let s = four_level(&m);
    // PD entry 3: 2 MiB page at 0x20_0000 (gva 0x60_0000).
    w64(&m, 0x3000 + 3 * 8, 0x20_0000 | LEAF_RW | PTE_W | PS | A | D);
    load(&m, 0, &s);
    assert_eq!(
        cpu_access(&m, 0, &s, 0x60_1234, wr(false)),
        Cpu::Done(0x20_1234)
    );
    assert_eq!(m.stats().pages_in_use, 3, "PML4, PDPT and PD shadows only");
    // Now a page table inside that 2 MiB frame range becomes shadowed: the
    // large leaf must go and the range is mapped with 4 KiB pages.
    w64(&m, 0x3000 + 4 * 8, 0x20_5000 | UPPER);
    w64(&m, 0x20_5000, 0x30_0000 | LEAF_RW | A | D);
    // The PD is write-protected: the guest's write went through emulation.
    apply(
        &m,
        m.track_write(shadow_mmu::GuestAddress(0x3000 + 4 * 8), 8),
    );
    assert_eq!(
        cpu_access(&m, 0, &s, 0x80_0000, rd(false)),
        Cpu::Done(0x30_0000)
    );
    assert!(m.is_write_protected(shadow_mmu::Gfn(0x205)));
    assert_eq!(
        cpu_access(&m, 0, &s, 0x60_1234, wr(false)),
        Cpu::Done(0x20_1234)
    );
    assert_eq!(
        cpu_access(&m, 0, &s, 0x60_5000, rd(false)),
        Cpu::Done(0x20_5000)
    );
    m.audit().unwrap();
}

#[test]
fn mmio_is_reported_not_mapped() {
    let m = mmu();
    let s = four_level(&m);
    w64(&m, 0x4000, 0x1_0000_0000 | LEAF_RW);
    load(&m, 0, &s);
    assert_eq!(
        cpu_access(&m, 0, &s, 0x40_0000, rd(true)),
        Cpu::Exit(FaultOutcome::Mmio {
            gpa: shadow_mmu::GuestAddress(0x1_0000_0000)
        })
    );
    assert_eq!(m.shadow_translate(0, Gva(0x40_0000)), None);
    m.register_mmio(0x1_0000_0000..0x1_0001_0000);
    assert_eq!(
        cpu_access(&m, 0, &s, 0x40_0000, rd(true)),
        Cpu::Done(0x1_0000_0000)
    );
    m.audit().unwrap();
}

/// Guest RAM at 2 TiB, where a frame no longer fits the 32-bit packed
/// translation and goes to the page's side list: faults map it, the frame
/// becoming a page table write-protects its mapping (found through the
/// reverse map by that frame), INVLPG drops it, and the audit agrees at
/// every step.
#[test]
fn leaves_above_2_tib() {
    use shadow_mmu::{GuestAddress, Mmu, MmuConfig};
    use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

    let far = 2u64 << 40;
    let mem = GuestMemoryMmap::<()>::from_ranges(&[
        (GuestAddress(0), RAM as usize),
        (GuestAddress(far), 0x4000),
    ])
    .expect("guest RAM");
    let m = Mmu::new(GuestMemoryAtomic::new(mem), MmuConfig::default()).expect("mmu");
    w64(&m, 0x1000, 0x2000 | UPPER);
    w64(&m, 0x2000, 0x3000 | UPPER);
    w64(&m, 0x3000 + 2 * 8, 0x4000 | UPPER);
    for i in 0..4 {
        w64(&m, 0x4000 + 8 * i, (far + 0x1000 * i) | LEAF_RW);
    }
    // The far frame's first entry, for when it is used as a page table.
    w64(&m, far, 0x10_0000 | LEAF_RW);
    let s = long_mode(0x1000);
    load(&m, 0, &s);
    for i in 0..4 {
        let gva = 0x40_0000 + 0x1000 * i + 0x18;
        assert_eq!(
            cpu_access(&m, 0, &s, gva, wr(true)),
            Cpu::Done(far + 0x1000 * i + 0x18)
        );
        let (gpa, rights) = m.shadow_translate(0, Gva(gva)).expect("mapped");
        assert_eq!(gpa, far + 0x1000 * i + 0x18);
        assert!(rights.contains(shadow_mmu::PteAccess::WRITE));
    }
    m.audit().unwrap();

    // PD entry 3 makes the far frame a page table: gva 0x60_0000 maps
    // 0x10_0000 through it, and the write access to it must go.
    w64(&m, 0x3000 + 3 * 8, far | UPPER);
    assert_eq!(
        cpu_access(&m, 0, &s, 0x60_0000, rd(true)),
        Cpu::Done(0x10_0000)
    );
    let (_, rights) = m.shadow_translate(0, Gva(0x40_0000)).expect("still mapped");
    assert!(!rights.contains(shadow_mmu::PteAccess::WRITE));
    m.audit().unwrap();

    for i in 0..4 {
        apply(&m, m.invlpg(0, Gva(0x40_0000 + 0x1000 * i)).unwrap());
        assert_eq!(m.shadow_translate(0, Gva(0x40_0000 + 0x1000 * i)), None);
    }
    m.audit().unwrap();
    assert_eq!(m.stats().rmap_entries, 1, "only 0x60_0000's leaf is left");
}

/// A clean guest 2 MiB page mapped with 4 KiB pieces (a direct shadow page
/// whose rights lack write until the guest entry is dirty) becomes dirty on
/// a write: the walk sets D in the guest entry, which no tracked write
/// reports. The shadow must then link a direct page built for the dirty
/// rights rather than put a writable leaf into the clean page's, which
/// another mapping of the same clean range shares (KVM's
/// validate_direct_spte). Regression: the second root below read through
/// the shared page a writable entry for a clean guest page.
#[test]
fn dirtying_a_large_guest_page_does_not_make_its_clean_shadow_writable() {
    let m = mmu();
    let s = four_level(&m);
    // PD entry 3: a clean 2 MiB page at 0x20_0000 (gva 0x60_0000), with a
    // shadowed page table inside it, so it is mapped with 4 KiB pieces.
    w64(&m, 0x3000 + 3 * 8, 0x20_0000 | LEAF_RW | PS | A);
    w64(&m, 0x3000 + 4 * 8, 0x20_5000 | UPPER);
    w64(&m, 0x20_5000, 0x30_0000 | LEAF_RW | A | D);
    // A second address space maps the same clean 2 MiB page.
    w64(&m, 0x7000, 0x8000 | UPPER);
    w64(&m, 0x8000, 0x9000 | UPPER);
    w64(&m, 0x9000 + 3 * 8, 0x20_0000 | LEAF_RW | PS | A);
    let other = long_mode(0x7000);

    load(&m, 0, &s);
    assert_eq!(
        cpu_access(&m, 0, &s, 0x80_0000, rd(false)),
        Cpu::Done(0x30_0000)
    );
    assert_eq!(
        cpu_access(&m, 0, &s, 0x60_1000, rd(false)),
        Cpu::Done(0x20_1000)
    );
    let (_, rights) = m.shadow_translate(0, Gva(0x60_1000)).unwrap();
    assert!(
        !rights.contains(shadow_mmu::PteAccess::WRITE),
        "clean: read-only"
    );
    assert_eq!(
        cpu_access(&m, 0, &s, 0x60_1000, wr(false)),
        Cpu::Done(0x20_1000)
    );
    // SDM 4.8: the write set D in the guest large-page entry.
    assert_eq!(r64(&m, 0x3000 + 3 * 8) & D, D);
    m.audit().unwrap();

    load(&m, 0, &other);
    // A neighbour of the written page: 0x60_1000 itself is not faulted here
    // (its fault would rewrite the entry with the second space's rights).
    assert_eq!(
        cpu_access(&m, 0, &other, 0x60_2000, rd(false)),
        Cpu::Done(0x20_2000)
    );
    let rights = m.shadow_translate(0, Gva(0x60_1000)).map(|(_, r)| r);
    assert!(
        !rights.is_some_and(|r| r.contains(shadow_mmu::PteAccess::WRITE)),
        "the second space's page is clean: its shadow must not be writable ({rights:?})"
    );
    m.audit().unwrap();
}

/// An MMU over guest memory with a dirty bitmap (the memory a VMM that
/// logs dirty pages uses) records the stores it makes itself: the A and D
/// bits a walk sets land in the bitmap as any guest store would.
#[test]
fn the_mmu_s_own_stores_are_in_the_dirty_bitmap() {
    use shadow_mmu::{Mmu, MmuConfig};
    use vm_memory::bitmap::{AtomicBitmap, Bitmap};
    use vm_memory::{
        Bytes, GuestAddress, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryBackend,
        GuestMemoryMmap, GuestMemoryRegion,
    };

    let mem =
        GuestMemoryMmap::<AtomicBitmap>::from_ranges(&[(GuestAddress(0), RAM as usize)]).unwrap();
    for (gpa, v) in [
        (0x1000, 0x2000 | UPPER),
        (0x2000, 0x3000 | UPPER),
        (0x3000 + 2 * 8, 0x4000 | UPPER),
        (0x4000, 0x10_0000 | LEAF_RW),
    ] {
        mem.write_obj::<u64>(v, GuestAddress(gpa)).unwrap();
    }
    let bitmap = |gpa: u64| {
        let region = mem.find_region(GuestAddress(gpa)).unwrap();
        region.bitmap().dirty_at(gpa as usize)
    };
    assert!(bitmap(0x4000), "the guest's own stores are logged");
    // What the guest's stores logged so far has been collected.
    mem.iter()
        .for_each(|r| vm_memory::MmapRegion::bitmap(r).reset());
    let m = Mmu::new(GuestMemoryAtomic::new(mem.clone()), MmuConfig::default()).unwrap();
    let s = long_mode(0x1000);
    let (_, _changes) = m.load_paging_state(0, &s).unwrap();
    let (outcome, _) = m
        .page_fault(0, Gva(0x40_0000), PfErrorCode::W | PfErrorCode::U)
        .unwrap();
    assert_eq!(outcome, FaultOutcome::Fixed);
    let guest = m.memory().memory();
    assert_eq!(
        guest.read_obj::<u64>(GuestAddress(0x4000)).unwrap(),
        0x10_0000 | LEAF_RW | A | D
    );
    for table in [0x1000, 0x2000, 0x3000, 0x4000] {
        assert!(bitmap(table), "A/D set in the table at {table:#x}");
    }
    assert!(
        !bitmap(0x10_0000),
        "the data page: the CPU's store, not the MMU's"
    );
    assert!(!bitmap(0x5000));
}
