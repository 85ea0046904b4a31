// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `shadow-run attack`: the `attack` workload (a guest kernel that writes
//! into the VMM's hidden region from CPL0) over many seeds, each outcome
//! classified, optionally beside a second VM that runs the comparable
//! workloads and must keep getting the results of its native runs.
//!
//! Every seed fixes a run: the target classes its steps draw from (one
//! class for most seeds, all of them for every fourth), the number of
//! vCPUs, how the guest kernel writes its page tables and the shadow-page
//! cap ([`SeedPlan`]). The run ends one of these ways ([`Outcome`]): the
//! guest finished; the guest stopped itself with a failure status; the VMM
//! ended the VM with an error (grouped by the message with its numbers
//! blanked); the deadline, with the guest spinning or looping on its own
//! faults (the VMM ended it, as it must); or a failure of the VMM: the
//! deadline with the VMM answering the same exit over and over, vCPU threads
//! that do not stop, a panic. Resident memory is compared before and after
//! the batch.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::vm::{
    self, heap_bytes, panic_message, resident_bytes, Hang, PagingMode, PtWrites, RunOutcome,
    RunReport, VmConfig, VmError, Workload,
};

/// Target classes of the attack workload (`ATK_*` in
/// `resources/guests/guest.h`), by number.
pub const CLASSES: [&str; 19] = [
    "ist-frame",
    "forged-exit",
    "fake-exception",
    "chain-area",
    "switch-word",
    "root-cache",
    "nmi-word",
    "gdt",
    "idt",
    "tss",
    "trampoline",
    "link",
    "leaf",
    "arena",
    "raw-cr3",
    "relink",
    "read",
    "guest-relink",
    "arm",
];

/// Results header words the attack workload keeps up to date
/// (`RH_ATK_*`).
const H_STEP: usize = 40;
const H_CLASS: usize = 41;
const H_DONE: usize = 44;

/// The name of target class `class`.
pub fn class_name(class: u64) -> &'static str {
    usize::try_from(class)
        .ok()
        .and_then(|c| CLASSES.get(c))
        .copied()
        .unwrap_or("?")
}

/// The class mask of the names in `list` (comma-separated).
pub fn class_mask(list: &str) -> Result<u64, String> {
    let mut mask = 0;
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let i = CLASSES.iter().position(|c| *c == name).ok_or_else(|| {
            format!(
                "unknown target class {name:?} (one of {})",
                CLASSES.join(", ")
            )
        })?;
        mask |= 1 << i;
    }
    Ok(mask)
}

/// A 64-bit mix (splitmix64's finaliser).
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// How one seed runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeedPlan {
    /// The seed (workload parameter 0).
    pub seed: u64,
    /// Target-class mask (workload parameter 2).
    pub classes: u64,
    /// Attack steps (workload parameter 1).
    pub steps: u64,
    /// vCPUs.
    pub vcpus: u32,
    /// How the guest kernel writes its page tables.
    pub pt_writes: PtWrites,
    /// Shadow-page cap.
    pub max_pages: u32,
}

impl SeedPlan {
    /// The plan of `seed`; `classes` (non-zero) overrides the seed's own
    /// choice of classes.
    pub fn new(seed: u64, classes: u64, steps: u64) -> SeedPlan {
        let r = mix(seed);
        let all = (1u64 << CLASSES.len()) - 1;
        let classes = if classes != 0 {
            classes
        } else if seed % 4 == 3 {
            all
        } else {
            // Round robin over the classes, so that a batch covers each.
            1 << ((seed - seed / 4) % CLASSES.len() as u64)
        };
        SeedPlan {
            seed,
            classes,
            steps,
            vcpus: if r & 3 == 0 { 2 } else { 1 },
            pt_writes: if r & 4 == 0 {
                PtWrites::Hypercall
            } else {
                PtWrites::Direct
            },
            max_pages: if (r >> 3) & 3 == 0 {
                16 + ((r >> 8) % 49) as u32
            } else {
                vm::DEFAULT_MAX_PAGES
            },
        }
    }

    /// The VM configuration.
    pub fn config(&self, timeout: Duration) -> VmConfig {
        let mut cfg = VmConfig::new(Workload::Attack, PagingMode::Shadow);
        cfg.seed = self.seed;
        cfg.params[0] = self.steps;
        cfg.params[1] = self.classes;
        cfg.vcpus = self.vcpus;
        cfg.pt_writes = self.pt_writes;
        cfg.max_pages = self.max_pages;
        cfg.mem_mib = 64;
        cfg.timeout = timeout;
        cfg
    }

