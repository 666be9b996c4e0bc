//! The graph's value indexes (email → carrier slot, phone → carrier slot) as one flat array per
//! index, so that a probe costs one cache miss, not two, whether the graph holds ten thousand
//! contacts or ten million.
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
//!
//! # Growth
//!
//! When an insert would pass 3/4 load, a table of twice the buckets takes over, and the entries
//! move into it a few at a time: each later insert moves 16 buckets' worth of the
//! previous table (whole clusters, runs of occupied buckets, so the clusters still there keep
//! their probe runs intact), and lookups, replacements and removals look in both tables until
//! it is empty (the incremental rehashing of Redis's dictionaries, here by clusters because
//! linear probing has no chains). The new table is zeroed memory (a free bucket is all zeros),
//! which the kernel maps in as it is first touched. Moving every entry in the insert that
//! grows the table would hold the graph's write lock for time proportional to the table (tens
//! to hundreds of milliseconds at millions of values); this way every insert moves a bounded
//! amount, and only the one that ends a growth pays for freeing the previous table (about
//! 1 ms per million buckets; `examples/growth.rs index-growth` measures both). Bulk loads
//! ([`ValueIndex::try_reserve`]) still move every entry at once.

/// [`ValueIndex::try_reserve`] could not allocate the larger table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not enough memory for a larger index table")]
pub struct ReserveError;

/// One bucket: a tag and the carrier's slot, stored inverted (`code = !slot`) so that the
/// all-zero bucket is the free one and a new table can come from zeroed memory, which the
/// kernel maps in lazily instead of the growth writing every bucket under the write lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    tag: u32,
    code: u32,
}

// SAFETY: two `u32`s; the all-zero value is a valid `Entry` (the free bucket, `FREE`).
unsafe impl bytemuck::Zeroable for Entry {}

/// The one slot no row has (a graph holds at most `u32::MAX - 1` rows): its code would be 0.
const EMPTY: u32 = u32::MAX;

/// A free bucket.
const FREE: Entry = Entry { tag: 0, code: 0 };

impl Entry {
    /// The bucket content for `slot` (never [`EMPTY`]) under `tag`.
    fn new(tag: u32, slot: u32) -> Entry {
        Entry { tag, code: !slot }
    }

    /// The carrier's slot (meaningless in a free bucket).
    fn slot(self) -> u32 {
        !self.code
    }

    /// Whether the bucket is free (all zeros).
    fn is_free(self) -> bool {
        self.code == 0
    }
}

/// Fewest buckets of a table that has any.
const MIN_BUCKETS: usize = 8;

/// Buckets of the old table that each insert moves into the new one while a growth is under
/// way (whole clusters, so possibly a few more). With `B` buckets in the new table, the old
/// one has `B / 2`, moved after `B / 32` inserts; the next growth needs the load to go from
/// 3/8 to 3/4 of `B`, `3 B / 8` net inserts later. A growth under way waits for inserts: while
/// none come, lookups keep looking in both tables.
const MIGRATE_STEP: usize = 16;

/// One power-of-two array of buckets with linear probing (see the module docs).
#[derive(Clone, Debug)]
struct Table {
    /// A power of two of buckets (or none).
    entries: Vec<Entry>,
    /// `64 - log2(buckets)`: a hash's home bucket is `hash >> shift` (64 while there are
    /// no buckets). Tables of up to 2^32 buckets (3 billion values) have distinct homes.
    shift: u32,
}

/// A map from values (known to the index by their 64-bit hash only) to the slot of one row
/// carrying each. See the module docs.
#[derive(Clone, Debug)]
pub struct ValueIndex {
    /// The table that takes inserts.
    table: Table,
    /// Occupied buckets, in both tables.
    len: usize,
    /// While a growth is under way, the previous table, whose entries move into `table` a few
    /// clusters per insert (module docs, "Growth"); no buckets otherwise.
    old: Table,
    /// Next bucket of `old` to move: always free or the first of a cluster, so the clusters
    /// still in `old` are whole and their probe runs intact.
    cursor: usize,
    /// Buckets of `old` not visited yet; the growth is done at 0.
    left: usize,
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

impl Table {
    const NONE: Table = Table {
        entries: Vec::new(),
        shift: 64,
    };

