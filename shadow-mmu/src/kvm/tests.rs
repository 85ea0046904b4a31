// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The glue's logic without a vCPU: return chains run through a model of
//! the trampoline's gadgets, vCPU setup, switches caught up with.

use kvm_bindings::kvm_sregs;
use vm_memory::{GuestAddress, GuestMemoryAtomic, GuestMemoryMmap};

use super::chain::{Commands, MAX_INVLPG};
use super::frame::IretFrame;
use super::mailbox::*;
use super::system;
use super::testing::{self, Entry, Ran};
use super::*;
use crate::{Cr0, Cr4, Efer, PagingState, ShadowMmu};

/// A VM over 1 MiB of guest RAM, without KVM: only its hidden region and
/// MMU, which is all the glue's logic touches.
fn shadow_vm() -> ShadowVm {
    shadow_vm_with(1)
}

/// [`shadow_vm`] with `vcpus` vCPUs.
fn shadow_vm_with(vcpus: usize) -> ShadowVm {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    let cfg = ShadowVmConfig {
        hidden_base: 1 << 40,
        first_slot: 1,
        mmu: MmuConfig {
            vcpus,
            ..MmuConfig::default()
        },
    };
    ShadowVm::without_kvm(GuestMemoryAtomic::new(mem), cfg).expect("shadow VM")
}

/// Leaves on vCPU 0's stack what the entry stub leaves at a #PF exit.
fn enter(vm: &ShadowVm, rax: u64, rdx: u64, frame: [u64; 5]) {
    let e = Entry {
        vector: 14,
        error_code: 4,
        cr2: 0xdead_beef,
        rax,
        rdx,
        frame,
    };
    testing::enter(vm, 0, &e);
}

/// Runs vCPU 0's chain (`testing::run_chain`), which must be well formed.
fn run_chain(vm: &ShadowVm) -> Ran {
    testing::run_chain(vm, 0).expect("a well-formed chain")
}

/// 4-level paging on the guest tables at 0x1000.
fn long_mode_guest() -> PagingState {
    PagingState {
        cr0: Cr0::PE | Cr0::PG | Cr0::WP,
        cr3: 0x1000,
        cr4: Cr4::PAE,
        efer: Efer::LME | Efer::LMA | Efer::NXE,
        ..Default::default()
    }
}

/// A VM whose vCPU 0 is set up on the 4-level guest tables at 0x1000.
fn prepared_vm() -> (ShadowVm, PagingState, kvm_sregs) {
    let vm = shadow_vm();
    let guest = long_mode_guest();
    let mut sregs = kvm_sregs::default();
    vm.prepare_vcpu(0, &guest, &mut sregs).expect("prepare");
    (vm, guest, sregs)
}

const FRAME: [u64; 5] = [0x40_1000, 0x23, 0x202, 0x7fff_0000, 0x1b];

fn post(vm: &ShadowVm, cmds: Commands) {
    let mut g = vm.vcpus[0].lock();
    vm.post(&mut g, 0, cmds);
}

#[test]
fn nothing_to_do_resumes_with_the_registers_in_place() {
    let vm = shadow_vm();
    enter(&vm, 0xaaaa, 0xdddd, FRAME);
    post(&vm, Commands::default());
    let ran = run_chain(&vm);
    assert_eq!(
        ran,
        Ran {
            rax: 0xaaaa,
            rdx: 0xdddd,
            frame: FRAME,
            ..Ran::default()
        }
    );
}

#[test]
fn one_operation_fits_below_the_frame() {
    let vm = shadow_vm();
    enter(&vm, 0xaaaa, 0xdddd, FRAME);
    let new_frame = IretFrame {
        rip: 0x1234,
        cs: 0x08,
        rflags: 0x2,
        rsp: 0xffff_8000_0000_1000,
        ss: 0x10,
    };
    let cmds = Commands {
        cr3: Some(0x5000),
        frame: Some(new_frame),
        ..Commands::default()
    };
    post(&vm, cmds);
    let ran = run_chain(&vm);
    assert_eq!(
        ran,
        Ran {
            ops: vec![("cr3", 0x5000)],
            rax: 0xaaaa,
            rdx: 0xdddd,
            frame: new_frame.words(),
            exits_again: 0,
        }
    );
}

