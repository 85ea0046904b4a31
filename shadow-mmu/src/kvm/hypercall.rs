// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Hypercalls: the ones the MMU serves itself (CR3 loads, invalidations,
//! trap table, paging bits, page-table updates, the memory map), the root
//! cache the trampoline may switch with, and the completion of those the
//! VMM serves.

use vm_memory::{Bytes, GuestAddress, GuestAddressSpace};

use super::chain::Commands;
use super::deliver::is_guest_code_address;
use super::exit::Exit;
use super::layout::*;
use super::mailbox::*;
use super::system;
use super::vcpu::{real_cr4, VcpuGlue};
use super::{KvmGlueError, ShadowVm, DIRECT_VECTOR, FIRST_INTERRUPT};
use crate::abi;
use crate::arch::vector;
use crate::hypercall::{load_cr3, serve, HypercallVcpu, Served};
use crate::GuestRam;
use crate::{Access, AccessKind, Changes, Gva, MmuError, PagingState, ShadowMmu};

/// A vCPU of the glue in the middle of an exit, as the hypercall service
/// sees it.
struct GlueVcpu<'a, M: GuestRam> {
    vm: &'a ShadowVm<M>,
    g: &'a mut VcpuGlue,
    index: usize,
    cmds: &'a mut Commands,
}

impl<M: GuestRam> HypercallVcpu for GlueVcpu<'_, M> {
    type Error = KvmGlueError;

    fn mmu(&self) -> &dyn ShadowMmu {
        &self.vm.mmu
    }

    fn index(&self) -> usize {
        self.index
    }

    fn paging_state(&self) -> Option<PagingState> {
        self.g.guest
    }

    fn load_paging_state(&mut self, state: PagingState) -> Result<(), KvmGlueError> {
        // A root built for new paging bits needs them in the real CR4
        // first (the chain loads CR4 before CR3).
        let cr4 = real_cr4(&state);
        if self.g.guest.map(|old| real_cr4(&old)) != Some(cr4) {
            self.cmds.cr4 = Some(cr4);
        }
        self.vm.reload(self.g, self.index, state, self.cmds)
    }

    fn set_trap_table(&mut self, table: u64, kernel_rsp: u64, entries: u16) {
        self.vm
            .set_trap_table(self.g, self.index, table, kernel_rsp, entries);
    }

    fn apply(&mut self, changes: Changes) {
        self.vm.add_changes(self.g, self.index, self.cmds, changes);
    }
}

impl<M: GuestRam> ShadowVm<M> {
    /// Serves the hypercall whose block is at guest-physical `block` for
    /// vCPU `index` (the MMU's own ones here, the others as an
    /// [`Exit::Hypercall`] for the VMM).
    pub(super) fn hypercall(
        &self,
        g: &mut VcpuGlue,
        index: usize,
        block: u64,
        cmds: &mut Commands,
    ) -> Result<Exit, KvmGlueError> {
        let mem = self.mmu.memory().memory();
        let Ok(block) = abi::Block::read(&*mem, block) else {
            // No block to answer in: the guest gets #GP, as for a bad
            // descriptor, raised by the hypercall instruction itself.
            let frame = self.saved_frame(index);
            return self.deliver(g, index, vector::GP, Some(0), None, frame, cmds);
        };
        let mut vcpu = GlueVcpu {
            vm: self,
            g,
            index,
            cmds,
        };
        Ok(match serve(&*mem, &mut vcpu, &block)? {
            Served::Done(_) => Exit::Resume,
            Served::Vmm { nr, args } => Exit::Hypercall {
                block: block.gpa,
                nr,
                args,
            },
        })
    }

    /// Answers a hypercall the VMM served ([`Exit::Hypercall`]): writes
    /// `result` into the block and lets the vCPU go on.
    pub fn complete_hypercall(
        &self,
        index: usize,
        block: GuestAddress,
        result: i64,
    ) -> Result<(), KvmGlueError> {
        {
            let mem = self.mmu.memory().memory();
            // A block that vanished has nobody left to read the result.
            let _ = mem.write_obj(
                result,
                GuestAddress(block.0.wrapping_add(abi::RESULT_OFFSET)),
            );
        }
        self.finish_hypercall(index, block)
    }

    /// For VMMs that wrote a hypercall's result themselves: tells the MMU
    /// about the write (the block may lie in a page the guest also uses as a
    /// page table) and lets the vCPU go on.
    pub fn finish_hypercall(&self, index: usize, block: GuestAddress) -> Result<(), KvmGlueError> {
        let glue = self.glue(index)?;
        let mut g = glue.lock();
        let mut cmds = g.deferred.take().unwrap_or_default();
        let changes = self
            .mmu
            .track_write(GuestAddress(block.0.wrapping_add(abi::RESULT_OFFSET)), 8);
        self.add_changes(&g, index, &mut cmds, changes);
        self.post(&mut g, index, cmds);
        Ok(())
    }

