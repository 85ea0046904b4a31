// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The page-fault path: walk the guest tables, then build the shadow path
//! down to a leaf (the seed's `fetch`), and prefetch around it.
//!
//! Causes handled (the seed's list): no shadow entry yet; a write to an
//! entry kept read-only until the guest's dirty bit is set; a write to a
//! frame shadowed as a page table (unsync it, unprotect it, or ask for
//! emulation); an address that is not RAM (MMIO); and a real guest fault,
//! returned with the exact error code to inject.

use std::sync::atomic::Ordering;

use vm_memory::{GuestAddressSpace, GuestMemoryBackend};

use crate::addr::{Gfn, GuestAddress, Gva, PAGE_SHIFT};
use crate::arch::{Access, AccessKind, Cr0, Cr4, PagingMode, PagingState, PfErrorCode, PteAccess};
use crate::changes::Changes;
use crate::config::{GuestRam, Prefetch, TableWrites};
use crate::error::MmuError;
use crate::outcome::{FaultOutcome, GuestException};
use crate::pte::{
    HostWindow, Pte32, Pte64, PteFormat, PteMemory, PTE_A, PTE_D, PTE_P, PTE_PKEY_SHIFT,
};
use crate::spt::{PageId, Role, SptePtr, ENTRIES};
use crate::spte;
use crate::state::{frames_at, shadow_index, MmuState, Shared};
use crate::stats::Counters;
use crate::walker::{self, GuestWalk, WalkError};

/// Entries around a fault that later faults in an already prefetched page
/// look at (KVM's `PTE_PREFETCH_NUM` is 8).
const REFAULT_WINDOW: usize = 16;

/// A leaf a prefetch would install ([`MmuState::prefetch_candidate`]).
struct Candidate {
    gfn: Gfn,
    frame: u64,
    rights: PteAccess,
    pkey: u8,
    guest: PteAccess,
    /// The guest entry, when its A bit must be set first.
    speculated: Option<u64>,
}

/// What the candidates of one page are checked with.
struct PrefetchLook<'m> {
    /// The guest table, for an indirect page.
    table: Option<HostWindow<'m>>,
    rsvd: u64,
    speculative: bool,
}

/// What the fault wants of the leaf.
#[derive(Clone, Copy, Debug)]
struct Request {
    access: Access,
    /// An explicit access (a fault) rather than a prefetch.
    faulting: bool,
}

pub(crate) fn page_fault<M: GuestRam>(
    mmu: &Shared<M>,
    vcpu: usize,
    gva: Gva,
    error_code: PfErrorCode,
) -> Result<(FaultOutcome, Changes), MmuError> {
    let access = Access {
        kind: if error_code.contains(PfErrorCode::W) {
            AccessKind::Write
        } else if error_code.contains(PfErrorCode::ID) {
            AccessKind::Fetch
        } else {
            AccessKind::Read
        },
        user: error_code.contains(PfErrorCode::U),
        implicit: false,
    };
    resolve(
        mmu,
        vcpu,
        gva,
        Request {
            access,
            faulting: true,
        },
    )
}

/// Maps `gva` if the guest does, for a prefault without an access.
pub(crate) fn prefetch<M: GuestRam>(
    mmu: &Shared<M>,
    vcpu: usize,
    gva: Gva,
) -> Result<Changes, MmuError> {
    let access = Access::at_cpl(AccessKind::Read, 0);
    let (_, changes) = resolve(
        mmu,
        vcpu,
        gva,
        Request {
            access,
            faulting: false,
        },
    )?;
    Ok(changes)
}

fn inject_pf(error_code: PfErrorCode, gva: Gva) -> FaultOutcome {
    FaultOutcome::Inject(GuestException::PageFault {
        error_code,
        cr2: gva,
    })
}

