// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `shadow-run soak`: the comparable workloads in random order for a while,
//! natively and shadowed (page tables written by hypercall and by ordinary
//! stores), with random seeds, shadow-page caps and vCPU counts, every
//! shadow run checked against the native run of the same workload, seed and
//! vCPUs; the process's resident memory at the start, the end and its
//! highest.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::vm::results::fnv1a;
use crate::vm::{
    self, heap_bytes, resident_bytes, PagingMode, PtWrites, RunReport, VmConfig, Workload,
};

/// Whether the shadow run `shadow` of `workload` matches its native run
/// `native`: both guests succeeded, the audit is clean, and the results
/// are identical (records, checksum, guest page faults; `access` compares
/// its records, and `hostile` differs by design where it reaches for the
/// hole, so only its success and audit count).
pub fn compare(workload: Workload, native: &RunReport, shadow: &RunReport) -> Result<(), String> {
    for r in [native, shadow] {
        if (r.exit_status, r.results.status, r.results.errors) != (0, 0, 0) {
            return Err(format!(
                "{} run: exit status {:#x}, results status {:#x} ({}), {} errors",
                r.paging,
                r.exit_status,
                r.results.status,
                vm::status_name(r.results.status),
                r.results.errors
            ));
        }
    }
    if let Some(sh) = &shadow.shadow {
        sh.audit.clone().map_err(|e| format!("audit: {e}"))?;
    }
    match workload {
        Workload::Hostile => Ok(()),
        Workload::Access if native.results.records == shadow.results.records => Ok(()),
        Workload::Access => Err("records differ from native".into()),
        _ => match native.results.difference(&shadow.results) {
            None => Ok(()),
            Some(d) => Err(format!("differs from native: {d}")),
        },
    }
}

/// What the soak keeps of a native run: its report without the records,
/// and their count and FNV-1a. The cache of native runs then stays a few
/// hundred bytes an entry, so that the memory the soak reports is the
/// VMM's.
struct Native {
    ok: bool,
    checksum: u64,
    faults: u64,
    records: (usize, u64),
}

/// Whether a run ended well: exit status, guest status and errors all 0.
fn ended_well(r: &RunReport) -> bool {
    (r.exit_status, r.results.status, r.results.errors) == (0, 0, 0)
}

impl Native {
    fn new(report: RunReport) -> Native {
        let records = &report.results.records;
        Native {
            ok: ended_well(&report),
            checksum: report.results.checksum,
            faults: report.results.faults,
            records: (records.len(), fnv1a(records.iter().copied())),
        }
    }

    /// Whether [`compare`] with the full native run would accept `shadow`
    /// (up to a collision of FNV-1a).
    fn matches(&self, workload: Workload, shadow: &RunReport) -> bool {
        let records = &shadow.results.records;
        let same_records = (records.len(), fnv1a(records.iter().copied())) == self.records;
        let s = &shadow.results;
        self.ok
            && ended_well(shadow)
            && shadow.shadow.as_ref().is_none_or(|sh| sh.audit.is_ok())
            && match workload {
                Workload::Hostile => true,
                Workload::Access => same_records,
                _ => same_records && self.checksum == s.checksum && self.faults == s.faults,
            }
    }
}

/// A paging mode of the soak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// KVM walks the guest's tables.
    Native,
    /// Shadow paging, page tables written one way or the other.
    Shadow(PtWrites),
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mode::Native => f.write_str("native"),
            Mode::Shadow(PtWrites::Hypercall) => f.write_str("shadow"),
            Mode::Shadow(PtWrites::Direct) => f.write_str("shadow-direct"),
        }
    }
}

/// One run of the soak.
#[derive(Clone, Debug)]
pub struct SoakRun {
    /// The workload.
    pub workload: Workload,
    /// The mode.
    pub mode: Mode,
    /// Its seed.
    pub seed: u64,
    /// vCPUs.
    pub vcpus: u32,
    /// Shadow-page cap (shadow runs).
    pub max_pages: u32,
    /// Wall time.
    pub wall: Duration,
    /// `Ok` when it passed; otherwise why not.
    pub result: Result<(), String>,
}

