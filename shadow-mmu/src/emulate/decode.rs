// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Fetching the instruction at RIP and decoding it into one of the forms
//! the emulator carries out.

use iced_x86::{Code, Decoder, DecoderError, DecoderOptions, Instruction, OpKind, Register};

use super::alu::{AluOp, BitOp};
use super::operand::{Gpr, MemOperand};
use super::{EmulateError, EmulatorMemory, Exception, Regs};

/// The longest x86 instruction.
pub(super) const MAX_LEN: usize = 15;

/// A value operand: a register or an immediate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Src {
    /// A register, read at the operand size.
    Reg(Gpr),
    /// An immediate, already sign-extended to 64 bits where the encoding
    /// says so.
    Imm(u64),
}

/// Where the bit of a `BT*` instruction is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BitOffset {
    /// A register: a signed offset that may address memory outside the
    /// operand.
    Reg(Gpr),
    /// An immediate: taken modulo the operand width.
    Imm(u8),
}

/// A string instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum StringOp {
    /// `STOS`: store the accumulator at RDI.
    Stos,
    /// `MOVS`: copy from RSI to RDI.
    Movs,
}

/// A string instruction and its prefixes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct StringForm {
    /// Which one.
    pub(super) op: StringOp,
    /// The element size in bytes.
    pub(super) size: usize,
    /// A REP (or REPNE) prefix.
    pub(super) rep: bool,
    /// A 0x67 prefix: ESI, EDI and ECX instead of RSI, RDI and RCX.
    pub(super) addr32: bool,
}

/// The emulated forms with one memory operand, and their operands. Sizes
/// are in bytes (1, 2, 4, 8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum MemForm {
    /// `MOV m, r` and `MOV m, imm`.
    Mov {
        dst: MemOperand,
        size: usize,
        src: Src,
    },
    /// `XCHG m, r`.
    Xchg {
        dst: MemOperand,
        size: usize,
        reg: Gpr,
    },
    /// `CMPXCHG m, r`.
    Cmpxchg {
        dst: MemOperand,
        size: usize,
        reg: Gpr,
    },
    /// `CMPXCHG8B m64`.
    Cmpxchg8b { dst: MemOperand },
    /// `CMPXCHG16B m128`.
    Cmpxchg16b { dst: MemOperand },
    /// `ADD`, `OR`, `AND`, `SUB`, `XOR` with a memory destination.
    Alu {
        op: AluOp,
        dst: MemOperand,
        size: usize,
        src: Src,
    },
    /// `BTS`, `BTR`, `BTC` with a memory operand.
    Bit {
        op: BitOp,
        dst: MemOperand,
        size: usize,
        offset: BitOffset,
    },
}

/// An emulated form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Form {
    /// A form with one memory operand.
    Mem(MemForm),
    /// `STOS` and `MOVS`, with or without a repeat prefix.
    String(StringForm),
}

impl Form {
    /// Whether the form may carry a `LOCK` prefix (the decoder already
    /// refuses it elsewhere; this keeps the rule next to the forms).
    fn lockable(&self) -> bool {
        !matches!(self, Form::Mem(MemForm::Mov { .. }) | Form::String(_))
    }
}

/// A decoded instruction.
#[derive(Clone, Copy, Debug)]
pub(super) struct Insn {
    /// Its length.
    pub(super) len: usize,
    /// What it does.
    pub(super) form: Form,
}

/// Decodes `bytes` in 64-bit mode at `rip`.
fn decode_at(bytes: &[u8], rip: u64, options: u32) -> (Instruction, DecoderError) {
    let mut d = Decoder::with_ip(64, bytes, rip, options);
    let insn = d.decode();
    (insn, d.last_error())
}