fn resolve<M: GuestRam>(
    mmu: &Shared<M>,
    vcpu: usize,
    gva: Gva,
    req: Request,
) -> Result<(FaultOutcome, Changes), MmuError> {
    // Shared: most faults only add leaves (`fetch_shared`).
    let shared = mmu.state.read(vcpu);
    let (state, root_page, hole) = {
        let root = shared.current_root(vcpu)?;
        (
            root.state_with(shared.vcpu(vcpu)?.state),
            root.page,
            shared.cfg.hole,
        )
    };
    let stats = mmu.stats.shard(vcpu);

    // The hole belongs to the VMM whatever the guest's tables say (a
    // non-canonical address is #GP before any table is looked at: the
    // walker's answer).
    if let Some(hole) = hole {
        if state.mode() == PagingMode::Level4
            && gva.is_canonical(47)
            && shadow_index(gva.0, 4) == usize::from(hole.root_index)
        {
            Counters::bump(&stats.fault_guest);
            let ec = req.access.error_code_bits(state.reports_fetch());
            return Ok((inject_pf(ec, gva), Changes::default()));
        }
    }

    let seq = mmu.seq.load(Ordering::Acquire);
    let mem = mmu.mem.memory();
    let walk = if req.faulting {
        walker::walk(&*mem, &state, gva, req.access)
    } else {
        walker::peek(&*mem, &state, gva, req.access)
    };
    let walk = match walk {
        Ok(w) => w,
        Err(WalkError::PageFault(ec)) => {
            Counters::bump(&stats.fault_guest);
            return Ok((inject_pf(ec, gva), Changes::default()));
        }
        Err(WalkError::GeneralProtection) => {
            Counters::bump(&stats.fault_guest);
            return Ok((
                FaultOutcome::Inject(GuestException::GeneralProtection),
                Changes::default(),
            ));
        }
        Err(WalkError::TooManyRetries) => {
            Counters::bump(&stats.fault_retry);
            return Ok((FaultOutcome::Retry, Changes::default()));
        }
    };
    if !req.faulting && walk.leaf_pte() & PTE_A == 0 && walk.mode != PagingMode::Off {
        // Prefetch never maps what the guest has not accessed.
        return Ok((FaultOutcome::Retry, Changes::default()));
    }
    if mmu.seq.load(Ordering::Acquire) == seq {
        if let Some(outcome) = shared.fetch_shared(&*mem, &state, root_page, &walk, req, stats) {
            return Ok((outcome, Changes::default()));
        }
    }
    drop(shared);

    let mut st = mmu.state.write();
    if mmu.seq.load(Ordering::Acquire) != seq
        || st.current_root(vcpu).map(|r| r.page).ok() != Some(root_page)
    {
        Counters::bump(&stats.fault_retry);
        return Ok((FaultOutcome::Retry, st.take_changes()));
    }
    st.begin_op();
    let outcome = st.fetch(&*mem, &state, root_page, &walk, req, stats)?;
    match outcome {
        FaultOutcome::Retry => Counters::bump(&stats.fault_retry),
        FaultOutcome::Mmio { .. } => Counters::bump(&stats.fault_mmio),
        FaultOutcome::Emulate { .. } => Counters::bump(&stats.fault_emulate),
        _ => {}
    }
    Ok((outcome, st.take_changes()))
}

/// The rights the guest entries from the top down to `level` grant.
fn rights_down_to(walk: &GuestWalk, state: &PagingState, level: u8) -> PteAccess {
    let nx = state.nx_enabled();
    let mut acc = PteAccess::all();
    if walk.mode == PagingMode::Off {
        return acc;
    }
    let top = if walk.mode == PagingMode::Pae {
        2
    } else {
        walk.root_level
    };
    let mut l = top;
    while l >= level.max(walk.level) {
        acc &= Pte64::rights(walk.ptes[usize::from(l) - 1], nx);
        l -= 1;
    }
    acc
}

