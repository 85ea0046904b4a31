// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `STOS` and `MOVS`, with and without `REP`.
//!
//! A repeated form runs at most [`MAX_REP_ITERATIONS`] iterations per call
//! and leaves RIP on the instruction if the count is not exhausted, as the
//! CPU does when it takes an interrupt between iterations. An iteration
//! that faults ends the call the same way once others have completed, so
//! that their effects stand (the registers say how far it got) and the
//! fault comes, with unchanged registers, from the next call, which starts
//! on that iteration: the state the CPU reports a fault in.

use super::alu::DF;
use super::decode::{StringForm, StringOp};
use super::operand::{check_canonical, mask, to_bytes, Gpr};
use super::{EmulatorMemory, Exception, Progress, Regs, MAX_REP_ITERATIONS};

/// The address-sized value of pointer or count register `r`.
fn addr_reg(regs: &Regs, r: Gpr, addr32: bool) -> u64 {
    r.read(regs, if addr32 { 4 } else { 8 })
}

/// Adds `delta` to pointer or count register `r` at the address size (a
/// 32-bit write clears bits 32-63, as the CPU's does).
fn step_reg(regs: &mut Regs, r: Gpr, delta: u64, addr32: bool) {
    let size = if addr32 { 4 } else { 8 };
    let v = r.read(regs, size).wrapping_add(delta);
    r.write(regs, size, v);
}

/// One iteration's memory accesses: the element moved or stored.
fn iteration<M: EmulatorMemory>(regs: &Regs, mem: &mut M, s: &StringForm) -> Result<(), Exception> {
    let size = s.size;
    let dst = addr_reg(regs, Gpr::RDI, s.addr32);
    check_canonical(dst, size)?;
    let data = match s.op {
        StringOp::Stos => to_bytes(Gpr::RAX.read(regs, size) & mask(size)),
        StringOp::Movs => {
            let src = addr_reg(regs, Gpr::RSI, s.addr32);
            check_canonical(src, size)?;
            let mut data = [0u8; 8];
            mem.read(src, &mut data[..size])?;
            data
        }
    };
    mem.write(dst, &data[..size])?;
    Ok(())
}

/// Carries out string form `s` on `regs` and `mem`.
pub(super) fn run<M: EmulatorMemory>(
    regs: &mut Regs,
    mem: &mut M,
    s: &StringForm,
) -> Result<Progress, Exception> {
    let count = if s.rep {
        addr_reg(regs, Gpr::RCX, s.addr32)
    } else {
        1
    };
    let step = if regs.rflags & DF != 0 {
        (s.size as u64).wrapping_neg()
    } else {
        s.size as u64
    };
    let todo = count.min(MAX_REP_ITERATIONS);
    let mut done = 0;
    while done < todo {
        if let Err(e) = iteration(regs, mem, s) {
            if done == 0 {
                return Err(e);
            }
            return Ok(Progress::Again { iterations: done });
        }
        step_reg(regs, Gpr::RDI, step, s.addr32);
        if s.op == StringOp::Movs {
            step_reg(regs, Gpr::RSI, step, s.addr32);
        }
        if s.rep {
            step_reg(regs, Gpr::RCX, u64::MAX, s.addr32);
        }
        done += 1;
    }
    if s.rep && done < count {
        Ok(Progress::Again { iterations: done })
    } else {
        Ok(Progress::Done { iterations: done })
    }
}
