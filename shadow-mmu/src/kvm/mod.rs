// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Running a KVM vCPU on shadow page tables (feature `kvm`).
//!
//! [`ShadowVm`] owns the hidden region (the system area with the hole's page
//! tables, GDT, IDT, TSSs, the trampoline and the per-vCPU IST stacks with
//! their chain areas, plus the shadow-page arena), registers it as KVM memslots above
//! guest RAM, sets vCPUs up to run on shadow roots, and turns trampoline
//! exits into [`ShadowMmu`](crate::ShadowMmu) calls and the return chains through which the
//! trampoline carries out what the MMU decided (see `trampoline.S`).
//!
//! On the hosts this was built on, KVM itself shadows our shadow tables: a
//! store from the VMM into a present entry is never seen, and a shadow page
//! reused without a guest store keeps its old translations. So the VMM
//! stores every change directly and the trampoline then rewrites each
//! changed present entry, and a word of every reused page, with an atomic
//! `lock or 0` that stores the current value (see `trampoline.S`): the
//! host sees a guest write, and a vCPU that runs its list late cannot bring
//! back a value another vCPU has since replaced.

mod chain;
mod deliver;
mod dirty;
mod emulate;
mod exit;
mod flush;
mod frame;
mod hypercall;
pub mod layout;
pub mod mailbox;
mod memslots;
mod system;
#[cfg(any(test, feature = "test-utils"))]
pub mod testing;
#[cfg(test)]
mod tests;
mod vcpu;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use parking_lot::Mutex;
use thiserror::Error;
use vm_memory::{MmapRegion, VolatileMemory};

use crate::arch::vector;
use crate::pte::{PTE_A, PTE_P, PTE_W};
use crate::{AtomicGuestMemory, GuestRam, Hole, Mmu, MmuConfig, MmuError};
use vm_memory::GuestMemoryMmap;

pub use exit::Exit;
use flush::RemoteFlush;
use layout::*;
pub use memslots::HiddenRegion;
use vcpu::VcpuGlue;

/// The shadow-mode hypercall instruction: `ud2` marked with "SHM". The #UD
/// it raises reaches the trampoline; KVM's emulator, which runs guest CPL0
/// code on the hosts this was built on, cannot deliver `int n`.
pub const HYPERCALL_INSN: [u8; 5] = [0x0f, 0x0b, b'S', b'H', b'M'];
/// The register form of the hypercall: RAX = number, RDX = argument, the
/// result in RAX. Only `LOAD_CR3`: the trampoline itself carries it out when
/// the address space's shadow root is cached (no exit).
pub const HYPERCALL_REG_INSN: [u8; 5] = [0x0f, 0x0b, b'S', b'H', b'R'];
/// The port the trampoline exits through.
pub const EXIT_PORT: u16 = 0x5a1;
/// The trampoline, assembled from `trampoline.S` (see its header).
pub const TRAMPOLINE_CODE: &[u8] = include_bytes!("trampoline.bin");

