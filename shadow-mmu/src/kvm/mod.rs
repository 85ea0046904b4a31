// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Running a KVM vCPU on shadow page tables (feature `kvm`).
//!
//! [`ShadowVm`] owns the hidden region (the system area with the hole's page
//! tables, GDT, IDT, TSSs, the trampoline and the per-vCPU IST stacks with
//! their chain areas, plus the shadow-page arena), registers it as KVM memslots above
//! guest RAM, sets vCPUs up to run on shadow roots, and turns trampoline
//! exits into [`ShadowMmu`] calls and the return chains through which the
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

pub mod layout;
pub mod mailbox;
mod system;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs, kvm_userspace_memory_region};
use kvm_ioctls::{VcpuFd, VmFd};
use parking_lot::Mutex;
use thiserror::Error;
use vm_memory::{
    Bytes, GuestAddress, GuestAddressSpace, GuestMemoryBackend, MmapRegion, VolatileMemory,
};

use crate::abi::{self, Hypercall};
use crate::addr::Gva;
use crate::arch::{Access, AccessKind, Cr0, Cr4, Efer, PagingState, PfErrorCode};
use crate::mmu::{
    Changes, FaultOutcome, GuestException, GuestMemory, Hole, Mmu, MmuConfig, MmuError, ShadowMmu,
};
use crate::pte::{PTE_A, PTE_P, PTE_W};

use layout::*;
use mailbox::*;

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

/// What the VMM must do after a trampoline exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Run the vCPU again.
    Resume,
    /// A hypercall the VMM serves itself (console, exit, start vCPU,
    /// unknown numbers); answer it with [`ShadowVm::complete_hypercall`]
    /// before running the vCPU again.
    Hypercall {
        /// GPA of the hypercall block.
        block: GuestAddress,
        /// The number.
        nr: u64,
        /// The arguments.
        args: [u64; 4],
    },
    /// The guest accessed an address that is not RAM and no registered
    /// MMIO range: the VMM would have to emulate the instruction.
    Mmio {
        /// The guest-physical address.
        gpa: GuestAddress,
        /// The instruction.
        rip: u64,
    },
    /// The guest wrote a shadowed page table in a way that needs
    /// instruction emulation.
    Emulate {
        /// The guest-physical address written.
        gpa: GuestAddress,
        /// The instruction.
        rip: u64,
    },
    /// An exception the guest has no handler for: the VM cannot go on.
    Unhandled {
        /// The vector.
        vector: u8,
        /// Its error code.
        error_code: u64,
        /// Where.
        rip: u64,
        /// CR2 for a page fault.
        cr2: u64,
    },
}

/// What the trampoline must carry out before resuming.
#[derive(Debug, Default)]
struct Commands {
    touches: Vec<u64>,
    /// Hole addresses of entries the guest must rewrite (their values
    /// are already in memory).
    writes: Vec<u64>,
    invlpg: Vec<u64>,
    cr3: Option<u64>,
    cr4: Option<u64>,
    cr2: Option<u64>,
    frame: Option<[u64; 5]>,
}

/// Per-vCPU shadow state of the glue.
#[derive(Debug, Default)]
struct VcpuGlue {
    /// The paging state the guest believes in.
    guest: Option<PagingState>,
    /// The shadow root the vCPU's CR3 holds.
    root: u64,
    /// The guest's exception handlers, read from its trap table when it
    /// registered it (0: none), and its kernel stack.
    handlers: [u64; 32],
    kernel_rsp: u64,
    /// Chains still to hand to the trampoline, one per exit.
    pending: VecDeque<Vec<u64>>,
    /// Commands held back until the VMM has answered a hypercall.
    deferred: Option<Commands>,
    /// CR2 as the guest knows it: the address of the last page fault
    /// delivered to it. Shadow faults the guest never sees overwrite the
    /// real CR2 and must put this back.
    guest_cr2: u64,
}

/// A VM whose vCPUs run on shadow page tables.
pub struct ShadowVm {
    mmu: Mmu,
    system: MmapRegion<()>,
    hidden_base: u64,
    vcpus: Vec<Mutex<VcpuGlue>>,
    flush: RemoteFlush,
}

/// Remote TLB flushes: a change that other vCPUs may have cached bumps the
/// generation; each running vCPU acknowledges it by reloading CR3, either on
/// its next trampoline exit or, when the VMM kicks it, through an NMI whose
/// handler reloads CR3 and counts the flush. Freed shadow pages are reused
/// only once every running vCPU has acknowledged the latest generation.
#[derive(Debug)]
struct RemoteFlush {
    generation: AtomicU64,
    /// Per vCPU: the generation it has flushed up to.
    flushed: Vec<AtomicU64>,
    /// Per vCPU: whether it runs guest code (a vCPU that never ran has
    /// nothing cached).
    running: Vec<AtomicBool>,
    /// Per vCPU: an NMI in flight: (flush count that acknowledges it, the
    /// generation it covers).
    nmi: Vec<Mutex<Option<(u64, u64)>>>,
}

impl std::fmt::Debug for ShadowVm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShadowVm")
            .field("hidden_base", &self.hidden_base)
            .field("vcpus", &self.vcpus.len())
            .finish_non_exhaustive()
    }
}

/// The one vector the CPU delivers to the guest's handler directly.
const DIRECT_VECTOR: u8 = 3;

/// More single-page invalidations than this in one exit and a full flush
/// is cheaper for the emulated trampoline.
const MAX_INVLPG: usize = 64;

/// The guest-virtual address of trampoline offset `off`.
const fn trampoline_va(off: u64) -> u64 {
    hole_va(TRAMPOLINE + off)
}

const RFLAGS_TF: u64 = 1 << 8;
const RFLAGS_IF: u64 = 1 << 9;
const RFLAGS_NT: u64 = 1 << 14;
const RFLAGS_RF: u64 = 1 << 16;
const RFLAGS_VM: u64 = 1 << 17;
const RFLAGS_AC: u64 = 1 << 18;

/// The vectors for which the CPU pushes an error code.
const fn has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21)
}

