// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Paging-structure entry formats and how entries are read and updated in
//! guest memory.
//!
//! The walker is written once, generic over [`PteFormat`]; the 32-bit and
//! 64-bit formats differ only in entry width, index width, how large pages
//! encode their frame, and which bits are reserved.

use std::marker::PhantomData;
use std::mem::{align_of, size_of};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};

use vm_memory::bitmap::{Bitmap, BitmapSlice};
use vm_memory::volatile_memory::PtrGuardMut;
use vm_memory::{
    AtomicInteger, GuestAddress, GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress,
    VolatileMemory, VolatileSlice,
};

use crate::arch::{Cr4, Efer, PagingMode, PagingState, PteAccess};

/// Present.
pub const PTE_P: u64 = 1 << 0;
/// Read/write.
pub const PTE_W: u64 = 1 << 1;
/// User/supervisor.
pub const PTE_U: u64 = 1 << 2;
/// Page-level write-through.
pub const PTE_PWT: u64 = 1 << 3;
/// Page-level cache disable.
pub const PTE_PCD: u64 = 1 << 4;
/// Accessed.
pub const PTE_A: u64 = 1 << 5;
/// Dirty (leaf entries only).
pub const PTE_D: u64 = 1 << 6;
/// Page size: the entry maps a large page (PDE, PDPTE).
pub const PTE_PS: u64 = 1 << 7;
/// Global (leaf entries only).
pub const PTE_G: u64 = 1 << 8;
/// PAT bit of a large-page entry (bit 7 holds PAT in a 4 KiB PTE).
pub const PTE_LARGE_PAT: u64 = 1 << 12;
/// Execute disable (64-bit entries only).
pub const PTE_XD: u64 = 1 << 63;
/// Frame-address bits of a 64-bit entry before MAXPHYADDR is applied.
pub const PTE64_ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
/// Shift of the protection-key field (bits 62:59) of a 64-bit leaf.
pub const PTE_PKEY_SHIFT: u32 = 59;

/// `bits hi..=lo` set.
#[inline]
pub(crate) const fn bit_range(hi: u32, lo: u32) -> u64 {
    if hi < lo {
        return 0;
    }
    (u64::MAX >> (63 - hi)) & !((1u64 << lo) - 1)
}

/// Reads and atomically updates paging-structure entries in guest memory.
///
/// Implemented for every vm-memory [`GuestMemoryBackend`]. `None` means no RAM
/// backs the address; the walker treats that as a not-present entry, as KVM
/// does.
pub trait PteMemory {
    /// Loads a naturally aligned 4-byte entry.
    fn load_u32(&self, gpa: GuestAddress) -> Option<u32>;
    /// Loads a naturally aligned 8-byte entry.
    fn load_u64(&self, gpa: GuestAddress) -> Option<u64>;
    /// Replaces `old` with `new` if the entry still holds `old`; `Some(false)`
    /// when another writer got there first.
    fn cmpxchg_u32(&self, gpa: GuestAddress, old: u32, new: u32) -> Option<bool>;
    /// 8-byte form of [`PteMemory::cmpxchg_u32`].
    fn cmpxchg_u64(&self, gpa: GuestAddress, old: u64, new: u64) -> Option<bool>;

    /// A directly addressable host mapping of the memory around `gpa`, for
    /// callers that make several accesses in a row (a walk). Accesses
    /// through the window behave exactly as the methods above for every
    /// address inside it; outside it the window answers `None` and the
    /// caller asks `self`.
    ///
    /// The default has no window.
    #[inline]
    fn host_window(&self, gpa: GuestAddress) -> Option<HostWindow<'_>> {
        let _ = gpa;
        None
    }
}

impl<M: GuestMemoryBackend + ?Sized> PteMemory for M {
    #[inline]
    fn load_u32(&self, gpa: GuestAddress) -> Option<u32> {
        with_entry(self, gpa, |e: &AtomicU32| e.load(Ordering::Acquire))
    }

    #[inline]
    fn load_u64(&self, gpa: GuestAddress) -> Option<u64> {
        with_entry(self, gpa, |e: &AtomicU64| e.load(Ordering::Acquire))
    }

