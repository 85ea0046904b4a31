// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Keeping shadows coherent with guest tables that changed: syncing unsync
//! pages (the seed's `sync_page`), INVLPG, and emulated writes to shadowed
//! tables (the seed's `update_pte`).

use vm_memory::GuestMemoryBackend;

use crate::addr::{Gfn, GuestAddress, Gva, PAGE_SHIFT, PAGE_SIZE};
use crate::arch::PteAccess;
use crate::error::MmuError;
use crate::pte::{Pte32, Pte64, PteFormat, PteMemory, PTE_A, PTE_D, PTE_P, PTE_PKEY_SHIFT};
use crate::spt::{PageId, SptePtr, ENTRIES};
use crate::spte;
use crate::state::{shadow_index, MmuState};
use crate::stats::Counters;

/// What a guest entry now says a leaf should be, if it may be mapped.
struct Leaf {
    gfn: Gfn,
    guest: PteAccess,
    rights: PteAccess,
    pkey: u8,
}

impl MmuState {
    /// Decodes guest entry `gpte` behind leaf entry of a level-1 indirect
    /// page: `None` if it is not present, not accessed or has reserved bits
    /// (then no shadow may exist for it).
    fn decode_leaf_gpte(&self, page: PageId, gpte: u64) -> Option<Leaf> {
        let role = self.pages.get(page)?.role;
        let state = self.role_state(role);
        let (rsvd, gfn) = if role.has_4_byte_gpte() {
            (
                Pte32::reserved_bits(&state).table[1],
                Gfn(Pte32::frame(gpte) >> PAGE_SHIFT),
            )
        } else {
            (
                Pte64::reserved_bits(&state).table[1],
                Gfn(Pte64::frame(gpte) >> PAGE_SHIFT),
            )
        };
        if gpte & (PTE_P | PTE_A) != (PTE_P | PTE_A) || gpte & rsvd != 0 {
            return None;
        }
        let guest = role.access() & Pte64::rights(gpte, role.efer_nx());
        let mut rights = guest;
        if gpte & PTE_D == 0 {
            rights.remove(PteAccess::WRITE);
        }
        let pkey = if role.has_4_byte_gpte() || role.pae_guest() {
            0
        } else {
            ((gpte >> PTE_PKEY_SHIFT) & 0xf) as u8
        };
        Some(Leaf {
            gfn,
            guest,
            rights,
            pkey,
        })
    }

    /// Rebuilds leaf `index` of level-1 indirect `page` from the guest entry
    /// `gpte`, or drops it. With `same_gfn_only`, an entry that now maps
    /// another frame is dropped rather than rebuilt (a sync must not install
    /// translations the guest has not faulted on).
    fn refresh_leaf(
        &mut self,
        mem: &impl GuestMemoryBackend,
        page: PageId,
        index: usize,
        gpte: Option<u64>,
        same_gfn_only: bool,
    ) {
        let ptr = SptePtr::new(page, index);
        let Some(sp) = self.pages.get(page) else {
            return;
        };
        let old = self.pages.arena.load(page, index);
        let present = spte::is_present(old);
        let recorded = sp.frames.gfn(index, old);
        let leaf = gpte.and_then(|g| self.decode_leaf_gpte(page, g));
        let Some(mut leaf) = leaf else {
            self.drop_spte(ptr);
            return;
        };
        if same_gfn_only && (!present || recorded != leaf.gfn) {
            self.drop_spte(ptr);
            return;
        }
        // Only RAM is re-mapped here; an MMIO access faults again and is
        // reported to the VMM.
        let Some((frame, true)) = self.frame_and_kind(mem, leaf.gfn) else {
            self.drop_spte(ptr);
            return;
        };
        if self.is_write_protected(leaf.gfn) {
            leaf.rights.remove(PteAccess::WRITE);
        }
        self.install_leaf(ptr, leaf.gfn, frame, leaf.rights, leaf.pkey, leaf.guest);
    }

    /// Brings unsync `page` up to date with its guest table and makes it
    /// write-protected again.
    pub fn sync_page(&mut self, mem: &impl GuestMemoryBackend, page: PageId, stats: &Counters) {
        let Some(sp) = self.pages.get_mut(page) else {
            return;
        };
        if !sp.unsync {
            return;
        }
        sp.unsync = false;
        // The guest wrote the table: entries the last prefetch could not
        // map may be mappable now.
        sp.prefetched = false;
        let gfn = sp.gfn;
        self.unsync.remove(&page);
        // Synced again: the table's own frame is read-only in every mapping.
        self.write_protect(gfn);
        let table = mem.host_window(gfn.gpa());
        for i in 0..ENTRIES {
            if !spte::is_present(self.pages.arena.load(page, i)) {
                continue;
            }
            let Some(sp) = self.pages.get(page) else {
                return;
            };
            let gpte = Self::read_gpte_in(table.as_ref(), mem, sp, i);
            self.refresh_leaf(mem, page, i, gpte, true);
        }
        Counters::bump(&stats.syncs);
    }

