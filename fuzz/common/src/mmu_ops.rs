// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! (b) Shadow MMU operations as a guest and its VMM would make them.

use std::fmt;
use std::sync::Arc;

use shadow_mmu::abi::{Block, Hypercall};
use shadow_mmu::pte::{PTE_A, PTE_D, PTE_P, PTE_PS, PTE_U, PTE_W, PTE_XD};
use shadow_mmu::test_utils::{self, CpuError};
use shadow_mmu::{
    load_pdptrs, peek, Access, AccessKind, Changes, Cr0, Cr4, Efer, FaultOutcome, Gfn,
    GuestAddress, GuestException, Gva, Hole, Mmu, MmuConfig, MmuError, PagingMode, PagingState,
    Prefetch, ShadowMmu, TableWrites, WalkError,
};
use vm_memory::{
    Bytes, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryBackend, GuestMemoryMmap,
    GuestRegionMmap,
};

use crate::walker::{access_kind, sign_extend};
use crate::Input;

/// Guest RAM of the MMU harnesses: two 2 MiB regions; the upper one can be
/// unplugged and plugged again.
pub(crate) const LOW_RAM: u64 = 2 << 20;
pub(crate) const HIGH_RAM: u64 = 2 << 20;
/// The guest frames used as page tables.
pub(crate) const TABLE_GFNS: [u64; 16] = [
    0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x200, 0x201, 0x202,
    0x203,
];
pub(crate) const UPPER: u64 = PTE_P | PTE_W | PTE_U;
pub(crate) const ARENA_BASE: u64 = 1 << 46;

pub(crate) fn table_gpa(slot: u64) -> u64 {
    TABLE_GFNS[(slot % 16) as usize] << 12
}

/// A data frame a guest entry may point to: RAM in either region, a table,
/// beyond RAM, the arena, above 4 GiB.
pub(crate) fn data_frame(inp: &mut Input<'_>) -> u64 {
    match inp.below(8) {
        0..=2 => 0x10_0000 + (inp.below(64) << 12),
        3 => 0x30_0000 + (inp.below(16) << 12),
        4 => table_gpa(inp.u8().into()),
        5 => 0x40_0000 + (inp.below(16) << 12),
        6 => ARENA_BASE + (inp.below(16) << 12),
        _ => (1 << 32) + (inp.below(16) << 12),
    }
}

/// A guest entry value for the MMU harnesses.
pub(crate) fn mmu_entry(inp: &mut Input<'_>) -> u64 {
    let flags = |inp: &mut Input<'_>| -> u64 {
        // Present most of the time; any other low flag.
        let f = u64::from(inp.u16() & 0xfff);
        if f & 0xf00 == 0 {
            f & !PTE_P
        } else {
            f | PTE_P
        }
    };
    match inp.below(10) {
        0 => inp.u64(),
        1..=3 => table_gpa(inp.u8().into()) | (flags(inp) & !PTE_PS),
        4..=6 => data_frame(inp) | (flags(inp) & !PTE_PS),
        7 => {
            let frame = inp.pick(&[0u64, 0x20_0000, 0x40_0000, 1 << 30, 1 << 32, ARENA_BASE]);
            frame | flags(inp) | PTE_PS
        }
        8 => {
            // 32-bit PSE-36 style large page: bits 13.. hold bits 32...
            let frame = inp.pick(&[0u64, 0x40_0000, 0x2000]);
            frame | flags(inp) | PTE_PS
        }
        _ => {
            let v = table_gpa(inp.u8().into()) | UPPER;
            match inp.below(4) {
                0 => v | PTE_XD,
                1 => v | (u64::from(inp.u8() & 0xf) << 59),
                2 => v | (1 << (36 + inp.below(16))),
                _ => v | PTE_A | PTE_D,
            }
        }
    }
}

/// How a guest write that hit no write protection is made visible.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Flush {
    Tlb,
    Invlpg(u64),
    Nothing,
}

