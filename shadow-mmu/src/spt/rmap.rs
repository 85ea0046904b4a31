// Copyright 2026 The shadow-mmu Authors.
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The reverse map: for each guest frame, the leaf shadow entries that map
//! it. Write-protecting a frame that became a shadowed page table, and
//! invalidating a frame, start here.
//!
//! Every fault that installs a leaf adds an entry and every zap removes one,
//! so the map is on the fault path and sized by mapped guest memory. It is
//! a two-level table, like the page tables it describes: a hash directory
//! of chunks of 512 frames (2 MiB of guest memory), each chunk a flat array
//! of 32-bit heads. A head is empty, holds its frame's only shadow entry
//! inline (the common case: one address space maps a frame once), or names
//! a list in a side pool for frames mapped from several places (shared
//! pages, many address spaces). A mapped GiB then costs 1 MiB of heads, and
//! add/remove are a hash probe per chunk plus an array access, with no
//! allocation unless a frame gains a second mapping.
//!
//! Heads pack an entry as `page << 9 | index` in 31 bits, so the arena may
//! hold at most [`MAX_PAGES`] pages (16 GiB of shadow tables).

use std::collections::HashMap;

use parking_lot::Mutex;

use super::{PageId, SptePtr};
use crate::addr::Gfn;
use crate::hash::FrameHashBuilder;
use crate::lock::Padded;

/// Most arena pages an entry can name in a head.
pub const MAX_PAGES: u32 = 1 << 22;

const CHUNK_SHIFT: u32 = 9;
const CHUNK_FRAMES: usize = 1 << CHUNK_SHIFT;

/// The heads of 512 consecutive frames.
#[derive(Debug)]
struct Chunk {
    heads: [u32; CHUNK_FRAMES],
    /// Non-empty heads; the chunk is freed when it drops to zero.
    used: u16,
}

/// What a head holds.
enum Head {
    Empty,
    One(SptePtr),
    List(usize),
}

impl Head {
    fn decode(raw: u32) -> Head {
        if raw == 0 {
            Head::Empty
        } else if raw & 1 == 1 {
            let packed = raw >> 1;
            Head::One(SptePtr::new(PageId(packed >> 9), (packed & 511) as usize))
        } else {
            Head::List((raw >> 1) as usize - 1)
        }
    }

    fn one(ptr: SptePtr) -> u32 {
        debug_assert!(ptr.page.0 < MAX_PAGES && ptr.index < 512);
        (((ptr.page.0 << 9) | u32::from(ptr.index)) << 1) | 1
    }

    fn list(slot: usize) -> u32 {
        debug_assert!(slot < (u32::MAX >> 1) as usize);
        ((slot as u32) + 1) << 1
    }
}

/// Guest frame → leaf shadow entries. Large leaves are entered under the
/// first frame they map.
///
/// The map is split by chunk into [`SHARDS`] shards, each behind a lock of
/// its own on a cache line of its own: a fault that adds a record under the
/// shared MMU lock (`lock.rs`) locks only its chunk's shard, which vCPUs
/// faulting in different 2 MiB of guest memory do not share.
#[derive(Debug)]
pub struct Rmap {
    shards: Box<[Padded<Mutex<Shard>>]>,
}

/// Shards of the reverse map.
pub const SHARDS: usize = 64;

impl Default for Rmap {
    fn default() -> Self {
        Rmap {
            shards: (0..SHARDS).map(|_| Padded(Mutex::default())).collect(),
        }
    }
}

impl Rmap {
    fn shard(&self, gfn: Gfn) -> parking_lot::MutexGuard<'_, Shard> {
        self.shards[((gfn.0 >> CHUNK_SHIFT) % SHARDS as u64) as usize].lock()
    }

    /// Records that `spte` maps `gfn`.
    pub fn add(&self, gfn: Gfn, spte: SptePtr) {
        self.shard(gfn).add(gfn, spte)
    }

    /// Forgets that `spte` maps `gfn`.
    pub fn remove(&self, gfn: Gfn, spte: SptePtr) {
        self.shard(gfn).remove(gfn, spte)
    }

    /// The entries that map `gfn`.
    pub fn get(&self, gfn: Gfn) -> Vec<SptePtr> {
        self.shard(gfn).get(gfn).collect()
    }

    /// Every (frame, entry) pair, in no particular order (for audits).
    pub fn iter(&self) -> Vec<(Gfn, SptePtr)> {
        self.shards
            .iter()
            .flat_map(|s| s.lock().iter().collect::<Vec<_>>())
            .collect()
    }

    /// Whether `spte` is recorded as mapping `gfn`.
    pub fn contains(&self, gfn: Gfn, spte: SptePtr) -> bool {
        self.shard(gfn).contains(gfn, spte)
    }

    /// Number of (frame, entry) pairs.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    /// Whether the map is empty.
    #[cfg(any(test, feature = "test-utils"))]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One shard of the map.
