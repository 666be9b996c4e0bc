//! The identity graph: every contact row, grouped into identities (docs/behaviour.md §2–3).
//!
//! The graph is pure: no I/O, no clock, no locks (the store wraps it in a lock, a log and
//! snapshots). [`IdentityGraph::plan`] and [`IdentityGraph::decide`] work out what an `/identify`
//! request does and return the [`Event`](crate::event::Event)s it would cause without changing
//! anything; [`IdentityGraph::apply`] replays one event and is the only code that changes state.
//! `/identify`, recovery, import and snapshot loading all go through `apply`, so replaying a log
//! rebuilds exactly the graph that wrote it.
//!
//! # Representation
//!
//! **Slots.** Contacts live in slots `0..n` in id order (ids only ever grow), in two parallel
//! vectors: `nodes` (the row: id, references to its email and phone, timestamps; 48 bytes) and
//! `links` (the union-find and ring links below; 16 bytes). `id → slot` is a direct index for
//! the dense ids the service assigns (slot = id − 1) and a binary search for sparse imported
//! ids. Everything inside the graph speaks slots (`u32`); the public API speaks contact ids.
//!
//! **Union-find** (`union_find.rs`). An identity is a tree of `parent` links over its slots,
//! and its root stands for the identity. Union by size keeps the trees shallow and path
//! halving on the write path (Tarjan & van Leeuwen, 1984) flattens them further, so finding a
//! root costs O(α(n)) amortized; reads walk without compressing, so they can share the graph.
//! Every root carries its identity's `size` and `primary`. The primary is metadata of the
//! root, not the root itself, so a merge costs O(α(n)) whatever the age order says.
//!
//! **The primary.** The primary of an identity is always its best member by the key
//! `(deleted, createdAt, id)`: the oldest live contact, or the oldest contact when none is
//! live (docs/behaviour.md §2). `/identify` keeps this true by construction (new rows are the
//! youngest, a merge keeps the older primary), a deletion elects the next best member, and
//! import computes it, so snapshots need not store precedence.
//!
//! **Rings.** The members of an identity form a circular singly linked list through `next`; a
//! merge splices two rings in O(1). Answers walk the ring and sort its live members by age
//! (`view.rs`).
//!
//! **Indexes.** `by_email` and `by_phone` map a value to one live contact carrying it (the
//! oldest). A value is carried by one identity only (a request with a known value always lands
//! in its identity), so "does this identity have `e`" is "is `e` indexed". The exception is a
//! value that was blocked when some rows were written: blocked values are stored but never
//! indexed (docs/behaviour.md §3.6), and if the block is lifted later the value's first
//! carrier is indexed. Each index is a [`ValueIndex`]: 8-byte buckets
//! holding a tag of the value's hash and the slot, so a probe reads one cache line, and only
//! the matching candidate's row and bytes.
//!
//! **Arena.** Emails and phones live in a paged [`Arena`]; a row refers to each
//! value by an 8-byte [`StrRef`] instead of owning a string.
//!
//! **History and erasure.** Merges, deletions and refusals are kept as
//! [`HistoryRecord`]s, chained per contact (`history.rs`).
//! Erased contacts keep their slot (slots stay in id order) but are unknown to every lookup,
//! listing and snapshot (docs/behaviour.md §6.7).
//!
//! # Files
//! - `plan.rs`: what `/identify` does (§3, §3.6) and lookups by value (§6.3);
//! - `apply.rs`: applying events: inserts, merges, deletions, erasure, refusals;
//! - `removal.rs`: what a deletion (§6.6) or an erasure (§6.7) finds and the event it applies;
//! - `union_find.rs`: roots, unions and member rings;
//! - `bulk.rs`: recovery mode, where the indexes are built once at the end;
//! - `capture.rs`: snapshot entries, and chunked copy-on-write captures of them;
//! - `history.rs`: history records and `GET /identities/{id}/history` (§6.5);
//! - `links.rs`: the links of an identity and their reasons (§10);
//! - `split.rs`: splits and run-time blocked values (§10);
//! - `sizes.rs`: the number of identities of each size (the count and the largest);
//! - `view.rs`: answers and rows as readers see them;
//! - `invariants.rs`: the consistency checks run after every mutation in debug builds;
//! - [`arena`], [`value_index`], [`blocklist`]: the storage and configuration above.