/// Fetches and decodes the instruction at `regs.rip`.
///
/// Fetches up to 15 bytes; a fetch may stop short of a byte that faults,
/// and that fault matters only if the instruction needs the byte, so the
/// rest is fetched again from that byte when the decoder asks for it, and
/// its fault is the instruction's (see [`needs_more`]).
pub(super) fn fetch_decode<M: EmulatorMemory>(
    regs: &Regs,
    mem: &mut M,
) -> Result<Insn, EmulateError> {
    let mut buf = [0u8; MAX_LEN];
    let mut have = 0;
    // Each round either ends or fetches at least one more byte: at most
    // MAX_LEN + 1 rounds.
    let (insn, error) = loop {
        let (insn, error) = decode_at(&buf[..have], regs.rip, DecoderOptions::NONE);
        if error != DecoderError::NoMoreBytes || have == MAX_LEN {
            break (insn, error);
        }
        let at = regs.rip.wrapping_add(have as u64);
        match mem.fetch(at, &mut buf[have..]) {
            Err(f) if have == 0 || needs_more(&buf[..have], regs.rip) => {
                return Err(EmulateError::Exception(f.into()))
            }
            // The decoder asked for a byte that makes no difference: no
            // continuation is valid, the instruction is #UD whatever
            // follows, as on the CPU.
            Err(_) => {
                return Err(EmulateError::Decode {
                    bytes: buf[..have].to_vec(),
                })
            }
            // The memory says the byte is there but gives none: a broken
            // EmulatorMemory, nothing to tell the guest.
            Ok(0) => {
                return Err(EmulateError::Unsupported {
                    bytes: buf[..have].to_vec(),
                })
            }
            Ok(n) => have += n.min(MAX_LEN - have),
        }
    };
    let fetched = &buf[..have];
    if insn.code() == Code::INVALID {
        // LOCK on a form that does not allow it is #UD whatever the form;
        // the decoder calls it invalid, so look again without its checks.
        if error == DecoderError::InvalidInstruction {
            let (unchecked, e) = decode_at(fetched, regs.rip, DecoderOptions::NO_INVALID_CHECK);
            if e == DecoderError::None
                && unchecked.code() != Code::INVALID
                && unchecked.has_lock_prefix()
            {
                return Err(EmulateError::Exception(Exception::InvalidOpcode));
            }
        }
        return Err(EmulateError::Decode {
            bytes: fetched.to_vec(),
        });
    }
    let len = insn.len();
    let Some(bytes) = fetched.get(..len).filter(|b| !b.is_empty()) else {
        // Not seen from iced; refused rather than trusted.
        return Err(EmulateError::Decode {
            bytes: fetched.to_vec(),
        });
    };
    let Some(form) = form(&insn, bytes) else {
        return Err(EmulateError::Unsupported {
            bytes: bytes.to_vec(),
        });
    };
    if insn.has_lock_prefix() && !form.lockable() {
        return Err(EmulateError::Exception(Exception::InvalidOpcode));
    }
    Ok(Insn { len, form })
}

/// Whether some byte after `fetched` makes a valid instruction of it. The
/// decoder asks for more bytes than the CPU needs for some invalid opcodes
/// (it reads a ModRM byte after `06`, for one), so a fault on the next byte
/// is the instruction's fault only if some continuation decodes. Tries every
/// value of the next byte, zeros after it: 256 decodes, on a fault path.
fn needs_more(fetched: &[u8], rip: u64) -> bool {
    let mut buf = [0u8; MAX_LEN];
    let n = fetched.len().min(MAX_LEN - 1);
    buf[..n].copy_from_slice(&fetched[..n]);
    (0..=u8::MAX).any(|b| {
        buf[n] = b;
        let (insn, _) = decode_at(&buf, rip, DecoderOptions::NONE);
        insn.code() != Code::INVALID
    })
}

/// Whether the prefixes of `bytes` include 0x67 (32-bit addressing). The
/// prefixes are the legacy ones and REX, in any order, before the opcode.
fn has_addr32_prefix(bytes: &[u8]) -> bool {
    for &b in bytes {
        match b {
            0x67 => return true,
            0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 | 0x66 | 0xf0 | 0xf2 | 0xf3 | 0x40..=0x4f => {}
            _ => return false,
        }
    }
    false
}

/// The memory operand of `insn` (operand 0, `OpKind::Memory`), unless it
/// uses FS or GS, whose bases the emulator does not have.
fn mem_operand(insn: &Instruction, addr32: bool) -> Option<MemOperand> {
    if insn.op0_kind() != OpKind::Memory
        || matches!(insn.memory_segment(), Register::FS | Register::GS)
    {
        return None;
    }
    let base = match insn.memory_base() {
        Register::None | Register::RIP | Register::EIP => None,
        r => Some(Gpr::from_iced(r)?),
    };
    let index = match insn.memory_index() {
        Register::None => None,
        r => Some(Gpr::from_iced(r)?),
    };
    Some(MemOperand {
        base,
        index,
        scale: u64::from(insn.memory_index_scale()),
        // For RIP-relative operands the decoder has added the next RIP.
        disp: insn.memory_displacement64(),
        addr32,
    })
}