impl fmt::Display for SoakRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} seed {} vcpus {}",
            self.workload, self.mode, self.seed, self.vcpus
        )?;
        if self.mode != Mode::Native {
            write!(f, " max-pages {}", self.max_pages)?;
        }
        write!(f, ": {:.2} s, ", self.wall.as_secs_f64())?;
        match &self.result {
            Ok(()) => f.write_str("ok"),
            Err(e) => write!(f, "FAILED: {e}"),
        }
    }
}

/// The process's memory between two runs of the soak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemorySample {
    /// Since the soak started.
    pub at: Duration,
    /// Resident bytes (`/proc/self/statm`).
    pub resident: u64,
    /// Heap bytes in use ([`heap_bytes`]), when known.
    pub heap: Option<u64>,
}

/// What the soak found.
#[derive(Clone, Debug)]
/// What the soak keeps of its runs: counts, the failures and a few memory
/// samples, a bounded amount, so that the memory it reports is the VMM's.
pub struct SoakReport {
    /// The soak's seed.
    pub seed: u64,
    /// Runs (native reference runs included).
    pub runs: usize,
    /// Runs per workload and mode.
    pub counts: HashMap<(Workload, Mode), usize>,
    /// The runs that failed.
    pub failed: Vec<SoakRun>,
    /// The process's memory after the first run, at a quarter of the
    /// soak's time and after the last run (no VM alive), and the most
    /// resident memory seen after a run.
    pub memory: Option<(MemorySample, MemorySample, MemorySample, u64)>,
    /// Wall time.
    pub wall: Duration,
}

impl SoakReport {
    /// The runs that failed.
    pub fn failures(&self) -> Vec<&SoakRun> {
        self.failed.iter().collect()
    }

    /// Memory after the first run, a quarter of the way into the soak
    /// (once the allocator has its working set), at the end, and the most
    /// resident memory seen.
    pub fn memory_marks(&self) -> Option<(MemorySample, MemorySample, MemorySample, u64)> {
        self.memory
    }

    /// A summary: runs per workload and mode, failures, memory.
    pub fn summary(&self) -> String {
        let per = &self.counts;
        let mut lines: Vec<String> = Vec::new();
        for w in Workload::COMPARABLE {
            if !per.keys().any(|(pw, _)| *pw == w) {
                continue;
            }
            let counts: Vec<String> = [
                Mode::Native,
                Mode::Shadow(PtWrites::Hypercall),
                Mode::Shadow(PtWrites::Direct),
            ]
            .iter()
            .map(|m| format!("{m} {}", per.get(&(w, *m)).copied().unwrap_or(0)))
            .collect();
            lines.push(format!("  {w}: {}", counts.join(", ")));
        }
        let mut s = format!(
            "soak seed {}: {} runs in {:.1} min, {} failed\n{}",
            self.seed,
            self.runs,
            self.wall.as_secs_f64() / 60.0,
            self.failures().len(),
            lines.join("\n"),
        );
        if let Some((first, quarter, last, peak)) = self.memory_marks() {
            let pct = |a: u64, b: u64| {
                if a > 0 {
                    100.0 * (b as f64 - a as f64) / a as f64
                } else {
                    0.0
                }
            };
            s.push_str(&format!(
                "\nresident memory: {} KiB after the first run, {} KiB at a quarter, {} KiB at the end \
                 ({:+.1} % since the quarter), {} KiB at most",
                first.resident / 1024,
                quarter.resident / 1024,
                last.resident / 1024,
                pct(quarter.resident, last.resident),
                peak / 1024
            ));
            if let (Some(f), Some(q), Some(l)) = (first.heap, quarter.heap, last.heap) {
                s.push_str(&format!(
                    "\nheap: {} KiB after the first run, {} KiB at a quarter, {} KiB at the end",
                    f / 1024,
                    q / 1024,
                    l / 1024
                ));
            }
        }
        s
    }

