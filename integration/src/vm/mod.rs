// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A small KVM test VMM for the guest kernel of `resources/guests/`.
//!
//! It opens `/dev/kvm`, registers guest RAM (a vm-memory `GuestMemoryMmap`
//! in a `GuestMemoryAtomic`) as memslot 0, loads the kernel ELF
//! ([`elf`]), writes the boot state of `resources/ABI.md` ([`boot`]), and
//! runs one thread per vCPU that serves hypercalls (`out 0x5a0`), the
//! doorbell (MMIO at `0xf000_0000`) and, through [`paging::Paging`], what
//! differs between native and shadow paging. When the guest exits, the
//! results buffer ([`results`]) is read back.
//!
//! ```no_run
//! use shadow_mmu_integration::vm::{run, PagingMode, VmConfig, Workload};
//! let report = run(&VmConfig::new(Workload::Touch, PagingMode::Native)).expect("run");
//! println!("checksum {:#x}", report.results.checksum);
//! ```

pub mod boot;
pub mod elf;
pub mod guest;
pub mod paging;
pub mod results;
mod vcpu;
pub mod workload;

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_bindings::{kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use vm_memory::{
    Bytes, GuestAddress, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryBackend, GuestMemoryMmap,
};
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

pub use elf::{ElfError, LoadedKernel};
pub use paging::{
    Paging, PagingMode, PtWrites, ShadowPaging, TrampolineOutcome, DEFAULT_MAX_PAGES, HIDDEN_BASE,
    MIN_MAX_PAGES,
};
pub use results::Results;
pub use shadow_mmu::Prefetch;
pub use workload::Workload;

/// Largest guest RAM: the kernel's direct map covers 1 GiB, and the VMM
/// keeps RAM below the doorbell.
pub const MAX_MEM_MIB: u64 = 3072;
/// Most vCPUs the guest kernel supports.
pub const MAX_VCPUS: u32 = 8;

/// Why a VM could not run to its end.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// `/dev/kvm` cannot be opened.
    #[error("cannot open /dev/kvm: {0}")]
    NoKvm(String),
    /// A KVM ioctl failed.
    #[error("{what}: {source}")]
    Kvm {
        /// The operation.
        what: &'static str,
        /// The error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// Guest memory could not be set up or accessed.
    #[error("guest memory: {0}")]
    Memory(String),
    /// The kernel ELF was refused.
    #[error("kernel ELF: {0}")]
    Elf(#[from] ElfError),
    /// The shadow MMU or its KVM glue failed.
    #[error("shadow paging: {0}")]
    Shadow(String),
    /// The guest did something this VMM stops on.
    #[error("vCPU {vcpu}: {what} at RIP {rip:#x}")]
    Guest {
        /// vCPU index.
        vcpu: u32,
        /// What happened.
        what: String,
        /// The guest RIP (0 if it could not be read).
        rip: u64,
    },
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The results buffer is unusable.
    #[error("results buffer: {0} (guest exit status {1:#x})")]
    Results(String, u64),
    /// The guest did not exit in time: the VMM stopped its vCPUs.
    #[error("the guest did not exit within {}: {info}", secs(.info.timeout))]
    Timeout {
        /// What the VMM saw.
        info: Box<TimeoutInfo>,
    },
    /// vCPU threads did not stop when told to (at the deadline or after
    /// another vCPU ended the run): the VMM itself is stuck.
    #[error(
        "vCPU {vcpus:?} did not stop within {} of being told to: the VMM is stuck",
        secs(*.grace)
    )]
    Stuck {
        /// The vCPUs whose threads are still running.
        vcpus: Vec<u32>,
        /// How long they were given.
        grace: Duration,
    },
    /// A vCPU thread could not be started or panicked.
    #[error("vCPU thread: {0}")]
    Thread(String),
}

/// The message of a panic's payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_string())
}

/// `d` in seconds, as error messages print it.
fn secs(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

/// How long vCPU threads get to stop once told to before the run is
/// declared [`VmError::Stuck`].
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// What a guest that did not exit in time was doing, judged from the exits
/// in the last stretch before the deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hang {
    /// No VMM exit at all: the guest runs on its own (a spin, at CPL0 or
    /// CPL3).
    NoExits,
    /// VMM exits, but none served a hypercall, the doorbell or MMIO, none
    /// emulated a store and the guest's kernel saw no exception (its
    /// results header counts them): the VMM answers the same exit over and
    /// over (a bug of the VMM or the shadow MMU, not of the guest).
    ExitsWithoutProgress,
    /// VMM exits that make progress: the guest keeps faulting (its kernel
    /// sees the faults) or calling the VMM.
    GuestLoop,
}