#[derive(Debug, Default)]
struct Shard {
    chunks: HashMap<u64, Box<Chunk>, FrameHashBuilder>,
    /// Lists of frames with two or more entries; `None` slots are free.
    lists: Vec<Option<Vec<SptePtr>>>,
    free_lists: Vec<usize>,
    entries: usize,
}

impl Shard {
    fn split(gfn: Gfn) -> (u64, usize) {
        (gfn.0 >> CHUNK_SHIFT, (gfn.0 as usize) & (CHUNK_FRAMES - 1))
    }

    fn add(&mut self, gfn: Gfn, spte: SptePtr) {
        let (key, i) = Self::split(gfn);
        let chunk = self.chunks.entry(key).or_insert_with(|| {
            Box::new(Chunk {
                heads: [0; CHUNK_FRAMES],
                used: 0,
            })
        });
        let head = &mut chunk.heads[i];
        match Head::decode(*head) {
            Head::Empty => {
                *head = Head::one(spte);
                chunk.used += 1;
            }
            Head::One(other) => {
                if other == spte {
                    return;
                }
                let list = vec![other, spte];
                let slot = match self.free_lists.pop() {
                    Some(slot) => {
                        self.lists[slot] = Some(list);
                        slot
                    }
                    None => {
                        self.lists.push(Some(list));
                        self.lists.len() - 1
                    }
                };
                *head = Head::list(slot);
            }
            Head::List(slot) => {
                let Some(list) = self.lists.get_mut(slot).and_then(Option::as_mut) else {
                    return;
                };
                if list.contains(&spte) {
                    return;
                }
                list.push(spte);
            }
        }
        self.entries += 1;
    }

    fn remove(&mut self, gfn: Gfn, spte: SptePtr) {
        let (key, i) = Self::split(gfn);
        let Some(chunk) = self.chunks.get_mut(&key) else {
            return;
        };
        let head = &mut chunk.heads[i];
        match Head::decode(*head) {
            Head::Empty => return,
            Head::One(other) => {
                if other != spte {
                    return;
                }
                *head = 0;
                chunk.used -= 1;
            }
            Head::List(slot) => {
                let Some(list) = self.lists.get_mut(slot).and_then(Option::as_mut) else {
                    return;
                };
                let Some(pos) = list.iter().position(|&s| s == spte) else {
                    return;
                };
                list.swap_remove(pos);
                if let [last] = list[..] {
                    // Back to the inline form; the list's memory goes.
                    *head = Head::one(last);
                    self.lists[slot] = None;
                    self.free_lists.push(slot);
                }
            }
        }
        self.entries -= 1;
        if chunk.used == 0 {
            self.chunks.remove(&key);
        }
        if self.free_lists.len() == self.lists.len() && !self.lists.is_empty() {
            self.lists = Vec::new();
            self.free_lists = Vec::new();
        }
    }

    fn get(&self, gfn: Gfn) -> Entries<'_> {
        let (key, i) = Self::split(gfn);
        let raw = self.chunks.get(&key).map_or(0, |c| c.heads[i]);
        match Head::decode(raw) {
            Head::Empty => Entries::One(None),
            Head::One(ptr) => Entries::One(Some(ptr)),
            Head::List(slot) => match self.lists.get(slot).and_then(Option::as_ref) {
                Some(list) => Entries::List(list.iter()),
                None => Entries::One(None),
            },
        }
    }

    fn iter(&self) -> impl Iterator<Item = (Gfn, SptePtr)> + '_ {
        self.chunks.iter().flat_map(move |(&key, chunk)| {
            chunk.heads.iter().enumerate().flat_map(move |(i, &raw)| {
                let gfn = Gfn((key << CHUNK_SHIFT) | i as u64);
                let list: &[SptePtr] = match Head::decode(raw) {
                    Head::List(slot) => self
                        .lists
                        .get(slot)
                        .and_then(Option::as_deref)
                        .unwrap_or(&[]),
                    _ => &[],
                };
                let one = match Head::decode(raw) {
                    Head::One(ptr) => Some(ptr),
                    _ => None,
                };
                one.into_iter()
                    .chain(list.iter().copied())
                    .map(move |p| (gfn, p))
            })
        })
    }

    fn contains(&self, gfn: Gfn, spte: SptePtr) -> bool {
        self.get(gfn).any(|p| p == spte)
    }

    fn len(&self) -> usize {
        self.entries
    }
}

/// The entries of one frame in a shard.
#[derive(Clone, Debug)]
enum Entries<'a> {
    /// None or one entry, held inline.
    One(Option<SptePtr>),
    /// Two or more.
    List(std::slice::Iter<'a, SptePtr>),
}

