// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Emulating a guest store into a shadowed page table on a vCPU: the
//! registers put together from what KVM reports and what the trampoline
//! saved, guest memory reached through the guest's own tables, every store
//! reported to the MMU, and the result handed back through the return chain.

use std::sync::atomic::Ordering;

use kvm_bindings::kvm_regs;
use vm_memory::{Bytes, GuestAddress, GuestAddressSpace, GuestMemoryBackend, GuestMemoryMmap};

use super::chain::Commands;
use super::exit::Exit;
use super::frame::IretFrame;
use super::layout::*;
use super::mailbox::stack;
use super::vcpu::VcpuGlue;
use super::{KvmGlueError, ShadowVm};
use crate::arch::vector;
use crate::emulate::{self, reg, EmulateError, EmulatorMemory, Exception, MemFault, Regs};
use crate::pte::PteMemory;
use crate::{Access, AccessKind, Changes, Gva, MmuError, ShadowMmu, PAGE_SIZE};

/// Most tries of an atomic update that keeps losing to other writers before
/// the emulator is told the comparison failed (it then retries the whole
/// read-modify-write, or reports the failed CMPXCHG the guest can retry).
const MAX_CAS_TRIES: usize = 64;

/// Guest memory as the instruction being emulated sees it.
struct GuestAccess<'a> {
    vm: &'a ShadowVm,
    mem: &'a GuestMemoryMmap,
    index: usize,
    cpl: u8,
    /// What the stores asked of the VMM.
    changes: Changes,
    /// The guest-physical address of an access that found no RAM.
    mmio: Option<GuestAddress>,
}

impl GuestAccess<'_> {
    /// The guest-physical address of `gva` for `kind`, or the fault.
    fn translate(&mut self, gva: u64, kind: AccessKind) -> Result<GuestAddress, MemFault> {
        let access = Access::at_cpl(kind, self.cpl);
        match self.vm.mmu.gva_to_gpa(self.index, Gva(gva), access) {
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
        let changes = self.vm.mmu.track_write(gpa, len);
        self.changes.merge(changes);
    }
}

impl EmulatorMemory for GuestAccess<'_> {
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
        let _wide = self.vm.wide_stores.lock();
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

impl ShadowVm {
    /// Carries out the guest store that made vCPU `index` exit with
    /// [`Exit::Emulate`] (a write into a page the MMU shadows as a page
    /// table), then lets the vCPU resume after the instruction.
    ///
    /// `regs` are the vCPU's registers as KVM reports them at that exit
    /// (`KVM_GET_REGS`, or the `kvm_run` sync registers); on return they hold
    /// what the VMM must write back before it runs the vCPU again if they
    /// changed (the guest's RAX, RDX, RIP and RFLAGS go back through the
    /// trampoline; `regs` keeps the trampoline's own). Returns what to do
    /// next, as [`ShadowVm::handle_exit`] does: the instruction may also
    /// raise an exception for the guest, reach MMIO, or not be emulable.
    pub fn emulate(&self, index: usize, regs: &mut kvm_regs) -> Result<Exit, KvmGlueError> {
        let glue = self.glue(index)?;
        let mut g = glue.lock();
        let mut cmds = g.deferred.take().unwrap_or_default();
        let top = vcpu_block(index) + VCPU_BLOCK_SIZE;
        let rd = |off: u64| self.sys_load(top - off);
        let frame = IretFrame {
            rip: rd(stack::RIP),
            cs: rd(stack::CS),
            rflags: rd(stack::RFLAGS),
            rsp: rd(stack::RSP),
            ss: rd(stack::SS),
        };
        let mut guest = Regs {
            gpr: [
                rd(stack::RAX),
                regs.rcx,
                rd(stack::RDX),
                regs.rbx,
                frame.rsp,
                regs.rbp,
                regs.rsi,
                regs.rdi,
                regs.r8,
                regs.r9,
                regs.r10,
                regs.r11,
                regs.r12,
                regs.r13,
                regs.r14,
                regs.r15,
            ],
            rip: frame.rip,
            rflags: frame.rflags,
        };
        let mem = self.mmu.memory().memory();
        let mut access = GuestAccess {
            vm: self,
            mem: &mem,
            index,
            cpl: frame.cpl(),
            changes: Changes::default(),
            mmio: None,
        };
        let result = emulate::emulate(&mut guest, &mut access, frame.cpl());
        let changes = std::mem::take(&mut access.changes);
        let mmio = access.mmio;
        self.add_changes(&g, index, &mut cmds, changes);
        let exit = match result {
            Ok(_) => {
                self.sys_store(top - stack::RAX, guest.gpr[reg::RAX]);
                self.sys_store(top - stack::RDX, guest.gpr[reg::RDX]);
                let r = &guest.gpr;
                (regs.rcx, regs.rbx, regs.rbp, regs.rsi, regs.rdi) = (r[1], r[3], r[5], r[6], r[7]);
                (regs.r8, regs.r9, regs.r10, regs.r11) = (r[8], r[9], r[10], r[11]);
                (regs.r12, regs.r13, regs.r14, regs.r15) = (r[12], r[13], r[14], r[15]);
                cmds.frame = Some(IretFrame {
                    rip: guest.rip,
                    rflags: guest.rflags,
                    rsp: guest.gpr[reg::RSP],
                    ..frame
                });
                self.emulated.fetch_add(1, Ordering::Relaxed);
                Exit::Resume
            }
            Err(EmulateError::Exception(e)) => self.raise(&g, index, e, mmio, frame, &mut cmds),
            Err(EmulateError::Decode { .. }) => {
                self.raise(&g, index, Exception::InvalidOpcode, None, frame, &mut cmds)
            }
            Err(EmulateError::Unsupported { bytes }) => {
                return Err(KvmGlueError::Emulation {
                    rip: frame.rip,
                    bytes,
                })
            }
        };
        if let Some(delivered) = cmds.cr2 {
            g.guest_cr2 = delivered;
        }
        self.post(&mut g, index, cmds);
        Ok(exit)
    }

    /// The guest gets `e`, raised by the instruction at `frame.rip`.
    fn raise(
        &self,
        g: &VcpuGlue,
        index: usize,
        e: Exception,
        mmio: Option<GuestAddress>,
        frame: IretFrame,
        cmds: &mut Commands,
    ) -> Exit {
        match e {
            Exception::InvalidOpcode => self.deliver(g, index, vector::UD, None, None, frame, cmds),
            Exception::GeneralProtection => {
                self.deliver(g, index, vector::GP, Some(0), None, frame, cmds)
            }
            Exception::PageFault { error_code, cr2 } => self.deliver(
                g,
                index,
                vector::PF,
                Some(u64::from(error_code.bits())),
                Some(cr2.0),
                frame,
                cmds,
            ),
            Exception::Mmio { gva } => Exit::Mmio {
                gpa: mmio.unwrap_or(GuestAddress(gva.0)),
                rip: frame.rip,
            },
        }
    }

    /// How many guest instructions the glue has emulated.
    pub fn emulated(&self) -> u64 {
        self.emulated.load(Ordering::Relaxed)
    }
}
