// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The dirty-bit fault without the MMU: which read-only shadow leaves of a
//! table a fast path outside the MMU (the KVM glue's trampoline) may make
//! writable by itself on a write fault, and how the MMU takes over what it
//! did.
//!
//! A clean guest entry (present, writable, accessed, dirty clear) is mapped
//! read-only so that the first write faults and its D bit can be set
//! (KVM's `protect_clean_gpte`). The MMU has nothing to decide on that
//! fault that it did not know when it built the read-only leaf: the answer
//! is "set D in the guest entry, make the leaf writable", as long as the
//! guest entry is still the one the leaf was built from, the frame is not
//! a shadowed page table and nothing else changed the leaf. So the MMU
//! lists such entries as a [`DirtyTable`]; whoever resolves the fault sets
//! D with a compare-exchange against [`DirtyEntry::gpte`] and the leaf with
//! a compare-exchange against [`DirtyEntry::spte`], and reports back with
//! [`Mmu::dirty_taken`](crate::Mmu::dirty_taken) before the MMU is used for
//! that vCPU again.

use vm_memory::GuestMemoryBackend;

use crate::addr::{Gfn, Gva, PAGE_SHIFT};
use crate::arch::{PagingMode, PteAccess};
use crate::pte::{Pte64, PteFormat, PteMemory, PTE_A, PTE_D, PTE_P, PTE_PS, PTE_U, PTE_W};
use crate::spt::{SptePtr, ENTRIES};
use crate::spte;
use crate::state::{shadow_index, MmuState};

/// The clean entries of one guest leaf table that a write may make dirty
/// without the MMU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirtyTable {
    /// The first guest-virtual address the table maps (2 MiB aligned).
    pub base: Gva,
    /// Shadow-physical address of the guest table's frame.
    pub table: u64,
    /// Shadow-physical address of the shadow page that shadows it.
    pub page: u64,
    /// The entries, by index.
    pub entries: Vec<DirtyEntry>,
}

/// One clean guest entry and its read-only shadow leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirtyEntry {
    /// Index in the guest table and in the shadow page.
    pub index: u16,
    /// The guest entry as it is now: present, writable, accessed, not
    /// dirty. A write by the user (error code bit 2) may be resolved only
    /// if its U bit is set, a supervisor write only if it is clear (the
    /// shadow's U bit equals it, so SMAP never has a say).
    pub gpte: u64,
    /// The shadow leaf as the MMU wrote it (read-only).
    pub spte: u64,
    /// The frame it maps.
    pub gfn: Gfn,
}

impl DirtyEntry {
    /// The guest entry once a write set its dirty bit.
    pub const fn dirty_gpte(&self) -> u64 {
        self.gpte | PTE_D
    }

    /// The shadow leaf once the write is allowed: writable and dirty, as
    /// the MMU builds a leaf for a dirty guest entry (`spte::leaf`).
    pub const fn dirty_spte(&self) -> u64 {
        self.spte | PTE_W | PTE_D
    }
}

impl MmuState {
    /// The clean entries of the guest leaf table through which vCPU `vcpu`'s
    /// current root maps `gva`, if that is a 4 KiB table of 8-byte entries
    /// with any.
    pub(crate) fn dirty_table(
        &self,
        mem: &impl GuestMemoryBackend,
        vcpu: usize,
        gva: Gva,
    ) -> Option<DirtyTable> {
        let root = self.current_root(vcpu).ok()?;
        let state = root.state;
        if !matches!(state.mode(), PagingMode::Level4 | PagingMode::Level5) {
            return None;
        }
        let arena = &self.pages.arena;
        let mut page = root.page;
        let mut level = self.pages.get(page)?.role.level();
        while level > 1 {
            let v = arena.verify(page, shadow_index(gva.0, level)).ok()?;
            if !spte::is_present(v) || spte::is_leaf(v, level) {
                return None;
            }
            page = arena.page_at(spte::target(v))?;
            level -= 1;
        }
        let sp = self.pages.get(page)?;
        let role = sp.role;
        if role.direct() || role.has_4_byte_gpte() || role.level() != 1 {
            return None;
        }
        let (table, true) = self.frame_and_kind(mem, sp.gfn)? else {
            return None;
        };
        let rsvd = Pte64::reserved_bits(&state).table[1];
        let nx = role.efer_nx();
        let window = mem.host_window(sp.gfn.gpa());
        let mut entries = Vec::new();
        for i in 0..ENTRIES {
            let Ok(s) = arena.verify(page, i) else {
                continue;
            };
            let guest = spte::guest_access(s);
            if !spte::is_present(s) || s & PTE_W != 0 || !guest.contains(PteAccess::WRITE) {
                continue;
            }
            // Exactly the guest's rights but write: not a CR0.WP=0 leaf.
            if spte::rights(s) | PteAccess::WRITE != guest {
                continue;
            }
            let Some(gpte) = Self::read_gpte_in(window.as_ref(), mem, sp, i) else {
                continue;
            };
            if gpte & (PTE_P | PTE_W | PTE_A | PTE_D | PTE_PS) != PTE_P | PTE_W | PTE_A
                || gpte & rsvd != 0
                || (gpte & PTE_U != 0) != guest.contains(PteAccess::USER)
                || role.access() & Pte64::rights(gpte, nx) != guest
            {
                continue;
            }
            let gfn = Gfn(Pte64::frame(gpte) >> PAGE_SHIFT);
            if sp.frames.gfn(i, s) != gfn
                || self.frame_and_kind(mem, gfn) != Some((spte::target(s), true))
                || self.is_write_protected(gfn)
            {
                continue;
            }
            entries.push(DirtyEntry {
                index: i as u16,
                gpte,
                spte: s,
                gfn,
            });
        }
        if entries.is_empty() {
            return None;
        }
        Some(DirtyTable {
            base: Gva(gva.0 & !((1 << 21) - 1)),
            table,
            page: arena.page_address(page),
            entries,
        })
    }

    /// Takes over the leaves of `table` that were made writable outside the
    /// MMU: each whose entry the MMU still holds as listed and the CPU sees
    /// as [`DirtyEntry::dirty_spte`] becomes the MMU's own. A leaf whose
    /// frame became a shadowed page table meanwhile is put back read-only
    /// (the caller carries out the returned write). Returns how many were
    /// taken over.
    pub(crate) fn dirty_taken(&mut self, table: &DirtyTable) -> usize {
        let Some(page) = self.pages.arena.page_at(table.page) else {
            return 0;
        };
        if self.pages.get(page).is_none() {
            return 0;
        }
        let mut taken = 0;
        for e in &table.entries {
            let index = usize::from(e.index) % ENTRIES;
            let arena = &self.pages.arena;
            if arena.load(page, index) != e.spte || arena.load_live(page, index) != e.dirty_spte() {
                continue;
            }
            arena.store(page, index, e.dirty_spte());
            if self.is_write_protected(e.gfn) {
                // Read-only again, and flushed: a CPU may hold the
                // writable translation.
                self.set_spte(SptePtr::new(page, index), e.spte);
                continue;
            }
            taken += 1;
        }
        taken
    }
}