    #[inline]
    fn cmpxchg_u32(&self, gpa: GuestAddress, old: u32, new: u32) -> Option<bool> {
        let done = with_entry(self, gpa, |e: &AtomicU32| {
            e.compare_exchange(old, new, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        })?;
        if done {
            mark_dirty(self, gpa, 4);
        }
        Some(done)
    }

    #[inline]
    fn cmpxchg_u64(&self, gpa: GuestAddress, old: u64, new: u64) -> Option<bool> {
        let done = with_entry(self, gpa, |e: &AtomicU64| {
            e.compare_exchange(old, new, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        })?;
        if done {
            mark_dirty(self, gpa, 8);
        }
        Some(done)
    }

    #[inline]
    fn host_window(&self, gpa: GuestAddress) -> Option<HostWindow<'_>> {
        let region = self.find_region(gpa)?;
        let start = region.start_addr().0;
        let slice = region.as_volatile_slice().ok()?;
        Some(HostWindow::new(start, &slice))
    }
}

/// A guest-physical range backed by one contiguous host mapping: the whole
/// of one guest memory region, borrowed from the memory for `'a`.
///
/// Entries are read and compare-exchanged in place with atomic operations,
/// exactly as [`PteMemory`]'s blanket implementation does through
/// vm-memory's `get_atomic_ref`, but with the region found once rather than
/// at every access. Unlike the blanket implementation, writes through the
/// window are not recorded in the region's dirty bitmap: the MMU reads
/// through windows and compare-exchanges through the memory itself.
///
/// Invariant (established by the only constructor, `HostWindow::new`):
/// `host..host + len` is the memory of a vm-memory `VolatileSlice<'a>`,
/// which `guard` keeps mapped.
#[derive(Debug)]
pub struct HostWindow<'a> {
    /// Guest-physical address of the first byte.
    start: u64,
    /// Length in bytes.
    len: u64,
    /// Host address of the first byte (valid as long as `guard`).
    host: *mut u8,
    /// Keeps the host mapping of the slice in place (with vm-memory's `xen`
    /// feature the guard maps the memory and unmaps it on drop; otherwise it
    /// is just the pointer).
    guard: PtrGuardMut,
    /// The memory the window was taken from stays borrowed.
    _memory: PhantomData<&'a AtomicU8>,
}

impl<'a> HostWindow<'a> {
    /// The window over `slice`, which starts at guest-physical `start`.
    #[inline]
    fn new<B: BitmapSlice>(start: u64, slice: &VolatileSlice<'a, B>) -> HostWindow<'a> {
        let guard = slice.ptr_guard_mut();
        HostWindow {
            start,
            len: guard.len() as u64,
            host: guard.as_ptr(),
            guard,
            _memory: PhantomData,
        }
    }

    /// Whether `len` bytes at `gpa` lie inside the window.
    #[inline]
    pub fn contains(&self, gpa: GuestAddress, len: u64) -> bool {
        let offset = gpa.0.wrapping_sub(self.start);
        offset < self.len && self.len - offset >= len
    }

    /// The naturally aligned atomic `T` at `gpa`, if it lies inside the
    /// window.
    #[inline]
    fn entry<T: AtomicInteger>(&self, gpa: GuestAddress) -> Option<&T> {
        if !self.contains(gpa, size_of::<T>() as u64) {
            return None;
        }
        debug_assert_eq!(self.guard.as_ptr(), self.host);
        // `contains` checked that `offset + size_of::<T>() <= len`, so
        // `offset` fits in `usize` (len came from a `usize`) and the result
        // stays inside the mapping.
        let entry = self
            .host
            .wrapping_add(gpa.0.wrapping_sub(self.start) as usize);
        if !(entry as usize).is_multiple_of(align_of::<T>()) {
            return None;
        }
        // SAFETY: `host..host + len` is the memory of a `VolatileSlice<'a>`
        // of vm-memory, whose (unsafe) constructor guarantees that it is
        // valid for `len` bytes for all of `'a` and that every other user of
        // it accesses it with volatile or atomic operations only; `guard`
        // keeps it mapped and lives as long as `self`. The `size_of::<T>()`
        // bytes at `entry` are inside that range (checked above), `entry`
        // is aligned for `T` (checked above), and `T` is an atomic integer,
        // for which any bit pattern is valid and all access is atomic. The
        // returned reference borrows `self`, so it can outlive neither the
        // guard nor `'a`. This is the same reasoning as vm-memory's own
        // `VolatileMemory::get_atomic_ref`.
        Some(unsafe { &*entry.cast::<T>() })
    }
}

impl PteMemory for HostWindow<'_> {
    #[inline]
    fn load_u32(&self, gpa: GuestAddress) -> Option<u32> {
        self.entry::<AtomicU32>(gpa)
            .map(|e| e.load(Ordering::Acquire))
    }

