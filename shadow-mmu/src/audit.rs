// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The audit: the invariants of the shadow state (`docs/DESIGN.md`, "The audit"),
//! checked over everything the MMU holds. Tests run it after every step.
//!
//! 1. Every present leaf reachable from a root grants a subset of what the
//!    guest walk of its address grants and maps the frame backing the walk's
//!    gfn, unless its page is unsync.
//! 2. A leaf is writable only if the guest entry is dirty and no synced
//!    shadow page shadows its frame.
//! 3. A leaf exists only where the guest accessed bit is set.
//! 4. No leaf maps the hidden region, or anything but RAM and registered
//!    MMIO.
//! 5. The reverse map holds exactly the present leaves.
//! 6. Every entry of a page in use is, in the mapping the CPU walks, what
//!    the MMU wrote (`spt::arena`).

use std::collections::HashSet;

use thiserror::Error;
use vm_memory::GuestMemoryBackend;

use crate::addr::{Gfn, Gva, PAGE_SHIFT};
use crate::arch::{Cr0, Cr4, PagingMode, PteAccess};
use crate::pte::{PTE_A, PTE_D};
use crate::spt::{PageId, SptePtr, ENTRIES};
use crate::spte;
use crate::state::{frames_at, MmuState, Root};
use crate::walker;

/// A broken invariant.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum AuditError {
    /// A leaf reachable from a root disagrees with the guest's tables.
    #[error("vCPU {vcpu} root {root:#x}, gva {gva:#x}: {what}")]
    Leaf {
        /// The vCPU.
        vcpu: usize,
        /// Shadow-physical address of the root.
        root: u64,
        /// The guest-virtual address the leaf maps.
        gva: u64,
        /// What is wrong.
        what: String,
    },
    /// Page bookkeeping (parents, reverse map, unsync set) is inconsistent.
    #[error("bookkeeping: {0}")]
    Bookkeeping(String),
}

impl MmuState {
    /// Checks every invariant.
    pub fn audit(&self, mem: &impl GuestMemoryBackend) -> Result<(), AuditError> {
        for (id, _) in self.pages.iter() {
            self.pages.arena.verify_page(id).map_err(|c| {
                AuditError::Bookkeeping(format!(
                    "entry {} of page {id:?} holds {:#x}, the MMU wrote {:#x}",
                    c.index, c.found, c.expected
                ))
            })?;
        }
        self.audit_bookkeeping()?;
        for (vcpu, v) in self.vcpus.iter().enumerate() {
            for root in v.root.iter().chain(v.prev.iter()) {
                let level = self.pages.get(root.page).map_or(0, |p| p.role.level());
                self.audit_tree(mem, vcpu, root, root.page, level, 0)?;
            }
        }
        Ok(())
    }

