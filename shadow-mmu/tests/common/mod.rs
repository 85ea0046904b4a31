// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A software guest for MMU tests: guest RAM, page-table building helpers,
//! and a "CPU" that accesses memory through the shadow tables the way the
//! hardware would, taking shadow page faults into the MMU.

#![allow(dead_code)]

use std::sync::atomic::Ordering;

use shadow_mmu::pte::{PTE_A, PTE_D, PTE_P, PTE_PS, PTE_U, PTE_W};
use shadow_mmu::test_utils;
use shadow_mmu::{
    Access, AccessKind, Cr0, Cr4, Efer, GuestAddress, GuestException, Mmu, MmuConfig, PagingState,
};
use vm_memory::{Bytes, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};

pub const RAM: u64 = 64 << 20;
pub const UPPER: u64 = PTE_P | PTE_W | PTE_U;
pub const LEAF_RW: u64 = PTE_P | PTE_W | PTE_U;
pub const A: u64 = PTE_A;
pub const D: u64 = PTE_D;
pub const PS: u64 = PTE_PS;

pub fn memory() -> GuestMemoryAtomic<GuestMemoryMmap> {
    GuestMemoryAtomic::new(
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), RAM as usize)]).expect("guest RAM"),
    )
}

pub fn mmu_with(config: MmuConfig) -> Mmu {
    Mmu::new(memory(), config).expect("mmu")
}

pub fn mmu() -> Mmu {
    mmu_with(MmuConfig::default())
}

pub fn long_mode(cr3: u64) -> PagingState {
    PagingState {
        cr0: Cr0::PE | Cr0::PG | Cr0::WP,
        cr3,
        cr4: Cr4::PAE,
        efer: Efer::LME | Efer::LMA | Efer::NXE,
        ..Default::default()
    }
}

// The software guest writes and reads its memory with atomic accesses, as
// the MMU does: a vCPU thread may rewrite a page table that another vCPU's
// fault is reading, and a plain (`write_obj`) store racing with the MMU's
// atomic loads is a data race in Rust terms (Miri reports it), even though
// a real guest's stores, made by the CPU, are not. Unaligned accesses, which
// no test makes concurrently, fall back to `write_obj`/`read_obj`.

pub fn w64(m: &Mmu, gpa: u64, v: u64) {
    let mem = m.memory().memory();
    if gpa.is_multiple_of(8) {
        mem.store(v, GuestAddress(gpa), Ordering::Release)
    } else {
        mem.write_obj(v, GuestAddress(gpa))
    }
    .expect("write");
}

pub fn r64(m: &Mmu, gpa: u64) -> u64 {
    let mem = m.memory().memory();
    if gpa.is_multiple_of(8) {
        mem.load(GuestAddress(gpa), Ordering::Acquire)
    } else {
        mem.read_obj(GuestAddress(gpa))
    }
    .expect("read")
}

pub fn w32(m: &Mmu, gpa: u64, v: u32) {
    let mem = m.memory().memory();
    if gpa.is_multiple_of(4) {
        mem.store(v, GuestAddress(gpa), Ordering::Release)
    } else {
        mem.write_obj(v, GuestAddress(gpa))
    }
    .expect("write");
}

// Not every test uses every part of the model.
#[allow(unused_imports)]
pub use shadow_mmu::test_utils::{apply, error_code, shadow_allows, Cpu};

/// Performs `access` as a CPU on vCPU `vcpu`'s shadow root would (the
/// shared guest model, `shadow_mmu::test_utils`).
pub fn cpu_access(m: &Mmu, vcpu: usize, state: &PagingState, gva: u64, access: Access) -> Cpu {
    match test_utils::cpu_access(m, vcpu, state, gva, access, 16) {
        Ok(cpu) => cpu,
        Err(e) => panic!("access to {gva:#x} did not settle: {e:?}"),
    }
}

/// What the guest's own tables say about `access` (without touching A/D).
pub fn guest_says(
    m: &Mmu,
    state: &PagingState,
    gva: u64,
    access: Access,
) -> Result<u64, GuestException> {
    test_utils::guest_says(&*m.memory().memory(), state, gva, access)
}

/// Loads `state` on `vcpu`, completing flushes when pages run out.
pub fn load(m: &Mmu, vcpu: usize, state: &PagingState) -> u64 {
    test_utils::load(m, vcpu, state).expect("load paging state")
}

pub fn rd(user: bool) -> Access {
    Access {
        kind: AccessKind::Read,
        user,
        implicit: false,
    }
}

pub fn wr(user: bool) -> Access {
    Access {
        kind: AccessKind::Write,
        user,
        implicit: false,
    }
}

pub fn fe(user: bool) -> Access {
    Access {
        kind: AccessKind::Fetch,
        user,
        implicit: false,
    }
}