/// One operation of [`mmu_ops`], recorded for the failure report.
#[derive(Clone, Debug)]
// The fields are read by `Debug`, for the failure report.
#[allow(dead_code)]
pub(crate) enum Op {
    /// A guest store of `len` bytes of `value` at `gpa`.
    Write {
        vcpu: usize,
        gpa: u64,
        bytes: Vec<u8>,
        flush: Flush,
        emulated: bool,
    },
    TrackWrite {
        gpa: u64,
        len: usize,
    },
    Access {
        vcpu: usize,
        gva: u64,
        access: Access,
        ac: bool,
        result: String,
    },
    Invlpg {
        vcpu: usize,
        gva: u64,
    },
    FlushTlb {
        vcpu: usize,
    },
    Prefetch {
        vcpu: usize,
        gva: u64,
    },
    GvaToGpa {
        vcpu: usize,
        gva: u64,
        access: Access,
    },
    LoadCr3 {
        vcpu: usize,
        state: Box<PagingState>,
        result: &'static str,
    },
    Memory {
        change: MemChange,
        fault_between: Option<(usize, u64)>,
    },
    RegisterMmio {
        start: u64,
        end: u64,
    },
    /// A hypercall block at `gpa` and what serving it returned.
    Hypercall {
        vcpu: usize,
        gpa: u64,
        block: Option<Block>,
        decoded: Option<Hypercall>,
        result: Option<i64>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MemChange {
    /// Same map, just the notification.
    Notify,
    /// Remove the upper region.
    Unplug,
    /// Put the removed upper region back.
    Replug,
    /// A fresh, zeroed upper region (replacing the old one if present).
    Fresh,
}

/// The MMU configuration an input asks for.
pub(crate) fn mmu_config(inp: &mut Input<'_>) -> MmuConfig {
    let max_pages = if inp.below(8) == 0 {
        512
    } else {
        8 + inp.below(25) as u32
    };
    MmuConfig {
        arena_base: ARENA_BASE,
        max_pages,
        vcpus: 1 + inp.below(2) as usize,
        prefetch_window: 1 << inp.below(10),
        cached_roots: inp.pick(&[0usize, 1, 2, 4, 16]),
        unsync: inp.bool(),
        max_mapping_level: 1 + inp.below(3) as u8,
        table_writes: if inp.bool() {
            TableWrites::Emulate
        } else {
            TableWrites::Unprotect
        },
        hole: inp.bool().then_some(Hole {
            root_index: 510,
            entry: (1 << 45) | PTE_P | PTE_W | PTE_A,
        }),
        hidden: Vec::new(),
        frames: Box::new(shadow_mmu::IdentityFrames),
        hidden_sink: None,
        prefetch: if inp.bool() {
            Prefetch::Speculative
        } else {
            Prefetch::Exact
        },
        speculative_log: inp.pick(&[0usize, 1, 64]),
    }
}

/// Lays out guest tables for every mode, sharing frames across modes:
///
/// * 4-level: PML4 `0x10` and `0x11` -> PDPT `0x12` -> PD `0x13` -> PTs
///   `0x14`-`0x16` and `0x200` (upper region); PD[4] is a 2 MiB page;
///   PML4[1] -> PDPT `0x201` (empty, upper region);
/// * 5-level: PML5 `0x17` -> PML4 `0x10`;
/// * 32-bit: PD `0x18` -> PT `0x19`; PD[1] a 4 MiB page;
/// * PAE: PDPT `0x1a` -> PDs `0x13`, `0x1b`, -, `0x202`; `0x1b`[0] -> PT
///   `0x14`.
pub(crate) fn build_tables(mem: &GuestMemoryMmap) {
    let w64 = |gpa: u64, v: u64| {
        let _ = mem.write_obj(v, GuestAddress(gpa));
    };
    let w32 = |gpa: u64, v: u32| {
        let _ = mem.write_obj(v, GuestAddress(gpa));
    };
    for pml4 in [0x10u64, 0x11] {
        w64(pml4 << 12, (0x12 << 12) | UPPER);
    }
    w64((0x10 << 12) + 8, (0x201 << 12) | UPPER);
    w64(0x12 << 12, (0x13 << 12) | UPPER);
    for (i, pt) in [0x14u64, 0x15, 0x16, 0x200].iter().enumerate() {
        w64((0x13 << 12) + 8 * i as u64, (pt << 12) | UPPER);
        for j in 0..8u64 {
            let frame = 0x10_0000 + ((8 * i as u64 + j) << 12);
            w64((pt << 12) + 8 * j, frame | UPPER);
        }
    }
    w64((0x13 << 12) + 32, 0x20_0000 | UPPER | PTE_PS);
    w64(0x17 << 12, (0x10 << 12) | UPPER);
    w32(0x18 << 12, (0x19 << 12) | UPPER as u32);
    w32((0x18 << 12) + 4, (UPPER | PTE_PS) as u32);
    for j in 0..8u64 {
        w32(
            (0x19 << 12) + 4 * j,
            (0x10_0000 + (j << 12)) as u32 | UPPER as u32,
        );
    }
    w64(0x1a << 12, (0x13 << 12) | PTE_P);
    w64((0x1a << 12) + 8, (0x1b << 12) | PTE_P);
    w64((0x1a << 12) + 24, (0x202 << 12) | PTE_P);
    w64(0x1b << 12, (0x14 << 12) | UPPER);
}

// The guest model (a CPU on the shadow tables, the guest's own verdict, a
// VMM whose flushes complete at once) is the one the crate's tests use.
pub(crate) use shadow_mmu::test_utils::{apply, guest_says, shadow_allows, Cpu};

/// An explicit access of a random kind and privilege.
fn explicit_access(inp: &mut Input<'_>) -> Access {
    Access {
        kind: access_kind(inp.below(3)),
        user: inp.bool(),
        implicit: false,
    }
}

/// Drives the shadow MMU as a guest and its VMM would, recording every
/// operation for the failure report.
pub(crate) struct MmuDriver {
    pub(crate) m: Mmu,
    /// The paging state each vCPU last loaded.
    pub(crate) states: Vec<PagingState>,
    /// The upper region while it is unplugged.
    pub(crate) removed: Option<Arc<GuestRegionMmap>>,
    /// Registered MMIO ranges.
    pub(crate) mmio: Vec<(u64, u64)>,
    pub(crate) maxphyaddr: u8,
    pub(crate) gbpages: bool,
    /// Whether the configuration has a hole (at PML4/PML5 index 510).
    pub(crate) hole: bool,
    pub(crate) log: Vec<Op>,
    pub(crate) config: String,
}

impl MmuDriver {
    pub(crate) fn new(inp: &mut Input<'_>) -> Option<MmuDriver> {
        let config = mmu_config(inp);
        let config_text = format!("{config:?}");
        let vcpus = config.vcpus;
        let hole = config.hole.is_some();
        let mem = GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), LOW_RAM as usize),
            (GuestAddress(LOW_RAM), HIGH_RAM as usize),
        ])
        .ok()?;
        build_tables(&mem);
        let m = Mmu::new(GuestMemoryAtomic::new(mem), config).ok()?;
        let maxphyaddr = inp.pick(&[36u8, 40, 46, 47, 48, 52]);
        let gbpages = inp.below(4) != 0;
        let mut d = MmuDriver {
            m,
            states: Vec::new(),
            removed: None,
            mmio: Vec::new(),
            maxphyaddr,
            gbpages,
            hole,
            log: Vec::new(),
            config: config_text,
        };
        for vcpu in 0..vcpus {
            let state = d.paging_state(PagingMode::Level4, 0, 0);
            d.states.push(state);
            d.load(vcpu, state);
        }
        Some(d)
    }

    pub(crate) fn fail(&self, what: &str) -> ! {
        let mut ops = String::new();
        for (i, op) in self.log.iter().enumerate() {
            ops.push_str(&format!("\n  {i}: {op:?}"));
        }
        panic!(
            "{what}\nconfig: {}\nmaxphyaddr {}, gbpages {}\noperations:{ops}",
            self.config, self.maxphyaddr, self.gbpages
        );
    }

    pub(crate) fn guest_mem(&self) -> Arc<GuestMemoryMmap> {
        self.m.memory().memory().into_inner()
    }

    pub(crate) fn audit(&self) {
        if let Err(e) = self.m.audit() {
            self.fail(&format!("audit after the last operation: {e}"));
        }
    }

    /// A paging state for `mode` with CR3 at table `slot` (16: the mode's
    /// own top table) and control bits from `bits`.
    pub(crate) fn paging_state(&self, mode: PagingMode, slot: u64, bits: u16) -> PagingState {
        let top = match mode {
            PagingMode::Off | PagingMode::Level4 => 0,
            PagingMode::Level5 => 7,
            PagingMode::Bits32 => 8,
            PagingMode::Pae => 10,
        };
        let table = table_gpa(if slot >= 16 { top } else { slot });
        let mut cr0 = Cr0::PE | Cr0::ET;
        let mut cr4 = Cr4::empty();
        let mut efer = Efer::empty();
        let b = |i: u32| bits & (1 << i) != 0;
        if mode != PagingMode::Off {
            cr0 |= Cr0::PG;
        }
        if !b(0) {
            cr0 |= Cr0::WP;
        }
        cr4.set(Cr4::SMEP, b(1));
        cr4.set(Cr4::SMAP, b(2));
        efer.set(Efer::NXE, !b(3));
        cr4.set(Cr4::PSE, !b(4));
        cr4.set(Cr4::PKE, b(5));
        let mut cr3 = table;
        match mode {
            PagingMode::Pae => cr4 |= Cr4::PAE,
            PagingMode::Level4 | PagingMode::Level5 => {
                cr4 |= Cr4::PAE;
                efer |= Efer::LME | Efer::LMA;
                cr4.set(Cr4::LA57, mode == PagingMode::Level5);
                if b(6) {
                    // PCID 5, and bit 63: no flush.
                    cr4 |= Cr4::PCIDE;
                    cr3 |= 5 | if b(7) { 1 << 63 } else { 0 };
                }
            }
            _ => {}
        }
        if b(8) {
            // The PWT/PCD bits CR3 may carry.
            cr3 |= 0x18;
        }
        PagingState {
            cr0,
            cr3,
            cr4,
            efer,
            pkru: if b(9) { 0x5555_5550 } else { 0 },
            pkrs: 0,
            cpl: 0,
            eflags_ac: false,
            maxphyaddr: self.maxphyaddr,
            pdptrs: [0; 4],
            gbpages: self.gbpages,
            pse36: true,
        }
    }

    /// Loads `state` on `vcpu` as a CR3 write would, retrying as the
    /// MMU asks. Returns what happened.
    pub(crate) fn load(&mut self, vcpu: usize, mut state: PagingState) -> &'static str {
        if state.mode() == PagingMode::Pae {
            let mem = self.guest_mem();
            match load_pdptrs(&*mem, &state) {
                Ok(p) => state.pdptrs = p,
                // mov cr3 faults: nothing changes.
                Err(WalkError::GeneralProtection) => return "#GP",
                Err(e) => self.fail(&format!("load_pdptrs: {e:?}")),
            }
        }
        for _ in 0..4 {
            match self.m.load_paging_state(vcpu, &state) {
                Ok((_, c)) => {
                    apply(&self.m, c);
                    self.states[vcpu] = state;
                    return "loaded";
                }
                Err(MmuError::OutOfPages) => self.m.flush_completed(),
                Err(e) => self.fail(&format!("load_paging_state on vCPU {vcpu}: {e}")),
            }
        }
        self.fail("load_paging_state: still out of pages after every flush completed");
    }

    /// A guest-virtual address for `vcpu`'s mode.
    pub(crate) fn gva(&self, inp: &mut Input<'_>, vcpu: usize) -> u64 {
        let mode = self.states[vcpu].mode();
        if inp.below(10) == 0 {
            return inp.u64();
        }
        let l5 = if inp.below(8) == 0 { 1 } else { 0 };
        let l4 = inp.pick(&[0u64, 0, 1, 510, 511]);
        let l3 = inp.below(4);
        let l2 = inp.below(8);
        let l1 = inp.below(16);
        let off = inp.pick(&[0u64, 8, 0xff8, 0x800]);
        let gva = (l5 << 48) | (l4 << 39) | (l3 << 30) | (l2 << 21) | (l1 << 12) | off;
        match mode {
            PagingMode::Level5 => sign_extend(gva, 56),
            PagingMode::Level4 => sign_extend(gva, 47),
            _ => gva & 0xffff_ffff,
        }
    }

    pub(crate) fn vcpu(&self, inp: &mut Input<'_>) -> usize {
        inp.below(self.states.len() as u64) as usize
    }

    pub(crate) fn in_hole(&self, vcpu: usize, gva: u64) -> bool {
        // A non-canonical address raises #GP before any paging structure
        // is looked at (SDM vol. 3A, 4.5.1 and 6.15): it is in no hole.
        let index = match self.states[vcpu].mode() {
            PagingMode::Level4 if Gva(gva).is_canonical(47) => (gva >> 39) & 511,
            PagingMode::Level5 if Gva(gva).is_canonical(56) => (gva >> 48) & 511,
            _ => return false,
        };
        self.hole && index == 510
    }

    /// Performs `access` as a CPU on the vCPU's shadow root.
    pub(crate) fn cpu_access(&mut self, vcpu: usize, gva: u64, access: Access) -> Cpu {
        let state = self.states[vcpu];
        match test_utils::cpu_access(&self.m, vcpu, &state, gva, access, 32) {
            Ok(cpu) => cpu,
            Err(CpuError::Mmu(e)) => self.fail(&format!("page_fault({vcpu}, {gva:#x}): {e}")),
            Err(CpuError::Unsettled(trace)) => {
                let trace: Vec<String> = trace
                    .iter()
                    .take(4)
                    .map(|(shadow, outcome, flush)| {
                        format!("shadow {shadow:x?} -> {outcome:?} (flush_all {flush})")
                    })
                    .collect();
                self.fail(&format!(
                    "access to {gva:#x} ({access:?}) on vCPU {vcpu} did not settle after 32 \
                     faults; the first: {}; stats {:?}",
                    trace.join(", "),
                    self.m.stats()
                ))
            }
        }
    }

    /// An access, checked against the guest's own tables when it reached
    /// the MMU.
    pub(crate) fn access(&mut self, vcpu: usize, gva: u64, access: Access, ac: bool) {
        if let Err(e) = self.m.set_eflags_ac(vcpu, ac) {
            self.fail(&format!("set_eflags_ac: {e}"));
        }
        self.states[vcpu].eflags_ac = ac;
        let state = self.states[vcpu];
        let hit = self
            .m
            .shadow_translate(vcpu, Gva(gva))
            .is_some_and(|(_, r)| shadow_allows(&state, r, access));
        let mem = self.guest_mem();
        let expect = if self.in_hole(vcpu, gva) {
            Err(GuestException::PageFault {
                error_code: access.error_code_bits(state.reports_fetch()),
                cr2: Gva(gva),
            })
        } else {
            guest_says(&*mem, &state, gva, access)
        };
        let got = self.cpu_access(vcpu, gva, access);
        self.log.push(Op::Access {
            vcpu,
            gva,
            access,
            ac,
            result: format!("{got:?}, guest says {expect:?}, hit {hit}"),
        });
        if let Cpu::Exit(FaultOutcome::Emulate { gpa }) = got {
            // The VMM emulates the store (the same value again) and
            // reports it.
            let at = GuestAddress(gpa.0 & !7);
            if let Ok(v) = mem.read_obj::<u64>(at) {
                let _ = mem.write_obj(v, at);
                apply(&self.m, self.m.track_write(at, 8));
            }
        }
        if hit {
            // A hit may be a stale TLB-like translation: nothing to check.
            return;
        }
        let ram = |gpa: u64| mem.address_in_range(GuestAddress(gpa));
        let (arena, _, arena_size) = self.m.arena_region();
        let hidden = |gpa: u64| (arena..arena + arena_size).contains(&gpa);
        let mmio = |gpa: u64| self.mmio.iter().any(|&(s, e)| (s..e).contains(&gpa));
        let ok = match (expect, got) {
            (Ok(gpa), Cpu::Done(spa)) => gpa == spa && (ram(gpa) || mmio(gpa)) && !hidden(gpa),
            (Err(e), Cpu::Fault(f)) => e == f,
            (Ok(gpa), Cpu::Exit(FaultOutcome::Mmio { gpa: g })) => {
                g.0 == gpa && (hidden(gpa) || !(ram(gpa) || mmio(gpa)))
            }
            (Ok(gpa), Cpu::Exit(FaultOutcome::Emulate { gpa: g })) => {
                g.0 == gpa && access.kind == AccessKind::Write
            }
            _ => false,
        };
        if !ok {
            self.fail(&format!(
                "access {gva:#x} ({access:?}, AC {ac}) on vCPU {vcpu}: the guest's tables \
                 say {expect:?}, the CPU on shadow tables got {got:?}"
            ));
        }
    }

    /// A guest store of `bytes` at `gpa`: emulated and reported if it hits
    /// a write-protected table, made directly (then `flush`) otherwise.
    pub(crate) fn guest_write(&mut self, vcpu: usize, gpa: u64, bytes: Vec<u8>, flush: Flush) {
        let len = bytes.len() as u64;
        let last = gpa.saturating_add(len.max(1) - 1);
        let emulated = (gpa >> 12..=last >> 12).any(|g| self.m.is_write_protected(Gfn(g)));
        let mem = self.guest_mem();
        // A store to no RAM (an unplugged region) goes nowhere.
        let _ = mem.write_slice(&bytes, GuestAddress(gpa));
        self.log.push(Op::Write {
            vcpu,
            gpa,
            bytes,
            flush,
            emulated,
        });
        if emulated {
            apply(&self.m, self.m.track_write(GuestAddress(gpa), len as usize));
            return;
        }
        let changes = match flush {
            Flush::Tlb => self.m.flush_tlb(vcpu),
            Flush::Invlpg(gva) => self.m.invlpg(vcpu, Gva(gva)),
            Flush::Nothing => Ok(Changes::default()),
        };
        match changes {
            Ok(c) => apply(&self.m, c),
            Err(e) => self.fail(&format!("flush after a write: {e}")),
        }
    }

    pub(crate) fn memory(&mut self, change: MemChange, fault_between: Option<(usize, u64)>) {
        let atomic: &GuestMemoryAtomic<GuestMemoryMmap> = self.m.memory();
        let current = self.guest_mem();
        let high = GuestAddress(LOW_RAM);
        let has_high = current.address_in_range(high);
        let new_map = match change {
            MemChange::Notify => None,
            MemChange::Unplug if has_high => {
                current
                    .remove_region(high, HIGH_RAM)
                    .ok()
                    .map(|(map, gone)| {
                        self.removed = Some(gone);
                        map
                    })
            }
            MemChange::Replug if !has_high => self
                .removed
                .take()
                .and_then(|r| current.insert_region(r).ok()),
            MemChange::Fresh => {
                let base = if has_high {
                    current.remove_region(high, HIGH_RAM).ok().map(|(m, _)| m)
                } else {
                    Some((*current).clone())
                };
                let region = GuestRegionMmap::from_range(high, HIGH_RAM as usize, None).ok();
                match (base, region) {
                    (Some(b), Some(r)) => b.insert_region(Arc::new(r)).ok(),
                    _ => None,
                }
            }
            _ => None,
        };
        if let Some(map) = new_map {
            match atomic.lock() {
                Ok(guard) => guard.replace(map),
                Err(_) => self.fail("guest memory lock poisoned"),
            }
        }
        self.log.push(Op::Memory {
            change,
            fault_between,
        });
        if let Some((vcpu, gva)) = fault_between {
            // A fault that lands between the swap and the notification.
            let _ = self.cpu_access(vcpu, gva, Access::at_cpl(AccessKind::Read, 0));
        }
        apply(&self.m, self.m.memory_changed());
    }

    pub(crate) fn step(&mut self, inp: &mut Input<'_>) {
        match inp.below(16) {
            0..=2 => {
                let vcpu = self.vcpu(inp);
                let slot = inp.u8();
                let index = if inp.bool() {
                    inp.below(512)
                } else {
                    inp.below(16)
                };
                let wide = inp.below(4) != 0;
                let value = mmu_entry(inp);
                let gpa = table_gpa(slot.into()) + if wide { 8 * index } else { 4 * index };
                let bytes = if wide {
                    value.to_le_bytes().to_vec()
                } else {
                    (value as u32).to_le_bytes().to_vec()
                };
                let flush = match inp.below(3) {
                    0 => Flush::Tlb,
                    1 => Flush::Invlpg(self.gva(inp, vcpu)),
                    _ => Flush::Nothing,
                };
                self.guest_write(vcpu, gpa, bytes, flush);
            }
            3 => {
                // An odd store: any length 1..=16 at any offset, possibly
                // across a page boundary.
                let vcpu = self.vcpu(inp);
                let gpa = table_gpa(inp.u8().into()) + inp.below(4096);
                let len = 1 + inp.below(16) as usize;
                let bytes: Vec<u8> = (0..len).map(|_| inp.u8()).collect();
                let flush = if inp.bool() {
                    Flush::Tlb
                } else {
                    Flush::Nothing
                };
                self.guest_write(vcpu, gpa, bytes, flush);
            }
            4 => {
                // A write the VMM reports without one having happened (or
                // to a page that is no table): must change nothing visible.
                let gpa = match inp.below(4) {
                    0 => inp.u64() & ((1 << 52) - 1),
                    1 => 0x10_0000 + inp.below(1 << 16),
                    _ => table_gpa(inp.u8().into()) + inp.below(4096),
                };
                let len = inp.pick(&[0usize, 1, 2, 3, 4, 5, 7, 8, 9, 12, 15, 16, 4095, 4096, 8193]);
                self.log.push(Op::TrackWrite { gpa, len });
                apply(&self.m, self.m.track_write(GuestAddress(gpa), len));
            }
            5..=9 => {
                let vcpu = self.vcpu(inp);
                let gva = self.gva(inp, vcpu);
                let access = explicit_access(inp);
                let ac = inp.below(4) == 0;
                self.access(vcpu, gva, access, ac);
            }
            10 => {
                let vcpu = self.vcpu(inp);
                let gva = self.gva(inp, vcpu);
                self.log.push(Op::Invlpg { vcpu, gva });
                match self.m.invlpg(vcpu, Gva(gva)) {
                    Ok(c) => apply(&self.m, c),
                    Err(e) => self.fail(&format!("invlpg: {e}")),
                }
            }
            11 => {
                let vcpu = self.vcpu(inp);
                if inp.bool() {
                    self.log.push(Op::FlushTlb { vcpu });
                    match self.m.flush_tlb(vcpu) {
                        Ok(c) => apply(&self.m, c),
                        Err(e) => self.fail(&format!("flush_tlb: {e}")),
                    }
                } else {
                    let gva = self.gva(inp, vcpu);
                    self.log.push(Op::Prefetch { vcpu, gva });
                    match self.m.prefetch(vcpu, Gva(gva)) {
                        Ok(c) => apply(&self.m, c),
                        Err(e) => self.fail(&format!("prefetch: {e}")),
                    }
                }
            }
            12 | 13 => {
                let vcpu = self.vcpu(inp);
                let mode = match inp.below(16) {
                    0..=6 => PagingMode::Level4,
                    7..=9 => PagingMode::Bits32,
                    10..=12 => PagingMode::Pae,
                    13 | 14 => PagingMode::Level5,
                    _ => PagingMode::Off,
                };
                let slot = inp.below(24);
                let bits = inp.u16();
                let state = self.paging_state(mode, slot, bits);
                self.log.push(Op::LoadCr3 {
                    vcpu,
                    state: Box::new(state),
                    result: "failed",
                });
                let result = self.load(vcpu, state);
                if let Some(Op::LoadCr3 { result: r, .. }) = self.log.last_mut() {
                    *r = result;
                }
            }
            14 => {
                let vcpu = self.vcpu(inp);
                let gva = self.gva(inp, vcpu);
                let access = explicit_access(inp);
                self.log.push(Op::GvaToGpa { vcpu, gva, access });
                let state = self.states[vcpu];
                let mem = self.guest_mem();
                let expect = peek(&*mem, &state, Gva(gva), access).map(|w| w.gpa);
                match self.m.gva_to_gpa(vcpu, Gva(gva), access) {
                    Ok(gpa) if expect == Ok(gpa) => {}
                    Err(MmuError::Walk(e)) if expect == Err(e) => {}
                    other => self.fail(&format!(
                        "gva_to_gpa({gva:#x}, {access:?}) = {other:?}, the walker says {expect:?}"
                    )),
                }
            }
            _ => {
                if inp.below(4) == 0 {
                    let (start, end) = match inp.below(4) {
                        0 => (LOW_RAM + HIGH_RAM, LOW_RAM + HIGH_RAM + (2 << 20)),
                        1 => (1 << 32, (1 << 32) + (1 << 20)),
                        2 => (ARENA_BASE, ARENA_BASE + (1 << 20)),
                        _ => (LOW_RAM, LOW_RAM + HIGH_RAM),
                    };
                    self.log.push(Op::RegisterMmio { start, end });
                    self.mmio.push((start, end));
                    self.m.register_mmio(start..end);
                } else {
                    let change = match inp.below(4) {
                        0 => MemChange::Notify,
                        1 => MemChange::Unplug,
                        2 => MemChange::Replug,
                        _ => MemChange::Fresh,
                    };
                    let between = if inp.bool() {
                        let vcpu = self.vcpu(inp);
                        Some((vcpu, self.gva(inp, vcpu)))
                    } else {
                        None
                    };
                    self.memory(change, between);
                }
            }
        }
    }
}