/// Where a vCPU was when the VMM stopped it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcpuPlace {
    /// RIP.
    pub rip: u64,
    /// The privilege level (CS.RPL).
    pub cpl: u8,
    /// CR2.
    pub cr2: u64,
    /// CR3 (under shadow paging, a shadow root).
    pub cr3: u64,
}

/// What the VMM saw of a run it stopped at the deadline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimeoutInfo {
    /// The deadline, from the first `KVM_RUN`.
    pub timeout: Duration,
    /// What the guest was doing.
    pub hang: Hang,
    /// The stretch before the deadline over which exits were counted.
    pub window: Duration,
    /// VMM exits (of every kind) in that stretch.
    pub window_exits: u64,
    /// Of those, the ones that made progress (see [`Hang`]), plus page
    /// faults the guest kernel counted.
    pub window_progress: u64,
    /// Where each vCPU was stopped (`None`: never started).
    pub vcpus: Vec<Option<VcpuPlace>>,
}

impl fmt::Display for TimeoutInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = secs(self.window);
        match self.hang {
            Hang::NoExits => write!(
                f,
                "no VMM exit in its last {w}: the guest runs on its own (a spin, or faults \
                 it handles itself)"
            )?,
            Hang::ExitsWithoutProgress => write!(
                f,
                "{} VMM exits in its last {w}, none of them serving the guest: \
                 the VMM answers the same exit over and over",
                self.window_exits
            )?,
            Hang::GuestLoop => write!(
                f,
                "{} VMM exits in its last {w} ({} hypercalls, MMIO accesses, emulated \
                 stores or exceptions the guest's kernel saw): the guest keeps faulting or \
                 calling",
                self.window_exits, self.window_progress
            )?,
        }
        for (i, v) in self.vcpus.iter().enumerate() {
            if let Some(p) = v {
                write!(
                    f,
                    "; vCPU {i} stopped at RIP {:#x} (CPL {}), CR2 {:#x}",
                    p.rip, p.cpl, p.cr2
                )?;
            }
        }
        Ok(())
    }
}

/// One sample of the process's memory during a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RssSample {
    /// Since the first `KVM_RUN`.
    pub at: Duration,
    /// VMM exits of every kind so far.
    pub exits: u64,
    /// Resident bytes of the whole process (`/proc/self/statm`): guest RAM
    /// the guest has touched included.
    pub resident: u64,
    /// Bytes the VMM has allocated on its heap ([`heap_bytes`]), if the C
    /// library tells: guest memory excluded.
    pub heap: Option<u64>,
}

/// Bytes allocated with `malloc` (what Rust's global allocator uses) and
/// not freed, in the whole process: the C library's `mallinfo2`, on GNU
/// targets only.
pub fn heap_bytes() -> Option<u64> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 has no preconditions; it only reads the
        // allocator's statistics.
        let info = unsafe { libc::mallinfo2() };
        Some((info.uordblks + info.hblkhd) as u64)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        None
    }
}

/// The resident memory of this process in bytes (`/proc/self/statm`), if
/// it can be read.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok().filter(|&p| p > 0)?)
}

/// Everything a run leaves behind, however it ended: the result, and what
/// could be read of the guest even when it failed.
#[derive(Debug)]
pub struct RunOutcome {
    /// The report, or why the run failed.
    pub result: Result<RunReport, VmError>,
    /// Everything the guest wrote to the console.
    pub console: String,
    /// The results buffer's 64 header words as the guest left them (empty
    /// when the VM never ran).
    pub header: Vec<u64>,
    /// Exit counters.
    pub exits: ExitCounts,
    /// Shadow paging: the MMU's counters at the end (`None` natively, or
    /// when a vCPU thread is stuck).
    pub stats: Option<shadow_mmu::Stats>,
    /// From the first `KVM_RUN` to the end.
    pub wall: Duration,
    /// Resident memory sampled every [`VmConfig::rss_interval`] and once
    /// when the run ended, before the VM is torn down.
    pub rss: Vec<RssSample>,
}

