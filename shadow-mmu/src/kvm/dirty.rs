// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The dirty-bit fast path, VMM side: arming the trampoline with the clean
//! entries of the guest table a page fault just mapped
//! ([`crate::dirty`]), so that the first write to each sets its D bit
//! without an exit (the #PF entry of `trampoline.S`), and taking over what
//! the trampoline did at the next exit.
//!
//! The #PF gate leads to the fast path only while a table is armed: an
//! unarmed fault exits through the plain stub, with none of its checks.
//!
//! Only a VM with one vCPU arms: another vCPU's exit could change the
//! shadow page under a running vCPU's armed table without this vCPU
//! exiting. Everything the trampoline reads lives in the hole, which guest
//! CPL0 code can write: the VMM never reads it back. It keeps the armed
//! table itself, and the MMU takes over an entry only if the CPU sees
//! exactly what the trampoline would have written.

use std::sync::atomic::Ordering;

use super::chain::Commands;
use super::layout::*;
use super::mailbox::{ARM_BASE, ARM_CR2, ARM_SPT, DISARMED, UNARMED};
use super::system;
use super::vcpu::VcpuGlue;
use super::{KvmGlueError, ShadowVm};
use crate::pte::{PTE_A, PTE_D, PTE_P, PTE_PWT, PTE_W, PTE_XD};
use crate::{Changes, GuestRam, Gva, PfErrorCode};

impl<M: GuestRam> ShadowVm<M> {
    /// Lets the trampoline resolve writes to clean pages by itself (the
    /// default) or not. With it off, every such write exits and the MMU
    /// resolves it, as KVM does. Takes effect at each vCPU's next exit.
    pub fn set_dirty_fast_path(&self, on: bool) {
        self.dirty_fast_path.store(on, Ordering::Relaxed);
    }

    /// Has the MMU take over what the trampoline of stopped vCPU `index`
    /// did by itself since the vCPU's last exit, and disarms it. Every
    /// exit does this first; a VMM that asks the MMU about a vCPU stopped
    /// elsewhere (a `hlt`, a pause) for an audit or a snapshot calls it
    /// first, while the vCPU does not run.
    pub fn catch_up(&self, index: usize) -> Result<(), KvmGlueError> {
        let mut g = self.glue(index)?.lock();
        let owed = self.catch_up_dirty(&mut g, index);
        // Carried out at the next exit, where the trampoline can.
        g.owed.merge(owed);
        Ok(())
    }

    /// Disarms vCPU `index` and has the MMU take over the entries the
    /// trampoline made writable since the vCPU's table was armed. Runs at
    /// every exit before the MMU is asked anything for the vCPU: until
    /// then, those entries differ from the MMU's copy.
    pub(super) fn catch_up_dirty(&self, g: &mut VcpuGlue, index: usize) -> Changes {
        let Some(table) = g.armed.take() else {
            return Changes::default();
        };
        self.sys_store(vcpu_block(index) + ARM_BASE, DISARMED);
        let (at, gate) = system::pf_gate(index, false);
        self.sys_store(at, gate);
        let arm = arm_block(index);
        for e in &table.entries {
            self.sys_store(arm + ARM_GPTES + 8 * u64::from(e.index), UNARMED);
        }
        let (taken, changes) = self.mmu.dirty_taken(&table);
        g.armed_paid = taken > 0;
        changes
    }

    /// Arms vCPU `index` with the clean entries of the guest table through
    /// which it maps `gva`, if there are any and the fast path may run,
    /// after a page fault with error code `error_code` that the MMU fixed.
    ///
    /// Arming costs the exit a scan of the table and, for another table
    /// than the last, two more trampoline operations: it pays when the
    /// writes that follow stay in the table, as after a fault that mapped
    /// a table's entries at once (a not-present fault), or when the last
    /// table armed was used. A write fault on a clean page after the last
    /// table went unused is a guest writing all over: no arming.
    pub(super) fn arm_dirty(
        &self,
        g: &mut VcpuGlue,
        index: usize,
        gva: u64,
        error_code: u64,
        cmds: &mut Commands,
    ) {
        if !self.dirty_fast_path.load(Ordering::Relaxed) || self.vcpus.len() != 1 {
            return;
        }
        if error_code & u64::from(PfErrorCode::P.bits()) != 0 && !g.armed_paid {
            return;
        }
        let Some(table) = self.mmu.dirty_table(index, Gva(gva)) else {
            return;
        };
        let arm = arm_block(index);
        if g.window != Some(table.table) {
            // The hole's view of the guest table: a store by the VMM is
            // not seen by a hypervisor that shadows the hole's tables, so
            // the trampoline rewrites the entry and drops the old
            // translation.
            let entry = HOLE_PT + 8 * ((arm + ARM_WINDOW) / 4096);
            self.sys_store(entry, table.table | PTE_P | PTE_W | PTE_A | PTE_D | PTE_XD);
            cmds.writes.push(hole_va(entry));
            cmds.invlpg.push(hole_va(arm + ARM_WINDOW));
            g.window = Some(table.table);
        }
        for e in table.entries.iter().filter(|e| e.gpte & PTE_PWT == 0) {
            let at = 8 * u64::from(e.index);
            self.sys_store(arm + ARM_SPTES + at, e.spte);
            self.sys_store(arm + ARM_GPTES + at, e.gpte);
        }
        let block = vcpu_block(index);
        let arena = self.hidden_base + SYSTEM_SIZE;
        self.sys_store(block + ARM_SPT, hole_arena_va(table.page - arena));
        self.sys_store(block + ARM_CR2, g.guest_cr2);
        self.sys_store(block + ARM_BASE, table.base.0);
        let (at, gate) = system::pf_gate(index, true);
        self.sys_store(at, gate);
        g.armed = Some(table);
    }
}
