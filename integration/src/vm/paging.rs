// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Who walks the guest's page tables: KVM (`native`) or the shadow MMU
//! (`shadow`). The VMM calls these hooks at the few points where the two
//! differ; everything else (boot state, the VMM's hypercalls, the doorbell)
//! is common.
//!
//! Shadow paging is [`ShadowPaging`], which hands the hooks to
//! `shadow_mmu::kvm`.

use std::fmt;
use std::str::FromStr;

use std::sync::OnceLock;

use kvm_bindings::kvm_sregs;
use kvm_ioctls::{Cap, SyncReg, VcpuFd, VmFd};
use shadow_mmu::kvm::{Exit, KvmGlueError, ShadowVm, ShadowVmConfig};
use shadow_mmu::{Cr0, Cr4, Efer, MmuConfig, PagingState, Prefetch, ShadowMmu};
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

use super::boot::BOOT_PML4;
use super::VmError;

/// The paging mode named on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PagingMode {
    /// KVM does the paging; the guest uses `mov cr3` and `invlpg`.
    Native,
    /// The shadow MMU does the paging; the guest uses hypercalls.
    Shadow,
}

impl PagingMode {
    /// The value of the boot info's paging field.
    pub fn abi_value(self) -> u32 {
        match self {
            PagingMode::Native => 0,
            PagingMode::Shadow => 1,
        }
    }
}

impl fmt::Display for PagingMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PagingMode::Native => "native",
            PagingMode::Shadow => "shadow",
        })
    }
}

impl FromStr for PagingMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "native" => Ok(PagingMode::Native),
            "shadow" => Ok(PagingMode::Shadow),
            _ => Err(format!("unknown paging mode {s:?} (native or shadow)")),
        }
    }
}

/// How the guest kernel writes its page tables under shadow paging (kernel
/// command line `pt_writes=`; natively they are always plain stores).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PtWrites {
    /// Batched `MMU_UPDATE` hypercalls.
    #[default]
    Hypercall,
    /// The same stores as natively (`mov`, `lock cmpxchg`, `lock btr`, `rep
    /// movsq`); the VMM emulates those that hit a write-protected table.
    Direct,
}

impl PtWrites {
    /// The guest kernel's command-line token (none for the default).
    pub fn cmdline_token(self) -> &'static str {
        match self {
            PtWrites::Hypercall => "",
            PtWrites::Direct => "pt_writes=direct",
        }
    }
}

impl fmt::Display for PtWrites {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PtWrites::Hypercall => "hypercall",
            PtWrites::Direct => "direct",
        })
    }
}

impl FromStr for PtWrites {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "hypercall" => Ok(PtWrites::Hypercall),
            "direct" => Ok(PtWrites::Direct),
            _ => Err(format!(
                "unknown page-table write style {s:?} (hypercall or direct)"
            )),
        }
    }
}

/// What a paging hook sees of the VM.
pub struct VmContext<'a> {
    /// The VM.
    pub vm: &'a VmFd,
    /// Guest memory (RAM at GPA 0).
    pub memory: &'a GuestMemoryAtomic<GuestMemoryMmap>,
    /// Guest RAM size in bytes.
    pub ram_size: u64,
    /// Number of vCPUs.
    pub vcpus: u32,
}

/// What a paging hook sees of one vCPU.
pub struct VcpuContext<'a> {
    /// The VM.
    pub vm: &'a VmContext<'a>,
    /// The vCPU.
    pub vcpu: &'a mut VcpuFd,
    /// Its index (0 = boot vCPU).
    pub index: u32,
}

/// The paging backend of a VM.
pub enum Paging {
    /// KVM walks the guest's tables.
    Native,
    /// The shadow MMU builds the tables the CPU walks.
    Shadow(Box<ShadowPaging>),
}

impl Paging {
    /// A backend for `mode` (shadow: with the default page cap,
    /// [`DEFAULT_MAX_PAGES`]).
    pub fn new(mode: PagingMode) -> Paging {
        Paging::with_max_pages(mode, DEFAULT_MAX_PAGES)
    }

