// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The [`ShadowMmu`] trait, what its operations return, and [`Mmu`], its
//! implementation over vm-memory's `GuestMemoryMmap`.
//!
//! Concurrency follows KVM's shadow MMU: one lock per VM guards the shadow
//! state; guest walks run outside it and are re-validated under it (the
//! memory-change sequence number, and a re-read of every guest entry a new
//! link is built from).

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use thiserror::Error;
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryBackend, GuestMemoryMmap};

use crate::addr::{Gfn, GuestAddress, Gva, PAGE_SHIFT};
use crate::arch::{Access, PagingState, PfErrorCode};
use crate::audit::AuditError;
use crate::spt::{Arena, ArenaError, Pages};
use crate::state::MmuState;
use crate::stats::Stats;
use crate::walker::{self, WalkError};

/// The guest memory type the MMU reads guest tables from.
pub type GuestMemory = GuestMemoryAtomic<GuestMemoryMmap>;

/// Where the frames behind guest-physical memory live in the
/// shadow-physical space that shadow entries point to.
///
/// Under KVM that space is KVM's guest-physical space and RAM maps 1:1
/// ([`IdentityFrames`]); a bare-metal hypervisor would return host-physical
/// frames here.
pub trait FrameMap: Send + Sync + fmt::Debug {
    /// The shadow-physical address of the frame backing `gfn`, or `None` when
    /// no guest RAM is there.
    fn frame(&self, mem: &GuestMemoryMmap, gfn: Gfn) -> Option<u64>;

    /// Whether `pages` frames from `gfn` are RAM backed by one contiguous,
    /// equally aligned shadow-physical range (so one large entry can map
    /// them).
    fn contiguous(&self, mem: &GuestMemoryMmap, gfn: Gfn, pages: u64) -> bool;
}

/// Guest RAM at the same address in shadow-physical space (KVM memslots).
#[derive(Clone, Copy, Debug, Default)]
pub struct IdentityFrames;

impl FrameMap for IdentityFrames {
    fn frame(&self, mem: &GuestMemoryMmap, gfn: Gfn) -> Option<u64> {
        let gpa = gfn.gpa();
        mem.address_in_range(gpa).then_some(gpa.0)
    }

    fn contiguous(&self, mem: &GuestMemoryMmap, gfn: Gfn, pages: u64) -> bool {
        let Some(len) = pages.checked_mul(1 << PAGE_SHIFT) else {
            return false;
        };
        let Ok(len) = usize::try_from(len) else {
            return false;
        };
        mem.check_range(gfn.gpa(), len)
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
    /// [`ShadowMmu::track_write`].
    Emulate,
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

/// How a [`Mmu`] is built.
#[derive(Debug)]
pub struct MmuConfig {
    /// Shadow-physical address of the first shadow page.
    pub arena_base: u64,
    /// Most shadow pages in use at once (8 to 4,194,304); the oldest are
    /// reclaimed beyond it.
    pub max_pages: u32,
    /// Number of vCPUs.
    pub vcpus: usize,
    /// Guest entries around a faulting one whose mappings are installed by
    /// the same fault (a power of two, 1..=512; 1 disables prefetch).
    pub prefetch_window: usize,
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

/// An exception the guest must receive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestException {
    /// #PF with this error code; CR2 is the faulting address.
    PageFault {
        /// The error code to push.
        error_code: PfErrorCode,
        /// The value for CR2.
        cr2: Gva,
    },
    /// #GP(0).
    GeneralProtection,
}

/// How a page fault was resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultOutcome {
    /// A shadow entry now allows the access: resume the guest.
    Fixed,
    /// Nothing the guest can see changed (a race with another change, or no
    /// free shadow page until the returned flush completes): resume, and the
    /// access faults again if it still must.
    Retry,
    /// The guest's own tables deny the access: deliver this exception.
    Inject(GuestException),
    /// The address is not RAM: emulate the access as MMIO.
    Mmio {
        /// The guest-physical address accessed.
        gpa: GuestAddress,
    },
    /// A write to a shadowed guest page table: emulate it, then report it
    /// with [`ShadowMmu::track_write`].
    Emulate {
        /// The guest-physical address written.
        gpa: GuestAddress,
    },
}

/// A change to a shadow entry that was present.
///
/// The value is already in the arena. On hosts whose hypervisor itself
/// shadows the shadow tables (KVM without TDP), a store made by the VMM into a
/// present entry is never seen: the guest (its trampoline) must store the
/// value again itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpteWrite {
    /// Shadow-physical address of the entry.
    pub addr: u64,
    /// Its new value.
    pub value: u64,
}

