// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `STOS` and `MOVS` against the host CPU, and the iteration limit.

use super::super::alu::DF;
use super::super::reg::{RAX, RCX, RDI, RSI};
use super::super::{emulate, Exception, MAX_REP_ITERATIONS};
use super::{check, compare, junk_gprs, native, pattern, pf, LowBuffer, Mock, Native};
use crate::emulate::{EmulateError, Regs};

/// The accumulator for every STOS case.
const STORED: u64 = 0x8877_6655_4433_2211;

/// Runs `run` with count `rcx` and DF `df`, the pointers `len`-byte room
/// from either end of a buffer (`movs`: the source in its first half, the
/// destination in the second), or `overlap` elements apart in the middle.
fn string(run: Native, size: u64, rcx: u64, df: bool, movs: bool, overlap: Option<i64>) {
    let room = rcx.min(MAX_REP_ITERATIONS * 2) * size + 64;
    let len = 2 * room + 128;
    let flags = if df { DF } else { 0 };
    check(run, &pattern(len as usize, rcx ^ size), flags, |base, g| {
        g[RCX] = rcx;
        g[RAX] = STORED;
        let (src, dst) = match (overlap, df) {
            (Some(d), _) => {
                let s = base + room;
                (s, s.wrapping_add_signed(d * size as i64))
            }
            (None, false) => (base + 32, base + room + 32),
            (None, true) => (base + room - 32 - size, base + len - 32 - size),
        };
        g[RSI] = src;
        g[RDI] = if movs { dst } else { src };
    });
}

#[test]
fn stos() {
    let forms: [(Native, u64, bool); 11] = [
        // STOS writes ES:RDI whatever the segment prefix.
        (native!(".byte 0x64", "stosb"), 1, false),
        (native!(".byte 0x65", "rep stosq"), 8, true),
        (native!("stosb"), 1, false),
        (native!("stosw"), 2, false),
        (native!("stosd"), 4, false),
        (native!("stosq"), 8, false),
        (native!("rep stosb"), 1, true),
        (native!("rep stosw"), 2, true),
        (native!("rep stosd"), 4, true),
        (native!("rep stosq"), 8, true),
        // REPNE repeats STOS as REP does.
        (native!("repne stosb"), 1, true),
    ];
    for (run, size, rep) in forms {
        for df in [false, true] {
            for rcx in [0, 1, 7, 100] {
                string(run, size, rcx, df, false, None);
                if !rep {
                    break;
                }
            }
        }
    }
}

#[test]
fn movs() {
    let forms: [(Native, u64, bool); 8] = [
        (native!("movsb"), 1, false),
        (native!("movsw"), 2, false),
        (native!("movs dword ptr [rdi], dword ptr [rsi]"), 4, false),
        (native!("movsq"), 8, false),
        (native!("rep movsb"), 1, true),
        (native!("rep movsw"), 2, true),
        (
            native!("rep movs dword ptr [rdi], dword ptr [rsi]"),
            4,
            true,
        ),
        (native!("rep movsq"), 8, true),
    ];
    for (run, size, _) in forms {
        for df in [false, true] {
            for rcx in [0, 1, 13, 300] {
                string(run, size, rcx, df, true, None);
            }
        }
    }
    // Overlapping source and destination, either way, whole and partial
    // elements apart: the result is that of one element at a time.
    for (run, size, rep) in forms {
        if !rep {
            continue;
        }
        for df in [false, true] {
            for overlap in [1, -1, 3, -3] {
                string(run, size, 50, df, true, Some(overlap));
            }
        }
    }
    let run = native!("rep movsb");
    for overlap in [1, -1, 2, -2, 5, -5, 8, -8] {
        string(run, 1, 100, false, true, Some(overlap));
        string(run, 1, 100, true, true, Some(overlap));
    }
}

