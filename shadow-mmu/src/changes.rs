// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! What the embedding VMM must carry out after an MMU operation: TLB
//! invalidations and flushes, and the shadow entries it must store again on
//! hosts that shadow the shadow tables.

use crate::addr::Gva;

/// A change to a shadow entry that was present.
///
/// The value is already in the arena. On hosts whose hypervisor itself
/// shadows the shadow tables (KVM without TDP), a store made by the VMM into a
/// present entry is never seen: the guest (its trampoline) must store the
/// value again itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpteWrite {
    /// Shadow-physical address of the entry.
    pub addr: u64,
    /// Its new value.
    pub value: u64,
}

/// What the embedding VMM must do before an operation's effect is complete.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[must_use = "shadow changes take effect only once flushed"]
pub struct Changes {
    /// Addresses to `invlpg` on the calling vCPU.
    pub invlpg: Vec<Gva>,
    /// Flush the calling vCPU's whole TLB.
    pub flush_local: bool,
    /// Flush every vCPU's TLB, then call [`ShadowMmu::flush_completed`](crate::ShadowMmu::flush_completed).
    pub flush_all: bool,
    /// Present entries that changed, in order.
    pub spte_writes: Vec<SpteWrite>,
    /// Shadow-physical addresses of pages that left the free list after an
    /// earlier use; hosts that cache shadow tables need a guest store into
    /// each before it is linked.
    pub reused_pages: Vec<u64>,
}

impl Changes {
    /// Whether nothing needs doing.
    pub fn is_empty(&self) -> bool {
        *self == Changes::default()
    }

    /// Appends `other`.
    pub fn merge(&mut self, mut other: Changes) {
        self.invlpg.append(&mut other.invlpg);
        self.flush_local |= other.flush_local;
        self.flush_all |= other.flush_all;
        self.spte_writes.append(&mut other.spte_writes);
        self.reused_pages.append(&mut other.reused_pages);
    }
}