use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::DefaultHashBuilder;

use crate::contact::{ContactId, Email, Phone, Timestamp};
use crate::event::{BlockedValues, HistoryRecord};

pub mod arena;
pub mod blocklist;
pub mod value_index;

mod apply;
mod bulk;
mod capture;
mod history;
mod invariants;
mod links;
mod plan;
mod removal;
mod sizes;
mod split;
mod union_find;
mod view;

use arena::{Arena, StrRef};
pub use blocklist::BlockList;
use capture::Capture;
pub use capture::{CaptureBuffer, CaptureCursor};
pub use history::HistoryEntry;
pub use links::{Link, LinkReason};
pub use plan::{Decision, IdentifyRequest, Lookup};
pub use removal::{Deletion, Erasure};
use sizes::IdentitySizes;
pub use split::{SplitOutcome, SplitReport};
use value_index::ValueIndex;
pub use view::{Identity, IdentityView};

/// Configuration of the over-merge guards (docs/behaviour.md §3.6). The default is §3 exactly:
/// no blocked value, no cap.
#[derive(Clone, Debug, Default)]
pub struct GraphOptions {
    /// Values stored on rows but never indexed, so they never match (see [`BlockList`]).
    pub blocked: Arc<BlockList>,
    /// The most contacts (deleted ones included) an identity may reach through `/identify`: a
    /// merge or new secondary that would exceed it is refused
    /// ([`Event::MergeRefused`](crate::event::Event::MergeRefused)).
    pub max_identity_size: Option<u32>,
}

/// Names one identity at one moment: its union-find root, valid until the next mutation (after
/// a merge the merged identity has the key of one of the two). The store uses it to remember
/// the last LSN that changed each identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IdentityKey(u32);

/// Why an event cannot be applied. Events from `/identify` always apply; these errors mean a log
/// record, snapshot or import plan is inconsistent with the state it is applied to.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// The event refers to a contact id the graph does not have.
    #[error("contact {0} does not exist")]
    UnknownContact(ContactId),
    /// A new contact's id is zero or not larger than every id already used.
    #[error("contact id {id} is not larger than the ids already used (next is {next})")]
    IdNotIncreasing {
        /// The offending id.
        id: ContactId,
        /// The smallest id that would have been accepted.
        next: ContactId,
    },
    /// A merge names contacts that are not the primaries of two distinct identities in the
    /// right age order.
    #[error("merge of {winner} and {loser} does not match the graph")]
    BadMerge {
        /// The claimed winner.
        winner: ContactId,
        /// The claimed loser.
        loser: ContactId,
    },
    /// A contact carries an empty value or one longer than 255 bytes (only a damaged or
    /// hand-made log or snapshot can: docs/behaviour.md §4 makes empty values absent and caps
    /// emails at 254 bytes and phones at 32 characters).
    #[error("contact {0} carries an empty value or one longer than 255 bytes")]
    InvalidValue(ContactId),
    /// A deletion names a contact that is already deleted.
    #[error("contact {0} is already deleted")]
    AlreadyDeleted(ContactId),
    /// The graph holds `u32::MAX - 1` contacts, the most a slot index can address, or a new
    /// contact's id is `u64::MAX`, after which no id is left to assign.
    #[error("the graph is full")]
    Full,
}

/// Root metadata and links of one slot; `size` and `primary` are meaningful at roots only.
#[derive(Clone, Copy, Debug)]
struct Links {
    parent: u32,
    next: u32,
    size: u32,
    primary: u32,
}

