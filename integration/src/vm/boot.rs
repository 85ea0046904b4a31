// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The boot state of `resources/ABI.md`: boot page tables, boot info page,
//! a GDT and TSS with the ABI's selectors, and the vCPU registers.

use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs};
use vm_memory::{Bytes, GuestAddress, GuestMemory};

// The ABI's fixed addresses, from the crate that implements the ABI: the
// boot PML4 (native CR3), PDPT and PD (512 2 MiB pages identity-mapping
// the first 1 GiB), the boot info page and its magic.
pub use shadow_mmu::abi::note::{
    BOOT_INFO, BOOT_INFO_MAGIC as BOOT_MAGIC, BOOT_PD, BOOT_PDPT, BOOT_PML4,
};

/// The boot GDT (not fixed by the ABI; this VMM's choice).
pub const BOOT_GDT: u64 = 0x5000;
/// The boot TSS (not fixed by the ABI; this VMM's choice).
pub const BOOT_TSS: u64 = 0x6000;
/// The doorbell page.
pub const DOORBELL: u64 = 0xf000_0000;

/// Selectors of the ABI.
pub const SEL_KERNEL_CODE: u16 = 0x08;
/// Kernel data selector.
pub const SEL_KERNEL_DATA: u16 = 0x10;
/// TSS selector.
pub const SEL_TSS: u16 = 0x28;

const CR0_PE: u64 = 1;
const CR0_MP: u64 = 1 << 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_SCE: u64 = 1;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const EFER_NXE: u64 = 1 << 11;

/// The boot info page contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootInfo {
    /// 0 native, 1 shadow.
    pub paging: u32,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// Guest RAM size in bytes.
    pub ram_size: u64,
    /// Workload id.
    pub workload: u64,
    /// Workload parameters.
    pub params: [u64; 8],
    /// The kernel command line (at most [`CMDLINE_MAX`] bytes), written in
    /// the boot info page after the fields.
    pub cmdline: String,
}

/// Where in the boot info page the command line goes.
pub const CMDLINE_OFFSET: u64 = 256;
/// The longest command line the boot info page holds.
pub const CMDLINE_MAX: usize = 4096 - CMDLINE_OFFSET as usize;

impl BootInfo {
    /// The page's bytes (little-endian, ABI layout).
    pub fn to_bytes(&self) -> [u8; 120] {
        let mut b = [0u8; 120];
        b[0..8].copy_from_slice(&BOOT_MAGIC.to_le_bytes());
        b[8..12].copy_from_slice(&self.paging.to_le_bytes());
        b[12..16].copy_from_slice(&self.vcpus.to_le_bytes());
        b[16..24].copy_from_slice(&self.ram_size.to_le_bytes());
        b[24..32].copy_from_slice(&self.workload.to_le_bytes());
        for (i, p) in self.params.iter().enumerate() {
            b[32 + 8 * i..40 + 8 * i].copy_from_slice(&p.to_le_bytes());
        }
        b[96..104].copy_from_slice(&DOORBELL.to_le_bytes());
        let (at, len) = if self.cmdline.is_empty() {
            (0, 0)
        } else {
            (BOOT_INFO + CMDLINE_OFFSET, self.cmdline.len() as u64)
        };
        b[104..112].copy_from_slice(&at.to_le_bytes());
        b[112..120].copy_from_slice(&len.to_le_bytes());
        b
    }
}

/// The boot GDT: null, 0x08 kernel code (64-bit), 0x10 kernel data, 0x18
/// user data (0x1b), 0x20 user code (0x23), 0x28 the TSS (16 bytes).
fn gdt() -> [u64; 7] {
    let tss_limit = 0x67u64;
    let t = BOOT_TSS;
    [
        0,
        0x00af_9a00_0000_ffff,
        0x00cf_9200_0000_ffff,
        0x00cf_f200_0000_ffff,
        0x00af_fa00_0000_ffff,
        tss_limit | ((t & 0xff_ffff) << 16) | (0x8b << 40) | (((t >> 24) & 0xff) << 56),
        t >> 32,
    ]
}

/// Writes the boot page tables, GDT, TSS and boot info into guest memory.
pub fn write_boot_state<M: GuestMemory>(mem: &M, info: &BootInfo) -> Result<(), String> {
    let err = |what: &str| format!("cannot write the boot {what}");
    mem.write_obj(BOOT_PDPT | 0x3, GuestAddress(BOOT_PML4))
        .map_err(|_| err("PML4"))?;
    mem.write_obj(BOOT_PD | 0x3, GuestAddress(BOOT_PDPT))
        .map_err(|_| err("PDPT"))?;
    let mut pd = [0u8; 4096];
    for (i, e) in pd.chunks_exact_mut(8).enumerate() {
        e.copy_from_slice(&(((i as u64) << 21) | 0x83).to_le_bytes());
    }
    mem.write_slice(&pd, GuestAddress(BOOT_PD))
        .map_err(|_| err("PD"))?;
    for (i, d) in gdt().iter().enumerate() {
        mem.write_obj(*d, GuestAddress(BOOT_GDT + 8 * i as u64))
            .map_err(|_| err("GDT"))?;
    }
    // TSS: everything 0 but the I/O map base (no bitmap).
    mem.write_obj(104u16, GuestAddress(BOOT_TSS + 102))
        .map_err(|_| err("TSS"))?;
    mem.write_slice(&info.to_bytes(), GuestAddress(BOOT_INFO))
        .map_err(|_| err("info page"))?;
    if info.cmdline.len() > CMDLINE_MAX {
        return Err(format!(
            "the kernel command line is longer than {CMDLINE_MAX} bytes"
        ));
    }
    mem.write_slice(
        info.cmdline.as_bytes(),
        GuestAddress(BOOT_INFO + CMDLINE_OFFSET),
    )
    .map_err(|_| err("command line"))?;
    Ok(())
}

fn segment(selector: u16, code: bool) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_: if code { 0xb } else { 0x3 },
        present: 1,
        dpl: 0,
        db: u8::from(!code),
        s: 1,
        l: u8::from(code),
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// Sets `sregs` to the ABI's 64-bit boot state with CR3 = `cr3`.
pub fn boot_sregs(sregs: &mut kvm_sregs, cr3: u64) {
    sregs.cs = segment(SEL_KERNEL_CODE, true);
    let data = segment(SEL_KERNEL_DATA, false);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = kvm_segment {
        base: BOOT_TSS,
        limit: 0x67,
        selector: SEL_TSS,
        type_: 0xb,
        present: 1,
        dpl: 0,
        db: 0,
        s: 0,
        l: 0,
        g: 0,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    sregs.gdt.base = BOOT_GDT;
    sregs.gdt.limit = (gdt().len() * 8 - 1) as u16;
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
    sregs.cr4 = CR4_PAE;
    sregs.efer = EFER_LME | EFER_LMA | EFER_NXE | EFER_SCE;
    sregs.cr3 = cr3;
}

/// The ABI's boot registers for vCPU `index`.
pub fn boot_regs(entry64: u64, index: u32) -> kvm_regs {
    kvm_regs {
        rip: entry64,
        rdi: BOOT_INFO,
        rsi: u64::from(index),
        rsp: 0,
        rflags: 0x2,
        ..Default::default()
    }
}