#[test]
fn long_lists_take_several_exits_in_order() {
    let vm = shadow_vm();
    enter(&vm, 0xaaaa, 0xdddd, FRAME);
    let touches: Vec<u64> = (0..700).map(|i| HOLE_BASE + 0x20_0000 + 4096 * i).collect();
    let writes: Vec<u64> = (0..1500).map(|i| HOLE_BASE + 0x20_0000 + 8 * i).collect();
    let invlpg: Vec<u64> = (0..3).map(|i| 0x40_0000 + 4096 * i).collect();
    let cmds = Commands {
        touches: touches.clone(),
        writes: writes.clone(),
        invlpg: invlpg.clone(),
        cr4: Some(0x20),
        cr3: Some(0x5000),
        cr2: Some(0x40_0123),
        ..Commands::default()
    };
    post(&vm, cmds);
    let ran = run_chain(&vm);
    let mut want: Vec<(&str, u64)> = touches.iter().map(|&v| ("touch", v)).collect();
    want.extend(writes.iter().map(|&v| ("write", v)));
    want.extend(invlpg.iter().map(|&v| ("invlpg", v)));
    want.extend([("cr4", 0x20), ("cr3", 0x5000), ("cr2", 0x40_0123)]);
    assert_eq!(ran.ops, want);
    assert_eq!((ran.rax, ran.rdx, ran.frame), (0xaaaa, 0xdddd, FRAME));
    // 2,209 operations, 815 to a chain.
    assert_eq!(ran.exits_again, 2);
    assert!(vm.vcpus[0].lock().pending.is_empty());
}

#[test]
fn setting_a_vcpu_up_again_forgets_gates_switches_and_cached_roots() {
    let (vm, guest, mut sregs) = prepared_vm();
    assert_eq!(sregs.idt.base, hole_va(idt(0)));
    // What a previous boot left: a direct #BP gate, a switch not caught
    // up with, a root cache entry for a root that is gone.
    let gate = idt(0) + 16 * u64::from(DIRECT_VECTOR);
    let (lo, hi) = system::guest_gate(DIRECT_VECTOR, 0xffff_8000_0010_0000);
    vm.sys_store(gate, lo);
    vm.sys_store(gate + 8, hi);
    vm.sys_store(vcpu_block(0) + SWITCHED, 0x5000 | 1 << 63);
    vm.sys_store(vcpu_block(0) + ROOTS + 16 * 5, 0x5000 | 1 << 63);
    vm.sys_store(vcpu_block(0) + ROOTS + 16 * 5 + 8, 0xdead_0000);
    vm.prepare_vcpu(0, &guest, &mut sregs)
        .expect("prepare again");
    let want = system::trampoline_gate(DIRECT_VECTOR).expect("a stub");
    assert_eq!((vm.sys_load(gate), vm.sys_load(gate + 8)), want);
    assert_eq!(vm.sys_load(vcpu_block(0) + SWITCHED), 0);
    // Only the new root (CR3 0x1000: slot 1) is cached.
    for slot in 0..ROOT_SLOTS {
        let key = vm.sys_load(vcpu_block(0) + ROOTS + 16 * slot);
        let want = if slot == 1 { 0x1000 | 1 << 63 } else { 0 };
        assert_eq!(key, want, "slot {slot}");
    }
    assert_eq!(
        vm.sys_load(vcpu_block(0) + ROOTS + 16 + 8),
        sregs.cr3,
        "the cached root is the one CR3 holds"
    );
}

