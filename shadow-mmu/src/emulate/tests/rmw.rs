// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `MOV`, `XCHG`, `CMPXCHG*`, the ALU forms and `BT*` against the host CPU.

use std::cell::UnsafeCell;

use super::super::operand::mask;
use super::super::reg::{RAX, RCX, RDI, RDX, RSI};
use super::{check, check_flags, compare, junk_gprs, native, pattern, LowBuffer, Native};

const R9: usize = 9;
const R11: usize = 11;

/// Junk for the register bits above a `size`-byte operand, which the CPU
/// ignores.
fn junk_above(size: usize) -> u64 {
    0xdead_beef_cafe_f00d & !mask(size)
}

/// A 32-byte buffer with `value`'s `size` bytes at offset 8.
fn mem_with(value: u64, size: usize) -> Vec<u8> {
    let mut m = pattern(32, value ^ 0x77);
    m[8..8 + size].copy_from_slice(&value.to_le_bytes()[..size]);
    m
}

/// Operand pairs (destination, source) at `size` bytes hitting the flag
/// edges: zero results, carries and borrows, signed overflow both ways, sign
/// changes, AF, both parities.
fn edges(size: usize) -> Vec<(u64, u64)> {
    let m = mask(size);
    let sign = 1u64 << (size * 8 - 1);
    let max = sign - 1;
    let mut v = vec![
        (0, 0),
        (1, m),       // add: zero, carry
        (max, 1),     // add: overflow to negative
        (sign, sign), // add: zero, carry, overflow
        (1, 2),       // sub: borrow, negative
        (sign, 1),    // sub: overflow to positive
        (0, sign),    // sub: borrow and overflow
        (0x0f, 1),    // add: AF
        (0x10, 1),    // sub: AF
        (3, 0),       // parity even (PF set)
        (7, 0),       // parity odd
        (0x5555_5555_5555_5555 & m, 0xaaaa_aaaa_aaaa_aaaa & m),
        (0x1234_5678_9abc_def0 & m, 0x1234_5678_9abc_def0 & m), // sub, xor: zero
        (m, m),
        (0x8000_0000_0000_0100 & m, 0xff), // PF looks at the low byte only
    ];
    let p = pattern(64, size as u64);
    for c in p.chunks(16) {
        let a = u64::from_le_bytes(c[..8].try_into().unwrap_or_default());
        let b = u64::from_le_bytes(c[8..].try_into().unwrap_or_default());
        v.push((a & m, b & m));
    }
    v
}

/// The register-source forms of `op` at each size, source in RDX.
macro_rules! reg_forms {
    ($prefix:literal, $op:literal) => {
        [
            (native!(concat!($prefix, $op, " byte ptr [rdi], dl")), 1),
            (native!(concat!($prefix, $op, " word ptr [rdi], dx")), 2),
            (native!(concat!($prefix, $op, " dword ptr [rdi], edx")), 4),
            (native!(concat!($prefix, $op, " qword ptr [rdi], rdx")), 8),
        ]
    };
}

/// The immediate forms of `op`: 80 ib, 83 ib (sign-extended imm8), 81 iw,
/// 81 id, REX.W 81 id (sign-extended imm32).
macro_rules! imm_forms {
    ($prefix:literal, $op:literal) => {
        [
            (native!(concat!($prefix, $op, " byte ptr [rdi], 0x80")), 1),
            (native!(concat!($prefix, $op, " byte ptr [rdi], 1")), 1),
            (native!(concat!($prefix, $op, " word ptr [rdi], -1")), 2),
            (native!(concat!($prefix, $op, " word ptr [rdi], 0x7fff")), 2),
            (native!(concat!($prefix, $op, " dword ptr [rdi], 0x7f")), 4),
            (native!(concat!($prefix, $op, " dword ptr [rdi], -0x80")), 4),
            (
                native!(concat!($prefix, $op, " dword ptr [rdi], 0x80000000")),
                4,
            ),
            (native!(concat!($prefix, $op, " qword ptr [rdi], -1")), 8),
            (
                native!(concat!($prefix, $op, " qword ptr [rdi], -0x80000000")),
                8,
            ),
            (
                native!(concat!($prefix, $op, " qword ptr [rdi], 0x7fffffff")),
                8,
            ),
        ]
    };
}

