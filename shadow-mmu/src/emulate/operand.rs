// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Operands: general-purpose registers read and written at an operand size,
//! memory operands and their linear addresses, values as the little-endian
//! bytes guest memory holds.

use iced_x86::Register;

use super::{Exception, Regs};
use crate::Gva;

/// The top bit of a canonical linear address: 48-bit addresses (4-level
/// paging, the only long mode the KVM glue runs).
const LA_TOP_BIT: u32 = 47;

/// A general-purpose register as an operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Gpr {
    /// The encoding number of the 64-bit register holding it.
    num: usize,
    /// AH, CH, DH or BH: bits 8-15 of RAX..RBX (byte operands without REX).
    high: bool,
}

impl Gpr {
    /// RAX, the accumulator (AL, AX, EAX at smaller sizes).
    pub(super) const RAX: Gpr = Gpr::new(super::reg::RAX);
    /// RCX.
    pub(super) const RCX: Gpr = Gpr::new(super::reg::RCX);
    /// RDX.
    pub(super) const RDX: Gpr = Gpr::new(super::reg::RDX);
    /// RBX.
    pub(super) const RBX: Gpr = Gpr::new(super::reg::RBX);
    /// RSI.
    pub(super) const RSI: Gpr = Gpr::new(super::reg::RSI);
    /// RDI.
    pub(super) const RDI: Gpr = Gpr::new(super::reg::RDI);

    /// The low bits of register `num`.
    const fn new(num: usize) -> Gpr {
        Gpr { num, high: false }
    }

    /// The operand a decoded register names, if it is a general-purpose one.
    pub(super) fn from_iced(r: Register) -> Option<Gpr> {
        use Register as R;
        let num = match r.full_register() {
            R::RAX => 0,
            R::RCX => 1,
            R::RDX => 2,
            R::RBX => 3,
            R::RSP => 4,
            R::RBP => 5,
            R::RSI => 6,
            R::RDI => 7,
            R::R8 => 8,
            R::R9 => 9,
            R::R10 => 10,
            R::R11 => 11,
            R::R12 => 12,
            R::R13 => 13,
            R::R14 => 14,
            R::R15 => 15,
            _ => return None,
        };
        let high = matches!(r, R::AH | R::CH | R::DH | R::BH);
        Some(Gpr { num, high })
    }

    /// The register's value at `size` bytes (1, 2, 4 or 8), zero-extended.
    pub(super) fn read(self, regs: &Regs, size: usize) -> u64 {
        let full = regs.gpr[self.num];
        if self.high {
            (full >> 8) & 0xff
        } else {
            full & mask(size)
        }
    }

    /// Writes `value` at `size` bytes as the CPU does in 64-bit mode: byte
    /// and word writes keep the other bits, a doubleword write clears bits
    /// 32-63.
    pub(super) fn write(self, regs: &mut Regs, size: usize, value: u64) {
        let full = &mut regs.gpr[self.num];
        *full = if self.high {
            // AH..BH exist only as byte operands.
            (*full & !0xff00) | ((value & 0xff) << 8)
        } else {
            match size {
                1 | 2 => (*full & !mask(size)) | (value & mask(size)),
                4 => value & mask(4),
                _ => value,
            }
        };
    }
}

/// The low `size` bytes (1, 2, 4, 8) of a `u64` as a mask.
pub(super) const fn mask(size: usize) -> u64 {
    if size >= 8 {
        u64::MAX
    } else {
        (1u64 << (size * 8)) - 1
    }
}

/// `value`'s low `size` bytes, sign-extended to 64 bits.
pub(super) const fn sign_extend(value: u64, size: usize) -> i64 {
    if size >= 8 {
        value as i64
    } else {
        let shift = 64 - size * 8;
        ((value << shift) as i64) >> shift
    }
}

/// A memory operand in ModRM/SIB form: `base + index * scale + disp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct MemOperand {
    /// The base register (none for RIP-relative and absolute forms).
    pub(super) base: Option<Gpr>,
    /// The index register.
    pub(super) index: Option<Gpr>,
    /// The index's scale (1, 2, 4, 8).
    pub(super) scale: u64,
    /// The displacement, sign-extended; for RIP-relative forms the decoder
    /// has already added the address of the next instruction.
    pub(super) disp: u64,
    /// A 0x67 prefix: the address is computed in 32 bits.
    pub(super) addr32: bool,
}

impl MemOperand {
    /// The operand's linear address (segment bases are zero in 64-bit mode
    /// except FS and GS, which the decoder refuses).
    pub(super) fn address(&self, regs: &Regs) -> u64 {
        self.address_plus(regs, 0)
    }

    /// The linear address of the operand moved by `extra` bytes, wrapped at
    /// the address size as a part of the effective address (`BT*` with a
    /// register bit offset addresses memory this way).
    pub(super) fn address_plus(&self, regs: &Regs, extra: u64) -> u64 {
        // The sum wraps: the CPU computes it modulo the address size.
        let mut a = self.disp.wrapping_add(extra);
        if let Some(b) = self.base {
            a = a.wrapping_add(b.read(regs, 8));
        }
        if let Some(i) = self.index {
            a = a.wrapping_add(i.read(regs, 8).wrapping_mul(self.scale));
        }
        if self.addr32 {
            a & mask(4)
        } else {
            a
        }
    }
}

/// #GP(0) unless every byte of the `size`-byte access at `addr` is
/// canonical. An access that would wrap past the top of the address space is
/// refused too, so that the VMM only ever sees contiguous accesses.
pub(super) fn check_canonical(addr: u64, size: usize) -> Result<(), Exception> {
    let Some(last) = addr.checked_add(size.saturating_sub(1) as u64) else {
        return Err(Exception::GeneralProtection);
    };
    if Gva(addr).is_canonical(LA_TOP_BIT) && Gva(last).is_canonical(LA_TOP_BIT) {
        Ok(())
    } else {
        Err(Exception::GeneralProtection)
    }
}

/// `value` as the `size` little-endian bytes memory holds (the first `size`
/// of the array).
pub(super) fn to_bytes(value: u64) -> [u8; 8] {
    value.to_le_bytes()
}

/// The little-endian value of up to 8 bytes.
pub(super) fn from_bytes(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = bytes.len().min(8);
    b[..n].copy_from_slice(&bytes[..n]);
    u64::from_le_bytes(b)
}
