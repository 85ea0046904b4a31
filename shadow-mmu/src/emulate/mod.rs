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
//!
//! How it is built:
//!
//! * `decode`: the bytes at RIP, fetched up to 15, decoded with iced-x86,
//!   turned into the forms above (anything else is
//!   [`EmulateError::Unsupported`]).
//! * `operand`: registers at an operand size, linear addresses of memory
//!   operands (0x67 wraps them at 4 GiB; FS and GS are refused, other
//!   segment prefixes do nothing in 64-bit mode), the canonical check.
//! * `alu`: ADD, SUB, AND, OR, XOR and the bit operations, with RFLAGS.
//! * `rmw`: the one-operand forms. Every read-modify-write, locked or not,
//!   is a [`EmulatorMemory::cmpxchg`] loop: atomic where the guest asked
//!   for it, a write access from the start (as the CPU's is), and bounded
//!   by [`MAX_RMW_TRIES`], after which the instruction is handed back
//!   unexecuted ([`Emulated::rep_pending`]) rather than failed.
//! * `string`: `STOS` and `MOVS`, at most [`MAX_REP_ITERATIONS`] per call.
//! * `guest`: [`MmuMemory`], the [`EmulatorMemory`] a VMM hands the
//!   emulator: guest memory through the guest's own tables, every store
//!   reported to the MMU.
//!
//! The tests run every form on the host CPU too and compare registers,
//! RFLAGS and memory.

mod alu;
mod decode;
mod guest;
mod operand;
mod rmw;
mod string;
#[cfg(all(test, target_arch = "x86_64", target_os = "linux"))]
mod tests;

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

pub use guest::MmuMemory;

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
    /// Iterations carried out (1 for anything but `REP` string forms; 0 for
    /// a `REP` form with a zero count, and for an instruction given back to
    /// the guest with `rep_pending`).
    pub iterations: u64,
    /// Whether RIP was left on the instruction, so that the CPU carries on
    /// with it (or it comes back here): a `REP` form stopped early (at the
    /// iteration limit, or before an iteration that faults, which the next
    /// call then reports), or a read-modify-write found its operand changed
    /// underneath by another vCPU on each of [`MAX_RMW_TRIES`] tries and did
    /// nothing (`iterations` 0), so that the guest executes it again.
    pub rep_pending: bool,
}

/// Most iterations of a `REP` string instruction one call carries out; the
/// rest runs on the CPU (or comes back here), as after an interrupt.
pub const MAX_REP_ITERATIONS: u64 = 4096;

/// Most compare-exchange tries of one read-modify-write before the
/// instruction is given back to the guest unexecuted ([`Emulated::rep_pending`]):
/// a bound, so that a guest hammering the word from another vCPU cannot keep
/// the VMM here, and no error, because the instruction is valid and runs
/// again (and the guest can take interrupts in between).
pub const MAX_RMW_TRIES: u32 = 64;

/// How far an instruction got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Progress {
    /// Completed: RIP moves past it.
    Done {
        /// Iterations carried out.
        iterations: u64,
    },
    /// Not completed: RIP stays on it.
    Again {
        /// Iterations carried out.
        iterations: u64,
    },
}

/// Emulates the instruction at `regs.rip` at privilege level `cpl`: on
/// success the registers, RFLAGS and memory hold its effects and `regs.rip`
/// points after it (unless [`Emulated::rep_pending`]).
///
/// On error `regs` is unchanged and so is memory: the instruction faulted
/// before its one store (a `REP` form that faults after some iterations
/// returns them as done, and the fault on the next call).
///
/// Bytes that do not decode give [`EmulateError::Decode`], instructions not
/// emulated (including an emulated opcode with a register destination, or
/// an FS or GS segment override) [`EmulateError::Unsupported`], and `LOCK`
/// on a form that does not allow it [`Exception::InvalidOpcode`]. A
/// non-canonical operand is #GP before any access.
pub fn emulate<M: EmulatorMemory>(
    regs: &mut Regs,
    mem: &mut M,
    cpl: u8,
) -> Result<Emulated, EmulateError> {
    // Rights at `cpl` are the memory's to check: it walks the guest's
    // tables with the guest's CPL. Alignment checking (CR0.AM) is not
    // emulated; the KVM glue's guests run with it off.
    let _ = cpl;
    let insn = decode::fetch_decode(regs, mem)?;
    // Work on a copy: on error the caller's registers stay as they were.
    let mut r = *regs;
    let progress = match &insn.form {
        decode::Form::Mem(form) => rmw::run(&mut r, mem, form),
        decode::Form::String(form) => string::run(&mut r, mem, form),
    }
    .map_err(EmulateError::Exception)?;
    let (iterations, rep_pending) = match progress {
        Progress::Done { iterations } => {
            r.rip = r.rip.wrapping_add(insn.len as u64);
            (iterations, false)
        }
        Progress::Again { iterations } => (iterations, true),
    };
    *regs = r;
    Ok(Emulated {
        len: insn.len,
        iterations,
        rep_pending,
    })
}