    #[inline]
    fn load_u64(&self, gpa: GuestAddress) -> Option<u64> {
        self.entry::<AtomicU64>(gpa)
            .map(|e| e.load(Ordering::Acquire))
    }

    #[inline]
    fn cmpxchg_u32(&self, gpa: GuestAddress, old: u32, new: u32) -> Option<bool> {
        self.entry::<AtomicU32>(gpa).map(|e| {
            e.compare_exchange(old, new, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        })
    }

    #[inline]
    fn cmpxchg_u64(&self, gpa: GuestAddress, old: u64, new: u64) -> Option<bool> {
        self.entry::<AtomicU64>(gpa).map(|e| {
            e.compare_exchange(old, new, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        })
    }
}

/// Runs `f` on the naturally aligned atomic `T` at `gpa`, or returns `None`
/// when no single region backs all of its bytes or the host address is not
/// aligned.
///
/// The region is looked up once; `GuestMemoryBackend::get_slice` would look
/// it up and then re-validate the region offset before slicing.
#[inline(always)]
/// Records a store of `len` bytes at `gpa` in the dirty bitmap of its
/// region: atomic references (`get_atomic_ref`) bypass it, and a VMM that
/// logs dirty pages must see the A/D bits the MMU sets.
fn mark_dirty<M: GuestMemoryBackend + ?Sized>(mem: &M, gpa: GuestAddress, len: usize) {
    if let Some(region) = mem.find_region(gpa) {
        if let Some(offset) = gpa.0.checked_sub(region.start_addr().0) {
            region.bitmap().mark_dirty(offset as usize, len);
        }
    }
}

fn with_entry<M, T, R>(mem: &M, gpa: GuestAddress, f: impl FnOnce(&T) -> R) -> Option<R>
where
    M: GuestMemoryBackend + ?Sized,
    T: AtomicInteger,
{
    let region = mem.find_region(gpa)?;
    let offset = gpa.0.checked_sub(region.start_addr().0)?;
    if offset >= region.len() {
        return None;
    }
    let slice = region
        .get_slice(MemoryRegionAddress(offset), size_of::<T>())
        .ok()?;
    let entry = slice.get_atomic_ref::<T>(0).ok()?;
    Some(f(entry))
}

/// Reserved-bit masks of one paging mode, indexed by level (1 = PTE).
///
/// `table[l]` applies to an entry at level `l` that references a table or a
/// 4 KiB page, `large[l]` to one that maps a large page.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReservedBits {
    /// Masks for entries that reference a table (or a 4 KiB page at level 1).
    pub table: [u64; 6],
    /// Masks for large-page leaves.
    pub large: [u64; 6],
}

/// A paging-entry format: 4-byte entries of 32-bit paging or 8-byte entries
/// of PAE and IA-32e paging.
pub trait PteFormat: Copy + Send + Sync + 'static {
    /// Entry width in bytes.
    const BYTES: u64;
    /// Linear-address bits consumed by each level below the root.
    const INDEX_BITS: u32;

    /// Loads the entry at `gpa`, zero-extended.
    fn load<M: PteMemory + ?Sized>(mem: &M, gpa: GuestAddress) -> Option<u64>;

    /// Compare-exchanges the entry at `gpa`.
    fn cmpxchg<M: PteMemory + ?Sized>(
        mem: &M,
        gpa: GuestAddress,
        old: u64,
        new: u64,
    ) -> Option<bool>;

