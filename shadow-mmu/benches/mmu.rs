// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Shadow MMU costs in the VMM: one shadow page fault, INVLPG, the sync of
//! an unsync page table, shadow memory per GiB of mapped guest memory, the
//! prefetch-window trade-off and vCPU-thread scaling.
//!
//! `cargo bench -p shadow-mmu --bench mmu` runs the criterion benchmarks,
//! then prints the reports that are not a single timing (memory, prefetch
//! sweep, threads). A filter argument selects benchmarks as usual; the
//! reports run when the filter is absent or matches their names
//! (`report/memory`, `report/prefetch-sweep`, `report/threads`; `report`
//! selects all three). Under `cargo test` every part runs once,
//! small.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use shadow_mmu::pte::{PTE_A, PTE_D, PTE_P, PTE_PS, PTE_U, PTE_W};
use shadow_mmu::spt::ShadowPage;
use shadow_mmu::{
    Changes, Cr0, Cr4, Efer, FaultOutcome, GuestAddress, Gva, Mmu, MmuConfig, PagingState,
    PfErrorCode, ShadowMmu,
};
use vm_memory::{Bytes, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};

/// Counts the bytes the benchmark's heap holds, to measure the MMU's
/// bookkeeping (the arena and guest memory are mappings of their own and
/// are not counted).
struct CountingAlloc;

static HEAP_BYTES: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees hold; the counter is only arithmetic.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `alloc`'s contract.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            HEAP_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `alloc_zeroed`'s
        // contract.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            HEAP_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is; `ptr` came from this allocator, that is
        // from `System`, with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        HEAP_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is; `ptr` came from `System` with `layout`.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            HEAP_BYTES.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        p
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const PAGE: u64 = 4 * KIB;

/// Upper-level guest entries.
const UPPER: u64 = PTE_P | PTE_W | PTE_U | PTE_A;
/// A user, writable, accessed and dirty guest leaf.
const LEAF: u64 = PTE_P | PTE_W | PTE_U | PTE_A | PTE_D;
/// A user read.
const USER_READ: PfErrorCode = PfErrorCode::U;

/// A 4-level guest: guest-virtual `[0, data)` maps guest-physical
/// `[0, data)` one to one, with 4 KiB or 2 MiB pages; the tables live
/// above the data, one PML4, one PDPT, a PD per GiB and a PT per 2 MiB.
struct Guest {
    mmu: Mmu,
    state: PagingState,
    data: u64,
}

impl Guest {
    fn pml4(&self) -> u64 {
        self.data
    }

    fn pdpt(&self) -> u64 {
        self.data + PAGE
    }

    fn pd(&self, gib: u64) -> u64 {
        self.data + 2 * PAGE + gib * PAGE
    }

    /// The PT of the 2 MiB at `gva`.
    fn pt(&self, gva: u64) -> u64 {
        let pds = self.data.div_ceil(GIB);
        self.pd(pds) + (gva >> 21) * PAGE
    }

    /// The guest entry that maps the 4 KiB page at `gva`.
    fn pte(&self, gva: u64) -> u64 {
        self.pt(gva) + ((gva >> 12) & 511) * 8
    }

