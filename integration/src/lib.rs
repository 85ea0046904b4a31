// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Integration harness for shadow-mmu.
//!
//! * [`scenario`]: the scenario format of `shadow-run walk` (parsing and
//!   validation, usable from tests and fuzz targets).
//! * [`run`]: running a scenario against [`shadow_mmu::walk`] and printing
//!   the results.
//! * [`vm`]: a small KVM test VMM that runs the guest kernel of
//!   `resources/guests/` with native (and, once wired, shadow) paging.

#![deny(missing_docs)]

pub mod fuzz_harness;
pub mod run;
pub mod scenario;
pub mod suite;
pub mod vm;
