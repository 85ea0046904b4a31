// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The arena: one anonymous mapping holding every shadow page, and a private
//! mirror of it.
//!
//! Its pages have addresses in the *shadow-physical* space (what shadow
//! entries point to) starting at a configurable base; under KVM the glue
//! registers the mapping as a memslot at that base, above all guest RAM.
//!
//! The CPU walks the mapping, and guest CPL0 code can reach it through the
//! hypervisor hole (`SECURITY.md`): what it holds is hostile input. So the
//! MMU keeps its own copy of every entry in a second mapping no guest can
//! reach, decides everything from that copy ([`Arena::load`]), writes both
//! ([`Arena::store`]), and compares the two where the CPU's view matters
//! ([`Arena::verify`]): an entry the MMU did not write is corruption, never
//! a reason to loop, follow a link it did not make or record a parent
//! twice. The CPU never writes a shadow entry itself (accessed and dirty
//! are preset, `spte.rs`), so the two agree exactly unless someone else
//! wrote the mapping.

use std::sync::atomic::{AtomicU64, Ordering};

use thiserror::Error;
use vm_memory::{GuestAddress, MmapRegion, VolatileMemory};

use crate::addr::{PAGE_SHIFT, PAGE_SIZE};
use crate::pte::PteMemory;

/// Entries in a shadow page.
pub const ENTRIES: usize = 512;

/// Index of a page in the arena.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PageId(pub u32);

/// Why the arena could not be created.
#[derive(Debug, Error)]
pub enum ArenaError {
    /// The base is not page-aligned or the arena would wrap the address space.
    #[error("arena base {base:#x} with {pages} pages is not a valid shadow-physical range")]
    BadRange {
        /// Requested base.
        base: u64,
        /// Requested number of pages.
        pages: u32,
    },
    /// The host refused the mapping.
    #[error("cannot map the shadow-page arena: {0}")]
    Mmap(#[from] vm_memory::mmap::MmapRegionError),
}

/// A shadow entry whose value the MMU did not write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Corrupted {
    /// The page.
    pub page: PageId,
    /// The entry.
    pub index: usize,
    /// What the MMU wrote.
    pub expected: u64,
    /// What the CPU would use.
    pub found: u64,
}

/// Shadow pages, 512 atomic 64-bit entries each.
#[derive(Debug)]
pub struct Arena {
    /// What the CPU walks (and guest CPL0 code can reach).
    region: MmapRegion<()>,
    /// The MMU's own copy, private to the process.
    mirror: MmapRegion<()>,
    base: u64,
    pages: u32,
}

impl Arena {
    /// Maps `pages` zeroed pages whose shadow-physical addresses start at
    /// `base`.
    pub fn new(base: u64, pages: u32) -> Result<Arena, ArenaError> {
        let size = u64::from(pages) << PAGE_SHIFT;
        if !base.is_multiple_of(PAGE_SIZE) || pages == 0 || base.checked_add(size).is_none() {
            return Err(ArenaError::BadRange { base, pages });
        }
        let len = usize::try_from(size).map_err(|_| ArenaError::BadRange { base, pages })?;
        let region = MmapRegion::new(len)?;
        let mirror = MmapRegion::new(len)?;
        Ok(Arena {
            region,
            mirror,
            base,
            pages,
        })
    }

