// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! (e) The instruction emulator on random registers, instruction bytes and
//! guest memory.

use shadow_mmu::emulate::{
    self, EmulateError, Emulated, EmulatorMemory, Exception, MemFault, Regs, MAX_REP_ITERATIONS,
};
use shadow_mmu::{Gva, PfErrorCode};

use crate::Input;

/// Size of a page of the fuzz memory.
const PAGE: u64 = 4096;
/// Pages the fuzz memory maps (the rest of the address space is not
/// present).
const PAGES: usize = 6;
/// RFLAGS bits an emulated instruction may change: CF, PF, AF, ZF, SF, OF.
const ARITH: u64 = 0x8d5;

/// What a mapped page of the fuzz memory is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Readable, writable, executable RAM.
    Ram,
    /// Readable and executable; stores are #PF with P and W.
    ReadOnly,
    /// A present page table entry with a reserved bit: every access is
    /// #PF with P and RSVD.
    Reserved,
    /// Not RAM: every access is an MMIO exit.
    Mmio,
}

/// Opcodes of the emulated forms (and some neighbours), so that random
/// instructions reach them often: one or two bytes each.
const OPCODES: &[&[u8]] = &[
    &[0x88],
    &[0x89],
    &[0xc6],
    &[0xc7],
    &[0x86],
    &[0x87],
    &[0x0f, 0xb0],
    &[0x0f, 0xb1],
    &[0x0f, 0xc7],
    &[0x00],
    &[0x01],
    &[0x08],
    &[0x09],
    &[0x20],
    &[0x21],
    &[0x28],
    &[0x29],
    &[0x30],
    &[0x31],
    &[0x80],
    &[0x81],
    &[0x83],
    &[0x0f, 0xab],
    &[0x0f, 0xb3],
    &[0x0f, 0xbb],
    &[0x0f, 0xba],
    &[0xaa],
    &[0xab],
    &[0xa4],
    &[0xa5],
    // Neighbours: loads, register forms, other groups.
    &[0x8b],
    &[0x03],
    &[0xff],
    &[0x0f, 0xa3],
    &[0xa6],
];

/// Prefixes random instructions start with.
const PREFIXES: &[u8] = &[
    0x66, 0x67, 0xf0, 0xf2, 0xf3, 0x2e, 0x26, 0x64, 0x65, 0x40, 0x41, 0x44, 0x48, 0x49, 0x4c,
];

/// A small pseudo-random generator for what the memory does when (races),
/// seeded from the input so that runs repeat.
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*; the state is never 0.
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// A mapped page.
#[derive(Clone)]
struct Page {
    base: u64,
    kind: Kind,
    bytes: Box<[u8; PAGE as usize]>,
    /// Bytes a successful store of the emulator wrote.
    stored: Box<[bool; PAGE as usize]>,
    /// Bytes another CPU (the racer) changed.
    raced: Box<[bool; PAGE as usize]>,
}

/// How the memory races the emulator's compare-exchanges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Race {
    /// Not at all.
    None,
    /// Another CPU changes the operand's first byte before some of them.
    Sometimes,
    /// Before every one.
    Always,
    /// Some fail whatever they find (a wider word lost a race).
    Spurious,
}

/// Guest memory for the emulator, checking how the emulator calls it.
struct FuzzMemory {
    pages: Vec<Page>,
    race: Race,
    rng: Rng,
    /// The fault of the last access that failed.
    last_fault: Option<MemFault>,
    /// Successful stores (writes and compare-exchanges that swapped).
    stores: u64,
}

/// Why a byte cannot be accessed.
fn fault(kind: Option<Kind>, gva: u64, write: bool, fetch: bool) -> Option<MemFault> {
    let mut error_code = PfErrorCode::U;
    if write {
        error_code |= PfErrorCode::W;
    }
    if fetch {
        error_code |= PfErrorCode::ID;
    }
    let pf = |e: PfErrorCode| MemFault::PageFault {
        error_code: e,
        cr2: Gva(gva),
    };
    match kind {
        None => Some(pf(error_code)),
        Some(Kind::Ram) => None,
        Some(Kind::ReadOnly) if write => Some(pf(error_code | PfErrorCode::P)),
        Some(Kind::ReadOnly) => None,
        Some(Kind::Reserved) => Some(pf(error_code | PfErrorCode::P | PfErrorCode::RSVD)),
        Some(Kind::Mmio) => Some(MemFault::Mmio { gva: Gva(gva) }),
    }
}

