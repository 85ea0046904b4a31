// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The return chain: how what the MMU decided at an exit reaches the CPU.
//! The VMM rewrites the hardware frame on the IST stack and writes a chain
//! of gadget addresses and operands that the trampoline's `ret` runs before
//! `iretq` (see `trampoline.S` and [`super::mailbox`]).

use std::collections::VecDeque;

use super::frame::IretFrame;
use super::layout::*;
use super::mailbox::*;
use super::vcpu::VcpuGlue;
use super::ShadowVm;
use crate::Changes;
use crate::GuestRam;

/// More single-page invalidations than this in one exit and a full flush
/// is cheaper for the emulated trampoline.
pub(super) const MAX_INVLPG: usize = 64;

/// The guest-virtual address of trampoline offset `off`.
pub(super) const fn trampoline_va(off: u64) -> u64 {
    hole_va(TRAMPOLINE + off)
}

/// What the trampoline must carry out before resuming.
#[derive(Debug, Default)]
pub(super) struct Commands {
    pub(super) touches: Vec<u64>,
    /// Hole addresses of entries the guest must rewrite (their values
    /// are already in memory).
    pub(super) writes: Vec<u64>,
    pub(super) invlpg: Vec<u64>,
    pub(super) cr3: Option<u64>,
    pub(super) cr4: Option<u64>,
    pub(super) cr2: Option<u64>,
    pub(super) frame: Option<IretFrame>,
    /// Exit once the stores and the CR3 load are done, before CR2 and the
    /// return: the other vCPUs' flush starts there (several vCPUs only).
    pub(super) publish: bool,
}

impl<M: GuestRam> ShadowVm<M> {
    pub(super) fn add_changes(
        &self,
        g: &VcpuGlue,
        index: usize,
        cmds: &mut Commands,
        changes: Changes,
    ) {
        let arena = self.hidden_base + SYSTEM_SIZE;
        cmds.touches.extend(
            changes
                .reused_pages
                .iter()
                .map(|&spa| hole_arena_va(spa - arena)),
        );
        cmds.writes.extend(
            changes
                .spte_writes
                .iter()
                .map(|w| hole_arena_va(w.addr - arena)),
        );
        cmds.invlpg.extend(changes.invlpg.iter().map(|g| g.0));
        if changes.flush_local || changes.flush_all {
            cmds.cr3.get_or_insert(g.root);
        }
        if changes.flush_all {
            if !self.others_running(index) {
                // This vCPU reloads CR3 before it runs guest code again,
                // and no other vCPU can reach the old entries meanwhile.
                self.drop_hold(index);
                self.start_flush(index);
            } else {
                // Other vCPUs must flush once the trampoline has carried
                // the stores out, not before (`ShadowVm::published`).
                cmds.publish = true;
            }
        }
    }

    /// Turns `cmds` into the trampoline's return chain for vCPU `index`:
    /// the replacement frame goes straight into the hardware frame on the
    /// IST stack; one operation fits in the slots below it; more go to the
    /// chain area, split into chains of one exit each when they do not fit.
    pub(super) fn post(&self, g: &mut VcpuGlue, index: usize, mut cmds: Commands) {
        let block = vcpu_block(index);
        let top = block + VCPU_BLOCK_SIZE;
        self.publish_roots(index);
        if cmds.invlpg.len() > MAX_INVLPG {
            cmds.invlpg.clear();
            cmds.cr3.get_or_insert(g.root);
        }
        if let Some(frame) = cmds.frame {
            for (i, v) in frame.words().into_iter().enumerate() {
                self.sys_store(top - stack::RIP + 8 * i as u64, v);
            }
        }
        let with = |gadget: u64| move |&operand: &u64| [trampoline_va(gadget), operand];
        let stores: Vec<[u64; 2]> = cmds
            .touches
            .iter()
            .map(with(gadget::TOUCH))
            .chain(cmds.writes.iter().map(with(gadget::WRITE)))
            .chain(cmds.invlpg.iter().map(with(gadget::INVLPG)))
            // CR4 before CR3: a root for new paging bits needs them set.
            .chain(cmds.cr4.iter().map(with(gadget::CR4)))
            .chain(cmds.cr3.iter().map(with(gadget::CR3)))
            .collect();
        let cr2: Vec<[u64; 2]> = cmds.cr2.iter().map(with(gadget::CR2)).collect();
        g.pending.clear();
        if !cmds.publish {
            self.drop_hold(index);
        }
        let ops: Vec<[u64; 2]> = if cmds.publish {
            stores
        } else {
            [stores.as_slice(), cr2.as_slice()].concat()
        };
        // (A chain that publishes has at least its CR3 load.)
        if ops.is_empty() {
            self.sys_store(top - stack::CR2, trampoline_va(gadget::RESUME));
            return;
        }
        // The chain needs the slots of RAX and RDX: move them up to those
        // of the vector and the error code, which nothing reads any more.
        let (rax, rdx) = (
            self.sys_load(top - stack::RAX),
            self.sys_load(top - stack::RDX),
        );
        self.sys_store(top - stack::VECTOR, rax);
        self.sys_store(top - stack::ERROR_CODE, rdx);
        if let ([[op, operand]], false) = (&ops[..], cmds.publish) {
            self.sys_store(top - stack::CR2, *op);
            self.sys_store(top - stack::RDX, *operand);
            self.sys_store(top - stack::RAX, trampoline_va(gadget::RESUME_MOVED));
            return;
        }
        self.sys_store(top - stack::CR2, trampoline_va(gadget::FAR));
        self.sys_store(top - stack::RDX, hole_va(block + CHAIN));
        // Each chain ends with `again` (one slot) or `back` (two).
        let per_chain = (CHAIN_SLOTS - 2) / 2;
        let mut chains: VecDeque<(Vec<u64>, bool)> = VecDeque::new();
        let mut add = |ops: &[[u64; 2]], first: bool| {
            for (k, c) in ops.chunks(per_chain).enumerate() {
                let mut chain: Vec<u64> = c.iter().flatten().copied().collect();
                chain.push(trampoline_va(gadget::AGAIN));
                chains.push_back((chain, first && k == 0));
            }
        };
        add(&ops, false);
        if cmds.publish {
            // What follows the stores' exit: CR2 and the return.
            if cr2.is_empty() {
                chains.push_back((Vec::new(), true));
            } else {
                add(&cr2, true);
            }
        }
        if let Some((last, _)) = chains.back_mut() {
            if last.last() == Some(&trampoline_va(gadget::AGAIN)) {
                last.pop();
            }
            last.push(trampoline_va(gadget::BACK));
            last.push(hole_va(top - stack::VECTOR));
        }
        if let Some((first, _)) = chains.pop_front() {
            self.write_chain(block, &first);
        }
        g.pending = chains;
    }

    /// Writes `chain` at the start of the chain area of the vCPU block at
    /// system-area offset `block`.
    pub(super) fn write_chain(&self, block: u64, chain: &[u64]) {
        for (i, &slot) in chain.iter().enumerate() {
            self.sys_store(block + CHAIN + 8 * i as u64, slot);
        }
    }
}
