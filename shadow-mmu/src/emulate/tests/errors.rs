// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Errors, faults and contention, against the SDM's rules (the host cannot
//! show these without taking the exception itself). Every error must leave
//! the registers as they were ([`expect_error`]).

use super::super::alu::ZF;
use super::super::reg::{RAX, RBX, RCX, RDI, RDX, RSI};
use super::super::{emulate, EmulateError, Emulated, Exception, MemFault, Regs, MAX_RMW_TRIES};
use super::{expect_error, junk_gprs, pf, Mock};
use crate::{Gva, PfErrorCode};

/// Where the tests put instructions.
const CODE: u64 = 0x40_1000;
/// Where the tests put data.
const DATA: u64 = 0x7f00_0000_0000;

/// Registers with RDI and RSI in the data, RIP on the code.
fn regs() -> Regs {
    let mut gpr = junk_gprs();
    gpr[RDI] = DATA + 0x100;
    gpr[RSI] = DATA + 0x200;
    gpr[RCX] = 4;
    Regs {
        gpr,
        rip: CODE,
        rflags: 0x202,
    }
}

/// A mock with 4 KiB of data at [`DATA`].
fn mock() -> Mock {
    Mock::new(CODE, &[], DATA, &[0x11; 0x1000])
}

/// The mock faults on the byte after each: the decoder asks for more after
/// some invalid opcodes (a ModRM after `06`), but no continuation would
/// make them valid, so the fault is not the instruction's.
#[test]
fn undecodable_bytes() {
    for code in [
        &[0x06][..],                     // PUSH ES: invalid in 64-bit mode
        &[0x0f, 0x04],                   // no such opcode
        &[0x0f, 0xc7, 0xcf],             // CMPXCHG8B with a register operand
        &[0x66; 15][..],                 // prefixes only
        &[0xc4, 0xe2, 0x79, 0x18, 0x07], // VEX: not decoded at all here
    ] {
        let mut m = mock();
        let fetched = code[..code.len().min(15)].to_vec();
        expect_error(
            code,
            regs(),
            &mut m,
            EmulateError::Decode { bytes: fetched },
        );
        assert_eq!(m.accesses, 0);
    }
}

#[test]
fn unsupported_instructions() {
    for code in [
        &[0x48, 0x01, 0xd8][..],               // add rax, rbx: no memory operand
        &[0x48, 0x87, 0xd8],                   // xchg rax, rbx
        &[0x48, 0x0f, 0xab, 0xd0],             // bts rax, rdx
        &[0x0f, 0x29, 0x07],                   // movaps [rdi], xmm0
        &[0x48, 0x8b, 0x07],                   // mov rax, [rdi]: a load
        &[0x48, 0x03, 0x07],                   // add rax, [rdi]: memory is the source
        &[0xff, 0x07],                         // inc dword [rdi]
        &[0x0f, 0x0b],                         // ud2
        &[0x64, 0x89, 0x07],                   // mov fs:[rdi], eax: no FS base
        &[0x65, 0xf0, 0x48, 0x0f, 0xb1, 0x17], // lock cmpxchg gs:[rdi], rdx
        &[0x65, 0xf3, 0xa4],                   // rep movsb from GS:RSI
        &[0x48, 0xa3, 0, 0x10, 0, 0, 0, 0x7f, 0, 0], // mov moffs64, rax
    ] {
        let mut m = mock();
        expect_error(
            code,
            regs(),
            &mut m,
            EmulateError::Unsupported {
                bytes: code.to_vec(),
            },
        );
        assert_eq!(m.accesses, 0, "{code:02x?}");
    }
}

/// LOCK on a form that does not allow it is #UD (SDM Vol. 2, "LOCK").
#[test]
fn lock_where_not_allowed() {
    for code in [
        &[0xf0, 0x48, 0x89, 0x07][..],   // lock mov [rdi], rax
        &[0xf0, 0xc7, 0x07, 1, 0, 0, 0], // lock mov dword [rdi], 1
        &[0xf0, 0xaa],                   // lock stosb
        &[0xf0, 0xf3, 0xa4],             // lock rep movsb
        &[0xf0, 0x48, 0x01, 0xd8],       // lock add rax, rbx
        &[0xf0, 0x48, 0x0f, 0xab, 0xd0], // lock bts rax, rdx
        &[0xf0, 0x48, 0x8b, 0x07],       // lock mov rax, [rdi]
    ] {
        let mut m = mock();
        expect_error(
            code,
            regs(),
            &mut m,
            EmulateError::Exception(Exception::InvalidOpcode),
        );
        assert_eq!(m.accesses, 0, "{code:02x?}");
    }
}

