// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) and any kept
//! crash reproducers (`fuzz/artifacts/<target>/`) through the harnesses of
//! this crate, as ordinary tests (`cargo test --workspace` in `fuzz/`): no
//! nightly toolchain or libFuzzer needed. A corpus directory that is missing or
//! empty fails the test.

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use shadow_mmu_fuzz_common as fuzz_harness;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The regular files of `dir`, sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn replay(target: &str, harness: fn(&[u8])) {
    let corpus = fuzz_dir().join("corpus").join(target);
    let seeds = files(&corpus);
    assert!(
        !seeds.is_empty(),
        "fuzz corpus {} is missing or empty",
        corpus.display()
    );
    let artifacts = files(&fuzz_dir().join("artifacts").join(target));
    let mut failures = Vec::new();
    for path in seeds.iter().chain(artifacts.iter()) {
        let data = match fs::read(path) {
            Ok(d) => d,
            Err(e) => panic!("cannot read {}: {e}", path.display()),
        };
        if let Err(e) = panic::catch_unwind(AssertUnwindSafe(|| harness(&data))) {
            let msg = e
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| e.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            failures.push(format!("{}: {msg}", path.display()));
        }
    }
    println!(
        "fuzz corpus {target}: {} inputs ran ({} corpus, {} artifacts)",
        seeds.len() + artifacts.len(),
        seeds.len(),
        artifacts.len()
    );
    assert!(
        failures.is_empty(),
        "{} of the {target} inputs failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn walker_corpus() {
    replay("walker", fuzz_harness::walker);
}

#[test]
fn mmu_ops_corpus() {
    replay("mmu_ops", fuzz_harness::mmu_ops);
}

#[test]
fn hypercall_corpus() {
    replay("hypercall", fuzz_harness::hypercall);
}

#[test]
fn scenario_corpus() {
    replay("scenario", fuzz_harness::scenario);
}

#[test]
fn emulate_corpus() {
    replay("emulate", fuzz_harness::emulate);
}

#[test]
fn glue_corpus() {
    replay("glue", fuzz_harness::glue);
}
