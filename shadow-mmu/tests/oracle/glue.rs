// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Glue between the crate's public types and the reference model: converting
//! registers and accesses, mirroring the model's memory into a
//! `GuestMemoryMmap`, and comparing outcomes and memory. No paging rule lives
//! here.

use super::{Acc, Kind, Memory, Mode, Outcome, Regs};
use shadow_mmu::{
    Access, AccessKind, GuestAddress, GuestWalk, Gva, PagingMode, PagingState, WalkError,
};
use std::sync::atomic::Ordering;
use vm_memory::{Bytes, GuestMemoryMmap};

/// The walker's memory.
pub type Mem = GuestMemoryMmap<()>;

/// The model's view of a `PagingState` (raw register values only).
pub fn regs(s: &PagingState) -> Regs {
    Regs {
        cr0: s.cr0.bits(),
        cr3: s.cr3,
        cr4: s.cr4.bits(),
        efer: s.efer.bits(),
        pkru: s.pkru,
        pkrs: s.pkrs,
        eflags_ac: s.eflags_ac,
        maxphyaddr: u32::from(s.maxphyaddr),
        pdptrs: s.pdptrs,
        gbpages: s.gbpages,
        pse36: s.pse36,
    }
}

/// The model's view of an `Access`.
pub fn acc(a: Access) -> Acc {
    Acc {
        kind: match a.kind {
            AccessKind::Read => Kind::Read,
            AccessKind::Write => Kind::Write,
            AccessKind::Fetch => Kind::Fetch,
        },
        user: a.user,
        implicit: a.implicit,
    }
}

/// The crate's name for a model mode.
pub fn paging_mode(m: Mode) -> PagingMode {
    match m {
        Mode::Off => PagingMode::Off,
        Mode::Bits32 => PagingMode::Bits32,
        Mode::Pae => PagingMode::Pae,
        Mode::Level4 => PagingMode::Level4,
        Mode::Level5 => PagingMode::Level5,
    }
}

/// A `GuestMemoryMmap` with the model's regions and contents.
pub fn mmap_of(m: &Memory) -> Mem {
    let ranges: Vec<(GuestAddress, usize)> = m
        .regions
        .iter()
        .map(|r| (GuestAddress(r.base), r.bytes.len()))
        .collect();
    let mem = Mem::from_ranges(&ranges).expect("guest memory");
    copy_to_mmap(m, &mem);
    mem
}

/// Copies every byte of the model into `mem` (same layout).
pub fn copy_to_mmap(m: &Memory, mem: &Mem) {
    for r in &m.regions {
        mem.write_slice(&r.bytes, GuestAddress(r.base))
            .expect("write guest memory");
    }
}

/// Compares all of the model's RAM with the walker's memory.
pub fn diff_memory(mem: &Mem, m: &Memory) -> Result<(), String> {
    for r in &m.regions {
        let mut buf = vec![0u8; r.bytes.len()];
        mem.read_slice(&mut buf, GuestAddress(r.base))
            .map_err(|e| format!("reading guest memory at {:#x}: {e}", r.base))?;
        if buf != r.bytes {
            let first = buf
                .chunks(8)
                .zip(r.bytes.chunks(8))
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            let at = first * 8;
            let word = |s: &[u8]| {
                let mut w = [0u8; 8];
                let n = (s.len() - at).min(8);
                w[..n].copy_from_slice(&s[at..at + n]);
                u64::from_le_bytes(w)
            };
            return Err(format!(
                "memory differs at gpa {:#x}: walker {:#018x}, model {:#018x}",
                r.base + at as u64,
                word(&buf),
                word(&r.bytes)
            ));
        }
    }
    Ok(())
}

/// Reads the u64 (or u32, `len` = 4) at `gpa` from the walker's memory.
pub fn read_mmap(mem: &Mem, gpa: u64, len: usize) -> u64 {
    let at = GuestAddress(gpa);
    if len == 4 {
        u64::from(mem.load::<u32>(at, Ordering::Relaxed).expect("read u32"))
    } else {
        mem.load::<u64>(at, Ordering::Relaxed).expect("read u64")
    }
}

/// Writes `value` (`len` = 4 or 8 bytes) to both memories.
pub fn write_both(mem: &Mem, m: &mut Memory, gpa: u64, len: usize, value: u64) {
    let at = GuestAddress(gpa);
    if len == 4 {
        mem.store(value as u32, at, Ordering::Relaxed)
            .expect("write u32");
    } else {
        mem.store(value, at, Ordering::Relaxed).expect("write u64");
    }
    assert!(m.write(gpa, len, value), "model write outside RAM");
}

