// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Trampoline exits: decoding what the trampoline left on the IST stack
//! (vector, error code, CR2, the hardware frame) and turning it into MMU
//! calls, a hypercall, an exception for the guest or an [`Exit`] for the VMM.

use std::sync::atomic::Ordering;

use vm_memory::{Bytes, GuestAddress, GuestAddressSpace};

use super::chain::{trampoline_va, Commands};
use super::deliver::{in_hole, is_guest_code_address};
use super::frame::IretFrame;
use super::frame::RFLAGS_AC;
use super::layout::*;
use super::mailbox::*;
use super::vcpu::VcpuGlue;
use super::{
    KvmGlueError, ShadowVm, DIRECT_VECTOR, FIRST_INTERRUPT, HYPERCALL_INSN, HYPERCALL_REG_INSN,
};
use crate::abi;
use crate::arch::vector;
use crate::GuestRam;
use crate::{Access, AccessKind, FaultOutcome, GuestException, Gva, PfErrorCode, ShadowMmu};

/// What the VMM must do after a trampoline exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Run the vCPU again.
    Resume,
    /// A hypercall the VMM serves itself (console, exit, start vCPU,
    /// unknown numbers); answer it with [`ShadowVm::complete_hypercall`]
    /// before running the vCPU again.
    Hypercall {
        /// GPA of the hypercall block.
        block: GuestAddress,
        /// The number.
        nr: u64,
        /// The arguments.
        args: [u64; 4],
    },
    /// The guest accessed an address that is not RAM and no registered
    /// MMIO range: the VMM would have to emulate the instruction.
    Mmio {
        /// The guest-physical address.
        gpa: GuestAddress,
        /// The instruction.
        rip: u64,
    },
    /// The guest wrote a shadowed page table in a way that needs
    /// instruction emulation: call [`ShadowVm::emulate`] with the vCPU's
    /// registers before running it again (or stop the VM).
    Emulate {
        /// The guest-physical address written.
        gpa: GuestAddress,
        /// The instruction.
        rip: u64,
    },
    /// An exception the guest has no handler for: the VM cannot go on.
    Unhandled {
        /// The vector.
        vector: u8,
        /// Its error code.
        error_code: u64,
        /// Where.
        rip: u64,
        /// CR2 for a page fault.
        cr2: u64,
    },
}

impl<M: GuestRam> ShadowVm<M> {
    /// The hardware frame of the exception that made vCPU `index` exit, as
    /// the CPU pushed it on the trampoline's IST stack.
    pub(super) fn saved_frame(&self, index: usize) -> IretFrame {
        let top = vcpu_block(index) + VCPU_BLOCK_SIZE;
        let rd = |off: u64| self.sys_load(top - off);
        IretFrame {
            rip: rd(stack::RIP),
            cs: rd(stack::CS),
            rflags: rd(stack::RFLAGS),
            rsp: rd(stack::RSP),
            ss: rd(stack::SS),
        }
    }

