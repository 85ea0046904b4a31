// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The x86 architectural state that decides how a linear address is
//! translated: control registers, EFER, protection-key registers, the paging
//! mode, page-fault error codes and the kinds of memory access.
//!
//! Bit positions are those of the Intel SDM, volume 3, chapter 4 ("Paging").

use bitflags::bitflags;

bitflags! {
    /// Control register 0.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct Cr0: u64 {
        /// Protection enable.
        const PE = 1 << 0;
        /// Monitor coprocessor.
        const MP = 1 << 1;
        /// x87 emulation.
        const EM = 1 << 2;
        /// Task switched.
        const TS = 1 << 3;
        /// Extension type.
        const ET = 1 << 4;
        /// Numeric error.
        const NE = 1 << 5;
        /// Write protect: supervisor writes honour read-only pages.
        const WP = 1 << 16;
        /// Alignment mask.
        const AM = 1 << 18;
        /// Not write-through.
        const NW = 1 << 29;
        /// Cache disable.
        const CD = 1 << 30;
        /// Paging.
        const PG = 1 << 31;
        /// Bits this crate does not interpret are kept, not dropped.
        const _ = !0;
    }
}

bitflags! {
    /// Control register 4.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct Cr4: u64 {
        /// Virtual-8086 mode extensions.
        const VME = 1 << 0;
        /// Protected-mode virtual interrupts.
        const PVI = 1 << 1;
        /// Time stamp disable.
        const TSD = 1 << 2;
        /// Debugging extensions.
        const DE = 1 << 3;
        /// Page size extensions: 4 MiB pages in 32-bit paging.
        const PSE = 1 << 4;
        /// Physical address extension.
        const PAE = 1 << 5;
        /// Machine-check enable.
        const MCE = 1 << 6;
        /// Global pages.
        const PGE = 1 << 7;
        /// Performance-counter enable.
        const PCE = 1 << 8;
        /// OS FXSAVE/FXRSTOR support.
        const OSFXSR = 1 << 9;
        /// OS unmasked SIMD exceptions.
        const OSXMMEXCPT = 1 << 10;
        /// User-mode instruction prevention.
        const UMIP = 1 << 11;
        /// 57-bit linear addresses (5-level paging).
        const LA57 = 1 << 12;
        /// VMX enable.
        const VMXE = 1 << 13;
        /// SMX enable.
        const SMXE = 1 << 14;
        /// FSGSBASE instructions.
        const FSGSBASE = 1 << 16;
        /// Process-context identifiers.
        const PCIDE = 1 << 17;
        /// XSAVE enable.
        const OSXSAVE = 1 << 18;
        /// Supervisor-mode execution prevention.
        const SMEP = 1 << 20;
        /// Supervisor-mode access prevention.
        const SMAP = 1 << 21;
        /// Protection keys for user-mode pages.
        const PKE = 1 << 22;
        /// Control-flow enforcement.
        const CET = 1 << 23;
        /// Protection keys for supervisor-mode pages.
        const PKS = 1 << 24;
        /// Bits this crate does not interpret are kept, not dropped.
        const _ = !0;
    }
}

bitflags! {
    /// The IA32_EFER model-specific register.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct Efer: u64 {
        /// SYSCALL enable.
        const SCE = 1 << 0;
        /// Long mode enable.
        const LME = 1 << 8;
        /// Long mode active.
        const LMA = 1 << 10;
        /// Execute-disable (XD/NX) bit enable.
        const NXE = 1 << 11;
        /// Bits this crate does not interpret are kept, not dropped.
        const _ = !0;
    }
}

bitflags! {
    /// Page-fault error code, as pushed by the CPU for vector 14.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct PfErrorCode: u32 {
        /// The fault was a protection violation (0: a not-present entry).
        const P = 1 << 0;
        /// The access was a write.
        const W = 1 << 1;
        /// The access was a user-mode access (CPL 3, not implicit).
        const U = 1 << 2;
        /// A reserved bit was set in some paging-structure entry.
        const RSVD = 1 << 3;
        /// The access was an instruction fetch (reported only with
        /// EFER.NXE in a PAE-or-longer mode, or with CR4.SMEP).
        const ID = 1 << 4;
        /// A protection key denied the data access.
        const PK = 1 << 5;
    }
}

bitflags! {
    /// Access rights of a translation, ANDed over the levels of a walk.
    ///
    /// `EXEC` is the inverse of the XD bit, so that every right narrows by AND.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct PteAccess: u8 {
        /// Writable (R/W = 1 at every level).
        const WRITE = 1 << 0;
        /// User-mode address (U/S = 1 at every level).
        const USER = 1 << 1;
        /// Executable (XD = 0 at every level, or XD not in use).
        const EXEC = 1 << 2;
    }
}

/// The paging mode, derived from CR0.PG, CR4.PAE, EFER.LMA and CR4.LA57.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PagingMode {
    /// CR0.PG = 0: linear addresses are physical addresses.
    Off,
    /// 32-bit (2-level) paging with 4-byte entries.
    Bits32,
    /// PAE (3-level) paging with four PDPTE registers.
    Pae,
    /// 4-level paging (48-bit linear addresses).
    Level4,
    /// 5-level paging (57-bit linear addresses).
    Level5,
}

