// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A [`ShadowVm`] whose hidden region the VMM registers itself.
//!
//! [`ShadowVm::new`] registers the hidden region's two memslots with the
//! `VmFd` it is given. A VMM that keeps its own account of the memslots (of
//! which slots are used, for dirty logging, for migration) registers them
//! through that account instead: it builds the VM with
//! [`ShadowVm::new_without_memslots`] and registers every region
//! [`ShadowVm::hidden_regions`] lists, before any vCPU runs.

use super::{KvmGlueError, ShadowVm, ShadowVmConfig, SYSTEM_SIZE};
use crate::{AtomicGuestMemory, GuestRam};

/// A range of guest-physical space that the VMM must register as a memslot
/// for the shadow MMU: guest-physical `guest_phys_addr..+size` backed by the
/// host memory at `userspace_addr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HiddenRegion {
    /// Guest-physical start, in the hidden region.
    pub guest_phys_addr: u64,
    /// Size in bytes, a multiple of 4 KiB.
    pub size: u64,
    /// Host address of the mapping that backs it. It belongs to the
    /// [`ShadowVm`] and lives as long as it: the memslot must be removed (or
    /// the VM destroyed) before the `ShadowVm` is dropped.
    pub userspace_addr: u64,
}

impl<M: GuestRam> ShadowVm<M> {
    /// Builds the hidden region and the MMU as [`ShadowVm::new`] does, but
    /// registers no memslot: the VMM registers each of
    /// [`ShadowVm::hidden_regions`] itself, read-write, without dirty
    /// logging, before any vCPU runs. `cfg.first_slot` is not used.
    pub fn new_without_memslots(
        mem: AtomicGuestMemory<M>,
        cfg: ShadowVmConfig,
    ) -> Result<ShadowVm<M>, KvmGlueError> {
        ShadowVm::without_memslots(mem, cfg)
    }

    /// The memslots of the hidden region: the system area, then the
    /// shadow-page arena. [`ShadowVm::new`] registers them as slots
    /// `first_slot` and `first_slot + 1`.
    pub fn hidden_regions(&self) -> [HiddenRegion; 2] {
        let (arena_base, arena_host, arena_size) = self.mmu.arena_region();
        [
            HiddenRegion {
                guest_phys_addr: self.hidden_base,
                size: SYSTEM_SIZE,
                userspace_addr: self.system.as_ptr() as u64,
            },
            HiddenRegion {
                guest_phys_addr: arena_base,
                size: arena_size,
                userspace_addr: arena_host as u64,
            },
        ]
    }
}

#[cfg(test)]
mod tests {
    use vm_memory::{GuestAddress, GuestMemoryAtomic, GuestMemoryMmap};

    use super::*;
    use crate::MmuConfig;

    #[test]
    fn the_regions_are_the_system_area_then_the_arena() {
        let hidden_base = 1 << 39;
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap();
        let vm = ShadowVm::new_without_memslots(
            GuestMemoryAtomic::new(mem),
            ShadowVmConfig {
                hidden_base,
                first_slot: 7,
                mmu: MmuConfig {
                    max_pages: 600,
                    ..Default::default()
                },
            },
        )
        .unwrap();
        let [system, arena] = vm.hidden_regions();
        assert_eq!(system.guest_phys_addr, hidden_base);
        assert_eq!(system.size, SYSTEM_SIZE);
        assert_eq!(arena.guest_phys_addr, hidden_base + SYSTEM_SIZE);
        assert!(arena.size >= 600 * 4096);
        let (base, host, size) = vm.mmu().arena_region();
        assert_eq!(
            (base, host as u64, size),
            (arena.guest_phys_addr, arena.userspace_addr, arena.size)
        );
        assert_ne!(system.userspace_addr, 0);
        assert_ne!(system.userspace_addr, arena.userspace_addr);
    }
}
