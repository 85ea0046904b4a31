// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! cargo-fuzz target: see `shadow_mmu_fuzz_common::glue`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    shadow_mmu_fuzz_common::glue(data);
});
