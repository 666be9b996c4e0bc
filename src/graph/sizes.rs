//! How many identities the graph holds of each size, so that the number of identities and the
//! size of the largest stay exact in O(1) when identities grow, and in O(log n) when one
//! shrinks or goes (an erasure, a split), instead of a recount over every slot.

use std::collections::BTreeMap;

/// Sizes below this are counted in a flat array (the common case: customers of a few
/// contacts), larger ones in an ordered map.
const SMALL: usize = 64;

/// Counts of identities by size (contacts, deleted ones included). See the module docs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct IdentitySizes {
    small: [u32; SMALL],
    large: BTreeMap<u32, u32>,
    identities: usize,
}

impl Default for IdentitySizes {
    fn default() -> Self {
        IdentitySizes {
            small: [0; SMALL],
            large: BTreeMap::new(),
            identities: 0,
        }
    }
}

impl IdentitySizes {
    /// Counts an identity of `size` contacts.
    pub(super) fn add(&mut self, size: u32) {
        match self.small.get_mut(size as usize) {
            Some(count) => *count += 1,
            None => *self.large.entry(size).or_insert(0) += 1,
        }
        self.identities += 1;
    }

    /// Forgets an identity of `size` contacts (one that [`IdentitySizes::add`] counted).
    pub(super) fn remove(&mut self, size: u32) {
        match self.small.get_mut(size as usize) {
            Some(count) => *count = count.saturating_sub(1),
            None => {
                if let Some(count) = self.large.get_mut(&size) {
                    *count -= 1;
                    if *count == 0 {
                        self.large.remove(&size);
                    }
                }
            }
        }
        self.identities = self.identities.saturating_sub(1);
    }

    /// Number of identities counted.
    pub(super) fn identities(&self) -> usize {
        self.identities
    }

    /// Size of the largest identity counted; 0 when none is.
    pub(super) fn largest(&self) -> u32 {
        match self.large.last_key_value() {
            Some((&size, _)) => size,
            None => (0..SMALL)
                .rev()
                .find(|&s| self.small[s] > 0)
                .map_or(0, |s| s as u32),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_follows_adds_and_removes_across_both_ranges() {
        let mut sizes = IdentitySizes::default();
        assert_eq!((sizes.identities(), sizes.largest()), (0, 0));
        for size in [1, 3, 63, 64, 100_000, 100_000] {
            sizes.add(size);
        }
        assert_eq!((sizes.identities(), sizes.largest()), (6, 100_000));
        sizes.remove(100_000);
        assert_eq!(sizes.largest(), 100_000);
        sizes.remove(100_000);
        assert_eq!(sizes.largest(), 64);
        sizes.remove(64);
        assert_eq!(sizes.largest(), 63);
        sizes.remove(63);
        sizes.remove(3);
        assert_eq!((sizes.identities(), sizes.largest()), (1, 1));
    }
}
