// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `shadow-run soak` on `/dev/kvm`: workloads in random order and
//! configurations, each shadow run checked against its native run. A few
//! seconds of it here; the one-minute soak over every workload is
//! `--ignored` (the soak's figures in `README.md` come from a 30-minute
//! run). These tests need `/dev/kvm`: without it they FAIL (they never
//! skip).

use std::process::{Command, Stdio};
use std::time::Duration;

use shadow_mmu_integration::soak::{self, SoakConfig};

/// Three seconds of two quick workloads through the command line: a line
/// per run, the summary with resident memory, JSON, exit status 0.
#[test]
fn a_short_soak_passes_and_reports_memory() {
    let json = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("soak.json");
    let out = Command::new(env!("CARGO_BIN_EXE_shadow-run"))
        .args(["soak", "--minutes", "0.05", "--seed", "2"])
        .args(["--workloads", "hostile,remap", "--json"])
        .arg(&json)
        .stdin(Stdio::null())
        .output()
        .expect("cannot start shadow-run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("/dev/kvm"),
        "this test needs /dev/kvm and cannot run without it: {stderr}"
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    let runs = stdout.lines().filter(|l| l.ends_with(", ok")).count();
    assert!(runs >= 2, "{stdout}");
    for needle in [
        "soak seed 2: ",
        " 0 failed",
        "  hostile: native ",
        "  remap: native ",
        "resident memory: ",
    ] {
        assert!(stdout.contains(needle), "{stdout:?} lacks {needle:?}");
    }
    assert!(!stdout.contains("  touch: "), "{stdout}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("JSON written")).expect("JSON");
    assert_eq!(v["runs"].as_u64(), Some(runs as u64));
    assert!(v["resident_end"].as_u64().is_some_and(|r| r > 0));
    assert_eq!(v["failures"].as_array().map(Vec::len), Some(0));
}

/// A minute of every comparable workload: no failure, and the VMM's heap
/// after the soak's first quarter stays where it was (no VM is alive
/// between runs; what the soak keeps itself is a few hundred bytes a run).
#[test]
#[ignore = "a minute or more; run with --ignored"]
fn one_minute_soak() {
    let cfg = SoakConfig {
        duration: Duration::from_secs(60),
        seed: 1,
        timeout: Duration::from_secs(300),
        workloads: Vec::new(),
    };
    let report = soak::run_soak(&cfg, |run| eprintln!("{run}"));
    eprintln!("{}", report.summary());
    let failures: Vec<String> = report.failures().iter().map(|r| r.to_string()).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let (_, quarter, last, _) = report.memory_marks().expect("memory samples");
    if let (Some(q), Some(l)) = (quarter.heap, last.heap) {
        assert!(
            l < q + (1 << 20),
            "the heap grew from {q} to {l} bytes over the soak"
        );
    }
}