/// The size in bytes of the memory operand, if 1, 2, 4 or 8.
fn operand_size(insn: &Instruction) -> Option<usize> {
    match insn.memory_size().size() {
        s @ (1 | 2 | 4 | 8) => Some(s),
        _ => None,
    }
}

/// Operand 1 as a register or immediate.
fn src(insn: &Instruction) -> Option<Src> {
    match insn.op1_kind() {
        OpKind::Register => Some(Src::Reg(Gpr::from_iced(insn.op1_register())?)),
        _ => insn.try_immediate(1).ok().map(Src::Imm),
    }
}

/// Operand 1 as a register.
fn src_reg(insn: &Instruction) -> Option<Gpr> {
    match insn.op1_kind() {
        OpKind::Register => Gpr::from_iced(insn.op1_register()),
        _ => None,
    }
}

/// The emulated form of a valid instruction, or `None` for one that is not
/// emulated.
fn form(insn: &Instruction, bytes: &[u8]) -> Option<Form> {
    let addr32 = has_addr32_prefix(bytes);
    match string_form(insn, addr32) {
        Some(s) => Some(Form::String(s)),
        None => mem_form(insn, addr32).map(Form::Mem),
    }
}

/// The string form of `insn`, if it is `STOS` or `MOVS` (`None` also for
/// `MOVS` with an FS or GS source).
fn string_form(insn: &Instruction, addr32: bool) -> Option<StringForm> {
    use Code as C;
    let op = match insn.code() {
        // STOS writes ES:RDI; a segment prefix does not apply to it.
        C::Stosb_m8_AL | C::Stosw_m16_AX | C::Stosd_m32_EAX | C::Stosq_m64_RAX => StringOp::Stos,
        C::Movsb_m8_m8 | C::Movsw_m16_m16 | C::Movsd_m32_m32 | C::Movsq_m64_m64 => {
            // The source is DS:RSI, which FS and GS override.
            if matches!(insn.segment_prefix(), Register::FS | Register::GS) {
                return None;
            }
            StringOp::Movs
        }
        _ => return None,
    };
    Some(StringForm {
        op,
        size: operand_size(insn)?,
        // REPNE repeats STOS and MOVS as REP does (they test no flag), as
        // the CPU shows.
        rep: insn.has_rep_prefix() || insn.has_repne_prefix(),
        addr32,
    })
}