    /// Builds the guest and loads it on every vCPU. `leaf` holds the flags
    /// of every 4 KiB PTE, or `None` for 2 MiB pages.
    fn new(data: u64, leaf: Option<u64>, config: MmuConfig) -> Guest {
        assert!(data.is_multiple_of(2 * MIB) && data <= 512 * GIB);
        let vcpus = config.vcpus;
        let pds = data.div_ceil(GIB);
        let pts = if leaf.is_some() { data >> 21 } else { 0 };
        let tables = (2 + pds + pts) * PAGE;
        let ram = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), (data + tables) as usize)])
            .expect("guest RAM");
        let mmu = Mmu::new(GuestMemoryAtomic::new(ram), config).expect("mmu");
        let state = PagingState {
            cr0: Cr0::PE | Cr0::PG | Cr0::WP,
            cr3: data,
            cr4: Cr4::PAE,
            efer: Efer::LME | Efer::LMA | Efer::NXE,
            ..Default::default()
        };
        let g = Guest { mmu, state, data };
        g.write(g.pml4(), g.pdpt() | UPPER);
        for gib in 0..pds {
            g.write(g.pdpt() + 8 * gib, g.pd(gib) | UPPER);
        }
        for two_mib in 0..data >> 21 {
            let gva = two_mib << 21;
            let pde = g.pd(gva >> 30) + 8 * ((gva >> 21) & 511);
            match leaf {
                Some(flags) => {
                    g.write(pde, g.pt(gva) | UPPER);
                    for i in 0..512 {
                        g.write(g.pt(gva) + 8 * i, (gva + i * PAGE) | flags);
                    }
                }
                None => g.write(pde, gva | LEAF | PTE_PS),
            }
        }
        for vcpu in 0..vcpus {
            let (_, c) = g.mmu.load_paging_state(vcpu, &g.state).expect("CR3 load");
            g.apply(c);
        }
        g
    }

    fn write(&self, gpa: u64, v: u64) {
        self.mmu
            .memory()
            .memory()
            .write_obj(v, GuestAddress(gpa))
            .expect("guest write");
    }

    fn read(&self, gpa: u64) -> u64 {
        self.mmu
            .memory()
            .memory()
            .read_obj(GuestAddress(gpa))
            .expect("guest read")
    }

    /// What the VMM does with an operation's changes when no CPU caches
    /// anything: flushes complete at once.
    fn apply(&self, c: Changes) {
        if c.flush_all {
            self.mmu.flush_completed();
        }
    }

    /// A shadow page fault on `vcpu` that must map `gva`.
    #[inline]
    fn fault(&self, vcpu: usize, gva: u64, ec: PfErrorCode) {
        let (outcome, c) = self.mmu.page_fault(vcpu, Gva(gva), ec).expect("fault");
        assert_eq!(outcome, FaultOutcome::Fixed, "fault at {gva:#x}");
        self.apply(c);
    }

    fn invlpg(&self, vcpu: usize, gva: u64) {
        let c = self.mmu.invlpg(vcpu, Gva(gva)).expect("invlpg");
        self.apply(c);
    }

    fn mapped(&self, vcpu: usize, gva: u64) -> bool {
        self.mmu.shadow_translate(vcpu, Gva(gva)).is_some()
    }
}

/// Whether this run measures (`cargo bench`) rather than checks that the
/// benchmarks work (`cargo test`).
fn measuring() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn config(prefetch_window: usize) -> MmuConfig {
    MmuConfig {
        prefetch_window,
        ..MmuConfig::default()
    }
}

/// A guest of `data` bytes of 4 KiB pages whose shadow pages all exist:
/// one page of every PT was faulted in and dropped again.
fn warm_guest(data: u64, leaf: u64, window: usize) -> Guest {
    let g = Guest::new(data, Some(leaf), config(window));
    for pt in 0..data >> 21 {
        g.fault(0, pt << 21, USER_READ);
    }
    for gva in (0..data).step_by(PAGE as usize) {
        g.invlpg(0, gva);
        // Undo the walks' accessed bits.
        g.write(g.pte(gva), gva | leaf);
    }
    g
}

