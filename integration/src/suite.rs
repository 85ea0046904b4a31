// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The main job (`shadow-run` with no arguments) and `shadow-run bench`.
//!
//! The suite runs every workload with shadow paging, once with the guest
//! kernel writing its page tables through `MMU_UPDATE` hypercalls and once
//! with ordinary stores the VMM emulates, and, as the reference, with
//! native paging; it reports per workload and mode whether the shadow run
//! passed (guest status, identical records, clean audit), how the MMU
//! resolved its faults, and the shadow/native wall-time ratio. The bench
//! runs the measured workloads several times in alternation and reports the
//! medians of the guest's own TSC-timed phases, shadow over native, side by
//! side in one run.

use std::fmt::{self, Write as _};
use std::io::{IsTerminal as _, Write as _};

use serde_json::{json, Value};

use crate::vm::{self, PagingMode, Prefetch, PtWrites, RunReport, VmConfig, VmError, Workload};

/// One workload of the suite.
#[derive(Debug)]
pub struct SuiteRow {
    /// The workload.
    pub workload: Workload,
    /// The native reference run.
    pub native: RunReport,
    /// The shadow run with page-table writes through hypercalls.
    pub shadow: RunReport,
    /// The shadow run with page-table writes as ordinary stores.
    pub direct: RunReport,
}

impl SuiteRow {
    /// The shadow runs, with their page-table write style.
    pub fn shadow_runs(&self) -> [(PtWrites, &RunReport); 2] {
        [
            (PtWrites::Hypercall, &self.shadow),
            (PtWrites::Direct, &self.direct),
        ]
    }

    /// Records of `run` identical to the native run's (hostile differs by
    /// design where it reaches for the hole: its own checks are in the
    /// tests).
    pub fn same_results(&self, run: &RunReport) -> bool {
        self.workload == Workload::Hostile || self.native.results.records == run.results.records
    }

    /// Whether the shadow run `run` passed.
    pub fn passed(&self, run: &RunReport) -> bool {
        let ok =
            |r: &RunReport| r.exit_status == 0 && r.results.status == 0 && r.results.errors == 0;
        ok(&self.native)
            && ok(run)
            && self.same_results(run)
            && run.shadow.as_ref().is_some_and(|s| s.audit.is_ok())
    }

    /// Whether both shadow runs passed.
    pub fn pass(&self) -> bool {
        self.passed(&self.shadow) && self.passed(&self.direct)
    }

    fn ratio(&self, run: &RunReport) -> f64 {
        run.wall.as_secs_f64() / self.native.wall.as_secs_f64().max(1e-9)
    }
}

/// The workloads of the default suite: all that end by themselves with
/// results to compare, in id order.
pub const SUITE: [Workload; 10] = Workload::COMPARABLE;

/// Writes `line` to standard error if a person may be watching it: in logs
/// and pipes, carriage-return progress lines are only noise.
pub fn progress(line: std::fmt::Arguments<'_>) {
    let mut err = std::io::stderr().lock();
    if err.is_terminal() {
        let _ = err.write_fmt(line);
        let _ = err.flush();
    }
}

/// Runs the suite, printing a progress line per run on standard error when
/// it is a terminal.
pub fn run_suite(workloads: &[Workload]) -> Result<Vec<SuiteRow>, VmError> {
    let mut rows = Vec::new();
    for (i, &w) in workloads.iter().enumerate() {
        let modes = [
            (PagingMode::Native, PtWrites::Hypercall),
            (PagingMode::Shadow, PtWrites::Hypercall),
            (PagingMode::Shadow, PtWrites::Direct),
        ];
        let mut runs = Vec::new();
        for (paging, pt_writes) in modes {
            let mode = match (paging, pt_writes) {
                (PagingMode::Native, _) => "native",
                (_, PtWrites::Hypercall) => "shadow",
                (_, PtWrites::Direct) => "shadow-direct",
            };
            progress(format_args!(
                "\r[{}/{}] {w} {mode}...                 ",
                i + 1,
                workloads.len()
            ));
            let mut cfg = VmConfig::new(w, paging);
            cfg.pt_writes = pt_writes;
            runs.push(vm::run(&cfg)?);
        }
        let [native, shadow, direct]: [RunReport; 3] = runs
            .try_into()
            .map_err(|_| VmError::Shadow("the suite ran fewer than three modes".into()))?;
        rows.push(SuiteRow {
            workload: w,
            native,
            shadow,
            direct,
        });
    }
    progress(format_args!(
        "\rdone.                                        \n"
    ));
    Ok(rows)
}

