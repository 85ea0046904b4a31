// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! What costs a VMM exit under shadow paging, counted on `/dev/kvm`: these
//! tests need it and FAIL without it (they never skip).

use shadow_mmu_integration::vm::{self, PagingMode, RunReport, VmConfig, VmError, Workload};

/// Runs `workload` shadowed with leading `params`; the guest must succeed.
fn shadow_run(workload: Workload, params: &[u64]) -> RunReport {
    let mut cfg = VmConfig::new(workload, PagingMode::Shadow);
    cfg.params[..params.len()].copy_from_slice(params);
    match vm::run(&cfg) {
        Ok(r) => {
            assert_eq!((r.exit_status, r.results.errors), (0, 0), "{}", r.console);
            eprintln!("{}", r.summary());
            r
        }
        Err(e @ VmError::NoKvm(_)) => {
            panic!("this test needs /dev/kvm and cannot run without it: {e}")
        }
        Err(e) => panic!("{workload}: {e}"),
    }
}

fn spaces(rounds: u64) -> RunReport {
    shadow_run(Workload::Spaces, &[4, 8, rounds])
}

/// The spaces workload switches address spaces `rounds` times per space in
/// each of its two timed loops, each switch a system call (`int3`) whose
/// handler makes a register-form `LOAD_CR3` hypercall. The system call
/// reaches the guest kernel through a gate the VMM built from its trap
/// table, and the hypercall, for a space whose shadow root is cached, is
/// carried out by the trampoline: more rounds cost no exit at all (the
/// shadow tables of every space stay, so the loops' touches fault no
/// more), and the MMU still ends up knowing where the vCPU is (the audit,
/// and the workload's own checks of every space's data).
#[test]
fn switching_to_a_cached_address_space_costs_no_exit() {
    let few = spaces(5);
    let many = spaces(15);
    assert_eq!(
        many.exits.trampoline, few.exits.trampoline,
        "40 more switches took exits"
    );
    for r in [&few, &many] {
        let shadow = r.shadow.as_ref().expect("shadow report");
        assert_eq!(shadow.audit, Ok(()));
    }
    let faults = |r: &RunReport| r.shadow.as_ref().map(|s| s.stats.fault_no_spte);
    assert_eq!(faults(&few), faults(&many));
}

fn touch(round_trips: u64) -> RunReport {
    // 1 MiB written, 1 pass, 1 MiB demand-paged, nothing read first.
    shadow_run(Workload::Touch, &[1, 1, 1, 0, round_trips])
}

/// The touch workload's calibration makes its last parameter's count of
/// hypercalls of no known number in each form: the block form exits every
/// time, the register form is answered by the trampoline on one vCPU with
/// no exit (the round trip the bench reports as the floor of a shadow
/// fault). 1000 more of each cost exactly 1000 more exits.
#[test]
fn unknown_register_form_hypercalls_cost_no_exit() {
    let few = touch(10);
    let many = touch(1010);
    assert_eq!(
        many.exits.trampoline - few.exits.trampoline,
        1000,
        "exits of 1000 more round trips in each form"
    );
    for r in [&few, &many] {
        assert!(r.results.tsc[9] > 0 && r.results.tsc[10] > 0);
    }
}
