// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The forms with one memory operand: `MOV` stores, and the read-modify-write
//! forms (`XCHG`, `CMPXCHG*`, `ADD`/`OR`/`AND`/`SUB`/`XOR`, `BTS`/`BTR`/`BTC`).
//!
//! Every read-modify-write goes to memory as [`EmulatorMemory::cmpxchg`],
//! with or without `LOCK`: that makes the locked forms atomic, costs the
//! others nothing, and gives one path to test. It also makes the first
//! access a write access, as the CPU's is: a read-modify-write instruction
//! on a page that is not present takes one #PF with W=1, not a read fault
//! first (seen on the host by counting minor faults of `add [m], 1` on a
//! fresh anonymous page), and a `CMPXCHG` that fails still writes.

use super::alu::{self, bit_op, set_arith, ZF};
use super::decode::{BitOffset, MemForm, Src};
use super::operand::{check_canonical, from_bytes, mask, sign_extend, to_bytes, Gpr};
use super::{EmulatorMemory, Exception, Progress, Regs, MAX_RMW_TRIES};

/// The value of a register-or-immediate operand at `size` bytes.
fn value(src: Src, regs: &Regs, size: usize) -> u64 {
    match src {
        Src::Reg(r) => r.read(regs, size),
        Src::Imm(i) => i & mask(size),
    }
}

/// Replaces the `size` bytes at `addr` by `f(old)`, atomically: returns
/// `old`, or `None` if the value changed underneath every one of
/// [`MAX_RMW_TRIES`] tries (another vCPU writing it all the while).
///
/// The first try guesses 0; a wrong guess costs one failed compare-exchange,
/// which returns the value to use next.
fn update<M: EmulatorMemory>(
    mem: &mut M,
    addr: u64,
    size: usize,
    f: impl Fn(u64) -> u64,
) -> Result<Option<u64>, Exception> {
    let mut old = 0u64;
    for _ in 0..MAX_RMW_TRIES {
        let new = to_bytes(f(old) & mask(size));
        let mut expected = to_bytes(old);
        if mem.cmpxchg(addr, &mut expected[..size], &new[..size])? {
            return Ok(Some(old));
        }
        old = from_bytes(&expected[..size]);
    }
    Ok(None)
}

/// What the access of a `CMPXCHG*` instruction found.
enum Cas {
    /// The operand held the expected value and holds the new one now.
    Swapped,
    /// The operand held these bytes (the first as many as the operand has),
    /// which differ from the expected ones.
    Found([u8; 16]),
    /// Every one of [`MAX_RMW_TRIES`] tries lost a race.
    Contended,
}

/// The access of a `CMPXCHG*` instruction: one compare-exchange, which is
/// also the CPU's write of the old value back when the comparison fails.
///
/// A memory whose compare-exchange works on a wider word may lose a race
/// on the bytes around the operand and report a failure with the expected
/// bytes; that is no failed comparison, so it tries again.
fn cas<M: EmulatorMemory>(
    mem: &mut M,
    addr: u64,
    expected: &[u8],
    new: &[u8],
) -> Result<Cas, Exception> {
    let len = expected.len().min(16);
    for _ in 0..MAX_RMW_TRIES {
        let mut found = [0u8; 16];
        found[..len].copy_from_slice(&expected[..len]);
        if mem.cmpxchg(addr, &mut found[..len], &new[..len])? {
            return Ok(Cas::Swapped);
        }
        if found[..len] != expected[..len] {
            return Ok(Cas::Found(found));
        }
    }
    Ok(Cas::Contended)
}