/// Whether every guest entry `walk` read still holds the value it read.
fn walk_is_current(mem: &impl GuestMemoryBackend, walk: &GuestWalk) -> bool {
    let top = match walk.mode {
        PagingMode::Off => return true,
        // PAE's level 3 are registers.
        PagingMode::Pae => 2,
        _ => walk.root_level,
    };
    let four = walk.mode == PagingMode::Bits32;
    // Guest tables usually share one region: look it up once.
    let window = mem.host_window(walk.pte_gpas[usize::from(top) - 1]);
    (walk.level..=top).all(|level| {
        let li = usize::from(level) - 1;
        let gpa = walk.pte_gpas[li];
        let local = window
            .as_ref()
            .filter(|w| w.contains(gpa, if four { 4 } else { 8 }));
        let now = match (local, four) {
            (Some(w), true) => w.load_u32(gpa).map(u64::from),
            (Some(w), false) => w.load_u64(gpa),
            (None, true) => mem.load_u32(gpa).map(u64::from),
            (None, false) => mem.load_u64(gpa),
        };
        now == Some(walk.ptes[li])
    })
}

impl crate::state::Root {
    /// The root's paging state with the vCPU's latest EFLAGS.AC.
    pub(crate) fn state_with(&self, vcpu_state: Option<PagingState>) -> PagingState {
        let mut s = self.state;
        if let Some(v) = vcpu_state {
            s.eflags_ac = v.eflags_ac;
        }
        s
    }
}

impl MmuState {
    /// The largest level the shadow may map `walk` at.
    fn mapping_level(&self, mem: &impl GuestMemoryBackend, walk: &GuestWalk) -> u8 {
        let guest_level = if walk.mode == PagingMode::Off {
            3
        } else {
            walk.level
        };
        let max = guest_level.min(self.cfg.max_mapping_level);
        let gfn = walk.gfn().0;
        for level in (2..=max).rev() {
            let frames = frames_at(level);
            let base = gfn & !(frames - 1);
            if self.large_allowed(level, base)
                && self.cfg.frames.contiguous(mem, Gfn(base), frames)
                && self
                    .cfg
                    .frames
                    .frame(mem, Gfn(base))
                    .is_some_and(|f| f % (frames << PAGE_SHIFT) == 0 && !self.in_hidden(f))
            {
                return level;
            }
        }
        1
    }

