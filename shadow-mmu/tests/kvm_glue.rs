// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The KVM glue on real /dev/kvm: a CPL0 guest (tests/guest/basic.S) runs
//! with CR3 on shadow tables, takes shadow faults through the trampoline, and
//! gets its own page fault delivered through its trap table.
#![cfg(feature = "kvm")]

use kvm_bindings::{kvm_regs, kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuExit};
use shadow_mmu::kvm::{Exit, KvmGlueError, ShadowVm, ShadowVmConfig, EXIT_PORT};
use shadow_mmu::pte::{PTE_A, PTE_D, PTE_P, PTE_PS, PTE_U, PTE_W};
use shadow_mmu::{Cr0, Cr4, Efer, GuestAddress, MmuConfig, PagingState, ShadowMmu};
use vm_memory::{Bytes, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryBackend, GuestMemoryMmap};

const RAM: usize = 64 << 20;
const GUEST: &[u8] = include_bytes!("guest/basic.bin");
const USER_GUEST: &[u8] = include_bytes!("guest/user.bin");
const HOSTILE_GUEST: &[u8] = include_bytes!("guest/hostile.bin");
const INTERRUPTS_GUEST: &[u8] = include_bytes!("guest/interrupts.bin");
const DIRTY_GUEST: &[u8] = include_bytes!("guest/dirty.bin");
/// The port the interrupt guest ends its run with (it cannot use `hlt`:
/// with the in-kernel interrupt controller KVM halts the vCPU itself).
const DONE_PORT: u16 = 0x5a2;

fn kvm() -> Kvm {
    Kvm::new().unwrap_or_else(|e| {
        panic!("these tests need /dev/kvm (read-write): {e}; they are never skipped")
    })
}

/// A VM with 64 MiB of RAM prepared by `prepare`, one vCPU on shadow tables
/// of the guest tables at CR3 0x1000, run from RIP 0x100000 until `hlt`.
fn run_guest(
    code: &[u8],
    prepare: impl FnOnce(&dyn Fn(u64, u64)),
) -> (
    kvm_bindings::kvm_regs,
    ShadowVm,
    GuestMemoryAtomic<GuestMemoryMmap>,
    u32,
) {
    let (r, shadow, atomic, exits) = try_run_guest(code, 0x10_0000, prepare);
    (r.expect("trampoline exit"), shadow, atomic, exits)
}

/// How a run ended (the registers then, or the glue's error), the VM, its
/// memory and the number of `KVM_RUN`s.
type Ran = (
    Result<kvm_bindings::kvm_regs, KvmGlueError>,
    ShadowVm,
    GuestMemoryAtomic<GuestMemoryMmap>,
    u32,
);

/// [`run_guest`] from `rip`, ending at the first error of the glue.
fn try_run_guest(code: &[u8], rip: u64, prepare: impl FnOnce(&dyn Fn(u64, u64))) -> Ran {
    try_run_guest_on(code, rip, false, prepare)
}

/// [`try_run_guest`] on a VM with the in-kernel interrupt controller (local
/// APIC, I/O APIC, PIC) if `irqchip`; the run also ends at an `out` to
/// [`DONE_PORT`].
fn try_run_guest_on(
    code: &[u8],
    rip: u64,
    irqchip: bool,
    prepare: impl FnOnce(&dyn Fn(u64, u64)),
) -> Ran {
    try_run_guest_with(code, rip, irqchip, true, prepare)
}

