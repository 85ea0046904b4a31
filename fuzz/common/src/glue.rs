// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! (f) The KVM glue without KVM: trampoline exits decoded from IST stacks,
//! switch words, root-cache slots, NMI counts and chain areas that guest
//! CPL0 code forged through the hole, shadow entries it rewrote in the
//! arena, exceptions delivered through its trap table, hypercalls and
//! emulated stores.

use shadow_mmu::abi::nr;
use shadow_mmu::kvm::layout::*;
use shadow_mmu::kvm::mailbox::{ARM_BASE, ARM_CR2, ARM_SPT, CHAIN, ROOTS, SWITCHED};
use shadow_mmu::kvm::testing::{enter, pf_entry, run_chain, Entry};
use shadow_mmu::kvm::{Exit, ShadowVm, ShadowVmConfig, HYPERCALL_INSN, HYPERCALL_REG_INSN};
use shadow_mmu::pte::{PTE_A, PTE_D, PTE_P, PTE_PS, PTE_U, PTE_W};
use shadow_mmu::{Cr0, Cr4, Efer, GuestAddress, MmuConfig, PagingState, ShadowMmu};
use vm_memory::{Bytes, GuestMemoryAtomic, GuestMemoryMmap};

use crate::Input;

/// Guest RAM: 4 MiB.
const RAM: u64 = 4 << 20;
/// The guest's tables: PML4, PDPT, PD, and a PT for the first 2 MiB.
const PML4: u64 = 0x1000;
/// Hypercall blocks.
const BLOCK: u64 = 0x8000;
/// The trap table.
const TRAP_TABLE: u64 = 0x9000;
/// Code (a 2 MiB user page at 2 MiB): the hypercall instructions and
/// handlers.
const CODE: u64 = 0x20_0000;
/// Where the two hypercall instructions are.
const HYPERCALL_AT: u64 = CODE;
const HYPERCALL_REG_AT: u64 = CODE + 0x10;
/// Handlers in the trap table.
const HANDLER: u64 = CODE + 0x100;
/// Kernel stack top.
const KERNEL_RSP: u64 = 0x7_f000;
/// Most operations per input.
const MAX_OPS: usize = 64;
/// Where the hidden region starts.
const HIDDEN: u64 = 1 << 40;

fn w(mem: &GuestMemoryMmap, gpa: u64, v: u64) {
    let _ = mem.write_obj(v, GuestAddress(gpa));
}

/// The guest's memory: identity-mapped tables, a trap table, the two
/// hypercall instructions.
fn guest_memory() -> GuestMemoryMmap {
    let mem =
        GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), RAM as usize)]).expect("guest RAM");
    let t = PTE_P | PTE_W | PTE_U | PTE_A;
    w(&mem, PML4, 0x2000 | t);
    w(&mem, 0x2000, 0x3000 | t);
    w(&mem, 0x3000, 0x4000 | t);
    w(&mem, 0x3008, CODE | t | PTE_D | PTE_PS);
    for i in 0..512u64 {
        // Every other page accessed, a few dirty.
        let ad = match i % 4 {
            0 => PTE_A | PTE_D,
            1 => PTE_A,
            _ => 0,
        };
        w(&mem, 0x4000 + 8 * i, (i << 12) | PTE_P | PTE_W | PTE_U | ad);
    }
    for v in 0..32u64 {
        w(&mem, TRAP_TABLE + 8 * v, HANDLER + 16 * v);
    }
    let _ = mem.write_slice(&HYPERCALL_INSN, GuestAddress(HYPERCALL_AT));
    let _ = mem.write_slice(&HYPERCALL_REG_INSN, GuestAddress(HYPERCALL_REG_AT));
    mem
}

fn paging(cr3: u64) -> PagingState {
    PagingState {
        cr0: Cr0::PE | Cr0::PG | Cr0::WP,
        cr3,
        cr4: Cr4::PAE,
        efer: Efer::LME | Efer::LMA | Efer::NXE,
        ..Default::default()
    }
}