/// The opcode byte of `code` (after legacy prefixes and REX).
fn opcode(code: &[u8]) -> u8 {
    code.iter()
        .copied()
        .find(|b| !matches!(b, 0x66 | 0x67 | 0xf0 | 0xf2 | 0xf3 | 0x40..=0x4f))
        .unwrap_or(0)
}

/// Every register form on every edge pair, every immediate form on every
/// edge destination, flags clear and set.
fn alu(reg: [(Native, usize); 4], imm: [(Native, usize); 10]) {
    for (run, size) in reg {
        for (a, b) in edges(size) {
            check_flags(run, &mem_with(a, size), |base, g| {
                g[RDI] = base + 8;
                g[RDX] = b | junk_above(size);
            });
        }
    }
    let mut opcodes = Vec::new();
    for (run, size) in imm {
        for (a, _) in edges(size) {
            let run = check(run, &mem_with(a, size), 0, |base, g| g[RDI] = base + 8);
            check(run.native, &mem_with(a, size), u64::MAX, |base, g| {
                g[RDI] = base + 8
            });
            opcodes.push(opcode(run.code));
        }
    }
    // The assembler picked each immediate encoding at least once.
    for op in [0x80, 0x81, 0x83] {
        assert!(opcodes.contains(&op), "no {op:#x} form");
    }
}

#[test]
fn add() {
    alu(reg_forms!("", "add"), imm_forms!("", "add"));
    alu(reg_forms!("lock ", "add"), imm_forms!("lock ", "add"));
}

#[test]
fn sub() {
    alu(reg_forms!("", "sub"), imm_forms!("", "sub"));
    alu(reg_forms!("lock ", "sub"), imm_forms!("lock ", "sub"));
}

/// AF is undefined for AND, OR and XOR in the SDM: compared with the host.
#[test]
fn and() {
    alu(reg_forms!("", "and"), imm_forms!("", "and"));
    alu(reg_forms!("lock ", "and"), imm_forms!("lock ", "and"));
}

/// AF is undefined: compared with the host.
#[test]
fn or() {
    alu(reg_forms!("", "or"), imm_forms!("", "or"));
    alu(reg_forms!("lock ", "or"), imm_forms!("lock ", "or"));
}

/// AF is undefined: compared with the host.
#[test]
fn xor() {
    alu(reg_forms!("", "xor"), imm_forms!("", "xor"));
    alu(reg_forms!("lock ", "xor"), imm_forms!("lock ", "xor"));
}

#[test]
fn mov_register() {
    let forms: [(Native, u64); 13] = [
        (native!("mov byte ptr [rdi], al"), 0),
        // ES, CS, SS, DS overrides do nothing in 64-bit mode.
        (native!(".byte 0x26", "mov dword ptr [rdi], eax"), 0),
        (
            native!(".byte 0x2e, 0x36, 0x3e", "mov qword ptr [rdi + rcx], rax"),
            0,
        ),
        // 15 bytes, the longest an instruction may be.
        (
            native!(
                ".byte 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e, 0x2e",
                "lock add qword ptr [rdi], 0x12345678"
            ),
            0,
        ),
        (native!("mov byte ptr [rdi], ah"), 0),
        (native!("mov byte ptr [rdi], sil"), 0),
        (native!("mov byte ptr [rdi + rcx], r8b"), 0),
        (native!("mov word ptr [rdi + 2], ax"), 0),
        (native!("mov word ptr [rdi + rcx * 2 - 2], r9w"), 0),
        (native!("mov dword ptr [rdi - 4 + rcx * 4], r9d"), 0),
        (native!("mov qword ptr [rdi + rdx * 8 + 0x40], rax"), 0),
        (native!("mov qword ptr [rdi], r11"), 0),
        (native!("mov qword ptr [rcx * 8 + rdi], rsi"), 0),
    ];
    for (run, _) in forms {
        check_flags(run, &pattern(256, 1), |base, g| {
            g[RDI] = base + 64;
            g[RCX] = 3;
            g[RDX] = 2;
            g[RAX] = 0x1122_3344_5566_7788;
            g[RSI] = 0x8877_6655_4433_2211;
        });
    }
}