impl Iterator for Entries<'_> {
    type Item = SptePtr;

    fn next(&mut self) -> Option<SptePtr> {
        match self {
            Entries::One(p) => p.take(),
            Entries::List(it) => it.next().copied(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeSet, HashMap as StdMap};

    fn ptr(page: u32, index: usize) -> SptePtr {
        SptePtr::new(PageId(page), index)
    }

    #[test]
    fn shards_hold_what_one_map_would() {
        let r = Rmap::default();
        let (a, b) = (ptr(1, 3), ptr(2, 4));
        for gfn in [0, 511, 512, 513 << 9, u64::MAX >> 12] {
            r.add(Gfn(gfn), a);
            r.add(Gfn(gfn), b);
        }
        r.remove(Gfn(512), a);
        assert_eq!(r.len(), 9);
        assert_eq!(r.get(Gfn(512)), [b]);
        assert!(r.contains(Gfn(0), a) && !r.contains(Gfn(512), a));
        assert_eq!(r.iter().len(), 9);
        for gfn in [0, 511, 512, 513 << 9, u64::MAX >> 12] {
            r.remove(Gfn(gfn), a);
            r.remove(Gfn(gfn), b);
        }
        assert!(r.is_empty());
    }

    #[test]
    fn add_remove() {
        let mut r = Shard::default();
        let a = ptr(1, 3);
        let b = ptr(2, 4);
        r.add(Gfn(7), a);
        r.add(Gfn(7), a);
        r.add(Gfn(7), b);
        assert_eq!(r.len(), 2);
        r.remove(Gfn(7), a);
        assert_eq!(r.get(Gfn(7)).collect::<Vec<_>>(), [b]);
        r.remove(Gfn(7), b);
        assert!(r.len() == 0 && r.get(Gfn(7)).next().is_none());
        assert_eq!(r.chunks.len(), 0);
        assert!(r.lists.is_empty());
    }

    #[test]
    fn extremes_round_trip() {
        let mut r = Shard::default();
        let hi = ptr(MAX_PAGES - 1, 511);
        let lo = ptr(0, 0);
        for gfn in [0, 511, 512, u64::MAX >> 12] {
            r.add(Gfn(gfn), hi);
            r.add(Gfn(gfn), lo);
        }
        for gfn in [0, 511, 512, u64::MAX >> 12] {
            let got: BTreeSet<_> = r.get(Gfn(gfn)).map(|p| (p.page.0, p.index)).collect();
            assert_eq!(got, BTreeSet::from([(MAX_PAGES - 1, 511), (0, 0)]));
        }
        assert_eq!(r.len(), 8);
    }

    /// Against a plain map of sets, under a deterministic pseudo-random mix
    /// of adds and removes that revisits frames and entries often.
    #[test]
    fn matches_a_plain_map() {
        let mut r = Shard::default();
        let mut model: StdMap<u64, BTreeSet<(u32, u16)>> = StdMap::new();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let steps = if cfg!(miri) { 2_000 } else { 200_000 };
        for _ in 0..steps {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let gfn = (x >> 8) % 3000;
            let p = ptr(((x >> 24) % 6) as u32, ((x >> 32) % 3) as usize);
            if x & 3 == 0 {
                r.remove(Gfn(gfn), p);
                if let Some(s) = model.get_mut(&gfn) {
                    s.remove(&(p.page.0, p.index));
                }
            } else {
                r.add(Gfn(gfn), p);
                model.entry(gfn).or_default().insert((p.page.0, p.index));
            }
        }
        let total: usize = model.values().map(BTreeSet::len).sum();
        assert_eq!(r.len(), total);
        let listed: BTreeSet<_> = r.iter().map(|(g, p)| (g.0, p.page.0, p.index)).collect();
        let expected: BTreeSet<_> = model
            .iter()
            .flat_map(|(&g, set)| set.iter().map(move |&(page, index)| (g, page, index)))
            .collect();
        assert_eq!(listed, expected);
        assert_eq!(r.iter().count(), total);
        for gfn in 0..3000 {
            let got: BTreeSet<_> = r.get(Gfn(gfn)).map(|p| (p.page.0, p.index)).collect();
            assert_eq!(
                got,
                model.get(&gfn).cloned().unwrap_or_default(),
                "gfn {gfn}"
            );
        }
        // Empty everything: no chunk or list may stay behind.
        for (gfn, set) in model {
            for (page, index) in set {
                r.remove(Gfn(gfn), ptr(page, usize::from(index)));
            }
        }
        assert_eq!(r.len(), 0);
        assert_eq!((r.chunks.len(), r.lists.len()), (0, 0));
    }
}
