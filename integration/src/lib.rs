// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Integration harness for shadow-mmu.
//!
//! * [`scenario`]: the scenario format of `shadow-run walk` (parsing and
//!   validation, usable from tests and fuzz targets).
//! * [`walk`]: running a scenario against [`shadow_mmu::walk`] and printing
//!   the results (`shadow-run walk`).
//! * [`vm`]: a small KVM test VMM that runs the guest kernel of
//!   `resources/guests/` with native (and, once wired, shadow) paging.

#![deny(missing_docs)]

pub mod fuzz_harness;
pub mod scenario;
pub mod suite;
pub mod vm;
pub mod walk;

// fuzz_harness.rs still imports `crate::run`; drop once it names `walk`.
#[doc(hidden)]
pub use walk as run;