/// `fault/4-level 4K/...`: one `page_fault` for a page with no shadow entry,
/// every shadow table above it present (256 MiB of distinct frames unless
/// the name says otherwise). Faults walk the data region in order; between
/// passes (not timed) every entry is dropped again and the guest's accessed
/// bits are reset to `leaf`'s.
fn bench_fault(c: &mut Criterion) {
    let big = if measuring() { 256 * MIB } else { 4 * MIB };
    for (name, data, window, leaf) in [
        // No prefetch; the guest entries are accessed, so the walk sets no
        // A bit.
        ("prefetch=1, A=1", big, 1, LEAF),
        // The same in a region 32 times smaller: a smaller reverse map and
        // fewer shadow pages, so fewer cache misses.
        ("prefetch=1, A=1, 8 MiB region", 8 * MIB, 1, LEAF),
        // No prefetch; the walk sets A with a compare-exchange.
        ("prefetch=1, A=0", big, 1, LEAF & !PTE_A),
        // A 512-entry prefetch scan that maps nothing: no neighbour was
        // accessed.
        ("prefetch=512, A=0 (scan, maps 0)", big, 512, LEAF & !PTE_A),
    ] {
        let pages = data / PAGE;
        let g = warm_guest(data, leaf, window);
        let before = g.mmu.stats();
        let mut next = 0u64;
        let mut measured = 0u64;
        c.bench_function(&format!("fault/4-level 4K/{name}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let batch = left.min(pages - next);
                    let start = Instant::now();
                    for i in next..next + batch {
                        g.fault(0, i * PAGE, USER_READ);
                    }
                    total += start.elapsed();
                    left -= batch;
                    measured += batch;
                    next += batch;
                    if next == pages {
                        next = 0;
                        for gva in (0..data).step_by(PAGE as usize) {
                            g.invlpg(0, gva);
                            g.write(g.pte(gva), gva | leaf);
                        }
                    }
                }
                total
            })
        });
        let after = g.mmu.stats();
        assert_eq!(after.fault_no_spte - before.fault_no_spte, measured);
        assert_eq!(after.prefetched, before.prefetched, "{name}: prefetched");
        assert_eq!(after.pages_in_use, before.pages_in_use, "{name}: new pages");
    }

    // One fault per PT that maps the whole PT: the fault and the prefetch
    // of its 511 accessed neighbours.
    let data = big;
    let g = warm_guest(data, LEAF, 512);
    let pts = data >> 21;
    let before = g.mmu.stats();
    let mut next = 0u64;
    let mut measured = 0u64;
    c.bench_function(
        "fault/4-level 4K/prefetch=512, A=1 (fault + 511 prefetched)",
        |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let batch = left.min(pts - next);
                    let start = Instant::now();
                    for pt in next..next + batch {
                        g.fault(0, pt << 21, USER_READ);
                    }
                    total += start.elapsed();
                    left -= batch;
                    measured += batch;
                    next += batch;
                    if next == pts {
                        next = 0;
                        for gva in (0..data).step_by(PAGE as usize) {
                            g.invlpg(0, gva);
                        }
                    }
                }
                total
            })
        },
    );
    let after = g.mmu.stats();
    assert_eq!(after.fault_no_spte - before.fault_no_spte, measured);
    assert_eq!(after.prefetched - before.prefetched, 511 * measured);
}

/// `invlpg`: dropping the shadow of one mapped 4 KiB page. A PT's 512
/// pages are mapped by one fault (not timed), then dropped one by one.
fn bench_invlpg(c: &mut Criterion) {
    let g = warm_guest(2 * MIB, LEAF, 512);
    let before = g.mmu.stats();
    let mut next = 512u64;
    let mut measured = 0u64;
    c.bench_function("invlpg/mapped 4K", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                if next == 512 {
                    g.fault(0, 0, USER_READ);
                    next = 0;
                }
                let batch = left.min(512 - next);
                let mut flush_all = false;
                let start = Instant::now();
                for i in next..next + batch {
                    let c = g.mmu.invlpg(0, Gva(i * PAGE)).expect("invlpg");
                    flush_all |= black_box(c).flush_all;
                }
                total += start.elapsed();
                if flush_all {
                    g.mmu.flush_completed();
                }
                left -= batch;
                measured += batch;
                next += batch;
            }
            total
        })
    });
    let after = g.mmu.stats();
    assert_eq!(after.invlpg_zaps - before.invlpg_zaps, measured);
}

