// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Remote TLB flushes: which vCPUs still owe a flush of shadow entries
//! another vCPU changed, the NMI that makes a running vCPU flush, and when
//! freed shadow pages may be reused.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use kvm_ioctls::VcpuFd;
use parking_lot::Mutex;

use super::chain::Commands;
use super::layout::nmi_block;
use super::{KvmGlueError, ShadowVm};
use crate::GuestRam;
use crate::ShadowMmu;

/// Remote TLB flushes: a change that other vCPUs may have cached bumps the
/// generation; each running vCPU acknowledges it by reloading CR3, either on
/// its next trampoline exit or, when the VMM kicks it, through an NMI whose
/// handler reloads CR3 and counts the flush. Freed shadow pages are reused
/// only once every running vCPU has acknowledged the latest generation, and
/// the vCPU whose change bumped it runs guest code again only once the
/// others have too ([`ShadowVm::flush_wait`]): until then another vCPU
/// could still write through a translation the change took away (a page
/// table just write-protected, say) wherever the hypervisor beneath does
/// not flush remote TLBs on the trampoline's stores by itself.
#[derive(Debug)]
pub(super) struct RemoteFlush {
    pub(super) generation: AtomicU64,
    /// Per vCPU: the generation it has flushed up to.
    pub(super) flushed: Vec<AtomicU64>,
    /// Per vCPU: whether it runs guest code (a vCPU that never ran has
    /// nothing cached).
    pub(super) running: Vec<AtomicBool>,
    /// Per vCPU: an NMI in flight: (the flush count when it was sent, the
    /// generation it covers). The count lives in the hole, where guest CPL0
    /// code can write it: any change acknowledges, and arithmetic on it
    /// wraps.
    pub(super) nmi: Vec<Mutex<Option<(u64, u64)>>>,
    /// Per vCPU: the generation its own change started, which the others
    /// must acknowledge before it runs guest code again (0: none). Waits
    /// cannot form a cycle: a vCPU's change also acknowledges every older
    /// generation for itself, so a vCPU only ever waits for vCPUs whose own
    /// awaited generation is older than its own, and the oldest waits for
    /// nobody.
    pub(super) awaited: Vec<AtomicU64>,
    /// Per vCPU: while its exit's stores have not taken effect, the free
    /// mark read before the exit's changes ([`NO_HOLD`]: none). The CPU
    /// still reaches the pages such a change freed through entries the
    /// trampoline has yet to rewrite, so no flush may release them.
    pub(super) holds: Vec<AtomicU64>,
    /// Generations not yet acknowledged by every running vCPU, oldest
    /// first, each with the free mark it releases once they have.
    pub(super) releases: Mutex<VecDeque<(u64, u64)>>,
}

/// No hold: see [`RemoteFlush::holds`].
pub(super) const NO_HOLD: u64 = u64::MAX;

/// Generations kept apart in [`RemoteFlush::releases`]; beyond this the
/// newest absorbs the next (a vCPU that never acknowledges cannot make
/// the list grow).
const MAX_RELEASES: usize = 64;

impl RemoteFlush {
    /// Nothing owed yet by any of `vcpus` vCPUs, none running.
    pub(super) fn new(vcpus: usize) -> RemoteFlush {
        RemoteFlush {
            generation: AtomicU64::new(0),
            flushed: (0..vcpus).map(|_| AtomicU64::new(0)).collect(),
            running: (0..vcpus).map(|_| AtomicBool::new(false)).collect(),
            nmi: (0..vcpus).map(|_| Mutex::new(None)).collect(),
            awaited: (0..vcpus).map(|_| AtomicU64::new(0)).collect(),
            holds: (0..vcpus).map(|_| AtomicU64::new(NO_HOLD)).collect(),
            releases: Mutex::new(VecDeque::new()),
        }
    }
}

impl<M: GuestRam> ShadowVm<M> {
    /// Tells the glue whether vCPU `index` runs guest code. A vCPU that does
    /// not run (not started, stopped) holds no stale translations.
    pub fn set_running(&self, index: usize, running: bool) {
        if let Some(r) = self.flush.running.get(index) {
            if running {
                // Its TLB starts empty: nothing older to flush.
                let generation = self.flush.generation.load(Ordering::Acquire);
                self.flush.flushed[index].fetch_max(generation, Ordering::AcqRel);
            }
            r.store(running, Ordering::Release);
            self.try_complete_flush();
        }
    }

