// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `shadow-run`: runs the guest kernel's workloads on KVM with shadow and
//! native paging (the suite, `bench`, `run`), and drives the shadow-mmu
//! guest page-table walker from scenario files (`walk`).
//!
//! Exit status of `walk`: 0 on success (faults are results, not failures), 1
//! when a valid scenario could not be run (cannot map guest RAM, output error,
//! a walker bug), 2 on a usage error or a malformed or unreadable scenario.
//! Exit status of `run`: 0 when the guest exited with status 0, 1 when the
//! VM failed or the guest reported a failure, 2 on a usage error or a kernel
//! that `--kernel` refuses.
//! Every error is one line on standard error, clap's usage errors included.

use std::borrow::Cow;
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand};
use vm_memory::{GuestAddress, GuestMemoryMmap};

use shadow_mmu_integration::scenario::Scenario;
use shadow_mmu_integration::vm::{
    self, elf, guest, PagingMode, Prefetch, PtWrites, VmConfig, VmError, Workload,
};
use shadow_mmu_integration::walk;
use shadow_mmu_integration::{attack, soak, suite};

/// The top-level usage: clap would show only `[OPTIONS] [COMMAND]`, and the
/// one-line synopsis of each form is what people look for.
const USAGE: &str = "\
shadow-run [--json PATH]
       shadow-run bench [--runs N] [--json PATH]
       shadow-run walk SCENARIO.json
       shadow-run run WORKLOAD --paging native|shadow [--vcpus N] [--mem MIB]
                      [--seed S] [--param NAME=VALUE]... [--timeout SECS]
                      [--max-pages N] [--pt-writes hypercall|direct] [--console]
                      [--records] [--kernel PATH]
       shadow-run attack [--seeds N] [--first-seed S] [--timeout SECS]
                         [--classes LIST] [--steps N] [--beside] [--budget SECS]
                         [--jobs N] [--json PATH]
       shadow-run soak --minutes N [--seed S] [--timeout SECS] [--workloads LIST]
                       [--json PATH]
       shadow-run help [COMMAND] | --help | --version";

const AFTER_HELP: &str = "\
The scenario format is described in resources/SCENARIO.md, the guest ABI in
resources/ABI.md, the workloads in resources/guests/README.md.
Exit status: 0 ok, 1 run failure, 2 usage error or malformed scenario.";

const WALK_AFTER_HELP: &str = "\
Exit status: 0 ok (faults are results, not failures), 1 when a valid
scenario could not be run, 2 on a usage error or a malformed or unreadable
scenario.";

const RUN_AFTER_HELP: &str = "\
Exit status: 0 when the guest exited with status 0, 1 when the VM failed or
the guest reported a failure, 2 on a usage error or a kernel --kernel
refuses.";

/// The lower bound `vm::run_kernel` puts on guest RAM; checked while parsing
/// so that it is a usage error naming the value.
const MIN_MEM_MIB: u64 = 16;