/// The suite as a Markdown table: one line per workload and shadow mode.
pub fn suite_markdown(rows: &[SuiteRow]) -> String {
    let mut s = String::from(
        "| workload | page-table writes | result | faults: no SPTE / dirty / write-prot. / guest / MMIO | emulated | unsyncs / syncs | exits (trampoline + hypercalls) | SPTEs prefetched | wall shadow | wall native | shadow/native |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        for (writes, run) in r.shadow_runs() {
            let sh = run.shadow.as_ref();
            let st = sh.map(|s| s.stats).unwrap_or_default();
            let e = &run.exits;
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} / {} / {} / {} / {} | {} | {} / {} | {} | {} | {:.3} s | {:.3} s | {:.2} |",
                r.workload,
                writes,
                if r.passed(run) { "pass" } else { "FAIL" },
                st.fault_no_spte,
                st.fault_dirty_tracking,
                st.fault_write_protected,
                st.fault_guest,
                st.fault_mmio,
                sh.map_or(0, |s| s.emulated),
                st.unsyncs,
                st.syncs,
                e.trampoline + e.hypercalls,
                st.prefetched,
                run.wall.as_secs_f64(),
                r.native.wall.as_secs_f64(),
                r.ratio(run),
            );
        }
    }
    s
}

/// One shadow run of the suite as JSON.
fn run_json(r: &SuiteRow, writes: PtWrites, run: &RunReport) -> Value {
    let sh = run.shadow.as_ref();
    let st = sh.map(|s| s.stats).unwrap_or_default();
    json!({
        "page_table_writes": writes.to_string(),
        "pass": r.passed(run),
        "same_results_as_native": r.same_results(run),
        "audit": sh.map(|s| match &s.audit {
            Ok(()) => "clean".to_string(),
            Err(e) => e.clone(),
        }),
        "checksum": format!("{:#x}", run.results.checksum),
        "faults": {
            "no_spte": st.fault_no_spte,
            "dirty_tracking": st.fault_dirty_tracking,
            "write_protected": st.fault_write_protected,
            "spurious": st.fault_spurious,
            "guest": st.fault_guest,
            "mmio": st.fault_mmio,
            "retry": st.fault_retry,
            "emulate": st.fault_emulate,
        },
        "emulated": sh.map_or(0, |s| s.emulated),
        "tracked_writes": st.tracked_writes,
        "dirty_taken": st.dirty_taken,
        "exits": {
            "trampoline": run.exits.trampoline,
            "hypercalls": run.exits.hypercalls,
            "doorbell": run.exits.doorbell,
        },
        "prefetched": st.prefetched,
        "syncs": st.syncs,
        "unsyncs": st.unsyncs,
        "zapped_pages": st.zapped_pages,
        "pages_in_use": st.pages_in_use,
        "wall_s": run.wall.as_secs_f64(),
        "ratio": r.ratio(run),
    })
}

/// The suite as JSON.
pub fn suite_json(rows: &[SuiteRow]) -> Value {
    let rows: Vec<Value> = rows
        .iter()
        .map(|r| {
            let shadow: Vec<Value> = r
                .shadow_runs()
                .into_iter()
                .map(|(writes, run)| run_json(r, writes, run))
                .collect();
            json!({
                "workload": r.workload.to_string(),
                "pass": r.pass(),
                "checksum_native": format!("{:#x}", r.native.results.checksum),
                "wall_native_s": r.native.wall.as_secs_f64(),
                "shadow": shadow,
            })
        })
        .collect();
    json!({ "suite": rows })
}