    /// The vCPU exited through the trampoline (an `out` to [`EXIT_PORT`](crate::kvm::EXIT_PORT)).
    pub fn handle_exit(&self, index: usize) -> Result<Exit, KvmGlueError> {
        let glue = self.glue(index)?;
        let mut g = glue.lock();
        let block = vcpu_block(index);
        self.check_nmi_ack(index);
        if let Some((chain, published)) = g.pending.pop_front() {
            // The `again` gadget of the previous chain: the next one goes
            // at the start of the chain area.
            self.write_chain(block, &chain);
            if published {
                self.published(index);
            }
            return Ok(Exit::Resume);
        }
        // Whatever the last chain stored has taken effect: the guest ran
        // after it and exited again.
        self.take_hold(index);
        let top = block + VCPU_BLOCK_SIZE;
        let rd = |off: u64| self.sys_load(top - off);
        let vector = rd(stack::VECTOR) as u8;
        let error_code = rd(stack::ERROR_CODE);
        let cr2 = rd(stack::CR2);
        let frame = self.saved_frame(index);
        // Until a chain is posted, the trampoline just resumes (and the
        // guest retries): a VMM that runs the vCPU again without answering
        // a hypercall, or after an error, gets no stray return.
        self.sys_store(top - stack::CR2, trampoline_va(gadget::RESUME));
        let mut cmds = Commands::default();
        // Before the MMU sees anything: entries the trampoline made
        // writable differ from its copy until it takes them over.
        let mut taken = std::mem::take(&mut g.owed);
        taken.merge(self.catch_up_dirty(&mut g, index));
        self.add_changes(&g, index, &mut cmds, taken);
        self.catch_up_with_switch(&mut g, index, &mut cmds)?;
        // A flush this vCPU owes is done by the reload on the way back.
        let generation = self.flush.generation.load(Ordering::Acquire);
        if self.flush.flushed[index].load(Ordering::Acquire) < generation {
            cmds.cr3.get_or_insert(g.root);
            self.flush.flushed[index].fetch_max(generation, Ordering::AcqRel);
            self.try_complete_flush();
        }
        if vector != vector::PF {
            g.repeats.reset();
        }
        if in_hole(frame.rip) {
            // Guest code never runs in the hole: the trampoline faulted.
            return Err(KvmGlueError::TrampolineFault {
                vector,
                error_code,
                rip: frame.rip,
            });
        }
        // A fault the MMU fixed: its table's clean entries may be armed.
        let mut arm = None;
        let exit = match vector {
            vector::PF => {
                // Whatever becomes of it, this fault is not the guest's
                // unless it is delivered below: its address must not stay
                // in CR2 (a handler still to read the guest's own fault
                // address would read this one).
                if cr2 != g.guest_cr2 {
                    cmds.cr2 = Some(g.guest_cr2);
                }
                self.mmu
                    .set_eflags_ac(index, frame.rflags & RFLAGS_AC != 0)?;
                let ec = PfErrorCode::from_bits_truncate(error_code as u32);
                let (outcome, changes) = self.mmu.page_fault(index, Gva(cr2), ec)?;
                self.add_changes(&g, index, &mut cmds, changes);
                if outcome == FaultOutcome::Retry {
                    self.flush_for_pages(index, g.root, &mut cmds);
                }
                if outcome == FaultOutcome::Fixed {
                    arm = Some(cr2);
                }
                if matches!(outcome, FaultOutcome::Fixed | FaultOutcome::Retry) {
                    let fixed = outcome == FaultOutcome::Fixed;
                    g.repeats.note(cr2, error_code, frame.rip, fixed)?;
                } else {
                    g.repeats.reset();
                }
                match outcome {
                    FaultOutcome::Fixed | FaultOutcome::Retry => Exit::Resume,
                    FaultOutcome::Inject(GuestException::PageFault { error_code, cr2 }) => self
                        .deliver(
                            &g,
                            index,
                            vector::PF,
                            Some(u64::from(error_code.bits())),
                            Some(cr2.0),
                            frame,
                            &mut cmds,
                        )?,
                    FaultOutcome::Inject(GuestException::GeneralProtection) => {
                        self.deliver(&g, index, vector::GP, Some(0), None, frame, &mut cmds)?
                    }
                    FaultOutcome::Mmio { gpa } => Exit::Mmio {
                        gpa,
                        rip: frame.rip,
                    },
                    FaultOutcome::Emulate { gpa } => Exit::Emulate {
                        gpa,
                        rip: frame.rip,
                    },
                }
            }
            vector::UD if frame.cpl() == 0 && self.is_insn(index, frame.rip, HYPERCALL_INSN) => {
                cmds.frame = Some(IretFrame {
                    rip: frame.rip.wrapping_add(HYPERCALL_INSN.len() as u64),
                    ..frame
                });
                self.hypercall(&mut g, index, rd(stack::RAX) & 0xffff_ffff, &mut cmds)?
            }
            vector::UD
                if frame.cpl() == 0 && self.is_insn(index, frame.rip, HYPERCALL_REG_INSN) =>
            {
                cmds.frame = Some(IretFrame {
                    rip: frame.rip.wrapping_add(HYPERCALL_REG_INSN.len() as u64),
                    ..frame
                });
                let result = match rd(stack::RAX) {
                    1 => self.load_cr3(&mut g, index, rd(stack::RDX), &mut cmds)?,
                    _ => abi::result::E_UNKNOWN,
                };
                // The chain restores RAX from its slot.
                self.sys_store(top - stack::RAX, result as u64);
                Exit::Resume
            }
            v if v >= FIRST_INTERRUPT => {
                // Interrupts enter through stubs of their own; a damaged
                // exception entry that pushes such a vector would have the
                // VMM deliver it at every fault, for ever.
                if let Some(offset) = self.trampoline_damage() {
                    return Err(KvmGlueError::TrampolineCorrupted { offset });
                }
                self.deliver_interrupt(&g, index, v, frame, &mut cmds)?
            }
            vector::DF if self.failed_direct_delivery(&g, index, frame) => {
                self.deliver(&g, index, DIRECT_VECTOR, None, None, frame, &mut cmds)?
            }
            v => {
                let ec = vector::has_error_code(v).then_some(error_code);
                self.deliver(&g, index, v, ec, None, frame, &mut cmds)?
            }
        };
        if let Some(delivered) = cmds.cr2 {
            g.guest_cr2 = delivered;
        }
        if matches!(exit, Exit::Hypercall { .. } | Exit::Emulate { .. }) {
            // Posted once the VMM has written the result, or had the store
            // emulated (`ShadowVm::emulate`).
            g.deferred = Some(cmds);
        } else {
            if let Some(gva) = arm {
                self.arm_dirty(&mut g, index, gva, error_code, &mut cmds);
            }
            self.post(&mut g, index, cmds);
        }
        Ok(exit)
    }

