// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Fuzz harnesses: plain functions over `&[u8]`, shared by the cargo-fuzz
//! targets of this directory and by `tests/corpus.rs`, which replays the
//! committed corpus as ordinary tests (`cargo test` in `fuzz/`).
//!
//! Every harness decodes its input with [`Input`], which never fails (an
//! exhausted input reads as zeros), so every byte string is a valid test
//! case. A harness panics only when it finds a bug: a panic inside
//! shadow-mmu, a broken invariant it checks, a [`ShadowMmu::audit`](shadow_mmu::ShadowMmu::audit)
//! failure, or a hang the fuzzer's timeout reports.
//!
//! * [`walker`]: the guest page-table walker on arbitrary tables and
//!   arbitrary paging state.
//! * [`mmu_ops`]: random sequences of [`ShadowMmu`](shadow_mmu::ShadowMmu) operations as a guest
//!   and its VMM would make them, audited after every step.
//! * [`hypercall`]: the guest ABI decoder ([`shadow_mmu::abi`]) and the
//!   MMU calls a hypercall turns into.
//! * [`scenario`]: `shadow-run walk` scenario files, parsed and run.
//! * [`emulate()`]: the instruction emulator on random registers,
//!   instruction bytes and guest memory.
//! * [`glue()`]: the KVM glue's exit path (no `/dev/kvm` needed) with IST
//!   frames, switch words, root-cache slots, chain areas and shadow entries
//!   forged as guest CPL0 code can through the hole.

#![deny(missing_docs)]

mod emulate;
mod glue;
mod hypercall;
mod input;
mod mmu_ops;
mod scenario;
mod walker;

pub use emulate::emulate;
pub use glue::glue;
pub use hypercall::hypercall;
pub use input::Input;
pub use mmu_ops::mmu_ops;
pub use scenario::scenario;
pub use walker::walker;