/// Runs the shadow-mmu guest workloads on KVM and drives its guest
/// page-table walker.
///
/// With no subcommand, runs every workload with shadow paging and, as the
/// reference, native paging; prints a Markdown table (pass/fail, faults by
/// cause, exits, SPTEs prefetched, wall times, shadow/native) and, with
/// --json, writes the same as JSON.
#[derive(Debug, Parser)]
#[command(
    name = "shadow-run",
    version,
    override_usage = USAGE,
    after_help = AFTER_HELP,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// Also write the suite's results as JSON to PATH.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measure shadow paging against native paging.
    ///
    /// Runs touch (64 MiB, 256 warm passes), spaces (64) and cow (16 MiB) N
    /// times per paging mode, alternating, and prints the shadow/native
    /// ratios of the medians of the guest's own TSC-timed phases.
    Bench(BenchArgs),
    /// Translate a scenario's accesses with the guest page-table walker.
    ///
    /// Translates the scenario's accesses with the shadow-mmu guest
    /// page-table walker and prints one JSON line per access, then the final
    /// memory line. The scenario format is described in
    /// resources/SCENARIO.md.
    #[command(after_help = WALK_AFTER_HELP)]
    Walk(WalkArgs),
    /// Boot the guest kernel on /dev/kvm and run one workload.
    ///
    /// Boots the guest kernel of resources/guests/ (or the one --kernel
    /// names) on /dev/kvm, runs WORKLOAD in user mode with native or shadow
    /// paging, and prints a one-line summary with the results checksum.
    #[command(after_help = RUN_AFTER_HELP)]
    Run(RunArgs),
    /// Run a hostile guest kernel over many seeds and classify the outcomes.
    ///
    /// Runs the attack workload under shadow paging once per seed (a guest
    /// kernel that writes seeded garbage and crafted values from CPL0 into
    /// the VMM's hidden region: IST frames, chain areas, the switch word,
    /// the root cache, NMI blocks, GDT, IDT, TSS, trampoline code and
    /// shadow entries, between faults and hypercalls), each with a
    /// deadline, and prints a table of how the runs ended: the guest
    /// finished or stopped itself, the VMM ended the VM with an error, the
    /// guest hung until the deadline, or the VMM failed (answered the same
    /// exit until the deadline and again until ten times it, got stuck,
    /// panicked). Resident memory and the heap are compared before and
    /// after the batch.
    #[command(after_help = ATTACK_AFTER_HELP)]
    Attack(AttackArgs),
    /// Run every workload in random order and configurations for a while.
    ///
    /// Picks a comparable workload, a seed, native or shadow paging (page
    /// tables written by hypercall or by ordinary stores), a shadow-page cap
    /// and a vCPU count at random, runs it, and checks every shadow run
    /// against the native run of the same workload, seed and vCPUs, until
    /// the time is up; prints a line per run, then a summary with the
    /// process's resident memory at the start and the end.
    #[command(after_help = SOAK_AFTER_HELP)]
    Soak(SoakArgs),
}

const ATTACK_AFTER_HELP: &str = "\
Target classes: ist-frame, forged-exit, fake-exception, chain-area,
switch-word, root-cache, nmi-word, gdt, idt, tss, trampoline, link, leaf,
arena, raw-cr3, relink, read, guest-relink (an ordinary guest's unmap and
remap) and arm (resources/guests/README.md).
Exit status: 0 when the VMM never failed (no panic, no stuck vCPU thread,
no exit answered until the deadline, resident memory within bounds, the VM
beside always identical to native), 1 otherwise, 2 on a usage error.";

const SOAK_AFTER_HELP: &str = "\
Exit status: 0 when every run passed, 1 when one failed, 2 on a usage error.";

#[derive(Debug, Args)]
struct AttackArgs {
    /// How many seeds.
    #[arg(long, value_name = "N", default_value_t = 200, value_parser = number)]
    seeds: u64,

    /// The first seed.
    #[arg(long, value_name = "S", default_value_t = 0, value_parser = number)]
    first_seed: u64,

    /// The deadline of each seed's run, in seconds (decimals allowed).
    #[arg(long, value_name = "SECS", default_value = "2", value_parser = seconds)]
    timeout: Duration,

    /// Target classes every seed draws from, comma-separated [default: one
    /// class per seed in turn, every fourth seed all of them].
    #[arg(long, value_name = "LIST", value_parser = attack::class_mask)]
    classes: Option<u64>,

    /// Attack steps per run.
    #[arg(long, value_name = "N", default_value_t = 24, value_parser = number)]
    steps: u64,

    /// Run a second VM in this process meanwhile, with the comparable
    /// workloads under shadow paging, each checked against its native run.
    #[arg(long)]
    beside: bool,

    /// Stop starting seeds after this many seconds.
    #[arg(long, value_name = "SECS", value_parser = seconds)]
    budget: Option<Duration>,

    /// Seeds run at once, each in a VM of its own in this process, 1 to 16.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = jobs)]
    jobs: usize,

    /// Also write the report as JSON to PATH.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct SoakArgs {
    /// How long, in minutes (decimals allowed).
    #[arg(long, value_name = "N", value_parser = minutes)]
    minutes: Duration,

