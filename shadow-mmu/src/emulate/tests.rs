// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Tests of the emulator against the host CPU.
//!
//! The expected results come from running the same instruction natively:
//! [`native!`] wraps one instruction in `asm!` between two labels, loads the
//! registers and RFLAGS, runs it on a buffer of this process, captures the
//! registers, RFLAGS and the buffer, and returns the instruction's bytes as
//! the assembler encoded them. [`check`] then emulates those bytes, with RIP
//! at the same address and a [`Mock`] memory holding a copy of the buffer at
//! the buffer's own address, so that addresses, RIP-relative targets and
//! pointer registers agree, and compares everything.
//!
//! Error paths and what the CPU cannot show without faulting in this
//! process (#GP, #PF, the iteration limit) are checked against the SDM's
//! rules by hand.

mod errors;
mod rmw;
mod string;

use super::alu::{ARITH, DF};
use super::*;

/// RFLAGS bits the native runs set on input and compare on output.
pub(super) const FLAGS: u64 = ARITH | DF;
/// RFLAGS bits always set on input (bit 1, IF), which the emulator must keep.
const FIXED_FLAGS: u64 = 0x202;

/// Registers that `native!` loads and captures: RAX, RCX, RDX, RBX, RSI,
/// RDI, R8-R11 (`asm!` cannot take RBP and RSP, and the runner needs four
/// registers of its own, R12-R15).
pub(super) const NATIVE_GPRS: [usize; 10] = [0, 1, 2, 3, 6, 7, 8, 9, 10, 11];

/// The register file of a native run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Cpu {
    /// By encoding number; only [`NATIVE_GPRS`] are used.
    pub(super) gpr: [u64; 16],
    /// RFLAGS ([`FLAGS`] bits on input).
    pub(super) flags: u64,
}

/// Runs one instruction natively on a [`Cpu`] and returns its bytes.
pub(super) type Native = fn(&mut Cpu) -> &'static [u8];

/// A [`Native`] for the instruction(s) given as `asm!` template strings,
/// with optional extra `asm!` operands after a `;`.
macro_rules! native {
    ($($insn:expr),+ $(; $($extra:tt)*)?) => {{
        fn run(c: &mut $crate::emulate::tests::Cpu) -> &'static [u8] {
            let start: usize;
            let end: usize;
            // SAFETY: the template runs the instruction under test on the
            // registers given. The tests point every memory operand into a
            // buffer they own (or a static), sized for the access; RBX is
            // swapped in and restored, the stack is balanced, and DF is
            // cleared again before Rust code runs.
            unsafe {
                ::core::arch::asm!(
                    "lea {start}, [rip + 2f]",
                    "lea {end}, [rip + 3f]",
                    "xchg {rbx}, rbx",
                    "push {flags}",
                    "popfq",
                    "2:",
                    $($insn,)+
                    "3:",
                    "pushfq",
                    "pop {flags}",
                    "cld",
                    "xchg {rbx}, rbx",
                    start = out(reg) start,
                    end = out(reg) end,
                    rbx = inout(reg) c.gpr[3],
                    flags = inout(reg) c.flags,
                    inout("rax") c.gpr[0],
                    inout("rcx") c.gpr[1],
                    inout("rdx") c.gpr[2],
                    inout("rsi") c.gpr[6],
                    inout("rdi") c.gpr[7],
                    inout("r8") c.gpr[8],
                    inout("r9") c.gpr[9],
                    inout("r10") c.gpr[10],
                    inout("r11") c.gpr[11],
                    $($($extra)*)?
                );
            }
            // SAFETY: the labels bracket the instruction's bytes in this
            // function's code, which is mapped readable for the life of the
            // process.
            unsafe { ::core::slice::from_raw_parts(start as *const u8, end - start) }
        }
        run as $crate::emulate::tests::Native
    }};
}
pub(super) use native;

