// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `shadow-run`: drives the shadow-mmu guest page-table walker from scenario
//! files (`walk`), and runs the guest kernel's workloads on KVM (`run`).
//!
//! Exit status of `walk`: 0 on success (faults are results, not failures), 1
//! when a valid scenario could not be run (cannot map guest RAM, output error,
//! a walker bug), 2 on a usage error or a malformed or unreadable scenario.
//! Exit status of `run`: 0 when the guest exited with status 0, 1 when the
//! VM failed or the guest reported a failure, 2 on a usage error.
//! Every error is one line on standard error.

use std::io::{self, Read, Write};
use std::process::ExitCode;

use std::time::Duration;

use shadow_mmu_integration::run::run;
use shadow_mmu_integration::scenario::Scenario;
use shadow_mmu_integration::suite;
use shadow_mmu_integration::vm::{self, PagingMode, VmConfig, Workload};

const USAGE: &str = "\
usage: shadow-run [--json PATH]
       shadow-run bench [--runs N] [--json PATH]
       shadow-run walk SCENARIO.json
       shadow-run run WORKLOAD --paging native|shadow [--vcpus N] [--mem MIB]
                      [--seed S] [--param NAME=VALUE]... [--timeout SECS]
                      [--max-pages N] [--console] [--records]
       shadow-run --help | --version

With no subcommand, runs every workload with shadow paging and, as the
reference, native paging; prints a Markdown table (pass/fail, faults by
cause, exits, SPTEs prefetched, wall times, shadow/native) and, with --json,
writes the same as JSON.

Subcommands:
  bench                run touch (64 MiB, 256 warm passes), spaces (64) and
                       cow (16 MiB) N times per paging mode (default 5),
                       alternating, and print the shadow/native ratios of
                       the medians; with
                       --json PATH also write PATH, PATH.md and PATH.svg
  walk SCENARIO.json   translate the scenario's accesses with the shadow-mmu
                       guest page-table walker and print one JSON line per
                       access, then the final memory line ('-' reads the
                       scenario from standard input)
  run WORKLOAD         boot the guest kernel of resources/guests/ on /dev/kvm
                       and run WORKLOAD (touch, spaces, cow, adbits, huge,
                       access, smp, hostile) in user mode; print a one-line
                       summary with the results checksum.
                       Parameters per workload (0 = default): touch mib,
                       passes, demand-mib; spaces spaces, pages, rounds; cow
                       pages; adbits pages, rounds; huge large-pages, try-1g;
                       access cases; smp pages, iterations. --console copies
                       guest console lines to standard error; --records
                       prints every record word after the summary.
                       --max-pages N (shadow only) caps the shadow pages in
                       use (at least 8): beyond it the MMU reclaims pages,
                       and the guest must behave the same, only slower.
                       Defaults: 1 vCPU (smp: 2), 256 MiB, seed 1, timeout
                       300 s, 16384 shadow pages.

The scenario format is described in resources/SCENARIO.md, the guest ABI in
resources/ABI.md, the workloads in resources/guests/README.md.
Exit status: 0 ok, 1 run failure, 2 usage error or malformed scenario.";

const USAGE_HINT: &str = "(try 'shadow-run --help')";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["-h" | "--help" | "help"] => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        ["-V" | "--version"] => {
            println!("shadow-run {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        ["walk", path] => walk(path),
        ["walk"] => usage_error("walk: missing SCENARIO.json"),
        ["walk", _, extra, ..] => usage_error(&format!("walk: unexpected argument {extra:?}")),
        ["run", rest @ ..] => match parse_run(rest) {
            Ok((cfg, records)) => run_vm(&cfg, records),
            Err(msg) => usage_error(&format!("run: {msg}")),
        },
        [] => suite(None),
        ["--json", path] => suite(Some(path)),
        ["bench", rest @ ..] => match parse_bench(rest) {
            Ok((runs, json)) => bench(runs, json),
            Err(msg) => usage_error(&format!("bench: {msg}")),
        },
        [other, ..] => usage_error(&format!("unknown subcommand {other:?}")),
    }
}

fn vm_error(e: &vm::VmError) -> ExitCode {
    eprintln!("shadow-run: {e}");
    match e {
        vm::VmError::NoKvm(_) | vm::VmError::Config(_) => ExitCode::from(2),
        _ => ExitCode::from(1),
    }
}