/// A byte the instruction needs faults: that #PF. Bytes it does not need
/// may fault.
#[test]
fn fetch_faults() {
    let fetch_pf = |cr2: u64| {
        EmulateError::Exception(Exception::PageFault {
            error_code: PfErrorCode::U | PfErrorCode::ID,
            cr2: Gva(cr2),
        })
    };
    // The mock has exactly these bytes; the next one faults.
    for (code, at) in [
        (&[0x48, 0x89][..], 2),             // needs ModRM
        (&[0x0f, 0xc7][..], 2),             // 0f c7 /1 is CMPXCHG8B
        (&[0x48][..], 1),                   // needs an opcode
        (&[0x48, 0xc7, 0x87, 0, 1][..], 5), // needs disp32 and imm32
        (&[][..], 0),                       // nothing at RIP
    ] {
        let mut m = mock();
        expect_error(code, regs(), &mut m, fetch_pf(CODE + at));
        assert_eq!(m.accesses, 0);
    }
    // RIP itself unmapped.
    let mut m = mock();
    m.code = vec![0x89, 0x07];
    let mut r = regs();
    r.rip = 0x1234_5000;
    let before = r;
    assert_eq!(emulate(&mut r, &mut m, 0), Err(fetch_pf(0x1234_5000)));
    assert_eq!(r, before);
    // The instruction ends right before the fault: it runs.
    let mut m = mock();
    m.code = vec![0x89, 0x07];
    let mut r = regs();
    r.gpr[RAX] = 0x4433_2211;
    let done = emulate(&mut r, &mut m, 0).expect("complete instruction");
    assert_eq!(
        done,
        Emulated {
            len: 2,
            iterations: 1,
            rep_pending: false
        }
    );
    assert_eq!(r.rip, CODE + 2);
    assert_eq!(&m.data[0x100..0x104], &[0x11, 0x22, 0x33, 0x44]);
}

/// A non-canonical operand, or one running past the canonical boundary, is
/// #GP before any access (SDM Vol. 3 6.15, "#GP: a memory address in
/// non-canonical form").
#[test]
fn non_canonical() {
    let gp = EmulateError::Exception(Exception::GeneralProtection);
    let cases: [(&[u8], usize, u64); 9] = [
        (&[0x89, 0x07], RDI, 0x0000_8000_0000_0000), // mov [rdi], eax
        (&[0x89, 0x07], RDI, 0x7fff_ffff_fffd),      // its last byte
        (&[0x48, 0x89, 0x07], RDI, 0xfff0_0000_0000_0000), // mov [rdi], rax
        (&[0xf0, 0x48, 0x01, 0x07], RDI, 0x7fff_ffff_fff9), // lock add [rdi], rax
        (&[0x48, 0x87, 0x07], RDI, 0x8000_0000_0000_0000), // xchg [rdi], rax
        (&[0xaa], RDI, 0x0001_0000_0000_0000),       // stosb
        (&[0xf3, 0xa4], RSI, 0x0001_0000_0000_0000), // rep movsb: source
        (&[0x48, 0x0f, 0xc7, 0x0f], RDI, 0x8000_0000_0000), // cmpxchg16b
        (&[0x48, 0x89, 0x07], RDI, u64::MAX - 3),    // wraps past 2^64
    ];
    for (code, reg, value) in cases {
        let mut m = mock();
        let mut r = regs();
        r.gpr[reg] = value;
        expect_error(code, r, &mut m, gp.clone());
        assert_eq!(m.accesses, 0, "{code:02x?}");
    }
    // BTS with a register offset of -2^63 bits: 2^60 bytes below RDI.
    let mut m = mock();
    let mut r = regs();
    r.gpr[RDX] = 1 << 63;
    expect_error(&[0x48, 0x0f, 0xab, 0x17], r, &mut m, gp.clone());
    assert_eq!(m.accesses, 0);
}