impl PagingMode {
    /// The number of paging-structure levels the CPU walks (0 when paging is
    /// off). For PAE the PDPTE level counts although its entries are held in
    /// registers.
    #[inline]
    pub const fn levels(self) -> u8 {
        match self {
            PagingMode::Off => 0,
            PagingMode::Bits32 => 2,
            PagingMode::Pae => 3,
            PagingMode::Level4 => 4,
            PagingMode::Level5 => 5,
        }
    }

    /// Whether the mode uses 8-byte paging-structure entries.
    #[inline]
    pub const fn has_8_byte_entries(self) -> bool {
        matches!(
            self,
            PagingMode::Pae | PagingMode::Level4 | PagingMode::Level5
        )
    }

    /// Whether the mode is IA-32e paging (4-level or 5-level).
    #[inline]
    pub const fn is_long(self) -> bool {
        matches!(self, PagingMode::Level4 | PagingMode::Level5)
    }
}

/// What an access does with the bytes it reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AccessKind {
    /// A data read.
    Read,
    /// A data write.
    Write,
    /// An instruction fetch.
    Fetch,
}

/// One memory access to translate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Access {
    /// Read, write or fetch.
    pub kind: AccessKind,
    /// A user-mode access: made at CPL 3 and not implicit.
    pub user: bool,
    /// An implicit supervisor-mode access (descriptor tables, the TSS, the
    /// shadow stack of the supervisor...): supervisor at any CPL, and SMAP
    /// applies to it whatever EFLAGS.AC says.
    pub implicit: bool,
}

impl Access {
    /// An explicit access made at `cpl`.
    pub const fn at_cpl(kind: AccessKind, cpl: u8) -> Access {
        Access {
            kind,
            user: cpl == 3,
            implicit: false,
        }
    }

    /// An implicit supervisor-mode access.
    pub const fn implicit(kind: AccessKind) -> Access {
        Access {
            kind,
            user: false,
            implicit: true,
        }
    }

    /// Whether the access counts as a user-mode access.
    #[inline]
    pub const fn is_user(self) -> bool {
        self.user && !self.implicit
    }

    /// The bits of a page-fault error code that describe the access alone
    /// (W, U and, when `report_fetch`, I/D).
    #[inline]
    pub fn error_code_bits(self, report_fetch: bool) -> PfErrorCode {
        let mut ec = PfErrorCode::empty();
        if self.kind == AccessKind::Write {
            ec |= PfErrorCode::W;
        }
        if self.is_user() {
            ec |= PfErrorCode::U;
        }
        if report_fetch && self.kind == AccessKind::Fetch {
            ec |= PfErrorCode::ID;
        }
        ec
    }
}

/// Exception vectors (SDM Vol. 3A, Table 6-1).
pub mod vector {
    /// Divide error.
    pub const DE: u8 = 0;
    /// Debug.
    pub const DB: u8 = 1;
    /// Non-maskable interrupt.
    pub const NMI: u8 = 2;
    /// Breakpoint (`int3`).
    pub const BP: u8 = 3;
    /// Overflow (`into`).
    pub const OF: u8 = 4;
    /// BOUND range exceeded.
    pub const BR: u8 = 5;
    /// Invalid opcode.
    pub const UD: u8 = 6;
    /// Device not available.
    pub const NM: u8 = 7;
    /// Double fault.
    pub const DF: u8 = 8;
    /// Invalid TSS.
    pub const TS: u8 = 10;
    /// Segment not present.
    pub const NP: u8 = 11;
    /// Stack-segment fault.
    pub const SS: u8 = 12;
    /// General protection.
    pub const GP: u8 = 13;
    /// Page fault.
    pub const PF: u8 = 14;
    /// x87 floating-point error.
    pub const MF: u8 = 16;
    /// Alignment check.
    pub const AC: u8 = 17;
    /// Machine check.
    pub const MC: u8 = 18;
    /// SIMD floating-point exception.
    pub const XM: u8 = 19;
    /// Virtualization exception.
    pub const VE: u8 = 20;
    /// Control-protection exception.
    pub const CP: u8 = 21;

    /// Whether the CPU pushes an error code for `vector` when it delivers
    /// it as an exception.
    pub const fn has_error_code(vector: u8) -> bool {
        matches!(vector, DF | TS | NP | SS | GP | PF | AC | CP)
    }
}

/// The smallest MAXPHYADDR this crate accepts.
pub const MIN_MAXPHYADDR: u8 = 32;
/// The largest MAXPHYADDR the architecture allows.
pub const MAX_MAXPHYADDR: u8 = 52;