    /// Syncs every unsync page (a TLB flush or CR3 load: any of them may be
    /// reachable from the vCPU's roots).
    pub fn sync_all(&mut self, mem: &impl GuestMemoryBackend, stats: &Counters) {
        while let Some(&page) = self.unsync.iter().next() {
            self.sync_page(mem, page, stats);
            // sync_page removes it; a vanished page must not loop forever.
            self.unsync.remove(&page);
        }
    }

    /// Drops the leaf that maps `gva` in every root of the vCPU.
    pub fn invlpg(&mut self, vcpu: usize, gva: Gva, stats: &Counters) -> Result<(), MmuError> {
        let v = self.vcpu(vcpu)?;
        let roots: Vec<PageId> = v.root.iter().chain(v.prev.iter()).map(|r| r.page).collect();
        for root in roots {
            let Some(mut level) = self.pages.get(root).map(|p| p.role.level()) else {
                continue;
            };
            let mut page = root;
            loop {
                let idx = shadow_index(gva.0, level);
                let v = self.pages.arena.load(page, idx);
                if !spte::is_present(v) {
                    break;
                }
                if spte::is_leaf(v, level) {
                    self.drop_spte(SptePtr::new(page, idx));
                    Counters::bump(&stats.invlpg_zaps);
                    break;
                }
                let Some(child) = self.pages.arena.page_at(spte::target(v)) else {
                    break;
                };
                page = child;
                level -= 1;
            }
        }
        self.changes.invlpg.push(gva);
        Ok(())
    }

    /// The VMM wrote `len` bytes at `gpa` into guest memory on the guest's
    /// behalf: update or zap the shadows of the entries written.
    pub fn track_write(
        &mut self,
        mem: &impl GuestMemoryBackend,
        gpa: GuestAddress,
        len: usize,
        stats: &Counters,
    ) {
        if len == 0 {
            return;
        }
        let Some(last) = gpa.0.checked_add(len as u64).and_then(|e| e.checked_sub(1)) else {
            // Empty, or past the end of the address space: no page table
            // can be written there.
            return;
        };
        let (first_gfn, last_gfn) = (gpa.0 >> 12, last >> 12);
        if last_gfn - first_gfn > 4096 {
            // A huge write: visit only the frames that are shadowed.
            let mut gfns: Vec<u64> = self
                .pages
                .shadowed_gfns()
                .map(|g| g.0)
                .filter(|g| (first_gfn..=last_gfn).contains(g))
                .collect();
            gfns.sort_unstable();
            for gfn in gfns {
                let start = (gfn << 12).max(gpa.0);
                let end = ((gfn << 12) | 0xfff).min(last);
                self.track_page_write(mem, GuestAddress(start), (end - start + 1) as usize, stats);
            }
            return;
        }
        let mut at = gpa.0;
        loop {
            let end = (at | 0xfff).min(last);
            self.track_page_write(mem, GuestAddress(at), (end - at + 1) as usize, stats);
            if end == last {
                break;
            }
            at = end + 1;
        }
    }

    /// [`MmuState::track_write`] within one page.
    fn track_page_write(
        &mut self,
        mem: &impl GuestMemoryBackend,
        gpa: GuestAddress,
        len: usize,
        stats: &Counters,
    ) {
        let offset = gpa.0 & (PAGE_SIZE - 1);
        let first = len as u64;
        let len = first;
        let gfn = Gfn::containing(gpa);
        let ids = self.pages.shadows_of(gfn).to_vec();
        if !ids.is_empty() {
            Counters::bump(&stats.tracked_writes);
        }
        for id in ids {
            let Some(sp) = self.pages.get_mut(id) else {
                continue;
            };
            if sp.unsync {
                // Not write-protected: synced at the next sync point.
                continue;
            }
            let role = sp.role;
            let size: u64 = if role.has_4_byte_gpte() { 4 } else { 8 };
            let misaligned = (offset ^ (offset + len - 1)) & !(size - 1) != 0 || len < 4;
            // Repeated writes to a table that faults do not use suggest it
            // is no longer a page table (KVM's write flooding).
            let flooded = role.level() > 1 && {
                sp.write_flooding = sp.write_flooding.saturating_add(1);
                sp.write_flooding >= 3
            };
            if misaligned || flooded {
                self.zap_page(id, stats);
                continue;
            }
            let gi = (offset / size) as usize;
            let indices: Vec<usize> = if role.has_4_byte_gpte() {
                let q = usize::from(role.quadrant());
                if role.level() == 1 {
                    if gi / 512 != q {
                        continue;
                    }
                    vec![gi % 512]
                } else {
                    if gi / 256 != q {
                        continue;
                    }
                    vec![2 * (gi % 256), 2 * (gi % 256) + 1]
                }
            } else {
                vec![gi]
            };
            for index in indices {
                if role.level() == 1 {
                    let Some(sp) = self.pages.get(id) else {
                        break;
                    };
                    let gpte = Self::read_gpte(mem, sp, index);
                    self.refresh_leaf(mem, id, index, gpte, false);
                } else {
                    self.drop_spte(SptePtr::new(id, index));
                }
            }
        }
    }
}
