// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The guest workloads: ids, parameters and what their timing slots mean
//! (`resources/guests/README.md`, mirrored from `resources/guests/guest.h`).

use std::fmt;
use std::str::FromStr;

/// A user-mode workload of the guest kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Workload {
    /// First touch of N MiB sequentially, in random order and demand-paged,
    /// then warm passes.
    Touch,
    /// K address spaces switched round-robin.
    Spaces,
    /// A fork-like clone of an address space and copy-on-write faults.
    Cow,
    /// Accessed/dirty harvesting as a page reclaimer does it.
    Adbits,
    /// 2 MiB pages: touch, split, collapse (1 GiB: shadow only).
    Huge,
    /// A sampled access matrix (PTE/PDE flags x paging bits x accesses).
    Access,
    /// Two vCPUs: one remaps pages the other is reading.
    Smp,
    /// Mappings into the hole, the hidden region and beyond RAM, recursive
    /// and looping tables, garbage hypercall arguments.
    Hostile,
    /// Live leaf entries rewritten (frame, W, P, NX) and invalidated with
    /// INVLPG, then read, written and executed through.
    Remap,
    /// A hostile guest kernel: seeded writes from CPL0 into the VMM's
    /// hidden region (IST frames, chain areas, switch word, root cache,
    /// NMI blocks, GDT, IDT, TSS, trampoline code, shadow entries) between
    /// page-table work that faults and makes hypercalls. Shadow paging
    /// only does anything; its records are not compared with native.
    Attack,
    /// Never returns: spins at CPL3 without an exit.
    SpinUser,
    /// Never returns: spins at CPL0 without an exit.
    SpinKernel,
    /// Never returns: faults on one address forever, its #PF handler
    /// returning without fixing anything.
    FaultLoop,
    /// Local APIC timer interrupts switch between user tasks in address
    /// spaces of their own (preemption); the first tick is awaited at CPL0.
    Timer,
}

impl Workload {
    /// Every workload, in id order.
    pub const ALL: [Workload; 14] = [
        Workload::Touch,
        Workload::Spaces,
        Workload::Cow,
        Workload::Adbits,
        Workload::Huge,
        Workload::Access,
        Workload::Smp,
        Workload::Hostile,
        Workload::Remap,
        Workload::Attack,
        Workload::SpinUser,
        Workload::SpinKernel,
        Workload::FaultLoop,
        Workload::Timer,
    ];

    /// The workloads that end by themselves with results that native and
    /// shadow runs can compare: the suite's, the soak's.
    pub const COMPARABLE: [Workload; 10] = [
        Workload::Touch,
        Workload::Spaces,
        Workload::Cow,
        Workload::Adbits,
        Workload::Huge,
        Workload::Access,
        Workload::Smp,
        Workload::Hostile,
        Workload::Remap,
        Workload::Timer,
    ];

    /// Whether the workload never exits by itself (only `--timeout` ends
    /// it).
    pub fn never_returns(self) -> bool {
        matches!(
            self,
            Workload::SpinUser | Workload::SpinKernel | Workload::FaultLoop
        )
    }

    /// The id in the boot info page.
    pub fn id(self) -> u64 {
        match self {
            Workload::Touch => 1,
            Workload::Spaces => 2,
            Workload::Cow => 3,
            Workload::Adbits => 4,
            Workload::Huge => 5,
            Workload::Access => 6,
            Workload::Smp => 7,
            Workload::Hostile => 8,
            Workload::Remap => 10,
            Workload::Attack => 11,
            Workload::SpinUser => 12,
            Workload::SpinKernel => 13,
            Workload::FaultLoop => 14,
            Workload::Timer => 15,
        }
    }

