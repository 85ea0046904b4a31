// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Target P1 (issue 8): a warm 4-level walk by the software walker against
//! the same translation by `KVM_TRANSLATE`, side by side in one criterion
//! group so that the ratio comes from one run.
//!
//! Both translate GVA 0x40_0123 over the same guest memory (registered as
//! the VM's memslot 0) and the same paging state, with the tables of
//! `walk.rs`'s "4-level warm 4K" case: PML4 0x1000 -> PDPT 0x2000 ->
//! PD 0x3000 -> PT 0x4000 -> page 0x5000, A and D already set. Two
//! differences from `walk.rs`, both forced by what `KVM_TRANSLATE` does:
//! it walks as a supervisor read at the vCPU's CPL (0 here), so the walker
//! makes a CPL0 read too, and CR4.SMAP is left clear (with SMAP the user
//! page is not readable by the supervisor and `KVM_TRANSLATE` answers
//! `valid == 0`).
//!
//! A third row walks over a host window the caller holds
//! (`PteMemory::host_window`), as a caller making many walks over one
//! memory region can: the walk then looks no region up.
//!
//! `KVM_TRANSLATE` works straight after `KVM_SET_SREGS`: the vCPU never
//! runs. Without a readable /dev/kvm the bench prints a SKIP line and
//! measures nothing.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use kvm_bindings::{kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use shadow_mmu::pte::{PteMemory, PTE_A, PTE_D, PTE_P, PTE_U, PTE_W};
use shadow_mmu::{walk, Access, AccessKind, Cr0, Cr4, Efer, Gva, PagingState};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

const FLAGS: u64 = PTE_P | PTE_W | PTE_U | PTE_A | PTE_D;
const RAM: usize = 0x100_0000;
const GVA: u64 = 0x40_0123;
const GPA: u64 = 0x5123;

/// Guest memory holding the 4-level tables that map `GVA` to `GPA`.
fn memory() -> GuestMemoryMmap<()> {
    let m = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), RAM)]).expect("guest memory");
    for (gpa, pte) in [
        (0x1000, 0x2000 | FLAGS),
        (0x2000, 0x3000 | FLAGS),
        (0x3000 + 16, 0x4000 | FLAGS),
        (0x4000, 0x5000 | FLAGS),
    ] {
        m.write_obj::<u64>(pte, GuestAddress(gpa)).expect("write");
    }
    m
}

/// A VM with `m` as memslot 0 and one vCPU in long mode on `state`'s tables.
///
/// The caller must drop the returned VM before `m`.
fn vm(kvm: &Kvm, m: &GuestMemoryMmap<()>, state: &PagingState) -> (VmFd, VcpuFd) {
    let vm = kvm.create_vm().expect("create VM");
    let host = m.get_host_address(GuestAddress(0)).expect("host address");
    // SAFETY: `host` is the start of the RAM bytes mapped by `m`, RAM bytes
    // long; the caller keeps `m` alive until after the VM (and with it the
    // memslot) is dropped.
    unsafe {
        vm.set_user_memory_region(kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: RAM as u64,
            userspace_addr: host as u64,
        })
        .expect("memslot");
    }
    let vcpu = vm.create_vcpu(0).expect("create vCPU");
    // CPUID first, or KVM refuses EFER.LME in KVM_SET_SREGS.
    let cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .expect("supported CPUID");
    vcpu.set_cpuid2(&cpuid).expect("KVM_SET_CPUID2");
    let mut sregs = vcpu.get_sregs().expect("KVM_GET_SREGS");
    sregs.cr0 = (state.cr0 | Cr0::ET).bits();
    sregs.cr3 = state.cr3;
    sregs.cr4 = state.cr4.bits();
    sregs.efer = state.efer.bits();
    sregs.cs.l = 1;
    sregs.cs.db = 0;
    vcpu.set_sregs(&sregs).expect("KVM_SET_SREGS");
    let back = vcpu.get_sregs().expect("KVM_GET_SREGS");
    assert_eq!(
        (back.cr0 & sregs.cr0, back.cr3, back.cr4, back.efer),
        (sregs.cr0, sregs.cr3, sregs.cr4, sregs.efer),
        "KVM did not take the long-mode paging state"
    );
    (vm, vcpu)
}

fn bench_translate(c: &mut Criterion) {
    let kvm = match Kvm::new() {
        Ok(kvm) => kvm,
        Err(e) => {
            eprintln!(
                "SKIP translate: cannot open /dev/kvm ({e}); walker vs KVM_TRANSLATE not measured"
            );
            return;
        }
    };
    let state = PagingState {
        cr0: Cr0::PE | Cr0::PG | Cr0::WP,
        cr3: 0x1000,
        cr4: Cr4::PAE | Cr4::SMEP,
        efer: Efer::LME | Efer::LMA | Efer::NXE,
        ..Default::default()
    };
    // KVM_TRANSLATE's access: a supervisor read.
    let read = Access::at_cpl(AccessKind::Read, 0);
    let m = memory();
    let (_vm, vcpu) = vm(&kvm, &m, &state);

    // Once, outside the timing: both must give the same GPA.
    let walked = walk(&m, &state, Gva(GVA), read).expect("walker").gpa.0;
    let t = vcpu.translate_gva(GVA).expect("KVM_TRANSLATE");
    assert_eq!(t.valid, 1, "KVM_TRANSLATE found no translation: {t:x?}");
    assert_eq!(
        (walked, t.physical_address),
        (GPA, GPA),
        "walker and KVM_TRANSLATE disagree"
    );

    let mut g = c.benchmark_group("P1 4-level warm 4K translate");
    g.bench_function("walker", |b| {
        b.iter(|| black_box(walk(&m, black_box(&state), black_box(Gva(GVA)), read)).is_ok())
    });
    let window = m.host_window(GuestAddress(0)).expect("a window over RAM");
    assert_eq!(
        walk(&window, &state, Gva(GVA), read).expect("walker").gpa.0,
        GPA
    );
    g.bench_function("walker, caller-held window", |b| {
        b.iter(|| black_box(walk(&window, black_box(&state), black_box(Gva(GVA)), read)).is_ok())
    });
    g.bench_function("KVM_TRANSLATE", |b| {
        b.iter(|| black_box(vcpu.translate_gva(black_box(GVA))).is_ok())
    });
    g.finish();
}

criterion_group!(benches, bench_translate);
criterion_main!(benches);