/// One row, 48 bytes: its values live in the graph's [`Arena`].
#[derive(Clone, Copy, Debug)]
struct Node {
    id: ContactId,
    email: Option<StrRef>,
    phone: Option<StrRef>,
    created_at: Timestamp,
    updated_at: Timestamp,
    /// `deletedAt`, or [`NOT_DELETED`] (saves the 8 bytes of an `Option`).
    deleted_at: Timestamp,
}

/// Reads one kind of value (the email or the phone) from a row.
type ValueOf = fn(&Node) -> Option<StrRef>;

/// `deletedAt` of a live row (no parsed or generated timestamp is this old).
const NOT_DELETED: Timestamp = Timestamp(i64::MIN);

impl Node {
    fn live(&self) -> bool {
        self.deleted_at == NOT_DELETED
    }

    fn deleted_at(&self) -> Option<Timestamp> {
        (!self.live()).then_some(self.deleted_at)
    }

    /// Primary-election key: live before deleted, then age order `(createdAt, id)`.
    fn key(&self) -> (bool, Timestamp, ContactId) {
        (!self.live(), self.created_at, self.id)
    }
}

/// Identities of contacts: union-find plus value indexes. See the module docs.
#[derive(Clone)]
pub struct IdentityGraph {
    nodes: Vec<Node>,
    /// Every email and phone of `nodes`.
    values: Arena,
    links: Vec<Links>,
    by_email: ValueIndex,
    by_phone: ValueIndex,
    hasher: DefaultHashBuilder,
    next_id: ContactId,
    max_created_at: Timestamp,
    /// Identities by size: their number and the largest, kept exact by every change.
    sizes: IdentitySizes,
    options: GraphOptions,
    /// Merges, deletions, refusals and splits in the order applied (see [`HistoryRecord`]).
    history: Vec<HistoryRecord>,
    /// For each record of `history`, per contact it names (up to four, in the order of
    /// [`HistoryRecord::contacts`]): the previous record naming that contact, as index + 1 (0:
    /// none). A chain per contact, no allocation per record.
    history_prev: Vec<[u32; 4]>,
    /// Per slot: the newest record naming that contact, as index + 1 (0: none); grown lazily.
    history_head: Vec<u32>,
    /// Slots of erased contacts: unknown to every lookup, listing and snapshot.
    erased: hashbrown::HashSet<u32>,
    /// Values blocked by splits and the admin routes (docs/behaviour.md §10), sorted.
    run_time_blocks: BlockedValues,
    /// Copy-on-write pre-images while a snapshot is encoded in chunks (see
    /// [`IdentityGraph::begin_capture`]).
    capture: Option<Box<Capture>>,
    /// While set, changes leave the indexes alone and [`IdentityGraph::finish_bulk_load`]
    /// builds them once (recovery).
    bulk: bool,
    /// During a bulk load: unions of inserted rows with the rows they link to, `(row, link)`
    /// slots, not made yet. Made in batches by [`IdentityGraph::settle_links`].
    pending_links: Vec<(u32, u32)>,
}

impl Default for IdentityGraph {
    fn default() -> Self {
        IdentityGraph::new()
    }
}

/// The most rows a graph holds: slots are `u32`, and `u32::MAX` means "no slot" in the value
/// index and the capture cursor.
const MAX_SLOTS: usize = (u32::MAX - 1) as usize;

impl IdentityGraph {
    /// An empty graph; the first contact created by `/identify` gets id 1.
    pub fn new() -> Self {
        IdentityGraph::with_options(GraphOptions::default())
    }

    /// An empty graph with over-merge guards. The options must be set before any contact is
    /// applied: they decide which values get indexed.
    pub fn with_options(options: GraphOptions) -> Self {
        IdentityGraph {
            options,
            history: Vec::new(),
            history_prev: Vec::new(),
            history_head: Vec::new(),
            erased: hashbrown::HashSet::new(),
            run_time_blocks: BlockedValues::default(),
            capture: None,
            bulk: false,
            pending_links: Vec::new(),
            values: Arena::default(),
            nodes: Vec::new(),
            links: Vec::new(),
            by_email: ValueIndex::new(),
            by_phone: ValueIndex::new(),
            hasher: DefaultHashBuilder::default(),
            next_id: 1,
            max_created_at: Timestamp(i64::MIN),
            sizes: IdentitySizes::default(),
        }
    }