/// [`try_run_guest_on`], with the trampoline resolving writes to clean
/// pages by itself or not (`ShadowVm::set_dirty_fast_path`).
fn try_run_guest_with(
    code: &[u8],
    rip: u64,
    irqchip: bool,
    dirty_fast_path: bool,
    prepare: impl FnOnce(&dyn Fn(u64, u64)),
) -> Ran {
    let kvm = kvm();
    let vm = kvm.create_vm().expect("create VM");
    if irqchip {
        vm.create_irq_chip().expect("KVM_CREATE_IRQCHIP");
    }
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), RAM)]).unwrap();
    let host = mem.get_host_address(GuestAddress(0)).unwrap();
    // SAFETY: `host` maps the RAM bytes of `mem`, which the returned
    // GuestMemoryAtomic keeps alive; the VM (and its memslot) is dropped at
    // the end of this function, before them.
    unsafe {
        vm.set_user_memory_region(kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: RAM as u64,
            userspace_addr: host as u64,
        })
        .unwrap();
    }
    mem.write_slice(code, GuestAddress(0x10_0000)).unwrap();
    prepare(&|gpa: u64, v: u64| mem.write_obj(v, GuestAddress(gpa)).unwrap());
    let atomic = GuestMemoryAtomic::new(mem);
    let shadow = ShadowVm::new(
        &vm,
        atomic.clone(),
        ShadowVmConfig {
            hidden_base: 1 << 40,
            first_slot: 1,
            mmu: MmuConfig::default(),
        },
    )
    .expect("shadow VM");
    shadow.set_dirty_fast_path(dirty_fast_path);
    let mut vcpu = vm.create_vcpu(0).unwrap();
    let cpuid = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).unwrap();
    vcpu.set_cpuid2(&cpuid).unwrap();
    let guest = PagingState {
        cr0: Cr0::PE | Cr0::PG | Cr0::WP,
        cr3: 0x1000,
        cr4: Cr4::PAE,
        efer: Efer::LME | Efer::LMA | Efer::NXE,
        gbpages: false,
        ..Default::default()
    };
    let regs = kvm_regs {
        rip,
        rflags: 2,
        ..Default::default()
    };
    shadow
        .setup_vcpu(&vcpu, 0, &guest, &regs)
        .expect("vCPU setup");
    let mut exits = 0;
    loop {
        exits += 1;
        assert!(exits < 1000, "guest does not finish");
        match vcpu.run().expect("KVM_RUN") {
            VcpuExit::IoOut(port, _) if port == EXIT_PORT => match shadow.handle_exit(0) {
                Ok(Exit::Resume) => {}
                Ok(other) => panic!("unexpected exit {other:x?}"),
                Err(e) => return (Err(e), shadow, atomic, exits),
            },
            VcpuExit::Hlt => break,
            VcpuExit::IoOut(DONE_PORT, _) => break,
            other => {
                let msg = format!("{other:?}");
                let r = vcpu.get_regs().unwrap();
                let s = vcpu.get_sregs().unwrap();
                panic!(
                    "unexpected KVM exit {msg} after {exits} exits: rip {:#x} rsp {:#x} cr3 {:#x} cr2 {:#x}",
                    r.rip, r.rsp, s.cr3, s.cr2
                );
            }
        }
    }
    let regs = vcpu.get_regs().unwrap();
    (Ok(regs), shadow, atomic, exits)
}