    /// A backend for `mode`; under shadow paging the MMU keeps at most
    /// `max_pages` shadow pages in use and reclaims the oldest beyond that
    /// (see [`ShadowPaging::with_max_pages`]). Native paging ignores it.
    pub fn with_max_pages(mode: PagingMode, max_pages: u32) -> Paging {
        Paging::shadowing(mode, max_pages, Prefetch::Exact, 0, true)
    }

    /// [`Paging::with_max_pages`], with the MMU's prefetch policy, the
    /// length of its log of speculatively set accessed bits
    /// (`MmuConfig::speculative_log`) and whether the trampoline resolves
    /// writes to clean pages (`ShadowVm::set_dirty_fast_path`).
    pub fn shadowing(
        mode: PagingMode,
        max_pages: u32,
        prefetch: Prefetch,
        speculative_log: usize,
        dirty_fast_path: bool,
    ) -> Paging {
        match mode {
            PagingMode::Native => Paging::Native,
            PagingMode::Shadow => {
                let mut shadow = ShadowPaging::with_max_pages(max_pages);
                shadow.prefetch = prefetch;
                shadow.speculative_log = speculative_log;
                shadow.dirty_fast_path = dirty_fast_path;
                Paging::Shadow(Box::new(shadow))
            }
        }
    }

    /// The shadow VM, under shadow paging once set up.
    pub fn shadow_vm(&self) -> Option<&ShadowVm> {
        match self {
            Paging::Native => None,
            Paging::Shadow(s) => s.shadow_vm(),
        }
    }

    /// The mode.
    pub fn mode(&self) -> PagingMode {
        match self {
            Paging::Native => PagingMode::Native,
            Paging::Shadow(_) => PagingMode::Shadow,
        }
    }

    /// Called once after guest RAM is registered and the boot state is
    /// written, before any vCPU is created (shadow: the hidden memslot).
    pub fn setup_vm(&self, ctx: &VmContext<'_>) -> Result<(), VmError> {
        match self {
            Paging::Native => Ok(()),
            Paging::Shadow(s) => s.setup_vm(ctx),
        }
    }

    /// Hook (a): the vCPU's special registers at boot. `sregs` already holds
    /// the ABI boot state with CR3 = the boot PML4; a backend changes what it
    /// needs (shadow: CR3 = the shadow root of the boot tables, its own GDT,
    /// IDT and TSS).
    pub fn vcpu_sregs(
        &self,
        ctx: &mut VcpuContext<'_>,
        sregs: &mut kvm_sregs,
    ) -> Result<(), VmError> {
        match self {
            Paging::Native => {
                sregs.cr3 = BOOT_PML4;
                Ok(())
            }
            Paging::Shadow(s) => s.vcpu_sregs(ctx, sregs),
        }
    }

    /// Hook (b): an `out` to port 0x5a1, the shadow trampoline's exit.
    pub fn trampoline_exit(
        &self,
        ctx: &mut VcpuContext<'_>,
        data: u32,
    ) -> Result<TrampolineOutcome, VmError> {
        match self {
            Paging::Native => Err(VmError::Guest {
                vcpu: ctx.index,
                what: format!("out to port 0x5a1 (value {data:#x}) under native paging"),
                rip: rip_of(ctx.vcpu),
            }),
            Paging::Shadow(s) => s.trampoline_exit(ctx, data),
        }
    }
}

/// The RIP of a vCPU, for error messages (0 if it cannot be read).
pub fn rip_of(vcpu: &VcpuFd) -> u64 {
    vcpu.get_regs().map(|r| r.rip).unwrap_or(0)
}