    fn audit_tree(
        &self,
        mem: &impl GuestMemoryBackend,
        vcpu: usize,
        root: &Root,
        page: PageId,
        level: u8,
        gva_base: u64,
    ) -> Result<(), AuditError> {
        let Some(sp) = self.pages.get(page) else {
            return Err(AuditError::Bookkeeping(format!(
                "page {page:?} reachable from a root is free"
            )));
        };
        for i in 0..ENTRIES {
            let v = self.pages.arena.load(page, i);
            if !spte::is_present(v) {
                continue;
            }
            if self.is_hole_slot(sp.role, i) {
                continue;
            }
            let gva = gva_base | ((i as u64) << (PAGE_SHIFT + 9 * (u32::from(level) - 1)));
            if spte::is_leaf(v, level) {
                if !sp.unsync {
                    let top_bit = if root.state.mode() == PagingMode::Level5 {
                        56
                    } else {
                        47
                    };
                    self.audit_leaf(
                        mem,
                        vcpu,
                        root,
                        SptePtr::new(page, i),
                        v,
                        level,
                        Gva(gva).sign_extend(top_bit).0,
                    )?;
                }
                continue;
            }
            let Some(child) = self.pages.arena.page_at(spte::target(v)) else {
                return Err(AuditError::Bookkeeping(format!(
                    "entry {i} of page {page:?} links outside the arena: {v:#x}"
                )));
            };
            self.audit_tree(mem, vcpu, root, child, level - 1, gva)?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn audit_leaf(
        &self,
        mem: &impl GuestMemoryBackend,
        vcpu: usize,
        root: &Root,
        ptr: SptePtr,
        v: u64,
        level: u8,
        gva: u64,
    ) -> Result<(), AuditError> {
        let fail = |what: String| AuditError::Leaf {
            vcpu,
            root: self.pages.arena.page_address(root.page),
            gva,
            what,
        };
        let state = &root.state;
        let target = spte::target(v);
        // 4: never the hidden region; only RAM or registered MMIO.
        if self.in_hidden(target) {
            return Err(fail(format!("maps the hidden region at {target:#x}")));
        }
        let recorded = self
            .pages
            .get(ptr.page)
            .map(|p| p.frames.gfn(usize::from(ptr.index), v))
            .unwrap_or_default();
        if self.frame_of(mem, recorded) != Some(target) {
            return Err(fail(format!(
                "maps {target:#x}, which is not the frame of {recorded} (or not RAM/MMIO)"
            )));
        }
        // 1 and 3: the guest maps it, accessed, to the same frame.
        let walk = walker::translate(mem, state, Gva(gva))
            .map_err(|e| fail(format!("guest does not map it ({e})")))?;
        let frames = frames_at(level);
        let expect = Gfn(walk.gfn().0 & !(frames - 1));
        // With paging off every size maps gva = gpa: only the frame counts.
        let too_small = walk.mode != PagingMode::Off && walk.page_size < frames << PAGE_SHIFT;
        if expect != recorded || too_small {
            return Err(fail(format!(
                "shadow maps {recorded} ({} KiB) but the guest maps {} ({} KiB)",
                (frames << PAGE_SHIFT) >> 10,
                walk.gfn(),
                walk.page_size >> 10
            )));
        }
        let off = walk.mode == PagingMode::Off;
        let leaf = walk.leaf_pte();
        if !off && leaf & PTE_A == 0 {
            return Err(fail("guest leaf is not accessed".into()));
        }
        let s = spte::rights(v);
        let g = walk.access;
        let wp = state.cr0.contains(Cr0::WP);
        // CR0.WP=0 lets supervisor writes through read-only pages; such
        // entries are writable supervisor pages (and not executable under
        // SMEP if the guest page is a user page).
        let wp0_page = !wp && s.contains(PteAccess::WRITE) && !s.contains(PteAccess::USER);
        if s.contains(PteAccess::USER) && !g.contains(PteAccess::USER) {
            return Err(fail("user access the guest denies".into()));
        }
        if s.contains(PteAccess::WRITE) && !g.contains(PteAccess::WRITE) && !wp0_page {
            return Err(fail("write access the guest denies".into()));
        }
        if s.contains(PteAccess::EXEC) && !g.contains(PteAccess::EXEC) {
            return Err(fail("execute access the guest denies".into()));
        }
        if wp0_page
            && g.contains(PteAccess::USER)
            && state.cr4.contains(Cr4::SMEP)
            && s.contains(PteAccess::EXEC)
        {
            return Err(fail("supervisor fetch from a user page under SMEP".into()));
        }
        if !s.contains(PteAccess::USER) && g.contains(PteAccess::USER) && !wp0_page {
            return Err(fail("user page shadowed as supervisor page".into()));
        }
        if state.mode().is_long() && spte::pkey(v) != ((leaf >> 59) & 0xf) as u8 {
            return Err(fail("protection key differs from the guest's".into()));
        }
        // 2: writable only when dirty and not a synced page table.
        if s.contains(PteAccess::WRITE) {
            if !off && leaf & PTE_D == 0 {
                return Err(fail(format!(
                    "writable but the guest entry {leaf:#x} is clean"
                )));
            }
            if level == 1 && self.is_write_protected(recorded) {
                return Err(fail(format!(
                    "writable but {recorded} is a shadowed page table"
                )));
            }
            if level > 1 && !self.large_allowed(level, recorded.0) {
                return Err(fail(
                    "writable large page over a shadowed page table".into(),
                ));
            }
        }
        Ok(())
    }

    fn audit_bookkeeping(&self) -> Result<(), AuditError> {
        let bad = |s: String| Err(AuditError::Bookkeeping(s));
        let mut leaves = 0usize;
        let mut unsync = HashSet::new();
        for (id, sp) in self.pages.iter() {
            if sp.unsync {
                unsync.insert(id);
                if sp.role.level() != 1 || sp.role.direct() {
                    return bad(format!("page {id:?} is unsync but not a 4 KiB guest table"));
                }
            }
            let level = sp.role.level();
            for i in 0..ENTRIES {
                let v = self.pages.arena.load(id, i);
                if !spte::is_present(v) {
                    continue;
                }
                let ptr = SptePtr::new(id, i);
                if spte::is_leaf(v, level) {
                    leaves += 1;
                    let gfn = sp.frames.gfn(i, v);
                    if !self.rmap.contains(gfn, ptr) {
                        return bad(format!(
                            "leaf {ptr:?} for {gfn} missing from the reverse map"
                        ));
                    }
                } else if let Some(child) = self.pages.arena.page_at(spte::target(v)) {
                    match self.pages.get(child) {
                        None => return bad(format!("{ptr:?} links to free page {child:?}")),
                        Some(c) if !c.parents.contains(&ptr) => {
                            return bad(format!(
                                "{ptr:?} links to {child:?}, which does not list it"
                            ))
                        }
                        Some(c) if c.role.level() + 1 != level => {
                            return bad(format!(
                                "{ptr:?} links to a page of level {}",
                                c.role.level()
                            ))
                        }
                        _ => {}
                    }
                }
            }
            for parent in &sp.parents {
                let v = self
                    .pages
                    .arena
                    .load(parent.page, usize::from(parent.index));
                if self.pages.get(parent.page).is_none()
                    || !spte::is_present(v)
                    || self.pages.arena.page_at(spte::target(v)) != Some(id)
                {
                    return bad(format!(
                        "page {id:?} lists parent {parent:?}, which does not link to it"
                    ));
                }
            }
        }
        if leaves != self.rmap.len() {
            // Name one record that no present leaf backs.
            for (gfn, ptr) in self.rmap.iter() {
                let live = self.pages.get(ptr.page);
                let v = self.pages.arena.load(ptr.page, usize::from(ptr.index));
                let leaf = live.is_some_and(|p| spte::is_leaf(v, p.role.level()));
                let recorded = live.map(|p| p.frames.gfn(usize::from(ptr.index), v));
                if !spte::is_present(v) || !leaf || recorded != Some(gfn) {
                    return bad(format!(
                        "{leaves} present leaves but {} reverse-map entries; {gfn} -> {ptr:?} \
                         is stale (page live: {}, entry {v:#x}, recorded {:?})",
                        self.rmap.len(),
                        live.is_some(),
                        recorded,
                    ));
                }
            }
            return bad(format!(
                "{leaves} present leaves but {} reverse-map entries",
                self.rmap.len()
            ));
        }
        if unsync != self.unsync.iter().copied().collect() {
            return bad("unsync set differs from the pages' flags".into());
        }
        Ok(())
    }
}
