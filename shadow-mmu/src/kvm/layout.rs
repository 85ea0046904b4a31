// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Where everything of the hidden region lives: in guest-physical space
//! (KVM memslots above guest RAM) and in the hypervisor hole of every shadow
//! root.
//!
//! The hidden region is a 2 MiB *system area* followed by the shadow-page
//! arena. The hole (PML4 slot 510) maps the system area 1:1 in its first
//! 2 MiB with 4 KiB pages, then the arena with 2 MiB pages, all
//! supervisor-only.

/// PML4 slot of the hole.
pub const HOLE_ROOT_INDEX: u16 = 510;
/// First guest-virtual address of the hole.
pub const HOLE_BASE: u64 = 0xffff_ff00_0000_0000;
/// Size of the system area.
pub const SYSTEM_SIZE: u64 = 2 << 20;
/// Most arena bytes the hole can map (511 PD slots of 2 MiB).
pub const MAX_ARENA_SIZE: u64 = 511 * (2 << 20);

/// System-area offsets (also hole offsets).
pub const HOLE_PDPT: u64 = 0x0000;
/// The hole's page directory.
pub const HOLE_PD: u64 = 0x1000;
/// The page table mapping the system area.
pub const HOLE_PT: u64 = 0x2000;
/// The GDT.
pub const GDT: u64 = 0x3000;
/// The TSSs, one per vCPU, `TSS_STRIDE` apart.
pub const TSS: u64 = 0x5000;
/// Distance between TSSs.
pub const TSS_STRIDE: u64 = 128;
/// The trampoline code (two pages).
pub const TRAMPOLINE: u64 = 0x6000;
/// End of the trampoline's pages.
pub const TRAMPOLINE_END: u64 = 0x8000;
/// The per-vCPU blocks: the chain area, then the IST stack up to the block's
/// end.
pub const VCPU_BLOCKS: u64 = 0x10000;
/// Size (and alignment) of a vCPU block.
pub const VCPU_BLOCK_SIZE: u64 = 0x4000;
/// Most vCPUs the system area holds.
pub const MAX_VCPUS: usize = 32;

/// The per-vCPU NMI stacks (IST 2), one 16 KiB block each after the vCPU
/// blocks; the first word of a block counts the flushes its NMIs made.
pub const NMI_BLOCKS: u64 = VCPU_BLOCKS + MAX_VCPUS as u64 * VCPU_BLOCK_SIZE;
/// The per-vCPU IDTs (256 gates each, a page), after the NMI blocks: each
/// vCPU's guest registers its own trap table, whose handlers become gates.
pub const IDTS: u64 = NMI_BLOCKS + MAX_VCPUS as u64 * VCPU_BLOCK_SIZE;
/// Size of one IDT: vectors 0-255.
pub const IDT_STRIDE: u64 = 256 * 16;
/// The per-vCPU arm blocks, after the IDTs, `VCPU_BLOCK_SIZE` apart (so
/// that the trampoline finds a vCPU's arm block at a fixed distance from
/// its IST stack): the page through which the hole maps the armed guest
/// table ([`ARM_WINDOW`]), then the entries the dirty fast path expects
/// there ([`ARM_GPTES`]) and in the shadow page ([`ARM_SPTES`]).
pub const ARMS: u64 = IDTS + MAX_VCPUS as u64 * IDT_STRIDE;
/// Offset of the guest table's mapping in an arm block.
pub const ARM_WINDOW: u64 = 0;
/// Offset of the expected guest entries (0: not armed) in an arm block.
pub const ARM_GPTES: u64 = 0x1000;
/// Offset of the expected shadow entries in an arm block.
pub const ARM_SPTES: u64 = 0x2000;
/// End of the used part of the system area.
pub const SYSTEM_END: u64 = ARMS + MAX_VCPUS as u64 * VCPU_BLOCK_SIZE;

// Everything fits in the system area; the trampoline's two pages end
// before the vCPU blocks; arm blocks are aligned as vCPU blocks are.
const _: () = assert!(
    SYSTEM_END <= SYSTEM_SIZE
        && ARMS.is_multiple_of(VCPU_BLOCK_SIZE)
        && TRAMPOLINE_END <= VCPU_BLOCKS
        && crate::kvm::TRAMPOLINE_CODE.len() as u64 <= TRAMPOLINE_END - TRAMPOLINE
);

/// Selectors of the GDT (the ABI's).
pub const KERNEL_CS: u16 = 0x08;
/// Kernel data.
pub const KERNEL_DS: u16 = 0x10;
/// User data (RPL 3).
pub const USER_DS: u16 = 0x1b;
/// User code (RPL 3).
pub const USER_CS: u16 = 0x23;
/// The TSS of vCPU 0; vCPU `i` uses `TSS_SELECTOR + 16 * i`.
pub const TSS_SELECTOR: u16 = 0x28;

/// Offset of vCPU `index`'s IDT in the system area.
pub const fn idt(index: usize) -> u64 {
    IDTS + index as u64 * IDT_STRIDE
}

/// Offset of vCPU `index`'s TSS in the system area.
pub const fn tss(index: usize) -> u64 {
    TSS + index as u64 * TSS_STRIDE
}

/// Offset of vCPU `index`'s block in the system area.
pub const fn vcpu_block(index: usize) -> u64 {
    VCPU_BLOCKS + index as u64 * VCPU_BLOCK_SIZE
}

/// Offset of vCPU `index`'s arm block in the system area.
pub const fn arm_block(index: usize) -> u64 {
    ARMS + index as u64 * VCPU_BLOCK_SIZE
}

/// Offset of vCPU `index`'s NMI block in the system area.
pub const fn nmi_block(index: usize) -> u64 {
    NMI_BLOCKS + index as u64 * VCPU_BLOCK_SIZE
}

/// The guest-virtual address of system-area offset `off`.
pub const fn hole_va(off: u64) -> u64 {
    HOLE_BASE + off
}

/// The guest-virtual address of arena byte `off`.
pub const fn hole_arena_va(off: u64) -> u64 {
    HOLE_BASE + SYSTEM_SIZE + off
}
