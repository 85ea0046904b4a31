// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! [`EmulatorMemory`] over a [`ShadowMmu`]: guest memory reached through the
//! guest's own page tables, as the instruction being emulated sees it, with
//! every store reported to the MMU. What a VMM hands [`super::emulate`].

use parking_lot::Mutex;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::{EmulatorMemory, MemFault};
use crate::pte::PteMemory;
use crate::{Access, AccessKind, Changes, Gva, MmuError, ShadowMmu, PAGE_SIZE};

/// Most tries of an atomic update that keeps losing to other writers before
/// the emulator is told the comparison failed (it then retries the whole
/// read-modify-write, or reports the failed CMPXCHG the guest can retry).
const MAX_CAS_TRIES: usize = 64;

/// Guest memory by linear address as a vCPU's instruction sees it: every
/// access translated through the guest's own tables with the vCPU's
/// privilege (setting accessed and dirty bits as the CPU would), every
/// store reported to the MMU with [`ShadowMmu::track_write`].
pub struct MmuMemory<'a, M: GuestMemoryBackend = GuestMemoryMmap> {
    mmu: &'a dyn ShadowMmu,
    mem: &'a M,
    index: usize,
    cpl: u8,
    wide_stores: &'a Mutex<()>,
    /// What the stores asked of the VMM.
    changes: Changes,
    /// The guest-physical address of an access that found no RAM.
    mmio: Option<GuestAddress>,
}

impl<'a, M: GuestMemoryBackend> MmuMemory<'a, M> {
    /// Guest memory `mem` for vCPU `index` of `mmu` running at `cpl`.
    /// `wide_stores` serialises the stores that cannot be one host atomic
    /// operation (misaligned, 16 bytes): every guest store into a
    /// write-protected page is emulated, so one lock per VM keeps them
    /// atomic with respect to each other.
    pub fn new(
        mmu: &'a dyn ShadowMmu,
        mem: &'a M,
        index: usize,
        cpl: u8,
        wide_stores: &'a Mutex<()>,
    ) -> MmuMemory<'a, M> {
        MmuMemory {
            mmu,
            mem,
            index,
            cpl,
            wide_stores,
            changes: Changes::default(),
            mmio: None,
        }
    }

    /// What the stores so far ask of the VMM (flushes, entries to store
    /// again); the VMM carries it out before the vCPU resumes.
    pub fn take_changes(&mut self) -> Changes {
        std::mem::take(&mut self.changes)
    }

    /// The guest-physical address of the last access that found no RAM.
    pub fn mmio(&self) -> Option<GuestAddress> {
        self.mmio
    }

    /// The guest-physical address of `gva` for `kind`, or the fault.
    fn translate(&mut self, gva: u64, kind: AccessKind) -> Result<GuestAddress, MemFault> {
        let access = Access::at_cpl(kind, self.cpl);
        match self.mmu.gva_to_gpa(self.index, Gva(gva), access) {
            Ok(gpa) => {
                if self.mem.address_in_range(gpa) {
                    Ok(gpa)
                } else {
                    self.mmio = Some(gpa);
                    Err(MemFault::Mmio { gva: Gva(gva) })
                }
            }
            Err(MmuError::Walk(crate::WalkError::PageFault(error_code))) => {
                Err(MemFault::PageFault {
                    error_code,
                    cr2: Gva(gva),
                })
            }
            Err(_) => Err(MemFault::GeneralProtection),
        }
    }

    /// Splits `len` bytes at `gva` at page boundaries: (gva, offset, len).
    fn pieces(gva: u64, len: usize) -> impl Iterator<Item = (u64, usize, usize)> {
        let mut done = 0usize;
        std::iter::from_fn(move || {
            if done >= len {
                return None;
            }
            let at = gva.wrapping_add(done as u64);
            let room = (PAGE_SIZE - (at & (PAGE_SIZE - 1))) as usize;
            let n = room.min(len - done);
            let piece = (at, done, n);
            done += n;
            Some(piece)
        })
    }

    /// Reports a store of `len` bytes at `gpa` to the MMU.
    fn stored(&mut self, gpa: GuestAddress, len: usize) {
        let changes = self.mmu.track_write(gpa, len);
        self.changes.merge(changes);
    }
}