/// External interrupts from the in-kernel local APIC (x2APIC: a self-IPI,
/// periodic timer ticks) reach the guest's handlers through its 256-entry
/// trap table: at CPL0 on the current stack, at CPL3 on the kernel stack
/// with the interrupted user RIP and RSP in the frame, each acknowledged by
/// the guest's EOI; an interrupt whose vector has no handler is the #NP a
/// not-present gate raises, error code = IDT slot | IDT | EXT
/// (SDM vol. 3A, 6.13). Bad input from the guest changes nothing for the
/// VMM: an IPI to an APIC ID no vCPU has goes nowhere, and two floods of
/// self-IPIs (1000 each, coalesced by the local APIC) whose handler never
/// acknowledges them are taken once each here and stop nothing. How often
/// a flood is taken is the local APIC's business (KVM's); what the VMM owes
/// is that each interrupt KVM raises reaches its handler exactly once.
#[test]
fn external_interrupts_reach_the_guest_s_handlers() {
    let t = PTE_P | PTE_W;
    let u = PTE_P | PTE_W | PTE_U;
    let (r, shadow, _atomic, exits) = try_run_guest_on(INTERRUPTS_GUEST, 0x10_0000, true, |w| {
        w(0x1000, 0x2000 | u);
        w(0x2000, 0x3000 | u);
        w(0x3000, 0x4000 | u);
        for i in 0..512u64 {
            w(0x4000 + 8 * i, (i << 12) | t);
        }
        w(0x4000 + 8 * 0x101, 0x10_1000 | PTE_P | PTE_U); // user code
        w(0x4000 + 8 * 0x6, 0x6000 | u); // user stack (top 0x7000)
        w(0x9000 + 11 * 8, 0x10_0300); // #NP
        w(0x9000 + 0x30 * 8, 0x10_0200); // the timer
        w(0x9000 + 0x45 * 8, 0x10_0400); // the flood
    });
    let r = r.expect("the guest ends at its done port");
    eprintln!(
        "exits {exits}, interrupts {}: {} ticks, {} flood",
        shadow.interrupts(),
        r.r12,
        r.rbx
    );
    assert_eq!(
        r.r9,
        (0x31 << 3) | 0b11,
        "#NP error code: slot 0x31, IDT, EXT"
    );
    assert_eq!(r.r10, 1, "one #NP");
    assert!(
        r.r12 >= 4,
        "three ticks at CPL0, then one at CPL3: {}",
        r.r12
    );
    assert_eq!(
        r.r13,
        0x7f000 - 40,
        "the CPL3 tick's frame on the kernel stack"
    );
    assert_eq!(r.r14, 0x10_1000, "the interrupted user RIP");
    assert_eq!(r.r15, 0x7000, "the interrupted user RSP");
    assert!(
        (1..=2).contains(&r.rbx),
        "each flood taken at most once: {}",
        r.rbx
    );
    assert_eq!(
        shadow.interrupts(),
        r.r12 + r.rbx,
        "one delivery per interrupt"
    );
}

#[test]
fn cpl0_guest_runs_on_shadow_tables() {
    let t = PTE_P | PTE_W;
    let (r, shadow, atomic, exits) = run_guest(GUEST, |w| {
        // Guest tables: PML4 0x1000 -> PDPT 0x2000 -> PD 0x3000.
        w(0x1000, 0x2000 | t);
        w(0x2000, 0x3000 | t);
        w(0x3000, 0x4000 | t); // PD[0] -> PT 0x4000: identity 0..2 MiB
        for i in 0..512u64 {
            w(0x4000 + 8 * i, (i << 12) | t);
        }
        w(0x3008, 0x40_0000 | t | PTE_PS); // gva 2M: 2 MiB page at GPA 4M
        w(0x3010, 0x5000 | t); // gva 4M: PT 0x5000
        w(0x5000, 0x60_0000 | t);
        w(0x9000 + 14 * 8, 0x10_0100); // trap table: #PF handler
        w(0x40_0000, 0xfeed_f00d);
        w(0x60_0010, 0xabcd);
    });
    assert_eq!(r.rax, 0xfeed_f00d, "read through a 2 MiB guest page");
    assert_eq!(r.rcx, 0x1122_3344_5566_7788, "write then read");
    assert_eq!(r.rsi, 0xabcd, "read through a guest PT");
    assert_eq!(r.r8, 0x4000_0000, "CR2 of the delivered #PF");
    assert_eq!(r.r9, 0, "error code: supervisor read of a not-present page");
    assert_eq!(r.rip, 0x10_0107, "halted in the handler (after its hlt)");
    let mem = atomic.memory();
    assert_eq!(
        mem.read_obj::<u64>(GuestAddress(0x40_1008)).unwrap(),
        0x1122_3344_5566_7788
    );
    // A/D set by the shadow MMU's walks as the CPU would.
    assert_eq!(
        mem.read_obj::<u64>(GuestAddress(0x3008)).unwrap() & (PTE_A | PTE_D),
        PTE_A | PTE_D
    );
    assert_eq!(
        mem.read_obj::<u64>(GuestAddress(0x5000)).unwrap() & (PTE_A | PTE_D),
        PTE_A
    );
    shadow.mmu().audit().expect("audit");
    let st = shadow.mmu().stats();
    eprintln!("exits {exits}, stats {st:?}");
    assert!(st.fault_no_spte >= 3);
    assert_eq!(st.fault_guest, 1);
}

