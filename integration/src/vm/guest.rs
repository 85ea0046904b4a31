// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The guest kernel of `resources/guests/`, built by `build.rs` with gcc and
//! binutils.

/// The guest kernel ELF: ABI note (`"ShadowMMU"`, entry64) and Xen PVH note.
pub const KERNEL_ELF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/kernel.elf"));