    /// The `shadow-run run` command line that repeats this seed.
    pub fn command(&self, timeout: Duration) -> String {
        format!(
            "shadow-run run attack --paging shadow --seed {} --vcpus {} --mem 64 \
             --max-pages {} --pt-writes {} --param steps={} --param classes={:#x} --timeout {}",
            self.seed,
            self.vcpus,
            self.max_pages,
            self.pt_writes,
            self.steps,
            self.classes,
            timeout.as_secs_f64()
        )
    }
}

/// How a seed's run ended.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// The guest carried on and finished.
    Completed,
    /// The guest stopped itself with a failure status (its own kernel saw
    /// an exception it did not expect, ...).
    GuestFailed(String),
    /// The VMM ended the VM with an error; the message with its numbers
    /// blanked.
    VmError(String),
    /// The deadline: the guest spun or looped on its own faults, and the
    /// VMM ended it.
    GuestHang(String),
    /// The VMM answered the same exit over and over past the deadline, but
    /// the run ended by itself when given longer (the label of how).
    BoundedLoop(String),
    /// A failure of the VMM: the VMM answered the same exit over and over
    /// until the deadline, and until a deadline ten times longer.
    VmmLoop,
    /// A failure of the VMM: vCPU threads that do not stop.
    VmmStuck,
    /// A failure of the VMM: a panic.
    VmmPanic(String),
}

impl Outcome {
    /// Whether this outcome is a failure of the VMM.
    pub fn is_vmm_failure(&self) -> bool {
        matches!(
            self,
            Outcome::VmmLoop | Outcome::VmmStuck | Outcome::VmmPanic(_)
        )
    }

    /// A one-line name of the class.
    pub fn label(&self) -> String {
        match self {
            Outcome::Completed => "completed".into(),
            Outcome::GuestFailed(s) => format!("guest failed: {s}"),
            Outcome::VmError(s) => format!("VM error: {s}"),
            Outcome::GuestHang(s) => format!("guest hang, ended at the deadline: {s}"),
            Outcome::BoundedLoop(s) => {
                format!("the same exit answered past the deadline, then ended: {s}")
            }
            Outcome::VmmLoop => {
                "VMM LOOP: the same exit answered until ten times the deadline".into()
            }
            Outcome::VmmStuck => "VMM STUCK: vCPU threads did not stop".into(),
            Outcome::VmmPanic(s) => format!("VMM PANIC: {s}"),
        }
    }
}

/// `msg` with every number replaced by `#` (and the hexadecimal bytes of
/// an instruction, after the word "bytes"), so that messages of one kind
/// group together.
pub fn blank_numbers(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    let mut in_bytes = false;
    while let Some(c) = rest.chars().next() {
        let prev_alnum = out
            .chars()
            .last()
            .is_some_and(|p| p.is_ascii_alphanumeric() || p == '_');
        let token_len = rest
            .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
            .unwrap_or(rest.len());
        let token = &rest[..token_len.max(c.len_utf8())];
        let is_hex = |t: &str| t.chars().all(|ch| ch.is_ascii_hexdigit());
        let number = !prev_alnum
            && (c.is_ascii_digit() && is_hex(token.trim_start_matches("0x"))
                || in_bytes && is_hex(token) && !token.is_empty());
        if number {
            out.push('#');
        } else {
            out.push_str(token);
            if token_len > 0 {
                in_bytes = token == "bytes" || (in_bytes && is_hex(token));
            } else if token == "]" {
                in_bytes = false;
            }
        }
        rest = &rest[token.len()..];
    }
    out
}