#[test]
fn mov_immediate() {
    let forms: [Native; 8] = [
        native!("mov byte ptr [rdi], 0x9c"),
        native!("mov word ptr [rdi + 1], 0x8001"),
        native!("mov dword ptr [rdi + 3], 0x89abcdef"),
        native!("mov dword ptr [rdi + rcx * 4], 5"),
        // C7 /0 with REX.W: the imm32 sign-extended, both signs.
        native!("mov qword ptr [rdi], -0x12345678"),
        native!("mov qword ptr [rdi + 8], 0x7edcba98"),
        native!("mov qword ptr [rdi + 0x1000], -1"),
        native!("mov qword ptr [rdi - 0x800], 0"),
    ];
    for run in forms {
        check_flags(run, &pattern(0x2000, 2), |base, g| {
            g[RDI] = base + 0x800;
            g[RCX] = 7;
        });
    }
}

/// A buffer the RIP-relative tests address through a symbol.
#[repr(C, align(64))]
struct Static(UnsafeCell<[u8; 64]>);
// SAFETY: only `rip_relative` touches it.
unsafe impl Sync for Static {}
static RIP_TARGET: Static = Static(UnsafeCell::new([0x5a; 64]));

#[test]
fn rip_relative() {
    let forms: [Native; 3] = [
        native!("mov dword ptr [rip + {s} + 16], eax"; s = sym RIP_TARGET),
        native!("lock add qword ptr [rip + {s} + 8], 0x55"; s = sym RIP_TARGET),
        native!("mov byte ptr [rip + {s} + 63], 0x11"; s = sym RIP_TARGET),
    ];
    for run in forms {
        let at = RIP_TARGET.0.get() as u64;
        // SAFETY: no other code uses RIP_TARGET, and this test runs its
        // cases one after the other.
        let buf = unsafe { &mut *RIP_TARGET.0.get() };
        let mut gpr = junk_gprs();
        gpr[RAX] = 0xfeed_f00d;
        compare(run, gpr, 0, buf, at);
    }
}

/// 0x67: 32-bit effective addresses, wrapping at 4 GiB, bits 32-63 of the
/// registers ignored.
#[test]
fn address_size_override() {
    let forms: [Native; 5] = [
        native!("mov dword ptr [edi], eax"),
        native!("mov qword ptr [edi + esi], rax"),
        native!("lock add dword ptr [edi + esi * 2 + 0x10], eax"),
        native!("bts dword ptr [edi], eax"),
        native!("cmpxchg qword ptr [edi + 8], rdx"),
    ];
    for run in forms {
        let mut low = LowBuffer::new(0x2000, &pattern(0x2000, 3));
        let at = low.addr();
        let mut gpr = junk_gprs();
        // EDI + ESI (or ESI * 2) wraps past 4 GiB back into the buffer.
        gpr[RDI] = 0xabcd_0000_0000_0000 | ((at + 0x1100 + 0x1_0000_0000 - 0x200) & mask(4));
        gpr[RSI] = 0x1234_5678_0000_0100;
        gpr[RAX] = 0xffff_ffff_ffff_fe00; // BT offset -512: 64 bytes below
        gpr[RDX] = 0x0102_0304_0506_0708;
        let buf = low.bytes_mut();
        compare(run, gpr, 0, buf, at);
        // And without the wrap.
        gpr[RSI] = 0x1234_5678_0000_0000;
        gpr[RDI] = 0xabcd_0000_0000_0000 | (at + 0x1000);
        compare(run, gpr, u64::MAX, low.bytes_mut(), at);
    }
}

