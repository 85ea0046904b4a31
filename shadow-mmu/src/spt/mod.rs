// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Shadow pages: the arena that holds them, their roles, the bookkeeping that
//! finds them by guest frame, and the reverse map from guest frames to the
//! shadow entries that map them.

pub mod arena;
pub mod guest_frame;
pub mod rmap;
pub mod role;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use arena::{Arena, ArenaError, PageId, ENTRIES};
pub use guest_frame::GuestFrames;
pub use role::Role;

use crate::addr::Gfn;
use crate::hash::FrameHashBuilder;

/// One shadow entry: a page and an index in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SptePtr {
    /// The shadow page.
    pub page: PageId,
    /// The entry index, 0..512.
    pub index: u16,
}

impl SptePtr {
    /// Entry `index` of `page`.
    pub const fn new(page: PageId, index: usize) -> SptePtr {
        SptePtr {
            page,
            index: index as u16,
        }
    }
}

/// Bookkeeping of one shadow page.
#[derive(Debug)]
pub struct ShadowPage {
    /// The guest table it shadows, or the first frame a direct page maps.
    pub gfn: Gfn,
    /// Its role.
    pub role: Role,
    /// Entries of other shadow pages that link to this one.
    pub parents: Vec<SptePtr>,
    /// The guest frames of leaf entries that their shadow frames do not
    /// name.
    pub frames: GuestFrames,
    /// A 4 KiB guest page table whose writes are not tracked until the next
    /// sync point (INVLPG, TLB flush, CR3 load).
    pub unsync: bool,
    /// How many vCPU roots (current or cached) use this page.
    pub root_count: u32,
    /// Emulated writes since the page was last used by a fault.
    pub write_flooding: u8,
    /// A fault has prefetched the page's whole window since it was created
    /// or last synced: later faults look only at their neighbours.
    pub prefetched: bool,
    /// Last use, for oldest-first reclaim.
    pub stamp: u64,
    /// The stamp of this page's entry in the reclaim queue (older than
    /// `stamp` when the page was used since it was queued).
    queued: u64,
}

/// Why no page could be allocated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfPages;

/// Every shadow page, its lookup tables and the free lists.
#[derive(Debug)]
pub struct Pages {
    /// The memory of the pages.
    pub arena: Arena,
    slots: Vec<Option<ShadowPage>>,
    /// Pages used before and freed after a completed flush.
    free: Vec<PageId>,
    /// Pages never handed out yet start here.
    next_fresh: u32,
    /// Freed pages some CPU may still reach through a stale TLB or
    /// paging-structure cache, each with its free mark (see
    /// [`Pages::free_mark`]); reusable after a completed flush that covers
    /// the mark.
    pending_free: VecDeque<(u64, PageId)>,
    /// How many pages were ever freed: the mark of the latest one. Shared
    /// so that it can be read without the MMU lock.
    freed: Arc<AtomicU64>,
    /// Indirect (guest-table) pages by guest frame.
    by_gfn: HashMap<Gfn, Vec<PageId>, FrameHashBuilder>,
    /// Direct pages by first frame and role.
    direct: HashMap<(Gfn, Role), PageId, FrameHashBuilder>,
    lru: VecDeque<(u64, PageId)>,
    clock: u64,
    live: u32,
}

/// How a page left the free list: a never-used page, or one that served
/// before (which some hypervisors have cached and must be told about).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Never used before: all zero, unknown to anyone.
    Fresh,
    /// Used before; cleared by a VMM store.
    Reused,
}

impl Pages {
    /// Bookkeeping for every page of `arena`.
    pub fn new(arena: Arena) -> Pages {
        let n = arena.pages() as usize;
        let mut slots = Vec::with_capacity(n);
        slots.resize_with(n, || None);
        Pages {
            arena,
            slots,
            free: Vec::new(),
            next_fresh: 0,
            pending_free: VecDeque::new(),
            freed: Arc::new(AtomicU64::new(0)),
            by_gfn: HashMap::default(),
            direct: HashMap::default(),
            lru: VecDeque::new(),
            clock: 0,
            live: 0,
        }
    }

    /// Pages in use (not free, not pending).
    pub fn live(&self) -> u32 {
        self.live
    }

    /// Pages waiting for a flush before reuse.
    pub fn pending(&self) -> usize {
        self.pending_free.len()
    }

    /// The page `id`, if it is in use.
    #[inline]
    pub fn get(&self, id: PageId) -> Option<&ShadowPage> {
        self.slots.get(id.0 as usize).and_then(Option::as_ref)
    }

    /// The page `id`, mutably, if it is in use.
    #[inline]
    pub fn get_mut(&mut self, id: PageId) -> Option<&mut ShadowPage> {
        self.slots.get_mut(id.0 as usize).and_then(Option::as_mut)
    }

