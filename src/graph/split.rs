//! Splitting identities and blocking values at run time (docs/behaviour.md §10).
//!
//! A union-find never splits, so a split rebuilds the links of one identity: its members are
//! partitioned into the connected components of its links (`links.rs`) whose reasons involve
//! no blocked value, and each component gets its own root, ring, size and primary (its best
//! member by `(deleted, createdAt, id)`, as everywhere). Rows of a component whose primary
//! changed get the split's time as `updatedAt`; no other row changes. O(identity size + its
//! history records), under the store's write lock.
//!
//! Blocked values leave the indexes at once, so they stop matching; lifting a block indexes
//! the value at its oldest live carrier (what a restart would do) and merges nothing.

use super::links::{Partition, listed};
use super::{ApplyError, Identity, IdentityGraph};
use crate::contact::{ContactId, Timestamp};
use crate::event::{BlockedValues, Event, HistoryRecord};

/// What a split or a block changed ([`IdentityGraph::split`], [`IdentityGraph::block_values`]):
/// the members (slots) of each identity it re-partitioned, and the links it removed. Valid
/// until the graph changes again; [`IdentityGraph::split_report`] turns it into the answer.
#[derive(Clone, Debug, Default)]
pub struct SplitOutcome {
    groups: Vec<Vec<u32>>,
    removed_links: usize,
    /// Whether the answer lists every part (a split) or only identities that became two or
    /// more (a block).
    every_part: bool,
}

/// What a split or a retroactive block did (`POST /identities/{id}/split`,
/// `POST /admin/blocked-values?retroactive=true`; docs/behaviour.md §10).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SplitReport {
    /// Whether any identity became two or more.
    pub split: bool,
    /// Links removed: those whose reason involves a blocked value.
    pub removed_links: usize,
    /// The resulting identities, each in the `/identify` shape, primaries in age order: for a
    /// split, every part of the identity (one when nothing was split); for a retroactive
    /// block, the parts of every identity it split.
    pub identities: Vec<Identity>,
}

impl SplitOutcome {
    /// Links removed: those whose reason involves a blocked value.
    pub fn removed_links(&self) -> usize {
        self.removed_links
    }
}

impl IdentityGraph {
    /// The values blocked at run time (by splits and the admin routes), sorted. The configured
    /// list is [`GraphOptions::blocked`](super::GraphOptions::blocked).
    pub fn blocked_values(&self) -> &BlockedValues {
        &self.run_time_blocks
    }

    /// Whether `value` is blocked at run time.
    pub(super) fn blocked_at_run_time(&self, value: &str) -> bool {
        !self.run_time_blocks.is_empty() && listed(&self.run_time_blocks, value)
    }

    /// Splits the identity containing contact `id` by `values` at wall-clock `now`: decides
    /// the [`Event::IdentitySplit`] and applies it (docs/behaviour.md §10). Returns the event
    /// and what it changed, which [`IdentityGraph::split_report`] turns into the answer (the
    /// store builds it under the shared lock, after the exclusive hold). `None` (and nothing
    /// changes) for an unknown or erased id. O(identity size + its history records).
    ///
    /// # Errors
    /// None in practice: the event is decided on this graph. An [`ApplyError`] would leave the
    /// graph unchanged.
    pub fn split(
        &mut self,
        id: ContactId,
        values: BlockedValues,
        now: Timestamp,
    ) -> Result<Option<(Event, SplitOutcome)>, ApplyError> {
        if self.slot_of(id).is_none() {
            return Ok(None);
        }
        let event = Event::IdentitySplit {
            id,
            values: values.normalized(),
            at: self.clock(now),
        };
        let mut outcome = SplitOutcome {
            every_part: true,
            ..SplitOutcome::default()
        };
        self.apply_into(&event, &mut outcome)?;
        Ok(Some((event, outcome)))
    }

    /// Blocks `values` at wall-clock `now` (`POST /admin/blocked-values`, docs/behaviour.md
    /// §10): decides the [`Event::ValuesBlocked`] and applies it. Returns the event and what a
    /// retroactive block split (nothing without `retroactive`), as [`IdentityGraph::split`]
    /// does. O(slots) with `retroactive` (finding the identities that carry the values).
    ///
    /// # Errors
    /// As [`IdentityGraph::split`].
    pub fn block_values(
        &mut self,
        values: BlockedValues,
        retroactive: bool,
        now: Timestamp,
    ) -> Result<(Event, SplitOutcome), ApplyError> {
        let event = Event::ValuesBlocked {
            values: values.normalized(),
            retroactive,
            at: self.clock(now),
        };
        let mut outcome = SplitOutcome::default();
        self.apply_into(&event, &mut outcome)?;
        Ok((event, outcome))
    }

