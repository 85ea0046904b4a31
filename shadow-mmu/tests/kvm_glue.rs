//! The KVM glue on real /dev/kvm: a CPL0 guest (tests/guest/basic.S) runs
//! with CR3 on shadow tables, takes shadow faults through the trampoline, and
//! gets its own page fault delivered through its trap table.
#![cfg(feature = "kvm")]

use kvm_bindings::{kvm_regs, kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuExit};
use shadow_mmu::kvm::{Exit, ShadowVm, ShadowVmConfig, EXIT_PORT};
use shadow_mmu::pte::{PTE_A, PTE_D, PTE_P, PTE_PS, PTE_W};
use shadow_mmu::{Cr0, Cr4, Efer, GuestAddress, MmuConfig, PagingState, ShadowMmu};
use vm_memory::{Bytes, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryBackend, GuestMemoryMmap};

const RAM: usize = 64 << 20;
const GUEST: &[u8] = include_bytes!("guest/basic.bin");

fn kvm() -> Kvm {
    Kvm::new().unwrap_or_else(|e| {
        panic!("these tests need /dev/kvm (read-write): {e}; they are never skipped")
    })
}

#[test]
fn cpl0_guest_runs_on_shadow_tables() {
    let kvm = kvm();
    let vm = kvm.create_vm().expect("create VM");
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), RAM)]).unwrap();
    let host = mem.get_host_address(GuestAddress(0)).unwrap();
    // SAFETY: `host` maps RAM bytes of guest memory that `mem` (kept alive
    // by `atomic` below until the end of the test) owns.
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
    let w = |gpa: u64, v: u64| mem.write_obj(v, GuestAddress(gpa)).unwrap();
    // Guest tables: PML4 0x1000 -> PDPT 0x2000 -> PD 0x3000.
    let t = PTE_P | PTE_W;
    w(0x1000, 0x2000 | t);
    w(0x2000, 0x3000 | t);
    w(0x3000, 0x4000 | t); // PD[0] -> PT 0x4000: identity 0..2 MiB
    for i in 0..512u64 {
        w(0x4000 + 8 * i, (i << 12) | t);
    }
    w(0x3008, 0x40_0000 | t | PTE_PS); // gva 2M: 2 MiB page at GPA 4M
    w(0x3010, 0x5000 | t); // gva 4M: PT 0x5000
    w(0x5000, 0x60_0000 | t);
    mem.write_slice(GUEST, GuestAddress(0x10_0000)).unwrap();
    w(0x9000 + 14 * 8, 0x10_0100); // trap table: #PF handler
    w(0x40_0000, 0xfeed_f00d);
    w(0x60_0010, 0xabcd);

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
        rip: 0x10_0000,
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
            VcpuExit::IoOut(port, _) if port == EXIT_PORT => {
                match shadow.handle_exit(0).expect("trampoline exit") {
                    Exit::Resume => {}
                    other => panic!("unexpected exit {other:x?}"),
                }
            }
            VcpuExit::Hlt => break,
            other => {
                let msg = format!("{other:?}");
                let r = vcpu.get_regs().unwrap();
                let s = vcpu.get_sregs().unwrap();
                panic!("unexpected KVM exit {msg} after {exits} exits: rip {:#x} rsp {:#x} cr3 {:#x} cr2 {:#x}", r.rip, r.rsp, s.cr3, s.cr2);
            }
        }
    }
    let r = vcpu.get_regs().unwrap();
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
