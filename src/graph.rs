//! The identity graph: contacts in a union-find forest with email and phone hash indexes
//! (SPEC.md §2–3; DESIGN.md "IdentityGraph").
//!
//! The graph is pure: no I/O, no clock, no locks. [`IdentityGraph::plan`] decides what an
//! `/identify` request does and returns the [`Event`]s it would cause without changing anything;
//! [`IdentityGraph::apply`] replays one event and is the only code that changes state. Recovery,
//! import and snapshot loading all go through `apply`.
//!
//! # Representation
//! - Contacts live in slots `0..n` in id order (ids only ever grow), so `id → slot` is a direct
//!   index for the dense ids the service assigns and a binary search for sparse imported ids.
//! - Union-find over slots: `parent` pointers, union by size, path halving on the write path
//!   (reads walk without compressing, so they can share the graph). Every root carries its
//!   identity's metadata: `size` and `primary`. The primary is metadata of the root, not the
//!   root itself, so a merge is O(α) whatever the age order says.
//! - The primary of an identity is always its best member by the key
//!   `(deleted, createdAt, id)`: the oldest live contact, or the oldest contact when none is
//!   live. `/identify` keeps this true by construction (new rows are the youngest, a merge keeps
//!   the older primary) and import computes it, so snapshots need not store precedence.
//! - Each identity's members form a circular singly linked list through `next`; a merge splices
//!   two rings in O(1). Answers walk the ring and sort its live members by age.
//! - `by_email` / `by_phone` map a value to one live contact carrying it (the oldest). A value
//!   is carried by one identity only (a request with a known value always lands in its
//!   identity), so "does this identity have `e`" is "is `e` indexed". The exception is a value
//!   that was blocked when some rows were written: blocked values are stored but never indexed
//!   (issue 5), and if the block is lifted later the value's first carrier is indexed. Each
//!   index is a [`ValueIndex`]: 8-byte buckets holding a tag of the value's hash and the slot,
//!   so a probe reads one cache line, and only the matching candidate's row and bytes.
//! - Emails and phones live in a paged [`Arena`]; a row holds 8-byte references (48 bytes per
//!   row plus 16 of links).

use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::DefaultHashBuilder;
use smallvec::SmallVec;

use crate::arena::{Arena, ArenaError, StrRef};
use crate::blocklist::BlockList;
use crate::contact::{
    ContactId, ContactRow, Email, LinkPrecedence, Phone, Timestamp, ValidationError,
};
use crate::event::{
    Event, HistoryRecord, NewContact, NewContactRef, Refusal, SnapshotEntry, SnapshotItem,
};
use crate::history::HistoryEntry;
use crate::value_index::ValueIndex;

/// Configuration of the over-merge guards (issue 5). The default is SPEC.md §3 exactly: no
/// blocked value, no cap.
#[derive(Clone, Debug, Default)]
pub struct GraphOptions {
    /// Values stored on rows but never indexed, so they never match (see [`BlockList`]).
    pub blocked: Arc<BlockList>,
    /// The most contacts (deleted ones included) an identity may reach through `/identify`: a
    /// merge or new secondary that would exceed it is refused ([`Event::MergeRefused`]).
    pub max_identity_size: Option<u32>,
}

/// What a read-only lookup by email and/or phone found (`GET /identities`, issue 5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The values lead to one identity.
    Found(IdentityKey, Identity),
    /// No value is known (or every value is blocked).
    NotFound,
    /// The email and the phone belong to two identities; a lookup never merges them.
    Conflict {
        /// Primary of the identity of the email.
        email_primary: ContactId,
        /// Primary of the identity of the phone.
        phone_primary: ContactId,
    },
}

/// A validated `/identify` request: the normalized pair `(e, p)` of SPEC.md §3, at least one of
/// them present.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentifyRequest {
    email: Option<Email>,
    phone: Option<Phone>,
}

impl IdentifyRequest {
    /// Builds a request from normalized values.
    ///
    /// # Errors
    /// `missing_contact` when both are absent (SPEC.md §4: both absent → 400).
    pub fn new(email: Option<Email>, phone: Option<Phone>) -> Result<Self, ValidationError> {
        if email.is_none() && phone.is_none() {
            return Err(ValidationError::new(
                "missing_contact",
                "at least one of email and phoneNumber must be given",
                None,
            ));
        }
        Ok(IdentifyRequest { email, phone })
    }

    /// The normalized email, if given.
    pub fn email(&self) -> Option<&Email> {
        self.email.as_ref()
    }

    /// The normalized phone, if given.
    pub fn phone(&self) -> Option<&Phone> {
        self.phone.as_ref()
    }
}

/// What `/identify` does ([`IdentityGraph::decide`]). Borrows the graph it was decided on.
#[derive(Clone, Debug)]
pub enum Decision<'g> {
    /// A pure read: the identity's key and answer, read in place.
    Read(IdentityKey, IdentityView<'g>),
    /// The events to apply (never empty).
    Write(Vec<Event>),
}

/// The usable (not blocked) values of a request and the slots carrying them.
#[derive(Clone, Copy)]
struct Matches<'r> {
    email: Option<&'r Email>,
    phone: Option<&'r Phone>,
    by_email: Option<u32>,
    by_phone: Option<u32>,
}

/// Names one identity at one moment: its union-find root, valid until the next mutation (after
/// a merge the merged identity has the key of one of the two). The store uses it to remember
/// the last LSN that changed each identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IdentityKey(u32);

/// The consolidated identity answered by `/identify` (SPEC.md §3 step 5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// Id of the identity's primary contact.
    pub primary_contact_id: ContactId,
    /// Distinct emails of live contacts: the primary's first, then in age order of first carrier.
    pub emails: Vec<Email>,
    /// Distinct phones of live contacts, ordered like `emails`.
    pub phone_numbers: Vec<Phone>,
    /// Ids of every live secondary, in age order.
    pub secondary_contact_ids: Vec<ContactId>,
}

/// The parts of a consolidated identity an answer is rendered from (SPEC.md §3 step 5), in
/// answer order: implemented by the owned [`Identity`] and by the borrowed [`IdentityView`], so
/// one encoder (`http::IdentifyAnswer`) serves both.
///
/// Emails and phones are given as their UTF-8 bytes, as stored: the encoder copies a plain
/// ASCII value without reading it as text first (issue 3: the UTF-8 check of every answered
/// value cost about 50 instructions each). They are always valid UTF-8 (values are stored from
/// `&str`; an erased one is zero bytes); [`stored_text`] reads one as text.
pub trait IdentityParts {
    /// Id of the identity's primary contact.
    fn primary_contact_id(&self) -> ContactId;
    /// Distinct emails: the primary's first, then in age order of first carrier.
    fn emails(&self) -> impl Iterator<Item = &[u8]>;
    /// Distinct phones, ordered like the emails.
    fn phone_numbers(&self) -> impl Iterator<Item = &[u8]>;
    /// Ids of every live secondary, in age order.
    fn secondary_contact_ids(&self) -> impl Iterator<Item = ContactId>;
}

/// A value of [`IdentityParts`] as text; bytes that are not UTF-8 (which only a damaged arena
/// could hold) read as empty, as [`crate::arena::Arena::get`] reads them.
pub fn stored_text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or_default()
}

impl IdentityParts for Identity {
    fn primary_contact_id(&self) -> ContactId {
        self.primary_contact_id
    }

    fn emails(&self) -> impl Iterator<Item = &[u8]> {
        self.emails.iter().map(|e| e.as_str().as_bytes())
    }

    fn phone_numbers(&self) -> impl Iterator<Item = &[u8]> {
        self.phone_numbers.iter().map(|p| p.as_str().as_bytes())
    }

    fn secondary_contact_ids(&self) -> impl Iterator<Item = ContactId> {
        self.secondary_contact_ids.iter().copied()
    }
}

/// Members an [`IdentityView`] holds without allocating (issue 3: the member list was the one
/// allocation of a pure read's answer, BENCHMARKS.md sixteenth pass).
const INLINE_MEMBERS: usize = 6;