    /// Number of slots: contacts ever stored, erased ones included (the size of a
    /// [`CaptureBuffer`]).
    pub fn slots(&self) -> usize {
        self.nodes.len()
    }

    /// Number of contacts (rows), deleted ones included, erased ones not.
    pub fn len(&self) -> usize {
        self.nodes.len() - self.erased.len()
    }

    /// The over-merge guard configuration.
    pub fn options(&self) -> &GraphOptions {
        &self.options
    }

    /// Whether `value` is blocked for matching: by the configured list or at run time
    /// (docs/behaviour.md §3.6, §10). Either kind of value is checked against both lists, as
    /// the configured list does.
    fn blocked(&self, value: &str) -> bool {
        self.options.blocked.blocks(value) || self.blocked_at_run_time(value)
    }

    /// Whether any value is blocked (the configured list or run-time blocks).
    fn blocks_any(&self) -> bool {
        !self.options.blocked.is_empty() || !self.run_time_blocks.is_empty()
    }

    /// True when the graph has no contact.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of identities (union-find roots).
    pub fn identity_count(&self) -> usize {
        self.sizes.identities()
    }

    /// Number of contacts (deleted ones included) in the largest identity; 0 for an empty
    /// graph. O(1) for a graph whose identities are all below 64 contacts, else O(log of the
    /// number of distinct larger sizes): kept by every insert, union, split and erasure.
    pub fn largest_identity(&self) -> usize {
        self.sizes.largest() as usize
    }

