// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Differential tests on `/dev/kvm`: every workload runs with native paging
//! (KVM walks the guest's tables) and with shadow paging (the CPU walks the
//! tables shadow-mmu built), and the observable results (values read,
//! faults with vector, error code and CR2, final A/D bits, all recorded by
//! the guest) must be identical; the shadow MMU's audit must be clean at the
//! end. Native execution is the independent reference.
//!
//! These tests need `/dev/kvm`: without it they FAIL (they never skip).

mod common;

use common::{check_pair, check_same, run, DEFAULT_MAX_PAGES};
use shadow_mmu_integration::vm::{PagingMode, RunReport, Workload};

const SEED: u64 = 11;

/// Runs both modes; returns (native, shadow) after the common checks.
fn both(workload: Workload, seed: u64) -> (RunReport, RunReport) {
    let native = run(workload, PagingMode::Native, seed, &[], DEFAULT_MAX_PAGES);
    let shadow = run(workload, PagingMode::Shadow, seed, &[], DEFAULT_MAX_PAGES);
    check_pair(workload, &native, &shadow);
    (native, shadow)
}

/// Runs both modes, requires identical records; returns the shadow run.
fn same_records(workload: Workload, seed: u64) -> RunReport {
    let native = run(workload, PagingMode::Native, seed, &[], DEFAULT_MAX_PAGES);
    let shadow = run(workload, PagingMode::Shadow, seed, &[], DEFAULT_MAX_PAGES);
    check_same(workload, &native, &shadow);
    shadow
}

#[test]
fn touch() {
    same_records(Workload::Touch, SEED);
}

#[test]
fn spaces() {
    same_records(Workload::Spaces, SEED);
}

#[test]
fn cow() {
    same_records(Workload::Cow, SEED);
}

#[test]
fn adbits() {
    same_records(Workload::Adbits, SEED);
}

#[test]
fn huge() {
    same_records(Workload::Huge, SEED);
}

/// Two vCPUs remapping pages the other uses: shadow changes reach the other
/// vCPU's TLB through the flush NMI.
#[test]
fn smp() {
    let shadow = same_records(Workload::Smp, SEED);
    let report = shadow.shadow.expect("shadow report");
    eprintln!("smp: {} remote flushes by NMI", report.nmi_flushes);
    assert!(
        report.nmi_flushes > 0,
        "the other vCPU was never flushed by NMI"
    );
}

/// The sampled access matrix: 20 000 cases per seed, each recording fault
/// or not, the exact error code and the resulting A/D bits; two seeds.
#[test]
fn access_matrix() {
    let mut cases = 0;
    for seed in [SEED, 0x5eed] {
        let (native, shadow) = both(Workload::Access, seed);
        assert_eq!(
            native.results.records, shadow.results.records,
            "seed {seed}"
        );
        cases += shadow.results.records.len();
    }
    eprintln!("access: {cases} sampled cases identical under native and shadow paging");
    assert!(cases >= 20_000);
}

/// Hostile page tables and hypercalls: the VMM keeps running and the guest
/// completes. Native and shadow legitimately differ where the guest reaches
/// for the VMM's own things, and only there:
/// * records 0-1: a user mapping inside the hole (PML4 slot 510) reads the
///   page natively; under shadow paging the hole is refused with a #PF;
/// * records 18-25: MMU hypercalls (LOAD_CR3 and the rest) are "not
///   available" (-3) natively; under shadow paging garbage arguments get
///   "invalid" (-2), and INVLPG of a non-canonical address is a no-op (0).
#[test]
fn hostile() {
    let (native, shadow) = both(Workload::Hostile, SEED);
    let (n, s) = (&native.results.records, &shadow.results.records);
    assert_eq!(n.len(), s.len());
    for i in (2..18).chain(26..n.len()) {
        assert_eq!(n[i], s[i], "record {i}");
    }
    assert_eq!(
        n[1], 0x686f_6c65_5f6d_6170,
        "native reads the page mapped in the hole"
    );
    assert_ne!(s[0], n[0], "shadow: the hole access faulted");
    assert_eq!(s[1], 0, "shadow: nothing of the hole was read");
    for (i, &v) in s.iter().enumerate().take(26).skip(18) {
        let want = if i == 20 { 0 } else { -2i64 as u64 };
        assert_eq!(v, want, "shadow hypercall record {i}");
        assert_eq!(n[i], -3i64 as u64, "native hypercall record {i}");
    }
}
