// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Running a [`Scenario`]: build guest RAM, load the PAE PDPTEs if needed,
//! walk every access with [`shadow_mmu::walk`], and print the results as
//! JSON lines (format in `resources/SCENARIO.md`).

use std::io::{self, Write};

use shadow_mmu::{
    load_pdptrs, walk, Access, GuestAddress, Gva, PagingMode, PagingState, WalkError,
};
use thiserror::Error;
use vm_memory::{Bytes, GuestMemoryMmap};

use crate::scenario::{AccessSpec, MemWrite, Scenario};

/// Why a valid scenario could not be run to the end.
#[derive(Debug, Error)]
pub enum RunError {
    /// Guest RAM could not be mapped.
    #[error("cannot map {size:#x} bytes of guest RAM: {reason}")]
    GuestRam {
        /// The requested size.
        size: u64,
        /// What vm-memory said.
        reason: String,
    },
    /// A validated store or load of guest RAM failed (a bug).
    #[error("guest RAM access at {gpa:#x} failed: {reason}")]
    GuestAccess {
        /// Where.
        gpa: u64,
        /// What vm-memory said.
        reason: String,
    },
    /// Loading the PAE PDPTEs failed in a way `mov cr3` cannot (it only
    /// raises #GP, which is output, not an error).
    #[error("loading the PAE PDPTEs from CR3 failed unexpectedly: {0:?}")]
    Cr3Load(WalkError),
    /// The walker gave up because the guest tables kept changing under it.
    /// Nothing else touches guest RAM here, so this is a walker bug.
    #[error(
        "walk of gva {gva:#x} (accesses[{index}]) gave up after too many retries; \
         nothing else writes guest RAM, so this is a walker bug"
    )]
    TooManyRetries {
        /// Index of the access in `accesses`.
        index: usize,
        /// Its linear address.
        gva: u64,
    },
    /// Writing the output failed.
    #[error("cannot write output: {0}")]
    Output(#[from] io::Error),
}

/// The result of translating one access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The access translates.
    Translated {
        /// Guest-physical address of the accessed byte.
        gpa: u64,
        /// Size of the page that maps it.
        page_size: u64,
    },
    /// The access faults with #PF and this error code.
    PageFault(u32),
    /// The access faults with #GP(0).
    GeneralProtection,
}

/// Runs `scenario`, writing one JSON line per access and the final memory
/// line to `out`.
pub fn run(scenario: &Scenario, out: &mut dyn Write) -> Result<(), RunError> {
    let mem = guest_ram(scenario)?;
    let mut state = scenario.cpu.paging_state();

    if state.mode() == PagingMode::Pae {
        match load_pdptrs(&mem, &state) {
            Ok(pdptrs) => state.pdptrs = pdptrs,
            Err(WalkError::GeneralProtection) => {
                writeln!(out, r#"{{"cr3_load": "gp"}}"#)?;
                return memory_line(&mem, &scenario.writes, out);
            }
            Err(e) => return Err(RunError::Cr3Load(e)),
        }
    }

    for (index, spec) in scenario.accesses.iter().enumerate() {
        let outcome = translate(&mem, &mut state, index, spec)?;
        writeln!(out, "{}", access_line(spec.gva, outcome))?;
    }
    memory_line(&mem, &scenario.writes, out)
}

/// Maps zero-filled guest RAM and applies the scenario's writes.
pub fn guest_ram(scenario: &Scenario) -> Result<GuestMemoryMmap<()>, RunError> {
    let size = scenario.memory_size;
    let len = usize::try_from(size).map_err(|e| RunError::GuestRam {
        size,
        reason: e.to_string(),
    })?;
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), len)]).map_err(|e| {
        RunError::GuestRam {
            size,
            reason: e.to_string(),
        }
    })?;
    for w in &scenario.writes {
        let bytes = w.value.to_le_bytes();
        let len = w.width.bytes() as usize;
        mem.write_slice(&bytes[..len], GuestAddress(w.gpa))
            .map_err(|e| RunError::GuestAccess {
                gpa: w.gpa,
                reason: e.to_string(),
            })?;
    }
    Ok(mem)
}