/// Carries out `form` on `regs` and `mem`.
pub(super) fn run<M: EmulatorMemory>(
    regs: &mut Regs,
    mem: &mut M,
    form: &MemForm,
) -> Result<Progress, Exception> {
    const DONE: Progress = Progress::Done { iterations: 1 };
    const AGAIN: Progress = Progress::Again { iterations: 0 };
    match *form {
        MemForm::Mov { dst, size, src } => {
            let addr = dst.address(regs);
            check_canonical(addr, size)?;
            let v = to_bytes(value(src, regs, size));
            mem.write(addr, &v[..size])?;
            Ok(DONE)
        }
        MemForm::Xchg { dst, size, reg } => {
            let addr = dst.address(regs);
            check_canonical(addr, size)?;
            let new = reg.read(regs, size);
            let Some(old) = update(mem, addr, size, |_| new)? else {
                return Ok(AGAIN);
            };
            reg.write(regs, size, old);
            Ok(DONE)
        }
        MemForm::Cmpxchg { dst, size, reg } => {
            let addr = dst.address(regs);
            check_canonical(addr, size)?;
            let acc = Gpr::RAX.read(regs, size);
            let new = to_bytes(reg.read(regs, size));
            let old = match cas(mem, addr, &to_bytes(acc)[..size], &new[..size])? {
                Cas::Swapped => acc,
                Cas::Found(found) => {
                    let old = from_bytes(&found[..size]);
                    Gpr::RAX.write(regs, size, old);
                    old
                }
                Cas::Contended => return Ok(AGAIN),
            };
            // The flags of CMP accumulator, destination.
            let (_, flags) = alu::sub(acc, old, size);
            regs.rflags = set_arith(regs.rflags, flags);
            Ok(DONE)
        }
        MemForm::Cmpxchg8b { dst } => {
            let addr = dst.address(regs);
            check_canonical(addr, 8)?;
            let pair = |hi: Gpr, lo: Gpr| (hi.read(regs, 4) << 32) | lo.read(regs, 4);
            let expected = pair(Gpr::RDX, Gpr::RAX).to_le_bytes();
            let new = pair(Gpr::RCX, Gpr::RBX).to_le_bytes();
            match cas(mem, addr, &expected, &new)? {
                Cas::Swapped => regs.rflags |= ZF,
                Cas::Found(found) => {
                    // Only ZF changes; EDX:EAX get the old value
                    // (doubleword writes, clearing bits 32-63).
                    regs.rflags &= !ZF;
                    let old = from_bytes(&found[..8]);
                    Gpr::RAX.write(regs, 4, old);
                    Gpr::RDX.write(regs, 4, old >> 32);
                }
                Cas::Contended => return Ok(AGAIN),
            }
            Ok(DONE)
        }
        MemForm::Cmpxchg16b { dst } => {
            let addr = dst.address(regs);
            // #GP for a misaligned operand, with or without LOCK.
            if !addr.is_multiple_of(16) {
                return Err(Exception::GeneralProtection);
            }
            check_canonical(addr, 16)?;
            let pair = |hi: Gpr, lo: Gpr| {
                (u128::from(hi.read(regs, 8)) << 64) | u128::from(lo.read(regs, 8))
            };
            let expected = pair(Gpr::RDX, Gpr::RAX).to_le_bytes();
            let new = pair(Gpr::RCX, Gpr::RBX).to_le_bytes();
            match cas(mem, addr, &expected, &new)? {
                Cas::Swapped => regs.rflags |= ZF,
                Cas::Found(found) => {
                    regs.rflags &= !ZF;
                    Gpr::RAX.write(regs, 8, from_bytes(&found[..8]));
                    Gpr::RDX.write(regs, 8, from_bytes(&found[8..]));
                }
                Cas::Contended => return Ok(AGAIN),
            }
            Ok(DONE)
        }
        MemForm::Alu { op, dst, size, src } => {
            let addr = dst.address(regs);
            check_canonical(addr, size)?;
            let b = value(src, regs, size);
            let Some(old) = update(mem, addr, size, |a| alu::alu(op, a, b, size).0)? else {
                return Ok(AGAIN);
            };
            let (_, flags) = alu::alu(op, old, b, size);
            regs.rflags = set_arith(regs.rflags, flags);
            Ok(DONE)
        }
        MemForm::Bit {
            op,
            dst,
            size,
            offset,
        } => {
            let bits = (size * 8) as u64;
            let (addr, bit) = match offset {
                // An immediate selects a bit of the operand itself.
                BitOffset::Imm(i) => (dst.address(regs), u64::from(i) % bits),
                // A register is a signed bit offset from the operand's
                // address: the CPU accesses the operand-sized word holding
                // the bit, at a multiple of the operand size from it.
                BitOffset::Reg(r) => {
                    let raw = r.read(regs, size);
                    let words = sign_extend(raw, size) >> bits.trailing_zeros();
                    let byte_offset = words.wrapping_mul(size as i64) as u64;
                    (dst.address_plus(regs, byte_offset), raw % bits)
                }
            };
            check_canonical(addr, size)?;
            // bit < 64.
            let bit = bit as u32;
            let Some(old) = update(mem, addr, size, |v| bit_op(op, v, bit))? else {
                return Ok(AGAIN);
            };
            // CF is the bit's old value. OF, SF, AF and PF are undefined in
            // the SDM and ZF is unaffected; the CPU leaves all five as they
            // were (seen on the host; the tests compare with it).
            let cf = (old >> bit) & 1;
            regs.rflags = (regs.rflags & !alu::CF) | cf;
            Ok(DONE)
        }
    }
}
