// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! (d) `shadow-run walk` scenario files, parsed and run.

use std::borrow::Cow;

use shadow_mmu_scenario::scenario::{Scenario, ScenarioError};
use shadow_mmu_scenario::walk::{run, RunError};

/// Fuzzes `shadow-run walk`: `data` as scenario text (lossily decoded when
/// it is not UTF-8) through [`Scenario::parse`] and, when it parses,
/// [`run`]. Panics if an error message spans lines or lacks its field, if a
/// parsed scenario breaks what validation promises, if running it fails
/// other than by not getting guest RAM, or if the output is not one JSON
/// line per access plus the memory line.
pub fn scenario(data: &[u8]) {
    let text = match std::str::from_utf8(data) {
        Ok(t) => Cow::Borrowed(t),
        Err(_) => String::from_utf8_lossy(data),
    };
    let s = match Scenario::parse(&text) {
        Ok(s) => s,
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.contains('\n'), "error message spans lines: {msg:?}");
            assert_eq!(
                e.field().is_none(),
                matches!(e, ScenarioError::Json(_)),
                "{e:?}"
            );
            if let Some(field) = e.field() {
                assert!(
                    msg.starts_with(field),
                    "{msg:?} does not start with {field:?}"
                );
            }
            return;
        }
    };
    // What validation promises.
    assert!(s.memory_size > 0 && s.memory_size <= shadow_mmu_scenario::scenario::MAX_MEMORY_SIZE);
    assert!(s
        .memory_size
        .is_multiple_of(shadow_mmu_scenario::scenario::MEMORY_GRANULE));
    assert!((32..=52).contains(&s.cpu.maxphyaddr));
    for w in &s.writes {
        assert!(
            w.gpa.is_multiple_of(w.width.bytes()) && w.gpa < s.memory_size,
            "{w:?}"
        );
        assert!(
            w.width.bytes() == 8 || w.value <= u64::from(u32::MAX),
            "{w:?}"
        );
    }

    let mut out = Vec::new();
    match run(&s, &mut out) {
        Ok(()) => {}
        // The host could not map guest RAM: not the scenario's fault.
        Err(RunError::GuestRam { .. }) => return,
        Err(e) => panic!("running a valid scenario failed: {e}"),
    }
    let Ok(out) = String::from_utf8(out) else {
        panic!("output is not UTF-8");
    };
    let lines: Vec<&str> = out.lines().collect();
    let gp = lines.first().is_some_and(|l| l.contains("cr3_load"));
    let expected = if gp { 2 } else { s.accesses.len() + 1 };
    assert_eq!(lines.len(), expected, "output lines: {out}");
    for (i, line) in lines.iter().enumerate() {
        let v: serde_json::Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => panic!("output line {i} is not JSON ({e}): {line}"),
        };
        if !gp && i < s.accesses.len() {
            let gva = format!("{:#x}", s.accesses[i].gva);
            assert_eq!(v["gva"].as_str(), Some(gva.as_str()), "line {i}: {line}");
            if v["fault"] == serde_json::Value::Bool(false) {
                let gpa = v["gpa"]
                    .as_str()
                    .and_then(shadow_mmu_scenario::scenario::parse_hex)
                    .unwrap_or(u64::MAX);
                assert!(
                    gpa < 1u64 << s.cpu.maxphyaddr,
                    "gpa beyond MAXPHYADDR in line {i}: {line}"
                );
            }
        }
    }
    assert!(
        lines.last().is_some_and(|l| l.starts_with("{\"memory\"")),
        "no memory line: {out}"
    );
}
