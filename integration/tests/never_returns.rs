// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Guests that never return, on `/dev/kvm`: a spin at CPL3, a spin at CPL0
//! and a fault on one address that the guest's handler never fixes. The
//! VMM must stop them at the deadline (`--timeout`), whatever the guest is
//! doing, and say so: a timeout error that tells a spinning guest (no VMM
//! exit) from a guest looping on its own faults (exits it sees), with
//! where each vCPU was stopped, and a non-zero exit status from
//! `shadow-run run`. No test here waits for the guest: the deadline is the
//! VMM's, and the tests only bound how long the VMM takes to honour it.
//!
//! These tests need `/dev/kvm`: without it they FAIL (they never skip).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shadow_mmu_integration::vm::{
    self, Hang, PagingMode, TimeoutInfo, VmConfig, VmError, Workload, STOP_GRACE,
};

const TIMEOUT: Duration = Duration::from_secs(1);
/// `FAULT_LOOP_VA` of `resources/guests/guest.h`.
const FAULT_LOOP_VA: u64 = 0x380_0000_0000;

/// Runs `workload`, which must be stopped at the deadline; returns what the
/// VMM saw.
fn stopped(workload: Workload, paging: PagingMode, vcpus: u32) -> TimeoutInfo {
    let mut cfg = VmConfig::new(workload, paging);
    cfg.timeout = TIMEOUT;
    cfg.vcpus = vcpus;
    let t0 = Instant::now();
    let result = vm::run(&cfg);
    let wall = t0.elapsed();
    let info = match result {
        Err(VmError::Timeout { info }) => info,
        Err(e @ VmError::NoKvm(_)) => {
            panic!("these tests need /dev/kvm and cannot run without it: {e}")
        }
        other => panic!("{workload} {paging}: want a timeout, got {other:?}"),
    };
    eprintln!(
        "{workload} {paging}: stopped after {wall:?}: {}",
        VmError::Timeout { info: info.clone() }
    );
    assert!(wall >= TIMEOUT, "{workload} {paging}: stopped early");
    // The VMM stops every vCPU when the deadline passes; this bounds only
    // how long that may take (the threads' grace), not the guest.
    assert!(
        wall < TIMEOUT + STOP_GRACE,
        "{workload} {paging}: the vCPUs took {wall:?} to stop"
    );
    assert_eq!(info.timeout, TIMEOUT);
    assert_eq!(info.vcpus.len(), vcpus as usize);
    *info
}

#[test]
fn spin_at_cpl3_is_stopped_at_the_deadline() {
    for paging in [PagingMode::Native, PagingMode::Shadow] {
        let info = stopped(Workload::SpinUser, paging, 1);
        assert_eq!(info.hang, Hang::NoExits, "{paging}");
        assert_eq!(info.window_exits, 0, "{paging}");
        let place = info.vcpus[0].expect("vCPU 0 ran");
        assert_eq!(place.cpl, 3, "{paging}: {place:?}");
    }
}

#[test]
fn spin_at_cpl0_is_stopped_at_the_deadline() {
    for paging in [PagingMode::Native, PagingMode::Shadow] {
        let info = stopped(Workload::SpinKernel, paging, 1);
        assert_eq!(info.hang, Hang::NoExits, "{paging}");
        let place = info.vcpus[0].expect("vCPU 0 ran");
        assert_eq!(place.cpl, 0, "{paging}: {place:?}");
        // In the guest kernel's image (1 MiB up), not in the VMM's hole.
        assert!(place.rip < 1 << 30, "{paging}: {place:?}");
    }
}

/// Under shadow paging every fault is a VMM exit that the VMM delivers to
/// the guest: exits that make progress (the guest kernel counts the
/// faults), so the VMM reports a guest looping on its own faults, not a
/// VMM loop. Natively the CPU delivers them with no exit at all.
#[test]
fn fault_loop_is_stopped_at_the_deadline() {
    let shadow = stopped(Workload::FaultLoop, PagingMode::Shadow, 1);
    assert_eq!(shadow.hang, Hang::GuestLoop);
    assert!(shadow.window_exits > 0 && shadow.window_progress > 0);
    assert_eq!(shadow.vcpus[0].expect("vCPU 0 ran").cr2, FAULT_LOOP_VA);
    let native = stopped(Workload::FaultLoop, PagingMode::Native, 1);
    assert_eq!(native.hang, Hang::NoExits);
    assert_eq!(native.vcpus[0].expect("vCPU 0 ran").cr2, FAULT_LOOP_VA);
}

/// A vCPU that was never started is reported as such, and does not keep
/// the run from ending.
#[test]
fn vcpus_never_started_do_not_hold_the_deadline() {
    let info = stopped(Workload::SpinUser, PagingMode::Shadow, 3);
    assert!(info.vcpus[0].is_some());
    assert_eq!(info.vcpus[1..], [None, None]);
}

/// `shadow-run run --timeout` ends all three with one line on standard
/// error and exit status 1.
#[test]
fn shadow_run_ends_them_with_a_clear_message() {
    let cases = [
        ("spin-user", "shadow", "the guest runs on its own"),
        ("spin-kernel", "native", "the guest runs on its own"),
        (
            "fault-loop",
            "shadow",
            "the guest keeps faulting or calling",
        ),
    ];
    for (workload, paging, why) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_shadow-run"))
            .args(["run", workload, "--paging", paging, "--timeout", "0.5"])
            .stdin(Stdio::null())
            .output()
            .expect("cannot start shadow-run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("cannot open /dev/kvm"),
            "these tests need /dev/kvm and cannot run without it: {stderr}"
        );
        assert_eq!(out.status.code(), Some(1), "{workload}: {stderr}");
        assert!(out.stdout.is_empty(), "{workload}");
        assert_eq!(stderr.lines().count(), 1, "{workload}: {stderr}");
        for needle in [
            &format!("run {workload} --paging {paging}: the guest did not exit within 0.5 s"),
            why,
            "vCPU 0 stopped at RIP",
        ] {
            assert!(
                stderr.contains(needle),
                "{workload}: {stderr:?} lacks {needle:?}"
            );
        }
    }
}
