// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! An independent reference model of x86 linear-address translation, written
//! from the Intel SDM, volume 3A, chapter 4 ("Paging"), to check the walker
//! against.
//!
//! The model shares no code with `shadow_mmu::walker` or `shadow_mmu::pte`:
//! it takes the architectural registers as raw integers, decodes every bit
//! itself and reads page tables from its own memory model, [`Memory`]. It is
//! written to be read next to the SDM rather than to be fast; every rule
//! names the section or table it comes from.
//!
//! [`glue`] converts between the crate's public types and this model and
//! compares results; it holds no paging logic.

#![allow(dead_code)]

pub mod glue;

// ---------------------------------------------------------------------------
// Architectural bit positions (SDM 2.5 "Control Registers", 2.2.1 "IA32_EFER",
// 4.7 "Page-Fault Exceptions", Tables 4-4 to 4-20 for the entry formats).
// ---------------------------------------------------------------------------

/// CR0.WP (bit 16): supervisor writes honour read-only pages (SDM 2.5, 4.6.1).
pub const CR0_WP: u64 = 1 << 16;
/// CR0.PG (bit 31): paging enabled (SDM 2.5, 4.1.1).
pub const CR0_PG: u64 = 1 << 31;
/// CR4.PSE (bit 4): 4-MByte pages with 32-bit paging (SDM 4.3).
pub const CR4_PSE: u64 = 1 << 4;
/// CR4.PAE (bit 5): PAE or IA-32e paging (SDM 4.1.1).
pub const CR4_PAE: u64 = 1 << 5;
/// CR4.LA57 (bit 12): 5-level paging (SDM 4.1.1).
pub const CR4_LA57: u64 = 1 << 12;
/// CR4.SMEP (bit 20) (SDM 4.6.1).
pub const CR4_SMEP: u64 = 1 << 20;
/// CR4.SMAP (bit 21) (SDM 4.6.1).
pub const CR4_SMAP: u64 = 1 << 21;
/// CR4.PKE (bit 22): protection keys for user-mode pages (SDM 4.6.2).
pub const CR4_PKE: u64 = 1 << 22;
/// CR4.PKS (bit 24): protection keys for supervisor-mode pages (SDM 4.6.2).
pub const CR4_PKS: u64 = 1 << 24;
/// IA32_EFER.LMA (bit 10): IA-32e mode active (SDM 4.1.1).
pub const EFER_LMA: u64 = 1 << 10;
/// IA32_EFER.NXE (bit 11): execute-disable enabled (SDM 4.1.3, 4.6).
pub const EFER_NXE: u64 = 1 << 11;

/// Present (bit 0 of every paging-structure entry).
pub const P: u64 = 1 << 0;
/// Read/write (bit 1).
pub const RW: u64 = 1 << 1;
/// User/supervisor (bit 2).
pub const US: u64 = 1 << 2;
/// Accessed (bit 5).
pub const A: u64 = 1 << 5;
/// Dirty (bit 6), in entries that map a page.
pub const D: u64 = 1 << 6;
/// Page size (bit 7), in PDEs and IA-32e PDPTEs.
pub const PS: u64 = 1 << 7;
/// Execute-disable (bit 63), in 8-byte entries.
pub const XD: u64 = 1 << 63;

/// Page-fault error code bits (SDM 4.7, Figure 4-12).
pub const PF_P: u32 = 1 << 0;
/// The access was a write.
pub const PF_W: u32 = 1 << 1;
/// The access was a user-mode access.
pub const PF_U: u32 = 1 << 2;
/// A reserved bit was set in a paging-structure entry.
pub const PF_RSVD: u32 = 1 << 3;
/// The access was an instruction fetch.
pub const PF_ID: u32 = 1 << 4;
/// A protection key denied the access.
pub const PF_PK: u32 = 1 << 5;

/// Bits `hi..=lo` set (empty when `hi < lo`).
pub const fn bits(hi: u32, lo: u32) -> u64 {
    if hi < lo {
        0
    } else {
        let width = hi - lo + 1;
        let ones = if width >= 64 {
            u64::MAX
        } else {
            (1u64 << width) - 1
        };
        ones << lo
    }
}

