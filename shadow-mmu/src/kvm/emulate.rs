// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Emulating a guest store into a shadowed page table on a vCPU: the
//! registers put together from what KVM reports and what the trampoline
//! saved, guest memory through [`MmuMemory`], and the result handed back
//! through the return chain.

use std::sync::atomic::Ordering;

use kvm_bindings::kvm_regs;
use vm_memory::{GuestAddress, GuestAddressSpace};

use super::chain::Commands;
use super::exit::Exit;
use super::frame::IretFrame;
use super::layout::*;
use super::mailbox::stack;
use super::vcpu::VcpuGlue;
use super::{KvmGlueError, ShadowVm};
use crate::arch::vector;
use crate::emulate::{self, reg, EmulateError, Exception, MmuMemory, Regs};
use crate::GuestRam;

impl<M: GuestRam> ShadowVm<M> {
    /// Carries out the guest store that made vCPU `index` exit with
    /// [`Exit::Emulate`] (a write into a page the MMU shadows as a page
    /// table), then lets the vCPU resume after the instruction.
    ///
    /// `regs` are the vCPU's registers as KVM reports them at that exit
    /// (`KVM_GET_REGS`, or the `kvm_run` sync registers); on return they hold
    /// what the VMM must write back before it runs the vCPU again if they
    /// changed (the guest's RAX, RDX, RIP and RFLAGS go back through the
    /// trampoline; `regs` keeps the trampoline's own). Returns what to do
    /// next, as [`ShadowVm::handle_exit`] does: the instruction may also
    /// raise an exception for the guest, reach MMIO, or not be emulable.
    pub fn emulate(&self, index: usize, regs: &mut kvm_regs) -> Result<Exit, KvmGlueError> {
        let glue = self.glue(index)?;
        let mut g = glue.lock();
        let mut cmds = g.deferred.take().unwrap_or_default();
        let top = vcpu_block(index) + VCPU_BLOCK_SIZE;
        let rd = |off: u64| self.sys_load(top - off);
        let frame = self.saved_frame(index);
        let mut guest = Regs {
            gpr: [
                rd(stack::RAX),
                regs.rcx,
                rd(stack::RDX),
                regs.rbx,
                frame.rsp,
                regs.rbp,
                regs.rsi,
                regs.rdi,
                regs.r8,
                regs.r9,
                regs.r10,
                regs.r11,
                regs.r12,
                regs.r13,
                regs.r14,
                regs.r15,
            ],
            rip: frame.rip,
            rflags: frame.rflags,
        };
        let mem = self.mmu.memory().memory();
        let mut access = MmuMemory::new(&self.mmu, &*mem, index, frame.cpl(), &self.wide_stores);
        let result = emulate::emulate(&mut guest, &mut access, frame.cpl());
        let changes = access.take_changes();
        let mmio = access.mmio();
        self.add_changes(&g, index, &mut cmds, changes);
        let exit = match result {
            Ok(_) => {
                self.sys_store(top - stack::RAX, guest.gpr[reg::RAX]);
                self.sys_store(top - stack::RDX, guest.gpr[reg::RDX]);
                let r = &guest.gpr;
                (regs.rcx, regs.rbx, regs.rbp, regs.rsi, regs.rdi) = (r[1], r[3], r[5], r[6], r[7]);
                (regs.r8, regs.r9, regs.r10, regs.r11) = (r[8], r[9], r[10], r[11]);
                (regs.r12, regs.r13, regs.r14, regs.r15) = (r[12], r[13], r[14], r[15]);
                cmds.frame = Some(IretFrame {
                    rip: guest.rip,
                    rflags: guest.rflags,
                    rsp: guest.gpr[reg::RSP],
                    ..frame
                });
                self.emulated.fetch_add(1, Ordering::Relaxed);
                Exit::Resume
            }
            Err(EmulateError::Exception(e)) => self.raise(&g, index, e, mmio, frame, &mut cmds)?,
            Err(EmulateError::Decode { .. }) => {
                self.raise(&g, index, Exception::InvalidOpcode, None, frame, &mut cmds)?
            }
            Err(EmulateError::Unsupported { bytes }) => {
                return Err(KvmGlueError::Emulation {
                    rip: frame.rip,
                    bytes,
                })
            }
        };
        if let Some(delivered) = cmds.cr2 {
            g.guest_cr2 = delivered;
        }
        self.post(&mut g, index, cmds);
        Ok(exit)
    }

    /// The guest gets `e`, raised by the instruction at `frame.rip`.
    fn raise(
        &self,
        g: &VcpuGlue,
        index: usize,
        e: Exception,
        mmio: Option<GuestAddress>,
        frame: IretFrame,
        cmds: &mut Commands,
    ) -> Result<Exit, KvmGlueError> {
        match e {
            Exception::InvalidOpcode => self.deliver(g, index, vector::UD, None, None, frame, cmds),
            Exception::GeneralProtection => {
                self.deliver(g, index, vector::GP, Some(0), None, frame, cmds)
            }
            Exception::PageFault { error_code, cr2 } => self.deliver(
                g,
                index,
                vector::PF,
                Some(u64::from(error_code.bits())),
                Some(cr2.0),
                frame,
                cmds,
            ),
            Exception::Mmio { gva } => Ok(Exit::Mmio {
                gpa: mmio.unwrap_or(GuestAddress(gva.0)),
                rip: frame.rip,
            }),
        }
    }

    /// How many guest instructions the glue has emulated.
    pub fn emulated(&self) -> u64 {
        self.emulated.load(Ordering::Relaxed)
    }
}
