// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Integration harness for shadow-mmu.
//!
//! * [`scenario`], [`walk`]: the scenario format of `shadow-run walk` and its
//!   runner (from the `shadow-mmu-scenario` crate).
//! * [`vm`]: a small KVM test VMM that runs the guest kernel of
//!   `resources/guests/` with native and shadow paging.
//! * [`suite`]: the main job and `shadow-run bench`.
//! * [`attack`]: `shadow-run attack`, a hostile guest kernel over many
//!   seeds, its outcomes classified.
//! * [`soak`]: `shadow-run soak`, the workloads in random order and
//!   configurations, each checked against its native run.

#![deny(missing_docs)]

pub mod attack;
pub mod soak;
pub mod suite;
pub mod vm;

pub use shadow_mmu_scenario::{scenario, walk};