    /// The running vCPUs that still owe a flush: the VMM should kick them out
    /// of `KVM_RUN` (a signal), so that [`ShadowVm::before_run`] sends them
    /// the flush NMI.
    pub fn vcpus_owing_flush(&self) -> Vec<usize> {
        let generation = self.flush.generation.load(Ordering::Acquire);
        (0..self.vcpus.len())
            .filter(|&i| {
                self.flush.running[i].load(Ordering::Acquire)
                    && self.flush.flushed[i].load(Ordering::Acquire) < generation
            })
            .collect()
    }

    /// Call on vCPU `index`'s thread before every `KVM_RUN`: if it owes a
    /// flush, queue the NMI whose handler (in the trampoline) reloads CR3.
    pub fn before_run(&self, index: usize, vcpu: &VcpuFd) -> Result<(), KvmGlueError> {
        self.check_nmi_ack(index);
        let generation = self.flush.generation.load(Ordering::Acquire);
        let Some(flushed) = self.flush.flushed.get(index) else {
            return Ok(());
        };
        if flushed.load(Ordering::Acquire) >= generation {
            return Ok(());
        }
        let mut nmi = self.flush.nmi[index].lock();
        if nmi.is_none() {
            let count = self.sys_load(nmi_block(index));
            *nmi = Some((count, generation));
            vcpu.nmi()?;
        }
        Ok(())
    }

    /// Whether vCPU `index` must wait before its next `KVM_RUN`: a remote
    /// flush its own exit started has not been acknowledged by every other
    /// running vCPU yet. While it is true the VMM kicks the vCPUs in
    /// [`ShadowVm::vcpus_owing_flush`] and asks again; it turns false once
    /// they have flushed (or stopped running).
    pub fn flush_wait(&self, index: usize) -> bool {
        let Some(awaited) = self.flush.awaited.get(index) else {
            return false;
        };
        let generation = awaited.load(Ordering::Acquire);
        if generation == 0 {
            return false;
        }
        let acknowledged = (0..self.vcpus.len()).filter(|&i| i != index).all(|i| {
            self.check_nmi_ack(i);
            !self.flush.running[i].load(Ordering::Acquire)
                || self.flush.flushed[i].load(Ordering::Acquire) >= generation
        });
        if acknowledged {
            // Unless a newer change of this vCPU raised it meanwhile.
            let _ = awaited.compare_exchange(generation, 0, Ordering::AcqRel, Ordering::Acquire);
        }
        !acknowledged
    }

    /// How many flush NMIs the vCPUs' handlers have carried out.
    pub fn nmi_flushes(&self) -> u64 {
        (0..self.vcpus.len())
            .map(|i| self.sys_load(nmi_block(i)))
            .fold(0, u64::wrapping_add)
    }

    /// Marks vCPU `index`'s NMI flush done once its handler has counted it.
    pub(super) fn check_nmi_ack(&self, index: usize) {
        let Some(slot) = self.flush.nmi.get(index) else {
            return;
        };
        let mut nmi = slot.lock();
        if let Some((sent, generation)) = *nmi {
            if self.sys_load(nmi_block(index)) != sent {
                self.flush.flushed[index].fetch_max(generation, Ordering::AcqRel);
                *nmi = None;
                drop(nmi);
                self.try_complete_flush();
            }
        }
    }

    /// Starts a remote flush for a change of vCPU `index` whose stores
    /// have taken effect (or that no other vCPU can observe): bumps the
    /// generation, which `index` itself has acknowledged (its chain
    /// reloads CR3), and records which freed pages it releases.
    pub(super) fn start_flush(&self, index: usize) {
        self.bump_generation(index, true);
    }

    /// A page fault of vCPU `index` must wait for pages (several vCPUs):
    /// unless a flush is under way, start one for the pages freed so far
    /// (whose generation may have been bumped while another vCPU's exit
    /// held them). Its chain reloads CR3; it waits for nobody.
    pub(super) fn flush_for_pages(&self, index: usize, root: u64, cmds: &mut Commands) {
        if self.vcpus.len() == 1 || !self.flush.releases.lock().is_empty() {
            return;
        }
        cmds.cr3.get_or_insert(root);
        self.bump_generation(index, false);
    }