#[test]
fn xchg() {
    let forms: [(Native, usize); 8] = [
        (native!("xchg byte ptr [rdi], dl"), 1),
        (native!("xchg byte ptr [rdi], ah"), 1),
        (native!("xchg word ptr [rdi], dx"), 2),
        (native!("xchg dword ptr [rdi], edx"), 4),
        (native!("xchg qword ptr [rdi], rdx"), 8),
        (native!("xchg qword ptr [rdi], r9"), 8),
        (native!("lock xchg dword ptr [rdi], r11d"), 4),
        (native!("lock xchg word ptr [rdi + rcx], dx"), 2),
    ];
    for (run, size) in forms {
        for (a, b) in edges(size).into_iter().take(6) {
            check_flags(run, &mem_with(a, size), |base, g| {
                g[RDI] = base + 8;
                g[RCX] = 0;
                g[RDX] = b | junk_above(size);
                g[RAX] = 0x1111_2222_3333_4444;
                g[R9] = b ^ 0x0f0f;
                g[R11] = b | 0x8000_0000_0000_0000;
            });
        }
    }
}

#[test]
fn cmpxchg() {
    let forms: [(Native, usize); 8] = [
        (native!("cmpxchg byte ptr [rdi], dl"), 1),
        (native!("cmpxchg word ptr [rdi], dx"), 2),
        (native!("cmpxchg dword ptr [rdi], edx"), 4),
        (native!("cmpxchg qword ptr [rdi], rdx"), 8),
        (native!("lock cmpxchg byte ptr [rdi], dl"), 1),
        (native!("lock cmpxchg word ptr [rdi], dx"), 2),
        (native!("lock cmpxchg dword ptr [rdi], edx"), 4),
        (native!("lock cmpxchg qword ptr [rdi], rdx"), 8),
    ];
    for (run, size) in forms {
        let m = mask(size);
        let sign = 1u64 << (size * 8 - 1);
        // (memory, accumulator): equal (success), and unequal both ways,
        // with signed overflow, and a zero destination.
        let cases = [
            (0x42, 0x42),
            (m, m),
            (0, 0),
            (5, 6),
            (6, 5),
            (sign, 1),
            (1, sign),
            (0, m),
            (0x1234_5678_9abc_def0 & m, 0x1234_5678_9abc_def1 & m),
        ];
        for (mem, acc) in cases {
            check_flags(run, &mem_with(mem, size), |base, g| {
                g[RDI] = base + 8;
                // Bits above the operand: kept on success, and cleared on
                // failure at 32 bits (a doubleword write of EAX).
                g[RAX] = acc | junk_above(size);
                g[RDX] = 0x7777_6666_5555_4444 ^ mem;
            });
        }
    }
}

#[test]
fn cmpxchg8b() {
    let forms: [Native; 2] = [
        native!("cmpxchg8b qword ptr [rdi]"),
        native!("lock cmpxchg8b qword ptr [rdi + 8]"),
    ];
    for run in forms {
        for (mem, edx_eax) in [
            (0x1111_2222_3333_4444u64, 0x1111_2222_3333_4444u64),
            (0x1111_2222_3333_4444, 0x1111_2222_3333_4445),
            (0x1111_2222_3333_4444, 0x1111_2223_3333_4444),
            (0, 0),
        ] {
            let mut m = pattern(32, 4);
            m[..8].copy_from_slice(&mem.to_le_bytes());
            m[8..16].copy_from_slice(&mem.to_le_bytes());
            check_flags(run, &m, |base, g| {
                g[RDI] = base;
                g[RAX] = 0xaaaa_0000_0000_0000 | (edx_eax & mask(4));
                g[RDX] = 0xbbbb_0000_0000_0000 | (edx_eax >> 32);
                g[RCX] = 0xcccc_cccc_9999_8888;
                g[super::super::reg::RBX] = 0xdddd_dddd_7777_6666;
            });
        }
    }
}