/// User code (CPL3) on shadow tables: exceptions from CPL3 switch to the
/// IST stack, are delivered on the kernel stack the guest registered, and a
/// user read of a supervisor page gets the architectural error code P|U
/// (the host reports it with P clear: HOST-NOTES.md).
#[test]
fn cpl3_guest_faults_are_delivered_with_architectural_error_codes() {
    let t = PTE_P | PTE_W;
    let u = PTE_P | PTE_W | PTE_U;
    let (r, shadow, atomic, _) = run_guest(USER_GUEST, |w| {
        w(0x1000, 0x2000 | u);
        w(0x2000, 0x3000 | u);
        w(0x3000, 0x4000 | u);
        for i in 0..512u64 {
            w(0x4000 + 8 * i, (i << 12) | t); // supervisor by default
        }
        w(0x4000 + 8 * 0x101, 0x10_1000 | PTE_P | PTE_U); // user code
        w(0x4000 + 8 * 0x102, 0x10_2000 | u); // user data
        w(0x4000 + 8 * 0x6, 0x6000 | u); // user stack (top 0x7000)
        w(0x9000 + 14 * 8, 0x10_0100);
        w(0x10_2000, 0x5151);
    });
    assert_eq!(r.rax, 0x5151);
    assert_eq!(r.rbx, 0x77);
    assert_eq!(r.rdx, 0x77, "push/pop on the user stack");
    assert_eq!(r.r8, 0x10_0000, "CR2");
    assert_eq!(r.r9, 0x5, "P|U: a user read of a present supervisor page");
    assert_eq!(r.r10, 0x10_101e, "the faulting user instruction");
    assert_eq!(r.r11, 0x23, "user CS in the delivered frame");
    let mem = atomic.memory();
    let pte = mem
        .read_obj::<u64>(GuestAddress(0x4000 + 8 * 0x102))
        .unwrap();
    assert_eq!(pte & (PTE_A | PTE_D), PTE_A | PTE_D);
    shadow.mmu().audit().expect("audit");
}

/// More vCPUs than the page cap has room for: each vCPU's current root is
/// pinned, so once the roots fill the cap the next vCPU's root cannot be
/// built. That is a clear `OutOfPages` error for the VMM, not an endless
/// retry (the glue used to loop on `flush_completed` forever).
#[test]
fn roots_that_fill_the_cap_are_an_error_not_a_hang() {
    use shadow_mmu::MmuError;

    let kvm = kvm();
    let vm = kvm.create_vm().expect("create VM");
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), RAM)]).unwrap();
    let shadow = ShadowVm::new(
        &vm,
        GuestMemoryAtomic::new(mem),
        ShadowVmConfig {
            hidden_base: 1 << 40,
            first_slot: 1,
            mmu: MmuConfig {
                vcpus: 12,
                max_pages: 8,
                ..MmuConfig::default()
            },
        },
    )
    .expect("shadow VM");
    let mut results = Vec::new();
    for vcpu in 0..12u64 {
        // A distinct address space per vCPU: a root page each.
        let guest = PagingState {
            cr0: Cr0::PE | Cr0::PG | Cr0::WP,
            cr3: 0x1000 * (vcpu + 1),
            cr4: Cr4::PAE,
            efer: Efer::LME | Efer::LMA | Efer::NXE,
            ..Default::default()
        };
        let mut sregs = kvm_bindings::kvm_sregs::default();
        results.push(shadow.prepare_vcpu(vcpu as usize, &guest, &mut sregs));
    }
    // The cap holds 8 roots; the ninth vCPU on gets the error.
    for (vcpu, r) in results.iter().enumerate() {
        if vcpu < 8 {
            assert!(r.is_ok(), "vCPU {vcpu}: {r:?}");
        } else {
            assert!(
                matches!(r, Err(KvmGlueError::Mmu(MmuError::OutOfPages))),
                "vCPU {vcpu}: {r:?}"
            );
        }
    }
    assert_eq!(shadow.mmu().stats().pages_in_use, 8);
}