/// An address a forged word or register might hold.
fn address(inp: &mut Input) -> u64 {
    match inp.below(10) {
        0 => inp.u64(),
        1 => inp.below(RAM),
        2 => CODE + inp.below(0x1000),
        3 => HOLE_BASE + inp.below(SYSTEM_SIZE + 0x10_0000),
        4 => HIDDEN + inp.below(SYSTEM_SIZE + 0x10_0000),
        5 => BLOCK + 8 * inp.below(16),
        6 => KERNEL_RSP - 8 * inp.below(64),
        7 => 0x4000 + 8 * inp.below(512),
        8 => (1 << 47) - 8 * inp.below(4),
        _ => 0x1000 * inp.below(1024),
    }
}

/// A value for a word of the hidden region or of guest memory.
fn value(inp: &mut Input) -> u64 {
    match inp.below(6) {
        0 => inp.u64(),
        1 => address(inp) | PTE_P | PTE_W | PTE_U | PTE_A,
        2 => address(inp),
        3 => inp.below(16),
        4 => u64::MAX - inp.below(4),
        _ => (HIDDEN + SYSTEM_SIZE + 0x1000 * inp.below(64)) | PTE_P | PTE_W | PTE_U | PTE_A,
    }
}

/// An offset of the system area guest CPL0 code might write.
fn system_offset(inp: &mut Input, vcpus: usize) -> u64 {
    let index = inp.below(vcpus as u64 + 1) as usize;
    let block = vcpu_block(index);
    let top = block + VCPU_BLOCK_SIZE;
    match inp.below(12) {
        8 => block + [ARM_BASE, ARM_SPT, ARM_CR2][inp.below(3) as usize],
        9 => arm_block(index) + [ARM_GPTES, ARM_SPTES][inp.below(2) as usize] + 8 * inp.below(512),
        10 => HOLE_PT + 8 * inp.below(512),
        0 => top - 8 * (1 + inp.below(10)),
        1 => block + SWITCHED,
        2 => block + ROOTS + 8 * inp.below(64),
        3 => block + CHAIN + 8 * inp.below(64),
        4 => nmi_block(index),
        5 => idt(index) + 8 * inp.below(IDT_STRIDE / 8),
        6 => tss(index) + 8 * inp.below(16),
        7 => GDT + 8 * inp.below(16),
        _ => 8 * inp.below(SYSTEM_SIZE / 8),
    }
}

/// What the trampoline's entry would leave for an exit, from `inp`.
fn entry(inp: &mut Input) -> Entry {
    let vector = match inp.below(8) {
        0 => inp.u64(),
        1 => u64::from(inp.u8()),
        2 | 3 => 14,
        4 | 5 => 6,
        6 => 8,
        _ => inp.below(32),
    };
    let error_code = if inp.bool() { inp.below(32) } else { inp.u64() };
    let cr2 = address(inp);
    let (rip, rax, rdx) = match inp.below(4) {
        // A hypercall through a block.
        0 => (HYPERCALL_AT, BLOCK + 8 * inp.below(8), inp.u64()),
        // The register form: LOAD_CR3.
        1 => (HYPERCALL_REG_AT, inp.below(3), 0x1000 * inp.below(8)),
        _ => (address(inp), inp.u64(), inp.u64()),
    };
    let (cs, ss) = match inp.below(4) {
        0 => (0x08, 0x10),
        1 => (0x23, 0x1b),
        _ => (inp.u64(), inp.u64()),
    };
    let rflags = if inp.bool() { 0x202 } else { inp.u64() };
    let rsp = address(inp);
    Entry {
        vector,
        error_code,
        cr2,
        rax,
        rdx,
        frame: [rip, cs, rflags, rsp, ss],
    }
}

/// Writes a hypercall block for the exit to read.
fn block(inp: &mut Input, mem: &GuestMemoryMmap) {
    let at = BLOCK + 8 * inp.below(8);
    let number = if inp.below(8) == 0 {
        inp.u64()
    } else {
        1 + inp.below(nr::MEMORY_MAP + 1)
    };
    w(mem, at, number);
    for i in 1..5 {
        let a = value(inp);
        w(mem, at + 8 * i, a);
    }
}