    /// Every page in use.
    pub fn iter(&self) -> impl Iterator<Item = (PageId, &ShadowPage)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|p| (PageId(i as u32), p)))
    }

    /// Indirect pages shadowing `gfn`.
    pub fn shadows_of(&self, gfn: Gfn) -> &[PageId] {
        self.by_gfn.get(&gfn).map_or(&[], Vec::as_slice)
    }

    /// Every frame some indirect page shadows.
    pub fn shadowed_gfns(&self) -> impl Iterator<Item = Gfn> + '_ {
        self.by_gfn.keys().copied()
    }

    /// Whether any indirect page shadows `gfn`.
    pub fn is_shadowed(&self, gfn: Gfn) -> bool {
        self.by_gfn.contains_key(&gfn)
    }

    /// Finds the page for (`gfn`, `role`).
    pub fn find(&self, gfn: Gfn, role: Role) -> Option<PageId> {
        if role.direct() {
            return self.direct.get(&(gfn, role)).copied();
        }
        self.shadows_of(gfn)
            .iter()
            .copied()
            .find(|&id| self.get(id).is_some_and(|p| p.role == role))
    }

    /// Marks `id` as just used. Only the stamp changes: the fault path
    /// touches every page on its way down, and the reclaim queue is put in
    /// order lazily, when reclaim meets a page used since it was queued.
    #[inline]
    pub fn touch(&mut self, id: PageId) {
        self.clock += 1;
        let stamp = self.clock;
        if let Some(p) = self.get_mut(id) {
            p.stamp = stamp;
        }
    }

    /// Puts `id` at the back of the reclaim queue with its current stamp.
    fn enqueue(&mut self, id: PageId) {
        let Some(p) = self.slots.get_mut(id.0 as usize).and_then(Option::as_mut) else {
            return;
        };
        p.queued = p.stamp;
        self.lru.push_back((p.stamp, id));
        // Entries of freed pages are skipped lazily; keep the queue bounded.
        if self.lru.len() > 2 * self.live as usize + 64 {
            let slots = &self.slots;
            self.lru
                .retain(|&(s, id)| slots[id.0 as usize].as_ref().is_some_and(|p| p.queued == s));
        }
    }

    /// The last use stamp handed out.
    pub fn current_clock(&self) -> u64 {
        self.clock
    }

    /// The least recently used page that is no root and was last used
    /// before `before`, if any.
    ///
    /// The queue is in the order pages were queued; a page used since goes
    /// to the back with its new stamp, so the front converges on the least
    /// recently used page. Every entry is looked at most twice per call.
    pub fn oldest_reclaimable(&mut self, before: u64) -> Option<PageId> {
        let mut skipped = Vec::new();
        let mut found = None;
        let mut budget = 2 * self.lru.len();
        while budget > 0 {
            budget -= 1;
            let Some((queued, id)) = self.lru.pop_front() else {
                break;
            };
            let Some(p) = self.get(id) else { continue };
            if p.queued != queued {
                // A freed page's entry, or one superseded by a requeue.
                continue;
            }
            if p.stamp != queued {
                self.enqueue(id);
                continue;
            }
            if p.stamp >= before || p.root_count > 0 || p.role.synthetic() {
                skipped.push((queued, id));
                continue;
            }
            found = Some(id);
            break;
        }
        for entry in skipped.into_iter().rev() {
            self.lru.push_front(entry);
        }
        found
    }

    /// Takes a page off the free list and registers it for (`gfn`, `role`).
    /// Synthetic pages are not entered in the lookup tables.
    pub fn allocate(&mut self, gfn: Gfn, role: Role) -> Result<(PageId, Origin), OutOfPages> {
        let (id, origin) = if let Some(id) = self.free.pop() {
            self.arena.clear(id);
            (id, Origin::Reused)
        } else if self.next_fresh < self.arena.pages() {
            self.next_fresh += 1;
            (PageId(self.next_fresh - 1), Origin::Fresh)
        } else {
            return Err(OutOfPages);
        };
        self.slots[id.0 as usize] = Some(ShadowPage {
            gfn,
            role,
            parents: Vec::new(),
            frames: GuestFrames::default(),
            unsync: false,
            root_count: 0,
            write_flooding: 0,
            prefetched: false,
            stamp: 0,
            queued: 0,
        });
        if !role.synthetic() {
            if role.direct() {
                self.direct.insert((gfn, role), id);
            } else {
                self.by_gfn.entry(gfn).or_default().push(id);
            }
        }
        self.live += 1;
        self.touch(id);
        self.enqueue(id);
        Ok((id, origin))
    }

    /// Forgets page `id` and queues it for reuse after the next flush. The
    /// caller has already unlinked it from parents and children.
    pub fn release(&mut self, id: PageId) -> Option<ShadowPage> {
        let page = self.slots.get_mut(id.0 as usize)?.take()?;
        if !page.role.synthetic() {
            if page.role.direct() {
                self.direct.remove(&(page.gfn, page.role));
            } else if let Some(list) = self.by_gfn.get_mut(&page.gfn) {
                list.retain(|&p| p != id);
                if list.is_empty() {
                    self.by_gfn.remove(&page.gfn);
                }
            }
        }
        self.live -= 1;
        // Only this pool, under the MMU lock, bumps the counter.
        let mark = self.freed.load(Ordering::Relaxed) + 1;
        self.freed.store(mark, Ordering::SeqCst);
        self.pending_free.push_back((mark, id));
        Some(page)
    }

    /// The free counter: every page freed from now on gets a higher mark
    /// than what this returns.
    pub fn free_mark(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.freed)
    }

    /// Every CPU has flushed since the pages with marks up to `mark` were
    /// freed: they may be reused.
    pub fn flush_completed(&mut self, mark: u64) {
        while let Some(&(m, id)) = self.pending_free.front() {
            if m > mark {
                break;
            }
            self.pending_free.pop_front();
            self.free.push(id);
        }
    }
}