// ---------------------------------------------------------------------------
// Inputs.
// ---------------------------------------------------------------------------

/// The registers and CPUID facts that decide translation, as raw values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Regs {
    /// CR0.
    pub cr0: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// IA32_EFER.
    pub efer: u64,
    /// PKRU.
    pub pkru: u32,
    /// IA32_PKRS.
    pub pkrs: u32,
    /// EFLAGS.AC.
    pub eflags_ac: bool,
    /// CPUID.80000008H:EAX[7:0].
    pub maxphyaddr: u32,
    /// The four PDPTE registers of PAE paging.
    pub pdptrs: [u64; 4],
    /// CPUID.80000001H:EDX.Page1GB.
    pub gbpages: bool,
    /// CPUID.01H:EDX.PSE-36.
    pub pse36: bool,
}

/// What the access does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Data read.
    Read,
    /// Data write.
    Write,
    /// Instruction fetch.
    Fetch,
}

/// One access to translate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Acc {
    /// Read, write or fetch.
    pub kind: Kind,
    /// Made at CPL 3.
    pub user: bool,
    /// An implicit supervisor-mode access (descriptor tables, TSS...).
    pub implicit: bool,
}

impl Acc {
    /// SDM 4.6.1: "Some operations implicitly access system data structures
    /// ...; the resulting accesses ... are supervisor-mode accesses regardless
    /// of CPL." Everything else at CPL 3 is a user-mode access.
    pub fn user_mode(self) -> bool {
        self.user && !self.implicit
    }
}

/// The paging mode (SDM 4.1.1, Table 4-1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// CR0.PG = 0.
    Off,
    /// 32-bit paging.
    Bits32,
    /// PAE paging.
    Pae,
    /// 4-level paging.
    Level4,
    /// 5-level paging.
    Level5,
}

/// SDM 4.1.1 / Table 4-1: the paging mode is selected by CR0.PG, CR4.PAE,
/// IA32_EFER.LME (here: LMA, as the mode is in use) and CR4.LA57.
pub fn mode_of(r: &Regs) -> Mode {
    if r.cr0 & CR0_PG == 0 {
        Mode::Off
    } else if r.cr4 & CR4_PAE == 0 {
        Mode::Bits32
    } else if r.efer & EFER_LMA == 0 {
        Mode::Pae
    } else if r.cr4 & CR4_LA57 != 0 {
        Mode::Level5
    } else {
        Mode::Level4
    }
}

// ---------------------------------------------------------------------------
// Memory model: a few RAM regions, byte vectors, little-endian.
// ---------------------------------------------------------------------------

/// One RAM region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Region {
    /// First guest-physical address.
    pub base: u64,
    /// Contents.
    pub bytes: Vec<u8>,
}

/// Guest-physical memory: RAM where a region covers the address, nothing
/// elsewhere.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    /// The regions, not overlapping.
    pub regions: Vec<Region>,
}

impl Memory {
    /// Zeroed RAM over `ranges` (base, size).
    pub fn new(ranges: &[(u64, usize)]) -> Memory {
        Memory {
            regions: ranges
                .iter()
                .map(|&(base, size)| Region {
                    base,
                    bytes: vec![0; size],
                })
                .collect(),
        }
    }

    #[inline]
    fn locate(&self, gpa: u64, len: usize) -> Option<(usize, usize)> {
        self.regions.iter().enumerate().find_map(|(i, r)| {
            let off = gpa.checked_sub(r.base)?;
            let off = usize::try_from(off).ok()?;
            (off.checked_add(len)? <= r.bytes.len()).then_some((i, off))
        })
    }

    /// Whether all of `gpa..gpa+len` is RAM in one region.
    pub fn is_ram(&self, gpa: u64, len: usize) -> bool {
        self.locate(gpa, len).is_some()
    }