    /// Builds the shadow path for `walk` from `root` and installs the leaf.
    fn fetch(
        &mut self,
        mem: &impl GuestMemoryBackend,
        state: &PagingState,
        root: PageId,
        walk: &GuestWalk,
        req: Request,
        stats: &Counters,
    ) -> Result<FaultOutcome, MmuError> {
        let gva = walk.gva.0;
        let gfn = walk.gfn();
        let Some((frame, ram)) = self.frame_and_kind(mem, gfn) else {
            return Ok(FaultOutcome::Mmio { gpa: walk.gpa });
        };
        let map_level = if ram {
            self.mapping_level(mem, walk)
        } else {
            1
        };
        let base_role = Role::base(state);
        // The guest's top table as the shadow sees it: PAE's PDPTEs are
        // registers, shadowed by the root's synthetic level.
        let guest_top = if walk.mode == PagingMode::Pae {
            2
        } else {
            walk.root_level
        };
        let dirty = walk.mode == PagingMode::Off || walk.leaf_pte() & PTE_D != 0;
        // The guest leaf's rights, write-protected until it is dirty
        // (KVM's protect_clean_gpte).
        let mut leaf_access = walk.access;
        if !dirty {
            leaf_access.remove(PteAccess::WRITE);
        }
        let write = req.access.kind == AccessKind::Write && req.faulting;
        if write
            && !req.access.is_user()
            && !walk.access.contains(PteAccess::WRITE)
            && !state.cr0.contains(Cr0::WP)
        {
            // CR0.WP=0: a supervisor write to a read-only page is allowed.
            // Make the entry a writable supervisor page; user accesses will
            // fault and get the guest's rights back. Under a guest large
            // page the direct page's role carries these rights too, so
            // that it is never the page of another guest entry that maps
            // the same frames with the guest's own rights (KVM adjusts the
            // walk's access in FNAME(page_fault), before FNAME(fetch)).
            leaf_access |= PteAccess::WRITE;
            leaf_access.remove(PteAccess::USER);
            if walk.access.contains(PteAccess::USER) && state.cr4.contains(Cr4::SMEP) {
                leaf_access.remove(PteAccess::EXEC);
            }
        }
        let pkey = if walk.mode.is_long() {
            ((walk.leaf_pte() >> PTE_PKEY_SHIFT) & 0xf) as u8
        } else {
            0
        };

        // The walk ran without the lock. Guest tables change under the lock
        // (emulated writes) or are unsync (then the guest must INVLPG,
        // which takes the lock): if every entry the walk used is still in
        // memory, the walk is a current translation (KVM's gpte_changed).
        if !walk_is_current(mem, walk) {
            return Ok(FaultOutcome::Retry);
        }
        let Some(mut page) = self.pages.get(root).map(|_| root) else {
            return Ok(FaultOutcome::Retry);
        };
        self.pages.touch(page);
        let mut level = self.pages.get(root).map_or(4, |p| p.role.level());
        let mut target_level = map_level;
        loop {
            if level <= target_level {
                // A shadowed table may have appeared inside the range while
                // this path was built: then no large leaf.
                let base = gfn.0 & !(frames_at(level) - 1);
                if level == 1 || self.large_allowed(level, base) {
                    break;
                }
                target_level = 1;
            }
            let idx = shadow_index(gva, level);
            let ptr = SptePtr::new(page, idx);
            // The entries of the path are those the CPU walked to this
            // fault: if one is not what the MMU wrote, installing the leaf
            // again would not fix the fault.
            let v = self.verified(page, idx)?;
            let child_level = level - 1;
            // Under a guest large page (or with paging off) the child is a
            // direct page of the range, with the leaf's rights as its role.
            let direct = (walk.mode == PagingMode::Off || child_level < walk.level).then(|| {
                base_role
                    .with_level(child_level)
                    .with_direct(true)
                    .with_access(leaf_access)
                    .with_pkey(pkey)
            });
            if spte::is_present(v) && !spte::is_leaf(v, level) {
                let Some(child) = self.pages.arena.page_at(spte::target(v)) else {
                    return Ok(FaultOutcome::Retry);
                };
                let stale = direct
                    .is_some_and(|role| self.pages.get(child).is_some_and(|c| c.role != role));
                if !stale {
                    if let Some(c) = self.pages.get_mut(child) {
                        c.write_flooding = 0;
                    }
                    self.pages.touch(child);
                    page = child;
                    level -= 1;
                    continue;
                }
                // A direct page built for other rights: the guest's large
                // page became dirty (the walk set D, which no tracked write
                // reports) or changed its rights. Its entries were made
                // for the old rights; link one for the new (KVM's
                // validate_direct_spte).
                self.drop_spte(ptr);
            } else if spte::is_present(v) {
                // A large leaf where the walk now needs a table.
                self.drop_spte(ptr);
            }
            let (cgfn, crole) = if let Some(role) = direct {
                let frames = frames_at(child_level + 1);
                (Gfn(gfn.0 & !(frames - 1)), role)
            } else if child_level > guest_top {
                // The synthetic levels of a 32-bit or PAE root are built
                // with the root; a missing one means the root is being torn
                // down.
                return Ok(FaultOutcome::Retry);
            } else {
                // The shadow of the guest table at `child_level`.
                let li = usize::from(child_level) - 1;
                let parent_level = child_level + 1;
                let mut role = base_role
                    .with_level(child_level)
                    .with_access(rights_down_to(walk, state, parent_level));
                if walk.mode == PagingMode::Bits32 {
                    let q = if child_level == 1 {
                        (gva >> 21) & 1
                    } else {
                        (gva >> 30) & 3
                    };
                    role = role.with_quadrant(q as u8);
                }
                (walk.table_gfns[li], role)
            };
            let Ok(child) = self.get_or_create(mem, cgfn, crole, stats) else {
                return Ok(FaultOutcome::Retry);
            };
            // Creating the child may have write-protected or zapped
            // something on this path; re-read the entry.
            if spte::is_present(self.pages.arena.load(page, idx)) {
                continue;
            }
            if self.pages.get(page).is_none() {
                return Ok(FaultOutcome::Retry);
            }
            self.link(ptr, child);
            page = child;
            level -= 1;
        }

        // The leaf.
        let idx = shadow_index(gva, level);
        let ptr = SptePtr::new(page, idx);
        let old = self.verified(page, idx)?;
        let frames = frames_at(level);
        let leaf_gfn = Gfn(gfn.0 & !(frames - 1));
        let leaf_frame = frame - ((gfn.0 - leaf_gfn.0) << PAGE_SHIFT);
        let mut rights = leaf_access;
        if rights.contains(PteAccess::WRITE) && level == 1 && self.is_write_protected(leaf_gfn) {
            if !write {
                rights.remove(PteAccess::WRITE);
            } else if self.try_unsync(leaf_gfn, stats) {
                Counters::bump(&stats.fault_write_protected);
            } else {
                Counters::bump(&stats.fault_write_protected);
                // (Paging off: no guest tables, level and root level are 0.)
                let own_table = (walk.level.max(1)..=walk.root_level)
                    .any(|l| walk.table_gfns[usize::from(l) - 1] == leaf_gfn);
                if own_table || self.cfg.table_writes == TableWrites::Emulate {
                    return Ok(FaultOutcome::Emulate { gpa: walk.gpa });
                }
                self.unprotect(leaf_gfn, stats);
                if self.pages.get(page).is_none() {
                    return Ok(FaultOutcome::Retry);
                }
                if self.is_write_protected(leaf_gfn) {
                    // A root in use still shadows it (roots are never
                    // zapped): the write has to be emulated.
                    return Ok(FaultOutcome::Emulate { gpa: walk.gpa });
                }
            }
        }

        // Classify for the counters.
        if req.faulting {
            let counter = if !spte::is_present(old) {
                &stats.fault_no_spte
            } else if write && !spte::rights(old).contains(PteAccess::WRITE) {
                if self.pages.is_shadowed(leaf_gfn) {
                    &stats.fault_write_protected
                } else {
                    &stats.fault_dirty_tracking
                }
            } else {
                &stats.fault_spurious
            };
            Counters::bump(counter);
        }

        self.install_leaf(ptr, leaf_gfn, leaf_frame, rights, pkey, walk.access);
        if level == 1 {
            self.prefetch_around(mem, state, page, idx, stats);
        }
        Ok(FaultOutcome::Fixed)
    }