impl FuzzMemory {
    /// The page holding `gva` and the offset in it.
    fn page(&self, gva: u64) -> Option<(usize, usize)> {
        let base = gva & !(PAGE - 1);
        let i = self.pages.iter().position(|p| p.base == base)?;
        Some((i, (gva - base) as usize))
    }

    /// Where each of the `len` bytes at `gva` is, or the fault of the first
    /// that cannot be accessed.
    fn locate(
        &mut self,
        gva: u64,
        len: usize,
        write: bool,
    ) -> Result<[(usize, usize); 16], MemFault> {
        assert!((1..=16).contains(&len), "access of {len} bytes");
        let mut at = [(0, 0); 16];
        for (i, slot) in at.iter_mut().enumerate().take(len) {
            let a = gva.wrapping_add(i as u64);
            let p = self.page(a);
            if let Some(f) = fault(p.map(|(i, _)| self.pages[i].kind), a, write, false) {
                self.last_fault = Some(f);
                return Err(f);
            }
            *slot = p.unwrap_or_default();
        }
        Ok(at)
    }

    /// The `len` bytes at `at`.
    fn get(&self, at: &[(usize, usize); 16], out: &mut [u8]) {
        for (o, &(p, off)) in out.iter_mut().zip(at) {
            *o = self.pages[p].bytes[off];
        }
    }

    /// Stores `data` at `at` as the emulator's.
    fn put(&mut self, at: &[(usize, usize); 16], data: &[u8]) {
        for (&d, &(p, off)) in data.iter().zip(at) {
            self.pages[p].bytes[off] = d;
            self.pages[p].stored[off] = true;
        }
        self.stores += 1;
    }
}

impl EmulatorMemory for FuzzMemory {
    fn fetch(&mut self, rip: u64, buf: &mut [u8]) -> Result<usize, MemFault> {
        assert!(
            (1..=15).contains(&buf.len()),
            "fetch of {} bytes",
            buf.len()
        );
        for (n, b) in buf.iter_mut().enumerate() {
            let a = rip.wrapping_add(n as u64);
            let p = self.page(a);
            if let Some(f) = fault(p.map(|(i, _)| self.pages[i].kind), a, false, true) {
                if n == 0 {
                    self.last_fault = Some(f);
                    return Err(f);
                }
                return Ok(n);
            }
            if let Some((i, off)) = p {
                *b = self.pages[i].bytes[off];
            }
        }
        Ok(buf.len())
    }

    fn read(&mut self, gva: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        let at = self.locate(gva, buf.len(), false)?;
        self.get(&at, buf);
        Ok(())
    }

    fn write(&mut self, gva: u64, data: &[u8]) -> Result<(), MemFault> {
        let at = self.locate(gva, data.len(), true)?;
        self.put(&at, data);
        Ok(())
    }

    fn cmpxchg(&mut self, gva: u64, expected: &mut [u8], new: &[u8]) -> Result<bool, MemFault> {
        let len = expected.len();
        assert!(
            matches!(len, 1 | 2 | 4 | 8 | 16) && new.len() == len,
            "compare-exchange of {len} bytes with {} new",
            new.len()
        );
        let at = self.locate(gva, len, true)?;
        let r = self.rng.next();
        let (race, spurious) = match self.race {
            Race::None => (false, false),
            Race::Sometimes => (r.is_multiple_of(3), false),
            Race::Always => (true, false),
            Race::Spurious => (false, r.is_multiple_of(2)),
        };
        if race {
            let (p, off) = at[0];
            let page = &mut self.pages[p];
            page.bytes[off] = page.bytes[off].wrapping_add(1 + (r >> 8) as u8 % 255);
            page.raced[off] = true;
        }
        let mut now = [0u8; 16];
        self.get(&at, &mut now[..len]);
        if now[..len] == *expected && !spurious {
            self.put(&at, new);
            Ok(true)
        } else {
            expected.copy_from_slice(&now[..len]);
            Ok(false)
        }
    }
}