/// Everything about a vCPU that decides how its linear addresses translate.
///
/// `pdptrs` are the four PAE page-directory-pointer registers. The CPU loads
/// them when CR3 is written in PAE mode, not at every walk; call
/// [`crate::walker::load_pdptrs`] where the guest would load CR3.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PagingState {
    /// CR0.
    pub cr0: Cr0,
    /// CR3, including PCID or flag bits the mode ignores.
    pub cr3: u64,
    /// CR4.
    pub cr4: Cr4,
    /// IA32_EFER.
    pub efer: Efer,
    /// The PKRU register (user-mode protection keys).
    pub pkru: u32,
    /// The IA32_PKRS MSR (supervisor-mode protection keys).
    pub pkrs: u32,
    /// Current privilege level.
    pub cpl: u8,
    /// EFLAGS.AC, which lets explicit supervisor accesses through SMAP.
    pub eflags_ac: bool,
    /// The guest's MAXPHYADDR (CPUID 0x80000008 EAX\[7:0\]), 32..=52.
    pub maxphyaddr: u8,
    /// PAE PDPTE registers, as loaded at the last CR3 load.
    pub pdptrs: [u64; 4],
    /// CPUID says 1 GiB pages are supported (CPUID 0x80000001 EDX\[26\]).
    pub gbpages: bool,
    /// CPUID says PSE-36 is supported (CPUID 1 EDX\[17\]).
    pub pse36: bool,
}

impl Default for PagingState {
    fn default() -> Self {
        PagingState {
            cr0: Cr0::PE | Cr0::ET,
            cr3: 0,
            cr4: Cr4::empty(),
            efer: Efer::empty(),
            pkru: 0,
            pkrs: 0,
            cpl: 0,
            eflags_ac: false,
            maxphyaddr: 48,
            pdptrs: [0; 4],
            gbpages: true,
            pse36: true,
        }
    }
}

impl PagingState {
    /// The paging mode these registers select.
    #[inline]
    pub fn mode(&self) -> PagingMode {
        if !self.cr0.contains(Cr0::PG) {
            PagingMode::Off
        } else if !self.cr4.contains(Cr4::PAE) {
            PagingMode::Bits32
        } else if !self.efer.contains(Efer::LMA) {
            PagingMode::Pae
        } else if self.cr4.contains(Cr4::LA57) {
            PagingMode::Level5
        } else {
            PagingMode::Level4
        }
    }

    /// An explicit access of `kind` at the current privilege level.
    pub const fn access(&self, kind: AccessKind) -> Access {
        Access::at_cpl(kind, self.cpl)
    }

    /// Whether the XD bit is in use (EFER.NXE in a mode with 8-byte entries).
    #[inline]
    pub fn nx_enabled(&self) -> bool {
        self.efer.contains(Efer::NXE) && self.mode().has_8_byte_entries()
    }

    /// Whether a page fault on a fetch reports I/D (SDM 4.7).
    #[inline]
    pub fn reports_fetch(&self) -> bool {
        self.nx_enabled() || self.cr4.contains(Cr4::SMEP)
    }

    /// The guest-physical address mask (bits below MAXPHYADDR).
    #[inline]
    pub fn phys_mask(&self) -> u64 {
        let bits = self.maxphyaddr.clamp(MIN_MAXPHYADDR, MAX_MAXPHYADDR);
        (1u64 << bits) - 1
    }
}

/// The protection-key rights register holds two bits per key: AD at `2*key`
/// and WD at `2*key + 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyRights {
    /// Access disable.
    pub ad: bool,
    /// Write disable.
    pub wd: bool,
}

impl KeyRights {
    /// The rights of `key` (0..16) in a PKRU or PKRS value.
    pub const fn of(register: u32, key: u8) -> KeyRights {
        let bits = register >> (2 * (key as u32 & 15));
        KeyRights {
            ad: bits & 1 != 0,
            wd: bits & 2 != 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        let mut s = PagingState::default();
        assert_eq!(s.mode(), PagingMode::Off);
        s.cr0 |= Cr0::PG;
        assert_eq!(s.mode(), PagingMode::Bits32);
        s.cr4 |= Cr4::PAE;
        assert_eq!(s.mode(), PagingMode::Pae);
        s.efer |= Efer::LME | Efer::LMA;
        assert_eq!(s.mode(), PagingMode::Level4);
        s.cr4 |= Cr4::LA57;
        assert_eq!(s.mode(), PagingMode::Level5);
    }

    #[test]
    fn fetch_reporting_follows_sdm_4_7() {
        let mut s = PagingState {
            cr0: Cr0::PE | Cr0::PG,
            efer: Efer::NXE,
            ..Default::default()
        };
        // 32-bit paging has no XD bit, so NXE alone does not report fetches.
        assert!(!s.reports_fetch());
        s.cr4 |= Cr4::SMEP;
        assert!(s.reports_fetch());
        s.cr4 = Cr4::PAE;
        assert!(s.reports_fetch());
    }

    #[test]
    fn key_rights() {
        let pkru = 0b10_01 << 4; // key 2: AD, key 3: WD
        assert_eq!(
            KeyRights::of(pkru, 2),
            KeyRights {
                ad: true,
                wd: false
            }
        );
        assert_eq!(
            KeyRights::of(pkru, 3),
            KeyRights {
                ad: false,
                wd: true
            }
        );
        assert_eq!(
            KeyRights::of(pkru, 0),
            KeyRights {
                ad: false,
                wd: false
            }
        );
    }
}