    /// The entries around `idx` in `page` that a prefetch looks at: the
    /// page's whole window the first time (`first`), then only the
    /// neighbours. What the first scan could not map stays unmappable
    /// until the guest writes the table (then a sync rescans it), and a
    /// hostile table of present entries it can never map costs every
    /// fault a full scan.
    fn prefetch_range(&self, role: Role, idx: usize, first: bool) -> std::ops::Range<usize> {
        let full = if role.direct() {
            ENTRIES
        } else {
            self.cfg.prefetch_window
        };
        let window = if first {
            full
        } else {
            full.min(REFAULT_WINDOW)
        };
        if window <= 1 {
            return 0..0;
        }
        let start = idx & !(window - 1);
        start..start + window
    }

    /// What a prefetch would install at entry `i` of `page`, if anything:
    /// the guest entry present, valid, RAM, and accessed unless the policy
    /// is speculative (then `speculated` is the entry whose A bit must be
    /// set first). The rights are narrowed as a fault's would be.
    fn prefetch_candidate(
        &self,
        mem: &impl GuestMemoryBackend,
        look: &PrefetchLook<'_>,
        page: PageId,
        i: usize,
    ) -> Option<Candidate> {
        let sp = self.pages.get(page)?;
        let role = sp.role;
        let (gfn, mut rights, pkey, guest, speculated) = if role.direct() {
            let r = role.access();
            (Gfn(sp.gfn.0 + i as u64), r, role.pkey(), r, None)
        } else {
            let gpte = Self::read_gpte_in(look.table.as_ref(), mem, sp, i)?;
            let needs_a = gpte & PTE_A == 0;
            if gpte & PTE_P == 0 || gpte & look.rsvd != 0 || (needs_a && !look.speculative) {
                return None;
            }
            let gfn = if role.has_4_byte_gpte() {
                Gfn(Pte32::frame(gpte) >> PAGE_SHIFT)
            } else {
                Gfn(Pte64::frame(gpte) >> PAGE_SHIFT)
            };
            let guest = role.access() & Pte64::rights(gpte, role.efer_nx());
            let mut r = guest;
            if gpte & PTE_D == 0 {
                r.remove(PteAccess::WRITE);
            }
            let pkey = if role.has_4_byte_gpte() || role.pae_guest() {
                0
            } else {
                ((gpte >> PTE_PKEY_SHIFT) & 0xf) as u8
            };
            (gfn, r, pkey, guest, needs_a.then_some(gpte))
        };
        // Only RAM is prefetched: MMIO keeps faulting so the VMM sees it.
        let Some((frame, true)) = self.frame_and_kind(mem, gfn) else {
            return None;
        };
        if self.is_write_protected(gfn) {
            rights.remove(PteAccess::WRITE);
        }
        Some(Candidate {
            gfn,
            frame,
            rights,
            pkey,
            guest,
            speculated,
        })
    }