/// A page base for the fuzz memory.
fn page_base(inp: &mut Input, previous: Option<u64>) -> u64 {
    let b = match (inp.below(6), previous) {
        // Right after the previous page: accesses and fetches across.
        (0 | 1, Some(p)) => p.wrapping_add(PAGE),
        // Low and high canonical halves, and near the canonical edges.
        (2, _) => inp.u64() & 0x0000_7fff_ffff_ffff,
        (3, _) => inp.u64() | 0xffff_8000_0000_0000,
        (4, _) => 0x0000_8000_0000_0000 - PAGE * (1 + inp.below(2)),
        // Below 4 GiB: reachable with 0x67.
        _ => u64::from(inp.u32()),
    };
    b & !(PAGE - 1)
}

/// A register value: random, into a page, or a small index or count.
fn register(inp: &mut Input, pages: &[Page]) -> u64 {
    match inp.below(8) {
        0 | 1 => inp.u64(),
        2..=4 => {
            let p = &pages[inp.below(pages.len() as u64) as usize];
            p.base
                .wrapping_add(u64::from(inp.u16()) % (PAGE + 32))
                .wrapping_sub(16)
        }
        5 => inp.below(64),
        6 => MAX_REP_ITERATIONS - 4 + inp.below(8),
        _ => (inp.below(64) as i64 - 32) as u64,
    }
}

