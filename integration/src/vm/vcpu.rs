// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! vCPU set-up and the run loop: hypercalls (`out 0x5a0`), the shadow
//! trampoline's exit (`out 0x5a1`), the doorbell and every way a run ends.

use std::cell::Cell;
use std::sync::atomic::{compiler_fence, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;

use kvm_bindings::kvm_run;

use kvm_bindings::CpuId;
use kvm_ioctls::{VcpuExit, VcpuFd};
use vm_memory::{Bytes, GuestAddress, GuestAddressSpace};

use super::boot::{self, DOORBELL};
use super::paging::{rip_of, Paging, TrampolineOutcome, VcpuContext, VmContext};
use super::{lock, Shared, VcpuPlace, VmError};

/// Hypercall port (native paging).
pub const HYPERCALL_PORT: u16 = 0x5a0;

/// Hypercall numbers of `resources/ABI.md` (one definition, the crate's).
pub use shadow_mmu::abi::nr;
use shadow_mmu::abi::{self, result, Block};
use shadow_mmu::kvm::EXIT_PORT;

const CONSOLE_MAX: u64 = 4096;

/// Sets up vCPU `index` in the ABI's boot state: CPUID (before the special
/// registers, or KVM refuses EFER.LME), special registers through the
/// paging hook, general registers.
pub(super) fn setup(
    vm: &VmContext<'_>,
    paging: &Paging,
    fd: &mut VcpuFd,
    index: u32,
    supported: &CpuId,
    entry64: u64,
) -> Result<(), VmError> {
    let mut cpuid = supported.clone();
    for e in cpuid.as_mut_slice() {
        match e.function {
            1 => e.ebx = (e.ebx & 0x00ff_ffff) | (index << 24),
            0xb | 0x1f => e.edx = index,
            _ => {}
        }
    }
    fd.set_cpuid2(&cpuid).map_err(|source| VmError::Kvm {
        what: "KVM_SET_CPUID2",
        source,
    })?;
    let mut sregs = fd.get_sregs().map_err(|source| VmError::Kvm {
        what: "KVM_GET_SREGS",
        source,
    })?;
    boot::boot_sregs(&mut sregs, boot::BOOT_PML4);
    paging.vcpu_sregs(
        &mut VcpuContext {
            vm,
            vcpu: fd,
            index,
        },
        &mut sregs,
    )?;
    fd.set_sregs(&sregs).map_err(|source| VmError::Kvm {
        what: "KVM_SET_SREGS",
        source,
    })?;
    fd.set_regs(&boot::boot_regs(entry64, index))
        .map_err(|source| VmError::Kvm {
            what: "KVM_SET_REGS",
            source,
        })?;
    if index != 0 {
        // With the in-kernel local APIC an application processor waits
        // for INIT and SIPI; the ABI starts it at `entry64` instead, when
        // the boot vCPU asks (START_VCPU), by running it.
        let runnable = kvm_bindings::kvm_mp_state {
            mp_state: kvm_bindings::KVM_MP_STATE_RUNNABLE,
        };
        fd.set_mp_state(runnable).map_err(|source| VmError::Kvm {
            what: "KVM_SET_MP_STATE",
            source,
        })?;
    }
    Ok(())
}

thread_local! {
    /// The `kvm_run` of the vCPU this thread runs, for the kick signal's
    /// handler (null when none).
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

/// The kick signal's handler, on the kicked thread: the next `KVM_RUN`
/// (or the one under way, which the signal interrupts) returns at once.
/// A kick between the run loop's checks and `KVM_RUN` is therefore never
/// lost.
pub(super) fn kicked() {
    KVM_RUN.with(|run| {
        let run = run.get();
        if !run.is_null() {
            // SAFETY: the pointer is this thread's vCPU's `kvm_run`, set
            // by `thread` while it owns the vCPU and cleared before the
            // vCPU (and its mapping) is dropped; the signal interrupts this
            // same thread, which touches the field only with the same
            // single-byte stores.
            unsafe { std::ptr::addr_of_mut!((*run).immediate_exit).write_volatile(1) };
        }
    });
    compiler_fence(Ordering::SeqCst);
}

/// Sends its vCPU index when dropped: when the vCPU thread ends, by
/// returning or unwinding.
pub(super) struct Done(pub(super) Sender<u32>, pub(super) u32);

impl Drop for Done {
    fn drop(&mut self) {
        let _ = self.0.send(self.1);
    }
}

/// Where the vCPU is, for a timeout's message.
fn place(fd: &VcpuFd) -> Option<VcpuPlace> {
    let regs = fd.get_regs().ok()?;
    let sregs = fd.get_sregs().ok()?;
    Some(VcpuPlace {
        rip: regs.rip,
        cpl: (sregs.cs.selector & 3) as u8,
        cr2: sregs.cr2,
        cr3: sregs.cr3,
    })
}

/// A vCPU thread: wait to be started (application vCPUs), run, report.
pub(super) fn thread(shared: Arc<Shared>, mut fd: VcpuFd, index: u32) {
    if index > 0 {
        let mut started = lock(&shared.started);
        while !started[index as usize] && !shared.stop.load(Ordering::SeqCst) {
            started = shared
                .started_cv
                .wait(started)
                .unwrap_or_else(|e| e.into_inner());
        }
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
    }
    // SAFETY: pthread_self has no preconditions.
    let me = unsafe { libc::pthread_self() };
    lock(&shared.threads)[index as usize] = Some(me);
    let shadow = shared.paging.shadow_vm();
    if let Some(s) = shadow {
        s.set_running(index as usize, true);
    }
    // Undone when this function ends, by returning or unwinding, before
    // `fd` (a parameter) is dropped.
    struct Running<'a>(&'a Shared, u32);
    impl Drop for Running<'_> {
        fn drop(&mut self) {
            KVM_RUN.with(|run| run.set(std::ptr::null_mut()));
            if let Some(s) = self.0.paging.shadow_vm() {
                s.set_running(self.1 as usize, false);
            }
            lock(&self.0.threads)[self.1 as usize] = None;
        }
    }
    KVM_RUN.with(|run| run.set(fd.get_kvm_run()));
    let running = Running(&shared, index);
    let result = run_loop(&shared, &mut fd, index);
    drop(running);
    if let Some(p) = lock(&shared.places).get_mut(index as usize) {
        *p = place(&fd);
    }
    match result {
        Ok(Some(status)) => shared.finish(Ok(status)),
        Ok(None) => {}
        Err(e) => shared.finish(Err(e)),
    }
}

