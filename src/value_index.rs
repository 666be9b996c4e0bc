//! The graph's value indexes (email → carrier slot, phone → carrier slot) as one flat array per
//! index, so that a probe costs one cache miss, not two (issue 3: "flat cost from 10 thousand
//! to 10 million contacts").
//!
//! Open addressing with linear probing. An entry is 8 bytes: a 32-bit *tag* (the top half of
//! the value's 64-bit hash) and the slot of the row carrying the value. The entry's home bucket
//! is the tag's top bits, so:
//! - the tag and the slot sit in the same cache line, and a probe usually stays in that line
//!   (eight entries per 64-byte line): one miss per probe, where a table keeping its control
//!   bytes apart from its entries (hashbrown's layout) takes two dependent misses;
//! - candidates are filtered by all 32 bits of the tag, so only a true match (short of a 2^-32
//!   chance) reads the row and the value's bytes to confirm it;
//! - growing needs no value: an entry's new home follows from its tag alone, so the arena is
//!   never read to rehash, and entries keep their order (a bigger table splits each bucket).
//!
//! The index never compares values itself: callers confirm candidates with a closure that reads
//! the row (the graph's values are in its arena). Removal shifts the following entries back
//! (Knuth's algorithm R for linear probing), so there are no tombstones and a lookup's probe
//! length depends only on the load, which stays at most 3/4.

use std::collections::TryReserveError;

/// One bucket: `slot == EMPTY` marks a free bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    tag: u32,
    slot: u32,
}

/// The slot value of a free bucket: no row has it (a graph holds at most `u32::MAX - 1` rows).
const EMPTY: u32 = u32::MAX;

const FREE: Entry = Entry {
    tag: 0,
    slot: EMPTY,
};

/// Fewest buckets of a table that has any.
const MIN_BUCKETS: usize = 8;

/// A map from values (known to the index by their 64-bit hash only) to the slot of one row
/// carrying each. See the module docs.
#[derive(Clone, Debug)]
pub struct ValueIndex {
    /// A power of two of buckets (or none).
    entries: Vec<Entry>,
    /// Occupied buckets.
    len: usize,
    /// `64 - log2(buckets)`: a hash's home bucket is `hash >> shift` (64 while there are
    /// no buckets). Tables of up to 2^32 buckets (3 billion values) have distinct homes.
    shift: u32,
}

impl Default for ValueIndex {
    fn default() -> Self {
        ValueIndex::new()
    }
}

/// The 32-bit tag of a 64-bit value hash: its top half, which also holds the home bucket.
fn tag_of(hash: u64) -> u32 {
    (hash >> 32) as u32
}

/// Buckets for `len` entries at a load of at most 3/4.
fn buckets_for(len: usize) -> usize {
    (len.saturating_mul(4) / 3 + 1)
        .max(MIN_BUCKETS)
        .next_power_of_two()
}