/// One benchmarked figure.
#[derive(Clone, Debug)]
pub struct BenchRow {
    /// Short name (P3, P3b...).
    pub id: &'static str,
    /// What is measured.
    pub what: &'static str,
    /// The goal for shadow/native.
    pub goal: f64,
    /// Median of the native runs, in TSC ticks.
    pub native: u64,
    /// Median of the shadow runs (page-table writes by hypercall), in TSC
    /// ticks.
    pub shadow: u64,
    /// Median of the shadow runs with direct page-table writes, in TSC
    /// ticks.
    pub direct: u64,
    /// Median of the shadow runs with speculative prefetch (page-table
    /// writes by hypercall), in TSC ticks.
    pub speculative: u64,
    /// TSC frequency, if known, for milliseconds.
    pub tsc_khz: Option<u32>,
}

impl BenchRow {
    /// Shadow over native.
    pub fn ratio(&self) -> f64 {
        self.shadow as f64 / (self.native as f64).max(1.0)
    }

    /// Shadow with direct page-table writes over native.
    pub fn direct_ratio(&self) -> f64 {
        self.direct as f64 / (self.native as f64).max(1.0)
    }

    /// Direct page-table writes over hypercall ones, both shadowed.
    pub fn direct_over_hypercall(&self) -> f64 {
        self.direct as f64 / (self.shadow as f64).max(1.0)
    }

    /// Shadow with speculative prefetch over native.
    pub fn speculative_ratio(&self) -> f64 {
        self.speculative as f64 / (self.native as f64).max(1.0)
    }

    /// The better of the two prefetch policies over native (hypercall
    /// page-table writes).
    pub fn best_ratio(&self) -> f64 {
        self.ratio().min(self.speculative_ratio())
    }

    fn ms(&self, ticks: u64) -> String {
        match self.tsc_khz {
            Some(k) if k > 0 => format!("{:.2} ms", ticks as f64 / f64::from(k)),
            _ => format!("{ticks} tsc"),
        }
    }
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

struct Case {
    id: &'static str,
    what: &'static str,
    /// The goal for shadow/native; for first writes, a multiple of the
    /// floor of a shadow fault over the native first write, set once the
    /// floor is measured ([`FLOOR_GOAL`]).
    goal: f64,
    /// Whether `goal` is [`FLOOR_GOAL`] times that floor instead.
    over_floor: bool,
    workload: Workload,
    params: [u64; 5],
    /// Indices of the TSC slots summed for the figure.
    slots: &'static [usize],
}

/// 64 MiB touched three ways by writes and two by reads; 256 warm passes,
/// so that the warm phase lasts tens of milliseconds rather than the 1-2 ms
/// of the default 4 passes, which this shared host's noise swamps.
const TOUCH_PARAMS: [u64; 5] = [64, 256, 0, 64, 0];

/// Guest RAM for the bench: four 64 MiB regions of the touch workload.
const BENCH_MEM_MIB: u64 = 512;

const CASES: [Case; 8] = [
    Case {
        id: "P3",
        what: "first touch of 64 MiB by writes, sequential",
        goal: 1.25,
        over_floor: true,
        workload: Workload::Touch,
        params: TOUCH_PARAMS,
        slots: &[0],
    },
    Case {
        id: "P3b",
        what: "first touch of 64 MiB by writes, random order",
        goal: 3.0,
        over_floor: true,
        workload: Workload::Touch,
        params: TOUCH_PARAMS,
        slots: &[1],
    },
    Case {
        id: "P3r",
        what: "first touch of 64 MiB by reads, sequential",
        goal: 1.0,
        over_floor: false,
        workload: Workload::Touch,
        params: TOUCH_PARAMS,
        slots: &[7],
    },
    Case {
        id: "P3rb",
        what: "first touch of 64 MiB by reads, random order",
        goal: 1.25,
        over_floor: false,
        workload: Workload::Touch,
        params: TOUCH_PARAMS,
        slots: &[8],
    },
    Case {
        id: "P3c",
        what: "256 warm passes over 128 MiB",
        goal: 1.02,
        over_floor: false,
        workload: Workload::Touch,
        params: TOUCH_PARAMS,
        slots: &[3, 4],
    },
    Case {
        id: "P4",
        what: "64 address spaces round-robin (switch + touch)",
        goal: 1.5,
        over_floor: false,
        workload: Workload::Spaces,
        params: [64, 0, 0, 0, 0],
        slots: &[1],
    },
    Case {
        id: "P5",
        what: "COW clone of 16 MiB plus writes",
        goal: 3.0,
        over_floor: false,
        workload: Workload::Cow,
        params: [4096, 0, 0, 0, 0],
        slots: &[0, 1, 3],
    },
    Case {
        id: "P8",
        what: "a timer tick at CPL3 (delivery, handler, EOI), per tick",
        goal: 2.0,
        over_floor: false,
        workload: Workload::Timer,
        // One task, one page, 200 us ticks.
        params: [1, 1, 1, 200, 1],
        slots: &[1],
    },
];

/// How the runs of a bench case differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BenchMode {
    Native,
    Shadow,
    Direct,
    Speculative,
}

