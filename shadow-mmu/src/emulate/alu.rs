// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Arithmetic, logic and bit operations with the RFLAGS they set (Intel SDM
//! Vol. 1 3.4.3 and the instructions' pages in Vol. 2).

use super::operand::mask;

/// RFLAGS.CF.
pub(super) const CF: u64 = 1 << 0;
/// RFLAGS.PF.
pub(super) const PF: u64 = 1 << 2;
/// RFLAGS.AF.
pub(super) const AF: u64 = 1 << 4;
/// RFLAGS.ZF.
pub(super) const ZF: u64 = 1 << 6;
/// RFLAGS.SF.
pub(super) const SF: u64 = 1 << 7;
/// RFLAGS.DF.
pub(super) const DF: u64 = 1 << 10;
/// RFLAGS.OF.
pub(super) const OF: u64 = 1 << 11;
/// The six arithmetic flags.
pub(super) const ARITH: u64 = CF | PF | AF | ZF | SF | OF;

/// A two-operand arithmetic or logic instruction with a memory destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AluOp {
    /// `ADD`.
    Add,
    /// `OR`.
    Or,
    /// `AND`.
    And,
    /// `SUB`.
    Sub,
    /// `XOR`.
    Xor,
}

/// A bit test-and-modify instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BitOp {
    /// `BTS`: set the bit.
    Set,
    /// `BTR`: clear the bit.
    Reset,
    /// `BTC`: complement the bit.
    Complement,
}

/// The sign bit of a `size`-byte value.
const fn sign_bit(size: usize) -> u64 {
    1u64 << (size * 8 - 1)
}

/// SF, ZF and PF of a `size`-byte result. PF is the even parity of the low
/// byte only, whatever the operand size.
fn szp(result: u64, size: usize) -> u64 {
    let mut f = 0;
    if result & sign_bit(size) != 0 {
        f |= SF;
    }
    if result & mask(size) == 0 {
        f |= ZF;
    }
    if (result as u8).count_ones().is_multiple_of(2) {
        f |= PF;
    }
    f
}

/// `a + b` at `size` bytes and its six arithmetic flags.
fn add(a: u64, b: u64, size: usize) -> (u64, u64) {
    let m = mask(size);
    let (a, b) = (a & m, b & m);
    let r = a.wrapping_add(b) & m;
    let mut f = szp(r, size);
    // Carry out of the top bit: the truncated sum is below an addend.
    if r < a {
        f |= CF;
    }
    // Overflow: both addends have the same sign and the sum the other.
    if (a ^ r) & (b ^ r) & sign_bit(size) != 0 {
        f |= OF;
    }
    // AF: the carry out of bit 3 shows in bit 4 of a ^ b ^ r.
    if (a ^ b ^ r) & 0x10 != 0 {
        f |= AF;
    }
    (r, f)
}

/// `a - b` at `size` bytes and its six arithmetic flags (as `SUB` and `CMP`
/// set them).
pub(super) fn sub(a: u64, b: u64, size: usize) -> (u64, u64) {
    let m = mask(size);
    let (a, b) = (a & m, b & m);
    let r = a.wrapping_sub(b) & m;
    let mut f = szp(r, size);
    // Borrow.
    if a < b {
        f |= CF;
    }
    // Overflow: the operands' signs differ and the result's differs from a's.
    if (a ^ b) & (a ^ r) & sign_bit(size) != 0 {
        f |= OF;
    }
    // AF: the borrow into bit 4.
    if (a ^ b ^ r) & 0x10 != 0 {
        f |= AF;
    }
    (r, f)
}

/// `op` on `a` (the destination) and `b` at `size` bytes: the result and the
/// six arithmetic flags. AND, OR and XOR clear OF and CF; AF is undefined
/// for them in the SDM, and the CPU clears it (found by running them; the
/// tests compare with the host CPU).
pub(super) fn alu(op: AluOp, a: u64, b: u64, size: usize) -> (u64, u64) {
    let logic = |r: u64| (r & mask(size), szp(r, size));
    match op {
        AluOp::Add => add(a, b, size),
        AluOp::Sub => sub(a, b, size),
        AluOp::Or => logic(a | b),
        AluOp::And => logic(a & b),
        AluOp::Xor => logic(a ^ b),
    }
}

/// `op` on bit `bit` of `value`: the new value.
pub(super) fn bit_op(op: BitOp, value: u64, bit: u32) -> u64 {
    let b = 1u64.wrapping_shl(bit);
    match op {
        BitOp::Set => value | b,
        BitOp::Reset => value & !b,
        BitOp::Complement => value ^ b,
    }
}

/// `rflags` with the arithmetic flags replaced by `flags`.
pub(super) const fn set_arith(rflags: u64, flags: u64) -> u64 {
    (rflags & !ARITH) | (flags & ARITH)
}