/// Translates access number `index`, with CPL and EFLAGS.AC set as the
/// access says. Faults are outcomes; only [`WalkError::TooManyRetries`] is an
/// error.
pub fn translate(
    mem: &GuestMemoryMmap<()>,
    state: &mut PagingState,
    index: usize,
    spec: &AccessSpec,
) -> Result<Outcome, RunError> {
    state.cpl = if spec.user { 3 } else { 0 };
    state.eflags_ac = spec.ac;
    let access = Access {
        kind: spec.kind,
        user: spec.user,
        implicit: spec.implicit,
    };
    match walk(mem, state, Gva(spec.gva), access) {
        Ok(w) => Ok(Outcome::Translated {
            gpa: w.gpa.0,
            page_size: w.page_size,
        }),
        Err(WalkError::PageFault(ec)) => Ok(Outcome::PageFault(ec.bits())),
        Err(WalkError::GeneralProtection) => Ok(Outcome::GeneralProtection),
        Err(WalkError::TooManyRetries) => Err(RunError::TooManyRetries {
            index,
            gva: spec.gva,
        }),
    }
}

/// The output line for one access.
pub fn access_line(gva: u64, outcome: Outcome) -> String {
    match outcome {
        Outcome::Translated { gpa, page_size } => format!(
            r#"{{"gva": "{gva:#x}", "fault": false, "gpa": "{gpa:#x}", "page_size": {page_size}}}"#
        ),
        Outcome::PageFault(ec) => format!(
            r#"{{"gva": "{gva:#x}", "fault": true, "vector": "pf", "error_code": "{ec:#x}"}}"#
        ),
        Outcome::GeneralProtection => {
            format!(r#"{{"gva": "{gva:#x}", "fault": true, "vector": "gp", "error_code": "0x0"}}"#)
        }
    }
}

/// Writes the final line: the value now at every location in `writes`.
fn memory_line(
    mem: &GuestMemoryMmap<()>,
    writes: &[MemWrite],
    out: &mut dyn Write,
) -> Result<(), RunError> {
    let mut items = Vec::with_capacity(writes.len());
    for w in writes {
        let mut bytes = [0u8; 8];
        let len = w.width.bytes() as usize;
        mem.read_slice(&mut bytes[..len], GuestAddress(w.gpa))
            .map_err(|e| RunError::GuestAccess {
                gpa: w.gpa,
                reason: e.to_string(),
            })?;
        let value = u64::from_le_bytes(bytes);
        items.push(format!(
            r#"{{"gpa": "{:#x}", "width": {len}, "value": "{value:#x}"}}"#,
            w.gpa
        ));
    }
    writeln!(out, r#"{{"memory": [{}]}}"#, items.join(", "))?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        assert_eq!(
            access_line(
                0x400000,
                Outcome::Translated {
                    gpa: 0x5000,
                    page_size: 4096
                }
            ),
            r#"{"gva": "0x400000", "fault": false, "gpa": "0x5000", "page_size": 4096}"#
        );
        assert_eq!(
            access_line(0x400000, Outcome::PageFault(7)),
            r#"{"gva": "0x400000", "fault": true, "vector": "pf", "error_code": "0x7"}"#
        );
        assert_eq!(
            access_line(0, Outcome::GeneralProtection),
            r#"{"gva": "0x0", "fault": true, "vector": "gp", "error_code": "0x0"}"#
        );
    }

    #[test]
    fn memory_round_trip() {
        let s = Scenario::parse(
            r#"{"cpu": {"cr0": 1, "cr3": 0, "cr4": 0, "efer": 0}, "memory_size": "0x2000",
                "writes": [{"gpa": "0x1ff8", "width": 8, "value": "0x8000000000002067"},
                           {"gpa": "0x1ffc", "width": 4, "value": "0x1"},
                           {"gpa": "0x0", "width": 4, "value": 0}],
                "accesses": []}"#,
        )
        .unwrap();
        let mem = guest_ram(&s).unwrap();
        let mut out = Vec::new();
        memory_line(&mem, &s.writes, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"memory\": [{\"gpa\": \"0x1ff8\", \"width\": 8, \"value\": \"0x100002067\"}, \
             {\"gpa\": \"0x1ffc\", \"width\": 4, \"value\": \"0x1\"}, \
             {\"gpa\": \"0x0\", \"width\": 4, \"value\": \"0x0\"}]}\n"
        );
    }
}