impl RunOutcome {
    fn failed(e: VmError) -> RunOutcome {
        RunOutcome {
            result: Err(e),
            console: String::new(),
            header: Vec::new(),
            exits: ExitCounts::default(),
            stats: None,
            wall: Duration::ZERO,
            rss: Vec::new(),
        }
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct VmConfig {
    /// The workload.
    pub workload: Workload,
    /// Native or shadow paging.
    pub paging: PagingMode,
    /// Under shadow paging: how the guest kernel writes its page tables.
    pub pt_writes: PtWrites,
    /// Number of vCPUs (1..=8).
    pub vcpus: u32,
    /// Guest RAM in MiB.
    pub mem_mib: u64,
    /// Workload parameter 0.
    pub seed: u64,
    /// Workload parameters 1-5 (0: the guest's default).
    pub params: [u64; 5],
    /// How long the guest may run.
    pub timeout: Duration,
    /// Copy the guest's console lines to standard error as they come.
    pub echo_console: bool,
    /// Shadow paging only: the MMU's page cap, the most shadow pages in
    /// use at once ([`DEFAULT_MAX_PAGES`] unless set; at least
    /// [`MIN_MAX_PAGES`]). Beyond it the MMU reclaims pages: the guest
    /// runs slower but must behave the same.
    pub max_pages: u32,
    /// Sample the process's resident memory this often while the guest
    /// runs ([`RunOutcome::rss`]); `None`: only when it ends.
    pub rss_interval: Option<Duration>,
    /// Shadow paging only: the MMU's prefetch policy.
    pub prefetch: Prefetch,
    /// Shadow paging only: how many speculatively set accessed bits the
    /// MMU logs for [`ShadowReport::speculative_marks`] (0: none).
    pub speculative_log: usize,
    /// Shadow paging only: whether the trampoline resolves writes to clean
    /// pages itself (`ShadowVm::set_dirty_fast_path`; one vCPU).
    pub dirty_fast_path: bool,
}

impl VmConfig {
    /// Defaults: the vCPUs the workload needs (1, or 2 for `smp`), 256 MiB,
    /// seed 1, default parameters, 300 s, [`DEFAULT_MAX_PAGES`].
    pub fn new(workload: Workload, paging: PagingMode) -> VmConfig {
        VmConfig {
            workload,
            paging,
            pt_writes: PtWrites::Hypercall,
            vcpus: workload.min_vcpus(),
            mem_mib: 256,
            seed: 1,
            params: [0; 5],
            timeout: Duration::from_secs(300),
            echo_console: false,
            max_pages: DEFAULT_MAX_PAGES,
            rss_interval: None,
            prefetch: Prefetch::Exact,
            speculative_log: 0,
            dirty_fast_path: true,
        }
    }
}

/// Exit counters of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitCounts {
    /// Hypercalls (`out 0x5a0`).
    pub hypercalls: u64,
    /// Doorbell stores.
    pub doorbell: u64,
    /// Trampoline exits (`out 0x5a1`, shadow only).
    pub trampoline: u64,
    /// MMIO accesses to GPAs with nothing behind them (reads return all
    /// ones, writes are dropped).
    pub unmapped_mmio: u64,
}

/// The outcome of a run.
#[derive(Clone, Debug)]
pub struct RunReport {
    /// The workload.
    pub workload: Workload,
    /// The paging mode.
    pub paging: PagingMode,
    /// The status the guest exited with (doorbell or `EXIT`).
    pub exit_status: u64,
    /// The results buffer.
    pub results: Results,
    /// TSC frequency of the boot vCPU, if KVM reports it.
    pub tsc_khz: Option<u32>,
    /// Everything the guest wrote to the console.
    pub console: String,
    /// Wall time from the first `KVM_RUN` to the exit.
    pub wall: Duration,
    /// Exit counters.
    pub exits: ExitCounts,
    /// Shadow paging only: the MMU's counters and its audit at the end.
    pub shadow: Option<ShadowReport>,
}

/// What the shadow MMU reports after a run.
#[derive(Clone, Debug)]
pub struct ShadowReport {
    /// Counters.
    pub stats: shadow_mmu::Stats,
    /// `audit()` of the final shadow state.
    pub audit: Result<(), String>,
    /// Remote TLB flushes carried out by the flush NMI.
    pub nmi_flushes: u64,
    /// The page cap in effect: the size of the MMU's arena in pages.
    pub max_pages: u64,
    /// The guest entries whose accessed bit the MMU set speculatively, in
    /// order (with [`VmConfig::speculative_log`]).
    pub speculative_marks: shadow_mmu::SpeculativeMarks,
    /// Guest instructions the glue emulated (stores into shadowed tables).
    pub emulated: u64,
    /// How the guest kernel wrote its page tables.
    pub pt_writes: PtWrites,
    /// External interrupts the VMM delivered to the guest's handlers (one
    /// trampoline exit each).
    pub interrupts: u64,
}

impl RunReport {
    /// A TSC delta in microseconds (None without a TSC frequency).
    pub fn tsc_us(&self, delta: u64) -> Option<f64> {
        self.tsc_khz
            .filter(|&k| k > 0)
            .map(|k| delta as f64 * 1000.0 / f64::from(k))
    }

