// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Differential tests on `/dev/kvm`: every workload runs with native paging
//! (KVM walks the guest's tables) and with shadow paging (the CPU walks the
//! tables shadow-mmu built) twice, the guest kernel writing its page tables
//! with `MMU_UPDATE` hypercalls and with ordinary stores the VMM emulates;
//! the observable results (values read,
//! faults with vector, error code and CR2, final A/D bits, all recorded by
//! the guest) must be identical; the shadow MMU's audit must be clean at the
//! end. Native execution is the independent reference.
//!
//! These tests need `/dev/kvm`: without it they FAIL (they never skip).

mod common;

use std::collections::BTreeSet;

use common::{check_pair, check_same, run, run_on, Mode, DEFAULT_MAX_PAGES, SHADOW_MODES};
use shadow_mmu::SpeculativeMarks;
use shadow_mmu_integration::vm::{RunReport, Workload};

const SEED: u64 = 11;

/// Runs every mode; returns the native run and the shadow runs after the
/// common checks.
fn all_modes(workload: Workload, seed: u64) -> (RunReport, Vec<RunReport>) {
    let native = run(workload, Mode::Native, seed, &[], DEFAULT_MAX_PAGES);
    let shadow: Vec<RunReport> = SHADOW_MODES
        .iter()
        .map(|&mode| run(workload, mode, seed, &[], DEFAULT_MAX_PAGES))
        .collect();
    for s in &shadow {
        check_pair(workload, &native, s);
    }
    (native, shadow)
}