    /// Reads a little-endian value of `len` (4 or 8) bytes.
    #[inline]
    pub fn read(&self, gpa: u64, len: usize) -> Option<u64> {
        let (i, off) = self.locate(gpa, len)?;
        let b = &self.regions[i].bytes[off..off + len];
        Some(match b.try_into() {
            Ok(b8) => u64::from_le_bytes(b8),
            Err(_) => {
                let mut buf = [0u8; 8];
                buf[..len].copy_from_slice(b);
                u64::from_le_bytes(buf)
            }
        })
    }

    /// Writes the low `len` (4 or 8) bytes of `value`; false outside RAM.
    pub fn write(&mut self, gpa: u64, len: usize, value: u64) -> bool {
        match self.locate(gpa, len) {
            Some((i, off)) => {
                self.regions[i].bytes[off..off + len].copy_from_slice(&value.to_le_bytes()[..len]);
                true
            }
            None => false,
        }
    }

    /// Reads a u64 (panics outside RAM: for test set-up code).
    pub fn read_u64(&self, gpa: u64) -> u64 {
        self.read(gpa, 8).expect("u64 outside the model's RAM")
    }

    /// Writes a u64 (panics outside RAM: for test set-up code).
    pub fn write_u64(&mut self, gpa: u64, value: u64) {
        assert!(self.write(gpa, 8, value), "u64 outside the model's RAM");
    }

    /// Reads a u32 (panics outside RAM: for test set-up code).
    pub fn read_u32(&self, gpa: u64) -> u32 {
        self.read(gpa, 4).expect("u32 outside the model's RAM") as u32
    }

    /// Writes a u32 (panics outside RAM: for test set-up code).
    pub fn write_u32(&mut self, gpa: u64, value: u32) {
        assert!(
            self.write(gpa, 4, value as u64),
            "u32 outside the model's RAM"
        );
    }
}

// ---------------------------------------------------------------------------
// Outputs.
// ---------------------------------------------------------------------------

/// A successful translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The paging mode.
    pub mode: Mode,
    /// Levels of the hierarchy (0 with paging off).
    pub root_level: u8,
    /// Level of the entry that maps the page (0 with paging off).
    pub level: u8,
    /// `ptes[l - 1]`: the entry used at level `l`, after the A/D update.
    pub ptes: [u64; 5],
    /// `pte_gpas[l - 1]`: where that entry lives.
    pub pte_gpas: [u64; 5],
    /// `table_gfns[l - 1]`: frame of the table holding that entry.
    pub table_gfns: [u64; 5],
    /// R/W = 1 in every entry that has an R/W flag.
    pub write: bool,
    /// U/S = 1 in every entry that has a U/S flag.
    pub user: bool,
    /// XD = 0 in every entry, or XD not in use.
    pub exec: bool,
    /// The physical address.
    pub gpa: u64,
    /// Size of the page.
    pub page_size: u64,
}

/// The outcome of one access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Translated (and A/D updated).
    Ok(Translation),
    /// #PF with this error code.
    PageFault(u32),
    /// #GP: the linear address is not canonical (IA-32e) or not a 32-bit
    /// address (legacy modes).
    Gp,
}

// ---------------------------------------------------------------------------
// PAE PDPTE loading (SDM 4.4.1).
// ---------------------------------------------------------------------------

/// Reserved bits of a PAE PDPTE (SDM Table 4-8): 2:1, 8:5 and 63:MAXPHYADDR.
pub fn pae_pdpte_reserved(r: &Regs) -> u64 {
    bits(2, 1) | bits(8, 5) | bits(63, r.maxphyaddr)
}

/// SDM 4.4.1: with PAE paging, loading CR3 loads the four PDPTEs from the
/// 32-byte aligned table at CR3[31:5]; if any of them has P = 1 and a
/// reserved bit set, the load causes #GP (returned as `None`). A table
/// outside RAM is also `None` (the contract's choice: such a load cannot
/// complete).
pub fn load_pdptrs(mem: &Memory, r: &Regs) -> Option<[u64; 4]> {
    let base = r.cr3 & bits(31, 5);
    let mut out = [0u64; 4];
    for (i, slot) in out.iter_mut().enumerate() {
        let e = mem.read(base + 8 * i as u64, 8)?;
        if e & P != 0 && e & pae_pdpte_reserved(r) != 0 {
            return None;
        }
        *slot = e;
    }
    Some(out)
}