impl ShadowVm {
    /// Maps the hidden region, registers it with `vm` and creates the MMU.
    pub fn new(
        vm: &VmFd,
        mem: GuestMemory,
        mut cfg: ShadowVmConfig,
    ) -> Result<ShadowVm, KvmGlueError> {
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

        let (abase, ahost, asize) = mmu.arena_region();
        let regions = [
            (cfg.hidden_base, system.as_ptr(), SYSTEM_SIZE),
            (abase, ahost, asize),
        ];
        for (i, (gpa, host, size)) in regions.into_iter().enumerate() {
            let region = kvm_userspace_memory_region {
                slot: cfg.first_slot + i as u32,
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
        Ok(ShadowVm {
            mmu,
            system,
            hidden_base: cfg.hidden_base,
            vcpus: (0..vcpus)
                .map(|_| Mutex::new(VcpuGlue::default()))
                .collect(),
            flush: RemoteFlush {
                generation: AtomicU64::new(0),
                flushed: (0..vcpus).map(|_| AtomicU64::new(0)).collect(),
                running: (0..vcpus).map(|_| AtomicBool::new(false)).collect(),
                nmi: (0..vcpus).map(|_| Mutex::new(None)).collect(),
            },
        })
    }

    /// The shadow MMU.
    pub fn mmu(&self) -> &Mmu {
        &self.mmu
    }

    fn sys_load(&self, off: u64) -> u64 {
        self.system
            .get_atomic_ref::<AtomicU64>(off as usize)
            .map_or(0, |a| a.load(Ordering::Acquire))
    }

    fn sys_store(&self, off: u64, value: u64) {
        if let Ok(a) = self.system.get_atomic_ref::<AtomicU64>(off as usize) {
            a.store(value, Ordering::Release);
        }
    }

    /// Sets vCPU `index` (whose CPUID is already set) up to start at `regs`
    /// in 64-bit mode on the shadow of the guest tables `guest` describes.
    pub fn setup_vcpu(
        &self,
        vcpu: &VcpuFd,
        index: usize,
        guest: &PagingState,
        regs: &kvm_regs,
    ) -> Result<(), KvmGlueError> {
        let mut sregs = vcpu.get_sregs()?;
        self.prepare_vcpu(index, guest, &mut sregs)?;
        vcpu.set_sregs(&sregs)?;
        vcpu.set_regs(regs)?;
        Ok(())
    }

    /// Fills `sregs` for vCPU `index` to run in 64-bit mode on the shadow of
    /// the guest tables `guest` describes: CR3 is the shadow root, GDT, IDT
    /// and TR are the VMM's in the hole. For VMMs that set the registers
    /// themselves (see [`ShadowVm::setup_vcpu`] for one that does it all).
    pub fn prepare_vcpu(
        &self,
        index: usize,
        guest: &PagingState,
        sregs: &mut kvm_sregs,
    ) -> Result<(), KvmGlueError> {
        if guest.mode() == crate::arch::PagingMode::Level5 {
            // The hole is mounted in 4-level roots only.
            return Err(KvmGlueError::Config("5-level guests are not supported"));
        }
        let (root, changes) = self.load_root(index, guest)?;
        // The vCPU has not run: nothing is cached anywhere yet.
        self.mmu.flush_completed();
        drop(changes);
        let glue = self
            .vcpus
            .get(index)
            .ok_or(KvmGlueError::Mmu(MmuError::NoSuchVcpu(index)))?;
        {
            let mut g = glue.lock();
            g.guest = Some(*guest);
            g.root = root;
            // A vCPU set up again (a reset) starts with no trap table, no
            // switch to catch up with and only its new root cached.
            self.set_trap_table(&mut g, index, 0, 0);
            self.sys_store(vcpu_block(index) + SWITCHED, 0);
        }
        self.publish_roots(index);
        let code = kvm_segment {
            base: 0,
            limit: 0xffff_ffff,
            selector: KERNEL_CS,
            type_: 11,
            present: 1,
            dpl: 0,
            db: 0,
            s: 1,
            l: 1,
            g: 1,
            avl: 0,
            unusable: 0,
            padding: 0,
        };
        let data = kvm_segment {
            selector: KERNEL_DS,
            type_: 3,
            db: 1,
            l: 0,
            ..code
        };
        sregs.cs = code;
        sregs.ds = data;
        sregs.es = data;
        sregs.ss = data;
        sregs.fs = data;
        sregs.gs = data;
        sregs.tr = kvm_segment {
            base: hole_va(TSS + index as u64 * TSS_STRIDE),
            limit: 103,
            selector: TSS_SELECTOR + 16 * index as u16,
            type_: 11,
            s: 0,
            db: 0,
            l: 0,
            g: 0,
            ..code
        };
        sregs.gdt.base = hole_va(GDT);
        sregs.gdt.limit = (TSS_SELECTOR as u64 + 16 * MAX_VCPUS as u64 - 1) as u16;
        sregs.idt.base = hole_va(idt(index));
        sregs.idt.limit = (IDT_STRIDE - 1) as u16;
        sregs.cr0 = (Cr0::PE | Cr0::MP | Cr0::ET | Cr0::NE | Cr0::WP | Cr0::PG).bits();
        sregs.cr4 = real_cr4(guest);
        sregs.efer = (Efer::LME | Efer::LMA | Efer::NXE | Efer::SCE).bits();
        sregs.cr3 = root;
        Ok(())
    }

    /// Tells the glue whether vCPU `index` runs guest code. A vCPU that does
    /// not run (not started, stopped) holds no stale translations.
    pub fn set_running(&self, index: usize, running: bool) {
        if let Some(r) = self.flush.running.get(index) {
            if running {
                // Its TLB starts empty: nothing older to flush.
                let generation = self.flush.generation.load(Ordering::Acquire);
                self.flush.flushed[index].fetch_max(generation, Ordering::AcqRel);
            }
            r.store(running, Ordering::Release);
            self.try_complete_flush();
        }
    }

    /// The running vCPUs that still owe a flush: the VMM should kick them out
    /// of `KVM_RUN` (a signal), so that [`ShadowVm::before_run`] sends them
    /// the flush NMI.
    pub fn vcpus_owing_flush(&self) -> Vec<usize> {
        let generation = self.flush.generation.load(Ordering::Acquire);
        (0..self.vcpus.len())
            .filter(|&i| {
                self.flush.running[i].load(Ordering::Acquire)
                    && self.flush.flushed[i].load(Ordering::Acquire) < generation
            })
            .collect()
    }

    /// Call on vCPU `index`'s thread before every `KVM_RUN`: if it owes a
    /// flush, queue the NMI whose handler (in the trampoline) reloads CR3.
    pub fn before_run(&self, index: usize, vcpu: &VcpuFd) -> Result<(), KvmGlueError> {
        self.check_nmi_ack(index);
        let generation = self.flush.generation.load(Ordering::Acquire);
        let Some(flushed) = self.flush.flushed.get(index) else {
            return Ok(());
        };
        if flushed.load(Ordering::Acquire) >= generation {
            return Ok(());
        }
        let mut nmi = self.flush.nmi[index].lock();
        if nmi.is_none() {
            let count = self.sys_load(nmi_block(index));
            *nmi = Some((count + 1, generation));
            vcpu.nmi()?;
        }
        Ok(())
    }

    /// How many flush NMIs the vCPUs' handlers have carried out.
    pub fn nmi_flushes(&self) -> u64 {
        (0..self.vcpus.len())
            .map(|i| self.sys_load(nmi_block(i)))
            .sum()
    }

    /// Marks vCPU `index`'s NMI flush done once its handler has counted it.
    fn check_nmi_ack(&self, index: usize) {
        let Some(slot) = self.flush.nmi.get(index) else {
            return;
        };
        let mut nmi = slot.lock();
        if let Some((want, generation)) = *nmi {
            if self.sys_load(nmi_block(index)) >= want {
                self.flush.flushed[index].fetch_max(generation, Ordering::AcqRel);
                *nmi = None;
                drop(nmi);
                self.try_complete_flush();
            }
        }
    }

    /// Releases freed shadow pages once every running vCPU has flushed the
    /// latest generation.
    fn try_complete_flush(&self) {
        let generation = self.flush.generation.load(Ordering::Acquire);
        let done = (0..self.vcpus.len()).all(|i| {
            !self.flush.running[i].load(Ordering::Acquire)
                || self.flush.flushed[i].load(Ordering::Acquire) >= generation
        });
        if done {
            self.mmu.flush_completed();
        }
    }

    /// The vCPU exited through the trampoline (an `out` to [`EXIT_PORT`]).
    pub fn handle_exit(&self, index: usize) -> Result<Exit, KvmGlueError> {
        let glue = self
            .vcpus
            .get(index)
            .ok_or(KvmGlueError::Mmu(MmuError::NoSuchVcpu(index)))?;
        let mut g = glue.lock();
        let block = vcpu_block(index);
        self.check_nmi_ack(index);
        if let Some(chain) = g.pending.pop_front() {
            // The `again` gadget of the previous chain: the next one goes
            // at the start of the chain area.
            self.write_chain(block, &chain);
            return Ok(Exit::Resume);
        }
        let top = block + VCPU_BLOCK_SIZE;
        let rd = |off: u64| self.sys_load(top - off);
        let vector = rd(stack::VECTOR) as u8;
        let error_code = rd(stack::ERROR_CODE);
        let cr2 = rd(stack::CR2);
        let frame = [
            rd(stack::RIP),
            rd(stack::CS),
            rd(stack::RFLAGS),
            rd(stack::RSP),
            rd(stack::SS),
        ];
        // Until a chain is posted, the trampoline just resumes (and the
        // guest retries): a VMM that runs the vCPU again without answering
        // a hypercall, or after an error, gets no stray return.
        self.sys_store(top - stack::CR2, trampoline_va(gadget::RESUME));
        let mut cmds = Commands::default();
        self.catch_up_with_switch(&mut g, index, &mut cmds)?;
        // A flush this vCPU owes is done by the reload on the way back.
        let generation = self.flush.generation.load(Ordering::Acquire);
        if self.flush.flushed[index].load(Ordering::Acquire) < generation {
            cmds.cr3.get_or_insert(g.root);
            self.flush.flushed[index].fetch_max(generation, Ordering::AcqRel);
            self.try_complete_flush();
        }
        let exit = match vector {
            14 => {
                // Whatever becomes of it, this fault is not the guest's
                // unless it is delivered below: its address must not stay
                // in CR2 (a handler still to read the guest's own fault
                // address would read this one).
                if cr2 != g.guest_cr2 {
                    cmds.cr2 = Some(g.guest_cr2);
                }
                self.mmu.set_eflags_ac(index, frame[2] & RFLAGS_AC != 0)?;
                let ec = PfErrorCode::from_bits_truncate(error_code as u32);
                let (outcome, changes) = self.mmu.page_fault(index, Gva(cr2), ec)?;
                self.add_changes(&g, index, &mut cmds, changes);
                match outcome {
                    FaultOutcome::Fixed | FaultOutcome::Retry => Exit::Resume,
                    FaultOutcome::Inject(GuestException::PageFault { error_code, cr2 }) => self
                        .deliver(
                            &g,
                            index,
                            14,
                            Some(u64::from(error_code.bits())),
                            Some(cr2.0),
                            frame,
                            &mut cmds,
                        ),
                    FaultOutcome::Inject(GuestException::GeneralProtection) => {
                        self.deliver(&g, index, 13, Some(0), None, frame, &mut cmds)
                    }
                    FaultOutcome::Mmio { gpa } => Exit::Mmio { gpa, rip: frame[0] },
                    FaultOutcome::Emulate { gpa } => Exit::Emulate { gpa, rip: frame[0] },
                }
            }
            6 if frame[1] & 3 == 0 && self.is_insn(index, frame[0], HYPERCALL_INSN) => {
                let mut resume = frame;
                resume[0] = frame[0] + HYPERCALL_INSN.len() as u64;
                cmds.frame = Some(resume);
                self.hypercall(&mut g, index, rd(stack::RAX) & 0xffff_ffff, &mut cmds)?
            }
            6 if frame[1] & 3 == 0 && self.is_insn(index, frame[0], HYPERCALL_REG_INSN) => {
                let mut resume = frame;
                resume[0] = frame[0] + HYPERCALL_REG_INSN.len() as u64;
                cmds.frame = Some(resume);
                let result = match rd(stack::RAX) {
                    1 => self.load_cr3(&mut g, index, rd(stack::RDX), &mut cmds)?,
                    _ => abi::result::E_UNKNOWN,
                };
                // The chain restores RAX from its slot.
                self.sys_store(top - stack::RAX, result as u64);
                Exit::Resume
            }
            8 if self.failed_direct_delivery(&g, index, frame) => {
                self.deliver(&g, index, DIRECT_VECTOR, None, None, frame, &mut cmds)
            }
            v => {
                let ec = has_error_code(v).then_some(error_code);
                self.deliver(&g, index, v, ec, None, frame, &mut cmds)
            }
        };
        if let Some(delivered) = cmds.cr2 {
            g.guest_cr2 = delivered;
        }
        if matches!(exit, Exit::Hypercall { .. }) {
            // Posted once the VMM has written the result.
            g.deferred = Some(cmds);
        } else {
            self.post(&mut g, index, cmds);
        }
        Ok(exit)
    }

    /// If the trampoline switched address spaces by itself since the last
    /// exit (a cached root, see [`HYPERCALL_REG_INSN`]), tells the MMU, so
    /// that it knows which root the vCPU runs on before anything else.
    fn catch_up_with_switch(
        &self,
        g: &mut VcpuGlue,
        index: usize,
        cmds: &mut Commands,
    ) -> Result<(), KvmGlueError> {
        let at = vcpu_block(index) + SWITCHED;
        let switched = self.sys_load(at);
        if switched == 0 {
            return Ok(());
        }
        self.sys_store(at, 0);
        // A cached root: found, not built; no unsync page to sync. The word
        // lives in the hole, which guest CPL0 code can write: it is checked
        // as a LOAD_CR3 would be, and the reload this queues puts the vCPU
        // on the root the MMU now holds, whatever the word said.
        let _ = self.load_cr3(g, index, switched & !(1 << 63), cmds)?;
        Ok(())
    }

    /// Fills vCPU `index`'s root cache with the roots it may switch to by
    /// itself until its next exit (none with more than one vCPU: another
    /// vCPU's exit could release a root this one is about to load).
    fn publish_roots(&self, index: usize) {
        let mut table = [[0u64; 2]; ROOT_SLOTS as usize];
        if self.vcpus.len() == 1 {
            for (cr3, root) in self.mmu.switchable_roots(index) {
                if cr3 & (1 << 63) == 0 {
                    table[((cr3 >> 12) % ROOT_SLOTS) as usize] = [cr3 | 1 << 63, root];
                }
            }
        }
        let base = vcpu_block(index) + ROOTS;
        for (i, [key, root]) in table.into_iter().enumerate() {
            self.sys_store(base + 16 * i as u64, key);
            self.sys_store(base + 16 * i as u64 + 8, root);
        }
    }

    /// Whether the #DF with `frame` is this host's report of a direct #BP
    /// delivery that faulted (its kernel stack or handler not shadowed yet):
    /// the guest has a direct #BP gate and `frame` is the one the #BP would
    /// have pushed, right after an `int3` (`cc`) or `int 3` (`cd 03`). The
    /// VMM then delivers the #BP itself, through guest memory.
    fn failed_direct_delivery(&self, g: &VcpuGlue, index: usize, frame: [u64; 5]) -> bool {
        let handler = g.handlers[usize::from(DIRECT_VECTOR)];
        if !is_guest_code_address(handler) {
            return false;
        }
        let cpl = (frame[1] & 3) as u8;
        let byte = |back: u64| {
            let mem = self.mmu.memory().memory();
            let fetch = Access::at_cpl(AccessKind::Fetch, cpl);
            self.mmu
                .gva_to_gpa(index, Gva(frame[0].wrapping_sub(back)), fetch)
                .ok()
                .and_then(|gpa| mem.read_obj::<u8>(gpa).ok())
        };
        byte(1) == Some(0xcc) || (byte(2) == Some(0xcd) && byte(1) == Some(0x03))
    }

    /// Whether the CPL0 instruction at `rip` is `want`.
    fn is_insn(&self, index: usize, rip: u64, want: [u8; 5]) -> bool {
        let mem = self.mmu.memory().memory();
        let fetch = Access::at_cpl(AccessKind::Fetch, 0);
        let mut insn = [0u8; 5];
        for (i, byte) in insn.iter_mut().enumerate() {
            let Ok(gpa) = self
                .mmu
                .gva_to_gpa(index, Gva(rip.wrapping_add(i as u64)), fetch)
            else {
                return false;
            };
            let Ok(b) = mem.read_obj::<u8>(gpa) else {
                return false;
            };
            *byte = b;
        }
        insn == want
    }

    /// Answers a hypercall the VMM served ([`Exit::Hypercall`]): writes
    /// `result` into the block and lets the vCPU go on.
    pub fn complete_hypercall(
        &self,
        index: usize,
        block: GuestAddress,
        result: i64,
    ) -> Result<(), KvmGlueError> {
        {
            let mem = self.mmu.memory().memory();
            // A block that vanished has nobody left to read the result.
            let _ = mem.write_obj(result, GuestAddress(block.0 + abi::RESULT_OFFSET));
        }
        self.finish_hypercall(index, block)
    }

    /// For VMMs that wrote a hypercall's result themselves: tells the MMU
    /// about the write (the block may lie in a page the guest also uses as a
    /// page table) and lets the vCPU go on.
    pub fn finish_hypercall(&self, index: usize, block: GuestAddress) -> Result<(), KvmGlueError> {
        let glue = self
            .vcpus
            .get(index)
            .ok_or(KvmGlueError::Mmu(MmuError::NoSuchVcpu(index)))?;
        let mut g = glue.lock();
        let mut cmds = g.deferred.take().unwrap_or_default();
        let changes = self
            .mmu
            .track_write(GuestAddress(block.0 + abi::RESULT_OFFSET), 8);
        self.add_changes(&g, index, &mut cmds, changes);
        self.post(&mut g, index, cmds);
        Ok(())
    }

    fn add_changes(&self, g: &VcpuGlue, index: usize, cmds: &mut Commands, changes: Changes) {
        let arena = self.hidden_base + SYSTEM_SIZE;
        cmds.touches.extend(
            changes
                .reused_pages
                .iter()
                .map(|&spa| hole_arena_va(spa - arena)),
        );
        cmds.writes.extend(
            changes
                .spte_writes
                .iter()
                .map(|w| hole_arena_va(w.addr - arena)),
        );
        cmds.invlpg.extend(changes.invlpg.iter().map(|g| g.0));
        if changes.flush_local || changes.flush_all {
            cmds.cr3.get_or_insert(g.root);
        }
        if changes.flush_all {
            // This vCPU reloads CR3 before it runs guest code again; the
            // others acknowledge the new generation later.
            let generation = self.flush.generation.fetch_add(1, Ordering::AcqRel) + 1;
            if let Some(f) = self.flush.flushed.get(index) {
                f.fetch_max(generation, Ordering::AcqRel);
            }
            self.try_complete_flush();
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn deliver(
        &self,
        g: &VcpuGlue,
        index: usize,
        vector: u8,
        error_code: Option<u64>,
        cr2: Option<u64>,
        frame: [u64; 5],
        cmds: &mut Commands,
    ) -> Exit {
        let unhandled = Exit::Unhandled {
            vector,
            error_code: error_code.unwrap_or(0),
            rip: frame[0],
            cr2: cr2.unwrap_or(0),
        };
        let handler = g.handlers.get(usize::from(vector)).copied().unwrap_or(0);
        if handler == 0 {
            return unhandled;
        }
        let mem = self.mmu.memory().memory();
        let write = Access::implicit(AccessKind::Write);
        let from_user = frame[1] & 3 == 3;
        let mut sp = if from_user { g.kernel_rsp } else { frame[3] } & !15;
        let mut pushes = vec![frame[4], frame[3], frame[2], frame[1], frame[0]];
        pushes.extend(error_code);
        for value in pushes {
            sp = sp.wrapping_sub(8);
            let Ok(gpa) = self.mmu.gva_to_gpa(index, Gva(sp), write) else {
                // The kernel stack is unusable: a double fault on hardware.
                return unhandled;
            };
            if mem.write_obj(value, gpa).is_err() {
                return unhandled;
            }
            // The stack may share a page with a shadowed page table.
            let changes = self.mmu.track_write(gpa, 8);
            self.add_changes(g, index, cmds, changes);
        }
        let rflags = (frame[2] & !(RFLAGS_IF | RFLAGS_TF | RFLAGS_NT | RFLAGS_RF | RFLAGS_VM)) | 2;
        // As the CPU does: a privilege change loads SS with the null
        // selector; without one SS stays.
        let ss = if from_user { 0 } else { frame[4] };
        cmds.frame = Some([handler, u64::from(KERNEL_CS), rflags, sp, ss]);
        if cr2.is_some() {
            cmds.cr2 = cr2;
        }
        Exit::Resume
    }

    fn hypercall(
        &self,
        g: &mut VcpuGlue,
        index: usize,
        block: u64,
        cmds: &mut Commands,
    ) -> Result<Exit, KvmGlueError> {
        let mem = self.mmu.memory().memory();
        let Ok(block) = abi::Block::read(&mem, block) else {
            // No block to answer in: the guest gets #GP, as for a bad
            // descriptor.
            let top = vcpu_block(index) + VCPU_BLOCK_SIZE;
            return Ok(Exit::Unhandled {
                vector: 13,
                error_code: 0,
                rip: self.sys_load(top - stack::RIP),
                cr2: 0,
            });
        };
        let Some(mut guest) = g.guest else {
            return Err(MmuError::NoPagingState(index).into());
        };
        let result = match block.decode() {
            Err(_) => abi::result::E_INVALID,
            Ok(Hypercall::LoadCr3 { cr3 }) => self.load_cr3(g, index, cr3, cmds)?,
            Ok(Hypercall::Invlpg { gva }) => {
                let changes = self.mmu.invlpg(index, Gva(gva))?;
                self.add_changes(g, index, cmds, changes);
                abi::result::OK
            }
            Ok(Hypercall::FlushTlb) => {
                let changes = self.mmu.flush_tlb(index)?;
                self.add_changes(g, index, cmds, changes);
                abi::result::OK
            }
            Ok(Hypercall::SetTrapTable { table, kernel_rsp }) => {
                self.set_trap_table(g, index, table, kernel_rsp);
                abi::result::OK
            }
            Ok(Hypercall::SetPagingBits { bits }) => {
                guest.cr0.set(Cr0::WP, bits & 1 != 0);
                guest.cr4.set(Cr4::SMEP, bits & 2 != 0);
                guest.cr4.set(Cr4::SMAP, bits & 4 != 0);
                guest.efer.set(Efer::NXE, bits & 8 != 0);
                cmds.cr4 = Some(real_cr4(&guest));
                self.reload(g, index, guest, cmds)?;
                abi::result::OK
            }
            Ok(Hypercall::MmuUpdate { list, count }) => {
                match abi::read_mmu_updates(&mem, list, count) {
                    Ok(pairs) => {
                        for (gpa, value) in pairs {
                            // Checked to be RAM by read_mmu_updates.
                            let _ = mem.write_obj(value, gpa);
                            let changes = self.mmu.track_write(gpa, 8);
                            self.add_changes(g, index, cmds, changes);
                        }
                        abi::result::OK
                    }
                    Err(_) => abi::result::E_INVALID,
                }
            }
            Ok(Hypercall::MemoryMap { buf, capacity }) => {
                // The map the MMU itself works from: after a hotplug the
                // VMM's `memory_changed` is what makes new RAM appear here.
                match abi::write_memory_map(&mem, buf, capacity) {
                    Ok((count, written)) => {
                        if let Some((at, len)) = written {
                            for off in (0..len as u64).step_by(8) {
                                let changes = self.mmu.track_write(GuestAddress(at.0 + off), 8);
                                self.add_changes(g, index, cmds, changes);
                            }
                        }
                        count as i64
                    }
                    Err(_) => abi::result::E_INVALID,
                }
            }
            Ok(Hypercall::Other { nr, args }) => {
                return Ok(Exit::Hypercall {
                    block: block.gpa,
                    nr,
                    args,
                })
            }
        };
        block.complete(&mem, result);
        let changes = self
            .mmu
            .track_write(GuestAddress(block.gpa.0 + abi::RESULT_OFFSET), 8);
        self.add_changes(g, index, cmds, changes);
        Ok(Exit::Resume)
    }

    /// Reads the guest's 32 handlers from its trap table at `table` (0: none)
    /// and points vCPU `index`'s #BP gate (DPL 3: `int3`, the usual
    /// system-call gate of guests on these hosts) straight at the guest's
    /// handler: the CPU then delivers it with no exit, on `kernel_rsp` from
    /// user mode. A handler that cannot be read, or that is not a canonical
    /// address outside the hole, keeps the trampoline's gate.
    ///
    /// Only #BP: the host these were built on turns a fault during such a
    /// delivery (the kernel stack not shadowed yet) into a #DF that names
    /// neither the original vector nor the fault, and only for #BP, a trap
    /// raised by a recognisable instruction, can the VMM tell what the
    /// delivery was and redo it itself (`failed_direct_delivery`).
    fn set_trap_table(&self, g: &mut VcpuGlue, index: usize, table: u64, kernel_rsp: u64) {
        let mem = self.mmu.memory().memory();
        let read = Access::implicit(AccessKind::Read);
        for (vector, handler) in (0u8..).zip(g.handlers.iter_mut()) {
            *handler = if table == 0 {
                0
            } else {
                self.mmu
                    .gva_to_gpa(index, Gva(table.wrapping_add(8 * u64::from(vector))), read)
                    .ok()
                    .and_then(|gpa| mem.read_obj::<u64>(gpa).ok())
                    .unwrap_or(0)
            };
            let direct = vector == DIRECT_VECTOR
                && is_guest_code_address(*handler)
                && is_guest_code_address(kernel_rsp);
            let gate = if direct {
                Some(system::guest_gate(vector, *handler))
            } else {
                system::trampoline_gate(vector)
            };
            if let Some((lo, hi)) = gate {
                let at = idt(index) + 16 * u64::from(vector);
                self.sys_store(at, lo);
                self.sys_store(at + 8, hi);
            }
        }
        g.kernel_rsp = kernel_rsp;
        // Only the direct gate uses TSS.RSP0 (the trampoline's have IST).
        system::set_rsp0(&self.system, index, kernel_rsp);
    }

    /// `LOAD_CR3` of `cr3` on vCPU `index`: the result for the guest.
    fn load_cr3(
        &self,
        g: &mut VcpuGlue,
        index: usize,
        cr3: u64,
        cmds: &mut Commands,
    ) -> Result<i64, KvmGlueError> {
        let Some(mut guest) = g.guest else {
            return Err(MmuError::NoPagingState(index).into());
        };
        let mem = self.mmu.memory().memory();
        // Without PCIDE only PWT and PCD may be set below bit 12; the top
        // table must be RAM below MAXPHYADDR.
        let table = cr3 & !0xfff;
        let flags_ok = guest.cr4.contains(Cr4::PCIDE) || cr3 & 0xfe7 == 0;
        if !flags_ok
            || table & !guest.phys_mask() != 0
            || !mem.address_in_range(GuestAddress(table))
        {
            return Ok(abi::result::E_INVALID);
        }
        guest.cr3 = cr3;
        self.reload(g, index, guest, cmds)?;
        Ok(abi::result::OK)
    }

    fn reload(
        &self,
        g: &mut VcpuGlue,
        index: usize,
        guest: PagingState,
        cmds: &mut Commands,
    ) -> Result<(), KvmGlueError> {
        let (root, changes) = self.load_root(index, &guest)?;
        g.guest = Some(guest);
        g.root = root;
        self.add_changes(g, index, cmds, changes);
        cmds.cr3 = Some(root);
        Ok(())
    }

    /// The root for `guest` on vCPU `index`. When every page is in use or
    /// waiting for a flush, the waiting ones are released and the load is
    /// tried once more; if the roots of the vCPUs alone fill the cap, that
    /// is [`MmuError::OutOfPages`] (a cap too small for this many vCPUs),
    /// never a retry loop.
    fn load_root(&self, index: usize, guest: &PagingState) -> Result<(u64, Changes), KvmGlueError> {
        match self.mmu.load_paging_state(index, guest) {
            Err(MmuError::OutOfPages) => {
                self.mmu.flush_completed();
                Ok(self.mmu.load_paging_state(index, guest)?)
            }
            other => Ok(other?),
        }
    }

    /// Turns `cmds` into the trampoline's return chain for vCPU `index`:
    /// the replacement frame goes straight into the hardware frame on the
    /// IST stack; one operation fits in the slots below it; more go to the
    /// chain area, split into chains of one exit each when they do not fit.
    fn post(&self, g: &mut VcpuGlue, index: usize, mut cmds: Commands) {
        let block = vcpu_block(index);
        let top = block + VCPU_BLOCK_SIZE;
        self.publish_roots(index);
        if cmds.invlpg.len() > MAX_INVLPG {
            cmds.invlpg.clear();
            cmds.cr3.get_or_insert(g.root);
        }
        if let Some(frame) = cmds.frame {
            for (i, v) in frame.into_iter().enumerate() {
                self.sys_store(top - stack::RIP + 8 * i as u64, v);
            }
        }
        let with = |gadget: u64| move |&operand: &u64| [trampoline_va(gadget), operand];
        let ops: Vec<[u64; 2]> = cmds
            .touches
            .iter()
            .map(with(gadget::TOUCH))
            .chain(cmds.writes.iter().map(with(gadget::WRITE)))
            .chain(cmds.invlpg.iter().map(with(gadget::INVLPG)))
            // CR4 before CR3: a root for new paging bits needs them set.
            .chain(cmds.cr4.iter().map(with(gadget::CR4)))
            .chain(cmds.cr3.iter().map(with(gadget::CR3)))
            .chain(cmds.cr2.iter().map(with(gadget::CR2)))
            .collect();
        g.pending.clear();
        if ops.is_empty() {
            self.sys_store(top - stack::CR2, trampoline_va(gadget::RESUME));
            return;
        }
        // The chain needs the slots of RAX and RDX: move them up to those
        // of the vector and the error code, which nothing reads any more.
        let (rax, rdx) = (
            self.sys_load(top - stack::RAX),
            self.sys_load(top - stack::RDX),
        );
        self.sys_store(top - stack::VECTOR, rax);
        self.sys_store(top - stack::ERROR_CODE, rdx);
        if let [[op, operand]] = ops[..] {
            self.sys_store(top - stack::CR2, op);
            self.sys_store(top - stack::RDX, operand);
            self.sys_store(top - stack::RAX, trampoline_va(gadget::RESUME_MOVED));
            return;
        }
        self.sys_store(top - stack::CR2, trampoline_va(gadget::FAR));
        self.sys_store(top - stack::RDX, hole_va(block + CHAIN));
        // Each chain ends with `again` (one slot) or `back` (two).
        let per_chain = (CHAIN_SLOTS - 2) / 2;
        let mut chains: VecDeque<Vec<u64>> = ops
            .chunks(per_chain)
            .map(|c| {
                let mut chain: Vec<u64> = c.iter().flatten().copied().collect();
                chain.push(trampoline_va(gadget::AGAIN));
                chain
            })
            .collect();
        if let Some(last) = chains.back_mut() {
            last.pop();
            last.push(trampoline_va(gadget::BACK));
            last.push(hole_va(top - stack::VECTOR));
        }
        if let Some(first) = chains.pop_front() {
            self.write_chain(block, &first);
        }
        g.pending = chains;
    }

    /// Writes `chain` at the start of the chain area of the vCPU block at
    /// system-area offset `block`.
    fn write_chain(&self, block: u64, chain: &[u64]) {
        for (i, &slot) in chain.iter().enumerate() {
            self.sys_store(block + CHAIN + 8 * i as u64, slot);
        }
    }
}

/// Whether a gate may send the CPU to `va` (a handler, or the stack it
/// pushes its frame on): a canonical 48-bit address outside the hole (the
/// VMM's own code and data).
fn is_guest_code_address(va: u64) -> bool {
    let canonical = ((va << 16) as i64 >> 16) as u64 == va;
    let in_hole = (HOLE_BASE..HOLE_BASE + (1 << 39)).contains(&va);
    va != 0 && canonical && !in_hole
}

/// The CR4 the vCPU really runs with: PAE and SSE support always, SMEP and
/// SMAP as the guest asked (the CPU checks them against shadow U bits).
fn real_cr4(guest: &PagingState) -> u64 {
    let mut cr4 = Cr4::PAE | Cr4::OSFXSR | Cr4::OSXMMEXCPT;
    cr4 |= guest.cr4 & (Cr4::SMEP | Cr4::SMAP);
    cr4.bits()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_ioctls::Kvm;
    use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

    /// What a chain did, as the trampoline's gadgets would carry it out.
    #[derive(Debug, Default, PartialEq, Eq)]
    struct Ran {
        ops: Vec<(&'static str, u64)>,
        rax: u64,
        rdx: u64,
        frame: [u64; 5],
        exits_again: usize,
    }

    fn shadow_vm() -> ShadowVm {
        let kvm = Kvm::new().unwrap_or_else(|e| {
            panic!("this test needs /dev/kvm (read-write): {e}; it is never skipped")
        });
        let vm = kvm.create_vm().expect("create VM");
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let cfg = ShadowVmConfig {
            hidden_base: 1 << 40,
            first_slot: 1,
            mmu: MmuConfig::default(),
        };
        ShadowVm::new(&vm, GuestMemoryAtomic::new(mem), cfg).expect("shadow VM")
    }

    /// Leaves on vCPU 0's stack what the entry stub leaves at an exit.
    fn enter(vm: &ShadowVm, rax: u64, rdx: u64, frame: [u64; 5]) {
        let top = vcpu_block(0) + VCPU_BLOCK_SIZE;
        vm.sys_store(top - stack::CR2, 0xdead_beef);
        vm.sys_store(top - stack::RDX, rdx);
        vm.sys_store(top - stack::RAX, rax);
        vm.sys_store(top - stack::VECTOR, 14);
        vm.sys_store(top - stack::ERROR_CODE, 4);
        for (i, v) in frame.into_iter().enumerate() {
            vm.sys_store(top - stack::RIP + 8 * i as u64, v);
        }
    }

    /// Runs vCPU 0's chain from the entry's `ret` to `iretq`, written from
    /// the instructions of each gadget in trampoline.S, calling the VMM at
    /// every `again` as the `out` there would.
    fn run_chain(vm: &ShadowVm) -> Ran {
        let block = vcpu_block(0);
        let top = block + VCPU_BLOCK_SIZE;
        let off = |va: u64| va - HOLE_BASE;
        let mut rsp = top - 80;
        let mut ran = Ran::default();
        let pop = |rsp: &mut u64| {
            let v = vm.sys_load(*rsp);
            *rsp += 8;
            v
        };
        for _ in 0..100_000 {
            let gadget = pop(&mut rsp) - trampoline_va(0);
            let name = match gadget {
                gadget::RESUME => {
                    ran.rdx = pop(&mut rsp);
                    ran.rax = pop(&mut rsp);
                    rsp += 16;
                    break;
                }
                gadget::RESUME_MOVED => {
                    ran.rax = pop(&mut rsp);
                    ran.rdx = pop(&mut rsp);
                    break;
                }
                gadget::BACK => {
                    rsp = off(pop(&mut rsp));
                    ran.rax = pop(&mut rsp);
                    ran.rdx = pop(&mut rsp);
                    break;
                }
                gadget::FAR => {
                    rsp = off(pop(&mut rsp));
                    continue;
                }
                gadget::AGAIN => {
                    ran.exits_again += 1;
                    assert_eq!(vm.handle_exit(0).expect("re-exit"), Exit::Resume);
                    rsp = block + CHAIN;
                    continue;
                }
                gadget::CR3 => "cr3",
                gadget::CR4 => "cr4",
                gadget::CR2 => "cr2",
                gadget::INVLPG => "invlpg",
                gadget::WRITE => "write",
                gadget::TOUCH => "touch",
                other => panic!("return to trampoline offset {other:#x}"),
            };
            let operand = pop(&mut rsp);
            ran.ops.push((name, operand));
        }
        assert_eq!(rsp, top - stack::RIP, "iretq must find the hardware frame");
        for (i, slot) in ran.frame.iter_mut().enumerate() {
            *slot = vm.sys_load(top - stack::RIP + 8 * i as u64);
        }
        ran
    }

    /// A VM whose vCPU 0 is set up on the 4-level guest tables at 0x1000.
    fn prepared_vm() -> (ShadowVm, PagingState, kvm_sregs) {
        let vm = shadow_vm();
        let guest = PagingState {
            cr0: Cr0::PE | Cr0::PG | Cr0::WP,
            cr3: 0x1000,
            cr4: Cr4::PAE,
            efer: Efer::LME | Efer::LMA | Efer::NXE,
            ..Default::default()
        };
        let mut sregs = kvm_sregs::default();
        vm.prepare_vcpu(0, &guest, &mut sregs).expect("prepare");
        (vm, guest, sregs)
    }

    const FRAME: [u64; 5] = [0x40_1000, 0x23, 0x202, 0x7fff_0000, 0x1b];

    fn post(vm: &ShadowVm, cmds: Commands) {
        let mut g = vm.vcpus[0].lock();
        vm.post(&mut g, 0, cmds);
    }

    #[test]
    fn nothing_to_do_resumes_with_the_registers_in_place() {
        let vm = shadow_vm();
        enter(&vm, 0xaaaa, 0xdddd, FRAME);
        post(&vm, Commands::default());
        let ran = run_chain(&vm);
        assert_eq!(
            ran,
            Ran {
                rax: 0xaaaa,
                rdx: 0xdddd,
                frame: FRAME,
                ..Ran::default()
            }
        );
    }

    #[test]
    fn one_operation_fits_below_the_frame() {
        let vm = shadow_vm();
        enter(&vm, 0xaaaa, 0xdddd, FRAME);
        let new_frame = [0x1234, 0x08, 0x2, 0xffff_8000_0000_1000, 0x10];
        let cmds = Commands {
            cr3: Some(0x5000),
            frame: Some(new_frame),
            ..Commands::default()
        };
        post(&vm, cmds);
        let ran = run_chain(&vm);
        assert_eq!(
            ran,
            Ran {
                ops: vec![("cr3", 0x5000)],
                rax: 0xaaaa,
                rdx: 0xdddd,
                frame: new_frame,
                exits_again: 0,
            }
        );
    }

    #[test]
    fn long_lists_take_several_exits_in_order() {
        let vm = shadow_vm();
        enter(&vm, 0xaaaa, 0xdddd, FRAME);
        let touches: Vec<u64> = (0..700).map(|i| HOLE_BASE + 0x20_0000 + 4096 * i).collect();
        let writes: Vec<u64> = (0..1500).map(|i| HOLE_BASE + 0x20_0000 + 8 * i).collect();
        let invlpg: Vec<u64> = (0..3).map(|i| 0x40_0000 + 4096 * i).collect();
        let cmds = Commands {
            touches: touches.clone(),
            writes: writes.clone(),
            invlpg: invlpg.clone(),
            cr4: Some(0x20),
            cr3: Some(0x5000),
            cr2: Some(0x40_0123),
            frame: None,
        };
        post(&vm, cmds);
        let ran = run_chain(&vm);
        let mut want: Vec<(&str, u64)> = touches.iter().map(|&v| ("touch", v)).collect();
        want.extend(writes.iter().map(|&v| ("write", v)));
        want.extend(invlpg.iter().map(|&v| ("invlpg", v)));
        want.extend([("cr4", 0x20), ("cr3", 0x5000), ("cr2", 0x40_0123)]);
        assert_eq!(ran.ops, want);
        assert_eq!((ran.rax, ran.rdx, ran.frame), (0xaaaa, 0xdddd, FRAME));
        // 2,209 operations, 815 to a chain.
        assert_eq!(ran.exits_again, 2);
        assert!(vm.vcpus[0].lock().pending.is_empty());
    }

    #[test]
    fn setting_a_vcpu_up_again_forgets_gates_switches_and_cached_roots() {
        let (vm, guest, mut sregs) = prepared_vm();
        assert_eq!(sregs.idt.base, hole_va(idt(0)));
        // What a previous boot left: a direct #BP gate, a switch not caught
        // up with, a root cache entry for a root that is gone.
        let gate = idt(0) + 16 * u64::from(DIRECT_VECTOR);
        let (lo, hi) = system::guest_gate(DIRECT_VECTOR, 0xffff_8000_0010_0000);
        vm.sys_store(gate, lo);
        vm.sys_store(gate + 8, hi);
        vm.sys_store(vcpu_block(0) + SWITCHED, 0x5000 | 1 << 63);
        vm.sys_store(vcpu_block(0) + ROOTS + 16 * 5, 0x5000 | 1 << 63);
        vm.sys_store(vcpu_block(0) + ROOTS + 16 * 5 + 8, 0xdead_0000);
        vm.prepare_vcpu(0, &guest, &mut sregs)
            .expect("prepare again");
        let want = system::trampoline_gate(DIRECT_VECTOR).expect("a stub");
        assert_eq!((vm.sys_load(gate), vm.sys_load(gate + 8)), want);
        assert_eq!(vm.sys_load(vcpu_block(0) + SWITCHED), 0);
        // Only the new root (CR3 0x1000: slot 1) is cached.
        for slot in 0..ROOT_SLOTS {
            let key = vm.sys_load(vcpu_block(0) + ROOTS + 16 * slot);
            let want = if slot == 1 { 0x1000 | 1 << 63 } else { 0 };
            assert_eq!(key, want, "slot {slot}");
        }
        assert_eq!(
            vm.sys_load(vcpu_block(0) + ROOTS + 16 + 8),
            sregs.cr3,
            "the cached root is the one CR3 holds"
        );
    }

    #[test]
    fn a_switch_made_by_the_trampoline_is_caught_up_with_and_checked() {
        let (vm, _, sregs) = prepared_vm();
        let switched = vcpu_block(0) + SWITCHED;
        let user_ud = [0x40_1000, 0x23, 0x202, 0x7fff_0000, 0x1b];
        let exit_with = |word: u64| {
            vm.sys_store(switched, word);
            enter(&vm, 0, 0, user_ud);
            vm.sys_store(vcpu_block(0) + VCPU_BLOCK_SIZE - stack::VECTOR, 6);
            // No trap table: the #UD itself is unhandled.
            let exit = vm.handle_exit(0).expect("exit");
            assert!(
                matches!(exit, Exit::Unhandled { vector: 6, .. }),
                "{exit:?}"
            );
            assert_eq!(vm.sys_load(switched), 0, "caught up");
            vm.vcpus[0].lock().guest.map(|g| g.cr3)
        };
        // A value guest CPL0 code could forge in the hole: not RAM.
        assert_eq!(exit_with((1 << 40) | 1 << 63), Some(0x1000));
        // A real switch (RAM at 0x2000).
        assert_eq!(exit_with(0x2000 | 1 << 63), Some(0x2000));
        let root = vm.vcpus[0].lock().root;
        assert_ne!(root, sregs.cr3, "the MMU holds the new space's root");
    }

    #[test]
    fn too_many_invalidations_become_a_flush() {
        let vm = shadow_vm();
        enter(&vm, 1, 2, FRAME);
        vm.vcpus[0].lock().root = 0x9000;
        let cmds = Commands {
            invlpg: (0..=MAX_INVLPG as u64).map(|i| 4096 * i).collect(),
            ..Commands::default()
        };
        post(&vm, cmds);
        assert_eq!(run_chain(&vm).ops, vec![("cr3", 0x9000)]);
    }
}