    /// The size (contacts, deleted ones included) of every identity, in no particular order.
    /// O(slots).
    pub fn identity_sizes(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.links.len() as u32)
            .filter(|&s| self.links[s as usize].parent == s && !self.is_erased(s))
            .map(|s| self.links[s as usize].size as usize)
    }

    /// The id the next contact created by `/identify` will get.
    pub fn next_id(&self) -> ContactId {
        self.next_id
    }

    /// Raises the next id to at least `next` (snapshots record it so ids are never reused).
    pub fn reserve_ids_below(&mut self, next: ContactId) {
        self.next_id = self.next_id.max(next);
    }

    /// The largest `createdAt` recorded; new rows get `max(this, now)` (docs/behaviour.md §2).
    pub fn max_created_at(&self) -> Timestamp {
        self.max_created_at
    }

    /// The timestamp a row created at wall-clock `now` gets: the clock never goes backwards
    /// (docs/behaviour.md §2).
    pub fn clock(&self, now: Timestamp) -> Timestamp {
        now.max(self.max_created_at)
    }

    /// The index hash of a value: of its bytes, so that rehashing a stored value reads the
    /// arena without re-checking UTF-8 (every stored value came from a `&str`).
    fn hash(&self, value: &str) -> u64 {
        self.hasher.hash_one(value.as_bytes())
    }

    fn lookup_email(&self, email: &str) -> Option<u32> {
        self.find_value(&self.by_email, |n| n.email, email, self.hash(email))
    }

    fn lookup_phone(&self, phone: &str) -> Option<u32> {
        self.find_value(&self.by_phone, |n| n.phone, phone, self.hash(phone))
    }

    /// The slot `index` holds for `value` (hash `hash`), confirmed by the row's `field`: one
    /// bucket read, then the row and the value's bytes of the candidate whose tag matches.
    fn find_value(
        &self,
        index: &ValueIndex,
        field: ValueOf,
        value: &str,
        hash: u64,
    ) -> Option<u32> {
        let (nodes, values) = (&self.nodes, &self.values);
        index.find(hash, |s| {
            field(&nodes[s as usize]).is_some_and(|r| values.bytes(r) == value.as_bytes())
        })
    }

    fn text(&self, value: Option<StrRef>) -> Option<&str> {
        value.map(|r| self.values.get(r))
    }

    fn email_of(&self, node: &Node) -> Option<Email> {
        self.text(node.email).map(Email::from_stored)
    }

    fn phone_of(&self, node: &Node) -> Option<Phone> {
        self.text(node.phone).map(Phone::from_stored)
    }

    /// Slot of contact `id`; `None` for an unknown or erased id.
    fn slot_of(&self, id: ContactId) -> Option<u32> {
        let slot = self.raw_slot_of(id)?;
        (!self.is_erased(slot)).then_some(slot)
    }

    /// Whether the row ids are exactly `1..=len` (slot = id - 1): true when the last row's id
    /// is the row count, since ids are positive and strictly increasing. Reads only the last
    /// row, which stays cached.
    fn ids_are_dense(&self) -> bool {
        let len = self.nodes.len() as u64;
        self.nodes.last().is_some_and(|n| n.id == len)
    }

    /// Contact id of `slot`: `slot + 1` without reading the (likely uncached) row when ids are
    /// dense, else the row's id.
    fn id_of(&self, slot: u32) -> ContactId {
        if self.ids_are_dense() {
            u64::from(slot) + 1
        } else {
            self.nodes[slot as usize].id
        }
    }

    /// Slot of contact `id`, erased ones included.
    fn raw_slot_of(&self, id: ContactId) -> Option<u32> {
        // Ids assigned by the service are dense, so slot = id - 1 is the usual answer. When the
        // last row's id is the row count, ids (positive, strictly increasing) are exactly
        // 1..=len: the answer needs no read of the (likely uncached) row.
        let guess = id.wrapping_sub(1);
        if guess < self.nodes.len() as u64 && self.ids_are_dense() {
            return Some(guess as u32);
        }
        if guess < self.nodes.len() as u64 && self.nodes[guess as usize].id == id {
            return Some(guess as u32);
        }
        self.nodes
            .binary_search_by_key(&id, |n| n.id)
            .ok()
            .map(|s| s as u32)
    }

    fn is_erased(&self, slot: u32) -> bool {
        !self.erased.is_empty() && self.erased.contains(&slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, NewContact};

    #[test]
    fn find_reads_ids_from_rows_when_they_are_not_dense() {
        let insert = |g: &mut IdentityGraph, id: ContactId, link: Option<ContactId>| {
            g.apply(&Event::ContactInserted(NewContact {
                id,
                email: Email::parse(&format!("c{id}@example.com")).unwrap(),
                phone: None,
                created_at: Timestamp(id as i64),
                updated_at: Timestamp(id as i64),
                deleted_at: None,
                link,
            }))
            .unwrap();
        };
        // Imported ids 10, 20, 30: slot = id - 1 does not hold, nor does id = slot + 1.
        let mut g = IdentityGraph::new();
        insert(&mut g, 10, None);
        insert(&mut g, 20, Some(10));
        insert(&mut g, 30, None);
        assert_eq!(g.find(10), Some(10));
        assert_eq!(g.find(20), Some(10));
        assert_eq!(g.find(30), Some(30));
        for unknown in [0, 1, 2, 3, 15, 31, u64::MAX] {
            assert_eq!(g.find(unknown), None, "find({unknown})");
        }
        // Dense ids 1..=3: the shortcut applies.
        let mut g = IdentityGraph::new();
        insert(&mut g, 1, None);
        insert(&mut g, 2, Some(1));
        insert(&mut g, 3, Some(2));
        assert_eq!([g.find(1), g.find(2), g.find(3)], [Some(1); 3]);
        assert_eq!(g.find(4), None);
    }

    #[test]
    fn a_row_takes_48_bytes_plus_its_values() {
        assert_eq!(std::mem::size_of::<Node>(), 48);
        assert_eq!(std::mem::size_of::<Links>(), 16);
    }
}
