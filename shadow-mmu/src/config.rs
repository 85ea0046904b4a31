// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! How a shadow MMU is built: its configuration, the guest memory it reads
//! and where guest frames live in shadow-physical space.

use std::fmt;
use std::ops::Range;

use vm_memory::{GuestAddress, GuestMemoryAtomic, GuestMemoryBackend, GuestMemoryMmap};

use crate::addr::{Gfn, PAGE_SHIFT};

/// Guest memory an MMU reads guest tables from and sets A/D bits in: any
/// vm-memory backend, such as `GuestMemoryMmap` with or without a dirty
/// bitmap (the MMU's stores into guest memory are logged in it).
pub trait GuestRam: GuestMemoryBackend + Send + Sync + 'static {}

impl<M: GuestMemoryBackend + Send + Sync + 'static> GuestRam for M {}

/// The guest memory an MMU is given, swappable on hotplug: vm-memory's
/// `GuestMemoryAtomic` over `M` (by default a `GuestMemoryMmap` without a
/// dirty bitmap).
pub type AtomicGuestMemory<M = GuestMemoryMmap> = GuestMemoryAtomic<M>;

/// Where guest RAM is: what a [`FrameMap`] needs of guest memory.
pub trait RamMap {
    /// Whether guest RAM backs `gpa`.
    fn is_ram(&self, gpa: GuestAddress) -> bool;
    /// Whether guest RAM backs all `len` bytes from `gpa`.
    fn is_ram_range(&self, gpa: GuestAddress, len: usize) -> bool;
}

impl<M: GuestMemoryBackend> RamMap for M {
    fn is_ram(&self, gpa: GuestAddress) -> bool {
        self.address_in_range(gpa)
    }

    fn is_ram_range(&self, gpa: GuestAddress, len: usize) -> bool {
        self.check_range(gpa, len)
    }
}

/// Where the frames behind guest-physical memory live in the
/// shadow-physical space that shadow entries point to.
///
/// Under KVM that space is KVM's guest-physical space and RAM maps 1:1
/// ([`IdentityFrames`]); a bare-metal hypervisor would return host-physical
/// frames here.
pub trait FrameMap: Send + Sync + fmt::Debug {
    /// The shadow-physical address of the frame backing `gfn`, or `None` when
    /// no guest RAM is there.
    fn frame(&self, mem: &dyn RamMap, gfn: Gfn) -> Option<u64>;

    /// Whether `pages` frames from `gfn` are RAM backed by one contiguous,
    /// equally aligned shadow-physical range (so one large entry can map
    /// them).
    fn contiguous(&self, mem: &dyn RamMap, gfn: Gfn, pages: u64) -> bool;
}

/// Guest RAM at the same address in shadow-physical space (KVM memslots).
#[derive(Clone, Copy, Debug, Default)]
pub struct IdentityFrames;

impl FrameMap for IdentityFrames {
    fn frame(&self, mem: &dyn RamMap, gfn: Gfn) -> Option<u64> {
        let gpa = gfn.gpa();
        mem.is_ram(gpa).then_some(gpa.0)
    }

    fn contiguous(&self, mem: &dyn RamMap, gfn: Gfn, pages: u64) -> bool {
        let Some(len) = pages.checked_mul(1 << PAGE_SHIFT) else {
            return false;
        };
        let Ok(len) = usize::try_from(len) else {
            return false;
        };
        mem.is_ram_range(gfn.gpa(), len)
    }
}

/// What to do with a guest write to a page that is shadowed as a page table
/// and cannot go unsync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableWrites {
    /// Drop the shadows of the page and let the write through (KVM's
    /// "unprotect and retry"). Writes to a table used by the faulting walk
    /// itself still need emulation.
    Unprotect,
    /// Always ask the VMM to emulate the write and report it with
    /// [`ShadowMmu::track_write`](crate::ShadowMmu::track_write).
    Emulate,
}