/// `sync/512-entry unsync table`: a PT with 512 present shadow entries goes
/// unsync (a guest write to it through a mapping of the PT itself), the
/// guest flips W in `changed` of its entries, and `flush_tlb` syncs it.
fn bench_sync(c: &mut Criterion) {
    // PT 0 maps 512 data pages; PT 1's entry 0 maps PT 0 itself.
    let g = Guest::new(4 * MIB, Some(LEAF), config(512));
    let pt0 = g.pt(0);
    let self_map = 2 * MIB;
    g.write(g.pte(self_map), pt0 | LEAF);
    g.fault(0, 0, USER_READ);
    assert_eq!(g.mmu.stats().prefetched, 511);
    for changed in [0u64, 16, 512] {
        let before = g.mmu.stats();
        let mut round = 0u64;
        let mut measured = 0u64;
        c.bench_function(
            &format!("sync/512-entry unsync table, {changed} entries changed"),
            |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        // The guest writes its PT: unsync, then changes.
                        g.fault(0, self_map, PfErrorCode::W);
                        assert_eq!(g.mmu.stats().unsync_pages, 1);
                        round += 1;
                        for i in 0..changed {
                            let w = if round % 2 == 1 { 0 } else { PTE_W };
                            g.write(pt0 + 8 * i, (i * PAGE) | (LEAF & !PTE_W) | w);
                        }
                        let start = Instant::now();
                        let c = g.mmu.flush_tlb(0).expect("flush");
                        total += start.elapsed();
                        g.apply(c);
                        measured += 1;
                    }
                    total
                })
            },
        );
        let after = g.mmu.stats();
        assert_eq!(after.syncs - before.syncs, measured);
        assert_eq!(after.unsync_pages, 0);
        assert!(after.rmap_entries >= 512, "entries were lost");
    }
}

criterion_group!(benches, bench_fault, bench_invlpg, bench_sync);

/// Shadow memory per GiB of guest memory mapped through faults: arena pages
/// in use, their bookkeeping (`ShadowPage`, which keeps no per-entry
/// translation: the guest frame is read back from the shadow entry), and
/// everything the MMU's heap grew
/// by (the allocator counts requested bytes, not malloc's overhead).
fn report_memory() {
    let data = if measuring() { GIB } else { 8 * MIB };
    println!(
        "\n## Shadow memory per GiB mapped (4-level guest, {} MiB mapped)",
        data / MIB
    );
    for (name, leaf) in [
        ("4 KiB guest pages", Some(LEAF)),
        ("2 MiB guest pages", None),
    ] {
        let g = Guest::new(data, leaf, MmuConfig::default());
        let s0 = g.mmu.stats();
        let heap0 = HEAP_BYTES.load(Ordering::Relaxed);
        // One fault per 2 MiB: a 2 MiB page, or a PT prefetched whole.
        let mut faults = 0;
        for gva in (0..data).step_by(2 * MIB as usize) {
            if !g.mapped(0, gva) {
                g.fault(0, gva, USER_READ);
                faults += 1;
            }
        }
        // Every page is mapped now.
        for gva in (0..data).step_by(PAGE as usize) {
            assert!(g.mapped(0, gva), "{gva:#x} not mapped");
        }
        let s = g.mmu.stats();
        let heap = HEAP_BYTES.load(Ordering::Relaxed) - heap0;
        let per_gib = |bytes: f64| bytes * (GIB as f64) / (data as f64) / (MIB as f64);
        let arena = s.pages_in_use * PAGE;
        let bookkeeping = s.pages_in_use * std::mem::size_of::<ShadowPage>() as u64;
        println!(
            "{name}: {faults} faults, {} shadow pages ({} at CR3 load), {} rmap entries",
            s.pages_in_use, s0.pages_in_use, s.rmap_entries
        );
        println!(
            "  arena {:.3} MiB/GiB + ShadowPage {:.3} MiB/GiB = {:.3} MiB/GiB",
            per_gib(arena as f64),
            per_gib(bookkeeping as f64),
            per_gib((arena + bookkeeping) as f64)
        );
        println!(
            "  arena + all MMU heap growth while mapping (rmap, lookup maps, LRU): \
             {:.3} MiB/GiB (heap alone {:.3} MiB/GiB)",
            per_gib(arena as f64 + heap as f64),
            per_gib(heap as f64)
        );
    }
}