    /// Index of `gva`'s entry in a table at `level`.
    #[inline]
    fn index(gva: u64, level: u8) -> u64 {
        let shift = 12 + Self::INDEX_BITS * (u32::from(level) - 1);
        (gva >> shift) & ((1u64 << Self::INDEX_BITS) - 1)
    }

    /// Shift of the region one entry at `level` maps.
    #[inline]
    fn level_shift(level: u8) -> u32 {
        12 + Self::INDEX_BITS * (u32::from(level) - 1)
    }

    /// Guest-physical address of the table or 4 KiB frame an entry references.
    fn frame(pte: u64) -> u64;

    /// Guest-physical base of the large page a leaf at `level` maps.
    fn large_frame(pte: u64, level: u8, state: &PagingState) -> u64;

    /// Whether a present entry at `level` with PS set is a leaf (rather than
    /// PS being ignored). The reserved-bit masks decide whether it is legal.
    fn ps_is_leaf(level: u8, state: &PagingState) -> bool;

    /// The rights one entry grants.
    #[inline]
    fn rights(pte: u64, nx: bool) -> PteAccess {
        let mut acc = PteAccess::empty();
        if pte & PTE_W != 0 {
            acc |= PteAccess::WRITE;
        }
        if pte & PTE_U != 0 {
            acc |= PteAccess::USER;
        }
        if !nx || pte & PTE_XD == 0 {
            acc |= PteAccess::EXEC;
        }
        acc
    }

    /// Reserved bits of every level under `state`.
    fn reserved_bits(state: &PagingState) -> ReservedBits;
}

/// 4-byte entries of 32-bit paging.
#[derive(Clone, Copy, Debug)]
pub struct Pte32;

impl PteFormat for Pte32 {
    const BYTES: u64 = 4;
    const INDEX_BITS: u32 = 10;

    #[inline]
    fn load<M: PteMemory + ?Sized>(mem: &M, gpa: GuestAddress) -> Option<u64> {
        mem.load_u32(gpa).map(u64::from)
    }

    #[inline]
    fn cmpxchg<M: PteMemory + ?Sized>(
        mem: &M,
        gpa: GuestAddress,
        old: u64,
        new: u64,
    ) -> Option<bool> {
        mem.cmpxchg_u32(gpa, old as u32, new as u32)
    }

    #[inline]
    fn frame(pte: u64) -> u64 {
        pte & 0xffff_f000
    }

    #[inline]
    fn large_frame(pte: u64, _level: u8, state: &PagingState) -> u64 {
        // PSE-36: PDE bits (M-20):13 hold physical bits (M-1):32.
        let high_bits = pse36_high_bits(state);
        let high = (pte >> 13) & ((1u64 << high_bits) - 1);
        (pte & 0xffc0_0000) | (high << 32)
    }

    #[inline]
    fn ps_is_leaf(level: u8, state: &PagingState) -> bool {
        level == 2 && state.cr4.contains(Cr4::PSE)
    }

    #[inline]
    fn reserved_bits(state: &PagingState) -> ReservedBits {
        let mut rsvd = ReservedBits::default();
        // 4 MiB PDE: bits 21:(13 + M - 32) are reserved (SDM table 4-6).
        rsvd.large[2] = bit_range(21, 13 + pse36_high_bits(state));
        rsvd
    }
}

/// Number of physical-address bits above 31 that a 4 MiB PDE can hold.
#[inline]
fn pse36_high_bits(state: &PagingState) -> u32 {
    if state.pse36 {
        u32::from(state.maxphyaddr.clamp(32, 40)) - 32
    } else {
        0
    }
}

/// 8-byte entries of PAE, 4-level and 5-level paging.
#[derive(Clone, Copy, Debug)]
pub struct Pte64;

impl PteFormat for Pte64 {
    const BYTES: u64 = 8;
    const INDEX_BITS: u32 = 9;

    #[inline]
    fn load<M: PteMemory + ?Sized>(mem: &M, gpa: GuestAddress) -> Option<u64> {
        mem.load_u64(gpa)
    }

    #[inline]
    fn cmpxchg<M: PteMemory + ?Sized>(
        mem: &M,
        gpa: GuestAddress,
        old: u64,
        new: u64,
    ) -> Option<bool> {
        mem.cmpxchg_u64(gpa, old, new)
    }

