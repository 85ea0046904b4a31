// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! VMM time per emulated guest store into a shadowed page table, without
//! the exit: fetch and decode through the guest's tables, the store through
//! them, and `track_write` (what `ShadowVm::emulate` does between the
//! trampoline's exit and its return chain). Beside it, the same entry
//! written the `MMU_UPDATE` way (a store by the VMM and `track_write`).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use parking_lot::Mutex;
use shadow_mmu::emulate::{self, MmuMemory, Regs};
use shadow_mmu::pte::{PTE_A, PTE_D, PTE_P, PTE_U, PTE_W};
use shadow_mmu::{
    Cr0, Cr4, Efer, GuestAddress, Gva, Mmu, MmuConfig, PagingState, PfErrorCode, ShadowMmu,
};
use vm_memory::{Bytes, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};

const RW: u64 = PTE_P | PTE_W | PTE_A | PTE_D;
/// The page table, mapped as data at this address (an entry of itself).
const PT_VA: u64 = 0x40_0000;
/// The code.
const CODE_VA: u64 = 0x40_1000;

/// A 4-level guest whose page table at 0x4000 maps itself at `PT_VA` and
/// the code page at `CODE_VA`, with that table shadowed (a read through it)
/// and kept write-protected (no unsync).
fn guest() -> (Mmu, PagingState) {
    let ram = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 24)]).expect("RAM");
    for (gpa, v) in [
        (0x1000, 0x2000 | RW | PTE_U),
        (0x2000, 0x3000 | RW | PTE_U),
        (0x3000 + 16, 0x4000 | RW | PTE_U),
        (0x4000, 0x4000 | RW),
        (0x4008, 0x5000 | RW),
    ] {
        ram.write_obj(v, GuestAddress(gpa)).expect("table");
    }
    // mov [rdi], rax; lock cmpxchg [rdi], rcx
    ram.write_slice(&[0x48, 0x89, 0x07], GuestAddress(0x5000))
        .expect("code");
    ram.write_slice(&[0xf0, 0x48, 0x0f, 0xb1, 0x0f], GuestAddress(0x5010))
        .expect("code");
    let config = MmuConfig {
        unsync: false,
        ..MmuConfig::default()
    };
    let mmu = Mmu::new(GuestMemoryAtomic::new(ram), config).expect("MMU");
    let state = PagingState {
        cr0: Cr0::PE | Cr0::PG | Cr0::WP,
        cr3: 0x1000,
        cr4: Cr4::PAE,
        efer: Efer::LME | Efer::LMA | Efer::NXE,
        ..Default::default()
    };
    let (_, _) = mmu.load_paging_state(0, &state).expect("root");
    let _ = mmu
        .page_fault(0, Gva(PT_VA), PfErrorCode::empty())
        .expect("shadow the table");
    assert!(mmu.is_write_protected(shadow_mmu::Gfn(4)));
    (mmu, state)
}

fn bench_emulate(c: &mut Criterion) {
    let (mmu, _) = guest();
    let wide = Mutex::new(());
    let entry: u64 = 0x5000 | RW;
    let mut g = c.benchmark_group("emulate");
    let regs = |rip: u64| {
        let mut r = Regs {
            rip,
            rflags: 2,
            ..Regs::default()
        };
        // Entry 1 of the table, rewritten with the value it holds.
        r.gpr[emulate::reg::RDI] = PT_VA + 8;
        r.gpr[emulate::reg::RAX] = entry;
        r.gpr[emulate::reg::RCX] = entry;
        r
    };
    for (name, rip) in [
        ("mov store into a shadowed table", CODE_VA),
        ("lock cmpxchg into a shadowed table", CODE_VA + 0x10),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mem = mmu.memory().memory();
                let mut r = regs(rip);
                let mut access = MmuMemory::new(&mmu, &*mem, 0, 0, &wide);
                let done = emulate::emulate(&mut r, &mut access, 0);
                black_box((done.is_ok(), access.take_changes()))
            })
        });
    }
    g.bench_function("MMU_UPDATE entry (store + track_write)", |b| {
        b.iter(|| {
            let mem = mmu.memory().memory();
            mem.write_obj(entry, GuestAddress(0x4008)).expect("store");
            black_box(mmu.track_write(GuestAddress(0x4008), 8))
        })
    });
    g.finish();
}

criterion_group!(benches, bench_emulate);
criterion_main!(benches);
