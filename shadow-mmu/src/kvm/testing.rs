// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The glue without a vCPU, for tests and fuzz targets (feature
//! `test-utils`): a [`ShadowVm`] without memslots, the hidden region as
//! guest CPL0 code sees it through the hole, what the trampoline's entry
//! leaves at an exit, and a model of the trampoline's gadgets that runs the
//! return chain the VMM wrote. Not part of the supported API.

use super::chain::trampoline_va;
use super::layout::*;
use super::mailbox::*;
use super::{Exit, KvmGlueError, ShadowVm, ShadowVmConfig};
use crate::AtomicGuestMemory;
use crate::GuestRam;

/// What the trampoline's entry stub leaves on a vCPU's IST stack at an
/// exit: the hardware frame, the vector and error code it pushed, CR2, and
/// the guest's RAX and RDX.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    /// The vector.
    pub vector: u64,
    /// The error code (0 for vectors without one).
    pub error_code: u64,
    /// CR2.
    pub cr2: u64,
    /// Guest RAX.
    pub rax: u64,
    /// Guest RDX.
    pub rdx: u64,
    /// RIP, CS, RFLAGS, RSP, SS as the CPU pushed them.
    pub frame: [u64; 5],
}

/// What a return chain did, as the trampoline's gadgets would carry it out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ran {
    /// The operations, in order: (gadget, operand).
    pub ops: Vec<(&'static str, u64)>,
    /// RAX the guest resumes with.
    pub rax: u64,
    /// RDX the guest resumes with.
    pub rdx: u64,
    /// The frame `iretq` resumes the guest with.
    pub frame: [u64; 5],
    /// How many times the chain exited again (`again`).
    pub exits_again: usize,
}

impl<M: GuestRam> ShadowVm<M> {
    /// Everything [`ShadowVm::new`] builds but the memslots, without KVM.
    pub fn without_kvm(
        mem: AtomicGuestMemory<M>,
        cfg: ShadowVmConfig,
    ) -> Result<ShadowVm<M>, KvmGlueError> {
        ShadowVm::without_memslots(mem, cfg)
    }

    /// Reads the system-area word at offset `off` (what guest CPL0 code
    /// reads at the hole address of the same offset; 0 outside).
    pub fn peek_system(&self, off: u64) -> u64 {
        self.sys_load(off)
    }

    /// Writes the system-area word at offset `off`, as guest CPL0 code can
    /// through the hole (ignored outside the area or unaligned).
    pub fn poke_system(&self, off: u64, value: u64) {
        if off.is_multiple_of(8) {
            self.sys_store(off, value);
        }
    }

    /// Writes the arena word at byte offset `off` behind the MMU's back, as
    /// guest CPL0 code can through the hole (ignored outside the arena or
    /// unaligned).
    pub fn poke_arena(&self, off: u64, value: u64) {
        let (_, host, size) = self.mmu.arena_region();
        if !off.is_multiple_of(8) || off.checked_add(8).is_none_or(|end| end > size) {
            return;
        }
        // SAFETY: `off` is an aligned word inside the arena mapping (checked
        // above), which the MMU keeps mapped as long as `self` lives; every
        // access to the arena is atomic, so this store races with nothing
        // in Rust's sense (the arena is guest memory the CPU writes too).
        let entry = unsafe {
            &*host
                .add(off as usize)
                .cast::<std::sync::atomic::AtomicU64>()
        };
        entry.store(value, std::sync::atomic::Ordering::Release);
    }

    /// Exchanges the arena word at byte offset `off` for `new` if it holds
    /// `old`, as an instruction in the hole does; `None` outside the arena.
    pub fn cmpxchg_arena(&self, off: u64, old: u64, new: u64) -> Option<bool> {
        let (_, host, size) = self.mmu.arena_region();
        if !off.is_multiple_of(8) || off.checked_add(8).is_none_or(|end| end > size) {
            return None;
        }
        // SAFETY: as in `poke_arena`: an aligned word inside the live
        // arena mapping, only ever accessed atomically.
        let entry = unsafe {
            &*host
                .add(off as usize)
                .cast::<std::sync::atomic::AtomicU64>()
        };
        use std::sync::atomic::Ordering::{AcqRel, Acquire};
        Some(entry.compare_exchange(old, new, AcqRel, Acquire).is_ok())
    }
}

/// What the trampoline's #PF entry did with a fault ([`pf_entry`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PfEntry {
    /// It exited to the VMM, as for any vector.
    Exited,
    /// It set D in the guest entry and W and D in the shadow entry, and
    /// resumed the guest.
    Resolved,
    /// One of its accesses would have faulted in the trampoline (a window
    /// or shadow-page address that maps nothing this model knows: the VMM
    /// then sees a trampoline fault).
    Faulted,
}

