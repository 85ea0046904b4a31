// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Setting a vCPU up to run on shadow tables: its segment registers, GDT,
//! IDT and TSS in the hole, the real CR0/CR4/EFER, and the per-vCPU state
//! the glue keeps.

use std::collections::VecDeque;

use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs};
use kvm_ioctls::VcpuFd;
use parking_lot::Mutex;

use super::chain::Commands;
use super::layout::*;
use super::mailbox::SWITCHED;
use super::{KvmGlueError, ShadowVm};
use crate::{Changes, DirtyTable, GuestRam};
use crate::{Cr0, Cr4, Efer, MmuError, PagingMode, PagingState};

/// Per-vCPU shadow state of the glue.
#[derive(Debug, Default)]
pub(super) struct VcpuGlue {
    /// The paging state the guest believes in.
    pub(super) guest: Option<PagingState>,
    /// The shadow root the vCPU's CR3 holds.
    pub(super) root: u64,
    /// The guest's exception and interrupt handlers, read from its trap
    /// table when it registered it (0: none), and its kernel stack.
    pub(super) handlers: Handlers,
    pub(super) kernel_rsp: u64,
    /// Chains still to hand to the trampoline, one per exit; `true` on the
    /// first chain after the stores of a change that other vCPUs must
    /// flush (the exit before it reports them carried out).
    pub(super) pending: VecDeque<(Vec<u64>, bool)>,
    /// Commands held back until the VMM has answered a hypercall.
    pub(super) deferred: Option<Commands>,
    /// CR2 as the guest knows it: the address of the last page fault
    /// delivered to it. Shadow faults the guest never sees overwrite the
    /// real CR2 and must put this back.
    pub(super) guest_cr2: u64,
    /// The page faults the VMM served in a row at one place.
    pub(super) repeats: FaultRepeats,
    /// The clean entries the trampoline may make dirty by itself until the
    /// next exit (`kvm::dirty`).
    pub(super) armed: Option<DirtyTable>,
    /// The shadow-physical frame the arm block's window maps.
    pub(super) window: Option<u64>,
    /// Whether the trampoline used the last table armed.
    pub(super) armed_paid: bool,
    /// Changes of a catch-up outside an exit ([`ShadowVm::catch_up`]),
    /// for the next exit's chain.
    pub(super) owed: Changes,
}

/// A handler address per vector (0: none).
#[derive(Debug)]
pub(super) struct Handlers(pub(super) [u64; 256]);

impl Default for Handlers {
    fn default() -> Self {
        Handlers([0; 256])
    }
}

impl Handlers {
    /// The handler of `vector`, 0 for none.
    pub(super) fn get(&self, vector: u8) -> u64 {
        self.0[usize::from(vector)]
    }
}

/// Identical page faults (address, error code, RIP) in a row that the MMU
/// reported fixed: a vCPU whose CPU view and MMU view disagree faults there
/// for ever (`KvmGlueError::FaultLoop`). Faults it asked to retry are not
/// counted: they wait for other vCPUs (a flush, a page under a small cap),
/// which can take long on a loaded host, and a guest that keeps its own
/// vCPU retrying only spins, as a `jmp .` would.
#[derive(Debug, Default)]
pub(super) struct FaultRepeats {
    key: (u64, u64, u64),
    /// Reported fixed: the next attempt succeeds unless another vCPU undid
    /// the fix meanwhile.
    fixed: u32,
}

impl FaultRepeats {
    /// More "fixed" identical faults than any interleaving of other vCPUs'
    /// zaps makes: each needs another vCPU to undo the fix within the few
    /// microseconds before the retry.
    pub(super) const MAX_FIXED: u32 = 256;

    /// Counts one served fault; the error when it is one too many.
    pub(super) fn note(
        &mut self,
        gva: u64,
        error_code: u64,
        rip: u64,
        fixed: bool,
    ) -> Result<(), super::KvmGlueError> {
        let key = (gva, error_code, rip);
        if key != self.key {
            *self = FaultRepeats {
                key,
                ..FaultRepeats::default()
            };
        }
        if fixed {
            self.fixed += 1;
        }
        if self.fixed > Self::MAX_FIXED {
            return Err(super::KvmGlueError::FaultLoop {
                gva,
                error_code,
                rip,
                faults: self.fixed,
            });
        }
        Ok(())
    }

    /// Anything but a served page fault: the vCPU made progress.
    pub(super) fn reset(&mut self) {
        *self = FaultRepeats::default();
    }
}