#[test]
fn a_switch_made_by_the_trampoline_is_caught_up_with_and_checked() {
    let (vm, _, sregs) = prepared_vm();
    let switched = vcpu_block(0) + SWITCHED;
    let user_ud = [0x40_1000, 0x23, 0x202, 0x7fff_0000, 0x1b];
    let exit_with = |word: u64| {
        vm.sys_store(switched, word);
        enter(&vm, 0, 0, user_ud);
        vm.sys_store(vcpu_block(0) + VCPU_BLOCK_SIZE - stack::VECTOR, 6);
        // No trap table: the #UD itself is unhandled.
        let exit = vm.handle_exit(0).expect("exit");
        assert!(
            matches!(exit, Exit::Unhandled { vector: 6, .. }),
            "{exit:?}"
        );
        assert_eq!(vm.sys_load(switched), 0, "caught up");
        // Whatever the word said, the CPU goes back to the root the MMU
        // holds (the trampoline may have loaded a forged cache slot).
        let root = vm.vcpus[0].lock().root;
        assert!(run_chain(&vm).ops.contains(&("cr3", root)));
        vm.vcpus[0].lock().guest.map(|g| g.cr3)
    };
    // A value guest CPL0 code could forge in the hole: not RAM.
    assert_eq!(exit_with((1 << 40) | 1 << 63), Some(0x1000));
    // A real switch (RAM at 0x2000).
    assert_eq!(exit_with(0x2000 | 1 << 63), Some(0x2000));
    let root = vm.vcpus[0].lock().root;
    assert_ne!(root, sregs.cr3, "the MMU holds the new space's root");
}

#[test]
fn too_many_invalidations_become_a_flush() {
    let vm = shadow_vm();
    enter(&vm, 1, 2, FRAME);
    vm.vcpus[0].lock().root = 0x9000;
    let cmds = Commands {
        invlpg: (0..=MAX_INVLPG as u64).map(|i| 4096 * i).collect(),
        ..Commands::default()
    };
    post(&vm, cmds);
    assert_eq!(run_chain(&vm).ops, vec![("cr3", 0x9000)]);
}

/// Identical page faults reported fixed in a row are bounded: a vCPU whose
/// CPU and MMU disagree about its tables ends with `FaultLoop`, not an
/// endless exchange; any other fault or exit starts the count again.
#[test]
fn identical_faults_in_a_row_are_bounded() {
    use super::vcpu::FaultRepeats;

    let mut r = FaultRepeats::default();
    for _ in 0..FaultRepeats::MAX_FIXED {
        r.note(0x1000, 2, 0x40_0000, true)
            .expect("within the bound");
    }
    assert!(matches!(
        r.note(0x1000, 2, 0x40_0000, true),
        Err(KvmGlueError::FaultLoop {
            gva: 0x1000,
            error_code: 2,
            rip: 0x40_0000,
            faults,
        }) if faults == FaultRepeats::MAX_FIXED + 1
    ));
    // Progress in between: another address, another exit.
    let mut r = FaultRepeats::default();
    for i in 0..4 * FaultRepeats::MAX_FIXED {
        r.note(0x1000 * u64::from(i % 2), 2, 0x40_0000, true)
            .expect("alternating faults");
        r.note(0x1000, 2, 0x40_0000, true).expect("same fault");
        r.reset();
    }
    // Retries (a flush other vCPUs must acknowledge, a page under a small
    // cap) are waits, not loops: not counted, and they do not reset.
    let mut r = FaultRepeats::default();
    for _ in 0..FaultRepeats::MAX_FIXED {
        r.note(0x1000, 2, 0x40_0000, true).expect("fixed");
        r.note(0x1000, 2, 0x40_0000, false).expect("retry");
    }
    assert!(r.note(0x1000, 2, 0x40_0000, true).is_err());
}