/// Guest memory for the tests: instruction bytes at `code_base` and data at
/// `data_base`; everything else is not present.
pub(super) struct Mock {
    /// Linear address of `code`.
    pub(super) code_base: u64,
    /// Instruction bytes.
    pub(super) code: Vec<u8>,
    /// Linear address of `data`.
    pub(super) data_base: u64,
    /// Data bytes.
    pub(super) data: Vec<u8>,
    /// Every store (write or compare-exchange) fails with this.
    pub(super) store_fault: Option<MemFault>,
    /// Data accesses of any kind at or above this address fail with a #PF.
    pub(super) fault_from: Option<u64>,
    /// Data accesses made (successful or not).
    pub(super) accesses: usize,
    /// Another CPU: changes the data before each compare-exchange, this
    /// many more times.
    pub(super) racer: u32,
    /// Compare-exchanges that fail this many more times whatever they find,
    /// as one on a wider word does when it loses a race on the other bytes.
    pub(super) spurious: u32,
}

/// The error code of the mock's not-present faults on data writes.
pub(super) fn pf(w: bool, cr2: u64) -> MemFault {
    let mut error_code = PfErrorCode::U;
    if w {
        error_code |= PfErrorCode::W;
    }
    MemFault::PageFault {
        error_code,
        cr2: Gva(cr2),
    }
}

impl Mock {
    /// A mock with `code` at `code_base` and `data` at `data_base`.
    pub(super) fn new(code_base: u64, code: &[u8], data_base: u64, data: &[u8]) -> Mock {
        Mock {
            code_base,
            code: code.to_vec(),
            data_base,
            data: data.to_vec(),
            store_fault: None,
            fault_from: None,
            accesses: 0,
            racer: 0,
            spurious: 0,
        }
    }

    /// The data bytes of an access, or its fault.
    fn data(&mut self, gva: u64, len: usize, w: bool) -> Result<&mut [u8], MemFault> {
        self.accesses += 1;
        if w {
            if let Some(f) = self.store_fault {
                return Err(f);
            }
        }
        let end = self.data_base + self.data.len() as u64;
        let limit = self.fault_from.unwrap_or(u64::MAX).min(end);
        if gva < self.data_base || gva >= limit {
            return Err(pf(w, gva));
        }
        if gva.saturating_add(len as u64) > limit {
            return Err(pf(w, limit));
        }
        let off = (gva - self.data_base) as usize;
        Ok(&mut self.data[off..off + len])
    }
}

impl EmulatorMemory for Mock {
    fn fetch(&mut self, rip: u64, buf: &mut [u8]) -> Result<usize, MemFault> {
        let end = self.code_base + self.code.len() as u64;
        if rip < self.code_base || rip >= end {
            return Err(MemFault::PageFault {
                error_code: PfErrorCode::U | PfErrorCode::ID,
                cr2: Gva(rip),
            });
        }
        let off = (rip - self.code_base) as usize;
        let n = buf.len().min(self.code.len() - off);
        buf[..n].copy_from_slice(&self.code[off..off + n]);
        Ok(n)
    }

    fn read(&mut self, gva: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        let d = self.data(gva, buf.len(), false)?;
        buf.copy_from_slice(d);
        Ok(())
    }

    fn write(&mut self, gva: u64, data: &[u8]) -> Result<(), MemFault> {
        self.data(gva, data.len(), true)?.copy_from_slice(data);
        Ok(())
    }

    fn cmpxchg(&mut self, gva: u64, expected: &mut [u8], new: &[u8]) -> Result<bool, MemFault> {
        let race = self.racer > 0;
        if race {
            self.racer -= 1;
        }
        let spurious = self.spurious > 0;
        if spurious {
            self.spurious -= 1;
        }
        let d = self.data(gva, expected.len(), true)?;
        if race {
            d[0] = d[0].wrapping_add(1);
        }
        if spurious {
            expected.copy_from_slice(d);
            return Ok(false);
        }
        if d == expected {
            d.copy_from_slice(new);
            Ok(true)
        } else {
            expected.copy_from_slice(d);
            Ok(false)
        }
    }
}