/// Fuzzes the KVM glue's exit path with forged hidden-region state.
///
/// Builds a [`ShadowVm`] without KVM (`ShadowVm::without_kvm`) with one or
/// two vCPUs, then, from `data`: writes guest memory (tables, trap table,
/// hypercall blocks), writes words of the system area and of the arena as
/// guest CPL0 code can through the hole, marks vCPUs running or not, and
/// makes trampoline exits with forged IST stacks, answering hypercalls and
/// emulating stores as a VMM would, and runs the trampoline's dirty fast
/// path between them (`testing::pf_entry`).
///
/// Panics (a bug) if the glue panics, or if the return chain the VMM wrote
/// after an exit it served is not one the trampoline can run to the
/// guest's `iretq` (`testing::run_chain`). An error from the glue ends the
/// input, as it ends the VM.
pub fn glue(data: &[u8]) {
    let mut inp = Input::new(data);
    let vcpus = 1 + inp.below(2) as usize;
    let mem = guest_memory();
    let cfg = ShadowVmConfig {
        hidden_base: HIDDEN,
        first_slot: 1,
        mmu: MmuConfig {
            vcpus,
            max_pages: 8 + inp.below(120) as u32,
            ..MmuConfig::default()
        },
    };
    let vm = ShadowVm::without_kvm(GuestMemoryAtomic::new(mem), cfg).expect("shadow VM");
    let arena_bytes = vm.mmu().arena_region().2;
    for index in 0..vcpus {
        let mut sregs = kvm_bindings::kvm_sregs::default();
        if vm.prepare_vcpu(index, &paging(PML4), &mut sregs).is_err() {
            return;
        }
        vm.set_running(index, true);
    }
    let guest = vm.mmu().memory().clone();
    let mem = || vm_memory::GuestAddressSpace::memory(&guest);
    for _ in 0..MAX_OPS {
        if inp.is_empty() {
            break;
        }
        match inp.below(10) {
            0 => {
                let gpa = address(&mut inp) & (RAM - 8) & !7;
                let v = value(&mut inp);
                w(&mem(), gpa, v);
            }
            1 => block(&mut inp, &mem()),
            2 | 3 => {
                let off = system_offset(&mut inp, vcpus);
                let v = value(&mut inp);
                vm.poke_system(off, v);
            }
            4 => {
                let off = 8 * inp.below(arena_bytes.min(64 << 12) / 8);
                let v = value(&mut inp);
                vm.poke_arena(off, v);
            }
            5 => {
                let index = inp.below(vcpus as u64) as usize;
                let running = inp.bool();
                vm.set_running(index, running);
            }
            6 => {
                // A write by the guest that the trampoline may resolve by
                // itself; whatever it did, the VMM takes it over (or not)
                // at the next exit.
                let index = inp.below(vcpus as u64) as usize;
                let cr2 = if inp.bool() {
                    vm.peek_system(vcpu_block(index) + ARM_BASE) | (inp.below(512) << 12)
                } else {
                    address(&mut inp)
                };
                let error_code = [3, 7, 2, inp.u64()][inp.below(4) as usize];
                let _ = pf_entry(&vm, index, cr2, error_code);
            }
            _ => {
                let index = inp.below(vcpus as u64) as usize;
                let e = entry(&mut inp);
                enter(&vm, index, &e);
                let exit = match vm.handle_exit(index) {
                    Ok(exit) => exit,
                    // The VM ends; so does the input.
                    Err(_) => return,
                };
                let answered = match exit {
                    Exit::Hypercall { block, .. } => {
                        let result = inp.u64() as i64;
                        vm.complete_hypercall(index, block, result).is_ok()
                    }
                    Exit::Emulate { .. } => {
                        let mut regs = kvm_bindings::kvm_regs {
                            rcx: value(&mut inp),
                            rbx: value(&mut inp),
                            rsi: value(&mut inp),
                            rdi: value(&mut inp),
                            ..Default::default()
                        };
                        vm.emulate(index, &mut regs).is_ok()
                    }
                    Exit::Resume | Exit::Mmio { .. } | Exit::Unhandled { .. } => true,
                };
                if !answered {
                    return;
                }
                if let Err(e) = run_chain(&vm, index) {
                    panic!("after {e:?} exit {exit:?}: the chain is broken: {e}");
                }
                // What a VMM asks before running the vCPU again.
                let _ = vm.flush_wait(index);
                let _ = vm.vcpus_owing_flush();
            }
        }
    }
    // Reading back what the VMM holds must not panic either.
    let _ = vm.mmu().audit();
    let _ = vm.nmi_flushes();
    let _ = vm.interrupts();
}