/// Which guest entries a fault maps besides the one it is for
/// ([`MmuConfig::prefetch_window`] of them around it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Prefetch {
    /// Only entries the guest has accessed (A set), KVM's rule
    /// (`paging_tmpl.h`, "Prefetch only accessed entries"): the shadow
    /// never maps what the CPU has not walked.
    #[default]
    Exact,
    /// Also present entries with A clear, setting A in each with the
    /// compare-exchange a CPU walk uses, as a CPU that caches translations
    /// for speculative accesses may (Intel SDM Vol. 3A 4.10.2.3). Writable
    /// only if the guest's D is already set: D is set by writes alone.
    Speculative,
}

/// A range of guest-virtual addresses that belongs to the hypervisor: one
/// top-level entry of every shadow root points into the hidden region, and
/// guest translations there are refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hole {
    /// The top-level (PML4 or PML5) index the hole occupies.
    pub root_index: u16,
    /// The entry installed at that index in every root.
    pub entry: u64,
}

/// How a [`Mmu`](crate::Mmu) is built.
#[derive(Debug)]
pub struct MmuConfig {
    /// Shadow-physical address of the first shadow page.
    pub arena_base: u64,
    /// Most shadow pages in use at once (8 to 4,194,304); the oldest are
    /// reclaimed beyond it. Small caps are for testing reclaim: a guest
    /// makes progress only while the shadow paging structures of what one
    /// instruction and an interrupt's delivery touch fit at once, and
    /// below about 16 pages they may not (a guest taking a timer tick
    /// every millisecond at 12 pages spends every tick re-faulting what
    /// the last one evicted). KVM never goes below 64.
    pub max_pages: u32,
    /// Number of vCPUs.
    pub vcpus: usize,
    /// Guest entries around a faulting one whose mappings are installed by
    /// the same fault (a power of two, 1..=512; 1 disables prefetch).
    pub prefetch_window: usize,
    /// Which of them: accessed entries only, or also never-accessed ones.
    pub prefetch: Prefetch,
    /// How many accessed bits set by [`Prefetch::Speculative`] the MMU
    /// remembers, in order, for [`Mmu::take_speculative_marks`](crate::Mmu::take_speculative_marks)
    /// (0, the default: none). For differential tests and audits, which
    /// must tell an accessed bit a speculating CPU may set from a wrong one.
    pub speculative_log: usize,
    /// Previous roots each vCPU keeps for cheap CR3 switches.
    pub cached_roots: usize,
    /// Let 4 KiB guest page tables go unsync instead of write-protecting
    /// them.
    pub unsync: bool,
    /// Largest page the shadow tables may use: 1 (4 KiB), 2 (2 MiB) or
    /// 3 (1 GiB). The hosts this was built on walk no 1 GiB shadow pages.
    pub max_mapping_level: u8,
    /// Policy for writes to shadowed page tables.
    pub table_writes: TableWrites,
    /// The hypervisor hole, if the embedding VMM has one.
    pub hole: Option<Hole>,
    /// Shadow-physical ranges no shadow leaf may ever point into (the
    /// hidden region); the arena is always included.
    pub hidden: Vec<Range<u64>>,
    /// Guest frames to shadow-physical frames.
    pub frames: Box<dyn FrameMap>,
    /// Where guest entries that point into the hidden region are mapped
    /// instead: a page of a registered MMIO range with nothing behind it, so
    /// that such accesses behave as they would on a machine without the
    /// hidden region (reads of all-ones, dropped writes, as the VMM's MMIO
    /// handler decides). `None`: such accesses are reported as MMIO and
    /// never mapped.
    pub hidden_sink: Option<u64>,
}

impl Default for MmuConfig {
    fn default() -> Self {
        MmuConfig {
            arena_base: 1 << 46,
            max_pages: 4096,
            vcpus: 1,
            prefetch_window: 512,
            prefetch: Prefetch::Exact,
            speculative_log: 0,
            cached_roots: 64,
            unsync: true,
            max_mapping_level: 2,
            table_writes: TableWrites::Unprotect,
            hole: None,
            hidden: Vec::new(),
            frames: Box::new(IdentityFrames),
            hidden_sink: None,
        }
    }
}
