// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Who walks the guest's page tables: KVM (`native`) or the shadow MMU
//! (`shadow`). The VMM calls these hooks at the few points where the two
//! differ; everything else (boot state, hypercalls 6-8, the doorbell) is
//! common.
//!
//! **Shadow paging is not wired yet**: [`ShadowPaging`] is where
//! `shadow_mmu::kvm` plugs in. Each of its hooks fails with
//! [`VmError::ShadowNotWired`] until then.

use std::fmt;
use std::str::FromStr;

use kvm_bindings::kvm_sregs;
use kvm_ioctls::{VcpuFd, VmFd};
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

use super::boot::BOOT_PML4;
use super::VmError;

/// `-3`: not available in this paging mode.
pub const HC_NOT_AVAILABLE: i64 = -3;

/// The paging mode named on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PagingMode {
    /// KVM does the paging; the guest uses `mov cr3` and `invlpg`.
    Native,
    /// The shadow MMU does the paging; the guest uses hypercalls.
    Shadow,
}

impl PagingMode {
    /// The value of the boot info's paging field.
    pub fn abi_value(self) -> u32 {
        match self {
            PagingMode::Native => 0,
            PagingMode::Shadow => 1,
        }
    }
}

impl fmt::Display for PagingMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PagingMode::Native => "native",
            PagingMode::Shadow => "shadow",
        })
    }
}

impl FromStr for PagingMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "native" => Ok(PagingMode::Native),
            "shadow" => Ok(PagingMode::Shadow),
            _ => Err(format!("unknown paging mode {s:?} (native or shadow)")),
        }
    }
}

/// What a paging hook sees of the VM.
pub struct VmContext<'a> {
    /// The VM.
    pub vm: &'a VmFd,
    /// Guest memory (RAM at GPA 0).
    pub memory: &'a GuestMemoryAtomic<GuestMemoryMmap>,
    /// Guest RAM size in bytes.
    pub ram_size: u64,
    /// Number of vCPUs.
    pub vcpus: u32,
}

/// What a paging hook sees of one vCPU.
pub struct VcpuContext<'a> {
    /// The VM.
    pub vm: &'a VmContext<'a>,
    /// The vCPU.
    pub vcpu: &'a mut VcpuFd,
    /// Its index (0 = boot vCPU).
    pub index: u32,
}

/// The paging backend of a VM.
pub enum Paging {
    /// KVM walks the guest's tables.
    Native,
    /// The shadow MMU builds the tables the CPU walks.
    Shadow(ShadowPaging),
}

impl Paging {
    /// A backend for `mode`.
    pub fn new(mode: PagingMode) -> Paging {
        match mode {
            PagingMode::Native => Paging::Native,
            PagingMode::Shadow => Paging::Shadow(ShadowPaging::new()),
        }
    }

    /// The mode.
    pub fn mode(&self) -> PagingMode {
        match self {
            Paging::Native => PagingMode::Native,
            Paging::Shadow(_) => PagingMode::Shadow,
        }
    }

    /// Called once after guest RAM is registered and the boot state is
    /// written, before any vCPU is created (shadow: the hidden memslot).
    pub fn setup_vm(&self, ctx: &VmContext<'_>) -> Result<(), VmError> {
        match self {
            Paging::Native => Ok(()),
            Paging::Shadow(s) => s.setup_vm(ctx),
        }
    }

    /// Hook (a): the vCPU's special registers at boot. `sregs` already holds
    /// the ABI boot state with CR3 = the boot PML4; a backend changes what it
    /// needs (shadow: CR3 = the shadow root of the boot tables, its own GDT,
    /// IDT and TSS).
    pub fn vcpu_sregs(
        &self,
        ctx: &mut VcpuContext<'_>,
        sregs: &mut kvm_sregs,
    ) -> Result<(), VmError> {
        match self {
            Paging::Native => {
                sregs.cr3 = BOOT_PML4;
                Ok(())
            }
            Paging::Shadow(s) => s.vcpu_sregs(ctx, sregs),
        }
    }

    /// Hook (b): an `out` to port 0x5a1, the shadow trampoline's exit.
    pub fn trampoline_exit(&self, ctx: &mut VcpuContext<'_>, data: u32) -> Result<(), VmError> {
        match self {
            Paging::Native => Err(VmError::Guest {
                vcpu: ctx.index,
                what: format!("out to port 0x5a1 (value {data:#x}) under native paging"),
                rip: rip_of(ctx.vcpu),
            }),
            Paging::Shadow(s) => s.trampoline_exit(ctx, data),
        }
    }

    /// Hook (c): hypercalls 1-5 and 9 (`LOAD_CR3`, `INVLPG`, `FLUSH_TLB`,
    /// `SET_TRAP_TABLE`, `SET_PAGING_BITS`, `MMU_UPDATE`). Returns the
    /// result to write into the block.
    pub fn hypercall(
        &self,
        ctx: &mut VcpuContext<'_>,
        nr: u64,
        args: [u64; 4],
    ) -> Result<i64, VmError> {
        match self {
            Paging::Native => Ok(HC_NOT_AVAILABLE),
            Paging::Shadow(s) => s.hypercall(ctx, nr, args),
        }
    }
}

/// The RIP of a vCPU, for error messages (0 if it cannot be read).
pub fn rip_of(vcpu: &VcpuFd) -> u64 {
    vcpu.get_regs().map(|r| r.rip).unwrap_or(0)
}

/// Shadow paging through `shadow_mmu::kvm`.
///
/// NOT WIRED YET: this is the hook point for the `shadow_mmu::kvm` glue. Every
/// method fails with [`VmError::ShadowNotWired`]; nothing here pretends to
/// work.
pub struct ShadowPaging {
    _private: (),
}

impl ShadowPaging {
    /// The unwired backend.
    pub fn new() -> ShadowPaging {
        ShadowPaging { _private: () }
    }

    // TODO(shadow): register the hidden memslot (shadow-page arena,
    // trampoline, GDT/IDT/TSS, mailboxes) above guest RAM.
    fn setup_vm(&self, _ctx: &VmContext<'_>) -> Result<(), VmError> {
        Err(VmError::ShadowNotWired)
    }

    // TODO(shadow): CR3 = shadow root of the boot tables at BOOT_PML4, the
    // VMM's GDT/IDT/TSS in the hole.
    fn vcpu_sregs(
        &self,
        _ctx: &mut VcpuContext<'_>,
        _sregs: &mut kvm_sregs,
    ) -> Result<(), VmError> {
        Err(VmError::ShadowNotWired)
    }

    // TODO(shadow): read the mailbox, run the fault path, deliver guest
    // exceptions through the trap table.
    fn trampoline_exit(&self, _ctx: &mut VcpuContext<'_>, _data: u32) -> Result<(), VmError> {
        Err(VmError::ShadowNotWired)
    }

    // TODO(shadow): LOAD_CR3, INVLPG, FLUSH_TLB, SET_TRAP_TABLE,
    // SET_PAGING_BITS, MMU_UPDATE.
    fn hypercall(
        &self,
        _ctx: &mut VcpuContext<'_>,
        _nr: u64,
        _args: [u64; 4],
    ) -> Result<i64, VmError> {
        Err(VmError::ShadowNotWired)
    }
}

impl Default for ShadowPaging {
    fn default() -> Self {
        ShadowPaging::new()
    }
}
