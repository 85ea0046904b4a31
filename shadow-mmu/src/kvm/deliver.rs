// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Delivering an exception to the guest as the CPU would: the frame pushed
//! on the kernel stack through the guest's own tables, the handler from the
//! trap table.

use std::sync::atomic::Ordering;

use vm_memory::{Bytes, GuestAddressSpace};

use super::chain::Commands;
use super::exit::Exit;
use super::frame::{IretFrame, RFLAGS_IF, RFLAGS_NT, RFLAGS_RF, RFLAGS_TF, RFLAGS_VM};
use super::layout::*;
use super::vcpu::VcpuGlue;
use super::{KvmGlueError, ShadowVm};
use crate::arch::vector;
use crate::GuestRam;
use crate::{Access, AccessKind, Gva, ShadowMmu};

impl<M: GuestRam> ShadowVm<M> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn deliver(
        &self,
        g: &VcpuGlue,
        index: usize,
        vector: u8,
        error_code: Option<u64>,
        cr2: Option<u64>,
        frame: IretFrame,
        cmds: &mut Commands,
    ) -> Result<Exit, KvmGlueError> {
        let unhandled = Exit::Unhandled {
            vector,
            error_code: error_code.unwrap_or(0),
            rip: frame.rip,
            cr2: cr2.unwrap_or(0),
        };
        let handler = g.handlers.get(vector);
        if handler == 0 {
            return Ok(unhandled);
        }
        let mem = self.mmu.memory().memory();
        let write = Access::implicit(AccessKind::Write);
        let from_user = frame.is_user();
        let mut sp = if from_user { g.kernel_rsp } else { frame.rsp } & !15;
        // Pushed from the highest address down: SS first, RIP last.
        let mut pushes: Vec<u64> = frame.words().into_iter().rev().collect();
        pushes.extend(error_code);
        // The kernel stack is unusable: a double fault on hardware, which
        // this ABI has no gate for.
        let undeliverable = |sp: u64| KvmGlueError::Undeliverable {
            vector,
            error_code: error_code.unwrap_or(0),
            rip: frame.rip,
            stack: sp,
        };
        for value in pushes {
            sp = sp.wrapping_sub(8);
            let Ok(gpa) = self.mmu.gva_to_gpa(index, Gva(sp), write) else {
                return Err(undeliverable(sp));
            };
            if mem.write_obj(value, gpa).is_err() {
                return Err(undeliverable(sp));
            }
            // The stack may share a page with a shadowed page table.
            let changes = self.mmu.track_write(gpa, 8);
            self.add_changes(g, index, cmds, changes);
        }
        let rflags =
            (frame.rflags & !(RFLAGS_IF | RFLAGS_TF | RFLAGS_NT | RFLAGS_RF | RFLAGS_VM)) | 2;
        // As the CPU does: a privilege change loads SS with the null
        // selector; without one SS stays.
        let ss = if from_user { 0 } else { frame.ss };
        cmds.frame = Some(IretFrame {
            rip: handler,
            cs: u64::from(KERNEL_CS),
            rflags,
            rsp: sp,
            ss,
        });
        if cr2.is_some() {
            cmds.cr2 = cr2;
        }
        Ok(Exit::Resume)
    }
}

impl<M: GuestRam> ShadowVm<M> {
    /// Delivers external interrupt `vector`, which came between two
    /// instructions of the guest at `frame`, to the guest's handler, as an
    /// interrupt gate does (no error code). With no handler the gate is not
    /// present, and the CPU raises #NP with the gate's IDT slot, IDT and EXT
    /// bits as its error code.
    pub(super) fn deliver_interrupt(
        &self,
        g: &VcpuGlue,
        index: usize,
        vector: u8,
        frame: IretFrame,
        cmds: &mut Commands,
    ) -> Result<Exit, KvmGlueError> {
        if g.handlers.get(vector) == 0 {
            let error_code = (u64::from(vector) << 3) | 0b11;
            return self.deliver(g, index, vector::NP, Some(error_code), None, frame, cmds);
        }
        let exit = self.deliver(g, index, vector, None, None, frame, cmds)?;
        self.interrupts.fetch_add(1, Ordering::Relaxed);
        Ok(exit)
    }

    /// External interrupts delivered to the guest's handlers so far: one
    /// trampoline exit each.
    pub fn interrupts(&self) -> u64 {
        self.interrupts.load(Ordering::Relaxed)
    }
}

/// Whether a gate may send the CPU to `va` (a handler, or the stack it
/// pushes its frame on): a canonical 48-bit address outside the hole (the
/// VMM's own code and data).
pub(super) fn is_guest_code_address(va: u64) -> bool {
    va != 0 && Gva(va).is_canonical(47) && !in_hole(va)
}

/// Whether `va` lies in the hypervisor hole (PML4 slot 510).
pub(super) fn in_hole(va: u64) -> bool {
    (HOLE_BASE..HOLE_BASE + (1 << 39)).contains(&va)
}