    fn bump_generation(&self, index: usize, wait: bool) {
        let generation = {
            let mut releases = self.flush.releases.lock();
            let mark = self.published_mark();
            let generation = self.flush.generation.fetch_add(1, Ordering::AcqRel) + 1;
            let full = releases.len() >= MAX_RELEASES;
            match releases.back_mut() {
                Some(last) if full => *last = (generation, last.1.max(mark)),
                _ => releases.push_back((generation, mark)),
            }
            generation
        };
        if let Some(f) = self.flush.flushed.get(index) {
            f.fetch_max(generation, Ordering::AcqRel);
        }
        if wait {
            if let Some(a) = self.flush.awaited.get(index) {
                a.fetch_max(generation, Ordering::AcqRel);
            }
        }
        self.try_complete_flush();
    }

    /// The trampoline has carried out the stores of vCPU `index`'s last
    /// change (it exited after them): the other vCPUs flush from here on.
    pub(super) fn published(&self, index: usize) {
        self.drop_hold(index);
        self.start_flush(index);
    }

    /// At the start of an exit of vCPU `index` (several vCPUs): whatever
    /// its previous chain stored has taken effect (a change whose exit was
    /// never reported, when the VMM resumed it another way, is published
    /// now), and this exit's changes are held until they take effect.
    pub(super) fn take_hold(&self, index: usize) {
        if self.vcpus.len() == 1 {
            return;
        }
        let Some(h) = self.flush.holds.get(index) else {
            return;
        };
        if h.load(Ordering::SeqCst) != NO_HOLD {
            self.published(index);
        }
        h.store(self.mmu.free_mark(), Ordering::SeqCst);
    }

    /// The exit of vCPU `index` changed nothing other vCPUs must flush: its
    /// hold goes.
    pub(super) fn drop_hold(&self, index: usize) {
        if let Some(h) = self.flush.holds.get(index) {
            h.store(NO_HOLD, Ordering::SeqCst);
        }
    }

    /// Releases the freed shadow pages of every generation all running
    /// vCPUs have acknowledged.
    pub(super) fn try_complete_flush(&self) {
        let acknowledged = (0..self.vcpus.len())
            .filter(|&i| self.flush.running[i].load(Ordering::Acquire))
            .map(|i| self.flush.flushed[i].load(Ordering::Acquire))
            .min()
            .unwrap_or(u64::MAX);
        let mut mark = None;
        {
            let mut releases = self.flush.releases.lock();
            while let Some(&(generation, m)) = releases.front() {
                if generation > acknowledged {
                    break;
                }
                releases.pop_front();
                mark = mark.max(Some(m));
            }
        }
        if let Some(mark) = mark {
            self.mmu.flush_completed_upto(mark);
        }
    }

    /// The highest free mark of pages vCPU `index`, in an exit, may reuse
    /// without waiting for a flush: every page when no other vCPU runs
    /// (its own chain runs before its guest code does), else those whose
    /// unlinking has taken effect ([`ShadowVm::published_mark`]). No CPU
    /// walks the old links into those any more, though one may still hold
    /// a stale TLB entry, which a hypervisor that flushes remote TLBs on
    /// the trampoline's stores has dropped.
    pub(super) fn reusable_mark(&self, index: usize) -> u64 {
        if self.others_running(index) {
            self.published_mark()
        } else {
            self.mmu.free_mark()
        }
    }

    /// Whether a vCPU other than `index` runs guest code. None can start
    /// during an exit of `index` when none runs: only a running vCPU's
    /// hypercall starts another.
    pub(super) fn others_running(&self, index: usize) -> bool {
        (0..self.vcpus.len()).any(|i| i != index && self.flush.running[i].load(Ordering::Acquire))
    }

    /// The highest free mark no vCPU holds: pages up to it are unlinked
    /// in what every CPU sees, flushed or not.
    pub(super) fn published_mark(&self) -> u64 {
        // The mark first, then the holds: a hold taken after this read
        // covers only pages freed after it.
        self.flush
            .holds
            .iter()
            .map(|h| h.load(Ordering::SeqCst))
            .fold(self.mmu.free_mark(), u64::min)
    }
}