/// [`prepared_vm`] with guest tables 0x1000 -> 0x2000 -> 0x3000 -> one
/// 2 MiB page at 0: code, trap table and stack.
fn vm_on_one_large_page() -> ShadowVm {
    use vm_memory::{Bytes, GuestAddressSpace};

    let (vm, _, _) = prepared_vm();
    let mem = vm.mmu().memory().memory();
    let t = crate::pte::PTE_P | crate::pte::PTE_W;
    for (gpa, v) in [
        (0x1000, 0x2000 | t),
        (0x2000, 0x3000 | t),
        (0x3000, t | 1 << 7),
    ] {
        mem.write_obj::<u64>(v, GuestAddress(gpa)).unwrap();
    }
    vm
}

/// A hypercall whose block is not RAM raises #GP at the hypercall
/// instruction, delivered through the guest's trap table on its kernel
/// stack as the CPU would deliver it (the VM goes on).
#[test]
fn a_hypercall_with_a_bad_block_is_a_gp_for_the_guest() {
    use vm_memory::{Bytes, GuestAddressSpace};

    let vm = vm_on_one_large_page();
    let mem = vm.mmu().memory().memory();
    mem.write_slice(&HYPERCALL_INSN, GuestAddress(0x5000))
        .unwrap();
    mem.write_obj::<u64>(0x7000, GuestAddress(0x6000 + 8 * 13))
        .unwrap();
    {
        let mut g = vm.vcpus[0].lock();
        vm.set_trap_table(
            &mut g,
            0,
            0x6000,
            0x9_0000,
            crate::abi::TRAP_TABLE_EXCEPTIONS,
        );
    }
    // RAX names a block that is not 8-byte aligned RAM below 4 GiB.
    let frame = [0x5000, 0x08, 0x202, 0x9_0000, 0x10];
    testing::enter(
        &vm,
        0,
        &Entry {
            vector: 6,
            rax: 0x7_ffff_fff8_0000,
            frame,
            ..Entry::default()
        },
    );
    assert_eq!(vm.handle_exit(0).expect("exit"), Exit::Resume);
    let ran = run_chain(&vm);
    assert_eq!(ran.frame[0], 0x7000, "resumes in the #GP handler");
    assert_eq!(ran.frame[3], 0x9_0000 - 48, "frame and error code pushed");
    let pushed = |i: u64| {
        mem.read_obj::<u64>(GuestAddress(0x9_0000 - 48 + 8 * i))
            .unwrap()
    };
    assert_eq!(pushed(0), 0, "error code");
    assert_eq!(pushed(1), 0x5000, "RIP of the hypercall instruction itself");
}

/// A trap table is hostile input: handlers in the hole (the VMM's code and
/// data) or at non-canonical addresses count as none, as do vectors past the
/// table's length; an interrupt whose vector has no handler becomes the #NP
/// of a not-present gate, and with no #NP handler either the VM stops with
/// an error naming it (never a jump into the hole).
#[test]
fn interrupt_handlers_outside_guest_code_count_as_none() {
    use vm_memory::{Bytes, GuestAddressSpace};
    let vm = vm_on_one_large_page();
    let mem = vm.mmu().memory().memory();
    let handler = |vector: u64, va: u64| {
        mem.write_obj::<u64>(va, GuestAddress(0x6000 + 8 * vector))
            .unwrap()
    };
    handler(0x40, hole_va(TRAMPOLINE)); // into the trampoline
    handler(0x41, 0x8000_0000_0000_1000); // not canonical
    handler(0x42, 0x5000); // a good one, past the table's 0x42 entries
    handler(0x20, 0x5000); // a good one
    {
        let mut g = vm.vcpus[0].lock();
        vm.set_trap_table(&mut g, 0, 0x6000, 0x9_0000, 0x42);
        assert_eq!(g.handlers.get(0x20), 0x5000);
        for v in [0x40, 0x41, 0x42, 0xff] {
            assert_eq!(g.handlers.get(v), 0, "vector {v:#x}");
        }
    }
    let frame = [0x5000, 0x08, 0x202, 0x9_0000, 0x10];
    for vector in [0x40u8, 0x41, 0x42] {
        testing::enter(
            &vm,
            0,
            &Entry {
                vector: u64::from(vector),
                frame,
                ..Entry::default()
            },
        );
        assert_eq!(
            vm.handle_exit(0).expect("exit"),
            Exit::Unhandled {
                vector: crate::arch::vector::NP,
                error_code: (u64::from(vector) << 3) | 0b11,
                rip: 0x5000,
                cr2: 0,
            }
        );
    }
    testing::enter(
        &vm,
        0,
        &Entry {
            vector: 0x20,
            frame,
            ..Entry::default()
        },
    );
    assert_eq!(vm.handle_exit(0).expect("exit"), Exit::Resume);
    let ran = run_chain(&vm);
    assert_eq!(ran.frame[0], 0x5000, "resumes in the handler");
    assert_eq!(ran.frame[3], 0x9_0000 - 40, "a frame without an error code");
    assert_eq!(
        ran.frame[2] & (1 << 9),
        0,
        "IF cleared, as an interrupt gate does"
    );
    assert_eq!(vm.interrupts(), 1);
}

