// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Many vCPU threads on one `Mmu`.
//!
//! Both tests also run under Miri (`scripts/miri.sh`), which checks the
//! interleavings it explores for data races and undefined behaviour; there
//! the iteration counts are cut so that a run takes minutes, not days.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

use common::*;
use shadow_mmu::{GuestAddress, Gva, Mmu, MmuConfig, ShadowMmu};

/// PML4 0x1000 -> PDPT 0x2000 -> PD 0x3000 -> PT 0x4000 + 0x1000 * pd_index.
fn shared_space(m: &Mmu, pts: u64) {
    w64(m, 0x1000, 0x2000 | UPPER);
    w64(m, 0x2000, 0x3000 | UPPER);
    for p in 0..pts {
        let pt = 0x4000 + (p << 12);
        w64(m, 0x3000 + 8 * p, pt | UPPER);
        for i in 0..512 {
            w64(m, pt + 8 * i, (0x10_0000 + ((p * 512 + i) << 12)) | LEAF_RW);
        }
    }
}

/// The race an INVLPG that prefaults would reintroduce: INVLPG on one vCPU while another
/// rewrites the guest PTE (through emulation, as the PT is write-protected)
/// to a different frame. INVLPG must never install the translation it read
/// before the rewrite, so right after each rewrite no shadow entry may map
/// the old frame.
#[test]
fn invlpg_races_pte_rewrite() {
    let m = Arc::new(mmu_with(MmuConfig {
        vcpus: 2,
        ..MmuConfig::default()
    }));
    shared_space(&m, 1);
    let s = long_mode(0x1000);
    load(&m, 0, &s);
    load(&m, 1, &s);
    const GVA: u64 = 0x3000;
    const FRAMES: [u64; 2] = [0x20_0000, 0x30_0000];
    cpu_access(&m, 1, &s, GVA, rd(true));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let invalidator = {
        let (m, stop, done) = (m.clone(), stop.clone(), done.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                apply(&m, m.invlpg(0, Gva(GVA)).unwrap());
                let got = cpu_access(&m, 0, &s, GVA, rd(true));
                assert!(matches!(got, Cpu::Done(f) if FRAMES.contains(&f) || f == 0x10_3000));
                done.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    // The rewrites go on until the invalidator, however the threads are
    // scheduled, has raced them a number of times.
    const ROUNDS: u64 = if cfg!(miri) { 40 } else { 20_000 };
    const RACED: u64 = ROUNDS / 20;
    let mut round = 0;
    while round < ROUNDS || done.load(Ordering::Relaxed) < RACED {
        let new = FRAMES[(round % 2) as usize];
        let old = FRAMES[((round + 1) % 2) as usize];
        w64(&m, 0x4000 + 8 * 3, new | LEAF_RW | A);
        if m.is_write_protected(shadow_mmu::Gfn(4)) {
            apply(&m, m.track_write(GuestAddress(0x4000 + 8 * 3), 8));
        } else {
            // Not shadowed (yet): the guest's own INVLPG covers its vCPU.
            apply(&m, m.invlpg(1, Gva(GVA)).unwrap());
        }
        for vcpu in 0..2 {
            if let Some((spa, _)) = m.shadow_translate(vcpu, Gva(GVA)) {
                assert_ne!(spa, old, "round {round}: stale translation on vCPU {vcpu}");
            }
        }
        round += 1;
    }
    stop.store(true, Ordering::Relaxed);
    invalidator.join().unwrap();
    m.audit().unwrap();
}

/// Eight vCPU threads mixing every operation on shared and private tables,
/// then the audit.
#[test]
fn eight_threads_mixed_operations() {
    const THREADS: usize = 8;
    const ITERATIONS: usize = if cfg!(miri) { 40 } else { 3000 };
    let m = Arc::new(mmu_with(MmuConfig {
        vcpus: THREADS,
        max_pages: 64,
        ..MmuConfig::default()
    }));
    shared_space(&m, THREADS as u64);
    let s = long_mode(0x1000);
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let m = m.clone();
            thread::spawn(move || {
                load(&m, t, &s);
                let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ t as u64;
                for _ in 0..ITERATIONS {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // Each thread edits its own PT, reads everyone's.
                    let pt = (x >> 8) % THREADS as u64;
                    let i = (x >> 16) % 64;
                    let gva = (pt << 21) | (i << 12);
                    match x % 16 {
                        0..=8 => {
                            let w = x & 0x100 != 0;
                            let got =
                                cpu_access(&m, t, &s, gva, if w { wr(true) } else { rd(true) });
                            assert!(matches!(got, Cpu::Done(_) | Cpu::Fault(_)), "{got:?}");
                        }
                        9 | 10 => {
                            let own = 0x4000 + ((t as u64) << 12) + 8 * i;
                            let frame = 0x10_0000 + (((x >> 24) % 4096) << 12);
                            let flags = if x & 0x200 != 0 {
                                LEAF_RW
                            } else {
                                LEAF_RW & !2
                            };
                            w64(&m, own, frame | flags);
                            if m.is_write_protected(shadow_mmu::Gfn(own >> 12)) {
                                apply(&m, m.track_write(GuestAddress(own), 8));
                            } else {
                                apply(&m, m.flush_tlb(t).unwrap());
                            }
                        }
                        11 => apply(&m, m.invlpg(t, Gva(gva)).unwrap()),
                        12 => apply(&m, m.flush_tlb(t).unwrap()),
                        13 => {
                            load(&m, t, &s);
                        }
                        14 => {
                            let _ = m.gva_to_gpa(t, Gva(gva), rd(true));
                        }
                        _ => {
                            if x & 0xff00 == 0 {
                                apply(&m, m.memory_changed());
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    // Concurrent edits followed by each editor's own flush leave every
    // table synced once all vCPUs flush.
    for t in 0..THREADS {
        apply(&m, m.flush_tlb(t).unwrap());
    }
    m.audit().unwrap();
    let st = m.stats();
    assert!(st.pages_in_use <= 64);
    eprintln!("stress stats: {st:?}");
}
