// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The shadow state guarded by the MMU lock, and the primitives every
//! operation is built from: changing an entry, linking and zapping pages,
//! write protection, unsync, and installing leaves.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::ops::Range;
use std::sync::atomic::AtomicU64;

use vm_memory::GuestMemoryBackend;

use crate::addr::{Gfn, GuestAddress, Gva};
use crate::arch::{PagingState, PteAccess};
use crate::changes::{Changes, SpteWrite};
use crate::config::{AtomicGuestMemory, GuestRam, MmuConfig};
use crate::error::MmuError;
use crate::lock::VcpuLock;
use crate::pte::{HostWindow, PteMemory, PTE_D, PTE_U, PTE_W};
use crate::spt::rmap::Rmap;
use crate::spt::{Origin, OutOfPages, PageId, Pages, Role, ShadowPage, SptePtr};
use crate::spte;
use crate::stats::{CounterShards, Counters, Gauges, SpeculativeMarks};

/// The key of a root: the guest's top table and everything that changes how
/// it is shadowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct RootKey {
    /// Guest-physical address of the top table (PDPT for PAE).
    pub table: u64,
    /// PAE PDPTE registers (zero in other modes).
    pub pdptrs: [u64; 4],
    /// Role bits of the guest state, at the root's level.
    pub role: Role,
    /// Paging mode.
    pub mode: crate::arch::PagingMode,
}

/// A shadow root in use by a vCPU, current or cached.
#[derive(Clone, Debug)]
pub(crate) struct Root {
    pub key: RootKey,
    /// The top shadow page (what CR3 points to).
    pub page: PageId,
    /// For 32-bit and PAE guests, the synthetic level-3 page under it.
    pub synthetic: Option<PageId>,
    /// The guest state the root was built for.
    pub state: PagingState,
}

/// Per-vCPU shadow state.
#[derive(Debug, Default)]
pub(crate) struct VcpuMmu {
    pub state: Option<PagingState>,
    pub root: Option<Root>,
    pub prev: VecDeque<Root>,
}

/// Everything the MMU lock guards.
#[derive(Debug)]
pub(crate) struct MmuState {
    pub pages: Pages,
    pub rmap: Rmap,
    pub unsync: BTreeSet<PageId>,
    /// (level, first gfn) of large ranges holding a shadowed page table.
    pub lpage_disallow: HashMap<(u8, u64), u32>,
    pub vcpus: Vec<VcpuMmu>,
    pub changes: Changes,
    pub mmio: Vec<Range<u64>>,
    pub cfg: MmuConfig,
    /// Pages used at or after this stamp belong to the running operation and
    /// are not reclaimed by it.
    pub op_stamp: u64,
    /// What the guest's CPUID says about paging.
    pub cpuid: GuestCpuid,
    /// Accessed bits set speculatively, if [`MmuConfig::speculative_log`]
    /// asks for them.
    pub marks: SpeculativeMarks,
}

/// The paging features the guest's CPUID reports, which decide what its
/// entries may hold (reserved bits) and map.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct GuestCpuid {
    /// MAXPHYADDR.
    pub maxphyaddr: u8,
    /// 1 GiB pages.
    pub gbpages: bool,
    /// PSE-36 (32-bit paging: 4 MiB pages above 4 GiB).
    pub pse36: bool,
}

/// Frames covered by one entry at `level`.
#[inline]
pub(crate) const fn frames_at(level: u8) -> u64 {
    1u64 << (9 * (level as u32 - 1))
}

/// Index of `gva` in a 64-bit shadow page at `level`.
#[inline]
pub(crate) const fn shadow_index(gva: u64, level: u8) -> usize {
    ((gva >> (12 + 9 * (level as u32 - 1))) & 511) as usize
}

/// Everything an MMU operation works on: the guest memory, the shadow state
/// under its lock, and what is read or counted without the lock.
pub(crate) struct Shared<M: GuestRam> {
    pub mem: AtomicGuestMemory<M>,
    /// Bumped whenever the guest memory map changes: a guest walk made
    /// outside the lock is stale if it moved meanwhile.
    pub seq: AtomicU64,
    /// The pages' free mark ([`crate::ShadowMmu::free_mark`]), readable
    /// without the lock.
    pub freed: std::sync::Arc<AtomicU64>,
    pub state: VcpuLock<MmuState>,
    pub stats: CounterShards,
}