/// A remote flush holds up the vCPU that started it: after a change that
/// other vCPUs may have cached, `flush_wait` says wait until every other
/// running vCPU has acknowledged (here vCPU 1's flush NMI, counted by its
/// handler); of two vCPUs that both changed something, only the one with
/// the newer change waits (the other's own change flushed it). This is how the wait is tested on hosts whose KVM
/// flushes remote TLBs on the trampoline's stores by itself, where no guest
/// could see a missing wait.
#[test]
fn a_remote_flush_holds_up_its_initiator_until_acknowledged() {
    let vm = shadow_vm_with(2);
    let flush_all = || crate::Changes {
        flush_all: true,
        ..crate::Changes::default()
    };
    // With other vCPUs running the flush starts once the trampoline has
    // carried the change's stores out: the exit after them.
    let change = |index: usize| {
        let g = vm.vcpus[index].lock();
        let mut cmds = Commands::default();
        vm.add_changes(&g, index, &mut cmds, flush_all());
        if cmds.publish {
            vm.published(index);
        }
        cmds.publish
    };
    vm.set_running(0, true);
    // Alone: the flush starts at once, and there is nothing to wait for.
    assert!(!change(0));
    assert!(!vm.flush_wait(0));
    vm.set_running(1, true);
    assert!(change(0), "the flush starts after the stores");
    assert!(vm.flush_wait(0), "vCPU 1 has not flushed");
    assert_eq!(vm.vcpus_owing_flush(), vec![1]);
    assert!(vm.flush_wait(0), "still not");
    // vCPU 1's flush NMI: its handler counts the flush in its NMI block.
    vm.flush.nmi[1]
        .lock()
        .replace((0, vm.flush.generation.load(Ordering::Acquire)));
    vm.poke_system(layout::nmi_block(1), 1);
    assert!(!vm.flush_wait(0), "acknowledged");
    assert!(vm.vcpus_owing_flush().is_empty());
    // Both change before either has flushed: no cycle of waits.
    assert!(change(1) && change(0));
    assert!(!vm.flush_wait(1), "vCPU 0's own change flushed it");
    assert!(vm.flush_wait(0), "vCPU 1 runs guest code and owes a flush");
    assert_eq!(vm.vcpus_owing_flush(), vec![1]);
}

/// The trampoline may read guest memory (the `ud2` marker) and switch roots
/// by itself only with one vCPU: with several, another vCPU's exit could
/// take the code page's shadow mapping away between the fetch and the read,
/// and the #PF would land on the IST stack the #UD is using.
#[test]
fn the_root_cache_is_enabled_with_one_vcpu_only() {
    let (one, _, _) = prepared_vm();
    assert_eq!(one.sys_load(vcpu_block(0) + FAST_PATH), 1);
    let two = shadow_vm_with(2);
    let guest = long_mode_guest();
    for index in 0..2 {
        // A forged word is put back at the vCPU's next set-up or exit.
        two.sys_store(vcpu_block(index) + FAST_PATH, 1);
        let mut sregs = kvm_sregs::default();
        two.prepare_vcpu(index, &guest, &mut sregs)
            .expect("prepare");
        assert_eq!(two.sys_load(vcpu_block(index) + FAST_PATH), 0);
    }
}