    /// The one-line summary `shadow-run run` prints.
    pub fn summary(&self) -> String {
        let r = &self.results;
        let status = if r.status > 0xff {
            format!("{:#x}", r.status)
        } else {
            r.status.to_string()
        };
        let mut s = format!(
            "{} {}: status {} ({}), {} records, checksum {:#018x}, {} guest page faults, {} errors, wall {:.3} s",
            self.workload,
            self.paging,
            status,
            status_name(r.status),
            r.records.len(),
            r.checksum,
            r.faults,
            r.errors,
            self.wall.as_secs_f64(),
        );
        if r.flags & results::FLAG_1G_SKIPPED != 0 {
            s.push_str(", 1G skipped");
        }
        let irq = &r.interrupts;
        if irq.ticks + irq.ipis > 0 {
            s.push_str(&format!(
                ", interrupts: {} timer ticks ({} at CPL0), {} task switches, {} shootdown IPIs",
                irq.ticks, irq.kernel_ticks, irq.switches, irq.ipis
            ));
        }
        if let Some(sh) = &self.shadow {
            let st = &sh.stats;
            s.push_str(&format!(
                ", {} page-table writes, shadow pages: cap {}, {} reclaimed, exits: {} trampoline, \
                 {} doorbell; faults: {} no-spte, {} dirty, {} guest, {} write-protected, \
                 {} spurious; {} dirty without an exit, {} emulated, {} unsyncs, {} syncs, {} roots built, {} root cache hits, \
                 {} interrupts delivered",
                sh.pt_writes,
                sh.max_pages,
                st.reclaimed,
                self.exits.trampoline,
                self.exits.doorbell,
                st.fault_no_spte,
                st.fault_dirty_tracking,
                st.fault_guest,
                st.fault_write_protected,
                st.fault_spurious,
                st.dirty_taken,
                sh.emulated,
                st.unsyncs,
                st.syncs,
                st.roots_built,
                st.root_cache_hits,
                sh.interrupts
            ));
        }
        let labels = self.workload.tsc_labels();
        for (i, &t) in r.tsc.iter().enumerate() {
            let label = labels.get(i).copied().unwrap_or("slot");
            match self.tsc_us(t) {
                Some(us) => s.push_str(&format!(", {label} {:.1} ms", us / 1000.0)),
                None => s.push_str(&format!(", {label} {t} tsc")),
            }
        }
        s
    }
}

/// A name for a results status.
pub fn status_name(status: u64) -> &'static str {
    match status {
        0 => "ok",
        1 => "mismatch",
        2 => "setup failed",
        s if s >> 24 == 0xe1 => "bad boot info",
        s if s >> 24 == 0xe2 => "unexpected exception",
        s if s >> 24 == 0xe3 => "out of guest memory",
        _ => "unknown",
    }
}