    #[inline]
    fn frame(pte: u64) -> u64 {
        pte & PTE64_ADDR_MASK
    }

    #[inline]
    fn large_frame(pte: u64, level: u8, _state: &PagingState) -> u64 {
        pte & PTE64_ADDR_MASK & !((1u64 << Self::level_shift(level)) - 1)
    }

    #[inline]
    fn ps_is_leaf(level: u8, _state: &PagingState) -> bool {
        // PS at levels 4 and 5 is reserved; treating it as "leaf" routes it
        // to the large mask, which flags it.
        level >= 2
    }

    #[inline]
    fn reserved_bits(state: &PagingState) -> ReservedBits {
        let common = pte64_common_reserved(state, state.mode());
        let mut rsvd = ReservedBits::default();
        rsvd.table[1] = common;
        rsvd.table[2] = common;
        rsvd.large[2] = common | bit_range(20, 13);
        rsvd.table[3] = common;
        rsvd.large[3] = if state.gbpages {
            common | bit_range(29, 13)
        } else {
            common | PTE_PS
        };
        rsvd.table[4] = common | PTE_PS;
        rsvd.large[4] = common | PTE_PS;
        rsvd.table[5] = common | PTE_PS;
        rsvd.large[5] = common | PTE_PS;
        rsvd
    }
}

/// The reserved bits of [`PteFormat::reserved_bits`] in the form the walker
/// uses: the few values that differ, computed once per walk, and the mask
/// of one entry picked from them.
pub(crate) trait WalkMasks: PteFormat {
    /// What differs between the levels' masks.
    type Reserved: Copy;

    /// The masks of `state`, whose paging mode is `mode`.
    fn walk_reserved(state: &PagingState, mode: PagingMode) -> Self::Reserved;

    /// The reserved bits of an entry at `level` that is a leaf or not:
    /// `reserved_bits(state).table[1]` for a 4 KiB leaf, `.large[level]`
    /// for a large leaf, `.table[level]` otherwise.
    fn reserved_mask(r: &Self::Reserved, level: u8, leaf: bool) -> u64;
}

impl WalkMasks for Pte32 {
    /// The mask of a 4 MiB PDE; every other mask is empty.
    type Reserved = u64;

    #[inline]
    fn walk_reserved(state: &PagingState, _mode: PagingMode) -> u64 {
        bit_range(21, 13 + pse36_high_bits(state))
    }

    #[inline]
    fn reserved_mask(large2: &u64, level: u8, leaf: bool) -> u64 {
        if leaf && level == 2 {
            *large2
        } else {
            0
        }
    }
}

/// The reserved bits of 8-byte entries: those of every entry, and those of
/// a 1 GiB leaf (which depend on CPUID).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reserved64 {
    common: u64,
    large3: u64,
}

impl WalkMasks for Pte64 {
    type Reserved = Reserved64;

    #[inline]
    fn walk_reserved(state: &PagingState, mode: PagingMode) -> Reserved64 {
        let common = pte64_common_reserved(state, mode);
        Reserved64 {
            common,
            large3: if state.gbpages {
                common | bit_range(29, 13)
            } else {
                common | PTE_PS
            },
        }
    }

    #[inline]
    fn reserved_mask(r: &Reserved64, level: u8, leaf: bool) -> u64 {
        match (leaf, level) {
            (_, 1) | (false, 2..=3) => r.common,
            (true, 2) => r.common | bit_range(20, 13),
            (true, 3) => r.large3,
            _ => r.common | PTE_PS,
        }
    }
}

/// Bits reserved in every 8-byte entry of `state`, whose mode is `mode`.
#[inline]
fn pte64_common_reserved(state: &PagingState, mode: PagingMode) -> u64 {
    let maxphy = u32::from(state.maxphyaddr.clamp(32, 52));
    // IA-32e entries ignore bits 62:52; PAE entries reserve them (SDM
    // tables 4-9 to 4-11 against 4-15 to 4-20).
    let top = if mode == PagingMode::Pae { 62 } else { 51 };
    let mut common = bit_range(top, maxphy);
    if !state.efer.contains(Efer::NXE) {
        common |= PTE_XD;
    }
    common
}