/// With several vCPUs a shadow page freed at an exit is reused only once
/// the stores that unlinked it have taken effect (the trampoline exits
/// after them) and every other running vCPU has flushed after that: until
/// the trampoline rewrites the entries, the CPU still reaches the page
/// through them, and a page reused meanwhile would mix the old links with
/// new contents. Acknowledgements that come before the stores do not
/// count.
#[test]
fn freed_pages_wait_for_their_unlinking_and_every_flush_after_it() {
    let vm = shadow_vm_with(2);
    let guest = long_mode_guest();
    for index in 0..2 {
        let mut sregs = kvm_sregs::default();
        vm.prepare_vcpu(index, &guest, &mut sregs).expect("prepare");
        vm.set_running(index, true);
    }
    // Guest tables mapping 0x40_0000 (PML4 0x1000, PDPT 0x2000, PD
    // 0x3000, PT 0x4000, page 0x5000; P|W|U|A), and vCPU 0's fault on it
    // builds three shadow pages below the root.
    {
        use vm_memory::{Bytes, GuestAddressSpace};
        let mem = vm.mmu.memory().memory();
        for (at, value) in [
            (0x1000, 0x2027u64),
            (0x2000, 0x3027),
            (0x3010, 0x4027),
            (0x4000, 0x5027),
        ] {
            mem.write_obj(value, GuestAddress(at)).expect("guest table");
        }
    }
    let ec = crate::PfErrorCode::U;
    let (outcome, _) = vm
        .mmu
        .page_fault(0, crate::Gva(0x40_0000), ec)
        .expect("fault");
    assert_eq!(outcome, crate::FaultOutcome::Fixed);
    let pending = || vm.mmu.stats().pages_pending;
    assert_eq!(pending(), 0);
    // vCPU 0 exits, and its exit zaps every shadow page.
    testing::enter(
        &vm,
        0,
        &Entry {
            vector: 14,
            error_code: 4,
            cr2: 0x40_0000,
            rax: 0xaaaa,
            rdx: 0xdddd,
            frame: FRAME,
        },
    );
    vm.take_hold(0);
    {
        let mut g = vm.vcpus[0].lock();
        let mut cmds = Commands::default();
        let changes = vm.mmu.memory_changed();
        vm.add_changes(&g, 0, &mut cmds, changes);
        vm.post(&mut g, 0, cmds);
    }
    let freed = pending();
    assert!(freed > 0, "the zap freed pages");
    // vCPU 1 acknowledges everything there is before vCPU 0's stores ran.
    let generation = vm.flush.generation.load(Ordering::Acquire);
    vm.flush.flushed[1].store(generation, Ordering::Release);
    vm.try_complete_flush();
    assert_eq!(pending(), freed, "the stores have not been carried out");
    // Nor does a flush vCPU 1's own change starts meanwhile, acknowledged
    // by both.
    vm.published(1);
    let generation = vm.flush.generation.load(Ordering::Acquire);
    vm.flush.flushed[0].store(generation, Ordering::Release);
    vm.try_complete_flush();
    assert_eq!(pending(), freed, "held by vCPU 0's unfinished change");
    // The trampoline carries them out and exits; then the return.
    let ran = run_chain(&vm);
    assert_eq!(ran.exits_again, 1, "the exit after the stores");
    assert_eq!(ran.frame, FRAME);
    assert_eq!(pending(), freed, "vCPU 1 has not flushed since");
    assert_eq!(vm.vcpus_owing_flush(), vec![1]);
    assert!(vm.flush_wait(0), "vCPU 0 waits for it");
    // vCPU 1's flush NMI.
    vm.flush.nmi[1]
        .lock()
        .replace((0, vm.flush.generation.load(Ordering::Acquire)));
    vm.poke_system(layout::nmi_block(1), 1);
    assert!(!vm.flush_wait(0));
    assert_eq!(pending(), 0, "released");
}