    /// The seed of the soak's choices.
    #[arg(long, value_name = "S", default_value_t = 1, value_parser = number)]
    seed: u64,

    /// The deadline of each run, in seconds.
    #[arg(long, value_name = "SECS", default_value = "300", value_parser = seconds)]
    timeout: Duration,

    /// The workloads to pick from, comma-separated [default: every one
    /// with results to compare: the suite's].
    #[arg(long, value_name = "LIST", value_delimiter = ',',
          value_parser = comparable_workload)]
    workloads: Vec<Workload>,

    /// Also write the summary as JSON to PATH.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct BenchArgs {
    /// Runs per paging mode and workload, 1 to 100.
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = runs)]
    runs: usize,

    /// Also write the results as JSON to PATH, the table to PATH.md and a
    /// chart to PATH.svg.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct WalkArgs {
    /// The scenario file ('-' reads it from standard input).
    #[arg(value_name = "SCENARIO.json")]
    scenario: PathBuf,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The workload (--help lists each one's parameters for --param, with
    /// their defaults).
    #[arg(value_name = "WORKLOAD", value_parser = workload_parser())]
    workload: Workload,

    /// Native paging (KVM walks the guest's tables) or shadow paging (the
    /// vCPU's CR3 points at tables shadow-mmu built).
    #[arg(long, value_name = "MODE", value_parser = paging_parser())]
    paging: PagingMode,

    /// Shadow paging only: how the guest kernel writes its page tables,
    /// with `MMU_UPDATE` hypercalls or with the same stores as natively,
    /// which the VMM emulates where they hit a write-protected table.
    #[arg(long, value_name = "STYLE", value_parser = pt_writes_parser())]
    pt_writes: Option<PtWrites>,

    /// Shadow paging only: which guest entries a fault maps besides its
    /// own.
    #[arg(long, value_name = "POLICY", value_parser = prefetch_parser())]
    prefetch: Option<Prefetch>,

    /// Shadow paging only: a write to a clean page exits to the VMM, as
    /// under KVM, rather than being resolved by the trampoline (one vCPU).
    #[arg(long)]
    no_dirty_fast_path: bool,

    /// Number of vCPUs, 1 to 8 [default: 1, smp: 2].
    #[arg(long, value_name = "N", value_parser = vcpus)]
    vcpus: Option<u32>,

    /// Guest RAM in MiB, 16 to 3072.
    #[arg(long, value_name = "MIB", default_value_t = defaults().mem_mib,
          value_parser = mem_mib)]
    mem: u64,

    /// The seed (workload parameter 0).
    #[arg(long, value_name = "S", default_value_t = defaults().seed, value_parser = number)]
    seed: u64,

    /// Set a parameter of the workload (repeatable); 0 takes the guest's
    /// default.
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = param)]
    params: Vec<(String, u64)>,

    /// How long the guest may run, in seconds (decimals allowed); then the
    /// VMM stops its vCPUs and says what they were doing.
    #[arg(long, value_name = "SECS",
          default_value_t = defaults().timeout.as_secs_f64(), value_parser = seconds_f64)]
    timeout: f64,

    /// Shadow paging only: cap the shadow pages in use, at least 8
    /// [default: 16384]. Beyond it the MMU reclaims pages, and the guest
    /// must behave the same, only slower.
    #[arg(long, value_name = "N", value_parser = max_pages)]
    max_pages: Option<u32>,

    /// Copy the guest's console lines to standard error as they come.
    #[arg(long)]
    console: bool,

    /// Print every record word after the summary.
    #[arg(long)]
    records: bool,

    /// Boot this kernel ELF instead of the embedded guest kernel; it must
    /// carry the "ShadowMMU" ABI note (resources/ABI.md). Implies
    /// --console; when the kernel keeps no results buffer, the summary is
    /// its exit status.
    #[arg(long, value_name = "PATH")]
    kernel: Option<PathBuf>,
}

/// The defaults `run` shows and starts from.
fn defaults() -> VmConfig {
    VmConfig::new(Workload::Touch, PagingMode::Native)
}