impl MmuState {
    /// Sizes for a [`Stats`](crate::Stats) snapshot.
    pub fn gauges(&self) -> Gauges {
        Gauges {
            pages_in_use: u64::from(self.pages.live()),
            pages_pending: self.pages.pending() as u64,
            rmap_entries: self.rmap.len() as u64,
            unsync_pages: self.unsync.len() as u64,
        }
    }

    pub fn new(pages: Pages, cfg: MmuConfig) -> MmuState {
        let mut vcpus = Vec::with_capacity(cfg.vcpus);
        vcpus.resize_with(cfg.vcpus, VcpuMmu::default);
        MmuState {
            pages,
            rmap: Rmap::default(),
            unsync: BTreeSet::new(),
            lpage_disallow: HashMap::new(),
            vcpus,
            changes: Changes::default(),
            mmio: Vec::new(),
            cfg,
            op_stamp: 0,
            cpuid: GuestCpuid {
                maxphyaddr: 48,
                gbpages: true,
                pse36: true,
            },
            marks: SpeculativeMarks::default(),
        }
    }

    pub fn vcpu(&self, vcpu: usize) -> Result<&VcpuMmu, MmuError> {
        self.vcpus.get(vcpu).ok_or(MmuError::NoSuchVcpu(vcpu))
    }

    pub fn vcpu_mut(&mut self, vcpu: usize) -> Result<&mut VcpuMmu, MmuError> {
        self.vcpus.get_mut(vcpu).ok_or(MmuError::NoSuchVcpu(vcpu))
    }

    /// Starts an operation: nothing it touches from now on is reclaimed by it.
    pub fn begin_op(&mut self) {
        self.op_stamp = self.pages.current_clock() + 1;
    }

    pub fn take_changes(&mut self) -> Changes {
        std::mem::take(&mut self.changes)
    }

    /// A paging state with the guest's CPUID facts and `role`'s semantics.
    pub fn role_state(&self, role: Role) -> PagingState {
        let c = self.cpuid;
        role.paging_state(c.maxphyaddr, c.gbpages, c.pse36)
    }

    /// Writes `new` into an entry, recording what the VMM must do if the
    /// entry was present.
    pub fn set_spte(&mut self, ptr: SptePtr, new: u64) {
        let arena = &self.pages.arena;
        let index = usize::from(ptr.index);
        let old = arena.load(ptr.page, index);
        if old == new {
            return;
        }
        arena.store(ptr.page, index, new);
        if spte::is_present(old) {
            self.changes.spte_writes.push(SpteWrite {
                addr: arena.page_address(ptr.page) + 8 * u64::from(ptr.index),
                value: new,
            });
            if spte::needs_flush(old, new) {
                self.changes.flush_all = true;
            }
        }
    }

    /// Entry `index` of `page` as the MMU wrote it, or the error that stops
    /// the VM if the CPU would see something else (`spt::arena`).
    pub fn verified(&self, page: PageId, index: usize) -> Result<u64, MmuError> {
        let arena = &self.pages.arena;
        arena
            .verify(page, index)
            .map_err(|c| MmuError::ShadowCorrupted {
                addr: arena.page_address(c.page) + 8 * c.index as u64,
                expected: c.expected,
                found: c.found,
            })
    }

    /// Clears an entry and forgets what it referenced. The hole's entry in
    /// a top-level page is the VMM's and is never cleared.
    pub fn drop_spte(&mut self, ptr: SptePtr) {
        let Some(page) = self.pages.get(ptr.page) else {
            return;
        };
        let level = page.role.level();
        let index = usize::from(ptr.index);
        if self.is_hole_slot(page.role, index) {
            return;
        }
        let old = self.pages.arena.load(ptr.page, index);
        if !spte::is_present(old) {
            return;
        }
        if spte::is_leaf(old, level) {
            let gfn = page.frames.gfn(index, old);
            self.rmap.remove(gfn, ptr);
        } else if let Some(child) = self.pages.arena.page_at(spte::target(old)) {
            if let Some(c) = self.pages.get_mut(child) {
                c.parents.retain(|&p| p != ptr);
            }
        }
        self.set_spte(ptr, 0);
    }