impl fmt::Display for BenchMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BenchMode::Native => "native",
            BenchMode::Shadow => "shadow (hypercall writes)",
            BenchMode::Direct => "shadow (direct writes)",
            BenchMode::Speculative => "shadow (speculative prefetch)",
        })
    }
}

const BENCH_MODES: [BenchMode; 4] = [
    BenchMode::Native,
    BenchMode::Shadow,
    BenchMode::Direct,
    BenchMode::Speculative,
];

/// The runs of one workload configuration: (workload, parameters, the runs
/// of each of [`BENCH_MODES`]).
type Measured = (Workload, [u64; 5], [Vec<RunReport>; 4]);

/// What bounds the cost of a first write under shadow paging, from the
/// bench's touch runs (medians, TSC ticks per round trip or page).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Floor {
    /// Shadow paging: a round trip through the VMM's trampoline without an
    /// exit (delivery of the #UD, the trampoline's instructions, `iretq`;
    /// a register-form hypercall of no known number), the least a shadow
    /// fault can cost.
    pub trampoline: u64,
    /// Shadow paging: the same with an exit to the VMM (block form).
    pub exit: u64,
    /// Native paging: a hypercall's exit to the VMM (`out`).
    pub native_exit: u64,
    /// Shadow paging, the better prefetch policy: P3's first write, per
    /// page.
    pub first_write: u64,
    /// Native paging: P3's first write, per page.
    pub native_first_write: u64,
    /// TSC frequency, if known, for microseconds.
    pub tsc_khz: Option<u32>,
}

impl Floor {
    fn us(&self, ticks: u64) -> String {
        match self.tsc_khz {
            Some(k) if k > 0 => format!("{:.1} µs", ticks as f64 * 1000.0 / f64::from(k)),
            _ => format!("{ticks} tsc"),
        }
    }

    /// A shadow first write over the trampoline round trip.
    pub fn first_write_over_floor(&self) -> f64 {
        self.first_write as f64 / (self.trampoline as f64).max(1.0)
    }
}

/// First writes should cost at most this many times the floor of a shadow
/// fault (their goal in shadow/native is this times floor/native).
const FLOOR_GOAL: f64 = 1.2;

/// Round trips per calibration in the touch workload (`SYS_FLOOR`).
const FLOOR_ROUND_TRIPS: u64 = 1000;

/// The bench's results: one row per case, and the floor.
#[derive(Clone, Debug, Default)]
pub struct Bench {
    /// Shadow against native, per case.
    pub rows: Vec<BenchRow>,
    /// What bounds a shadow first write.
    pub floor: Floor,
}