/// What a workload does, for `run --help`.
fn workload_about(w: Workload) -> &'static str {
    match w {
        Workload::Touch => {
            "first touch of N MiB (sequential, random, demand-paged), then warm passes"
        }
        Workload::Spaces => "K address spaces switched round-robin",
        Workload::Cow => "a fork-like clone of an address space and copy-on-write faults",
        Workload::Adbits => "accessed/dirty harvesting as a page reclaimer does it",
        Workload::Huge => "2 MiB pages: touch, split, collapse (1 GiB: shadow only)",
        Workload::Access => "a sampled access matrix (PTE/PDE flags x paging bits x accesses)",
        Workload::Smp => "two vCPUs: one remaps pages the other is reading",
        Workload::Hostile => {
            "mappings into the hole, the hidden region and beyond RAM, recursive and looping \
             tables, garbage hypercall arguments"
        }
        Workload::Remap => {
            "live leaf entries rewritten (frame, W, P, NX) and invalidated with INVLPG, then \
             read, written and executed through"
        }
        Workload::Attack => {
            "a hostile guest kernel: seeded CPL0 writes into the VMM's hidden region between \
             faults and hypercalls (classes: a bit mask of the target classes, 0 all; relink: \
             rounds of the relink class)"
        }
        Workload::SpinUser => "never returns: spins at CPL3 (end it with --timeout)",
        Workload::SpinKernel => "never returns: spins at CPL0 (end it with --timeout)",
        Workload::FaultLoop => {
            "never returns: faults on one address forever, its handler fixing nothing (end it \
             with --timeout)"
        }
        Workload::Timer => {
            "local APIC timer interrupts preempt user tasks, each in its own address space \
             (tasks: at most 8; period-us: the timer period; min-ticks: ticks to wait for)"
        }
    }
}

/// `run --help`'s line for a workload: what it does and its parameters.
fn workload_help(w: Workload) -> String {
    let params: Vec<String> = w
        .params()
        .iter()
        .map(|(name, default)| format!("{name} (default {default})"))
        .collect();
    if params.is_empty() {
        format!("{}; no parameters", workload_about(w))
    } else {
        format!("{}; parameters: {}", workload_about(w), params.join(", "))
    }
}

/// Workload names as clap possible values, so that help lists them and an
/// error names the bad value along with the good ones.
fn workload_parser() -> impl TypedValueParser<Value = Workload> {
    PossibleValuesParser::new(
        Workload::ALL.map(|w| PossibleValue::new(w.name()).help(workload_help(w))),
    )
    .try_map(|s| s.parse::<Workload>())
}

fn paging_parser() -> impl TypedValueParser<Value = PagingMode> {
    PossibleValuesParser::new([
        PossibleValue::new("native").help("KVM walks the guest's page tables"),
        PossibleValue::new("shadow").help("shadow-mmu builds the tables the vCPU runs on"),
    ])
    .try_map(|s| s.parse::<PagingMode>())
}

fn pt_writes_parser() -> impl TypedValueParser<Value = PtWrites> {
    PossibleValuesParser::new([
        PossibleValue::new("hypercall").help("MMU_UPDATE hypercalls [default]"),
        PossibleValue::new("direct").help("ordinary stores, emulated by the VMM"),
    ])
    .try_map(|s| s.parse::<PtWrites>())
}

fn prefetch_parser() -> impl TypedValueParser<Value = Prefetch> {
    PossibleValuesParser::new([
        PossibleValue::new("exact").help("accessed entries only, KVM's rule [default]"),
        PossibleValue::new("speculative")
            .help("also never-accessed ones, setting their A bit as a speculating CPU may"),
    ])
    .map(|s| {
        if s == "speculative" {
            Prefetch::Speculative
        } else {
            Prefetch::Exact
        }
    })
}

/// A number, decimal or `0x` hexadecimal.
fn number(s: &str) -> Result<u64, String> {
    let parsed = match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|_| "not a number (decimal or 0x hexadecimal)".to_string())
}

/// A workload whose results compare with native runs.
fn comparable_workload(s: &str) -> Result<Workload, String> {
    let w: Workload = s.trim().parse()?;
    if Workload::COMPARABLE.contains(&w) {
        Ok(w)
    } else {
        Err(format!("{w} has no results to compare with a native run"))
    }
}