/// Shadow paging through `shadow_mmu::kvm`: the hidden region is registered
/// above guest RAM, every vCPU runs on a shadow root, and trampoline exits
/// go to [`ShadowVm::handle_exit`].
pub struct ShadowPaging {
    vm: OnceLock<ShadowVm>,
    max_pages: u32,
    /// Which guest entries a fault maps besides its own.
    prefetch: Prefetch,
    /// `MmuConfig::speculative_log`.
    speculative_log: usize,
    /// `ShadowVm::set_dirty_fast_path`.
    dirty_fast_path: bool,
    /// Whether KVM reports registers in `kvm_run` at every exit
    /// (`KVM_CAP_SYNC_REGS`): emulation then needs no register ioctls.
    sync_regs: OnceLock<bool>,
}

/// The default shadow page cap: 64 MiB of shadow pages, room for the
/// workloads' address spaces without reclaim at the default sizes.
pub const DEFAULT_MAX_PAGES: u32 = 16384;

/// The smallest shadow page cap the MMU accepts (for testing reclaim:
/// below about 16 pages a workload may stop making progress, see
/// `MmuConfig::max_pages`).
pub const MIN_MAX_PAGES: u32 = 8;

/// Guest-physical base of the hidden region: far above any guest RAM this
/// VMM creates, below the host's MAXPHYADDR (48).
pub const HIDDEN_BASE: u64 = 1 << 40;

/// What a trampoline exit asks of the VMM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrampolineOutcome {
    /// Run the vCPU again.
    Resume,
    /// Serve the hypercall whose block is at this GPA (console, exit, start
    /// vCPU, unknown numbers), then run the vCPU again.
    Hypercall(u32),
}

impl ShadowPaging {
    /// A backend whose VM state is created by `setup_vm`, with the default
    /// page cap ([`DEFAULT_MAX_PAGES`]).
    pub fn new() -> ShadowPaging {
        ShadowPaging::with_max_pages(DEFAULT_MAX_PAGES)
    }

    /// A backend whose MMU keeps at most `max_pages` shadow pages in use
    /// (`MmuConfig::max_pages`; at least [`MIN_MAX_PAGES`]): beyond it the
    /// least recently used pages are reclaimed, and cached roots dropped
    /// when only pinned pages are left.
    pub fn with_max_pages(max_pages: u32) -> ShadowPaging {
        ShadowPaging {
            vm: OnceLock::new(),
            sync_regs: OnceLock::new(),
            max_pages,
            prefetch: Prefetch::Exact,
            speculative_log: 0,
            dirty_fast_path: true,
        }
    }

    /// The page cap this backend gives the MMU.
    pub fn max_pages(&self) -> u32 {
        self.max_pages
    }

    /// The shadow VM, once `setup_vm` ran.
    pub fn shadow_vm(&self) -> Option<&ShadowVm> {
        self.vm.get()
    }

    fn setup_vm(&self, ctx: &VmContext<'_>) -> Result<(), VmError> {
        let config = ShadowVmConfig {
            hidden_base: HIDDEN_BASE,
            first_slot: 1,
            mmu: MmuConfig {
                vcpus: ctx.vcpus as usize,
                max_pages: self.max_pages,
                prefetch: self.prefetch,
                speculative_log: self.speculative_log,
                // Guest entries naming the hidden region reach a page with
                // nothing behind it, as they would natively.
                hidden_sink: Some(HIDDEN_BASE - 0x1000),
                ..MmuConfig::default()
            },
        };
        let vm = ShadowVm::new(ctx.vm, ctx.memory.clone(), config)
            .map_err(|e| VmError::Shadow(e.to_string()))?;
        // Everything between RAM and the hidden region is MMIO to this VMM
        // (the doorbell, and nothing elsewhere): mapped, so that accesses
        // exit to the VMM as MMIO exactly as under native paging.
        vm.mmu().register_mmio(ctx.ram_size..HIDDEN_BASE);
        vm.set_dirty_fast_path(self.dirty_fast_path);
        self.vm
            .set(vm)
            .map_err(|_| VmError::Shadow("shadow VM set up twice".into()))
    }