    /// The report as JSON.
    pub fn json(&self) -> Value {
        let marks = self.memory_marks();
        json!({
            "seed": self.seed,
            "runs": self.runs,
            "wall_s": self.wall.as_secs_f64(),
            "resident_first": marks.map(|m| m.0.resident),
            "resident_quarter": marks.map(|m| m.1.resident),
            "resident_end": marks.map(|m| m.2.resident),
            "resident_peak": marks.map(|m| m.3),
            "heap_first": marks.and_then(|m| m.0.heap),
            "heap_quarter": marks.and_then(|m| m.1.heap),
            "heap_end": marks.and_then(|m| m.2.heap),
            "failures": self.failures().iter().map(|r| r.to_string()).collect::<Vec<_>>(),
        })
    }
}

/// A xorshift generator for the soak's choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Workload seeds the soak picks from (0 to 7).
pub const SEEDS: u64 = 8;

/// Shadow-page caps the soak picks from: from the least that holds what
/// one instruction of these workloads needs at once (the paging
/// structures of its code, stack and data pages) to the default. Below
/// that the MMU's reclaim takes the structures of one access to map the
/// next and the guest thrashes: `touch` seed 6 made no progress in 60 s
/// at a cap of 8, took 42 s at 12 and 2 s at 16; `smp` on 4 vCPUs, whose
/// reclaims each wait for the other vCPUs' flushes, finished 2 of 6 runs
/// within 20 s at 8 and took 7-8 s at 16 (KVM's own floor is 64 pages,
/// `KVM_MIN_ALLOC_MMU_PAGES`).
pub const CAPS: [u32; 8] = [16, 24, 32, 64, 256, 1024, 4096, vm::DEFAULT_MAX_PAGES];

/// The least shadow-page cap the soak gives `timer`. Its four address
/// spaces switched at every 1 ms tick need more shadow pages than a cap of
/// 12 holds, and on these hosts rebuilding them (about eight faults through
/// the trampoline) takes longer than a tick: each task is preempted before
/// it gets anywhere, for ever (measured: no progress in 300 s at cap 12,
/// done in 1.7 s with 20 ms ticks and in 0.4 s at cap 32). That is a guest
/// thrashing, as one with too little memory does, not a VMM failure.
pub const TIMER_MIN_CAP: u32 = 64;

/// What the soak runs.
#[derive(Clone, Debug)]
pub struct SoakConfig {
    /// For how long (the run under way when it is up still ends).
    pub duration: Duration,
    /// The seed of its choices.
    pub seed: u64,
    /// The deadline of each run.
    pub timeout: Duration,
    /// The workloads it picks from (comparable ones).
    pub workloads: Vec<Workload>,
}

