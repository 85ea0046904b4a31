// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Errors of MMU operations.

use thiserror::Error;

use crate::spt::ArenaError;
use crate::walker::WalkError;

/// Errors of MMU operations (guest faults are outcomes, not errors).
#[derive(Debug, Error)]
pub enum MmuError {
    /// No such vCPU.
    #[error("vCPU {0} does not exist")]
    NoSuchVcpu(usize),
    /// The vCPU has no paging state yet.
    #[error("vCPU {0} has no paging state; call load_paging_state first")]
    NoPagingState(usize),
    /// No shadow page for a root: pages were reclaimed but may still be
    /// cached by some CPU. Flush every vCPU, call
    /// [`ShadowMmu::flush_completed`](crate::ShadowMmu::flush_completed), and retry.
    #[error("no free shadow page for a root; flush all vCPUs and retry")]
    OutOfPages,
    /// The configuration is unusable.
    #[error("invalid MMU configuration: {0}")]
    Config(&'static str),
    /// The arena could not be created.
    #[error(transparent)]
    Arena(#[from] ArenaError),
    /// The guest walk failed.
    #[error("guest walk failed: {0}")]
    Walk(#[from] WalkError),
    /// A shadow entry the CPU uses holds a value the MMU did not write:
    /// code with access to the arena (guest CPL0 code, through the
    /// hypervisor hole) overwrote it. The VM cannot go on.
    #[error(
        "shadow entry at {addr:#x} was overwritten: it holds {found:#x}, the MMU wrote {expected:#x}"
    )]
    ShadowCorrupted {
        /// Shadow-physical address of the entry.
        addr: u64,
        /// What the MMU wrote.
        expected: u64,
        /// What the entry holds.
        found: u64,
    },
}