/// Reserved bits of a PAE PDPTE register (SDM table 4-8): bits 2:1, 8:5 and
/// 63:MAXPHYADDR. Checked when CR3 is loaded.
#[inline]
pub fn pae_pdpte_reserved(state: &PagingState) -> u64 {
    let maxphy = u32::from(state.maxphyaddr.clamp(32, 52));
    bit_range(63, maxphy) | bit_range(8, 5) | bit_range(2, 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::{Cr0, Efer};

    #[test]
    fn ranges() {
        assert_eq!(bit_range(20, 13), 0x1f_e000);
        assert_eq!(bit_range(63, 63), 1 << 63);
        assert_eq!(bit_range(12, 13), 0);
        assert_eq!(bit_range(51, 48), 0x000f_0000_0000_0000);
    }

    #[test]
    fn pse36_frame_and_reserved() {
        let mut s = PagingState {
            cr0: Cr0::PG | Cr0::PE,
            cr4: Cr4::PSE,
            maxphyaddr: 36,
            ..Default::default()
        };
        // Bits 16:13 hold physical bits 35:32; bits 21:17 are reserved.
        assert_eq!(Pte32::reserved_bits(&s).large[2], 0x3e_0000);
        assert_eq!(
            Pte32::large_frame(0x0040_2083 | (0xf << 13), 2, &s),
            0xf_0040_0000
        );
        s.pse36 = false;
        assert_eq!(Pte32::reserved_bits(&s).large[2], 0x3f_e000);
        assert_eq!(Pte32::large_frame(0x0040_0083, 2, &s), 0x40_0000);
    }

    #[test]
    fn pte64_reserved() {
        let s = PagingState {
            efer: Efer::LMA | Efer::LME,
            maxphyaddr: 40,
            gbpages: false,
            ..Default::default()
        };
        let r = Pte64::reserved_bits(&s);
        assert_eq!(r.table[1], 0x000f_ff00_0000_0000 | PTE_XD);
        assert_eq!(r.large[3] & PTE_PS, PTE_PS);
        assert_eq!(Pte64::index(0x0000_7fff_ffff_f000, 4), 0xff);
    }

    /// The walker's per-entry masks are exactly those of `reserved_bits`.
    #[test]
    fn walk_masks_match_reserved_bits() {
        fn check<F: WalkMasks>(s: &PagingState) {
            let all = F::reserved_bits(s);
            let r = F::walk_reserved(s, s.mode());
            for level in 1..=5u8 {
                let l = usize::from(level);
                assert_eq!(
                    F::reserved_mask(&r, level, false),
                    all.table[l],
                    "{s:?} {level}"
                );
                let leaf = if level == 1 {
                    all.table[1]
                } else {
                    all.large[l]
                };
                assert_eq!(F::reserved_mask(&r, level, true), leaf, "{s:?} {level}");
            }
        }
        for maxphyaddr in [0, 31, 32, 36, 40, 46, 48, 52, 60] {
            for flags in 0..32u32 {
                let mut s = PagingState {
                    cr0: Cr0::PG | Cr0::PE,
                    cr4: Cr4::PAE,
                    maxphyaddr,
                    gbpages: flags & 1 != 0,
                    pse36: flags & 2 != 0,
                    ..Default::default()
                };
                if flags & 4 != 0 {
                    s.efer |= Efer::NXE;
                }
                if flags & 8 != 0 {
                    s.efer |= Efer::LME | Efer::LMA;
                }
                if flags & 16 != 0 {
                    s.cr4 |= Cr4::LA57;
                }
                check::<Pte64>(&s);
                s.cr4 = Cr4::PSE;
                check::<Pte32>(&s);
            }
        }
    }

    #[test]
    fn pae_reserves_high_bits() {
        let s = PagingState {
            cr0: Cr0::PG | Cr0::PE,
            cr4: Cr4::PAE,
            efer: Efer::NXE,
            maxphyaddr: 36,
            ..Default::default()
        };
        assert_eq!(Pte64::reserved_bits(&s).table[1], bit_range(62, 36));
    }
}