/// A positive number of seconds, decimals allowed.
fn seconds(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v > 0.0 && *v <= 1e6)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| "not a number of seconds above 0".to_string())
}

/// [`seconds`] as a number, for a default clap can show.
fn seconds_f64(s: &str) -> Result<f64, String> {
    seconds(s).map(|d| d.as_secs_f64())
}

/// A positive number of minutes, decimals allowed.
fn minutes(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v > 0.0 && *v <= 1e5)
        .map(|m| Duration::from_secs_f64(m * 60.0))
        .ok_or_else(|| "not a number of minutes above 0".to_string())
}

fn jobs(s: &str) -> Result<usize, String> {
    usize::try_from(number(s)?)
        .ok()
        .filter(|n| (1..=16).contains(n))
        .ok_or_else(|| "not from 1 to 16".to_string())
}

fn runs(s: &str) -> Result<usize, String> {
    usize::try_from(number(s)?)
        .ok()
        .filter(|n| (1..=100).contains(n))
        .ok_or_else(|| "not from 1 to 100".to_string())
}

fn vcpus(s: &str) -> Result<u32, String> {
    let n = number(s)?;
    u32::try_from(n)
        .ok()
        .filter(|n| (1..=vm::MAX_VCPUS).contains(n))
        .ok_or_else(|| format!("not from 1 to {}", vm::MAX_VCPUS))
}

fn mem_mib(s: &str) -> Result<u64, String> {
    Some(number(s)?)
        .filter(|n| (MIN_MEM_MIB..=vm::MAX_MEM_MIB).contains(n))
        .ok_or_else(|| format!("not from {MIN_MEM_MIB} to {}", vm::MAX_MEM_MIB))
}

fn max_pages(s: &str) -> Result<u32, String> {
    u32::try_from(number(s)?)
        .ok()
        .filter(|&n| n >= vm::MIN_MAX_PAGES)
        .ok_or_else(|| format!("not from {} to 2^32-1", vm::MIN_MAX_PAGES))
}

/// `NAME=VALUE`; the name is checked against the workload once it is known.
fn param(s: &str) -> Result<(String, u64), String> {
    let (name, value) = s.split_once('=').ok_or("expected NAME=VALUE")?;
    let value = number(value).map_err(|e| format!("{name}: {e}"))?;
    Ok((name.to_string(), value))
}

impl RunArgs {
    /// The VM configuration, after the checks that span several options.
    fn config(&self) -> Result<VmConfig, String> {
        let mut cfg = VmConfig::new(self.workload, self.paging);
        if let Some(n) = self.vcpus {
            cfg.vcpus = n;
        }
        cfg.mem_mib = self.mem;
        cfg.seed = self.seed;
        cfg.timeout = Duration::from_secs_f64(self.timeout);
        // A foreign kernel may keep no results buffer: its console is then
        // the only account of what it did.
        cfg.echo_console = self.console || self.kernel.is_some();
        let names = self.workload.params();
        for (name, value) in &self.params {
            let idx = names.iter().position(|(n, _)| n == name).ok_or_else(|| {
                let all: Vec<_> = names.iter().map(|(n, _)| *n).collect();
                format!(
                    "{} has no parameter {name:?} (it has: {})",
                    self.workload,
                    if all.is_empty() {
                        "none".to_string()
                    } else {
                        all.join(", ")
                    }
                )
            })?;
            cfg.params[idx] = *value;
        }
        if let Some(n) = self.max_pages {
            if self.paging != PagingMode::Shadow {
                return Err("--max-pages needs --paging shadow".into());
            }
            cfg.max_pages = n;
        }
        if let Some(w) = self.pt_writes {
            if self.paging != PagingMode::Shadow {
                return Err("--pt-writes needs --paging shadow".into());
            }
            cfg.pt_writes = w;
        }
        if let Some(p) = self.prefetch {
            if self.paging != PagingMode::Shadow {
                return Err("--prefetch needs --paging shadow".into());
            }
            cfg.prefetch = p;
        }
        if self.no_dirty_fast_path {
            if self.paging != PagingMode::Shadow {
                return Err("--no-dirty-fast-path needs --paging shadow".into());
            }
            cfg.dirty_fast_path = false;
        }
        Ok(cfg)
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return parse_error(&e),
    };
    match cli.command {
        None => suite(cli.json.as_deref()),
        Some(Command::Bench(args)) => bench(args.runs, args.json.as_deref()),
        Some(Command::Walk(args)) => walk(&args.scenario),
        Some(Command::Run(args)) => match args.config() {
            Ok(cfg) => run_vm(&cfg, &args),
            Err(msg) => usage_error(Some("run"), &msg),
        },
        Some(Command::Attack(args)) => attack_cmd(&args),
        Some(Command::Soak(args)) => soak_cmd(&args),
    }
}