    /// A table over `entries`: a power of two of free buckets.
    fn with_entries(entries: Vec<Entry>) -> Table {
        let shift = 64 - entries.len().trailing_zeros();
        Table { entries, shift }
    }

    fn mask(&self) -> usize {
        self.entries.len().wrapping_sub(1)
    }

    /// Home bucket of `tag`.
    fn home(&self, tag: u32) -> usize {
        // `shift` is 32..=64 for tables up to 2^32 buckets; (tag << 32) >> shift is the tag's
        // top `64 - shift` bits.
        ((u64::from(tag) << 32).checked_shr(self.shift)).unwrap_or(0) as usize
    }

    /// Walks `tag`'s probe run from its home bucket: `Ok` with the first bucket whose entry
    /// satisfies `hit`, else `Err` with the free bucket that ends the run (where an entry with
    /// this tag goes). `Err(0)` when there are no buckets: writers grow the table first.
    fn probe(&self, tag: u32, mut hit: impl FnMut(Entry) -> bool) -> Result<usize, usize> {
        if self.entries.is_empty() {
            return Err(0);
        }
        let mask = self.mask();
        let mut i = self.home(tag);
        loop {
            let entry = self.entries[i];
            if entry.is_free() {
                return Err(i);
            }
            if hit(entry) {
                return Ok(i);
            }
            i = (i + 1) & mask;
        }
    }

    /// Puts `entry` in the free bucket that ends its probe run (room is guaranteed by the
    /// load).
    fn place(&mut self, entry: Entry) {
        if let Err(free) = self.probe(entry.tag, |_| false) {
            self.entries[free] = entry;
        }
    }