/// Starts loading the cache line at `ptr` without waiting for it (a hint: no effect on the
/// program's results, and it never faults).
#[inline(always)]
fn prefetch<T>(ptr: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is a hint: it never faults and has no architectural effect, whatever
    // the address (here always inside a live allocation).
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(ptr.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = ptr;
}

impl ValueIndex {
    /// An empty index (no allocation).
    pub fn new() -> Self {
        ValueIndex {
            entries: Vec::new(),
            len: 0,
            shift: 64,
        }
    }

    /// Number of values indexed.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no value is indexed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Buckets allocated (a power of two, or 0): 8 bytes each.
    pub fn buckets(&self) -> usize {
        self.entries.len()
    }

    fn mask(&self) -> usize {
        self.entries.len().wrapping_sub(1)
    }

    /// Home bucket of `tag` in a table of `1 << (64 - shift)` buckets.
    fn home(tag: u32, shift: u32) -> usize {
        // `shift` is 32..=64 for tables up to 2^32 buckets; (tag << 32) >> shift is the tag's
        // top `64 - shift` bits.
        ((u64::from(tag) << 32).checked_shr(shift)).unwrap_or(0) as usize
    }

    /// Starts loading the bucket where a lookup of `hash` begins, so that a caller with two
    /// lookups to make (an email and a phone) waits for both misses at once.
    pub fn prefetch(&self, hash: u64) {
        if let Some(entry) = self.entries.get(Self::home(tag_of(hash), self.shift)) {
            prefetch(entry);
        }
    }

    /// The first slot whose entry has `hash`'s tag and for which `is_match` (which reads the
    /// row and compares its value) holds; `None` when the value is not indexed.
    pub fn find(&self, hash: u64, mut is_match: impl FnMut(u32) -> bool) -> Option<u32> {
        let tag = tag_of(hash);
        let hit = self.probe(tag, |e| e.tag == tag && is_match(e.slot)).ok()?;
        Some(self.entries[hit].slot)
    }

    /// Bucket holding the entry (`hash`, `slot`), if any.
    fn position(&self, hash: u64, slot: u32) -> Option<usize> {
        let tag = tag_of(hash);
        self.probe(tag, |e| e == Entry { tag, slot }).ok()
    }

    /// Walks `tag`'s probe run from its home bucket: `Ok` with the first bucket whose entry
    /// satisfies `hit`, else `Err` with the free bucket that ends the run (where an entry with
    /// this tag goes). `Err(0)` when there are no buckets: writers grow the table first.
    fn probe(&self, tag: u32, mut hit: impl FnMut(Entry) -> bool) -> Result<usize, usize> {
        if self.entries.is_empty() {
            return Err(0);
        }
        let mask = self.mask();
        let mut i = Self::home(tag, self.shift);
        loop {
            let entry = self.entries[i];
            if entry.slot == EMPTY {
                return Err(i);
            }
            if hit(entry) {
                return Ok(i);
            }
            i = (i + 1) & mask;
        }
    }

    /// Whether `slot` is indexed under `hash`.
    pub fn contains(&self, hash: u64, slot: u32) -> bool {
        self.position(hash, slot).is_some()
    }

    /// Indexes `slot` under `hash` without looking for the value first: the caller knows it is
    /// not indexed yet (a second entry of one value would make lookups answer either).
    /// Grows the table (doubling) when it would pass 3/4 load.
    pub fn insert_unique(&mut self, hash: u64, slot: u32) {
        self.insert_if_absent(hash, slot, |_| false);
    }

    /// Indexes `slot` under `hash` unless `is_match` finds the value indexed already; returns
    /// whether it inserted. One walk of the probe run does both: the free bucket that ends it
    /// is where the entry goes. Grows the table (doubling) first when one more entry would
    /// pass 3/4 load.
    pub fn insert_if_absent(
        &mut self,
        hash: u64,
        slot: u32,
        mut is_match: impl FnMut(u32) -> bool,
    ) -> bool {
        debug_assert_ne!(slot, EMPTY, "a graph has fewer than u32::MAX rows");
        if (self.len + 1) * 4 > self.entries.len() * 3 {
            self.resize(buckets_for(self.len + 1).max(self.entries.len() * 2));
        }
        let tag = tag_of(hash);
        match self.probe(tag, |e| e.tag == tag && is_match(e.slot)) {
            Ok(_) => false,
            Err(free) => {
                self.entries[free] = Entry { tag, slot };
                self.len += 1;
                true
            }
        }
    }

    /// Puts `entry` in the free bucket that ends its probe run (room is guaranteed by the
    /// load).
    fn place(&mut self, entry: Entry) {
        if let Err(free) = self.probe(entry.tag, |_| false) {
            self.entries[free] = entry;
        }
    }

    /// Makes `new` the carrier indexed under `hash` in place of `old`; returns whether `old`
    /// was indexed there.
    pub fn replace(&mut self, hash: u64, old: u32, new: u32) -> bool {
        match self.position(hash, old) {
            Some(i) => {
                self.entries[i].slot = new;
                true
            }
            None => false,
        }
    }

    /// Removes the entry (`hash`, `slot`); returns whether it was there. The entries after it
    /// in its probe run move back where their home allows (no tombstone is left).
    pub fn remove(&mut self, hash: u64, slot: u32) -> bool {
        let Some(mut hole) = self.position(hash, slot) else {
            return false;
        };
        let mask = self.mask();
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let entry = self.entries[j];
            if entry.slot == EMPTY {
                break;
            }
            let home = Self::home(entry.tag, self.shift);
            // The entry may fill the hole unless its home lies cyclically in (hole, j].
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                self.entries[hole] = entry;
                hole = j;
            }
        }
        self.entries[hole] = FREE;
        self.len -= 1;
        true
    }

    /// Makes room for `additional` more entries without growing again.
    ///
    /// # Errors
    /// The allocation failed; the index is unchanged.
    pub fn try_reserve(&mut self, additional: usize) -> Result<(), TryReserveError> {
        let buckets = buckets_for(self.len.saturating_add(additional));
        if buckets <= self.entries.len() {
            return Ok(());
        }
        let mut entries = Vec::new();
        entries.try_reserve_exact(buckets)?;
        entries.resize(buckets, FREE);
        self.rebuild(entries);
        Ok(())
    }

    fn resize(&mut self, buckets: usize) {
        self.rebuild(vec![FREE; buckets]);
    }

    /// Moves every entry into `entries` (free buckets, a power of two of them): homes follow
    /// from the tags, so no value is read.
    fn rebuild(&mut self, entries: Vec<Entry>) {
        let old = std::mem::replace(&mut self.entries, entries);
        self.shift = 64 - self.entries.len().trailing_zeros();
        for entry in old.into_iter().filter(|e| e.slot != EMPTY) {
            self.place(entry);
        }
    }

    /// Every indexed slot, in bucket order.
    pub fn slots(&self) -> impl Iterator<Item = u32> + '_ {
        self.entries
            .iter()
            .filter(|e| e.slot != EMPTY)
            .map(|e| e.slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// Hashes crowded into few tags and homes, so probe runs collide, wrap and shift.
    fn crowded(key: u16) -> u64 {
        (u64::from(key % 7) << 61) | (u64::from(key % 3) << 32) | u64::from(key)
    }

    #[test]
    fn finds_what_it_holds_and_nothing_else() {
        let mut index = ValueIndex::new();
        assert_eq!(index.find(1, |_| true), None);
        for slot in 0..1000u32 {
            index.insert_unique(crowded(slot as u16), slot);
        }
        assert_eq!(index.len(), 1000);
        assert!(index.buckets() * 3 >= 1000 * 4);
        for slot in 0..1000u32 {
            assert_eq!(index.find(crowded(slot as u16), |s| s == slot), Some(slot));
        }
        assert_eq!(index.find(crowded(5000), |s| s == 5000), None);
        // Only entries with the probe's tag are offered to the confirming closure.
        let mut offered = Vec::new();
        index.find(crowded(4), |s| {
            offered.push(s);
            false
        });
        assert!(offered.contains(&4));
        assert!(
            offered
                .iter()
                .all(|&s| tag_of(crowded(s as u16)) == tag_of(crowded(4)))
        );
    }

    #[test]
    fn insert_if_absent_keeps_the_first_carrier() {
        let mut index = ValueIndex::new();
        assert!(index.insert_if_absent(42, 1, |_| true));
        assert!(!index.insert_if_absent(42, 2, |s| s == 1));
        assert_eq!(index.find(42, |_| true), Some(1));
        assert!(index.replace(42, 1, 3));
        assert!(!index.replace(42, 1, 4));
        assert_eq!(index.find(42, |_| true), Some(3));
    }

    #[test]
    fn reserve_allocates_once_for_the_load() {
        let mut index = ValueIndex::new();
        index.try_reserve(1000).expect("small allocation");
        let buckets = index.buckets();
        for slot in 0..1000u32 {
            index.insert_unique(u64::from(slot).wrapping_mul(0x9E37_79B9_7F4A_7C15), slot);
        }
        assert_eq!(index.buckets(), buckets);
    }

    proptest! {
        /// Any sequence of inserts and removals leaves exactly the entries a plain map holds,
        /// each findable, with no tombstones (the length counts occupied buckets).
        #[test]
        fn matches_a_map_under_inserts_and_removals(
            ops in proptest::collection::vec((any::<bool>(), 0u16..300), 1..600)
        ) {
            let mut index = ValueIndex::new();
            let mut model: HashMap<u16, u32> = HashMap::new();
            for (n, (insert, key)) in ops.into_iter().enumerate() {
                let hash = crowded(key);
                if insert {
                    let slot = n as u32;
                    let inserted = index.insert_if_absent(hash, slot, |s| {
                        model.get(&key) == Some(&s)
                    });
                    prop_assert_eq!(inserted, !model.contains_key(&key));
                    model.entry(key).or_insert(slot);
                } else {
                    match model.remove(&key) {
                        Some(slot) => prop_assert!(index.remove(hash, slot)),
                        None => prop_assert!(!index.remove(hash, n as u32)),
                    }
                }
                prop_assert_eq!(index.len(), model.len());
                prop_assert_eq!(index.slots().count(), model.len());
            }
            for (key, &slot) in &model {
                prop_assert_eq!(index.find(crowded(*key), |s| s == slot), Some(slot));
            }
        }
    }
}