/// Writes `text` to `path`, or says why not.
/// The end of a command with a report: its JSON written to `json` if asked
/// for, then status 0 if nothing failed, 1 otherwise.
fn finish(json: Option<&Path>, text: impl FnOnce() -> String, passed: bool) -> ExitCode {
    if let Some(path) = json {
        if let Err(code) = write_json(path, text()) {
            return code;
        }
    }
    if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn write_json(path: &Path, text: String) -> Result<(), ExitCode> {
    std::fs::write(path, text + "\n").map_err(|e| {
        eprintln!("shadow-run: cannot write {}: {e}", path.display());
        ExitCode::from(1)
    })
}

fn attack_cmd(args: &AttackArgs) -> ExitCode {
    let cfg = attack::AttackConfig {
        first_seed: args.first_seed,
        seeds: args.seeds,
        timeout: args.timeout,
        classes: args.classes.unwrap_or(0),
        steps: args.steps,
        beside: args.beside,
        budget: args.budget,
        jobs: args.jobs,
    };
    let mut done = 0;
    let report = attack::run_batch(&cfg, |run| {
        done += 1;
        suite::progress(format_args!(
            "\r[{done}/{}] seed {}: {}                ",
            cfg.seeds,
            run.plan.seed,
            run.outcome.label().chars().take(60).collect::<String>()
        ));
    });
    suite::progress(format_args!("\r{:80}\r", ""));
    if report.runs.is_empty() && report.stopped_early.is_none() {
        // Not even the warm-up: most likely no /dev/kvm.
        if let Err(e) = vm::run(&VmConfig::new(Workload::Touch, PagingMode::Native)) {
            return vm_error(&e);
        }
    }
    println!("{}", report.markdown());
    finish(
        args.json.as_deref(),
        || report.json().to_string(),
        report.failures().is_empty(),
    )
}

fn soak_cmd(args: &SoakArgs) -> ExitCode {
    // Without /dev/kvm every run would fail the same way: say it once.
    if let Err(e @ VmError::NoKvm(_)) =
        vm::run(&VmConfig::new(Workload::Hostile, PagingMode::Native))
    {
        return vm_error(&e);
    }
    // One malloc arena: glibc gives threads arenas of their own as more of
    // them run at once (every VM brings its vCPU threads) and keeps them,
    // so resident memory would follow the most threads ever alive rather
    // than what the VMM holds, which is what the soak measures.
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator tunable, under the
    // allocator's own lock; nothing else is affected.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    let cfg = soak::SoakConfig {
        duration: args.minutes,
        seed: args.seed,
        timeout: args.timeout,
        workloads: args.workloads.clone(),
    };
    let report = soak::run_soak(&cfg, |run| println!("{run}"));
    println!("{}", report.summary());
    finish(
        args.json.as_deref(),
        || report.json().to_string(),
        report.failures().is_empty(),
    )
}

/// Prints a usage error as one line, with where to find help.
fn usage_error(subcommand: Option<&str>, msg: &str) -> ExitCode {
    match subcommand {
        Some(sub) => eprintln!("shadow-run: {sub}: {msg} (try 'shadow-run {sub} --help')"),
        None => eprintln!("shadow-run: {msg} (try 'shadow-run --help')"),
    }
    ExitCode::from(2)
}