    /// Makes entry `ptr` (not present) link to `child`.
    pub fn link(&mut self, ptr: SptePtr, child: PageId) {
        let addr = self.pages.arena.page_address(child);
        self.set_spte(ptr, spte::link(addr));
        if let Some(c) = self.pages.get_mut(child) {
            // At most one record per entry, whatever happened to the entry
            // meanwhile: the records are bounded by the arena's entries.
            if !c.parents.contains(&ptr) {
                c.parents.push(ptr);
            }
        }
    }

    /// Unlinks page `id` everywhere and frees it (after the next flush).
    /// Roots are emptied but kept.
    pub fn zap_page(&mut self, id: PageId, stats: &Counters) {
        let Some(page) = self.pages.get(id) else {
            return;
        };
        let is_root = page.root_count > 0;
        for i in 0..crate::spt::ENTRIES {
            // Keep a root's own structure: the link to its synthetic level
            // and the hypervisor hole.
            if is_root && self.is_fixed_root_entry(id, i) {
                continue;
            }
            self.drop_spte(SptePtr::new(id, i));
        }
        if is_root {
            return;
        }
        let parents = self
            .pages
            .get_mut(id)
            .map(|p| std::mem::take(&mut p.parents))
            .unwrap_or_default();
        for ptr in parents {
            self.set_spte(ptr, 0);
        }
        self.unsync.remove(&id);
        if let Some(page) = self.pages.release(id) {
            if !page.role.direct() && !page.role.synthetic() {
                self.unaccount_shadowed(page.gfn);
            }
            self.changes.flush_all = true;
            Counters::bump(&stats.zapped_pages);
        }
    }

    /// Whether entry `index` of a page with `role` is the hypervisor hole's:
    /// the hole's slot of a 4-level top-level page (5-level guests, whose
    /// level-4 pages have their own role, get no hole).
    pub fn is_hole_slot(&self, role: Role, index: usize) -> bool {
        role.level() == 4
            && !role.la57()
            && self
                .cfg
                .hole
                .is_some_and(|h| usize::from(h.root_index) == index)
    }

    /// Entries of a root that no zap may clear: links to the synthetic
    /// page, and the hole.
    fn is_fixed_root_entry(&self, id: PageId, index: usize) -> bool {
        let Some(page) = self.pages.get(id) else {
            return false;
        };
        if self.is_hole_slot(page.role, index) {
            return true;
        }
        let v = self.pages.arena.load(id, index);
        spte::is_present(v)
            && !spte::is_leaf(v, page.role.level())
            && self
                .pages
                .arena
                .page_at(spte::target(v))
                .and_then(|c| self.pages.get(c))
                .is_some_and(|c| c.role.synthetic())
    }

    /// Zaps every page but roots and their fixed entries.
    pub fn zap_all(&mut self, stats: &Counters) {
        let ids: Vec<PageId> = self.pages.iter().map(|(id, _)| id).collect();
        for id in ids {
            self.zap_page(id, stats);
        }
        self.changes.flush_all = true;
    }

    /// Finds or creates the page for (`gfn`, `role`). A found unsync page is
    /// synced first, since a new link makes it reachable from a path whose
    /// TLB entries cannot be stale.
    pub fn get_or_create(
        &mut self,
        mem: &impl GuestMemoryBackend,
        gfn: Gfn,
        role: Role,
        stats: &Counters,
    ) -> Result<PageId, OutOfPages> {
        if let Some(id) = self.pages.find(gfn, role) {
            if self.pages.get(id).is_some_and(|p| p.unsync) {
                self.sync_page(mem, id, stats);
            }
            self.pages.touch(id);
            return Ok(id);
        }
        let (id, origin) = match self.pages.allocate(gfn, role) {
            Ok(x) => x,
            Err(OutOfPages) => {
                self.reclaim(stats);
                self.pages.allocate(gfn, role)?
            }
        };
        if origin == Origin::Reused {
            let addr = self.pages.arena.page_address(id);
            // Writes recorded into the page's previous life are obsolete (the
            // reuse touch drops a host's copy): replayed after it, they would
            // clobber the new contents, such as a new root's hole entry.
            self.changes.spte_writes.retain(|w| w.addr & !0xfff != addr);
            self.changes.reused_pages.push(addr);
        }
        if !role.direct() && !role.synthetic() {
            self.account_shadowed(gfn);
        }
        Ok(id)
    }