/// A vCPU that never acknowledges cannot make the glue's list of flush
/// generations grow: past 64 the newest absorbs the next, and the pages
/// all of them cover are released once it does acknowledge.
#[test]
fn unacknowledged_flushes_are_bounded() {
    let vm = shadow_vm_with(2);
    vm.set_running(0, true);
    vm.set_running(1, true);
    for _ in 0..1000 {
        vm.published(0);
    }
    assert_eq!(vm.flush.releases.lock().len(), 64);
    assert_eq!(vm.vcpus_owing_flush(), vec![1]);
    let generation = vm.flush.generation.load(Ordering::Acquire);
    vm.flush.nmi[1].lock().replace((0, generation));
    vm.poke_system(layout::nmi_block(1), 1);
    vm.check_nmi_ack(1);
    assert!(vm.flush.releases.lock().is_empty());
}

/// Guest tables for the dirty fast path: PML4 0x1000, PDPT 0x2000, PD
/// 0x3000, PT 0x4000 mapping gva 0x40_0000.. to frames 0x8_0000.., 16
/// clean pages (P|W|U|A, D clear).
fn clean_table(vm: &ShadowVm) {
    use vm_memory::{Bytes, GuestAddressSpace};
    let mem = vm.mmu.memory().memory();
    for (at, value) in [(0x1000, 0x2027u64), (0x2000, 0x3027), (0x3010, 0x4027)] {
        mem.write_obj(value, GuestAddress(at)).expect("guest table");
    }
    for i in 0..16u64 {
        let pte = (0x8_0000 + (i << 12)) | 0x27;
        mem.write_obj(pte, GuestAddress(0x4000 + 8 * i))
            .expect("guest table");
    }
}

/// A #PF exit of vCPU 0 at `cr2` with `error_code`, served, its chain run.
fn pf_exit(vm: &ShadowVm, cr2: u64, error_code: u64) -> Result<Ran, KvmGlueError> {
    let e = Entry {
        vector: 14,
        error_code,
        cr2,
        rax: 0xaaaa,
        rdx: 0xdddd,
        frame: FRAME,
    };
    testing::enter(vm, 0, &e);
    assert_eq!(vm.handle_exit(0)?, Exit::Resume);
    Ok(run_chain(vm))
}

fn guest_pte(vm: &ShadowVm, i: u64) -> u64 {
    use vm_memory::{Bytes, GuestAddressSpace};
    vm.mmu
        .memory()
        .memory()
        .read_obj(GuestAddress(0x4000 + 8 * i))
        .expect("guest table")
}