/// A store the memory refuses: the memory's #PF (error code and CR2 as it
/// gave them) or MMIO exit, for each kind of access.
#[test]
fn store_faults() {
    let codes: [&[u8]; 8] = [
        &[0x89, 0x07],                   // mov [rdi], eax
        &[0xc6, 0x07, 0x5a],             // mov byte [rdi], 0x5a
        &[0xf0, 0x48, 0x01, 0x17],       // lock add [rdi], rdx
        &[0x48, 0x87, 0x17],             // xchg [rdi], rdx
        &[0x48, 0x0f, 0xb1, 0x17],       // cmpxchg [rdi], rdx
        &[0x0f, 0xc7, 0x0f],             // cmpxchg8b [rdi]
        &[0xf0, 0x0f, 0xba, 0x2f, 0x07], // lock bts dword [rdi], 7
        &[0xf3, 0x48, 0xab],             // rep stosq
    ];
    let faults = [
        MemFault::PageFault {
            error_code: PfErrorCode::P | PfErrorCode::W | PfErrorCode::U,
            cr2: Gva(0x1234_5678),
        },
        MemFault::Mmio { gva: Gva(DATA) },
        MemFault::GeneralProtection,
    ];
    for code in codes {
        for f in faults {
            let mut m = mock();
            m.store_fault = Some(f);
            expect_error(code, regs(), &mut m, EmulateError::Exception(f.into()));
            assert!(
                m.data.iter().all(|&b| b == 0x11),
                "{code:02x?}: memory changed"
            );
        }
    }
    // MOVS: the source read faults first.
    let mut m = mock();
    let mut r = regs();
    r.gpr[RSI] = DATA + 0x2000;
    expect_error(
        &[0x48, 0xa5],
        r,
        &mut m,
        EmulateError::Exception(pf(false, DATA + 0x2000).into()),
    );
    // An access running off the end of the data: CR2 is its first missing
    // byte, as the mock reports it.
    let mut m = mock();
    let mut r = regs();
    r.gpr[RDI] = DATA + 0xffc;
    expect_error(
        &[0x48, 0x89, 0x07],
        r,
        &mut m,
        EmulateError::Exception(pf(true, DATA + 0x1000).into()),
    );
}

/// CMPXCHG16B needs a 16-byte aligned operand, with or without LOCK (SDM
/// Vol. 2, "CMPXCHG8B/CMPXCHG16B": #GP(0) if not aligned).
#[test]
fn cmpxchg16b_alignment() {
    for code in [
        &[0x48, 0x0f, 0xc7, 0x0f][..],
        &[0xf0, 0x48, 0x0f, 0xc7, 0x0f],
    ] {
        for off in [8, 4, 1, 15] {
            let mut m = mock();
            let mut r = regs();
            r.gpr[RDI] = DATA + 0x100 + off;
            expect_error(
                code,
                r,
                &mut m,
                EmulateError::Exception(Exception::GeneralProtection),
            );
            assert_eq!(m.accesses, 0);
        }
    }
}

/// Another CPU changes the word on every try: after MAX_RMW_TRIES the
/// instruction is handed back unexecuted (RIP on it, registers as they
/// were); changing it a few times only delays it, and the result is that
/// of the instruction on the last value.
#[test]
fn contended_read_modify_write() {
    // lock add dword [rdi], edx; xchg [rdi], rdx; lock btc qword [rdi], 0
    let codes: [&[u8]; 3] = [
        &[0xf0, 0x01, 0x17],
        &[0x48, 0x87, 0x17],
        &[0xf0, 0x48, 0x0f, 0xba, 0x3f, 0x00],
    ];
    for code in codes {
        let mut m = mock();
        m.code = code.to_vec();
        m.racer = u32::MAX;
        let mut r = regs();
        r.gpr[RDX] = 5;
        let before = r;
        let done = emulate(&mut r, &mut m, 0).expect("contended");
        assert_eq!(
            done,
            Emulated {
                len: code.len(),
                iterations: 0,
                rep_pending: true
            }
        );
        assert_eq!(r, before);
        assert_eq!(m.accesses, MAX_RMW_TRIES as usize);
    }
    // Three changes underneath: 0x11 + 3, then + 5.
    let mut m = mock();
    m.code = codes[0].to_vec();
    m.racer = 3;
    let mut r = regs();
    r.gpr[RDX] = 5;
    let done = emulate(&mut r, &mut m, 0).expect("three races");
    assert!(!done.rep_pending);
    assert_eq!(&m.data[0x100..0x104], &[0x11 + 3 + 5, 0x11, 0x11, 0x11]);
    assert_eq!(r.rip, CODE + 3);
}