/// VMM time per fault for each prefetch window, touching every page of a
/// region in order (every guest entry accessed, so prefetch maps all of its
/// window), and the modelled cost with a fault round trip of 28 and 59 µs.
fn report_prefetch_sweep() {
    let data = if measuring() { 64 * MIB } else { 4 * MIB };
    let rounds = if measuring() { 9 } else { 1 };
    println!("\n## Prefetch window sweep: touch all {} MiB in order, all guest PTEs accessed (median of {rounds})", data / MIB);
    println!("window  faults/512 pages  VMM ns/fault  VMM ns/page  total µs/512 pages at 28 µs | 59 µs per round trip");
    for window in [1usize, 8, 64, 512] {
        let mut per_fault = Vec::new();
        let mut faults = 0;
        for _ in 0..rounds {
            let g = warm_guest(data, LEAF, window);
            let mut vmm = Duration::ZERO;
            faults = 0;
            for gva in (0..data).step_by(PAGE as usize) {
                if g.mapped(0, gva) {
                    continue;
                }
                let start = Instant::now();
                let (outcome, c) = g.mmu.page_fault(0, Gva(gva), USER_READ).expect("fault");
                vmm += start.elapsed();
                assert_eq!(outcome, FaultOutcome::Fixed);
                g.apply(c);
                faults += 1;
            }
            per_fault.push(vmm.as_nanos() as f64 / faults as f64);
        }
        per_fault.sort_by(|a, b| a.total_cmp(b));
        let ns = per_fault[per_fault.len() / 2];
        let pages = (data / PAGE) as f64;
        let faults_per_pt = faults as f64 * 512.0 / pages;
        let vmm_per_pt = ns * faults_per_pt;
        println!(
            "{window:6}  {faults_per_pt:16.1}  {ns:12.0}  {:11.0}  {:10.1} | {:.1}",
            vmm_per_pt / 512.0,
            (faults_per_pt * 28_000.0 + vmm_per_pt) / 1000.0,
            (faults_per_pt * 59_000.0 + vmm_per_pt) / 1000.0,
        );
    }
}