/// A user read fault maps the table's clean entries read-only and arms
/// the trampoline with them: the hole maps the guest table in the arm
/// block's window (its entry rewritten by the chain, the old translation
/// dropped). A user write to one of them is then resolved by the #PF entry
/// (its model) without an exit; a supervisor write (SMAP's business) and a
/// write outside the table exit. At the next exit the MMU takes the
/// writable entry over: the audit, which compares the CPU's view with the
/// MMU's, is clean.
#[test]
fn armed_clean_entries_are_taken_over_at_the_next_exit() {
    let (vm, _, _) = prepared_vm();
    clean_table(&vm);
    let ran = pf_exit(&vm, 0x40_0000, 4).expect("read fault");
    let window = hole_va(layout::arm_block(0) + layout::ARM_WINDOW);
    assert!(ran.ops.contains(&("invlpg", window)), "{:x?}", ran.ops);
    assert_eq!(vm.peek_system(vcpu_block(0) + ARM_BASE), 0x40_0000);
    // The #PF gate leads to the fast path while armed, to the stub after.
    let gate = |armed| {
        let (at, low) = system::pf_gate(0, armed);
        vm.peek_system(at) == low
    };
    assert!(gate(true) && !gate(false));
    assert_eq!(
        testing::pf_entry(&vm, 0, 0x40_3000, 3),
        testing::PfEntry::Exited
    );
    assert_eq!(
        testing::pf_entry(&vm, 0, 0x60_3000, 7),
        testing::PfEntry::Exited
    );
    assert_eq!(
        testing::pf_entry(&vm, 0, 0x40_3000, 7),
        testing::PfEntry::Resolved
    );
    assert_eq!(guest_pte(&vm, 3) & crate::pte::PTE_D, crate::pte::PTE_D);
    // Until the next exit, the CPU's view is ahead of the MMU's.
    assert!(vm.mmu.audit().is_err());
    vm.catch_up(0).expect("vCPU 0");
    assert!(gate(false) && !gate(true));
    assert_eq!(vm.mmu.stats().dirty_taken, 1);
    vm.mmu.audit().expect("taken over");
    pf_exit(&vm, 0x40_0000, 4).expect("another exit");
    // Resolved once: the guest entry is dirty now, so it is not armed
    // again.
    assert_eq!(
        testing::pf_entry(&vm, 0, 0x40_3000, 7),
        testing::PfEntry::Exited
    );
}

/// Guest CPL0 code that forges the armed table in the hole (here: the
/// shadow page's address, pointing at the root) gets the trampoline to
/// write where it said, as it could write there itself; the VMM, which
/// never reads the hole's copy, takes nothing over and reports the entry
/// the CPU sees differently as corruption, with no panic.
#[test]
fn a_forged_arming_is_not_taken_over() {
    let (vm, _, sregs) = prepared_vm();
    clean_table(&vm);
    pf_exit(&vm, 0x40_0000, 4).expect("read fault");
    let root = sregs.cr3 - ((1 << 40) + layout::SYSTEM_SIZE);
    vm.poke_system(vcpu_block(0) + ARM_SPT, layout::hole_arena_va(root));
    vm.poke_system(layout::arm_block(0) + layout::ARM_SPTES + 8 * 3, 0);
    assert_eq!(
        testing::pf_entry(&vm, 0, 0x40_3000, 7),
        testing::PfEntry::Resolved
    );
    let _ = pf_exit(&vm, 0x40_0000, 4);
    assert_eq!(vm.mmu.stats().dirty_taken, 0);
    assert!(vm.mmu.audit().is_err());
}

/// A guest kernel that damaged the trampoline's #PF entry so that it pushes
/// an interrupt's vector would have the VMM deliver that interrupt at
/// every fault, for ever: an exit that reports an external interrupt first
/// checks the trampoline's code, and a damaged one stops the VM with the
/// offset of the first byte that differs. An intact one delivers.
#[test]
fn an_interrupt_from_a_damaged_trampoline_stops_the_vm() {
    let vm = vm_on_one_large_page();
    let frame = [0x5000, 0x08, 0x202, 0x9_0000, 0x10];
    let interrupt = Entry {
        vector: 0x20,
        frame,
        ..Entry::default()
    };
    testing::enter(&vm, 0, &interrupt);
    assert!(matches!(vm.handle_exit(0), Ok(Exit::Unhandled { .. })));
    // `push 14` of the #PF entry made `push -1`.
    let at = TRAMPOLINE + PF_ENTRY;
    let word = vm.peek_system(at);
    vm.poke_system(at, (word & !0xff00) | 0xff00);
    testing::enter(&vm, 0, &interrupt);
    match vm.handle_exit(0) {
        Err(KvmGlueError::TrampolineCorrupted { offset }) => {
            assert_eq!(offset as u64, PF_ENTRY + 1)
        }
        other => panic!("{other:?}"),
    }
}
