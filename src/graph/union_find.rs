//! Union-find over slots: each identity is a tree of `parent` links whose root carries the
//! identity's size and primary, joined by size with path halving on the write path, plus the
//! member ring (`next`) that lists an identity's slots.

use super::IdentityGraph;
use crate::contact::ContactId;

impl IdentityGraph {
    /// Root of `slot` without compressing (usable behind a shared reference).
    pub(super) fn root(&self, mut slot: u32) -> u32 {
        loop {
            let parent = self.links[slot as usize].parent;
            if parent == slot {
                return slot;
            }
            slot = parent;
        }
    }

    /// Root of `slot`, halving the path on the way (Tarjan & van Leeuwen's path halving).
    pub(super) fn root_mut(&mut self, mut slot: u32) -> u32 {
        if self.capture.is_some() {
            // While a snapshot is captured, parents change only in `union` (which saves the
            // pre-image), so the captured partition stays readable.
            return self.root(slot);
        }
        loop {
            let parent = self.links[slot as usize].parent;
            if parent == slot {
                return slot;
            }
            let grandparent = self.links[parent as usize].parent;
            self.links[slot as usize].parent = grandparent;
            slot = grandparent;
        }
    }

    pub(super) fn primary_of_root(&self, root: u32) -> u32 {
        self.links[root as usize].primary
    }

    pub(super) fn is_better(&self, a: u32, b: u32) -> bool {
        self.nodes[a as usize].key() < self.nodes[b as usize].key()
    }

    /// Unions the identities of two roots (by size); returns the new root. The new primary is
    /// the better of the two primaries; the member rings are spliced.
    pub(super) fn union(&mut self, a: u32, b: u32) -> u32 {
        let (a, b) = (self.root_mut(a), self.root_mut(b));
        if a == b {
            return a;
        }
        // On a tie `b` stays the root: inserts pass the new row as `a`, so an identity's root
        // stays put as rows join it one by one (a snapshot or import links every row to the
        // same first member), and every later find takes one step.
        let (big, small) = if self.links[a as usize].size > self.links[b as usize].size {
            (a, b)
        } else {
            (b, a)
        };
        let (pa, pb) = (
            self.links[big as usize].primary,
            self.links[small as usize].primary,
        );
        let primary = if self.is_better(pa, pb) { pa } else { pb };
        let size = self.links[big as usize].size + self.links[small as usize].size;
        self.save_links(big);
        self.save_links(small);
        let next_big = self.links[big as usize].next;
        self.links[big as usize].next = self.links[small as usize].next;
        self.links[small as usize].next = next_big;
        self.links[small as usize].parent = big;
        let parts = (
            self.links[big as usize].size,
            self.links[small as usize].size,
        );
        let root = &mut self.links[big as usize];
        root.size = size;
        root.primary = primary;
        self.sizes.remove(parts.0);
        self.sizes.remove(parts.1);
        self.sizes.add(size);
        big
    }

    pub(super) fn members(&self, root: u32) -> impl Iterator<Item = u32> + '_ {
        let mut current = Some(root);
        std::iter::from_fn(move || {
            let slot = current?;
            let next = self.links[slot as usize].next;
            current = (next != root).then_some(next);
            Some(slot)
        })
    }

    /// Union-find `find` by contact id: the id of the primary of the identity containing contact
    /// `id` (a root walk without path compression, so it works behind a shared reference), or
    /// `None` for an unknown id. O(α(n)) amortized thanks to union by size and path halving on
    /// the write path.
    pub fn find(&self, id: ContactId) -> Option<ContactId> {
        self.slot_of(id)
            .map(|s| self.id_of(self.primary_of_root(self.root(s))))
    }
}