/// Errors of the KVM glue.
#[derive(Debug, Error)]
pub enum KvmGlueError {
    /// A KVM ioctl failed.
    #[error("KVM: {0}")]
    Kvm(#[from] kvm_ioctls::Error),
    /// The shadow MMU failed.
    #[error(transparent)]
    Mmu(#[from] MmuError),
    /// The system area could not be mapped.
    #[error("cannot map the hidden region: {0}")]
    Mmap(#[from] vm_memory::mmap::MmapRegionError),
    /// The configuration is unusable.
    #[error("invalid configuration: {0}")]
    Config(&'static str),
    /// The vCPU took the same page fault (address, error code, RIP) over and
    /// over although the MMU reported it fixed each time: the
    /// CPU does not run on the shadow tables the MMU keeps for it (guest
    /// CPL0 code rewrote the hidden region or loaded CR3 itself), and
    /// serving the fault again cannot help.
    #[error(
        "page fault at {gva:#x} (error code {error_code:#x}, RIP {rip:#x}) repeated {faults} times without progress: the vCPU does not run on the shadow tables the VMM built for it"
    )]
    FaultLoop {
        /// The faulting address.
        gva: u64,
        /// The error code.
        error_code: u64,
        /// Where.
        rip: u64,
        /// How many identical faults in a row.
        faults: u32,
    },
    /// An exception for the guest whose frame could not be written on the
    /// guest's stack (a double fault on hardware; the ABI has no gate for
    /// it).
    #[error(
        "guest exception {vector} (error code {error_code:#x}, RIP {rip:#x}) could not be delivered: its frame cannot be written at {stack:#x}"
    )]
    Undeliverable {
        /// The vector.
        vector: u8,
        /// Its error code.
        error_code: u64,
        /// Where it was raised.
        rip: u64,
        /// The stack address that could not be written.
        stack: u64,
    },
    /// The VMM's own code in the hole (the trampoline) took an exception:
    /// guest CPL0 code overwrote the hidden region (its descriptor
    /// tables, stacks or code) or left a state the trampoline cannot run
    /// with.
    #[error(
        "the trampoline took exception {vector} (error code {error_code:#x}) at {rip:#x}: the guest kernel corrupted the hidden region"
    )]
    TrampolineFault {
        /// The vector.
        vector: u8,
        /// Its error code.
        error_code: u64,
        /// Where, in the hole.
        rip: u64,
    },
    /// The trampoline's code is not what the VMM put there: guest CPL0 code
    /// overwrote it through the hole. Checked when an exit reports an
    /// external interrupt, which a corrupted entry (a vector pushed wrong)
    /// could otherwise make the VMM deliver for ever.
    #[error(
        "the trampoline's code differs from the VMM's at offset {offset:#x}: the guest kernel corrupted the hidden region"
    )]
    TrampolineCorrupted {
        /// The first byte that differs, from the trampoline's start.
        offset: usize,
    },
    /// A guest store into a shadowed page table that the emulator does not
    /// carry out.
    #[error("cannot emulate the instruction at RIP {rip:#x} (bytes {bytes:02x?})")]
    Emulation {
        /// Where.
        rip: u64,
        /// Its bytes, as fetched.
        bytes: Vec<u8>,
    },
}

/// How a [`ShadowVm`] is built.
#[derive(Debug)]
pub struct ShadowVmConfig {
    /// Guest-physical base of the hidden region: 2 MiB aligned, above all
    /// guest RAM and MMIO, below the host's MAXPHYADDR.
    pub hidden_base: u64,
    /// The first of the two memslots the hidden region uses.
    pub first_slot: u32,
    /// The MMU's tuning (vCPUs, page cap, prefetch...). Its arena base, hole
    /// and hidden ranges are set by [`ShadowVm::new`].
    pub mmu: MmuConfig,
}

/// A VM whose vCPUs run on shadow page tables.
pub struct ShadowVm<M: GuestRam = GuestMemoryMmap> {
    mmu: Mmu<M>,
    system: MmapRegion<()>,
    hidden_base: u64,
    vcpus: Vec<Mutex<VcpuGlue>>,
    flush: RemoteFlush,
    /// Serialises the emulated stores that cannot be one host atomic
    /// operation (misaligned, 16 bytes): every guest store into a
    /// write-protected page is emulated, so they stay atomic with respect to
    /// each other.
    wide_stores: Mutex<()>,
    /// Whether the trampoline resolves writes to clean pages itself
    /// ([`ShadowVm::set_dirty_fast_path`]).
    dirty_fast_path: AtomicBool,
    /// Guest instructions emulated.
    emulated: AtomicU64,
    /// External interrupts delivered to the guest's handlers.
    interrupts: AtomicU64,
}

impl<M: GuestRam> std::fmt::Debug for ShadowVm<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShadowVm")
            .field("hidden_base", &self.hidden_base)
            .field("vcpus", &self.vcpus.len())
            .finish_non_exhaustive()
    }
}

/// The one vector the CPU delivers to the guest's handler directly.
const DIRECT_VECTOR: u8 = vector::BP;
/// The first external-interrupt vector: 32-255 come from the interrupt
/// controller, never from an instruction's fault.
pub const FIRST_INTERRUPT: u8 = 32;