/// Knocks the vCPUs that owe a shadow TLB flush out of `KVM_RUN`; their
/// threads send themselves the flush NMI before running again.
fn kick_for_flush(shared: &Shared, me: u32) {
    let Some(s) = shared.paging.shadow_vm() else {
        return;
    };
    let threads = lock(&shared.threads);
    for i in s.vcpus_owing_flush() {
        if i == me as usize {
            continue;
        }
        if let Some(Some(t)) = threads.get(i) {
            // SAFETY: `t` is the pthread of a vCPU thread that registered
            // itself and unregisters (under this lock) before it exits, so
            // it is alive; the kick signal has a no-op handler installed.
            unsafe {
                libc::pthread_kill(*t, shared.kick_signal);
            }
        }
    }
}

/// An exit, copied out of `kvm_run` so that the vCPU can be used again.
enum Exit {
    Out(u16, u32),
    DoorbellWrite(u64, u64),
    Hlt,
    Shutdown,
    Internal,
    FailEntry(u64),
    SystemEvent(u32),
    Other(String),
}

fn guest_error(fd: &VcpuFd, index: u32, what: String) -> VmError {
    VmError::Guest {
        vcpu: index,
        what,
        rip: rip_of(fd),
    }
}

/// The bytes at the guest's RIP, for emulation-failure messages.
fn insn_bytes(shared: &Shared, fd: &VcpuFd) -> String {
    let Ok(regs) = fd.get_regs() else {
        return String::new();
    };
    let Ok(t) = fd.translate_gva(regs.rip) else {
        return String::new();
    };
    if t.valid == 0 {
        return String::new();
    }
    let mut b = [0u8; 8];
    match shared
        .memory
        .memory()
        .read_slice(&mut b, GuestAddress(t.physical_address))
    {
        Ok(()) => format!(
            ", instruction bytes {}",
            b.iter()
                .map(|x| format!("{x:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        Err(_) => String::new(),
    }
}

fn run_loop(shared: &Shared, fd: &mut VcpuFd, index: u32) -> Result<Option<u64>, VmError> {
    loop {
        // Re-armed before the checks: a kick from here on makes KVM_RUN
        // return at once.
        fd.set_kvm_immediate_exit(0);
        compiler_fence(Ordering::SeqCst);
        if shared.stop.load(Ordering::SeqCst) {
            return Ok(None);
        }
        if let Some(s) = shared.paging.shadow_vm() {
            // A remote flush this vCPU's last exit started: the others
            // acknowledge it before this one runs guest code again.
            while s.flush_wait(index as usize) {
                if shared.stop.load(Ordering::SeqCst) {
                    return Ok(None);
                }
                kick_for_flush(shared, index);
                // Off the CPU the vCPUs it waits for may need.
                std::thread::sleep(std::time::Duration::from_micros(20));
            }
            s.before_run(index as usize, fd)
                .map_err(|e| VmError::Shadow(e.to_string()))?;
        }
        let exit = match fd.run() {
            Ok(VcpuExit::IoOut(port, data)) => {
                let mut v = [0u8; 4];
                let n = data.len().min(4);
                v[..n].copy_from_slice(&data[..n]);
                Exit::Out(port, u32::from_le_bytes(v))
            }
            Ok(VcpuExit::IoIn(port, data)) => {
                data.fill(0xff);
                Exit::Other(format!("in from port {port:#x}"))
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                if addr.wrapping_sub(DOORBELL) < 0x1000 {
                    data.fill(0);
                } else {
                    data.fill(0xff);
                    shared.unmapped_mmio.fetch_add(1, Ordering::Relaxed);
                }
                continue;
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                if addr.wrapping_sub(DOORBELL) < 0x1000 {
                    let mut v = [0u8; 8];
                    let n = data.len().min(8);
                    v[..n].copy_from_slice(&data[..n]);
                    Exit::DoorbellWrite(addr - DOORBELL, u64::from_le_bytes(v))
                } else {
                    shared.unmapped_mmio.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            }
            Ok(VcpuExit::Hlt) => Exit::Hlt,
            Ok(VcpuExit::Shutdown) => Exit::Shutdown,
            Ok(VcpuExit::InternalError) => Exit::Internal,
            Ok(VcpuExit::FailEntry(reason, _)) => Exit::FailEntry(reason),
            Ok(VcpuExit::SystemEvent(kind, _)) => Exit::SystemEvent(kind),
            Ok(VcpuExit::Intr) => continue,
            Ok(other) => Exit::Other(format!("unexpected exit {other:?}")),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => continue,
            Err(source) => {
                return Err(VmError::Kvm {
                    what: "KVM_RUN",
                    source,
                })
            }
        };
        match exit {
            Exit::Out(HYPERCALL_PORT, gpa) => {
                shared.hypercalls.fetch_add(1, Ordering::Relaxed);
                if let Some(status) = hypercall(shared, fd, index, gpa)? {
                    return Ok(Some(status));
                }
            }
            Exit::Out(EXIT_PORT, data) => {
                shared.trampoline.fetch_add(1, Ordering::Relaxed);
                let vm = vm_context(shared);
                let outcome = shared.paging.trampoline_exit(
                    &mut VcpuContext {
                        vm: &vm,
                        vcpu: fd,
                        index,
                    },
                    data,
                )?;
                kick_for_flush(shared, index);
                if let TrampolineOutcome::Hypercall(block) = outcome {
                    shared.hypercalls.fetch_add(1, Ordering::Relaxed);
                    let status = hypercall(shared, fd, index, block)?;
                    if let Some(s) = shared.paging.shadow_vm() {
                        // The result went into guest memory: tell the MMU,
                        // and let the trampoline resume the guest.
                        s.finish_hypercall(index as usize, GuestAddress(u64::from(block)))
                            .map_err(|e| VmError::Shadow(e.to_string()))?;
                    }
                    if let Some(status) = status {
                        return Ok(Some(status));
                    }
                }
            }
            Exit::Out(port, data) => {
                return Err(guest_error(
                    fd,
                    index,
                    format!("out {data:#x} to port {port:#x}"),
                ))
            }
            Exit::DoorbellWrite(0, status) => {
                shared.doorbell.fetch_add(1, Ordering::Relaxed);
                return Ok(Some(status));
            }
            Exit::DoorbellWrite(8, byte) => {
                shared.doorbell.fetch_add(1, Ordering::Relaxed);
                shared.console_write(&[byte as u8]);
            }
            Exit::DoorbellWrite(off, v) => {
                return Err(guest_error(
                    fd,
                    index,
                    format!("doorbell store of {v:#x} at unknown offset {off:#x}"),
                ))
            }
            Exit::Hlt => {
                return Err(guest_error(
                    fd,
                    index,
                    "hlt (no interrupts in ABI v1: the guest is stuck)".into(),
                ))
            }
            Exit::Shutdown => {
                return Err(guest_error(
                    fd,
                    index,
                    "shutdown (triple fault: an exception with no usable handler)".into(),
                ))
            }
            Exit::Internal => {
                // SAFETY: KVM filled the `internal` member of the exit union
                // for KVM_EXIT_INTERNAL_ERROR, the exit just returned.
                let sub = unsafe { fd.get_kvm_run().__bindgen_anon_1.internal.suberror };
                let what = match sub {
                    1 => "emulation failure (this host emulates CPL0: SSE, int3, cmpxchg16b, xrstor fail)",
                    2 => "simultaneous exceptions",
                    3 => "delivery event via an unhandled vector",
                    _ => "internal error",
                };
                let bytes = insn_bytes(shared, fd);
                return Err(guest_error(
                    fd,
                    index,
                    format!("KVM internal error {sub}: {what}{bytes}"),
                ));
            }
            Exit::FailEntry(reason) => {
                return Err(guest_error(
                    fd,
                    index,
                    format!("VM entry failed (hardware reason {reason:#x})"),
                ))
            }
            Exit::SystemEvent(kind) => {
                return Err(guest_error(fd, index, format!("system event {kind}")))
            }
            Exit::Other(what) => return Err(guest_error(fd, index, what)),
        }
    }
}

fn vm_context(shared: &Shared) -> VmContext<'_> {
    VmContext {
        vm: &shared.vm,
        memory: &shared.memory,
        ram_size: shared.ram_size,
        vcpus: shared.vcpus,
    }
}

/// Serves the hypercall whose block is at `gpa`; returns an exit status if
/// the guest asked to stop.
fn hypercall(
    shared: &Shared,
    fd: &mut VcpuFd,
    index: u32,
    gpa: u32,
) -> Result<Option<u64>, VmError> {
    let mem = shared.memory.memory();
    let block =
        Block::read(&*mem, u64::from(gpa)).map_err(|e| guest_error(fd, index, e.to_string()))?;
    let args = block.args;
    let mut exit = None;
    let result = match block.nr {
        nr::CONSOLE_WRITE => {
            let (at, len) = (args[0], args[1]);
            if len > CONSOLE_MAX || at.checked_add(len).is_none_or(|e| e > shared.ram_size) {
                result::E_INVALID
            } else {
                let mut buf = vec![0u8; len as usize];
                match mem.read_slice(&mut buf, GuestAddress(at)) {
                    Ok(()) => {
                        shared.console_write(&buf);
                        result::OK
                    }
                    Err(_) => result::E_INVALID,
                }
            }
        }
        nr::EXIT => {
            exit = Some(args[0]);
            result::OK
        }
        nr::START_VCPU => {
            let mut started = lock(&shared.started);
            match usize::try_from(args[0])
                .ok()
                .filter(|&i| i > 0 && i < started.len())
            {
                Some(i) if !started[i] => {
                    started[i] = true;
                    shared.started_cv.notify_all();
                    result::OK
                }
                _ => result::E_INVALID,
            }
        }
        nr::MEMORY_MAP => match abi::write_memory_map(&*mem, args[0], args[1]) {
            Ok((count, _)) => i64::try_from(count).unwrap_or(i64::MAX),
            Err(_) => result::E_INVALID,
        },
        // The MMU's own hypercalls: under shadow paging they reach the
        // crate through the trampoline (the marked `ud2`), never this port;
        // natively the guest uses the instructions themselves.
        nr::LOAD_CR3
        | nr::INVLPG
        | nr::FLUSH_TLB
        | nr::SET_TRAP_TABLE
        | nr::SET_PAGING_BITS
        | nr::MMU_UPDATE => result::E_MODE,
        _ => result::E_UNKNOWN,
    };
    mem.write_obj(result, GuestAddress(block.gpa.0 + abi::RESULT_OFFSET))
        .map_err(|e| VmError::Memory(format!("hypercall result at {gpa:#x}: {e}")))?;
    Ok(exit)
}
