// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Scenario files for the shadow-mmu guest page-table walker
//! (`resources/SCENARIO.md`): guest memory, paging state and accesses in
//! JSON, and the expected output of `shadow-run walk`.
//!
//! * [`scenario`]: the format (parsing and validation, usable from tests and
//!   fuzz targets).
//! * [`walk`]: running a scenario against [`shadow_mmu::walk`] and printing
//!   the results.
//!
//! A crate of its own so that fuzzing the scenario parser needs neither KVM
//! nor the guest kernel.

#![deny(missing_docs)]

pub mod scenario;
pub mod walk;