/// Prints help or the version, or a clap error as one line.
fn parse_error(e: &clap::Error) -> ExitCode {
    if !e.use_stderr() {
        // --help and --version.
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    // Top-level options conflict with subcommands, so a subcommand, if
    // any, is the first argument.
    let first = std::env::args_os().nth(1);
    let sub = ["bench", "walk", "run", "attack", "soak"]
        .into_iter()
        .find(|s| first.as_deref() == Some(OsStr::new(s)));
    usage_error(sub, &one_line(&e.render().to_string()))
}

/// Clap's error without its usage and help hint, on one line: every
/// `shadow-run` error is one line, and `usage_error` adds the hint.
fn one_line(rendered: &str) -> String {
    let mut out = String::new();
    let mut in_usage = false;
    for line in rendered.lines().map(str::trim) {
        if line.is_empty() {
            in_usage = false;
        } else if line.starts_with("Usage:") {
            in_usage = true;
        } else if !in_usage && !line.starts_with("For more information") {
            let line = line.strip_prefix("error: ").unwrap_or(line);
            // Continuations (a list after "...:", "[possible values: ...]")
            // stay with their line; separate remarks ("tip: ...") do not.
            if out.ends_with(':') || line.starts_with('[') {
                out.push(' ');
            } else if !out.is_empty() {
                out.push_str("; ");
            }
            out.push_str(line);
        }
    }
    out
}

fn vm_error(e: &VmError) -> ExitCode {
    eprintln!("shadow-run: {e}");
    match e {
        VmError::NoKvm(_) | VmError::Config(_) => ExitCode::from(2),
        _ => ExitCode::from(1),
    }
}

fn suite(json: Option<&Path>) -> ExitCode {
    let rows = match suite::run_suite(&suite::SUITE) {
        Ok(r) => r,
        Err(e) => return vm_error(&e),
    };
    println!("{}", suite::suite_markdown(&rows));
    if let Some(path) = json {
        let text = suite::suite_json(&rows).to_string();
        if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("shadow-run: cannot write {}: {e}", path.display());
            return ExitCode::from(1);
        }
    }
    if rows.iter().all(suite::SuiteRow::pass) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// `path` with `suffix` appended to its file name.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

fn bench(runs: usize, json: Option<&Path>) -> ExitCode {
    let bench = match suite::run_bench(runs) {
        Ok(b) => b,
        Err(e) => return vm_error(&e),
    };
    let md = suite::bench_markdown(&bench, runs);
    println!("{md}");
    if let Some(path) = json {
        let out = [
            (
                path.to_path_buf(),
                suite::bench_json(&bench, runs).to_string() + "\n",
            ),
            (with_suffix(path, ".md"), md),
            (with_suffix(path, ".svg"), suite::bench_svg(&bench.rows)),
        ];
        for (p, text) in out {
            if let Err(e) = std::fs::write(&p, text) {
                eprintln!("shadow-run: cannot write {}: {e}", p.display());
                return ExitCode::from(1);
            }
        }
    }
    ExitCode::SUCCESS
}

fn walk(path: &Path) -> ExitCode {
    let shown = path.display();
    let text = match read_input(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("shadow-run: cannot read {shown}: {e}");
            return ExitCode::from(2);
        }
    };
    let scenario = match Scenario::parse(&text) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("shadow-run: {shown}: {e}");
            return ExitCode::from(2);
        }
    };
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    match walk::run(&scenario, &mut out).and_then(|()| out.flush().map_err(Into::into)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shadow-run: {shown}: {e}");
            ExitCode::from(1)
        }
    }
}

fn read_input(path: &Path) -> io::Result<String> {
    if path.as_os_str() == "-" {
        let mut text = String::new();
        io::stdin().read_to_string(&mut text)?;
        Ok(text)
    } else {
        std::fs::read_to_string(path)
    }
}