    /// Empties bucket `hole`; the entries after it in its probe run move back where their
    /// home allows (Knuth's algorithm R: no tombstone is left).
    fn remove_at(&mut self, mut hole: usize) {
        let mask = self.mask();
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let entry = self.entries[j];
            if entry.is_free() {
                break;
            }
            let home = self.home(entry.tag);
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
    }
}

impl ValueIndex {
    /// An empty index (no allocation).
    pub fn new() -> Self {
        ValueIndex {
            table: Table::NONE,
            len: 0,
            old: Table::NONE,
            cursor: 0,
            left: 0,
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

    /// Buckets allocated (a power of two, or 0): 8 bytes each. While a growth is under way
    /// the previous table's buckets are allocated too, and not counted here.
    pub fn buckets(&self) -> usize {
        self.table.entries.len()
    }

    /// Whether a growth is under way: some entries are still in the previous table.
    pub fn is_growing(&self) -> bool {
        self.left > 0
    }

    /// The first slot whose entry has `hash`'s tag and for which `is_match` (which reads the
    /// row and compares its value) holds; `None` when the value is not indexed.
    pub fn find(&self, hash: u64, mut is_match: impl FnMut(u32) -> bool) -> Option<u32> {
        let tag = tag_of(hash);
        let mut hit = |e: Entry| e.tag == tag && is_match(e.slot());
        if let Ok(i) = self.table.probe(tag, &mut hit) {
            return Some(self.table.entries[i].slot());
        }
        if self.is_growing()
            && let Ok(i) = self.old.probe(tag, &mut hit)
        {
            return Some(self.old.entries[i].slot());
        }
        None
    }

    /// Where the entry (`hash`, `slot`) is, if anywhere: whether in the previous table (during
    /// a growth), and the bucket.
    fn locate(&self, hash: u64, slot: u32) -> Option<(bool, usize)> {
        let tag = tag_of(hash);
        let entry = Entry::new(tag, slot);
        if let Ok(i) = self.table.probe(tag, |e| e == entry) {
            return Some((false, i));
        }
        if self.is_growing()
            && let Ok(i) = self.old.probe(tag, |e| e == entry)
        {
            return Some((true, i));
        }
        None
    }

    /// The table that [`ValueIndex::locate`] named.
    fn table_mut(&mut self, in_old: bool) -> &mut Table {
        if in_old {
            &mut self.old
        } else {
            &mut self.table
        }
    }

    /// Whether `slot` is indexed under `hash`.
    pub fn contains(&self, hash: u64, slot: u32) -> bool {
        self.locate(hash, slot).is_some()
    }

    /// Indexes `slot` under `hash` without looking for the value first: the caller knows it is
    /// not indexed yet (a second entry of one value would make lookups answer either).
    /// Grows the table (doubling) when it would pass 3/4 load.
    pub fn insert_unique(&mut self, hash: u64, slot: u32) {
        self.insert_if_absent(hash, slot, |_| false);
    }

    /// Indexes `slot` under `hash` unless `is_match` finds the value indexed already; returns
    /// whether it inserted. One walk of the probe run does both: the free bucket that ends it
    /// is where the entry goes. Starts a growth (doubling) first when one more entry would
    /// pass 3/4 load, and moves the next few clusters of a growth under way.
    pub fn insert_if_absent(
        &mut self,
        hash: u64,
        slot: u32,
        mut is_match: impl FnMut(u32) -> bool,
    ) -> bool {
        debug_assert_ne!(slot, EMPTY, "a graph has fewer than u32::MAX rows");
        if (self.len + 1) * 4 > self.table.entries.len() * 3 {
            self.grow();
        }
        self.migrate(MIGRATE_STEP);
        let tag = tag_of(hash);
        let mut hit = |e: Entry| e.tag == tag && is_match(e.slot());
        if self.is_growing() && self.old.probe(tag, &mut hit).is_ok() {
            return false;
        }
        match self.table.probe(tag, &mut hit) {
            Ok(_) => false,
            Err(free) => {
                self.table.entries[free] = Entry::new(tag, slot);
                self.len += 1;
                true
            }
        }
    }

    /// Makes `new` the carrier indexed under `hash` in place of `old`; returns whether `old`
    /// was indexed there.
    pub fn replace(&mut self, hash: u64, old: u32, new: u32) -> bool {
        match self.locate(hash, old) {
            Some((in_old, i)) => {
                let entry = &mut self.table_mut(in_old).entries[i];
                *entry = Entry::new(entry.tag, new);
                true
            }
            None => false,
        }
    }

    /// Removes the entry (`hash`, `slot`); returns whether it was there. The entries after it
    /// in its probe run move back where their home allows (no tombstone is left).
    pub fn remove(&mut self, hash: u64, slot: u32) -> bool {
        let Some((in_old, hole)) = self.locate(hash, slot) else {
            return false;
        };
        self.table_mut(in_old).remove_at(hole);
        self.len -= 1;
        true
    }

    /// Makes room for `additional` more entries without growing again (finishing a growth
    /// under way, then moving every entry at once: for bulk loads, which hold no request).
    ///
    /// The new table is zeroed memory, like a growth's: the kernel maps its pages in as they
    /// are first written, instead of this call writing every bucket once first (at 10 M
    /// contacts, 128 MiB per index that the inserts then write again).
    ///
    /// # Errors
    /// [`ReserveError`] when the allocation failed; the index is unchanged but for a finished
    /// growth.
    pub fn try_reserve(&mut self, additional: usize) -> Result<(), ReserveError> {
        self.migrate(usize::MAX);
        let buckets = buckets_for(self.len.saturating_add(additional));
        if buckets <= self.table.entries.len() {
            return Ok(());
        }
        let entries = bytemuck::allocation::try_zeroed_vec(buckets).map_err(|()| ReserveError)?;
        let old = std::mem::replace(&mut self.table, Table::with_entries(entries));
        for entry in old.entries.into_iter().filter(|e| !e.is_free()) {
            self.table.place(entry);
        }
        Ok(())
    }

    /// Starts a growth: a table of twice the buckets takes inserts, and the current one
    /// becomes `old`, to be moved a few clusters per insert ([`ValueIndex::migrate`]).
    fn grow(&mut self) {
        // Done long before by the step's arithmetic; kept for any caller that grows early.
        self.migrate(usize::MAX);
        let buckets = buckets_for(self.len + 1).max(self.table.entries.len() * 2);
        let old = std::mem::replace(
            &mut self.table,
            Table::with_entries(bytemuck::zeroed_vec(buckets)),
        );
        // At a load of at most 3/4 there is a free bucket; the move starts there, so every
        // cluster is met from its first bucket.
        if let Some(free) = old.entries.iter().position(|e| e.is_free()) {
            self.cursor = free;
            self.left = old.entries.len();
            self.old = old;
        }
    }

    /// Moves entries of `old` into the table, whole clusters at a time, until at least
    /// `budget` buckets of `old` were visited or none are left. Homes follow from the tags, so
    /// no value is read. Each cluster leaves `old` whole, so the probe runs of those still
    /// there stay intact for lookups.
    fn migrate(&mut self, budget: usize) {
        let mask = self.old.mask();
        let mut visited = 0;
        while self.left > 0 && visited < budget {
            // The cursor is at a free bucket or the first of a cluster: visit through the
            // next free bucket.
            while self.left > 0 {
                let i = self.cursor;
                let entry = self.old.entries[i];
                self.cursor = (i + 1) & mask;
                self.left -= 1;
                visited += 1;
                if entry.is_free() {
                    break;
                }
                self.old.entries[i] = FREE;
                self.table.place(entry);
            }
        }
        if self.left == 0 && !self.old.entries.is_empty() {
            // Freeing the emptied table still costs the caller about 0.9 ms per million buckets
            // (the kernel unmapping it); a thread to free it on gained nothing on one core.
            self.old = Table::NONE;
        }
    }

    /// Every indexed slot, in bucket order (the table's, then the previous one's during a
    /// growth).
    pub fn slots(&self) -> impl Iterator<Item = u32> + '_ {
        self.table
            .entries
            .iter()
            .chain(&self.old.entries)
            .filter(|e| !e.is_free())
            .map(|e| e.slot())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn growth_moves_a_few_clusters_per_insert_and_serves_from_both_tables() {
        // Well-spread hashes: short clusters, as real values give.
        let spread = |slot: u32| u64::from(slot).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut index = ValueIndex::new();
        let mut slot = 0u32;
        while index.buckets() < 1024 || !index.is_growing() {
            index.insert_unique(spread(slot), slot);
            slot += 1;
        }
        // The insert that started the growth moved only its first clusters: most entries are
        // still in the previous table, and every one is found.
        let buckets = index.buckets();
        assert_eq!(buckets, 1024);
        assert!(index.old.entries.iter().filter(|e| !e.is_free()).count() > 300);
        for s in 0..slot {
            assert_eq!(index.find(spread(s), |c| c == s), Some(s));
        }
        // Changes while both tables hold entries: remove and replace entries of each table.
        let in_old = |index: &ValueIndex, s: u32| index.old.entries.iter().any(|e| e.slot() == s);
        let old_one = (0..slot)
            .rev()
            .find(|&s| in_old(&index, s))
            .expect("an old entry");
        let new_one = slot - 1;
        assert!(!in_old(&index, new_one));
        assert!(index.remove(spread(old_one), old_one));
        assert!(index.replace(spread(new_one), new_one, 60_000));
        assert!(!index.contains(spread(old_one), old_one));
        assert_eq!(index.find(spread(new_one), |c| c == 60_000), Some(60_000));
        // A value still in the previous table is not indexed twice.
        let still_old = (0..slot)
            .find(|&s| in_old(&index, s))
            .expect("an old entry");
        assert!(!index.insert_if_absent(spread(still_old), 60_001, |c| c == still_old));
        // The growth ends within buckets / 16 inserts (whole clusters may add a few buckets).
        let mut inserts = 0;
        while index.is_growing() {
            index.insert_unique(spread(slot), slot);
            slot += 1;
            inserts += 1;
        }
        assert!(inserts <= buckets / 2 / MIGRATE_STEP, "{inserts} inserts");
        assert!(index.old.entries.is_empty());
        assert_eq!(index.len(), index.slots().count());
        for s in (0..slot).filter(|&s| s != old_one && s != new_one) {
            let found = index.find(spread(s), |c| c == s);
            assert_eq!(found, Some(s), "slot {s}");
        }
    }
}