/// A consolidated identity read in place: the answer of [`Identity`] with its values borrowed
/// from the graph's arena instead of copied out, so a pure read renders its answer under the
/// shared lock with one allocation (the member list) instead of one per value and list.
/// [`IdentityView::to_identity`] copies it out.
#[derive(Clone)]
pub struct IdentityView<'g> {
    graph: &'g IdentityGraph,
    /// The primary's slot.
    primary: u32,
    /// Slots whose values are answered, in answer order: the primary first when it is live,
    /// then every other live member by (created at, id). Inline up to [`INLINE_MEMBERS`]
    /// (most identities are one or two contacts): no allocation for a typical answer.
    order: SmallVec<[u32; INLINE_MEMBERS]>,
}

impl IdentityView<'_> {
    /// The identity as an owned value, with the same contents.
    pub fn to_identity(&self) -> Identity {
        Identity {
            primary_contact_id: self.primary_contact_id(),
            emails: self
                .emails()
                .map(|bytes| Email::from_stored(stored_text(bytes)))
                .collect(),
            phone_numbers: self
                .phone_numbers()
                .map(|bytes| Phone::from_stored(stored_text(bytes)))
                .collect(),
            secondary_contact_ids: self.secondary_contact_ids().collect(),
        }
    }

    /// The distinct values `value_of` gives the members, in member order (first occurrence
    /// wins): by a scan of the earlier members for the usual handful, through a hash set for
    /// large identities. Values are compared and given as stored bytes. `value_of` is a
    /// closure type rather than a [`ValueOf`] pointer so that it is inlined into the scan.
    fn distinct(
        &self,
        value_of: impl Fn(&Node) -> Option<StrRef> + Copy,
    ) -> impl Iterator<Item = &[u8]> {
        let graph = self.graph;
        let stored = move |slot: u32| value_of(&graph.nodes[slot as usize]);
        let mut seen = (self.order.len() > 32).then(hashbrown::HashSet::new);
        self.order.iter().enumerate().filter_map(move |(i, &slot)| {
            let bytes = graph.values.bytes(stored(slot)?);
            let first = match seen.as_mut() {
                Some(seen) => seen.insert(bytes),
                None => !self.order[..i]
                    .iter()
                    .any(|&s| stored(s).is_some_and(|r| graph.values.bytes(r) == bytes)),
            };
            first.then_some(bytes)
        })
    }
}

impl IdentityParts for IdentityView<'_> {
    fn primary_contact_id(&self) -> ContactId {
        self.graph.nodes[self.primary as usize].id
    }

    fn emails(&self) -> impl Iterator<Item = &[u8]> {
        self.distinct(|node| node.email)
    }

    fn phone_numbers(&self) -> impl Iterator<Item = &[u8]> {
        self.distinct(|node| node.phone)
    }

    fn secondary_contact_ids(&self) -> impl Iterator<Item = ContactId> {
        let nodes = &self.graph.nodes;
        self.order
            .iter()
            .filter(|&&slot| slot != self.primary)
            .map(|&slot| nodes[slot as usize].id)
    }
}

impl std::fmt::Debug for IdentityView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.to_identity().fmt(f)
    }
}

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
    /// hand-made log or snapshot can: SPEC.md §4 makes empty values absent and caps emails at
    /// 254 bytes and phones at 32 characters).
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
    identities: usize,
    /// Members of the largest identity (identities only grow; erasure recounts it).
    largest: u32,
    options: GraphOptions,
    /// Merges, deletions and refusals in the order applied (see [`crate::history`]).
    history: Vec<HistoryRecord>,
    /// For each record of `history`, per contact it names (first, second): the previous record
    /// naming that contact, as index + 1 (0: none). A chain per contact, no allocation per
    /// record.
    history_prev: Vec<[u32; 2]>,
    /// Per slot: the newest record naming that contact, as index + 1 (0: none); grown lazily.
    history_head: Vec<u32>,
    /// Slots of erased contacts: unknown to every lookup, listing and snapshot.
    erased: hashbrown::HashSet<u32>,
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

/// Unions a bulk load batches before making them (see [`IdentityGraph::settle_links`]): the
/// rows and links they touch (two 64-byte lines each) stay well inside a core's L2 cache.
const PENDING_LINKS: usize = 2048;

/// The state of the graph at the moment a chunked snapshot began: what changed since is kept
/// here as pre-images (copy-on-write at slot granularity), so the snapshot thread can encode
/// the state at that moment while writers go on between chunks.
#[derive(Clone, Debug)]
struct Capture {
    /// Slots below this existed when the capture began; newer ones are not in the snapshot.
    slots: u32,
    /// Links of slots changed since (first change only).
    links: hashbrown::HashMap<u32, Links>,
    /// Rows changed since (first change only).
    nodes: hashbrown::HashMap<u32, Node>,
    /// Erased slots at the start.
    erased: hashbrown::HashSet<u32>,
    /// History records at the start.
    history: usize,
    clock: Timestamp,
    /// Values erased since the start: wiped at the end of the capture, which may still read
    /// them from pre-images.
    pending_wipes: Vec<StrRef>,
}

/// Memory for a [`CaptureCursor`], made before the capture starts so that
/// [`IdentityGraph::begin_capture_with`] does not fill it under the store's write lock (at a
/// million contacts the 4 MB fill held every request up for 2-3 ms: BENCHMARKS.md, twentieth
/// pass). Every element is `u32::MAX`.
#[derive(Debug, Default)]
pub struct CaptureBuffer(Vec<u32>);

impl CaptureBuffer {
    /// Room for a graph of `slots` slots (see [`IdentityGraph::slots`]); a graph that grew
    /// meanwhile costs [`IdentityGraph::begin_capture_with`] only the difference.
    pub fn for_slots(slots: usize) -> CaptureBuffer {
        CaptureBuffer(vec![u32::MAX; slots])
    }
}

/// Where a chunked snapshot is ([`IdentityGraph::capture_chunk`]); owned by the snapshot
/// thread.
#[derive(Debug)]
pub struct CaptureCursor {
    next_slot: u32,
    /// Smallest slot seen so far of each identity root (at capture time), `u32::MAX` if none.
    first_of_root: Vec<u32>,
    next_record: usize,
    clock_written: bool,
    /// The next contact id at capture time (the snapshot header's `next_id`).
    pub next_id: ContactId,
}