/// A compare-exchange that fails although it found the expected bytes (a
/// memory working on wider words lost a race on the others) is no failed
/// comparison: CMPXCHG* tries again, and after MAX_RMW_TRIES hands the
/// instruction back unexecuted.
#[test]
fn spurious_compare_exchange_failures() {
    // lock cmpxchg [rdi], rcx; lock cmpxchg8b [rdi]; lock cmpxchg16b [rdi]
    let codes: [&[u8]; 3] = [
        &[0xf0, 0x48, 0x0f, 0xb1, 0x0f],
        &[0xf0, 0x0f, 0xc7, 0x0f],
        &[0xf0, 0x48, 0x0f, 0xc7, 0x0f],
    ];
    for code in codes {
        for (spurious, pending) in [(3, false), (u32::MAX, true)] {
            let mut m = mock();
            m.code = code.to_vec();
            m.spurious = spurious;
            let mut r = regs();
            // Memory holds 0x11 bytes: the comparison succeeds.
            r.gpr[RAX] = 0x1111_1111_1111_1111;
            r.gpr[RDX] = 0x1111_1111_1111_1111;
            r.gpr[RCX] = 0x2222_2222_2222_2222;
            r.gpr[RBX] = 0x2222_2222_2222_2222;
            let before = r;
            let done = emulate(&mut r, &mut m, 0).expect("cmpxchg");
            assert_eq!(done.rep_pending, pending, "{code:02x?}");
            if pending {
                assert_eq!(r, before);
                assert_eq!(m.accesses, MAX_RMW_TRIES as usize);
                assert!(m.data.iter().all(|&b| b == 0x11));
            } else {
                assert_eq!(r.rflags & ZF, ZF, "{code:02x?}");
                assert_eq!(m.data[0x100], 0x22, "{code:02x?}");
                assert_eq!(m.accesses, 4);
            }
        }
    }
}

/// With 0x67 a RIP-relative operand is EIP-relative: the next RIP plus the
/// displacement, truncated to 32 bits (SDM Vol. 2 2.2.1.6).
#[test]
fn eip_relative() {
    // mov dword [eip + disp32], eax at 0x1_0000_1000: 7 bytes.
    let rip = 0x1_0000_1000u64;
    let target = 0x2000u64;
    let disp = (target.wrapping_sub(rip + 7) as u32).to_le_bytes();
    let code = [0x67, 0x89, 0x05, disp[0], disp[1], disp[2], disp[3]];
    let mut m = Mock::new(rip, &code, target, &[0; 16]);
    let mut r = regs();
    r.rip = rip;
    r.gpr[RAX] = 0xaabb_ccdd;
    emulate(&mut r, &mut m, 0).expect("eip-relative");
    assert_eq!(&m.data[..4], &[0xdd, 0xcc, 0xbb, 0xaa]);
    assert_eq!(r.rip, rip + 7);
}

/// Everything the emulator gives back for a REP form with a zero count:
/// nothing done, RIP past it, no access.
#[test]
fn rep_with_zero_count() {
    for code in [&[0xf3, 0xaa][..], &[0xf3, 0x48, 0xa5]] {
        let mut m = mock();
        m.code = code.to_vec();
        let mut r = regs();
        r.gpr[RCX] = 0;
        let mut want = r;
        want.rip += code.len() as u64;
        let done = emulate(&mut r, &mut m, 0).expect("rep, rcx = 0");
        assert_eq!(done.iterations, 0);
        assert!(!done.rep_pending);
        assert_eq!(r, want);
        assert_eq!(m.accesses, 0);
    }
}