// ---------------------------------------------------------------------------
// Translation (SDM 4.3, 4.4.2, 4.5, 4.6, 4.7, 4.8).
// ---------------------------------------------------------------------------

fn maxpa(r: &Regs) -> u32 {
    assert!(
        (32..=52).contains(&r.maxphyaddr),
        "the model takes MAXPHYADDR in 32..=52"
    );
    r.maxphyaddr
}

/// The physical-address width of a 4-MByte page with 32-bit paging
/// (SDM 4.3, Table 4-4 and its note): M = min(MAXPHYADDR, 40) with PSE-36,
/// 32 without it.
fn pse_width(r: &Regs) -> u32 {
    if r.pse36 {
        maxpa(r).min(40)
    } else {
        32
    }
}

/// Whether this entry maps a page (is the last one of the walk).
fn is_leaf(mode: Mode, r: &Regs, level: u8, e: u64) -> bool {
    match (mode, level) {
        (_, 1) => true,
        // SDM 4.3: with CR4.PSE = 0 the PDE's bit 7 is ignored and the PDE
        // always references a page table.
        (Mode::Bits32, 2) => r.cr4 & CR4_PSE != 0 && e & PS != 0,
        // SDM 4.4.2 / 4.5.4: PS in a PDE is honoured whatever CR4.PSE says.
        (_, 2) => e & PS != 0,
        // SDM 4.5.4: an IA-32e PDPTE with PS = 1 maps a 1-GByte page. (Without
        // 1-GByte page support PS is reserved, see `reserved`.)
        (Mode::Level4 | Mode::Level5, 3) => e & PS != 0,
        _ => false,
    }
}

/// The reserved bits of a present entry at `level` (SDM 4.3 Tables 4-4 to
/// 4-7, 4.4.2 Tables 4-9 to 4-11, 4.5.4 Tables 4-14 to 4-20).
fn reserved(mode: Mode, r: &Regs, level: u8, e: u64) -> u64 {
    let m = maxpa(r);
    let nxe = r.efer & EFER_NXE != 0;
    // Bit 63 is XD only with IA32_EFER.NXE = 1; otherwise reserved.
    let xd_rsvd = if nxe { 0 } else { XD };
    match mode {
        Mode::Off => 0,
        Mode::Bits32 => {
            // Table 4-4: a PDE mapping a 4-MByte page uses bits (M-20):13 for
            // physical-address bits (M-1):32 and reserves bits 21:(M-19).
            // Tables 4-5, 4-6: no reserved bits in other 32-bit entries.
            if level == 2 && is_leaf(mode, r, level, e) {
                let w = pse_width(r);
                bits(21, 13 + (w - 32))
            } else {
                0
            }
        }
        Mode::Pae => match level {
            // The PDPTEs were checked when loaded (Table 4-8); the walk uses
            // the registers as they are.
            3 => 0,
            // Tables 4-9, 4-10, 4-11: bits 62:M reserved, 63 unless XD.
            2 if e & PS != 0 => bits(62, m) | xd_rsvd | bits(20, 13),
            _ => bits(62, m) | xd_rsvd,
        },
        Mode::Level4 | Mode::Level5 => {
            // Tables 4-14 to 4-20: bits 51:M reserved, 63 unless XD.
            let common = bits(51, m) | xd_rsvd;
            match level {
                // Tables 4-14 (PML5E) and 4-15 (PML4E): bit 7 reserved.
                5 | 4 => common | PS,
                3 if e & PS != 0 => {
                    if r.gbpages {
                        // Table 4-16: a 1-GByte page reserves bits 29:13.
                        common | bits(29, 13)
                    } else {
                        // 4.1.4 / Table 4-17: without 1-GByte pages, PS in a
                        // PDPTE is reserved.
                        common | PS
                    }
                }
                // Table 4-18: a 2-MByte page reserves bits 20:13.
                2 if e & PS != 0 => common | bits(20, 13),
                _ => common,
            }
        }
    }
}