    /// Reads the guest's first `entries` handlers from its trap table at
    /// `table` (0: none; the other vectors have none) and points vCPU `index`'s #BP gate (DPL 3: `int3`, the usual
    /// system-call gate of guests on these hosts) straight at the guest's
    /// handler: the CPU then delivers it with no exit, on `kernel_rsp` from
    /// user mode. A handler that cannot be read, or that is not a canonical
    /// address outside the hole, counts as none (the VMM's code and data
    /// are no guest handler). External interrupts (32-255) always enter
    /// the trampoline, which exits, and the VMM delivers them
    /// (`ShadowVm::handle_exit`).
    ///
    /// Only #BP: the host these were built on turns a fault during such a
    /// delivery (the kernel stack not shadowed yet) into a #DF that names
    /// neither the original vector nor the fault, and only for #BP, a trap
    /// raised by a recognisable instruction, can the VMM tell what the
    /// delivery was and redo it itself (`failed_direct_delivery`).
    pub(super) fn set_trap_table(
        &self,
        g: &mut VcpuGlue,
        index: usize,
        table: u64,
        kernel_rsp: u64,
        entries: u16,
    ) {
        let mem = self.mmu.memory().memory();
        let read = Access::implicit(AccessKind::Read);
        for (vector, handler) in (0u8..=255).zip(g.handlers.0.iter_mut()) {
            *handler = if table == 0 || u16::from(vector) >= entries {
                0
            } else {
                self.mmu
                    .gva_to_gpa(index, Gva(table.wrapping_add(8 * u64::from(vector))), read)
                    .ok()
                    .and_then(|gpa| mem.read_obj::<u64>(gpa).ok())
                    .filter(|&h| is_guest_code_address(h))
                    .unwrap_or(0)
            };
            if vector >= FIRST_INTERRUPT {
                continue;
            }
            let direct = vector == DIRECT_VECTOR
                && is_guest_code_address(*handler)
                && is_guest_code_address(kernel_rsp);
            let gate = if direct {
                Some(system::guest_gate(vector, *handler))
            } else {
                system::trampoline_gate(vector)
            };
            if let Some((lo, hi)) = gate {
                let at = idt(index) + 16 * u64::from(vector);
                self.sys_store(at, lo);
                self.sys_store(at + 8, hi);
            }
        }
        g.kernel_rsp = kernel_rsp;
        // Only the direct gate uses TSS.RSP0 (the trampoline's have IST).
        system::set_rsp0(&self.system, index, kernel_rsp);
    }

    /// `LOAD_CR3` of `cr3` on vCPU `index`: the result for the guest.
    pub(super) fn load_cr3(
        &self,
        g: &mut VcpuGlue,
        index: usize,
        cr3: u64,
        cmds: &mut Commands,
    ) -> Result<i64, KvmGlueError> {
        let mem = self.mmu.memory().memory();
        let mut vcpu = GlueVcpu {
            vm: self,
            g,
            index,
            cmds,
        };
        load_cr3(&*mem, &mut vcpu, cr3)
    }

    pub(super) fn reload(
        &self,
        g: &mut VcpuGlue,
        index: usize,
        guest: PagingState,
        cmds: &mut Commands,
    ) -> Result<(), KvmGlueError> {
        let (root, changes) = self.load_root(index, &guest)?;
        g.guest = Some(guest);
        g.root = root;
        self.add_changes(g, index, cmds, changes);
        cmds.cr3 = Some(root);
        Ok(())
    }

    /// The root for `guest` on vCPU `index`. When every page is in use or
    /// waiting for a flush, the waiting ones no other running vCPU can
    /// reach are released ([`ShadowVm::reusable_mark`]) and the load is
    /// tried once more; if the roots of the vCPUs alone fill the cap, that
    /// is [`MmuError::OutOfPages`] (a cap too small for this many vCPUs),
    /// never a retry loop.
    pub(super) fn load_root(
        &self,
        index: usize,
        guest: &PagingState,
    ) -> Result<(u64, Changes), KvmGlueError> {
        match self.mmu.load_paging_state(index, guest) {
            Err(MmuError::OutOfPages) => {
                self.mmu.flush_completed_upto(self.reusable_mark(index));
                Ok(self.mmu.load_paging_state(index, guest)?)
            }
            other => Ok(other?),
        }
    }

    /// Fills vCPU `index`'s root cache with the roots it may switch to by
    /// itself until its next exit (none with more than one vCPU: another
    /// vCPU's exit could release a root this one is about to load).
    pub(super) fn publish_roots(&self, index: usize) {
        let mut table = [[0u64; 2]; ROOT_SLOTS as usize];
        if self.vcpus.len() == 1 {
            for (cr3, root) in self.mmu.switchable_roots(index) {
                if cr3 & (1 << 63) == 0 {
                    table[((cr3 >> 12) % ROOT_SLOTS) as usize] = [cr3 | 1 << 63, root];
                }
            }
        }
        let fast = u64::from(self.vcpus.len() == 1);
        self.sys_store(vcpu_block(index) + FAST_PATH, fast);
        let base = vcpu_block(index) + ROOTS;
        for (i, [key, root]) in table.into_iter().enumerate() {
            self.sys_store(base + 16 * i as u64, key);
            self.sys_store(base + 16 * i as u64 + 8, root);
        }
    }
}
