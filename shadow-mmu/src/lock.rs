// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The MMU lock: a reader-writer lock with one reader slot per vCPU.
//!
//! Most page faults only add a leaf to a shadow page that already exists
//! (`fault.rs`): they read the shadow state and change nothing but one
//! entry (a compare-exchange) and its reverse-map record (under the map's
//! own shard lock). Those take the lock shared. A fault costs about
//! 100-200 ns of host time, about what it takes to move one cache line
//! between CPUs, so a shared lock whose word every reader writes would cost
//! the fault path its parallelism by itself. Here each reader locks only its
//! own slot, on a cache line of its own; whoever changes the state takes
//! every slot (in order, so writers cannot deadlock), which makes the rare
//! exclusive operations (building pages, zaps, syncs, CR3 loads) a few
//! dozen uncontended lock operations dearer: the trade `percpu_rw_semaphore`
//! makes in Linux.

use std::cell::UnsafeCell;
use std::ops::{Deref, DerefMut};

use parking_lot::lock_api::RawMutex as _;
use parking_lot::RawMutex;

/// The slot of threads that are not vCPUs (any index past the vCPUs').
pub(crate) const OTHER_THREADS: usize = usize::MAX;

/// A value on a cache line (pair) of its own, so that what one CPU writes
/// there does not take the line from another.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Padded<T>(pub T);

impl<T> Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// A reader-writer lock with one reader slot per vCPU and one shared by
/// every other thread.
pub(crate) struct VcpuLock<T> {
    slots: Box<[Padded<RawMutex>]>,
    value: UnsafeCell<T>,
}

// SAFETY: the value is reached only through the guards below: shared
// references while one slot is held (and so no writer, which holds every
// slot), a unique one while every slot is held. That is the contract of a
// reader-writer lock, which is `Send` for `T: Send` and `Sync` for
// `T: Send + Sync`.
unsafe impl<T: Send> Send for VcpuLock<T> {}
// SAFETY: as above.
unsafe impl<T: Send + Sync> Sync for VcpuLock<T> {}

impl<T: std::fmt::Debug> std::fmt::Debug for VcpuLock<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VcpuLock")
            .field("slots", &self.slots.len())
            .finish_non_exhaustive()
    }
}

impl<T> VcpuLock<T> {
    /// A lock for `vcpus` vCPUs around `value`.
    pub(crate) fn new(vcpus: usize, value: T) -> VcpuLock<T> {
        VcpuLock {
            slots: (0..=vcpus).map(|_| Padded(RawMutex::INIT)).collect(),
            value: UnsafeCell::new(value),
        }
    }

    /// Shared access for vCPU `vcpu`'s thread (any other index: the slot
    /// of threads that are not vCPUs). A thread must not hold a read guard
    /// when it asks for [`VcpuLock::write`].
    pub(crate) fn read(&self, vcpu: usize) -> ReadGuard<'_, T> {
        let slot = &self.slots[vcpu.min(self.slots.len() - 1)];
        slot.lock();
        ReadGuard { lock: self, slot }
    }

    /// Exclusive access.
    pub(crate) fn write(&self) -> WriteGuard<'_, T> {
        for slot in self.slots.iter() {
            slot.lock();
        }
        WriteGuard { lock: self }
    }
}

/// Shared access to the value of a [`VcpuLock`].
pub(crate) struct ReadGuard<'a, T> {
    lock: &'a VcpuLock<T>,
    slot: &'a RawMutex,
}

impl<T> Deref for ReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: this guard holds a slot, so no writer (which needs every
        // slot) holds a unique reference; readers share.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> Drop for ReadGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: `read` locked this slot for this guard, which unlocks it
        // once.
        unsafe { self.slot.unlock() }
    }
}

/// Exclusive access to the value of a [`VcpuLock`].
pub(crate) struct WriteGuard<'a, T> {
    lock: &'a VcpuLock<T>,
}

impl<T> Deref for WriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: this guard holds every slot: no other guard exists.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for WriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: this guard holds every slot: no other guard exists, and
        // `&mut self` makes this reference the only one through it.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for WriteGuard<'_, T> {
    fn drop(&mut self) {
        for slot in self.lock.slots.iter() {
            // SAFETY: `write` locked every slot for this guard, which
            // unlocks each once.
            unsafe { slot.unlock() }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[test]
    fn writers_exclude_readers_and_each_other() {
        // Miri explores interleavings at a small fraction of the speed.
        const ROUNDS: u64 = if cfg!(miri) { 50 } else { 20_000 };
        let lock = Arc::new(VcpuLock::new(2, (0u64, 0u64)));
        let stop = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..3)
            .map(|vcpu| {
                let (lock, stop) = (lock.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let g = lock.read(vcpu);
                        // A writer changes both halves under the lock: a
                        // reader never sees them differ.
                        assert_eq!(g.0, g.1);
                    }
                })
            })
            .collect();
        let writers: Vec<_> = (0..2)
            .map(|_| {
                let lock = lock.clone();
                std::thread::spawn(move || {
                    for _ in 0..ROUNDS {
                        let mut g = lock.write();
                        g.0 += 1;
                        std::hint::spin_loop();
                        g.1 += 1;
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            r.join().unwrap();
        }
        assert_eq!(*lock.read(7), (2 * ROUNDS, 2 * ROUNDS));
    }
}