/// The form of `insn` with one memory operand, or `None` for one that is
/// not emulated (including the emulated opcodes with a register
/// destination).
fn mem_form(insn: &Instruction, addr32: bool) -> Option<MemForm> {
    use Code as C;
    let code = insn.code();
    let alu = match code {
        C::Add_rm8_r8 | C::Add_rm16_r16 | C::Add_rm32_r32 | C::Add_rm64_r64 => Some(AluOp::Add),
        C::Add_rm8_imm8 | C::Add_rm16_imm16 | C::Add_rm32_imm32 | C::Add_rm64_imm32 => {
            Some(AluOp::Add)
        }
        C::Add_rm16_imm8 | C::Add_rm32_imm8 | C::Add_rm64_imm8 => Some(AluOp::Add),
        C::Or_rm8_r8 | C::Or_rm16_r16 | C::Or_rm32_r32 | C::Or_rm64_r64 => Some(AluOp::Or),
        C::Or_rm8_imm8 | C::Or_rm16_imm16 | C::Or_rm32_imm32 | C::Or_rm64_imm32 => Some(AluOp::Or),
        C::Or_rm16_imm8 | C::Or_rm32_imm8 | C::Or_rm64_imm8 => Some(AluOp::Or),
        C::And_rm8_r8 | C::And_rm16_r16 | C::And_rm32_r32 | C::And_rm64_r64 => Some(AluOp::And),
        C::And_rm8_imm8 | C::And_rm16_imm16 | C::And_rm32_imm32 | C::And_rm64_imm32 => {
            Some(AluOp::And)
        }
        C::And_rm16_imm8 | C::And_rm32_imm8 | C::And_rm64_imm8 => Some(AluOp::And),
        C::Sub_rm8_r8 | C::Sub_rm16_r16 | C::Sub_rm32_r32 | C::Sub_rm64_r64 => Some(AluOp::Sub),
        C::Sub_rm8_imm8 | C::Sub_rm16_imm16 | C::Sub_rm32_imm32 | C::Sub_rm64_imm32 => {
            Some(AluOp::Sub)
        }
        C::Sub_rm16_imm8 | C::Sub_rm32_imm8 | C::Sub_rm64_imm8 => Some(AluOp::Sub),
        C::Xor_rm8_r8 | C::Xor_rm16_r16 | C::Xor_rm32_r32 | C::Xor_rm64_r64 => Some(AluOp::Xor),
        C::Xor_rm8_imm8 | C::Xor_rm16_imm16 | C::Xor_rm32_imm32 | C::Xor_rm64_imm32 => {
            Some(AluOp::Xor)
        }
        C::Xor_rm16_imm8 | C::Xor_rm32_imm8 | C::Xor_rm64_imm8 => Some(AluOp::Xor),
        _ => None,
    };
    if let Some(op) = alu {
        return Some(MemForm::Alu {
            op,
            dst: mem_operand(insn, addr32)?,
            size: operand_size(insn)?,
            src: src(insn)?,
        });
    }
    let bit = match code {
        C::Bts_rm16_r16 | C::Bts_rm32_r32 | C::Bts_rm64_r64 => Some(BitOp::Set),
        C::Bts_rm16_imm8 | C::Bts_rm32_imm8 | C::Bts_rm64_imm8 => Some(BitOp::Set),
        C::Btr_rm16_r16 | C::Btr_rm32_r32 | C::Btr_rm64_r64 => Some(BitOp::Reset),
        C::Btr_rm16_imm8 | C::Btr_rm32_imm8 | C::Btr_rm64_imm8 => Some(BitOp::Reset),
        C::Btc_rm16_r16 | C::Btc_rm32_r32 | C::Btc_rm64_r64 => Some(BitOp::Complement),
        C::Btc_rm16_imm8 | C::Btc_rm32_imm8 | C::Btc_rm64_imm8 => Some(BitOp::Complement),
        _ => None,
    };
    if let Some(op) = bit {
        let offset = match insn.op1_kind() {
            OpKind::Immediate8 => BitOffset::Imm(insn.immediate8()),
            _ => BitOffset::Reg(src_reg(insn)?),
        };
        return Some(MemForm::Bit {
            op,
            dst: mem_operand(insn, addr32)?,
            size: operand_size(insn)?,
            offset,
        });
    }
    match code {
        C::Mov_rm8_r8 | C::Mov_rm16_r16 | C::Mov_rm32_r32 | C::Mov_rm64_r64 => Some(MemForm::Mov {
            dst: mem_operand(insn, addr32)?,
            size: operand_size(insn)?,
            src: Src::Reg(src_reg(insn)?),
        }),
        C::Mov_rm8_imm8 | C::Mov_rm16_imm16 | C::Mov_rm32_imm32 | C::Mov_rm64_imm32 => {
            Some(MemForm::Mov {
                dst: mem_operand(insn, addr32)?,
                size: operand_size(insn)?,
                src: Src::Imm(insn.try_immediate(1).ok()?),
            })
        }
        C::Xchg_rm8_r8 | C::Xchg_rm16_r16 | C::Xchg_rm32_r32 | C::Xchg_rm64_r64 => {
            Some(MemForm::Xchg {
                dst: mem_operand(insn, addr32)?,
                size: operand_size(insn)?,
                reg: src_reg(insn)?,
            })
        }
        C::Cmpxchg_rm8_r8 | C::Cmpxchg_rm16_r16 | C::Cmpxchg_rm32_r32 | C::Cmpxchg_rm64_r64 => {
            Some(MemForm::Cmpxchg {
                dst: mem_operand(insn, addr32)?,
                size: operand_size(insn)?,
                reg: src_reg(insn)?,
            })
        }
        C::Cmpxchg8b_m64 => Some(MemForm::Cmpxchg8b {
            dst: mem_operand(insn, addr32)?,
        }),
        C::Cmpxchg16b_m128 => Some(MemForm::Cmpxchg16b {
            dst: mem_operand(insn, addr32)?,
        }),
        _ => None,
    }
}
