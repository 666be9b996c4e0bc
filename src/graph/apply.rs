//! Applying events: the only code that changes the graph (recovery, import, snapshot loading
//! and `/identify` all go through [`IdentityGraph::apply`]).

use super::arena::{Arena, ArenaError};
use super::split::SplitOutcome;
use super::{ApplyError, IdentityGraph, Links, MAX_SLOTS, NOT_DELETED, Node, ValueOf};
use crate::contact::{ContactId, Timestamp};
use crate::event::{Event, HistoryRecord, NewContactRef, Refusal};

impl IdentityGraph {
    /// Replays one event; the only way the graph changes. Validates the event completely before
    /// changing anything, so an error leaves the graph as it was.
    ///
    /// # Errors
    /// [`ApplyError`] when the event does not fit the current state (unknown or non-increasing
    /// ids, a merge of non-primaries or in the wrong age order, a value conflict), which only
    /// a damaged log, snapshot or import plan can produce.
    pub fn apply(&mut self, event: &Event) -> Result<(), ApplyError> {
        self.apply_into(event, &mut SplitOutcome::default())
    }

    /// [`IdentityGraph::apply`], adding what a split or a block changed to `outcome` (nothing
    /// for every other event): the one dispatch, so the graph's own splits and blocks apply
    /// their events exactly as replay does.
    ///
    /// # Errors
    /// As [`IdentityGraph::apply`].
    pub(super) fn apply_into(
        &mut self,
        event: &Event,
        outcome: &mut SplitOutcome,
    ) -> Result<(), ApplyError> {
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
            Event::IdentitySplit { id, values, at } => self.apply_split(*id, values, *at, outcome),
            Event::ValuesBlocked {
                values,
                retroactive,
                at,
            } => {
                self.apply_block(values, *retroactive, *at, outcome);
                Ok(())
            }
            Event::ValuesUnblocked { values } => {
                self.apply_unblock(values);
                Ok(())
            }
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
        self.sizes.add(1);
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
                self.defer_link(slot, link);
                // Deferring settles the pending links once a batch is full, this one included,
                // so the row may already sit under another root.
                self.root(slot)
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

    /// Deletion (docs/behaviour.md §6.6): `deletedAt = updatedAt = at`, the row's values leave the
    /// indexes (another live member carrying the same value takes its place), and when the primary
    /// is deleted the best remaining member by `(deleted, createdAt, id)` becomes primary and is
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

    /// Erasure (docs/behaviour.md §6.7): every member of the identity containing `id` leaves the
    /// indexes, its email and phone are wiped from memory
    /// ([`Email::wipe`](crate::contact::Email::wipe)), and it becomes unknown to every lookup,
    /// listing and snapshot. Values in refusal records naming the identity are wiped.
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
                self.wipe_value(r);
            }
            self.erased.insert(m);
            for index in self.records_of(m) {
                if let Some(HistoryRecord::Refused { refusal, .. }) =
                    self.history.get_mut(index as usize)
                {
                    Refusal {
                        email: refusal.email.take(),
                        phone: refusal.phone.take(),
                        ..*refusal
                    }
                    .wipe();
                }
            }
        }
        self.sizes.remove(self.links[root as usize].size);
        Ok(())
    }

    /// A refusal by the identity size cap (docs/behaviour.md §3.6) changes nothing but history.
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

    /// Indexes `slot` as the carrier of `text` (an email when `email`, else a phone) unless the
    /// index already has a carrier of it; one hash-table probe either way.
    pub(super) fn index_if_new(&mut self, text: &str, slot: u32, email: bool) {
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
}
