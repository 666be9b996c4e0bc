//! Snapshots of the graph: the whole state as entries, and chunked captures that let writers go
//! on between chunks (copy-on-write pre-images).

use super::arena::StrRef;
use super::{ApplyError, IdentityGraph, Links, Node};
use crate::contact::{ContactId, Timestamp};
use crate::event::{BlockedValues, NewContact, SnapshotEntry, SnapshotItem};

/// The state of the graph at the moment a chunked snapshot began: what changed since is kept
/// here as pre-images (copy-on-write at slot granularity), so the snapshot thread can encode
/// the state at that moment while writers go on between chunks.
#[derive(Clone, Debug)]
pub(super) struct Capture {
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
    /// Run-time blocked values at the start.
    blocked: BlockedValues,
    clock: Timestamp,
    /// Values erased since the start: wiped at the end of the capture, which may still read
    /// them from pre-images.
    pending_wipes: Vec<StrRef>,
}

/// Memory for a [`CaptureCursor`], made before the capture starts so that
/// [`IdentityGraph::begin_capture_with`] does not fill it under the store's write lock: 4 bytes
/// per slot, 4 MB at a million contacts, whose fill would hold every request up for
/// milliseconds. Every element is `u32::MAX`.
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
    blocked_written: bool,
    clock_written: bool,
    /// The next contact id at capture time (the snapshot header's `next_id`).
    pub next_id: ContactId,
}

impl IdentityGraph {
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
    /// [`IdentityGraph::snapshot_history`] then the run-time blocked values (if any) then the
    /// clock (docs/behaviour.md §8; history
    /// survives snapshots, §6.5).
    pub fn snapshot_entries(&self) -> impl Iterator<Item = SnapshotEntry> + '_ {
        self.snapshot_contacts()
            .map(SnapshotEntry::Contact)
            .chain(self.snapshot_history().cloned().map(SnapshotEntry::History))
            .chain(
                (!self.run_time_blocks.is_empty())
                    .then(|| SnapshotEntry::Blocked(self.run_time_blocks.clone())),
            )
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
            SnapshotItem::Blocked(values) => {
                self.block(&values);
                Ok(())
            }
        }
    }

    /// Keeps the pre-image of `slot`'s links for the capture under way, if the slot is part of
    /// it and this is its first change since the capture began.
    pub(super) fn save_links(&mut self, slot: u32) {
        if let Some(capture) = &mut self.capture
            && slot < capture.slots
        {
            capture
                .links
                .entry(slot)
                .or_insert(self.links[slot as usize]);
        }
    }

    /// Keeps the pre-image of `slot`'s row for the capture under way (as
    /// [`IdentityGraph::save_links`]).
    pub(super) fn save_node(&mut self, slot: u32) {
        if let Some(capture) = &mut self.capture
            && slot < capture.slots
        {
            capture
                .nodes
                .entry(slot)
                .or_insert(self.nodes[slot as usize]);
        }
    }

    /// Wipes an erased value from the arena; while a snapshot is captured, which may still read
    /// the value from a pre-image, at the end of the capture instead.
    pub(super) fn wipe_value(&mut self, r: StrRef) {
        match &mut self.capture {
            Some(capture) => capture.pending_wipes.push(r),
            None => self.values.wipe(r),
        }
    }

    /// Starts capturing the current state for a snapshot encoded in chunks by
    /// [`IdentityGraph::capture_chunk`], so a snapshot of millions of contacts never holds the
    /// graph's lock for long and requests go on meanwhile. Until [`IdentityGraph::end_capture`],
    /// every change keeps a pre-image of the slot it changes (first change only) and path halving
    /// pauses. O(erased contacts) plus a 4-byte-per-slot cursor; needs `&mut self`, i.e. the
    /// store's write lock, for that instant only (the store passes a [`CaptureBuffer`] made
    /// beforehand to [`IdentityGraph::begin_capture_with`] instead).
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
            blocked: self.run_time_blocks.clone(),
            clock: self.max_created_at,
            pending_wipes: Vec::new(),
        }));
        CaptureCursor {
            next_slot: 0,
            first_of_root,
            next_record: 0,
            blocked_written: false,
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
        let history_done =
            cursor.next_slot >= capture.slots && cursor.next_record >= capture.history;
        if history_done && !cursor.blocked_written {
            if !capture.blocked.is_empty() {
                out.push(SnapshotEntry::Blocked(capture.blocked.clone()));
            }
            cursor.blocked_written = true;
        }
        if history_done && !cursor.clock_written {
            out.push(SnapshotEntry::Clock(capture.clock));
            cursor.clock_written = true;
        }
        cursor.clock_written
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contact::{Email, Phone};
    use crate::event::Event;
    use crate::graph::IdentifyRequest;

    fn arena_holds(graph: &IdentityGraph, needle: &str) -> bool {
        graph.values.pages_contain(needle.as_bytes())
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
}