    /// Shadow-physical address of the first page.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        u64::from(self.pages) << PAGE_SHIFT
    }

    /// Number of pages.
    pub fn pages(&self) -> u32 {
        self.pages
    }

    /// Host virtual address of the mapping, for registering it with a
    /// hypervisor (a KVM memslot).
    pub fn host_address(&self) -> *mut u8 {
        self.region.as_ptr()
    }

    /// Shadow-physical address of `page`.
    #[inline]
    pub fn page_address(&self, page: PageId) -> u64 {
        self.base + (u64::from(page.0) << PAGE_SHIFT)
    }

    /// Whether `spa` lies in the arena.
    #[inline]
    pub fn contains(&self, spa: u64) -> bool {
        spa >= self.base && spa - self.base < self.size()
    }

    /// The page holding shadow-physical address `spa`.
    #[inline]
    pub fn page_at(&self, spa: u64) -> Option<PageId> {
        self.contains(spa)
            .then(|| PageId(((spa - self.base) >> PAGE_SHIFT) as u32))
    }

    #[inline]
    fn entry<'a>(&self, region: &'a MmapRegion<()>, page: PageId, index: usize) -> &'a AtomicU64 {
        debug_assert!(page.0 < self.pages && index < ENTRIES);
        let offset = ((page.0 as usize) << PAGE_SHIFT) + (index % ENTRIES) * 8;
        // Page ids come from this arena and entries are 8-byte aligned inside
        // a page-aligned mapping of the arena's size, so this cannot fail.
        region
            .get_atomic_ref::<AtomicU64>(offset)
            .expect("shadow entry inside the arena")
    }

    /// Entry `index` of `page` as the MMU wrote it.
    #[inline]
    pub fn load(&self, page: PageId, index: usize) -> u64 {
        self.entry(&self.mirror, page, index)
            .load(Ordering::Acquire)
    }

    /// Entry `index` of `page` as the CPU sees it.
    #[inline]
    pub fn load_live(&self, page: PageId, index: usize) -> u64 {
        self.entry(&self.region, page, index)
            .load(Ordering::Acquire)
    }

    /// Entry `index` of `page` as the MMU wrote it, if the CPU sees the
    /// same value.
    #[inline]
    pub fn verify(&self, page: PageId, index: usize) -> Result<u64, Corrupted> {
        let expected = self.load(page, index);
        let found = self.load_live(page, index);
        if expected == found {
            Ok(expected)
        } else {
            Err(Corrupted {
                page,
                index,
                expected,
                found,
            })
        }
    }

    /// The first entry of `page` that differs from what the MMU wrote.
    pub fn verify_page(&self, page: PageId) -> Result<(), Corrupted> {
        (0..ENTRIES).try_for_each(|i| self.verify(page, i).map(drop))
    }

    /// Writes entry `index` of `page`.
    #[inline]
    pub fn store(&self, page: PageId, index: usize, value: u64) {
        self.entry(&self.mirror, page, index)
            .store(value, Ordering::Release);
        self.entry(&self.region, page, index)
            .store(value, Ordering::Release)
    }

    /// Writes entry `index` of `page` if the MMU's copy holds zero (a new
    /// entry, written by one of several threads at once): the copy is
    /// exchanged first, so that only one writer goes on to the CPU's.
    /// False if the entry was not zero.
    #[inline]
    pub fn install(&self, page: PageId, index: usize, value: u64) -> bool {
        let won = self
            .entry(&self.mirror, page, index)
            .compare_exchange(0, value, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if won {
            self.entry(&self.region, page, index)
                .store(value, Ordering::Release);
        }
        won
    }

    /// Clears every entry of `page`.
    pub fn clear(&self, page: PageId) {
        for i in 0..ENTRIES {
            self.store(page, i, 0);
        }
    }
}

/// Lets the guest walker walk shadow tables (addresses are shadow-physical),
/// which is how tests and the audit see what a CPU would see: the live
/// entries.
impl PteMemory for Arena {
    fn load_u32(&self, gpa: GuestAddress) -> Option<u32> {
        let v = self.load_u64(GuestAddress(gpa.0 & !7))?;
        Some((v >> ((gpa.0 & 4) * 8)) as u32)
    }

    fn load_u64(&self, gpa: GuestAddress) -> Option<u64> {
        let page = self.page_at(gpa.0)?;
        Some(self.load_live(page, ((gpa.0 & (PAGE_SIZE - 1)) / 8) as usize))
    }

    fn cmpxchg_u32(&self, _gpa: GuestAddress, _old: u32, _new: u32) -> Option<bool> {
        None
    }

    fn cmpxchg_u64(&self, _gpa: GuestAddress, _old: u64, _new: u64) -> Option<bool> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let a = Arena::new(0x1_0000_0000, 4).unwrap();
        assert_eq!(a.page_address(PageId(2)), 0x1_0000_2000);
        assert_eq!(a.page_at(0x1_0000_2fff), Some(PageId(2)));
        assert_eq!(a.page_at(0x1_0000_4000), None);
        assert_eq!(a.page_at(0xffff_f000), None);
        a.store(PageId(3), 511, 0xdead);
        assert_eq!(a.load_u64(GuestAddress(0x1_0000_3ff8)), Some(0xdead));
        a.clear(PageId(3));
        assert_eq!(a.load(PageId(3), 511), 0);
        assert!(Arena::new(0x123, 1).is_err());
        assert!(Arena::new(!0xfff, 2).is_err());
    }

    /// Writes into the mapping the CPU walks, as guest CPL0 code could make
    /// them through the hole, are seen by `verify` and never by `load`.
    #[test]
    fn foreign_writes_are_corruption() {
        let a = Arena::new(0x1_0000_0000, 2).unwrap();
        a.store(PageId(1), 7, 0x1_0000_0027);
        assert_eq!(a.verify(PageId(1), 7), Ok(0x1_0000_0027));
        assert_eq!(a.verify_page(PageId(1)), Ok(()));
        // SAFETY: offset 0x1000 + 7 * 8 is an aligned entry inside the
        // 2-page mapping, which `a` keeps alive; nothing else accesses it
        // concurrently.
        unsafe {
            *(a.host_address().add(0x1000 + 7 * 8) as *mut u64) = 0x1_0000_0026;
        }
        assert_eq!(a.load(PageId(1), 7), 0x1_0000_0027);
        assert_eq!(a.load_live(PageId(1), 7), 0x1_0000_0026);
        let bad = Corrupted {
            page: PageId(1),
            index: 7,
            expected: 0x1_0000_0027,
            found: 0x1_0000_0026,
        };
        assert_eq!(a.verify(PageId(1), 7), Err(bad));
        assert_eq!(a.verify_page(PageId(1)), Err(bad));
        assert_eq!(a.load_u64(GuestAddress(0x1_0000_1038)), Some(0x1_0000_0026));
        a.store(PageId(1), 7, 0);
        assert_eq!(a.verify_page(PageId(1)), Ok(()));
    }
}
