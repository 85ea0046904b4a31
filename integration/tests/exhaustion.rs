// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Shadow-page exhaustion on `/dev/kvm`: workloads run under shadow paging
//! with a cap of a few dozen shadow pages, far below what their address
//! spaces need, so the MMU reclaims pages (and, for `spaces`, whose 64 roots
//! cannot all fit, drops cached roots) all along. The guest must still
//! complete with results identical to the native run's (the comparison of
//! `differential.rs`), the audit must be clean, and the MMU must report
//! reclaimed pages: without exhaustion these tests fail.
//!
//! These tests need `/dev/kvm`: without it they FAIL (they never skip).

mod common;

use common::{check_same, run, run_on, Mode, DEFAULT_MAX_PAGES};
use shadow_mmu_integration::vm::{PtWrites, RunReport, Workload};

const SEED: u64 = 11;

/// A cap of a few dozen pages: a handful of address spaces' worth.
const CAP: u32 = 32;

/// Runs `workload` natively and shadowed under `cap` pages and requires
/// what `differential.rs` requires (guest success, a clean audit, identical
/// records, checksum and guest page faults), plus exhaustion: the cap was
/// in effect and pages were reclaimed. Returns the shadow run.
fn same_records_capped(workload: Workload, params: &[u64], cap: u32) -> RunReport {
    let native = run(workload, Mode::Native, SEED, params, DEFAULT_MAX_PAGES);
    let shadow = run(
        workload,
        Mode::Shadow(PtWrites::Hypercall),
        SEED,
        params,
        cap,
    );
    let report = check_same(workload, &native, &shadow);
    assert_eq!(
        report.max_pages,
        u64::from(cap),
        "{workload}: the MMU did not get the cap asked for"
    );
    assert!(
        report.stats.pages_in_use <= u64::from(cap),
        "{workload}: {} pages in use over a cap of {cap}",
        report.stats.pages_in_use
    );
    assert!(
        report.stats.reclaimed > 0,
        "{workload}: no page was reclaimed under a cap of {cap}: no exhaustion happened"
    );
    eprintln!(
        "{workload}: {} shadow pages reclaimed under a cap of {cap}",
        report.stats.reclaimed
    );
    shadow
}

/// First touch of 16 MiB (8 leaf tables, the kernel's tables and the
/// prefetched neighbours) under 32 pages.
#[test]
fn touch_under_tiny_cap() {
    same_records_capped(Workload::Touch, &[], CAP);
}

/// 64 address spaces round-robin: their roots alone (64 pinned pages while
/// cached) cannot fit in 32 pages, so reclaim has to drop cached roots.
/// Regression test: a page reused as a root had stale entry writes of its
/// previous life replayed over it by the trampoline, wiping its hole entry
/// (triple fault right after the CR3 load).
#[test]
fn spaces_64_under_tiny_cap() {
    let shadow = same_records_capped(Workload::Spaces, &[64], CAP);
    let stats = shadow.shadow.expect("shadow report").stats;
    assert!(
        stats.roots_built > 64,
        "roots were never rebuilt: {} built",
        stats.roots_built
    );
}

/// Fork-like clone and copy-on-write faults at the default size (20
/// shadow pages without a cap) under 16 pages.
#[test]
fn cow_under_tiny_cap() {
    same_records_capped(Workload::Cow, &[], 16);
}

/// The same under 12 and 8 pages (the least the MMU accepts): the kernel's
/// own text mapping is reclaimed too, so fetching the guest's #PF handler
/// right after a copy-on-write fault is delivered takes a shadow fault,
/// which sets the hardware CR2 to the handler's address. The glue must put
/// the guest's CR2 back (resources/ABI.md); before it did, the guest read
/// the handler's address and stopped with "unexpected exception" (vector
/// 14, error code 0x7, CR2 0x100168 = `exc14`) at every cap from 8 to 15.
#[test]
fn cow_under_caps_12_and_8_keeps_guest_cr2() {
    same_records_capped(Workload::Cow, &[], 12);
    same_records_capped(Workload::Cow, &[], 8);
}

/// Two vCPUs remapping shared pages while the other runs (every remap a
/// remote flush by NMI) under 10 pages: reclaimed pages are reused only
/// after both vCPUs flushed, and the records match native paging.
#[test]
fn smp_under_tiny_cap() {
    same_records_capped(Workload::Smp, &[], 10);
}

/// `spaces` on a VM of two vCPUs, only one of them started, under the
/// least cap the MMU takes: loading a root must be able to reuse the pages
/// the same exit freed (no other vCPU runs to reach them), as on a VM of
/// one vCPU. Regression test: with such pages held back for other vCPUs,
/// the load failed with "no free shadow page for a root".
#[test]
fn spaces_on_two_vcpus_under_the_least_cap() {
    let native = run_on(Workload::Spaces, Mode::Native, 7, &[], DEFAULT_MAX_PAGES, 2);
    let shadow = run_on(
        Workload::Spaces,
        Mode::Shadow(PtWrites::Hypercall),
        7,
        &[],
        8,
        2,
    );
    check_same(Workload::Spaces, &native, &shadow);
}