/// Classifies a finished run.
pub fn classify(result: &Result<RunReport, VmError>) -> Outcome {
    match result {
        Ok(r) if r.exit_status == 0 && r.results.status == 0 => Outcome::Completed,
        Ok(r) => Outcome::GuestFailed(format!(
            "status {}",
            blank_numbers(&format!(
                "{:#x} ({})",
                r.results.status,
                vm::status_name(r.results.status)
            ))
        )),
        Err(VmError::Timeout { info }) => match info.hang {
            Hang::ExitsWithoutProgress => Outcome::VmmLoop,
            Hang::NoExits => Outcome::GuestHang("no exits (a spin)".into()),
            Hang::GuestLoop => Outcome::GuestHang("exits the guest sees (a fault loop)".into()),
        },
        Err(VmError::Stuck { .. }) => Outcome::VmmStuck,
        Err(VmError::Thread(m)) if m.contains("panicked") => Outcome::VmmPanic(blank_numbers(m)),
        Err(VmError::Results(why, status)) => Outcome::GuestFailed(blank_numbers(&format!(
            "exit status {status:#x}, results buffer: {why}"
        ))),
        Err(e) => Outcome::VmError(blank_numbers(&e.to_string())),
    }
}

/// One seed's run.
#[derive(Clone, Debug)]
pub struct SeedRun {
    /// What ran.
    pub plan: SeedPlan,
    /// How it ended.
    pub outcome: Outcome,
    /// The full message (error, panic, timeout), if any.
    pub message: String,
    /// The target class of the last attack step, if one ran.
    pub last_class: Option<u64>,
    /// Attack steps begun.
    pub steps: u64,
    /// Attacks carried out (their access did not fault).
    pub attacks: u64,
    /// Wall time.
    pub wall: Duration,
}

/// How much longer a run that looped until its deadline gets to show
/// whether the loop is bounded.
pub const CONFIRM_FACTOR: u32 = 10;

/// Runs one seed; never panics (a panic of the VMM is an outcome). A run
/// in which the VMM answered the same exit until the deadline runs again
/// with a deadline [`CONFIRM_FACTOR`] times longer: only if it loops until
/// that one too is it a [`Outcome::VmmLoop`].
pub fn run_seed(plan: SeedPlan, timeout: Duration) -> SeedRun {
    let first = run_once(plan, timeout);
    if first.outcome != Outcome::VmmLoop {
        return first;
    }
    let mut second = run_once(plan, timeout * CONFIRM_FACTOR);
    if second.outcome != Outcome::VmmLoop {
        second.outcome = Outcome::BoundedLoop(second.outcome.label());
    }
    second.wall += first.wall;
    second
}

fn run_once(plan: SeedPlan, timeout: Duration) -> SeedRun {
    let t0 = Instant::now();
    let cfg = plan.config(timeout);
    let outcome = catch_unwind(AssertUnwindSafe(|| vm::run_outcome(&cfg)));
    let wall = t0.elapsed();
    match outcome {
        Ok(RunOutcome { result, header, .. }) => {
            let word = |i: usize| header.get(i).copied().unwrap_or(0);
            let steps = word(H_STEP);
            SeedRun {
                plan,
                outcome: classify(&result),
                message: result.err().map(|e| e.to_string()).unwrap_or_default(),
                last_class: (steps > 0).then(|| word(H_CLASS)),
                steps,
                attacks: word(H_DONE),
                wall,
            }
        }
        Err(p) => {
            let msg = panic_message(p.as_ref());
            SeedRun {
                plan,
                outcome: Outcome::VmmPanic(blank_numbers(&msg)),
                message: msg,
                last_class: None,
                steps: 0,
                attacks: 0,
                wall,
            }
        }
    }
}

/// What `shadow-run attack` runs.
#[derive(Clone, Debug)]
pub struct AttackConfig {
    /// The first seed.
    pub first_seed: u64,
    /// How many seeds.
    pub seeds: u64,
    /// The deadline of each seed's run.
    pub timeout: Duration,
    /// Target classes for every seed (0: each seed's own choice).
    pub classes: u64,
    /// Attack steps per run.
    pub steps: u64,
    /// Run a second VM beside, with the comparable workloads, each checked
    /// against its native run.
    pub beside: bool,
    /// Stop starting seeds after this long.
    pub budget: Option<Duration>,
    /// Seeds run at once, each in its own VM (in this process).
    pub jobs: usize,
}

/// The runs of the VM beside the attacked ones.
#[derive(Clone, Debug, Default)]
pub struct Beside {
    /// Runs whose results were identical to the native run's, with a clean
    /// audit.
    pub identical: u64,
    /// Runs that were not, with why.
    pub failures: Vec<String>,
}