/// Fault throughput of 1 and 8 vCPU threads on one `Mmu`, each thread on
/// its own vCPU and its own PTs (disjoint 2 MiB ranges of one address
/// space), prefetch off. Each round every thread faults its whole range in
/// (timed, wall clock from a barrier), then drops it again (not timed).
fn report_threads() {
    let per_thread = if measuring() { 64 * MIB } else { 2 * MIB };
    let rounds = if measuring() { 9 } else { 1 };
    println!("\n## Fault throughput, vCPU threads on one Mmu ({} faults per thread per round, median of {rounds} rounds)", per_thread / PAGE);
    let mut results = Vec::new();
    for threads in [1usize, 2, 8] {
        let g = Arc::new(Guest::new(
            per_thread * threads as u64,
            Some(LEAF),
            MmuConfig {
                vcpus: threads,
                prefetch_window: 1,
                ..MmuConfig::default()
            },
        ));
        // Create every shadow page first.
        for vcpu in 0..threads {
            let base = per_thread * vcpu as u64;
            for pt in (base..base + per_thread).step_by(2 * MIB as usize) {
                g.fault(vcpu, pt, USER_READ);
                g.invlpg(vcpu, pt);
            }
        }
        // Each worker times its own part of a round; a round lasts from
        // the first start to the last end. (A timer in another thread
        // would start late whenever it is not scheduled at the barrier's
        // release, as happens with more threads than CPUs.)
        let start_line = Arc::new(Barrier::new(threads));
        let end_line = Arc::new(Barrier::new(threads));
        let workers: Vec<_> = (0..threads)
            .map(|vcpu| {
                let (g, start_line, end_line) = (g.clone(), start_line.clone(), end_line.clone());
                thread::spawn(move || {
                    let base = per_thread * vcpu as u64;
                    let mut spans = Vec::new();
                    for _ in 0..rounds {
                        start_line.wait();
                        let start = Instant::now();
                        for gva in (base..base + per_thread).step_by(PAGE as usize) {
                            g.fault(vcpu, gva, USER_READ);
                        }
                        spans.push((start, Instant::now()));
                        end_line.wait();
                        for gva in (base..base + per_thread).step_by(PAGE as usize) {
                            g.invlpg(vcpu, gva);
                        }
                    }
                    spans
                })
            })
            .collect();
        let spans: Vec<Vec<(Instant, Instant)>> = workers
            .into_iter()
            .map(|w| w.join().expect("worker"))
            .collect();
        let mut times: Vec<Duration> = (0..rounds)
            .map(|round| {
                let first = spans.iter().map(|s| s[round].0).min();
                let last = spans.iter().map(|s| s[round].1).max();
                match (first, last) {
                    (Some(first), Some(last)) => last - first,
                    _ => Duration::ZERO,
                }
            })
            .collect();
        times.sort();
        let wall = times[times.len() / 2];
        let faults = (per_thread / PAGE) * threads as u64;
        let rate = faults as f64 / wall.as_secs_f64();
        println!(
            "{threads} thread(s): {faults} faults in {:.2} ms: {:.2} M faults/s ({:.0} ns/fault wall)",
            wall.as_secs_f64() * 1e3,
            rate / 1e6,
            wall.as_nanos() as f64 / faults as f64
        );
        results.push(rate);
    }
    let cpus = thread::available_parallelism().map_or(0, |n| n.get());
    let two = results[1] / results[0];
    println!(
        "throughput over 1 thread: 2 threads {two:.2}x, 8 threads {:.2}x ({cpus} CPUs available)",
        results[2] / results[0],
    );
    // Amdahl's law from the 2-thread figure: the share of a fault that
    // runs serialised (under the MMU lock, or waiting for it) is
    // f = 2 / S2 - 1, and n CPUs give at most 1 / (f + (1 - f) / n).
    let f = (2.0 / two - 1.0).clamp(0.0, 1.0);
    let at = |n: f64| 1.0 / (f + (1.0 - f) / n);
    println!(
        "serialised share from it: {:.0} %; on idle CPUs that predicts 4: {:.2}x, 8: {:.2}x, 16: {:.2}x, any number: {}",
        f * 100.0,
        at(4.0),
        at(8.0),
        at(16.0),
        if f > 0.0 {
            format!("{:.2}x", 1.0 / f)
        } else {
            "unbounded".into()
        }
    );
}

/// The guest memory a report needs is checked once here (a write to the
/// top table and back), so a broken layout fails fast.
fn sanity() {
    let g = Guest::new(4 * MIB, Some(LEAF), MmuConfig::default());
    assert_eq!(g.read(g.pml4()), g.pdpt() | UPPER);
    g.fault(0, 0x1000, USER_READ);
    assert!(g.mapped(0, 0x1000));
    g.mmu.audit().expect("audit");
}

/// Criterion's command-line options that take a value.
const OPTIONS_WITH_VALUE: &[&str] = &[
    "baseline",
    "baseline-lenient",
    "color",
    "confidence-level",
    "format",
    "load-baseline",
    "measurement-time",
    "noise-threshold",
    "nresamples",
    "output-format",
    "plotting-backend",
    "profile-time",
    "sample-size",
    "save-baseline",
    "significance-level",
    "warm-up-time",
];

fn main() {
    sanity();
    benches();
    Criterion::default().configure_from_args().final_summary();
    // Reports run unless a filter names something else.
    let mut filters = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if let Some(option) = a.strip_prefix("--") {
            // Criterion options that take a value.
            if !option.contains('=') && OPTIONS_WITH_VALUE.contains(&option) {
                args.next();
            }
        } else if !a.starts_with('-') {
            filters.push(a);
        }
    }
    let wanted =
        |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()));
    if wanted("report/memory") {
        report_memory();
    }
    if wanted("report/prefetch-sweep") {
        report_prefetch_sweep();
    }
    if wanted("report/threads") {
        report_threads();
    }
}