/// State shared by the vCPU threads.
struct Shared {
    vm: VmFd,
    memory: GuestMemoryAtomic<GuestMemoryMmap>,
    ram_size: u64,
    vcpus: u32,
    paging: Paging,
    stop: AtomicBool,
    outcome: Mutex<Option<Result<u64, VmError>>>,
    outcome_cv: Condvar,
    started: Mutex<Vec<bool>>,
    started_cv: Condvar,
    console: Mutex<Vec<u8>>,
    echo_console: bool,
    hypercalls: AtomicU64,
    doorbell: AtomicU64,
    trampoline: AtomicU64,
    unmapped_mmio: AtomicU64,
    /// The pthread of each running vCPU thread (for flush kicks).
    threads: Mutex<Vec<Option<libc::pthread_t>>>,
    kick_signal: libc::c_int,
    /// Where each vCPU thread left its vCPU when it stopped.
    places: Mutex<Vec<Option<VcpuPlace>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Records the first outcome and stops every vCPU.
    fn finish(&self, outcome: Result<u64, VmError>) {
        let mut o = lock(&self.outcome);
        if o.is_none() {
            *o = Some(outcome);
        }
        self.stop.store(true, Ordering::SeqCst);
        self.outcome_cv.notify_all();
        drop(o);
        let _g = lock(&self.started);
        self.started_cv.notify_all();
    }

    fn console_write(&self, bytes: &[u8]) {
        let mut c = lock(&self.console);
        let start = c.len();
        c.extend_from_slice(bytes);
        if self.echo_console {
            // Echo each completed line.
            let line_start = c[..start]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |p| p + 1);
            if let Some(end) = c[start..].iter().rposition(|&b| b == b'\n') {
                let text = String::from_utf8_lossy(&c[line_start..start + end + 1]).into_owned();
                let mut err = std::io::stderr().lock();
                for l in text.lines() {
                    let _ = writeln!(err, "[guest] {l}");
                }
            }
        }
    }
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    vcpu::kicked();
}

/// The signal that knocks a vCPU thread out of `KVM_RUN`.
fn kick_signal() -> Result<libc::c_int, VmError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    if *REGISTERED.get_or_init(|| register_signal_handler(SIGRTMIN(), kick_handler).is_ok()) {
        Ok(SIGRTMIN())
    } else {
        Err(VmError::Thread(
            "cannot register the vCPU kick signal handler".into(),
        ))
    }
}

fn open_kvm() -> Result<Kvm, VmError> {
    Kvm::new().map_err(|e| {
        let hint = match e.errno() {
            libc::ENOENT => "KVM is not available on this machine",
            libc::EACCES | libc::EPERM => "permission denied: run as root or join the kvm group",
            _ => "KVM cannot be used here",
        };
        VmError::NoKvm(format!("{e} ({hint})"))
    })
}

/// Runs `config.workload` on the embedded guest kernel.
pub fn run(config: &VmConfig) -> Result<RunReport, VmError> {
    run_kernel(config, guest::KERNEL_ELF)
}

/// Runs `config.workload` on the kernel ELF `kernel`.
pub fn run_kernel(config: &VmConfig, kernel: &[u8]) -> Result<RunReport, VmError> {
    run_outcome_kernel(config, kernel).result
}

/// Runs `config.workload` on the embedded guest kernel and returns what
/// could be read of it however it ended.
pub fn run_outcome(config: &VmConfig) -> RunOutcome {
    run_outcome_kernel(config, guest::KERNEL_ELF)
}

/// [`run_outcome`] on the kernel ELF `kernel`.
pub fn run_outcome_kernel(config: &VmConfig, kernel: &[u8]) -> RunOutcome {
    let mut outcome = RunOutcome::failed(VmError::Thread("not run".into()));
    outcome.result = run_into(config, kernel, &mut outcome);
    outcome
}

/// Counters read without any lock a stuck vCPU thread could hold.
#[derive(Clone, Copy, Debug, Default)]
struct Counters {
    /// VMM exits of every kind.
    exits: u64,
    /// Exits that served the guest (hypercalls, doorbell, MMIO) and
    /// emulated stores.
    served: u64,
    /// The page faults and other exceptions the guest kernel's handlers
    /// counted (its results header, which the guest may write anything
    /// into): the exceptions the VMM delivered.
    guest_faults: u64,
}

impl Counters {
    fn read(shared: &Shared, results_gpa: u64) -> Counters {
        let served = shared.hypercalls.load(Ordering::Relaxed)
            + shared.doorbell.load(Ordering::Relaxed)
            + shared.unmapped_mmio.load(Ordering::Relaxed);
        let exits = served + shared.trampoline.load(Ordering::Relaxed);
        let emulated = shared
            .paging
            .shadow_vm()
            .map_or(0, shadow_mmu::kvm::ShadowVm::emulated);
        let mem = shared.memory.memory();
        let word = |off: u64| {
            mem.read_obj::<u64>(GuestAddress(results_gpa + 8 * off))
                .unwrap_or(0)
        };
        let guest_faults = word(results::H_FAULTS).wrapping_add(word(results::H_TRAPS));
        Counters {
            exits,
            served: served + emulated,
            guest_faults,
        }
    }

