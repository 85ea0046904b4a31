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

use crate::vm::{self, resident_bytes, PagingMode, PtWrites, RunReport, VmConfig, Workload};

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

/// What the soak found.
#[derive(Clone, Debug)]
pub struct SoakReport {
    /// The soak's seed.
    pub seed: u64,
    /// Every run (native reference runs included).
    pub runs: Vec<SoakRun>,
    /// Resident memory after the first run, at the end, and the highest
    /// seen between runs.
    pub resident: (u64, u64, u64),
    /// Wall time.
    pub wall: Duration,
}

impl SoakReport {
    /// The runs that failed.
    pub fn failures(&self) -> Vec<&SoakRun> {
        self.runs.iter().filter(|r| r.result.is_err()).collect()
    }

    /// A summary: runs per workload and mode, failures, resident memory.
    pub fn summary(&self) -> String {
        let mut per: HashMap<(Workload, Mode), usize> = HashMap::new();
        for r in &self.runs {
            *per.entry((r.workload, r.mode)).or_default() += 1;
        }
        let mut lines: Vec<String> = Vec::new();
        for w in Workload::COMPARABLE {
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
        let (start, end, peak) = self.resident;
        format!(
            "soak seed {}: {} runs in {:.1} min, {} failed\n{}\nresident memory: {} KiB at the start, {} KiB at the end ({:+.1} %), {} KiB at most",
            self.seed,
            self.runs.len(),
            self.wall.as_secs_f64() / 60.0,
            self.failures().len(),
            lines.join("\n"),
            start / 1024,
            end / 1024,
            if start > 0 {
                100.0 * (end as f64 - start as f64) / start as f64
            } else {
                0.0
            },
            peak / 1024
        )
    }

    /// The report as JSON.
    pub fn json(&self) -> Value {
        json!({
            "seed": self.seed,
            "runs": self.runs.len(),
            "wall_s": self.wall.as_secs_f64(),
            "resident_start": self.resident.0,
            "resident_end": self.resident.1,
            "resident_peak": self.resident.2,
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

/// Shadow-page caps the soak picks from: from the least the MMU takes to
/// the default.
pub const CAPS: [u32; 8] = [8, 12, 32, 64, 256, 1024, 4096, vm::DEFAULT_MAX_PAGES];

/// Runs the soak for `duration` with choices from `seed`; `timeout` bounds
/// each run; `progress` sees every run as it ends.
pub fn run_soak(
    duration: Duration,
    seed: u64,
    timeout: Duration,
    mut progress: impl FnMut(&SoakRun),
) -> SoakReport {
    let t0 = Instant::now();
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut natives: HashMap<(Workload, u64, u32), Result<RunReport, String>> = HashMap::new();
    let mut runs = Vec::new();
    let mut start = None;
    let mut peak = 0;
    loop {
        let w = Workload::COMPARABLE[rng.below(Workload::COMPARABLE.len() as u64) as usize];
        let wseed = rng.below(64);
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
        let config = |paging| {
            let mut cfg = VmConfig::new(w, paging);
            cfg.seed = wseed;
            cfg.vcpus = vcpus;
            cfg.timeout = timeout;
            cfg
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
            runs.push(run);
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
            natives.entry(key).or_insert(native);
        }
        if let Mode::Shadow(pt_writes) = mode {
            let mut cfg = config(PagingMode::Shadow);
            cfg.pt_writes = pt_writes;
            cfg.max_pages = max_pages;
            let t = Instant::now();
            let result = match (vm::run(&cfg), &natives[&key]) {
                (Ok(shadow), Ok(native)) => compare(w, native, &shadow),
                (Err(e), _) => Err(e.to_string()),
                (Ok(_), Err(_)) => Err("its native run failed".into()),
            };
            record(mode, max_pages, t.elapsed(), result);
        }
        let resident = resident_bytes().unwrap_or(0);
        start.get_or_insert(resident);
        peak = peak.max(resident);
        if t0.elapsed() >= duration {
            return SoakReport {
                seed,
                runs,
                resident: (start.unwrap_or(0), resident, peak),
                wall: t0.elapsed(),
            };
        }
    }
}