/// Runs every bench case `runs` times per paging mode, alternating (progress
/// on standard error when it is a terminal).
pub fn run_bench(runs: usize) -> Result<Bench, VmError> {
    // Touch runs serve P3, P3b and P3c together.
    let mut rows = Vec::new();
    let mut done: Vec<Measured> = Vec::new();
    for case in &CASES {
        let cached = done
            .iter()
            .position(|(w, p, _)| *w == case.workload && *p == case.params);
        let idx = match cached {
            Some(i) => i,
            None => {
                let mut measured: [Vec<RunReport>; 4] = Default::default();
                for i in 0..runs {
                    for (m, mode) in BENCH_MODES.iter().enumerate() {
                        progress(format_args!(
                            "\r{} run {}/{runs} {mode}...           ",
                            case.workload,
                            i + 1
                        ));
                        let paging = if *mode == BenchMode::Native {
                            PagingMode::Native
                        } else {
                            PagingMode::Shadow
                        };
                        let mut cfg = VmConfig::new(case.workload, paging);
                        cfg.params = case.params;
                        cfg.mem_mib = cfg.mem_mib.max(BENCH_MEM_MIB);
                        if *mode == BenchMode::Direct {
                            cfg.pt_writes = PtWrites::Direct;
                        }
                        if *mode == BenchMode::Speculative {
                            cfg.prefetch = Prefetch::Speculative;
                        }
                        measured[m].push(vm::run(&cfg)?);
                    }
                }
                done.push((case.workload, case.params, measured));
                done.len() - 1
            }
        };
        let [native, shadow, direct, speculative] = &done[idx].2;
        let pick = |rs: &[RunReport]| {
            median(
                rs.iter()
                    .map(|r| {
                        case.slots
                            .iter()
                            .map(|&s| r.results.tsc.get(s).copied().unwrap_or(0))
                            .sum()
                    })
                    .collect(),
            )
        };
        rows.push(BenchRow {
            id: case.id,
            what: case.what,
            goal: case.goal,
            native: pick(native),
            shadow: pick(shadow),
            direct: pick(direct),
            speculative: pick(speculative),
            tsc_khz: native.first().and_then(|r| r.tsc_khz),
        });
    }
    progress(format_args!("\rdone.                                   \n"));
    let floor = done
        .iter()
        .find(|(w, p, _)| *w == Workload::Touch && *p == TOUCH_PARAMS)
        .map(|(_, _, [native, shadow, _, speculative])| {
            let slot = |rs: &[RunReport], s: usize, per: u64| {
                median(
                    rs.iter()
                        .map(|r| r.results.tsc.get(s).copied().unwrap_or(0) / per)
                        .collect(),
                )
            };
            let pages = TOUCH_PARAMS[0] * 256;
            Floor {
                trampoline: slot(shadow, 9, FLOOR_ROUND_TRIPS),
                exit: slot(shadow, 10, FLOOR_ROUND_TRIPS),
                native_exit: slot(native, 10, FLOOR_ROUND_TRIPS),
                first_write: slot(shadow, 0, pages).min(slot(speculative, 0, pages)),
                native_first_write: slot(native, 0, pages),
                tsc_khz: native.first().and_then(|r| r.tsc_khz),
            }
        })
        .unwrap_or_default();
    if floor.trampoline > 0 && floor.native_first_write > 0 {
        let over = FLOOR_GOAL * floor.trampoline as f64 / floor.native_first_write as f64;
        for (row, case) in rows.iter_mut().zip(&CASES) {
            if case.over_floor {
                row.goal = (over * 100.0).round() / 100.0;
            }
        }
    }
    Ok(Bench { rows, floor })
}