fn suite(json: Option<&str>) -> ExitCode {
    let rows = match suite::run_suite(&suite::SUITE) {
        Ok(r) => r,
        Err(e) => return vm_error(&e),
    };
    println!("{}", suite::suite_markdown(&rows));
    if let Some(path) = json {
        let text = suite::suite_json(&rows).to_string();
        if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("shadow-run: cannot write {path}: {e}");
            return ExitCode::from(1);
        }
    }
    if rows.iter().all(suite::SuiteRow::pass) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn parse_bench<'a>(args: &[&'a str]) -> Result<(usize, Option<&'a str>), String> {
    let (mut runs, mut json) = (5usize, None);
    let mut it = args.iter();
    while let Some(&a) = it.next() {
        match a {
            "--runs" => {
                runs = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&n: &usize| (1..=100).contains(&n))
                    .ok_or("--runs needs a number from 1 to 100")?;
            }
            "--json" => json = Some(*it.next().ok_or("--json needs a path")?),
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    Ok((runs, json))
}

fn bench(runs: usize, json: Option<&str>) -> ExitCode {
    let rows = match suite::run_bench(runs) {
        Ok(r) => r,
        Err(e) => return vm_error(&e),
    };
    let md = suite::bench_markdown(&rows, runs);
    println!("{md}");
    if let Some(path) = json {
        let out = [
            (
                path.to_string(),
                suite::bench_json(&rows, runs).to_string() + "\n",
            ),
            (format!("{path}.md"), md),
            (format!("{path}.svg"), suite::bench_svg(&rows)),
        ];
        for (p, text) in out {
            if let Err(e) = std::fs::write(&p, text) {
                eprintln!("shadow-run: cannot write {p}: {e}");
                return ExitCode::from(1);
            }
        }
    }
    ExitCode::SUCCESS
}

fn usage_error(msg: &str) -> ExitCode {
    eprintln!("shadow-run: {msg} {USAGE_HINT}");
    ExitCode::from(2)
}

fn walk(path: &str) -> ExitCode {
    let text = match read_input(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("shadow-run: cannot read {path}: {e}");
            return ExitCode::from(2);
        }
    };
    let scenario = match Scenario::parse(&text) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("shadow-run: {path}: {e}");
            return ExitCode::from(2);
        }
    };
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    match run(&scenario, &mut out).and_then(|()| out.flush().map_err(Into::into)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shadow-run: {path}: {e}");
            ExitCode::from(1)
        }
    }
}

fn read_input(path: &str) -> io::Result<String> {
    if path == "-" {
        let mut text = String::new();
        io::stdin().read_to_string(&mut text)?;
        Ok(text)
    } else {
        std::fs::read_to_string(path)
    }
}

fn parse_num(opt: &str, v: Option<&&str>) -> Result<u64, String> {
    let v = v.ok_or_else(|| format!("{opt} needs a value"))?;
    let parsed = match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse(),
    };
    parsed.map_err(|_| format!("{opt}: {v:?} is not a number"))
}

/// The configuration of `run` and whether to print the records.
fn parse_run(args: &[&str]) -> Result<(VmConfig, bool), String> {
    let (workload, rest) = args.split_first().ok_or("missing WORKLOAD")?;
    let workload: Workload = workload.parse()?;
    let mut paging = None;
    let mut max_pages = None;
    let mut records = false;
    let mut cfg = VmConfig::new(workload, PagingMode::Native);
    let mut it = rest.iter();
    while let Some(&opt) = it.next() {
        match opt {
            "--paging" => {
                let v = it.next().ok_or("--paging needs native or shadow")?;
                paging = Some(v.parse::<PagingMode>()?);
            }
            "--vcpus" => {
                cfg.vcpus = u32::try_from(parse_num(opt, it.next())?)
                    .map_err(|_| "--vcpus: too large".to_string())?
            }
            "--mem" => cfg.mem_mib = parse_num(opt, it.next())?,
            "--seed" => cfg.seed = parse_num(opt, it.next())?,
            "--timeout" => cfg.timeout = Duration::from_secs(parse_num(opt, it.next())?),
            "--max-pages" => {
                let n = parse_num(opt, it.next())?;
                max_pages = Some(
                    u32::try_from(n)
                        .ok()
                        .filter(|&n| n >= vm::MIN_MAX_PAGES)
                        .ok_or_else(|| {
                            format!(
                                "--max-pages: {n} is not from {} to 2^32-1",
                                vm::MIN_MAX_PAGES
                            )
                        })?,
                );
            }
            "--console" => cfg.echo_console = true,
            "--records" => records = true,
            "--param" => {
                let v = it.next().ok_or("--param needs NAME=VALUE")?;
                let (name, value) = v
                    .split_once('=')
                    .ok_or_else(|| format!("--param {v:?}: expected NAME=VALUE"))?;
                let idx = workload
                    .params()
                    .iter()
                    .position(|(n, _)| *n == name)
                    .ok_or_else(|| {
                        let names: Vec<_> = workload.params().iter().map(|(n, _)| *n).collect();
                        format!(
                            "{workload} has no parameter {name:?} (it has: {})",
                            names.join(", ")
                        )
                    })?;
                cfg.params[idx] = parse_num("--param", Some(&value))?;
            }
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    cfg.paging = paging.ok_or("--paging native|shadow is required")?;
    if let Some(n) = max_pages {
        if cfg.paging != PagingMode::Shadow {
            return Err("--max-pages needs --paging shadow".into());
        }
        cfg.max_pages = n;
    }
    Ok((cfg, records))
}

fn run_vm(cfg: &VmConfig, records: bool) -> ExitCode {
    match vm::run(cfg) {
        Ok(report) => {
            println!("{}", report.summary());
            if records {
                for (i, r) in report.results.records.iter().enumerate() {
                    println!("record {i} {r:#018x}");
                }
            }
            if report.exit_status == 0 && report.results.status == 0 {
                ExitCode::SUCCESS
            } else {
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
        }
        Err(e) => {
            eprintln!(
                "shadow-run: run {} --paging {}: {e}",
                cfg.workload, cfg.paging
            );
            ExitCode::from(1)
        }
    }
}