impl Default for IdentityGraph {
    fn default() -> Self {
        IdentityGraph::new()
    }
}

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
            identities: 0,
            largest: 0,
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

    fn blocked(&self, value: &str) -> bool {
        self.options.blocked.blocks(value)
    }

    /// True when the graph has no contact.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of identities (union-find roots).
    pub fn identity_count(&self) -> usize {
        self.identities
    }

    /// Number of contacts (deleted ones included) in the largest identity; 0 for an empty
    /// graph. O(1): maintained by every insert and union (identities never shrink; an erasure
    /// of the largest recounts, O(n)).
    pub fn largest_identity(&self) -> usize {
        self.largest as usize
    }

    /// The id the next contact created by `/identify` will get.
    pub fn next_id(&self) -> ContactId {
        self.next_id
    }

    /// Raises the next id to at least `next` (snapshots record it so ids are never reused).
    pub fn reserve_ids_below(&mut self, next: ContactId) {
        self.next_id = self.next_id.max(next);
    }

    /// The largest `createdAt` recorded; new rows get `max(this, now)` (SPEC.md §2).
    pub fn max_created_at(&self) -> Timestamp {
        self.max_created_at
    }

    /// The timestamp a row created at wall-clock `now` gets: the clock never goes backwards
    /// (SPEC.md §2).
    pub fn clock(&self, now: Timestamp) -> Timestamp {
        now.max(self.max_created_at)
    }

    // ----- lookups -------------------------------------------------------------------------

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

    /// Root of `slot` without compressing (usable behind a shared reference).
    fn root(&self, mut slot: u32) -> u32 {
        loop {
            let parent = self.links[slot as usize].parent;
            if parent == slot {
                return slot;
            }
            slot = parent;
        }
    }

    /// Root of `slot`, halving the path on the way (Tarjan & van Leeuwen's path halving).
    fn root_mut(&mut self, mut slot: u32) -> u32 {
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

    fn primary_of_root(&self, root: u32) -> u32 {
        self.links[root as usize].primary
    }

    fn is_better(&self, a: u32, b: u32) -> bool {
        self.nodes[a as usize].key() < self.nodes[b as usize].key()
    }

    // ----- deciding ------------------------------------------------------------------------

    /// Decides what `request` does at wall-clock `now` (SPEC.md §3 steps 1–4) without changing
    /// anything: the events to apply, in order. An empty vector means the request is a pure read.
    /// At most one event results today: a new primary, a new secondary, or a merge (a merge
    /// means both values are known, so it never needs a new row).
    ///
    /// With [`GraphOptions`] set: blocked values count as absent for matching (they are still
    /// stored on a new row), and a merge or new secondary that would take an identity past
    /// `max_identity_size` becomes an [`Event::MergeRefused`].
    pub fn plan(&self, request: &IdentifyRequest, now: Timestamp) -> Vec<Event> {
        self.plan_matched(request, || now, &self.matches(request))
    }

    /// The slots carrying the request's usable (not blocked) email and phone: one index probe
    /// each. Both buckets are requested from memory before either is read, so a request with
    /// both values waits for one bucket miss, not two in a row.
    fn matches<'r>(&self, request: &'r IdentifyRequest) -> Matches<'r> {
        let email = request.email.as_ref().map(|e| (e, self.hash(e.as_str())));
        let phone = request.phone.as_ref().map(|p| (p, self.hash(p.as_str())));
        if let Some((_, hash)) = email {
            self.by_email.prefetch(hash);
        }
        if let Some((_, hash)) = phone {
            self.by_phone.prefetch(hash);
        }
        let by_email = email
            .and_then(|(e, hash)| self.find_value(&self.by_email, |n| n.email, e.as_str(), hash));
        let by_phone = phone
            .and_then(|(p, hash)| self.find_value(&self.by_phone, |n| n.phone, p.as_str(), hash));
        // A blocked value is never indexed (`check_invariants`), so a value the probe found is
        // usable: the block list is consulted only for a value the index does not know.
        Matches {
            email: (request.email.as_ref())
                .filter(|e| by_email.is_some() || !self.blocked(e.as_str())),
            phone: (request.phone.as_ref())
                .filter(|p| by_phone.is_some() || !self.blocked(p.as_str())),
            by_email,
            by_phone,
        }
    }

    /// [`IdentityGraph::plan`] and, for a pure read, its answer, from one probe of each index
    /// (the hot path of `/identify`: a returning customer costs one lookup per value).
    ///
    /// `now` is called (once) only when the request writes: a pure read stamps nothing, so it
    /// does not read the wall clock (issue 3: about 110 instructions of a returning request).
    pub fn decide(
        &self,
        request: &IdentifyRequest,
        now: impl FnOnce() -> Timestamp,
    ) -> Decision<'_> {
        let matches = self.matches(request);
        let events = self.plan_matched(request, now, &matches);
        match matches.by_email.or(matches.by_phone) {
            Some(slot) if events.is_empty() => {
                let root = self.root(slot);
                Decision::Read(IdentityKey(root), self.identity_view(root))
            }
            _ => Decision::Write(events),
        }
    }

    /// [`IdentityGraph::plan`] from the request's `matches`; `now` is called only once an event
    /// is certain (a request that changes nothing returns before reading the clock).
    fn plan_matched(
        &self,
        request: &IdentifyRequest,
        now: impl FnOnce() -> Timestamp,
        matches: &Matches<'_>,
    ) -> Vec<Event> {
        let Matches {
            email,
            phone,
            by_email,
            by_phone,
        } = *matches;
        // Read by each branch once it knows it writes.
        let stamp = move || self.clock(now());
        let refusal = |primary: u32, other: Option<u32>, clock: Timestamp| {
            Event::MergeRefused(Refusal {
                primary: self.nodes[primary as usize].id,
                other: other.map(|o| self.nodes[o as usize].id),
                email: request.email.clone(),
                phone: request.phone.clone(),
                at: clock,
                limit: self.options.max_identity_size.unwrap_or(u32::MAX),
            })
        };
        let over_cap = |size: u64| {
            self.options
                .max_identity_size
                .is_some_and(|cap| size > u64::from(cap))
        };
        let new_contact = |link: Option<ContactId>, clock: Timestamp| {
            Event::ContactInserted(NewContact {
                id: self.next_id,
                email: request.email.clone(),
                phone: request.phone.clone(),
                created_at: clock,
                updated_at: clock,
                deleted_at: None,
                link,
            })
        };
        match (by_email, by_phone) {
            (None, None) => vec![new_contact(None, stamp())],
            (Some(a), Some(b)) => {
                let (root_a, root_b) = (self.root(a), self.root(b));
                if root_a == root_b {
                    return Vec::new();
                }
                let clock = stamp();
                let (pa, pb) = (self.primary_of_root(root_a), self.primary_of_root(root_b));
                let size = u64::from(self.links[root_a as usize].size)
                    + u64::from(self.links[root_b as usize].size);
                if over_cap(size) {
                    // Answered from the identity of the email (SPEC.md §3 step 5 order).
                    return vec![refusal(pa, Some(pb), clock)];
                }
                let (winner, loser) = if self.is_better(pa, pb) {
                    (pa, pb)
                } else {
                    (pb, pa)
                };
                vec![Event::IdentitiesLinked {
                    winner: self.nodes[winner as usize].id,
                    loser: self.nodes[loser as usize].id,
                    at: clock,
                    by_email: self.nodes[a as usize].id,
                    by_phone: self.nodes[b as usize].id,
                }]
            }
            (Some(found), None) | (None, Some(found)) => {
                let email_is_new = email.is_some() && by_email.is_none();
                let phone_is_new = phone.is_some() && by_phone.is_none();
                if !(email_is_new || phone_is_new) {
                    return Vec::new();
                }
                let clock = stamp();
                let root = self.root(found);
                let primary = self.primary_of_root(root);
                if over_cap(u64::from(self.links[root as usize].size) + 1) {
                    return vec![refusal(primary, None, clock)];
                }
                vec![new_contact(Some(self.nodes[primary as usize].id), clock)]
            }
        }
    }

    /// The identity the request's values belong to, as `/identify` answers it (SPEC.md §3 step
    /// 5), with its key (its union-find root): the identity of the email, else of the phone
    /// (before the request's own events, both lead to the same identity or only one is known);
    /// `None` when neither value is known.
    fn answer_with_key(
        &self,
        request: &IdentifyRequest,
    ) -> Option<(IdentityKey, IdentityView<'_>)> {
        let matches = self.matches(request);
        let root = self.root(matches.by_email.or(matches.by_phone)?);
        Some((IdentityKey(root), self.identity_view(root)))
    }

    /// The answer to a request whose planned `events` were just applied: the identity of the
    /// contact they inserted, if any (a request whose values are all blocked matches nothing,
    /// not even the row it just created), else the identity of the matched contact.
    pub fn answer_after(
        &self,
        request: &IdentifyRequest,
        events: &[Event],
    ) -> Option<(IdentityKey, IdentityView<'_>)> {
        let inserted = events.iter().rev().find_map(|e| match e {
            Event::ContactInserted(c) => self.slot_of(c.id),
            _ => None,
        });
        match inserted {
            Some(slot) => {
                let root = self.root(slot);
                Some((IdentityKey(root), self.identity_view(root)))
            }
            None => self.answer_with_key(request),
        }
    }

    /// Read-only lookup (`GET /identities`, issue 5): the identity the values lead to, without
    /// planning or changing anything. Blocked values never match.
    pub fn lookup(&self, request: &IdentifyRequest) -> Lookup {
        let Matches {
            by_email, by_phone, ..
        } = self.matches(request);
        match (by_email, by_phone) {
            (None, None) => Lookup::NotFound,
            (Some(a), Some(b)) if self.root(a) != self.root(b) => Lookup::Conflict {
                email_primary: self.nodes[self.primary_of_root(self.root(a)) as usize].id,
                phone_primary: self.nodes[self.primary_of_root(self.root(b)) as usize].id,
            },
            (Some(slot), _) | (None, Some(slot)) => {
                let root = self.root(slot);
                Lookup::Found(IdentityKey(root), self.build_identity(root))
            }
        }
    }

    /// The key of the identity containing contact `id` (its union-find root); `None` for an
    /// unknown or erased id.
    pub fn identity_key_of(&self, id: ContactId) -> Option<IdentityKey> {
        self.slot_of(id).map(|s| IdentityKey(self.root(s)))
    }

    /// Plans, applies and answers one request: the whole of SPEC.md §3 on an exclusive graph.
    /// Returns the answer and the events applied (empty for a pure read).
    ///
    /// # Errors
    /// [`ApplyError::Full`] when no slot is left for a new contact; no other error can occur
    /// for events the graph planned itself.
    pub fn identify(
        &mut self,
        request: &IdentifyRequest,
        now: Timestamp,
    ) -> Result<(Identity, Vec<Event>), ApplyError> {
        let events = self.plan(request, now);
        for event in &events {
            self.apply(event)?;
        }
        // After applying, a value is indexed or a row was inserted, so an answer exists.
        match self.answer_after(request, &events) {
            Some((_, identity)) => Ok((identity.to_identity(), events)),
            None => Err(ApplyError::Full),
        }
    }

    // ----- applying ------------------------------------------------------------------------

    /// Replays one event; the only way the graph changes. Validates the event completely before
    /// changing anything, so an error leaves the graph as it was.
    ///
    /// # Errors
    /// [`ApplyError`] when the event does not fit the current state (unknown or non-increasing
    /// ids, a merge of non-primaries or in the wrong age order, a value conflict), which only
    /// a damaged log, snapshot or import plan can produce.
    pub fn apply(&mut self, event: &Event) -> Result<(), ApplyError> {
        if !matches!(event, Event::ContactInserted(_)) {
            self.settle_links();
        }
        match event {
            Event::ContactInserted(contact) => self.apply_insert(contact.as_row()),
            Event::IdentitiesMerged { winner, loser, at } => {
                self.apply_merge(*winner, *loser, *at, None)
            }
            Event::IdentitiesLinked {
                winner,
                loser,
                at,
                by_email,
                by_phone,
            } => self.apply_merge(*winner, *loser, Some(*at), Some((*by_email, *by_phone))),
            Event::ContactDeleted { id, at } => self.apply_delete(*id, *at),
            Event::IdentityErased { id, at } => self.apply_erase(*id, *at),
            Event::MergeRefused(refusal) => self.apply_refusal(refusal),
        }
    }

    /// [`Event::ContactInserted`], from a borrowed row (recovery decodes rows without owning
    /// their values: see [`NewContactRef`]).
    ///
    /// # Errors
    /// As [`IdentityGraph::apply`].
    pub fn apply_insert(&mut self, c: NewContactRef<'_>) -> Result<(), ApplyError> {
        if c.id == 0 || c.id < self.next_id || self.nodes.last().is_some_and(|n| n.id >= c.id) {
            return Err(ApplyError::IdNotIncreasing {
                id: c.id,
                next: self.next_id.max(self.nodes.last().map_or(1, |n| n.id + 1)),
            });
        }
        if self.nodes.len() >= MAX_SLOTS {
            return Err(ApplyError::Full);
        }
        // The id after this one must exist, or `next_id` would wrap to 0 (a panic in debug
        // builds) and `/identify` would have no id left to give.
        let Some(next_id) = c.id.checked_add(1) else {
            return Err(ApplyError::Full);
        };
        let link_slot = match c.link {
            Some(link) => Some(self.slot_of(link).ok_or(ApplyError::UnknownContact(link))?),
            None => None,
        };
        // Blocked values are stored but never indexed; in a bulk load nothing is indexed here.
        let indexed = !self.bulk && c.deleted_at.is_none();
        let email = c.email.filter(|e| indexed && !self.blocked(e));
        let phone = c.phone.filter(|p| indexed && !self.blocked(p));
        let store = |values: &mut Arena, text: Option<&str>| {
            text.map(|t| values.push(t))
                .transpose()
                .map_err(|e| match e {
                    ArenaError::BadLength => ApplyError::InvalidValue(c.id),
                    ArenaError::Full => ApplyError::Full,
                })
        };
        let email_ref = store(&mut self.values, c.email)?;
        let phone_ref = store(&mut self.values, c.phone)?;
        let slot = self.nodes.len() as u32;
        self.nodes.push(Node {
            id: c.id,
            email: email_ref,
            phone: phone_ref,
            created_at: c.created_at,
            updated_at: c.updated_at,
            deleted_at: c.deleted_at.unwrap_or(NOT_DELETED),
        });
        self.links.push(Links {
            parent: slot,
            next: slot,
            size: 1,
            primary: slot,
        });
        self.identities += 1;
        self.largest = self.largest.max(1);
        // One probe per value: index it unless a carrier exists. A value another identity
        // already carries stays indexed at its first carrier; that only happens when the value
        // was blocked when one of the rows was written and is allowed now (configuration
        // changes never rewrite links, and never stop a replay).
        if let Some(email) = email {
            self.index_if_new(email, slot, true);
        }
        if let Some(phone) = phone {
            self.index_if_new(phone, slot, false);
        }
        let root = match link_slot {
            Some(link) if self.bulk => {
                self.pending_links.push((slot, link));
                if self.pending_links.len() >= PENDING_LINKS {
                    self.settle_links();
                }
                slot
            }
            Some(link) => self.union(slot, link),
            None => slot,
        };
        self.next_id = next_id;
        self.max_created_at = self.max_created_at.max(c.created_at);
        debug_assert_eq!(self.check_touched_identity(root), Ok(()));
        Ok(())
    }

    fn apply_merge(
        &mut self,
        winner: ContactId,
        loser: ContactId,
        at: Option<Timestamp>,
        cause: Option<(ContactId, ContactId)>,
    ) -> Result<(), ApplyError> {
        let bad = ApplyError::BadMerge { winner, loser };
        if let Some((by_email, by_phone)) = cause {
            for id in [by_email, by_phone] {
                self.slot_of(id).ok_or(ApplyError::UnknownContact(id))?;
            }
        }
        let w = self
            .slot_of(winner)
            .ok_or(ApplyError::UnknownContact(winner))?;
        let l = self
            .slot_of(loser)
            .ok_or(ApplyError::UnknownContact(loser))?;
        let (rw, rl) = (self.root_mut(w), self.root_mut(l));
        if rw == rl
            || self.primary_of_root(rw) != w
            || self.primary_of_root(rl) != l
            || !self.is_better(w, l)
        {
            return Err(bad);
        }
        let root = self.union(rw, rl);
        if let Some(at) = at {
            self.save_node(l);
            self.nodes[l as usize].updated_at = at;
        }
        self.record(HistoryRecord::Merged {
            winner,
            loser,
            at,
            by_email: cause.map(|c| c.0),
            by_phone: cause.map(|c| c.1),
            before_id: self.next_id,
        });
        debug_assert_eq!(self.links[root as usize].primary, w);
        debug_assert_eq!(self.check_touched_identity(root), Ok(()));
        Ok(())
    }

    /// Deletion (issue 5): `deletedAt = updatedAt = at`, the row's values leave the indexes
    /// (another live member carrying the same value takes its place), and when the primary is
    /// deleted the best remaining member by `(deleted, createdAt, id)` becomes primary and is
    /// touched (`updatedAt = at`). Links stay.
    fn apply_delete(&mut self, id: ContactId, at: Timestamp) -> Result<(), ApplyError> {
        let slot = self.slot_of(id).ok_or(ApplyError::UnknownContact(id))?;
        if !self.nodes[slot as usize].live() {
            return Err(ApplyError::AlreadyDeleted(id));
        }
        let root = self.root_mut(slot);
        self.unindex(slot, root, true);
        self.save_node(slot);
        let node = &mut self.nodes[slot as usize];
        node.deleted_at = at;
        node.updated_at = at;
        let mut promoted = None;
        if self.links[root as usize].primary == slot {
            let best =
                self.members(root).fold(
                    slot,
                    |best, m| if self.is_better(m, best) { m } else { best },
                );
            self.save_links(root);
            self.links[root as usize].primary = best;
            if best != slot {
                self.save_node(best);
                self.nodes[best as usize].updated_at = at;
                promoted = Some(self.nodes[best as usize].id);
            }
        }
        self.record(HistoryRecord::Deleted {
            id,
            at,
            promoted,
            before_id: self.next_id,
        });
        debug_assert_eq!(self.check_touched_identity(root), Ok(()));
        Ok(())
    }

    /// Removes `slot`'s email and phone from the indexes where they point at `slot`; with
    /// `replace`, the oldest (smallest id) other live member of the identity carrying the same
    /// value takes its place — the carrier a rebuild from a snapshot would index, so merge
    /// records name the same contacts before and after a restart.
    fn unindex(&mut self, slot: u32, root: u32, replace: bool) {
        self.unindex_value(slot, root, replace, |n| n.email, true);
        self.unindex_value(slot, root, replace, |n| n.phone, false);
    }

    /// [`IdentityGraph::unindex`] for one kind of value: `value` reads it from a row, `email`
    /// picks the index.
    fn unindex_value(&mut self, slot: u32, root: u32, replace: bool, value: ValueOf, email: bool) {
        if self.bulk {
            return;
        }
        let Some(text) = self.text(value(&self.nodes[slot as usize])) else {
            return;
        };
        let hash = self.hash(text);
        let index = if email {
            &self.by_email
        } else {
            &self.by_phone
        };
        if !index.contains(hash, slot) {
            return;
        }
        let heir = if replace {
            self.members(root)
                .filter(|&m| {
                    let other = &self.nodes[m as usize];
                    m != slot && other.live() && self.text(value(other)) == Some(text)
                })
                .min()
        } else {
            None
        };
        let index = if email {
            &mut self.by_email
        } else {
            &mut self.by_phone
        };
        match heir {
            Some(heir) => index.replace(hash, slot, heir),
            None => index.remove(hash, slot),
        };
    }

    /// Erasure (issue 5): every member of the identity containing `id` leaves the indexes, its
    /// email and phone are wiped from memory ([`Email::wipe`]), and it becomes unknown to every
    /// lookup, listing and snapshot. Values in refusal records naming the identity are wiped.
    fn apply_erase(&mut self, id: ContactId, at: Timestamp) -> Result<(), ApplyError> {
        let slot = self.slot_of(id).ok_or(ApplyError::UnknownContact(id))?;
        let root = self.root_mut(slot);
        let members: Vec<u32> = self.members(root).collect();
        for &m in &members {
            self.unindex(m, root, false);
        }
        for &m in &members {
            self.save_node(m);
            let node = &mut self.nodes[m as usize];
            let taken = [node.email.take(), node.phone.take()];
            if node.live() {
                node.deleted_at = at;
            }
            node.updated_at = at;
            for r in taken.into_iter().flatten() {
                // A snapshot being captured may still read the value from a pre-image.
                match &mut self.capture {
                    Some(capture) => capture.pending_wipes.push(r),
                    None => self.values.wipe(r),
                }
            }
            self.erased.insert(m);
            for index in self.records_of(m) {
                if let Some(HistoryRecord::Refused { refusal, .. }) =
                    self.history.get_mut(index as usize)
                {
                    if let Some(email) = refusal.email.take() {
                        email.wipe();
                    }
                    if let Some(phone) = refusal.phone.take() {
                        phone.wipe();
                    }
                }
            }
        }
        self.identities -= 1;
        if self.links[root as usize].size >= self.largest {
            // Rare (erasures are): recount the largest identity left, O(n).
            self.largest = (0..self.links.len() as u32)
                .filter(|&s| self.links[s as usize].parent == s && !self.is_erased(s))
                .map(|s| self.links[s as usize].size)
                .max()
                .unwrap_or(0);
        }
        Ok(())
    }

    /// A refusal changes nothing but history.
    fn apply_refusal(&mut self, refusal: &Refusal) -> Result<(), ApplyError> {
        for id in std::iter::once(refusal.primary).chain(refusal.other) {
            self.slot_of(id).ok_or(ApplyError::UnknownContact(id))?;
        }
        self.record(HistoryRecord::Refused {
            refusal: refusal.clone(),
            before_id: self.next_id,
        });
        Ok(())
    }

    /// Appends a history record and indexes it by every contact it names (unknown ids, which
    /// only an erased contact skipped by a snapshot can be, are not indexed).
    fn record(&mut self, record: HistoryRecord) {
        let index = self.history.len() as u32;
        let mut prev = [0u32; 2];
        for (k, id) in record.contacts().enumerate().take(2) {
            if let Some(slot) = self.slot_of(id) {
                let s = slot as usize;
                if self.history_head.len() <= s {
                    self.history_head.resize(s + 1, 0);
                }
                prev[k] = self.history_head[s];
                self.history_head[s] = index + 1;
            }
        }
        self.history.push(record);
        self.history_prev.push(prev);
    }

    /// Indices of the records naming the contact in `slot`, newest first.
    fn records_of(&self, slot: u32) -> Vec<u32> {
        let mut out = Vec::new();
        let mut next = self.history_head.get(slot as usize).copied().unwrap_or(0);
        while next != 0 {
            let index = next - 1;
            out.push(index);
            let (Some(record), Some(prev)) = (
                self.history.get(index as usize),
                self.history_prev.get(index as usize),
            ) else {
                break;
            };
            let k = record
                .contacts()
                .position(|id| self.raw_slot_of(id) == Some(slot))
                .unwrap_or(0);
            let previous = prev[k.min(1)];
            if previous >= next {
                break;
            }
            next = previous;
        }
        out
    }

    /// Indexes `slot` as the carrier of `text` (an email when `email`, else a phone) unless the
    /// index already has a carrier of it; one hash-table probe either way.
    fn index_if_new(&mut self, text: &str, slot: u32, email: bool) {
        let hash = self.hash(text);
        let (nodes, values) = (&self.nodes, &self.values);
        let field = |n: &Node| if email { n.email } else { n.phone };
        let index = if email {
            &mut self.by_email
        } else {
            &mut self.by_phone
        };
        index.insert_if_absent(hash, slot, |s| {
            field(&nodes[s as usize]).is_some_and(|r| values.bytes(r) == text.as_bytes())
        });
    }

    /// Recovery mode: until [`IdentityGraph::finish_bulk_load`], applied events leave the
    /// email and phone indexes alone (nothing but `plan` and the answers read them, and neither
    /// runs during recovery). Loading a snapshot and replaying the log then cost no random
    /// hash-table probe per value (issue 3: start-up and replay rates). Inserted rows are also
    /// joined to the rows they link to in batches (see `settle_links`); every other event, a
    /// snapshot capture and `finish_bulk_load` first make the pending unions, so only the
    /// identity counters lag until then. Reads are meant for after `finish_bulk_load`.
    pub fn begin_bulk_load(&mut self) {
        self.bulk = true;
    }

    /// Builds both indexes from the rows, in parallel (one thread per index): each value is
    /// indexed at its oldest live carrier (smallest id), which is where incremental indexing
    /// leaves it too, blocked values excepted. Entries are inserted nearly in bucket order (binned by
    /// the hash's low bits), so the table is filled front to back instead of at random.
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

    /// Makes the unions a bulk load deferred ([`IdentityGraph::apply_insert`] batches them),
    /// in their original order, so the partition is exactly what applying them one by one
    /// gives. First the roots of all the batch's link targets and their primaries' rows are
    /// read in one pass: those loads do not depend on each other, so the CPU overlaps their
    /// cache misses instead of waiting for them one union at a time (issue 3: start-up and
    /// replay rates; at 10M contacts each miss is a few hundred nanoseconds).
    fn settle_links(&mut self) {
        if self.pending_links.is_empty() {
            return;
        }
        let mut pending = std::mem::take(&mut self.pending_links);
        let mut touched = 0i64;
        for &(_, link) in &pending {
            let primary = self.links[self.root(link) as usize].primary;
            touched ^= self.nodes[primary as usize].created_at.0;
        }
        std::hint::black_box(touched);
        for &(slot, link) in &pending {
            let root = self.union(slot, link);
            debug_assert_eq!(self.check_touched_identity(root), Ok(()));
        }
        pending.clear();
        self.pending_links = pending;
    }

    fn build_index(&self, field: ValueOf) -> ValueIndex {
        let (nodes, values, hasher) = (&self.nodes, &self.values, &self.hasher);
        let checks_blocked = !self.options.blocked.is_empty();
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
        // index instead of 160 (page faults on fresh memory took 30 % of a 10 M start-up's
        // samples on the benchmark machine: BENCHMARKS.md, eleventh pass).
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
        // Entries whose tag repeats, in windows of `WINDOW`: their rows and values are read
        // ahead of the comparisons, in two passes of loads independent of each other, so the
        // CPU overlaps the cache misses (one after another they cost the most time here).
        const WINDOW: usize = 256;
        let mut ahead: Vec<StrRef> = Vec::with_capacity(WINDOW);
        let mut run_start = 0;
        for i in 0..ordered.len() {
            if i % WINDOW == 0 {
                let window = i..(i + WINDOW).min(ordered.len());
                let repeats = |j: usize| {
                    let tag = tag_of(ordered[j]);
                    (j > 0 && tag_of(ordered[j - 1]) == tag)
                        || ordered.get(j + 1).is_some_and(|&next| tag_of(next) == tag)
                };
                ahead.clear();
                ahead.extend(
                    window
                        .filter(|&j| repeats(j))
                        .filter_map(|j| field(&nodes[slot_of(ordered[j]) as usize])),
                );
                let touched = ahead.iter().fold(0u8, |acc, &r| {
                    acc ^ values.bytes(r).first().copied().unwrap_or(0)
                });
                std::hint::black_box(touched);
            }
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

    /// Unions the identities of two roots (by size); returns the new root. The new primary is
    /// the better of the two primaries; the member rings are spliced.
    fn union(&mut self, a: u32, b: u32) -> u32 {
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
        let root = &mut self.links[big as usize];
        root.size = size;
        root.primary = primary;
        self.identities -= 1;
        self.largest = self.largest.max(size);
        big
    }

    // ----- reading -------------------------------------------------------------------------

    fn members(&self, root: u32) -> impl Iterator<Item = u32> + '_ {
        let mut current = Some(root);
        std::iter::from_fn(move || {
            let slot = current?;
            let next = self.links[slot as usize].next;
            current = (next != root).then_some(next);
            Some(slot)
        })
    }

    fn build_identity(&self, root: u32) -> Identity {
        self.identity_view(root).to_identity()
    }

    /// The identity of `root` read in place (SPEC.md §3 step 5: the primary's values first,
    /// then the other live members' by age).
    fn identity_view(&self, root: u32) -> IdentityView<'_> {
        let primary = self.primary_of_root(root);
        let mut order: SmallVec<[u32; INLINE_MEMBERS]> =
            SmallVec::with_capacity(self.links[root as usize].size as usize);
        if self.nodes[primary as usize].live() {
            order.push(primary);
        }
        let others = order.len();
        order.extend(
            self.members(root)
                .filter(|&s| s != primary && self.nodes[s as usize].live()),
        );
        order[others..].sort_unstable_by_key(|&s| {
            let n = &self.nodes[s as usize];
            (n.created_at, n.id)
        });
        IdentityView {
            graph: self,
            primary,
            order,
        }
    }

    /// The row with `id` as readers see it (SPEC.md §2), deleted rows included.
    pub fn contact(&self, id: ContactId) -> Option<ContactRow> {
        self.slot_of(id).map(|s| self.row(s))
    }

    /// Up to `limit` rows with ids greater than `after`, in id order (SPEC.md §6 listing).
    pub fn contacts_after(&self, after: ContactId, limit: usize) -> Vec<ContactRow> {
        let start = self.nodes.partition_point(|n| n.id <= after);
        (start..self.nodes.len())
            .filter(|&s| !self.is_erased(s as u32))
            .take(limit)
            .map(|s| self.row(s as u32))
            .collect()
    }

    /// Every row in id order (erased contacts are gone).
    pub fn all_contacts(&self) -> impl Iterator<Item = ContactRow> + '_ {
        (0..self.nodes.len())
            .filter(|&s| !self.is_erased(s as u32))
            .map(|s| self.row(s as u32))
    }

    fn is_erased(&self, slot: u32) -> bool {
        !self.erased.is_empty() && self.erased.contains(&slot)
    }

    /// Union-find `find` by contact id: the id of the primary of the identity containing contact
    /// `id` (a root walk without path compression, so it works behind a shared reference), or
    /// `None` for an unknown id. O(α(n)) amortized thanks to union by size and path halving on
    /// the write path (DESIGN.md "IdentityGraph").
    pub fn find(&self, id: ContactId) -> Option<ContactId> {
        self.slot_of(id)
            .map(|s| self.id_of(self.primary_of_root(self.root(s))))
    }

    /// The identity containing contact `id`, whether or not that contact is live; `None` for an
    /// unknown id.
    pub fn identity_of(&self, id: ContactId) -> Option<Identity> {
        self.slot_of(id).map(|s| self.build_identity(self.root(s)))
    }

    fn row(&self, slot: u32) -> ContactRow {
        let node = &self.nodes[slot as usize];
        let primary = self.primary_of_root(self.root(slot));
        let (link_precedence, linked_id) = if primary == slot {
            (LinkPrecedence::Primary, None)
        } else {
            (
                LinkPrecedence::Secondary,
                Some(self.nodes[primary as usize].id),
            )
        };
        ContactRow {
            id: node.id,
            phone_number: self.phone_of(node),
            email: self.email_of(node),
            linked_id,
            link_precedence,
            created_at: node.created_at,
            updated_at: node.updated_at,
            deleted_at: node.deleted_at(),
        }
    }

    /// The graph as a list of [`NewContact`] events in id order that rebuild it exactly when
    /// applied to an empty graph: each row links to the smallest-id member of its identity
    /// (used by snapshots).
    pub fn snapshot_contacts(&self) -> impl Iterator<Item = NewContact> + '_ {
        let mut first_of_root: Vec<u32> = vec![u32::MAX; self.nodes.len()];
        (0..self.nodes.len())
            .filter(|&s| !self.is_erased(s as u32))
            .map(move |s| {
                let root = self.root(s as u32) as usize;
                let link = if first_of_root[root] == u32::MAX {
                    first_of_root[root] = s as u32;
                    None
                } else {
                    Some(self.nodes[first_of_root[root] as usize].id)
                };
                self.snapshot_row(&self.nodes[s], link)
            })
    }

    /// A row as a snapshot stores it, linked to `link` (the smallest-id earlier member of its
    /// identity, if any).
    fn snapshot_row(&self, node: &Node, link: Option<ContactId>) -> NewContact {
        NewContact {
            id: node.id,
            email: self.email_of(node),
            phone: self.phone_of(node),
            created_at: node.created_at,
            updated_at: node.updated_at,
            deleted_at: node.deleted_at(),
            link,
        }
    }

    /// The whole graph as snapshot entries: [`IdentityGraph::snapshot_contacts`] then
    /// [`IdentityGraph::snapshot_history`] (SPEC.md §8; issue 5 "History survives snapshots").
    pub fn snapshot_entries(&self) -> impl Iterator<Item = SnapshotEntry> + '_ {
        self.snapshot_contacts()
            .map(SnapshotEntry::Contact)
            .chain(self.snapshot_history().cloned().map(SnapshotEntry::History))
            .chain(std::iter::once(SnapshotEntry::Clock(self.max_created_at)))
    }

    /// Applies one snapshot item (the inverse of [`IdentityGraph::snapshot_entries`]), as
    /// the snapshot reader hands it out (a row's values borrowed from the file's bytes;
    /// [`SnapshotEntry::as_item`] for an owned entry).
    ///
    /// # Errors
    /// As [`IdentityGraph::apply`].
    pub fn load_snapshot_item(&mut self, item: SnapshotItem<'_>) -> Result<(), ApplyError> {
        match item {
            SnapshotItem::Contact(row) => self.apply_insert(row),
            SnapshotItem::History(record) => {
                self.record(record);
                Ok(())
            }
            SnapshotItem::Clock(clock) => {
                self.max_created_at = self.max_created_at.max(clock);
                Ok(())
            }
        }
    }

    /// The history records a snapshot must keep, in applied order: those naming at least one
    /// contact that is not erased.
    pub fn snapshot_history(&self) -> impl Iterator<Item = &HistoryRecord> + '_ {
        self.history
            .iter()
            .filter(|r| r.contacts().any(|id| self.slot_of(id).is_some()))
    }

    /// `GET /identities/{contactId}/history` (issue 5): everything that happened to the
    /// identity containing contact `id`, in log order (see [`crate::history`]); `None` for an
    /// unknown or erased id. O(identity size + its records).
    pub fn history(&self, id: ContactId) -> Option<Vec<HistoryEntry>> {
        let root = self.root(self.slot_of(id)?);
        let mut keyed: Vec<((ContactId, u8, u32), HistoryEntry)> = Vec::new();
        let mut records: Vec<u32> = Vec::new();
        for m in self.members(root) {
            let node = &self.nodes[m as usize];
            keyed.push((
                (node.id, 1, 0),
                HistoryEntry::ContactInserted {
                    id: node.id,
                    email: self.email_of(node),
                    phone: self.phone_of(node),
                    at: node.created_at,
                },
            ));
            records.extend(self.records_of(m));
        }
        records.sort_unstable();
        records.dedup();
        let value_of = |id: Option<ContactId>| id.and_then(|id| self.raw_slot_of(id));
        for index in records {
            let Some(record) = self.history.get(index as usize) else {
                continue;
            };
            let entry = match record {
                HistoryRecord::Merged {
                    winner,
                    loser,
                    at,
                    by_email,
                    by_phone,
                    ..
                } => HistoryEntry::Merged {
                    primary: *winner,
                    demoted: *loser,
                    at: *at,
                    email: value_of(*by_email).and_then(|s| self.email_of(&self.nodes[s as usize])),
                    phone: value_of(*by_phone).and_then(|s| self.phone_of(&self.nodes[s as usize])),
                },
                HistoryRecord::Deleted {
                    id, at, promoted, ..
                } => HistoryEntry::Deleted {
                    id: *id,
                    at: *at,
                    promoted: *promoted,
                },
                HistoryRecord::Refused { refusal, .. } => HistoryEntry::Refused(refusal.clone()),
            };
            keyed.push(((record.before_id(), 0, index), entry));
        }
        keyed.sort_by_key(|(key, _)| *key);
        Some(keyed.into_iter().map(|(_, entry)| entry).collect())
    }

    /// Every row of the identity containing contact `id`, deleted ones included, in id order;
    /// `None` for an unknown or erased id (`GET /identities/{contactId}`).
    pub fn identity_rows(&self, id: ContactId) -> Option<Vec<ContactRow>> {
        let root = self.root(self.slot_of(id)?);
        let mut slots: Vec<u32> = self.members(root).collect();
        slots.sort_unstable();
        Some(slots.into_iter().map(|s| self.row(s)).collect())
    }

    // ----- chunked snapshots (copy-on-write) -----------------------------------------------

    fn save_links(&mut self, slot: u32) {
        if let Some(capture) = &mut self.capture
            && slot < capture.slots
        {
            capture
                .links
                .entry(slot)
                .or_insert(self.links[slot as usize]);
        }
    }

    fn save_node(&mut self, slot: u32) {
        if let Some(capture) = &mut self.capture
            && slot < capture.slots
        {
            capture
                .nodes
                .entry(slot)
                .or_insert(self.nodes[slot as usize]);
        }
    }

    /// Starts capturing the current state for a snapshot encoded in chunks by
    /// [`IdentityGraph::capture_chunk`], so a snapshot of millions of contacts never holds the
    /// graph's lock for long (issue 3: "snapshots must not stall the hot path"). Until
    /// [`IdentityGraph::end_capture`], every change keeps a pre-image of the slot it changes
    /// (first change only) and path halving pauses. O(erased contacts) plus a 4-byte-per-slot
    /// cursor; needs `&mut self`, i.e. the store's write lock, for that instant only (the
    /// store passes a [`CaptureBuffer`] made beforehand to [`IdentityGraph::begin_capture_with`]
    /// instead).
    ///
    /// Starting a capture while one is active restarts it.
    pub fn begin_capture(&mut self) -> CaptureCursor {
        self.begin_capture_with(CaptureBuffer::default())
    }

    /// [`IdentityGraph::begin_capture`] with the cursor's memory made beforehand: O(erased
    /// contacts) plus the slots added since `buffer` was made.
    pub fn begin_capture_with(&mut self, buffer: CaptureBuffer) -> CaptureCursor {
        self.settle_links();
        let slots = self.nodes.len() as u32;
        let CaptureBuffer(mut first_of_root) = buffer;
        first_of_root.resize(slots as usize, u32::MAX);
        self.capture = Some(Box::new(Capture {
            slots,
            links: hashbrown::HashMap::new(),
            nodes: hashbrown::HashMap::new(),
            erased: self.erased.clone(),
            history: self.history.len(),
            clock: self.max_created_at,
            pending_wipes: Vec::new(),
        }));
        CaptureCursor {
            next_slot: 0,
            first_of_root,
            next_record: 0,
            clock_written: false,
            next_id: self.next_id,
        }
    }

    /// Ends the capture: pre-images are dropped, path halving resumes.
    pub fn end_capture(&mut self) {
        if let Some(capture) = self.capture.take() {
            for r in capture.pending_wipes {
                self.values.wipe(r);
            }
        }
    }

    /// Appends to `out` up to `max` snapshot entries (plus the final clock entry) of the state
    /// captured by [`IdentityGraph::begin_capture`], continuing from `cursor`; returns true once
    /// everything was produced. All chunks together equal what
    /// [`IdentityGraph::snapshot_entries`] gave when the capture began, whatever changed in
    /// between. Produces nothing and returns true without an active capture.
    pub fn capture_chunk(
        &self,
        cursor: &mut CaptureCursor,
        max: usize,
        out: &mut Vec<SnapshotEntry>,
    ) -> bool {
        let Some(capture) = self.capture.as_deref() else {
            return true;
        };
        let links_at = |s: u32| {
            capture
                .links
                .get(&s)
                .copied()
                .unwrap_or(self.links[s as usize])
        };
        let mut produced = 0;
        while cursor.next_slot < capture.slots && produced < max {
            let s = cursor.next_slot;
            cursor.next_slot += 1;
            if capture.erased.contains(&s) {
                continue;
            }
            let mut root = s;
            loop {
                let parent = links_at(root).parent;
                if parent == root {
                    break;
                }
                root = parent;
            }
            let first = &mut cursor.first_of_root[root as usize];
            let link = if *first == u32::MAX {
                *first = s;
                None
            } else {
                Some(self.nodes[*first as usize].id)
            };
            let node = capture.nodes.get(&s).unwrap_or(&self.nodes[s as usize]);
            out.push(SnapshotEntry::Contact(self.snapshot_row(node, link)));
            produced += 1;
        }
        let known = |id: ContactId| {
            self.raw_slot_of(id)
                .is_some_and(|s| s < capture.slots && !capture.erased.contains(&s))
        };
        while cursor.next_slot >= capture.slots
            && cursor.next_record < capture.history
            && produced < max
        {
            let record = &self.history[cursor.next_record];
            cursor.next_record += 1;
            if record.contacts().any(known) {
                out.push(SnapshotEntry::History(record.clone()));
                produced += 1;
            }
        }
        if cursor.next_slot >= capture.slots
            && cursor.next_record >= capture.history
            && !cursor.clock_written
        {
            out.push(SnapshotEntry::Clock(capture.clock));
            cursor.clock_written = true;
        }
        cursor.clock_written
    }

    // ----- invariants ----------------------------------------------------------------------

    /// The invariant check run (in debug builds) after every mutation: the whole identity when
    /// it has at most 256 members, so a giant identity does not make a test run quadratic;
    /// [`IdentityGraph::check_invariants`] checks everything.
    fn check_touched_identity(&self, root: u32) -> Result<(), String> {
        if self.links[root as usize].size <= 256 {
            self.check_identity(root)
        } else if self.links[root as usize].parent != root {
            Err(format!("slot {root} is not a root"))
        } else {
            Ok(())
        }
    }

    /// Checks one identity (O(its size)): ring and union-find agree, the size is right, the
    /// primary is the best member, and every live value of it is indexed inside it.
    fn check_identity(&self, root: u32) -> Result<(), String> {
        let links = self.links[root as usize];
        if links.parent != root {
            return Err(format!("slot {root} is not a root"));
        }
        let mut count = 0u32;
        let mut best = root;
        for s in self.members(root) {
            count += 1;
            if self.root(s) != root {
                return Err(format!(
                    "slot {s} is in the ring of {root} but not under it"
                ));
            }
            if self.is_better(s, best) {
                best = s;
            }
            let node = &self.nodes[s as usize];
            if self.is_erased(s) {
                return Err(format!("identity at {root} is partly erased"));
            }
            // A value carried by another identity's first carrier is shadowed (see
            // `apply_insert`); a blocked value is never indexed. During a bulk load the indexes
            // are built at the end.
            if node.live() && !self.bulk {
                let values = [
                    (
                        "email",
                        self.text(node.email).map(|e| (e, self.lookup_email(e))),
                    ),
                    (
                        "phone",
                        self.text(node.phone).map(|p| (p, self.lookup_phone(p))),
                    ),
                ];
                for (kind, value) in values {
                    match value {
                        Some((v, Some(_))) if self.blocked(v) => {
                            return Err(format!("blocked {kind} of {} is indexed", node.id));
                        }
                        Some((v, None)) if !self.blocked(v) => {
                            return Err(format!(
                                "{kind} of contact {} not indexed in its identity",
                                node.id
                            ));
                        }
                        _ => {}
                    }
                }
            }
            if count > links.size {
                break;
            }
        }
        if count != links.size {
            return Err(format!(
                "identity at {root}: ring has {count} members, size says {}",
                links.size
            ));
        }
        if best != links.primary {
            return Err(format!(
                "identity at {root}: primary is {} but the oldest live member is {}",
                self.nodes[links.primary as usize].id, self.nodes[best as usize].id
            ));
        }
        Ok(())
    }

    /// Checks every invariant of the whole graph in O(n): ids strictly increasing, every
    /// identity consistent (see `check_identity`: exactly one primary, the oldest live member),
    /// indexes point at live carriers of their value, identity count and largest identity size
    /// right.
    ///
    /// # Errors
    /// A description of the first broken invariant.
    pub fn check_invariants(&self) -> Result<(), String> {
        if self.nodes.windows(2).any(|w| w[0].id >= w[1].id) {
            return Err("ids are not strictly increasing".into());
        }
        let (mut roots, mut largest) = (0, 0);
        for s in 0..self.nodes.len() as u32 {
            if self.links[s as usize].parent == s {
                if self.is_erased(s) {
                    if let Some(m) = self.members(s).find(|&m| !self.is_erased(m)) {
                        return Err(format!(
                            "contact {} survived the erasure of its identity",
                            self.nodes[m as usize].id
                        ));
                    }
                    continue;
                }
                roots += 1;
                largest = largest.max(self.links[s as usize].size);
                self.check_identity(s)?;
            }
        }
        if largest != self.largest {
            return Err(format!(
                "largest identity has {largest} members but the graph says {}",
                self.largest
            ));
        }
        if roots != self.identities {
            return Err(format!(
                "{roots} roots but identity count is {}",
                self.identities
            ));
        }
        let indexes: [(&str, &ValueIndex, ValueOf); 2] = [
            ("email", &self.by_email, |n| n.email),
            ("phone", &self.by_phone, |n| n.phone),
        ];
        for (kind, index, field) in indexes {
            for s in index.slots() {
                let node = &self.nodes[s as usize];
                let live = node.live() && !self.is_erased(s);
                let Some(text) = self.text(field(node)).filter(|_| live) else {
                    return Err(format!(
                        "{kind} index points at contact {} without a live {kind}",
                        node.id
                    ));
                };
                if self.find_value(index, field, text, self.hash(text)) != Some(s) {
                    return Err(format!(
                        "{kind} index holds contact {} where a lookup of its {kind} cannot find it",
                        node.id
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arena_holds(graph: &IdentityGraph, needle: &str) -> bool {
        graph.values.pages_contain(needle.as_bytes())
    }

    #[test]
    fn large_identities_answer_first_occurrences_in_age_order() {
        // 45 members (past the 32 where the answer switches from scanning to a hash set), with
        // every email but the first carried by one contact and every phone but the first by
        // one contact: the first occurrence decides each value's place.
        let mut g = IdentityGraph::new();
        let req = |e: &str, p: &str| {
            IdentifyRequest::new(Email::parse(e).unwrap(), Phone::parse(p).unwrap()).unwrap()
        };
        let email = |i: u64| format!("e{i}@example.org");
        let phone = |i: u64| format!("55501{i:02}");
        let mut at = 0;
        for i in 0..40 {
            at += 1;
            g.identify(&req(&email(0), &phone(i)), Timestamp(at))
                .unwrap();
        }
        for j in 1..6 {
            at += 1;
            g.identify(&req(&email(j), &phone(0)), Timestamp(at))
                .unwrap();
        }
        let (answer, events) = g
            .identify(&req(&email(3), &phone(7)), Timestamp(99))
            .unwrap();
        assert!(events.is_empty(), "a known pair is a pure read");
        assert_eq!(answer.primary_contact_id, 1);
        let emails: Vec<&str> = answer.emails.iter().map(Email::as_str).collect();
        assert_eq!(emails, (0..6).map(email).collect::<Vec<_>>());
        let phones: Vec<&str> = answer.phone_numbers.iter().map(Phone::as_str).collect();
        assert_eq!(phones, (0..40).map(phone).collect::<Vec<_>>());
        assert_eq!(answer.secondary_contact_ids, (2..=45).collect::<Vec<_>>());
        // The view renders the same answer as the owned identity it copies out.
        let Decision::Read(_, view) = g.decide(&req(&email(5), &phone(0)), || Timestamp(100))
        else {
            panic!("a known pair is a pure read");
        };
        assert_eq!(view.to_identity(), answer);
        assert_eq!(view.emails().count(), 6);
        assert_eq!(view.secondary_contact_ids().count(), 44);
    }

    #[test]
    fn erasure_zeroes_values_in_memory_after_any_capture_ends() {
        let mut g = IdentityGraph::new();
        let req = |e: &str, p: &str| {
            IdentifyRequest::new(Email::parse(e).unwrap(), Phone::parse(p).unwrap()).unwrap()
        };
        g.identify(&req("forget.me@example.org", "5550100"), Timestamp(1))
            .unwrap();
        g.identify(&req("keep.me@example.org", "5550200"), Timestamp(2))
            .unwrap();
        let expected: Vec<SnapshotEntry> = g.snapshot_entries().collect();
        let mut cursor = g.begin_capture();
        g.apply(&Event::IdentityErased {
            id: 1,
            at: Timestamp(3),
        })
        .unwrap();
        // Gone from every lookup at once, still in the capture (a snapshot of the state before).
        assert_eq!(g.contact(1), None);
        assert!(arena_holds(&g, "forget.me@example.org"));
        let mut got = Vec::new();
        while !g.capture_chunk(&mut cursor, 1, &mut got) {}
        assert_eq!(got, expected);
        g.end_capture();
        assert!(!arena_holds(&g, "forget.me@example.org"));
        assert!(!arena_holds(&g, "5550100"));
        assert!(arena_holds(&g, "keep.me@example.org"));
        // Without a capture the wipe is immediate.
        g.apply(&Event::IdentityErased {
            id: 2,
            at: Timestamp(4),
        })
        .unwrap();
        assert!(!arena_holds(&g, "keep.me@example.org"));
        assert_eq!(g.check_invariants(), Ok(()));
    }

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