/// Guest tables PML4 0x1000 -> PDPT 0x2000 -> PD 0x3000 -> PT 0x4000
/// mapping the first 2 MiB to themselves (code, stacks, hypercall blocks),
/// writable, neither accessed nor dirty.
fn identity_first_2m(w: &dyn Fn(u64, u64)) {
    let t = PTE_P | PTE_W;
    w(0x1000, 0x2000 | t);
    w(0x2000, 0x3000 | t);
    w(0x3000, 0x4000 | t);
    for i in 0..512u64 {
        w(0x4000 + 8 * i, (i << 12) | t);
    }
}

/// Identity-mapped guest tables for the hostile guest: code and stack in
/// the first 2 MiB, and one data page each under PML4 slots 1 and 2 (guest
/// entries without A, so that nothing is prefetched).
fn hostile_tables(w: &dyn Fn(u64, u64)) {
    let t = PTE_P | PTE_W;
    identity_first_2m(w);
    // Slot 1: gva 0x80_0000_0000 + 4 KiB pages at GPA 0x20_0000.
    w(0x1008, 0xa000 | t);
    w(0xa000, 0xb000 | t);
    w(0xb000, 0xc000 | t);
    for i in 0..4u64 {
        w(0xc000 + 8 * i, (0x20_0000 + (i << 12)) | t);
    }
    // Slot 2: gva 0x100_0000_0000 at GPA 0x30_0000.
    w(0x1010, 0xd000 | t);
    w(0xd000, 0xe000 | t);
    w(0xe000, 0xf000 | t);
    w(0xf000, 0x30_0000 | t);
}

/// A guest kernel clears P in its shadow root through the hole: the next
/// fault that crosses the entry stops the VM with the entry named, where
/// the MMU used to re-link it and call the fault fixed, for ever.
#[test]
fn a_shadow_entry_forged_through_the_hole_stops_the_vm() {
    use shadow_mmu::MmuError;

    let (r, shadow, _, exits) = try_run_guest(HOSTILE_GUEST, 0x10_0000, hostile_tables);
    let root = shadow.mmu().stats();
    match r {
        Err(KvmGlueError::Mmu(MmuError::ShadowCorrupted {
            addr,
            expected,
            found,
        })) => {
            assert_eq!(addr % 4096, 8, "PML4 slot 1 of the root");
            assert_eq!(found, expected & !PTE_P);
        }
        other => panic!("after {exits} exits: {other:x?} ({root:?})"),
    }
    assert!(shadow.mmu().audit().is_err());
}

/// A guest kernel loads CR3 itself with a copy of its shadow root: faults
/// the MMU fixes in the root it keeps never reach the one the CPU uses.
/// The glue ends the VM with `FaultLoop` after a bounded number of
/// identical faults instead of serving them for ever.
#[test]
fn a_root_the_vmm_never_built_is_a_fault_loop_not_a_hang() {
    let (r, _, _, exits) = try_run_guest(HOSTILE_GUEST, 0x10_0800, hostile_tables);
    match r {
        Err(KvmGlueError::FaultLoop {
            gva,
            error_code,
            faults,
            ..
        }) => {
            assert_eq!(gva, 0x100_0000_0000);
            assert_eq!(error_code, 0, "a supervisor read of a not-present page");
            assert!(
                faults > 200 && exits < 600,
                "{faults} faults, {exits} exits"
            );
        }
        other => panic!("after {exits} exits: {other:x?}"),
    }
}

/// An exception for a guest whose kernel stack is not mapped is a clear
/// "could not be delivered" error naming the stack, not "no handler".
#[test]
fn an_exception_with_no_usable_stack_is_named_as_such() {
    let (r, _, _, exits) = try_run_guest(HOSTILE_GUEST, 0x10_1000, |w| {
        hostile_tables(w);
        w(0x9000 + 14 * 8, 0x10_0100);
    });
    match r {
        Err(KvmGlueError::Undeliverable {
            vector: 14, stack, ..
        }) => assert_eq!(stack, 0x4000_0ff8, "the first push"),
        other => panic!("after {exits} exits: {other:x?}"),
    }
}

