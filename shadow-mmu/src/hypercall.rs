// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Serving the guest ABI's hypercalls that concern the MMU (`LOAD_CR3`,
//! `INVLPG`, `FLUSH_TLB`, `SET_TRAP_TABLE`, `SET_PAGING_BITS`, `MMU_UPDATE`,
//! `MEMORY_MAP`), for any VMM: the KVM glue and the fuzz targets run the
//! same code, and only what a vCPU is differs ([`HypercallVcpu`]).

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use crate::abi::{self, Block, Hypercall};
use crate::{Changes, Cr0, Cr4, Efer, Gva, MmuError, PagingState, ShadowMmu};

/// What serving a hypercall needs from the vCPU that made it.
pub trait HypercallVcpu {
    /// The VMM's error type; MMU errors convert into it.
    type Error: From<MmuError>;

    /// The MMU of the vCPU's VM.
    fn mmu(&self) -> &dyn ShadowMmu;

    /// The vCPU's index in the MMU.
    fn index(&self) -> usize;

    /// The paging state the guest believes in, `None` before the vCPU was
    /// set up.
    fn paging_state(&self) -> Option<PagingState>;

    /// Makes `state` the vCPU's paging state (a `LOAD_CR3` or
    /// `SET_PAGING_BITS`): the MMU's root for it goes into the vCPU's CR3.
    fn load_paging_state(&mut self, state: PagingState) -> Result<(), Self::Error>;

    /// Registers the guest's trap table (`entries` handler addresses at
    /// `table`, 0 for none: exceptions, then external interrupts from vector
    /// 32) and the kernel stack for events from CPL 3.
    fn set_trap_table(&mut self, table: u64, kernel_rsp: u64, entries: u16);

    /// Shadow changes to carry out before the vCPU resumes.
    fn apply(&mut self, changes: Changes);

    /// The hypercall stored `len` bytes of guest memory at `gpa` (the MMU
    /// has been told): for VMMs that log guest-memory changes.
    fn wrote(&mut self, _gpa: GuestAddress, _len: usize) {}
}

/// How a hypercall was served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Served {
    /// Served here; the result is in the block.
    Done(i64),
    /// The VMM serves it (console, exit, start vCPU, unknown numbers) and
    /// writes the result into the block.
    Vmm {
        /// The number.
        nr: u64,
        /// The arguments.
        args: [u64; 4],
    },
}

/// Serves the hypercall in `block` (already read from guest memory) for
/// `vcpu`: the MMU's part of it, and the result written into the block (a
/// guest store the MMU is told about), unless it is for the VMM.
pub fn serve<V: HypercallVcpu>(
    mem: &impl GuestMemoryBackend,
    vcpu: &mut V,
    block: &Block,
) -> Result<Served, V::Error> {
    let index = vcpu.index();
    let result = match block.decode() {
        Err(_) => abi::result::E_INVALID,
        Ok(Hypercall::LoadCr3 { cr3 }) => load_cr3(mem, vcpu, cr3)?,
        Ok(Hypercall::Invlpg { gva }) => {
            let changes = vcpu.mmu().invlpg(index, Gva(gva))?;
            vcpu.apply(changes);
            abi::result::OK
        }
        Ok(Hypercall::FlushTlb) => {
            let changes = vcpu.mmu().flush_tlb(index)?;
            vcpu.apply(changes);
            abi::result::OK
        }
        Ok(Hypercall::SetTrapTable {
            table,
            kernel_rsp,
            entries,
        }) => {
            vcpu.set_trap_table(table, kernel_rsp, entries);
            abi::result::OK
        }
        Ok(Hypercall::SetPagingBits { bits }) => {
            let mut state = vcpu.paging_state().ok_or(MmuError::NoPagingState(index))?;
            state.cr0.set(Cr0::WP, bits & 1 != 0);
            state.cr4.set(Cr4::SMEP, bits & 2 != 0);
            state.cr4.set(Cr4::SMAP, bits & 4 != 0);
            state.efer.set(Efer::NXE, bits & 8 != 0);
            vcpu.load_paging_state(state)?;
            abi::result::OK
        }
        Ok(Hypercall::MmuUpdate { list, count }) => match abi::read_mmu_updates(mem, list, count) {
            Ok(pairs) => {
                for (gpa, value) in pairs {
                    // Checked to be RAM by read_mmu_updates; a region
                    // unplugged meanwhile drops the store, as hardware would.
                    if mem.write_obj(value, gpa).is_ok() {
                        tracked(vcpu, gpa, 8);
                    }
                }
                abi::result::OK
            }
            Err(_) => abi::result::E_INVALID,
        },
        Ok(Hypercall::MemoryMap { buf, capacity }) => {
            // The map the MMU itself works from: after a hotplug, the VMM's
            // `memory_changed` is what makes new RAM appear here.
            match abi::write_memory_map(mem, buf, capacity) {
                Ok((count, written)) => {
                    if let Some((at, len)) = written {
                        for off in (0..len as u64).step_by(8) {
                            tracked(vcpu, GuestAddress(at.0 + off), 8);
                        }
                    }
                    i64::try_from(count).unwrap_or(i64::MAX)
                }
                Err(_) => abi::result::E_INVALID,
            }
        }
        Ok(Hypercall::Other { nr, args }) => return Ok(Served::Vmm { nr, args }),
    };
    let at = GuestAddress(block.gpa.0 + abi::RESULT_OFFSET);
    block.complete(mem, result);
    tracked(vcpu, at, 8);
    Ok(Served::Done(result))
}

/// `LOAD_CR3` of `cr3`: checks it as `mov cr3` would (without CR4.PCIDE
/// only PWT and PCD below bit 12; the top table RAM below MAXPHYADDR) and
/// loads it. Returns the result for the guest.
pub fn load_cr3<V: HypercallVcpu>(
    mem: &impl GuestMemoryBackend,
    vcpu: &mut V,
    cr3: u64,
) -> Result<i64, V::Error> {
    let mut state = vcpu
        .paging_state()
        .ok_or(MmuError::NoPagingState(vcpu.index()))?;
    let table = cr3 & !0xfff;
    let flags_ok = state.cr4.contains(Cr4::PCIDE) || cr3 & 0xfe7 == 0;
    if !flags_ok || table & !state.phys_mask() != 0 || !mem.address_in_range(GuestAddress(table)) {
        return Ok(abi::result::E_INVALID);
    }
    state.cr3 = cr3;
    vcpu.load_paging_state(state)?;
    Ok(abi::result::OK)
}

/// Tells the MMU and the vCPU about a store the hypercall made.
fn tracked<V: HypercallVcpu>(vcpu: &mut V, gpa: GuestAddress, len: usize) {
    let changes = vcpu.mmu().track_write(gpa, len);
    vcpu.apply(changes);
    vcpu.wrote(gpa, len);
}
