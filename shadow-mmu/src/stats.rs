// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Counters of what the MMU did, for tuning and for tests.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::addr::GuestAddress;
use crate::lock::Padded;

/// The guest entries whose accessed bit the MMU set speculatively
/// ([`Prefetch::Speculative`](crate::Prefetch::Speculative)), in the order
/// it set them, since the last
/// [`Mmu::take_speculative_marks`](crate::Mmu::take_speculative_marks).
/// Kept only up to [`MmuConfig::speculative_log`](crate::MmuConfig::speculative_log)
/// entries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpeculativeMarks {
    /// Guest-physical address of each entry, once per setting of its A bit.
    pub entries: Vec<GuestAddress>,
    /// Settings beyond the log's capacity, not in `entries`.
    pub dropped: u64,
}

impl SpeculativeMarks {
    /// Records one setting, or counts it as dropped when `capacity` entries
    /// are kept already.
    pub(crate) fn record(&mut self, gpa: GuestAddress, capacity: usize) {
        if self.entries.len() < capacity {
            self.entries.push(gpa);
        } else {
            self.dropped += 1;
        }
    }
}

/// Sizes of the shadow state when a snapshot is taken (read under the lock).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Gauges {
    pub pages_in_use: u64,
    pub pages_pending: u64,
    pub rmap_entries: u64,
    pub unsync_pages: u64,
}

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Live counters, updated without the MMU lock.
        #[derive(Debug, Default)]
        pub struct Counters {
            $(pub(crate) $name: AtomicU64,)*
        }

        /// A snapshot of the MMU's counters and sizes.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct Stats {
            $($(#[$doc])* pub $name: u64,)*
            /// Shadow pages in use.
            pub pages_in_use: u64,
            /// Shadow pages freed and waiting for a flush before reuse.
            pub pages_pending: u64,
            /// Leaf shadow entries in the reverse map.
            pub rmap_entries: u64,
            /// Shadow pages currently unsync.
            pub unsync_pages: u64,
        }

        impl Stats {
            /// Adds `other`'s counters (not its sizes) to these.
            fn add(&mut self, other: &Stats) {
                $(self.$name += other.$name;)*
            }
        }

        impl Counters {
            pub(crate) fn snapshot(&self, gauges: Gauges) -> Stats {
                Stats {
                    $($name: self.$name.load(Ordering::Relaxed),)*
                    pages_in_use: gauges.pages_in_use,
                    pages_pending: gauges.pages_pending,
                    rmap_entries: gauges.rmap_entries,
                    unsync_pages: gauges.unsync_pages,
                }
            }
        }
    };
}

counters! {
    /// Faults with no shadow entry yet.
    fault_no_spte,
    /// Of all faults and prefetches, those resolved under the shared lock
    /// (leaves added to existing pages, `lock.rs`), beside other vCPUs'.
    fault_shared,
    /// Write faults on an entry kept read-only until the guest D bit is set.
    fault_dirty_tracking,
    /// Write faults on a frame shadowed as a page table.
    fault_write_protected,
    /// Faults on an entry that already allowed the access (another vCPU
    /// fixed it first).
    fault_spurious,
    /// Faults whose guest walk failed: delivered to the guest.
    fault_guest,
    /// Faults on addresses that are not RAM.
    fault_mmio,
    /// Faults that had to be retried.
    fault_retry,
    /// Writes handed to the VMM for emulation.
    fault_emulate,
    /// Leaf entries installed by prefetch.
    prefetched,
    /// Of those, entries whose guest A bit the MMU set
    /// ([`Prefetch::Speculative`](crate::Prefetch::Speculative)).
    prefetched_speculative,
    /// Clean leaves made writable outside the MMU (a write that set the
    /// guest's D bit without a fault reaching it) and taken over
    /// ([`Mmu::dirty_taken`](crate::Mmu::dirty_taken)).
    dirty_taken,
    /// Unsync pages brought up to date.
    syncs,
    /// Pages that went unsync.
    unsyncs,
    /// Shadow pages zapped.
    zapped_pages,
    /// Shadow pages reclaimed by the page cap.
    reclaimed,
    /// Leaf entries dropped by INVLPG.
    invlpg_zaps,
    /// Emulated writes to shadowed tables.
    tracked_writes,
    /// Roots built.
    roots_built,
    /// CR3 loads served from a cached root.
    root_cache_hits,
}

impl Counters {
    #[inline]
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// One set of [`Counters`] per vCPU (and one for other threads), each on
/// cache lines of its own: vCPUs faulting at once must not pass a shared
/// counter's line back and forth (`lock.rs`).
#[derive(Debug)]
pub(crate) struct CounterShards {
    shards: Box<[Padded<Counters>]>,
}

impl CounterShards {
    /// Counters for `vcpus` vCPUs and the other threads.
    pub(crate) fn new(vcpus: usize) -> CounterShards {
        CounterShards {
            shards: (0..=vcpus).map(|_| Padded(Counters::default())).collect(),
        }
    }

    /// The counters vCPU `vcpu`'s thread bumps (any other index: the other
    /// threads').
    #[inline]
    pub(crate) fn shard(&self, vcpu: usize) -> &Counters {
        &self.shards[vcpu.min(self.shards.len() - 1)]
    }

    /// The sums, with `gauges`.
    pub(crate) fn snapshot(&self, gauges: Gauges) -> Stats {
        let mut total = Stats::default();
        for shard in self.shards.iter() {
            total.add(&shard.snapshot(Gauges::default()));
        }
        total.pages_in_use = gauges.pages_in_use;
        total.pages_pending = gauges.pages_pending;
        total.rmap_entries = gauges.rmap_entries;
        total.unsync_pages = gauges.unsync_pages;
        total
    }
}