/// Fuzzes [`shadow_mmu::emulate::emulate`]: random registers, random
/// instruction bytes (often a prefix or two and an emulated opcode, then
/// random bytes), and a memory of a few pages (RAM, read-only, faulting,
/// MMIO; the rest not present), optionally racing the emulator's
/// compare-exchanges like another vCPU.
///
/// Panics when the emulator breaks its contract: it panics itself, calls
/// the memory with an impossible access, changes the registers or memory
/// when it fails, reports a fault the memory did not give, moves RIP by
/// other than the instruction's length (or at all with `rep_pending`), does
/// more than [`MAX_REP_ITERATIONS`] iterations or more stores than
/// iterations, changes memory it did not store to, or changes RFLAGS beyond
/// the arithmetic flags or more than three registers.
pub fn emulate(data: &[u8]) {
    let mut inp = Input::new(data);
    // The pages.
    let mut pages: Vec<Page> = Vec::with_capacity(PAGES);
    let n = 1 + inp.below(PAGES as u64) as usize;
    let mut seed = inp.u64() | 1;
    for _ in 0..n {
        let base = page_base(&mut inp, pages.last().map(|p| p.base));
        if pages.iter().any(|p| p.base == base) {
            continue;
        }
        let kind = match inp.below(8) {
            0 => Kind::ReadOnly,
            1 => Kind::Reserved,
            2 => Kind::Mmio,
            _ => Kind::Ram,
        };
        let mut bytes = Box::new([0u8; PAGE as usize]);
        for chunk in bytes.chunks_mut(8) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            chunk.copy_from_slice(&seed.to_le_bytes()[..chunk.len()]);
        }
        pages.push(Page {
            base,
            kind,
            bytes,
            stored: Box::new([false; PAGE as usize]),
            raced: Box::new([false; PAGE as usize]),
        });
    }
    // The instruction: in the first page, often near its end.
    let code_page = pages[0].base;
    let off = match inp.below(4) {
        0 => PAGE - 1 - inp.below(15),
        _ => inp.below(PAGE),
    };
    let rip = code_page + off;
    let mut insn = [0u8; 15];
    let mut len = 0;
    if inp.bool() {
        for _ in 0..inp.below(4) {
            insn[len] = inp.pick(PREFIXES);
            len += 1;
        }
        for &b in inp.pick(OPCODES) {
            insn[len] = b;
            len += 1;
        }
    }
    while len < 15 && !inp.is_empty() {
        insn[len] = inp.u8();
        len += 1;
        if inp.below(16) == 0 {
            break;
        }
    }
    // Into the pages that hold them (bytes outside the pages stay absent).
    for (i, &b) in insn[..len].iter().enumerate() {
        let a = rip.wrapping_add(i as u64);
        if let Some(p) = pages.iter_mut().find(|p| p.base == a & !(PAGE - 1)) {
            p.bytes[(a & (PAGE - 1)) as usize] = b;
        }
    }
    // The registers.
    let mut regs = Regs {
        gpr: [0; 16],
        rip,
        rflags: 0x2 | (inp.u64() & 0x3f_7fd5),
    };
    for g in regs.gpr.iter_mut() {
        *g = register(&mut inp, &pages);
    }
    let cpl = inp.below(4) as u8;
    let race = match inp.below(8) {
        0 => Race::Sometimes,
        1 => Race::Always,
        2 => Race::Spurious,
        _ => Race::None,
    };

    let before_regs = regs;
    let before: Vec<Box<[u8; PAGE as usize]>> = pages.iter().map(|p| p.bytes.clone()).collect();
    let mut mem = FuzzMemory {
        pages,
        race,
        rng: Rng(seed | 1),
        last_fault: None,
        stores: 0,
    };
    let result = emulate::emulate(&mut regs, &mut mem, cpl);

    // Memory: only stored (or raced) bytes changed; nothing stored on error.
    for (p, old) in mem.pages.iter().zip(&before) {
        for i in 0..PAGE as usize {
            if p.bytes[i] != old[i] {
                assert!(
                    p.stored[i] || p.raced[i],
                    "byte {:#x} changed without a store: {result:?}",
                    p.base + i as u64
                );
            }
        }
    }
    let code_at_rip = |n: usize| -> Vec<u8> {
        let mut b = vec![0u8; n];
        let mut m = FuzzMemory {
            pages: mem.pages.clone(),
            race: Race::None,
            rng: Rng(1),
            last_fault: None,
            stores: 0,
        };
        let got = m.fetch(rip, &mut b).unwrap_or(0);
        b.truncate(got);
        b
    };
    match result {
        Ok(Emulated {
            len,
            iterations,
            rep_pending,
        }) => {
            assert!((1..=15).contains(&len), "length {len}");
            assert!(iterations <= MAX_REP_ITERATIONS, "{iterations} iterations");
            assert!(
                mem.stores <= iterations,
                "{} stores in {iterations} iterations",
                mem.stores
            );
            if rep_pending {
                assert_eq!(regs.rip, rip, "RIP moved with rep_pending");
            } else {
                assert_eq!(regs.rip, rip.wrapping_add(len as u64), "RIP");
            }
            if iterations == 0 {
                // Nothing done: a REP form with a zero count, or a
                // read-modify-write that lost every race.
                let mut want = before_regs;
                want.rip = regs.rip;
                assert_eq!(regs, want, "registers changed by nothing");
            }
            assert_eq!(
                regs.rflags & !ARITH,
                before_regs.rflags & !ARITH,
                "RFLAGS beyond the arithmetic flags"
            );
            let changed = (0..16)
                .filter(|&i| regs.gpr[i] != before_regs.gpr[i])
                .count();
            assert!(changed <= 3, "{changed} registers changed");
            // The instruction was fetched whole.
            assert_eq!(code_at_rip(len).len(), len, "instruction not all fetched");
        }
        Err(e) => {
            assert_eq!(regs, before_regs, "registers changed by {e:?}");
            assert_eq!(mem.stores, 0, "stores before {e:?}");
            match e {
                EmulateError::Decode { bytes } | EmulateError::Unsupported { bytes } => {
                    assert!(bytes.len() <= 15);
                    assert_eq!(code_at_rip(bytes.len()), bytes, "bytes not those at RIP");
                }
                EmulateError::Exception(Exception::PageFault { error_code, cr2 }) => {
                    assert_eq!(
                        mem.last_fault,
                        Some(MemFault::PageFault { error_code, cr2 }),
                        "a #PF the memory did not report"
                    );
                }
                EmulateError::Exception(Exception::Mmio { gva }) => {
                    assert_eq!(
                        mem.last_fault,
                        Some(MemFault::Mmio { gva }),
                        "an MMIO exit the memory did not report"
                    );
                }
                // #GP: a non-canonical or misaligned operand (the memory
                // here never reports #GP). #UD: LOCK where not allowed.
                EmulateError::Exception(Exception::GeneralProtection)
                | EmulateError::Exception(Exception::InvalidOpcode) => {}
            }
        }
    }
}