    /// Frees the oldest pages not used by the running operation. When only
    /// pinned pages are left, cached roots are dropped to unpin theirs.
    fn reclaim(&mut self, stats: &Counters) {
        let batch = (self.pages.arena.pages() / 32).max(4);
        let mut freed = 0;
        while freed < batch {
            match self.pages.oldest_reclaimable(self.op_stamp) {
                Some(id) => {
                    self.zap_page(id, stats);
                    Counters::bump(&stats.reclaimed);
                    freed += 1;
                }
                None => {
                    let Some(v) = self.vcpus.iter_mut().max_by_key(|v| v.prev.len()) else {
                        break;
                    };
                    let Some(root) = v.prev.pop_back() else {
                        break;
                    };
                    self.release_root(root, stats);
                }
            }
        }
    }

    /// A new indirect page shadows `gfn`: writes to it must now fault.
    fn account_shadowed(&mut self, gfn: Gfn) {
        if self.pages.shadows_of(gfn).len() == 1 {
            for level in 2..=3u8 {
                let base = gfn.0 & !(frames_at(level) - 1);
                *self.lpage_disallow.entry((level, base)).or_default() += 1;
                // A large leaf covering the table must go.
                for ptr in self.rmap.get(Gfn(base)) {
                    if self
                        .pages
                        .get(ptr.page)
                        .is_some_and(|p| p.role.level() == level)
                    {
                        self.drop_spte(ptr);
                    }
                }
            }
        }
        self.write_protect(gfn);
    }