impl<M: GuestMemoryBackend> EmulatorMemory for MmuMemory<'_, M> {
    fn fetch(&mut self, rip: u64, buf: &mut [u8]) -> Result<usize, MemFault> {
        let mut got = 0;
        for (at, off, n) in Self::pieces(rip, buf.len()) {
            let gpa = match self.translate(at, AccessKind::Fetch) {
                Ok(gpa) => gpa,
                // The decoder decides whether it needed the bytes.
                Err(e) if got == 0 => return Err(e),
                Err(_) => break,
            };
            if self.mem.read_slice(&mut buf[off..off + n], gpa).is_err() {
                if got == 0 {
                    return Err(MemFault::Mmio { gva: Gva(at) });
                }
                break;
            }
            got += n;
        }
        Ok(got)
    }

    fn read(&mut self, gva: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        for (at, off, n) in Self::pieces(gva, buf.len()) {
            let gpa = self.translate(at, AccessKind::Read)?;
            self.mem
                .read_slice(&mut buf[off..off + n], gpa)
                .map_err(|_| MemFault::Mmio { gva: Gva(at) })?;
        }
        Ok(())
    }

    fn write(&mut self, gva: u64, data: &[u8]) -> Result<(), MemFault> {
        // Every page is translated (and checked writable) before any byte
        // is stored: a fault leaves memory unchanged.
        let mut targets = Vec::with_capacity(2);
        for (at, off, n) in Self::pieces(gva, data.len()) {
            targets.push((self.translate(at, AccessKind::Write)?, off, n));
        }
        for (gpa, off, n) in targets {
            self.mem
                .write_slice(&data[off..off + n], gpa)
                .map_err(|_| MemFault::Mmio { gva: Gva(gva) })?;
            self.stored(gpa, n);
        }
        Ok(())
    }

    fn cmpxchg(&mut self, gva: u64, expected: &mut [u8], new: &[u8]) -> Result<bool, MemFault> {
        let len = expected.len();
        if new.len() != len || len == 0 || len > 16 {
            return Err(MemFault::GeneralProtection);
        }
        let word = gva & !7;
        if gva - word + len as u64 <= 8 {
            // Within one aligned 8-byte word: a host compare-exchange of the
            // word, so that it is atomic also against the MMU's own
            // accessed/dirty updates of a page-table entry there.
            let gpa = self.translate(gva, AccessKind::Write)?;
            let wgpa = GuestAddress(gpa.0 & !7);
            let shift = (gva - word) as usize;
            for _ in 0..MAX_CAS_TRIES {
                let Some(current) = self.mem.load_u64(wgpa) else {
                    return Err(MemFault::Mmio { gva: Gva(gva) });
                };
                let mut bytes = current.to_le_bytes();
                if bytes[shift..shift + len] != *expected {
                    expected.copy_from_slice(&bytes[shift..shift + len]);
                    return Ok(false);
                }
                bytes[shift..shift + len].copy_from_slice(new);
                match self
                    .mem
                    .cmpxchg_u64(wgpa, current, u64::from_le_bytes(bytes))
                {
                    Some(true) => {
                        self.stored(GuestAddress(gpa.0), len);
                        return Ok(true);
                    }
                    Some(false) => continue,
                    None => return Err(MemFault::Mmio { gva: Gva(gva) }),
                }
            }
            // Other bytes of the word kept changing: report what is there
            // now; the emulator treats it as a lost race.
            let mut now = vec![0u8; len];
            self.read(gva, &mut now)?;
            expected.copy_from_slice(&now);
            return Ok(false);
        }
        // Wider or misaligned: atomic with respect to other emulated
        // stores (every guest store into a write-protected page is one).
        let _wide = self.wide_stores.lock();
        let mut now = vec![0u8; len];
        self.read(gva, &mut now)?;
        if now != *expected {
            expected.copy_from_slice(&now);
            return Ok(false);
        }
        self.write(gva, new)?;
        Ok(true)
    }
}