    /// The workload with boot-info id `id`.
    pub fn from_id(id: u64) -> Option<Workload> {
        Workload::ALL.into_iter().find(|w| w.id() == id)
    }

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Touch => "touch",
            Workload::Spaces => "spaces",
            Workload::Cow => "cow",
            Workload::Adbits => "adbits",
            Workload::Huge => "huge",
            Workload::Access => "access",
            Workload::Smp => "smp",
            Workload::Hostile => "hostile",
            Workload::Remap => "remap",
            Workload::Attack => "attack",
            Workload::SpinUser => "spin-user",
            Workload::SpinKernel => "spin-kernel",
            Workload::FaultLoop => "fault-loop",
            Workload::Timer => "timer",
        }
    }

    /// Names and defaults of parameters 1-5 (parameter 0 is the seed). A
    /// parameter left 0 takes the guest's default.
    pub fn params(self) -> &'static [(&'static str, u64)] {
        match self {
            Workload::Touch => &[
                ("mib", 16),
                ("passes", 4),
                ("demand-mib", 2),
                ("read-mib", 0),
                ("round-trips", 1000),
            ],
            Workload::Spaces => &[("spaces", 8), ("pages", 64), ("rounds", 50)],
            Workload::Cow => &[("pages", 128)],
            Workload::Adbits => &[("pages", 256), ("rounds", 8), ("speculative-a", 0)],
            Workload::Huge => &[("large-pages", 8), ("try-1g", 0)],
            Workload::Access => &[("cases", 20000), ("record-pt", 0)],
            Workload::Smp => &[("pages", 16), ("iterations", 100)],
            Workload::Hostile => &[],
            Workload::Remap => &[("pages", 16), ("rounds", 256)],
            Workload::Attack => &[("steps", 24), ("classes", 0), ("relink", 0)],
            Workload::SpinUser | Workload::SpinKernel | Workload::FaultLoop => &[],
            Workload::Timer => &[
                ("tasks", 3),
                ("pages", 64),
                ("rounds", 256),
                ("period-us", 1000),
                ("min-ticks", 10),
            ],
        }
    }

    /// What each TSC slot of the results measures.
    pub fn tsc_labels(self) -> &'static [&'static str] {
        match self {
            Workload::Touch => &[
                "first-touch-seq",
                "first-touch-random",
                "first-touch-demand",
                "warm-seq",
                "warm-random",
                "100-null-syscalls",
                "100-user-page-faults",
                "first-read-seq",
                "first-read-random",
                "trampoline-round-trips",
                "exit-round-trips",
            ],
            Workload::Spaces => &["init", "switch+touch", "switch-only"],
            Workload::Cow => &[
                "clone",
                "parent-cow-writes",
                "child-read",
                "child-cow-writes",
            ],
            Workload::Adbits => &["clear-ad+flush", "touch"],
            Workload::Huge => &["first-touch-2m", "warm-2m", "split-verify+write"],
            Workload::Access => &["all-cases", "kernel-batches", "user-cases"],
            Workload::Smp => &["lockstep-remaps", "racy-remaps"],
            Workload::Timer => &["run", "per-tick"],
            Workload::Hostile
            | Workload::Remap
            | Workload::Attack
            | Workload::SpinUser
            | Workload::SpinKernel
            | Workload::FaultLoop => &[],
        }
    }

    /// The number of vCPUs the workload needs.
    pub fn min_vcpus(self) -> u32 {
        match self {
            Workload::Smp => 2,
            _ => 1,
        }
    }

    /// Bytes of results buffer the workload needs with parameter 1 = `p1`
    /// (0: default).
    pub fn results_size(self, p1: u64) -> u64 {
        let words = match self {
            Workload::Access => {
                let n = if p1 == 0 { 20000 } else { p1 };
                n + 64
            }
            _ => 32 * 1024,
        };
        (words * 8).div_ceil(4096).clamp(16, 1024) * 4096
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Workload {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Workload::ALL
            .into_iter()
            .find(|w| w.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Workload::ALL.iter().map(|w| w.name()).collect();
                format!("unknown workload {s:?} (one of {})", names.join(", "))
            })
    }
}