#[test]
fn cmpxchg16b() {
    let forms: [Native; 2] = [
        native!("cmpxchg16b xmmword ptr [rdi]"),
        native!("lock cmpxchg16b xmmword ptr [rdi + 16]"),
    ];
    for run in forms {
        let lo = 0x0123_4567_89ab_cdefu64;
        let hi = 0xfedc_ba98_7654_3210u64;
        for (rax, rdx) in [(lo, hi), (lo + 1, hi), (lo, hi - 1), (0, 0)] {
            let mut m = pattern(64, 5);
            for at in [0, 16] {
                m[at..at + 8].copy_from_slice(&lo.to_le_bytes());
                m[at + 8..at + 16].copy_from_slice(&hi.to_le_bytes());
            }
            check_flags(run, &m, |base, g| {
                g[RDI] = base;
                g[RAX] = rax;
                g[RDX] = rdx;
                g[RCX] = 0x1111_2222_3333_4444;
                g[super::super::reg::RBX] = 0x5555_6666_7777_8888;
            });
        }
    }
}

/// `BT*` with a register offset: in range, past the operand and below it
/// (the offset is signed and addresses memory outside the operand), with
/// junk above a 16- or 32-bit offset. The SDM leaves OF, SF, AF and PF
/// undefined: compared with the host.
#[test]
fn bit_register_offset() {
    let forms: [(Native, usize); 18] = [
        (native!("bts word ptr [rdi], dx"), 2),
        (native!("bts dword ptr [rdi], edx"), 4),
        (native!("bts qword ptr [rdi], rdx"), 8),
        (native!("btr word ptr [rdi], dx"), 2),
        (native!("btr dword ptr [rdi], edx"), 4),
        (native!("btr qword ptr [rdi], rdx"), 8),
        (native!("btc word ptr [rdi], dx"), 2),
        (native!("btc dword ptr [rdi], edx"), 4),
        (native!("btc qword ptr [rdi], rdx"), 8),
        (native!("lock bts word ptr [rdi], dx"), 2),
        (native!("lock bts dword ptr [rdi], edx"), 4),
        (native!("lock bts qword ptr [rdi], rdx"), 8),
        (native!("lock btr word ptr [rdi], dx"), 2),
        (native!("lock btr dword ptr [rdi], edx"), 4),
        (native!("lock btr qword ptr [rdi], rdx"), 8),
        (native!("lock btc word ptr [rdi], dx"), 2),
        (native!("lock btc dword ptr [rdi], edx"), 4),
        (native!("lock btc qword ptr [rdi], rdx"), 8),
    ];
    for (run, size) in forms {
        let bits = size as i64 * 8;
        for off in [
            0,
            5,
            bits - 1,
            bits,
            bits + 3,
            1000,
            3999,
            -1,
            -8,
            -bits,
            -bits - 1,
            -100,
            -1000,
            -4000,
        ] {
            for init in [0x00, 0xff, 0x5a] {
                check_flags(run, &vec![init; 1024], |base, g| {
                    g[RDI] = base + 512;
                    g[RDX] = (off as u64 & mask(size)) | junk_above(size);
                });
            }
        }
    }
}

#[test]
fn bit_immediate() {
    let forms: [Native; 12] = [
        native!("bts word ptr [rdi], 3"),
        native!("bts word ptr [rdi], 17"),
        native!("bts dword ptr [rdi], 35"),
        native!("bts qword ptr [rdi], 200"),
        native!("btr word ptr [rdi], 15"),
        native!("btr dword ptr [rdi], 31"),
        native!("lock btr qword ptr [rdi], 63"),
        native!("btc qword ptr [rdi], 0"),
        native!("lock btc dword ptr [rdi], 0xff"),
        native!("lock bts qword ptr [rdi], 64"),
        native!("lock btc word ptr [rdi + rcx * 2], 9"),
        native!("lock btr dword ptr [rdi - 4], 1"),
    ];
    for run in forms {
        for init in [0x00, 0xff, 0xa5] {
            check_flags(run, &[init; 64], |base, g| {
                g[RDI] = base + 32;
                g[RCX] = 3;
            });
        }
    }
}