/// What the embedding VMM must do before an operation's effect is complete.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[must_use = "shadow changes take effect only once flushed"]
pub struct Changes {
    /// Addresses to `invlpg` on the calling vCPU.
    pub invlpg: Vec<Gva>,
    /// Flush the calling vCPU's whole TLB.
    pub flush_local: bool,
    /// Flush every vCPU's TLB, then call [`ShadowMmu::flush_completed`].
    pub flush_all: bool,
    /// Present entries that changed, in order.
    pub spte_writes: Vec<SpteWrite>,
    /// Shadow-physical addresses of pages that left the free list after an
    /// earlier use; hosts that cache shadow tables need a guest store into
    /// each before it is linked.
    pub reused_pages: Vec<u64>,
}

impl Changes {
    /// Whether nothing needs doing.
    pub fn is_empty(&self) -> bool {
        *self == Changes::default()
    }

    /// Appends `other`.
    pub fn merge(&mut self, mut other: Changes) {
        self.invlpg.append(&mut other.invlpg);
        self.flush_local |= other.flush_local;
        self.flush_all |= other.flush_all;
        self.spte_writes.append(&mut other.spte_writes);
        self.reused_pages.append(&mut other.reused_pages);
    }
}

/// Errors of MMU operations (guest faults are outcomes, not errors).
#[derive(Debug, Error)]
pub enum MmuError {
    /// No such vCPU.
    #[error("vCPU {0} does not exist")]
    NoSuchVcpu(usize),
    /// The vCPU has no paging state yet.
    #[error("vCPU {0} has no paging state; call load_paging_state first")]
    NoPagingState(usize),
    /// No shadow page for a root: pages were reclaimed but may still be
    /// cached by some CPU. Flush every vCPU, call
    /// [`ShadowMmu::flush_completed`], and retry.
    #[error("no free shadow page for a root; flush all vCPUs and retry")]
    OutOfPages,
    /// The configuration is unusable.
    #[error("invalid MMU configuration: {0}")]
    Config(&'static str),
    /// The arena could not be created.
    #[error(transparent)]
    Arena(#[from] ArenaError),
    /// The guest walk failed.
    #[error("guest walk failed: {0}")]
    Walk(#[from] WalkError),
}

/// A shadow MMU for one VM: builds and maintains shadow page tables from the
/// guest's own, for any number of vCPUs.
pub trait ShadowMmu: Send + Sync {
    /// The vCPU loaded new paging state (a CR3 write, a paging-mode or
    /// control-bit change). Returns the shadow-physical address for the
    /// vCPU's real CR3. As `mov cr3`, this is a TLB flush unless CR4.PCIDE
    /// and CR3 bit 63 say otherwise.
    fn load_paging_state(
        &self,
        vcpu: usize,
        state: &PagingState,
    ) -> Result<(u64, Changes), MmuError>;

    /// Updates EFLAGS.AC (which decides SMAP for explicit accesses) for the
    /// vCPU's next faults.
    fn set_eflags_ac(&self, vcpu: usize, ac: bool) -> Result<(), MmuError>;

    /// Handles a page fault the vCPU took on the shadow tables. The error
    /// code's P bit is ignored: the guest's tables decide.
    fn page_fault(
        &self,
        vcpu: usize,
        gva: Gva,
        error_code: PfErrorCode,
    ) -> Result<(FaultOutcome, Changes), MmuError>;

    /// The guest executed INVLPG: drop the shadow of `gva`. Nothing is
    /// prefaulted (an older INVLPG could otherwise install a translation
    /// a newer guest write has replaced).
    fn invlpg(&self, vcpu: usize, gva: Gva) -> Result<Changes, MmuError>;

    /// The guest flushed its TLB without changing CR3: unsync pages are
    /// brought up to date.
    fn flush_tlb(&self, vcpu: usize) -> Result<Changes, MmuError>;

    /// Translates `gva` as the vCPU would for `access` (setting A/D bits).
    fn gva_to_gpa(&self, vcpu: usize, gva: Gva, access: Access) -> Result<GuestAddress, MmuError>;

    /// Installs the shadow of `gva` if the guest maps it, without an access
    /// (for prefaulting before the guest runs). Faults are not reported.
    fn prefetch(&self, vcpu: usize, gva: Gva) -> Result<Changes, MmuError>;

    /// The VMM emulated a write of `len` bytes at `gpa` into a page the MMU
    /// shadows as a page table (the write has reached guest memory).
    fn track_write(&self, gpa: GuestAddress, len: usize) -> Changes;

    /// The guest memory map was swapped (hotplug, unplug, remap).
    fn memory_changed(&self) -> Changes;

    /// Every vCPU flushed after a [`Changes::flush_all`]: freed shadow pages
    /// may be reused.
    fn flush_completed(&self);

    /// Registers a guest-physical MMIO range that shadow entries may map
    /// (accesses then exit to the VMM without a shadow fault).
    fn register_mmio(&self, range: Range<u64>);

    /// Checks every invariant of the shadow state.
    fn audit(&self) -> Result<(), AuditError>;

    /// Counters.
    fn stats(&self) -> Stats;
}

/// The shadow MMU of one VM.
pub struct Mmu {
    pub(crate) mem: GuestMemory,
    pub(crate) seq: AtomicU64,
    pub(crate) state: Mutex<MmuState>,
    pub(crate) stats: crate::stats::Counters,
}

impl fmt::Debug for Mmu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mmu")
            .field("seq", &self.seq.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Mmu {
    /// Creates the MMU and maps its arena.
    pub fn new(mem: GuestMemory, mut config: MmuConfig) -> Result<Mmu, MmuError> {
        if config.vcpus == 0 {
            return Err(MmuError::Config("at least one vCPU is needed"));
        }
        if !config.prefetch_window.is_power_of_two() || config.prefetch_window > 512 {
            return Err(MmuError::Config(
                "prefetch_window must be a power of two up to 512",
            ));
        }
        if !(1..=3).contains(&config.max_mapping_level) {
            return Err(MmuError::Config("max_mapping_level must be 1, 2 or 3"));
        }
        if config.max_pages < 8 {
            return Err(MmuError::Config("max_pages must be at least 8"));
        }
        if config.max_pages > crate::spt::rmap::MAX_PAGES {
            return Err(MmuError::Config(
                "max_pages must be at most 4194304 (16 GiB of shadow tables)",
            ));
        }
        if config.hidden_sink.is_some_and(|s| !s.is_multiple_of(4096)) {
            return Err(MmuError::Config("hidden_sink must be page-aligned"));
        }
        let arena = Arena::new(config.arena_base, config.max_pages)?;
        config
            .hidden
            .push(arena.base()..arena.base() + arena.size());
        Ok(Mmu {
            mem,
            seq: AtomicU64::new(0),
            state: Mutex::new(MmuState::new(Pages::new(arena), config)),
            stats: crate::stats::Counters::default(),
        })
    }

    /// The guest memory this MMU reads.
    pub fn memory(&self) -> &GuestMemory {
        &self.mem
    }

    /// Shadow-physical base, host address and size of the arena, for
    /// registering it with the hypervisor.
    pub fn arena_region(&self) -> (u64, *mut u8, u64) {
        let st = self.state.lock();
        let a = &st.pages.arena;
        (a.base(), a.host_address(), a.size())
    }

    /// Reads shadow entry at shadow-physical `addr` (tests, debuggers).
    pub fn read_spte(&self, addr: u64) -> Option<u64> {
        use crate::pte::PteMemory;
        self.state.lock().pages.arena.load_u64(GuestAddress(addr))
    }

    /// Walks the vCPU's current shadow tables for `gva` as the CPU would,
    /// returning the shadow-physical address and the rights of the
    /// translation, or `None` if the CPU would fault for lack of an entry.
    pub fn shadow_translate(&self, vcpu: usize, gva: Gva) -> Option<(u64, crate::PteAccess)> {
        let st = self.state.lock();
        st.shadow_translate(vcpu, gva)
    }

    /// Whether a guest write to `gfn` would fault because it is a shadowed
    /// page table (guests cannot write such pages directly).
    pub fn is_write_protected(&self, gfn: Gfn) -> bool {
        self.state.lock().is_write_protected(gfn)
    }

    /// The cached roots vCPU `vcpu` could switch to right now with nothing
    /// else to do, as (guest CR3, shadow root) pairs: those that a CR3 load
    /// from the current 4-level state would find, and only while no shadow
    /// page is unsync (a CR3 load must sync those first).
    /// Each root stays allocated until `vcpu`'s next
    /// [`ShadowMmu::load_paging_state`], [`ShadowMmu::page_fault`] or other
    /// call that may release or reclaim it: a VMM that lets the vCPU switch
    /// to one of them by itself must tell the MMU (with
    /// `load_paging_state`) before any other call for that vCPU.
    pub fn switchable_roots(&self, vcpu: usize) -> Vec<(u64, u64)> {
        let st = self.state.lock();
        let Ok(v) = st.vcpu(vcpu) else {
            return Vec::new();
        };
        let Some(current) = v.root.as_ref() else {
            return Vec::new();
        };
        if !st.unsync.is_empty() || current.key.mode != crate::arch::PagingMode::Level4 {
            return Vec::new();
        }
        // The root a CR3 load finds is the one whose key matches: with the
        // same role and mode, the key differs only in the table.
        v.prev
            .iter()
            .chain(std::iter::once(current))
            .filter(|r| r.key.role == current.key.role && r.key.mode == current.key.mode)
            .map(|r| (r.state.cr3, st.pages.arena.page_address(r.page)))
            .collect()
    }

    pub(crate) fn vcpu_state(&self, vcpu: usize) -> Result<PagingState, MmuError> {
        let st = self.state.lock();
        st.vcpu(vcpu)?.state.ok_or(MmuError::NoPagingState(vcpu))
    }
}

impl ShadowMmu for Mmu {
    fn load_paging_state(
        &self,
        vcpu: usize,
        state: &PagingState,
    ) -> Result<(u64, Changes), MmuError> {
        let mem = self.mem.memory();
        let mut st = self.state.lock();
        let root = st.load_paging_state(&mem, vcpu, state, &self.stats)?;
        Ok((root, st.take_changes()))
    }

    fn set_eflags_ac(&self, vcpu: usize, ac: bool) -> Result<(), MmuError> {
        let mut st = self.state.lock();
        let v = st.vcpu_mut(vcpu)?;
        if let Some(s) = v.state.as_mut() {
            s.eflags_ac = ac;
        }
        Ok(())
    }

    fn page_fault(
        &self,
        vcpu: usize,
        gva: Gva,
        error_code: PfErrorCode,
    ) -> Result<(FaultOutcome, Changes), MmuError> {
        crate::fault::page_fault(self, vcpu, gva, error_code)
    }

    fn invlpg(&self, vcpu: usize, gva: Gva) -> Result<Changes, MmuError> {
        let mut st = self.state.lock();
        st.invlpg(vcpu, gva, &self.stats)?;
        Ok(st.take_changes())
    }

    fn flush_tlb(&self, vcpu: usize) -> Result<Changes, MmuError> {
        let mem = self.mem.memory();
        let mut st = self.state.lock();
        st.vcpu(vcpu)?;
        st.sync_all(&mem, &self.stats);
        st.changes.flush_local = true;
        Ok(st.take_changes())
    }

    fn gva_to_gpa(&self, vcpu: usize, gva: Gva, access: Access) -> Result<GuestAddress, MmuError> {
        let state = self.vcpu_state(vcpu)?;
        let mem = self.mem.memory();
        Ok(walker::gva_to_gpa(&*mem, &state, gva, access)?)
    }

    fn prefetch(&self, vcpu: usize, gva: Gva) -> Result<Changes, MmuError> {
        crate::fault::prefetch(self, vcpu, gva)
    }

    fn track_write(&self, gpa: GuestAddress, len: usize) -> Changes {
        let mem = self.mem.memory();
        let mut st = self.state.lock();
        st.track_write(&mem, gpa, len, &self.stats);
        st.take_changes()
    }

    fn memory_changed(&self) -> Changes {
        let mut st = self.state.lock();
        self.seq.fetch_add(1, Ordering::AcqRel);
        st.zap_all(&self.stats);
        st.take_changes()
    }

    fn flush_completed(&self) {
        self.state.lock().pages.flush_completed();
    }

    fn register_mmio(&self, range: Range<u64>) {
        let mut st = self.state.lock();
        st.mmio.push(range);
    }

    fn audit(&self) -> Result<(), AuditError> {
        let mem = self.mem.memory();
        let st = self.state.lock();
        st.audit(&mem)
    }

    fn stats(&self) -> Stats {
        let st = self.state.lock();
        self.stats.snapshot(&st)
    }
}