/// The index of the entry for `gva` in the table of `level`.
fn index(mode: Mode, level: u8, gva: u64) -> u64 {
    match mode {
        // SDM 4.3: 10-bit indices, bits 31:22 and 21:12.
        Mode::Bits32 => (gva >> (12 + 10 * (level as u32 - 1))) & 0x3ff,
        // SDM 4.4.2 / 4.5.4: 9-bit indices, bits 12+9(l-1) upwards; for PAE
        // the PDPTE index is bits 31:30.
        _ => (gva >> (12 + 9 * (level as u32 - 1))) & 0x1ff,
    }
}

/// The address of the table or page an entry references, without the offset.
fn frame_addr(mode: Mode, r: &Regs, level: u8, e: u64, leaf: bool) -> u64 {
    let m = maxpa(r);
    match mode {
        Mode::Bits32 if leaf && level == 2 => {
            // Table 4-4: bits 31:22 give address bits 31:22, bits (M-20):13
            // give address bits (M-1):32.
            let w = pse_width(r);
            let high = (e >> 13) & ((1u64 << (w - 32)) - 1);
            (e & bits(31, 22)) | (high << 32)
        }
        // Tables 4-5, 4-6: bits 31:12.
        Mode::Bits32 => e & bits(31, 12),
        _ => {
            let low = match (leaf, level) {
                (true, 3) => 30,
                (true, 2) => 21,
                _ => 12,
            };
            e & bits(m - 1, low)
        }
    }
}

/// Page size of a leaf at `level`.
fn page_size(mode: Mode, level: u8) -> u64 {
    match (mode, level) {
        (_, 1) => 1 << 12,
        (Mode::Bits32, 2) => 1 << 22,
        (_, 2) => 1 << 21,
        _ => 1 << 30,
    }
}

/// Whether a linear address is valid for the mode (SDM 3.3.7.1 canonical
/// addressing, 4.5 "linear addresses are 48 / 57 bits"; legacy modes have
/// 32-bit linear addresses).
fn linear_ok(mode: Mode, gva: u64) -> bool {
    let canonical = |width: u32| {
        let top = (gva as i64) >> (width - 1);
        top == 0 || top == -1
    };
    match mode {
        Mode::Off | Mode::Bits32 | Mode::Pae => gva <= 0xffff_ffff,
        Mode::Level4 => canonical(48),
        Mode::Level5 => canonical(57),
    }
}

/// One entry the walk used.
#[derive(Clone, Copy, Debug)]
struct Used {
    level: u8,
    value: u64,
    gpa: u64,
    table_gfn: u64,
    size: usize,
    /// A PAE PDPTE register: no A flag, no R/W, U/S or XD (SDM 4.4.1, 4.8).
    pdpte_register: bool,
}

