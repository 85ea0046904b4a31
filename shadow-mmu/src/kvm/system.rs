// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Builds the system area: the hole's page tables, the GDT, the IDT, one TSS
//! per vCPU, and the trampoline.

use std::sync::atomic::{AtomicU64, Ordering};

use vm_memory::{MmapRegion, VolatileMemory};

use super::layout::*;
use super::mailbox::{stub_offset, ARM_BASE, DISARMED, NMI_ENTRY, PF_ENTRY, STUB_STRIDE, UNARMED};
use super::TRAMPOLINE_CODE;
use crate::arch::vector;
use crate::pte::{PTE_A, PTE_D, PTE_P, PTE_PS, PTE_W, PTE_XD};

fn store(region: &MmapRegion<()>, off: u64, value: u64) {
    // Offsets are constants of the layout, inside the 2 MiB area.
    if let Ok(a) = region.get_atomic_ref::<AtomicU64>(off as usize) {
        a.store(value, Ordering::Release);
    }
}

/// A 64-bit interrupt gate to `va` on stack `ist` (0: no stack switch
/// unless the privilege changes, then TSS.RSP0), callable by `int n` from
/// CPL `dpl` and below.
fn gate(va: u64, ist: u64, dpl: u64) -> (u64, u64) {
    let low = (va & 0xffff)
        | (u64::from(KERNEL_CS) << 16)
        | (ist << 32)
        | ((0x8e | dpl << 5) << 40) // present, interrupt gate
        | (((va >> 16) & 0xffff) << 48);
    (low, va >> 32)
}

/// The privilege `int n` needs for `vector`: #BP and #OF (`int3`, `into`)
/// may be raised from user mode, as operating systems set them up.
const fn gate_dpl(vector: u8) -> u64 {
    match vector {
        vector::BP | vector::OF => 3,
        _ => 0,
    }
}

/// The gate through which `vector` enters the trampoline.
pub(super) fn trampoline_gate(vector: u8) -> Option<(u64, u64)> {
    if vector == vector::NMI {
        return Some(gate(hole_va(TRAMPOLINE + NMI_ENTRY), 2, 0));
    }
    stub_offset(vector).map(|stub| gate(hole_va(TRAMPOLINE + stub), 1, gate_dpl(vector)))
}

/// The low word of vCPU `index`'s #PF gate, at its IDT offset: into the
/// dirty fast path (`armed`) or the plain stub, which an unarmed fault
/// takes without the fast path's checks. (The high word, the entry's
/// address bits 32-63, is the same for both.)
pub(super) fn pf_gate(index: usize, armed: bool) -> (u64, u64) {
    let entry = if armed {
        PF_ENTRY
    } else {
        STUB_STRIDE * u64::from(vector::PF)
    };
    let (low, _) = gate(hole_va(TRAMPOLINE + entry), 1, gate_dpl(vector::PF));
    (idt(index) + 16 * u64::from(vector::PF), low)
}

/// The gate that delivers `vector` straight to the guest's handler at
/// `handler`, on the current stack or, from user mode, on TSS.RSP0.
pub(super) fn guest_gate(vector: u8, handler: u64) -> (u64, u64) {
    gate(handler, 0, gate_dpl(vector))
}

/// A 64-bit available TSS descriptor for `base`.
fn tss_descriptor(base: u64) -> (u64, u64) {
    let limit = 103u64;
    let low = (limit & 0xffff)
        | ((base & 0xff_ffff) << 16)
        | (0x89 << 40) // present, type 9 (available 64-bit TSS)
        | (((base >> 24) & 0xff) << 56);
    (low, base >> 32)
}