    /// Sets the A bit of guest entry `i` of `page`, which held `gpte`, as a
    /// CPU does before it caches a translation: with a locked
    /// compare-exchange, so that an entry the guest changed meanwhile is
    /// left alone. Returns where the entry is if it was set.
    fn set_speculative_a(
        &self,
        mem: &impl GuestMemoryBackend,
        page: PageId,
        i: usize,
        gpte: u64,
    ) -> Option<GuestAddress> {
        let sp = self.pages.get(page)?;
        let (gpa, four) = Self::gpte_location(sp, i);
        let set = if four {
            mem.cmpxchg_u32(gpa, gpte as u32, (gpte | PTE_A) as u32)
        } else {
            mem.cmpxchg_u64(gpa, gpte, gpte | PTE_A)
        };
        (set == Some(true)).then_some(gpa)
    }

    /// Installs leaves for the guest entries around `idx` in `page`: the
    /// prefetch window of an indirect page, the whole of a direct one.
    fn prefetch_around(
        &mut self,
        mem: &impl GuestMemoryBackend,
        state: &PagingState,
        page: PageId,
        idx: usize,
        stats: &Counters,
    ) {
        let Some(sp) = self.pages.get_mut(page) else {
            return;
        };
        let (role, first) = (sp.role, !sp.prefetched);
        sp.prefetched = true;
        let range = self.prefetch_range(role, idx, first);
        if range.is_empty() {
            return;
        }
        let look = self.prefetch_look(mem, state, page);
        for i in range {
            if i == idx || spte::is_present(self.pages.arena.load(page, i)) {
                continue;
            }
            let Some(c) = self.prefetch_candidate(mem, &look, page, i) else {
                continue;
            };
            if let Some(gpte) = c.speculated {
                let Some(gpa) = self.set_speculative_a(mem, page, i, gpte) else {
                    continue;
                };
                Counters::bump(&stats.prefetched_speculative);
                let capacity = self.cfg.speculative_log;
                if capacity > 0 {
                    self.marks.record(gpa, capacity);
                }
            }
            let ptr = SptePtr::new(page, i);
            self.install_leaf(ptr, c.gfn, c.frame, c.rights, c.pkey, c.guest);
            Counters::bump(&stats.prefetched);
        }
    }