impl<M: GuestRam> ShadowVm<M> {
    /// Sets vCPU `index` (whose CPUID is already set) up to start at `regs`
    /// in 64-bit mode on the shadow of the guest tables `guest` describes.
    pub fn setup_vcpu(
        &self,
        vcpu: &VcpuFd,
        index: usize,
        guest: &PagingState,
        regs: &kvm_regs,
    ) -> Result<(), KvmGlueError> {
        let mut sregs = vcpu.get_sregs()?;
        self.prepare_vcpu(index, guest, &mut sregs)?;
        vcpu.set_sregs(&sregs)?;
        vcpu.set_regs(regs)?;
        Ok(())
    }

    /// Fills `sregs` for vCPU `index` to run in 64-bit mode on the shadow of
    /// the guest tables `guest` describes: CR3 is the shadow root, GDT, IDT
    /// and TR are the VMM's in the hole. For VMMs that set the registers
    /// themselves (see [`ShadowVm::setup_vcpu`] for one that does it all).
    pub fn prepare_vcpu(
        &self,
        index: usize,
        guest: &PagingState,
        sregs: &mut kvm_sregs,
    ) -> Result<(), KvmGlueError> {
        if guest.mode() == PagingMode::Level5 {
            // The hole is mounted in 4-level roots only.
            return Err(KvmGlueError::Config("5-level guests are not supported"));
        }
        let (root, changes) = self.load_root(index, guest)?;
        // The vCPU has not run: it caches nothing yet.
        self.try_complete_flush();
        drop(changes);
        let glue = self.glue(index)?;
        {
            let mut g = glue.lock();
            g.guest = Some(*guest);
            g.root = root;
            // A vCPU set up again (a reset) starts with no trap table, no
            // switch to catch up with and only its new root cached.
            self.set_trap_table(&mut g, index, 0, 0, 0);
            self.sys_store(vcpu_block(index) + SWITCHED, 0);
            // What the trampoline did since the last exit is the MMU's
            // again; the new root's load flushes what a revert would.
            drop(self.catch_up_dirty(&mut g, index));
        }
        self.publish_roots(index);
        let code = kvm_segment {
            base: 0,
            limit: 0xffff_ffff,
            selector: KERNEL_CS,
            type_: 11,
            present: 1,
            dpl: 0,
            db: 0,
            s: 1,
            l: 1,
            g: 1,
            avl: 0,
            unusable: 0,
            padding: 0,
        };
        let data = kvm_segment {
            selector: KERNEL_DS,
            type_: 3,
            db: 1,
            l: 0,
            ..code
        };
        sregs.cs = code;
        sregs.ds = data;
        sregs.es = data;
        sregs.ss = data;
        sregs.fs = data;
        sregs.gs = data;
        sregs.tr = kvm_segment {
            base: hole_va(TSS + index as u64 * TSS_STRIDE),
            limit: 103,
            selector: TSS_SELECTOR + 16 * index as u16,
            type_: 11,
            s: 0,
            db: 0,
            l: 0,
            g: 0,
            ..code
        };
        sregs.gdt.base = hole_va(GDT);
        sregs.gdt.limit = (TSS_SELECTOR as u64 + 16 * MAX_VCPUS as u64 - 1) as u16;
        sregs.idt.base = hole_va(idt(index));
        sregs.idt.limit = (IDT_STRIDE - 1) as u16;
        sregs.cr0 = (Cr0::PE | Cr0::MP | Cr0::ET | Cr0::NE | Cr0::WP | Cr0::PG).bits();
        sregs.cr4 = real_cr4(guest);
        sregs.efer = (Efer::LME | Efer::LMA | Efer::NXE | Efer::SCE).bits();
        sregs.cr3 = root;
        Ok(())
    }

    /// The glue state of vCPU `index`.
    pub(super) fn glue(&self, index: usize) -> Result<&Mutex<VcpuGlue>, KvmGlueError> {
        self.vcpus
            .get(index)
            .ok_or(KvmGlueError::Mmu(MmuError::NoSuchVcpu(index)))
    }
}

/// The CR4 the vCPU really runs with: PAE and SSE support always, SMEP and
/// SMAP as the guest asked (the CPU checks them against shadow U bits).
pub(super) fn real_cr4(guest: &PagingState) -> u64 {
    let mut cr4 = Cr4::PAE | Cr4::OSFXSR | Cr4::OSXMMEXCPT;
    cr4 |= guest.cr4 & (Cr4::SMEP | Cr4::SMAP);
    cr4.bits()
}
