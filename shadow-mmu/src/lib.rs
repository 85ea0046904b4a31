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
//! * `spt`: shadow pages, their roles, the arena and the reverse map
//!   (internal); [`spte`]: the shadow entries the CPU walks.
//! * [`config`], [`changes`], [`outcome`], [`error`]: the types the MMU's
//!   operations take and return.
//! * [`mmu`]: the [`ShadowMmu`] trait and [`Mmu`]; the fault path, sync,
//!   roots and the [`audit`] live in modules of their own, below it.
//! * `kvm` (feature `kvm`): running KVM vCPUs on the shadow tables, using
//!   only the crate's public API.
//!
//! Imports go one way: addresses, architectural state and entry formats at
//! the bottom; the walker; shadow pages (which never see the walker); the
//! shared types; the state; the operations; `mmu`; and `kvm` on top.

//!
//! # Example
//!
//! A 4-level guest maps gva `0x40_0000` to `0x5000`; the VMM loads its paging
//! state, takes the vCPU's shadow page fault, and the shadow tables now map
//! the page.
//!
//! ```
//! use shadow_mmu::pte::{PTE_P, PTE_U, PTE_W};
//! use shadow_mmu::{
//!     Cr0, Cr4, Efer, FaultOutcome, GuestAddress, Gva, Mmu, MmuConfig, PagingState,
//!     PfErrorCode, ShadowMmu,
//! };
//! use vm_memory::{Bytes, GuestMemoryAtomic, GuestMemoryMmap};
//!
//! let ram = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
//! let rw = PTE_P | PTE_W | PTE_U;
//! for (gpa, pte) in [(0x1000, 0x2000 | rw), (0x2000, 0x3000 | rw), (0x3010, 0x4000 | rw), (0x4000, 0x5000 | rw)] {
//!     ram.write_obj(pte as u64, GuestAddress(gpa)).unwrap();
//! }
//! let mmu = Mmu::new(GuestMemoryAtomic::new(ram), MmuConfig::default()).unwrap();
//! let state = PagingState {
//!     cr0: Cr0::PE | Cr0::PG | Cr0::WP,
//!     cr3: 0x1000,
//!     cr4: Cr4::PAE,
//!     efer: Efer::LME | Efer::LMA | Efer::NXE,
//!     ..Default::default()
//! };
//! // The shadow root goes into the vCPU's real CR3.
//! let (_root, _changes) = mmu.load_paging_state(0, &state).unwrap();
//! // The vCPU faults on a user read of 0x40_0123.
//! let (outcome, changes) = mmu.page_fault(0, Gva(0x40_0123), PfErrorCode::U).unwrap();
//! assert_eq!(outcome, FaultOutcome::Fixed);
//! // New entries only: nothing for the VMM to flush.
//! assert!(!changes.flush_all && changes.spte_writes.is_empty());
//! assert_eq!(mmu.shadow_translate(0, Gva(0x40_0123)).map(|t| t.0), Some(0x5123));
//! mmu.audit().unwrap();
//! ```

#![deny(missing_docs)]

pub mod abi;
pub mod addr;
pub mod arch;
pub mod audit;
pub mod changes;
pub mod config;
pub mod dirty;
pub mod emulate;
pub mod error;
mod fault;
mod hash;
pub mod hypercall;
#[cfg(feature = "kvm")]
pub mod kvm;
mod lock;
pub mod mmu;
pub mod outcome;
pub mod pte;
mod roots;
// Shadow pages are the MMU's internals; the `test-utils` feature opens them
// to the benches that measure them directly.
#[cfg(feature = "test-utils")]
pub mod spt;
#[cfg(not(feature = "test-utils"))]
mod spt;
pub mod spte;
mod state;
pub mod stats;
mod sync;
#[cfg(feature = "test-utils")]
pub mod test_utils;
pub mod walker;

pub use addr::{Gfn, GuestAddress, Gva, PAGE_SHIFT, PAGE_SIZE};
pub use arch::{
    Access, AccessKind, Cr0, Cr4, Efer, KeyRights, PagingMode, PagingState, PfErrorCode, PteAccess,
};
pub use audit::AuditError;
pub use changes::{Changes, SpteWrite};
pub use config::{
    AtomicGuestMemory, FrameMap, GuestRam, Hole, IdentityFrames, MmuConfig, Prefetch, RamMap,
    TableWrites,
};
pub use dirty::{DirtyEntry, DirtyTable};
pub use error::MmuError;
pub use mmu::{Mmu, ShadowMmu};
pub use outcome::{FaultOutcome, GuestException};
pub use pte::PteMemory;
pub use stats::{SpeculativeMarks, Stats};
pub use walker::{gva_to_gpa, load_pdptrs, peek, translate, walk, GuestWalk, WalkError};
