// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A software guest for MMU tests: guest RAM, page-table building helpers,
//! and a "CPU" that accesses memory through the shadow tables the way the
//! hardware would, taking shadow page faults into the MMU.

#![allow(dead_code)]

use std::sync::atomic::Ordering;

use shadow_mmu::pte::{PTE_A, PTE_D, PTE_P, PTE_PS, PTE_U, PTE_W};
use shadow_mmu::{
    walker, Access, AccessKind, Changes, Cr0, Cr4, Efer, FaultOutcome, GuestAddress,
    GuestException, Gva, Mmu, MmuConfig, PagingState, PfErrorCode, PteAccess, ShadowMmu,
};
use vm_memory::{Bytes, GuestMemoryAtomic, GuestMemoryMmap};

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

use vm_memory::GuestAddressSpace;

/// Applies what the VMM must do after an operation (there is no real CPU
/// here, so flushes complete at once).
pub fn apply(m: &Mmu, c: Changes) {
    if c.flush_all {
        m.flush_completed();
    }
}

pub fn error_code(access: Access) -> PfErrorCode {
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

/// What a CPU running on the shadow tables ends up doing for one access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cpu {
    /// The access completed at this guest-physical address.
    Done(u64),
    /// The guest got this exception.
    Fault(GuestException),
    /// The VMM must emulate (MMIO or a page-table write).
    Exit(FaultOutcome),
}

/// Whether shadow rights allow `access` on a CPU with `state`'s control bits.
pub fn shadow_allows(state: &PagingState, r: PteAccess, access: Access) -> bool {
    let user = access.user;
    match access.kind {
        AccessKind::Read => !user || r.contains(PteAccess::USER),
        AccessKind::Write => r.contains(PteAccess::WRITE) && (!user || r.contains(PteAccess::USER)),
        AccessKind::Fetch => {
            r.contains(PteAccess::EXEC)
                && (if user {
                    r.contains(PteAccess::USER)
                } else {
                    !(r.contains(PteAccess::USER) && state.cr4.contains(Cr4::SMEP))
                })
        }
    }
}

/// Performs `access` as a CPU on vCPU `vcpu`'s shadow root would: a hit in
/// the shadow tables completes; a miss is a shadow page fault the MMU
/// resolves. The host CPU runs with CR0.WP=1, so supervisor writes need W.
pub fn cpu_access(m: &Mmu, vcpu: usize, state: &PagingState, gva: u64, access: Access) -> Cpu {
    for _ in 0..16 {
        if let Some((spa, rights)) = m.shadow_translate(vcpu, Gva(gva)) {
            if shadow_allows(state, rights, access) {
                return Cpu::Done(spa);
            }
        }
        let (outcome, changes) = m
            .page_fault(vcpu, Gva(gva), error_code(access))
            .expect("page fault");
        apply(m, changes);
        match outcome {
            FaultOutcome::Fixed | FaultOutcome::Retry => continue,
            FaultOutcome::Inject(e) => return Cpu::Fault(e),
            other => return Cpu::Exit(other),
        }
    }
    panic!("access to {gva:#x} did not settle");
}

/// What the guest's own tables say about `access` (without touching A/D).
pub fn guest_says(
    m: &Mmu,
    state: &PagingState,
    gva: u64,
    access: Access,
) -> Result<u64, GuestException> {
    match walker::peek(&*m.memory().memory(), state, Gva(gva), access) {
        Ok(w) => Ok(w.gpa.0),
        Err(shadow_mmu::WalkError::PageFault(ec)) => Err(GuestException::PageFault {
            error_code: ec,
            cr2: Gva(gva),
        }),
        Err(_) => Err(GuestException::GeneralProtection),
    }
}

pub fn load(m: &Mmu, vcpu: usize, state: &PagingState) -> u64 {
    for _ in 0..4 {
        match m.load_paging_state(vcpu, state) {
            Ok((root, c)) => {
                apply(m, c);
                return root;
            }
            // Reclaimed pages become free once every vCPU has flushed.
            Err(shadow_mmu::MmuError::OutOfPages) => m.flush_completed(),
            Err(e) => panic!("load paging state: {e}"),
        }
    }
    panic!("no shadow page for a root after flushing");
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
