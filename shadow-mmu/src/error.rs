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
}