    /// The answer to a split or a block from what it changed: for a split every part of the
    /// identity, for a block the parts of every identity it split, primaries in age order.
    /// Call it before the graph changes again. O(contacts of the identities concerned).
    pub fn split_report(&self, outcome: &SplitOutcome) -> SplitReport {
        let roots_of = |members: &[u32]| {
            let mut roots: Vec<u32> = members.iter().map(|&s| self.root(s)).collect();
            roots.sort_unstable();
            roots.dedup();
            roots
        };
        let (mut roots, mut split) = (Vec::new(), false);
        for members in &outcome.groups {
            let parts = roots_of(members);
            split |= parts.len() > 1;
            if outcome.every_part || parts.len() > 1 {
                roots.extend(parts);
            }
        }
        roots.sort_by_key(|&r| {
            let primary = &self.nodes[self.primary_of_root(r) as usize];
            (primary.created_at, primary.id)
        });
        SplitReport {
            split,
            removed_links: outcome.removed_links,
            identities: roots.iter().map(|&r| self.build_identity(r)).collect(),
        }
    }

    /// Lifts the run-time blocks of `values` (`DELETE /admin/blocked-values`,
    /// docs/behaviour.md §10): decides and applies the [`Event::ValuesUnblocked`], and
    /// returns it with the values whose run-time blocks it lifted (those of `values` that were
    /// blocked at run time).
    ///
    /// # Errors
    /// As [`IdentityGraph::split`].
    pub fn unblock_values(
        &mut self,
        values: BlockedValues,
    ) -> Result<(Event, BlockedValues), ApplyError> {
        let values = values.normalized();
        let blocks = &self.run_time_blocks;
        let lifted = BlockedValues {
            emails: (values.emails.iter())
                .filter(|e| listed(blocks, e.as_str()))
                .cloned()
                .collect(),
            phones: (values.phones.iter())
                .filter(|p| listed(blocks, p.as_str()))
                .cloned()
                .collect(),
        };
        let event = Event::ValuesUnblocked { values };
        self.apply(&event)?;
        Ok((event, lifted))
    }

    /// Roots of the identities with a member carrying one of `values`, in slot order. O(slots).
    fn roots_carrying(&self, values: &BlockedValues) -> Vec<u32> {
        let mut roots: Vec<u32> = (0..self.nodes.len() as u32)
            .filter(|&s| !self.is_erased(s))
            .filter(|&s| {
                let node = &self.nodes[s as usize];
                [node.email, node.phone]
                    .into_iter()
                    .flatten()
                    .any(|r| listed(values, self.values.get(r)))
            })
            .map(|s| self.root(s))
            .collect();
        roots.sort_unstable();
        roots.dedup();
        roots
    }

    /// Adds `values` to the run-time blocks; each leaves both indexes (it stops matching).
    pub(super) fn block(&mut self, values: &BlockedValues) {
        let blocks = &mut self.run_time_blocks;
        blocks.emails.extend(values.emails.iter().cloned());
        blocks.phones.extend(values.phones.iter().cloned());
        self.run_time_blocks = std::mem::take(&mut self.run_time_blocks).normalized();
        if self.bulk {
            return;
        }
        let texts = values.emails.iter().map(|e| e.as_str());
        for text in texts.chain(values.phones.iter().map(|p| p.as_str())) {
            let hash = self.hash(text);
            if let Some(slot) = self.lookup_email(text) {
                self.by_email.remove(hash, slot);
            }
            if let Some(slot) = self.lookup_phone(text) {
                self.by_phone.remove(hash, slot);
            }
        }
    }

    /// [`Event::ValuesBlocked`]; adds what a retroactive block re-partitioned to `outcome`.
    pub(super) fn apply_block(
        &mut self,
        values: &BlockedValues,
        retroactive: bool,
        at: Timestamp,
        outcome: &mut SplitOutcome,
    ) {
        let roots = if retroactive {
            self.roots_carrying(values)
        } else {
            Vec::new()
        };
        self.block(values);
        for root in roots {
            self.split_root(root, values, at, outcome);
        }
    }