/// A guest kernel that overwrites the trampoline's code through the hole
/// makes the trampoline fault: the VM stops with an error that says so.
#[test]
fn a_trampoline_the_guest_overwrote_is_a_clear_error() {
    let (r, _, _, exits) = try_run_guest(HOSTILE_GUEST, 0x10_1800, hostile_tables);
    match r {
        Err(KvmGlueError::TrampolineFault { vector: 6, rip, .. }) => {
            assert_eq!((rip >> 39) & 511, 510, "in the hole: {rip:#x}")
        }
        other => panic!("after {exits} exits: {other:x?}"),
    }
}

/// Guest tables for `guest/dirty.S`: code, stack and hypercall blocks
/// identity-mapped in the first 2 MiB, and 64 clean pages (present,
/// writable, accessed, not dirty) at gva 0x400000, frames from 0x600000,
/// in the guest table at 0x5000.
fn clean_pages(w: &dyn Fn(u64, u64)) {
    let t = PTE_P | PTE_W;
    identity_first_2m(w);
    w(0x3010, 0x5000 | t);
    for i in 0..64u64 {
        w(0x5000 + 8 * i, (0x60_0000 + (i << 12)) | t | PTE_A);
    }
}

/// The first write to each of 64 clean pages of one table, after a read
/// that mapped the table: with the dirty fast path, the trampoline sets D
/// in each guest entry and makes its shadow entry writable with no exit,
/// and the MMU takes the entries over at the next one (the audit); without
/// it, every write exits, as under KVM. The guest's memory, its D bits and
/// its CR2 (which no fault of the guest's set: the trampoline puts back
/// the one the guest saw) are the same either way, and what the SDM says
/// they must be.
#[test]
fn writes_to_clean_pages_set_d_without_an_exit() {
    let run = |fast: bool| {
        let (r, shadow, atomic, exits) =
            try_run_guest_with(DIRTY_GUEST, 0x10_0000, false, fast, clean_pages);
        let r = r.expect("the guest runs to its hlt");
        shadow.catch_up(0).expect("vCPU 0");
        assert_eq!(r.rbx, 0, "CR2: the guest never took a fault");
        let mem = atomic.memory();
        for i in 0..64u64 {
            let data: u64 = mem.read_obj(GuestAddress(0x60_0000 + (i << 12))).unwrap();
            assert_eq!(data, i, "page {i}");
            let pte: u64 = mem.read_obj(GuestAddress(0x5000 + 8 * i)).unwrap();
            assert_eq!(pte & (PTE_A | PTE_D), PTE_A | PTE_D, "entry {i}: {pte:#x}");
        }
        shadow.mmu().audit().expect("audit");
        let st = shadow.mmu().stats();
        eprintln!("fast path {fast}: {exits} exits, {st:?}");
        (exits, st)
    };
    let (fast_exits, fast) = run(true);
    let (slow_exits, slow) = run(false);
    assert_eq!(slow.dirty_taken, 0);
    assert!(slow.fault_dirty_tracking >= 64, "{slow:?}");
    assert_eq!(fast.dirty_taken, 64, "{fast:?}");
    assert_eq!(fast.fault_dirty_tracking, 0, "{fast:?}");
    assert_eq!(slow_exits - fast_exits, 64, "one exit per clean page saved");
}

/// A guest kernel that forges the armed table's shadow-page address in
/// the hole (a non-canonical one) makes the trampoline's fast path take a
/// #GP: the VM stops with a trampoline fault, and the VMM, which never
/// reads the hole's copy of the table, takes nothing over from it.
#[test]
fn a_forged_dirty_table_is_a_trampoline_fault() {
    let (r, shadow, _, exits) = try_run_guest(DIRTY_GUEST, 0x10_0800, clean_pages);
    match r {
        Err(KvmGlueError::TrampolineFault {
            vector: 13, rip, ..
        }) => {
            assert_eq!((rip >> 39) & 511, 510, "in the hole: {rip:#x}")
        }
        other => panic!("after {exits} exits: {other:x?}"),
    }
    assert_eq!(shadow.mmu().stats().dirty_taken, 0);
    shadow.mmu().audit().expect("audit");
}
