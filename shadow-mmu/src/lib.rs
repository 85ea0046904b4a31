// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A userspace x86 shadow MMU.
//!
//! Hosts without EPT/NPT cannot let the CPU walk guest page tables in two
//! dimensions, so a hypervisor keeps *shadow page tables*: real x86 tables that
//! map guest-virtual addresses straight to the frames backing guest memory,
//! built from the guest's own tables and kept coherent as the guest changes
//! them. This crate does that in the VMM.
//!
//! * [`arch`]: registers, paging modes, access kinds, error codes.
//! * [`pte`]: the 32-bit and 64-bit paging-entry formats and how entries are
//!   read from and atomically updated in guest memory.
//! * [`walker`]: the guest page-table walker, exact to the SDM.
//! * [`spt`]: shadow pages, their roles, the arena and the reverse map;
//!   [`spte`]: the shadow entries the CPU walks.
//! * [`mmu`]: the [`ShadowMmu`] trait and [`Mmu`]; the fault path, sync,
//!   roots and the [`audit`] live in modules of their own.

#![deny(missing_docs)]

pub mod abi;
pub mod addr;
pub mod arch;
pub mod audit;
mod fault;
#[cfg(feature = "kvm")]
pub mod kvm;
pub mod mmu;
pub mod pte;
mod roots;
pub mod spt;
pub mod spte;
mod state;
pub mod stats;
mod sync;
pub mod walker;

pub use addr::{Gfn, GuestAddress, Gva, PAGE_SHIFT, PAGE_SIZE};
pub use arch::{
    Access, AccessKind, Cr0, Cr4, Efer, KeyRights, PagingMode, PagingState, PfErrorCode, PteAccess,
};
pub use audit::AuditError;
pub use mmu::{
    Changes, FaultOutcome, FrameMap, GuestException, Hole, IdentityFrames, Mmu, MmuConfig,
    MmuError, ShadowMmu, SpteWrite, TableWrites,
};
pub use pte::PteMemory;
pub use stats::Stats;
pub use walker::{gva_to_gpa, load_pdptrs, peek, translate, walk, GuestWalk, WalkError};