    fn unaccount_shadowed(&mut self, gfn: Gfn) {
        if self.pages.is_shadowed(gfn) {
            return;
        }
        for level in 2..=3u8 {
            let key = (level, gfn.0 & !(frames_at(level) - 1));
            if let Some(n) = self.lpage_disallow.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    self.lpage_disallow.remove(&key);
                }
            }
        }
    }

    /// Removes write access from every 4 KiB leaf that maps `gfn`.
    pub fn write_protect(&mut self, gfn: Gfn) {
        for ptr in self.rmap.get(gfn) {
            let index = usize::from(ptr.index);
            let v = self.pages.arena.load(ptr.page, index);
            if v & PTE_W == 0 {
                continue;
            }
            let guest = spte::guest_access(v);
            if guest.contains(PteAccess::USER) && v & PTE_U == 0 {
                // A CR0.WP=0 entry (a user page made a writable supervisor
                // page): without W it would be a supervisor page the guest
                // never had. Drop it; the next access rebuilds it.
                self.drop_spte(ptr);
            } else {
                self.set_spte(ptr, v & !(PTE_W | PTE_D));
            }
        }
    }

    /// Whether a write to `gfn` must fault: some synced page shadows it.
    pub fn is_write_protected(&self, gfn: Gfn) -> bool {
        self.pages
            .shadows_of(gfn)
            .iter()
            .any(|&id| self.pages.get(id).is_some_and(|p| !p.unsync))
    }

    /// Whether a range of `frames_at(level)` frames from `base` may be
    /// mapped by one large entry.
    pub fn large_allowed(&self, level: u8, base: u64) -> bool {
        !self.lpage_disallow.contains_key(&(level, base))
    }

    /// Lets `gfn`'s shadows go unsync so the guest may write it freely.
    /// Only 4 KiB leaf tables can.
    pub fn try_unsync(&mut self, gfn: Gfn, stats: &Counters) -> bool {
        if !self.cfg.unsync {
            return false;
        }
        let ids = self.pages.shadows_of(gfn).to_vec();
        if ids
            .iter()
            .any(|&id| self.pages.get(id).is_none_or(|p| p.role.level() != 1))
        {
            return false;
        }
        for id in ids {
            if let Some(p) = self.pages.get_mut(id) {
                if !p.unsync {
                    p.unsync = true;
                    self.unsync.insert(id);
                    Counters::bump(&stats.unsyncs);
                }
            }
        }
        true
    }

    /// Stops shadowing `gfn` as a page table.
    pub fn unprotect(&mut self, gfn: Gfn, stats: &Counters) {
        for id in self.pages.shadows_of(gfn).to_vec() {
            self.zap_page(id, stats);
        }
    }

    /// Where the guest entry behind shadow entry `index` of `page` lives.
    pub fn gpte_location(page: &ShadowPage, index: usize) -> (GuestAddress, bool) {
        let role = page.role;
        let base = page.gfn.gpa().0;
        if role.has_4_byte_gpte() {
            let q = usize::from(role.quadrant());
            let gi = if role.level() == 1 {
                q * 512 + index
            } else {
                q * 256 + index / 2
            };
            (GuestAddress(base + 4 * gi as u64), true)
        } else {
            (GuestAddress(base + 8 * index as u64), false)
        }
    }

    /// Reads the guest entry behind shadow entry `index` of `page`.
    pub fn read_gpte(
        mem: &impl GuestMemoryBackend,
        page: &ShadowPage,
        index: usize,
    ) -> Option<u64> {
        Self::read_gpte_in(None, mem, page, index)
    }

    /// [`MmuState::read_gpte`] through `window` when it holds the entry
    /// (callers reading many entries of one table take the window once,
    /// rather than a region lookup per entry).
    pub fn read_gpte_in(
        window: Option<&HostWindow<'_>>,
        mem: &impl GuestMemoryBackend,
        page: &ShadowPage,
        index: usize,
    ) -> Option<u64> {
        let (gpa, four) = Self::gpte_location(page, index);
        match window {
            Some(w) if w.contains(gpa, if four { 4 } else { 8 }) => {
                if four {
                    w.load_u32(gpa).map(u64::from)
                } else {
                    w.load_u64(gpa)
                }
            }
            _ if four => mem.load_u32(gpa).map(u64::from),
            _ => mem.load_u64(gpa),
        }
    }

    /// The shadow-physical frame for `gfn`, if a leaf may map it: RAM, or a
    /// registered MMIO range, and never the hidden region.
    pub fn frame_of(&self, mem: &impl GuestMemoryBackend, gfn: Gfn) -> Option<u64> {
        self.frame_and_kind(mem, gfn).map(|(frame, _)| frame)
    }

    /// [`MmuState::frame_of`], and whether the frame is guest RAM (rather
    /// than MMIO), from one lookup.
    pub fn frame_and_kind(&self, mem: &impl GuestMemoryBackend, gfn: Gfn) -> Option<(u64, bool)> {
        let gpa = gfn.gpa().0;
        let (frame, ram) = match self.cfg.frames.frame(mem, gfn) {
            Some(f) => (f, true),
            None if self.in_hidden(gpa) => {
                // The guest names the hidden region: send it to the sink.
                return self
                    .cfg
                    .hidden_sink
                    .filter(|&s| self.is_mmio(s) && !self.in_hidden(s))
                    .map(|s| (s, false));
            }
            None => {
                if !self.is_mmio(gpa) {
                    return None;
                }
                (gpa, false)
            }
        };
        if self.in_hidden(frame) {
            return None;
        }
        Some((frame, ram))
    }

    /// Whether `gpa` lies in a registered MMIO range.
    pub fn is_mmio(&self, gpa: u64) -> bool {
        self.mmio.iter().any(|r| r.contains(&gpa))
    }

    /// Whether shadow-physical `addr` lies in the hidden region.
    pub fn in_hidden(&self, addr: u64) -> bool {
        self.cfg.hidden.iter().any(|r| r.contains(&addr))
    }

    /// Installs a leaf at `ptr` mapping `gfn` (at `frame`) with `rights`.
    /// `guest` is what the guest's entries grant, recorded for syncs.
    pub fn install_leaf(
        &mut self,
        ptr: SptePtr,
        gfn: Gfn,
        frame: u64,
        rights: PteAccess,
        pkey: u8,
        guest: PteAccess,
    ) {
        let Some(page) = self.pages.get(ptr.page) else {
            return;
        };
        let level = page.role.level();
        let index = usize::from(ptr.index);
        let old = self.pages.arena.load(ptr.page, index);
        if spte::is_present(old) {
            if spte::is_leaf(old, level) {
                let old_gfn = page.frames.gfn(index, old);
                if old_gfn != gfn {
                    self.rmap.remove(old_gfn, ptr);
                }
            } else {
                self.drop_spte(ptr);
            }
        }
        self.set_spte(ptr, spte::leaf(frame, rights, guest, pkey, level));
        self.rmap.add(gfn, ptr);
        if let Some(p) = self.pages.get_mut(ptr.page) {
            p.frames.set(index, gfn, frame);
        }
    }

    /// Installs `leaf`, which maps `gfn` at the guest frame's own address,
    /// into entry `index` of `page` under the shared lock: the entry
    /// becomes the caller's only if the MMU's copy still holds zero; the
    /// CPU's copy and the reverse-map record follow. False if another
    /// vCPU got there first, or if the page lists a moved frame for the
    /// entry (the exclusive path's to change).
    pub fn install_new_leaf(&self, page: PageId, index: usize, gfn: Gfn, leaf: u64) -> bool {
        let Some(sp) = self.pages.get(page) else {
            return false;
        };
        if sp.frames.gfn(index, leaf) != gfn || !self.pages.arena.install(page, index, leaf) {
            return false;
        }
        self.rmap.add(gfn, SptePtr::new(page, index));
        true
    }

    /// The vCPU's current root.
    pub fn current_root(&self, vcpu: usize) -> Result<&Root, MmuError> {
        self.vcpu(vcpu)?
            .root
            .as_ref()
            .ok_or(MmuError::NoPagingState(vcpu))
    }

    /// Walks the shadow tables of the vCPU's current root as the CPU would.
    pub fn shadow_translate(&self, vcpu: usize, gva: Gva) -> Option<(u64, PteAccess)> {
        let root = self.current_root(vcpu).ok()?;
        let mut page = root.page;
        let mut level = self.pages.get(page)?.role.level();
        let mut rights = PteAccess::all();
        loop {
            let v = self.pages.arena.load_live(page, shadow_index(gva.0, level));
            if !spte::is_present(v) {
                return None;
            }
            rights &= spte::rights(v);
            if spte::is_leaf(v, level) {
                let size = frames_at(level) << 12;
                let base = spte::target(v) & !(size - 1);
                return Some((base | (gva.0 & (size - 1)), rights));
            }
            page = self.pages.arena.page_at(spte::target(v))?;
            level -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spt::Arena;

    /// Linking an entry that the MMU already linked (a relink after the
    /// entry was cleared behind its back) records the parent once: parent
    /// lists are bounded by the arena's entries, whatever the guest does.
    #[test]
    fn a_relinked_entry_is_one_parent() {
        let arena = Arena::new(0x1_0000_0000, 4).unwrap();
        let mut st = MmuState::new(Pages::new(arena), MmuConfig::default());
        let role = Role::base(&PagingState::default()).with_level(2);
        let (parent, _) = st.pages.allocate(Gfn(1), role.with_level(3)).unwrap();
        let (child, _) = st.pages.allocate(Gfn(2), role).unwrap();
        let ptr = SptePtr::new(parent, 5);
        for _ in 0..3 {
            st.link(ptr, child);
            // What a guest kernel can do through the hole.
            st.pages.arena.store(parent, 5, 0);
        }
        assert_eq!(st.pages.get(child).unwrap().parents, vec![ptr]);
        st.link(SptePtr::new(parent, 6), child);
        assert_eq!(st.pages.get(child).unwrap().parents.len(), 2);
    }
}