/// What a batch found.
#[derive(Clone, Debug)]
pub struct AttackReport {
    /// Every seed's run.
    pub runs: Vec<SeedRun>,
    /// The deadline of each run.
    pub timeout: Duration,
    /// Resident memory before the batch (after a warm-up run) and after.
    pub resident: (u64, u64),
    /// The VMM's heap ([`heap_bytes`]) before and after, when known.
    pub heap: Option<(u64, u64)>,
    /// Wall time of the batch.
    pub wall: Duration,
    /// The VM beside, if one ran.
    pub beside: Option<Beside>,
    /// Whether the batch stopped early (a stuck VMM, or the budget).
    pub stopped_early: Option<String>,
}

/// Resident growth over a batch above which it counts as a leak: the
/// allocator keeps some freed memory, never this much (a VM left behind
/// keeps its guest RAM, 64 MiB).
pub const RESIDENT_SLACK: u64 = 32 << 20;

/// Heap growth over a batch above which it counts as a leak: the batch's
/// own records of its runs, a few hundred bytes each, stay below it.
pub const HEAP_SLACK: u64 = 4 << 20;

impl AttackReport {
    /// Outcome classes with their runs, most frequent first.
    pub fn classes(&self) -> Vec<(Outcome, Vec<&SeedRun>)> {
        let mut by: BTreeMap<Outcome, Vec<&SeedRun>> = BTreeMap::new();
        for r in &self.runs {
            by.entry(r.outcome.clone()).or_default().push(r);
        }
        let mut v: Vec<_> = by.into_iter().collect();
        v.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(&b.0)));
        v
    }

    /// Resident growth over the batch, in bytes.
    pub fn growth(&self) -> i64 {
        self.resident.1 as i64 - self.resident.0 as i64
    }

    /// Heap growth over the batch, in bytes, when known.
    pub fn heap_growth(&self) -> Option<i64> {
        self.heap.map(|(b, a)| a as i64 - b as i64)
    }

    /// Why the batch failed, if it did: VMM failures, growth beyond
    /// [`RESIDENT_SLACK`], a beside VM whose results changed.
    pub fn failures(&self) -> Vec<String> {
        let mut f: Vec<String> = self
            .runs
            .iter()
            .filter(|r| r.outcome.is_vmm_failure())
            .map(|r| {
                format!(
                    "seed {} ({}): {}: {}",
                    r.plan.seed,
                    r.last_class.map_or("no step", class_name),
                    r.outcome.label(),
                    r.message
                )
            })
            .collect();
        if self.growth() > RESIDENT_SLACK as i64 {
            f.push(format!(
                "resident memory grew by {} KiB over the batch (at most {} KiB allowed)",
                self.growth() / 1024,
                RESIDENT_SLACK / 1024
            ));
        }
        if let Some(g) = self.heap_growth().filter(|&g| g > HEAP_SLACK as i64) {
            f.push(format!(
                "the VMM's heap grew by {} KiB over the batch (at most {} KiB allowed)",
                g / 1024,
                HEAP_SLACK / 1024
            ));
        }
        if let Some(b) = &self.beside {
            f.extend(b.failures.iter().map(|m| format!("VM beside: {m}")));
        }
        f
    }

    /// The Markdown table of outcome classes, with the target classes of
    /// the last step of each and example seeds.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let n = self.runs.len().max(1);
        let _ = write!(
            s,
            "{} seeds in {:.1} s (deadline {} s each); resident memory {} KiB before, {} KiB after ({:+} KiB)",
            self.runs.len(),
            self.wall.as_secs_f64(),
            self.timeout.as_secs_f64(),
            self.resident.0 / 1024,
            self.resident.1 / 1024,
            self.growth() / 1024
        );
        if let Some((b, a)) = self.heap {
            let _ = write!(
                s,
                "; heap {} KiB before, {} KiB after ({:+} KiB)",
                b / 1024,
                a / 1024,
                (a as i64 - b as i64) / 1024
            );
        }
        s.push_str("\n\n");
        s.push_str("| outcome | runs | % | last target class (runs) | seeds |\n");
        s.push_str("| --- | ---: | ---: | --- | --- |\n");
        for (outcome, runs) in self.classes() {
            let mut by_class: BTreeMap<&str, usize> = BTreeMap::new();
            for r in &runs {
                *by_class
                    .entry(r.last_class.map_or("-", class_name))
                    .or_default() += 1;
            }
            let mut classes: Vec<_> = by_class.into_iter().collect();
            classes.sort_by_key(|c| std::cmp::Reverse(c.1));
            let classes: Vec<String> = classes.iter().map(|(c, k)| format!("{c} {k}")).collect();
            let seeds: Vec<String> = runs
                .iter()
                .take(4)
                .map(|r| r.plan.seed.to_string())
                .collect();
            let _ = writeln!(
                s,
                "| {} | {} | {:.1} | {} | {}{} |",
                outcome.label().replace('|', "\\|"),
                runs.len(),
                100.0 * runs.len() as f64 / n as f64,
                classes.join(", "),
                seeds.join(" "),
                if runs.len() > 4 { " ..." } else { "" }
            );
        }
        if let Some(b) = &self.beside {
            let _ = writeln!(
                s,
                "\nVM beside: {} runs identical to native, {} not",
                b.identical,
                b.failures.len()
            );
        }
        if let Some(why) = &self.stopped_early {
            let _ = writeln!(s, "\nstopped early: {why}");
        }
        let failures = self.failures();
        if !failures.is_empty() {
            s.push_str("\nVMM failures:\n");
            for r in self.runs.iter().filter(|r| r.outcome.is_vmm_failure()) {
                let _ = writeln!(
                    s,
                    "* seed {}: {} (last target class {})\n  `{}`",
                    r.plan.seed,
                    r.message,
                    r.last_class.map_or("-", class_name),
                    r.plan.command(self.timeout)
                );
            }
            for f in failures.iter().filter(|f| !f.starts_with("seed ")) {
                let _ = writeln!(s, "* {f}");
            }
        }
        s
    }

    /// The report as JSON.
    pub fn json(&self) -> Value {
        let classes: Vec<Value> = self
            .classes()
            .iter()
            .map(|(o, runs)| {
                json!({
                    "outcome": o.label(),
                    "vmm_failure": o.is_vmm_failure(),
                    "runs": runs.len(),
                    "seeds": runs.iter().map(|r| r.plan.seed).collect::<Vec<_>>(),
                    "last_classes": runs.iter().map(|r| r.last_class.map(class_name)).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({
            "seeds": self.runs.len(),
            "wall_s": self.wall.as_secs_f64(),
            "timeout_s": self.timeout.as_secs_f64(),
            "resident_before": self.resident.0,
            "resident_after": self.resident.1,
            "heap_before": self.heap.map(|h| h.0),
            "heap_after": self.heap.map(|h| h.1),
            "classes": classes,
            "failures": self.failures(),
            "beside": self.beside.as_ref().map(|b| json!({
                "identical": b.identical,
                "failures": b.failures,
            })),
            "stopped_early": self.stopped_early,
        })
    }
}

/// The comparable workloads' native results, then shadow runs of them (both
/// page-table write styles) in a loop, each compared with its native run:
/// the VM beside. It stops at `stop`, but never before a full round; `done`
/// says when one is.
fn run_beside(stop: &AtomicBool, done: &AtomicBool) -> Beside {
    let mut beside = Beside::default();
    let modes = [PtWrites::Hypercall, PtWrites::Direct];
    let mut natives = Vec::new();
    for w in Workload::COMPARABLE {
        match vm::run(&VmConfig::new(w, PagingMode::Native)) {
            Ok(r) => natives.push((w, r)),
            Err(e) => beside.failures.push(format!("{w} native: {e}")),
        }
    }
    let round = natives.len() * modes.len();
    let mut i = 0usize;
    while !natives.is_empty() && (i < round || !stop.load(Ordering::SeqCst)) {
        let (w, native) = &natives[i % natives.len()];
        let mode = modes[(i / natives.len()) % modes.len()];
        i += 1;
        if i == round {
            done.store(true, Ordering::SeqCst);
        }
        let mut cfg = VmConfig::new(*w, PagingMode::Shadow);
        cfg.pt_writes = mode;
        match vm::run(&cfg) {
            Ok(r) => match crate::soak::compare(*w, native, &r) {
                Ok(()) => beside.identical += 1,
                Err(why) => beside.failures.push(format!("{w} shadow ({mode}): {why}")),
            },
            Err(e) => beside.failures.push(format!("{w} shadow ({mode}): {e}")),
        }
    }
    done.store(true, Ordering::SeqCst);
    beside
}

/// Runs the batch, calling `progress` after each seed.
pub fn run_batch(cfg: &AttackConfig, mut progress: impl FnMut(&SeedRun)) -> AttackReport {
    let t0 = Instant::now();
    // A warm-up run, so that the resident memory before includes what
    // every run allocates once (thread stacks, the allocator's arenas).
    let _ = run_once(SeedPlan::new(cfg.first_seed, 1, 1), cfg.timeout);
    let before = resident_bytes().unwrap_or(0);
    let heap_before = heap_bytes();
    let stop = AtomicBool::new(false);
    // Without a VM beside, nothing to wait for.
    let beside_round = AtomicBool::new(!cfg.beside);
    let next = AtomicU64::new(0);
    let mut runs = Vec::new();
    let mut stopped_early = None;
    let beside = std::thread::scope(|scope| {
        let beside = cfg
            .beside
            .then(|| scope.spawn(|| run_beside(&stop, &beside_round)));
        let (tx, rx) = mpsc::channel::<SeedRun>();
        for _ in 0..cfg.jobs.max(1) {
            let tx = tx.clone();
            let (stop, next, beside_round) = (&stop, &next, &beside_round);
            scope.spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    // With a VM beside, the attack goes on (with further
                    // seeds) until the VM beside has run every workload.
                    let more = i < cfg.seeds || !beside_round.load(Ordering::SeqCst);
                    if !more || cfg.budget.is_some_and(|b| t0.elapsed() >= b) {
                        break;
                    }
                    let seed = cfg.first_seed.wrapping_add(i);
                    let run = run_seed(SeedPlan::new(seed, cfg.classes, cfg.steps), cfg.timeout);
                    if tx.send(run).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        for run in rx {
            progress(&run);
            if run.outcome == Outcome::VmmStuck && stopped_early.is_none() {
                // Its threads still run and hold its memory.
                stopped_early = Some(format!("seed {}: the VMM is stuck", run.plan.seed));
                stop.store(true, Ordering::SeqCst);
            }
            runs.push(run);
        }
        if stopped_early.is_none() && (runs.len() as u64) < cfg.seeds {
            stopped_early = Some(format!(
                "the time budget ran out after {} of {} seeds",
                runs.len(),
                cfg.seeds
            ));
        }
        stop.store(true, Ordering::SeqCst);
        beside.map(|h| {
            h.join().unwrap_or_else(|p| Beside {
                identical: 0,
                failures: vec![format!("panicked: {}", panic_message(p.as_ref()))],
            })
        })
    });
    runs.sort_by_key(|r| r.plan.seed);
    let after = resident_bytes().unwrap_or(0);
    AttackReport {
        heap: heap_before.zip(heap_bytes()),
        runs,
        timeout: cfg.timeout,
        resident: (before, after),
        wall: t0.elapsed(),
        beside,
        stopped_early,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_blanked() {
        assert_eq!(
            blank_numbers("shadow entry at 0x1000020d000 was overwritten: it holds 0x26"),
            "shadow entry at # was overwritten: it holds #"
        );
        assert_eq!(
            blank_numbers("vCPU 0: exception 14 (error code 0x6) at RIP 0x40003907"),
            "vCPU #: exception # (error code #) at RIP #"
        );
        assert_eq!(blank_numbers("x86 vcpu1 [1, 2]"), "x86 vcpu1 [#, #]");
        assert_eq!(
            blank_numbers("instruction bytes fe ff 0f 00 at RIP 0x10, could not be delivered"),
            "instruction bytes # # # # at RIP #, could not be delivered"
        );
        assert_eq!(blank_numbers("bytes [0f, 0b] be"), "bytes [#, #] be");
    }

    #[test]
    fn plans_cover_every_class_and_repeat() {
        let mut seen = 0u64;
        for seed in 0..4 * CLASSES.len() as u64 {
            let p = SeedPlan::new(seed, 0, 24);
            assert_eq!(p, SeedPlan::new(seed, 0, 24));
            if p.classes.count_ones() == 1 {
                seen |= p.classes;
            }
            assert!(p.max_pages >= vm::MIN_MAX_PAGES);
        }
        assert_eq!(seen, (1 << CLASSES.len()) - 1);
        assert_eq!(class_mask("link,leaf").unwrap(), (1 << 11) | (1 << 12));
        assert!(class_mask("nope").is_err());
    }
}
