// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! What the native-against-shadow tests share.

use shadow_mmu_integration::vm::{
    self, PagingMode, PtWrites, RunReport, VmConfig, VmError, Workload,
};

pub use vm::DEFAULT_MAX_PAGES;

/// How a workload runs: natively, or shadowed with the guest kernel's
/// page-table writes made one way or the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// KVM walks the guest's tables.
    Native,
    /// The CPU walks the tables shadow-mmu built.
    Shadow(PtWrites),
    /// Shadow paging with `Prefetch::Speculative` (page-table writes by
    /// hypercall).
    Speculative,
}

/// The shadow modes every workload runs in (in the differential tests;
/// the exhaustion tests need only one).
#[allow(dead_code)]
pub const SHADOW_MODES: [Mode; 2] = [
    Mode::Shadow(PtWrites::Hypercall),
    Mode::Shadow(PtWrites::Direct),
];

/// Runs `workload` in `mode` with `seed`, leading `params` and a cap of
/// `max_pages` shadow pages; a missing `/dev/kvm` is a failure, never a
/// skip.
pub fn run(workload: Workload, mode: Mode, seed: u64, params: &[u64], max_pages: u32) -> RunReport {
    run_on(
        workload,
        mode,
        seed,
        params,
        max_pages,
        workload.min_vcpus(),
    )
}

/// [`run`] on `vcpus` vCPUs.
pub fn run_on(
    workload: Workload,
    mode: Mode,
    seed: u64,
    params: &[u64],
    max_pages: u32,
    vcpus: u32,
) -> RunReport {
    let (paging, pt_writes) = match mode {
        Mode::Native => (PagingMode::Native, PtWrites::Hypercall),
        Mode::Shadow(w) => (PagingMode::Shadow, w),
        Mode::Speculative => (PagingMode::Shadow, PtWrites::Hypercall),
    };
    let mut cfg = VmConfig::new(workload, paging);
    if mode == Mode::Speculative {
        cfg.prefetch = vm::Prefetch::Speculative;
        // Every accessed bit the MMU sets speculatively, for the tests that
        // tell them from wrong ones (8 bytes each, a few thousand a run).
        cfg.speculative_log = 1 << 20;
    }
    cfg.pt_writes = pt_writes;
    cfg.seed = seed;
    cfg.params[..params.len()].copy_from_slice(params);
    cfg.max_pages = max_pages;
    cfg.vcpus = vcpus;
    match vm::run(&cfg) {
        Ok(r) => r,
        Err(e @ VmError::NoKvm(_)) => {
            panic!("these tests need /dev/kvm and cannot run without it: {e}")
        }
        Err(e) => panic!("{workload} {mode:?} (max {max_pages} shadow pages): {e}"),
    }
}

/// The checks every pair of runs passes: both guests succeeded, only the
/// shadow run has an MMU report, and its audit is clean. Returns that
/// report.
pub fn check_pair<'a>(
    workload: Workload,
    native: &RunReport,
    shadow: &'a RunReport,
) -> &'a vm::ShadowReport {
    for r in [native, shadow] {
        assert_eq!(
            (r.exit_status, r.results.status, r.results.errors),
            (0, 0, 0),
            "{workload} {}: the guest reported a failure; console:\n{}",
            r.paging,
            r.console
        );
        eprintln!("{}", r.summary());
    }
    let report = shadow.shadow.as_ref().expect("shadow runs report the MMU");
    assert_eq!(report.audit, Ok(()), "{workload}: audit after the run");
    eprintln!(
        "{workload} shadow MMU ({} page-table writes, max {} pages, {} emulated): {:?}",
        report.pt_writes, report.max_pages, report.emulated, report.stats
    );
    assert!(native.shadow.is_none());
    report
}

/// [`check_pair`], and the records, checksum and guest page faults equal
/// the native run's.
pub fn check_same<'a>(
    workload: Workload,
    native: &RunReport,
    shadow: &'a RunReport,
) -> &'a vm::ShadowReport {
    let report = check_pair(workload, native, shadow);
    assert_eq!(
        native.results.difference(&shadow.results),
        None,
        "{workload}: native against shadow"
    );
    report
}
