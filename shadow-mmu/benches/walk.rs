// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Guest walk throughput: warm walks (A/D already set, so no
//! compare-exchange) in every paging mode. The result is consumed with
//! `std::hint::black_box(..).is_ok()`: criterion 0.5's own `black_box` would
//! re-read the whole 152-byte walk record byte by byte (~20 ns).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use shadow_mmu::pte::{PTE_A, PTE_D, PTE_P, PTE_PS, PTE_U, PTE_W};
use shadow_mmu::{
    load_pdptrs, walk, Access, AccessKind, Cr0, Cr4, Efer, GuestAddress, Gva, PagingState,
};
use vm_memory::{Bytes, GuestMemoryMmap};

const FLAGS: u64 = PTE_P | PTE_W | PTE_U | PTE_A | PTE_D;

fn memory() -> GuestMemoryMmap<()> {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x100_0000)]).expect("guest memory")
}

fn put64(m: &GuestMemoryMmap<()>, gpa: u64, v: u64) {
    m.write_obj(v, GuestAddress(gpa)).expect("write");
}

fn put32(m: &GuestMemoryMmap<()>, gpa: u64, v: u32) {
    m.write_obj(v, GuestAddress(gpa)).expect("write");
}

fn bench_walks(c: &mut Criterion) {
    let read = Access::at_cpl(AccessKind::Read, 3);

    // 4-level: 0x40_0000 -> PML4 0x1000 -> PDPT 0x2000 -> PD 0x3000 -> PT 0x4000.
    let m = memory();
    put64(&m, 0x1000, 0x2000 | FLAGS);
    put64(&m, 0x2000, 0x3000 | FLAGS);
    put64(&m, 0x3000 + 16, 0x4000 | FLAGS);
    put64(&m, 0x4000, 0x5000 | FLAGS);
    let long = PagingState {
        cr0: Cr0::PE | Cr0::PG | Cr0::WP,
        cr3: 0x1000,
        cr4: Cr4::PAE | Cr4::SMEP | Cr4::SMAP,
        efer: Efer::LME | Efer::LMA | Efer::NXE,
        ..Default::default()
    };
    c.bench_function("walk/4-level warm 4K", |b| {
        b.iter(|| black_box(walk(&m, black_box(&long), black_box(Gva(0x40_0123)), read)).is_ok())
    });
    put64(&m, 0x3000 + 24, 0x20_0000 | FLAGS | PTE_PS);
    c.bench_function("walk/4-level warm 2M", |b| {
        b.iter(|| black_box(walk(&m, black_box(&long), black_box(Gva(0x60_0123)), read)).is_ok())
    });
    let la57 = PagingState {
        cr3: 0x6000,
        cr4: long.cr4 | Cr4::LA57,
        ..long
    };
    put64(&m, 0x6000, 0x1000 | FLAGS);
    c.bench_function("walk/5-level warm 4K", |b| {
        b.iter(|| black_box(walk(&m, black_box(&la57), black_box(Gva(0x40_0123)), read)).is_ok())
    });

    // 32-bit: PD 0x7000 -> PT 0x8000.
    put32(&m, 0x7000 + 4, 0x8000 | FLAGS as u32);
    put32(&m, 0x8000, 0x9000 | FLAGS as u32);
    let legacy = PagingState {
        cr0: Cr0::PE | Cr0::PG | Cr0::WP,
        cr3: 0x7000,
        cr4: Cr4::PSE,
        ..Default::default()
    };
    c.bench_function("walk/32-bit warm 4K", |b| {
        b.iter(|| {
            black_box(walk(
                &m,
                black_box(&legacy),
                black_box(Gva(0x40_0123)),
                read,
            ))
            .is_ok()
        })
    });

    // PAE: PDPT 0xa000 -> PD 0xb000 -> PT 0xc000.
    put64(&m, 0xa000, 0xb000 | PTE_P);
    put64(&m, 0xb000 + 16, 0xc000 | FLAGS);
    put64(&m, 0xc000, 0xd000 | FLAGS);
    let mut pae = PagingState {
        cr0: Cr0::PE | Cr0::PG | Cr0::WP,
        cr3: 0xa000,
        cr4: Cr4::PAE,
        efer: Efer::NXE,
        ..Default::default()
    };
    pae.pdptrs = load_pdptrs(&m, &pae).expect("pdptrs");
    c.bench_function("walk/PAE warm 4K", |b| {
        b.iter(|| black_box(walk(&m, black_box(&pae), black_box(Gva(0x40_0123)), read)).is_ok())
    });
}

criterion_group!(benches, bench_walks);
criterion_main!(benches);