/// RCX = MAX_REP_ITERATIONS + 5: the first call does MAX_REP_ITERATIONS and
/// stays on the instruction with 5 left, the second finishes; the end state
/// is the host's.
#[test]
fn rep_limit() {
    let forms: [(Native, u64, bool); 4] = [
        (native!("rep stosb"), 1, false),
        (native!("rep stosq"), 8, false),
        (native!("rep movsb"), 1, true),
        (native!("rep movsq"), 8, true),
    ];
    for (run, size, movs) in forms {
        for df in [false, true] {
            for (rcx, calls) in [
                (MAX_REP_ITERATIONS + 5, 2),
                (MAX_REP_ITERATIONS, 1),
                (2 * MAX_REP_ITERATIONS, 2),
                (2 * MAX_REP_ITERATIONS + 1, 3),
            ] {
                let room = rcx * size + 64;
                let len = 2 * room + 128;
                let flags = if df { DF } else { 0 };
                let r = check(run, &pattern(len as usize, 9), flags, |base, g| {
                    g[RCX] = rcx;
                    g[RAX] = STORED;
                    let (src, dst) = if df {
                        (base + room - 32 - size, base + len - 32 - size)
                    } else {
                        (base + 32, base + room + 32)
                    };
                    g[RSI] = src;
                    g[RDI] = if movs { dst } else { src };
                });
                assert_eq!(r.calls.len(), calls, "{:02x?} rcx {rcx}", r.code);
                let mut left = rcx;
                for (i, (done, regs)) in r.calls.iter().enumerate() {
                    let n = left.min(MAX_REP_ITERATIONS);
                    left -= n;
                    assert_eq!(done.iterations, n, "call {i}");
                    assert_eq!(done.rep_pending, left != 0, "call {i}");
                    assert_eq!(regs.gpr[RCX], left, "call {i}");
                }
            }
        }
    }
}

/// 0x67: ECX, ESI and EDI, written as doublewords (bits 32-63 cleared), and
/// a zero ECX with bits set above it does nothing.
#[test]
fn address_size_override() {
    let forms: [Native; 4] = [
        native!(".byte 0x67", "rep stosb"),
        native!(".byte 0x67", "stosd"),
        native!(".byte 0x67", "rep movsq"),
        native!(".byte 0x67", "movsw"),
    ];
    for run in forms {
        for (ecx, df) in [(0, false), (5, false), (5, true), (300, false)] {
            let mut low = LowBuffer::new(0x4000, &pattern(0x4000, 11));
            let at = low.addr();
            let mut gpr = junk_gprs();
            gpr[RCX] = 0xffff_0000_0000_0000 | ecx;
            gpr[RAX] = STORED;
            gpr[RSI] = 0xaaaa_0000_0000_0000 | (at + 0x1000);
            gpr[RDI] = 0x5555_0000_0000_0000 | (at + 0x3000);
            let flags = if df { DF } else { 0 };
            compare(run, gpr, flags, low.bytes_mut(), at);
        }
    }
}

/// A REP form that faults after some iterations returns those as done with
/// RIP on the instruction (the registers saying how far it got), and the
/// next call, starting on the faulting iteration, reports the fault with
/// the registers unchanged: the state the CPU delivers a #PF in (SDM Vol. 1
/// 7.3.9.1: a fault between iterations leaves the registers pointing at the
/// next element).
#[test]
fn rep_fault_after_some_iterations() {
    const DATA: u64 = 0x10_0000;
    const CODE: u64 = 0x40_0000;
    // rep stosq, rep movsb.
    for (code, size) in [(vec![0xf3, 0x48, 0xab], 8u64), (vec![0xf3, 0xa4], 1)] {
        let mut mock = Mock::new(CODE, &code, DATA, &[0x33; 0x1000]);
        // Bytes from DATA + 0x800 on fault.
        mock.fault_from = Some(DATA + 0x800);
        let mut regs = Regs {
            gpr: junk_gprs(),
            rip: CODE,
            rflags: 0x202,
        };
        regs.gpr[RCX] = 100;
        regs.gpr[RSI] = DATA;
        regs.gpr[RDI] = DATA + 0x800 - 10 * size;
        regs.gpr[RAX] = STORED;
        let start = regs;
        let done = emulate(&mut regs, &mut mock, 0).expect("first call");
        assert_eq!(done.iterations, 10);
        assert!(done.rep_pending);
        assert_eq!(regs.rip, CODE);
        assert_eq!(regs.gpr[RCX], 90);
        assert_eq!(regs.gpr[RDI], DATA + 0x800);
        if size == 1 {
            assert_eq!(regs.gpr[RSI], DATA + 10);
        }
        let mut again = regs;
        let err = emulate(&mut again, &mut mock, 0);
        assert_eq!(
            err,
            Err(EmulateError::Exception(Exception::from(pf(
                true,
                DATA + 0x800
            ))))
        );
        assert_eq!(again, regs);
        assert_ne!(again, start);
    }
}
