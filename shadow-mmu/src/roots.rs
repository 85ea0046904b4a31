// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Shadow roots: what a vCPU's real CR3 points to, one per guest address
//! space and paging configuration, with a small per-vCPU cache of previous
//! roots so that switching back to an address space rebuilds nothing.
//!
//! 4-level and 5-level guests get the shadow of their top table as root.
//! 32-bit and PAE guests run on a 4-level shadow whose two upper levels are
//! synthetic: the level-3 page links the shadows of the guest's page
//! directory (its four quadrants for 32-bit guests, the four PDPTE targets
//! for PAE). With paging off the root is a direct page of guest-physical
//! memory.

use vm_memory::GuestMemoryBackend;

use crate::addr::Gfn;
use crate::arch::{Cr4, PagingMode, PagingState, PteAccess};
use crate::error::MmuError;
use crate::spt::{PageId, Role, SptePtr};
use crate::state::{GuestCpuid, MmuState, Root, RootKey};
use crate::stats::Counters;

/// The key that identifies `state`'s root.
fn root_key(state: &PagingState) -> RootKey {
    let mode = state.mode();
    let (table, pdptrs) = match mode {
        PagingMode::Off => (0, [0; 4]),
        PagingMode::Bits32 => (state.cr3 & 0xffff_f000, [0; 4]),
        PagingMode::Pae => (state.cr3 & 0xffff_ffe0, state.pdptrs),
        PagingMode::Level4 | PagingMode::Level5 => (state.cr3 & state.phys_mask() & !0xfff, [0; 4]),
    };
    RootKey {
        table,
        pdptrs,
        role: Role::base(state),
        mode,
    }
}

impl MmuState {
    /// Points the vCPU at the root for `state`, building it if no cached one
    /// fits. Returns its shadow-physical address.
    pub fn load_paging_state(
        &mut self,
        mem: &impl GuestMemoryBackend,
        vcpu: usize,
        state: &PagingState,
        stats: &Counters,
    ) -> Result<u64, MmuError> {
        self.vcpu(vcpu)?;
        self.cpuid = GuestCpuid {
            maxphyaddr: state.maxphyaddr,
            gbpages: state.gbpages,
            pse36: state.pse36,
        };
        self.begin_op();
        let key = root_key(state);
        let flush = !(state.cr4.contains(Cr4::PCIDE) && state.cr3 & (1 << 63) != 0);

        let current = self.vcpus[vcpu].root.take();
        let root = match current {
            Some(r) if r.key == key => r,
            other => {
                let v = &mut self.vcpus[vcpu];
                let cached = v.prev.iter().position(|r| r.key == key);
                let found = cached.and_then(|pos| v.prev.remove(pos));
                if let Some(old) = other {
                    self.vcpus[vcpu].prev.push_front(old);
                }
                let root = match found {
                    Some(r) => {
                        Counters::bump(&stats.root_cache_hits);
                        r
                    }
                    None => match self.build_root(mem, state, key) {
                        Ok(r) => {
                            Counters::bump(&stats.roots_built);
                            r
                        }
                        Err(e) => {
                            // Put the previous root back so the vCPU keeps a
                            // consistent view.
                            let v = &mut self.vcpus[vcpu];
                            v.root = v.prev.pop_front();
                            return Err(e);
                        }
                    },
                };
                while self.vcpus[vcpu].prev.len() > self.cfg.cached_roots {
                    if let Some(old) = self.vcpus[vcpu].prev.pop_back() {
                        self.release_root(old, stats);
                    }
                }
                root
            }
        };
        let mut root = root;
        root.state = *state;
        let page = root.page;
        let v = &mut self.vcpus[vcpu];
        v.state = Some(*state);
        v.root = Some(root);
        if flush {
            self.sync_all(mem, stats);
            self.changes.flush_local = true;
        }
        Ok(self.pages.arena.page_address(page))
    }

    fn build_root(
        &mut self,
        mem: &impl GuestMemoryBackend,
        state: &PagingState,
        key: RootKey,
    ) -> Result<Root, MmuError> {
        let base = Role::base(state).with_access(PteAccess::all());
        let stats = Counters::default();
        let (page, synthetic) = match key.mode {
            PagingMode::Level4 | PagingMode::Level5 => {
                let level = key.mode.levels();
                let role = base.with_level(level);
                let page = self
                    .get_or_create(mem, Gfn(key.table >> 12), role, &stats)
                    .map_err(|_| MmuError::OutOfPages)?;
                (page, None)
            }
            PagingMode::Off => {
                let role = base.with_level(4).with_direct(true);
                let page = self
                    .get_or_create(mem, Gfn(0), role, &stats)
                    .map_err(|_| MmuError::OutOfPages)?;
                (page, None)
            }
            PagingMode::Bits32 | PagingMode::Pae => {
                let gfn = Gfn(key.table >> 12);
                let top = self.allocate_synthetic(mem, gfn, base.with_level(4))?;
                let l3 = match self.allocate_synthetic(mem, gfn, base.with_level(3)) {
                    Ok(p) => p,
                    Err(e) => {
                        self.unpin(top);
                        self.zap_page(top, &stats);
                        return Err(e);
                    }
                };
                self.link(SptePtr::new(top, 0), l3);
                (top, Some(l3))
            }
        };
        if synthetic.is_none() {
            // Synthetic pages were pinned as they were allocated.
            self.pin(page);
        }
        if let Some(hole) = self.cfg.hole {
            // The hole lives in 4-level roots (those of 32-bit, PAE and
            // 4-level guests); 5-level guests get none.
            let level = self.pages.get(page).map_or(0, |p| p.role.level());
            if level == 4 {
                self.set_spte(SptePtr::new(page, usize::from(hole.root_index)), hole.entry);
            }
        }
        Ok(Root {
            key,
            page,
            synthetic,
            state: *state,
        })
    }

    /// A synthetic page, pinned as part of a root.
    fn allocate_synthetic(
        &mut self,
        mem: &impl GuestMemoryBackend,
        gfn: Gfn,
        role: Role,
    ) -> Result<PageId, MmuError> {
        let role = role.as_synthetic();
        let stats = Counters::default();
        let id = self
            .get_or_create(mem, gfn, role, &stats)
            .map_err(|_| MmuError::OutOfPages)?;
        self.pin(id);
        Ok(id)
    }

    fn pin(&mut self, id: PageId) {
        if let Some(p) = self.pages.get_mut(id) {
            p.root_count += 1;
        }
    }

    fn unpin(&mut self, id: PageId) -> u32 {
        match self.pages.get_mut(id) {
            Some(p) => {
                p.root_count = p.root_count.saturating_sub(1);
                p.root_count
            }
            None => 0,
        }
    }

    /// A root left the cache: its pages become ordinary (reclaimable) pages;
    /// synthetic ones, which nothing else can use, are freed.
    pub(crate) fn release_root(&mut self, root: Root, stats: &Counters) {
        let top_left = self.unpin(root.page);
        if let Some(l3) = root.synthetic {
            let l3_left = self.unpin(l3);
            if top_left == 0 && l3_left == 0 {
                self.zap_page(root.page, stats);
                self.zap_page(l3, stats);
            }
        }
    }
}