/// Runs the soak: rounds of `cfg.workloads` in a random order, each in a
/// random mode with a random seed, vCPU count (2 to 4 for `smp`, 1 or 2
/// for the others) and shadow-page cap ([`CAPS`]); `progress` sees every
/// run as it ends.
pub fn run_soak(cfg: &SoakConfig, mut progress: impl FnMut(&SoakRun)) -> SoakReport {
    let (duration, seed, timeout) = (cfg.duration, cfg.seed, cfg.timeout);
    let t0 = Instant::now();
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut natives: HashMap<(Workload, u64, u32), Result<Native, String>> = HashMap::new();
    let (mut runs, mut counts, mut failed) = (0, HashMap::new(), Vec::new());
    let mut memory: Option<(MemorySample, MemorySample, MemorySample, u64)> = None;
    let mut round: Vec<Workload> = Vec::new();
    loop {
        if round.is_empty() {
            round = cfg.workloads.clone();
            if round.is_empty() {
                round = Workload::COMPARABLE.to_vec();
            }
            // Fisher-Yates; popped from the end.
            for i in (1..round.len()).rev() {
                round.swap(i, rng.below(i as u64 + 1) as usize);
            }
        }
        let w = round.pop().unwrap_or(Workload::Touch);
        // Few seeds, so that the cache of native runs stops growing early
        // and the memory the soak reports is the VMM's.
        let wseed = rng.below(SEEDS);
        let vcpus = match w {
            Workload::Smp => 2 + rng.below(3) as u32,
            _ => 1 + rng.below(2) as u32,
        };
        let mode = match rng.below(3) {
            0 => Mode::Native,
            1 => Mode::Shadow(PtWrites::Hypercall),
            _ => Mode::Shadow(PtWrites::Direct),
        };
        let max_pages = CAPS[rng.below(CAPS.len() as u64) as usize];
        let max_pages = if w == Workload::Timer {
            max_pages.max(TIMER_MIN_CAP)
        } else {
            max_pages
        };
        let config = |paging| {
            let mut c = VmConfig::new(w, paging);
            c.seed = wseed;
            c.vcpus = vcpus;
            c.timeout = timeout;
            c
        };
        let key = (w, wseed, vcpus);
        let mut record = |mode, max_pages, wall, result| {
            let run = SoakRun {
                workload: w,
                mode,
                seed: wseed,
                vcpus,
                max_pages,
                wall,
                result,
            };
            progress(&run);
            runs += 1;
            *counts.entry((run.workload, run.mode)).or_insert(0) += 1;
            if run.result.is_err() {
                failed.push(run);
            }
        };
        // The native reference of this workload, seed and vCPUs, once (and
        // again whenever the native mode is drawn).
        if mode == Mode::Native || !natives.contains_key(&key) {
            let t = Instant::now();
            let native = vm::run(&config(PagingMode::Native)).map_err(|e| e.to_string());
            let result = match &native {
                Ok(r) if (r.exit_status, r.results.status, r.results.errors) == (0, 0, 0) => Ok(()),
                Ok(r) => Err(format!(
                    "guest status {:#x} ({}), {} errors",
                    r.results.status,
                    vm::status_name(r.results.status),
                    r.results.errors
                )),
                Err(e) => Err(e.clone()),
            };
            record(Mode::Native, 0, t.elapsed(), result);
            natives.entry(key).or_insert(native.map(Native::new));
        }
        if let Mode::Shadow(pt_writes) = mode {
            let mut c = config(PagingMode::Shadow);
            c.pt_writes = pt_writes;
            c.max_pages = max_pages;
            let t = Instant::now();
            let result = match (vm::run(&c), &natives[&key]) {
                (Ok(shadow), Ok(native)) if native.matches(w, &shadow) => Ok(()),
                // Say how it differs, from the whole native run again.
                (Ok(shadow), Ok(_)) => match vm::run(&config(PagingMode::Native)) {
                    Ok(native) => compare(w, &native, &shadow),
                    Err(e) => Err(format!("its native run failed this time: {e}")),
                },
                (Err(e), _) => Err(e.to_string()),
                (Ok(_), Err(_)) => Err("its native run failed".into()),
            };
            record(mode, max_pages, t.elapsed(), result);
        }
        let now = MemorySample {
            at: t0.elapsed(),
            resident: resident_bytes().unwrap_or(0),
            heap: heap_bytes(),
        };
        memory = Some(match memory {
            None => (now, now, now, now.resident),
            // The quarter mark: the last sample before a quarter of the
            // soak's time, then kept.
            Some((first, quarter, _, peak)) => {
                let quarter = if quarter.at < duration / 4 {
                    now
                } else {
                    quarter
                };
                (first, quarter, now, peak.max(now.resident))
            }
        });
        if t0.elapsed() >= duration {
            return SoakReport {
                seed,
                runs,
                counts,
                failed,
                memory,
                wall: t0.elapsed(),
            };
        }
    }
}