/// Reads the kernel ELF at `path` and loads it once into scratch memory the
/// size of the run's RAM: a file the VM would refuse is then refused before
/// /dev/kvm is opened, and as a usage error rather than a failed run.
fn foreign_kernel(path: &Path, mem_mib: u64) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
    let ram = mem_mib << 20;
    let len = usize::try_from(ram).map_err(|_| format!("{mem_mib} MiB do not fit here"))?;
    let scratch = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), len)])
        .map_err(|e| format!("cannot map {mem_mib} MiB to check it: {e}"))?;
    elf::load(&bytes, &scratch, ram).map_err(|e| e.to_string())?;
    Ok(bytes)
}

fn run_vm(cfg: &VmConfig, args: &RunArgs) -> ExitCode {
    let kernel = match &args.kernel {
        None => Cow::Borrowed(guest::KERNEL_ELF),
        Some(path) => match foreign_kernel(path, cfg.mem_mib) {
            Ok(k) => Cow::Owned(k),
            Err(msg) => {
                eprintln!("shadow-run: run: --kernel {}: {msg}", path.display());
                return ExitCode::from(2);
            }
        },
    };
    let report = match vm::run_kernel(cfg, &kernel) {
        Ok(report) => report,
        Err(VmError::Results(why, status)) if args.kernel.is_some() => {
            // Only the project's kernel promises a results buffer: for
            // another, its exit status is the outcome (and its console went
            // to standard error as it ran).
            println!(
                "{} {}: exit status {status:#x}, no results ({why})",
                cfg.workload, cfg.paging
            );
            if status == 0 {
                return ExitCode::SUCCESS;
            }
            eprintln!(
                "shadow-run: run {}: the guest exited with status {status:#x}",
                cfg.workload
            );
            return ExitCode::from(1);
        }
        Err(e @ VmError::Config(_)) => {
            // What the parser cannot see, e.g. smp with one vCPU.
            return usage_error(Some("run"), &e.to_string());
        }
        Err(e) => {
            eprintln!(
                "shadow-run: run {} --paging {}: {e}",
                cfg.workload, cfg.paging
            );
            return ExitCode::from(1);
        }
    };
    println!("{}", report.summary());
    if args.records {
        for (i, r) in report.results.records.iter().enumerate() {
            println!("record {i} {r:#018x}");
        }
    }
    if report.exit_status == 0 && report.results.status == 0 {
        return ExitCode::SUCCESS;
    }
    let f = report.results.failure;
    let detail = if f == [0; 4] {
        String::new()
    } else {
        format!(
            ": vector {} error code {:#x} RIP {:#x} CR2 {:#x}",
            f[0], f[1], f[2], f[3]
        )
    };
    eprintln!(
        "shadow-run: run {}: the guest exited with status {:#x} ({}){detail}",
        cfg.workload,
        report.exit_status,
        vm::status_name(report.results.status)
    );
    ExitCode::from(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn help_states_the_vm_defaults() {
        // The defaults clap cannot show (they depend on other options) are
        // written in the doc comments: keep them equal to the VM's.
        let mut cmd = Cli::command();
        let help = cmd
            .find_subcommand_mut("run")
            .expect("run")
            .render_long_help()
            .to_string();
        assert!(help.contains(&format!("[default: {}]", vm::DEFAULT_MAX_PAGES)));
        assert!(help.contains(&format!("at least {}", vm::MIN_MAX_PAGES)));
        assert!(help.contains(&format!("1 to {}", vm::MAX_VCPUS)));
        assert!(help.contains(&format!("{MIN_MEM_MIB} to {}", vm::MAX_MEM_MIB)));
        assert!(help.contains(&format!(
            "[default: {}, smp: {}]",
            defaults().vcpus,
            Workload::Smp.min_vcpus()
        )));
        for w in Workload::ALL {
            for (name, default) in w.params() {
                assert!(help.contains(&format!("{name} (default {default})")));
            }
        }
    }

    #[test]
    fn clap_errors_become_one_line() {
        let e = Cli::try_parse_from(["shadow-run", "run", "frob", "--paging", "native"])
            .expect_err("unknown workload");
        let line = one_line(&e.render().to_string());
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains("'frob'"), "{line}");
        assert!(line.contains("touch"), "{line}");
        assert!(!line.contains("Usage"), "{line}");
    }
}