    /// If the trampoline switched address spaces by itself since the last
    /// exit (a cached root, see [`HYPERCALL_REG_INSN`]), tells the MMU, so
    /// that it knows which root the vCPU runs on before anything else.
    pub(super) fn catch_up_with_switch(
        &self,
        g: &mut VcpuGlue,
        index: usize,
        cmds: &mut Commands,
    ) -> Result<(), KvmGlueError> {
        let at = vcpu_block(index) + SWITCHED;
        let switched = self.sys_load(at);
        if switched == 0 {
            return Ok(());
        }
        self.sys_store(at, 0);
        // A cached root: found, not built; no unsync page to sync. The word
        // lives in the hole, which guest CPL0 code can write: it is checked
        // as a LOAD_CR3 would be, and the reload this queues puts the vCPU
        // on the root the MMU now holds, whatever the word said.
        let _ = self.load_cr3(g, index, switched & !(1 << 63), cmds)?;
        // Also when the word was refused: the trampoline may have loaded a
        // forged root-cache slot, and the CPU must leave it.
        cmds.cr3 = Some(g.root);
        Ok(())
    }

    /// Whether the #DF with `frame` is this host's report of a direct #BP
    /// delivery that faulted (its kernel stack or handler not shadowed yet):
    /// the guest has a direct #BP gate and `frame` is the one the #BP would
    /// have pushed, right after an `int3` (`cc`) or `int 3` (`cd 03`). The
    /// VMM then delivers the #BP itself, through guest memory.
    pub(super) fn failed_direct_delivery(
        &self,
        g: &VcpuGlue,
        index: usize,
        frame: IretFrame,
    ) -> bool {
        let handler = g.handlers.get(DIRECT_VECTOR);
        if !is_guest_code_address(handler) {
            return false;
        }
        let cpl = frame.cpl();
        let byte = |back: u64| {
            let mem = self.mmu.memory().memory();
            let fetch = Access::at_cpl(AccessKind::Fetch, cpl);
            self.mmu
                .gva_to_gpa(index, Gva(frame.rip.wrapping_sub(back)), fetch)
                .ok()
                .and_then(|gpa| mem.read_obj::<u8>(gpa).ok())
        };
        byte(1) == Some(0xcc) || (byte(2) == Some(0xcd) && byte(1) == Some(0x03))
    }

    /// Whether the CPL0 instruction at `rip` is `want`.
    pub(super) fn is_insn(&self, index: usize, rip: u64, want: [u8; 5]) -> bool {
        let mem = self.mmu.memory().memory();
        let fetch = Access::at_cpl(AccessKind::Fetch, 0);
        let mut insn = [0u8; 5];
        for (i, byte) in insn.iter_mut().enumerate() {
            let Ok(gpa) = self
                .mmu
                .gva_to_gpa(index, Gva(rip.wrapping_add(i as u64)), fetch)
            else {
                return false;
            };
            let Ok(b) = mem.read_obj::<u8>(gpa) else {
                return false;
            };
            *byte = b;
        }
        insn == want
    }
}