impl fmt::Debug for MmuDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MmuDriver")
            .field("config", &self.config)
            .field("ops", &self.log.len())
            .finish_non_exhaustive()
    }
}

/// Most operations one input runs.
pub(crate) const MAX_OPS: usize = 96;

/// Fuzzes the [`ShadowMmu`] implementation: a configuration (tiny page
/// caps, prefetch windows, unsync on/off, 1 or 2 vCPUs, with or without a
/// hole), then up to 96 operations: guest table writes (emulated and
/// reported through `track_write` when the page is write-protected, direct
/// and followed by a flush, an `invlpg` or nothing otherwise), odd and
/// spurious `track_write`s, accesses through a CPU-like fault loop, `invlpg`,
/// TLB flushes, prefetches, `gva_to_gpa`, CR3 loads in every paging mode,
/// memory unplug, replug and remap with `memory_changed`, and MMIO
/// registration.
///
/// After every operation the MMU's own [`ShadowMmu::audit`] must pass, and
/// an access that reached the MMU must get exactly the guest walker's
/// verdict; otherwise the harness panics with the operation log.
pub fn mmu_ops(data: &[u8]) {
    let mut inp = Input::new(data);
    let Some(mut d) = MmuDriver::new(&mut inp) else {
        return;
    };
    d.audit();
    for _ in 0..MAX_OPS {
        if inp.is_empty() {
            break;
        }
        d.step(&mut inp);
        d.audit();
    }
}
