// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! End-to-end tests of `shadow-run walk`: every shipped scenario must print
//! exactly its hand-derived `.expected` output, and malformed input must be
//! rejected with exit status 2 and a one-line message naming the field.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_shadow-run");

fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../resources/scenarios")
}

fn run_file(path: &Path) -> Output {
    Command::new(BIN)
        .arg("walk")
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .expect("cannot start shadow-run")
}

fn run_stdin(text: &str) -> Output {
    let mut child = Command::new(BIN)
        .args(["walk", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start shadow-run");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Shows the first differing line of two outputs.
fn first_difference(got: &str, want: &str) -> String {
    for (i, (g, w)) in got.lines().zip(want.lines()).enumerate() {
        if g != w {
            return format!("line {}:\n  got:  {g}\n  want: {w}", i + 1);
        }
    }
    format!(
        "{} lines, want {} lines",
        got.lines().count(),
        want.lines().count()
    )
}

#[test]
fn shipped_scenarios_match_expected_output() {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(scenarios_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            names.push(path);
        }
    }
    names.sort();
    assert!(
        names.len() >= 7,
        "expected at least 7 scenarios in {}, found {}",
        scenarios_dir().display(),
        names.len()
    );

    let mut failures = Vec::new();
    for json in &names {
        let expected_path = json.with_extension("expected");
        let want = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|e| panic!("{}: {e}", expected_path.display()));
        let out = run_file(json);
        let got = String::from_utf8(out.stdout).unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let name = json.file_name().unwrap().to_string_lossy();
        if !out.status.success() {
            failures.push(format!("{name}: exit {:?}: {stderr}", out.status.code()));
        } else if got != want {
            failures.push(format!("{name}: {}", first_difference(&got, &want)));
        } else if !stderr.is_empty() {
            failures.push(format!("{name}: unexpected stderr: {stderr}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} scenarios differ:\n{}",
        failures.len(),
        names.len(),
        failures.join("\n")
    );
}

/// Asserts that `out` is a clean rejection: exit 2, nothing on stdout, one
/// line on stderr that contains `needle`, no panic.
fn assert_rejected(out: &Output, needle: &str, what: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{what}: stderr {stderr:?}");
    assert!(out.stdout.is_empty(), "{what}: stdout {:?}", out.stdout);
    assert!(
        stderr.ends_with('\n') && stderr.matches('\n').count() == 1,
        "{what}: want one line on stderr, got {stderr:?}"
    );
    assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    assert!(
        stderr.contains(needle),
        "{what}: stderr {stderr:?} does not name {needle:?}"
    );
}

const CPU: &str =
    r#""cpu": {"cr0": "0x80010033", "cr3": "0x1000", "cr4": "0x20", "efer": "0xd00"}"#;
const CPU_PAE: &str =
    r#""cpu": {"cr0": "0x80000001", "cr3": "0x1000", "cr4": "0x20", "efer": "0x0"}"#;

/// A scenario with `cpu`, and the other top-level fields given as text.
fn scenario(cpu: &str, memory_size: &str, writes: &str, accesses: &str) -> String {
    format!(
        r#"{{{cpu}, "memory_size": {memory_size}, "writes": [{writes}], "accesses": [{accesses}]}}"#
    )
}

fn with_write(write: &str) -> String {
    scenario(CPU, r#""0x10000""#, write, "")
}

fn with_access(access: &str) -> String {
    scenario(CPU, r#""0x10000""#, "", access)
}

fn with_cpu(cpu_fields: &str) -> String {
    scenario(
        &format!(r#""cpu": {{{cpu_fields}}}"#),
        r#""0x10000""#,
        "",
        "",
    )
}

const BASE_CPU: &str = r#""cr0": "0x80010033", "cr3": "0x1000", "cr4": "0x20", "efer": "0xd00""#;

#[test]
fn malformed_scenarios_are_rejected_naming_the_field() {
    let cases: Vec<(String, &str)> = vec![
        // Not JSON, or not the right shape.
        ("{".into(), "invalid JSON"),
        ("".into(), "invalid JSON"),
        ("[1, 2]".into(), "(top level)"),
        ("{} trailing".into(), "invalid JSON"),
        // Missing and unknown fields.
        ("{}".into(), "cpu: missing"),
        (
            format!(r#"{{{CPU}, "writes": [], "accesses": []}}"#),
            "memory_size: missing",
        ),
        (
            format!(r#"{{{CPU}, "memory_size": 4096, "accesses": []}}"#),
            "writes: missing",
        ),
        (
            format!(r#"{{{CPU}, "memory_size": 4096, "writes": []}}"#),
            "accesses: missing",
        ),
        (
            format!(r#"{{{CPU}, "memory_size": 4096, "writes": [], "accesses": [], "extra": 1}}"#),
            "extra: unknown field",
        ),
        (
            with_cpu(r#""cr0": "0x1", "cr3": "0x0", "cr4": "0x0""#),
            "cpu.efer: missing",
        ),
        (
            with_cpu(&format!(r#"{BASE_CPU}, "cpl": 3"#)),
            "cpu.cpl: unknown",
        ),
        (
            with_write(r#"{"gpa": "0x0", "width": 8}"#),
            "writes[0].value: missing",
        ),
        (
            with_write(r#"{"gpa": "0x0", "width": 8, "value": 0, "size": 8}"#),
            "writes[0].size: unknown",
        ),
        (
            with_access(r#"{"kind": "read"}"#),
            "accesses[0].gva: missing",
        ),
        (
            with_access(r#"{"gva": "0x0"}"#),
            "accesses[0].kind: missing",
        ),
        (
            with_access(r#"{"gva": "0x0", "kind": "read", "cpl": 0}"#),
            "accesses[0].cpl: unknown",
        ),
        // Bad numbers.
        (
            with_cpu(r#""cr0": "80010033", "cr3": 0, "cr4": 0, "efer": 0"#),
            "cpu.cr0",
        ),
        (
            with_cpu(r#""cr0": "0xg", "cr3": 0, "cr4": 0, "efer": 0"#),
            "cpu.cr0",
        ),
        (
            with_cpu(r#""cr0": "0x", "cr3": 0, "cr4": 0, "efer": 0"#),
            "cpu.cr0",
        ),
        (
            with_cpu(r#""cr0": 1, "cr3": -1, "cr4": 0, "efer": 0"#),
            "cpu.cr3",
        ),
        (
            with_cpu(r#""cr0": 1, "cr3": 1.5, "cr4": 0, "efer": 0"#),
            "cpu.cr3",
        ),
        (
            with_cpu(r#""cr0": 1, "cr3": "0x10000000000000000", "cr4": 0, "efer": 0"#),
            "cpu.cr3",
        ),
        (
            with_cpu(r#""cr0": 1, "cr3": 0, "cr4": true, "efer": 0"#),
            "cpu.cr4",
        ),
        (
            with_cpu(r#""cr0": 1, "cr3": 0, "cr4": 0, "efer": null"#),
            "cpu.efer",
        ),
        (
            with_cpu(&format!(r#"{BASE_CPU}, "pkru": "0x100000000""#)),
            "cpu.pkru",
        ),
        (with_cpu(&format!(r#"{BASE_CPU}, "pkrs": -3"#)), "cpu.pkrs"),
        // MAXPHYADDR and CPUID flags.
        (
            with_cpu(&format!(r#"{BASE_CPU}, "maxphyaddr": 31"#)),
            "cpu.maxphyaddr",
        ),
        (
            with_cpu(&format!(r#"{BASE_CPU}, "maxphyaddr": 53"#)),
            "cpu.maxphyaddr",
        ),
        (
            with_cpu(&format!(r#"{BASE_CPU}, "maxphyaddr": "0x100""#)),
            "cpu.maxphyaddr",
        ),
        (
            with_cpu(&format!(r#"{BASE_CPU}, "gbpages": 1"#)),
            "cpu.gbpages",
        ),
        (
            with_cpu(&format!(r#"{BASE_CPU}, "pse36": "yes""#)),
            "cpu.pse36",
        ),
        // Memory size.
        (scenario(CPU, "0", "", ""), "memory_size"),
        (scenario(CPU, r#""0x0""#, "", ""), "memory_size"),
        (scenario(CPU, r#""0x100001000""#, "", ""), "memory_size"),
        (
            scenario(CPU, r#""0xffffffffffffffff""#, "", ""),
            "memory_size",
        ),
        (scenario(CPU, "4095", "", ""), "memory_size"),
        (scenario(CPU, r#""4096""#, "", ""), "memory_size"),
        (
            format!(r#"{{{CPU}, "memory_size": 4096, "writes": {{}}, "accesses": []}}"#),
            "writes",
        ),
        // Writes.
        (
            with_write(r#"{"gpa": "0x0", "width": 2, "value": 0}"#),
            "writes[0].width",
        ),
        (
            with_write(r#"{"gpa": "0x0", "width": 16, "value": 0}"#),
            "writes[0].width",
        ),
        (
            with_write(r#"{"gpa": "0x0", "width": 4, "value": "0x100000000"}"#),
            "writes[0].value",
        ),
        (
            with_write(r#"{"gpa": "0x10000", "width": 4, "value": 0}"#),
            "writes[0].gpa",
        ),
        (
            with_write(r#"{"gpa": "0xfffffffffffffff8", "width": 8, "value": 0}"#),
            "writes[0].gpa",
        ),
        (
            with_write(r#"{"gpa": "0x1004", "width": 8, "value": 0}"#),
            "writes[0].gpa",
        ),
        (
            with_write(r#"{"gpa": "0x0", "width": 8, "value": 0}, 7"#),
            "writes[1]",
        ),
        // Accesses.
        (
            with_access(r#"{"gva": "0x0", "kind": "execute"}"#),
            "accesses[0].kind",
        ),
        (
            with_access(r#"{"gva": "0x0", "kind": 1}"#),
            "accesses[0].kind",
        ),
        (
            with_access(
                r#"{"gva": "0x0", "kind": "read"}, {"gva": "0x0", "kind": "read", "user": "false"}"#,
            ),
            "accesses[1].user",
        ),
        (
            with_access(r#"{"gva": "0x0", "kind": "read", "ac": 0}"#),
            "accesses[0].ac",
        ),
        (
            with_access(r#"{"gva": "0x0", "kind": "read", "implicit": null}"#),
            "accesses[0].implicit",
        ),
    ];
    for (text, needle) in &cases {
        let out = run_stdin(text);
        assert_rejected(&out, needle, text);
    }
}

#[test]
fn unreadable_file_and_bad_usage_exit_2() {
    let missing = scenarios_dir().join("no-such-scenario.json");
    assert_rejected(&run_file(&missing), "no-such-scenario.json", "missing file");

    // (No arguments at all runs the main suite: see tests/differential.rs.)
    let usage: &[&[&str]] = &[
        &["walk"],
        &["frobnicate"],
        &["walk", "a", "b"],
        &["bench", "--runs", "0"],
    ];
    for args in usage {
        let out = Command::new(BIN)
            .args(*args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_rejected(&out, "shadow-run", &format!("{args:?}"));
    }

    let help = Command::new(BIN).arg("--help").output().unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("walk SCENARIO.json"));
}

#[test]
fn missing_optional_fields_take_their_defaults() {
    // No pkru/pkrs/maxphyaddr/gbpages/pse36, and no user/ac/implicit: the
    // 1 GiB page needs gbpages to default to true.
    let text = scenario(
        CPU,
        r#""0x4000""#,
        r#"{"gpa": "0x1000", "width": 8, "value": "0x2007"},
           {"gpa": "0x2000", "width": 8, "value": 135}"#,
        r#"{"gva": "0x12345678", "kind": "read"}"#,
    );
    let out = run_stdin(&text);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "{\"gva\": \"0x12345678\", \"fault\": false, \"gpa\": \"0x12345678\", \"page_size\": 1073741824}\n\
         {\"memory\": [{\"gpa\": \"0x1000\", \"width\": 8, \"value\": \"0x2027\"}, \
         {\"gpa\": \"0x2000\", \"width\": 8, \"value\": \"0xa7\"}]}\n"
    );
}

#[test]
fn legacy_mode_gva_above_4g_is_passed_to_the_walker() {
    // Not a scenario error: the walker defines it as #GP (no 32-bit linear
    // address can be that large).
    let text = scenario(
        CPU_PAE,
        "8192",
        "",
        r#"{"gva": "0x100000000", "kind": "read"}"#,
    );
    let out = run_stdin(&text);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "{\"gva\": \"0x100000000\", \"fault\": true, \"vector\": \"gp\", \"error_code\": \"0x0\"}\n\
         {\"memory\": []}\n"
    );
}
