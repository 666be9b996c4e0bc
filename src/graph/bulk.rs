//! Bulk loading (recovery, snapshot loading): indexes built once at the end, links joined in
//! batches.

use std::hash::BuildHasher;

use super::value_index::ValueIndex;
use super::{IdentityGraph, ValueOf};

/// Unions a bulk load queues before making them (see [`IdentityGraph::settle_links`]): a bound
/// on the queue, 16 KiB of `(row, link)` slot pairs.
const PENDING_LINKS: usize = 2048;

impl IdentityGraph {
    /// Recovery mode: until [`IdentityGraph::finish_bulk_load`], applied events leave the
    /// email and phone indexes alone (nothing but `plan` and the answers read them, and neither
    /// runs during recovery). Loading a snapshot and replaying the log then cost no random
    /// hash-table probe per value, which dominates start-up otherwise. Inserted rows are also
    /// joined to the rows they link to in batches (see `settle_links`); every other event, a
    /// snapshot capture and `finish_bulk_load` first make the pending unions, so only the
    /// identity counters lag until then. Reads are meant for after `finish_bulk_load`.
    pub fn begin_bulk_load(&mut self) {
        self.bulk = true;
    }

    /// Builds both indexes from the rows, in parallel (one thread per index): each value is
    /// indexed at its oldest live carrier (smallest id), which is where incremental indexing
    /// leaves it too, blocked values excepted. Entries are inserted nearly in bucket order (binned
    /// by the hash's top bits, which pick the home bucket), so the table is filled front to
    /// back instead of at random.
    /// Does nothing outside a bulk load.
    pub fn finish_bulk_load(&mut self) {
        if !self.bulk {
            return;
        }
        self.settle_links();
        self.bulk = false;
        let this = &*self;
        let (by_email, by_phone) = std::thread::scope(|scope| {
            let emails = scope.spawn(|| this.build_index(|n| n.email));
            let phones = this.build_index(|n| n.phone);
            // The thread cannot panic short of a bug; its index is then built here instead.
            let emails = emails
                .join()
                .unwrap_or_else(|_| this.build_index(|n| n.email));
            (emails, phones)
        });
        self.by_email = by_email;
        self.by_phone = by_phone;
    }

    /// Queues the union of `slot`, a row inserted during a bulk load, with the row `link` it
    /// joins; the queue is made in batches of [`PENDING_LINKS`] by
    /// [`IdentityGraph::settle_links`].
    pub(super) fn defer_link(&mut self, slot: u32, link: u32) {
        self.pending_links.push((slot, link));
        if self.pending_links.len() >= PENDING_LINKS {
            self.settle_links();
        }
    }

    /// Makes the unions a bulk load deferred ([`IdentityGraph::apply_insert`] queues them),
    /// in their original order, so the partition is exactly what applying them one by one
    /// gives.
    pub(super) fn settle_links(&mut self) {
        if self.pending_links.is_empty() {
            return;
        }
        let mut pending = std::mem::take(&mut self.pending_links);
        for &(slot, link) in &pending {
            let root = self.union(slot, link);
            debug_assert_eq!(self.check_touched_identity(root), Ok(()));
        }
        pending.clear();
        self.pending_links = pending;
    }

