//! Identity history (docs/behaviour.md §6.5): what happened to an identity, in the order it
//! happened.
//!
//! Inserts need no record: every row is its own insert record (its values are the request's values,
//! its `createdAt` the time). Everything else that happens to an identity — merges, deletions,
//! refusals by the size cap — is kept as a compact [`HistoryRecord`] in the graph and in every
//! snapshot, so history survives snapshots and restarts.
//!
//! # Order
//! Each record stores `before_id`, the graph's next contact id when it was applied: it happened
//! after the insert of every id below `before_id` and before every insert from `before_id` on.
//! Records among themselves keep the order they were applied in. [`HistoryEntry`] lists are
//! sorted by that order, which is the log order.

use super::IdentityGraph;
use crate::contact::{ContactId, Email, Phone, Timestamp};
use crate::event::{BlockedValues, HistoryRecord, Refusal};

/// One entry of `GET /identities/{contactId}/history`, values resolved for display.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HistoryEntry {
    /// A row was recorded with these request values.
    ContactInserted {
        /// The new row.
        id: ContactId,
        /// Its email.
        email: Option<Email>,
        /// Its phone.
        phone: Option<Phone>,
        /// Its `createdAt`.
        at: Timestamp,
    },
    /// Two identities were merged.
    Merged {
        /// The primary that stayed primary.
        primary: ContactId,
        /// The primary demoted into it.
        demoted: ContactId,
        /// When (`None` for an import's merge).
        at: Option<Timestamp>,
        /// The email that linked the two, if known.
        email: Option<Email>,
        /// The phone that linked the two, if known.
        phone: Option<Phone>,
    },
    /// A contact was deleted.
    Deleted {
        /// The deleted contact.
        id: ContactId,
        /// When.
        at: Timestamp,
        /// The contact promoted to primary, if any.
        promoted: Option<ContactId>,
    },
    /// The size cap refused a merge (`other` set) or a new secondary.
    Refused(Refusal),
    /// A split (docs/behaviour.md §10) made `primary` the primary of a part of the identity
    /// whose primary was `from`. Shown on both sides.
    Split {
        /// The identity's primary before the split.
        from: ContactId,
        /// The primary of the part split off.
        primary: ContactId,
        /// The blocked values whose links were removed.
        values: BlockedValues,
        /// When.
        at: Timestamp,
    },
}

impl IdentityGraph {
    /// Appends a history record and indexes it by every contact it names (unknown ids, which
    /// only an erased contact skipped by a snapshot can be, are not indexed).
    pub(super) fn record(&mut self, record: HistoryRecord) {
        let index = self.history.len() as u32;
        let mut prev = [0u32; 4];
        for (k, id) in record.contacts().enumerate() {
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
    pub(super) fn records_of(&self, slot: u32) -> Vec<u32> {
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
            let previous = prev[k.min(3)];
            if previous >= next {
                break;
            }
            next = previous;
        }
        out
    }

    /// The history records a snapshot must keep, in applied order: those naming at least one
    /// contact that is not erased.
    pub fn snapshot_history(&self) -> impl Iterator<Item = &HistoryRecord> + '_ {
        self.history
            .iter()
            .filter(|r| r.contacts().any(|id| self.slot_of(id).is_some()))
    }

    /// `GET /identities/{contactId}/history` (docs/behaviour.md §6.5): everything that happened to
    /// the identity containing contact `id`, in log order (see [`HistoryRecord`]); `None` for an
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
                HistoryRecord::Split {
                    from,
                    primary,
                    values,
                    at,
                    ..
                } => HistoryEntry::Split {
                    from: *from,
                    primary: *primary,
                    values: BlockedValues::clone(values),
                    at: *at,
                },
            };
            keyed.push(((record.before_id(), 0, index), entry));
        }
        keyed.sort_by_key(|(key, _)| *key);
        Some(keyed.into_iter().map(|(_, entry)| entry).collect())
    }
}