    /// Exits since `then`, and how many of them made progress.
    fn since(self, then: Counters) -> (u64, u64) {
        let exits = self.exits.saturating_sub(then.exits);
        let faults = self.guest_faults.wrapping_sub(then.guest_faults).min(exits);
        (exits, self.served.saturating_sub(then.served) + faults)
    }
}

fn sample_rss(samples: &mut Vec<RssSample>, t0: Instant, exits: u64) {
    if let Some(resident) = resident_bytes() {
        samples.push(RssSample {
            at: t0.elapsed(),
            exits,
            resident,
            heap: heap_bytes(),
        });
    }
}

/// The run, filling `out` with what it can read on the way.
fn run_into(config: &VmConfig, kernel: &[u8], out: &mut RunOutcome) -> Result<RunReport, VmError> {
    if config.vcpus == 0 || config.vcpus > MAX_VCPUS {
        return Err(VmError::Config(format!("--vcpus must be 1..={MAX_VCPUS}")));
    }
    if config.vcpus < config.workload.min_vcpus() {
        return Err(VmError::Config(format!(
            "{} needs --vcpus {} or more",
            config.workload,
            config.workload.min_vcpus()
        )));
    }
    if !(16..=MAX_MEM_MIB).contains(&config.mem_mib) {
        return Err(VmError::Config(format!(
            "--mem must be 16..={MAX_MEM_MIB} MiB"
        )));
    }
    if config.max_pages < MIN_MAX_PAGES {
        return Err(VmError::Config(format!(
            "--max-pages must be at least {MIN_MAX_PAGES}"
        )));
    }
    let signal = kick_signal()?;
    let kvm = open_kvm()?;
    let vm = kvm.create_vm().map_err(|source| VmError::Kvm {
        what: "KVM_CREATE_VM",
        source,
    })?;
    // The in-kernel interrupt controller (a local APIC per vCPU, I/O APIC,
    // PIC), as VMMs create it, before any vCPU: guests take timer
    // interrupts and IPIs through it (ABI.md, "Interrupts").
    vm.create_irq_chip().map_err(|source| VmError::Kvm {
        what: "KVM_CREATE_IRQCHIP",
        source,
    })?;

    let ram_size = config.mem_mib << 20;
    let mmap = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), ram_size as usize)])
        .map_err(|e| VmError::Memory(format!("cannot map {} MiB: {e}", config.mem_mib)))?;
    let memory = GuestMemoryAtomic::new(mmap);
    {
        let guard = memory.memory();
        let host = guard
            .get_host_address(GuestAddress(0))
            .map_err(|e| VmError::Memory(format!("no host address for RAM: {e}")))?;
        let slot = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: ram_size,
            userspace_addr: host as u64,
        };
        // SAFETY: `host` is the start of a live mapping of `ram_size` bytes
        // owned by `memory`. Both `vm` and `memory` move into `Shared`, which
        // declares (and so drops) `vm` first: the memslot never outlives the
        // mapping.
        unsafe { vm.set_user_memory_region(slot) }.map_err(|source| VmError::Kvm {
            what: "KVM_SET_USER_MEMORY_REGION",
            source,
        })?;
    }

    // Load the kernel and write the boot state.
    let kernel_info = elf::load(kernel, &*memory.memory(), ram_size)?;
    let results_size = config.workload.results_size(config.params[0]);
    let top = ram_size.min(1 << 30);
    let results_gpa = (top - results_size) & !0xfff;
    let mut params = [0u64; 8];
    params[0] = config.seed;
    params[1..6].copy_from_slice(&config.params);
    params[6] = results_gpa;
    params[7] = results_size;
    let info = boot::BootInfo {
        paging: config.paging.abi_value(),
        vcpus: config.vcpus,
        ram_size,
        workload: config.workload.id(),
        params,
        cmdline: config.pt_writes.cmdline_token().to_string(),
    };
    boot::write_boot_state(&*memory.memory(), &info).map_err(VmError::Memory)?;

    let shared = Arc::new(Shared {
        vm,
        memory,
        ram_size,
        vcpus: config.vcpus,
        paging: Paging::shadowing(
            config.paging,
            config.max_pages,
            config.prefetch,
            config.speculative_log,
            config.dirty_fast_path,
        ),
        stop: AtomicBool::new(false),
        outcome: Mutex::new(None),
        outcome_cv: Condvar::new(),
        started: Mutex::new((0..config.vcpus).map(|i| i == 0).collect()),
        started_cv: Condvar::new(),
        console: Mutex::new(Vec::new()),
        echo_console: config.echo_console,
        hypercalls: AtomicU64::new(0),
        doorbell: AtomicU64::new(0),
        trampoline: AtomicU64::new(0),
        unmapped_mmio: AtomicU64::new(0),
        threads: Mutex::new(vec![None; config.vcpus as usize]),
        kick_signal: signal,
        places: Mutex::new(vec![None; config.vcpus as usize]),
    });
    let vm_ctx = paging::VmContext {
        vm: &shared.vm,
        memory: &shared.memory,
        ram_size,
        vcpus: config.vcpus,
    };
    shared.paging.setup_vm(&vm_ctx)?;

    // Create and set up every vCPU here; run them on their own threads.
    let cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(|source| VmError::Kvm {
            what: "KVM_GET_SUPPORTED_CPUID",
            source,
        })?;
    let mut vcpus: Vec<VcpuFd> = Vec::new();
    let mut tsc_khz = None;
    for index in 0..config.vcpus {
        let mut fd = shared
            .vm
            .create_vcpu(u64::from(index))
            .map_err(|source| VmError::Kvm {
                what: "KVM_CREATE_VCPU",
                source,
            })?;
        vcpu::setup(
            &vm_ctx,
            &shared.paging,
            &mut fd,
            index,
            &cpuid,
            kernel_info.entry64,
        )?;
        if index == 0 {
            tsc_khz = fd.get_tsc_khz().ok();
        }
        vcpus.push(fd);
    }

    let t0 = Instant::now();
    let mut handles: Vec<JoinHandle<()>> = Vec::new();
    let (done_tx, done_rx) = mpsc::channel::<u32>();
    for (index, fd) in vcpus.into_iter().enumerate() {
        let sh = Arc::clone(&shared);
        let done = vcpu::Done(done_tx.clone(), index as u32);
        let h = std::thread::Builder::new()
            .name(format!("vcpu{index}"))
            .spawn(move || {
                let _done = done;
                let run =
                    std::panic::AssertUnwindSafe(|| vcpu::thread(sh.clone(), fd, index as u32));
                if let Err(p) = std::panic::catch_unwind(run) {
                    sh.finish(Err(VmError::Thread(format!(
                        "vCPU {index} panicked: {}",
                        panic_message(p.as_ref())
                    ))));
                }
            })
            .map_err(|e| VmError::Thread(format!("cannot spawn vCPU {index}: {e}")));
        match h {
            Ok(h) => handles.push(h),
            Err(e) => {
                shared.finish(Err(e));
                break;
            }
        }
    }
    drop(done_tx);

    // Wait for an outcome or the deadline, counting the exits of the last
    // stretch before it (to tell a spinning guest from a looping VMM) and
    // sampling resident memory if asked; then stop every vCPU.
    let deadline = t0 + config.timeout;
    let window = (config.timeout / 4).min(Duration::from_secs(1));
    let window_start = deadline - window;
    let mut before_window = None;
    let mut next_rss = config.rss_interval.map(|i| t0 + i);
    let mut outcome = {
        let mut o = lock(&shared.outcome);
        loop {
            if let Some(r) = o.take() {
                break Some(r);
            }
            let now = Instant::now();
            if now >= deadline {
                break None;
            }
            if before_window.is_none() && now >= window_start {
                before_window = Some(Counters::read(&shared, results_gpa));
            }
            if let (Some(t), Some(i)) = (next_rss, config.rss_interval) {
                if now >= t {
                    sample_rss(&mut out.rss, t0, Counters::read(&shared, results_gpa).exits);
                    next_rss = Some(t + i);
                }
            }
            let mut wake = deadline;
            if before_window.is_none() {
                wake = wake.min(window_start);
            }
            if let Some(t) = next_rss {
                wake = wake.min(t);
            }
            o = shared
                .outcome_cv
                .wait_timeout(o, wake.saturating_duration_since(now))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    };
    let wall = t0.elapsed();
    let now = Counters::read(&shared, results_gpa);
    sample_rss(&mut out.rss, t0, now.exits);
    // Stop: every vCPU thread checks `stop` before each KVM_RUN, and the
    // kick makes a KVM_RUN under way (or the next one) return at once
    // (`immediate_exit`), so one kick each is enough.
    shared.stop.store(true, Ordering::SeqCst);
    {
        let _g = lock(&shared.started);
        shared.started_cv.notify_all();
    }
    for h in handles.iter().filter(|h| !h.is_finished()) {
        let _ = h.kill(signal);
    }
    let grace_end = Instant::now() + STOP_GRACE;
    while handles.iter().any(|h| !h.is_finished()) {
        let now = Instant::now();
        if now >= grace_end {
            break;
        }
        // Each thread signals when it ends (or unwinds).
        let _ = done_rx.recv_timeout(grace_end - now);
    }
    out.wall = wall;
    out.console = String::from_utf8_lossy(&lock(&shared.console)).into_owned();
    let mem = shared.memory.memory();
    out.header = (0..results::HEADER_WORDS)
        .map_while(|i| mem.read_obj::<u64>(GuestAddress(results_gpa + 8 * i)).ok())
        .collect();
    drop(mem);
    out.exits = ExitCounts {
        hypercalls: shared.hypercalls.load(Ordering::Relaxed),
        doorbell: shared.doorbell.load(Ordering::Relaxed),
        trampoline: shared.trampoline.load(Ordering::Relaxed),
        unmapped_mmio: shared.unmapped_mmio.load(Ordering::Relaxed),
    };
    let stuck: Vec<u32> = handles
        .iter()
        .enumerate()
        .filter(|(_, h)| !h.is_finished())
        .map(|(i, _)| i as u32)
        .collect();
    if !stuck.is_empty() {
        // Their threads keep `shared` (and the VM) alive; nothing can be
        // asked of the MMU, whose lock one of them may hold.
        return Err(VmError::Stuck {
            vcpus: stuck,
            grace: STOP_GRACE,
        });
    }
    for h in handles {
        if h.join().is_err() && outcome.is_none() {
            outcome = Some(Err(VmError::Thread("a vCPU thread panicked".into())));
        }
    }
    out.stats = shared.paging.shadow_vm().map(|vm| {
        use shadow_mmu::ShadowMmu;
        vm.mmu().stats()
    });
    let exit_status = match outcome {
        None => {
            let (window_exits, window_progress) = now.since(before_window.unwrap_or_default());
            let hang = if window_exits == 0 {
                Hang::NoExits
            } else if window_progress == 0 {
                Hang::ExitsWithoutProgress
            } else {
                Hang::GuestLoop
            };
            return Err(VmError::Timeout {
                info: Box::new(TimeoutInfo {
                    timeout: config.timeout,
                    hang,
                    window,
                    window_exits,
                    window_progress,
                    vcpus: lock(&shared.places).clone(),
                }),
            });
        }
        Some(r) => r?,
    };

    let results = Results::read(&*shared.memory.memory(), results_gpa, results_size)
        .map_err(|e| VmError::Results(e, exit_status))?;
    let console = out.console.clone();
    Ok(RunReport {
        workload: config.workload,
        paging: config.paging,
        exit_status,
        results,
        tsc_khz,
        console,
        wall,
        exits: ExitCounts {
            hypercalls: shared.hypercalls.load(Ordering::Relaxed),
            doorbell: shared.doorbell.load(Ordering::Relaxed),
            trampoline: shared.trampoline.load(Ordering::Relaxed),
            unmapped_mmio: shared.unmapped_mmio.load(Ordering::Relaxed),
        },
        shadow: match &shared.paging {
            Paging::Shadow(s) => s.shadow_vm().map(|vm| {
                use shadow_mmu::ShadowMmu;
                ShadowReport {
                    stats: vm.mmu().stats(),
                    audit: vm.mmu().audit().map_err(|e| e.to_string()),
                    nmi_flushes: vm.nmi_flushes(),
                    max_pages: vm.mmu().arena_region().2 / 4096,
                    speculative_marks: vm.mmu().take_speculative_marks(),
                    emulated: vm.emulated(),
                    interrupts: vm.interrupts(),
                    pt_writes: config.pt_writes,
                }
            }),
            Paging::Native => None,
        },
    })
}