    /// What every prefetch candidate of `page` is checked with.
    fn prefetch_look<'m>(
        &self,
        mem: &'m impl GuestMemoryBackend,
        state: &PagingState,
        page: PageId,
    ) -> PrefetchLook<'m> {
        let sp = self.pages.get(page);
        let role = sp.map(|p| p.role);
        let rsvd = if role.is_some_and(|r| r.has_4_byte_gpte()) {
            Pte32::reserved_bits(state).table[1]
        } else {
            Pte64::reserved_bits(state).table[1]
        };
        let table = sp
            .filter(|p| !p.role.direct())
            .and_then(|p| mem.host_window(p.gfn.gpa()));
        PrefetchLook {
            table,
            rsvd,
            speculative: self.cfg.prefetch == Prefetch::Speculative,
        }
    }

    /// The fault path's common case under the shared lock (`lock.rs`): a
    /// 4 KiB guest page of 4- or 5-level paging, RAM at its own address,
    /// whose whole shadow path exists and whose leaf is not present yet, in
    /// a page already prefetched once. Only new leaves are installed, each
    /// with a compare-exchange from zero and its reverse-map record; the
    /// page bookkeeping (last use, write flooding) is left to the
    /// exclusive path. Anything else, and an entry another vCPU installed
    /// meanwhile, is `None`: the exclusive path decides.
    fn fetch_shared(
        &self,
        mem: &impl GuestMemoryBackend,
        state: &PagingState,
        root: PageId,
        walk: &GuestWalk,
        req: Request,
        stats: &Counters,
    ) -> Option<FaultOutcome> {
        if !walk.mode.is_long() || walk.level != 1 {
            return None;
        }
        // The speculative log is the exclusive path's to append to.
        if self.cfg.prefetch == Prefetch::Speculative && self.cfg.speculative_log > 0 {
            return None;
        }
        let gfn = walk.gfn();
        let (frame, true) = self.frame_and_kind(mem, gfn)? else {
            return None;
        };
        let gva = walk.gva.0;
        let arena = &self.pages.arena;
        let mut page = root;
        let mut level = self.pages.get(page)?.role.level();
        while level > 1 {
            let v = arena.verify(page, shadow_index(gva, level)).ok()?;
            if !spte::is_present(v) || spte::is_leaf(v, level) {
                return None;
            }
            page = arena.page_at(spte::target(v))?;
            level -= 1;
        }
        let sp = self.pages.get(page)?;
        if sp.role.direct() || sp.gfn != walk.table_gfns[0] || !sp.prefetched {
            return None;
        }
        let idx = shadow_index(gva, 1);
        if spte::is_present(arena.verify(page, idx).ok()?) || !walk_is_current(mem, walk) {
            return None;
        }
        let mut rights = walk.access;
        if walk.leaf_pte() & PTE_D == 0 {
            rights.remove(PteAccess::WRITE);
        }
        let write = req.access.kind == AccessKind::Write && req.faulting;
        if write && !walk.access.contains(PteAccess::WRITE) {
            // CR0.WP=0 and a table written through: the exclusive path's.
            return None;
        }
        if rights.contains(PteAccess::WRITE) && self.is_write_protected(gfn) {
            return None;
        }
        let pkey = ((walk.leaf_pte() >> PTE_PKEY_SHIFT) & 0xf) as u8;
        let leaf = spte::leaf(frame, rights, walk.access, pkey, 1);
        if !self.install_new_leaf(page, idx, gfn, leaf) {
            return None;
        }
        Counters::bump(&stats.fault_shared);
        if req.faulting {
            Counters::bump(&stats.fault_no_spte);
        }
        let range = self.prefetch_range(sp.role, idx, false);
        if !range.is_empty() {
            let look = self.prefetch_look(mem, state, page);
            for i in range {
                if i == idx || arena.verify(page, i) != Ok(0) {
                    continue;
                }
                let Some(c) = self.prefetch_candidate(mem, &look, page, i) else {
                    continue;
                };
                if c.speculated
                    .is_some_and(|gpte| self.set_speculative_a(mem, page, i, gpte).is_none())
                {
                    continue;
                }
                let leaf = spte::leaf(c.frame, c.rights, c.guest, c.pkey, 1);
                if self.install_new_leaf(page, i, c.gfn, leaf) {
                    if c.speculated.is_some() {
                        Counters::bump(&stats.prefetched_speculative);
                    }
                    Counters::bump(&stats.prefetched);
                }
            }
        }
        Some(FaultOutcome::Fixed)
    }
}