    /// [`Event::ValuesUnblocked`]: each value no list blocks any more is indexed at its
    /// oldest live carrier, as a rebuild would index it. O(slots).
    pub(super) fn apply_unblock(&mut self, values: &BlockedValues) {
        let blocks = &mut self.run_time_blocks;
        blocks.emails.retain(|e| !listed(values, e.as_str()));
        blocks.phones.retain(|p| !listed(values, p.as_str()));
        if self.bulk {
            return;
        }
        let mut carriers: Vec<(u32, bool, String)> = Vec::new();
        for s in 0..self.nodes.len() as u32 {
            let node = &self.nodes[s as usize];
            if !node.live() || self.is_erased(s) {
                continue;
            }
            for (value, email) in [(node.email, true), (node.phone, false)] {
                if let Some(text) = self.text(value)
                    && listed(values, text)
                    && !self.blocked(text)
                {
                    carriers.push((s, email, text.to_owned()));
                }
            }
        }
        // Slot order: the first carrier of a value is indexed, later ones find it there.
        for (slot, email, text) in carriers {
            self.index_if_new(&text, slot, email);
        }
    }

    /// [`Event::IdentitySplit`]; adds what it re-partitioned to `outcome`.
    pub(super) fn apply_split(
        &mut self,
        id: ContactId,
        values: &BlockedValues,
        at: Timestamp,
        outcome: &mut SplitOutcome,
    ) -> Result<(), ApplyError> {
        let slot = self.slot_of(id).ok_or(ApplyError::UnknownContact(id))?;
        self.block(values);
        let root = self.root_mut(slot);
        self.split_root(root, values, at, outcome);
        Ok(())
    }

    /// Re-partitions the identity at `root` into the components of its unblocked links (see
    /// the module docs); adds its members (as they were) and the links removed (those with a
    /// blocked reason) to `outcome`.
    fn split_root(
        &mut self,
        root: u32,
        values: &BlockedValues,
        at: Timestamp,
        outcome: &mut SplitOutcome,
    ) {
        let members = self.sorted_members(root);
        let position = |s: u32| members.binary_search(&s).unwrap_or(0) as u32;
        let mut parts = Partition::new(members.len());
        let mut removed = 0;
        for edge in self.edges(&members) {
            if edge.blocked {
                removed += 1;
            } else {
                parts.union(position(edge.a), position(edge.b));
            }
        }
        // Parts in the order of their first member; each lists its members in slot order.
        let mut part_of = vec![u32::MAX; members.len()];
        let mut groups: Vec<Vec<u32>> = Vec::new();
        for (i, &m) in members.iter().enumerate() {
            let first = parts.find(i as u32) as usize;
            if part_of[first] == u32::MAX {
                part_of[first] = groups.len() as u32;
                groups.push(Vec::new());
            }
            groups[part_of[first] as usize].push(m);
        }
        outcome.removed_links += removed;
        if groups.len() < 2 {
            outcome.groups.push(members);
            return;
        }
        let old_primary = self.primary_of_root(root);
        let values = std::sync::Arc::new(values.clone());
        let old_size = self.links[root as usize].size;
        for group in &groups {
            let primary = group.iter().copied().fold(group[0], |best, m| {
                if self.is_better(m, best) { m } else { best }
            });
            for (k, &m) in group.iter().enumerate() {
                self.save_links(m);
                let links = &mut self.links[m as usize];
                links.parent = primary;
                links.next = group[(k + 1) % group.len()];
            }
            let links = &mut self.links[primary as usize];
            links.size = group.len() as u32;
            links.primary = primary;
            if primary != old_primary {
                for &m in group {
                    self.save_node(m);
                    self.nodes[m as usize].updated_at = at;
                }
                self.record(HistoryRecord::Split {
                    from: self.nodes[old_primary as usize].id,
                    primary: self.nodes[primary as usize].id,
                    values: std::sync::Arc::clone(&values),
                    at,
                    before_id: self.next_id,
                });
            }
            debug_assert_eq!(self.check_touched_identity(primary), Ok(()));
        }
        self.sizes.remove(old_size);
        for group in &groups {
            self.sizes.add(group.len() as u32);
        }
        outcome.groups.push(members);
    }
}
