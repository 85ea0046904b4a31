// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `shadow-run`: drives the shadow-mmu guest page-table walker from scenario
//! files.
//!
//! Exit status: 0 on success (faults are results, not failures), 1 when a
//! valid scenario could not be run (cannot map guest RAM, output error, a
//! walker bug), 2 on a usage error or a malformed or unreadable scenario.
//! Every error is one line on standard error.

use std::io::{self, Read, Write};
use std::process::ExitCode;

use shadow_mmu_integration::run::run;
use shadow_mmu_integration::scenario::Scenario;

const USAGE: &str = "\
usage: shadow-run walk SCENARIO.json
       shadow-run --help | --version

Subcommands:
  walk SCENARIO.json   translate the scenario's accesses with the shadow-mmu
                       guest page-table walker and print one JSON line per
                       access, then the final memory line ('-' reads the
                       scenario from standard input)

The scenario format is described in resources/SCENARIO.md.
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
        [] => usage_error("missing subcommand"),
        [other, ..] => usage_error(&format!("unknown subcommand {other:?}")),
    }
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