/// A 64-byte aligned buffer of the host for native runs.
pub(super) struct Buffer {
    storage: Vec<u8>,
    off: usize,
    len: usize,
}

impl Buffer {
    /// A buffer holding `init`.
    pub(super) fn new(init: &[u8]) -> Buffer {
        let mut storage = vec![0u8; init.len() + 64];
        let off = storage.as_ptr().align_offset(64);
        storage[off..off + init.len()].copy_from_slice(init);
        Buffer {
            storage,
            off,
            len: init.len(),
        }
    }

    /// Its address.
    pub(super) fn addr(&mut self) -> u64 {
        self.bytes_mut().as_mut_ptr() as u64
    }

    /// Its bytes.
    pub(super) fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.storage[self.off..self.off + self.len]
    }
}

/// Distinct values for the registers a test does not set.
pub(super) fn junk_gprs() -> [u64; 16] {
    let mut g = [0u64; 16];
    for (i, r) in g.iter_mut().enumerate() {
        *r = 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(i as u64 + 1) ^ 0x5555_0000_aaaa;
    }
    g
}

/// `n` bytes of a fixed pseudo-random pattern.
pub(super) fn pattern(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// What [`compare`] ran and saw.
pub(super) struct Run {
    /// The native runner.
    pub(super) native: Native,
    /// The instruction's bytes.
    pub(super) code: &'static [u8],
    /// Each emulation call's result and the registers after it.
    pub(super) calls: Vec<(Emulated, Regs)>,
}

/// Runs `run` natively on `gpr` and `flags` over a buffer holding `mem` (at
/// `at`, an address the caller's `buf` owns: [`check`] passes its own),
/// then emulates it on a mock holding the same bytes at the same address,
/// calling again while the emulator leaves RIP on the instruction, and
/// asserts that registers, RFLAGS and memory agree.
pub(super) fn compare(run: Native, gpr: [u64; 16], flags: u64, buf: &mut [u8], at: u64) -> Run {
    let init = buf.to_vec();
    let mut cpu = Cpu {
        gpr,
        flags: flags & FLAGS,
    };
    let code = run(&mut cpu);
    let native_mem = buf.to_vec();

    let rip = code.as_ptr() as u64;
    let mut mock = Mock::new(rip, code, at, &init);
    let mut regs = Regs {
        gpr,
        rip,
        rflags: (flags & FLAGS) | FIXED_FLAGS,
    };
    let mut calls = Vec::new();
    loop {
        let done = match emulate(&mut regs, &mut mock, 0) {
            Ok(d) => d,
            Err(e) => panic!("{code:02x?}: {e:?} (call {})", calls.len()),
        };
        assert_eq!(done.len, code.len(), "{code:02x?}: length");
        assert!(done.iterations <= MAX_REP_ITERATIONS);
        calls.push((done, regs));
        if !done.rep_pending {
            break;
        }
        assert_eq!(regs.rip, rip, "{code:02x?}: pending but RIP moved");
        assert!(calls.len() < 100, "{code:02x?}: does not finish");
    }
    let ctx = || format!("{code:02x?} on {gpr:x?} flags {flags:#x}");
    assert_eq!(regs.rip, rip + code.len() as u64, "{}: RIP", ctx());
    for (i, (&got, &before)) in regs.gpr.iter().zip(&gpr).enumerate() {
        let want = if NATIVE_GPRS.contains(&i) {
            cpu.gpr[i]
        } else {
            before
        };
        assert_eq!(got, want, "{}: register {i}", ctx());
    }
    assert_eq!(
        regs.rflags & FLAGS,
        cpu.flags & FLAGS,
        "{}: RFLAGS {:#x} native {:#x}",
        ctx(),
        regs.rflags,
        cpu.flags
    );
    assert_eq!(regs.rflags & !FLAGS, FIXED_FLAGS, "{}: other RFLAGS", ctx());
    assert!(mock.data == native_mem, "{}: memory differs", ctx());
    Run {
        native: run,
        code,
        calls,
    }
}

/// [`compare`] on a fresh buffer holding `mem`: `setup` gets the buffer's
/// address and sets the registers (the rest hold [`junk_gprs`]).
pub(super) fn check(
    run: Native,
    mem: &[u8],
    flags: u64,
    setup: impl Fn(u64, &mut [u64; 16]),
) -> Run {
    let mut buf = Buffer::new(mem);
    let base = buf.addr();
    let mut gpr = junk_gprs();
    setup(base, &mut gpr);
    compare(run, gpr, flags, buf.bytes_mut(), base)
}

/// [`check`] with RFLAGS all clear and with every arithmetic flag set, so
/// that flags an instruction leaves alone show as left alone.
pub(super) fn check_flags(run: Native, mem: &[u8], setup: impl Fn(u64, &mut [u64; 16])) {
    for flags in [0, ARITH] {
        check(run, mem, flags, &setup);
    }
}

/// Emulates `code` on `regs` and `mock` (code placed at `regs.rip`) and
/// asserts that it fails with `want`, leaving `regs` as they were.
pub(super) fn expect_error(code: &[u8], regs: Regs, mock: &mut Mock, want: EmulateError) {
    mock.code_base = regs.rip;
    mock.code = code.to_vec();
    let mut r = regs;
    let got = emulate(&mut r, mock, 0);
    assert_eq!(got, Err(want), "{code:02x?}");
    assert_eq!(r, regs, "{code:02x?}: registers changed on error");
}

/// Anonymous memory below 4 GiB (`MAP_32BIT`), for operands addressed with
/// a 0x67 prefix, which the host can then run on.
pub(super) struct LowBuffer {
    addr: u64,
    len: u64,
}

impl LowBuffer {
    /// `len` bytes holding `init`'s bytes at the start.
    pub(super) fn new(len: u64, init: &[u8]) -> LowBuffer {
        const SYS_MMAP: u64 = 9;
        const PROT_RW: u64 = 0x3;
        const MAP_PRIVATE_ANONYMOUS_32BIT: u64 = 0x02 | 0x20 | 0x40;
        let ret: u64;
        // SAFETY: mmap of new anonymous memory touches nothing that exists;
        // the kernel clobbers RCX and R11 only.
        unsafe {
            ::core::arch::asm!(
                "syscall",
                inlateout("rax") SYS_MMAP => ret,
                in("rdi") 0u64,
                in("rsi") len,
                in("rdx") PROT_RW,
                in("r10") MAP_PRIVATE_ANONYMOUS_32BIT,
                in("r8") u64::MAX,
                in("r9") 0u64,
                lateout("rcx") _,
                lateout("r11") _,
            );
        }
        assert!(ret < 1 << 32, "mmap(MAP_32BIT) failed: {ret:#x}");
        let mut b = LowBuffer { addr: ret, len };
        b.bytes_mut()[..init.len()].copy_from_slice(init);
        b
    }

    /// Its address (below 4 GiB).
    pub(super) fn addr(&self) -> u64 {
        self.addr
    }

    /// Its bytes.
    pub(super) fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: the mapping is `len` bytes, readable and writable, owned
        // by `self` until drop.
        unsafe { ::core::slice::from_raw_parts_mut(self.addr as *mut u8, self.len as usize) }
    }
}

impl Drop for LowBuffer {
    fn drop(&mut self) {
        const SYS_MUNMAP: u64 = 11;
        // SAFETY: unmaps the mapping `new` made, which nothing borrows any
        // more.
        unsafe {
            ::core::arch::asm!(
                "syscall",
                inlateout("rax") SYS_MUNMAP => _,
                in("rdi") self.addr,
                in("rsi") self.len,
                lateout("rcx") _,
                lateout("r11") _,
            );
        }
    }
}
