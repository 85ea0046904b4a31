// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! What costs a VMM exit under shadow paging, counted on `/dev/kvm`: these
//! tests need it and FAIL without it (they never skip).

use shadow_mmu_integration::vm::{self, PagingMode, RunReport, VmConfig, VmError, Workload};

fn spaces(rounds: u64) -> RunReport {
    let mut cfg = VmConfig::new(Workload::Spaces, PagingMode::Shadow);
    cfg.params[..3].copy_from_slice(&[4, 8, rounds]);
    match vm::run(&cfg) {
        Ok(r) => {
            assert_eq!((r.exit_status, r.results.errors), (0, 0), "{}", r.console);
            eprintln!("{}", r.summary());
            r
        }
        Err(e @ VmError::NoKvm(_)) => {
            panic!("this test needs /dev/kvm and cannot run without it: {e}")
        }
        Err(e) => panic!("spaces: {e}"),
    }
}

/// The spaces workload switches address spaces `rounds` times per space in
/// each of its two timed loops, each switch a system call (`int3`) whose
/// handler makes one `LOAD_CR3` hypercall. The system call reaches the
/// guest kernel through a gate the VMM built from its trap table, so a
/// switch costs exactly one exit (the hypercall); the shadow tables of
/// every space stay, so the loops' touches fault no more.
#[test]
fn a_system_call_costs_no_exit() {
    let few = spaces(5);
    let many = spaces(15);
    let switches = 2 * (15 - 5) * 4;
    let exits = many.exits.trampoline - few.exits.trampoline;
    assert_eq!(
        exits, switches,
        "{exits} more trampoline exits for {switches} more switches"
    );
    let faults = |r: &RunReport| r.shadow.as_ref().map(|s| s.stats.fault_no_spte);
    assert_eq!(faults(&few), faults(&many));
}
