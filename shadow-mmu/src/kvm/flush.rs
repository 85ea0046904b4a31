// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Remote TLB flushes: which vCPUs still owe a flush of shadow entries
//! another vCPU changed, the NMI that makes a running vCPU flush, and when
//! freed shadow pages may be reused.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use kvm_ioctls::VcpuFd;
use parking_lot::Mutex;

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
}

impl RemoteFlush {
    /// Nothing owed yet by any of `vcpus` vCPUs, none running.
    pub(super) fn new(vcpus: usize) -> RemoteFlush {
        RemoteFlush {
            generation: AtomicU64::new(0),
            flushed: (0..vcpus).map(|_| AtomicU64::new(0)).collect(),
            running: (0..vcpus).map(|_| AtomicBool::new(false)).collect(),
            nmi: (0..vcpus).map(|_| Mutex::new(None)).collect(),
            awaited: (0..vcpus).map(|_| AtomicU64::new(0)).collect(),
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

    /// Releases freed shadow pages once every running vCPU has flushed the
    /// latest generation.
    pub(super) fn try_complete_flush(&self) {
        let generation = self.flush.generation.load(Ordering::Acquire);
        let done = (0..self.vcpus.len()).all(|i| {
            !self.flush.running[i].load(Ordering::Acquire)
                || self.flush.flushed[i].load(Ordering::Acquire) >= generation
        });
        if done {
            self.mmu.flush_completed();
        }
    }
}