    /// The index of one kind of value (`field` reads it from a row), built from the rows: each
    /// value at its oldest live carrier; deleted, erased and blocked values left out.
    fn build_index(&self, field: ValueOf) -> ValueIndex {
        let (nodes, values, hasher) = (&self.nodes, &self.values, &self.hasher);
        let checks_blocked = self.blocks_any();
        let bytes_of = |s: u32| field(&nodes[s as usize]).map_or(&[][..], |r| values.bytes(r));
        // (slot, value) of every indexable value, in slot order: one sequential pass over the
        // rows, run twice below (hashing again costs less than a buffer of hashes).
        let indexable = || {
            nodes.iter().enumerate().filter_map(move |(s, n)| {
                let value = field(n)?;
                let skip = !n.live()
                    || self.is_erased(s as u32)
                    || (checks_blocked && self.blocked(values.get(value)));
                (!skip).then_some((s as u32, value))
            })
        };
        // One `u64` per value: the index's 32-bit tag of its hash (the top half, all the index
        // reads of a hash) above its slot. Sorting these sorts by (tag, slot), in 8 bytes
        // instead of a 16-byte (hash, slot) pair: at 10 M contacts 80 MB of fresh memory per
        // index instead of 160, and first touches of fresh memory (page faults) are a large
        // part of what a start-up costs.
        const SLOT_BITS: u64 = 0xFFFF_FFFF;
        let keyed = || {
            indexable().map(|(s, value)| {
                (hasher.hash_one(values.bytes(value)) & !SLOT_BITS) | u64::from(s)
            })
        };
        let tag_of = |key: u64| key >> 32;
        let slot_of = |key: u64| (key & SLOT_BITS) as u32;
        // Counting sort by the hash's top bits (a value's home bucket in the index is the
        // hash's top bits too), then each bin by (tag, slot): inserts then fill the table
        // front to back, one cache-sized stretch of it per bin, and the carriers of one value
        // become neighbours, oldest first. Bins are few enough that the scatter's write
        // positions stay in the cache and the TLB: with 2^16 bins every write missed; 2^8
        // measured best at 10M contacts.
        const BIN_BITS: u32 = 8;
        const BINS: usize = 1 << BIN_BITS;
        let bin_of = |key: u64| (key >> (64 - BIN_BITS)) as usize;
        let mut starts = vec![0usize; BINS + 1];
        for key in keyed() {
            starts[bin_of(key) + 1] += 1;
        }
        for b in 0..BINS {
            starts[b + 1] += starts[b];
        }
        let bounds = starts.clone();
        let mut ordered = vec![0u64; starts[BINS]];
        for key in keyed() {
            let bin = &mut starts[bin_of(key)];
            if let Some(entry) = ordered.get_mut(*bin) {
                *entry = key;
            }
            *bin += 1;
        }
        for bin in bounds.windows(2) {
            ordered[bin[0]..bin[1]].sort_unstable();
        }
        // Keep the oldest carrier of each value: an entry is dropped when an entry kept before
        // it in its run of equal tags has the same bytes. Every kept entry is then the only
        // one of its value, so it is inserted without comparing anything. Only repeated values
        // (and tag collisions, about 12 000 pairs among 10 M values) make runs longer than
        // one, and only they read values.
        let mut index = ValueIndex::new();
        let _ = index.try_reserve(ordered.len());
        // The slot of a dropped entry: no row has slot `u32::MAX` (a graph has fewer rows).
        const NOT_KEPT: u32 = u32::MAX;
        let mut run_start = 0;
        for i in 0..ordered.len() {
            let key = ordered[i];
            let (tag, slot) = (tag_of(key), slot_of(key));
            if tag_of(ordered[run_start]) != tag {
                run_start = i;
            }
            let duplicate = run_start < i && {
                let bytes = bytes_of(slot);
                ordered[run_start..i]
                    .iter()
                    .map(|&kept| slot_of(kept))
                    .any(|kept| kept != NOT_KEPT && bytes_of(kept) == bytes)
            };
            if duplicate {
                // Later entries of the run need not compare against it.
                ordered[i] |= u64::from(NOT_KEPT);
            } else {
                index.insert_unique(key & !SLOT_BITS, slot);
            }
        }
        index
    }

    /// Makes room for `additional` more contacts (rows, links and both indexes) at once, so a
    /// snapshot load or an import does not rehash the indexes again and again as they grow.
    ///
    /// A hint only: an allocation that fails is skipped (the structures then grow as usual).
    pub fn reserve(&mut self, additional: usize) {
        if self.nodes.try_reserve(additional).is_err()
            || self.links.try_reserve(additional).is_err()
            || self.bulk
        {
            // During a bulk load the indexes are built at the end, at their final size.
            return;
        }
        let _ = self.by_email.try_reserve(additional);
        let _ = self.by_phone.try_reserve(additional);
    }
}