/// The bench as a Markdown table, and the floor of a shadow first write.
pub fn bench_markdown(bench: &Bench, runs: usize) -> String {
    let rows = &bench.rows;
    let mut s = format!(
        "Medians of {runs} runs per mode, alternating native, shadow, shadow with direct \
         page-table writes and shadow with speculative prefetch, guest TSC-timed phases. \
         The goal applies to the better of the two prefetch policies.\n\n\
         | # | workload | native | shadow | shadow/native | shadow, direct writes | direct/native | direct/hypercall | shadow, speculative | speculative/native | goal | met |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n"
    );
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.2} | {} | {:.2} | {:.2} | {} | {:.2} | ≤ {} | {} |",
            r.id,
            r.what,
            r.ms(r.native),
            r.ms(r.shadow),
            r.ratio(),
            r.ms(r.direct),
            r.direct_ratio(),
            r.direct_over_hypercall(),
            r.ms(r.speculative),
            r.speculative_ratio(),
            r.goal,
            if r.best_ratio() <= r.goal {
                "yes"
            } else {
                "no"
            },
        );
    }
    let f = &bench.floor;
    let _ = write!(
        s,
        "\nThe floor of a shadow fault (the touch runs' calibration, medians): a round trip \
         through the trampoline without an exit {}, with an exit to the VMM {} (natively a \
         hypercall's exit {}). P3's first write costs {} a page under shadow paging with \
         the better prefetch policy ({:.2} times that floor) and {} natively; the goal of P3 and P3b is {FLOOR_GOAL} \
         times that floor.\n",
        f.us(f.trampoline),
        f.us(f.exit),
        f.us(f.native_exit),
        f.us(f.first_write),
        f.first_write_over_floor(),
        f.us(f.native_first_write),
    );
    s
}

/// The bench as JSON.
pub fn bench_json(bench: &Bench, runs: usize) -> Value {
    let f = &bench.floor;
    json!({
        "runs_per_mode": runs,
        "floor": {
            "trampoline_round_trip_tsc": f.trampoline,
            "exit_round_trip_tsc": f.exit,
            "native_exit_round_trip_tsc": f.native_exit,
            "first_write_per_page_tsc": f.first_write,
            "native_first_write_per_page_tsc": f.native_first_write,
            "first_write_over_floor": f.first_write_over_floor(),
            "tsc_khz": f.tsc_khz,
        },
        "rows": bench.rows.iter().map(|r| json!({
            "id": r.id,
            "what": r.what,
            "native_tsc": r.native,
            "shadow_tsc": r.shadow,
            "direct_tsc": r.direct,
            "direct_ratio": r.direct_ratio(),
            "direct_over_hypercall": r.direct_over_hypercall(),
            "speculative_tsc": r.speculative,
            "speculative_ratio": r.speculative_ratio(),
            "tsc_khz": r.tsc_khz,
            "ratio": r.ratio(),
            "goal": r.goal,
            "met": r.best_ratio() <= r.goal,
        })).collect::<Vec<_>>(),
    })
}

/// A bar chart of the ratios (log scale), with each goal marked.
pub fn bench_svg(rows: &[BenchRow]) -> String {
    let (w, bar_h, gap, left) = (640.0, 22.0, 10.0, 60.0);
    let h = 40.0 + rows.len() as f64 * (bar_h + gap);
    let max = rows
        .iter()
        .map(|r| r.best_ratio().max(r.goal))
        .fold(2.0f64, f64::max)
        .log10();
    let x = |v: f64| left + (v.max(1.0).log10() / max) * (w - left - 80.0);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <text x=\"{left}\" y=\"16\">shadow/native, better prefetch policy (log scale; | = goal)</text>\n"
    );
    for (i, r) in rows.iter().enumerate() {
        let y = 28.0 + i as f64 * (bar_h + gap);
        let color = if r.best_ratio() <= r.goal {
            "#4a9d5b"
        } else {
            "#c8553d"
        };
        let _ = writeln!(
            s,
            "<text x=\"4\" y=\"{:.1}\">{}</text><rect x=\"{left}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{bar_h}\" fill=\"{color}\"/>\
             <line x1=\"{gx:.1}\" x2=\"{gx:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"black\" stroke-width=\"2\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{:.2}</text>",
            y + 15.0,
            r.id,
            (x(r.best_ratio()) - left).max(1.0),
            y - 2.0,
            y + bar_h + 2.0,
            x(r.best_ratio()) + 6.0,
            y + 15.0,
            r.best_ratio(),
            gx = x(r.goal),
        );
    }
    s.push_str("</svg>\n");
    s
}