impl<M: GuestRam> ShadowVm<M> {
    /// Maps the hidden region, registers it with `vm` and creates the MMU.
    pub fn new(
        vm: &VmFd,
        mem: AtomicGuestMemory<M>,
        cfg: ShadowVmConfig,
    ) -> Result<ShadowVm<M>, KvmGlueError> {
        let first_slot = cfg.first_slot;
        let shadow = ShadowVm::without_memslots(mem, cfg)?;
        let (abase, ahost, asize) = shadow.mmu.arena_region();
        let regions = [
            (shadow.hidden_base, shadow.system.as_ptr(), SYSTEM_SIZE),
            (abase, ahost, asize),
        ];
        for (i, (gpa, host, size)) in regions.into_iter().enumerate() {
            let region = kvm_userspace_memory_region {
                slot: first_slot + i as u32,
                flags: 0,
                guest_phys_addr: gpa,
                memory_size: size,
                userspace_addr: host as u64,
            };
            // SAFETY: `host` is the start of a live mapping of `size` bytes
            // owned by `system` or by the MMU's arena, both of which live as
            // long as the returned `ShadowVm`, which the caller must keep
            // alive as long as the VM runs (the memslot is removed only with
            // the VM).
            unsafe { vm.set_user_memory_region(region)? };
        }
        Ok(shadow)
    }

    /// Everything [`ShadowVm::new`] builds but the memslots: the hidden
    /// region and the MMU, which the glue's logic needs without a VM.
    fn without_memslots(
        mem: AtomicGuestMemory<M>,
        mut cfg: ShadowVmConfig,
    ) -> Result<ShadowVm<M>, KvmGlueError> {
        if !cfg.hidden_base.is_multiple_of(SYSTEM_SIZE) {
            return Err(KvmGlueError::Config("hidden_base must be 2 MiB aligned"));
        }
        if cfg.mmu.vcpus == 0 || cfg.mmu.vcpus > MAX_VCPUS {
            return Err(KvmGlueError::Config("between 1 and 32 vCPUs"));
        }
        // The hole maps the arena with 2 MiB pages (the last one may reach
        // past it); the page cap stays as asked.
        let pages = u64::from(cfg.mmu.max_pages).next_multiple_of(512);
        if pages * 4096 > MAX_ARENA_SIZE {
            return Err(KvmGlueError::Config("the arena must fit in 1022 MiB"));
        }
        let arena_base = cfg.hidden_base + SYSTEM_SIZE;
        cfg.mmu.arena_base = arena_base;
        cfg.mmu.hole = Some(Hole {
            root_index: HOLE_ROOT_INDEX,
            entry: (cfg.hidden_base + HOLE_PDPT) | PTE_P | PTE_W | PTE_A,
        });
        // Everything the hole maps is hidden, including the tail of its last
        // 2 MiB page past a cap that is not a multiple of 512 pages.
        cfg.mmu
            .hidden
            .push(cfg.hidden_base..arena_base + pages * 4096);
        let vcpus = cfg.mmu.vcpus;
        let mmu = Mmu::new(mem, cfg.mmu)?;
        let system = MmapRegion::<()>::new(SYSTEM_SIZE as usize)?;
        system::build(&system, cfg.hidden_base, arena_base, pages * 4096, vcpus);
        Ok(ShadowVm {
            mmu,
            system,
            hidden_base: cfg.hidden_base,
            vcpus: (0..vcpus)
                .map(|_| Mutex::new(VcpuGlue::default()))
                .collect(),
            flush: RemoteFlush::new(vcpus),
            wide_stores: Mutex::new(()),
            dirty_fast_path: AtomicBool::new(true),
            emulated: AtomicU64::new(0),
            interrupts: AtomicU64::new(0),
        })
    }

    /// The shadow MMU.
    pub fn mmu(&self) -> &Mmu<M> {
        &self.mmu
    }

    pub(super) fn sys_load(&self, off: u64) -> u64 {
        self.system
            .get_atomic_ref::<AtomicU64>(off as usize)
            .map_or(0, |a| a.load(Ordering::Acquire))
    }

    /// The first byte of the trampoline's code in the system area that
    /// differs from [`TRAMPOLINE_CODE`], if any.
    pub(super) fn trampoline_damage(&self) -> Option<usize> {
        use vm_memory::Bytes;
        let mut code = [0u8; TRAMPOLINE_CODE.len()];
        let slice = self.system.as_volatile_slice();
        if slice.read_slice(&mut code, TRAMPOLINE as usize).is_err() {
            return Some(0);
        }
        code.iter().zip(TRAMPOLINE_CODE).position(|(a, b)| a != b)
    }

    pub(super) fn sys_store(&self, off: u64, value: u64) {
        if let Ok(a) = self.system.get_atomic_ref::<AtomicU64>(off as usize) {
            a.store(value, Ordering::Release);
        }
    }
}