/// Translates `gva` for `acc` and, when it succeeds, sets the accessed and
/// dirty flags in `mem` (SDM 4.8).
pub fn translate(mem: &mut Memory, r: &Regs, gva: u64, acc: Acc) -> Outcome {
    let mode = mode_of(r);
    if !linear_ok(mode, gva) {
        return Outcome::Gp;
    }
    if mode == Mode::Off {
        // SDM 4.1.1: with paging disabled linear addresses are physical.
        return Outcome::Ok(Translation {
            mode,
            root_level: 0,
            level: 0,
            ptes: [0; 5],
            pte_gpas: [0; 5],
            table_gfns: [0; 5],
            write: true,
            user: true,
            exec: true,
            gpa: gva,
            page_size: 1 << 12,
        });
    }

    let m = maxpa(r);
    let user_mode = acc.user_mode();
    let long = matches!(mode, Mode::Level4 | Mode::Level5);
    // SDM 4.1.3 / 4.6: the XD flag is used only with PAE or IA-32e paging and
    // IA32_EFER.NXE = 1.
    let xd_in_use = r.efer & EFER_NXE != 0 && mode != Mode::Bits32;

    // SDM 4.7: W reflects a write, U a user-mode access, I/D an instruction
    // fetch, the latter only "if CR4.SMEP = 1 or (CR4.PAE = 1 and
    // IA32_EFER.NXE = 1)" -- i.e. with XD in use or SMEP.
    let mut ec = 0;
    if acc.kind == Kind::Write {
        ec |= PF_W;
    }
    if user_mode {
        ec |= PF_U;
    }
    if acc.kind == Kind::Fetch && (xd_in_use || r.cr4 & CR4_SMEP != 0) {
        ec |= PF_ID;
    }

    let (root_level, entry_size): (u8, usize) = match mode {
        Mode::Bits32 => (2, 4),
        Mode::Pae => (3, 8),
        Mode::Level4 => (4, 8),
        Mode::Level5 => (5, 8),
        Mode::Off => unreachable!(),
    };
    // SDM 4.3: CR3[31:12] locates the page directory. SDM 4.5.2: CR3[M-1:12]
    // locates the PML4 / PML5 table (bits 11:0 are flags or a PCID).
    let mut table = match mode {
        Mode::Bits32 => r.cr3 & bits(31, 12),
        Mode::Pae => 0, // the PDPTEs are registers
        _ => r.cr3 & bits(m - 1, 12),
    };

    // The entries used, root first (at most five; a fixed array keeps the
    // model allocation-free, which matters for the big matrix).
    let mut used_buf = [None::<Used>; 5];
    let mut n_used = 0;
    let mut level = root_level;
    loop {
        let entry = if mode == Mode::Pae && level == 3 {
            // SDM 4.4.2: the PDPTE is the register selected by bits 31:30.
            let i = (gva >> 30) & 3;
            let pdpt = r.cr3 & bits(31, 5);
            Used {
                level,
                value: r.pdptrs[i as usize],
                gpa: pdpt + 8 * i,
                table_gfn: pdpt >> 12,
                size: 8,
                pdpte_register: true,
            }
        } else {
            let gpa = table + entry_size as u64 * index(mode, level, gva);
            match mem.read(gpa, entry_size) {
                Some(value) => Used {
                    level,
                    value,
                    gpa,
                    table_gfn: table >> 12,
                    size: entry_size,
                    pdpte_register: false,
                },
                // A table that is not RAM reads as nothing: the contract
                // reports it like a not-present entry.
                None => return Outcome::PageFault(ec),
            }
        };
        // SDM 4.3 / 4.4.2 / 4.5.4: an entry with P = 0 ends the walk with a
        // page fault whose P flag is 0 (SDM 4.7).
        if entry.value & P == 0 {
            return Outcome::PageFault(ec);
        }
        // SDM 4.7: a reserved bit set in any entry used gives a page fault
        // with P = 1 and RSVD = 1.
        if entry.value & reserved(mode, r, level, entry.value) != 0 {
            return Outcome::PageFault(ec | PF_P | PF_RSVD);
        }
        let leaf = is_leaf(mode, r, level, entry.value);
        used_buf[n_used] = Some(entry);
        n_used += 1;
        if leaf {
            break;
        }
        table = frame_addr(mode, r, level, entry.value, false);
        level -= 1;
    }

    let used = || used_buf[..n_used].iter().flatten();
    let leaf = *used().last().expect("the walk used at least one entry");

    // SDM 4.6.1: an address is a user-mode address if U/S = 1 in every entry
    // controlling the translation, and writable if R/W = 1 in every one;
    // with XD in use it is executable if XD = 0 in every one. PAE PDPTEs have
    // none of these flags (Table 4-8).
    let mut w = true;
    let mut u = true;
    let mut x = true;
    for e in used().filter(|e| !e.pdpte_register) {
        w &= e.value & RW != 0;
        u &= e.value & US != 0;
        if xd_in_use {
            x &= e.value & XD == 0;
        }
    }

    let wp = r.cr0 & CR0_WP != 0;
    let smap = r.cr4 & CR4_SMAP != 0;
    let smep = r.cr4 & CR4_SMEP != 0;
    // SDM 4.6.1: SMAP lets explicit supervisor-mode accesses reach user-mode
    // addresses only with EFLAGS.AC = 1; implicit ones never.
    let smap_blocks = smap && (acc.implicit || !r.eflags_ac);

    let denied = match (acc.kind, user_mode) {
        // User-mode accesses (SDM 4.6.1): reads need a user-mode address.
        (Kind::Read, true) => !u,
        // Writes also need R/W = 1 everywhere, whatever CR0.WP says.
        (Kind::Write, true) => !u || !w,
        // Fetches need a user-mode address that is executable.
        (Kind::Fetch, true) => !u || !x,
        // Supervisor-mode reads: any supervisor-mode address; user-mode
        // addresses unless SMAP blocks them.
        (Kind::Read, false) => u && smap_blocks,
        // Supervisor-mode writes: SMAP as for reads; read-only translations
        // fault only with CR0.WP = 1.
        (Kind::Write, false) => (u && smap_blocks) || (!w && wp),
        // Supervisor-mode fetches: never from user-mode addresses with SMEP;
        // otherwise only executable ones.
        (Kind::Fetch, false) => (u && smep) || !x,
    };

    // SDM 4.6.2: protection keys, IA-32e paging only, data accesses only.
    // The key is bits 62:59 of the entry that maps the page. PKRU governs
    // user-mode addresses when CR4.PKE = 1, IA32_PKRS supervisor-mode
    // addresses when CR4.PKS = 1; AD_i (bit 2i) forbids every data access,
    // WD_i (bit 2i+1) forbids user-mode writes and supervisor-mode writes
    // when CR0.WP = 1. SDM 4.7: PK is set when the rights deny the access
    // (reported together with any other protection violation, as KVM does).
    let mut pk = false;
    if long && acc.kind != Kind::Fetch {
        let key = (leaf.value >> 59) & 0xf;
        let rights = if u && r.cr4 & CR4_PKE != 0 {
            Some(r.pkru)
        } else if !u && r.cr4 & CR4_PKS != 0 {
            Some(r.pkrs)
        } else {
            None
        };
        if let Some(reg) = rights {
            let ad = (reg >> (2 * key)) & 1 != 0;
            let wd = (reg >> (2 * key + 1)) & 1 != 0;
            pk = ad || (acc.kind == Kind::Write && wd && (user_mode || wp));
        }
    }

    if denied || pk {
        // SDM 4.7: P = 1 for a protection violation.
        let mut code = ec | PF_P;
        if pk {
            code |= PF_PK;
        }
        return Outcome::PageFault(code);
    }

    // SDM 4.8: the processor sets A in every paging-structure entry used for
    // the translation and D in the entry that maps the page when the access
    // writes. (PAE PDPTEs have no A flag; the contract sets nothing on a
    // faulting walk, so this runs only after every check passed.)
    let mut t = Translation {
        mode,
        root_level,
        level: leaf.level,
        ptes: [0; 5],
        pte_gpas: [0; 5],
        table_gfns: [0; 5],
        write: w,
        user: u,
        exec: x,
        gpa: 0,
        page_size: page_size(mode, leaf.level),
    };
    for e in used() {
        let mut v = e.value;
        if !e.pdpte_register {
            v |= A;
            if e.level == leaf.level && acc.kind == Kind::Write {
                v |= D;
            }
            if v != e.value {
                let ok = mem.write(e.gpa, e.size, v);
                assert!(ok, "an entry that was read must be writable");
            }
        }
        let i = e.level as usize - 1;
        t.ptes[i] = v;
        t.pte_gpas[i] = e.gpa;
        t.table_gfns[i] = e.table_gfn;
    }
    let size = t.page_size;
    t.gpa = frame_addr(mode, r, leaf.level, leaf.value, true) | (gva & (size - 1));
    Outcome::Ok(t)
}

/// The error-code bits the model reports for a fetch in this state (SDM 4.7),
/// exported so tests can check the crate's own helper against it.
pub fn reports_fetch(r: &Regs) -> bool {
    (r.efer & EFER_NXE != 0 && !matches!(mode_of(r), Mode::Off | Mode::Bits32))
        || r.cr4 & CR4_SMEP != 0
}