/// Runs the trampoline's #PF fast path (`pf_entry` in trampoline.S) on
/// vCPU `index` for a fault at `cr2` with `error_code`, against the hole as
/// it is (the VMM's arming, or what guest CPL0 code forged there) and guest
/// memory, as its instructions would. The guest table is reached through
/// the window the hole's page table maps (guest RAM only, in this model),
/// the shadow entry through the arena.
pub fn pf_entry<M: GuestRam>(vm: &ShadowVm<M>, index: usize, cr2: u64, error_code: u64) -> PfEntry {
    use crate::pte::{PteMemory, PTE64_ADDR_MASK, PTE_P};
    use vm_memory::{GuestAddress, GuestAddressSpace};

    let block = vcpu_block(index);
    if cr2 & !0x1f_ffff != vm.sys_load(block + ARM_BASE) {
        return PfEntry::Exited;
    }
    let i = (cr2 >> 12) & 511;
    let arm = arm_block(index);
    let gpte = vm.sys_load(arm + ARM_GPTES + 8 * i);
    if (gpte & 15) as u32 != error_code as u32 {
        return PfEntry::Exited;
    }
    let window = vm.sys_load(HOLE_PT + 8 * ((arm + ARM_WINDOW) / 4096));
    if window & PTE_P == 0 {
        return PfEntry::Faulted;
    }
    let gpa = GuestAddress((window & PTE64_ADDR_MASK) + 8 * i);
    let mem = vm.mmu.memory().memory();
    match mem.cmpxchg_u64(gpa, gpte, gpte.wrapping_add(0x40)) {
        Some(true) => {}
        Some(false) => return PfEntry::Exited,
        None => return PfEntry::Faulted,
    }
    let old = vm.sys_load(arm + ARM_SPTES + 8 * i);
    let at = vm
        .sys_load(block + ARM_SPT)
        .wrapping_add(8 * i)
        .wrapping_sub(hole_arena_va(0));
    match vm.cmpxchg_arena(at, old, old.wrapping_add(0x42)) {
        Some(true) => PfEntry::Resolved,
        Some(false) => PfEntry::Exited,
        None => PfEntry::Faulted,
    }
}

/// Leaves on vCPU `index`'s IST stack what the entry stub leaves at an
/// exit.
pub fn enter<M: GuestRam>(vm: &ShadowVm<M>, index: usize, e: &Entry) {
    let top = vcpu_block(index) + VCPU_BLOCK_SIZE;
    vm.sys_store(top - stack::CR2, e.cr2);
    vm.sys_store(top - stack::RDX, e.rdx);
    vm.sys_store(top - stack::RAX, e.rax);
    vm.sys_store(top - stack::VECTOR, e.vector);
    vm.sys_store(top - stack::ERROR_CODE, e.error_code);
    for (i, v) in e.frame.into_iter().enumerate() {
        vm.sys_store(top - stack::RIP + 8 * i as u64, v);
    }
}

/// Runs vCPU `index`'s return chain from the entry's `ret` to `iretq`, as
/// the instructions of each gadget in trampoline.S would, calling the VMM
/// at every `again` as the `out` there would. An error names what a
/// trampoline would have done wrong: return to something that is not a
/// gadget, or reach `iretq` without the hardware frame on top.
pub fn run_chain<M: GuestRam>(vm: &ShadowVm<M>, index: usize) -> Result<Ran, String> {
    let block = vcpu_block(index);
    let top = block + VCPU_BLOCK_SIZE;
    let mut rsp = top - 80;
    let mut ran = Ran::default();
    let pop = |rsp: &mut u64| {
        let v = vm.sys_load(*rsp);
        *rsp = rsp.wrapping_add(8);
        v
    };
    let off = |va: u64| va.wrapping_sub(HOLE_BASE);
    let mut done = false;
    for _ in 0..100_000 {
        let gadget = pop(&mut rsp).wrapping_sub(trampoline_va(0));
        let name = match gadget {
            gadget::RESUME => {
                ran.rdx = pop(&mut rsp);
                ran.rax = pop(&mut rsp);
                rsp = rsp.wrapping_add(16);
                done = true;
                break;
            }
            gadget::RESUME_MOVED => {
                ran.rax = pop(&mut rsp);
                ran.rdx = pop(&mut rsp);
                done = true;
                break;
            }
            gadget::BACK => {
                rsp = off(pop(&mut rsp));
                ran.rax = pop(&mut rsp);
                ran.rdx = pop(&mut rsp);
                done = true;
                break;
            }
            gadget::FAR => {
                rsp = off(pop(&mut rsp));
                continue;
            }
            gadget::AGAIN => {
                ran.exits_again += 1;
                match vm.handle_exit(index) {
                    Ok(Exit::Resume) => {}
                    other => return Err(format!("`again` exit answered with {other:?}")),
                }
                rsp = block + CHAIN;
                continue;
            }
            gadget::CR3 => "cr3",
            gadget::CR4 => "cr4",
            gadget::CR2 => "cr2",
            gadget::INVLPG => "invlpg",
            gadget::WRITE => "write",
            gadget::TOUCH => "touch",
            other => return Err(format!("return to trampoline offset {other:#x}")),
        };
        let operand = pop(&mut rsp);
        ran.ops.push((name, operand));
    }
    if !done {
        return Err("the chain does not end".into());
    }
    if rsp != top - stack::RIP {
        return Err(format!(
            "iretq at stack offset {rsp:#x}, not at the hardware frame {:#x}",
            top - stack::RIP
        ));
    }
    for (i, slot) in ran.frame.iter_mut().enumerate() {
        *slot = vm.sys_load(top - stack::RIP + 8 * i as u64);
    }
    Ok(ran)
}
