// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A model of the guest's CPU and VMM around a [`Mmu`], for tests and fuzz
//! targets (feature `test-utils`): what a CPU running on the shadow tables
//! does with one access, what the guest's own tables say about it, and a VMM
//! whose flushes complete at once. Expected values come from the walker and
//! the SDM's rules written here, never from the MMU under test.

use vm_memory::GuestMemoryBackend;

use crate::walker::peek;
use crate::{
    Access, AccessKind, Changes, Cr4, FaultOutcome, GuestException, Gva, Mmu, MmuError, PagingMode,
    PagingState, PfErrorCode, PteAccess, ShadowMmu, WalkError,
};

/// What a CPU running on the shadow tables ends up doing for one access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cpu {
    /// The access completed at this shadow-physical address.
    Done(u64),
    /// The guest got this exception.
    Fault(GuestException),
    /// The VMM must emulate (MMIO or a page-table write).
    Exit(FaultOutcome),
}

/// The page-fault error code a CPU reports for a shadow-table miss on
/// `access` (the P bit is the MMU's business, not the CPU's).
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

/// Whether a host CPU with CR0.WP=1 and the guest's SMEP and SMAP (SDM
/// Vol. 3A 4.6; explicit accesses, EFLAGS.AC from `state`) lets `access` through a shadow translation with rights `r`.
/// As KVM does, the host runs without SMEP and SMAP while the guest has
/// paging off: they mean nothing to the guest then.
pub fn shadow_allows(state: &PagingState, r: PteAccess, access: Access) -> bool {
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

/// The VMM's side of an operation in a model without real CPUs: every
/// flush completes at once.
pub fn apply(m: &Mmu, c: Changes) {
    if c.flush_all {
        m.flush_completed();
    }
}

/// What the guest's own tables say about `access` (without setting A/D).
pub fn guest_says(
    mem: &impl GuestMemoryBackend,
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

/// One shadow fault taken on the way: the translation the CPU found (if
/// any), what the MMU made of it, and whether it asked for a global flush.
pub type FaultStep = (Option<(u64, PteAccess)>, FaultOutcome, bool);

/// Why [`cpu_access`] gave up.
#[derive(Debug)]
pub enum CpuError {
    /// The MMU failed.
    Mmu(MmuError),
    /// The access kept faulting: the faults taken.
    Unsettled(Vec<FaultStep>),
}

/// Performs `access` as a CPU on vCPU `vcpu`'s shadow root would: a hit in
/// the shadow tables that allows it completes; anything else is a shadow
/// page fault the MMU resolves, at most `max_faults` times.
pub fn cpu_access(
    m: &Mmu,
    vcpu: usize,
    state: &PagingState,
    gva: u64,
    access: Access,
    max_faults: usize,
) -> Result<Cpu, CpuError> {
    let mut trace = Vec::new();
    for _ in 0..max_faults {
        let shadow = m.shadow_translate(vcpu, Gva(gva));
        if let Some((spa, rights)) = shadow {
            if shadow_allows(state, rights, access) {
                return Ok(Cpu::Done(spa));
            }
        }
        let (outcome, changes) = m
            .page_fault(vcpu, Gva(gva), error_code(access))
            .map_err(CpuError::Mmu)?;
        trace.push((shadow, outcome, changes.flush_all));
        apply(m, changes);
        match outcome {
            FaultOutcome::Fixed | FaultOutcome::Retry => continue,
            FaultOutcome::Inject(e) => return Ok(Cpu::Fault(e)),
            other => return Ok(Cpu::Exit(other)),
        }
    }
    Err(CpuError::Unsettled(trace))
}

/// Loads `state` on `vcpu` as a VMM would: when every shadow page is in use
/// or waiting for a flush, completes the flush and tries again. Returns the
/// root.
pub fn load(m: &Mmu, vcpu: usize, state: &PagingState) -> Result<u64, MmuError> {
    for _ in 0..4 {
        match m.load_paging_state(vcpu, state) {
            Ok((root, c)) => {
                apply(m, c);
                return Ok(root);
            }
            Err(MmuError::OutOfPages) => m.flush_completed(),
            Err(e) => return Err(e),
        }
    }
    Err(MmuError::OutOfPages)
}