pub(super) fn build(
    region: &MmapRegion<()>,
    hidden_base: u64,
    arena_base: u64,
    arena_size: u64,
    vcpus: usize,
) {
    let table = PTE_P | PTE_W | PTE_A;
    // Hole PDPT -> PD; PD[0] -> PT of the system area; PD[1..] arena.
    store(region, HOLE_PDPT, (hidden_base + HOLE_PD) | table);
    store(region, HOLE_PD, (hidden_base + HOLE_PT) | table);
    for k in 0..arena_size.div_ceil(SYSTEM_SIZE) {
        let leaf = (arena_base + k * SYSTEM_SIZE) | table | PTE_D | PTE_PS | PTE_XD;
        store(region, HOLE_PD + 8 * (1 + k), leaf);
    }
    // The system area itself, except the hole's top tables; its page table
    // is mapped so that the trampoline can rewrite the entry of an arm
    // block's window (`ShadowVm::arm_dirty`), which maps nothing until a
    // table is armed.
    let code_pages = (TRAMPOLINE_CODE.len() as u64).div_ceil(4096);
    for page in (HOLE_PT / 4096)..(SYSTEM_END / 4096) {
        let off = page * 4096;
        let is_code = (TRAMPOLINE..TRAMPOLINE + code_pages * 4096).contains(&off);
        let in_arm_block = (ARMS..arm_block(vcpus)).contains(&off);
        let arm_page = (off - ARMS.min(off)) % VCPU_BLOCK_SIZE;
        let used = off < TRAMPOLINE + code_pages * 4096
            || (IDTS..idt(vcpus)).contains(&off)
            || (VCPU_BLOCKS..vcpu_block(vcpus)).contains(&off)
            || (NMI_BLOCKS..nmi_block(vcpus)).contains(&off)
            || (in_arm_block && (arm_page == ARM_GPTES || arm_page == ARM_SPTES));
        if !used {
            continue;
        }
        let pte = if is_code {
            (hidden_base + off) | PTE_P | PTE_A
        } else {
            (hidden_base + off) | table | PTE_D | PTE_XD
        };
        store(region, HOLE_PT + 8 * page, pte);
    }
    // GDT: null, kernel code, kernel data, user data, user code, TSSs.
    store(region, GDT + 0x08, 0x00af_9b00_0000_ffff);
    store(region, GDT + 0x10, 0x00cf_9300_0000_ffff);
    store(region, GDT + 0x18, 0x00cf_f300_0000_ffff);
    store(region, GDT + 0x20, 0x00af_fb00_0000_ffff);
    for i in 0..vcpus as u64 {
        let tss = tss(i as usize);
        let (lo, hi) = tss_descriptor(hole_va(tss));
        let sel = u64::from(TSS_SELECTOR) + 16 * i;
        store(region, GDT + sel, lo);
        store(region, GDT + sel + 8, hi);
        // TSS: RSP0 (offset 4) and IST1 (offset 36) at the top of the
        // vCPU's block; no I/O bitmap (offset 102 = limit + 1). RSP0 and
        // IST1 are not 8-byte aligned in the TSS: store them as pairs of
        // aligned words.
        let top = hole_va(vcpu_block(i as usize) + VCPU_BLOCK_SIZE);
        write_unaligned(region, tss + 4, top);
        write_unaligned(region, tss + 36, top);
        let nmi_top = hole_va(nmi_block(i as usize) + VCPU_BLOCK_SIZE);
        write_unaligned(region, tss + 44, nmi_top);
        write_unaligned16(region, tss + 102, 104);
        store(region, vcpu_block(i as usize) + ARM_BASE, DISARMED);
        for slot in 0..512 {
            store(
                region,
                arm_block(i as usize) + ARM_GPTES + 8 * slot,
                UNARMED,
            );
        }
    }
    // IDTs: exceptions 0-31 enter the trampoline until the guest registers
    // handlers; the NMI (a flush request) has its own entry and stack;
    // external interrupts 32-255 always enter the trampoline.
    for i in 0..vcpus {
        for vector in 0..=255u8 {
            if let Some((lo, hi)) = trampoline_gate(vector) {
                store(region, idt(i) + 16 * u64::from(vector), lo);
                store(region, idt(i) + 16 * u64::from(vector) + 8, hi);
            }
        }
    }
    // The trampoline.
    for (i, chunk) in TRAMPOLINE_CODE.chunks(8).enumerate() {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        store(region, TRAMPOLINE + 8 * i as u64, u64::from_le_bytes(word));
    }
}

/// Sets TSS.RSP0 of vCPU `index`: the stack the CPU switches to when a
/// gate without IST is taken from user mode.
pub(super) fn set_rsp0(region: &MmapRegion<()>, index: usize, rsp: u64) {
    write_unaligned(region, tss(index) + 4, rsp);
}

fn write_unaligned(region: &MmapRegion<()>, off: u64, value: u64) {
    use vm_memory::Bytes;
    let _ = region.as_volatile_slice().write_obj(value, off as usize);
}

fn write_unaligned16(region: &MmapRegion<()>, off: u64, value: u16) {
    use vm_memory::Bytes;
    let _ = region.as_volatile_slice().write_obj(value, off as usize);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_encoding() {
        // SDM vol. 3, figure 6-8 (64-bit IDT gate descriptor).
        let (lo, hi) = gate(0xffff_ff00_0000_6010, 1, 0);
        assert_eq!(lo & 0xffff, 0x6010);
        assert_eq!((lo >> 48) & 0xffff, 0x0000);
        assert_eq!(hi, 0xffff_ff00);
        assert_eq!((lo >> 16) & 0xffff, 0x08);
        assert_eq!((lo >> 32) & 0x7, 1);
        assert_eq!((lo >> 40) & 0xff, 0x8e);
        // A user-callable gate to a guest handler: DPL 3 (bits 45-46),
        // IST 0.
        let (lo, hi) = guest_gate(3, 0xffff_8000_0012_3456);
        assert_eq!((lo >> 40) & 0xff, 0xee);
        assert_eq!((lo >> 32) & 0x7, 0);
        assert_eq!(lo & 0xffff, 0x3456);
        assert_eq!((lo >> 48) & 0xffff, 0x0012);
        assert_eq!(hi, 0xffff_8000);
        assert_eq!((guest_gate(13, 0).0 >> 40) & 0xff, 0x8e);
    }

    #[test]
    // It runs the assembler, which Miri cannot spawn.
    #[cfg_attr(miri, ignore)]
    fn trampoline_matches_its_source() {
        // Reassemble trampoline.S when binutils are present; the committed
        // bytes must be exactly what the source says.
        let dir = std::env::temp_dir().join(format!("shadow-mmu-tramp-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let src = concat!(env!("CARGO_MANIFEST_DIR"), "/src/kvm/trampoline.S");
        let obj = dir.join("t.o");
        let bin = dir.join("t.bin");
        let assembled = std::process::Command::new("as")
            .args(["--64", "-o"])
            .arg(&obj)
            .arg(src)
            .status()
            .is_ok_and(|s| s.success())
            && std::process::Command::new("objcopy")
                .args(["-O", "binary"])
                .arg(&obj)
                .arg(&bin)
                .status()
                .is_ok_and(|s| s.success());
        if !assembled {
            eprintln!("SKIP: binutils (as, objcopy) not found; trampoline.bin not re-checked");
            return;
        }
        let bytes = std::fs::read(&bin).expect("assembled trampoline");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            bytes, TRAMPOLINE_CODE,
            "trampoline.bin is stale: reassemble trampoline.S"
        );
    }
}
