// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The [`ShadowMmu`] trait, what its operations return, and [`Mmu`], its
//! implementation over vm-memory's `AtomicGuestMemoryMmap`.
//!
//! Concurrency follows KVM's shadow MMU: one lock per VM guards the shadow
//! state; guest walks run outside it and are re-validated under it (the
//! memory-change sequence number, and a re-read of every guest entry a new
//! link is built from).

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

use vm_memory::{GuestAddressSpace, GuestMemoryMmap};

use crate::addr::{Gfn, GuestAddress, Gva};
use crate::arch::{Access, PagingState, PfErrorCode};
use crate::audit::AuditError;
use crate::changes::Changes;
use crate::config::{AtomicGuestMemory, GuestRam, MmuConfig};
use crate::dirty::DirtyTable;
use crate::error::MmuError;
use crate::lock::{VcpuLock, OTHER_THREADS};
use crate::outcome::FaultOutcome;
use crate::spt::{Arena, Pages};
use crate::state::{MmuState, Shared};
use crate::stats::{CounterShards, SpeculativeMarks, Stats};
use crate::walker;

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
    fn flush_completed(&self) {
        self.flush_completed_upto(u64::MAX);
    }

    /// The mark of the latest freed shadow page: pages freed from now on
    /// get higher marks. With several vCPUs the VMM reads it before a
    /// change and releases only the pages whose mark every CPU's flush
    /// covers ([`ShadowMmu::flush_completed_upto`]).
    fn free_mark(&self) -> u64;

    /// Every vCPU flushed after the pages with marks up to `mark` were
    /// freed (and after the stores that unlinked them took effect): those
    /// pages may be reused.
    fn flush_completed_upto(&self, mark: u64);

    /// Registers a guest-physical MMIO range that shadow entries may map
    /// (accesses then exit to the VMM without a shadow fault).
    fn register_mmio(&self, range: Range<u64>);

    /// Checks every invariant of the shadow state.
    fn audit(&self) -> Result<(), AuditError>;

    /// Counters.
    fn stats(&self) -> Stats;
}

/// The shadow MMU of one VM, over guest memory `M` (by default a
/// `GuestMemoryMmap` without a dirty bitmap; a VMM that logs dirty pages
/// passes its own, and the MMU's stores into guest memory are logged).
pub struct Mmu<M: GuestRam = GuestMemoryMmap> {
    shared: Shared<M>,
}

