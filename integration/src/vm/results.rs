// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The results buffer the guest fills (`resources/guests/README.md`).

use vm_memory::{Bytes, GuestAddress, GuestMemory};

/// `"SMMU_RES"`.
pub const RESULTS_MAGIC: u64 = 0x5345_525f_554d_4d53;
/// Header size in 64-bit words.
pub const HEADER_WORDS: u64 = 64;
/// Number of TSC slots.
pub const TSC_SLOTS: usize = 32;
/// `flags` bit: 1 GiB pages were skipped (native paging cannot run them).
pub const FLAG_1G_SKIPPED: u64 = 1;
/// `flags` bit: the 1 GiB part ran.
pub const FLAG_1G_DONE: u64 = 2;

const H_MAGIC: usize = 0;
const H_WORKLOAD: usize = 1;
const H_STATUS: usize = 2;
const H_NRECORDS: usize = 3;
const H_FLAGS: usize = 4;
const H_NTSC: usize = 5;
/// Header word: page faults the guest kernel's #PF handler took.
pub(crate) const H_FAULTS: u64 = 6;
/// Header word: exceptions (system calls included) that reached the guest
/// kernel's trap handler (not in the checksum).
pub(crate) const H_TRAPS: u64 = 47;
const H_ERRORS: usize = 7;
const H_TSC: usize = 8;
/// Header words 48-51: timer ticks, task switches, ticks at CPL0, shootdown
/// IPIs (not in the checksum: they depend on timing).
const H_INTERRUPTS: usize = 48;

/// What a guest run reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Results {
    /// Workload id.
    pub workload: u64,
    /// The workload's status (0 ok, 1 mismatches found, 2 setup failed, or a
    /// kernel failure code `0xe...`).
    pub status: u64,
    /// [`FLAG_1G_SKIPPED`], [`FLAG_1G_DONE`].
    pub flags: u64,
    /// Page faults delivered to the guest kernel's handler.
    pub faults: u64,
    /// Mismatches the workload found itself.
    pub errors: u64,
    /// The records.
    pub records: Vec<u64>,
    /// TSC deltas (timing; not in the checksum).
    pub tsc: Vec<u64>,
    /// Kernel failure details: vector, error code, RIP, CR2 (header words
    /// 60-63; zero unless the kernel stopped on an unexpected exception).
    pub failure: [u64; 4],
    /// What the guest kernel counted of its interrupts (not in the
    /// checksum).
    pub interrupts: GuestInterrupts,
    /// FNV-1a over workload, status, flags, faults, errors and the records.
    pub checksum: u64,
}

/// The guest kernel's interrupt counters (header words 48-51).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuestInterrupts {
    /// Timer interrupts taken.
    pub ticks: u64,
    /// Task switches made at timer interrupts.
    pub switches: u64,
    /// Timer interrupts taken at CPL0.
    pub kernel_ticks: u64,
    /// TLB shootdown IPIs handled, all vCPUs together.
    pub ipis: u64,
}

/// FNV-1a 64 over the little-endian bytes of `words`.
pub fn fnv1a(words: impl IntoIterator<Item = u64>) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for w in words {
        for b in w.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

impl Results {
    /// How `other` differs from these results in what a differential run
    /// requires to be identical (the records, the checksum, the guest page
    /// faults), described for a test failure; `None` when they agree.
    pub fn difference(&self, other: &Results) -> Option<String> {
        if self.records.len() != other.records.len() {
            return Some(format!(
                "{} records against {}",
                self.records.len(),
                other.records.len()
            ));
        }
        let diffs: Vec<usize> = (0..self.records.len())
            .filter(|&i| self.records[i] != other.records[i])
            .collect();
        if let Some(&first) = diffs.first() {
            return Some(format!(
                "records differ at {diffs:?} (first: {:#x} against {:#x})",
                self.records[first], other.records[first]
            ));
        }
        if self.checksum != other.checksum {
            return Some(format!(
                "checksum {:#x} against {:#x}",
                self.checksum, other.checksum
            ));
        }
        if self.faults != other.faults {
            return Some(format!(
                "guest page faults {} against {}",
                self.faults, other.faults
            ));
        }
        None
    }

    /// Reads the results buffer at `gpa` of `size` bytes.
    pub fn read<M: GuestMemory>(mem: &M, gpa: u64, size: u64) -> Result<Results, String> {
        let mut header = [0u8; (HEADER_WORDS * 8) as usize];
        mem.read_slice(&mut header, GuestAddress(gpa))
            .map_err(|e| format!("cannot read the header at {gpa:#x}: {e}"))?;
        let h: Vec<u64> = header
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        if h[H_MAGIC] != RESULTS_MAGIC {
            return Err(format!(
                "bad magic {:#x} (the guest never initialised its results)",
                h[H_MAGIC]
            ));
        }
        let capacity = size / 8 - HEADER_WORDS;
        let n = h[H_NRECORDS];
        if n > capacity {
            return Err(format!("{n} records, but the buffer holds {capacity}"));
        }
        let mut raw = vec![0u8; (n * 8) as usize];
        mem.read_slice(&mut raw, GuestAddress(gpa + HEADER_WORDS * 8))
            .map_err(|e| format!("cannot read the records: {e}"))?;
        let records: Vec<u64> = raw
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        let ntsc = (h[H_NTSC] as usize).min(TSC_SLOTS);
        let tsc = h[H_TSC..H_TSC + ntsc].to_vec();
        let mut r = Results {
            workload: h[H_WORKLOAD],
            status: h[H_STATUS],
            flags: h[H_FLAGS],
            faults: h[H_FAULTS as usize],
            errors: h[H_ERRORS],
            records,
            tsc,
            failure: [h[60], h[61], h[62], h[63]],
            interrupts: GuestInterrupts {
                ticks: h[H_INTERRUPTS],
                switches: h[H_INTERRUPTS + 1],
                kernel_ticks: h[H_INTERRUPTS + 2],
                ipis: h[H_INTERRUPTS + 3],
            },
            checksum: 0,
        };
        r.checksum = r.compute_checksum();
        Ok(r)
    }

    /// The checksum of these results.
    pub fn compute_checksum(&self) -> u64 {
        fnv1a(
            [
                self.workload,
                self.status,
                self.flags,
                self.faults,
                self.errors,
                self.records.len() as u64,
            ]
            .into_iter()
            .chain(self.records.iter().copied()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn results(records: &[u64], faults: u64) -> Results {
        Results {
            workload: 1,
            status: 0,
            flags: 0,
            faults,
            errors: 0,
            records: records.to_vec(),
            tsc: Vec::new(),
            failure: [0; 4],
            interrupts: GuestInterrupts::default(),
            checksum: fnv1a(records.iter().copied().chain([faults])),
        }
    }

    #[test]
    fn difference_names_what_differs() {
        let a = results(&[1, 2, 3], 4);
        assert_eq!(a.difference(&a.clone()), None);
        assert_eq!(
            a.difference(&results(&[1, 2], 4)).as_deref(),
            Some("3 records against 2")
        );
        assert_eq!(
            a.difference(&results(&[1, 9, 3], 4)).as_deref(),
            Some("records differ at [1] (first: 0x2 against 0x9)")
        );
        let mut b = a.clone();
        b.checksum ^= 1;
        assert!(a.difference(&b).is_some_and(|d| d.starts_with("checksum")));
        let mut c = a.clone();
        c.faults = 5;
        assert_eq!(
            a.difference(&c).as_deref(),
            Some("guest page faults 4 against 5")
        );
    }
}