    fn vm(&self) -> Result<&ShadowVm, VmError> {
        self.vm
            .get()
            .ok_or_else(|| VmError::Shadow("shadow VM not set up".into()))
    }

    fn vcpu_sregs(&self, ctx: &mut VcpuContext<'_>, sregs: &mut kvm_sregs) -> Result<(), VmError> {
        let guest = PagingState {
            cr0: Cr0::PE | Cr0::PG | Cr0::WP,
            cr3: BOOT_PML4,
            cr4: Cr4::PAE,
            efer: Efer::LME | Efer::LMA | Efer::NXE | Efer::SCE,
            // What KVM offers here (HOST-NOTES.md): no 1 GiB pages.
            gbpages: false,
            ..Default::default()
        };
        if *self
            .sync_regs
            .get_or_init(|| ctx.vm.vm.check_extension(Cap::SyncRegs))
        {
            ctx.vcpu.set_sync_valid_reg(SyncReg::Register);
        }
        self.vm()?
            .prepare_vcpu(ctx.index as usize, &guest, sregs)
            .map_err(|e| VmError::Shadow(e.to_string()))
    }

    fn trampoline_exit(
        &self,
        ctx: &mut VcpuContext<'_>,
        _data: u32,
    ) -> Result<TrampolineOutcome, VmError> {
        let vm = self.vm()?;
        let index = ctx.index as usize;
        let mut exit = vm
            .handle_exit(index)
            .map_err(|e| VmError::Shadow(e.to_string()))?;
        if matches!(exit, Exit::Emulate { .. }) {
            // A store into a shadowed page table: the glue carries it out
            // with the guest's registers, from kvm_run when KVM puts them
            // there, with an ioctl otherwise.
            let sync = self.sync_regs.get().copied().unwrap_or(false);
            let mut regs = if sync {
                ctx.vcpu.sync_regs().regs
            } else {
                ctx.vcpu.get_regs().map_err(|source| VmError::Kvm {
                    what: "KVM_GET_REGS",
                    source,
                })?
            };
            let before = regs;
            exit = vm.emulate(index, &mut regs).map_err(|e| match e {
                KvmGlueError::Emulation { rip, bytes } => VmError::Guest {
                    vcpu: ctx.index,
                    what: format!(
                        "a store into a shadowed page table that cannot be emulated \
                         (bytes {bytes:02x?})"
                    ),
                    rip,
                },
                e => VmError::Shadow(e.to_string()),
            })?;
            if regs != before && sync {
                ctx.vcpu.sync_regs_mut().regs = regs;
                ctx.vcpu.set_sync_dirty_reg(SyncReg::Register);
            } else if regs != before {
                ctx.vcpu.set_regs(&regs).map_err(|source| VmError::Kvm {
                    what: "KVM_SET_REGS",
                    source,
                })?;
            }
        }
        let rip = |r: u64| r;
        match exit {
            Exit::Resume => Ok(TrampolineOutcome::Resume),
            Exit::Hypercall { block, .. } => Ok(TrampolineOutcome::Hypercall(block.0 as u32)),
            Exit::Mmio { gpa, rip: at } => Err(VmError::Guest {
                vcpu: ctx.index,
                what: format!("access to {:#x}, which is neither RAM nor MMIO this VMM emulates", gpa.0),
                rip: rip(at),
            }),
            Exit::Emulate { gpa, rip: at } => Err(VmError::Guest {
                vcpu: ctx.index,
                what: format!(
                    "write to the shadowed page table at {:#x} that needs instruction emulation",
                    gpa.0
                ),
                rip: rip(at),
            }),
            Exit::Unhandled {
                vector,
                error_code,
                rip: at,
                cr2,
            } => Err(VmError::Guest {
                vcpu: ctx.index,
                what: format!(
                    "exception {vector} (error code {error_code:#x}, cr2 {cr2:#x}) with no guest handler"
                ),
                rip: rip(at),
            }),
        }
    }
}

impl Default for ShadowPaging {
    fn default() -> Self {
        ShadowPaging::new()
    }
}