impl<M: GuestRam> fmt::Debug for Mmu<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mmu")
            .field("seq", &self.shared.seq.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<M: GuestRam> Mmu<M> {
    /// Creates the MMU and maps its arena.
    pub fn new(mem: AtomicGuestMemory<M>, mut config: MmuConfig) -> Result<Mmu<M>, MmuError> {
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
        let pages = Pages::new(arena);
        Ok(Mmu {
            shared: Shared {
                mem,
                seq: AtomicU64::new(0),
                freed: pages.free_mark(),
                stats: CounterShards::new(config.vcpus),
                state: VcpuLock::new(config.vcpus, MmuState::new(pages, config)),
            },
        })
    }

    /// The guest memory this MMU reads.
    pub fn memory(&self) -> &AtomicGuestMemory<M> {
        &self.shared.mem
    }

    /// Shadow-physical base, host address and size of the arena, for
    /// registering it with the hypervisor.
    pub fn arena_region(&self) -> (u64, *mut u8, u64) {
        let st = self.shared.state.read(OTHER_THREADS);
        let a = &st.pages.arena;
        (a.base(), a.host_address(), a.size())
    }

    /// Reads shadow entry at shadow-physical `addr` (tests, debuggers).
    pub fn read_spte(&self, addr: u64) -> Option<u64> {
        use crate::pte::PteMemory;
        self.shared
            .state
            .write()
            .pages
            .arena
            .load_u64(GuestAddress(addr))
    }

    /// Walks the vCPU's current shadow tables for `gva` as the CPU would,
    /// returning the shadow-physical address and the rights of the
    /// translation, or `None` if the CPU would fault for lack of an entry.
    pub fn shadow_translate(&self, vcpu: usize, gva: Gva) -> Option<(u64, crate::PteAccess)> {
        let st = self.shared.state.read(vcpu);
        st.shadow_translate(vcpu, gva)
    }

    /// Whether a guest write to `gfn` would fault because it is a shadowed
    /// page table (guests cannot write such pages directly).
    pub fn is_write_protected(&self, gfn: Gfn) -> bool {
        self.shared
            .state
            .read(OTHER_THREADS)
            .is_write_protected(gfn)
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
        let st = self.shared.state.read(vcpu);
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

    /// The clean guest entries of the leaf table through which vCPU
    /// `vcpu` maps `gva` now, which a write may make dirty without a fault
    /// reaching the MMU ([`crate::dirty`]). They stay valid until the next
    /// call for `vcpu` or any call that changes shadow entries: a VMM that
    /// resolves such writes itself must stop doing so before either, and
    /// call [`Mmu::dirty_taken`] first ([`crate::DirtyEntry`]).
    pub fn dirty_table(&self, vcpu: usize, gva: Gva) -> Option<DirtyTable> {
        let mem = self.shared.mem.memory();
        self.shared.state.read(vcpu).dirty_table(&*mem, vcpu, gva)
    }

    /// Takes over the leaves of `table` that were made writable outside the
    /// MMU ([`DirtyEntry::dirty_spte`]); any other value stays what it was
    /// and is the arena's corruption check's to find. Returns how many
    /// were taken over, and the changes for a leaf whose frame became a
    /// shadowed page table meanwhile, which is made read-only again.
    pub fn dirty_taken(&self, table: &DirtyTable) -> (usize, Changes) {
        let mut st = self.shared.state.write();
        st.begin_op();
        let taken = st.dirty_taken(table);
        self.shared
            .stats
            .shard(OTHER_THREADS)
            .dirty_taken
            .fetch_add(taken as u64, Ordering::Relaxed);
        (taken, st.take_changes())
    }

    /// The accessed bits set speculatively since the last call, and how
    /// many did not fit ([`MmuConfig::speculative_log`](crate::MmuConfig::speculative_log));
    /// the log starts empty again.
    pub fn take_speculative_marks(&self) -> SpeculativeMarks {
        std::mem::take(&mut self.shared.state.write().marks)
    }

    pub(crate) fn vcpu_state(&self, vcpu: usize) -> Result<PagingState, MmuError> {
        let st = self.shared.state.read(vcpu);
        st.vcpu(vcpu)?.state.ok_or(MmuError::NoPagingState(vcpu))
    }
}

impl<M: GuestRam> ShadowMmu for Mmu<M> {
    fn load_paging_state(
        &self,
        vcpu: usize,
        state: &PagingState,
    ) -> Result<(u64, Changes), MmuError> {
        let mem = self.shared.mem.memory();
        let mut st = self.shared.state.write();
        let root = st.load_paging_state(&*mem, vcpu, state, self.shared.stats.shard(vcpu))?;
        Ok((root, st.take_changes()))
    }

    fn set_eflags_ac(&self, vcpu: usize, ac: bool) -> Result<(), MmuError> {
        // Called before every fault; it rarely changes anything, and only
        // a change needs the exclusive lock.
        if self
            .shared
            .state
            .read(vcpu)
            .vcpu(vcpu)?
            .state
            .is_none_or(|s| s.eflags_ac == ac)
        {
            return Ok(());
        }
        let mut st = self.shared.state.write();
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
        crate::fault::page_fault(&self.shared, vcpu, gva, error_code)
    }

    fn invlpg(&self, vcpu: usize, gva: Gva) -> Result<Changes, MmuError> {
        let mut st = self.shared.state.write();
        st.invlpg(vcpu, gva, self.shared.stats.shard(vcpu))?;
        Ok(st.take_changes())
    }

    fn flush_tlb(&self, vcpu: usize) -> Result<Changes, MmuError> {
        let mem = self.shared.mem.memory();
        let mut st = self.shared.state.write();
        st.vcpu(vcpu)?;
        st.sync_all(&*mem, self.shared.stats.shard(vcpu));
        st.changes.flush_local = true;
        Ok(st.take_changes())
    }

    fn gva_to_gpa(&self, vcpu: usize, gva: Gva, access: Access) -> Result<GuestAddress, MmuError> {
        let state = self.vcpu_state(vcpu)?;
        let mem = self.shared.mem.memory();
        Ok(walker::gva_to_gpa(&*mem, &state, gva, access)?)
    }

    fn prefetch(&self, vcpu: usize, gva: Gva) -> Result<Changes, MmuError> {
        crate::fault::prefetch(&self.shared, vcpu, gva)
    }

    fn track_write(&self, gpa: GuestAddress, len: usize) -> Changes {
        let mem = self.shared.mem.memory();
        let mut st = self.shared.state.write();
        st.track_write(&*mem, gpa, len, self.shared.stats.shard(OTHER_THREADS));
        st.take_changes()
    }

    fn memory_changed(&self) -> Changes {
        let mut st = self.shared.state.write();
        self.shared.seq.fetch_add(1, Ordering::AcqRel);
        st.zap_all(self.shared.stats.shard(OTHER_THREADS));
        st.take_changes()
    }

    fn free_mark(&self) -> u64 {
        self.shared.freed.load(Ordering::SeqCst)
    }

    fn flush_completed_upto(&self, mark: u64) {
        self.shared.state.write().pages.flush_completed(mark);
    }

    fn register_mmio(&self, range: Range<u64>) {
        let mut st = self.shared.state.write();
        st.mmio.push(range);
    }

    fn audit(&self) -> Result<(), AuditError> {
        let mem = self.shared.mem.memory();
        let st = self.shared.state.write();
        st.audit(&*mem)
    }

    fn stats(&self) -> Stats {
        let st = self.shared.state.read(OTHER_THREADS);
        self.shared.stats.snapshot(st.gauges())
    }
}