/// Runs every mode, requires records identical to native; returns the
/// shadow runs.
fn same_records(workload: Workload, seed: u64) -> Vec<RunReport> {
    let native = run(workload, Mode::Native, seed, &[], DEFAULT_MAX_PAGES);
    SHADOW_MODES
        .iter()
        .map(|&mode| {
            let shadow = run(workload, mode, seed, &[], DEFAULT_MAX_PAGES);
            check_same(workload, &native, &shadow);
            shadow
        })
        .collect()
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

/// Live leaf entries of shadowed (possibly unsync) tables rewritten and
/// invalidated with INVLPG alone, then read, written and executed through:
/// a translation that survived the INVLPG would read another frame's
/// marker or fault differently.
#[test]
fn remap() {
    same_records(Workload::Remap, SEED);
}

/// Two vCPUs remapping pages the other uses: shadow changes reach the other
/// vCPU's TLB through the flush NMI.
#[test]
fn smp() {
    for shadow in same_records(Workload::Smp, SEED) {
        let report = shadow.shadow.expect("shadow report");
        eprintln!(
            "smp ({} page-table writes): {} remote flushes by NMI",
            report.pt_writes, report.nmi_flushes
        );
        assert!(
            report.nmi_flushes > 0,
            "the other vCPU was never flushed by NMI"
        );
    }
}

/// The smp workload on 4 and 8 vCPUs (this host has 2 CPUs: correctness,
/// not speed): every vCPU remaps pages the others use, and the results must
/// be the native ones, in both page-table write styles.
#[test]
fn smp_on_4_and_8_vcpus() {
    for vcpus in [4, 8] {
        let native = run_on(
            Workload::Smp,
            Mode::Native,
            SEED,
            &[],
            DEFAULT_MAX_PAGES,
            vcpus,
        );
        for mode in SHADOW_MODES {
            let shadow = run_on(Workload::Smp, mode, SEED, &[], DEFAULT_MAX_PAGES, vcpus);
            let report = check_same(Workload::Smp, &native, &shadow);
            eprintln!(
                "smp on {vcpus} vCPUs ({} page-table writes): {} remote flushes by NMI",
                report.pt_writes, report.nmi_flushes
            );
            assert!(report.nmi_flushes > 0, "no vCPU was ever flushed by NMI");
        }
    }
}

/// Local APIC timer interrupts preempt user tasks, each in an address space
/// of its own: the tasks' hashes (their registers and memory across every
/// preemption) must be the native ones. The interrupt counts depend on
/// timing: the guest checks them against bounds itself (its errors), and
/// here every tick the guest counted must be one the VMM delivered (none
/// lost, none twice).
#[test]
fn timer() {
    for shadow in same_records(Workload::Timer, SEED) {
        let irq = shadow.results.interrupts;
        let report = shadow.shadow.expect("shadow report");
        eprintln!(
            "timer ({} page-table writes): {irq:?}, {} delivered by the VMM",
            report.pt_writes, report.interrupts
        );
        assert!(irq.ticks >= 10, "{irq:?}");
        assert!(irq.kernel_ticks >= 1, "{irq:?}");
        assert!(irq.switches >= 2, "{irq:?}");
        assert_eq!(report.interrupts, irq.ticks, "ticks the VMM delivered");
    }
}

/// The sampled access matrix: 20 000 cases per seed, each recording fault
/// or not, the exact error code and the resulting A/D bits; two seeds.
#[test]
fn access_matrix() {
    let mut cases = 0;
    for seed in [SEED, 0x5eed] {
        let (native, shadow) = all_modes(Workload::Access, seed);
        for s in &shadow {
            assert_eq!(native.results.records, s.results.records, "seed {seed}");
        }
        cases += native.results.records.len();
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
    let (native, shadow) = all_modes(Workload::Hostile, SEED);
    for shadow in &shadow {
        hostile_differences(&native.results.records, &shadow.results.records);
    }
}

fn hostile_differences(n: &[u64], s: &[u64]) {
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

/// The native run of `workload` with `params`, and its run under
/// speculative prefetch.
fn native_and_speculative(workload: Workload, params: &[u64]) -> (RunReport, RunReport) {
    let native = run(workload, Mode::Native, SEED, params, DEFAULT_MAX_PAGES);
    let shadow = run(workload, Mode::Speculative, SEED, params, DEFAULT_MAX_PAGES);
    (native, shadow)
}

/// Checks the accessed bits a speculative run shows beyond native's against
/// the MMU's log, which is consumed in order: each part's entries must be
/// found in it after the previous part's (an A bit set without a log entry,
/// or logged only before an earlier part, fails). At least one such bit
/// must have been seen, or nothing was checked.
fn extra_accessed_bits_logged(
    workload: Workload,
    marks: &SpeculativeMarks,
    parts: Vec<(String, BTreeSet<u64>)>,
) {
    assert_eq!(marks.dropped, 0, "the log overflowed");
    let mut log = marks.entries.iter().map(|g| g.0);
    let mut total = 0;
    for (part, mut extra) in parts {
        total += extra.len();
        while !extra.is_empty() {
            let Some(e) = log.next() else {
                panic!("{part}: A set in entries {extra:#x?} the MMU never logged");
            };
            extra.remove(&e);
        }
    }
    eprintln!(
        "{workload}, speculative: {total} accessed bits beyond native's, {} logged",
        marks.entries.len()
    );
    assert!(
        total > 0,
        "no speculative accessed bit: nothing was checked"
    );
}

/// `Prefetch::Speculative`: a fault also maps never-accessed neighbours,
/// setting their A bit as a speculating CPU may. Every workload whose
/// records hold no A bits of entries it did not access must be identical
/// to native (values, faults with vector, error code and CR2, D bits), and
/// first touches by reads (`read-mib`) must map whole tables at once.
/// `adbits`, which records the A bits of entries it never accessed, is
/// [`adbits_speculative`].
#[test]
fn speculative_prefetch() {
    for workload in [
        Workload::Touch,
        Workload::Spaces,
        Workload::Cow,
        Workload::Huge,
        Workload::Remap,
        Workload::Smp,
    ] {
        let params: &[u64] = if workload == Workload::Touch {
            // 16 MiB written, 4 passes, 2 MiB demand-paged, 16 MiB read.
            &[16, 4, 2, 16]
        } else {
            &[]
        };
        let native = run(workload, Mode::Native, SEED, params, DEFAULT_MAX_PAGES);
        let shadow = run(workload, Mode::Speculative, SEED, params, DEFAULT_MAX_PAGES);
        let report = check_same(workload, &native, &shadow);
        assert_eq!(report.speculative_marks.dropped, 0);
        if workload == Workload::Touch {
            let st = report.stats;
            eprintln!(
                "touch, speculative: {} prefetched, {} of them speculatively, {} faults without an SPTE",
                st.prefetched, st.prefetched_speculative, st.fault_no_spte
            );
            // 32 MiB read or written first, 8192 pages: one fault per
            // table of 512 maps the rest.
            assert!(st.prefetched_speculative >= 8000, "{st:?}");
        }
    }
    let native = run(
        Workload::Hostile,
        Mode::Native,
        SEED,
        &[],
        DEFAULT_MAX_PAGES,
    );
    let shadow = run(
        Workload::Hostile,
        Mode::Speculative,
        SEED,
        &[],
        DEFAULT_MAX_PAGES,
    );
    check_pair(Workload::Hostile, &native, &shadow);
    hostile_differences(&native.results.records, &shadow.results.records);
}

/// `adbits` with speculative prefetch: every round clears A and D in 256
/// PTEs, reads or writes a random subset, and records the A/D bits the
/// guest then sees. The values read, the faults and every D bit must be
/// native's; an A bit native does not have is allowed only where the MMU's
/// log says it set that entry's A speculatively, after the rounds before
/// (the log is in order, so each round consumes its part of it: an A bit
/// set without a log entry, or one logged only in an earlier round, fails).
/// The entries' addresses come from the guest (`SYS_READ_PTES` level 3).
#[test]
fn adbits_speculative() {
    // 256 pages, 8 rounds, speculative accessed bits allowed (parameter 3).
    let (native, shadow) = native_and_speculative(Workload::Adbits, &[256, 8, 1]);
    let report = check_pair(Workload::Adbits, &native, &shadow);
    assert_eq!(native.results.faults, shadow.results.faults);
    let (n, s) = (&native.results.records, &shadow.results.records);
    assert_eq!(n.len(), s.len());
    let pages = n[0] as usize;
    let rounds = n[1] as usize;
    assert_eq!((pages, rounds), (256, 8));
    let entries = &n[2..2 + pages];
    assert_eq!(entries, &s[2..2 + pages], "entry addresses");
    let byte = |words: &[u64], i: usize| (words[i / 8] >> (8 * (i % 8))) as u8;
    const PTE_A: u8 = 1 << 5;
    let mut at = 2 + pages;
    let mut parts = Vec::new();
    for round in 0..rounds {
        assert_eq!(s[at], n[at], "round {round}: sum of reads");
        let got = (
            &n[at + 1..at + 1 + pages / 8],
            &s[at + 1..at + 1 + pages / 8],
        );
        let exp = at + 1 + pages / 8..at + 1 + pages / 4;
        assert_eq!(n[exp.clone()], s[exp], "round {round}: expected bits");
        let mut extra = BTreeSet::new();
        for (i, &entry) in entries.iter().enumerate() {
            let (bn, bs) = (byte(got.0, i), byte(got.1, i));
            if bn == bs {
                continue;
            }
            assert!(
                bn & PTE_A == 0 && bs == bn | PTE_A,
                "round {round}, page {i}: PTE bits {bs:#x}, native {bn:#x}"
            );
            extra.insert(entry);
        }
        parts.push((format!("round {round}"), extra));
        at += 1 + pages / 4;
    }
    assert_eq!(at, n.len());
    extra_accessed_bits_logged(Workload::Adbits, &report.speculative_marks, parts);
}

/// The access matrix with speculative prefetch: fault or not, error codes
/// and PDE bits must be native's, and so must every PTE bit but A; an A bit
/// native does not have is allowed only in a PTE the MMU logged setting,
/// batch by batch in order (each batch of 64 cases rewrites the PT, A
/// clear, and records the bits after its accesses). Cases whose own walk
/// sets A natively show no difference at all.
#[test]
fn access_speculative() {
    /// Cases per batch (`ACC_SLOTS` in the guest's `guest.h`).
    const SLOTS: usize = 64;
    const CASES: usize = 20_000;
    let (native, shadow) = native_and_speculative(Workload::Access, &[CASES as u64, 1]);
    let report = check_pair(Workload::Access, &native, &shadow);
    let (n, s) = (&native.results.records, &shadow.results.records);
    assert_eq!((n.len(), s.len()), (CASES + 1, CASES + 1));
    let pt = n[CASES];
    assert_eq!(s[CASES], pt, "the PT's address");
    const PTE_A: u64 = 1 << (48 + 5);
    let mut parts = Vec::new();
    for combo in 0..16 {
        let end = CASES * (combo + 1) / 16;
        for first in (CASES * combo / 16..end).step_by(SLOTS) {
            let mut extra = BTreeSet::new();
            for (slot, i) in (first..end.min(first + SLOTS)).enumerate() {
                if n[i] == s[i] {
                    continue;
                }
                assert!(
                    n[i] & PTE_A == 0 && s[i] == n[i] | PTE_A,
                    "case {i}: {:#x}, native {:#x}",
                    s[i],
                    n[i]
                );
                extra.insert(pt + 8 * slot as u64);
            }
            parts.push((format!("the batch from case {first}"), extra));
        }
    }
    extra_accessed_bits_logged(Workload::Access, &report.speculative_marks, parts);
}
