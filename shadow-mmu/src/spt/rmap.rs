//! The reverse map: for each guest frame, the leaf shadow entries that map
//! it. Write-protecting a frame that became a shadowed page table, and
//! invalidating a frame, start here.

use std::collections::HashMap;

use super::SptePtr;
use crate::addr::Gfn;

/// Guest frame → leaf shadow entries. Large leaves are entered under the
/// first frame they map.
#[derive(Debug, Default)]
pub struct Rmap {
    map: HashMap<Gfn, Vec<SptePtr>>,
    entries: usize,
}

impl Rmap {
    /// Records that `spte` maps `gfn`.
    pub fn add(&mut self, gfn: Gfn, spte: SptePtr) {
        let list = self.map.entry(gfn).or_default();
        if !list.contains(&spte) {
            list.push(spte);
            self.entries += 1;
        }
    }

    /// Forgets that `spte` maps `gfn`.
    pub fn remove(&mut self, gfn: Gfn, spte: SptePtr) {
        if let Some(list) = self.map.get_mut(&gfn) {
            if let Some(pos) = list.iter().position(|&s| s == spte) {
                list.swap_remove(pos);
                self.entries -= 1;
            }
            if list.is_empty() {
                self.map.remove(&gfn);
            }
        }
    }

    /// The entries that map `gfn`.
    pub fn get(&self, gfn: Gfn) -> &[SptePtr] {
        self.map.get(&gfn).map_or(&[], Vec::as_slice)
    }

    /// Number of (frame, entry) pairs.
    pub fn len(&self) -> usize {
        self.entries
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Every (frame, entry) pair.
    pub fn iter(&self) -> impl Iterator<Item = (Gfn, SptePtr)> + '_ {
        self.map
            .iter()
            .flat_map(|(&g, list)| list.iter().map(move |&s| (g, s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spt::PageId;

    #[test]
    fn add_remove() {
        let mut r = Rmap::default();
        let a = SptePtr::new(PageId(1), 3);
        let b = SptePtr::new(PageId(2), 4);
        r.add(Gfn(7), a);
        r.add(Gfn(7), a);
        r.add(Gfn(7), b);
        assert_eq!(r.len(), 2);
        r.remove(Gfn(7), a);
        assert_eq!(r.get(Gfn(7)), &[b]);
        r.remove(Gfn(7), b);
        assert!(r.is_empty() && r.get(Gfn(7)).is_empty());
    }
}