/// A short description of the walker's answer.
pub fn show(got: &Result<GuestWalk, WalkError>) -> String {
    match got {
        Ok(w) => {
            let lv = |a: &[u64; 5]| {
                (w.level.max(1)..=w.root_level.max(1))
                    .rev()
                    .map(|l| format!("L{l}={:#x}", a[l as usize - 1]))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let gpas: [u64; 5] = std::array::from_fn(|i| w.pte_gpas[i].0);
            let gfns: [u64; 5] = std::array::from_fn(|i| w.table_gfns[i].0);
            format!(
                "Ok{{gva {:#x} mode {:?} root {} level {} gpa {:#x} size {:#x} access {:?} \
                 ptes [{}] at [{}] tables [{}]}}",
                w.gva.0,
                w.mode,
                w.root_level,
                w.level,
                w.gpa.0,
                w.page_size,
                w.access,
                lv(&w.ptes),
                lv(&gpas),
                lv(&gfns)
            )
        }
        Err(e) => show_err(e),
    }
}

/// A short description of a walker error.
pub fn show_err(e: &WalkError) -> String {
    #[allow(unreachable_patterns)]
    match e {
        WalkError::PageFault(ec) => format!("#PF({:#x})", ec.bits()),
        WalkError::GeneralProtection => "#GP".to_string(),
        WalkError::TooManyRetries => "TooManyRetries".to_string(),
        _ => "other WalkError".to_string(),
    }
}

/// A short description of the model's answer.
pub fn show_model(o: &Outcome) -> String {
    match o {
        Outcome::Ok(t) => {
            let lv = |a: &[u64; 5]| {
                (t.level.max(1)..=t.root_level.max(1))
                    .rev()
                    .map(|l| format!("L{l}={:#x}", a[l as usize - 1]))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            format!(
                "Ok{{mode {:?} root {} level {} gpa {:#x} size {:#x} w{} u{} x{} \
                 ptes [{}] at [{}] tables [{}]}}",
                t.mode,
                t.root_level,
                t.level,
                t.gpa,
                t.page_size,
                t.write as u8,
                t.user as u8,
                t.exec as u8,
                lv(&t.ptes),
                lv(&t.pte_gpas),
                lv(&t.table_gfns)
            )
        }
        Outcome::PageFault(ec) => format!("#PF({ec:#x})"),
        Outcome::Gp => "#GP".to_string(),
    }
}

/// Which parts of a successful walk to compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Strictness {
    /// Bits of the reported entries not compared (A and D, say, when other
    /// threads change them concurrently).
    pub pte_ignore: u64,
}

/// Exact comparison.
pub const EXACT: Strictness = Strictness { pte_ignore: 0 };

/// Compares the walker's answer with the model's.
pub fn diff_outcome(
    gva: u64,
    want: &Outcome,
    got: &Result<GuestWalk, WalkError>,
    how: Strictness,
) -> Result<(), String> {
    let mismatch = |what: &str| {
        Err(format!(
            "{what}: model {}, walker {}",
            show_model(want),
            show(got)
        ))
    };
    match (want, got) {
        (Outcome::Gp, Err(WalkError::GeneralProtection)) => Ok(()),
        (Outcome::PageFault(ec), Err(WalkError::PageFault(got_ec))) => {
            if got_ec.bits() == *ec {
                Ok(())
            } else {
                mismatch("error code")
            }
        }
        (Outcome::Ok(t), Ok(w)) => {
            if w.gva != Gva(gva) {
                return mismatch("gva");
            }
            if w.mode != paging_mode(t.mode) {
                return mismatch("mode");
            }
            if w.gpa != GuestAddress(t.gpa) {
                return mismatch("gpa");
            }
            if w.page_size != t.page_size {
                return mismatch("page_size");
            }
            if t.mode == Mode::Off {
                return Ok(());
            }
            if w.root_level != t.root_level || w.level != t.level {
                return mismatch("levels");
            }
            let ad = how.pte_ignore;
            for l in t.level..=t.root_level {
                let i = l as usize - 1;
                if w.ptes[i] & !ad != t.ptes[i] & !ad {
                    return mismatch(&format!("ptes[{i}]"));
                }
                if w.pte_gpas[i] != GuestAddress(t.pte_gpas[i]) {
                    return mismatch(&format!("pte_gpas[{i}]"));
                }
                if w.table_gfns[i].0 != t.table_gfns[i] {
                    return mismatch(&format!("table_gfns[{i}]"));
                }
            }
            let a = w.access;
            if a.contains(shadow_mmu::PteAccess::WRITE) != t.write
                || a.contains(shadow_mmu::PteAccess::USER) != t.user
                || a.contains(shadow_mmu::PteAccess::EXEC) != t.exec
            {
                return mismatch("access");
            }
            Ok(())
        }
        _ => mismatch("outcome"),
    }
}
